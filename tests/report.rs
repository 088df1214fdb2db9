//! `canvass report` on the real binary: two small campaigns whose every figure is worked out
//! by hand below, run through `canvass run` on the event clock into a real data directory.

#![allow(clippy::unwrap_used)]

use canvass_tests::{canvass, stderr, stdout};
use serde_json::{Value, json};

const T0: &str = "2026-04-01T09:00:00Z";

/// spring: everyone, budget 0.25 EUR at 0.10 per email, ten-day window, segment "loyal".
/// autumn: northern contacts, 0.05 per email without a total, default 30-day window, segment "new".
fn specs() -> (Value, Value) {
    let spring = json!({
        "id": "spring", "version": 1, "name": "Spring news", "initialState": "mail",
        "audience": {"filter": "true"},
        "attributionWindow": "864000s",
        "labels": {"segment": "loyal"},
        "states": [
            {"id": "mail", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "spring"}],
             "transitions": [
                {"to": "opened", "onEvent": {"type": "email.opened"}},
                {"to": "silent", "after": "604800s"}]},
            {"id": "opened", "responseGroup": "opened", "goal": true, "terminal": true},
            {"id": "silent", "responseGroup": "silent", "terminal": true}
        ],
        "budget": {"currency": "EUR", "total": "0.25", "costPerAction": {"EMAIL": "0.10"}}
    });
    let autumn = json!({
        "id": "autumn", "version": 1, "initialState": "mail",
        "audience": {"filter": "contact.attrs.region == 'north'"},
        "labels": {"segment": "new"},
        "states": [
            {"id": "mail", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "autumn"}], "terminal": true}
        ],
        "budget": {"currency": "EUR", "costPerAction": {"EMAIL": "0.05"}}
    });
    (spring, autumn)
}

fn day(n: u32) -> String {
    format!("2026-04-{:02}T09:00:00Z", 1 + n)
}

fn event(id: &str, kind: &str, contact: &str, at: &str, extra: Value) -> Value {
    let mut e = json!({"id": id, "type": kind, "contactId": contact, "occurredAt": at});
    for (k, v) in extra.as_object().unwrap() {
        e[k] = v.clone();
    }
    json!({ "event": e })
}

/// The input, in order:
/// - c1, c2, c3 (c3 in the north); spring launched, then autumn.
/// - spring emails c1 and c2 (0.20 spent); c3's email would make 0.30 > 0.25: withheld.
///   autumn emails c3 (0.05).
/// - day 1: c1 opens (goal); its email is confirmed delivered (reached).
/// - day 2: c1 buys for 120: credited to spring's email (its only touch, within ten days).
/// - day 3: c3 buys for 50: credited to autumn's email; spring had no touch on c3, but c3 was
///   enrolled in spring three days before, so spring's arm counts the purchase too.
/// - day 12: c2 buys for 30: spring's email (day 0) is past its ten days: not credited, and
///   not in spring's arm either. The event clock passing day 7 first moves c2 and c3 to silent.
fn fixture_input() -> String {
    fixture_input_with(None)
}

/// The fixture's input, with a `setPolicy` command before the launches.
fn fixture_input_with(policy: Option<Value>) -> String {
    let (spring, autumn) = specs();
    let mut lines = Vec::new();
    for (spec, id) in [(spring, "spring"), (autumn, "autumn")] {
        let v = json!({"campaignId": id, "version": 1});
        lines.push(json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}));
        lines.push(json!({"at": T0, "command": {"actor": "marketer", "submit": v}}));
        lines.push(json!({"at": T0, "command": {"actor": "manager", "approve": v}}));
    }
    if let Some(policy) = policy {
        lines.push(json!({"at": T0, "command": {"actor": "ops", "setPolicy": policy}}));
    }
    for (id, region) in [("c1", "south"), ("c2", "south"), ("c3", "north")] {
        lines.push(json!({"at": T0, "contact": {"id": id, "attrs": {"region": region}}}));
    }
    for id in ["spring", "autumn"] {
        lines.push(json!({"at": T0, "command": {"actor": "ops", "launch": id}}));
    }
    lines.push(event("e1", "email.opened", "c1", &day(1), json!({})));
    lines.push(event(
        "e2",
        "action.delivered",
        "c1",
        &day(1),
        json!({"campaignId": "spring"}),
    ));
    lines.push(event(
        "e3",
        "purchase",
        "c1",
        &day(2),
        json!({"attrs": {"product": "B", "amount": "120.00"}}),
    ));
    lines.push(event(
        "e4",
        "purchase",
        "c3",
        &day(3),
        json!({"attrs": {"product": "B", "amount": 50}}),
    ));
    lines.push(event(
        "e5",
        "purchase",
        "c2",
        &day(12),
        json!({"attrs": {"product": "B", "amount": "30"}}),
    ));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

fn run_fixture(dir: &std::path::Path) -> String {
    run_input(dir, &fixture_input())
}

fn run_input(dir: &std::path::Path, text: &str) -> String {
    run_input_with(dir, text, &[])
}

/// [`run_input`] with more arguments for `canvass run`.
fn run_input_with(dir: &std::path::Path, text: &str, extra: &[&str]) -> String {
    let input = dir.join("input.jsonl");
    std::fs::write(&input, text).unwrap();
    let data = dir.join("data").display().to_string();
    let actions = dir.join("actions.jsonl").display().to_string();
    let input = input.display().to_string();
    let mut args = vec![
        "run",
        "--data",
        &data,
        "--input",
        &input,
        "--actions",
        &actions,
        "--clock",
        "event",
    ];
    args.extend_from_slice(extra);
    let out = canvass(&args);
    assert!(out.status.success(), "run failed: {}", stderr(&out));
    data
}

fn report(data: &str, extra: &[&str]) -> String {
    let mut args = vec!["report", "--data", data];
    args.extend_from_slice(extra);
    let out = canvass(&args);
    assert!(out.status.success(), "report failed: {}", stderr(&out));
    stdout(&out)
}

fn campaign<'a>(r: &'a Value, id: &str) -> &'a Value {
    r["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == id)
        .unwrap_or_else(|| panic!("campaign {id} in {r}"))
}

/// The named string fields of each object of a JSON array, in order.
fn texts(rows: &Value, fields: &[&str]) -> Vec<Vec<String>> {
    rows.as_array()
        .unwrap()
        .iter()
        .map(|row| {
            fields
                .iter()
                .map(|f| row[*f].as_str().unwrap().to_string())
                .collect()
        })
        .collect()
}

/// The texts of an SVG chart with their `y`, in document order.
fn svg_texts(svg: &str) -> Vec<(String, f64)> {
    svg.split("<text ")
        .skip(1)
        .filter_map(|t| {
            let y = t.split("y=\"").nth(1)?.split('"').next()?.parse().ok()?;
            let text = t.split('>').nth(1)?.split('<').next()?.trim().to_string();
            Some((text, y))
        })
        .collect()
}

/// A PNG image, 900 pixels wide (its signature and header).
fn assert_png(bytes: &[u8]) {
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR");
    assert_eq!(u32::from_be_bytes(bytes[16..20].try_into().unwrap()), 900);
}

fn close(v: &Value, expected: f64) -> bool {
    v.as_f64().is_some_and(|v| (v - expected).abs() < 1e-9)
}

