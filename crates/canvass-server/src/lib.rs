//! The canvass gRPC API: campaigns, contacts, ingest, action delivery (pull and push) and
//! reports, with gRPC health, server reflection, bearer-token roles and optional (mutual) TLS.
//!
//! Writes go through the engine's [`Inbox`] and are answered only once their group commit
//! is durable; reads go straight to the store (which sees the latest commit). A full engine
//! queue is `RESOURCE_EXHAUSTED`, never an unbounded wait.

pub mod auth;
mod campaigns;
pub mod codec;
pub mod config;
mod contacts;
pub mod delivery;
mod gate;
pub mod group;
mod ingest;
mod operator;
mod reports;

/// Generated services and clients of `canvass.v1` (messages are canvass-proto's).
pub mod api {
    #![allow(
        missing_docs,
        clippy::all,
        missing_debug_implementations,
        unused_qualifications
    )]
    include!(concat!(env!("OUT_DIR"), "/canvass.v1.rs"));
}

use std::future::Future;

use canvass_engine::{
    durable::{Incoming, Outcome, Sourced},
    runtime::{Busy, Inbox},
};
use canvass_proto::v1;
use canvass_store::{Store, Stores};
use tonic::{
    Status,
    transport::{Certificate, Identity, Server, ServerTlsConfig},
};
use tonic_types::{ErrorDetails, StatusExt};

pub use auth::{Authenticator, Caller, Role, Rpc, hash_token};
pub use config::GrpcConfig;
pub use delivery::Delivery;
pub use group::Group;
use group::{Answer, Peers, SharedGroup};

/// A record [`check_record`](canvass_engine::durable::check_record) refused, as
/// `INVALID_ARGUMENT` with the field it names (its reasons read "field `F`: why").
pub(crate) fn refused_record(reason: &str) -> Status {
    let (field, why) = match reason
        .strip_prefix("field `")
        .and_then(|r| r.split_once("`: "))
    {
        Some((field, why)) => (field.to_string(), why.to_string()),
        None => (String::new(), reason.to_string()),
    };
    invalid(reason, vec![(field, why)])
}

/// The services the engine serves (health and reflection aside).
const SERVED: [&str; 6] = [
    "canvass.v1.CampaignService",
    "canvass.v1.ContactService",
    "canvass.v1.IngestService",
    "canvass.v1.ActionService",
    "canvass.v1.ReportService",
    "canvass.v1.OperatorService",
];

/// What every service shares.
#[derive(Debug, Clone)]
pub(crate) struct Shared {
    pub(crate) stores: Stores,
    pub(crate) inbox: Inbox,
    pub(crate) auth: Authenticator,
    /// The other engines of the group, on Kafka.
    pub(crate) group: Option<SharedGroup>,
    pub(crate) peers: std::sync::Arc<Peers>,
}

impl Shared {
    /// The engine-wide tables (specs, lifecycles, policy): every partition logs the same
    /// commands, so those of a partition this engine owns are everyone's.
    pub(crate) fn global(&self) -> &Store {
        self.catalog()
    }

    /// Submits inputs to the engine and waits until they are durable.
    pub(crate) async fn submit(&self, inputs: Vec<Sourced>) -> Result<Vec<Outcome>, Status> {
        let answer = self.inbox.submit(inputs).map_err(|e| match e {
            Busy::Full => Status::resource_exhausted(
                "the engine's input queue is full; retry after a short wait",
            ),
            Busy::Stopped => Status::unavailable("the engine has stopped"),
        })?;
        answered(answer).await
    }

    /// Submits one input from `caller` and returns what it came to.
    pub(crate) async fn submit_one(
        &self,
        record: v1::IngestRecord,
        caller: &Caller,
    ) -> Result<Answer, Status> {
        self.submit_answered(vec![sourced(record, caller)])
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| Status::internal("the engine returned no outcome"))
    }
}

