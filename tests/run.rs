//! `canvass run` on the wall clock: a timeout fires in real time while the engine tails its
//! input, and the engine picks up lines appended to the input after it started; on the event
//! clock, what happens to the timers still armed at the end of the input.

#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    process::Command,
    time::{Duration, Instant},
};

use canvass_tests::OutputWithin;
use canvass_tests::canvass_bin;

const SPEC: &str = r#"{"id": "nudge", "version": 1, "initialState": "welcome",
  "entryTriggers": [{"eventType": "signup"}],
  "states": [
    {"id": "welcome", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "welcome"}],
     "transitions": [{"to": "reminded", "after": "1s"}]},
    {"id": "reminded", "actions": [{"kind": "ACTION_KIND_SMS", "template": "reminder"}], "terminal": true}
  ]}"#;

/// Waits (at most `limit`) until the actions file holds `n` lines.
fn wait_for_lines(path: &std::path::Path, n: usize, limit: Duration) -> Vec<String> {
    let started = Instant::now();
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect();
        if lines.len() >= n || started.elapsed() > limit {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_timeout_fires_on_the_wall_clock_while_the_engine_tails_its_input() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let actions = dir.path().join("actions.jsonl");
    let spec: serde_json::Value = serde_json::from_str(SPEC).unwrap();
    let version = serde_json::json!({"campaignId": "nudge", "version": 1});
    let setup = [
        serde_json::json!({"command": {"actor": "marketer", "putSpec": spec}}),
        serde_json::json!({"command": {"actor": "marketer", "submit": version}}),
        serde_json::json!({"command": {"actor": "manager", "approve": version}}),
        serde_json::json!({"command": {"actor": "ops", "launch": "nudge"}}),
    ];
    std::fs::write(
        &input,
        setup.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    let args: Vec<String> = [
        "run",
        "--data",
        dir.path().join("data").to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--actions",
        actions.to_str().unwrap(),
        "--follow",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let running = canvass_tests::start_ready(&args, false);
    // The signup arrives once the engine has read the file to its end and is tailing it.
    assert!(
        running.wait_for_event("following the input", Duration::from_secs(60)),
        "the engine never reached the end of its input"
    );
    let mut child = running.child;
    let now = now_rfc3339();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&input)
        .unwrap();
    writeln!(
        f,
        r#"{{"event": {{"id": "s1", "type": "signup", "contactId": "p1", "occurredAt": "{now}"}}}}"#
    )
    .unwrap();
    drop(f);

    // The welcome email, then (one real second later) the reminder.
    let lines = wait_for_lines(&actions, 2, Duration::from_secs(30));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        lines.len(),
        2,
        "expected the email and the reminder, got {lines:?}"
    );
    let kinds: Vec<String> = lines
        .iter()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["kind"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(kinds, ["ACTION_KIND_EMAIL", "ACTION_KIND_SMS"]);
    let at = |l: &str| {
        serde_json::from_str::<serde_json::Value>(l).unwrap()["emittedAt"]
            .as_str()
            .unwrap()
            .to_string()
    };
    assert!(
        at(&lines[1]) > at(&lines[0]),
        "the reminder comes after the email"
    );
}

/// The current time in RFC 3339.
fn now_rfc3339() -> String {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    canvass_proto::wkt::Timestamp {
        seconds: i64::try_from(since.as_secs()).unwrap(),
        nanos: 0,
    }
    .to_string()
}

/// Two weeks of timeouts after one launch: what the event clock does once the input ends.
const TIMEOUTS: &str = r#"{"id": "follow-up", "version": 1, "initialState": "invited",
  "audience": {"filter": "true"},
  "states": [
    {"id": "invited", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "invite"}],
     "transitions": [{"to": "reminded", "after": "604800s"}]},
    {"id": "reminded", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "reminder"}],
     "transitions": [{"to": "lapsed", "after": "604800s"}]},
    {"id": "lapsed", "terminal": true}
  ]}"#;

const T0: &str = "2026-03-02T09:00:00Z";

