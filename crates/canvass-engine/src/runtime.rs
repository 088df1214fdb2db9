//! The running engine: a source thread feeding a group-commit loop, timers on the clock, and
//! the outbox drained to a sink after each commit.
//!
//! Backpressure: the source thread hands lines over through a bounded channel, so a slow
//! store slows the reader instead of filling memory. Other front ends (the gRPC server)
//! submit through the same channel with an [`Inbox`]: a full channel is refused at once
//! ([`Busy::Full`]), never queued without bound, and each submission is answered once its
//! group commit is durable.

use std::{
    fs::File,
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write},
    ops::Range,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread,
    time::{Duration, Instant},
};

use futures::channel::oneshot;

use canvass_core::UnixMillis;
use canvass_proto::{json, v1};

use crate::durable::{BatchReport, DispatchError, Error, Incoming, Outcome, Sourced};
use crate::partitions::Partitions;

/// How the loop batches and waits.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// Most inputs in one group commit.
    pub max_batch: usize,
    /// Longest wait for more inputs once one has arrived, before committing.
    pub max_wait: Duration,
    /// Keep reading at the end of the input (tail it) instead of stopping.
    pub follow: bool,
    /// Bound of the channel between the source thread and the loop.
    pub channel_capacity: usize,
    /// Longest input line, in bytes: a longer one is a dead letter that keeps only its
    /// first [`DEAD_LETTER_PREFIX`] bytes, and is never held in memory whole.
    pub max_line_bytes: usize,
    /// What the event clock does once a finite input has ended.
    pub at_end: AtEnd,
}

/// What happens to the timers still armed once a finite input has ended (under the event
/// clock; the wall clock fires them as real time passes).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum AtEnd {
    /// Nothing: they wait for later input.
    #[default]
    Stop,
    /// The clock moves on to this time, firing every timer due until then.
    Until(UnixMillis),
    /// The clock moves on by this span past the latest time applied (what `simulate` does
    /// without `--until`), firing every timer due until then.
    Drain(canvass_core::SpanMillis),
}

/// How much of an oversized input a dead letter keeps.
pub const DEAD_LETTER_PREFIX: usize = 4096;

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            max_batch: 4096,
            max_wait: Duration::from_millis(2),
            follow: false,
            channel_capacity: 16_384,
            max_line_bytes: 1024 * 1024,
            at_end: AtEnd::Stop,
        }
    }
}

/// What the loop did, in total.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Group commits made.
    pub commits: u64,
    /// Log entries appended.
    pub entries: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Actions delivered to the sink.
    pub delivered: u64,
    /// Duplicate events ignored.
    pub duplicates: u64,
    /// Dead letters parked.
    pub dead_letters: u64,
}

/// Why the loop stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The engine (its store) failed: input is no longer accepted.
    #[error(transparent)]
    Engine(#[from] Error),
    /// The sink failed: undelivered actions stay in the outbox.
    #[error(transparent)]
    Dispatch(#[from] DispatchError),
    /// The source failed.
    #[error("reading the input failed: {0}")]
    Source(io::Error),
}

impl RunError {
    /// Whether a disk failed (the store's or the actions file's): the process stops with
    /// the status that says so, and the data is as a crash would leave it.
    #[must_use]
    pub fn is_storage(&self) -> bool {
        match self {
            Self::Engine(e) => e.is_storage(),
            Self::Dispatch(e) => e.is_storage(),
            Self::Source(_) => false,
        }
    }
}

enum Item {
    Input(Sourced),
    Request(Request),
    End,
    Failed(io::Error),
}

/// Inputs submitted through an [`Inbox`], answered after their commit.
struct Request {
    inputs: Vec<Sourced>,
    reply: oneshot::Sender<Reply>,
}

/// The answer to a submission: what became of each input, in order, once durable; or why
/// the engine could not apply them (it stopped).
pub type Reply = Result<Vec<Outcome>, String>;

/// Why a submission was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Busy {
    /// The engine's queue is full: try again later (backpressure).
    #[error("the engine's input queue is full")]
    Full,
    /// The engine has stopped.
    #[error("the engine has stopped")]
    Stopped,
}

