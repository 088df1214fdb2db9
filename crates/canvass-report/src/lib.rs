//! What campaigns achieved, computed from the counters the engine keeps as projections of the
//! log: the funnel, actions and their outcomes, cost against budget, attributed revenue and
//! ROI, split arms with their uplift over the holdout, marketing density and sensitivity.
//!
//! Pure: the caller reads the counters (from the store, or a simulation) and renders the
//! [`Report`] as a table, CSV, JSON or SVG.

pub mod charts;
pub mod density;
pub mod engagement;
pub mod flat;
pub mod leads;
pub mod render;
pub mod satisfaction;
pub mod significance;
pub mod value;

use std::collections::BTreeMap;

use canvass_core::stats::{latency_quantile, minor_units, money};
use canvass_proto::v1;
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Serialize};
use significance::{Interval, Proportion, Test};

pub use density::{Density, density};

/// Label of a campaign spec naming the segment it targets (reports group by it).
pub const SEGMENT_LABEL: &str = "segment";
/// Segment of campaigns without a `segment` label.
pub const NO_SEGMENT: &str = "(none)";

/// How revenue is credited to the actions that preceded it within the attribution window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Model {
    /// All of it to the last action.
    #[default]
    LastTouch,
    /// All of it to the first action.
    FirstTouch,
    /// Shared equally among the actions.
    Linear,
}

impl Model {
    pub(crate) fn pick(self, a: Option<&v1::Attribution>) -> Decimal {
        a.map_or(Decimal::ZERO, |a| {
            money(match self {
                Self::LastTouch => &a.last_touch,
                Self::FirstTouch => &a.first_touch,
                Self::Linear => &a.linear,
            })
        })
    }
}

/// How an indirect cost (a period's department cost) is shared among the campaigns reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Allocation {
    /// In proportion to the contacts each campaign enrolled (holdouts excluded).
    #[default]
    Contacts,
    /// In proportion to each campaign's direct cost.
    DirectCost,
}

/// What the reader asked for.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Attribution model for revenue and ROI.
    pub model: Model,
    /// An indirect cost to allocate across the campaigns reported (in their currency).
    pub indirect_cost: Option<Decimal>,
    /// The allocation rule.
    pub allocation: Allocation,
}

/// One campaign as the store (or a simulation) knows it.
#[derive(Debug, Clone, Default)]
pub struct CampaignData {
    /// Its latest spec, if loaded.
    pub spec: Option<v1::CampaignSpec>,
    /// Its id (also when no spec is loaded).
    pub id: String,
    /// Lifecycle status.
    pub status: v1::CampaignStatus,
    /// Counters kept by the engine.
    pub counters: v1::CampaignCounters,
    /// Contacts per response group now.
    pub groups: Vec<(String, u64)>,
}

/// The whole report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Attribution model used for `revenue` and `roi` figures.
    pub model: Model,
    /// One per campaign, in the order given.
    pub campaigns: Vec<CampaignReport>,
    /// Per channel (action kind) and currency, all campaigns together.
    pub channels: Vec<RoiRow>,
    /// Per segment (the campaigns' `segment` label): its density, and its money per currency.
    pub segments: Vec<SegmentRow>,
    /// The indirect cost and how it was shared, if one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub indirect: Option<IndirectCost>,
    /// Events applied later than the allowed lateness (at the clock's time, not their own):
    /// set by the caller from the engine's input counters ([`Report::with_inputs`]).
    pub late_events: u64,
    /// All revenue the engine saw, and how much of it no campaign was credited with: set
    /// likewise.
    pub revenue: RevenueTotals,
    /// Each sales owner's leads, all campaigns of the report together.
    pub owners: Vec<OwnerRow>,
}

/// Every purchase and won opportunity, against what the campaigns were credited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevenueTotals {
    /// All of it.
    pub total: String,
    /// Purchases and won opportunities.
    pub events: u64,
    /// Credited to campaigns under the report's model.
    pub attributed: String,
    /// Of the events, those credited to a campaign.
    pub attributed_events: u64,
    /// total - attributed.
    pub unattributed: String,
}

