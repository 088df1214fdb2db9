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
//! for byte. The frame number and the changelog offset of the last frame held are written
//! with each commit (key `F`), so a copy knows where in the changelog it stands.

use std::sync::{Arc, atomic::Ordering};

use canvass_proto::v1;

use crate::{Error, Result, Store, Write, keys, lock};

/// Where a partition's commits go before they are written: its changelog.
pub trait Shipper: Send + Sync + std::fmt::Debug {
    /// Makes `frame` durable in the changelog; where it went (its offset there), or why it
    /// could not. Called once per commit, in commit order, before the commit is written.
    ///
    /// # Errors
    /// The changelog did not take the frame (it may hold it nonetheless).
    fn ship(&self, frame: &v1::CommitFrame) -> std::result::Result<u64, String>;
}

/// The last changelog frame a store holds: its number and where it sits in the changelog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shipped {
    /// Frame number (the first is 1).
    pub frame: u64,
    /// Its offset in the changelog.
    pub offset: u64,
}

impl Shipped {
    fn encode(self) -> Vec<u8> {
        let mut v = self.frame.to_be_bytes().to_vec();
        v.extend_from_slice(&self.offset.to_be_bytes());
        v
    }

    fn decode(bytes: &[u8]) -> Result<Self> {
        let number = |range: std::ops::Range<usize>| {
            bytes
                .get(range)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
        };
        match (number(0..8), number(8..16)) {
            (Some(frame), Some(offset)) if bytes.len() == 16 => Ok(Self { frame, offset }),
            _ => Err(Error::CorruptRecord {
                what: "changelog position",
                reason: format!("{} bytes where 16 were expected", bytes.len()),
            }),
        }
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
        let frame = v1::CommitFrame {
            first_seq,
            last_seq,
            number: self.shipped()?.map_or(1, |s| s.frame + 1),
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
                };
                writes.push((vec![keys::SHIPPED], Some(at.encode())));
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
        let at = Shipped {
            frame: frame.number,
            offset,
        };
        writes.push((vec![keys::SHIPPED], Some(at.encode())));
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
}
