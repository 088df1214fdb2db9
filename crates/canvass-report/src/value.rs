//! Knowing the customer (seeds 002-004): per-contact value and RFM, a CLV estimate, the value
//! pyramid (tiers A/B/C/D), churn and the churn rate per tier and period, lifecycle stages
//! and source channels. Computed from the contacts' states as they are at `as_of`.
//!
//! Definitions (also in docs/reports.md):
//! - *value* = revenue (purchases) - cost of goods (purchases' `cost`) - marketing cost (the
//!   cost of the actions the contact was sent);
//! - a *customer* has at least one purchase; a customer is *churned* when its last purchase
//!   is more than `churn_days` before `as_of`;
//! - *RFM*: recency (days since the last purchase), frequency (purchases), monetary
//!   (revenue), each scored 1-5 by quintile of rank among customers (5 = most recent, most
//!   frequent, highest); ties share the score of their best-ranked member;
//! - *tiers*: customers ranked by value (ties by id), the top `a%` of them A, the next `b%`
//!   B, the next `c%` C, the rest D (defaults 20/30/30; each bound is the floor of the
//!   cumulative share of the count, A holding at least the best customer): each tier's share
//!   of the total value shows the pyramid (the 80/20 rule);
//! - *retention rate* r: of the customers active `churn_days` before `as_of` (a purchase in
//!   the `churn_days` before that), the share that purchased again since;
//! - *CLV* = value + margin x revenue per period x r / (1 - r) for an active customer (the
//!   expected number of further periods of a geometric lifetime, capped at 100), value alone
//!   for a churned one; a period is `churn_days` long and the revenue per period is the
//!   revenue over the periods since the first purchase (at least one);
//! - *churn rate* of a tier in a period [s, e): of its customers active at s, the share for
//!   whom a run of `churn_days` without purchase ran out within [s, e) (the inactivity
//!   threshold definition of non-contractual churn), counted even if they purchased again
//!   before e (those are also counted as *reactivated*). Tiers are those at `as_of`.

use std::collections::{BTreeMap, HashMap};

use canvass_core::{UnixMillis, stats::money, time::DAY_MILLIS};
use canvass_proto::v1;
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Serialize};

use crate::{ratio, text};

/// The tiers, best first.
pub const TIERS: [&str; 4] = ["A", "B", "C", "D"];
/// Most further periods a CLV counts (a retention rate of 100% would otherwise be endless).
pub const MAX_FUTURE_PERIODS: u32 = 100;

/// What the reader asked for.
#[derive(Debug, Clone)]
pub struct ValueOptions {
    /// The report's time.
    pub as_of: UnixMillis,
    /// Days without purchase after which a customer is churned.
    pub churn_days: u32,
    /// Shares of the customers (percent, best first) in tiers A, B and C; D takes the rest.
    pub tier_percents: [u32; 3],
    /// Share of revenue that is margin, for the CLV's future part.
    pub margin: Decimal,
    /// Length of a churn-rate period, in days.
    pub period_days: u32,
    /// How many periods back from `as_of` the churn rate is reported.
    pub periods: u32,
    /// List every contact (otherwise the top 10 by value).
    pub all_contacts: bool,
    /// Each campaign's segment (its `segment` label), for satisfaction and complaints.
    pub segments: BTreeMap<String, String>,
}

impl Default for ValueOptions {
    fn default() -> Self {
        Self {
            as_of: UnixMillis::default(),
            churn_days: 90,
            tier_percents: [20, 30, 30],
            margin: Decimal::ONE,
            period_days: 30,
            periods: 6,
            all_contacts: false,
            segments: BTreeMap::new(),
        }
    }
}

