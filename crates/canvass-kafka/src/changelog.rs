//! Each partition's changelog on Kafka: partition `p` of the changelog topic holds the
//! commits of data partition `p`, shipped by its owner before they are written to its store
//! (see `canvass_store::Shipper`), and a new owner applies the ones its copy lacks before
//! the partition takes any input. So a partition's state follows it from engine to engine,
//! from Kafka alone.
//!
//! Records: a frame larger than [`CHUNK_BYTES`] goes as several, each with the header
//! [`FRAME_HEADER`] = `"<frame> <chunk>/<chunks> <epoch>"`; the store records the offset of
//! a frame's last chunk. A frame whose chunks end early (its owner died while shipping it) is
//! left out: the frame of that number that follows it (shipped again) or nothing is what
//! counts. A claim ([`CLAIM_HEADER`] = the claimant's layout, its payload naming it) is how
//! an engine takes a partition over.
//!
//! Fencing, by epochs: a new owner reads the changelog to its end, appends a claim, reads on
//! to its own claim, and ships its frames under the epoch `1 + the claim's offset`. A reader
//! applies a frame only under the claim in force where the frame sits ([`Follower`]), so a
//! former owner that has not noticed it lost the partition (paused, cut off) ships frames
//! that count for nobody. Every owner reads its partitions' changelog back as it goes
//! ([`Tail`]): a claim of another engine tells it the partition is lost, and it stops
//! serving it at once. Its copy then holds frames that do not count, which the next restore
//! here finds (a claim before the copy's last frame) and rebuilds the copy from Kafka.
//!
//! Snapshots (with `topics.snapshots`) bound a restore: now and then an owner writes every
//! key of a partition's store (once read back, so only a state that counts) as parts on
//! partition `p` of the snapshots topic, each with [`SNAPSHOT_HEADER`] =
//! `"<epoch>.<frame> <part>/<parts>"`, then commits the offset of its first part for the
//! group `<group>.snapshots`. A new owner with no copy (or one that went its own way) loads
//! the snapshot found there, then applies the frames after it.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use canvass_engine::throttle;
use canvass_proto::v1;
use canvass_store::{Layout, Shipped, Shipper, Standing, Store};
use prost::Message as _;
use rdkafka::{
    Message, Offset, TopicPartitionList,
    consumer::{BaseConsumer, CommitMode, Consumer},
    error::KafkaError,
    message::{BorrowedMessage, Header, Headers, OwnedHeaders},
    producer::{FutureProducer, FutureRecord},
};

use crate::clients::{Logging, consumer_config, producer_config};
use crate::config::KafkaConfig;

/// The header naming a record's frame, chunk and epoch.
pub const FRAME_HEADER: &str = "canvass-frame";

/// The header of a claim: the claimant's layout (`"<partitions> <partitioner>"`).
pub const CLAIM_HEADER: &str = "canvass-claim";

/// The header naming a snapshot part: `"<epoch>.<frame> <part>/<parts>"`.
pub const SNAPSHOT_HEADER: &str = "canvass-snapshot";

/// Largest chunk of a frame (or part of a snapshot) in one record: below the 1 MiB a broker
/// takes by default.
pub const CHUNK_BYTES: usize = 512 * 1024;

/// Longest a restore waits for the changelog to answer before it gives up on the partition.
const RESTORE_STALL: Duration = Duration::from_secs(60);

/// Longest a commit waits for the changelog to take its frame (retrying, through broker
/// restarts) before the partition's store gives up on it.
const SHIP_PATIENCE: Duration = Duration::from_secs(300);

/// Setting (in each partition's store) holding the last log entry a snapshot of it covers.
const SNAPSHOT_SEQ: &str = "snapshot_seq";

/// Counter: snapshots written, by `partition`.
pub const SNAPSHOTS_WRITTEN: &str = "canvass_changelog_snapshots_written_total";

/// Counter: partitions this engine stopped serving because another engine claimed them, by
/// `partition`.
pub const PARTITIONS_FENCED: &str = "canvass_changelog_fenced_total";

/// A partition's standing, shared by its shipper, its restore and the tail.
#[derive(Debug, Default)]
struct Cell {
    epoch: AtomicU64,
    verified: AtomicU64,
    /// Another engine claimed the partition (set by the tail, cleared by a restore).
    lost: AtomicBool,
}

/// The changelog topic of an engine, for its partitions' shippers and restores.
#[derive(Clone)]
pub(crate) struct Changelog {
    topic: String,
    /// Shared by the partitions; replaced when it keeps failing (an idempotent producer can
    /// fail for good against a broker that lost its producer state).
    producer: Arc<Mutex<FutureProducer<Logging>>>,
    config: KafkaConfig,
    /// This engine's layout, written in its claims and checked against the others'.
    layout: Layout,
    /// Who claims, as told in claims (host and process).
    owner: String,
    cells: Arc<Mutex<HashMap<u32, Arc<Cell>>>>,
    /// Partitions whose snapshot is being written.
    snapshotting: Arc<Mutex<HashSet<u32>>>,
    /// When a partition's last snapshot failed: the next waits a minute.
    snapshot_failed: Arc<Mutex<HashMap<u32, Instant>>>,
}

impl std::fmt::Debug for Changelog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Changelog")
            .field("topic", &self.topic)
            .finish_non_exhaustive()
    }
}

/// What a restore did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Restored {
    /// Frames applied.
    pub frames: u64,
    /// The frame number of the snapshot loaded first, if one was.
    pub snapshot: Option<u64>,
    /// Whether the copy here had gone its own way and was rebuilt.
    pub rebuilt: bool,
    /// The epoch the partition is served under from now on.
    pub epoch: u64,
}

/// Why a restore did not give the partition its state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RestoreError {
    /// This partition cannot be served here now (the reason); the others can.
    Unserved(String),
    /// Another engine of the group runs with another layout: this one must not run.
    Conflict(String),
}

