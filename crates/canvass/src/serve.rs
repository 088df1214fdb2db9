//! `canvass run --grpc-config`: the engine loop on this thread, the gRPC server and the
//! action delivery on a small tokio runtime beside it.

use std::{
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use anyhow::Context as _;
use canvass_engine::{
    durable::Engine,
    runtime::{self, Dispatcher, InputSpec, RunOptions, RunReport},
};
use canvass_server::{Delivery, GrpcConfig};

/// Runs the engine with the gRPC API until SIGTERM or SIGINT.
pub fn run_serving(
    engine: &mut Engine,
    config_path: &Path,
    input: Option<InputSpec>,
    sink: Option<&mut dyn Dispatcher>,
    options: &RunOptions,
) -> anyhow::Result<RunReport> {
    let config = GrpcConfig::load(config_path)?;
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))
            .context("cannot install the signal handlers")?;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("canvass-grpc")
        .enable_all()
        .build()?;
    let (inbox, intake) = runtime::channel(options.channel_capacity);
    let store = engine.store().clone();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(config.listen))
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let address = listener.local_addr()?;
    let delivery = match sink {
        Some(_) => None,
        None => Some(rt.block_on(async {
            Delivery::start(store.clone(), inbox.clone(), &config.executors)
        })?),
    };
    let watched = Arc::clone(&stop);
    let shutdown = async move {
        while !watched.load(Ordering::Relaxed) {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let server = {
        let delivery = delivery.clone();
        let config = config.clone();
        rt.spawn(async move {
            canvass_server::serve_on(&config, listener, store, inbox, delivery, shutdown).await
        })
    };
    // Clients (and tests) learn the address here, also when the port was 0.
    eprintln!("grpc: listening on {address}");
    let sources = runtime::Sources {
        input,
        intake: Some(intake),
        serve: true,
        stop: Some(Arc::clone(&stop)),
        after_commit: delivery
            .map(|d| Box::new(move |_| d.committed()) as Box<dyn FnMut(u64) + Send>),
    };
    let report = runtime::run(engine, sources, sink, options);
    stop.store(true, Ordering::Relaxed);
    match rt.block_on(server) {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("error: the gRPC server failed: {e:#}"),
        Err(e) => eprintln!("error: the gRPC server task failed: {e}"),
    }
    rt.shutdown_timeout(Duration::from_secs(1));
    Ok(report?)
}
