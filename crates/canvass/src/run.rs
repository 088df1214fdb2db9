//! `canvass run`, `canvass replay` and `canvass inspect`: the durable engine over a data directory.

use std::{
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use canvass_core::partition::Partitioner;
use canvass_core::{SpanMillis, UnixMillis};
use canvass_engine::{
    Partitions,
    durable::{ClockMode, EngineOptions, Incoming, Sourced},
    partitions::Route,
    runtime::{self, InputSpec, RunOptions},
};
use canvass_kafka::{KafkaConfig, KafkaRunOptions};
use canvass_proto::v1;
use canvass_store::{StallWatch, Store, StoreOptions, Stores, Wanted};

use crate::{deliver, input};

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Clock {
    /// Wall-clock time; timers fire as real time passes.
    Wall,
    /// Event time; timers fire as event times pass. The outcome depends only on the input.
    Event,
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Data directory (created if missing): the log and its projections.
    #[arg(long)]
    data: PathBuf,
    /// Consume touchpoints and commands from Kafka and publish actions, audit records and
    /// dead letters there, instead of `--input`/`--actions`. Settings come from
    /// `--kafka-config` and `CANVASS_KAFKA_*` variables (see docs/operations.md).
    #[arg(long, conflicts_with_all = ["input", "actions", "follow"])]
    kafka: bool,
    /// Kafka settings file (TOML); implies `--kafka`.
    #[arg(long, value_name = "FILE", conflicts_with_all = ["input", "actions", "follow"])]
    kafka_config: Option<PathBuf>,
    /// With Kafka: stop cleanly once the records the topics held when their partitions were
    /// assigned are applied and everything is published (by default the engine runs until
    /// SIGTERM or SIGINT).
    #[arg(long)]
    exit_when_caught_up: bool,
    /// Serve the gRPC API with these settings (TOML: listen address, tokens, TLS,
    /// executors; see docs/operations.md), beside the file/stdin input or Kafka. The engine
    /// then runs until SIGTERM or SIGINT; actions go to executors and pullers unless
    /// `--actions` is given or Kafka publishes them.
    #[arg(long, value_name = "FILE")]
    grpc_config: Option<PathBuf>,
    /// JSON-lines input, one IngestRecord ({"contact": ...}, {"event": ...} or
    /// {"command": ...}) per line; `-` for standard input (the default without
    /// `--grpc-config`). A file is resumed where the last run stopped.
    #[arg(long)]
    input: Option<String>,
    /// Where delivered actions go, as JSON lines (appended); `-` for standard output (the
    /// default without `--grpc-config`).
    #[arg(long)]
    actions: Option<String>,
    /// Where each kind of action goes (TOML: executors to push to, pullers, the Kafka
    /// actions topic, JSON-lines files; a kind may go to several) and how pushes are retried;
    /// see docs/operations.md. Without it: `--actions`, the executors of the gRPC settings,
    /// pullers when serving gRPC, the actions topic on Kafka.
    #[arg(long, value_name = "FILE", conflicts_with = "actions")]
    delivery: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`host:port`; port 0: any free port, written
    /// to the ready file) at `/metrics`; also `metrics_addr` in the gRPC or Kafka settings.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Campaign specs to load before reading the input (skipped if that version is loaded).
    #[arg(long = "spec")]
    specs: Vec<PathBuf>,
    /// Where processing time comes from.
    #[arg(long, value_enum, default_value_t = Clock::Wall)]
    clock: Clock,
    /// Keep tailing the input and firing timers instead of stopping at its end.
    #[arg(long)]
    follow: bool,
    /// With the event clock: once the input has ended, move the clock on to this time
    /// (RFC 3339), firing every timer due until then, as `simulate --until` does.
    #[arg(long, value_name = "RFC3339", conflicts_with_all = ["follow", "kafka", "kafka_config", "grpc_config", "drain"])]
    until: Option<String>,
    /// With the event clock: once the input has ended, fire the timers still armed until none
    /// is left, at most a year past the latest time applied, as `simulate` does without
    /// `--until`.
    #[arg(long, conflicts_with_all = ["follow", "kafka", "kafka_config", "grpc_config"])]
    drain: bool,
    /// Partitions of a new data directory (contacts are spread over them by id, each with
    /// its own log, clock and group commit). An existing directory keeps the count it was
    /// created with and refuses another. On Kafka, the touchpoints topic's partition count.
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=i64::from(canvass_store::layout::MAX_PARTITIONS)))]
    partitions: Option<u32>,
    /// How a contact id maps to a partition: `murmur2` (the Kafka Java client's default)
    /// or `consistent` (librdkafka's default, CRC32). On Kafka, the `partitioner` setting.
    #[arg(long, value_parser = parse_partitioner)]
    partitioner: Option<Partitioner>,
    /// Threads that run the partitions (each owns every `workers`-th partition); by
    /// default the number of cores.
    #[arg(long)]
    workers: Option<usize>,
    /// Written (as JSON: the process id, the layout, the gRPC address if serving) once the
    /// engine takes inputs: its store is open, its specs loaded and its gRPC server, if any,
    /// listening. Removed at start if a former run left one. For supervisors and tests.
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// Most inputs per group commit.
    #[arg(long, default_value_t = 4096)]
    max_batch: usize,
    /// Longest wait, in milliseconds, for more inputs before a group commit.
    #[arg(long, default_value_t = 2)]
    max_wait_ms: u64,
    /// How long event ids are remembered to recognise duplicates, in hours. Kept with the
    /// data, for `replay`.
    #[arg(long, default_value_t = DEDUPE_HOURS)]
    dedupe_hours: i64,
    /// sled page cache, in MiB.
    #[arg(long, default_value_t = 64)]
    cache_mib: u64,
    /// Most log entries applied between two checkpoints of the projections; bounds what a
    /// restart re-applies.
    #[arg(long, default_value_t = StoreOptions::default().checkpoint_entries)]
    checkpoint_entries: u64,
    /// Most projection bytes held in memory before a checkpoint, in MiB.
    #[arg(long, default_value_t = 32)]
    checkpoint_mib: usize,
    /// Longest input line, in bytes: a longer one is a dead letter keeping its first 4096
    /// bytes (it is never held in memory whole).
    #[arg(long, default_value_t = 1024 * 1024)]
    max_input_bytes: usize,
    /// Park as a dead letter any input dated more than this many hours ahead of the wall
    /// clock (an event in year 9999 would fire every pending timer at once under the event
    /// clock); 0 turns the bound off.
    #[arg(long, default_value_t = 24)]
    max_lead_hours: u64,
    /// How late an event may arrive, in seconds, and still be applied before the timers due
    /// after its time: a timer fires only once the clock has passed its due time by this
    /// much. Under the event clock, an event dated further behind the clock is applied at the
    /// clock's time and counted as late (`inspect`, `report`).
    #[arg(long, default_value_t = 0)]
    allowed_lateness_secs: u64,
    /// Stop with status 4 when one write to the data directory has not finished after this
    /// many seconds: sled can block without an error on a full disk, and a supervisor needs
    /// an exit to act on. Every commit before it is durable.
    #[arg(long, default_value_t = STALL_SECS)]
    storage_stall_secs: u64,
}

