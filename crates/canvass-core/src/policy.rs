//! The engine-wide policy: when a customer is churned, the value thresholds of the tiers,
//! frequency caps across campaigns, quiet hours, sales teams and assignment rules. Set by a
//! logged command, so replay applies the same policy at the same point of the log.

use std::{collections::BTreeMap, str::FromStr};

use canvass_proto::v1;
use chrono::{NaiveTime, TimeZone, Timelike};
use chrono_tz::Tz;
use rust_decimal::Decimal;

use crate::{
    assignment::{self, Rules},
    condition::{CelLimits, standard_env},
    time::{DAY_MILLIS, SpanMillis, UnixMillis},
    validate::{Issue, kind_name},
};

/// Days without purchase that make a churned customer when the policy says nothing.
pub const DEFAULT_CHURN_DAYS: u32 = 90;
/// Contact attribute naming its IANA time zone (quiet hours).
pub const TIME_ZONE_ATTR: &str = "time_zone";

/// Action kinds that reach the customer: those frequency caps and quiet hours govern.
pub const CUSTOMER_FACING: [v1::ActionKind; 5] = [
    v1::ActionKind::Email,
    v1::ActionKind::PostalMail,
    v1::ActionKind::Sms,
    v1::ActionKind::PhoneCall,
    v1::ActionKind::TrialOffer,
];

/// A compiled frequency cap.
#[derive(Debug, Clone, PartialEq)]
pub struct Cap {
    /// The kind it counts; `None`: every customer-facing kind together.
    pub kind: Option<v1::ActionKind>,
    /// Most touches in a window.
    pub max: usize,
    /// The window.
    pub window: SpanMillis,
    /// Drop instead of defer.
    pub drop: bool,
}

/// Compiled quiet hours.
#[derive(Debug, Clone, PartialEq)]
pub struct Quiet {
    /// First quiet hour.
    pub start: u32,
    /// First hour no longer quiet.
    pub end: u32,
    /// Zone of contacts without one.
    pub default_zone: Tz,
    /// Drop instead of defer.
    pub drop: bool,
}

/// The compiled policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// As set (returned by the API, stored).
    pub spec: v1::Policy,
    /// Churn after this long without purchase.
    pub churn: SpanMillis,
    /// Tier thresholds A, B, C.
    pub tiers: Option<[Decimal; 3]>,
    /// Frequency caps.
    pub caps: Vec<Cap>,
    /// Quiet hours.
    pub quiet: Option<Quiet>,
    /// Bounds on CEL conditions.
    pub cel: CelLimits,
    /// Sales teams by name, members in round-robin order.
    pub teams: BTreeMap<String, Vec<String>>,
    /// Assignment rules for every campaign's leads.
    pub assignment: Rules,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            spec: v1::Policy::default(),
            churn: SpanMillis(i64::from(DEFAULT_CHURN_DAYS) * DAY_MILLIS),
            tiers: None,
            caps: Vec::new(),
            quiet: None,
            cel: CelLimits::DEFAULT,
            teams: BTreeMap::new(),
            assignment: Rules::default(),
        }
    }
}

fn mode_drops(mode: i32) -> bool {
    v1::CapMode::try_from(mode) == Ok(v1::CapMode::Drop)
}

