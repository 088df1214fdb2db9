//! What customers say (seed 002): satisfaction from survey answers per campaign, segment,
//! tier and period, and complaint and fault rates per segment, tier, product and period.
//!
//! Definitions (also in docs/reports.md):
//! - a *respondent* is a contact's latest answer about one campaign (within the period, for
//!   a period's row): a contact who answered twice about a campaign counts once, with its
//!   newer score;
//! - *mean* is the mean of the respondents' scores (0-10); the *distribution* counts them per
//!   score; *NPS* = % promoters (9-10) - % detractors (0-6), from -100 to 100 (Reichheld);
//! - a campaign's *segment* is its `segment` label; a contact's *tier* is its tier in the
//!   pyramid at `as_of` (contacts without purchases have none and are in no tier row);
//! - *complaint rate* = contacts who complained / contacts of the row: all contacts (`all`,
//!   each `period`), the contacts ever enrolled in a campaign of the segment, the customers
//!   of the tier, the contacts who bought the product or raised a concern naming it;
//!   likewise the *fault rate*. A product's row counts the complaints and faults that name
//!   it; a period's those raised in it.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use canvass_core::{
    UnixMillis,
    satisfaction::{Group, MAX_SCORE, group},
};
use canvass_proto::v1;
use serde::{Deserialize, Serialize};

use crate::{NO_SEGMENT, ratio, value::Customer};

/// Satisfaction of one group of respondents.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SatisfactionRow {
    /// `all`, `campaign`, `segment`, `tier` or `period`.
    pub by: String,
    /// The campaign, segment, tier or period start; `all` for the whole.
    pub name: String,
    /// Respondents (a contact's latest answer per campaign).
    pub respondents: u64,
    /// Their mean score.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean: Option<f64>,
    /// Respondents per score, 0 to 10.
    pub distribution: Vec<u64>,
    /// Scores 9-10.
    pub promoters: u64,
    /// Scores 7-8.
    pub passives: u64,
    /// Scores 0-6.
    pub detractors: u64,
    /// % promoters - % detractors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nps: Option<f64>,
}

/// Complaints and faults of one group of contacts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ConcernRow {
    /// `all`, `segment`, `tier`, `product` or `period`.
    pub by: String,
    /// The segment, tier, product or period start; `all` for the whole.
    pub name: String,
    /// Contacts the rates are over.
    pub contacts: u64,
    /// Complaints raised.
    pub complaints: u64,
    /// Contacts who raised one.
    pub complainants: u64,
    /// complainants / contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complaint_rate: Option<f64>,
    /// Faults reported.
    pub faults: u64,
    /// Contacts who reported one.
    pub fault_reporters: u64,
    /// `fault_reporters` / contacts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fault_rate: Option<f64>,
}

/// The periods a report reads: `(start, end)`, oldest first, the last ending at `as_of`.
pub(crate) type Periods = [(UnixMillis, UnixMillis)];

/// One respondent: a contact's latest answer about a campaign.
struct Respondent<'c> {
    contact: &'c Customer,
    campaign: &'c str,
    score: u32,
}

fn at(t: Option<&canvass_proto::wkt::Timestamp>) -> UnixMillis {
    t.map(UnixMillis::from_proto).unwrap_or_default()
}

/// The latest answer of each contact about each campaign within `[from, to]`.
fn respondents(contacts: &[Customer], from: UnixMillis, to: UnixMillis) -> Vec<Respondent<'_>> {
    let mut out = Vec::new();
    for c in contacts {
        let mut latest: BTreeMap<&str, (UnixMillis, usize, u32)> = BTreeMap::new();
        for (i, s) in c.surveys.iter().enumerate() {
            let t = at(s.at.as_ref());
            // Scores off the scale are refused at intake; one from an older store is skipped.
            if t < from || t > to || s.score > MAX_SCORE {
                continue;
            }
            let entry = latest.entry(&s.campaign_id).or_insert((t, i, s.score));
            if (t, i) >= (entry.0, entry.1) {
                *entry = (t, i, s.score);
            }
        }
        out.extend(
            latest
                .into_iter()
                .map(|(campaign, (_, _, score))| Respondent {
                    contact: c,
                    campaign,
                    score,
                }),
        );
    }
    out
}

fn satisfaction_row<'a>(
    by: &str,
    name: &str,
    scores: impl Iterator<Item = &'a Respondent<'a>>,
) -> SatisfactionRow {
    let mut distribution = vec![0u64; MAX_SCORE as usize + 1];
    let (mut sum, mut count) = (0u64, 0u64);
    let (mut promoters, mut passives, mut detractors) = (0, 0, 0);
    for r in scores {
        distribution[r.score as usize] += 1;
        sum += u64::from(r.score);
        count += 1;
        match group(r.score) {
            Group::Promoter => promoters += 1,
            Group::Passive => passives += 1,
            Group::Detractor => detractors += 1,
        }
    }
    SatisfactionRow {
        by: by.to_string(),
        name: name.to_string(),
        respondents: count,
        mean: ratio(sum, count),
        distribution,
        promoters,
        passives,
        detractors,
        #[allow(clippy::cast_precision_loss)]
        nps: (count > 0).then(|| (promoters as f64 - detractors as f64) * 100.0 / count as f64),
    }
}

