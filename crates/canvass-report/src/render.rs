//! The report as text for people (tables) and as CSV for spreadsheets.
//!
//! The CSV is one long table, `campaign,section,item,metric,value`, so that every figure of
//! the report (whatever its section) is one row a spreadsheet can pivot.

use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_BORDERS_ONLY};

use crate::{CampaignReport, Density, Report, RoiRow, SegmentRow, density::SigmaStatus};

/// What writing CSV can fail with.
pub type CsvError = csv::Error;

fn percent(r: Option<f64>) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{:.1}%", r * 100.0))
}

fn number(r: Option<f64>, places: usize) -> String {
    r.map_or_else(|| "-".to_string(), |r| format!("{r:.places$}"))
}

fn millis(m: Option<u64>) -> String {
    match m {
        None => "-".to_string(),
        Some(u64::MAX) => "> 1 day".to_string(),
        Some(m) if m >= 60_000 => format!("<= {} min", m / 60_000),
        Some(m) if m >= 1000 => format!("<= {} s", m / 1000),
        Some(m) => format!("<= {m} ms"),
    }
}

fn sigma(d: &Density) -> String {
    match d.sigma_status {
        SigmaStatus::NoData => "-".to_string(),
        SigmaStatus::Unbounded => "unbounded (no defects)".to_string(),
        SigmaStatus::NoneReached => "none (nobody reached)".to_string(),
        SigmaStatus::Measured => number(d.sigma, 2),
    }
}

fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(UTF8_BORDERS_ONLY);
    t.set_header(header.iter().map(Cell::new));
    t
}

fn right_align(t: &mut Table, from: usize) {
    let columns = t.column_count();
    for i in from..columns {
        if let Some(c) = t.column_mut(i) {
            c.set_cell_alignment(CellAlignment::Right);
        }
    }
}

/// The report as tables.
#[must_use]
pub fn text(report: &Report) -> String {
    let mut out = String::new();
    let model = serde_plain(report.model);
    for c in &report.campaigns {
        campaign_text(&mut out, c, &model);
    }
    if !report.channels.is_empty() {
        let _ = writeln!(out, "Channels (all campaigns, {model})");
        let _ = writeln!(out, "{}\n", channel_table(&report.channels));
    }
    if !report.segments.is_empty() {
        let _ = writeln!(out, "Segments ({model})");
        let _ = writeln!(out, "{}\n", segment_table(&report.segments));
    }
    if !report.owners.is_empty() {
        let _ = writeln!(out, "Sales owners (all campaigns): load and SLA record");
        let _ = writeln!(out, "{}\n", owner_table(&report.owners));
    }
    let r = &report.revenue;
    if r.events > 0 {
        let _ = writeln!(
            out,
            "Revenue {} from {} purchases and won opportunities: {} credited to campaigns ({} of them, {}), {} unattributed.\n",
            r.total,
            r.events,
            r.attributed,
            r.attributed_events,
            serde_plain(report.model),
            r.unattributed
        );
    }
    if report.late_events > 0 {
        let _ = writeln!(
            out,
            "Late events: {} applied at the clock's time, later than the allowed lateness\n",
            report.late_events
        );
    }
    if let Some(i) = &report.indirect {
        let rule = serde_plain(i.rule);
        let shares: Vec<String> = i.shares.iter().map(|(c, s)| format!("{c} {s}")).collect();
        let _ = writeln!(
            out,
            "Indirect cost {} allocated by {rule}: {}; unallocated {}",
            i.amount,
            shares.join(", "),
            i.unallocated
        );
    }
    out
}

