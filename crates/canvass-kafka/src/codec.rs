//! Records to inputs and outputs to records: payload formats, keys, headers, source names.
//! Pure: no client here, so every rule is tested without a broker.

use canvass_core::UnixMillis;
use canvass_engine::{
    durable::{Incoming, Sourced, check_record},
    runtime::DEAD_LETTER_PREFIX,
};
use canvass_proto::{json, v1};

use crate::config::Format;

/// Header naming a payload's format.
pub const CONTENT_TYPE: &str = "content-type";
/// Header carrying an action's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// Dead-letter headers: why, and where the record came from.
pub const DLQ_REASON: &str = "canvass-reason";
/// The topic a dead letter was read from.
pub const DLQ_TOPIC: &str = "canvass-source-topic";
/// Its partition.
pub const DLQ_PARTITION: &str = "canvass-source-partition";
/// Its offset.
pub const DLQ_OFFSET: &str = "canvass-source-offset";
/// Dead-letter header: the idempotency key of an action the delivery gave up on (the
/// record's payload is then the action).
pub const DLQ_ACTION: &str = "canvass-action-key";
/// Audit header: `accepted` or `rejected`.
pub const AUDIT_RESULT: &str = "canvass-result";
/// Header naming who sent a record through an engine's API (a forwarded gRPC call): logged
/// as the input's caller, as it would have been on the engine that owns the partition.
pub const CALLER: &str = "canvass-caller";

/// What a topic carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `IngestRecord`s holding a touchpoint event or a contact upsert, keyed by contact id.
    Touchpoints,
    /// `CampaignCommand`s.
    Control,
}

/// A consumed record, as the decoder needs it.
#[derive(Debug, Clone, Copy)]
pub struct RecordView<'a> {
    /// Topic.
    pub topic: &'a str,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key, if any.
    pub key: Option<&'a [u8]>,
    /// Payload, if any.
    pub payload: Option<&'a [u8]>,
    /// The `content-type` header, if any (lossy UTF-8).
    pub content_type: Option<&'a str>,
    /// The record's timestamp, in milliseconds since the epoch, if it has one.
    pub timestamp: Option<i64>,
    /// The [`CALLER`] header, if any (lossy UTF-8).
    pub caller: Option<&'a str>,
}

/// The name a partition's offset is stored under.
#[must_use]
pub fn source_name(topic: &str, partition: i32) -> String {
    format!("kafka:{topic}/{partition}")
}

/// The topic and partition of a source name made by [`source_name`].
#[must_use]
pub fn parse_source_name(name: &str) -> Option<(&str, i32)> {
    let rest = name.strip_prefix("kafka:")?;
    let (topic, partition) = rest.rsplit_once('/')?;
    Some((topic, partition.parse().ok()?))
}

/// Decodes a record into an input: a well-formed record, or the record unchanged with the
/// reason it cannot be used (a dead letter; a payload over `max_bytes` keeps only its first
/// [`DEAD_LETTER_PREFIX`] bytes). Never fails.
#[must_use]
pub fn decode(
    record: &RecordView<'_>,
    role: Role,
    default_format: Format,
    max_bytes: usize,
) -> Sourced {
    let offset = u64::try_from(record.offset).unwrap_or(0);
    let position = v1::SourcePosition {
        source: source_name(record.topic, record.partition),
        offset,
        next_offset: offset + 1,
    };
    let payload = record.payload.unwrap_or_default();
    if payload.len() > max_bytes {
        return Sourced {
            incoming: Incoming::Malformed {
                payload: payload[..DEAD_LETTER_PREFIX.min(payload.len())].to_vec(),
                key: record.key.unwrap_or_default().to_vec(),
                reason: format!(
                    "the payload is {} bytes long, more than the limit of {max_bytes} (`max_record_bytes`); the dead letter keeps its first {DEAD_LETTER_PREFIX} bytes",
                    payload.len()
                ),
            },
            position: Some(position),
            caller: record.caller.map(str::to_string),
        };
    }
    let incoming = match decode_input(record, role, default_format) {
        Ok(input) => Incoming::Record(Box::new(input)),
        Err(reason) => Incoming::Malformed {
            payload: record.payload.unwrap_or_default().to_vec(),
            key: record.key.unwrap_or_default().to_vec(),
            reason,
        },
    };
    Sourced {
        incoming,
        position: Some(position),
        caller: record.caller.map(str::to_string),
    }
}

