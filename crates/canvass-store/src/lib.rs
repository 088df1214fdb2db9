//! The canvass store: the event log and everything derived from it, over sled (or, for
//! simulations, over a sorted map in memory: the same code above `backend`).
//!
//! Architecture invariant: nothing outside this crate names sled. Every write goes through a
//! [`WriteBatch`] handed to [`Store::commit`]: its log entries (one frame), offsets and dead
//! letters go to sled in one atomic batch, flushed before `commit` returns, so nothing may
//! become visible outside the engine (an action, an offset, an answer) before the input that
//! caused it is durable. Its projection changes wait in memory for a checkpoint, which writes
//! them atomically (a redo record makes a sliced write atomic) together with the log position
//! they reach; after a crash the engine applies the log from that position again.

mod backend;
mod keys;
pub mod layout;
mod memtable;

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use backend::Backend;
use memtable::{Layers, Memtable, Scan};

use canvass_core::{TimerId, UnixMillis};
use canvass_proto::v1;
use prost::Message;

pub use keys::EMBEDDED_PARTITION;
pub use layout::{Layout, Stores, Wanted};

/// The log envelope version this build writes and reads.
pub const LOG_SCHEMA_VERSION: u32 = 1;

/// Storage failures. Each names what it was doing; none is retried here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk or sled failed (full disk, I/O error, corruption found by sled). Not marked
    /// as the source: the message already holds it, and error chains would print it twice.
    #[error("storage failed: {0}")]
    Storage(sled::Error),
    /// A log entry is missing, out of sequence or does not decode.
    #[error("log entry {seq}: {reason}")]
    CorruptLog {
        /// Its sequence number.
        seq: u64,
        /// What is wrong.
        reason: String,
    },
    /// A log entry was written by a newer engine.
    #[error(
        "log entry {seq} has schema version {version}; this engine reads version {LOG_SCHEMA_VERSION}"
    )]
    UnknownLogVersion {
        /// Its sequence number.
        seq: u64,
        /// Its version.
        version: u32,
    },
    /// Another process holds the data directory.
    #[error("the data directory {0} is in use by another process")]
    InUse(String),
    /// A stored record does not decode.
    #[error("stored {what} does not decode: {reason}")]
    CorruptRecord {
        /// What kind of record.
        what: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A checkpoint failed earlier; the store takes no more writes.
    #[error("a checkpoint failed, the store takes no more writes: {0}")]
    CheckpointFailed(String),
    /// The store was opened read-only.
    #[error("the store is open read-only")]
    ReadOnly,
    /// A write to sled failed earlier (a full disk, an I/O error); the store takes no more
    /// writes, since sled may block for good on the next one.
    #[error("the store takes no more writes after a storage failure: {0}")]
    Halted(String),
    /// The data directory's partitions are not what was asked, or not readable.
    #[error("{0}")]
    Layout(String),
}

impl Error {
    /// Whether the disk or sled failed (as opposed to bad data): the process should stop,
    /// with the status that says so.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(
            self,
            Self::Storage(_) | Self::Halted(_) | Self::CheckpointFailed(_)
        )
    }
}

impl From<sled::Error> for Error {
    fn from(e: sled::Error) -> Self {
        Self::Storage(e)
    }
}

/// How long [`Store::open`] waits for a data directory another handle is releasing.
pub const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Result of store operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// How the store is opened.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// sled's page cache, in bytes. Bounded: state lives on disk, not in memory.
    pub cache_capacity: u64,
    /// Flush to disk at every commit (the default). Off only for benchmarks of the raw
    /// cost of the rest.
    pub flush_on_commit: bool,
    /// Keep a copy of every batch written to sled (for benchmarks that replay the same
    /// writes against raw sled).
    pub record_writes: bool,
    /// Projection changes held in memory before a checkpoint writes them to sled, in bytes.
    /// Memory holds at most about twice this (one table filling, one being written).
    pub checkpoint_bytes: usize,
    /// Log entries applied before a checkpoint, whatever their size: bounds the log tail a
    /// restart re-applies.
    pub checkpoint_entries: u64,
    /// Write checkpoints on a thread of their own (the default), so commits go on meanwhile.
    pub background_checkpoints: bool,
    /// Never write to sled: commits go to the in-memory table only and no checkpoint is
    /// taken, so a read command can apply the log after the last checkpoint (what a crash
    /// left to re-apply) and show what is committed without changing the data directory.
    /// (sled itself still opens its files and recovers them as it does on any open.)
    pub read_only: bool,
    /// Watches the writes to sled in progress (see [`StallWatch`]).
    pub stall_watch: StallWatch,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 64 * 1024 * 1024,
            flush_on_commit: true,
            record_writes: false,
            checkpoint_bytes: 32 * 1024 * 1024,
            checkpoint_entries: 200_000,
            background_checkpoints: true,
            read_only: false,
            stall_watch: StallWatch::default(),
        }
    }
}

/// The store. Cheap to clone: clones share the same database and the same in-memory
/// projection changes.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
    options: StoreOptions,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    layers: RwLock<Layers>,
    /// Sequence number of the last log entry written.
    log_end: AtomicU64,
    /// Sequence number of the last log entry a flush made durable: what readers outside
    /// the engine may act on (see [`Store::commit_unsynced`]).
    durable_end: AtomicU64,
    /// Commits written to sled, and of them the ones a flush made durable (a commit of dead
    /// letters or offsets alone has no log entry to tell it by).
    commits_written: AtomicU64,
    commits_durable: AtomicU64,
    /// The flush started by [`Store::sync_in_background`], if one is running.
    syncing: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    recorded: Mutex<Vec<Vec<Write>>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    /// Why a background checkpoint failed, if one did.
    failed: Mutex<Option<String>>,
    /// Why a write to sled failed, if one did: from then on nothing is written, and sled is
    /// never dropped (its drop flushes, and on a full disk that flush blocks for good).
    halted: Mutex<Option<String>>,
}

/// One write of a batch: a key and its new value, or `None` for a removal.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// How a checkpoint goes to sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Checkpoint {
    /// In slices beside running commits, made atomic by a redo record written first.
    Sliced,
    /// In one batch, while the caller waits.
    Whole,
}

/// The last log entry the projections in sled include.
const CHECKPOINT_SEQ: &str = "checkpoint_seq";
/// Writes per sled batch when a checkpoint is applied: sled holds one lock per batch, and
/// commits wait for it.
const CHECKPOINT_SLICE: usize = 64;
/// Bytes per stored chunk of a checkpoint's redo record, and the most a log frame holds
/// (unless one entry is larger). sled rewrites a whole node when it splits or consolidates
/// one, and writes a node over a quarter of a segment (128 KiB by default) to a file of its
/// own: values kept well under that keep those rewrites cheap.
const CHECKPOINT_CHUNK: usize = 16 * 1024;
const FRAME_BYTES: usize = 16 * 1024;

fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::CorruptRecord {
        what,
        reason: e.to_string(),
    })
}

