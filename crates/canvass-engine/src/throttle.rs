//! Repeated warnings told once per interval, with the count of those held back: a broker
//! that is away makes librdkafka report the same failure many times a second, and an
//! executor that is down refuses every action.

use std::{
    collections::HashMap,
    sync::{LazyLock, Mutex, PoisonError},
    time::{Duration, Instant},
};

/// How often one kind of warning is told at most.
pub const INTERVAL: Duration = Duration::from_secs(10);

/// The warnings of the whole process, by kind.
pub static WARNINGS: LazyLock<Throttle> = LazyLock::new(|| Throttle::new(INTERVAL));

/// Admits one warning per key and interval.
#[derive(Debug)]
pub struct Throttle {
    interval: Duration,
    seen: Mutex<HashMap<String, Seen>>,
}

#[derive(Debug)]
struct Seen {
    told: Instant,
    held_back: u64,
}

impl Throttle {
    /// Admits one warning per key every `interval`.
    #[must_use]
    pub fn new(interval: Duration) -> Self {
        Self {
            interval,
            seen: Mutex::default(),
        }
    }

    /// Whether a warning of kind `key` is told at `now`: `Some(n)` with the number held
    /// back since the last one told, `None` to hold this one back.
    pub fn admit(&self, key: &str, now: Instant) -> Option<u64> {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        match seen.get_mut(key) {
            Some(s) if now.duration_since(s.told) < self.interval => {
                s.held_back += 1;
                None
            }
            Some(s) => {
                let held_back = std::mem::take(&mut s.held_back);
                s.told = now;
                Some(held_back)
            }
            None => {
                seen.insert(
                    key.to_string(),
                    Seen {
                        told: now,
                        held_back: 0,
                    },
                );
                Some(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_repeated_warning_is_told_once_per_interval_with_the_count_held_back() {
        let throttle = Throttle::new(Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(throttle.admit("broker down", at(0)), Some(0));
        for s in 1..10 {
            assert_eq!(throttle.admit("broker down", at(s)), None);
        }
        // Another kind is not held back by the first.
        assert_eq!(throttle.admit("auth failed", at(5)), Some(0));
        assert_eq!(throttle.admit("broker down", at(10)), Some(9));
        assert_eq!(throttle.admit("broker down", at(25)), Some(0));
    }
}
