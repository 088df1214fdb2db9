//! `canvass run` on the wall clock: a timeout fires in real time while the engine tails its
//! input, and the engine picks up lines appended to the input after it started.

#![allow(clippy::unwrap_used)]

use std::{
    io::Write,
    process::{Command, Stdio},
    time::{Duration, Instant},
};

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
    let mut child = Command::new(canvass_bin())
        .args([
            "run",
            "--data",
            dir.path().join("data").to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
        ])
        .args(["--actions", actions.to_str().unwrap(), "--follow"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();

    // The signup arrives after the engine started: it is tailing the file.
    std::thread::sleep(Duration::from_millis(300));
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
