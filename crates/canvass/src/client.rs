//! `canvass campaign ...` and `canvass token ...`: operating a running engine over gRPC.
//!
//! The bearer token comes from `CANVASS_TOKEN` (never a flag: flags show in `ps`), the
//! server from `--server` or `CANVASS_SERVER`. Answers print as canonical JSON; a refused
//! call prints its gRPC status and every field violation, and exits with 1.

use std::{io::Read, path::PathBuf, process::ExitCode};

use anyhow::Context as _;
use canvass_proto::{json, v1};
use canvass_server::api::campaign_service_client::CampaignServiceClient;
use clap::Subcommand;
use tonic::{
    Request, Status,
    transport::{Certificate, Channel, ClientTlsConfig, Identity},
};
use tonic_types::StatusExt;

use crate::input;

/// How to reach a running engine's gRPC API securely (beside its address).
#[derive(Debug, Clone, clap::Args)]
pub struct Tls {
    /// PEM CA bundle to trust for an `https://` server.
    #[arg(long, value_name = "FILE")]
    ca: Option<PathBuf>,
    /// PEM client certificate, for a server that requires mutual TLS (with `--key`).
    #[arg(
        long,
        value_name = "FILE",
        requires = "key",
        env = "CANVASS_CLIENT_CERT"
    )]
    cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(
        long,
        value_name = "FILE",
        requires = "cert",
        env = "CANVASS_CLIENT_KEY"
    )]
    key: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct CampaignArgs {
    /// The engine's gRPC address.
    #[arg(long, env = "CANVASS_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    #[command(flatten)]
    tls: Tls,
    #[command(subcommand)]
    command: CampaignCommand,
}

