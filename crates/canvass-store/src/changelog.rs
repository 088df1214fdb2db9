//! What a partition ships to its changelog and takes from it: the writes of each commit as
//! they go to sled at once (its log frame, source offsets, dead letters, publications), in
//! commit order, each numbered. Projections are not shipped: the log rebuilds them, as after
//! a crash (opening a partition applies the log after its checkpoint).
//!
//! Invariant: with a [`Shipper`], a commit is shipped before it is written, so what a store
//! holds of its changelog is always a prefix of it: a crash between the two leaves the frame
//! in the changelog only, and the next owner (this one again, or another) takes it from
//! there. Applying the frames in order to a copy that held what the store held before the
//! first of them gives the copy the store's log, offsets, dead letters and publications byte
//! for byte. Where the copy stands (the last frame held, its offset, the epoch it was
//! shipped under, and how far the changelog was read back) is written with each commit
//! (key `F`), so a copy knows where in the changelog to read on from.
//!
//! A snapshot ([`Store::snapshot`], [`Store::load_snapshot`]) is every key of the store once
//! a checkpoint wrote its projections: loading it and applying the frames after it gives the
//! same store as applying every frame from the first.

use std::sync::{Arc, PoisonError, atomic::Ordering};

use canvass_proto::v1;

use crate::{Error, Result, Store, Write, keys, lock, memtable::Layers};

/// Where a partition's commits go before they are written: its changelog.
pub trait Shipper: Send + Sync + std::fmt::Debug {
    /// Makes `frame` durable in the changelog; where it went (its offset there), or why it
    /// could not. Called once per commit, in commit order, before the commit is written.
    ///
    /// # Errors
    /// The changelog did not take the frame (it may hold it nonetheless).
    fn ship(&self, frame: &v1::CommitFrame) -> std::result::Result<u64, String>;

    /// The epoch frames are shipped under now, and how far the changelog has been read back
    /// with nothing in it but this owner's frames since its claim.
    fn standing(&self) -> Standing;
}

/// An owner's standing in its changelog (see [`Shipper::standing`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Standing {
    /// The epoch of the owner's claim (0: no claim made).
    pub epoch: u64,
    /// The changelog offset read back through.
    pub verified: u64,
}

/// Where a store stands in its changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    /// Number of the last frame held (the first is 1; 0: none yet).
    pub frame: u64,
    /// Its offset in the changelog.
    pub offset: u64,
    /// The epoch under which the store last shipped or applied frames (0: before any
    /// claim).
    pub epoch: u64,
    /// The changelog offset through which this copy is known to follow the changelog's
    /// claims: a reader starts after it. Below `offset` when frames were shipped and not
    /// yet read back (they are read again, to tell whether a later claim overtook them).
    pub verified: u64,
}

