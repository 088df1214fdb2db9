//! `CampaignService`: specs and the lifecycle, every change a logged command with its caller.

use canvass_engine::durable::Outcome;
use canvass_proto::{
    json,
    v1::{self, campaign_command::Command},
};
use tonic::{Request, Response, Status};

use crate::{
    Shared, api::campaign_service_server::CampaignService, auth::Rpc, invalid, page_size,
    record_time, required, storage,
};

pub(crate) struct Campaigns(pub(crate) Shared);

/// The CEL limits of the policy in force, which a new spec must meet (the engine checks
/// again when the command is applied, at its place in the log).
fn cel_limits(shared: &Shared) -> Result<canvass_core::condition::CelLimits, Status> {
    let policy = shared
        .global()
        .policy()
        .map_err(storage)?
        .unwrap_or_default();
    Ok(canvass_core::policy::compile(&policy)
        .map(|p| p.cel)
        .unwrap_or_default())
}

/// Every problem of a spec under the policy in force, as (path, reason).
fn violations(shared: &Shared, spec: &v1::CampaignSpec) -> Result<Vec<(String, String)>, Status> {
    let limits = cel_limits(shared)?;
    Ok(match canvass_core::validate::compile_with(spec, &limits) {
        Ok(_) => Vec::new(),
        Err(e) => e.issues.into_iter().map(|i| (i.path, i.reason)).collect(),
    })
}

fn checked_spec(
    shared: &Shared,
    spec: Option<v1::CampaignSpec>,
) -> Result<v1::CampaignSpec, Status> {
    let spec = spec.ok_or_else(|| required("spec"))?;
    let problems = violations(shared, &spec)?;
    if problems.is_empty() {
        Ok(spec)
    } else {
        Err(invalid(
            &format!(
                "campaign `{}` has {} problem(s); see the BadRequest details",
                spec.id,
                problems.len()
            ),
            problems,
        ))
    }
}

/// The log sequence number of a command the engine logged, or why it did not.
fn logged(answer: crate::group::Answer) -> Result<u64, Status> {
    let outcome = match answer {
        crate::group::Answer::Engine(outcome) => outcome,
        crate::group::Answer::Queued(q) => {
            // gRPC's code for "it may have completed": it will, as the engines read it.
            return Err(Status::deadline_exceeded(format!(
                "the command was written to the control topic `{}` (offset {}), which every engine applies in its order, but this engine did not apply it in time to answer with its outcome: do not send it again; the campaign's history and the audit topic show it once applied",
                q.topic, q.offset
            )));
        }
    };
    match outcome {
        Outcome::Logged { seq } => Ok(seq),
        Outcome::Refused { reason } => Err(Status::failed_precondition(reason)),
        Outcome::DeadLetter { reason } => Err(Status::invalid_argument(reason)),
        Outcome::Duplicate => Err(Status::already_exists("already applied")),
        Outcome::Noted => Err(crate::not_an_input()),
        Outcome::Elsewhere { partition } => Err(crate::elsewhere(partition)),
    }
}

fn version_ref(campaign_id: &str, version: u32) -> Result<v1::VersionRef, Status> {
    if version == 0 {
        return Err(required("version"));
    }
    Ok(v1::VersionRef {
        campaign_id: campaign_id.to_string(),
        version,
    })
}

fn nonempty<'a>(field: &str, value: &'a str) -> Result<&'a str, Status> {
    if value.trim().is_empty() {
        Err(required(field))
    } else {
        Ok(value)
    }
}

impl Campaigns {
    fn lifecycle(&self, id: &str) -> Result<Option<v1::CampaignLifecycle>, Status> {
        self.0.global().lifecycle(id).map_err(storage)
    }

    fn existing(&self, id: &str) -> Result<v1::CampaignLifecycle, Status> {
        self.lifecycle(id)?
            .ok_or_else(|| Status::not_found(format!("no campaign `{id}`")))
    }

