//! The real binary on a real Kafka-protocol broker: the reference campaign through topics
//! alone, dead letters, the audit trail, SIGKILLs mid-stream, several partitions, and a
//! broker restart.

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use canvass_proto::{json, v1};
use canvass_tests::OutputWithin;
use canvass_tests::{
    broker::{Broker, Consumed, Produce, broker, unique},
    example, reference_stream, start_ready,
};
use serde_json::Value;

/// The five topics of one engine, named for one test.
struct Topics {
    touchpoints: String,
    control: String,
    actions: String,
    audit: String,
    dead_letters: String,
    /// Only for the tests of partitions moving between engines.
    changelog: Option<String>,
    /// With the changelog, where snapshots go, and every how many log entries.
    snapshots: Option<(String, u64)>,
    /// The directory of owners, for the tests of one API over several engines.
    owners: Option<String>,
}

impl Topics {
    fn create(broker: &Broker, test: &str, touchpoint_partitions: i32) -> Self {
        let name = |role: &str| unique(&format!("{test}.{role}"));
        let topics = Self {
            touchpoints: name("touchpoints"),
            control: name("control"),
            actions: name("actions"),
            audit: name("audit"),
            dead_letters: name("dlq"),
            changelog: None,
            snapshots: None,
            owners: None,
        };
        broker.create_topic(&topics.touchpoints, touchpoint_partitions);
        broker.create_topic(&topics.control, 1);
        broker.create_topic(&topics.actions, 3);
        broker.create_topic(&topics.audit, 1);
        broker.create_topic(&topics.dead_letters, 1);
        topics
    }

    /// The same topics and a changelog of `partitions` partitions.
    fn with_changelog(mut self, broker: &Broker, partitions: i32) -> Self {
        let name = unique(&format!("{}.changelog", self.touchpoints));
        broker.create_topic(&name, partitions);
        self.changelog = Some(name);
        self
    }

    /// The same topics, with a snapshot of each partition every `entries` log entries.
    fn with_snapshots(mut self, broker: &Broker, partitions: i32, entries: u64) -> Self {
        let name = unique(&format!("{}.snapshots", self.touchpoints));
        broker.create_topic(&name, partitions);
        self.snapshots = Some((name, entries));
        self
    }

    /// The same topics, with a directory of owners.
    fn with_owners(mut self, broker: &Broker) -> Self {
        let name = unique(&format!("{}.owners", self.touchpoints));
        broker.create_topic(&name, 1);
        self.owners = Some(name);
        self
    }

    /// A settings file for the engine.
    fn config(&self, dir: &Path, broker: &Broker, group: &str) -> PathBuf {
        let path = dir.join(format!("{group}.toml"));
        let (snapshots, snapshot_entries) = match &self.snapshots {
            Some((topic, entries)) => (
                format!("snapshots = \"{topic}\"\n"),
                format!("snapshot_entries = {entries}\n"),
            ),
            None => (String::new(), String::new()),
        };
        let text = format!(
            r#"brokers = "{}"
group_id = "{group}"
{snapshot_entries}max_wait_ms = 5
# Below max.poll.interval.ms: a publish waiting on a broker that is away must not cost the
# engine its group membership.
publish_timeout_ms = 5000

[topics]
touchpoints = "{}"
control = "{}"
actions = "{}"
audit = "{}"
dead_letters = "{}"
{}{}
[consumer]
# A killed engine's membership lapses quickly, so that its restart is assigned soon (the
# broker waits up to the rebalance timeout, max.poll.interval.ms, for a member to rejoin).
"session.timeout.ms" = "6000"
"heartbeat.interval.ms" = "500"
"max.poll.interval.ms" = "10000"
"#,
            broker.address,
            self.touchpoints,
            self.control,
            self.actions,
            self.audit,
            self.dead_letters,
            self.changelog
                .as_ref()
                .map(|c| format!("changelog = \"{c}\"\n{snapshots}"))
                .unwrap_or_default(),
            self.owners
                .as_ref()
                .map(|o| format!("owners = \"{o}\"\n"))
                .unwrap_or_default()
        );
        std::fs::write(&path, text).unwrap();
        path
    }
}

fn engine_args(data: &Path, config: &Path, clock: &str) -> Vec<String> {
    [
        "run",
        "--data",
        data.to_str().unwrap(),
        "--kafka-config",
        config.to_str().unwrap(),
        "--clock",
        clock,
        "--exit-when-caught-up",
        "--checkpoint-entries",
        "100",
    ]
    .iter()
    .map(ToString::to_string)
    .collect()
}

/// Starts the engine and waits until its store is open; stderr is echoed for diagnosis.
fn start_engine(args: &[String]) -> canvass_tests::KillOnDrop {
    start_ready(args, true).child
}

/// Runs the engine until it has consumed everything and goes idle.
///
/// A known gap of Tansu 0.6 (docs/ARCHITECTURE.md, "Broker gaps"): a member whose session
/// lapsed while the broker stalled may never be given partitions again in that group. If
/// the engine is still running after two minutes with its partitions revoked and not given
/// back, it goes on in a group of its own (its offsets live in the data directory, so
/// nothing is lost or applied twice); an engine that holds its partitions and does not end
/// fails the test.
fn run_engine_until_idle(args: &[String]) {
    let mut running = start_ready(args, true);
    let status = match canvass_tests::wait_within(&mut running.child, Duration::from_secs(120)) {
        Some(status) => status,
        None => {
            assert!(
                !holds_partitions(&running),
                "the engine holds its partitions and does not end"
            );
            let config = args
                .iter()
                .position(|a| a == "--kafka-config")
                .map(|i| PathBuf::from(&args[i + 1]))
                .unwrap();
            let text = std::fs::read_to_string(&config).unwrap();
            let again = config.with_extension("again.toml");
            let group = unique("again");
            let text: Vec<String> = text
                .lines()
                .map(|l| {
                    if l.starts_with("group_id") {
                        format!("group_id = \"{group}\"")
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            std::fs::write(&again, text.join("\n")).unwrap();
            eprintln!(
                "the engine's partitions were revoked and never given back (Tansu's group gap): going on in group {group}"
            );
            let args: Vec<String> = args
                .iter()
                .map(|a| {
                    if Path::new(a) == config {
                        again.display().to_string()
                    } else {
                        a.clone()
                    }
                })
                .collect();
            canvass_tests::must_end(
                &mut start_engine(&args),
                Duration::from_secs(300),
                "the engine running until idle in a group of its own",
            )
        }
    };
    assert!(status.success(), "the engine failed: {status}");
}

/// Whether the engine's last rebalance left it partitions (from its log so far).
fn holds_partitions(running: &canvass_tests::Running) -> bool {
    let mut held = true;
    while let Ok(line) = running.lines.try_recv() {
        let event: Value = serde_json::from_str(&line).unwrap_or_default();
        let message = event["fields"]["message"].as_str().unwrap_or_default();
        if message.starts_with("revoked") {
            held = false;
        } else if message.starts_with("assigned") {
            held = true;
        }
    }
    held
}

/// The reference stream split into what must reach the engine in order: the first commands
/// (specs, approvals, the survey's launch), the contacts, the trial's launch, the events and
/// malformed lines. Kafka orders records within a partition only, so each phase is consumed
/// before the next is produced.
struct Phases {
    commands: Vec<Produce>,
    contacts: Vec<Produce>,
    launch: Vec<Produce>,
    events: Vec<Produce>,
    malformed: Vec<String>,
}

fn millis(rfc3339: &str) -> i64 {
    chrono::DateTime::parse_from_rfc3339(rfc3339)
        .unwrap()
        .timestamp_millis()
}

fn phases(topics: &Topics, copies: usize) -> Phases {
    let mut p = Phases {
        commands: Vec::new(),
        contacts: Vec::new(),
        launch: Vec::new(),
        events: Vec::new(),
        malformed: Vec::new(),
    };
    for line in reference_stream(copies).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            p.malformed.push(line.to_string());
            continue;
        };
        if let Some(command) = v.get("command") {
            let record = Produce {
                topic: topics.control.clone(),
                key: None,
                payload: command.to_string().into_bytes(),
                timestamp: v["at"].as_str().map(millis),
                headers: Vec::new(),
            };
            if p.contacts.is_empty() {
                p.commands.push(record);
            } else {
                p.launch.push(record);
            }
        } else if let Some(contact) = v.get("contact") {
            p.contacts.push(Produce {
                topic: topics.touchpoints.clone(),
                key: Some(contact["id"].as_str().unwrap().as_bytes().to_vec()),
                payload: line.as_bytes().to_vec(),
                timestamp: None,
                headers: Vec::new(),
            });
        } else if let Some(event) = v.get("event") {
            p.events.push(Produce {
                topic: topics.touchpoints.clone(),
                // An event without its contact id (a bad record) goes without a key.
                key: event["contactId"].as_str().map(|c| c.as_bytes().to_vec()),
                payload: line.as_bytes().to_vec(),
                timestamp: None,
                headers: Vec::new(),
            });
        } else {
            // A well-formed JSON line that is not an input: also a dead letter.
            p.malformed.push(line.to_string());
        }
    }
    p
}

fn malformed_records(topics: &Topics, lines: &[String]) -> Vec<Produce> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| Produce {
            topic: topics.touchpoints.clone(),
            key: Some(format!("malformed-{i}").into_bytes()),
            payload: line.as_bytes().to_vec(),
            timestamp: None,
            headers: Vec::new(),
        })
        .collect()
}

/// Feeds the first three phases, each consumed before the next is produced.
fn set_up(broker: &Broker, phases: &Phases, args: &[String]) {
    for phase in [&phases.commands, &phases.contacts, &phases.launch] {
        broker.produce(phase);
        run_engine_until_idle(args);
    }
}

fn actions_by_key(records: &[Consumed]) -> BTreeMap<String, Vec<String>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in records {
        let key = r
            .header("idempotency-key")
            .expect("every action has its idempotency key as a header");
        by_key.entry(key).or_default().push(r.text());
    }
    by_key
}

type KeyValue = (Vec<u8>, Vec<u8>);

/// The projections, and apart the stored offsets (their keys name the topics, which differ
/// between runs).
fn projections(data: &Path) -> (Vec<KeyValue>, Vec<Vec<u8>>) {
    let dump = canvass_tests::store(data).projection_dump().unwrap();
    let (offsets, rest): (Vec<_>, Vec<_>) = dump.into_iter().partition(|(k, _)| k[0] == b'S');
    (rest, offsets.into_iter().map(|(_, v)| v).collect())
}

/// Checks the actions topic and the response groups against the reference outcome (times
/// `copies`); returns the expected outcome.
fn assert_reference_outcome(broker: &Broker, topics: &Topics, data: &Path, copies: u64) -> Value {
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(example("expected.json")).unwrap()).unwrap();

    // Actions: each key once (no crash here), and by campaign and kind what the reference
    // expects.
    let actions = broker.read_all(&topics.actions);
    let by_key = actions_by_key(&actions);
    assert!(
        by_key
            .values()
            .all(|lines| lines.iter().all(|l| l == &lines[0])),
        "two different actions under one idempotency key"
    );
    let mut by_kind: BTreeMap<(String, String), u64> = BTreeMap::new();
    for lines in by_key.values() {
        let action: v1::Action = json::from_str(&lines[0]).unwrap();
        let kind = action
            .kind()
            .as_str_name()
            .trim_start_matches("ACTION_KIND_")
            .to_string();
        *by_kind
            .entry((action.campaign_id.clone(), kind))
            .or_default() += 1;
    }
    for r in &actions {
        let action: v1::Action = json::from_str(&r.text()).unwrap();
        assert_eq!(
            r.key.as_deref(),
            Some(action.contact_id.as_bytes()),
            "keyed by contact"
        );
    }
    let stores = canvass_tests::stores(data);
    for campaign in expected["campaigns"].as_array().unwrap() {
        let id = campaign["id"].as_str().unwrap();
        for (kind, count) in campaign["actionsByKind"].as_object().unwrap() {
            assert_eq!(
                by_kind
                    .get(&(id.to_string(), kind.clone()))
                    .copied()
                    .unwrap_or(0),
                count.as_u64().unwrap() * copies,
                "{id}: {kind} actions on the actions topic"
            );
        }
        // Group by group, from the engine's response-group index.
        for (group, count) in campaign["responseGroups"].as_object().unwrap() {
            let members: u64 = stores
                .iter()
                .map(|s| s.group_members(id, group).count() as u64)
                .sum();
            assert_eq!(
                members,
                count.as_u64().unwrap() * copies,
                "{id}: group {group}"
            );
        }
    }
    for store in stores.iter() {
        assert_eq!(
            store.outbox(usize::MAX).unwrap().len(),
            0,
            "everything published"
        );
    }
    expected
}

