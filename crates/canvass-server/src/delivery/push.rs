//! Push delivery: each action of an executor's kinds is sent to it, at most `concurrency`
//! at a time, retried with exponential backoff and full jitter, and given up on (a dead
//! letter with the reason) after the attempts or the time the retry settings allow.
//!
//! An executor that cannot be reached (`UNAVAILABLE`: refused connection, a server going
//! away) costs its actions no attempt: they wait, and the operator hears once that it went
//! away and once that it is back. A reachable executor that refuses, times out or answers
//! nonsense costs an attempt.

use std::{
    sync::{Arc, Mutex, PoisonError, atomic::Ordering},
    time::{Duration, Instant},
};

use canvass_engine::throttle;
use canvass_proto::v1;
use tokio::sync::{Semaphore, mpsc};
use tracing::Instrument;

use super::{Inner, Position, RetryConfig, ack, given_up, log_results};
use crate::api::action_executor_client::ActionExecutorClient;

/// Counter: pushes to an executor, first attempts and retries, by `endpoint`.
pub const ATTEMPTS: &str = "canvass_delivery_attempts_total";
/// Counter: of them, retries.
pub const RETRIES: &str = "canvass_delivery_retries_total";
/// Gauge: 1 while an executor answers, 0 while it cannot be reached, by `endpoint`.
pub const REACHABLE: &str = "canvass_delivery_endpoint_reachable";

/// The waits between attempts: exponential bounds from the first backoff to the longest,
/// each wait drawn at random between zero and its bound (full jitter, so that actions
/// failing together do not come back together), without end.
pub(super) fn backoff(retry: RetryConfig) -> impl Iterator<Item = Duration> {
    let first = retry.first_backoff_ms.max(1);
    let most = retry.max_backoff_ms.max(first);
    (0u32..).map(move |n| {
        let bound = first.saturating_mul(1u64 << n.min(40)).min(most);
        Duration::from_millis(fastrand::u64(0..=bound))
    })
}

/// One executor: its client, its retry settings and whether it is reachable.
#[derive(Debug, Clone)]
pub(super) struct Executor {
    endpoint: String,
    client: ActionExecutorClient<tonic::transport::Channel>,
    retry: RetryConfig,
    /// Since when it has been unreachable, and the attempts that failed since.
    away: Arc<Mutex<Option<(Instant, u64)>>>,
}

impl Executor {
    pub(super) fn new(
        endpoint: String,
        channel: tonic::transport::Channel,
        retry: RetryConfig,
    ) -> Self {
        Self {
            endpoint,
            client: ActionExecutorClient::new(channel),
            retry,
            away: Arc::new(Mutex::new(None)),
        }
    }

    /// Notes that it could not be reached; says so once.
    fn unreachable(&self, status: &tonic::Status) {
        let mut away = self.away.lock().unwrap_or_else(PoisonError::into_inner);
        match away.as_mut() {
            Some((_, failed)) => *failed += 1,
            None => {
                *away = Some((Instant::now(), 1));
                metrics::gauge!(REACHABLE, "endpoint" => self.endpoint.clone()).set(0.0);
                tracing::warn!(
                    endpoint = %self.endpoint,
                    code = ?status.code(),
                    "delivery: the executor at {} cannot be reached ({}); its actions wait in the outbox and are retried",
                    self.endpoint,
                    status.message()
                );
            }
        }
    }

    /// Notes that it answered; says so once if it had been away.
    fn reached(&self) {
        let mut away = self.away.lock().unwrap_or_else(PoisonError::into_inner);
        metrics::gauge!(REACHABLE, "endpoint" => self.endpoint.clone()).set(1.0);
        if let Some((since, failed)) = away.take() {
            tracing::info!(
                endpoint = %self.endpoint,
                away_ms = u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX),
                failed_attempts = failed,
                "delivery: the executor at {} is back",
                self.endpoint
            );
        }
    }
}

/// An executor's answer, checked: one it gave that makes no sense is an error.
fn checked(answer: v1::ExecuteResponse) -> Result<v1::ExecuteResponse, String> {
    match v1::ExecutionOutcome::try_from(answer.outcome) {
        Ok(v1::ExecutionOutcome::Unspecified) => {
            Err("the executor answered no outcome (EXECUTION_OUTCOME_UNSPECIFIED)".into())
        }
        Ok(_) => Ok(answer),
        Err(_) => Err(format!(
            "the executor answered an unknown outcome {}",
            answer.outcome
        )),
    }
}

/// What came of an action's attempts.
enum Ended {
    Answered(v1::ExecuteResponse),
    GaveUp(String),
}

