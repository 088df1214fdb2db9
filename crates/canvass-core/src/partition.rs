//! Which partition owns a contact: the function a Kafka producer applies to a record's key,
//! so that a store fed from a file or over gRPC puts each contact where Kafka would.

use std::fmt;

use rust_decimal::Decimal;

/// How a contact id (a record key) maps to a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Partitioner {
    /// The Java client's default for keyed records (`Utils.toPositive(Utils.murmur2(key)) %
    /// partitions`), also librdkafka's `murmur2` and `murmur2_random`.
    #[default]
    Murmur2,
    /// librdkafka's `consistent` and `consistent_random` (its default): CRC-32 of the key
    /// modulo the partition count.
    Crc32,
}

/// The seed the Java client's murmur2 starts from.
const KAFKA_SEED: u32 = 0x9747_b28c;

impl Partitioner {
    /// Every partitioner, by its configuration name.
    pub const ALL: [Partitioner; 2] = [Partitioner::Murmur2, Partitioner::Crc32];

    /// The partition of `key` among `partitions` (at least 1).
    #[must_use]
    pub fn partition(self, key: &[u8], partitions: u32) -> u32 {
        let partitions = partitions.max(1);
        match self {
            Partitioner::Murmur2 => (murmur2(key) & 0x7fff_ffff) % partitions,
            Partitioner::Crc32 => crc32fast::hash(key) % partitions,
        }
    }

    /// Its name in settings: `murmur2` or `consistent`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Partitioner::Murmur2 => "murmur2",
            Partitioner::Crc32 => "consistent",
        }
    }

    /// The partitioner a settings name stands for: ours, or librdkafka's names for the same
    /// functions (`murmur2_random`, `consistent_random`).
    #[must_use]
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "murmur2" | "murmur2_random" => Some(Partitioner::Murmur2),
            "consistent" | "consistent_random" => Some(Partitioner::Crc32),
            _ => None,
        }
    }
}

impl fmt::Display for Partitioner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Kafka's murmur2 of a key: MurmurHash2 with the Java client's seed, words read little
/// endian, as a 32-bit pattern (the Java client's `int`).
#[must_use]
pub fn murmur2(key: &[u8]) -> u32 {
    murmur2::murmur2(key, KAFKA_SEED)
}

/// Which partition of how many a core runs for: a campaign's budget is split among the
/// partitions by [`allotment`], so that each decides alone (from its own log) and the sum of
/// what they spend never exceeds the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Share {
    /// This partition.
    pub index: u32,
    /// Partitions in all (at least 1).
    pub count: u32,
}

impl Default for Share {
    /// The whole: one partition.
    fn default() -> Self {
        Self { index: 0, count: 1 }
    }
}

/// Decimal places the budget is split in, at least: a cent of the usual currencies. A total
/// given with more places is split in its own.
const ALLOTMENT_SCALE: u32 = 2;

