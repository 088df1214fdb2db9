//! The durable engine of one partition: inputs are appended to the log and applied to the
//! projections in group-committed atomic batches; actions leave through the outbox.
//!
//! One call to [`Engine::ingest`] is one group commit: every input of the call, every timer
//! that falls due meanwhile, their log entries, the state they change, the actions they emit
//! and the source offsets they advance go to the store in one atomic batch. [`Engine::replay`]
//! applies the same log entries through the same code (`Pending::apply`), which is why replay
//! rebuilds the projections byte for byte.
//!
//! The group commit in progress (`Pending`) is one type over several rooms: `pending` (the
//! batch, its overlays, applying a log entry to a contact and recording the effects),
//! `intake` (validation, dedupe, dead letters, publications), `timers` (which fire when),
//! `commands` (lifecycle, sweeps over every contact), `acks` (delivery results). `inputs`
//! and `report` hold what a caller hands in and gets back.

use canvass_core::partition::Share;
use canvass_core::{Catalog, Core, SpanMillis, UnixMillis, lifecycle};
use canvass_proto::v1::{self, log_entry};
use canvass_store::{Layout, Store, WriteBatch};

mod acks;
mod commands;
mod inputs;
mod intake;
mod pending;
mod report;
mod timers;

pub use inputs::{Incoming, Sourced, check_record, latest_input_time};
pub use report::{BatchReport, Outcome, Warning, WarningKind};

use pending::Pending;

/// Engine failures: storage failures stop the engine; nothing half-written is visible.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The store failed; the batch in progress was not applied.
    #[error(transparent)]
    Store(#[from] canvass_store::Error),
    /// A spec stored in the log no longer compiles (written by an incompatible engine).
    #[error("stored spec {id} v{version} does not compile: {reason}")]
    StoredSpec {
        /// Campaign id.
        id: String,
        /// Version.
        version: u32,
        /// The problems.
        reason: String,
    },
    /// A batch failed after some partitions committed it: only reopening the partitions
    /// (which completes it) may go on, or a later batch would move past what it left out.
    #[error("an earlier batch failed in some partitions ({0}); reopen the data directory")]
    Interrupted(String),
}

impl Error {
    /// Whether the store's disk failed (full, I/O error), as opposed to bad data.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        matches!(self, Self::Store(e) if e.is_storage())
    }
}

/// Result of engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Where processing time comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClockMode {
    /// The wall clock, read once per group commit; timers fire when it passes their due time.
    Wall,
    /// Event time: the clock is the latest event time seen, and timers fire when it passes
    /// their due time. The outcome depends only on the input order, not on speed or batching.
    Event,
}

/// How the engine runs.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Where processing time comes from.
    pub clock: ClockMode,
    /// How long event ids are remembered to recognise duplicates.
    pub dedupe_retention: SpanMillis,
    /// Queue command results and dead letters as publications for outside topics (audit,
    /// dead letters), drained by [`Engine::publish`]. Off for sources without such topics.
    pub publish: bool,
    /// An input dated more than this ahead of the wall clock is parked as a dead letter,
    /// whatever the clock mode: under the event clock, one event dated in year 9999 would
    /// otherwise fire every pending timer at once. `None`: no bound (tests and simulations
    /// whose wall clock is not the real one).
    pub max_lead: Option<SpanMillis>,
    /// How late an event may come and still be applied before the timers due after its
    /// time: a timer fires only once the clock has passed its due time by this much, so
    /// an event dated before a deadline but delivered up to this late still wins. An event
    /// dated further behind the clock is applied at the clock's time and counted as late.
    pub allowed_lateness: SpanMillis,
    /// Return from a commit once it is applied, its flush running on a thread of its own,
    /// so that the next batch is computed while the disk writes this one: the next commit
    /// (or [`Engine::wait_synced`]) waits for it. Nothing of a commit leaves the engine
    /// before its flush ended (the outbox is read up to the last flush); the caller answers
    /// a batch's submitters only after that.
    pub deferred_flush: bool,
}