/// The satisfaction rows: all, then per campaign, segment, tier and period.
pub(crate) fn satisfaction(
    contacts: &[Customer],
    tier_of: &HashMap<&str, &str>,
    segments: &BTreeMap<String, String>,
    as_of: UnixMillis,
    periods: &Periods,
) -> Vec<SatisfactionRow> {
    let all = respondents(contacts, UnixMillis(i64::MIN), as_of);
    let segment = |campaign: &str| {
        segments
            .get(campaign)
            .map_or(NO_SEGMENT, String::as_str)
            .to_string()
    };
    let mut rows = vec![satisfaction_row("all", "all", all.iter())];
    let campaigns: BTreeSet<&str> = all.iter().map(|r| r.campaign).collect();
    for campaign in campaigns {
        rows.push(satisfaction_row(
            "campaign",
            campaign,
            all.iter().filter(|r| r.campaign == campaign),
        ));
    }
    let names: BTreeSet<String> = all.iter().map(|r| segment(r.campaign)).collect();
    for name in names {
        rows.push(satisfaction_row(
            "segment",
            &name,
            all.iter().filter(|r| segment(r.campaign) == name),
        ));
    }
    for tier in crate::value::TIERS {
        rows.push(satisfaction_row(
            "tier",
            tier,
            all.iter()
                .filter(|r| tier_of.get(r.contact.id.as_str()) == Some(&tier)),
        ));
    }
    for (start, end) in periods {
        // Answers in [start, end), the last period closed at `as_of` like the `all` rows.
        let last = if *end >= as_of {
            *end
        } else {
            UnixMillis(end.0 - 1)
        };
        let within = respondents(contacts, *start, last);
        rows.push(satisfaction_row(
            "period",
            &start.to_string(),
            within.iter(),
        ));
    }
    rows
}

/// The complaints and faults of `members` raised in `[from, to)` and naming `product` when
/// one is given.
fn concern_row<'a>(
    by: &str,
    name: &str,
    contacts: u64,
    members: impl Iterator<Item = &'a Customer>,
    (from, to): (UnixMillis, UnixMillis),
    product: Option<&str>,
) -> ConcernRow {
    let (mut complaints, mut complainants, mut faults, mut reporters) = (0, 0, 0, 0);
    for c in members {
        let raised = |kind: v1::IssueKind| {
            c.issues
                .iter()
                .filter(move |i| i.kind() == kind)
                .filter(move |i| (from..to).contains(&at(i.at.as_ref())))
                .filter(move |i| product.is_none_or(|p| i.product == p))
                .count() as u64
        };
        let (k, f) = (
            raised(v1::IssueKind::Complaint),
            raised(v1::IssueKind::Fault),
        );
        complaints += k;
        faults += f;
        complainants += u64::from(k > 0);
        reporters += u64::from(f > 0);
    }
    ConcernRow {
        by: by.to_string(),
        name: name.to_string(),
        contacts,
        complaints,
        complainants,
        complaint_rate: ratio(complainants, contacts),
        faults,
        fault_reporters: reporters,
        fault_rate: ratio(reporters, contacts),
    }
}

/// The complaint and fault rows: all, then per segment, tier, product and period.
pub(crate) fn concerns(
    contacts: &[Customer],
    tier_of: &HashMap<&str, &str>,
    segments: &BTreeMap<String, String>,
    as_of: UnixMillis,
    periods: &Periods,
) -> Vec<ConcernRow> {
    let ever = (UnixMillis(i64::MIN), UnixMillis(as_of.0.saturating_add(1)));
    let count = |n: usize| n as u64;
    let mut rows = vec![concern_row(
        "all",
        "all",
        count(contacts.len()),
        contacts.iter(),
        ever,
        None,
    )];
    let segment_of = |campaign: &str| {
        segments
            .get(campaign)
            .map_or(NO_SEGMENT, String::as_str)
            .to_string()
    };
    let in_segment = |c: &Customer, name: &str| c.campaigns.iter().any(|id| segment_of(id) == name);
    let names: BTreeSet<String> = contacts
        .iter()
        .flat_map(|c| c.campaigns.iter().map(|id| segment_of(id)))
        .collect();
    for name in names {
        let members: Vec<&Customer> = contacts.iter().filter(|c| in_segment(c, &name)).collect();
        rows.push(concern_row(
            "segment",
            &name,
            count(members.len()),
            members.into_iter(),
            ever,
            None,
        ));
    }
    for tier in crate::value::TIERS {
        let members: Vec<&Customer> = contacts
            .iter()
            .filter(|c| tier_of.get(c.id.as_str()) == Some(&tier))
            .collect();
        rows.push(concern_row(
            "tier",
            tier,
            count(members.len()),
            members.into_iter(),
            ever,
            None,
        ));
    }
    let products: BTreeSet<&str> = contacts
        .iter()
        .flat_map(|c| {
            c.products
                .iter()
                .map(String::as_str)
                .chain(c.issues.iter().map(|i| i.product.as_str()))
        })
        .filter(|p| !p.is_empty())
        .collect();
    for product in products {
        // Its buyers, and whoever raised a concern naming it without having bought it.
        let concerned: Vec<&Customer> = contacts
            .iter()
            .filter(|c| {
                c.products.iter().any(|p| p == product)
                    || c.issues.iter().any(|i| i.product == product)
            })
            .collect();
        rows.push(concern_row(
            "product",
            product,
            count(concerned.len()),
            concerned.into_iter(),
            ever,
            Some(product),
        ));
    }
    for (start, end) in periods {
        // The last period is closed at `as_of`, like the `all` rows.
        let end = if *end >= as_of { ever.1 } else { *end };
        rows.push(concern_row(
            "period",
            &start.to_string(),
            count(contacts.len()),
            contacts.iter(),
            (*start, end),
            None,
        ));
    }
    rows
}
