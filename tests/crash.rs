//! The crash test: the real binary, killed with SIGKILL at random moments while it ingests a
//! fixed stream (timers fall due during the run), restarted each time, ends exactly where an
//! uninterrupted run ends: same projections, every input applied once and in order, every
//! action delivered at least once, and never two different actions under one key.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use canvass_proto::v1;
use canvass_tests::OutputWithin;
use canvass_tests::{canvass_bin, reference_stream, start_ready};

/// Kills required before the run may finish.
const KILLS: usize = 20;

fn run_args(data: &Path, input: &Path, actions: &Path) -> Vec<String> {
    run_args_with(data, input, actions, &[])
}

fn run_args_with(data: &Path, input: &Path, actions: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = canvass_tests::event_clock_run(data, input, actions);
    args.extend(extra.iter().map(ToString::to_string));
    args.extend(
        [
            "--max-batch",
            "8",
            "--max-wait-ms",
            "1",
            // Checkpoints every few batches, so that kills land before, during and after them.
            "--checkpoint-entries",
            "50",
        ]
        .iter()
        .map(ToString::to_string),
    );
    args
}

fn spawn(args: &[String]) -> std::process::Child {
    Command::new(canvass_bin())
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Starts the binary and waits until it is ready, so that kills are timed from when it
/// ingests, however slow the start.
fn spawn_ready(args: &[String]) -> canvass_tests::KillOnDrop {
    start_ready(args, false).child
}

/// A small deterministic generator: the seed is printed so a failure can be replayed.
struct Lcg(u64);

impl Lcg {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n
    }
}

/// The projections, less the log position (acknowledgement entries, and so the length of
/// the log, depend on when deliveries happened).
fn projections(data: &Path) -> Vec<(Vec<u8>, Vec<u8>)> {
    let mut out = Vec::new();
    for (p, store) in canvass_tests::stores(data).iter().enumerate() {
        for (k, v) in store.projection_dump().unwrap() {
            if k.as_slice() != b"Mlast_seq" {
                let mut key = format!("{p}/").into_bytes();
                key.extend(k);
                out.push((key, v));
            }
        }
    }
    out
}

/// Runs `canvass replay` on `data` (with `extra` arguments), asserts it succeeded and
/// returns what it printed on standard error.
fn replay(data: &Path, extra: &[&str]) -> String {
    let out = Command::new(canvass_bin())
        .args(["replay", "--data", data.to_str().unwrap()])
        .args(extra)
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stderr
}

/// Every logged input but the acknowledgements (they depend on when deliveries happened),
/// in order.
fn inputs(data: &Path) -> Vec<v1::LogEntry> {
    let mut out = Vec::new();
    for store in canvass_tests::stores(data).iter() {
        out.extend(
            store
                .log_from(1)
                .map(Result::unwrap)
                .filter(|e| !matches!(e.input, Some(v1::log_entry::Input::ActionAcks(_))))
                .map(|mut e| {
                    e.seq = 0;
                    e
                }),
        );
    }
    out
}

/// Action lines by idempotency key.
fn actions(path: &Path) -> BTreeMap<String, Vec<String>> {
    let mut by_key: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for line in std::fs::read_to_string(path).unwrap_or_default().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        by_key
            .entry(v["idempotencyKey"].as_str().unwrap().to_string())
            .or_default()
            .push(line.to_string());
    }
    by_key
}

/// A directory for the test, holding the reference stream with `copies` copies.
fn stream_file(copies: usize) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("stream.jsonl");
    std::fs::write(&input, reference_stream(copies)).unwrap();
    (dir, input)
}

/// How long a run of a test's stream may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(600);

/// Runs the engine over the input to its end and asserts it finished cleanly.
fn run_to_end(data: &Path, input: &Path, actions_file: &Path) {
    let mut child = spawn(&run_args(data, input, actions_file));
    assert!(canvass_tests::must_end(&mut child, LIMIT, "the run to its end").success());
}

