//! Actions and budget: a state's actions emitted, each charged to the partition's share of
//! its campaign's budget or withheld, with what follows from its kind.

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::{
    key::idempotency_key,
    materials,
    spec::{Campaign, StateIdx},
    time::SpanMillis,
};

use super::{Effect, EnrollCause, Run};

impl<'a> Run<'a> {
    pub(super) fn emit_actions(&mut self, campaign: &'a Campaign, at: StateIdx, j: usize) {
        let state = &campaign.states[at];
        for (k, spec) in state.actions.iter().enumerate() {
            let journey = &self.state.campaigns[j];
            let kind = spec.kind();
            let entry_seq = journey.entry_seq;
            let respond_by = (kind == v1::ActionKind::SalesHandoff)
                .then(|| {
                    spec.sla
                        .as_ref()
                        .map(|d| self.now.plus(SpanMillis::from_proto(d)).to_proto())
                })
                .flatten();
            let action = v1::Action {
                idempotency_key: idempotency_key(
                    campaign.id(),
                    journey.campaign_version,
                    self.contact_id(),
                    entry_seq,
                    k,
                ),
                kind: spec.kind,
                campaign_id: campaign.id().to_string(),
                campaign_version: journey.campaign_version,
                contact_id: self.contact_id().to_string(),
                state: state.id.clone(),
                action_index: u32::try_from(k).unwrap_or(u32::MAX),
                template: spec.template.clone(),
                params: spec.params.clone(),
                emitted_at: Some(self.now.to_proto()),
                respond_by,
                target_campaign: spec.target_campaign.clone(),
                cost: String::new(),
                currency: String::new(),
                variant: journey.variant.clone(),
                cause_event_id: self.cause_event.map(|e| e.id.clone()).unwrap_or_default(),
                material_version: 0,
            };
            let mut action = action;
            if !spec.material.is_empty() {
                // The version sent is decided now: the pinned one, else the newest approved.
                let Some(v) = materials::sendable(
                    self.catalog.materials(),
                    &spec.material,
                    spec.material_version,
                ) else {
                    self.fault(
                        campaign.id(),
                        format!(
                            "{}: material `{}` has no approved version to send; the action is not sent",
                            state.id, spec.material
                        ),
                    );
                    continue;
                };
                action.template.clone_from(&spec.material);
                action.material_version = v;
            }
            if self.held_back(&action, entry_seq) {
                continue;
            }
            self.send(campaign, action, Some(spec), entry_seq);
        }
    }

    /// Charges the action to the budget (withholding it if that would exceed the budget) and
    /// emits it, with what follows from its kind: a touch, an opportunity, an enrollment.
    pub(super) fn send(
        &mut self,
        campaign: &'a Campaign,
        mut action: v1::Action,
        spec: Option<&v1::ActionSpec>,
        entry_seq: u64,
    ) {
        let kind = action.kind();
        if let Some(b) = &campaign.budget {
            let cost = b.cost_of(kind);
            if let Some(total) = b.total.map(|t| crate::partition::allotment(t, self.share))
                && cost > Decimal::ZERO
            {
                let spent = self.spending.spent(campaign.id()) + self.spent_here(campaign.id());
                if spent + cost > total {
                    self.effects.push(Effect::Withheld {
                        campaign_id: campaign.id().to_string(),
                        kind,
                        idempotency_key: action.idempotency_key,
                        cost,
                        spent,
                        total,
                    });
                    return;
                }
            }
            self.spend(campaign.id(), cost);
            if cost > Decimal::ZERO {
                crate::stats::add_money(&mut self.state.marketing_cost, cost);
            }
            action.cost = cost.to_string();
            action.currency.clone_from(&b.currency);
        }
        match (kind, spec) {
            (v1::ActionKind::SalesHandoff, Some(spec)) => {
                let param = spec.params.get("owner").map(String::as_str);
                let (owner, by) = self.choose_owner(campaign, param, None);
                // The sales system learns the owner, and why, from the action itself.
                action.params.insert("owner".into(), owner.clone());
                action.params.insert("assigned_by".into(), by.rule.clone());
                self.effects.push(Effect::Action(Box::new(action.clone())));
                self.open_opportunity(campaign, spec, &action, entry_seq, (owner, by));
            }
            _ => self.effects.push(Effect::Action(Box::new(action.clone()))),
        }
        if kind != v1::ActionKind::StartCampaign {
            self.touch(&action);
        }
        if kind == v1::ActionKind::StartCampaign
            && let Some(target) = self.enrollable(&action.target_campaign)
        {
            self.enroll(
                target,
                EnrollCause::StartedBy {
                    campaign_id: campaign.id().to_string(),
                },
            );
        }
    }

    pub(super) fn spent_here(&self, campaign_id: &str) -> Decimal {
        self.spent_here
            .iter()
            .find(|(c, _)| c == campaign_id)
            .map_or(Decimal::ZERO, |(_, d)| *d)
    }

    pub(super) fn spend(&mut self, campaign_id: &str, cost: Decimal) {
        if cost.is_zero() {
            return;
        }
        match self.spent_here.iter_mut().find(|(c, _)| c == campaign_id) {
            Some((_, d)) => *d += cost,
            None => self.spent_here.push((campaign_id.to_string(), cost)),
        }
    }
}
