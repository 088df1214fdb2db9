//! The engines of a group as one service for the API: who owns each partition (the owners
//! topic), inputs about another engine's partition written to the topic its owner reads, and
//! commands written to the control topic answered once this engine applied them.
//!
//! The owners topic is a directory, not a lock: ownership is the group's and the
//! changelog's claims' (see [`crate::changelog`]). Each engine writes a record when it
//! claims a partition (key: the partition, payload: its advertised gRPC address, the claim's
//! epoch in a header) and reads the whole topic; for each partition the record of the highest
//! epoch (then the latest) names the owner. A stale entry only sends a call to an engine that
//! answers "not mine": an engine serves what it owns now, never what the directory says.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use canvass_engine::durable::Outcome;
use canvass_proto::v1;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::{
    clients::{Logging, consumer_config, producer_config},
    codec,
    config::KafkaConfig,
};

/// Header of an owners record: the epoch of the claim it announces.
pub const EPOCH_HEADER: &str = "canvass-epoch";

/// Control records whose outcome is kept for the callers waiting on them.
const KEPT_OUTCOMES: usize = 4096;

/// The engine that owns a partition, as the owners topic tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// Its gRPC address (a URL).
    pub address: String,
    /// The epoch of its claim (0 without a changelog).
    pub epoch: u64,
    /// Where the owners topic told it.
    pub offset: i64,
}

/// The group as the API sees it. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    config: KafkaConfig,
    producer: FutureProducer<Logging>,
    owners: Mutex<BTreeMap<u32, Owner>>,
    /// The address written in this engine's owners records.
    advertised: Mutex<Option<String>>,
    /// Outcomes of the control records this engine applied, by offset (the latest kept).
    applied: Mutex<BTreeMap<i64, Outcome>>,
    applied_changed: tokio::sync::Notify,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("owners_topic", &self.inner.config.topics.owners)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Cluster {
    /// The group of `config`: a producer for forwarded inputs and, with an owners topic, a
    /// reader of it on a thread of its own (which stops once every clone is dropped).
    ///
    /// # Errors
    /// A client cannot be created (bad settings).
    pub fn connect(config: &KafkaConfig) -> Result<Self, rdkafka::error::KafkaError> {
        let stop = Arc::new(AtomicBool::new(false));
        let inner = Arc::new(Inner {
            config: config.clone(),
            producer: producer_config(config).create_with_context(Logging("forwarder"))?,
            owners: Mutex::default(),
            advertised: Mutex::new(config.advertise.clone()),
            applied: Mutex::default(),
            applied_changed: tokio::sync::Notify::new(),
            stop: Arc::clone(&stop),
        });
        if let Some(topic) = config.topics.owners.clone() {
            let mut settings = consumer_config(config);
            settings.set("group.id", format!("{}.owners", config.group_id));
            let reader: BaseConsumer<Logging> = settings.create_with_context(Logging("owners"))?;
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition_offset(&topic, 0, Offset::Beginning)?;
            reader.assign(&tpl)?;
            let weak = Arc::downgrade(&inner);
            std::thread::Builder::new()
                .name("canvass-owners".into())
                .spawn(move || read_owners(&reader, &weak, &stop))
                .map_err(|e| {
                    rdkafka::error::KafkaError::ClientCreation(format!(
                        "cannot start the owners reader: {e}"
                    ))
                })?;
        }
        Ok(Self { inner })
    }

    /// Sets the address this engine announces, unless the settings name one (`advertise`).
    pub fn advertise_default(&self, address: String) {
        lock(&self.inner.advertised).get_or_insert(address);
    }

    /// The address this engine announces, if it has one.
    #[must_use]
    pub fn advertised(&self) -> Option<String> {
        lock(&self.inner.advertised).clone()
    }

    /// Whether the group keeps a directory of owners (an owners topic is configured).
    #[must_use]
    pub fn has_directory(&self) -> bool {
        self.inner.config.topics.owners.is_some()
    }

    /// The engine the owners topic names for partition `partition`, if it names one.
    #[must_use]
    pub fn owner(&self, partition: u32) -> Option<Owner> {
        lock(&self.inner.owners).get(&partition).cloned()
    }

    /// Writes this engine's claim of `partition` under `epoch` to the owners topic (if the
    /// group keeps one and this engine has an address), and waits for the broker.
    pub(crate) fn announce(&self, partition: u32, epoch: u64) {
        let (Some(topic), Some(address)) = (&self.inner.config.topics.owners, self.advertised())
        else {
            return;
        };
        let key = partition.to_string();
        let epoch_text = epoch.to_string();
        let record = FutureRecord::to(topic)
            .partition(0)
            .key(&key)
            .payload(&address)
            .headers(OwnedHeaders::new().insert(Header {
                key: EPOCH_HEADER,
                value: Some(epoch_text.as_bytes()),
            }));
        let sent = self.inner.producer.send_result(record);
        match sent.map(futures::executor::block_on) {
            Ok(Ok(Ok(_))) => {
                tracing::info!(partition, epoch, %address, topic, "owner announced");
            }
            Ok(Ok(Err((e, _)))) | Err((e, _)) => {
                tracing::warn!(partition, error = %e, topic, "cannot announce the owner: calls about the partition reach it only once it is announced again");
            }
            Ok(Err(_)) => tracing::warn!(partition, "the owner's announcement was dropped"),
        }
    }

    /// Records the outcome of control record `offset`, which this engine applied.
    pub(crate) fn applied(&self, offset: i64, outcome: Outcome) {
        let mut applied = lock(&self.inner.applied);
        applied.insert(offset, outcome);
        while applied.len() > KEPT_OUTCOMES {
            applied.pop_first();
        }
        drop(applied);
        self.inner.applied_changed.notify_waiters();
    }

    /// Writes `record` (an event or a contact upsert taken by this engine's API) to the
    /// touchpoints topic, in partition `partition` (the contact's), keyed by its contact;
    /// returns once the broker acknowledged it.
    ///
    /// # Errors
    /// It cannot be encoded, or the broker did not acknowledge it.
    pub async fn forward_record(
        &self,
        partition: u32,
        record: &v1::IngestRecord,
        caller: &str,
    ) -> Result<v1::Queued, String> {
        let topic = &self.inner.config.topics.touchpoints;
        let out = codec::touchpoint_record(topic, record, caller, self.inner.config.format)
            .map_err(|e| e.to_string())?;
        let offset = self
            .send(
                &out,
                Some(i32::try_from(partition).map_err(|e| e.to_string())?),
                None,
            )
            .await?;
        Ok(v1::Queued {
            topic: topic.clone(),
            partition,
            offset,
        })
    }

    /// Writes a command taken by this engine's API to the control topic, and waits up to
    /// `wait` for this engine to apply it: its outcome, or where it was written if it was not
    /// applied here in that time (every engine applies it as it reads the topic).
    ///
    /// # Errors
    /// It cannot be encoded, or the broker did not acknowledge it.
    pub async fn forward_command(
        &self,
        record: &v1::IngestRecord,
        caller: &str,
        wait: Duration,
    ) -> Result<Result<Outcome, v1::Queued>, String> {
        let topic = &self.inner.config.topics.control;
        let (out, timestamp) =
            codec::control_record(topic, record, caller, self.inner.config.format)
                .map_err(|e| e.to_string())?;
        let offset = self.send(&out, Some(0), timestamp).await?;
        let written = v1::Queued {
            topic: topic.clone(),
            partition: 0,
            offset,
        };
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let changed = self.inner.applied_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if let Some(outcome) = lock(&self.inner.applied).get(&offset) {
                return Ok(match outcome {
                    // Not decided here (this engine lost its partitions meanwhile, or they
                    // held it already): written all the same, so never "send it again".
                    Outcome::Elsewhere { .. } | Outcome::Duplicate => Err(written),
                    decided => Ok(decided.clone()),
                });
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Ok(Err(written));
            }
        }
    }

    async fn send(
        &self,
        out: &codec::OutRecord,
        partition: Option<i32>,
        timestamp: Option<i64>,
    ) -> Result<i64, String> {
        let mut record = crate::publisher::future_record(out);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(t) = timestamp {
            record = record.timestamp(t);
        }
        let timeout = Duration::from_millis(self.inner.config.publish_timeout_ms);
        match self.inner.producer.send(record, timeout).await {
            Ok(delivery) => Ok(delivery.offset),
            Err((e, _)) => Err(format!("the broker did not take it: {e}")),
        }
    }
}

