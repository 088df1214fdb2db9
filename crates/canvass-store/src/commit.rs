//! The group commit: a batch of writes, its log frame, offsets and dead letters applied to
//! sled atomically, and its durability (a flush in the commit, or beside the next batch).

use std::sync::atomic::Ordering;

use canvass_core::{TimerId, UnixMillis};
use canvass_proto::v1;
use prost::Message;

use crate::{checkpoint::Checkpoint, log::frames};

use crate::{Error, Recorded, Result, Store, Write, keys, lock};

impl Store {
    /// Makes a batch durable: its log entries (one frame), offsets and dead letters go to
    /// sled in one atomic batch, flushed (unless turned off) before this returns; its
    /// projection changes then join the in-memory table a later checkpoint writes. A crash
    /// before that checkpoint loses nothing: the log holds what the table held.
    pub fn commit(&self, batch: WriteBatch) -> Result<()> {
        self.commit_with(batch, self.options.flush_on_commit)?;
        if self.options.flush_on_commit {
            self.mark_durable(
                self.shared.log_end.load(Ordering::SeqCst),
                self.shared.commits_written.load(Ordering::SeqCst),
            );
        }
        Ok(())
    }

    /// Applies a batch as [`Store::commit`] does but without the flush: it is not durable
    /// until the next [`Store::sync`] (or the flush [`Store::sync_in_background`] starts)
    /// returns. Its rows are readable at once: the engine reads them for the next batch
    /// while the flush runs, but nothing may leave the engine before it is durable (an
    /// action, an answer, an offset told to a broker): [`Store::outbox_durable_after`]
    /// gives the outbox up to the last flush only.
    pub fn commit_unsynced(&self, batch: WriteBatch) -> Result<()> {
        self.commit_with(batch, false)
    }

    /// Makes every commit so far durable, and waits for it.
    pub fn sync(&self) -> Result<()> {
        let through = self.shared.log_end.load(Ordering::SeqCst);
        let commits = self.shared.commits_written.load(Ordering::SeqCst);
        self.check_failed()?;
        if self.options.read_only {
            return Ok(());
        }
        self.write(Vec::new(), true)?;
        self.mark_durable(through, commits);
        Ok(())
    }

    /// A mark of the commits written so far, for [`Store::wait_durable`].
    #[must_use]
    pub fn commit_mark(&self) -> u64 {
        self.shared.commits_written.load(Ordering::SeqCst)
    }

    /// Waits until the commits up to `mark` ([`Store::commit_mark`]) are durable: at once
    /// if a flush has covered them, else by waiting for the flush running (which started
    /// after them), else by flushing now.
    pub fn wait_durable(&self, mark: u64) -> Result<()> {
        if self.shared.commits_durable.load(Ordering::SeqCst) >= mark {
            return Ok(());
        }
        self.wait_synced()?;
        if self.shared.commits_durable.load(Ordering::SeqCst) >= mark {
            return Ok(());
        }
        self.sync()
    }

    /// Starts making every commit so far durable on a thread of its own, once the flush
    /// started before (if any) has ended: [`Store::wait_synced`] waits for it.
    pub fn sync_in_background(&self) -> Result<()> {
        self.wait_synced()?;
        let store = self.clone();
        let handle = std::thread::Builder::new()
            .name("canvass-flush".into())
            .spawn(move || store.sync())
            .map_err(|e| Error::Halted(format!("cannot start a flush: {e}")))?;
        *lock(&self.shared.syncing) = Some(handle);
        Ok(())
    }

    /// Waits for the flush [`Store::sync_in_background`] started, if one is running.
    pub fn wait_synced(&self) -> Result<()> {
        let running = lock(&self.shared.syncing).take();
        match running.map(std::thread::JoinHandle::join) {
            None => Ok(()),
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(Error::Halted("a flush panicked".into())),
        }
    }

    /// The last log entry a flush made durable.
    #[must_use]
    pub fn durable_seq(&self) -> u64 {
        self.shared.durable_end.load(Ordering::SeqCst)
    }

    pub(crate) fn mark_durable(&self, through: u64, commits: u64) {
        self.shared.durable_end.fetch_max(through, Ordering::SeqCst);
        self.shared
            .commits_durable
            .fetch_max(commits, Ordering::SeqCst);
    }

