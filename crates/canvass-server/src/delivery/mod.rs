//! Action delivery: each action kind goes where the delivery [`Plan`] says (written to the
//! Kafka actions topic or a JSON-lines file, pushed to an `ActionExecutor`, or served to
//! pullers of `ActionService`), whatever the engine's input.
//!
//! An action leaves the outbox only when its result is logged (an `ActionAcks` entry through
//! the engine's inbox), so a crash at any point delivers it again under the same
//! idempotency key. Copies (topic, file) are written before the action is handed to the one
//! destination that answers for it, so a copy is never missed. What is in flight is memory
//! only: leases of pulled actions and the attempts of pushed ones. After a restart
//! everything still queued is delivered again.
//!
//! This delivery runs beside the engine when some kind has an executor or pullers. When
//! every kind goes to copies only, the engine loop writes them itself after each commit
//! ([`Router`]), which keeps the end of a finite run exact.

pub mod plan;
mod pull;
mod push;

use std::{
    collections::{BTreeMap, HashMap},
    io,
    sync::{
        Arc, Condvar, Mutex, PoisonError,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use canvass_engine::{
    durable::{Incoming, Outcome, Sourced},
    runtime::{Busy, Dispatcher, Inbox},
    throttle,
};
use canvass_proto::v1;
use canvass_store::Stores;
use tokio::sync::{Notify, Semaphore, mpsc};
use tonic::Status;

pub(crate) use pull::Actions;
use pull::Pull;

pub use plan::{Answerer, Plan, RetryConfig, Route, Sink};

/// Queued actions held for pullers at most; beyond it the outbox waits in the store.
const PULL_BACKLOG: usize = 50_000;
/// Outbox rows read per scan.
const SCAN: usize = 1024;

/// Where an action sits: its partition and its place in that partition's outbox.
type Position = (u32, u64, u32);

/// A copy destination, opened: the actions topic or a file.
pub type SinkWriter = Box<dyn Dispatcher + Send>;

/// What the delivery has done since it started.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// Results logged: actions carried out (or copied, for kinds with copies only).
    pub delivered: AtomicU64,
    /// Results logged as failed or bounced by the destination that answers for them.
    pub failed: AtomicU64,
    /// Actions given up on and parked as dead letters.
    pub dead_letters: AtomicU64,
    /// Pushes to executors, first attempts and retries.
    pub attempts: AtomicU64,
    /// Of them, retries.
    pub retries: AtomicU64,
}

impl DeliveryStats {
    /// Counts a result logged (here and in the metrics).
    fn logged(&self, kind: i32, outcome: i32, gave_up: bool) {
        let (counter, label) = if gave_up {
            (&self.dead_letters, "given_up")
        } else {
            match v1::DeliveryOutcome::try_from(outcome) {
                Ok(v1::DeliveryOutcome::Failed) => (&self.failed, "failed"),
                Ok(v1::DeliveryOutcome::Bounced) => (&self.failed, "bounced"),
                Ok(v1::DeliveryOutcome::OpportunityCreated) => {
                    (&self.delivered, "opportunity_created")
                }
                _ => (&self.delivered, "delivered"),
            }
        };
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(
            canvass_engine::metrics::ACTIONS_DONE,
            "kind" => canvass_engine::metrics::kind_label(kind),
            "outcome" => label
        )
        .increment(1);
    }
}

/// The delivery: shared by the outbox reader, the executors and the `ActionService`.
#[derive(Debug, Clone)]
pub struct Delivery {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    inbox: Inbox,
    /// Whether some kind is pulled (else `ActionService` refuses).
    pulls: bool,
    pull: Mutex<Pull>,
    /// Pullers wait here for new or expired actions.
    pull_changed: Notify,
    /// The outbox reader waits here for commits (the counter of commits seen).
    commits: (Mutex<u64>, Condvar),
    stats: DeliveryStats,
}

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
        gave_up: false,
    }
}

/// The result of an action whose copies are its delivery (no destination answers for it).
fn copied(position: Position, action: &v1::Action) -> v1::ActionAck {
    v1::ActionAck {
        executed: false,
        ..ack(
            position,
            action,
            v1::ExecutionOutcome::Delivered,
            String::new(),
            String::new(),
        )
    }
}

