//! The delivery settings (`canvass run --delivery FILE`, TOML): where each kind of action
//! goes, and how pushes are retried. Checked whole at start: a kind with no destination, or
//! two destinations that would each report its outcome, is refused naming the table.
//!
//! ```toml
//! [retry]                    # pushes to executors
//! first_backoff_ms = 100     # the first wait; each next one doubles, up to
//! max_backoff_ms = 30000     # this; every wait is drawn at random below its bound (jitter)
//! max_attempts = 10          # refusals by a reachable executor before it is a dead letter (0: no bound)
//! give_up_after_secs = 86400 # or this long after its first attempt, reachable or not (0: no bound)
//!
//! [[executor]]               # push to a service implementing ActionExecutor
//! kinds = ["EMAIL", "POSTAL_MAIL"]
//! endpoint = "http://127.0.0.1:7001"
//! concurrency = 8            # calls in flight to this endpoint
//! timeout_ms = 5000          # per attempt
//!
//! [[pull]]                   # served to `ActionService.StreamActions` (needs --grpc-config)
//! kinds = ["TRIAL_OFFER"]
//!
//! [[topic]]                  # the Kafka actions topic (needs --kafka-config)
//! kinds = ["*"]              # "*": every kind
//!
//! [[file]]                   # JSON lines, appended and synced ("-": standard output)
//! kinds = ["SALES_HANDOFF"]
//! path = "handoffs.jsonl"
//! ```
//!
//! A kind may go to several destinations (an executor, and the topic for audit); at most one
//! of them is an executor or pullers, whose answer is the action's outcome. The others are
//! copies, written before the action is handed to it.

use std::{collections::BTreeMap, path::Path, time::Duration};

use canvass_proto::v1;
use serde::Deserialize;

use crate::config::{ConfigError, ExecutorConfig, action_kind};

/// How pushes to executors are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// The first wait after a failed attempt, in milliseconds.
    pub first_backoff_ms: u64,
    /// The longest wait between two attempts, in milliseconds.
    pub max_backoff_ms: u64,
    /// Attempts a reachable executor may refuse (an error status, an answer that makes no
    /// sense, a timeout) before the action becomes a dead letter; 0: no bound. An executor
    /// that cannot be reached costs no attempt: its actions wait.
    pub max_attempts: u32,
    /// Time after an action's first attempt after which it becomes a dead letter, reachable
    /// executor or not; 0: no bound.
    pub give_up_after_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            first_backoff_ms: 100,
            max_backoff_ms: 30_000,
            max_attempts: 10,
            give_up_after_secs: 86_400,
        }
    }
}

impl RetryConfig {
    /// The time after which an action is given up on, if bounded.
    #[must_use]
    pub fn give_up_after(&self) -> Option<Duration> {
        (self.give_up_after_secs > 0).then(|| Duration::from_secs(self.give_up_after_secs))
    }
}

/// A `[[pull]]` or `[[topic]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct KindsOnly {
    kinds: Vec<String>,
}

/// A `[[file]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileEntry {
    kinds: Vec<String>,
    path: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeliveryFile {
    #[serde(default)]
    retry: RetryConfig,
    #[serde(default)]
    executor: Vec<ExecutorConfig>,
    #[serde(default)]
    pull: Vec<KindsOnly>,
    #[serde(default)]
    topic: Vec<KindsOnly>,
    #[serde(default)]
    file: Vec<FileEntry>,
}

/// A destination that takes a copy of an action: it is written there, durably, and the
/// destination reports nothing back.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sink {
    /// The Kafka actions topic.
    Topic,
    /// A JSON-lines file (`-`: standard output).
    File(String),
}

/// The destination whose answer is an action's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answerer {
    /// The executor of that index in [`Plan::executors`].
    Executor(usize),
    /// Pullers of `ActionService`.
    Pull,
}

/// Where one kind of action goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// Indices in [`Plan::sinks`], written first.
    pub sinks: Vec<usize>,
    /// Who answers for it; without one, a written copy is its delivery.
    pub answerer: Option<Answerer>,
}

/// The delivery, resolved: a route for every action kind.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// How pushes are retried.
    pub retry: RetryConfig,
    /// The executors pushed to.
    pub executors: Vec<ExecutorConfig>,
    /// The sinks written to, each once.
    pub sinks: Vec<Sink>,
    /// Per kind.
    pub routes: BTreeMap<i32, Route>,
    /// The settings table of each sink and of the pull, for errors (`topic[0]`, ...).
    origins: BTreeMap<String, String>,
}

