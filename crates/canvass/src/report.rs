//! `canvass report`: what the campaigns of a data directory achieved, as tables, JSON, CSV
//! and an SVG funnel chart.

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use canvass_engine::{
    Partitions,
    reports::{campaign_data, contact_states, customers},
};
use canvass_report::{
    Allocation, Model, Options,
    charts::{self, Format},
    render,
    value::ValueOptions,
};
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
    #[arg(long, conflicts_with = "server", required_unless_present = "server")]
    data: Option<PathBuf>,
    /// A running engine's gRPC address (`http://host:port`; token in `CANVASS_TOKEN`): the
    /// report is built there, from the store it holds, and printed here as from a directory.
    #[arg(long, conflicts_with_all = ["leads", "emit_policy"])]
    server: Option<String>,
    #[command(flatten)]
    tls: crate::client::Tls,
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
    /// Also write the report's chart as SVG to this file: each campaign's funnel and its
    /// open and click rates per week, or with `--value` the value pyramid and satisfaction
    /// per period.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Also write the same chart as a PNG image to this file.
    #[arg(long)]
    png: Option<PathBuf>,
    /// Report on customers instead of campaigns: value, RFM, CLV, the value pyramid (tiers),
    /// churn per tier and period, lifecycle stages and source channels.
    #[arg(long, conflicts_with_all = ["campaigns", "indirect_cost"])]
    value: bool,
    /// With --value: the report's time (RFC 3339); the time of the last input applied by default.
    #[arg(long, requires = "value")]
    as_of: Option<String>,
    /// With --value: days without purchase after which a customer is churned.
    #[arg(long, default_value_t = 90, requires = "value")]
    churn_days: u32,
    /// With --value: percent of the customers, best first, in tiers A, B and C (D: the rest).
    #[arg(long, default_value = "20,30,30", requires = "value")]
    tiers: String,
    /// With --value: share of revenue that is margin (0 to 1), for the CLV's future part.
    #[arg(long, default_value = "1", requires = "value")]
    margin: Decimal,
    /// With --value: length in days of the churn-rate periods.
    #[arg(long, default_value_t = 30, requires = "value")]
    period_days: u32,
    /// With --value: how many churn-rate periods, back from the report's time.
    #[arg(long, default_value_t = 6, requires = "value")]
    periods: u32,
    /// With --value: list every contact (the top 10 by value otherwise).
    #[arg(long, requires = "value")]
    all_contacts: bool,
    /// With --value: print instead a `setPolicy` command (one JSON input line for `canvass
    /// run` or the control topic) that keeps the current policy but sets the churn days and
    /// the tier thresholds of this pyramid, so that `contact.tier` and `contact.churned` in
    /// conditions agree with the report.
    #[arg(long, requires = "value", conflicts_with_all = ["json", "csv"])]
    emit_policy: bool,
    /// List the leads handed to sales (owner, status, deadline) instead of a report.
    #[arg(long, conflicts_with_all = ["value", "campaigns", "indirect_cost"])]
    leads: bool,
    /// With --leads: only this owner's.
    #[arg(long, requires = "leads")]
    owner: Option<String>,
    /// With --leads: only the open and accepted ones.
    #[arg(long, requires = "leads")]
    open: bool,
}

fn leads(args: &Args, engine: &Partitions) -> anyhow::Result<ExitCode> {
    let states = contact_states(engine.stores()).map_err(anyhow::Error::msg)?;
    let rows = canvass_report::leads::build(
        states.iter().map(|(id, s)| (id.as_str(), s)),
        args.owner.as_deref(),
        args.open,
    );
    print_as(
        args,
        rows.as_slice(),
        render::leads_csv,
        render::leads_text,
        None,
    )
}

/// A report's chart, drawn in a format.
type Chart<T> = fn(&T, Format) -> Result<Vec<u8>, String>;

