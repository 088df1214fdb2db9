//! What contacts did with a campaign's messages and what a conversion cost: engagement
//! rates per campaign, channel and material (template), unit economics, and week and month
//! roll-ups with the change against the period before.
//!
//! Definitions (also in docs/reports.md): *sent* = actions emitted, *delivered* = confirmed
//! delivered; delivery rate = delivered / sent; open rate = unique opens / delivered; click
//! rate = unique clicks / delivered; click-to-open rate = unique clicks / unique opens;
//! unsubscribe and spam rates = unsubscribes or spam reports / delivered. An open or a click
//! is *unique* the first time in an enrollment for one message (kind and template).

use canvass_core::stats::{CONVERSION_BOUNDS_MS, bucket_quantile, money};
use canvass_proto::v1;
use rust_decimal::{Decimal, prelude::ToPrimitive};
use serde::{Deserialize, Serialize};

use crate::{ratio, text};

/// Engagement with a set of messages.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EngagementRow {
    /// Opens.
    pub opens: u64,
    /// Opens counted once per message and enrollment.
    pub unique_opens: u64,
    /// Clicks.
    pub clicks: u64,
    /// Clicks counted once per message and enrollment.
    pub unique_clicks: u64,
    /// Unsubscribes.
    pub unsubscribes: u64,
    /// Spam complaints.
    pub spam_reports: u64,
    /// delivered / sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivery_rate: Option<f64>,
    /// unique opens / delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub open_rate: Option<f64>,
    /// unique clicks / delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_rate: Option<f64>,
    /// unique clicks / unique opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub click_to_open_rate: Option<f64>,
    /// unsubscribes / delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unsubscribe_rate: Option<f64>,
    /// spam reports / delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spam_rate: Option<f64>,
}

/// The engagement row of counters `e` over `sent` messages of which `delivered` arrived.
#[must_use]
pub fn row(e: Option<&v1::EngagementCounters>, sent: u64, delivered: u64) -> EngagementRow {
    let e = e.copied().unwrap_or_default();
    EngagementRow {
        opens: e.opens,
        unique_opens: e.unique_opens,
        clicks: e.clicks,
        unique_clicks: e.unique_clicks,
        unsubscribes: e.unsubscribes,
        spam_reports: e.spam_reports,
        delivery_rate: ratio(delivered, sent),
        open_rate: ratio(e.unique_opens, delivered),
        click_rate: ratio(e.unique_clicks, delivered),
        click_to_open_rate: ratio(e.unique_clicks, e.unique_opens),
        unsubscribe_rate: ratio(e.unsubscribes, delivered),
        spam_rate: ratio(e.spam_reports, delivered),
    }
}

/// One material (template, or one version of a catalog material) of a campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct MaterialRow {
    /// What the row counts: the template, or `id@vN` for a catalog material's version.
    pub material: String,
    /// The template ("" for actions without one); a catalog material's id.
    pub template: String,
    /// The catalog material's version sent; none for a template outside the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u32>,
    /// Actions sent with it.
    pub sent: u64,
    /// Confirmed delivered.
    pub delivered: u64,
    /// Their cost.
    pub cost: String,
    /// What contacts did with it.
    pub engagement: EngagementRow,
    /// Purchases and won opportunities its actions were credited with (any model).
    pub conversions: u64,
    /// Revenue credited to its actions under the report's model.
    pub revenue: String,
}

/// The campaign's materials, by template and version; revenue under `model`.
#[must_use]
pub fn materials(c: &v1::CampaignCounters, model: crate::Model) -> Vec<MaterialRow> {
    c.templates
        .iter()
        .map(|(key, t)| {
            let (template, version) = canvass_core::materials::parse_counted(key);
            MaterialRow {
                material: key.clone(),
                template: template.to_string(),
                version,
                sent: t.emitted,
                delivered: t.delivered,
                cost: text(money(&t.cost)),
                engagement: row(t.engagement.as_ref(), t.emitted, t.delivered),
                conversions: t.attribution.as_ref().map_or(0, |a| a.conversions),
                revenue: text(model.pick(t.attribution.as_ref())),
            }
        })
        .collect()
}

