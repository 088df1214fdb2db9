//! `canvass simulate`: campaigns over a contacts file and an events file, on a virtual clock.

use std::{
    collections::BTreeMap,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use canvass_core::{UnixMillis, time::DAY_MILLIS, validate::kind_name};
use canvass_engine::{
    Simulation, Summary,
    durable::{BatchReport, EngineOptions, Outcome, WarningKind},
    simulate::{self, unsourced},
    summary::{ClockSummary, Counters, InputSummary},
};
use canvass_proto::{json, v1};

use crate::{EXIT_INVALID_INPUT, input};

/// How far past the last event timers keep firing when no --until is given.
pub(crate) const DEFAULT_HORIZON_DAYS: i64 = 366;

/// Inputs per group commit, as `run` batches a file by default.
const BATCH: usize = 4096;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign spec; repeat for campaigns that start one another (e.g. a survey sub-campaign).
    #[arg(long = "spec", required = true)]
    specs: Vec<PathBuf>,
    /// Contacts, one canonical-JSON Contact per line.
    #[arg(long)]
    contacts: PathBuf,
    /// Touchpoint events, one canonical-JSON TouchpointEvent per line, applied in file order
    /// as `run` applies its input: an event dated before one already applied is applied at
    /// the clock's time.
    #[arg(long)]
    events: PathBuf,
    /// Launch time of the campaigns (RFC 3339); defaults to the earliest event's time.
    #[arg(long)]
    start: Option<String>,
    /// Stop the virtual clock here (RFC 3339): later events are not applied, later timers do
    /// not fire. Without it, timers fire until none is left (at most a year past the last event).
    #[arg(long)]
    until: Option<String>,
    /// Print actions and the summary as JSON lines.
    #[arg(long)]
    json: bool,
    /// Stop at the first malformed line instead of reporting and skipping it.
    #[arg(long)]
    strict: bool,
    /// Also print the campaign performance report (as `canvass report` does for a data
    /// directory): funnel, actions, cost, attributed revenue and ROI, arms, density, leads.
    #[arg(long)]
    report: bool,
    /// Engine-wide policy to simulate with (canonical-JSON Policy: churn days, tier
    /// thresholds, frequency caps, quiet hours).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Write the input stream the simulation ran (commands, contacts, events, as
    /// `canvass run --input` reads them) to this file: `run --clock event --drain
    /// --max-lead-hours 0` on it (`--until T` for `--drain` if given here, and the same
    /// `--allowed-lateness-secs`) does what the simulation did.
    #[arg(long, value_name = "FILE")]
    emit_input: Option<PathBuf>,
    /// How late an event may arrive, in seconds, and still be applied before the timers due
    /// after its time (as `run --allowed-lateness-secs`).
    #[arg(long, default_value_t = 0)]
    allowed_lateness_secs: u64,
    /// Partitions to simulate (as `run --partitions`): each has its own clock and its share
    /// of every budget, so a preview of a partitioned deployment is exact.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(canvass_store::layout::MAX_PARTITIONS)))]
    partitions: u32,
    /// How a contact id maps to a partition (as `run --partitioner`).
    #[arg(long, value_parser = crate::run::parse_partitioner, default_value = "murmur2")]
    partitioner: canvass_core::partition::Partitioner,
    /// Threads that run the partitions (as `run --workers`); by default the number of cores.
    #[arg(long)]
    workers: Option<usize>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let campaigns = match input::load_specs(&args.specs) {
        Ok(c) => c,
        Err(failures) => {
            for p in failures.iter().flat_map(|f| &f.problems) {
                eprintln!("error: {p}");
            }
            return Ok(ExitCode::from(EXIT_INVALID_INPUT));
        }
    };
    // Each campaign launches once (its newest version), in the order its specs were given.
    let mut launch_order: Vec<String> = Vec::new();
    for (_, c) in &campaigns {
        if !launch_order.iter().any(|id| id == c.id()) {
            launch_order.push(c.id().to_string());
        }
    }
    let specs: Vec<v1::CampaignSpec> = campaigns.iter().map(|(_, c)| c.spec.clone()).collect();
    let catalog = input::catalog(campaigns)?;
    let mut policy = None;
    if let Some(path) = &args.policy {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let spec: v1::Policy =
            json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        // Checked here to name the file; the simulation's engine compiles it again.
        match canvass_core::policy::compile(&spec) {
            Ok(_) => {}
            Err(issues) => {
                for issue in issues {
                    eprintln!("error: {}: {issue}", path.display());
                }
                return Ok(ExitCode::from(EXIT_INVALID_INPUT));
            }
        }
        policy = Some(spec);
    }
    let dangling = catalog.dangling_references();
    if !dangling.is_empty() {
        for issue in &dangling {
            eprintln!("error: {issue}");
        }
        return Ok(ExitCode::from(EXIT_INVALID_INPUT));
    }

    let contacts = input::read_jsonl::<v1::Contact>(&args.contacts, input::check_contact)?;
    let events = input::read_jsonl::<v1::TouchpointEvent>(&args.events, input::check_event)?;
    let malformed = contacts.bad.len() + events.bad.len();
    for e in contacts.bad.iter().chain(&events.bad) {
        eprintln!("error: {e}");
    }
    if args.strict && malformed > 0 {
        eprintln!("stopped: {malformed} malformed line(s) and --strict");
        return Ok(ExitCode::from(EXIT_INVALID_INPUT));
    }

    let events = events.good;
    let time_of = |e: &v1::TouchpointEvent| {
        e.occurred_at
            .as_ref()
            .map(UnixMillis::from_proto)
            .unwrap_or_default()
    };
    let earliest = events.iter().map(time_of).min();
    let start = match &args.start {
        Some(s) => input::parse_instant(s)?,
        None => match earliest {
            Some(t) => t,
            None => bail!("{} holds no events: give --start", args.events.display()),
        },
    };
    let until = args
        .until
        .as_deref()
        .map(input::parse_instant)
        .transpose()?;
    if let Some(until) = until
        && until < start
    {
        bail!("--until is before the start ({start})");
    }

    // Events before the launch are history: they are applied at their own times first (a
    // purchase made before the launch counts for the audience). Everything else is loaded
    // at the earliest time the run knows of.
    let loaded_at = earliest.map_or(start, |t| t.min(start));
    let mut stream: Vec<Fed> = Vec::new();
    stream.extend(
        policy
            .map(|p| simulate::policy_command(p, loaded_at))
            .map(|r| Fed::new(r, Kind::Other)),
    );
    let profiled: std::collections::HashSet<String> =
        contacts.good.iter().map(|c| c.id.clone()).collect();
    stream.extend(
        contacts
            .good
            .into_iter()
            .map(|c| Fed::new(simulate::contact_record(c, loaded_at), Kind::Contact)),
    );
    stream.extend(
        simulate::load_commands(&specs, loaded_at)
            .into_iter()
            .map(|r| Fed::new(r, Kind::Other)),
    );
    let launches = || {
        launch_order
            .iter()
            .map(|id| Fed::new(simulate::launch_command(id, start), Kind::Other))
            .collect::<Vec<_>>()
    };
    let mut launched = false;
    let mut events_after_until = 0u64;
    let last_event = events.iter().map(time_of).max();
    for event in events {
        if until.is_some_and(|u| time_of(&event) > u) {
            events_after_until += 1;
            continue;
        }
        if !launched && time_of(&event) >= start {
            stream.extend(launches());
            launched = true;
        }
        let unknown = !profiled.contains(&event.contact_id);
        stream.push(Fed::new(
            simulate::event_record(event),
            Kind::Event { unknown },
        ));
    }
    if !launched {
        stream.extend(launches());
    }
    if let Some(path) = &args.emit_input {
        write_stream(path, &stream)?;
    }

    let mut sim = Simulation::partitioned(
        EngineOptions {
            allowed_lateness: crate::run::lateness(args.allowed_lateness_secs),
            ..EngineOptions::default()
        },
        canvass_store::Layout {
            partitions: args.partitions,
            partitioner: args.partitioner,
        },
        crate::run::workers(args.workers),
    )?;
    let stdout = io::stdout();
    let mut out = Printer {
        out: BufWriter::new(stdout.lock()),
        json: args.json,
    };
    let mut tally = Tally::default();
    let mut stream = stream.into_iter().peekable();
    while stream.peek().is_some() {
        let chunk: Vec<Fed> = stream.by_ref().take(BATCH).collect();
        let kinds: Vec<Kind> = chunk.iter().map(|f| f.counts_as).collect();
        let report = sim.ingest(chunk.into_iter().map(|f| unsourced(f.record)).collect())?;
        tally.add(&kinds, &report);
        out.batch(&report, sim.take_actions()?)?;
    }
    let horizon = match until {
        Some(u) => u,
        None => last_event
            .unwrap_or(start)
            .max(start)
            .plus(canvass_core::SpanMillis(DEFAULT_HORIZON_DAYS * DAY_MILLIS)),
    };
    let report = sim.advance_to(horizon)?;
    tally.add(&[], &report);
    out.batch(&report, sim.take_actions()?)?;

    let store = sim.engine().stores();
    let states = canvass_engine::reports::contact_states(store).map_err(anyhow::Error::msg)?;
    let campaigns =
        canvass_engine::reports::campaign_data(store, &[]).map_err(anyhow::Error::msg)?;
    let campaign_counters: BTreeMap<String, v1::CampaignCounters> = campaigns
        .iter()
        .map(|d| (d.id.clone(), d.counters.clone()))
        .collect();
    let counters = tally.counters;
    let input_counters = canvass_engine::reports::input_counters(store)?;
    let late_events = input_counters.late_events;
    let inputs = InputSummary {
        contacts: counters.contacts_upserted,
        events: counters.events,
        malformed_lines: malformed as u64,
        duplicate_events: counters.duplicate_events,
        unknown_contact_events: counters.unknown_contact_events,
        timers_fired: counters.timers_fired,
        pending_timers: store.iter().map(|s| s.timers(None).count() as u64).sum(),
        late_events,
    };
    let clock = ClockSummary {
        start: start.to_string(),
        // With --until the virtual clock stops there, whatever fired last.
        end: until
            .unwrap_or_else(|| sim.engine().clock().max(start))
            .to_string(),
    };
    let summary = Summary::build(
        sim.engine().core(),
        states.iter().map(|(_, s)| s),
        &campaign_counters,
        &counters,
        inputs,
        clock,
    );
    if events_after_until > 0 {
        eprintln!("note: {events_after_until} event(s) after --until were not applied");
    }
    out.summary(&summary)?;
    if args.report {
        let mut report = canvass_report::build(&campaigns, &canvass_report::Options::default());
        report.with_inputs(&input_counters);
        if args.json {
            writeln!(out.out, "{}", serde_json::json!({ "report": report }))?;
        } else {
            write!(out.out, "\n{}", canvass_report::render::text(&report))?;
        }
    }
    out.out.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// One input of the simulated stream, with what the summary counts it as.
struct Fed {
    record: v1::IngestRecord,
    counts_as: Kind,
}

impl Fed {
    fn new(record: v1::IngestRecord, counts_as: Kind) -> Self {
        Self { record, counts_as }
    }
}

/// What the summary counts an input as.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Contact,
    /// An event, and whether its contact is missing from the contacts file.
    Event {
        unknown: bool,
    },
    Other,
}

