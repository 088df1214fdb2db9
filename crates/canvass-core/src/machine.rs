//! The state machine: `step(state, input, now) -> Transition { state, effects }`, pure and deterministic.
//!
//! The unit of state is one contact with its journeys in every campaign, so that a
//! START_CAMPAIGN action, immediate transitions and (later) frequency caps across campaigns
//! resolve inside one step. Timers and actions are effects: data for the runtime to carry
//! out. Nothing here reads a clock, does I/O or draws a random number.

mod caps;
mod leads;

use std::sync::Arc;

use canvass_proto::{v1, wkt};
use cel::Value;
use rust_decimal::Decimal;

use crate::{
    bindings,
    catalog::Catalog,
    condition::{Bindings, Condition},
    key::idempotency_key,
    spec::{Campaign, Reentry, StateIdx, Trigger},
    split::{self, Arm},
    time::{SpanMillis, UnixMillis},
};

/// Most states one input may move a contact through by immediate transitions in one campaign.
pub const MAX_IMMEDIATE_CHAIN: usize = 64;
/// Most nested START_CAMPAIGN enrollments one input may cause.
pub const MAX_ENROLL_DEPTH: usize = 16;
/// The response group of held-out contacts.
pub const HOLDOUT_GROUP: &str = "holdout";
/// Event type whose attributes (`product`, `amount`, `order_id`) are added to the contact's purchases.
pub const PURCHASE_EVENT: &str = "purchase";
/// Event type of an opportunity sales won; its `amount` attribute is revenue like a purchase's.
pub const OPPORTUNITY_WON_EVENT: &str = "opportunity.won";
pub use crate::delivery::REACHED_EVENTS;
pub use caps::{CapOutcome, CapReason, DEFER_TIMER};
pub use leads::{
    BREACH_TEMPLATE, DEFAULT_OWNER, OPPORTUNITY_ACCEPTED, OPPORTUNITY_LOST, OPPORTUNITY_REASSIGNED,
    SLA_TIMER,
};

/// What happened to an opportunity handed to sales.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadChange {
    /// Handed over.
    Opened,
    /// Accepted within the SLA.
    Accepted,
    /// Not accepted in time.
    Breached,
    /// Won, for this amount.
    Won(Decimal),
    /// Lost.
    Lost,
    /// Moved to another owner.
    Reassigned {
        /// Previous owner.
        from: String,
        /// New owner.
        to: String,
    },
    /// Accepted after the breach: too late, ignored.
    LateAcceptance,
}

/// Decimals of a linear attribution share.
pub const LINEAR_SHARE_DECIMALS: u32 = 10;
/// Most touches kept per contact for attribution.
pub const MAX_TOUCHES: usize = 64;

/// What each campaign has spent so far, as the runtime has counted it from the log. The core
/// withholds a cost-bearing action that would take its campaign past its budget.
pub trait Spending {
    /// Total cost of the actions `campaign_id` emitted before this step.
    fn spent(&self, campaign_id: &str) -> Decimal;
}

/// Nothing spent: for callers without budgets to enforce.
impl Spending for () {
    fn spent(&self, _: &str) -> Decimal {
        Decimal::ZERO
    }
}

/// Revenue credited to one campaign (or channel) by each attribution model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Shares {
    /// Credit under last touch.
    pub last_touch: Decimal,
    /// Credit under first touch.
    pub first_touch: Decimal,
    /// Credit under linear attribution.
    pub linear: Decimal,
}

impl Shares {
    /// The sum of two credits.
    #[must_use]
    pub fn plus(self, other: &Self) -> Self {
        Self {
            last_touch: self.last_touch + other.last_touch,
            first_touch: self.first_touch + other.first_touch,
            linear: self.linear + other.linear,
        }
    }
}

/// An input to the core. Each one is appended to the log before its effects are applied.
#[derive(Debug, Clone, PartialEq)]
pub enum Input {
    /// Creates or replaces the contact's profile; its journeys are kept.
    UpsertContact(v1::Contact),
    /// Evaluates a campaign's audience for the contact and enrolls it if it matches.
    Launch {
        /// The campaign launched.
        campaign_id: String,
    },
    /// A touchpoint event.
    Event(v1::TouchpointEvent),
    /// A timer scheduled by an earlier step came due.
    TimerFired(TimerId),
    /// The campaign resumed: timeouts held while it was paused fire now.
    Resume {
        /// The campaign.
        campaign_id: String,
    },
    /// The campaign stopped: the contact's journey in it ends now.
    Stop {
        /// The campaign.
        campaign_id: String,
    },
    /// A new version of the campaign became active: the contact moves onto it if the new
    /// version maps its current state.
    Migrate {
        /// The campaign.
        campaign_id: String,
    },
    /// The contact's open leads of one owner go to another (a staff change).
    ReassignLeads(v1::LeadReassignment),
}

/// Identifies a timeout: the `transition`-th transition of the state the contact entered at
/// `entry_seq`. A timer whose entry has been left is stale and fires to no effect.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TimerId {
    /// The contact.
    pub contact_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The state entry that scheduled it.
    pub entry_seq: u64,
    /// Index of the `after` transition in that state.
    pub transition: u32,
}

/// Why a contact entered (or tried to enter) a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollCause {
    /// The campaign's audience matched at launch.
    Launch,
    /// An entry trigger matched this event.
    Trigger {
        /// The event's id.
        event_id: String,
    },
    /// A START_CAMPAIGN action of another campaign.
    StartedBy {
        /// The campaign that started it.
        campaign_id: String,
    },
}

