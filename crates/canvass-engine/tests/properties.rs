//! Property tests of the core driven by the simulator: determinism, batching, replay, and
//! one state per contact per campaign, over random contacts and event streams.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use canvass_core::{Catalog, Core, Effect, UnixMillis, compile};
use canvass_engine::{Output, Simulator, replay};
use canvass_proto::{json, v1, wkt};
use canvass_report::{CampaignData, Options};
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
    {"id": "vip", "responseGroup": "vip", "actions": [{"kind": "ACTION_KIND_PHONE_CALL", "template": "call"}],
     "transitions": [{"to": "done", "onEvent": {"type": "purchase"}}, {"to": "nudge", "after": "172800s"}]},
    {"id": "nudge", "responseGroup": "nudged", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "nudge"}],
     "transitions": [
       {"to": "done", "onEvent": {"type": "purchase", "guard": "contact.purchase_count >= 1"}},
       {"to": "nudge", "onEvent": {"type": "email.opened", "guard": "state.entry_seq < 6"}},
       {"to": "gave_up", "after": "259200s"}]},
    {"id": "done", "responseGroup": "bought", "goal": true, "terminal": true},
    {"id": "gave_up", "terminal": true}
  ]
}"#;

fn core() -> Core {
    let mut catalog = Catalog::new();
    for text in [
        example("campaign.json"),
        example("survey.json"),
        ROUTER.to_string(),
    ] {
        let spec: v1::CampaignSpec = json::from_str(&text).unwrap();
        catalog.insert(compile(&spec).unwrap()).unwrap();
    }
    catalog.run_all_latest();
    Core::new(catalog)
}

#[derive(Debug, Clone)]
struct Scenario {
    contacts: Vec<v1::Contact>,
    /// Sorted by time, as the simulator applies them.
    events: Vec<v1::TouchpointEvent>,
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

fn event_strategy(contacts: usize) -> impl Strategy<Value = (usize, i64, v1::TouchpointEvent)> {
    let kinds = prop::sample::select(vec![
        "trial.confirmed",
        "trial.rated",
        "trial.rated.norating",
        "survey.completed",
        "signup",
        "signup.free",
        "email.opened",
        "purchase",
    ]);
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
            other => (other, None),
        };
        let at = UnixMillis(T0 + hour * HOUR);
        let e = v1::TouchpointEvent {
            id: String::new(),
            r#type: kind.to_string(),
            contact_id,
            occurred_at: Some(at.to_proto()),
            attrs,
            ..Default::default()
        };
        (who, hour, e)
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (1usize..7)
        .prop_flat_map(|n| {
            let contacts = (0..n).map(contact_strategy).collect::<Vec<_>>();
            (
                contacts,
                prop::collection::vec(event_strategy(n), 0..60),
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
            )
        })
        .prop_map(|(contacts, events, duplicates)| {
            let mut events: Vec<v1::TouchpointEvent> = events
                .into_iter()
                .enumerate()
                .map(|(i, (_, _, mut e))| {
                    e.id = format!("e{i}");
                    e
                })
                .collect();
            // Redeliveries of earlier events, under the same id.
            for d in duplicates {
                if !events.is_empty() {
                    let copy = events[d.index(events.len())].clone();
                    events.push(copy);
                }
            }
            events.sort_by_key(|e| UnixMillis::from_proto(e.occurred_at.as_ref().unwrap()));
            Scenario { contacts, events }
        })
}

type Outcome = (BTreeMap<String, v1::ContactState>, Vec<Output>);

fn start(s: &Scenario) -> Simulator {
    let mut sim = Simulator::new(core(), UnixMillis(T0)).recording();
    for c in &s.contacts {
        sim.upsert_contact(c.clone());
    }
    for id in ["b-trial-invite", "router"] {
        sim.launch(id);
    }
    sim
}

fn horizon() -> UnixMillis {
    UnixMillis(T0 + 200 * 24 * HOUR)
}

