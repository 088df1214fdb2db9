//! `ReportService`: what campaigns achieved (counters and group sizes; the performance report
//! with attribution, ROI, uplift and density) and what customers are worth (the value report).

use std::str::FromStr;

use canvass_core::UnixMillis;
use canvass_engine::reports::{campaign_data_over, input_counters_over, partition_figures};
use canvass_proto::v1;
use canvass_report::{Allocation, Model, Options, charts::Format, value::ValueOptions};
use rust_decimal::Decimal;
use tonic::{Request, Response, Status};

use crate::{
    Shared, api::report_service_server::ReportService, auth::Rpc, invalid, required, storage,
};

pub(crate) struct Reports(pub(crate) Shared);

fn bad(field: &str, reason: String) -> Status {
    invalid(
        &format!("field `{field}`: {reason}"),
        vec![(field.to_string(), reason)],
    )
}

/// Reading the store for a report failed, or a campaign is unknown.
fn unreadable(reason: String) -> Status {
    if reason.starts_with("no campaign") {
        Status::not_found(reason)
    } else {
        Status::internal(format!("reading the store failed: {reason}"))
    }
}

/// A report's message, read from its JSON document (which is the message's canonical JSON).
fn typed<T: serde::de::DeserializeOwned>(json: &str) -> Result<T, Status> {
    canvass_proto::json::from_str(json)
        .map_err(|e| Status::internal(format!("the report does not fit its message: {e}")))
}

/// A chart drawn as SVG, as the message's text.
fn chart_svg(drawn: Result<Vec<u8>, String>) -> Result<String, Status> {
    drawn
        .and_then(|svg| String::from_utf8(svg).map_err(|e| e.to_string()))
        .map_err(Status::internal)
}

fn json<T: serde::Serialize>(report: &T) -> Result<String, Status> {
    serde_json::to_string(report).map_err(|e| Status::internal(e.to_string()))
}

