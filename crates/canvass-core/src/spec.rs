//! The validated, compiled form of a campaign spec: indices instead of names, CEL compiled.

use std::collections::{BTreeMap, HashMap};

use canvass_proto::v1;
use rust_decimal::Decimal;

use crate::{condition::Condition, time::SpanMillis};

/// The attribution window of a spec that sets none: 30 days.
pub const DEFAULT_ATTRIBUTION_WINDOW: SpanMillis = SpanMillis(30 * crate::time::DAY_MILLIS);

/// Index of a state in [`Campaign::states`].
pub type StateIdx = usize;

/// A campaign spec that passed validation, ready to run. Built by [`crate::compile`].
#[derive(Debug, Clone)]
pub struct Campaign {
    /// The spec it was compiled from.
    pub spec: v1::CampaignSpec,
    /// Audience filter, if the campaign enrolls contacts at launch.
    pub audience: Option<Condition>,
    /// Events that enroll contacts after launch.
    pub entry_triggers: Vec<EntryTrigger>,
    /// Re-entry policy.
    pub reentry: Reentry,
    /// Where enrolled contacts start (unless their variant says otherwise).
    pub initial_state: StateIdx,
    /// The states, in spec order.
    pub states: Vec<State>,
    /// A/B split and holdout.
    pub split: Option<Split>,
    /// Spend limits and action costs.
    pub budget: Option<Budget>,
    /// Who takes the leads it hands over (before the policy's rules).
    pub assignment: crate::assignment::Rules,
    pub(crate) state_index: HashMap<String, StateIdx>,
    /// `campaign` as CEL sees it; it never changes, so it is built once.
    pub(crate) cel_value: cel::Value,
}

impl Campaign {
    /// The campaign id.
    #[must_use]
    pub fn id(&self) -> &str {
        &self.spec.id
    }

    /// The spec version.
    #[must_use]
    pub fn version(&self) -> u32 {
        self.spec.version
    }

    /// How long after an action (or an enrollment) revenue is credited to the campaign.
    #[must_use]
    pub fn attribution_window(&self) -> SpanMillis {
        self.spec
            .attribution_window
            .as_ref()
            .map_or(DEFAULT_ATTRIBUTION_WINDOW, SpanMillis::from_proto)
    }

    /// Looks a state up by id.
    #[must_use]
    pub fn state_index(&self, id: &str) -> Option<StateIdx> {
        self.state_index.get(id).copied()
    }

    /// The campaigns this one starts through START_CAMPAIGN actions, with the spec path of each.
    #[must_use]
    pub fn started_campaigns(&self) -> Vec<(String, &str)> {
        let mut out = Vec::new();
        for state in &self.states {
            for (i, action) in state.actions.iter().enumerate() {
                if action.kind() == v1::ActionKind::StartCampaign {
                    out.push((
                        format!("states.{}.actions[{i}].targetCampaign", state.id),
                        action.target_campaign.as_str(),
                    ));
                }
            }
        }
        out
    }
}

/// An event that enrolls a contact.
#[derive(Debug, Clone)]
pub struct EntryTrigger {
    /// Event type that triggers entry.
    pub event_type: String,
    /// Optional guard.
    pub guard: Option<Condition>,
}

/// Whether a contact may enter again after leaving.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reentry {
    /// At most one enrollment.
    Never,
    /// Again once this long has passed since leaving.
    AfterCooldown(SpanMillis),
    /// Again as soon as it has left.
    Always,
}

/// One compiled state.
#[derive(Debug, Clone)]
pub struct State {
    /// State id.
    pub id: String,
    /// Actions emitted on entry, in order.
    pub actions: Vec<v1::ActionSpec>,
    /// Response group joined on entry.
    pub response_group: Option<String>,
    /// Ends the journey.
    pub terminal: bool,
    /// Counts as a conversion.
    pub goal: bool,
    /// Ways out, in spec order.
    pub transitions: Vec<Transition>,
}

/// One compiled transition.
#[derive(Debug, Clone)]
pub struct Transition {
    /// Target state.
    pub to: StateIdx,
    /// What triggers it.
    pub trigger: Trigger,
}

/// What triggers a transition.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// An event of this type whose guard holds.
    Event {
        /// Event type.
        event_type: String,
        /// Optional guard.
        guard: Option<Condition>,
    },
    /// A timeout measured from entering the state.
    After(SpanMillis),
    /// Right after entering, if the guard holds.
    Immediately(Option<Condition>),
}

/// Compiled A/B split and holdout.
#[derive(Debug, Clone)]
pub struct Split {
    /// Hash seed.
    pub seed: u32,
    /// Held-out share in basis points (0..=10000).
    pub holdout_basis_points: u32,
    /// Variants with their weights and starting states.
    pub variants: Vec<Variant>,
}

/// One compiled variant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variant {
    /// Variant id.
    pub id: String,
    /// Relative weight (> 0).
    pub weight: u32,
    /// Starting state; `None` means the campaign's initial state.
    pub initial_state: Option<StateIdx>,
}

/// Compiled budget.
#[derive(Debug, Clone)]
pub struct Budget {
    /// Currency code.
    pub currency: String,
    /// Total, if limited.
    pub total: Option<Decimal>,
    /// Cost per action kind.
    pub cost_per_action: BTreeMap<i32, Decimal>,
}

impl Budget {
    /// The cost of one action of `kind` (zero if the budget does not price it).
    #[must_use]
    pub fn cost_of(&self, kind: v1::ActionKind) -> Decimal {
        self.cost_per_action
            .get(&(kind as i32))
            .copied()
            .unwrap_or(Decimal::ZERO)
    }
}
