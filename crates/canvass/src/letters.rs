//! `canvass dead-letters list|show|redrive`: what the engine parked and why, and submitting
//! a parked input again through the normal path once its cause is fixed (a spec, a policy,
//! the partitioner of a producer). Reads a stopped engine's data directory (`--data`; a
//! redrive writes to it) or asks a running one over gRPC (`--server`), whose store it holds.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use canvass_engine::{
    durable::{Incoming, Sourced},
    letters::{
        all_letters, letter_id, note_outcome, parse_letter_id, redrivable, redrive_input, redriver,
    },
    partitions::Route,
    runtime::wall_clock,
};
use canvass_proto::v1;
use canvass_server::api::operator_service_client::OperatorServiceClient;
use clap::Subcommand;

use crate::client::{Tls, block_on, connect, refused, with_token};

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of a stopped engine.
    #[arg(long, conflicts_with = "server", required_unless_present = "server")]
    data: Option<PathBuf>,
    /// A running engine's gRPC address (`http://host:port`); the bearer token comes from
    /// `CANVASS_TOKEN` (a redrive needs an operator's).
    #[arg(long)]
    server: Option<String>,
    #[command(flatten)]
    tls: Tls,
    #[command(subcommand)]
    command: LettersCommand,
}

#[derive(Debug, Subcommand)]
enum LettersCommand {
    /// One line per dead letter, oldest first: id, when, whether redriven, reason, source.
    List {
        /// Only letters whose reason contains this text.
        #[arg(long)]
        reason: Option<String>,
        /// Only letters not yet redriven.
        #[arg(long)]
        open: bool,
        /// One canonical JSON object per letter instead.
        #[arg(long)]
        json: bool,
    },
    /// One dead letter whole: reason, source position, key, raw payload.
    Show {
        /// Its id, as `list` prints it (`N`, or `P:N` for partition P).
        id: String,
        /// As canonical JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Submits letters' inputs again through the normal path and marks the letters
    /// redriven; an input refused again is a new dead letter with its reason.
    Redrive {
        /// The letters' ids.
        #[arg(required_unless_present = "all")]
        ids: Vec<String>,
        /// Every letter not yet redriven (whose reason contains `--reason-contains`).
        #[arg(long, conflicts_with = "ids")]
        all: bool,
        /// With `--all`: only letters whose reason contains this text.
        #[arg(long, requires = "all")]
        reason_contains: Option<String>,
        /// Why (logged with the redrive).
        #[arg(long, default_value = "")]
        why: String,
        /// With `--data`: park an input dated more than this many hours ahead of the wall
        /// clock, as `run --max-lead-hours` (0: no bound). A running engine applies its own.
        #[arg(long, default_value_t = 24)]
        max_lead_hours: u64,
        /// With `--data`: the allowed lateness, as `run --allowed-lateness-secs`. A running
        /// engine applies its own.
        #[arg(long, default_value_t = 0)]
        allowed_lateness_secs: u64,
    },
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    match (&args.data, &args.server) {
        (Some(data), _) => local(data, &args.command),
        (None, Some(server)) => block_on(remote(server, &args.tls, &args.command)),
        (None, None) => unreachable!("clap requires one"),
    }
}

fn local(data: &std::path::Path, command: &LettersCommand) -> anyhow::Result<ExitCode> {
    match command {
        LettersCommand::List { reason, open, json } => {
            let (engine, _) = crate::run::open_committed(data)?;
            let letters = all_letters(engine.stores())?
                .into_iter()
                .filter(|(_, l)| !open || l.redriven_at.is_none())
                .filter(|(_, l)| {
                    reason
                        .as_ref()
                        .is_none_or(|r| l.reason.contains(r.as_str()))
                });
            for (id, letter) in letters {
                print_line(&id, &letter, *json)?;
            }
            Ok(ExitCode::SUCCESS)
        }
        LettersCommand::Show { id, json } => {
            let (engine, _) = crate::run::open_committed(data)?;
            let (partition, number) = parse_id(id)?;
            let letter = (partition < engine.layout().partitions)
                .then(|| engine.stores().partition(partition).dead_letter(number))
                .transpose()?
                .flatten()
                .with_context(|| format!("no dead letter {id} in {}", data.display()))?;
            show(&letter_id(partition, number), &letter, *json)
        }
        LettersCommand::Redrive {
            ids,
            all,
            reason_contains,
            why,
            max_lead_hours,
            allowed_lateness_secs,
        } => {
            let mut engine =
                crate::run::open_writable(data, *max_lead_hours, *allowed_lateness_secs)?;
            let letters = all_letters(engine.stores())?;
            let chosen = choose(&letters, ids, *all, reason_contains.as_deref())?;
            let by = redriver("cli", why);
            let mut results = Vec::new();
            for (id, letter) in chosen {
                let mut result = v1::RedriveResult {
                    id: id.clone(),
                    ..v1::RedriveResult::default()
                };
                let record = match letter.as_ref().map(redrive_input) {
                    None => Err(format!("no dead letter {id}")),
                    Some(input) => input,
                };
                match record {
                    Err(reason) => result.reason = reason,
                    Ok(record) => {
                        let submitted = Sourced {
                            incoming: Incoming::Record(Box::new(record)),
                            position: None,
                            caller: Some(by.clone()),
                        };
                        let report = engine.ingest(vec![submitted], wall_clock())?;
                        if let Some(outcome) = report.outcomes.first() {
                            note_outcome(&mut result, outcome);
                        }
                        let (partition, number) = parse_id(&id)?;
                        let mark = Sourced {
                            incoming: Incoming::Redriven {
                                partition,
                                letter: number,
                                by: by.clone(),
                            },
                            position: None,
                            caller: Some(by.clone()),
                        };
                        engine.ingest_routed(vec![(Route::One(partition), mark)], wall_clock())?;
                        result.redriven_at = Some(wall_clock().to_proto());
                    }
                }
                tracing::info!(letter = %result.id, applied = result.applied, "dead letter redriven");
                results.push(result);
            }
            engine.wait_synced()?;
            engine.checkpoint()?;
            print_results(&results)
        }
    }
}

async fn remote(server: &str, tls: &Tls, command: &LettersCommand) -> anyhow::Result<ExitCode> {
    let mut client = OperatorServiceClient::new(connect(server, tls).await?);
    match command {
        LettersCommand::List { reason, open, json } => {
            let mut page_token = String::new();
            loop {
                let page = client
                    .list_dead_letters(with_token(v1::ListDeadLettersRequest {
                        page_size: 1000,
                        page_token: page_token.clone(),
                        reason_contains: reason.clone().unwrap_or_default(),
                        open_only: *open,
                    })?)
                    .await
                    .map_err(|s| refused(&s))?
                    .into_inner();
                for l in &page.letters {
                    print_line(
                        &l.id,
                        l.letter.as_ref().unwrap_or(&v1::DeadLetter::default()),
                        *json,
                    )?;
                }
                if page.next_page_token.is_empty() {
                    return Ok(ExitCode::SUCCESS);
                }
                page_token = page.next_page_token;
            }
        }
        LettersCommand::Show { id, json } => {
            let l = client
                .get_dead_letter(with_token(v1::GetDeadLetterRequest { id: id.clone() })?)
                .await
                .map_err(|s| refused(&s))?
                .into_inner();
            show(
                &l.id,
                l.letter.as_ref().unwrap_or(&v1::DeadLetter::default()),
                *json,
            )
        }
        LettersCommand::Redrive {
            ids,
            all,
            reason_contains,
            why,
            ..
        } => {
            let response = client
                .redrive_dead_letters(with_token(v1::RedriveDeadLettersRequest {
                    ids: ids.clone(),
                    all: *all,
                    reason_contains: reason_contains.clone().unwrap_or_default(),
                    reason: why.clone(),
                })?)
                .await
                .map_err(|s| refused(&s))?
                .into_inner();
            print_results(&response.results)
        }
    }
}

fn parse_id(id: &str) -> anyhow::Result<(u32, u64)> {
    parse_letter_id(id)
        .with_context(|| format!("`{id}` is not a dead letter id (N, or P:N for partition P)"))
}

/// The letters a redrive names: the given ids (each looked up), or every open one.
fn choose(
    letters: &[(String, v1::DeadLetter)],
    ids: &[String],
    all: bool,
    reason_contains: Option<&str>,
) -> anyhow::Result<Vec<(String, Option<v1::DeadLetter>)>> {
    if all {
        return Ok(letters
            .iter()
            .filter(|(_, l)| redrivable(l, reason_contains.unwrap_or_default()))
            .map(|(id, l)| (id.clone(), Some(l.clone())))
            .collect());
    }
    ids.iter()
        .map(|id| {
            let (p, n) = parse_id(id)?;
            let id = letter_id(p, n);
            let found = letters
                .iter()
                .find(|(i, _)| *i == id)
                .map(|(_, l)| l.clone());
            Ok((id, found))
        })
        .collect()
}

fn print_results(results: &[v1::RedriveResult]) -> anyhow::Result<ExitCode> {
    let mut failed = 0;
    for r in results {
        if r.applied {
            out!("{}: applied again as log entry {}", r.id, r.seq);
        } else if r.duplicate {
            out!("{}: already applied (a duplicate); marked redriven", r.id);
        } else {
            failed += 1;
            out!("{}: not applied: {}", r.id, r.reason);
        }
    }
    out!(
        "{} redriven, {} not applied",
        results.len() - failed,
        failed
    );
    Ok(if failed > 0 {
        ExitCode::from(crate::EXIT_INVALID_INPUT)
    } else {
        ExitCode::SUCCESS
    })
}

/// Where a letter came from, as `topic/partition@offset` or `file:...@offset`.
fn source(letter: &v1::DeadLetter) -> String {
    match (&letter.source, &letter.action) {
        (Some(p), _) => format!("{}@{}", p.source, p.offset),
        (None, Some(a)) => format!("outbox ({})", a.idempotency_key),
        (None, None) => "grpc or cli".into(),
    }
}

fn print_line(id: &str, letter: &v1::DeadLetter, json: bool) -> anyhow::Result<()> {
    if json {
        out!(
            "{}",
            canvass_proto::json::to_string(&v1::NumberedDeadLetter {
                id: id.to_string(),
                letter: Some(letter.clone()),
            })?
        );
        return Ok(());
    }
    let at = letter
        .rejected_at
        .map(|t| t.to_string())
        .unwrap_or_default();
    let redriven = if letter.redriven_at.is_some() {
        "  [redriven]"
    } else {
        ""
    };
    out!(
        "{id}\t{at}{redriven}\t{}\t(from {})",
        letter.reason,
        source(letter)
    );
    Ok(())
}

fn show(id: &str, letter: &v1::DeadLetter, json: bool) -> anyhow::Result<ExitCode> {
    if json {
        print_line(id, letter, true)?;
        return Ok(ExitCode::SUCCESS);
    }
    out!("id:          {id}");
    out!(
        "rejected at: {}",
        letter
            .rejected_at
            .map(|t| t.to_string())
            .unwrap_or_default()
    );
    out!("reason:      {}", letter.reason);
    out!("from:        {}", source(letter));
    if !letter.key.is_empty() {
        out!("key:         {}", String::from_utf8_lossy(&letter.key));
    }
    if !letter.format.is_empty() {
        out!("format:      {}", letter.format);
    }
    match (&letter.redriven_at, letter.redriven_by.as_str()) {
        (Some(at), by) => out!("redriven:    at {at} by {by}"),
        (None, _) => out!("redriven:    no"),
    }
    if let Some(action) = &letter.action {
        out!("action:      {}", canvass_proto::json::to_string(action)?);
    } else {
        match (letter.format.as_str(), std::str::from_utf8(&letter.payload)) {
            ("", Ok(text)) => out!("payload:     {text}"),
            _ => out!(
                "payload:     {} bytes of protobuf; as an input: {}",
                letter.payload.len(),
                redrive_input(&v1::DeadLetter {
                    redriven_at: None,
                    ..letter.clone()
                })
                .map_or_else(
                    |e| e,
                    |r| canvass_proto::json::to_string(&r).unwrap_or_default()
                )
            ),
        }
    }
    Ok(ExitCode::SUCCESS)
}