/// Prints a report as the flags ask (JSON, CSV or tables) and writes its chart, if any, to
/// the `--svg` and `--png` files.
fn print_as<T: serde::Serialize + ?Sized>(
    args: &Args,
    report: &T,
    csv: fn(&T) -> Result<String, render::CsvError>,
    text: fn(&T) -> String,
    chart: Option<Chart<T>>,
) -> anyhow::Result<ExitCode> {
    if args.json {
        out!("{}", serde_json::to_string_pretty(report)?);
    } else if args.csv {
        out_raw!("{}", csv(report)?);
    } else {
        out_raw!("{}", text(report));
    }
    for (path, format) in [(&args.svg, Format::Svg), (&args.png, Format::Png)] {
        if let (Some(path), Some(chart)) = (path, chart) {
            std::fs::write(path, chart(report, format).map_err(anyhow::Error::msg)?)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn tier_percents(text: &str) -> anyhow::Result<[u32; 3]> {
    let parts: Vec<u32> = text
        .split(',')
        .map(|p| p.trim().parse::<u32>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--tiers `{text}`: three whole percents, e.g. 20,30,30"))?;
    let [a, b, c] = parts[..] else {
        anyhow::bail!("--tiers `{text}`: three whole percents (tiers A, B and C), e.g. 20,30,30");
    };
    if a + b + c > 100 {
        anyhow::bail!("--tiers `{text}`: the three shares add up to more than 100%");
    }
    Ok([a, b, c])
}

fn value(args: &Args, engine: &Partitions) -> anyhow::Result<ExitCode> {
    if args.margin < Decimal::ZERO || args.margin > Decimal::ONE {
        anyhow::bail!("--margin {}: a share between 0 and 1", args.margin);
    }
    if args.churn_days == 0 || args.period_days == 0 {
        anyhow::bail!("--churn-days and --period-days must be at least 1");
    }
    let as_of = match &args.as_of {
        Some(t) => canvass_core::UnixMillis(
            chrono::DateTime::parse_from_rfc3339(t)
                .with_context(|| format!("--as-of `{t}`: not an RFC 3339 time"))?
                .timestamp_millis(),
        ),
        None => engine.clock(),
    };
    let options = ValueOptions {
        as_of,
        churn_days: args.churn_days,
        tier_percents: tier_percents(&args.tiers)?,
        margin: args.margin,
        period_days: args.period_days,
        periods: args.periods,
        all_contacts: args.all_contacts,
        segments: canvass_report::segments(&engine.stores().partition(0).specs()?),
    };
    let customers = customers(engine.stores()).map_err(anyhow::Error::msg)?;
    let report = canvass_report::value::build(&customers, &options);
    if args.emit_policy {
        let mut policy = engine.stores().partition(0).policy()?.unwrap_or_default();
        policy.churn_days = args.churn_days;
        let min = |t: usize| report.tiers[t].min_value.clone();
        let a = min(0).unwrap_or_else(|| "0".into());
        let b = min(1).unwrap_or_else(|| a.clone());
        let c = min(2).unwrap_or_else(|| b.clone());
        policy.tiers = Some(canvass_proto::v1::TierThresholds { a, b, c });
        let record = serde_json::json!({"command": {
            "actor": "canvass-report",
            "reason": format!("tiers of the value pyramid as of {}", report.as_of),
            "setPolicy": serde_json::from_str::<serde_json::Value>(&canvass_proto::json::to_string(&policy)?)?,
        }});
        out!("{record}");
        return Ok(ExitCode::SUCCESS);
    }
    print_as(
        args,
        &report,
        render::value_csv,
        render::value_text,
        Some(charts::value),
    )
}

/// The report built by a running engine, printed as from a data directory.
fn remote(args: &Args, server: &str) -> anyhow::Result<ExitCode> {
    use crate::client::{block_on, connect, refused, with_token};
    use canvass_proto::v1;
    use canvass_server::api::report_service_client::ReportServiceClient;
    if args.value {
        if args.margin < Decimal::ZERO || args.margin > Decimal::ONE {
            anyhow::bail!("--margin {}: a share between 0 and 1", args.margin);
        }
        let as_of = args
            .as_of
            .as_deref()
            .map(|t| {
                canvass_proto::wkt::Timestamp::parse(t)
                    .map_err(|e| anyhow::anyhow!("--as-of `{t}`: not an RFC 3339 time: {e}"))
            })
            .transpose()?;
        let request = v1::GetValueReportRequest {
            as_of,
            churn_days: args.churn_days,
            tier_percents: tier_percents(&args.tiers)?.to_vec(),
            margin: args.margin.to_string(),
            period_days: args.period_days,
            periods: args.periods,
            all_contacts: args.all_contacts,
        };
        let json = block_on(async {
            let mut client = ReportServiceClient::new(connect(server, &args.tls).await?);
            let r = client
                .get_value_report(with_token(request)?)
                .await
                .map_err(|s| refused(&s))?;
            Ok(r.into_inner().report_json)
        })?;
        let report: canvass_report::value::ValueReport =
            serde_json::from_str(&json).context("the server's value report does not parse")?;
        return print_as(
            args,
            &report,
            render::value_csv,
            render::value_text,
            Some(charts::value),
        );
    }
    let request = v1::GetPerformanceReportRequest {
        campaign_ids: args.campaigns.clone(),
        model: match args.model {
            ModelArg::LastTouch => v1::AttributionModel::LastTouch,
            ModelArg::FirstTouch => v1::AttributionModel::FirstTouch,
            ModelArg::Linear => v1::AttributionModel::Linear,
        } as i32,
        indirect_cost: args
            .indirect_cost
            .map(|d| d.to_string())
            .unwrap_or_default(),
        allocation: match args.allocate {
            AllocationArg::Contacts => v1::CostAllocation::Contacts,
            AllocationArg::DirectCost => v1::CostAllocation::DirectCost,
        } as i32,
    };
    let json = block_on(async {
        let mut client = ReportServiceClient::new(connect(server, &args.tls).await?);
        let r = client
            .get_performance_report(with_token(request)?)
            .await
            .map_err(|s| refused(&s))?;
        Ok(r.into_inner().report_json)
    })?;
    let report: canvass_report::Report =
        serde_json::from_str(&json).context("the server's report does not parse")?;
    print_as(
        args,
        &report,
        render::csv,
        render::text,
        Some(charts::performance),
    )
}

pub fn run(args: &Args) -> anyhow::Result<ExitCode> {
    let Some(data) = &args.data else {
        return remote(args, args.server.as_deref().unwrap_or_default());
    };
    // The log written after the last checkpoint is applied in memory, so the counters are
    // complete even after a crash, and the data directory is not changed.
    let (engine, _) = crate::run::open_committed(data)?;
    if args.value {
        return value(args, &engine);
    }
    if args.leads {
        return leads(args, &engine);
    }
    let data = campaign_data(engine.stores(), &args.campaigns).map_err(anyhow::Error::msg)?;
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
    let mut report = canvass_report::build(&data, &options);
    report.with_inputs(&canvass_engine::reports::input_counters(engine.stores())?);
    print_as(
        args,
        &report,
        render::csv,
        render::text,
        Some(charts::performance),
    )
}