fn u64_value(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// What a crash left of a checkpoint in progress.
enum Interrupted {
    /// A complete redo record: the last log entry it covers, its chunks and its bytes.
    Complete {
        through: u64,
        chunks: u32,
        record: Vec<u8>,
    },
    /// Chunks written before the record's header (none if no checkpoint was in progress).
    Stale(Vec<Write>),
}

/// Tells how long the oldest write to sled in progress has been running: sled can block
/// without an error when the disk fills, so the process watches this and stops when it grows
/// too long. Made before the store is opened (and given in [`StoreOptions::stall_watch`]), so
/// that the writes `Store::open` itself makes are watched too; it does not keep sled open.
#[derive(Debug, Clone, Default)]
pub struct StallWatch(Arc<Writes>);

#[derive(Debug, Default)]
struct Writes {
    /// Writes in progress, by number, with when they started.
    in_progress: Mutex<Vec<(u64, std::time::Instant)>>,
    next: AtomicU64,
}

impl StallWatch {
    /// How long the oldest write in progress has been running, if one is.
    #[must_use]
    pub fn stalled_for(&self) -> Option<std::time::Duration> {
        lock(&self.0.in_progress)
            .iter()
            .map(|(_, since)| since.elapsed())
            .max()
    }

    fn start(&self) -> u64 {
        let id = self.0.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.0.in_progress).push((id, std::time::Instant::now()));
        id
    }

    fn finish(&self, id: u64) {
        lock(&self.0.in_progress).retain(|(w, _)| *w != id);
    }
}

impl Drop for Store {
    /// After a storage failure, sled is leaked rather than dropped: its drop flushes what it
    /// buffers, and on a full disk that flush waits for good (seen on a real full tmpfs).
    /// Leaking loses nothing: every commit was flushed before it counted, so the next
    /// open finds what a crash would leave, which it is built to recover.
    fn drop(&mut self) {
        if lock(&self.shared.halted).is_some() {
            self.backend.leak();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Store {
    /// Opens (or creates) the store in `dir`, finishing a checkpoint a crash interrupted.
    ///
    /// sled locks the directory; a handle closed a moment ago may still hold the lock while
    /// its threads wind down, so a lock conflict is retried for up to [`LOCK_WAIT`] before it
    /// is reported as [`Error::InUse`].
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self> {
        let backend = Backend::open_sled(dir, options.cache_capacity)?;
        Self::on(backend, options)
    }

    /// A store in memory, empty, gone with the process: the same tables, log, batches and
    /// checkpoints as on disk (simulations and previews run the engine on it).
    #[must_use]
    pub fn in_memory(options: StoreOptions) -> Self {
        Self::on(Backend::memory(), options).expect("an empty store in memory opens")
    }

    fn on(backend: Backend, options: StoreOptions) -> Result<Self> {
        let store = Self {
            backend,
            options,
            shared: Arc::new(Shared {
                layers: RwLock::new(Layers::new()),
                log_end: AtomicU64::new(0),
                durable_end: AtomicU64::new(0),
                commits_written: AtomicU64::new(0),
                commits_durable: AtomicU64::new(0),
                syncing: Mutex::default(),
                recorded: Mutex::default(),
                checkpointer: Mutex::default(),
                failed: Mutex::default(),
                halted: Mutex::default(),
            }),
        };
        if store.options.read_only {
            store.read_interrupted_checkpoint()?;
        } else {
            store.guarded(|| store.finish_interrupted_checkpoint())?;
        }
        let end = store.find_log_end()?;
        store.shared.log_end.store(end, Ordering::SeqCst);
        // What a crash left in the files is what a later flush would have made durable.
        store.shared.durable_end.store(end, Ordering::SeqCst);
        Ok(store)
    }

    fn layers(&self) -> Layers {
        self.shared
            .layers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.layers().get(key) {
            Some(v) => Ok(v),
            None => self.backend.get(key),
        }
    }

    fn get<M: Message + Default>(&self, what: &'static str, key: &[u8]) -> Result<Option<M>> {
        match self.get_raw(key)? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The keys from `start` (inclusive) to `end` (exclusive), memory and sled together.
    fn scan(&self, start: Vec<u8>, end: Vec<u8>) -> Scan {
        Scan::new(&self.layers(), &self.backend, start, end)
    }

    fn scan_prefix(&self, prefix: Vec<u8>) -> Scan {
        let end = prefix_end(&prefix);
        self.scan(prefix, end)
    }

    fn meta(&self, name: &str) -> Result<u64> {
        Ok(self.meta_value(name)?.unwrap_or(0))
    }

    fn meta_value(&self, name: &str) -> Result<Option<u64>> {
        Ok(self.backend.get(&keys::meta(name))?.map(|v| u64_value(&v)))
    }

    /// A setting kept with the data (`None`: never stored), e.g. the dedupe window the
    /// projections were built with, so that a replay can use the same.
    pub fn setting(&self, name: &str) -> Result<Option<u64>> {
        self.meta_value(&format!("setting.{name}"))
    }

    /// Stores a setting, durably.
    pub fn put_setting(&self, name: &str, value: u64) -> Result<()> {
        let key = keys::meta(&format!("setting.{name}"));
        self.write(vec![(key, Some(value.to_be_bytes().to_vec()))], true)
    }

    /// Sequence number of the last log entry (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64> {
        Ok(self.shared.log_end.load(Ordering::SeqCst))
    }

    /// Processing time of the last log entry: the engine's clock (the epoch for an empty
    /// log).
    pub fn last_applied_at(&self) -> Result<UnixMillis> {
        let last = self.last_seq()?;
        if last == 0 {
            return Ok(UnixMillis::default());
        }
        Ok(self
            .log_from(last)
            .next()
            .transpose()?
            .and_then(|e| e.applied_at.as_ref().map(UnixMillis::from_proto))
            .unwrap_or_default())
    }

    /// The last log entry whose effects the projections hold, in memory or in sled. Entries
    /// after it were written but not applied (a crash came between): see
    /// [`Store::checkpoint_seq`].
    pub fn applied_seq(&self) -> Result<u64> {
        let layers = self.layers();
        let in_memory = std::iter::once(&layers.active)
            .chain(layers.frozen.as_ref())
            .map(|t| t.through())
            .max()
            .unwrap_or(0);
        Ok(in_memory.max(self.checkpoint_seq()?))
    }

    /// The last log entry whose effects the projections in sled include: a restart applies
    /// the log after it again.
    pub fn checkpoint_seq(&self) -> Result<u64> {
        self.meta(CHECKPOINT_SEQ)
    }

    fn find_log_end(&self) -> Result<u64> {
        let Some(kv) = self.backend.prefix(&[keys::LOG]).next_back() else {
            return Ok(0);
        };
        let (k, v) = kv?;
        let first = u64_value(&k[1..]);
        let frame = v1::LogFrame::decode(v.as_slice()).map_err(|e| Error::CorruptLog {
            seq: first,
            reason: format!("the frame starting here does not decode: {e}"),
        })?;
        Ok(first + frame.entries.len() as u64 - 1)
    }

    /// Dead letters parked so far (they are numbered from 1).
    pub fn dead_letter_count(&self) -> Result<u64> {
        self.last_number(keys::DEAD_LETTER)
    }

    /// The highest number under a namespace keyed by big-endian numbers (0: none).
    fn last_number(&self, namespace: u8) -> Result<u64> {
        Ok(self
            .backend
            .prefix(&[namespace])
            .next_back()
            .transpose()?
            .map_or(0, |(k, _)| u64_value(&k[1..])))
    }

    /// The number of the last publication queued (0: none queued).
    pub fn last_publication(&self) -> Result<u64> {
        self.last_number(keys::PUBLICATION)
    }

    /// Publications waiting for a broker, oldest first, at most `limit`.
    pub fn publications(&self, limit: usize) -> Result<Vec<(u64, v1::Publication)>> {
        self.backend
            .prefix(&[keys::PUBLICATION])
            .take(limit)
            .map(|kv| {
                let (k, v) = kv?;
                Ok((u64_value(&k[1..]), decode("publication", &v)?))
            })
            .collect()
    }

    /// A contact's state.
    pub fn contact(&self, partition: u16, id: &str) -> Result<Option<v1::ContactState>> {
        self.get("contact state", &keys::contact(partition, id))
    }

    /// Every contact id of a partition, in id order.
    pub fn contact_ids(&self, partition: u16) -> impl Iterator<Item = Result<String>> + '_ {
        let prefix = keys::contact(partition, "");
        let skip = prefix.len();
        self.scan_prefix(prefix)
            .map(move |kv| utf8("contact key", &kv?.0[skip..]))
    }

    /// The contact ids of a partition that sort after `after` (from the first with `None`),
    /// in id order.
    pub fn contact_ids_after(
        &self,
        partition: u16,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        self.ids_after(keys::contact(partition, ""), after, "contact key")
    }

    /// The ids (the rest of the key) under `prefix` that sort after `after`, in order.
    fn ids_after(
        &self,
        prefix: Vec<u8>,
        after: Option<&str>,
        what: &'static str,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        let skip = prefix.len();
        let end = prefix_end(&prefix);
        let mut start = prefix;
        if let Some(after) = after {
            start.extend_from_slice(after.as_bytes());
            start.push(0);
        }
        self.scan(start, end)
            .map(move |kv| utf8(what, &kv?.0[skip..]))
    }

    /// Sweeps in progress, oldest command first.
    pub fn sweeps(&self) -> Result<Vec<v1::Sweep>> {
        self.scan_prefix(vec![keys::SWEEP])
            .map(|kv| decode("sweep", &kv?.1))
            .collect()
    }

    /// A campaign's counters (zero if it has none yet).
    pub fn counters(&self, campaign: &str) -> Result<v1::CampaignCounters> {
        Ok(self
            .get("counters", &keys::counters(campaign))?
            .unwrap_or_default())
    }

    /// The contacts in response group `group` of `campaign`, in id order: a range scan.
    pub fn group_members(
        &self,
        campaign: &str,
        group: &str,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        self.group_members_after(campaign, group, None)
    }

    /// The contacts of a response group whose ids sort after `after` (a page's last), in id
    /// order.
    pub fn group_members_after(
        &self,
        campaign: &str,
        group: &str,
        after: Option<&str>,
    ) -> impl Iterator<Item = Result<String>> + '_ {
        self.ids_after(keys::group_prefix(campaign, group), after, "group key")
    }

    /// The offset to resume `source` from.
    pub fn offset(&self, source: &str) -> Result<Option<u64>> {
        Ok(self
            .backend
            .get(&keys::offset(source))?
            .map(|v| u64_value(&v)))
    }

    /// The armed timers in (due, id) order, from `from` (inclusive) or from the earliest.
    pub fn timers(
        &self,
        from: Option<(UnixMillis, &TimerId)>,
    ) -> impl Iterator<Item = Result<(UnixMillis, TimerId)>> + '_ {
        let start = match from {
            Some((due, id)) => keys::timer(due, id),
            None => vec![keys::TIMER],
        };
        self.scan(start, vec![keys::TIMER + 1]).map(|kv| {
            let (k, _) = kv?;
            let due = keys::time_from(&k[1..]);
            let id = keys::timer_id_from(&k[9..]);
            match (due, id) {
                (Some(due), Some(id)) => Ok((due, id)),
                _ => Err(Error::CorruptRecord {
                    what: "timer key",
                    reason: format!("{k:?}"),
                }),
            }
        })
    }

