//! Enrollment: which campaigns a contact may enter, under their audience, re-entry rules and
//! split, and entering one.

use canvass_proto::v1;

use crate::{
    spec::{Campaign, Reentry},
    split::{self, Arm},
    time::UnixMillis,
};

use super::{Effect, EnrollCause, HOLDOUT_GROUP, MAX_ENROLL_DEPTH, Run, SkipReason};

impl<'a> Run<'a> {
    /// The version of `campaign_id` contacts may enter now, or why none (reported).
    pub(super) fn enrollable(&mut self, campaign_id: &str) -> Option<&'a Campaign> {
        let catalog = self.catalog;
        match catalog.active(campaign_id) {
            Some(c) if catalog.status(campaign_id) == v1::CampaignStatus::Running => Some(c),
            None if catalog.latest(campaign_id).is_none() => {
                self.skip(campaign_id, SkipReason::UnknownCampaign);
                None
            }
            _ => {
                self.skip(campaign_id, SkipReason::NotRunning);
                None
            }
        }
    }

    pub(super) fn enroll(&mut self, campaign: &'a Campaign, cause: EnrollCause) {
        if self.enroll_depth >= MAX_ENROLL_DEPTH {
            self.skip(campaign.id(), SkipReason::TooDeep);
            return;
        }
        let j = match self.journey_index(campaign.id()) {
            Ok(j) => {
                let journey = &self.state.campaigns[j];
                if journey.status() == v1::JourneyStatus::Active {
                    self.skip(campaign.id(), SkipReason::AlreadyActive);
                    return;
                }
                let left = journey
                    .exited_at
                    .as_ref()
                    .map(UnixMillis::from_proto)
                    .unwrap_or_default();
                match campaign.reentry {
                    Reentry::Never => {
                        self.skip(campaign.id(), SkipReason::ReentryNotAllowed);
                        return;
                    }
                    Reentry::AfterCooldown(cooldown) if left.plus(cooldown) > self.now => {
                        self.skip(campaign.id(), SkipReason::CooldownNotOver);
                        return;
                    }
                    Reentry::AfterCooldown(_) | Reentry::Always => j,
                }
            }
            Err(at) => {
                let journey = v1::ContactCampaignState {
                    campaign_id: campaign.id().to_string(),
                    ..Default::default()
                };
                self.state.campaigns.insert(at, journey);
                at
            }
        };
        let arm = campaign
            .split
            .as_ref()
            .map(|s| split::assign(s, campaign.id(), self.contact_id()));
        let now = Some(self.now.to_proto());
        let journey = &mut self.state.campaigns[j];
        journey.campaign_version = campaign.version();
        journey.enrolled_at.clone_from(&now);
        journey.enrollments += 1;
        journey.goal_reached = false;
        journey.completed = false;
        journey.exited_at = None;
        journey.response_group.clear();
        journey.state.clear();
        journey.state_entered_at = None;
        journey.variant.clear();
        journey.reached = false;
        journey.engaged.clear();
        journey.converted_at = None;
        self.advance_stage(v1::LifecycleStage::Prospect);
        let journey = &mut self.state.campaigns[j];
        let holdout = arm == Some(Arm::Holdout);
        let mut initial = campaign.initial_state;
        if holdout {
            journey.set_status(v1::JourneyStatus::Holdout);
            journey.response_group = HOLDOUT_GROUP.to_string();
            // Held-out contacts leave at once: they are tracked, never contacted.
            journey.exited_at = now;
        } else {
            journey.set_status(v1::JourneyStatus::Active);
            if let Some(Arm::Treated(Some(v))) = arm {
                journey.variant.clone_from(&v.id);
                initial = v.initial_state.unwrap_or(initial);
            }
        }
        self.effects.push(Effect::Enrolled {
            campaign_id: campaign.id().to_string(),
            version: campaign.version(),
            variant: self.state.campaigns[j].variant.clone(),
            holdout,
            cause,
        });
        if !holdout {
            self.enroll_depth += 1;
            self.enter(campaign, None, initial);
            self.enroll_depth -= 1;
        }
    }
}