/// Submits inputs to the running loop from other threads. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Inbox {
    tx: SyncSender<Item>,
}

impl Inbox {
    /// Queues inputs for the next group commit; the receiver gets the outcome once it is
    /// durable. Refused at once when the queue is full.
    pub fn submit(&self, inputs: Vec<Sourced>) -> Result<oneshot::Receiver<Reply>, Busy> {
        let (reply, answer) = oneshot::channel();
        match self.tx.try_send(Item::Request(Request { inputs, reply })) {
            Ok(()) => Ok(answer),
            Err(TrySendError::Full(_)) => Err(Busy::Full),
            Err(TrySendError::Disconnected(_)) => Err(Busy::Stopped),
        }
    }
}

/// The loop's end of the channel that sources and inboxes feed.
#[derive(Debug)]
pub struct Intake {
    tx: SyncSender<Item>,
    rx: Receiver<Item>,
}

impl Intake {
    /// Takes what was submitted, without waiting: inputs are appended to `batch`, the
    /// submissions to answer once it is committed to `submissions`. For loops of their own
    /// (the Kafka one) that commit other inputs too.
    pub fn take_into(&self, batch: &mut Vec<Sourced>, submissions: &mut Submissions) {
        while let Ok(item) = self.rx.try_recv() {
            match item {
                Item::Input(s) => batch.push(s),
                Item::Request(request) => submissions.add(batch, request),
                // Only file readers send these, and such loops have none.
                Item::End | Item::Failed(_) => {}
            }
        }
    }
}

/// Submissions waiting for the commit of the batch their inputs joined.
#[derive(Debug, Default)]
pub struct Submissions {
    replies: Replies,
}

impl Submissions {
    /// Appends a submission's inputs to `batch`, remembering where they sit.
    fn add(&mut self, batch: &mut Vec<Sourced>, Request { inputs, reply }: Request) {
        let start = batch.len();
        batch.extend(inputs);
        self.replies.push((start..batch.len(), reply));
    }

    /// Answers every submission from the result of the commit their inputs joined, and
    /// hands the result on.
    pub fn settle(self, result: Result<BatchReport, Error>) -> Result<BatchReport, Error> {
        match &result {
            Ok(report) => self.answer(&report.outcomes),
            Err(e) => self.fail(&format!("the engine stopped: {e}")),
        }
        result
    }

    /// Answers each submission with its inputs' outcomes (`outcomes` in batch order).
    pub fn answer(self, outcomes: &[Outcome]) {
        for (range, reply) in self.replies {
            let _ = reply.send(Ok(outcomes
                .get(range)
                .map(<[_]>::to_vec)
                .unwrap_or_default()));
        }
    }

    /// Tells each submission that the engine could not apply it.
    pub fn fail(self, reason: &str) {
        for (_, reply) in self.replies {
            let _ = reply.send(Err(reason.to_string()));
        }
    }
}

/// A channel for the run loop, bounded to `capacity` queued items (a submission counts as
/// one, whatever its size).
#[must_use]
pub fn channel(capacity: usize) -> (Inbox, Intake) {
    let (tx, rx) = mpsc::sync_channel(capacity);
    (Inbox { tx: tx.clone() }, Intake { tx, rx })
}

/// What feeds the loop and when it stops.
#[derive(Default)]
pub struct Sources {
    /// A JSON-lines input, if any.
    pub input: Option<InputSpec>,
    /// The channel that inboxes feed; without one, the loop makes its own.
    pub intake: Option<Intake>,
    /// Keep running after the input ends (something else submits), until `stop`.
    pub serve: bool,
    /// Set (by a signal handler) to stop cleanly after the current commit.
    pub stop: Option<Arc<AtomicBool>>,
    /// Called after every commit (to wake what reads the store, like the gRPC delivery).
    pub after_commit: Option<Box<dyn FnMut() + Send>>,
    /// The outbox is delivered beside the loop, whose results come back through `intake`:
    /// once the input has ended, the loop runs on until every partition's outbox is empty
    /// (each action delivered, or given up on as a dead letter).
    pub until_delivered: bool,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sources")
            .field("input", &self.input)
            .field("serve", &self.serve)
            .finish_non_exhaustive()
    }
}

