//! The partitioned engine: one [`Engine`] per partition of the data directory, each with its
//! own log, clock, tables and group commit, fed by a router.
//!
//! Routing: an input about a contact (a profile, an event, the acknowledgement of an action
//! sent to it) goes to the partition its id maps to, by the layout's partitioner (what a
//! Kafka producer keyed by contact id does). A command goes to every partition, in input
//! order: each logs it at its own position and decides it alike (the lifecycle rules read
//! only the commands before it), so every partition is self-contained; only the command's
//! home partition parks a refusal and queues the result for the audit topic. An input that
//! names no contact is parked in partition 0.
//!
//! Offsets: each partition writes, with every commit, the batch's latest position of each
//! source, also when it took no input of that batch. A restart resumes each source at the
//! lowest position the partitions hold, and a partition skips what it already holds, so a
//! crash between the partitions' commits of one batch loses nothing and applies nothing
//! twice.
//!
//! Commands without a source position (gRPC) are journaled: a run of them is committed on
//! its own, once everything before it is durable in every partition, numbered and made
//! durable in partition 0's store first and given the journal's position, so the same rule
//! completes a command a crash left in some partitions only, in its place
//! ([`Partitions::open`] hands each partition the journaled commands it lacks before any
//! source is read again).
//!
//! Parallelism: partitions run on `workers` threads (partition `p` on worker `p % workers`);
//! each partition's commit is its own, so a batch is durable in a partition before anything
//! of it is visible there.

use std::collections::{BTreeMap, HashMap};

use canvass_core::{Core, UnixMillis};
use canvass_proto::v1;
use canvass_store::{Layout, Store, Stores};

use crate::durable::{
    BatchReport, DispatchError, Engine, EngineOptions, Error, Incoming, Outcome, Placement, Queued,
    Result, Sourced,
};

/// Where an input goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the one partition that owns its contact.
    One(u32),
    /// To every partition (a command).
    All,
    /// Split among the partitions of the contacts it concerns (acknowledgements).
    Split,
}

/// Where `incoming` goes under `layout`.
#[must_use]
pub fn route(layout: &Layout, incoming: &Incoming) -> Route {
    use v1::ingest_record::Input as R;
    match incoming {
        Incoming::Record(r) => match &r.input {
            Some(R::Contact(c)) => Route::One(layout.partition_of(&c.id)),
            Some(R::Event(e)) => Route::One(layout.partition_of(&e.contact_id)),
            Some(R::Command(_)) => Route::All,
            None => Route::One(0),
        },
        Incoming::Acks(_) => Route::Split,
        Incoming::Redriven { partition, .. } => Route::One(*partition),
        Incoming::Malformed { key, .. } => match std::str::from_utf8(key) {
            Ok(k) if !k.is_empty() => Route::One(layout.partition_of(k)),
            _ => Route::One(0),
        },
    }
}

/// The engine over every partition of a data directory.
#[derive(Debug)]
pub struct Partitions {
    stores: Stores,
    parts: Vec<Engine>,
    workers: usize,
    /// Each partition's stored position per source, as far as read or written here.
    offsets: Vec<HashMap<String, Option<u64>>>,
    /// The partition [`Partitions::dispatch`] starts at next, so none waits behind another.
    next_dispatch: usize,
    /// Why a batch failed after some partitions committed it, if one did.
    interrupted: Option<String>,
    /// The partitions this engine owns now: all of them, unless it is one engine of
    /// several (on Kafka, those its consumer group assigned it). A partition it does not own
    /// takes no input, fires no timer and delivers nothing here: another engine owns it.
    owned: Vec<bool>,
    /// What each partition's engine was opened with (see [`Partitions::reopen`]).
    options: EngineOptions,
}

/// Where a partition's outcome for one input sits: (partition, index among its inputs).
type Slot = (usize, usize);

/// The source name of the command journal's positions.
pub const COMMAND_JOURNAL: &str = "journal:commands";

