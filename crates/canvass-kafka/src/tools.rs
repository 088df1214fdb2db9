//! Operator tools for the topics: creating the five topics with the settings the engine
//! relies on, and producing a JSON-lines stream of `IngestRecord`s as a producer of
//! touchpoints must (keyed by contact id, on the partition the configured partitioner gives
//! the key) and commands to the control topic.

use std::time::Duration;

use rdkafka::{
    admin::{AdminClient, AdminOptions, NewTopic, TopicReplication},
    client::DefaultClientContext,
    producer::{FutureProducer, FutureRecord},
};

use crate::{
    clients::{base_config, producer_config, topic_partitions},
    config::KafkaConfig,
    runtime::RunError,
};

/// A topic to create: its name, role, partitions and settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPlan {
    /// The topic's name (from the settings).
    pub name: String,
    /// What the engine uses it for.
    pub role: &'static str,
    /// Its partition count.
    pub partitions: i32,
    /// Topic settings, with why each is set so.
    pub settings: Vec<(&'static str, String)>,
}

/// The topics of an engine whose touchpoints topic has `partitions` partitions: five, and
/// the changelog, snapshots and owners topics if the settings name them.
///
/// None but the owners topic is compacted: records are keyed by contact (touchpoints, actions) or campaign
/// (audit), and compaction would keep only the last record of each key. The control topic
/// keeps its records for good: a data directory built again reads every command from its
/// start. Retention of the others is the operator's (a restart resumes from the offsets
/// stored with the data, so a touchpoint must stay until every engine applied it).
#[must_use]
pub fn topic_plan(config: &KafkaConfig, partitions: i32) -> Vec<TopicPlan> {
    let t = &config.topics;
    let forever = || vec![("retention.ms", "-1".to_string())];
    let mut plan = vec![
        TopicPlan {
            name: t.touchpoints.clone(),
            role: "touchpoints (contacts and events, keyed by contact id)",
            partitions,
            settings: Vec::new(),
        },
        TopicPlan {
            name: t.control.clone(),
            role: "control (campaign commands, in one order)",
            partitions: 1,
            settings: forever(),
        },
        TopicPlan {
            name: t.actions.clone(),
            role: "actions (keyed by contact id)",
            partitions,
            settings: Vec::new(),
        },
        TopicPlan {
            name: t.audit.clone(),
            role: "audit (each command's result, keyed by campaign)",
            partitions: 1,
            settings: forever(),
        },
        TopicPlan {
            name: t.dead_letters.clone(),
            role: "dead letters (unchanged, with the reason in a header)",
            partitions: 1,
            settings: Vec::new(),
        },
    ];
    if let Some(changelog) = &t.changelog {
        plan.push(TopicPlan {
            name: changelog.clone(),
            role: "changelog (each partition's commits, for its next owner)",
            partitions,
            // Without a snapshot, a new owner rebuilds a partition from its changelog's
            // first frame: kept for good, never compacted (frames have no key).
            settings: vec![
                ("retention.ms", "-1".to_string()),
                ("cleanup.policy", "delete".to_string()),
            ],
        });
    }
    if let Some(snapshots) = &t.snapshots {
        plan.push(TopicPlan {
            name: snapshots.clone(),
            role: "snapshots (each partition's store now and then, for its next owner)",
            partitions,
            // Only the last complete snapshot of a partition is read (its first part is the
            // offset committed for the group `<group>.snapshots`): a week keeps it while
            // the partition takes input, and an older one is never needed, since the
            // changelog keeps every frame.
            settings: vec![
                ("retention.ms", (7 * 24 * 3600 * 1000u64).to_string()),
                ("cleanup.policy", "delete".to_string()),
            ],
        });
    }
    if let Some(owners) = &t.owners {
        plan.push(TopicPlan {
            name: owners.clone(),
            role: "owners (who owns each partition now, for the API of every engine)",
            partitions: 1,
            // Keyed by partition, and only a partition's latest claim counts: compaction
            // keeps the topic as small as the partition count, and read in full at start.
            settings: vec![("cleanup.policy", "compact".to_string())],
        });
    }
    plan
}

/// A topic's name, and whether it was created (or why not).
pub type Created = (String, Result<(), NotCreated>);

/// Why a topic was not created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotCreated {
    /// The broker has a topic of that name already.
    pub exists: bool,
    /// The broker's reason.
    pub reason: String,
}

/// Creates the topics of `plan`; per topic, `Ok` or why not (an existing topic says so).
///
/// # Errors
/// The admin client cannot be created or the broker does not answer.
pub fn create_topics(
    config: &KafkaConfig,
    plan: &[TopicPlan],
    replication: i32,
) -> Result<Vec<Created>, RunError> {
    let admin: AdminClient<DefaultClientContext> =
        base_config(config, &config.producer).create()?;
    let topics: Vec<NewTopic<'_>> = plan
        .iter()
        .map(|p| {
            p.settings.iter().fold(
                NewTopic::new(&p.name, p.partitions, TopicReplication::Fixed(replication)),
                |t, (k, v)| t.set(k, v),
            )
        })
        .collect();
    let results = futures::executor::block_on(admin.create_topics(
        &topics,
        &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
    ))?;
    Ok(results
        .into_iter()
        .map(|r| match r {
            Ok(name) => (name, Ok(())),
            Err((name, code)) => (
                name,
                Err(NotCreated {
                    exists: code == rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists,
                    reason: code.to_string(),
                }),
            ),
        })
        .collect())
}