#[test]
fn every_figure_of_a_hand_worked_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    assert_eq!(r["model"], "last-touch");
    let s = campaign(&r, "spring");

    // Funnel: three entered `mail`, one opened, two fell silent after seven days.
    assert_eq!(
        (
            s["enrolled"].as_u64(),
            s["heldOut"].as_u64(),
            s["goals"].as_u64()
        ),
        (Some(3), Some(0), Some(1))
    );
    let funnel: Vec<(String, u64)> = s["funnel"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["state"].as_str().unwrap().to_string(),
                f["entries"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        funnel,
        [
            ("mail".into(), 3),
            ("opened".into(), 1),
            ("silent".into(), 2)
        ]
    );
    let step = |from: &str, to: &str| {
        s["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["from"] == from && x["to"] == to)
            .cloned()
            .unwrap()
    };
    assert!(close(&step("", "mail")["rate"], 1.0));
    assert!(close(&step("mail", "opened")["rate"], 1.0 / 3.0));
    assert!(close(&step("mail", "silent")["rate"], 2.0 / 3.0));
    assert_eq!(
        s["groups"],
        json!([{"group": "opened", "contacts": 1}, {"group": "silent", "contacts": 2}])
    );

    // Cost and budget: two emails at 0.10; the third withheld.
    assert_eq!(s["budget"]["total"], "0.25");
    assert_eq!(s["budget"]["spent"], "0.20");
    assert_eq!(s["budget"]["remaining"], "0.05");
    assert_eq!(s["budget"]["withheld"], 1);
    assert_eq!(s["budget"]["exhaustedAt"], T0);
    let email = &s["actions"][0];
    assert_eq!(
        (
            email["kind"].as_str(),
            email["emitted"].as_u64(),
            email["overBudget"].as_u64()
        ),
        (Some("EMAIL"), Some(2), Some(1))
    );
    // The file sink acknowledged both: handed off, with no outcome known.
    assert_eq!(email["handedOff"], 2);

    // Revenue: only c1's 120 is spring's; ROI = (120 - 0.2) / 0.2 = 599.
    assert_eq!(s["revenue"], "120.00");
    assert_eq!(s["conversions"], 1);
    assert!(close(&s["roi"], 599.0));
    assert_eq!(
        s["revenueByModel"],
        json!({"lastTouch": "120.00", "firstTouch": "120.00", "linear": "120.00"})
    );

    // The arm: c1 (120, day 2) and c3 (50, day 3) bought within ten days of enrolling; c2 did not.
    let arm = &s["arms"][0];
    assert_eq!(arm["arm"], "all");
    assert_eq!(
        (
            arm["enrolled"].as_u64(),
            arm["converted"].as_u64(),
            arm["goals"].as_u64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(arm["revenue"], "170.00");
    assert_eq!(arm["revenuePerContact"], "56.67");

    // Density: 3 eligible, 1 reached: 2 defects, 666,666.7 DPMO, sigma = z(1/3) + 1.5 = 1.0693.
    let d = &s["density"];
    assert_eq!(
        (
            d["eligible"].as_u64(),
            d["reached"].as_u64(),
            d["defects"].as_u64()
        ),
        (Some(3), Some(1), Some(2))
    );
    assert!(close(&d["density"], 1.0 / 3.0));
    assert!((d["dpmo"].as_f64().unwrap() - 666_666.666_666_7).abs() < 0.01);
    assert!((d["sigma"].as_f64().unwrap() - 1.069_27).abs() < 0.000_1);
    // No action was caused by an event: nothing to time.
    assert_eq!(s["sensitivity"]["actionsTimed"], 0);

    let a = campaign(&r, "autumn");
    assert_eq!(a["revenue"], "50.00");
    assert!(close(&a["roi"], (50.0 - 0.05) / 0.05));
    assert_eq!(a["budget"]["total"], Value::Null);
    assert_eq!(a["arms"][0]["converted"], 1);

    // Channels and segments, all campaigns together.
    assert_eq!(
        r["channels"],
        json!([{"name": "EMAIL", "currency": "EUR", "cost": "0.25", "revenue": "170.00", "roi": 679.0}])
    );
    let segments: Vec<(String, u64, u64, Value)> = r["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_string(),
                s["density"]["eligible"].as_u64().unwrap(),
                s["density"]["reached"].as_u64().unwrap(),
                s["money"].clone(),
            )
        })
        .collect();
    assert_eq!(
        segments,
        [
            (
                "loyal".to_string(),
                3,
                1,
                json!([{"currency": "EUR", "cost": "0.20", "revenue": "120.00", "roi": 599.0}])
            ),
            (
                "new".to_string(),
                1,
                0,
                json!([{"currency": "EUR", "cost": "0.05", "revenue": "50.00", "roi": 999.0}])
            )
        ]
    );
}

/// A campaign without a budget reports in the currency the others share: one row per
/// channel and segment, its contacts in the segment's density.
#[test]
fn a_campaign_without_a_budget_takes_the_currency_the_others_share() {
    let dir = tempfile::tempdir().unwrap();
    let (spring, mut autumn) = specs();
    autumn["labels"]["segment"] = json!("loyal");
    autumn.as_object_mut().unwrap().remove("budget");
    let text = fixture_input().replace(&specs().1.to_string(), &autumn.to_string());
    assert!(text.contains(&spring.to_string()) && text.contains(&autumn.to_string()));
    let data = run_input(dir.path(), &text);
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    assert_eq!(campaign(&r, "autumn")["currency"], "EUR");
    let channels = texts(&r["channels"], &["name", "currency"]);
    assert_eq!(channels, [["EMAIL", "EUR"]]);
    let segments = r["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 1, "{segments:?}");
    assert_eq!(segments[0]["name"], "loyal");
    assert_eq!(segments[0]["density"]["eligible"], 4);
    let money = texts(&segments[0]["money"], &["currency", "revenue"]);
    assert_eq!(money, [["EUR", "170.00"]]);
}

#[test]
fn indirect_cost_is_allocated_by_the_rule_chosen() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    // By contacts: spring treated 3, autumn 1: 75 and 25.
    let r: Value =
        serde_json::from_str(&report(&data, &["--json", "--indirect-cost", "100"])).unwrap();
    assert_eq!(
        r["indirect"]["shares"],
        json!({"autumn": "25.00", "spring": "75.00"})
    );
    let s = campaign(&r, "spring");
    assert_eq!(
        s["cost"],
        json!({"direct": "0.20", "indirect": "75.00", "total": "75.20"})
    );
    assert!(close(&s["roi"], (120.0 - 75.2) / 75.2));
    // By direct cost: 0.20 and 0.05 of 0.25: 80 and 20.
    let r: Value = serde_json::from_str(&report(
        &data,
        &[
            "--json",
            "--indirect-cost",
            "100",
            "--allocate",
            "direct-cost",
        ],
    ))
    .unwrap();
    assert_eq!(
        r["indirect"]["shares"],
        json!({"autumn": "20.00", "spring": "80.00"})
    );
    assert_eq!(campaign(&r, "autumn")["cost"]["total"], "20.05");
    // Segment ROI includes the allocated cost.
    assert_eq!(r["segments"][0]["money"][0]["cost"], "80.20");
}

#[test]
fn table_csv_and_svg_say_the_same_and_replay_gives_the_same_report() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    let before = report(&data, &["--json"]);

    let table = report(&data, &["--campaign", "spring"]);
    assert!(
        table.contains("Campaign spring (Spring news) - STOPPED")
            || table.contains("Campaign spring (Spring news) - RUNNING"),
        "{table}"
    );
    assert!(!table.contains("Campaign autumn"), "{table}");
    assert!(
        table.contains(
            "Density 33.3% (1 of 3 eligible reached, 2 defects), 666667 DPMO, sigma 1.07"
        ),
        "{table}"
    );
    assert!(
        table.contains(
            "Budget 0.25, remaining 0.05, 1 actions withheld (exhausted at 2026-04-01T09:00:00Z)"
        ),
        "{table}"
    );

    let csv = report(&data, &["--csv"]);
    let rows: Vec<&str> = csv.lines().collect();
    assert_eq!(rows[0], "campaign,section,item,metric,value");
    for expected in [
        "spring,campaign,,roi,599.0",
        "spring,budget,,withheld,1",
        "spring,funnel,silent,entries,2",
        "spring,steps,mail>opened,contacts,1",
        "spring,groups,opened,contacts,1",
        "spring,actions,EMAIL,cost,0.20",
        "autumn,campaign,,revenue,50.00",
        ",channels,EMAIL EUR,revenue,170.00",
    ] {
        assert!(rows.contains(&expected), "{expected} not in\n{csv}");
    }

    let svg = dir.path().join("funnel.svg");
    let png = dir.path().join("funnel.png");
    report(
        &data,
        &[
            "--svg",
            &svg.display().to_string(),
            "--png",
            &png.display().to_string(),
        ],
    );
    let svg = std::fs::read_to_string(svg).unwrap();
    assert!(svg.starts_with("<svg "), "{svg}");
    let texts = svg_texts(&svg);
    let y = |label: &str| {
        texts
            .iter()
            .find(|(t, _)| t == label)
            .unwrap_or_else(|| panic!("{label} not in the chart: {texts:?}"))
            .1
    };
    // Journey order top to bottom, the goal marked; the date range and the currency shown.
    assert!(y("mail") < y("opened (goal)") && y("opened (goal)") < y("silent"));
    for label in ["3 (100.0%)", "1 (33.3%)"] {
        y(label);
    }
    assert!(
        texts.iter().any(
            |(t, _)| t.starts_with("spring funnel, 2026-04-01 to 2026-04-")
                && t.ends_with("cost 0.20 EUR")
        ),
        "{texts:?}"
    );
    assert_png(&std::fs::read(png).unwrap());

    // The counters are projections of the log: replay rebuilds the same report.
    let out = canvass(&["replay", "--data", &data]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(report(&data, &["--json"]), before);
}

/// The fields that name an element of each list of the reports (the CSV's `item`).
const IDENTITIES: [(&str, &[&str]); 20] = [
    ("campaigns", &["id"]),
    ("top", &["id"]),
    ("funnel", &["state"]),
    ("steps", &["from", "to"]),
    ("groups", &["group"]),
    ("days", &["day"]),
    ("actions", &["kind"]),
    ("arms", &["arm"]),
    ("channels", &["name", "currency"]),
    ("segments", &["name"]),
    ("money", &["currency"]),
    ("tiers", &["tier"]),
    ("churn", &["from", "tier"]),
    ("sources", &["channel"]),
    ("satisfaction", &["by", "name"]),
    ("concerns", &["by", "name"]),
    ("materials", &["material"]),
    ("owners", &["owner"]),
    ("weeks", &["period"]),
    ("months", &["period"]),
];

/// Each leaf of a report's JSON as (campaign, field name, value), walked here on its own:
/// the leaves that name a list's element go to `names` instead.
fn leaves(
    v: &Value,
    campaign: &str,
    list: &str,
    key: &str,
    out: &mut Vec<(String, String, String)>,
    names: &mut Vec<(String, String)>,
) {
    match v {
        Value::Object(o) => {
            let campaign = if list == "campaigns" {
                o["id"].as_str().unwrap()
            } else {
                campaign
            };
            let identity = IDENTITIES
                .iter()
                .find(|(l, _)| *l == list)
                .map_or(&[][..], |(_, keys)| *keys);
            for (k, v) in o {
                if identity.contains(&k.as_str()) {
                    names.push((campaign.to_string(), v.as_str().unwrap().to_string()));
                } else {
                    leaves(v, campaign, "", k, out, names);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                leaves(item, campaign, key, key, out, names);
            }
        }
        Value::String(s) => out.push((campaign.into(), key.into(), s.clone())),
        other => out.push((campaign.into(), key.into(), other.to_string())),
    }
}

/// Asserts that the CSV holds every figure of the JSON, once each, and nothing else.
fn assert_csv_holds_the_json(json: &str, csv_text: &str, with_campaign: bool) {
    let json: Value = serde_json::from_str(json).unwrap();
    let (mut expected, mut names) = (Vec::new(), Vec::new());
    leaves(&json, "", "", "", &mut expected, &mut names);
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let mut rows = Vec::new();
    let mut items = Vec::new();
    for record in reader.records() {
        let r: Vec<String> = record.unwrap().iter().map(str::to_string).collect();
        let (campaign, rest) = if with_campaign {
            (r[0].clone(), &r[1..])
        } else {
            (String::new(), &r[..])
        };
        let metric = rest[2].rsplit('.').next().unwrap().to_string();
        items.push((campaign.clone(), rest[1].clone()));
        rows.push((campaign, metric, rest[3].clone()));
    }
    expected.sort();
    rows.sort();
    assert_eq!(rows, expected, "the CSV's figures and the JSON's");
    for (campaign, name) in names {
        assert!(
            campaign.is_empty() && name.is_empty()
                || items
                    .iter()
                    .any(|(c, item)| *c == campaign && item.contains(&name))
                || with_campaign && rows.iter().any(|(c, _, _)| *c == name),
            "no CSV item names {name} (campaign {campaign})"
        );
    }
}

#[test]
fn the_csv_holds_every_figure_of_the_json() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    let json = report(&data, &["--json"]);
    let csv_text = report(&data, &["--csv"]);
    assert_csv_holds_the_json(&json, &csv_text, true);
    // Among them, figures the CSV once lacked.
    let rows: Vec<&str> = csv_text.lines().collect();
    for expected in [
        "spring,arms,all,goalRate,",
        "spring,arms,all,revenuePerContact,",
        "spring,leads,,reassigned,0",
        "spring,leads,,lateAcceptances,0",
        "spring,budget,,exhaustedAt,2026-04-01T09:00:00Z",
        ",segments,loyal,density.eligible,3",
        ",segments,loyal,density.reached,1",
        ",segments,loyal,density.sigmaStatus,measured",
        ",segments,loyal EUR,cost,",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(expected)),
            "{expected} not in\n{csv_text}"
        );
    }

    let value_args = ["--value", "--all-contacts"];
    let json = report(&data, &[&value_args[..], &["--json"]].concat());
    let csv_text = report(&data, &[&value_args[..], &["--csv"]].concat());
    assert_csv_holds_the_json(&json, &csv_text, false);
    let rows: Vec<&str> = csv_text.lines().collect();
    for expected in [
        "top,c1,revenue,120.00",
        "top,c1,costOfGoods,",
        "top,c1,marketingCost,0.10",
        "top,c1,recencyDays,",
        "top,c1,frequency,1",
        "top,c1,stage,CUSTOMER",
        "top,c1,sourceChannel,",
        "stages,,CUSTOMER,3",
    ] {
        assert!(
            rows.iter().any(|r| r.starts_with(expected)),
            "{expected} not in\n{csv_text}"
        );
    }
}