/// `--max-lead-hours` as a span (0: no bound).
pub(crate) fn max_lead(hours: u64) -> Option<SpanMillis> {
    (hours > 0).then(|| {
        SpanMillis(
            i64::try_from(hours)
                .unwrap_or(i64::MAX / 3_600_000)
                .saturating_mul(3_600_000),
        )
    })
}

/// `--allowed-lateness-secs` as a span (bounded by the longest span a spec may hold).
pub(crate) fn lateness(secs: u64) -> SpanMillis {
    let millis = i64::try_from(secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    SpanMillis(millis.min(canvass_core::time::MAX_SPAN.0))
}

fn open(data: &std::path::Path, wanted: Wanted, options: &StoreOptions) -> anyhow::Result<Stores> {
    Stores::open(data, wanted, options)
        .with_context(|| format!("cannot open the data directory {}", data.display()))
}

/// A partitioner by its settings name.
pub(crate) fn parse_partitioner(name: &str) -> Result<Partitioner, String> {
    Partitioner::named(name).ok_or_else(|| {
        format!("`{name}` is not a partitioner: `murmur2` (or `murmur2_random`) or `consistent` (or `consistent_random`)")
    })
}

/// Threads for the partitions: `--workers`, or one per core.
pub(crate) fn workers(given: Option<usize>) -> usize {
    given
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1)
}

const DEDUPE_HOURS: i64 = 168;
/// `--storage-stall-secs` by default, and for `replay`.
const STALL_SECS: u64 = 30;
/// The stored setting: the dedupe window the projections are built with, in hours.
const DEDUPE_SETTING: &str = "dedupe_hours";

/// Keeps the dedupe window with the data, saying so when it changes: the projections keep
/// event ids by it, and a replay rebuilds them byte for byte only with the same window.
fn remember_dedupe_hours(store: &Store, hours: i64) -> anyhow::Result<()> {
    let hours = u64::try_from(hours).context("--dedupe-hours must not be negative")?;
    match store.setting(DEDUPE_SETTING)? {
        Some(stored) if stored == hours => return Ok(()),
        Some(stored) => tracing::info!(
            from_hours = stored,
            to_hours = hours,
            "the dedupe window changes; `replay` uses the newest"
        ),
        None => {}
    }
    store.put_setting(DEDUPE_SETTING, hours)?;
    Ok(())
}

fn engine_options(clock: Clock, dedupe_hours: i64, publish: bool) -> EngineOptions {
    EngineOptions {
        clock: match clock {
            Clock::Wall => ClockMode::Wall,
            Clock::Event => ClockMode::Event,
        },
        dedupe_retention: SpanMillis(dedupe_hours * 3_600_000),
        publish,
        max_lead: None,
        allowed_lateness: SpanMillis(0),
        deferred_flush: false,
    }
}

