//! The canvass store: the event log and everything derived from it, over sled.
//!
//! Architecture invariant: nothing outside this crate names sled. Every write goes through a
//! [`WriteBatch`] applied by [`Store::commit`] in one atomic sled batch, followed (by default)
//! by a flush to disk before `commit` returns: nothing may become visible outside the engine
//! (an action, an offset, an answer) before the batch that caused it is durable.

mod keys;

use std::path::Path;

use canvass_core::{TimerId, UnixMillis};
use canvass_proto::v1;
use prost::Message;

pub use keys::EMBEDDED_PARTITION;

/// The log envelope version this build writes and reads.
pub const LOG_SCHEMA_VERSION: u32 = 1;

/// Storage failures. Each names what it was doing; none is retried here.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk or sled failed (full disk, I/O error, corruption found by sled).
    #[error("storage failed: {0}")]
    Storage(#[from] sled::Error),
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
    /// Keep a copy of every committed batch (for benchmarks that replay the same writes
    /// against raw sled).
    pub record_writes: bool,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            cache_capacity: 64 * 1024 * 1024,
            flush_on_commit: true,
            record_writes: false,
        }
    }
}

/// The store. Cheap to clone: clones share the same database.
#[derive(Debug, Clone)]
pub struct Store {
    db: sled::Db,
    options: StoreOptions,
    recorded: std::sync::Arc<std::sync::Mutex<Vec<Vec<Write>>>>,
}

/// One write of a batch: a key and its new value, or `None` for a removal.
pub type Write = (Vec<u8>, Option<Vec<u8>>);

const LAST_SEQ: &str = "last_seq";

fn decode<M: Message + Default>(what: &'static str, bytes: &[u8]) -> Result<M> {
    M::decode(bytes).map_err(|e| Error::CorruptRecord {
        what,
        reason: e.to_string(),
    })
}

fn u64_value(bytes: &[u8]) -> u64 {
    bytes.try_into().map(u64::from_be_bytes).unwrap_or(0)
}

impl Store {
    /// Opens (or creates) the store in `dir`.
    ///
    /// sled locks the directory; a handle closed a moment ago may still hold the lock while
    /// its threads wind down, so a lock conflict is retried for up to [`LOCK_WAIT`] before it
    /// is reported as [`Error::InUse`].
    pub fn open(dir: &Path, options: StoreOptions) -> Result<Self> {
        let started = std::time::Instant::now();
        let db = loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(options.cache_capacity)
                // Commits flush explicitly; the background flusher would only add I/O.
                .flush_every_ms(None)
                .open();
            match opened {
                Ok(db) => break db,
                Err(e) if e.to_string().contains("could not acquire lock") => {
                    if started.elapsed() >= LOCK_WAIT {
                        return Err(Error::InUse(dir.display().to_string()));
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Self {
            db,
            options,
            recorded: std::sync::Arc::default(),
        })
    }

    fn get<M: Message + Default>(&self, what: &'static str, key: &[u8]) -> Result<Option<M>> {
        match self.db.get(key)? {
            Some(v) => decode(what, &v).map(Some),
            None => Ok(None),
        }
    }

    fn meta(&self, name: &str) -> Result<u64> {
        Ok(self.db.get(keys::meta(name))?.map_or(0, |v| u64_value(&v)))
    }

    /// Sequence number of the last log entry (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64> {
        self.meta(LAST_SEQ)
    }

    /// Dead letters parked so far (they are numbered from 1).
    pub fn dead_letter_count(&self) -> Result<u64> {
        Ok(self
            .db
            .scan_prefix([keys::DEAD_LETTER])
            .keys()
            .next_back()
            .transpose()?
            .map_or(0, |k| u64_value(&k[1..])))
    }

    /// A contact's state.
    pub fn contact(&self, partition: u16, id: &str) -> Result<Option<v1::ContactState>> {
        self.get("contact state", &keys::contact(partition, id))
    }

    /// Every contact id of a partition, in id order.
    pub fn contact_ids(&self, partition: u16) -> impl Iterator<Item = Result<String>> + '_ {
        let prefix = keys::contact(partition, "");
        let skip = prefix.len();
        self.db.scan_prefix(prefix).keys().map(move |k| {
            let k = k?;
            String::from_utf8(k[skip..].to_vec()).map_err(|e| Error::CorruptRecord {
                what: "contact key",
                reason: e.to_string(),
            })
        })
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
        let prefix = keys::group_prefix(campaign, group);
        let skip = prefix.len();
        self.db.scan_prefix(prefix).keys().map(move |k| {
            let k = k?;
            String::from_utf8(k[skip..].to_vec()).map_err(|e| Error::CorruptRecord {
                what: "group key",
                reason: e.to_string(),
            })
        })
    }

