//! The bad-input suite, file and command-line part: hostile and careless inputs through the
//! JSON-lines input of the real binary, each one a dead letter (or a refused command) with
//! its reason, the stream going on after them, in bounded time and memory. The gRPC and
//! Kafka parts are in `grpc.rs` (`hostile_calls_...`) and `kafka.rs`
//! (`hostile_records_...`).

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::{path::Path, time::Duration};

use canvass_tests::{Bounded, example, run_bounded};
use serde_json::{Value, json};

const LAUNCH: &str = "2026-03-02T09:00:00Z";

/// Most resident memory any run of this suite may take: the engine's own (its page cache
/// and tables) with room to spare, far below what a 50 MB line read whole, a map explosion
/// or a nested comprehension would cost.
const MAX_RSS_MIB: u64 = 400;

/// Longest any run of this suite may take.
const LIMIT: Duration = Duration::from_secs(180);

/// A list literal of `n` ones, for conditions that multiply work.
fn ones(n: usize) -> String {
    format!("[{}]", vec!["1"; n].join(","))
}

/// A valid spec: one email on entry, a move to `done` on event `x` when `guard` holds.
fn spec(id: &str, audience: &str, guard: &str) -> Value {
    json!({
        "id": id,
        "version": 1,
        "name": id,
        "initialState": "start",
        "audience": {"filter": audience},
        "states": [
            {
                "id": "start",
                "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "t"}],
                "transitions": [{"to": "done", "onEvent": {"type": "x", "guard": guard}}]
            },
            {"id": "done", "terminal": true}
        ]
    })
}

fn command(actor: &str, command: Value) -> Value {
    let mut c = json!({"actor": actor});
    for (k, v) in command.as_object().unwrap() {
        c[k] = v.clone();
    }
    json!({"at": LAUNCH, "command": c})
}

/// Puts, submits (by `author`) and approves (by someone else) a spec.
fn loaded(spec: Value, author: &str) -> Vec<Value> {
    let version = json!({"campaignId": spec["id"], "version": 1});
    vec![
        command(author, json!({"putSpec": spec})),
        command(author, json!({"submit": version})),
        command("manager", json!({"approve": version})),
    ]
}

fn event(id: &str, contact: &str, at: &str) -> Value {
    json!({"event": {"id": id, "type": "x", "contactId": contact, "occurredAt": at}})
}

/// A chain of `n` states, each moving to the next after an hour.
fn long_spec(n: usize) -> Value {
    let states: Vec<Value> = (0..n)
        .map(|i| {
            if i + 1 == n {
                json!({"id": format!("s{i}"), "terminal": true})
            } else {
                json!({
                    "id": format!("s{i}"),
                    "transitions": [{"to": format!("s{}", i + 1), "after": "3600s"}]
                })
            }
        })
        .collect();
    json!({"id": "long", "version": 1, "name": "long", "initialState": "s0", "states": states})
}

/// One bad line and what the engine must say of it (its dead letter's reason holds this).
struct Case {
    what: &'static str,
    line: Vec<u8>,
    reason: &'static str,
}

fn line(value: &Value) -> Vec<u8> {
    serde_json::to_vec(value).unwrap()
}