    /// Logs a command as the caller; returns its log entry and the campaign afterwards.
    async fn command(
        &self,
        caller: &crate::Caller,
        at: Option<canvass_proto::wkt::Timestamp>,
        campaign_id: &str,
        reason: String,
        command: Command,
    ) -> Result<(u64, v1::CampaignLifecycle), Status> {
        let record = v1::IngestRecord {
            input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                actor: caller.identity.clone(),
                reason,
                command: Some(command),
            })),
            at,
        };
        let seq = logged(self.0.submit_one(record, caller).await?)?;
        Ok((seq, self.existing(campaign_id)?))
    }

    /// A lifecycle step request: checked, logged, answered with the campaign afterwards.
    async fn lifecycle_step<R: LifecycleStep>(
        &self,
        request: Request<R>,
        rpc: Rpc,
    ) -> Result<(u64, v1::CampaignLifecycle), Status> {
        let caller = self.0.auth.check(&request, rpc)?;
        let at = record_time(&request)?;
        let (campaign_id, reason, command) = request.into_inner().into_command()?;
        self.step(&caller, at, &campaign_id, reason, command).await
    }

    /// A lifecycle step of an existing campaign.
    async fn step(
        &self,
        caller: &crate::Caller,
        at: Option<canvass_proto::wkt::Timestamp>,
        campaign_id: &str,
        reason: String,
        command: Command,
    ) -> Result<(u64, v1::CampaignLifecycle), Status> {
        let id = nonempty("campaign_id", campaign_id)?;
        self.existing(id)?;
        self.command(caller, at, id, reason, command).await
    }
}

/// A request for one lifecycle step: the campaign, the reason, the command.
trait LifecycleStep {
    fn into_command(self) -> Result<(String, String, Command), Status>;
}

/// Steps that name a version.
macro_rules! versioned_step {
    ($($request:ident => $variant:ident),*) => {$(
        impl LifecycleStep for v1::$request {
            fn into_command(self) -> Result<(String, String, Command), Status> {
                let target = version_ref(&self.campaign_id, self.version)?;
                Ok((self.campaign_id, self.reason, Command::$variant(target)))
            }
        }
    )*};
}

/// Steps that name the campaign only.
macro_rules! campaign_step {
    ($($request:ident => $variant:ident),*) => {$(
        impl LifecycleStep for v1::$request {
            fn into_command(self) -> Result<(String, String, Command), Status> {
                let command = Command::$variant(self.campaign_id.clone());
                Ok((self.campaign_id, self.reason, command))
            }
        }
    )*};
}

versioned_step!(
    SubmitCampaignRequest => Submit,
    ApproveCampaignRequest => Approve,
    RejectCampaignRequest => Reject
);
campaign_step!(
    LaunchCampaignRequest => Launch,
    PauseCampaignRequest => Pause,
    ResumeCampaignRequest => Resume,
    CompleteCampaignRequest => Complete,
    StopCampaignRequest => Stop
);

