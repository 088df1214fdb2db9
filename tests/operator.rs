//! Operator commands with the real binary: dead letters listed, shown and redriven (from a
//! stopped engine's data directory, and from a running engine over gRPC, whose store it
//! holds locked), `inspect` of a running engine, and a SIGTERM of `run --follow` that stops
//! gracefully with its summary and checkpoint.

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::{path::Path, process::Command, time::Duration};

use canvass_tests::OutputWithin;
use canvass_tests::{
    api::{OPERATOR, READER, settings},
    canvass, canvass_bin, repo_root, start_ready, stderr, stdout,
};
use serde_json::{Value, json};

/// A campaign written and submitted; its launch comes before its approval (refused), a
/// contact, an event dated three days ahead (refused under `--max-lead-hours 1`), and a line
/// that is not JSON.
fn input(dir: &Path) -> std::path::PathBuf {
    let spec: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("examples/reference/survey.json")).unwrap(),
    )
    .unwrap();
    let id = spec["id"].as_str().unwrap().to_string();
    let version = json!({"campaignId": id, "version": 1});
    let ahead = (chrono::Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let lines = [
        json!({"command": {"actor": "marketer", "putSpec": spec}}).to_string(),
        json!({"command": {"actor": "marketer", "submit": version}}).to_string(),
        json!({"command": {"actor": "ops", "launch": id}}).to_string(),
        json!({"command": {"actor": "manager", "approve": version}}).to_string(),
        json!({"contact": {"id": "c-1"}}).to_string(),
        json!({"event": {"id": "e-1", "contactId": "c-1", "type": "page.viewed", "occurredAt": ahead}})
            .to_string(),
        "{not json".to_string(),
    ];
    let path = dir.join("input.jsonl");
    std::fs::write(&path, lines.join("\n") + "\n").unwrap();
    path
}

fn ids(list: &str) -> Vec<String> {
    list.lines()
        .map(|l| l.split('\t').next().unwrap().to_string())
        .collect()
}

/// From a stopped engine's data directory: three dead letters, each with its reason and
/// source; the launch redriven once the campaign is approved applies, the event redriven
/// outside the bound that refused it applies, the line that is no input stays a letter; a
/// letter is redriven once.
#[test]
fn dead_letters_are_listed_shown_and_redriven_from_a_data_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    let input = input(dir.path());
    let out = canvass(&[
        "run",
        "--data",
        d,
        "--input",
        input.to_str().unwrap(),
        "--actions",
        dir.path().join("actions.jsonl").to_str().unwrap(),
        "--max-lead-hours",
        "1",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));

    let list = canvass(&["dead-letters", "--data", d, "list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let text = stdout(&list);
    assert_eq!(text.lines().count(), 3, "{text}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].contains("has no approved version to launch"),
        "{text}"
    );
    assert!(
        lines[1].contains("more than the 1h allowed (`--max-lead-hours`)"),
        "{text}"
    );
    assert!(lines[2].contains("invalid JSON"), "{text}");
    assert!(
        text.contains(&format!("file:{}", input.canonicalize().unwrap().display())),
        "{text}"
    );
    let letter_ids = ids(&text);

    let show = canvass(&["dead-letters", "--data", d, "show", &letter_ids[2]]);
    let shown = stdout(&show);
    assert!(shown.contains("payload:     {not json"), "{shown}");
    assert!(shown.contains("redriven:    no"), "{shown}");
    let json_line = stdout(&canvass(&[
        "dead-letters",
        "--data",
        d,
        "show",
        &letter_ids[1],
        "--json",
    ]));
    let letter: Value = serde_json::from_str(json_line.trim()).unwrap();
    assert_eq!(letter["id"], letter_ids[1].as_str());
    assert_eq!(letter["letter"]["format"], "protobuf-record");

    // The launch, now that the campaign is approved.
    let redrive = canvass(&[
        "dead-letters",
        "--data",
        d,
        "redrive",
        &letter_ids[0],
        "--why",
        "approved since",
    ]);
    assert!(
        redrive.status.success(),
        "{}{}",
        stdout(&redrive),
        stderr(&redrive)
    );
    assert!(
        stdout(&redrive).contains(&format!("{}: applied again as log entry", letter_ids[0])),
        "{}",
        stdout(&redrive)
    );
    // The rest: the event applies, the line does not (status 2).
    // The rest, with the bound that refused the event moved out of its way.
    let all = canvass(&[
        "dead-letters",
        "--data",
        d,
        "redrive",
        "--all",
        "--max-lead-hours",
        "100",
    ]);
    assert_eq!(all.status.code(), Some(2), "{}", stdout(&all));
    let said = stdout(&all);
    assert!(
        said.contains(&format!("{}: applied again", letter_ids[1])),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "{}: not applied: the payload is still not an input",
            letter_ids[2]
        )),
        "{said}"
    );
    assert!(said.contains("1 redriven, 1 not applied"), "{said}");

    let open = stdout(&canvass(&["dead-letters", "--data", d, "list", "--open"]));
    assert_eq!(ids(&open), vec![letter_ids[2].clone()], "{open}");
    let again = canvass(&["dead-letters", "--data", d, "redrive", &letter_ids[0]]);
    assert!(
        stdout(&again).contains("redriven already (by cli (redrive: approved since))"),
        "{}",
        stdout(&again)
    );
    let shown = stdout(&canvass(&[
        "dead-letters",
        "--data",
        d,
        "show",
        &letter_ids[0],
    ]));
    assert!(
        shown.contains("redriven:    at ") && shown.contains("by cli (redrive: approved since)"),
        "{shown}"
    );

    // The redriven launch came after the approval: the campaign runs.
    let inspect = stdout(&canvass(&["inspect", "--data", d]));
    assert!(
        inspect.contains("b-improvement-survey (RUNNING, active v1)")
            && inspect.contains("launch v1 by ops"),
        "{inspect}"
    );
    assert!(
        inspect.contains("dead letters:  3 (1 not redriven)"),
        "{inspect}"
    );
}

