//! gRPC helpers shared by the end-to-end tests: callers and their tokens, settings, a
//! tonic client connection, and the reference campaign's lifecycle through the API.

#![allow(clippy::unwrap_used)] // test helpers fail loudly

use canvass_proto::{json, v1};
use canvass_server::api::{
    campaign_service_client::CampaignServiceClient, contact_service_client::ContactServiceClient,
};
use sha2::{Digest, Sha256};
use tonic::{Code, Request, transport::Channel};

use crate::example;

/// Callers: (token, identity, role). `mia` writes specs and also holds an approver token,
/// to show that nobody approves their own campaign.
pub const CALLERS: &[(&str, &str, &str)] = &[
    ("tok-marketer", "mia", "marketer"),
    ("tok-approver", "abe", "approver"),
    ("tok-mia-approver", "mia", "approver"),
    ("tok-operator", "ola", "operator"),
    ("tok-service", "svc", "service"),
    ("tok-reader", "rea", "reader"),
];
pub const MARKETER: &str = "tok-marketer";
pub const APPROVER: &str = "tok-approver";
pub const OPERATOR: &str = "tok-operator";
pub const SERVICE: &str = "tok-service";
pub const READER: &str = "tok-reader";

/// The reference example's launch time (as in the other end-to-end tests).
pub const LAUNCH: &str = "2026-03-02T09:00:00Z";

pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Contacts with these ids and nothing else.
#[must_use]
pub fn bare_contacts<S: ToString>(ids: impl IntoIterator<Item = S>) -> Vec<v1::Contact> {
    ids.into_iter()
        .map(|id| v1::Contact {
            id: id.to_string(),
            ..Default::default()
        })
        .collect()
}

/// Upserts contacts over one `UpsertContacts` stream, as the service; returns how many the
/// engine accepted.
pub async fn upsert_contacts(channel: &Channel, contacts: Vec<v1::Contact>) -> u64 {
    let messages = contacts
        .into_iter()
        .map(|c| v1::UpsertContactsRequest { contact: Some(c) });
    ContactServiceClient::new(channel.clone())
        .upsert_contacts(req(SERVICE, tokio_stream::iter(messages)))
        .await
        .unwrap()
        .into_inner()
        .accepted
}

/// The settings file's callers, one `[[tokens]]` entry each, listening on any free port.
#[must_use]
pub fn settings() -> String {
    settings_with("")
}

/// [`settings`] with more top-level keys (they must come before the tables).
#[must_use]
pub fn settings_with(top: &str) -> String {
    let mut config = format!("listen = \"127.0.0.1:0\"\n{top}");
    for (token, identity, role) in CALLERS {
        config.push_str(&format!(
            "[[tokens]]\nidentity = \"{identity}\"\nrole = \"{role}\"\nsha256 = \"{}\"\n",
            sha256_hex(token)
        ));
    }
    config
}

pub async fn connect(address: &str) -> Channel {
    Channel::from_shared(format!("http://{address}"))
        .unwrap()
        .connect()
        .await
        .expect("the engine accepts connections")
}

/// A request carrying a bearer token (and, for the event clock, the time it happens at).
pub fn req<T>(token: &str, message: T) -> Request<T> {
    let mut r = Request::new(message);
    r.metadata_mut()
        .insert("authorization", format!("Bearer {token}").parse().unwrap());
    r.metadata_mut()
        .insert("canvass-at", LAUNCH.parse().unwrap());
    r
}

pub fn spec(name: &str) -> v1::CampaignSpec {
    json::from_str(&std::fs::read_to_string(example(name)).unwrap()).unwrap()
}

pub fn contacts() -> Vec<v1::Contact> {
    std::fs::read_to_string(example("contacts.jsonl"))
        .unwrap()
        .lines()
        .map(|l| json::from_str(l).unwrap())
        .collect()
}

/// Creates, submits, approves (by someone else) and launches a campaign through gRPC.
pub async fn create_and_launch(channel: &Channel, spec: v1::CampaignSpec) {
    let mut campaigns = CampaignServiceClient::new(channel.clone());
    let id = spec.id.clone();
    let created = campaigns
        .create_campaign(req(
            MARKETER,
            v1::CreateCampaignRequest {
                spec: Some(spec),
                reason: "new campaign".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.seq > 0);
    let status = |r: v1::CampaignLifecycle| r.status;
    assert_eq!(
        status(created.lifecycle.unwrap()),
        v1::CampaignStatus::Draft as i32
    );
    campaigns
        .submit_campaign(req(
            MARKETER,
            v1::SubmitCampaignRequest {
                campaign_id: id.clone(),
                version: 1,
                reason: "ready".into(),
            },
        ))
        .await
        .unwrap();
    // The author may hold an approver token: still not their own approval.
    let own = campaigns
        .approve_campaign(req(
            "tok-mia-approver",
            v1::ApproveCampaignRequest {
                campaign_id: id.clone(),
                version: 1,
                reason: "mine".into(),
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(own.code(), Code::FailedPrecondition, "{own:?}");
    campaigns
        .approve_campaign(req(
            APPROVER,
            v1::ApproveCampaignRequest {
                campaign_id: id.clone(),
                version: 1,
                reason: "looks right".into(),
            },
        ))
        .await
        .unwrap();
    let launched = campaigns
        .launch_campaign(req(
            OPERATOR,
            v1::LaunchCampaignRequest {
                campaign_id: id.clone(),
                reason: "go".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        launched.lifecycle.unwrap().status,
        v1::CampaignStatus::Running as i32
    );
}
