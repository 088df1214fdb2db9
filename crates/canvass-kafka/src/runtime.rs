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
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use canvass_engine::{
    Partitions,
    durable::{DispatchError, Error as EngineError, Incoming, Sourced},
    partitions::{Route, route},
    runtime::{Intake, Submissions, wall_clock},
};
use rdkafka::{
    ClientConfig, ClientContext, Message, Offset, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance},
    error::KafkaError,
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer as _},
};

use crate::{
    codec::{self, CONTENT_TYPE, OutRecord, RecordView, Role},
    config::KafkaConfig,
};

/// How the loop runs and stops.
#[derive(Debug, Clone, Default)]
pub struct KafkaRunOptions {
    /// Stop (cleanly) once every assigned partition has been applied up to the end it had
    /// when it was assigned, and nothing is left to publish: consume what the topics hold
    /// now, then stop (batch runs, tests). Otherwise run until `stop` is set.
    pub exit_when_caught_up: bool,
    /// Set to stop cleanly (e.g. by a signal handler).
    pub stop: Option<Arc<AtomicBool>>,
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
}

impl RunError {
    /// Whether the store's disk failed.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::Engine(e) if e.is_storage())
    }
}

/// Runs the engine on Kafka until `options` say stop. Inputs submitted through `intake`'s
/// inboxes (the gRPC API) join the batches of records and are answered once committed.
pub fn run(
    engine: Partitions,
    config: &KafkaConfig,
    options: &KafkaRunOptions,
    intake: Option<&Intake>,
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
        }),
    };
    let consumer: BaseConsumer<EngineContext> =
        consumer_config(config).create_with_context(context)?;
    consumer.subscribe(&[&config.topics.touchpoints, &config.topics.control])?;
    let mut publisher = Publisher {
        producer: Publisher::connect(config)?,
        config: config.clone(),
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
        let consumed = gather(&consumer, config);
        if let Some(intake) = intake {
            let mut state = consumer.context().lock();
            let State {
                pending,
                submissions,
                ..
            } = &mut *state;
            intake.take_into(pending, submissions);
        }
        let (rebalances_now, owned) = {
            let state = consumer.context().lock();
            (state.report.rebalances, state.next.clone())
        };
        if rebalances_now != rebalances {
            rebalances = rebalances_now;
            ends_known = false;
            last_input = Instant::now();
        }
        if consumed > 0 {
            last_input = Instant::now();
        }
        if options.exit_when_caught_up && !ends_known {
            // Retried at the next turn if the broker does not answer.
            match end_offsets(&consumer, &owned) {
                Ok(found) => {
                    ends = found;
                    ends_known = true;
                }
                Err(e) => eprintln!("warning: kafka: cannot read end offsets yet: {e}"),
            }
        }
        let commits = {
            let mut state = consumer.context().lock();
            if let Some(e) = state.failure.take() {
                return Err(e.into());
            }
            state.commit_pending()?;
            std::mem::take(&mut state.to_commit)
        };
        progress.note(&commits, &consumer.context().lock().report);
        commit_to_kafka(&consumer, &commits);

        let published = if backoff.ready() {
            let mut state = consumer.context().lock();
            match publisher.drain(&mut state) {
                Ok(done) => {
                    backoff.reset();
                    done
                }
                Err(DispatchError::Engine(e)) => return Err(e.into()),
                Err(e @ DispatchError::Deliver(_)) => {
                    eprintln!("warning: {e}; retrying");
                    drop(state);
                    backoff.fail();
                    publisher.recover(backoff.failures)?;
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
            && !owned.is_empty()
            && owned
                .iter()
                .all(|(p, next)| ends.get(p).is_some_and(|end| next >= end));
        if caught_up {
            eprintln!("caught up: {}", positions(&owned));
        }
        if stop || caught_up {
            let report = {
                let mut state = consumer.context().lock();
                state.commit_pending()?;
                // Not needed for safety; the next start then has no log tail to apply again.
                state.engine.checkpoint()?;
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
        eprintln!("warning: kafka: cannot leave the group: {e}");
    } else {
        // Records polled now are not applied: the next start reads them again.
        while !consumer.closed() && Instant::now() < deadline {
            let _ = consumer.poll(Duration::from_millis(100));
        }
    }
    if consumer.closed() {
        drop(consumer);
    } else {
        eprintln!(
            "warning: kafka: the consumer did not leave its group within {} ms (is the broker away?); stopping without it",
            limit.as_millis()
        );
        // Its drop would wait for the broker again.
        std::mem::forget(consumer);
    }
}

/// The end (high watermark) of each partition.
fn end_offsets(
    consumer: &BaseConsumer<EngineContext>,
    partitions: &HashMap<(String, i32), i64>,
) -> Result<HashMap<(String, i32), i64>, KafkaError> {
    partitions
        .keys()
        .map(|(topic, partition)| {
            let (_, high) = consumer.fetch_watermarks(topic, *partition, Duration::from_secs(5))?;
            Ok(((topic.clone(), *partition), high))
        })
        .collect()
}

/// Polls records into the pending batch: waits up to 100 ms for a first one, then up to
/// `max_wait` for more, up to `max_batch`. Returns how many arrived.
fn gather(consumer: &BaseConsumer<EngineContext>, config: &KafkaConfig) -> usize {
    let mut count = 0;
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
                eprintln!("warning: kafka: {e}");
                break;
            }
            Some(Ok(message)) => {
                count += 1;
                deadline.get_or_insert_with(|| {
                    Instant::now() + Duration::from_millis(config.max_wait_ms)
                });
                let content_type = message.headers().and_then(|headers| {
                    headers
                        .iter()
                        .find(|h| h.key.eq_ignore_ascii_case(CONTENT_TYPE))
                        .and_then(|h| h.value)
                        .map(String::from_utf8_lossy)
                });
                let view = RecordView {
                    topic: message.topic(),
                    partition: message.partition(),
                    offset: message.offset(),
                    key: message.key(),
                    payload: message.payload(),
                    content_type: content_type.as_deref(),
                    timestamp: message.timestamp().to_millis(),
                };
                consumer.context().lock().accept(&view, config);
            }
        }
    }
    count
}

/// Commits next offsets to Kafka: for lag monitoring only, never read back.
fn commit_to_kafka(consumer: &BaseConsumer<EngineContext>, offsets: &HashMap<(String, i32), i64>) {
    if offsets.is_empty() {
        return;
    }
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), next) in offsets {
        if let Err(e) = tpl.add_partition_offset(topic, *partition, Offset::Offset(*next)) {
            eprintln!("warning: kafka: {e}");
        }
    }
    if let Err(e) = consumer.commit(&tpl, CommitMode::Async) {
        eprintln!("warning: committing offsets to kafka (lag monitoring only): {e}");
    }
}