/// Feeds the events in batches; before each batch the clock is advanced `pause` hours (but
/// never past the batch's first event), firing whatever timers fall due meanwhile.
fn run_in_batches(s: &Scenario, cuts: &[(usize, i64)]) -> (Simulator, Outcome) {
    let mut sim = start(s);
    let mut output = sim.take_output();
    let mut next = 0;
    let mut boundaries: Vec<(usize, i64)> = cuts
        .iter()
        .map(|(c, p)| (c % (s.events.len() + 1), *p))
        .collect();
    boundaries.sort();
    boundaries.push((s.events.len(), 0));
    for (end, pause) in boundaries {
        if end < next {
            continue;
        }
        if let Some(first) = s.events.get(next) {
            let first_at = UnixMillis::from_proto(first.occurred_at.as_ref().unwrap());
            let pause_at = UnixMillis(sim.clock().0 + pause * HOUR).min(first_at);
            if pause_at >= sim.clock() {
                sim.advance_to(pause_at);
            }
        }
        for e in &s.events[next..end] {
            sim.ingest(e.clone());
        }
        output.extend(sim.take_output());
        next = end;
    }
    sim.drain(horizon());
    output.extend(sim.take_output());
    let states = sim.states().clone();
    (sim, (states, output))
}

fn run(s: &Scenario) -> (Simulator, Outcome) {
    run_in_batches(s, &[])
}

/// The report's input for every campaign of the run.
fn report_data(sim: &Simulator, states: &BTreeMap<String, v1::ContactState>) -> Vec<CampaignData> {
    canvass_engine::reports::simulated(sim.core(), sim.campaigns(), states)
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
        cases: 96,
        // Failing cases are kept beside this file (tests/properties.proptest-regressions) and
        // committed, so that every later run tries them first.
        failure_persistence: Some(Box::new(prop::test_runner::FileFailurePersistence::WithSource("proptest-regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn the_same_inputs_always_give_the_same_output(s in scenario()) {
        let (_, a) = run(&s);
        let (_, b) = run(&s);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn batching_the_input_does_not_change_the_outcome(
        s in scenario(),
        cuts in prop::collection::vec((0usize..80, 0i64..400), 0..8),
    ) {
        let (_, whole) = run(&s);
        let (_, batched) = run_in_batches(&s, &cuts);
        prop_assert_eq!(whole, batched);
    }

    #[test]
    fn replaying_the_log_rebuilds_the_same_state_effects_and_reports(s in scenario()) {
        let (sim, (states, output)) = run(&s);
        let replayed = replay(sim.core(), sim.log());
        prop_assert_eq!(&states, &replayed.states);
        let effects: Vec<Effect> = output.into_iter().map(|o| o.effect).collect();
        prop_assert_eq!(effects, replayed.effects);
        prop_assert_eq!(sim.campaigns(), &replayed.campaigns);
        let live = canvass_report::build(&report_data(&sim, &states), &Options::default());
        let rebuilt = canvass_report::build(&report_data(&sim, &replayed.states), &Options::default());
        prop_assert_eq!(live, rebuilt);
    }

    #[test]
    fn reports_add_up(s in scenario()) {
        let (sim, (states, _)) = run(&s);
        for data in report_data(&sim, &states) {
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
        let report = canvass_report::build(&report_data(&sim, &states), &Options::default());
        for r in &report.campaigns {
            let d = &r.density;
            prop_assert!(d.reached <= d.eligible);
            if let Some(density) = d.density {
                prop_assert!((0.0..=1.0).contains(&density));
                prop_assert!((0.0..=1_000_000.0).contains(&d.dpmo.unwrap()));
            }
        }
        // Each model credits each purchase's whole amount once: the totals agree.
        let total = |pick: fn(&v1::Attribution) -> &str| -> Decimal {
            sim.campaigns()
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
        let (sim, (states, output)) = run(&s);
        check_invariants(sim.core(), &states)?;
        // Idempotency keys never repeat within a run.
        let mut keys = std::collections::HashSet::new();
        for o in &output {
            if let Effect::Action(a) = &o.effect {
                prop_assert!(keys.insert(a.idempotency_key.clone()), "key {} emitted twice", a.idempotency_key);
            }
        }
    }
}
