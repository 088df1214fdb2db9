//! The engine on Kafka: a consumer group on the touchpoints and control topics feeding group
//! commits, and a producer publishing actions, audit records and dead letters.
//!
//! Exactly-once effect: a record's effects and its partition's next offset are written in
//! one atomic store commit (invariant 3). On assignment a partition starts at the offset
//! stored beside the effects, never at Kafka's committed offset (which is written after, for
//! lag monitoring only); a record below the stored offset is skipped. On revocation the
//! records read but not yet committed are committed before the revoke returns, so the next
//! owner starts exactly after them.
//!
//! Everything that touches the engine runs on the thread that polls the consumer: the
//! rebalance callbacks run inside `poll`, when the loop holds no lock.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use canvass_engine::{
    Partitions,
    durable::{DispatchError, Error as EngineError},
    runtime::{Dispatcher, Intake, Submissions},
};
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Headers},
};

use crate::{
    codec::{CONTENT_TYPE, RecordView},
    config::KafkaConfig,
};

use crate::changelog::{Changelog, Tail};
use crate::clients::{Logging, consumer_config};
use crate::context::{EngineContext, State};
use crate::control::ControlReader;
use crate::publisher::{Publisher, TopicWriter};

/// How the loop runs and stops.
#[derive(Debug, Clone, Default)]
pub struct KafkaRunOptions {
    /// Stop (cleanly) once every assigned partition has been applied up to the end it had
    /// when it was assigned, and nothing is left to publish: consume what the topics hold
    /// now, then stop (batch runs, tests). Otherwise run until `stop` is set.
    pub exit_when_caught_up: bool,
    /// Set to stop cleanly (e.g. by a signal handler).
    pub stop: Option<Arc<AtomicBool>>,
    /// Called after each commit that logged something (to wake a delivery beside the loop).
    pub after_commit: Option<CommitHook>,
    /// The group as the API sees it: told of each partition this engine claims and of the
    /// outcome of each control record it applies.
    pub cluster: Option<crate::Cluster>,
}

/// A function called after commits.
#[derive(Clone)]
pub struct CommitHook(pub Arc<dyn Fn() + Send + Sync>);

impl std::fmt::Debug for CommitHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CommitHook")
    }
}

/// What the loop did, in total.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KafkaReport {
    /// Records consumed (including skipped ones).
    pub records: u64,
    /// Records below the stored offset of their partition: already applied, skipped.
    pub skipped: u64,
    /// Log entries appended.
    pub entries: u64,
    /// Duplicate events ignored.
    pub duplicates: u64,
    /// Records parked as dead letters (malformed, or commands refused).
    pub dead_letters: u64,
    /// Actions published to the actions topic.
    pub actions_published: u64,
    /// Audit records and dead letters published.
    pub publications: u64,
    /// Rebalances seen: partition assignments and revocations.
    pub rebalances: u64,
    /// From the first record consumed to the last commit or publication that followed.
    pub busy: Option<Duration>,
    /// Partitions restored from the changelog on assignment.
    pub restores: u64,
    /// Restores that began with a snapshot.
    pub snapshots_loaded: u64,
    /// Changelog frames the restores applied.
    pub frames_restored: u64,
    /// The time the restores took, in all.
    pub restore_time: Duration,
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// A Kafka client could not be created or subscribed.
    #[error("kafka: {0}")]
    Client(#[from] KafkaError),
    /// The engine (its store) failed: no more input is accepted.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The changelog topic cannot serve the data directory.
    #[error("changelog: {0}")]
    Changelog(String),
}

impl RunError {
    /// Whether the store's disk failed.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::Engine(e) if e.is_storage())
    }
}

