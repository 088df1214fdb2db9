//! What goes into a step and what comes out: inputs, timer ids, effects, the transition,
//! and what the runtime tells the core (what each campaign has spent).

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::time::UnixMillis;

use super::CapOutcome;

/// What happened to an opportunity handed to sales.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeadChange {
    /// Handed over to the effect's owner.
    Opened(Assigned),
    /// Accepted within the SLA.
    Accepted,
    /// Not accepted in time.
    Breached,
    /// Won, for this amount.
    Won(Decimal),
    /// Lost.
    Lost,
    /// Moved from another owner to the effect's owner.
    Reassigned {
        /// Previous owner.
        from: String,
        /// What chose the new owner.
        by: Assigned,
    },
    /// Accepted after the breach: too late, ignored.
    LateAcceptance,
}

/// What chose a lead's owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assigned {
    /// The rule's name, or what chose the owner without a rule (see [`crate::assignment`]).
    pub rule: String,
    /// The team whose round-robin took a turn, if one did.
    pub round_robin: Option<String>,
}

impl Assigned {
    /// Chosen by `rule` without a turn of a round-robin.
    #[must_use]
    pub fn by(rule: &str) -> Self {
        Self {
            rule: rule.to_string(),
            round_robin: None,
        }
    }
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

/// An input to the core: a view of what the log holds, borrowed from its entry (the log
/// entry's own messages are the only form an input has; the core never gets a copy).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Input<'a> {
    /// Creates or replaces the contact's profile; its journeys are kept.
    UpsertContact(&'a v1::Contact),
    /// A touchpoint event (a logged one, or the result of a delivery as its event).
    Event(&'a v1::TouchpointEvent),
    /// A timer scheduled by an earlier step came due (its id, read from the logged firing).
    TimerFired(&'a TimerId),
    /// What an accepted command asks of every contact, as its sweep logs it: enroll on a
    /// launch, move onto a new version, fire held timeouts on a resume, end journeys on a
    /// stop, move leads to another owner.
    FollowUp(&'a v1::follow_up::Kind),
}

/// What a timer is for. Part of its id, so that timers of different kinds never collide.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum TimerKind {
    /// The timeout of the `index`-th transition (an `after`) of the state.
    Transition,
    /// The `index`-th action of the state, held back by a cap or quiet hours, tried again.
    Deferred,
    /// The SLA deadline of the lead the `index`-th action of the state handed to sales.
    Sla,
}

/// Identifies a timer: what it is for, in the state the contact entered at `entry_seq`. A
/// timer whose entry has been left is stale and fires to no effect.
///
/// Timers due in the same millisecond fire in the order of their ids, which is the order of
/// their keys in the store (entry, kind, index, campaign, contact), so the order never
/// depends on which batch armed them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TimerId {
    /// The contact.
    pub contact_id: String,
    /// The campaign.
    pub campaign_id: String,
    /// The state entry that scheduled it.
    pub entry_seq: u64,
    /// What it is for.
    pub kind: TimerKind,
    /// Its index within its kind: the transition's, or the action's.
    pub index: u32,
}

impl Ord for TimerId {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (
            self.entry_seq,
            self.kind,
            self.index,
            &self.campaign_id,
            &self.contact_id,
        )
            .cmp(&(
                other.entry_seq,
                other.kind,
                other.index,
                &other.campaign_id,
                &other.contact_id,
            ))
    }
}

impl PartialOrd for TimerId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// The top bits logs written before `TimerFired.kind` packed the kind into.
const LOGGED_SLA_BIT: u32 = 1 << 31;
const LOGGED_DEFER_BIT: u32 = 1 << 30;

impl TimerId {
    /// The timer a logged firing names (also from logs written before `kind` existed).
    #[must_use]
    pub fn from_fired(t: &v1::TimerFired) -> Self {
        let (kind, index) = match v1::TimerKind::try_from(t.kind) {
            Ok(v1::TimerKind::Deferred) => (TimerKind::Deferred, t.transition),
            Ok(v1::TimerKind::Sla) => (TimerKind::Sla, t.transition),
            _ if t.transition & LOGGED_SLA_BIT != 0 => {
                (TimerKind::Sla, t.transition & !LOGGED_SLA_BIT)
            }
            _ if t.transition & LOGGED_DEFER_BIT != 0 => {
                (TimerKind::Deferred, t.transition & !LOGGED_DEFER_BIT)
            }
            _ => (TimerKind::Transition, t.transition),
        };
        Self {
            contact_id: t.contact_id.clone(),
            campaign_id: t.campaign_id.clone(),
            entry_seq: t.entry_seq,
            kind,
            index,
        }
    }