/// A running engine holds its store: `inspect` and `dead-letters` ask it over gRPC; a
/// reader may list but not redrive; an operator's redrive goes through the engine.
#[test]
fn a_running_engine_answers_inspect_and_dead_letters_over_grpc() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(&grpc, settings()).unwrap();
    let input = input(dir.path());
    let args = canvass_tests::args(&[
        "run",
        "--data",
        data.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--actions",
        dir.path().join("actions.jsonl").to_str().unwrap(),
        "--grpc-config",
        grpc.to_str().unwrap(),
        "--max-lead-hours",
        "1",
    ]);
    let mut running = start_ready(&args, true);
    let server = format!("http://{}", running.grpc.clone().unwrap());
    let as_caller = |token: &str, args: &[&str]| {
        Command::new(canvass_bin())
            .args(args)
            .env("CANVASS_TOKEN", token)
            .output_within(canvass_tests::HUNG)
            .unwrap()
    };
    // The input is applied when the three letters are there (bounded).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let listed = loop {
        let out = as_caller(READER, &["dead-letters", "--server", &server, "list"]);
        assert!(out.status.success(), "{}", stderr(&out));
        if stdout(&out).lines().count() == 3 {
            break stdout(&out);
        }
        assert!(std::time::Instant::now() < deadline, "{}", stdout(&out));
        std::thread::sleep(Duration::from_millis(100));
    };
    // The store is the engine's: reading it directly is refused with the way out.
    let direct = canvass(&[
        "dead-letters",
        "--data",
        data.to_str().unwrap(),
        "redrive",
        "--all",
    ]);
    assert_ne!(direct.status.code(), Some(0));
    assert!(stderr(&direct).contains("--server"), "{}", stderr(&direct));

    let inspect = as_caller(READER, &["inspect", "--server", &server]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let text = stdout(&inspect);
    assert!(text.contains("layout:        1 partition"), "{text}");
    assert!(text.contains("dead letters:  3 (3 not redriven)"), "{text}");
    assert!(text.contains("contacts:      1"), "{text}");

    let launch = ids(&listed)[0].clone();
    let denied = as_caller(
        READER,
        &["dead-letters", "--server", &server, "redrive", &launch],
    );
    assert_eq!(denied.status.code(), Some(2), "{}", stderr(&denied));
    assert!(
        stderr(&denied).contains("PermissionDenied"),
        "{}",
        stderr(&denied)
    );
    let done = as_caller(
        OPERATOR,
        &["dead-letters", "--server", &server, "redrive", &launch],
    );
    assert!(done.status.success(), "{}{}", stdout(&done), stderr(&done));
    assert!(
        stdout(&done).contains("applied again as log entry"),
        "{}",
        stdout(&done)
    );
    let shown = stdout(&as_caller(
        READER,
        &["dead-letters", "--server", &server, "show", &launch],
    ));
    assert!(shown.contains("by ola (redrive)"), "{shown}");
    let text = stdout(&as_caller(READER, &["inspect", "--server", &server]));
    assert!(
        text.contains("b-improvement-survey (RUNNING, active v1)")
            && text.contains("launch v1 by ola")
            && text.contains("dead letters:  3 (2 not redriven)"),
        "{text}"
    );

    // Reports asked of the running engine are the ones its data directory gives once it
    // stopped: tables, CSV and the value report's JSON alike.
    let ask = |extra: &[&str]| {
        let mut all = vec!["report", "--server", server.as_str()];
        all.extend_from_slice(extra);
        let out = as_caller(READER, &all);
        assert!(out.status.success(), "{extra:?}: {}", stderr(&out));
        stdout(&out)
    };
    let remote = [ask(&[]), ask(&["--csv"]), ask(&["--value", "--json"])];
    let exit = running.child.terminate();
    assert!(exit.success(), "{exit}");
    let d = data.to_str().unwrap();
    let local = |extra: &[&str]| {
        let mut all = vec!["report", "--data", d];
        all.extend_from_slice(extra);
        stdout(&canvass(&all))
    };
    assert!(remote[0].contains("b-improvement-survey"), "{}", remote[0]);
    assert_eq!(remote[0], local(&[]));
    assert_eq!(remote[1], local(&["--csv"]));
    assert_eq!(remote[2], local(&["--value", "--json"]));
}