impl Partitions {
    /// Opens every partition's engine (applying each log tail a crash left), on `workers`
    /// threads (at least 1).
    ///
    /// # Errors
    /// A partition's store or log failed.
    pub fn open(stores: Stores, options: EngineOptions, workers: usize) -> Result<Self> {
        let layout = stores.layout();
        let parts = each_parallel(
            stores.iter().cloned().enumerate().collect(),
            workers,
            |(p, store): (usize, Store)| {
                Engine::open_partition(
                    store,
                    options.clone(),
                    Placement {
                        layout,
                        partition: p as u32,
                    },
                )
            },
        )
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
        let n = parts.len();
        let mut engine = Self {
            options,
            offsets: vec![HashMap::new(); parts.len()],
            stores,
            parts,
            workers: workers.max(1),
            next_dispatch: 0,
            interrupted: None,
            owned: vec![true; n],
        };
        engine.stores.set_owned(&engine.owned);
        engine.complete_journaled_commands()?;
        Ok(engine)
    }

    /// Gives every partition the journaled commands it lacks (a crash came between the
    /// partitions' commits of their batch), each at the time it was received, then forgets
    /// the commands every partition has.
    fn complete_journaled_commands(&mut self) -> Result<()> {
        let journal = self.stores.partition(0).clone();
        if self.parts.len() < 2 || journal.is_read_only() {
            return Ok(());
        }
        let held = self.offset(COMMAND_JOURNAL)?.unwrap_or(0);
        for (n, command) in journal.journal_from(held)? {
            let received = command
                .received_at
                .as_ref()
                .map_or_else(|| self.clock(), UnixMillis::from_proto);
            let input = Sourced {
                incoming: Incoming::Record(Box::new(command.record.unwrap_or_default())),
                position: Some(journal_position(n)),
                caller: Some(command.caller).filter(|c| !c.is_empty()),
            };
            self.ingest_segment(vec![(Route::All, input)], received)?;
        }
        self.prune_journal()
    }

    /// Forgets the journaled commands every partition holds durably: waits for every
    /// partition's commits so far first (under deferred flushes, a partition may hold one
    /// only in memory, and a crash would take it back).
    fn prune_journal(&mut self) -> Result<()> {
        let marks = self.commit_marks();
        self.wait_durable(&marks)?;
        // Over every partition, owned or not: none may lose a command it lacks.
        let mut held = u64::MAX;
        for p in 0..self.parts.len() {
            held = held.min(self.stored_offset(p, COMMAND_JOURNAL)?.unwrap_or(0));
        }
        Ok(self.stores.partition(0).prune_journal(held)?)
    }

    /// Journals a run of commands that go to every partition without a position of their
    /// own (see the module's doc; each passed [`needs_journal`], so each is a record) in
    /// one durable write, and gives each its number.
    fn journal_commands(
        &mut self,
        inputs: &mut [(Route, Sourced)],
        wall_now: UnixMillis,
    ) -> Result<()> {
        let commands: Vec<v1::JournaledCommand> = inputs
            .iter()
            .map(|(_, input)| v1::JournaledCommand {
                record: match &input.incoming {
                    Incoming::Record(record) => Some((**record).clone()),
                    _ => None,
                },
                caller: input.caller.clone().unwrap_or_default(),
                received_at: Some(wall_now.to_proto()),
            })
            .collect();
        let first = self.stores.partition(0).journal_commands(&commands)?;
        for ((_, input), n) in inputs.iter_mut().zip(first..) {
            input.position = Some(journal_position(n));
        }
        Ok(())
    }