impl Report {
    /// Completes the report with the engine's input counters, summed over the partitions:
    /// late events and revenue totals.
    pub fn with_inputs(&mut self, inputs: &v1::InputCounters) {
        self.late_events = inputs.late_events;
        let total = money(&inputs.revenue);
        let attributed = self.model.pick(inputs.credited.as_ref());
        self.revenue = RevenueTotals {
            total: text(total),
            events: inputs.revenue_events,
            attributed: text(attributed),
            attributed_events: inputs.credited.as_ref().map_or(0, |c| c.conversions),
            unattributed: text(total - attributed),
        };
    }
}

/// Cost, revenue and ROI of a channel's actions in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoiRow {
    /// Channel (action kind).
    pub name: String,
    /// Currency of the money figures.
    pub currency: String,
    /// Direct cost.
    pub cost: String,
    /// Attributed revenue under the report's model.
    pub revenue: String,
    /// (revenue - cost) / cost; absent when nothing was spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<f64>,
}

/// The campaigns of one segment together. Density counts contacts, whatever the currency;
/// money is never added across currencies.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SegmentRow {
    /// Segment label.
    pub name: String,
    /// Marketing density of its campaigns' contacts.
    pub density: Density,
    /// Cost (direct and allocated indirect), revenue and ROI per currency.
    pub money: Vec<MoneyRow>,
}

/// Cost, revenue and ROI in one currency.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MoneyRow {
    /// Currency of the figures.
    pub currency: String,
    /// Cost.
    pub cost: String,
    /// Attributed revenue under the report's model.
    pub revenue: String,
    /// (revenue - cost) / cost; absent when nothing was spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<f64>,
}

/// How the indirect cost was allocated.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct IndirectCost {
    /// The amount.
    pub amount: String,
    /// The rule.
    pub rule: Allocation,
    /// Share per campaign id.
    pub shares: BTreeMap<String, String>,
    /// What could not be allocated (no contacts or no direct cost at all).
    pub unallocated: String,
}

/// One campaign's performance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CampaignReport {
    /// Campaign id.
    pub id: String,
    /// Name from the spec.
    pub name: String,
    /// Lifecycle status.
    pub status: String,
    /// Segment label.
    pub segment: String,
    /// Currency of its money figures: its budget's, or for a campaign without one the
    /// currency every other campaign reported shares (empty when they do not share one).
    pub currency: String,
    /// Contacts that entered (re-entries included), holdouts included.
    pub enrolled: u64,
    /// Of them, held out.
    pub held_out: u64,
    /// Goal states reached.
    pub goals: u64,
    /// Journeys completed.
    pub completed: u64,
    /// States in spec order with their entries: the funnel.
    pub funnel: Vec<FunnelStep>,
    /// Moves between states, with the share of the source state's entries that took them.
    pub steps: Vec<StepConversion>,
    /// Contacts per response group now.
    pub groups: Vec<GroupRow>,
    /// The funnel day by day.
    pub days: Vec<DayRow>,
    /// Actions per kind.
    pub actions: Vec<KindRow>,
    /// Spend against the budget.
    pub budget: BudgetRow,
    /// Direct, indirect and total cost.
    pub cost: CostRow,
    /// Revenue credited by each model.
    pub revenue_by_model: RevenueByModel,
    /// Revenue under the report's model.
    pub revenue: String,
    /// Purchases and won opportunities the campaign touched.
    pub conversions: u64,
    /// (revenue - total cost) / total cost; absent when nothing was spent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<f64>,
    /// Split arms side by side.
    pub arms: Vec<ArmRow>,
    /// Marketing density.
    pub density: Density,
    /// Input-to-action latency.
    pub sensitivity: Sensitivity,
    /// Leads handed to sales.
    pub leads: LeadsRow,
    /// Actions held back by frequency caps and quiet hours.
    pub capped: CappedRow,
    /// What contacts did with all of its messages.
    pub engagement: engagement::EngagementRow,
    /// Per material (template) sent.
    pub materials: Vec<engagement::MaterialRow>,
    /// What a conversion cost and brought, under the report's model.
    pub economics: engagement::Economics,
    /// ISO weeks, with the change against the week before.
    pub weeks: Vec<engagement::PeriodRow>,
    /// Calendar months, with the change against the month before.
    pub months: Vec<engagement::PeriodRow>,
}

