//! What a run did, per campaign: contacts per state and response group, actions by kind, cost.

use std::collections::BTreeMap;

use canvass_core::Core;
use canvass_proto::v1;
use rust_decimal::Decimal;
use serde::Serialize;

/// Counts of what came in and what the core reported that no table keeps, gathered from the
/// engine's batch reports (what a campaign did comes from its counters).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Counters {
    /// Contact upserts applied.
    pub contacts_upserted: u64,
    /// Events applied (duplicates excluded).
    pub events: u64,
    /// Events ignored because their id was seen before.
    pub duplicate_events: u64,
    /// Events for contacts that had no profile yet (applied, with an empty profile).
    pub unknown_contact_events: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Conditions that failed to evaluate (treated as false).
    pub condition_failures: u64,
    /// Inputs the core could not apply as the spec intends.
    pub faults: u64,
    /// Enrollments refused (already in, re-entry rules, unknown campaign).
    pub enrollments_skipped: u64,
}

/// The end-of-run summary, serialized as JSON in lowerCamelCase like the rest of the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Virtual clock at the start and at the end of the run (RFC 3339).
    pub clock: ClockSummary,
    /// What came in.
    pub inputs: InputSummary,
    /// Actions emitted by kind, all campaigns together.
    pub actions_by_kind: BTreeMap<String, u64>,
    /// One entry per campaign, ordered by id.
    pub campaigns: Vec<CampaignSummary>,
    /// Things that went wrong while running.
    pub diagnostics: Diagnostics,
}

/// Start and end of the virtual clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ClockSummary {
    /// Where the clock started.
    pub start: String,
    /// Where it stopped.
    pub end: String,
}

/// Input counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InputSummary {
    /// Contacts loaded.
    pub contacts: u64,
    /// Events applied.
    pub events: u64,
    /// Lines of the input files that could not be read (reported on stderr).
    pub malformed_lines: u64,
    /// Events ignored as duplicates of an earlier event id.
    pub duplicate_events: u64,
    /// Events for contacts not in the contacts file (applied with an empty profile).
    pub unknown_contact_events: u64,
    /// Timers that fired.
    pub timers_fired: u64,
    /// Timers still armed when the run stopped.
    pub pending_timers: u64,
    /// Events applied later than the allowed lateness, at the clock's time.
    pub late_events: u64,
}

/// Diagnostic counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Diagnostics {
    /// Conditions that failed to evaluate (each treated as false).
    pub condition_failures: u64,
    /// Inputs the core could not apply as the spec intends.
    pub faults: u64,
    /// Enrollments refused (already in the campaign, re-entry rules).
    pub enrollments_skipped: u64,
}

/// One campaign's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CampaignSummary {
    /// Campaign id.
    pub id: String,
    /// Contacts that entered it.
    pub contacts: u64,
    /// Enrollments, re-entries included.
    pub enrollments: u64,
    /// Contacts still moving through it.
    pub active: u64,
    /// Contacts that reached a terminal state.
    pub completed: u64,
    /// Contacts held out by the split.
    pub holdout: u64,
    /// Contacts whose journey ended because the campaign was stopped.
    pub stopped: u64,
    /// Contacts that reached a goal state.
    pub goal_reached: u64,
    /// Contacts by current (or final) state.
    pub states: BTreeMap<String, u64>,
    /// Contacts by response group (contacts in no group yet are not listed).
    pub response_groups: BTreeMap<String, u64>,
    /// Contacts by split variant.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub variants: BTreeMap<String, u64>,
    /// Actions emitted by kind.
    pub actions_by_kind: BTreeMap<String, u64>,
    /// Cost of the actions emitted, as a decimal string.
    pub cost: String,
    /// Currency of the cost and budget; empty without a budget.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub currency: String,
    /// Total budget; absent if unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget: Option<String>,
    /// Budget minus cost. Absent if unlimited.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub budget_remaining: Option<String>,
    /// Cost-bearing actions not emitted because they would have exceeded the budget.
    #[serde(skip_serializing_if = "is_zero")]
    pub withheld: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)]
fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl Summary {
    /// Summarizes the final states, each campaign's counters (by id) and the input counts of
    /// a run.
    #[must_use]
    pub fn build<'a>(
        core: &Core,
        states: impl IntoIterator<Item = &'a v1::ContactState>,
        campaign_counters: &BTreeMap<String, v1::CampaignCounters>,
        counters: &Counters,
        inputs: InputSummary,
        clock: ClockSummary,
    ) -> Self {
        let mut campaigns: BTreeMap<String, CampaignSummary> = core
            .catalog()
            .latest_all()
            .map(|c| {
                (
                    c.id().to_string(),
                    CampaignSummary {
                        id: c.id().to_string(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        for state in states {
            for j in &state.campaigns {
                let c = campaigns
                    .entry(j.campaign_id.clone())
                    .or_insert_with(|| CampaignSummary {
                        id: j.campaign_id.clone(),
                        ..Default::default()
                    });
                c.contacts += 1;
                c.enrollments += u64::from(j.enrollments);
                match j.status() {
                    v1::JourneyStatus::Active => c.active += 1,
                    v1::JourneyStatus::Completed => c.completed += 1,
                    v1::JourneyStatus::Holdout => c.holdout += 1,
                    v1::JourneyStatus::Stopped => c.stopped += 1,
                    v1::JourneyStatus::Unspecified => {}
                }
                if j.goal_reached {
                    c.goal_reached += 1;
                }
                if !j.state.is_empty() {
                    *c.states.entry(j.state.clone()).or_default() += 1;
                }
                if !j.response_group.is_empty() {
                    *c.response_groups
                        .entry(j.response_group.clone())
                        .or_default() += 1;
                }
                if !j.variant.is_empty() {
                    *c.variants.entry(j.variant.clone()).or_default() += 1;
                }
            }
        }
        let mut actions_by_kind: BTreeMap<String, u64> = BTreeMap::new();
        for (id, c) in &mut campaigns {
            let Some(counted) = campaign_counters.get(id) else {
                continue;
            };
            for (kind, k) in counted.kinds.iter().filter(|(_, k)| k.emitted > 0) {
                c.actions_by_kind.insert(kind.clone(), k.emitted);
                *actions_by_kind.entry(kind.clone()).or_default() += k.emitted;
            }
            c.withheld = counted.over_budget;
            let cost = counted.cost.parse::<Decimal>().unwrap_or_default();
            c.cost = cost.to_string();
            if let Some(budget) = core.catalog().latest(id).and_then(|c| c.budget.as_ref()) {
                c.currency.clone_from(&budget.currency);
                c.budget = budget.total.map(|t| t.to_string());
                c.budget_remaining = budget.total.map(|t| (t - cost).to_string());
            }
        }
        Summary {
            clock,
            inputs,
            actions_by_kind,
            campaigns: campaigns.into_values().collect(),
            diagnostics: Diagnostics {
                condition_failures: counters.condition_failures,
                faults: counters.faults,
                enrollments_skipped: counters.enrollments_skipped,
            },
        }
    }
}
