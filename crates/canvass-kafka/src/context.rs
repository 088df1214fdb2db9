//! The consumer's context: it owns the engine, so that the rebalance callbacks can commit the
//! records read before a revoke returns, and it takes each record in (its partition checked,
//! its offset advanced).

use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    sync::{Mutex, MutexGuard, PoisonError},
};

use canvass_engine::{
    Partitions,
    durable::{Error as EngineError, Incoming, Sourced},
    partitions::{Route, route},
    runtime::{Submissions, wall_clock},
};
use rdkafka::{
    ClientContext, Offset, TopicPartitionList,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, ConsumerContext, Rebalance},
    error::KafkaError,
};

use crate::{
    changelog::{Changelog, PARTITIONS_FENCED, RestoreError, Tail},
    codec::{self, RecordView, Role},
    config::KafkaConfig,
};

use crate::clients::{self, log_line};
use crate::runtime::{KafkaReport, commit_to_kafka};

/// The consumer's context: it owns the engine, so that rebalance callbacks can finish the
/// pending batch before a revoke returns.
pub(crate) struct EngineContext {
    pub(crate) state: Mutex<State>,
}

impl EngineContext {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

pub(crate) struct State {
    pub(crate) engine: Partitions,
    /// Records read (and inputs submitted) not yet committed.
    pub(crate) pending: Vec<Sourced>,
    /// The partition each touchpoint record among `pending` goes to, by its index there:
    /// its own Kafka partition (the others are routed by what they hold).
    pub(crate) routes: HashMap<usize, Route>,
    /// Submissions among `pending`, answered once committed.
    pub(crate) submissions: Submissions,
    /// Next offset to apply, per assigned partition.
    pub(crate) next: HashMap<(String, i32), i64>,
    /// Next offsets committed to the store and not yet to Kafka.
    pub(crate) to_commit: HashMap<(String, i32), i64>,
    /// An error met inside a callback, reported by the loop.
    pub(crate) failure: Option<EngineError>,
    pub(crate) report: KafkaReport,
    /// Touchpoint partitions assigned but not yet caught up with the control topic (see
    /// [`crate::control`]), each with the control offset it must hold first (`None` until
    /// the loop read the control topic's end).
    pub(crate) catching_up: BTreeMap<u32, Option<i64>>,
    /// Records of partitions catching up, in order, applied once they caught up.
    pub(crate) held: Vec<(u32, Sourced)>,
    /// The control topic, whose offsets are never the group's.
    pub(crate) control: String,
    /// Where the partitions' commits are shipped, and restored from on assignment.
    pub(crate) changelog: Option<Changelog>,
    /// Touchpoint partitions assigned whose changelog could not be applied: not served
    /// here (their records are left for later, their lag grows) until assigned again.
    pub(crate) unserved: BTreeSet<u32>,
    /// Reads the served partitions' changelog back, to learn of another engine's claim.
    pub(crate) tail: Option<Tail>,
    /// Another engine of the group runs with another layout (why): this one stops.
    pub(crate) conflict: Option<String>,
    /// The group as the API sees it, if the API runs.
    pub(crate) cluster: Option<crate::Cluster>,
    /// Partitions claimed (with their epoch) and not yet announced as this engine's: once
    /// the engine serves them.
    pub(crate) claimed: Vec<(u32, u64)>,
}

impl State {
    pub(crate) fn accept(&mut self, record: &RecordView<'_>, config: &KafkaConfig) {
        self.report.records += 1;
        if record.topic != self.control
            && u32::try_from(record.partition).is_ok_and(|p| self.unserved.contains(&p))
        {
            // Not applied, never committed: read again once the partition is served.
            self.report.skipped += 1;
            return;
        }
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
                    // Parked in a partition this engine owns.
                    self.engine.owned().first().copied().unwrap_or(0),
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
            if self.catching_up.contains_key(&partition) {
                // Applied after the partition knows every command before its assignment.
                self.held.push((owner, input));
                return;
            }
            self.routes.insert(self.pending.len(), Route::One(owner));
        }
        self.pending.push(input);
    }

    /// Moves the held records of partition `p` (now caught up) to the pending batch.
    pub(crate) fn release(&mut self, p: u32) {
        let held = std::mem::take(&mut self.held);
        for (partition, input) in held {
            if partition == p {
                self.routes.insert(self.pending.len(), Route::One(p));
                self.pending.push(input);
            } else {
                self.held.push((partition, input));
            }
        }
    }

    /// Commits the pending records (or fires due timers when there are none).
    pub(crate) fn commit_pending(&mut self) -> Result<(), EngineError> {
        let batch = std::mem::take(&mut self.pending);
        // The control records among them, by index: callers of the API wait on their outcome.
        let control_source = codec::source_name(&self.control, 0);
        let commands: Vec<(usize, i64)> = batch
            .iter()
            .enumerate()
            .filter_map(|(i, s)| {
                let p = s.position.as_ref().filter(|p| p.source == control_source)?;
                Some((i, i64::try_from(p.offset).ok()?))
            })
            .collect();
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
        if let Ok(r) = &result {
            r.log_warnings();
        }
        let r = std::mem::take(&mut self.submissions).settle(result)?;
        if let Some(cluster) = &self.cluster {
            for (i, offset) in commands {
                if let Some(outcome) = r.outcomes.get(i) {
                    cluster.applied(offset, outcome.clone());
                }
            }
        }
        self.report.entries += r.entries;
        self.report.duplicates += r.duplicates;
        self.report.dead_letters += r.dead_letters;
        Ok(())
    }