/// The result of an action given up on: a dead letter, with the reason.
fn given_up(position: Position, action: &v1::Action, reason: String) -> v1::ActionAck {
    v1::ActionAck {
        executed: false,
        gave_up: true,
        ..ack(
            position,
            action,
            v1::ExecutionOutcome::Failed,
            reason,
            String::new(),
        )
    }
}

/// The copies' destinations, shared by the lanes: written under the lock, one batch at a time.
type Sinks = Arc<Mutex<Vec<(String, SinkWriter)>>>;

/// Who answers for a lane's actions.
enum Target {
    /// An executor's push queue.
    Executor(mpsc::Sender<(Position, v1::Action)>),
    /// The pull set.
    Pull,
    /// Nobody: the copies are the delivery, logged as delivered once written.
    Copies,
}

/// One reader of the outbox: the kinds one answerer takes (or the kinds with copies only),
/// with cursors of its own, so that an executor that is away holds back its own kinds only.
struct Lane {
    name: String,
    kinds: Vec<i32>,
    target: Target,
}

impl Delivery {
    /// Starts reading the outbox and delivering it as `plan` says, on the current tokio
    /// runtime; `sinks` are the plan's sinks, opened, in its order. Call
    /// [`Delivery::committed`] after each commit.
    pub fn start(
        stores: Stores,
        inbox: Inbox,
        plan: &Plan,
        sinks: Vec<SinkWriter>,
    ) -> anyhow::Result<Self> {
        anyhow::ensure!(
            sinks.len() == plan.sinks.len(),
            "the delivery needs its {} sinks opened",
            plan.sinks.len()
        );
        let inner = Arc::new(Inner {
            inbox,
            pulls: plan.pulls(),
            pull: Mutex::new(Pull::default()),
            pull_changed: Notify::new(),
            commits: (Mutex::new(0), Condvar::new()),
            stats: DeliveryStats::default(),
        });
        let kinds_of = |answerer: Option<Answerer>| -> Vec<i32> {
            plan.routes
                .iter()
                .filter(|(_, r)| r.answerer == answerer)
                .map(|(k, _)| *k)
                .collect()
        };
        let mut lanes = Vec::new();
        for (i, e) in plan.executors.iter().enumerate() {
            let (tx, rx) = mpsc::channel::<(Position, v1::Action)>(SCAN);
            let endpoint = tonic::transport::Endpoint::from_shared(e.endpoint.clone())?
                .timeout(Duration::from_millis(e.timeout_ms))
                .connect_timeout(Duration::from_millis(e.timeout_ms));
            tokio::spawn(push::push_loop(
                Arc::clone(&inner),
                push::Executor::new(e.endpoint.clone(), endpoint.connect_lazy(), plan.retry),
                Arc::new(Semaphore::new(e.concurrency)),
                rx,
            ));
            lanes.push(Lane {
                name: e.endpoint.clone(),
                kinds: kinds_of(Some(Answerer::Executor(i))),
                target: Target::Executor(tx),
            });
        }
        if plan.pulls() {
            lanes.push(Lane {
                name: "pullers".into(),
                kinds: kinds_of(Some(Answerer::Pull)),
                target: Target::Pull,
            });
        }
        // Every other kind, and a kind the plan does not know (a newer spec), goes here.
        let answered: Vec<i32> = lanes.iter().flat_map(|l| l.kinds.clone()).collect();
        lanes.push(Lane {
            name: "copies".into(),
            kinds: answered,
            target: Target::Copies,
        });
        let sinks: Sinks = Arc::new(Mutex::new(
            plan.sinks
                .iter()
                .map(|s| match s {
                    Sink::Topic => "the actions topic".to_string(),
                    Sink::File(path) => path.clone(),
                })
                .zip(sinks)
                .collect(),
        ));
        let runtime = tokio::runtime::Handle::current();
        for lane in lanes {
            let (reader, stores, sinks, runtime) = (
                Arc::clone(&inner),
                stores.clone(),
                Arc::clone(&sinks),
                runtime.clone(),
            );
            let (routes, retry) = (plan.routes.clone(), plan.retry);
            std::thread::Builder::new()
                .name("canvass-outbox".into())
                .spawn(move || {
                    read_outbox(&reader, &stores, &lane, &sinks, &routes, retry, &runtime)
                })?;
        }
        Ok(Self { inner })
    }