/// The customer-value report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ValueReport {
    /// The report's time.
    pub as_of: String,
    /// Contacts known.
    pub contacts: u64,
    /// Of them, customers (a purchase at least).
    pub customers: u64,
    /// Of them, churned.
    pub churned: u64,
    /// Days without purchase that make a churned customer.
    pub churn_days: u32,
    /// Observed retention rate over the last `churn_days`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_rate: Option<f64>,
    /// Total value of the customers.
    pub total_value: String,
    /// The pyramid.
    pub tiers: Vec<TierRow>,
    /// Churn rate per period and tier, oldest period first.
    pub churn: Vec<ChurnRow>,
    /// Contacts per lifecycle stage.
    pub stages: BTreeMap<String, u64>,
    /// Contacts, customers and revenue per source channel.
    pub sources: Vec<SourceRow>,
    /// Satisfaction from survey answers: all, per campaign, segment, tier and period.
    pub satisfaction: Vec<crate::satisfaction::SatisfactionRow>,
    /// Complaints and faults: all, per segment, tier, product and period.
    pub concerns: Vec<crate::satisfaction::ConcernRow>,
    /// The contacts listed (top 10 by value, or all).
    pub top: Vec<ContactValue>,
}

/// One tier of the pyramid.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TierRow {
    /// A, B, C or D.
    pub tier: String,
    /// Customers in it.
    pub customers: u64,
    /// Their value.
    pub value: String,
    /// Share of the total value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub share_of_value: Option<f64>,
    /// Lowest value in the tier (its threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_value: Option<String>,
    /// Average CLV.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_clv: Option<String>,
    /// Churned customers in it.
    pub churned: u64,
}

/// Churn of one tier in one period.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ChurnRow {
    /// Start of the period.
    pub from: String,
    /// End of the period (exclusive).
    pub to: String,
    /// Tier, or "all".
    pub tier: String,
    /// Customers active at the start.
    pub active: u64,
    /// Of them, churned within the period (a churn run ran out in it).
    pub churned: u64,
    /// Of the churned, those who purchased again before the period's end.
    pub reactivated: u64,
    /// churned / active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
}

/// One source channel.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SourceRow {
    /// Channel ("" when unknown).
    pub channel: String,
    /// Contacts from it.
    pub contacts: u64,
    /// Of them, customers.
    pub customers: u64,
    /// Their revenue.
    pub revenue: String,
}

/// One contact's value.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ContactValue {
    /// Contact id.
    pub id: String,
    /// Tier, empty for a contact without purchases.
    pub tier: String,
    /// Revenue.
    pub revenue: String,
    /// Cost of goods.
    pub cost_of_goods: String,
    /// Marketing cost.
    pub marketing_cost: String,
    /// Revenue - cost of goods - marketing cost.
    pub value: String,
    /// Lifetime value estimate.
    pub clv: String,
    /// Days since the last purchase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recency_days: Option<i64>,
    /// Purchases.
    pub frequency: u64,
    /// RFM scores, e.g. "545"; empty without purchases.
    pub rfm: String,
    /// Churned.
    pub churned: bool,
    /// Lifecycle stage.
    pub stage: String,
    /// Source channel.
    pub source_channel: String,
}

/// What one contact contributes, reduced from its state as the contacts are read.
#[derive(Debug, Clone)]
pub struct Customer {
    pub(crate) id: String,
    revenue: Decimal,
    cost_of_goods: Decimal,
    marketing_cost: Decimal,
    /// Purchase times, ascending.
    purchases: Vec<UnixMillis>,
    stage: v1::LifecycleStage,
    source_channel: String,
    /// Products bought.
    pub(crate) products: Vec<String>,
    /// Survey answers.
    pub(crate) surveys: Vec<v1::SurveyAnswer>,
    /// Complaints and faults.
    pub(crate) issues: Vec<v1::Issue>,
    /// Campaigns it was ever enrolled in.
    pub(crate) campaigns: Vec<String>,
}

