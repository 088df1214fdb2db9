//! Property tests of the engine itself: the simulation (the engine over a store in memory)
//! and the durable engine on sled, fed in arbitrary batches and replayed, over random
//! streams with events out of order, duplicate ids within and across contacts, repeats
//! after the dedupe window and timers due in the same millisecond, end in the same states,
//! the same actions (keys and content) and the same reports, whatever the partition and
//! worker counts; a partitioned run ends as one partition does on a stream in time order;
//! and no partitioning lets a campaign spend past its budget.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use canvass_core::partition::Partitioner;
use canvass_core::{Core, SpanMillis, UnixMillis};
use canvass_engine::{
    Partitions, Simulation,
    durable::{ClockMode, EngineOptions, Sourced},
    simulate::{self, unsourced},
};
use canvass_proto::{json, v1, wkt};
use canvass_report::Options;
use canvass_store::{Layout, StoreOptions, Stores, Wanted};
use proptest::prelude::*;
use rust_decimal::Decimal;
use std::str::FromStr;
const T0: i64 = 1_772_442_000_000; // 2026-03-02T09:00:00Z
const HOUR: i64 = 3_600_000;

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/reference/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// A campaign with every other transition kind: an entry trigger, guarded immediate
/// branches, a split with a holdout, re-entry, and a cycle through a timeout.
const ROUTER: &str = r#"{
  "id": "router", "version": 1, "initialState": "sort",
  "entryTriggers": [{"eventType": "signup", "guard": "event.attrs.plan != 'free'"}],
  "reentry": {"mode": "REENTRY_MODE_ALWAYS"},
  "split": {"seed": 11, "holdoutBasisPoints": 2500, "variants": [{"id": "a", "weight": 1}, {"id": "b", "weight": 2, "initialState": "nudge"}]},
  "states": [
    {"id": "sort", "transitions": [
      {"to": "vip", "immediately": {"guard": "contact.attrs.tier == 'A'"}},
      {"to": "nudge", "immediately": {}}]},
    {"id": "vip", "responseGroup": "vip", "actions": [{"kind": "ACTION_KIND_PHONE_CALL", "template": "call"}, {"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "86400s"}],
     "transitions": [{"to": "done", "onEvent": {"type": "purchase"}}, {"to": "nudge", "after": "172800s"}]},
    {"id": "nudge", "responseGroup": "nudged", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "nudge"}, {"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "43200s"}],
     "transitions": [
       {"to": "done", "onEvent": {"type": "purchase", "guard": "contact.purchase_count >= 1"}},
       {"to": "nudge", "onEvent": {"type": "email.opened", "guard": "state.entry_seq < 6"}},
       {"to": "gave_up", "after": "259200s"}]},
    {"id": "done", "responseGroup": "bought", "goal": true, "terminal": true},
    {"id": "gave_up", "terminal": true}
  ],
  "assignment": {"rules": [{"name": "repeat", "when": "contact.purchase_count >= 2", "owner": "closer"}]}
}"#;

/// Sales teams and rules that balance leads: the partition's workload decides.
const STAFF: &str = r#"{
  "teams": [{"name": "desk", "members": ["ann", "ben", "cat"]}],
  "assignment": {"rules": [
    {"name": "buyers", "when": "contact.purchase_count >= 1", "team": "desk"},
    {"name": "load", "team": "desk", "strategy": "ASSIGNMENT_STRATEGY_LEAST_LOAD"}
  ]}
}"#;

fn specs() -> Vec<v1::CampaignSpec> {
    [
        example("survey.json"),
        example("campaign.json"),
        ROUTER.to_string(),
    ]
    .iter()
    .map(|text| json::from_str(text).unwrap())
    .collect()
}

/// Two days: the streams span fifty, so a redelivery often comes after the window.
const DEDUPE: SpanMillis = SpanMillis(2 * 24 * HOUR);

fn options() -> EngineOptions {
    EngineOptions {
        clock: ClockMode::Event,
        dedupe_retention: DEDUPE,
        ..EngineOptions::default()
    }
}

