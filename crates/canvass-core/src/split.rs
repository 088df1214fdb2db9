//! Deterministic A/B split and holdout: a contact's arm is a hash, never a random draw.

use xxhash_rust::xxh3::xxh3_64_with_seed;

use crate::spec::Split;

/// The arm a contact falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arm<'a> {
    /// Held out: tracked, never contacted.
    Holdout,
    /// Treated, in this variant (`None` when the split has no variants).
    Treated(Option<&'a crate::spec::Variant>),
}

/// Hash of (campaign id, contact id, seed), with a salt to draw independent numbers.
/// xxh3 is a fixed, published algorithm: the same inputs give the same arm on every
/// machine and in every version.
fn draw(campaign_id: &str, contact_id: &str, seed: u32, salt: u64) -> u64 {
    let mut bytes = Vec::with_capacity(campaign_id.len() + contact_id.len() + 6);
    bytes.extend_from_slice(campaign_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(contact_id.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&seed.to_le_bytes());
    xxh3_64_with_seed(&bytes, salt)
}

/// Assigns a contact to the holdout or to a variant.
#[must_use]
pub fn assign<'a>(split: &'a Split, campaign_id: &str, contact_id: &str) -> Arm<'a> {
    let bucket = draw(campaign_id, contact_id, split.seed, 0) % 10_000;
    if bucket < u64::from(split.holdout_basis_points) {
        return Arm::Holdout;
    }
    let total: u64 = split.variants.iter().map(|v| u64::from(v.weight)).sum();
    if total == 0 {
        return Arm::Treated(None);
    }
    let mut point = draw(campaign_id, contact_id, split.seed, 1) % total;
    for v in &split.variants {
        let w = u64::from(v.weight);
        if point < w {
            return Arm::Treated(Some(v));
        }
        point -= w;
    }
    Arm::Treated(split.variants.last())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Variant;

    fn split(holdout: u32, weights: &[u32]) -> Split {
        Split {
            seed: 7,
            holdout_basis_points: holdout,
            variants: weights
                .iter()
                .enumerate()
                .map(|(i, w)| Variant {
                    id: format!("v{i}"),
                    weight: *w,
                    initial_state: None,
                })
                .collect(),
        }
    }

    #[test]
    fn the_same_contact_always_gets_the_same_arm() {
        let s = split(1000, &[1, 1]);
        for i in 0..100 {
            let c = format!("c-{i}");
            assert_eq!(assign(&s, "camp", &c), assign(&s, "camp", &c));
        }
    }

    #[test]
    fn arms_are_fixed_by_the_published_hash() {
        // Pinned so that a dependency upgrade cannot silently reshuffle running campaigns.
        let s = split(5000, &[1, 1]);
        let arms: String = (0..16)
            .map(|i| match assign(&s, "camp", &format!("c-{i}")) {
                Arm::Holdout => 'H',
                Arm::Treated(Some(v)) if v.id == "v0" => 'A',
                Arm::Treated(_) => 'B',
            })
            .collect();
        assert_eq!(arms, PINNED_ARMS);
    }
    const PINNED_ARMS: &str = "HHBHHAHHHAHHBHBB";

    #[test]
    fn shares_follow_holdout_and_weights() {
        let s = split(1000, &[3, 1]);
        let (mut h, mut a, mut b) = (0, 0, 0);
        for i in 0..20_000 {
            match assign(&s, "camp", &format!("contact-{i}")) {
                Arm::Holdout => h += 1,
                Arm::Treated(Some(v)) if v.id == "v0" => a += 1,
                Arm::Treated(_) => b += 1,
            }
        }
        // 10% holdout, the rest 3:1; 20,000 draws keep each share within ~1 percentage point.
        assert!((1800..2200).contains(&h), "holdout {h}");
        assert!((13_100..13_900).contains(&a), "a {a}");
        assert!((4_200..4_800).contains(&b), "b {b}");
    }

    #[test]
    fn the_seed_reshuffles() {
        let held_out = |s: &Split| -> Vec<bool> {
            (0..64)
                .map(|i| assign(s, "camp", &format!("c-{i}")) == Arm::Holdout)
                .collect()
        };
        let mut s = split(5000, &[]);
        let before = held_out(&s);
        s.seed = 8;
        let after = held_out(&s);
        assert_ne!(before, after);
    }
}