impl From<String> for RestoreError {
    fn from(why: String) -> Self {
        Self::Unserved(why)
    }
}

impl Changelog {
    /// The changelog of `config`, if it names one, for a data directory of `layout`.
    pub(crate) fn connect(
        config: &KafkaConfig,
        layout: Layout,
    ) -> Result<Option<Self>, KafkaError> {
        let Some(topic) = config.topics.changelog.clone() else {
            return Ok(None);
        };
        let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".into());
        Ok(Some(Self {
            topic,
            producer: Arc::new(Mutex::new(Self::producer(config)?)),
            config: config.clone(),
            layout,
            owner: format!("{host} pid {}", std::process::id()),
            cells: Arc::default(),
            snapshotting: Arc::default(),
            snapshot_failed: Arc::default(),
        }))
    }

    fn producer(config: &KafkaConfig) -> Result<FutureProducer<Logging>, KafkaError> {
        let mut settings = producer_config(config);
        // A commit waits for its frame: no lingering.
        settings.set("linger.ms", "0");
        settings.create_with_context(Logging("changelog"))
    }

    fn cell(&self, partition: u32) -> Arc<Cell> {
        Arc::clone(
            self.cells
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(partition)
                .or_default(),
        )
    }

    /// This engine's layout as its claims state it.
    fn layout_label(&self) -> String {
        format!("{} {}", self.layout.partitions, self.layout.partitioner)
    }

    /// Produces records (payload, headers) to `topic`'s `partition` and waits for every
    /// acknowledgement; the offsets, in order.
    fn send(
        &self,
        topic: &str,
        records: &[(&[u8], OwnedHeaders)],
        partition: i32,
    ) -> Result<Vec<i64>, String> {
        let producer = self
            .producer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut deliveries = Vec::with_capacity(records.len());
        for (payload, headers) in records {
            let record = FutureRecord::<(), [u8]>::to(topic)
                .partition(partition)
                .payload(payload)
                .headers(headers.clone());
            let delivery = producer
                .send_result(record)
                .map_err(|(e, _)| e.to_string())?;
            deliveries.push(delivery);
        }
        let mut offsets = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match futures::executor::block_on(delivery) {
                Ok(Ok(d)) => offsets.push(d.offset),
                Ok(Err((e, _))) => return Err(e.to_string()),
                Err(_) => return Err("the changelog's producer went away".into()),
            }
        }
        Ok(offsets)
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
    /// changelog first, under the epoch the store last followed (until it claims the
    /// partition anew).
    pub(crate) fn ship_from(&self, store: &Store, partition: u32) {
        let cell = self.cell(partition);
        if let Ok(Some(held)) = store.shipped() {
            cell.epoch.store(held.epoch, Ordering::SeqCst);
            cell.verified.store(held.verified, Ordering::SeqCst);
        }
        store.ship_to(Some(Arc::new(PartitionShipper {
            changelog: self.clone(),
            partition: i32::try_from(partition).unwrap_or(i32::MAX),
            cell,
        })));
    }

    fn reader(&self, group: &str) -> Result<BaseConsumer<Logging>, String> {
        let mut settings = consumer_config(&self.config);
        settings
            .set("group.id", group)
            .set("enable.partition.eof", "true")
            // A restore waits on the changelog's end: the broker answers an empty fetch at
            // once rather than after its default half second.
            .set("fetch.wait.max.ms", "10")
            // A restore reads one partition as fast as it can: large fetches, not the
            // consumer's 1 MiB per partition.
            .set("max.partition.fetch.bytes", "33554432")
            .set("fetch.max.bytes", "67108864")
            .set("receive.message.max.bytes", "68157440");
        settings
            .create_with_context(Logging("changelog"))
            .map_err(|e| e.to_string())
    }

    /// Gives `store` (data partition `partition`) what its changelog holds beyond its copy,
    /// then claims the partition for this engine: from its return, the partition's frames go
    /// under the new epoch. The partition's engine must be opened again afterwards if the
    /// store changed (`Partitions::reopen`).
    pub(crate) fn restore(&self, store: &Store, partition: u32) -> Result<Restored, RestoreError> {
        let p = i32::try_from(partition).map_err(|e| e.to_string())?;
        let (low, _) = self
            .reader(&format!("{}.changelog", self.config.group_id))?
            .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
            .map_err(|e| format!("cannot read the changelog's start: {e}"))?;
        let low = u64::try_from(low).unwrap_or(0);
        let mut restored = Restored {
            frames: 0,
            snapshot: None,
            rebuilt: false,
            epoch: 0,
        };
        let held = store.shipped().map_err(|e| e.to_string())?;
        let rebuilding = store.is_rebuilding().map_err(|e| e.to_string())?;
        let (mut follower, mut start) = match held {
            // A rebuild a crash interrupted: started again.
            _ if rebuilding => {
                restored.rebuilt = true;
                self.rebuild(store, partition, low, &mut restored)?
            }
            // The changelog still holds what follows the copy.
            Some(h) if h.verified + 1 >= low => (
                Follower {
                    epoch: h.epoch,
                    frame: h.frame,
                    offset: h.offset,
                },
                h.verified + 1,
            ),
            Some(_) => {
                restored.rebuilt = true;
                self.rebuild(store, partition, low, &mut restored)?
            }
            None if store.last_seq().map_err(|e| e.to_string())? == 0 => {
                self.rebuild(store, partition, low, &mut restored)?
            }
            // A copy made without a changelog: it must be the changelog's start (a frame
            // that does not follow its log is refused).
            None => (Follower::default(), low),
        };
        let mut until = None;
        loop {
            match self.follow(p, store, &mut follower, start, until)? {
                Followed::Diverged(why) if !restored.rebuilt => {
                    tracing::warn!(
                        partition,
                        reason = %why,
                        "changelog: this copy holds frames that do not count; rebuilding it from Kafka"
                    );
                    restored.rebuilt = true;
                    restored.frames = 0;
                    (follower, start) = self.rebuild(store, partition, low, &mut restored)?;
                    until = None;
                }
                Followed::Diverged(why) => return Err(RestoreError::Unserved(why)),
                Followed::Reached { frames, next } => {
                    restored.frames += frames;
                    if let Some(claim) = until {
                        // Read through our own claim: the partition is ours from here.
                        restored.epoch = claim + 1;
                        store
                            .hold_claim(restored.epoch, claim)
                            .map_err(|e| e.to_string())?;
                        let cell = self.cell(partition);
                        cell.epoch.store(restored.epoch, Ordering::SeqCst);
                        cell.verified.store(claim, Ordering::SeqCst);
                        cell.lost.store(false, Ordering::SeqCst);
                        return Ok(restored);
                    }
                    until = Some(self.claim(p)?);
                    start = next;
                }
            }
        }
    }

