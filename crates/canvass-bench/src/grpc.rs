//! gRPC benchmarks, each beside its baseline measured in the same run:
//! - ingest: events/s through `IngestService.IngestEvents` (client-streaming, each chunk
//!   durable before the next), beside the same events given to the engine in-process;
//! - push: actions/s from the outbox to a local `ActionExecutor` with their results logged,
//!   beside plain unary calls to the same executor at the same concurrency.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use canvass_engine::runtime::{self, Dispatcher, RunOptions, Sources};
use canvass_proto::v1;
use canvass_server::{
    Delivery, GrpcConfig,
    api::{
        action_executor_client::ActionExecutorClient,
        action_executor_server::{ActionExecutor, ActionExecutorServer},
        ingest_service_client::IngestServiceClient,
    },
};
use tonic::{Request, Response, Status, transport::Channel};

use crate::{deliver, event, fmt_all, median, open, settle, setup};

const TOKEN: &str = "bench-service-token";
/// Calls in flight to the executor, for the engine and the baseline alike.
const CONCURRENCY: usize = 16;

/// Discards delivered actions (the ingest bench measures the way in).
struct Discard;

impl Dispatcher for Discard {
    fn deliver(&mut self, _: &[v1::Action]) -> std::io::Result<()> {
        Ok(())
    }
}

/// Answers every action at once.
#[derive(Default)]
struct CountingExecutor(AtomicU64);

#[tonic::async_trait]
impl ActionExecutor for CountingExecutor {
    async fn execute(
        &self,
        _: Request<v1::ExecuteRequest>,
    ) -> Result<Response<v1::ExecuteResponse>, Status> {
        self.0.fetch_add(1, Ordering::Relaxed);
        Ok(Response::new(v1::ExecuteResponse {
            outcome: v1::ExecutionOutcome::Delivered as i32,
            ..Default::default()
        }))
    }
}

fn config(executor: Option<&str>) -> anyhow::Result<GrpcConfig> {
    let mut text = format!(
        "listen = \"127.0.0.1:0\"\n[[tokens]]\nidentity = \"bench\"\nrole = \"service\"\nsha256 = \"{}\"\n",
        canvass_server::hash_token(TOKEN)
    );
    if let Some(address) = executor {
        text.push_str(&format!(
            "[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://{address}\"\nconcurrency = {CONCURRENCY}\n"
        ));
    }
    GrpcConfig::parse(&text).map_err(|e| anyhow::anyhow!(e))
}

fn touchpoint(i: u64) -> v1::TouchpointEvent {
    match event(i).incoming {
        canvass_engine::durable::Incoming::Record(r) => match r.input {
            Some(v1::ingest_record::Input::Event(e)) => e,
            _ => unreachable!("bench events are events"),
        },
        _ => unreachable!("bench events are events"),
    }
}

/// Events/s through gRPC client-streaming, the engine committing and delivering.
fn ingest_over_grpc(events: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let (_, mut engine) = open(dir.path())?;
    let stores = engine.stores().clone();
    setup(&mut engine)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (inbox, intake) = runtime::channel(16_384);
    let stop = Arc::new(AtomicBool::new(false));
    let config = config(None)?;
    let listener = rt.block_on(tokio::net::TcpListener::bind(config.listen))?;
    let address = listener.local_addr()?;
    let watched = Arc::clone(&stop);
    let server = rt.spawn(async move {
        let shutdown = async move {
            while !watched.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        };
        canvass_server::serve_on(&config, listener, stores, inbox, None, None, shutdown).await
    });
    let loop_stop = Arc::clone(&stop);
    let engine_thread = std::thread::spawn(move || {
        let sources = Sources {
            intake: Some(intake),
            serve: true,
            stop: Some(loop_stop),
            ..Sources::default()
        };
        runtime::run(
            &mut engine,
            sources,
            Some(&mut Discard),
            &RunOptions::default(),
        )
    });
    let elapsed = rt.block_on(async {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        let mut client = IngestServiceClient::new(channel);
        let messages = tokio_stream::iter((0..events).map(|i| v1::IngestEventsRequest {
            event: Some(touchpoint(i)),
        }));
        let mut request = Request::new(messages);
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {TOKEN}").parse()?);
        let started = Instant::now();
        let response = client.ingest_events(request).await?.into_inner();
        anyhow::ensure!(
            response.accepted == events,
            "accepted {} of {events}",
            response.accepted
        );
        Ok::<_, anyhow::Error>(started.elapsed())
    })?;
    stop.store(true, Ordering::Relaxed);
    engine_thread
        .join()
        .map_err(|_| anyhow::anyhow!("engine thread panicked"))??;
    rt.block_on(server)??;
    Ok(events as f64 / elapsed.as_secs_f64())
}