/// Leads a campaign handed to sales.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeadsRow {
    /// Handed over.
    pub opened: u64,
    /// Accepted within the SLA.
    pub accepted: u64,
    /// SLA breached (returned to marketing).
    pub breached: u64,
    /// accepted / (accepted + breached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_sla: Option<f64>,
    /// Won.
    pub won: u64,
    /// Lost.
    pub lost: u64,
    /// won / (won + lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_rate: Option<f64>,
    /// Won amount.
    pub won_amount: String,
    /// Reassigned to another owner.
    pub reassigned: u64,
    /// Acceptances after a breach.
    pub late_acceptances: u64,
    /// Per owner, by name.
    pub owners: Vec<OwnerRow>,
}

/// One sales owner's leads: their load now and their SLA record.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRow {
    /// The owner.
    pub owner: String,
    /// Assigned to them when handed over.
    pub assigned: u64,
    /// Moved to them from another owner.
    pub reassigned_in: u64,
    /// Moved from them to another owner.
    pub reassigned_out: u64,
    /// Their load now: leads open or accepted, not yet won, lost or breached
    /// (assigned + reassignedIn - reassignedOut - breached - won - lost).
    pub open: u64,
    /// Accepted within the SLA while theirs.
    pub accepted: u64,
    /// Breached while theirs.
    pub breached: u64,
    /// accepted / (accepted + breached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub within_sla: Option<f64>,
    /// Won while theirs.
    pub won: u64,
    /// Lost while theirs.
    pub lost: u64,
    /// won / (won + lost).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub win_rate: Option<f64>,
    /// Won amount.
    pub won_amount: String,
}

/// The owners' rows of per-owner lead counters.
fn owner_rows(owners: &BTreeMap<String, v1::OwnerLeads>) -> Vec<OwnerRow> {
    owners
        .iter()
        .map(|(owner, o)| OwnerRow {
            owner: owner.clone(),
            assigned: o.assigned,
            reassigned_in: o.reassigned_in,
            reassigned_out: o.reassigned_out,
            open: (o.assigned + o.reassigned_in)
                .saturating_sub(o.reassigned_out + o.breached + o.won + o.lost),
            accepted: o.accepted,
            breached: o.breached,
            within_sla: ratio(o.accepted, o.accepted + o.breached),
            won: o.won,
            lost: o.lost,
            win_rate: ratio(o.won, o.won + o.lost),
            won_amount: text(money(&o.won_amount)),
        })
        .collect()
}

/// What caps and quiet hours did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CappedRow {
    /// Deferrals.
    pub deferred: u64,
    /// Dropped.
    pub dropped: u64,
    /// Deferred, then dropped (the contact moved on).
    pub expired: u64,
    /// Deferred, then sent.
    pub sent_late: u64,
}

/// One state of the funnel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FunnelStep {
    /// State id.
    pub state: String,
    /// Response group it puts contacts in, if any.
    pub group: String,
    /// Times a contact entered it.
    pub entries: u64,
    /// Active contacts in it now.
    pub active: u64,
    /// Entries / contacts enrolled and treated (not held out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_of_treated: Option<f64>,
    /// Whether it is a goal state.
    pub goal: bool,
}

/// A move between two states.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StepConversion {
    /// From (empty: enrollment).
    pub from: String,
    /// To.
    pub to: String,
    /// How many times.
    pub contacts: u64,
    /// Share of the entries of `from` (of the treated contacts for enrollments).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// A response group's size.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct GroupRow {
    /// The group.
    pub group: String,
    /// Contacts in it now.
    pub contacts: u64,
}

/// One day.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct DayRow {
    /// UTC day.
    pub day: String,
    /// Enrollments.
    pub enrollments: u64,
    /// Goal states reached.
    pub goals: u64,
    /// Actions emitted.
    pub actions: u64,
    /// Entries per state.
    pub entries: BTreeMap<String, u64>,
}

/// One action kind.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KindRow {
    /// Kind name ("EMAIL"...).
    pub kind: String,
    /// Emitted.
    pub emitted: u64,
    /// Confirmed delivered by an executor.
    pub delivered: u64,
    /// Bounced.
    pub bounced: u64,
    /// Failed.
    pub failed: u64,
    /// Handed to a sink that reports no outcome (file, topic).
    pub handed_off: u64,
    /// Withheld for the budget.
    pub over_budget: u64,
    /// Cost.
    pub cost: String,
    /// Revenue credited to this channel under the report's model.
    pub revenue: String,
    /// (revenue - cost) / cost.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roi: Option<f64>,
    /// What contacts did with this channel's messages.
    pub engagement: engagement::EngagementRow,
}