    /// The offset to resume `source` from.
    pub fn offset(&self, source: &str) -> Result<Option<u64>> {
        Ok(self.db.get(keys::offset(source))?.map(|v| u64_value(&v)))
    }

    /// Whether an event with this id was applied (within the retention window).
    pub fn seen_event(&self, id: &str) -> Result<bool> {
        Ok(self.db.contains_key(keys::dedupe(id))?)
    }

    /// Remembered event ids seen before `before`, oldest first, from `from` (inclusive).
    pub fn events_seen_before(
        &self,
        before: UnixMillis,
        from: Option<(UnixMillis, &str)>,
    ) -> impl Iterator<Item = Result<(UnixMillis, String)>> + '_ {
        let mut end = vec![keys::DEDUPE_BY_TIME];
        end.extend_from_slice(&keys::time(before));
        let start = match from {
            Some((at, id)) => keys::dedupe_by_time(at, id),
            None => vec![keys::DEDUPE_BY_TIME],
        };
        self.db.range(start..end).keys().map(|k| {
            let k = k?;
            let at = keys::time_from(&k[1..]).unwrap_or_default();
            Ok((at, String::from_utf8_lossy(&k[9..]).into_owned()))
        })
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
        self.db.range(start..vec![keys::TIMER + 1]).keys().map(|k| {
            let k = k?;
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
        let mut out = Vec::new();
        for kv in self.db.scan_prefix([keys::OUTBOX]).take(limit) {
            let (k, v) = kv?;
            let seq = u64_value(&k[1..9]);
            let index = k[9..13].try_into().map(u32::from_be_bytes).unwrap_or(0);
            out.push(((seq, index), decode("outbox action", &v)?));
        }
        Ok(out)
    }

    /// Every campaign spec version loaded, by campaign id then version.
    pub fn specs(&self) -> Result<Vec<v1::CampaignSpec>> {
        self.db
            .scan_prefix([keys::SPEC])
            .values()
            .map(|v| decode("campaign spec", &v?))
            .collect()
    }

    /// Every campaign's lifecycle, by campaign id.
    pub fn lifecycles(&self) -> Result<Vec<v1::CampaignLifecycle>> {
        self.db
            .scan_prefix([keys::LIFECYCLE])
            .values()
            .map(|v| decode("campaign lifecycle", &v?))
            .collect()
    }

    /// One campaign's lifecycle.
    pub fn lifecycle(&self, campaign: &str) -> Result<Option<v1::CampaignLifecycle>> {
        self.get("campaign lifecycle", &keys::lifecycle(campaign))
    }

    /// The dead letters, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<v1::DeadLetter>> {
        self.db
            .scan_prefix([keys::DEAD_LETTER])
            .values()
            .map(|v| decode("dead letter", &v?))
            .collect()
    }

