//! `canvass simulate`: campaigns over a contacts file and an events file, on a virtual clock.

use std::{
    collections::BTreeMap,
    io::{self, BufWriter, Write},
    path::PathBuf,
    process::ExitCode,
};

use anyhow::{Context as _, bail};
use canvass_core::{Core, Effect, UnixMillis, time::DAY_MILLIS, validate::kind_name};
use canvass_engine::{
    Output, Simulator, Summary,
    summary::{ClockSummary, InputSummary},
};
use canvass_proto::{json, v1};

use crate::{EXIT_INVALID_INPUT, input};

/// How far past the last event timers keep firing when no --until is given.
pub(crate) const DEFAULT_HORIZON_DAYS: i64 = 366;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Campaign spec; repeat for campaigns that start one another (e.g. a survey sub-campaign).
    #[arg(long = "spec", required = true)]
    specs: Vec<PathBuf>,
    /// Contacts, one canonical-JSON Contact per line.
    #[arg(long)]
    contacts: PathBuf,
    /// Touchpoint events, one canonical-JSON TouchpointEvent per line, applied in time order.
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
    let mut catalog = input::catalog(campaigns)?;
    if let Some(path) = &args.policy {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let spec: v1::Policy =
            json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        match canvass_core::policy::compile(&spec) {
            Ok(p) => catalog.set_policy(p),
            Err(issues) => {
                for issue in issues {
                    eprintln!("error: {}: {issue}", path.display());
                }
                return Ok(ExitCode::from(EXIT_INVALID_INPUT));
            }
        }
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

    let mut events = events.good;
    let time_of = |e: &v1::TouchpointEvent| {
        e.occurred_at
            .as_ref()
            .map(UnixMillis::from_proto)
            .unwrap_or_default()
    };
    // Stable: events with equal times keep their file order.
    events.sort_by_key(time_of);
    let start = match &args.start {
        Some(s) => input::parse_instant(s)?,
        None => match events.first() {
            Some(e) => time_of(e),
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

    let core = Core::new(catalog);
    // Events before the launch are history: they are applied at their own times first (a
    // purchase made before the launch counts for the audience).
    let clock = events.first().map_or(start, |e| time_of(e).min(start));
    let mut sim = Simulator::new(core, clock);
    let stdout = io::stdout();
    let mut out = Printer {
        out: BufWriter::new(stdout.lock()),
        json: args.json,
    };

    for contact in contacts.good {
        sim.upsert_contact(contact);
    }
    let mut launched = false;
    let launch = |sim: &mut Simulator| {
        sim.advance_to(start);
        for id in &launch_order {
            sim.launch(id);
        }
    };
    let mut events_after_until = 0u64;
    let last_event = events.last().map(time_of);
    for event in events {
        if until.is_some_and(|u| time_of(&event) > u) {
            events_after_until += 1;
            continue;
        }
        if !launched && time_of(&event) >= start {
            launch(&mut sim);
            launched = true;
        }
        sim.ingest(event);
        out.effects(sim.take_output())?;
    }
    if !launched {
        launch(&mut sim);
    }
    match until {
        Some(u) => sim.advance_to(u),
        None => {
            let horizon = last_event
                .unwrap_or(start)
                .max(start)
                .plus(canvass_core::SpanMillis(DEFAULT_HORIZON_DAYS * DAY_MILLIS));
            sim.drain(horizon);
        }
    }
    out.effects(sim.take_output())?;

    let c = sim.counters();
    let inputs = InputSummary {
        contacts: c.contacts_upserted,
        events: c.events,
        malformed_lines: malformed as u64,
        duplicate_events: c.duplicate_events,
        unknown_contact_events: c.unknown_contact_events,
        timers_fired: c.timers_fired,
        pending_timers: sim.pending_timers() as u64,
    };
    let clock = ClockSummary {
        start: start.to_string(),
        end: sim.clock().to_string(),
    };
    let summary = Summary::build(sim.core(), sim.states().values(), c, inputs, clock);
    if events_after_until > 0 {
        eprintln!("note: {events_after_until} event(s) after --until were not applied");
    }
    out.summary(&summary)?;
    if args.report {
        let data = canvass_engine::reports::simulated(sim.core(), sim.campaigns(), sim.states());
        let report = canvass_report::build(&data, &canvass_report::Options::default());
        if args.json {
            writeln!(out.out, "{}", serde_json::json!({ "report": report }))?;
        } else {
            write!(out.out, "\n{}", canvass_report::render::text(&report))?;
        }
    }
    out.out.flush()?;
    Ok(ExitCode::SUCCESS)
}

struct Printer<W: Write> {
    out: W,
    json: bool,
}

impl<W: Write> Printer<W> {
    fn effects(&mut self, outputs: Vec<Output>) -> anyhow::Result<()> {
        for Output {
            at,
            contact_id,
            effect,
        } in outputs
        {
            match effect {
                Effect::Action(a) => self.action(&a)?,
                Effect::ConditionFailed {
                    campaign_id,
                    path,
                    error,
                } => {
                    eprintln!(
                        "warning: {at}: {campaign_id}: contact {contact_id}: {path}: {error} (treated as false)"
                    );
                }
                Effect::Fault {
                    campaign_id,
                    reason,
                } => eprintln!("warning: {at}: {campaign_id}: contact {contact_id}: {reason}"),
                _ => {}
            }
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