/// Asserts that a run that was interrupted (`other`) ended where the uninterrupted one
/// (`clean`) did: the same inputs logged in the same order, the same projections byte for
/// byte, every action delivered at least once and never two different actions under one
/// key. Returns the other run's actions by key.
fn assert_ends_like(
    clean: &Path,
    clean_actions: &Path,
    other: &Path,
    other_actions: &Path,
) -> BTreeMap<String, Vec<String>> {
    assert_eq!(
        inputs(other),
        inputs(clean),
        "the inputs logged differ from the clean run's"
    );
    let (a, b) = (projections(clean), projections(other));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert!(
            x == y,
            "projections differ under key {}",
            String::from_utf8_lossy(&x.0)
        );
    }
    let (expected, delivered) = (actions(clean_actions), actions(other_actions));
    assert!(
        expected.values().all(|lines| lines.len() == 1),
        "the clean run delivers each action once"
    );
    assert_eq!(
        expected.keys().collect::<Vec<_>>(),
        delivered.keys().collect::<Vec<_>>(),
        "an action is missing"
    );
    for (key, lines) in &delivered {
        assert!(
            lines.iter().all(|l| l == &expected[key][0]),
            "two different actions under {key}"
        );
    }
    delivered
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_changes_nothing() {
    sigkill_at_random_moments(&[]);
}

/// The same on three partitions run by two workers: a kill lands between the partitions'
/// commits of one batch as well, and the restart gives each partition what it lacks.
#[test]
fn sigkill_on_partitions_run_in_parallel_loses_nothing_and_changes_nothing() {
    sigkill_at_random_moments(&["--partitions", "3", "--workers", "2"]);
}

fn sigkill_at_random_moments(extra: &[&str]) {
    let (dir, input) = stream_file(8);

    // One uninterrupted run.
    let (clean, clean_actions) = (
        dir.path().join("clean"),
        dir.path().join("clean-actions.jsonl"),
    );
    let mut child = spawn_ready(&run_args_with(&clean, &input, &clean_actions, extra));
    let started = Instant::now();
    assert!(canvass_tests::must_end(&mut child, LIMIT, "the clean run").success());
    let clean_time = started.elapsed();

    // The same stream, killed again and again. Each life lasts a random share of the clean
    // run's time, small enough that the input is far from consumed after KILLS kills.
    let seed = canvass_tests::seed_from_env("CANVASS_CRASH_SEED");
    eprintln!("crash test seed: CANVASS_CRASH_SEED={seed} (clean run took {clean_time:.1?})");
    let mut rng = Lcg(seed);
    let (crashed, crashed_actions) = (
        dir.path().join("crashed"),
        dir.path().join("crashed-actions.jsonl"),
    );
    let args = run_args_with(&crashed, &input, &crashed_actions, extra);
    // At most a quarter of the clean run's time in all, so that a clean run slowed down by
    // a busy machine still leaves the killed runs far from the end of the stream.
    let life = clean_time.as_millis() as u64 / (4 * KILLS as u64);
    let mut kills = 0;
    // Kills after which a restart had to apply a log tail again over a checkpoint.
    let mut tails_after_a_checkpoint = 0;
    // Past KILLS, a few longer lives if no kill has yet landed after a checkpoint (a loaded
    // machine can make every short life end before its background checkpoint does).
    while kills < KILLS || (tails_after_a_checkpoint == 0 && kills < KILLS + 8) {
        let mut child = spawn_ready(&args);
        let this_life = if kills < KILLS { life } else { life * 4 };
        std::thread::sleep(Duration::from_millis(rng.below(this_life.max(1) + 1)));
        match child.try_wait().unwrap() {
            Some(status) => panic!(
                "the run finished ({status}) after only {kills} kills: the stream is too short"
            ),
            None => {
                child.kill().unwrap();
                child.wait().unwrap();
                kills += 1;
                for (p, store) in canvass_tests::stores(&crashed).iter().enumerate() {
                    let (checkpoint, end) =
                        (store.checkpoint_seq().unwrap(), store.last_seq().unwrap());
                    eprintln!(
                        "kill {kills}: partition {p}: checkpoint {checkpoint}, log end {end}"
                    );
                    if checkpoint > 0 && checkpoint < end {
                        tails_after_a_checkpoint += 1;
                    }
                }
            }
        }
    }
    // Then let it finish.
    assert!(canvass_tests::must_end(&mut spawn(&args), LIMIT, "the run to its end").success());
    assert!(
        tails_after_a_checkpoint > 0,
        "no kill left a log tail after a checkpoint: the test did not exercise that path"
    );

    let delivered = assert_ends_like(&clean, &clean_actions, &crashed, &crashed_actions);
    let redelivered: usize = delivered.values().map(|l| l.len() - 1).sum();
    eprintln!(
        "{kills} kills; {} actions, {redelivered} delivered again after a crash",
        delivered.len()
    );
}

