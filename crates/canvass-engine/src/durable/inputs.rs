//! What a source hands the engine: an input with where it came from, and the checks every
//! input path is held to.

use canvass_core::UnixMillis;
use canvass_proto::{v1, wkt};

/// One input read from a source, or a line that could not be read as one.
#[derive(Debug, Clone)]
pub enum Incoming {
    /// A well-formed input (boxed: it is large).
    Record(Box<v1::IngestRecord>),
    /// Results reported for delivered actions (by the gRPC delivery): logged, and the
    /// actions leave the outbox. Acknowledgements of actions no longer queued are dropped.
    Acks(v1::ActionAcks),
    /// A line that is not an input: parked as a dead letter.
    Malformed {
        /// The raw bytes, unchanged.
        payload: Vec<u8>,
        /// The record's key, unchanged (empty for sources without keys).
        key: Vec<u8>,
        /// Why it was rejected.
        reason: String,
    },
    /// A dead letter of the partition it is routed to was redriven: its input was submitted
    /// again (and committed) first. Marks it, so that it is not redriven twice; not logged.
    Redriven {
        /// The partition that holds the letter.
        partition: u32,
        /// The letter's number in its partition.
        letter: u64,
        /// Who redrove it.
        by: String,
    },
}

/// An input with where it came from.
#[derive(Debug, Clone)]
pub struct Sourced {
    /// The input.
    pub incoming: Incoming,
    /// Source position; the source's stored offset moves to `next_offset` with this input.
    pub position: Option<v1::SourcePosition>,
    /// Who submitted it through an authenticated API (logged with it); `None` for file and
    /// Kafka sources.
    pub caller: Option<String>,
}

/// The latest time an input may carry, or the event clock be moved to: the times the engine
/// derives from it (a deadline, a timeout) lie up to [`MAX_SPAN`](canvass_core::time::MAX_SPAN)
/// after it and must stay within the JSON mapping's range (year 9999) too.
#[must_use]
pub fn latest_input_time() -> UnixMillis {
    UnixMillis((253_402_300_799 - canvass_core::time::MAX_SPAN.0 / 1000) * 1000)
}

/// Requirements the JSON mapping cannot express, and the bounds it does express that a
/// protobuf input (Kafka, gRPC) could break: every input path is held to the same.
pub fn check_record(record: &v1::IngestRecord) -> Option<String> {
    use v1::ingest_record::Input;
    let missing = |field: &str| Some(format!("field `{field}`: required"));
    let latest = latest_input_time().to_proto();
    let out_of_range = |field: &str, t: Option<&wkt::Timestamp>| {
        let t = t?;
        if let Some(why) = t.range_problem() {
            return Some(format!("field `{field}`: {why}"));
        }
        (*t > latest).then(|| {
            format!(
                "field `{field}`: {t} is after {latest}: the times derived from it (up to 100 years later) must stay within year 9999"
            )
        })
    };
    if let Some(problem) = out_of_range("at", record.at.as_ref()) {
        return Some(problem);
    }
    match &record.input {
        None => Some("the record holds none of `contact`, `event`, `command`".into()),
        Some(Input::Contact(c)) if c.id.trim().is_empty() => missing("contact.id"),
        Some(Input::Contact(c)) => c
            .purchases
            .iter()
            .enumerate()
            .find_map(|(i, p)| out_of_range(&format!("contact.purchases[{i}].at"), p.at.as_ref()))
            .or_else(|| {
                c.surveys.iter().enumerate().find_map(|(i, s)| {
                    out_of_range(&format!("contact.surveys[{i}].at"), s.at.as_ref()).or_else(|| {
                        canvass_core::satisfaction::score_problem(
                            s.score,
                            &format!("contact.surveys[{i}].score"),
                        )
                    })
                })
            })
            .or_else(|| {
                c.issues.iter().enumerate().find_map(|(i, issue)| {
                    out_of_range(&format!("contact.issues[{i}].at"), issue.at.as_ref())
                })
            }),
        Some(Input::Event(e)) if e.id.trim().is_empty() => missing("event.id"),
        Some(Input::Event(e)) if e.r#type.trim().is_empty() => missing("event.type"),
        Some(Input::Event(e)) if e.contact_id.trim().is_empty() => missing("event.contactId"),
        Some(Input::Event(e)) if e.occurred_at.is_none() => missing("event.occurredAt"),
        Some(Input::Event(e)) => out_of_range("event.occurredAt", e.occurred_at.as_ref())
            .or_else(|| canvass_core::satisfaction::problem(e)),
        Some(Input::Command(_)) => None,
    }
}