    /// Rebuilds every partition's projections from its own log; returns the entries
    /// applied in all.
    ///
    /// # Errors
    /// A partition's store or log failed.
    pub fn replay(stores: &Stores, options: EngineOptions, workers: usize) -> Result<u64> {
        let layout = stores.layout();
        each_parallel(
            stores.iter().cloned().enumerate().collect(),
            workers,
            |(p, store): (usize, Store)| {
                Engine::replay_partition(
                    &store,
                    options.clone(),
                    Placement {
                        layout,
                        partition: p as u32,
                    },
                )
            },
        )
        .into_iter()
        .sum()
    }

    /// Opens partition `p`'s engine again from its store, once writes from elsewhere (its
    /// changelog's frames) were applied to it: the log after what its projections hold is
    /// applied, as after a crash, and what was cached of its offsets is read again.
    ///
    /// # Errors
    /// Its store or log failed.
    pub fn reopen(&mut self, p: u32) -> Result<()> {
        let i = p as usize;
        let store = self.parts[i].store().clone();
        let placement = self.parts[i].placement();
        self.parts[i] = Engine::open_partition(store, self.options.clone(), placement)?;
        self.offsets[i].clear();
        Ok(())
    }

    /// Sets the partitions this engine owns (see [`Partitions::owns`]); numbers beyond the
    /// layout are ignored.
    pub fn set_owned(&mut self, owned: impl IntoIterator<Item = u32>) {
        self.owned.iter_mut().for_each(|o| *o = false);
        for p in owned {
            if let Some(o) = self.owned.get_mut(p as usize) {
                *o = true;
            }
        }
        self.stores.set_owned(&self.owned);
    }

    /// Whether this engine owns partition `p` now: only an owned partition takes inputs,
    /// fires timers and delivers actions here.
    #[must_use]
    pub fn owns(&self, p: u32) -> bool {
        self.owned.get(p as usize).copied().unwrap_or(false)
    }

    /// The partitions this engine owns now, in order.
    #[must_use]
    pub fn owned(&self) -> Vec<u32> {
        (0..self.parts.len() as u32)
            .filter(|&p| self.owns(p))
            .collect()
    }

    /// The data directory's layout.
    #[must_use]
    pub fn layout(&self) -> Layout {
        self.stores.layout()
    }

    /// Every partition's store.
    #[must_use]
    pub fn stores(&self) -> &Stores {
        &self.stores
    }