fn serde_plain<T: serde::Serialize>(value: T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn owner_table(rows: &[crate::OwnerRow]) -> Table {
    let mut t = table(&[
        "owner",
        "open",
        "assigned",
        "moved in",
        "moved out",
        "accepted",
        "breached",
        "within SLA",
        "won",
        "lost",
        "win rate",
        "won amount",
    ]);
    for r in rows {
        t.add_row(vec![
            r.owner.clone(),
            r.open.to_string(),
            r.assigned.to_string(),
            r.reassigned_in.to_string(),
            r.reassigned_out.to_string(),
            r.accepted.to_string(),
            r.breached.to_string(),
            percent(r.within_sla),
            r.won.to_string(),
            r.lost.to_string(),
            percent(r.win_rate),
            r.won_amount.clone(),
        ]);
    }
    right_align(&mut t, 1);
    t
}

fn channel_table(rows: &[RoiRow]) -> Table {
    let mut t = table(&["name", "currency", "cost", "revenue", "ROI"]);
    for r in rows {
        t.add_row(vec![
            r.name.clone(),
            r.currency.clone(),
            r.cost.clone(),
            r.revenue.clone(),
            percent(r.roi),
        ]);
    }
    right_align(&mut t, 2);
    t
}

/// A segment's density once, beside its first currency; further currencies below it.
fn segment_table(rows: &[SegmentRow]) -> Table {
    let mut t = table(&[
        "name", "eligible", "reached", "density", "DPMO", "sigma", "currency", "cost", "revenue",
        "ROI",
    ]);
    for r in rows {
        let d = &r.density;
        let mut head = vec![
            r.name.clone(),
            d.eligible.to_string(),
            d.reached.to_string(),
            percent(d.density),
            number(d.dpmo, 0),
            sigma(d),
        ];
        if r.money.is_empty() {
            head.extend(std::iter::repeat_n(String::new(), 4));
            t.add_row(std::mem::take(&mut head));
        }
        for (i, m) in r.money.iter().enumerate() {
            let mut row = if i == 0 {
                std::mem::take(&mut head)
            } else {
                vec![String::new(); 6]
            };
            row.extend([
                m.currency.clone(),
                m.cost.clone(),
                m.revenue.clone(),
                percent(m.roi),
            ]);
            t.add_row(row);
        }
    }
    right_align(&mut t, 1);
    t
}

fn campaign_text(out: &mut String, c: &CampaignReport, model: &str) {
    let name = if c.name.is_empty() {
        String::new()
    } else {
        format!(" ({})", c.name)
    };
    let _ = writeln!(
        out,
        "Campaign {}{name} - {} - segment {} - {} enrolled ({} held out), {} goals, {} completed",
        c.id, c.status, c.segment, c.enrolled, c.held_out, c.goals, c.completed
    );
    let mut funnel = table(&[
        "state",
        "group",
        "entries",
        "share of treated",
        "active now",
        "goal",
    ]);
    for s in &c.funnel {
        funnel.add_row(vec![
            s.state.clone(),
            s.group.clone(),
            s.entries.to_string(),
            percent(s.share_of_treated),
            s.active.to_string(),
            if s.goal { "goal".into() } else { String::new() },
        ]);
    }
    right_align(&mut funnel, 2);
    let _ = writeln!(out, "\nFunnel\n{funnel}");
    let mut steps = table(&["from", "to", "contacts", "rate"]);
    for s in &c.steps {
        let from = if s.from.is_empty() {
            "(enrolled)"
        } else {
            &s.from
        };
        steps.add_row(vec![
            from.to_string(),
            s.to.clone(),
            s.contacts.to_string(),
            percent(s.rate),
        ]);
    }
    right_align(&mut steps, 2);
    let _ = writeln!(out, "\nConversion between steps\n{steps}");
    if !c.groups.is_empty() {
        let mut groups = table(&["response group", "contacts"]);
        for g in &c.groups {
            groups.add_row(vec![g.group.clone(), g.contacts.to_string()]);
        }
        right_align(&mut groups, 1);
        let _ = writeln!(out, "\nResponse groups\n{groups}");
    }
    let mut actions = table(&[
        "action",
        "emitted",
        "delivered",
        "bounced",
        "failed",
        "handed off",
        "withheld",
        "cost",
        "revenue",
        "ROI",
    ]);
    for k in &c.actions {
        actions.add_row(vec![
            k.kind.clone(),
            k.emitted.to_string(),
            k.delivered.to_string(),
            k.bounced.to_string(),
            k.failed.to_string(),
            k.handed_off.to_string(),
            k.over_budget.to_string(),
            k.cost.clone(),
            k.revenue.clone(),
            percent(k.roi),
        ]);
    }
    right_align(&mut actions, 1);
    let _ = writeln!(out, "\nActions ({model} revenue)\n{actions}");
    engagement_text(out, c);
    let b = &c.budget;
    let _ = writeln!(
        out,
        "\nCost {} {} (direct {}, indirect {}). Budget {}, remaining {}, {} actions withheld{}.",
        c.cost.total,
        c.currency,
        c.cost.direct,
        c.cost.indirect,
        b.total.as_deref().unwrap_or("unlimited"),
        b.remaining.as_deref().unwrap_or("-"),
        b.withheld,
        b.exhausted_at
            .as_ref()
            .map(|t| format!(" (exhausted at {t})"))
            .unwrap_or_default()
    );
    let _ = writeln!(
        out,
        "Revenue {} ({model}, {} conversions; last touch {}, first touch {}, linear {}). ROI {}.",
        c.revenue,
        c.conversions,
        c.revenue_by_model.last_touch,
        c.revenue_by_model.first_touch,
        c.revenue_by_model.linear,
        percent(c.roi)
    );
    let mut arms = table(&[
        "arm",
        "enrolled",
        "goals",
        "goal rate",
        "converted",
        "conversion",
        "revenue",
        "per contact",
        "uplift (pp)",
        "95% CI (pp)",
        "p",
        "relative",
    ]);
    for a in &c.arms {
        arms.add_row(vec![
            a.arm.clone(),
            a.enrolled.to_string(),
            a.goals.to_string(),
            percent(a.goal_rate),
            a.converted.to_string(),
            percent(a.conversion_rate),
            a.revenue.clone(),
            a.revenue_per_contact.clone().unwrap_or_else(|| "-".into()),
            number(a.uplift_points, 1),
            a.uplift_interval
                .map_or_else(|| "-".into(), |i| format!("{:.1} to {:.1}", i.low, i.high)),
            p_value(a),
            percent(a.relative_uplift),
        ]);
    }
    right_align(&mut arms, 1);
    let _ = writeln!(
        out,
        "\nArms (purchases within the attribution window after enrolling)\n{arms}"
    );
    if c.arms.iter().any(|a| a.p_value.is_some()) {
        let _ = writeln!(
            out,
            "p: two-sided, pooled two-proportion z-test (* Fisher's exact test: an expected \
             count below 5); intervals: Newcombe's from Wilson scores."
        );
    }
    for a in &c.arms {
        if let Some(warning) = &a.warning {
            let _ = writeln!(out, "Arm {}: {warning}.", a.arm);
        }
    }
    let l = &c.leads;
    if l.opened > 0 {
        let _ = writeln!(
            out,
            "\nLeads: {} handed to sales, {} accepted within the SLA ({}), {} breached, {} late acceptances; {} won ({}), {} lost, win rate {}; {} reassigned.",
            l.opened,
            l.accepted,
            percent(l.within_sla),
            l.breached,
            l.late_acceptances,
            l.won,
            l.won_amount,
            l.lost,
            percent(l.win_rate),
            l.reassigned
        );
    }
    let k = &c.capped;
    if k.deferred + k.dropped > 0 {
        let _ = writeln!(
            out,
            "Frequency caps and quiet hours: {} deferred ({} sent later, {} expired), {} dropped.",
            k.deferred, k.sent_late, k.expired, k.dropped
        );
    }
    let d = &c.density;
    let _ = writeln!(
        out,
        "\nDensity {} ({} of {} eligible reached, {} defects), {} DPMO, sigma {}. Event-to-action latency p50 {}, p99 {} ({} actions).\n",
        percent(d.density),
        d.reached,
        d.eligible,
        d.defects,
        number(d.dpmo, 0),
        sigma(d),
        millis(c.sensitivity.p50_ms),
        millis(c.sensitivity.p99_ms),
        c.sensitivity.actions_timed
    );
}

/// The report as one long CSV table, `campaign,section,item,metric,value`: every figure of
/// its JSON, one per row ([`crate::flat`]).
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn csv(report: &Report) -> Result<String, csv::Error> {
    long_table(report, "report", true)
}

/// Writes the figures of `report`'s JSON, with the campaign column or without.
fn long_table<T: serde::Serialize>(
    report: &T,
    top: &str,
    with_campaign: bool,
) -> Result<String, csv::Error> {
    let json =
        serde_json::to_value(report).map_err(|e| csv::Error::from(std::io::Error::other(e)))?;
    let mut w = csv::Writer::from_writer(Vec::new());
    let header = ["campaign", "section", "item", "metric", "value"];
    let skip = usize::from(!with_campaign);
    w.write_record(&header[skip..])?;
    for f in crate::flat::figures(&json, top) {
        let row = [f.campaign, f.section, f.item, f.metric, f.value];
        w.write_record(&row[skip..])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The customer-value report as tables.
#[must_use]
pub fn value_text(r: &crate::value::ValueReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Customers as of {}: {} contacts, {} customers, {} churned (no purchase for more than {} days); retention {}; total value {}",
        r.as_of,
        r.contacts,
        r.customers,
        r.churned,
        r.churn_days,
        percent(r.retention_rate),
        r.total_value
    );
    let mut tiers = table(&[
        "tier",
        "customers",
        "value",
        "share of value",
        "lowest value",
        "average CLV",
        "churned",
    ]);
    for t in &r.tiers {
        tiers.add_row(vec![
            t.tier.clone(),
            t.customers.to_string(),
            t.value.clone(),
            percent(t.share_of_value),
            t.min_value.clone().unwrap_or_else(|| "-".into()),
            t.average_clv.clone().unwrap_or_else(|| "-".into()),
            t.churned.to_string(),
        ]);
    }
    right_align(&mut tiers, 1);
    let _ = writeln!(out, "\nValue pyramid\n{tiers}");
    let mut churn = table(&[
        "from",
        "to",
        "tier",
        "active at start",
        "churned",
        "churn rate",
    ]);
    for c in &r.churn {
        churn.add_row(vec![
            c.from.clone(),
            c.to.clone(),
            c.tier.clone(),
            c.active.to_string(),
            c.churned.to_string(),
            percent(c.rate),
        ]);
    }
    right_align(&mut churn, 3);
    let _ = writeln!(out, "\nChurn by period and tier\n{churn}");
    let mut stages = table(&["lifecycle stage", "contacts"]);
    for (s, n) in &r.stages {
        stages.add_row(vec![s.clone(), n.to_string()]);
    }
    right_align(&mut stages, 1);
    let _ = writeln!(out, "\n{stages}");
    let mut sources = table(&["source channel", "contacts", "customers", "revenue"]);
    for s in &r.sources {
        let name = if s.channel.is_empty() {
            "(unknown)"
        } else {
            &s.channel
        };
        sources.add_row(vec![
            name.to_string(),
            s.contacts.to_string(),
            s.customers.to_string(),
            s.revenue.clone(),
        ]);
    }
    right_align(&mut sources, 1);
    let _ = writeln!(out, "\n{sources}");
    let mut satisfaction = table(&[
        "satisfaction",
        "",
        "respondents",
        "mean (0-10)",
        "promoters",
        "passives",
        "detractors",
        "NPS",
    ]);
    for row in &r.satisfaction {
        satisfaction.add_row(vec![
            row.by.clone(),
            row.name.clone(),
            row.respondents.to_string(),
            number(row.mean, 2),
            row.promoters.to_string(),
            row.passives.to_string(),
            row.detractors.to_string(),
            number(row.nps, 1),
        ]);
    }
    right_align(&mut satisfaction, 2);
    let _ = writeln!(
        out,
        "\nSatisfaction (a contact's latest answer per campaign; NPS = % promoters 9-10 - % detractors 0-6)\n{satisfaction}"
    );
    let mut concerns = table(&[
        "complaints and faults",
        "",
        "contacts",
        "complaints",
        "complainants",
        "complaint rate",
        "faults",
        "reporters",
        "fault rate",
    ]);
    for row in &r.concerns {
        concerns.add_row(vec![
            row.by.clone(),
            row.name.clone(),
            row.contacts.to_string(),
            row.complaints.to_string(),
            row.complainants.to_string(),
            percent(row.complaint_rate),
            row.faults.to_string(),
            row.fault_reporters.to_string(),
            percent(row.fault_rate),
        ]);
    }
    right_align(&mut concerns, 2);
    let _ = writeln!(out, "\n{concerns}");
    let mut top = table(&[
        "contact",
        "tier",
        "revenue",
        "cost of goods",
        "marketing",
        "value",
        "CLV",
        "recency (days)",
        "purchases",
        "RFM",
        "churned",
        "stage",
        "source",
    ]);
    for c in &r.top {
        top.add_row(vec![
            c.id.clone(),
            c.tier.clone(),
            c.revenue.clone(),
            c.cost_of_goods.clone(),
            c.marketing_cost.clone(),
            c.value.clone(),
            c.clv.clone(),
            c.recency_days.map_or_else(|| "-".into(), |d| d.to_string()),
            c.frequency.to_string(),
            c.rfm.clone(),
            if c.churned {
                "yes".into()
            } else {
                String::new()
            },
            c.stage.clone(),
            c.source_channel.clone(),
        ]);
    }
    right_align(&mut top, 2);
    let _ = writeln!(out, "\nContacts by value\n{top}");
    out
}

/// The customer-value report as CSV, `section,item,metric,value`: every figure of its JSON,
/// one per row ([`crate::flat`]).
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn value_csv(r: &crate::value::ValueReport) -> Result<String, csv::Error> {
    long_table(r, "summary", false)
}

/// Leads as a table.
#[must_use]
pub fn leads_text(rows: &[crate::leads::LeadRow]) -> String {
    let mut t = table(&[
        "owner",
        "assigned by",
        "status",
        "contact",
        "campaign",
        "respond by",
        "opened",
        "settled",
        "amount",
        "opportunity",
    ]);
    for r in rows {
        t.add_row(vec![
            r.owner.clone(),
            r.assigned_by.clone(),
            r.status.clone(),
            r.contact_id.clone(),
            r.campaign_id.clone(),
            r.respond_by.clone(),
            r.opened_at.clone(),
            r.settled_at.clone(),
            r.amount.clone(),
            r.opportunity_id.clone(),
        ]);
    }
    format!("{} leads\n{t}\n", rows.len())
}

/// Leads as CSV, one row each.
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn leads_csv(rows: &[crate::leads::LeadRow]) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record([
        "owner",
        "assigned_by",
        "status",
        "contact",
        "campaign",
        "respond_by",
        "opened_at",
        "settled_at",
        "amount",
        "opportunity",
    ])?;
    for r in rows {
        w.write_record([
            &r.owner,
            &r.assigned_by,
            &r.status,
            &r.contact_id,
            &r.campaign_id,
            &r.respond_by,
            &r.opened_at,
            &r.settled_at,
            &r.amount,
            &r.opportunity_id,
        ])?;
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// An arm's p-value, starred when it comes from Fisher's exact test.
fn p_value(a: &crate::ArmRow) -> String {
    match (a.p_value, a.test) {
        (Some(p), Some(crate::significance::Test::FisherExact)) => format!("{p:.3}*"),
        (Some(p), _) => format!("{p:.3}"),
        _ => "-".into(),
    }
}

/// One engagement row's cells: delivery, opens, clicks, unsubscribes and spam, with rates.
fn engagement_cells(e: &crate::engagement::EngagementRow) -> Vec<String> {
    vec![
        percent(e.delivery_rate),
        format!("{} ({})", e.unique_opens, percent(e.open_rate)),
        format!("{} ({})", e.unique_clicks, percent(e.click_rate)),
        percent(e.click_to_open_rate),
        format!("{} ({})", e.unsubscribes, percent(e.unsubscribe_rate)),
        format!("{} ({})", e.spam_reports, percent(e.spam_rate)),
    ]
}

const ENGAGEMENT_HEADERS: [&str; 6] = [
    "delivery rate",
    "unique opens (rate)",
    "unique clicks (rate)",
    "click-to-open",
    "unsubscribes (rate)",
    "spam (rate)",
];

/// Engagement per channel and material, unit economics, and the weeks.
fn engagement_text(out: &mut String, c: &CampaignReport) {
    let mut channels = table(&[&["channel"][..], &ENGAGEMENT_HEADERS[..]].concat());
    channels.add_row([vec!["all".to_string()], engagement_cells(&c.engagement)].concat());
    for k in &c.actions {
        channels.add_row([vec![k.kind.clone()], engagement_cells(&k.engagement)].concat());
    }
    right_align(&mut channels, 1);
    let _ = writeln!(out, "\nEngagement\n{channels}");
    if !c.materials.is_empty() {
        let mut materials = table(
            &[
                &[
                    "material (template)",
                    "version",
                    "sent",
                    "delivered",
                    "cost",
                ][..],
                &ENGAGEMENT_HEADERS[..],
                &["conversions", "revenue"][..],
            ]
            .concat(),
        );
        for m in &c.materials {
            let name = if m.template.is_empty() {
                "(none)".to_string()
            } else {
                m.template.clone()
            };
            materials.add_row(
                [
                    vec![
                        name,
                        m.version.map_or_else(|| "-".into(), |v| format!("v{v}")),
                        m.sent.to_string(),
                        m.delivered.to_string(),
                        m.cost.clone(),
                    ],
                    engagement_cells(&m.engagement),
                    vec![m.conversions.to_string(), m.revenue.clone()],
                ]
                .concat(),
            );
        }
        right_align(&mut materials, 1);
        let _ = writeln!(out, "\n{materials}");
    }
    let e = &c.economics;
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let _ = writeln!(
        out,
        "Cost per conversion {}, return on spend {}, average order value {}, revenue per recipient {}.",
        dash(&e.cost_per_conversion),
        e.return_on_spend
            .map_or_else(|| "-".into(), |r| format!("{r:.2}x")),
        dash(&e.average_order_value),
        dash(&e.revenue_per_recipient),
    );
    for (name, rows) in [("Weeks", &c.weeks), ("Months", &c.months)] {
        if rows.is_empty() {
            continue;
        }
        let mut periods = table(&[
            "period",
            "enrolled",
            "sent",
            "delivered",
            "unique opens",
            "unique clicks",
            "conversions",
            "cost",
            "revenue (last touch)",
            "sent vs before",
            "revenue vs before",
        ]);
        for p in rows {
            periods.add_row(vec![
                p.period.clone(),
                p.enrollments.to_string(),
                p.sent.to_string(),
                p.delivered.to_string(),
                p.unique_opens.to_string(),
                p.unique_clicks.to_string(),
                p.conversions.to_string(),
                p.cost.clone(),
                p.revenue.clone(),
                signed_percent(p.change.sent),
                signed_percent(p.change.revenue),
            ]);
        }
        right_align(&mut periods, 1);
        let _ = writeln!(out, "\n{name}\n{periods}");
    }
}

/// A change as a signed percentage ("+25.0%"), "-" without one.
fn signed_percent(change: Option<f64>) -> String {
    change.map_or_else(|| "-".into(), |c| format!("{:+.1}%", c * 100.0))
}