    /// Undelivered actions in emission order, at most `limit`, with their outbox positions.
    pub fn outbox(&self, limit: usize) -> Result<Vec<((u64, u32), v1::Action)>> {
        self.outbox_after(None, limit)
    }

    /// Whether the action at an outbox position is still undelivered.
    pub fn outbox_holds(&self, (seq, index): (u64, u32)) -> Result<bool> {
        Ok(self.get_raw(&keys::outbox(seq, index))?.is_some())
    }

    /// Undelivered actions after `after` (exclusive; `None` from the first), in emission
    /// order, at most `limit`, of commits a flush has made durable: what may leave.
    pub fn outbox_durable_after(
        &self,
        after: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<Vec<((u64, u32), v1::Action)>> {
        let durable = self.durable_seq();
        let mut rows = self.outbox_after(after, limit)?;
        rows.retain(|((seq, _), _)| *seq <= durable);
        Ok(rows)
    }

    /// Undelivered actions after `after` as [`Store::outbox_durable_after`], also of commits
    /// whose flush has not ended yet (the engine's own view).
    pub fn outbox_after(
        &self,
        after: Option<(u64, u32)>,
        limit: usize,
    ) -> Result<Vec<((u64, u32), v1::Action)>> {
        let start = match after {
            // The smallest key above the position's own.
            Some((seq, index)) => {
                let mut k = keys::outbox(seq, index);
                k.push(0);
                k
            }
            None => vec![keys::OUTBOX],
        };
        let mut out = Vec::new();
        for kv in self.scan(start, vec![keys::OUTBOX + 1]).take(limit) {
            let (k, v) = kv?;
            let seq = u64_value(&k[1..9]);
            let index = k[9..13].try_into().map(u32::from_be_bytes).unwrap_or(0);
            out.push(((seq, index), decode("outbox action", &v)?));
        }
        Ok(out)
    }

    /// What the engine counted about its inputs (zero if nothing yet).
    pub fn input_counters(&self) -> Result<v1::InputCounters> {
        Ok(self
            .get("input counters", &[keys::INPUTS])?
            .unwrap_or_default())
    }

    /// The engine-wide policy, if one was set.
    pub fn policy(&self) -> Result<Option<v1::Policy>> {
        self.get("policy", &[keys::POLICY])
    }

    /// Every campaign spec version loaded, by campaign id then version.
    pub fn specs(&self) -> Result<Vec<v1::CampaignSpec>> {
        self.scan_prefix(vec![keys::SPEC])
            .map(|kv| decode("campaign spec", &kv?.1))
            .collect()
    }

    /// Every campaign's lifecycle, by campaign id.
    pub fn lifecycles(&self) -> Result<Vec<v1::CampaignLifecycle>> {
        self.scan_prefix(vec![keys::LIFECYCLE])
            .map(|kv| decode("campaign lifecycle", &kv?.1))
            .collect()
    }

    /// One campaign's lifecycle.
    pub fn lifecycle(&self, campaign: &str) -> Result<Option<v1::CampaignLifecycle>> {
        self.get("campaign lifecycle", &keys::lifecycle(campaign))
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<v1::DeadLetter>> {
        self.backend
            .prefix(&[keys::DEAD_LETTER])
            .map(|kv| decode("dead letter", &kv?.1))
            .collect()
    }

    /// The log from `from` (inclusive), checked: sequence numbers without gaps, known schema
    /// version, decodable entries. A bad entry is an error naming its sequence number.
    pub fn log_from(&self, from: u64) -> impl Iterator<Item = Result<v1::LogEntry>> + '_ {
        let from = from.max(1);
        // The frame holding `from` starts at or before it.
        let start = self
            .backend
            .last_at_or_before(&keys::log(0), &keys::log(from))
            .ok()
            .flatten()
            .unwrap_or_else(|| keys::log(from));
        LogIter {
            frames: self.backend.range(start, keys::log(u64::MAX)),
            frame: Vec::new().into_iter(),
            next_in_frame: 0,
            expected: from,
            from,
        }
    }

    /// Every key and value of the projections (everything but the log, dead letters and
    /// metadata), in key order: what replay must rebuild byte for byte.
    pub fn projection_dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for ns in keys::PROJECTIONS {
            for kv in self.scan_prefix(vec![ns]) {
                out.push(kv?);
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes every projection (not the log, not the dead letters), durably.
    pub fn clear_projections(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        self.wait_for_checkpoint()?;
        self.clear_projections_in_sled()
    }

    /// Each batch of removals is one guarded write: a large store takes many, and the watch
    /// must tell a slow replay from a stalled disk.
    fn clear_projections_in_sled(&self) -> Result<()> {
        *self
            .shared
            .layers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Layers::new();
        for ns in keys::PROJECTIONS {
            loop {
                let mut removals = Vec::new();
                for kv in self.backend.prefix(&[ns]).take(10_000) {
                    removals.push((kv?.0, None));
                }
                if removals.is_empty() {
                    break;
                }
                self.guarded(|| self.backend.apply(&removals, false))?;
            }
        }
        self.guarded(|| {
            self.backend
                .apply(&[(keys::meta(CHECKPOINT_SEQ), None)], true)
        })
    }

    /// Takes no more writes after `e`, and keeps sled from being dropped (see `halted`).
    fn halt(&self, e: &Error) {
        if e.is_storage() {
            lock(&self.shared.halted).get_or_insert_with(|| e.to_string());
        }
    }

    /// Runs a write to sled: refused once the store halted or if it is read-only, watched
    /// while it runs, and halting the store if it fails.
    fn guarded<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        if let Some(reason) = lock(&self.shared.halted).as_ref() {
            return Err(Error::Halted(reason.clone()));
        }
        let id = self.options.stall_watch.start();
        let written = write();
        self.options.stall_watch.finish(id);
        if let Err(e) = &written {
            self.halt(e);
        }
        written
    }

    fn check_failed(&self) -> Result<()> {
        match lock(&self.shared.failed).as_ref() {
            Some(reason) => Err(Error::CheckpointFailed(reason.clone())),
            None => Ok(()),
        }
    }

    /// Makes a batch durable: its log entries (one frame), offsets and dead letters go to
    /// sled in one atomic batch, flushed (unless turned off) before this returns; its
    /// projection changes then join the in-memory table a later checkpoint writes. A crash
    /// before that checkpoint loses nothing: the log holds what the table held.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        self.commit_with(batch, self.options.flush_on_commit)?;
        if self.options.flush_on_commit {
            self.mark_durable(
                self.shared.log_end.load(Ordering::SeqCst),
                self.shared.commits_written.load(Ordering::SeqCst),
            );
        }
        Ok(())
    }

    /// Applies a batch as [`Store::commit`] does but without the flush: it is not durable
    /// until the next [`Store::sync`] (or the flush [`Store::sync_in_background`] starts)
    /// returns. Its rows are readable at once: the engine reads them for the next batch
    /// while the flush runs, but nothing may leave the engine before it is durable (an
    /// action, an answer, an offset told to a broker): [`Store::outbox_durable_after`]
    /// gives the outbox up to the last flush only.
    pub fn commit_unsynced(&self, batch: WriteBatch) -> Result<()> {
        self.commit_with(batch, false)
    }

    /// Makes every commit so far durable, and waits for it.
    pub fn sync(&self) -> Result<()> {
        let through = self.shared.log_end.load(Ordering::SeqCst);
        let commits = self.shared.commits_written.load(Ordering::SeqCst);
        self.check_failed()?;
        if self.options.read_only {
            return Ok(());
        }
        self.write(Vec::new(), true)?;
        self.mark_durable(through, commits);
        Ok(())
    }

    /// A mark of the commits written so far, for [`Store::wait_durable`].
    #[must_use]
    pub fn commit_mark(&self) -> u64 {
        self.shared.commits_written.load(Ordering::SeqCst)
    }

    /// Waits until the commits up to `mark` ([`Store::commit_mark`]) are durable: at once
    /// if a flush has covered them, else by waiting for the flush running (which started
    /// after them), else by flushing now.
    pub fn wait_durable(&self, mark: u64) -> Result<()> {
        if self.shared.commits_durable.load(Ordering::SeqCst) >= mark {
            return Ok(());
        }
        self.wait_synced()?;
        if self.shared.commits_durable.load(Ordering::SeqCst) >= mark {
            return Ok(());
        }
        self.sync()
    }

    /// Starts making every commit so far durable on a thread of its own, once the flush
    /// started before (if any) has ended: [`Store::wait_synced`] waits for it.
    pub fn sync_in_background(&self) -> Result<()> {
        self.wait_synced()?;
        let store = self.clone();
        let handle = std::thread::Builder::new()
            .name("canvass-flush".into())
            .spawn(move || store.sync())
            .map_err(|e| Error::Halted(format!("cannot start a flush: {e}")))?;
        *lock(&self.shared.syncing) = Some(handle);
        Ok(())
    }

    /// Waits for the flush [`Store::sync_in_background`] started, if one is running.
    pub fn wait_synced(&self) -> Result<()> {
        let running = lock(&self.shared.syncing).take();
        match running.map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Halted("a flush panicked".into())),
        }
    }

    /// The last log entry a flush made durable.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_end.load(Ordering::SeqCst)
    }

    fn mark_durable(&self, through: u64, commits: u64) {
        self.shared.durable_end.fetch_max(through, Ordering::SeqCst);
        self.shared
            .commits_durable
            .fetch_max(commits, Ordering::SeqCst);
    }

    fn commit_with(&self, batch: WriteBatch, flush: bool) -> Result<()> {
        self.check_failed()?;
        let WriteBatch {
            log,
            first_seq,
            at_commit,
            projections,
            applied_through,
        } = batch;
        if self.options.read_only {
            if first_seq.is_some() {
                return Err(Error::ReadOnly);
            }
            let mut writes = at_commit;
            writes.extend(projections);
            let layers = self.layers();
            let held_below = |k: &[u8]| -> Result<bool> {
                match layers.frozen.as_ref().and_then(|f| f.get(k)) {
                    Some(v) => Ok(v.is_some()),
                    None => self.backend.contains(k),
                }
            };
            return layers.active.apply(
                writes,
                applied_through.unwrap_or(0),
                applied_through,
                &held_below,
            );
        }
        let mut writes = at_commit;
        if let Some(first) = first_seq {
            let last = first + log.len() as u64 - 1;
            writes.extend(frames(first, log));
            self.write(writes, flush)?;
            self.shared.log_end.store(last, Ordering::SeqCst);
            self.shared.commits_written.fetch_add(1, Ordering::SeqCst);
        } else if !writes.is_empty() {
            self.write(writes, flush)?;
            self.shared.commits_written.fetch_add(1, Ordering::SeqCst);
        }
        if projections.is_empty() && applied_through.is_none() {
            return Ok(());
        }
        let layers = self.layers();
        let held_below = |k: &[u8]| -> Result<bool> {
            match layers.frozen.as_ref().and_then(|f| f.get(k)) {
                Some(v) => Ok(v.is_some()),
                None => self.backend.contains(k),
            }
        };
        let active = &layers.active;
        active.apply(
            projections,
            applied_through.unwrap_or(0),
            applied_through,
            &held_below,
        )?;
        if !self.options.read_only
            && (active.bytes() >= self.options.checkpoint_bytes
                || active.entries() >= self.options.checkpoint_entries)
        {
            self.start_checkpoint(Checkpoint::Sliced)?;
        }
        Ok(())
    }

    /// Applies writes to sled in one atomic batch.
    fn write(&self, writes: Vec<Write>, flush: bool) -> Result<()> {
        self.guarded(|| self.backend.apply(&writes, flush))?;
        if self.options.record_writes {
            lock(&self.shared.recorded).push(writes);
        }
        Ok(())
    }

    /// Makes every commit so far durable: for stores opened without a flush per commit
    /// (a bulk rewrite that is redone from its start if it is interrupted).
    pub fn flush(&self) -> Result<()> {
        self.check_failed()?;
        self.write(Vec::new(), true)
    }

    /// Writes every projection change held in memory to sled, durably, and waits for it.
    /// Not needed for safety (the log holds everything); it shortens the next restart.
    ///
    /// The caller waits and commits nothing meanwhile, so the table goes to sled as one
    /// atomic batch with one flush: no redo record, no slices (those exist only so that
    /// commits running beside a background checkpoint never wait long).
    pub fn checkpoint(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_failed()?;
        self.start_checkpoint(Checkpoint::Whole)?;
        self.wait_for_checkpoint()
    }

    fn wait_for_checkpoint(&self) -> Result<()> {
        let running = lock(&self.shared.checkpointer).take();
        if let Some(handle) = running {
            match handle.join() {
                Ok(result) => result?,
                Err(_) => return Err(Error::CheckpointFailed("the checkpoint panicked".into())),
            }
        }
        self.check_failed()
    }

    /// Freezes the active table and writes it to sled, on a thread of its own unless
    /// turned off. A checkpoint still running is waited for first: memory holds at most one
    /// table being written and one filling.
    fn start_checkpoint(&self, how: Checkpoint) -> Result<()> {
        self.wait_for_checkpoint()?;
        let frozen = {
            let mut layers = self
                .shared
                .layers
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            if layers.active.is_empty() {
                return Ok(());
            }
            let frozen = std::mem::take(&mut layers.active);
            layers.frozen = Some(Arc::clone(&frozen));
            frozen
        };
        let store = self.clone();
        let run = move || {
            let result = match how {
                Checkpoint::Sliced => store.write_checkpoint(&frozen),
                Checkpoint::Whole => store.write_checkpoint_whole(&frozen),
            };
            match &result {
                Ok(()) => {
                    let mut layers = store
                        .shared
                        .layers
                        .write()
                        .unwrap_or_else(PoisonError::into_inner);
                    if layers
                        .frozen
                        .as_ref()
                        .is_some_and(|f| Arc::ptr_eq(f, &frozen))
                    {
                        layers.frozen = None;
                    }
                }
                // The table stays readable; no more commits are taken.
                Err(e) => *lock(&store.shared.failed) = Some(e.to_string()),
            }
            result
        };
        if self.options.background_checkpoints && how == Checkpoint::Sliced {
            let handle = std::thread::Builder::new()
                .name("canvass-checkpoint".into())
                .spawn(run)
                .map_err(|e| Error::CheckpointFailed(format!("cannot start a thread: {e}")))?;
            *lock(&self.shared.checkpointer) = Some(handle);
            Ok(())
        } else {
            run()
        }
    }

    /// Writes a frozen table to sled. sled applies a batch under one lock that commits
    /// wait for, so a large table goes in slices; to keep the checkpoint atomic all the
    /// same, its writes are first stored as a redo record, which a restart finishes
    /// applying if a crash came in between (see [`Store::open`]).
    fn write_checkpoint(&self, table: &Memtable) -> Result<()> {
        let (through, count, writes) = self.write_redo_record(table)?;
        // Each slice is flushed on its own: sled flushes one at a time, so a commit waiting
        // behind a checkpoint waits for one slice, never for the whole table (which stalled
        // commits for hundreds of milliseconds).
        for slice in writes.chunks(CHECKPOINT_SLICE) {
            self.write(slice.to_vec(), true)?;
        }
        self.write(finish_checkpoint(through, count), true)
    }

    /// Writes a frozen table to sled in one atomic batch, flushed once.
    fn write_checkpoint_whole(&self, table: &Memtable) -> Result<()> {
        let mut writes = self.checkpoint_writes(table)?;
        writes.push((
            keys::meta(CHECKPOINT_SEQ),
            Some(table.through().to_be_bytes().to_vec()),
        ));
        self.write(writes, true)
    }

    /// A table's writes, less the removals of keys sled never had (no write at all).
    fn checkpoint_writes(&self, table: &Memtable) -> Result<Vec<Write>> {
        let mut writes = Vec::new();
        for (k, v) in table.writes() {
            if v.is_some() || self.backend.contains(&k)? {
                writes.push((k, v));
            }
        }
        Ok(writes)
    }

    /// The first half of a checkpoint: its writes stored durably as a redo record.
    /// Returns the last log seq it covers, the record's chunk count, and the writes.
    fn write_redo_record(&self, table: &Memtable) -> Result<(u64, u32, Vec<Write>)> {
        let through = table.through();
        let writes = self.checkpoint_writes(table)?;
        let record = encode_writes(&writes);
        let chunks: Vec<&[u8]> = record.chunks(CHECKPOINT_CHUNK).collect();
        for (i, chunk) in chunks.iter().enumerate() {
            let key = keys::checkpoint_chunk(through, u32::try_from(i).unwrap_or(u32::MAX));
            self.write(vec![(key, Some(chunk.to_vec()))], true)?;
        }
        let count = u32::try_from(chunks.len()).unwrap_or(u32::MAX);
        self.write(
            vec![(
                keys::checkpoint_header(through),
                Some(count.to_be_bytes().to_vec()),
            )],
            true,
        )?;
        Ok((through, count, writes))
    }

    /// Read-only: a checkpoint whose redo record is complete but whose end was not written
    /// is read into the in-memory table below the active one, as if it had been finished.
    fn read_interrupted_checkpoint(&self) -> Result<()> {
        let Interrupted::Complete {
            through, record, ..
        } = self.interrupted_checkpoint()?
        else {
            return Ok(());
        };
        let writes: Vec<Write> = decode_writes(&record)?
            .into_iter()
            .filter(|(k, _)| k.as_slice() != keys::meta(CHECKPOINT_SEQ).as_slice())
            .collect();
        let table = Arc::new(Memtable::default());
        let backend = &self.backend;
        table.apply(writes, through, Some(through), &|k| backend.contains(k))?;
        self.shared
            .layers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .frozen = Some(table);
        Ok(())
    }

    /// The redo record of a checkpoint a crash interrupted after it was complete, or the
    /// chunks a crash left before its header was written.
    fn interrupted_checkpoint(&self) -> Result<Interrupted> {
        let mut header = None;
        let mut stale = Vec::new();
        for kv in self.backend.prefix(&[keys::CHECKPOINT]) {
            let (k, v) = kv?;
            if k.len() == 9 {
                header = Some((
                    u64_value(&k[1..]),
                    u32::from_be_bytes(v.as_slice().try_into().unwrap_or_default()),
                ));
            } else {
                stale.push((k.to_vec(), None));
            }
        }
        let Some((through, count)) = header else {
            return Ok(Interrupted::Stale(stale));
        };
        let mut record = Vec::new();
        for i in 0..count {
            let chunk = self
                .backend
                .get(&keys::checkpoint_chunk(through, i))?
                .ok_or_else(|| Error::CorruptRecord {
                    what: "checkpoint",
                    reason: format!("chunk {i} of the checkpoint through {through} is missing"),
                })?;
            record.extend_from_slice(&chunk);
        }
        Ok(Interrupted::Complete {
            through,
            chunks: count,
            record,
        })
    }

    /// Applies a checkpoint whose redo record is complete but whose end was not written.
    fn finish_interrupted_checkpoint(&self) -> Result<()> {
        match self.interrupted_checkpoint()? {
            // Chunks without a header: the crash came before the checkpoint began to apply.
            Interrupted::Stale(stale) if stale.is_empty() => Ok(()),
            Interrupted::Stale(stale) => self.backend.apply(&stale, true),
            Interrupted::Complete {
                through,
                chunks,
                record,
            } => {
                let mut writes = decode_writes(&record)?;
                writes.extend(finish_checkpoint(through, chunks));
                self.backend.apply(&writes, true)
            }
        }
    }

    /// The batches written to sled since the last call (with `record_writes`).
    pub fn take_recorded(&self) -> Vec<Vec<Write>> {
        std::mem::take(&mut *lock(&self.shared.recorded))
    }

    /// Bytes the database takes on disk (in memory: the bytes of its keys and values).
    pub fn size_on_disk(&self) -> Result<u64> {
        self.backend.size()
    }
}