fn base_config(
    config: &KafkaConfig,
    own: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in config.librdkafka.iter().chain(own) {
        c.set(k, v);
    }
    c
}

fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config, &config.consumer);
    c.set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if !c.config_map().contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    c
}

fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config, &config.producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.publish_timeout_ms.to_string());
    if !c.config_map().contains_key("linger.ms") {
        c.set("linger.ms", "2");
    }
    c
}

/// Reports librdkafka's warnings and errors on standard error.
#[derive(Debug)]
struct Logging(&'static str);

impl ConsumerContext for Logging {}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(self.0, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("warning: kafka {}: {error}: {reason}", self.0);
    }
}

fn log_line(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    if (level as i32) <= (RDKafkaLogLevel::Warning as i32) {
        eprintln!("warning: kafka {client} ({fac}): {message}");
    }
}

/// The consumer's context: it owns the engine, so that rebalance callbacks can finish the
/// pending batch before a revoke returns.
struct EngineContext {
    state: Mutex<State>,
}

impl EngineContext {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct State {
    engine: Partitions,
    /// Records read (and inputs submitted) not yet committed.
    pending: Vec<Sourced>,
    /// The partition each touchpoint record among `pending` goes to, by its index there:
    /// its own Kafka partition (the others are routed by what they hold).
    routes: HashMap<usize, Route>,
    /// Submissions among `pending`, answered once committed.
    submissions: Submissions,
    /// Next offset to apply, per assigned partition.
    next: HashMap<(String, i32), i64>,
    /// Next offsets committed to the store and not yet to Kafka.
    to_commit: HashMap<(String, i32), i64>,
    /// An error met inside a callback, reported by the loop.
    failure: Option<EngineError>,
    report: KafkaReport,
}

impl State {
    fn accept(&mut self, record: &RecordView<'_>, config: &KafkaConfig) {
        self.report.records += 1;
        let partition = (record.topic.to_string(), record.partition);
        let next = self.next.entry(partition).or_insert(0);
        if record.offset < *next {
            // Already applied: the broker delivered from an older position.
            self.report.skipped += 1;
            return;
        }
        *next = record.offset + 1;
        let role = if record.topic == config.topics.touchpoints {
            Role::Touchpoints
        } else {
            Role::Control
        };
        let mut input = codec::decode(record, role, config.format, config.max_record_bytes);
        if role == Role::Touchpoints {
            let layout = self.engine.layout();
            let partition = u32::try_from(record.partition).unwrap_or(u32::MAX);
            let (owner, why) = if partition >= layout.partitions {
                (
                    0,
                    Some(format!(
                        "the record is on partition {partition} of `{}`, but the data directory has {} partitions (the topic was given more partitions after it was created): a contact's partition would change, so it is refused",
                        record.topic, layout.partitions
                    )),
                )
            } else {
                (
                    partition,
                    misplaced(&layout, &input.incoming, partition, record.topic),
                )
            };
            if let Some(reason) = why {
                input.incoming = Incoming::Malformed {
                    payload: record.payload.unwrap_or_default().to_vec(),
                    key: record.key.unwrap_or_default().to_vec(),
                    reason,
                };
            }
            self.routes.insert(self.pending.len(), Route::One(owner));
        }
        self.pending.push(input);
    }