    pub(crate) fn commit_with(&self, batch: WriteBatch, flush: bool) -> Result<()> {
        self.check_failed()?;
        let WriteBatch {
            log,
            first_seq,
            at_commit,
            projections,
            applied_through,
        } = batch;
        if self.options.read_only {
            if first_seq.is_some() {
                return Err(Error::ReadOnly);
            }
            let mut writes = at_commit;
            writes.extend(projections);
            let layers = self.layers();
            let held_below = |k: &[u8]| -> Result<bool> {
                match layers.frozen.as_ref().and_then(|f| f.get(k)) {
                    Some(v) => Ok(v.is_some()),
                    None => self.backend.contains(k),
                }
            };
            return layers.active.apply(
                writes,
                applied_through.unwrap_or(0),
                applied_through,
                &held_below,
            );
        }
        let log_len = log.len();
        let mut writes = at_commit;
        if let Some(first) = first_seq {
            writes.extend(frames(first, log));
        }
        if !writes.is_empty() {
            let end = self.shared.log_end.load(Ordering::SeqCst);
            let (first, last) = match first_seq {
                Some(first) => (first, first + log_len as u64 - 1),
                None => (end + 1, end),
            };
            self.ship(first, last, &mut writes)?;
            self.write(writes, flush)?;
            if first_seq.is_some() {
                self.shared.log_end.store(last, Ordering::SeqCst);
            }
            self.shared.commits_written.fetch_add(1, Ordering::SeqCst);
        }
        if projections.is_empty() && applied_through.is_none() {
            return Ok(());
        }
        let layers = self.layers();
        let held_below = |k: &[u8]| -> Result<bool> {
            match layers.frozen.as_ref().and_then(|f| f.get(k)) {
                Some(v) => Ok(v.is_some()),
                None => self.backend.contains(k),
            }
        };
        let active = &layers.active;
        active.apply(
            projections,
            applied_through.unwrap_or(0),
            applied_through,
            &held_below,
        )?;
        if !self.options.read_only
            && (active.bytes() >= self.options.checkpoint_bytes
                || active.entries() >= self.options.checkpoint_entries)
        {
            self.start_checkpoint(Checkpoint::Sliced)?;
        }
        Ok(())
    }

    /// Applies writes to sled in one atomic batch, then flushes if asked.
    pub(crate) fn write(&self, writes: Vec<Write>, flush: bool) -> Result<()> {
        self.guarded(|| self.backend.apply(&writes, false))?;
        if flush {
            self.guarded(|| self.backend.flush())?;
        }
        if self.options.record_writes {
            lock(&self.shared.recorded).push(Recorded {
                writes,
                flushed: flush,
            });
        }
        Ok(())
    }

    /// Makes every commit so far durable: for stores opened without a flush per commit
    /// (a bulk rewrite that is redone from its start if it is interrupted).
    pub fn flush(&self) -> Result<()> {
        self.check_failed()?;
        self.write(Vec::new(), true)
    }
}

/// Writes to apply together. Nothing is visible until [`Store::commit`].
#[derive(Debug, Default)]
pub struct WriteBatch {
    /// Encoded log entries, consecutive from `first_seq`.
    log: Vec<Vec<u8>>,
    first_seq: Option<u64>,
    /// Offsets and dead letters: durable with the log.
    at_commit: Vec<Write>,
    /// Everything else: held in memory until a checkpoint.
    projections: Vec<Write>,
    applied_through: Option<u64>,
}

impl WriteBatch {
    /// An empty batch.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes in the batch (log entries included).
    #[must_use]
    pub fn len(&self) -> usize {
        self.log.len() + self.at_commit.len() + self.projections.len()
    }

