//! Reads what the reports need from the store: each campaign's latest spec, status,
//! counters and response-group sizes.

use std::collections::BTreeSet;

use canvass_core::machine::HOLDOUT_GROUP;
use canvass_report::CampaignData;
use canvass_store::Store;

use crate::durable::Result;

/// The campaigns `only` names (every campaign when empty), by id; an unknown id is an error.
///
/// # Errors
/// A store error, or an id no campaign has.
pub fn campaign_data(store: &Store, only: &[String]) -> Result<Vec<CampaignData>, String> {
    let fail = |e: canvass_store::Error| e.to_string();
    let specs = store.specs().map_err(fail)?;
    let lifecycles = store.lifecycles().map_err(fail)?;
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
        let versions: Vec<_> = specs.iter().filter(|s| s.id == l.campaign_id).collect();
        let mut groups: BTreeSet<String> = versions
            .iter()
            .flat_map(|s| s.states.iter().map(|st| st.response_group.clone()))
            .filter(|g| !g.is_empty())
            .collect();
        if versions.iter().any(|s| s.split.is_some()) {
            groups.insert(HOLDOUT_GROUP.to_string());
        }
        let mut sizes = Vec::new();
        for g in groups {
            let n = store.group_members(&l.campaign_id, &g).count() as u64;
            sizes.push((g, n));
        }
        out.push(CampaignData {
            spec: versions
                .iter()
                .max_by_key(|s| s.version)
                .map(|s| (*s).clone()),
            id: l.campaign_id.clone(),
            status: l.status(),
            counters: store.counters(&l.campaign_id).map_err(fail)?,
            groups: sizes,
        });
    }
    Ok(out)
}

/// Every contact, reduced to what the customer-value report needs.
///
/// # Errors
/// A store error.
pub fn customers(store: &Store) -> Result<Vec<canvass_report::value::Customer>, String> {
    Ok(contact_states(store)?
        .iter()
        .map(|(_, state)| canvass_report::value::Customer::from_state(state))
        .collect())
}

/// Every contact's state, by id, for reports that read the contacts whole (the leads).
///
/// # Errors
/// A store error.
pub fn contact_states(
    store: &Store,
) -> Result<Vec<(String, canvass_proto::v1::ContactState)>, String> {
    let partition = canvass_store::EMBEDDED_PARTITION;
    let mut out = Vec::new();
    for id in store.contact_ids(partition) {
        let id = id.map_err(|e| e.to_string())?;
        if let Some(state) = store.contact(partition, &id).map_err(|e| e.to_string())? {
            out.push((id, state));
        }
    }
    Ok(out)
}