/// [`options`] with an allowed lateness of `hours`.
fn late_by(hours: i64) -> EngineOptions {
    EngineOptions {
        allowed_lateness: SpanMillis(hours * HOUR),
        ..options()
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    contacts: Vec<v1::Contact>,
    /// In arrival order: mostly by time, some late, some redelivered.
    events: Vec<v1::TouchpointEvent>,
    /// With the policy's sales teams, whose balancing is per partition.
    staffed: bool,
}

fn contact_strategy(i: usize) -> impl Strategy<Value = v1::Contact> {
    (any::<bool>(), prop::sample::select(vec!["A", "B", "C"])).prop_map(move |(bought_a, tier)| {
        let mut c: v1::Contact = json::from_str(&format!(
            r#"{{"id": "p{i}", "attrs": {{"tier": "{tier}"}}}}"#
        ))
        .unwrap();
        if bought_a {
            c.purchases.push(v1::Purchase {
                product: "A".into(),
                amount: "100".into(),
                ..Default::default()
            });
        }
        c
    })
}

fn attrs(pairs: &[(&str, wkt::Value)]) -> Option<wkt::Struct> {
    Some(wkt::Struct {
        fields: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect(),
    })
}

fn event_strategy(contacts: usize) -> impl Strategy<Value = v1::TouchpointEvent> {
    let kinds = prop::sample::select(vec![
        "trial.confirmed",
        "trial.rated",
        "trial.rated.norating",
        "survey.completed",
        "signup",
        "signup.free",
        "email.opened",
        "purchase",
        // Naming a campaign: engagement, confirmations and what contacts say, counted per
        // campaign, channel, template and day.
        "email.opened.router",
        "link.clicked.router",
        "action.delivered.router",
        "survey.answered.router",
        "complaint",
        // Sales on the leads of the router's vip and nudge states.
        "opportunity.accepted",
        "opportunity.won",
        "opportunity.reassigned",
    ]);
    // Whole hours: contacts that enter a state in the same hour have timers due in the
    // same millisecond.
    (0..contacts + 1, 0i64..(50 * 24), kinds, 1u8..=5).prop_map(move |(who, hour, kind, rating)| {
        // `contacts` itself names a contact missing from the contacts list.
        let contact_id = format!("p{who}");
        let (kind, attrs) = match kind {
            "trial.rated" => (
                "trial.rated",
                attrs(&[("rating", wkt::Value::from(f64::from(rating)))]),
            ),
            "trial.rated.norating" => ("trial.rated", None),
            "signup" => (
                "signup",
                attrs(&[("plan", wkt::Value::from("pro".to_string()))]),
            ),
            "signup.free" => (
                "signup",
                attrs(&[("plan", wkt::Value::from("free".to_string()))]),
            ),
            "purchase" => (
                "purchase",
                attrs(&[
                    ("product", wkt::Value::from("B".to_string())),
                    ("amount", wkt::Value::from(20.0)),
                ]),
            ),
            "opportunity.won" => (
                "opportunity.won",
                attrs(&[("amount", wkt::Value::from(50.0))]),
            ),
            "survey.answered.router" => (
                "survey.answered.router",
                attrs(&[("score", wkt::Value::from(f64::from(rating * 2)))]),
            ),
            other => (other, None),
        };
        let (kind, campaign_id) = match kind.strip_suffix(".router") {
            Some(kind) => (kind, "router".to_string()),
            None => (kind, String::new()),
        };
        v1::TouchpointEvent {
            id: String::new(),
            r#type: kind.to_string(),
            contact_id,
            occurred_at: Some(UnixMillis(T0 + hour * HOUR).to_proto()),
            attrs,
            campaign_id,
            ..Default::default()
        }
    })
}

/// How an earlier event comes again.
#[derive(Debug, Clone, Copy)]
enum Again {
    /// The same event, later in the stream (a redelivery).
    Same,
    /// Its id on another contact.
    OtherContact,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..7)
        .prop_flat_map(|n| {
            let contacts = (0..n).map(contact_strategy).collect::<Vec<_>>();
            let again = prop_oneof![Just(Again::Same), Just(Again::OtherContact)];
            (
                contacts,
                prop::collection::vec(event_strategy(n), 0..60),
                prop::collection::vec(
                    (
                        any::<prop::sample::Index>(),
                        any::<prop::sample::Index>(),
                        again,
                    ),
                    0..4,
                ),
                // Events moved later in the stream than their time: they arrive late.
                prop::collection::vec(
                    (any::<prop::sample::Index>(), any::<prop::sample::Index>()),
                    0..4,
                ),
            )
        })
        .prop_map(|(contacts, events, repeats, late)| {
            let mut events: Vec<v1::TouchpointEvent> = events
                .into_iter()
                .enumerate()
                .map(|(i, mut e)| {
                    e.id = format!("e{i}");
                    e
                })
                .collect();
            events.sort_by_key(|e| UnixMillis::from_proto(e.occurred_at.as_ref().unwrap()));
            for (from, to) in late {
                if !events.is_empty() {
                    let e = events.remove(from.index(events.len()));
                    events.insert(to.index(events.len() + 1), e);
                }
            }
            for (which, at, again) in repeats {
                if events.is_empty() {
                    continue;
                }
                let i = which.index(events.len());
                let mut copy = events[i].clone();
                if let Again::OtherContact = again {
                    copy.contact_id = format!("{}x", copy.contact_id);
                }
                // Anywhere after the original: soon, or weeks later.
                let at = i + 1 + at.index(events.len() - i);
                events.insert(at, copy);
            }
            Scenario {
                contacts,
                events,
                staffed: true,
            }
        })
}

