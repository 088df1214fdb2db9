//! The durable engine: inputs are appended to the log and applied to the projections in
//! group-committed atomic batches; actions leave through the outbox.
//!
//! One call to [`Engine::ingest`] is one group commit: every input of the call, every timer
//! that falls due meanwhile, their log entries, the state they change, the actions they emit
//! and the source offsets they advance go to the store in one atomic batch, flushed before
//! the call returns. [`Engine::replay`] applies the same log entries through the same code
//! ([`Pending::apply`]), which is why replay rebuilds the projections byte for byte.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use canvass_core::partition::Share;
use canvass_core::{
    Catalog, Core, Effect, Input, SpanMillis, TimerId, UnixMillis,
    lifecycle::{self, FollowUp},
    stats::{self, Cause},
    validate::kind_name,
};
use canvass_proto::{
    v1::{self, log_entry},
    wkt,
};
use canvass_store::{EMBEDDED_PARTITION, LOG_SCHEMA_VERSION, Layout, Store, WriteBatch};
use rust_decimal::Decimal;

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

/// One input read from a source, or a line that could not be read as one.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A well-formed input (boxed: it is large).
    Record(Box<v1::IngestRecord>),
    /// Results reported for delivered actions (by the gRPC delivery): logged, and the
    /// actions leave the outbox. Acknowledgements of actions no longer queued are dropped.
    Acks(v1::ActionAcks),
    /// A line that is not an input: parked as a dead letter.
    Malformed {
        /// The raw bytes, unchanged.
        payload: Vec<u8>,
        /// The record's key, unchanged (empty for sources without keys).
        key: Vec<u8>,
        /// Why it was rejected.
        reason: String,
    },
}

/// An input with where it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    /// The input.
    pub incoming: Incoming,
    /// Source position; the source's stored offset moves to `next_offset` with this input.
    pub position: Option<v1::SourcePosition>,
    /// Who submitted it through an authenticated API (logged with it); `None` for file and
    /// Kafka sources.
    pub caller: Option<String>,
}

/// What one group commit did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BatchReport {
    /// Log entries appended.
    pub entries: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Actions queued in the outbox.
    pub actions: u64,
    /// Events ignored as duplicates.
    pub duplicates: u64,
    /// Inputs parked as dead letters.
    pub dead_letters: u64,
    /// What became of each input given to [`Engine::ingest`], in order.
    pub outcomes: Vec<Outcome>,
    /// Conditions that could not be evaluated and inputs the core could not apply as the
    /// spec intends, in the order they happened: kept in no table, told to the operator.
    pub warnings: Vec<Warning>,
    /// Enrollments the core refused (already in, re-entry rules).
    pub enrollments_skipped: u64,
}

/// What a [`Warning`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WarningKind {
    /// A condition failed to evaluate and was taken as false.
    ConditionFailed,
    /// The input could not be applied as the spec intends.
    Fault,
}

/// Something the core reported that changes no table: a condition that failed to evaluate
/// (treated as false), or an input it could not apply as the spec intends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    /// Processing time of the step.
    pub at: UnixMillis,
    /// The contact stepped.
    pub contact_id: String,
    /// The campaign concerned.
    pub campaign_id: String,
    /// Which of the two it is.
    pub kind: WarningKind,
    /// What happened, e.g. `states.a.transitions[0].onEvent.guard: No such key: rating
    /// (treated as false)`.
    pub message: String,
}

impl BatchReport {
    /// Adds what a later commit of the same call (or another partition) did.
    pub(crate) fn add(&mut self, other: BatchReport) {
        self.entries += other.entries;
        self.timers_fired += other.timers_fired;
        self.actions += other.actions;
        self.duplicates += other.duplicates;
        self.dead_letters += other.dead_letters;
        self.outcomes.extend(other.outcomes);
        self.warnings.extend(other.warnings);
        self.enrollments_skipped += other.enrollments_skipped;
    }
}

/// What became of one input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Appended to the log as entry `seq` and applied.
    Logged {
        /// Its log entry.
        seq: u64,
    },
    /// Its event id (or, for acknowledgements, every action) was already applied.
    Duplicate,
    /// Not an input (malformed, a required field missing): parked as a dead letter.
    DeadLetter {
        /// Why.
        reason: String,
    },
    /// A command the campaign's lifecycle does not allow now: parked, not applied.
    Refused {
        /// Why.
        reason: String,
    },
}

/// The latest time an input may carry, or the event clock be moved to: the times the engine
/// derives from it (a deadline, a timeout) lie up to [`MAX_SPAN`](canvass_core::time::MAX_SPAN)
/// after it and must stay within the JSON mapping's range (year 9999) too.
#[must_use]
pub fn latest_input_time() -> UnixMillis {
    UnixMillis((253_402_300_799 - canvass_core::time::MAX_SPAN.0 / 1000) * 1000)
}