/// Checks and compiles a policy; every problem is reported with its path.
///
/// # Errors
/// The problems found.
pub fn compile(spec: &v1::Policy) -> Result<Policy, Vec<Issue>> {
    let mut issues = Vec::new();
    let mut report = |path: String, reason: String| issues.push(Issue { path, reason });
    let churn_days = if spec.churn_days == 0 {
        DEFAULT_CHURN_DAYS
    } else {
        spec.churn_days
    };
    let tiers = spec.tiers.as_ref().and_then(|t| {
        let mut out = [Decimal::ZERO; 3];
        for (i, (name, text)) in [("a", &t.a), ("b", &t.b), ("c", &t.c)]
            .into_iter()
            .enumerate()
        {
            match Decimal::from_str(text) {
                Ok(d) => out[i] = d,
                Err(_) => {
                    report(
                        format!("tiers.{name}"),
                        format!("`{text}` is not a decimal amount"),
                    );
                    return None;
                }
            }
        }
        if !(out[0] >= out[1] && out[1] >= out[2]) {
            report(
                "tiers".into(),
                "thresholds must not increase from a to b to c".into(),
            );
            return None;
        }
        Some(out)
    });
    let mut caps = Vec::new();
    for (i, c) in spec.caps.iter().enumerate() {
        let kind = if c.channel.is_empty() {
            None
        } else {
            let found = CUSTOMER_FACING
                .iter()
                .find(|k| kind_name(**k) == c.channel)
                .copied();
            if found.is_none() {
                report(
                    format!("caps[{i}].channel"),
                    format!(
                        "`{}` is not a customer-facing action kind (EMAIL, POSTAL_MAIL, SMS, PHONE_CALL, TRIAL_OFFER)",
                        c.channel
                    ),
                );
            }
            found
        };
        if c.max_touches == 0 {
            report(format!("caps[{i}].maxTouches"), "must be at least 1".into());
        }
        let window = c
            .window
            .as_ref()
            .map(SpanMillis::from_proto)
            .unwrap_or_default();
        if window.0 <= 0 {
            report(
                format!("caps[{i}].window"),
                "must be a positive duration".into(),
            );
        } else if let Some(problem) = c.window.as_ref().and_then(crate::time::span_problem) {
            report(format!("caps[{i}].window"), problem);
        }
        caps.push(Cap {
            kind,
            max: c.max_touches as usize,
            window,
            drop: mode_drops(c.mode),
        });
    }
    let quiet = spec.quiet_hours.as_ref().and_then(|q| {
        if q.start_hour > 23 || q.end_hour > 23 {
            report("quietHours".into(), "hours run from 0 to 23".into());
            return None;
        }
        if q.start_hour == q.end_hour {
            report(
                "quietHours".into(),
                "start and end are the same hour: nothing would be quiet".into(),
            );
            return None;
        }
        let zone = if q.default_time_zone.is_empty() {
            Tz::UTC
        } else {
            match q.default_time_zone.parse::<Tz>() {
                Ok(z) => z,
                Err(_) => {
                    report(
                        "quietHours.defaultTimeZone".into(),
                        format!("`{}` is not an IANA time zone", q.default_time_zone),
                    );
                    return None;
                }
            }
        };
        Some(Quiet {
            start: q.start_hour,
            end: q.end_hour,
            default_zone: zone,
            drop: mode_drops(q.mode),
        })
    });
    let cel = cel_limits(spec.cel_limits.as_ref(), &mut report);
    let teams = assignment::teams(&spec.teams, &mut issues);
    let assignment = spec.assignment.as_ref().map_or_else(Rules::default, |a| {
        assignment::compile(a, "assignment", &standard_env(), &cel, &mut issues)
    });
    issues.extend(assignment::missing_teams(&assignment, &teams, ""));
    if !issues.is_empty() {
        return Err(issues);
    }
    Ok(Policy {
        spec: spec.clone(),
        churn: SpanMillis(i64::from(churn_days) * DAY_MILLIS),
        tiers,
        caps,
        quiet,
        cel,
        teams,
        assignment,
    })
}

/// The CEL limits a policy sets: 0 takes the default; more than the ceiling is refused.
fn cel_limits(spec: Option<&v1::CelLimits>, report: &mut impl FnMut(String, String)) -> CelLimits {
    let (default, ceiling) = (CelLimits::DEFAULT, CelLimits::CEILING);
    let Some(spec) = spec else {
        return default;
    };
    let mut pick = |field: &str, set: u64, default: u64, ceiling: u64| {
        if set > ceiling {
            report(
                format!("celLimits.{field}"),
                format!("{set} is more than the most allowed, {ceiling}"),
            );
        }
        if set == 0 { default } else { set.min(ceiling) }
    };
    let as_u64 = |n: usize| n as u64;
    CelLimits {
        max_bytes: pick(
            "maxExpressionBytes",
            u64::from(spec.max_expression_bytes),
            as_u64(default.max_bytes),
            as_u64(ceiling.max_bytes),
        ) as usize,
        max_depth: pick(
            "maxNesting",
            u64::from(spec.max_nesting),
            as_u64(default.max_depth),
            as_u64(ceiling.max_depth),
        ) as usize,
        max_cost: pick("maxCost", spec.max_cost, default.max_cost, ceiling.max_cost),
    }
}

