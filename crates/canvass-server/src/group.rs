//! The other engines of a group on Kafka, as the API reaches them: inputs about their
//! partitions written to the topics they read, reports gathered from the partitions they
//! own, calls about their contacts passed on to them.
//!
//! Invariant: an engine answers only from partitions it owns now; what it cannot read itself
//! it asks the owner for, or it says which partitions it could not reach. A report never
//! leaves a partition out silently.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use canvass_engine::durable::Outcome;
use canvass_proto::v1;
use tonic::{
    Request, Status,
    metadata::MetadataMap,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity},
};
use tonic_types::{ErrorDetails, StatusExt};

use crate::{Shared, api::report_service_client::ReportServiceClient, config::GrpcConfig};

/// Header set on a call one engine passes on to another: it is answered there, never passed
/// on again (a directory that is behind cannot make calls go round in circles).
pub const FORWARDED: &str = "canvass-forwarded";

/// How long a command written to the control topic is waited for, for its outcome here.
const COMMAND_WAIT: Duration = Duration::from_secs(30);

/// The group as the API needs it (on Kafka; implemented over the Kafka clients).
#[tonic::async_trait]
pub trait Group: Send + Sync + std::fmt::Debug + 'static {
    /// Writes `record` (an event or a contact upsert) about partition `partition`, which
    /// another engine owns, to the topic its owner reads; returns once the broker has it.
    async fn forward_record(
        &self,
        partition: u32,
        record: &v1::IngestRecord,
        caller: &str,
    ) -> Result<v1::Queued, String>;

    /// Writes a command to the topic every engine reads, and waits up to `wait` for this
    /// engine to apply it: its outcome, or where it was written.
    async fn forward_command(
        &self,
        record: &v1::IngestRecord,
        caller: &str,
        wait: Duration,
    ) -> Result<Result<Outcome, v1::Queued>, String>;

    /// The gRPC address (a URL) of the engine that owns partition `partition` now, as the
    /// group's directory tells; `None` if it tells none (or the group keeps no directory).
    fn owner(&self, partition: u32) -> Option<String>;

    /// Whether the group keeps a directory of owners.
    fn has_directory(&self) -> bool;
}

/// What a submitted input came to.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// This engine applied it (or refused it).
    Engine(Outcome),
    /// It was written to the topic the owner of its partition reads.
    Queued(v1::Queued),
}

/// Connections to the other engines, one per address, made on first use.
#[derive(Debug, Default)]
pub(crate) struct Peers {
    channels: Mutex<HashMap<String, Channel>>,
    /// For `https://` addresses: the CA of the engines' certificates and this engine's own
    /// certificate, which it presents to the others (their servers may ask for one).
    tls: Option<ClientTlsConfig>,
}

impl Peers {
    pub(crate) fn new(config: &GrpcConfig) -> anyhow::Result<Self> {
        let tls = match &config.tls {
            None => None,
            Some(tls) => {
                let mut client = ClientTlsConfig::new().identity(Identity::from_pem(
                    std::fs::read(&tls.cert)?,
                    std::fs::read(&tls.key)?,
                ));
                if let Some(ca) = &tls.client_ca {
                    client = client.ca_certificate(Certificate::from_pem(std::fs::read(ca)?));
                }
                Some(client)
            }
        };
        Ok(Self {
            channels: Mutex::default(),
            tls,
        })
    }

    /// A channel to the engine at `address`.
    pub(crate) fn channel(&self, address: &str) -> Result<Channel, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(c) = channels.get(address) {
            return Ok(c.clone());
        }
        let unreachable = |e: &dyn std::fmt::Display| {
            Status::unavailable(format!("the engine at `{address}` cannot be called: {e}"))
        };
        let mut endpoint = Endpoint::from_shared(address.to_string())
            .map_err(|e| unreachable(&e))?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60));
        if address.starts_with("https://") {
            endpoint = endpoint
                .tls_config(self.tls.clone().unwrap_or_default())
                .map_err(|e| unreachable(&e))?;
        }
        let channel = endpoint.connect_lazy();
        channels.insert(address.to_string(), channel.clone());
        Ok(channel)
    }
}

