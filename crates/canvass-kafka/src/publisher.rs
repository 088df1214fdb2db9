//! The publisher: actions, audit records and dead letters produced to their topics, removed
//! from the store only once the broker acknowledged them.

use canvass_engine::durable::DispatchError;
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

/// Publishes the outbox and the queued publications.
pub(crate) struct Publisher {
    pub(crate) producer: FutureProducer<Logging>,
    pub(crate) config: KafkaConfig,
}

impl Publisher {
    pub(crate) fn connect(config: &KafkaConfig) -> Result<FutureProducer<Logging>, KafkaError> {
        producer_config(config).create_with_context(Logging("producer"))
    }

    /// Replaces the producer if it failed for good, or failed `failures` times in a row (an
    /// idempotent producer keeps failing against a broker that lost its producer state, e.g.
    /// after a restart): records not acknowledged stay queued and go out through the new one,
    /// under a new producer id.
    pub(crate) fn recover(&mut self, failures: u32) -> Result<(), KafkaError> {
        let fatal = self.producer.client().fatal_error();
        if fatal.is_some() || failures >= 3 {
            tracing::warn!(
                failures,
                fatal = ?fatal,
                "kafka: the producer failed repeatedly; starting a new one"
            );
            self.producer = Self::connect(&self.config)?;
        }
        Ok(())
    }

    /// Publishes everything queued; returns whether nothing is left.
    pub(crate) fn drain(&self, state: &mut State) -> Result<bool, DispatchError> {
        loop {
            let format = self.config.format;
            let topic = self.config.topics.actions.clone();
            let sent = state.engine.dispatch(1024, &mut |actions| {
                let records = actions
                    .iter()
                    .map(|a| codec::action_record(&topic, a, format))
                    .collect::<std::io::Result<Vec<OutRecord>>>()?;
                self.send_all(&records)
            })?;
            state.report.actions_published += sent as u64;
            let published = state.engine.publish(1024, &mut |queued| {
                let mut records = Vec::with_capacity(queued.len());
                for (_, p) in queued {
                    records.extend(codec::publication_record(
                        p,
                        &self.config.topics.audit,
                        &self.config.topics.dead_letters,
                        format,
                    )?);
                }
                self.send_all(&records)
            })?;
            state.report.publications += published as u64;
            if sent == 0 && published == 0 {
                return Ok(true);
            }
        }
    }

    /// Sends records and waits until the broker acknowledged every one.
    pub(crate) fn send_all(&self, records: &[OutRecord]) -> std::io::Result<()> {
        let mut deliveries = Vec::with_capacity(records.len());
        for r in records {
            let mut headers = OwnedHeaders::new_with_capacity(r.headers.len());
            for (key, value) in &r.headers {
                headers = headers.insert(Header {
                    key,
                    value: Some(value.as_slice()),
                });
            }
            let mut record = FutureRecord::to(&r.topic)
                .payload(&r.payload)
                .headers(headers);
            if let Some(key) = &r.key {
                record = record.key(key);
            }
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