impl Shared {
    /// Reads a client stream and submits its inputs in chunks of `chunk_size`, each durable
    /// before the next message is read; `outcome` sees every input's outcome in order. A bad
    /// message refuses the call (`message N: ...`) before its chunk is submitted; a broken
    /// stream ends the call with its error, the chunks answered before staying durable.
    pub(crate) async fn submit_stream<M>(
        &self,
        mut stream: tonic::Streaming<M>,
        caller: &Caller,
        chunk_size: usize,
        mut record: impl FnMut(M) -> Result<v1::IngestRecord, Status> + Send,
        mut outcome: impl FnMut(Answer) -> Result<(), Status> + Send,
    ) -> Result<(), Status>
    where
        M: Send + 'static,
    {
        let mut chunk = Vec::new();
        let mut index = 0usize;
        loop {
            let next = stream.message().await?;
            let ended = next.is_none();
            if let Some(m) = next {
                let r = record(m).map_err(|s| {
                    Status::invalid_argument(format!("message {index}: {}", s.message()))
                })?;
                chunk.push(sourced(r, caller));
                index += 1;
            }
            if chunk.len() >= chunk_size || (ended && !chunk.is_empty()) {
                for o in self.submit_answered(std::mem::take(&mut chunk)).await? {
                    outcome(o)?;
                }
            }
            if ended {
                return Ok(());
            }
        }
    }
}

/// The engine's answer to a submission, as the outcomes or the status to return.
pub(crate) async fn answered(
    answer: futures::channel::oneshot::Receiver<canvass_engine::runtime::Reply>,
) -> Result<Vec<Outcome>, Status> {
    match answer.await {
        Ok(Ok(outcomes)) => Ok(outcomes),
        Ok(Err(reason)) => Err(Status::unavailable(reason)),
        Err(_) => Err(Status::unavailable("the engine stopped before answering")),
    }
}

/// A record answered as noted (a mark, not an input): the engine never does so.
pub(crate) fn not_an_input() -> Status {
    Status::internal("the engine noted a record instead of logging it")
}

/// An input about a partition another engine of the group owns now.
pub(crate) fn elsewhere(partition: u32) -> Status {
    Status::unavailable(format!(
        "partition {partition} is owned by another engine of the group now: send this to the engine that owns it, or to the touchpoints topic"
    ))
}

/// The outcome of a submission of one input.
pub(crate) fn first(outcomes: Vec<Outcome>) -> Result<Outcome, Status> {
    outcomes
        .into_iter()
        .next()
        .ok_or_else(|| Status::internal("the engine returned no outcome"))
}

/// The `canvass-at` header (RFC 3339): the time a contact upsert or a command is applied at
/// under the event clock (a backfill replaying history through the API). Ignored under the
/// wall clock, like a record's `at`.
pub(crate) fn record_time<T>(
    request: &tonic::Request<T>,
) -> Result<Option<canvass_proto::wkt::Timestamp>, Status> {
    let Some(value) = request.metadata().get("canvass-at") else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| Status::invalid_argument("header `canvass-at`: not text"))?;
    let time = chrono::DateTime::parse_from_rfc3339(text).map_err(|e| {
        Status::invalid_argument(format!("header `canvass-at`: not an RFC 3339 time: {e}"))
    })?;
    Ok(Some(
        canvass_core::UnixMillis(time.timestamp_millis()).to_proto(),
    ))
}

/// An input from a gRPC caller: no source offset (callers retry; event ids dedupe), the
/// caller's identity logged with it.
pub(crate) fn sourced(record: v1::IngestRecord, caller: &Caller) -> Sourced {
    Sourced {
        incoming: Incoming::Record(Box::new(record)),
        position: None,
        caller: Some(caller.identity.clone()),
    }
}

/// `INVALID_ARGUMENT` with one `google.rpc.BadRequest` field violation per problem.
pub(crate) fn invalid(message: &str, violations: Vec<(String, String)>) -> Status {
    let details = ErrorDetails::with_bad_request(
        violations
            .into_iter()
            .map(|(field, reason)| tonic_types::FieldViolation::new(field, reason))
            .collect::<Vec<_>>(),
    );
    Status::with_error_details(tonic::Code::InvalidArgument, message, details)
}

/// `INVALID_ARGUMENT` naming a required field.
pub(crate) fn required(field: &str) -> Status {
    invalid(
        &format!("field `{field}`: required"),
        vec![(field.to_string(), "required".to_string())],
    )
}

/// A store failure as a status.
pub(crate) fn storage(e: canvass_store::Error) -> Status {
    Status::internal(format!("reading the store failed: {e}"))
}

/// Page size of a list request: 100 by default, at most 1000.
pub(crate) fn page_size(requested: u32) -> usize {
    match requested {
        0 => 100,
        n => n.min(1000) as usize,
    }
}

/// Starts serving on `config.listen` until `shutdown` completes. Returns once the server
/// has stopped.
pub async fn serve(
    config: &GrpcConfig,
    stores: Stores,
    inbox: Inbox,
    delivery: Option<Delivery>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.listen).await?;
    serve_on(config, listener, stores, inbox, delivery, None, shutdown).await
}

