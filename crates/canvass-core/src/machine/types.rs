//! What goes into a step and what comes out: inputs, timer ids, effects, the transition,
//! and what the runtime tells the core (what each campaign has spent).

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::time::UnixMillis;

use super::CapOutcome;

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
