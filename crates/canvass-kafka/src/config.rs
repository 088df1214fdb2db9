//! Kafka settings: a TOML file, then environment variables over it (for secrets and
//! per-deployment values), checked before anything connects.

use std::{collections::BTreeMap, path::Path};

use canvass_core::partition::Partitioner;
use serde::Deserialize;

/// Payload encoding of records without a `content-type` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Canonical protobuf JSON (camelCase fields), UTF-8.
    Json,
    /// Binary protobuf.
    Protobuf,
}

impl Format {
    fn parse(text: &str) -> Option<Self> {
        match text.trim().to_ascii_lowercase().as_str() {
            "json" => Some(Self::Json),
            "protobuf" | "proto" => Some(Self::Protobuf),
            _ => None,
        }
    }

    /// The `content-type` header value of this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Protobuf => "application/x-protobuf",
        }
    }

    /// The format a `content-type` header names, if it names one.
    #[must_use]
    pub fn from_content_type(value: &str) -> Option<Self> {
        let essence = value.split(';').next().unwrap_or("").trim();
        match essence.to_ascii_lowercase().as_str() {
            "application/json" => Some(Self::Json),
            "application/x-protobuf"
            | "application/protobuf"
            | "application/vnd.google.protobuf" => Some(Self::Protobuf),
            _ => None,
        }
    }
}

/// The topics the engine reads and writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Topics {
    /// Touchpoints and contact upserts, keyed by contact id (read).
    pub touchpoints: String,
    /// Operators' campaign commands (read).
    pub control: String,
    /// Actions leaving the outbox, keyed by contact id (written).
    pub actions: String,
    /// Each command's result (written).
    pub audit: String,
    /// Records that could not be used, unchanged, with the reason in headers (written).
    pub dead_letters: String,
    /// Each partition's commits, shipped before they are written, for the partition's next
    /// owner (written and read; as many partitions as the touchpoints topic). Needed to run
    /// several engines in one group: without it, a partition that moves starts from the new
    /// owner's own copy (see docs/ARCHITECTURE.md, "Scale-out on Kafka").
    pub changelog: Option<String>,
    /// Each partition's snapshots: every key of its store now and then, so that a new owner
    /// loads the last one and applies only the changelog's frames after it (written and
    /// read; as many partitions as the touchpoints topic). Only with a changelog; without
    /// it, a new owner with no copy applies the changelog from its first frame.
    pub snapshots: Option<String>,
    /// Who owns each partition now: every engine writes a record here when it claims a
    /// partition (the partition, its epoch, the gRPC address of `advertise`) and reads the
    /// topic in full, so that any engine's API answers for every partition: reports gather
    /// the figures of the partitions other engines own from them, and a call about a contact
    /// of such a partition goes to its owner (written and read; one partition, compacted).
    pub owners: Option<String>,
}

impl Default for Topics {
    fn default() -> Self {
        Self {
            touchpoints: "canvass.touchpoints".into(),
            control: "canvass.control".into(),
            actions: "canvass.actions".into(),
            audit: "canvass.audit".into(),
            dead_letters: "canvass.dead-letters".into(),
            changelog: None,
            snapshots: None,
            owners: None,
        }
    }
}