impl Customer {
    /// Reduces a contact's state to what the value report needs.
    #[must_use]
    pub fn from_state(state: &v1::ContactState) -> Self {
        let contact = state.contact.clone().unwrap_or_default();
        let mut purchases: Vec<UnixMillis> = contact
            .purchases
            .iter()
            .filter_map(|p| p.at.as_ref().map(UnixMillis::from_proto))
            .collect();
        purchases.sort_unstable();
        // One contact, one stage: purchases make a customer, however they arrived (imported
        // history in the profile included), as the engine itself has it since it applies them.
        let mut stage = contact.stage();
        if !purchases.is_empty() && stage < v1::LifecycleStage::Customer {
            stage = v1::LifecycleStage::Customer;
        }
        Self {
            revenue: contact.purchases.iter().map(|p| money(&p.amount)).sum(),
            cost_of_goods: contact.purchases.iter().map(|p| money(&p.cost)).sum(),
            marketing_cost: money(&state.marketing_cost),
            purchases,
            stage,
            products: contact
                .purchases
                .iter()
                .map(|p| p.product.clone())
                .collect(),
            campaigns: state
                .campaigns
                .iter()
                .map(|j| j.campaign_id.clone())
                .collect(),
            surveys: contact.surveys,
            issues: contact.issues,
            source_channel: contact.source_channel,
            id: contact.id,
        }
    }

    fn value(&self) -> Decimal {
        self.revenue - self.cost_of_goods - self.marketing_cost
    }

    fn is_customer(&self) -> bool {
        !self.purchases.is_empty()
    }

    fn last_purchase_before(&self, t: UnixMillis) -> Option<UnixMillis> {
        self.purchases.iter().rev().find(|p| **p <= t).copied()
    }

    /// The moments the customer churned: each purchase's `churn` later, unless another
    /// purchase came by then.
    fn lapses(&self, churn: i64) -> impl Iterator<Item = i64> + '_ {
        self.purchases.iter().enumerate().filter_map(move |(i, p)| {
            let lapse = p.0 + churn;
            let next = self.purchases.get(i + 1);
            next.is_none_or(|n| n.0 > lapse).then_some(lapse)
        })
    }

    /// Active at `t`: a purchase in the `churn` before it.
    fn active_at(&self, t: UnixMillis, churn: i64) -> bool {
        self.last_purchase_before(t)
            .is_some_and(|p| t.0 - p.0 <= churn)
    }
}

