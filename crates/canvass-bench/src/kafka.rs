//! End-to-end Kafka throughput (touchpoints topic -> state -> actions topic) beside the raw
//! consume-only rate of the same topic from the same broker, measured in the same run.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use canvass_engine::{
    Partitions,
    durable::{ClockMode, EngineOptions},
};
use canvass_kafka::{KafkaConfig, KafkaRunOptions};
use canvass_store::{StoreOptions, Stores, Wanted};
use rdkafka::{
    ClientConfig, Message as _,
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    consumer::{BaseConsumer, Consumer as _},
};

use crate::{event, median, settle, setup};

pub(crate) fn unique(role: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("bench.{role}-{nanos}")
}

pub(crate) fn client(broker: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", broker);
    c
}

/// Creates the engine's five topics and fills the touchpoints topic with `events` records of
/// the bench workload (not timed).
fn prepare(broker: &str, events: u64, partitions: i32) -> anyhow::Result<KafkaConfig> {
    let mut config = KafkaConfig {
        brokers: broker.to_string(),
        ..KafkaConfig::default()
    };
    // CANVASS_KAFKA_* variables tune the engine's side as they would in production.
    config.apply_env(std::env::vars())?;
    config.topics.touchpoints = unique("touchpoints");
    config.topics.control = unique("control");
    config.topics.actions = unique("actions");
    config.topics.audit = unique("audit");
    config.topics.dead_letters = unique("dlq");
    let admin: AdminClient<DefaultClientContext> = client(broker).create()?;
    let topics = [
        NewTopic::new(
            &config.topics.touchpoints,
            partitions,
            TopicReplication::Fixed(1),
        ),
        NewTopic::new(&config.topics.control, 1, TopicReplication::Fixed(1)),
        NewTopic::new(
            &config.topics.actions,
            partitions,
            TopicReplication::Fixed(1),
        ),
        NewTopic::new(&config.topics.audit, 1, TopicReplication::Fixed(1)),
        NewTopic::new(&config.topics.dead_letters, 1, TopicReplication::Fixed(1)),
    ];
    for r in futures::executor::block_on(admin.create_topics(&topics, &AdminOptions::new()))? {
        r.map_err(|(t, e)| anyhow::anyhow!("cannot create {t}: {e}"))?;
    }
    // Keyed by contact as the Java client places keys: where the engine looks for them.
    crate::scale::fill(&config, (0..events).map(event))?;
    Ok(config)
}

/// Records/s of a plain consumer reading the topic to its end, from its first record.
fn raw_consume(config: &KafkaConfig, events: u64) -> anyhow::Result<f64> {
    let consumer: BaseConsumer = client(&config.brokers)
        .set("group.id", unique("raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()?;
    consumer.subscribe(&[&config.topics.touchpoints])?;
    let mut seen = 0;
    let mut first = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    while seen < events {
        anyhow::ensure!(Instant::now() < deadline, "raw consumer stuck at {seen}");
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m?;
            std::hint::black_box(m.payload());
            first.get_or_insert_with(Instant::now);
            seen += 1;
        }
    }
    let elapsed = first.map_or(0.0, |t| t.elapsed().as_secs_f64());
    Ok(events as f64 / elapsed)
}

/// Records/s through the engine: consumed, logged and applied with durability on, actions
/// published to the actions topic and acknowledged, from its first record to caught up.
fn engine_consume(config: &KafkaConfig, events: u64, partitions: i32) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    // As many partitions as the topic, as `canvass run` makes them.
    let wanted = Wanted {
        partitions: Some(u32::try_from(partitions)?),
        partitioner: None,
    };
    let stores = Stores::open(dir.path(), wanted, &StoreOptions::default())?;
    let workers = std::thread::available_parallelism().map_or(1, usize::from);
    let mut engine = Partitions::open(
        stores,
        EngineOptions {
            clock: ClockMode::Event,
            publish: true,
            ..EngineOptions::default()
        },
        workers,
    )?;
    setup(&mut engine)?;
    let mut config = config.clone();
    config.group_id = unique("engine");
    let report = canvass_kafka::run(
        engine,
        &config,
        &KafkaRunOptions {
            exit_when_caught_up: true,
            stop: None,
            after_commit: None,
            cluster: None,
        },
        None,
        Some(Box::new(canvass_kafka::ActionTopic::connect(&config)?)),
    )?;
    anyhow::ensure!(
        report.records == events,
        "the engine consumed {} records, not {events}",
        report.records
    );
    anyhow::ensure!(
        report.dead_letters == 0,
        "{} records were dead letters (placed on another partition than their contact's?)",
        report.dead_letters
    );
    let elapsed = report
        .busy
        .context("the engine consumed nothing")?
        .as_secs_f64();
    Ok(events as f64 / elapsed)
}

pub fn kafka(broker: &str, events: u64, partitions: i32, runs: usize) -> anyhow::Result<()> {
    let (mut engine_rates, mut raw_rates) = (Vec::new(), Vec::new());
    for run in 0..runs {
        let config = prepare(broker, events, partitions)?;
        settle();
        let raw = raw_consume(&config, events)?;
        settle();
        let engine = engine_consume(&config, events, partitions)?;
        eprintln!("run {run}: engine {engine:.0} records/s, raw consume {raw:.0} records/s");
        engine_rates.push(engine);
        raw_rates.push(raw);
    }
    let ratios: Vec<f64> = engine_rates
        .iter()
        .zip(&raw_rates)
        .map(|(e, r)| e / r)
        .collect();
    println!("| measure | median | runs |");
    println!("| --- | --- | --- |");
    println!(
        "| engine, Kafka -> state -> actions topic (records/s) | {:.0} | {} |",
        median(engine_rates.clone()),
        crate::fmt_all(&engine_rates)
    );
    println!(
        "| raw consume-only, same topic (records/s) | {:.0} | {} |",
        median(raw_rates.clone()),
        crate::fmt_all(&raw_rates)
    );
    println!(
        "| engine / raw | {:.0}% | {} |",
        100.0 * median(ratios.clone()),
        ratios
            .iter()
            .map(|r| format!("{:.0}%", 100.0 * r))
            .collect::<Vec<_>>()
            .join(", ")
    );
    Ok(())
}