/// Runs `stream` from a file on four partitions with the event clock, in `dir`: the data
/// directory, and the actions it delivered by idempotency key.
fn file_run_on_four_partitions(
    dir: &Path,
    stream: &str,
) -> (PathBuf, BTreeMap<String, v1::Action>) {
    let data = dir.join("file");
    let input = dir.join("stream.jsonl");
    std::fs::write(&input, stream).unwrap();
    let actions_file = dir.join("actions.jsonl");
    let mut args = canvass_tests::event_clock_run(&data, &input, &actions_file);
    args.extend(["--max-lead-hours", "0", "--partitions", "4"].map(String::from));
    let run = canvass_tests::canvass(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(run.status.success(), "{}", canvass_tests::stderr(&run));
    let actions = std::fs::read_to_string(&actions_file)
        .unwrap()
        .lines()
        .map(|l| {
            let a: v1::Action = json::from_str(l).unwrap();
            (a.idempotency_key.clone(), a)
        })
        .collect();
    (data, actions)
}

/// The actions on the actions topic by idempotency key, each key published once.
fn published_once(broker: &Broker, topics: &Topics) -> BTreeMap<String, v1::Action> {
    let published = broker.read_all(&topics.actions);
    let by_key: BTreeMap<String, v1::Action> = published
        .iter()
        .map(|r| {
            let a: v1::Action = json::from_str(&r.text()).unwrap();
            (a.idempotency_key.clone(), a)
        })
        .collect();
    assert_eq!(by_key.len(), published.len(), "a key was published twice");
    by_key
}

/// Feeds the first three phases as [`set_up`] does, touchpoints placed by `partitioner`.
fn set_up_placed(broker: &Broker, phases: &Phases, args: &[String], partitioner: &str) {
    for phase in [&phases.commands, &phases.contacts, &phases.launch] {
        broker.produce_placed(phase, partitioner);
        run_engine_until_idle(args);
    }
}

/// On a touchpoints topic of four partitions produced as the Java client does (murmur2 of
/// the contact id), the data directory gets four partitions, each contact lives in the one
/// its record came from, each partition keeps its own clock, and the outcome is the one a
/// file run on four partitions gives: the same actions (keys and content) and the same
/// report. A record on another partition than its contact's is refused to the dead-letter
/// topic with the reason.
#[test]
fn four_touchpoint_partitions_are_four_partitions_of_the_data_directory() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "partitions", 4);
    let config = topics.config(dir.path(), &broker, &unique("partitions"));
    let data = dir.path().join("data");
    let args = engine_args(&data, &config, "event");

    let p = phases(&topics, 1);
    set_up_placed(&broker, &p, &args, "murmur2_random");
    let layout = canvass_tests::stores(&data).layout();
    assert_eq!(layout.partitions, 4, "as many partitions as the topic");
    // A touchpoint on a partition its contact does not map to.
    let stray = "c-0001";
    let owner = layout.partition_of(stray);
    let wrong = (owner + 1) % 4;
    let misplaced = Produce {
        topic: topics.touchpoints.clone(),
        key: Some(stray.as_bytes().to_vec()),
        payload: format!(r#"{{"event":{{"id":"stray-1","type":"email.opened","contactId":"{stray}","occurredAt":"2026-03-03T10:00:00Z"}}}}"#).into_bytes(),
        ..Produce::default()
    };
    broker.produce_to(&misplaced, i32::try_from(wrong).unwrap());
    broker.produce_placed(&p.events, "murmur2_random");
    run_engine_until_idle(&args);

    let stores = canvass_tests::stores(&data);
    for (p, store) in stores.iter().enumerate() {
        for id in store.contact_ids(0) {
            let id = id.unwrap();
            assert_eq!(
                layout.partition_of(&id) as usize,
                p,
                "{id} in partition {p}"
            );
        }
        assert!(
            store.last_seq().unwrap() > 0,
            "partition {p} has a log of its own"
        );
    }
    let letters = broker.read_all(&topics.dead_letters);
    let stray_letter = letters
        .iter()
        .find(|l| l.payload.windows(7).any(|w| w == b"stray-1"))
        .expect("the misplaced record is a dead letter");
    let reason = stray_letter.header("canvass-reason").unwrap();
    assert!(
        reason.contains(&format!("on partition {wrong}"))
            && reason.contains(&format!(
                "maps to partition {owner} of 4 under the murmur2 partitioner"
            )),
        "{reason}"
    );
    assert_eq!(
        stray_letter.header("canvass-source-partition").unwrap(),
        wrong.to_string()
    );
    // Parked in the partition it came from, and nowhere else. (Keyless bad records of the
    // stream land on random partitions: only the stray one is counted.)
    for (p, store) in stores.iter().enumerate() {
        let strays = store
            .dead_letters()
            .unwrap()
            .iter()
            .filter(|l| l.payload.windows(7).any(|w| w == b"stray-1"))
            .count();
        assert_eq!(strays, usize::from(p == wrong as usize), "partition {p}");
    }
    drop(stores);

    // The same stream from a file, on four partitions: the same report.
    let (file_data, from_file) = file_run_on_four_partitions(dir.path(), &reference_stream(1));
    let from_kafka = published_once(&broker, &topics);
    assert!(from_kafka.len() > 400, "{} actions", from_kafka.len());
    assert_eq!(from_kafka, from_file, "Kafka and file on four partitions");
    let report = |data: &Path| {
        let out = canvass_tests::canvass(&["report", "--json", "--data", data.to_str().unwrap()]);
        assert!(out.status.success(), "{}", canvass_tests::stderr(&out));
        canvass_tests::stdout(&out)
    };
    assert_eq!(
        report(&data),
        report(&file_data),
        "Kafka and file on four partitions"
    );
}

#[test]
fn the_reference_campaign_runs_through_kafka_alone() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "reference", 1);
    let config = topics.config(dir.path(), &broker, &unique("reference"));
    let data = dir.path().join("data");
    let args = engine_args(&data, &config, "event");

    let p = phases(&topics, 1);
    set_up(&broker, &p, &args);
    // A refused command: the author approves their own version.
    broker.produce(&[Produce {
        topic: topics.control.clone(),
        payload: br#"{"actor":"marketer","approve":{"campaignId":"b-trial-invite","version":1}}"#
            .to_vec(),
        ..Produce::default()
    }]);
    let mut last = p.events.clone();
    last.extend(malformed_records(&topics, &p.malformed));
    broker.produce(&last);
    run_engine_until_idle(&args);

    let expected = assert_reference_outcome(&broker, &topics, &data, 1);
    let store = canvass_tests::store(&data);

    // Without a crash, each key went out exactly once.
    let actions = broker.read_all(&topics.actions);
    assert_eq!(
        actions_by_key(&actions).len(),
        actions.len(),
        "a key was published twice"
    );

    // Dead letters: unchanged, with the reason and where they came from.
    let touchpoints = broker.read_all(&topics.touchpoints);
    let letters = broker.read_all(&topics.dead_letters);
    assert_eq!(
        letters.len() as u64,
        expected["inputs"]["malformedLines"].as_u64().unwrap(),
        "{letters:?}"
    );
    for letter in &letters {
        let offset: i64 = letter
            .header("canvass-source-offset")
            .unwrap()
            .parse()
            .unwrap();
        let original = touchpoints.iter().find(|r| r.offset == offset).unwrap();
        assert_eq!(letter.payload, original.payload, "payload unchanged");
        assert_eq!(letter.key, original.key, "key unchanged");
        assert_eq!(
            letter.header("canvass-source-topic").unwrap(),
            topics.touchpoints
        );
        assert_eq!(letter.header("canvass-source-partition").unwrap(), "0");
        assert!(!letter.header("canvass-reason").unwrap().is_empty());
    }
    assert_eq!(store.dead_letter_count().unwrap(), letters.len() as u64 + 1);

    // The audit trail: every command's result, the refused one with its reason.
    let audit = broker.read_all(&topics.audit);
    let results: Vec<v1::CommandResult> = audit
        .iter()
        .map(|r| json::from_str(&r.text()).unwrap())
        .collect();
    let accepted = p.commands.len() + p.launch.len();
    assert_eq!(results.len(), accepted + 1);
    assert!(results[..accepted].iter().all(|r| r.accepted && r.seq > 0));
    let refused = &results[accepted];
    assert!(!refused.accepted);
    assert!(
        refused.reason.contains("is not awaiting approval"),
        "{}",
        refused.reason
    );
    assert_eq!(
        audit[accepted].header("canvass-result").unwrap(),
        "rejected"
    );
    assert_eq!(audit[accepted].key.as_deref(), Some(&b"b-trial-invite"[..]));
}

#[test]
#[ignore = "Tansu 0.6 stalls for minutes after this test's kills (docs/ARCHITECTURE.md, Known limits): run with --ignored"]
fn sigkill_mid_stream_loses_nothing_and_publishes_every_key() {
    let _heavy = canvass_tests::broker::heavy();
    // A broker of its own: on the suite's, grown by the tests before it, Tansu's sqlite was
    // seen to take minutes over this test's bursts (thousands of actions, then events),
    // leaving heartbeats and queries unanswered meanwhile.
    let _ = broker();
    let own = OwnBroker::start(tempfile::tempdir().unwrap());
    let broker = Broker::at(&format!("127.0.0.1:{}", own.port));
    let dir = tempfile::tempdir().unwrap();

    // One uninterrupted run, and one killed again and again, on topics of their own.
    let mut outcomes = Vec::new();
    for (name, kills) in [("clean", 0), ("killed", 5)] {
        let topics = Topics::create(&broker, name, 1);
        let config = topics.config(dir.path(), &broker, &unique(name));
        let data = dir.path().join(name);
        let args = engine_args(&data, &config, "event");
        // Long enough that five kills, each after the engine has shown progress, land before
        // its end: each run applies about 700 records before its kill, and seven copies
        // (3,003 records) once ran out before the fifth kill.
        let p = phases(&topics, 12);
        set_up(&broker, &p, &args);
        broker.produce(&p.events);
        let set_up_end = canvass_tests::store(&data).last_seq().unwrap();
        let mut ends = Vec::new();
        for k in 0..kills {
            // Each life joins a group of its own: in one group, a life must wait for the
            // killed member's session to lapse (Tansu 0.6 was seen never to assign a member
            // that joined while a killed one still counted). Offsets live in the data
            // directory, so a group holds nothing the engine needs.
            let mut lives = 0;
            let mut running = loop {
                let life = topics.config(dir.path(), &broker, &unique(name));
                let mut running = start_ready(&engine_args(&data, &life, "event"), true);
                lives += 1;
                if running.wait_for_event("progress", Duration::from_secs(120)) {
                    break running;
                }
                // A known gap of Tansu 0.6 (docs/ARCHITECTURE.md, "Broker gaps"): after a
                // member was killed, the broker was seen to leave a new one's requests and
                // heartbeats unanswered for minutes. Another life, in a group of its own.
                assert!(lives < 3, "the engine applies no records in {lives} lives");
                eprintln!("life {k}: no records applied in 120 s: starting it again (Tansu's gap)");
                running.child.kill().unwrap();
                running.child.wait().unwrap();
            };
            // Once it applies records, let it work a moment, then kill it without warning.
            let child = &mut running.child;
            std::thread::sleep(Duration::from_millis(50 * k));
            child.kill().unwrap();
            child.wait().unwrap();
            ends.push(canvass_tests::store(&data).last_seq().unwrap());
        }
        let last = topics.config(dir.path(), &broker, &unique(name));
        run_engine_until_idle(&engine_args(&data, &last, "event"));
        let end = canvass_tests::store(&data).last_seq().unwrap();
        if kills > 0 {
            eprintln!(
                "log end after set-up {set_up_end}, after each kill {ends:?}, at the end {end}"
            );
            assert!(
                ends.iter().any(|&e| e > set_up_end && e < end),
                "no kill landed mid-stream (log ends {ends:?}, set-up {set_up_end}, end {end})"
            );
        }
        outcomes.push((data, broker.read_all(&topics.actions)));
    }
    let (clean_data, clean_actions) = &outcomes[0];
    let (killed_data, killed_actions) = &outcomes[1];

    let expected = actions_by_key(clean_actions);
    let delivered = actions_by_key(killed_actions);
    assert!(expected.values().all(|v| v.len() == 1));
    assert_eq!(
        expected.keys().collect::<BTreeSet<_>>(),
        delivered.keys().collect::<BTreeSet<_>>(),
        "idempotency keys on the actions topic differ from the clean run's"
    );
    for (key, lines) in &delivered {
        assert!(
            lines.iter().all(|l| l == &expected[key][0]),
            "two different actions under {key}"
        );
    }
    assert_eq!(
        projections(clean_data),
        projections(killed_data),
        "final state differs"
    );
}

