//! Campaign counters as a fold of effects: the measurement projections of the log.
//!
//! The engine (live, in replay, and in a simulation) calls [`record`] for every effect of
//! every step, in log order, so the counters are a function of the log and replay rebuilds
//! them exactly.
//! Money is kept as decimal strings in the counters (their stored form) and added exactly.

use std::{collections::BTreeMap, str::FromStr};

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::{
    machine::{CapOutcome, Effect, Engagement, Input, LeadChange, Shares, Spending},
    time::{DAY_MILLIS, UnixMillis},
    validate::kind_name,
};

/// Upper bounds (exclusive, milliseconds) of the input-to-action latency buckets; one more
/// bucket holds everything slower.
pub const LATENCY_BOUNDS_MS: [u64; 20] = [
    1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, 30_000, 60_000, 300_000,
    900_000, 3_600_000, 21_600_000, 86_400_000,
];

/// Counters by campaign id say what each campaign spent.
impl Spending for BTreeMap<String, v1::CampaignCounters> {
    fn spent(&self, campaign_id: &str) -> Decimal {
        self.get(campaign_id)
            .map_or(Decimal::ZERO, |c| money(&c.cost))
    }
}

/// Counts every effect of a step into the counters of the campaign it concerns.
pub fn record_all(
    counters: &mut BTreeMap<String, v1::CampaignCounters>,
    effects: &[Effect],
    cause: &Cause,
) {
    for effect in effects.iter().filter(|e| e.counted()) {
        let c = counters
            .entry(effect.campaign_id().to_string())
            .or_default();
        record(c, effect, cause);
    }
}

/// Adds `amount` to a decimal string (empty counts as zero).
pub fn add_money(total: &mut String, amount: Decimal) {
    if amount.is_zero() && !total.is_empty() {
        return;
    }
    let sum = money(total) + amount;
    *total = sum.normalize().to_string();
}

/// Decimals of the minor unit of `currency` (ISO 4217: 2 for EUR, 0 for JPY, 3 for KWD); 2
/// for a currency not known or not given.
#[must_use]
pub fn minor_units(currency: &str) -> u32 {
    iso_currency::Currency::from_code(currency)
        .and_then(iso_currency::Currency::exponent)
        .map_or(2, u32::from)
}

/// `amount` split into `parts` shares in whole minor units: each share rounded toward zero
/// to `decimals`, and the remainder of the split (what that rounding left) on the last, so
/// the shares add up to `amount` exactly.
#[must_use]
pub fn split_money(amount: Decimal, parts: usize, decimals: u32) -> (Decimal, Decimal) {
    let parts = Decimal::from(parts.max(1));
    let share =
        (amount / parts).round_dp_with_strategy(decimals, rust_decimal::RoundingStrategy::ToZero);
    (share, amount - share * (parts - Decimal::ONE))
}

/// A decimal string as a number (empty or malformed counts as zero).
#[must_use]
pub fn money(text: &str) -> Decimal {
    Decimal::from_str(text).unwrap_or_default()
}

