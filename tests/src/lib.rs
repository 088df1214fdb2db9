//! Helpers shared by the end-to-end tests: building and running the real `canvass` binary.

pub mod api;
pub mod broker;
pub mod executor;

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::{
        OnceLock,
        mpsc::{Receiver, channel},
    },
    time::Duration,
};

/// The stores of the partitions of a data directory `canvass run` made.
///
/// # Panics
/// If it does not open.
#[must_use]
pub fn stores(data: impl AsRef<Path>) -> canvass_store::Stores {
    canvass_store::Stores::open(
        data.as_ref(),
        canvass_store::Wanted::default(),
        &canvass_store::StoreOptions::default(),
    )
    .expect("the data directory opens")
}

/// The store of a data directory of one partition.
///
/// # Panics
/// If it does not open, or has more partitions.
#[must_use]
pub fn store(data: impl AsRef<Path>) -> canvass_store::Store {
    let stores = stores(data);
    assert_eq!(stores.layout().partitions, 1, "a one-partition directory");
    stores.partition(0).clone()
}

/// The repository root.
#[must_use]
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// A file of the reference example.
#[must_use]
pub fn example(name: &str) -> PathBuf {
    repo_root().join("examples/reference").join(name)
}

/// `canvass simulate` on the reference example, as the README runs it (`scripts/demo.sh`),
/// with `extra` arguments.
#[must_use]
pub fn simulate_reference(extra: &[&str]) -> Output {
    let mut args = simulate_reference_args();
    args.extend(extra.iter().map(ToString::to_string));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    canvass(&args)
}

/// The arguments of [`simulate_reference`], for a test that runs the command itself.
#[must_use]
pub fn simulate_reference_args() -> Vec<String> {
    let path = |name: &str| example(name).display().to_string();
    vec![
        "simulate".to_string(),
        "--spec".to_string(),
        path("campaign.json"),
        "--spec".to_string(),
        path("survey.json"),
        "--contacts".to_string(),
        path("contacts.jsonl"),
        "--events".to_string(),
        path("events.jsonl"),
        "--start".to_string(),
        "2026-03-02T09:00:00Z".to_string(),
    ]
}

/// Path of the `canvass` binary, built once per test process with the same profile as the
/// tests, so that a test never runs a stale binary.
///
/// # Panics
/// If the build fails: the tests cannot run without the binary.
pub fn canvass_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("canvass", "canvass"))
}

/// Path of the example executor (`examples/executor`), built like [`canvass_bin`].
///
/// # Panics
/// If the build fails.
pub fn executor_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| build_bin("canvass-example-executor", "canvass-executor"))
}

fn build_bin(package: &str, bin: &str) -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let release =
        std::env::current_exe().is_ok_and(|p| p.components().any(|c| c.as_os_str() == "release"));
    let mut cmd = Command::new(cargo);
    cmd.current_dir(repo_root()).args([
        "build",
        "--quiet",
        "-p",
        package,
        "--bin",
        bin,
        "--message-format=json",
    ]);
    if release {
        cmd.arg("--release");
    }
    let out = cmd.output().expect("cargo runs");
    assert!(
        out.status.success(),
        "building {bin} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|m| m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .unwrap_or_else(|| panic!("cargo reports the {bin} executable"))
}

/// A child process killed when dropped, so that a failing test leaves nothing running.
#[derive(Debug)]
pub struct KillOnDrop(pub Child);