/// A broker of the test's own, on a free port, keeping its data under the test's directory
/// (sqlite). The directory goes only after the broker stopped: `drop` stops it, then the
/// fields drop.
struct OwnBroker {
    dir: PathBuf,
    port: u16,
    home: tempfile::TempDir,
}

impl OwnBroker {
    fn script() -> PathBuf {
        canvass_tests::repo_root().join("scripts/kafka.sh")
    }

    fn start(home: tempfile::TempDir) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let broker = Self {
            dir: home.path().join("broker"),
            port,
            home,
        };
        broker.up();
        broker
    }

    fn up(&self) {
        let status = Command::new(Self::script())
            .args(["start", self.dir.to_str().unwrap(), &self.port.to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "the test's own broker did not start");
    }

    fn down(&self) {
        let status = Command::new(Self::script())
            .args(["stop", self.dir.to_str().unwrap()])
            .status()
            .unwrap();
        assert!(status.success());
    }
}

impl OwnBroker {
    /// Waits at most `limit` for `child` to exit, restarting the broker (at most three
    /// times) whenever its storage task died since its last start: a gap of Tansu 0.6 with
    /// sqlite (docs/ARCHITECTURE.md, "Broker gaps": an idempotent producer that produced
    /// before the broker's restart panics the storage task on its next produce,
    /// `lite.rs:503`, "more or less than one row", and the broker then fails every request). The engine replaces a producer that
    /// keeps failing, so a broker started again serves it.
    fn wait_healthy_for(
        &self,
        child: &mut std::process::Child,
        limit: Duration,
    ) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + limit;
        let mut restarts = 0;
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            let log = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
            if log.contains("panicked at") && restarts < 3 {
                restarts += 1;
                eprintln!(
                    "the broker's storage task died (Tansu's gap, see docs/ARCHITECTURE.md, \"Broker gaps\"): starting the broker again"
                );
                self.down();
                self.up();
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        None
    }
}

impl Drop for OwnBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the broker said, for a failure that may be the broker's.
            let log = std::fs::read_to_string(self.dir.join("tansu.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!("the test's broker since its last start, its first and last log lines:");
            for line in lines.iter().take(40) {
                eprintln!("  tansu: {line}");
            }
            for line in lines.iter().skip(40.max(lines.len().saturating_sub(20))) {
                eprintln!("  tansu: {line}");
            }
        }
        let _ = Command::new(Self::script())
            .args(["stop", self.dir.to_str().unwrap()])
            .status();
    }
}

/// The reference stream on a broker of the test's own: commands, contacts and launch applied,
/// events produced. `configure` edits the engine's settings file first.
struct OwnRun {
    own: OwnBroker,
    broker: Broker,
    topics: Topics,
    config: PathBuf,
    data: PathBuf,
    args: Vec<String>,
    copies: usize,
    /// Records produced to the touchpoints topic (contacts and events).
    touchpoints: usize,
}

/// Sets up the reference stream on a broker of the test's own (with a changelog if asked).
fn own_run(name: &str, changelog: bool, configure: impl FnOnce(String) -> String) -> OwnRun {
    // The suite's broker must be there (it installed tansu); the test runs one of its own.
    let _ = broker();
    let own = OwnBroker::start(tempfile::tempdir().unwrap());
    let home = own.home.path().to_path_buf();
    let broker = Broker::at(&format!("127.0.0.1:{}", own.port));
    let mut topics = Topics::create(&broker, name, 1);
    if changelog {
        topics = topics.with_changelog(&broker, 1);
    }
    let config = topics.config(&home, &broker, &unique(name));
    std::fs::write(
        &config,
        configure(std::fs::read_to_string(&config).unwrap()),
    )
    .unwrap();
    let data = home.join("data");
    let args = engine_args(&data, &config, "event");
    let copies = 3;
    let p = phases(&topics, copies);
    set_up(&broker, &p, &args);
    broker.produce(&p.events);
    OwnRun {
        touchpoints: p.contacts.len() + p.events.len(),
        own,
        broker,
        topics,
        config,
        data,
        args,
        copies,
    }
}

/// The broker restarts mid-stream; the engine (shipping each commit to its changelog first,
/// so its commits wait for the broker) goes on when it is back and ends with the reference
/// outcome.
#[test]
fn the_engine_survives_a_broker_restart() {
    let _heavy = canvass_tests::broker::heavy();
    let OwnRun {
        own,
        broker,
        topics,
        data,
        args,
        copies,
        touchpoints,
        ..
    } = own_run("restart", true, |text| text);
    let mut engine = start_ready(&args, true);
    assert!(
        engine.wait_for_event("progress", Duration::from_secs(120)),
        "the engine applies no records"
    );
    // The broker goes away mid-stream and comes back with its data (sqlite).
    own.down();
    std::thread::sleep(Duration::from_secs(2));
    own.up();
    let status = match own.wait_healthy_for(&mut engine.child, Duration::from_secs(180)) {
        Some(status) => status,
        None => {
            // A known gap of Tansu 0.6 (docs/ARCHITECTURE.md, "Broker gaps"): after its own
            // restart, a group may never rebalance again, so the engine waits for partitions
            // it is never given.
            // The engine is not at fault then (its partitions were revoked and never given
            // back); a group of its own shows the state it left.
            assert!(
                !holds_partitions(&engine),
                "the engine holds its partitions and does not end after the broker's restart"
            );
            eprintln!(
                "the engine did not end within 3 minutes of the broker's restart: going on in a new group (Tansu's group gap)"
            );
            engine.child.kill().unwrap();
            engine.child.wait().unwrap();
            let config = topics.config(own.home.path(), &broker, &unique("restart-again"));
            canvass_tests::must_end(
                &mut start_ready(&engine_args(&data, &config, "event"), true).child,
                Duration::from_secs(300),
                "the engine in a new group after the broker's restart",
            )
        }
    };
    assert!(
        status.success(),
        "the engine failed across the broker restart: {status}"
    );

    assert_reference_outcome(&broker, &topics, &data, copies as u64);
    let store = canvass_tests::store(&data);
    assert_eq!(
        store
            .offset(&format!("kafka:{}/0", topics.touchpoints))
            .unwrap(),
        Some(touchpoints as u64),
        "every touchpoint applied, once"
    );
}

#[test]
fn a_stop_while_the_broker_is_away_ends_within_the_shutdown_timeout() {
    let _heavy = canvass_tests::broker::heavy();
    // A publication waits up to two minutes for the broker: without a bound on the stop,
    // SIGTERM would wait as long.
    let OwnRun {
        own,
        broker,
        topics,
        config,
        data,
        args,
        copies,
        ..
    } = own_run("away", false, |text| {
        let text = text.replace("publish_timeout_ms = 5000", "publish_timeout_ms = 120000");
        format!("shutdown_timeout_ms = 3000\n{text}")
    });

    // Runs until stopped: no --exit-when-caught-up.
    let serving: Vec<String> = args
        .iter()
        .filter(|a| *a != "--exit-when-caught-up")
        .cloned()
        .collect();
    let mut engine = start_ready(&serving, true);
    assert!(
        engine.wait_for_event("progress", Duration::from_secs(120)),
        "the engine applies no records"
    );
    own.down();
    std::thread::sleep(Duration::from_secs(1));
    // 3 s are configured; the margin is for a loaded machine, and still well below the
    // publication's wait.
    let status = engine
        .child
        .terminate_within(Duration::from_secs(45))
        .expect("the engine did not stop within 45 s of SIGTERM with the broker away");
    assert!(status.success(), "a stop is not a failure: {status}");

    // Nothing applied was lost: with the broker back, the run ends as an uninterrupted one.
    // In a group of its own: the stopped engine could not leave its group, and Tansu 0.6
    // does not expire a member that was in a group when it restarted. The offsets live in
    // the engine's store, so the group only decides who reads the partitions.
    own.up();
    let text = std::fs::read_to_string(&config).unwrap();
    let group = text
        .lines()
        .find(|l| l.starts_with("group_id"))
        .unwrap()
        .to_string();
    std::fs::write(&config, text.replace(&group, "group_id = \"away-after\"")).unwrap();
    run_engine_until_idle(&args);
    assert_reference_outcome(&broker, &topics, &data, copies as u64);
}

/// Starts an engine on Kafka that also serves gRPC and metrics (until stopped); returns it,
/// the gRPC address and the metrics address.
fn start_serving(
    data: &Path,
    config: &Path,
    grpc: &Path,
) -> (canvass_tests::KillOnDrop, String, String) {
    let mut args: Vec<String> = engine_args(data, config, "event")
        .into_iter()
        .filter(|a| a != "--exit-when-caught-up")
        .collect();
    args.extend([
        "--grpc-config".to_string(),
        grpc.to_str().unwrap().to_string(),
        "--metrics-addr".to_string(),
        "127.0.0.1:0".to_string(),
    ]);
    let running = start_ready(&args, true);
    let address = running
        .grpc
        .clone()
        .expect("the engine serves gRPC beside Kafka");
    let metrics = running.metrics.clone().expect("and metrics");
    (running.child, address, metrics)
}

