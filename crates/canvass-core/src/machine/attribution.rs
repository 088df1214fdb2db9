//! Attribution: the touches a contact keeps, and the revenue of a purchase or a won
//! opportunity credited to the campaigns and channels that touched it.

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::{
    spec::Campaign,
    time::{SpanMillis, UnixMillis},
};

use super::{Effect, Engagement, MAX_TOUCHES, Run, Shares, arm_of};

/// One campaign's credit for a revenue: the campaign, its credit per kind, and its latest
/// touch credited.
type Credit = (
    String,
    Vec<(v1::ActionKind, Shares)>,
    UnixMillis,
    Vec<(String, Shares)>,
);

impl<'a> Run<'a> {
    /// How long a touch of `campaign_id` can be credited with revenue (unknown campaigns: none).
    pub(super) fn window(&self, campaign_id: &str) -> Option<SpanMillis> {
        self.catalog
            .latest(campaign_id)
            .map(Campaign::attribution_window)
    }

    /// Records that the contact received an action, dropping touches no window covers.
    pub(super) fn touch(&mut self, action: &v1::Action) {
        self.prune_touches();
        let touches = &mut self.state.touches;
        if touches.len() >= MAX_TOUCHES {
            touches.remove(0);
        }
        touches.push(v1::Touch {
            campaign_id: action.campaign_id.clone(),
            kind: action.kind,
            at: Some(self.now.to_proto()),
            template: crate::materials::counted_as(action),
            idempotency_key: action.idempotency_key.clone(),
        });
    }

    /// The message (kind and template) a result or engagement touchpoint of `campaign_id`
    /// is about: the touch its `attrs.idempotencyKey` names; else the kind its `attrs.kind`
    /// names, with `attrs.template` or the template of the latest touch of that kind; else
    /// the latest action the campaign sent the contact. `None` when it names no action kind
    /// or none was sent, with why.
    pub(super) fn message_of(
        &self,
        event: &v1::TouchpointEvent,
    ) -> Result<(v1::ActionKind, String), String> {
        let campaign_id = event.campaign_id.as_str();
        let ours = || {
            self.state
                .touches
                .iter()
                .rev()
                .filter(move |t| t.campaign_id == campaign_id)
        };
        let key = super::text_attr(event, "idempotencyKey");
        if !key.is_empty()
            && let Some(t) = ours().find(|t| t.idempotency_key == key)
        {
            return Ok((t.kind(), t.template.clone()));
        }
        let named = super::text_attr(event, "kind");
        let mut template = super::text_attr(event, "template");
        // A catalog material is counted per version: the version the contact was sent.
        if let Some(t) = ours().find(|t| {
            !template.is_empty() && crate::materials::parse_counted(&t.template).0 == template
        }) {
            template.clone_from(&t.template);
        }
        if named.is_empty() {
            return ours()
                .next()
                .map(|t| {
                    let template = if template.is_empty() { t.template.clone() } else { template };
                    (t.kind(), template)
                })
                .ok_or_else(|| {
                    "names no action kind in `attrs.kind` and the campaign sent the contact no action it could be about".to_string()
                });
        }
        let kind = crate::delivery::kind_named(&named)
            .ok_or_else(|| format!("names `{named}` in `attrs.kind`, not an action kind"))?;
        let template = if template.is_empty() {
            ours()
                .find(|t| t.kind() == kind)
                .map(|t| t.template.clone())
                .unwrap_or_default()
        } else {
            template
        };
        Ok((kind, template))
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
            let mut credits: Vec<Credit> = Vec::new();
            let n = touches.len();
            for (i, t) in touches.iter().enumerate() {
                let is_last = i + 1 == n;
                let s = Shares {
                    last_touch: if is_last { amount } else { Decimal::ZERO },
                    first_touch: if i == 0 { amount } else { Decimal::ZERO },
                    linear: if is_last { remainder } else { share },
                };
                let kind = t.kind();
                let touched = t.at.as_ref().map_or(now, UnixMillis::from_proto);
                let at = match credits.iter().position(|(c, ..)| *c == t.campaign_id) {
                    Some(at) => at,
                    None => {
                        credits.push((t.campaign_id.clone(), Vec::new(), touched, Vec::new()));
                        credits.len() - 1
                    }
                };
                credits[at].2 = credits[at].2.max(touched);
                let kinds = &mut credits[at].1;
                match kinds.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, sum)) => *sum = sum.plus(&s),
                    None => kinds.push((kind, s)),
                }
                let templates = &mut credits[at].3;
                match templates.iter_mut().find(|(m, _)| *m == t.template) {
                    Some((_, sum)) => *sum = sum.plus(&s),
                    None => templates.push((t.template.clone(), s)),
                }
            }
            let mut credited = Shares::default();
            for (campaign_id, shares, touched, templates) in credits {
                for (_, s) in &shares {
                    credited = credited.plus(s);
                }
                self.effects.push(Effect::Attributed {
                    campaign_id,
                    amount,
                    shares,
                    templates,
                    since_touch: u64::try_from(now.0 - touched.0).unwrap_or(0),
                });
            }
            self.effects.push(Effect::Revenue { amount, credited });
        } else {
            self.effects.push(Effect::Revenue {
                amount,
                credited: Shares::default(),
            });
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
        let (kind, template) = self.message_or_fault(event);
        self.effects.push(Effect::Confirmed {
            campaign_id: campaign_id.to_string(),
            kind,
            template,
            outcome,
        });
    }

    /// Counts what a contact did with one of the campaign's messages; one for a campaign the
    /// contact never entered is a fault, not counted.
    pub(super) fn engaged(&mut self, event: &v1::TouchpointEvent, engagement: Engagement) {
        let campaign_id = event.campaign_id.as_str();
        let Ok(j) = self.journey_index(campaign_id) else {
            return self.fault(
                campaign_id,
                format!(
                    "`{}` event `{}` for a campaign the contact never entered: not counted",
                    event.r#type, event.id
                ),
            );
        };
        let (kind, template) = self.message_or_fault(event);
        let marker = format!(
            "{}/{template}/{}",
            crate::validate::kind_name(kind),
            engagement.name()
        );
        let engaged = &mut self.state.campaigns[j].engaged;
        let unique = !engaged.contains(&marker);
        if unique {
            engaged.push(marker);
        }
        self.effects.push(Effect::Engaged {
            campaign_id: campaign_id.to_string(),
            kind,
            template,
            engagement,
            unique,
        });
    }

    /// [`Self::message_of`], or a fault and `Unspecified` (counted in the campaign's totals
    /// only) when the touchpoint says of no known message.
    pub(super) fn message_or_fault(
        &mut self,
        event: &v1::TouchpointEvent,
    ) -> (v1::ActionKind, String) {
        match self.message_of(event) {
            Ok(message) => message,
            Err(why) => {
                self.fault(
                    &event.campaign_id,
                    format!(
                        "`{}` event `{}` {why}: counted in the campaign's totals only",
                        event.r#type, event.id
                    ),
                );
                (v1::ActionKind::Unspecified, String::new())
            }
        }
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