/// Every kind an action can have.
fn all_kinds() -> impl Iterator<Item = v1::ActionKind> {
    (1..)
        .map_while(|n| v1::ActionKind::try_from(n).ok())
        .filter(|k| *k != v1::ActionKind::Unspecified)
}

fn kind_name(kind: i32) -> &'static str {
    v1::ActionKind::try_from(kind)
        .map_or("UNKNOWN", |k| k.as_str_name())
        .trim_start_matches("ACTION_KIND_")
}

/// The kinds a `kinds` list names (`*`: all), or the bad one.
fn kinds_of(field: &str, names: &[String]) -> Result<Vec<i32>, String> {
    if names.is_empty() {
        return Err(format!(
            "{field}.kinds: at least one action kind (or \"*\")"
        ));
    }
    let mut out = Vec::new();
    for (j, name) in names.iter().enumerate() {
        if name.trim() == "*" {
            out.extend(all_kinds().map(|k| k as i32));
        } else {
            let kind = action_kind(name).ok_or_else(|| {
                format!(
                    "{field}.kinds[{j}]: unknown action kind {name:?} (one of {}, or \"*\")",
                    all_kinds()
                        .map(|k| kind_name(k as i32))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })?;
            out.push(kind as i32);
        }
    }
    Ok(out)
}

impl Plan {
    /// Reads and checks a delivery settings file; errors name the file, line and field.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        crate::config::load_with(path, Self::parse)
    }

    /// Parses and checks delivery settings.
    pub fn parse(text: &str) -> Result<Self, String> {
        let file: DeliveryFile = toml::from_str(text).map_err(|e| e.to_string())?;
        let retry = file.retry;
        if retry.first_backoff_ms == 0 || retry.max_backoff_ms < retry.first_backoff_ms {
            return Err(format!(
                "retry: first_backoff_ms must be at least 1 and at most max_backoff_ms (got {} and {})",
                retry.first_backoff_ms, retry.max_backoff_ms
            ));
        }
        let mut plan = Self {
            retry,
            ..Self::default()
        };
        for (i, e) in file.executor.iter().enumerate() {
            let field = format!("executor[{i}]");
            check_executor(&field, e)?;
            let index = plan.executors.len();
            plan.executors.push(e.clone());
            for kind in kinds_of(&field, &e.kinds)? {
                plan.answer(kind, Answerer::Executor(index), &field)?;
            }
        }
        for (i, p) in file.pull.iter().enumerate() {
            let field = format!("pull[{i}]");
            plan.origins.entry("pull".into()).or_insert(field.clone());
            for kind in kinds_of(&field, &p.kinds)? {
                plan.answer(kind, Answerer::Pull, &field)?;
            }
        }
        for (i, t) in file.topic.iter().enumerate() {
            let field = format!("topic[{i}]");
            for kind in kinds_of(&field, &t.kinds)? {
                plan.copy(kind, Sink::Topic, &field);
            }
        }
        for (i, f) in file.file.iter().enumerate() {
            let field = format!("file[{i}]");
            if f.path.trim().is_empty() {
                return Err(format!(
                    "{field}.path: required (\"-\" for standard output)"
                ));
            }
            for kind in kinds_of(&field, &f.kinds)? {
                plan.copy(kind, Sink::File(f.path.clone()), &field);
            }
        }
        let missing: Vec<&str> = all_kinds()
            .map(|k| k as i32)
            .filter(|k| !plan.routes.contains_key(k))
            .map(kind_name)
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "every action kind needs a destination, and {} have none: list them in a table, or add e.g. [[file]] kinds = [\"*\"] path = \"actions.jsonl\"",
                missing.join(", ")
            ));
        }
        Ok(plan)
    }

    /// The delivery when no settings file is given: the executors of the gRPC settings take
    /// their kinds, `others` every other kind.
    #[must_use]
    pub fn derived(executors: &[ExecutorConfig], others: &Sink) -> Self {
        Self::derived_to(executors, None, Some(others))
    }

    /// As [`Plan::derived`], every other kind to pullers.
    #[must_use]
    pub fn derived_pull(executors: &[ExecutorConfig]) -> Self {
        Self::derived_to(executors, Some(Answerer::Pull), None)
    }

    fn derived_to(
        executors: &[ExecutorConfig],
        answerer: Option<Answerer>,
        sink: Option<&Sink>,
    ) -> Self {
        let mut plan = Self::default();
        for (i, e) in executors.iter().enumerate() {
            plan.executors.push(e.clone());
            for kind in e.kinds.iter().filter_map(|k| action_kind(k)) {
                plan.routes.entry(kind as i32).or_default().answerer = Some(Answerer::Executor(i));
            }
        }
        for kind in all_kinds().map(|k| k as i32) {
            if plan.routes.contains_key(&kind) {
                continue;
            }
            match (answerer, sink) {
                (Some(a), _) => plan.routes.entry(kind).or_default().answerer = Some(a),
                (None, Some(s)) => plan.copy(kind, s.clone(), "--actions"),
                (None, None) => {}
            }
        }
        plan
    }

    fn answer(&mut self, kind: i32, answerer: Answerer, field: &str) -> Result<(), String> {
        let route = self.routes.entry(kind).or_default();
        if let Some(before) = route.answerer
            && before != answerer
        {
            return Err(format!(
                "{field}: {} already goes to {}, which answers for it; a kind has one executor or pullers (copies go to [[topic]] or [[file]])",
                kind_name(kind),
                match before {
                    Answerer::Executor(i) => format!("executor[{i}]"),
                    Answerer::Pull => "pullers".into(),
                }
            ));
        }
        route.answerer = Some(answerer);
        Ok(())
    }

    fn copy(&mut self, kind: i32, sink: Sink, field: &str) {
        let index = match self.sinks.iter().position(|s| *s == sink) {
            Some(i) => i,
            None => {
                self.origins.insert(format!("{sink:?}"), field.to_string());
                self.sinks.push(sink);
                self.sinks.len() - 1
            }
        };
        let route = self.routes.entry(kind).or_default();
        if !route.sinks.contains(&index) {
            route.sinks.push(index);
        }
    }

    /// Whether some kind is answered for by an executor or pullers: the delivery then runs
    /// beside the engine and reports outcomes through it. Otherwise every action is written
    /// to its sinks by the engine loop right after each commit.
    #[must_use]
    pub fn has_answerers(&self) -> bool {
        self.routes.values().any(|r| r.answerer.is_some())
    }

    /// Whether some kind is pulled.
    #[must_use]
    pub fn pulls(&self) -> bool {
        self.routes
            .values()
            .any(|r| r.answerer == Some(Answerer::Pull))
    }

    /// The settings table that named a sink (for errors about it).
    #[must_use]
    pub fn origin(&self, sink: &Sink) -> &str {
        self.origins
            .get(&format!("{sink:?}"))
            .map_or("the delivery", String::as_str)
    }

    /// Refuses destinations this run cannot reach: the topic without Kafka, pullers without
    /// the gRPC API.
    pub fn check_reachable(&self, kafka: bool, grpc: bool) -> Result<(), String> {
        if !kafka && self.sinks.contains(&Sink::Topic) {
            return Err(format!(
                "{}: actions go to the Kafka actions topic only when the engine runs on Kafka (--kafka-config)",
                self.origin(&Sink::Topic)
            ));
        }
        if !grpc && self.pulls() {
            return Err(format!(
                "{}: pulled actions are served by the gRPC API, which this run does not serve (--grpc-config)",
                self.origins.get("pull").map_or("pull", String::as_str)
            ));
        }
        Ok(())
    }

    /// What each kind's route is, one line per route, for the log at start.
    #[must_use]
    pub fn describe(&self) -> String {
        let mut by_route: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for (kind, route) in &self.routes {
            let mut to: Vec<String> = route
                .sinks
                .iter()
                .map(|&s| match &self.sinks[s] {
                    Sink::Topic => "the actions topic".to_string(),
                    Sink::File(p) if p == "-" => "standard output".to_string(),
                    Sink::File(p) => p.clone(),
                })
                .collect();
            match route.answerer {
                Some(Answerer::Executor(i)) => to.push(self.executors[i].endpoint.clone()),
                Some(Answerer::Pull) => to.push("pullers".into()),
                None => {}
            }
            by_route
                .entry(to.join(" + "))
                .or_default()
                .push(kind_name(*kind));
        }
        by_route
            .into_iter()
            .map(|(to, kinds)| format!("{} -> {to}", kinds.join(",")))
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// Checks one executor entry.
pub(crate) fn check_executor(field: &str, e: &ExecutorConfig) -> Result<(), String> {
    if !(e.endpoint.starts_with("http://") || e.endpoint.starts_with("https://")) {
        return Err(format!(
            "{field}.endpoint: expected http://host:port or https://host:port, got {:?}",
            e.endpoint
        ));
    }
    if tonic::transport::Endpoint::from_shared(e.endpoint.clone()).is_err() {
        return Err(format!("{field}.endpoint: not a URL: {:?}", e.endpoint));
    }
    if e.concurrency == 0 {
        return Err(format!("{field}.concurrency: at least 1"));
    }
    if e.timeout_ms == 0 {
        return Err(format!("{field}.timeout_ms: at least 1"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"
[retry]
max_attempts = 3

[[executor]]
kinds = ["EMAIL", "POSTAL_MAIL"]
endpoint = "http://127.0.0.1:7001"

[[pull]]
kinds = ["TRIAL_OFFER"]

[[topic]]
kinds = ["*"]

[[file]]
kinds = ["SALES_HANDOFF", "EMAIL"]
path = "a.jsonl"
"#;

    #[test]
    fn a_kind_goes_to_its_answerer_and_its_copies() {
        let plan = Plan::parse(FULL).unwrap();
        assert_eq!(plan.retry.max_attempts, 3);
        assert_eq!(plan.retry.first_backoff_ms, 100);
        assert_eq!(plan.sinks, vec![Sink::Topic, Sink::File("a.jsonl".into())]);
        let email = &plan.routes[&(v1::ActionKind::Email as i32)];
        assert_eq!(email.answerer, Some(Answerer::Executor(0)));
        assert_eq!(email.sinks, vec![0, 1]);
        let trial = &plan.routes[&(v1::ActionKind::TrialOffer as i32)];
        assert_eq!(trial.answerer, Some(Answerer::Pull));
        assert_eq!(trial.sinks, vec![0]);
        let sms = &plan.routes[&(v1::ActionKind::Sms as i32)];
        assert_eq!(sms.answerer, None);
        assert!(plan.has_answerers() && plan.pulls());
        assert_eq!(plan.routes.len(), all_kinds().count());
    }

    #[test]
    fn refusals_name_the_table_and_the_reason() {
        let e = Plan::parse("[[file]]\nkinds = [\"EMAIL\"]\npath = \"a\"\n").unwrap_err();
        assert!(e.contains("POSTAL_MAIL") && e.contains("have none"), "{e}");
        let e = Plan::parse("[[file]]\nkinds = [\"FAX\"]\npath = \"a\"\n").unwrap_err();
        assert!(
            e.starts_with("file[0].kinds[0]: unknown action kind \"FAX\""),
            "{e}"
        );
        let e = Plan::parse(
            "[[pull]]\nkinds = [\"*\"]\n[[executor]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://x:1\"\n",
        )
        .unwrap_err();
        assert!(
            e.starts_with("pull[0]: EMAIL already goes to executor[0]"),
            "{e}"
        );
        let e = Plan::parse("[[executor]]\nkinds = [\"*\"]\nendpoint = \"x:1\"\n").unwrap_err();
        assert!(e.starts_with("executor[0].endpoint"), "{e}");
        let e = Plan::parse("[[topic]]\nkinds = [\"*\"]\nbroker = 1\n").unwrap_err();
        assert!(
            e.contains("unknown field `broker`") && e.contains("line"),
            "{e}"
        );
        let e =
            Plan::parse("[retry]\nfirst_backoff_ms = 0\n[[topic]]\nkinds = [\"*\"]\n").unwrap_err();
        assert!(e.starts_with("retry:"), "{e}");
    }

    #[test]
    fn a_destination_the_run_cannot_reach_is_refused() {
        let plan = Plan::parse(FULL).unwrap();
        let e = plan.check_reachable(false, true).unwrap_err();
        assert!(
            e.starts_with("topic[0]: ") && e.contains("--kafka-config"),
            "{e}"
        );
        let e = plan.check_reachable(true, false).unwrap_err();
        assert!(
            e.starts_with("pull[0]: ") && e.contains("--grpc-config"),
            "{e}"
        );
        plan.check_reachable(true, true).unwrap();
    }

    #[test]
    fn without_settings_the_executors_take_their_kinds_and_the_rest_goes_to_one_place() {
        let executor = ExecutorConfig {
            kinds: vec!["EMAIL".into()],
            endpoint: "http://127.0.0.1:1".into(),
            concurrency: 1,
            timeout_ms: 100,
        };
        let plan = Plan::derived(std::slice::from_ref(&executor), &Sink::Topic);
        assert_eq!(
            plan.routes[&(v1::ActionKind::Email as i32)],
            Route {
                sinks: vec![],
                answerer: Some(Answerer::Executor(0))
            }
        );
        assert_eq!(plan.routes[&(v1::ActionKind::Sms as i32)].sinks, vec![0]);
        assert!(plan.has_answerers() && !plan.pulls());
        let plan = Plan::derived(&[], &Sink::File("-".into()));
        assert!(!plan.has_answerers());
        let plan = Plan::derived_pull(&[executor]);
        assert!(plan.pulls());
        assert!(
            plan.describe().contains("EMAIL -> http://127.0.0.1:1"),
            "{}",
            plan.describe()
        );
    }
}