#[test]
fn grpc_beside_kafka_in_one_engine() {
    let _heavy = canvass_tests::broker::heavy();
    use canvass_server::api::contact_service_client::ContactServiceClient;
    use canvass_tests::api::{
        READER, SERVICE, connect, create_and_launch, req, settings, spec, upsert_contacts,
    };

    let broker = broker();
    let topics = Topics::create(&broker, "grpc", 1);
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let config = topics.config(dir.path(), &broker, &unique("grpc-group"));
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(&grpc, settings()).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();

    // While it consumes the (empty) topics: campaigns and contacts over gRPC (the contacts
    // of the reference stream, whose ids its events use).
    let phases = phases(&topics, 1);
    let (mut engine, address, _) = start_serving(&data, &config, &grpc);
    rt.block_on(async {
        let channel = connect(&address).await;
        create_and_launch(&channel, spec("survey.json")).await;
        let contacts = phases
            .contacts
            .iter()
            .map(|r| {
                let record: v1::IngestRecord =
                    json::from_str(std::str::from_utf8(&r.payload).unwrap()).unwrap();
                let Some(v1::ingest_record::Input::Contact(c)) = record.input else {
                    panic!("a contact record");
                };
                c
            })
            .collect();
        upsert_contacts(&channel, contacts).await;
        create_and_launch(&channel, spec("campaign.json")).await;
    });
    let exit = engine.terminate();
    assert!(exit.success(), "the engine did not stop cleanly: {exit}");

    // The touchpoints on the topic, consumed by the engine while it serves gRPC.
    let mut last = phases.events.clone();
    last.extend(malformed_records(&topics, &phases.malformed));
    let (mut engine, address, metrics) = start_serving(&data, &config, &grpc);
    broker.produce(&last);

    // Every expected action reaches the actions topic (Kafka publishes them, not gRPC).
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(example("expected.json")).unwrap()).unwrap();
    let total: usize = expected["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["actionsByKind"].as_object().unwrap().values())
        .map(|n| usize::try_from(n.as_u64().unwrap()).unwrap())
        .sum();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let published = actions_by_key(&broker.read_all(&topics.actions)).len();
        if published >= total {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{published} of {total} actions published"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    // The consumer lag of the touchpoints partition comes down to nothing (librdkafka's
    // statistics, every 5 s), beside the records consumed from Kafka.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let (scrape, text) = canvass_tests::scrape(&metrics);
        let lag = canvass_tests::sample(
            &scrape,
            "canvass_kafka_consumer_lag",
            &[("topic", topics.touchpoints.as_str()), ("partition", "0")],
        );
        // librdkafka's lag comes down once records are polled, the inputs count once their
        // commit is done: both, then.
        let consumed =
            canvass_tests::sample_sum(&scrape, "canvass_inputs_total", &[("source", "kafka")]);
        if lag == Some(0.0) && consumed as usize == last.len() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "lag {lag:?}:\n{text}");
        std::thread::sleep(Duration::from_millis(500));
    }
    // The groups, read over gRPC from the engine that consumes Kafka.
    rt.block_on(async {
        let channel = connect(&address).await;
        let mut contacts_client = ContactServiceClient::new(channel);
        for (group, count) in expected["campaigns"][1]["responseGroups"]
            .as_object()
            .unwrap()
        {
            let members = contacts_client
                .list_group_members(req(
                    READER,
                    v1::ListGroupMembersRequest {
                        campaign_id: "b-trial-invite".into(),
                        group: group.clone(),
                        page_size: 1000,
                        page_token: String::new(),
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            assert_eq!(
                members.contact_ids.len() as u64,
                count.as_u64().unwrap(),
                "{group}"
            );
        }
    });
    // Actions go to the actions topic: pulling them over gRPC is refused.
    rt.block_on(async {
        let channel = connect(&address).await;
        let refused = canvass_server::api::action_service_client::ActionServiceClient::new(channel)
            .stream_actions(req(SERVICE, v1::StreamActionsRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    });
    let exit = engine.terminate();
    assert!(exit.success(), "the engine did not stop cleanly: {exit}");
    assert_reference_outcome(&broker, &topics, &data, 1);
}

/// The bad-input suite, Kafka part: hostile records on the touchpoints and control topics
/// are dead letters (or refused commands on the audit topic) with their reasons, the
/// engine goes on to the next record, and a record over the size limit reaches the
/// dead-letter topic as its first 4096 bytes.
#[test]
fn hostile_records_are_dead_letters_with_their_reasons_and_the_engine_goes_on() {
    let _heavy = canvass_tests::broker::heavy();
    use prost::Message as _;
    let broker = broker();
    let topics = Topics::create(&broker, "hostile", 1);
    let dir = tempfile::tempdir().unwrap();
    let config = topics.config(dir.path(), &broker, &unique("hostile"));
    let mut text = std::fs::read_to_string(&config).unwrap();
    text = format!("max_record_bytes = 65536\n{text}");
    std::fs::write(&config, text).unwrap();
    let data = dir.path().join("data");
    let args = engine_args(&data, &config, "event");

    let touchpoint = |key: &str, payload: Vec<u8>, content_type: &str| Produce {
        topic: topics.touchpoints.clone(),
        key: Some(key.as_bytes().to_vec()),
        payload,
        timestamp: None,
        headers: vec![("content-type".into(), content_type.as_bytes().to_vec())],
    };
    let event = |id: &str, seconds: i64| v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Event(v1::TouchpointEvent {
            id: id.into(),
            r#type: "email.opened".into(),
            contact_id: "c1".into(),
            occurred_at: Some(canvass_proto::wkt::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        })),
        at: None,
    };
    let mut oversized =
        br#"{"event": {"id": "big", "type": "x", "contactId": "c1", "attrs": {"blob": ""#.to_vec();
    oversized.resize(100_000, b'a');
    oversized.extend_from_slice(br#""}}}"#);
    let json_type = "application/json";
    let proto_type = "application/x-protobuf";
    // (record, what its dead letter's reason says)
    let hostile = [
        (
            touchpoint("c1", vec![0xff, 0x00, 0x13, 0x37], json_type),
            "not UTF-8",
        ),
        (
            touchpoint(
                "c1",
                event("e-far", 1_000_000_000_000_000).encode_to_vec(),
                proto_type,
            ),
            "field `event.occurredAt`: seconds 1000000000000000 is outside years 0001 to 9999",
        ),
        (
            touchpoint("c1", oversized, json_type),
            "more than the limit of 65536",
        ),
        (
            touchpoint(
                "c1",
                event("e-2100", 4_102_444_800).encode_to_vec(),
                proto_type,
            ),
            "ahead of the wall clock",
        ),
    ];
    let mut chain = canvass_tests::api::spec("survey.json");
    chain.audience = Some(v1::Audience {
        filter: format!("{} > 0", vec!["1"; 12_000].join(" + ")),
    });
    let command = v1::CampaignCommand {
        actor: "marketer".into(),
        reason: String::new(),
        command: Some(v1::campaign_command::Command::PutSpec(chain)),
    };
    let mut records: Vec<Produce> = hostile.iter().map(|(r, _)| r.clone()).collect();
    records.push(Produce {
        topic: topics.control.clone(),
        key: None,
        payload: json::to_string(&command).unwrap().into_bytes(),
        timestamp: None,
        headers: Vec::new(),
    });
    records.push(touchpoint(
        "c-last",
        br#"{"contact": {"id": "c-last"}}"#.to_vec(),
        json_type,
    ));
    broker.produce(&records);
    run_engine_until_idle(&args);

    let letters = broker.read_all(&topics.dead_letters);
    assert_eq!(letters.len(), hostile.len(), "{letters:?}");
    for ((_, reason), letter) in hostile.iter().zip(&letters) {
        let said = letter.header("canvass-reason").unwrap();
        assert!(said.contains(reason), "expected `{reason}` in `{said}`");
    }
    assert_eq!(
        letters[2].payload.len(),
        4096,
        "the oversized record's first bytes"
    );
    let audit = broker.read_all(&topics.audit);
    let refused: v1::CommandResult = json::from_str(&audit.last().unwrap().text()).unwrap();
    assert!(!refused.accepted);
    assert!(
        refused.reason.contains("CEL over the limits"),
        "{}",
        refused.reason
    );
    let store = canvass_tests::store(&data);
    assert!(
        store.contact(0, "c-last").unwrap().is_some(),
        "the engine went on past the hostile records"
    );
}

/// Every partition of the engine applies the commands in one order, which only a control
/// topic of one partition keeps: another count is refused before the data directory is
/// touched.
#[test]
fn a_control_topic_of_several_partitions_is_refused_at_start() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "wide-control", 2);
    let wide = unique("wide-control.control2");
    broker.create_topic(&wide, 2);
    let config = topics.config(dir.path(), &broker, &unique("wide-control"));
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace(
            &format!("control = \"{}\"", topics.control),
            &format!("control = \"{wide}\""),
        ),
    )
    .unwrap();
    let data = dir.path().join("data");
    let out = Command::new(canvass_tests::canvass_bin())
        .args(engine_args(&data, &config, "event"))
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("the control topic `{wide}` has 2 partitions")),
        "{stderr}"
    );
    assert!(!data.exists(), "nothing was created");
}

/// The reference deployment: touchpoints from Kafka, actions pushed to an executor over
/// gRPC. The reference campaign's emails and postal mail go to the example executor (which
/// keeps what it carried out in a file), every action is also copied to the actions topic for
/// audit. The executor is killed while the stream flows and started again a while later on
/// the same address: the engine says once that it went away and once that it is back, and
/// in the end the executor carried out every email and postal mailing exactly once by key,
/// the topic holds every action, and the engine stopped by itself once nothing was left.
#[test]
fn kafka_in_and_grpc_push_out_deliver_every_action_once_while_the_executor_comes_and_goes() {
    let _heavy = canvass_tests::broker::heavy();
    use canvass_tests::executor::{carried_out, start_executor, start_executor_on};
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "push", 1);
    let config = topics.config(dir.path(), &broker, &unique("push"));
    let data = dir.path().join("data");
    let out = dir.path().join("carried-out.jsonl");
    let out_arg = out.to_str().unwrap().to_string();
    // Slow enough that the stream's mail is still going out when the executor is killed.
    let executor_args = ["--out", out_arg.as_str(), "--delay-ms", "20"];
    let mut executor = start_executor(&executor_args);
    let address = executor.address.clone();
    let delivery = dir.path().join("delivery.toml");
    std::fs::write(
        &delivery,
        format!(
            "[retry]\nfirst_backoff_ms = 50\nmax_backoff_ms = 1000\n\n[[executor]]\nkinds = [\"EMAIL\", \"POSTAL_MAIL\"]\nendpoint = \"http://{address}\"\nconcurrency = 2\ntimeout_ms = 2000\n\n[[topic]]\nkinds = [\"*\"]\n"
        ),
    )
    .unwrap();
    let mut args = engine_args(&data, &config, "event");
    args.extend([
        "--delivery".to_string(),
        delivery.to_str().unwrap().to_string(),
    ]);

    let p = phases(&topics, 1);
    set_up(&broker, &p, &args);
    let before = carried_out(&out).len();
    let mut last = p.events.clone();
    last.extend(malformed_records(&topics, &p.malformed));
    // Produced first: the engine stops once it consumed what the topics held when it was
    // assigned its partitions.
    broker.produce(&last);
    let running = start_ready(&args, true);

    // Killed once it has carried out some of the stream's mail.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while carried_out(&out).len() < before + 20 {
        assert!(
            std::time::Instant::now() < deadline,
            "the executor gets no mail from the stream"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    executor.child.kill().unwrap();
    executor.child.wait().unwrap();
    let mut log = Vec::new();
    let wait_for = |message: &str, log: &mut Vec<Value>| {
        let deadline = std::time::Instant::now() + Duration::from_secs(120);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = running
                .lines
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no `{message}` in the engine's log"));
            let event: Value = serde_json::from_str(&line).unwrap();
            let found = event["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message));
            log.push(event);
            if found {
                return;
            }
        }
    };
    wait_for(
        &format!("delivery: the executor at http://{address} cannot be reached"),
        &mut log,
    );
    // Away for a while, then back where it was, knowing what it carried out before.
    std::thread::sleep(Duration::from_secs(3));
    let executor = start_executor_on(&address, &executor_args);
    assert_eq!(executor.address, address);
    wait_for(
        &format!("delivery: the executor at http://{address} is back"),
        &mut log,
    );
    let mut running = running;
    let status = canvass_tests::wait_within(&mut running.child, Duration::from_secs(180))
        .expect("the engine stops once everything is consumed and delivered");
    assert!(status.success(), "{status}");
    log.extend(
        running
            .lines
            .iter()
            .map(|l| serde_json::from_str::<Value>(&l).unwrap()),
    );

    // Every email and postal mailing carried out exactly once by key.
    let expected = assert_reference_outcome(&broker, &topics, &data, 1);
    let pushed = carried_out(&out);
    assert!(
        pushed.values().all(|n| *n == 1),
        "carried out twice: {pushed:?}"
    );
    let on_topic = actions_by_key(&broker.read_all(&topics.actions));
    let mailed: BTreeSet<String> = on_topic
        .iter()
        .filter(|(_, lines)| {
            let action: v1::Action = json::from_str(&lines[0]).unwrap();
            matches!(
                action.kind(),
                v1::ActionKind::Email | v1::ActionKind::PostalMail
            )
        })
        .map(|(key, _)| key.clone())
        .collect();
    assert_eq!(pushed.keys().cloned().collect::<BTreeSet<_>>(), mailed);
    let mail: u64 = expected["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| ["EMAIL", "POSTAL_MAIL"].map(|k| c["actionsByKind"][k].as_u64().unwrap_or(0)))
        .sum();
    assert_eq!(pushed.len() as u64, mail);
    // One line when it went away, one when it came back.
    let said = |start: &str| {
        log.iter()
            .filter(|e| {
                e["fields"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(start))
            })
            .count()
    };
    assert_eq!(
        said(&format!(
            "delivery: the executor at http://{address} cannot be reached"
        )),
        1
    );
    assert_eq!(
        said(&format!(
            "delivery: the executor at http://{address} is back"
        )),
        1
    );
    let stopped = log
        .iter()
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("stopped:"))
        })
        .expect("a summary");
    assert!(stopped["fields"]["delivered"].as_u64().unwrap() >= mail - before as u64);
    drop(executor);
}

