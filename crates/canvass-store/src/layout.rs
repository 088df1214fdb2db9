//! A data directory's partitions: one store per partition under `partitions/NNNN`, and the
//! layout file that fixes how many there are and which function maps a contact to one.
//!
//! Each partition is a database of its own (not a key prefix in one): sled serialises every
//! atomic batch of a database behind one process-wide lock, so partitions that share one
//! cannot commit in parallel. The layout is written once, when the directory is created, and
//! every later open must agree with it: contacts placed by one count or function would be
//! looked for in the wrong partition by another.

use std::fmt;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use canvass_core::partition::Partitioner;

use crate::{Error, Result, Store, StoreOptions};

/// The layout file's name in a data directory.
pub const LAYOUT_FILE: &str = "layout";
/// The version of the layout this build writes and reads (2: timer keys carry the timer's
/// kind).
pub const LAYOUT_SCHEMA: u32 = 2;
/// Most partitions a data directory may have.
pub const MAX_PARTITIONS: u32 = 1024;

/// How many partitions a data directory has and how contacts map to them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// The partition count (at least 1).
    pub partitions: u32,
    /// The function from a contact id to its partition.
    pub partitioner: Partitioner,
}

impl Default for Layout {
    fn default() -> Self {
        Self {
            partitions: 1,
            partitioner: Partitioner::default(),
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = if self.partitions == 1 { "" } else { "s" };
        write!(
            f,
            "{} partition{s} by {}",
            self.partitions, self.partitioner
        )
    }
}

impl Layout {
    /// The partition that owns `contact_id`.
    #[must_use]
    pub fn partition_of(&self, contact_id: &str) -> u32 {
        self.partitioner
            .partition(contact_id.as_bytes(), self.partitions)
    }

    fn encode(&self) -> String {
        format!(
            "# canvass data directory layout: written once, when the directory was created\nschema {LAYOUT_SCHEMA}\npartitions {}\npartitioner {}\n",
            self.partitions, self.partitioner
        )
    }

    fn decode(path: &Path, text: &str) -> Result<Self> {
        let bad = |why: String| Error::Layout(format!("{}: {why}", path.display()));
        let mut schema = None;
        let mut partitions = None;
        let mut partitioner = None;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, value) = line
                .split_once(' ')
                .ok_or_else(|| bad(format!("line {}: expected `name value`", n + 1)))?;
            let value = value.trim();
            match name {
                "schema" => schema = value.parse::<u32>().ok(),
                "partitions" => {
                    partitions = Some(value.parse::<u32>().ok().filter(|p| (1..=MAX_PARTITIONS).contains(p)).ok_or_else(
                        || bad(format!("line {}: partitions `{value}` is not a count from 1 to {MAX_PARTITIONS}", n + 1)),
                    )?);
                }
                "partitioner" => {
                    partitioner = Some(Partitioner::named(value).ok_or_else(|| {
                        bad(format!("line {}: unknown partitioner `{value}`", n + 1))
                    })?);
                }
                other => return Err(bad(format!("line {}: unknown setting `{other}`", n + 1))),
            }
        }
        match schema {
            Some(LAYOUT_SCHEMA) => {}
            Some(v) => {
                return Err(bad(format!(
                    "layout schema {v}; this build reads schema {LAYOUT_SCHEMA}"
                )));
            }
            None => return Err(bad("no `schema` line".into())),
        }
        Ok(Self {
            partitions: partitions.ok_or_else(|| bad("no `partitions` line".into()))?,
            partitioner: partitioner.ok_or_else(|| bad("no `partitioner` line".into()))?,
        })
    }
}

/// What the caller asks of a data directory's layout.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Wanted {
    /// The partition count it must have (`None`: whatever it has; 1 for a new directory).
    pub partitions: Option<u32>,
    /// The partitioner it must use (`None`: whatever it uses; murmur2 for a new directory).
    pub partitioner: Option<Partitioner>,
}

/// The path of partition `p`'s store in `dir`.
#[must_use]
pub fn partition_dir(dir: &Path, p: u32) -> PathBuf {
    dir.join("partitions").join(format!("{p:04}"))
}

/// Whether `dir` holds a store of the layout before partitions (sled's files at the top).
#[must_use]
pub fn is_single_store(dir: &Path) -> bool {
    dir.join("conf").is_file() && dir.join("db").is_file()
}

/// Reads a data directory's layout (`None`: no layout file: a new directory).
///
/// # Errors
/// The directory holds the layout before partitions, or the file does not read.
pub fn read_layout(dir: &Path) -> Result<Option<Layout>> {
    if is_single_store(dir) {
        return Err(Error::Layout(format!(
            "{} holds a store of the single-partition layout written before partitions: rewrite it into partitions with `canvass migrate-store --from {} --to NEW_DIR` (the log is replayed, nothing is lost), then run on NEW_DIR",
            dir.display(),
            dir.display()
        )));
    }
    let path = dir.join(LAYOUT_FILE);
    match fs::read_to_string(&path) {
        Ok(text) => Layout::decode(&path, &text).map(Some),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::Layout(format!("{}: {e}", path.display()))),
    }
}

