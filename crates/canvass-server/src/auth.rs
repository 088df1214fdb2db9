//! Bearer tokens and roles: who may call which RPC.
//!
//! Tokens are configured by their SHA-256 only, so the settings file holds no secret. A
//! missing or unknown token is `UNAUTHENTICATED`; a known caller whose role does not allow
//! the RPC is `PERMISSION_DENIED`. That an approver never approves a campaign they wrote is
//! the lifecycle's rule (checked by the engine against the recorded author), not the role's.

use std::collections::HashMap;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use crate::config::TokenConfig;

/// What a caller may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Writes specs and submits them for approval.
    Marketer,
    /// Approves or rejects versions pending approval.
    Approver,
    /// Launches, pauses, resumes, completes and stops campaigns.
    Operator,
    /// A backend service: ingests touchpoints, upserts contacts, takes actions.
    Service,
    /// Reads only.
    Reader,
}

impl Role {
    /// Every role, for tests and listings.
    pub const ALL: [Role; 5] = [
        Role::Marketer,
        Role::Approver,
        Role::Operator,
        Role::Service,
        Role::Reader,
    ];
}

/// Every RPC the server answers, for the permission table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Rpc {
    CreateCampaign,
    ValidateCampaign,
    GetCampaign,
    ListCampaigns,
    SubmitCampaign,
    ApproveCampaign,
    RejectCampaign,
    LaunchCampaign,
    PauseCampaign,
    ResumeCampaign,
    CompleteCampaign,
    StopCampaign,
    NewCampaignVersion,
    GetCampaignSpec,
    UpsertContact,
    UpsertContacts,
    GetContact,
    GetContactHistory,
    ListGroupMembers,
    IngestEvent,
    IngestEvents,
    StreamActions,
    AckActions,
    GetCampaignReport,
    GetPerformanceReport,
    GetValueReport,
    GetPartitionFigures,
    ListPartitionContacts,
    SetPolicy,
    GetPolicy,
    PutMaterial,
    ApproveMaterial,
    RetireMaterial,
    ListMaterials,
    GetStatus,
    ListDeadLetters,
    GetDeadLetter,
    RedriveDeadLetters,
}

impl Rpc {
    /// The RPC of a gRPC method name (`CreateCampaign`), if it is one of ours.
    #[must_use]
    pub fn named(method: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|rpc| format!("{rpc:?}") == method)
    }

    /// Every RPC.
    pub const ALL: [Rpc; 38] = [
        Rpc::CreateCampaign,
        Rpc::ValidateCampaign,
        Rpc::GetCampaign,
        Rpc::ListCampaigns,
        Rpc::SubmitCampaign,
        Rpc::ApproveCampaign,
        Rpc::RejectCampaign,
        Rpc::LaunchCampaign,
        Rpc::PauseCampaign,
        Rpc::ResumeCampaign,
        Rpc::CompleteCampaign,
        Rpc::StopCampaign,
        Rpc::NewCampaignVersion,
        Rpc::GetCampaignSpec,
        Rpc::UpsertContact,
        Rpc::UpsertContacts,
        Rpc::GetContact,
        Rpc::GetContactHistory,
        Rpc::ListGroupMembers,
        Rpc::IngestEvent,
        Rpc::IngestEvents,
        Rpc::StreamActions,
        Rpc::AckActions,
        Rpc::GetCampaignReport,
        Rpc::GetPerformanceReport,
        Rpc::GetValueReport,
        Rpc::GetPartitionFigures,
        Rpc::ListPartitionContacts,
        Rpc::SetPolicy,
        Rpc::GetPolicy,
        Rpc::PutMaterial,
        Rpc::ApproveMaterial,
        Rpc::RetireMaterial,
        Rpc::ListMaterials,
        Rpc::GetStatus,
        Rpc::ListDeadLetters,
        Rpc::GetDeadLetter,
        Rpc::RedriveDeadLetters,
    ];

    /// The roles allowed to call it. Reads are open to every role; each change belongs to
    /// the one role whose job it is.
    #[must_use]
    pub fn allowed(self) -> &'static [Role] {
        use Role::*;
        match self {
            Rpc::CreateCampaign
            | Rpc::NewCampaignVersion
            | Rpc::SubmitCampaign
            | Rpc::PutMaterial => &[Marketer],
            // Withdrawing a material is a review decision, like approving it.
            Rpc::ApproveCampaign
            | Rpc::RejectCampaign
            | Rpc::ApproveMaterial
            | Rpc::RetireMaterial => &[Approver],
            Rpc::LaunchCampaign
            | Rpc::PauseCampaign
            | Rpc::ResumeCampaign
            | Rpc::CompleteCampaign
            | Rpc::StopCampaign
            | Rpc::SetPolicy
            | Rpc::RedriveDeadLetters => &[Operator],
            Rpc::UpsertContact
            | Rpc::UpsertContacts
            | Rpc::IngestEvent
            | Rpc::IngestEvents
            | Rpc::StreamActions
            | Rpc::AckActions => &[Service],
            Rpc::ValidateCampaign
            | Rpc::GetCampaign
            | Rpc::ListCampaigns
            | Rpc::GetCampaignSpec
            | Rpc::GetContact
            | Rpc::GetContactHistory
            | Rpc::ListGroupMembers
            | Rpc::GetCampaignReport
            | Rpc::GetPerformanceReport
            | Rpc::GetValueReport
            | Rpc::GetPartitionFigures
            | Rpc::ListPartitionContacts
            | Rpc::GetPolicy
            | Rpc::ListMaterials
            | Rpc::GetStatus
            | Rpc::ListDeadLetters
            | Rpc::GetDeadLetter => &Role::ALL,
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Its configured identity: the actor of what it changes.
    pub identity: String,
    /// Its role.
    pub role: Role,
}