/// Spend against the budget.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetRow {
    /// Total budget; absent when unlimited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Direct cost so far.
    pub spent: String,
    /// What is left.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remaining: Option<String>,
    /// Cost-bearing actions withheld because the budget would have been exceeded.
    pub withheld: u64,
    /// When the first action was withheld.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exhausted_at: Option<String>,
}

/// Cost of a campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CostRow {
    /// Its actions' cost.
    pub direct: String,
    /// Its share of the indirect cost.
    pub indirect: String,
    /// Both.
    pub total: String,
}

/// Revenue by attribution model.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RevenueByModel {
    /// Last touch.
    pub last_touch: String,
    /// First touch.
    pub first_touch: String,
    /// Linear.
    pub linear: String,
}

/// One split arm.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ArmRow {
    /// Variant id, "holdout", or "all" for a campaign without a split.
    pub arm: String,
    /// Contacts enrolled in it.
    pub enrolled: u64,
    /// Reached a goal state.
    pub goals: u64,
    /// goals / enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub goal_rate: Option<f64>,
    /// Purchased within the window after enrolling.
    pub converted: u64,
    /// converted / enrolled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_rate: Option<f64>,
    /// Their purchases in that window.
    pub revenue: String,
    /// Revenue per enrolled contact.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_per_contact: Option<String>,
    /// Conversion rate minus the holdout's, in percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplift_points: Option<f64>,
    /// Conversion rate over the holdout's, minus one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relative_uplift: Option<f64>,
    /// Wilson score interval of the conversion rate at 95 %.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_interval: Option<Interval>,
    /// Newcombe's interval of `uplift_points` at 95 %, in percentage points.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplift_interval: Option<Interval>,
    /// Two-sided p-value of "no uplift".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p_value: Option<f64>,
    /// The test `p_value` comes from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Test>,
    /// Contacts each side needs to show this uplift with 80 % power at the 5 % level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed_per_arm: Option<u64>,
    /// Set when the arm or the holdout is smaller than `needed_per_arm`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// How fast the engine reacts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Sensitivity {
    /// Actions caused by an event (the others were caused by timers or launches).
    pub actions_timed: u64,
    /// Median event-to-action latency, as the upper bound of its bucket (ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p50_ms: Option<u64>,
    /// 99th percentile, likewise; `u64::MAX` means slower than a day.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p99_ms: Option<u64>,
}

/// A campaign's segment: its `segment` label, or [`NO_SEGMENT`].
#[must_use]
pub fn segment_of(spec: &v1::CampaignSpec) -> String {
    spec.labels
        .get(SEGMENT_LABEL)
        .cloned()
        .unwrap_or_else(|| NO_SEGMENT.to_string())
}

/// Each campaign's segment, as its newest version among `specs` says.
pub fn segments<'a>(
    specs: impl IntoIterator<Item = &'a v1::CampaignSpec>,
) -> BTreeMap<String, String> {
    let mut newest: BTreeMap<&str, &v1::CampaignSpec> = BTreeMap::new();
    for spec in specs {
        let entry = newest.entry(&spec.id).or_insert(spec);
        if spec.version >= entry.version {
            *entry = spec;
        }
    }
    newest
        .into_iter()
        .map(|(id, spec)| (id.to_string(), segment_of(spec)))
        .collect()
}

/// A ratio, absent when the denominator is zero.
#[must_use]
pub fn ratio(numerator: u64, denominator: u64) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (denominator > 0).then(|| numerator as f64 / denominator as f64)
}

/// (revenue - cost) / cost, absent when nothing was spent.
#[must_use]
pub fn roi(revenue: Decimal, cost: Decimal) -> Option<f64> {
    (cost > Decimal::ZERO)
        .then(|| ((revenue - cost) / cost).to_f64())
        .flatten()
}

/// Money as text: exact, with at least the two decimals of a currency ("0.20", "120.00",
/// "33.3333333333").
fn text(d: Decimal) -> String {
    let mut d = d.normalize();
    if d.scale() < 2 {
        d.rescale(2);
    }
    d.to_string()
}

