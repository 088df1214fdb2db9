//! `IngestService`: touchpoints in, idempotent by event id, answered once durable.

use canvass_engine::durable::{Outcome, check_record};
use canvass_proto::v1;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Shared, api::ingest_service_server::IngestService, auth::Rpc, group::Answer, refused_record,
    required,
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
        return Err(refused_record(&reason));
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
        let outcome = match self.0.submit_one(record, &caller).await? {
            Answer::Engine(outcome) => outcome,
            Answer::Queued(queued) => {
                return Ok(Response::new(v1::IngestEventResponse {
                    seq: 0,
                    duplicate: false,
                    queued: Some(queued),
                }));
            }
        };
        let response = match outcome {
            Outcome::Logged { seq } => v1::IngestEventResponse {
                seq,
                duplicate: false,
                queued: None,
            },
            Outcome::Duplicate => v1::IngestEventResponse {
                seq: 0,
                duplicate: true,
                queued: None,
            },
            Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
                return Err(Status::invalid_argument(reason));
            }
            Outcome::Noted => return Err(crate::not_an_input()),
            Outcome::Elsewhere { partition } => return Err(crate::elsewhere(partition)),
        };
        Ok(Response::new(response))
    }

    async fn ingest_events(
        &self,
        request: Request<Streaming<v1::IngestEventsRequest>>,
    ) -> Result<Response<v1::IngestEventsResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::IngestEvents)?;
        let mut response = v1::IngestEventsResponse::default();
        // Sending a broken stream again is safe: event ids dedupe.
        self.0
            .submit_stream(
                request.into_inner(),
                &caller,
                STREAM_CHUNK,
                |m: v1::IngestEventsRequest| event_record(m.event),
                |answer| {
                    let outcome = match answer {
                        Answer::Engine(outcome) => outcome,
                        Answer::Queued(_) => {
                            response.queued += 1;
                            return Ok(());
                        }
                    };
                    match outcome {
                        Outcome::Logged { seq } => {
                            response.accepted += 1;
                            response.last_seq = response.last_seq.max(seq);
                        }
                        Outcome::Duplicate => response.duplicates += 1,
                        Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
                            return Err(Status::invalid_argument(reason));
                        }
                        Outcome::Noted => return Err(crate::not_an_input()),
                        Outcome::Elsewhere { partition } => {
                            return Err(crate::elsewhere(partition));
                        }
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(response))
    }
}