/// The UTC calendar day of an instant, `YYYY-MM-DD`.
#[must_use]
pub fn utc_day(at: UnixMillis) -> String {
    // Howard Hinnant's days-to-civil algorithm.
    let z = at.0.div_euclid(DAY_MILLIS) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

/// The latency bucket of a span in milliseconds.
#[must_use]
pub fn latency_bucket(millis: u64) -> usize {
    LATENCY_BOUNDS_MS
        .iter()
        .position(|bound| millis < *bound)
        .unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// The smallest bucket bound at or below which `quantile` (0..=1) of the counted latencies
/// fall; `None` without any count, `u64::MAX` when it falls in the open last bucket.
#[must_use]
pub fn latency_quantile(buckets: &[u64], quantile: f64) -> Option<u64> {
    bucket_quantile(buckets, &LATENCY_BOUNDS_MS, quantile)
}

/// Upper bounds (exclusive, ms) of the buckets of the time from a campaign's last touch to
/// the conversion credited to it: an hour, six hours, then days 1, 2, 3, 7, 14, 30, 60, 90.
pub const CONVERSION_BOUNDS_MS: [u64; 10] = [
    3_600_000,
    21_600_000,
    86_400_000,
    172_800_000,
    259_200_000,
    604_800_000,
    1_209_600_000,
    2_592_000_000,
    5_184_000_000,
    7_776_000_000,
];

/// The smallest bound of `bounds` at or below which `quantile` (0..=1) of what `buckets`
/// counted falls; `None` without any count, `u64::MAX` in the open last bucket.
#[must_use]
pub fn bucket_quantile(buckets: &[u64], bounds: &[u64], quantile: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    // Rank of the quantile among the counted latencies, 1-based (nearest-rank method).
    #[allow(
        clippy::cast_precision_loss,
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss
    )]
    let rank = ((quantile * total as f64).ceil() as u64).clamp(1, total);
    let mut seen = 0;
    for (i, count) in buckets.iter().enumerate() {
        seen += count;
        if seen >= rank {
            return Some(bounds.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    None
}

/// Adds a credit by model to `to` and counts it as a conversion.
fn add_shares(to: &mut v1::Attribution, shares: &Shares) {
    add_credit(to, shares);
    to.conversions += 1;
}

/// Adds a credit by model to `to`, counting no conversion.
fn add_credit(to: &mut v1::Attribution, shares: &Shares) {
    add_money(&mut to.last_touch, shares.last_touch);
    add_money(&mut to.first_touch, shares.first_touch);
    add_money(&mut to.linear, shares.linear);
}

/// The step whose effects are recorded: what caused it and when it was applied.
#[derive(Debug, Clone, Default)]
pub struct Cause {
    /// When the event that caused it happened (event time), if an event did.
    pub event_at: Option<UnixMillis>,
    /// Processing time of the step.
    pub now: UnixMillis,
    /// Its UTC day, computed once per step.
    day: String,
}

impl Cause {
    /// The step applying `input` at processing time `now`.
    #[must_use]
    pub fn of(input: &Input<'_>, now: UnixMillis) -> Self {
        Self {
            event_at: match input {
                Input::Event(e) => e.occurred_at.as_ref().map(UnixMillis::from_proto),
                _ => None,
            },
            now,
            day: utc_day(now),
        }
    }
}

fn day<'a>(c: &'a mut v1::CampaignCounters, day: &str) -> &'a mut v1::DayCounters {
    if !c.days.contains_key(day) {
        c.days.insert(day.to_string(), v1::DayCounters::default());
    }
    c.days.get_mut(day).expect("inserted above")
}

/// Counts one effect into the counters of the campaign it concerns (`counters` of
/// [`Effect::campaign_id`]).
pub fn record(c: &mut v1::CampaignCounters, effect: &Effect, cause: &Cause) {
    let now = cause.now;
    match effect {
        Effect::Enrolled {
            variant, holdout, ..
        } => {
            c.enrollments += 1;
            let arm = if *holdout {
                c.holdouts += 1;
                crate::machine::HOLDOUT_GROUP
            } else {
                variant.as_str()
            };
            c.arms.entry(arm.to_string()).or_default().enrolled += 1;
            day(c, &cause.day).enrollments += 1;
        }
        Effect::StateEntered { from, to, .. } => {
            c.state_entries += 1;
            let state = c.states.entry(to.clone()).or_default();
            state.entries += 1;
            state.active += 1;
            if let Some(from) = from {
                leave(c, from);
            }
            let key = format!("{}>{to}", from.as_deref().unwrap_or_default());
            *c.transitions.entry(key).or_default() += 1;
            let entries = &mut day(c, &cause.day).entries;
            match entries.get_mut(to) {
                Some(n) => *n += 1,
                None => {
                    entries.insert(to.clone(), 1);
                }
            }
        }
        Effect::GoalReached { first: false, .. } => {}
        Effect::GoalReached { arm, .. } => {
            c.goals += 1;
            c.arms.entry(arm.clone()).or_default().goals += 1;
            day(c, &cause.day).goals += 1;
        }
        Effect::Completed { state, .. } | Effect::Stopped { state, .. } => {
            if matches!(effect, Effect::Completed { first: true, .. }) {
                c.completions += 1;
            }
            leave(c, state);
        }
        Effect::Migrated {
            from_state,
            to_state,
            ..
        } => {
            leave(c, from_state);
            c.states.entry(to_state.clone()).or_default().active += 1;
        }
        Effect::ConditionFailed { .. } => c.condition_failures += 1,
        Effect::Action(action) => {
            c.actions += 1;
            let cost = money(&action.cost);
            add_money(&mut c.cost, cost);
            let kind = c
                .kinds
                .entry(kind_name(action.kind()).to_string())
                .or_default();
            kind.emitted += 1;
            add_money(&mut kind.cost, cost);
            let template = c
                .templates
                .entry(crate::materials::counted_as(action))
                .or_default();
            template.emitted += 1;
            add_money(&mut template.cost, cost);
            let today = day(c, &cause.day);
            today.actions += 1;
            add_money(&mut today.cost, cost);
            if let Some(event_at) = cause.event_at {
                let millis = u64::try_from(now.0.saturating_sub(event_at.0)).unwrap_or(0);
                let bucket = latency_bucket(millis);
                if c.latency_buckets.len() <= LATENCY_BOUNDS_MS.len() {
                    c.latency_buckets.resize(LATENCY_BOUNDS_MS.len() + 1, 0);
                }
                c.latency_buckets[bucket] += 1;
            }
        }
        Effect::Withheld { kind, .. } => {
            c.over_budget += 1;
            c.kinds
                .entry(kind_name(*kind).to_string())
                .or_default()
                .over_budget += 1;
            if c.budget_exhausted_at.is_none() {
                c.budget_exhausted_at = Some(now.to_proto());
            }
        }
        Effect::Confirmed {
            kind,
            template,
            outcome,
            ..
        } => {
            record_outcome(c, *kind, *outcome, true);
            // Delivered as `record_outcome` counts it: whatever did not fail or bounce.
            if !matches!(
                outcome,
                v1::DeliveryOutcome::Failed | v1::DeliveryOutcome::Bounced
            ) {
                day(c, &cause.day).delivered += 1;
                if *kind != v1::ActionKind::Unspecified {
                    c.templates.entry(template.clone()).or_default().delivered += 1;
                }
            }
        }
        Effect::Engaged {
            kind,
            template,
            engagement,
            unique,
            ..
        } => {
            count_engagement(c.engagement.get_or_insert_default(), *engagement, *unique);
            let today = day(c, &cause.day);
            count_engagement(
                today.engagement.get_or_insert_default(),
                *engagement,
                *unique,
            );
            // Of no known message: the campaign's totals only.
            if *kind != v1::ActionKind::Unspecified {
                let k = c.kinds.entry(kind_name(*kind).to_string()).or_default();
                count_engagement(k.engagement.get_or_insert_default(), *engagement, *unique);
                let t = c.templates.entry(template.clone()).or_default();
                count_engagement(t.engagement.get_or_insert_default(), *engagement, *unique);
            }
        }
        Effect::Reached { arm, .. } => {
            c.reached += 1;
            c.arms.entry(arm.clone()).or_default().reached += 1;
        }
        Effect::Attributed {
            shares,
            templates,
            since_touch,
            ..
        } => {
            let bucket = CONVERSION_BOUNDS_MS
                .iter()
                .position(|bound| *since_touch < *bound)
                .unwrap_or(CONVERSION_BOUNDS_MS.len());
            if c.conversion_buckets.len() <= CONVERSION_BOUNDS_MS.len() {
                c.conversion_buckets.resize(CONVERSION_BOUNDS_MS.len() + 1, 0);
            }
            c.conversion_buckets[bucket] += 1;
            let total = shares
                .iter()
                .fold(Shares::default(), |sum, (_, s)| sum.plus(s));
            add_shares(c.attribution.get_or_insert_default(), &total);
            let today = day(c, &cause.day);
            add_money(&mut today.revenue, total.last_touch);
            today.conversions += 1;
            for (kind, s) in shares {
                let k = c.kinds.entry(kind_name(*kind).to_string()).or_default();
                add_shares(k.attribution.get_or_insert_default(), s);
            }
            for (template, s) in templates {
                let t = c.templates.entry(template.clone()).or_default();
                add_shares(t.attribution.get_or_insert_default(), s);
            }
        }
        Effect::Capped { outcome, .. } => {
            let k = c.capped.get_or_insert_default();
            match outcome {
                CapOutcome::Deferred { .. } => k.deferred += 1,
                CapOutcome::Dropped(_) => k.dropped += 1,
                CapOutcome::Expired => k.expired += 1,
                CapOutcome::SentLate => k.sent_late += 1,
            }
        }
        Effect::Lead { owner, change, .. } => {
            let l = c.leads.get_or_insert_default();
            let mut mine = std::mem::take(l.owners.entry(owner.clone()).or_default());
            match change {
                LeadChange::Opened(_) => {
                    l.opened += 1;
                    mine.assigned += 1;
                }
                LeadChange::Accepted => {
                    l.accepted += 1;
                    mine.accepted += 1;
                }
                LeadChange::Breached => {
                    l.breached += 1;
                    mine.breached += 1;
                }
                LeadChange::Won(amount) => {
                    l.won += 1;
                    add_money(&mut l.won_amount, *amount);
                    mine.won += 1;
                    add_money(&mut mine.won_amount, *amount);
                }
                LeadChange::Lost => {
                    l.lost += 1;
                    mine.lost += 1;
                }
                LeadChange::Reassigned { from, .. } => {
                    l.reassigned += 1;
                    mine.reassigned_in += 1;
                    l.owners.entry(from.clone()).or_default().reassigned_out += 1;
                }
                LeadChange::LateAcceptance => l.late_acceptances += 1,
            }
            l.owners.insert(owner.clone(), mine);
        }
        Effect::ArmPurchase {
            arm, amount, first, ..
        } => {
            let a = c.arms.entry(arm.clone()).or_default();
            if *first {
                a.converted += 1;
            }
            add_money(&mut a.revenue, *amount);
        }
        // Not counted (`Effect::counted`).
        Effect::EnrollmentSkipped { .. }
        | Effect::ScheduleTimer { .. }
        | Effect::CancelTimer { .. }
        | Effect::Fault { .. }
        // The engine's totals (`InputCounters`), not a campaign's.
        | Effect::Revenue { .. } => {}
    }
}

/// Counts the outcome an action's acknowledgement reports.
pub fn record_outcome(
    c: &mut v1::CampaignCounters,
    kind: v1::ActionKind,
    outcome: v1::DeliveryOutcome,
    executed: bool,
) {
    // An outcome of no known kind counts in the campaign's totals only: no kind row of its own.
    let mut unnamed = v1::KindCounters::default();
    let k = if kind == v1::ActionKind::Unspecified {
        &mut unnamed
    } else {
        c.kinds.entry(kind_name(kind).to_string()).or_default()
    };
    match outcome {
        v1::DeliveryOutcome::Failed => {
            k.failed += 1;
            c.failed += 1;
        }
        v1::DeliveryOutcome::Bounced => {
            k.bounced += 1;
            c.failed += 1;
        }
        _ if !executed => k.handed_off += 1,
        _ => {
            k.delivered += 1;
            c.delivered += 1;
        }
    }
}

fn count_engagement(e: &mut v1::EngagementCounters, engagement: Engagement, unique: bool) {
    let unique = u64::from(unique);
    match engagement {
        Engagement::Opened => {
            e.opens += 1;
            e.unique_opens += unique;
        }
        Engagement::Clicked => {
            e.clicks += 1;
            e.unique_clicks += unique;
        }
        Engagement::Unsubscribed => e.unsubscribes += 1,
        Engagement::SpamReported => e.spam_reports += 1,
    }
}

/// Adds one set of engagement counters to another.
fn merge_engagement(
    to: &mut Option<v1::EngagementCounters>,
    other: Option<&v1::EngagementCounters>,
) {
    let Some(o) = other else { return };
    let to = to.get_or_insert_default();
    to.opens += o.opens;
    to.unique_opens += o.unique_opens;
    to.clicks += o.clicks;
    to.unique_clicks += o.unique_clicks;
    to.unsubscribes += o.unsubscribes;
    to.spam_reports += o.spam_reports;
}

fn leave(c: &mut v1::CampaignCounters, state: &str) {
    if let Some(s) = c.states.get_mut(state) {
        s.active = s.active.saturating_sub(1);
    }
}

/// Adds the counters one partition kept for a campaign to those of the others: every count
/// and amount summed, the first exhaustion of the budget kept. Counters summed over the
/// partitions are the counters one partition would have kept for the same steps.
pub fn merge(into: &mut v1::CampaignCounters, other: &v1::CampaignCounters) {
    into.enrollments += other.enrollments;
    into.holdouts += other.holdouts;
    into.state_entries += other.state_entries;
    into.goals += other.goals;
    into.completions += other.completions;
    into.actions += other.actions;
    into.delivered += other.delivered;
    into.failed += other.failed;
    into.condition_failures += other.condition_failures;
    add_text(&mut into.cost, &other.cost);
    for (kind, k) in &other.kinds {
        let to = into.kinds.entry(kind.clone()).or_default();
        to.emitted += k.emitted;
        to.delivered += k.delivered;
        to.bounced += k.bounced;
        to.failed += k.failed;
        to.handed_off += k.handed_off;
        to.over_budget += k.over_budget;
        add_text(&mut to.cost, &k.cost);
        merge_attribution(&mut to.attribution, k.attribution.as_ref());
        merge_engagement(&mut to.engagement, k.engagement.as_ref());
    }
    for (template, t) in &other.templates {
        let to = into.templates.entry(template.clone()).or_default();
        merge_attribution(&mut to.attribution, t.attribution.as_ref());
        to.emitted += t.emitted;
        to.delivered += t.delivered;
        add_text(&mut to.cost, &t.cost);
        merge_engagement(&mut to.engagement, t.engagement.as_ref());
    }
    merge_engagement(&mut into.engagement, other.engagement.as_ref());
    for (state, s) in &other.states {
        let to = into.states.entry(state.clone()).or_default();
        to.entries += s.entries;
        to.active += s.active;
    }
    for (edge, n) in &other.transitions {
        *into.transitions.entry(edge.clone()).or_default() += n;
    }
    for (arm, a) in &other.arms {
        let to = into.arms.entry(arm.clone()).or_default();
        to.enrolled += a.enrolled;
        to.goals += a.goals;
        to.converted += a.converted;
        add_text(&mut to.revenue, &a.revenue);
        to.reached += a.reached;
    }
    for (date, d) in &other.days {
        let to = into.days.entry(date.clone()).or_default();
        to.enrollments += d.enrollments;
        for (state, n) in &d.entries {
            *to.entries.entry(state.clone()).or_default() += n;
        }
        to.goals += d.goals;
        to.actions += d.actions;
        to.delivered += d.delivered;
        merge_engagement(&mut to.engagement, d.engagement.as_ref());
        add_text(&mut to.cost, &d.cost);
        add_text(&mut to.revenue, &d.revenue);
        to.conversions += d.conversions;
    }
    merge_attribution(&mut into.attribution, other.attribution.as_ref());
    into.reached += other.reached;
    into.over_budget += other.over_budget;
    into.budget_exhausted_at = match (into.budget_exhausted_at, other.budget_exhausted_at) {
        (Some(a), Some(b)) => Some(if b < a { b } else { a }),
        (a, b) => a.or(b),
    };
    if into.latency_buckets.len() < other.latency_buckets.len() {
        into.latency_buckets.resize(other.latency_buckets.len(), 0);
    }
    for (to, n) in into.latency_buckets.iter_mut().zip(&other.latency_buckets) {
        *to += n;
    }
    if into.conversion_buckets.len() < other.conversion_buckets.len() {
        into.conversion_buckets
            .resize(other.conversion_buckets.len(), 0);
    }
    for (to, n) in into
        .conversion_buckets
        .iter_mut()
        .zip(&other.conversion_buckets)
    {
        *to += n;
    }
    if let Some(l) = &other.leads {
        let to = into.leads.get_or_insert_default();
        to.opened += l.opened;
        to.accepted += l.accepted;
        to.breached += l.breached;
        to.won += l.won;
        to.lost += l.lost;
        add_text(&mut to.won_amount, &l.won_amount);
        to.reassigned += l.reassigned;
        to.late_acceptances += l.late_acceptances;
        merge_owners(&mut to.owners, &l.owners);
    }
    if let Some(c) = &other.capped {
        let to = into.capped.get_or_insert_default();
        to.deferred += c.deferred;
        to.dropped += c.dropped;
        to.expired += c.expired;
        to.sent_late += c.sent_late;
    }
}

/// Counts revenue that arrived in the engine's totals, with what campaigns were credited.
pub fn record_revenue(inputs: &mut v1::InputCounters, amount: Decimal, credited: &Shares) {
    add_money(&mut inputs.revenue, amount);
    inputs.revenue_events += 1;
    let to = inputs.credited.get_or_insert_default();
    if *credited == Shares::default() {
        add_credit(to, credited);
    } else {
        add_shares(to, credited);
    }
}

/// Adds one partition's input counters to those of the others.
pub fn merge_inputs(into: &mut v1::InputCounters, other: &v1::InputCounters) {
    into.late_events += other.late_events;
    add_text(&mut into.revenue, &other.revenue);
    into.revenue_events += other.revenue_events;
    merge_attribution(&mut into.credited, other.credited.as_ref());
    if let Some(w) = &other.workload {
        crate::assignment::merge(into.workload.get_or_insert_default(), w);
    }
}

/// Adds one set of per-owner lead counters to another (partitions, or campaigns).
pub fn merge_owners(
    into: &mut BTreeMap<String, v1::OwnerLeads>,
    other: &BTreeMap<String, v1::OwnerLeads>,
) {
    for (owner, o) in other {
        let mine = into.entry(owner.clone()).or_default();
        mine.assigned += o.assigned;
        mine.reassigned_in += o.reassigned_in;
        mine.reassigned_out += o.reassigned_out;
        mine.accepted += o.accepted;
        mine.breached += o.breached;
        mine.won += o.won;
        mine.lost += o.lost;
        add_text(&mut mine.won_amount, &o.won_amount);
    }
}

fn merge_attribution(to: &mut Option<v1::Attribution>, other: Option<&v1::Attribution>) {
    let Some(other) = other else { return };
    let to = to.get_or_insert_default();
    add_text(&mut to.last_touch, &other.last_touch);
    add_text(&mut to.first_touch, &other.first_touch);
    add_text(&mut to.linear, &other.linear);
    to.conversions += other.conversions;
}

/// Adds a decimal string to another; an empty one (never written) changes nothing.
fn add_text(total: &mut String, amount: &str) {
    if !amount.is_empty() {
        add_money(total, money(amount));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_are_utc_calendar_days() {
        assert_eq!(utc_day(UnixMillis(0)), "1970-01-01");
        assert_eq!(utc_day(UnixMillis(1_767_225_600_000)), "2026-01-01");
        assert_eq!(utc_day(UnixMillis(1_767_225_600_000 - 1)), "2025-12-31");
        assert_eq!(utc_day(UnixMillis(1_709_164_800_000)), "2024-02-29");
        assert_eq!(utc_day(UnixMillis(-1)), "1969-12-31");
    }

    #[test]
    fn money_adds_exactly() {
        let mut total = String::new();
        for _ in 0..10 {
            add_money(&mut total, Decimal::from_str("0.1").unwrap());
        }
        assert_eq!(total, "1");
        add_money(&mut total, Decimal::from_str("-0.25").unwrap());
        assert_eq!(total, "0.75");
    }

    #[test]
    fn latency_quantiles_are_bucket_bounds() {
        let mut buckets = vec![0; LATENCY_BOUNDS_MS.len() + 1];
        assert_eq!(latency_quantile(&buckets, 0.5), None);
        // 90 latencies of 3 ms (bucket < 5) and 10 of 700 ms (bucket < 1000).
        buckets[latency_bucket(3)] += 90;
        buckets[latency_bucket(700)] += 10;
        assert_eq!(latency_quantile(&buckets, 0.5), Some(5));
        assert_eq!(latency_quantile(&buckets, 0.9), Some(5));
        assert_eq!(latency_quantile(&buckets, 0.91), Some(1000));
        assert_eq!(latency_quantile(&buckets, 0.99), Some(1000));
        buckets[LATENCY_BOUNDS_MS.len()] += 1000;
        assert_eq!(latency_quantile(&buckets, 0.99), Some(u64::MAX));
    }
}