/// Walks the log frame by frame, entry by entry.
struct LogIter {
    frames: backend::KvIter,
    /// The entries of the current frame not yet read, and the seq of the first of them.
    frame: std::vec::IntoIter<Vec<u8>>,
    next_in_frame: u64,
    expected: u64,
    from: u64,
}

impl LogIter {
    fn next_bytes(&mut self) -> Option<Result<(u64, Vec<u8>)>> {
        loop {
            if let Some(bytes) = self.frame.next() {
                let seq = self.next_in_frame;
                self.next_in_frame += 1;
                if seq < self.from {
                    continue;
                }
                return Some(Ok((seq, bytes)));
            }
            let (k, v) = match self.frames.next()? {
                Ok(kv) => kv,
                Err(e) => return Some(Err(e)),
            };
            let first = u64_value(&k[1..]);
            match v1::LogFrame::decode(v.as_slice()) {
                Ok(frame) => {
                    self.frame = frame.entries.into_iter();
                    self.next_in_frame = first;
                }
                Err(e) => {
                    return Some(Err(Error::CorruptLog {
                        seq: first,
                        reason: format!("the frame starting here does not decode: {e}"),
                    }));
                }
            }
        }
    }
}

impl Iterator for LogIter {
    type Item = Result<v1::LogEntry>;

