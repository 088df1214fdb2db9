//! The example Python client (examples/python, generated from proto/ with grpcio-tools by
//! scripts/python-client.sh) against the real binary over loopback gRPC: it writes, submits,
//! approves and launches a campaign, upserts contacts, streams and acknowledges the actions,
//! and reads the reports.

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::process::Command;

use canvass_tests::OutputWithin;
use canvass_tests::{
    api::{APPROVER, MARKETER, OPERATOR, READER, SERVICE, settings},
    repo_root, start_ready,
};
use serde_json::Value;

#[test]
fn the_python_client_runs_a_campaign_end_to_end() {
    let root = repo_root();
    let setup = Command::new(root.join("scripts/python-client.sh"))
        .output_within(canvass_tests::HUNG)
        .expect("scripts/python-client.sh runs");
    assert!(
        setup.status.success(),
        "the Python client cannot be set up: {}",
        String::from_utf8_lossy(&setup.stderr)
    );
    let python = String::from_utf8(setup.stdout).unwrap().trim().to_string();

    let dir = tempfile::tempdir().unwrap();
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(&grpc, settings()).unwrap();
    let spec = dir.path().join("mail.json");
    std::fs::write(
        &spec,
        r#"{"id": "py-mail", "version": 1, "name": "Mail from Python",
            "goal": "CAMPAIGN_GOAL_RETENTION", "owner": "crm",
            "audience": {"filter": "true"}, "initialState": "mailed",
            "states": [
              {"id": "mailed", "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "hi"}],
               "transitions": [{"to": "reached", "onEvent": {"type": "action.delivered"}}]},
              {"id": "reached", "responseGroup": "reached", "terminal": true, "goal": true}
            ]}"#,
    )
    .unwrap();
    let args = canvass_tests::args(&[
        "run",
        "--data",
        dir.path().join("data").to_str().unwrap(),
        "--grpc-config",
        grpc.to_str().unwrap(),
    ]);
    let mut running = start_ready(&args, true);
    let address = running.grpc.clone().unwrap();

    let out = Command::new(&python)
        .arg(root.join("examples/python/canvass_client.py"))
        .args([
            "--server",
            &address,
            "--spec",
            spec.to_str().unwrap(),
            "--contacts",
            "5",
        ])
        .env("PYTHONPATH", root.join("target/python/gen"))
        .env("CANVASS_MARKETER_TOKEN", MARKETER)
        .env("CANVASS_APPROVER_TOKEN", APPROVER)
        .env("CANVASS_OPERATOR_TOKEN", OPERATOR)
        .env("CANVASS_SERVICE_TOKEN", SERVICE)
        .env("CANVASS_READER_TOKEN", READER)
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert!(
        out.status.success(),
        "the Python client failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_slice(&out.stdout).unwrap();
    let actions = seen["actions"].as_array().unwrap();
    assert_eq!(actions.len(), 5, "{seen}");
    assert!(actions.iter().all(|a| a["kind"] == "ACTION_KIND_EMAIL"));
    let mut contacts: Vec<&str> = actions
        .iter()
        .map(|a| a["contact"].as_str().unwrap())
        .collect();
    contacts.sort_unstable();
    assert_eq!(contacts, ["py-0", "py-1", "py-2", "py-3", "py-4"]);
    assert_eq!(seen["counters"]["enrollments"], "5", "{seen}");
    assert_eq!(
        seen["performance"]["campaigns"][0]["id"], "py-mail",
        "{seen}"
    );
    assert_eq!(
        seen["typedCampaigns"],
        serde_json::json!(["py-mail"]),
        "{seen}"
    );
    assert!(seen["launchedAtSeq"].as_u64().unwrap() > 0);

    // The acknowledgements reached the campaign: everyone moved on, read here over the CLI.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let reached = Command::new(canvass_tests::canvass_bin())
            .args(["report", "--server", &format!("http://{address}"), "--json"])
            .env("CANVASS_TOKEN", READER)
            .output_within(canvass_tests::HUNG)
            .unwrap();
        let report: Value = serde_json::from_slice(&reached.stdout).unwrap_or_default();
        if report["campaigns"][0]["goals"] == 5 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{report}");
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let exit = running.child.terminate();
    assert!(exit.success(), "{exit}");
}
