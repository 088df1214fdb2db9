//! Reads what the reports need from a data directory's partitions: each campaign's latest
//! spec and status (the same in every partition: commands are logged in each), its counters
//! and response-group sizes summed over the partitions.

use std::collections::{BTreeMap, BTreeSet};

use canvass_core::machine::HOLDOUT_GROUP;
use canvass_proto::v1;
use canvass_report::CampaignData;
use canvass_store::{Store, Stores};

use crate::durable::Result;

/// The campaigns `only` names (every campaign when empty), by id; an unknown id is an error.
///
/// # Errors
/// A store error, or an id no campaign has.
pub fn campaign_data(stores: &Stores, only: &[String]) -> Result<Vec<CampaignData>, String> {
    let figures = stores
        .iter()
        .enumerate()
        .map(|(p, store)| partition_figures(store, u32::try_from(p).unwrap_or(u32::MAX)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    campaign_data_over(stores.partition(0), &figures, only)
}

/// What partition `partition` (its store) adds to the reports: each campaign's counters and
/// response-group sizes there, its input counters and the time of its last input.
///
/// # Errors
/// A store error.
pub fn partition_figures(
    store: &Store,
    partition: u32,
) -> Result<v1::PartitionFigures, canvass_store::Error> {
    let specs = store.specs()?;
    let mut campaigns = Vec::new();
    for l in store.lifecycles()? {
        let versions: Vec<_> = specs.iter().filter(|s| s.id == l.campaign_id).collect();
        let mut groups: BTreeSet<String> = versions
            .iter()
            .flat_map(|s| s.states.iter().map(|st| st.response_group.clone()))
            .filter(|g| !g.is_empty())
            .collect();
        if versions.iter().any(|s| s.split.is_some()) {
            groups.insert(HOLDOUT_GROUP.to_string());
        }
        let groups = groups
            .into_iter()
            .map(|group| {
                let contacts = store.group_members(&l.campaign_id, &group).count() as u64;
                v1::GroupSize { group, contacts }
            })
            .collect();
        campaigns.push(v1::CampaignFigures {
            counters: Some(store.counters(&l.campaign_id)?),
            campaign_id: l.campaign_id,
            groups,
        });
    }
    Ok(v1::PartitionFigures {
        partition,
        campaigns,
        inputs: Some(store.input_counters()?),
        last_applied_at: Some(store.last_applied_at()?.to_proto()),
    })
}

/// The campaigns `only` names (every campaign when empty) as [`campaign_data`] gives them,
/// from the specs and lifecycles of `catalog` (every partition logs the same commands) and
/// the figures of every partition, wherever they were read.
///
/// # Errors
/// A store error, or an id no campaign has.
pub fn campaign_data_over(
    catalog: &Store,
    figures: &[v1::PartitionFigures],
    only: &[String],
) -> Result<Vec<CampaignData>, String> {
    let fail = |e: canvass_store::Error| e.to_string();
    let specs = catalog.specs().map_err(fail)?;
    let lifecycles = catalog.lifecycles().map_err(fail)?;
    for id in only {
        if !lifecycles.iter().any(|l| &l.campaign_id == id) {
            return Err(format!("no campaign `{id}` in this data directory"));
        }
    }
    let mut out = Vec::new();
    for l in &lifecycles {
        if !only.is_empty() && !only.contains(&l.campaign_id) {
            continue;
        }
        let mut sizes: BTreeMap<String, u64> = BTreeMap::new();
        for c in of_campaign(figures, &l.campaign_id) {
            for g in &c.groups {
                *sizes.entry(g.group.clone()).or_default() += g.contacts;
            }
        }
        out.push(CampaignData {
            spec: specs
                .iter()
                .filter(|s| s.id == l.campaign_id)
                .max_by_key(|s| s.version)
                .cloned(),
            id: l.campaign_id.clone(),
            status: l.status(),
            counters: counters_over(figures, &l.campaign_id),
            groups: sizes.into_iter().collect(),
        });
    }
    Ok(out)
}

/// Campaign `campaign`'s figures in each partition `figures` tell of.
fn of_campaign<'a>(
    figures: &'a [v1::PartitionFigures],
    campaign: &'a str,
) -> impl Iterator<Item = &'a v1::CampaignFigures> + 'a {
    figures
        .iter()
        .flat_map(|f| &f.campaigns)
        .filter(move |c| c.campaign_id == campaign)
}

/// Campaign `campaign`'s counters in the partitions `figures` tell of, summed.
#[must_use]
pub fn counters_over(figures: &[v1::PartitionFigures], campaign: &str) -> v1::CampaignCounters {
    let mut total = v1::CampaignCounters::default();
    for theirs in of_campaign(figures, campaign).filter_map(|c| c.counters.as_ref()) {
        canvass_core::stats::merge(&mut total, theirs);
    }
    total
}

/// The input counters (late events, revenue) of the partitions `figures` tell of, summed.
#[must_use]
pub fn input_counters_over(figures: &[v1::PartitionFigures]) -> v1::InputCounters {
    let mut total = v1::InputCounters::default();
    for inputs in figures.iter().filter_map(|f| f.inputs.as_ref()) {
        canvass_core::stats::merge_inputs(&mut total, inputs);
    }
    total
}

/// A campaign's counters, summed over the partitions.
///
/// # Errors
/// A store error.
pub fn counters(
    stores: &Stores,
    campaign: &str,
) -> Result<v1::CampaignCounters, canvass_store::Error> {
    let mut total = v1::CampaignCounters::default();
    for store in stores.iter() {
        canvass_core::stats::merge(&mut total, &store.counters(campaign)?);
    }
    Ok(total)
}

/// The input counters (late events, revenue), summed over the partitions.
///
/// # Errors
/// A store error.
pub fn input_counters(stores: &Stores) -> Result<v1::InputCounters, canvass_store::Error> {
    let mut total = v1::InputCounters::default();
    for store in stores.iter() {
        canvass_core::stats::merge_inputs(&mut total, &store.input_counters()?);
    }
    Ok(total)
}

/// Every contact, reduced to what the customer-value report needs.
///
/// # Errors
/// A store error.
pub fn customers(stores: &Stores) -> Result<Vec<canvass_report::value::Customer>, String> {
    Ok(contact_states(stores)?
        .iter()
        .map(|(_, state)| canvass_report::value::Customer::from_state(state))
        .collect())
}

/// Every contact's state, by id, for reports that read the contacts whole (the leads).
///
/// # Errors
/// A store error.
pub fn contact_states(stores: &Stores) -> Result<Vec<(String, v1::ContactState)>, String> {
    let mut out = Vec::new();
    for store in stores.iter() {
        out.extend(partition_contact_states(store).map_err(|e| e.to_string())?);
    }
    // One order whatever the partitioning.
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// Every contact's state in one partition (its store), by id, in id order.
///
/// # Errors
/// A store error.
pub fn partition_contact_states(
    store: &Store,
) -> Result<Vec<(String, v1::ContactState)>, canvass_store::Error> {
    let partition = canvass_store::EMBEDDED_PARTITION;
    let mut out = Vec::new();
    for id in store.contact_ids(partition) {
        let id = id?;
        if let Some(state) = store.contact(partition, &id)? {
            out.push((id, state));
        }
    }
    Ok(out)
}

/// Every campaign's lifecycle as one record: partition 0's (every partition logs the same
/// commands), with the notes the engine wrote in the others (a partition's allotment of the
/// budget running out) merged into the history in time order.
///
/// # Errors
/// A store error.
pub fn lifecycles(stores: &Stores) -> Result<Vec<v1::CampaignLifecycle>, canvass_store::Error> {
    let mut all = stores.partition(0).lifecycles()?;
    for store in stores.iter().skip(1) {
        for theirs in store.lifecycles()? {
            if let Some(l) = all.iter_mut().find(|l| l.campaign_id == theirs.campaign_id) {
                merge_engine_notes(l, &theirs);
            }
        }
    }
    Ok(all)
}

/// One campaign's lifecycle as [`lifecycles`] gives it.
///
/// # Errors
/// A store error.
pub fn lifecycle(
    stores: &Stores,
    campaign: &str,
) -> Result<Option<v1::CampaignLifecycle>, canvass_store::Error> {
    let Some(mut l) = stores.partition(0).lifecycle(campaign)? else {
        return Ok(None);
    };
    for store in stores.iter().skip(1) {
        if let Some(theirs) = store.lifecycle(campaign)? {
            merge_engine_notes(&mut l, &theirs);
        }
    }
    Ok(Some(l))
}

fn merge_engine_notes(into: &mut v1::CampaignLifecycle, other: &v1::CampaignLifecycle) {
    let notes = other
        .history
        .iter()
        .filter(|c| c.actor == ENGINE_ACTOR && !into.history.contains(c));
    into.history.extend(notes.cloned().collect::<Vec<_>>());
    // Stable: changes of the same time keep their order (commands first, as logged).
    into.history
        .sort_by_key(|c| c.at.map(|t| (t.seconds, t.nanos)).unwrap_or_default());
}

pub use canvass_core::lifecycle::ENGINE_ACTOR;