/// The actions of a run on the event clock over `TIMEOUTS`, one contact, with `extra` flags,
/// by idempotency key (canonical JSON).
fn run_timeouts(extra: &[&str]) -> std::collections::BTreeMap<String, String> {
    let dir = tempfile::tempdir().unwrap();
    let spec: serde_json::Value = serde_json::from_str(TIMEOUTS).unwrap();
    let version = serde_json::json!({"campaignId": "follow-up", "version": 1});
    let lines = [
        serde_json::json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}),
        serde_json::json!({"at": T0, "command": {"actor": "marketer", "submit": version}}),
        serde_json::json!({"at": T0, "command": {"actor": "manager", "approve": version}}),
        serde_json::json!({"at": T0, "contact": {"id": "c1"}}),
        serde_json::json!({"at": T0, "command": {"actor": "ops", "launch": "follow-up"}}),
    ];
    let input = dir.path().join("input.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&input, text).unwrap();
    let actions = dir.path().join("actions.jsonl");
    let data = dir.path().join("data");
    let mut args = canvass_tests::event_clock_run(&data, &input, &actions);
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = canvass_tests::canvass(&args);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&actions)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["idempotencyKey"].as_str().unwrap().to_string(),
                l.to_string(),
            )
        })
        .collect()
}

/// Under the event clock the timers still armed when the input ends wait for more input;
/// `--until T` fires those due until T and `--drain` all of them, each at its due time, and
/// what `--drain` delivers is what `simulate` prints for the same campaign and contact.
#[test]
fn the_event_clock_moves_on_at_the_end_of_the_input_as_simulate_does() {
    let templates = |actions: &std::collections::BTreeMap<String, String>| -> Vec<String> {
        actions
            .values()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                v["template"].as_str().unwrap().to_string()
            })
            .collect()
    };
    assert_eq!(templates(&run_timeouts(&[])), ["invite"]);
    assert_eq!(
        templates(&run_timeouts(&["--until", "2026-03-10T00:00:00Z"])),
        ["invite", "reminder"]
    );
    assert_eq!(
        templates(&run_timeouts(&["--until", "2026-03-09T08:59:59Z"])),
        ["invite"],
        "one second before the timeout is due"
    );
    let drained = run_timeouts(&["--drain"]);
    assert_eq!(templates(&drained), ["invite", "reminder"]);

    let dir = tempfile::tempdir().unwrap();
    let spec = dir.path().join("spec.json");
    std::fs::write(&spec, TIMEOUTS).unwrap();
    let contacts = dir.path().join("contacts.jsonl");
    std::fs::write(&contacts, "{\"id\": \"c1\"}\n").unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let out = canvass_tests::canvass(&[
        "simulate",
        "--spec",
        spec.to_str().unwrap(),
        "--contacts",
        contacts.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--start",
        T0,
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let simulated: std::collections::BTreeMap<String, String> =
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v.get("action").cloned())
            .map(|a| {
                (
                    a["idempotencyKey"].as_str().unwrap().to_string(),
                    a.to_string(),
                )
            })
            .collect();
    let drained: std::collections::BTreeMap<String, String> = drained
        .into_iter()
        .map(|(k, l)| {
            (
                k,
                serde_json::from_str::<serde_json::Value>(&l)
                    .unwrap()
                    .to_string(),
            )
        })
        .collect();
    assert_eq!(drained, simulated, "the same actions, keys and content");

    // The event clock only, refused before the data directory is made.
    let data = dir.path().join("not-made");
    let refused = canvass_tests::canvass(&["run", "--data", data.to_str().unwrap(), "--drain"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--clock event"));
    assert!(!data.exists());
}

/// A preview is what production does: the input stream `simulate` ran on the reference
/// example, given to `run --clock event --drain`, delivers the same actions (keys and
/// content) and gives the same report.
#[test]
fn simulate_and_run_on_the_stream_simulate_ran_agree() {
    let dir = tempfile::tempdir().unwrap();
    let stream = dir.path().join("stream.jsonl");
    let simulated = canvass_tests::simulate_reference(&[
        "--json",
        "--report",
        "--emit-input",
        stream.to_str().unwrap(),
    ]);
    assert!(
        simulated.status.success(),
        "{}",
        canvass_tests::stderr(&simulated)
    );
    let lines: Vec<serde_json::Value> = canvass_tests::stdout(&simulated)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let simulated_actions: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| l.get("action"))
        .cloned()
        .collect();
    let simulated_report = lines.iter().find_map(|l| l.get("report")).unwrap().clone();
    assert_eq!(simulated_actions.len(), 519, "the example's actions");

    let data = dir.path().join("data");
    let actions = dir.path().join("actions.jsonl");
    let run = canvass_tests::canvass(&[
        "run",
        "--data",
        data.to_str().unwrap(),
        "--input",
        stream.to_str().unwrap(),
        "--actions",
        actions.to_str().unwrap(),
        "--clock",
        "event",
        "--drain",
        "--max-lead-hours",
        "0",
    ]);
    assert!(run.status.success(), "{}", canvass_tests::stderr(&run));
    let delivered: Vec<serde_json::Value> = std::fs::read_to_string(&actions)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        delivered, simulated_actions,
        "the same actions in the same order, keys and content"
    );
    let report = canvass_tests::canvass(&["report", "--data", data.to_str().unwrap(), "--json"]);
    assert!(
        report.status.success(),
        "{}",
        canvass_tests::stderr(&report)
    );
    let reported: serde_json::Value =
        serde_json::from_str(&canvass_tests::stdout(&report)).unwrap();
    assert_eq!(reported, simulated_report, "the same report");
}

