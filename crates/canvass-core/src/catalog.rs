//! The campaigns the core knows, by id and version: contacts keep the version they entered with.

use std::{collections::BTreeMap, sync::Arc};

use crate::{spec::Campaign, validate::Issue};

/// Campaigns by id, each with every version loaded.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    campaigns: BTreeMap<String, BTreeMap<u32, Arc<Campaign>>>,
}

/// Why a campaign could not be added.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    /// The same id and version was already added.
    #[error("campaign `{id}` version {version} is already loaded")]
    DuplicateVersion {
        /// Campaign id.
        id: String,
        /// Version.
        version: u32,
    },
}

impl Catalog {
    /// An empty catalog.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a compiled campaign version.
    pub fn insert(&mut self, campaign: Campaign) -> Result<(), CatalogError> {
        let versions = self.campaigns.entry(campaign.id().to_string()).or_default();
        let version = campaign.version();
        if versions.contains_key(&version) {
            return Err(CatalogError::DuplicateVersion {
                id: campaign.id().to_string(),
                version,
            });
        }
        versions.insert(version, Arc::new(campaign));
        Ok(())
    }

    /// A specific version.
    #[must_use]
    pub fn get(&self, id: &str, version: u32) -> Option<&Campaign> {
        self.campaigns.get(id)?.get(&version).map(Arc::as_ref)
    }

    /// The newest version: the one new contacts enter.
    #[must_use]
    pub fn latest(&self, id: &str) -> Option<&Campaign> {
        self.campaigns
            .get(id)?
            .values()
            .next_back()
            .map(Arc::as_ref)
    }

    /// The newest version of every campaign, ordered by id.
    pub fn latest_all(&self) -> impl Iterator<Item = &Campaign> {
        self.campaigns
            .values()
            .filter_map(|v| v.values().next_back().map(Arc::as_ref))
    }

    /// START_CAMPAIGN actions whose target is not in the catalog, as issues named
    /// `<campaign id>: <path>`.
    #[must_use]
    pub fn dangling_references(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        for versions in self.campaigns.values() {
            for campaign in versions.values() {
                for (path, target) in campaign.started_campaigns() {
                    if self.latest(target).is_none() {
                        issues.push(Issue {
                            path: format!("{} v{}: {path}", campaign.id(), campaign.version()),
                            reason: format!(
                                "campaign `{target}` is not loaded (pass its spec too)"
                            ),
                        });
                    }
                }
            }
        }
        issues
    }
}
