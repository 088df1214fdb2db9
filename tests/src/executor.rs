//! The example executor, run as its own process for the tests that push actions to it.

use std::{
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    time::Duration,
};

use crate::{KillOnDrop, executor_bin};

/// The example executor, running: its address, its stdout (one line per action carried out,
/// without `--out`) and its stderr lines after the address.
#[derive(Debug)]
pub struct Executor {
    /// The process, killed when dropped.
    pub child: KillOnDrop,
    /// Where it listens.
    pub address: String,
    /// Its standard output, line by line.
    pub printed: Receiver<String>,
    /// Its standard error after the first line, line by line.
    pub notes: Receiver<String>,
}

/// Starts the example executor on any free port with `args`.
///
/// # Panics
/// If it does not start within a minute.
#[must_use]
pub fn start_executor(args: &[&str]) -> Executor {
    start_executor_on("127.0.0.1:0", args)
}

/// Starts the example executor listening on `address` (e.g. again where a stopped one
/// listened) with `args`.
///
/// # Panics
/// If it does not start within a minute.
#[must_use]
pub fn start_executor_on(address: &str, args: &[&str]) -> Executor {
    use std::io::BufRead;
    let mut child = Command::new(executor_bin())
        .args(["--listen", address])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the example executor starts");
    let lines = |pipe: Box<dyn std::io::Read + Send>| {
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        rx
    };
    let printed = lines(Box::new(child.stdout.take().expect("piped")));
    let notes = lines(Box::new(child.stderr.take().expect("piped")));
    let first = notes
        .recv_timeout(Duration::from_secs(60))
        .expect("the executor starts");
    let address = first
        .strip_prefix("executor: listening on ")
        .unwrap_or_else(|| panic!("unexpected: {first}"))
        .to_string();
    Executor {
        child: KillOnDrop(child),
        address,
        printed,
        notes,
    }
}

/// The idempotency keys in an executor's `--out` file, with how often each was carried out.
///
/// # Panics
/// If a line is not an action.
#[must_use]
pub fn carried_out(out: &std::path::Path) -> std::collections::BTreeMap<String, u32> {
    let mut keys = std::collections::BTreeMap::new();
    for line in std::fs::read_to_string(out).unwrap_or_default().lines() {
        let action: canvass_proto::v1::Action =
            canvass_proto::json::from_str(line).expect("the executor writes actions");
        *keys.entry(action.idempotency_key).or_insert(0) += 1;
    }
    keys
}