    /// The log entry of its firing, due at `due`.
    #[must_use]
    pub fn fired(&self, due: UnixMillis) -> v1::TimerFired {
        v1::TimerFired {
            contact_id: self.contact_id.clone(),
            campaign_id: self.campaign_id.clone(),
            entry_seq: self.entry_seq,
            transition: self.index,
            due: Some(due.to_proto()),
            kind: match self.kind {
                TimerKind::Transition => v1::TimerKind::Transition,
                TimerKind::Deferred => v1::TimerKind::Deferred,
                TimerKind::Sla => v1::TimerKind::Sla,
            } as i32,
        }
    }
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

/// What a contact did with a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engagement {
    /// `email.opened`.
    Opened,
    /// `link.clicked`.
    Clicked,
    /// `unsubscribed`.
    Unsubscribed,
    /// `spam.reported`.
    SpamReported,
}

impl Engagement {
    /// The engagement a touchpoint of `event_type` reports, if it is one.
    #[must_use]
    pub fn of(event_type: &str) -> Option<Self> {
        match event_type {
            "email.opened" => Some(Self::Opened),
            "link.clicked" => Some(Self::Clicked),
            "unsubscribed" => Some(Self::Unsubscribed),
            "spam.reported" => Some(Self::SpamReported),
            _ => None,
        }
    }

    /// Its name in the contact's `engaged` markers.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Self::Opened => "opened",
            Self::Clicked => "clicked",
            Self::Unsubscribed => "unsubscribed",
            Self::SpamReported => "spam",
        }
    }
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
        /// The first goal state of this enrollment (what the goal counts count).
        first: bool,
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
    /// The service that carried out one of the campaign's actions (or a touchpoint in its
    /// name) reported what became of it: counted per kind.
    Confirmed {
        /// Campaign.
        campaign_id: String,
        /// The action's kind (`Unspecified` when the confirmation does not say).
        kind: v1::ActionKind,
        /// Its template, if known.
        template: String,
        /// What became of it.
        outcome: v1::DeliveryOutcome,
    },
    /// A contact opened, clicked, unsubscribed from or reported as spam one of the campaign's
    /// messages (a touchpoint naming the campaign).
    Engaged {
        /// Campaign.
        campaign_id: String,
        /// The message's kind (`Unspecified` when the touchpoint does not say).
        kind: v1::ActionKind,
        /// Its template, if known.
        template: String,
        /// What the contact did.
        engagement: Engagement,
        /// The first time in this enrollment for this message and engagement (what the
        /// unique opens and clicks count).
        unique: bool,
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
        /// The same per material (template, a catalog material's version apart).
        templates: Vec<(String, Shares)>,
        /// Milliseconds from the campaign's latest touch credited to the revenue.
        since_touch: u64,
    },
    /// Revenue arrived (a purchase, a won opportunity), whether or not a campaign is
    /// credited: the engine's totals, beside what the campaigns were credited.
    Revenue {
        /// Its amount.
        amount: Decimal,
        /// What the campaigns were credited, all together, by model.
        credited: Shares,
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
        /// Its owner after the change (the one whose figures the change counts for).
        owner: String,
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
        /// The first completion of this enrollment (a journey reopened by an SLA breach can
        /// complete again; the completion counts count enrollments).
        first: bool,
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
    /// timers, a skipped enrollment or a fault, which change no figure, nor the engine's
    /// revenue totals.
    #[must_use]
    pub fn counted(&self) -> bool {
        !matches!(
            self,
            Self::ScheduleTimer { .. }
                | Self::CancelTimer { .. }
                | Self::EnrollmentSkipped { .. }
                | Self::Fault { .. }
                | Self::Revenue { .. }
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
            | Self::Confirmed { campaign_id, .. }
            | Self::Engaged { campaign_id, .. }
            | Self::Attributed { campaign_id, .. }
            | Self::ArmPurchase { campaign_id, .. }
            | Self::Lead { campaign_id, .. }
            | Self::Capped { campaign_id, .. } => campaign_id,
            Self::Action(a) => &a.campaign_id,
            // The engine's, not a campaign's.
            Self::Revenue { .. } => "",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timer_reads_back_from_its_firing_and_from_logs_that_packed_the_kind_in_bits() {
        for kind in [TimerKind::Transition, TimerKind::Deferred, TimerKind::Sla] {
            let id = TimerId {
                contact_id: "c".into(),
                campaign_id: "camp".into(),
                entry_seq: 4,
                kind,
                index: 3,
            };
            assert_eq!(TimerId::from_fired(&id.fired(UnixMillis(0))), id);
        }
        let old = |transition| v1::TimerFired {
            transition,
            ..Default::default()
        };
        let sla = TimerId::from_fired(&old((1 << 31) | 3));
        assert_eq!((sla.kind, sla.index), (TimerKind::Sla, 3));
        let deferred = TimerId::from_fired(&old((1 << 30) | 2));
        assert_eq!((deferred.kind, deferred.index), (TimerKind::Deferred, 2));
        let timeout = TimerId::from_fired(&old(1));
        assert_eq!((timeout.kind, timeout.index), (TimerKind::Transition, 1));
    }
}