    fn next(&mut self) -> Option<Self::Item> {
        let (seq, bytes) = match self.next_bytes()? {
            Ok(item) => item,
            Err(e) => return Some(Err(e)),
        };
        if seq != self.expected {
            let missing = self.expected;
            self.expected = seq + 1;
            return Some(Err(Error::CorruptLog {
                seq: missing,
                reason: format!("missing (next entry is {seq})"),
            }));
        }
        self.expected += 1;
        let entry = match v1::LogEntry::decode(bytes.as_slice()) {
            Ok(entry) => entry,
            Err(e) => {
                return Some(Err(Error::CorruptLog {
                    seq,
                    reason: format!("does not decode: {e}"),
                }));
            }
        };
        if entry.schema_version != LOG_SCHEMA_VERSION {
            return Some(Err(Error::UnknownLogVersion {
                seq,
                version: entry.schema_version,
            }));
        }
        if entry.seq != seq {
            return Some(Err(Error::CorruptLog {
                seq,
                reason: format!("envelope says seq {}", entry.seq),
            }));
        }
        Some(Ok(entry))
    }
}

/// Log entries from `first` on, as frames of at most [`FRAME_BYTES`] (or one entry).
fn frames(first: u64, entries: Vec<Vec<u8>>) -> Vec<Write> {
    let mut out = Vec::new();
    let mut frame = v1::LogFrame::default();
    let (mut start, mut size) = (first, 0);
    for (seq, entry) in (first..).zip(entries) {
        if !frame.entries.is_empty() && size + entry.len() > FRAME_BYTES {
            let full = std::mem::take(&mut frame);
            out.push((keys::log(start), Some(full.encode_to_vec())));
            (start, size) = (seq, 0);
        }
        size += entry.len() + 3;
        frame.entries.push(entry);
    }
    if !frame.entries.is_empty() {
        out.push((keys::log(start), Some(frame.encode_to_vec())));
    }
    out
}

