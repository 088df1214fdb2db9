//! Dead letters for operators: their ids across partitions, the input a letter holds (to
//! redrive it through the normal path), and the engine's status figures that `inspect` and
//! `OperatorService.GetStatus` both print.

use canvass_proto::v1;
use canvass_store::Stores;

/// A dead letter's id: its number, prefixed with its partition but for partition 0
/// (`17`, `3:17`).
#[must_use]
pub fn letter_id(partition: u32, number: u64) -> String {
    match partition {
        0 => number.to_string(),
        p => format!("{p}:{number}"),
    }
}

/// The partition and number an id names, if it is one.
#[must_use]
pub fn parse_letter_id(id: &str) -> Option<(u32, u64)> {
    match id.trim().split_once(':') {
        Some((p, n)) => Some((p.parse().ok()?, n.parse().ok()?)),
        None => Some((0, id.trim().parse().ok()?)),
    }
}

/// Every dead letter with its id, oldest first (by the time it was parked, then id).
///
/// # Errors
/// A store error.
pub fn all_letters(stores: &Stores) -> Result<Vec<(String, v1::DeadLetter)>, canvass_store::Error> {
    let mut out = Vec::new();
    for (p, store) in stores.iter().enumerate() {
        let partition = u32::try_from(p).unwrap_or(u32::MAX);
        for (n, letter) in store.dead_letters_numbered()? {
            out.push(((partition, n), letter));
        }
    }
    out.sort_by_key(|((p, n), l)| {
        (
            l.rejected_at
                .map(|t| (t.seconds, t.nanos))
                .unwrap_or_default(),
            *p,
            *n,
        )
    });
    Ok(out
        .into_iter()
        .map(|((p, n), l)| (letter_id(p, n), l))
        .collect())
}

/// The input a dead letter holds, to submit again; or why it cannot be.
///
/// # Errors
/// The letter was redriven already, holds an action, or its payload does not decode as an
/// input (a line that is not JSON stays what it was).
pub fn redrive_input(letter: &v1::DeadLetter) -> Result<v1::IngestRecord, String> {
    use prost::Message as _;
    if letter.redriven_at.is_some() {
        return Err(format!(
            "redriven already (by {})",
            if letter.redriven_by.is_empty() {
                "someone"
            } else {
                &letter.redriven_by
            }
        ));
    }
    if let Some(action) = &letter.action {
        return Err(format!(
            "an action given up on ({}), not an input: it is not redriven",
            action.idempotency_key
        ));
    }
    let command = |c: v1::CampaignCommand| v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Command(c)),
        at: None,
    };
    match letter.format.as_str() {
        "protobuf-record" => v1::IngestRecord::decode(letter.payload.as_slice())
            .map_err(|e| format!("the stored record does not decode: {e}")),
        "protobuf-command" => v1::CampaignCommand::decode(letter.payload.as_slice())
            .map(command)
            .map_err(|e| format!("the stored command does not decode: {e}")),
        _ => {
            let text = std::str::from_utf8(&letter.payload).map_err(|_| {
                "the payload is not text (a protobuf record of unknown kind)".to_string()
            })?;
            // A line of a file or a touchpoint record, else a bare command (the control topic).
            canvass_proto::json::from_str::<v1::IngestRecord>(text.trim())
                .or_else(|first| {
                    canvass_proto::json::from_str::<v1::CampaignCommand>(text.trim())
                        .map(command)
                        .map_err(|_| first)
                })
                .map_err(|e| format!("the payload is still not an input: {e}"))
        }
    }
}

/// Whether `redrive --all` takes a letter: not redriven yet, an input (not an action given
/// up on), its reason containing `reason_contains`.
#[must_use]
pub fn redrivable(letter: &v1::DeadLetter, reason_contains: &str) -> bool {
    letter.redriven_at.is_none()
        && letter.action.is_none()
        && letter.reason.contains(reason_contains)
}

/// Who redrove a letter, as its mark and the input's actor say it.
#[must_use]
pub fn redriver(who: &str, why: &str) -> String {
    if why.is_empty() {
        format!("{who} (redrive)")
    } else {
        format!("{who} (redrive: {why})")
    }
}

