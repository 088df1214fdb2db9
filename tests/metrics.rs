//! Prometheus metrics scraped from the real binary during real runs and parsed with a
//! Prometheus text-format parser, checked against what the run did: a file run of the
//! reference stream, and a gRPC engine pushing to the real example executor.

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use canvass_proto::v1;
use canvass_tests::{
    api::{
        MARKETER, READER, bare_contacts, connect, create_and_launch, req, settings_with,
        upsert_contacts,
    },
    executor::start_executor,
    reference_stream, sample, sample_sum, scrape, start_ready,
};
use serde_json::Value;

/// Scrapes until `ready` holds of the parsed metrics (a bound, not a proof: each check below
/// is of the values), and returns them with their text.
fn scrape_until(
    address: &str,
    what: &str,
    ready: impl Fn(&prometheus_parse::Scrape) -> bool,
) -> (prometheus_parse::Scrape, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (parsed, text) = scrape(address);
        if ready(&parsed) {
            return (parsed, text);
        }
        assert!(Instant::now() < deadline, "{what} never showed:\n{text}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The summary event of a stopped run.
fn summary(lines: &std::sync::mpsc::Receiver<String>) -> Value {
    lines
        .iter()
        .map(|l| serde_json::from_str::<Value>(&l).unwrap())
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("stopped:"))
        })
        .expect("a summary")["fields"]
        .clone()
}

/// The reference stream through a file run: inputs by source and kind, dead letters,
/// duplicates, timers, actions, commits and their histograms, and the sampled levels
/// (outbox, timers, contacts per state, budget spent) are what the run did and what its store
/// holds.
#[test]
fn a_scrape_during_a_file_run_says_what_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let stream = reference_stream(1);
    let input = dir.path().join("stream.jsonl");
    std::fs::write(&input, &stream).unwrap();
    let actions = dir.path().join("actions.jsonl");
    let data = dir.path().join("data");
    let args = canvass_tests::args(&[
        "run",
        "--data",
        data.to_str().unwrap(),
        "--input",
        input.to_str().unwrap(),
        "--actions",
        actions.to_str().unwrap(),
        "--clock",
        "event",
        "--follow",
        "--metrics-addr",
        "127.0.0.1:0",
    ]);
    let mut running = start_ready(&args, false);
    let address = running.metrics.clone().expect("the ready file says where");

    // What the stream holds, line by line, as the engine tells inputs apart.
    let (mut contacts, mut commands, mut events, mut malformed) = (0.0, 0.0, 0.0, 0.0);
    for line in stream.lines() {
        match serde_json::from_str::<Value>(line) {
            Ok(v) if v.get("contact").is_some() => contacts += 1.0,
            Ok(v) if v.get("command").is_some() => commands += 1.0,
            Ok(v) if v.get("event").is_some() => events += 1.0,
            _ => malformed += 1.0,
        }
    }
    let lines = stream.lines().count() as f64;
    let inputs = "canvass_inputs_total";
    let rounds = "canvass_metrics_samples_total";
    let (applied, _) = scrape_until(&address, "every line applied", |m| {
        sample_sum(m, inputs, &[("source", "file")]) == lines
    });
    // A round that started after the last commit has sampled the levels as they are now.
    let before = sample(&applied, rounds, &[]).unwrap_or(0.0);
    let (metrics, text) = scrape_until(&address, "two more sampling rounds", |m| {
        sample(m, rounds, &[]).is_some_and(|n| n >= before + 2.0)
    });
    let status = running.child.terminate();
    assert!(status.success(), "{status}");
    let stopped = summary(&running.lines);
    let figure = |name: &str| stopped[name].as_f64().unwrap();

    for (kind, count) in [
        ("contact", contacts),
        ("command", commands),
        ("event", events - malformed_events(&stream)),
    ] {
        assert_eq!(
            sample(&metrics, inputs, &[("source", "file"), ("kind", kind)]),
            Some(count),
            "{kind}"
        );
    }
    assert_eq!(
        sample_sum(&metrics, inputs, &[("kind", "malformed")]),
        malformed + malformed_events(&stream)
    );
    assert_eq!(
        sample_sum(&metrics, "canvass_dead_letters_total", &[]),
        figure("dead_letters")
    );
    assert_eq!(
        sample(&metrics, "canvass_duplicate_events_total", &[]),
        Some(figure("duplicates"))
    );
    assert_eq!(
        sample(&metrics, "canvass_timers_fired_total", &[]).unwrap_or(0.0),
        figure("timers_fired")
    );
    let written = std::fs::read_to_string(&actions).unwrap().lines().count() as f64;
    assert_eq!(figure("delivered"), written);
    assert_eq!(
        sample_sum(
            &metrics,
            "canvass_actions_done_total",
            &[("outcome", "copied")]
        ),
        written
    );
    assert_eq!(
        sample(&metrics, "canvass_actions_queued_total", &[]),
        Some(written)
    );
    assert_eq!(
        sample(
            &metrics,
            "canvass_actions_done_total",
            &[("kind", "EMAIL"), ("outcome", "copied")]
        ),
        Some(220.0),
        "the reference's emails"
    );
    // Commits and their histograms agree: as many timings as commits, every input in a batch.
    let commits = sample(&metrics, "canvass_commits_total", &[]).unwrap();
    assert!(commits >= 1.0);
    assert_eq!(
        sample(&metrics, "canvass_commit_duration_seconds_count", &[]),
        Some(commits)
    );
    assert_eq!(
        sample(&metrics, "canvass_batch_inputs_sum", &[]),
        Some(lines)
    );
    assert!(sample(&metrics, "canvass_flush_duration_seconds_count", &[]).unwrap() >= 1.0);
    assert!(
        text.contains("# TYPE canvass_commit_duration_seconds histogram"),
        "{text}"
    );
    assert!(text.contains("# HELP canvass_inputs_total "), "{text}");
    assert_eq!(sample(&metrics, "canvass_build_info", &[]), Some(1.0));

    // The sampled levels are what the store holds.
    let stores = canvass_tests::stores(&data);
    assert_eq!(
        sample(&metrics, "canvass_timers_pending", &[("partition", "0")]),
        Some(stores.partition(0).timers(None).count() as f64)
    );
    for campaign in ["b-trial-invite", "b-improvement-survey"] {
        let counters = canvass_engine::reports::counters(&stores, campaign).unwrap();
        for (state, c) in &counters.states {
            assert_eq!(
                sample(
                    &metrics,
                    "canvass_contacts",
                    &[("campaign", campaign), ("state", state)]
                ),
                Some(c.active as f64),
                "{campaign}/{state}"
            );
        }
        assert_eq!(
            sample(&metrics, "canvass_budget_spent", &[("campaign", campaign)]),
            Some(counters.cost.parse::<f64>().unwrap_or(0.0)),
            "{campaign}"
        );
    }
}