#[tonic::async_trait]
impl ReportService for Reports {
    async fn get_campaign_report(
        &self,
        request: Request<v1::GetCampaignReportRequest>,
    ) -> Result<Response<v1::GetCampaignReportResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetCampaignReport)?;
        if request.get_ref().campaign_id.trim().is_empty() {
            return Err(required("campaign_id"));
        }
        let figures = self.0.figures(request.metadata()).await?;
        let id = request.into_inner().campaign_id;
        let data = campaign_data_over(self.0.catalog(), &figures, std::slice::from_ref(&id))
            .map_err(unreadable)?;
        let Some(campaign) = data.into_iter().next() else {
            return Err(Status::not_found(format!("no campaign `{id}`")));
        };
        Ok(Response::new(v1::GetCampaignReportResponse {
            counters: Some(campaign.counters),
            groups: campaign
                .groups
                .into_iter()
                .map(|(group, contacts)| v1::GroupSize { group, contacts })
                .collect(),
        }))
    }

    async fn get_performance_report(
        &self,
        request: Request<v1::GetPerformanceReportRequest>,
    ) -> Result<Response<v1::GetPerformanceReportResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetPerformanceReport)?;
        let figures = self.0.figures(request.metadata()).await?;
        let r = request.into_inner();
        let model = match r.model() {
            v1::AttributionModel::Unspecified | v1::AttributionModel::LastTouch => Model::LastTouch,
            v1::AttributionModel::FirstTouch => Model::FirstTouch,
            v1::AttributionModel::Linear => Model::Linear,
        };
        let allocation = match r.allocation() {
            v1::CostAllocation::Unspecified | v1::CostAllocation::Contacts => Allocation::Contacts,
            v1::CostAllocation::DirectCost => Allocation::DirectCost,
        };
        let indirect_cost = if r.indirect_cost.is_empty() {
            None
        } else {
            Some(Decimal::from_str(&r.indirect_cost).map_err(|_| {
                bad(
                    "indirect_cost",
                    format!("`{}` is not a decimal amount", r.indirect_cost),
                )
            })?)
        };
        let data =
            campaign_data_over(self.0.catalog(), &figures, &r.campaign_ids).map_err(unreadable)?;
        let mut report = canvass_report::build(
            &data,
            &Options {
                model,
                indirect_cost,
                allocation,
            },
        );
        // As `canvass report` counts them: late events and revenue over every partition.
        report.with_inputs(&input_counters_over(&figures));
        let report_json = json(&report)?;
        Ok(Response::new(v1::GetPerformanceReportResponse {
            report: Some(typed(&report_json)?),
            report_json,
            funnel_svg: chart_svg(canvass_report::charts::performance(&report, Format::Svg))?,
        }))
    }

    async fn get_value_report(
        &self,
        request: Request<v1::GetValueReportRequest>,
    ) -> Result<Response<v1::GetValueReportResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetValueReport)?;
        let metadata = request.metadata().clone();
        let r = request.into_inner();
        let defaults = ValueOptions::default();
        let tier_percents = match r.tier_percents[..] {
            [] => defaults.tier_percents,
            [a, b, c] if a + b + c <= 100 => [a, b, c],
            _ => {
                return Err(bad(
                    "tier_percents",
                    "three percents (tiers A, B, C) adding up to at most 100".into(),
                ));
            }
        };
        let margin = if r.margin.is_empty() {
            Decimal::ONE
        } else {
            Decimal::from_str(&r.margin)
                .ok()
                .filter(|m| *m >= Decimal::ZERO && *m <= Decimal::ONE)
                .ok_or_else(|| {
                    bad(
                        "margin",
                        format!("`{}` is not a share between 0 and 1", r.margin),
                    )
                })?
        };
        let as_of = match &r.as_of {
            Some(t) => UnixMillis::from_proto(t),
            None => self
                .0
                .figures(&metadata)
                .await?
                .iter()
                .filter_map(|f| f.last_applied_at.as_ref())
                .map(UnixMillis::from_proto)
                .max()
                .unwrap_or_default(),
        };
        let options = ValueOptions {
            as_of,
            churn_days: if r.churn_days == 0 {
                defaults.churn_days
            } else {
                r.churn_days
            },
            tier_percents,
            margin,
            period_days: if r.period_days == 0 {
                defaults.period_days
            } else {
                r.period_days
            },
            periods: if r.periods == 0 {
                defaults.periods
            } else {
                r.periods
            },
            all_contacts: r.all_contacts,
            segments: canvass_report::segments(
                &self
                    .0
                    .catalog()
                    .specs()
                    .map_err(|e| Status::internal(format!("reading the store failed: {e}")))?,
            ),
        };
        let contacts: Vec<_> = self
            .0
            .contact_states(&metadata)
            .await?
            .iter()
            .map(canvass_report::value::Customer::from_state)
            .collect();
        let report = canvass_report::value::build(&contacts, &options);
        let report_json = json(&report)?;
        Ok(Response::new(v1::GetValueReportResponse {
            report: Some(typed(&report_json)?),
            report_json,
            pyramid_svg: chart_svg(canvass_report::charts::value(&report, Format::Svg))?,
        }))
    }

    async fn get_partition_figures(
        &self,
        request: Request<v1::GetPartitionFiguresRequest>,
    ) -> Result<Response<v1::GetPartitionFiguresResponse>, Status> {
        self.0.auth.check(&request, Rpc::GetPartitionFigures)?;
        let asked = request.into_inner().partitions;
        let stores = self.0.stores.clone();
        let partitions = tokio::task::spawn_blocking(move || {
            owned_of(&stores, &asked)
                .into_iter()
                .map(|p| partition_figures(stores.partition(p), p))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(storage)?;
        Ok(Response::new(v1::GetPartitionFiguresResponse {
            partitions,
        }))
    }

    type ListPartitionContactsStream = std::pin::Pin<
        Box<
            dyn futures::Stream<Item = Result<v1::ListPartitionContactsResponse, Status>>
                + Send
                + 'static,
        >,
    >;

    async fn list_partition_contacts(
        &self,
        request: Request<v1::ListPartitionContactsRequest>,
    ) -> Result<Response<Self::ListPartitionContactsStream>, Status> {
        self.0.auth.check(&request, Rpc::ListPartitionContacts)?;
        let asked = request.into_inner().partitions;
        let stores = self.0.stores.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        // Read off the async workers, a page at a time as the caller takes them.
        tokio::task::spawn_blocking(move || {
            for &p in &asked {
                if !stores.owns(p) {
                    let _ = tx.blocking_send(Err(crate::group::owned_elsewhere(
                        p,
                        None,
                        "this engine does not own it now",
                    )));
                    return;
                }
            }
            for p in asked {
                let contacts = match crate::group::partition_contacts(stores.partition(p)) {
                    Ok(c) => c,
                    Err(e) => {
                        let _ = tx.blocking_send(Err(storage(e)));
                        return;
                    }
                };
                // Read from a copy this engine may have lost meanwhile: then it is stale.
                if !stores.owns(p) {
                    let _ = tx.blocking_send(Err(crate::group::owned_elsewhere(
                        p,
                        None,
                        "this engine lost it while reading it",
                    )));
                    return;
                }
                // Pages bounded in bytes, well under any message limit.
                let mut page = Vec::new();
                let mut bytes = 0;
                let last = contacts.len();
                for (i, state) in contacts.into_iter().enumerate() {
                    bytes += prost::Message::encoded_len(&state);
                    page.push(state);
                    if bytes >= CONTACTS_PAGE_BYTES || i + 1 == last {
                        let message = v1::ListPartitionContactsResponse {
                            partition: p,
                            contacts: std::mem::take(&mut page),
                        };
                        bytes = 0;
                        if tx.blocking_send(Ok(message)).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}

/// Bytes of contact states per page of `ListPartitionContacts` (a page may pass it by one
/// contact, itself within the message limit).
const CONTACTS_PAGE_BYTES: usize = 1024 * 1024;

/// The partitions of `asked` this engine owns now.
fn owned_of(stores: &canvass_store::Stores, asked: &[u32]) -> Vec<u32> {
    asked
        .iter()
        .copied()
        .filter(|&p| p < stores.layout().partitions && stores.owns(p))
        .collect()
}
