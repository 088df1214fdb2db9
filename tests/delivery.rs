//! Action delivery by kind, with the real binary and the real example executor over loopback
//! gRPC: a file run whose emails are pushed to an executor while every action is also copied
//! to a file, an executor that answers nonsense (its actions given up on, as dead letters
//! holding the action), and destinations a run cannot reach refused before it starts.

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::{collections::BTreeMap, path::Path, time::Duration};

use canvass_proto::{json, v1};
use canvass_tests::{
    canvass,
    executor::{carried_out, start_executor},
    start_ready, stderr, stdout,
};
use serde_json::{Value, json};

/// A campaign that mails everyone and moves each contact by the executor's answer.
const MAILING: &str = r#"{
  "id": "welcome-mail",
  "version": 1,
  "name": "Welcome mail",
  "goal": "CAMPAIGN_GOAL_RETENTION",
  "owner": "crm",
  "audience": {"filter": "true"},
  "initialState": "mailed",
  "states": [
    {"id": "mailed",
     "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "welcome"},
                 {"kind": "ACTION_KIND_SMS", "template": "welcome-sms"}],
     "transitions": [
       {"to": "reached", "onEvent": {"type": "action.delivered"}},
       {"to": "bounced", "onEvent": {"type": "action.bounced"}}
     ]},
    {"id": "reached", "responseGroup": "reached", "terminal": true, "goal": true},
    {"id": "bounced", "responseGroup": "bounced", "terminal": true}
  ]
}"#;

/// The mailing campaign written, submitted, approved, launched, and 20 contacts (every
/// fourth one's mailbox bounces, as the example executor answers for ids with `bounce`).
fn mailing_input(dir: &Path) -> std::path::PathBuf {
    let spec: Value = serde_json::from_str(MAILING).unwrap();
    let version = json!({"campaignId": "welcome-mail", "version": 1});
    let mut lines = vec![
        json!({"command": {"actor": "marketer", "putSpec": spec}}),
        json!({"command": {"actor": "marketer", "submit": version}}),
        json!({"command": {"actor": "manager", "approve": version}}),
    ];
    for i in 0..20 {
        let id = if i % 4 == 0 {
            format!("bounce-{i:02}")
        } else {
            format!("c-{i:02}")
        };
        lines.push(json!({"contact": {"id": id}}));
    }
    lines.push(json!({"command": {"actor": "ops", "launch": "welcome-mail"}}));
    let path = dir.join("input.jsonl");
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the engine over `input` with `delivery` until it exits by itself; its log events.
fn run_to_the_end(data: &Path, input: &Path, delivery: &Path) -> Vec<Value> {
    let args = canvass_tests::args(&[
        "run",
        "--data",
        data.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--delivery",
        delivery.to_str().unwrap(),
    ]);
    let mut running = start_ready(&args, true);
    let status = canvass_tests::wait_within(&mut running.child, Duration::from_secs(120))
        .expect("the run ends once every action is delivered or given up on");
    assert!(status.success(), "{status}");
    running
        .lines
        .iter()
        .map(|l| serde_json::from_str(&l).unwrap())
        .collect()
}

fn event<'a>(events: &'a [Value], message: &str) -> &'a Value {
    events
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .unwrap_or_else(|| panic!("no `{message}` event in {events:#?}"))
}

fn keys_in(path: &Path) -> BTreeMap<String, (String, u32)> {
    let mut keys = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap().lines() {
        let action: v1::Action = json::from_str(line).unwrap();
        let kind = action.kind().as_str_name().to_string();
        keys.entry(action.idempotency_key).or_insert((kind, 0)).1 += 1;
    }
    keys
}