/// Runs the engine on Kafka until `options` say stop. Inputs submitted through `intake`'s
/// inboxes (the gRPC API, the delivery's results) join the batches of records and are
/// answered once committed.
///
/// `actions`: where the loop writes the outbox after each commit (e.g. an
/// [`ActionTopic`](crate::ActionTopic)); `None` when a delivery beside the loop reads it
/// (executors, pullers), whose results come through `intake`: the loop is then caught up
/// only once every partition's outbox is empty.
pub fn run(
    engine: Partitions,
    config: &KafkaConfig,
    options: &KafkaRunOptions,
    intake: Option<&Intake>,
    mut actions: Option<Box<dyn Dispatcher + Send>>,
) -> Result<KafkaReport, RunError> {
    let context = EngineContext {
        state: Mutex::new(State {
            engine,
            pending: Vec::new(),
            routes: HashMap::new(),
            submissions: Submissions::default(),
            next: HashMap::new(),
            to_commit: HashMap::new(),
            failure: None,
            report: KafkaReport::default(),
            catching_up: std::collections::BTreeMap::new(),
            held: Vec::new(),
            control: config.topics.control.clone(),
            changelog: None,
            unserved: std::collections::BTreeSet::new(),
            tail: None,
            conflict: None,
            cluster: options.cluster.clone(),
            claimed: Vec::new(),
        }),
    };
    let layout = context.lock().engine.layout();
    if let Some(changelog) = Changelog::connect(config, layout)? {
        let topic = changelog.topic().to_string();
        let partitions = crate::clients::topic_partitions(config, &topic, Duration::from_secs(30))?;
        if partitions < layout.partitions {
            return Err(RunError::Changelog(format!(
                "the changelog topic `{topic}` has {partitions} partitions, the data directory {}: one changelog partition per data partition",
                layout.partitions
            )));
        }
        let mut state = context.lock();
        for (p, store) in state.engine.stores().iter().enumerate() {
            changelog.ship_from(store, u32::try_from(p).unwrap_or(u32::MAX));
        }
        state.tail = Some(Tail::new(&changelog, layout.partitions).map_err(RunError::Changelog)?);
        state.changelog = Some(changelog);
    }
    // Until the group assigns it partitions, the engine owns none.
    context.lock().engine.set_owned([]);
    let consumer: BaseConsumer<EngineContext> =
        consumer_config(config).create_with_context(context)?;
    consumer.subscribe(&[&config.topics.touchpoints])?;
    let mut control = ControlReader::new(config)?;
    let mut publisher = Publisher {
        writer: TopicWriter::connect(config)?,
    };

    // End offsets of the assigned partitions when they were assigned (with
    // `exit_when_caught_up`), refreshed at each assignment.
    let mut ends: HashMap<(String, i32), i64> = HashMap::new();
    // The rebalances seen so far, and whether `ends` holds the current assignment's ends.
    let mut rebalances = 0;
    let mut ends_known = false;
    let mut backoff = Backoff::default();
    let mut progress = Progress::default();
    let mut first_record: Option<Instant> = None;
    // The last record or assignment: the end is trusted only after a quiet second, because a
    // broker may report as its end the first offset of its last batch (Tansu 0.6 does).
    let mut last_input = Instant::now();
    let mut last_activity = (0, 0, 0);
    loop {
        let consumed = gather(&control.consumer, &consumer, config);
        if let Some(intake) = intake {
            let mut state = consumer.context().lock();
            let State {
                pending,
                submissions,
                ..
            } = &mut *state;
            intake.take_into(pending, submissions);
        }
        let (rebalances_now, owned, catching_up, assigned) = {
            let state = consumer.context().lock();
            (
                state.report.rebalances,
                state.next.clone(),
                // A partition not served is not caught up either: its records wait.
                !state.catching_up.is_empty() || !state.unserved.is_empty(),
                !state.engine.owned().is_empty(),
            )
        };
        if rebalances_now != rebalances {
            rebalances = rebalances_now;
            ends_known = false;
            last_input = Instant::now();
        }
        if consumed > 0 {
            last_input = Instant::now();
        }
        // The control reader's partition joins `owned` only once it is placed: ends read
        // before then lack it.
        if ends_known && owned.keys().any(|k| !ends.contains_key(k)) {
            ends_known = false;
        }
        if options.exit_when_caught_up && !ends_known {
            // Retried at the next turn if the broker does not answer.
            match end_offsets(&consumer, &owned) {
                Ok(found) => {
                    ends = found;
                    ends_known = true;
                }
                Err(e) => tracing::warn!(error = %e, "kafka: cannot read the end offsets yet"),
            }
        }
        let commits = {
            let mut state = consumer.context().lock();
            if let Some(e) = state.failure.take() {
                return Err(e.into());
            }
            if let Some(why) = state.conflict.take() {
                return Err(RunError::Changelog(why));
            }
            let lost = state.tail.as_mut().map(Tail::poll).unwrap_or_default();
            for (p, offset, claimant) in lost {
                state.fence(p, offset, &claimant);
            }
            let logged = state.report.entries;
            state.commit_pending()?;
            if state.report.entries != logged
                && let Some(hook) = &options.after_commit
            {
                (hook.0)();
            }
            if let Some(changelog) = state.changelog.clone() {
                for p in state.engine.owned() {
                    changelog.maybe_snapshot(state.engine.stores().partition(p), p);
                }
            }
            std::mem::take(&mut state.to_commit)
        };
        // After the commit, so that the control records read so far are applied: a partition
        // catching up is judged on what it holds.
        crate::control::catch_up(&mut control, &consumer, config);
        progress.note(&commits, &consumer.context().lock().report);
        commit_to_kafka(&consumer, &commits);

        let published = if backoff.ready() {
            let mut state = consumer.context().lock();
            match publisher.drain(&mut state, actions.as_mut()) {
                // With the outbox delivered beside the loop, it is done once empty.
                Ok(done) => {
                    backoff.reset();
                    done && (actions.is_some() || state.engine.outbox_is_empty()?)
                }
                Err(DispatchError::Engine(e)) => return Err(e.into()),
                Err(e @ DispatchError::Deliver(_)) => {
                    tracing::warn!(error = %e, "kafka: publishing failed; retrying");
                    drop(state);
                    backoff.fail();
                    false
                }
            }
        } else {
            false
        };

        let stop = options
            .stop
            .as_ref()
            .is_some_and(|s| s.load(Ordering::SeqCst));
        {
            let mut state = consumer.context().lock();
            let r = &mut state.report;
            if r.records > 0 {
                let first = *first_record.get_or_insert_with(Instant::now);
                let activity = (r.entries, r.actions_published, r.publications);
                if activity != last_activity {
                    last_activity = activity;
                    r.busy = Some(first.elapsed());
                }
            }
        }
        let caught_up = options.exit_when_caught_up
            && ends_known
            && published
            && consumed == 0
            && last_input.elapsed() >= Duration::from_secs(1)
            && !catching_up
            // The control topic is read whatever the group assigned: done only with
            // touchpoint partitions of its own.
            && assigned
            && owned
                .iter()
                .all(|(p, next)| ends.get(p).is_some_and(|end| next >= end));
        if caught_up {
            tracing::info!(positions = %positions(&owned), "caught up");
        }
        if stop || caught_up {
            let report = {
                let mut state = consumer.context().lock();
                state.commit_pending()?;
                // Not needed for safety; the next start then has no log tail to apply again,
                // and reads back less of its changelog.
                state.engine.checkpoint()?;
                // The snapshots being written wait for the read-back, which goes on here.
                let deadline =
                    Instant::now() + Duration::from_millis(config.shutdown_timeout_ms / 4);
                loop {
                    let lost = state.tail.as_mut().map(Tail::poll).unwrap_or_default();
                    for (p, offset, claimant) in lost {
                        state.fence(p, offset, &claimant);
                    }
                    let writing = state
                        .changelog
                        .as_ref()
                        .is_some_and(|c| c.is_snapshotting());
                    if !writing || Instant::now() >= deadline {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                let State { tail, engine, .. } = &mut *state;
                if let Some(tail) = tail.as_ref() {
                    for p in engine.owned() {
                        if tail.lost(p) {
                            continue;
                        }
                        let verified = tail.verified(p);
                        engine
                            .stores()
                            .partition(p)
                            .hold_verified(verified)
                            .map_err(EngineError::from)?;
                    }
                }
                state.report.clone()
            };
            // Half the stop's time: the rest is left for the producer's and sled's close.
            leave_group(
                consumer,
                Duration::from_millis(config.shutdown_timeout_ms / 2),
            );
            return Ok(report);
        }
    }
}

/// Leaves the consumer group, giving up after `limit`: rdkafka's own close on drop waits
/// without bound for a coordinator that may be away. Everything applied is durable and the
/// offsets live in sled, so a consumer left unclosed only keeps its partitions until the
/// group's session timeout.
fn leave_group(consumer: BaseConsumer<EngineContext>, limit: Duration) {
    let deadline = Instant::now() + limit;
    if let Err(e) = consumer.close_queue() {
        tracing::warn!(error = %e, "kafka: cannot leave the group");
    } else {
        // Records polled now are not applied: the next start reads them again.
        while !consumer.closed() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(100));
        }
    }
    if consumer.closed() {
        drop(consumer);
    } else {
        tracing::warn!(
            within_ms = limit.as_millis(),
            "kafka: the consumer did not leave its group in time (is the broker away?); stopping without it"
        );
        // Its drop would wait for the broker again.
        std::mem::forget(consumer);
    }
}

