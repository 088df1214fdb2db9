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
//!
//! Modules, one per table or concern: `log`, `contacts` (states and the group index),
//! `timers`, `outbox`, `campaigns` (specs, lifecycles, counters, policy, sweeps), `letters`
//! (dead letters, publications), `commit` (the batch and its durability), `changelog` (each
//! commit's writes kept for shipping, and applied on another copy), `checkpoint`,
//! `keys` (the key layout), `memtable` (the in-memory layers), `backend` (sled or memory),
//! `layout` (a data directory's partitions).

mod backend;
mod campaigns;
mod changelog;
mod checkpoint;
mod commit;
mod contacts;
mod journal;
mod keys;
pub mod layout;
mod letters;
mod log;
mod memtable;
pub mod metrics;
mod outbox;
mod timers;

use backend::Backend;
pub use changelog::{Shipped, Shipper, Standing};
pub use commit::WriteBatch;
pub use keys::EMBEDDED_PARTITION;
pub use layout::{Layout, Stores, Wanted};
use memtable::{Layers, Scan};
use prost::Message;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

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
    /// The partition's changelog did not take a commit, or what it holds cannot follow
    /// this copy.
    #[error("changelog: {0}")]
    Changelog(String),
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
    recorded: Mutex<Vec<Recorded>>,
    checkpointer: Mutex<Option<std::thread::JoinHandle<Result<()>>>>,
    /// Why a background checkpoint failed, if one did.
    failed: Mutex<Option<String>>,
    /// Why a write to sled failed, if one did: from then on nothing is written, and sled is
    /// never dropped (its drop flushes, and on a full disk that flush blocks for good).
    halted: Mutex<Option<String>>,
    /// Where commits are shipped before they are written (see [`changelog`]).
    shipper: Mutex<Option<Arc<dyn Shipper>>>,
    /// Why a commit could not be shipped, if one could not: from then on nothing is
    /// written until the store is opened again.
    unshipped: Mutex<Option<String>>,
}

/// One write of a batch: a key and its new value, or `None` for a removal.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

/// One batch as it was applied to sled (with `record_writes`): its writes, and whether a
/// flush followed it. The benchmarks replay these on raw sled.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The batch's writes, applied atomically.
    pub writes: Vec<Write>,
    /// A flush followed the batch.
    pub flushed: bool,
}

pub(crate) fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::CorruptRecord {
        what,
        reason: e.to_string(),
    })
}

pub(crate) fn u64_value(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

/// Tells how long the oldest write to sled in progress has been running: sled can block
/// without an error when the disk fills, so the process watches this and stops when it grows
/// too long. Made before the store is opened (and given in [`StoreOptions::stall_watch`]), so
/// that the writes `Store::open` itself makes are watched too; it does not keep sled open.
#[derive(Debug, Clone, Default)]
pub struct StallWatch(Arc<Writes>);

#[derive(Debug, Default)]
pub(crate) struct Writes {
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

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
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

    pub(crate) fn on(backend: Backend, options: StoreOptions) -> Result<Self> {
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
                shipper: Mutex::default(),
                unshipped: Mutex::default(),
            }),
        };
        if store.options.read_only {
            store.read_interrupted_checkpoint()?;
        } else if store.is_rebuilding()? {
            // A rebuild a crash interrupted: the store holds part of a state; it opens
            // empty and its changelog rebuilds it again.
            store.remove_partition_state()?;
        } else {
            store.guarded(|| store.finish_interrupted_checkpoint())?;
        }
        let end = store.find_log_end()?;
        store.shared.log_end.store(end, Ordering::SeqCst);
        // What a crash left in the files is what a later flush would have made durable.
        store.shared.durable_end.store(end, Ordering::SeqCst);
        Ok(store)
    }

    pub(crate) fn layers(&self) -> Layers {
        self.shared
            .layers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn get_raw(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.layers().get(key) {
            Some(v) => Ok(v),
            None => self.backend.get(key),
        }
    }

    pub(crate) fn get<M: Message + Default>(
        &self,
        what: &'static str,
        key: &[u8],
    ) -> Result<Option<M>> {
        match self.get_raw(key)? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    /// The keys from `start` (inclusive) to `end` (exclusive), memory and sled together.
    pub(crate) fn scan(&self, start: Vec<u8>, end: Vec<u8>) -> Scan {
        Scan::new(&self.layers(), &self.backend, start, end)
    }

    pub(crate) fn scan_prefix(&self, prefix: Vec<u8>) -> Scan {
        let end = prefix_end(&prefix);
        self.scan(prefix, end)
    }

    pub(crate) fn meta(&self, name: &str) -> Result<u64> {
        Ok(self.meta_value(name)?.unwrap_or(0))
    }

    pub(crate) fn meta_value(&self, name: &str) -> Result<Option<u64>> {
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

    /// The offset to resume `source` from.
    pub fn offset(&self, source: &str) -> Result<Option<u64>> {
        Ok(self
            .backend
            .get(&keys::offset(source))?
            .map(|v| u64_value(&v)))
    }

    /// Takes no more writes after `e`, and keeps sled from being dropped (see `halted`).
    pub(crate) fn halt(&self, e: &Error) {
        if e.is_storage() {
            lock(&self.shared.halted).get_or_insert_with(|| e.to_string());
        }
    }

    /// Runs a write to sled: refused once the store halted or if it is read-only, watched
    /// while it runs, and halting the store if it fails.
    pub(crate) fn guarded<T>(&self, write: impl FnOnce() -> Result<T>) -> Result<T> {
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

    pub(crate) fn check_failed(&self) -> Result<()> {
        if let Some(reason) = lock(&self.shared.failed).as_ref() {
            return Err(Error::CheckpointFailed(reason.clone()));
        }
        match lock(&self.shared.unshipped).as_ref() {
            Some(reason) => Err(Error::Changelog(reason.clone())),
            None => Ok(()),
        }
    }

    /// Opened to read only.
    #[must_use]
    pub fn is_read_only(&self) -> bool {
        self.options.read_only
    }

    /// The batches written to sled since the last call (with `record_writes`).
    pub fn take_recorded(&self) -> Vec<Recorded> {
        std::mem::take(&mut *lock(&self.shared.recorded))
    }

    /// Bytes the database takes on disk (in memory: the bytes of its keys and values).
    pub fn size_on_disk(&self) -> Result<u64> {
        self.backend.size()
    }
}

pub(crate) fn utf8(what: &'static str, bytes: &[u8]) -> Result<String> {
    String::from_utf8(bytes.to_vec()).map_err(|e| Error::CorruptRecord {
        what,
        reason: e.to_string(),
    })
}

/// The first key after every key starting with `prefix`.
pub(crate) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    vec![u8::MAX; prefix.len() + 1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use canvass_proto::v1;

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