    /// Tells the outbox readers that a commit may have queued actions.
    pub fn committed(&self) {
        let (count, changed) = &self.inner.commits;
        *count.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        changed.notify_all();
    }

    /// What the delivery has done so far.
    #[must_use]
    pub fn stats(&self) -> &DeliveryStats {
        &self.inner.stats
    }
}

impl Lane {
    /// Whether an action's kind is this lane's (the copies lane takes what no other does).
    fn takes(&self, kind: i32) -> bool {
        match self.target {
            Target::Copies => !self.kinds.contains(&kind),
            _ => self.kinds.contains(&kind),
        }
    }
}

/// Reads each partition's outbox in order, once per process, keeping the rows of `lane`'s
/// kinds: they are copied to their sinks, then go to their executor or to pullers, or are
/// logged as delivered. What is read once is in flight until its result is logged.
fn read_outbox(
    inner: &Inner,
    stores: &Stores,
    lane: &Lane,
    sinks: &Sinks,
    routes: &BTreeMap<i32, Route>,
    retry: RetryConfig,
    runtime: &tokio::runtime::Handle,
) {
    let mut cursors: Vec<Option<(u64, u32)>> = vec![None; stores.iter().len()];
    let mut seen = 0;
    loop {
        let mut full = false;
        for (p, store) in stores.iter().enumerate() {
            if !stores.owns(p as u32) {
                // Another engine delivers it; if it comes back, its outbox is read afresh.
                cursors[p] = None;
                continue;
            }
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
            let rows: Vec<(Position, v1::Action)> = rows
                .into_iter()
                .filter(|(_, action)| lane.takes(action.kind))
                .map(|((seq, index), action)| ((p as u32, seq, index), action))
                .collect();
            if !hand_out(inner, lane, sinks, routes, retry, rows, runtime) {
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

/// Writes `actions` to a sink, retrying with backoff until it takes them (a broker or a disk
/// that is away holds the delivery back, never loses a copy).
fn write_copies(name: &str, sink: &mut SinkWriter, actions: &[v1::Action], retry: RetryConfig) {
    let mut waits = push::backoff(retry);
    let mut failures = 0u32;
    loop {
        match sink.deliver(actions) {
            Ok(()) => {
                if failures > 0 {
                    tracing::info!(sink = name, failures, "delivery: copies are written again");
                }
                return;
            }
            Err(e) => {
                failures += 1;
                let wait = waits.next().unwrap_or(Duration::from_secs(1));
                if let Some(held_back) =
                    throttle::WARNINGS.admit(&format!("sink {name}"), Instant::now())
                {
                    tracing::warn!(
                        sink = name,
                        held_back,
                        error = %e,
                        retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                        "delivery: cannot write copies of actions; retrying"
                    );
                }
                std::thread::sleep(wait);
            }
        }
    }
}

/// The route of a kind; one the plan does not know goes to every sink.
fn route_of(routes: &BTreeMap<i32, Route>, sinks: usize, kind: i32) -> Route {
    routes.get(&kind).cloned().unwrap_or_else(|| Route {
        sinks: (0..sinks).collect(),
        answerer: None,
    })
}

/// Gives a lane's outbox rows to their destinations; `false` once its executor is gone (the
/// delivery stopped).
fn hand_out(
    inner: &Inner,
    lane: &Lane,
    sinks: &Sinks,
    routes: &BTreeMap<i32, Route>,
    retry: RetryConfig,
    rows: Vec<(Position, v1::Action)>,
    runtime: &tokio::runtime::Handle,
) -> bool {
    if rows.is_empty() {
        return true;
    }
    // Copies first, one write per sink.
    {
        let mut sinks = sinks.lock().unwrap_or_else(PoisonError::into_inner);
        let count = sinks.len();
        for (index, (name, sink)) in sinks.iter_mut().enumerate() {
            let copies: Vec<v1::Action> = rows
                .iter()
                .filter(|(_, a)| route_of(routes, count, a.kind).sinks.contains(&index))
                .map(|(_, a)| a.clone())
                .collect();
            if !copies.is_empty() {
                write_copies(name, sink, &copies, retry);
            }
        }
    }
    let sink_count = sinks.lock().unwrap_or_else(PoisonError::into_inner).len();
    let mut written = Vec::new();
    for (position, action) in rows {
        match &lane.target {
            Target::Executor(queue) => {
                // Waits while this executor is busy: its backlog stays in the store, and
                // the other lanes go on.
                if queue.blocking_send((position, action)).is_err() {
                    return false;
                }
            }
            Target::Pull => loop {
                let mut pull = inner.pull.lock().unwrap_or_else(PoisonError::into_inner);
                if pull.ready.len() < PULL_BACKLOG {
                    pull.ready.insert(position, (action, false));
                    drop(pull);
                    inner.pull_changed.notify_waiters();
                    break;
                }
                drop(pull);
                std::thread::sleep(Duration::from_millis(50));
            },
            Target::Copies if route_of(routes, sink_count, action.kind).sinks.is_empty() => {
                // No destination at all (a plan has none for a kind only if it knows no
                // sink): parked, not dropped.
                let reason = format!(
                    "no destination for actions of kind {} ({})",
                    canvass_engine::metrics::kind_label(action.kind),
                    lane.name
                );
                written.push(given_up(position, &action, reason));
            }
            Target::Copies => written.push(copied(position, &action)),
        }
    }
    if !written.is_empty() {
        let tally: Vec<(i32, i32, bool)> = written
            .iter()
            .map(|a| (a.kind, a.outcome, a.gave_up))
            .collect();
        if let Err(e) = runtime.block_on(log_results(&inner.inbox, written, None)) {
            // Not logged: the actions stay queued and are copied again after a restart.
            tracing::warn!(
                "delivery: the copies' results were not logged: {}",
                e.message()
            );
            return false;
        }
        for (kind, outcome, gave_up) in tally {
            if gave_up {
                inner.stats.logged(kind, outcome, true);
            } else {
                inner.stats.delivered.fetch_add(1, Ordering::Relaxed);
                metrics::counter!(
                    canvass_engine::metrics::ACTIONS_DONE,
                    "kind" => canvass_engine::metrics::kind_label(kind),
                    "outcome" => "copied"
                )
                .increment(1);
            }
        }
    }
    true
}

/// Logs results through the engine, retrying while its queue is full.
/// `caller`: the identity that reported them (a puller), or `None` for the delivery's own.
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

/// The engine loop's own delivery when every kind goes to copies only: each action is
/// written to the sinks its kind's route names, in order, and counts as delivered once all
/// of them have it.
pub struct Router {
    routes: HashMap<i32, Vec<usize>>,
    sinks: Vec<SinkWriter>,
}

impl std::fmt::Debug for Router {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Router")
            .field("routes", &self.routes)
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl Router {
    /// The router of a plan without answerers; `sinks` are its sinks, opened, in its order.
    pub fn new(plan: &Plan, sinks: Vec<SinkWriter>) -> anyhow::Result<Self> {
        anyhow::ensure!(
            !plan.has_answerers() && sinks.len() == plan.sinks.len(),
            "the engine loop writes copies only, to each of the plan's sinks"
        );
        Ok(Self {
            routes: plan
                .routes
                .iter()
                .map(|(kind, route)| (*kind, route.sinks.clone()))
                .collect(),
            sinks,
        })
    }
}

impl Dispatcher for Router {
    fn deliver(&mut self, actions: &[v1::Action]) -> io::Result<()> {
        for (index, sink) in self.sinks.iter_mut().enumerate() {
            // A kind the plan does not know (a newer spec) goes to every sink.
            let routed =
                |a: &&v1::Action| self.routes.get(&a.kind).is_none_or(|r| r.contains(&index));
            // The common case, one sink for every kind: no copy of the batch.
            if actions.iter().all(|a| routed(&a)) {
                sink.deliver(actions)?;
                continue;
            }
            let mine: Vec<v1::Action> = actions.iter().filter(routed).cloned().collect();
            if !mine.is_empty() {
                sink.deliver(&mine)?;
            }
        }
        Ok(())
    }
}
