//! Each partition's changelog on Kafka: partition `p` of the changelog topic holds the
//! commits of data partition `p`, shipped by its owner before they are written to its store
//! (see `canvass_store::Shipper`), and a new owner applies the ones its copy lacks before
//! the partition takes any input. So a partition's state follows it from engine to engine,
//! from Kafka alone.
//!
//! A frame larger than [`CHUNK_BYTES`] goes as several records, each with the header
//! [`FRAME_HEADER`] = `"<frame> <chunk>/<chunks>"`; the store records the offset of a frame's
//! last chunk. A frame whose chunks end early (its owner died while shipping it) is left
//! out: the frame of that number that follows it (shipped again) or nothing is what counts.

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use canvass_engine::throttle;
use canvass_proto::v1;
use canvass_store::{Shipper, Store};
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
    message::{Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::clients::{Logging, consumer_config, producer_config};
use crate::config::KafkaConfig;

/// The header naming a record's frame and chunk.
pub const FRAME_HEADER: &str = "canvass-frame";

/// Largest chunk of a frame in one record: below the 1 MiB a broker takes by default.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Longest a restore waits for the changelog to answer before it gives up on the partition.
const RESTORE_STALL: Duration = Duration::from_secs(60);

/// Longest a commit waits for the changelog to take its frame (retrying, through broker
/// restarts) before the partition's store gives up on it.
const SHIP_PATIENCE: Duration = Duration::from_secs(300);

/// The changelog topic of an engine, for its partitions' shippers and restores.
#[derive(Clone)]
pub(crate) struct Changelog {
    topic: String,
    /// Shared by the partitions; replaced when it keeps failing (an idempotent producer can
    /// fail for good against a broker that lost its producer state).
    producer: Arc<Mutex<FutureProducer<Logging>>>,
    config: KafkaConfig,
}

impl std::fmt::Debug for Changelog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changelog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

impl Changelog {
    /// The changelog of `config`, if it names one.
    pub(crate) fn connect(config: &KafkaConfig) -> Result<Option<Self>, KafkaError> {
        let Some(topic) = config.topics.changelog.clone() else {
            return Ok(None);
        };
        Ok(Some(Self {
            topic,
            producer: Arc::new(Mutex::new(Self::producer(config)?)),
            config: config.clone(),
        }))
    }

    fn producer(config: &KafkaConfig) -> Result<FutureProducer<Logging>, KafkaError> {
        let mut settings = producer_config(config);
        // A commit waits for its frame: no lingering.
        settings.set("linger.ms", "0");
        settings.create_with_context(Logging("changelog"))
    }

    /// Produces one frame's records and waits for every acknowledgement; the offset of the
    /// last.
    fn send(&self, records: &[(String, &[u8])], partition: i32) -> Result<i64, String> {
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut deliveries = Vec::with_capacity(records.len());
        for (label, payload) in records {
            let record = FutureRecord::<(), [u8]>::to(&self.topic)
                .partition(partition)
                .payload(payload)
                .headers(OwnedHeaders::new().insert(Header {
                    key: FRAME_HEADER,
                    value: Some(label.as_bytes()),
                }));
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e.to_string())?;
            deliveries.push(delivery);
        }
        let mut last = 0;
        for delivery in deliveries {
            match futures::executor::block_on(delivery) {
                Ok(Ok(d)) => last = d.offset,
                Ok(Err((e, _))) => return Err(e.to_string()),
                Err(_) => return Err("the changelog's producer went away".into()),
            }
        }
        Ok(last)
    }

    /// Starts a new producer in place of the one that keeps failing.
    fn renew_producer(&self) {
        match Self::producer(&self.config) {
            Ok(fresh) => {
                *self.producer.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
            }
            Err(e) => tracing::warn!(error = %e, "changelog: cannot start a new producer"),
        }
    }

    /// The changelog topic's name.
    pub(crate) fn topic(&self) -> &str {
        &self.topic
    }

    /// Makes every later commit of `store` (data partition `partition`) ship to the
    /// changelog first.
    pub(crate) fn ship_from(&self, store: &Store, partition: u32) {
        store.ship_to(Some(Arc::new(PartitionShipper {
            changelog: self.clone(),
            partition: i32::try_from(partition).unwrap_or(i32::MAX),
        })));
    }

    /// Applies to `store` the frames of changelog partition `partition` its copy lacks, up
    /// to the changelog's end; how many it applied. The partition's engine must be opened
    /// again afterwards if any was (`Partitions::reopen`).
    pub(crate) fn restore(&self, store: &Store, partition: u32) -> Result<u64, String> {
        let p = i32::try_from(partition).map_err(|e| e.to_string())?;
        let held = store.shipped().map_err(|e| e.to_string())?;
        let mut settings = consumer_config(&self.config);
        settings
            .set("group.id", format!("{}.changelog", self.config.group_id))
            .set("enable.partition.eof", "true");
        let consumer: BaseConsumer<Logging> = settings
            .create_with_context(Logging("changelog"))
            .map_err(|e| e.to_string())?;
        let (low, mut high) = consumer
            .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
            .map_err(|e| format!("cannot read the changelog's end: {e}"))?;
        let start = held.map_or(low, |h| i64::try_from(h.offset).unwrap_or(i64::MAX) + 1);
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, p, Offset::Offset(start))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut frame = Assembly::default();
        let mut applied = 0;
        let mut next = start;
        let mut last_heard = Instant::now();
        loop {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_heard = Instant::now();
                    next = m.offset() + 1;
                    let offset = u64::try_from(m.offset()).unwrap_or(0);
                    if let Some(done) = frame.add(&m, offset)?
                        && store
                            .apply_shipped(&done, offset)
                            .map_err(|e| e.to_string())?
                    {
                        applied += 1;
                    }
                }
                // A broker may report as its end the first offset of its last batch
                // (Tansu 0.6 does): the end is where a fetch past the reported end comes back
                // empty.
                Some(Err(KafkaError::PartitionEOF(_))) if next >= high => {
                    // Done once the end read again is no further than where the reader
                    // stands (the end may have been reported short).
                    let (_, again) = consumer
                        .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
                        .map_err(|e| format!("cannot read the changelog's end: {e}"))?;
                    if again <= next {
                        return Ok(applied);
                    }
                    high = again;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition, "changelog: reading failed; retrying")
                }
                None => {}
            }
            if last_heard.elapsed() > RESTORE_STALL {
                return Err(format!(
                    "the changelog sent nothing for {}s at offset {next} (its end: {high})",
                    RESTORE_STALL.as_secs()
                ));
            }
        }
    }
}