pub fn run(args: &RunArgs) -> anyhow::Result<ExitCode> {
    // A ready file a former run left must not say this one is ready.
    if let Some(path) = &args.ready_file {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(e).with_context(|| {
                    format!("--ready-file {}: cannot remove the old one", path.display())
                });
            }
            _ => {}
        }
    }
    // Settings are checked before the data directory is touched.
    let at_end = match (&args.until, args.drain) {
        (None, false) => runtime::AtEnd::Stop,
        _ if !matches!(args.clock, Clock::Event) => {
            anyhow::bail!("--until and --drain move the event clock: give --clock event")
        }
        (Some(t), _) => {
            let until = UnixMillis::from_proto(
                &canvass_proto::wkt::Timestamp::parse(t)
                    .map_err(|e| anyhow::anyhow!("--until: {e}"))?,
            );
            let latest = canvass_engine::durable::latest_input_time();
            anyhow::ensure!(
                until <= latest,
                "--until: {t} is after {}: the times derived from it must stay within year 9999",
                latest.to_proto()
            );
            runtime::AtEnd::Until(until)
        }
        (None, true) => runtime::AtEnd::Drain(SpanMillis(
            crate::simulate::DEFAULT_HORIZON_DAYS * canvass_core::time::DAY_MILLIS,
        )),
    };
    // Watched from before the open: finishing an interrupted checkpoint writes too.
    let stall_watch = watch_storage(
        &args.data,
        Duration::from_secs(args.storage_stall_secs.max(1)),
    );
    let kafka = args.kafka || args.kafka_config.is_some();
    let kafka_config = if kafka {
        Some(KafkaConfig::load(args.kafka_config.as_deref())?)
    } else {
        None
    };
    let grpc_config = args
        .grpc_config
        .as_deref()
        .map(canvass_server::GrpcConfig::load)
        .transpose()?;
    let metrics_addr = metrics_address(
        args.metrics_addr,
        grpc_config.as_ref().and_then(|g| g.metrics_addr),
        kafka_config.as_ref().and_then(|k| k.metrics_addr),
    )?;
    let plan = deliver::plan(&deliver::Asked {
        delivery: args.delivery.as_deref(),
        actions: args.actions.as_deref(),
        kafka: kafka_config.as_ref(),
        grpc: grpc_config.as_ref(),
    })?;
    let sinks = deliver::open_sinks(&plan, kafka_config.as_ref())?;
    let wanted = if kafka {
        kafka_layout(args)?
    } else {
        Wanted {
            partitions: args.partitions,
            partitioner: args.partitioner,
        }
    };
    let stores = open(
        &args.data,
        wanted,
        &StoreOptions {
            cache_capacity: args.cache_mib * 1024 * 1024,
            checkpoint_entries: args.checkpoint_entries.max(1),
            checkpoint_bytes: args.checkpoint_mib.max(1) * 1024 * 1024,
            stall_watch,
            ..StoreOptions::default()
        },
    )?;
    let opening = std::time::Instant::now();
    remember_dedupe_hours(stores.partition(0), args.dedupe_hours)?;
    let options = EngineOptions {
        max_lead: max_lead(args.max_lead_hours),
        allowed_lateness: lateness(args.allowed_lateness_secs),
        // The run loop computes the next batch while the disk writes the last one; the
        // Kafka loop publishes right after each commit and waits for it instead.
        deferred_flush: !kafka,
        ..engine_options(args.clock, args.dedupe_hours, kafka)
    };
    let mut engine = Partitions::open(stores, options, workers(args.workers))?;
    let (mut entries, mut checkpointed) = (0, 0);
    for store in engine.stores().iter() {
        entries += store.last_seq()?;
        checkpointed += store.checkpoint_seq()?;
    }
    // Operators learn here where the engine resumed.
    tracing::info!(
        layout = %engine.layout(),
        entries,
        checkpointed,
        open_ms = u64::try_from(opening.elapsed().as_millis()).unwrap_or(u64::MAX),
        "opened the data directory (entries: in the logs; checkpointed: of them in the projections)"
    );

    // Specs given on the command line are loaded through the log like any other command,
    // into every partition that lacks them (a crash may have left one behind the others).
    let mut commands = Vec::new();
    for path in &args.specs {
        let spec = input::read_spec(path)?;
        let command = Sourced {
            incoming: Incoming::Record(Box::new(v1::IngestRecord {
                input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                    actor: "cli".into(),
                    reason: format!("canvass run --spec {}", path.display()),
                    command: Some(v1::campaign_command::Command::PutSpec(spec.clone())),
                })),
                at: None,
            })),
            position: None,
            caller: None,
        };
        let lacking: Vec<u32> = (0..engine.layout().partitions)
            .filter_map(|p| {
                let loaded = engine.stores().partition(p).specs().map(|specs| {
                    specs
                        .iter()
                        .any(|s| s.id == spec.id && s.version == spec.version)
                });
                match loaded {
                    Ok(true) => None,
                    Ok(false) => Some(Ok(p)),
                    Err(e) => Some(Err(e)),
                }
            })
            .collect::<Result<_, _>>()?;
        if lacking.len() == engine.layout().partitions as usize {
            commands.push((Route::All, command));
        } else {
            commands.extend(
                lacking
                    .into_iter()
                    .map(|p| (Route::One(p), command.clone())),
            );
        }
    }
    if !commands.is_empty() {
        // A refused spec is parked in its campaign's home partition.
        let before: Vec<u64> = engine
            .stores()
            .iter()
            .map(Store::dead_letter_count)
            .collect::<Result<_, _>>()?;
        engine.ingest_routed(commands, runtime::wall_clock())?;
        engine.wait_synced()?;
        let mut rejected = Vec::new();
        for (store, before) in engine.stores().iter().zip(before) {
            rejected.extend(
                store
                    .dead_letters()?
                    .into_iter()
                    .skip(usize::try_from(before).unwrap_or(0)),
            );
        }
        for letter in rejected {
            tracing::error!(reason = %letter.reason, "spec rejected");
        }
    }

    // On Kafka the group decides what the engine owns: nothing until it assigns partitions,
    // so neither the delivery nor the gRPC API acts on a partition another engine may own.
    if kafka {
        engine.set_owned([]);
    }

    // A stop signal is graceful in every mode: the batch in hand is committed, the
    // projections checkpointed, and the summary logged.
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    // The gRPC API and a delivery beside the loop submit through one inbox.
    let (inbox, intake) = if grpc_config.is_some() || plan.has_answerers() {
        let queue = grpc_config
            .as_ref()
            .map_or(canvass_server::config::DEFAULT_QUEUE, |g| g.queue);
        let (inbox, intake) = runtime::channel(queue);
        (Some(inbox), Some(intake))
    } else {
        (None, None)
    };
    // Recording from here: the delivery's first attempts count.
    let metrics = metrics_addr
        .map(|addr| crate::metrics::serve(addr, engine.stores()))
        .transpose()?;
    let delivery = deliver::start(&plan, sinks, engine.stores(), inbox.clone())?;
    let (mut in_loop, beside) = match delivery {
        deliver::Started::InLoop(router) => (Some(router), None),
        deliver::Started::Beside(beside) => (None, Some(beside)),
    };
    // On Kafka, the API reaches the other engines of the group through it.
    let cluster = match (&kafka_config, &grpc_config) {
        (Some(k), Some(_)) => Some(
            canvass_kafka::Cluster::connect(k)
                .context("cannot create the Kafka clients of the gRPC API")?,
        ),
        _ => None,
    };
    let serving = match (grpc_config, inbox) {
        (Some(config), Some(inbox)) => Some(crate::serve::start(
            config,
            engine.stores().clone(),
            &stop,
            inbox,
            beside.as_ref().map(|b| b.delivery.clone()),
            cluster.clone(),
        )?),
        _ => None,
    };
    announce_ready(
        args.ready_file.as_deref(),
        &engine,
        serving.as_ref().map(|s| s.address),
        metrics.as_ref().map(|m| m.address),
    )?;
    let finish = |serving: Option<crate::serve::Serving>, beside: Option<deliver::Beside>| {
        if let Some(serving) = serving {
            serving.finish();
        }
        beside.map(|b| {
            let stats = b.delivery.stats();
            let delivered = (
                stats.delivered.load(Ordering::Relaxed),
                stats.failed.load(Ordering::Relaxed),
                stats.dead_letters.load(Ordering::Relaxed),
                stats.retries.load(Ordering::Relaxed),
            );
            b.finish();
            delivered
        })
    };
    if let Some(config) = kafka_config {
        let actions = in_loop.map(|r| Box::new(r) as Box<dyn runtime::Dispatcher + Send>);
        let wake = beside.as_ref().map(|b| {
            let delivery = b.delivery.clone();
            canvass_kafka::CommitHook(Arc::new(move || delivery.committed()))
        });
        let result = run_kafka(
            engine,
            args,
            &config,
            &stop,
            intake.as_ref(),
            actions,
            KafkaRunOptions {
                after_commit: wake,
                cluster,
                ..KafkaRunOptions::default()
            },
        );
        // Submissions still queued are answered UNAVAILABLE, so that the server's graceful
        // stop does not wait on them.
        drop(intake);
        let delivered = finish(serving, beside);
        let report = result?;
        log_kafka_summary(&report, delivered);
        return Ok(ExitCode::SUCCESS);
    }
    let input = match args.input.as_deref() {
        None if serving.is_some() => None,
        None | Some("-") => Some(InputSpec::Stdin),
        Some(path) => Some(InputSpec::File(PathBuf::from(path))),
    };
    let options = RunOptions {
        max_batch: args.max_batch.max(1),
        max_wait: Duration::from_millis(args.max_wait_ms),
        follow: args.follow,
        max_line_bytes: args.max_input_bytes.max(1),
        at_end,
        ..RunOptions::default()
    };
    let sink = in_loop.as_mut().map(|s| s as &mut dyn runtime::Dispatcher);
    let sources = runtime::Sources {
        input,
        intake,
        serve: serving.is_some(),
        stop: Some(Arc::clone(&stop)),
        after_commit: beside.as_ref().map(|b| deliver::wake(&b.delivery)),
        until_delivered: beside.is_some(),
    };
    let report = runtime::run(&mut engine, sources, sink, &options);
    let (beside_delivered, failed, given_up, retries) = finish(serving, beside).unwrap_or_default();
    let report = report?;
    let delivered = report.delivered + beside_delivered;
    tracing::info!(
        entries = report.entries,
        commits = report.commits,
        timers_fired = report.timers_fired,
        delivered,
        failed,
        given_up,
        retries,
        duplicates = report.duplicates,
        dead_letters = report.dead_letters,
        "stopped: applied {} inputs in {} commits: {} timers fired, {delivered} actions delivered ({failed} failed or bounced, {given_up} given up on, {retries} retries), {} duplicates ignored, {} dead letters",
        report.entries,
        report.commits,
        report.timers_fired,
        report.duplicates,
        report.dead_letters
    );
    Ok(ExitCode::SUCCESS)
}