/// Requirements the JSON mapping cannot express, and the bounds it does express that a
/// protobuf input (Kafka, gRPC) could break: every input path is held to the same.
pub fn check_record(record: &v1::IngestRecord) -> Option<String> {
    use v1::ingest_record::Input;
    let missing = |field: &str| Some(format!("field `{field}`: required"));
    let latest = latest_input_time().to_proto();
    let out_of_range = |field: &str, t: Option<&wkt::Timestamp>| {
        let t = t?;
        if let Some(why) = t.range_problem() {
            return Some(format!("field `{field}`: {why}"));
        }
        (*t > latest).then(|| {
            format!(
                "field `{field}`: {t} is after {latest}: the times derived from it (up to 100 years later) must stay within year 9999"
            )
        })
    };
    if let Some(problem) = out_of_range("at", record.at.as_ref()) {
        return Some(problem);
    }
    match &record.input {
        None => Some("the record holds none of `contact`, `event`, `command`".into()),
        Some(Input::Contact(c)) if c.id.trim().is_empty() => missing("contact.id"),
        Some(Input::Contact(c)) => {
            c.purchases.iter().enumerate().find_map(|(i, p)| {
                out_of_range(&format!("contact.purchases[{i}].at"), p.at.as_ref())
            })
        }
        Some(Input::Event(e)) if e.id.trim().is_empty() => missing("event.id"),
        Some(Input::Event(e)) if e.r#type.trim().is_empty() => missing("event.type"),
        Some(Input::Event(e)) if e.contact_id.trim().is_empty() => missing("event.contactId"),
        Some(Input::Event(e)) if e.occurred_at.is_none() => missing("event.occurredAt"),
        Some(Input::Event(e)) => out_of_range("event.occurredAt", e.occurred_at.as_ref()),
        Some(Input::Command(_)) => None,
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
            self.store.commit_unsynced(batch)?;
            if flush_now {
                self.store.sync_in_background()?;
            }
        } else {
            self.store.commit(batch)?;
        }
        self.core = core;
        self.clock = clock;
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
        self.store.sync()?;
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

/// A follow-up for everyone as the log records it.
fn follow_up_of(input: &Input) -> Option<v1::FollowUp> {
    use v1::follow_up::Kind;
    let kind = match input {
        Input::Launch { campaign_id } => Kind::Launch(campaign_id.clone()),
        Input::Migrate { campaign_id } => Kind::Migrate(campaign_id.clone()),
        Input::Resume { campaign_id } => Kind::Resume(campaign_id.clone()),
        Input::Stop { campaign_id } => Kind::Stop(campaign_id.clone()),
        Input::ReassignLeads(r) => Kind::ReassignLeads(r.clone()),
        Input::UpsertContact(_) | Input::Event(_) | Input::TimerFired(_) => return None,
    };
    Some(v1::FollowUp { kind: Some(kind) })
}

/// The input a logged follow-up stands for.
fn input_of(follow_up: &v1::FollowUp) -> Option<Input> {
    use v1::follow_up::Kind;
    Some(match follow_up.kind.as_ref()? {
        Kind::Launch(c) => Input::Launch {
            campaign_id: c.clone(),
        },
        Kind::Migrate(c) => Input::Migrate {
            campaign_id: c.clone(),
        },
        Kind::Resume(c) => Input::Resume {
            campaign_id: c.clone(),
        },
        Kind::Stop(c) => Input::Stop {
            campaign_id: c.clone(),
        },
        Kind::ReassignLeads(r) => Input::ReassignLeads(r.clone()),
    })
}

fn load_catalog(store: &Store) -> Result<Catalog> {
    let specs = store.specs()?;
    let mut catalog =
        lifecycle::catalog_from(&specs, &store.lifecycles()?).map_err(|e| Error::StoredSpec {
            id: e.campaign_id.clone(),
            version: 0,
            reason: e.to_string(),
        })?;
    if let Some(policy) = store.policy()? {
        // It was checked before it was logged.
        if let Ok(p) = canvass_core::policy::compile(&policy) {
            catalog.set_policy(p);
        }
    }
    Ok(catalog)
}

/// A group commit in progress: the batch to write and an overlay of everything it changed,
/// so that later inputs of the same batch read their predecessors' writes.
struct Pending {
    store: Store,
    core: Core,
    options: EngineOptions,
    placement: Placement,
    clock: UnixMillis,
    next_seq: u64,
    next_dead_letter: u64,
    next_publication: u64,
    batch: WriteBatch,
    report: BatchReport,
    contacts: HashMap<String, v1::ContactState>,
    counters: BTreeMap<String, v1::CampaignCounters>,
    /// Timers armed in this batch, in firing order, and the due time of every timer the
    /// batch touched (`None`: disarmed).
    timers_armed: BTreeSet<(UnixMillis, TimerId)>,
    timer_due: HashMap<TimerId, Option<UnixMillis>>,
    offsets: BTreeMap<String, u64>,
    /// Actions emitted so far by the log entry being applied.
    action_index: u32,
    /// Where the scan of the store's timers resumes, and whether it has run out.
    timer_cursor: Option<(UnixMillis, TimerId)>,
    stored_timers_done: bool,
    /// Campaign lifecycles changed in this batch.
    lifecycles: BTreeMap<String, v1::CampaignLifecycle>,
    /// The last log entry applied in this batch.
    last_seq: Option<u64>,
    /// What became of each input accepted, in order.
    outcomes: Vec<Outcome>,
    /// Outbox positions acknowledged in this batch.
    acked: BTreeSet<(u64, u32)>,
    /// The caller of the input being accepted, logged with its entry.
    caller: String,
    /// A command left a sweep to finish before the next input.
    sweeping: bool,
    /// The input being appended came later than the allowed lateness.
    late: bool,
    /// The input counters, once this batch changed them.
    input_counters: Option<v1::InputCounters>,
}

impl Pending {
    fn new(
        store: &Store,
        core: Core,
        options: EngineOptions,
        placement: Placement,
        clock: UnixMillis,
    ) -> Result<Self> {
        Ok(Self {
            placement,
            next_seq: store.last_seq()? + 1,
            next_dead_letter: store.dead_letter_count()? + 1,
            next_publication: store.last_publication()? + 1,
            store: store.clone(),
            core,
            options,
            clock,
            batch: WriteBatch::new(),
            report: BatchReport::default(),
            contacts: HashMap::new(),
            counters: BTreeMap::new(),
            timers_armed: BTreeSet::new(),
            timer_due: HashMap::new(),
            offsets: BTreeMap::new(),
            action_index: 0,
            timer_cursor: None,
            stored_timers_done: false,
            lifecycles: BTreeMap::new(),
            last_seq: None,
            outcomes: Vec::new(),
            acked: BTreeSet::new(),
            caller: String::new(),
            sweeping: false,
            late: false,
            input_counters: None,
        })
    }

    fn into_batch(mut self) -> (WriteBatch, BatchReport, Core, UnixMillis) {
        for (id, state) in &self.contacts {
            self.batch.put_contact(EMBEDDED_PARTITION, id, state);
        }
        for (campaign, counters) in &self.counters {
            self.batch.put_counters(campaign, counters);
        }
        for l in self.lifecycles.values() {
            self.batch.put_lifecycle(l);
        }
        if let Some(counters) = &self.input_counters {
            self.batch.put_input_counters(counters);
        }
        if let Some(seq) = self.last_seq {
            self.batch.set_last_seq(seq);
        }
        for (source, next) in &self.offsets {
            self.batch.set_offset(source, *next);
        }
        self.report.outcomes = self.outcomes;
        (self.batch, self.report, self.core, self.clock)
    }

    /// Whether the contact's event `event_id` was applied within the retention window
    /// before `now`.
    fn seen(&mut self, contact_id: &str, event_id: &str, now: UnixMillis) -> Result<bool> {
        let cutoff = self.dedupe_cutoff(now);
        Ok(self.contact(contact_id)?.recent_events.iter().any(|e| {
            e.id == event_id && e.applied_at.as_ref().map(UnixMillis::from_proto) >= Some(cutoff)
        }))
    }

    /// Why `record` is dated too far ahead of the wall clock, if it is (see
    /// [`EngineOptions::max_lead`]).
    fn too_far_ahead(&self, record: &v1::IngestRecord, wall_now: UnixMillis) -> Option<String> {
        let lead = self.options.max_lead?;
        let (field, at) = match &record.input {
            Some(v1::ingest_record::Input::Event(e)) => ("event.occurredAt", e.occurred_at),
            _ => ("at", record.at),
        };
        let at = at?;
        let ahead = UnixMillis::from_proto(&at).0.saturating_sub(wall_now.0);
        (ahead > lead.0).then(|| {
            format!(
                "field `{field}`: {at} is {} ahead of the wall clock ({}), more than the {} allowed (`--max-lead-hours`)",
                SpanMillis(ahead),
                wall_now.to_proto(),
                lead
            )
        })
    }

    fn dedupe_cutoff(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(self.options.dedupe_retention.0))
    }

    /// Accepts one input from a source: dedupe, dead-letter or append and apply.
    fn accept(&mut self, input: Sourced, wall_now: UnixMillis) -> Result<()> {
        let Sourced {
            incoming,
            position,
            caller,
        } = input;
        // The offset is written with the commit, beside the log frame, whatever becomes of
        // the input: the log holds inputs only, never a position without one.
        if let Some(p) = &position {
            self.offsets.insert(p.source.clone(), p.next_offset);
        }
        let record = match incoming {
            Incoming::Malformed {
                payload,
                key,
                reason,
            } => {
                self.dead_letter(payload, key, reason, position, wall_now);
                return Ok(());
            }
            Incoming::Acks(acks) => return self.accept_acks(acks, position, caller, wall_now),
            Incoming::Record(r) => *r,
        };
        if let Some(reason) =
            check_record(&record).or_else(|| self.too_far_ahead(&record, wall_now))
        {
            let payload = prost::Message::encode_to_vec(&record);
            self.dead_letter(payload, Vec::new(), reason, position, wall_now);
            return Ok(());
        }
        use v1::ingest_record::Input as R;
        let record_time = record.at.as_ref().map(UnixMillis::from_proto);
        let (input, event_time) = match record.input {
            // Rejected by check_record above.
            None => return Ok(()),
            Some(R::Event(e)) => {
                let t = e.occurred_at.as_ref().map(UnixMillis::from_proto);
                if self.seen(&e.contact_id, &e.id, self.processing_time(t, wall_now))? {
                    self.report.duplicates += 1;
                    self.outcomes.push(Outcome::Duplicate);
                    return Ok(());
                }
                (log_entry::Input::Event(e), t)
            }
            Some(R::Contact(c)) => (log_entry::Input::ContactUpsert(c), record_time),
            Some(R::Command(c)) => {
                if let Err(reason) = self.check_command(&c)? {
                    self.outcomes.push(Outcome::Refused {
                        reason: reason.clone(),
                    });
                    // Every partition refuses it alike; its home alone parks and tells it.
                    if !self.placement.is_home(&c) {
                        return Ok(());
                    }
                    // Decided at the time it would have been applied, as an accepted one is
                    // (under the event clock, the command's own time, not the wall clock).
                    let decided = self.processing_time(record_time, wall_now);
                    let payload = prost::Message::encode_to_vec(&c);
                    self.park(
                        payload,
                        Vec::new(),
                        reason.clone(),
                        position.clone(),
                        decided,
                    );
                    self.queue_result(c, Err(reason), position, decided);
                    return Ok(());
                }
                (log_entry::Input::Command(c), record_time)
            }
        };
        let now = self.processing_time(event_time, wall_now);
        if self.options.clock == ClockMode::Event {
            self.fire_due(now)?;
            self.late = matches!(input, log_entry::Input::Event(_))
                && event_time.is_some_and(|t| self.timer_horizon(self.clock) > t);
        }
        let command = match &input {
            log_entry::Input::Command(c) if self.options.publish && self.placement.is_home(c) => {
                Some(c.clone())
            }
            _ => None,
        };
        let seq = self.next_seq;
        self.caller = caller.unwrap_or_default();
        self.append(input, position.clone(), now)?;
        self.outcomes.push(Outcome::Logged { seq });
        if let Some(c) = command {
            self.queue_result(c, Ok(seq), position, now);
        }
        Ok(())
    }

    /// Logs the acknowledgements of actions still queued; the others (acknowledged before)
    /// are dropped, so an action is counted once however often it is reported.
    fn accept_acks(
        &mut self,
        mut acks: v1::ActionAcks,
        position: Option<v1::SourcePosition>,
        caller: Option<String>,
        wall_now: UnixMillis,
    ) -> Result<()> {
        let mut kept = Vec::with_capacity(acks.acks.len());
        for ack in acks.acks {
            let at = (ack.outbox_seq, ack.outbox_index);
            if self.acked.insert(at) && self.store.outbox_holds(at)? {
                kept.push(ack);
            }
        }
        if kept.is_empty() {
            self.outcomes.push(Outcome::Duplicate);
            return Ok(());
        }
        acks.acks = kept;
        let now = self.processing_time(None, wall_now);
        let seq = self.next_seq;
        self.caller = caller.unwrap_or_default();
        self.append(log_entry::Input::ActionAcks(acks), position, now)?;
        self.outcomes.push(Outcome::Logged { seq });
        Ok(())
    }

    /// Queues a command's result for the audit topic (when publishing).
    fn queue_result(
        &mut self,
        command: v1::CampaignCommand,
        result: std::result::Result<u64, String>,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
    ) {
        let (accepted, seq, reason) = match result {
            Ok(seq) => (true, seq, String::new()),
            Err(reason) => (false, 0, reason),
        };
        self.queue(v1::publication::Kind::CommandResult(v1::CommandResult {
            command: Some(command),
            accepted,
            reason,
            seq,
            source,
            decided_at: Some(now.to_proto()),
        }));
    }

    fn queue(&mut self, kind: v1::publication::Kind) {
        if !self.options.publish {
            return;
        }
        let publication = v1::Publication { kind: Some(kind) };
        self.batch
            .put_publication(self.next_publication, &publication);
        self.next_publication += 1;
    }

    /// The latest due time of the timers that may fire at `now`: a timer waits for the
    /// allowed lateness past its due time, for events dated before it that come late.
    fn timer_horizon(&self, now: UnixMillis) -> UnixMillis {
        UnixMillis(now.0.saturating_sub(self.options.allowed_lateness.0))
    }

    /// The time an input arriving now is applied at: the clock never goes back.
    fn processing_time(&self, event_time: Option<UnixMillis>, wall_now: UnixMillis) -> UnixMillis {
        match self.options.clock {
            ClockMode::Wall => wall_now.max(self.clock),
            ClockMode::Event => event_time.unwrap_or(self.clock).max(self.clock),
        }
    }

    /// Why a command cannot be accepted, if it cannot.
    fn check_command(&mut self, c: &v1::CampaignCommand) -> Result<Result<(), String>> {
        let Some(cmd) = &c.command else {
            return Ok(Err("the command is empty".into()));
        };
        let current = self.lifecycle(lifecycle::campaign_of(cmd))?;
        let limits = self.core.catalog().policy().cel;
        Ok(lifecycle::check(c, current.as_ref(), &limits))
    }

    /// A campaign's lifecycle as this batch sees it.
    fn lifecycle(&mut self, id: &str) -> Result<Option<v1::CampaignLifecycle>> {
        if let Some(l) = self.lifecycles.get(id) {
            return Ok(Some(l.clone()));
        }
        Ok(self.store.lifecycle(id)?)
    }

    /// Parks an input that cannot be used (its outcome: a dead letter), and queues it for the
    /// dead-letter topic.
    fn dead_letter(
        &mut self,
        payload: Vec<u8>,
        key: Vec<u8>,
        reason: String,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
    ) {
        self.outcomes.push(Outcome::DeadLetter {
            reason: reason.clone(),
        });
        let letter = self.park(payload, key, reason, source, now);
        self.queue(v1::publication::Kind::DeadLetter(letter));
    }

    /// Parks an input in the dead-letter tree, with the reason.
    fn park(
        &mut self,
        payload: Vec<u8>,
        key: Vec<u8>,
        reason: String,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
    ) -> v1::DeadLetter {
        let letter = v1::DeadLetter {
            source,
            payload,
            reason,
            rejected_at: Some(now.to_proto()),
            key,
        };
        self.batch.put_dead_letter(self.next_dead_letter, &letter);
        self.next_dead_letter += 1;
        self.report.dead_letters += 1;
        letter
    }

    /// Fires, in (due, id) order, every armed timer that may fire at `now`: due at or
    /// before it less the allowed lateness.
    fn fire_due(&mut self, now: UnixMillis) -> Result<()> {
        self.fire_due_at_most(now, self.timer_horizon(now), usize::MAX)
            .map(|_| ())
    }

    /// Fires at most `limit` of the timers due at or before `horizon`, in order, at `now`
    /// under the wall clock (at their due time, or the clock if later, under the event
    /// clock); returns how many.
    fn fire_due_at_most(
        &mut self,
        now: UnixMillis,
        horizon: UnixMillis,
        limit: usize,
    ) -> Result<usize> {
        let mut fired_count = 0;
        while let Some((due, id)) = self.next_timer()? {
            if due > horizon || fired_count == limit {
                break;
            }
            fired_count += 1;
            let fired = v1::TimerFired {
                contact_id: id.contact_id.clone(),
                campaign_id: id.campaign_id.clone(),
                entry_seq: id.entry_seq,
                transition: id.transition,
                due: Some(due.to_proto()),
            };
            let at = match self.options.clock {
                ClockMode::Event => due.max(self.clock),
                ClockMode::Wall => now,
            };
            self.report.timers_fired += 1;
            self.append(log_entry::Input::TimerFired(fired), None, at)?;
        }
        Ok(fired_count)
    }

    /// The earliest armed timer, from the store and this batch together.
    fn next_timer(&mut self) -> Result<Option<(UnixMillis, TimerId)>> {
        // The store does not change during a batch and its valid timers only get fewer (the
        // batch disarms them), so the scan resumes where the last one stopped.
        let mut stored = None;
        if !self.stored_timers_done {
            let from = self.timer_cursor.as_ref().map(|(due, id)| (*due, id));
            for t in self.store.timers(from) {
                let (due, id) = t?;
                // A timer this batch disarmed (or re-armed) is not what the store says.
                if self.timer_due.contains_key(&id) {
                    continue;
                }
                stored = Some((due, id));
                break;
            }
            self.stored_timers_done = stored.is_none();
            self.timer_cursor.clone_from(&stored);
        }
        let armed = self.timers_armed.first().cloned();
        Ok(match (stored, armed) {
            (Some(s), Some(a)) => Some(s.min(a)),
            (s, a) => s.or(a),
        })
    }

    /// Appends an input to the log and applies it.
    fn append(
        &mut self,
        input: log_entry::Input,
        source: Option<v1::SourcePosition>,
        now: UnixMillis,
    ) -> Result<()> {
        let entry = v1::LogEntry {
            schema_version: LOG_SCHEMA_VERSION,
            seq: self.next_seq,
            applied_at: Some(now.to_proto()),
            source,
            input: Some(input),
            // Only the accepted input itself: timers it fires first are nobody's.
            caller: std::mem::take(&mut self.caller),
            late: std::mem::take(&mut self.late),
        };
        self.batch.append_log(&entry);
        self.report.entries += 1;
        self.apply(&entry)
    }

    /// Applies one log entry to the projections (live, or in replay).
    fn apply(&mut self, entry: &v1::LogEntry) -> Result<()> {
        let now = entry
            .applied_at
            .as_ref()
            .map(UnixMillis::from_proto)
            .unwrap_or(self.clock);
        self.clock = self.clock.max(now);
        self.next_seq = entry.seq + 1;
        self.action_index = 0;
        self.last_seq = Some(entry.seq);
        if entry.late {
            // Read once per batch with a late event: most have none.
            let counters = match self.input_counters.take() {
                Some(c) => c,
                None => self.store.input_counters()?,
            };
            let counters = self.input_counters.insert(counters);
            counters.late_events += 1;
        }
        match &entry.input {
            None => {}
            Some(log_entry::Input::ContactUpsert(c)) => {
                self.step(
                    &c.id.clone(),
                    &Input::UpsertContact(c.clone()),
                    now,
                    entry.seq,
                )?;
            }
            Some(log_entry::Input::Event(e)) => {
                self.step(
                    &e.contact_id.clone(),
                    &Input::Event(e.clone()),
                    now,
                    entry.seq,
                )?;
                // Remembered in the row the event changed: no index of its own to write.
                if let Some(state) = self.contacts.get_mut(&e.contact_id) {
                    state.recent_events.push(v1::SeenEvent {
                        id: e.id.clone(),
                        applied_at: Some(now.to_proto()),
                    });
                }
            }
            Some(log_entry::Input::TimerFired(t)) => {
                let id = TimerId {
                    contact_id: t.contact_id.clone(),
                    campaign_id: t.campaign_id.clone(),
                    entry_seq: t.entry_seq,
                    transition: t.transition,
                };
                let due = t.due.as_ref().map_or(now, UnixMillis::from_proto);
                self.disarm(&id, due);
                self.step(
                    &id.contact_id.clone(),
                    &Input::TimerFired(id.clone()),
                    now,
                    entry.seq,
                )?;
            }
            Some(log_entry::Input::ActionAcks(acks)) => {
                for ack in &acks.acks {
                    self.acknowledge(ack)?;
                    if ack.executed {
                        let event = executed_event(ack, now);
                        self.step(&ack.contact_id, &Input::Event(event), now, entry.seq)?;
                    }
                }
            }
            Some(log_entry::Input::Command(c)) => self.command(c, now, entry.seq)?,
            Some(log_entry::Input::SweepStep(s)) => self.apply_sweep_step(s, now, entry.seq)?,
        }
        Ok(())
    }

    fn command(&mut self, c: &v1::CampaignCommand, now: UnixMillis, seq: u64) -> Result<()> {
        let Some(cmd) = &c.command else {
            return Ok(());
        };
        if let v1::campaign_command::Command::ReassignLeads(r) = cmd {
            return self.step_everyone(&Input::ReassignLeads(r.clone()), now, seq);
        }
        if let v1::campaign_command::Command::SetPolicy(policy) = cmd {
            let mut catalog = self.core.catalog().clone();
            lifecycle::apply(c, &mut v1::CampaignLifecycle::default(), &mut catalog, now);
            self.core = Core::new(catalog).with_share(self.core.share());
            self.batch.put_policy(policy);
            return Ok(());
        }
        let id = lifecycle::campaign_of(cmd).to_string();
        let mut record = self.lifecycle(&id)?.unwrap_or_default();
        let mut catalog = self.core.catalog().clone();
        let follow = lifecycle::apply(c, &mut record, &mut catalog, now);
        self.core = Core::new(catalog).with_share(self.core.share());
        if let v1::campaign_command::Command::PutSpec(spec) = cmd {
            self.batch.put_spec(spec);
        }
        self.lifecycles.insert(id, record);
        let input = match follow {
            FollowUp::Nothing => return Ok(()),
            FollowUp::Launch(campaign_id) => Input::Launch { campaign_id },
            FollowUp::Migrate(campaign_id) => Input::Migrate { campaign_id },
            FollowUp::Resume(campaign_id) => Input::Resume { campaign_id },
            FollowUp::Stop(campaign_id) => Input::Stop { campaign_id },
            FollowUp::ReassignLeads(r) => Input::ReassignLeads(r),
        };
        self.step_everyone(&input, now, seq)
    }

    /// Steps every contact known now (those stored and those this batch created): the
    /// first [`SWEEP_SLICE`] here, the others by a sweep, a slice per log entry.
    fn step_everyone(&mut self, input: &Input, now: UnixMillis, seq: u64) -> Result<()> {
        let full = self.step_slice(None, None, Some(input), now, seq)?;
        if let (Some(last), Some(follow_up)) = (full, follow_up_of(input)) {
            self.batch.put_sweep(&v1::Sweep {
                command_seq: seq,
                follow_up: Some(follow_up),
                after: last,
            });
            self.sweeping = true;
        }
        Ok(())
    }

    /// Steps the next slice of the contacts known now: those after `after`, up to
    /// `through` if given, at most [`SWEEP_SLICE`]. Returns the last id when the slice was
    /// full (more may follow).
    fn step_slice(
        &mut self,
        after: Option<&str>,
        through: Option<&str>,
        input: Option<&Input>,
        now: UnixMillis,
        seq: u64,
    ) -> Result<Option<String>> {
        let mut ids = self.contacts_after(after, SWEEP_SLICE)?;
        if let Some(through) = through {
            ids.retain(|id| id.as_str() <= through);
        }
        if let Some(input) = input {
            for contact in &ids {
                self.step(contact, input, now, seq)?;
            }
        }
        Ok(ids.pop().filter(|_| ids.len() + 1 == SWEEP_SLICE))
    }

    /// The ids of the contacts known now that sort after `after`, in order, at most `limit`.
    fn contacts_after(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut ids: BTreeSet<String> = self
            .contacts
            .keys()
            .filter(|id| after.is_none_or(|a| id.as_str() > a))
            .cloned()
            .collect();
        for contact in self
            .store
            .contact_ids_after(EMBEDDED_PARTITION, after)
            .take(limit)
        {
            ids.insert(contact?);
        }
        Ok(ids.into_iter().take(limit).collect())
    }

    /// Logs and applies the next slice of a sweep.
    fn sweep_step(&mut self, sweep: &v1::Sweep) -> Result<()> {
        let ids = self.contacts_after(Some(&sweep.after), SWEEP_SLICE)?;
        let step = v1::SweepStep {
            sweep: Some(sweep.clone()),
            through: ids.last().cloned().unwrap_or_else(|| sweep.after.clone()),
        };
        self.append(log_entry::Input::SweepStep(step), None, self.clock)
    }

    /// Applies a logged sweep step: the contacts in its range, then the sweep's progress
    /// (ended once a slice comes out short).
    fn apply_sweep_step(&mut self, s: &v1::SweepStep, now: UnixMillis, seq: u64) -> Result<()> {
        let Some(sweep) = &s.sweep else {
            return Err(canvass_store::Error::CorruptLog {
                seq,
                reason: "a sweep step without its sweep".into(),
            }
            .into());
        };
        let input = sweep.follow_up.as_ref().and_then(input_of);
        let full = self.step_slice(
            Some(&sweep.after),
            Some(&s.through),
            input.as_ref(),
            now,
            seq,
        )?;
        match full {
            Some(last) => self.batch.put_sweep(&v1::Sweep {
                after: last,
                ..sweep.clone()
            }),
            None => self.batch.remove_sweep(sweep.command_seq),
        }
        Ok(())
    }

    fn contact(&mut self, id: &str) -> Result<v1::ContactState> {
        if let Some(s) = self.contacts.get(id) {
            return Ok(s.clone());
        }
        Ok(self
            .store
            .contact(EMBEDDED_PARTITION, id)?
            .unwrap_or_default())
    }

    fn step(&mut self, contact_id: &str, input: &Input, now: UnixMillis, seq: u64) -> Result<()> {
        let mut before = self.contact(contact_id)?;
        if before.contact.is_none() && matches!(input, Input::Launch { .. } | Input::TimerFired(_))
        {
            return Ok(());
        }
        // The core never sees the dedupe memory; it is pruned whenever the row is written.
        let cutoff = self.dedupe_cutoff(now);
        let mut recent = std::mem::take(&mut before.recent_events);
        recent.retain(|e| e.applied_at.as_ref().map(UnixMillis::from_proto) >= Some(cutoff));
        // The core withholds what would overrun a budget: it needs what was spent so far.
        // Loaded once per batch (and per new campaign); later steps find them in the batch.
        let unloaded: Vec<String> = self
            .core
            .catalog()
            .latest_all()
            .filter(|c| c.budget.as_ref().is_some_and(|b| b.total.is_some()))
            .filter(|c| !self.counters.contains_key(c.id()))
            .map(|c| c.id().to_string())
            .collect();
        for campaign in &unloaded {
            self.counters(campaign)?;
        }
        let mut transition = self.core.step(&before, input, now, &self.counters);
        let cause = Cause::of(input, now);
        for effect in &transition.effects {
            self.effect(effect, seq, &cause)?;
            self.note(contact_id, effect, now);
        }
        self.regroup(contact_id, &before, &transition.state);
        transition.state.recent_events = recent;
        self.contacts
            .insert(contact_id.to_string(), transition.state);
        Ok(())
    }

    /// Moves the contact between response-group index entries.
    fn regroup(&mut self, contact_id: &str, before: &v1::ContactState, after: &v1::ContactState) {
        let groups = |s: &v1::ContactState| -> BTreeSet<(String, String)> {
            s.campaigns
                .iter()
                .filter(|j| !j.response_group.is_empty())
                .map(|j| (j.campaign_id.clone(), j.response_group.clone()))
                .collect()
        };
        let (old, new) = (groups(before), groups(after));
        for (campaign, group) in old.difference(&new) {
            self.batch.remove_from_group(campaign, group, contact_id);
        }
        for (campaign, group) in new.difference(&old) {
            self.batch.add_to_group(campaign, group, contact_id);
        }
    }

    fn counters(&mut self, campaign: &str) -> Result<&mut v1::CampaignCounters> {
        if !self.counters.contains_key(campaign) {
            let stored = self.store.counters(campaign)?;
            self.counters.insert(campaign.to_string(), stored);
        }
        Ok(self.counters.get_mut(campaign).expect("inserted above"))
    }

    fn effect(&mut self, effect: &Effect, seq: u64, cause: &Cause) -> Result<()> {
        let now = cause.now;
        let campaign = effect.campaign_id();
        let counted = !campaign.is_empty()
            && !matches!(
                effect,
                Effect::ScheduleTimer { .. }
                    | Effect::CancelTimer { .. }
                    | Effect::EnrollmentSkipped { .. }
                    | Effect::Fault { .. }
            );
        if counted {
            let counters = self.counters(campaign)?;
            let first_withheld = counters.budget_exhausted_at.is_none();
            stats::record(counters, effect, cause);
            if let Effect::Withheld {
                kind, spent, total, ..
            } = effect
                && first_withheld
            {
                self.budget_exhausted(campaign, *kind, *spent, *total, now)?;
            }
        }
        match effect {
            Effect::Action(action) => {
                // Numbered per log entry: one entry (a launch) may step many contacts.
                let position = (seq, self.action_index);
                self.action_index += 1;
                self.batch.put_outbox(position, action);
                self.report.actions += 1;
            }
            Effect::ScheduleTimer { id, due } => {
                self.timers_armed.insert((*due, id.clone()));
                self.timer_due.insert(id.clone(), Some(*due));
                self.batch.put_timer(*due, id);
            }
            Effect::CancelTimer { id, due } => self.disarm(id, *due),
            _ => {}
        }
        Ok(())
    }

    /// Reports what the core said that no table keeps.
    fn note(&mut self, contact_id: &str, effect: &Effect, now: UnixMillis) {
        let (kind, message) = match effect {
            Effect::ConditionFailed { path, error, .. } => (
                WarningKind::ConditionFailed,
                format!("{path}: {error} (treated as false)"),
            ),
            Effect::Fault { reason, .. } => (WarningKind::Fault, reason.clone()),
            Effect::EnrollmentSkipped { .. } => {
                self.report.enrollments_skipped += 1;
                return;
            }
            _ => return,
        };
        self.report.warnings.push(Warning {
            at: now,
            contact_id: contact_id.to_string(),
            campaign_id: effect.campaign_id().to_string(),
            kind,
            message,
        });
    }

    /// Notes in the campaign's history that its budget ran out: the first cost-bearing
    /// action withheld. Derived from the log, so replay writes the same note.
    fn budget_exhausted(
        &mut self,
        campaign: &str,
        kind: v1::ActionKind,
        spent: Decimal,
        total: Decimal,
        now: UnixMillis,
    ) -> Result<()> {
        let Some(mut record) = self.lifecycle(campaign)? else {
            return Ok(());
        };
        record.history.push(v1::LifecycleChange {
            at: Some(now.to_proto()),
            actor: crate::reports::ENGINE_ACTOR.to_string(),
            reason: if self.placement.layout.partitions > 1 {
                format!(
                    "partition {} spent {spent} of its allotment {total} of the budget; a {} action and every cost-bearing action after it in this partition is withheld",
                    self.placement.partition,
                    kind_name(kind)
                )
            } else {
                format!(
                    "spent {spent} of {total}; a {} action and every cost-bearing action after it is withheld",
                    kind_name(kind)
                )
            },
            change: "budget exhausted".to_string(),
            status: record.status,
        });
        self.lifecycles.insert(campaign.to_string(), record);
        Ok(())
    }

    fn disarm(&mut self, id: &TimerId, due: UnixMillis) {
        self.timers_armed.remove(&(due, id.clone()));
        self.batch.remove_timer(due, id);
        self.timer_due.insert(id.clone(), None);
    }

    fn acknowledge(&mut self, ack: &v1::ActionAck) -> Result<()> {
        self.batch.remove_outbox((ack.outbox_seq, ack.outbox_index));
        // Campaign ids hold no '/': the key starts with the campaign.
        let campaign = ack
            .idempotency_key
            .split('/')
            .next()
            .unwrap_or_default()
            .to_string();
        let counters = self.counters(&campaign)?;
        let outcome = v1::DeliveryOutcome::try_from(ack.outcome).unwrap_or_default();
        stats::record_outcome(counters, ack.kind(), outcome, ack.executed);
        Ok(())
    }
}