    /// Whether the batch is empty.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.applied_through.is_none()
    }

    pub(crate) fn put(&mut self, key: Vec<u8>, value: Vec<u8>) {
        self.push((key, Some(value)));
    }

    pub(crate) fn del(&mut self, key: Vec<u8>) {
        self.push((key, None));
    }

    pub(crate) fn push(&mut self, write: Write) {
        if keys::written_at_commit(&write.0) {
            self.at_commit.push(write);
        } else {
            self.projections.push(write);
        }
    }

    /// Appends a log entry (its `seq` must follow the last one). The last entry applied is
    /// recorded once per batch with [`WriteBatch::set_last_seq`].
    pub fn append_log(&mut self, entry: &v1::LogEntry) {
        debug_assert_eq!(
            self.first_seq.map(|f| f + self.log.len() as u64),
            self.first_seq.map(|_| entry.seq),
            "log entries of a batch are consecutive"
        );
        self.first_seq.get_or_insert(entry.seq);
        self.log.push(entry.encode_to_vec());
    }

    /// Records the last log entry whose effects this batch holds.
    pub fn set_last_seq(&mut self, seq: u64) {
        self.applied_through = Some(seq);
    }

    /// Stores a contact's state under its id.
    pub fn put_contact(&mut self, partition: u16, id: &str, state: &v1::ContactState) {
        self.put(keys::contact(partition, id), state.encode_to_vec());
    }

    /// Adds a contact to a response group.
    pub fn add_to_group(&mut self, campaign: &str, group: &str, contact: &str) {
        self.put(keys::group(campaign, group, contact), Vec::new());
    }

    /// Removes a contact from a response group.
    pub fn remove_from_group(&mut self, campaign: &str, group: &str, contact: &str) {
        self.del(keys::group(campaign, group, contact));
    }

    /// Stores a campaign's counters.
    pub fn put_counters(&mut self, campaign: &str, counters: &v1::CampaignCounters) {
        self.put(keys::counters(campaign), counters.encode_to_vec());
    }

    /// Arms a timer.
    pub fn put_timer(&mut self, due: UnixMillis, id: &TimerId) {
        self.put(keys::timer(due, id), Vec::new());
    }

    /// Disarms a timer (the core knows when it was due: timeouts count from the state entry).
    pub fn remove_timer(&mut self, due: UnixMillis, id: &TimerId) {
        self.del(keys::timer(due, id));
    }

    /// Queues an action for delivery.
    pub fn put_outbox(&mut self, position: (u64, u32), action: &v1::Action) {
        self.put(keys::outbox(position.0, position.1), action.encode_to_vec());
    }

    /// Removes a delivered action.
    pub fn remove_outbox(&mut self, position: (u64, u32)) {
        self.del(keys::outbox(position.0, position.1));
    }

    /// Records where to resume a source.
    pub fn set_offset(&mut self, source: &str, next: u64) {
        self.put(keys::offset(source), next.to_be_bytes().to_vec());
    }

    /// Stores a campaign spec version.
    pub fn put_spec(&mut self, spec: &v1::CampaignSpec) {
        self.put(keys::spec(&spec.id, spec.version), spec.encode_to_vec());
    }

    /// Stores a campaign's lifecycle.
    pub fn put_lifecycle(&mut self, lifecycle: &v1::CampaignLifecycle) {
        self.put(
            keys::lifecycle(&lifecycle.campaign_id),
            lifecycle.encode_to_vec(),
        );
    }

    /// Stores what the engine counted about its inputs.
    pub fn put_input_counters(&mut self, counters: &v1::InputCounters) {
        self.put(vec![keys::INPUTS], counters.encode_to_vec());
    }

    /// Stores a material with all its versions.
    pub fn put_material(&mut self, material: &v1::Material) {
        self.put(keys::material(&material.id), material.encode_to_vec());
    }

    /// Replaces the engine-wide policy.
    pub fn put_policy(&mut self, policy: &v1::Policy) {
        self.put(vec![keys::POLICY], policy.encode_to_vec());
    }

    /// Records how far a sweep went.
    pub fn put_sweep(&mut self, sweep: &v1::Sweep) {
        self.put(keys::sweep(sweep.command_seq), sweep.encode_to_vec());
    }

    /// Forgets a sweep that reached every contact.
    pub fn remove_sweep(&mut self, command_seq: u64) {
        self.del(keys::sweep(command_seq));
    }

    /// Parks a dead letter as number `n` (numbers follow [`Store::dead_letter_count`]).
    pub fn put_dead_letter(&mut self, n: u64, letter: &v1::DeadLetter) {
        self.put(keys::dead_letter(n), letter.encode_to_vec());
    }

    /// Queues a publication under number `n` (after [`Store::last_publication`]).
    pub fn put_publication(&mut self, n: u64, publication: &v1::Publication) {
        self.put(keys::publication(n), publication.encode_to_vec());
    }

    /// Removes a publication the broker acknowledged.
    pub fn remove_publication(&mut self, n: u64) {
        self.del(keys::publication(n));
    }
}