    /// Appends this engine's claim to changelog partition `p`; its offset.
    fn claim(&self, p: i32) -> Result<u64, String> {
        let label = self.layout_label();
        let headers = OwnedHeaders::new().insert(Header {
            key: CLAIM_HEADER,
            value: Some(label.as_bytes()),
        });
        let offsets = self.send(&self.topic, &[(self.owner.as_bytes(), headers)], p)?;
        offsets
            .first()
            .and_then(|&o| u64::try_from(o).ok())
            .ok_or_else(|| "the broker acknowledged the claim without an offset".to_string())
    }

    /// Empties `store` and gives it the last snapshot of the partition (if there is one)
    /// or nothing: where the follower then starts.
    fn rebuild(
        &self,
        store: &Store,
        partition: u32,
        low: u64,
        restored: &mut Restored,
    ) -> Result<(Follower, u64), RestoreError> {
        store.reset().map_err(|e| e.to_string())?;
        match self.load_snapshot(store, partition) {
            Ok(Some(at)) => {
                restored.snapshot = Some(at.frame);
                if at.offset + 1 < low {
                    return Err(RestoreError::Unserved(format!(
                        "the last snapshot covers the changelog through offset {}, but the changelog now starts at {low}: the frames in between were deleted (its retention is shorter than the snapshots' interval)",
                        at.offset
                    )));
                }
                return Ok((
                    Follower {
                        epoch: at.epoch,
                        frame: at.frame,
                        offset: at.offset,
                    },
                    at.offset + 1,
                ));
            }
            Ok(None) => {}
            Err(conflict @ RestoreError::Conflict(_)) => return Err(conflict),
            Err(RestoreError::Unserved(why)) => {
                tracing::warn!(partition, reason = %why, "changelog: the last snapshot cannot be loaded; reading the changelog from its start");
                store.reset().map_err(|e| e.to_string())?;
            }
        }
        if low > 0 {
            return Err(RestoreError::Unserved(format!(
                "the changelog starts at offset {low} (older frames were deleted) and no snapshot covers them"
            )));
        }
        Ok((Follower::default(), 0))
    }