/// The end (high watermark) of each partition.
/// Longest the loop waits for the broker's answer to a question it asks between polls (end
/// offsets): a question unanswered is asked again at the next turn, and the poll loop never
/// stalls long enough to cost the engine its membership (`max.poll.interval.ms`).
pub(crate) const BROKER_QUERY_TIMEOUT: Duration = Duration::from_secs(2);

fn end_offsets(
    consumer: &BaseConsumer<EngineContext>,
    partitions: &HashMap<(String, i32), i64>,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    partitions
        .keys()
        .map(|(topic, partition)| {
            let (_, high) = consumer.fetch_watermarks(topic, *partition, BROKER_QUERY_TIMEOUT)?;
            Ok(((topic.clone(), *partition), high))
        })
        .collect()
}

/// Polls records into the pending batch: the control topic's waiting records first, then
/// the touchpoints, waiting up to 100 ms for a first one, then up to `max_wait` for more, up
/// to `max_batch`. Returns how many arrived.
fn gather(
    control: &BaseConsumer<Logging>,
    consumer: &BaseConsumer<EngineContext>,
    config: &KafkaConfig,
) -> usize {
    let mut count = 0;
    while count < config.max_batch {
        match control.poll(Duration::ZERO) {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka: polling the control topic failed");
                break;
            }
            Some(Ok(message)) => {
                count += 1;
                take(&message, consumer, config);
            }
        }
    }
    let mut deadline: Option<Instant> = None;
    while count < config.max_batch {
        let wait = match deadline {
            None => Duration::from_millis(100),
            Some(d) => match d.checked_duration_since(Instant::now()) {
                Some(left) => left,
                None => break,
            },
        };
        match consumer.poll(wait) {
            None => break,
            Some(Err(e)) => {
                tracing::warn!(error = %e, "kafka: polling failed");
                break;
            }
            Some(Ok(message)) => {
                count += 1;
                deadline.get_or_insert_with(|| {
                    Instant::now() + Duration::from_millis(config.max_wait_ms)
                });
                take(&message, consumer, config);
            }
        }
    }
    count
}

