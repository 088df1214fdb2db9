//! Scale-out on Kafka: how long a partition takes to move to a new owner (the last snapshot
//! and the frames after it, beside the changelog alone), and records/s with several engines
//! of one group on this machine, beside one engine without a changelog. The engines run in
//! this process, each with its own data directory, through `canvass_kafka::run`, as
//! `canvass run --kafka-config` runs them.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use canvass_engine::{
    Partitions,
    durable::{ClockMode, EngineOptions, Incoming, Sourced},
};
use canvass_kafka::{CommitHook, KafkaConfig, KafkaReport, KafkaRunOptions};
use canvass_proto::v1;
use canvass_store::{StoreOptions, Stores, Wanted};
use rdkafka::{
    Offset, TopicPartitionList,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer as _},
    producer::{FutureProducer, FutureRecord},
};

use crate::kafka::{client, unique};
use crate::{T0, event, median, settle, setup_commands};

/// Creates an engine's topics (`partitions` touchpoint partitions; a changelog and, with
/// `snapshots`, a snapshots topic of as many when `changelog`) and its settings.
fn topics(
    broker: &str,
    partitions: i32,
    changelog: bool,
    snapshots: bool,
) -> anyhow::Result<KafkaConfig> {
    let mut config = KafkaConfig {
        brokers: broker.to_string(),
        ..KafkaConfig::default()
    };
    config.apply_env(std::env::vars())?;
    config.topics.touchpoints = unique("touchpoints");
    config.topics.control = unique("control");
    config.topics.actions = unique("actions");
    config.topics.audit = unique("audit");
    config.topics.dead_letters = unique("dlq");
    config.topics.changelog = changelog.then(|| unique("changelog"));
    config.topics.snapshots = (changelog && snapshots).then(|| unique("snapshots"));
    // A stop waits for a snapshot being written (a large one takes a while).
    config.shutdown_timeout_ms = 600_000;
    let mut wanted = vec![
        (config.topics.touchpoints.clone(), partitions),
        (config.topics.control.clone(), 1),
        (config.topics.actions.clone(), partitions),
        (config.topics.audit.clone(), 1),
        (config.topics.dead_letters.clone(), 1),
    ];
    wanted.extend(
        config
            .topics
            .changelog
            .iter()
            .map(|t| (t.clone(), partitions)),
    );
    wanted.extend(
        config
            .topics
            .snapshots
            .iter()
            .map(|t| (t.clone(), partitions)),
    );
    let new: Vec<NewTopic<'_>> = wanted
        .iter()
        .map(|(name, n)| NewTopic::new(name, *n, TopicReplication::Fixed(1)))
        .collect();
    let admin: AdminClient<DefaultClientContext> = client(broker).create()?;
    for r in futures::executor::block_on(admin.create_topics(&new, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create {t}: {e}"))?;
    }
    Ok(config)
}

fn producer(config: &KafkaConfig) -> anyhow::Result<FutureProducer> {
    Ok(client(&config.brokers)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?)
}

/// Produces the bench campaign's commands to the control topic (not timed).
fn launch(config: &KafkaConfig) -> anyhow::Result<()> {
    let producer = producer(config)?;
    for command in setup_commands()? {
        let Incoming::Record(record) = command.incoming else {
            unreachable!("the setup is commands")
        };
        let Some(v1::ingest_record::Input::Command(c)) = &record.input else {
            unreachable!("the setup is commands")
        };
        let payload = canvass_proto::json::to_string(c)?;
        let delivery = producer
            .send_result(
                FutureRecord::<(), _>::to(&config.topics.control)
                    .payload(&payload)
                    .timestamp(T0),
            )
            .map_err(|(e, _)| e)?;
        futures::executor::block_on(delivery)?.map_err(|(e, _)| e)?;
    }
    Ok(())
}

/// Produces `records` to the touchpoints topic, keyed by contact as the Java client places
/// keys (not timed).
pub(crate) fn fill(
    config: &KafkaConfig,
    records: impl Iterator<Item = Sourced>,
) -> anyhow::Result<HashMap<i32, i64>> {
    let producer = producer(config)?;
    let mut pending = Vec::new();
    // Each partition's end, from the acknowledgements (a broker may report it short).
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut note =
        |d: rdkafka::producer::future_producer::OwnedDeliveryResult| -> anyhow::Result<()> {
            let delivery = d.map_err(|(e, _)| e)?;
            let end = ends.entry(delivery.partition).or_default();
            *end = (*end).max(delivery.offset + 1);
            Ok(())
        };
    for sourced in records {
        let Incoming::Record(record) = sourced.incoming else {
            unreachable!("the workload is well-formed")
        };
        let Some(v1::ingest_record::Input::Event(e)) = &record.input else {
            unreachable!("the workload is events")
        };
        let key = e.contact_id.clone();
        let payload = canvass_proto::json::to_string(record.as_ref())?;
        pending.push(
            producer
                .send_result(
                    FutureRecord::to(&config.topics.touchpoints)
                        .key(&key)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)?,
        );
        if pending.len() >= 10_000 {
            for d in futures::executor::block_on(futures::future::join_all(pending.drain(..))) {
                note(d?)?;
            }
        }
    }
    for d in futures::executor::block_on(futures::future::join_all(pending)) {
        note(d?)?;
    }
    Ok(ends)
}

/// Runs an engine of group `group` on a data directory of its own until it caught up (or,
/// with `stop`, until that is set); its report, and when its first commit that logged
/// something ended.
fn run_engine(
    config: &KafkaConfig,
    group: &str,
    partitions: i32,
    stop: Option<Arc<AtomicBool>>,
) -> anyhow::Result<(KafkaReport, Option<Instant>)> {
    let dir = tempfile::tempdir()?;
    let wanted = Wanted {
        partitions: Some(u32::try_from(partitions)?),
        partitioner: None,
    };
    let stores = Stores::open(dir.path(), wanted, &StoreOptions::default())?;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let engine = Partitions::open(
        stores,
        EngineOptions {
            clock: ClockMode::Event,
            publish: true,
            ..EngineOptions::default()
        },
        workers,
    )?;
    let mut config = config.clone();
    config.group_id = group.to_string();
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let seen = Arc::clone(&first);
    let report = canvass_kafka::run(
        engine,
        &config,
        &KafkaRunOptions {
            exit_when_caught_up: stop.is_none(),
            stop,
            after_commit: Some(CommitHook(Arc::new(move || {
                seen.lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .get_or_insert_with(Instant::now);
            }))),
            cluster: None,
        },
        None,
        Some(Box::new(canvass_kafka::ActionTopic::connect(&config)?)),
    )?;
    let first = *first
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Ok((report, first))
}

/// One hand-off of a partition of `contacts` contacts: from the new owner's start to its
/// first applied input, of it the restore, and the frames it applied.
#[derive(Debug, Clone, Copy)]
struct HandOff {
    to_first_input: f64,
    restore: f64,
    frames: u64,
}

/// A partition of `contacts` contacts (one signup each) built by a first engine, which
/// snapshots it every `snapshot_entries` log entries; then a new owner with no copy of it, from the snapshot and the
/// frames after it; then one from the changelog alone. Each takes one input more.
fn hand_off(
    broker: &str,
    contacts: u64,
    snapshot_entries: u64,
) -> anyhow::Result<(HandOff, HandOff)> {
    let mut config = topics(broker, 1, true, true)?;
    config.snapshot_entries = snapshot_entries;
    launch(&config)?;
    fill(&config, (0..contacts).map(|c| event(2 * c)))?;
    // One group, as the engines of a deployment: the snapshots are found through it.
    let group = unique("group");
    let (built, _) = run_engine(&config, &group, 1, None)?;
    anyhow::ensure!(
        built.records >= contacts,
        "the first engine consumed {} records, not {contacts} and the commands",
        built.records
    );
    let mut measured = Vec::new();
    for (extra, with_snapshot) in [(0, true), (1, false)] {
        // An input the new owner lacks (the one before took the one before).
        fill(&config, std::iter::once(event(2 * (contacts + extra))))?;
        let mut config = config.clone();
        if !with_snapshot {
            config.topics.snapshots = None;
        }
        settle();
        let started = Instant::now();
        let (report, first) = run_engine(&config, &group, 1, None)?;
        let first = first.context("the new owner applied nothing")?;
        anyhow::ensure!(
            report.restores == 1 && report.snapshots_loaded == u64::from(with_snapshot),
            "the new owner restored {} partitions, {} from a snapshot",
            report.restores,
            report.snapshots_loaded
        );
        measured.push(HandOff {
            to_first_input: first.duration_since(started).as_secs_f64(),
            restore: report.restore_time.as_secs_f64(),
            frames: report.frames_restored,
        });
    }
    Ok((measured[0], measured[1]))
}

/// Records/s of `engines` engines of one group consuming `events` records of `partitions`
/// partitions, from the first start until every partition's offset committed to the group
/// reached its end (known from the acknowledgements: the engines keep running, so none
/// stops early on an end the broker reports short).
fn throughput(
    broker: &str,
    events: u64,
    partitions: i32,
    engines: usize,
    changelog: bool,
) -> anyhow::Result<f64> {
    let config = topics(broker, partitions, changelog, changelog)?;
    launch(&config)?;
    let ends = fill(&config, (0..events).map(event))?;
    settle();
    let group = unique("group");
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let runs: Vec<_> = (0..engines)
        .map(|_| {
            let config = config.clone();
            let group = group.clone();
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || run_engine(&config, &group, partitions, Some(stop)))
        })
        .collect();
    let watcher: BaseConsumer = client(broker).set("group.id", &group).create()?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition(&config.topics.touchpoints, p);
    }
    let elapsed = loop {
        anyhow::ensure!(
            started.elapsed() < Duration::from_secs(1200),
            "the engines did not reach the ends in 20 minutes"
        );
        std::thread::sleep(Duration::from_millis(100));
        let Ok(committed) = watcher.committed_offsets(tpl.clone(), Duration::from_secs(5)) else {
            continue;
        };
        let done = ends.iter().all(|(&p, &end)| {
            committed
                .find_partition(&config.topics.touchpoints, p)
                .is_some_and(|e| matches!(e.offset(), Offset::Offset(o) if o >= end))
        });
        if done {
            break started.elapsed().as_secs_f64();
        }
    };
    stop.store(true, Ordering::SeqCst);
    for run in runs {
        run.join()
            .map_err(|_| anyhow::anyhow!("an engine panicked"))??;
    }
    Ok(events as f64 / elapsed)
}