#[tonic::async_trait]
impl CampaignService for Campaigns {
    async fn create_campaign(
        &self,
        request: Request<v1::CreateCampaignRequest>,
    ) -> Result<Response<v1::CreateCampaignResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::CreateCampaign)?;
        let at = record_time(&request)?;
        let r = request.into_inner();
        let spec = checked_spec(&self.0, r.spec)?;
        if self.lifecycle(&spec.id)?.is_some() {
            return Err(Status::already_exists(format!(
                "campaign `{}` exists; NewCampaignVersion adds a version",
                spec.id
            )));
        }
        let id = spec.id.clone();
        let (seq, lifecycle) = self
            .command(&caller, at, &id, r.reason, Command::PutSpec(spec))
            .await?;
        Ok(Response::new(v1::CreateCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn validate_campaign(
        &self,
        request: Request<v1::ValidateCampaignRequest>,
    ) -> Result<Response<v1::ValidateCampaignResponse>, Status> {
        self.0.auth.check(&request, Rpc::ValidateCampaign)?;
        let spec = request.into_inner().spec.ok_or_else(|| required("spec"))?;
        let violations: Vec<v1::Violation> = violations(&self.0, &spec)?
            .into_iter()
            .map(|(path, reason)| v1::Violation { path, reason })
            .collect();
        Ok(Response::new(v1::ValidateCampaignResponse {
            valid: violations.is_empty(),
            violations,
        }))
    }

    async fn get_campaign(
        &self,
        request: Request<v1::GetCampaignRequest>,
    ) -> Result<Response<v1::GetCampaignResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetCampaign)?;
        let metadata = request.metadata().clone();
        let id = request.into_inner().campaign_id;
        let lifecycle = self.existing(nonempty("campaign_id", &id)?)?;
        // Summed over every partition, wherever it is owned.
        let figures = self.0.figures(&metadata).await?;
        let counters = canvass_engine::reports::counters_over(&figures, &id);
        Ok(Response::new(v1::GetCampaignResponse {
            lifecycle: Some(lifecycle),
            counters: Some(counters),
        }))
    }

    async fn list_campaigns(
        &self,
        request: Request<v1::ListCampaignsRequest>,
    ) -> Result<Response<v1::ListCampaignsResponse>, Status> {
        self.0.auth.check(&request, Rpc::ListCampaigns)?;
        let r = request.into_inner();
        let size = page_size(r.page_size);
        let mut campaigns: Vec<v1::CampaignLifecycle> = self
            .0
            .global()
            .lifecycles()
            .map_err(storage)?
            .into_iter()
            .filter(|l| r.page_token.is_empty() || l.campaign_id.as_str() > r.page_token.as_str())
            .take(size + 1)
            .collect();
        let next_page_token = if campaigns.len() > size {
            campaigns.truncate(size);
            campaigns
                .last()
                .map(|l| l.campaign_id.clone())
                .unwrap_or_default()
        } else {
            String::new()
        };
        Ok(Response::new(v1::ListCampaignsResponse {
            campaigns,
            next_page_token,
        }))
    }

    async fn submit_campaign(
        &self,
        request: Request<v1::SubmitCampaignRequest>,
    ) -> Result<Response<v1::SubmitCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::SubmitCampaign).await?;
        Ok(Response::new(v1::SubmitCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn approve_campaign(
        &self,
        request: Request<v1::ApproveCampaignRequest>,
    ) -> Result<Response<v1::ApproveCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::ApproveCampaign).await?;
        Ok(Response::new(v1::ApproveCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn reject_campaign(
        &self,
        request: Request<v1::RejectCampaignRequest>,
    ) -> Result<Response<v1::RejectCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::RejectCampaign).await?;
        Ok(Response::new(v1::RejectCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn launch_campaign(
        &self,
        request: Request<v1::LaunchCampaignRequest>,
    ) -> Result<Response<v1::LaunchCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::LaunchCampaign).await?;
        Ok(Response::new(v1::LaunchCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn pause_campaign(
        &self,
        request: Request<v1::PauseCampaignRequest>,
    ) -> Result<Response<v1::PauseCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::PauseCampaign).await?;
        Ok(Response::new(v1::PauseCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn resume_campaign(
        &self,
        request: Request<v1::ResumeCampaignRequest>,
    ) -> Result<Response<v1::ResumeCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::ResumeCampaign).await?;
        Ok(Response::new(v1::ResumeCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn complete_campaign(
        &self,
        request: Request<v1::CompleteCampaignRequest>,
    ) -> Result<Response<v1::CompleteCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::CompleteCampaign).await?;
        Ok(Response::new(v1::CompleteCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn stop_campaign(
        &self,
        request: Request<v1::StopCampaignRequest>,
    ) -> Result<Response<v1::StopCampaignResponse>, Status> {
        let (seq, lifecycle) = self.lifecycle_step(request, Rpc::StopCampaign).await?;
        Ok(Response::new(v1::StopCampaignResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn new_campaign_version(
        &self,
        request: Request<v1::NewCampaignVersionRequest>,
    ) -> Result<Response<v1::NewCampaignVersionResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::NewCampaignVersion)?;
        let at = record_time(&request)?;
        let r = request.into_inner();
        let spec = checked_spec(&self.0, r.spec)?;
        let id = spec.id.clone();
        self.existing(&id)?;
        let (seq, lifecycle) = self
            .command(&caller, at, &id, r.reason, Command::PutSpec(spec))
            .await?;
        Ok(Response::new(v1::NewCampaignVersionResponse {
            seq,
            lifecycle: Some(lifecycle),
        }))
    }

    async fn get_campaign_spec(
        &self,
        request: Request<v1::GetCampaignSpecRequest>,
    ) -> Result<Response<v1::GetCampaignSpecResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetCampaignSpec)?;
        let r = request.into_inner();
        let id = nonempty("campaign_id", &r.campaign_id)?;
        let spec = self
            .0
            .global()
            .specs()
            .map_err(storage)?
            .into_iter()
            .filter(|s| s.id == id && (r.version == 0 || s.version == r.version))
            .max_by_key(|s| s.version)
            .ok_or_else(|| match r.version {
                0 => Status::not_found(format!("no campaign `{id}`")),
                v => Status::not_found(format!("campaign `{id}` has no version {v}")),
            })?;
        let json = json::to_string(&spec)
            .map_err(|e| Status::internal(format!("the stored spec cannot be encoded: {e}")))?;
        Ok(Response::new(v1::GetCampaignSpecResponse {
            spec: Some(spec),
            json,
        }))
    }

    async fn set_policy(
        &self,
        request: Request<v1::SetPolicyRequest>,
    ) -> Result<Response<v1::SetPolicyResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::SetPolicy)?;
        let at = record_time(&request)?;
        let r = request.into_inner();
        let policy = r.policy.ok_or_else(|| required("policy"))?;
        if let Err(issues) = canvass_core::policy::compile(&policy) {
            let problems: Vec<(String, String)> = issues
                .into_iter()
                .map(|i| (format!("policy.{}", i.path), i.reason))
                .collect();
            return Err(invalid(
                &format!(
                    "the policy has {} problem(s); see the BadRequest details",
                    problems.len()
                ),
                problems,
            ));
        }
        let record = v1::IngestRecord {
            input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                actor: caller.identity.clone(),
                reason: r.reason,
                command: Some(Command::SetPolicy(policy)),
            })),
            at,
        };
        let seq = logged(self.0.submit_one(record, &caller).await?)?;
        Ok(Response::new(v1::SetPolicyResponse {
            seq,
            policy: self.0.global().policy().map_err(storage)?,
        }))
    }

    async fn get_policy(
        &self,
        request: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::GetPolicyResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetPolicy)?;
        Ok(Response::new(v1::GetPolicyResponse {
            policy: self.0.global().policy().map_err(storage)?,
        }))
    }

    async fn put_material(
        &self,
        request: Request<v1::PutMaterialRequest>,
    ) -> Result<Response<v1::MaterialResponse>, Status> {
        let caller = self.0.auth.check(&request, Rpc::PutMaterial)?;
        let at = record_time(&request)?;
        let r = request.into_inner();
        let draft = r.material.ok_or_else(|| required("material"))?;
        let id = nonempty("material.material_id", &draft.material_id)?.to_string();
        self.material_command(&caller, at, r.reason, Command::PutMaterial(draft), &id)
            .await
    }

    async fn approve_material(
        &self,
        request: Request<v1::MaterialVersionRequest>,
    ) -> Result<Response<v1::MaterialResponse>, Status> {
        self.material_version_command(request, Rpc::ApproveMaterial, Command::ApproveMaterial)
            .await
    }

    async fn retire_material(
        &self,
        request: Request<v1::MaterialVersionRequest>,
    ) -> Result<Response<v1::MaterialResponse>, Status> {
        self.material_version_command(request, Rpc::RetireMaterial, Command::RetireMaterial)
            .await
    }

    async fn list_materials(
        &self,
        request: Request<v1::ListMaterialsRequest>,
    ) -> Result<Response<v1::ListMaterialsResponse>, Status> {
        self.0.auth.check(&request, Rpc::ListMaterials)?;
        Ok(Response::new(v1::ListMaterialsResponse {
            materials: self.0.global().materials().map_err(storage)?,
        }))
    }
}

