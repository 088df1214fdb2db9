//! The gRPC API end to end: the real binary serving on loopback, driven by a real tonic
//! client; push delivery to the real example executor.

// Tests fail loudly on any unexpected value.
#![allow(clippy::unwrap_used)]

use std::{
    collections::{BTreeMap, BTreeSet},
    path::Path,
    process::{Command, Stdio},
    sync::mpsc::Receiver,
    time::{Duration, Instant},
};

use canvass_proto::{json, v1};
use canvass_server::api::{
    action_service_client::ActionServiceClient, campaign_service_client::CampaignServiceClient,
    contact_service_client::ContactServiceClient, ingest_service_client::IngestServiceClient,
    report_service_client::ReportServiceClient,
};
use canvass_tests::OutputWithin;
use canvass_tests::{
    KillOnDrop,
    api::{
        APPROVER, CALLERS, MARKETER, OPERATOR, READER, SERVICE, bare_contacts, connect, contacts,
        create_and_launch, req, settings_with, sha256_hex, spec, upsert_contacts,
    },
    canvass, example,
    executor::start_executor,
    start_ready, stderr, stdout,
};
use serde_json::Value;
use tonic::{Code, Request, Status, transport::Channel};
use tonic_types::StatusExt;

/// A running engine serving gRPC, killed when dropped.
struct Engine {
    child: KillOnDrop,
    _lines: Receiver<String>,
    address: String,
}

/// Writes the settings (any free port, every caller, the given extra TOML) and starts
/// `canvass run` with them on the event clock.
fn start_engine(dir: &Path, extra: &str) -> Engine {
    start_engine_with(dir, "", extra)
}

/// [`start_engine`] with more top-level settings (`top`) besides the tables (`extra`).
fn start_engine_with(dir: &Path, top: &str, extra: &str) -> Engine {
    let mut config = settings_with(top);
    config.push_str(extra);
    let config_path = dir.join("grpc.toml");
    std::fs::write(&config_path, config).unwrap();
    let args: Vec<String> = [
        "run",
        "--data",
        dir.join("data").to_str().unwrap(),
        "--grpc-config",
        config_path.to_str().unwrap(),
        "--clock",
        "event",
    ]
    .iter()
    .map(ToString::to_string)
    .collect();
    let running = start_ready(&args, true);
    let address = running
        .grpc
        .clone()
        .expect("the ready file says where it listens");
    Engine {
        child: running.child,
        _lines: running.lines,
        address,
    }
}