#[test]
fn canvass_replay_rebuilds_what_canvass_run_built() {
    let (dir, input) = stream_file(1);
    let (data, actions_file) = (dir.path().join("data"), dir.path().join("actions.jsonl"));
    run_to_end(&data, &input, &actions_file);
    let live = canvass_tests::store(&data).projection_dump().unwrap();

    assert!(replay(&data, &[]).contains("rebuilt the projections from"));
    let rebuilt = canvass_tests::store(&data).projection_dump().unwrap();
    assert_eq!(
        live.len(),
        rebuilt.len(),
        "replay changed the number of projection keys"
    );
    for (x, y) in live.iter().zip(&rebuilt) {
        assert!(
            x == y,
            "replay changed the projections under key {}",
            String::from_utf8_lossy(&x.0)
        );
    }

    let out = Command::new(canvass_bin())
        .args(["inspect", "--data", data.to_str().unwrap()])
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dead letters:  3"), "{text}");
    assert!(text.contains("approve v1 by manager"), "{text}");
    assert!(text.contains("campaign b-trial-invite (RUNNING, active v1): 172 enrolled (0 held out), 471 actions (0 delivered, 471 handed off, 0 failed), 56 goals"), "{text}");
    let out = Command::new(canvass_bin())
        .args([
            "inspect",
            "--data",
            data.to_str().unwrap(),
            "--group",
            "b-trial-invite/rated_high",
        ])
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 56);
    let out = Command::new(canvass_bin())
        .args(["inspect", "--data", data.to_str().unwrap(), "--contacts"])
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        lines.len(),
        304,
        "303 contacts in the file and one known only from its events"
    );
    assert_eq!(lines[0]["contact"]["id"], "c-0001-k0");
    // Every action reached the sink exactly once in a run without crashes.
    assert_eq!(
        actions(&actions_file).values().map(Vec::len).sum::<usize>(),
        actions(&actions_file).len()
    );
}

#[test]
fn replay_uses_the_dedupe_window_run_kept_with_the_data() {
    let (dir, input) = stream_file(1);
    let (data, actions_file) = (dir.path().join("data"), dir.path().join("actions.jsonl"));
    let mut args = run_args(&data, &input, &actions_file);
    args.extend(["--dedupe-hours".to_string(), "1".to_string()]);
    assert!(canvass_tests::must_end(&mut spawn(&args), LIMIT, "the run to its end").success());
    let live = projections(&data);
    // No flag: the window `run` used, so the same projections.
    replay(&data, &[]);
    assert!(
        projections(&data) == live,
        "replay with the kept window changed the projections"
    );
    // Another window is honoured, with a note, and does change what contacts remember.
    let stderr = replay(&data, &["--dedupe-hours", "168"]);
    assert!(
        stderr.contains("replaying with a 168-hour dedupe window; `run` used 1 hours"),
        "{stderr}"
    );
    assert!(
        projections(&data) != live,
        "the window made no difference: the test proves nothing"
    );
}

