//! Frequency caps across campaigns and quiet hours (the seed's "do not harass a customer who
//! is in several campaigns at once"): a customer-facing action that would exceed a cap, or
//! fall in the contact's quiet hours, is deferred (kept in the contact's state with a timer)
//! or dropped, as the policy says; always as an effect the runtime counts.

use canvass_proto::v1;

use super::{Effect, Run, TimerId, TimerKind};
use crate::{
    policy::{CUSTOMER_FACING, TIME_ZONE_ATTR},
    time::{SpanMillis, UnixMillis},
};

/// How long a deferred action of a paused campaign waits before it is tried again.
pub const PAUSED_RETRY: SpanMillis = SpanMillis(3_600_000);

/// Why an action was held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapReason {
    /// A frequency cap: at most `max` actions of `channel` ("" for all customer-facing
    /// kinds) in `window`.
    Frequency {
        /// The capped channel.
        channel: String,
        /// Its limit.
        max: usize,
        /// Its window.
        window: SpanMillis,
    },
    /// The contact's quiet hours.
    QuietHours,
}

/// What became of an action held back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CapOutcome {
    /// Held back for `reason`, tried again at `until`.
    Deferred {
        /// Why.
        reason: CapReason,
        /// When it is tried again.
        until: UnixMillis,
    },
    /// Held back for `reason`, not sent.
    Dropped(CapReason),
    /// Deferred, then dropped: the contact had left the state that emitted it.
    Expired,
    /// Deferred, then sent.
    SentLate,
}

impl Run<'_> {
    /// Holds `action` back if the policy says so; `true` if it was (deferred or dropped).
    pub(super) fn held_back(&mut self, action: &v1::Action, entry_seq: u64) -> bool {
        let kind = action.kind();
        if !CUSTOMER_FACING.contains(&kind) {
            return false;
        }
        let policy = self.catalog.policy();
        let now = self.now;
        let zone = self
            .state
            .contact
            .as_ref()
            .and_then(|c| c.attrs.as_ref())
            .and_then(|a| a.fields.get(TIME_ZONE_ATTR))
            .and_then(|v| match &v.kind {
                Some(canvass_proto::wkt::value::Kind::StringValue(s)) => Some(s.as_str()),
                _ => None,
            });
        let mut decision = policy.quiet_until(zone, now).map(|until| {
            (
                CapReason::QuietHours,
                policy.quiet.as_ref().is_some_and(|q| q.drop),
                until,
            )
        });
        if decision.is_none() {
            for cap in &policy.caps {
                if cap.kind.is_some_and(|k| k != kind) {
                    continue;
                }
                // Touches still inside the window, oldest first.
                let counted: Vec<UnixMillis> = self
                    .state
                    .touches
                    .iter()
                    .filter(|t| match cap.kind {
                        Some(k) => t.kind() == k,
                        None => CUSTOMER_FACING.contains(&t.kind()),
                    })
                    .filter_map(|t| t.at.as_ref().map(UnixMillis::from_proto))
                    .filter(|at| at.plus(cap.window) > now)
                    .collect();
                if counted.len() >= cap.max {
                    // The window frees a slot when the oldest touch beyond the limit leaves it.
                    let until = counted[counted.len() - cap.max].plus(cap.window);
                    let channel = cap.kind.map(crate::validate::kind_name).unwrap_or_default();
                    decision = Some((
                        CapReason::Frequency {
                            channel: channel.to_string(),
                            max: cap.max,
                            window: cap.window,
                        },
                        cap.drop,
                        until,
                    ));
                    break;
                }
            }
        }
        let Some((reason, drop, until)) = decision else {
            return false;
        };
        let outcome = if drop {
            CapOutcome::Dropped(reason)
        } else {
            self.defer(action.clone(), entry_seq, until);
            CapOutcome::Deferred { reason, until }
        };
        self.capped(action, outcome);
        true
    }

    fn capped(&mut self, action: &v1::Action, outcome: CapOutcome) {
        self.effects.push(Effect::Capped {
            campaign_id: action.campaign_id.clone(),
            kind: action.kind(),
            idempotency_key: action.idempotency_key.clone(),
            outcome,
        });
    }

    fn defer(&mut self, action: v1::Action, entry_seq: u64, until: UnixMillis) {
        let id = TimerId {
            contact_id: self.contact_id().to_string(),
            campaign_id: action.campaign_id.clone(),
            entry_seq,
            kind: TimerKind::Deferred,
            index: action.action_index,
        };
        self.state.deferred.push(v1::DeferredAction {
            action: Some(action),
            due: Some(until.to_proto()),
            entry_seq,
        });
        self.effects.push(Effect::ScheduleTimer { id, due: until });
    }

    /// A deferred action is due: sent if the contact is still where it was emitted and the
    /// policy now allows it; held back again, or dropped if the contact moved on.
    pub(super) fn deferred_due(&mut self, timer: &TimerId) {
        let index = timer.index;
        let Some(d) = self.state.deferred.iter().position(|d| {
            d.entry_seq == timer.entry_seq
                && d.action
                    .as_ref()
                    .is_some_and(|a| a.campaign_id == timer.campaign_id && a.action_index == index)
        }) else {
            return;
        };
        let deferred = self.state.deferred.remove(d);
        let Some(mut action) = deferred.action else {
            return;
        };
        let journey = self
            .journey_index(&action.campaign_id)
            .ok()
            .map(|j| self.state.campaigns[j].clone());
        let here = journey.as_ref().is_some_and(|j| {
            j.entry_seq == deferred.entry_seq && j.status() != v1::JourneyStatus::Stopped
        });
        let campaign = self
            .catalog
            .get(&action.campaign_id, action.campaign_version);
        let (true, Some(campaign)) = (here, campaign) else {
            self.capped(&action, CapOutcome::Expired);
            return;
        };
        if self.catalog.status(campaign.id()) == v1::CampaignStatus::Paused {
            let until = self.now.plus(PAUSED_RETRY);
            self.defer(action, deferred.entry_seq, until);
            return;
        }
        if self.held_back(&action, deferred.entry_seq) {
            return;
        }
        action.emitted_at = Some(self.now.to_proto());
        self.capped(&action, CapOutcome::SentLate);
        self.send(campaign, action, None, deferred.entry_seq);
    }
}