/// The part of `total` partition `share.index` of `share.count` may spend: the total in
/// minor units divided evenly, the remainder one minor unit each to the first partitions.
/// The parts add up to the total exactly and depend on the partition count only, never on
/// the traffic, so each partition's outcome is a function of its own log.
#[must_use]
pub fn allotment(total: Decimal, share: Share) -> Decimal {
    let count = share.count.max(1);
    if count == 1 || total <= Decimal::ZERO {
        return if share.index == 0 || total <= Decimal::ZERO {
            total
        } else {
            Decimal::ZERO
        };
    }
    let scale = total.scale().max(ALLOTMENT_SCALE);
    let unit = Decimal::new(1, scale);
    // A total too large to count in minor units (beyond 28 digits) is split as it is.
    let Some(units) = total.checked_div(unit).map(|u| u.trunc()) else {
        return total / Decimal::from(count);
    };
    let count = Decimal::from(count);
    let each = (units / count).trunc();
    let remainder = units - each * count;
    let extra = if Decimal::from(share.index) < remainder {
        Decimal::ONE
    } else {
        Decimal::ZERO
    };
    ((each + extra) * unit).normalize()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allotments_add_up_to_the_total_and_differ_by_one_minor_unit_at_most() {
        for (total, count) in [
            ("5000.00", 1),
            ("5000.00", 3),
            ("100", 7),
            ("0.05", 8),
            ("12.345", 4),
            ("0", 4),
            ("1", 32),
        ] {
            let total: Decimal = total.parse().unwrap();
            let parts: Vec<Decimal> = (0..count)
                .map(|index| allotment(total, Share { index, count }))
                .collect();
            assert_eq!(
                parts.iter().copied().sum::<Decimal>(),
                total,
                "{total} / {count}"
            );
            let (lo, hi) = (parts.iter().min().unwrap(), parts.iter().max().unwrap());
            let unit = Decimal::new(1, total.scale().max(ALLOTMENT_SCALE));
            assert!(hi - lo <= unit, "{total} / {count}: {parts:?}");
            assert!(
                parts.windows(2).all(|w| w[0] >= w[1]),
                "remainder first: {parts:?}"
            );
        }
        let third = allotment("100".parse().unwrap(), Share { index: 0, count: 3 });
        assert_eq!(third.to_string(), "33.34");
    }

    /// Apache Kafka's `UtilsTest.testMurmur2`, as the Java client's signed ints.
    #[test]
    fn murmur2_matches_the_java_client() {
        for (key, java) in [
            ("21", -973_932_308_i32),
            ("foobar", -790_332_482),
            ("a-little-bit-long-string", -985_981_536),
            ("a-little-bit-longer-string", -1_486_304_829),
            (
                "lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            ("abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key.as_bytes()) as i32, java, "{key}");
        }
    }

    /// librdkafka's `unittest_murmur2` (its murmur2 is the Java client's).
    #[test]
    fn murmur2_matches_librdkafka() {
        let unaligned = "PreAmbleWillBeRemoved,ThePrePartThatIs";
        for (key, expected) in [
            ("kafka", 0xd067_cf64_u32),
            ("giberish123456789", 0x8f55_2b0c),
            ("1234", 0x9fc9_7b14),
            ("234", 0xe7c0_09ca),
            ("34", 0x8739_30da),
            ("4", 0x5a4b_5ca1),
            (unaligned, 0x7842_4f1c),
            (&unaligned[1..], 0x4a62_b377),
            (&unaligned[2..], 0xe0e4_e09e),
            (&unaligned[3..], 0x62b8_b43f),
            ("", 0x106e_08d9),
        ] {
            assert_eq!(murmur2(key.as_bytes()), expected, "{key:?}");
        }
    }

    #[test]
    fn partitions_are_what_the_producers_compute() {
        // Java: Utils.toPositive(-973932308) % 16 = 1173551340 % 16.
        assert_eq!(
            Partitioner::Murmur2.partition(b"21", 16),
            1_173_551_340 % 16
        );
        // librdkafka consistent: the standard CRC-32 (check value of "123456789").
        assert_eq!(crc32fast::hash(b"123456789"), 0xcbf4_3926);
        assert_eq!(
            Partitioner::Crc32.partition(b"123456789", 7),
            0xcbf4_3926 % 7
        );
        for p in Partitioner::ALL {
            assert_eq!(p.partition(b"c-0001", 1), 0);
            assert_eq!(Partitioner::named(p.name()), Some(p));
            for n in 1..40 {
                assert!(p.partition(format!("c-{n}").as_bytes(), n) < n);
            }
        }
        assert_eq!(
            Partitioner::named("murmur2_random"),
            Some(Partitioner::Murmur2)
        );
        assert_eq!(
            Partitioner::named("consistent_random"),
            Some(Partitioner::Crc32)
        );
        assert_eq!(Partitioner::named("fnv1a"), None);
    }
}