/// Everything the Kafka source and sinks need.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaConfig {
    /// Bootstrap servers, comma-separated `host:port`.
    pub brokers: String,
    /// Consumer group of the engine.
    pub group_id: String,
    /// Topic names.
    pub topics: Topics,
    /// Payload format of records without a `content-type` header.
    pub format: Format,
    /// How the producers of the touchpoints topic choose a record's partition from its key
    /// (the contact id): `murmur2` (the Java client's default; librdkafka's
    /// `murmur2_random`) or `consistent` (librdkafka's `consistent_random`, CRC32). The
    /// engine places contacts from files and gRPC by the same function, and refuses a
    /// touchpoint found on another partition than it gives.
    pub partitioner: String,
    /// Most records in one group commit.
    pub max_batch: usize,
    /// Longest wait for more records once one arrived, in milliseconds.
    pub max_wait_ms: u64,
    /// Longest wait for the broker to acknowledge a batch of published records, in
    /// milliseconds; unacknowledged records stay queued and go out again.
    pub publish_timeout_ms: u64,
    /// Longest a stop (SIGTERM, SIGINT) may take, in milliseconds: leaving the consumer
    /// group and waiting for acknowledgements are given up after it (with a broker that
    /// is away they could wait for minutes). Everything applied is durable by then.
    pub shutdown_timeout_ms: u64,
    /// Largest record payload used, in bytes: a larger one is a dead letter keeping its
    /// first 4096 bytes (so that the dead-letter topic takes it).
    pub max_record_bytes: usize,
    /// librdkafka properties passed through unchanged to every client (security.protocol,
    /// sasl.*, ssl.*, ...). They override the engine's own settings, except the ones its
    /// guarantees rest on (listed in [`KafkaConfig::RESERVED`]).
    pub librdkafka: BTreeMap<String, String>,
    /// librdkafka properties for the consumer only (session.timeout.ms, fetch.*, ...).
    pub consumer: BTreeMap<String, String>,
    /// librdkafka properties for the producer only (linger.ms, compression.type, ...).
    pub producer: BTreeMap<String, String>,
    /// Where to serve Prometheus metrics (`host:port`), as `canvass run --metrics-addr`.
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Log entries a partition appends between two of its snapshots (with
    /// `topics.snapshots`): what a new owner applies at most beyond the last one.
    pub snapshot_entries: u64,
    /// The gRPC address the other engines of the group reach this one at, as a URL
    /// (`http://canvass-0.canvass:50051`), written in the owners topic. Unset: the address the
    /// server listens on, with this host's name if it listens on every interface.
    pub advertise: Option<String>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        Self {
            brokers: "127.0.0.1:9092".into(),
            group_id: "canvass".into(),
            topics: Topics::default(),
            format: Format::Json,
            partitioner: "murmur2".into(),
            max_batch: 4096,
            max_wait_ms: 5,
            publish_timeout_ms: 30_000,
            shutdown_timeout_ms: 10_000,
            max_record_bytes: 1024 * 1024,
            librdkafka: BTreeMap::new(),
            consumer: BTreeMap::new(),
            producer: BTreeMap::new(),
            metrics_addr: None,
            snapshot_entries: 100_000,
            advertise: None,
        }
    }
}

/// A setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped fields.
    #[error("{path}: {reason}")]
    Parse {
        /// The file.
        path: String,
        /// The parser's message (it names the line and the field).
        reason: String,
    },
    /// A value is not acceptable.
    #[error("{field}: {reason}")]
    Invalid {
        /// The field, as in the file (or the environment variable).
        field: String,
        /// Why.
        reason: String,
    },
}

/// Prefix of the environment variables read over the file.
pub const ENV_PREFIX: &str = "CANVASS_KAFKA_";

impl KafkaConfig {
    /// The partitioner the `partitioner` setting names (checked by [`KafkaConfig::check`]).
    #[must_use]
    pub fn partitioner(&self) -> Partitioner {
        Partitioner::named(&self.partitioner).unwrap_or_default()
    }

    /// librdkafka properties the engine sets itself: exactly-once rests on them.
    pub const RESERVED: [&'static str; 5] = [
        "group.id",
        "enable.auto.commit",
        "enable.auto.offset.store",
        "enable.idempotence",
        "acks",
    ];