/// A storage failure (here: the file-size limit, as a full disk would) stops the engine with
/// a clear error and a failure status; nothing half-written remains: once the disk has room
/// again, a restart ends exactly where an uninterrupted run ends.
#[test]
fn a_storage_failure_stops_the_engine_and_loses_nothing() {
    let (dir, input) = stream_file(3);
    let (clean, clean_actions) = (dir.path().join("clean"), dir.path().join("clean.jsonl"));
    run_to_end(&clean, &input, &clean_actions);

    let (full, full_actions) = (dir.path().join("full"), dir.path().join("full.jsonl"));
    let args = run_args(&full, &input, &full_actions);
    // Writes past 2 MiB fail with EFBIG (SIGXFSZ ignored, as a daemon would): the engine's
    // store grows past that long before the stream ends.
    let script = format!(
        "trap '' XFSZ; ulimit -f 2048; exec \"$0\" {}",
        args.iter()
            .map(|a| format!("'{a}'"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = Command::new("bash")
        .args(["-c", &script, canvass_bin().to_str().unwrap()])
        .output_within(canvass_tests::HUNG)
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the engine went on past a failing disk: {stderr}"
    );
    // Said once, with what failed and why.
    assert_eq!(
        stderr.matches("File too large").count(),
        1,
        "no clear error: {stderr}"
    );
    assert!(
        stderr.contains("error:") && stderr.contains("storage failed: IO error"),
        "{stderr}"
    );
    let before = canvass_tests::store(&full).last_seq().unwrap();
    let total = canvass_tests::store(&clean).last_seq().unwrap();
    assert!(
        before < total,
        "the limit did not stop the engine early ({before} of {total} entries)"
    );

    run_to_end(&full, &input, &full_actions);
    assert_ends_like(&clean, &clean_actions, &full, &full_actions);
}

/// Runs the engine on `input` with its data and actions file on `disk` until the disk is
/// full: it must stop by itself within a bounded time, with status 4 and the storage error.
/// Returns what it printed on standard error.
fn run_until_full(disk: &canvass_tests::SmallDisk, input: &Path, what: &str) -> String {
    let (data, actions_file) = (disk.path().join("data"), disk.path().join("actions.jsonl"));
    let mut args = run_args(&data, input, &actions_file);
    args.extend(["--storage-stall-secs".into(), "10".into()]);
    let mut child = Command::new(canvass_bin())
        .args(&args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr_pipe = child.stderr.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut stderr_pipe, &mut text).unwrap();
        text
    });
    let status = canvass_tests::wait_within(&mut child, Duration::from_secs(90));
    let stderr = reader.join().unwrap();
    let status =
        status.unwrap_or_else(|| panic!("{what}: the engine hung on a full disk:\n{stderr}"));
    assert_eq!(status.code(), Some(4), "{what}: {stderr}");
    assert!(
        stderr.contains("No space left on device") || stderr.contains("storage stalled"),
        "{what}: no storage error: {stderr}"
    );
    stderr
}

/// A real full filesystem (a tmpfs the test mounts, not a file-size limit) under the data
/// directory and the actions file stops the engine within a bounded time, with status 4 and
/// the storage error, ten times out of ten: each disk is a different size, so it fills at
/// another moment (in the log, in a checkpoint, in the middle of an action line, at the
/// stop). Each time, once the disk has room again, a restart ends exactly where an
/// uninterrupted run ends, and the actions file holds whole lines only.
#[test]
fn a_full_filesystem_stops_the_engine_cleanly_and_a_restart_with_room_loses_nothing() {
    let (dir, input) = stream_file(3);
    let (clean, clean_actions) = (dir.path().join("clean"), dir.path().join("clean.jsonl"));
    run_to_end(&clean, &input, &clean_actions);

    for (i, kib) in (0..10).map(|i| (i, 1900 + i * 241)) {
        let disk = canvass_tests::SmallDisk::mount(kib);
        let what = format!("try {i} ({kib} KiB)");
        run_until_full(&disk, &input, &what);
        disk.resize(256 * 1024);
        let (data, actions_file) = (disk.path().join("data"), disk.path().join("actions.jsonl"));
        run_to_end(&data, &input, &actions_file);
        // `actions` parses every line: a torn or glued line fails here.
        assert_ends_like(&clean, &clean_actions, &data, &actions_file);
    }
}