/// Why an enrollment did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// The contact is already in the campaign.
    AlreadyActive,
    /// The re-entry policy forbids entering again.
    ReentryNotAllowed,
    /// The re-entry cooldown has not passed.
    CooldownNotOver,
    /// No such campaign is loaded.
    UnknownCampaign,
    /// Too many nested START_CAMPAIGN enrollments.
    TooDeep,
    /// The campaign is not running (draft, awaiting approval, paused, completed, stopped).
    NotRunning,
}

/// Something the runtime must record or carry out.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// The contact entered the campaign.
    Enrolled {
        /// Campaign.
        campaign_id: String,
        /// Version entered.
        version: u32,
        /// Split variant, empty without a split.
        variant: String,
        /// Held out by the split.
        holdout: bool,
        /// Why.
        cause: EnrollCause,
    },
    /// An enrollment was refused.
    EnrollmentSkipped {
        /// Campaign.
        campaign_id: String,
        /// Why.
        reason: SkipReason,
    },
    /// The contact entered a state.
    StateEntered {
        /// Campaign.
        campaign_id: String,
        /// The state left, if any.
        from: Option<String>,
        /// The state entered.
        to: String,
        /// Entry number.
        entry_seq: u64,
    },
    /// An action to deliver (boxed: it is much larger than the other effects).
    Action(Box<v1::Action>),
    /// Arm a timer.
    ScheduleTimer {
        /// Which.
        id: TimerId,
        /// When it is due.
        due: UnixMillis,
    },
    /// Disarm a timer (its state was left before it fired).
    CancelTimer {
        /// Which.
        id: TimerId,
        /// When it was due (the store finds it by due time).
        due: UnixMillis,
    },
    /// A goal state was reached.
    GoalReached {
        /// Campaign.
        campaign_id: String,
        /// The goal state.
        state: String,
        /// The contact's split arm (variant id, empty without a split).
        arm: String,
    },
    /// A cost-bearing action was not emitted: it would have taken the campaign past its budget.
    Withheld {
        /// Campaign.
        campaign_id: String,
        /// The action's kind.
        kind: v1::ActionKind,
        /// The key it would have had.
        idempotency_key: String,
        /// Its cost.
        cost: Decimal,
        /// What the campaign had spent.
        spent: Decimal,
        /// The budget.
        total: Decimal,
    },
    /// One of the campaign's actions was confirmed delivered to the contact for the first time
    /// in this enrollment.
    Reached {
        /// Campaign.
        campaign_id: String,
        /// The contact's split arm.
        arm: String,
    },
    /// Revenue (a purchase, a won opportunity) credited to the campaign's actions within its
    /// attribution window.
    Attributed {
        /// Campaign.
        campaign_id: String,
        /// The revenue's amount, all campaigns together.
        amount: Decimal,
        /// The campaign's credit per channel (action kind), by model.
        shares: Vec<(v1::ActionKind, Shares)>,
    },
    /// A customer-facing action was held back by a frequency cap or quiet hours, or a
    /// deferred one was finally sent or dropped.
    Capped {
        /// Campaign.
        campaign_id: String,
        /// The action's kind.
        kind: v1::ActionKind,
        /// The action's key.
        idempotency_key: String,
        /// What became of it (and why, when it was held back).
        outcome: CapOutcome,
    },
    /// An opportunity handed to sales changed.
    Lead {
        /// Campaign that handed it over.
        campaign_id: String,
        /// The opportunity (its hand-off's idempotency key).
        opportunity_id: String,
        /// What happened.
        change: LeadChange,
    },
    /// A purchase within the attribution window after the contact enrolled: counts for its
    /// split arm, holdout included (uplift).
    ArmPurchase {
        /// Campaign.
        campaign_id: String,
        /// Variant id, "holdout", or empty without a split.
        arm: String,
        /// The amount.
        amount: Decimal,
        /// The first such purchase of this enrollment: a conversion.
        first: bool,
    },
    /// A terminal state was reached: the journey is over.
    Completed {
        /// Campaign.
        campaign_id: String,
        /// The terminal state.
        state: String,
    },
    /// The campaign was stopped while the contact was inside.
    Stopped {
        /// Campaign.
        campaign_id: String,
        /// The state the contact was in.
        state: String,
    },
    /// The contact moved onto a new version of the campaign.
    Migrated {
        /// Campaign.
        campaign_id: String,
        /// The version left.
        from_version: u32,
        /// The version entered.
        to_version: u32,
        /// The state left.
        from_state: String,
        /// The state entered.
        to_state: String,
    },
    /// A condition could not be evaluated; it was treated as false.
    ConditionFailed {
        /// Campaign.
        campaign_id: String,
        /// The condition's path in the spec.
        path: String,
        /// The interpreter's message.
        error: String,
    },
    /// The input could not be applied as the spec intends (the state is still consistent).
    Fault {
        /// Campaign.
        campaign_id: String,
        /// What went wrong.
        reason: String,
    },
}

impl Effect {
    /// Whether the campaign counters count it (`stats::record`): not the bookkeeping of
    /// timers, a skipped enrollment or a fault, which change no figure.
    #[must_use]
    pub fn counted(&self) -> bool {
        !matches!(
            self,
            Self::ScheduleTimer { .. }
                | Self::CancelTimer { .. }
                | Self::EnrollmentSkipped { .. }
                | Self::Fault { .. }
        ) && !self.campaign_id().is_empty()
    }