impl Default for EngineOptions {
    fn default() -> Self {
        Self {
            clock: ClockMode::Wall,
            dedupe_retention: SpanMillis(7 * canvass_core::time::DAY_MILLIS),
            publish: false,
            max_lead: None,
            allowed_lateness: SpanMillis(0),
            deferred_flush: false,
        }
    }
}

/// Which partition of which layout an engine runs: its share of each budget, and whether
/// it is the home of a command (the one partition that parks a refused command and
/// queues a command's result for the audit topic, so that each is told once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Placement {
    /// The data directory's layout.
    pub layout: Layout,
    /// This partition.
    pub partition: u32,
}

impl Placement {
    /// The share of each budget this partition decides for.
    #[must_use]
    pub fn share(&self) -> Share {
        Share {
            index: self.partition,
            count: self.layout.partitions,
        }
    }

    /// The home partition of a command: the one its campaign id maps to (partition 0 for
    /// the engine-wide ones).
    #[must_use]
    pub fn home_of(layout: &Layout, command: &v1::CampaignCommand) -> u32 {
        match command.command.as_ref().map(lifecycle::campaign_of) {
            Some(campaign) if !campaign.is_empty() => layout.partition_of(campaign),
            _ => 0,
        }
    }

    fn is_home(&self, command: &v1::CampaignCommand) -> bool {
        Self::home_of(&self.layout, command) == self.partition
    }
}

/// The durable engine over one store: one partition.
#[derive(Debug)]
pub struct Engine {
    store: Store,
    core: Core,
    options: EngineOptions,
    placement: Placement,
    /// The latest processing time applied: the clock never goes back.
    clock: UnixMillis,
    /// The last outbox position [`Engine::dispatch`] delivered and removed: positions only
    /// grow, so the next call reads after it instead of stepping again over the removals
    /// the in-memory table holds for the ones before.
    dispatched: Option<(u64, u32)>,
    /// A sweep may be in progress (one was left in the store or started since the last
    /// [`Engine::sweep`]): only then do `ingest` and `tick` read the store's sweeps.
    sweeping: bool,
}

impl Engine {
    /// Opens the engine on a store, loading the campaigns its log has defined and applying
    /// again the log entries written after the last checkpoint (a crash lost their effects
    /// held in memory; the log kept the entries).
    pub fn open(store: Store, options: EngineOptions) -> Result<Self> {
        Self::open_partition(store, options, Placement::default())
    }

