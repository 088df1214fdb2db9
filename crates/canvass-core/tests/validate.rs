//! Spec validation: each kind of problem is reported with its path and reason, all at once.

#![allow(clippy::unwrap_used)]

use canvass_core::compile;
use canvass_proto::{json, v1};
use expect_test::{Expect, expect};

/// Compiles a spec written in canonical JSON and lists its problems, one `path: reason` a line.
fn problems(spec: &str) -> String {
    let spec: v1::CampaignSpec = json::from_str(spec).expect("test spec is valid JSON");
    match compile(&spec) {
        Ok(_) => "ok".into(),
        Err(e) => e.issues.iter().map(|i| format!("{i}\n")).collect(),
    }
}

fn check(spec: &str, expected: Expect) {
    expected.assert_eq(&problems(spec));
}

/// A minimal valid spec; tests splice their problem into it.
const HEAD: &str = r#""id": "c1", "version": 1, "initialState": "a""#;

#[test]
fn a_valid_spec_compiles() {
    check(
        &format!(
            r#"{{ {HEAD}, "states": [
                {{"id": "a", "transitions": [{{"to": "b", "onEvent": {{"type": "x"}}}}]}},
                {{"id": "b", "terminal": true}}]}}"#
        ),
        expect!["ok"],
    );
}

#[test]
fn unknown_state_references_are_named() {
    check(
        &format!(
            r#"{{ {HEAD}, "states": [
                {{"id": "a", "transitions": [{{"to": "b", "onEvent": {{"type": "x"}}}}, {{"to": "nowhere", "after": "60s"}}]}},
                {{"id": "b", "terminal": true}}]}}"#
        ),
        expect![[r#"
            states.a.transitions[1].to: unknown state `nowhere`
        "#]],
    );
    check(
        r#"{"id": "c1", "version": 1, "initialState": "start", "states": [{"id": "a", "terminal": true}]}"#,
        expect![[r#"
            initialState: unknown state `start`
        "#]],
    );
}

#[test]
fn unreachable_states_are_reported() {
    check(
        &format!(
            r#"{{ {HEAD}, "states": [
                {{"id": "a", "transitions": [{{"to": "b", "onEvent": {{"type": "x"}}}}]}},
                {{"id": "b", "terminal": true}},
                {{"id": "orphan", "terminal": true}}]}}"#
        ),
        expect![[r#"
            states.orphan: unreachable from the initial state
        "#]],
    );
}

#[test]
fn a_non_terminal_state_needs_a_way_out_and_a_terminal_one_has_none() {
    check(
        &format!(
            r#"{{ {HEAD}, "states": [
                {{"id": "a", "transitions": [{{"to": "b", "onEvent": {{"type": "x"}}}}, {{"to": "c", "after": "1s"}}]}},
                {{"id": "b"}},
                {{"id": "c", "terminal": true, "transitions": [{{"to": "a", "immediately": {{}}}}]}}]}}"#
        ),
        expect![[r#"
            states.b: non-terminal state has no way out: add a transition or mark it terminal
            states.c.transitions: a terminal state has no transitions
        "#]],
    );
}

#[test]
fn invalid_cel_is_caught_at_validation_time() {
    check(
        &format!(
            r#"{{ {HEAD}, "audience": {{"filter": "contact.purchases.exists(p, p.product == "}},
              "entryTriggers": [{{"eventType": "signup", "guard": "state.id == 'a'"}}],
              "states": [
                {{"id": "a", "transitions": [
                    {{"to": "b", "onEvent": {{"type": "x", "guard": "evnt.attrs.rating > 3"}}}},
                    {{"to": "b", "immediately": {{"guard": "event.type == 'x'"}}}}]}},
                {{"id": "b", "terminal": true}}]}}"#
        ),
        expect![[r#"
            audience.filter: invalid CEL: line 1 column 42: Syntax error: mismatched input '<EOF>'
            entryTriggers[0].guard: `state` is not available here (available: contact, event, campaign)
            states.a.transitions[0].onEvent.guard: unknown variable `evnt` (available: contact, event, state, campaign)
            states.a.transitions[1].immediately.guard: `event` is not available here (available: contact, state, campaign)
        "#]],
    );
}

