//! The CEL view of contacts, events, journey states and campaigns.
//!
//! JSON numbers that are whole (and exactly representable) become CEL `int`, others
//! `double`, so that `event.attrs.rating == 4` holds for a rating written as `4`.

use std::{collections::HashMap, str::FromStr};

use canvass_proto::{v1, wkt};
use cel::Value;
use rust_decimal::{Decimal, prelude::ToPrimitive};

use crate::{
    policy::Policy,
    time::{DAY_MILLIS, UnixMillis},
};

/// Largest integer a double holds exactly (2^53).
const EXACT_INT_LIMIT: f64 = 9_007_199_254_740_992.0;

fn string(s: &str) -> Value {
    Value::String(s.to_string().into())
}

fn map<const N: usize>(entries: [(&str, Value); N]) -> Value {
    let m: HashMap<String, Value> = entries
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
    Value::from(m)
}

/// A protobuf `Struct` (free-form attributes) as a CEL map.
#[must_use]
pub fn struct_value(s: Option<&wkt::Struct>) -> Value {
    let m: HashMap<String, Value> = s
        .map(|s| {
            s.fields
                .iter()
                .map(|(k, v)| (k.clone(), json_value(v)))
                .collect()
        })
        .unwrap_or_default();
    Value::from(m)
}

fn json_value(v: &wkt::Value) -> Value {
    use wkt::value::Kind;
    match &v.kind {
        None | Some(Kind::NullValue(_)) => Value::Null,
        Some(Kind::BoolValue(b)) => Value::Bool(*b),
        Some(Kind::NumberValue(n)) => number(*n),
        Some(Kind::StringValue(s)) => string(s),
        Some(Kind::ListValue(l)) => {
            Value::List(l.values.iter().map(json_value).collect::<Vec<_>>().into())
        }
        Some(Kind::StructValue(s)) => struct_value(Some(s)),
    }
}

fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < EXACT_INT_LIMIT {
        // Whole and exact by the check above: the cast loses nothing.
        #[allow(clippy::cast_possible_truncation)]
        Value::Int(n as i64)
    } else {
        Value::Float(n)
    }
}

/// A decimal amount as a CEL double (amounts are compared, not summed, in conditions).
fn amount(s: &str) -> Value {
    Decimal::from_str(s)
        .ok()
        .and_then(|d| d.to_f64())
        .map_or(Value::Null, Value::Float)
}

/// The contact as CEL sees it, with behavioural fields derived at `now`:
/// `purchase_count`, `total_spent`, `days_since_last_purchase` (absent without purchases),
/// `value` (revenue minus cost of goods and `marketing_cost`), and by the policy `tier`
/// ("A".."D", "" without purchases) and `churned`.
#[must_use]
pub fn contact_value(
    c: &v1::Contact,
    now: UnixMillis,
    policy: &Policy,
    marketing_cost: &str,
) -> Value {
    let mut purchases = Vec::with_capacity(c.purchases.len());
    let mut total = Decimal::ZERO;
    let mut cost_of_goods = Decimal::ZERO;
    let mut last: Option<UnixMillis> = None;
    for p in &c.purchases {
        let at = p.at.as_ref().map(UnixMillis::from_proto);
        if let Ok(d) = Decimal::from_str(&p.amount) {
            total += d;
        }
        if let Ok(d) = Decimal::from_str(&p.cost) {
            cost_of_goods += d;
        }
        last = last.max(at);
        purchases.push(map([
            ("product", string(&p.product)),
            ("amount", amount(&p.amount)),
            ("order_id", string(&p.order_id)),
            ("at_ms", at.map_or(Value::Null, |t| Value::Int(t.0))),
        ]));
    }
    let stage = crate::stage_name(c.stage());
    let mut m: HashMap<String, Value> = HashMap::from([
        ("id".to_string(), string(&c.id)),
        ("attrs".to_string(), struct_value(c.attrs.as_ref())),
        (
            "tags".to_string(),
            Value::List(c.tags.iter().map(|t| string(t)).collect::<Vec<_>>().into()),
        ),
        ("purchases".to_string(), Value::List(purchases.into())),
        (
            "purchase_count".to_string(),
            Value::Int(i64::try_from(c.purchases.len()).unwrap_or(i64::MAX)),
        ),
        (
            "total_spent".to_string(),
            total.to_f64().map_or(Value::Null, Value::Float),
        ),
        ("stage".to_string(), string(stage)),
        ("source_channel".to_string(), string(&c.source_channel)),
    ]);
    satisfaction_fields(&mut m, c, now);
    if let Some(last) = last {
        m.insert(
            "days_since_last_purchase".to_string(),
            Value::Int((now.0 - last.0).div_euclid(DAY_MILLIS)),
        );
    }
    let value = total - cost_of_goods - Decimal::from_str(marketing_cost).unwrap_or_default();
    let customer = !c.purchases.is_empty();
    m.insert(
        "value".to_string(),
        value.to_f64().map_or(Value::Null, Value::Float),
    );
    m.insert("tier".to_string(), string(policy.tier(customer, value)));
    m.insert(
        "churned".to_string(),
        Value::Bool(last.is_some_and(|l| now.0 - l.0 > policy.churn.0)),
    );
    Value::from(m)
}

