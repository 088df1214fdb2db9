//! `OperatorService`: what a running engine holds, and its dead letters (listed, shown,
//! redriven), for the operator commands that cannot open a store the engine holds locked
//! (`canvass inspect|dead-letters --server`).
//!
//! A redrive submits the letter's input through the inbox as the caller (the normal path:
//! refused again, it is a new dead letter), and once that is committed marks the letter
//! redriven in its partition, so that it is not redriven twice.

use canvass_engine::{
    durable::{Incoming, Outcome, Sourced},
    letters::{
        all_letters, letter_id, note_outcome, parse_letter_id, redrivable, redrive_input, redriver,
        status,
    },
};
use canvass_proto::v1;
use tonic::{Request, Response, Status};

use crate::{Shared, api::operator_service_server::OperatorService, auth::Rpc, invalid, storage};

pub(crate) struct Operator {
    pub(crate) shared: Shared,
    /// One redrive at a time: a letter is read, submitted and marked before the next call
    /// reads it, so two calls never submit it twice.
    pub(crate) redriving: tokio::sync::Mutex<()>,
}

/// The RPC whose role may issue a command, for a redrive of it through the API.
fn rpc_of(command: &v1::campaign_command::Command) -> Rpc {
    use v1::campaign_command::Command as C;
    match command {
        C::PutSpec(_) => Rpc::CreateCampaign,
        C::Submit(_) => Rpc::SubmitCampaign,
        C::Approve(_) => Rpc::ApproveCampaign,
        C::Reject(_) => Rpc::RejectCampaign,
        C::Launch(_) => Rpc::LaunchCampaign,
        C::Pause(_) => Rpc::PauseCampaign,
        C::Resume(_) => Rpc::ResumeCampaign,
        C::Complete(_) => Rpc::CompleteCampaign,
        C::Stop(_) => Rpc::StopCampaign,
        C::SetPolicy(_) | C::ReassignLeads(_) => Rpc::SetPolicy,
        C::PutMaterial(_) => Rpc::PutMaterial,
        C::ApproveMaterial(_) => Rpc::ApproveMaterial,
        C::RetireMaterial(_) => Rpc::RetireMaterial,
    }
}

/// A redriven command is the caller's: it must be one the caller's role may issue (an
/// operator does not approve), and it is logged with the caller as its actor.
fn as_caller(
    mut record: v1::IngestRecord,
    caller: &crate::Caller,
    id: &str,
) -> Result<v1::IngestRecord, String> {
    if let Some(v1::ingest_record::Input::Command(c)) = &mut record.input
        && let Some(command) = &c.command
    {
        let rpc = rpc_of(command);
        if !rpc.allowed().contains(&caller.role) {
            return Err(format!(
                "a command {rpc:?} allows, which the role {:?} does not: whoever may issue it issues it again",
                caller.role
            ));
        }
        let first = std::mem::replace(&mut c.actor, caller.identity.clone());
        c.reason = format!(
            "redriven dead letter {id} (first by {first}){}",
            if c.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", c.reason)
            }
        );
    }
    Ok(record)
}

impl Operator {
    /// Submits an input, waiting while the engine's queue is full (a mark must not be lost
    /// to backpressure once its input is in).
    async fn submit_patiently(&self, input: Sourced) -> Result<Outcome, Status> {
        let mut wait = std::time::Duration::from_millis(10);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            match self.shared.submit(vec![input.clone()]).await {
                Err(s)
                    if s.code() == tonic::Code::ResourceExhausted
                        && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_millis(500));
                }
                result => return crate::first(result?),
            }
        }
    }
}

/// Letters per page by default, and at most.
const PAGE: usize = 100;
const MOST: usize = 1000;

fn bad_id(id: &str) -> Status {
    invalid(
        &format!("`{id}` is not a dead letter id (N, or P:N for partition P)"),
        vec![("id".into(), "not a dead letter id".into())],
    )
}