#[test]
fn durations_must_be_positive() {
    check(
        &format!(
            r#"{{ {HEAD}, "reentry": {{"mode": "REENTRY_MODE_AFTER_COOLDOWN", "cooldown": "-5s"}}, "states": [
                {{"id": "a", "actions": [{{"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "0s"}}],
                  "transitions": [{{"to": "b", "after": "0s"}}, {{"to": "b", "after": "-60s"}}]}},
                {{"id": "b", "terminal": true}}]}}"#
        ),
        expect![[r#"
            reentry.cooldown: must be positive, got -5s
            states.a.actions[0].sla: must be positive, got 0s
            states.a.transitions[0].after: must be positive, got 0s
            states.a.transitions[1].after: must be positive, got -60s
        "#]],
    );
}

#[test]
fn duplicate_ids_are_reported_where_they_repeat() {
    check(
        &format!(
            r#"{{ {HEAD}, "split": {{"variants": [{{"id": "v", "weight": 1}}, {{"id": "v", "weight": 1}}]}}, "states": [
                {{"id": "a", "transitions": [{{"to": "b", "onEvent": {{"type": "x"}}}}]}},
                {{"id": "b", "terminal": true}},
                {{"id": "a", "terminal": true}}]}}"#
        ),
        expect![[r#"
            states[2].id: duplicate state id `a` (first at states[0])
            split.variants[1].id: duplicate variant id `v`
            states[2]: unreachable from the initial state
        "#]],
    );
}

#[test]
fn budgets_must_not_be_negative_and_must_name_known_kinds() {
    check(
        &format!(
            r#"{{ {HEAD}, "budget": {{"currency": "eur", "total": "-100",
                  "costPerAction": {{"EMAIL": "-0.01", "FAX": "1", "POSTAL_MAIL": "one euro"}}}},
              "states": [{{"id": "a", "terminal": true}}]}}"#
        ),
        expect![[r#"
            budget.currency: `eur` is not an ISO 4217 code such as EUR
            budget.total: must not be negative, got -100
            budget.costPerAction.EMAIL: must not be negative, got -0.01
            budget.costPerAction.FAX: unknown action kind `FAX` (e.g. EMAIL, POSTAL_MAIL)
            budget.costPerAction.POSTAL_MAIL: `one euro` is not a decimal amount: Invalid decimal: unknown character
        "#]],
    );
}

#[test]
fn actions_need_their_required_parameters() {
    check(
        &format!(
            r#"{{ {HEAD}, "states": [
                {{"id": "a", "actions": [
                    {{"kind": "ACTION_KIND_EMAIL"}},
                    {{"kind": "ACTION_KIND_POSTAL_MAIL", "template": " "}},
                    {{"kind": "ACTION_KIND_TRIAL_OFFER", "template": "kit"}},
                    {{"kind": "ACTION_KIND_SALES_HANDOFF"}},
                    {{"kind": "ACTION_KIND_START_CAMPAIGN"}},
                    {{"kind": "ACTION_KIND_START_CAMPAIGN", "targetCampaign": "c1"}},
                    {{"kind": "ACTION_KIND_WEBHOOK", "params": {{"url": ""}}}},
                    {{"kind": "ACTION_KIND_EMAIL", "template": "t", "sla": "60s", "targetCampaign": "other"}},
                    {{}}],
                  "terminal": true}}]}}"#
        ),
        expect![[r#"
            states.a.actions[0].template: required for EMAIL (or a `material` of the catalog)
            states.a.actions[1].template: required for POSTAL_MAIL (or a `material` of the catalog)
            states.a.actions[2].params.product: required for TRIAL_OFFER
            states.a.actions[3].sla: required for SALES_HANDOFF
            states.a.actions[4].targetCampaign: required for START_CAMPAIGN
            states.a.actions[5].targetCampaign: a campaign cannot start itself
            states.a.actions[6].params.url: required for WEBHOOK
            states.a.actions[7].sla: only applies to SALES_HANDOFF
            states.a.actions[7].targetCampaign: only applies to START_CAMPAIGN
            states.a.actions[8].kind: required
        "#]],
    );
}