fn write_stream(path: &std::path::Path, stream: &[Fed]) -> anyhow::Result<()> {
    let mut file = BufWriter::new(
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?,
    );
    for fed in stream {
        writeln!(file, "{}", json::to_string(&fed.record)?)?;
    }
    file.flush()
        .with_context(|| format!("cannot write {}", path.display()))
}

/// What the summary counts, from each input's outcome.
#[derive(Default)]
struct Tally {
    counters: Counters,
}

impl Tally {
    fn add(&mut self, kinds: &[Kind], report: &BatchReport) {
        let c = &mut self.counters;
        c.timers_fired += report.timers_fired;
        c.enrollments_skipped += report.enrollments_skipped;
        for w in &report.warnings {
            match w.kind {
                WarningKind::ConditionFailed => c.condition_failures += 1,
                WarningKind::Fault => c.faults += 1,
            }
        }
        for (kind, outcome) in kinds.iter().zip(&report.outcomes) {
            match (kind, outcome) {
                (Kind::Contact, Outcome::Logged { .. }) => c.contacts_upserted += 1,
                (Kind::Event { unknown }, Outcome::Logged { .. }) => {
                    c.events += 1;
                    c.unknown_contact_events += u64::from(*unknown);
                }
                (Kind::Event { .. }, Outcome::Duplicate) => c.duplicate_events += 1,
                (_, Outcome::DeadLetter { reason } | Outcome::Refused { reason }) => {
                    eprintln!("error: {reason}");
                }
                _ => {}
            }
        }
    }
}