/// What [`produce`] did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Produced {
    /// Contacts and events produced to the touchpoints topic.
    pub touchpoints: u64,
    /// Commands produced to the control topic.
    pub commands: u64,
    /// Lines that are not an input, with their line number and why: skipped, or produced to
    /// the touchpoints topic without a key with `keep_bad` (the engine parks them).
    pub bad: Vec<(usize, String)>,
}

/// Produces a JSON-lines stream of `IngestRecord`s: contacts and events to the touchpoints
/// topic, keyed by contact id on the partition the configured partitioner gives the key
/// (as the engine expects), with the line as payload; commands to the control topic as the
/// bare command, the record's `at` as its timestamp. Waits until the broker acknowledged
/// every record.
///
/// # Errors
/// The broker cannot be reached, the topics do not exist, or a record was not acknowledged.
pub fn produce(
    config: &KafkaConfig,
    lines: impl Iterator<Item = (usize, String)>,
    keep_bad: bool,
) -> Result<Produced, RunError> {
    let timeout = Duration::from_secs(30);
    let partitions = topic_partitions(config, &config.topics.touchpoints, timeout)?;
    topic_partitions(config, &config.topics.control, timeout)?;
    let producer: FutureProducer = producer_config(config).create()?;
    let partitioner = config.partitioner();
    let mut produced = Produced::default();
    let mut deliveries = Vec::new();
    for (number, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let placed = place(&line);
        let (topic, key, payload, timestamp) = match placed {
            Ok(Placed::Command { payload, at }) => {
                produced.commands += 1;
                (&config.topics.control, None, payload, at)
            }
            Ok(Placed::Touchpoint { contact }) => {
                produced.touchpoints += 1;
                (
                    &config.topics.touchpoints,
                    Some(contact),
                    line.clone().into_bytes(),
                    None,
                )
            }
            Err(why) => {
                produced.bad.push((number, why));
                if !keep_bad {
                    continue;
                }
                (
                    &config.topics.touchpoints,
                    None,
                    line.clone().into_bytes(),
                    None,
                )
            }
        };
        // Said, so that the engine reads it as JSON whatever its `format` setting.
        let headers = rdkafka::message::OwnedHeaders::new().insert(rdkafka::message::Header {
            key: crate::codec::CONTENT_TYPE,
            value: Some(crate::config::Format::Json.content_type()),
        });
        let mut out = FutureRecord::to(topic).payload(&payload).headers(headers);
        if let Some(key) = &key {
            out = out.key(key.as_str()).partition(
                i32::try_from(partitioner.partition(key.as_bytes(), partitions)).unwrap_or(0),
            );
        }
        if let Some(t) = timestamp {
            out = out.timestamp(t);
        }
        match producer.send_result(out) {
            Ok(delivery) => deliveries.push(delivery),
            Err((e, _)) => return Err(e.into()),
        }
        // Acknowledged a window at a time: the producer's queue stays within its bounds.
        if deliveries.len() >= WINDOW {
            acknowledged(std::mem::take(&mut deliveries))?;
        }
    }
    acknowledged(deliveries)?;
    Ok(produced)
}

/// Records sent before waiting for the broker's acknowledgements.
const WINDOW: usize = 10_000;

/// Waits until the broker acknowledged every record sent.
fn acknowledged(deliveries: Vec<rdkafka::producer::DeliveryFuture>) -> Result<(), RunError> {
    for result in futures::executor::block_on(futures::future::join_all(deliveries)) {
        match result {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(RunError::Client(rdkafka::error::KafkaError::Canceled)),
        }
    }
    Ok(())
}

/// Where a line goes.
enum Placed {
    /// To the control topic: the bare command, at the record's time.
    Command { payload: Vec<u8>, at: Option<i64> },
    /// To the touchpoints topic, keyed by the contact.
    Touchpoint { contact: String },
}

/// Where a line of an input stream goes, or why it is not an input.
fn place(line: &str) -> Result<Placed, String> {
    use canvass_proto::v1::ingest_record::Input;
    let record = canvass_proto::json::from_str::<canvass_proto::v1::IngestRecord>(line.trim())
        .map_err(|e| format!("not an input: {e}"))?;
    match record.input {
        Some(Input::Command(c)) => Ok(Placed::Command {
            payload: canvass_proto::json::to_string(&c)
                .map_err(|e| format!("the command cannot be encoded: {e}"))?
                .into_bytes(),
            at: record
                .at
                .map(|t| canvass_core::UnixMillis::from_proto(&t).0),
        }),
        Some(Input::Contact(c)) if !c.id.is_empty() => Ok(Placed::Touchpoint { contact: c.id }),
        Some(Input::Event(e)) if !e.contact_id.is_empty() => Ok(Placed::Touchpoint {
            contact: e.contact_id,
        }),
        Some(Input::Contact(_)) => Err("a contact without `id`".into()),
        Some(Input::Event(_)) => Err("an event without `contactId`".into()),
        None => Err("not an input: neither a contact, an event nor a command".into()),
    }
}