    /// Reads changelog partition `p` from `start` with `follower`, applying to `store` the
    /// frames that count, up to the end (or through offset `until`).
    fn follow(
        &self,
        p: i32,
        store: &Store,
        follower: &mut Follower,
        start: u64,
        until: Option<u64>,
    ) -> Result<Followed, RestoreError> {
        // A reader of its own each time: assigning one reader again while its fetcher
        // stops can trip librdkafka (confluentinc/librdkafka#5573).
        let consumer = self.reader(&format!("{}.changelog", self.config.group_id))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(
            &self.topic,
            p,
            Offset::Offset(i64::try_from(start).unwrap_or(i64::MAX)),
        )
        .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut assembly = Assembly::default();
        let mut frames = 0;
        let mut next = start;
        let mut high = consumer
            .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
            .map_err(|e| format!("cannot read the changelog's end: {e}"))?
            .1;
        let mut last_heard = Instant::now();
        loop {
            if until.is_some_and(|u| next > u) {
                return Ok(Followed::Reached { frames, next });
            }
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_heard = Instant::now();
                    let offset = u64::try_from(m.offset()).unwrap_or(0);
                    next = offset + 1;
                    match Record::of(&m)? {
                        Record::Claim { layout, owner } => {
                            if layout != self.layout_label() {
                                return Err(RestoreError::Conflict(format!(
                                    "partition {p} of the changelog `{}` was claimed at offset {offset} by {owner} with the layout `{layout}` (partitions, partitioner), this engine's is `{}`: every engine of the group `{}` must run with the touchpoints topic's partition count and the same partitioner",
                                    self.topic,
                                    self.layout_label(),
                                    self.config.group_id
                                )));
                            }
                            if let Err(why) = follower.claim(offset) {
                                return Ok(Followed::Diverged(why));
                            }
                        }
                        Record::Chunk(chunk) => {
                            let Some(frame) = assembly.add(chunk, m.payload(), offset)? else {
                                continue;
                            };
                            match follower.frame(frame.number, frame.epoch, offset) {
                                Step::Apply => {
                                    store
                                        .apply_shipped(&frame, offset)
                                        .map_err(|e| e.to_string())?;
                                    frames += 1;
                                }
                                Step::Held | Step::Stale => {}
                                Step::Gap(why) => return Err(RestoreError::Unserved(why)),
                            }
                        }
                    }
                }
                // A broker may report as its end the first offset of its last batch
                // (Tansu 0.6 does): the end is where a fetch past the reported end comes back
                // empty.
                Some(Err(KafkaError::PartitionEOF(_)))
                    if until.is_none() && i64::try_from(next).unwrap_or(i64::MAX) >= high =>
                {
                    // Done once the end read again is no further than where the reader
                    // stands (the end may have been reported short).
                    let (_, again) = consumer
                        .fetch_watermarks(&self.topic, p, Duration::from_secs(30))
                        .map_err(|e| format!("cannot read the changelog's end: {e}"))?;
                    if again <= i64::try_from(next).unwrap_or(i64::MAX) {
                        return Ok(Followed::Reached { frames, next });
                    }
                    high = again;
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition = p, "changelog: reading failed; retrying")
                }
                None => {}
            }
            if last_heard.elapsed() > RESTORE_STALL {
                return Err(RestoreError::Unserved(format!(
                    "the changelog sent nothing for {}s at offset {next} (its end: {high})",
                    RESTORE_STALL.as_secs()
                )));
            }
        }
    }

    /// Loads into `store` (emptied) the last complete snapshot of `partition`, if the
    /// snapshots topic holds one; where it stands.
    fn load_snapshot(
        &self,
        store: &Store,
        partition: u32,
    ) -> Result<Option<Shipped>, RestoreError> {
        let Some(topic) = self.config.topics.snapshots.as_deref() else {
            return Ok(None);
        };
        let p = i32::try_from(partition).map_err(|e| e.to_string())?;
        let consumer = self.reader(&self.snapshot_group())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(topic, p);
        let committed = consumer
            .committed_offsets(tpl, Duration::from_secs(30))
            .map_err(|e| format!("cannot read where the last snapshot starts: {e}"))?;
        let Some(Offset::Offset(first)) = committed.find_partition(topic, p).map(|e| e.offset())
        else {
            return Ok(None);
        };
        let (low, high) = consumer
            .fetch_watermarks(topic, p, Duration::from_secs(30))
            .map_err(|e| format!("cannot read the snapshots' end: {e}"))?;
        let (low, _) = (low, high);
        if first < low {
            tracing::warn!(
                partition,
                first,
                low,
                "changelog: the last snapshot was deleted (the snapshots topic's retention)"
            );
            return Ok(None);
        }
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(first))
            .map_err(|e| e.to_string())?;
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        let mut wanted: Option<(String, usize)> = None;
        let mut loaded = 0;
        let mut at = None;
        let mut last_heard = Instant::now();
        while wanted.as_ref().is_none_or(|(_, parts)| loaded < *parts) {
            match consumer.poll(Duration::from_millis(500)) {
                Some(Ok(m)) => {
                    last_heard = Instant::now();
                    let label = header(&m, SNAPSHOT_HEADER).ok_or_else(|| {
                        format!(
                            "the record at offset {} of `{topic}` is not a snapshot part",
                            m.offset()
                        )
                    })?;
                    let (id, part, parts) = parse_snapshot_label(label).ok_or_else(|| {
                        format!("the record at offset {} of `{topic}` has a bad {SNAPSHOT_HEADER} header `{label}`", m.offset())
                    })?;
                    let (want, _) = wanted.get_or_insert_with(|| (id.to_string(), parts));
                    if want != id {
                        // Another owner's snapshot, interleaved.
                        continue;
                    }
                    if part != loaded + 1 {
                        return Err(format!(
                            "snapshot {id} has part {part} where part {} was expected",
                            loaded + 1
                        )
                        .into());
                    }
                    let decoded = v1::SnapshotPart::decode(m.payload().unwrap_or_default())
                        .map_err(|e| {
                            format!("part {part} of snapshot {id} does not decode: {e}")
                        })?;
                    if !decoded.layout.is_empty() && decoded.layout != self.layout_label() {
                        return Err(RestoreError::Conflict(format!(
                            "the last snapshot of partition {p} (`{topic}`, offset {}) was written by an engine with the layout `{}` (partitions, partitioner), this engine's is `{}`: every engine of the group `{}` must run with the touchpoints topic's partition count and the same partitioner",
                            m.offset(),
                            decoded.layout,
                            self.layout_label(),
                            self.config.group_id
                        )));
                    }
                    at = Some(Shipped {
                        frame: decoded.frame,
                        offset: decoded.offset,
                        epoch: decoded.epoch,
                        verified: decoded.offset,
                    });
                    store
                        .load_snapshot_part(
                            decoded
                                .writes
                                .into_iter()
                                .map(|w| (w.key, w.value))
                                .collect(),
                        )
                        .map_err(|e| e.to_string())?;
                    loaded += 1;
                }
                // Parts are produced together: a snapshot still short a while after its
                // last part came was left unfinished (its owner died while writing it).
                Some(Err(KafkaError::PartitionEOF(_)))
                    if last_heard.elapsed() > Duration::from_secs(5) =>
                {
                    return Err(format!(
                        "the snapshot at offset {first} ends after {loaded} parts"
                    )
                    .into());
                }
                Some(Err(KafkaError::PartitionEOF(_))) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, partition, "snapshots: reading failed; retrying")
                }
                None => {}
            }
            if last_heard.elapsed() > RESTORE_STALL {
                return Err(format!(
                    "the snapshots topic sent nothing for {}s",
                    RESTORE_STALL.as_secs()
                )
                .into());
            }
        }
        let at = at.ok_or_else(|| "a snapshot without parts".to_string())?;
        store.finish_snapshot(at).map_err(|e| e.to_string())?;
        let covered = store.last_seq().map_err(|e| e.to_string())?;
        store
            .put_setting(SNAPSHOT_SEQ, covered)
            .map_err(|e| e.to_string())?;
        Ok(Some(at))
    }

    fn snapshot_group(&self) -> String {
        format!("{}.snapshots", self.config.group_id)
    }

    /// Writes a snapshot of `store` (data partition `partition`, owned and served here) if
    /// it appended `snapshot_entries` log entries since the last one and every frame it holds
    /// was read back; the parts go out on a thread of their own. The caller commits nothing
    /// to the store while this runs (it takes a checkpoint and reads every key).
    pub(crate) fn maybe_snapshot(&self, store: &Store, partition: u32) {
        let Some(topic) = self.config.topics.snapshots.clone() else {
            return;
        };
        let due = || -> canvass_store::Result<bool> {
            let covered = store.setting(SNAPSHOT_SEQ)?.unwrap_or(0);
            let held = store.shipped()?;
            let cell = self.cell(partition);
            Ok(store.last_seq()? >= covered + self.config.snapshot_entries
                && !cell.lost.load(Ordering::SeqCst)
                && held.is_some_and(|h| h.epoch == cell.epoch.load(Ordering::SeqCst)))
        };
        let failed_lately = self
            .snapshot_failed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&partition)
            .is_some_and(|at| at.elapsed() < Duration::from_secs(60));
        if failed_lately || !matches!(due(), Ok(true)) {
            return;
        }
        if !self
            .snapshotting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(partition)
        {
            return;
        }
        let started = Instant::now();
        let taken = store.snapshot().and_then(|keys| {
            let at = store.shipped()?.unwrap_or(Shipped {
                frame: 0,
                offset: 0,
                epoch: 0,
                verified: 0,
            });
            Ok((keys, at, store.last_seq()?))
        });
        let (keys, at, covered) = match taken {
            Ok(taken) => taken,
            Err(e) => {
                tracing::warn!(partition, error = %e, "snapshot: the store cannot be read");
                self.snapshot_failed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(partition, Instant::now());
                self.snapshot_done(partition);
                return;
            }
        };
        let changelog = self.clone();
        let store = store.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("snapshot-{partition}"))
            .spawn(move || {
                // Written only once its last frame was read back behind this engine's
                // claim: a snapshot holds only a state that counts.
                let result = changelog
                    .wait_read_back(partition, at)
                    .and_then(|()| changelog.write_snapshot(&topic, partition, keys, at));
                match result {
                    Ok((parts, bytes)) => {
                        if let Err(e) = store.put_setting(SNAPSHOT_SEQ, covered) {
                            tracing::warn!(partition, error = %e, "snapshot: cannot record it");
                        }
                        metrics::counter!(SNAPSHOTS_WRITTEN, "partition" => partition.to_string())
                            .increment(1);
                        tracing::info!(
                            partition,
                            frame = at.frame,
                            entries = covered,
                            parts,
                            bytes,
                            ms = started.elapsed().as_millis() as u64,
                            "snapshot written"
                        );
                    }
                    Err(why) => {
                        changelog
                            .snapshot_failed
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .insert(partition, Instant::now());
                        tracing::warn!(partition, error = %why, "snapshot: not written; tried again in a minute");
                    }
                }
                changelog.snapshot_done(partition);
            });
        if let Err(e) = spawned {
            tracing::warn!(partition, error = %e, "snapshot: cannot start its thread");
            self.snapshot_done(partition);
        }
    }

    /// Waits until the tail read partition `partition`'s changelog back through `at`'s frame
    /// under `at`'s epoch; an error if the partition was claimed by another engine, claimed
    /// anew, or the tail does not get there within two minutes.
    fn wait_read_back(&self, partition: u32, at: Shipped) -> Result<(), String> {
        let cell = self.cell(partition);
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if cell.lost.load(Ordering::SeqCst) || cell.epoch.load(Ordering::SeqCst) != at.epoch {
                return Err("the partition was claimed since: its state may not count".into());
            }
            if cell.verified.load(Ordering::SeqCst) >= at.offset
                && !cell.lost.load(Ordering::SeqCst)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the changelog was not read back to frame {} within two minutes",
                    at.frame
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a snapshot is being written.
    pub(crate) fn is_snapshotting(&self) -> bool {
        !self
            .snapshotting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
    }

    fn snapshot_done(&self, partition: u32) {
        self.snapshotting
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&partition);
    }

    /// Produces a snapshot's parts, then commits where it starts; how many parts and bytes.
    fn write_snapshot(
        &self,
        topic: &str,
        partition: u32,
        keys: Vec<(Vec<u8>, Vec<u8>)>,
        at: Shipped,
    ) -> Result<(usize, usize), String> {
        let p = i32::try_from(partition).map_err(|e| e.to_string())?;
        let mut parts: Vec<Vec<u8>> = Vec::new();
        let mut writes = Vec::new();
        let mut size = 0;
        let part = |writes: &mut Vec<v1::StoreWrite>| {
            v1::SnapshotPart {
                frame: at.frame,
                offset: at.offset,
                epoch: at.epoch,
                writes: std::mem::take(writes),
                layout: self.layout_label(),
            }
            .encode_to_vec()
        };
        for (key, value) in keys {
            size += key.len() + value.len() + 8;
            writes.push(v1::StoreWrite {
                key,
                value: Some(value),
            });
            if size >= CHUNK_BYTES {
                parts.push(part(&mut writes));
                size = 0;
            }
        }
        if !writes.is_empty() || parts.is_empty() {
            parts.push(part(&mut writes));
        }
        let count = parts.len();
        let id = format!("{}.{}", at.epoch, at.frame);
        let labels: Vec<String> = (1..=count).map(|i| format!("{id} {i}/{count}")).collect();
        let records: Vec<(&[u8], OwnedHeaders)> = parts
            .iter()
            .zip(&labels)
            .map(|(payload, label)| {
                (
                    payload.as_slice(),
                    OwnedHeaders::new().insert(Header {
                        key: SNAPSHOT_HEADER,
                        value: Some(label.as_bytes()),
                    }),
                )
            })
            .collect();
        let offsets = self.send(topic, &records, p)?;
        let first = *offsets.first().ok_or("no part was acknowledged")?;
        let cell = self.cell(partition);
        if cell.lost.load(Ordering::SeqCst) || cell.epoch.load(Ordering::SeqCst) != at.epoch {
            // The partition moved on meanwhile: its next owner's snapshot is newer.
            return Err("the partition was claimed while its snapshot was written".into());
        }
        let consumer = self.reader(&self.snapshot_group())?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, p, Offset::Offset(first))
            .map_err(|e| e.to_string())?;
        consumer.commit(&tpl, CommitMode::Sync).map_err(|e| {
            format!("the snapshot was written but where it starts was not committed: {e}")
        })?;
        Ok((count, parts.iter().map(Vec::len).sum()))
    }
}