fn cases() -> Vec<Case> {
    let chain = vec!["1"; 24_000].join(" + ");
    let deep_cel = format!("{}true{}", "(".repeat(10_000), ")".repeat(10_000));
    let mut invalid_utf8 = br#"{"event": {"id": ""#.to_vec();
    invalid_utf8.extend_from_slice(&[0xff, 0xfe, 0xc3]);
    invalid_utf8.extend_from_slice(br#""}}"#);
    // Deterministic noise without a newline (which would split it into lines).
    let mut noise = Vec::with_capacity(4096);
    let mut x: u32 = 0x2545_f491;
    while noise.len() < 4096 {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        let b = (x & 0xff) as u8;
        if b != b'\n' {
            noise.push(b);
        }
    }
    let mut huge =
        br#"{"event": {"id": "huge", "type": "x", "contactId": "c1", "attrs": {"blob": ""#.to_vec();
    huge.resize(huge.len() + 50 * 1024 * 1024, b'a');
    huge.extend_from_slice(br#""}}}"#);
    let forever = json!({"to": "start", "after": "9223372036854775807s"});
    let mut eternal = spec("eternal", "true", "true");
    eternal["states"][0]["transitions"]
        .as_array_mut()
        .unwrap()
        .push(forever);
    let mut bad_version = spec("bad-version", "true", "true");
    bad_version["version"] = json!(99_999_999_999_u64);
    vec![
        Case {
            what: "random bytes",
            line: noise,
            reason: "",
        },
        Case {
            what: "invalid UTF-8",
            line: invalid_utf8,
            reason: "not UTF-8",
        },
        Case {
            what: "a 50 MB line",
            line: huge,
            reason: "more than the limit of 1048576",
        },
        Case {
            what: "JSON nested 100000 deep",
            line: format!(
                r#"{{"event": {{"id": "d", "type": "x", "contactId": "c1", "attrs": {{"a": {}{}}}}}}}"#,
                "[".repeat(100_000),
                "]".repeat(100_000)
            )
            .into_bytes(),
            reason: "recursion limit exceeded",
        },
        Case {
            what: "a number past f64",
            line: br#"{"event": {"id": "n", "type": "x", "contactId": "c1", "occurredAt": "2026-03-03T00:00:00Z", "attrs": {"n": 1e999}}}"#.to_vec(),
            reason: "number out of range",
        },
        Case {
            what: "an integer past uint32",
            line: line(&command("marketer", json!({"putSpec": bad_version}))),
            reason: "`99999999999` is not a value this field holds: a uint32, 0 to 4294967295",
        },
        Case {
            what: "an unknown field",
            line: br#"{"event": {"id": "u", "type": "x", "contactId": "c1", "occurredAt": "2026-03-03T00:00:00Z", "colour": "red"}}"#.to_vec(),
            reason: "unknown field `colour`",
        },
        Case {
            what: "a command for an unknown campaign",
            line: line(&command("ops", json!({"launch": "no-such-campaign"}))),
            reason: "unknown campaign `no-such-campaign`",
        },
        Case {
            what: "an approval by the author",
            line: line(&command(
                "alice",
                json!({"approve": {"campaignId": "selfie", "version": 1}}),
            )),
            reason: "`alice` wrote version 1 of `selfie` and cannot review it",
        },
        Case {
            what: "a CEL chain of 24000 terms (96 KB)",
            line: line(&command(
                "marketer",
                json!({"putSpec": spec("chain", &format!("{chain} > 0"), "true")}),
            )),
            reason: "CEL over the limits: the expression is 96001 bytes long, more than the limit of 16384",
        },
        Case {
            what: "a CEL chain of 5000 terms (10 KB)",
            line: line(&command(
                "marketer",
                json!({"putSpec": spec("short-chain", &format!("{} > 0", vec!["1"; 5000].join("+")), "true")}),
            )),
            reason: "CEL over the limits: the expression nests 5001 levels deep, more than the limit of 64",
        },
        Case {
            what: "CEL nested 10000 deep",
            line: line(&command(
                "marketer",
                json!({"putSpec": spec("deep", "true", &deep_cel)}),
            )),
            reason: "CEL over the limits",
        },
        Case {
            what: "a condition naming no variable that always costs too much",
            line: line(&command(
                "marketer",
                json!({"putSpec": spec("constant", &format!("{}.all(a, {}.all(b, true))", ones(1000), ones(1000)), "true")}),
            )),
            reason: "audience.filter: cost limit exceeded: the evaluation would cost more than 100000 units",
        },
        Case {
            what: "a duration of i64::MAX seconds",
            line: line(&command("marketer", json!({"putSpec": eternal}))),
            reason: "must be at most 36525 days (100 years), got 9223372036854775807s",
        },
        Case {
            what: "an event dated in year 2100",
            line: line(&event("far", "c1", "2100-01-01T00:00:00Z")),
            reason: "ahead of the wall clock",
        },
        Case {
            what: "an event dated in year 9999",
            line: line(&event("farther", "c1", "9999-12-31T23:59:59Z")),
            reason: "(up to 100 years later) must stay within year 9999",
        },
    ]
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut text = Vec::new();
    for l in lines {
        text.extend_from_slice(l);
        text.push(b'\n');
    }
    std::fs::write(path, text).unwrap();
}

fn dir_size(path: &Path) -> u64 {
    std::fs::read_dir(path)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let meta = e.metadata().unwrap();
            if meta.is_dir() {
                dir_size(&e.path())
            } else {
                meta.len()
            }
        })
        .sum()
}

