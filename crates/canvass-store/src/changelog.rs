//! What a partition ships to its changelog and takes from it: the writes of each commit as
//! they went to sled at once (its log frame, source offsets, dead letters, publications),
//! in commit order. Projections are not shipped: the log rebuilds them, as after a crash
//! (opening a partition applies the log after its checkpoint).
//!
//! Invariant: applying the frames a store shipped, in order, to a copy that held what the
//! store held before the first of them gives the copy the store's log, offsets, dead letters
//! and publications byte for byte.

use std::sync::atomic::Ordering;

use canvass_proto::v1;

use crate::{Result, Store, Write, lock};

impl Store {
    /// Starts (or stops) keeping each commit's writes for [`Store::take_unshipped`].
    pub fn keep_for_shipping(&self, keep: bool) {
        let mut kept = lock(&self.shared.unshipped);
        match (keep, kept.is_some()) {
            (true, false) => *kept = Some(Vec::new()),
            (false, true) => *kept = None,
            _ => {}
        }
    }

    /// The commits written since the last call, in order (with
    /// [`Store::keep_for_shipping`]; none without).
    #[must_use]
    pub fn take_unshipped(&self) -> Vec<v1::CommitFrame> {
        lock(&self.shared.unshipped)
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Whether commits are kept for shipping.
    pub(crate) fn shipping(&self) -> bool {
        lock(&self.shared.unshipped).is_some()
    }

    /// Keeps a commit's writes, once written, for shipping (if asked to).
    pub(crate) fn note_for_shipping(&self, first_seq: u64, last_seq: u64, writes: Vec<Write>) {
        if let Some(kept) = lock(&self.shared.unshipped).as_mut() {
            kept.push(v1::CommitFrame {
                first_seq,
                last_seq,
                writes: writes
                    .into_iter()
                    .map(|(key, value)| v1::StoreWrite { key, value })
                    .collect(),
            });
        }
    }

    /// Applies a frame another store shipped, durably, as that store applied it. The
    /// projections do not follow until the partition is opened again (which applies the log
    /// after its checkpoint).
    ///
    /// # Errors
    /// The store is read-only or its disk failed.
    pub fn apply_shipped(&self, frame: &v1::CommitFrame) -> Result<()> {
        if self.options.read_only {
            return Err(crate::Error::ReadOnly);
        }
        self.check_failed()?;
        let writes: Vec<Write> = frame
            .writes
            .iter()
            .map(|w| (w.key.clone(), w.value.clone()))
            .collect();
        self.write(writes, true)?;
        if frame.last_seq >= frame.first_seq {
            self.shared
                .log_end
                .fetch_max(frame.last_seq, Ordering::SeqCst);
        }
        let commits = self.shared.commits_written.fetch_add(1, Ordering::SeqCst) + 1;
        self.mark_durable(self.shared.log_end.load(Ordering::SeqCst), commits);
        Ok(())
    }
}