/// A data directory of the layout before partitions is refused by `run` with the way out,
/// and `canvass migrate-store` rewrites it into partitions: every contact ends in the state
/// the old store holds (its dedupe memory included), the same actions are still queued, the
/// counters add up to the old ones, and the new partitions replay to the same bytes.
#[test]
fn migrate_store_rewrites_a_store_of_the_single_partition_layout_into_partitions() {
    use canvass_engine::durable::{ClockMode, Engine, EngineOptions, Incoming, Sourced};
    use canvass_proto::{json, v1};
    use canvass_store::{Store, StoreOptions};

    let dir = tempfile::tempdir().unwrap();
    let old = dir.path().join("old");
    // The layout before partitions: one store directly in the directory.
    let sources = ["stream.jsonl"];
    {
        let store = Store::open(&old, StoreOptions::default()).unwrap();
        // With a lateness: timers fire hours after they are due, where the log says.
        let mut engine = Engine::open(
            store,
            EngineOptions {
                clock: ClockMode::Event,
                allowed_lateness: canvass_core::SpanMillis(3 * 3_600_000),
                ..EngineOptions::default()
            },
        )
        .unwrap();
        let inputs: Vec<Sourced> = canvass_tests::reference_stream(1)
            .lines()
            .enumerate()
            .map(|(i, line)| Sourced {
                incoming: match json::from_str::<v1::IngestRecord>(line) {
                    Ok(r) => Incoming::Record(Box::new(r)),
                    Err(e) => Incoming::Malformed {
                        payload: line.as_bytes().to_vec(),
                        key: Vec::new(),
                        reason: e.to_string(),
                    },
                },
                position: Some(v1::SourcePosition {
                    source: sources[0].to_string(),
                    offset: i as u64,
                    next_offset: i as u64 + 1,
                }),
                caller: None,
            })
            .collect();
        for (n, chunk) in inputs.chunks(64).enumerate() {
            engine
                .ingest(chunk.to_vec(), canvass_core::UnixMillis(0))
                .unwrap();
            // Some actions delivered (their acknowledgements logged), the rest still queued.
            if n % 2 == 0 {
                engine.dispatch(40, &mut |_| Ok(())).unwrap();
            }
        }
        engine.checkpoint().unwrap();
    }

    let run = canvass_tests::canvass(&[
        "run",
        "--data",
        old.to_str().unwrap(),
        "--input",
        "/dev/null",
    ]);
    let stderr = canvass_tests::stderr(&run);
    assert!(!run.status.success());
    assert!(
        stderr.contains("single-partition layout") && stderr.contains("canvass migrate-store"),
        "{stderr}"
    );

    let new = dir.path().join("new");
    let migrate = canvass_tests::canvass(&[
        "migrate-store",
        "--from",
        old.to_str().unwrap(),
        "--to",
        new.to_str().unwrap(),
        "--partitions",
        "3",
    ]);
    assert!(
        migrate.status.success(),
        "{}",
        canvass_tests::stderr(&migrate)
    );

    let old_store = Store::open(&old, StoreOptions::default()).unwrap();
    let mut old_states = Vec::new();
    for id in old_store.contact_ids(0) {
        let id = id.unwrap();
        let state = old_store.contact(0, &id).unwrap().unwrap();
        old_states.push((id, state));
    }
    let stores = canvass_tests::stores(&new);
    assert_eq!(stores.layout().partitions, 3);
    let new_states = canvass_engine::reports::contact_states(&stores).unwrap();
    assert!(old_states.len() > 300, "{} contacts", old_states.len());
    assert_eq!(
        old_states, new_states,
        "every contact as the old store holds it"
    );
    for l in old_store.lifecycles().unwrap() {
        assert_eq!(
            old_store.counters(&l.campaign_id).unwrap(),
            canvass_engine::reports::counters(&stores, &l.campaign_id).unwrap(),
            "{}",
            l.campaign_id
        );
    }
    let keys = |rows: Vec<((u64, u32), v1::Action)>| -> Vec<v1::Action> {
        rows.into_iter().map(|(_, a)| a).collect()
    };
    let mut queued_before = keys(old_store.outbox(usize::MAX).unwrap());
    let mut queued_after: Vec<v1::Action> = stores
        .iter()
        .flat_map(|s| keys(s.outbox(usize::MAX).unwrap()))
        .collect();
    queued_before.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    queued_after.sort_by(|a, b| a.idempotency_key.cmp(&b.idempotency_key));
    assert!(!queued_before.is_empty());
    assert_eq!(queued_before, queued_after, "the same actions still queued");
    assert_eq!(
        stores
            .iter()
            .map(|s| s.dead_letter_count().unwrap())
            .sum::<u64>(),
        old_store.dead_letter_count().unwrap()
    );
    for store in stores.iter() {
        assert_eq!(
            store.offset(sources[0]).unwrap(),
            old_store.offset(sources[0]).unwrap(),
            "a file resumes where the old store would"
        );
    }
    let live: Vec<_> = stores
        .iter()
        .map(|s| s.projection_dump().unwrap())
        .collect();
    drop(stores);
    let replay = canvass_tests::canvass(&["replay", "--data", new.to_str().unwrap()]);
    assert!(
        replay.status.success(),
        "{}",
        canvass_tests::stderr(&replay)
    );
    let rebuilt: Vec<_> = canvass_tests::stores(&new)
        .iter()
        .map(|s| s.projection_dump().unwrap())
        .collect();
    assert!(
        live == rebuilt,
        "the migrated partitions replay to the same bytes"
    );
}