    /// The log from `from` (inclusive), checked: sequence numbers without gaps, known schema
    /// version, decodable entries. A bad entry is an error naming its sequence number.
    pub fn log_from(&self, from: u64) -> impl Iterator<Item = Result<v1::LogEntry>> + '_ {
        let mut expected = from.max(1);
        self.db
            .range(keys::log(from)..keys::log(u64::MAX))
            .map(move |kv| {
                let (k, v) = kv?;
                let seq = u64_value(&k[1..]);
                if seq != expected {
                    return Err(Error::CorruptLog {
                        seq: expected,
                        reason: format!("missing (next entry is {seq})"),
                    });
                }
                expected += 1;
                let entry: v1::LogEntry =
                    v1::LogEntry::decode(v.as_ref()).map_err(|e| Error::CorruptLog {
                        seq,
                        reason: format!("does not decode: {e}"),
                    })?;
                if entry.schema_version != LOG_SCHEMA_VERSION {
                    return Err(Error::UnknownLogVersion {
                        seq,
                        version: entry.schema_version,
                    });
                }
                if entry.seq != seq {
                    return Err(Error::CorruptLog {
                        seq,
                        reason: format!("envelope says seq {}", entry.seq),
                    });
                }
                Ok(entry)
            })
    }

    /// Every key and value of the projections (everything but the log and dead letters), in
    /// key order: what replay must rebuild byte for byte.
    pub fn projection_dump(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut out = Vec::new();
        for ns in keys::PROJECTIONS {
            for kv in self.db.scan_prefix([ns]) {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
        }
        out.sort();
        Ok(out)
    }

    /// Deletes every projection (not the log, not the dead letters), durably.
    pub fn clear_projections(&self) -> Result<()> {
        for ns in keys::PROJECTIONS {
            loop {
                let mut batch = sled::Batch::default();
                let mut n = 0;
                for k in self.db.scan_prefix([ns]).keys().take(10_000) {
                    batch.remove(k?);
                    n += 1;
                }
                if n == 0 {
                    break;
                }
                self.db.apply_batch(batch)?;
            }
        }
        self.db.flush()?;
        Ok(())
    }

    /// Applies a batch atomically and, unless turned off, flushes it to disk.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        if batch.writes.is_empty() {
            return Ok(());
        }
        let mut sled_batch = sled::Batch::default();
        for (k, v) in &batch.writes {
            match v {
                Some(v) => sled_batch.insert(k.as_slice(), v.as_slice()),
                None => sled_batch.remove(k.as_slice()),
            }
        }
        self.db.apply_batch(sled_batch)?;
        if self.options.flush_on_commit {
            self.db.flush()?;
        }
        if self.options.record_writes
            && let Ok(mut recorded) = self.recorded.lock()
        {
            recorded.push(batch.writes);
        }
        Ok(())
    }

    /// The batches committed since the last call (with `record_writes`).
    pub fn take_recorded(&self) -> Vec<Vec<Write>> {
        self.recorded
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default()
    }

    /// Bytes the database takes on disk.
    pub fn size_on_disk(&self) -> Result<u64> {
        Ok(self.db.size_on_disk()?)
    }
}

/// Writes to apply together. Nothing is visible until [`Store::commit`].
#[derive(Debug, Default)]
pub struct WriteBatch {
    writes: Vec<Write>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes in the batch.
    #[must_use]
    pub fn len(&self) -> usize {
        self.writes.len()
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.writes.is_empty()
    }

    fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.writes.push((key, Some(value)));
    }

    fn del(&mut self, key: Vec<u8>) {
        self.writes.push((key, None));
    }

    /// Appends a log entry (its `seq` must follow the last one). The last entry applied is
    /// recorded once per batch with [`WriteBatch::set_last_seq`].
    pub fn append_log(&mut self, entry: &v1::LogEntry) {
        self.put(keys::log(entry.seq), entry.encode_to_vec());
    }

    /// Records the last log entry applied to the projections.
    pub fn set_last_seq(&mut self, seq: u64) {
        self.put(keys::meta(LAST_SEQ), seq.to_be_bytes().to_vec());
    }

    /// Stores a contact's state.
    pub fn put_contact(&mut self, partition: u16, state: &v1::ContactState) {
        let id = state.contact.as_ref().map_or("", |c| c.id.as_str());
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

    /// Remembers an event id, seen at `at`.
    pub fn remember_event(&mut self, id: &str, at: UnixMillis) {
        self.put(keys::dedupe(id), keys::time(at).to_vec());
        self.put(keys::dedupe_by_time(at, id), Vec::new());
    }

    /// Forgets an event id (its retention window has passed).
    pub fn forget_event(&mut self, id: &str, at: UnixMillis) {
        self.del(keys::dedupe(id));
        self.del(keys::dedupe_by_time(at, id));
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

    /// Parks a dead letter as number `n` (numbers follow [`Store::dead_letter_count`]).
    pub fn put_dead_letter(&mut self, n: u64, letter: &v1::DeadLetter) {
        self.put(keys::dead_letter(n), letter.encode_to_vec());
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

    #[test]
    fn a_directory_closed_a_moment_ago_opens() {
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..20 {
            let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
            drop(store);
        }
    }
}
