//! Projection changes held in memory until a checkpoint writes them to sled, and reads that
//! see them on top of what sled holds.
//!
//! The log is what makes a commit durable; the projections are a function of the log, so
//! their writes can wait: several changes of one key between checkpoints reach sled once,
//! and a key created and removed in between (a timer armed then cancelled, an action queued
//! then delivered) never reaches it. Reads look in the active table, then in the table being
//! checkpointed, then in sled: the newest layer holding a key wins, and a removal (`None`)
//! hides what lies below it.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use crate::{Result, Write};

/// Changes to projection keys since the last checkpoint: a value, or `None` for a removal.
#[derive(Debug, Default)]
pub(crate) struct Memtable {
    map: RwLock<BTreeMap<Vec<u8>, Slot>>,
    /// Bytes written into the table (keys and values, overwrites included): its bound.
    bytes: AtomicUsize,
    /// Log entries applied into the table.
    entries: AtomicU64,
    /// The last log entry whose changes the table holds (0: none).
    through: AtomicU64,
}

#[derive(Debug, Clone)]
struct Slot {
    value: Option<Vec<u8>>,
    /// Whether no older layer holds the key: removing a fresh key leaves nothing to hide,
    /// so the slot goes (a timer armed and cancelled, an action queued and delivered,
    /// between checkpoints). `None` until a removal needs to know: most keys are never
    /// removed, and asking sled for each new key cost more than the rest of the table.
    fresh: Option<bool>,
}

impl Memtable {
    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key)
            .map(|s| s.value.clone())
    }

    /// Applies writes; `held_below` tells whether an older layer (or sled) holds a key. What
    /// the layers below hold does not change while this table is active (the table being
    /// checkpointed moves into sled, unchanged), so the answer may be sought late.
    pub(crate) fn apply(
        &self,
        writes: Vec<Write>,
        first: u64,
        through: Option<u64>,
        held_below: &dyn Fn(&[u8]) -> Result<bool>,
    ) -> Result<()> {
        let mut map = self.map.write().unwrap_or_else(PoisonError::into_inner);
        let mut bytes = 0;
        for (k, value) in writes {
            bytes += k.len() + value.as_ref().map_or(0, Vec::len);
            let Some(slot) = map.get_mut(&k) else {
                match value {
                    Some(value) => {
                        let slot = Slot {
                            value: Some(value),
                            fresh: None,
                        };
                        map.insert(k, slot);
                    }
                    None if held_below(&k)? => {
                        let slot = Slot {
                            value: None,
                            fresh: Some(false),
                        };
                        map.insert(k, slot);
                    }
                    None => {}
                }
                continue;
            };
            if value.is_some() {
                slot.value = value;
                continue;
            }
            let fresh = match slot.fresh {
                Some(fresh) => fresh,
                None => !held_below(&k)?,
            };
            if fresh {
                map.remove(&k);
            } else {
                *slot = Slot {
                    value: None,
                    fresh: Some(false),
                };
            }
        }
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if let Some(through) = through {
            let before = self.through.swap(through, Ordering::Relaxed);
            let from = if before == 0 { first } else { before + 1 };
            self.entries
                .fetch_add((through + 1).saturating_sub(from), Ordering::Relaxed);
        }
        Ok(())
    }

    pub(crate) fn bytes(&self) -> usize {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn entries(&self) -> u64 {
        self.entries.load(Ordering::Relaxed)
    }

    pub(crate) fn through(&self) -> u64 {
        self.through.load(Ordering::Relaxed)
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_empty()
            && self.through() == 0
    }

    /// Every change, in key order.
    pub(crate) fn writes(&self) -> Vec<Write> {
        self.map
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(k, s)| (k.clone(), s.value.clone()))
            .collect()
    }

    /// The first change after `from` and before `end`. One short lock per step: the table
    /// may change between steps, and a scan sees each key at most once.
    fn next_after(&self, from: &Bound<Vec<u8>>, end: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
        let map = self.map.read().unwrap_or_else(PoisonError::into_inner);
        map.range::<[u8], _>((from.as_ref().map(Vec::as_slice), Bound::Excluded(end)))
            .next()
            .map(|(k, s)| (k.clone(), s.value.clone()))
    }
}

/// The in-memory layers, newest first.
#[derive(Debug, Clone)]
pub(crate) struct Layers {
    pub(crate) active: Arc<Memtable>,
    /// The table a checkpoint is writing to sled, readable until it is there.
    pub(crate) frozen: Option<Arc<Memtable>>,
}

impl Layers {
    pub(crate) fn new() -> Self {
        Self {
            active: Arc::default(),
            frozen: None,
        }
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Option<Vec<u8>>> {
        self.active
            .get(key)
            .or_else(|| self.frozen.as_ref().and_then(|f| f.get(key)))
    }
}

type Item = (Vec<u8>, Option<Vec<u8>>);

enum Source {
    Memory {
        table: Arc<Memtable>,
        from: Bound<Vec<u8>>,
        end: Vec<u8>,
    },
    Below(crate::backend::KvIter),
}

impl Source {
    fn next(&mut self) -> Option<Result<Item>> {
        match self {
            Self::Memory { table, from, end } => {
                let item = table.next_after(from, end)?;
                *from = Bound::Excluded(item.0.clone());
                Some(Ok(item))
            }
            Self::Below(iter) => iter.next().map(|kv| kv.map(|(k, v)| (k, Some(v)))),
        }
    }
}

/// A range of keys as the layers and sled together hold it, in key order.
pub(crate) struct Scan {
    /// Newest first; `heads[i]` is the next item of `sources[i]` not yet consumed.
    sources: Vec<Source>,
    heads: Vec<Option<Item>>,
    started: bool,
}

impl Scan {
    pub(crate) fn new(
        layers: &Layers,
        below: &crate::backend::Backend,
        start: Vec<u8>,
        end: Vec<u8>,
    ) -> Self {
        let mut sources = Vec::with_capacity(3);
        for table in std::iter::once(&layers.active).chain(layers.frozen.as_ref()) {
            sources.push(Source::Memory {
                table: Arc::clone(table),
                from: Bound::Included(start.clone()),
                end: end.clone(),
            });
        }
        sources.push(Source::Below(below.range(start, end)));
        let heads = vec![None; sources.len()];
        Self {
            sources,
            heads,
            started: false,
        }
    }

