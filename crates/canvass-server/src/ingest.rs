//! `IngestService`: touchpoints in, idempotent by event id, answered once durable.

use canvass_engine::durable::{Outcome, check_record};
use canvass_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Shared, api::ingest_service_server::IngestService, auth::Rpc, invalid, required, sourced,
};

pub(crate) struct Ingest(pub(crate) Shared);

/// Events per chunk of a stream: each chunk is one submission, durable before the next.
const STREAM_CHUNK: usize = 1024;

/// The record of an event, or which required field it lacks.
fn event_record(event: Option<v1::TouchpointEvent>) -> Result<v1::IngestRecord, Status> {
    let event = event.ok_or_else(|| required("event"))?;
    let record = v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Event(event)),
        at: None,
    };
    if let Some(reason) = check_record(&record) {
        // "field `event.contactId`: required" -> the field path.
        let field = reason.split('`').nth(1).unwrap_or("event").to_string();
        return Err(invalid(&reason, vec![(field, "required".into())]));
    }
    Ok(record)
}

#[tonic::async_trait]
impl IngestService for Ingest {
    async fn ingest_event(
        &self,
        request: Request<v1::IngestEventRequest>,
    ) -> Result<Response<v1::IngestEventResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::IngestEvent)?;
        let record = event_record(request.into_inner().event)?;
        let response = match self.0.submit_one(record, &caller).await? {
            Outcome::Logged { seq } => v1::IngestEventResponse {
                seq,
                duplicate: false,
            },
            Outcome::Duplicate => v1::IngestEventResponse {
                seq: 0,
                duplicate: true,
            },
            Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
                return Err(Status::invalid_argument(reason));
            }
        };
        Ok(Response::new(response))
    }

    async fn ingest_events(
        &self,
        request: Request<Streaming<v1::IngestEventsRequest>>,
    ) -> Result<Response<v1::IngestEventsResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::IngestEvents)?;
        let mut stream = request.into_inner();
        let mut response = v1::IngestEventsResponse::default();
        let mut chunk = Vec::new();
        let mut index = 0usize;
        loop {
            // A broken stream ends the call with its error; chunks answered before stay
            // durable, and sending them again is safe (event ids dedupe).
            let next = stream.message().await?;
            let ended = next.is_none();
            if let Some(m) = next {
                // A bad event refuses the call before its chunk is submitted: nothing of
                // that chunk is applied.
                let record = event_record(m.event).map_err(|s| {
                    Status::invalid_argument(format!("message {index}: {}", s.message()))
                })?;
                chunk.push(sourced(record, &caller));
                index += 1;
            }
            if chunk.len() >= STREAM_CHUNK || (ended && !chunk.is_empty()) {
                for outcome in self.0.submit(std::mem::take(&mut chunk)).await? {
                    match outcome {
                        Outcome::Logged { seq } => {
                            response.accepted += 1;
                            response.last_seq = response.last_seq.max(seq);
                        }
                        Outcome::Duplicate => response.duplicates += 1,
                        Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
                            return Err(Status::invalid_argument(reason));
                        }
                    }
                }
            }
            if ended {
                return Ok(Response::new(response));
            }
        }
    }
}
