//! An example `canvass.v1.ActionExecutor`: prints each action it would carry out as one JSON
//! line on standard output, answers, and recognises an action sent again by its idempotency
//! key (it answers the same, and does not print it twice).
//!
//! `canvass-executor --listen 127.0.0.1:7001 [--out FILE] [--fail-first 2] [--delay-ms 200]
//! [--garbage]`: with `--out` each action carried out is appended to FILE (synced before the
//! answer) instead of standard output, and the keys already in FILE are known at start, so
//! that an executor restarted after a crash still carries each action out once; with
//! `--fail-first N` the first N attempts at every action fail with `UNAVAILABLE`, to see the
//! engine retry; with `--delay-ms` each call takes that long, and the most calls in flight at
//! once is printed on stderr as it grows; with `--garbage` every answer is an outcome that
//! does not exist (an executor gone wrong), to see the engine give up.
//! Sales hand-offs are answered with an opportunity id, emails to contacts whose id contains
//! `bounce` with a bounce; everything else is delivered.

use std::{
    collections::HashMap,
    io::Write,
    net::SocketAddr,
    sync::{Arc, Mutex, PoisonError},
};

use canvass_proto::{json, v1};
use canvass_server::api::action_executor_server::{ActionExecutor, ActionExecutorServer};
use clap::Parser;
use tonic::{Request, Response, Status};

#[derive(Debug, Parser)]
#[command(about = "An example ActionExecutor for canvass")]
struct Args {
    /// Address to listen on (port 0: any free port; the address is printed on stderr).
    #[arg(long, default_value = "127.0.0.1:7001")]
    listen: SocketAddr,
    /// Fail the first N attempts at every action with UNAVAILABLE.
    #[arg(long, default_value_t = 0)]
    fail_first: u32,
    /// Take this long to carry out each action (a slow mail server).
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Append what is carried out to this file (and know its keys at start).
    #[arg(long)]
    out: Option<std::path::PathBuf>,
    /// Answer every call with an outcome that does not exist.
    #[arg(long)]
    garbage: bool,
}

#[derive(Debug, Default)]
struct Executor {
    fail_first: u32,
    delay: std::time::Duration,
    /// Calls being carried out now, and the most seen at once (printed on stderr when it
    /// grows, to see the engine's concurrency bound at work).
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
    /// Attempts seen per idempotency key, and the answer once given.
    seen: Mutex<HashMap<String, (u32, Option<v1::ExecuteResponse>)>>,
    /// Where carried-out actions go: standard output, or a file.
    out: Option<Mutex<std::fs::File>>,
    garbage: bool,
}

fn answer(action: &v1::Action) -> v1::ExecuteResponse {
    match action.kind() {
        v1::ActionKind::SalesHandoff => v1::ExecuteResponse {
            outcome: v1::ExecutionOutcome::OpportunityCreated as i32,
            detail: "opportunity opened".into(),
            opportunity_id: format!("opp-{}", action.contact_id),
        },
        v1::ActionKind::Email if action.contact_id.contains("bounce") => v1::ExecuteResponse {
            outcome: v1::ExecutionOutcome::Bounced as i32,
            detail: "mailbox unknown".into(),
            opportunity_id: String::new(),
        },
        _ => v1::ExecuteResponse {
            outcome: v1::ExecutionOutcome::Delivered as i32,
            detail: String::new(),
            opportunity_id: String::new(),
        },
    }
}

#[tonic::async_trait]
impl ActionExecutor for Executor {
    async fn execute(
        &self,
        request: Request<v1::ExecuteRequest>,
    ) -> Result<Response<v1::ExecuteResponse>, Status> {
        let action = request
            .into_inner()
            .action
            .ok_or_else(|| Status::invalid_argument("field `action`: required"))?;
        if action.idempotency_key.is_empty() {
            return Err(Status::invalid_argument(
                "field `action.idempotency_key`: required",
            ));
        }
        if !self.delay.is_zero() {
            use std::sync::atomic::Ordering::SeqCst;
            let now = self.in_flight.fetch_add(1, SeqCst) + 1;
            if self.most_in_flight.fetch_max(now, SeqCst) < now {
                eprintln!("executor: {now} calls in flight");
            }
            tokio::time::sleep(self.delay).await;
            self.in_flight.fetch_sub(1, SeqCst);
        }
        if self.garbage {
            return Ok(Response::new(v1::ExecuteResponse {
                outcome: 99,
                detail: "garbage on purpose (--garbage)".into(),
                opportunity_id: String::new(),
            }));
        }
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let entry = seen.entry(action.idempotency_key.clone()).or_default();
        entry.0 += 1;
        if entry.0 <= self.fail_first {
            return Err(Status::unavailable(format!(
                "failing attempt {} on purpose (--fail-first {})",
                entry.0, self.fail_first
            )));
        }
        if let Some(done) = &entry.1 {
            // Sent again (the engine restarted before logging our answer): same answer,
            // nothing carried out twice.
            return Ok(Response::new(done.clone()));
        }
        let response = answer(&action);
        let line = json::to_string(&action)
            .map_err(|e| Status::invalid_argument(format!("the action cannot be encoded: {e}")))?;
        let written = match &self.out {
            Some(file) => {
                // One write per line: a kill leaves a whole line or none.
                let mut file = file.lock().unwrap_or_else(PoisonError::into_inner);
                file.write_all(format!("{line}\n").as_bytes())
                    .and_then(|()| file.sync_data())
            }
            None => {
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush())
            }
        };
        written.map_err(|e| Status::internal(e.to_string()))?;
        entry.1 = Some(response.clone());
        Ok(Response::new(response))
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    eprintln!("executor: listening on {}", listener.local_addr()?);
    let mut seen = HashMap::new();
    let out = match &args.out {
        Some(path) => {
            // What a former run carried out is done: the same answer, never twice.
            if let Ok(text) = std::fs::read_to_string(path) {
                for line in text.lines() {
                    if let Ok(action) = json::from_str::<v1::Action>(line) {
                        let done = answer(&action);
                        seen.insert(action.idempotency_key, (0, Some(done)));
                    }
                }
            }
            let file = std::fs::File::options()
                .create(true)
                .append(true)
                .open(path)?;
            Some(Mutex::new(file))
        }
        None => None,
    };
    let executor = Arc::new(Executor {
        fail_first: args.fail_first,
        delay: std::time::Duration::from_millis(args.delay_ms),
        seen: Mutex::new(seen),
        out,
        garbage: args.garbage,
        ..Executor::default()
    });
    tonic::transport::Server::builder()
        .add_service(ActionExecutorServer::from_arc(executor))
        .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
        .await?;
    Ok(())
}