/// A JSON-lines input: a file (resumable from a byte offset) or standard input.
#[derive(Debug, Clone)]
pub enum InputSpec {
    /// A file; its source name is `file:<canonical path>`.
    File(PathBuf),
    /// Standard input; it cannot be resumed.
    Stdin,
}

impl InputSpec {
    /// The name offsets are stored under, if the input can be resumed.
    pub fn source_name(&self) -> io::Result<Option<String>> {
        match self {
            InputSpec::File(p) => Ok(Some(format!("file:{}", p.canonicalize()?.display()))),
            InputSpec::Stdin => Ok(None),
        }
    }
}

/// Where in the input a dead letter's line was, as its reason begins.
fn at_offset(position: Option<&v1::SourcePosition>) -> String {
    position
        .map(|p| format!("byte offset {}: ", p.offset))
        .unwrap_or_default()
}

fn parse(line: &[u8], position: Option<v1::SourcePosition>) -> Sourced {
    let at = at_offset(position.as_ref());
    let incoming = match std::str::from_utf8(line) {
        Err(e) => Incoming::Malformed {
            payload: line.to_vec(),
            key: Vec::new(),
            reason: format!("{at}not UTF-8: {e}"),
        },
        Ok(text) => match json::from_str::<v1::IngestRecord>(text.trim_end()) {
            Ok(record) => Incoming::Record(Box::new(record)),
            Err(e) => Incoming::Malformed {
                payload: line.to_vec(),
                key: Vec::new(),
                reason: format!("{at}{e}"),
            },
        },
    };
    Sourced {
        incoming,
        position,
        caller: None,
    }
}

/// Reads up to and including the next newline (or to the end of the input), appending at
/// most `max + 1` bytes of it to `line`: a line of any length costs bounded memory. Returns
/// how many bytes were consumed and whether a newline ended them.
fn read_line_bounded(
    reader: &mut dyn BufRead,
    line: &mut Vec<u8>,
    max: usize,
) -> io::Result<(u64, bool)> {
    let mut taken = 0u64;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok((taken, false));
        }
        let (n, ended) = match buf.iter().position(|b| *b == b'\n') {
            Some(i) => (i + 1, true),
            None => (buf.len(), false),
        };
        let room = (max + 1).saturating_sub(line.len());
        line.extend_from_slice(&buf[..n.min(room)]);
        reader.consume(n);
        taken += n as u64;
        if ended {
            return Ok((taken, true));
        }
    }
}

/// [`parse`], with a panic of the decoder (a defect) turned into a dead letter for the line:
/// one line must not end the stream, nor be taken for the end of the input.
fn parse_guarded(line: &[u8], position: Option<v1::SourcePosition>) -> Sourced {
    let at = position.clone();
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| parse(line, position))).unwrap_or_else(
        |panic| {
            let why = panic
                .downcast_ref::<&str>()
                .map(ToString::to_string)
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Sourced {
                incoming: Incoming::Malformed {
                    payload: line.to_vec(),
                    key: Vec::new(),
                    reason: format!("the decoder failed on this line (a defect in canvass): {why}"),
                },
                position: at,
                caller: None,
            }
        },
    )
}

/// An input line longer than the limit: a dead letter with its first bytes.
fn oversized(line: &[u8], len: u64, max: usize, position: Option<v1::SourcePosition>) -> Sourced {
    let at = at_offset(position.as_ref());
    Sourced {
        incoming: Incoming::Malformed {
            payload: line[..line.len().min(DEAD_LETTER_PREFIX)].to_vec(),
            key: Vec::new(),
            reason: format!(
                "{at}the line is {len} bytes long, more than the limit of {max} (`--max-input-bytes`); the dead letter keeps its first {DEAD_LETTER_PREFIX} bytes"
            ),
        },
        position,
        caller: None,
    }
}