/// Says the engine takes inputs: a log event, and the ready file if one was asked for
/// (written beside and renamed, so a reader never sees half of it).
fn announce_ready(
    ready_file: Option<&std::path::Path>,
    engine: &Partitions,
    grpc: Option<std::net::SocketAddr>,
    metrics: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    tracing::info!(
        grpc = grpc.as_ref().map(tracing::field::display),
        metrics = metrics.as_ref().map(tracing::field::display),
        "ready"
    );
    let Some(path) = ready_file else {
        return Ok(());
    };
    let ready = serde_json::json!({
        "pid": std::process::id(),
        "layout": engine.layout().to_string(),
        "grpc": grpc.map(|a| a.to_string()),
        "metrics": metrics.map(|a| a.to_string()),
    });
    let partial = path.with_extension("partial");
    std::fs::write(&partial, format!("{ready}\n"))
        .and_then(|()| std::fs::rename(&partial, path))
        .with_context(|| format!("--ready-file {}: cannot write it", path.display()))
}

/// The metrics address: the flag's, else the one of the settings files (which must agree).
fn metrics_address(
    flag: Option<std::net::SocketAddr>,
    grpc: Option<std::net::SocketAddr>,
    kafka: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<std::net::SocketAddr>> {
    if flag.is_some() {
        return Ok(flag);
    }
    match (grpc, kafka) {
        (Some(g), Some(k)) if g != k => anyhow::bail!(
            "metrics_addr: the gRPC settings say {g} and the Kafka settings {k}; give one (or --metrics-addr)"
        ),
        (g, k) => Ok(g.or(k)),
    }
}

/// The layout a data directory used on Kafka must have: as many partitions as the
/// touchpoints topic (asked of the broker), placed by the configured partitioner.
fn kafka_layout(args: &RunArgs) -> anyhow::Result<Wanted> {
    let config = KafkaConfig::load(args.kafka_config.as_deref())?;
    let count = canvass_kafka::touchpoint_partitions(&config, Duration::from_secs(30))
        .with_context(|| {
            format!(
                "cannot learn the partition count of the touchpoints topic `{}` from {} (create it first; its partition count is the data directory's)",
                config.topics.touchpoints, config.brokers
            )
        })?;
    // Every partition applies the commands in one order: the order of one topic partition.
    let control =
        canvass_kafka::topic_partitions(&config, &config.topics.control, Duration::from_secs(30))
            .with_context(|| {
            format!(
                "cannot learn the partition count of the control topic `{}`",
                config.topics.control
            )
        })?;
    anyhow::ensure!(
        control == 1,
        "the control topic `{}` has {control} partitions: every partition of the engine applies the commands in one order, which only a topic of one partition keeps; create it with one partition",
        config.topics.control
    );
    if let Some(given) = args.partitions {
        anyhow::ensure!(
            given == count,
            "--partitions {given}: the touchpoints topic `{}` has {count} partitions, and on Kafka the data directory has as many",
            config.topics.touchpoints
        );
    }
    if let Some(given) = args.partitioner {
        anyhow::ensure!(
            given == config.partitioner(),
            "--partitioner {given}: the Kafka settings say `partitioner = \"{}\"`; set it there",
            config.partitioner
        );
    }
    Ok(Wanted {
        partitions: Some(count),
        partitioner: Some(config.partitioner()),
    })
}

fn run_kafka(
    engine: Partitions,
    args: &RunArgs,
    config: &KafkaConfig,
    stop: &Arc<AtomicBool>,
    intake: Option<&runtime::Intake>,
    actions: Option<Box<dyn runtime::Dispatcher + Send>>,
    hooks: KafkaRunOptions,
) -> anyhow::Result<canvass_kafka::KafkaReport> {
    exit_after_stop(stop, Duration::from_millis(config.shutdown_timeout_ms));
    let options = KafkaRunOptions {
        exit_when_caught_up: args.exit_when_caught_up,
        stop: Some(Arc::clone(stop)),
        ..hooks
    };
    tracing::info!(
        touchpoints = %config.topics.touchpoints,
        control = %config.topics.control,
        brokers = %config.brokers,
        group = %config.group_id,
        "consuming"
    );
    Ok(canvass_kafka::run(
        engine, config, &options, intake, actions,
    )?)
}

/// The Kafka run's summary, with what the delivery beside it did, if one ran.
fn log_kafka_summary(report: &canvass_kafka::KafkaReport, beside: Option<(u64, u64, u64, u64)>) {
    let (delivered, failed, given_up, retries) = beside.unwrap_or_default();
    tracing::info!(
        delivered,
        failed,
        given_up,
        retries,
        records = report.records,
        skipped = report.skipped,
        entries = report.entries,
        duplicates = report.duplicates,
        dead_letters = report.dead_letters,
        actions_published = report.actions_published,
        publications = report.publications,
        "stopped: consumed {} records ({} already applied): {} log entries, {} duplicates ignored, {} dead letters; published {} actions and {} audit records or dead letters; delivered {delivered} actions beside ({failed} failed or bounced, {given_up} given up on, {retries} retries)",
        report.records,
        report.skipped,
        report.entries,
        report.duplicates,
        report.dead_letters,
        report.actions_published,
        report.publications
    );
}

/// Ends the process with status 4 once a write to the store has been running for `limit`:
/// on a full disk sled can wait for good inside a flush, and a supervisor must get an exit
/// status to act on. Safe like a crash: every commit is atomic and durable before it counts.
/// Returns the watch to open the store with.
fn watch_storage(data: &std::path::Path, limit: Duration) -> StallWatch {
    let watch = StallWatch::default();
    let watched = watch.clone();
    let data = data.display().to_string();
    let run = move || {
        loop {
            std::thread::sleep(Duration::from_millis(200));
            if let Some(stalled) = watched.stalled_for().filter(|d| *d >= limit) {
                tracing::error!(
                    data = %data,
                    stalled_secs = stalled.as_secs(),
                    "storage stalled: a write to the data directory has not finished after {} s (is the disk full or failing?); exiting: everything committed is durable, a restart with room resumes from it",
                    stalled.as_secs()
                );
                std::process::exit(i32::from(crate::EXIT_STORAGE));
            }
        }
    };
    if let Err(e) = std::thread::Builder::new()
        .name("canvass-storage-watch".into())
        .spawn(run)
    {
        tracing::warn!(error = %e, "cannot watch the storage");
    }
    watch
}

/// Ends the process `limit` after a stop signal if it is still running then: a client
/// waiting on a broker that is away must not keep it from stopping. Safe at any moment:
/// every commit is atomic and durable, and a start resumes from the last one.
fn exit_after_stop(stop: &Arc<AtomicBool>, limit: Duration) {
    let stop = Arc::clone(stop);
    let watch = move || {
        while !stop.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(limit);
        tracing::warn!(
            after_ms = u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
            "not stopped in time after the signal (the broker does not answer); exiting now: everything applied is durable, the next start resumes from it"
        );
        std::process::exit(0);
    };
    // Without the watch, a stop is only unbounded, not unsafe.
    if let Err(e) = std::thread::Builder::new()
        .name("canvass-stop-watch".into())
        .spawn(watch)
    {
        tracing::warn!(error = %e, "cannot watch the stop");
    }
}

#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// Data directory.
    #[arg(long)]
    data: PathBuf,
    /// How long event ids are remembered, in hours. By default the window `run` last used
    /// on this data (kept with it), so that the projections come out as `run` built them.
    #[arg(long)]
    dedupe_hours: Option<i64>,
    /// Stop with status 4 when one write to the data directory has not finished after this
    /// many seconds (as `run --storage-stall-secs`).
    #[arg(long, default_value_t = STALL_SECS)]
    storage_stall_secs: u64,
}