/// The operator's path to a first run on Kafka: `canvass kafka create-topics` makes the five
/// topics (again: each refused as existing), `canvass kafka produce` feeds the ready
/// `examples/reference/stream.jsonl` (a phase at a time, as Kafka orders records within a
/// partition only), and the engine ends with the reference outcome. A line that is not an
/// input is reported with its number and skipped, unless asked to produce it all the same.
#[test]
fn the_cli_creates_the_topics_and_produces_the_reference_stream() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let name = |role: &str| unique(&format!("cli.{role}"));
    let topics = Topics {
        touchpoints: name("touchpoints"),
        control: name("control"),
        actions: name("actions"),
        audit: name("audit"),
        dead_letters: name("dlq"),
        changelog: Some(name("changelog")),
        owners: Some(name("owners")),
        snapshots: None,
    };
    let config = topics.config(dir.path(), &broker, &unique("cli"));
    let config_arg = config.to_str().unwrap();
    let kafka = |args: &[&str]| {
        let mut all = vec!["kafka", "--kafka-config", config_arg];
        all.extend_from_slice(args);
        canvass_tests::canvass(&all)
    };
    let created = kafka(&["create-topics", "--partitions", "1"]);
    assert!(
        created.status.success(),
        "{}",
        canvass_tests::stderr(&created)
    );
    let said = canvass_tests::stdout(&created);
    assert_eq!(said.matches("created ").count(), 7, "{said}");
    assert!(
        said.contains(&format!(
            "created {}: owners",
            topics.owners.as_deref().unwrap()
        )) && said.contains("cleanup.policy=compact"),
        "the owners directory, compacted: {said}"
    );
    assert!(
        said.contains(&format!("created {}: control", topics.control))
            && said.contains("retention.ms=-1"),
        "{said}"
    );
    assert!(
        said.contains(&format!(
            "created {}: changelog",
            topics.changelog.as_deref().unwrap()
        )),
        "the changelog, with as many partitions as the touchpoints: {said}"
    );
    let again = kafka(&["create-topics"]);
    assert_eq!(again.status.code(), Some(2));
    assert_eq!(
        canvass_tests::stdout(&again)
            .matches("not created ")
            .count(),
        7
    );
    // A set-up step that runs at every start leaves existing topics as they are.
    let once_more = kafka(&["create-topics", "--if-missing"]);
    assert!(
        once_more.status.success(),
        "{}",
        canvass_tests::stdout(&once_more)
    );
    assert_eq!(
        canvass_tests::stdout(&once_more).matches("exists ").count(),
        7,
        "{}",
        canvass_tests::stdout(&once_more)
    );

    // The stream in its phases: commands, contacts, the trial's launch, the events.
    let stream = std::fs::read_to_string(example("stream.jsonl")).unwrap();
    let mut phases: Vec<Vec<&str>> = vec![Vec::new()];
    let mut last = "command";
    for line in stream.lines() {
        let kind = ["command", "contact", "event"]
            .into_iter()
            .find(|k| {
                line.starts_with(&format!("{{\"at\":\"2026-03-02T09:00:00Z\",\"{k}\""))
                    || line.starts_with(&format!("{{\"{k}\""))
            })
            .unwrap_or(last);
        if kind != last {
            phases.push(Vec::new());
            last = kind;
        }
        phases.last_mut().unwrap().push(line);
    }
    assert_eq!(phases.len(), 4, "commands, contacts, launch, events");
    let data = dir.path().join("data");
    let args = engine_args(&data, &config, "event");
    for (i, phase) in phases.iter().enumerate() {
        let file = dir.path().join(format!("phase-{i}.jsonl"));
        std::fs::write(&file, phase.join("\n") + "\n").unwrap();
        let produced = kafka(&["produce", "--input", file.to_str().unwrap(), "--keep-bad"]);
        assert!(
            produced.status.success(),
            "{}",
            canvass_tests::stderr(&produced)
        );
        run_engine_until_idle(&args);
    }
    assert_reference_outcome(&broker, &topics, &data, 1);
    assert_eq!(
        broker.read_all(&topics.dead_letters).len(),
        3,
        "the three lines that are not inputs, parked"
    );

    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"contact\": {\"id\": \"c-x\"}}\nnot json\n").unwrap();
    let refused = kafka(&["produce", "--input", bad.to_str().unwrap()]);
    assert_eq!(refused.status.code(), Some(2));
    let why = canvass_tests::stderr(&refused);
    assert!(
        why.contains(&format!("{}:2: not an input", bad.display())),
        "{why}"
    );
    assert!(
        canvass_tests::stdout(&refused).contains("produced 1 touchpoints"),
        "{}",
        canvass_tests::stdout(&refused)
    );
}

/// One engine of several in a group, followed through its log: the touchpoint partitions
/// it was last assigned and the positions it last said it committed.
struct Member {
    running: canvass_tests::Running,
    assigned: BTreeSet<i32>,
    positions: BTreeMap<String, i64>,
    /// Frames restored from the changelog, by partition, as the engine logged them.
    restored: BTreeMap<i32, u64>,
    /// Partitions it stopped serving on another engine's claim.
    fenced: BTreeSet<i32>,
    /// Restores that rebuilt a copy which had gone its own way, and that began with a
    /// snapshot.
    rebuilt: usize,
    from_snapshot: usize,
    /// Partitions it wrote a snapshot of.
    snapshots: BTreeSet<i32>,
}

impl Member {
    fn start(args: &[String]) -> Self {
        Self {
            running: start_ready(args, true),
            assigned: BTreeSet::new(),
            positions: BTreeMap::new(),
            restored: BTreeMap::new(),
            fenced: BTreeSet::new(),
            rebuilt: 0,
            from_snapshot: 0,
            snapshots: BTreeSet::new(),
        }
    }

