//! The ordered key-value space a store keeps its tables in: sled on disk, or a sorted map
//! in memory (simulations, previews, tests). Everything above this module is the same code
//! for both, and the conformance suite (`tests/conformance.rs`) runs on both.
//!
//! Invariant: `apply` is atomic (all of a batch's writes or none, even across a crash for
//! sled) and, with `flush`, durable when it returns.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

use crate::{Error, LOCK_WAIT, Result, Write};

/// A key and its value as read.
pub(crate) type Kv = (Vec<u8>, Vec<u8>);

/// Keys from a start (inclusive) to an end (exclusive), in order from either end.
pub(crate) type KvIter = Box<dyn DoubleEndedIterator<Item = Result<Kv>>>;

/// Where a store's keys live.
#[derive(Debug, Clone)]
pub(crate) enum Backend {
    /// A sled database in a directory.
    Sled(sled::Db),
    /// A sorted map, gone with the process.
    Memory(Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>),
}

impl Backend {
    /// Opens (or creates) a sled database in `dir`. sled locks the directory; a handle
    /// closed a moment ago may still hold the lock while its threads wind down, so a lock
    /// conflict is retried for up to [`LOCK_WAIT`] before it is reported as
    /// [`Error::InUse`].
    pub(crate) fn open_sled(dir: &Path, cache_capacity: u64) -> Result<Self> {
        let started = std::time::Instant::now();
        loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(cache_capacity)
                // Commits flush explicitly; the background flusher would only add I/O.
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => return Ok(Self::Sled(db)),
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(Error::InUse(dir.display().to_string()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// An empty space in memory.
    pub(crate) fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self {
            Self::Sled(db) => Ok(db.get(key)?.map(|v| v.to_vec())),
            Self::Memory(map) => Ok(read(map).get(key).cloned()),
        }
    }

    pub(crate) fn contains(&self, key: &[u8]) -> Result<bool> {
        match self {
            Self::Sled(db) => Ok(db.contains_key(key)?),
            Self::Memory(map) => Ok(read(map).contains_key(key)),
        }
    }

    /// The keys from `start` (inclusive) to `end` (exclusive).
    pub(crate) fn range(&self, start: Vec<u8>, end: Vec<u8>) -> KvIter {
        match self {
            Self::Sled(db) => Box::new(
                db.range(start..end)
                    .map(|kv| Ok(kv.map(|(k, v)| (k.to_vec(), v.to_vec()))?)),
            ),
            Self::Memory(map) => Box::new(MemoryRange {
                map: Arc::clone(map),
                front: Bound::Included(start),
                back: Bound::Excluded(end),
            }),
        }
    }

    /// The keys starting with `prefix`.
    pub(crate) fn prefix(&self, prefix: &[u8]) -> KvIter {
        self.range(prefix.to_vec(), crate::prefix_end(prefix))
    }

    /// The last key at or before `key` and at or after `floor`, if any.
    pub(crate) fn last_at_or_before(&self, floor: &[u8], key: &[u8]) -> Result<Option<Vec<u8>>> {
        let mut end = key.to_vec();
        end.push(0);
        self.range(floor.to_vec(), end)
            .next_back()
            .transpose()
            .map(|kv| kv.map(|(k, _)| k))
    }

    /// Makes every batch applied so far durable.
    pub(crate) fn flush(&self) -> Result<()> {
        match self {
            Self::Sled(db) => {
                timed_flush(db)?;
                Ok(())
            }
            Self::Memory(_) => Ok(()),
        }
    }

    /// Applies `writes` atomically; with `flush`, durably before returning.
    pub(crate) fn apply(&self, writes: &[Write], flush: bool) -> Result<()> {
        match self {
            Self::Sled(db) => {
                let mut batch = sled::Batch::default();
                for (k, v) in writes {
                    match v {
                        Some(v) => batch.insert(k.as_slice(), v.as_slice()),
                        None => batch.remove(k.as_slice()),
                    }
                }
                db.apply_batch(batch)?;
                if flush {
                    timed_flush(db)?;
                }
                Ok(())
            }
            Self::Memory(map) => {
                let mut map = map.write().unwrap_or_else(PoisonError::into_inner);
                for (k, v) in writes {
                    match v {
                        Some(v) => map.insert(k.clone(), v.clone()),
                        None => map.remove(k),
                    };
                }
                Ok(())
            }
        }
    }

    /// Bytes the space takes: on disk for sled, keys and values for memory.
    pub(crate) fn size(&self) -> Result<u64> {
        match self {
            Self::Sled(db) => Ok(db.size_on_disk()?),
            Self::Memory(map) => Ok(read(map)
                .iter()
                .map(|(k, v)| (k.len() + v.len()) as u64)
                .sum()),
        }
    }

    /// Keeps sled from ever being dropped (see `Store`'s `Drop`).
    pub(crate) fn leak(&self) {
        if let Self::Sled(db) = self {
            std::mem::forget(db.clone());
        }
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

/// A range of the map read one key at a time, each under a short read lock: writes may
/// come between steps (as with sled's iterators), and each key is seen at most once.
struct MemoryRange {
    map: Arc<RwLock<BTreeMap<Vec<u8>, Vec<u8>>>>,
    front: Bound<Vec<u8>>,
    back: Bound<Vec<u8>>,
}

impl MemoryRange {
    fn bounds(&self) -> (Bound<&[u8]>, Bound<&[u8]>) {
        (
            self.front.as_ref().map(Vec::as_slice),
            self.back.as_ref().map(Vec::as_slice),
        )
    }

    fn empty(&self) -> bool {
        match (&self.front, &self.back) {
            (Bound::Included(a), Bound::Excluded(b))
            | (Bound::Excluded(a), Bound::Excluded(b) | Bound::Included(b)) => a >= b,
            (Bound::Included(a), Bound::Included(b)) => a > b,
            _ => false,
        }
    }
}

impl Iterator for MemoryRange {
    type Item = Result<Kv>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.empty() {
            return None;
        }
        let found = read(&self.map)
            .range::<[u8], _>(self.bounds())
            .next()
            .map(|(k, v)| (k.clone(), v.clone()))?;
        self.front = Bound::Excluded(found.0.clone());
        Some(Ok(found))
    }
}

impl DoubleEndedIterator for MemoryRange {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.empty() {
            return None;
        }
        let found = read(&self.map)
            .range::<[u8], _>(self.bounds())
            .next_back()
            .map(|(k, v)| (k.clone(), v.clone()))?;
        self.back = Bound::Excluded(found.0.clone());
        Some(Ok(found))
    }
}

/// Flushes sled, recording how long the disk took.
fn timed_flush(db: &sled::Db) -> sled::Result<usize> {
    let started = std::time::Instant::now();
    let flushed = db.flush();
    metrics::histogram!(crate::metrics::FLUSH_SECONDS).record(started.elapsed().as_secs_f64());
    flushed
}