impl Policy {
    /// The tier of a customer of this value ("" for a contact without purchases).
    #[must_use]
    pub fn tier(&self, is_customer: bool, value: Decimal) -> &'static str {
        if !is_customer {
            return "";
        }
        match self.tiers {
            Some([a, b, c]) => {
                if value >= a {
                    "A"
                } else if value >= b {
                    "B"
                } else if value >= c {
                    "C"
                } else {
                    "D"
                }
            }
            None => "D",
        }
    }

    /// Longest cap window: touches are kept at least this long.
    #[must_use]
    pub fn longest_cap(&self) -> SpanMillis {
        self.caps.iter().map(|c| c.window).max().unwrap_or_default()
    }

    /// If `now` is within the quiet hours of a contact in `zone` (its `time_zone` attribute,
    /// if valid), when they end.
    #[must_use]
    pub fn quiet_until(&self, zone: Option<&str>, now: UnixMillis) -> Option<UnixMillis> {
        let q = self.quiet.as_ref()?;
        let tz = zone
            .and_then(|z| z.parse::<Tz>().ok())
            .unwrap_or(q.default_zone);
        let local = tz.timestamp_millis_opt(now.0).single()?;
        let hour = local.hour();
        let quiet = if q.start < q.end {
            hour >= q.start && hour < q.end
        } else {
            hour >= q.start || hour < q.end
        };
        if !quiet {
            return None;
        }
        let end = NaiveTime::from_hms_opt(q.end, 0, 0)?;
        let mut day = local.date_naive();
        if hour >= q.end {
            day = day.succ_opt()?;
        }
        // A quiet end inside a daylight-saving gap moves to the first valid instant after it.
        let at = (0..3).find_map(|h| {
            tz.from_local_datetime(&day.and_time(end + chrono::Duration::hours(h)))
                .earliest()
        })?;
        Some(UnixMillis(at.timestamp_millis()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> UnixMillis {
        UnixMillis(
            chrono::DateTime::parse_from_rfc3339(text)
                .unwrap()
                .timestamp_millis(),
        )
    }

    fn quiet(start: u32, end: u32, zone: &str) -> Policy {
        compile(&v1::Policy {
            quiet_hours: Some(v1::QuietHours {
                start_hour: start,
                end_hour: end,
                default_time_zone: zone.into(),
                mode: 0,
            }),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn quiet_hours_span_midnight_in_the_contacts_zone() {
        let p = quiet(21, 8, "Europe/Paris");
        // 22:30 in Paris (UTC+1 in January): quiet until 08:00 Paris = 07:00 UTC next day.
        assert_eq!(
            p.quiet_until(None, at("2026-01-10T21:30:00Z")),
            Some(at("2026-01-11T07:00:00Z"))
        );
        // 06:00 Paris: quiet until 08:00 the same day.
        assert_eq!(
            p.quiet_until(None, at("2026-01-10T05:00:00Z")),
            Some(at("2026-01-10T07:00:00Z"))
        );
        // 12:00 Paris: not quiet.
        assert_eq!(p.quiet_until(None, at("2026-01-10T11:00:00Z")), None);
        // A contact in Tokyo (UTC+9): 21:30 UTC is 06:30 there, quiet until 08:00 Tokyo.
        assert_eq!(
            p.quiet_until(Some("Asia/Tokyo"), at("2026-01-10T21:30:00Z")),
            Some(at("2026-01-10T23:00:00Z"))
        );
        // An unknown zone falls back to the default.
        assert_eq!(
            p.quiet_until(Some("Mars/Olympus"), at("2026-01-10T11:00:00Z")),
            None
        );
    }

    #[test]
    fn quiet_hours_within_a_day() {
        let p = quiet(12, 14, "");
        assert_eq!(
            p.quiet_until(None, at("2026-06-01T13:59:00Z")),
            Some(at("2026-06-01T14:00:00Z"))
        );
        assert_eq!(p.quiet_until(None, at("2026-06-01T14:00:00Z")), None);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let bad = v1::Policy {
            tiers: Some(v1::TierThresholds {
                a: "10".into(),
                b: "x".into(),
                c: "1".into(),
            }),
            caps: vec![
                v1::FrequencyCap {
                    channel: "FAX".into(),
                    max_touches: 1,
                    window: None,
                    mode: 0,
                },
                v1::FrequencyCap {
                    channel: "EMAIL".into(),
                    max_touches: 0,
                    window: None,
                    mode: 0,
                },
            ],
            quiet_hours: Some(v1::QuietHours {
                start_hour: 22,
                end_hour: 7,
                default_time_zone: "Nowhere/City".into(),
                mode: 0,
            }),
            ..Default::default()
        };
        let issues: Vec<String> = compile(&bad)
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(
            issues,
            [
                "tiers.b: `x` is not a decimal amount",
                "caps[0].channel: `FAX` is not a customer-facing action kind (EMAIL, POSTAL_MAIL, SMS, PHONE_CALL, TRIAL_OFFER)",
                "caps[0].window: must be a positive duration",
                "caps[1].maxTouches: must be at least 1",
                "caps[1].window: must be a positive duration",
                "quietHours.defaultTimeZone: `Nowhere/City` is not an IANA time zone",
            ]
        );
    }

    #[test]
    fn tiers_by_threshold() {
        let p = compile(&v1::Policy {
            tiers: Some(v1::TierThresholds {
                a: "1000".into(),
                b: "300".into(),
                c: "50".into(),
            }),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(p.tier(true, Decimal::from(1000)), "A");
        assert_eq!(p.tier(true, Decimal::from(999)), "B");
        assert_eq!(p.tier(true, Decimal::from(50)), "C");
        assert_eq!(p.tier(true, Decimal::from(-5)), "D");
        assert_eq!(p.tier(false, Decimal::from(5000)), "");
        assert_eq!(Policy::default().tier(true, Decimal::from(5000)), "D");
    }
}