    /// Reads the log events that came so far.
    fn pump(&mut self) {
        while let Ok(line) = self.running.lines.try_recv() {
            let event: Value = serde_json::from_str(&line).unwrap_or_default();
            let fields = &event["fields"];
            let message = fields["message"].as_str().unwrap_or_default();
            let partition = || {
                fields["source"]
                    .as_str()
                    .and_then(|s| s.rsplit('/').next())
                    .and_then(|p| p.parse::<i32>().ok())
            };
            if message.starts_with("assigned") {
                if let Some(p) = partition() {
                    self.fenced.remove(&p);
                }
                // Where it resumes is what it holds (restored, or its own).
                if let (Some(source), Some(offset)) =
                    (fields["source"].as_str(), fields["offset"].as_i64())
                {
                    let source = source.strip_prefix("kafka:").unwrap_or(source);
                    self.positions.insert(source.to_string(), offset);
                }
                self.assigned.extend(partition());
            } else if message.starts_with("revoked") {
                if let Some(p) = partition() {
                    self.assigned.remove(&p);
                }
            } else if message == "another engine claimed the partition: it is no longer served here"
            {
                if let Some(p) = fields["partition"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                {
                    self.fenced.insert(p);
                }
            } else if message == "snapshot written" {
                if let Some(p) = fields["partition"]
                    .as_i64()
                    .and_then(|p| i32::try_from(p).ok())
                {
                    self.snapshots.insert(p);
                }
            } else if message.starts_with("restored from the changelog") {
                if fields["rebuilt"].as_bool() == Some(true) {
                    self.rebuilt += 1;
                }
                if fields["snapshot_frame"].as_u64().is_some() {
                    self.from_snapshot += 1;
                }
                if let (Some(p), Some(frames)) = (
                    fields["partition"]
                        .as_i64()
                        .and_then(|p| i32::try_from(p).ok()),
                    fields["frames"].as_u64(),
                ) {
                    *self.restored.entry(p).or_default() += frames;
                }
            } else if message == "progress" {
                for at in fields["positions"].as_str().unwrap_or_default().split(' ') {
                    if let Some((source, offset)) = at.rsplit_once('@') {
                        self.positions
                            .insert(source.to_string(), offset.parse().unwrap_or(0));
                    }
                }
            }
        }
    }

    fn holds(&self, topic: &str, partition: i32, end: i64) -> bool {
        self.positions
            .get(&format!("{topic}/{partition}"))
            .is_some_and(|&at| at >= end)
    }
}

/// Waits (pumping every member's log) until `done` holds.
fn wait_members(members: &mut [Member], what: &str, done: impl Fn(&[Member]) -> bool) {
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        members.iter_mut().for_each(Member::pump);
        if done(members) {
            return;
        }
        for m in members.iter_mut() {
            if let Ok(Some(status)) = m.running.child.try_wait() {
                panic!("an engine exited ({status}) while waiting for {what}");
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "waited 3 minutes for {what}: assigned {:?}, positions {:?}",
            members.iter().map(|m| &m.assigned).collect::<Vec<_>>(),
            members.iter().map(|m| &m.positions).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The arguments of an engine that keeps running (a member of a group), with its data in
/// `data` and metrics served.
fn member_args(data: &Path, config: &Path) -> Vec<String> {
    let mut args: Vec<String> = engine_args(data, config, "event")
        .into_iter()
        .filter(|a| a != "--exit-when-caught-up")
        .collect();
    args.extend(["--metrics-addr".to_string(), "127.0.0.1:0".to_string()]);
    args
}

/// One member, started alone on a group of four partitions, once it owns every one.
fn start_alone(args: &[String]) -> Vec<Member> {
    let mut members = vec![Member::start(args)];
    wait_members(
        &mut members,
        "the first engine to take every partition",
        |m| m[0].assigned.len() == 4,
    );
    members
}

/// Waits until two members split four partitions between them.
fn wait_split(members: &mut [Member]) {
    wait_members(members, "the two engines to split the partitions", |m| {
        !m[0].assigned.is_empty()
            && !m[1].assigned.is_empty()
            && m[0].assigned.is_disjoint(&m[1].assigned)
            && m[0].assigned.len() + m[1].assigned.len() == 4
    });
}

/// The member that owns touchpoint partition `p`, if one does.
fn owner_of(members: &[Member], p: i32) -> Option<usize> {
    members.iter().position(|m| m.assigned.contains(&p))
}

/// Produces a phase (commands, or touchpoints placed as the Java client does) and waits
/// until the members applied it: every member with partitions holds the control topic's
/// end, or each touchpoint partition's owner holds its end (`ends`, counted from the
/// broker's acknowledgements, kept across phases).
fn feed_members(
    broker: &Broker,
    topics: &Topics,
    members: &mut [Member],
    ends: &mut [i64],
    phase: &[Produce],
) {
    let placed = broker.produce_placed(phase, "murmur2_random");
    if phase[0].topic == topics.control {
        let control_end = placed.iter().map(|&(_, offset)| offset + 1).max().unwrap();
        wait_members(members, "every engine to apply the commands", |m| {
            m.iter()
                .all(|m| m.assigned.is_empty() || m.holds(&topics.control, 0, control_end))
        });
    } else {
        Broker::ends_after(ends, &placed);
        wait_members(members, "the owners to apply the touchpoints", |m| {
            (0..4).all(|p| {
                owner_of(m, p).is_some_and(|o| m[o].holds(&topics.touchpoints, p, ends[p as usize]))
            })
        });
    }
}

/// Waits until each member's outbox is sampled empty. Actions go out beside the loop: the
/// sample must have begun after the member's last input (the one running at the first scrape
/// may predate it).
fn wait_outboxes_sampled_empty(members: &mut [Member]) {
    let samples = |m: &Member| {
        let (scrape, _) = canvass_tests::scrape(m.running.metrics.as_deref().unwrap());
        let taken = canvass_tests::sample(&scrape, "canvass_metrics_samples_total", &[]);
        let queued = canvass_tests::sample_sum(&scrape, "canvass_outbox_actions", &[]);
        (taken.unwrap_or(0.0), queued)
    };
    let before: Vec<f64> = members.iter().map(|m| samples(m).0).collect();
    wait_members(members, "every outbox to be sampled empty", |m| {
        m.iter().zip(&before).all(|(m, &before)| {
            let (taken, queued) = samples(m);
            taken >= before + 2.0 && queued == 0.0
        })
    });
}

/// The lines of `stream` a keyed Kafka run has: events without a contact (keyless, so on a
/// random partition) are left out.
fn keyed_lines(stream: &str) -> String {
    let mut lines = Vec::new();
    for line in stream.lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let keep = v.get("command").is_some()
            || v.get("contact").is_some()
            || v["event"]["contactId"].is_string();
        if keep {
            lines.push(line);
        }
    }
    lines.join("\n") + "\n"
}

/// Asserts that two partitions hold the same projections (stored offsets aside), showing
/// the keys that differ.
fn assert_same_state(left: &canvass_store::Store, right: &canvass_store::Store, what: &str) {
    let difference =
        canvass_tests::dump_difference(&without_offsets(left), &without_offsets(right));
    assert!(
        difference.is_none(),
        "{what}: {}",
        difference.unwrap_or_default()
    );
}

/// A partition's projections without its stored offsets (their keys name the topics).
fn without_offsets(store: &canvass_store::Store) -> Vec<KeyValue> {
    store
        .projection_dump()
        .unwrap()
        .into_iter()
        .filter(|(k, _)| k[0] != b'S')
        .collect()
}

/// Two engines in one group, each with its own data directory, split a four-partition
/// touchpoints topic; each reads the whole control topic itself. Every contact is enrolled
/// by the engine that owns its partition, and each partition's state is the one a file run
/// on four partitions gives it: what one engine does, two do between them.
#[test]
fn two_engines_in_one_group_share_the_partitions_and_each_sees_every_command() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "duo", 4);
    let config = topics.config(dir.path(), &broker, &unique("duo"));
    let follow = |name: &str| member_args(&dir.path().join(name), &config);
    let mut members = start_alone(&follow("a"));
    members.push(Member::start(&follow("b")));
    wait_split(&mut members);

    // The reference stream in its phases, each applied before the next is produced; events
    // without a contact (keyless, so on a random partition) are left out.
    let mut p = phases(&topics, 1);
    p.events.retain(|e| e.key.is_some());
    let mut ends = vec![0; 4];
    for phase in [&p.commands, &p.contacts, &p.launch, &p.events] {
        feed_members(&broker, &topics, &mut members, &mut ends, phase);
    }
    let owners: Vec<usize> = (0..4).map(|p| owner_of(&members, p).unwrap()).collect();
    wait_outboxes_sampled_empty(&mut members);
    // Operators see the split in each engine's metrics.
    for (i, m) in members.iter().enumerate() {
        let (scrape, text) = canvass_tests::scrape(m.running.metrics.as_deref().unwrap());
        for (p, &owner) in owners.iter().enumerate() {
            let owned = canvass_tests::sample(
                &scrape,
                "canvass_kafka_partition_owned",
                &[("partition", &p.to_string())],
            );
            assert_eq!(
                owned,
                Some(if owner == i { 1.0 } else { 0.0 }),
                "engine {i}, partition {p}:\n{text}"
            );
        }
    }
    for m in &mut members {
        assert!(
            m.running
                .child
                .terminate_within(Duration::from_secs(60))
                .is_some_and(|s| s.success()),
            "an engine did not stop cleanly"
        );
    }
    assert!(owners.contains(&0) && owners.contains(&1), "{owners:?}");

    // The same inputs from a file, on four partitions.
    let (file_data, from_file) =
        file_run_on_four_partitions(dir.path(), &keyed_lines(&reference_stream(1)));

    let file = canvass_tests::stores(&file_data);
    let engines = [
        canvass_tests::stores(dir.path().join("a")),
        canvass_tests::stores(dir.path().join("b")),
    ];
    let mut enrolled = 0;
    for part in 0..4u32 {
        let owner = &engines[owners[part as usize]];
        let other = &engines[1 - owners[part as usize]];
        enrolled += owner.partition(part).contact_ids(0).count();
        assert_same_state(
            owner.partition(part),
            file.partition(part),
            &format!(
                "partition {part} (owners {owners:?}): its owner's state (left) and the file run's (right)"
            ),
        );
        assert_eq!(
            other.partition(part).last_seq().unwrap(),
            0,
            "partition {part}: the engine that does not own it logged nothing in it"
        );
    }
    assert!(enrolled > 250, "{enrolled} contacts");

    // Every action once, as the file run has it.
    let from_kafka = published_once(&broker, &topics);
    assert_eq!(
        from_kafka, from_file,
        "two engines on Kafka and one file run"
    );
}

/// Stops every member cleanly (SIGTERM), each within a minute.
fn stop_members<'a>(members: impl IntoIterator<Item = &'a mut Member>, what: &str) {
    for m in members {
        assert!(
            m.running
                .child
                .terminate_within(Duration::from_secs(60))
                .is_some_and(|s| s.success()),
            "{what} did not stop cleanly"
        );
    }
}

/// Asserts that the data directory `data` holds, partition by partition, what a file run on
/// four partitions of the reference stream holds (made in `dir`); the file run's actions.
fn assert_as_file_run(dir: &Path, data: &Path, what: &str) -> BTreeMap<String, v1::Action> {
    // A run of its own each time, never one resumed.
    let run_dir = tempfile::tempdir_in(dir).unwrap();
    let (file_data, from_file) =
        file_run_on_four_partitions(run_dir.path(), &keyed_lines(&reference_stream(1)));
    let file = canvass_tests::stores(&file_data);
    let stores = canvass_tests::stores(data);
    for part in 0..4u32 {
        assert_same_state(
            stores.partition(part),
            file.partition(part),
            &format!("partition {part}: {what} (left) and the file run's (right)"),
        );
    }
    from_file
}

/// Every action of a run on Kafka where partitions moved: each key once or more (an action in
/// flight when its partition moved goes out again), never two contents under one key.
fn published_at_least_once(broker: &Broker, topics: &Topics) -> BTreeMap<String, v1::Action> {
    let mut by_key: BTreeMap<String, v1::Action> = BTreeMap::new();
    for r in broker.read_all(&topics.actions) {
        let a: v1::Action = json::from_str(&r.text()).unwrap();
        if let Some(before) = by_key.get(&a.idempotency_key) {
            assert_eq!(before, &a, "two different actions under one key");
        }
        by_key.insert(a.idempotency_key.clone(), a);
    }
    by_key
}

/// Scale 1 -> 2 -> 1 mid-stream, each engine with its own data directory: the partitions the
/// second engine is given come with their state from Kafka (the last snapshot the first
/// wrote, then the changelog's frames after it), and when the first stops, the second takes
/// the rest the same way. At the end the second engine alone holds every partition exactly
/// as a file run on four partitions does, and every action of that run was published, with
/// its content.
#[test]
fn partitions_that_move_between_engines_take_their_state_from_the_changelog() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "handoff", 4)
        .with_changelog(&broker, 4)
        .with_snapshots(&broker, 4, 20);
    let config = topics.config(dir.path(), &broker, &unique("handoff"));
    let follow = |name: &str| member_args(&dir.path().join(name), &config);
    let mut members = start_alone(&follow("a"));

    let mut p = phases(&topics, 1);
    p.events.retain(|e| e.key.is_some());
    let third = p.events.len() / 3;
    let events_late = p.events.split_off(2 * third);
    let events_middle = p.events.split_off(third);
    let events_early = std::mem::take(&mut p.events);
    let mut ends = vec![0; 4];
    let mut feed = |members: &mut Vec<Member>, phase: &[Produce]| {
        feed_members(&broker, &topics, members, &mut ends, phase);
    };
    for phase in [&p.commands, &p.contacts, &p.launch, &events_early] {
        feed(&mut members, phase);
    }
    wait_members(&mut members, "a snapshot of every partition", |m| {
        m[0].snapshots.len() == 4
    });

    // 1 -> 2: the second engine, with nothing of its own, is given some partitions.
    members.push(Member::start(&follow("b")));
    wait_split(&mut members);
    let given: BTreeSet<i32> = members[1].assigned.clone();
    assert!(
        given.iter().all(|p| members[1].restored.contains_key(p)),
        "the second engine restored each partition it was given from the changelog: given {given:?}, restored {:?}",
        members[1].restored
    );
    feed(&mut members, &events_middle);

    // 2 -> 1: the first engine stops; the second takes the rest.
    let mut first = members.remove(0);
    assert!(
        first
            .running
            .child
            .terminate_within(Duration::from_secs(60))
            .is_some_and(|s| s.success()),
        "the first engine did not stop cleanly"
    );
    wait_members(
        &mut members,
        "the second engine to take every partition",
        |m| m[0].assigned.len() == 4,
    );
    assert!(
        (0..4).all(|p| members[0].restored.contains_key(&p)),
        "every partition came to the second engine through the changelog: {:?}",
        members[0].restored
    );
    assert_eq!(
        members[0].from_snapshot, 4,
        "each partition came to the second engine, which had nothing of it, as a snapshot and the frames after it"
    );
    feed(&mut members, &events_late);
    wait_outboxes_sampled_empty(&mut members);
    stop_members(&mut members, "the second engine");

    let from_file =
        assert_as_file_run(dir.path(), &dir.path().join("b"), "the last engine's state");
    let from_kafka = published_at_least_once(&broker, &topics);
    assert_eq!(
        from_kafka.keys().collect::<Vec<_>>(),
        from_file.keys().collect::<Vec<_>>(),
        "the actions' keys on Kafka and in the file run"
    );
    assert_eq!(
        from_kafka, from_file,
        "the actions on Kafka and in the file run"
    );
}