/// Whether a call was passed on by another engine.
pub(crate) fn forwarded(metadata: &MetadataMap) -> bool {
    metadata.contains_key(FORWARDED)
}

/// `message` as a call passed on to another engine: with the caller's credentials (the
/// engines of a group share their token hashes) and [`FORWARDED`].
pub(crate) fn passed_on<T>(message: T, from: &MetadataMap) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(auth) = from.get("authorization") {
        request.metadata_mut().insert("authorization", auth.clone());
    }
    if let Some(at) = from.get("canvass-at") {
        request.metadata_mut().insert("canvass-at", at.clone());
    }
    request
        .metadata_mut()
        .insert(FORWARDED, tonic::metadata::MetadataValue::from_static("1"));
    request
}

/// `UNAVAILABLE` for a call about partition `partition`, which this engine does not own:
/// with a `google.rpc.ErrorInfo` naming the partition and its owner (if known) so that the
/// client can call the owner.
pub(crate) fn owned_elsewhere(partition: u32, owner: Option<&str>, why: &str) -> Status {
    let mut metadata = HashMap::from([("partition".to_string(), partition.to_string())]);
    if let Some(owner) = owner {
        metadata.insert("owner".to_string(), owner.to_string());
    }
    let message = match owner {
        Some(owner) => {
            format!("partition {partition} is owned by the engine at {owner}, not this one: {why}")
        }
        None => format!(
            "partition {partition} is owned by another engine of the group now, and none is known to own it: {why}"
        ),
    };
    Status::with_error_details(
        tonic::Code::Unavailable,
        message,
        ErrorDetails::with_error_info("PARTITION_OWNED_ELSEWHERE", "canvass", metadata),
    )
}

impl Shared {
    /// Submits inputs and waits until they are durable; on Kafka, an input about another
    /// engine's partition is written to the topic its owner reads (a command, to the
    /// control topic every engine reads, answered once applied here), once this engine
    /// found it does not own the partition: the engine decides, at its place in the batch.
    pub(crate) async fn submit_answered(
        &self,
        inputs: Vec<canvass_engine::durable::Sourced>,
    ) -> Result<Vec<Answer>, Status> {
        let Some(group) = self.group.clone() else {
            return Ok(self
                .submit(inputs)
                .await?
                .into_iter()
                .map(Answer::Engine)
                .collect());
        };
        let kept: Vec<_> = inputs
            .iter()
            .map(|s| match &s.incoming {
                canvass_engine::durable::Incoming::Record(r) => {
                    Some(((**r).clone(), s.caller.clone().unwrap_or_default()))
                }
                _ => None,
            })
            .collect();
        let outcomes = self.submit(inputs).await?;
        let mut answers = Vec::with_capacity(outcomes.len());
        for (outcome, kept) in outcomes.into_iter().zip(kept) {
            let (Outcome::Elsewhere { partition }, Some((record, caller))) = (&outcome, kept)
            else {
                answers.push(Answer::Engine(outcome));
                continue;
            };
            let failed = |e: String| {
                Status::unavailable(format!(
                    "partition {partition} is another engine's, and the input could not be written to the topic it reads: {e}"
                ))
            };
            let answer = if matches!(record.input, Some(v1::ingest_record::Input::Command(_))) {
                // Waited for only if this engine applies commands (it owns a partition).
                let wait = if self.owns_any() {
                    COMMAND_WAIT
                } else {
                    Duration::ZERO
                };
                match group
                    .forward_command(&record, &caller, wait)
                    .await
                    .map_err(failed)?
                {
                    Ok(outcome) => Answer::Engine(outcome),
                    Err(queued) => Answer::Queued(queued),
                }
            } else {
                Answer::Queued(
                    group
                        .forward_record(*partition, &record, &caller)
                        .await
                        .map_err(failed)?,
                )
            };
            answers.push(answer);
        }
        Ok(answers)
    }