/// A spec whose guard reads a field no event has: the condition fails for every contact
/// that reaches it (taken as false), which the log tells once per interval.
const FAILING_GUARD: &str = r#"{"id": "guarded", "version": 1, "initialState": "asked",
  "entryTriggers": [{"eventType": "signup"}],
  "states": [
    {"id": "asked", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "ask"}],
     "transitions": [{"to": "done", "onEvent": {"type": "reply", "guard": "event.attrs.rating > 3"}}]},
    {"id": "done", "terminal": true}
  ]}"#;

/// The log as a log system reads it: with `--log-format json` every line of standard error
/// is a JSON object with a timestamp, a level, a target and a message; the end of the run is
/// an event whose fields are the run's figures; the core's warnings carry the campaign and
/// the contact, and a warning repeated for every contact is told once with the count held
/// back.
#[test]
fn the_json_log_is_one_event_per_line_with_the_runs_figures_and_throttled_warnings() {
    let dir = tempfile::tempdir().unwrap();
    let spec: serde_json::Value = serde_json::from_str(FAILING_GUARD).unwrap();
    let version = serde_json::json!({"campaignId": "guarded", "version": 1});
    let mut input = String::new();
    for (actor, command) in [
        ("marketer", serde_json::json!({"putSpec": spec})),
        ("marketer", serde_json::json!({"submit": version})),
        ("manager", serde_json::json!({"approve": version})),
        ("ops", serde_json::json!({"launch": "guarded"})),
    ] {
        let mut command = command;
        command["actor"] = actor.into();
        let line = serde_json::json!({"at": "2026-03-02T08:00:00Z", "command": command});
        input.push_str(&format!("{line}\n"));
    }
    let contacts = 20;
    for i in 0..contacts {
        input.push_str(&format!(
            r#"{{"event": {{"id": "s{i}", "type": "signup", "contactId": "c{i}", "occurredAt": "2026-03-02T09:00:00Z"}}}}"#
        ));
        input.push('\n');
        input.push_str(&format!(
            r#"{{"event": {{"id": "r{i}", "type": "reply", "contactId": "c{i}", "occurredAt": "2026-03-02T10:00:00Z"}}}}"#
        ));
        input.push('\n');
    }
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, input).unwrap();
    let data = dir.path().join("data");
    let actions = dir.path().join("actions.jsonl");
    let out = Command::new(canvass_bin())
        .args(["run", "--clock", "event", "--log-format", "json", "--data"])
        .arg(&data)
        .arg("--input")
        .arg(&input_path)
        .arg("--actions")
        .arg(&actions)
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect();
    for e in &events {
        for field in ["timestamp", "level", "target"] {
            assert!(e[field].is_string(), "no {field}: {e}");
        }
        assert!(e["fields"]["message"].is_string(), "no message: {e}");
    }
    let message = |e: &serde_json::Value| e["fields"]["message"].as_str().unwrap().to_string();
    let stopped = events
        .iter()
        .find(|e| message(e).starts_with("stopped"))
        .expect("the run logs its end");
    assert_eq!(stopped["fields"]["entries"], 2 * contacts + 4, "{stopped}");
    assert_eq!(stopped["fields"]["delivered"], contacts, "{stopped}");
    let warnings: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["level"] == "WARN" && e["fields"]["campaign"] == "guarded")
        .collect();
    assert_eq!(
        warnings.len(),
        1,
        "one warning for {contacts} failures: {warnings:?}"
    );
    let w = warnings[0];
    assert_eq!(w["fields"]["held_back"], 0, "{w}");
    assert!(w["fields"]["contact"].is_string(), "{w}");
    assert!(w["fields"]["partition"].is_u64(), "{w}");
    assert!(message(w).contains("guard"), "{w}");
}

