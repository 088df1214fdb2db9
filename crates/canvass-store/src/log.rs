//! The log: entries in frames of consecutive sequence numbers, read from any entry.

use std::sync::atomic::Ordering;

use canvass_core::UnixMillis;
use canvass_proto::v1;
use prost::Message;

use crate::{Error, LOG_SCHEMA_VERSION, Result, Store, Write, backend, keys, u64_value};

impl Store {
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

    pub(crate) fn find_log_end(&self) -> Result<u64> {
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
}

pub(crate) const FRAME_BYTES: usize = 16 * 1024;

/// Walks the log frame by frame, entry by entry.
pub(crate) struct LogIter {
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
pub(crate) fn frames(first: u64, entries: Vec<Vec<u8>>) -> Vec<Write> {
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
