//! `canvass run --grpc-config`: the gRPC server (and, unless actions go elsewhere, the gRPC
//! action delivery) on a small tokio runtime beside the engine loop, which stays on the
//! calling thread (file/stdin or Kafka).

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use canvass_engine::runtime::{self, Intake};
use canvass_server::{Delivery, GrpcConfig};
use canvass_store::Stores;

/// A running gRPC server; [`Serving::finish`] stops it.
pub struct Serving {
    rt: tokio::runtime::Runtime,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Arc<AtomicBool>,
    /// The engine loop's end of the inbox the server submits to (taken by the loop).
    pub intake: Option<Intake>,
    /// The gRPC action delivery, if actions go over gRPC.
    pub delivery: Option<Delivery>,
    /// Where it listens (the port chosen when the settings say 0).
    pub address: std::net::SocketAddr,
}

/// Starts serving with the settings in `config_path` until `stop` is set. With
/// `deliver_actions`, the outbox is delivered over gRPC (executors and pullers).
pub fn start(
    config_path: &Path,
    stores: Stores,
    stop: &Arc<AtomicBool>,
    deliver_actions: bool,
) -> anyhow::Result<Serving> {
    let config = GrpcConfig::load(config_path)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("canvass-grpc")
        .enable_all()
        .build()?;
    let (inbox, intake) = runtime::channel(config.queue);
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let delivery = if deliver_actions {
        Some(rt.block_on(async {
            Delivery::start(stores.clone(), inbox.clone(), &config.executors)
        })?)
    } else {
        None
    };
    let watched = Arc::clone(stop);
    let shutdown = async move {
        while !watched.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let server = {
        let delivery = delivery.clone();
        rt.spawn(async move {
            canvass_server::serve_on(&config, listener, stores, inbox, delivery, shutdown).await
        })
    };
    tracing::info!(%address, "grpc: listening");
    Ok(Serving {
        address,
        rt,
        server,
        stop: Arc::clone(stop),
        intake: Some(intake),
        delivery,
    })
}

impl Serving {
    /// Stops the server (after the engine loop has stopped) and waits for it.
    pub fn finish(self) {
        self.stop.store(true, Ordering::Relaxed);
        match self.rt.block_on(self.server) {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!(error = format!("{e:#}"), "the gRPC server failed"),
            Err(e) => tracing::error!(error = %e, "the gRPC server task failed"),
        }
        self.rt.shutdown_timeout(Duration::from_secs(1));
    }
}
