//! Checkpoints: the projection changes held in memory written to sled atomically (a redo
//! record makes a sliced write atomic), finishing one a crash interrupted; and the
//! projections as a whole (dumped, cleared for a replay).

use std::sync::{Arc, PoisonError};

use crate::{
    Error, Result, Store, Write, keys, lock,
    memtable::{Layers, Memtable},
    u64_value,
};

impl Store {
    /// The last log entry whose effects the projections in sled include: a restart applies
    /// the log after it again.
    pub fn checkpoint_seq(&self) -> Result<u64> {
        self.meta(CHECKPOINT_SEQ)
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
    pub(crate) fn clear_projections_in_sled(&self) -> Result<()> {
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

    pub(crate) fn wait_for_checkpoint(&self) -> Result<()> {
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
    pub(crate) fn start_checkpoint(&self, how: Checkpoint) -> Result<()> {
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
            let started = std::time::Instant::now();
            let result = match how {
                Checkpoint::Sliced => store.write_checkpoint(&frozen),
                Checkpoint::Whole => store.write_checkpoint_whole(&frozen),
            };
            metrics::histogram!(crate::metrics::CHECKPOINT_SECONDS)
                .record(started.elapsed().as_secs_f64());
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
    pub(crate) fn write_checkpoint(&self, table: &Memtable) -> Result<()> {
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
    pub(crate) fn write_checkpoint_whole(&self, table: &Memtable) -> Result<()> {
        let mut writes = self.checkpoint_writes(table)?;
        writes.push((
            keys::meta(CHECKPOINT_SEQ),
            Some(table.through().to_be_bytes().to_vec()),
        ));
        self.write(writes, true)
    }

    /// A table's writes, less the removals of keys sled never had (no write at all).
    pub(crate) fn checkpoint_writes(&self, table: &Memtable) -> Result<Vec<Write>> {
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
    pub(crate) fn write_redo_record(&self, table: &Memtable) -> Result<(u64, u32, Vec<Write>)> {
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
    pub(crate) fn read_interrupted_checkpoint(&self) -> Result<()> {
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
    pub(crate) fn interrupted_checkpoint(&self) -> Result<Interrupted> {
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
    pub(crate) fn finish_interrupted_checkpoint(&self) -> Result<()> {
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
}

/// How a checkpoint goes to sled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Checkpoint {
    /// In slices beside running commits, made atomic by a redo record written first.
    Sliced,
    /// In one batch, while the caller waits.
    Whole,
}

/// The last log entry the projections in sled include.
pub(crate) const CHECKPOINT_SEQ: &str = "checkpoint_seq";

/// Writes per sled batch when a checkpoint is applied: sled holds one lock per batch, and
/// commits wait for it.
pub(crate) const CHECKPOINT_SLICE: usize = 64;

/// Bytes per stored chunk of a checkpoint's redo record, and the most a log frame holds
/// (unless one entry is larger). sled rewrites a whole node when it splits or consolidates
/// one, and writes a node over a quarter of a segment (128 KiB by default) to a file of its
/// own: values kept well under that keep those rewrites cheap.
pub(crate) const CHECKPOINT_CHUNK: usize = 16 * 1024;

/// What a crash left of a checkpoint in progress.
pub(crate) enum Interrupted {
    /// A complete redo record: the last log entry it covers, its chunks and its bytes.
    Complete {
        through: u64,
        chunks: u32,
        record: Vec<u8>,
    },
    /// Chunks written before the record's header (none if no checkpoint was in progress).
    Stale(Vec<Write>),
}

/// The writes that end a checkpoint: its mark, and its redo record removed.
pub(crate) fn finish_checkpoint(through: u64, chunks: u32) -> Vec<Write> {
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
pub(crate) fn encode_writes(writes: &[Write]) -> Vec<u8> {
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

pub(crate) fn decode_writes(mut bytes: &[u8]) -> Result<Vec<Write>> {
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
