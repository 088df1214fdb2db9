//! Simulation on a virtual clock: timers fire at their due times, interleaved with event
//! times, so a seven-day timeout takes no real time and every run gives the same result.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use canvass_core::{
    Core, Effect, Input, TimerId, UnixMillis,
    stats::{self, Cause},
};
use canvass_proto::v1;

use crate::summary::Counters;

/// One input as applied: the log a simulation produces, and what replay consumes.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// Position in the log, from 1.
    pub seq: u64,
    /// Processing time the input was applied at.
    pub at: UnixMillis,
    /// The contact it was applied to.
    pub contact_id: String,
    /// The input.
    pub input: Input,
}

/// One effect of a step, with when and for whom it happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Output {
    /// Virtual time of the step.
    pub at: UnixMillis,
    /// The contact stepped.
    pub contact_id: String,
    /// The effect.
    pub effect: Effect,
}

/// Runs campaigns over contacts and events on a virtual clock, in memory.
#[derive(Debug)]
pub struct Simulator {
    core: Core,
    contacts: BTreeMap<String, v1::ContactState>,
    /// Armed timers in firing order: due time, then timer id (a total, deterministic order).
    timers: BTreeSet<(UnixMillis, TimerId)>,
    clock: UnixMillis,
    seen_events: HashSet<String>,
    /// Contacts whose profile was loaded (as opposed to created by an event).
    profiled: HashSet<String>,
    log: Vec<LogEntry>,
    record_log: bool,
    output: Vec<Output>,
    counters: Counters,
    campaigns: BTreeMap<String, v1::CampaignCounters>,
}

impl Simulator {
    /// A simulator whose virtual clock starts at `start`.
    #[must_use]
    pub fn new(core: Core, start: UnixMillis) -> Self {
        Self {
            core,
            contacts: BTreeMap::new(),
            timers: BTreeSet::new(),
            clock: start,
            seen_events: HashSet::new(),
            profiled: HashSet::new(),
            log: Vec::new(),
            record_log: false,
            output: Vec::new(),
            counters: Counters::default(),
            campaigns: BTreeMap::new(),
        }
    }

    /// Keeps every applied input, for [`Simulator::log`] and [`replay`].
    #[must_use]
    pub fn recording(mut self) -> Self {
        self.record_log = true;
        self
    }

    /// The virtual clock.
    #[must_use]
    pub fn clock(&self) -> UnixMillis {
        self.clock
    }

    /// The core it runs.
    #[must_use]
    pub fn core(&self) -> &Core {
        &self.core
    }

    /// Creates or replaces a contact's profile at the current virtual time.
    pub fn upsert_contact(&mut self, contact: v1::Contact) {
        self.counters.contacts_upserted += 1;
        let id = contact.id.clone();
        self.profiled.insert(id.clone());
        self.apply(id, Input::UpsertContact(contact), self.clock);
    }

    /// Launches a campaign: every known contact is checked against its audience, in contact id order.
    pub fn launch(&mut self, campaign_id: &str) {
        let ids: Vec<String> = self.contacts.keys().cloned().collect();
        for id in ids {
            self.apply(
                id,
                Input::Launch {
                    campaign_id: campaign_id.to_string(),
                },
                self.clock,
            );
        }
    }

    /// Applies an event at its own time, after firing every timer due until then (a timer due
    /// at the very instant of the event fires first: deadlines are inclusive). An event older
    /// than the clock is applied at the clock's time. Returns false for a duplicate event id,
    /// which is counted and ignored.
    pub fn ingest(&mut self, event: v1::TouchpointEvent) -> bool {
        if !self.seen_events.insert(event.id.clone()) {
            self.counters.duplicate_events += 1;
            return false;
        }
        let at = event
            .occurred_at
            .as_ref()
            .map_or(self.clock, UnixMillis::from_proto);
        self.advance_to(at);
        self.counters.events += 1;
        if !self.profiled.contains(&event.contact_id) {
            self.counters.unknown_contact_events += 1;
        }
        let id = event.contact_id.clone();
        self.apply(id, Input::Event(event), self.clock);
        true
    }

