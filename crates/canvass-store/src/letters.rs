//! Dead letters and the publications waiting for a broker, numbered in order.

use canvass_proto::v1;

use crate::{Result, Store, decode, keys, u64_value};

impl Store {
    /// Dead letters parked so far (they are numbered from 1).
    pub fn dead_letter_count(&self) -> Result<u64> {
        self.last_number(keys::DEAD_LETTER)
    }

    /// The highest number under a namespace keyed by big-endian numbers (0: none).
    pub(crate) fn last_number(&self, namespace: u8) -> Result<u64> {
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

    /// The dead letters with their numbers, oldest first.
    pub fn dead_letters_numbered(&self) -> Result<Vec<(u64, v1::DeadLetter)>> {
        self.backend
            .prefix(&[keys::DEAD_LETTER])
            .map(|kv| {
                let (k, v) = kv?;
                Ok((u64_value(&k[1..]), decode("dead letter", &v)?))
            })
            .collect()
    }

    /// The dead letter numbered `n`, if there is one.
    pub fn dead_letter(&self, n: u64) -> Result<Option<v1::DeadLetter>> {
        self.backend
            .get(&keys::dead_letter(n))?
            .map(|v| decode("dead letter", &v))
            .transpose()
    }

    /// Every dead letter, oldest first.
    pub fn dead_letters(&self) -> Result<Vec<v1::DeadLetter>> {
        self.backend
            .prefix(&[keys::DEAD_LETTER])
            .map(|kv| decode("dead letter", &kv?.1))
            .collect()
    }
}
