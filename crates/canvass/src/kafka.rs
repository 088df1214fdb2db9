//! `canvass kafka create-topics|produce`: the topics an engine on Kafka uses, created with the
//! settings it relies on, and a JSON-lines stream of inputs produced as the engine expects
//! (touchpoints keyed by contact id on the partition the configured partitioner gives).

use std::{io::BufRead, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use canvass_kafka::{KafkaConfig, tools};
use clap::Subcommand;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Kafka settings file (TOML), as `run --kafka-config`; `CANVASS_KAFKA_*` variables too.
    #[arg(long, value_name = "FILE")]
    kafka_config: Option<PathBuf>,
    #[command(subcommand)]
    command: KafkaCommand,
}

#[derive(Debug, Subcommand)]
enum KafkaCommand {
    /// Creates the five topics: touchpoints and actions with `--partitions`, control, audit
    /// and dead letters with one; control and audit kept for good, none compacted.
    CreateTopics {
        /// Partitions of the touchpoints topic (and the actions topic): the engine's
        /// partition count, fixed once a data directory uses it.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=1024))]
        partitions: i32,
        /// Replicas of each partition.
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..))]
        replication: i32,
        /// A topic that exists already is not an error (it is left as it is): for a
        /// deployment's set-up step that runs at every start.
        #[arg(long)]
        if_missing: bool,
    },
    /// Produces a JSON-lines stream of IngestRecords (`{"contact": ...}`, `{"event": ...}`,
    /// `{"command": ...}`, as `run --input` reads): touchpoints keyed by contact id, commands
    /// to the control topic. A line that is not an input is reported with its number and
    /// skipped (status 2 at the end).
    Produce {
        /// The stream; `-` for standard input.
        #[arg(long, default_value = "-")]
        input: String,
        /// Produce the lines that are not inputs too (unkeyed, to the touchpoints topic), to
        /// see the engine park them as dead letters.
        #[arg(long)]
        keep_bad: bool,
    },
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let config = KafkaConfig::load(args.kafka_config.as_deref())?;
    match &args.command {
        KafkaCommand::CreateTopics {
            partitions,
            replication,
            if_missing,
        } => {
            let plan = tools::topic_plan(&config, *partitions);
            let results = tools::create_topics(&config, &plan, *replication)
                .with_context(|| format!("cannot create topics on {}", config.brokers))?;
            let mut failed = false;
            for (p, (name, result)) in plan.iter().zip(results) {
                let settings: Vec<String> =
                    p.settings.iter().map(|(k, v)| format!("{k}={v}")).collect();
                match result {
                    Ok(()) => out!(
                        "created {name}: {}, {} partition(s){}",
                        p.role,
                        p.partitions,
                        if settings.is_empty() {
                            String::new()
                        } else {
                            format!(", {}", settings.join(", "))
                        }
                    ),
                    Err(why) if why.exists && *if_missing => {
                        out!("exists {name}: {}, left as it is", p.role);
                    }
                    Err(why) => {
                        failed = true;
                        out!("not created {name}: {}", why.reason);
                    }
                }
            }
            Ok(if failed {
                ExitCode::from(crate::EXIT_INVALID_INPUT)
            } else {
                ExitCode::SUCCESS
            })
        }
        KafkaCommand::Produce { input, keep_bad } => {
            let reader: Box<dyn BufRead> = if input == "-" {
                Box::new(std::io::stdin().lock())
            } else {
                Box::new(std::io::BufReader::new(
                    std::fs::File::open(input).with_context(|| format!("cannot open {input}"))?,
                ))
            };
            let mut read_error = None;
            let lines = reader
                .lines()
                .enumerate()
                .map_while(|(i, line)| match line {
                    Ok(line) => Some((i + 1, line)),
                    Err(e) => {
                        read_error = Some(e);
                        None
                    }
                });
            let produced = tools::produce(&config, lines, *keep_bad)
                .with_context(|| format!("cannot produce to {}", config.brokers))?;
            if let Some(e) = read_error {
                return Err(e).with_context(|| format!("cannot read {input}"));
            }
            for (line, why) in &produced.bad {
                eprintln!(
                    "{input}:{line}: {why}{}",
                    if *keep_bad {
                        " (produced all the same)"
                    } else {
                        " (skipped)"
                    }
                );
            }
            out!(
                "produced {} touchpoints to {} and {} commands to {}{}",
                produced.touchpoints,
                config.topics.touchpoints,
                produced.commands,
                config.topics.control,
                if produced.bad.is_empty() {
                    String::new()
                } else {
                    format!("; {} lines are not inputs", produced.bad.len())
                }
            );
            Ok(if produced.bad.is_empty() || *keep_bad {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(crate::EXIT_INVALID_INPUT)
            })
        }
    }
}
