//! The `canvass` command line: validate, simulate and draw campaign specs.

/// Writes a line to standard output, returning an error (not panicking, as `println!` does)
/// when it cannot: `main` takes a closed pipe (`canvass inspect | head`) as a normal end.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*)?
    }};
}

/// [`out!`] without the newline.
macro_rules! out_raw {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*)?
    }};
}

mod client;
mod deliver;
mod graph;
mod group;
mod input;
mod kafka;
mod letters;
mod logging;
mod metrics;
mod report;
mod run;
mod serve;
mod simulate;
mod validate;

// sled and the engine allocate many small, short-lived buffers; glibc malloc's arena locks
// cost about a third of the engine's time under load (measured with perf), mimalloc does not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand, ValueEnum};

/// canvass: an event-sourced campaign orchestration engine.
#[derive(Debug, Parser)]
#[command(name = "canvass", version, about)]
struct Cli {
    /// How the log on standard error is written (its filter: `CANVASS_LOG` or `RUST_LOG`,
    /// e.g. `info,canvass_kafka=debug`).
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "CANVASS_LOG_FORMAT"
    )]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Checks campaign specs and reports every problem with its path in the spec.
    Validate {
        /// Spec files (canonical JSON, or binary protobuf with a .pb/.binpb extension).
        #[arg(required = true)]
        specs: Vec<PathBuf>,
    },
    /// Runs campaigns over contacts and events on a virtual clock and reports the outcome.
    Simulate(simulate::Args),
    /// Runs the durable engine: inputs are logged in the data directory, state is kept there,
    /// actions are delivered as JSON lines.
    Run(run::RunArgs),
    /// Throws the projections away and rebuilds them from the log.
    Replay(run::ReplayArgs),
    /// Prints what a data directory holds (or a running engine, with --server).
    Inspect(run::InspectArgs),
    /// Lists, shows and redrives dead letters: what the engine parked, and why.
    DeadLetters(letters::Args),
    /// Creates the topics of an engine on Kafka, and produces input streams to them.
    Kafka(kafka::Args),
    /// Rewrites a data directory of the single-partition layout (before partitions) into a
    /// new, partitioned one, by applying its log again.
    MigrateStore(run::MigrateArgs),
    /// What the campaigns of a data directory achieved: funnel, actions, cost and budget,
    /// attributed revenue and ROI, split arms and uplift, marketing density.
    Report(report::Args),
    /// Defines and operates campaigns on a running engine over gRPC (token in
    /// CANVASS_TOKEN).
    Campaign(client::CampaignArgs),
    /// Asks a running engine whether it serves (gRPC health): for health checks.
    Health(client::HealthArgs),
    /// Bearer-token helpers for the gRPC settings file.
    #[command(subcommand)]
    Token(client::TokenCommand),
    /// Prints a campaign's state machine as a Mermaid or Graphviz diagram.
    Graph {
        /// The spec file.
        spec: PathBuf,
        /// Diagram language.
        #[arg(long, value_enum, default_value_t = GraphFormat::Mermaid)]
        format: GraphFormat,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum GraphFormat {
    Mermaid,
    Dot,
}

/// Exit code for a command that found problems in its input (a bad spec, a bad line with
/// `--strict`, a bad setting or argument, a request the server refused as invalid): as clap
/// exits for a bad command line.
const EXIT_INVALID_INPUT: u8 = 2;
/// Exit code for a command whose server cannot be reached or is unavailable: worth trying
/// again later, unchanged.
const EXIT_UNAVAILABLE: u8 = 3;
/// Exit code for a run stopped by a disk (the store's or the actions file's is full or
/// failing, or a write stalled): the data is as a crash would leave it, and a restart with
/// room resumes from the last commit.
const EXIT_STORAGE: u8 = 4;

/// The exit code an error calls for.
fn exit_code(e: &anyhow::Error) -> u8 {
    let storage = e.chain().any(|c| {
        c.downcast_ref::<canvass_engine::runtime::RunError>()
            .is_some_and(canvass_engine::runtime::RunError::is_storage)
            || c.downcast_ref::<canvass_kafka::RunError>()
                .is_some_and(canvass_kafka::RunError::is_storage)
            || c.downcast_ref::<canvass_engine::durable::Error>()
                .is_some_and(canvass_engine::durable::Error::is_storage)
            || c.downcast_ref::<canvass_store::Error>()
                .is_some_and(canvass_store::Error::is_storage)
    });
    if storage {
        EXIT_STORAGE
    } else if e
        .chain()
        .any(|c| c.downcast_ref::<client::Unavailable>().is_some())
    {
        EXIT_UNAVAILABLE
    } else {
        EXIT_INVALID_INPUT
    }
}

fn main() -> ExitCode {
    canvass_engine::process::prefer_small_pages();
    let cli = Cli::parse();
    if let Err(e) = logging::init(cli.log_format) {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_INVALID_INPUT);
    }
    let result = match cli.command {
        Command::Validate { specs } => validate::run(&specs),
        Command::Simulate(args) => simulate::run(&args),
        Command::Run(args) => run::run(&args),
        Command::Replay(args) => run::replay(&args),
        Command::Inspect(args) => run::inspect(&args),
        Command::DeadLetters(args) => letters::run(&args),
        Command::Kafka(args) => kafka::run(&args),
        Command::MigrateStore(args) => run::migrate_store(&args),
        Command::Report(args) => report::run(&args),
        Command::Campaign(args) => client::campaign(&args),
        Command::Token(command) => client::token(&command),
        Command::Health(args) => client::health(&args),
        Command::Graph { spec, format } => graph::run(&spec, format),
    };
    match result {
        Ok(code) => code,
        // The reader of standard output went away (`| head`): what it wanted it has.
        Err(e) if closed_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

/// Whether `e` is a write to a pipe whose reader has gone.
fn closed_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}
