//! Benchmarks of the durable engine (core + store, durability on), each beside its raw
//! baseline measured in the same run: `cargo run --release -p canvass-bench -- all`.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use canvass_core::UnixMillis;
use canvass_engine::{
    Partitions,
    durable::{ClockMode, EngineOptions, Incoming, Sourced},
};
use canvass_proto::{json, v1};
use canvass_store::{Store, StoreOptions, Stores, Wanted};
use clap::{Parser, Subcommand};

mod grpc;
mod kafka;
mod scale;

// The same allocator as the `canvass` binary, so the figures are the product's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(about = "canvass benchmarks; results go to stdout as Markdown")]
struct Cli {
    #[command(subcommand)]
    bench: Bench,
}

#[derive(Debug, Subcommand)]
enum Bench {
    /// Events/s through core + store with a flush per group commit, beside raw sled
    /// inserting the same writes in the same batches with the same flushes on as many databases and threads; for
    /// each worker count given, on the same partitions.
    Throughput {
        /// Events to apply.
        #[arg(long, default_value_t = 200_000)]
        events: u64,
        /// Inputs per group commit.
        #[arg(long, default_value_t = 4096)]
        batch: usize,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
        /// Partitions of the data directory (one sled database each).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Worker counts to measure, e.g. `--workers 1 --workers 2`.
        #[arg(long, default_values_t = [1])]
        workers: Vec<usize>,
    },
    /// One throughput run (used by `throughput`, which runs each in its own process).
    #[command(hide = true)]
    ThroughputOnce {
        /// Events to apply.
        #[arg(long)]
        events: u64,
        /// Inputs per group commit.
        #[arg(long)]
        batch: usize,
        /// Partitions.
        #[arg(long)]
        partitions: u32,
        /// Worker threads.
        #[arg(long)]
        workers: usize,
    },
    /// Input-to-outbox latency at a steady arrival rate, committing whatever arrived.
    Latency {
        /// Arrival rate, events per second.
        #[arg(long, default_value_t = 10_000)]
        rate: u64,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Partitions of the data directory.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
    },
    /// Events/s of `canvass simulate`'s engine: stores in memory, the event clock, the whole
    /// stream in commits of 4096, then the timers drained.
    Simulate {
        /// Events.
        #[arg(long, default_value_t = 1_000_000)]
        events: u64,
        /// Partitions.
        #[arg(long, default_value_t = 1)]
        partitions: u32,
        /// Worker threads.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Peak RSS with this many contacts in flight (each enrolled, waiting on a timer).
    Memory {
        /// Contacts.
        #[arg(long, default_value_t = 1_000_000)]
        contacts: u64,
        /// sled's page cache, in MiB (the engine's default unless given).
        #[arg(long)]
        cache_mib: Option<u64>,
        /// Projection changes held in memory before a checkpoint, in MiB (the engine's
        /// default unless given).
        #[arg(long)]
        checkpoint_mib: Option<usize>,
        /// Partitions the contacts are spread over (the cache and checkpoint sizes are the
        /// whole directory's, shared among them).
        #[arg(long, default_value_t = 1)]
        partitions: u32,
    },
    /// Kafka end to end (touchpoints topic -> state -> actions topic) beside a plain
    /// consumer reading the same topic from the same broker.
    Kafka {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:9092")]
        broker: String,
        /// Records on the touchpoints topic.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Partitions of the touchpoints topic.
        #[arg(long, default_value_t = 3)]
        partitions: i32,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Ingest over gRPC client-streaming beside the engine in-process, and push delivery to
    /// a local ActionExecutor beside plain calls to it.
    Grpc {
        /// Events ingested.
        #[arg(long, default_value_t = 100_000)]
        events: u64,
        /// Actions pushed.
        #[arg(long, default_value_t = 20_000)]
        actions: u64,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Scale-out on Kafka: the time a partition of this many contacts takes to move to a new
    /// owner (from a snapshot, and from the changelog alone), and records/s with 1, 2 and 3
    /// engines in one group on this machine (each with the changelog and snapshots on),
    /// beside one engine without a changelog.
    Scale {
        /// Broker address.
        #[arg(long, default_value = "127.0.0.1:9092")]
        broker: String,
        /// Contacts of the partition handed over, e.g. `--contacts 100000 --contacts 1000000`.
        #[arg(long, default_values_t = [100_000])]
        contacts: Vec<u64>,
        /// Log entries between two snapshots of the partition handed over (the engine's
        /// default): a restore applies at most about this many after the snapshot.
        #[arg(long, default_value_t = 100_000)]
        snapshot_entries: u64,
        /// Records on the touchpoints topic for the throughput runs.
        #[arg(long, default_value_t = 300_000)]
        events: u64,
        /// Engine counts for the throughput runs.
        #[arg(long, default_values_t = [1, 2, 3])]
        engines: Vec<usize>,
        /// Partitions of the touchpoints topic for the throughput runs.
        #[arg(long, default_value_t = 6)]
        partitions: i32,
        /// Runs; the median is reported.
        #[arg(long, default_value_t = 3)]
        runs: usize,
    },
    /// Time to reopen a store whose log holds this many events (projections persist, so
    /// nothing is replayed), beside the time to replay the same log.
    Restart {
        /// Events in the log.
        #[arg(long, default_value_t = 10_000_000)]
        events: u64,
        /// Replay at most this many entries for the comparison (replay time grows with the log).
        #[arg(long, default_value_t = 2_000_000)]
        replay_limit: u64,
    },
}

/// A campaign entered by a trigger: signup -> welcome email; opened -> engaged (goal);
/// otherwise dormant after 30 days.
const SPEC: &str = r#"{
  "id": "bench", "version": 1, "initialState": "welcome",
  "entryTriggers": [{"eventType": "signup", "guard": "event.attrs.plan != 'free'"}],
  "states": [
    {"id": "welcome", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "welcome"}],
     "transitions": [{"to": "engaged", "onEvent": {"type": "email.opened"}}, {"to": "dormant", "after": "2592000s"}]},
    {"id": "engaged", "responseGroup": "engaged", "goal": true, "terminal": true},
    {"id": "dormant", "responseGroup": "dormant", "terminal": true}
  ],
  "budget": {"currency": "EUR", "costPerAction": {"EMAIL": "0.01"}}
}"#;

