//! Campaign records: specs, lifecycles, counters, the policy, the input counters and the
//! sweeps in progress.

use canvass_proto::v1;

use crate::{Result, Store, decode, keys};

impl Store {
    /// Sweeps in progress, oldest command first.
    pub fn sweeps(&self) -> Result<Vec<v1::Sweep>> {
        self.scan_prefix(vec![keys::SWEEP])
            .map(|kv| decode("sweep", &kv?.1))
            .collect()
    }

    /// A campaign's counters (zero if it has none yet).
    pub fn counters(&self, campaign: &str) -> Result<v1::CampaignCounters> {
        Ok(self
            .get("counters", &keys::counters(campaign))?
            .unwrap_or_default())
    }

    /// What the engine counted about its inputs (zero if nothing yet).
    pub fn input_counters(&self) -> Result<v1::InputCounters> {
        Ok(self
            .get("input counters", &[keys::INPUTS])?
            .unwrap_or_default())
    }

    /// The engine-wide policy, if one was set.
    pub fn policy(&self) -> Result<Option<v1::Policy>> {
        self.get("policy", &[keys::POLICY])
    }

    /// Every campaign spec version loaded, by campaign id then version.
    pub fn specs(&self) -> Result<Vec<v1::CampaignSpec>> {
        self.scan_prefix(vec![keys::SPEC])
            .map(|kv| decode("campaign spec", &kv?.1))
            .collect()
    }

    /// The catalog of marketing materials, by id.
    pub fn materials(&self) -> Result<Vec<v1::Material>> {
        self.scan_prefix(vec![keys::MATERIAL])
            .map(|kv| decode("material", &kv?.1))
            .collect()
    }

    /// Every campaign's lifecycle, by campaign id.
    pub fn lifecycles(&self) -> Result<Vec<v1::CampaignLifecycle>> {
        self.scan_prefix(vec![keys::LIFECYCLE])
            .map(|kv| decode("campaign lifecycle", &kv?.1))
            .collect()
    }

    /// One campaign's lifecycle.
    pub fn lifecycle(&self, campaign: &str) -> Result<Option<v1::CampaignLifecycle>> {
        self.get("campaign lifecycle", &keys::lifecycle(campaign))
    }
}