fn group(data: &Path, name: &str) -> Vec<String> {
    let out = canvass(&[
        "inspect",
        "--data",
        data.to_str().unwrap(),
        "--group",
        &format!("welcome-mail/{name}"),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).lines().map(str::to_string).collect()
}

/// Emails go to the executor and every action, emails included, to a file: the executor
/// carries each email out once, the file holds every action once, the campaign moves each
/// contact by the executor's answer, and the run ends once nothing is left to deliver, its
/// summary counting what went over gRPC.
#[test]
fn a_file_run_pushes_emails_to_the_executor_and_copies_every_action_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("carried-out.jsonl");
    let executor = start_executor(&["--out", out.to_str().unwrap(), "--fail-first", "1"]);
    let copies = dir.path().join("copies.jsonl");
    let delivery = dir.path().join("delivery.toml");
    std::fs::write(
        &delivery,
        format!(
            "[retry]\nfirst_backoff_ms = 10\nmax_backoff_ms = 200\n\n[[executor]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://{}\"\nconcurrency = 4\n\n[[file]]\nkinds = [\"*\"]\npath = \"{}\"\n",
            executor.address,
            copies.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let events = run_to_the_end(&data, &mailing_input(dir.path()), &delivery);

    let pushed = carried_out(&out);
    assert_eq!(pushed.len(), 20, "{pushed:?}");
    assert!(pushed.values().all(|n| *n == 1), "{pushed:?}");
    let copied = keys_in(&copies);
    assert_eq!(copied.len(), 40, "an email and a text per contact");
    assert!(copied.values().all(|(_, n)| *n == 1), "{copied:?}");
    for key in pushed.keys() {
        assert_eq!(copied[key].0, "ACTION_KIND_EMAIL", "{key}");
    }
    // The answers reached the campaign: bounced mailboxes in one group, the rest in the other.
    let bounced = group(&data, "bounced");
    assert_eq!(bounced.len(), 5, "{bounced:?}");
    assert!(bounced.iter().all(|c| c.starts_with("bounce-")));
    assert_eq!(group(&data, "reached").len(), 15);

    let stopped = &event(&events, "stopped:")["fields"];
    // 15 emails delivered and 20 texts copied; 5 bounced; each email refused once first.
    assert_eq!(stopped["delivered"], 35, "{stopped}");
    assert_eq!(stopped["failed"], 5, "{stopped}");
    assert_eq!(stopped["given_up"], 0, "{stopped}");
    assert_eq!(stopped["retries"], 20, "{stopped}");
    let routes = event(&events, "delivery")["fields"]["routes"]
        .as_str()
        .unwrap();
    assert!(
        routes.contains(&format!("EMAIL -> {} + http://", copies.display())),
        "{routes}"
    );
}

/// An executor that answers an outcome that does not exist is retried up to the attempts
/// the settings allow, then each of its actions is a dead letter holding the action and the
/// reason, counted as failed; nothing is lost and the run ends.
#[test]
fn an_executor_answering_nonsense_gets_its_actions_given_up_on_as_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let executor = start_executor(&["--garbage"]);
    let delivery = dir.path().join("delivery.toml");
    let copies = dir.path().join("texts.jsonl");
    std::fs::write(
        &delivery,
        format!(
            "[retry]\nfirst_backoff_ms = 5\nmax_backoff_ms = 20\nmax_attempts = 3\n\n[[executor]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://{}\"\n\n[[file]]\nkinds = [\"*\"]\npath = \"{}\"\n",
            executor.address,
            copies.display()
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let events = run_to_the_end(&data, &mailing_input(dir.path()), &delivery);

    let stopped = &event(&events, "stopped:")["fields"];
    assert_eq!(stopped["given_up"], 20, "{stopped}");
    assert_eq!(stopped["retries"], 40, "three attempts each: {stopped}");
    let letters = canvass_tests::stores(&data)
        .iter()
        .flat_map(|s| s.dead_letters().unwrap())
        .collect::<Vec<_>>();
    assert_eq!(letters.len(), 20);
    for letter in &letters {
        let action = letter
            .action
            .as_ref()
            .expect("the action is the dead letter");
        assert_eq!(action.kind(), v1::ActionKind::Email);
        assert_eq!(letter.key, action.contact_id.as_bytes());
        assert!(
            letter.reason.contains("refused the action 3 times")
                && letter.reason.contains("unknown outcome 99"),
            "{}",
            letter.reason
        );
    }
    let out = canvass(&["inspect", "--data", data.to_str().unwrap()]);
    let text = stdout(&out);
    assert!(text.contains("dead letters:  20"), "{text}");
    assert!(text.contains("outbox:        0"), "{text}");
    // Counted as failed, and not seen by the campaign as an answer: nobody moved.
    assert!(
        text.contains("(0 delivered, 20 handed off, 20 failed)"),
        "{text}"
    );
    assert!(group(&data, "reached").is_empty() && group(&data, "bounced").is_empty());
}

/// A delivery naming a destination this run cannot reach, or settings that contradict each
/// other, is refused before the data directory is touched, naming the table and the reason.
#[test]
fn a_destination_the_run_cannot_reach_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let input = mailing_input(dir.path());
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(
        &grpc,
        "listen = \"127.0.0.1:0\"\n[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://127.0.0.1:1\"\n",
    )
    .unwrap();
    let cases: [(&str, &[&str], &str); 5] = [
        (
            "[[file]]\nkinds = [\"*\"]\npath = \"/no/such/directory/a.jsonl\"\n",
            &[],
            "file[0]: cannot open /no/such/directory/a.jsonl",
        ),
        (
            "[[topic]]\nkinds = [\"*\"]\n",
            &[],
            "topic[0]: actions go to the Kafka actions topic only when the engine runs on Kafka (--kafka-config)",
        ),
        (
            "[[pull]]\nkinds = [\"*\"]\n",
            &[],
            "pull[0]: pulled actions are served by the gRPC API, which this run does not serve (--grpc-config)",
        ),
        (
            "[[file]]\nkinds = [\"EMAIL\", \"FAXX\"]\npath = \"a.jsonl\"\n",
            &[],
            "file[0].kinds[1]: unknown action kind \"FAXX\"",
        ),
        (
            "[[file]]\nkinds = [\"*\"]\npath = \"a.jsonl\"\n",
            &["--grpc-config", grpc.to_str().unwrap()],
            "the gRPC settings list [[executors]] too",
        ),
    ];
    for (settings, extra, reason) in cases {
        let delivery = dir.path().join("delivery.toml");
        std::fs::write(&delivery, settings).unwrap();
        let mut args = vec![
            "run",
            "--data",
            data.to_str().unwrap(),
            "--input",
            input.to_str().unwrap(),
            "--delivery",
            delivery.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = canvass(&args);
        assert_eq!(out.status.code(), Some(2), "{settings}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(reason),
            "{settings}: {}",
            stderr(&out)
        );
        assert!(!data.exists(), "{settings}: the data directory was touched");
    }
}
