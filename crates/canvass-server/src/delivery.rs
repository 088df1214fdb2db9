//! Action delivery over gRPC: the outbox, read from the store, goes to executors (push) or
//! to services streaming it (pull, `ActionService`).
//!
//! An action leaves the outbox only when its result is logged (an `ActionAcks` entry through
//! the engine's inbox), so a crash at any point delivers it again under the same
//! idempotency key. What is in flight is memory only: leases of pulled actions and the
//! attempts of pushed ones. After a restart everything still queued is delivered again.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Condvar, Mutex, PoisonError},
    time::{Duration, Instant},
};

use canvass_engine::{
    durable::{Incoming, Outcome, Sourced},
    runtime::{Busy, Inbox},
    throttle,
};
use canvass_proto::v1;
use canvass_store::Stores;
use tokio::sync::{Notify, Semaphore, mpsc};
use tonic::{Request, Response, Status};

use crate::{
    Shared,
    api::{action_executor_client::ActionExecutorClient, action_service_server::ActionService},
    auth::Rpc,
    config::{ExecutorConfig, action_kind},
    invalid,
};

/// Queued actions held for pullers at most; beyond it the outbox waits in the store.
const PULL_BACKLOG: usize = 50_000;
/// Outbox rows read per scan.
const SCAN: usize = 1024;
/// Longest wait between two retries of a push.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// Where an action sits: its partition and its place in that partition's outbox.
type Position = (u32, u64, u32);
/// How far a puller has read: per partition, the last outbox place it was sent.
type Cursor = BTreeMap<u32, (u64, u32)>;

/// The delivery: shared by the outbox reader, the executors and the `ActionService`.
#[derive(Debug, Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    inbox: Inbox,
    pull: Mutex<Pull>,
    /// Pullers wait here for new or expired actions.
    pull_changed: Notify,
    /// The outbox reader waits here for commits (the counter of commits seen).
    commits: (Mutex<u64>, Condvar),
}

#[derive(Debug, Default)]
struct Pull {
    /// Actions waiting for a puller, by outbox position; `true` if streamed before.
    ready: BTreeMap<Position, (v1::Action, bool)>,
    /// Actions streamed and not yet acknowledged, by idempotency key.
    leased: HashMap<String, Lease>,
}

#[derive(Debug)]
struct Lease {
    position: Position,
    action: v1::Action,
    deadline: Instant,
    /// The stream it was leased to: only that one hands it back when it goes away (after
    /// the deadline, the action may be leased to another).
    stream: u64,
}

/// Numbers the pull streams, for their leases.
static NEXT_STREAM: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The result of one action, as logged.
fn ack(
    position: Position,
    action: &v1::Action,
    outcome: v1::ExecutionOutcome,
    detail: String,
    opportunity_id: String,
) -> v1::ActionAck {
    let outcome = match outcome {
        v1::ExecutionOutcome::Delivered => v1::DeliveryOutcome::Delivered,
        v1::ExecutionOutcome::Bounced => v1::DeliveryOutcome::Bounced,
        v1::ExecutionOutcome::OpportunityCreated => v1::DeliveryOutcome::OpportunityCreated,
        v1::ExecutionOutcome::Failed | v1::ExecutionOutcome::Unspecified => {
            v1::DeliveryOutcome::Failed
        }
    };
    v1::ActionAck {
        idempotency_key: action.idempotency_key.clone(),
        contact_id: action.contact_id.clone(),
        outcome: outcome as i32,
        detail,
        outbox_seq: position.1,
        outbox_index: position.2,
        opportunity_id,
        campaign_id: action.campaign_id.clone(),
        kind: action.kind,
        executed: true,
    }
}