/// Checks bearer tokens against the configured hashes.
#[derive(Debug, Clone, Default)]
pub struct Authenticator {
    by_hash: HashMap<[u8; 32], Caller>,
}

/// The hex SHA-256 of a token, as the settings file holds it.
#[must_use]
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn unhex(hex: &str) -> Option<[u8; 32]> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return None;
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl Authenticator {
    /// From the configured tokens (hashes already checked by the config parser).
    #[must_use]
    pub fn new(tokens: &[TokenConfig]) -> Self {
        let by_hash = tokens
            .iter()
            .filter_map(|t| {
                let caller = Caller {
                    identity: t.identity.clone(),
                    role: t.role,
                };
                unhex(&t.sha256.to_ascii_lowercase()).map(|h| (h, caller))
            })
            .collect();
        Self { by_hash }
    }

    /// The caller of a request allowed to call `rpc`, or the status that refuses it.
    pub fn check<T>(&self, request: &Request<T>, rpc: Rpc) -> Result<Caller, Status> {
        let header = request.metadata().get("authorization").map(|v| v.to_str());
        self.authorize(header.map(|v| v.ok()), rpc)
    }

    /// Like [`Authenticator::check`], from the `authorization` header's value (`None`:
    /// absent; `Some(None)`: not text), for the layer that refuses a call before its
    /// message is read.
    pub fn authorize(&self, header: Option<Option<&str>>, rpc: Rpc) -> Result<Caller, Status> {
        let header = header
            .ok_or_else(|| Status::unauthenticated("missing `authorization: Bearer <token>`"))?;
        let token = header
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .ok_or_else(|| Status::unauthenticated("expected `authorization: Bearer <token>`"))?;
        let digest: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let caller = self
            .by_hash
            .get(&digest)
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if rpc.allowed().contains(&caller.role) {
            Ok(caller.clone())
        } else {
            // Operators see who tried what (once per caller and call in an interval).
            let kind = format!("refused {} {rpc:?}", caller.identity);
            if let Some(held_back) =
                canvass_engine::throttle::WARNINGS.admit(&kind, std::time::Instant::now())
            {
                tracing::warn!(
                    caller = %caller.identity,
                    role = ?caller.role,
                    call = ?rpc,
                    held_back,
                    "refused: the caller's role may not make this call"
                );
            }
            Err(Status::permission_denied(format!(
                "{rpc:?} needs the role {}; {} has the role {:?}",
                rpc.allowed()
                    .iter()
                    .map(|r| format!("{r:?}").to_lowercase())
                    .collect::<Vec<_>>()
                    .join(" or "),
                caller.identity,
                caller.role
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth() -> Authenticator {
        Authenticator::new(&[TokenConfig {
            identity: "olga".into(),
            role: Role::Operator,
            sha256: hash_token("s3cret"),
        }])
    }

    fn with(token: Option<&str>) -> Request<()> {
        let mut r = Request::new(());
        if let Some(t) = token {
            r.metadata_mut().insert("authorization", t.parse().unwrap());
        }
        r
    }

    #[test]
    fn known_hash_of_a_known_token() {
        // sha256("password"), as `sha256sum` prints it.
        assert_eq!(
            hash_token("password"),
            "5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8"
        );
    }

    #[test]
    fn tokens_and_roles() {
        let a = auth();
        let ok = a
            .check(&with(Some("Bearer s3cret")), Rpc::LaunchCampaign)
            .unwrap();
        assert_eq!(ok.identity, "olga");
        let code = |r: Request<()>, rpc| a.check(&r, rpc).unwrap_err().code();
        assert_eq!(
            code(with(None), Rpc::GetCampaign),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(with(Some("Bearer nope")), Rpc::GetCampaign),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(with(Some("s3cret")), Rpc::GetCampaign),
            tonic::Code::Unauthenticated
        );
        assert_eq!(
            code(with(Some("Bearer s3cret")), Rpc::ApproveCampaign),
            tonic::Code::PermissionDenied
        );
    }

    #[test]
    fn every_change_has_exactly_one_role_and_reads_are_open() {
        for rpc in Rpc::ALL {
            let n = rpc.allowed().len();
            assert!(n == 1 || n == Role::ALL.len(), "{rpc:?}");
        }
    }
}