fn decode_input(
    record: &RecordView<'_>,
    role: Role,
    default_format: Format,
) -> Result<v1::IngestRecord, String> {
    let format = match record.content_type {
        None => default_format,
        Some(value) => Format::from_content_type(value).ok_or_else(|| {
            format!(
                "header {CONTENT_TYPE}: `{value}` is neither {} nor {}",
                Format::Json.content_type(),
                Format::Protobuf.content_type()
            )
        })?,
    };
    let payload = record.payload.ok_or("the record has no payload")?;
    let mut input = match role {
        Role::Touchpoints => {
            let input: v1::IngestRecord = parse(payload, format, "IngestRecord")?;
            check_touchpoint(&input, record.key)?;
            input
        }
        Role::Control => {
            let command: v1::CampaignCommand = parse(payload, format, "CampaignCommand")?;
            v1::IngestRecord {
                input: Some(v1::ingest_record::Input::Command(command)),
                at: None,
            }
        }
    };
    // A contact upsert or a command without its own time happened when it was produced
    // (what the event clock goes by; the wall clock ignores it).
    if input.at.is_none() {
        input.at = record.timestamp.map(|ms| UnixMillis(ms).to_proto());
    }
    Ok(input)
}

fn parse<M>(payload: &[u8], format: Format, what: &str) -> Result<M, String>
where
    M: prost::Message + Default + serde::de::DeserializeOwned,
{
    match format {
        Format::Json => {
            let text = std::str::from_utf8(payload).map_err(|e| format!("not UTF-8: {e}"))?;
            json::from_str(text.trim_end()).map_err(|e| format!("not a JSON {what}: {e}"))
        }
        Format::Protobuf => M::decode(payload).map_err(|e| format!("not a protobuf {what}: {e}")),
    }
}

/// A touchpoint record must hold an event or a contact, have its required fields, and be
/// keyed by its contact id: partitions, ordering and dedupe are per contact.
fn check_touchpoint(input: &v1::IngestRecord, key: Option<&[u8]>) -> Result<(), String> {
    use v1::ingest_record::Input;
    let contact_id = match &input.input {
        Some(Input::Event(e)) => &e.contact_id,
        Some(Input::Contact(c)) => &c.id,
        Some(Input::Command(_)) => {
            return Err(
                "a campaign command on the touchpoints topic: commands go to the control topic"
                    .into(),
            );
        }
        None => return Err(check_record(input).unwrap_or_default()),
    };
    if let Some(reason) = check_record(input) {
        return Err(reason);
    }
    let key = key.ok_or("the record has no key: touchpoints are keyed by contact id")?;
    if key != contact_id.as_bytes() {
        return Err(format!(
            "the record's key `{}` is not its contact id `{contact_id}`: touchpoints are keyed by contact id",
            String::from_utf8_lossy(key)
        ));
    }
    Ok(())
}

/// A record to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutRecord {
    /// Destination topic.
    pub topic: String,
    /// Key (`None`: the record has none).
    pub key: Option<Vec<u8>>,
    /// Payload.
    pub payload: Vec<u8>,
    /// Headers, in order.
    pub headers: Vec<(&'static str, Vec<u8>)>,
}

/// Encodes a message; a message the JSON mapping cannot express is an error, never an
/// empty payload.
fn encode<M: prost::Message + serde::Serialize>(
    message: &M,
    format: Format,
) -> std::io::Result<Vec<u8>> {
    match format {
        Format::Json => json::to_string(message)
            .map(String::into_bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Format::Protobuf => Ok(message.encode_to_vec()),
    }
}

/// A record an engine's API took about a partition another engine owns, for the touchpoints
/// topic: keyed by its contact (as every touchpoint), its format in `content-type`, its
/// caller in [`CALLER`].
///
/// # Errors
/// The record holds no event or contact, or cannot be encoded in `format`.
pub fn touchpoint_record(
    topic: &str,
    record: &v1::IngestRecord,
    caller: &str,
    format: Format,
) -> std::io::Result<OutRecord> {
    use v1::ingest_record::Input;
    let key = match &record.input {
        Some(Input::Event(e)) => e.contact_id.clone(),
        Some(Input::Contact(c)) => c.id.clone(),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "only events and contact upserts go to the touchpoints topic",
            ));
        }
    };
    Ok(OutRecord {
        topic: topic.to_string(),
        key: Some(key.into_bytes()),
        payload: encode(record, format)?,
        headers: vec![
            (CONTENT_TYPE, format.content_type().as_bytes().to_vec()),
            (CALLER, caller.as_bytes().to_vec()),
        ],
    })
}

