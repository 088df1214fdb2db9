//! The publisher: actions, audit records and dead letters produced to their topics, removed
//! from the store only once the broker acknowledged them.

use canvass_engine::{durable::DispatchError, runtime::Dispatcher};
use canvass_proto::v1;
use rdkafka::{
    error::KafkaError,
    message::{Header, OwnedHeaders},
    producer::{FutureProducer, FutureRecord, Producer as _},
};

use crate::{
    codec::{self, OutRecord},
    config::KafkaConfig,
};

use crate::clients::{Logging, producer_config};
use crate::context::State;

/// A producer that waits for the broker's acknowledgement of every record it sends, and is
/// replaced when it keeps failing.
pub(crate) struct TopicWriter {
    producer: FutureProducer<Logging>,
    pub(crate) config: KafkaConfig,
    /// Sends that failed in a row.
    failures: u32,
}

impl TopicWriter {
    pub(crate) fn connect(config: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            producer: producer_config(config).create_with_context(Logging("producer"))?,
            config: config.clone(),
            failures: 0,
        })
    }

    /// Replaces the producer if it failed for good, or failed 3 times in a row (an
    /// idempotent producer keeps failing against a broker that lost its producer state, e.g.
    /// after a restart): records not acknowledged stay queued and go out through the new one,
    /// under a new producer id.
    fn recover(&mut self) -> Result<(), KafkaError> {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_some() || self.failures >= 3 {
            tracing::warn!(
                failures = self.failures,
                fatal = ?fatal,
                "kafka: the producer failed repeatedly; starting a new one"
            );
            self.producer =
                producer_config(&self.config).create_with_context(Logging("producer"))?;
            self.failures = 0;
        }
        Ok(())
    }

    /// Sends records and waits until the broker acknowledged every one; after a failure the
    /// producer is replaced if it keeps failing.
    pub(crate) fn send_all(&mut self, records: &[OutRecord]) -> std::io::Result<()> {
        let result = self.send_once(records);
        match &result {
            Ok(()) => self.failures = 0,
            Err(_) => {
                self.failures += 1;
                self.recover().map_err(std::io::Error::other)?;
            }
        }
        result
    }

    fn send_once(&self, records: &[OutRecord]) -> std::io::Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let record = future_record(r);
            match self.producer.send_result(record) {
                Ok(delivery) => deliveries.push(delivery),
                Err((e, _)) => return Err(std::io::Error::other(e)),
            }
        }
        for result in futures::executor::block_on(futures::future::join_all(deliveries)) {
            match result {
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => return Err(std::io::Error::other(e)),
                Err(_) => return Err(std::io::Error::other("the producer dropped a record")),
            }
        }
        Ok(())
    }
}

/// A record to send, as the producer takes it: its topic, key, payload and headers.
pub(crate) fn future_record(r: &OutRecord) -> FutureRecord<'_, Vec<u8>, Vec<u8>> {
    let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
    for (key, value) in &r.headers {
        headers = headers.insert(Header {
            key,
            value: Some(value.as_slice()),
        });
    }
    let record = FutureRecord::to(&r.topic)
        .payload(&r.payload)
        .headers(headers);
    match &r.key {
        Some(key) => record.key(key),
        None => record,
    }
}

/// The actions topic as a destination of the delivery: each action keyed by its contact,
/// with its idempotency key as a header, counted as written once the broker acknowledged it.
pub struct ActionTopic {
    writer: TopicWriter,
}

impl std::fmt::Debug for ActionTopic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActionTopic")
            .field("topic", &self.writer.config.topics.actions)
            .finish_non_exhaustive()
    }
}

impl ActionTopic {
    /// A producer for the actions topic of `config`.
    ///
    /// # Errors
    /// The client cannot be created (bad settings).
    pub fn connect(config: &KafkaConfig) -> Result<Self, KafkaError> {
        Ok(Self {
            writer: TopicWriter::connect(config)?,
        })
    }
}

impl Dispatcher for ActionTopic {
    fn deliver(&mut self, actions: &[v1::Action]) -> std::io::Result<()> {
        let (topic, format) = (
            &self.writer.config.topics.actions,
            self.writer.config.format,
        );
        let records = actions
            .iter()
            .map(|a| codec::action_record(topic, a, format))
            .collect::<std::io::Result<Vec<OutRecord>>>()?;
        self.writer.send_all(&records)
    }
}

/// Publishes the queued publications, and the outbox when the loop delivers it.
pub(crate) struct Publisher {
    pub(crate) writer: TopicWriter,
}

impl Publisher {
    /// Publishes everything queued (the outbox through `actions`, when given); returns
    /// whether nothing is left.
    pub(crate) fn drain(
        &mut self,
        state: &mut State,
        mut actions: Option<&mut Box<dyn Dispatcher + Send>>,
    ) -> Result<bool, DispatchError> {
        loop {
            let sent = match actions.as_mut() {
                Some(out) => state.engine.dispatch(1024, &mut |a| out.deliver(a))?,
                None => 0,
            };
            state.report.actions_published += sent as u64;
            let format = self.writer.config.format;
            let (audit, dead_letters) = (
                self.writer.config.topics.audit.clone(),
                self.writer.config.topics.dead_letters.clone(),
            );
            let writer = &mut self.writer;
            let published = state.engine.publish(1024, &mut |queued| {
                let mut records = Vec::with_capacity(queued.len());
                for (_, p) in queued {
                    records.extend(codec::publication_record(p, &audit, &dead_letters, format)?);
                }
                writer.send_all(&records)
            })?;
            state.report.publications += published as u64;
            if sent == 0 && published == 0 {
                return Ok(true);
            }
        }
    }
}