pub fn scale(
    broker: &str,
    contacts: &[u64],
    snapshot_entries: u64,
    events: u64,
    engines: &[usize],
    partitions: i32,
    runs: usize,
) -> anyhow::Result<()> {
    println!(
        "| contacts | new owner, snapshot + frames: start to first input (s) | of it restoring (s) | frames | changelog alone: start to first input (s) | of it restoring (s) | frames | runs |"
    );
    println!("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for &c in contacts {
        let (mut snap, mut alone) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let (s, a) = hand_off(broker, c, snapshot_entries)?;
            eprintln!("contacts {c}, run {run}: snapshot {s:?}, changelog alone {a:?}");
            snap.push(s);
            alone.push(a);
        }
        let med = |xs: &[HandOff], f: fn(&HandOff) -> f64| median(xs.iter().map(f).collect());
        println!(
            "| {c} | {:.2} | {:.2} | {:.0} | {:.2} | {:.2} | {:.0} | {runs} |",
            med(&snap, |h| h.to_first_input),
            med(&snap, |h| h.restore),
            med(&snap, |h| h.frames as f64),
            med(&alone, |h| h.to_first_input),
            med(&alone, |h| h.restore),
            med(&alone, |h| h.frames as f64),
        );
    }
    println!();
    println!(
        "| engines | changelog | records/s (median) | runs | vs one engine without changelog |"
    );
    println!("| ---: | --- | ---: | --- | ---: |");
    let mut baseline = Vec::new();
    for run in 0..runs {
        let rate = throughput(broker, events, partitions, 1, false)?;
        eprintln!("run {run}: 1 engine, no changelog: {rate:.0} records/s");
        baseline.push(rate);
    }
    let base = median(baseline.clone());
    println!(
        "| 1 | off | {base:.0} | {} | 100% |",
        crate::fmt_all(&baseline)
    );
    for &n in engines {
        let mut rates = Vec::new();
        for run in 0..runs {
            let rate = throughput(broker, events, partitions, n, true)?;
            eprintln!("run {run}: {n} engines, changelog: {rate:.0} records/s");
            rates.push(rate);
        }
        let m = median(rates.clone());
        println!(
            "| {n} | on | {m:.0} | {} | {:.0}% |",
            crate::fmt_all(&rates),
            100.0 * m / base
        );
    }
    Ok(())
}