/// Builds the report of `campaigns`.
#[must_use]
pub fn build(campaigns: &[CampaignData], options: &Options) -> Report {
    let shared = shared_currency(campaigns);
    let indirect = options
        .indirect_cost
        .map(|amount| allocate(campaigns, amount, options.allocation, minor_units(&shared)));
    let reports: Vec<CampaignReport> = campaigns
        .iter()
        .map(|c| {
            let share = indirect
                .as_ref()
                .and_then(|i| i.shares.get(&c.id))
                .map_or(Decimal::ZERO, |s| money(s));
            campaign(c, options.model, share, &shared)
        })
        .collect();
    let mut channels: BTreeMap<(String, String), (Decimal, Decimal)> = BTreeMap::new();
    let mut segments: BTreeMap<String, SegmentSums> = BTreeMap::new();
    for r in &reports {
        for k in &r.actions {
            let e = channels
                .entry((k.kind.clone(), r.currency.clone()))
                .or_default();
            e.0 += money(&k.cost);
            e.1 += money(&k.revenue);
        }
        let s = segments.entry(r.segment.clone()).or_default();
        s.eligible += r.density.eligible;
        s.reached += r.density.reached;
        let m = s.money.entry(r.currency.clone()).or_default();
        m.0 += money(&r.cost.total);
        m.1 += money(&r.revenue);
    }
    let mut owners = BTreeMap::new();
    for l in campaigns.iter().filter_map(|c| c.counters.leads.as_ref()) {
        canvass_core::stats::merge_owners(&mut owners, &l.owners);
    }
    Report {
        model: options.model,
        late_events: 0,
        revenue: RevenueTotals::default(),
        owners: owner_rows(&owners),
        campaigns: reports,
        channels: channels
            .into_iter()
            .map(|((name, currency), (cost, revenue))| RoiRow {
                name,
                currency,
                cost: text(cost),
                revenue: text(revenue),
                roi: roi(revenue, cost),
            })
            .collect(),
        segments: segments
            .into_iter()
            .map(|(name, s)| SegmentRow {
                name,
                density: density(s.eligible, s.reached),
                money: s
                    .money
                    .into_iter()
                    .map(|(currency, (cost, revenue))| MoneyRow {
                        currency,
                        cost: text(cost),
                        revenue: text(revenue),
                        roi: roi(revenue, cost),
                    })
                    .collect(),
            })
            .collect(),
        indirect,
    }
}

/// A segment's figures as its campaigns are added up.
#[derive(Default)]
struct SegmentSums {
    eligible: u64,
    reached: u64,
    money: BTreeMap<String, (Decimal, Decimal)>,
}

/// The currency of a campaign's budget, if it names one.
fn budget_currency(c: &CampaignData) -> Option<&str> {
    c.spec
        .as_ref()
        .and_then(|s| s.budget.as_ref())
        .map(|b| b.currency.as_str())
        .filter(|c| !c.is_empty())
}

/// The one currency the campaigns with a budget currency share, if they share one: a
/// campaign without a budget reports in it rather than in a currency of its own.
fn shared_currency(campaigns: &[CampaignData]) -> String {
    let named: std::collections::BTreeSet<&str> =
        campaigns.iter().filter_map(budget_currency).collect();
    match named.len() {
        1 => named.into_iter().next().unwrap_or_default().to_string(),
        _ => String::new(),
    }
}

/// Shares `amount` among the campaigns by the rule; the last campaign with a weight takes
/// what rounding left, so the shares add up to the amount exactly.
fn allocate(
    campaigns: &[CampaignData],
    amount: Decimal,
    rule: Allocation,
    decimals: u32,
) -> IndirectCost {
    let weight = |c: &CampaignData| match rule {
        Allocation::Contacts => {
            Decimal::from(c.counters.enrollments.saturating_sub(c.counters.holdouts))
        }
        Allocation::DirectCost => money(&c.counters.cost),
    };
    let total: Decimal = campaigns.iter().map(weight).sum();
    let mut shares = BTreeMap::new();
    let mut unallocated = amount;
    if total > Decimal::ZERO {
        let weighted: Vec<(&str, Decimal)> = campaigns
            .iter()
            .map(|c| (c.id.as_str(), weight(c)))
            .filter(|(_, w)| *w > Decimal::ZERO)
            .collect();
        for (i, (id, w)) in weighted.iter().enumerate() {
            let share = if i + 1 == weighted.len() {
                unallocated
            } else {
                (amount * w / total).round_dp(decimals)
            };
            unallocated -= share;
            shares.insert((*id).to_string(), text(share));
        }
    }
    IndirectCost {
        amount: text(amount),
        rule,
        shares,
        unallocated: text(unallocated),
    }
}