impl Delivery {
    /// Starts reading the outbox and pushing to the configured executors (on the current
    /// tokio runtime). Call [`Delivery::committed`] after each commit.
    pub fn start(
        stores: Stores,
        inbox: Inbox,
        executors: &[ExecutorConfig],
    ) -> anyhow::Result<Self> {
        let inner = Arc::new(Inner {
            inbox,
            pull: Mutex::new(Pull::default()),
            pull_changed: Notify::new(),
            commits: (Mutex::new(0), Condvar::new()),
        });
        let mut routes = HashMap::new();
        for e in executors {
            let (tx, rx) = mpsc::channel::<(Position, v1::Action)>(SCAN);
            let endpoint = tonic::transport::Endpoint::from_shared(e.endpoint.clone())?
                .timeout(Duration::from_millis(e.timeout_ms))
                .connect_timeout(Duration::from_millis(e.timeout_ms));
            tokio::spawn(push_loop(
                Arc::clone(&inner),
                ActionExecutorClient::new(endpoint.connect_lazy()),
                Arc::new(Semaphore::new(e.concurrency)),
                rx,
            ));
            for k in &e.kinds {
                if let Some(kind) = action_kind(k) {
                    routes.insert(kind as i32, tx.clone());
                }
            }
        }
        let reader = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("canvass-outbox".into())
            .spawn(move || read_outbox(&reader, &stores, &routes))?;
        Ok(Self { inner })
    }

    /// Tells the outbox reader that a commit may have queued actions.
    pub fn committed(&self) {
        let (count, changed) = &self.inner.commits;
        *count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        changed.notify_all();
    }
}

/// Reads each partition's outbox in order, once per process: rows go to their executor or
/// to pullers. What is read once is in flight until its result is logged.
fn read_outbox(
    inner: &Inner,
    stores: &Stores,
    routes: &HashMap<i32, mpsc::Sender<(Position, v1::Action)>>,
) {
    let mut cursors: Vec<Option<(u64, u32)>> = vec![None; stores.iter().len()];
    let mut seen = 0;
    loop {
        let mut full = false;
        for (p, store) in stores.iter().enumerate() {
            // Only what a flush made durable may leave.
            let rows = match store.outbox_durable_after(cursors[p], SCAN) {
                Ok(rows) => rows,
                Err(e) => {
                    tracing::error!(partition = p, error = %e, "reading the outbox failed");
                    Vec::new()
                }
            };
            full |= rows.len() == SCAN;
            if let Some(&(last, _)) = rows.last() {
                cursors[p] = Some(last);
            }
            let rows = rows
                .into_iter()
                .map(|((seq, index), action)| ((p as u32, seq, index), action));
            if !hand_out(inner, routes, rows) {
                return;
            }
        }
        if full {
            continue;
        }
        // Wait for the next commit (or a while: commits made before this reader started).
        let (count, changed) = &inner.commits;
        let guard = count.lock().unwrap_or_else(PoisonError::into_inner);
        let (guard, _) = changed
            .wait_timeout_while(guard, Duration::from_millis(200), |c| *c == seen)
            .unwrap_or_else(PoisonError::into_inner);
        seen = *guard;
    }
}

/// Gives outbox rows to their executor or to the pullers; `false` once the executors are
/// gone (the server stopped).
fn hand_out(
    inner: &Inner,
    routes: &HashMap<i32, mpsc::Sender<(Position, v1::Action)>>,
    rows: impl Iterator<Item = (Position, v1::Action)>,
) -> bool {
    {
        for (position, action) in rows {
            if let Some(route) = routes.get(&action.kind) {
                // Waits while the executor is busy: its backlog stays in the store.
                if route.blocking_send((position, action)).is_err() {
                    return false;
                }
            } else {
                loop {
                    let mut pull = inner.pull.lock().unwrap_or_else(PoisonError::into_inner);
                    if pull.ready.len() < PULL_BACKLOG {
                        pull.ready.insert(position, (action, false));
                        break;
                    }
                    drop(pull);
                    std::thread::sleep(Duration::from_millis(50));
                }
                inner.pull_changed.notify_waiters();
            }
        }
    }
    true
}