/// What [`Changelog::follow`] reached.
#[derive(Debug)]
enum Followed {
    /// The end (or the offset asked for), with the frames applied and the next offset.
    Reached { frames: u64, next: u64 },
    /// The copy holds frames that do not count (why).
    Diverged(String),
}

/// One data partition's shipper.
#[derive(Debug)]
struct PartitionShipper {
    changelog: Changelog,
    partition: i32,
    cell: Arc<Cell>,
}

impl Shipper for PartitionShipper {
    /// Retries until the changelog takes the frame, for up to [`SHIP_PATIENCE`]: a broker
    /// that restarts holds the partition's commits back, and a frame that went out twice is
    /// harmless (a copy applies a frame number once).
    fn ship(&self, frame: &v1::CommitFrame) -> Result<u64, String> {
        let bytes = frame.encode_to_vec();
        let chunks: Vec<&[u8]> = bytes.chunks(CHUNK_BYTES).collect();
        let count = chunks.len().max(1);
        let labels: Vec<String> = (1..=count)
            .map(|i| format!("{} {i}/{count} {}", frame.number, frame.epoch))
            .collect();
        let records: Vec<(&[u8], OwnedHeaders)> = labels
            .iter()
            .enumerate()
            .map(|(i, label)| {
                (
                    chunks.get(i).copied().unwrap_or_default(),
                    OwnedHeaders::new().insert(Header {
                        key: FRAME_HEADER,
                        value: Some(label.as_bytes()),
                    }),
                )
            })
            .collect();
        let started = Instant::now();
        let mut failures = 0u32;
        loop {
            match self
                .changelog
                .send(&self.changelog.topic, &records, self.partition)
            {
                Ok(offsets) => {
                    if failures > 0 {
                        tracing::info!(
                            partition = self.partition,
                            failures,
                            "changelog: frames are shipped again"
                        );
                    }
                    let last = offsets.last().copied().unwrap_or(0);
                    return u64::try_from(last).map_err(|e| e.to_string());
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

    fn standing(&self) -> Standing {
        Standing {
            epoch: self.cell.epoch.load(Ordering::SeqCst),
            verified: self.cell.verified.load(Ordering::SeqCst),
        }
    }
}

/// Reads back the changelog partitions this engine serves, as they grow: frames of its own
/// confirm its standing; another engine's claim means the partition was taken over.
///
/// Every partition of the changelog is assigned once, for good, and a partition not served
/// is paused: changing a reader's assignment while its fetchers stop can trip librdkafka
/// (confluentinc/librdkafka#5573), pausing and seeking cannot.
pub(crate) struct Tail {
    consumer: BaseConsumer<Logging>,
    topic: String,
    changelog: Changelog,
    /// Served partitions: the next offset to read, and the offset of this engine's claim.
    watched: BTreeMap<u32, (i64, u64)>,
}

impl Tail {
    pub(crate) fn new(changelog: &Changelog, partitions: u32) -> Result<Self, String> {
        let mut settings = consumer_config(&changelog.config);
        settings.set(
            "group.id",
            format!("{}.changelog", changelog.config.group_id),
        );
        let consumer: BaseConsumer<Logging> = settings
            .create_with_context(Logging("changelog"))
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            let p = i32::try_from(p).map_err(|e| e.to_string())?;
            tpl.add_partition_offset(&changelog.topic, p, Offset::End)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        consumer.pause(&tpl).map_err(|e| e.to_string())?;
        Ok(Self {
            consumer,
            topic: changelog.topic.clone(),
            changelog: changelog.clone(),
            watched: BTreeMap::new(),
        })
    }

    fn one(&self, partition: u32) -> Option<TopicPartitionList> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition(&self.topic, i32::try_from(partition).ok()?);
        Some(tpl)
    }

    /// Reads partition `partition` on from `claim`, this engine's claim on it, as served.
    ///
    /// # Errors
    /// The reader cannot be placed after the claim: another engine's claim could then go
    /// unseen, so the partition must not be served.
    pub(crate) fn watch(&mut self, partition: u32, claim: u64) -> Result<(), String> {
        let next = i64::try_from(claim).unwrap_or(i64::MAX) + 1;
        let tpl = self.one(partition).ok_or("no such partition")?;
        let p = i32::try_from(partition).map_err(|e| e.to_string())?;
        let mut tries = 0;
        while let Err(e) =
            self.consumer
                .seek(&self.topic, p, Offset::Offset(next), Duration::from_secs(5))
        {
            tries += 1;
            if tries == 3 {
                return Err(format!(
                    "the changelog cannot be read back from the claim (offset {claim}): {e}"
                ));
            }
        }
        self.consumer
            .resume(&tpl)
            .map_err(|e| format!("the changelog cannot be read back: {e}"))?;
        self.watched.insert(partition, (next, claim));
        Ok(())
    }

    /// Stops reading partition `partition`.
    pub(crate) fn unwatch(&mut self, partition: u32) {
        if self.watched.remove(&partition).is_some()
            && let Some(tpl) = self.one(partition)
            && let Err(e) = self.consumer.pause(&tpl)
        {
            tracing::warn!(partition, error = %e, "changelog: cannot stop reading it back");
        }
    }

    /// Reads what arrived (without waiting); the partitions another engine claimed, each
    /// with the claim's offset and claimant. They are no longer watched.
    pub(crate) fn poll(&mut self) -> Vec<(u32, u64, String)> {
        let mut lost = Vec::new();
        for _ in 0..10_000 {
            let m = match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => m,
                Some(Err(KafkaError::PartitionEOF(_))) => continue,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "changelog: reading back failed");
                    break;
                }
                None => break,
            };
            let Ok(partition) = u32::try_from(m.partition()) else {
                continue;
            };
            let Some((next, claim)) = self.watched.get_mut(&partition) else {
                continue;
            };
            let cell = self.changelog.cell(partition);
            if cell.lost.load(Ordering::SeqCst) {
                // Nothing after another engine's claim confirms this engine's standing.
                continue;
            }
            let offset = u64::try_from(m.offset()).unwrap_or(0);
            if m.offset() < *next {
                continue;
            }
            if m.offset() > *next {
                // Offsets skipped (the producer is idempotent, without transactions: a
                // changelog has no gaps): a claim among them would go unseen.
                cell.lost.store(true, Ordering::SeqCst);
                lost.push((
                    partition,
                    offset,
                    format!(
                        "nobody known: the read-back skipped offsets {next} to {}",
                        offset - 1
                    ),
                ));
                continue;
            }
            *next = m.offset() + 1;
            match Record::of(&m) {
                Ok(Record::Claim { owner, .. }) if offset > *claim => {
                    cell.lost.store(true, Ordering::SeqCst);
                    lost.push((partition, offset, owner));
                }
                Ok(Record::Chunk(chunk)) if chunk.epoch == cell.epoch.load(Ordering::SeqCst) => {
                    cell.verified.fetch_max(offset, Ordering::SeqCst);
                }
                _ => {}
            }
        }
        for &(p, _, _) in &lost {
            self.unwatch(p);
        }
        lost
    }

