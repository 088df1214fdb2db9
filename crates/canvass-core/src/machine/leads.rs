//! Leads handed to sales (seed 003): a SALES_HANDOFF opens an opportunity with a deadline;
//! its owner is chosen by the assignment rules; sales accepts it in time or it returns to
//! marketing; it is won or lost; an operator, sales or a staff change moves it to another
//! owner. Also the contact's lifecycle stage, which these steps advance.

use canvass_proto::v1::{self, LifecycleStage as Stage, OpportunityStatus as Status};
use rust_decimal::Decimal;

use super::{Assigned, Effect, LeadChange, Run, TimerId, TimerKind, text_attr};
use crate::{
    assignment::{self, BY_DEFAULT, BY_EVENT, BY_FALLBACK, BY_PARAM, Strategy, Target},
    spec::Campaign,
    time::UnixMillis,
};

/// Sales accepted an opportunity (attribute `opportunityId`, optional).
pub const OPPORTUNITY_ACCEPTED: &str = "opportunity.accepted";
/// Sales lost an opportunity.
pub const OPPORTUNITY_LOST: &str = "opportunity.lost";
/// An opportunity changes owner (attributes `owner`, and `opportunityId` or `fromOwner`).
pub const OPPORTUNITY_REASSIGNED: &str = "opportunity.reassigned";
/// Owner of a lead when neither the hand-off, nor a rule, nor a fallback names one.
pub const DEFAULT_OWNER: &str = "sales";
/// Template of the notification an SLA breach emits.
pub const BREACH_TEMPLATE: &str = "sla-breach";

impl<'a> Run<'a> {
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

