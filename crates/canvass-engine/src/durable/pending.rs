//! The group commit in progress: the batch to write and an overlay of everything it
//! changed, so that later inputs of the same batch read their predecessors' writes; applying
//! one log entry to a contact and recording what its step did.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use canvass_core::{
    Core, Effect, Input, TimerId, UnixMillis,
    assignment::{self, Workload},
    stats::{self, Cause},
};
use canvass_proto::v1::{self, log_entry};
use canvass_store::{EMBEDDED_PARTITION, LOG_SCHEMA_VERSION, Store, WriteBatch};

use super::{BatchReport, EngineOptions, Outcome, Placement, Result, Warning, WarningKind};

/// A group commit in progress: the batch to write and an overlay of everything it changed,
/// so that later inputs of the same batch read their predecessors' writes.
pub(super) struct Pending {
    pub(super) store: Store,
    pub(super) core: Core,
    pub(super) options: EngineOptions,
    pub(super) placement: Placement,
    pub(super) clock: UnixMillis,
    pub(super) next_seq: u64,
    pub(super) next_dead_letter: u64,
    pub(super) next_publication: u64,
    pub(super) batch: WriteBatch,
    pub(super) report: BatchReport,
    pub(super) contacts: HashMap<String, v1::ContactState>,
    /// States read from the store this batch and not changed (yet): decoded once, whether
    /// the dedupe check or a step reads them first; never written back as they are.
    read: HashMap<String, v1::ContactState>,
    pub(super) counters: BTreeMap<String, v1::CampaignCounters>,
    /// Timers armed in this batch, in firing order, and the due time of every timer the
    /// batch touched (`None`: disarmed).
    pub(super) timers_armed: BTreeSet<(UnixMillis, TimerId)>,
    pub(super) timer_due: HashMap<TimerId, Option<UnixMillis>>,
    pub(super) offsets: BTreeMap<String, u64>,
    /// Actions emitted so far by the log entry being applied.
    pub(super) action_index: u32,
    /// Where the scan of the store's timers resumes, and whether it has run out.
    pub(super) timer_cursor: Option<(UnixMillis, TimerId)>,
    pub(super) stored_timers_done: bool,
    /// Campaign lifecycles changed in this batch.
    pub(super) lifecycles: BTreeMap<String, v1::CampaignLifecycle>,
    /// The last log entry applied in this batch.
    pub(super) last_seq: Option<u64>,
    /// What became of each input accepted, in order.
    pub(super) outcomes: Vec<Outcome>,
    /// Outbox positions acknowledged in this batch.
    pub(super) acked: BTreeSet<(u64, u32)>,
    /// The caller of the input being accepted, logged with its entry.
    pub(super) caller: String,
    /// A command left a sweep to finish before the next input.
    pub(super) sweeping: bool,
    /// The input being appended came later than the allowed lateness.
    pub(super) late: bool,
    /// The input counters, once this batch changed them.
    pub(super) input_counters: Option<v1::InputCounters>,
}