/// Logs results through the engine, retrying while its queue is full.
/// `caller`: the identity that reported them (a puller), or `None` for an executor's answers.
async fn log_results(
    inbox: &Inbox,
    acks: Vec<v1::ActionAck>,
    caller: Option<&str>,
) -> Result<Outcome, Status> {
    let mut wait = Duration::from_millis(5);
    loop {
        let input = Sourced {
            incoming: Incoming::Acks(v1::ActionAcks { acks: acks.clone() }),
            position: None,
            caller: caller.map(str::to_string),
        };
        match inbox.submit(vec![input]) {
            Ok(answer) => return crate::first(crate::answered(answer).await?),
            Err(Busy::Full) => {
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_millis(200));
            }
            Err(Busy::Stopped) => return Err(Status::unavailable("the engine has stopped")),
        }
    }
}

/// Pushes each action to one executor, at most `permits` at a time, retrying with
/// exponential backoff until it answers; its answer is logged as the action's result.
async fn push_loop(
    inner: Arc<Inner>,
    client: ActionExecutorClient<tonic::transport::Channel>,
    permits: Arc<Semaphore>,
    mut queue: mpsc::Receiver<(Position, v1::Action)>,
) {
    while let Some((position, action)) = queue.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let mut client = client.clone();
        let inner = Arc::clone(&inner);
        tokio::spawn(async move {
            let mut backoff = Duration::from_millis(100);
            let mut attempt = 1;
            let answer = loop {
                let request = v1::ExecuteRequest {
                    action: Some(action.clone()),
                    attempt,
                };
                match client.execute(request).await {
                    Ok(r) => break r.into_inner(),
                    Err(status) => {
                        let kind = format!("executor {:?} {:?}", action.kind(), status.code());
                        if let Some(held_back) = throttle::WARNINGS.admit(&kind, Instant::now()) {
                            tracing::warn!(
                                held_back,
                                key = %action.idempotency_key,
                                contact = %action.contact_id,
                                campaign = %action.campaign_id,
                                attempt,
                                code = ?status.code(),
                                retry_in_ms = backoff.as_millis(),
                                "the executor refused the action: {}; retrying",
                                status.message(),
                            );
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        attempt += 1;
                    }
                }
            };
            let outcome = v1::ExecutionOutcome::try_from(answer.outcome)
                .unwrap_or(v1::ExecutionOutcome::Unspecified);
            let result = ack(
                position,
                &action,
                outcome,
                answer.detail,
                answer.opportunity_id,
            );
            if let Err(e) = log_results(&inner.inbox, vec![result], None).await {
                tracing::warn!(
                    key = %action.idempotency_key,
                    "the action's result was not logged: {}",
                    e.message()
                );
            }
            drop(permit);
        });
    }
}

/// `ActionService`: pull delivery.
pub(crate) struct Actions {
    shared: Shared,
    delivery: Option<Delivery>,
}

impl Actions {
    pub(crate) fn new(shared: Shared, delivery: Option<Delivery>) -> Self {
        Self { shared, delivery }
    }

    fn inner(&self) -> Result<&Arc<Inner>, Status> {
        self.delivery.as_ref().map(|d| &d.inner).ok_or_else(|| {
            Status::failed_precondition(
                "this engine delivers its actions elsewhere (`canvass run --actions`)",
            )
        })
    }
}

/// A cursor as the API writes it: `SEQ.INDEX` per partition, `P:SEQ.INDEX` for the
/// partitions but 0, comma-separated.
fn parse_cursor(cursor: &str) -> Result<Cursor, Status> {
    let bad = || {
        invalid(
            "bad cursor",
            vec![("cursor".into(), "not a cursor from this API".into())],
        )
    };
    let mut out = Cursor::new();
    for part in cursor.split(',').filter(|p| !p.is_empty()) {
        let (partition, place) = match part.split_once(':') {
            Some((p, place)) => (p.parse().map_err(|_| bad())?, place),
            None => (0, part),
        };
        let (seq, index) = place.split_once('.').ok_or_else(bad)?;
        out.insert(
            partition,
            (
                seq.parse().map_err(|_| bad())?,
                index.parse().map_err(|_| bad())?,
            ),
        );
    }
    Ok(out)
}