#[tonic::async_trait]
impl OperatorService for Operator {
    async fn get_status(
        &self,
        request: Request<v1::GetStatusRequest>,
    ) -> Result<Response<v1::EngineStatus>, Status> {
        self.shared.auth.check(&request, Rpc::GetStatus)?;
        let layout = self.shared.stores.layout().to_string();
        Ok(Response::new(
            status(&self.shared.stores, &layout).map_err(storage)?,
        ))
    }

    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        self.shared.auth.check(&request, Rpc::ListDeadLetters)?;
        let r = request.into_inner();
        let from: usize = match r.page_token.as_str() {
            "" => 0,
            token => token.parse().map_err(|_| {
                invalid(
                    "bad page token",
                    vec![("page_token".into(), "not a token from this API".into())],
                )
            })?,
        };
        let size = match r.page_size {
            0 => PAGE,
            n => usize::try_from(n).unwrap_or(MOST).min(MOST),
        };
        let matching: Vec<v1::NumberedDeadLetter> = all_letters(&self.shared.stores)
            .map_err(storage)?
            .into_iter()
            .filter(|(_, l)| !r.open_only || l.redriven_at.is_none())
            .filter(|(_, l)| l.reason.contains(&r.reason_contains))
            .map(|(id, letter)| v1::NumberedDeadLetter {
                id,
                letter: Some(letter),
            })
            .collect();
        let end = (from + size).min(matching.len());
        let next_page_token = if end < matching.len() {
            end.to_string()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListDeadLettersResponse {
            letters: matching.into_iter().skip(from).take(size).collect(),
            next_page_token,
        }))
    }

    async fn get_dead_letter(
        &self,
        request: Request<v1::GetDeadLetterRequest>,
    ) -> Result<Response<v1::NumberedDeadLetter>, Status> {
        self.shared.auth.check(&request, Rpc::GetDeadLetter)?;
        let id = request.into_inner().id;
        let (partition, number) = parse_letter_id(&id).ok_or_else(|| bad_id(&id))?;
        let letter = (partition < self.shared.stores.layout().partitions)
            .then(|| self.shared.stores.partition(partition).dead_letter(number))
            .transpose()
            .map_err(storage)?
            .flatten()
            .ok_or_else(|| Status::not_found(format!("no dead letter {id}")))?;
        Ok(Response::new(v1::NumberedDeadLetter {
            id: letter_id(partition, number),
            letter: Some(letter),
        }))
    }

    async fn redrive_dead_letters(
        &self,
        request: Request<v1::RedriveDeadLettersRequest>,
    ) -> Result<Response<v1::RedriveDeadLettersResponse>, Status> {
        let caller = self.shared.auth.check(&request, Rpc::RedriveDeadLetters)?;
        let r = request.into_inner();
        if r.all != r.ids.is_empty() {
            return Err(invalid(
                "name the letters (ids) or ask for all of them (all), not both",
                vec![("ids".into(), "ids or all".into())],
            ));
        }
        let _one_at_a_time = self.redriving.lock().await;
        let letters = all_letters(&self.shared.stores).map_err(storage)?;
        let chosen: Vec<String> = if r.all {
            letters
                .into_iter()
                .filter(|(_, l)| redrivable(l, &r.reason_contains))
                .map(|(id, _)| id)
                .collect()
        } else {
            r.ids
                .iter()
                .map(|id| {
                    let (p, n) = parse_letter_id(id).ok_or_else(|| bad_id(id))?;
                    Ok(letter_id(p, n))
                })
                .collect::<Result<_, Status>>()?
        };
        let by = redriver(&caller.identity, &r.reason);
        let mut results = Vec::new();
        for id in chosen {
            let mut result = v1::RedriveResult {
                id: id.clone(),
                ..v1::RedriveResult::default()
            };
            let (partition, number) = parse_letter_id(&id).ok_or_else(|| bad_id(&id))?;
            // Read now, under the lock: what an earlier call marked is seen.
            let letter = (partition < self.shared.stores.layout().partitions)
                .then(|| self.shared.stores.partition(partition).dead_letter(number))
                .transpose()
                .map_err(storage)?
                .flatten();
            let record = match letter.as_ref().map(redrive_input) {
                None => Err(format!("no dead letter {id}")),
                Some(input) => input.and_then(|r| as_caller(r, &caller, &id)),
            };
            let record = match record {
                Ok(record) => record,
                Err(reason) => {
                    result.reason = reason;
                    results.push(result);
                    continue;
                }
            };
            match self.shared.submit_one(record, &caller).await? {
                crate::group::Answer::Engine(outcome) => note_outcome(&mut result, &outcome),
                // The letter's partition is another engine's now: its input went to the topic
                // that engine reads, and it applies it there.
                crate::group::Answer::Queued(q) => {
                    result.applied = true;
                    result.reason = format!(
                        "written to `{}` (partition {}, offset {}) for the engine that owns the partition now",
                        q.topic, q.partition, q.offset
                    );
                }
            }
            // Submitted and committed: the letter is marked, whatever became of its input.
            let mark = Sourced {
                incoming: Incoming::Redriven {
                    partition,
                    letter: number,
                    by: by.clone(),
                },
                position: None,
                caller: Some(caller.identity.clone()),
            };
            self.submit_patiently(mark).await?;
            tracing::info!(
                letter = %id,
                by = %caller.identity,
                applied = result.applied,
                duplicate = result.duplicate,
                "dead letter redriven{}",
                if result.reason.is_empty() { String::new() } else { format!(": {}", result.reason) }
            );
            result.redriven_at = Some(canvass_engine::runtime::wall_clock().to_proto());
            results.push(result);
        }
        Ok(Response::new(v1::RedriveDeadLettersResponse { results }))
    }
}