    fn refill(&mut self, i: usize) -> Result<()> {
        self.heads[i] = self.sources[i].next().transpose()?;
        Ok(())
    }

    fn step(&mut self) -> Result<Option<(Vec<u8>, Vec<u8>)>> {
        if !self.started {
            self.started = true;
            for i in 0..self.sources.len() {
                self.refill(i)?;
            }
        }
        loop {
            let Some(key) = self.heads.iter().flatten().map(|(k, _)| k).min().cloned() else {
                return Ok(None);
            };
            // The newest layer holding the key decides; the older ones move past it.
            let mut value = None;
            let mut decided = false;
            for i in 0..self.heads.len() {
                if self.heads[i].as_ref().is_some_and(|(k, _)| *k == key) {
                    let (_, v) = self.heads[i].take().unwrap_or_default();
                    if !decided {
                        value = v;
                        decided = true;
                    }
                    self.refill(i)?;
                }
            }
            if let Some(v) = value {
                return Ok(Some((key, v)));
            }
        }
    }
}

impl Iterator for Scan {
    type Item = Result<(Vec<u8>, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(writes: &[(&str, Option<&str>)]) -> Arc<Memtable> {
        let t = Memtable::default();
        t.apply(
            writes
                .iter()
                .map(|(k, v)| (k.as_bytes().to_vec(), v.map(|v| v.as_bytes().to_vec())))
                .collect(),
            1,
            None,
            &|_| Ok(true),
        )
        .unwrap();
        Arc::new(t)
    }

    #[test]
    fn the_newest_layer_wins_and_removals_hide_older_values() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::backend::Backend::open_sled(dir.path(), 1 << 20).unwrap();
        let disk: Vec<Write> = ["a", "b", "c", "d"]
            .iter()
            .map(|k| (k.as_bytes().to_vec(), Some(b"disk".to_vec())))
            .collect();
        db.apply(&disk, false).unwrap();
        let layers = Layers {
            active: table(&[("b", None), ("c", Some("active")), ("e", Some("active"))]),
            frozen: Some(table(&[
                ("b", Some("frozen")),
                ("c", Some("frozen")),
                ("d", None),
            ])),
        };
        let seen: Vec<(String, String)> = Scan::new(&layers, &db, b"a".to_vec(), b"z".to_vec())
            .map(|kv| {
                let (k, v) = kv.unwrap();
                (String::from_utf8(k).unwrap(), String::from_utf8(v).unwrap())
            })
            .collect();
        let expected = [("a", "disk"), ("c", "active"), ("e", "active")];
        assert_eq!(seen, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(layers.get(b"b"), Some(None));
        assert_eq!(layers.get(b"d"), Some(None));
        assert_eq!(layers.get(b"c"), Some(Some(b"active".to_vec())));
        assert_eq!(layers.get(b"a"), None, "not in memory: read sled");
    }

    #[test]
    fn the_entry_count_follows_the_log_sequence() {
        let t = Memtable::default();
        t.apply(Vec::new(), 5, Some(9), &|_| Ok(false)).unwrap();
        t.apply(Vec::new(), 10, Some(10), &|_| Ok(false)).unwrap();
        assert_eq!((t.entries(), t.through()), (6, 10));
    }

    #[test]
    fn a_key_no_older_layer_holds_leaves_no_trace_when_removed() {
        let t = Memtable::default();
        let below = |k: &[u8]| Ok(k == b"old");
        let put = |k: &str| (k.as_bytes().to_vec(), Some(b"v".to_vec()));
        let del = |k: &str| (k.as_bytes().to_vec(), None);
        t.apply(vec![put("new"), put("old")], 1, None, &below)
            .unwrap();
        t.apply(vec![del("new"), del("old"), del("never")], 1, None, &below)
            .unwrap();
        assert_eq!(t.writes(), vec![(b"old".to_vec(), None)]);
    }

    #[test]
    fn sled_is_asked_about_a_key_only_when_it_is_removed() {
        let t = Memtable::default();
        let asked = std::sync::Mutex::new(Vec::new());
        let below = |k: &[u8]| {
            asked.lock().unwrap().push(k.to_vec());
            Ok(false)
        };
        let put = |k: &str| (k.as_bytes().to_vec(), Some(b"v".to_vec()));
        let del = |k: &str| (k.as_bytes().to_vec(), None);
        t.apply(vec![put("a"), put("b"), put("a")], 1, None, &below)
            .unwrap();
        assert!(asked.lock().unwrap().is_empty(), "puts need no answer");
        t.apply(vec![del("b"), del("c")], 1, None, &below).unwrap();
        assert_eq!(*asked.lock().unwrap(), vec![b"b".to_vec(), b"c".to_vec()]);
        assert_eq!(t.writes(), vec![(b"a".to_vec(), Some(b"v".to_vec()))]);
    }
}
