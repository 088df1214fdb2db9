//! Key layout of the one sled tree: a namespace byte, then big-endian fields so that byte
//! order is the order we scan in.
//!
//! Everything lives in one tree so that all the writes of a group commit go in one
//! `apply_batch`, which sled applies atomically, even across a crash.

use canvass_core::{TimerId, UnixMillis, machine::TimerKind};

/// The event log: `L` + seq.
pub const LOG: u8 = b'L';
/// Contact states: `C` + partition + contact id.
pub const CONTACT: u8 = b'C';
/// Response-group membership: `G` + campaign + 0 + group + 0 + contact.
pub const GROUP: u8 = b'G';
/// Per-campaign counters: `N` + campaign.
pub const COUNTERS: u8 = b'N';
/// Timers by due time: `T` + due + timer key.
pub const TIMER: u8 = b'T';
/// Actions not yet delivered: `O` + log seq + action index.
pub const OUTBOX: u8 = b'O';
/// Source offsets: `S` + source name.
pub const OFFSET: u8 = b'S';
/// Campaign specs: `P` + campaign + 0 + version.
pub const SPEC: u8 = b'P';
/// Campaign lifecycles: `Q` + campaign.
pub const LIFECYCLE: u8 = b'Q';
/// The engine-wide policy: `Y` alone.
pub const POLICY: u8 = b'Y';
/// The catalog of marketing materials: `A` + material id.
pub const MATERIAL: u8 = b'A';
/// Dead letters: `X` + number.
pub const DEAD_LETTER: u8 = b'X';
/// Publications waiting for a broker: `U` + number.
pub const PUBLICATION: u8 = b'U';
/// Metadata: `M` + name.
pub const META: u8 = b'M';
/// A checkpoint being written: `K` + its last log seq + chunk number (`K` + seq alone: the
/// header, present once every chunk is).
pub const CHECKPOINT: u8 = b'K';
/// Sweeps in progress, by the command's log sequence number.
pub const SWEEP: u8 = b'W';
/// What the engine counts about its inputs: `E` alone.
pub const INPUTS: u8 = b'E';
/// The last changelog frame the store holds, and its offset there: `F` alone (see
/// [`crate::Store::shipped`]).
pub const SHIPPED: u8 = b'F';
/// Commands journaled before the partitions apply them: `J` + number (see
/// [`crate::Store::journal_commands`]).
pub const JOURNAL: u8 = b'J';

/// The namespaces rebuilt from the log by replay. Dead letters, publications, metadata and
/// source offsets are not: offsets are written with each commit's log frame, in the same
/// atomic batch, including those of inputs never logged (duplicates, dead letters), so the
/// log holds inputs only and a replay leaves the offsets as they are.
pub const PROJECTIONS: [u8; 11] = [
    CONTACT, GROUP, COUNTERS, TIMER, OUTBOX, SPEC, LIFECYCLE, POLICY, MATERIAL, SWEEP, INPUTS,
];

/// The namespaces written at every commit, straight to sled; the other projections wait
/// for a checkpoint.
pub fn written_at_commit(key: &[u8]) -> bool {
    matches!(
        key.first(),
        Some(&(LOG | OFFSET | DEAD_LETTER | PUBLICATION))
    )
}

/// Partition of the embedded sources: one engine owns everything.
pub const EMBEDDED_PARTITION: u16 = 0;

