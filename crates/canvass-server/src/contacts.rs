//! `ContactService`: profiles in (durable before the answer), state, history and groups out.

use canvass_engine::durable::{Outcome, check_record};
use canvass_proto::v1::{self, log_entry};
use canvass_store::EMBEDDED_PARTITION;
use tonic::{Request, Response, Status, Streaming};

use crate::{
    Shared,
    api::{contact_service_client::ContactServiceClient, contact_service_server::ContactService},
    auth::Rpc,
    group::{Answer, passed_on},
    invalid, page_size, record_time, required, storage,
};

pub(crate) struct Contacts(pub(crate) Shared);

/// Log entries a history call reads at most before it answers with what it found and a
/// token to continue: the history is a scan of the log, so one call must stay bounded.
const HISTORY_SCAN: usize = 200_000;

/// Contacts per chunk of a stream: each chunk is one submission, durable before the next.
const STREAM_CHUNK: usize = 512;

fn upsert_record(
    contact: Option<v1::Contact>,
    at: Option<canvass_proto::wkt::Timestamp>,
) -> Result<v1::IngestRecord, Status> {
    let contact = contact.ok_or_else(|| required("contact"))?;
    let record = v1::IngestRecord {
        input: Some(v1::ingest_record::Input::Contact(contact)),
        at,
    };
    if let Some(reason) = check_record(&record) {
        return Err(crate::refused_record(&reason));
    }
    Ok(record)
}

/// The log entry of an upsert, or 0 when it was queued for another engine (`Ok(None)`).
fn logged(answer: &Answer) -> Result<Option<u64>, Status> {
    let outcome = match answer {
        Answer::Engine(outcome) => outcome,
        Answer::Queued(_) => return Ok(None),
    };
    Ok(Some(match outcome {
        Outcome::Logged { seq } => *seq,
        Outcome::DeadLetter { reason } | Outcome::Refused { reason } => {
            return Err(Status::invalid_argument(reason.clone()));
        }
        Outcome::Duplicate => 0,
        Outcome::Noted => return Err(crate::not_an_input()),
        Outcome::Elsewhere { partition } => return Err(crate::elsewhere(*partition)),
    }))
}

/// Header of a call passed on to another engine: the partitions it answers for (the ones
/// the caller found it owns), comma-separated.
const PARTITIONS: &str = "canvass-partitions";

