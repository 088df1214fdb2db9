//! The state machine: `step(state, input, now) -> Transition { state, effects }`, pure and deterministic.
//!
//! The unit of state is one contact with its journeys in every campaign, so that a
//! START_CAMPAIGN action, immediate transitions and (later) frequency caps across campaigns
//! resolve inside one step. Timers and actions are effects: data for the runtime to carry
//! out. Nothing here reads a clock, does I/O or draws a random number.
//!
//! One step (`Run`) over rooms named for what they hold: `types` (inputs, effects, timer
//! ids), `input` (what each kind of input does), `journey` (leaving and entering states,
//! their timers), `enrollment` (who may enter a campaign, and entering), `actions` (emitting
//! a state's actions against the budget), `attribution` (touches and revenue), `caps`
//! (frequency caps and quiet hours), `leads` (opportunities and their SLA).

mod actions;
mod attribution;
mod caps;
mod enrollment;
mod input;
mod journey;
mod leads;
mod types;

use std::sync::Arc;

use canvass_proto::{v1, wkt};
use cel::Value;
use rust_decimal::Decimal;

use crate::{
    assignment::{BY_COMMAND, Workload},
    bindings,
    catalog::Catalog,
    condition::{Bindings, Condition},
    spec::Campaign,
    time::UnixMillis,
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
pub use caps::{CapOutcome, CapReason};
pub use leads::{
    BREACH_TEMPLATE, DEFAULT_OWNER, OPPORTUNITY_ACCEPTED, OPPORTUNITY_LOST, OPPORTUNITY_REASSIGNED,
};

pub use types::{
    Assigned, Effect, Engagement, EnrollCause, Input, LeadChange, Shares, SkipReason, Spending,
    TimerId, TimerKind, Transition,
};

/// Most touches kept per contact for attribution.
pub const MAX_TOUCHES: usize = 64;

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
    /// what each campaign has spent before this step (budgets), `workload` what the
    /// partition's sales owners hold (assignment rules).
    #[must_use]
    pub fn step(
        &self,
        state: v1::ContactState,
        input: &Input<'_>,
        now: UnixMillis,
        spending: &dyn Spending,
        workload: &dyn Workload,
    ) -> Transition {
        let mut run = Run {
            catalog: &self.catalog,
            share: self.share,
            spending,
            workload,
            spent_here: Vec::new(),
            state,
            effects: Vec::new(),
            now,
            contact_value: None,
            cause_event: None,
            enroll_depth: 0,
        };
        match *input {
            Input::UpsertContact(contact) => run.upsert(contact),
            Input::Event(event) => run.event(event),
            Input::TimerFired(timer) => run.timer(timer),
            Input::FollowUp(follow_up) => {
                use v1::follow_up::Kind;
                match follow_up {
                    Kind::Launch(campaign_id) => run.launch(campaign_id),
                    Kind::Resume(campaign_id) => run.resume(campaign_id),
                    Kind::Stop(campaign_id) => run.stop(campaign_id),
                    Kind::Migrate(campaign_id) => run.migrate(campaign_id),
                    Kind::ReassignLeads(r) => {
                        let to = Some(r.to_owner.trim()).filter(|o| !o.is_empty());
                        run.reassign(to, r.from_owner.trim(), &r.campaign_id, "", BY_COMMAND);
                    }
                }
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
    workload: &'a dyn Workload,
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
    pub(super) fn contact_id(&self) -> &str {
        self.state.contact.as_ref().map_or("", |c| c.id.as_str())
    }

    pub(super) fn journey_index(&self, campaign_id: &str) -> Result<usize, usize> {
        self.state
            .campaigns
            .binary_search_by(|j| j.campaign_id.as_str().cmp(campaign_id))
    }

    pub(super) fn contact_cel(&mut self) -> Value {
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
    pub(super) fn holds(
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

    pub(super) fn skip(&mut self, campaign_id: &str, reason: SkipReason) {
        self.effects.push(Effect::EnrollmentSkipped {
            campaign_id: campaign_id.to_string(),
            reason,
        });
    }

    pub(super) fn fault(&mut self, campaign_id: &str, reason: String) {
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