pub fn material(id: &str) -> Vec<u8> {
    let mut k = vec![MATERIAL];
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn sweep(command_seq: u64) -> Vec<u8> {
    let mut k = vec![SWEEP];
    k.extend_from_slice(&command_seq.to_be_bytes());
    k
}

pub fn log(seq: u64) -> Vec<u8> {
    let mut k = vec![LOG];
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

pub fn contact(partition: u16, id: &str) -> Vec<u8> {
    let mut k = vec![CONTACT];
    k.extend_from_slice(&partition.to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn group_prefix(campaign: &str, group: &str) -> Vec<u8> {
    let mut k = vec![GROUP];
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(group.as_bytes());
    k.push(0);
    k
}

pub fn group(campaign: &str, group: &str, contact: &str) -> Vec<u8> {
    let mut k = group_prefix(campaign, group);
    k.extend_from_slice(contact.as_bytes());
    k
}

pub fn counters(campaign: &str) -> Vec<u8> {
    let mut k = vec![COUNTERS];
    k.extend_from_slice(campaign.as_bytes());
    k
}

/// Signed millis as big-endian bytes that sort like the numbers (sign bit flipped).
pub fn time(t: UnixMillis) -> [u8; 8] {
    #[allow(clippy::cast_sign_loss)]
    let flipped = (t.0 as u64) ^ (1 << 63);
    flipped.to_be_bytes()
}

pub fn time_from(bytes: &[u8]) -> Option<UnixMillis> {
    let b: [u8; 8] = bytes.get(..8)?.try_into().ok()?;
    #[allow(clippy::cast_possible_wrap)]
    Some(UnixMillis((u64::from_be_bytes(b) ^ (1 << 63)) as i64))
}

/// Timer id as bytes: entry seq, kind, index, campaign (0-terminated), contact; in the order
/// of `TimerId`'s own, so timers due together come out of the store in the order the core
/// defines. Parses back.
pub fn timer_id(id: &TimerId) -> Vec<u8> {
    let mut k = Vec::with_capacity(id.contact_id.len() + id.campaign_id.len() + 15);
    k.extend_from_slice(&id.entry_seq.to_be_bytes());
    k.push(timer_kind_byte(id.kind));
    k.extend_from_slice(&id.index.to_be_bytes());
    k.extend_from_slice(id.campaign_id.as_bytes());
    k.push(0);
    k.extend_from_slice(id.contact_id.as_bytes());
    k
}

pub fn timer_id_from(bytes: &[u8]) -> Option<TimerId> {
    let entry_seq = u64::from_be_bytes(bytes.get(..8)?.try_into().ok()?);
    let kind = match bytes.get(8)? {
        0 => TimerKind::Transition,
        1 => TimerKind::Deferred,
        2 => TimerKind::Sla,
        _ => return None,
    };
    let index = u32::from_be_bytes(bytes.get(9..13)?.try_into().ok()?);
    let rest = bytes.get(13..)?;
    let nul = rest.iter().position(|b| *b == 0)?;
    Some(TimerId {
        campaign_id: String::from_utf8(rest[..nul].to_vec()).ok()?,
        contact_id: String::from_utf8(rest[nul + 1..].to_vec()).ok()?,
        entry_seq,
        kind,
        index,
    })
}

fn timer_kind_byte(kind: TimerKind) -> u8 {
    match kind {
        TimerKind::Transition => 0,
        TimerKind::Deferred => 1,
        TimerKind::Sla => 2,
    }
}

pub fn timer(due: UnixMillis, id: &TimerId) -> Vec<u8> {
    let mut k = vec![TIMER];
    k.extend_from_slice(&time(due));
    k.extend_from_slice(&timer_id(id));
    k
}

pub fn outbox(seq: u64, index: u32) -> Vec<u8> {
    let mut k = vec![OUTBOX];
    k.extend_from_slice(&seq.to_be_bytes());
    k.extend_from_slice(&index.to_be_bytes());
    k
}

pub fn offset(source: &str) -> Vec<u8> {
    let mut k = vec![OFFSET];
    k.extend_from_slice(source.as_bytes());
    k
}

pub fn spec(campaign: &str, version: u32) -> Vec<u8> {
    let mut k = vec![SPEC];
    k.extend_from_slice(campaign.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

pub fn lifecycle(campaign: &str) -> Vec<u8> {
    let mut k = vec![LIFECYCLE];
    k.extend_from_slice(campaign.as_bytes());
    k
}

pub fn dead_letter(n: u64) -> Vec<u8> {
    let mut k = vec![DEAD_LETTER];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn publication(n: u64) -> Vec<u8> {
    let mut k = vec![PUBLICATION];
    k.extend_from_slice(&n.to_be_bytes());
    k
}

pub fn checkpoint_chunk(through: u64, chunk: u32) -> Vec<u8> {
    let mut k = vec![CHECKPOINT];
    k.extend_from_slice(&through.to_be_bytes());
    k.extend_from_slice(&chunk.to_be_bytes());
    k
}

pub fn checkpoint_header(through: u64) -> Vec<u8> {
    let mut k = vec![CHECKPOINT];
    k.extend_from_slice(&through.to_be_bytes());
    k
}

pub fn meta(name: &str) -> Vec<u8> {
    let mut k = vec![META];
    k.extend_from_slice(name.as_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_keys_sort_like_times() {
        let times = [i64::MIN, -1_000, -1, 0, 1, 1_000, i64::MAX].map(UnixMillis);
        let keys: Vec<[u8; 8]> = times.iter().map(|t| time(*t)).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]));
        for t in times {
            assert_eq!(time_from(&time(t)), Some(t));
        }
    }

    #[test]
    fn timer_ids_parse_back_whatever_the_contact_id() {
        for contact in ["c-1", "a\0b", "", "ünïcode/with:separators"] {
            for kind in [TimerKind::Transition, TimerKind::Deferred, TimerKind::Sla] {
                let id = TimerId {
                    contact_id: contact.into(),
                    campaign_id: "camp".into(),
                    entry_seq: 7,
                    kind,
                    index: 2,
                };
                assert_eq!(timer_id_from(&timer_id(&id)), Some(id));
            }
        }
    }

    /// The store's order of timers due together is the core's order of their ids.
    #[test]
    fn timer_keys_sort_like_timer_ids() {
        let mut ids = Vec::new();
        for entry_seq in [1, 2] {
            for kind in [TimerKind::Sla, TimerKind::Transition, TimerKind::Deferred] {
                for index in [3, 0] {
                    for campaign in ["b", "a"] {
                        for contact in ["z", "a\0x", ""] {
                            ids.push(TimerId {
                                contact_id: contact.into(),
                                campaign_id: campaign.into(),
                                entry_seq,
                                kind,
                                index,
                            });
                        }
                    }
                }
            }
        }
        let mut by_key = ids.clone();
        by_key.sort_by_key(timer_id);
        let mut by_id = ids;
        by_id.sort();
        assert_eq!(by_key, by_id);
    }
}