    /// Reads `path` (if given), then the environment, and checks the result.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|reason| ConfigError::Parse {
                    path: path.display().to_string(),
                    reason,
                })?
            }
            None => Self::default(),
        };
        config.apply_env(std::env::vars())?;
        config.check()?;
        Ok(config)
    }

    /// Parses TOML text.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    /// Applies `CANVASS_KAFKA_*` variables: `BROKERS`, `GROUP_ID`, `FORMAT`, `MAX_BATCH`,
    /// `MAX_WAIT_MS`, `PUBLISH_TIMEOUT_MS`, `METRICS_ADDR`, `ADVERTISE`, `TOPIC_<NAME>` (e.g. `TOPIC_DEAD_LETTERS`), and
    /// `RDKAFKA_<PROPERTY>` for librdkafka, with `_` standing for `.`
    /// (`CANVASS_KAFKA_RDKAFKA_SASL_PASSWORD` sets `sasl.password`), and likewise
    /// `CONSUMER_<PROPERTY>` and `PRODUCER_<PROPERTY>` for one client only.
    pub fn apply_env(
        &mut self,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<(), ConfigError> {
        for (name, value) in vars {
            let Some(field) = name.strip_prefix(ENV_PREFIX) else {
                continue;
            };
            let invalid = |reason: &str| ConfigError::Invalid {
                field: name.clone(),
                reason: reason.to_string(),
            };
            let number = |v: &str| {
                v.trim()
                    .parse::<u64>()
                    .map_err(|_| invalid("not a whole number"))
            };
            match field {
                "BROKERS" => self.brokers = value,
                "GROUP_ID" => self.group_id = value,
                "PARTITIONER" => self.partitioner = value,
                "FORMAT" => {
                    self.format =
                        Format::parse(&value).ok_or_else(|| invalid("`json` or `protobuf`"))?;
                }
                "MAX_BATCH" => {
                    self.max_batch =
                        usize::try_from(number(&value)?).map_err(|_| invalid("too large"))?;
                }
                "MAX_WAIT_MS" => self.max_wait_ms = number(&value)?,
                "PUBLISH_TIMEOUT_MS" => self.publish_timeout_ms = number(&value)?,
                "SHUTDOWN_TIMEOUT_MS" => self.shutdown_timeout_ms = number(&value)?,
                "MAX_RECORD_BYTES" => {
                    self.max_record_bytes =
                        usize::try_from(number(&value)?).map_err(|_| invalid("too large"))?;
                }
                "TOPIC_TOUCHPOINTS" => self.topics.touchpoints = value,
                "TOPIC_CONTROL" => self.topics.control = value,
                "TOPIC_ACTIONS" => self.topics.actions = value,
                "TOPIC_AUDIT" => self.topics.audit = value,
                "TOPIC_DEAD_LETTERS" => self.topics.dead_letters = value,
                "TOPIC_CHANGELOG" => {
                    self.topics.changelog = Some(value).filter(|v| !v.trim().is_empty());
                }
                "TOPIC_SNAPSHOTS" => {
                    self.topics.snapshots = Some(value).filter(|v| !v.trim().is_empty());
                }
                "TOPIC_OWNERS" => {
                    self.topics.owners = Some(value).filter(|v| !v.trim().is_empty());
                }
                "ADVERTISE" => self.advertise = Some(value).filter(|v| !v.trim().is_empty()),
                "SNAPSHOT_ENTRIES" => self.snapshot_entries = number(&value)?,
                "METRICS_ADDR" => {
                    self.metrics_addr = Some(
                        value
                            .trim()
                            .parse()
                            .map_err(|_| invalid("not an address (host:port)"))?,
                    );
                }
                other => {
                    let (map, property) = [
                        ("RDKAFKA_", &mut self.librdkafka),
                        ("CONSUMER_", &mut self.consumer),
                        ("PRODUCER_", &mut self.producer),
                    ]
                    .into_iter()
                    .find_map(|(prefix, map)| Some((map, other.strip_prefix(prefix)?)))
                    .filter(|(_, property)| !property.is_empty())
                    .ok_or_else(|| invalid("not a setting canvass knows"))?;
                    map.insert(property.to_ascii_lowercase().replace('_', "."), value);
                }
            }
        }
        Ok(())
    }

    /// Checks the values together.
    pub fn check(&self) -> Result<(), ConfigError> {
        let invalid = |field: &str, reason: String| ConfigError::Invalid {
            field: field.to_string(),
            reason,
        };
        if self.brokers.trim().is_empty() {
            return Err(invalid("brokers", "must name at least one broker".into()));
        }
        if self.group_id.trim().is_empty() {
            return Err(invalid("group_id", "must not be empty".into()));
        }
        if self.max_batch == 0 {
            return Err(invalid("max_batch", "must be at least 1".into()));
        }
        if Partitioner::named(&self.partitioner).is_none() {
            return Err(invalid(
                "partitioner",
                format!(
                    "`{}` is not a partitioner canvass knows: `murmur2` (or `murmur2_random`) or `consistent` (or `consistent_random`)",
                    self.partitioner
                ),
            ));
        }
        let mut topics = vec![
            ("topics.touchpoints", &self.topics.touchpoints),
            ("topics.control", &self.topics.control),
            ("topics.actions", &self.topics.actions),
            ("topics.audit", &self.topics.audit),
            ("topics.dead_letters", &self.topics.dead_letters),
        ];
        if let Some(changelog) = &self.topics.changelog {
            topics.push(("topics.changelog", changelog));
        }
        if let Some(snapshots) = &self.topics.snapshots {
            if self.topics.changelog.is_none() {
                return Err(invalid(
                    "topics.snapshots",
                    "snapshots need a changelog (`topics.changelog`): a snapshot is loaded, then the frames after it".into(),
                ));
            }
            if self.snapshot_entries == 0 {
                return Err(invalid("snapshot_entries", "must be at least 1".into()));
            }
            topics.push(("topics.snapshots", snapshots));
        }
        if let Some(owners) = &self.topics.owners {
            topics.push(("topics.owners", owners));
        }
        if let Some(advertise) = &self.advertise
            && !(advertise.starts_with("http://") || advertise.starts_with("https://"))
        {
            return Err(invalid(
                "advertise",
                format!(
                    "`{advertise}` is not a URL the other engines can call: `http://host:port` or `https://host:port`"
                ),
            ));
        }
        for (i, (field, name)) in topics.iter().enumerate() {
            if !valid_topic(name) {
                return Err(invalid(
                    field,
                    format!("`{name}` is not a topic name (1 to 249 of a-z A-Z 0-9 . _ -)"),
                ));
            }
            if let Some((other, _)) = topics[..i].iter().find(|(_, n)| n == name) {
                return Err(invalid(
                    field,
                    format!("`{name}` is also {other}: each topic has one role"),
                ));
            }
        }
        let passed = [
            ("librdkafka", &self.librdkafka),
            ("consumer", &self.consumer),
            ("producer", &self.producer),
        ];
        for (section, key) in passed
            .iter()
            .flat_map(|(section, map)| map.keys().map(move |k| (section, k)))
        {
            if Self::RESERVED.contains(&key.as_str()) {
                return Err(invalid(
                    &format!("{section}.{key}"),
                    "set by canvass itself: its exactly-once processing rests on it".into(),
                ));
            }
        }
        Ok(())
    }
}