    /// The campaign the effect concerns.
    #[must_use]
    pub fn campaign_id(&self) -> &str {
        match self {
            Self::Enrolled { campaign_id, .. }
            | Self::EnrollmentSkipped { campaign_id, .. }
            | Self::StateEntered { campaign_id, .. }
            | Self::GoalReached { campaign_id, .. }
            | Self::Completed { campaign_id, .. }
            | Self::Stopped { campaign_id, .. }
            | Self::Migrated { campaign_id, .. }
            | Self::ConditionFailed { campaign_id, .. }
            | Self::Fault { campaign_id, .. }
            | Self::Withheld { campaign_id, .. }
            | Self::Reached { campaign_id, .. }
            | Self::Attributed { campaign_id, .. }
            | Self::ArmPurchase { campaign_id, .. }
            | Self::Lead { campaign_id, .. }
            | Self::Capped { campaign_id, .. } => campaign_id,
            Self::Action(a) => &a.campaign_id,
            Self::ScheduleTimer { id, .. } | Self::CancelTimer { id, .. } => &id.campaign_id,
        }
    }
}

/// The result of one step.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    /// The contact's new state.
    pub state: v1::ContactState,
    /// What the runtime must do, in order.
    pub effects: Vec<Effect>,
}

/// The core: a catalog of campaigns and the step function over it.
#[derive(Debug, Clone, Default)]
pub struct Core {
    catalog: Arc<Catalog>,
    /// The partition this core decides for: its share of each budget.
    share: crate::partition::Share,
}

impl Core {
    /// A core over these campaigns.
    #[must_use]
    pub fn new(catalog: Catalog) -> Self {
        Self {
            catalog: Arc::new(catalog),
            share: crate::partition::Share::default(),
        }
    }

    /// The same core deciding for partition `share` (its allotment of each budget).
    #[must_use]
    pub fn with_share(mut self, share: crate::partition::Share) -> Self {
        self.share = share;
        self
    }

    /// The partition this core decides for.
    #[must_use]
    pub fn share(&self) -> crate::partition::Share {
        self.share
    }

    /// The campaigns.
    #[must_use]
    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    /// Applies one input to one contact's state at processing time `now`; `spending` says
    /// what each campaign has spent before this step (budgets).
    #[must_use]
    pub fn step(
        &self,
        state: &v1::ContactState,
        input: &Input,
        now: UnixMillis,
        spending: &dyn Spending,
    ) -> Transition {
        let mut run = Run {
            catalog: &self.catalog,
            share: self.share,
            spending,
            spent_here: Vec::new(),
            state: state.clone(),
            effects: Vec::new(),
            now,
            contact_value: None,
            cause_event: None,
            enroll_depth: 0,
        };
        match input {
            Input::UpsertContact(contact) => run.upsert(contact),
            Input::Launch { campaign_id } => run.launch(campaign_id),
            Input::Event(event) => run.event(event),
            Input::TimerFired(timer) => run.timer(timer),
            Input::Resume { campaign_id } => run.resume(campaign_id),
            Input::Stop { campaign_id } => run.stop(campaign_id),
            Input::Migrate { campaign_id } => run.migrate(campaign_id),
            Input::ReassignLeads(r) => {
                run.reassign(&r.to_owner, &r.from_owner, &r.campaign_id, "");
            }
        }
        Transition {
            state: run.state,
            effects: run.effects,
        }
    }
}

/// One step in progress.
struct Run<'a> {
    catalog: &'a Catalog,
    share: crate::partition::Share,
    spending: &'a dyn Spending,
    /// Cost of the actions emitted in this step, per campaign.
    spent_here: Vec<(String, Decimal)>,
    state: v1::ContactState,
    effects: Vec<Effect>,
    now: UnixMillis,
    /// The contact's CEL value, built on first use (the contact does not change after that).
    contact_value: Option<Value>,
    cause_event: Option<&'a v1::TouchpointEvent>,
    enroll_depth: usize,
}

impl<'a> Run<'a> {
    fn contact_id(&self) -> &str {
        self.state.contact.as_ref().map_or("", |c| c.id.as_str())
    }

    fn journey_index(&self, campaign_id: &str) -> Result<usize, usize> {
        self.state
            .campaigns
            .binary_search_by(|j| j.campaign_id.as_str().cmp(campaign_id))
    }

    fn contact_cel(&mut self) -> Value {
        let now = self.now;
        let (policy, cost) = (self.catalog.policy(), &self.state.marketing_cost);
        let contact = &self.state.contact;
        self.contact_value
            .get_or_insert_with(|| {
                let contact = contact.clone().unwrap_or_default();
                bindings::contact_value(&contact, now, policy, cost)
            })
            .clone()
    }

    /// Evaluates `condition`; an evaluation error is reported and counts as false.
    fn holds(
        &mut self,
        campaign: &Campaign,
        condition: &Condition,
        path: impl FnOnce() -> String,
        journey: Option<usize>,
    ) -> bool {
        let mut b = Bindings::default();
        if condition.uses("contact") {
            b = b.with("contact", self.contact_cel());
        }
        if condition.uses("campaign") {
            b = b.with("campaign", campaign.cel_value.clone());
        }
        if let Some(e) = self.cause_event.filter(|_| condition.uses("event")) {
            b = b.with("event", bindings::event_value(e));
        }
        if let Some(j) = journey.filter(|_| condition.uses("state")) {
            b = b.with(
                "state",
                bindings::state_value(&self.state.campaigns[j], self.now),
            );
        }
        match condition.eval(&b, self.catalog.policy().cel.max_cost) {
            Ok(v) => v,
            Err(e) => {
                self.effects.push(Effect::ConditionFailed {
                    campaign_id: campaign.id().to_string(),
                    path: path(),
                    error: e.0,
                });
                false
            }
        }
    }

    fn launch(&mut self, campaign_id: &str) {
        if self.state.contact.is_none() {
            return;
        }
        let Some(campaign) = self.enrollable(campaign_id) else {
            return;
        };
        let Some(audience) = &campaign.audience else {
            return;
        };
        if self.holds(campaign, audience, || "audience.filter".into(), None) {
            self.enroll(campaign, EnrollCause::Launch);
        }
    }