/// Pauses (SIGSTOP) or resumes (SIGCONT) a process.
fn signal(child: &canvass_tests::KillOnDrop, which: &str) {
    let status = Command::new("kill")
        .args([which, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success(), "kill {which} failed");
}

/// A zombie: engine A, paused, keeps its membership (and its four partitions) in its group
/// while engine B, in another group on the same topics and changelog, takes the partitions
/// over (as the group of a paused engine does once its session lapses). When A wakes, the
/// records it reads are not its to apply: B's claims in the changelog tell A the partitions
/// were taken, and it stops serving them, whatever its group says; frames it shipped before
/// it noticed count for nobody. B ends exactly as a file run does, every action of that run
/// was published, never two contents under one key; and A, started again in B's group with
/// its own directory, rebuilds what went its own way and ends where B did.
#[test]
fn an_engine_that_lost_its_partitions_without_noticing_makes_nothing_count() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "zombie", 4).with_changelog(&broker, 4);
    let group_b = unique("zombie-b");
    let config_b = topics.config(dir.path(), &broker, &group_b);
    // A's session outlasts its pause: its group never moves its partitions.
    let config_a = topics.config(dir.path(), &broker, &unique("zombie-a"));
    let text = std::fs::read_to_string(&config_a)
        .unwrap()
        .replace("\"6000\"", "\"120000\"")
        .replace("\"10000\"", "\"240000\"");
    std::fs::write(&config_a, text).unwrap();
    let mut a = vec![Member::start(&member_args(
        &dir.path().join("a"),
        &config_a,
    ))];
    wait_members(&mut a, "engine A to take every partition", |m| {
        m[0].assigned.len() == 4
    });
    let mut p = phases(&topics, 1);
    p.events.retain(|e| e.key.is_some());
    let half = p.events.len() / 2;
    let events_late = p.events.split_off(half);
    let events_early = std::mem::take(&mut p.events);
    let mut ends = vec![0; 4];
    for phase in [&p.commands, &p.contacts, &p.launch, &events_early] {
        feed_members(&broker, &topics, &mut a, &mut ends, phase);
    }

    signal(&a[0].running.child, "-STOP");
    let mut b = vec![Member::start(&member_args(
        &dir.path().join("b"),
        &config_b,
    ))];
    wait_members(&mut b, "engine B to take every partition over", |m| {
        m[0].assigned.len() == 4 && (0..4).all(|p| m[0].restored.contains_key(&p))
    });
    // What arrives while A sleeps is B's alone.
    let (late_one, late_two) = events_late.split_at(events_late.len() / 2);
    feed_members(&broker, &topics, &mut b, &mut ends, late_one);
    signal(&a[0].running.child, "-CONT");
    wait_members(
        &mut a,
        "engine A to learn the partitions were claimed",
        |m| m[0].fenced.len() == 4,
    );
    assert_eq!(
        a[0].assigned.len(),
        4,
        "A's group still gives it every partition"
    );
    feed_members(&broker, &topics, &mut b, &mut ends, late_two);
    wait_outboxes_sampled_empty(&mut b);
    stop_members(a.iter_mut().chain(b.iter_mut()), "an engine");

    let from_file = assert_as_file_run(dir.path(), &dir.path().join("b"), "B's state");
    let from_kafka = published_at_least_once(&broker, &topics);
    assert_eq!(
        from_kafka, from_file,
        "the actions on Kafka (each key at least once, one content) and in the file run"
    );

    // A again, in B's group, on its own directory.
    let mut again = vec![Member::start(&member_args(
        &dir.path().join("a"),
        &config_b,
    ))];
    wait_members(&mut again, "A to take every partition in B's group", |m| {
        m[0].assigned.len() == 4 && (0..4).all(|p| m[0].restored.contains_key(&p))
    });
    eprintln!(
        "A's copies rebuilt because they went their own way: {}",
        again[0].rebuilt
    );
    stop_members(&mut again, "A");
    assert_as_file_run(
        dir.path(),
        &dir.path().join("a"),
        "A's state after its restart",
    );
}

/// An engine whose partitioner differs from the one its group's claims state refuses to go
/// on, naming the conflict: it would place contacts on other partitions than its peers.
#[test]
fn an_engine_with_another_partitioner_than_its_group_stops_naming_the_conflict() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "layout", 4).with_changelog(&broker, 4);
    let group = unique("layout");
    let config = topics.config(dir.path(), &broker, &group);
    let mut first = vec![Member::start(&member_args(&dir.path().join("a"), &config))];
    wait_members(
        &mut first,
        "the first engine to claim every partition",
        |m| m[0].assigned.len() == 4 && m[0].restored.len() == 4,
    );
    let other = dir.path().join("consistent.toml");
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "max_wait_ms = 5",
        "partitioner = \"consistent\"\nmax_wait_ms = 5",
        1,
    );
    std::fs::write(&other, text).unwrap();
    let mut second = start_ready(&member_args(&dir.path().join("b"), &other), true);
    let status = canvass_tests::wait_within(&mut second.child, Duration::from_secs(120))
        .expect("the second engine stops once it meets the first engine's claim");
    assert!(!status.success(), "it stops with an error");
    let said: Vec<String> = second.lines.try_iter().collect();
    assert!(
        said.iter().any(|l| l.contains("\"4 murmur2\"")
            || (l.contains("4 murmur2") && l.contains("4 consistent"))),
        "the error names both layouts: {said:#?}"
    );
    assert!(
        first[0].running.child.try_wait().unwrap().is_none(),
        "the first engine goes on"
    );
}

/// A small, seeded generator of the chaos test's moments (no dependency needed).
struct Moments(u64);