/// Opens a data directory to read what is committed, changing nothing: the log entries after
/// the last checkpoint (the ones a crash left for the next start to apply again) are applied
/// in memory, with the dedupe window `run` kept with the data. Returns the engine and how
/// many entries were applied so.
pub fn open_committed(data: &std::path::Path) -> anyhow::Result<(Partitions, u64)> {
    anyhow::ensure!(
        data.is_dir(),
        "no data directory at {} (`canvass run --data` makes one)",
        data.display()
    );
    let stores = open(
        data,
        Wanted::default(),
        &StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        },
    )?;
    let hours = stores
        .partition(0)
        .setting(DEDUPE_SETTING)?
        .and_then(|h| i64::try_from(h).ok())
        .unwrap_or(DEDUPE_HOURS);
    let mut behind = 0;
    for store in stores.iter() {
        behind += store.last_seq()?.saturating_sub(store.applied_seq()?);
    }
    let engine = Partitions::open(
        stores,
        engine_options(Clock::Wall, hours, false),
        workers(None),
    )?;
    Ok((engine, behind))
}

/// Opens an existing data directory to write to it outside `run` (a redrive): never makes
/// one of a mistyped path, and says what to do when a running engine holds it.
pub fn open_writable(
    data: &std::path::Path,
    max_lead_hours: u64,
    allowed_lateness_secs: u64,
) -> anyhow::Result<Partitions> {
    anyhow::ensure!(
        data.is_dir() && canvass_store::layout::read_layout(data)?.is_some(),
        "no data directory at {} (`canvass run --data` makes one)",
        data.display()
    );
    let stores = Stores::open(data, Wanted::default(), &StoreOptions::default()).with_context(|| {
        format!(
            "cannot open the data directory {} (if an engine is running on it, ask it with --server)",
            data.display()
        )
    })?;
    let hours = stores
        .partition(0)
        .setting(DEDUPE_SETTING)?
        .and_then(|h| i64::try_from(h).ok())
        .unwrap_or(DEDUPE_HOURS);
    // Applied at the store's own clock (as under the event clock): a redrive moves time no
    // further than the inputs it applies; the next `run` fires what came due meanwhile. The
    // bounds are the caller's, as `run` takes them.
    let options = EngineOptions {
        max_lead: max_lead(max_lead_hours),
        allowed_lateness: lateness(allowed_lateness_secs),
        ..engine_options(Clock::Event, hours, false)
    };
    Ok(Partitions::open(stores, options, workers(None))?)
}

