//! The control topic, read in full by every engine of a group: it is assigned to each
//! engine's own control reader, never shared through the group, so every engine sees every
//! command (specs, lifecycle, policy) and applies it to the partitions it owns.
//!
//! Where a command sits in a partition's log is defined: a partition applies the control
//! topic in its order, from the offset it holds (each partition stores its own), and a
//! partition newly assigned to an engine first takes every command the topic held when it
//! was assigned, before any of its touchpoints (they are held meanwhile and its topic
//! partition paused). The reader is placed at the lowest offset the owned partitions hold;
//! a partition skips what it already holds.

use rdkafka::{
    Offset, TopicPartitionList,
    consumer::{BaseConsumer, Consumer},
    error::KafkaError,
};

use crate::clients::{Logging, consumer_config};
use crate::codec;
use crate::config::KafkaConfig;
use crate::context::{EngineContext, State};

/// The engine's own reader of the control topic's one partition.
pub(crate) struct ControlReader {
    pub(crate) consumer: BaseConsumer<Logging>,
    topic: String,
    /// Where the reader was last placed, if it was.
    placed_at: Option<i64>,
}

impl ControlReader {
    /// A reader of the control topic, not yet placed: it reads nothing until the engine owns
    /// a partition.
    pub(crate) fn new(config: &KafkaConfig) -> Result<Self, KafkaError> {
        let mut settings = consumer_config(config);
        // Never a member of the engines' group: assigned, not subscribed, and its offsets
        // are never committed (each partition stores its own).
        settings.set("group.id", format!("{}.control", config.group_id));
        Ok(Self {
            consumer: settings.create_with_context(Logging("control"))?,
            topic: config.topics.control.clone(),
            placed_at: None,
        })
    }

    /// Places the reader at `offset`.
    fn place(&mut self, offset: i64) -> Result<(), KafkaError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, 0, Offset::Offset(offset))?;
        self.consumer.assign(&tpl)?;
        self.placed_at = Some(offset);
        Ok(())
    }

    /// The next offset the reader will hand out, once it has handed out one since it was
    /// placed (librdkafka's position: past control markers too).
    fn position(&self) -> Option<i64> {
        let tpl = self.consumer.position().ok()?;
        match tpl.find_partition(&self.topic, 0)?.offset() {
            Offset::Offset(n) if self.placed_at.is_some_and(|placed| n > placed) => Some(n),
            _ => None,
        }
    }

    /// The control topic's end now.
    fn end(&self) -> Result<i64, KafkaError> {
        let (_, high) =
            self.consumer
                .fetch_watermarks(&self.topic, 0, crate::runtime::BROKER_QUERY_TIMEOUT)?;
        Ok(high)
    }
}

/// Moves the partitions catching up on: gives the new ones their target (the control
/// topic's end) and places the reader where the lowest of them resumes; releases those
/// that hold their target (their held touchpoints join the batch, their topic partition is
/// resumed). Errors (the broker away) are retried at the next turn.
pub(crate) fn catch_up(
    reader: &mut ControlReader,
    consumer: &BaseConsumer<EngineContext>,
    config: &KafkaConfig,
) {
    let mut state = consumer.context().lock();
    if state.catching_up.is_empty() {
        return;
    }
    let source = codec::source_name(&config.topics.control, 0);
    match target_new(reader, &mut state, &source) {
        Ok(()) => {}
        Err(CatchUpError::Kafka(e)) => {
            tracing::warn!(error = %e, "kafka: cannot read the control topic's end yet");
            return;
        }
        Err(CatchUpError::Engine(e)) => {
            state.failure.get_or_insert(e);
            return;
        }
    }
    // The reader's own position also tells: past the last record there may be markers
    // (a transactional producer's) that no partition stores an offset for. Everything the
    // reader consumed was committed before this call.
    let read_to = reader.position();
    let mut caught_up = Vec::new();
    let targets: Vec<(u32, i64)> = state
        .catching_up
        .iter()
        .filter_map(|(&p, target)| target.map(|t| (p, t)))
        .collect();
    for (p, target) in targets {
        match state.engine.partition_offset(p, &source) {
            Ok(held)
                if held.unwrap_or(0) >= u64::try_from(target).unwrap_or(0)
                    || read_to.is_some_and(|r| r >= target) =>
            {
                caught_up.push(p);
            }
            Ok(_) => {}
            Err(e) => {
                state.failure.get_or_insert(e);
                return;
            }
        }
    }
    let mut paused = TopicPartitionList::new();
    let mut resumed = TopicPartitionList::new();
    for (&p, target) in &state.catching_up {
        if target.is_some() && !caught_up.contains(&p) {
            paused.add_partition(&config.topics.touchpoints, p as i32);
        }
    }
    for p in caught_up {
        state.catching_up.remove(&p);
        state.release(p);
        resumed.add_partition(&config.topics.touchpoints, p as i32);
        tracing::info!(
            partition = p,
            "the partition knows every command before its assignment: its touchpoints flow"
        );
    }
    drop(state);
    // Pausing and resuming what is already so does no harm; a failure only costs fetches.
    if paused.count() > 0
        && let Err(e) = consumer.pause(&paused)
    {
        tracing::warn!(error = %e, "kafka: cannot pause partitions catching up");
    }
    if resumed.count() > 0
        && let Err(e) = consumer.resume(&resumed)
    {
        tracing::warn!(error = %e, "kafka: cannot resume partitions caught up");
    }
}

/// Gives the partitions without a target the control topic's end, and moves the reader
/// back to the lowest offset any owned partition holds if that is behind it.
fn target_new(
    reader: &mut ControlReader,
    state: &mut State,
    source: &str,
) -> Result<(), CatchUpError> {
    if state.catching_up.values().all(Option::is_some) {
        return Ok(());
    }
    // Placed first, before anything can fail: the next control record read must be the one
    // after what the lowest owned partition holds, never a later one (a partition applies
    // the control topic in its order).
    let lowest = state
        .engine
        .offset(source)?
        .map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX));
    let cursor = state
        .next
        .get(&(reader.topic.clone(), 0))
        .copied()
        .or(reader.placed_at);
    if cursor.is_none_or(|c| lowest < c) {
        reader.place(lowest)?;
        state.next.insert((reader.topic.clone(), 0), lowest);
        tracing::info!(offset = lowest, "control topic: reading from the offset");
    }
    let end = reader.end()?;
    for target in state.catching_up.values_mut() {
        target.get_or_insert(end);
    }
    Ok(())
}

/// Why the partitions catching up could not move on.
#[derive(Debug, thiserror::Error)]
enum CatchUpError {
    /// The broker did not answer: tried again at the next turn.
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    /// The store failed.
    #[error(transparent)]
    Engine(#[from] canvass_engine::durable::Error),
}