/// Sends one action until it is answered or given up on.
async fn execute(inner: &Inner, executor: &Executor, action: &v1::Action) -> Ended {
    let retry = executor.retry;
    let mut waits = backoff(retry);
    let started = Instant::now();
    let (mut attempt, mut refused) = (0u32, 0u32);
    let mut client = executor.client.clone();
    loop {
        attempt += 1;
        inner.stats.attempts.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(ATTEMPTS, "endpoint" => executor.endpoint.clone()).increment(1);
        if attempt > 1 {
            inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!(RETRIES, "endpoint" => executor.endpoint.clone()).increment(1);
        }
        let request = v1::ExecuteRequest {
            action: Some(action.clone()),
            attempt,
        };
        let error = match client.execute(request).await {
            Ok(r) => {
                executor.reached();
                match checked(r.into_inner()) {
                    Ok(answer) => return Ended::Answered(answer),
                    Err(nonsense) => {
                        refused += 1;
                        nonsense
                    }
                }
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                executor.unreachable(&status);
                format!("unavailable: {}", status.message())
            }
            Err(status) => {
                executor.reached();
                refused += 1;
                format!("{:?}: {}", status.code(), status.message())
            }
        };
        if retry.max_attempts > 0 && refused >= retry.max_attempts {
            return Ended::GaveUp(format!(
                "the executor at {} refused the action {refused} times in {attempt} attempts; the last: {error}",
                executor.endpoint
            ));
        }
        if let Some(limit) = retry.give_up_after()
            && started.elapsed() >= limit
        {
            return Ended::GaveUp(format!(
                "not delivered to the executor at {} within {} s ({attempt} attempts); the last: {error}",
                executor.endpoint,
                limit.as_secs()
            ));
        }
        let wait = waits
            .next()
            .unwrap_or(Duration::from_millis(retry.max_backoff_ms));
        let key = format!(
            "executor {} {}",
            executor.endpoint,
            action.kind().as_str_name()
        );
        if !error.starts_with("unavailable")
            && let Some(held_back) = throttle::WARNINGS.admit(&key, Instant::now())
        {
            tracing::warn!(
                held_back,
                endpoint = %executor.endpoint,
                key = %action.idempotency_key,
                contact = %action.contact_id,
                campaign = %action.campaign_id,
                attempt,
                retry_in_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                "delivery: the executor refused the action ({error}); retrying"
            );
        }
        tokio::time::sleep(wait).await;
    }
}

/// Pushes each action to one executor, at most `permits` at a time; its answer (or the
/// reason it was given up on) is logged as the action's result.
pub(super) async fn push_loop(
    inner: Arc<Inner>,
    executor: Executor,
    permits: Arc<Semaphore>,
    mut queue: mpsc::Receiver<(Position, v1::Action)>,
) {
    while let Some((position, action)) = queue.recv().await {
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            return;
        };
        let executor = executor.clone();
        let inner = Arc::clone(&inner);
        // What is logged about the action says whose it is and where it came from.
        let span = tracing::debug_span!(
            "deliver",
            partition = position.0,
            campaign = %action.campaign_id,
            contact = %action.contact_id,
            key = %action.idempotency_key
        );
        let delivery = async move {
            let result = match execute(&inner, &executor, &action).await {
                Ended::Answered(answer) => {
                    let outcome = v1::ExecutionOutcome::try_from(answer.outcome)
                        .unwrap_or(v1::ExecutionOutcome::Unspecified);
                    ack(
                        position,
                        &action,
                        outcome,
                        answer.detail,
                        answer.opportunity_id,
                    )
                }
                Ended::GaveUp(reason) => {
                    tracing::warn!(
                        key = %action.idempotency_key,
                        contact = %action.contact_id,
                        campaign = %action.campaign_id,
                        "delivery: gave up on the action, now a dead letter: {reason}"
                    );
                    given_up(position, &action, reason)
                }
            };
            let (kind, outcome, gave_up) = (result.kind, result.outcome, result.gave_up);
            match log_results(&inner.inbox, vec![result], None).await {
                Ok(_) => inner.stats.logged(kind, outcome, gave_up),
                Err(e) => tracing::warn!(
                    key = %action.idempotency_key,
                    "delivery: the action's result was not logged: {}",
                    e.message()
                ),
            }
            drop(permit);
        };
        tokio::spawn(delivery.instrument(span));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_are_drawn_below_bounds_that_double_up_to_the_longest() {
        let retry = RetryConfig {
            first_backoff_ms: 100,
            max_backoff_ms: 1_000,
            ..RetryConfig::default()
        };
        let bounds = [100, 200, 400, 800, 1_000, 1_000, 1_000];
        // Many draws: each below its bound, and the spread reaches well below it (jitter).
        let mut lowest = [u64::MAX; 7];
        for _ in 0..200 {
            for ((wait, bound), low) in backoff(retry).zip(bounds).zip(lowest.iter_mut()) {
                let ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX);
                assert!(ms <= bound, "{ms} ms over its bound {bound}");
                *low = (*low).min(ms);
            }
        }
        for (low, bound) in lowest.iter().zip(bounds) {
            assert!(*low < bound / 4, "never far below {bound}: {low}");
        }
    }
}