#[test]
fn an_unknown_campaign_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    let out = canvass(&["report", "--data", &data, "--campaign", "winter"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no campaign `winter` in this data directory"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn customer_value_of_the_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    let r: Value = serde_json::from_str(&report(&data, &["--value", "--json"])).unwrap();
    // As of the last input applied: c2's purchase on day 12.
    assert_eq!(r["asOf"], day(12));
    // Values: revenue minus the emails each was sent. c1 120 - 0.10, c3 50 - 0.05 (spring's
    // email to c3 was withheld), c2 30 - 0.10.
    assert_eq!(
        (r["customers"].as_u64(), r["churned"].as_u64()),
        (Some(3), Some(0))
    );
    assert_eq!(r["totalValue"], "199.75");
    let tiers: Vec<(String, u64, String)> = r["tiers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["tier"].as_str().unwrap().into(),
                t["customers"].as_u64().unwrap(),
                t["value"].as_str().unwrap().into(),
            )
        })
        .collect();
    // Three customers: A keeps the best, B (to 50% = 1.5) none more, C (to 80% = 2.4) the
    // second, D the third.
    assert_eq!(
        tiers,
        [
            ("A".into(), 1, "119.90".into()),
            ("B".into(), 0, "0.00".into()),
            ("C".into(), 1, "49.95".into()),
            ("D".into(), 1, "29.90".into())
        ]
    );
    // RFM among three: recency c2 0 days, c3 9, c1 10; one purchase each; c1 120, c3 50, c2 30.
    assert_eq!(
        texts(&r["top"], &["id", "rfm"]),
        [["c1", "255"], ["c3", "454"], ["c2", "552"]]
    );
    // Nobody bought 90 days before: no retention observed, so the CLV is the value.
    assert_eq!(r["retentionRate"], Value::Null);
    assert_eq!(r["top"][0]["clv"], "119.90");
    assert_eq!(r["stages"], json!({"CUSTOMER": 3}));

    // A later point of view: on 2026-07-30 all three are past their 90 days (c1 bought on
    // 04-03, c3 on 04-04, c2 on 04-13).
    let later: Value = serde_json::from_str(&report(
        &data,
        &[
            "--value",
            "--json",
            "--as-of",
            "2026-07-30T09:00:00Z",
            "--period-days",
            "30",
            "--periods",
            "1",
        ],
    ))
    .unwrap();
    assert_eq!(later["churned"], 3);
    // The period [2026-06-30, 2026-07-30): all three were active at its start (c1's last
    // purchase 88 days before) and their 90 days ran out in it (07-02, 07-03, 07-12).
    let all = later["churn"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tier"] == "all")
        .unwrap();
    assert_eq!(
        (all["active"].as_u64(), all["churned"].as_u64()),
        (Some(3), Some(3))
    );

    let svg = dir.path().join("tiers.svg");
    let png = dir.path().join("tiers.png");
    report(
        &data,
        &[
            "--value",
            "--svg",
            &svg.display().to_string(),
            "--png",
            &png.display().to_string(),
        ],
    );
    let texts: Vec<String> = svg_texts(&std::fs::read_to_string(svg).unwrap())
        .into_iter()
        .map(|(t, _)| t)
        .collect();
    for expected in [
        "tier A",
        "1 customers, 60.0% of value (119.90), 0 churned",
        "Satisfaction per period: NPS (-100 to 100) and mean score x 10",
    ] {
        assert!(
            texts.iter().any(|t| t == expected),
            "{expected} in {texts:?}"
        );
    }
    assert!(texts.iter().any(|t| t.starts_with("Value pyramid as of")));
    assert_png(&std::fs::read(png).unwrap());

    let out = canvass(&["report", "--data", &data, "--value", "--tiers", "50,60,10"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--tiers `50,60,10`: the three shares add up to more than 100%"));
}

#[test]
fn a_policy_in_the_log_holds_actions_back_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    // Quiet from 08:00 to 10:00 UTC, dropped: the launches at 09:00 send no email at all, so
    // nothing is spent either.
    let quiet = json!({"quietHours": {"startHour": 8, "endHour": 10, "mode": "CAP_MODE_DROP"}});
    let data = run_input(dir.path(), &fixture_input_with(Some(quiet)));
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    let s = campaign(&r, "spring");
    assert_eq!(
        s["capped"],
        json!({"deferred": 0, "dropped": 3, "expired": 0, "sentLate": 0})
    );
    assert_eq!(
        (
            s["budget"]["spent"].as_str(),
            s["budget"]["withheld"].as_u64()
        ),
        (Some("0.00"), Some(0))
    );
    assert_eq!(s["revenue"], "0.00");
    assert_eq!(campaign(&r, "autumn")["capped"]["dropped"], 1);
    let out = canvass(&["inspect", "--data", &data]);
    assert!(
        stdout(&out).contains(
            r#"policy:        {"quietHours":{"startHour":8,"endHour":10,"mode":"CAP_MODE_DROP"}}"#
        ),
        "{}",
        stdout(&out)
    );
    // Replay applies the policy where the log has it: the same report.
    let before = report(&data, &["--json"]);
    assert!(canvass(&["replay", "--data", &data]).status.success());
    assert_eq!(report(&data, &["--json"]), before);

    let dir = tempfile::tempdir().unwrap();
    let bad = json!({"quietHours": {"startHour": 25, "endHour": 6}, "caps": [{"channel": "FAX", "maxTouches": 1, "window": "60s"}]});
    let data = run_input(dir.path(), &fixture_input_with(Some(bad)));
    let out = canvass(&["inspect", "--data", &data]);
    assert!(
        stdout(&out).contains("dead letters:  1"),
        "{}",
        stdout(&out)
    );
    assert!(!stdout(&out).contains("policy:"));
    let letters = canvass_tests::store(std::path::Path::new(&data))
        .dead_letters()
        .unwrap();
    assert_eq!(
        letters[0].reason,
        "invalid policy: caps[0].channel: `FAX` is not a customer-facing action kind (EMAIL, POSTAL_MAIL, SMS, PHONE_CALL, TRIAL_OFFER); quietHours: hours run from 0 to 23"
    );
}

#[test]
fn the_value_pyramid_becomes_the_tiers_conditions_see() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_fixture(dir.path());
    let out = canvass(&[
        "report",
        "--data",
        &data,
        "--value",
        "--emit-policy",
        "--churn-days",
        "60",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let line = stdout(&out);
    let record: Value = serde_json::from_str(line.trim()).unwrap();
    // A from c1's 119.90; B is empty, so it starts where A does; C from c3's 49.95.
    assert_eq!(
        record["command"]["setPolicy"],
        json!({"churnDays": 60, "tiers": {"a": "119.90", "b": "119.90", "c": "49.95"}})
    );
    // Fed to the engine like any input, it becomes the policy.
    let mut text = fixture_input();
    text.push_str(&line);
    run_input(dir.path(), &text);
    let out = canvass(&["inspect", "--data", &data]);
    assert!(
        stdout(&out).contains(
            r#"policy:        {"churnDays":60,"tiers":{"a":"119.90","b":"119.90","c":"49.95"}}"#
        ),
        "{}",
        stdout(&out)
    );
}

/// Three contacts ask for a demo on day 1 and are handed to alice, who leaves the same day:
/// her leads go to bob. d1 is accepted on day 2 and won on day 5 (900); nobody answers for
/// d2, whose two days run out on day 3 (notification, back to nurture); d3 is lost on day 2.
fn leads_input() -> String {
    let spec = json!({
        "id": "demo", "version": 1, "initialState": "nurture",
        "audience": {"filter": "true"},
        "attributionWindow": "2592000s",
        "states": [
            {"id": "nurture", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "nurture"}],
             "transitions": [{"to": "handoff", "onEvent": {"type": "demo.requested"}}]},
            {"id": "handoff", "terminal": true, "actions": [{"kind": "ACTION_KIND_SALES_HANDOFF",
             "sla": "172800s", "slaBreachState": "nurture", "params": {"owner": "alice"}}]}
        ]
    });
    let v = json!({"campaignId": "demo", "version": 1});
    let mut lines = vec![
        json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}),
        json!({"at": T0, "command": {"actor": "marketer", "submit": v}}),
        json!({"at": T0, "command": {"actor": "manager", "approve": v}}),
    ];
    for id in ["d1", "d2", "d3"] {
        lines.push(json!({"at": T0, "contact": {"id": id}}));
    }
    lines.push(json!({"at": T0, "command": {"actor": "ops", "launch": "demo"}}));
    for (n, id) in ["d1", "d2", "d3"].iter().enumerate() {
        lines.push(event(
            &format!("r{n}"),
            "demo.requested",
            id,
            &day(1),
            json!({}),
        ));
    }
    lines.push(
        json!({"at": day(1), "command": {"actor": "ops", "reason": "alice left",
        "reassignLeads": {"fromOwner": "alice", "toOwner": "bob"}}}),
    );
    lines.push(event(
        "a1",
        "opportunity.accepted",
        "d1",
        &day(2),
        json!({}),
    ));
    lines.push(event("l3", "opportunity.lost", "d3", &day(2), json!({})));
    lines.push(event(
        "w1",
        "opportunity.won",
        "d1",
        &day(5),
        json!({"attrs": {"amount": "900"}}),
    ));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn leads_follow_their_sla_and_a_staff_change_loses_none() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_input(dir.path(), &leads_input());
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    let d = campaign(&r, "demo");
    assert_eq!(
        d["leads"],
        json!({"opened": 3, "accepted": 1, "breached": 1, "withinSla": 0.5, "won": 1, "lost": 1,
        "winRate": 0.5, "wonAmount": "900.00", "reassigned": 3, "lateAcceptances": 0,
        "owners": [
          {"owner": "alice", "assigned": 3, "reassignedIn": 0, "reassignedOut": 3,
           "open": 0, "accepted": 0, "breached": 0, "won": 0, "lost": 0,
           "wonAmount": "0.00"},
          {"owner": "bob", "assigned": 0, "reassignedIn": 3, "reassignedOut": 0,
           "open": 0, "accepted": 1, "breached": 1, "withinSla": 0.5, "won": 1,
           "lost": 1, "winRate": 0.5, "wonAmount": "900.00"}
        ]})
    );
    // The win is revenue: last touch the hand-off, first touch the email, half each linearly.
    let kinds = texts(&d["actions"], &["kind", "revenue"]);
    assert!(
        kinds.contains(&vec!["SALES_HANDOFF".to_string(), "900.00".to_string()]),
        "{kinds:?}"
    );
    assert_eq!(d["revenueByModel"]["linear"], "900.00");
    // d2 went back to nurture: a second email; the breach notified bob.
    let emails = d["funnel"][0]["entries"].as_u64().unwrap();
    assert_eq!(emails, 4);
    let actions = std::fs::read_to_string(dir.path().join("actions.jsonl")).unwrap();
    let notice: Vec<&str> = actions
        .lines()
        .filter(|l| l.contains("ACTION_KIND_NOTIFICATION"))
        .collect();
    assert_eq!(notice.len(), 1);
    assert!(
        notice[0].contains(r#""owner":"bob""#)
            && notice[0].contains(r#""template":"sla-breach""#)
            && notice[0].contains(r#""contactId":"d2""#),
        "{}",
        notice[0]
    );

    let rows: Value = serde_json::from_str(&report(&data, &["--leads", "--json"])).unwrap();
    assert_eq!(
        texts(&rows, &["contactId", "owner", "status"]),
        [
            ["d1", "bob", "WON"],
            ["d2", "bob", "BREACHED"],
            ["d3", "bob", "LOST"]
        ]
    );
    let open: Value =
        serde_json::from_str(&report(&data, &["--leads", "--json", "--open"])).unwrap();
    assert_eq!(open, json!([]));
    assert!(report(&data, &["--leads", "--owner", "alice"]).starts_with("0 leads"));
}

/// Leads of seven contacts routed by rules: north in turn (ann, ben), south by least load
/// (dan, eve), enterprise to kim (the policy's rule), the rest to the policy's fallback desk.
/// s1 is accepted by dan on day 1; dan then leaves the south team and his open leads follow
/// the rules. n1 is won (500) and s2 lost on day 2; the others' two days run out on day 3.
/// Each partition's clock follows its own contacts: all are seen again on day 5.
fn routed_input() -> String {
    let spec = json!({
        "id": "routed", "version": 1, "initialState": "nurture",
        "audience": {"filter": "true"},
        "states": [
            {"id": "nurture", "transitions": [{"to": "handoff", "onEvent": {"type": "demo.requested"}}]},
            {"id": "handoff", "terminal": true,
             "actions": [{"kind": "ACTION_KIND_SALES_HANDOFF", "sla": "172800s"}]}
        ],
        "assignment": {"rules": [
            {"name": "north-turns", "when": "contact.attrs.region == 'north'", "team": "north"},
            {"name": "south-load", "when": "contact.attrs.region == 'south'", "team": "south",
             "strategy": "ASSIGNMENT_STRATEGY_LEAST_LOAD"}
        ]}
    });
    let policy = |south: Value| {
        json!({
            "teams": [{"name": "north", "members": ["ann", "ben"]},
                      {"name": "south", "members": south}],
            "assignment": {
                "rules": [{"name": "key-accounts", "owner": "kim",
                           "when": "has(contact.attrs.size) && contact.attrs.size == 'enterprise'"}],
                "fallbackOwner": "desk"
            }
        })
    };
    let v = json!({"campaignId": "routed", "version": 1});
    let mut lines = vec![
        // Refused: a team with nobody in it; a campaign naming a team the policy lacks.
        json!({"at": T0, "command": {"actor": "ops", "setPolicy": {
            "teams": [{"name": "empty", "members": []}]}}}),
        json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}),
        json!({"at": T0, "command": {"actor": "ops", "setPolicy": policy(json!(["dan", "eve"]))}}),
        json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}),
        json!({"at": T0, "command": {"actor": "marketer", "submit": v}}),
        json!({"at": T0, "command": {"actor": "manager", "approve": v}}),
    ];
    let contacts = [
        ("n1", json!({"region": "north"})),
        ("n2", json!({"region": "north"})),
        ("s1", json!({"region": "south"})),
        ("n3", json!({"region": "north"})),
        ("s2", json!({"region": "south"})),
        ("e1", json!({"size": "enterprise"})),
        ("w1", json!({"region": "west"})),
    ];
    for (id, attrs) in &contacts {
        lines.push(json!({"at": T0, "contact": {"id": id, "attrs": attrs}}));
    }
    lines.push(json!({"at": T0, "command": {"actor": "ops", "launch": "routed"}}));
    for (id, _) in &contacts {
        lines.push(event(
            &format!("r-{id}"),
            "demo.requested",
            id,
            &day(1),
            json!({}),
        ));
    }
    lines.push(event(
        "a-s1",
        "opportunity.accepted",
        "s1",
        &day(1),
        json!({}),
    ));
    lines.push(
        json!({"at": day(1), "command": {"actor": "ops", "setPolicy": policy(json!(["eve"]))}}),
    );
    lines.push(
        json!({"at": day(1), "command": {"actor": "ops", "reason": "dan left",
        "reassignLeads": {"fromOwner": "dan"}}}),
    );
    lines.push(event(
        "w-n1",
        "opportunity.won",
        "n1",
        &day(2),
        json!({"attrs": {"amount": "500"}}),
    ));
    lines.push(event("l-s2", "opportunity.lost", "s2", &day(2), json!({})));
    // Every contact is seen on day 5: each partition's clock passes the deadlines.
    for (id, _) in &contacts {
        lines.push(event(
            &format!("v-{id}"),
            "page.viewed",
            id,
            &day(5),
            json!({}),
        ));
    }
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn assignment_rules_route_leads_and_a_leaving_owner_s_leads_follow_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_input_with(dir.path(), &routed_input(), &["--partitions", "1"]);
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    let row = |owner: &str, n: [u64; 8], sla: Option<f64>, win: Option<f64>, amount: &str| {
        let mut o = json!({"owner": owner, "assigned": n[0], "reassignedIn": n[1],
            "reassignedOut": n[2], "open": n[3], "accepted": n[4], "breached": n[5],
            "won": n[6], "lost": n[7], "wonAmount": amount});
        if let Some(s) = sla {
            o["withinSla"] = json!(s);
        }
        if let Some(w) = win {
            o["winRate"] = json!(w);
        }
        o
    };
    // [assigned, in, out, open, accepted, breached, won, lost], worked by hand.
    let expected = json!([
        row(
            "ann",
            [2, 0, 0, 0, 0, 1, 1, 0],
            Some(0.0),
            Some(1.0),
            "500.00"
        ),
        row("ben", [1, 0, 0, 0, 0, 1, 0, 0], Some(0.0), None, "0.00"),
        row("dan", [1, 0, 1, 0, 1, 0, 0, 0], Some(1.0), None, "0.00"),
        row("desk", [1, 0, 0, 0, 0, 1, 0, 0], Some(0.0), None, "0.00"),
        row("eve", [1, 1, 0, 1, 0, 0, 0, 1], None, Some(0.0), "0.00"),
        row("kim", [1, 0, 0, 0, 0, 1, 0, 0], Some(0.0), None, "0.00"),
    ]);
    assert_eq!(r["owners"], expected, "{}", r["owners"]);
    assert_eq!(campaign(&r, "routed")["leads"]["owners"], expected);
    let table = report(&data, &[]);
    assert!(table.contains("Sales owners (all campaigns)"), "{table}");
    assert_csv_holds_the_json(
        &report(&data, &["--json"]),
        &report(&data, &["--csv"]),
        true,
    );

    // Each lead says who has it and which rule chose them; so does each hand-off action.
    let rows: Value = serde_json::from_str(&report(&data, &["--leads", "--json"])).unwrap();
    let mut leads = texts(&rows, &["contactId", "owner", "assignedBy", "status"]);
    leads.sort();
    assert_eq!(
        leads,
        [
            ["e1", "kim", "key-accounts", "BREACHED"],
            ["n1", "ann", "north-turns", "WON"],
            ["n2", "ben", "north-turns", "BREACHED"],
            ["n3", "ann", "north-turns", "BREACHED"],
            ["s1", "eve", "south-load", "ACCEPTED"],
            ["s2", "eve", "south-load", "LOST"],
            ["w1", "desk", "fallback", "BREACHED"],
        ]
    );
    let actions = std::fs::read_to_string(dir.path().join("actions.jsonl")).unwrap();
    let handoff = actions
        .lines()
        .find(|l| l.contains("ACTION_KIND_SALES_HANDOFF") && l.contains(r#""contactId":"s2""#))
        .expect("s2's hand-off");
    assert!(
        handoff.contains(r#""owner":"eve""#) && handoff.contains(r#""assigned_by":"south-load""#),
        "{handoff}"
    );
    let s1 = canvass_tests::store(std::path::Path::new(&data))
        .contact(canvass_store::EMBEDDED_PARTITION, "s1")
        .unwrap()
        .expect("s1's state");
    let history: Vec<(&str, &str)> = s1.opportunities[0]
        .assignments
        .iter()
        .map(|a| (a.owner.as_str(), a.rule.as_str()))
        .collect();
    assert_eq!(history, [("dan", "south-load"), ("eve", "south-load")]);

    // The refused commands are parked with the field and the reason.
    let out = canvass(&["dead-letters", "--data", &data, "list"]);
    let letters = stdout(&out);
    for reason in [
        "teams[0].members: team `empty` has nobody in it",
        "assignment.rules[0].team: team `north` is not in the policy (teams)",
    ] {
        assert!(letters.contains(reason), "{reason} in\n{letters}");
    }

    // Over four partitions each partition balances its own leads: fixed rules and fallbacks
    // choose the same, team leads stay in their team, and the totals are the same.
    let four = tempfile::tempdir().unwrap();
    let data = run_input_with(four.path(), &routed_input(), &["--partitions", "4"]);
    let r4: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    let total = |r: &Value, field: &str| -> u64 {
        r["owners"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o[field].as_u64().unwrap())
            .sum()
    };
    for field in ["assigned", "open", "accepted", "breached", "won", "lost"] {
        assert_eq!(total(&r4, field), total(&r, field), "{field}");
    }
    let rows: Value = serde_json::from_str(&report(&data, &["--leads", "--json"])).unwrap();
    for lead in texts(&rows, &["contactId", "owner"]) {
        let allowed: &[&str] = match lead[0].chars().next() {
            Some('n') => &["ann", "ben"],
            Some('s') => &["dan", "eve"],
            Some('e') => &["kim"],
            _ => &["desk"],
        };
        assert!(allowed.contains(&lead[1].as_str()), "{lead:?}");
    }
}

/// The catalog: spring-mail v1 put by a designer and approved by a manager; "mats" mails
/// m1 and m2 at launch (v1, 0.10 EUR each). Day 1: v2 put and approved. Day 2: m1 asks
/// again and gets v2 (the newest approved); m1's v2 and m2's v1 (named by template) are
/// delivered. Day 3: m2 opens v1; m1 buys for 40: last touch v2, first touch v1. Day 4: v1
/// retired. Refused: a campaign naming a material not in the catalog, approval by the
/// author, a campaign pinning the retired version.
fn materials_input() -> String {
    let mats = |id: &str, material: Value| {
        json!({
            "id": id, "version": 1, "initialState": "mail",
            "audience": {"filter": "true"},
            "states": [
                {"id": "mail", "actions": [{"kind": "ACTION_KIND_EMAIL", "material": material["id"],
                  "materialVersion": material["version"]}],
                 "transitions": [{"to": "mail", "onEvent": {"type": "again"}}]}
            ],
            "budget": {"currency": "EUR", "costPerAction": {"EMAIL": "0.10"}}
        })
    };
    let draft = |version: u32| {
        json!({"actor": "designer", "putMaterial": {"materialId": "spring-mail", "version": version,
            "channel": "ACTION_KIND_EMAIL", "contentRef": format!("cms://spring/{version}")}})
    };
    let approve = |actor: &str, version: u32| json!({"actor": actor, "approveMaterial": {"materialId": "spring-mail", "version": version}});
    let v = json!({"campaignId": "mats", "version": 1});
    let mut lines = vec![
        json!({"at": T0, "command": {"actor": "marketer",
            "putSpec": mats("ghostly", json!({"id": "ghost", "version": 0}))}}),
        json!({"at": T0, "command": draft(1)}),
        json!({"at": T0, "command": approve("designer", 1)}),
        json!({"at": T0, "command": approve("manager", 1)}),
        json!({"at": T0, "command": {"actor": "marketer",
            "putSpec": mats("mats", json!({"id": "spring-mail", "version": 0}))}}),
        json!({"at": T0, "command": {"actor": "marketer", "submit": v}}),
        json!({"at": T0, "command": {"actor": "manager", "approve": v}}),
        json!({"at": T0, "contact": {"id": "m1"}}),
        json!({"at": T0, "contact": {"id": "m2"}}),
        json!({"at": T0, "command": {"actor": "ops", "launch": "mats"}}),
        json!({"at": day(1), "command": draft(2)}),
        json!({"at": day(1), "command": approve("manager", 2)}),
    ];
    let on = |id: &str, kind: &str, contact: &str, d: u32, attrs: Value| {
        event(
            id,
            kind,
            contact,
            &day(d),
            json!({"campaignId": "mats", "attrs": attrs}),
        )
    };
    lines.push(on("g1", "again", "m1", 2, json!({})));
    lines.push(on("d1", "action.delivered", "m1", 2, json!({})));
    lines.push(on(
        "d2",
        "action.delivered",
        "m2",
        2,
        json!({"template": "spring-mail"}),
    ));
    lines.push(on("o2", "email.opened", "m2", 3, json!({})));
    lines.push(event(
        "p1",
        "purchase",
        "m1",
        &day(3),
        json!({"attrs": {"amount": "40"}}),
    ));
    lines.push(json!({"at": day(4), "command": {"actor": "manager",
        "retireMaterial": {"materialId": "spring-mail", "version": 1}}}));
    lines.push(json!({"at": day(4), "command": {"actor": "marketer",
        "putSpec": mats("pinned", json!({"id": "spring-mail", "version": 1}))}}));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn each_material_version_is_reported_apart_and_the_catalog_guards_campaigns() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_input(dir.path(), &materials_input());
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();
    let rows = &campaign(&r, "mats")["materials"];
    let figures: Vec<Value> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            json!([
                m["material"],
                m["template"],
                m["version"],
                m["sent"],
                m["delivered"],
                m["cost"],
                m["engagement"]["opens"],
                m["conversions"],
                m["revenue"]
            ])
        })
        .collect();
    assert_eq!(
        figures,
        [
            json!([
                "spring-mail@v1",
                "spring-mail",
                1,
                2,
                1,
                "0.20",
                1,
                1,
                "0.00"
            ]),
            json!([
                "spring-mail@v2",
                "spring-mail",
                2,
                1,
                1,
                "0.10",
                0,
                1,
                "40.00"
            ]),
        ],
        "{rows}"
    );
    let first: Value =
        serde_json::from_str(&report(&data, &["--json", "--model", "first-touch"])).unwrap();
    let revenue: Vec<&Value> = campaign(&first, "mats")["materials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| &m["revenue"])
        .collect();
    assert_eq!(revenue, [&json!("40.00"), &json!("0.00")]);
    // Each action says which version it sent.
    let actions = std::fs::read_to_string(dir.path().join("actions.jsonl")).unwrap();
    let sent: Vec<(String, u64)> = actions
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|a| a["campaignId"] == "mats")
        .map(|a| {
            (
                a["contactId"].as_str().unwrap().to_string(),
                a["materialVersion"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(sent, [("m1".into(), 1), ("m2".into(), 1), ("m1".into(), 2)]);
    let table = report(&data, &[]);
    assert!(
        table.contains("spring-mail") && table.contains("v2"),
        "{table}"
    );
    assert_csv_holds_the_json(
        &report(&data, &["--json"]),
        &report(&data, &["--csv"]),
        true,
    );

    let out = canvass(&["dead-letters", "--data", &data, "list"]);
    let letters = stdout(&out);
    for reason in [
        "states[0].actions[0].material: material `ghost` is not in the catalog",
        "`designer` wrote version 1 of material `spring-mail` and cannot approve it",
        "states[0].actions[0].material: material `spring-mail` is retired",
    ] {
        assert!(letters.contains(reason), "{reason} in\n{letters}");
    }
}

/// What statsmodels and scipy say of each `[arm successes, arm trials, holdout successes,
/// holdout trials]` (tests/stats/reference.py in the venv of scripts/stats-reference.sh).
fn reference(tables: &[[u64; 4]]) -> Vec<Value> {
    use canvass_tests::OutputWithin;
    let root = canvass_tests::repo_root();
    let setup = std::process::Command::new(root.join("scripts/stats-reference.sh"))
        .output_within(canvass_tests::HUNG)
        .expect("scripts/stats-reference.sh runs");
    assert!(
        setup.status.success(),
        "the statistics reference cannot be set up: {}",
        stderr(&setup)
    );
    let python = stdout(&setup).trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("tables.json");
    std::fs::write(&input, serde_json::to_string(tables).unwrap()).unwrap();
    let out = std::process::Command::new(python)
        .arg(root.join("tests/stats/reference.py"))
        .arg(&input)
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert!(out.status.success(), "reference.py: {}", stderr(&out));
    serde_json::from_str::<Value>(&stdout(&out))
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

fn near(actual: f64, expected: &Value, what: &str) {
    let expected = expected.as_f64().unwrap();
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: canvass {actual}, reference {expected}"
    );
}

/// `[arm successes, arm trials, holdout successes, holdout trials]` as the two sides.
fn sides(
    t: [u64; 4],
) -> (
    canvass_report::significance::Proportion,
    canvass_report::significance::Proportion,
) {
    use canvass_report::significance::Proportion;
    (
        Proportion {
            successes: t[0],
            trials: t[1],
        },
        Proportion {
            successes: t[2],
            trials: t[3],
        },
    )
}

#[test]
fn significance_agrees_with_statsmodels_and_scipy() {
    use canvass_report::significance::{Test, compare, wilson};
    let tables: [[u64; 4]; 12] = [
        [120, 1000, 100, 1000],
        [60, 500, 40, 520],
        [5, 40, 15, 40],
        [3, 10, 0, 10],
        [1, 4, 0, 3],
        [0, 200, 7, 200],
        [0, 10, 0, 10],
        [10, 10, 10, 10],
        [50, 500, 50, 500],
        [999, 1000, 990, 1000],
        [2, 2000, 9, 2100],
        [30, 30, 0, 1],
    ];
    let expected = reference(&tables);
    for (t, want) in tables.iter().zip(&expected) {
        let (arm, holdout) = sides(*t);
        let at = format!("{t:?}");
        let a = wilson(arm).unwrap();
        let h = wilson(holdout).unwrap();
        near(a.low, &want["arm"][0], &format!("{at} arm low"));
        near(a.high, &want["arm"][1], &format!("{at} arm high"));
        near(h.low, &want["holdout"][0], &format!("{at} holdout low"));
        near(h.high, &want["holdout"][1], &format!("{at} holdout high"));
        let c = compare(arm, holdout).unwrap();
        near(
            c.difference.low,
            &want["difference"][0],
            &format!("{at} low"),
        );
        near(
            c.difference.high,
            &want["difference"][1],
            &format!("{at} high"),
        );
        let p = match c.test {
            Test::FisherExact => &want["fisherP"],
            Test::TwoProportionZ => &want["zP"],
        };
        near(c.p_value, p, &format!("{at} p ({:?})", c.test));
        assert_eq!(
            c.needed_per_arm,
            want["needed"].as_u64(),
            "{at} needed per arm"
        );
    }
    // Cochran's rule picks the test: every expected count at least 5, or Fisher's.
    let test = |t: [u64; 4]| {
        let (arm, holdout) = sides(t);
        compare(arm, holdout).unwrap().test
    };
    assert_eq!(test([120, 1000, 100, 1000]), Test::TwoProportionZ);
    assert_eq!(test([5, 40, 15, 40]), Test::TwoProportionZ);
    assert_eq!(test([3, 10, 0, 10]), Test::FisherExact);
    assert_eq!(test([1, 300, 4, 300]), Test::FisherExact);
}

/// 400 contacts in "wide" (20 % held out, two variants), the first 24 of them in "pilot"
/// (half held out): every arm's interval, p-value and sample need as the reference computes
/// them from the arm's own counts, the small arm warned about, and the table says the same.
#[test]
fn every_arm_carries_its_uplift_confidence() {
    let split = |id: &str, filter: &str, holdout: u32, variants: Value| {
        json!({
            "id": id, "version": 1, "initialState": "mail",
            "audience": {"filter": filter},
            "split": {"seed": 7, "holdoutBasisPoints": holdout, "variants": variants},
            "states": [{"id": "mail", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": id}],
                        "terminal": true}]
        })
    };
    let specs = [
        split(
            "wide",
            "true",
            2000,
            json!([{"id": "a", "weight": 1}, {"id": "b", "weight": 1}]),
        ),
        split(
            "pilot",
            "contact.attrs.batch == 'first'",
            5000,
            json!([{"id": "p", "weight": 1}]),
        ),
    ];
    let mut lines = Vec::new();
    for i in 0..400 {
        let batch = if i < 24 { "first" } else { "later" };
        lines
            .push(json!({"at": T0, "contact": {"id": format!("c{i}"), "attrs": {"batch": batch}}}));
    }
    for spec in specs {
        let v = json!({"campaignId": spec["id"], "version": 1});
        lines.push(json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}));
        lines.push(json!({"at": T0, "command": {"actor": "marketer", "submit": v}}));
        lines.push(json!({"at": T0, "command": {"actor": "manager", "approve": v}}));
        lines.push(json!({"at": T0, "command": {"actor": "ops", "launch": spec["id"]}}));
    }
    for i in (0..400u32).filter(|&i| i % 5 == 0 || i % 7 == 0 || (i < 24 && i % 3 == 0)) {
        lines.push(event(
            &format!("buy{i}"),
            "purchase",
            &format!("c{i}"),
            &day(2),
            json!({"attrs": {"product": "B", "amount": "10"}}),
        ));
    }
    let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
    let dir = tempfile::tempdir().unwrap();
    let data = run_input(dir.path(), &text);
    let r: Value = serde_json::from_str(&report(&data, &["--json"])).unwrap();

    let mut tables = Vec::new();
    let mut treated = Vec::new();
    for id in ["wide", "pilot"] {
        let arms = campaign(&r, id)["arms"].as_array().unwrap();
        let holdout = arms
            .iter()
            .find(|a| a["arm"] == "holdout")
            .unwrap_or_else(|| panic!("{id} has a holdout: {arms:?}"));
        assert!(
            holdout.get("pValue").is_none(),
            "the holdout has no p-value"
        );
        assert!(holdout["conversionInterval"]["low"].is_f64());
        for arm in arms.iter().filter(|a| a["arm"] != "holdout") {
            let count = |a: &Value, f: &str| a[f].as_u64().unwrap();
            tables.push([
                count(arm, "converted"),
                count(arm, "enrolled"),
                count(holdout, "converted"),
                count(holdout, "enrolled"),
            ]);
            treated.push((id, arm.clone()));
        }
    }
    assert_eq!(treated.len(), 3, "a, b and p: {r}");
    let expected = reference(&tables);
    for ((id, arm), want) in treated.iter().zip(&expected) {
        let at = format!("{id}/{}", arm["arm"]);
        let test = arm["test"].as_str().unwrap();
        let p = if test == "fisherExact" {
            &want["fisherP"]
        } else {
            assert_eq!(test, "twoProportionZ", "{at}");
            &want["zP"]
        };
        near(arm["pValue"].as_f64().unwrap(), p, &format!("{at} p"));
        let interval = &arm["upliftInterval"];
        near(
            interval["low"].as_f64().unwrap() / 100.0,
            &want["difference"][0],
            &format!("{at} uplift low (pp)"),
        );
        near(
            interval["high"].as_f64().unwrap() / 100.0,
            &want["difference"][1],
            &format!("{at} uplift high (pp)"),
        );
        near(
            arm["conversionInterval"]["low"].as_f64().unwrap(),
            &want["arm"][0],
            &format!("{at} rate low"),
        );
        assert_eq!(
            arm["neededPerArm"].as_u64(),
            want["needed"].as_u64(),
            "{at}"
        );
        let smallest = arm["enrolled"].as_u64().unwrap().min(
            tables[treated
                .iter()
                .position(|(i, a)| i == id && a == arm)
                .unwrap()][3],
        );
        assert_eq!(
            arm.get("warning").is_some(),
            want["needed"].as_u64().is_some_and(|n| smallest < n),
            "{at}: a warning exactly when a side is smaller than needed: {arm}"
        );
    }
    let pilot = &treated.iter().find(|(id, _)| *id == "pilot").unwrap().1;
    assert_eq!(pilot["test"], "fisherExact", "12 against 12: {pilot}");
    assert!(pilot["warning"].as_str().unwrap().contains("per side"));

    let table = report(&data, &[]);
    assert!(table.contains("95% CI (pp)"), "{table}");
    assert!(table.contains("Arm p: too few contacts"), "{table}");
    let csv_text = report(&data, &["--csv"]);
    assert!(csv_text.contains("wide,arms,a,pValue,"), "{csv_text}");
    assert!(
        csv_text.contains("wide,arms,a,upliftInterval.low,"),
        "{csv_text}"
    );
}

/// The fixture plus survey answers, complaints and faults, and three malformed ones.
fn satisfaction_input() -> String {
    let answer = |id: &str, contact: &str, campaign: &str, score: Value, day_n: u32| {
        event(
            id,
            "survey.answered",
            contact,
            &day(day_n),
            json!({"campaignId": campaign, "attrs": {"score": score}}),
        )
    };
    let concern = |id: &str, kind: &str, contact: &str, extra: Value, day_n: u32| {
        event(id, kind, contact, &day(day_n), extra)
    };
    let lines = [
        answer("s1", "c1", "spring", json!(10), 1),
        answer("s2", "c1", "spring", json!(6), 4),
        answer("s3", "c2", "spring", json!("9"), 2),
        answer("s4", "c3", "autumn", json!(7), 3),
        answer("s5", "c3", "spring", json!(3), 3),
        concern(
            "k1",
            "complaint",
            "c2",
            json!({"campaignId": "spring", "attrs": {"product": "B"}}),
            5,
        ),
        concern("k2", "complaint", "c2", json!({}), 6),
        // A CRM sync of c2's profile keeps what c2 said.
        json!({"at": day(6), "contact": {"id": "c2", "attrs": {"region": "south"}}}),
        concern(
            "f1",
            "fault.reported",
            "c3",
            json!({"attrs": {"product": "B"}}),
            6,
        ),
        concern(
            "f2",
            "fault.reported",
            "c1",
            json!({"attrs": {"product": "Z"}}),
            7,
        ),
        // Refused: a score out of range, an unknown campaign, an answer about no campaign.
        answer("bad1", "c1", "spring", json!(11), 8),
        concern(
            "bad2",
            "complaint",
            "c1",
            json!({"campaignId": "winter"}),
            8,
        ),
        event(
            "bad3",
            "survey.answered",
            "c2",
            &day(8),
            json!({"attrs": {"score": 8}}),
        ),
        json!({"at": day(8), "contact": {"id": "c1", "surveys": [{"campaignId": "spring", "score": 42}]}}),
    ];
    let extra: String = lines.iter().map(|l| format!("{l}\n")).collect();
    fixture_input() + &extra
}

fn row<'a>(rows: &'a Value, by: &str, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["by"] == by && r["name"] == name)
        .unwrap_or_else(|| panic!("no {by} {name} in {rows}"))
}