/// What a conversion cost and brought.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Economics {
    /// Total cost / conversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_per_conversion: Option<String>,
    /// Revenue / total cost (ROAS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub return_on_spend: Option<f64>,
    /// Revenue / conversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub average_order_value: Option<String>,
    /// Revenue / treated contacts (enrolled, not held out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue_per_recipient: Option<String>,
    /// Median time from the campaign's last touch to a conversion credited to it, as the
    /// upper bound of its bucket (ms); `u64::MAX` means longer than 90 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_convert_p50_ms: Option<u64>,
    /// 90th percentile, likewise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_to_convert_p90_ms: Option<u64>,
}

/// The unit economics of `revenue` from `conversions` at `cost` over `treated` contacts, in
/// a currency of `decimals` minor digits, and the time to convert from the counted buckets.
#[must_use]
pub fn economics(
    revenue: Decimal,
    conversions: u64,
    cost: Decimal,
    treated: u64,
    decimals: u32,
    conversion_buckets: &[u64],
) -> Economics {
    let delay = |q| bucket_quantile(conversion_buckets, &CONVERSION_BOUNDS_MS, q);
    let per = |amount: Decimal, n: u64| {
        (n > 0).then(|| text((amount / Decimal::from(n)).round_dp(decimals)))
    };
    Economics {
        cost_per_conversion: per(cost, conversions),
        return_on_spend: (cost > Decimal::ZERO)
            .then(|| (revenue / cost).to_f64())
            .flatten(),
        average_order_value: per(revenue, conversions),
        revenue_per_recipient: per(revenue, treated),
        time_to_convert_p50_ms: delay(0.5),
        time_to_convert_p90_ms: delay(0.9),
    }
}

/// A roll-up of days.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rollup {
    /// ISO weeks, `2026-W14`.
    Week,
    /// Calendar months, `2026-04`.
    Month,
}

/// One week or month of a campaign.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PeriodRow {
    /// `2026-W14` or `2026-04` (UTC, processing time).
    pub period: String,
    /// Enrollments.
    pub enrollments: u64,
    /// Actions sent.
    pub sent: u64,
    /// Confirmed delivered.
    pub delivered: u64,
    /// Unique opens.
    pub unique_opens: u64,
    /// Unique clicks.
    pub unique_clicks: u64,
    /// Goal states reached.
    pub goals: u64,
    /// Conversions credited.
    pub conversions: u64,
    /// Direct cost.
    pub cost: String,
    /// Revenue credited (last touch).
    pub revenue: String,
    /// Change of each count against the period before, as a fraction (0.25 = 25 % more);
    /// absent for the first period and where the one before had none.
    pub change: Change,
}

/// Relative changes against the period before.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Change {
    /// Enrollments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enrollments: Option<f64>,
    /// Actions sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent: Option<f64>,
    /// Unique opens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_opens: Option<f64>,
    /// Unique clicks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_clicks: Option<f64>,
    /// Conversions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversions: Option<f64>,
    /// Revenue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revenue: Option<f64>,
}

fn period_of(day: &str, rollup: Rollup) -> String {
    match (rollup, chrono::NaiveDate::parse_from_str(day, "%Y-%m-%d")) {
        (Rollup::Week, Ok(date)) => {
            let week = chrono::Datelike::iso_week(&date);
            format!("{}-W{:02}", week.year(), week.week())
        }
        // A day key is always `YYYY-MM-DD`; its first seven characters are the month.
        _ => day.chars().take(7).collect(),
    }
}

fn change(now: u64, before: u64) -> Option<f64> {
    #[allow(clippy::cast_precision_loss)]
    (before > 0).then(|| (now as f64 - before as f64) / before as f64)
}

fn money_change(now: Decimal, before: Decimal) -> Option<f64> {
    (before > Decimal::ZERO)
        .then(|| ((now - before) / before).to_f64())
        .flatten()
}