    /// The version of `campaign_id` contacts may enter now, or why none (reported).
    fn enrollable(&mut self, campaign_id: &str) -> Option<&'a Campaign> {
        let catalog = self.catalog;
        match catalog.active(campaign_id) {
            Some(c) if catalog.status(campaign_id) == v1::CampaignStatus::Running => Some(c),
            None if catalog.latest(campaign_id).is_none() => {
                self.skip(campaign_id, SkipReason::UnknownCampaign);
                None
            }
            _ => {
                self.skip(campaign_id, SkipReason::NotRunning);
                None
            }
        }
    }

    /// Whether contacts inside the campaign move (running, or completed and draining).
    fn moves(&self, campaign_id: &str) -> bool {
        matches!(
            self.catalog.status(campaign_id),
            v1::CampaignStatus::Running | v1::CampaignStatus::Completed
        )
    }

    fn event(&mut self, event: &'a v1::TouchpointEvent) {
        self.cause_event = Some(event);
        let contact = self.state.contact.get_or_insert_with(|| v1::Contact {
            id: event.contact_id.clone(),
            ..Default::default()
        });
        if contact.source_channel.is_empty() && !event.channel.is_empty() {
            contact.source_channel.clone_from(&event.channel);
        }
        let mut revenue = None;
        if event.r#type == PURCHASE_EVENT {
            let purchase = purchase_from(event);
            revenue = Some(purchase.amount.clone());
            contact.purchases.push(purchase);
            self.advance_stage(v1::LifecycleStage::Customer);
        } else if event.r#type == OPPORTUNITY_WON_EVENT {
            revenue = Some(text_attr(event, "amount"));
        }
        if let Some(amount) = revenue {
            match amount.parse::<Decimal>() {
                Ok(amount) => self.revenue(amount),
                Err(_) => self.fault(
                    &event.campaign_id,
                    format!("{} event `{}` has no decimal `amount` (got `{amount}`): no revenue credited", event.r#type, event.id),
                ),
            }
        }
        if event.r#type.starts_with("opportunity.") {
            self.lead_event(event);
        }
        if !event.campaign_id.is_empty() && REACHED_EVENTS.contains(&event.r#type.as_str()) {
            self.reached(&event.campaign_id);
        }
        let in_scope = |id: &str| event.campaign_id.is_empty() || event.campaign_id == id;

        // Journeys that were active before the event see it; enrollments it causes do not.
        let active: Vec<String> = self
            .state
            .campaigns
            .iter()
            .filter(|j| j.status() == v1::JourneyStatus::Active && in_scope(&j.campaign_id))
            .filter(|j| self.moves(&j.campaign_id))
            .map(|j| j.campaign_id.clone())
            .collect();
        for campaign_id in &active {
            self.advance_on_event(campaign_id, event);
        }

        for campaign in self.catalog.enrolling() {
            if active.iter().any(|a| a == campaign.id()) || !in_scope(campaign.id()) {
                continue;
            }
            for (i, trigger) in campaign.entry_triggers.iter().enumerate() {
                if trigger.event_type != event.r#type {
                    continue;
                }
                let matched = match &trigger.guard {
                    None => true,
                    Some(g) => {
                        self.holds(campaign, g, || format!("entryTriggers[{i}].guard"), None)
                    }
                };
                if matched {
                    self.enroll(
                        campaign,
                        EnrollCause::Trigger {
                            event_id: event.id.clone(),
                        },
                    );
                    break;
                }
            }
        }
    }

    fn advance_on_event(&mut self, campaign_id: &str, event: &v1::TouchpointEvent) {
        let Some((j, campaign, at)) = self.current(campaign_id) else {
            return;
        };
        let state = &campaign.states[at];
        for (t, transition) in state.transitions.iter().enumerate() {
            let Trigger::Event { event_type, guard } = &transition.trigger else {
                continue;
            };
            if *event_type != event.r#type {
                continue;
            }
            let passes = match guard {
                None => true,
                Some(g) => {
                    let path = || format!("states.{}.transitions[{t}].onEvent.guard", state.id);
                    self.holds(campaign, g, path, Some(j))
                }
            };
            if passes {
                self.leave_and_enter(campaign, at, transition.to, None);
                return;
            }
        }
    }

    /// Replaces the profile; what the engine learnt from events (purchases, stage, source
    /// channel) is kept unless the new profile gives it.
    fn upsert(&mut self, contact: &v1::Contact) {
        let mut c = contact.clone();
        if let Some(old) = &self.state.contact {
            if c.purchases.is_empty() {
                c.purchases.clone_from(&old.purchases);
            }
            if c.stage() == v1::LifecycleStage::Unspecified {
                c.stage = old.stage;
            }
            if c.source_channel.is_empty() {
                c.source_channel.clone_from(&old.source_channel);
            }
        }
        self.state.contact = Some(c);
    }

    fn timer(&mut self, timer: &TimerId) {
        if timer.transition >= SLA_TIMER {
            self.sla_expired(timer);
            return;
        }
        if timer.transition & DEFER_TIMER != 0 {
            self.deferred_due(timer);
            return;
        }
        let Some((j, campaign, at)) = self.current(&timer.campaign_id) else {
            return;
        };
        if self.state.campaigns[j].entry_seq != timer.entry_seq {
            return; // Stale: the state it was armed for has been left.
        }
        match self.catalog.status(&timer.campaign_id) {
            v1::CampaignStatus::Paused => {
                // Held until the campaign resumes.
                let held = &mut self.state.campaigns[j].held_timers;
                if !held.contains(&timer.transition) {
                    held.push(timer.transition);
                }
                return;
            }
            v1::CampaignStatus::Running | v1::CampaignStatus::Completed => {}
            _ => return,
        }
        let Some(transition) = usize::try_from(timer.transition)
            .ok()
            .and_then(|t| campaign.states[at].transitions.get(t))
        else {
            return;
        };
        if matches!(transition.trigger, Trigger::After(_)) {
            self.leave_and_enter(campaign, at, transition.to, Some(timer.transition));
        }
    }

    fn resume(&mut self, campaign_id: &str) {
        let Ok(j) = self.journey_index(campaign_id) else {
            return;
        };
        let journey = &mut self.state.campaigns[j];
        let held = std::mem::take(&mut journey.held_timers);
        let entry_seq = journey.entry_seq;
        let contact_id = self.contact_id().to_string();
        // The first of them in spec order wins, as it would have had it fired on time.
        if let Some(transition) = held.into_iter().min() {
            let id = TimerId {
                contact_id,
                campaign_id: campaign_id.to_string(),
                entry_seq,
                transition,
            };
            self.timer(&id);
        }
    }

    fn stop(&mut self, campaign_id: &str) {
        let Some((j, campaign, at)) = self.current(campaign_id) else {
            return;
        };
        let entry_seq = self.state.campaigns[j].entry_seq;
        self.disarm_timers(campaign, at, entry_seq, None);
        let journey = &mut self.state.campaigns[j];
        journey.set_status(v1::JourneyStatus::Stopped);
        journey.exited_at = Some(self.now.to_proto());
        journey.held_timers.clear();
        let state = journey.state.clone();
        self.effects.push(Effect::Stopped {
            campaign_id: campaign_id.to_string(),
            state,
        });
    }

    fn migrate(&mut self, campaign_id: &str) {
        let Some(target) = self.catalog.active(campaign_id) else {
            return;
        };
        let Some((j, from, at)) = self.current(campaign_id) else {
            return;
        };
        if from.version() == target.version() {
            return;
        }
        let mapped = target
            .spec
            .migrations
            .iter()
            .find(|m| m.from_version == from.version())
            .and_then(|m| m.states.get(&from.states[at].id))
            .and_then(|to| target.state_index(to));
        let Some(to) = mapped else {
            return;
        };
        let journey = &self.state.campaigns[j];
        let (entry_seq, entered) = (journey.entry_seq, journey.state_entered_at);
        self.disarm_timers(from, at, entry_seq, None);
        // A new entry number (so timers and keys stay unique) but the same entry time: the
        // contact did not re-enter, gets no actions again, and its timeouts keep counting.
        let journey = &mut self.state.campaigns[j];
        journey.campaign_version = target.version();
        journey.entry_seq += 1;
        journey.state.clone_from(&target.states[to].id);
        journey.held_timers.clear();
        if let Some(group) = &target.states[to].response_group {
            journey.response_group.clone_from(group);
        }
        let new_seq = journey.entry_seq;
        let entered_at = entered.as_ref().map_or(self.now, UnixMillis::from_proto);
        self.effects.push(Effect::Migrated {
            campaign_id: campaign_id.to_string(),
            from_version: from.version(),
            to_version: target.version(),
            from_state: from.states[at].id.clone(),
            to_state: target.states[to].id.clone(),
        });
        for (t, transition) in target.states[to].transitions.iter().enumerate() {
            if let Trigger::After(span) = transition.trigger {
                let id = self.timer_id(target, new_seq, t);
                self.effects.push(Effect::ScheduleTimer {
                    id,
                    // Possibly already past: it then fires at once.
                    due: entered_at.plus(span),
                });
            }
        }
    }

    /// The active journey in `campaign_id`, its campaign version and its current state.
    fn current(&mut self, campaign_id: &str) -> Option<(usize, &'a Campaign, StateIdx)> {
        let j = self.journey_index(campaign_id).ok()?;
        let journey = &self.state.campaigns[j];
        if journey.status() != v1::JourneyStatus::Active {
            return None;
        }
        let version = journey.campaign_version;
        let state_id = journey.state.clone();
        let Some(campaign) = self.catalog.get(campaign_id, version) else {
            self.fault(campaign_id, format!("version {version} is not loaded"));
            return None;
        };
        let Some(at) = campaign.state_index(&state_id) else {
            self.fault(
                campaign_id,
                format!("state `{state_id}` is not in version {version}"),
            );
            return None;
        };
        Some((j, campaign, at))
    }

    /// Leaves `from`, disarming its timers but `fired`, the one firing now (if any).
    fn leave_and_enter(
        &mut self,
        campaign: &'a Campaign,
        from: StateIdx,
        to: StateIdx,
        fired: Option<u32>,
    ) {
        let Ok(j) = self.journey_index(campaign.id()) else {
            return;
        };
        let entry_seq = self.state.campaigns[j].entry_seq;
        self.disarm_timers(campaign, from, entry_seq, fired);
        self.enter(campaign, Some(from), to);
    }

    /// Cancels the timeouts the state entry `entry_seq` of state `at` armed, but `except`
    /// (the one firing now, if any).
    fn disarm_timers(
        &mut self,
        campaign: &Campaign,
        at: StateIdx,
        entry_seq: u64,
        except: Option<u32>,
    ) {
        // Timeouts are measured from the entry, so their due times follow from it.
        let entered = self
            .journey_index(campaign.id())
            .ok()
            .and_then(|j| self.state.campaigns[j].state_entered_at.as_ref())
            .map_or(self.now, UnixMillis::from_proto);
        for (t, transition) in campaign.states[at].transitions.iter().enumerate() {
            let firing = except.is_some_and(|f| u32::try_from(t).is_ok_and(|t| t == f));
            if let Trigger::After(span) = transition.trigger
                && !firing
            {
                let id = self.timer_id(campaign, entry_seq, t);
                self.effects.push(Effect::CancelTimer {
                    id,
                    due: entered.plus(span),
                });
            }
        }
    }

    fn timer_id(&self, campaign: &Campaign, entry_seq: u64, transition: usize) -> TimerId {
        TimerId {
            contact_id: self.contact_id().to_string(),
            campaign_id: campaign.id().to_string(),
            entry_seq,
            transition: u32::try_from(transition).unwrap_or(u32::MAX),
        }
    }

    /// Enters `to`, then follows immediate transitions until the contact settles.
    fn enter(&mut self, campaign: &'a Campaign, mut from: Option<StateIdx>, mut to: StateIdx) {
        for _ in 0..MAX_IMMEDIATE_CHAIN {
            let Ok(j) = self.journey_index(campaign.id()) else {
                return;
            };
            let state = &campaign.states[to];
            let journey = &mut self.state.campaigns[j];
            journey.entry_seq += 1;
            journey.state.clone_from(&state.id);
            journey.state_entered_at = Some(self.now.to_proto());
            if let Some(group) = &state.response_group {
                journey.response_group.clone_from(group);
            }
            let entry_seq = journey.entry_seq;
            self.effects.push(Effect::StateEntered {
                campaign_id: campaign.id().to_string(),
                from: from.map(|f| campaign.states[f].id.clone()),
                to: state.id.clone(),
                entry_seq,
            });
            if state.goal {
                let journey = &mut self.state.campaigns[j];
                journey.goal_reached = true;
                let arm = journey.variant.clone();
                self.effects.push(Effect::GoalReached {
                    campaign_id: campaign.id().to_string(),
                    state: state.id.clone(),
                    arm,
                });
            }
            self.emit_actions(campaign, to, j);
            let Ok(j) = self.journey_index(campaign.id()) else {
                return;
            };
            if state.terminal {
                let journey = &mut self.state.campaigns[j];
                journey.set_status(v1::JourneyStatus::Completed);
                journey.exited_at = Some(self.now.to_proto());
                self.effects.push(Effect::Completed {
                    campaign_id: campaign.id().to_string(),
                    state: state.id.clone(),
                });
                return;
            }
            match self.immediate_target(campaign, to, j) {
                Some(next) => {
                    from = Some(to);
                    to = next;
                }
                None => {
                    for (t, transition) in state.transitions.iter().enumerate() {
                        if let Trigger::After(span) = transition.trigger {
                            let id = self.timer_id(campaign, entry_seq, t);
                            self.effects.push(Effect::ScheduleTimer {
                                id,
                                due: self.now.plus(span),
                            });
                        }
                    }
                    return;
                }
            }
        }
        self.fault(
            campaign.id(),
            format!("immediate transitions did not settle after {MAX_IMMEDIATE_CHAIN} states; stopped in `{}`", campaign.states[to].id),
        );
    }

    fn immediate_target(
        &mut self,
        campaign: &Campaign,
        at: StateIdx,
        journey: usize,
    ) -> Option<StateIdx> {
        let state = &campaign.states[at];
        // Immediate guards see no event: the state may have been entered by a timer.
        let cause = self.cause_event.take();
        let mut target = None;
        for (t, transition) in state.transitions.iter().enumerate() {
            let Trigger::Immediately(guard) = &transition.trigger else {
                continue;
            };
            let passes = match guard {
                None => true,
                Some(g) => {
                    let path = || format!("states.{}.transitions[{t}].immediately.guard", state.id);
                    self.holds(campaign, g, path, Some(journey))
                }
            };
            if passes {
                target = Some(transition.to);
                break;
            }
        }
        self.cause_event = cause;
        target
    }

    fn emit_actions(&mut self, campaign: &'a Campaign, at: StateIdx, j: usize) {
        let state = &campaign.states[at];
        for (k, spec) in state.actions.iter().enumerate() {
            let journey = &self.state.campaigns[j];
            let kind = spec.kind();
            let entry_seq = journey.entry_seq;
            let respond_by = (kind == v1::ActionKind::SalesHandoff)
                .then(|| {
                    spec.sla
                        .as_ref()
                        .map(|d| self.now.plus(SpanMillis::from_proto(d)).to_proto())
                })
                .flatten();
            let action = v1::Action {
                idempotency_key: idempotency_key(
                    campaign.id(),
                    journey.campaign_version,
                    self.contact_id(),
                    entry_seq,
                    k,
                ),
                kind: spec.kind,
                campaign_id: campaign.id().to_string(),
                campaign_version: journey.campaign_version,
                contact_id: self.contact_id().to_string(),
                state: state.id.clone(),
                action_index: u32::try_from(k).unwrap_or(u32::MAX),
                template: spec.template.clone(),
                params: spec.params.clone(),
                emitted_at: Some(self.now.to_proto()),
                respond_by,
                target_campaign: spec.target_campaign.clone(),
                cost: String::new(),
                currency: String::new(),
                variant: journey.variant.clone(),
                cause_event_id: self.cause_event.map(|e| e.id.clone()).unwrap_or_default(),
            };
            if self.held_back(&action, entry_seq) {
                continue;
            }
            self.send(campaign, action, Some(spec), entry_seq);
        }
    }

    /// Charges the action to the budget (withholding it if that would exceed the budget) and
    /// emits it, with what follows from its kind: a touch, an opportunity, an enrollment.
    fn send(
        &mut self,
        campaign: &'a Campaign,
        mut action: v1::Action,
        spec: Option<&v1::ActionSpec>,
        entry_seq: u64,
    ) {
        let kind = action.kind();
        if let Some(b) = &campaign.budget {
            let cost = b.cost_of(kind);
            if let Some(total) = b.total.map(|t| crate::partition::allotment(t, self.share))
                && cost > Decimal::ZERO
            {
                let spent = self.spending.spent(campaign.id()) + self.spent_here(campaign.id());
                if spent + cost > total {
                    self.effects.push(Effect::Withheld {
                        campaign_id: campaign.id().to_string(),
                        kind,
                        idempotency_key: action.idempotency_key,
                        cost,
                        spent,
                        total,
                    });
                    return;
                }
            }
            self.spend(campaign.id(), cost);
            if cost > Decimal::ZERO {
                crate::stats::add_money(&mut self.state.marketing_cost, cost);
            }
            action.cost = cost.to_string();
            action.currency.clone_from(&b.currency);
        }
        match (kind, spec) {
            (v1::ActionKind::SalesHandoff, Some(spec)) => {
                self.effects.push(Effect::Action(Box::new(action.clone())));
                self.open_opportunity(campaign, spec, &action, entry_seq);
            }
            _ => self.effects.push(Effect::Action(Box::new(action.clone()))),
        }
        if kind != v1::ActionKind::StartCampaign {
            self.touch(campaign.id(), kind);
        }
        if kind == v1::ActionKind::StartCampaign
            && let Some(target) = self.enrollable(&action.target_campaign)
        {
            self.enroll(
                target,
                EnrollCause::StartedBy {
                    campaign_id: campaign.id().to_string(),
                },
            );
        }
    }

    fn enroll(&mut self, campaign: &'a Campaign, cause: EnrollCause) {
        if self.enroll_depth >= MAX_ENROLL_DEPTH {
            self.skip(campaign.id(), SkipReason::TooDeep);
            return;
        }
        let j = match self.journey_index(campaign.id()) {
            Ok(j) => {
                let journey = &self.state.campaigns[j];
                if journey.status() == v1::JourneyStatus::Active {
                    self.skip(campaign.id(), SkipReason::AlreadyActive);
                    return;
                }
                let left = journey
                    .exited_at
                    .as_ref()
                    .map(UnixMillis::from_proto)
                    .unwrap_or_default();
                match campaign.reentry {
                    Reentry::Never => {
                        self.skip(campaign.id(), SkipReason::ReentryNotAllowed);
                        return;
                    }
                    Reentry::AfterCooldown(cooldown) if left.plus(cooldown) > self.now => {
                        self.skip(campaign.id(), SkipReason::CooldownNotOver);
                        return;
                    }
                    Reentry::AfterCooldown(_) | Reentry::Always => j,
                }
            }
            Err(at) => {
                let journey = v1::ContactCampaignState {
                    campaign_id: campaign.id().to_string(),
                    ..Default::default()
                };
                self.state.campaigns.insert(at, journey);
                at
            }
        };
        let arm = campaign
            .split
            .as_ref()
            .map(|s| split::assign(s, campaign.id(), self.contact_id()));
        let now = Some(self.now.to_proto());
        let journey = &mut self.state.campaigns[j];
        journey.campaign_version = campaign.version();
        journey.enrolled_at.clone_from(&now);
        journey.enrollments += 1;
        journey.goal_reached = false;
        journey.exited_at = None;
        journey.response_group.clear();
        journey.state.clear();
        journey.state_entered_at = None;
        journey.variant.clear();
        journey.reached = false;
        journey.converted_at = None;
        self.advance_stage(v1::LifecycleStage::Prospect);
        let journey = &mut self.state.campaigns[j];
        let holdout = arm == Some(Arm::Holdout);
        let mut initial = campaign.initial_state;
        if holdout {
            journey.set_status(v1::JourneyStatus::Holdout);
            journey.response_group = HOLDOUT_GROUP.to_string();
            // Held-out contacts leave at once: they are tracked, never contacted.
            journey.exited_at = now;
        } else {
            journey.set_status(v1::JourneyStatus::Active);
            if let Some(Arm::Treated(Some(v))) = arm {
                journey.variant.clone_from(&v.id);
                initial = v.initial_state.unwrap_or(initial);
            }
        }
        self.effects.push(Effect::Enrolled {
            campaign_id: campaign.id().to_string(),
            version: campaign.version(),
            variant: self.state.campaigns[j].variant.clone(),
            holdout,
            cause,
        });
        if !holdout {
            self.enroll_depth += 1;
            self.enter(campaign, None, initial);
            self.enroll_depth -= 1;
        }
    }

    fn spent_here(&self, campaign_id: &str) -> Decimal {
        self.spent_here
            .iter()
            .find(|(c, _)| c == campaign_id)
            .map_or(Decimal::ZERO, |(_, d)| *d)
    }

    fn spend(&mut self, campaign_id: &str, cost: Decimal) {
        if cost.is_zero() {
            return;
        }
        match self.spent_here.iter_mut().find(|(c, _)| c == campaign_id) {
            Some((_, d)) => *d += cost,
            None => self.spent_here.push((campaign_id.to_string(), cost)),
        }
    }

    /// How long a touch of `campaign_id` can be credited with revenue (unknown campaigns: none).
    fn window(&self, campaign_id: &str) -> Option<SpanMillis> {
        self.catalog
            .latest(campaign_id)
            .map(Campaign::attribution_window)
    }

    /// Records that the contact received an action, dropping touches no window covers.
    fn touch(&mut self, campaign_id: &str, kind: v1::ActionKind) {
        self.prune_touches();
        let touches = &mut self.state.touches;
        if touches.len() >= MAX_TOUCHES {
            touches.remove(0);
        }
        touches.push(v1::Touch {
            campaign_id: campaign_id.to_string(),
            kind: kind as i32,
            at: Some(self.now.to_proto()),
        });
    }

    /// Keeps the touches an attribution window or a frequency cap still needs.
    fn prune_touches(&mut self) {
        let now = self.now;
        let cap = self.catalog.policy().longest_cap();
        let mut touches = std::mem::take(&mut self.state.touches);
        touches.retain(|t| {
            let at =
                t.at.as_ref()
                    .map_or(UnixMillis(i64::MIN), UnixMillis::from_proto);
            self.credits(t, now) || at.plus(cap) > now
        });
        self.state.touches = touches;
    }

    /// Whether touch `t` is within its campaign's attribution window at `now`.
    fn credits(&self, t: &v1::Touch, now: UnixMillis) -> bool {
        let at =
            t.at.as_ref()
                .map_or(UnixMillis(i64::MIN), UnixMillis::from_proto);
        self.window(&t.campaign_id)
            .is_some_and(|w| at <= now && now <= at.plus(w))
    }

    /// Credits revenue to the touches within their windows (last touch, first touch, linear)
    /// and to the split arms of the campaigns the contact enrolled in within their windows.
    fn revenue(&mut self, amount: Decimal) {
        self.prune_touches();
        let now = self.now;
        let touches: Vec<&v1::Touch> = self
            .state
            .touches
            .iter()
            .filter(|t| self.credits(t, now))
            .collect();
        if !touches.is_empty() {
            let count = Decimal::from(touches.len());
            // Ten decimals: far finer than any currency, and sums of such shares stay exact
            // (28 significant digits would round when added up). The last touch takes what
            // rounding left, so the shares add up to the amount.
            let share = (amount / count).round_dp(LINEAR_SHARE_DECIMALS);
            let remainder = amount - share * (count - Decimal::ONE);
            let mut credits: Vec<(String, Vec<(v1::ActionKind, Shares)>)> = Vec::new();
            let n = touches.len();
            for (i, t) in touches.iter().enumerate() {
                let is_last = i + 1 == n;
                let s = Shares {
                    last_touch: if is_last { amount } else { Decimal::ZERO },
                    first_touch: if i == 0 { amount } else { Decimal::ZERO },
                    linear: if is_last { remainder } else { share },
                };
                let kind = t.kind();
                let at = match credits.iter().position(|(c, _)| *c == t.campaign_id) {
                    Some(at) => at,
                    None => {
                        credits.push((t.campaign_id.clone(), Vec::new()));
                        credits.len() - 1
                    }
                };
                let kinds = &mut credits[at].1;
                match kinds.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, sum)) => *sum = sum.plus(&s),
                    None => kinds.push((kind, s)),
                }
            }
            for (campaign_id, shares) in credits {
                self.effects.push(Effect::Attributed {
                    campaign_id,
                    amount,
                    shares,
                });
            }
        }
        let now = self.now;
        for j in 0..self.state.campaigns.len() {
            let journey = &self.state.campaigns[j];
            let Some(window) = self.window(&journey.campaign_id) else {
                continue;
            };
            let Some(enrolled) = journey.enrolled_at.as_ref().map(UnixMillis::from_proto) else {
                continue;
            };
            if now > enrolled.plus(window) || now < enrolled {
                continue;
            }
            let arm = arm_of(journey);
            let first = journey.converted_at.is_none();
            if first {
                self.state.campaigns[j].converted_at = Some(now.to_proto());
            }
            self.effects.push(Effect::ArmPurchase {
                campaign_id: self.state.campaigns[j].campaign_id.clone(),
                arm,
                amount,
                first,
            });
        }
    }

    /// Marks the contact's enrollment in `campaign_id` as reached, once.
    fn reached(&mut self, campaign_id: &str) {
        let Ok(j) = self.journey_index(campaign_id) else {
            return;
        };
        let journey = &mut self.state.campaigns[j];
        if journey.reached || journey.status() == v1::JourneyStatus::Holdout {
            return;
        }
        journey.reached = true;
        let arm = arm_of(journey);
        self.effects.push(Effect::Reached {
            campaign_id: campaign_id.to_string(),
            arm,
        });
    }

    fn skip(&mut self, campaign_id: &str, reason: SkipReason) {
        self.effects.push(Effect::EnrollmentSkipped {
            campaign_id: campaign_id.to_string(),
            reason,
        });
    }

    fn fault(&mut self, campaign_id: &str, reason: String) {
        self.effects.push(Effect::Fault {
            campaign_id: campaign_id.to_string(),
            reason,
        });
    }
}

/// The split arm of a journey: its variant, "holdout", or empty without a split.
fn arm_of(journey: &v1::ContactCampaignState) -> String {
    if journey.status() == v1::JourneyStatus::Holdout {
        HOLDOUT_GROUP.to_string()
    } else {
        journey.variant.clone()
    }
}

/// An event attribute as text (numbers in their shortest form), empty if absent.
fn text_attr(event: &v1::TouchpointEvent, name: &str) -> String {
    match event
        .attrs
        .as_ref()
        .and_then(|a| a.fields.get(name))
        .and_then(|v| v.kind.as_ref())
    {
        Some(wkt::value::Kind::StringValue(s)) => s.clone(),
        Some(wkt::value::Kind::NumberValue(n)) => n.to_string(),
        _ => String::new(),
    }
}

/// The purchase a "purchase" event records: `attrs.product`, `attrs.amount` (number or
/// decimal string), `attrs.order_id`, at the event's time.
fn purchase_from(event: &v1::TouchpointEvent) -> v1::Purchase {
    let text = |name: &str| text_attr(event, name);
    v1::Purchase {
        product: text("product"),
        amount: text("amount"),
        at: event.occurred_at,
        order_id: text("order_id"),
        cost: text("cost"),
    }
}