/// A command an engine's API took, for the control topic (which every engine reads): the
/// command, its format in `content-type`, its caller in [`CALLER`]; its time (`at`) goes in
/// the record's timestamp, which is where the control topic keeps a command's time.
///
/// # Errors
/// The record holds no command, or it cannot be encoded in `format`.
pub fn control_record(
    topic: &str,
    record: &v1::IngestRecord,
    caller: &str,
    format: Format,
) -> std::io::Result<(OutRecord, Option<i64>)> {
    let Some(v1::ingest_record::Input::Command(command)) = &record.input else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "only commands go to the control topic",
        ));
    };
    let record_time = record.at.as_ref().map(|t| UnixMillis::from_proto(t).0);
    Ok((
        OutRecord {
            topic: topic.to_string(),
            key: None,
            payload: encode(command, format)?,
            headers: vec![
                (CONTENT_TYPE, format.content_type().as_bytes().to_vec()),
                (CALLER, caller.as_bytes().to_vec()),
            ],
        },
        record_time,
    ))
}

/// An action for the actions topic: keyed by contact, its idempotency key in a header.
///
/// # Errors
/// The action cannot be encoded in `format`.
pub fn action_record(
    topic: &str,
    action: &v1::Action,
    format: Format,
) -> std::io::Result<OutRecord> {
    Ok(OutRecord {
        topic: topic.to_string(),
        key: Some(action.contact_id.clone().into_bytes()),
        payload: encode(action, format)?,
        headers: vec![
            (IDEMPOTENCY_KEY, action.idempotency_key.clone().into_bytes()),
            (CONTENT_TYPE, format.content_type().as_bytes().to_vec()),
        ],
    })
}

