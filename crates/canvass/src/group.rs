//! The gRPC API's view of the group on Kafka, over the Kafka clients: inputs about other
//! engines' partitions written to the topics they read, owners looked up in the owners topic.

use std::time::Duration;

use canvass_engine::durable::Outcome;
use canvass_kafka::Cluster;
use canvass_proto::v1;

/// [`canvass_server::Group`] over a [`Cluster`].
#[derive(Debug, Clone)]
pub struct KafkaGroup(pub Cluster);

#[tonic::async_trait]
impl canvass_server::Group for KafkaGroup {
    async fn forward_record(
        &self,
        partition: u32,
        record: &v1::IngestRecord,
        caller: &str,
    ) -> Result<v1::Queued, String> {
        self.0.forward_record(partition, record, caller).await
    }

    async fn forward_command(
        &self,
        record: &v1::IngestRecord,
        caller: &str,
        wait: Duration,
    ) -> Result<Result<Outcome, v1::Queued>, String> {
        self.0.forward_command(record, caller, wait).await
    }

    fn owner(&self, partition: u32) -> Option<String> {
        self.0.owner(partition).map(|o| o.address)
    }

    fn has_directory(&self) -> bool {
        self.0.has_directory()
    }
}

/// The address the other engines reach a server listening on `bound` at, when the settings
/// name none: its own address, or this host's name with its port if it listens on every
/// interface; `https` when it serves TLS.
#[must_use]
pub fn default_address(bound: std::net::SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if bound.ip().is_unspecified() {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.trim().is_empty())
            .unwrap_or_else(|| {
                tracing::warn!(
                    "the gRPC server listens on every interface and neither `advertise` nor HOSTNAME names this host: the other engines are told `localhost`, which is themselves; set `advertise` (CANVASS_KAFKA_ADVERTISE)"
                );
                "localhost".into()
            });
        format!("{scheme}://{host}:{}", bound.port())
    } else {
        format!("{scheme}://{bound}")
    }
}
