//! Attribution: the touches a contact keeps, and the revenue of a purchase or a won
//! opportunity credited to the campaigns and channels that touched it.

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::{
    spec::Campaign,
    time::{SpanMillis, UnixMillis},
};

use super::{Effect, MAX_TOUCHES, Run, Shares, arm_of};

impl<'a> Run<'a> {
    /// How long a touch of `campaign_id` can be credited with revenue (unknown campaigns: none).
    pub(super) fn window(&self, campaign_id: &str) -> Option<SpanMillis> {
        self.catalog
            .latest(campaign_id)
            .map(Campaign::attribution_window)
    }

    /// Records that the contact received an action, dropping touches no window covers.
    pub(super) fn touch(&mut self, campaign_id: &str, kind: v1::ActionKind) {
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
    pub(super) fn prune_touches(&mut self) {
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
    pub(super) fn credits(&self, t: &v1::Touch, now: UnixMillis) -> bool {
        let at =
            t.at.as_ref()
                .map_or(UnixMillis(i64::MIN), UnixMillis::from_proto);
        self.window(&t.campaign_id)
            .is_some_and(|w| at <= now && now <= at.plus(w))
    }

    /// Credits revenue to the touches within their windows (last touch, first touch, linear)
    /// and to the split arms of the campaigns the contact enrolled in within their windows.
    pub(super) fn revenue(&mut self, amount: Decimal) {
        self.prune_touches();
        let now = self.now;
        let touches: Vec<&v1::Touch> = self
            .state
            .touches
            .iter()
            .filter(|t| self.credits(t, now))
            .collect();
        if !touches.is_empty() {
            // Whole minor units of the currency of the latest touch's campaign (which takes the
            // remainder of the split): no fraction of a cent is ever credited.
            let decimals = touches
                .last()
                .and_then(|t| self.catalog.latest(&t.campaign_id))
                .and_then(|c| c.budget.as_ref())
                .map_or(2, |b| crate::stats::minor_units(&b.currency));
            let (share, remainder) = crate::stats::split_money(amount, touches.len(), decimals);
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

    /// Counts what a result touchpoint says became of one of the campaign's actions to the
    /// contact; one for a campaign the contact never entered is a fault, not counted.
    pub(super) fn confirmed(&mut self, event: &v1::TouchpointEvent, outcome: v1::DeliveryOutcome) {
        let campaign_id = event.campaign_id.as_str();
        if self.journey_index(campaign_id).is_err() {
            return self.fault(
                campaign_id,
                format!(
                    "`{}` event `{}` for a campaign the contact never entered: not counted",
                    event.r#type, event.id
                ),
            );
        }
        let named = super::text_attr(event, "kind");
        // Without a kind named, the confirmation is of the latest action the campaign sent
        // the contact; with neither, only the campaign's totals can count it.
        let latest = || {
            self.state
                .touches
                .iter()
                .rev()
                .find(|t| t.campaign_id == campaign_id)
                .map(v1::Touch::kind)
        };
        let known = crate::delivery::kind_named(&named)
            .or_else(|| if named.is_empty() { latest() } else { None });
        let kind = match known {
            Some(kind) => kind,
            None => {
                let why = if named.is_empty() {
                    "names no action kind in `attrs.kind` and the campaign sent the contact no action to confirm".to_string()
                } else {
                    format!("names `{named}` in `attrs.kind`, not an action kind")
                };
                self.fault(
                    campaign_id,
                    format!(
                        "`{}` event `{}` {why}: counted in the campaign's totals only",
                        event.r#type, event.id
                    ),
                );
                v1::ActionKind::Unspecified
            }
        };
        self.effects.push(Effect::Confirmed {
            campaign_id: campaign_id.to_string(),
            kind,
            outcome,
        });
    }

    /// Marks the contact's enrollment in `campaign_id` as reached, once.
    pub(super) fn reached(&mut self, campaign_id: &str) {
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
}
