//! Instants and spans as plain integers, so the core never reads a clock and replays exactly.

use std::fmt;

use canvass_proto::wkt;

/// Milliseconds since the Unix epoch (UTC). The core receives every instant as an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub i64);

/// Milliseconds in a day, for the `days_since_*` fields exposed to CEL.
pub const DAY_MILLIS: i64 = 86_400_000;

/// The longest duration a spec or a policy may give (100 years): anything longer is a
/// mistake, and durations near `i64::MAX` seconds overflow what a timestamp can hold.
pub const MAX_SPAN: SpanMillis = SpanMillis(36_525 * DAY_MILLIS);

/// Why a protobuf duration is not a positive span within [`MAX_SPAN`], if it is not.
#[must_use]
pub fn span_problem(d: &wkt::Duration) -> Option<String> {
    let span = SpanMillis::from_proto(d);
    if span.0 <= 0 {
        Some(format!("must be positive, got {}s", d.seconds))
    } else if span > MAX_SPAN || d.seconds > MAX_SPAN.0 / 1000 {
        Some(format!(
            "must be at most 36525 days (100 years), got {}s",
            d.seconds
        ))
    } else {
        None
    }
}

impl UnixMillis {
    /// This instant plus a span, saturating instead of overflowing.
    #[must_use]
    pub fn plus(self, span: SpanMillis) -> Self {
        Self(self.0.saturating_add(span.0))
    }

    /// Converts a protobuf timestamp (sub-millisecond precision is dropped).
    #[must_use]
    pub fn from_proto(ts: &wkt::Timestamp) -> Self {
        Self(
            ts.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(ts.nanos) / 1_000_000),
        )
    }

    /// Converts to a protobuf timestamp.
    #[must_use]
    pub fn to_proto(self) -> wkt::Timestamp {
        wkt::Timestamp {
            seconds: self.0.div_euclid(1000),
            // The remainder is in 0..1000, so the product fits in i32.
            nanos: i32::try_from(self.0.rem_euclid(1000) * 1_000_000).unwrap_or(0),
        }
    }
}

impl fmt::Display for UnixMillis {
    /// RFC 3339 in UTC, with milliseconds only when there are some.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_proto())
    }
}

/// A span of time in milliseconds (timeouts, SLAs, cooldowns).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct SpanMillis(pub i64);

impl SpanMillis {
    /// Converts a protobuf duration (sub-millisecond precision is dropped).
    #[must_use]
    pub fn from_proto(d: &wkt::Duration) -> Self {
        Self(
            d.seconds
                .saturating_mul(1000)
                .saturating_add(i64::from(d.nanos) / 1_000_000),
        )
    }
}

impl fmt::Display for SpanMillis {
    /// Prints the span the way marketers think of it: `7d`, `48h`, `90m`, `1500ms`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(i64, &str); 4] = [
            (DAY_MILLIS, "d"),
            (3_600_000, "h"),
            (60_000, "m"),
            (1000, "s"),
        ];
        let ms = self.0;
        for (size, unit) in UNITS {
            if ms != 0 && ms % size == 0 {
                return write!(f, "{}{unit}", ms / size);
            }
        }
        write!(f, "{ms}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proto_round_trip_keeps_millis_including_before_epoch() {
        for ms in [0, 1, 999, 1000, -1, -1001, 1_767_225_600_123] {
            let t = UnixMillis(ms);
            assert_eq!(UnixMillis::from_proto(&t.to_proto()), t);
        }
    }

    #[test]
    fn spans_print_in_their_largest_whole_unit() {
        assert_eq!(SpanMillis(7 * DAY_MILLIS).to_string(), "7d");
        assert_eq!(SpanMillis(48 * 3_600_000).to_string(), "2d");
        assert_eq!(SpanMillis(36 * 3_600_000).to_string(), "36h");
        assert_eq!(SpanMillis(90_000).to_string(), "90s");
        assert_eq!(SpanMillis(1500).to_string(), "1500ms");
    }
}