    /// The partitions' engines, in partition order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &Engine> + '_ {
        self.parts.iter()
    }

    /// Partition `p`'s engine.
    ///
    /// # Panics
    /// `p` is not a partition.
    #[must_use]
    pub fn partition(&self, p: u32) -> &Engine {
        &self.parts[p as usize]
    }

    /// The core as the logs have configured it (every partition's is the same but for its
    /// share of the budgets): partition 0's.
    #[must_use]
    pub fn core(&self) -> &Core {
        self.parts[0].core()
    }

    /// The latest processing time any partition has applied.
    #[must_use]
    pub fn clock(&self) -> UnixMillis {
        self.parts
            .iter()
            .map(Engine::clock)
            .max()
            .unwrap_or_default()
    }

    /// Where a source resumes: the lowest position the partitions hold for it (`None`: one
    /// holds none, so the source starts at its beginning).
    ///
    /// # Errors
    /// A store error.
    pub fn offset(&mut self, source: &str) -> Result<Option<u64>> {
        let mut lowest = Some(u64::MAX);
        for p in 0..self.parts.len() {
            if self.owned[p] {
                lowest = lowest.min(self.stored_offset(p, source)?);
            }
        }
        Ok(lowest.filter(|&l| l != u64::MAX))
    }

    /// Where partition `p` holds a source up to (`None`: none of it).
    ///
    /// # Errors
    /// A store error.
    pub fn partition_offset(&mut self, p: u32, source: &str) -> Result<Option<u64>> {
        self.stored_offset((p as usize).min(self.parts.len() - 1), source)
    }

    fn stored_offset(&mut self, p: usize, source: &str) -> Result<Option<u64>> {
        if let Some(known) = self.offsets[p].get(source) {
            return Ok(*known);
        }
        let stored = self.parts[p].store().offset(source)?;
        self.offsets[p].insert(source.to_string(), stored);
        Ok(stored)
    }

    /// Whether partition `p` already holds the input at `position` (a restart re-reads
    /// from the lowest position any partition holds).
    fn holds(&mut self, p: usize, position: Option<&v1::SourcePosition>) -> Result<bool> {
        let Some(position) = position else {
            return Ok(false);
        };
        Ok(self
            .stored_offset(p, &position.source)?
            .is_some_and(|held| position.next_offset <= held))
    }

    /// Applies a batch of inputs at wall time `wall_now`, each routed by [`route`]: one
    /// group commit in every partition, in parallel. The outcomes are in input order.
    ///
    /// # Errors
    /// A partition's store failed: the partitions that committed keep their commit; a
    /// restart gives each what it lacks. Every later batch is refused
    /// ([`Error::Interrupted`]) until the partitions are opened again.
    pub fn ingest(&mut self, inputs: Vec<Sourced>, wall_now: UnixMillis) -> Result<BatchReport> {
        let layout = self.layout();
        let routed = inputs
            .into_iter()
            .map(|s| (route(&layout, &s.incoming), s))
            .collect();
        self.ingest_routed(routed, wall_now)
    }

    /// Applies inputs whose route the caller chose (on Kafka, a record's own partition),
    /// as [`Partitions::ingest`] does.
    ///
    /// # Errors
    /// As [`Partitions::ingest`].
    pub fn ingest_routed(
        &mut self,
        inputs: Vec<(Route, Sourced)>,
        wall_now: UnixMillis,
    ) -> Result<BatchReport> {
        let counts = crate::metrics::InputCounts::of(inputs.iter().map(|(_, s)| s));
        let started = std::time::Instant::now();
        let report = self.ingest_routed_unmeasured(inputs, wall_now)?;
        crate::metrics::committed(&counts, &report, started.elapsed());
        Ok(report)
    }

    fn ingest_routed_unmeasured(
        &mut self,
        inputs: Vec<(Route, Sourced)>,
        wall_now: UnixMillis,
    ) -> Result<BatchReport> {
        if let Some(why) = &self.interrupted {
            return Err(Error::Interrupted(why.clone()));
        }
        if self.parts.len() < 2 || !inputs.iter().any(needs_journal) {
            return self.ingest_segment(inputs, wall_now);
        }
        // A run of journaled commands goes alone, after everything before it is durable in
        // every partition: a start after a crash then completes it at its own place, since
        // a partition that lacks it lacks nothing before it and nothing after it.
        let mut report = BatchReport::default();
        let mut segment: Vec<(Route, Sourced)> = Vec::new();
        let mut journaled = false;
        for input in inputs {
            let journal = needs_journal(&input);
            if journal != journaled && !segment.is_empty() {
                report.add(self.ingest_part(std::mem::take(&mut segment), journaled, wall_now)?);
            }
            journaled = journal;
            segment.push(input);
        }
        if !segment.is_empty() {
            report.add(self.ingest_part(segment, journaled, wall_now)?);
        }
        Ok(report)
    }

    fn ingest_part(
        &mut self,
        mut inputs: Vec<(Route, Sourced)>,
        journal: bool,
        wall_now: UnixMillis,
    ) -> Result<BatchReport> {
        if journal && self.owned.contains(&false) {
            // A command without a position of its own must reach every partition, and some
            // are another engine's: refused before it is journaled (the control topic, which
            // every engine reads, is the way for it).
            let layout = self.layout();
            let outcomes = inputs
                .iter()
                .map(|(_, input)| Outcome::Elsewhere {
                    partition: home_of(&layout, &input.incoming),
                })
                .collect();
            return Ok(BatchReport {
                outcomes,
                ..BatchReport::default()
            });
        }
        if journal {
            self.prune_journal()?;
            self.journal_commands(&mut inputs, wall_now)?;
        }
        self.ingest_segment(inputs, wall_now)
    }

    /// One group commit in every partition (see [`Partitions::ingest`]).
    fn ingest_segment(
        &mut self,
        inputs: Vec<(Route, Sourced)>,
        wall_now: UnixMillis,
    ) -> Result<BatchReport> {
        let n = self.parts.len();
        let layout = self.layout();
        let mut per: Vec<Vec<Sourced>> = vec![Vec::new(); n];
        // For each input, the partition outcomes it takes its own from.
        let mut slots: Vec<Vec<Slot>> = Vec::with_capacity(inputs.len());
        // Inputs for a partition another engine owns, by index: the partition.
        let mut elsewhere: BTreeMap<usize, u32> = BTreeMap::new();
        let mut latest: BTreeMap<String, v1::SourcePosition> = BTreeMap::new();
        for (route, input) in inputs {
            if let Some(p) = &input.position {
                let newer = latest
                    .get(&p.source)
                    .is_none_or(|l| l.next_offset <= p.next_offset);
                if newer {
                    latest.insert(p.source.clone(), p.clone());
                }
            }
            let mut mine = Vec::new();
            match route {
                Route::One(p) if !self.owns(p.min(n as u32 - 1)) => {
                    elsewhere.insert(slots.len(), p.min(n as u32 - 1));
                }
                Route::One(p) => {
                    let p = (p as usize).min(n - 1);
                    if !self.holds(p, input.position.as_ref())? {
                        mine.push((p, per[p].len()));
                        per[p].push(input);
                    }
                }
                Route::All => {
                    let home = home_of(&layout, &input.incoming);
                    if !self.owned.contains(&true) {
                        // No partition here to apply it to (the group has not assigned any).
                        elsewhere.insert(slots.len(), home);
                    }
                    let home = home as usize;
                    // Its outcome is the home partition's, or (another engine owns that one)
                    // the first partition here that applies it: a command is decided the
                    // same way in every partition.
                    let mut applying = Vec::new();
                    for (p, theirs) in per.iter_mut().enumerate() {
                        if !self.owned[p] || self.holds(p, input.position.as_ref())? {
                            continue;
                        }
                        applying.push((p, theirs.len()));
                        theirs.push(input.clone());
                    }
                    let reporter = if self.owned[home] {
                        applying.iter().find(|(p, _)| *p == home)
                    } else {
                        applying.first()
                    };
                    mine.extend(reporter.copied());
                }
                Route::Split => {
                    // Acknowledgements of another engine's actions: its outbox keeps them,
                    // so it delivers them again (at least once, under the same keys).
                    for (p, part) in split_acks(&layout, input) {
                        if self.owned[p] && !self.holds(p, part.position.as_ref())? {
                            mine.push((p, per[p].len()));
                            per[p].push(part);
                        }
                    }
                }
            }
            slots.push(mine);
        }
        // Each partition moves on to the batch's latest positions, never back (after a
        // restart, a partition may hold more than the batch re-read).
        let mut work = Vec::with_capacity(n);
        for (p, inputs) in per.into_iter().enumerate() {
            let mut ahead = Vec::new();
            for position in latest.values() {
                if self.owned[p] && !self.holds(p, Some(position))? {
                    ahead.push(position.clone());
                }
            }
            work.push((inputs, ahead));
        }
        let moved: Vec<Vec<v1::SourcePosition>> = work.iter().map(|(_, a)| a.clone()).collect();
        let reports = self.each(work, |engine, (inputs, ahead)| {
            engine.ingest_at(inputs, &ahead, wall_now)
        });
        let reports = match reports {
            Ok(r) => r,
            Err(e) => {
                // Some partitions may have committed: read their positions again, and take
                // no other batch until a reopening completed this one.
                self.offsets.iter_mut().for_each(HashMap::clear);
                self.interrupted = Some(e.to_string());
                return Err(e);
            }
        };
        for (offsets, moved) in self.offsets.iter_mut().zip(moved) {
            for position in moved {
                offsets.insert(position.source, Some(position.next_offset));
            }
        }
        let mut report = merge(reports, &slots);
        for (i, partition) in elsewhere {
            report.outcomes[i] = Outcome::Elsewhere { partition };
        }
        Ok(report)
    }

    /// Finishes every partition's sweeps in progress.
    ///
    /// # Errors
    /// A store error.
    pub fn sweep(&mut self) -> Result<BatchReport> {
        let reports = self.each_engine(|engine| engine.sweep())?;
        Ok(merge(reports, &[]))
    }

    /// Moves every partition's event clock on to `until` (see [`Engine::advance_to`]).
    ///
    /// # Errors
    /// A store error.
    pub fn advance_to(&mut self, until: UnixMillis) -> Result<BatchReport> {
        let started = std::time::Instant::now();
        let reports = self.each_engine(|engine| engine.advance_to(until))?;
        let report = merge(reports, &[]);
        crate::metrics::committed(
            &crate::metrics::InputCounts::default(),
            &report,
            started.elapsed(),
        );
        Ok(report)
    }

    /// Fires every partition's due timers (see [`Engine::tick`]).
    ///
    /// # Errors
    /// A store error.
    pub fn tick(&mut self, wall_now: UnixMillis) -> Result<BatchReport> {
        let started = std::time::Instant::now();
        let reports = self.each_engine(|engine| engine.tick(wall_now))?;
        let report = merge(reports, &[]);
        crate::metrics::committed(
            &crate::metrics::InputCounts::default(),
            &report,
            started.elapsed(),
        );
        Ok(report)
    }

    /// Fires the named timers in the partitions of their contacts, each at its time (see
    /// [`Engine::fire_timers`]).
    ///
    /// # Errors
    /// A store error.
    pub fn fire_timers(&mut self, fired: Vec<(v1::TimerFired, UnixMillis)>) -> Result<BatchReport> {
        let layout = self.layout();
        let mut per: Vec<Vec<(v1::TimerFired, UnixMillis)>> = vec![Vec::new(); self.parts.len()];
        for (timer, at) in fired {
            let p = layout.partition_of(&timer.contact_id) as usize;
            per[p].push((timer, at));
        }
        let reports = self.each(per, |engine, fired| {
            if fired.is_empty() {
                Ok(BatchReport::default())
            } else {
                engine.fire_timers(fired)
            }
        })?;
        Ok(merge(reports, &[]))
    }

    /// Delivers at most `limit` queued actions through `dispatch`, from the partitions in
    /// turn (see [`Engine::dispatch`]).
    ///
    /// # Errors
    /// A store error, or `dispatch` failed (the actions stay queued).
    pub fn dispatch(
        &mut self,
        limit: usize,
        dispatch: &mut dyn FnMut(&[v1::Action]) -> std::io::Result<()>,
    ) -> Result<usize, DispatchError> {
        let n = self.parts.len();
        let mut sent = 0;
        for i in 0..n {
            if sent >= limit {
                break;
            }
            let p = (self.next_dispatch + i) % n;
            if !self.owned[p] {
                continue;
            }
            sent += self.parts[p].dispatch(limit - sent, &mut |actions| {
                dispatch(actions)?;
                crate::metrics::actions_done(actions.iter(), "copied");
                Ok(())
            })?;
        }
        self.next_dispatch = (self.next_dispatch + 1) % n;
        Ok(sent)
    }

    /// Whether every partition's outbox is empty: every action delivered (or given up on).
    ///
    /// # Errors
    /// A store error.
    pub fn outbox_is_empty(&self) -> Result<bool, Error> {
        for (p, store) in self.stores.iter().enumerate() {
            if self.owned[p] && !store.outbox(1)?.is_empty() {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Hands queued publications (at most `limit`) to `publish`, from the partitions in
    /// order (see [`Engine::publish`]).
    ///
    /// # Errors
    /// A store error, or `publish` failed (they stay queued).
    pub fn publish(
        &mut self,
        limit: usize,
        publish: &mut dyn FnMut(&[Queued]) -> std::io::Result<()>,
    ) -> Result<usize, DispatchError> {
        let mut sent = 0;
        for (part, owned) in self.parts.iter_mut().zip(&self.owned) {
            if sent >= limit {
                break;
            }
            if *owned {
                sent += part.publish(limit - sent, publish)?;
            }
        }
        Ok(sent)
    }

    /// Waits until every partition's commits so far are durable (see
    /// [`EngineOptions::deferred_flush`]).
    ///
    /// # Errors
    /// A flush failed.
    pub fn wait_synced(&mut self) -> Result<()> {
        self.each_engine(|engine| engine.wait_synced()).map(|_| ())
    }

    /// A mark of every partition's commits so far, for [`Partitions::wait_durable`].
    #[must_use]
    pub fn commit_marks(&self) -> Vec<u64> {
        self.parts.iter().map(Engine::commit_mark).collect()
    }

    /// Waits until every partition's commits up to its mark are durable: the commits of a
    /// batch applied under [`EngineOptions::deferred_flush`], before anything of it may be
    /// told (answers, actions delivered).
    ///
    /// # Errors
    /// A flush failed.
    pub fn wait_durable(&mut self, marks: &[u64]) -> Result<()> {
        for (engine, mark) in self.parts.iter().zip(marks) {
            engine.wait_durable(*mark)?;
        }
        Ok(())
    }

    /// Checkpoints every partition (see [`Engine::checkpoint`]).
    ///
    /// # Errors
    /// A store error.
    pub fn checkpoint(&mut self) -> Result<()> {
        // Every partition, owned or not: one another engine owns now still holds in memory
        // what this one applied while it owned it, and the files must have it.
        each_parallel(self.parts.iter().collect(), self.workers, |e: &Engine| {
            e.checkpoint()
        })
        .into_iter()
        .collect::<Result<Vec<()>>>()
        .map(|_| ())
    }

    /// Runs `work` on every partition, on the worker threads; the results in partition
    /// order, or the first error.
    fn each_engine<R: Send + Default>(
        &mut self,
        work: impl Fn(&mut Engine) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        self.each(vec![(); self.parts.len()], |engine, ()| work(engine))
    }

    /// Runs `work` on every partition with its input, on the worker threads; the results
    /// are in partition order, or the first error.
    ///
    /// A partition this engine does not own does no work: its result is `R::default()`.
    fn each<T: Send, R: Send + Default>(
        &mut self,
        inputs: Vec<T>,
        work: impl Fn(&mut Engine, T) -> Result<R> + Sync,
    ) -> Result<Vec<R>> {
        let owned = &self.owned;
        let jobs: Vec<(usize, &mut Engine, T)> = self
            .parts
            .iter_mut()
            .zip(inputs)
            .enumerate()
            .map(|(p, (engine, input))| (p, engine, input))
            .collect();
        each_parallel(jobs, self.workers, |(p, engine, input)| {
            if !owned[p] {
                return Ok(R::default());
            }
            // What a partition logs while it works says which partition it is.
            let _span = tracing::info_span!("partition", partition = p).entered();
            work(engine, input)
        })
        .into_iter()
        .collect()
    }
}

/// Runs `work` on each job, the jobs dealt round-robin to `workers` threads (the calling
/// thread is one of them); the results are in job order.
fn each_parallel<T: Send, R: Send>(
    jobs: Vec<T>,
    workers: usize,
    work: impl Fn(T) -> R + Sync,
) -> Vec<R> {
    let workers = workers.clamp(1, jobs.len().max(1));
    if workers == 1 {
        return jobs.into_iter().map(work).collect();
    }
    let count = jobs.len();
    let mut groups: Vec<Vec<(usize, T)>> = (0..workers).map(|_| Vec::new()).collect();
    for (i, job) in jobs.into_iter().enumerate() {
        groups[i % workers].push((i, job));
    }
    let mut results: Vec<Option<R>> = (0..count).map(|_| None).collect();
    let work = &work;
    std::thread::scope(|scope| {
        let mut groups = groups.into_iter();
        let own = groups.next().unwrap_or_default();
        let handles: Vec<_> = groups
            .map(|group| {
                scope.spawn(move || {
                    group
                        .into_iter()
                        .map(|(i, job)| (i, work(job)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, job) in own {
            results[i] = Some(work(job));
        }
        for handle in handles {
            match handle.join() {
                Ok(done) => {
                    for (i, r) in done {
                        results[i] = Some(r);
                    }
                }
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.expect("every job ran"))
        .collect()
}

/// The partition that parks a command's refusal and tells its result (its campaign's, see
/// [`Placement::home_of`]); partition 0 for anything else.
fn home_of(layout: &Layout, incoming: &Incoming) -> u32 {
    match incoming {
        Incoming::Record(r) => match &r.input {
            Some(v1::ingest_record::Input::Command(c)) => Placement::home_of(layout, c),
            _ => 0,
        },
        _ => 0,
    }
}

/// Splits acknowledgements among the partitions of the contacts they concern.
fn split_acks(layout: &Layout, input: Sourced) -> Vec<(usize, Sourced)> {
    let Sourced {
        incoming,
        position,
        caller,
    } = input;
    let Incoming::Acks(acks) = incoming else {
        return vec![(
            0,
            Sourced {
                incoming,
                position,
                caller,
            },
        )];
    };
    let mut by_partition: BTreeMap<usize, Vec<v1::ActionAck>> = BTreeMap::new();
    for ack in acks.acks {
        by_partition
            .entry(layout.partition_of(&ack.contact_id) as usize)
            .or_default()
            .push(ack);
    }
    by_partition
        .into_iter()
        .map(|(p, acks)| {
            (
                p,
                Sourced {
                    incoming: Incoming::Acks(v1::ActionAcks { acks }),
                    position: position.clone(),
                    caller: caller.clone(),
                },
            )
        })
        .collect()
}

/// One report for the batch: the partitions' reports summed, and each input's outcome
/// taken from its partitions (the first that applied it; a duplicate where none did).
fn merge(reports: Vec<BatchReport>, slots: &[Vec<Slot>]) -> BatchReport {
    let mut total = BatchReport::default();
    let mut outcomes: Vec<Vec<Outcome>> = Vec::with_capacity(reports.len());
    for mut r in reports {
        outcomes.push(std::mem::take(&mut r.outcomes));
        total.add(r);
    }
    total.outcomes = slots
        .iter()
        .map(|mine| {
            let theirs = mine
                .iter()
                .filter_map(|&(p, i)| outcomes.get(p).and_then(|o| o.get(i)));
            let mut best = Outcome::Duplicate;
            for o in theirs {
                if best == Outcome::Duplicate {
                    best = o.clone();
                }
            }
            best
        })
        .collect();
    total
}

/// The position of the journaled command numbered `n`: a partition that applied it holds
/// the journal up to `n + 1`.
fn journal_position(n: u64) -> v1::SourcePosition {
    v1::SourcePosition {
        source: COMMAND_JOURNAL.into(),
        offset: n,
        next_offset: n + 1,
    }
}

/// Whether an input is a command for every partition without a position of its own: it
/// goes through the command journal.
fn needs_journal((route, input): &(Route, Sourced)) -> bool {
    *route == Route::All
        && input.position.is_none()
        && matches!(&input.incoming, Incoming::Record(r)
            if matches!(r.input, Some(v1::ingest_record::Input::Command(_))))
}