/// Event lines that are JSON but not an event the engine can decode (they count as
/// malformed inputs, not events).
fn malformed_events(stream: &str) -> f64 {
    stream
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v.get("event").is_some())
        .filter(|v| canvass_proto::json::from_str::<v1::IngestRecord>(&v.to_string()).is_err())
        .count() as f64
}

/// A gRPC engine (its metrics address in its settings file) pushing to the example executor:
/// calls are counted by method and status code, pushes by endpoint with their retries, and
/// results by kind and outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_and_pushes_are_counted_by_method_code_and_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let executor = start_executor(&["--fail-first", "1"]);
    let endpoint = format!("http://{}", executor.address);
    let mut config = settings_with("metrics_addr = \"127.0.0.1:0\"\n");
    config.push_str(&format!(
        "[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"{endpoint}\"\n"
    ));
    let grpc = dir.path().join("grpc.toml");
    std::fs::write(&grpc, config).unwrap();
    let args = canvass_tests::args(&[
        "run",
        "--data",
        dir.path().join("data").to_str().unwrap(),
        "--grpc-config",
        grpc.to_str().unwrap(),
        "--clock",
        "event",
    ]);
    let running = start_ready(&args, true);
    let address = running
        .metrics
        .clone()
        .expect("metrics_addr in the settings");
    let channel = connect(running.grpc.as_ref().unwrap()).await;
    upsert_contacts(&channel, bare_contacts((0..5).map(|i| format!("m-{i}")))).await;
    let spec: v1::CampaignSpec = canvass_proto::json::from_str(
        r#"{"id": "mail", "version": 1, "name": "Mail", "goal": "CAMPAIGN_GOAL_RETENTION",
            "owner": "crm", "audience": {"filter": "true"}, "initialState": "mailed",
            "states": [{"id": "mailed", "terminal": true,
                        "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "hello"}]}]}"#,
    )
    .unwrap();
    create_and_launch(&channel, spec).await;
    // A reader may not create campaigns.
    let refused =
        canvass_server::api::campaign_service_client::CampaignServiceClient::new(channel.clone())
            .create_campaign(req(READER, v1::CreateCampaignRequest::default()))
            .await
            .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    let _ = MARKETER;

    let metrics = tokio::task::spawn_blocking(move || {
        scrape_until(&address, "five emails delivered", |m| {
            sample(
                m,
                "canvass_actions_done_total",
                &[("kind", "EMAIL"), ("outcome", "delivered")],
            ) == Some(5.0)
        })
        .0
    })
    .await
    .unwrap();
    let requests = "canvass_grpc_requests_total";
    for method in [
        "CreateCampaign",
        "SubmitCampaign",
        "ApproveCampaign",
        "LaunchCampaign",
    ] {
        assert_eq!(
            sample(&metrics, requests, &[("method", method), ("code", "OK")]),
            Some(1.0),
            "{method}"
        );
    }
    assert_eq!(
        sample(
            &metrics,
            requests,
            &[("method", "CreateCampaign"), ("code", "PERMISSION_DENIED")]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "canvass_grpc_request_duration_seconds_count",
            &[("method", "LaunchCampaign")]
        ),
        Some(1.0)
    );
    // Each email refused once (UNAVAILABLE) before it went through.
    let at = [("endpoint", endpoint.as_str())];
    assert_eq!(
        sample(&metrics, "canvass_delivery_attempts_total", &at),
        Some(10.0)
    );
    assert_eq!(
        sample(&metrics, "canvass_delivery_retries_total", &at),
        Some(5.0)
    );
    assert_eq!(
        sample(&metrics, "canvass_delivery_endpoint_reachable", &at),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "canvass_inputs_total",
            &[("source", "delivery"), ("kind", "delivery_result")]
        ),
        Some(5.0)
    );
    assert_eq!(
        sample(
            &metrics,
            "canvass_inputs_total",
            &[("source", "grpc"), ("kind", "contact")]
        ),
        Some(5.0)
    );
    drop(running);
}