/// What became of a redriven input, in its result.
pub fn note_outcome(result: &mut v1::RedriveResult, outcome: &crate::durable::Outcome) {
    use crate::durable::Outcome;
    match outcome {
        Outcome::Logged { seq } => {
            result.applied = true;
            result.seq = *seq;
        }
        Outcome::Duplicate => result.duplicate = true,
        Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
            result.reason = format!("refused again (a new dead letter): {reason}");
        }
        Outcome::Noted => {}
        Outcome::Elsewhere { partition } => {
            result.reason = format!("partition {partition} is owned by another engine now");
        }
    }
}

/// The figures of the engine's status, summed over the partitions.
///
/// # Errors
/// A store error.
pub fn status(stores: &Stores, layout: &str) -> Result<v1::EngineStatus, canvass_store::Error> {
    let mut status = v1::EngineStatus {
        layout: layout.to_string(),
        ..v1::EngineStatus::default()
    };
    status.policy = stores.partition(0).policy()?;
    for store in stores.iter() {
        status.log_entries += store.last_seq()?;
        status.checkpointed += store.checkpoint_seq()?;
        status.contacts += store.contact_ids(canvass_store::EMBEDDED_PARTITION).count() as u64;
        status.timers += store.timers(None).count() as u64;
        status.outbox += store.outbox_len()?;
        for (_, letter) in store.dead_letters_numbered()? {
            status.dead_letters += 1;
            status.dead_letters_open += u64::from(letter.redriven_at.is_none());
        }
    }
    status.late_events = crate::reports::input_counters(stores)?.late_events;
    for lifecycle in crate::reports::lifecycles(stores)? {
        let counters = crate::reports::counters(stores, &lifecycle.campaign_id)?;
        status.campaigns.push(v1::CampaignStatusLine {
            lifecycle: Some(lifecycle),
            counters: Some(counters),
        });
    }
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_name_partition_and_number() {
        assert_eq!(letter_id(0, 17), "17");
        assert_eq!(letter_id(3, 17), "3:17");
        assert_eq!(parse_letter_id("17"), Some((0, 17)));
        assert_eq!(parse_letter_id("3:17"), Some((3, 17)));
        assert_eq!(parse_letter_id("x"), None);
        assert_eq!(parse_letter_id("3:"), None);
    }

    #[test]
    fn a_letter_gives_back_its_input_in_each_format() {
        use prost::Message as _;
        let record = v1::IngestRecord {
            input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                actor: "ops".into(),
                command: Some(v1::campaign_command::Command::Launch("c".into())),
                ..Default::default()
            })),
            at: None,
        };
        let letter = |payload: Vec<u8>, format: &str| v1::DeadLetter {
            payload,
            format: format.into(),
            ..Default::default()
        };
        assert_eq!(
            redrive_input(&letter(record.encode_to_vec(), "protobuf-record")).unwrap(),
            record
        );
        let Some(v1::ingest_record::Input::Command(c)) = &record.input else {
            unreachable!()
        };
        assert_eq!(
            redrive_input(&letter(c.encode_to_vec(), "protobuf-command")).unwrap(),
            record
        );
        let line = canvass_proto::json::to_string(&record).unwrap();
        assert_eq!(
            redrive_input(&letter(line.into_bytes(), "")).unwrap(),
            record
        );
        let bare = canvass_proto::json::to_string(c).unwrap();
        assert_eq!(
            redrive_input(&letter(bare.into_bytes(), "")).unwrap(),
            record
        );
        let e = redrive_input(&letter(b"{nope".to_vec(), "")).unwrap_err();
        assert!(e.starts_with("the payload is still not an input"), "{e}");
        let mut done = letter(Vec::new(), "");
        done.redriven_at = Some(canvass_core::UnixMillis(0).to_proto());
        done.redriven_by = "ops".into();
        assert_eq!(
            redrive_input(&done).unwrap_err(),
            "redriven already (by ops)"
        );
    }
}