impl Shipped {
    fn encode(self) -> Vec<u8> {
        [self.frame, self.offset, self.epoch, self.verified]
            .iter()
            .flat_map(|n| n.to_be_bytes())
            .collect()
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let number = |i: usize| {
            bytes
                .get(i * 8..i * 8 + 8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        match (bytes.len(), number(0), number(1), number(2), number(3)) {
            // Written before epochs: no claim had been made, and nothing was read back.
            (16, Some(frame), Some(offset), _, _) => Ok(Self {
                frame,
                offset,
                epoch: 0,
                verified: offset,
            }),
            (32, Some(frame), Some(offset), Some(epoch), Some(verified)) => Ok(Self {
                frame,
                offset,
                epoch,
                verified,
            }),
            _ => Err(Error::CorruptRecord {
                what: "changelog position",
                reason: format!("{} bytes where 32 were expected", bytes.len()),
            }),
        }
    }

    fn write(self) -> Write {
        (vec![keys::SHIPPED], Some(self.encode()))
    }
}

impl Store {
    /// Ships every later commit through `shipper` before it is written (`None`: stops).
    pub fn ship_to(&self, shipper: Option<Arc<dyn Shipper>>) {
        *lock(&self.shared.shipper) = shipper;
    }

    /// Whether commits are shipped.
    #[must_use]
    pub fn is_shipping(&self) -> bool {
        lock(&self.shared.shipper).is_some()
    }

    /// The last changelog frame this store holds (shipped or applied), if any.
    ///
    /// # Errors
    /// The store failed or the position does not decode.
    pub fn shipped(&self) -> Result<Option<Shipped>> {
        self.backend
            .get(&[keys::SHIPPED])?
            .map(|v| Shipped::decode(&v))
            .transpose()
    }

    /// Ships a commit's `writes` (see [`Shipper`]), then adds the new position to them.
    /// A shipper's failure fails this commit and every later one until the store is opened
    /// again: the changelog may hold the frame, so the next frame could not be numbered.
    pub(crate) fn ship(
        &self,
        first_seq: u64,
        last_seq: u64,
        writes: &mut Vec<Write>,
    ) -> Result<()> {
        let Some(shipper) = lock(&self.shared.shipper).clone() else {
            return Ok(());
        };
        let held = self.shipped()?;
        let standing = shipper.standing();
        let frame = v1::CommitFrame {
            first_seq,
            last_seq,
            number: held.map_or(1, |s| s.frame + 1),
            epoch: standing.epoch,
            writes: writes
                .iter()
                .map(|(key, value)| v1::StoreWrite {
                    key: key.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        match shipper.ship(&frame) {
            Ok(offset) => {
                let at = Shipped {
                    frame: frame.number,
                    offset,
                    epoch: standing.epoch,
                    verified: standing
                        .verified
                        .max(held.map_or(0, |h| h.verified))
                        .min(offset),
                };
                writes.push(at.write());
                Ok(())
            }
            Err(why) => {
                let e = Error::Changelog(format!("frame {} was not shipped: {why}", frame.number));
                lock(&self.shared.unshipped).get_or_insert_with(|| e.to_string());
                Err(e)
            }
        }
    }

    /// Applies frame `frame`, read at `offset` of the changelog, durably, as the store that
    /// shipped it applied it; `false` if this store holds it already. The projections do not
    /// follow until the partition is opened again (which applies the log after its
    /// checkpoint).
    ///
    /// # Errors
    /// A frame is missing before it, or its log entries do not follow this copy's log (the
    /// changelog lost frames, or this copy is not one of its prefixes), the store is
    /// read-only or its disk failed.
    pub fn apply_shipped(&self, frame: &v1::CommitFrame, offset: u64) -> Result<bool> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_failed()?;
        let held = self.shipped()?.map_or(0, |s| s.frame);
        if frame.number <= held {
            return Ok(false);
        }
        if frame.number != held + 1 {
            return Err(Error::Changelog(format!(
                "frame {} at offset {offset} follows frame {held}: frames are missing in between",
                frame.number
            )));
        }
        let log_end = self.shared.log_end.load(Ordering::SeqCst);
        if frame.last_seq >= frame.first_seq && frame.first_seq != log_end + 1 {
            return Err(Error::Changelog(format!(
                "frame {} at offset {offset} holds log entries {} to {}, but this copy's log ends at {log_end}: it is not a prefix of the changelog",
                frame.number, frame.first_seq, frame.last_seq
            )));
        }
        let mut writes: Vec<Write> = frame
            .writes
            .iter()
            .map(|w| (w.key.clone(), w.value.clone()))
            .collect();
        writes.push(
            Shipped {
                frame: frame.number,
                offset,
                epoch: frame.epoch,
                verified: offset,
            }
            .write(),
        );
        self.write(writes, true)?;
        if frame.last_seq >= frame.first_seq {
            self.shared
                .log_end
                .fetch_max(frame.last_seq, Ordering::SeqCst);
        }
        let commits = self.shared.commits_written.fetch_add(1, Ordering::SeqCst) + 1;
        self.mark_durable(self.shared.log_end.load(Ordering::SeqCst), commits);
        Ok(true)
    }

    /// Records that the changelog was read through `offset`, where a claim of epoch
    /// `epoch` sits, with every frame before it that counts held here: from now on this
    /// copy follows that claim.
    ///
    /// # Errors
    /// The store is read-only or failed.
    pub fn hold_claim(&self, epoch: u64, offset: u64) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        self.check_failed()?;
        let held = self.shipped()?;
        let at = Shipped {
            frame: held.map_or(0, |h| h.frame),
            offset: held.map_or(offset, |h| h.offset),
            epoch,
            verified: offset,
        };
        // The copy follows its changelog again: a rebuild in progress is over.
        self.write(vec![at.write(), (keys::meta(REBUILDING), None)], true)
    }

    /// Records that the changelog was read back through `verified` with nothing in it but
    /// this store's frames since its claim (kept with the next commit otherwise; this one is
    /// for a clean stop).
    ///
    /// # Errors
    /// The store is read-only or failed.
    pub fn hold_verified(&self, verified: u64) -> Result<()> {
        let Some(held) = self.shipped()? else {
            return Ok(());
        };
        if verified <= held.verified || self.options.read_only {
            return Ok(());
        }
        self.check_failed()?;
        let at = Shipped {
            verified: verified.min(held.offset.max(held.verified)),
            ..held
        };
        self.write(vec![at.write()], true)
    }

    /// Every key and value of the store, once a checkpoint wrote every projection to sled,
    /// in key order, for a snapshot; where it stands in its changelog is not among them
    /// (the snapshot carries it). The caller commits nothing meanwhile.
    ///
    /// # Errors
    /// The checkpoint or a read failed.
    pub fn snapshot(&self) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.checkpoint()?;
        let mut out = Vec::new();
        for kv in self.backend.range(Vec::new(), vec![u8::MAX; 2]) {
            let (k, v) = kv?;
            if kept_by_a_snapshot(&k) {
                out.push((k, v));
            }
        }
        Ok(out)
    }

    /// Removes every key of the partition's state, durably, and forgets what memory held:
    /// the store is as new (a copy that went its own way, about to be rebuilt from its
    /// changelog). The engine's command journal stays (it is this engine's, not the
    /// partition's). A durable mark says a rebuild is in progress until a claim is held
    /// again ([`Store::hold_claim`]): a crash before then leaves a store that opens empty and
    /// is rebuilt again, never a half-removed or half-loaded one taken for a copy.
    ///
    /// # Errors
    /// The store is read-only or its disk failed.
    pub fn reset(&self) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        self.wait_for_checkpoint()?;
        self.write(vec![(keys::meta(REBUILDING), Some(vec![1]))], true)?;
        self.remove_partition_state()
    }

    /// Whether a rebuild ([`Store::reset`]) is in progress.
    ///
    /// # Errors
    /// The store failed.
    pub fn is_rebuilding(&self) -> Result<bool> {
        Ok(self.backend.get(&keys::meta(REBUILDING))?.is_some())
    }

    pub(crate) fn remove_partition_state(&self) -> Result<()> {
        *self
            .shared
            .layers
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Layers::new();
        let mark = keys::meta(REBUILDING);
        loop {
            let mut removals = Vec::new();
            for kv in self.backend.range(Vec::new(), vec![u8::MAX; 2]) {
                let key = kv?.0;
                if key != mark && key.first() != Some(&keys::JOURNAL) {
                    removals.push((key, None));
                    if removals.len() == 10_000 {
                        break;
                    }
                }
            }
            if removals.is_empty() {
                break;
            }
            self.guarded(|| self.backend.apply(&removals, false))?;
        }
        self.guarded(|| self.backend.flush())?;
        self.shared.log_end.store(0, Ordering::SeqCst);
        self.shared.durable_end.store(0, Ordering::SeqCst);
        *lock(&self.shared.unshipped) = None;
        Ok(())
    }

    /// Loads a snapshot's `writes` (one part of it; call once per part) into a store that
    /// [`Store::reset`] emptied, durably.
    ///
    /// # Errors
    /// The store is read-only or its disk failed.
    pub fn load_snapshot_part(&self, writes: Vec<Write>) -> Result<()> {
        if self.options.read_only {
            return Err(Error::ReadOnly);
        }
        self.guarded(|| self.backend.apply(&writes, false))
    }

    /// Finishes loading a snapshot taken at `at`: makes it durable and takes its log end.
    /// The partition's engine must be opened again on it.
    ///
    /// # Errors
    /// The store is read-only, its disk failed, or the log loaded does not decode.
    pub fn finish_snapshot(&self, at: Shipped) -> Result<()> {
        self.write(vec![at.write()], true)?;
        let end = self.find_log_end()?;
        self.shared.log_end.store(end, Ordering::SeqCst);
        self.shared.durable_end.store(end, Ordering::SeqCst);
        Ok(())
    }
}

/// Metadata marking a rebuild in progress (see [`Store::reset`]).
pub(crate) const REBUILDING: &str = "rebuilding";

/// Whether a snapshot carries `key`: the partition's state, not where this copy stands in
/// its changelog, a checkpoint in progress, this engine's command journal, or a rebuild's
/// mark.
fn kept_by_a_snapshot(key: &[u8]) -> bool {
    !matches!(
        key.first(),
        Some(&(keys::SHIPPED | keys::CHECKPOINT | keys::JOURNAL))
    ) && key != keys::meta(REBUILDING).as_slice()
}
