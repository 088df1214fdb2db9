//! Leads handed to sales (seed 003): a SALES_HANDOFF opens an opportunity with a deadline;
//! sales accepts it in time or it returns to marketing; it is won or lost; an operator may
//! move it to another owner. Also the contact's lifecycle stage, which these steps advance.

use canvass_proto::v1::{self, LifecycleStage as Stage, OpportunityStatus as Status};
use rust_decimal::Decimal;

use super::{Effect, LeadChange, Run, TimerId, TimerKind, text_attr};
use crate::{spec::Campaign, time::UnixMillis};

/// Sales accepted an opportunity (attribute `opportunityId`, optional).
pub const OPPORTUNITY_ACCEPTED: &str = "opportunity.accepted";
/// Sales lost an opportunity.
pub const OPPORTUNITY_LOST: &str = "opportunity.lost";
/// An opportunity changes owner (attributes `owner`, and `opportunityId` or `fromOwner`).
pub const OPPORTUNITY_REASSIGNED: &str = "opportunity.reassigned";
/// Owner of an opportunity whose hand-off names none.
pub const DEFAULT_OWNER: &str = "sales";
/// Template of the notification an SLA breach emits.
pub const BREACH_TEMPLATE: &str = "sla-breach";

impl Run<'_> {
    /// Moves the contact's stage forward to `to` (never back, except through [`Run::demote`]).
    pub(super) fn advance_stage(&mut self, to: Stage) {
        if let Some(c) = self.state.contact.as_mut()
            && c.stage() < to
        {
            c.set_stage(to);
        }
    }

    /// An opportunity that did not close returns the contact from opportunity to prospect.
    fn demote(&mut self) {
        if let Some(c) = self.state.contact.as_mut()
            && c.stage() == Stage::Opportunity
        {
            c.set_stage(Stage::Prospect);
        }
    }

    /// Opens the opportunity of a SALES_HANDOFF action just emitted and arms its deadline.
    pub(super) fn open_opportunity(
        &mut self,
        campaign: &Campaign,
        spec: &v1::ActionSpec,
        action: &v1::Action,
        entry_seq: u64,
    ) {
        let due = action
            .respond_by
            .as_ref()
            .map_or(self.now, UnixMillis::from_proto);
        let owner = spec
            .params
            .get("owner")
            .filter(|o| !o.trim().is_empty())
            .map_or(DEFAULT_OWNER, String::as_str);
        self.state.opportunities.push(v1::Opportunity {
            id: action.idempotency_key.clone(),
            campaign_id: campaign.id().to_string(),
            entry_seq,
            action_index: action.action_index,
            owner: owner.to_string(),
            status: Status::Open as i32,
            opened_at: Some(self.now.to_proto()),
            respond_by: Some(due.to_proto()),
            settled_at: None,
            amount: String::new(),
            breach_state: spec.sla_breach_state.clone(),
        });
        self.advance_stage(Stage::Opportunity);
        self.effects.push(Effect::ScheduleTimer {
            id: sla_timer(
                self.contact_id(),
                &action.campaign_id,
                entry_seq,
                action.action_index,
            ),
            due,
        });
        self.lead(campaign.id(), &action.idempotency_key, LeadChange::Opened);
    }

    fn lead(&mut self, campaign_id: &str, opportunity_id: &str, change: LeadChange) {
        self.effects.push(Effect::Lead {
            campaign_id: campaign_id.to_string(),
            opportunity_id: opportunity_id.to_string(),
            change,
        });
    }

    /// An SLA deadline came: an opportunity still open is breached, notified, and its contact
    /// goes back to the spec's nurture state.
    pub(super) fn sla_expired(&mut self, timer: &TimerId) {
        let index = timer.index;
        let Some(o) = self.state.opportunities.iter().position(|o| {
            o.campaign_id == timer.campaign_id
                && o.entry_seq == timer.entry_seq
                && o.action_index == index
        }) else {
            return;
        };
        if self.state.opportunities[o].status() != Status::Open {
            return; // Accepted or closed in time: the deadline no longer matters.
        }
        let now = self.now;
        let opportunity = &mut self.state.opportunities[o];
        opportunity.set_status(Status::Breached);
        opportunity.settled_at = Some(now.to_proto());
        let opportunity = opportunity.clone();
        self.demote();
        self.lead(
            &opportunity.campaign_id,
            &opportunity.id,
            LeadChange::Breached,
        );
        self.notify_breach(&opportunity);
        self.return_to_marketing(&opportunity);
    }

    fn notify_breach(&mut self, o: &v1::Opportunity) {
        let journey = self
            .journey_index(&o.campaign_id)
            .ok()
            .map(|j| self.state.campaigns[j].clone())
            .unwrap_or_default();
        let mut params = std::collections::BTreeMap::new();
        params.insert("opportunity_id".to_string(), o.id.clone());
        params.insert("owner".to_string(), o.owner.clone());
        if let Some(by) = &o.respond_by {
            params.insert("respond_by".to_string(), by.to_string());
        }
        let action = v1::Action {
            idempotency_key: format!("{}/sla-breach", o.id),
            kind: v1::ActionKind::Notification as i32,
            campaign_id: o.campaign_id.clone(),
            campaign_version: journey.campaign_version,
            contact_id: self.contact_id().to_string(),
            state: journey.state.clone(),
            action_index: o.action_index,
            template: BREACH_TEMPLATE.to_string(),
            params,
            emitted_at: Some(self.now.to_proto()),
            variant: journey.variant,
            ..Default::default()
        };
        self.effects.push(Effect::Action(Box::new(action)));
    }

    /// Moves the contact to the opportunity's breach state, reopening a finished journey.
    fn return_to_marketing(&mut self, o: &v1::Opportunity) {
        if o.breach_state.is_empty() || !self.moves(&o.campaign_id) {
            return;
        }
        let Ok(j) = self.journey_index(&o.campaign_id) else {
            return;
        };
        let journey = &self.state.campaigns[j];
        let Some(campaign) = self.catalog.get(&o.campaign_id, journey.campaign_version) else {
            return;
        };
        let Some(to) = campaign.state_index(&o.breach_state) else {
            self.fault(
                &o.campaign_id,
                format!(
                    "breach state `{}` is not in version {}",
                    o.breach_state,
                    campaign.version()
                ),
            );
            return;
        };
        let from = campaign.state_index(&journey.state);
        match (journey.status(), from) {
            (v1::JourneyStatus::Active, Some(at)) => self.leave_and_enter(campaign, at, to, None),
            (v1::JourneyStatus::Completed, from) => {
                let journey = &mut self.state.campaigns[j];
                journey.set_status(v1::JourneyStatus::Active);
                journey.exited_at = None;
                self.enter(campaign, from, to);
            }
            _ => {}
        }
    }

    /// Applies an `opportunity.*` event from sales to the contact's opportunities.
    pub(super) fn lead_event(&mut self, event: &v1::TouchpointEvent) {
        let wanted = text_attr(event, "opportunityId");
        let in_scope = |o: &v1::Opportunity| {
            (wanted.is_empty() || o.id == wanted)
                && (event.campaign_id.is_empty() || o.campaign_id == event.campaign_id)
        };
        let now = self.now;
        match event.r#type.as_str() {
            OPPORTUNITY_ACCEPTED => {
                // The latest matching lead still waiting, else the latest breached one (late).
                let target = self
                    .latest(&in_scope, &[Status::Open])
                    .or_else(|| self.latest(&in_scope, &[Status::Breached]));
                let Some(o) = target else { return };
                let opportunity = self.state.opportunities[o].clone();
                if opportunity.status() == Status::Breached {
                    self.lead(
                        &opportunity.campaign_id,
                        &opportunity.id,
                        LeadChange::LateAcceptance,
                    );
                    return;
                }
                self.settle(o, Status::Accepted, now);
                self.disarm_sla(&opportunity);
                self.lead(
                    &opportunity.campaign_id,
                    &opportunity.id,
                    LeadChange::Accepted,
                );
            }
            super::OPPORTUNITY_WON_EVENT | OPPORTUNITY_LOST => {
                let Some(o) = self.latest(&in_scope, &[Status::Open, Status::Accepted]) else {
                    return;
                };
                let opportunity = self.state.opportunities[o].clone();
                if opportunity.status() == Status::Open {
                    self.disarm_sla(&opportunity);
                }
                let change = if event.r#type == OPPORTUNITY_LOST {
                    self.settle(o, Status::Lost, now);
                    self.demote();
                    LeadChange::Lost
                } else {
                    let amount = text_attr(event, "amount");
                    let won = amount.parse::<Decimal>().unwrap_or_default();
                    self.settle(o, Status::Won, now);
                    self.state.opportunities[o].amount = won.to_string();
                    self.advance_stage(Stage::Customer);
                    LeadChange::Won(won)
                };
                self.lead(&opportunity.campaign_id, &opportunity.id, change);
            }
            OPPORTUNITY_REASSIGNED => {
                let owner = text_attr(event, "owner");
                if owner.trim().is_empty() {
                    self.fault(
                        &event.campaign_id,
                        format!(
                            "{OPPORTUNITY_REASSIGNED} event `{}` has no `owner`",
                            event.id
                        ),
                    );
                    return;
                }
                let from_owner = text_attr(event, "fromOwner");
                self.reassign(&owner, &from_owner, &event.campaign_id, &wanted);
            }
            _ => {}
        }
    }

    /// Moves the open and accepted leads matching the filters (empty: any) to `owner`.
    pub(super) fn reassign(
        &mut self,
        owner: &str,
        from_owner: &str,
        campaign_id: &str,
        opportunity_id: &str,
    ) {
        let mut moved = Vec::new();
        for o in &mut self.state.opportunities {
            let live = matches!(o.status(), Status::Open | Status::Accepted);
            if live
                && (campaign_id.is_empty() || o.campaign_id == campaign_id)
                && (opportunity_id.is_empty() || o.id == opportunity_id)
                && (from_owner.is_empty() || o.owner == from_owner)
                && o.owner != owner
            {
                let from = std::mem::replace(&mut o.owner, owner.to_string());
                moved.push((o.campaign_id.clone(), o.id.clone(), from));
            }
        }
        for (campaign, id, from) in moved {
            let to = owner.to_string();
            self.lead(&campaign, &id, LeadChange::Reassigned { from, to });
        }
    }

    fn latest(
        &self,
        in_scope: &dyn Fn(&v1::Opportunity) -> bool,
        statuses: &[Status],
    ) -> Option<usize> {
        self.state
            .opportunities
            .iter()
            .rposition(|o| statuses.contains(&o.status()) && in_scope(o))
    }

    fn settle(&mut self, o: usize, status: Status, now: UnixMillis) {
        let opportunity = &mut self.state.opportunities[o];
        opportunity.set_status(status);
        opportunity.settled_at = Some(now.to_proto());
    }

    fn disarm_sla(&mut self, o: &v1::Opportunity) {
        let due = o
            .respond_by
            .as_ref()
            .map_or(self.now, UnixMillis::from_proto);
        self.effects.push(Effect::CancelTimer {
            id: sla_timer(
                self.contact_id(),
                &o.campaign_id,
                o.entry_seq,
                o.action_index,
            ),
            due,
        });
    }
}

fn sla_timer(contact_id: &str, campaign_id: &str, entry_seq: u64, action_index: u32) -> TimerId {
    TimerId {
        contact_id: contact_id.to_string(),
        campaign_id: campaign_id.to_string(),
        entry_seq,
        kind: TimerKind::Sla,
        index: action_index,
    }
}
