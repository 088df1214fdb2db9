//! Pull delivery: `ActionService` streams the actions of pulled kinds to services, leases
//! each until it is acknowledged (or its deadline passes, or its stream goes away), and logs
//! the acknowledged results through the engine.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, PoisonError},
    time::{Duration, Instant},
};

use canvass_proto::v1;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status};

use super::{Delivery, Inner, Position, ack, log_results};
use crate::{Shared, api::action_service_server::ActionService, auth::Rpc, invalid};

/// How far a puller has read: per partition, the last outbox place it was sent.
type Cursor = BTreeMap<u32, (u64, u32)>;

/// Actions waiting for pullers and actions leased to them.
#[derive(Debug, Default)]
pub(super) struct Pull {
    /// Actions waiting for a puller, by outbox position; `true` if streamed before.
    pub(super) ready: BTreeMap<Position, (v1::Action, bool)>,
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
        self.delivery
            .as_ref()
            .map(|d| &d.inner)
            .filter(|inner| inner.pulls)
            .ok_or_else(|| {
                Status::failed_precondition(
                    "no action kind is pulled from this engine: its delivery settings send every kind elsewhere (`canvass run --delivery`, or `--actions`, or Kafka's actions topic)",
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
        let outcomes: Vec<(i32, i32)> = acks.iter().map(|a| (a.kind, a.outcome)).collect();
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
        for (kind, outcome) in outcomes {
            inner.stats.logged(kind, outcome, false);
        }
        Ok(Response::new(v1::AckActionsResponse {
            acknowledged,
            unknown_keys,
        }))
    }
}
