//! Journey movement: leaving a state and entering the next, its timers armed and the old
//! ones disarmed, immediate transitions followed to where they stop.

use canvass_proto::v1;

use crate::{
    spec::{Campaign, StateIdx, Trigger},
    time::UnixMillis,
};

use super::{Effect, MAX_IMMEDIATE_CHAIN, Run, TimerId, TimerKind};

impl<'a> Run<'a> {
    /// The active journey in `campaign_id`, its campaign version and its current state.
    pub(super) fn current(&mut self, campaign_id: &str) -> Option<(usize, &'a Campaign, StateIdx)> {
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
    pub(super) fn leave_and_enter(
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
    pub(super) fn disarm_timers(
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

    pub(super) fn timer_id(
        &self,
        campaign: &Campaign,
        entry_seq: u64,
        transition: usize,
    ) -> TimerId {
        TimerId {
            contact_id: self.contact_id().to_string(),
            campaign_id: campaign.id().to_string(),
            entry_seq,
            kind: TimerKind::Transition,
            index: u32::try_from(transition).unwrap_or(u32::MAX),
        }
    }

    /// Enters `to`, then follows immediate transitions until the contact settles.
    pub(super) fn enter(
        &mut self,
        campaign: &'a Campaign,
        mut from: Option<StateIdx>,
        mut to: StateIdx,
    ) {
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
                let first = !journey.goal_reached;
                journey.goal_reached = true;
                let arm = journey.variant.clone();
                self.effects.push(Effect::GoalReached {
                    campaign_id: campaign.id().to_string(),
                    state: state.id.clone(),
                    arm,
                    first,
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
                let first = !journey.completed;
                journey.completed = true;
                self.effects.push(Effect::Completed {
                    campaign_id: campaign.id().to_string(),
                    state: state.id.clone(),
                    first,
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

    pub(super) fn immediate_target(
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
}