    /// Whether another engine claimed partition `partition` since this engine did.
    pub(crate) fn lost(&self, partition: u32) -> bool {
        self.changelog.cell(partition).lost.load(Ordering::SeqCst)
    }

    /// How far partition `partition` was read back (with nothing but this engine's frames).
    pub(crate) fn verified(&self, partition: u32) -> u64 {
        self.changelog
            .cell(partition)
            .verified
            .load(Ordering::SeqCst)
    }
}

/// A changelog record.
enum Record {
    Chunk(Chunk),
    Claim { layout: String, owner: String },
}

impl Record {
    fn of(m: &BorrowedMessage<'_>) -> Result<Self, String> {
        let offset = m.offset();
        if let Some(layout) = header(m, CLAIM_HEADER) {
            return Ok(Self::Claim {
                layout: layout.to_string(),
                owner: String::from_utf8_lossy(m.payload().unwrap_or_default()).into_owned(),
            });
        }
        let label = header(m, FRAME_HEADER)
            .ok_or_else(|| format!("the record at offset {offset} has no {FRAME_HEADER} header"))?;
        parse_label(label).map(Self::Chunk).ok_or_else(|| {
            format!("the record at offset {offset} has a bad {FRAME_HEADER} header `{label}`")
        })
    }
}

fn header<'a>(m: &'a BorrowedMessage<'_>, name: &str) -> Option<&'a str> {
    m.headers()
        .and_then(|h| h.iter().find(|h| h.key == name))
        .and_then(|h| h.value)
        .and_then(|v| std::str::from_utf8(v).ok())
}

