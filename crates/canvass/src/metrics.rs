//! `canvass run --metrics-addr`: Prometheus metrics over HTTP (`GET /metrics`, the text
//! format). The engine, the store, the delivery, the Kafka consumer and the gRPC server
//! record through the `metrics` facade as they work; what is a level rather than a count
//! (outbox depth and age, timers armed, contacts per campaign and state, budget spent) is
//! sampled here from the store on a thread of its own.
//!
//! A scrape renders what the recorder holds (atomics) and never waits for the engine loop;
//! the sampler reads the store as the gRPC reads do, beside the loop.

use std::{
    collections::HashMap,
    net::SocketAddr,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use canvass_store::Stores;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// How often levels are sampled from the store.
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Timers are counted by a scan, at most this share of the sampler's time: a scan that took
/// 0.5 s (a million timers) waits 50 s for the next, a quick one goes every round.
const TIMER_SCAN_SHARE: u32 = 100;

/// Histogram bounds of durations, in seconds: 100 µs to 10 s.
const SECONDS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];
/// Histogram bounds of batch sizes.
const SIZES: [f64; 8] = [1.0, 4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0, 16384.0];

/// Gauge: actions in the outbox (queued, not yet delivered), by `partition`.
const OUTBOX: &str = "canvass_outbox_actions";
/// Gauge: how long the oldest action in the outbox has been there, in seconds (as sampled:
/// to within the sampling interval, and counted from this process's start for actions an
/// earlier one queued), by `partition`.
const OUTBOX_AGE: &str = "canvass_outbox_oldest_age_seconds";
/// Gauge: timers armed, by `partition`.
const TIMERS: &str = "canvass_timers_pending";
/// Gauge: contacts in a state now, by `campaign` and `state`.
const CONTACTS: &str = "canvass_contacts";
/// Gauge: what a campaign's actions cost so far, in its budget's currency.
const BUDGET_SPENT: &str = "canvass_budget_spent";
/// Counter: sampling rounds done (a level read after it was current is in the next round).
const SAMPLES: &str = "canvass_metrics_samples_total";

/// The metrics endpoint, serving until the process ends.
pub struct MetricsServer {
    _rt: tokio::runtime::Runtime,
    /// Where it listens (the port chosen when the address asked for 0).
    pub address: SocketAddr,
}

/// Starts recording and serving metrics on `addr`, and sampling `stores`.
pub fn serve(addr: SocketAddr, stores: &Stores) -> anyhow::Result<MetricsServer> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .set_buckets_for_metric(
            Matcher::Full(canvass_engine::metrics::BATCH_INPUTS.into()),
            &SIZES,
        )?
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe();
    metrics::gauge!("canvass_build_info", "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("canvass-metrics")
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(addr))
        .with_context(|| format!("--metrics-addr {addr}: cannot listen there"))?;
    let address = listener.local_addr()?;
    let render = handle.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let text = render.render();
            async move {
                (
                    [(
                        axum::http::header::CONTENT_TYPE,
                        "text/plain; version=0.0.4; charset=utf-8",
                    )],
                    text,
                )
            }
        }),
    );
    rt.spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "the metrics endpoint failed");
        }
    });
    rt.spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            handle.run_upkeep();
        }
    });
    let sampled = stores.clone();
    std::thread::Builder::new()
        .name("canvass-sampler".into())
        .spawn(move || sample_forever(&sampled))?;
    tracing::info!(%address, "metrics: serving /metrics");
    Ok(MetricsServer { _rt: rt, address })
}