    /// Commits the pending records (or fires due timers when there are none).
    fn commit_pending(&mut self) -> Result<(), EngineError> {
        let batch = std::mem::take(&mut self.pending);
        for s in &batch {
            if let Some(p) = &s.position
                && let Some((topic, partition)) = codec::parse_source_name(&p.source)
            {
                let next = i64::try_from(p.next_offset).unwrap_or(i64::MAX);
                self.to_commit.insert((topic.to_string(), partition), next);
            }
        }
        let now = wall_clock();
        let mut routes = std::mem::take(&mut self.routes);
        let layout = self.engine.layout();
        let result = if batch.is_empty() {
            self.engine.tick(now)
        } else {
            let routed = batch
                .into_iter()
                .enumerate()
                .map(|(i, s)| {
                    let to = routes
                        .remove(&i)
                        .unwrap_or_else(|| route(&layout, &s.incoming));
                    (to, s)
                })
                .collect();
            self.engine.ingest_routed(routed, now)
        };
        let r = std::mem::take(&mut self.submissions).settle(result)?;
        self.report.entries += r.entries;
        self.report.duplicates += r.duplicates;
        self.report.dead_letters += r.dead_letters;
        Ok(())
    }

    fn on_assign(&mut self, tpl: &TopicPartitionList) -> Result<(), EngineError> {
        self.report.rebalances += 1;
        for mut elem in tpl.elements() {
            let name = codec::source_name(elem.topic(), elem.partition());
            let stored = self.engine.offset(&name)?;
            let start = stored.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
            let offset = match stored {
                Some(_) => Offset::Offset(start),
                None => Offset::Beginning,
            };
            if let Err(e) = elem.set_offset(offset) {
                eprintln!("warning: kafka: cannot start {name} at {offset:?}: {e}");
            }
            // Operators (and tests) see where each partition resumes.
            match stored {
                Some(n) => eprintln!("assigned {name}: resuming at offset {n}"),
                None => eprintln!("assigned {name}: starting at its beginning"),
            }
            self.next
                .insert((elem.topic().to_string(), elem.partition()), start);
        }
        Ok(())
    }

    fn on_revoke(&mut self, tpl: &TopicPartitionList) -> Result<(), EngineError> {
        self.report.rebalances += 1;
        self.commit_pending()?;
        for elem in tpl.elements() {
            let name = codec::source_name(elem.topic(), elem.partition());
            eprintln!("revoked {name}: records read before are committed");
            self.next
                .remove(&(elem.topic().to_string(), elem.partition()));
        }
        Ok(())
    }
}

impl ClientContext for EngineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line("consumer", level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("warning: kafka consumer: {error}: {reason}");
    }
}

impl ConsumerContext for EngineContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut state = self.lock();
        let result = match rebalance {
            Rebalance::Assign(tpl) => state.on_assign(tpl),
            Rebalance::Revoke(tpl) => {
                let result = state.on_revoke(tpl);
                let commits = std::mem::take(&mut state.to_commit);
                drop(state);
                commit_to_kafka(consumer, &commits);
                state = self.lock();
                result
            }
            Rebalance::Error(e) => {
                eprintln!("warning: kafka rebalance: {e}");
                Ok(())
            }
        };
        if let Err(e) = result {
            state.failure.get_or_insert(e);
        }
    }
}

/// Publishes the outbox and the queued publications.
struct Publisher {
    producer: FutureProducer<Logging>,
    config: KafkaConfig,
}