/// The stream a run takes for a scenario: campaigns loaded and launched at T0, contacts,
/// then the events in arrival order.
fn stream(s: &Scenario) -> Vec<v1::IngestRecord> {
    let t0 = UnixMillis(T0);
    let mut out = Vec::new();
    if s.staffed {
        out.push(simulate::policy_command(json::from_str(STAFF).unwrap(), t0));
    }
    out.extend(simulate::load_commands(&specs(), t0));
    out.extend(
        s.contacts
            .iter()
            .map(|c| simulate::contact_record(c.clone(), t0)),
    );
    for id in ["b-trial-invite", "router"] {
        out.push(simulate::launch_command(id, t0));
    }
    out.extend(s.events.iter().cloned().map(simulate::event_record));
    out
}

/// A campaign that spends on every signup and every email opened, within `total`.
fn spender(total: &str) -> v1::CampaignSpec {
    json::from_str(&format!(
        r#"{{
  "id": "spender", "version": 1, "initialState": "mail",
  "entryTriggers": [{{"eventType": "signup"}}],
  "states": [
    {{"id": "mail", "actions": [{{"kind": "ACTION_KIND_EMAIL", "template": "offer"}}, {{"kind": "ACTION_KIND_POSTAL_MAIL", "template": "letter"}}],
     "transitions": [{{"to": "mail", "onEvent": {{"type": "email.opened"}}}}, {{"to": "done", "onEvent": {{"type": "purchase"}}}}]}},
    {{"id": "done", "terminal": true}}
  ],
  "budget": {{"currency": "EUR", "total": "{total}", "costPerAction": {{"EMAIL": "0.35", "POSTAL_MAIL": "1.20"}}}}
}}"#
    ))
    .unwrap()
}

/// The stream of [`stream`] for the spender campaign alone.
fn spender_stream(s: &Scenario, total: &str) -> Vec<v1::IngestRecord> {
    let t0 = UnixMillis(T0);
    let mut out = simulate::load_commands(&[spender(total)], t0);
    out.extend(
        s.contacts
            .iter()
            .map(|c| simulate::contact_record(c.clone(), t0)),
    );
    out.push(simulate::launch_command("spender", t0));
    out.extend(s.events.iter().cloned().map(simulate::event_record));
    out
}

fn horizon() -> UnixMillis {
    UnixMillis(T0 + 200 * 24 * HOUR)
}

/// What a run ended with: every contact's state, the actions delivered (in order), each
/// campaign's counters, the performance report, and every projection's bytes.
#[derive(Debug, Clone, PartialEq)]
struct Outcome {
    states: BTreeMap<String, v1::ContactState>,
    actions: Vec<v1::Action>,
    counters: BTreeMap<String, v1::CampaignCounters>,
    report: canvass_report::Report,
    projections: Vec<(Vec<u8>, Vec<u8>)>,
}

fn outcome(engine: &Partitions, actions: Vec<v1::Action>) -> Outcome {
    let stores = engine.stores();
    let data = canvass_engine::reports::campaign_data(stores, &[]).unwrap();
    Outcome {
        states: canvass_engine::reports::contact_states(stores)
            .unwrap()
            .into_iter()
            .collect(),
        actions,
        counters: data
            .iter()
            .map(|d| (d.id.clone(), d.counters.clone()))
            .collect(),
        report: canvass_report::build(&data, &Options::default()),
        projections: dump(stores),
    }
}

/// Every partition's projections, each key under its partition number.
fn dump(stores: &Stores) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (p, store) in stores.iter().enumerate() {
        for (k, v) in store.projection_dump().unwrap() {
            let mut key = (p as u32).to_be_bytes().to_vec();
            key.extend(k);
            out.push((key, v));
        }
    }
    out
}

