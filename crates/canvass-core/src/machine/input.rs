//! Input handling: what each kind of input does to the contact's journeys (a profile, an
//! event, a timer, a launch, a resume, a stop, a migration to a new version).

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::{spec::Trigger, time::UnixMillis};

use super::{
    Effect, EnrollCause, OPPORTUNITY_WON_EVENT, PURCHASE_EVENT, REACHED_EVENTS, Run, TimerId,
    TimerKind, purchase_from, text_attr,
};

impl<'a> Run<'a> {
    pub(super) fn launch(&mut self, campaign_id: &str) {
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

    /// Whether contacts inside the campaign move (running, or completed and draining).
    pub(super) fn moves(&self, campaign_id: &str) -> bool {
        matches!(
            self.catalog.status(campaign_id),
            v1::CampaignStatus::Running | v1::CampaignStatus::Completed
        )
    }

    pub(super) fn event(&mut self, event: &'a v1::TouchpointEvent) {
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
        } else {
            crate::satisfaction::record(contact, event);
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
        if !event.campaign_id.is_empty()
            && let Some(outcome) = crate::delivery::outcome_of(&event.r#type)
        {
            self.confirmed(event, outcome);
        }
        if !event.campaign_id.is_empty()
            && let Some(engagement) = crate::machine::Engagement::of(&event.r#type)
        {
            self.engaged(event, engagement);
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

    pub(super) fn advance_on_event(&mut self, campaign_id: &str, event: &v1::TouchpointEvent) {
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
    /// channel, survey answers, complaints and faults) is kept unless the new profile gives it.
    pub(super) fn upsert(&mut self, contact: &v1::Contact) {
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
            if c.surveys.is_empty() {
                c.surveys.clone_from(&old.surveys);
            }
            if c.issues.is_empty() {
                c.issues.clone_from(&old.issues);
            }
        }
        // Imported purchase history makes a customer, as a purchase event does: one contact,
        // one stage, whichever way its purchases arrived.
        if !c.purchases.is_empty() && c.stage() < v1::LifecycleStage::Customer {
            c.set_stage(v1::LifecycleStage::Customer);
        }
        self.state.contact = Some(c);
    }

    pub(super) fn timer(&mut self, timer: &TimerId) {
        match timer.kind {
            TimerKind::Sla => return self.sla_expired(timer),
            TimerKind::Deferred => return self.deferred_due(timer),
            TimerKind::Transition => {}
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
                if !held.contains(&timer.index) {
                    held.push(timer.index);
                }
                return;
            }
            v1::CampaignStatus::Running | v1::CampaignStatus::Completed => {}
            _ => return,
        }
        let Some(transition) = usize::try_from(timer.index)
            .ok()
            .and_then(|t| campaign.states[at].transitions.get(t))
        else {
            return;
        };
        if matches!(transition.trigger, Trigger::After(_)) {
            self.leave_and_enter(campaign, at, transition.to, Some(timer.index));
        }
    }

    pub(super) fn resume(&mut self, campaign_id: &str) {
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
                kind: TimerKind::Transition,
                index: transition,
            };
            self.timer(&id);
        }
    }

    pub(super) fn stop(&mut self, campaign_id: &str) {
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

    pub(super) fn migrate(&mut self, campaign_id: &str) {
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
}