fn format_cursor(cursor: &Cursor) -> String {
    cursor
        .iter()
        .map(|(p, (seq, index))| match p {
            0 => format!("{seq}.{index}"),
            p => format!("{p}:{seq}.{index}"),
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The next action for a puller: a redelivery first, else the first new one after its
/// cursor, of a kind it wants. Expired leases go back to the ready set on the way.
fn take_next(
    pull: &mut Pull,
    kinds: &[i32],
    cursor: &Cursor,
    marks: &mut Cursor,
    deadline: Duration,
    stream: u64,
) -> (Option<v1::StreamActionsResponse>, Option<Instant>) {
    let now = Instant::now();
    let expired: Vec<String> = pull
        .leased
        .iter()
        .filter(|(_, l)| l.deadline <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for key in expired {
        if let Some(l) = pull.leased.remove(&key) {
            pull.ready.insert(l.position, (l.action, true));
        }
    }
    let wanted = |a: &v1::Action| kinds.is_empty() || kinds.contains(&a.kind);
    let found = pull
        .ready
        .iter()
        .find(|(p, (a, again))| {
            wanted(a) && (*again || cursor.get(&p.0).is_none_or(|c| (p.1, p.2) > *c))
        })
        .map(|(p, _)| *p);
    let next_expiry = pull.leased.values().map(|l| l.deadline).min();
    let Some(position) = found else {
        return (None, next_expiry);
    };
    let Some((action, again)) = pull.ready.remove(&position) else {
        return (None, next_expiry);
    };
    pull.leased.insert(
        action.idempotency_key.clone(),
        Lease {
            position,
            action: action.clone(),
            deadline: now + deadline,
            stream,
        },
    );
    let mark = marks.entry(position.0).or_insert((position.1, position.2));
    *mark = (*mark).max((position.1, position.2));
    let response = v1::StreamActionsResponse {
        action: Some(action),
        cursor: format_cursor(marks),
        redelivery: again,
    };
    (Some(response), next_expiry)
}

/// The client of a stream left: what it was leased and did not acknowledge goes to the
/// other pullers now, flagged as a redelivery, instead of waiting for its deadline.
fn hand_back(inner: &Inner, keys: &[String], stream: u64) {
    let mut pull = inner.pull.lock().unwrap_or_else(PoisonError::into_inner);
    for key in keys {
        if pull.leased.get(key).is_some_and(|l| l.stream == stream)
            && let Some(lease) = pull.leased.remove(key)
        {
            pull.ready.insert(lease.position, (lease.action, true));
        }
    }
    drop(pull);
    inner.pull_changed.notify_waiters();
}

type ActionStream = std::pin::Pin<
    Box<dyn futures::Stream<Item = Result<v1::StreamActionsResponse, Status>> + Send>,
>;

#[tonic::async_trait]
impl ActionService for Actions {
    type StreamActionsStream = ActionStream;

    async fn stream_actions(
        &self,
        request: Request<v1::StreamActionsRequest>,
    ) -> Result<Response<Self::StreamActionsStream>, Status> {
        self.shared.auth.check(&request, Rpc::StreamActions)?;
        let r = request.into_inner();
        let cursor = parse_cursor(&r.cursor)?;
        for k in &r.kinds {
            if v1::ActionKind::try_from(*k).is_err() {
                return Err(invalid(
                    &format!("unknown action kind {k}"),
                    vec![("kinds".into(), format!("unknown value {k}"))],
                ));
            }
        }
        let deadline = Duration::from_secs(match r.ack_deadline_seconds {
            0 => 30,
            s => u64::from(s),
        });
        let inner = Arc::clone(self.inner()?);
        // A small buffer: what is leased to a stream is what it is about to read.
        let (tx, rx) = mpsc::channel(8);
        let stream = NEXT_STREAM.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        tokio::spawn(async move {
            // Keys leased through this stream: handed back at once if the client leaves.
            let mut leased_here: Vec<String> = Vec::new();
            // What this stream has sent, per partition: the cursor a client resumes from.
            let mut marks = cursor.clone();
            loop {
                let notified = inner.pull_changed.notified();
                let (next, expiry) = {
                    let mut pull = inner.pull.lock().unwrap_or_else(PoisonError::into_inner);
                    if leased_here.len() >= 1024 {
                        leased_here
                            .retain(|k| pull.leased.get(k).is_some_and(|l| l.stream == stream));
                    }
                    take_next(&mut pull, &r.kinds, &cursor, &mut marks, deadline, stream)
                };
                match next {
                    Some(response) => {
                        if let Some(a) = &response.action {
                            leased_here.push(a.idempotency_key.clone());
                        }
                        if tx.send(Ok(response)).await.is_err() {
                            hand_back(&inner, &leased_here, stream);
                            return;
                        }
                    }
                    None => {
                        let wait = expiry
                            .map_or(Duration::from_secs(1), |e| {
                                e.saturating_duration_since(Instant::now())
                            })
                            .min(Duration::from_secs(1));
                        tokio::select! {
                            () = notified => {}
                            () = tokio::time::sleep(wait) => {}
                            () = tx.closed() => {
                                hand_back(&inner, &leased_here, stream);
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn ack_actions(
        &self,
        request: Request<v1::AckActionsRequest>,
    ) -> Result<Response<v1::AckActionsResponse>, Status> {
        let caller = self.shared.auth.check(&request, Rpc::AckActions)?;
        let results = request.into_inner().results;
        for (i, r) in results.iter().enumerate() {
            if r.idempotency_key.is_empty() {
                return Err(invalid(
                    "an idempotency key is required",
                    vec![(format!("results[{i}].idempotency_key"), "required".into())],
                ));
            }
            if v1::ExecutionOutcome::try_from(r.outcome).is_err() {
                return Err(invalid(
                    &format!("unknown outcome {}", r.outcome),
                    vec![(format!("results[{i}].outcome"), "unknown value".into())],
                ));
            }
        }
        let inner = self.inner()?;
        let (acks, leases, unknown_keys) = {
            let mut pull = inner.pull.lock().unwrap_or_else(PoisonError::into_inner);
            let mut acks = Vec::new();
            let mut leases = Vec::new();
            let mut unknown = Vec::new();
            for r in results {
                match pull.leased.remove(&r.idempotency_key) {
                    Some(lease) => {
                        let outcome = v1::ExecutionOutcome::try_from(r.outcome)
                            .unwrap_or(v1::ExecutionOutcome::Unspecified);
                        acks.push(ack(
                            lease.position,
                            &lease.action,
                            outcome,
                            r.detail,
                            r.opportunity_id,
                        ));
                        leases.push(lease);
                    }
                    None => unknown.push(r.idempotency_key),
                }
            }
            (acks, leases, unknown)
        };
        let acknowledged = u32::try_from(acks.len()).unwrap_or(u32::MAX);
        if !acks.is_empty()
            && let Err(status) = log_results(&inner.inbox, acks, Some(&caller.identity)).await
        {
            // Not logged: the actions are leased again, to go out once more.
            let mut pull = inner.pull.lock().unwrap_or_else(PoisonError::into_inner);
            for l in leases {
                pull.leased.insert(l.action.idempotency_key.clone(), l);
            }
            return Err(status);
        }
        Ok(Response::new(v1::AckActionsResponse {
            acknowledged,
            unknown_keys,
        }))
    }
}
