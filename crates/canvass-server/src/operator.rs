//! `OperatorService`: what a running engine holds, and its dead letters (listed, shown,
//! redriven), for the operator commands that cannot open a store the engine holds locked
//! (`canvass inspect|dead-letters --server`).
//!
//! A redrive submits the letter's input through the inbox as the caller (the normal path:
//! refused again, it is a new dead letter), and once that is committed marks the letter
//! redriven in its partition, so that it is not redriven twice.

use canvass_engine::{
    durable::{Incoming, Outcome, Sourced},
    letters::{all_letters, letter_id, parse_letter_id, redrive_input, status},
};
use canvass_proto::v1;
use tonic::{Request, Response, Status};

use crate::{Shared, api::operator_service_server::OperatorService, auth::Rpc, invalid, storage};

pub(crate) struct Operator(pub(crate) Shared);

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
        self.0.auth.check(&request, Rpc::GetStatus)?;
        let layout = self.0.stores.layout().to_string();
        Ok(Response::new(
            status(&self.0.stores, &layout).map_err(storage)?,
        ))
    }

    async fn list_dead_letters(
        &self,
        request: Request<v1::ListDeadLettersRequest>,
    ) -> Result<Response<v1::ListDeadLettersResponse>, Status> {
        self.0.auth.check(&request, Rpc::ListDeadLetters)?;
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
        let matching: Vec<v1::NumberedDeadLetter> = all_letters(&self.0.stores)
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
        self.0.auth.check(&request, Rpc::GetDeadLetter)?;
        let id = request.into_inner().id;
        let (partition, number) = parse_letter_id(&id).ok_or_else(|| bad_id(&id))?;
        let letter = (partition < self.0.stores.layout().partitions)
            .then(|| self.0.stores.partition(partition).dead_letter(number))
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
        let caller = self.0.auth.check(&request, Rpc::RedriveDeadLetters)?;
        let r = request.into_inner();
        if r.all != r.ids.is_empty() {
            return Err(invalid(
                "name the letters (ids) or ask for all of them (all), not both",
                vec![("ids".into(), "ids or all".into())],
            ));
        }
        let letters = all_letters(&self.0.stores).map_err(storage)?;
        let chosen: Vec<(String, Option<v1::DeadLetter>)> = if r.all {
            letters
                .into_iter()
                .filter(|(_, l)| l.redriven_at.is_none() && l.reason.contains(&r.reason_contains))
                .map(|(id, l)| (id, Some(l)))
                .collect()
        } else {
            let mut chosen = Vec::new();
            for id in &r.ids {
                let (p, n) = parse_letter_id(id).ok_or_else(|| bad_id(id))?;
                let canonical = letter_id(p, n);
                let found = letters
                    .iter()
                    .find(|(i, _)| *i == canonical)
                    .map(|(_, l)| l.clone());
                chosen.push((canonical, found));
            }
            chosen
        };
        let by = format!(
            "{} (redrive{})",
            caller.identity,
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", r.reason)
            }
        );
        let mut results = Vec::new();
        for (id, letter) in chosen {
            let mut result = v1::RedriveResult {
                id: id.clone(),
                ..v1::RedriveResult::default()
            };
            let input = match letter.as_ref().map(redrive_input) {
                None => Err(format!("no dead letter {id}")),
                Some(input) => input,
            };
            let record = match input {
                Ok(record) => record,
                Err(reason) => {
                    result.reason = reason;
                    results.push(result);
                    continue;
                }
            };
            let outcome = self.0.submit_one(record, &caller).await?;
            match outcome {
                Outcome::Logged { seq } => {
                    result.applied = true;
                    result.seq = seq;
                }
                Outcome::Duplicate => result.duplicate = true,
                Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
                    result.reason = format!("refused again (a new dead letter): {reason}");
                }
                Outcome::Noted => {}
            }
            // Submitted and committed: the letter is marked, whatever became of its input.
            let (partition, number) = parse_letter_id(&id).ok_or_else(|| bad_id(&id))?;
            let mark = Sourced {
                incoming: Incoming::Redriven {
                    partition,
                    letter: number,
                    by: by.clone(),
                },
                position: None,
                caller: Some(caller.identity.clone()),
            };
            crate::first(self.0.submit(vec![mark]).await?)?;
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