    pub(crate) fn on_assign(&mut self, tpl: &TopicPartitionList) -> Result<(), EngineError> {
        self.report.rebalances += 1;
        // Commands read before the assignment go to the partitions owned before it: a new
        // partition takes the control topic in its order, from its own offset.
        self.commit_pending()?;
        let mut owned = self.engine.owned();
        for mut elem in tpl.elements() {
            let name = codec::source_name(elem.topic(), elem.partition());
            let partition = u32::try_from(elem.partition()).unwrap_or(u32::MAX);
            // A Kafka partition the layout lacks is refused record by record (see `accept`).
            let p = partition.min(self.engine.layout().partitions - 1);
            let in_layout = partition < self.engine.layout().partitions;
            if in_layout && !self.restore(partition)? {
                continue;
            }
            // The record's own partition holds where its topic partition resumes.
            let stored = self.engine.partition_offset(p, &name)?;
            if in_layout {
                owned.push(partition);
                self.catching_up.insert(partition, None);
            }
            let start = stored.map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
            let offset = match stored {
                Some(_) => Offset::Offset(start),
                None => Offset::Beginning,
            };
            if let Err(e) = elem.set_offset(offset) {
                tracing::warn!(source = %name, ?offset, error = %e, "kafka: cannot start the partition there");
            }
            // Operators see where each partition resumes.
            match stored {
                Some(n) => {
                    tracing::info!(source = %name, offset = n, "assigned: resuming at the offset")
                }
                None => tracing::info!(source = %name, "assigned: starting at its beginning"),
            }
            self.next
                .insert((elem.topic().to_string(), elem.partition()), start);
        }
        self.engine.set_owned(owned);
        note_owned(&self.engine);
        // Announced once served: a call the directory sends here finds them owned.
        for (p, epoch) in std::mem::take(&mut self.claimed) {
            if let Some(cluster) = &self.cluster {
                cluster.announce(p, epoch);
            }
        }
        Ok(())
    }

    /// Gives partition `p`, newly assigned, what its changelog holds beyond its copy here,
    /// and claims it, before it takes any input; whether it can be served (if not, it is
    /// marked unserved, with the reason in the log and a metric).
    fn restore(&mut self, p: u32) -> Result<bool, EngineError> {
        self.unserved.remove(&p);
        let Some(changelog) = self.changelog.clone() else {
            self.claimed.push((p, 0));
            return Ok(true);
        };
        let started = std::time::Instant::now();
        let store = self.engine.stores().partition(p).clone();
        let before = (store.shipped()?, store.last_seq()?);
        let mut outcome = changelog.restore(&store, p);
        // Whatever the outcome, what was applied must reach the partition's engine (a
        // restore that failed half-way left some frames in the store).
        let after = (
            store.shipped()?.map(|s| (s.frame, s.offset)),
            store.last_seq()?,
        );
        let changed = match &outcome {
            Ok(r) => r.frames > 0 || r.rebuilt || r.snapshot.is_some(),
            Err(_) => after != (before.0.map(|s| (s.frame, s.offset)), before.1),
        };
        if changed && let Err(e) = self.engine.reopen(p) {
            outcome = Err(RestoreError::Unserved(format!(
                "the partition does not open on the frames applied: {e}"
            )));
        }
        // A partition is served only if its changelog is read back behind the claim.
        let outcome = outcome.and_then(|restored| match self.tail.as_mut() {
            Some(tail) => tail
                .watch(p, restored.epoch - 1)
                .map(|()| restored)
                .map_err(RestoreError::Unserved),
            None => Ok(restored),
        });
        let served = match outcome {
            Ok(restored) => {
                self.report.restores += 1;
                self.report.snapshots_loaded += u64::from(restored.snapshot.is_some());
                self.report.frames_restored += restored.frames;
                self.report.restore_time += started.elapsed();
                if restored.frames > 0 {
                    metrics::counter!(FRAMES_RESTORED, "partition" => p.to_string())
                        .increment(restored.frames);
                }
                tracing::info!(
                    partition = p,
                    frames = restored.frames,
                    snapshot_frame = restored.snapshot,
                    rebuilt = restored.rebuilt,
                    epoch = restored.epoch,
                    ms = started.elapsed().as_millis() as u64,
                    changelog = changelog.topic(),
                    "restored from the changelog and claimed"
                );
                self.claimed.push((p, restored.epoch));
                true
            }
            Err(RestoreError::Conflict(why)) => {
                tracing::error!(partition = p, error = %why, "the group's engines disagree on the layout: this engine stops");
                self.conflict.get_or_insert(why);
                false
            }
            Err(RestoreError::Unserved(why)) => {
                tracing::error!(
                    partition = p,
                    error = %why,
                    changelog = changelog.topic(),
                    "the changelog cannot be applied: the partition is not served here until it is assigned again"
                );
                false
            }
        };
        if !served {
            self.unserved.insert(p);
        }
        metrics::gauge!(PARTITION_UNSERVED, "partition" => p.to_string()).set(if served {
            0.0
        } else {
            1.0
        });
        Ok(served)
    }