struct Printer<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Printer<W> {
    /// What one commit did: its warnings (on stderr), then its actions.
    fn batch(&mut self, report: &BatchReport, actions: Vec<v1::Action>) -> anyhow::Result<()> {
        for w in &report.warnings {
            eprintln!(
                "warning: {}: {}: contact {}: {}",
                w.at, w.campaign_id, w.contact_id, w.message
            );
        }
        for a in &actions {
            self.action(a)?;
        }
        Ok(())
    }

    fn action(&mut self, a: &v1::Action) -> anyhow::Result<()> {
        if self.json {
            writeln!(self.out, "{{\"action\":{}}}", json::to_string(a)?)?;
        } else {
            let at = a
                .emitted_at
                .as_ref()
                .map(UnixMillis::from_proto)
                .unwrap_or_default();
            let what = if a.target_campaign.is_empty() {
                &a.template
            } else {
                &a.target_campaign
            };
            writeln!(
                self.out,
                "{at}  {:<15} {:<20} {:<12} {:<16} {:<24} key={}",
                kind_name(a.kind()),
                a.campaign_id,
                a.contact_id,
                a.state,
                what,
                a.idempotency_key
            )?;
        }
        Ok(())
    }

    fn summary(&mut self, s: &Summary) -> anyhow::Result<()> {
        if self.json {
            let body = serde_json::to_string(s).context("summary")?;
            writeln!(self.out, "{{\"summary\":{body}}}")?;
            return Ok(());
        }
        let i = &s.inputs;
        writeln!(self.out, "\nsimulated {} .. {}", s.clock.start, s.clock.end)?;
        writeln!(
            self.out,
            "inputs: {} contacts, {} events, {} malformed lines, {} duplicate events, {} events for unknown contacts, {} timers fired, {} pending",
            i.contacts,
            i.events,
            i.malformed_lines,
            i.duplicate_events,
            i.unknown_contact_events,
            i.timers_fired,
            i.pending_timers
        )?;
        if i.late_events > 0 {
            writeln!(
                self.out,
                "late: {} events applied at the clock's time, later than the allowed lateness",
                i.late_events
            )?;
        }
        for c in &s.campaigns {
            writeln!(
                self.out,
                "\ncampaign {}: {} contacts ({} active, {} completed, {} holdout), {} reached a goal",
                c.id, c.contacts, c.active, c.completed, c.holdout, c.goal_reached
            )?;
            writeln!(self.out, "  states:          {}", counts(&c.states))?;
            writeln!(
                self.out,
                "  response groups: {}",
                counts(&c.response_groups)
            )?;
            if !c.variants.is_empty() {
                writeln!(self.out, "  variants:        {}", counts(&c.variants))?;
            }
            writeln!(
                self.out,
                "  actions:         {}",
                counts(&c.actions_by_kind)
            )?;
            let budget = match (&c.budget, c.withheld) {
                (Some(b), 0) => format!(" of {b} budget"),
                (Some(b), n) => {
                    format!(" of {b} budget: EXHAUSTED, {n} cost-bearing actions withheld")
                }
                _ => String::new(),
            };
            writeln!(
                self.out,
                "  cost:            {} {}{budget}",
                c.cost, c.currency
            )?;
        }
        writeln!(
            self.out,
            "\nactions by kind: {}",
            counts(&s.actions_by_kind)
        )?;
        let d = &s.diagnostics;
        writeln!(
            self.out,
            "diagnostics: {} condition failures, {} faults, {} enrollments skipped",
            d.condition_failures, d.faults, d.enrollments_skipped
        )?;
        Ok(())
    }
}

fn counts(m: &BTreeMap<String, u64>) -> String {
    if m.is_empty() {
        return "-".into();
    }
    m.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(" | ")
}