/// After a crash, `inspect` shows what is committed, not the last checkpoint: the log after
/// the checkpoint is applied in memory, read-only (the data directory is not changed), and
/// the contact states it prints are the ones a replay of the whole log rebuilds.
#[test]
fn inspect_after_a_crash_shows_what_is_committed_and_changes_nothing() {
    let (dir, input) = stream_file(8);
    let (data, actions_file) = (dir.path().join("data"), dir.path().join("actions.jsonl"));
    let mut args = run_args(&data, &input, &actions_file);
    // No checkpoint before the kill: everything but the log is in memory.
    for (flag, value) in [
        ("--checkpoint-entries", "100000000"),
        ("--checkpoint-mib", "1024"),
    ] {
        let at = args.iter().position(|a| a == flag);
        if let Some(at) = at {
            args.drain(at..at + 2);
        }
        args.extend([flag.to_string(), value.to_string()]);
    }
    let mut child = spawn_ready(&args);
    let deadline = Instant::now() + Duration::from_secs(120);
    while std::fs::read_to_string(&actions_file)
        .map(|t| t.lines().count())
        .unwrap_or(0)
        < 200
    {
        assert!(Instant::now() < deadline, "no actions within 2 minutes");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended too soon"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let (checkpoint, end) = {
        let store = canvass_tests::store(&data);
        (store.checkpoint_seq().unwrap(), store.last_seq().unwrap())
    };
    assert_eq!(checkpoint, 0, "a checkpoint was taken before the kill");
    assert!(end > 0);

    let inspect = |extra: &[&str]| {
        let out = Command::new(canvass_bin())
            .args(["inspect", "--data", data.to_str().unwrap()])
            .args(extra)
            .output_within(canvass_tests::HUNG)
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let summary = inspect(&[]);
    assert!(
        summary.contains(&format!(
            "checkpoint:    0 entries checkpointed; the {end} after them"
        )),
        "{summary}"
    );
    let contacts = summary
        .lines()
        .find_map(|l| l.strip_prefix("contacts:"))
        .and_then(|n| n.trim().parse::<usize>().ok())
        .unwrap();
    let states = inspect(&["--contacts"]);
    assert_eq!(states.lines().count(), contacts);
    assert!(contacts > 0, "{summary}");
    let store = canvass_tests::store(&data);
    assert_eq!(
        store.checkpoint_seq().unwrap(),
        0,
        "inspect wrote a checkpoint"
    );
    assert_eq!(store.last_seq().unwrap(), end, "inspect wrote to the log");
    drop(store);

    // A replay of the whole log rebuilds the same states.
    replay(&data, &[]);
    assert_eq!(inspect(&["--contacts"]), states);
}

/// The actions file alone on a small disk (a tmpfs), which fills in the middle of a line:
/// the engine stops with status 4, the file holds whole lines only, and once the disk has
/// room a restart ends where an uninterrupted run ends, with no line torn or glued to
/// another.
#[test]
fn an_actions_file_on_a_full_disk_is_never_torn() {
    let (dir, input) = stream_file(2);
    let (clean, clean_actions) = (dir.path().join("clean"), dir.path().join("clean.jsonl"));
    run_to_end(&clean, &input, &clean_actions);
    let total = std::fs::metadata(&clean_actions).unwrap().len();
    for kib in [37, 58, 91] {
        assert!(kib * 1024 < total, "the disk must fill before the run ends");
        let disk = canvass_tests::SmallDisk::mount(kib);
        let data = dir.path().join(format!("data-{kib}"));
        let actions_file = disk.path().join("actions.jsonl");
        let out = Command::new(canvass_bin())
            .args(run_args(&data, &input, &actions_file))
            .output_within(canvass_tests::HUNG)
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(4), "{kib} KiB: {stderr}");
        assert!(
            stderr.contains("delivering actions failed: No space left on device"),
            "{kib} KiB: {stderr}"
        );
        let text = std::fs::read_to_string(&actions_file).unwrap();
        assert!(
            text.is_empty() || text.ends_with('\n'),
            "{kib} KiB: a partial line is left"
        );
        for line in text.lines() {
            serde_json::from_str::<serde_json::Value>(line)
                .unwrap_or_else(|e| panic!("{kib} KiB: a torn line ({e}): {line}"));
        }
        disk.resize(64 * 1024);
        run_to_end(&data, &input, &actions_file);
        assert_ends_like(&clean, &clean_actions, &data, &actions_file);
    }
}