    /// Stops serving partition `p` at once: another engine claimed it at `offset` of its
    /// changelog (this one lost it without noticing: paused, or cut off from the broker).
    /// Nothing it does with `p` from here counts, and it does nothing: its records are
    /// skipped, its timers and outbox left, until the group assigns it here again (its copy
    /// is then rebuilt from the changelog).
    pub(crate) fn fence(&mut self, p: u32, offset: u64, claimant: &str) {
        tracing::error!(
            partition = p,
            claim_offset = offset,
            claimant,
            "another engine claimed the partition: it is no longer served here"
        );
        metrics::counter!(PARTITIONS_FENCED, "partition" => p.to_string()).increment(1);
        let mut owned = self.engine.owned();
        owned.retain(|&o| o != p);
        self.engine.set_owned(owned);
        note_owned(&self.engine);
        self.unserved.insert(p);
        metrics::gauge!(PARTITION_UNSERVED, "partition" => p.to_string()).set(1.0);
        self.catching_up.remove(&p);
        self.held.retain(|(q, _)| *q != p);
    }

    pub(crate) fn on_revoke(&mut self, tpl: &TopicPartitionList) -> Result<(), EngineError> {
        self.report.rebalances += 1;
        self.commit_pending()?;
        let mut owned = self.engine.owned();
        for elem in tpl.elements() {
            let name = codec::source_name(elem.topic(), elem.partition());
            tracing::info!(source = %name, "revoked: the records read before are committed");
            self.next
                .remove(&(elem.topic().to_string(), elem.partition()));
            let partition = u32::try_from(elem.partition()).unwrap_or(u32::MAX);
            owned.retain(|&p| p != partition);
            if let Some(tail) = self.tail.as_mut() {
                tail.unwatch(partition);
            }
            if self.unserved.remove(&partition) {
                metrics::gauge!(PARTITION_UNSERVED, "partition" => partition.to_string()).set(0.0);
            }
            // Never applied here: the next owner reads them again.
            self.catching_up.remove(&partition);
            self.held.retain(|(p, _)| *p != partition);
        }
        self.engine.set_owned(owned);
        note_owned(&self.engine);
        Ok(())
    }
}

impl ClientContext for EngineContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line("consumer", level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        clients::client_error("consumer", &error, reason);
    }

    fn stats(&self, statistics: rdkafka::Statistics) {
        for (topic, t) in &statistics.topics {
            for (partition, p) in &t.partitions {
                // librdkafka reports -1 for a partition it does not consume, or before it knows.
                if *partition >= 0 && p.consumer_lag >= 0 {
                    metrics::gauge!(
                        CONSUMER_LAG,
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set(p.consumer_lag as f64);
                }
            }
        }
    }
}

/// Gauge: 1 for a touchpoint partition this engine owns now, 0 for one it does not, by
/// `partition`: how the group split the partitions among its engines.
pub const PARTITION_OWNED: &str = "canvass_kafka_partition_owned";

/// Sets [`PARTITION_OWNED`] for every partition of the layout.
fn note_owned(engine: &Partitions) {
    for p in 0..engine.layout().partitions {
        metrics::gauge!(PARTITION_OWNED, "partition" => p.to_string()).set(if engine.owns(p) {
            1.0
        } else {
            0.0
        });
    }
}

/// Gauge: 1 for a touchpoint partition assigned here whose changelog could not be applied
/// (it is not served: its lag grows; the log says why), 0 otherwise, by `partition`.
pub const PARTITION_UNSERVED: &str = "canvass_kafka_partition_unserved";

/// Counter: changelog frames applied to a partition's copy when it was assigned here, by
/// `partition`.
pub const FRAMES_RESTORED: &str = "canvass_changelog_frames_restored_total";

/// Gauge: records on a partition not yet consumed (its end less the next offset to read),
/// by `topic` and `partition`; from librdkafka's statistics, every 5 s by default
/// (`statistics.interval.ms`).
pub const CONSUMER_LAG: &str = "canvass_kafka_consumer_lag";

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
                tracing::warn!(error = %e, "kafka: the rebalance failed");
                Ok(())
            }
        };
        if let Err(e) = result {
            state.failure.get_or_insert(e);
        }
    }
}

/// Why a touchpoint on Kafka partition `partition` is not that partition's to apply: the
/// contact it concerns maps to another under the configured partitioner (its producer used
/// another one, or another key), and one contact must never have state in two partitions.
pub(crate) fn misplaced(
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
