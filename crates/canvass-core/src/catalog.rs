//! The campaigns the core knows: every version of each, which version new contacts enter,
//! and where the campaign stands in its lifecycle. Contacts keep the version they entered with.

use std::{collections::BTreeMap, sync::Arc};

use canvass_proto::v1::{self, CampaignStatus};

use crate::{materials::Materials, policy::Policy, spec::Campaign, validate::Issue};

#[derive(Debug, Clone)]
struct Entry {
    versions: BTreeMap<u32, Arc<Campaign>>,
    status: CampaignStatus,
    active: Option<u32>,
}

/// Campaigns by id, and the policy across them.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    campaigns: BTreeMap<String, Entry>,
    policy: Arc<Policy>,
    materials: Arc<Materials>,
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

    /// The engine-wide policy.
    #[must_use]
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Replaces the engine-wide policy.
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = Arc::new(policy);
    }

    /// The materials of the catalog, by id.
    #[must_use]
    pub fn materials(&self) -> &Materials {
        &self.materials
    }

    /// Adds or replaces a material.
    pub fn put_material(&mut self, material: v1::Material) {
        Arc::make_mut(&mut self.materials).insert(material.id.clone(), material);
    }

    /// Every version of every campaign whose status `keep` accepts (contacts may be on any
    /// version), ordered by id then version.
    pub fn versions_where(
        &self,
        keep: impl Fn(CampaignStatus) -> bool,
    ) -> impl Iterator<Item = &Campaign> {
        self.campaigns
            .values()
            .filter(move |e| keep(e.status))
            .flat_map(|e| e.versions.values().map(Arc::as_ref))
    }

    /// The specs of the campaigns that send: running, paused, or completed (contacts inside
    /// still move and receive actions). A version not launched yet is checked again at its
    /// launch.
    #[must_use]
    pub fn sending_specs(&self) -> Vec<&v1::CampaignSpec> {
        self.versions_where(|s| {
            matches!(
                s,
                CampaignStatus::Running | CampaignStatus::Paused | CampaignStatus::Completed
            )
        })
        .map(|c| &c.spec)
        .collect()
    }

    /// Adds a compiled campaign version. A new campaign starts as a draft.
    pub fn insert(&mut self, campaign: Campaign) -> Result<(), CatalogError> {
        let entry = self
            .campaigns
            .entry(campaign.id().to_string())
            .or_insert_with(|| Entry {
                versions: BTreeMap::new(),
                status: CampaignStatus::Draft,
                active: None,
            });
        let version = campaign.version();
        if entry.versions.contains_key(&version) {
            return Err(CatalogError::DuplicateVersion {
                id: campaign.id().to_string(),
                version,
            });
        }
        entry.versions.insert(version, Arc::new(campaign));
        Ok(())
    }

    /// Makes every campaign's newest version active and running: what a simulation does
    /// with the specs it is given.
    pub fn run_all_latest(&mut self) {
        for entry in self.campaigns.values_mut() {
            entry.active = entry.versions.keys().next_back().copied();
            entry.status = CampaignStatus::Running;
        }
    }

    /// Sets where a campaign stands.
    pub fn set_status(&mut self, id: &str, status: CampaignStatus) {
        if let Some(e) = self.campaigns.get_mut(id) {
            e.status = status;
        }
    }

    /// Makes `version` the one new contacts enter.
    pub fn activate(&mut self, id: &str, version: u32) {
        if let Some(e) = self.campaigns.get_mut(id) {
            e.active = Some(version);
        }
    }

    /// Where a campaign stands (unspecified if unknown).
    #[must_use]
    pub fn status(&self, id: &str) -> CampaignStatus {
        self.campaigns
            .get(id)
            .map_or(CampaignStatus::Unspecified, |e| e.status)
    }

    /// A specific version.
    #[must_use]
    pub fn get(&self, id: &str, version: u32) -> Option<&Campaign> {
        self.campaigns
            .get(id)?
            .versions
            .get(&version)
            .map(Arc::as_ref)
    }

    /// The newest version loaded, whatever its state.
    #[must_use]
    pub fn latest(&self, id: &str) -> Option<&Campaign> {
        self.campaigns
            .get(id)?
            .versions
            .values()
            .next_back()
            .map(Arc::as_ref)
    }

    /// The version new contacts enter, if the campaign has been launched.
    #[must_use]
    pub fn active(&self, id: &str) -> Option<&Campaign> {
        let e = self.campaigns.get(id)?;
        e.versions.get(&e.active?).map(Arc::as_ref)
    }

    /// The active version of every campaign contacts may enter now (running), ordered by id.
    pub fn enrolling(&self) -> impl Iterator<Item = &Campaign> {
        self.campaigns
            .values()
            .filter(|e| e.status == CampaignStatus::Running)
            .filter_map(|e| e.versions.get(&e.active?).map(Arc::as_ref))
    }

    /// The newest version of every campaign, ordered by id.
    pub fn latest_all(&self) -> impl Iterator<Item = &Campaign> {
        self.campaigns
            .values()
            .filter_map(|e| e.versions.values().next_back().map(Arc::as_ref))
    }

    /// START_CAMPAIGN actions whose target is not in the catalog, as issues named
    /// `<campaign id> v<version>: <path>`.
    #[must_use]
    pub fn dangling_references(&self) -> Vec<Issue> {
        let mut issues = Vec::new();
        for entry in self.campaigns.values() {
            for campaign in entry.versions.values() {
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
