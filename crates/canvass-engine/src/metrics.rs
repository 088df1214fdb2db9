//! The engine's metrics, named by the Prometheus conventions (base units, `_total` for
//! counters, `_seconds` for durations) and recorded through the `metrics` facade: nothing is
//! kept until a binary installs an exporter (`canvass run --metrics-addr`), so the simulator
//! and the tests pay a load per batch, not per input.
//!
//! Counters are added once per group commit, after it succeeded, from what it reports:
//! a batch that fails counts nothing.

use std::time::Duration;

use canvass_proto::v1;

use crate::durable::{BatchReport, Incoming, Sourced};

/// Counter: inputs applied (logged, duplicates and dead letters included), by `source`
/// (`file`, `kafka`, `grpc`, `delivery`, `cli`) and `kind` (`contact`, `event`, `command`,
/// `delivery_result`, `malformed`, `redriven_mark`: a dead letter marked redriven).
pub const INPUTS: &str = "canvass_inputs_total";
/// Counter: events ignored as duplicates.
pub const DUPLICATES: &str = "canvass_duplicate_events_total";
/// Counter: events applied later than the allowed lateness.
pub const LATE_EVENTS: &str = "canvass_late_events_total";
/// Counter: inputs parked as dead letters, by `reason` (`malformed`, `invalid`,
/// `too_far_ahead`, `command_refused`, `action_given_up`).
pub const DEAD_LETTERS: &str = "canvass_dead_letters_total";
/// Counter: timers fired.
pub const TIMERS_FIRED: &str = "canvass_timers_fired_total";
/// Counter: actions queued in the outbox.
pub const ACTIONS_QUEUED: &str = "canvass_actions_queued_total";
/// Counter: actions whose result was logged, by `kind` and `outcome` (`delivered`,
/// `bounced`, `failed`, `opportunity_created`, `copied`: written to the copies its kind has,
/// `given_up`: a dead letter).
pub const ACTIONS_DONE: &str = "canvass_actions_done_total";
/// Counter: group commits (over all partitions: one call of the engine).
pub const COMMITS: &str = "canvass_commits_total";
/// Histogram: how long a group commit took (apply, write; and the flush unless deferred).
pub const COMMIT_SECONDS: &str = "canvass_commit_duration_seconds";
/// Histogram: inputs per group commit.
pub const BATCH_INPUTS: &str = "canvass_batch_inputs";

const SOURCES: [&str; 5] = ["file", "kafka", "grpc", "delivery", "cli"];
const KINDS: [&str; 6] = [
    "contact",
    "event",
    "command",
    "delivery_result",
    "malformed",
    "redriven_mark",
];

/// Where an input came from: its index in [`SOURCES`].
fn source_of(input: &Sourced) -> usize {
    match (&input.position, &input.caller, &input.incoming) {
        (Some(p), _, _) if p.source.starts_with("file:") => 0,
        (Some(p), _, _) if p.source.starts_with("journal:") => 2,
        (Some(_), _, _) => 1,
        (None, Some(_), _) => 2,
        (None, None, Incoming::Acks(_)) => 3,
        (None, None, _) => 4,
    }
}

/// What an input is: its index in [`KINDS`].
fn kind_of(input: &Sourced) -> usize {
    use v1::ingest_record::Input as R;
    match &input.incoming {
        Incoming::Record(r) => match &r.input {
            Some(R::Contact(_)) => 0,
            Some(R::Event(_)) => 1,
            Some(R::Command(_)) => 2,
            None => 4,
        },
        Incoming::Acks(_) => 3,
        Incoming::Malformed { .. } => 4,
        Incoming::Redriven { .. } => 5,
    }
}

/// Inputs of a batch, counted by source and kind before it is applied.
#[derive(Debug, Default)]
pub(crate) struct InputCounts([[u64; KINDS.len()]; SOURCES.len()]);

impl InputCounts {
    pub(crate) fn of<'a>(inputs: impl Iterator<Item = &'a Sourced>) -> Self {
        let mut counts = Self::default();
        for input in inputs {
            counts.0[source_of(input)][kind_of(input)] += 1;
        }
        counts
    }

    fn total(&self) -> u64 {
        self.0.iter().flatten().sum()
    }
}

/// Records a group commit that succeeded: its inputs, what it did, how long it took.
pub(crate) fn committed(inputs: &InputCounts, report: &BatchReport, took: Duration) {
    for (s, row) in inputs.0.iter().enumerate() {
        for (k, n) in row.iter().enumerate() {
            if *n > 0 {
                metrics::counter!(INPUTS, "source" => SOURCES[s], "kind" => KINDS[k]).increment(*n);
            }
        }
    }
    let total = inputs.total();
    if total == 0 && report.entries == 0 {
        // An idle tick: nothing to time.
        return;
    }
    metrics::counter!(COMMITS).increment(1);
    metrics::histogram!(COMMIT_SECONDS).record(took.as_secs_f64());
    metrics::histogram!(BATCH_INPUTS).record(total as f64);
    for (counter, n) in [
        (DUPLICATES, report.duplicates),
        (LATE_EVENTS, report.late_events),
        (TIMERS_FIRED, report.timers_fired),
        (ACTIONS_QUEUED, report.actions),
    ] {
        if n > 0 {
            metrics::counter!(counter).increment(n);
        }
    }
    for (class, n) in &report.dead_letters_by {
        metrics::counter!(DEAD_LETTERS, "reason" => *class).increment(*n);
    }
}

/// An action kind as a label (`EMAIL`, `SALES_HANDOFF`...).
#[must_use]
pub fn kind_label(kind: i32) -> &'static str {
    v1::ActionKind::try_from(kind)
        .map_or("UNSPECIFIED", |k| k.as_str_name())
        .trim_start_matches("ACTION_KIND_")
}

/// Records actions whose result was logged with `outcome`.
pub fn actions_done<'a>(actions: impl Iterator<Item = &'a v1::Action>, outcome: &'static str) {
    let mut by_kind: std::collections::BTreeMap<i32, u64> = std::collections::BTreeMap::new();
    for a in actions {
        *by_kind.entry(a.kind).or_default() += 1;
    }
    for (kind, n) in by_kind {
        metrics::counter!(ACTIONS_DONE, "kind" => kind_label(kind), "outcome" => outcome)
            .increment(n);
    }
}