impl Publisher {
    fn connect(config: &KafkaConfig) -> Result<FutureProducer<Logging>, KafkaError> {
        producer_config(config).create_with_context(Logging("producer"))
    }

    /// Replaces the producer if it failed for good, or failed `failures` times in a row (an
    /// idempotent producer keeps failing against a broker that lost its producer state, e.g.
    /// after a restart): records not acknowledged stay queued and go out through the new one,
    /// under a new producer id.
    fn recover(&mut self, failures: u32) -> Result<(), KafkaError> {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_some() || failures >= 3 {
            eprintln!(
                "warning: kafka producer failed {failures} times in a row{}; starting a new one",
                fatal.map(|f| format!(" ({f:?})")).unwrap_or_default()
            );
            self.producer = Self::connect(&self.config)?;
        }
        Ok(())
    }

    /// Publishes everything queued; returns whether nothing is left.
    fn drain(&self, state: &mut State) -> Result<bool, DispatchError> {
        loop {
            let format = self.config.format;
            let topic = self.config.topics.actions.clone();
            let sent = state.engine.dispatch(1024, &mut |actions| {
                let records = actions
                    .iter()
                    .map(|a| codec::action_record(&topic, a, format))
                    .collect::<std::io::Result<Vec<OutRecord>>>()?;
                self.send_all(&records)
            })?;
            state.report.actions_published += sent as u64;
            let published = state.engine.publish(1024, &mut |queued| {
                let mut records = Vec::with_capacity(queued.len());
                for (_, p) in queued {
                    records.extend(codec::publication_record(
                        p,
                        &self.config.topics.audit,
                        &self.config.topics.dead_letters,
                        format,
                    )?);
                }
                self.send_all(&records)
            })?;
            state.report.publications += published as u64;
            if sent == 0 && published == 0 {
                return Ok(true);
            }
        }
    }

    /// Sends records and waits until the broker acknowledged every one.
    fn send_all(&self, records: &[OutRecord]) -> std::io::Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                });
            }
            let mut record = FutureRecord::to(&r.topic)
                .payload(&r.payload)
                .headers(headers);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(std::io::Error::other(e)),
            }
        }
        for result in futures::executor::block_on(futures::future::join_all(deliveries)) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::Error::other("the producer dropped a record")),
            }
        }
        Ok(())
    }
}

/// A progress line on standard error: at the first records applied, then at most once a
/// second while records flow.
#[derive(Debug, Default)]
struct Progress {
    last: Option<Instant>,
}

impl Progress {
    fn note(&mut self, committed: &HashMap<(String, i32), i64>, report: &KafkaReport) {
        if committed.is_empty()
            || self
                .last
                .is_some_and(|t| t.elapsed() < Duration::from_secs(1))
        {
            return;
        }
        self.last = Some(Instant::now());
        eprintln!(
            "progress: {} records, {} log entries, {} actions published; at {}",
            report.records,
            report.entries,
            report.actions_published,
            positions(committed)
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

/// Why a touchpoint on Kafka partition `partition` is not that partition's to apply: the
/// contact it concerns maps to another under the configured partitioner (its producer used
/// another one, or another key), and one contact must never have state in two partitions.
fn misplaced(
    layout: &canvass_store::Layout,
    incoming: &Incoming,
    partition: u32,
    topic: &str,
) -> Option<String> {
    let Route::One(owner) = route(layout, incoming) else {
        return None;
    };
    let Incoming::Record(_) = incoming else {
        return None;
    };
    (owner != partition).then(|| {
        format!(
            "the record is on partition {partition} of `{topic}`, but its contact maps to partition {owner} of {} under the {} partitioner (`partitioner` in the Kafka settings): produce it keyed by contact id with that partitioner, so that one contact never has state in two partitions",
            layout.partitions, layout.partitioner
        )
    })
}

/// The partition count of the touchpoints topic, which a data directory used on Kafka has.
///
/// # Errors
/// The broker cannot be reached within `timeout`, or the topic does not exist.
pub fn touchpoint_partitions(config: &KafkaConfig, timeout: Duration) -> Result<u32, RunError> {
    topic_partitions(config, &config.topics.touchpoints, timeout)
}

/// The partition count of `topic`.
///
/// # Errors
/// The broker cannot be reached within `timeout`, or the topic does not exist.
pub fn topic_partitions(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<u32, RunError> {
    let consumer: BaseConsumer<Logging> =
        consumer_config(config).create_with_context(Logging("consumer"))?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(RunError::Client(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        )));
    }
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}
