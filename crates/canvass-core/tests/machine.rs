//! The state machine, one behaviour per test: inputs in, a trace of the effects out.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use canvass_core::{
    Catalog, Core, Effect, EnrollCause, Input, TimerId, UnixMillis, assignment, compile,
    machine::CapOutcome,
    policy,
    stats::{self, Cause},
};
use canvass_proto::{
    json,
    v1::{self, follow_up::Kind},
};
use expect_test::{Expect, expect};

/// 2026-01-01T00:00:00Z: traces print times as hours after it.
const T0: i64 = 1_767_225_600_000;
const HOUR: i64 = 3_600_000;

struct World {
    core: Core,
    counters: BTreeMap<String, v1::CampaignCounters>,
    workload: v1::Workload,
    others: BTreeMap<String, v1::ContactState>,
    state: v1::ContactState,
    timers: Vec<(UnixMillis, TimerId)>,
    seq: u32,
}

fn world(specs: &[&str]) -> World {
    let mut catalog = Catalog::new();
    for spec in specs {
        let spec: v1::CampaignSpec = json::from_str(spec).expect("spec JSON");
        catalog.insert(compile(&spec).expect("valid spec")).unwrap();
    }
    catalog.run_all_latest();
    World {
        core: Core::new(catalog),
        counters: BTreeMap::new(),
        workload: v1::Workload::default(),
        others: BTreeMap::new(),
        state: v1::ContactState::default(),
        timers: Vec::new(),
        seq: 0,
    }
}

fn hours(ms: i64) -> String {
    format!("+{}h", (ms - T0) / HOUR)
}

impl World {
    fn apply(&mut self, input: Input<'_>, at_hours: i64) -> String {
        let now = UnixMillis(T0 + at_hours * HOUR);
        let t = self.core.step(
            self.state.clone(),
            &input,
            now,
            &self.counters,
            &self.workload,
        );
        // The same input on the same state always gives the same transition.
        assert_eq!(
            t,
            self.core.step(
                self.state.clone(),
                &input,
                now,
                &self.counters,
                &self.workload
            )
        );
        stats::record_all(&mut self.counters, &t.effects, &Cause::of(&input, now));
        for e in &t.effects {
            assignment::record(&mut self.workload, e);
        }
        self.state = t.state;
        let mut out = String::new();
        for e in &t.effects {
            match e {
                Effect::ScheduleTimer { id, due } => self.timers.push((*due, id.clone())),
                Effect::CancelTimer { id, due } => {
                    assert!(
                        self.timers.contains(&(*due, id.clone())),
                        "cancelled a timer that is not armed: {id:?} at {due:?}"
                    );
                    self.timers.retain(|(_, t)| t != id);
                }
                _ => {}
            }
            out.push_str(&render(e));
            out.push('\n');
        }
        out
    }

    fn contact(&mut self, contact: &str) -> String {
        let c: v1::Contact = json::from_str(contact).unwrap();
        self.apply(Input::UpsertContact(&c), 0)
    }

    fn launch(&mut self, campaign: &str) -> String {
        self.apply(Input::FollowUp(&Kind::Launch(campaign.into())), 0)
    }

    fn event(&mut self, at_hours: i64, kind: &str, attrs: &str) -> String {
        self.seq += 1;
        let contact = self
            .state
            .contact
            .as_ref()
            .map_or("p1".to_string(), |c| c.id.clone());
        let text = format!(
            r#"{{"id": "ev{}", "type": "{kind}", "contactId": "{contact}", "occurredAt": "2026-01-01T00:00:00Z", "attrs": {attrs}}}"#,
            self.seq
        );
        let e: v1::TouchpointEvent = json::from_str(&text).unwrap();
        self.apply(Input::Event(&e), at_hours)
    }

    /// Fires the earliest armed timer at its due time.
    fn fire_next(&mut self) -> String {
        self.timers.sort();
        let (due, id) = self.timers.remove(0);
        let at = (due.0 - T0) / HOUR;
        format!(
            "@{}\n{}",
            hours(due.0),
            self.apply(Input::TimerFired(&id), at)
        )
    }

    /// Changes the catalog: sets a campaign's status, or loads and activates a new version.
    fn catalog(&mut self, change: impl FnOnce(&mut Catalog)) {
        let mut catalog = self.core.catalog().clone();
        change(&mut catalog);
        self.core = Core::new(catalog);
    }

    /// Makes `contact` (a profile in JSON) the contact the next inputs apply to, keeping the
    /// state of the one before; the campaign counters are shared, as in the engine.
    fn switch_to(&mut self, contact: &str) -> String {
        let c: v1::Contact = json::from_str(contact).unwrap();
        let current = std::mem::take(&mut self.state);
        if let Some(id) = current.contact.as_ref().map(|c| c.id.clone()) {
            self.others.insert(id, current);
        }
        self.state = self.others.remove(&c.id).unwrap_or_default();
        self.apply(Input::UpsertContact(&c), 0)
    }

    fn counters(&self, campaign: &str) -> &v1::CampaignCounters {
        self.counters.get(campaign).expect("counters")
    }

    fn journey(&self, campaign: &str) -> &v1::ContactCampaignState {
        self.state
            .campaigns
            .iter()
            .find(|j| j.campaign_id == campaign)
            .expect("journey")
    }
}

fn render(e: &Effect) -> String {
    match e {
        Effect::Enrolled {
            campaign_id,
            version,
            variant,
            holdout,
            cause,
        } => {
            let cause = match cause {
                EnrollCause::Launch => "launch".to_string(),
                EnrollCause::Trigger { event_id } => format!("trigger {event_id}"),
                EnrollCause::StartedBy { campaign_id } => format!("started by {campaign_id}"),
            };
            let variant = if variant.is_empty() {
                String::new()
            } else {
                format!(" variant={variant}")
            };
            let holdout = if *holdout { " holdout" } else { "" };
            format!("enrolled {campaign_id} v{version}{variant}{holdout} ({cause})")
        }
        Effect::EnrollmentSkipped {
            campaign_id,
            reason,
        } => format!("skipped {campaign_id}: {reason:?}"),
        Effect::StateEntered {
            campaign_id,
            from,
            to,
            entry_seq,
        } => {
            format!(
                "{campaign_id}: {} -> {to} (e{entry_seq})",
                from.as_deref().unwrap_or("*")
            )
        }
        Effect::Action(a) => {
            let mut s = format!(
                "action {} {}",
                a.kind().as_str_name().trim_start_matches("ACTION_KIND_"),
                a.idempotency_key
            );
            if !a.template.is_empty() {
                s.push_str(&format!(" template={}", a.template));
            }
            if let Some(by) = &a.respond_by {
                s.push_str(&format!(
                    " respond_by={}",
                    hours(UnixMillis::from_proto(by).0)
                ));
            }
            if !a.cost.is_empty() {
                s.push_str(&format!(" cost={} {}", a.cost, a.currency));
            }
            if !a.cause_event_id.is_empty() {
                s.push_str(&format!(" cause={}", a.cause_event_id));
            }
            s
        }
        Effect::ScheduleTimer { id, due } => {
            format!(
                "timer {} e{} {} due {}",
                id.campaign_id,
                id.entry_seq,
                timer_name(id),
                hours(due.0)
            )
        }
        Effect::CancelTimer { id, .. } => format!(
            "cancel timer {} e{} {}",
            id.campaign_id,
            id.entry_seq,
            timer_name(id)
        ),
        Effect::GoalReached {
            campaign_id,
            state,
            arm,
            first,
        } => format!(
            "goal {campaign_id} {state}{}{}",
            arm_suffix(arm),
            if *first { "" } else { " (again)" }
        ),
        Effect::Confirmed {
            campaign_id,
            kind,
            template,
            outcome,
        } => format!(
            "confirmed {campaign_id} {}{} {}",
            kind.as_str_name().trim_start_matches("ACTION_KIND_"),
            template_suffix(template),
            outcome
                .as_str_name()
                .trim_start_matches("DELIVERY_OUTCOME_")
        ),
        Effect::Engaged {
            campaign_id,
            kind,
            template,
            engagement,
            unique,
        } => format!(
            "engaged {campaign_id} {}{} {engagement:?}{}",
            kind.as_str_name().trim_start_matches("ACTION_KIND_"),
            template_suffix(template),
            if *unique { " (unique)" } else { "" }
        ),
        Effect::Withheld {
            campaign_id,
            kind,
            idempotency_key,
            cost,
            spent,
            total,
        } => format!(
            "withheld {campaign_id} {} {idempotency_key} cost={cost} spent={spent} of {total}",
            kind.as_str_name().trim_start_matches("ACTION_KIND_")
        ),
        Effect::Reached { campaign_id, arm } => {
            format!("reached {campaign_id}{}", arm_suffix(arm))
        }
        Effect::Revenue { amount, credited } => format!(
            "revenue {amount} credited last={} first={} linear={}",
            credited.last_touch,
            credited.first_touch,
            credited.linear.round_dp(4)
        ),
        Effect::Attributed {
            campaign_id,
            amount,
            shares,
            since_touch,
            ..
        } => {
            let mut s = format!(
                "attributed {campaign_id} of {amount} {}h after its touch:",
                since_touch / 3_600_000
            );
            for (kind, share) in shares {
                s.push_str(&format!(
                    " {} last={} first={} linear={}",
                    kind.as_str_name().trim_start_matches("ACTION_KIND_"),
                    share.last_touch,
                    share.first_touch,
                    share.linear.round_dp(4)
                ));
            }
            s
        }
        Effect::Lead {
            campaign_id,
            opportunity_id,
            owner,
            change,
        } => format!("lead {campaign_id} {opportunity_id} {owner} {change:?}"),
        Effect::Capped {
            idempotency_key,
            outcome,
            ..
        } => match outcome {
            CapOutcome::Deferred { reason, until } => format!(
                "capped {idempotency_key} by {reason:?}: deferred to {}",
                hours(until.0)
            ),
            CapOutcome::Dropped(reason) => {
                format!("capped {idempotency_key} by {reason:?}: Dropped")
            }
            other => format!("capped {idempotency_key}: {other:?}"),
        },
        Effect::ArmPurchase {
            campaign_id,
            arm,
            amount,
            first,
        } => format!(
            "arm purchase {campaign_id}{} {amount}{}",
            arm_suffix(arm),
            if *first { " (converted)" } else { "" }
        ),
        Effect::Completed {
            campaign_id,
            state,
            first,
        } => format!(
            "completed {campaign_id} in {state}{}",
            if *first { "" } else { " (again)" }
        ),
        Effect::ConditionFailed {
            campaign_id,
            path,
            error,
        } => format!("condition failed {campaign_id} {path}: {error}"),
        Effect::Fault {
            campaign_id,
            reason,
        } => format!("fault {campaign_id}: {reason}"),
        Effect::Stopped { campaign_id, state } => format!("stopped {campaign_id} in {state}"),
        Effect::Migrated {
            campaign_id,
            from_version,
            to_version,
            from_state,
            to_state,
        } => format!(
            "migrated {campaign_id} v{from_version} {from_state} -> v{to_version} {to_state}"
        ),
    }
}

