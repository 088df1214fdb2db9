//! The durable engine on a real sled store on disk: replay rebuilds the projections byte for
//! byte, batching does not matter under the event clock, bad input is parked, duplicates
//! are ignored, and a damaged log is reported with its sequence number.

#![allow(clippy::unwrap_used)]

use canvass_core::UnixMillis;
use canvass_engine::durable::{ClockMode, Engine, EngineOptions, Incoming, Sourced};
use canvass_proto::{json, v1};
use canvass_store::{Store, StoreOptions};

fn example(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/../../examples/reference/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

const LAUNCH: &str = "2026-03-02T09:00:00Z";

fn record(text: &str) -> Sourced {
    let incoming = match json::from_str::<v1::IngestRecord>(text) {
        Ok(r) => Incoming::Record(Box::new(r)),
        Err(e) => Incoming::Malformed {
            payload: text.as_bytes().to_vec(),
            key: Vec::new(),
            reason: e.to_string(),
        },
    };
    Sourced {
        incoming,
        position: None,
        caller: None,
    }
}

fn command(actor: &str, json_command: &str) -> String {
    format!(r#"{{"at": "{LAUNCH}", "command": {{"actor": "{actor}", {json_command}}}}}"#)
}

/// Loads a spec version and takes it through approval to launch, each step by its own actor.
fn publish(lines: &mut Vec<String>, spec: &str, id: &str, version: u32) {
    let version_ref = format!(r#"{{"campaignId": "{id}", "version": {version}}}"#);
    lines.push(command("marketer", &format!(r#""putSpec": {spec}"#)));
    lines.push(command("marketer", &format!(r#""submit": {version_ref}"#)));
    lines.push(command("manager", &format!(r#""approve": {version_ref}"#)));
}

/// The reference campaign as an input stream; `v2_after` puts a second version of the
/// campaign in after that many events, one that takes over the contacts waiting in `no_reply`.
fn stream(v2_after: Option<usize>) -> Vec<String> {
    let mut lines = Vec::new();
    publish(
        &mut lines,
        &example("survey.json"),
        "b-improvement-survey",
        1,
    );
    lines.push(command("ops", r#""launch": "b-improvement-survey""#));
    publish(&mut lines, &example("campaign.json"), "b-trial-invite", 1);
    for c in example("contacts.jsonl").lines() {
        lines.push(format!(r#"{{"at": "{LAUNCH}", "contact": {c}}}"#));
    }
    lines.push(command("ops", r#""launch": "b-trial-invite""#));
    for (i, e) in example("events.jsonl").lines().enumerate() {
        if Some(i) == v2_after {
            let v2 = example("campaign.json")
                .replace(r#""version": 1"#, r#""version": 2, "migrations": [{"fromVersion": 1, "states": {"no_reply": "no_reply"}}]"#)
                .replace("b-trial-letter", "b-trial-letter-v2");
            publish(&mut lines, &v2, "b-trial-invite", 2);
            lines.push(command("ops", r#""launch": "b-trial-invite""#));
        }
        lines.push(if e.starts_with('{') {
            format!(r#"{{"event": {e}}}"#)
        } else {
            e.to_string()
        });
    }
    lines
}

type Dump = Vec<(Vec<u8>, Vec<u8>)>;

/// Asserts two projection dumps are equal, naming the first key that differs.
fn assert_same(a: &Dump, b: &Dump) {
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    for (x, y) in a.iter().zip(b) {
        assert!(x.0 == y.0, "keys differ: {} vs {}", show(&x.0), show(&y.0));
        if x.1 != y.1 && x.0[0] == b'C' {
            use prost::Message;
            let (l, r) = (
                v1::ContactState::decode(&x.1[..]).unwrap(),
                v1::ContactState::decode(&y.1[..]).unwrap(),
            );
            panic!("contact {} differs:\n{l:?}\n{r:?}", show(&x.0));
        }
        assert!(x.1 == y.1, "values differ under {}", show(&x.0));
    }
    assert_eq!(a.len(), b.len(), "one dump has more keys");
}

/// Three partitions placed by murmur2: the layout, and what opening asks for.
fn three_partitions() -> (canvass_store::Layout, canvass_store::Wanted) {
    let layout = canvass_store::Layout {
        partitions: 3,
        partitioner: canvass_core::partition::Partitioner::Murmur2,
    };
    let wanted = canvass_store::Wanted {
        partitions: Some(3),
        partitioner: None,
    };
    (layout, wanted)
}

/// The lines as a source reads them: each with its position in `source`.
fn from_source(source: &str, lines: &[String]) -> Vec<Sourced> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| Sourced {
            position: Some(v1::SourcePosition {
                source: source.into(),
                offset: i as u64,
                next_offset: i as u64 + 1,
            }),
            ..record(line)
        })
        .collect()
}

/// Asserts that two data directories hold the same projections and the same log in each
/// partition: every input applied once, in the same place.
fn assert_same_partitions(clean: &canvass_store::Stores, crashed: &canvass_store::Stores) {
    for (p, (a, b)) in clean.iter().zip(crashed.iter()).enumerate() {
        let (a, b) = (a.projection_dump().unwrap(), b.projection_dump().unwrap());
        assert!(a.len() == b.len(), "partition {p}: the key counts differ");
        assert_same(&a, &b);
    }
    for (p, (a, b)) in clean.iter().zip(crashed.iter()).enumerate() {
        let log = |s: &Store| -> Vec<v1::LogEntry> { s.log_from(1).map(Result::unwrap).collect() };
        assert_eq!(
            log(a),
            log(b),
            "partition {p}: each input logged once, in its place"
        );
    }
}

fn options() -> EngineOptions {
    EngineOptions {
        clock: ClockMode::Event,
        ..EngineOptions::default()
    }
}

/// Runs the stream in batches of `batch` inputs, delivering actions after each commit.
fn run(dir: &std::path::Path, lines: &[String], batch: usize) -> (Store, Vec<v1::Action>) {
    run_with(dir, lines, batch, true)
}

/// Runs the stream in batches; delivers after every commit, or only once at the end (the
/// acknowledgements are log entries too, so delivering more often makes more of them).
fn run_with(
    dir: &std::path::Path,
    lines: &[String],
    batch: usize,
    deliver_each_commit: bool,
) -> (Store, Vec<v1::Action>) {
    let store = Store::open(dir, StoreOptions::default()).unwrap();
    let mut engine = Engine::open(store.clone(), options()).unwrap();
    let mut delivered = Vec::new();
    let chunks: Vec<&[String]> = lines.chunks(batch).collect();
    for (i, chunk) in chunks.iter().enumerate() {
        engine
            .ingest(chunk.iter().map(|l| record(l)).collect(), UnixMillis(0))
            .unwrap();
        if deliver_each_commit || i + 1 == chunks.len() {
            engine
                .dispatch(usize::MAX, &mut |actions| {
                    delivered.extend_from_slice(actions);
                    Ok(())
                })
                .unwrap();
        }
    }
    (store, delivered)
}

#[test]
fn replay_rebuilds_the_projections_byte_for_byte_across_a_version_change() {
    let dir = tempfile::tempdir().unwrap();
    let (store, actions) = run(dir.path(), &stream(Some(150)), 37);
    let live = store.projection_dump().unwrap();
    // Both versions are in use: contacts stay on the version they entered with.
    assert!(actions.iter().any(|a| a.campaign_version == 1));
    let v2 = store
        .specs()
        .unwrap()
        .iter()
        .filter(|s| s.id == "b-trial-invite")
        .count();
    assert_eq!(v2, 2);

    let applied = Engine::replay(&store, options()).unwrap();
    assert_eq!(applied, store.last_seq().unwrap());
    let rebuilt = store.projection_dump().unwrap();
    assert_same(&live, &rebuilt);
}

#[test]
fn under_the_event_clock_batching_does_not_change_anything() {
    let lines = stream(None);
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (one, actions_one) = run_with(a.path(), &lines, 1, false);
    let (many, actions_many) = run_with(b.path(), &lines, 500, false);
    assert_same(
        &one.projection_dump().unwrap(),
        &many.projection_dump().unwrap(),
    );
    assert_eq!(actions_one, actions_many);
    let log = |s: &Store| s.log_from(1).collect::<Result<Vec<_>, _>>().unwrap();
    assert_eq!(log(&one), log(&many));
}

#[test]
fn the_store_holds_what_the_simulation_computes() {
    let dir = tempfile::tempdir().unwrap();
    let (store, actions) = run(dir.path(), &stream(None), 64);
    let invite = store.counters("b-trial-invite").unwrap();
    assert_eq!(invite.enrollments, 172);
    assert_eq!(invite.goals, 56);
    assert_eq!(invite.cost, "3094.84");
    // Every action went to a sink that reports no outcome: handed off, none confirmed.
    let handed_off: u64 = invite.kinds.values().map(|k| k.handed_off).sum();
    assert_eq!((invite.delivered, handed_off), (0, invite.actions));
    // Group membership is a range scan.
    let high: Vec<String> = store
        .group_members("b-trial-invite", "rated_high")
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(high.len(), 56);
    assert!(high.windows(2).all(|w| w[0] < w[1]));
    // Keys are unique, and nothing is left undelivered.
    let keys: std::collections::HashSet<&str> =
        actions.iter().map(|a| a.idempotency_key.as_str()).collect();
    assert_eq!(keys.len(), actions.len());
    assert!(store.outbox(10).unwrap().is_empty());
    // No timer row is left behind: only the four 30-day timeouts not yet due when the
    // stream ends (contacts who confirmed late and never rated) are armed.
    let armed: Vec<_> = store.timers(None).collect::<Result<_, _>>().unwrap();
    assert_eq!(armed.len(), 4, "{armed:?}");
    // The three malformed lines and the one duplicate were not applied; the malformed ones
    // are parked with their reasons.
    let letters = store.dead_letters().unwrap();
    assert_eq!(letters.len(), 3);
    assert!(
        letters[0].reason.contains("required")
            || letters.iter().any(|l| l.reason.contains("occurredAt")),
        "{letters:?}"
    );
}

#[test]
fn bad_commands_are_parked_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let bad_spec = example("campaign.json").replace(r#""to": "lapsed""#, r#""to": "nowhere""#);
    let lines = vec![
        command("ops", r#""launch": "ghost""#),
        command("marketer", &format!(r#""putSpec": {bad_spec}"#)),
    ];
    let (store, _) = run(dir.path(), &lines, 10);
    let letters = store.dead_letters().unwrap();
    assert_eq!(letters.len(), 2);
    assert_eq!(letters[0].reason, "unknown campaign `ghost`");
    assert!(
        letters[1]
            .reason
            .contains("states.no_reply.transitions[1].to: unknown state `nowhere`"),
        "{}",
        letters[1].reason
    );
    assert_eq!(
        store.last_seq().unwrap(),
        0,
        "rejected commands are not in the log"
    );
}

#[test]
fn a_damaged_log_entry_is_reported_with_its_sequence_number() {
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let lines = stream(None);
    {
        let _ = run(dir.path(), &lines[..5], 5);
    }
    // Damage entry 3 and give entry 4 a future schema version, with sled itself.
    {
        // The store closed a moment ago may still hold sled's lock while its threads wind down.
        let started = std::time::Instant::now();
        let db = loop {
            match sled::open(dir.path()) {
                Ok(db) => break db,
                Err(e) if started.elapsed() < std::time::Duration::from_secs(5) => {
                    eprintln!("retrying: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => panic!("{e}"),
            }
        };
        // The five entries went in one commit: one frame, stored under the first entry's seq.
        let key = [&[b'L'][..], &1u64.to_be_bytes()].concat();
        let mut frame = v1::LogFrame::decode(db.get(&key).unwrap().unwrap().as_ref()).unwrap();
        assert_eq!(frame.entries.len(), 5);
        frame.entries[2] = b"\xff\xff not protobuf".to_vec();
        let mut e4 = v1::LogEntry::decode(frame.entries[3].as_slice()).unwrap();
        e4.schema_version = 99;
        frame.entries[3] = e4.encode_to_vec();
        db.insert(&key, frame.encode_to_vec()).unwrap();
        db.flush().unwrap();
    }
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let errors: Vec<String> = store
        .log_from(1)
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    assert!(
        errors[0].starts_with("log entry 3: does not decode"),
        "{errors:?}"
    );
    assert_eq!(
        errors[1],
        "log entry 4 has schema version 99; this engine reads version 1"
    );
    assert!(
        Engine::replay(&store, options())
            .unwrap_err()
            .to_string()
            .starts_with("log entry 3")
    );
}

#[test]
fn the_lifecycle_is_enforced_and_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let spec = example("survey.json");
    let r = r#"{"campaignId": "b-improvement-survey", "version": 1}"#;
    let lines = vec![
        command("marketer", &format!(r#""putSpec": {spec}"#)),
        command("ops", r#""launch": "b-improvement-survey""#),
        command("marketer", &format!(r#""approve": {r}"#)),
        command("marketer", &format!(r#""submit": {r}"#)),
        command("marketer", &format!(r#""approve": {r}"#)),
        command("manager", &format!(r#""reject": {r}"#)),
        command("manager", &format!(r#""approve": {r}"#)),
        command("ops", r#""resume": "b-improvement-survey""#),
        command("ops", r#""launch": "b-improvement-survey""#),
        command("ops", r#""pause": "b-improvement-survey""#),
        command("", r#""resume": "b-improvement-survey""#),
        command("ops", r#""stop": "b-improvement-survey""#),
        command("ops", r#""launch": "b-improvement-survey""#),
    ];
    let (store, _) = run(dir.path(), &lines, 3);
    let reasons: Vec<String> = store
        .dead_letters()
        .unwrap()
        .into_iter()
        .map(|l| l.reason)
        .collect();
    assert_eq!(
        reasons,
        [
            "campaign `b-improvement-survey` has no approved version to launch",
            "version 1 of `b-improvement-survey` is not awaiting approval",
            "`marketer` wrote version 1 of `b-improvement-survey` and cannot review it: another person must",
            "field `reason`: required to reject",
            "campaign `b-improvement-survey` is APPROVED: cannot resume",
            "field `actor`: required",
            "campaign `b-improvement-survey` is STOPPED: cannot launch",
        ]
    );
    let l = store.lifecycle("b-improvement-survey").unwrap().unwrap();
    assert_eq!(l.status(), v1::CampaignStatus::Stopped);
    let history: Vec<String> = l
        .history
        .iter()
        .map(|h| format!("{} by {}", h.change, h.actor))
        .collect();
    assert_eq!(
        history,
        [
            "put v1 by marketer",
            "submit v1 by marketer",
            "approve v1 by manager",
            "launch v1 by ops",
            "pause by ops",
            "stop by ops"
        ]
    );
    assert_eq!(l.versions[0].reviewer, "manager");
}

/// The invitation campaign launched over `contacts` contacts, every other one in its
/// audience (bought A), then, in `after_launch`, what follows the launch.
fn many_contacts(contacts: usize, after_launch: &[String]) -> Vec<String> {
    let mut lines = Vec::new();
    publish(&mut lines, &example("campaign.json"), "b-trial-invite", 1);
    for i in 0..contacts {
        let product = if i % 2 == 0 { "A" } else { "B" };
        lines.push(format!(
            r#"{{"at": "{LAUNCH}", "contact": {{"id": "m-{i:05}", "purchases": [{{"product": "{product}", "amount": "10", "at": "2025-01-01T00:00:00Z"}}]}}}}"#
        ));
    }
    lines.push(command("ops", r#""launch": "b-trial-invite""#));
    lines.extend_from_slice(after_launch);
    lines
}

fn is_launch(entry: &v1::LogEntry) -> bool {
    let Some(v1::log_entry::Input::Command(c)) = &entry.input else {
        return false;
    };
    matches!(c.command, Some(v1::campaign_command::Command::Launch(_)))
}

fn log_of(store: &Store) -> Vec<v1::LogEntry> {
    store.log_from(1).collect::<Result<_, _>>().unwrap()
}

#[test]
fn a_launch_over_many_contacts_goes_in_slices_before_the_next_input() {
    // 10,000 contacts: the launch's own entry steps the first 4096, two sweep steps the
    // rest (4096, then 1808). An event for the last contact comes in the same batch.
    let confirmed = r#"{"event": {"id": "e-last", "type": "trial.confirmed", "contactId": "m-09998", "occurredAt": "2026-03-02T10:00:00Z"}}"#;
    let lines = many_contacts(10_000, &[confirmed.to_string()]);
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = run(dir.path(), &lines, lines.len());

    let log = log_of(&store);
    let launch = log.iter().position(is_launch).unwrap();
    let steps: Vec<&v1::SweepStep> = log[launch + 1..]
        .iter()
        .map_while(|e| match &e.input {
            Some(v1::log_entry::Input::SweepStep(s)) => Some(s),
            _ => None,
        })
        .collect();
    assert_eq!(steps.len(), 2, "two sweep steps follow the launch");
    assert_eq!(
        (
            steps[0].sweep.as_ref().unwrap().after.as_str(),
            steps[0].through.as_str()
        ),
        ("m-04095", "m-08191")
    );
    assert_eq!(
        (
            steps[1].sweep.as_ref().unwrap().after.as_str(),
            steps[1].through.as_str()
        ),
        ("m-08191", "m-09999")
    );
    assert!(
        matches!(&log[launch + 3].input, Some(v1::log_entry::Input::Event(e)) if e.id == "e-last"),
        "the event comes after the sweep"
    );
    assert!(store.sweeps().unwrap().is_empty(), "the sweep is over");
    // Every contact in the audience enrolled, and the event found the last one inside.
    assert_eq!(store.counters("b-trial-invite").unwrap().enrollments, 5_000);
    let last = store.contact(0, "m-09998").unwrap().unwrap();
    assert_eq!(last.campaigns[0].state, "confirmed");
    // Replay takes the same slices.
    let live = store.projection_dump().unwrap();
    Engine::replay(&store, options()).unwrap();
    assert_same(&live, &store.projection_dump().unwrap());
}

#[test]
fn a_crash_in_the_middle_of_a_sweep_ends_where_a_clean_run_ends() {
    let lines = many_contacts(9_000, &[]);
    let (clean_dir, crashed_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let clean = Store::open(clean_dir.path(), StoreOptions::default()).unwrap();
    Engine::open(clean.clone(), options())
        .unwrap()
        .ingest(lines.iter().map(|l| record(l)).collect(), UnixMillis(0))
        .unwrap();

    // A crash right after the launch's commit: the log ends with the launch, and no
    // projection reached sled (they wait for a checkpoint).
    let log = log_of(&clean);
    let launch = log.iter().position(is_launch).unwrap();
    assert_eq!(
        log.len(),
        launch + 3,
        "the launch and two sweep steps end the log"
    );
    let crashed = Store::open(crashed_dir.path(), StoreOptions::default()).unwrap();
    let mut batch = canvass_store::WriteBatch::new();
    for entry in &log[..=launch] {
        batch.append_log(entry);
    }
    crashed.commit(batch).unwrap();

    // The restart applies the log (the launch's first slice, the sweep recorded), and the
    // next call finishes the sweep before anything else.
    let mut engine = Engine::open(crashed.clone(), options()).unwrap();
    assert_eq!(crashed.sweeps().unwrap().len(), 1, "a sweep is in progress");
    engine.tick(UnixMillis(0)).unwrap();
    assert!(
        log_of(&crashed) == log,
        "the entries differ from the clean run's"
    );
    assert_same(
        &clean.projection_dump().unwrap(),
        &crashed.projection_dump().unwrap(),
    );
}

/// Under the event clock a command is decided at its own time, refused or accepted: the
/// audit record of a refusal does not carry the wall clock.
#[test]
fn a_refused_command_is_decided_at_its_own_time_under_the_event_clock() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let mut engine = Engine::open(
        store,
        EngineOptions {
            clock: ClockMode::Event,
            publish: true,
            ..EngineOptions::default()
        },
    )
    .unwrap();
    let lines = [
        command(
            "marketer",
            &format!(r#""putSpec": {}"#, example("survey.json")),
        ),
        command("ops", r#""launch": "no-such-campaign""#),
    ];
    // A wall clock far from the commands' time.
    let wall = UnixMillis(4_000_000_000_000);
    engine
        .ingest(lines.iter().map(|l| record(l)).collect(), wall)
        .unwrap();
    let mut results = Vec::new();
    engine
        .publish(10, &mut |queued| {
            for (_, p) in queued {
                if let Some(v1::publication::Kind::CommandResult(r)) = &p.kind {
                    results.push(r.clone());
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(results.len(), 2);
    assert!(results[0].accepted && !results[1].accepted);
    let launch = canvass_proto::wkt::Timestamp::parse(LAUNCH).unwrap();
    for r in &results {
        assert_eq!(r.decided_at, Some(launch), "{r:?}");
    }
}

/// Moving the event clock on at the end of the input fires every timer due, those the
/// firings arm included, in commits of at most `ADVANCE_SLICE` timers; a replay rebuilds
/// the same projections, and advancing again fires nothing twice.
#[test]
fn advancing_the_event_clock_fires_what_is_due_in_slices_and_replays_the_same() {
    use canvass_engine::durable::ADVANCE_SLICE;
    // 5,000 enrolled contacts, each with a no-reply timeout (and timeouts after it).
    let lines = many_contacts(10_000, &[]);
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = run(dir.path(), &lines, lines.len());
    let armed = store.timers(None).count();
    assert!(armed > ADVANCE_SLICE, "{armed} timers armed");
    let mut engine = Engine::open(store.clone(), options()).unwrap();
    let end = log_of(&store).len();
    let far = UnixMillis::from_proto(
        &canvass_proto::wkt::Timestamp::parse("2027-01-01T00:00:00Z").unwrap(),
    );
    let report = engine.advance_to(far).unwrap();
    assert!(
        report.timers_fired as usize > armed,
        "later timeouts fired too"
    );
    assert_eq!(
        store.timers(None).count(),
        0,
        "nothing due before then is left"
    );
    // Each fired timer is one entry, at its due time, never after `far`.
    let fired: Vec<v1::LogEntry> = log_of(&store).split_off(end);
    assert_eq!(fired.len() as u64, report.timers_fired);
    assert!(
        fired
            .iter()
            .all(|e| matches!(e.input, Some(v1::log_entry::Input::TimerFired(_))))
    );
    let mut last = 0;
    for e in &fired {
        let at = UnixMillis::from_proto(e.applied_at.as_ref().unwrap());
        assert!(at.0 >= last && at <= far, "in due order, within the bound");
        last = at.0;
    }
    let again = engine.advance_to(far).unwrap();
    assert_eq!(again.timers_fired, 0);
    let live = store.projection_dump().unwrap();
    Engine::replay(&store, options()).unwrap();
    assert_same(&live, &store.projection_dump().unwrap());
}

/// The log holds inputs only: read from a file (with source positions) in commits of one
/// input or of many, it has the same entries, none without an input, and the stored offset
/// covers the last line even when that line was a duplicate or a dead letter, which no log
/// entry records. A replay leaves the offset where the commits put it.
#[test]
fn the_log_holds_the_same_inputs_whatever_the_batches_and_positions_go_with_the_commit() {
    let mut lines = stream(None);
    // The input ends with a duplicate of its last event and a line that is not JSON.
    let last_event = lines
        .iter()
        .rev()
        .find(|l| l.starts_with(r#"{"event""#) && l.contains("contactId"))
        .unwrap()
        .clone();
    lines.push(last_event);
    lines.push("not json".to_string());
    let sourced = |lines: &[String]| -> Vec<Sourced> {
        let mut offset = 0u64;
        lines
            .iter()
            .map(|l| {
                let next = offset + l.len() as u64 + 1;
                let mut s = record(l);
                s.position = Some(v1::SourcePosition {
                    source: "file:stream.jsonl".into(),
                    offset,
                    next_offset: next,
                });
                offset = next;
                s
            })
            .collect()
    };
    let end = lines.iter().map(|l| l.len() as u64 + 1).sum::<u64>();
    let logs: Vec<Vec<v1::LogEntry>> = [1, 16, 4096]
        .iter()
        .map(|batch| {
            let dir = tempfile::tempdir().unwrap();
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            let mut engine = Engine::open(store.clone(), options()).unwrap();
            let inputs = sourced(&lines);
            let mut rest = inputs.into_iter().peekable();
            while rest.peek().is_some() {
                let chunk: Vec<Sourced> = rest.by_ref().take(*batch).collect();
                engine.ingest(chunk, UnixMillis(0)).unwrap();
            }
            assert_eq!(store.offset("file:stream.jsonl").unwrap(), Some(end));
            let log = log_of(&store);
            assert!(log.iter().all(|e| e.input.is_some()), "batch {batch}");
            drop(engine);
            Engine::replay(&store, options()).unwrap();
            assert_eq!(store.offset("file:stream.jsonl").unwrap(), Some(end));
            log
        })
        .collect();
    assert_eq!(logs[0], logs[1]);
    assert_eq!(logs[0], logs[2]);
}

const WAIT_FOR_REPLY: &str = r#"{"id": "reply", "version": 1, "initialState": "waiting",
  "audience": {"filter": "contact.id == 'c1'"},
  "states": [
    {"id": "waiting", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "ask"}],
     "transitions": [{"to": "replied", "onEvent": {"type": "reply"}}, {"to": "lapsed", "after": "3600s"}]},
    {"id": "replied", "terminal": true, "goal": true},
    {"id": "lapsed", "terminal": true}
  ]}"#;

/// c1 is asked at 09:00 and has an hour to reply. It replies at 09:30, but the reply arrives
/// after an event of c2 dated 10:30. With no lateness allowed the timeout fired at 10:30 and
/// the reply is late; with two hours allowed the timeout waits and the reply wins; with 45
/// minutes the reply is late (an hour behind the clock) but the timeout has not fired yet,
/// so it still wins. The simulation and a durable run agree, and a replay counts the same.
#[test]
fn an_allowed_lateness_lets_an_event_dated_before_a_deadline_win() {
    let spec: serde_json::Value = serde_json::from_str(WAIT_FOR_REPLY).unwrap();
    let mut lines = Vec::new();
    publish(&mut lines, &spec.to_string(), "reply", 1);
    for c in ["c1", "c2"] {
        lines.push(format!(
            r#"{{"at": "{LAUNCH}", "contact": {{"id": "{c}"}}}}"#
        ));
    }
    lines.push(command("ops", r#""launch": "reply""#));
    let event = |id: &str, kind: &str, contact: &str, at: &str| {
        format!(
            r#"{{"event": {{"id": "{id}", "type": "{kind}", "contactId": "{contact}", "occurredAt": "{at}"}}}}"#
        )
    };
    lines.push(event("e1", "ping", "c2", "2026-03-02T10:30:00Z"));
    lines.push(event("e2", "reply", "c1", "2026-03-02T09:30:00Z"));
    let state_of = |store: &Store| {
        store.contact(0, "c1").unwrap().unwrap().campaigns[0]
            .state
            .clone()
    };
    for (minutes, state, late) in [(0, "lapsed", 1), (120, "replied", 0), (45, "replied", 1)] {
        let options = EngineOptions {
            allowed_lateness: canvass_core::SpanMillis(minutes * 60_000),
            ..options()
        };
        let mut sim = canvass_engine::Simulation::new(options.clone()).unwrap();
        sim.ingest(lines.iter().map(|l| record(l)).collect())
            .unwrap();
        let store = sim.engine().stores().partition(0);
        assert_eq!(state_of(store), state, "simulated, lateness {minutes} min");
        assert_eq!(store.input_counters().unwrap().late_events, late);

        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let mut engine = Engine::open(store.clone(), options.clone()).unwrap();
        for l in &lines {
            engine.ingest(vec![record(l)], UnixMillis(0)).unwrap();
        }
        assert_eq!(state_of(&store), state, "run, lateness {minutes} min");
        let live = store.projection_dump().unwrap();
        drop(engine);
        Engine::replay(&store, options).unwrap();
        assert_same(&live, &store.projection_dump().unwrap());
        assert_eq!(store.input_counters().unwrap().late_events, late);
    }
}

/// Under the wall clock the lateness delays a timer past its due time, and the timer is
/// applied at the wall time it fires at: the log's times never go back.
#[test]
fn under_the_wall_clock_a_lateness_delays_timers_without_dating_them_back() {
    let spec: serde_json::Value = serde_json::from_str(WAIT_FOR_REPLY).unwrap();
    let mut lines = Vec::new();
    publish(&mut lines, &spec.to_string(), "reply", 1);
    lines.push(format!(
        r#"{{"at": "{LAUNCH}", "contact": {{"id": "c1"}}}}"#
    ));
    lines.push(command("ops", r#""launch": "reply""#));
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let launch = UnixMillis::from_proto(&canvass_proto::wkt::Timestamp::parse(LAUNCH).unwrap());
    let minutes = |m: i64| UnixMillis(launch.0 + m * 60_000);
    let mut engine = Engine::open(
        store.clone(),
        EngineOptions {
            clock: ClockMode::Wall,
            allowed_lateness: canvass_core::SpanMillis(30 * 60_000),
            ..EngineOptions::default()
        },
    )
    .unwrap();
    engine
        .ingest(lines.iter().map(|l| record(l)).collect(), minutes(0))
        .unwrap();
    // Due at 60 minutes; with 30 minutes of lateness it waits until 90.
    assert_eq!(engine.tick(minutes(80)).unwrap().timers_fired, 0);
    assert_eq!(engine.tick(minutes(95)).unwrap().timers_fired, 1);
    let log = log_of(&store);
    let fired = log
        .iter()
        .find(|e| matches!(e.input, Some(v1::log_entry::Input::TimerFired(_))))
        .unwrap();
    assert_eq!(
        fired.applied_at.as_ref().map(UnixMillis::from_proto),
        Some(minutes(95))
    );
    let times: Vec<UnixMillis> = log
        .iter()
        .filter_map(|e| e.applied_at.as_ref().map(UnixMillis::from_proto))
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
}

/// A crash between the partitions' commits of one batch: one partition committed it, the
/// others did not. The source resumes at the lowest offset the partitions hold, the partition
/// that has the batch skips it, the others apply it, and the end is the end of a run that
/// never crashed, with each input logged once.
#[test]
fn a_batch_committed_by_some_partitions_only_is_completed_by_the_restart() {
    use canvass_engine::{
        Partitions,
        durable::Placement,
        partitions::{Route, route},
    };
    use canvass_store::Stores;

    let (layout, wanted) = three_partitions();
    let positioned = from_source("stream", &stream(None));
    let batches: Vec<Vec<Sourced>> = positioned.chunks(100).map(<[_]>::to_vec).collect();

    let clean_dir = tempfile::tempdir().unwrap();
    let clean = Stores::open(clean_dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(clean.clone(), options(), 2).unwrap();
    for b in &batches {
        engine.ingest(b.clone(), UnixMillis(0)).unwrap();
    }
    drop(engine);

    let dir = tempfile::tempdir().unwrap();
    let crashed = Stores::open(dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(crashed.clone(), options(), 2).unwrap();
    // Within the contacts: a profile applied twice would be logged twice.
    let cut = 1;
    for b in &batches[..cut] {
        engine.ingest(b.clone(), UnixMillis(0)).unwrap();
    }
    drop(engine);
    // Partition 1 alone commits the next batch (its inputs and the batch's position), as a
    // worker does that finishes before the process dies.
    {
        let mut one = Engine::open_partition(
            crashed.partition(1).clone(),
            options(),
            Placement {
                layout,
                partition: 1,
            },
        )
        .unwrap();
        let mine: Vec<Sourced> = batches[cut]
            .iter()
            .filter(|s| matches!(route(&layout, &s.incoming), Route::One(1) | Route::All))
            .cloned()
            .collect();
        let last = batches[cut].last().unwrap().position.clone().unwrap();
        one.ingest_at(mine, &[last], UnixMillis(0)).unwrap();
    }
    // The restart: the source resumes at the lowest position held.
    let mut engine = Partitions::open(crashed.clone(), options(), 2).unwrap();
    let resume = engine.offset("stream").unwrap().unwrap();
    assert_eq!(resume, batches[cut][0].position.as_ref().unwrap().offset);
    assert!(
        crashed.partition(1).offset("stream").unwrap().unwrap() > resume,
        "partition 1 holds more than the others"
    );
    for b in &batches[cut..] {
        engine.ingest(b.clone(), UnixMillis(0)).unwrap();
    }
    drop(engine);

    assert_same_partitions(&clean, &crashed);
}

/// A command from gRPC has no source position: it is journaled before any partition applies
/// it, and a start after a crash that left it in some partitions only gives it to the
/// others, once and in its place: here partition 1 alone committed the launch and the file's
/// events after it, and the others get the launch at the start, then the events from the
/// file again, in the order partition 1 had them.
#[test]
fn a_command_without_a_position_committed_by_some_partitions_only_is_completed_at_the_next_start() {
    completes_a_journaled_command(false);
}

/// The same with the flush of each commit beside the next batch (as `canvass run` does):
/// the journal is pruned only once what it held is durable in every partition.
#[test]
fn a_journaled_command_is_completed_under_deferred_flushes_too() {
    completes_a_journaled_command(true);
}

fn completes_a_journaled_command(deferred_flush: bool) {
    use canvass_engine::{
        Partitions,
        durable::Placement,
        partitions::{COMMAND_JOURNAL, Route, route},
    };
    use canvass_store::Stores;

    let options = || EngineOptions {
        deferred_flush,
        ..options()
    };
    let (layout, wanted) = three_partitions();
    let lines = stream(None);
    let launch_at = lines
        .iter()
        .position(|l| l.contains(r#""launch": "b-trial-invite""#))
        .unwrap();
    // Commands and contacts as a gRPC caller submits them (no positions), then the launch,
    // then the events as a file source reads them.
    let before: Vec<Sourced> = lines[..launch_at].iter().map(|l| record(l)).collect();
    let launch = record(&lines[launch_at]);
    let events = from_source("file:events", &lines[launch_at + 1..]);
    let mut batches: Vec<Vec<Sourced>> = events.chunks(100).map(<[_]>::to_vec).collect();
    // The launch and the first events in one batch, as the run loop may take them.
    batches[0].insert(0, launch.clone());

    let clean_dir = tempfile::tempdir().unwrap();
    let clean = Stores::open(clean_dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(clean.clone(), options(), 2).unwrap();
    engine.ingest(before.clone(), UnixMillis(0)).unwrap();
    for b in &batches {
        engine.ingest(b.clone(), UnixMillis(0)).unwrap();
    }
    engine.wait_synced().unwrap();
    drop(engine);

    let dir = tempfile::tempdir().unwrap();
    let crashed = Stores::open(dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(crashed.clone(), options(), 2).unwrap();
    engine.ingest(before, UnixMillis(0)).unwrap();
    engine.wait_synced().unwrap();
    drop(engine);
    // The launch is journaled; then partition 1 alone commits it and the events after it
    // that are its own, before the process dies.
    let Incoming::Record(launch_record) = &launch.incoming else {
        unreachable!("the launch is a record")
    };
    let n = crashed
        .partition(0)
        .journal_commands(&[v1::JournaledCommand {
            record: Some((**launch_record).clone()),
            caller: String::new(),
            received_at: Some(UnixMillis(0).to_proto()),
        }])
        .unwrap();
    let position = v1::SourcePosition {
        source: COMMAND_JOURNAL.into(),
        offset: n,
        next_offset: n + 1,
    };
    {
        let mut one = Engine::open_partition(
            crashed.partition(1).clone(),
            options(),
            Placement {
                layout,
                partition: 1,
            },
        )
        .unwrap();
        let positioned = Sourced {
            position: Some(position.clone()),
            ..launch
        };
        one.ingest_at(vec![positioned], &[position], UnixMillis(0))
            .unwrap();
        let mine: Vec<Sourced> = batches[0][1..]
            .iter()
            .filter(|s| route(&layout, &s.incoming) == Route::One(1))
            .cloned()
            .collect();
        let last = batches[0].last().unwrap().position.clone().unwrap();
        one.ingest_at(mine, &[last], UnixMillis(0)).unwrap();
        one.wait_synced().unwrap();
    }
    assert!(
        crashed.partition(0).offset(COMMAND_JOURNAL).unwrap() < Some(n + 1),
        "partition 0 lacks the launch before the restart"
    );
    // The restart completes the journal in the partitions that lack it; the file resumes
    // at the lowest position held, and partition 1 skips what it has.
    let mut engine = Partitions::open(crashed.clone(), options(), 2).unwrap();
    assert_eq!(engine.offset(COMMAND_JOURNAL).unwrap(), Some(n + 1));
    assert_eq!(engine.offset("file:events").unwrap(), None);
    for b in &batches {
        // Re-read from the file: without the launch, which is no longer in it.
        let from_file: Vec<Sourced> = b.iter().filter(|s| s.position.is_some()).cloned().collect();
        engine.ingest(from_file, UnixMillis(0)).unwrap();
    }
    engine.wait_synced().unwrap();
    drop(engine);

    assert_same_partitions(&clean, &crashed);
    // What every partition holds is forgotten; the last number is kept to go on from.
    let kept: Vec<u64> = crashed
        .partition(0)
        .journal_from(0)
        .unwrap()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    assert_eq!(kept, vec![n]);
}

/// A command goes to every partition; one that is not an input at all (dated too far
/// ahead) is parked once, by its home partition, like a refused one.
#[test]
fn a_bad_command_is_a_dead_letter_once_whatever_the_partitions() {
    use canvass_engine::{Partitions, durable::Outcome};
    use canvass_store::{Stores, Wanted};

    let dir = tempfile::tempdir().unwrap();
    let wanted = Wanted {
        partitions: Some(4),
        partitioner: None,
    };
    let stores = Stores::open(dir.path(), wanted, &StoreOptions::default()).unwrap();
    let options = EngineOptions {
        max_lead: Some(canvass_core::SpanMillis(3_600_000)),
        ..options()
    };
    let mut engine = Partitions::open(stores.clone(), options, 2).unwrap();
    let ahead = r#"{"at": "2099-01-01T00:00:00Z", "command": {"actor": "ops", "launch": "x"}}"#;
    let refused =
        r#"{"at": "2026-03-02T09:00:00Z", "command": {"actor": "ops", "launch": "nothing"}}"#;
    let report = engine
        .ingest(
            vec![record(ahead), record(refused)],
            UnixMillis(1_772_442_000_000),
        )
        .unwrap();
    assert!(
        matches!(report.outcomes[0], Outcome::DeadLetter { .. }),
        "{report:?}"
    );
    assert!(
        matches!(report.outcomes[1], Outcome::Refused { .. }),
        "{report:?}"
    );
    assert_eq!(report.dead_letters, 2, "{report:?}");
    let parked: u64 = stores.iter().map(|s| s.dead_letter_count().unwrap()).sum();
    assert_eq!(parked, 2, "each parked once, not once per partition");
}

/// An engine that owns some partitions only (one of several engines of a group): an event
/// about a contact of another partition is answered `Elsewhere` and logged nowhere; a
/// command without a position of its own (gRPC) is refused before it is journaled, since it
/// must reach every partition; a command with a position goes to the owned partitions only,
/// and a partition taken on later gets it when the source is read again.
#[test]
fn a_partition_another_engine_owns_takes_nothing_here() {
    use canvass_engine::{Partitions, durable::Outcome};
    use canvass_store::Stores;

    let (layout, wanted) = three_partitions();
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(stores.clone(), options(), 1).unwrap();
    engine.set_owned([0]);
    assert!(engine.owns(0) && !engine.owns(1) && stores.owns(0) && !stores.owns(2));

    let lines = stream(None);
    let spec = lines.iter().find(|l| l.contains("\"putSpec\"")).unwrap();
    let refused = engine.ingest(vec![record(spec)], UnixMillis(0)).unwrap();
    assert!(
        matches!(refused.outcomes[0], Outcome::Elsewhere { .. }),
        "{:?}",
        refused.outcomes
    );
    assert!(
        stores.partition(0).journal_from(0).unwrap().is_empty(),
        "refused before it is journaled"
    );

    let contact = (0..)
        .map(|i| format!("c-{i}"))
        .find(|id| layout.partition_of(id) == 1)
        .unwrap();
    let event = record(&format!(
        r#"{{"event": {{"id": "e-1", "type": "email.opened", "contactId": "{contact}", "occurredAt": "2026-03-03T10:00:00Z"}}}}"#
    ));
    let report = engine.ingest(vec![event], UnixMillis(0)).unwrap();
    assert_eq!(report.outcomes, [Outcome::Elsewhere { partition: 1 }]);

    let commands = from_source("kafka:control/0", std::slice::from_ref(spec));
    engine.ingest(commands.clone(), UnixMillis(0)).unwrap();
    let logged: Vec<u64> = stores.iter().map(|s| s.last_seq().unwrap()).collect();
    assert_eq!(logged, [1, 0, 0], "the owned partition only");
    engine.set_owned([0, 1]);
    engine.ingest(commands, UnixMillis(0)).unwrap();
    let logged: Vec<u64> = stores.iter().map(|s| s.last_seq().unwrap()).collect();
    assert_eq!(
        logged,
        [1, 1, 0],
        "partition 1 takes it, partition 0 holds it already"
    );
}

/// A partition another engine took over still holds in memory what this engine applied
/// while it owned it: a checkpoint (as at a clean stop) writes it to the files all the same.
#[test]
fn a_checkpoint_covers_the_partitions_another_engine_owns_now() {
    use canvass_engine::Partitions;
    use canvass_store::Stores;

    let (_, wanted) = three_partitions();
    let dir = tempfile::tempdir().unwrap();
    let stores = Stores::open(dir.path(), wanted, &StoreOptions::default()).unwrap();
    let mut engine = Partitions::open(stores.clone(), options(), 1).unwrap();
    let lines = stream(None);
    let spec = lines.iter().find(|l| l.contains("\"putSpec\"")).unwrap();
    engine
        .ingest(
            from_source("kafka:control/0", std::slice::from_ref(spec)),
            UnixMillis(0),
        )
        .unwrap();
    assert!(stores.iter().all(|s| s.checkpoint_seq().unwrap() == 0));
    engine.set_owned([0]);
    engine.checkpoint().unwrap();
    let checkpointed: Vec<u64> = stores.iter().map(|s| s.checkpoint_seq().unwrap()).collect();
    assert_eq!(
        checkpointed,
        [1, 1, 1],
        "every partition's projections in the files"
    );
}