const T0: i64 = 1_772_442_000_000;

fn record(r: v1::IngestRecord) -> Sourced {
    Sourced {
        incoming: Incoming::Record(Box::new(r)),
        position: None,
        caller: None,
    }
}

fn command(actor: &str, cmd: v1::campaign_command::Command) -> Sourced {
    record(v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
            actor: actor.into(),
            reason: "benchmark".into(),
            command: Some(cmd),
        })),
        at: Some(UnixMillis(T0).to_proto()),
    })
}

/// The commands that load, approve and launch the bench campaign.
fn setup_commands() -> anyhow::Result<Vec<Sourced>> {
    use v1::campaign_command::Command as C;
    let spec: v1::CampaignSpec = json::from_str(SPEC).map_err(|e| anyhow::anyhow!("{e}"))?;
    let r = v1::VersionRef {
        campaign_id: "bench".into(),
        version: 1,
    };
    Ok(vec![
        command("author", C::PutSpec(spec)),
        command("author", C::Submit(r.clone())),
        command("approver", C::Approve(r)),
        command("ops", C::Launch("bench".into())),
    ])
}

/// Loads, approves and launches the bench campaign.
fn setup(engine: &mut Partitions) -> anyhow::Result<()> {
    engine.ingest(setup_commands()?, UnixMillis(T0))?;
    Ok(())
}

/// Event `i` of the workload: contact `i / 2` signs up, then opens the email.
fn event(i: u64) -> Sourced {
    let contact = i / 2;
    let (kind, attrs) = if i.is_multiple_of(2) {
        (
            "signup",
            Some(canvass_proto::wkt::Struct {
                fields: [("plan".to_string(), canvass_proto::wkt::Value::from("pro"))].into(),
            }),
        )
    } else {
        ("email.opened", None)
    };
    record(v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Event(v1::TouchpointEvent {
            id: format!("e{i}"),
            r#type: kind.into(),
            contact_id: format!("c{contact:09}"),
            occurred_at: Some(UnixMillis(T0 + i64::try_from(i).unwrap_or(0)).to_proto()),
            attrs,
            ..Default::default()
        })),
        at: None,
    })
}

fn open(dir: &Path) -> anyhow::Result<(Store, Partitions)> {
    open_with(dir, StoreOptions::default())
}

/// One partition's engine (and its store) on `dir`.
fn open_with(dir: &Path, options: StoreOptions) -> anyhow::Result<(Store, Partitions)> {
    let engine = open_partitions(dir, options, 1, 1, false)?;
    let store = engine.stores().partition(0).clone();
    Ok((store, engine))
}