    /// Opens the engine of one partition of a layout (see [`Engine::open`]).
    pub fn open_partition(
        store: Store,
        options: EngineOptions,
        placement: Placement,
    ) -> Result<Self> {
        let catalog = load_catalog(&store)?;
        let applied = store.applied_seq()?;
        let (core, _) = apply_log(
            &store,
            &options,
            placement,
            applied + 1,
            Core::new(catalog).with_share(placement.share()),
            UnixMillis::default(),
        )?;
        let clock = store.last_applied_at()?;
        let sweeping = !store.sweeps()?.is_empty();
        Ok(Self {
            store,
            core,
            options,
            placement,
            clock,
            dispatched: None,
            sweeping,
        })
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The processing clock (latest time applied).
    #[must_use]
    pub fn clock(&self) -> UnixMillis {
        self.clock
    }

    /// Which partition this engine runs.
    #[must_use]
    pub fn placement(&self) -> Placement {
        self.placement
    }

    /// The core as the log has configured it so far (campaigns, versions, policy).
    #[must_use]
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Applies a batch of inputs as one group commit at wall time `wall_now` (ignored with the
    /// event clock), firing the timers that fall due before each input.
    pub fn ingest(&mut self, inputs: Vec<Sourced>, wall_now: UnixMillis) -> Result<BatchReport> {
        self.ingest_at(inputs, &[], wall_now)
    }

    /// Applies a batch as [`Engine::ingest`] does, and moves the offsets of `positions` with
    /// it: where a batch split among partitions reached in each source, written by every
    /// partition whether or not it took an input of it.
    pub fn ingest_at(
        &mut self,
        inputs: Vec<Sourced>,
        positions: &[v1::SourcePosition],
        wall_now: UnixMillis,
    ) -> Result<BatchReport> {
        let mut report = self.sweep()?;
        let mut pending = self.pending()?;
        if self.options.clock == ClockMode::Wall {
            pending.fire_due(wall_now.max(self.clock))?;
        }
        for input in inputs {
            pending.accept(input, wall_now)?;
            // A command that concerns more contacts than one entry steps: the rest of its
            // sweep comes before the next input, in commits of their own.
            if pending.sweeping {
                self.sweeping = true;
                report.add(self.finish(pending)?);
                report.add(self.sweep()?);
                pending = self.pending()?;
            }
        }
        for p in positions {
            pending.offsets.insert(p.source.clone(), p.next_offset);
        }
        report.add(self.finish(pending)?);
        Ok(report)
    }

    fn pending(&self) -> Result<Pending> {
        Pending::new(
            &self.store,
            self.core.clone(),
            self.options.clone(),
            self.placement,
            self.clock,
        )
    }

    /// Finishes the sweeps in progress (a command's follow-up for every contact), one
    /// commit per slice of contacts. Inputs wait for them, so none sees a sweep half done;
    /// after a crash the next call goes on where the last commit ended.
    pub fn sweep(&mut self) -> Result<BatchReport> {
        let mut report = BatchReport::default();
        if !self.sweeping {
            return Ok(report);
        }
        while let Some(sweep) = self.store.sweeps()?.into_iter().next() {
            let mut pending = self.pending()?;
            pending.sweep_step(&sweep)?;
            report.add(self.finish(pending)?);
        }
        self.sweeping = false;
        Ok(report)
    }

    /// Under the event clock, moves time on to `until` once the input has ended: fires, in
    /// order, every timer due at or before it (those the firings arm included), each a log
    /// entry at its due time, in commits of at most [`ADVANCE_SLICE`] timers (what
    /// `simulate` does at the end of its input). The clock itself moves only with what fires.
    pub fn advance_to(&mut self, until: UnixMillis) -> Result<BatchReport> {
        let until = until.min(latest_input_time());
        let mut report = self.sweep()?;
        loop {
            let mut pending = self.pending()?;
            // The input has ended: nothing late can come, so no lateness is waited for.
            let until = until.max(self.clock);
            let fired = pending.fire_due_at_most(until, until, ADVANCE_SLICE)?;
            report.add(self.finish(pending)?);
            if fired < ADVANCE_SLICE {
                return Ok(report);
            }
        }
    }

    /// Fires the named timers, each at its time, in one commit (a migration that applies an
    /// old log again fires each timer where that log fired it).
    pub fn fire_timers(&mut self, fired: Vec<(v1::TimerFired, UnixMillis)>) -> Result<BatchReport> {
        let mut pending = self.pending()?;
        for (timer, at) in fired {
            pending.report.timers_fired += 1;
            pending.append(log_entry::Input::TimerFired(timer), None, at)?;
        }
        self.finish(pending)
    }

    /// Fires the timers due at or before `now` (with the event clock: at or before the clock).
    pub fn tick(&mut self, wall_now: UnixMillis) -> Result<BatchReport> {
        let mut report = self.sweep()?;
        let mut pending = self.pending()?;
        let now = match self.options.clock {
            ClockMode::Wall => wall_now.max(self.clock),
            ClockMode::Event => self.clock,
        };
        pending.fire_due(now)?;
        report.add(self.finish(pending)?);
        Ok(report)
    }

    fn finish(&mut self, pending: Pending) -> Result<BatchReport> {
        self.finish_then(pending, true)
    }

    /// Commits `pending`; under [`EngineOptions::deferred_flush`] its flush starts on a
    /// thread of its own if `flush_now`, else the next flush covers it.
    fn finish_then(&mut self, pending: Pending, flush_now: bool) -> Result<BatchReport> {
        let (batch, report, core, clock) = pending.into_batch();
        if self.options.deferred_flush {
            // Nothing written (an idle tick): no flush to start.
            let wrote = !batch.is_empty();
            self.store.commit_unsynced(batch)?;
            // The batch is in the store: memory follows it whatever the flush does next.
            self.core = core;
            self.clock = clock;
            if flush_now && wrote {
                self.store.sync_in_background()?;
            }
        } else {
            self.store.commit(batch)?;
            self.core = core;
            self.clock = clock;
        }
        Ok(report)
    }

    /// Delivers queued actions through `dispatch` (at most `limit`), then logs their
    /// acknowledgements and removes them from the outbox in one commit. An action is removed
    /// only after `dispatch` returned: a crash in between delivers it again, under the same
    /// idempotency key.
    pub fn dispatch(
        &mut self,
        limit: usize,
        dispatch: &mut dyn FnMut(&[v1::Action]) -> std::io::Result<()>,
    ) -> Result<usize, DispatchError> {
        let queued = self
            .store
            .outbox_durable_after(self.dispatched, limit)
            .map_err(Error::from)?;
        let Some(&(last, _)) = queued.last() else {
            return Ok(0);
        };
        let actions: Vec<v1::Action> = queued.iter().map(|(_, a)| a.clone()).collect();
        dispatch(&actions).map_err(DispatchError::Deliver)?;
        let acks = v1::ActionAcks {
            acks: queued
                .iter()
                .map(|((seq, index), a)| v1::ActionAck {
                    idempotency_key: a.idempotency_key.clone(),
                    contact_id: a.contact_id.clone(),
                    outcome: v1::DeliveryOutcome::Delivered as i32,
                    detail: String::new(),
                    outbox_seq: *seq,
                    outbox_index: *index,
                    kind: a.kind,
                    // A transport's acknowledgement: kept short, campaigns do not see it.
                    ..Default::default()
                })
                .collect(),
        };
        let mut pending = self.pending()?;
        pending.append(log_entry::Input::ActionAcks(acks), None, self.clock)?;
        // An acknowledgement lost in a crash only delivers its actions again: it need not
        // wait for (or hold up) a flush of its own.
        self.finish_then(pending, false)?;
        self.dispatched = Some(last);
        Ok(actions.len())
    }

    /// Hands queued publications (at most `limit`, oldest first) to `publish`, then removes
    /// them in one commit. They are removed only after `publish` returned: a crash in
    /// between publishes them again.
    pub fn publish(
        &mut self,
        limit: usize,
        publish: &mut dyn FnMut(&[Queued]) -> std::io::Result<()>,
    ) -> Result<usize, DispatchError> {
        // A publication leaves only once the commit that queued it is durable.
        if self.options.deferred_flush {
            self.wait_synced()?;
        }
        let queued = self.store.publications(limit).map_err(Error::from)?;
        if queued.is_empty() {
            return Ok(0);
        }
        publish(&queued).map_err(DispatchError::Deliver)?;
        let mut batch = WriteBatch::new();
        for (n, _) in &queued {
            batch.remove_publication(*n);
        }
        self.store.commit(batch).map_err(Error::from)?;
        Ok(queued.len())
    }

    /// Throws the projections away and rebuilds them from the log, durably. Returns the
    /// entries applied.
    pub fn replay(store: &Store, options: EngineOptions) -> Result<u64> {
        Self::replay_partition(store, options, Placement::default())
    }

    /// Rebuilds one partition's projections from its log (see [`Engine::replay`]).
    pub fn replay_partition(
        store: &Store,
        options: EngineOptions,
        placement: Placement,
    ) -> Result<u64> {
        store.clear_projections()?;
        let core = Core::default().with_share(placement.share());
        let (_, applied) = apply_log(store, &options, placement, 1, core, UnixMillis::default())?;
        store.checkpoint()?;
        Ok(applied)
    }

    /// Writes the projections held in memory to the store (see [`Store::checkpoint`]): a
    /// restart then has no log tail to apply again.
    pub fn checkpoint(&self) -> Result<()> {
        self.wait_synced()?;
        Ok(self.store.checkpoint()?)
    }

    /// A mark of the commits made so far, for [`Engine::wait_durable`].
    #[must_use]
    pub fn commit_mark(&self) -> u64 {
        self.store.commit_mark()
    }

    /// Waits until the commits up to `mark` are durable.
    pub fn wait_durable(&self, mark: u64) -> Result<()> {
        Ok(self.store.wait_durable(mark)?)
    }

    /// Waits until every commit so far is durable (see [`EngineOptions::deferred_flush`]).
    pub fn wait_synced(&self) -> Result<()> {
        self.store.wait_synced()?;
        Ok(self.store.sync()?)
    }
}

/// Applies the log from `from` to its end to the projections, through the same code as live
/// processing, in bounded chunks (one commit each). Returns the catalog it leaves and the
/// entries applied.
fn apply_log(
    store: &Store,
    options: &EngineOptions,
    placement: Placement,
    from: u64,
    core: Core,
    clock: UnixMillis,
) -> Result<(Core, u64)> {
    let mut pending = Pending::new(store, core, options.clone(), placement, clock)?;
    let mut applied = 0;
    let mut from = from;
    loop {
        let entries: Vec<v1::LogEntry> =
            store.log_from(from).take(4096).collect::<Result<_, _>>()?;
        if entries.is_empty() {
            break;
        }
        for entry in &entries {
            pending.apply(entry)?;
            applied += 1;
            // A sweep's entries each change up to a slice of contacts: commit before the
            // batch holds many of them.
            if pending.contacts.len() >= SWEEP_SLICE {
                let (batch, _, core, clock) = pending.into_batch();
                store.commit(batch)?;
                pending = Pending::new(store, core, options.clone(), placement, clock)?;
            }
        }
        from = entries.last().map_or(from, |e| e.seq + 1);
        let (batch, _, core, clock) = pending.into_batch();
        store.commit(batch)?;
        pending = Pending::new(store, core, options.clone(), placement, clock)?;
    }
    Ok((pending.core, applied))
}

/// A publication queued in the store, with its number.
pub type Queued = (u64, v1::Publication);

/// Why actions could not be dispatched.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] Error),
    /// The receiver failed; the actions stay queued.
    #[error("delivering actions failed: {0}")]
    Deliver(std::io::Error),
}

impl DispatchError {
    /// Whether a disk failed: the store's, or the one the actions are written to (an action
    /// that cannot be encoded is a defect, not a disk).
    #[must_use]
    pub fn is_storage(&self) -> bool {
        match self {
            Self::Engine(e) => e.is_storage(),
            Self::Deliver(e) => e.kind() != std::io::ErrorKind::InvalidData,
        }
    }
}

/// Most timers [`Engine::advance_to`] fires in one commit.
pub const ADVANCE_SLICE: usize = 4096;

/// Contacts one log entry steps for a command that concerns everyone; a sweep steps the
/// others, this many per entry. Part of the log's meaning: replay steps the same slices.
const SWEEP_SLICE: usize = 4096;

fn load_catalog(store: &Store) -> Result<Catalog> {
    let specs = store.specs()?;
    let mut catalog =
        lifecycle::catalog_from(&specs, &store.lifecycles()?).map_err(|e| Error::StoredSpec {
            id: e.campaign_id.clone(),
            version: 0,
            reason: e.to_string(),
        })?;
    for material in store.materials()? {
        catalog.put_material(material);
    }
    if let Some(policy) = store.policy()? {
        // It was checked before it was logged.
        if let Ok(p) = canvass_core::policy::compile(&policy) {
            catalog.set_policy(p);
        }
    }
    Ok(catalog)
}
