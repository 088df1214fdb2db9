//! `canvass run --delivery`: where actions go, resolved from the delivery settings (or, without
//! them, from `--actions`, the gRPC settings' executors and the run mode), checked against
//! what this run can reach, and started: in the engine loop when every kind goes to copies
//! only, beside it when an executor or pullers answer for some kind.

use std::{path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use canvass_engine::runtime::{Inbox, JsonlSink};
use canvass_kafka::{ActionTopic, KafkaConfig};
use canvass_server::{
    Delivery, GrpcConfig,
    delivery::{Plan, Router, Sink, SinkWriter},
};
use canvass_store::Stores;

/// What the run was asked to deliver, before the store is opened.
pub struct Asked<'a> {
    pub delivery: Option<&'a Path>,
    pub actions: Option<&'a str>,
    pub kafka: Option<&'a KafkaConfig>,
    pub grpc: Option<&'a GrpcConfig>,
}

/// The delivery plan of a run, checked: a destination the run cannot reach is refused with
/// the settings table that names it.
pub fn plan(asked: &Asked<'_>) -> anyhow::Result<Plan> {
    let executors = asked.grpc.map_or(&[][..], |g| g.executors.as_slice());
    let plan = match asked.delivery {
        Some(path) => {
            anyhow::ensure!(
                executors.is_empty(),
                "--delivery {}: the gRPC settings list [[executors]] too; name every destination in the delivery file (as [[executor]] tables)",
                path.display()
            );
            let plan = Plan::load(path)?;
            plan.check_reachable(asked.kafka.is_some(), asked.grpc.is_some())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            plan
        }
        None if asked.kafka.is_some() => Plan::derived(executors, &Sink::Topic),
        None => match (asked.actions, asked.grpc) {
            (None, Some(_)) => Plan::derived_pull(executors),
            (actions, _) => Plan::derived(executors, &Sink::File(actions.unwrap_or("-").into())),
        },
    };
    Ok(plan)
}

/// Opens the plan's sinks, in its order (before the data directory is touched: a file that
/// cannot be opened refuses the run).
pub fn open_sinks(plan: &Plan, kafka: Option<&KafkaConfig>) -> anyhow::Result<Vec<SinkWriter>> {
    plan.sinks
        .iter()
        .map(|sink| -> anyhow::Result<SinkWriter> {
            Ok(match sink {
                Sink::Topic => {
                    let config = kafka.context("the actions topic needs the Kafka settings")?;
                    Box::new(ActionTopic::connect(config).with_context(|| {
                        format!("{}: cannot create the producer", plan.origin(sink))
                    })?)
                }
                Sink::File(path) if path == "-" => Box::new(JsonlSink::stdout()),
                Sink::File(path) => Box::new(
                    JsonlSink::file(Path::new(path))
                        .with_context(|| format!("{}: cannot open {path}", plan.origin(sink)))?,
                ),
            })
        })
        .collect()
}

/// The delivery of a run, started.
pub enum Started {
    /// The engine loop writes every action to its copies itself.
    InLoop(Router),
    /// A delivery beside the loop, on its own runtime; its results come through the inbox.
    Beside(Beside),
}

/// The delivery beside the engine loop.
pub struct Beside {
    rt: tokio::runtime::Runtime,
    pub delivery: Delivery,
}

impl Beside {
    /// Stops the delivery: what is in flight is abandoned and delivered again at the next
    /// start, under the same idempotency keys.
    pub fn finish(self) {
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Starts the delivery `plan` describes; `inbox` takes the results of a delivery beside the
/// loop.
pub fn start(
    plan: &Plan,
    sinks: Vec<SinkWriter>,
    stores: &Stores,
    inbox: Option<Inbox>,
) -> anyhow::Result<Started> {
    tracing::info!(routes = %plan.describe(), "delivery");
    if !plan.has_answerers() {
        return Ok(Started::InLoop(Router::new(plan, sinks)?));
    }
    let inbox = inbox.context("a delivery beside the engine needs its inbox")?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("canvass-delivery")
        .enable_all()
        .build()?;
    let delivery = {
        let _entered = rt.enter();
        Delivery::start(stores.clone(), inbox, plan, sinks)?
    };
    Ok(Started::Beside(Beside { rt, delivery }))
}

/// The hook that wakes the delivery after each commit.
pub fn wake(delivery: &Delivery) -> Box<dyn FnMut() + Send> {
    let delivery = Arc::new(delivery.clone());
    Box::new(move || delivery.committed())
}