/// One record of a frame: which frame, which of its chunks, under which epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Chunk {
    number: u64,
    chunk: usize,
    chunks: usize,
    epoch: u64,
}

/// Frames being put together from their chunks, one per epoch (two owners' chunks may
/// interleave).
#[derive(Debug, Default)]
struct Assembly {
    building: HashMap<(u64, u64), (Chunk, Vec<u8>)>,
}

impl Assembly {
    /// Adds a chunk; the frame it completes, if it completes one.
    fn add(
        &mut self,
        chunk: Chunk,
        payload: Option<&[u8]>,
        offset: u64,
    ) -> Result<Option<v1::CommitFrame>, String> {
        let key = (chunk.epoch, chunk.number);
        if chunk.chunk == 1 {
            // A frame of this number left unfinished before is dropped (see the module's
            // note); frames of one epoch come in order, so older unfinished ones go too.
            self.building
                .retain(|&(epoch, number), _| epoch != chunk.epoch || number > chunk.number);
            self.building.insert(key, (chunk, Vec::new()));
        }
        let Some((building, bytes)) = self.building.get_mut(&key) else {
            // The rest of a frame whose start is not here: left out as unfinished.
            return Ok(None);
        };
        if building.chunks != chunk.chunks
            || building.chunk + usize::from(chunk.chunk != 1) != chunk.chunk
        {
            self.building.remove(&key);
            return Ok(None);
        }
        building.chunk = chunk.chunk;
        bytes.extend_from_slice(payload.unwrap_or_default());
        if chunk.chunk < chunk.chunks {
            return Ok(None);
        }
        let bytes = self
            .building
            .remove(&key)
            .map(|(_, b)| b)
            .unwrap_or_default();
        let number = chunk.number;
        let frame = v1::CommitFrame::decode(bytes.as_slice()).map_err(|e| {
            format!("frame {number} (ending at offset {offset}) does not decode: {e}")
        })?;
        if frame.number != number || frame.epoch != chunk.epoch {
            return Err(format!(
                "the record at offset {offset} says frame {number} of epoch {}, its content frame {} of epoch {}",
                chunk.epoch, frame.number, frame.epoch
            ));
        }
        Ok(Some(frame))
    }
}

