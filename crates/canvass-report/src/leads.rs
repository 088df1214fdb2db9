//! The leads handed to sales, one row each, for the people who follow them up: who owns
//! what, what is still open and by when it must be accepted.

use canvass_proto::v1;
use serde::{Deserialize, Serialize};

/// One lead.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct LeadRow {
    /// The contact.
    pub contact_id: String,
    /// The opportunity (its hand-off's idempotency key).
    pub opportunity_id: String,
    /// The campaign that handed it over.
    pub campaign_id: String,
    /// Its owner in sales.
    pub owner: String,
    /// What chose that owner: an assignment rule's name, `param`, `fallback`, `default`,
    /// `command` or `event`.
    pub assigned_by: String,
    /// OPEN, ACCEPTED, BREACHED, WON or LOST.
    pub status: String,
    /// When it was handed over.
    pub opened_at: String,
    /// When it had to be accepted.
    pub respond_by: String,
    /// When it was accepted, breached, won or lost.
    pub settled_at: String,
    /// Won amount.
    pub amount: String,
}

/// The leads of `contacts` (id and state), filtered by owner and by "open or accepted"
/// (`live`), ordered by owner, then by deadline.
#[must_use]
pub fn build<'a>(
    contacts: impl IntoIterator<Item = (&'a str, &'a v1::ContactState)>,
    owner: Option<&str>,
    live_only: bool,
) -> Vec<LeadRow> {
    let time =
        |t: Option<&canvass_proto::wkt::Timestamp>| t.map(ToString::to_string).unwrap_or_default();
    let mut rows: Vec<LeadRow> = contacts
        .into_iter()
        .flat_map(|(id, state)| state.opportunities.iter().map(move |o| (id, o)))
        .filter(|(_, o)| owner.is_none_or(|w| o.owner == w))
        .filter(|(_, o)| {
            !live_only
                || matches!(
                    o.status(),
                    v1::OpportunityStatus::Open | v1::OpportunityStatus::Accepted
                )
        })
        .map(|(id, o)| LeadRow {
            contact_id: id.to_string(),
            opportunity_id: o.id.clone(),
            campaign_id: o.campaign_id.clone(),
            owner: o.owner.clone(),
            assigned_by: o
                .assignments
                .last()
                .map(|a| a.rule.clone())
                .unwrap_or_default(),
            status: o
                .status()
                .as_str_name()
                .trim_start_matches("OPPORTUNITY_STATUS_")
                .to_string(),
            opened_at: time(o.opened_at.as_ref()),
            respond_by: time(o.respond_by.as_ref()),
            settled_at: time(o.settled_at.as_ref()),
            amount: o.amount.clone(),
        })
        .collect();
    rows.sort_by(|a, b| {
        (&a.owner, &a.respond_by, &a.opportunity_id).cmp(&(
            &b.owner,
            &b.respond_by,
            &b.opportunity_id,
        ))
    });
    rows
}