/// The writes that end a checkpoint: its mark, and its redo record removed.
fn finish_checkpoint(through: u64, chunks: u32) -> Vec<Write> {
    let mut writes = vec![
        (
            keys::meta(CHECKPOINT_SEQ),
            Some(through.to_be_bytes().to_vec()),
        ),
        (keys::checkpoint_header(through), None),
    ];
    writes.extend((0..chunks).map(|i| (keys::checkpoint_chunk(through, i), None)));
    writes
}

/// A redo record: for each write, key length, key, then 0 (removal) or 1, value length
/// and value; lengths as big-endian u32.
fn encode_writes(writes: &[Write]) -> Vec<u8> {
    let mut out = Vec::new();
    for (k, v) in writes {
        out.extend_from_slice(&(k.len() as u32).to_be_bytes());
        out.extend_from_slice(k);
        match v {
            None => out.push(0),
            Some(v) => {
                out.push(1);
                out.extend_from_slice(&(v.len() as u32).to_be_bytes());
                out.extend_from_slice(v);
            }
        }
    }
    out
}

fn decode_writes(mut bytes: &[u8]) -> Result<Vec<Write>> {
    let corrupt = || Error::CorruptRecord {
        what: "checkpoint",
        reason: "the redo record is truncated".into(),
    };
    let take = |bytes: &mut &[u8], n: usize| -> Result<Vec<u8>> {
        let (head, rest) = bytes.split_at_checked(n).ok_or_else(corrupt)?;
        *bytes = rest;
        Ok(head.to_vec())
    };
    let len = |b: Vec<u8>| u32::from_be_bytes(b.try_into().unwrap_or_default()) as usize;
    let mut writes = Vec::new();
    while !bytes.is_empty() {
        let n = len(take(&mut bytes, 4)?);
        let key = take(&mut bytes, n)?;
        let value = match take(&mut bytes, 1)?[0] {
            0 => None,
            _ => {
                let n = len(take(&mut bytes, 4)?);
                Some(take(&mut bytes, n)?)
            }
        };
        writes.push((key, value));
    }
    Ok(writes)
}

