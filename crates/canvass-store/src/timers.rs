//! Durable timers, in firing order.

use canvass_core::{TimerId, UnixMillis};

use crate::{Error, Result, Store, keys};

impl Store {
    /// The armed timers in (due, id) order, from `from` (inclusive) or from the earliest.
    pub fn timers(
        &self,
        from: Option<(UnixMillis, &TimerId)>,
    ) -> impl Iterator<Item = Result<(UnixMillis, TimerId)>> + '_ {
        let start = match from {
            Some((due, id)) => keys::timer(due, id),
            None => vec![keys::TIMER],
        };
        self.scan(start, vec![keys::TIMER + 1]).map(|kv| {
            let (k, _) = kv?;
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
}