/// The engine over `partitions` partitions on `dir`, run by `workers` threads; with
/// `deferred`, a commit returns before its flush ends (as `canvass run` does).
fn open_partitions(
    dir: &Path,
    options: StoreOptions,
    partitions: u32,
    workers: usize,
    deferred: bool,
) -> anyhow::Result<Partitions> {
    let wanted = Wanted {
        partitions: Some(partitions),
        partitioner: None,
    };
    let stores = Stores::open(dir, wanted, &options)?;
    Ok(Partitions::open(
        stores,
        EngineOptions {
            clock: ClockMode::Event,
            deferred_flush: deferred,
            ..EngineOptions::default()
        },
        workers,
    )?)
}

fn deliver(engine: &mut Partitions) -> anyhow::Result<u64> {
    let mut n = 0;
    loop {
        let d = engine.dispatch(100_000, &mut |_| Ok(()))?;
        if d == 0 {
            return Ok(n);
        }
        n += d as u64;
    }
}

/// Lets the disk settle between measurements: the previous phase's dirty pages would
/// otherwise be written back during the next one.
fn settle() {
    let _ = std::process::Command::new("sync").status();
    std::thread::sleep(Duration::from_secs(1));
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// One throughput run, in this process: prints `engine raw writes-per-event bytes-per-event`.
/// With `CANVASS_BENCH_ENGINE_ONLY` set (for a profile of the engine alone), nothing is
/// recorded and the raw baseline is not run.
fn throughput_once(
    events: u64,
    batch: usize,
    partitions: u32,
    workers: usize,
) -> anyhow::Result<()> {
    settle();
    let engine_only = std::env::var_os("CANVASS_BENCH_ENGINE_ONLY").is_some();
    let dir = tempfile::tempdir()?;
    let options = StoreOptions {
        record_writes: !engine_only,
        ..StoreOptions::default()
    };
    let mut engine = open_partitions(dir.path(), options, partitions, workers, true)?;
    setup(&mut engine)?;
    let stores = engine.stores().clone();
    for store in stores.iter() {
        store.take_recorded();
    }
    let started = Instant::now();
    let mut i = 0;
    // As `canvass run` does: a batch's actions leave once its flush ended, which runs while
    // the next batch is computed.
    let mut in_flight: Option<Vec<u64>> = None;
    while i < events {
        let n = (events - i).min(batch as u64);
        engine.ingest((i..i + n).map(event).collect(), UnixMillis(0))?;
        if let Some(marks) = in_flight.replace(engine.commit_marks()) {
            engine.wait_durable(&marks)?;
            deliver(&mut engine)?;
        }
        i += n;
    }
    if let Some(marks) = in_flight {
        engine.wait_durable(&marks)?;
        deliver(&mut engine)?;
    }
    // Sustained throughput includes writing the projections held in memory.
    engine.checkpoint()?;
    let elapsed = started.elapsed().as_secs_f64();
    let engine_rate = events as f64 / elapsed;

    // Raw sled: exactly the writes each partition committed (log, state, indexes, outbox,
    // acknowledgements), in the same batches with the same flushes, on a database per
    // partition run by as many threads: what sled alone costs.
    let recorded: Vec<Vec<canvass_store::Recorded>> =
        stores.iter().map(Store::take_recorded).collect();
    let all = || recorded.iter().flatten().map(|r| &r.writes);
    let writes: usize = all().map(Vec::len).sum();
    let bytes: usize = all()
        .flatten()
        .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
        .sum();
    let writes_per_event = writes as f64 / events as f64;
    if std::env::var_os("CANVASS_BENCH_KEYS").is_some() {
        let mut by_ns = std::collections::BTreeMap::<char, (usize, usize)>::new();
        for (k, v) in all().flatten() {
            let e = by_ns.entry(char::from(k[0])).or_default();
            e.0 += 1;
            e.1 += k.len() + v.as_ref().map_or(0, Vec::len);
        }
        eprintln!("writes by namespace (keys, bytes): {by_ns:?}");
    }
    let bytes_per_event = bytes as f64 / events as f64;
    drop(engine);
    drop(stores);
    drop(dir);
    if engine_only {
        println!("{engine_rate} 0 0 0");
        return Ok(());
    }
    settle();
    let raw_dir = tempfile::tempdir()?;
    let dbs: Vec<sled::Db> = (0..recorded.len())
        .map(|p| {
            sled::Config::new()
                .path(raw_dir.path().join(p.to_string()))
                .cache_capacity((64 << 20) / recorded.len() as u64)
                .flush_every_ms(None)
                .open()
        })
        .collect::<Result<_, _>>()?;
    let replay = |p: usize| -> sled::Result<()> {
        for batch in &recorded[p] {
            let mut b = sled::Batch::default();
            for (k, v) in &batch.writes {
                match v {
                    Some(v) => b.insert(k.as_slice(), v.as_slice()),
                    None => b.remove(k.as_slice()),
                }
            }
            dbs[p].apply_batch(b)?;
            if batch.flushed {
                dbs[p].flush()?;
            }
        }
        Ok(())
    };
    let started = Instant::now();
    let count = recorded.len();
    let threads = workers.clamp(1, count);
    let replay = &replay;
    std::thread::scope(|scope| -> sled::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|w| scope.spawn(move || (w..count).step_by(threads).try_for_each(replay)))
            .collect();
        for h in handles {
            h.join().expect("a raw replay thread panicked")?;
        }
        Ok(())
    })?;
    let raw_rate = events as f64 / started.elapsed().as_secs_f64();
    println!("{engine_rate} {raw_rate} {writes_per_event} {bytes_per_event}");
    Ok(())
}