fn spawn_reader(
    input: InputSpec,
    resume: Option<u64>,
    options: &RunOptions,
    tx: SyncSender<Item>,
) -> io::Result<()> {
    let (follow, max) = (options.follow, options.max_line_bytes);
    let name = input.source_name()?;
    let mut reader: Box<dyn BufRead + Send> = match &input {
        InputSpec::File(path) => {
            let mut f = File::open(path)?;
            f.seek(SeekFrom::Start(resume.unwrap_or(0)))?;
            Box::new(BufReader::new(f))
        }
        InputSpec::Stdin => Box::new(BufReader::new(io::stdin())),
    };
    let mut offset = resume.unwrap_or(0);
    thread::Builder::new()
        .name("canvass-source".into())
        .spawn(move || {
            let mut line = Vec::new();
            // Bytes of the line read so far (`line` holds at most `max + 1` of them).
            let mut len = 0u64;
            // Whether the end of the input was reached (and told) since the last line.
            let (mut at_end, mut told) = (false, false);
            loop {
                match read_line_bounded(&mut *reader, &mut line, max) {
                    Err(e) => {
                        let _ = tx.send(Item::Failed(e));
                        return;
                    }
                    Ok((0, _)) if follow => {
                        if !at_end {
                            // Operators (and tests) learn that lines appended now are read.
                            if told {
                                tracing::debug!(source = ?name, offset, "following the input");
                            } else {
                                tracing::info!(source = ?name, offset, "following the input: lines appended from now on are read as they come");
                                told = true;
                            }
                            at_end = true;
                        }
                        thread::sleep(Duration::from_millis(20));
                    }
                    Ok((0, _)) if len == 0 => {
                        let _ = tx.send(Item::End);
                        return;
                    }
                    Ok((n, ended)) => {
                        at_end = false;
                        len += n;
                        // A line still being written (no newline yet) is read on when complete.
                        if follow && !ended {
                            continue;
                        }
                        let start = offset;
                        offset += len;
                        let total = std::mem::take(&mut len);
                        let text = std::mem::take(&mut line);
                        // The limit is on the line itself, its newline aside.
                        let content = total - u64::from(ended);
                        if text.iter().all(u8::is_ascii_whitespace) && content <= max as u64 {
                            continue;
                        }
                        let position = name.as_ref().map(|source| v1::SourcePosition {
                            source: source.clone(),
                            offset: start,
                            next_offset: offset,
                        });
                        let item = if content > max as u64 {
                            oversized(&text, content, max, position)
                        } else {
                            parse_guarded(&text, position)
                        };
                        if tx.send(Item::Input(item)).is_err() {
                            return;
                        }
                    }
                }
            }
        })?;
    Ok(())
}

/// Where actions go when they leave the outbox. The Kafka and gRPC deliveries plug in here.
///
/// `deliver` returns once the receiver has the actions durably; only then are they removed
/// from the outbox. An error leaves them queued, to be delivered again (under the same
/// idempotency keys) on the next drain or after a restart.
pub trait Dispatcher {
    /// Delivers a batch of actions, in order.
    fn deliver(&mut self, actions: &[v1::Action]) -> io::Result<()>;
}

/// Writes delivered actions as canonical JSON lines to a file (appended, synced to disk
/// before the actions count as delivered) or to standard output.
///
/// The file holds whole lines only: a batch is encoded first (an action that cannot be
/// encoded fails the batch before anything is written), appended with one write, and cut
/// back to its previous length if the write fails (a full disk). A line left partial by a
/// crash in the middle of a write is cut off when the file is opened again; its action is
/// still in the outbox and is written again, whole.
#[derive(Debug)]
pub struct JsonlSink {
    out: SinkTarget,
}

#[derive(Debug)]
enum SinkTarget {
    File(File),
    Stdout,
}

impl JsonlSink {
    /// Appends to `path`, first cutting off a partial last line.
    pub fn file(path: &Path) -> io::Result<Self> {
        let file = File::options()
            .create(true)
            .read(true)
            .append(true)
            .open(path)?;
        truncate_partial_line(&file)?;
        Ok(Self {
            out: SinkTarget::File(file),
        })
    }

    /// Writes to standard output.
    #[must_use]
    pub fn stdout() -> Self {
        Self {
            out: SinkTarget::Stdout,
        }
    }
}