/// Worked by hand. Respondents (a contact's latest answer per campaign): c1/spring 6 (its 10
/// was replaced), c2/spring 9, c3/autumn 7, c3/spring 3. Tiers (value): c1 A, c3 C, c2 D.
/// Complaints: c2 twice (one naming spring and product B); faults: c3 on B, c1 on Z (which it
/// never bought); a later sync of c2's profile keeps them. Segments: loyal (spring: c1, c2,
/// c3), new (autumn: c3).
#[test]
fn satisfaction_complaints_and_faults_of_a_hand_worked_fixture() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_input(dir.path(), &satisfaction_input());
    let r: Value = serde_json::from_str(&report(&data, &["--value", "--json"])).unwrap();
    let s = &r["satisfaction"];
    // (by, name, respondents, mean, [promoters, passives, detractors], nps)
    type Expected<'a> = (&'a str, &'a str, u64, f64, [u64; 3], f64);
    let expected: [Expected; 9] = [
        ("all", "all", 4, 6.25, [1, 1, 2], -25.0),
        ("campaign", "spring", 3, 6.0, [1, 0, 2], -100.0 / 3.0),
        ("campaign", "autumn", 1, 7.0, [0, 1, 0], 0.0),
        ("segment", "loyal", 3, 6.0, [1, 0, 2], -100.0 / 3.0),
        ("segment", "new", 1, 7.0, [0, 1, 0], 0.0),
        ("tier", "A", 1, 6.0, [0, 0, 1], -100.0),
        ("tier", "C", 2, 5.0, [0, 1, 1], -50.0),
        ("tier", "D", 1, 9.0, [1, 0, 0], 100.0),
        ("period", "2026-03-14T09:00:00Z", 4, 6.25, [1, 1, 2], -25.0),
    ];
    for (by, name, respondents, mean, [p, n, d], nps) in expected {
        let got = row(s, by, name);
        assert_eq!(got["respondents"], respondents, "{by} {name}: {got}");
        assert!(close(&got["mean"], mean), "{by} {name} mean: {got}");
        assert_eq!(
            [&got["promoters"], &got["passives"], &got["detractors"]],
            [p, n, d],
            "{by} {name}: {got}"
        );
        assert!(close(&got["nps"], nps), "{by} {name} nps: {got}");
    }
    assert_eq!(
        row(s, "all", "all")["distribution"],
        json!([0, 0, 0, 1, 0, 0, 1, 1, 0, 1, 0])
    );
    // An empty tier says "no data", never a division by zero.
    let b = row(s, "tier", "B");
    assert_eq!(b["respondents"], 0);
    assert!(b.get("mean").is_none() && b.get("nps").is_none(), "{b}");

    let c = &r["concerns"];
    // (by, name, contacts, complaints, complainants, faults, fault reporters)
    let expected: [(&str, &str, u64, u64, u64, u64, u64); 10] = [
        ("all", "all", 3, 2, 1, 2, 2),
        ("segment", "loyal", 3, 2, 1, 2, 2),
        ("segment", "new", 1, 0, 0, 1, 1),
        ("tier", "A", 1, 0, 0, 1, 1),
        ("tier", "B", 0, 0, 0, 0, 0),
        ("tier", "C", 1, 0, 0, 1, 1),
        ("tier", "D", 1, 2, 1, 0, 0),
        ("product", "B", 3, 1, 1, 1, 1),
        ("product", "Z", 1, 0, 0, 1, 1),
        ("period", "2026-03-14T09:00:00Z", 3, 2, 1, 2, 2),
    ];
    for (by, name, contacts, complaints, complainants, faults, reporters) in expected {
        let got = row(c, by, name);
        let counts = [
            "contacts",
            "complaints",
            "complainants",
            "faults",
            "faultReporters",
        ]
        .map(|f| got[f].as_u64().unwrap());
        assert_eq!(
            counts,
            [contacts, complaints, complainants, faults, reporters],
            "{by} {name}: {got}"
        );
        #[allow(clippy::cast_precision_loss)]
        let rate = |n: u64| (contacts > 0).then(|| n as f64 / contacts as f64);
        for (field, n) in [("complaintRate", complainants), ("faultRate", reporters)] {
            match rate(n) {
                Some(expected) => {
                    assert!(close(&got[field], expected), "{by} {name} {field}: {got}")
                }
                None => assert!(got.get(field).is_none(), "{by} {name} {field}: {got}"),
            }
        }
    }

    // The malformed ones are parked with their reasons, the rest of the stream applied.
    let out = canvass(&["dead-letters", "--data", &data, "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let letters = stdout(&out);
    for reason in [
        "field `event.attrs.score`: 11 is out of range",
        "field `event.campaignId`: no campaign `winter`",
        "field `event.campaignId`: required for a `survey.answered` event",
        "field `contact.surveys[0].score`: 42 is out of range",
    ] {
        assert!(letters.contains(reason), "{reason} in\n{letters}");
    }
    let table = report(&data, &["--value"]);
    assert!(table.contains("NPS"), "{table}");
    assert!(table.contains("complaint rate"), "{table}");
}

/// "news" mails everyone template news-1, and news-2 a week later (0.10 EUR each).
/// Day 0: n1, n2, n3 delivered, n4 bounced. Day 1: n1 opens twice and clicks, n2 opens and
/// reports spam, n3 unsubscribes (all of news-1, the latest message). Day 7: news-2 to all
/// four. Day 8: n1's news-2 delivered and opened (a new message: unique again); n2 opens
/// news-1 again, named by its key (not unique). Day 9: n1 buys for 40, credited to news-2
/// (sent two days before). Day 60: n3 buys for 15, past every window: unattributed.
fn engagement_input() -> String {
    let spec = json!({
        "id": "news", "version": 1, "initialState": "first",
        "audience": {"filter": "true"},
        "states": [
            {"id": "first", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "news-1"}],
             "transitions": [{"to": "second", "after": "604800s"}]},
            {"id": "second", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "news-2"}],
             "terminal": true}
        ],
        "budget": {"currency": "EUR", "costPerAction": {"EMAIL": "0.10"}}
    });
    let v = json!({"campaignId": "news", "version": 1});
    let mut lines = Vec::new();
    for id in ["n1", "n2", "n3", "n4"] {
        lines.push(json!({"at": T0, "contact": {"id": id}}));
    }
    lines.push(json!({"at": T0, "command": {"actor": "marketer", "putSpec": spec}}));
    lines.push(json!({"at": T0, "command": {"actor": "marketer", "submit": v}}));
    lines.push(json!({"at": T0, "command": {"actor": "manager", "approve": v}}));
    lines.push(json!({"at": T0, "command": {"actor": "ops", "launch": "news"}}));
    let mut n = 0;
    let mut touch = |kind: &str, contact: &str, day_n: u32, attrs: Value| {
        n += 1;
        event(
            &format!("t{n}"),
            kind,
            contact,
            &day(day_n),
            json!({"campaignId": "news", "attrs": attrs}),
        )
    };
    for c in ["n1", "n2", "n3"] {
        lines.push(touch("action.delivered", c, 0, json!({})));
    }
    lines.push(touch("action.bounced", "n4", 0, json!({})));
    lines.push(touch("email.opened", "n1", 1, json!({})));
    lines.push(touch("email.opened", "n1", 1, json!({})));
    lines.push(touch("link.clicked", "n1", 1, json!({})));
    lines.push(touch("email.opened", "n2", 1, json!({})));
    lines.push(touch("spam.reported", "n2", 1, json!({})));
    lines.push(touch("unsubscribed", "n3", 1, json!({})));
    lines.push(touch("action.delivered", "n1", 8, json!({})));
    lines.push(touch("email.opened", "n1", 8, json!({})));
    lines.push(touch(
        "email.opened",
        "n2",
        8,
        json!({"idempotencyKey": "news/v1/e1/a0/n2"}),
    ));
    lines.push(event(
        "buy",
        "purchase",
        "n1",
        &day(9),
        json!({"attrs": {"product": "B", "amount": "40"}}),
    ));
    // Past every window: revenue no campaign is credited with.
    lines.push(event(
        "late-buy",
        "purchase",
        "n3",
        "2026-05-31T09:00:00Z",
        json!({"attrs": {"product": "B", "amount": "15"}}),
    ));
    lines.iter().map(|l| format!("{l}\n")).collect()
}

