//! `google.protobuf.Timestamp` with the canonical JSON form: RFC 3339, Z-normalized, with 0, 3,
//! 6 or 9 fractional digits (pbjson's own type writes `+00:00`, which the mapping does not).

use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// A point in time: seconds and nanoseconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, prost::Message)]
pub struct Timestamp {
    /// Seconds since 1970-01-01T00:00:00Z.
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    /// Non-negative fractions of a second at nanosecond resolution (0..=999,999,999).
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// The range the proto3 JSON mapping allows: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59Z.
const MIN_SECONDS: i64 = -62_135_596_800;
const MAX_SECONDS: i64 = 253_402_300_799;

impl Timestamp {
    /// As a chrono UTC time, if in range.
    #[must_use]
    pub fn to_datetime(self) -> Option<DateTime<Utc>> {
        let nanos = u32::try_from(self.nanos).ok()?;
        DateTime::from_timestamp(self.seconds, nanos)
            .filter(|_| (MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds))
    }

    /// Why this timestamp is outside what the JSON mapping allows (years 0001 to 9999,
    /// nanoseconds 0 to 999,999,999), if it is: the same bound on every input path.
    #[must_use]
    pub fn range_problem(self) -> Option<String> {
        if !(0..1_000_000_000).contains(&self.nanos) {
            return Some(format!("nanos {} is outside 0 to 999999999", self.nanos));
        }
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&self.seconds) {
            return Some(format!(
                "seconds {} is outside years 0001 to 9999 ({MIN_SECONDS} to {MAX_SECONDS})",
                self.seconds
            ));
        }
        None
    }

    /// Parses an RFC 3339 time (any offset; stored as UTC).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = DateTime::parse_from_rfc3339(text).map_err(|_| {
            format!("`{text}` is not an RFC 3339 time such as 2026-03-01T09:00:00Z")
        })?;
        let ts = Self {
            seconds: t.timestamp(),
            // Always below 2e9, and below 1e9 except within a leap second.
            nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(999_999_999),
        };
        if !(MIN_SECONDS..=MAX_SECONDS).contains(&ts.seconds) {
            return Err(format!("`{text}` is outside years 0001 to 9999"));
        }
        Ok(ts)
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_datetime() {
            Some(t) => f.write_str(&t.to_rfc3339_opts(SecondsFormat::AutoSi, true)),
            None => write!(f, "<invalid timestamp {}s {}ns>", self.seconds, self.nanos),
        }
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.to_datetime().is_none() {
            return Err(serde::ser::Error::custom(format!(
                "timestamp out of range: {}s {}ns",
                self.seconds, self.nanos
            )));
        }
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl de::Visitor<'_> for Visitor {
            type Value = Timestamp;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an RFC 3339 time string such as 2026-03-01T09:00:00Z")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Timestamp, E> {
                Timestamp::parse(s).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn json(t: Timestamp) -> String {
        serde_json::to_string(&t).unwrap()
    }

    #[test]
    fn output_is_z_normalized_with_0_3_6_or_9_fraction_digits() {
        assert_eq!(
            json(Timestamp {
                seconds: 1_772_442_000,
                nanos: 0
            }),
            r#""2026-03-02T09:00:00Z""#
        );
        assert_eq!(
            json(Timestamp {
                seconds: 0,
                nanos: 120_000_000
            }),
            r#""1970-01-01T00:00:00.120Z""#
        );
        assert_eq!(
            json(Timestamp {
                seconds: 0,
                nanos: 1_000
            }),
            r#""1970-01-01T00:00:00.000001Z""#
        );
        assert_eq!(
            json(Timestamp {
                seconds: 0,
                nanos: 1
            }),
            r#""1970-01-01T00:00:00.000000001Z""#
        );
    }

    #[test]
    fn offsets_are_accepted_and_normalized() {
        let t: Timestamp = serde_json::from_str(r#""2026-03-02T10:00:00+01:00""#).unwrap();
        assert_eq!(json(t), r#""2026-03-02T09:00:00Z""#);
    }

    #[test]
    fn bad_and_out_of_range_times_are_rejected_with_a_reason() {
        let e = serde_json::from_str::<Timestamp>(r#""yesterday""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("is not an RFC 3339 time"), "{e}");
        assert!(
            json_err(Timestamp {
                seconds: MAX_SECONDS + 1,
                nanos: 0
            })
            .contains("out of range")
        );
        assert!(
            json_err(Timestamp {
                seconds: 0,
                nanos: -1
            })
            .contains("out of range")
        );
    }

    fn json_err(t: Timestamp) -> String {
        serde_json::to_string(&t).unwrap_err().to_string()
    }
}
