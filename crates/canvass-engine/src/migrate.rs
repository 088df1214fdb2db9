//! Rewriting a store of the layout before partitions (one sled database, one log) into a
//! partitioned data directory.
//!
//! The old log is applied again, input by input, through the partitioned engine on the wall
//! clock, each commit at the time the old log applied its inputs: a contact's inputs reach
//! its partition in their old order and at their old times, each timer fires at the entry
//! where the old log fired it, and commands reach every partition. What the old log holds that the engine makes again by itself
//! (timer firings, sweep steps) is not fed; acknowledgements are, pointed at the same actions
//! in their new partitions (by idempotency key). So each contact ends in the state the old
//! store holds, with the same actions delivered and the same ones still queued. What differs:
//! what depends on the partition count (each partition's share of a budget), and the count
//! of late events (each input is applied at its old time, so none is late again; the new
//! logs replay to the same bytes without it).

use std::collections::{BTreeSet, HashMap};

use canvass_core::UnixMillis;
use canvass_proto::v1::{self, log_entry};
use canvass_store::{Store, WriteBatch};

use crate::durable::{Incoming, Result, Sourced};
use crate::partitions::Partitions;

/// The allowed lateness of the engine a migration feeds: as long as any span, so that no
/// timer fires before the old log says it did.
pub const MIGRATION_LATENESS: canvass_core::SpanMillis = canvass_core::time::MAX_SPAN;

/// What a migration did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Migrated {
    /// Entries of the old log read.
    pub entries: u64,
    /// Inputs applied again (profiles, events, commands, acknowledgements).
    pub inputs: u64,
    /// Dead letters copied (they are not in the log).
    pub dead_letters: u64,
    /// Acknowledgements of actions the new partitions do not hold (dropped, as the old
    /// engine dropped repeated ones).
    pub unmatched_acks: u64,
}

/// Where each queued action of the new partitions is, by idempotency key.
#[derive(Default)]
struct Outboxes {
    at: HashMap<String, (u64, u32)>,
    scanned: Vec<Option<(u64, u32)>>,
}

impl Outboxes {
    /// Learns the actions queued since the last call.
    fn refresh(&mut self, engine: &Partitions) -> Result<()> {
        self.scanned.resize(engine.stores().iter().len(), None);
        for (p, store) in engine.stores().iter().enumerate() {
            loop {
                let rows = store.outbox_after(self.scanned[p], 4096)?;
                let Some(&(last, _)) = rows.last() else { break };
                for (position, action) in rows {
                    self.at.insert(action.idempotency_key, position);
                }
                self.scanned[p] = Some(last);
            }
        }
        Ok(())
    }
}

/// Applies the old store's log to `engine`, then copies its dead letters and source offsets.
/// `engine` is empty, on the wall clock, with the old run's dedupe window, and fires no timer
/// by itself ([`MIGRATION_LATENESS`]): each fires at the entry where the old log fired it,
/// whatever lateness or clock the old run had.
///
/// # Errors
/// A store error (the new directory is then incomplete: remove it and start again).
pub fn migrate(old: &Store, engine: &mut Partitions) -> Result<Migrated> {
    let mut done = Migrated::default();
    let mut outboxes = Outboxes::default();
    let mut sources: BTreeSet<String> = BTreeSet::new();
    let mut batch: Vec<Sourced> = Vec::new();
    let mut batch_at = UnixMillis::default();
    for entry in old.log_from(1) {
        let entry = entry?;
        done.entries += 1;
        let at = entry
            .applied_at
            .as_ref()
            .map_or(batch_at, UnixMillis::from_proto);
        // The old engine applied one commit's inputs at one time: a new time is a new commit.
        if at != batch_at && !batch.is_empty() {
            done.inputs += batch.len() as u64;
            commit(engine, std::mem::take(&mut batch), batch_at)?;
        }
        batch_at = at;
        if let Some(p) = &entry.source {
            sources.insert(p.source.clone());
        }
        let record = |input| {
            Incoming::Record(Box::new(v1::IngestRecord {
                input: Some(input),
                at: Some(at.to_proto()),
            }))
        };
        use v1::ingest_record::Input as R;
        let incoming = match entry.input {
            Some(log_entry::Input::ContactUpsert(c)) => record(R::Contact(c)),
            Some(log_entry::Input::Event(e)) => record(R::Event(e)),
            Some(log_entry::Input::Command(c)) => record(R::Command(c)),
            Some(log_entry::Input::ActionAcks(mut acks)) => {
                if !batch.is_empty() {
                    done.inputs += batch.len() as u64;
                    commit(engine, std::mem::take(&mut batch), at)?;
                }
                outboxes.refresh(engine)?;
                let before = acks.acks.len();
                acks.acks
                    .retain_mut(|ack| match outboxes.at.remove(&ack.idempotency_key) {
                        Some((seq, index)) => {
                            ack.outbox_seq = seq;
                            ack.outbox_index = index;
                            true
                        }
                        None => false,
                    });
                done.unmatched_acks += (before - acks.acks.len()) as u64;
                if acks.acks.is_empty() {
                    continue;
                }
                Incoming::Acks(acks)
            }
            // Each timer fires where the old log fired it (the engine fires none by itself
            // here: see `migrate`).
            Some(log_entry::Input::TimerFired(t)) => {
                if !batch.is_empty() {
                    done.inputs += batch.len() as u64;
                    commit(engine, std::mem::take(&mut batch), batch_at)?;
                }
                engine.fire_timers(vec![(t, at)])?;
                continue;
            }
            // Sweeps are made again by the commands that started them; entries without an
            // input only moved an offset.
            Some(log_entry::Input::SweepStep(_)) | None => continue,
        };
        batch.push(Sourced {
            incoming,
            position: entry.source,
            caller: (!entry.caller.is_empty()).then_some(entry.caller),
        });
    }
    if !batch.is_empty() {
        done.inputs += batch.len() as u64;
        commit(engine, batch, batch_at)?;
    }

    // Dead letters are not in the log: partition 0 keeps them. Offsets go to every
    // partition, so that each source resumes where the old store would have.
    let letters = old.dead_letters()?;
    for letter in &letters {
        if let Some(p) = &letter.source {
            sources.insert(p.source.clone());
        }
    }
    let first = engine.stores().partition(0);
    let mut extra = WriteBatch::new();
    let mut n = first.dead_letter_count()?;
    for letter in &letters {
        n += 1;
        extra.put_dead_letter(n, letter);
    }
    done.dead_letters = letters.len() as u64;
    first.commit(extra)?;
    for store in engine.stores().iter() {
        let mut offsets = WriteBatch::new();
        for source in &sources {
            if let Some(next) = old.offset(source)? {
                offsets.set_offset(source, next);
            }
        }
        store.commit(offsets)?;
    }
    engine.checkpoint()?;
    for store in engine.stores().iter() {
        store.flush()?;
    }
    Ok(done)
}

fn commit(engine: &mut Partitions, inputs: Vec<Sourced>, at: UnixMillis) -> Result<()> {
    engine.ingest(inputs, at).map(|_| ())
}
