//! What a group commit did: counts, each input's outcome, and warnings for the operator.

use canvass_core::UnixMillis;

use crate::throttle;

/// What one group commit did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Log entries appended.
    pub entries: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Actions queued in the outbox.
    pub actions: u64,
    /// Events ignored as duplicates.
    pub duplicates: u64,
    /// Inputs parked as dead letters.
    pub dead_letters: u64,
    /// What became of each input given to [`Engine::ingest`], in order.
    pub outcomes: Vec<Outcome>,
    /// Conditions that could not be evaluated and inputs the core could not apply as the
    /// spec intends, in the order they happened: kept in no table, told to the operator.
    pub warnings: Vec<Warning>,
    /// Enrollments the core refused (already in, re-entry rules).
    pub enrollments_skipped: u64,
    /// Events applied later than the allowed lateness.
    pub late_events: u64,
    /// Dead letters by what kind of refusal they are (`malformed`, `invalid`,
    /// `too_far_ahead`, `command_refused`, `action_given_up`).
    pub dead_letters_by: std::collections::BTreeMap<&'static str, u64>,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// A condition failed to evaluate and was taken as false.
    ConditionFailed,
    /// The input could not be applied as the spec intends.
    Fault,
}

/// Something the core reported that changes no table: a condition that failed to evaluate
/// (treated as false), or an input it could not apply as the spec intends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Processing time of the step.
    pub at: UnixMillis,
    /// The contact's partition.
    pub partition: u32,
    /// The contact stepped.
    pub contact_id: String,
    /// The campaign concerned.
    pub campaign_id: String,
    /// Which of the two it is.
    pub kind: WarningKind,
    /// What happened, e.g. `states.a.transitions[0].onEvent.guard: No such key: rating
    /// (treated as false)`.
    pub message: String,
}

impl BatchReport {
    /// Adds what a later commit of the same call (or another partition) did.
    pub(crate) fn add(&mut self, other: BatchReport) {
        self.entries += other.entries;
        self.timers_fired += other.timers_fired;
        self.actions += other.actions;
        self.duplicates += other.duplicates;
        self.dead_letters += other.dead_letters;
        self.outcomes.extend(other.outcomes);
        self.warnings.extend(other.warnings);
        self.enrollments_skipped += other.enrollments_skipped;
        self.late_events += other.late_events;
        for (class, n) in other.dead_letters_by {
            *self.dead_letters_by.entry(class).or_default() += n;
        }
    }
}

/// What became of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to the log as entry `seq` and applied.
    Logged {
        /// Its log entry.
        seq: u64,
    },
    /// Its event id (or, for acknowledgements, every action) was already applied.
    Duplicate,
    /// Not an input (malformed, a required field missing): parked as a dead letter.
    DeadLetter {
        /// Why.
        reason: String,
    },
    /// A command the campaign's lifecycle does not allow now: parked, not applied.
    Refused {
        /// Why.
        reason: String,
    },
    /// Noted in the partition's tables without a log entry (a dead letter marked redriven).
    Noted,
    /// About a partition this engine does not own now (another engine of its group does):
    /// not applied here.
    Elsewhere {
        /// The partition that owns it.
        partition: u32,
    },
}

impl BatchReport {
    /// Logs the core's warnings of the batch: each with its campaign and contact, a kind of
    /// warning of one campaign at most once per [`throttle::INTERVAL`] (a failing condition
    /// fails for every contact that reaches it), with the count held back.
    pub fn log_warnings(&self) {
        for w in &self.warnings {
            let key = format!("{} {:?}", w.campaign_id, w.kind);
            let Some(held_back) = throttle::WARNINGS.admit(&key, std::time::Instant::now()) else {
                continue;
            };
            tracing::warn!(
                partition = w.partition,
                campaign = %w.campaign_id,
                contact = %w.contact_id,
                kind = ?w.kind,
                held_back,
                "{}",
                w.message
            );
        }
    }
}