impl Moments {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// Waits until every touchpoint partition's owner (a member that has it assigned and was
/// not told another engine claimed it) holds `ends`.
fn wait_applied(members: &mut [Member], topics: &Topics, ends: &[i64], what: &str) {
    wait_members(members, what, |m| {
        (0..4).all(|p| {
            m.iter().any(|m| {
                m.assigned.contains(&p)
                    && !m.fenced.contains(&p)
                    && m.holds(&topics.touchpoints, p, ends[p as usize])
            })
        })
    });
}

/// Three engines of the real binary in one group, their partitions moving through the
/// changelog and snapshots while the test scales them 1 -> 3 -> 1 and, in between, kills
/// one at a random moment (SIGKILL, then started again on its directory) ten times and
/// pauses one past its session timeout (SIGSTOP, SIGCONT) twice. The moments come from a
/// seed, printed (set `CANVASS_TEST_SEED` to replay them). At the end, with the event clock,
/// every partition's state is the one a file run on four partitions gives it, and every
/// action of that run was published, never two contents under one key.
#[test]
#[ignore = "one partition was seen to apply an event as late after partitions moved (docs/ARCHITECTURE.md, Known limits): run with --ignored"]
fn three_engines_killed_and_paused_at_random_moments_end_as_one_file_run() {
    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let seed = canvass_tests::seed_from_env("CANVASS_TEST_SEED");
    eprintln!("chaos seed {seed} (CANVASS_TEST_SEED={seed} replays these moments)");
    let mut moments = Moments(seed);
    let topics = Topics::create(&broker, "chaos", 4)
        .with_changelog(&broker, 4)
        .with_snapshots(&broker, 4, 40);
    let config = topics.config(dir.path(), &broker, &unique("chaos"));
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(&grpc, canvass_tests::api::settings()).unwrap();
    let args = |slot: usize| {
        let mut args = member_args(&dir.path().join(format!("engine-{slot}")), &config);
        args.extend(["--grpc-config".to_string(), grpc.display().to_string()]);
        args
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut members = start_alone(&args(0));
    let mut p = phases(&topics, 1);
    p.events.retain(|e| e.key.is_some());
    let mut ends = vec![0; 4];
    for phase in [&p.commands, &p.contacts, &p.launch] {
        feed_members(&broker, &topics, &mut members, &mut ends, phase);
    }

    // 1 -> 3.
    members.push(Member::start(&args(1)));
    members.push(Member::start(&args(2)));
    wait_members(&mut members, "three engines to share the partitions", |m| {
        let all: BTreeSet<i32> = m.iter().flat_map(|m| m.assigned.iter().copied()).collect();
        all.len() == 4
            && m.iter().map(|m| m.assigned.len()).sum::<usize>() == 4
            && m.iter().all(|m| !m.assigned.is_empty())
    });

    // Ten kills and two pauses, in a seeded order, each a moment after a slice of events.
    let mut disruptions: Vec<&str> = vec!["kill"; 10];
    disruptions.extend(["pause"; 2]);
    for i in (1..disruptions.len()).rev() {
        disruptions.swap(i, moments.below(i as u64 + 1) as usize);
    }
    let slices = disruptions.len() + 1;
    let per_slice = p.events.len().div_ceil(slices);
    let mut slices: Vec<Vec<Produce>> = p
        .events
        .chunks(per_slice)
        .map(<[Produce]>::to_vec)
        .collect();
    let last_slice = slices.pop().unwrap();
    for (slice, disruption) in slices.iter().zip(&disruptions) {
        let slot = moments.below(3) as usize;
        let delay = Duration::from_millis(moments.below(1500));
        // Half the slices through the gRPC API of an engine picked at random: it applies
        // what it owns and writes the rest to the touchpoints topic for their owners.
        let through = (moments.below(2) == 0).then(|| moments.below(3) as usize);
        eprintln!(
            "chaos: {} events{}, then in {delay:?} {disruption} engine {slot}",
            slice.len(),
            through.map_or(String::new(), |e| format!(" through engine {e}'s API"))
        );
        match through {
            None => {
                let placed = broker.produce_placed(slice, "murmur2_random");
                Broker::ends_after(&mut ends, &placed);
            }
            Some(first) => {
                let addresses: Vec<String> = members
                    .iter()
                    .map(|m| m.running.grpc.clone().unwrap())
                    .collect();
                let refused = rt.block_on(ingest_through_api(&addresses, first, slice));
                if !refused.is_empty() {
                    let placed = broker.produce_placed(&refused, "murmur2_random");
                    Broker::ends_after(&mut ends, &placed);
                }
                let written = broker.ends(&topics.touchpoints, 4);
                for (end, now) in ends.iter_mut().zip(written) {
                    *end = (*end).max(now);
                }
            }
        }
        std::thread::sleep(delay);
        match *disruption {
            "kill" => {
                let mut killed = members.remove(slot);
                killed.running.child.kill().unwrap();
                let _ = killed.running.child.wait();
                // Started again once its session lapsed. Tansu 0.6 never evicts a member
                // whose session lapsed while the others heartbeat (its partitions stay
                // assigned to nobody alive until the group rebalances for another reason),
                // and a member that joins before then makes a generation that still holds
                // the dead one (docs/ARCHITECTURE.md, "Broker gaps").
                std::thread::sleep(Duration::from_secs(8));
                members.insert(slot, Member::start(&args(slot)));
            }
            _ => {
                signal(&members[slot].running.child, "-STOP");
                // Past the session timeout (6 s): the group moves its partitions.
                std::thread::sleep(Duration::from_secs(9));
                signal(&members[slot].running.child, "-CONT");
            }
        }
        wait_applied(
            &mut members,
            &topics,
            &ends,
            "the slice to be applied by the owners",
        );
    }

    // 3 -> 1.
    for slot in [2, 1] {
        let mut leaving = members.remove(slot);
        assert!(
            leaving
                .running
                .child
                .terminate_within(Duration::from_secs(60))
                .is_some_and(|s| s.success()),
            "engine {slot} did not stop cleanly"
        );
    }
    wait_members(
        &mut members,
        "the first engine to take every partition back",
        |m| m[0].assigned.len() == 4,
    );
    let placed = broker.produce_placed(&last_slice, "murmur2_random");
    Broker::ends_after(&mut ends, &placed);
    wait_applied(&mut members, &topics, &ends, "the last slice to be applied");
    wait_outboxes_sampled_empty(&mut members);
    stop_members(&mut members, "the last engine");
    let from_file = assert_as_file_run(
        dir.path(),
        &dir.path().join("engine-0"),
        &format!("seed {seed}: the last engine's state"),
    );
    let from_kafka = published_at_least_once(&broker, &topics);
    assert_eq!(
        from_kafka, from_file,
        "seed {seed}: the actions on Kafka (each key at least once, one content) and in the file run"
    );
}

/// Sends a slice of touchpoint records as events through the gRPC API of the engine at
/// `addresses[first]` (the next one if a call fails: event ids dedupe a resent event), each
/// acknowledged before the next; returns the records the API refuses (malformed), for the
/// topic.
async fn ingest_through_api(addresses: &[String], first: usize, slice: &[Produce]) -> Vec<Produce> {
    use canvass_server::api::ingest_service_client::IngestServiceClient;
    let mut refused = Vec::new();
    for r in slice {
        let event = std::str::from_utf8(&r.payload)
            .ok()
            .and_then(|text| json::from_str::<v1::IngestRecord>(text).ok())
            .filter(|record| canvass_engine::durable::check_record(record).is_none())
            .and_then(|record| match record.input {
                Some(v1::ingest_record::Input::Event(e)) => Some(e),
                _ => None,
            });
        let Some(event) = event else {
            refused.push(r.clone());
            continue;
        };
        let mut tries = 0;
        loop {
            let address = &addresses[(first + tries) % addresses.len()];
            let answer = async {
                let channel = tonic::transport::Channel::from_shared(format!("http://{address}"))
                    .unwrap()
                    .connect()
                    .await
                    .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
                IngestServiceClient::new(channel)
                    .ingest_event(canvass_tests::api::req(
                        canvass_tests::api::SERVICE,
                        v1::IngestEventRequest {
                            event: Some(event.clone()),
                        },
                    ))
                    .await
            };
            match answer.await {
                Ok(_) => break,
                Err(e) => {
                    tries += 1;
                    assert!(tries < 30, "no engine took event {}: {e}", event.id);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        }
    }
    refused
}

/// One API over two engines: gRPC ingest to one engine reaches the partitions the other owns
/// (written to the touchpoints topic once the broker acknowledged it), a command sent to one
/// is applied by both, and either engine's reports, contacts and groups answer for every
/// partition, as one file run of the same input.
#[test]
fn any_engine_of_a_group_answers_for_every_partition() {
    use canvass_server::api::{
        campaign_service_client::CampaignServiceClient,
        contact_service_client::ContactServiceClient, ingest_service_client::IngestServiceClient,
        report_service_client::ReportServiceClient,
    };
    use canvass_tests::api::{OPERATOR, READER, SERVICE, connect, req, settings};

    let _heavy = canvass_tests::broker::heavy();
    let broker = broker();
    let dir = tempfile::tempdir().unwrap();
    let topics = Topics::create(&broker, "one-api", 4)
        .with_changelog(&broker, 4)
        .with_owners(&broker);
    let config = topics.config(dir.path(), &broker, &unique("one-api"));
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(&grpc, settings()).unwrap();
    let serving = |name: &str| {
        let mut args = member_args(&dir.path().join(name), &config);
        args.extend(["--grpc-config".to_string(), grpc.display().to_string()]);
        args
    };
    let mut members = start_alone(&serving("a"));
    members.push(Member::start(&serving("b")));
    wait_split(&mut members);
    let owners: Vec<usize> = (0..4).map(|p| owner_of(&members, p).unwrap()).collect();
    let addresses: Vec<String> = members
        .iter()
        .map(|m| m.running.grpc.clone().expect("each engine serves gRPC"))
        .collect();

    // Commands, contacts and the trial's launch through the topics; the events through
    // engine a's gRPC API alone, half of them about engine b's partitions.
    let mut p = phases(&topics, 1);
    p.events.retain(|e| e.key.is_some());
    let mut ends = vec![0; 4];
    for phase in [&p.commands, &p.contacts, &p.launch] {
        feed_members(&broker, &topics, &mut members, &mut ends, phase);
    }
    // Records the API refuses (malformed: the file run parks them as dead letters) go to the
    // topic as they would from a producer; every other event goes through the API.
    let mut events = Vec::new();
    let mut refused = Vec::new();
    for r in &p.events {
        let record = std::str::from_utf8(&r.payload)
            .ok()
            .and_then(|text| json::from_str::<v1::IngestRecord>(text).ok())
            .filter(|record| canvass_engine::durable::check_record(record).is_none());
        match record.and_then(|record| record.input) {
            Some(v1::ingest_record::Input::Event(e)) => events.push(e),
            _ => refused.push(r.clone()),
        }
    }
    if !refused.is_empty() {
        feed_members(&broker, &topics, &mut members, &mut ends, &refused);
    }
    let layout = canvass_store::Layout {
        partitions: 4,
        partitioner: canvass_core::partition::Partitioner::named("murmur2").unwrap(),
    };
    let elsewhere =
        |e: &v1::TouchpointEvent| owners[layout.partition_of(&e.contact_id) as usize] != 0;
    assert!(
        events.iter().any(elsewhere) && !events.iter().all(elsewhere),
        "the events concern both engines' partitions"
    );
    let (streamed, one_by_one) = events.split_at(events.len() / 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let a = connect(&addresses[0]).await;
        let messages: Vec<_> = streamed
            .iter()
            .map(|e| v1::IngestEventsRequest {
                event: Some(e.clone()),
            })
            .collect();
        let answer = IngestServiceClient::new(a.clone())
            .ingest_events(req(SERVICE, tokio_stream::iter(messages)))
            .await
            .unwrap()
            .into_inner();
        let queued = streamed.iter().filter(|e| elsewhere(e)).count() as u64;
        assert_eq!(answer.queued, queued, "{answer:?}");
        assert_eq!(
            answer.accepted + answer.duplicates,
            streamed.len() as u64 - queued
        );
        for e in one_by_one {
            let answer = IngestServiceClient::new(a.clone())
                .ingest_event(req(
                    SERVICE,
                    v1::IngestEventRequest {
                        event: Some(e.clone()),
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            let partition = layout.partition_of(&e.contact_id);
            match answer.queued {
                Some(q) => {
                    assert!(elsewhere(e), "{e:?} is engine a's, yet queued");
                    assert_eq!(
                        (q.topic.as_str(), q.partition),
                        (topics.touchpoints.as_str(), partition)
                    );
                }
                None => assert!(
                    !elsewhere(e) && (answer.seq > 0 || answer.duplicate),
                    "{answer:?}"
                ),
            }
        }
    });
    // Every event acknowledged is applied by the partition's owner.
    let written = broker.ends(&topics.touchpoints, 4);
    wait_members(
        &mut members,
        "the owners to apply the events written for them",
        |m| {
            (0..4).all(|p| {
                owner_of(m, p)
                    .is_some_and(|o| m[o].holds(&topics.touchpoints, p, written[p as usize]))
            })
        },
    );
    wait_outboxes_sampled_empty(&mut members);

    // Either engine's reports are the file run's.
    let run_dir = tempfile::tempdir_in(dir.path()).unwrap();
    let (file_data, _) =
        file_run_on_four_partitions(run_dir.path(), &keyed_lines(&reference_stream(1)));
    let offline = |extra: &[&str]| -> Value {
        let mut args = vec!["report", "--data", file_data.to_str().unwrap(), "--json"];
        args.extend(extra);
        let out = canvass_tests::canvass(&args);
        assert!(out.status.success(), "{}", canvass_tests::stderr(&out));
        serde_json::from_str(&canvass_tests::stdout(&out)).unwrap()
    };
    let (performance, value) = (offline(&[]), offline(&["--value"]));
    let file = canvass_tests::stores(&file_data);
    let b_contact = (0..4u32)
        .filter(|&p| owners[p as usize] == 1)
        .find_map(|p| file.partition(p).contact_ids(0).next())
        .unwrap()
        .unwrap();
    let holdout_members: BTreeSet<String> = file
        .iter()
        .flat_map(|s| {
            s.group_members("b-trial-invite", "holdout")
                .map(Result::unwrap)
                .collect::<Vec<_>>()
        })
        .collect();
    rt.block_on(async {
        let mut states = Vec::new();
        for (i, address) in addresses.iter().enumerate() {
            let channel = connect(address).await;
            let mut reports = ReportServiceClient::new(channel.clone());
            let got = reports
                .get_performance_report(req(READER, v1::GetPerformanceReportRequest::default()))
                .await
                .unwrap()
                .into_inner();
            let got: Value = serde_json::from_str(&got.report_json).unwrap();
            assert_eq!(
                got, performance,
                "engine {i}'s performance report and the file run's"
            );
            let got = reports
                .get_value_report(req(READER, v1::GetValueReportRequest::default()))
                .await
                .unwrap()
                .into_inner();
            let got: Value = serde_json::from_str(&got.report_json).unwrap();
            assert_eq!(got, value, "engine {i}'s value report and the file run's");
            // A contact of engine b's partitions, from either engine.
            let state = ContactServiceClient::new(channel.clone())
                .get_contact(req(
                    READER,
                    v1::GetContactRequest {
                        contact_id: b_contact.clone(),
                    },
                ))
                .await
                .unwrap()
                .into_inner()
                .state
                .unwrap();
            states.push(state);
            // A response group over both engines' partitions.
            let members = ContactServiceClient::new(channel)
                .list_group_members(req(
                    READER,
                    v1::ListGroupMembersRequest {
                        campaign_id: "b-trial-invite".into(),
                        group: "holdout".into(),
                        page_size: 1000,
                        page_token: String::new(),
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            let got: BTreeSet<String> = members.contact_ids.into_iter().collect();
            assert_eq!(got, holdout_members, "engine {i}'s holdout group");
        }
        assert_eq!(
            states[0], states[1],
            "contact {b_contact} from either engine"
        );
        let mut stored = file
            .of_contact(&b_contact)
            .contact(0, &b_contact)
            .unwrap()
            .unwrap();
        stored.recent_events.clear();
        assert_eq!(states[0], stored, "contact {b_contact} and the file run's");
    });
    // The same through the CLI, asking engine b.
    let out = Command::new(canvass_tests::canvass_bin())
        .args([
            "report",
            "--server",
            &format!("http://{}", addresses[1]),
            "--json",
        ])
        .env("CANVASS_TOKEN", READER)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", canvass_tests::stderr(&out));
    let got: Value = serde_json::from_str(&canvass_tests::stdout(&out)).unwrap();
    assert_eq!(got, performance, "`canvass report --server` on engine b");

    // A command sent to engine a reaches both: a owns only some partitions, so it goes to
    // the control topic every engine reads, and a answers once it applied it.
    rt.block_on(async {
        let a = connect(&addresses[0]).await;
        let paused = CampaignServiceClient::new(a)
            .pause_campaign(req(
                OPERATOR,
                v1::PauseCampaignRequest {
                    campaign_id: "b-trial-invite".into(),
                    reason: "one API".into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(paused.seq > 0, "{paused:?}");
        let b = connect(&addresses[1]).await;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            let got = CampaignServiceClient::new(b.clone())
                .get_campaign(req(
                    READER,
                    v1::GetCampaignRequest {
                        campaign_id: "b-trial-invite".into(),
                    },
                ))
                .await
                .unwrap()
                .into_inner();
            let lifecycle = got.lifecycle.unwrap();
            if lifecycle.status() == v1::CampaignStatus::Paused {
                let last = lifecycle.history.last().unwrap();
                assert_eq!(
                    last.actor, "ola",
                    "the caller sent to engine a is its actor on b"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "engine b never paused: {lifecycle:?}"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    stop_members(&mut members, "an engine");
}
