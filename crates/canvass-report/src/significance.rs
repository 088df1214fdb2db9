//! How sure an arm's uplift over the holdout is: Wilson score intervals for each arm's rate,
//! Newcombe's hybrid score interval for the difference, a two-sided p-value from the pooled
//! two-proportion z-test (Fisher's exact test when an expected cell count is below 5,
//! Cochran's rule), and the sample each arm would need to show the observed difference with
//! 80 % power at the 5 % level (Fleiss' formula, no continuity correction).
//!
//! These are the textbook methods statsmodels implements (`proportion_confint(method=
//! "wilson")`, `confint_proportions_2indep(method="newcomb")`, `proportions_ztest`) and scipy's
//! `fisher_exact`; tests/report.rs checks every figure against them.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};
use statrs::stats_tests::{Alternative, fishers_exact};

/// The confidence level of every interval in the reports.
pub const CONFIDENCE: f64 = 0.95;
/// The power an arm's size is judged by.
pub const POWER: f64 = 0.8;
/// Below this expected count in any cell of the 2x2 table, Fisher's exact test is used.
const MIN_EXPECTED: f64 = 5.0;

/// A closed interval.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq)]
pub struct Interval {
    /// Lower bound.
    pub low: f64,
    /// Upper bound.
    pub high: f64,
}

/// The test a p-value comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub enum Test {
    /// Pooled two-proportion z-test, two-sided.
    TwoProportionZ,
    /// Fisher's exact test on the 2x2 table, two-sided.
    FisherExact,
}

/// Successes out of trials.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Proportion {
    /// Contacts who converted.
    pub successes: u64,
    /// Contacts enrolled.
    pub trials: u64,
}

impl Proportion {
    #[allow(clippy::cast_precision_loss)]
    fn rate(self) -> f64 {
        self.successes as f64 / self.trials as f64
    }

    #[allow(clippy::cast_precision_loss)]
    fn n(self) -> f64 {
        self.trials as f64
    }
}

/// An arm against the holdout.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// Arm rate minus holdout rate, as an interval (fractions, not points).
    pub difference: Interval,
    /// Two-sided p-value of "no difference".
    pub p_value: f64,
    /// Where the p-value comes from.
    pub test: Test,
    /// Contacts each side would need to show the observed difference with [`POWER`]; absent
    /// when the rates are equal (no difference to show).
    pub needed_per_arm: Option<u64>,
}

fn standard_normal() -> Normal {
    Normal::standard()
}

/// The two-sided critical value of the standard normal at [`CONFIDENCE`].
fn z_critical() -> f64 {
    standard_normal().inverse_cdf(1.0 - (1.0 - CONFIDENCE) / 2.0)
}