impl Pending {
    pub(super) fn new(
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
            read: HashMap::new(),
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

    pub(super) fn into_batch(mut self) -> (WriteBatch, BatchReport, Core, UnixMillis) {
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

    /// Appends an input to the log and applies it.
    pub(super) fn append(
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
    pub(super) fn apply(&mut self, entry: &v1::LogEntry) -> Result<()> {
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
            self.inputs()?.late_events += 1;
            self.report.late_events += 1;
        }
        match &entry.input {
            None => {}
            Some(log_entry::Input::ContactUpsert(c)) => {
                self.step(&c.id, &Input::UpsertContact(c), now, entry.seq)?;
            }
            Some(log_entry::Input::Event(e)) => {
                self.step(&e.contact_id, &Input::Event(e), now, entry.seq)?;
                // Remembered in the row the event changed: no index of its own to write.
                if let Some(state) = self.contacts.get_mut(&e.contact_id) {
                    state.recent_events.push(v1::SeenEvent {
                        id: e.id.clone(),
                        applied_at: Some(now.to_proto()),
                    });
                }
            }
            Some(log_entry::Input::TimerFired(t)) => {
                let id = TimerId::from_fired(t);
                let due = t.due.as_ref().map_or(now, UnixMillis::from_proto);
                self.disarm(&id, due);
                self.step(&id.contact_id, &Input::TimerFired(&id), now, entry.seq)?;
            }
            Some(log_entry::Input::ActionAcks(acks)) => {
                for ack in &acks.acks {
                    self.acknowledge(ack)?;
                    if ack.executed {
                        let event = canvass_core::delivery::result_event(ack, now);
                        self.step(&ack.contact_id, &Input::Event(&event), now, entry.seq)?;
                    }
                }
            }
            Some(log_entry::Input::Command(c)) => self.command(c, now, entry.seq)?,
            Some(log_entry::Input::SweepStep(s)) => self.apply_sweep_step(s, now, entry.seq)?,
        }
        Ok(())
    }

    /// The contact's state as this batch sees it (the default for a contact not known).
    pub(super) fn contact(&mut self, id: &str) -> Result<&v1::ContactState> {
        if !self.contacts.contains_key(id) && !self.read.contains_key(id) {
            let stored = self.stored_contact(id)?;
            self.read.insert(id.to_string(), stored);
        }
        Ok(self
            .contacts
            .get(id)
            .or_else(|| self.read.get(id))
            .expect("loaded above"))
    }

    fn stored_contact(&self, id: &str) -> Result<v1::ContactState> {
        Ok(self
            .store
            .contact(EMBEDDED_PARTITION, id)?
            .unwrap_or_default())
    }

    /// Applies one input to one contact. The state is decoded once per batch (the batch
    /// keeps it) and handed to the core by value: no copy per step.
    pub(super) fn step(
        &mut self,
        contact_id: &str,
        input: &Input<'_>,
        now: UnixMillis,
        seq: u64,
    ) -> Result<()> {
        let (mut before, in_batch) = match self.contacts.remove(contact_id) {
            Some(state) => (state, true),
            None => match self.read.remove(contact_id) {
                Some(state) => (state, false),
                None => (self.stored_contact(contact_id)?, false),
            },
        };
        if before.contact.is_none()
            && matches!(
                input,
                Input::FollowUp(v1::follow_up::Kind::Launch(_)) | Input::TimerFired(_)
            )
        {
            // Nothing to step (no profile yet): the batch keeps what it had.
            if in_batch {
                self.contacts.insert(contact_id.to_string(), before);
            }
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
        // Assignment rules that balance a team read the partition's workload.
        if !self.core.catalog().policy().teams.is_empty() {
            self.inputs()?;
        }
        let workload = self
            .input_counters
            .as_ref()
            .and_then(|c| c.workload.as_ref());
        let workload: &dyn Workload = workload.map_or(&(), |w| w);
        let groups_before = groups(&before);
        let mut transition = self.core.step(before, input, now, &self.counters, workload);
        let cause = Cause::of(input, now);
        for effect in &transition.effects {
            self.effect(effect, seq, &cause)?;
            self.note(contact_id, effect, now);
        }
        self.regroup(contact_id, &groups_before, &groups(&transition.state));
        transition.state.recent_events = recent;
        self.contacts
            .insert(contact_id.to_string(), transition.state);
        Ok(())
    }

    /// Moves the contact between response-group index entries.
    pub(super) fn regroup(&mut self, contact_id: &str, old: &Groups, new: &Groups) {
        for (campaign, group) in old.difference(new) {
            self.batch.remove_from_group(campaign, group, contact_id);
        }
        for (campaign, group) in new.difference(old) {
            self.batch.add_to_group(campaign, group, contact_id);
        }
    }

    /// The partition's input counters, read once per batch that changes them (most do not).
    fn inputs(&mut self) -> Result<&mut v1::InputCounters> {
        let counters = match self.input_counters.take() {
            Some(c) => c,
            None => self.store.input_counters()?,
        };
        Ok(self.input_counters.insert(counters))
    }

    pub(super) fn counters(&mut self, campaign: &str) -> Result<&mut v1::CampaignCounters> {
        if !self.counters.contains_key(campaign) {
            let stored = self.store.counters(campaign)?;
            self.counters.insert(campaign.to_string(), stored);
        }
        Ok(self.counters.get_mut(campaign).expect("inserted above"))
    }

    pub(super) fn effect(&mut self, effect: &Effect, seq: u64, cause: &Cause) -> Result<()> {
        let now = cause.now;
        let campaign = effect.campaign_id();
        if effect.counted() {
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
            Effect::Lead { .. } => {
                assignment::record(self.inputs()?.workload.get_or_insert_default(), effect)
            }
            Effect::Revenue { amount, credited } => {
                stats::record_revenue(self.inputs()?, *amount, credited);
            }
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
    pub(super) fn note(&mut self, contact_id: &str, effect: &Effect, now: UnixMillis) {
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
            partition: self.placement.partition,
            contact_id: contact_id.to_string(),
            campaign_id: effect.campaign_id().to_string(),
            kind,
            message,
        });
    }
}

/// The (campaign, response group) pairs a contact is in.
type Groups = BTreeSet<(String, String)>;

fn groups(state: &v1::ContactState) -> Groups {
    state
        .campaigns
        .iter()
        .filter(|j| !j.response_group.is_empty())
        .map(|j| (j.campaign_id.clone(), j.response_group.clone()))
        .collect()
}