fn campaign(data: &CampaignData, model: Model, indirect: Decimal, shared: &str) -> CampaignReport {
    let c = &data.counters;
    let spec = data.spec.clone().unwrap_or_default();
    let treated = c.enrollments.saturating_sub(c.holdouts);
    let funnel: Vec<FunnelStep> = spec
        .states
        .iter()
        .map(|s| {
            let n = c.states.get(&s.id).cloned().unwrap_or_default();
            FunnelStep {
                state: s.id.clone(),
                group: s.response_group.clone(),
                entries: n.entries,
                active: n.active,
                share_of_treated: ratio(n.entries, treated),
                goal: s.goal,
            }
        })
        .collect();
    let steps = c
        .transitions
        .iter()
        .map(|(key, n)| {
            let (from, to) = key.split_once('>').unwrap_or(("", key));
            let base = if from.is_empty() {
                treated
            } else {
                c.states.get(from).map_or(0, |s| s.entries)
            };
            StepConversion {
                from: from.to_string(),
                to: to.to_string(),
                contacts: *n,
                rate: ratio(*n, base),
            }
        })
        .collect();
    let actions: Vec<KindRow> = c
        .kinds
        .iter()
        .map(|(kind, k)| {
            let revenue = model.pick(k.attribution.as_ref());
            let cost = money(&k.cost);
            KindRow {
                kind: kind.clone(),
                emitted: k.emitted,
                delivered: k.delivered,
                bounced: k.bounced,
                failed: k.failed,
                handed_off: k.handed_off,
                over_budget: k.over_budget,
                cost: text(cost),
                revenue: text(revenue),
                roi: roi(revenue, cost),
                engagement: engagement::row(k.engagement.as_ref(), k.emitted, k.delivered),
            }
        })
        .collect();
    let direct = money(&c.cost);
    let total_budget = spec
        .budget
        .as_ref()
        .filter(|b| !b.total.is_empty())
        .map(|b| money(&b.total));
    let currency = budget_currency(data).unwrap_or(shared).to_string();
    let decimals = minor_units(&currency);
    let revenue = model.pick(c.attribution.as_ref());
    let total_cost = direct + indirect;
    let attribution = c.attribution.clone().unwrap_or_default();
    CampaignReport {
        id: data.id.clone(),
        name: spec.name.clone(),
        status: data
            .status
            .as_str_name()
            .trim_start_matches("CAMPAIGN_STATUS_")
            .to_string(),
        segment: segment_of(&spec),
        currency,
        enrolled: c.enrollments,
        held_out: c.holdouts,
        goals: c.goals,
        completed: c.completions,
        funnel,
        steps,
        groups: data
            .groups
            .iter()
            .map(|(group, contacts)| GroupRow {
                group: group.clone(),
                contacts: *contacts,
            })
            .collect(),
        days: c
            .days
            .iter()
            .map(|(day, d)| DayRow {
                day: day.clone(),
                enrollments: d.enrollments,
                goals: d.goals,
                actions: d.actions,
                entries: d.entries.clone().into_iter().collect(),
            })
            .collect(),
        actions,
        budget: BudgetRow {
            total: total_budget.map(text),
            spent: text(direct),
            remaining: total_budget.map(|t| text(t - direct)),
            withheld: c.over_budget,
            exhausted_at: c.budget_exhausted_at.map(|t| t.to_string()),
        },
        cost: CostRow {
            direct: text(direct),
            indirect: text(indirect),
            total: text(total_cost),
        },
        revenue_by_model: RevenueByModel {
            last_touch: text(money(&attribution.last_touch)),
            first_touch: text(money(&attribution.first_touch)),
            linear: text(money(&attribution.linear)),
        },
        revenue: text(revenue),
        conversions: attribution.conversions,
        roi: roi(revenue, total_cost),
        arms: arms(c, decimals),
        engagement: engagement::row(c.engagement.as_ref(), c.actions, c.delivered),
        materials: engagement::materials(c, model),
        economics: engagement::economics(
            revenue,
            attribution.conversions,
            total_cost,
            treated,
            decimals,
            &c.conversion_buckets,
        ),
        weeks: engagement::periods(c, engagement::Rollup::Week),
        months: engagement::periods(c, engagement::Rollup::Month),
        density: density(treated, c.reached),
        sensitivity: Sensitivity {
            actions_timed: c.latency_buckets.iter().sum(),
            p50_ms: latency_quantile(&c.latency_buckets, 0.5),
            p99_ms: latency_quantile(&c.latency_buckets, 0.99),
        },
        leads: {
            let l = c.leads.clone().unwrap_or_default();
            LeadsRow {
                opened: l.opened,
                accepted: l.accepted,
                breached: l.breached,
                within_sla: ratio(l.accepted, l.accepted + l.breached),
                won: l.won,
                lost: l.lost,
                win_rate: ratio(l.won, l.won + l.lost),
                won_amount: text(money(&l.won_amount)),
                reassigned: l.reassigned,
                late_acceptances: l.late_acceptances,
                owners: owner_rows(&l.owners),
            }
        },
        capped: {
            let k = c.capped.unwrap_or_default();
            CappedRow {
                deferred: k.deferred,
                dropped: k.dropped,
                expired: k.expired,
                sent_late: k.sent_late,
            }
        },
    }
}

