//! `canvass report`: what the campaigns of a data directory achieved, as tables, JSON, CSV
//! and an SVG funnel chart.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use canvass_engine::{durable::Engine, reports::campaign_data};
use canvass_report::{Allocation, Model, Options, render, svg};
use clap::ValueEnum;
use rust_decimal::Decimal;

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ModelArg {
    LastTouch,
    FirstTouch,
    Linear,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum AllocationArg {
    Contacts,
    DirectCost,
}

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Data directory of a stopped engine.
    #[arg(long)]
    data: PathBuf,
    /// Only these campaigns (repeat the flag); every campaign by default.
    #[arg(long = "campaign")]
    campaigns: Vec<String>,
    /// Attribution model of the revenue and ROI figures.
    #[arg(long, value_enum, default_value_t = ModelArg::LastTouch)]
    model: ModelArg,
    /// An indirect cost (e.g. the department's cost for the period) to allocate across the
    /// campaigns reported, as a decimal amount.
    #[arg(long)]
    indirect_cost: Option<Decimal>,
    /// How the indirect cost is shared: by contacts enrolled or by direct cost.
    #[arg(long, value_enum, default_value_t = AllocationArg::Contacts)]
    allocate: AllocationArg,
    /// Print the report as JSON.
    #[arg(long, conflicts_with = "csv")]
    json: bool,
    /// Print the report as CSV (campaign,section,item,metric,value).
    #[arg(long)]
    csv: bool,
    /// Also write the campaigns' funnels as an SVG chart to this file.
    #[arg(long)]
    svg: Option<PathBuf>,
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let store = canvass_store::Store::open(&args.data, canvass_store::StoreOptions::default())
        .with_context(|| format!("cannot open the data directory {}", args.data.display()))?;
    // Opening the engine applies the log written after the last checkpoint, so the counters
    // are complete even after a crash.
    let engine = Engine::open(store, canvass_engine::durable::EngineOptions::default())?;
    let data = campaign_data(engine.store(), &args.campaigns).map_err(anyhow::Error::msg)?;
    let options = Options {
        model: match args.model {
            ModelArg::LastTouch => Model::LastTouch,
            ModelArg::FirstTouch => Model::FirstTouch,
            ModelArg::Linear => Model::Linear,
        },
        indirect_cost: args.indirect_cost,
        allocation: match args.allocate {
            AllocationArg::Contacts => Allocation::Contacts,
            AllocationArg::DirectCost => Allocation::DirectCost,
        },
    };
    let report = canvass_report::build(&data, &options);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if args.csv {
        print!("{}", render::csv(&report)?);
    } else {
        print!("{}", render::text(&report));
    }
    if let Some(path) = &args.svg {
        std::fs::write(path, svg::funnel(&report))
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(ExitCode::SUCCESS)
}