/// Reads the owners topic until `stop`, keeping the directory of `inner` (while it lives).
fn read_owners(reader: &BaseConsumer<Logging>, inner: &std::sync::Weak<Inner>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Some(result) = reader.poll(Duration::from_millis(200)) else {
            continue;
        };
        let Ok(m) = result else {
            continue;
        };
        let Some(inner) = inner.upgrade() else {
            return;
        };
        let partition = m
            .key()
            .and_then(|k| std::str::from_utf8(k).ok())
            .and_then(|k| k.parse::<u32>().ok());
        let address = m.payload().and_then(|p| std::str::from_utf8(p).ok());
        let epoch = m.headers().and_then(|h| {
            h.iter()
                .find(|h| h.key == EPOCH_HEADER)
                .and_then(|h| h.value)
                .and_then(|v| std::str::from_utf8(v).ok())
                .and_then(|v| v.parse::<u64>().ok())
        });
        let (Some(partition), Some(address), Some(epoch)) = (partition, address, epoch) else {
            tracing::warn!(
                offset = m.offset(),
                "owners topic: a record that is not an owner's announcement, ignored"
            );
            continue;
        };
        let candidate = Owner {
            address: address.to_string(),
            epoch,
            offset: m.offset(),
        };
        let mut owners = lock(&inner.owners);
        let newer = owners
            .get(&partition)
            .is_none_or(|o| (candidate.epoch, candidate.offset) >= (o.epoch, o.offset));
        if newer {
            owners.insert(partition, candidate);
        }
    }
}