/// The arms side by side; each treated arm's conversion rate is compared with the holdout's
/// (uplift, its interval and p-value, and whether both are big enough to show it).
fn arms(c: &v1::CampaignCounters, decimals: u32) -> Vec<ArmRow> {
    let proportion = |a: &v1::ArmCounters| Proportion {
        successes: a.converted,
        trials: a.enrolled,
    };
    let holdout = c
        .arms
        .get(canvass_core::machine::HOLDOUT_GROUP)
        .map(&proportion);
    let holdout_rate = holdout.and_then(|h| ratio(h.successes, h.trials));
    c.arms
        .iter()
        .map(|(arm, a)| {
            let rate = ratio(a.converted, a.enrolled);
            let is_holdout = arm == canvass_core::machine::HOLDOUT_GROUP;
            let (uplift_points, relative_uplift) = match (rate, holdout_rate) {
                (Some(r), Some(h)) if !is_holdout => {
                    (Some((r - h) * 100.0), (h > 0.0).then(|| r / h - 1.0))
                }
                _ => (None, None),
            };
            let comparison = holdout
                .filter(|_| !is_holdout)
                .and_then(|h| significance::compare(proportion(a), h));
            let warning = comparison.as_ref().and_then(|s| {
                let needed = s.needed_per_arm?;
                let holdout = holdout.map_or(0, |h| h.trials);
                (a.enrolled.min(holdout) < needed).then(|| {
                    format!(
                        "too few contacts to show an uplift of {:.1} pp: about {needed} per side \
                         are needed for 80 % power at the 5 % level ({} in the arm, {holdout} \
                         in the holdout)",
                        uplift_points.unwrap_or_default(),
                        a.enrolled
                    )
                })
            });
            let revenue = money(&a.revenue);
            ArmRow {
                arm: if arm.is_empty() {
                    "all".to_string()
                } else {
                    arm.clone()
                },
                enrolled: a.enrolled,
                goals: a.goals,
                goal_rate: ratio(a.goals, a.enrolled),
                converted: a.converted,
                conversion_rate: rate,
                revenue: text(revenue),
                revenue_per_contact: (a.enrolled > 0)
                    .then(|| text((revenue / Decimal::from(a.enrolled)).round_dp(decimals))),
                uplift_points,
                relative_uplift,
                conversion_interval: significance::wilson(proportion(a)),
                uplift_interval: comparison.as_ref().map(|s| Interval {
                    low: s.difference.low * 100.0,
                    high: s.difference.high * 100.0,
                }),
                p_value: comparison.as_ref().map(|s| s.p_value),
                test: comparison.as_ref().map(|s| s.test),
                needed_per_arm: comparison.as_ref().and_then(|s| s.needed_per_arm),
                warning,
            }
        })
        .collect()
}