fn valid_topic(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 249
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_string(), (*v).to_string()))
            .collect()
    }

    #[test]
    fn the_file_then_the_environment() {
        let mut config = KafkaConfig::from_toml(
            r#"
            brokers = "k1:9092,k2:9092"
            group_id = "engine"
            format = "protobuf"
            [topics]
            touchpoints = "tp"
            [librdkafka]
            "security.protocol" = "sasl_ssl"
            "#,
        )
        .unwrap();
        config
            .apply_env(env(&[
                ("CANVASS_KAFKA_GROUP_ID", "engine-2"),
                ("CANVASS_KAFKA_TOPIC_DEAD_LETTERS", "dlq"),
                ("CANVASS_KAFKA_RDKAFKA_SASL_PASSWORD", "secret"),
                ("CANVASS_KAFKA_CONSUMER_SESSION_TIMEOUT_MS", "6000"),
                ("OTHER", "ignored"),
            ]))
            .unwrap();
        config.check().unwrap();
        assert_eq!(config.brokers, "k1:9092,k2:9092");
        assert_eq!(config.group_id, "engine-2");
        assert_eq!(config.format, Format::Protobuf);
        assert_eq!(config.topics.touchpoints, "tp");
        assert_eq!(config.topics.dead_letters, "dlq");
        assert_eq!(config.topics.actions, "canvass.actions");
        assert_eq!(config.librdkafka["security.protocol"], "sasl_ssl");
        assert_eq!(config.librdkafka["sasl.password"], "secret");
        assert_eq!(config.consumer["session.timeout.ms"], "6000");
        assert!(config.producer.is_empty());
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let err = KafkaConfig::from_toml("brokers = \"k:1\"\n\ngroupid = \"x\"\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("groupid"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let mut config = KafkaConfig::default();
        let err = config
            .apply_env(env(&[("CANVASS_KAFKA_MAX_BATCH", "many")]))
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CANVASS_KAFKA_MAX_BATCH: not a whole number"
        );
        let err = config
            .apply_env(env(&[("CANVASS_KAFKA_TOPICS_ACTION", "x")]))
            .unwrap_err();
        assert!(err.to_string().contains("not a setting"), "{err}");

        let mut config = KafkaConfig::default();
        config.topics.audit = config.topics.actions.clone();
        let err = config.check().unwrap_err().to_string();
        assert!(err.starts_with("topics.audit:"), "{err}");
        assert!(err.contains("also topics.actions"), "{err}");

        let mut config = KafkaConfig::default();
        config.topics.control = "bad topic".into();
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("topics.control:")
        );

        let mut config = KafkaConfig::default();
        config
            .consumer
            .insert("enable.auto.commit".into(), "true".into());
        let err = config.check().unwrap_err().to_string();
        assert!(err.starts_with("consumer.enable.auto.commit:"), "{err}");

        let mut config = KafkaConfig::default();
        config
            .apply_env(env(&[(
                "CANVASS_KAFKA_TOPIC_SNAPSHOTS",
                "canvass.snapshots",
            )]))
            .unwrap();
        let err = config.check().unwrap_err().to_string();
        assert!(
            err.starts_with("topics.snapshots:") && err.contains("need a changelog"),
            "{err}"
        );
        config.topics.changelog = Some("canvass.changelog".into());
        config.check().unwrap();
        config.snapshot_entries = 0;
        assert!(
            config
                .check()
                .unwrap_err()
                .to_string()
                .starts_with("snapshot_entries:")
        );
    }
}