/// A SIGTERM of `run --follow` in the middle of its input is a graceful stop: the batch in
/// hand is committed, the summary logged, the projections checkpointed (`inspect` has
/// nothing to apply again), and the next run resumes where it stopped and ends as a run that
/// was never stopped.
#[test]
fn a_sigterm_of_run_follow_stops_gracefully_with_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let stream = dir.path().join("stream.jsonl");
    let text = canvass_tests::reference_stream(6);
    let lines = text.lines().count() as u64;
    std::fs::write(&stream, &text).unwrap();
    let actions = dir.path().join("actions.jsonl");
    let run = |data: &Path, actions: &Path, follow: bool| -> Vec<String> {
        let mut args = canvass_tests::args(&[
            "run",
            "--data",
            data.to_str().unwrap(),
            "--input",
            stream.to_str().unwrap(),
            "--actions",
            actions.to_str().unwrap(),
            "--clock",
            "event",
            // Small commits, each flushed: the input takes a while, and the stop lands in it.
            "--max-batch",
            "8",
        ]);
        if follow {
            args.push("--follow".into());
        }
        args
    };
    let mut running = start_ready(&run(&data, &actions, true), false);
    // Once the first actions are out, stop it.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&actions)
        .unwrap_or_default()
        .lines()
        .count()
        < 10
    {
        assert!(std::time::Instant::now() < deadline, "no action came out");
        std::thread::sleep(Duration::from_millis(10));
    }
    let exit = running.child.terminate();
    assert!(exit.success(), "{exit}");
    let summary = running
        .lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(&l).unwrap())
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("stopped:"))
        })
        .expect("the summary of a graceful stop");
    let applied = summary["fields"]["entries"].as_u64().unwrap();
    assert!(
        applied > 0 && applied < lines,
        "the stop came in the middle of the input: {summary}"
    );
    let shown = stdout(&canvass(&["inspect", "--data", data.to_str().unwrap()]));
    assert!(
        !shown.contains("checkpoint:"),
        "everything checkpointed at the stop: {shown}"
    );
    // The rest of the input, from where the stop left it.
    let args = run(&data, &actions, false);
    let rest = canvass(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(rest.status.success(), "{}", stderr(&rest));
    let whole = dir.path().join("whole");
    let args = run(&whole, &dir.path().join("whole.jsonl"), false);
    let once = canvass(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(once.status.success(), "{}", stderr(&once));
    let states = |d: &Path| {
        stdout(&canvass(&[
            "inspect",
            "--data",
            d.to_str().unwrap(),
            "--contacts",
        ]))
    };
    let resumed = states(&data);
    assert!(
        resumed.lines().count() > 1000,
        "{}",
        resumed.lines().count()
    );
    assert_eq!(resumed, states(&whole));
    // Every action once: the stopped run's and the rest's together are the whole run's.
    let keys = |path: &Path| {
        let mut keys: Vec<String> = std::fs::read_to_string(path)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<Value>(l).unwrap()["idempotencyKey"].to_string())
            .collect();
        keys.sort();
        keys
    };
    assert_eq!(keys(&actions), keys(&dir.path().join("whole.jsonl")));
}
