//! `ReportService`: what a campaign achieved so far (counters and response-group sizes).

use std::collections::BTreeSet;

use canvass_proto::v1;
use tonic::{Request, Response, Status};

use crate::{Shared, api::report_service_server::ReportService, auth::Rpc, required, storage};

pub(crate) struct Reports(pub(crate) Shared);

#[tonic::async_trait]
impl ReportService for Reports {
    async fn get_campaign_report(
        &self,
        request: Request<v1::GetCampaignReportRequest>,
    ) -> Result<Response<v1::GetCampaignReportResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetCampaignReport)?;
        let id = request.into_inner().campaign_id;
        if id.trim().is_empty() {
            return Err(required("campaign_id"));
        }
        let store = &self.0.store;
        if store.lifecycle(&id).map_err(storage)?.is_none() {
            return Err(Status::not_found(format!("no campaign `{id}`")));
        }
        // Every group any version declares, so that empty groups show as 0.
        let labels: BTreeSet<String> = store
            .specs()
            .map_err(storage)?
            .iter()
            .filter(|s| s.id == id)
            .flat_map(|s| s.states.iter().map(|st| st.response_group.clone()))
            .filter(|g| !g.is_empty())
            .collect();
        let mut groups = Vec::new();
        for group in labels {
            let contacts = store.group_members(&id, &group).count() as u64;
            groups.push(v1::GroupSize { group, contacts });
        }
        Ok(Response::new(v1::GetCampaignReportResponse {
            counters: Some(store.counters(&id).map_err(storage)?),
            groups,
        }))
    }
}