    /// Opens the opportunity of a SALES_HANDOFF action just emitted, for the owner the
    /// assignment chose, and arms its deadline.
    pub(super) fn open_opportunity(
        &mut self,
        campaign: &Campaign,
        spec: &v1::ActionSpec,
        action: &v1::Action,
        entry_seq: u64,
        (owner, by): (String, Assigned),
    ) {
        let due = action
            .respond_by
            .as_ref()
            .map_or(self.now, UnixMillis::from_proto);
        self.state.opportunities.push(v1::Opportunity {
            id: action.idempotency_key.clone(),
            campaign_id: campaign.id().to_string(),
            entry_seq,
            action_index: action.action_index,
            owner: owner.clone(),
            status: Status::Open as i32,
            opened_at: Some(self.now.to_proto()),
            respond_by: Some(due.to_proto()),
            settled_at: None,
            amount: String::new(),
            breach_state: spec.sla_breach_state.clone(),
            assignments: vec![v1::OwnerAssignment {
                owner: owner.clone(),
                rule: by.rule.clone(),
                at: Some(self.now.to_proto()),
            }],
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
        self.lead(
            campaign.id(),
            &action.idempotency_key,
            &owner,
            LeadChange::Opened(by),
        );
    }

    /// Who takes a lead `campaign` hands over: the hand-off's `owner` parameter, else the
    /// campaign's rules and then the policy's, else a fallback owner, else "sales".
    /// `leaving` (an owner whose leads are being moved) is never chosen.
    pub(super) fn choose_owner(
        &mut self,
        campaign: &'a Campaign,
        param: Option<&str>,
        leaving: Option<&str>,
    ) -> (String, Assigned) {
        if let Some(owner) = param.map(str::trim).filter(|o| !o.is_empty()) {
            return (owner.to_string(), Assigned::by(BY_PARAM));
        }
        let policy = self.catalog.policy();
        let lists = [(&campaign.assignment, ""), (&policy.assignment, "policy.")];
        for (rules, prefix) in lists {
            for rule in &rules.rules {
                if let Some(when) = &rule.when
                    && !self.holds(
                        campaign,
                        when,
                        || format!("{prefix}{}.when", rule.path),
                        None,
                    )
                {
                    continue;
                }
                let (name, strategy) = match &rule.target {
                    Target::Owner(owner) if Some(owner.as_str()) != leaving => {
                        return (owner.clone(), Assigned::by(&rule.name));
                    }
                    Target::Owner(_) => continue,
                    Target::Team { name, strategy } => (name, *strategy),
                };
                let members: Vec<&String> = policy
                    .teams
                    .get(name)
                    .into_iter()
                    .flatten()
                    .filter(|m| Some(m.as_str()) != leaving)
                    .collect();
                if members.is_empty() {
                    self.fault(
                        campaign.id(),
                        format!(
                            "{prefix}{}: team `{name}` has nobody to take the lead; the next rule decides",
                            rule.path
                        ),
                    );
                    continue;
                }
                let owner = match strategy {
                    Strategy::RoundRobin => {
                        let turn = self.turns_now(name);
                        let at = usize::try_from(turn % members.len() as u64).unwrap_or(0);
                        let by = Assigned {
                            rule: rule.name.clone(),
                            round_robin: Some(name.clone()),
                        };
                        return (members[at].clone(), by);
                    }
                    // The first listed of those with the fewest.
                    Strategy::LeastLoad => members
                        .iter()
                        .min_by_key(|m| self.open_leads_now(m))
                        .map_or_else(String::new, |m| (*m).clone()),
                };
                return (owner, Assigned::by(&rule.name));
            }
        }
        let fallback = [&campaign.assignment.fallback, &policy.assignment.fallback]
            .into_iter()
            .flatten()
            .find(|f| Some(f.as_str()) != leaving);
        match fallback {
            Some(owner) => (owner.clone(), Assigned::by(BY_FALLBACK)),
            None => (DEFAULT_OWNER.to_string(), Assigned::by(BY_DEFAULT)),
        }
    }

    /// Open leads of `owner` in the partition, this step's changes included.
    fn open_leads_now(&self, owner: &str) -> i64 {
        let before = i64::try_from(self.workload.open_leads(owner)).unwrap_or(i64::MAX);
        let here: i64 = self
            .effects
            .iter()
            .flat_map(assignment::load_changes)
            .filter(|(o, _)| *o == owner)
            .map(|(_, n)| n)
            .sum();
        before + here
    }

    /// Turns `team`'s round-robin has taken in the partition, this step's included.
    fn turns_now(&self, team: &str) -> u64 {
        let here = self
            .effects
            .iter()
            .filter(|e| assignment::turn_taken(e) == Some(team))
            .count();
        self.workload.turns(team) + here as u64
    }

    fn lead(&mut self, campaign_id: &str, opportunity_id: &str, owner: &str, change: LeadChange) {
        self.effects.push(Effect::Lead {
            campaign_id: campaign_id.to_string(),
            opportunity_id: opportunity_id.to_string(),
            owner: owner.to_string(),
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
            &opportunity.owner,
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
                        &opportunity.owner,
                        LeadChange::LateAcceptance,
                    );
                    return;
                }
                self.settle(o, Status::Accepted, now);
                self.disarm_sla(&opportunity);
                self.lead(
                    &opportunity.campaign_id,
                    &opportunity.id,
                    &opportunity.owner,
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
                self.lead(
                    &opportunity.campaign_id,
                    &opportunity.id,
                    &opportunity.owner,
                    change,
                );
            }
            OPPORTUNITY_REASSIGNED => {
                // Without an owner the rules choose again, the current owner left out.
                let owner = text_attr(event, "owner");
                let to = Some(owner.trim()).filter(|o| !o.is_empty());
                let from_owner = text_attr(event, "fromOwner");
                self.reassign(to, &from_owner, &event.campaign_id, &wanted, BY_EVENT);
            }
            _ => {}
        }
    }

    /// Moves the open and accepted leads matching the filters (empty: any) to `to`, or
    /// where the assignment rules say with their current owner left out; `named` says what
    /// chose an owner given as `to`.
    pub(super) fn reassign(
        &mut self,
        to: Option<&str>,
        from_owner: &str,
        campaign_id: &str,
        opportunity_id: &str,
        named: &str,
    ) {
        let moving: Vec<usize> = (0..self.state.opportunities.len())
            .filter(|&i| {
                let o = &self.state.opportunities[i];
                matches!(o.status(), Status::Open | Status::Accepted)
                    && (campaign_id.is_empty() || o.campaign_id == campaign_id)
                    && (opportunity_id.is_empty() || o.id == opportunity_id)
                    && (from_owner.is_empty() || o.owner == from_owner)
                    && Some(o.owner.as_str()) != to
            })
            .collect();
        // One at a time: each move counts in the load the next one balances.
        for i in moving {
            let (campaign, id, from) = {
                let o = &self.state.opportunities[i];
                (o.campaign_id.clone(), o.id.clone(), o.owner.clone())
            };
            let (owner, by) = match to {
                Some(to) => (to.to_string(), Assigned::by(named)),
                None => {
                    let Some(rules_of) = self.campaign_of_lead(&campaign) else {
                        let reason = format!(
                            "lead `{id}`: its campaign is not loaded; it stays with `{from}`"
                        );
                        self.fault(&campaign, reason);
                        continue;
                    };
                    self.choose_owner(rules_of, None, Some(&from))
                }
            };
            if owner == from {
                let reason =
                    format!("lead `{id}`: nobody but `{from}` can take it; it stays with them");
                self.fault(&campaign, reason);
                continue;
            }
            let o = &mut self.state.opportunities[i];
            o.owner.clone_from(&owner);
            o.assignments.push(v1::OwnerAssignment {
                owner: owner.clone(),
                rule: by.rule.clone(),
                at: Some(self.now.to_proto()),
            });
            self.lead(&campaign, &id, &owner, LeadChange::Reassigned { from, by });
        }
    }

    /// The version of a campaign whose rules decide for its lead: the one the contact's
    /// journey is on, else the newest.
    fn campaign_of_lead(&self, campaign_id: &str) -> Option<&'a Campaign> {
        let catalog = self.catalog;
        self.journey_index(campaign_id)
            .ok()
            .and_then(|j| catalog.get(campaign_id, self.state.campaigns[j].campaign_version))
            .or_else(|| catalog.latest(campaign_id))
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