/// What each metric means, for the `# HELP` lines.
fn describe() {
    use canvass_engine::metrics as m;
    for (name, help) in [
        (
            m::INPUTS,
            "Inputs applied, by source and kind (duplicates and dead letters included).",
        ),
        (m::DUPLICATES, "Events ignored as duplicates."),
        (
            m::LATE_EVENTS,
            "Events applied later than the allowed lateness.",
        ),
        (
            m::DEAD_LETTERS,
            "Inputs and actions parked as dead letters, by reason.",
        ),
        (m::TIMERS_FIRED, "Timers fired."),
        (m::ACTIONS_QUEUED, "Actions queued in the outbox."),
        (
            m::ACTIONS_DONE,
            "Actions whose result was logged, by kind and outcome.",
        ),
        (m::COMMITS, "Group commits."),
        (
            "canvass_delivery_attempts_total",
            "Pushes to executors (first attempts and retries), by endpoint.",
        ),
        (
            "canvass_delivery_retries_total",
            "Retried pushes to executors, by endpoint.",
        ),
        (
            "canvass_grpc_requests_total",
            "Calls to the canvass.v1 services, by method and status code.",
        ),
        (
            SAMPLES,
            "Rounds of sampling the levels from the store (every 5 s).",
        ),
        (
            "canvass_changelog_frames_restored_total",
            "Changelog frames applied to this engine's copy of a partition when it was assigned here, by partition.",
        ),
        (
            "canvass_changelog_snapshots_written_total",
            "Snapshots of a partition this engine wrote to the snapshots topic, by partition.",
        ),
        (
            "canvass_changelog_fenced_total",
            "Times this engine stopped serving a partition because another engine claimed it, by partition.",
        ),
    ] {
        metrics::describe_counter!(name, help);
    }
    for (name, help) in [
        (m::COMMIT_SECONDS, "How long a group commit took."),
        (m::BATCH_INPUTS, "Inputs per group commit."),
        (
            canvass_store::metrics::FLUSH_SECONDS,
            "How long a flush of the store to disk took.",
        ),
        (
            canvass_store::metrics::CHECKPOINT_SECONDS,
            "How long a checkpoint of the projections took.",
        ),
        (
            "canvass_grpc_request_duration_seconds",
            "How long a gRPC call took until its answer's headers, by method.",
        ),
    ] {
        metrics::describe_histogram!(name, help);
    }
    for (name, help) in [
        (OUTBOX, "Actions in the outbox, by partition."),
        (
            OUTBOX_AGE,
            "How long the oldest action has been in the outbox (sampled every 5 s), by partition.",
        ),
        (
            TIMERS,
            "Timers armed, by partition (counted by a scan, every 5 s or less often in a large store).",
        ),
        (CONTACTS, "Contacts in each state of each campaign now."),
        (
            BUDGET_SPENT,
            "What each campaign's actions cost so far, in its currency.",
        ),
        (
            "canvass_kafka_consumer_lag",
            "Records of a partition not yet consumed, by topic and partition.",
        ),
        (
            "canvass_delivery_endpoint_reachable",
            "1 while an executor answers, 0 while it cannot be reached.",
        ),
        ("canvass_build_info", "The canvass version, as a label."),
        (
            "canvass_kafka_partition_owned",
            "1 for a touchpoint partition this engine owns now, 0 for one another engine of its group owns.",
        ),
        (
            "canvass_kafka_partition_unserved",
            "1 for a partition assigned here whose changelog could not be applied (not served; the log says why).",
        ),
    ] {
        metrics::describe_gauge!(name, help);
    }
}

/// When the sampler first saw each queued action, per partition.
type FirstSeen = Vec<HashMap<(u64, u32), Instant>>;

fn sample_forever(stores: &Stores) {
    let mut first_seen: FirstSeen = vec![HashMap::new(); stores.iter().len()];
    let mut next_timer_scan = Instant::now();
    loop {
        let count_timers = Instant::now() >= next_timer_scan;
        let started = Instant::now();
        match sample(stores, &mut first_seen, count_timers) {
            Ok(()) => metrics::counter!(SAMPLES).increment(1),
            Err(e) => tracing::warn!(error = %e, "metrics: cannot sample the store"),
        }
        if count_timers {
            next_timer_scan = Instant::now() + started.elapsed() * TIMER_SCAN_SHARE;
        }
        std::thread::sleep(SAMPLE_EVERY);
    }
}

fn sample(stores: &Stores, first_seen: &mut FirstSeen, count_timers: bool) -> anyhow::Result<()> {
    let now = Instant::now();
    for (p, store) in stores.iter().enumerate() {
        let partition = p.to_string();
        if !stores.owns(p as u32) {
            // Another engine's now: what this one holds of it is no level of its own.
            first_seen[p].clear();
            metrics::gauge!(OUTBOX, "partition" => partition.clone()).set(0.0);
            metrics::gauge!(OUTBOX_AGE, "partition" => partition.clone()).set(0.0);
            metrics::gauge!(TIMERS, "partition" => partition).set(0.0);
            continue;
        }
        let queued = store.outbox_positions()?;
        metrics::gauge!(OUTBOX, "partition" => partition.clone()).set(queued.len() as f64);
        // Every queued action's first sighting is kept, so the age of the oldest is right
        // however the head moves (to within a sampling interval; from the start of this
        // process for what an earlier one queued).
        let seen = &mut first_seen[p];
        let still: std::collections::HashSet<(u64, u32)> = queued.iter().copied().collect();
        seen.retain(|position, _| still.contains(position));
        for position in queued {
            seen.entry(position).or_insert(now);
        }
        let age = seen
            .values()
            .min()
            .map_or(0.0, |oldest| now.duration_since(*oldest).as_secs_f64());
        metrics::gauge!(OUTBOX_AGE, "partition" => partition.clone()).set(age);
        if count_timers {
            let timers = store.timers(None).count();
            metrics::gauge!(TIMERS, "partition" => partition).set(timers as f64);
        }
    }
    // Of the partitions this engine owns now: summed over the group's engines, the
    // group's figures (a stale copy of another engine's partition would count twice).
    let owned: Vec<_> = stores
        .iter()
        .enumerate()
        .filter(|(p, _)| stores.owns(*p as u32))
        .map(|(_, store)| store)
        .collect();
    for lifecycle in canvass_engine::reports::lifecycles(stores)? {
        let campaign = lifecycle.campaign_id;
        let mut counters = canvass_proto::v1::CampaignCounters::default();
        for store in &owned {
            canvass_core::stats::merge(&mut counters, &store.counters(&campaign)?);
        }
        for (state, c) in &counters.states {
            metrics::gauge!(CONTACTS, "campaign" => campaign.clone(), "state" => state.clone())
                .set(c.active as f64);
        }
        let spent = counters.cost.parse::<f64>().unwrap_or(0.0);
        metrics::gauge!(BUDGET_SPENT, "campaign" => campaign).set(spent);
    }
    Ok(())
}