#[test]
fn ids_versions_and_splits_are_checked() {
    check(
        r#"{"id": "Bad Id", "initialState": "a", "split": {"holdoutBasisPoints": 12000,
              "variants": [{"id": "x", "weight": 0, "initialState": "zz"}]},
            "states": [{"id": "a/b", "terminal": true}, {"id": "", "terminal": true}]}"#,
        expect![[r#"
            id: `Bad Id` is not a valid id: use lowercase letters, digits, '-' and '_', starting with a letter or digit
            version: must be at least 1
            states[0].id: `a/b` is not a valid id: use lowercase letters, digits, '-' and '_', starting with a letter or digit
            states[1].id: required
            initialState: unknown state `a`
            split.holdoutBasisPoints: at most 10000 (100%), got 12000
            split.variants[0].weight: must be positive
            split.variants[0].initialState: unknown state `zz`
        "#]],
    );
}

#[test]
fn transitions_need_a_trigger_and_event_triggers_a_type() {
    check(
        &format!(
            r#"{{ {HEAD}, "entryTriggers": [{{"guard": "true"}}], "audience": {{"filter": " "}}, "states": [
                {{"id": "a", "transitions": [{{"to": "b"}}, {{"to": "b", "onEvent": {{}}}}, {{"onEvent": {{"type": "x"}}}}]}},
                {{"id": "b", "terminal": true}}]}}"#
        ),
        expect![[r#"
            audience.filter: empty: write `true` to select every contact
            entryTriggers[0].eventType: required
            states.a.transitions[0]: needs one of `onEvent`, `after` or `immediately`
            states.a.transitions[1].onEvent.type: required
            states.a.transitions[2].to: required
        "#]],
    );
}

#[test]
fn unguarded_immediate_cycles_are_rejected() {
    check(
        &format!(
            r#"{{ {HEAD}, "states": [
                {{"id": "a", "transitions": [{{"to": "b", "immediately": {{}}}}]}},
                {{"id": "b", "transitions": [{{"to": "a", "immediately": {{}}}}]}}]}}"#
        ),
        expect![[r#"
            states.a: unguarded immediate transitions form a cycle through this state
            states.b: unguarded immediate transitions form a cycle through this state
        "#]],
    );
}

#[test]
fn every_problem_is_reported_at_once() {
    let report = problems(
        r#"{"id": "c1", "version": 0, "initialState": "a", "budget": {"currency": "EUR", "total": "-1"},
            "states": [{"id": "a", "transitions": [{"to": "ghost", "after": "0s"}]}, {"id": "lost", "terminal": true}]}"#,
    );
    expect![[r#"
        version: must be at least 1
        states.a.transitions[0].to: unknown state `ghost`
        states.a.transitions[0].after: must be positive, got 0s
        budget.total: must not be negative, got -1
        states.lost: unreachable from the initial state
    "#]]
    .assert_eq(&report);
}

#[test]
fn the_reference_campaigns_are_valid() {
    for file in ["campaign.json", "survey.json"] {
        let path = format!(
            "{}/../../examples/reference/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(problems(&text), "ok", "{file}");
    }
}

#[test]
fn migrations_must_come_from_earlier_versions_into_known_states() {
    check(
        r#"{"id": "c1", "version": 2, "initialState": "a",
            "migrations": [
              {"fromVersion": 1, "states": {"old": "a", "older": "zz"}},
              {"fromVersion": 1, "states": {}},
              {"fromVersion": 2, "states": {}}],
            "states": [{"id": "a", "terminal": true}]}"#,
        expect![[r#"
            migrations[0].states.older: unknown state `zz`
            migrations[1].fromVersion: version 1 is mapped twice
            migrations[2].fromVersion: must be an earlier version (1 to 1)
        "#]],
    );
}

/// A spec accepted before durations were bounded still loads from the log; a new one is
/// refused.
#[test]
fn a_stored_spec_loads_under_the_rules_it_was_accepted_by() {
    let text = format!(
        r#"{{ {HEAD}, "states": [
            {{"id": "a", "transitions": [{{"to": "b", "after": "9223372036854775807s"}}]}},
            {{"id": "b", "terminal": true}}
        ]}}"#
    );
    check(
        &text,
        expect![[r#"
            states.a.transitions[0].after: must be at most 36525 days (100 years), got 9223372036854775807s
        "#]],
    );
    let spec: v1::CampaignSpec = json::from_str(&text).unwrap();
    assert!(canvass_core::validate::compile_stored(&spec).is_ok());
}