/// Cuts `file` back to just after its last newline, if what follows it is a partial line.
fn truncate_partial_line(mut file: &File) -> io::Result<()> {
    let len = file.metadata()?.len();
    let mut end = len;
    let mut buf = vec![0u8; 64 * 1024];
    while end > 0 {
        let start = end.saturating_sub(buf.len() as u64);
        let chunk = &mut buf[..usize::try_from(end - start).unwrap_or(0)];
        file.seek(SeekFrom::Start(start))?;
        file.read_exact(chunk)?;
        if let Some(at) = chunk.iter().rposition(|b| *b == b'\n') {
            end = start + at as u64 + 1;
            break;
        }
        end = start;
    }
    if end < len {
        file.set_len(end)?;
        file.sync_data()?;
    }
    Ok(())
}

/// One canonical JSON line per action, or the first that cannot be encoded.
fn encode_lines(actions: &[v1::Action]) -> io::Result<Vec<u8>> {
    let mut text = Vec::new();
    for a in actions {
        let line = json::to_string(a).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("action {} cannot be encoded: {e}", a.idempotency_key),
            )
        })?;
        text.extend_from_slice(line.as_bytes());
        text.push(b'\n');
    }
    Ok(text)
}

impl Dispatcher for JsonlSink {
    /// Writes the actions; returns once they are durable (file) or flushed (stdout).
    fn deliver(&mut self, actions: &[v1::Action]) -> io::Result<()> {
        let text = encode_lines(actions)?;
        match &mut self.out {
            SinkTarget::File(f) => {
                let before = f.metadata()?.len();
                if let Err(e) = f.write_all(&text).and_then(|()| f.sync_data()) {
                    // Whole lines or nothing: what went in of this batch comes out again
                    // (if this fails too, the next open cuts the partial line).
                    let _ = f.set_len(before);
                    return Err(e);
                }
                Ok(())
            }
            SinkTarget::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(&text)?;
                out.flush()
            }
        }
    }
}