    /// Whether this engine owns any partition now.
    pub(crate) fn owns_any(&self) -> bool {
        (0..self.stores.layout().partitions).any(|p| self.stores.owns(p))
    }

    /// The store whose specs and lifecycles the API reads: every partition logs the same
    /// commands, so any partition this engine owns (a copy it does not own may be behind).
    pub(crate) fn catalog(&self) -> &canvass_store::Store {
        let owned = (0..self.stores.layout().partitions).find(|&p| self.stores.owns(p));
        self.stores.partition(owned.unwrap_or(0))
    }

    /// The figures of every partition: those this engine owns read here, the others asked
    /// of their owners with the caller's credentials. A partition no engine answered for
    /// makes the call `UNAVAILABLE`, naming it.
    pub(crate) async fn figures(
        &self,
        metadata: &MetadataMap,
    ) -> Result<Vec<v1::PartitionFigures>, Status> {
        let (mine, theirs, mut missing) = self.placing(metadata);
        let stores = self.stores.clone();
        let mut figures = tokio::task::spawn_blocking(move || {
            mine.into_iter()
                .map(|p| canvass_engine::reports::partition_figures(stores.partition(p), p))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(crate::storage)?;
        for (address, partitions) in theirs {
            let asked = v1::GetPartitionFiguresRequest {
                partitions: partitions.clone(),
            };
            let answer = match self.peers.channel(&address) {
                Ok(channel) => ReportServiceClient::new(channel)
                    .get_partition_figures(passed_on(asked, metadata))
                    .await
                    .map(tonic::Response::into_inner),
                Err(e) => Err(e),
            };
            match answer {
                Ok(answer) => {
                    for p in partitions {
                        match answer.partitions.iter().find(|f| f.partition == p) {
                            Some(f) => figures.push(f.clone()),
                            None => {
                                missing.insert(
                                    p,
                                    format!("the engine at {address} does not own it now"),
                                );
                            }
                        }
                    }
                }
                Err(e) => unreached(&mut missing, partitions, &address, &e),
            }
        }
        unanswered(missing)?;
        figures.sort_by_key(|f| f.partition);
        Ok(figures)
    }

    /// Every contact's state over every partition (see [`Shared::figures`]), in id order.
    pub(crate) async fn contact_states(
        &self,
        metadata: &MetadataMap,
    ) -> Result<Vec<v1::ContactState>, Status> {
        let (mine, theirs, mut missing) = self.placing(metadata);
        let stores = self.stores.clone();
        let mut states = tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            for p in mine {
                out.extend(partition_contacts(stores.partition(p))?);
            }
            Ok::<_, canvass_store::Error>(out)
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(crate::storage)?;
        for (address, partitions) in theirs {
            let asked = v1::ListPartitionContactsRequest {
                partitions: partitions.clone(),
            };
            let read = async {
                let mut client = ReportServiceClient::new(self.peers.channel(&address)?)
                    .max_decoding_message_size(64 * 1024 * 1024);
                let mut stream = client
                    .list_partition_contacts(passed_on(asked, metadata))
                    .await?
                    .into_inner();
                let mut got = Vec::new();
                while let Some(page) = stream.message().await? {
                    got.extend(page.contacts);
                }
                Ok::<_, Status>(got)
            };
            match read.await {
                Ok(got) => states.extend(got),
                Err(e) => unreached(&mut missing, partitions, &address, &e),
            }
        }
        unanswered(missing)?;
        states.sort_by(|a, b| contact_id(a).cmp(contact_id(b)));
        Ok(states)
    }

    /// The partitions this engine reads itself, and the others by the address of their
    /// owner; an error naming the partitions nobody is known to own.
    #[allow(clippy::type_complexity)]
    pub(crate) fn placed(
        &self,
        metadata: &MetadataMap,
    ) -> Result<(Vec<u32>, BTreeMap<String, Vec<u32>>), Status> {
        let (mine, theirs, missing) = self.placing(metadata);
        unanswered(missing)?;
        Ok((mine, theirs))
    }

    /// [`Shared::placed`], with the partitions nobody is known to own and why.
    #[allow(clippy::type_complexity)]
    fn placing(
        &self,
        metadata: &MetadataMap,
    ) -> (Vec<u32>, BTreeMap<String, Vec<u32>>, BTreeMap<u32, String>) {
        let mut mine = Vec::new();
        let mut theirs: BTreeMap<String, Vec<u32>> = BTreeMap::new();
        let mut missing = BTreeMap::new();
        for p in 0..self.stores.layout().partitions {
            if self.stores.owns(p) {
                mine.push(p);
                continue;
            }
            let owner = self.group.as_ref().and_then(|g| g.owner(p));
            match (owner, &self.group) {
                (Some(address), _) if !forwarded(metadata) => {
                    theirs.entry(address).or_default().push(p);
                }
                (_, Some(g)) if !g.has_directory() => {
                    missing.insert(p, "another engine owns it, and the group keeps no directory of owners (set `topics.owners` and `advertise` in the Kafka settings)".to_string());
                }
                _ => {
                    missing.insert(
                        p,
                        "no engine of the group is known to own it now (it may be moving: retry shortly)"
                            .to_string(),
                    );
                }
            }
        }
        (mine, theirs, missing)
    }

    /// The engine to pass a call about partition `partition` on to, if this engine does not
    /// own it: `Ok(None)` to answer here, the owner's address, or the status to answer.
    pub(crate) fn owner_for(
        &self,
        partition: u32,
        metadata: &MetadataMap,
    ) -> Result<Option<String>, Status> {
        if self.stores.owns(partition) {
            return Ok(None);
        }
        let owner = self.group.as_ref().and_then(|g| g.owner(partition));
        match owner {
            Some(address) if !forwarded(metadata) => Ok(Some(address)),
            Some(address) => Err(owned_elsewhere(
                partition,
                Some(&address),
                "the call was passed on to this engine, which does not own it (the directory is behind: retry shortly)",
            )),
            None => Err(owned_elsewhere(
                partition,
                None,
                "retry shortly, or ask the engine that owns it",
            )),
        }
    }
}

/// Notes `partitions` as not answered for: their owner at `address` failed with `e`.
fn unreached(missing: &mut BTreeMap<u32, String>, partitions: Vec<u32>, address: &str, e: &Status) {
    for p in partitions {
        missing.insert(p, format!("the engine at {address}: {}", e.message()));
    }
}

/// Every contact's state in one partition's store, the dedupe memory left out.
pub(crate) fn partition_contacts(
    store: &canvass_store::Store,
) -> Result<Vec<v1::ContactState>, canvass_store::Error> {
    Ok(canvass_engine::reports::partition_contact_states(store)?
        .into_iter()
        .map(|(_, mut state)| {
            state.recent_events.clear();
            state
        })
        .collect())
}

fn contact_id(state: &v1::ContactState) -> &str {
    state.contact.as_ref().map_or("", |c| c.id.as_str())
}

/// `UNAVAILABLE` naming each partition no engine answered for, and why.
fn unanswered(missing: BTreeMap<u32, String>) -> Result<(), Status> {
    if missing.is_empty() {
        return Ok(());
    }
    let list = missing
        .iter()
        .map(|(p, why)| format!("partition {p}: {why}"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(Status::unavailable(format!(
        "the answer would leave out {} partition(s): {list}",
        missing.len()
    )))
}

/// A shared handle on the group.
pub(crate) type SharedGroup = Arc<dyn Group>;

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// A directory that knows the owners it is given and writes nothing.
    #[derive(Debug)]
    struct Directory {
        owners: BTreeMap<u32, String>,
        kept: bool,
    }

    #[tonic::async_trait]
    impl Group for Directory {
        async fn forward_record(
            &self,
            _: u32,
            _: &v1::IngestRecord,
            _: &str,
        ) -> Result<v1::Queued, String> {
            Err("not in this test".into())
        }

        async fn forward_command(
            &self,
            _: &v1::IngestRecord,
            _: &str,
            _: Duration,
        ) -> Result<Result<Outcome, v1::Queued>, String> {
            Err("not in this test".into())
        }

        fn owner(&self, partition: u32) -> Option<String> {
            self.owners.get(&partition).cloned()
        }

        fn has_directory(&self) -> bool {
            self.kept
        }
    }

    /// An engine of four partitions owning 0 and 2, in a group told by `directory`.
    fn shared(directory: Directory) -> Shared {
        let layout = canvass_store::Layout {
            partitions: 4,
            partitioner: canvass_core::partition::Partitioner::default(),
        };
        let stores =
            canvass_store::Stores::in_memory(layout, &canvass_store::StoreOptions::default());
        stores.set_owned(&[true, false, true, false]);
        let (inbox, _intake) = canvass_engine::runtime::channel(4);
        Shared {
            stores,
            inbox,
            auth: crate::Authenticator::default(),
            group: Some(Arc::new(directory)),
            peers: Arc::new(Peers::default()),
        }
    }

    #[tokio::test]
    async fn a_report_names_every_partition_nobody_is_known_to_own() {
        let shared = shared(Directory {
            owners: BTreeMap::from([(1, "http://127.0.0.1:1".to_string())]),
            kept: true,
        });
        let status = shared.figures(&MetadataMap::new()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        // Partition 1's owner is named but does not answer; partition 3 has none.
        let message = status.message();
        assert!(message.contains("2 partition(s)"), "{message}");
        assert!(
            message.contains("partition 1: the engine at http://127.0.0.1:1"),
            "{message}"
        );
        assert!(
            message.contains("partition 3: no engine of the group is known to own it"),
            "{message}"
        );
    }

    #[tokio::test]
    async fn without_a_directory_a_report_says_what_to_configure() {
        let shared = shared(Directory {
            owners: BTreeMap::new(),
            kept: false,
        });
        let status = shared.figures(&MetadataMap::new()).await.unwrap_err();
        assert!(
            status.message().contains("`topics.owners`"),
            "{}",
            status.message()
        );
    }

    #[test]
    fn a_call_about_another_engines_partition_goes_to_its_owner_once() {
        let shared = shared(Directory {
            owners: BTreeMap::from([(1, "http://b:50051".to_string())]),
            kept: true,
        });
        let fresh = MetadataMap::new();
        assert_eq!(
            shared.owner_for(0, &fresh).unwrap(),
            None,
            "its own partition"
        );
        assert_eq!(
            shared.owner_for(1, &fresh).unwrap().as_deref(),
            Some("http://b:50051")
        );
        // Passed on already: answered with the owner named, never passed on again.
        let passed = passed_on((), &fresh);
        let status = shared.owner_for(1, passed.metadata()).unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable);
        let info = status.get_details_error_info().unwrap();
        assert_eq!(info.reason, "PARTITION_OWNED_ELSEWHERE");
        assert_eq!(
            info.metadata.get("partition").map(String::as_str),
            Some("1")
        );
        assert_eq!(
            info.metadata.get("owner").map(String::as_str),
            Some("http://b:50051")
        );
        // Nobody known: the partition named, no owner.
        let status = shared.owner_for(3, &fresh).unwrap_err();
        let info = status.get_details_error_info().unwrap();
        assert_eq!(
            info.metadata.get("partition").map(String::as_str),
            Some("3")
        );
        assert!(!info.metadata.contains_key("owner"));
    }
}