/// Serves on a listener already bound (its address may be port 0, chosen by the system).
/// Without a delivery (actions go elsewhere, e.g. to a file), `ActionService` answers
/// `FAILED_PRECONDITION`. `group`: the other engines of the group on Kafka, which inputs,
/// reports and contact calls about their partitions go to.
pub async fn serve_on(
    config: &GrpcConfig,
    listener: tokio::net::TcpListener,
    stores: Stores,
    inbox: Inbox,
    delivery: Option<Delivery>,
    group: Option<std::sync::Arc<dyn Group>>,
    shutdown: impl Future<Output = ()> + Send,
) -> anyhow::Result<()> {
    let shared = Shared {
        stores,
        inbox,
        auth: Authenticator::new(&config.tokens),
        group,
        peers: std::sync::Arc::new(Peers::new(config)?),
    };
    let limit = config.max_message_bytes;
    let (health, health_service) = tonic_health::server::health_reporter();
    // Only what is served: the descriptor set also holds `ActionExecutor`, which the
    // engine calls on executors and does not serve.
    let reflection = || {
        SERVED.iter().chain(&["grpc.health.v1.Health"]).fold(
            tonic_reflection::server::Builder::configure()
                .register_encoded_file_descriptor_set(canvass_proto::FILE_DESCRIPTOR_SET)
                .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET),
            |builder, name| builder.with_service_name(*name),
        )
    };
    let gate = gate::GateLayer(std::sync::Arc::new(shared.auth.clone()));
    // Both versions: older grpcurl releases only speak v1alpha.
    let reflection_v1 = reflection().build_v1()?;
    let reflection_v1alpha = reflection().build_v1alpha()?;
    // gRPC's convention for a message over the size limit is RESOURCE_EXHAUSTED; tonic's
    // decoder answers OUT_OF_RANGE. Its answer is trailers-only, so the code is a header.
    let mut server = Server::builder()
        // What a call logs names the method it serves.
        .trace_fn(|request| tracing::info_span!("grpc", method = %request.uri().path()))
        .layer(gate)
        .layer(tower::util::MapResponseLayer::new(
            |mut response: http::Response<tonic::body::Body>| {
                let headers = response.headers_mut();
                // The message is percent-encoded on the wire.
                let too_large = headers.get("grpc-status").is_some_and(|s| s == "11")
                    && headers
                        .get("grpc-message")
                        .and_then(|m| m.to_str().ok())
                        .is_some_and(|m| m.contains("message%20length%20too%20large"));
                if too_large {
                    headers.insert("grpc-status", http::HeaderValue::from_static("8"));
                }
                response
            },
        ));
    if let Some(tls) = &config.tls {
        let cert = std::fs::read(&tls.cert)?;
        let key = std::fs::read(&tls.key)?;
        let mut tls_config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &tls.client_ca {
            tls_config = tls_config.client_ca_root(Certificate::from_pem(std::fs::read(ca)?));
        }
        server = server.tls_config(tls_config)?;
    }
    use api::{
        action_service_server::ActionServiceServer, campaign_service_server::CampaignServiceServer,
        contact_service_server::ContactServiceServer, ingest_service_server::IngestServiceServer,
        operator_service_server::OperatorServiceServer, report_service_server::ReportServiceServer,
    };
    let campaigns = CampaignServiceServer::new(campaigns::Campaigns(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let contacts = ContactServiceServer::new(contacts::Contacts(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let ingest = IngestServiceServer::new(ingest::Ingest(shared.clone()))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let actions = ActionServiceServer::new(delivery::Actions::new(shared.clone(), delivery))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    let operator = OperatorServiceServer::new(operator::Operator {
        shared: shared.clone(),
        redriving: tokio::sync::Mutex::new(()),
    })
    .max_decoding_message_size(limit)
    .max_encoding_message_size(limit);
    let reports = ReportServiceServer::new(reports::Reports(shared))
        .max_decoding_message_size(limit)
        .max_encoding_message_size(limit);
    for name in SERVED.iter().chain(&[""]) {
        health
            .set_service_status(name, tonic_health::ServingStatus::Serving)
            .await;
    }
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    server
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(campaigns)
        .add_service(contacts)
        .add_service(ingest)
        .add_service(actions)
        .add_service(operator)
        .add_service(reports)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}