fn canvass(args: &[&str]) -> Bounded {
    let args: Vec<String> = args.iter().map(ToString::to_string).collect();
    run_bounded(&args, LIMIT, MAX_RSS_MIB)
}

/// Every bad line is a dead letter (or a refused command) with its reason, in input order;
/// the costly conditions fail per contact with the cost limit, the 10,000-state spec loads,
/// and the line after them all is applied: the stream went on. Bounded in time and memory,
/// and the 50 MB line is not kept whole.
#[test]
fn every_bad_line_is_a_dead_letter_with_its_reason_and_the_stream_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    // Over the contact and the event, so that they are bounded as they run (a condition
    // naming no variable is judged at validation, tested below).
    let r = ones(60);
    let nested = format!(
        "size(contact.id) > 0 && {r}.all(a, {r}.all(b, {r}.all(c, {r}.all(d, a + b + c + d > 0))))"
    );
    let explosion = format!(
        "size(event.id) > 0 && size({}.map(a, {})) > 0",
        ones(1000),
        ones(1000)
    );
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for v in loaded(spec("costly-audience", &nested, "true"), "marketer")
        .into_iter()
        .chain(loaded(spec("costly-guard", "true", &explosion), "marketer"))
    {
        lines.push(line(&v));
    }
    // A campaign its author will try to approve.
    lines.push(line(&command(
        "alice",
        json!({"putSpec": spec("selfie", "true", "true")}),
    )));
    lines.push(line(&command(
        "alice",
        json!({"submit": {"campaignId": "selfie", "version": 1}}),
    )));
    for c in ["c1", "c2", "c3"] {
        lines.push(line(&json!({"at": LAUNCH, "contact": {"id": c}})));
    }
    for id in ["costly-audience", "costly-guard"] {
        lines.push(line(&command("ops", json!({"launch": id}))));
    }
    for (i, c) in ["c1", "c2", "c3"].iter().enumerate() {
        lines.push(line(&event(&format!("e{i}"), c, "2026-03-02T10:00:00Z")));
    }
    let cases = cases();
    lines.extend(cases.iter().map(|c| c.line.clone()));
    lines.push(line(&command(
        "marketer",
        json!({"putSpec": long_spec(10_000)}),
    )));
    lines.push(line(&json!({"at": LAUNCH, "contact": {"id": "c-last"}})));
    let input = dir.path().join("input.jsonl");
    write_lines(&input, &lines);
    let data = dir.path().join("data");
    let actions = dir.path().join("actions.jsonl");
    let run = run_bounded(
        &canvass_tests::event_clock_run(&data, &input, &actions),
        LIMIT,
        MAX_RSS_MIB,
    );
    assert!(run.status.success(), "{}", run.stderr);
    eprintln!("peak RSS {} MiB", run.peak_rss_kib / 1024);

    let store = canvass_tests::store(&data);
    let letters = store.dead_letters().unwrap();
    assert_eq!(
        letters.len(),
        cases.len(),
        "one dead letter per bad line: {:#?}",
        letters.iter().map(|l| &l.reason).collect::<Vec<_>>()
    );
    for (case, letter) in cases.iter().zip(&letters) {
        assert!(
            letter.reason.contains(case.reason),
            "{}: the reason is `{}`",
            case.what,
            letter.reason
        );
    }
    let huge = &letters[2];
    assert_eq!(
        huge.payload.len(),
        4096,
        "the 50 MB line is kept as its first 4096 bytes"
    );
    // Every contact's audience filter ran out of budget, and so did the guard on each event.
    for id in ["costly-audience", "costly-guard"] {
        assert_eq!(store.counters(id).unwrap().condition_failures, 3, "{id}");
    }
    assert_eq!(store.counters("costly-guard").unwrap().enrollments, 3);
    assert!(
        store
            .specs()
            .unwrap()
            .iter()
            .any(|s| s.id == "long" && s.states.len() == 10_000),
        "the 10,000-state spec is loaded"
    );
    assert!(
        store.contact(0, "c-last").unwrap().is_some(),
        "the stream went on"
    );
    drop(store);
    let size = dir_size(&data);
    assert!(
        size < 48 * 1024 * 1024,
        "the data directory holds {size} bytes"
    );

    // `simulate` says why each costly condition failed.
    let costly = dir.path().join("costly.json");
    std::fs::write(
        &costly,
        spec("costly-audience", &nested, "true").to_string(),
    )
    .unwrap();
    let contacts = dir.path().join("contacts.jsonl");
    std::fs::write(&contacts, "{\"id\":\"c1\"}\n").unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(&events, "").unwrap();
    let sim = canvass(&[
        "simulate",
        "--spec",
        costly.to_str().unwrap(),
        "--contacts",
        contacts.to_str().unwrap(),
        "--events",
        events.to_str().unwrap(),
        "--start",
        LAUNCH,
    ]);
    assert!(sim.status.success(), "{}", sim.stderr);
    assert!(
        sim.stderr.contains(
            "audience.filter: cost limit exceeded: the evaluation would cost more than 100000 units"
        ),
        "{}",
        sim.stderr
    );
}