/// Scores 1-5 by quintile of rank; `better` orders best first. Ties share the best score.
fn quintiles<T: PartialOrd>(
    values: &[T],
    better: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<u8> {
    let n = values.len();
    let mut order: Vec<usize> = (0..n).collect();
    order.sort_by(|a, b| better(&values[*a], &values[*b]).then(a.cmp(b)));
    let mut scores = vec![0; n];
    let mut rank_of_tie = 0;
    for (rank, i) in order.iter().enumerate() {
        if rank == 0 || values[*i] != values[order[rank - 1]] {
            rank_of_tie = rank;
        }
        // The best fifth scores 5.
        let score = 5 - (rank_of_tie * 5 / n.max(1));
        scores[*i] = u8::try_from(score).unwrap_or(1);
    }
    scores
}

/// Builds the value report over `customers` (every contact known).
#[must_use]
#[allow(clippy::too_many_lines)]
pub fn build(contacts: &[Customer], options: &ValueOptions) -> ValueReport {
    let now = options.as_of;
    let churn = i64::from(options.churn_days) * DAY_MILLIS;
    let buyers: Vec<&Customer> = contacts.iter().filter(|c| c.is_customer()).collect();

    // Retention over the last churn period: active then, purchased again since.
    let then = UnixMillis(now.0 - churn);
    let active_then: Vec<&&Customer> = buyers.iter().filter(|c| c.active_at(then, churn)).collect();
    let retained = active_then
        .iter()
        .filter(|c| c.purchases.iter().any(|p| *p > then && *p <= now))
        .count();
    let retention_rate = ratio(retained as u64, active_then.len() as u64);
    let future_periods = retention_rate.map_or(Decimal::ZERO, |r| {
        let periods = if r >= 1.0 {
            f64::from(MAX_FUTURE_PERIODS)
        } else {
            (r / (1.0 - r)).min(f64::from(MAX_FUTURE_PERIODS))
        };
        Decimal::try_from(periods).unwrap_or_default()
    });

    // Tiers by value rank.
    let mut ranked: Vec<usize> = (0..buyers.len()).collect();
    ranked.sort_by(|a, b| {
        buyers[*b]
            .value()
            .cmp(&buyers[*a].value())
            .then(buyers[*a].id.cmp(&buyers[*b].id))
    });
    let n = buyers.len();
    let [a, b, c] = options.tier_percents.map(|p| p as usize);
    // Floors, except that a non-empty A tier keeps its best customer however few there are.
    let mut bounds = [n * a / 100, n * (a + b) / 100, n * (a + b + c) / 100];
    if n > 0 && a > 0 {
        bounds[0] = bounds[0].max(1);
    }
    let mut tier_of = vec![0usize; n];
    for (rank, i) in ranked.iter().enumerate() {
        tier_of[*i] = bounds.iter().filter(|b| rank >= **b).count();
    }

    let recency: Vec<i64> = buyers
        .iter()
        .map(|c| c.purchases.last().map_or(i64::MAX, |p| now.0 - p.0))
        .collect();
    let frequency: Vec<usize> = buyers.iter().map(|c| c.purchases.len()).collect();
    let monetary: Vec<Decimal> = buyers.iter().map(|c| c.revenue).collect();
    let r = quintiles(&recency, |x, y| x.cmp(y));
    let f = quintiles(&frequency, |x, y| y.cmp(x));
    let m = quintiles(&monetary, |x, y| y.cmp(x));

    let churned_flag: Vec<bool> = buyers.iter().map(|c| !c.active_at(now, churn)).collect();
    let clv: Vec<Decimal> = buyers
        .iter()
        .zip(&churned_flag)
        .map(|(c, churned)| {
            if *churned {
                return c.value();
            }
            let first = c.purchases.first().copied().unwrap_or(now);
            let periods = ((now.0 - first.0) / churn.max(1) + 1).max(1);
            let per_period = c.revenue / Decimal::from(periods);
            c.value() + options.margin * per_period * future_periods
        })
        .collect();

    let total_value: Decimal = buyers.iter().map(|c| c.value()).sum();
    let tiers = TIERS
        .iter()
        .enumerate()
        .map(|(t, name)| {
            let members: Vec<usize> = (0..n).filter(|i| tier_of[*i] == t).collect();
            let value: Decimal = members.iter().map(|i| buyers[*i].value()).sum();
            let count = members.len() as u64;
            TierRow {
                tier: (*name).to_string(),
                customers: count,
                value: text(value),
                share_of_value: (total_value > Decimal::ZERO)
                    .then(|| (value / total_value).to_f64())
                    .flatten(),
                min_value: members.iter().map(|i| buyers[*i].value()).min().map(text),
                average_clv: (count > 0).then(|| {
                    let sum: Decimal = members.iter().map(|i| clv[*i]).sum();
                    text((sum / Decimal::from(count)).round_dp(2))
                }),
                churned: members.iter().filter(|i| churned_flag[**i]).count() as u64,
            }
        })
        .collect();

    let period = i64::from(options.period_days) * DAY_MILLIS;
    let periods: Vec<(UnixMillis, UnixMillis)> = (0..i64::from(options.periods))
        .rev()
        .map(|k| {
            let end = UnixMillis(now.0 - k * period);
            (UnixMillis(end.0 - period), end)
        })
        .collect();
    let mut churn_rows = Vec::new();
    for &(start, end) in &periods {
        for (t, name) in
            std::iter::once((usize::MAX, "all")).chain(TIERS.iter().copied().enumerate())
        {
            let members = (0..n).filter(|i| t == usize::MAX || tier_of[*i] == t);
            let (mut active, mut churned, mut reactivated) = (0, 0, 0);
            for i in members {
                let c = buyers[i];
                if !c.active_at(start, churn) {
                    continue;
                }
                active += 1;
                // Churned in the period: a run of `churn_days` without a purchase ran out in
                // it, whatever the customer did afterwards.
                let Some(lapse) = c.lapses(churn).find(|d| (start.0..end.0).contains(d)) else {
                    continue;
                };
                churned += 1;
                if c.purchases.iter().any(|p| p.0 > lapse && p.0 < end.0) {
                    reactivated += 1;
                }
            }
            churn_rows.push(ChurnRow {
                from: start.to_string(),
                to: end.to_string(),
                tier: name.to_string(),
                active,
                churned,
                reactivated,
                rate: ratio(churned, active),
            });
        }
    }

    let tier_names: HashMap<&str, &str> = (0..n)
        .map(|i| (buyers[i].id.as_str(), TIERS[tier_of[i]]))
        .collect();
    let satisfaction =
        crate::satisfaction::satisfaction(contacts, &tier_names, &options.segments, now, &periods);
    let concerns =
        crate::satisfaction::concerns(contacts, &tier_names, &options.segments, now, &periods);

    let mut stages: BTreeMap<String, u64> = BTreeMap::new();
    let mut sources: BTreeMap<String, (u64, u64, Decimal)> = BTreeMap::new();
    for c in contacts {
        *stages
            .entry(canvass_core::stage_name(c.stage).to_string())
            .or_default() += 1;
        let s = sources.entry(c.source_channel.clone()).or_default();
        s.0 += 1;
        if c.is_customer() {
            s.1 += 1;
        }
        s.2 += c.revenue;
    }

    let rows: Vec<ContactValue> = ranked
        .iter()
        .take(if options.all_contacts { n } else { 10 })
        .map(|i| {
            contact_row(
                buyers[*i],
                TIERS[tier_of[*i]],
                clv[*i],
                recency[*i],
                (r[*i], f[*i], m[*i]),
                churned_flag[*i],
            )
        })
        .chain(
            contacts
                .iter()
                .filter(|c| options.all_contacts && !c.is_customer())
                .map(|c| contact_row(c, "", c.value(), i64::MAX, (0, 0, 0), false)),
        )
        .collect();

    ValueReport {
        as_of: now.to_string(),
        contacts: contacts.len() as u64,
        customers: n as u64,
        churned: churned_flag.iter().filter(|c| **c).count() as u64,
        churn_days: options.churn_days,
        retention_rate,
        total_value: text(total_value),
        tiers,
        churn: churn_rows,
        stages,
        sources: sources
            .into_iter()
            .map(|(channel, (contacts, customers, revenue))| SourceRow {
                channel,
                contacts,
                customers,
                revenue: text(revenue),
            })
            .collect(),
        satisfaction,
        concerns,
        top: rows,
    }
}

fn contact_row(
    c: &Customer,
    tier: &str,
    clv: Decimal,
    recency: i64,
    (r, f, m): (u8, u8, u8),
    churned: bool,
) -> ContactValue {
    ContactValue {
        id: c.id.clone(),
        tier: tier.to_string(),
        revenue: text(c.revenue),
        cost_of_goods: text(c.cost_of_goods),
        marketing_cost: text(c.marketing_cost),
        value: text(c.value()),
        clv: text(clv.round_dp(2)),
        recency_days: (recency != i64::MAX).then(|| recency.div_euclid(DAY_MILLIS)),
        frequency: c.purchases.len() as u64,
        rfm: if c.is_customer() {
            format!("{r}{f}{m}")
        } else {
            String::new()
        },
        churned,
        stage: canvass_core::stage_name(c.stage).to_string(),
        source_channel: c.source_channel.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: i64 = 1_700_000_000_000;

    fn day(d: i64) -> UnixMillis {
        UnixMillis(BASE + d * DAY_MILLIS)
    }

    /// A contact with purchases `(day, amount, cost of goods)` and a marketing cost.
    fn contact(
        id: &str,
        purchases: &[(i64, &str, &str)],
        marketing: &str,
        source: &str,
    ) -> Customer {
        let state = v1::ContactState {
            contact: Some(v1::Contact {
                id: id.to_string(),
                purchases: purchases
                    .iter()
                    .map(|(d, amount, cost)| v1::Purchase {
                        amount: (*amount).to_string(),
                        cost: (*cost).to_string(),
                        at: Some(day(*d).to_proto()),
                        ..Default::default()
                    })
                    .collect(),
                stage: if purchases.is_empty() {
                    v1::LifecycleStage::Prospect as i32
                } else {
                    v1::LifecycleStage::Customer as i32
                },
                source_channel: source.to_string(),
                ..Default::default()
            }),
            marketing_cost: marketing.to_string(),
            ..Default::default()
        };
        Customer::from_state(&state)
    }

    /// Five customers and a prospect, the report at day 400 with 90 churn days; every figure
    /// below is worked out in the comments.
    fn fixture() -> Vec<Customer> {
        vec![
            // revenue 800, cost of goods 200, marketing 10: value 590; recency 10, frequency 2.
            contact(
                "k1",
                &[(350, "300", ""), (390, "500", "200")],
                "10",
                "email",
            ),
            // value 400; last purchase 300 days ago: churned.
            contact("k2", &[(100, "400", "")], "", "phone"),
            // value 300; recency 20, frequency 3.
            contact(
                "k3",
                &[(200, "100", ""), (300, "100", ""), (380, "100", "")],
                "",
                "",
            ),
            // value 50; recency 5.
            contact("k4", &[(395, "50", "")], "", ""),
            // value 20 - 5 = 15; 150 days ago: churned.
            contact("k5", &[(250, "20", "")], "5", ""),
            contact("p1", &[], "2", "email"),
        ]
    }

    fn options() -> ValueOptions {
        ValueOptions {
            as_of: day(400),
            periods: 2,
            ..ValueOptions::default()
        }
    }

    #[test]
    fn value_tiers_clv_rfm_and_churn_of_a_hand_worked_fixture() {
        let r = build(&fixture(), &options());
        assert_eq!((r.contacts, r.customers, r.churned), (6, 5, 2));
        assert_eq!(r.total_value, "1355.00");
        // Active at day 310 (a purchase in the 90 days before): k3 and k5; k3 bought again.
        assert_eq!(r.retention_rate, Some(0.5));
        // Five customers: A the top 20% (1), B the next 30% (to 2), C to 80% (4), D the rest.
        let tiers: Vec<(&str, u64, &str, Option<&str>, u64)> = r
            .tiers
            .iter()
            .map(|t| {
                (
                    t.tier.as_str(),
                    t.customers,
                    t.value.as_str(),
                    t.average_clv.as_deref(),
                    t.churned,
                )
            })
            .collect();
        // CLV of an active customer: value + revenue per 90-day period x r/(1-r) = 1 period.
        // k1: 590 + 800 = 1390; k3: 300 + 300/3 = 400; k4: 50 + 50 = 100. Churned: their value.
        assert_eq!(
            tiers,
            [
                ("A", 1, "590.00", Some("1390.00"), 0),
                ("B", 1, "400.00", Some("400.00"), 1),
                ("C", 2, "350.00", Some("250.00"), 0),
                ("D", 1, "15.00", Some("15.00"), 1),
            ]
        );
        let a_share = r.tiers[0].share_of_value.unwrap();
        assert!((a_share - 590.0 / 1355.0).abs() < 1e-12);
        let rfm: Vec<(&str, &str, bool)> = r
            .top
            .iter()
            .map(|c| (c.id.as_str(), c.rfm.as_str(), c.churned))
            .collect();
        assert_eq!(
            rfm,
            [
                ("k1", "445", false),
                ("k2", "134", true),
                ("k3", "353", false),
                ("k4", "532", false),
                ("k5", "231", true)
            ]
        );
        assert_eq!(r.top[0].recency_days, Some(10));
        assert_eq!(r.top[0].value, "590.00");
        // Churn per 30-day period: [340, 370): k3 and k5 active at its start, k5's 90 days
        // run out at 340; [370, 400): k1 and k3 active, neither churns.
        let churn: Vec<(&str, u64, u64)> = r
            .churn
            .iter()
            .filter(|c| c.tier == "all" || c.tier == "D")
            .map(|c| (c.tier.as_str(), c.active, c.churned))
            .collect();
        assert_eq!(
            churn,
            [("all", 2, 1), ("D", 1, 1), ("all", 2, 0), ("D", 0, 0)]
        );
        assert_eq!(r.churn[0].from, day(340).to_string());
        assert_eq!(
            r.stages,
            BTreeMap::from([("CUSTOMER".into(), 5), ("PROSPECT".into(), 1)])
        );
        let email = r.sources.iter().find(|s| s.channel == "email").unwrap();
        assert_eq!(
            (email.contacts, email.customers, email.revenue.as_str()),
            (2, 1, "800.00")
        );
    }

    #[test]
    fn a_customer_who_churns_and_buys_again_in_one_period_counts_as_churned_and_reactivated() {
        // Bought on day 200, 90 days without purchase run out on day 290, bought again on
        // day 300: churned in [270, 330) and reactivated; the other never came back.
        let contacts = vec![
            contact("back", &[(200, "10", ""), (300, "10", "")], "", ""),
            contact("gone", &[(195, "10", "")], "", ""),
            contact(
                "loyal",
                &[(200, "10", ""), (260, "10", ""), (320, "10", "")],
                "",
                "",
            ),
        ];
        let r = build(
            &contacts,
            &ValueOptions {
                as_of: day(330),
                period_days: 60,
                periods: 1,
                ..ValueOptions::default()
            },
        );
        let all = r.churn.iter().find(|c| c.tier == "all").unwrap();
        assert_eq!(all.from, day(270).to_string());
        assert_eq!(
            (all.active, all.churned, all.reactivated),
            (3, 2, 1),
            "{:?}",
            r.churn
        );
    }

    #[test]
    fn stages_follow_purchases_whichever_way_they_arrived() {
        // A profile imported with its purchase history but no stage is a customer.
        let state = v1::ContactState {
            contact: Some(v1::Contact {
                id: "imported".into(),
                purchases: vec![v1::Purchase {
                    amount: "5".into(),
                    at: Some(day(10).to_proto()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let unknown = v1::ContactState {
            contact: Some(v1::Contact {
                id: "unknown".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = build(
            &[Customer::from_state(&state), Customer::from_state(&unknown)],
            &ValueOptions {
                as_of: day(20),
                all_contacts: true,
                ..ValueOptions::default()
            },
        );
        assert_eq!(r.customers, 1);
        assert_eq!(
            r.stages,
            BTreeMap::from([("CUSTOMER".into(), 1), ("TO_BE_IDENTIFIED".into(), 1)])
        );
        let stages: Vec<&str> = r.top.iter().map(|c| c.stage.as_str()).collect();
        assert_eq!(stages, ["CUSTOMER", "TO_BE_IDENTIFIED"]);
    }

    #[test]
    fn margin_scales_the_future_part_of_the_clv_only() {
        let r = build(
            &fixture(),
            &ValueOptions {
                margin: Decimal::new(5, 1),
                all_contacts: true,
                ..options()
            },
        );
        let k1 = r.top.iter().find(|c| c.id == "k1").unwrap();
        assert_eq!(k1.clv, "990.00");
        // Every contact is listed, the prospect too, without a tier.
        assert_eq!(r.top.len(), 6);
        assert_eq!(r.top[5].tier, "");
        assert_eq!(r.top[5].value, "-2.00");
    }

    #[test]
    fn quintiles_score_the_best_fifth_five_and_ties_alike() {
        let values = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100];
        assert_eq!(
            quintiles(&values, |a, b| b.cmp(a)),
            [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
        );
        let ties = [5, 5, 5, 1, 1];
        assert_eq!(quintiles(&ties, |a, b| b.cmp(a)), [5, 5, 5, 2, 2]);
    }
}