/// The same events given to the engine in-process, in the chunks gRPC submits them in.
fn ingest_in_process(events: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let (_store, mut engine) = open(dir.path())?;
    setup(&mut engine)?;
    let started = Instant::now();
    let mut i = 0;
    while i < events {
        let n = (events - i).min(1024);
        engine.ingest((i..i + n).map(event).collect(), canvass_core::UnixMillis(0))?;
        deliver(&mut engine)?;
        i += n;
    }
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

fn start_executor(rt: &tokio::runtime::Runtime) -> anyhow::Result<(String, Arc<CountingExecutor>)> {
    let executor = Arc::new(CountingExecutor::default());
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?.to_string();
    let service = ActionExecutorServer::from_arc(Arc::clone(&executor));
    rt.spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    Ok((address, executor))
}

/// Actions/s from the outbox to a local executor, results logged; `actions` queued first.
fn push(actions: u64) -> anyhow::Result<f64> {
    let dir = tempfile::tempdir()?;
    let (store, mut engine) = open(dir.path())?;
    setup(&mut engine)?;
    // Signups only: one welcome email each, all queued before delivery starts.
    let mut i = 0;
    while i < actions {
        let n = (actions - i).min(4096);
        engine.ingest(
            (i..i + n).map(|k| event(2 * k)).collect(),
            canvass_core::UnixMillis(0),
        )?;
        i += n;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (executor_address, executor) = start_executor(&rt)?;
    let (inbox, intake) = runtime::channel(16_384);
    let config = config(Some(&executor_address))?;
    let started = Instant::now();
    let delivery = rt.block_on(async {
        Delivery::start(
            engine.stores().clone(),
            inbox.clone(),
            &canvass_server::delivery::Plan::derived_pull(&config.executors),
            Vec::new(),
        )
    })?;
    let stop = Arc::new(AtomicBool::new(false));
    let loop_stop = Arc::clone(&stop);
    let hook = delivery.clone();
    let engine_thread = std::thread::spawn(move || {
        let sources = Sources {
            intake: Some(intake),
            serve: true,
            stop: Some(loop_stop),
            after_commit: Some(Box::new(move || hook.committed())),
            ..Sources::default()
        };
        runtime::run(&mut engine, sources, None, &RunOptions::default())
    });
    // Done when every result is logged: the outbox is empty.
    let deadline = Instant::now() + Duration::from_secs(600);
    while !store.outbox(1)?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "push did not finish");
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    engine_thread
        .join()
        .map_err(|_| anyhow::anyhow!("engine thread panicked"))??;
    anyhow::ensure!(
        executor.0.load(Ordering::Relaxed) >= actions,
        "the executor saw fewer calls than actions"
    );
    drop(inbox);
    Ok(actions as f64 / elapsed.as_secs_f64())
}

/// The same number of unary calls to the same kind of executor, `CONCURRENCY` in flight.
fn push_baseline(actions: u64) -> anyhow::Result<f64> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (address, _executor) = start_executor(&rt)?;
    rt.block_on(async {
        let channel = Channel::from_shared(format!("http://{address}"))?
            .connect()
            .await?;
        let next = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let mut workers = Vec::new();
        for _ in 0..CONCURRENCY {
            let mut client = ActionExecutorClient::new(channel.clone());
            let next = Arc::clone(&next);
            workers.push(tokio::spawn(async move {
                while next.fetch_add(1, Ordering::Relaxed) < actions {
                    let action = v1::Action {
                        idempotency_key: "bench".into(),
                        kind: v1::ActionKind::Email as i32,
                        ..Default::default()
                    };
                    client
                        .execute(v1::ExecuteRequest {
                            action: Some(action),
                            attempt: 1,
                        })
                        .await?;
                }
                Ok::<_, Status>(())
            }));
        }
        for w in workers {
            w.await??;
        }
        Ok(actions as f64 / started.elapsed().as_secs_f64())
    })
}

/// Runs both gRPC benchmarks and prints them as Markdown.
pub fn grpc(events: u64, actions: u64, runs: usize) -> anyhow::Result<()> {
    let (mut over_grpc, mut in_process, mut pushed, mut calls) = (vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        settle();
        over_grpc.push(ingest_over_grpc(events)?);
        settle();
        in_process.push(ingest_in_process(events)?);
        settle();
        pushed.push(push(actions)?);
        calls.push(push_baseline(actions)?);
    }
    let ratio = |a: &[f64], b: &[f64]| {
        a.iter()
            .zip(b)
            .map(|(x, y)| format!("{:.0}%", 100.0 * x / y))
            .collect::<Vec<_>>()
            .join(", ")
    };
    println!(
        "## gRPC: ingest ({events} events) and push delivery ({actions} actions), median of {runs}\n"
    );
    println!("| measure | median | runs |");
    println!("| --- | ---: | --- |");
    println!(
        "| ingest over gRPC client-streaming, durable, actions delivered (events/s) | {:.0} | {} |",
        median(over_grpc.clone()),
        fmt_all(&over_grpc)
    );
    println!(
        "| the same events given to the engine in-process, 1024 per commit (events/s) | {:.0} | {} |",
        median(in_process.clone()),
        fmt_all(&in_process)
    );
    println!(
        "| gRPC / in-process | | {} |",
        ratio(&over_grpc, &in_process)
    );
    println!(
        "| push to a local ActionExecutor, results logged (actions/s) | {:.0} | {} |",
        median(pushed.clone()),
        fmt_all(&pushed)
    );
    println!(
        "| plain unary calls to the same executor, {CONCURRENCY} in flight (calls/s) | {:.0} | {} |",
        median(calls.clone()),
        fmt_all(&calls)
    );
    println!("| push / plain calls | | {} |\n", ratio(&pushed, &calls));
    Ok(())
}
