//! Kafka in and out: touchpoints consumed by a consumer group and operators' commands read
//! in full by every engine of it, with exactly-once effect (offsets stored beside the effects), actions, audit records and dead
//! letters published and removed from the store only once the broker acknowledged them.

mod changelog;
mod clients;
pub mod cluster;
pub mod codec;
pub mod config;
mod context;
mod control;
mod publisher;
pub mod runtime;
pub mod tools;

pub use clients::{topic_partitions, touchpoint_partitions};
pub use cluster::Cluster;
pub use config::{Format, KafkaConfig};
pub use publisher::ActionTopic;
pub use runtime::{CommitHook, KafkaReport, KafkaRunOptions, RunError, run};