#[derive(Debug, Subcommand)]
enum CampaignCommand {
    /// Loads the first version of a campaign as a draft.
    Create {
        /// Spec file (canonical JSON).
        spec: PathBuf,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Loads a new version of an existing campaign as a draft.
    NewVersion {
        /// Spec file (canonical JSON).
        spec: PathBuf,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Checks a spec on the server; prints every violation with its path.
    Validate {
        /// Spec file (canonical JSON).
        spec: PathBuf,
    },
    /// A campaign's lifecycle and counters.
    Get { campaign: String },
    /// Every campaign.
    List,
    /// A stored spec, as canonical JSON.
    Spec {
        campaign: String,
        /// Version; 0 for the newest.
        #[arg(long, default_value_t = 0)]
        version: u32,
    },
    /// Asks for approval of a draft version.
    Submit {
        campaign: String,
        version: u32,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Approves a version pending approval.
    Approve {
        campaign: String,
        version: u32,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Rejects a version pending approval.
    Reject {
        campaign: String,
        version: u32,
        #[arg(long)]
        reason: String,
    },
    /// Launches the newest approved version.
    Launch {
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Pauses a running campaign.
    Pause {
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Resumes a paused campaign.
    Resume {
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Stops enrollment and lets journeys finish.
    Complete {
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Ends every journey now.
    Stop {
        campaign: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Puts a new version of a marketing material as a draft (you are its author).
    PutMaterial {
        /// A `MaterialDraft` as canonical JSON (`materialId`, `version`, `channel`,
        /// `contentRef`, `description`).
        draft: PathBuf,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Approves a draft version of a material (someone other than its author).
    ApproveMaterial {
        material: String,
        version: u32,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Retires a version of a material.
    RetireMaterial {
        material: String,
        version: u32,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// The catalog of materials.
    Materials,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Reads a token on standard input and prints the SHA-256 the settings file holds.
    Hash,
}

pub fn token(command: &TokenCommand) -> anyhow::Result<ExitCode> {
    match command {
        TokenCommand::Hash => {
            let mut token = String::new();
            std::io::stdin().read_to_string(&mut token)?;
            let token = token.trim();
            anyhow::ensure!(!token.is_empty(), "no token on standard input");
            out!("{}", canvass_server::hash_token(token));
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(crate) fn with_token<T>(message: T) -> anyhow::Result<Request<T>> {
    let token = std::env::var("CANVASS_TOKEN").context("set CANVASS_TOKEN to your bearer token")?;
    let mut request = Request::new(message);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", token.trim())
            .parse()
            .context("CANVASS_TOKEN holds characters a header cannot")?,
    );
    Ok(request)
}

/// The server could not be reached, or answered that it cannot serve now (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(String);

/// A refused call, with its field violations, as the error to print.
pub(crate) fn refused(status: &Status) -> anyhow::Error {
    let mut text = format!("{:?}: {}", status.code(), status.message());
    if let Some(bad) = status.get_details_bad_request() {
        for v in bad.field_violations {
            text.push_str(&format!("\n  {}: {}", v.field, v.description));
        }
    }
    match status.code() {
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => Unavailable(text).into(),
        _ => anyhow::anyhow!(text),
    }
}

/// A channel to the engine at `server`.
pub(crate) async fn connect(server: &str, args: &Tls) -> anyhow::Result<Channel> {
    let mut endpoint = Channel::from_shared(server.to_string())
        .with_context(|| format!("bad server address {server}"))?;
    let read = |path: &PathBuf| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    if args.ca.is_some() || args.cert.is_some() {
        let mut tls = ClientTlsConfig::new();
        if let Some(ca) = &args.ca {
            tls = tls.ca_certificate(Certificate::from_pem(read(ca)?));
        }
        if let (Some(cert), Some(key)) = (&args.cert, &args.key) {
            tls = tls.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        endpoint = endpoint.tls_config(tls)?;
    }
    endpoint
        .connect()
        .await
        .map_err(|e| Unavailable(format!("cannot reach {server}: {e}")).into())
}

/// Runs `call` on a small runtime of its own: the CLI's gRPC calls.
pub(crate) fn block_on<T>(call: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(call)
}

fn print<M: serde::Serialize>(message: &M) -> anyhow::Result<()> {
    out!("{}", json::to_string(message)?);
    Ok(())
}

pub fn campaign(args: &CampaignArgs) -> anyhow::Result<ExitCode> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(campaign_call(args))
}

async fn campaign_call(args: &CampaignArgs) -> anyhow::Result<ExitCode> {
    use CampaignCommand as C;
    let mut client = CampaignServiceClient::new(connect(&args.server, &args.tls).await?);
    let version_ref = |campaign: &str, version: u32| (campaign.to_string(), version);
    macro_rules! call {
        ($method:ident, $message:expr) => {{
            let response = client
                .$method(with_token($message)?)
                .await
                .map_err(|s| refused(&s))?;
            print(response.get_ref())?;
        }};
    }
    let material_ref = |material: &str, version: u32, reason: &str| v1::MaterialVersionRequest {
        material: Some(v1::MaterialRef {
            material_id: material.to_string(),
            version,
        }),
        reason: reason.to_string(),
    };
    match &args.command {
        C::PutMaterial { draft, reason } => {
            let text = std::fs::read_to_string(draft)
                .with_context(|| format!("cannot read {}", draft.display()))?;
            let draft: v1::MaterialDraft = json::from_str(&text)
                .with_context(|| format!("{}: not a material draft", draft.display()))?;
            call!(
                put_material,
                v1::PutMaterialRequest {
                    material: Some(draft),
                    reason: reason.clone(),
                }
            )
        }
        C::ApproveMaterial {
            material,
            version,
            reason,
        } => call!(approve_material, material_ref(material, *version, reason)),
        C::RetireMaterial {
            material,
            version,
            reason,
        } => call!(retire_material, material_ref(material, *version, reason)),
        C::Materials => call!(list_materials, v1::ListMaterialsRequest::default()),
        C::Create { spec, reason } => call!(
            create_campaign,
            v1::CreateCampaignRequest {
                spec: Some(input::read_spec(spec)?),
                reason: reason.clone(),
            }
        ),
        C::NewVersion { spec, reason } => call!(
            new_campaign_version,
            v1::NewCampaignVersionRequest {
                spec: Some(input::read_spec(spec)?),
                reason: reason.clone(),
            }
        ),
        C::Validate { spec } => {
            let response = client
                .validate_campaign(with_token(v1::ValidateCampaignRequest {
                    spec: Some(input::read_spec(spec)?),
                })?)
                .await
                .map_err(|s| refused(&s))?
                .into_inner();
            print(&response)?;
            if !response.valid {
                return Ok(ExitCode::from(crate::EXIT_INVALID_INPUT));
            }
        }
        C::Get { campaign } => call!(
            get_campaign,
            v1::GetCampaignRequest {
                campaign_id: campaign.clone(),
            }
        ),
        C::List => call!(list_campaigns, v1::ListCampaignsRequest::default()),
        C::Spec { campaign, version } => {
            let response = client
                .get_campaign_spec(with_token(v1::GetCampaignSpecRequest {
                    campaign_id: campaign.clone(),
                    version: *version,
                })?)
                .await
                .map_err(|s| refused(&s))?;
            out!("{}", response.get_ref().json);
        }
        C::Submit {
            campaign,
            version,
            reason,
        } => {
            let (campaign_id, version) = version_ref(campaign, *version);
            call!(
                submit_campaign,
                v1::SubmitCampaignRequest {
                    campaign_id,
                    version,
                    reason: reason.clone(),
                }
            )
        }
        C::Approve {
            campaign,
            version,
            reason,
        } => {
            let (campaign_id, version) = version_ref(campaign, *version);
            call!(
                approve_campaign,
                v1::ApproveCampaignRequest {
                    campaign_id,
                    version,
                    reason: reason.clone(),
                }
            )
        }
        C::Reject {
            campaign,
            version,
            reason,
        } => {
            let (campaign_id, version) = version_ref(campaign, *version);
            call!(
                reject_campaign,
                v1::RejectCampaignRequest {
                    campaign_id,
                    version,
                    reason: reason.clone(),
                }
            )
        }
        C::Launch { campaign, reason } => call!(
            launch_campaign,
            v1::LaunchCampaignRequest {
                campaign_id: campaign.clone(),
                reason: reason.clone(),
            }
        ),
        C::Pause { campaign, reason } => call!(
            pause_campaign,
            v1::PauseCampaignRequest {
                campaign_id: campaign.clone(),
                reason: reason.clone(),
            }
        ),
        C::Resume { campaign, reason } => call!(
            resume_campaign,
            v1::ResumeCampaignRequest {
                campaign_id: campaign.clone(),
                reason: reason.clone(),
            }
        ),
        C::Complete { campaign, reason } => call!(
            complete_campaign,
            v1::CompleteCampaignRequest {
                campaign_id: campaign.clone(),
                reason: reason.clone(),
            }
        ),
        C::Stop { campaign, reason } => call!(
            stop_campaign,
            v1::StopCampaignRequest {
                campaign_id: campaign.clone(),
                reason: reason.clone(),
            }
        ),
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct HealthArgs {
    /// The engine's gRPC address.
    #[arg(long, env = "CANVASS_SERVER", default_value = "http://127.0.0.1:50051")]
    server: String,
    /// The service to ask about (the empty name: the engine as a whole).
    #[arg(long, default_value = "")]
    service: String,
    /// How long to wait for the answer, connection included, in milliseconds.
    #[arg(long, default_value_t = 3000)]
    timeout_ms: u64,
    #[command(flatten)]
    tls: Tls,
}

/// `canvass health`: asks a running engine's standard gRPC health service whether it
/// serves (exit 0), for container health checks and supervisors; it does not (exit 1), or it
/// cannot be reached (exit 3).
pub fn health(args: &HealthArgs) -> anyhow::Result<ExitCode> {
    use tonic_health::pb::{
        HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
    };
    let limit = std::time::Duration::from_millis(args.timeout_ms);
    block_on(async {
        let ask = async {
            let mut client = HealthClient::new(connect(&args.server, &args.tls).await?);
            let answer = client
                .check(HealthCheckRequest {
                    service: args.service.clone(),
                })
                .await
                .map_err(|s| refused(&s))?;
            anyhow::Ok(answer.into_inner().status())
        };
        let status = tokio::time::timeout(limit, ask).await.map_err(|_| {
            Unavailable(format!("{} did not answer within {limit:?}", args.server))
        })??;
        out!("{}", status.as_str_name());
        Ok(if status == ServingStatus::Serving {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}