pub fn replay(args: &ReplayArgs) -> anyhow::Result<ExitCode> {
    // Like the read commands, replay never makes a data directory of a mistyped path.
    anyhow::ensure!(
        args.data.is_dir() && canvass_store::layout::read_layout(&args.data)?.is_some(),
        "no data directory at {} (`canvass run --data` makes one)",
        args.data.display()
    );
    let stores = open(
        &args.data,
        Wanted::default(),
        &StoreOptions {
            stall_watch: watch_storage(
                &args.data,
                Duration::from_secs(args.storage_stall_secs.max(1)),
            ),
            ..StoreOptions::default()
        },
    )?;
    let stored = stores.partition(0).setting(DEDUPE_SETTING)?;
    let hours = match (args.dedupe_hours, stored) {
        (Some(given), Some(stored)) if u64::try_from(given).ok() != Some(stored) => {
            eprintln!(
                "note: replaying with a {given}-hour dedupe window; `run` used {stored} hours, so the events remembered per contact will differ from what it built"
            );
            given
        }
        (Some(given), _) => given,
        (None, Some(stored)) => i64::try_from(stored).unwrap_or(DEDUPE_HOURS),
        (None, None) => DEDUPE_HOURS,
    };
    let started = std::time::Instant::now();
    let applied = Partitions::replay(
        &stores,
        engine_options(Clock::Wall, hours, false),
        workers(None),
    )?;
    eprintln!(
        "rebuilt the projections from {applied} log entries in {:.1?}",
        started.elapsed()
    );
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// The data directory of the single-partition layout (left unchanged).
    #[arg(long)]
    from: PathBuf,
    /// The new data directory (must not exist).
    #[arg(long)]
    to: PathBuf,
    /// Partitions of the new directory (see `run --partitions`).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(canvass_store::layout::MAX_PARTITIONS)))]
    partitions: u32,
    /// How contact ids map to partitions (see `run --partitioner`).
    #[arg(long, value_parser = parse_partitioner, default_value = "murmur2")]
    partitioner: Partitioner,
    /// Threads that run the partitions.
    #[arg(long)]
    workers: Option<usize>,
}