/// The event a contact's campaigns see when the service that carried out one of its actions
/// reports back: `action.delivered`, `action.bounced`, `action.failed` or
/// `opportunity.created`, with the action's key, campaign, kind, detail and opportunity id
/// as attributes.
fn executed_event(ack: &v1::ActionAck, now: UnixMillis) -> v1::TouchpointEvent {
    use canvass_proto::wkt::Value;
    let r#type = match v1::DeliveryOutcome::try_from(ack.outcome) {
        Ok(v1::DeliveryOutcome::Delivered) => "action.delivered",
        Ok(v1::DeliveryOutcome::Bounced) => "action.bounced",
        Ok(v1::DeliveryOutcome::OpportunityCreated) => "opportunity.created",
        _ => "action.failed",
    };
    let kind = v1::ActionKind::try_from(ack.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("ACTION_KIND_")
                .to_string()
        })
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    fields.insert(
        "idempotencyKey".to_string(),
        Value::from(ack.idempotency_key.as_str()),
    );
    fields.insert(
        "campaignId".to_string(),
        Value::from(ack.campaign_id.as_str()),
    );
    fields.insert("kind".to_string(), Value::from(kind.as_str()));
    fields.insert("detail".to_string(), Value::from(ack.detail.as_str()));
    if !ack.opportunity_id.is_empty() {
        fields.insert(
            "opportunityId".to_string(),
            Value::from(ack.opportunity_id.as_str()),
        );
    }
    v1::TouchpointEvent {
        id: format!("result:{}", ack.idempotency_key),
        r#type: r#type.to_string(),
        contact_id: ack.contact_id.clone(),
        occurred_at: Some(now.to_proto()),
        attrs: Some(wkt::Struct { fields }),
        // Only the campaign whose action it was sees the result.
        campaign_id: ack.campaign_id.clone(),
        ..Default::default()
    }
}
