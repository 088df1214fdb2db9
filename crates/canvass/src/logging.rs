//! The process's log: `tracing` events on standard error, as text or as JSON lines, filtered
//! by `CANVASS_LOG` (or `RUST_LOG`) in the `tracing-subscriber` directive syntax.

use std::io::IsTerminal;

use anyhow::Context;
use clap::ValueEnum;
use tracing_subscriber::EnvFilter;

/// How log events are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, target, message, fields.
    Text,
    /// One JSON object per line for log systems: `timestamp`, `level`, `target`, `fields`
    /// (with `message`), and the spans the event happened in (`span`, `spans`).
    Json,
}

/// The filter when neither variable is set: the engine's notes and warnings, and the
/// warnings of the libraries under it.
const DEFAULT_FILTER: &str = "info";

/// Installs the process's subscriber.
///
/// # Errors
/// A filter variable that does not parse, named with the reason.
pub fn init(format: LogFormat) -> anyhow::Result<()> {
    let (variable, directives) = ["CANVASS_LOG", "RUST_LOG"]
        .iter()
        .find_map(|v| std::env::var(v).ok().map(|d| (*v, d)))
        .unwrap_or(("default", DEFAULT_FILTER.to_string()));
    let filter = EnvFilter::builder()
        .parse(&directives)
        .with_context(|| format!("{variable}: `{directives}` is not a log filter"))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .try_init(),
    };
    installed.map_err(|e| anyhow::anyhow!("cannot install the log: {e}"))
}
