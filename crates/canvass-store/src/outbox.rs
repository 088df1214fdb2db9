//! The outbox: actions not yet delivered, in emission order; what may leave is what a flush
//! made durable.

use canvass_proto::v1;

use crate::{Result, Store, decode, keys, u64_value};

impl Store {
    /// Undelivered actions in emission order, at most `limit`, with their outbox positions.
    pub fn outbox(&self, limit: usize) -> Result<Vec<((u64, u32), v1::Action)>> {
        self.outbox_after(None, limit)
    }

    /// How many actions are undelivered (a scan of the keys).
    pub fn outbox_len(&self) -> Result<u64> {
        Ok(self.outbox_positions()?.len() as u64)
    }

    /// The outbox positions of the undelivered actions, in emission order (a scan of the
    /// keys; the actions are not decoded).
    pub fn outbox_positions(&self) -> Result<Vec<(u64, u32)>> {
        let mut out = Vec::new();
        for kv in self.scan(vec![keys::OUTBOX], vec![keys::OUTBOX + 1]) {
            let (k, _) = kv?;
            let seq = u64_value(&k[1..9]);
            let index = k[9..13].try_into().map(u32::from_be_bytes).unwrap_or(0);
            out.push((seq, index));
        }
        Ok(out)
    }

    /// Whether the action at an outbox position is still undelivered.
    pub fn outbox_holds(&self, (seq, index): (u64, u32)) -> Result<bool> {
        Ok(self.get_raw(&keys::outbox(seq, index))?.is_some())
    }

    /// The undelivered action at an outbox position, if it is still there.
    pub fn outbox_action(&self, (seq, index): (u64, u32)) -> Result<Option<v1::Action>> {
        self.get_raw(&keys::outbox(seq, index))?
            .map(|v| decode("outbox action", &v))
            .transpose()
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
}