/// What the contact said (seed 002): `satisfaction` (the latest survey score, absent without
/// answers), `satisfaction_mean`, `surveys` (answers), `complaints`, `faults`, and
/// `days_since_last_complaint` (absent without complaints).
fn satisfaction_fields(m: &mut HashMap<String, Value>, c: &v1::Contact, now: UnixMillis) {
    let count = |n: usize| Value::Int(i64::try_from(n).unwrap_or(i64::MAX));
    let latest = c
        .surveys
        .iter()
        .enumerate()
        .max_by_key(|(i, s)| (s.at.as_ref().map(UnixMillis::from_proto), *i))
        .map(|(_, s)| s.score);
    if let Some(score) = latest {
        m.insert("satisfaction".to_string(), Value::Int(i64::from(score)));
        let sum: u64 = c.surveys.iter().map(|s| u64::from(s.score)).sum();
        #[allow(clippy::cast_precision_loss)]
        let mean = sum as f64 / c.surveys.len() as f64;
        m.insert("satisfaction_mean".to_string(), Value::Float(mean));
    }
    m.insert("surveys".to_string(), count(c.surveys.len()));
    let of = |kind: v1::IssueKind| c.issues.iter().filter(move |i| i.kind() == kind);
    m.insert(
        "complaints".to_string(),
        count(of(v1::IssueKind::Complaint).count()),
    );
    m.insert(
        "faults".to_string(),
        count(of(v1::IssueKind::Fault).count()),
    );
    if let Some(last) = of(v1::IssueKind::Complaint)
        .filter_map(|i| i.at.as_ref().map(UnixMillis::from_proto))
        .max()
    {
        m.insert(
            "days_since_last_complaint".to_string(),
            Value::Int(now.0.saturating_sub(last.0).div_euclid(DAY_MILLIS)),
        );
    }
}

/// The event as CEL sees it.
#[must_use]
pub fn event_value(e: &v1::TouchpointEvent) -> Value {
    map([
        ("id", string(&e.id)),
        ("type", string(&e.r#type)),
        ("contact_id", string(&e.contact_id)),
        ("attrs", struct_value(e.attrs.as_ref())),
        ("campaign_id", string(&e.campaign_id)),
        ("channel", string(&e.channel)),
        (
            "occurred_at_ms",
            e.occurred_at
                .as_ref()
                .map_or(Value::Null, |t| Value::Int(UnixMillis::from_proto(t).0)),
        ),
    ])
}

/// The contact's journey in the campaign as CEL sees it (`state.id`, `state.response_group`...).
#[must_use]
pub fn state_value(s: &v1::ContactCampaignState, now: UnixMillis) -> Value {
    let entered = s
        .state_entered_at
        .as_ref()
        .map(UnixMillis::from_proto)
        .unwrap_or(now);
    map([
        ("id", string(&s.state)),
        ("response_group", string(&s.response_group)),
        ("variant", string(&s.variant)),
        (
            "entry_seq",
            Value::Int(i64::try_from(s.entry_seq).unwrap_or(i64::MAX)),
        ),
        ("enrollments", Value::Int(i64::from(s.enrollments))),
        (
            "hours_in_state",
            Value::Int((now.0 - entered.0).div_euclid(3_600_000)),
        ),
    ])
}

/// The campaign as CEL sees it.
#[must_use]
pub fn campaign_value(spec: &v1::CampaignSpec) -> Value {
    let labels: HashMap<String, Value> = spec
        .labels
        .iter()
        .map(|(k, v)| (k.clone(), string(v)))
        .collect();
    map([
        ("id", string(&spec.id)),
        ("version", Value::Int(i64::from(spec.version))),
        ("labels", Value::from(labels)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_numbers_become_ints_and_fractions_doubles() {
        assert_eq!(number(4.0), Value::Int(4));
        assert_eq!(number(-2.0), Value::Int(-2));
        assert_eq!(number(4.5), Value::Float(4.5));
        assert_eq!(number(1e300), Value::Float(1e300));
    }

    #[test]
    fn days_since_last_purchase_is_absent_without_purchases() {
        let c = v1::Contact {
            id: "c".into(),
            ..Default::default()
        };
        let Value::Map(m) = contact_value(&c, UnixMillis(0), &Policy::default(), "") else {
            panic!()
        };
        assert!(
            !m.map
                .contains_key(&cel::objects::Key::from("days_since_last_purchase"))
        );
    }
}