/// Each run in a fresh process: sled keeps process-wide state (its epoch-based garbage
/// collector among it), and later runs in the same process were measured up to 2x slower.
/// The worker counts alternate run by run, so that a noisy moment hurts each alike.
fn throughput(
    events: u64,
    batch: usize,
    runs: usize,
    partitions: u32,
    workers: &[usize],
) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let mut rates: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); workers.len()];
    let (mut bytes_per_event, mut writes_per_event) = (0.0, 0.0);
    for _ in 0..runs {
        for (w, &count) in workers.iter().enumerate() {
            let out = std::process::Command::new(&exe)
                .args([
                    "throughput-once",
                    "--events",
                    &events.to_string(),
                    "--batch",
                    &batch.to_string(),
                    "--partitions",
                    &partitions.to_string(),
                    "--workers",
                    &count.to_string(),
                ])
                .output()?;
            anyhow::ensure!(
                out.status.success(),
                "a run failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .split_whitespace()
                .map(str::parse)
                .collect::<Result<_, _>>()?;
            anyhow::ensure!(v.len() == 4, "unexpected run output: {text}");
            rates[w].0.push(v[0]);
            rates[w].1.push(v[1]);
            writes_per_event = v[2];
            bytes_per_event = v[3];
        }
    }

    println!(
        "## Throughput ({events} events, {batch} per group commit, {partitions} partition{}, median of {runs})\n",
        if partitions == 1 { "" } else { "s" }
    );
    println!(
        "The same writes on raw sled: {writes_per_event:.1} keys, {bytes_per_event:.0} B per event, the same batches and flushes on a database per partition, as many threads.\n"
    );
    println!(
        "| workers | engine events/s (median) | all runs | raw sled events/s (median) | all runs | engine / raw |\n| ---: | ---: | --- | ---: | --- | ---: |"
    );
    let mut first = None;
    for (&count, (engine, raw)) in workers.iter().zip(&rates) {
        let (e, r) = (median(engine.clone()), median(raw.clone()));
        first.get_or_insert(e);
        println!(
            "| {count} | {e:.0} | {} | {r:.0} | {} | **{:.0}%** |",
            fmt_all(engine),
            fmt_all(raw),
            100.0 * e / r
        );
    }
    if let (Some(base), true) = (first, workers.len() > 1) {
        println!();
        for (&count, (engine, _)) in workers.iter().zip(&rates).skip(1) {
            println!(
                "engine with {count} workers / with {}: **{:.2}x**",
                workers[0],
                median(engine.clone()) / base
            );
        }
    }
    println!();
    Ok(())
}