/// Checks that `found` is what `wanted` asks.
fn check(dir: &Path, found: Layout, wanted: Wanted) -> Result<()> {
    if let Some(p) = wanted.partitions
        && p != found.partitions
    {
        return Err(Error::Layout(format!(
            "{} was created with {} partitions, not {p}: a contact's partition depends on the count, so the count cannot change in place; run with --partitions {} (or, on Kafka, a touchpoints topic of {} partitions), or rewrite the store with `canvass migrate-store --from {} --to NEW_DIR --partitions {p}`",
            dir.display(),
            found.partitions,
            found.partitions,
            found.partitions,
            dir.display()
        )));
    }
    if let Some(f) = wanted.partitioner
        && f != found.partitioner
    {
        return Err(Error::Layout(format!(
            "{} places contacts by the {} partitioner, not {f}: configure `{}`",
            dir.display(),
            found.partitioner,
            found.partitioner
        )));
    }
    Ok(())
}

/// The stores of a data directory's partitions. Cheap to clone; the clones share which
/// partitions the engine owns.
#[derive(Debug, Clone)]
pub struct Stores {
    layout: Layout,
    stores: Vec<Store>,
    /// Which partitions the engine owns now (all, unless it is one engine of several): what
    /// reads beside the engine (the delivery, the API) consult before they act on one.
    owned: Arc<[AtomicBool]>,
}

fn all_owned(partitions: u32) -> Arc<[AtomicBool]> {
    (0..partitions).map(|_| AtomicBool::new(true)).collect()
}

impl Stores {
    /// Opens the partitions of `dir`, creating the directory with the layout `wanted` asks
    /// (one partition by murmur2 unless it says otherwise) if it has none. `options` hold
    /// the whole directory's cache and checkpoint sizes: each partition gets its share.
    ///
    /// # Errors
    /// The layout differs from `wanted`, the directory holds the layout before partitions,
    /// or a store fails to open.
    pub fn open(dir: &Path, wanted: Wanted, options: &StoreOptions) -> Result<Self> {
        let layout = match read_layout(dir)? {
            Some(found) => {
                check(dir, found, wanted)?;
                found
            }
            None if options.read_only => {
                return Err(Error::Layout(format!(
                    "{} is not a canvass data directory (it has no {LAYOUT_FILE} file)",
                    dir.display()
                )));
            }
            None => {
                let layout = Layout {
                    partitions: wanted.partitions.unwrap_or(1),
                    partitioner: wanted.partitioner.unwrap_or_default(),
                };
                if !(1..=MAX_PARTITIONS).contains(&layout.partitions) {
                    return Err(Error::Layout(format!(
                        "a partition count from 1 to {MAX_PARTITIONS}, not {}",
                        layout.partitions
                    )));
                }
                write_layout(dir, layout)?;
                layout
            }
        };
        let shared = per_partition(options, layout.partitions);
        let stores = (0..layout.partitions)
            .map(|p| Store::open(&partition_dir(dir, p), shared.clone()))
            .collect::<Result<_>>()?;
        Ok(Self {
            layout,
            stores,
            owned: all_owned(layout.partitions),
        })
    }

    /// Partitions in memory, empty (simulations and previews).
    #[must_use]
    pub fn in_memory(layout: Layout, options: &StoreOptions) -> Self {
        let shared = per_partition(options, layout.partitions);
        Self {
            layout,
            stores: (0..layout.partitions)
                .map(|_| Store::in_memory(shared.clone()))
                .collect(),
            owned: all_owned(layout.partitions),
        }
    }

    /// How many partitions and how contacts map to them.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// Partition `p`'s store.
    ///
    /// # Panics
    /// `p` is not a partition of the layout.
    #[must_use]
    pub fn partition(&self, p: u32) -> &Store {
        &self.stores[p as usize]
    }

    /// The store of the partition that owns `contact_id`.
    #[must_use]
    pub fn of_contact(&self, contact_id: &str) -> &Store {
        self.partition(self.layout.partition_of(contact_id))
    }

    /// Whether the engine owns partition `p` now (see [`Stores::set_owned`]).
    #[must_use]
    pub fn owns(&self, p: u32) -> bool {
        self.owned
            .get(p as usize)
            .is_some_and(|o| o.load(Ordering::Acquire))
    }

    /// Sets the partitions the engine owns: those in `owned`. Only the engine's router
    /// calls this; every clone sees it.
    pub fn set_owned(&self, owned: &[bool]) {
        for (flag, &o) in self.owned.iter().zip(owned) {
            flag.store(o, Ordering::Release);
        }
    }