fn partitions_header(partitions: &[u32]) -> String {
    partitions
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

impl Shared {
    /// The partitions a call over every partition reads here, and those it asks of their
    /// owners, by address: a call passed on by another engine names its partitions
    /// ([`PARTITIONS`]), which must all be this engine's.
    #[allow(clippy::type_complexity)]
    fn placed_in(
        &self,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<(Vec<u32>, std::collections::BTreeMap<String, Vec<u32>>), Status> {
        let Some(named) = metadata.get(PARTITIONS) else {
            return self.placed(metadata);
        };
        let named = named
            .to_str()
            .ok()
            .and_then(|text| {
                text.split(',')
                    .map(|p| p.trim().parse::<u32>().ok())
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                Status::invalid_argument(format!("header `{PARTITIONS}`: not a list of partitions"))
            })?;
        if let Some(&p) = named.iter().find(|&&p| !self.stores.owns(p)) {
            return Err(crate::group::owned_elsewhere(
                p,
                None,
                "this engine does not own it now",
            ));
        }
        Ok((named, std::collections::BTreeMap::new()))
    }
}

/// Whether a log entry changed the contact (campaign commands are campaign history).
fn concerns(entry: &v1::LogEntry, contact_id: &str) -> bool {
    match &entry.input {
        Some(log_entry::Input::ContactUpsert(c)) => c.id == contact_id,
        Some(log_entry::Input::Event(e)) => e.contact_id == contact_id,
        Some(log_entry::Input::TimerFired(t)) => t.contact_id == contact_id,
        Some(log_entry::Input::ActionAcks(a)) => a.acks.iter().any(|a| a.contact_id == contact_id),
        // A sweep step carries out a campaign command: campaign history too.
        Some(log_entry::Input::Command(_) | log_entry::Input::SweepStep(_)) | None => false,
    }
}

#[tonic::async_trait]
impl ContactService for Contacts {
    async fn upsert_contact(
        &self,
        request: Request<v1::UpsertContactRequest>,
    ) -> Result<Response<v1::UpsertContactResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::UpsertContact)?;
        let at = record_time(&request)?;
        let record = upsert_record(request.into_inner().contact, at)?;
        let answer = self.0.submit_one(record, &caller).await?;
        let seq = logged(&answer)?.unwrap_or(0);
        let queued = match answer {
            Answer::Queued(q) => Some(q),
            Answer::Engine(_) => None,
        };
        Ok(Response::new(v1::UpsertContactResponse { seq, queued }))
    }

    async fn upsert_contacts(
        &self,
        request: Request<Streaming<v1::UpsertContactsRequest>>,
    ) -> Result<Response<v1::UpsertContactsResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::UpsertContacts)?;
        let at = record_time(&request)?;
        let (mut accepted, mut last_seq, mut queued) = (0, 0, 0);
        self.0
            .submit_stream(
                request.into_inner(),
                &caller,
                STREAM_CHUNK,
                |m: v1::UpsertContactsRequest| upsert_record(m.contact, at),
                |answer| {
                    match logged(&answer)? {
                        Some(seq) => {
                            last_seq = seq.max(last_seq);
                            accepted += 1;
                        }
                        None => queued += 1,
                    }
                    Ok(())
                },
            )
            .await?;
        Ok(Response::new(v1::UpsertContactsResponse {
            accepted,
            last_seq,
            queued,
        }))
    }

    async fn get_contact(
        &self,
        request: Request<v1::GetContactRequest>,
    ) -> Result<Response<v1::GetContactResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetContact)?;
        let metadata = request.metadata().clone();
        let id = request.into_inner().contact_id;
        if id.trim().is_empty() {
            return Err(required("contact_id"));
        }
        let partition = self.0.stores.layout().partition_of(&id);
        if let Some(owner) = self.0.owner_for(partition, &metadata)? {
            let asked = v1::GetContactRequest { contact_id: id };
            return ContactServiceClient::new(self.0.peers.channel(&owner)?)
                .get_contact(passed_on(asked, &metadata))
                .await;
        }
        let mut state = self
            .0
            .stores
            .of_contact(&id)
            .contact(EMBEDDED_PARTITION, &id)
            .map_err(storage)?
            .ok_or_else(|| Status::not_found(format!("no contact `{id}`")))?;
        // The dedupe memory is the engine's, not part of the contact.
        state.recent_events.clear();
        Ok(Response::new(v1::GetContactResponse { state: Some(state) }))
    }

    async fn get_contact_history(
        &self,
        request: Request<v1::GetContactHistoryRequest>,
    ) -> Result<Response<v1::GetContactHistoryResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetContactHistory)?;
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        if r.contact_id.trim().is_empty() {
            return Err(required("contact_id"));
        }
        let partition = self.0.stores.layout().partition_of(&r.contact_id);
        if let Some(owner) = self.0.owner_for(partition, &metadata)? {
            return ContactServiceClient::new(self.0.peers.channel(&owner)?)
                .get_contact_history(passed_on(r, &metadata))
                .await;
        }
        let from = if r.page_token.is_empty() {
            1
        } else {
            r.page_token.parse::<u64>().map_err(|_| {
                invalid(
                    "bad page_token",
                    vec![("page_token".into(), "not a token from this API".into())],
                )
            })?
        };
        let size = page_size(r.page_size);
        // The contact's whole story is in its partition's log.
        let store = self.0.stores.of_contact(&r.contact_id).clone();
        let contact_id = r.contact_id;
        // The scan reads sled: off the async workers.
        let (entries, next) = tokio::task::spawn_blocking(move || {
            let mut entries = Vec::new();
            let mut next = None;
            for (scanned, entry) in store.log_from(from).enumerate() {
                let entry = entry.map_err(storage)?;
                if entries.len() == size || scanned == HISTORY_SCAN {
                    next = Some(entry.seq);
                    break;
                }
                if concerns(&entry, &contact_id) {
                    entries.push(entry);
                }
            }
            Ok::<_, Status>((entries, next))
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))??;
        Ok(Response::new(v1::GetContactHistoryResponse {
            entries,
            next_page_token: next.map(|s| s.to_string()).unwrap_or_default(),
        }))
    }

    async fn list_group_members(
        &self,
        request: Request<v1::ListGroupMembersRequest>,
    ) -> Result<Response<v1::ListGroupMembersResponse>, Status> {
        self.0.auth.check(&request, Rpc::ListGroupMembers)?;
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        if r.campaign_id.trim().is_empty() {
            return Err(required("campaign_id"));
        }
        if r.group.trim().is_empty() {
            return Err(required("group"));
        }
        let size = page_size(r.page_size);
        let after = (!r.page_token.is_empty()).then_some(r.page_token.as_str());
        // Each partition's members are in id order: the first page of their union is in
        // the first pages of each. The partitions of other engines are asked of them.
        let (mine, theirs) = self.0.placed_in(&metadata)?;
        let mut contact_ids = Vec::new();
        // Whether an owner had more than a page: then so does the union.
        let mut more = false;
        for p in mine {
            let found = self
                .0
                .stores
                .partition(p)
                .group_members_after(&r.campaign_id, &r.group, after)
                .take(size + 1)
                .collect::<Result<Vec<_>, _>>()
                .map_err(storage)?;
            contact_ids.extend(found);
        }
        for (owner, partitions) in theirs {
            let mut asked = passed_on(r.clone(), &metadata);
            asked.metadata_mut().insert(
                PARTITIONS,
                partitions_header(&partitions)
                    .parse()
                    .map_err(|_| Status::internal("a partition list that is not a header"))?,
            );
            let answer = ContactServiceClient::new(self.0.peers.channel(&owner)?)
                .list_group_members(asked)
                .await
                .map_err(|e| {
                    Status::unavailable(format!(
                        "partitions {partitions:?} are owned by the engine at {owner}, which did not answer: {}",
                        e.message()
                    ))
                })?;
            let answer = answer.into_inner();
            more |= !answer.next_page_token.is_empty();
            contact_ids.extend(answer.contact_ids);
        }
        contact_ids.sort();
        contact_ids.truncate(size + 1);
        let next_page_token = if contact_ids.len() > size || (more && contact_ids.len() == size) {
            contact_ids.truncate(size);
            contact_ids.last().cloned().unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListGroupMembersResponse {
            contact_ids,
            next_page_token,
        }))
    }
}