impl Campaigns {
    /// A command on one version of a material (approve, retire), by a caller `rpc` admits.
    async fn material_version_command(
        &self,
        request: Request<v1::MaterialVersionRequest>,
        rpc: Rpc,
        command: fn(v1::MaterialRef) -> Command,
    ) -> Result<Response<v1::MaterialResponse>, Status> {
        let caller = self.0.auth.check(&request, rpc)?;
        let at = record_time(&request)?;
        let r = request.into_inner();
        let which = r.material.ok_or_else(|| required("material"))?;
        let id = nonempty("material.material_id", &which.material_id)?.to_string();
        self.material_command(&caller, at, r.reason, command(which), &id)
            .await
    }

    /// Logs a material command as the caller's and answers with the material as it is now.
    async fn material_command(
        &self,
        caller: &crate::Caller,
        at: Option<canvass_proto::wkt::Timestamp>,
        reason: String,
        command: Command,
        id: &str,
    ) -> Result<Response<v1::MaterialResponse>, Status> {
        let record = v1::IngestRecord {
            input: Some(v1::ingest_record::Input::Command(v1::CampaignCommand {
                actor: caller.identity.clone(),
                reason,
                command: Some(command),
            })),
            at,
        };
        let seq = logged(self.0.submit_one(record, caller).await?)?;
        let material = self
            .0
            .global()
            .materials()
            .map_err(storage)?
            .into_iter()
            .find(|m| m.id == id);
        Ok(Response::new(v1::MaterialResponse { seq, material }))
    }
}