    /// Every partition's store, in partition order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Store> + '_ {
        self.stores.iter()
    }

    /// The stores, taken apart (each engine partition owns one).
    #[must_use]
    pub fn into_vec(self) -> Vec<Store> {
        self.stores
    }

    /// Bytes on disk, all partitions together.
    ///
    /// # Errors
    /// A store error.
    pub fn size_on_disk(&self) -> Result<u64> {
        self.stores.iter().map(Store::size_on_disk).sum()
    }
}

/// One partition's share of the whole directory's memory bounds.
fn per_partition(options: &StoreOptions, partitions: u32) -> StoreOptions {
    let n = u64::from(partitions.max(1));
    StoreOptions {
        cache_capacity: (options.cache_capacity / n).max(1024 * 1024),
        checkpoint_bytes: (options.checkpoint_bytes / n as usize).max(256 * 1024),
        checkpoint_entries: (options.checkpoint_entries / n).max(1),
        ..options.clone()
    }
}

/// Writes the layout file of a new directory, whole or not at all.
fn write_layout(dir: &Path, layout: Layout) -> Result<()> {
    let io = |e: std::io::Error| {
        Error::Layout(format!(
            "cannot write {}: {e}",
            dir.join(LAYOUT_FILE).display()
        ))
    };
    fs::create_dir_all(dir).map_err(io)?;
    let tmp = dir.join(format!("{LAYOUT_FILE}.new"));
    let mut file = fs::File::create(&tmp).map_err(io)?;
    file.write_all(layout.encode().as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    fs::rename(&tmp, dir.join(LAYOUT_FILE)).map_err(io)?;
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_layout_file_reads_back_what_was_written() {
        for partitioner in Partitioner::ALL {
            let layout = Layout {
                partitions: 12,
                partitioner,
            };
            let path = Path::new("layout");
            assert_eq!(Layout::decode(path, &layout.encode()).unwrap(), layout);
        }
    }

    #[test]
    fn a_damaged_layout_file_names_the_line_and_the_reason() {
        let path = Path::new("d/layout");
        let e = Layout::decode(path, "schema 1\npartitions 0\npartitioner murmur2\n").unwrap_err();
        assert!(e.to_string().contains("line 2: partitions `0`"), "{e}");
        let e = Layout::decode(path, "schema 1\npartitions 2\npartitioner fnv\n").unwrap_err();
        assert!(e.to_string().contains("unknown partitioner `fnv`"), "{e}");
        let e = Layout::decode(path, "schema 9\npartitions 2\npartitioner murmur2\n").unwrap_err();
        assert!(e.to_string().contains("layout schema 9"), "{e}");
        let e = Layout::decode(path, "partitions 2\npartitioner murmur2\n").unwrap_err();
        assert!(e.to_string().contains("no `schema` line"), "{e}");
    }

    #[test]
    fn a_directory_keeps_its_partition_count_and_refuses_another() {
        let dir = tempfile::tempdir().unwrap();
        let options = StoreOptions::default();
        let four = Wanted {
            partitions: Some(4),
            partitioner: None,
        };
        let stores = Stores::open(dir.path(), four, &options).unwrap();
        assert_eq!(stores.layout().partitions, 4);
        assert!(partition_dir(dir.path(), 3).is_dir());
        drop(stores);
        // Whatever it has, when nothing is asked.
        let again = Stores::open(dir.path(), Wanted::default(), &options).unwrap();
        assert_eq!(again.layout().partitions, 4);
        drop(again);
        let e = Stores::open(
            dir.path(),
            Wanted {
                partitions: Some(8),
                partitioner: None,
            },
            &options,
        )
        .unwrap_err();
        assert!(
            e.to_string().contains("created with 4 partitions, not 8"),
            "{e}"
        );
        let e = Stores::open(
            dir.path(),
            Wanted {
                partitions: None,
                partitioner: Some(Partitioner::Crc32),
            },
            &options,
        )
        .unwrap_err();
        assert!(e.to_string().contains("by the murmur2 partitioner"), "{e}");
    }

    #[test]
    fn a_store_of_the_layout_before_partitions_is_refused_with_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        drop(Store::open(dir.path(), StoreOptions::default()).unwrap());
        let e = Stores::open(dir.path(), Wanted::default(), &StoreOptions::default()).unwrap_err();
        assert!(e.to_string().contains("canvass migrate-store"), "{e}");
        // Nothing was written beside it.
        assert!(!dir.path().join(LAYOUT_FILE).exists());
    }

    #[test]
    fn a_read_only_open_of_a_directory_without_a_layout_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("mistyped");
        let options = StoreOptions {
            read_only: true,
            ..StoreOptions::default()
        };
        let e = Stores::open(&missing, Wanted::default(), &options).unwrap_err();
        assert!(
            e.to_string().contains("not a canvass data directory"),
            "{e}"
        );
        assert!(!missing.exists());
    }
}