/// Hands one record to the engine's state.
fn take(
    message: &BorrowedMessage<'_>,
    consumer: &BaseConsumer<EngineContext>,
    config: &KafkaConfig,
) {
    let header = |name: &str| {
        message.headers().and_then(|headers| {
            headers
                .iter()
                .find(|h| h.key.eq_ignore_ascii_case(name))
                .and_then(|h| h.value)
                .map(String::from_utf8_lossy)
        })
    };
    // What is logged while the record is taken in says where it came from.
    let _span = tracing::debug_span!(
        "record",
        topic = message.topic(),
        partition = message.partition(),
        offset = message.offset()
    )
    .entered();
    let content_type = header(CONTENT_TYPE);
    let caller = header(crate::codec::CALLER);
    let view = RecordView {
        topic: message.topic(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload(),
        content_type: content_type.as_deref(),
        timestamp: message.timestamp().to_millis(),
        caller: caller.as_deref(),
    };
    consumer.context().lock().accept(&view, config);
}

/// Commits the touchpoint partitions' next offsets to the group: for lag monitoring only,
/// never read back. The control topic is not the group's: each partition holds its own
/// position there.
pub(crate) fn commit_to_kafka(
    consumer: &BaseConsumer<EngineContext>,
    offsets: &HashMap<(String, i32), i64>,
) {
    let control = consumer.context().lock().control.clone();
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets.iter().filter(|((t, _), _)| *t != control) {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            tracing::warn!(topic, partition, error = %e, "kafka: cannot note the offset");
        }
    }
    if tpl.count() == 0 {
        return;
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        tracing::warn!(error = %e, "kafka: committing offsets failed (they serve lag monitoring only)");
    }
}

/// A progress event in the log: at the first records applied, then at most once a second
/// while records flow, and once more a second after they stopped (with the last positions).
#[derive(Debug, Default)]
struct Progress {
    last: Option<Instant>,
    /// Positions committed since the last event.
    unsaid: HashMap<(String, i32), i64>,
}

impl Progress {
    fn note(&mut self, committed: &HashMap<(String, i32), i64>, report: &KafkaReport) {
        self.unsaid
            .extend(committed.iter().map(|(k, v)| (k.clone(), *v)));
        if self.unsaid.is_empty()
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        tracing::info!(
            records = report.records,
            entries = report.entries,
            actions_published = report.actions_published,
            positions = %positions(&std::mem::take(&mut self.unsaid)),
            "progress"
        );
    }
}

/// Next offsets as `TOPIC/PARTITION@OFFSET`, sorted, space-separated.
fn positions(next: &HashMap<(String, i32), i64>) -> String {
    let mut at: Vec<String> = next
        .iter()
        .map(|((topic, partition), offset)| format!("{topic}/{partition}@{offset}"))
        .collect();
    at.sort();
    at.join(" ")
}

/// Retry pacing for publishing after a failure: 100 ms doubling to 5 s.
#[derive(Debug, Default)]
struct Backoff {
    failures: u32,
    until: Option<Instant>,
}

impl Backoff {
    fn ready(&self) -> bool {
        self.until.is_none_or(|t| Instant::now() >= t)
    }

    fn fail(&mut self) {
        self.failures = self.failures.saturating_add(1);
        let millis = (100u64 << self.failures.min(6)).min(5_000);
        self.until = Some(Instant::now() + Duration::from_millis(millis));
    }

    fn reset(&mut self) {
        self.failures = 0;
        self.until = None;
    }
}
