//! The Kafka clients: their settings (the engine's own over the operator's, the reserved
//! ones kept), their logging, and what the engine asks of the broker before it starts.

use std::time::{Duration, Instant};

use rdkafka::{
    ClientConfig, ClientContext,
    config::RDKafkaLogLevel,
    consumer::{BaseConsumer, Consumer, ConsumerContext},
    error::KafkaError,
};

use crate::config::KafkaConfig;
use crate::runtime::RunError;
use canvass_engine::throttle;

pub(crate) fn base_config(
    config: &KafkaConfig,
    own: &std::collections::BTreeMap<String, String>,
) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &config.brokers);
    c.set_log_level(RDKafkaLogLevel::Warning);
    for (k, v) in config.librdkafka.iter().chain(own) {
        c.set(k, v);
    }
    c
}

pub(crate) fn consumer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config, &config.consumer);
    c.set("group.id", &config.group_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false");
    if !c.config_map().contains_key("auto.offset.reset") {
        c.set("auto.offset.reset", "earliest");
    }
    // The consumer lag per partition comes from librdkafka's statistics (a metric).
    if !c.config_map().contains_key("statistics.interval.ms") {
        c.set("statistics.interval.ms", "5000");
    }
    c
}

pub(crate) fn producer_config(config: &KafkaConfig) -> ClientConfig {
    let mut c = base_config(config, &config.producer);
    c.set("enable.idempotence", "true")
        .set("acks", "all")
        .set("message.timeout.ms", config.publish_timeout_ms.to_string());
    if !c.config_map().contains_key("linger.ms") {
        c.set("linger.ms", "2");
    }
    c
}

/// Reports librdkafka's warnings and errors to the log, each kind at most once per
/// [`throttle::INTERVAL`] with the count of those held back.
#[derive(Debug)]
pub(crate) struct Logging(pub(crate) &'static str);

impl ConsumerContext for Logging {}

impl ClientContext for Logging {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, message: &str) {
        log_line(self.0, level, fac, message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        client_error(self.0, &error, reason);
    }
}

pub(crate) fn log_line(client: &str, level: RDKafkaLogLevel, fac: &str, message: &str) {
    if (level as i32) > (RDKafkaLogLevel::Warning as i32) {
        return;
    }
    let key = format!("{client} {fac}");
    if let Some(held_back) = throttle::WARNINGS.admit(&key, Instant::now()) {
        tracing::warn!(client, facility = fac, held_back, "kafka: {message}");
    }
}

pub(crate) fn client_error(client: &str, error: &KafkaError, reason: &str) {
    if matches!(
        error,
        KafkaError::PartitionEOF(_)
            | KafkaError::Global(rdkafka::types::RDKafkaErrorCode::PartitionEOF)
    ) {
        // Asked for (a restore reads to the end): news, not an error.
        return;
    }
    let key = format!("{client} {error}");
    if let Some(held_back) = throttle::WARNINGS.admit(&key, Instant::now()) {
        tracing::warn!(client, %error, held_back, "kafka: {reason}");
    }
}

/// The partition count of the touchpoints topic, which a data directory used on Kafka has.
///
/// # Errors
/// The broker cannot be reached within `timeout`, or the topic does not exist.
pub fn touchpoint_partitions(config: &KafkaConfig, timeout: Duration) -> Result<u32, RunError> {
    topic_partitions(config, &config.topics.touchpoints, timeout)
}

/// The partition count of `topic`.
///
/// # Errors
/// The broker cannot be reached within `timeout`, or the topic does not exist.
pub fn topic_partitions(
    config: &KafkaConfig,
    topic: &str,
    timeout: Duration,
) -> Result<u32, RunError> {
    let consumer: BaseConsumer<Logging> =
        consumer_config(config).create_with_context(Logging("consumer"))?;
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let count = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none())
        .map_or(0, |t| t.partitions().len());
    if count == 0 {
        return Err(RunError::Client(KafkaError::MetadataFetch(
            rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition,
        )));
    }
    Ok(u32::try_from(count).unwrap_or(u32::MAX))
}