fn arm_suffix(arm: &str) -> String {
    if arm.is_empty() {
        String::new()
    } else {
        format!(" arm={arm}")
    }
}

fn template_suffix(template: &str) -> String {
    if template.is_empty() {
        String::new()
    } else {
        format!(" template={template}")
    }
}

fn check(actual: String, expected: Expect) {
    expected.assert_eq(&actual);
}

/// The reference campaign's core, small enough to read in a test.
const TRIAL: &str = r#"{
  "id": "trial", "version": 1, "initialState": "invited",
  "audience": {"filter": "contact.purchases.exists(p, p.product == 'A')"},
  "states": [
    {"id": "invited", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "invite"}],
     "transitions": [{"to": "confirmed", "onEvent": {"type": "trial.confirmed"}}, {"to": "no_reply", "after": "604800s"}]},
    {"id": "no_reply", "responseGroup": "no_reply", "actions": [{"kind": "ACTION_KIND_POSTAL_MAIL", "template": "letter"}],
     "transitions": [{"to": "confirmed", "onEvent": {"type": "trial.confirmed"}}, {"to": "lapsed", "after": "1209600s"}]},
    {"id": "confirmed", "responseGroup": "confirmed", "actions": [{"kind": "ACTION_KIND_TRIAL_OFFER", "params": {"product": "B"}}],
     "transitions": [
       {"to": "high", "onEvent": {"type": "trial.rated", "guard": "event.attrs.rating >= 4"}},
       {"to": "low", "onEvent": {"type": "trial.rated", "guard": "event.attrs.rating < 4"}}]},
    {"id": "high", "responseGroup": "rated_high", "goal": true, "terminal": true,
     "actions": [{"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "172800s"}]},
    {"id": "low", "responseGroup": "rated_low", "terminal": true,
     "actions": [{"kind": "ACTION_KIND_START_CAMPAIGN", "targetCampaign": "survey"}]},
    {"id": "lapsed", "terminal": true}
  ],
  "budget": {"currency": "EUR", "costPerAction": {"EMAIL": "0.02", "SALES_HANDOFF": "25.00"}}
}"#;

const SURVEY: &str = r#"{
  "id": "survey", "version": 1, "initialState": "asked",
  "states": [
    {"id": "asked", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "survey"}],
     "transitions": [{"to": "answered", "onEvent": {"type": "survey.completed"}}, {"to": "answered", "onEvent": {"type": "trial.rated"}}]},
    {"id": "answered", "responseGroup": "answered", "terminal": true, "goal": true}
  ]
}"#;

const BUYER: &str = r#"{"id": "p1", "purchases": [{"product": "A", "amount": "100"}]}"#;

