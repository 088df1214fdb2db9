//! The report as text for people (tables) and as CSV for spreadsheets.
//!
//! The CSV is one long table, `campaign,section,item,metric,value`, so that every figure of
//! the report (whatever its section) is one row a spreadsheet can pivot.

use std::fmt::Write as _;

use comfy_table::{Cell, CellAlignment, Table, presets::UTF8_BORDERS_ONLY};

use crate::{CampaignReport, Density, Report, RoiRow};

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
    match (d.sigma, d.defects, d.eligible) {
        (_, _, 0) => "-".to_string(),
        (None, 0, _) => "unbounded (no defects)".to_string(),
        (None, _, _) => "none (nobody reached)".to_string(),
        (s, _, _) => number(s, 2),
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
        let _ = writeln!(out, "{}\n", roi_table(&report.channels, false));
    }
    if !report.segments.is_empty() {
        let _ = writeln!(out, "Segments ({model})");
        let _ = writeln!(out, "{}\n", roi_table(&report.segments, true));
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

fn roi_table(rows: &[RoiRow], with_density: bool) -> Table {
    let mut header = vec!["name", "currency", "cost", "revenue", "ROI"];
    if with_density {
        header.extend(["eligible", "reached", "density", "DPMO", "sigma"]);
    }
    let mut t = table(&header);
    for r in rows {
        let mut row = vec![
            r.name.clone(),
            r.currency.clone(),
            r.cost.clone(),
            r.revenue.clone(),
            percent(r.roi),
        ];
        if let Some(d) = r.density.as_ref().filter(|_| with_density) {
            row.extend([
                d.eligible.to_string(),
                d.reached.to_string(),
                percent(d.density),
                number(d.dpmo, 0),
                sigma(d),
            ]);
        }
        t.add_row(row);
    }
    right_align(&mut t, 2);
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
            percent(a.relative_uplift),
        ]);
    }
    right_align(&mut arms, 1);
    let _ = writeln!(
        out,
        "\nArms (purchases within the attribution window after enrolling)\n{arms}"
    );
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