/// `"<frame> <chunk>/<chunks>"`, then ` <epoch>` (absent in frames shipped before epochs:
/// 0).
fn parse_label(label: &str) -> Option<Chunk> {
    let mut words = label.split(' ');
    let number = words.next()?.parse().ok()?;
    let (chunk, chunks) = words.next()?.split_once('/')?;
    let (chunk, chunks) = (chunk.parse().ok()?, chunks.parse().ok()?);
    let epoch = match words.next() {
        Some(e) => e.parse().ok()?,
        None => 0,
    };
    (words.next().is_none() && chunk >= 1 && chunk <= chunks).then_some(Chunk {
        number,
        chunk,
        chunks,
        epoch,
    })
}

/// `"<epoch>.<frame> <part>/<parts>"`: the snapshot's id, the part, the parts.
fn parse_snapshot_label(label: &str) -> Option<(&str, usize, usize)> {
    let (id, part) = label.split_once(' ')?;
    let (part, parts) = part.split_once('/')?;
    let (part, parts): (usize, usize) = (part.parse().ok()?, parts.parse().ok()?);
    (part >= 1 && part <= parts && id.contains('.')).then_some((id, part, parts))
}

/// What a reader of a changelog partition knows, and decides record by record: the claim in
/// force (its epoch) and the last frame that counts. Every reader decides alike from the
/// records alone, so the copies built from one changelog never fork.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Follower {
    /// The epoch frames must carry to count (0: before any claim).
    pub epoch: u64,
    /// The last frame that counts, and its offset (0 and the copy's start if none).
    pub frame: u64,
    pub offset: u64,
}

/// What to do with a frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Step {
    /// It counts and follows the last: apply it.
    Apply,
    /// It counts and is held already (shipped twice, or read again).
    Held,
    /// Shipped under an epoch no longer in force: it counts for nobody.
    Stale,
    /// It counts but frames are missing before it.
    Gap(String),
}

impl Follower {
    /// A claim at `offset`: its epoch is in force from there. A copy holding a frame after
    /// it (shipped under the epoch before) went its own way.
    pub(crate) fn claim(&mut self, offset: u64) -> Result<(), String> {
        if self.frame > 0 && offset < self.offset {
            return Err(format!(
                "a claim at offset {offset} of the changelog came before frame {} (offset {}) this copy holds: that frame and the ones after it do not count",
                self.frame, self.offset
            ));
        }
        self.epoch = offset + 1;
        Ok(())
    }

    /// Frame `number` shipped under `epoch`, at `offset`.
    pub(crate) fn frame(&mut self, number: u64, epoch: u64, offset: u64) -> Step {
        if epoch != self.epoch {
            return Step::Stale;
        }
        if number <= self.frame {
            return Step::Held;
        }
        if number != self.frame + 1 {
            return Step::Gap(format!(
                "frame {number} at offset {offset} follows frame {}: frames are missing in between",
                self.frame
            ));
        }
        self.frame = number;
        self.offset = offset;
        Step::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::{Chunk, Follower, Step, parse_label, parse_snapshot_label};

    #[test]
    fn a_frame_label_names_the_frame_its_chunk_and_epoch() {
        let chunk = |number, chunk, chunks, epoch| Chunk {
            number,
            chunk,
            chunks,
            epoch,
        };
        assert_eq!(parse_label("12 1/3 8"), Some(chunk(12, 1, 3, 8)));
        assert_eq!(
            parse_label("12 3/3"),
            Some(chunk(12, 3, 3, 0)),
            "before epochs"
        );
        assert_eq!(parse_label("12 4/3 1"), None);
        assert_eq!(parse_label("12 0/3"), None);
        assert_eq!(parse_label("12"), None);
        assert_eq!(parse_label("x 1/1"), None);
        assert_eq!(parse_label("1 1/1 2 3"), None);
        assert_eq!(parse_snapshot_label("8.12 2/5"), Some(("8.12", 2, 5)));
        assert_eq!(parse_snapshot_label("8.12 6/5"), None);
        assert_eq!(parse_snapshot_label("12 1/1"), None);
    }

    #[test]
    fn a_former_owners_frames_after_a_claim_count_for_nobody() {
        // Owner A claims at 0 (epoch 1) and ships frames 1 and 2; B claims at 3 (epoch 4);
        // A, paused, wakes and ships its frame 3 at 4; B ships its frame 3 at 5.
        let mut reader = Follower::default();
        reader.claim(0).unwrap();
        assert_eq!(reader.frame(1, 1, 1), Step::Apply);
        assert_eq!(reader.frame(2, 1, 2), Step::Apply);
        assert_eq!(reader.frame(2, 1, 2), Step::Held, "shipped twice");
        reader.claim(3).unwrap();
        assert_eq!(reader.frame(3, 1, 4), Step::Stale, "A's late frame");
        assert_eq!(reader.frame(3, 4, 5), Step::Apply, "B's frame counts");
        assert!(matches!(reader.frame(5, 4, 6), Step::Gap(_)));
        assert_eq!(
            reader,
            Follower {
                epoch: 4,
                frame: 3,
                offset: 5
            }
        );
    }

    #[test]
    fn a_copy_holding_a_frame_shipped_after_another_claim_went_its_own_way() {
        // A's copy holds its frame 3 at offset 4, read back only through 2: reading on
        // from 3, it meets B's claim at 3, before its own frame.
        let mut copy = Follower {
            epoch: 1,
            frame: 3,
            offset: 4,
        };
        assert!(copy.claim(3).is_err());
        // A copy whose last frame came before the claim follows it.
        let mut behind = Follower {
            epoch: 1,
            frame: 2,
            offset: 2,
        };
        behind.claim(3).unwrap();
        assert_eq!(behind.frame(3, 4, 5), Step::Apply);
    }
}