/// The wall clock, in the core's terms.
#[must_use]
pub fn wall_clock() -> UnixMillis {
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

/// Runs the engine over its sources until the input ends (or, with `follow` or `serve`,
/// until `stop`), delivering actions to `sink` after every commit. Without a sink the outbox
/// is left to another delivery (the gRPC one), which reads it from the store.
pub fn run(
    engine: &mut Partitions,
    sources: Sources,
    mut sink: Option<&mut dyn Dispatcher>,
    options: &RunOptions,
) -> Result<RunReport, RunError> {
    let Sources {
        input,
        intake,
        serve,
        stop,
        mut after_commit,
        until_delivered,
    } = sources;
    let Intake { tx, rx } = intake.unwrap_or_else(|| channel(options.channel_capacity).1);
    let has_input = input.is_some();
    // Without an input only inboxes feed the loop: it ends on `stop`, not when they are all
    // dropped, so it keeps a sender of its own.
    let mut _kept_open = None;
    if let Some(input) = input {
        let resume = match input.source_name().map_err(RunError::Source)? {
            Some(name) => engine.offset(&name)?,
            None => None,
        };
        spawn_reader(input, resume, options, tx).map_err(RunError::Source)?;
    } else {
        _kept_open = Some(tx);
    }
    let mut report = RunReport::default();
    // Anything left in the outbox by an earlier run goes out first.
    if let Some(sink) = sink.as_deref_mut() {
        drain(engine, sink, &mut report)?;
    }
    let mut input_ended = !has_input;
    // Whether the clock was moved on once the input ended (`AtEnd`).
    let mut moved_on = false;
    // A batch applied whose flush may still run (under deferred flushes): answered and
    // delivered once durable, after the next batch was computed beside its flush.
    let mut held: Option<Held> = None;
    loop {
        // With a batch in flight, only what has arrived already joins the next one: the
        // loop must not wait for more input while answers wait for it.
        let (batch, replies, ended) = next_batch(&rx, options, input_ended, held.is_some())?;
        input_ended |= ended;
        if batch.is_empty()
            && let Some(h) = held.take()
        {
            complete(engine, h, &mut sink, &mut after_commit, &mut report)?;
            continue;
        }
        let now = wall_clock();
        let result = if batch.is_empty() {
            engine.tick(now)
        } else {
            engine.ingest(batch, now)
        };
        if let Ok(r) = &result {
            r.log_warnings();
        }
        let current = Held {
            marks: engine.commit_marks(),
            replies,
            result,
        };
        // The batch before is answered first (it committed before this one), then a failure
        // of this one stops the loop at once: nothing after it may commit.
        if let Some(h) = held.take() {
            complete(engine, h, &mut sink, &mut after_commit, &mut report)?;
        }
        if current.result.is_err() {
            let Held {
                replies, result, ..
            } = current;
            replies.settle(result)?;
            unreachable!("settling a failed commit returns its error");
        }
        held = Some(current);
        let stopping = stop.as_ref().is_some_and(|s| s.load(Ordering::Relaxed));
        let ending = input_ended && !serve;
        if (stopping || ending)
            && let Some(h) = held.take()
        {
            complete(engine, h, &mut sink, &mut after_commit, &mut report)?;
        }
        if ending && !stopping && !moved_on {
            moved_on = true;
            let until = match options.at_end {
                AtEnd::Stop => None,
                AtEnd::Until(t) => Some(t),
                AtEnd::Drain(horizon) => Some(engine.clock().plus(horizon)),
            };
            if let Some(until) = until {
                let r = engine.advance_to(until)?;
                engine.wait_synced()?;
                report.commits += u64::from(r.entries > 0);
                report.entries += r.entries;
                report.timers_fired += r.timers_fired;
                if let Some(sink) = sink.as_deref_mut() {
                    drain(engine, sink, &mut report)?;
                }
            }
        }
        let finishing = stopping || (ending && (!until_delivered || engine.outbox_is_empty()?));
        if finishing {
            // Not needed for safety; the next start then has no log tail to apply again.
            engine.checkpoint()?;
            return Ok(report);
        }
    }
}

/// A batch applied, with its submitters and where each partition's commits reached.
struct Held {
    marks: Vec<u64>,
    replies: Submissions,
    result: Result<BatchReport, Error>,
}

/// Once the batch is durable: answers its submitters, counts it, and delivers its actions.
fn complete(
    engine: &mut Partitions,
    held: Held,
    sink: &mut Option<&mut dyn Dispatcher>,
    after_commit: &mut Option<Box<dyn FnMut() + Send>>,
    report: &mut RunReport,
) -> Result<(), RunError> {
    let Held {
        marks,
        replies,
        result,
    } = held;
    let result = match result {
        Ok(r) => engine.wait_durable(&marks).map(|()| r),
        Err(e) => Err(e),
    };
    let r = replies.settle(result)?;
    if r.entries > 0 || r.dead_letters > 0 || r.duplicates > 0 {
        report.commits += 1;
        if let Some(hook) = after_commit.as_mut() {
            hook();
        }
    }
    report.entries += r.entries;
    report.timers_fired += r.timers_fired;
    report.duplicates += r.duplicates;
    report.dead_letters += r.dead_letters;
    if let Some(sink) = sink.as_deref_mut() {
        drain(engine, sink, report)?;
    }
    Ok(())
}

fn drain(
    engine: &mut Partitions,
    sink: &mut dyn Dispatcher,
    report: &mut RunReport,
) -> Result<(), RunError> {
    loop {
        let n = engine.dispatch(1024, &mut |actions| sink.deliver(actions))?;
        if n == 0 {
            return Ok(());
        }
        report.delivered += n as u64;
    }
}

/// Submissions of a batch and where their inputs sit in it.
type Replies = Vec<(Range<usize>, oneshot::Sender<Reply>)>;

/// Waits up to 50 ms for a first input, then up to `max_wait` for more, up to `max_batch`.
/// Returns the batch, the submissions to answer, and whether the input ended.
fn next_batch(
    rx: &Receiver<Item>,
    options: &RunOptions,
    input_ended: bool,
    in_flight: bool,
) -> Result<(Vec<Sourced>, Submissions, bool), RunError> {
    // Every sender gone before the reader said the input ended: it stopped without saying
    // why (it never does so by design); the rest of the input must not pass for none.
    let lost = || {
        RunError::Source(io::Error::other(
            "the input reader stopped before the end of the input",
        ))
    };
    let mut batch = Vec::new();
    let mut replies = Submissions::default();
    let first_wait = if in_flight {
        Duration::ZERO
    } else {
        Duration::from_millis(50)
    };
    let first = match rx.recv_timeout(first_wait) {
        Ok(item) => item,
        Err(RecvTimeoutError::Timeout) => return Ok((batch, replies, false)),
        Err(RecvTimeoutError::Disconnected) if !input_ended => return Err(lost()),
        Err(RecvTimeoutError::Disconnected) => return Ok((batch, replies, true)),
    };
    // A batch in flight is the wait: take what is there.
    let deadline = Instant::now()
        + if in_flight {
            Duration::ZERO
        } else {
            options.max_wait
        };
    let mut next = Some(first);
    while let Some(item) = next.take() {
        match item {
            Item::Input(s) => batch.push(s),
            Item::Request(request) => replies.add(&mut batch, request),
            Item::End => return Ok((batch, replies, true)),
            Item::Failed(e) => return Err(RunError::Source(e)),
        }
        if batch.len() >= options.max_batch {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        next = match rx.recv_timeout(left) {
            Ok(item) => Some(item),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) if !input_ended => return Err(lost()),
            Err(RecvTimeoutError::Disconnected) => return Ok((batch, replies, true)),
        };
    }
    Ok((batch, replies, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_read_whole_up_to_the_limit_and_no_further() {
        let mut input = io::Cursor::new(b"0123456789\n0123456789abc\nlast".to_vec());
        let mut line = Vec::new();
        assert_eq!(
            read_line_bounded(&mut input, &mut line, 10).unwrap(),
            (11, true)
        );
        assert_eq!(
            line, b"0123456789\n",
            "ten bytes and the newline: within the limit"
        );
        line.clear();
        assert_eq!(
            read_line_bounded(&mut input, &mut line, 10).unwrap(),
            (14, true)
        );
        assert_eq!(line.len(), 11, "only the limit and one byte more are kept");
        line.clear();
        assert_eq!(
            read_line_bounded(&mut input, &mut line, 10).unwrap(),
            (4, false)
        );
        assert_eq!(line, b"last");
        line.clear();
        assert_eq!(
            read_line_bounded(&mut input, &mut line, 10).unwrap(),
            (0, false)
        );
    }

    #[test]
    fn opening_the_actions_file_cuts_a_partial_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions.jsonl");
        for (before, after) in [
            ("", ""),
            ("{\"a\":1}\n", "{\"a\":1}\n"),
            ("{\"a\":1}\n{\"b\":", "{\"a\":1}\n"),
            ("{\"b\":", ""),
        ] {
            std::fs::write(&path, before).unwrap();
            drop(JsonlSink::file(&path).unwrap());
            assert_eq!(std::fs::read_to_string(&path).unwrap(), after, "{before:?}");
        }
        // Longer than one read of the scan back: the newline is found chunks earlier.
        let long = format!("{{\"a\":1}}\n{}", "x".repeat(200_000));
        std::fs::write(&path, &long).unwrap();
        drop(JsonlSink::file(&path).unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
    }

    #[test]
    fn an_action_that_cannot_be_encoded_is_never_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("actions.jsonl");
        let mut sink = JsonlSink::file(&path).unwrap();
        let good = v1::Action {
            idempotency_key: "k1".into(),
            ..Default::default()
        };
        let bad = v1::Action {
            idempotency_key: "k2".into(),
            emitted_at: Some(canvass_proto::wkt::Timestamp {
                seconds: 1_000_000_000_000_000,
                nanos: 0,
            }),
            ..Default::default()
        };
        let err = sink.deliver(&[good, bad]).unwrap_err();
        assert!(
            err.to_string().contains("action k2 cannot be encoded"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "",
            "nothing of the batch"
        );
    }
}