    /// Fires, in order, every timer due at or before `until`, then moves the clock there.
    pub fn advance_to(&mut self, until: UnixMillis) {
        while let Some((due, id)) = self.timers.first().cloned() {
            if due > until {
                break;
            }
            self.timers.remove(&(due, id.clone()));
            self.clock = self.clock.max(due);
            self.counters.timers_fired += 1;
            let contact = id.contact_id.clone();
            self.apply(contact, Input::TimerFired(id), self.clock);
        }
        self.clock = self.clock.max(until);
    }

    /// Fires timers until none is left or the next one is due after `horizon`; the clock
    /// stops at the last timer fired.
    pub fn drain(&mut self, horizon: UnixMillis) {
        while let Some(due) = self
            .timers
            .first()
            .map(|(due, _)| *due)
            .filter(|due| *due <= horizon)
        {
            self.advance_to(due);
        }
    }

    /// Timers still armed.
    #[must_use]
    pub fn pending_timers(&self) -> usize {
        self.timers.len()
    }

    /// Takes the effects produced since the last call.
    pub fn take_output(&mut self) -> Vec<Output> {
        std::mem::take(&mut self.output)
    }

    /// Every contact's state, by contact id.
    #[must_use]
    pub fn states(&self) -> &BTreeMap<String, v1::ContactState> {
        &self.contacts
    }

    /// The inputs applied so far (empty unless [`Simulator::recording`]).
    #[must_use]
    pub fn log(&self) -> &[LogEntry] {
        &self.log
    }

    /// Counters of what the run saw.
    #[must_use]
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Each campaign's counters, as the durable engine keeps them.
    #[must_use]
    pub fn campaigns(&self) -> &BTreeMap<String, v1::CampaignCounters> {
        &self.campaigns
    }

    fn apply(&mut self, contact_id: String, input: Input, at: UnixMillis) {
        let state = self.contacts.get(&contact_id).cloned().unwrap_or_default();
        let transition = self.core.step(&state, &input, at, &self.campaigns);
        stats::record_all(
            &mut self.campaigns,
            &transition.effects,
            &Cause::of(&input, at),
        );
        if self.record_log {
            let seq = self.log.len() as u64 + 1;
            self.log.push(LogEntry {
                seq,
                at,
                contact_id: contact_id.clone(),
                input,
            });
        }
        for effect in &transition.effects {
            self.counters.count(effect);
            match effect {
                Effect::ScheduleTimer { id, due } => {
                    self.timers.insert((*due, id.clone()));
                }
                Effect::CancelTimer { id, due } => {
                    self.timers.remove(&(*due, id.clone()));
                }
                _ => {}
            }
        }
        self.output
            .extend(transition.effects.into_iter().map(|effect| Output {
                at,
                contact_id: contact_id.clone(),
                effect,
            }));
        self.contacts.insert(contact_id, transition.state);
    }
}

/// What a replay rebuilds: every contact's state, the effects in order, and each
/// campaign's counters.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    /// Contact states by id.
    pub states: BTreeMap<String, v1::ContactState>,
    /// Every effect, in order.
    pub effects: Vec<Effect>,
    /// Counters by campaign id.
    pub campaigns: BTreeMap<String, v1::CampaignCounters>,
}

/// Rebuilds every contact's state, the effects and the counters from a log alone: the log
/// is the truth.
#[must_use]
pub fn replay(core: &Core, log: &[LogEntry]) -> Replayed {
    let mut states: BTreeMap<String, v1::ContactState> = BTreeMap::new();
    let mut effects = Vec::new();
    let mut campaigns = BTreeMap::new();
    for entry in log {
        let state = states.get(&entry.contact_id).cloned().unwrap_or_default();
        let t = core.step(&state, &entry.input, entry.at, &campaigns);
        stats::record_all(
            &mut campaigns,
            &t.effects,
            &Cause::of(&entry.input, entry.at),
        );
        states.insert(entry.contact_id.clone(), t.state);
        effects.extend(t.effects);
    }
    Replayed {
        states,
        effects,
        campaigns,
    }
}
