//! `canvass run --grpc-config`: the gRPC server on a small tokio runtime beside the engine
//! loop, which stays on the calling thread (file/stdin or Kafka).

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use canvass_engine::runtime::Inbox;
use canvass_server::{Delivery, GrpcConfig};
use canvass_store::Stores;

/// A running gRPC server; [`Serving::finish`] stops it.
pub struct Serving {
    rt: tokio::runtime::Runtime,
    server: tokio::task::JoinHandle<anyhow::Result<()>>,
    stop: Arc<AtomicBool>,
    /// Where it listens (the port chosen when the settings say 0).
    pub address: std::net::SocketAddr,
}

/// Starts serving with `config` until `stop` is set, submitting to `inbox`. `delivery`:
/// the delivery beside the engine, whose pullers `ActionService` serves (without one, it
/// refuses). `cluster`: the group on Kafka, told the address the server listens on (what
/// the other engines call, unless the settings advertise another).
pub fn start(
    config: GrpcConfig,
    stores: Stores,
    stop: &Arc<AtomicBool>,
    inbox: Inbox,
    delivery: Option<Delivery>,
    cluster: Option<canvass_kafka::Cluster>,
) -> anyhow::Result<Serving> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("canvass-grpc")
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let group = cluster.map(|cluster| {
        cluster.advertise_default(crate::group::default_address(address, config.tls.is_some()));
        Arc::new(crate::group::KafkaGroup(cluster)) as Arc<dyn canvass_server::Group>
    });
    let watched = Arc::clone(stop);
    let shutdown = async move {
        while !watched.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let server = rt.spawn(async move {
        canvass_server::serve_on(&config, listener, stores, inbox, delivery, group, shutdown).await
    });
    tracing::info!(%address, "grpc: listening");
    Ok(Serving {
        address,
        rt,
        server,
        stop: Arc::clone(stop),
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