/// One data partition's shipper.
#[derive(Debug)]
struct PartitionShipper {
    changelog: Changelog,
    partition: i32,
}

impl Shipper for PartitionShipper {
    /// Retries until the changelog takes the frame, for up to [`SHIP_PATIENCE`]: a broker
    /// that restarts holds the partition's commits back, and a frame that went out twice is
    /// harmless (a copy applies a frame number once).
    fn ship(&self, frame: &v1::CommitFrame) -> Result<u64, String> {
        let bytes = frame.encode_to_vec();
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        let count = chunks.len().max(1);
        let records: Vec<(String, &[u8])> = (0..count)
            .map(|i| {
                (
                    format!("{} {}/{count}", frame.number, i + 1),
                    chunks.get(i).copied().unwrap_or_default(),
                )
            })
            .collect();
        let started = Instant::now();
        let mut failures = 0u32;
        loop {
            match self.changelog.send(&records, self.partition) {
                Ok(offset) => {
                    if failures > 0 {
                        tracing::info!(
                            partition = self.partition,
                            failures,
                            "changelog: frames are shipped again"
                        );
                    }
                    return u64::try_from(offset).map_err(|e| e.to_string());
                }
                Err(why) if started.elapsed() < SHIP_PATIENCE => {
                    failures += 1;
                    if let Some(held_back) =
                        throttle::WARNINGS.admit("changelog ship", Instant::now())
                    {
                        tracing::warn!(
                            partition = self.partition,
                            frame = frame.number,
                            held_back,
                            error = %why,
                            "changelog: a frame was not taken; retrying"
                        );
                    }
                    if failures.is_multiple_of(3) {
                        self.changelog.renew_producer();
                    }
                    std::thread::sleep(Duration::from_millis(200 * u64::from(failures.min(10))));
                }
                Err(why) => {
                    return Err(format!(
                        "{why} (retried for {}s)",
                        started.elapsed().as_secs()
                    ));
                }
            }
        }
    }
}

/// A frame being put together from its chunks.
#[derive(Debug, Default)]
struct Assembly {
    /// The frame, the chunks expected, and the bytes so far.
    building: Option<(u64, usize, Vec<u8>, usize)>,
}

impl Assembly {
    /// Adds a record; the frame it completes, if it completes one.
    fn add(
        &mut self,
        m: &rdkafka::message::BorrowedMessage<'_>,
        offset: u64,
    ) -> Result<Option<v1::CommitFrame>, String> {
        let label = m
            .headers()
            .and_then(|h| h.iter().find(|h| h.key == FRAME_HEADER))
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
            .ok_or_else(|| format!("the record at offset {offset} has no {FRAME_HEADER} header"))?;
        let (number, chunk, chunks) = parse_label(label).ok_or_else(|| {
            format!("the record at offset {offset} has a bad {FRAME_HEADER} header `{label}`")
        })?;
        if chunk == 1 {
            // A frame left unfinished before is dropped (see the module's note).
            self.building = Some((number, chunks, Vec::new(), 0));
        }
        let Some((building, expected, bytes, seen)) = self.building.as_mut() else {
            // The rest of a frame whose start is not here: left out as unfinished.
            return Ok(None);
        };
        if *building != number || *expected != chunks || *seen + 1 != chunk {
            self.building = None;
            return Ok(None);
        }
        bytes.extend_from_slice(m.payload().unwrap_or_default());
        *seen += 1;
        if *seen < *expected {
            return Ok(None);
        }
        let bytes = std::mem::take(bytes);
        self.building = None;
        let frame = v1::CommitFrame::decode(bytes.as_slice()).map_err(|e| {
            format!("frame {number} (ending at offset {offset}) does not decode: {e}")
        })?;
        if frame.number != number {
            return Err(format!(
                "the record at offset {offset} says frame {number}, its content frame {}",
                frame.number
            ));
        }
        Ok(Some(frame))
    }
}

/// `"<frame> <chunk>/<chunks>"`.
fn parse_label(label: &str) -> Option<(u64, usize, usize)> {
    let (number, part) = label.split_once(' ')?;
    let (chunk, chunks) = part.split_once('/')?;
    let (number, chunk, chunks) = (
        number.parse().ok()?,
        chunk.parse().ok()?,
        chunks.parse().ok()?,
    );
    (chunk >= 1 && chunk <= chunks).then_some((number, chunk, chunks))
}

#[cfg(test)]
mod tests {
    use super::parse_label;

    #[test]
    fn a_frame_label_names_the_frame_and_its_chunk() {
        assert_eq!(parse_label("12 1/3"), Some((12, 1, 3)));
        assert_eq!(parse_label("12 3/3"), Some((12, 3, 3)));
        assert_eq!(parse_label("12 4/3"), None);
        assert_eq!(parse_label("12 0/3"), None);
        assert_eq!(parse_label("12"), None);
        assert_eq!(parse_label("x 1/1"), None);
    }
}