/// `canvass migrate-store`: the old log applied again into a new partitioned directory.
pub fn migrate_store(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        canvass_store::layout::is_single_store(&args.from),
        "{} is not a data directory of the single-partition layout (sled's files directly in it); a partitioned one needs no migration",
        args.from.display()
    );
    anyhow::ensure!(
        !args.to.exists(),
        "{} exists: give a new directory (the old one is left as it is)",
        args.to.display()
    );
    let old = Store::open(
        &args.from,
        StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        },
    )
    .with_context(|| format!("cannot open {}", args.from.display()))?;
    let hours = old
        .setting(DEDUPE_SETTING)?
        .and_then(|h| i64::try_from(h).ok())
        .unwrap_or(DEDUPE_HOURS);
    // Built beside its destination and renamed into place once complete: an interrupted
    // migration leaves no directory `run` would take for a whole one.
    let building = args.to.with_file_name(format!(
        ".{}.migrating",
        args.to
            .file_name()
            .map_or_else(|| "new".into(), |n| n.to_string_lossy().into_owned())
    ));
    if building.exists() {
        std::fs::remove_dir_all(&building).with_context(|| {
            format!(
                "cannot remove {}, left by an interrupted migration",
                building.display()
            )
        })?;
    }
    let stores = open(
        &building,
        Wanted {
            partitions: Some(args.partitions),
            partitioner: Some(args.partitioner),
        },
        &StoreOptions {
            // One flush at the end: an interrupted migration is started again from scratch.
            flush_on_commit: false,
            ..StoreOptions::default()
        },
    )?;
    remember_dedupe_hours(stores.partition(0), hours)?;
    let options = EngineOptions {
        allowed_lateness: canvass_engine::migrate::MIGRATION_LATENESS,
        ..engine_options(Clock::Wall, hours, false)
    };
    let mut engine = Partitions::open(stores, options, workers(args.workers))?;
    let started = std::time::Instant::now();
    let done = canvass_engine::migrate::migrate(&old, &mut engine)?;
    let layout = engine.layout();
    drop(engine);
    std::fs::rename(&building, &args.to).with_context(|| {
        format!(
            "cannot rename {} to {}",
            building.display(),
            args.to.display()
        )
    })?;
    eprintln!(
        "migrated {} log entries ({} inputs applied again, {} dead letters copied) into {} in {:.1?}",
        done.entries,
        done.inputs,
        done.dead_letters,
        layout,
        started.elapsed()
    );
    if done.unmatched_acks > 0 {
        eprintln!(
            "note: {} acknowledgements named actions the new partitions do not hold (dropped)",
            done.unmatched_acks
        );
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    /// Data directory of a stopped engine.
    #[arg(long, conflicts_with = "server", required_unless_present = "server")]
    data: Option<PathBuf>,
    /// A running engine's gRPC address (`http://host:port`; token in `CANVASS_TOKEN`): its
    /// figures, asked of it (it holds its store).
    #[arg(long, conflicts_with_all = ["group", "contacts"])]
    server: Option<String>,
    #[command(flatten)]
    tls: crate::client::Tls,
    /// List the contacts of this response group (`CAMPAIGN/GROUP`).
    #[arg(long)]
    group: Option<String>,
    /// Print every contact's state as a line of canonical JSON, in contact id order (two
    /// data directories that processed the same input print the same lines).
    #[arg(long, conflicts_with = "group")]
    contacts: bool,
}