/// Actions by the partition of their contact, each partition's in delivery order.
fn in_partitions(layout: &Layout, actions: &[v1::Action]) -> BTreeMap<u32, Vec<v1::Action>> {
    let mut out: BTreeMap<u32, Vec<v1::Action>> = BTreeMap::new();
    for a in actions {
        out.entry(layout.partition_of(&a.contact_id))
            .or_default()
            .push(a.clone());
    }
    out
}

fn layout(partitions: u32) -> Layout {
    Layout {
        partitions,
        partitioner: Partitioner::Murmur2,
    }
}

/// `simulate`: the engine over a store in memory, the whole stream in one commit.
fn simulated(s: &Scenario, options: EngineOptions) -> (Simulation, Outcome) {
    simulated_on(s, options, layout(1))
}

/// [`simulated`] over the partitions of `layout`.
fn simulated_on(s: &Scenario, options: EngineOptions, layout: Layout) -> (Simulation, Outcome) {
    let mut sim = Simulation::partitioned(options, layout, 1).unwrap();
    sim.ingest(stream(s).into_iter().map(unsourced).collect())
        .unwrap();
    let mut actions = sim.take_actions().unwrap();
    sim.advance_to(horizon()).unwrap();
    actions.extend(sim.take_actions().unwrap());
    let out = outcome(sim.engine(), actions);
    (sim, out)
}

/// `run`: the engine on sled, the stream cut into commits at `cuts`, the outbox delivered
/// after each one. Returns the outcome and the directory (for a replay).
fn on_sled(
    s: &Scenario,
    cuts: &[usize],
    options: EngineOptions,
    layout: Layout,
    workers: usize,
) -> (Outcome, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let wanted = Wanted {
        partitions: Some(layout.partitions),
        partitioner: Some(layout.partitioner),
    };
    let stores = Stores::open(dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(stores, options, workers).unwrap();
    let inputs: Vec<Sourced> = stream(s).into_iter().map(unsourced).collect();
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (inputs.len() + 1)).collect();
    cuts.push(inputs.len());
    cuts.sort_unstable();
    let mut actions = Vec::new();
    let mut deliver = |engine: &mut Partitions| {
        engine
            .dispatch(usize::MAX, &mut |a| {
                actions.extend_from_slice(a);
                Ok(())
            })
            .unwrap();
    };
    let mut rest = inputs.into_iter();
    let mut done = 0;
    for cut in cuts {
        let batch: Vec<Sourced> = rest.by_ref().take(cut - done).collect();
        done = cut;
        engine.ingest(batch, UnixMillis(0)).unwrap();
        deliver(&mut engine);
    }
    engine.advance_to(horizon()).unwrap();
    deliver(&mut engine);
    (outcome(&engine, actions), dir)
}