/// `canvass validate` refuses the hostile specs with a clear error and an exit status,
/// instead of aborting; the 10,000-state spec validates in bounded time.
#[test]
fn validate_refuses_hostile_specs_instead_of_crashing() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, spec: &Value| {
        let path = dir.path().join(name);
        std::fs::write(&path, spec.to_string()).unwrap();
        path.to_str().unwrap().to_string()
    };
    let chain = write(
        "chain.json",
        &spec(
            "chain",
            &format!("{} > 0", vec!["1"; 400_000].join("+")),
            "true",
        ),
    );
    let deep = write(
        "deep.json",
        &spec(
            "deep",
            "true",
            &format!("{}true{}", "[".repeat(100_000), "]".repeat(100_000)),
        ),
    );
    for path in [&chain, &deep] {
        let out = canvass(&["validate", path]);
        assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
        assert!(out.stderr.contains("CEL over the limits"), "{}", out.stderr);
    }
    // 16,000 stray characters: 16,000 lexer errors, of which one is said (formatting them all
    // copied the line each time: hundreds of megabytes).
    let stray = write("stray.json", &spec("stray", &"#".repeat(16_000), "true"));
    let out = canvass(&["validate", &stray]);
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    assert!(
        out.stderr.contains("invalid CEL: line 1 column"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.len() < 2000,
        "{} bytes of errors",
        out.stderr.len()
    );
    let long = write("long.json", &long_spec(10_000));
    let out = canvass(&["validate", &long]);
    assert!(out.status.success(), "{}", out.stderr);
    // 100,000 states chained by unguarded immediate transitions, the last three in a
    // cycle: found in time linear in the states (walking the chain from every state took
    // minutes).
    let n = 100_000;
    let states: Vec<Value> = (0..n)
        .map(|i| {
            let to = if i + 1 == n { n - 3 } else { i + 1 };
            json!({"id": format!("s{i}"), "transitions": [{"to": format!("s{to}"), "immediately": {}}]})
        })
        .collect();
    let chain = write(
        "immediate.json",
        &json!({"id": "chain", "version": 1, "name": "chain", "initialState": "s0", "states": states}),
    );
    // A minute, with room for a busy machine: walking the chain from every state (what
    // validation did before) took about two here.
    let out = run_bounded(
        &["validate".to_string(), chain],
        Duration::from_secs(60),
        MAX_RSS_MIB,
    );
    assert_eq!(out.status.code(), Some(2), "{}", out.stderr);
    let cycle: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.contains("form a cycle"))
        .collect();
    assert_eq!(cycle.len(), 3, "{}", out.stderr);
    assert!(
        cycle[0].contains(&format!("states.s{}:", n - 3)),
        "{cycle:?}"
    );
    // The reference campaign is still valid.
    let reference = example("campaign.json");
    let out = canvass(&["validate", reference.to_str().unwrap()]);
    assert!(out.status.success(), "{}", out.stderr);
}