impl KillOnDrop {
    /// Asks the process to stop (SIGTERM) and waits for it.
    ///
    /// # Panics
    /// If the signal cannot be sent or the process cannot be waited for.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.send_sigterm();
        self.0.wait().expect("the process can be waited for")
    }

    /// Asks the process to stop (SIGTERM) and waits at most `limit`: `None` if it is still
    /// running then (it is killed when dropped).
    ///
    /// # Panics
    /// If the signal cannot be sent or the process cannot be waited for.
    pub fn terminate_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        self.send_sigterm();
        let deadline = std::time::Instant::now() + limit;
        loop {
            if let Some(status) = self.0.try_wait().expect("the process can be waited for") {
                return Some(status);
            }
            if std::time::Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn send_sigterm(&self) {
        let sent = Command::new("kill")
            .args(["-TERM", &self.0.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM not sent");
    }
}

impl std::ops::Deref for KillOnDrop {
    type Target = Child;

    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `canvass` with these arguments from the repository root.
///
/// # Panics
/// If the binary cannot be started, or has not ended within ten minutes (a command that
/// hangs fails its test rather than the whole suite's time).
#[must_use]
pub fn canvass(args: &[&str]) -> Output {
    Command::new(canvass_bin())
        .current_dir(repo_root())
        .args(args)
        .output_within(HUNG)
        .expect("canvass starts")
}

/// How long a command a test runs may take before the test counts it as hung.
pub const HUNG: Duration = Duration::from_secs(600);

/// `Command::output` with a bound on the time: a command that hangs fails its test rather
/// than the whole suite's time.
pub trait OutputWithin {
    /// Runs the command to its end, its output captured, standard input closed.
    ///
    /// # Errors
    /// If it cannot be started.
    ///
    /// # Panics
    /// If it is still running after `limit` (it is killed first).
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output>;
}

impl OutputWithin for Command {
    fn output_within(&mut self, limit: Duration) -> std::io::Result<Output> {
        let mut child = self
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        let stdout = read_in_background(child.stdout.take());
        let stderr = read_in_background(child.stderr.take());
        let what = format!(
            "{:?} {:?}",
            self.get_program(),
            self.get_args().collect::<Vec<_>>()
        );
        let status = must_end(&mut child, limit, &what);
        Ok(Output {
            status,
            stdout: stdout.join().expect("stdout is read"),
            stderr: stderr.join().expect("stderr is read"),
        })
    }
}

/// Reads a child's pipe to its end on a thread of its own, so that the child never blocks on
/// a full pipe while the test waits for it.
fn read_in_background(
    pipe: Option<impl Read + Send + 'static>,
) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Waits at most `limit` for `child` to exit and returns its status.
///
/// # Panics
/// If it is still running then (it is killed first), naming `what`.
pub fn must_end(child: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    wait_within(child, limit)
        .unwrap_or_else(|| panic!("{what} had not ended after {limit:?}: killed"))
}

/// Standard output as text.
#[must_use]
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Standard error as text.
#[must_use]
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The reference example as one input stream for `canvass run`, with `copies` copies of
/// every contact and event (ids suffixed `-k<n>`) so that the run lasts: the specs, the
/// contacts, the launch, then the events in time order, then the malformed lines. Contacts
/// and commands carry the launch time, for the event clock.
///
/// # Panics
/// If the example files are missing or not what the generator wrote.
#[must_use]
pub fn reference_stream(copies: usize) -> String {
    use serde_json::{Value, json};
    const LAUNCH: &str = "2026-03-02T09:00:00Z";
    let read = |name: &str| std::fs::read_to_string(example(name)).expect("example file");
    let spec = |name: &str| -> Value { serde_json::from_str(&read(name)).expect("spec JSON") };
    let mut lines = Vec::new();
    // Each campaign is written, submitted, approved by someone else, and launched.
    for (file, id) in [
        ("survey.json", "b-improvement-survey"),
        ("campaign.json", "b-trial-invite"),
    ] {
        let version = json!({"campaignId": id, "version": 1});
        let mut spec = spec(file);
        // Each copy spends what the example spends: the budget grows with them, so that no
        // action is withheld and the outcome is the example's, `copies` times.
        if let Some(total) = spec
            .pointer("/budget/total")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<f64>().ok())
        {
            spec["budget"]["total"] = json!(format!("{:.2}", total * copies as f64));
        }
        lines.push(json!({"at": LAUNCH, "command": {"actor": "marketer", "putSpec": spec}}));
        lines.push(json!({"at": LAUNCH, "command": {"actor": "marketer", "submit": version}}));
        lines.push(json!({"at": LAUNCH, "command": {"actor": "manager", "approve": version}}));
    }
    lines
        .push(json!({"at": LAUNCH, "command": {"actor": "ops", "launch": "b-improvement-survey"}}));
    let contacts: Vec<Value> = read("contacts.jsonl")
        .lines()
        .map(|l| serde_json::from_str(l).expect("contact"))
        .collect();
    for k in 0..copies {
        for c in &contacts {
            let mut c = c.clone();
            c["id"] = json!(format!("{}-k{k}", c["id"].as_str().unwrap_or_default()));
            lines.push(json!({"at": LAUNCH, "contact": c}));
        }
    }
    lines.push(json!({"at": LAUNCH, "command": {"actor": "ops", "launch": "b-trial-invite"}}));
    let mut events = Vec::new();
    let mut malformed = Vec::new();
    for line in read("events.jsonl").lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(e) => events.push(e),
            Err(_) => malformed.push(line.to_string()),
        }
    }
    let mut copied = Vec::new();
    for k in 0..copies {
        for e in &events {
            let mut e = e.clone();
            e["id"] = json!(format!("{}-k{k}", e["id"].as_str().unwrap_or_default()));
            if let Some(c) = e.get("contactId").and_then(Value::as_str) {
                e["contactId"] = json!(format!("{c}-k{k}"));
            }
            copied.push(e);
        }
    }
    copied.sort_by(|a, b| a["occurredAt"].as_str().cmp(&b["occurredAt"].as_str()));
    lines.extend(copied.into_iter().map(|e| json!({ "event": e })));
    let mut text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    for m in malformed {
        text.push_str(&m);
        text.push('\n');
    }
    text
}