#[test]
fn engagement_and_unit_economics_of_a_hand_worked_campaign() {
    let dir = tempfile::tempdir().unwrap();
    let data = run_input(dir.path(), &engagement_input());
    let json_text = report(&data, &["--json"]);
    let r: Value = serde_json::from_str(&json_text).unwrap();
    let c = campaign(&r, "news");
    // (opens, unique opens, clicks, unique clicks, unsubscribes, spam) and the rates
    // (delivery, open, click, click-to-open, unsubscribe, spam).
    let check = |e: &Value, counts: [u64; 6], rates: [Option<f64>; 6], what: &str| {
        let got = [
            "opens",
            "uniqueOpens",
            "clicks",
            "uniqueClicks",
            "unsubscribes",
            "spamReports",
        ]
        .map(|f| e[f].as_u64().unwrap());
        assert_eq!(got, counts, "{what}: {e}");
        for (field, rate) in [
            "deliveryRate",
            "openRate",
            "clickRate",
            "clickToOpenRate",
            "unsubscribeRate",
            "spamRate",
        ]
        .iter()
        .zip(rates)
        {
            match rate {
                Some(rate) => assert!(close(&e[*field], rate), "{what} {field}: {e}"),
                None => assert!(e.get(*field).is_none(), "{what} {field}: {e}"),
            }
        }
    };
    let all_rates = [
        Some(0.5),
        Some(0.75),
        Some(0.25),
        Some(1.0 / 3.0),
        Some(0.25),
        Some(0.25),
    ];
    check(&c["engagement"], [5, 3, 1, 1, 1, 1], all_rates, "campaign");
    let email = c["actions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "EMAIL")
        .unwrap();
    check(&email["engagement"], [5, 3, 1, 1, 1, 1], all_rates, "EMAIL");
    let materials = c["materials"].as_array().unwrap();
    assert_eq!(
        texts(&c["materials"], &["template", "cost"]),
        [["news-1", "0.40"], ["news-2", "0.40"]]
    );
    assert_eq!(
        (&materials[0]["sent"], &materials[0]["delivered"]),
        (&json!(4), &json!(3))
    );
    check(
        &materials[0]["engagement"],
        [4, 2, 1, 1, 1, 1],
        [
            Some(0.75),
            Some(2.0 / 3.0),
            Some(1.0 / 3.0),
            Some(0.5),
            Some(1.0 / 3.0),
            Some(1.0 / 3.0),
        ],
        "news-1",
    );
    check(
        &materials[1]["engagement"],
        [1, 1, 0, 0, 0, 0],
        [
            Some(0.25),
            Some(1.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
            Some(0.0),
        ],
        "news-2",
    );
    let e = &c["economics"];
    assert_eq!(e["costPerConversion"], "0.80", "{e}");
    assert!(close(&e["returnOnSpend"], 50.0), "{e}");
    assert_eq!(e["averageOrderValue"], "40.00", "{e}");
    assert_eq!(e["revenuePerRecipient"], "10.00", "{e}");
    // Two days from news-2 to the purchase: the bucket up to three days.
    assert_eq!(e["timeToConvertP50Ms"], 259_200_000, "{e}");
    assert_eq!(
        r["revenue"],
        json!({"total": "55.00", "events": 2, "attributed": "40.00", "attributedEvents": 1,
               "unattributed": "15.00"})
    );

    let weeks = c["weeks"].as_array().unwrap();
    assert_eq!(
        texts(&c["weeks"], &["period", "cost", "revenue"]),
        [["2026-W14", "0.40", "0.00"], ["2026-W15", "0.40", "40.00"]]
    );
    let counts = |w: &Value| {
        [
            "enrollments",
            "sent",
            "delivered",
            "uniqueOpens",
            "uniqueClicks",
            "conversions",
        ]
        .map(|f| w[f].as_u64().unwrap())
    };
    assert_eq!(counts(&weeks[0]), [4, 4, 3, 2, 1, 0]);
    assert_eq!(counts(&weeks[1]), [0, 4, 1, 1, 0, 1]);
    assert_eq!(
        weeks[0]["change"],
        json!({}),
        "the first week has none before it"
    );
    let change = &weeks[1]["change"];
    for (field, expected) in [
        ("enrollments", -1.0),
        ("sent", 0.0),
        ("uniqueOpens", -0.5),
        ("uniqueClicks", -1.0),
    ] {
        assert!(close(&change[field], expected), "{field}: {change}");
    }
    // Nothing the week before to compare with: no figure, not an infinity.
    assert!(change.get("conversions").is_none() && change.get("revenue").is_none());
    assert_eq!(texts(&c["months"], &["period"]), [["2026-04"]]);

    assert_csv_holds_the_json(&json_text, &report(&data, &["--csv"]), true);
    let table = report(&data, &[]);
    for expected in [
        "click-to-open",
        "news-2",
        "2026-W15",
        "return on spend 50.00x",
        "15.00 unattributed",
    ] {
        assert!(table.contains(expected), "{expected} in\n{table}");
    }
}