/// Under a debug filter, what the engine logs about one input sits in the spans that say
/// whose it is: the partition's and the input's, with its contact.
#[test]
fn what_the_engine_logs_about_an_input_carries_its_partition_and_contact() {
    let dir = tempfile::tempdir().unwrap();
    let event = r#"{"event": {"id": "e1", "type": "signup", "contactId": "c7", "occurredAt": "2026-03-02T09:00:00Z"}}"#;
    let input_path = dir.path().join("in.jsonl");
    std::fs::write(&input_path, format!("{event}\n{event}\n")).unwrap();
    let out = Command::new(canvass_bin())
        .args([
            "run",
            "--partitions",
            "4",
            "--clock",
            "event",
            "--log-format",
            "json",
        ])
        .arg("--data")
        .arg(dir.path().join("data"))
        .arg("--input")
        .arg(&input_path)
        .arg("--actions")
        .arg(dir.path().join("actions.jsonl"))
        .env("CANVASS_LOG", "canvass_engine=debug")
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let duplicate: serde_json::Value = stderr
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("duplicate"))
        })
        .unwrap_or_else(|| panic!("the duplicate is logged under debug: {stderr}"));
    let spans = duplicate["spans"].as_array().expect("the event's spans");
    let partition = spans
        .iter()
        .find(|s| s["name"] == "partition")
        .unwrap_or_else(|| panic!("in a partition's span: {duplicate}"));
    let expected = canvass_core::partition::Partitioner::default().partition(b"c7", 4);
    assert_eq!(partition["partition"], expected, "{duplicate}");
    let input = spans
        .iter()
        .find(|s| s["name"] == "input")
        .unwrap_or_else(|| panic!("in the input's span: {duplicate}"));
    assert_eq!(input["contact"], "c7", "{duplicate}");
    assert_eq!(input["event"], "signup", "{duplicate}");
}

#[test]
fn a_log_filter_that_does_not_parse_is_refused_naming_the_variable() {
    let out = Command::new(canvass_bin())
        .args(["validate", "examples/reference/campaign.json"])
        .current_dir(canvass_tests::repo_root())
        .env("CANVASS_LOG", "info,[[")
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("CANVASS_LOG"), "{stderr}");
}

/// The README's command for a first run, as written (from the repository's root, the data
/// directory and actions file moved into a temporary directory), on the ready
/// `examples/reference/stream.jsonl`: every campaign emits the reference's actions by kind.
#[test]
fn the_readmes_run_of_the_example_stream_gives_the_reference_outcome() {
    let root = canvass_tests::repo_root();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let line = readme
        .lines()
        .find(|l| l.contains("-- run --data /tmp/canvass --input "))
        .expect("the README shows a first run");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("canvass");
    let actions = dir.path().join("actions.jsonl");
    let args: Vec<String> = line
        .split("-- ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .map(|a| match a {
            "/tmp/canvass" => data.to_str().unwrap().to_string(),
            "actions.jsonl" => actions.to_str().unwrap().to_string(),
            other => other.to_string(),
        })
        .collect();
    let out = Command::new(canvass_bin())
        .current_dir(&root)
        .args(&args)
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(canvass_tests::example("expected.json")).unwrap(),
    )
    .unwrap();
    let mut by_kind: std::collections::BTreeMap<(String, String), u64> = Default::default();
    for line in std::fs::read_to_string(&actions).unwrap().lines() {
        let a: serde_json::Value = serde_json::from_str(line).unwrap();
        let kind = a["kind"]
            .as_str()
            .unwrap()
            .trim_start_matches("ACTION_KIND_");
        *by_kind
            .entry((
                a["campaignId"].as_str().unwrap().to_string(),
                kind.to_string(),
            ))
            .or_default() += 1;
    }
    for campaign in expected["campaigns"].as_array().unwrap() {
        let id = campaign["id"].as_str().unwrap();
        for (kind, n) in campaign["actionsByKind"].as_object().unwrap() {
            assert_eq!(
                by_kind
                    .get(&(id.to_string(), kind.clone()))
                    .copied()
                    .unwrap_or(0),
                n.as_u64().unwrap(),
                "{id}: {kind}"
            );
        }
    }
}