pub fn inspect(args: &InspectArgs) -> anyhow::Result<ExitCode> {
    use canvass_engine::reports;
    let Some(data) = &args.data else {
        let server = args.server.as_deref().unwrap_or_default();
        let status = crate::client::block_on(async {
            let channel = crate::client::connect(server, &args.tls).await?;
            let status =
                canvass_server::api::operator_service_client::OperatorServiceClient::new(channel)
                    .get_status(crate::client::with_token(v1::GetStatusRequest {})?)
                    .await
                    .map_err(|s| crate::client::refused(&s))?;
            Ok(status.into_inner())
        })?;
        print_status(&status, 0)?;
        return Ok(ExitCode::SUCCESS);
    };
    // What is committed, even after a crash: the log after the last checkpoint is applied in
    // memory for this view, and nothing is written.
    let (engine, behind) = open_committed(data)?;
    let stores = engine.stores();
    let fail = anyhow::Error::msg;
    if let Some(g) = &args.group {
        let (campaign, group) = g.split_once('/').context("--group takes CAMPAIGN/GROUP")?;
        let mut members = Vec::new();
        for store in stores.iter() {
            for id in store.group_members(campaign, group) {
                members.push(id?);
            }
        }
        members.sort();
        for id in members {
            out!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if args.contacts {
        for (_, state) in reports::contact_states(stores).map_err(fail)? {
            out!("{}", canvass_proto::json::to_string(&state)?);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let status = canvass_engine::letters::status(stores, &engine.layout().to_string())?;
    print_status(&status, behind)?;
    Ok(ExitCode::SUCCESS)
}

/// Prints an engine's status as `inspect` does, from its store or from a running engine.
/// `behind`: log entries after the checkpoint applied in memory for this view.
fn print_status(status: &v1::EngineStatus, behind: u64) -> anyhow::Result<()> {
    out!("layout:        {}", status.layout);
    out!("log entries:   {}", status.log_entries);
    if behind > 0 {
        out!(
            "checkpoint:    {} entries checkpointed; the {behind} after them (not yet checkpointed, as after a crash) are applied in memory for this view",
            status.checkpointed
        );
    }
    out!("contacts:      {}", status.contacts);
    out!("timers armed:  {}", status.timers);
    out!("outbox:        {}", status.outbox);
    out!(
        "dead letters:  {} ({} not redriven)",
        status.dead_letters,
        status.dead_letters_open
    );
    out!("late events:   {}", status.late_events);
    if let Some(policy) = &status.policy {
        out!("policy:        {}", canvass_proto::json::to_string(policy)?);
    }
    for line in &status.campaigns {
        let (Some(l), Some(c)) = (&line.lifecycle, &line.counters) else {
            continue;
        };
        let state = l
            .status()
            .as_str_name()
            .trim_start_matches("CAMPAIGN_STATUS_");
        out!(
            "campaign {} ({state}, active v{}): {} enrolled ({} held out), {} actions ({} delivered, {} handed off, {} failed), {} goals, {} completed, cost {}",
            l.campaign_id,
            l.active_version,
            c.enrollments,
            c.holdouts,
            c.actions,
            c.delivered,
            c.kinds.values().map(|k| k.handed_off).sum::<u64>(),
            c.failed,
            c.goals,
            c.completions,
            if c.cost.is_empty() { "0" } else { &c.cost }
        );
        for change in &l.history {
            let at = change.at.map(|t| t.to_string()).unwrap_or_default();
            let reason = if change.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", change.reason)
            };
            out!("  {at}  {} by {}{reason}", change.change, change.actor);
        }
    }
    Ok(())
}