fn utf8(what: &'static str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| Error::CorruptRecord {
        what,
        reason: e.to_string(),
    })
}

/// The first key after every key starting with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

/// Writes to apply together. Nothing is visible until [`Store::commit`].
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Encoded log entries, consecutive from `first_seq`.
    log: Vec<Vec<u8>>,
    first_seq: Option<u64>,
    /// Offsets and dead letters: durable with the log.
    at_commit: Vec<Write>,
    /// Everything else: held in memory until a checkpoint.
    projections: Vec<Write>,
    applied_through: Option<u64>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes in the batch (log entries included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.log.len() + self.at_commit.len() + self.projections.len()
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.applied_through.is_none()
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.push((key, Some(value)));
    }

    fn del(&mut self, key: Vec<u8>) {
        self.push((key, None));
    }

    fn push(&mut self, write: Write) {
        if keys::written_at_commit(&write.0) {
            self.at_commit.push(write);
        } else {
            self.projections.push(write);
        }
    }

    /// Appends a log entry (its `seq` must follow the last one). The last entry applied is
    /// recorded once per batch with [`WriteBatch::set_last_seq`].
    pub fn append_log(&mut self, entry: &v1::LogEntry) {
        debug_assert_eq!(
            self.first_seq.map(|f| f + self.log.len() as u64),
            self.first_seq.map(|_| entry.seq),
            "log entries of a batch are consecutive"
        );
        self.first_seq.get_or_insert(entry.seq);
        self.log.push(entry.encode_to_vec());
    }

    /// Records the last log entry whose effects this batch holds.
    pub fn set_last_seq(&mut self, seq: u64) {
        self.applied_through = Some(seq);
    }

    /// Stores a contact's state under its id.
    pub fn put_contact(&mut self, partition: u16, id: &str, state: &v1::ContactState) {
        self.put(keys::contact(partition, id), state.encode_to_vec());
    }

    /// Adds a contact to a response group.
    pub fn add_to_group(&mut self, campaign: &str, group: &str, contact: &str) {
        self.put(keys::group(campaign, group, contact), Vec::new());
    }

    /// Removes a contact from a response group.
    pub fn remove_from_group(&mut self, campaign: &str, group: &str, contact: &str) {
        self.del(keys::group(campaign, group, contact));
    }

    /// Stores a campaign's counters.
    pub fn put_counters(&mut self, campaign: &str, counters: &v1::CampaignCounters) {
        self.put(keys::counters(campaign), counters.encode_to_vec());
    }

    /// Arms a timer.
    pub fn put_timer(&mut self, due: UnixMillis, id: &TimerId) {
        self.put(keys::timer(due, id), Vec::new());
    }

    /// Disarms a timer (the core knows when it was due: timeouts count from the state entry).
    pub fn remove_timer(&mut self, due: UnixMillis, id: &TimerId) {
        self.del(keys::timer(due, id));
    }

    /// Queues an action for delivery.
    pub fn put_outbox(&mut self, position: (u64, u32), action: &v1::Action) {
        self.put(keys::outbox(position.0, position.1), action.encode_to_vec());
    }

    /// Removes a delivered action.
    pub fn remove_outbox(&mut self, position: (u64, u32)) {
        self.del(keys::outbox(position.0, position.1));
    }

    /// Records where to resume a source.
    pub fn set_offset(&mut self, source: &str, next: u64) {
        self.put(keys::offset(source), next.to_be_bytes().to_vec());
    }

    /// Stores a campaign spec version.
    pub fn put_spec(&mut self, spec: &v1::CampaignSpec) {
        self.put(keys::spec(&spec.id, spec.version), spec.encode_to_vec());
    }

    /// Stores a campaign's lifecycle.
    pub fn put_lifecycle(&mut self, lifecycle: &v1::CampaignLifecycle) {
        self.put(
            keys::lifecycle(&lifecycle.campaign_id),
            lifecycle.encode_to_vec(),
        );
    }

    /// Stores what the engine counted about its inputs.
    pub fn put_input_counters(&mut self, counters: &v1::InputCounters) {
        self.put(vec![keys::INPUTS], counters.encode_to_vec());
    }

    /// Replaces the engine-wide policy.
    pub fn put_policy(&mut self, policy: &v1::Policy) {
        self.put(vec![keys::POLICY], policy.encode_to_vec());
    }

    /// Records how far a sweep went.
    pub fn put_sweep(&mut self, sweep: &v1::Sweep) {
        self.put(keys::sweep(sweep.command_seq), sweep.encode_to_vec());
    }

    /// Forgets a sweep that reached every contact.
    pub fn remove_sweep(&mut self, command_seq: u64) {
        self.del(keys::sweep(command_seq));
    }

    /// Parks a dead letter as number `n` (numbers follow [`Store::dead_letter_count`]).
    pub fn put_dead_letter(&mut self, n: u64, letter: &v1::DeadLetter) {
        self.put(keys::dead_letter(n), letter.encode_to_vec());
    }

    /// Queues a publication under number `n` (after [`Store::last_publication`]).
    pub fn put_publication(&mut self, n: u64, publication: &v1::Publication) {
        self.put(keys::publication(n), publication.encode_to_vec());
    }

    /// Removes a publication the broker acknowledged.
    pub fn remove_publication(&mut self, n: u64) {
        self.del(keys::publication(n));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_held_by_another_handle_is_reported_as_in_use() {
        let dir = tempfile::tempdir().unwrap();
        let _held = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let err = Store::open(dir.path(), StoreOptions::default()).unwrap_err();
        assert!(matches!(err, Error::InUse(_)), "{err}");
    }

    fn foreground() -> StoreOptions {
        StoreOptions {
            background_checkpoints: false,
            ..StoreOptions::default()
        }
    }

    fn contact(id: &str, tags: usize) -> v1::ContactState {
        v1::ContactState {
            contact: Some(v1::Contact {
                id: id.to_string(),
                // Tags make the rows big enough for the redo record to span chunks.
                tags: (0..tags).map(|i| format!("tag-{i}")).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Commits `contacts` rows (and removes `c0`'s previous row if asked) under log entry `seq`.
    fn commit_rows(store: &Store, seq: u64, contacts: usize, remove_first: bool) {
        let mut batch = WriteBatch::new();
        batch.append_log(&v1::LogEntry {
            schema_version: LOG_SCHEMA_VERSION,
            seq,
            ..Default::default()
        });
        for i in 0..contacts {
            batch.put_contact(0, &format!("c{i}"), &contact(&format!("c{i}"), 40));
        }
        if remove_first {
            batch.del(keys::contact(0, "c0"));
        }
        batch.set_last_seq(seq);
        store.commit(batch).unwrap();
    }

    /// Freezes the active table and writes only its redo record, as a crash between the
    /// redo record and the end of the checkpoint would leave it.
    fn write_only_the_redo_record(store: &Store) -> u32 {
        let table = {
            let mut layers = store.shared.layers.write().unwrap();
            std::mem::take(&mut layers.active)
        };
        let (_, chunks, _) = store.write_redo_record(&table).unwrap();
        chunks
    }

    fn redo_keys(store: &Store) -> usize {
        store.backend.prefix(&[keys::CHECKPOINT]).count()
    }

    #[test]
    fn a_checkpoint_interrupted_after_its_redo_record_is_finished_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), foreground()).unwrap();
            commit_rows(&store, 1, 3, false);
            store.checkpoint().unwrap();
            assert_eq!(store.checkpoint_seq().unwrap(), 1);
            // A second batch replaces every row and removes one that sled holds.
            commit_rows(&store, 2, 200, true);
            let chunks = write_only_the_redo_record(&store);
            assert!(chunks > 1, "the record should span chunks, got {chunks}");
            // Nothing of the second batch is in sled yet: only its redo record.
            assert!(store.backend.contains(&keys::contact(0, "c0")).unwrap());
            assert!(!store.backend.contains(&keys::contact(0, "c5")).unwrap());
            assert_eq!(store.checkpoint_seq().unwrap(), 1);
            assert_eq!(redo_keys(&store), chunks as usize + 1);
        }
        let store = Store::open(dir.path(), foreground()).unwrap();
        assert_eq!(store.checkpoint_seq().unwrap(), 2);
        assert_eq!(store.applied_seq().unwrap(), 2);
        assert_eq!(
            redo_keys(&store),
            0,
            "the redo record is removed once applied"
        );
        assert!(!store.backend.contains(&keys::contact(0, "c0")).unwrap());
        assert_eq!(
            store.contact(0, "c199").unwrap(),
            Some(contact("c199", 40)),
            "the rows come from sled after the redo"
        );
    }

    fn read_only() -> StoreOptions {
        StoreOptions {
            read_only: true,
            ..foreground()
        }
    }

    /// A read-only open sees an interrupted checkpoint as finished, without writing it: the
    /// redo record stays for the next writable open, and sled is unchanged.
    #[test]
    fn a_read_only_open_reads_an_interrupted_checkpoint_without_finishing_it() {
        let dir = tempfile::tempdir().unwrap();
        let chunks = {
            let store = Store::open(dir.path(), foreground()).unwrap();
            commit_rows(&store, 1, 3, false);
            store.checkpoint().unwrap();
            commit_rows(&store, 2, 200, true);
            write_only_the_redo_record(&store)
        };
        {
            let store = Store::open(dir.path(), read_only()).unwrap();
            assert_eq!(store.applied_seq().unwrap(), 2);
            assert_eq!(store.contact(0, "c0").unwrap(), None, "removed by the redo");
            assert_eq!(store.contact(0, "c199").unwrap(), Some(contact("c199", 40)));
            assert_eq!(store.checkpoint_seq().unwrap(), 1, "sled is not changed");
            assert_eq!(redo_keys(&store), chunks as usize + 1);
        }
        let store = Store::open(dir.path(), foreground()).unwrap();
        assert_eq!(store.checkpoint_seq().unwrap(), 2);
        assert_eq!(redo_keys(&store), 0);
    }

    /// Read-only commits change what reads see, in memory only; writes to sled are refused.
    #[test]
    fn a_read_only_store_commits_in_memory_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), foreground()).unwrap();
            commit_rows(&store, 1, 1, false);
            store.checkpoint().unwrap();
        }
        {
            let store = Store::open(dir.path(), read_only()).unwrap();
            let mut batch = WriteBatch::new();
            batch.put_contact(0, "c7", &contact("c7", 1));
            batch.set_last_seq(1);
            store.commit(batch).unwrap();
            assert_eq!(store.contact(0, "c7").unwrap(), Some(contact("c7", 1)));
            assert!(matches!(store.put_setting("x", 1), Err(Error::ReadOnly)));
            assert!(matches!(store.checkpoint(), Err(Error::ReadOnly)));
            let mut logged = WriteBatch::new();
            logged.append_log(&v1::LogEntry {
                schema_version: LOG_SCHEMA_VERSION,
                seq: 2,
                ..Default::default()
            });
            assert!(matches!(store.commit(logged), Err(Error::ReadOnly)));
        }
        let store = Store::open(dir.path(), foreground()).unwrap();
        assert_eq!(store.contact(0, "c7").unwrap(), None);
        assert_eq!(store.last_seq().unwrap(), 1);
    }

    #[test]
    fn a_redo_record_without_its_header_is_discarded_on_open() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), foreground()).unwrap();
            commit_rows(&store, 1, 200, false);
            let chunks = write_only_the_redo_record(&store);
            // The crash came while the chunks were written: the header is missing.
            store
                .backend
                .apply(&[(keys::checkpoint_header(1), None)], true)
                .unwrap();
            assert_eq!(redo_keys(&store), chunks as usize);
        }
        let store = Store::open(dir.path(), foreground()).unwrap();
        assert_eq!(redo_keys(&store), 0);
        assert_eq!(store.checkpoint_seq().unwrap(), 0);
        assert_eq!(
            store.applied_seq().unwrap(),
            0,
            "the log tail must be applied again"
        );
        assert_eq!(store.contact(0, "c0").unwrap(), None);
        assert_eq!(store.last_seq().unwrap(), 1, "the log itself is durable");
    }

    #[test]
    fn a_redo_record_missing_a_chunk_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path(), foreground()).unwrap();
            commit_rows(&store, 1, 200, false);
            write_only_the_redo_record(&store);
            store
                .backend
                .apply(&[(keys::checkpoint_chunk(1, 1), None)], true)
                .unwrap();
        }
        let err = Store::open(dir.path(), foreground()).unwrap_err();
        assert!(
            err.to_string()
                .contains("chunk 1 of the checkpoint through 1"),
            "{err}"
        );
    }

    #[test]
    fn a_directory_closed_a_moment_ago_opens() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            drop(store);
        }
    }
}