/// A queued publication as a record: command results to the audit topic (keyed by
/// campaign), dead letters to the dead-letter topic (unchanged, the reason and origin in
/// headers). `None`: an empty publication.
///
/// # Errors
/// A command result cannot be encoded in `format`.
pub fn publication_record(
    publication: &v1::Publication,
    audit_topic: &str,
    dead_letter_topic: &str,
    format: Format,
) -> std::io::Result<Option<OutRecord>> {
    let Some(kind) = publication.kind.as_ref() else {
        return Ok(None);
    };
    Ok(match kind {
        v1::publication::Kind::CommandResult(result) => {
            let campaign = result
                .command
                .as_ref()
                .and_then(|c| c.command.as_ref())
                .map(canvass_core::lifecycle::campaign_of)
                .unwrap_or_default();
            let outcome = if result.accepted {
                "accepted"
            } else {
                "rejected"
            };
            Some(OutRecord {
                topic: audit_topic.to_string(),
                key: Some(campaign.as_bytes().to_vec()),
                payload: encode(result, format)?,
                headers: vec![
                    (CONTENT_TYPE, format.content_type().as_bytes().to_vec()),
                    (AUDIT_RESULT, outcome.as_bytes().to_vec()),
                ],
            })
        }
        v1::publication::Kind::DeadLetter(letter) => {
            let mut headers = vec![(DLQ_REASON, letter.reason.clone().into_bytes())];
            if let Some(position) = &letter.source {
                let (topic, partition) = parse_source_name(&position.source)
                    .map_or((position.source.as_str(), None), |(t, p)| (t, Some(p)));
                headers.push((DLQ_TOPIC, topic.as_bytes().to_vec()));
                if let Some(partition) = partition {
                    headers.push((DLQ_PARTITION, partition.to_string().into_bytes()));
                }
                headers.push((DLQ_OFFSET, position.offset.to_string().into_bytes()));
            }
            // An action the delivery gave up on goes out as the action itself.
            let payload = match &letter.action {
                Some(action) => {
                    headers.push((DLQ_ACTION, action.idempotency_key.clone().into_bytes()));
                    encode(action, format)?
                }
                None => letter.payload.clone(),
            };
            Some(OutRecord {
                topic: dead_letter_topic.to_string(),
                // A record consumed without a key is stored with an empty one.
                key: (!letter.key.is_empty()).then(|| letter.key.clone()),
                payload,
                headers,
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;
    use crate::KafkaConfig;

    /// The decoder with the default payload limit.
    fn decode(record: &RecordView<'_>, role: Role, format: Format) -> Sourced {
        super::decode(
            record,
            role,
            format,
            KafkaConfig::default().max_record_bytes,
        )
    }

    #[test]
    fn a_payload_over_the_limit_is_a_dead_letter_keeping_its_first_bytes() {
        let big = vec![b'x'; 10_000];
        let s = super::decode(
            &view(Some(b"c1"), &big),
            Role::Touchpoints,
            Format::Json,
            5000,
        );
        let Incoming::Malformed {
            payload, reason, ..
        } = s.incoming
        else {
            panic!("not a dead letter")
        };
        assert_eq!(payload.len(), DEAD_LETTER_PREFIX);
        assert!(
            reason.contains("10000 bytes long, more than the limit of 5000"),
            "{reason}"
        );
    }

    fn view<'a>(key: Option<&'a [u8]>, payload: &'a [u8]) -> RecordView<'a> {
        RecordView {
            topic: "tp",
            partition: 2,
            offset: 41,
            key,
            payload: Some(payload),
            content_type: None,
            timestamp: Some(1_772_442_000_000),
            caller: None,
        }
    }

    #[test]
    fn a_forwarded_record_decodes_as_it_was_taken_with_its_caller() {
        let event = v1::IngestRecord {
            input: Some(v1::ingest_record::Input::Event(v1::TouchpointEvent {
                id: "e1".into(),
                contact_id: "c1".into(),
                r#type: "email.opened".into(),
                occurred_at: Some(UnixMillis(1_772_442_000_000).to_proto()),
                ..Default::default()
            })),
            at: None,
        };
        for format in [Format::Json, Format::Protobuf] {
            let out = touchpoint_record("tp", &event, "ops-team", format).unwrap();
            assert_eq!(out.key.as_deref(), Some(&b"c1"[..]));
            let content_type = String::from_utf8(out.headers[0].1.clone()).unwrap();
            let mut record = view(out.key.as_deref(), &out.payload);
            record.content_type = Some(&content_type);
            record.caller = Some("ops-team");
            let s = super::decode(&record, Role::Touchpoints, Format::Json, 1 << 20);
            let Incoming::Record(got) = s.incoming else {
                panic!("{format:?}: not decoded: {:?}", s.incoming)
            };
            // A record without its own time takes the record's timestamp, as any touchpoint.
            assert_eq!(got.input, event.input, "{format:?}");
            assert_eq!(s.caller.as_deref(), Some("ops-team"));
        }
        let command = v1::IngestRecord {
            input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                actor: "alice".into(),
                reason: "go".into(),
                command: Some(v1::campaign_command::Command::Launch("welcome".into())),
            })),
            at: Some(UnixMillis(1_772_442_123_000).to_proto()),
        };
        let (out, timestamp) = control_record("ctl", &command, "alice", Format::Json).unwrap();
        assert_eq!(timestamp, Some(1_772_442_123_000));
        let mut record = view(None, &out.payload);
        record.topic = "ctl";
        record.timestamp = timestamp;
        let s = super::decode(&record, Role::Control, Format::Json, 1 << 20);
        let Incoming::Record(got) = s.incoming else {
            panic!("not decoded")
        };
        assert_eq!(*got, command, "the command and its time, as taken");
        assert!(touchpoint_record("tp", &command, "x", Format::Json).is_err());
        assert!(control_record("ctl", &event, "x", Format::Json).is_err());
    }

    fn reason(sourced: &Sourced) -> String {
        match &sourced.incoming {
            Incoming::Malformed { reason, .. } => reason.clone(),
            other => panic!("accepted: {other:?}"),
        }
    }

    const EVENT: &str = r#"{"event":{"id":"e1","type":"email.opened","contactId":"c1","occurredAt":"2026-03-02T09:00:00Z"}}"#;

    #[test]
    fn a_touchpoint_keyed_by_its_contact_is_an_input_at_its_position() {
        let s = decode(
            &view(Some(b"c1"), EVENT.as_bytes()),
            Role::Touchpoints,
            Format::Json,
        );
        assert!(matches!(s.incoming, Incoming::Record(_)));
        let p = s.position.unwrap();
        assert_eq!(
            (p.source.as_str(), p.offset, p.next_offset),
            ("kafka:tp/2", 41, 42)
        );
        assert_eq!(parse_source_name(&p.source), Some(("tp", 2)));
    }

    #[test]
    fn protobuf_is_chosen_by_header_or_by_default() {
        let record: v1::IngestRecord = json::from_str(EVENT).unwrap();
        let bytes = record.encode_to_vec();
        let mut v = view(Some(b"c1"), &bytes);
        let s = decode(&v, Role::Touchpoints, Format::Protobuf);
        assert!(matches!(s.incoming, Incoming::Record(_)));
        v.content_type = Some("application/x-protobuf");
        let s = decode(&v, Role::Touchpoints, Format::Json);
        assert!(matches!(s.incoming, Incoming::Record(_)));
        v.content_type = Some("text/csv");
        assert!(reason(&decode(&v, Role::Touchpoints, Format::Json)).contains("text/csv"));
    }

    #[test]
    fn unusable_records_keep_payload_and_key_with_a_reason() {
        let s = decode(&view(Some(b"k"), b"{nope"), Role::Touchpoints, Format::Json);
        match &s.incoming {
            Incoming::Malformed {
                payload,
                key,
                reason,
            } => {
                assert_eq!(payload, b"{nope");
                assert_eq!(key, b"k");
                assert!(reason.starts_with("not a JSON IngestRecord"), "{reason}");
            }
            other => panic!("accepted: {other:?}"),
        }
        let wrong_key = decode(
            &view(Some(b"c2"), EVENT.as_bytes()),
            Role::Touchpoints,
            Format::Json,
        );
        assert!(reason(&wrong_key).contains("key `c2` is not its contact id `c1`"));
        let no_key = decode(
            &view(None, EVENT.as_bytes()),
            Role::Touchpoints,
            Format::Json,
        );
        assert!(reason(&no_key).contains("no key"));
        let missing = decode(
            &view(
                Some(b"c1"),
                br#"{"event":{"id":"e1","contactId":"c1","occurredAt":"2026-03-02T09:00:00Z"}}"#,
            ),
            Role::Touchpoints,
            Format::Json,
        );
        assert!(reason(&missing).contains("event.type"));
        let command = decode(
            &view(Some(b"c1"), br#"{"command":{"actor":"ann","launch":"x"}}"#),
            Role::Touchpoints,
            Format::Json,
        );
        assert!(reason(&command).contains("control topic"));
    }

    #[test]
    fn control_records_are_commands() {
        let s = decode(
            &view(None, br#"{"actor":"ann","reason":"go","launch":"welcome"}"#),
            Role::Control,
            Format::Json,
        );
        match s.incoming {
            Incoming::Record(r) => {
                assert!(matches!(
                    r.input,
                    Some(v1::ingest_record::Input::Command(ref c)) if c.actor == "ann"
                ));
                assert_eq!(
                    r.at.as_ref().map(UnixMillis::from_proto),
                    Some(UnixMillis(1_772_442_000_000)),
                    "a command without a time takes the record's"
                );
            }
            other => panic!("not a record: {other:?}"),
        }
    }

    #[test]
    fn dead_letters_go_out_unchanged_with_their_origin() {
        let letter = v1::DeadLetter {
            source: Some(v1::SourcePosition {
                source: source_name("tp", 3),
                offset: 7,
                next_offset: 8,
            }),
            payload: b"{nope".to_vec(),
            reason: "bad".into(),
            rejected_at: None,
            key: b"c9".to_vec(),
            ..Default::default()
        };
        let p = v1::Publication {
            kind: Some(v1::publication::Kind::DeadLetter(letter)),
        };
        let r = publication_record(&p, "audit", "dlq", Format::Json)
            .unwrap()
            .unwrap();
        assert_eq!(r.topic, "dlq");
        assert_eq!(r.key.as_deref(), Some(&b"c9"[..]));
        assert_eq!(r.payload, b"{nope");
        assert_eq!(
            r.headers,
            vec![
                (DLQ_REASON, b"bad".to_vec()),
                (DLQ_TOPIC, b"tp".to_vec()),
                (DLQ_PARTITION, b"3".to_vec()),
                (DLQ_OFFSET, b"7".to_vec()),
            ]
        );
    }

    #[test]
    fn command_results_are_keyed_by_campaign() {
        let p = v1::Publication {
            kind: Some(v1::publication::Kind::CommandResult(v1::CommandResult {
                command: Some(v1::CampaignCommand {
                    actor: "ann".into(),
                    reason: String::new(),
                    command: Some(v1::campaign_command::Command::Launch("welcome".into())),
                }),
                accepted: false,
                reason: "not approved".into(),
                ..Default::default()
            })),
        };
        let r = publication_record(&p, "audit", "dlq", Format::Json)
            .unwrap()
            .unwrap();
        assert_eq!(r.topic, "audit");
        assert_eq!(r.key.as_deref(), Some(&b"welcome"[..]));
        assert!(r.headers.contains(&(AUDIT_RESULT, b"rejected".to_vec())));
        let text = String::from_utf8(r.payload).unwrap();
        assert!(text.contains("\"reason\":\"not approved\""), "{text}");
    }
}
