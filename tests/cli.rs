//! End-to-end tests of the `canvass` command line: the real binary, run as a user would.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};

use canvass_tests::OutputWithin;
use canvass_tests::{canvass, example, simulate_reference as reference, stderr, stdout};
use serde_json::Value;

fn path(name: &str) -> String {
    example(name).display().to_string()
}

fn json_lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn the_reference_simulation_matches_the_outcome_worked_out_independently() {
    let out = reference(&["--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let summary = &lines.last().unwrap()["summary"];
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(example("expected.json")).unwrap()).unwrap();

    assert_eq!(summary["inputs"], expected["inputs"]);
    assert_eq!(summary["clock"], expected["clock"]);
    for key in ["conditionFailures", "faults"] {
        assert_eq!(
            summary["diagnostics"][key], expected["diagnostics"][key],
            "{key}"
        );
    }
    let campaigns = summary["campaigns"].as_array().unwrap();
    let wanted = expected["campaigns"].as_array().unwrap();
    assert_eq!(campaigns.len(), wanted.len());
    for (got, want) in campaigns.iter().zip(wanted) {
        for (field, value) in want.as_object().unwrap() {
            assert_eq!(&got[field], value, "campaign {} field {field}", want["id"]);
        }
    }
    // Every action line precedes the summary and agrees with its counts.
    let actions: Vec<&Value> = lines[..lines.len() - 1]
        .iter()
        .map(|l| &l["action"])
        .collect();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for a in &actions {
        *by_kind
            .entry(
                a["kind"]
                    .as_str()
                    .unwrap()
                    .trim_start_matches("ACTION_KIND_")
                    .to_string(),
            )
            .or_default() += 1;
    }
    let summary_kinds: BTreeMap<String, u64> =
        serde_json::from_value(summary["actionsByKind"].clone()).unwrap();
    assert_eq!(by_kind, summary_kinds);
}

#[test]
fn actions_come_out_in_time_order_with_unique_stable_keys() {
    let out = reference(&["--json"]);
    let lines = json_lines(&stdout(&out));
    let actions: Vec<&Value> = lines.iter().filter_map(|l| l.get("action")).collect();
    let times: Vec<&str> = actions
        .iter()
        .map(|a| a["emittedAt"].as_str().unwrap())
        .collect();
    // RFC 3339 in UTC with a fixed shape sorts as text.
    assert!(
        times.windows(2).all(|w| w[0] <= w[1]),
        "actions out of time order"
    );
    let keys: HashSet<&str> = actions
        .iter()
        .map(|a| a["idempotencyKey"].as_str().unwrap())
        .collect();
    assert_eq!(keys.len(), actions.len(), "an idempotency key repeats");
}

#[test]
fn a_confirmation_at_the_deadline_arrives_after_the_timeout_has_fired() {
    let out = reference(&["--json"]);
    let journey: Vec<(String, String)> = json_lines(&stdout(&out))
        .iter()
        .filter_map(|l| l.get("action"))
        .filter(|a| a["contactId"] == "c-0301")
        .map(|a| {
            (
                a["kind"].as_str().unwrap().to_string(),
                a["emittedAt"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let kinds: Vec<&str> = journey.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(
        kinds,
        [
            "ACTION_KIND_EMAIL",
            "ACTION_KIND_POSTAL_MAIL",
            "ACTION_KIND_TRIAL_OFFER",
            "ACTION_KIND_SALES_HANDOFF",
            "ACTION_KIND_NOTIFICATION"
        ]
    );
    assert_eq!(journey[0].1, "2026-03-02T09:00:00Z");
    assert_eq!(journey[1].1, "2026-03-09T09:00:00Z");
    assert_eq!(journey[2].1, "2026-03-09T09:00:00Z");
    // Sales never accepts this lead: its two-day SLA runs out and the owner is notified.
    assert_eq!(journey[3].1, "2026-03-19T16:00:00Z");
    assert_eq!(journey[4].1, "2026-03-21T16:00:00Z");
}

#[test]
fn every_run_prints_exactly_the_same_thing() {
    let a = reference(&[]);
    let b = reference(&[]);
    assert!(a.status.success());
    assert_eq!(stdout(&a), stdout(&b));
    assert_eq!(stderr(&a), stderr(&b));
}

#[test]
fn the_human_output_lists_actions_then_a_summary_per_campaign() {
    let out = reference(&[]);
    let text = stdout(&out);
    assert!(
        text.starts_with("2026-03-02T09:00:00Z  EMAIL"),
        "{}",
        &text[..200.min(text.len())]
    );
    assert!(text.contains("campaign b-trial-invite: 172 contacts (0 active, 172 completed, 0 holdout), 56 reached a goal"));
    assert!(
        text.contains(
            "  response groups: confirmed 22 | no_reply 67 | rated_high 56 | rated_low 27"
        )
    );
    assert!(text.contains("  cost:            3094.84 EUR of 5000.00 budget"));
    assert!(text.contains("campaign b-improvement-survey: 27 contacts"));
}

#[test]
fn bad_event_lines_are_reported_with_file_line_and_field_and_skipped() {
    let out = reference(&[]);
    assert!(out.status.success());
    let err = stderr(&out);
    let events = path("events.jsonl");
    assert!(
        err.contains(&format!("error: {events}:11: field `contactId`: required")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "error: {events}:21: field `occurredAt`: `yesterday` is not an RFC 3339 time"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("error: {events}:31: invalid JSON")),
        "{err}"
    );
    assert!(
        err.contains(
            "states.confirmed.transitions[0].onEvent.guard: No such key: rating (treated as false)"
        ),
        "{err}"
    );
}

#[test]
fn strict_mode_stops_at_bad_lines() {
    let out = reference(&["--strict"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stdout(&out).is_empty(),
        "nothing is simulated in strict mode with bad input"
    );
    assert!(stderr(&out).contains("stopped: 3 malformed line(s) and --strict"));
}

#[test]
fn until_stops_the_virtual_clock() {
    let out = reference(&["--json", "--until", "2026-03-05T00:00:00Z"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let summary = &lines.last().unwrap()["summary"];
    assert_eq!(summary["clock"]["end"], "2026-03-05T00:00:00Z");
    assert_eq!(summary["inputs"]["timersFired"], 0);
    assert!(summary["inputs"]["pendingTimers"].as_u64().unwrap() > 100);
    assert!(stderr(&out).contains("after --until were not applied"));
    let invite = &summary["campaigns"][1];
    assert_eq!(invite["id"], "b-trial-invite");
    assert_eq!(invite["active"], 172);
}

#[test]
fn validate_accepts_good_specs_and_warns_about_missing_sub_campaigns() {
    let out = canvass(&["validate", &path("campaign.json"), &path("survey.json")]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("ok:"));
    let out = canvass(&["validate", &path("campaign.json")]);
    assert!(out.status.success());
    assert!(stderr(&out).contains("warning: b-trial-invite v1: states.rated_low.actions[0].targetCampaign: campaign `b-improvement-survey` is not loaded"));
    // A simulation cannot run without it.
    let out = canvass(&[
        "simulate",
        "--spec",
        &path("campaign.json"),
        "--contacts",
        &path("contacts.jsonl"),
        "--events",
        &path("events.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("is not loaded (pass its spec too)"));
}

#[test]
fn validate_lists_every_problem_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let text = std::fs::read_to_string(example("campaign.json"))
        .unwrap()
        .replace(r#""to": "lapsed""#, r#""to": "lapsd""#)
        .replace(r#""after": "604800s""#, r#""after": "0s""#)
        .replace(r#""total": "5000.00""#, r#""total": "-5000.00""#)
        .replace("event.attrs.rating >= 4", "event.attrs.rating >=");
    std::fs::write(&bad, text).unwrap();
    let out = canvass(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let file = bad.display().to_string();
    for line in [
        format!("error: {file}: states.invited.transitions[1].after: must be positive, got 0s"),
        format!("error: {file}: states.no_reply.transitions[1].to: unknown state `lapsd`"),
        format!(
            "error: {file}: states.confirmed.transitions[0].onEvent.guard: invalid CEL: line 1 column 22: Syntax error"
        ),
        format!("error: {file}: budget.total: must not be negative, got -5000.00"),
        format!("error: {file}: states.lapsed: unreachable from the initial state"),
        format!("5 problem(s) in {file}"),
    ] {
        assert!(err.contains(&line), "missing `{line}` in:\n{err}");
    }
}

#[test]
fn a_spec_that_is_not_valid_json_names_the_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("typo.json");
    std::fs::write(
        &bad,
        "{\n  \"id\": \"x\",\n  \"version\": 1,\n  \"goal\": \"CAMPAIGN_GOAL_WORLD_PEACE\"\n}\n",
    )
    .unwrap();
    let out = canvass(&["validate", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!(
            "{}:4: field `goal`: unknown variant `CAMPAIGN_GOAL_WORLD_PEACE`",
            bad.display()
        )),
        "{err}"
    );
}

#[test]
fn binary_protobuf_specs_are_accepted() {
    use prost::Message;
    let spec: canvass_proto::v1::CampaignSpec =
        canvass_proto::json::from_str(&std::fs::read_to_string(example("survey.json")).unwrap())
            .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pb = dir.path().join("survey.pb");
    std::fs::write(&pb, spec.encode_to_vec()).unwrap();
    let out = canvass(&["validate", pb.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("(b-improvement-survey v1)"));
}

#[test]
fn graph_draws_the_state_machine() {
    let out = canvass(&["graph", &path("campaign.json")]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("stateDiagram-v2"));
    assert!(text.contains("    [*] --> invited\n"));
    assert!(text.contains("    invited --> no_reply: after 7d\n"));
    assert!(text.contains("    confirmed --> rated_high: trial.rated [event.attrs.rating >= 4]\n"));
    assert!(text.contains("    rated_high --> [*]\n"));
    let out = canvass(&["graph", "--format", "dot", &path("campaign.json")]);
    let text = stdout(&out);
    assert!(text.starts_with("digraph \"b-trial-invite\" {"));
    assert!(text.contains("\"invited\" -> \"no_reply\" [label=\"after 7d\"];"));
}

#[test]
fn a_missing_input_file_is_a_clear_error() {
    let out = canvass(&[
        "simulate",
        "--spec",
        &path("survey.json"),
        "--contacts",
        "no/such/contacts.jsonl",
        "--events",
        &path("events.jsonl"),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("cannot read no/such/contacts.jsonl"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn the_budget_withholds_what_would_exceed_it() {
    let dir = tempfile::tempdir().unwrap();
    let tight = dir.path().join("tight.json");
    let text = std::fs::read_to_string(example("campaign.json"))
        .unwrap()
        .replace(r#""total": "5000.00""#, r#""total": "3000.00""#);
    std::fs::write(&tight, text).unwrap();
    let args = |json: bool| {
        let mut a = vec![
            "simulate".to_string(),
            "--spec".into(),
            tight.display().to_string(),
            "--spec".into(),
            path("survey.json"),
            "--contacts".into(),
            path("contacts.jsonl"),
            "--events".into(),
            path("events.jsonl"),
            "--start".into(),
            "2026-03-02T09:00:00Z".into(),
        ];
        if json {
            a.push("--json".into());
        }
        a
    };
    let out = canvass(&args(false).iter().map(String::as_str).collect::<Vec<_>>());
    // Unlimited, the run costs 3094.84 (see the reference); at 3000.00 the last four sales
    // hand-offs (25.00 each) would overrun it and are withheld: 3094.84 - 100 = 2994.84.
    assert!(
        stdout(&out).contains(
            "  cost:            2994.84 EUR of 3000.00 budget: EXHAUSTED, 4 cost-bearing actions withheld"
        ),
        "{}",
        stdout(&out)
    );
    let out = canvass(&args(true).iter().map(String::as_str).collect::<Vec<_>>());
    let summary = json_lines(&stdout(&out)).pop().unwrap();
    assert_eq!(
        summary["summary"]["campaigns"][1]["budgetRemaining"],
        "5.16"
    );
    assert_eq!(summary["summary"]["campaigns"][1]["withheld"], 4);
}

#[test]
fn events_before_the_start_are_history_applied_before_the_launch() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"id":"h1","type":"purchase","contactId":"c-0303","occurredAt":"2026-02-20T10:00:00Z","attrs":{"product":"A","amount":150}}"#,
            "\n",
            r#"{"id":"h2","type":"trial.confirmed","contactId":"c-0303","occurredAt":"2026-03-03T10:00:00Z"}"#,
            "\n",
        ),
    )
    .unwrap();
    let out = canvass(&[
        "simulate",
        "--spec",
        &path("campaign.json"),
        "--spec",
        &path("survey.json"),
        "--contacts",
        &path("contacts.jsonl"),
        "--events",
        events.to_str().unwrap(),
        "--start",
        "2026-03-02T09:00:00Z",
        "--until",
        "2026-03-04T00:00:00Z",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines = json_lines(&stdout(&out));
    let summary = &lines.last().unwrap()["summary"];
    // The 172 buyers of A in the contacts file, plus c-0303 who bought A before the launch.
    assert_eq!(summary["campaigns"][1]["contacts"], 173);
    assert_eq!(summary["campaigns"][1]["states"]["confirmed"], 1);
    assert_eq!(summary["clock"]["start"], "2026-03-02T09:00:00Z");
    let first = &lines[0]["action"];
    assert_eq!(
        first["emittedAt"], "2026-03-02T09:00:00Z",
        "nothing is sent before the launch"
    );
}

#[test]
fn a_frequency_cap_in_the_simulation_holds_back_what_exceeds_it() {
    let dir = tempfile::tempdir().unwrap();
    // One customer-facing action per contact in ten years, the rest dropped: every enrolled
    // contact gets its invitation email (172) and nothing customer-facing after it (97
    // letters, 105 trial offers, 48 survey emails dropped). Hand-offs, sub-campaign starts and
    // breach notifications are not customer-facing. Cost: 172 x 0.02 + 56 x 25.00 = 1403.44.
    let policy = dir.path().join("policy.json");
    std::fs::write(
        &policy,
        r#"{"caps": [{"maxTouches": 1, "window": "315360000s", "mode": "CAP_MODE_DROP"}]}"#,
    )
    .unwrap();
    let out = reference(&["--policy", policy.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(
        text.contains("  actions:         EMAIL 172 | NOTIFICATION 14 | SALES_HANDOFF 56 | START_CAMPAIGN 27\n  cost:            1403.44 EUR of 5000.00 budget"),
        "{text}"
    );
    // The survey still runs: it just sends nothing.
    assert!(
        text.contains("campaign b-improvement-survey: 27 contacts"),
        "{text}"
    );

    std::fs::write(
        &policy,
        r#"{"caps": [{"channel": "FAX", "maxTouches": 0}]}"#,
    )
    .unwrap();
    let out = reference(&["--policy", policy.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("policy.json: caps[0].channel: `FAX` is not a customer-facing action kind"),
        "{err}"
    );
    assert!(
        err.contains("policy.json: caps[0].maxTouches: must be at least 1"),
        "{err}"
    );
}

#[test]
fn the_simulation_reports_how_the_campaign_performed() {
    let out = reference(&["--report"]);
    let text = stdout(&out);
    // The generator has sales accept three hand-offs in four (42 of 56) and let the SLA of
    // every fourth run out (14).
    assert!(
        text.contains("Leads: 56 handed to sales, 42 accepted within the SLA (75.0%), 14 breached"),
        "{text}"
    );
    // 172 invited, 105 confirmed (75 at once, 30 after the letter), 56 rated high.
    assert!(
        text.contains("│ (enrolled)   invited              172   100.0% │"),
        "{text}"
    );
    assert!(text.contains("Cost 3094.84 EUR (direct 3094.84, indirect 0.00). Budget 5000.00, remaining 1905.16, 0 actions withheld."), "{text}");
    // Nothing confirms delivery in a simulation: nobody is reached.
    assert!(text.contains("Density 0.0% (0 of 172 eligible reached, 172 defects), 1000000 DPMO, sigma none (nobody reached)."), "{text}");
    let out = reference(&["--report", "--json"]);
    let report = json_lines(&stdout(&out)).pop().unwrap();
    assert_eq!(report["report"]["campaigns"][1]["leads"]["breached"], 14);
}

/// A mistyped data directory is an error for every command that reads one, and nothing is
/// made of it: not of a missing path, not in an empty directory.
#[test]
fn reading_a_directory_that_is_not_a_data_directory_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("mistyped");
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    for command in [&["inspect"][..], &["report"], &["replay"]] {
        for data in [&missing, &empty] {
            let mut args: Vec<&str> = command.to_vec();
            args.extend(["--data", data.to_str().unwrap()]);
            let out = canvass(&args);
            assert!(!out.status.success(), "{args:?}");
            let err = stderr(&out);
            assert!(
                err.contains("no data directory at")
                    || err.contains("not a canvass data directory"),
                "{args:?}: {err}"
            );
        }
    }
    assert!(!missing.exists(), "a missing path stays missing");
    assert_eq!(
        std::fs::read_dir(&empty).unwrap().count(),
        0,
        "nothing written into it"
    );
}

/// `canvass ... | head` is normal use: a reader that goes away ends the command quietly
/// (status 0, no panic), whichever command was printing.
#[test]
fn a_closed_standard_output_ends_a_command_quietly() {
    let mut child = std::process::Command::new(canvass_tests::canvass_bin())
        .args(canvass_tests::simulate_reference_args())
        .arg("--json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader leaves before anything was written: every write fails.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    assert_eq!(out.status.code(), Some(0), "{err}");
}

/// Exit statuses tell what to do: 2 for input to fix, 3 for a server to wait for (the same
/// command may succeed later), 4 for a disk (`tests/crash.rs`).
#[test]
fn a_server_that_cannot_be_reached_exits_with_status_3_and_bad_input_with_2() {
    // Nothing listens on port 1 of the loopback.
    let out = std::process::Command::new(canvass_tests::canvass_bin())
        .args(["campaign", "--server", "http://127.0.0.1:1", "list"])
        .env("CANVASS_TOKEN", "any")
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot reach"), "{}", stderr(&out));
    let out = canvass(&["validate", "no/such/spec.json"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
}