/// The report as one long CSV table: `campaign,section,item,metric,value`.
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn csv(report: &Report) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["campaign", "section", "item", "metric", "value"])?;
    let mut row = |campaign: &str, section: &str, item: &str, metric: &str, value: String| {
        w.write_record([campaign, section, item, metric, value.as_str()])
    };
    let opt = |r: Option<f64>| r.map(|r| r.to_string()).unwrap_or_default();
    for c in &report.campaigns {
        let id = c.id.as_str();
        for (metric, value) in [
            ("enrolled", c.enrolled.to_string()),
            ("held_out", c.held_out.to_string()),
            ("goals", c.goals.to_string()),
            ("completed", c.completed.to_string()),
            ("cost_direct", c.cost.direct.clone()),
            ("cost_indirect", c.cost.indirect.clone()),
            ("cost_total", c.cost.total.clone()),
            ("budget", c.budget.total.clone().unwrap_or_default()),
            (
                "budget_remaining",
                c.budget.remaining.clone().unwrap_or_default(),
            ),
            ("withheld", c.budget.withheld.to_string()),
            ("revenue", c.revenue.clone()),
            ("revenue_last_touch", c.revenue_by_model.last_touch.clone()),
            (
                "revenue_first_touch",
                c.revenue_by_model.first_touch.clone(),
            ),
            ("revenue_linear", c.revenue_by_model.linear.clone()),
            ("conversions", c.conversions.to_string()),
            ("roi", opt(c.roi)),
            ("eligible", c.density.eligible.to_string()),
            ("reached", c.density.reached.to_string()),
            ("defects", c.density.defects.to_string()),
            ("density", opt(c.density.density)),
            ("dpmo", opt(c.density.dpmo)),
            ("sigma", opt(c.density.sigma)),
            (
                "latency_p50_ms",
                c.sensitivity
                    .p50_ms
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ),
            (
                "latency_p99_ms",
                c.sensitivity
                    .p99_ms
                    .map(|m| m.to_string())
                    .unwrap_or_default(),
            ),
            ("leads_opened", c.leads.opened.to_string()),
            ("leads_accepted", c.leads.accepted.to_string()),
            ("leads_breached", c.leads.breached.to_string()),
            ("leads_won", c.leads.won.to_string()),
            ("leads_lost", c.leads.lost.to_string()),
            ("leads_won_amount", c.leads.won_amount.clone()),
            ("capped_deferred", c.capped.deferred.to_string()),
            ("capped_dropped", c.capped.dropped.to_string()),
            ("capped_expired", c.capped.expired.to_string()),
            ("capped_sent_late", c.capped.sent_late.to_string()),
        ] {
            row(id, "campaign", "", metric, value)?;
        }
        for s in &c.funnel {
            row(id, "funnel", &s.state, "entries", s.entries.to_string())?;
            row(id, "funnel", &s.state, "active", s.active.to_string())?;
            row(
                id,
                "funnel",
                &s.state,
                "share_of_treated",
                opt(s.share_of_treated),
            )?;
        }
        for s in &c.steps {
            let item = format!("{}>{}", s.from, s.to);
            row(id, "step", &item, "contacts", s.contacts.to_string())?;
            row(id, "step", &item, "rate", opt(s.rate))?;
        }
        for g in &c.groups {
            row(id, "group", &g.group, "contacts", g.contacts.to_string())?;
        }
        for d in &c.days {
            row(id, "day", &d.day, "enrollments", d.enrollments.to_string())?;
            row(id, "day", &d.day, "goals", d.goals.to_string())?;
            row(id, "day", &d.day, "actions", d.actions.to_string())?;
        }
        for k in &c.actions {
            for (metric, value) in [
                ("emitted", k.emitted.to_string()),
                ("delivered", k.delivered.to_string()),
                ("bounced", k.bounced.to_string()),
                ("failed", k.failed.to_string()),
                ("handed_off", k.handed_off.to_string()),
                ("withheld", k.over_budget.to_string()),
                ("cost", k.cost.clone()),
                ("revenue", k.revenue.clone()),
                ("roi", opt(k.roi)),
            ] {
                row(id, "action", &k.kind, metric, value)?;
            }
        }
        for a in &c.arms {
            for (metric, value) in [
                ("enrolled", a.enrolled.to_string()),
                ("goals", a.goals.to_string()),
                ("converted", a.converted.to_string()),
                ("conversion_rate", opt(a.conversion_rate)),
                ("revenue", a.revenue.clone()),
                ("uplift_points", opt(a.uplift_points)),
                ("relative_uplift", opt(a.relative_uplift)),
            ] {
                row(id, "arm", &a.arm, metric, value)?;
            }
        }
    }
    for (section, rows) in [("channel", &report.channels), ("segment", &report.segments)] {
        for r in rows {
            let item = format!("{} {}", r.name, r.currency);
            row("", section, &item, "cost", r.cost.clone())?;
            row("", section, &item, "revenue", r.revenue.clone())?;
            row("", section, &item, "roi", opt(r.roi))?;
            if let Some(d) = &r.density {
                row("", section, &item, "density", opt(d.density))?;
                row("", section, &item, "dpmo", opt(d.dpmo))?;
            }
        }
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

/// The customer-value report as CSV: `section,item,metric,value`.
///
/// # Errors
/// Only if the CSV writer fails (it writes to memory).
pub fn value_csv(r: &crate::value::ValueReport) -> Result<String, csv::Error> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(["section", "item", "metric", "value"])?;
    let opt = |r: Option<f64>| r.map(|r| r.to_string()).unwrap_or_default();
    for (metric, value) in [
        ("contacts", r.contacts.to_string()),
        ("customers", r.customers.to_string()),
        ("churned", r.churned.to_string()),
        ("retention_rate", opt(r.retention_rate)),
        ("total_value", r.total_value.clone()),
    ] {
        w.write_record(["summary", "", metric, &value])?;
    }
    for t in &r.tiers {
        for (metric, value) in [
            ("customers", t.customers.to_string()),
            ("value", t.value.clone()),
            ("share_of_value", opt(t.share_of_value)),
            ("min_value", t.min_value.clone().unwrap_or_default()),
            ("average_clv", t.average_clv.clone().unwrap_or_default()),
            ("churned", t.churned.to_string()),
        ] {
            w.write_record(["tier", &t.tier, metric, &value])?;
        }
    }
    for c in &r.churn {
        let item = format!("{} {}", c.from, c.tier);
        w.write_record(["churn", &item, "active", &c.active.to_string()])?;
        w.write_record(["churn", &item, "churned", &c.churned.to_string()])?;
        w.write_record(["churn", &item, "rate", &opt(c.rate)])?;
    }
    for (s, n) in &r.stages {
        w.write_record(["stage", s, "contacts", &n.to_string()])?;
    }
    for s in &r.sources {
        w.write_record(["source", &s.channel, "contacts", &s.contacts.to_string()])?;
        w.write_record(["source", &s.channel, "revenue", &s.revenue])?;
    }
    for c in &r.top {
        for (metric, value) in [
            ("tier", c.tier.clone()),
            ("value", c.value.clone()),
            ("clv", c.clv.clone()),
            ("rfm", c.rfm.clone()),
            ("churned", c.churned.to_string()),
        ] {
            w.write_record(["contact", &c.id, metric, &value])?;
        }
    }
    let bytes = w.into_inner().map_err(|e| e.into_error())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// Leads as a table.
#[must_use]
pub fn leads_text(rows: &[crate::leads::LeadRow]) -> String {
    let mut t = table(&[
        "owner",
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