/// The campaign's days rolled up into weeks or months, oldest first, each with its change
/// against the one before (the calendar period before, which is zero when nothing happened
/// in it).
#[must_use]
pub fn periods(c: &v1::CampaignCounters, rollup: Rollup) -> Vec<PeriodRow> {
    let mut sums: std::collections::BTreeMap<String, (v1::DayCounters, Decimal, Decimal)> =
        std::collections::BTreeMap::new();
    for (day, d) in &c.days {
        let (to, cost, revenue) = sums.entry(period_of(day, rollup)).or_default();
        to.enrollments += d.enrollments;
        to.actions += d.actions;
        to.delivered += d.delivered;
        to.goals += d.goals;
        to.conversions += d.conversions;
        let e = d.engagement.unwrap_or_default();
        let into = to.engagement.get_or_insert_default();
        into.unique_opens += e.unique_opens;
        into.unique_clicks += e.unique_clicks;
        *cost += money(&d.cost);
        *revenue += money(&d.revenue);
    }
    let mut out: Vec<PeriodRow> = Vec::new();
    let mut previous: Option<(String, v1::DayCounters, Decimal)> = None;
    for (period, (d, cost, revenue)) in sums {
        let e = d.engagement.unwrap_or_default();
        // The period just before, or nothing (a gap means it had no activity).
        let before = previous
            .as_ref()
            .filter(|(p, _, _)| *p == previous_period(&period, rollup));
        let change = before.map_or_else(Change::default, |(_, b, b_revenue)| {
            let be = b.engagement.unwrap_or_default();
            Change {
                enrollments: change(d.enrollments, b.enrollments),
                sent: change(d.actions, b.actions),
                unique_opens: change(e.unique_opens, be.unique_opens),
                unique_clicks: change(e.unique_clicks, be.unique_clicks),
                conversions: change(d.conversions, b.conversions),
                revenue: money_change(revenue, *b_revenue),
            }
        });
        out.push(PeriodRow {
            period: period.clone(),
            enrollments: d.enrollments,
            sent: d.actions,
            delivered: d.delivered,
            unique_opens: e.unique_opens,
            unique_clicks: e.unique_clicks,
            goals: d.goals,
            conversions: d.conversions,
            cost: text(cost),
            revenue: text(revenue),
            change,
        });
        previous = Some((period, d, revenue));
    }
    out
}

/// The week or month before `period`.
fn previous_period(period: &str, rollup: Rollup) -> String {
    match rollup {
        Rollup::Week => {
            let monday = chrono::NaiveDate::parse_from_str(&format!("{period}-1"), "%G-W%V-%u");
            monday.map_or_else(
                |_| String::new(),
                |m| {
                    period_of(
                        &(m - chrono::Duration::days(7))
                            .format("%Y-%m-%d")
                            .to_string(),
                        Rollup::Week,
                    )
                },
            )
        }
        Rollup::Month => {
            let (year, month) = period.split_once('-').unwrap_or_default();
            let (year, month): (i32, u32) = (year.parse().unwrap_or(0), month.parse().unwrap_or(1));
            if month == 1 {
                format!("{}-12", year - 1)
            } else {
                format!("{year:04}-{:02}", month - 1)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weeks_are_iso_weeks_and_months_calendar_months() {
        assert_eq!(period_of("2026-01-01", Rollup::Week), "2026-W01");
        assert_eq!(period_of("2027-01-01", Rollup::Week), "2026-W53");
        assert_eq!(period_of("2026-04-30", Rollup::Month), "2026-04");
        assert_eq!(previous_period("2026-W01", Rollup::Week), "2025-W52");
        assert_eq!(previous_period("2027-W01", Rollup::Week), "2026-W53");
        assert_eq!(previous_period("2026-01", Rollup::Month), "2025-12");
        assert_eq!(previous_period("2026-10", Rollup::Month), "2026-09");
    }

    #[test]
    fn rates_over_nothing_say_no_data() {
        let r = row(None, 0, 0);
        assert_eq!(
            (r.delivery_rate, r.open_rate, r.click_to_open_rate),
            (None, None, None)
        );
        let e = economics(Decimal::ZERO, 0, Decimal::ZERO, 0, 2, &[]);
        assert_eq!(e.cost_per_conversion, None);
        assert_eq!(e.return_on_spend, None);
    }
}