/// Wilson's score interval for a rate; absent without trials.
#[must_use]
pub fn wilson(p: Proportion) -> Option<Interval> {
    if p.trials == 0 {
        return None;
    }
    let z = z_critical();
    let (n, rate) = (p.n(), p.rate());
    let z2 = z * z;
    let centre = (rate + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = z / (1.0 + z2 / n) * (rate * (1.0 - rate) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

/// `arm` against `holdout`; absent when either has no trials.
#[must_use]
pub fn compare(arm: Proportion, holdout: Proportion) -> Option<Comparison> {
    let (a, h) = (wilson(arm)?, wilson(holdout)?);
    let (p1, p2) = (arm.rate(), holdout.rate());
    let difference = p1 - p2;
    let interval = Interval {
        low: difference - ((p1 - a.low).powi(2) + (h.high - p2).powi(2)).sqrt(),
        high: difference + ((a.high - p1).powi(2) + (p2 - h.low).powi(2)).sqrt(),
    };
    let (p_value, test) = if small(arm, holdout) {
        let table = [
            arm.successes,
            arm.trials.saturating_sub(arm.successes),
            holdout.successes,
            holdout.trials.saturating_sub(holdout.successes),
        ];
        let p = fishers_exact(&table, Alternative::TwoSided).unwrap_or(1.0);
        (p.min(1.0), Test::FisherExact)
    } else {
        let pooled = Proportion {
            successes: arm.successes + holdout.successes,
            trials: arm.trials + holdout.trials,
        }
        .rate();
        let se = (pooled * (1.0 - pooled) * (1.0 / arm.n() + 1.0 / holdout.n())).sqrt();
        let z = difference / se;
        (
            // The upper tail directly: 1 - cdf rounds to 0 far out.
            2.0 * standard_normal().sf(z.abs()),
            Test::TwoProportionZ,
        )
    };
    Some(Comparison {
        difference: interval,
        p_value,
        test,
        needed_per_arm: needed_per_arm(p1, p2),
    })
}

/// Whether any expected count of the 2x2 table is below [`MIN_EXPECTED`].
fn small(arm: Proportion, holdout: Proportion) -> bool {
    let total = arm.n() + holdout.n();
    #[allow(clippy::cast_precision_loss)]
    let successes = (arm.successes + holdout.successes) as f64;
    let failures = total - successes;
    [arm.n(), holdout.n()]
        .iter()
        .any(|&row| row * successes / total < MIN_EXPECTED || row * failures / total < MIN_EXPECTED)
}

/// Fleiss' sample size per arm for rates `p1` and `p2`, two-sided at 1 - [`CONFIDENCE`].
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn needed_per_arm(p1: f64, p2: f64) -> Option<u64> {
    let difference = (p1 - p2).abs();
    if difference == 0.0 {
        return None;
    }
    let z_power = standard_normal().inverse_cdf(POWER);
    let mean = f64::midpoint(p1, p2);
    let root = z_critical() * (2.0 * mean * (1.0 - mean)).sqrt()
        + z_power * (p1 * (1.0 - p1) + p2 * (1.0 - p2)).sqrt();
    Some((root * root / (difference * difference)).ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(successes: u64, trials: u64) -> Proportion {
        Proportion { successes, trials }
    }

    #[test]
    fn equal_rates_show_no_difference_and_need_no_sample() {
        let c = compare(p(50, 500), p(50, 500)).unwrap();
        assert!(c.difference.low < 0.0 && c.difference.high > 0.0);
        assert!((c.p_value - 1.0).abs() < 1e-12);
        assert_eq!(c.test, Test::TwoProportionZ);
        assert_eq!(c.needed_per_arm, None);
    }

    #[test]
    fn small_tables_use_the_exact_test() {
        let c = compare(p(3, 10), p(0, 10)).unwrap();
        assert_eq!(c.test, Test::FisherExact);
        assert!(c.p_value > 0.05, "3/10 against 0/10 is not significant");
        assert!(c.needed_per_arm.unwrap() > 10);
    }

    #[test]
    fn no_trials_no_comparison() {
        assert_eq!(compare(p(0, 0), p(1, 10)), None);
        assert_eq!(wilson(p(0, 0)), None);
        let all = wilson(p(10, 10)).unwrap();
        assert!((all.high - 1.0).abs() < 1e-12 && all.low < 1.0);
    }
}

#[cfg(test)]
mod wire {
    use canvass_proto::v1;

    /// Every figure of an arm compared with its holdout fits the gRPC message it is sent as.
    #[test]
    fn a_compared_arm_fits_its_message() {
        let counters = v1::CampaignCounters {
            arms: [("a", 12, 3), ("holdout", 10, 0)]
                .into_iter()
                .map(|(arm, enrolled, converted)| {
                    let counters = v1::ArmCounters {
                        enrolled,
                        converted,
                        ..Default::default()
                    };
                    (arm.to_string(), counters)
                })
                .collect(),
            ..Default::default()
        };
        let arms = crate::arms(&counters, 2);
        let arm = arms.iter().find(|a| a.arm == "a").unwrap();
        assert!(arm.warning.is_some() && arm.needed_per_arm.is_some());
        let json = serde_json::to_string(arm).unwrap();
        let message: v1::ArmRow = canvass_proto::json::from_str(&json).unwrap();
        assert_eq!(message.p_value, arm.p_value);
        assert_eq!(message.test.as_deref(), Some("fisherExact"));
        assert_eq!(message.needed_per_arm, arm.needed_per_arm);
        assert_eq!(message.warning, arm.warning);
        let interval = message.uplift_interval.unwrap();
        assert_eq!(Some(interval.low), arm.uplift_interval.map(|i| i.low));
    }
}
