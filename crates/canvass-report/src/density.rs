//! Marketing density (seed 000): contacts effectively reached over contacts that should have
//! been, the defects, DPMO and the sigma level.
//!
//! Each eligible contact is one opportunity; a contact enrolled and treated (not held out)
//! that no action was confirmed delivered to is a defect. The sigma level follows the
//! six-sigma convention: the standard normal quantile of the yield plus the 1.5 sigma
//! long-term shift, so 3.4 DPMO is 6 sigma and 66,807 DPMO is 3 sigma.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, Normal};

/// The conventional long-term shift of the six-sigma scale.
pub const SIGMA_SHIFT: f64 = 1.5;

/// Density figures of a campaign or a segment.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Density {
    /// Contacts that should have been marketed to: enrolled and treated.
    pub eligible: u64,
    /// Of them, reached: an action confirmed delivered.
    pub reached: u64,
    /// eligible - reached.
    pub defects: u64,
    /// reached / eligible, between 0 and 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub density: Option<f64>,
    /// Defects per million opportunities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dpmo: Option<f64>,
    /// Short-term sigma level (yield quantile + 1.5); absent unless `sigma_status` is
    /// `measured`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma: Option<f64>,
    /// Why the sigma level is what it is, or absent.
    pub sigma_status: SigmaStatus,
}

/// What the sigma level says: a number, or why there is none.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum SigmaStatus {
    /// Some reached, some defects: `sigma` holds the level.
    Measured,
    /// Every eligible contact reached: no defects, the level is unbounded above.
    Unbounded,
    /// Nobody reached: every opportunity a defect, unbounded below.
    NoneReached,
    /// Nobody eligible: nothing to measure.
    #[default]
    NoData,
}

/// The density of `reached` contacts among `eligible` ones.
#[must_use]
pub fn density(eligible: u64, reached: u64) -> Density {
    let reached = reached.min(eligible);
    let defects = eligible - reached;
    let density = crate::ratio(reached, eligible);
    let dpmo = crate::ratio(defects, eligible).map(|d| d * 1_000_000.0);
    let sigma_status = match (eligible, reached, defects) {
        (0, _, _) => SigmaStatus::NoData,
        (_, _, 0) => SigmaStatus::Unbounded,
        (_, 0, _) => SigmaStatus::NoneReached,
        _ => SigmaStatus::Measured,
    };
    Density {
        eligible,
        reached,
        defects,
        density,
        dpmo,
        sigma: dpmo.and_then(sigma_level),
        sigma_status,
    }
}

/// The sigma level of a defect rate in DPMO; `None` at zero defects (unbounded above) and
/// when every opportunity is a defect (unbounded below).
#[must_use]
pub fn sigma_level(dpmo: f64) -> Option<f64> {
    if dpmo <= 0.0 || dpmo >= 1_000_000.0 {
        return None;
    }
    let normal = Normal::standard();
    Some(normal.inverse_cdf(1.0 - dpmo / 1_000_000.0) + SIGMA_SHIFT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tolerance: f64) -> bool {
        (a - b).abs() < tolerance
    }

    #[test]
    fn the_six_sigma_table() {
        // Textbook values of the scale with the 1.5 shift.
        for (dpmo, sigma) in [
            (3.4, 6.0),
            (233.0, 5.0),
            (6_210.0, 4.0),
            (66_807.0, 3.0),
            (308_538.0, 2.0),
            (691_462.0, 1.0),
        ] {
            let s = sigma_level(dpmo).unwrap();
            assert!(close(s, sigma, 0.01), "{dpmo} DPMO gave {s}");
        }
        assert_eq!(sigma_level(0.0), None);
        assert_eq!(sigma_level(1_000_000.0), None);
    }

    proptest::proptest! {
        #[test]
        fn density_stays_between_zero_and_one(eligible in 0u64..10_000_000, reached in 0u64..10_000_000) {
            let d = density(eligible, reached);
            proptest::prop_assert!(d.reached <= d.eligible);
            proptest::prop_assert_eq!(d.reached + d.defects, d.eligible);
            if let (Some(x), Some(dpmo)) = (d.density, d.dpmo) {
                proptest::prop_assert!((0.0..=1.0).contains(&x));
                proptest::prop_assert!((0.0..=1_000_000.0).contains(&dpmo));
            }
        }

        #[test]
        fn fewer_defects_never_lower_the_sigma(a in 1.0f64..999_999.0, b in 1.0f64..999_999.0) {
            let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
            proptest::prop_assert!(sigma_level(lo).unwrap() >= sigma_level(hi).unwrap());
        }
    }

    #[test]
    fn density_of_a_hand_worked_campaign() {
        // 40 eligible, 30 reached: 10 defects, 250,000 DPMO, 0.674 + 1.5 sigma.
        let d = density(40, 30);
        assert_eq!(d.defects, 10);
        assert_eq!(d.density, Some(0.75));
        assert_eq!(d.dpmo, Some(250_000.0));
        assert!(close(d.sigma.unwrap(), 2.174, 0.001));
        assert_eq!(d.sigma_status, SigmaStatus::Measured);
        let none = density(0, 0);
        assert_eq!((none.density, none.dpmo, none.sigma), (None, None, None));
        assert_eq!(none.sigma_status, SigmaStatus::NoData);
        let all = density(5, 5);
        assert_eq!(
            (all.density, all.dpmo, all.sigma, all.sigma_status),
            (Some(1.0), Some(0.0), None, SigmaStatus::Unbounded)
        );
        let nobody = density(5, 0);
        assert_eq!(
            (nobody.density, nobody.sigma, nobody.sigma_status),
            (Some(0.0), None, SigmaStatus::NoneReached)
        );
        // The JSON tells the two absent levels apart.
        let json = |d: &Density| serde_json::to_value(d).unwrap()["sigmaStatus"].clone();
        assert_eq!(json(&all), "unbounded");
        assert_eq!(json(&nobody), "noneReached");
        assert_eq!(json(&none), "noData");
    }
}