/// Structural invariants of every contact's state.
fn check_invariants(
    core: &Core,
    states: &BTreeMap<String, v1::ContactState>,
) -> Result<(), TestCaseError> {
    for (id, state) in states {
        // One journey per campaign: strictly ordered ids mean no campaign appears twice, so
        // no contact is ever in two states of the same campaign.
        for pair in state.campaigns.windows(2) {
            prop_assert!(
                pair[0].campaign_id < pair[1].campaign_id,
                "{id}: journeys out of order or repeated"
            );
        }
        for j in &state.campaigns {
            let campaign = core.catalog().get(&j.campaign_id, j.campaign_version);
            prop_assert!(
                campaign.is_some(),
                "{id}: journey on an unknown campaign version"
            );
            let campaign = campaign.unwrap();
            match j.status() {
                v1::JourneyStatus::Active => {
                    let at = campaign.state_index(&j.state);
                    prop_assert!(at.is_some(), "{id}: active in unknown state {}", j.state);
                    prop_assert!(
                        !campaign.states[at.unwrap()].terminal,
                        "{id}: active in a terminal state"
                    );
                    prop_assert!(j.exited_at.is_none());
                }
                v1::JourneyStatus::Completed => {
                    let at = campaign.state_index(&j.state);
                    prop_assert!(
                        at.is_some_and(|a| campaign.states[a].terminal),
                        "{id}: completed outside a terminal state"
                    );
                    prop_assert!(j.exited_at.is_some());
                }
                v1::JourneyStatus::Holdout => {
                    prop_assert!(j.state.is_empty() && j.response_group == "holdout");
                }
                v1::JourneyStatus::Stopped => {
                    prop_assert!(false, "{id}: nothing stops campaigns here")
                }
                v1::JourneyStatus::Unspecified => {
                    prop_assert!(false, "{id}: journey without status")
                }
            }
            prop_assert!(j.enrollments >= 1);
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        // Failing cases are kept beside this file (tests/properties.proptest-regressions) and
        // committed, so that every later run tries them first.
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_same_inputs_always_give_the_same_output(s in scenario()) {
        let (_, a) = simulated(&s, options());
        let (_, b) = simulated(&s, options());
        prop_assert_eq!(a, b);
    }

    /// The simulation, a durable run cut into arbitrary commits on any number of worker
    /// threads, and a replay of that run's logs agree on everything, for any partitioning.
    #[test]
    fn simulate_run_and_replay_agree_whatever_the_batches(
        s in scenario(),
        cuts in prop::collection::vec(0usize..100, 0..8),
        lateness in prop::sample::select(vec![0i64, 3, 30]),
        partitions in prop::sample::select(vec![1u32, 3, 4]),
        workers in 1usize..=3,
    ) {
        let (_, simulated) = simulated_on(&s, late_by(lateness), layout(partitions));
        let (run, dir) = on_sled(&s, &cuts, late_by(lateness), layout(partitions), workers);
        prop_assert_eq!(&simulated.states, &run.states);
        // Each partition delivers its actions in its own order; how the partitions'
        // deliveries interleave depends on the commits.
        let spread = layout(partitions);
        prop_assert_eq!(in_partitions(&spread, &simulated.actions), in_partitions(&spread, &run.actions));
        prop_assert_eq!(&simulated.counters, &run.counters);
        prop_assert_eq!(&simulated.report, &run.report);
        prop_assert_eq!(&simulated.projections, &run.projections);
        let stores = Stores::open(dir.path(), Wanted::default(), &StoreOptions::default()).unwrap();
        Partitions::replay(&stores, late_by(lateness), workers).unwrap();
        prop_assert_eq!(&run.projections, &dump(&stores), "replay");
    }

    /// On a stream in time order, every partitioning ends as one partition does: the same
    /// states, the same actions (in another order: each partition delivers its own), the
    /// same counters summed and the same report.
    #[test]
    fn a_partitioned_run_ends_as_one_partition_on_a_stream_in_time_order(
        s in scenario(),
        partitions in 2u32..6,
        crc in any::<bool>(),
    ) {
        let mut s = s;
        s.events.sort_by_key(|e| UnixMillis::from_proto(e.occurred_at.as_ref().unwrap()));
        // Team rules balance per partition (documented): the rest must be the same.
        s.staffed = false;
        let (_, one) = simulated(&s, options());
        let spread = Layout {
            partitions,
            partitioner: if crc { Partitioner::Crc32 } else { Partitioner::Murmur2 },
        };
        let (_, many) = simulated_on(&s, options(), spread);
        prop_assert_eq!(&one.states, &many.states);
        let by_key = |actions: &[v1::Action]| -> BTreeMap<String, v1::Action> {
            actions.iter().map(|a| (a.idempotency_key.clone(), a.clone())).collect()
        };
        prop_assert_eq!(by_key(&one.actions), by_key(&many.actions));
        prop_assert_eq!(&one.counters, &many.counters);
        prop_assert_eq!(&one.report, &many.report);
    }

    #[test]
    fn reports_add_up(s in scenario()) {
        let (sim, out) = simulated(&s, options());
        let states = &out.states;
        let data = canvass_engine::reports::campaign_data(sim.engine().stores(), &[]).unwrap();
        for data in &data {
            let c = &data.counters;
            let journeys: Vec<&v1::ContactCampaignState> = states
                .values()
                .flat_map(|st| st.campaigns.iter())
                .filter(|j| j.campaign_id == data.id)
                .collect();
            // Every enrollment is in exactly one arm.
            prop_assert_eq!(c.arms.values().map(|a| a.enrolled).sum::<u64>(), c.enrollments);
            // Group counts and the contacts outside any group add up to the contacts enrolled
            // (every enrollment, when the campaign never lets a contact back in).
            let grouped: u64 = data.groups.iter().map(|(_, n)| n).sum();
            let ungrouped = journeys.iter().filter(|j| j.response_group.is_empty()).count() as u64;
            prop_assert_eq!(grouped + ungrouped, journeys.len() as u64);
            let reentry = data.spec.as_ref().and_then(|s| s.reentry.as_ref()).map_or(0, |r| r.mode);
            if reentry == 0 || reentry == v1::ReentryMode::Never as i32 {
                prop_assert_eq!(journeys.len() as u64, c.enrollments);
            }
            // The states' active counts are the active journeys.
            let active = journeys.iter().filter(|j| j.status() == v1::JourneyStatus::Active).count() as u64;
            prop_assert_eq!(c.states.values().map(|s| s.active).sum::<u64>(), active);
        }
        for r in &out.report.campaigns {
            let d = &r.density;
            prop_assert!(d.reached <= d.eligible);
            if let Some(density) = d.density {
                prop_assert!((0.0..=1.0).contains(&density));
                prop_assert!((0.0..=1_000_000.0).contains(&d.dpmo.unwrap()));
            }
        }
        // Each model credits each purchase's whole amount once: the totals agree.
        let total = |pick: fn(&v1::Attribution) -> &str| -> Decimal {
            out.counters
                .values()
                .filter_map(|c| c.attribution.as_ref())
                .map(|a| Decimal::from_str(pick(a)).unwrap_or_default())
                .sum()
        };
        let last = total(|a| &a.last_touch);
        prop_assert_eq!(last, total(|a| &a.first_touch));
        prop_assert_eq!(last, total(|a| &a.linear));
    }

    #[test]
    fn every_contact_is_in_at_most_one_state_per_campaign(s in scenario()) {
        let (sim, out) = simulated(&s, options());
        check_invariants(sim.engine().core(), &out.states)?;
        // Idempotency keys never repeat within a run.
        let mut keys = HashSet::new();
        for a in &out.actions {
            prop_assert!(keys.insert(a.idempotency_key.clone()), "key {} emitted twice", a.idempotency_key);
        }
    }

    /// Whatever the partitioning and the commits, a campaign never spends past its budget,
    /// and each partition spends within its allotment, which depends on the partition count
    /// alone: the same stream gives each partition the same spend in any interleaving.
    #[test]
    fn no_partitioning_spends_past_the_budget(
        s in scenario(),
        partitions in 1u32..6,
        total in prop::sample::select(vec!["0", "1.19", "3.00", "7.55", "12"]),
        cuts in prop::collection::vec(0usize..100, 0..4),
    ) {
        let budget = Decimal::from_str(total).unwrap();
        let spread = layout(partitions);
        let mut sim = Simulation::partitioned(options(), spread, 2).unwrap();
        let inputs: Vec<Sourced> = spender_stream(&s, total).into_iter().map(unsourced).collect();
        let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (inputs.len() + 1)).collect();
        cuts.push(inputs.len());
        cuts.sort_unstable();
        let mut rest = inputs.into_iter();
        let mut done = 0;
        let mut actions = Vec::new();
        for cut in cuts {
            sim.ingest(rest.by_ref().take(cut - done).collect()).unwrap();
            done = cut;
            actions.extend(sim.take_actions().unwrap());
        }
        let spent_by = |p: u32| -> Decimal {
            actions
                .iter()
                .filter(|a| spread.partition_of(&a.contact_id) == p)
                .map(|a| Decimal::from_str(&a.cost).unwrap_or_default())
                .sum()
        };
        let mut spent = Decimal::ZERO;
        for p in 0..partitions {
            let share = canvass_core::partition::Share { index: p, count: partitions };
            let allotment = canvass_core::partition::allotment(budget, share);
            prop_assert!(spent_by(p) <= allotment, "partition {}: {} of {}", p, spent_by(p), allotment);
            spent += spent_by(p);
        }
        prop_assert!(spent <= budget, "spent {} of {}", spent, budget);
        let counters = canvass_engine::reports::counters(sim.engine().stores(), "spender").unwrap();
        prop_assert_eq!(Decimal::from_str(if counters.cost.is_empty() { "0" } else { &counters.cost }).unwrap(), spent);
        // The same stream in one commit spends the same in each partition.
        let (_, whole) = {
            let mut one = Simulation::partitioned(options(), spread, 1).unwrap();
            one.ingest(spender_stream(&s, total).into_iter().map(unsourced).collect()).unwrap();
            let a = one.take_actions().unwrap();
            (one, a)
        };
        prop_assert_eq!(in_partitions(&spread, &whole), in_partitions(&spread, &actions));
    }
}