/// The reference events that parse and hold every required field, in time order. (Lines
/// that do not parse are the file sources' concern: a gRPC message is well-formed by
/// construction; an event lacking a required field is refused, tested apart.)
fn events() -> Vec<v1::TouchpointEvent> {
    let mut events: Vec<v1::TouchpointEvent> = std::fs::read_to_string(example("events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| json::from_str::<v1::TouchpointEvent>(l).ok())
        .filter(|e| !e.contact_id.is_empty() && !e.id.is_empty() && e.occurred_at.is_some())
        .collect();
    events.sort_by_key(|e| {
        e.occurred_at
            .as_ref()
            .map(|t| (t.seconds, t.nanos))
            .unwrap_or_default()
    });
    events
}

/// Pulls actions until `total` distinct keys have come and are acknowledged; returns them
/// by key. A key streamed twice must carry the same action.
async fn pull_all(channel: &Channel, total: usize) -> BTreeMap<String, v1::Action> {
    let mut actions = ActionServiceClient::new(channel.clone());
    let mut stream = actions
        .stream_actions(req(
            SERVICE,
            v1::StreamActionsRequest {
                kinds: Vec::new(),
                cursor: String::new(),
                ack_deadline_seconds: 30,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let mut seen: BTreeMap<String, v1::Action> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while seen.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, stream.message())
            .await
            .unwrap_or_else(|_| panic!("only {} of {total} actions came", seen.len()))
            .unwrap()
            .expect("the stream stays open");
        let action = message.action.unwrap();
        if let Some(before) = seen.get(&action.idempotency_key) {
            assert_eq!(before, &action, "two different actions under one key");
        }
        let outcome = if action.kind() == v1::ActionKind::SalesHandoff {
            v1::ExecutionOutcome::OpportunityCreated
        } else {
            v1::ExecutionOutcome::Delivered
        };
        let acked = actions
            .ack_actions(req(
                SERVICE,
                v1::AckActionsRequest {
                    results: vec![v1::ActionResult {
                        idempotency_key: action.idempotency_key.clone(),
                        outcome: outcome as i32,
                        detail: String::new(),
                        opportunity_id: format!("opp-{}", action.contact_id),
                    }],
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(acked.acknowledged, 1, "{acked:?}");
        seen.insert(action.idempotency_key.clone(), action);
    }
    seen
}

/// One page of a contact's history, as a reader sees it.
async fn contact_history(
    channel: &Channel,
    contact_id: &str,
    page_size: u32,
    page_token: String,
) -> v1::GetContactHistoryResponse {
    ContactServiceClient::new(channel.clone())
        .get_contact_history(req(
            READER,
            v1::GetContactHistoryRequest {
                contact_id: contact_id.to_string(),
                page_size,
                page_token,
            },
        ))
        .await
        .unwrap()
        .into_inner()
}

async fn group_members(channel: &Channel, campaign: &str, group: &str) -> Vec<String> {
    let mut contacts = ContactServiceClient::new(channel.clone());
    let mut members = Vec::new();
    let mut token = String::new();
    loop {
        let page = contacts
            .list_group_members(req(
                READER,
                v1::ListGroupMembersRequest {
                    campaign_id: campaign.into(),
                    group: group.into(),
                    page_size: 7,
                    page_token: token,
                },
            ))
            .await
            .unwrap()
            .into_inner();
        assert!(page.contact_ids.len() <= 7);
        members.extend(page.contact_ids);
        if page.next_page_token.is_empty() {
            return members;
        }
        token = page.next_page_token;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reference_campaign_runs_through_grpc_alone() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    let expected: Value =
        serde_json::from_str(&std::fs::read_to_string(example("expected.json")).unwrap()).unwrap();

    create_and_launch(&channel, spec("survey.json")).await;
    // The trial campaign is launched once the contacts are known (its audience is
    // evaluated at launch); it is created and approved now.
    let all = contacts();
    let n_contacts = all.len() as u64;
    assert_eq!(upsert_contacts(&channel, all).await, n_contacts);
    create_and_launch(&channel, spec("campaign.json")).await;

    let total: u64 = expected["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["actionsByKind"].as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    let puller = tokio::spawn({
        let channel = channel.clone();
        async move { pull_all(&channel, usize::try_from(total).unwrap()).await }
    });

    let mut ingest = IngestServiceClient::new(channel.clone());
    let messages: Vec<v1::IngestEventsRequest> = events()
        .into_iter()
        .map(|e| v1::IngestEventsRequest { event: Some(e) })
        .collect();
    let sent = messages.len() as u64;
    let ingested = ingest
        .ingest_events(req(SERVICE, tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        ingested.duplicates,
        expected["inputs"]["duplicateEvents"].as_u64().unwrap()
    );
    assert_eq!(ingested.accepted + ingested.duplicates, sent);

    // Sending an event again (within the dedupe window: the latest) is answered as a
    // duplicate, not applied twice.
    let again = ingest
        .ingest_event(req(
            SERVICE,
            v1::IngestEventRequest {
                event: events().into_iter().last(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(again.duplicate && again.seq == 0, "{again:?}");

    let actions = puller.await.unwrap();
    let mut by_kind: BTreeMap<(String, String), u64> = BTreeMap::new();
    for a in actions.values() {
        let kind = a.kind().as_str_name().trim_start_matches("ACTION_KIND_");
        *by_kind
            .entry((a.campaign_id.clone(), kind.to_string()))
            .or_default() += 1;
    }
    let mut reports = ReportServiceClient::new(channel.clone());
    let mut campaigns = CampaignServiceClient::new(channel.clone());
    for campaign in expected["campaigns"].as_array().unwrap() {
        let id = campaign["id"].as_str().unwrap();
        for (kind, count) in campaign["actionsByKind"].as_object().unwrap() {
            assert_eq!(
                by_kind.get(&(id.to_string(), kind.clone())).copied(),
                count.as_u64(),
                "{id}: {kind} actions pulled"
            );
        }
        let report = reports
            .get_campaign_report(req(
                READER,
                v1::GetCampaignReportRequest {
                    campaign_id: id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let sizes: BTreeMap<String, u64> = report
            .groups
            .iter()
            .map(|g| (g.group.clone(), g.contacts))
            .collect();
        for (group, count) in campaign["responseGroups"].as_object().unwrap() {
            let members = group_members(&channel, id, group).await;
            assert_eq!(
                members.len() as u64,
                count.as_u64().unwrap(),
                "{id}: {group}"
            );
            assert_eq!(sizes.get(group).copied(), count.as_u64(), "{id}: {group}");
            let mut sorted = members.clone();
            sorted.sort();
            sorted.dedup();
            assert_eq!(sorted, members, "pages in id order, no repeats");
        }
        // Acknowledgements are logged: every action delivered, none pending.
        let got = campaigns
            .get_campaign(req(
                READER,
                v1::GetCampaignRequest {
                    campaign_id: id.into(),
                },
            ))
            .await
            .unwrap()
            .into_inner();
        let counters = got.counters.unwrap();
        assert_eq!(counters.actions, counters.delivered, "{id}: {counters:?}");
        let lifecycle = got.lifecycle.unwrap();
        let actors: BTreeSet<&str> = lifecycle.history.iter().map(|h| h.actor.as_str()).collect();
        assert_eq!(
            actors,
            BTreeSet::from(["abe", "mia", "ola"]),
            "{id}: every change has its caller as actor"
        );
    }

    // One contact that rated the trial high: its state, and its history from the log.
    let member = group_members(&channel, "b-trial-invite", "rated_high").await[0].clone();
    let mut contacts_client = ContactServiceClient::new(channel.clone());
    let state = contacts_client
        .get_contact(req(
            READER,
            v1::GetContactRequest {
                contact_id: member.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .state
        .unwrap();
    assert!(
        state
            .campaigns
            .iter()
            .any(|j| j.campaign_id == "b-trial-invite" && j.response_group == "rated_high")
    );
    let history = contact_history(&channel, &member, 1000, String::new()).await;
    let types: Vec<String> = history
        .entries
        .iter()
        .filter_map(|e| match &e.input {
            Some(v1::log_entry::Input::Event(ev)) => Some(ev.r#type.clone()),
            _ => None,
        })
        .collect();
    assert!(types.contains(&"trial.rated".to_string()), "{types:?}");
    assert!(history.entries.iter().any(
        |e| matches!(&e.input, Some(v1::log_entry::Input::ContactUpsert(c)) if c.id == member)
    ));
    assert!(history.entries.windows(2).all(|w| w[0].seq < w[1].seq));
    // What a caller changed is logged with its identity; timers are nobody's.
    for e in &history.entries {
        match &e.input {
            Some(v1::log_entry::Input::Event(_) | v1::log_entry::Input::ContactUpsert(_)) => {
                assert_eq!(e.caller, "svc", "{e:?}");
            }
            Some(v1::log_entry::Input::TimerFired(_)) => assert_eq!(e.caller, "", "{e:?}"),
            _ => {}
        }
    }

    let spec_json = campaigns
        .get_campaign_spec(req(
            READER,
            v1::GetCampaignSpecRequest {
                campaign_id: "b-trial-invite".into(),
                version: 0,
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let round_trip: v1::CampaignSpec = json::from_str(&spec_json.json).unwrap();
    assert_eq!(Some(round_trip), spec_json.spec);
}

/// Which role may call which RPC, as the issue states it: reads for everyone; specs and
/// submission for marketers, approval for approvers, running for operators, ingest and
/// actions for services.
fn allowed(rpc: &str, role: &str) -> bool {
    const READS: &[&str] = &[
        "ValidateCampaign",
        "GetCampaign",
        "ListCampaigns",
        "GetCampaignSpec",
        "GetContact",
        "GetContactHistory",
        "ListGroupMembers",
        "GetCampaignReport",
        "GetPerformanceReport",
        "GetValueReport",
        "GetPolicy",
        "ListMaterials",
        "GetStatus",
        "ListDeadLetters",
        "GetDeadLetter",
    ];
    if READS.contains(&rpc) {
        return true;
    }
    let owner = match rpc {
        "CreateCampaign" | "NewCampaignVersion" | "SubmitCampaign" | "PutMaterial" => "marketer",
        "ApproveCampaign" | "RejectCampaign" | "ApproveMaterial" | "RetireMaterial" => "approver",
        "LaunchCampaign" | "PauseCampaign" | "ResumeCampaign" | "CompleteCampaign"
        | "StopCampaign" | "SetPolicy" | "RedriveDeadLetters" => "operator",
        "UpsertContact" | "UpsertContacts" | "IngestEvent" | "IngestEvents" | "StreamActions"
        | "AckActions" => "service",
        other => panic!("unknown RPC {other}"),
    };
    owner == role
}

const RPCS: &[&str] = &[
    "CreateCampaign",
    "ValidateCampaign",
    "GetCampaign",
    "ListCampaigns",
    "SubmitCampaign",
    "ApproveCampaign",
    "RejectCampaign",
    "LaunchCampaign",
    "PauseCampaign",
    "ResumeCampaign",
    "CompleteCampaign",
    "StopCampaign",
    "NewCampaignVersion",
    "GetCampaignSpec",
    "UpsertContact",
    "UpsertContacts",
    "GetContact",
    "GetContactHistory",
    "ListGroupMembers",
    "IngestEvent",
    "IngestEvents",
    "StreamActions",
    "AckActions",
    "GetCampaignReport",
    "GetPerformanceReport",
    "GetValueReport",
    "SetPolicy",
    "GetPolicy",
    "PutMaterial",
    "ApproveMaterial",
    "RetireMaterial",
    "ListMaterials",
    "GetStatus",
    "ListDeadLetters",
    "GetDeadLetter",
    "RedriveDeadLetters",
];

/// Calls one RPC with a token (`None`: no `authorization` header) and returns the status
/// code. Requests name campaigns and contacts that do not exist: an allowed call then fails
/// for that reason (NOT_FOUND, INVALID_ARGUMENT...), never for the caller's identity.
async fn call(channel: &Channel, rpc: &str, token: Option<&str>) -> Code {
    fn r<T>(token: Option<&str>, m: T) -> Request<T> {
        let mut r = Request::new(m);
        if let Some(t) = token {
            r.metadata_mut()
                .insert("authorization", format!("Bearer {t}").parse().unwrap());
        }
        r
    }
    let mut c = CampaignServiceClient::new(channel.clone());
    let mut k = ContactServiceClient::new(channel.clone());
    let mut i = IngestServiceClient::new(channel.clone());
    let mut a = ActionServiceClient::new(channel.clone());
    let mut p = ReportServiceClient::new(channel.clone());
    let mut o =
        canvass_server::api::operator_service_client::OperatorServiceClient::new(channel.clone());
    let id = || "no-such-campaign".to_string();
    let code = |s: Result<(), Status>| s.err().map_or(Code::Ok, |s| s.code());
    macro_rules! go {
        ($e:expr) => {
            code($e.await.map(|_| ()))
        };
    }
    match rpc {
        "CreateCampaign" => go!(c.create_campaign(r(token, v1::CreateCampaignRequest::default()))),
        "ValidateCampaign" => {
            go!(c.validate_campaign(r(token, v1::ValidateCampaignRequest::default())))
        }
        "GetCampaign" => {
            go!(c.get_campaign(r(token, v1::GetCampaignRequest { campaign_id: id() })))
        }
        "ListCampaigns" => go!(c.list_campaigns(r(token, v1::ListCampaignsRequest::default()))),
        "SubmitCampaign" => go!(c.submit_campaign(r(
            token,
            v1::SubmitCampaignRequest {
                campaign_id: id(),
                version: 1,
                reason: String::new()
            }
        ))),
        "ApproveCampaign" => go!(c.approve_campaign(r(
            token,
            v1::ApproveCampaignRequest {
                campaign_id: id(),
                version: 1,
                reason: String::new()
            }
        ))),
        "RejectCampaign" => go!(c.reject_campaign(r(
            token,
            v1::RejectCampaignRequest {
                campaign_id: id(),
                version: 1,
                reason: "no".into()
            }
        ))),
        "LaunchCampaign" => go!(c.launch_campaign(r(
            token,
            v1::LaunchCampaignRequest {
                campaign_id: id(),
                reason: String::new()
            }
        ))),
        "PauseCampaign" => go!(c.pause_campaign(r(
            token,
            v1::PauseCampaignRequest {
                campaign_id: id(),
                reason: String::new()
            }
        ))),
        "ResumeCampaign" => go!(c.resume_campaign(r(
            token,
            v1::ResumeCampaignRequest {
                campaign_id: id(),
                reason: String::new()
            }
        ))),
        "CompleteCampaign" => go!(c.complete_campaign(r(
            token,
            v1::CompleteCampaignRequest {
                campaign_id: id(),
                reason: String::new()
            }
        ))),
        "StopCampaign" => go!(c.stop_campaign(r(
            token,
            v1::StopCampaignRequest {
                campaign_id: id(),
                reason: String::new()
            }
        ))),
        "NewCampaignVersion" => {
            go!(c.new_campaign_version(r(token, v1::NewCampaignVersionRequest::default())))
        }
        "GetCampaignSpec" => go!(c.get_campaign_spec(r(
            token,
            v1::GetCampaignSpecRequest {
                campaign_id: id(),
                version: 0
            }
        ))),
        "UpsertContact" => go!(k.upsert_contact(r(token, v1::UpsertContactRequest::default()))),
        "UpsertContacts" => go!(k.upsert_contacts(r(
            token,
            tokio_stream::iter(Vec::<v1::UpsertContactsRequest>::new())
        ))),
        "GetContact" => go!(k.get_contact(r(
            token,
            v1::GetContactRequest {
                contact_id: "nobody".into()
            }
        ))),
        "GetContactHistory" => go!(k.get_contact_history(r(
            token,
            v1::GetContactHistoryRequest {
                contact_id: "nobody".into(),
                page_size: 1,
                page_token: String::new()
            }
        ))),
        "ListGroupMembers" => go!(k.list_group_members(r(
            token,
            v1::ListGroupMembersRequest {
                campaign_id: id(),
                group: "g".into(),
                page_size: 1,
                page_token: String::new()
            }
        ))),
        "IngestEvent" => go!(i.ingest_event(r(token, v1::IngestEventRequest::default()))),
        "IngestEvents" => go!(i.ingest_events(r(
            token,
            tokio_stream::iter(Vec::<v1::IngestEventsRequest>::new())
        ))),
        "StreamActions" => go!(a.stream_actions(r(token, v1::StreamActionsRequest::default()))),
        "AckActions" => go!(a.ack_actions(r(token, v1::AckActionsRequest::default()))),
        "GetCampaignReport" => {
            go!(p.get_campaign_report(r(token, v1::GetCampaignReportRequest { campaign_id: id() })))
        }
        "GetPerformanceReport" => go!(p.get_performance_report(r(
            token,
            v1::GetPerformanceReportRequest {
                campaign_ids: vec![id()],
                ..Default::default()
            }
        ))),
        "GetValueReport" => {
            go!(p.get_value_report(r(token, v1::GetValueReportRequest::default())))
        }
        // Without a policy: an operator's call is refused for that, not for who it is.
        "SetPolicy" => go!(c.set_policy(r(token, v1::SetPolicyRequest::default()))),
        "GetPolicy" => go!(c.get_policy(r(token, v1::GetPolicyRequest::default()))),
        "PutMaterial" => go!(c.put_material(r(token, v1::PutMaterialRequest::default()))),
        "ApproveMaterial" => {
            go!(c.approve_material(r(token, v1::MaterialVersionRequest::default())))
        }
        "RetireMaterial" => {
            go!(c.retire_material(r(token, v1::MaterialVersionRequest::default())))
        }
        "ListMaterials" => go!(c.list_materials(r(token, v1::ListMaterialsRequest::default()))),
        "GetStatus" => go!(o.get_status(r(token, v1::GetStatusRequest::default()))),
        "ListDeadLetters" => {
            go!(o.list_dead_letters(r(token, v1::ListDeadLettersRequest::default())))
        }
        "GetDeadLetter" => {
            go!(o.get_dead_letter(r(token, v1::GetDeadLetterRequest { id: "999".into() })))
        }
        "RedriveDeadLetters" => go!(o.redrive_dead_letters(r(
            token,
            v1::RedriveDeadLettersRequest {
                ids: vec!["999".into()],
                ..Default::default()
            }
        ))),
        other => panic!("unknown RPC {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_against_every_rpc() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    let roles: Vec<(&str, &str)> = CALLERS
        .iter()
        .filter(|(token, ..)| *token != "tok-mia-approver")
        .map(|(token, _, role)| (*token, *role))
        .collect();
    let mut wrong = Vec::new();
    for rpc in RPCS {
        for code in [
            call(&channel, rpc, None).await,
            call(&channel, rpc, Some("not-a-token")).await,
        ] {
            if code != Code::Unauthenticated {
                wrong.push(format!("{rpc} without a valid token: {code:?}"));
            }
        }
        for (token, role) in &roles {
            let code = call(&channel, rpc, Some(token)).await;
            let denied = matches!(code, Code::PermissionDenied | Code::Unauthenticated);
            if allowed(rpc, role) == denied {
                wrong.push(format!("{rpc} as {role}: {code:?}"));
            }
            if !allowed(rpc, role) && code != Code::PermissionDenied {
                wrong.push(format!(
                    "{rpc} as {role}: {code:?}, expected PermissionDenied"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    // The engine's log tells who was refused what, in the span of the call it refused.
    let refusal = std::iter::from_fn(|| engine._lines.recv_timeout(Duration::from_secs(30)).ok())
        .map(|l| serde_json::from_str::<Value>(&l).unwrap_or_default())
        .find(|e| {
            e["fields"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("refused"))
        })
        .expect("a refusal in the log within 30 s");
    assert_eq!(refusal["level"], "WARN", "{refusal}");
    assert!(refusal["fields"]["caller"].is_string(), "{refusal}");
    assert!(
        refusal["span"]["method"]
            .as_str()
            .is_some_and(|m| m.starts_with("/canvass.v1.")),
        "the refusal names the gRPC method: {refusal}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_spec_gets_every_violation_with_its_path_and_bad_input_a_clear_status() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    let mut bad = spec("survey.json");
    bad.states[0].transitions[0].to = "nowhere".into();
    bad.states[1].transitions[1].when = None;
    bad.initial_state = "missing".into();
    let mut campaigns = CampaignServiceClient::new(channel.clone());
    let validated = campaigns
        .validate_campaign(req(
            READER,
            v1::ValidateCampaignRequest {
                spec: Some(bad.clone()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!validated.valid);
    let paths: BTreeSet<String> = validated
        .violations
        .iter()
        .map(|v| v.path.clone())
        .collect();
    assert!(paths.len() >= 3, "{paths:?}");
    for fragment in ["initialState", "transitions[0].to", "transitions[1]"] {
        assert!(
            paths.iter().any(|p| p.contains(fragment)),
            "no violation at {fragment}: {paths:?}"
        );
    }

    let refused = campaigns
        .create_campaign(req(
            MARKETER,
            v1::CreateCampaignRequest {
                spec: Some(bad),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let details = refused
        .get_details_bad_request()
        .expect("google.rpc.BadRequest details");
    let detail_paths: BTreeSet<String> = details
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        detail_paths, paths,
        "the same violations as ValidateCampaign"
    );
    // Nothing was stored.
    let listed = campaigns
        .list_campaigns(req(READER, v1::ListCampaignsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert!(listed.campaigns.is_empty());

    // A missing required field, an unknown campaign, an illegal lifecycle step, an
    // oversized message: each its own status, and the server goes on serving.
    let mut ingest = IngestServiceClient::new(channel.clone());
    let missing = ingest
        .ingest_event(req(
            SERVICE,
            v1::IngestEventRequest {
                event: Some(v1::TouchpointEvent {
                    id: "e1".into(),
                    r#type: "email.opened".into(),
                    ..Default::default()
                }),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::InvalidArgument);
    assert!(missing.message().contains("contactId"), "{missing:?}");
    let unknown = campaigns
        .launch_campaign(req(
            OPERATOR,
            v1::LaunchCampaignRequest {
                campaign_id: "nope".into(),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    create_and_launch(&channel, spec("survey.json")).await;
    let twice = campaigns
        .submit_campaign(req(
            MARKETER,
            v1::SubmitCampaignRequest {
                campaign_id: "b-improvement-survey".into(),
                version: 1,
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(twice.code(), Code::FailedPrecondition, "{twice:?}");
    let mut huge = v1::Contact {
        id: "big".into(),
        ..Default::default()
    };
    huge.tags = vec!["x".repeat(1024); 5 * 1024];
    let mut contacts_client = ContactServiceClient::new(channel.clone());
    let too_big = contacts_client
        .upsert_contact(req(
            SERVICE,
            v1::UpsertContactRequest {
                contact: Some(huge),
            },
        ))
        .await
        .unwrap_err();
    // RESOURCE_EXHAUSTED, naming the limit.
    assert_eq!(too_big.code(), Code::ResourceExhausted, "{too_big:?}");
    assert!(too_big.message().contains("4194304"), "{too_big:?}");
    // A stream with a bad message in the middle: refused, and its chunk not applied.
    let bad_stream = vec![
        v1::IngestEventsRequest {
            event: Some(v1::TouchpointEvent {
                id: "ok-1".into(),
                r#type: "email.opened".into(),
                contact_id: "someone".into(),
                occurred_at: Some(canvass_proto::wkt::Timestamp {
                    seconds: 1_772_442_000,
                    nanos: 0,
                }),
                ..Default::default()
            }),
        },
        v1::IngestEventsRequest { event: None },
    ];
    let broken = ingest
        .ingest_events(req(SERVICE, tokio_stream::iter(bad_stream)))
        .await
        .unwrap_err();
    assert_eq!(broken.code(), Code::InvalidArgument);
    assert!(broken.message().starts_with("message 1"), "{broken:?}");
    let history = contact_history(&channel, "someone", 10, String::new()).await;
    assert!(
        history.entries.is_empty(),
        "nothing of the refused stream applied"
    );
    // Still serving.
    campaigns
        .get_campaign(req(
            READER,
            v1::GetCampaignRequest {
                campaign_id: "b-improvement-survey".into(),
            },
        ))
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn push_delivery_keeps_to_the_endpoints_concurrency_bound() {
    let dir = tempfile::tempdir().unwrap();
    let executor = start_executor(&["--delay-ms", "300"]);
    let engine = start_engine(
        dir.path(),
        &format!(
            "[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://{}\"\nconcurrency = 2\n",
            executor.address
        ),
    );
    let channel = connect(&engine.address).await;
    upsert_contacts(
        &channel,
        bare_contacts((0..12).map(|i| format!("slow-{i:02}"))),
    )
    .await;
    create_and_launch(&channel, mailing_spec()).await;
    for n in 0..12 {
        executor
            .printed
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("only {n} of 12 actions carried out"));
    }
    let most = executor
        .notes
        .try_iter()
        .filter_map(|l| {
            l.strip_prefix("executor: ")?
                .strip_suffix(" calls in flight")?
                .parse::<u32>()
                .ok()
        })
        .max();
    // Two at once (the bound, reached: the calls do overlap), never three.
    assert_eq!(most, Some(2));
}

/// A campaign that mails everyone and moves each contact by the executor's answer.
fn mailing_spec() -> v1::CampaignSpec {
    json::from_str(
        r#"{
          "id": "welcome-mail",
          "version": 1,
          "name": "Welcome mail",
          "goal": "CAMPAIGN_GOAL_RETENTION",
          "owner": "crm",
          "audience": {"filter": "true"},
          "initialState": "mailed",
          "states": [
            {"id": "mailed",
             "actions": [{"kind": "ACTION_KIND_EMAIL", "template": "welcome"}],
             "transitions": [
               {"to": "reached", "onEvent": {"type": "action.delivered"}},
               {"to": "bounced", "onEvent": {"type": "action.bounced"}}
             ]},
            {"id": "reached", "responseGroup": "reached", "terminal": true, "goal": true},
            {"id": "bounced", "responseGroup": "bounced", "terminal": true}
          ]
        }"#,
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_executor_that_fails_first_still_gets_each_action_once_and_campaigns_see_its_answers() {
    let dir = tempfile::tempdir().unwrap();
    let executor = start_executor(&["--fail-first", "2"]);
    let (address, printed) = (executor.address.clone(), &executor.printed);
    let engine = start_engine(
        dir.path(),
        &format!(
            "[[executors]]\nkinds = [\"EMAIL\"]\nendpoint = \"http://{address}\"\nconcurrency = 4\ntimeout_ms = 2000\n"
        ),
    );
    let channel = connect(&engine.address).await;
    let ids: Vec<String> = (0..40)
        .map(|i| {
            if i % 4 == 0 {
                format!("bounce-{i:02}")
            } else {
                format!("c-{i:02}")
            }
        })
        .collect();
    upsert_contacts(&channel, bare_contacts(&ids)).await;
    create_and_launch(&channel, mailing_spec()).await;

    // Each action printed once by the executor, although each was tried three times.
    let mut keys = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while keys.len() < ids.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = printed
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("only {} of {} actions executed", keys.len(), ids.len()));
        let action: v1::Action = json::from_str(&line).unwrap();
        *keys.entry(action.idempotency_key).or_insert(0) += 1;
    }

    // The answers came back as inputs: bounced contacts in one group, the rest in the other.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let reached = group_members(&channel, "welcome-mail", "reached").await;
        let bounced = group_members(&channel, "welcome-mail", "bounced").await;
        if reached.len() + bounced.len() == ids.len() {
            assert!(bounced.iter().all(|c| c.starts_with("bounce-")));
            assert_eq!(bounced.len(), 10);
            assert_eq!(reached.len(), 30);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "results not applied: {reached:?} {bounced:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every result is applied, so every action has left the outbox and none is pushed
    // again: whatever the executor printed by now is all it ever prints.
    while let Ok(line) = printed.try_recv() {
        let action: v1::Action = json::from_str(&line).unwrap();
        *keys.entry(action.idempotency_key).or_insert(0) += 1;
    }
    assert!(keys.values().all(|n| *n == 1), "{keys:?}");
    assert_eq!(keys.len(), ids.len());
    let counters = CampaignServiceClient::new(channel.clone())
        .get_campaign(req(
            READER,
            v1::GetCampaignRequest {
                campaign_id: "welcome-mail".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .counters
        .unwrap();
    assert_eq!(
        (counters.delivered, counters.failed),
        (30, 10),
        "{counters:?}"
    );
}

#[test]
fn the_cli_operates_a_running_engine() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let server = format!("http://{}", engine.address);
    let cli = |token: &str, args: &[&str]| {
        let mut all = vec!["campaign", "--server", server.as_str()];
        all.extend_from_slice(args);
        Command::new(canvass_tests::canvass_bin())
            .args(&all)
            .env("CANVASS_TOKEN", token)
            .output_within(canvass_tests::HUNG)
            .unwrap()
    };
    let survey = example("survey.json");
    let survey = survey.to_str().unwrap();
    let ok = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(cli(MARKETER, &["create", survey, "--reason", "first cut"]));
    ok(cli(MARKETER, &["submit", "b-improvement-survey", "1"]));
    // The wrong role: refused with the status, exit code 2.
    let denied = cli(MARKETER, &["approve", "b-improvement-survey", "1"]);
    assert_eq!(denied.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    ok(cli(APPROVER, &["approve", "b-improvement-survey", "1"]));
    let launched = ok(cli(OPERATOR, &["launch", "b-improvement-survey"]));
    let launched: Value = serde_json::from_str(&launched).unwrap();
    assert_eq!(launched["lifecycle"]["status"], "CAMPAIGN_STATUS_RUNNING");
    let spec = ok(cli(READER, &["spec", "b-improvement-survey"]));
    assert_eq!(
        json::from_str::<v1::CampaignSpec>(&spec).unwrap(),
        self::spec("survey.json")
    );
    // A spec with a problem: every violation printed with its path.
    let bad_path = dir.path().join("bad.json");
    let mut bad = self::spec("survey.json");
    bad.initial_state = "missing".into();
    std::fs::write(&bad_path, json::to_string(&bad).unwrap()).unwrap();
    let invalid = cli(MARKETER, &["create", bad_path.to_str().unwrap()]);
    assert_eq!(invalid.status.code(), Some(2));
    let text = String::from_utf8_lossy(&invalid.stderr);
    assert!(
        text.contains("InvalidArgument") && text.contains("initialState"),
        "{text}"
    );
    // The catalog of materials: put by a marketer, approved by an approver (not the
    // author), then named by campaigns.
    let draft = dir.path().join("material.json");
    std::fs::write(
        &draft,
        r#"{"materialId": "welcome-mail", "version": 1, "channel": "ACTION_KIND_EMAIL", "contentRef": "cms://mails/welcome/1"}"#,
    )
    .unwrap();
    let put: Value = serde_json::from_str(&ok(cli(
        MARKETER,
        &["put-material", draft.to_str().unwrap()],
    )))
    .unwrap();
    assert_eq!(
        put["material"]["versions"][0]["status"],
        "MATERIAL_STATUS_DRAFT"
    );
    let denied = cli(MARKETER, &["approve-material", "welcome-mail", "1"]);
    assert!(
        String::from_utf8_lossy(&denied.stderr).contains("PermissionDenied"),
        "{}",
        String::from_utf8_lossy(&denied.stderr)
    );
    ok(cli(APPROVER, &["approve-material", "welcome-mail", "1"]));
    let again = cli(APPROVER, &["approve-material", "welcome-mail", "1"]);
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("is not a draft"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let listed: Value = serde_json::from_str(&ok(cli(READER, &["materials"]))).unwrap();
    let v = &listed["materials"][0]["versions"][0];
    assert_eq!(v["status"], "MATERIAL_STATUS_APPROVED");
    assert_eq!(v["contentRef"], "cms://mails/welcome/1");
    assert!(
        v["author"] != v["approver"] && v["approver"].is_string(),
        "{listed}"
    );
    ok(cli(APPROVER, &["retire-material", "welcome-mail", "1"]));
    // A campaign naming a retired material is refused, naming the field.
    let naming = dir.path().join("naming.json");
    let mut spec = self::spec("survey.json");
    spec.id = "welcome".into();
    let action = &mut spec.states[0].actions[0];
    action.template = String::new();
    action.material = "welcome-mail".into();
    action.kind = v1::ActionKind::Email as i32;
    std::fs::write(&naming, json::to_string(&spec).unwrap()).unwrap();
    let refused = cli(MARKETER, &["create", naming.to_str().unwrap()]);
    let text = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && text.contains("material `welcome-mail` is retired"),
        "{text}"
    );

    // No token: a clear error before any call.
    let none = Command::new(canvass_tests::canvass_bin())
        .args(["campaign", "--server", server.as_str(), "list"])
        .env_remove("CANVASS_TOKEN")
        .output_within(canvass_tests::HUNG)
        .unwrap();
    assert!(String::from_utf8_lossy(&none.stderr).contains("CANVASS_TOKEN"));

    // `canvass token hash` prints what the settings file holds.
    let mut hash = Command::new(canvass_tests::canvass_bin())
        .args(["token", "hash"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        hash.stdin
            .take()
            .unwrap()
            .write_all(b"tok-reader\n")
            .unwrap();
    }
    let printed = hash.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&printed.stdout).trim(),
        sha256_hex("tok-reader")
    );
}

/// A CA, a server certificate for `localhost` and a client certificate, as PEM files.
fn pki(dir: &Path) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_string()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let client_key = KeyPair::generate().unwrap();
    let client = CertificateParams::new(vec!["svc".to_string()])
        .unwrap()
        .signed_by(&client_key, &ca)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("server.pem"), server.pem()).unwrap();
    std::fs::write(dir.join("server.key"), server_key.serialize_pem()).unwrap();
    (ca.pem(), client.pem(), client_key.serialize_pem())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mutual_tls_lets_in_only_clients_with_a_certificate_of_the_ca() {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let dir = tempfile::tempdir().unwrap();
    let (ca, client_cert, client_key) = pki(dir.path());
    let file = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    let engine = start_engine(
        dir.path(),
        &format!(
            "[tls]\ncert = \"{}\"\nkey = \"{}\"\nclient_ca = \"{}\"\n",
            file("server.pem"),
            file("server.key"),
            file("ca.pem")
        ),
    );
    let tls = ClientTlsConfig::new()
        .domain_name("localhost")
        .ca_certificate(Certificate::from_pem(&ca));
    let list = |channel: Channel| async move {
        CampaignServiceClient::new(channel)
            .list_campaigns(req(READER, v1::ListCampaignsRequest::default()))
            .await
    };
    let https = format!("https://{}", engine.address);

    let with_cert = Channel::from_shared(https.clone())
        .unwrap()
        .tls_config(
            tls.clone()
                .identity(Identity::from_pem(&client_cert, &client_key)),
        )
        .unwrap()
        .connect()
        .await
        .expect("a client with a certificate of the CA connects");
    list(with_cert).await.expect("and is served");

    // Without a client certificate the handshake (or the first call) fails.
    let without = Channel::from_shared(https)
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = without {
        assert!(list(channel).await.is_err(), "served without a certificate");
    }
    // Plain text is not served either.
    let plain = Channel::from_shared(format!("http://{}", engine.address))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(list(channel).await.is_err(), "served in plain text");
    }

    // The command line reaches it with a client certificate (`--cert`/`--key`), and not
    // without one.
    std::fs::write(dir.path().join("client.pem"), &client_cert).unwrap();
    std::fs::write(dir.path().join("client.key"), &client_key).unwrap();
    let port = engine.address.rsplit(':').next().unwrap();
    let server = format!("https://localhost:{port}");
    let cli = |extra: &[&str]| {
        let mut args = vec!["campaign", "--server", &server, "--ca"];
        let ca = file("ca.pem");
        args.push(&ca);
        args.extend_from_slice(extra);
        args.push("list");
        let args: Vec<String> = args.iter().map(ToString::to_string).collect();
        Command::new(canvass_tests::canvass_bin())
            .args(&args)
            .env("CANVASS_TOKEN", READER)
            .output_within(canvass_tests::HUNG)
            .unwrap()
    };
    let (cert, key) = (file("client.pem"), file("client.key"));
    let with_cert = tokio::task::block_in_place(|| cli(&["--cert", &cert, "--key", &key]));
    assert!(
        with_cert.status.success(),
        "{}",
        String::from_utf8_lossy(&with_cert.stderr)
    );
    let without = tokio::task::block_in_place(|| cli(&[]));
    assert!(
        !without.status.success(),
        "served the CLI without a certificate"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_reflection_answer_and_unknown_enum_values_are_refused() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;

    let mut health = HealthClient::new(channel.clone());
    for service in ["", "canvass.v1.CampaignService", "canvass.v1.IngestService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, 1, "{service} is SERVING");
    }

    // What `grpcurl list` asks.
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await
        .unwrap()
        .into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else {
        panic!("not a service list: {answer:?}");
    };
    let names: BTreeSet<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in [
        "canvass.v1.CampaignService",
        "canvass.v1.ContactService",
        "canvass.v1.IngestService",
        "canvass.v1.ActionService",
        "canvass.v1.ReportService",
        "canvass.v1.OperatorService",
        "grpc.health.v1.Health",
    ] {
        assert!(names.contains(expected), "{expected} not listed: {names:?}");
    }
    // Only what is served: `ActionExecutor` is the executors' service, called by the
    // engine, and not served by it.
    let served: BTreeSet<&str> = names
        .iter()
        .map(String::as_str)
        .filter(|n| !n.starts_with("grpc.reflection."))
        .collect();
    assert_eq!(served.len(), 7, "{names:?}");

    let mut actions = ActionServiceClient::new(channel.clone());
    let unknown_kind = actions
        .stream_actions(req(
            SERVICE,
            v1::StreamActionsRequest {
                kinds: vec![999],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(
        unknown_kind.code(),
        Code::InvalidArgument,
        "{unknown_kind:?}"
    );
    let unknown_outcome = actions
        .ack_actions(req(
            SERVICE,
            v1::AckActionsRequest {
                results: vec![v1::ActionResult {
                    idempotency_key: "k".into(),
                    outcome: 77,
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown_outcome.code(), Code::InvalidArgument);
    // An acknowledgement of an action never streamed is reported, not applied.
    let unknown_key = actions
        .ack_actions(req(
            SERVICE,
            v1::AckActionsRequest {
                results: vec![v1::ActionResult {
                    idempotency_key: "never-sent".into(),
                    outcome: v1::ExecutionOutcome::Delivered as i32,
                    ..Default::default()
                }],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(unknown_key.acknowledged, 0);
    assert_eq!(unknown_key.unknown_keys, vec!["never-sent".to_string()]);
}

/// The next message of a stream, within 10 s.
async fn next(
    stream: &mut tonic::Streaming<v1::StreamActionsResponse>,
) -> v1::StreamActionsResponse {
    tokio::time::timeout(Duration::from_secs(10), stream.message())
        .await
        .expect("a message within 10 s")
        .unwrap()
        .expect("the stream stays open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unacknowledged_action_is_streamed_again_even_past_a_cursor() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    upsert_contacts(&channel, bare_contacts(["a", "b", "c"])).await;
    create_and_launch(&channel, mailing_spec()).await;

    let mut actions = ActionServiceClient::new(channel.clone());
    let open = |cursor: String, deadline: u32| {
        let mut actions = actions.clone();
        async move {
            actions
                .stream_actions(req(
                    SERVICE,
                    v1::StreamActionsRequest {
                        kinds: vec![v1::ActionKind::Email as i32],
                        cursor,
                        ack_deadline_seconds: deadline,
                    },
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // First delivery of the three, not acknowledged; the stream is dropped.
    let mut first = open(String::new(), 1).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        let m = next(&mut first).await;
        assert!(!m.redelivery);
        seen.push(m);
    }
    drop(first);
    // A stream that goes away hands back what it did not acknowledge at once: a new one
    // gets them again, flagged as redeliveries, even with a cursor past them (the cursor
    // skips first deliveries only).
    let last_cursor = seen.last().unwrap().cursor.clone();
    let mut again = open(last_cursor, 30).await;
    let mut keys = BTreeSet::new();
    for _ in 0..3 {
        let m = next(&mut again).await;
        assert!(m.redelivery, "{m:?}");
        keys.insert(m.action.unwrap().idempotency_key);
    }
    let first_keys: BTreeSet<String> = seen
        .iter()
        .map(|m| m.action.as_ref().unwrap().idempotency_key.clone())
        .collect();
    assert_eq!(keys, first_keys);
    // Acknowledged now: logged with the caller, counted once, never streamed again.
    let results = keys
        .iter()
        .map(|k| v1::ActionResult {
            idempotency_key: k.clone(),
            outcome: v1::ExecutionOutcome::Delivered as i32,
            ..Default::default()
        })
        .collect::<Vec<_>>();
    let acked = actions
        .ack_actions(req(
            SERVICE,
            v1::AckActionsRequest {
                results: results.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(acked.acknowledged, 3);
    let twice = actions
        .ack_actions(req(SERVICE, v1::AckActionsRequest { results }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((twice.acknowledged, twice.unknown_keys.len()), (0, 3));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), again.message())
            .await
            .is_err(),
        "nothing left to stream"
    );
    let history = contact_history(&channel, "a", 100, String::new()).await;
    let acks: Vec<&v1::LogEntry> = history
        .entries
        .iter()
        .filter(|e| matches!(e.input, Some(v1::log_entry::Input::ActionAcks(_))))
        .collect();
    assert_eq!(acks.len(), 1, "{history:?}");
    assert_eq!(acks[0].caller, "svc");
    // The campaign reacted to the result: everyone reached.
    assert_eq!(
        group_members(&channel, "welcome-mail", "reached")
            .await
            .len(),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_answers_resource_exhausted_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine_with(dir.path(), "queue = 1\n", "");
    let channel = connect(&engine.address).await;
    let event = |i: usize| v1::TouchpointEvent {
        id: format!("burst-{i}"),
        r#type: "page.viewed".into(),
        contact_id: "busy".into(),
        occurred_at: Some(canvass_proto::wkt::Timestamp {
            seconds: 1_772_442_000 + i64::try_from(i).unwrap(),
            nanos: 0,
        }),
        ..Default::default()
    };
    // 64 calls at once against a queue of one: some are refused, each is retried until
    // accepted.
    let calls = (0..64).map(|i| {
        let mut ingest = IngestServiceClient::new(channel.clone());
        async move {
            let mut refused = 0;
            loop {
                let request = req(
                    SERVICE,
                    v1::IngestEventRequest {
                        event: Some(event(i)),
                    },
                );
                match ingest.ingest_event(request).await {
                    Ok(r) => return (r.into_inner(), refused),
                    Err(s) if s.code() == Code::ResourceExhausted => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    Err(s) => panic!("{s:?}"),
                }
            }
        }
    });
    let answers = futures::future::join_all(calls).await;
    let refused: u32 = answers.iter().map(|(_, r)| r).sum();
    assert!(
        refused > 0,
        "a queue of one never filled under 64 concurrent calls"
    );
    assert!(answers.iter().all(|(a, _)| !a.duplicate && a.seq > 0));
    // Each event logged once.
    let history = contact_history(&channel, "busy", 1000, String::new()).await;
    let ids: BTreeSet<String> = history
        .entries
        .iter()
        .filter_map(|e| match &e.input {
            Some(v1::log_entry::Input::Event(ev)) => Some(ev.id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(ids.len(), 64);
    assert_eq!(history.entries.len(), 64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_mid_way_applies_a_prefix_once_and_sending_it_again_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    let event = |i: usize| v1::IngestEventsRequest {
        event: Some(v1::TouchpointEvent {
            id: format!("s-{i}"),
            r#type: "page.viewed".into(),
            contact_id: "streamer".into(),
            occurred_at: Some(canvass_proto::wkt::Timestamp {
                seconds: 1_772_442_000 + i64::try_from(i).unwrap(),
                nanos: 0,
            }),
            ..Default::default()
        }),
    };
    // 1500 events sent, then the client goes away without ending the stream.
    let (tx, rx) = tokio::sync::mpsc::channel(2048);
    let call = tokio::spawn({
        let mut ingest = IngestServiceClient::new(channel.clone());
        async move {
            ingest
                .ingest_events(req(
                    SERVICE,
                    tokio_stream::wrappers::ReceiverStream::new(rx),
                ))
                .await
        }
    });
    for i in 0..1500 {
        tx.send(event(i)).await.unwrap();
    }
    // The ids of the streamer's events applied so far, oldest first.
    let fresh = connect(&engine.address).await;
    let applied_ids = || {
        let fresh = fresh.clone();
        async move {
            let mut ids = Vec::new();
            let mut token = String::new();
            loop {
                let page = contact_history(&fresh, "streamer", 1000, token).await;
                ids.extend(page.entries.into_iter().filter_map(|e| match e.input {
                    Some(v1::log_entry::Input::Event(e)) => Some(e.id),
                    _ => None,
                }));
                if page.next_page_token.is_empty() {
                    return ids;
                }
                token = page.next_page_token;
            }
        }
    };
    // The break comes once the first chunk (1024 events) is answered: waited for, not slept.
    let deadline = Instant::now() + Duration::from_secs(60);
    while applied_ids().await.len() < 1024 {
        assert!(
            Instant::now() < deadline,
            "the first chunk was not applied within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    call.abort();
    drop(tx);

    // What was applied is a prefix of the stream, each event once: the first chunk for
    // sure, the rest only if the server saw the end before the reset (and it may still be
    // applying it now; the checks below hold either way).
    let prefix = applied_ids().await;
    assert!(
        prefix.len() >= 1024 && prefix.len() <= 1500,
        "applied {}",
        prefix.len()
    );
    let expected: Vec<String> = (0..prefix.len()).map(|i| format!("s-{i}")).collect();
    assert_eq!(prefix, expected, "not a prefix of the stream");
    // Sending the whole stream again is safe: what was applied is recognised, the rest is
    // applied, and every event ends applied exactly once.
    let again = IngestServiceClient::new(channel.clone())
        .ingest_events(req(SERVICE, tokio_stream::iter((0..1500).map(event))))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.duplicates + again.accepted, 1500);
    assert!(again.duplicates >= prefix.len() as u64, "{again:?}");
    let all: Vec<String> = (0..1500).map(|i| format!("s-{i}")).collect();
    assert_eq!(
        applied_ids().await,
        all,
        "each event applied once, in order"
    );
    // Still serving.
    assert!(
        IngestServiceClient::new(channel.clone())
            .ingest_event(req(
                SERVICE,
                v1::IngestEventRequest {
                    event: event(9999).event
                }
            ))
            .await
            .is_ok()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_stream_hands_its_actions_back_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    upsert_contacts(&channel, bare_contacts(["a", "b", "c"])).await;
    create_and_launch(&channel, mailing_spec()).await;
    let actions = ActionServiceClient::new(channel.clone());
    let open = |cursor: String| {
        let mut actions = actions.clone();
        async move {
            actions
                .stream_actions(req(
                    SERVICE,
                    v1::StreamActionsRequest {
                        kinds: Vec::new(),
                        cursor,
                        ack_deadline_seconds: 60,
                    },
                ))
                .await
                .unwrap()
                .into_inner()
        }
    };
    // One action read, then the stream is lost: what it was leased comes back at once
    // (not after the 60 s deadline), flagged as streamed before.
    let mut first = open(String::new()).await;
    let taken = next(&mut first).await;
    drop(first);
    let mut resumed = open(taken.cursor.clone()).await;
    let key = |m: &v1::StreamActionsResponse| m.action.as_ref().unwrap().idempotency_key.clone();
    let mut keys = BTreeSet::new();
    for _ in 0..3 {
        let m = next(&mut resumed).await;
        if key(&m) == key(&taken) {
            assert!(m.redelivery, "{m:?}");
        }
        assert!(keys.insert(key(&m)), "streamed twice: {m:?}");
    }
    assert!(keys.contains(&key(&taken)));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), resumed.message())
            .await
            .is_err(),
        "each once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_resumes_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    upsert_contacts(&channel, bare_contacts(["a", "b", "c"])).await;
    create_and_launch(&channel, mailing_spec()).await;
    let open = |channel: Channel, cursor: String| async move {
        ActionServiceClient::new(channel)
            .stream_actions(req(
                SERVICE,
                v1::StreamActionsRequest {
                    kinds: Vec::new(),
                    cursor,
                    ack_deadline_seconds: 60,
                },
            ))
            .await
            .unwrap()
            .into_inner()
    };
    let key = |m: &v1::StreamActionsResponse| m.action.as_ref().unwrap().idempotency_key.clone();
    // Two of the three read (not acknowledged), then the engine restarts.
    let mut stream = open(channel.clone(), String::new()).await;
    let (m1, m2) = (next(&mut stream).await, next(&mut stream).await);
    drop(stream);
    assert!(engine.child.terminate().success());
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;

    // From the cursor of the second: only the third, as a first delivery.
    let mut resumed = open(channel.clone(), m2.cursor.clone()).await;
    let m3 = next(&mut resumed).await;
    assert!(!m3.redelivery);
    assert!(m3.cursor > m2.cursor, "{m3:?}");
    assert!(key(&m3) != key(&m1) && key(&m3) != key(&m2));
    assert!(
        tokio::time::timeout(Duration::from_millis(1500), resumed.message())
            .await
            .is_err(),
        "nothing at or before the cursor"
    );
    // Without a cursor, the two read before the restart (unacknowledged) come again.
    let mut fresh = open(channel.clone(), String::new()).await;
    let again = BTreeSet::from([key(&next(&mut fresh).await), key(&next(&mut fresh).await)]);
    assert_eq!(again, BTreeSet::from([key(&m1), key(&m2)]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_and_the_policy_over_grpc_agree_with_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    let mut campaigns = CampaignServiceClient::new(channel.clone());
    let mut reports = ReportServiceClient::new(channel.clone());

    // A bad policy: every problem as a field violation, nothing logged.
    let bad: v1::Policy = json::from_str(
        r#"{"caps": [{"channel": "FAX", "maxTouches": 0, "window": "60s"}], "tiers": {"a": "1", "b": "5", "c": "0"}}"#,
    )
    .unwrap();
    let status = campaigns
        .set_policy(req(
            OPERATOR,
            v1::SetPolicyRequest {
                policy: Some(bad),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let fields: Vec<String> = status
        .get_details_bad_request()
        .unwrap()
        .field_violations
        .iter()
        .map(|v| v.field.clone())
        .collect();
    assert_eq!(
        fields,
        [
            "policy.tiers",
            "policy.caps[0].channel",
            "policy.caps[0].maxTouches"
        ]
    );
    let none = campaigns
        .get_policy(req(READER, v1::GetPolicyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(none.policy, None);

    let policy: v1::Policy = json::from_str(
        r#"{"churnDays": 60, "caps": [{"channel": "EMAIL", "maxTouches": 3, "window": "604800s"}]}"#,
    )
    .unwrap();
    let set = campaigns
        .set_policy(req(
            OPERATOR,
            v1::SetPolicyRequest {
                policy: Some(policy.clone()),
                reason: "weekly email cap".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(set.seq > 0);
    assert_eq!(set.policy.as_ref(), Some(&policy));
    let got = campaigns
        .get_policy(req(READER, v1::GetPolicyRequest {}))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.policy, Some(policy));

    create_and_launch(&channel, spec("survey.json")).await;
    let all = contacts();
    let n = all.len() as u64;
    assert_eq!(upsert_contacts(&channel, all).await, n);
    create_and_launch(&channel, spec("campaign.json")).await;

    let performance = reports
        .get_performance_report(req(
            READER,
            v1::GetPerformanceReportRequest {
                model: v1::AttributionModel::Linear as i32,
                indirect_cost: "1000".into(),
                allocation: v1::CostAllocation::DirectCost as i32,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let from_grpc: Value = serde_json::from_str(&performance.report_json).unwrap();
    // The typed report is the same document: its canonical JSON is the JSON form.
    let typed = performance.report.as_ref().expect("a typed report");
    assert_eq!(
        without_defaults(serde_json::from_str(&json::to_string(typed).unwrap()).unwrap()),
        without_defaults(from_grpc.clone())
    );
    assert!(!typed.campaigns.is_empty() && typed.model == "linear");
    assert_eq!(from_grpc["model"], "linear");
    let trial = from_grpc["campaigns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == "b-trial-invite")
        .unwrap();
    assert_eq!(trial["enrolled"], 172);
    // The chart's texts: one of them names the state.
    assert!(
        performance.funnel_svg.split("<text ").skip(1).any(|t| t
            .split(['>', '<'])
            .nth(1)
            .is_some_and(|s| s.trim() == "invited")),
        "{}",
        performance.funnel_svg
    );
    let value = reports
        .get_value_report(req(
            READER,
            v1::GetValueReportRequest {
                churn_days: 60,
                ..Default::default()
            },
        ))
        .await
        .unwrap()
        .into_inner();
    let value_grpc: Value = serde_json::from_str(&value.report_json).unwrap();
    let typed = value.report.as_ref().expect("a typed value report");
    assert_eq!(
        without_defaults(serde_json::from_str(&json::to_string(typed).unwrap()).unwrap()),
        without_defaults(value_grpc.clone())
    );
    assert_eq!(value_grpc["contacts"], n);
    assert!(value.pyramid_svg.contains("Value pyramid"));

    // Bad report requests.
    let unknown = reports
        .get_performance_report(req(
            READER,
            v1::GetPerformanceReportRequest {
                campaign_ids: vec!["nope".into()],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let cost = reports
        .get_performance_report(req(
            READER,
            v1::GetPerformanceReportRequest {
                indirect_cost: "a lot".into(),
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(cost.code(), Code::InvalidArgument);
    let tiers = reports
        .get_value_report(req(
            READER,
            v1::GetValueReportRequest {
                tier_percents: vec![60, 60, 1],
                ..Default::default()
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(tiers.code(), Code::InvalidArgument);

    // The same documents from the command line once the engine has stopped.
    assert!(engine.child.terminate().success());
    let data = dir.path().join("data").display().to_string();
    let cli = |args: &[&str]| -> Value {
        let mut all = vec!["report", "--data", &data, "--json"];
        all.extend_from_slice(args);
        let out = canvass(&all);
        assert!(out.status.success(), "{}", stderr(&out));
        serde_json::from_str(&stdout(&out)).unwrap()
    };
    assert_eq!(
        cli(&[
            "--model",
            "linear",
            "--indirect-cost",
            "1000",
            "--allocate",
            "direct-cost"
        ]),
        from_grpc
    );
    assert_eq!(cli(&["--value", "--churn-days", "60"]), value_grpc);
}

/// Sends raw bytes as the message of an RPC: what a client that does not speak protobuf, or
/// a hostile one, sends.
async fn raw_call(
    channel: &Channel,
    path: &'static str,
    token: Option<&str>,
    body: Vec<u8>,
) -> Status {
    use bytes::{Buf, BufMut};
    use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
    #[derive(Debug, Clone, Copy, Default)]
    struct Raw;
    impl Codec for Raw {
        type Encode = Vec<u8>;
        type Decode = Vec<u8>;
        type Encoder = Raw;
        type Decoder = Raw;
        fn encoder(&mut self) -> Raw {
            Raw
        }
        fn decoder(&mut self) -> Raw {
            Raw
        }
    }
    impl Encoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
            dst.put_slice(&item);
            Ok(())
        }
    }
    impl Decoder for Raw {
        type Item = Vec<u8>;
        type Error = Status;
        fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
            Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
        }
    }
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.unwrap();
    let mut request = Request::new(body);
    if let Some(t) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {t}").parse().unwrap());
    }
    let path = tonic::codegen::http::uri::PathAndQuery::from_static(path);
    grpc.unary(request, path, Raw)
        .await
        .expect_err("garbage is refused")
}

/// The bad-input suite, gRPC part: hostile calls with every role's token get a clear status
/// (never a crash, never INTERNAL), and the engine keeps serving within bounded memory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_calls_get_clear_statuses_and_leave_the_engine_serving() {
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
    let dir = tempfile::tempdir().unwrap();
    let engine = start_engine(dir.path(), "");
    let channel = connect(&engine.address).await;
    let mut campaigns = CampaignServiceClient::new(channel.clone());

    // A 48 KB chain of `+`, from the lowest role: refused with its path, not a crash.
    let mut chain = spec("survey.json");
    chain.audience = Some(v1::Audience {
        filter: format!("{} > 0", vec!["1"; 12_000].join(" + ")),
    });
    let answer = campaigns
        .validate_campaign(req(
            READER,
            v1::ValidateCampaignRequest {
                spec: Some(chain.clone()),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!answer.valid);
    assert!(
        answer
            .violations
            .iter()
            .any(|v| v.path == "audience.filter" && v.reason.contains("CEL over the limits")),
        "{answer:?}"
    );
    let mut deep = spec("survey.json");
    deep.audience = Some(v1::Audience {
        filter: format!("{}true{}", "(".repeat(5000), ")".repeat(5000)),
    });
    let created = campaigns
        .create_campaign(req(
            MARKETER,
            v1::CreateCampaignRequest {
                spec: Some(deep),
                reason: String::new(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(created.code(), Code::InvalidArgument, "{created:?}");

    // Timestamps out of the JSON mapping's range and dated far ahead: refused, named.
    let mut ingest = IngestServiceClient::new(channel.clone());
    let event = |seconds: i64| v1::IngestEventRequest {
        event: Some(v1::TouchpointEvent {
            id: format!("e-{seconds}"),
            r#type: "email.opened".into(),
            contact_id: "c-0001".into(),
            occurred_at: Some(canvass_proto::wkt::Timestamp { seconds, nanos: 0 }),
            ..Default::default()
        }),
    };
    let far = ingest
        .ingest_event(req(SERVICE, event(1_000_000_000_000_000)))
        .await
        .unwrap_err();
    assert_eq!(far.code(), Code::InvalidArgument);
    assert!(
        far.message().contains("event.occurredAt") && far.message().contains("9999"),
        "{far:?}"
    );
    let year_2100 = ingest
        .ingest_event(req(SERVICE, event(4_102_444_800)))
        .await
        .unwrap_err();
    assert_eq!(year_2100.code(), Code::InvalidArgument);
    assert!(
        year_2100.message().contains("ahead of the wall clock"),
        "{year_2100:?}"
    );
    let year_9999 = ingest
        .ingest_event(req(SERVICE, event(253_402_300_000)))
        .await
        .unwrap_err();
    assert!(
        year_9999.message().contains("must stay within year 9999"),
        "{year_9999:?}"
    );

    // Bytes that are not protobuf: the caller's identity first, then the message.
    let garbage = vec![0xff; 64];
    let create = "/canvass.v1.CampaignService/CreateCampaign";
    for (token, code) in [
        (None, Code::Unauthenticated),
        (Some("not-a-token"), Code::Unauthenticated),
        (Some(READER), Code::PermissionDenied),
        (Some(MARKETER), Code::InvalidArgument),
    ] {
        let status = raw_call(&channel, create, token, garbage.clone()).await;
        assert_eq!(status.code(), code, "{token:?}: {status:?}");
    }
    let status = raw_call(
        &channel,
        "/canvass.v1.IngestService/IngestEvent",
        Some(SERVICE),
        garbage,
    )
    .await;
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().contains("IngestEventRequest"),
        "{status:?}"
    );

    // Still serving, within bounded memory.
    let health = HealthClient::new(channel.clone())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(health.status, 1);
    campaigns
        .list_campaigns(req(READER, v1::ListCampaignsRequest::default()))
        .await
        .unwrap();
    let peak = canvass_tests::peak_rss_kib(engine.child.id()).unwrap();
    assert!(peak < 400 * 1024, "peak RSS {peak} KiB");
}

/// A JSON document without the members proto3's JSON mapping may leave out (zeros, empty
/// strings, `false`, empty lists and maps): two documents equal so are the same message.
fn without_defaults(value: Value) -> Value {
    match value {
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(k, v)| (k, without_defaults(v)))
                .filter(|(_, v)| !is_default(v))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(without_defaults).collect()),
        other => other,
    }
}

fn is_default(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// `canvass health`, the check a container or a supervisor runs: `SERVING` and exit 0 from
/// a running engine, exit 3 (unavailable) when nothing answers at the address.
#[test]
fn the_health_command_tells_a_serving_engine_from_one_that_is_not_there() {
    let dir = tempfile::tempdir().unwrap();
    let mut engine = start_engine(dir.path(), "");
    let server = format!("http://{}", engine.address);
    let served = canvass(&["health", "--server", &server]);
    assert!(served.status.success(), "{}", stderr(&served));
    assert_eq!(stdout(&served).trim(), "SERVING");
    let named = canvass(&[
        "health",
        "--server",
        &server,
        "--service",
        "canvass.v1.CampaignService",
    ]);
    assert_eq!(stdout(&named).trim(), "SERVING");

    assert!(engine.child.terminate().success());
    let gone = canvass(&["health", "--server", &server, "--timeout-ms", "2000"]);
    assert_eq!(gone.status.code(), Some(3), "{}", stderr(&gone));
    assert!(stderr(&gone).contains(&engine.address), "{}", stderr(&gone));
}