#[test]
fn launch_enrolls_the_audience_and_arms_the_timeout() {
    let mut w = world(&[TRIAL, SURVEY]);
    check(w.contact(BUYER), expect![""]);
    check(
        w.launch("trial"),
        expect![[r#"
            enrolled trial v1 (launch)
            trial: * -> invited (e1)
            action EMAIL trial/v1/e1/a0/p1 template=invite cost=0.02 EUR
            timer trial e1 t1 due +168h
        "#]],
    );
}

#[test]
fn contacts_outside_the_audience_are_not_enrolled() {
    let mut w = world(&[TRIAL]);
    w.contact(r#"{"id": "p2", "purchases": [{"product": "C"}]}"#);
    check(w.launch("trial"), expect![""]);
    assert!(w.state.campaigns.is_empty());
}

#[test]
fn an_event_moves_the_contact_and_cancels_the_timeout() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    check(
        w.event(30, "trial.confirmed", "{}"),
        expect![[r#"
            cancel timer trial e1 t1
            trial: invited -> confirmed (e2)
            action TRIAL_OFFER trial/v1/e2/a0/p1 cost=0 EUR cause=ev1
        "#]],
    );
    assert!(w.timers.is_empty());
    assert_eq!(w.journey("trial").response_group, "confirmed");
}

#[test]
fn a_timeout_fires_after_its_duration_from_state_entry() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    check(
        w.fire_next(),
        expect![[r#"
            @+168h
            trial: invited -> no_reply (e2)
            action POSTAL_MAIL trial/v1/e2/a0/p1 template=letter cost=0 EUR
            timer trial e2 t1 due +504h
        "#]],
    );
    check(
        w.fire_next(),
        expect![[r#"
            @+504h
            trial: no_reply -> lapsed (e3)
            completed trial in lapsed
        "#]],
    );
    // The last grouped state decides the group: lapsed has none, so the contact stays "no_reply".
    assert_eq!(w.journey("trial").response_group, "no_reply");
    assert_eq!(w.journey("trial").status(), v1::JourneyStatus::Completed);
}

#[test]
fn a_stale_timer_fires_to_no_effect() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    let stale = w.timers[0].1.clone();
    w.event(1, "trial.confirmed", "{}");
    check(w.apply(Input::TimerFired(&stale), 168), expect![""]);
    assert_eq!(w.journey("trial").state, "confirmed");
}

#[test]
fn guards_choose_the_first_matching_transition() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.event(1, "trial.confirmed", "{}");
    check(
        w.event(50, "trial.rated", r#"{"rating": 5}"#),
        expect![[r#"
            trial: confirmed -> high (e3)
            goal trial high
            action SALES_HANDOFF trial/v1/e3/a0/p1 respond_by=+98h cost=25.00 EUR cause=ev2
            timer trial e3 sla0 due +98h
            lead trial trial/v1/e3/a0/p1 sales Opened(Assigned { rule: "default", round_robin: None })
            completed trial in high
        "#]],
    );
    assert!(w.journey("trial").goal_reached);
}

#[test]
fn an_event_whose_guards_all_fail_leaves_the_contact_where_it_is() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.event(1, "trial.confirmed", "{}");
    // An event of another type is ignored; a guard that cannot be evaluated counts as false
    // and is reported.
    check(w.event(2, "email.opened", "{}"), expect![""]);
    check(
        w.event(3, "trial.rated", r#"{"stars": 5}"#),
        expect![[r#"
            condition failed trial states.confirmed.transitions[0].onEvent.guard: No such key: rating
            condition failed trial states.confirmed.transitions[1].onEvent.guard: No such key: rating
        "#]],
    );
    assert_eq!(w.journey("trial").state, "confirmed");
}

#[test]
fn start_campaign_enrolls_into_the_sub_campaign_in_the_same_step() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.event(1, "trial.confirmed", "{}");
    // The survey listens for trial.rated too, but it did not exist for this contact before
    // the event, so the event that started it does not move it.
    check(
        w.event(2, "trial.rated", r#"{"rating": 2}"#),
        expect![[r#"
            trial: confirmed -> low (e3)
            action START_CAMPAIGN trial/v1/e3/a0/p1 cost=0 EUR cause=ev2
            enrolled survey v1 (started by trial)
            survey: * -> asked (e1)
            action EMAIL survey/v1/e1/a0/p1 template=survey cause=ev2
            completed trial in low
        "#]],
    );
    check(
        w.event(3, "survey.completed", "{}"),
        expect![[r#"
            survey: asked -> answered (e2)
            goal survey answered
            completed survey in answered
        "#]],
    );
}

#[test]
fn a_missing_sub_campaign_is_reported_not_ignored() {
    let mut w = world(&[TRIAL]);
    w.contact(BUYER);
    w.launch("trial");
    w.event(1, "trial.confirmed", "{}");
    check(
        w.event(2, "trial.rated", r#"{"rating": 1}"#),
        expect![[r#"
            trial: confirmed -> low (e3)
            action START_CAMPAIGN trial/v1/e3/a0/p1 cost=0 EUR cause=ev2
            skipped survey: UnknownCampaign
            completed trial in low
        "#]],
    );
}

const ROUTER: &str = r#"{
  "id": "router", "version": 1, "initialState": "sort",
  "entryTriggers": [{"eventType": "signup", "guard": "event.attrs.plan != 'free'"}],
  "reentry": {"mode": "REENTRY_MODE_AFTER_COOLDOWN", "cooldown": "86400s"},
  "states": [
    {"id": "sort", "transitions": [
      {"to": "vip", "immediately": {"guard": "contact.attrs.tier == 'A'"}},
      {"to": "standard", "immediately": {}}]},
    {"id": "vip", "responseGroup": "vip", "actions": [{"kind": "ACTION_KIND_PHONE_CALL", "template": "vip-call"}],
     "transitions": [{"to": "done", "immediately": {}}]},
    {"id": "standard", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "welcome"}],
     "transitions": [{"to": "done", "after": "3600s"}]},
    {"id": "done", "terminal": true}
  ]
}"#;

#[test]
fn immediate_transitions_branch_on_guards_and_chain_until_the_contact_settles() {
    let mut w = world(&[ROUTER]);
    w.contact(r#"{"id": "p1", "attrs": {"tier": "A"}}"#);
    check(
        w.event(0, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
            enrolled router v1 (trigger ev1)
            router: * -> sort (e1)
            router: sort -> vip (e2)
            action PHONE_CALL router/v1/e2/a0/p1 template=vip-call cause=ev1
            router: vip -> done (e3)
            completed router in done
        "#]],
    );
    let mut w = world(&[ROUTER]);
    w.contact(r#"{"id": "p1", "attrs": {"tier": "C"}}"#);
    check(
        w.event(0, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
            enrolled router v1 (trigger ev1)
            router: * -> sort (e1)
            router: sort -> standard (e2)
            action EMAIL router/v1/e2/a0/p1 template=welcome cause=ev1
            timer router e2 t0 due +1h
        "#]],
    );
}

#[test]
fn entry_triggers_respect_their_guard_and_the_reentry_cooldown() {
    let mut w = world(&[ROUTER]);
    w.contact(r#"{"id": "p1", "attrs": {"tier": "A"}}"#);
    check(w.event(0, "signup", r#"{"plan": "free"}"#), expect![""]);
    w.event(1, "signup", r#"{"plan": "pro"}"#);
    check(
        w.event(10, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
            skipped router: CooldownNotOver
        "#]],
    );
    // Left at +1h; the one-day cooldown is over at +25h (inclusive).
    check(
        w.event(25, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
            enrolled router v1 (trigger ev4)
            router: * -> sort (e4)
            router: sort -> vip (e5)
            action PHONE_CALL router/v1/e5/a0/p1 template=vip-call cause=ev4
            router: vip -> done (e6)
            completed router in done
        "#]],
    );
    // Entry sequence numbers keep growing across enrollments: idempotency keys never repeat.
    assert_eq!(w.journey("router").enrollments, 2);
}

#[test]
fn reentry_never_and_always() {
    let never = ROUTER.replace(
        r#""mode": "REENTRY_MODE_AFTER_COOLDOWN", "cooldown": "86400s""#,
        r#""mode": "REENTRY_MODE_NEVER""#,
    );
    let mut w = world(&[&never]);
    w.contact(r#"{"id": "p1", "attrs": {"tier": "A"}}"#);
    w.event(0, "signup", r#"{"plan": "pro"}"#);
    check(
        w.event(1000, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
        skipped router: ReentryNotAllowed
    "#]],
    );

    let always = ROUTER.replace(
        r#""mode": "REENTRY_MODE_AFTER_COOLDOWN", "cooldown": "86400s""#,
        r#""mode": "REENTRY_MODE_ALWAYS""#,
    );
    let mut w = world(&[&always]);
    w.contact(r#"{"id": "p1", "attrs": {"tier": "C"}}"#);
    w.event(0, "signup", r#"{"plan": "pro"}"#);
    // Still inside (waiting in `standard`): a contact is never in a campaign twice, so the
    // trigger is not even tried.
    check(w.event(0, "signup", r#"{"plan": "pro"}"#), expect![""]);
    w.fire_next();
    check(
        w.event(2, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
            enrolled router v1 (trigger ev3)
            router: * -> sort (e4)
            router: sort -> standard (e5)
            action EMAIL router/v1/e5/a0/p1 template=welcome cause=ev3
            timer router e5 t0 due +3h
        "#]],
    );
}

const SPLIT: &str = r#"{
  "id": "ab", "version": 1, "initialState": "a",
  "audience": {"filter": "true"},
  "split": {"seed": 3, "holdoutBasisPoints": 2000, "variants": [{"id": "control", "weight": 1}, {"id": "bold", "weight": 1, "initialState": "b"}]},
  "states": [
    {"id": "a", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "plain"}], "terminal": true},
    {"id": "b", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "bold"}], "terminal": true}
  ]
}"#;

#[test]
fn the_split_is_a_hash_holdouts_get_nothing_and_variants_may_start_elsewhere() {
    let mut traces = String::new();
    for id in ["p1", "p2", "p3", "p4", "p5", "p6"] {
        let mut w = world(&[SPLIT]);
        w.contact(&format!(r#"{{"id": "{id}"}}"#));
        traces.push_str(&format!("{id}:\n{}", w.launch("ab")));
        if w.journey("ab").status() == v1::JourneyStatus::Holdout {
            assert_eq!(w.journey("ab").response_group, "holdout");
        }
    }
    check(
        traces,
        expect![[r#"
            p1:
            enrolled ab v1 variant=bold (launch)
            ab: * -> b (e1)
            action EMAIL ab/v1/e1/a0/p1 template=bold
            completed ab in b
            p2:
            enrolled ab v1 holdout (launch)
            p3:
            enrolled ab v1 variant=control (launch)
            ab: * -> a (e1)
            action EMAIL ab/v1/e1/a0/p3 template=plain
            completed ab in a
            p4:
            enrolled ab v1 variant=bold (launch)
            ab: * -> b (e1)
            action EMAIL ab/v1/e1/a0/p4 template=bold
            completed ab in b
            p5:
            enrolled ab v1 variant=bold (launch)
            ab: * -> b (e1)
            action EMAIL ab/v1/e1/a0/p5 template=bold
            completed ab in b
            p6:
            enrolled ab v1 variant=control (launch)
            ab: * -> a (e1)
            action EMAIL ab/v1/e1/a0/p6 template=plain
            completed ab in a
        "#]],
    );
}

#[test]
fn an_event_addressed_to_one_campaign_moves_only_that_campaign() {
    let other = TRIAL.replace(r#""id": "trial""#, r#""id": "trial2""#);
    let mut w = world(&[TRIAL, &other, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.launch("trial2");
    let e: v1::TouchpointEvent = json::from_str(
        r#"{"id": "x", "type": "trial.confirmed", "contactId": "p1", "campaignId": "trial2", "occurredAt": "2026-01-01T01:00:00Z"}"#,
    )
    .unwrap();
    check(
        w.apply(Input::Event(&e), 1),
        expect![[r#"
            cancel timer trial2 e1 t1
            trial2: invited -> confirmed (e2)
            action TRIAL_OFFER trial2/v1/e2/a0/p1 cost=0 EUR cause=x
        "#]],
    );
    assert_eq!(w.journey("trial").state, "invited");
}

const LOYAL: &str = r#"{
  "id": "loyal", "version": 1, "initialState": "watch",
  "entryTriggers": [{"eventType": "purchase", "guard": "contact.purchase_count > 2"}],
  "states": [
    {"id": "watch", "transitions": [
      {"to": "thank", "immediately": {"guard": "contact.total_spent >= 100.0 && contact.days_since_last_purchase == 0"}},
      {"to": "done", "immediately": {}}]},
    {"id": "thank", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "thanks"}], "transitions": [{"to": "done", "immediately": {}}]},
    {"id": "done", "terminal": true}
  ]
}"#;

#[test]
fn purchase_events_extend_the_contact_history_seen_by_conditions() {
    let mut w = world(&[LOYAL]);
    w.contact(r#"{"id": "p1", "purchases": [{"product": "A", "amount": "40", "at": "2025-12-01T00:00:00Z"}]}"#);
    check(
        w.event(0, "purchase", r#"{"product": "B", "amount": 30}"#),
        expect![[r#"
            revenue 30 credited last=0 first=0 linear=0
        "#]],
    );
    check(
        w.event(
            5,
            "purchase",
            r#"{"product": "C", "amount": "35.5", "order_id": "o-3"}"#,
        ),
        expect![[r#"
            revenue 35.5 credited last=0 first=0 linear=0
            enrolled loyal v1 (trigger ev2)
            loyal: * -> watch (e1)
            loyal: watch -> thank (e2)
            action EMAIL loyal/v1/e2/a0/p1 template=thanks cause=ev2
            loyal: thank -> done (e3)
            completed loyal in done
        "#]],
    );
    let purchases = &w.state.contact.as_ref().unwrap().purchases;
    assert_eq!(purchases.len(), 3);
    assert_eq!(
        (
            purchases[2].product.as_str(),
            purchases[2].amount.as_str(),
            purchases[2].order_id.as_str()
        ),
        ("C", "35.5", "o-3")
    );
}

#[test]
fn an_event_for_a_contact_without_a_profile_creates_one() {
    let mut w = world(&[ROUTER]);
    check(
        w.event(0, "signup", r#"{"plan": "pro"}"#),
        expect![[r#"
            enrolled router v1 (trigger ev1)
            router: * -> sort (e1)
            condition failed router states.sort.transitions[0].immediately.guard: No such key: tier
            router: sort -> standard (e2)
            action EMAIL router/v1/e2/a0/p1 template=welcome cause=ev1
            timer router e2 t0 due +1h
        "#]],
    );
    assert_eq!(w.state.contact.as_ref().unwrap().id, "p1");
}

#[test]
fn guarded_immediate_loops_are_stopped_and_reported() {
    let spin = r#"{
      "id": "spin", "version": 1, "initialState": "a", "audience": {"filter": "true"},
      "states": [
        {"id": "a", "transitions": [{"to": "b", "immediately": {"guard": "state.entry_seq < 1000"}}, {"to": "z", "after": "60s"}]},
        {"id": "b", "transitions": [{"to": "a", "immediately": {"guard": "true"}}]},
        {"id": "z", "terminal": true}
      ]
    }"#;
    let mut w = world(&[spin]);
    w.contact(r#"{"id": "p1"}"#);
    let trace = w.launch("spin");
    assert!(
        trace.ends_with(
            "fault spin: immediate transitions did not settle after 64 states; stopped in `a`\n"
        ),
        "{trace}"
    );
    assert_eq!(w.journey("spin").entry_seq, 64);
}

#[test]
fn idempotency_keys_are_stable_across_runs_and_unique_across_entries() {
    let always = ROUTER.replace(
        r#""mode": "REENTRY_MODE_AFTER_COOLDOWN", "cooldown": "86400s""#,
        r#""mode": "REENTRY_MODE_ALWAYS""#,
    );
    // Three enrollments of the same contact, each leaving through the one-hour timeout.
    let run = || {
        let mut w = world(&[&always]);
        w.contact(r#"{"id": "p1"}"#);
        let mut trace = String::new();
        for at in [0, 2, 4] {
            trace.push_str(&w.event(at, "signup", r#"{"plan": "pro"}"#));
            trace.push_str(&w.fire_next());
        }
        trace
    };
    let first = run();
    assert_eq!(first, run());
    let keys: Vec<&str> = first
        .lines()
        .filter_map(|l| l.strip_prefix("action EMAIL "))
        .map(|l| l.split(' ').next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "router/v1/e2/a0/p1",
            "router/v1/e5/a0/p1",
            "router/v1/e8/a0/p1"
        ]
    );
}

#[test]
fn a_campaign_that_is_not_running_enrolls_no_one() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.catalog(|c| c.set_status("trial", v1::CampaignStatus::Approved));
    w.contact(BUYER);
    check(
        w.launch("trial"),
        expect![[r#"
        skipped trial: NotRunning
    "#]],
    );
}

#[test]
fn pausing_holds_timeouts_and_ignores_events_until_the_resume() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.catalog(|c| c.set_status("trial", v1::CampaignStatus::Paused));
    check(w.event(10, "trial.confirmed", "{}"), expect![""]);
    check(
        w.fire_next(),
        expect![[r#"
        @+168h
    "#]],
    );
    assert_eq!(w.journey("trial").held_timers, [1]);
    w.catalog(|c| c.set_status("trial", v1::CampaignStatus::Running));
    check(
        w.apply(Input::FollowUp(&Kind::Resume("trial".into())), 200),
        expect![[r#"
            trial: invited -> no_reply (e2)
            action POSTAL_MAIL trial/v1/e2/a0/p1 template=letter cost=0 EUR
            timer trial e2 t1 due +536h
        "#]],
    );
    assert!(w.journey("trial").held_timers.is_empty());
}

#[test]
fn stopping_ends_the_journey_and_disarms_its_timers() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.catalog(|c| c.set_status("trial", v1::CampaignStatus::Stopped));
    check(
        w.apply(Input::FollowUp(&Kind::Stop("trial".into())), 5),
        expect![[r#"
            cancel timer trial e1 t1
            stopped trial in invited
        "#]],
    );
    assert_eq!(w.journey("trial").status(), v1::JourneyStatus::Stopped);
    check(w.event(6, "trial.confirmed", "{}"), expect![""]);
}

#[test]
fn a_new_version_takes_over_contacts_in_the_states_it_maps() {
    let v2 = TRIAL
        .replace(r#""version": 1"#, r#""version": 2"#)
        .replace(r#""template": "letter""#, r#""template": "letter-v2""#)
        .replace(r#""604800s""#, r#""259200s""#)
        .replace(r#""initialState": "invited","#, r#""initialState": "invited", "migrations": [{"fromVersion": 1, "states": {"invited": "invited"}}],"#);
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.catalog(|c| {
        let spec: v1::CampaignSpec = json::from_str(&v2).unwrap();
        c.insert(compile(&spec).unwrap()).unwrap();
        c.activate("trial", 2);
    });
    // Still waiting in `invited`, entered at +0h: v2 waits 3 days instead of 7, counted
    // from the original entry.
    check(
        w.apply(Input::FollowUp(&Kind::Migrate("trial".into())), 10),
        expect![[r#"
            cancel timer trial e1 t1
            migrated trial v1 invited -> v2 invited
            timer trial e2 t1 due +72h
        "#]],
    );
    check(
        w.fire_next(),
        expect![[r#"
            @+72h
            trial: invited -> no_reply (e3)
            action POSTAL_MAIL trial/v2/e3/a0/p1 template=letter-v2 cost=0 EUR
            timer trial e3 t1 due +408h
        "#]],
    );
}

/// Sends an email at once and a letter two days later; credits revenue for ten days.
const NEWS: &str = r#"{
  "id": "news", "version": 1, "initialState": "mail", "attributionWindow": "864000s",
  "audience": {"filter": "true"},
  "states": [
    {"id": "mail", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "news"}], "transitions": [{"to": "letter", "after": "172800s"}]},
    {"id": "letter", "actions": [{"kind": "ACTION_KIND_POSTAL_MAIL", "template": "news"}], "transitions": [{"to": "done", "after": "3600000s"}]},
    {"id": "done", "terminal": true}
  ]
}"#;

/// Texts a contact who browsed; credits revenue for three days.
const PROMO: &str = r#"{
  "id": "promo", "version": 1, "initialState": "sms", "attributionWindow": "259200s",
  "entryTriggers": [{"eventType": "browse"}],
  "states": [
    {"id": "sms", "actions": [{"kind": "ACTION_KIND_SMS", "template": "deal"}], "transitions": [{"to": "end", "after": "3600000s"}]},
    {"id": "end", "terminal": true}
  ]
}"#;

#[test]
fn revenue_is_credited_to_the_touches_within_their_windows_by_each_model() {
    let mut w = world(&[NEWS, PROMO]);
    w.contact(r#"{"id": "p1"}"#);
    w.launch("news"); // EMAIL at 0h
    w.fire_next(); // POSTAL_MAIL at 48h
    w.event(60, "browse", "{}"); // SMS at 60h
    // Three touches: first touch EMAIL, last touch SMS, 30 each linearly.
    check(
        w.event(100, "purchase", r#"{"product": "A", "amount": "90"}"#),
        expect![[r#"
            attributed news of 90 52h after its touch: EMAIL last=0 first=90 linear=30 POSTAL_MAIL last=0 first=0 linear=30
            attributed promo of 90 40h after its touch: SMS last=90 first=0 linear=30
            revenue 90 credited last=90 first=90 linear=90
            arm purchase news 90 (converted)
            arm purchase promo 90 (converted)
        "#]],
    );
    // At 132h the SMS (60h + 72h) is still inside promo's window: the edge is included.
    check(
        w.event(132, "purchase", r#"{"product": "A", "amount": "10"}"#),
        expect![[r#"
            attributed news of 10 84h after its touch: EMAIL last=0 first=10 linear=3.33 POSTAL_MAIL last=0 first=0 linear=3.33
            attributed promo of 10 72h after its touch: SMS last=10 first=0 linear=3.34
            revenue 10 credited last=10 first=10 linear=10.00
            arm purchase news 10
            arm purchase promo 10
        "#]],
    );
    // One hour later it is not.
    check(
        w.event(133, "purchase", r#"{"product": "A", "amount": 6}"#),
        expect![[r#"
            attributed news of 6 85h after its touch: EMAIL last=0 first=6 linear=3 POSTAL_MAIL last=6 first=0 linear=3
            revenue 6 credited last=6 first=6 linear=6
            arm purchase news 6
        "#]],
    );
    // Past news' ten days (48h + 240h) nothing is credited and the touches are dropped.
    check(
        w.event(289, "purchase", r#"{"product": "A", "amount": 1}"#),
        expect![[r#"
            revenue 1 credited last=0 first=0 linear=0
        "#]],
    );
    assert!(w.state.touches.is_empty());

    let (news, promo) = (w.counters("news"), w.counters("promo"));
    let a = news.attribution.as_ref().unwrap();
    assert_eq!(
        (a.last_touch.as_str(), a.first_touch.as_str(), a.conversions),
        ("6", "106", 3)
    );
    let b = promo.attribution.as_ref().unwrap();
    assert_eq!(
        (b.last_touch.as_str(), b.first_touch.as_str(), b.conversions),
        ("100", "0", 2)
    );
    // Linear shares add up to the revenue exactly: 90 + 10 + 6.
    assert_eq!(
        stats::money(&a.linear) + stats::money(&b.linear),
        "106".parse().unwrap()
    );
    // Shares are whole cents; the cent a three-way split leaves goes to its last touch.
    assert_eq!((a.linear.as_str(), b.linear.as_str()), ("72.66", "33.34"));
    let email = news.kinds["EMAIL"].attribution.as_ref().unwrap();
    assert_eq!(
        (email.first_touch.as_str(), email.last_touch.as_str()),
        ("106", "0")
    );
    let mail = news.kinds["POSTAL_MAIL"].attribution.as_ref().unwrap();
    assert_eq!(mail.last_touch, "6");
    assert_eq!(news.arms[""].converted, 1);
    assert_eq!(news.arms[""].revenue, "106");
    assert_eq!(promo.arms[""].revenue, "100");
}

#[test]
fn a_revenue_event_without_an_amount_is_reported() {
    let mut w = world(&[NEWS]);
    w.contact(r#"{"id": "p1"}"#);
    w.launch("news");
    check(
        w.event(1, "opportunity.won", r#"{"amount": "lots"}"#),
        expect![[r#"
            fault : opportunity.won event `ev1` has no decimal `amount` (got `lots`): no revenue credited
        "#]],
    );
    check(
        w.event(2, "opportunity.won", r#"{"amount": 1200}"#),
        expect![[r#"
            attributed news of 1200 2h after its touch: EMAIL last=1200 first=1200 linear=1200
            revenue 1200 credited last=1200 first=1200 linear=1200
            arm purchase news 1200 (converted)
        "#]],
    );
}

const FRUGAL: &str = r#"{
  "id": "frugal", "version": 1, "initialState": "hello",
  "audience": {"filter": "true"},
  "states": [
    {"id": "hello", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "hi"}, {"kind": "ACTION_KIND_SMS", "template": "hi"}], "terminal": true}
  ],
  "budget": {"currency": "EUR", "total": "0.25", "costPerAction": {"EMAIL": "0.10"}}
}"#;

#[test]
fn the_budget_withholds_cost_bearing_actions_that_would_exceed_it() {
    let mut w = world(&[FRUGAL]);
    let mut trace = String::new();
    for id in ["p1", "p2", "p3"] {
        w.switch_to(&format!(r#"{{"id": "{id}"}}"#));
        trace.push_str(&w.launch("frugal"));
    }
    // The third email would bring the spend to 0.30 > 0.25; the free SMS still goes.
    check(
        trace,
        expect![[r#"
            enrolled frugal v1 (launch)
            frugal: * -> hello (e1)
            action EMAIL frugal/v1/e1/a0/p1 template=hi cost=0.10 EUR
            action SMS frugal/v1/e1/a1/p1 template=hi cost=0 EUR
            completed frugal in hello
            enrolled frugal v1 (launch)
            frugal: * -> hello (e1)
            action EMAIL frugal/v1/e1/a0/p2 template=hi cost=0.10 EUR
            action SMS frugal/v1/e1/a1/p2 template=hi cost=0 EUR
            completed frugal in hello
            enrolled frugal v1 (launch)
            frugal: * -> hello (e1)
            withheld frugal EMAIL frugal/v1/e1/a0/p3 cost=0.10 spent=0.2 of 0.25
            action SMS frugal/v1/e1/a1/p3 template=hi cost=0 EUR
            completed frugal in hello
        "#]],
    );
    let c = w.counters("frugal");
    assert_eq!((c.cost.as_str(), c.over_budget, c.actions), ("0.2", 1, 5));
    assert_eq!(c.kinds["EMAIL"].over_budget, 1);
    assert_eq!(c.kinds["EMAIL"].emitted, 2);
    assert_eq!(c.kinds["SMS"].emitted, 3);
    assert!(c.budget_exhausted_at.is_some());
}

#[test]
fn a_confirmed_delivery_marks_the_contact_reached_once() {
    let mut w = world(&[NEWS]);
    w.contact(r#"{"id": "p1"}"#);
    w.launch("news");
    // Without a campaign the confirmation says nothing about which campaign reached it.
    check(w.event(1, "action.delivered", "{}"), expect![""]);
    let delivered = |at: i64| {
        let e: v1::TouchpointEvent = json::from_str(&format!(
            r#"{{"id": "d{at}", "type": "action.delivered", "contactId": "p1", "campaignId": "news", "occurredAt": "2026-01-01T00:00:00Z", "attrs": {{"kind": "EMAIL"}}}}"#
        ))
        .unwrap();
        e
    };
    check(
        w.apply(Input::Event(&delivered(2)), 2),
        expect![[r#"
            confirmed news EMAIL template=news DELIVERED
            reached news
        "#]],
    );
    check(
        w.apply(Input::Event(&delivered(3)), 3),
        expect![[r#"
            confirmed news EMAIL template=news DELIVERED
        "#]],
    );
    assert!(w.journey("news").reached);
    assert_eq!(w.counters("news").reached, 1);
    // Each confirmation counts for its kind, as an executor's acknowledgement does.
    assert_eq!(w.counters("news").kinds["EMAIL"].delivered, 2);
    assert_eq!(w.counters("news").delivered, 2);
}

/// A confirmation sent as a touchpoint counts per kind what the executor's report counts:
/// `action.bounced` a bounce, `opportunity.created` a delivery; one without a kind confirms
/// the latest action the campaign sent, one naming no known kind counts in the campaign's
/// totals only with a fault saying so, and one for a campaign the contact never entered is a
/// fault, not counted.
#[test]
fn confirmations_as_touchpoints_count_per_kind() {
    let mut w = world(&[NEWS]);
    w.contact(r#"{"id": "p1"}"#);
    w.launch("news");
    let confirm = |id: &str, kind: &str, campaign: &str, attrs: &str| {
        let e: v1::TouchpointEvent = json::from_str(&format!(
            r#"{{"id": "{id}", "type": "{kind}", "contactId": "p1", "campaignId": "{campaign}", "occurredAt": "2026-01-01T00:00:00Z", "attrs": {attrs}}}"#
        ))
        .unwrap();
        e
    };
    check(
        w.apply(
            Input::Event(&confirm(
                "b1",
                "action.bounced",
                "news",
                r#"{"kind": "ACTION_KIND_EMAIL"}"#,
            )),
            2,
        ),
        expect![[r#"
            confirmed news EMAIL template=news BOUNCED
        "#]],
    );
    check(
        w.apply(
            Input::Event(&confirm(
                "o1",
                "opportunity.created",
                "news",
                r#"{"kind": "sales_handoff"}"#,
            )),
            3,
        ),
        expect![[r#"
            confirmed news SALES_HANDOFF OPPORTUNITY_CREATED
            reached news
        "#]],
    );
    check(
        w.apply(
            Input::Event(&confirm("f1", "action.failed", "news", "{}")),
            4,
        ),
        expect![[r#"
            confirmed news EMAIL template=news FAILED
        "#]],
    );
    check(
        w.apply(
            Input::Event(&confirm(
                "f2",
                "action.failed",
                "news",
                r#"{"kind": "pigeon"}"#,
            )),
            4,
        ),
        expect![[r#"
            fault news: `action.failed` event `f2` names `pigeon` in `attrs.kind`, not an action kind: counted in the campaign's totals only
            confirmed news UNSPECIFIED FAILED
        "#]],
    );
    check(
        w.apply(
            Input::Event(&confirm(
                "x1",
                "action.delivered",
                "other",
                r#"{"kind": "EMAIL"}"#,
            )),
            5,
        ),
        expect![[r#"
            fault other: `action.delivered` event `x1` for a campaign the contact never entered: not counted
        "#]],
    );
    let c = w.counters("news");
    assert_eq!(c.kinds["EMAIL"].bounced, 1);
    assert_eq!(c.kinds["SALES_HANDOFF"].delivered, 1);
    assert_eq!(
        c.kinds["EMAIL"].failed, 1,
        "the latest action sent was an email"
    );
    assert!(!c.kinds.contains_key("UNSPECIFIED"), "{:?}", c.kinds.keys());
    assert_eq!((c.delivered, c.failed), (1, 3));
}

#[test]
fn split_arms_count_conversions_and_revenue_holdout_included() {
    let mut w = world(&[SPLIT]);
    // p1 bold, p2 holdout, p3 control (see the split test above).
    for id in ["p1", "p2", "p3"] {
        w.switch_to(&format!(r#"{{"id": "{id}"}}"#));
        w.launch("ab");
    }
    w.switch_to(r#"{"id": "p2"}"#);
    check(
        w.event(10, "purchase", r#"{"amount": 50}"#),
        expect![[r#"
            revenue 50 credited last=0 first=0 linear=0
            arm purchase ab arm=holdout 50 (converted)
        "#]],
    );
    w.switch_to(r#"{"id": "p1"}"#);
    w.event(20, "purchase", r#"{"amount": 20}"#);
    w.event(21, "purchase", r#"{"amount": "5"}"#);
    let arms = &w.counters("ab").arms;
    let row = |arm: &str| {
        let a = &arms[arm];
        (a.enrolled, a.converted, a.revenue.clone())
    };
    assert_eq!(row("bold"), (1, 1, "25".to_string()));
    assert_eq!(row("holdout"), (1, 1, "50".to_string()));
    assert_eq!(row("control"), (1, 0, String::new()));
}

#[test]
fn counters_follow_the_funnel_state_by_state_and_day_by_day() {
    let mut w = world(&[TRIAL, SURVEY]);
    w.contact(BUYER);
    w.launch("trial");
    w.event(30, "trial.confirmed", "{}");
    w.event(50, "trial.rated", r#"{"rating": 5}"#);
    let c = w.counters("trial");
    let states: Vec<(&str, u64, u64)> = c
        .states
        .iter()
        .map(|(s, n)| (s.as_str(), n.entries, n.active))
        .collect();
    assert_eq!(
        states,
        [("confirmed", 1, 0), ("high", 1, 0), ("invited", 1, 0)]
    );
    let moves: Vec<(&str, u64)> = c
        .transitions
        .iter()
        .map(|(k, n)| (k.as_str(), *n))
        .collect();
    assert_eq!(
        moves,
        [
            (">invited", 1),
            ("confirmed>high", 1),
            ("invited>confirmed", 1)
        ]
    );
    let days: Vec<(&str, u64, u64)> = c
        .days
        .iter()
        .map(|(d, n)| (d.as_str(), n.enrollments, n.actions))
        .collect();
    // Launch on day one (email), confirmation at +30h (trial offer), rating at +50h (hand-off).
    assert_eq!(
        days,
        [
            ("2026-01-01", 1, 1),
            ("2026-01-02", 0, 1),
            ("2026-01-03", 0, 1)
        ]
    );
    // The events happened at T0: reactions 30h and 50h later are slower than the last bound
    // (a day); the launch's email had no event to react to.
    assert_eq!(c.latency_buckets.iter().sum::<u64>(), 2);
    assert_eq!(
        stats::latency_quantile(&c.latency_buckets, 0.5),
        Some(u64::MAX)
    );
}

/// Nurtures a contact until it asks for a demo, then hands it to alice in sales for two days.
const LEADS: &str = r#"{
  "id": "leads", "version": 1, "initialState": "nurture",
  "audience": {"filter": "true"},
  "reentry": {"mode": "REENTRY_MODE_ALWAYS"},
  "states": [
    {"id": "nurture", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "nurture"}],
     "transitions": [{"to": "handoff", "onEvent": {"type": "demo.requested"}}]},
    {"id": "handoff", "terminal": true,
     "actions": [{"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "172800s", "slaBreachState": "nurture", "params": {"owner": "alice"}}]}
  ]
}"#;

/// p1, nurtured since 0h, asked for a demo at 1h: handed to alice until 49h.
fn handed_over() -> World {
    let mut w = world(&[LEADS]);
    w.contact(r#"{"id": "p1"}"#);
    w.launch("leads");
    w.event(1, "demo.requested", "{}");
    w
}

fn stage(w: &World) -> v1::LifecycleStage {
    w.state.contact.as_ref().unwrap().stage()
}

#[test]
fn a_lead_not_accepted_in_time_returns_to_marketing_with_a_notification() {
    let mut w = world(&[LEADS]);
    w.contact(r#"{"id": "p1"}"#);
    w.launch("leads");
    assert_eq!(stage(&w), v1::LifecycleStage::Prospect);
    check(
        w.event(1, "demo.requested", "{}"),
        expect![[r#"
            leads: nurture -> handoff (e2)
            action SALES_HANDOFF leads/v1/e2/a0/p1 respond_by=+49h cause=ev1
            timer leads e2 sla0 due +49h
            lead leads leads/v1/e2/a0/p1 alice Opened(Assigned { rule: "param", round_robin: None })
            completed leads in handoff
        "#]],
    );
    assert_eq!(stage(&w), v1::LifecycleStage::Opportunity);
    check(
        w.fire_next(),
        expect![[r#"
            @+49h
            lead leads leads/v1/e2/a0/p1 alice Breached
            action NOTIFICATION leads/v1/e2/a0/p1/sla-breach template=sla-breach
            leads: handoff -> nurture (e3)
            action EMAIL leads/v1/e3/a0/p1 template=nurture
        "#]],
    );
    assert_eq!(stage(&w), v1::LifecycleStage::Prospect);
    assert_eq!(w.journey("leads").status(), v1::JourneyStatus::Active);
    // Sales waking up now is too late.
    check(
        w.event(50, "opportunity.accepted", "{}"),
        expect![[r#"
            lead leads leads/v1/e2/a0/p1 alice LateAcceptance
        "#]],
    );
    let o = &w.state.opportunities[0];
    assert_eq!(
        (o.status(), o.owner.as_str()),
        (v1::OpportunityStatus::Breached, "alice")
    );
    let leads = w.counters("leads").leads.clone().unwrap();
    assert_eq!(
        (leads.opened, leads.breached, leads.late_acceptances),
        (1, 1, 1)
    );
}

/// A journey an SLA breach reopened and that ends again is one enrollment that completed:
/// counted once, as is its goal.
#[test]
fn a_journey_reopened_by_a_breach_and_completed_again_counts_once() {
    let mut w = handed_over();
    w.fire_next();
    check(
        w.event(60, "demo.requested", "{}"),
        expect![[r#"
            leads: nurture -> handoff (e4)
            action SALES_HANDOFF leads/v1/e4/a0/p1 respond_by=+108h cause=ev2
            timer leads e4 sla0 due +108h
            lead leads leads/v1/e4/a0/p1 alice Opened(Assigned { rule: "param", round_robin: None })
            completed leads in handoff (again)
        "#]],
    );
    let c = w.counters("leads");
    assert_eq!((c.enrollments, c.completions), (1, 1));
    assert_eq!(
        c.states["handoff"].entries, 2,
        "the funnel counts every entry"
    );
}

#[test]
fn a_lead_accepted_in_time_stays_with_sales_and_its_win_is_revenue() {
    let mut w = handed_over();
    check(
        w.event(
            10,
            "opportunity.accepted",
            r#"{"opportunityId": "leads/v1/e2/a0/p1"}"#,
        ),
        expect![[r#"
            cancel timer leads e2 sla0
            lead leads leads/v1/e2/a0/p1 alice Accepted
        "#]],
    );
    assert!(w.timers.is_empty(), "the deadline is disarmed");
    // The win is revenue credited to the campaign's touches: the email and the hand-off.
    check(
        w.event(20, "opportunity.won", r#"{"amount": "5000"}"#),
        expect![[r#"
            attributed leads of 5000 19h after its touch: EMAIL last=0 first=5000 linear=2500 SALES_HANDOFF last=5000 first=0 linear=2500
            revenue 5000 credited last=5000 first=5000 linear=5000
            arm purchase leads 5000 (converted)
            lead leads leads/v1/e2/a0/p1 alice Won(5000)
        "#]],
    );
    assert_eq!(stage(&w), v1::LifecycleStage::Customer);
    let o = &w.state.opportunities[0];
    assert_eq!(
        (o.status(), o.amount.as_str()),
        (v1::OpportunityStatus::Won, "5000")
    );
    let leads = w.counters("leads").leads.clone().unwrap();
    assert_eq!(
        (leads.accepted, leads.won, leads.won_amount.as_str()),
        (1, 1, "5000")
    );
}

#[test]
fn open_leads_move_to_another_owner_without_being_lost() {
    let mut w = handed_over();
    // Only alice's leads move; one naming another former owner changes nothing.
    check(
        w.event(
            2,
            "opportunity.reassigned",
            r#"{"owner": "bob", "fromOwner": "carol"}"#,
        ),
        expect![""],
    );
    check(
        w.event(
            3,
            "opportunity.reassigned",
            r#"{"owner": "bob", "fromOwner": "alice"}"#,
        ),
        expect![[r#"
            lead leads leads/v1/e2/a0/p1 bob Reassigned { from: "alice", by: Assigned { rule: "event", round_robin: None } }
        "#]],
    );
    // Without an owner the rules choose again, the current owner left out: this campaign
    // and the policy have none, so the lead goes to the default owner.
    check(
        w.event(4, "opportunity.reassigned", "{}"),
        expect![[r#"
            lead leads leads/v1/e2/a0/p1 sales Reassigned { from: "bob", by: Assigned { rule: "default", round_robin: None } }
        "#]],
    );
    // Still open, with its deadline: the new owner must accept in time.
    let o = &w.state.opportunities[0];
    assert_eq!(o.owner, "sales");
    let history: Vec<(&str, &str)> = o
        .assignments
        .iter()
        .map(|a| (a.owner.as_str(), a.rule.as_str()))
        .collect();
    assert_eq!(
        history,
        [("alice", "param"), ("bob", "event"), ("sales", "default")]
    );
    check(
        w.event(5, "opportunity.lost", "{}"),
        expect![[r#"
            cancel timer leads e2 sla0
            lead leads leads/v1/e2/a0/p1 sales Lost
        "#]],
    );
    assert_eq!(stage(&w), v1::LifecycleStage::Prospect);
}

#[test]
fn a_profile_update_keeps_what_events_taught() {
    let mut w = world(&[NEWS]);
    w.contact(r#"{"id": "p1", "attrs": {"region": "north"}}"#);
    let e: v1::TouchpointEvent = json::from_str(
        r#"{"id": "x", "type": "purchase", "contactId": "p1", "channel": "web", "occurredAt": "2026-01-01T00:00:00Z", "attrs": {"amount": 10}}"#,
    )
    .unwrap();
    w.apply(Input::Event(&e), 1);
    w.contact(r#"{"id": "p1", "attrs": {"region": "south"}}"#);
    let c = w.state.contact.as_ref().unwrap();
    assert_eq!(
        (c.purchases.len(), c.stage(), c.source_channel.as_str()),
        (1, v1::LifecycleStage::Customer, "web")
    );
    // A profile that brings its own history and stage replaces them.
    w.contact(r#"{"id": "p1", "stage": "LIFECYCLE_STAGE_USER", "purchases": [{"product": "X", "amount": "1"}, {"product": "Y", "amount": "2"}]}"#);
    let c = w.state.contact.as_ref().unwrap();
    assert_eq!(
        (c.purchases.len(), c.stage()),
        (2, v1::LifecycleStage::User)
    );
}

/// Welcomes a contact who signs up by email, then waits two days (or a click).
const WELCOME: &str = r#"{
  "id": "welcome", "version": 1, "initialState": "hi",
  "entryTriggers": [{"eventType": "signup"}],
  "states": [
    {"id": "hi", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "welcome"}],
     "transitions": [{"to": "done", "onEvent": {"type": "clicked"}}, {"to": "done", "after": "172800s"}]},
    {"id": "done", "terminal": true}
  ]
}"#;

fn set_policy(w: &mut World, json: &str) {
    let spec: v1::Policy = json::from_str(json).unwrap();
    let compiled = policy::compile(&spec).unwrap();
    w.catalog(|c| c.set_policy(compiled));
}

#[test]
fn a_frequency_cap_across_campaigns_defers_the_action_until_the_window_allows_it() {
    let mut w = world(&[NEWS, WELCOME]);
    set_policy(
        &mut w,
        r#"{"caps": [{"channel": "EMAIL", "maxTouches": 1, "window": "86400s"}]}"#,
    );
    w.contact(r#"{"id": "p1"}"#);
    w.launch("news"); // news' email at 0h
    // Two hours later a second email, of another campaign, would be the second in 24h.
    check(
        w.event(2, "signup", "{}"),
        expect![[r#"
            enrolled welcome v1 (trigger ev1)
            welcome: * -> hi (e1)
            timer welcome e1 deferred0 due +24h
            capped welcome/v1/e1/a0/p1 by Frequency { channel: "EMAIL", max: 1, window: SpanMillis(86400000) }: deferred to +24h
            timer welcome e1 t1 due +50h
        "#]],
    );
    check(
        w.fire_next(),
        expect![[r#"
            @+24h
            capped welcome/v1/e1/a0/p1: SentLate
            action EMAIL welcome/v1/e1/a0/p1 template=welcome cause=ev1
        "#]],
    );
    assert!(w.state.deferred.is_empty());
    let capped = w.counters("welcome").capped.unwrap();
    assert_eq!((capped.deferred, capped.sent_late), (1, 1));
}

#[test]
fn a_deferred_action_is_dropped_if_the_contact_moved_on() {
    let mut w = world(&[NEWS, WELCOME]);
    set_policy(
        &mut w,
        r#"{"caps": [{"maxTouches": 1, "window": "86400s"}]}"#,
    );
    w.contact(r#"{"id": "p1"}"#);
    w.launch("news");
    w.event(2, "signup", "{}");
    w.event(3, "clicked", "{}");
    check(
        w.fire_next(),
        expect![[r#"
        @+24h
        capped welcome/v1/e1/a0/p1: Expired
    "#]],
    );
    assert_eq!(w.counters("welcome").capped.unwrap().expired, 1);
}

#[test]
fn quiet_hours_follow_the_contacts_time_zone_and_may_drop() {
    // Quiet from midnight to six, UTC unless the contact says otherwise; dropped.
    let mut w = world(&[NEWS]);
    set_policy(
        &mut w,
        r#"{"quietHours": {"startHour": 0, "endHour": 6, "mode": "CAP_MODE_DROP"}}"#,
    );
    w.switch_to(r#"{"id": "p1"}"#);
    // The launch is at midnight UTC: quiet for p1.
    check(
        w.launch("news"),
        expect![[r#"
            enrolled news v1 (launch)
            news: * -> mail (e1)
            capped news/v1/e1/a0/p1 by QuietHours: Dropped
            timer news e1 t0 due +48h
        "#]],
    );
    // It is nine in the morning in Tokyo.
    w.switch_to(r#"{"id": "p2", "attrs": {"time_zone": "Asia/Tokyo"}}"#);
    check(
        w.launch("news"),
        expect![[r#"
            enrolled news v1 (launch)
            news: * -> mail (e1)
            action EMAIL news/v1/e1/a0/p2 template=news
            timer news e1 t0 due +48h
        "#]],
    );
    assert_eq!(w.counters("news").capped.unwrap().dropped, 1);
}

#[test]
fn tier_churn_and_value_are_visible_to_conditions() {
    let vip = r#"{
      "id": "vip", "version": 1, "initialState": "gift",
      "audience": {"filter": "contact.tier == 'A' && !contact.churned && contact.value > 900.0"},
      "states": [{"id": "gift", "actions": [{"kind": "ACTION_KIND_POSTAL_MAIL", "template": "gift"}], "terminal": true}]
    }"#;
    let winback = r#"{
      "id": "winback", "version": 1, "initialState": "call",
      "audience": {"filter": "contact.churned && contact.tier != ''"},
      "states": [{"id": "call", "actions": [{"kind": "ACTION_KIND_PHONE_CALL", "template": "miss-you"}], "terminal": true}]
    }"#;
    let mut w = world(&[vip, winback]);
    set_policy(
        &mut w,
        r#"{"churnDays": 30, "tiers": {"a": "1000", "b": "100", "c": "10"}}"#,
    );
    // Bought for 1200 (cost of goods 100) five days before the launch: A, active, value 1100.
    w.switch_to(r#"{"id": "rich", "purchases": [{"amount": "1200", "cost": "100", "at": "2025-12-27T00:00:00Z"}]}"#);
    check(
        w.launch("vip"),
        expect![[r#"
        enrolled vip v1 (launch)
        vip: * -> gift (e1)
        action POSTAL_MAIL vip/v1/e1/a0/rich template=gift
        completed vip in gift
    "#]],
    );
    assert_eq!(w.launch("winback"), "");
    // Bought for 50 sixty days ago: C, churned.
    w.switch_to(r#"{"id": "gone", "purchases": [{"amount": "50", "at": "2025-11-02T00:00:00Z"}]}"#);
    assert_eq!(w.launch("vip"), "");
    assert!(w.launch("winback").contains("action PHONE_CALL"));
    // Never bought: no tier, never churned.
    w.switch_to(r#"{"id": "new"}"#);
    assert_eq!(w.launch("vip") + &w.launch("winback"), "");
}

#[test]
fn a_staff_change_moves_every_open_lead_of_the_owner() {
    let mut w = handed_over();
    let change = |from: &str, to: &str| {
        Kind::ReassignLeads(v1::LeadReassignment {
            from_owner: from.into(),
            to_owner: to.into(),
            campaign_id: String::new(),
        })
    };
    check(
        w.apply(Input::FollowUp(&change("carol", "bob")), 2),
        expect![""],
    );
    check(
        w.apply(Input::FollowUp(&change("alice", "bob")), 3),
        expect![[r#"
            lead leads leads/v1/e2/a0/p1 bob Reassigned { from: "alice", by: Assigned { rule: "command", round_robin: None } }
        "#]],
    );
    // Closed leads stay with whoever closed them.
    w.event(4, "opportunity.lost", "{}");
    check(
        w.apply(Input::FollowUp(&change("bob", "dave")), 5),
        expect![""],
    );
    assert_eq!(w.state.opportunities[0].owner, "bob");
}

/// A timer as the snapshots show it: `t2` (a transition's timeout), `deferred0`, `sla0`.
fn timer_name(id: &TimerId) -> String {
    use canvass_core::machine::TimerKind;
    let kind = match id.kind {
        TimerKind::Transition => "t",
        TimerKind::Deferred => "deferred",
        TimerKind::Sla => "sla",
    };
    format!("{kind}{}", id.index)
}

const CARE: &str = r#"{
  "id": "care", "version": 1, "initialState": "follow_up",
  "entryTriggers": [
    {"eventType": "complaint", "guard": "contact.complaints >= 2"},
    {"eventType": "survey.answered", "guard": "contact.satisfaction <= 6 && contact.surveys > 1"}],
  "states": [
    {"id": "follow_up", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "sorry"}], "terminal": true}
  ]
}"#;

#[test]
fn complaints_and_survey_scores_are_in_the_profile_conditions_see() {
    let mut w = world(&[CARE]);
    w.contact(r#"{"id": "p1"}"#);
    let answer = |w: &mut World, id: &str, score: u32, at_hours: i64| {
        let text = format!(
            r#"{{"id": "{id}", "type": "survey.answered", "contactId": "p1", "campaignId": "care",
                "occurredAt": "2026-01-01T00:00:00Z", "attrs": {{"score": {score}}}}}"#
        );
        let e: v1::TouchpointEvent = json::from_str(&text).unwrap();
        w.apply(Input::Event(&e), at_hours)
    };
    // One low score is not enough (the guard asks for a second answer), nor one complaint.
    check(answer(&mut w, "s1", 3, 1), expect![""]);
    check(w.event(2, "complaint", r#"{"product": "B"}"#), expect![""]);
    check(
        w.event(3, "complaint", r#"{"product": "B"}"#),
        expect![[r#"
            enrolled care v1 (trigger ev2)
            care: * -> follow_up (e1)
            action EMAIL care/v1/e1/a0/p1 template=sorry cause=ev2
            completed care in follow_up
        "#]],
    );
    check(
        w.event(4, "fault.reported", r#"{"product": "B"}"#),
        expect![""],
    );
    let contact = w.state.contact.clone().unwrap();
    assert_eq!(contact.surveys.len(), 1);
    assert_eq!(
        (
            contact.surveys[0].score,
            contact.surveys[0].campaign_id.as_str()
        ),
        (3, "care")
    );
    let kinds: Vec<_> = contact
        .issues
        .iter()
        .map(|i| (i.kind(), i.product.as_str()))
        .collect();
    assert_eq!(
        kinds,
        [
            (v1::IssueKind::Complaint, "B"),
            (v1::IssueKind::Complaint, "B"),
            (v1::IssueKind::Fault, "B")
        ]
    );
    let fields = canvass_core::bindings::contact_value(
        &contact,
        UnixMillis(T0 + 24 * HOUR),
        &policy::Policy::default(),
        "0",
    );
    let text = format!("{fields:?}");
    for field in [
        "satisfaction",
        "satisfaction_mean",
        "complaints",
        "faults",
        "days_since_last_complaint",
    ] {
        assert!(text.contains(field), "{field} in {text}");
    }
}

/// Hands leads over without naming an owner: the rules choose.
const ROUTED: &str = r#"{
  "id": "routed", "version": 1, "initialState": "nurture",
  "audience": {"filter": "true"},
  "states": [
    {"id": "nurture", "transitions": [{"to": "handoff", "onEvent": {"type": "demo.requested"}}]},
    {"id": "handoff", "terminal": true,
     "actions": [{"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "172800s"}]}
  ],
  "assignment": {"rules": [
    {"name": "north-turns", "when": "contact.attrs.region == 'north'", "team": "north"},
    {"name": "south-load", "when": "contact.attrs.region == 'south'", "team": "south",
     "strategy": "ASSIGNMENT_STRATEGY_LEAST_LOAD"}
  ]}
}"#;

const STAFF: &str = r#"{
  "teams": [{"name": "north", "members": ["ann", "ben", "cat"]},
            {"name": "south", "members": ["dan", "eve"]}],
  "assignment": {
    "rules": [{"name": "key-accounts", "when": "has(contact.attrs.size) && contact.attrs.size == 'enterprise'", "owner": "kim"}],
    "fallbackOwner": "desk"
  }
}"#;

/// The owner and rule of each contact's lead, handing one over per contact in turn.
fn hand_over(w: &mut World, contacts: &[(&str, &str)]) -> Vec<String> {
    let mut out = Vec::new();
    for (id, attrs) in contacts {
        w.switch_to(&format!(r#"{{"id": "{id}", "attrs": {attrs}}}"#));
        w.launch("routed");
        w.event(1, "demo.requested", "{}");
        let o = w.state.opportunities.last().expect("a lead");
        out.push(format!("{id} {} {}", o.owner, o.assignments[0].rule));
    }
    out
}

#[test]
fn assignment_rules_choose_by_territory_in_turn_by_load_and_fall_back() {
    let mut w = world(&[ROUTED]);
    set_policy(&mut w, STAFF);
    let north = r#"{"region": "north"}"#;
    let south = r#"{"region": "south"}"#;
    let owners = hand_over(
        &mut w,
        &[
            ("n1", north),
            ("n2", north),
            ("s1", south),
            ("n3", north),
            ("n4", north),
            ("s2", south),
            ("s3", south),
            ("e1", r#"{"size": "enterprise"}"#),
            ("x1", r#"{"region": "west"}"#),
        ],
    );
    // North in turn; south to the least loaded (ties: first listed); the policy's rule
    // after the campaign's; the policy's fallback last.
    assert_eq!(
        owners,
        [
            "n1 ann north-turns",
            "n2 ben north-turns",
            "s1 dan south-load",
            "n3 cat north-turns",
            "n4 ann north-turns",
            "s2 eve south-load",
            "s3 dan south-load",
            "e1 kim key-accounts",
            "x1 desk fallback",
        ]
    );
    // The sales system learns the owner and the rule from the action.
    check(
        w.switch_to(r#"{"id": "s4", "attrs": {"region": "south"}}"#) + &w.launch("routed"),
        expect![[r#"
            enrolled routed v1 (launch)
            routed: * -> nurture (e1)
        "#]],
    );
    let step = w
        .core
        .step(
            w.state.clone(),
            &Input::Event(
                &json::from_str(
                    r#"{"id": "evs4", "type": "demo.requested", "contactId": "s4", "occurredAt": "2026-01-01T00:00:00Z"}"#,
                )
                .unwrap(),
            ),
            UnixMillis(T0 + HOUR),
            &w.counters,
            &w.workload,
        );
    let action = step
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Action(a) => Some(a),
            _ => None,
        })
        .expect("the hand-off");
    assert_eq!(
        (
            action.params["owner"].as_str(),
            action.params["assigned_by"].as_str()
        ),
        ("eve", "south-load")
    );
    // Each owner's figures, per campaign.
    let leads = w.counters("routed").leads.clone().unwrap();
    let assigned: Vec<(&str, u64)> = leads
        .owners
        .iter()
        .map(|(o, l)| (o.as_str(), l.assigned))
        .collect();
    assert_eq!(
        assigned,
        [
            ("ann", 2),
            ("ben", 1),
            ("cat", 1),
            ("dan", 2),
            ("desk", 1),
            ("eve", 1),
            ("kim", 1)
        ]
    );
}

#[test]
fn a_staff_change_moves_open_leads_by_the_rules_and_balances_as_it_goes() {
    let mut w = world(&[ROUTED]);
    set_policy(&mut w, STAFF);
    let south = r#"{"region": "south"}"#;
    hand_over(&mut w, &[("s1", south), ("s2", south), ("s3", south)]);
    // dan holds s1 and s3, eve s2. dan leaves: his leads go by the same rules, dan left out.
    let leaving = Kind::ReassignLeads(v1::LeadReassignment {
        from_owner: "dan".into(),
        to_owner: String::new(),
        campaign_id: String::new(),
    });
    let mut moved = String::new();
    for id in ["s1", "s2", "s3"] {
        w.switch_to(&format!(r#"{{"id": "{id}", "attrs": {south}}}"#));
        moved += &w.apply(Input::FollowUp(&leaving), 2);
    }
    check(
        moved,
        expect![[r#"
            lead routed routed/v1/e2/a0/s1 eve Reassigned { from: "dan", by: Assigned { rule: "south-load", round_robin: None } }
            lead routed routed/v1/e2/a0/s3 eve Reassigned { from: "dan", by: Assigned { rule: "south-load", round_robin: None } }
        "#]],
    );
    assert_eq!(
        w.workload.open_leads,
        BTreeMap::from([("eve".to_string(), 3)])
    );
    // dan is gone from the team too; then eve leaves: nobody is left in the south team, so
    // the rule is skipped, said so, and the policy's fallback takes the lead.
    set_policy(&mut w, &STAFF.replace(r#"["dan", "eve"]"#, r#"["eve"]"#));
    check(
        w.apply(
            Input::FollowUp(&Kind::ReassignLeads(v1::LeadReassignment {
                from_owner: "eve".into(),
                to_owner: String::new(),
                campaign_id: String::new(),
            })),
            3,
        ),
        expect![[r#"
            fault routed: assignment.rules[1]: team `south` has nobody to take the lead; the next rule decides
            lead routed routed/v1/e2/a0/s3 desk Reassigned { from: "eve", by: Assigned { rule: "fallback", round_robin: None } }
        "#]],
    );
    assert_eq!(w.state.opportunities[0].owner, "desk");
    // Closing a lead frees its owner's load.
    w.event(4, "opportunity.lost", "{}");
    let leads = w.counters("routed").leads.clone().unwrap();
    let eve = &leads.owners["eve"];
    assert_eq!(
        (eve.assigned, eve.reassigned_in, eve.reassigned_out),
        (1, 2, 1)
    );
    assert_eq!(leads.owners["dan"].reassigned_out, 2);
    assert_eq!(leads.owners["desk"].lost, 1);
    assert_eq!(
        w.workload.open_leads,
        BTreeMap::from([("eve".to_string(), 2)])
    );
}

#[test]
fn assignment_rules_and_teams_are_checked_with_their_paths() {
    let bad = r#"{
      "teams": [{"name": "north", "members": []}, {"name": "south", "members": ["dan", "dan"]}],
      "assignment": {"rules": [
        {"name": "a", "team": "west"},
        {"name": "a", "owner": "kim", "team": "south"},
        {"name": "", "owner": "kim", "strategy": "ASSIGNMENT_STRATEGY_LEAST_LOAD"},
        {"name": "c", "when": "contact.nope(", "owner": "kim"}
      ]}
    }"#;
    let spec: v1::Policy = json::from_str(bad).unwrap();
    let issues: Vec<String> = policy::compile(&spec)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    check(
        issues.join("\n"),
        expect![[r#"
            teams[0].members: team `north` has nobody in it
            teams[1].members[1]: `dan` is in team `south` twice
            assignment.rules[1].name: `a` names another rule too
            assignment.rules[1]: give an `owner` or a `team`, not both
            assignment.rules[2].name: required
            assignment.rules[2].strategy: only a `team` rule chooses by a strategy
            assignment.rules[3].when: invalid CEL: line 1 column 14: Syntax error: mismatched input '<EOF>'
            assignment.rules[0].team: team `west` is not in the policy (teams)"#]],
    );
}