/// A running `canvass` whose log (JSON lines on standard error) is read on a thread of its
/// own, so that it never blocks on a full pipe.
#[derive(Debug)]
pub struct Running {
    /// The process, killed if the test ends (or fails) with it still running.
    pub child: KillOnDrop,
    /// Its log events, each a JSON object as `--log-format json` writes it.
    pub lines: Receiver<String>,
    /// Where its gRPC server listens, if it serves (from its ready file).
    pub grpc: Option<String>,
    /// Where its metrics are served, if asked (from its ready file).
    pub metrics: Option<String>,
    /// Holds the ready file.
    _ready_dir: tempfile::TempDir,
}

impl Running {
    /// Waits up to `timeout` for a log event whose message starts with `message`; whether
    /// one came.
    #[must_use]
    pub fn wait_for_event(&self, message: &str, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
                    if event["fields"]["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(message))
                    {
                        return true;
                    }
                }
                Err(_) => return false,
            }
        }
        false
    }
}

/// Starts `canvass run` with a ready file and a JSON log, and waits until the file says it
/// takes inputs (store open, specs loaded, gRPC listening), so that what a test times starts
/// when the engine works, however slow its start. With `echo`, its log is repeated on the
/// test's standard error, indented.
///
/// # Panics
/// If it does not start, exits first, or is not ready within two minutes.
#[must_use]
pub fn start_ready(args: &[String], echo: bool) -> Running {
    let ready_dir = tempfile::tempdir().expect("a directory for the ready file");
    let ready_file = ready_dir.path().join("ready.json");
    let mut child = KillOnDrop(
        Command::new(canvass_bin())
            .args(args)
            .arg("--ready-file")
            .arg(&ready_file)
            .args(["--log-format", "json"])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("canvass starts"),
    );
    let stderr = child.stderr.take().expect("stderr is piped");
    let (lines_tx, lines_rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            // librdkafka's notes about properties meant for the other client.
            if line.contains("(CONFWARN)") {
                continue;
            }
            if echo {
                eprintln!("  engine: {line}");
            }
            let _ = lines_tx.send(line);
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let ready = loop {
        if let Ok(text) = std::fs::read_to_string(&ready_file) {
            break serde_json::from_str::<serde_json::Value>(&text)
                .expect("the ready file is JSON");
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("canvass exited before it was ready: {status}");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "canvass was not ready within 2 minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    Running {
        child,
        lines: lines_rx,
        grpc: ready["grpc"].as_str().map(str::to_string),
        metrics: ready["metrics"].as_str().map(str::to_string),
        _ready_dir: ready_dir,
    }
}

/// A tmpfs of a fixed size mounted for one test, so that a test can fill a real filesystem
/// (a file-size limit fails writes differently from a full disk). Unmounted when dropped.
#[derive(Debug)]
pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `kib` KiB on a new temporary directory.
    ///
    /// # Panics
    /// If it cannot be mounted: the test needs root (CI runs as root), and says so rather
    /// than pass without having filled a disk.
    #[must_use]
    pub fn mount(kib: u64) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={kib}k"), "tmpfs"])
            .arg(dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot mount a tmpfs (this test fills a real filesystem and needs root): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self { dir }
    }

    /// Where it is mounted.
    #[must_use]
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Grows (or shrinks) it to `kib` KiB, keeping what it holds.
    ///
    /// # Panics
    /// If the remount fails.
    pub fn resize(&self, kib: u64) {
        let out = Command::new("mount")
            .args(["-o", &format!("remount,size={kib}k")])
            .arg(self.dir.path())
            .output()
            .expect("mount runs");
        assert!(
            out.status.success(),
            "cannot resize the tmpfs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

/// Waits at most `limit` for `child` to exit: its status, or `None` if it is still
/// running (then it is killed).
///
/// # Panics
/// If the process cannot be waited for.
pub fn wait_within(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().expect("the process can be waited for") {
            return Some(status);
        }
        if std::time::Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// What a run of the binary bounded in time and memory left.
#[derive(Debug)]
pub struct Bounded {
    /// How it ended.
    pub status: std::process::ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
    /// Its peak resident memory (`VmHWM`), in KiB, as last sampled before it exited.
    pub peak_rss_kib: u64,
}

/// The peak resident memory (`VmHWM`) of a running process, in KiB.
#[must_use]
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Runs `canvass` with `args`, sampling its peak resident memory until it exits.
///
/// # Panics
/// If it runs past `limit` or its peak memory passes `max_rss_mib` (it is killed first): a
/// bad input must cost bounded time and memory.
#[must_use]
pub fn run_bounded(args: &[String], limit: Duration, max_rss_mib: u64) -> Bounded {
    let mut child = KillOnDrop(
        Command::new(canvass_bin())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("canvass starts"),
    );
    let out = read_in_background(child.stdout.take());
    let err = read_in_background(child.stderr.take());
    let started = std::time::Instant::now();
    let mut peak = 0;
    let status = loop {
        if let Some(status) = child.try_wait().expect("the process can be waited for") {
            break status;
        }
        peak = peak_rss_kib(child.id()).unwrap_or(peak).max(peak);
        assert!(
            peak <= max_rss_mib * 1024,
            "canvass {args:?} passed {max_rss_mib} MiB of resident memory ({peak} KiB)"
        );
        assert!(
            started.elapsed() <= limit,
            "canvass {args:?} ran past {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    Bounded {
        status,
        stdout: String::from_utf8_lossy(&out.join().unwrap_or_default()).into_owned(),
        stderr: String::from_utf8_lossy(&err.join().unwrap_or_default()).into_owned(),
        peak_rss_kib: peak,
    }
}

/// The arguments of `canvass run` over a JSON-lines `input` on the event clock, with its data
/// in `data` and its actions appended to `actions`.
///
/// # Panics
/// If a path is not UTF-8.
#[must_use]
pub fn event_clock_run(data: &Path, input: &Path, actions: &Path) -> Vec<String> {
    let path = |p: &Path| p.to_str().expect("a UTF-8 path").to_string();
    vec![
        "run".into(),
        "--data".into(),
        path(data),
        "--input".into(),
        path(input),
        "--actions".into(),
        path(actions),
        "--clock".into(),
        "event".into(),
    ]
}

/// Scrapes a metrics endpoint (`host:port`) and parses what it serves with a Prometheus
/// text-format parser; also returns the text.
///
/// # Panics
/// If the endpoint does not answer 200 or the text does not parse.
#[must_use]
pub fn scrape(address: &str) -> (prometheus_parse::Scrape, String) {
    let mut response = ureq::get(&format!("http://{address}/metrics"))
        .call()
        .expect("the metrics endpoint answers");
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(
        content_type.starts_with("text/plain; version=0.0.4"),
        "{content_type}"
    );
    let text = response
        .body_mut()
        .read_to_string()
        .expect("the metrics are text");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("the metrics parse");
    (scrape, text)
}

/// The value of the sample named `name` (a counter, a gauge, or a histogram's `_count` or
/// `_sum`) whose labels include `labels`; `None` if there is none.
#[must_use]
pub fn sample(
    scrape: &prometheus_parse::Scrape,
    name: &str,
    labels: &[(&str, &str)],
) -> Option<f64> {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .find_map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => Some(*v),
            _ => None,
        })
}

/// The sum of every sample named `name` whose labels include `labels`.
#[must_use]
pub fn sample_sum(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    use prometheus_parse::Value;
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            _ => 0.0,
        })
        .sum()
}

/// A command line as owned strings.
#[must_use]
pub fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

/// Where two projection dumps differ, readably (the first few keys only in one, or with
/// another value); `None` when they are the same.
#[must_use]
pub fn dump_difference(
    left: &[(Vec<u8>, Vec<u8>)],
    right: &[(Vec<u8>, Vec<u8>)],
) -> Option<String> {
    let left: std::collections::BTreeMap<_, _> = left.iter().cloned().collect();
    let right: std::collections::BTreeMap<_, _> = right.iter().cloned().collect();
    let shown = |bytes: &[u8]| bytes.escape_ascii().to_string();
    let mut lines = Vec::new();
    for (key, value) in &left {
        match right.get(key) {
            None => lines.push(format!("only left:  {}", shown(key))),
            Some(other) if other != value => lines.push(format!(
                "differs:    {}\n  left:  {}\n  right: {}",
                shown(key),
                shown(value),
                shown(other)
            )),
            Some(_) => {}
        }
    }
    lines.extend(
        right
            .keys()
            .filter(|k| !left.contains_key(*k))
            .map(|k| format!("only right: {}", shown(k))),
    );
    let total = lines.len();
    lines.truncate(8);
    (total > 0).then(|| format!("{total} keys differ:\n{}", lines.join("\n")))
}

/// The seed of a randomised test: the number in the environment variable `name`, to replay
/// a run, or else one drawn from the clock (the test prints it).
#[must_use]
pub fn seed_from_env(name: &str) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        })
}