fn fmt_all(xs: &[f64]) -> String {
    xs.iter()
        .map(|x| format!("{x:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn latency(rate: u64, seconds: u64, partitions: u32, workers: usize) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // As `canvass run` does: a batch counts once its flush ended, which runs while the next
    // batch (whatever arrived meanwhile) is computed.
    let mut engine = open_partitions(
        dir.path(),
        StoreOptions::default(),
        partitions,
        workers,
        true,
    )?;
    setup(&mut engine)?;
    let total = rate * seconds;
    let interval = Duration::from_secs_f64(1.0 / rate as f64);
    let start = Instant::now();
    let mut latencies: Vec<Duration> = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    let mut next = 0u64;
    // The batch applied whose flush may run: its inputs and its partitions' marks.
    let mut in_flight: Option<(std::ops::Range<u64>, Vec<u64>)> = None;
    let mut settle = |engine: &mut Partitions,
                      batch: Option<(std::ops::Range<u64>, Vec<u64>)>|
     -> anyhow::Result<()> {
        let Some((inputs, marks)) = batch else {
            return Ok(());
        };
        engine.wait_durable(&marks)?;
        let done = start.elapsed();
        for i in inputs {
            latencies.push(done.saturating_sub(interval.mul_f64(i as f64)));
        }
        deliver(engine)?;
        Ok(())
    };
    while next < total {
        // Everything that has arrived by now goes into one group commit.
        let now = start.elapsed();
        let arrived = ((now.as_secs_f64() / interval.as_secs_f64()) as u64 + 1).min(total);
        if arrived <= next {
            // Nothing new: the batch in flight is done as soon as its flush is.
            settle(&mut engine, in_flight.take())?;
            std::thread::sleep(Duration::from_micros(100));
            continue;
        }
        let inputs: Vec<Sourced> = (next..arrived).map(event).collect();
        engine.ingest(inputs, UnixMillis(0))?;
        let previous = in_flight.replace((next..arrived, engine.commit_marks()));
        settle(&mut engine, previous)?;
        next = arrived;
    }
    settle(&mut engine, in_flight.take())?;
    latencies.sort();
    let q = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    println!(
        "## Latency at {rate} events/s for {seconds} s, {partitions} partition{}, {workers} worker{} (input arrival to its commit durable)\n",
        if partitions == 1 { "" } else { "s" },
        if workers == 1 { "" } else { "s" }
    );
    println!("| p50 | p90 | p99 | max |\n| ---: | ---: | ---: | ---: |");
    println!(
        "| {:.2?} | {:.2?} | {:.2?} | {:.2?} |\n",
        q(0.5),
        q(0.9),
        q(0.99),
        latencies[latencies.len() - 1]
    );
    Ok(())
}

/// Events/s through the simulation (the engine over stores in memory, event clock): the
/// workload's stream in commits of 4096, then every timer drained.
fn simulate(events: u64, partitions: u32, workers: usize, runs: usize) -> anyhow::Result<()> {
    let mut rates = Vec::new();
    let mut fired = 0;
    for _ in 0..runs {
        let mut sim = canvass_engine::Simulation::partitioned(
            EngineOptions::default(),
            canvass_store::Layout {
                partitions,
                ..canvass_store::Layout::default()
            },
            workers,
        )?;
        let started = Instant::now();
        let mut setup_inputs = Vec::new();
        for spec in [SPEC] {
            let spec: v1::CampaignSpec =
                json::from_str(spec).map_err(|e| anyhow::anyhow!("{e}"))?;
            for r in canvass_engine::simulate::load_commands(&[spec], UnixMillis(T0)) {
                setup_inputs.push(canvass_engine::simulate::unsourced(r));
            }
        }
        setup_inputs.push(canvass_engine::simulate::unsourced(
            canvass_engine::simulate::launch_command("bench", UnixMillis(T0)),
        ));
        sim.ingest(setup_inputs)?;
        let mut i = 0;
        while i < events {
            let n = (events - i).min(4096);
            sim.ingest((i..i + n).map(event).collect())?;
            sim.take_actions()?;
            i += n;
        }
        // A year on: every dormant timer fires.
        let r = sim.advance_to(UnixMillis(T0 + 400 * 24 * 3_600_000))?;
        sim.take_actions()?;
        fired = r.timers_fired;
        rates.push(events as f64 / started.elapsed().as_secs_f64());
    }
    println!(
        "## Simulate: {events} events on the virtual clock, {partitions} partition{}, {workers} worker{} ({fired} timers drained at the end), median of {runs}\n",
        if partitions == 1 { "" } else { "s" },
        if workers == 1 { "" } else { "s" }
    );
    println!(
        "| events/s (median) | all runs |\n| ---: | --- |\n| {:.0} | {} |\n",
        median(rates.clone()),
        fmt_all(&rates)
    );
    Ok(())
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

fn memory(contacts: u64, options: StoreOptions, partitions: u32) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (cache, checkpoint) = (options.cache_capacity >> 20, options.checkpoint_bytes >> 20);
    let mut engine = open_partitions(dir.path(), options, partitions, partitions as usize, false)?;
    setup(&mut engine)?;
    let started = Instant::now();
    // Only signups: every contact enrolls and waits on its 30-day timer.
    let mut i = 0;
    while i < contacts {
        let n = (contacts - i).min(4096);
        engine.ingest((i..i + n).map(|c| event(c * 2)).collect(), UnixMillis(0))?;
        deliver(&mut engine)?;
        i += n;
    }
    let stores = engine.stores();
    let counters = canvass_engine::reports::counters(stores, "bench")?;
    let timers: usize = stores.iter().map(|s| s.timers(None).count()).sum();
    let rss = peak_rss_kib() as f64 * 1024.0;
    println!(
        "## Memory with {contacts} contacts in flight over {partitions} partition{} (sled cache {cache} MiB, checkpoints of {checkpoint} MiB, for the whole directory)\n",
        if partitions == 1 { "" } else { "s" }
    );
    println!(
        "| contacts enrolled | timers armed | peak RSS | per contact | store on disk | time |\n| ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    println!(
        "| {} | {timers} | {:.0} MiB | {:.0} B | {:.0} MiB | {:.1?} |\n",
        counters.enrollments,
        rss / f64::from(1 << 20),
        rss / contacts.max(1) as f64,
        stores.size_on_disk()? as f64 / f64::from(1 << 20),
        started.elapsed()
    );
    Ok(())
}

fn restart(events: u64, replay_limit: u64) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    {
        let (_, mut engine) = open(dir.path())?;
        setup(&mut engine)?;
        let mut i = 0;
        while i < events {
            let n = (events - i).min(8192);
            engine.ingest((i..i + n).map(event).collect(), UnixMillis(0))?;
            deliver(&mut engine)?;
            i += n;
        }
    }
    let started = Instant::now();
    let (store, engine) = open(dir.path())?;
    let reopen = started.elapsed();
    let entries = store.last_seq()?;
    drop(engine);
    drop(store);
    // Replay for comparison, on a copy of at most `replay_limit` entries' worth: time a
    // replay of the whole log when it is small enough, else extrapolate linearly.
    let started = Instant::now();
    let stores = Stores::open(dir.path(), Wanted::default(), &StoreOptions::default())?;
    let replayed = if entries <= replay_limit {
        Partitions::replay(
            &stores,
            EngineOptions {
                clock: ClockMode::Event,
                ..EngineOptions::default()
            },
            1,
        )?
    } else {
        0
    };
    let replay = started.elapsed();
    println!("## Restart with {events} events in the log ({entries} log entries)\n");
    println!("| reopen (projections persist) | full replay |\n| ---: | ---: |");
    if replayed > 0 {
        println!("| {reopen:.2?} | {replay:.2?} ({replayed} entries) |\n");
    } else {
        println!("| {reopen:.2?} | not run: the log is longer than --replay-limit |\n");
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    canvass_engine::process::prefer_small_pages();
    // The engines' warnings and errors (RUST_LOG for more) go to stderr, beside the figures.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().bench {
        Bench::Throughput {
            events,
            batch,
            runs,
            partitions,
            workers,
        } => throughput(events, batch, runs, partitions, &workers),
        Bench::ThroughputOnce {
            events,
            batch,
            partitions,
            workers,
        } => throughput_once(events, batch, partitions, workers),
        Bench::Latency {
            rate,
            seconds,
            partitions,
            workers,
        } => latency(rate, seconds, partitions, workers),
        Bench::Simulate {
            events,
            partitions,
            workers,
            runs,
        } => simulate(events, partitions, workers, runs),
        Bench::Memory {
            contacts,
            cache_mib,
            checkpoint_mib,
            partitions,
        } => {
            let mut options = StoreOptions::default();
            if let Some(mib) = cache_mib {
                options.cache_capacity = mib << 20;
            }
            if let Some(mib) = checkpoint_mib {
                options.checkpoint_bytes = mib << 20;
            }
            memory(contacts, options, partitions)
        }
        Bench::Kafka {
            broker,
            events,
            partitions,
            runs,
        } => kafka::kafka(&broker, events, partitions, runs),
        Bench::Scale {
            broker,
            contacts,
            snapshot_entries,
            events,
            engines,
            partitions,
            runs,
        } => scale::scale(
            &broker,
            &contacts,
            snapshot_entries,
            events,
            &engines,
            partitions,
            runs,
        ),
        Bench::Restart {
            events,
            replay_limit,
        } => restart(events, replay_limit),
        Bench::Grpc {
            events,
            actions,
            runs,
        } => grpc::grpc(events, actions, runs),
    }
    .context("benchmark failed")
}
