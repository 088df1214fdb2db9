//! Who in sales takes a lead (seeds 002, 003): assignment rules compiled from a campaign spec
//! or the policy, the teams they name, and the partition's workload they balance.
//!
//! Round-robin and least load read state across contacts (turns per team, open leads per
//! owner). Each partition keeps that state from its own log ([`v1::Workload`] in its input
//! counters), so a partition's decisions stay a function of its log and replay is exact;
//! balancing is therefore per partition (docs/ARCHITECTURE.md, "Assignment").

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
};

use canvass_proto::v1;

use crate::{
    condition::{CelLimits, Condition, Env, Scope},
    machine::{Effect, LeadChange},
    validate::Issue,
};

/// What chose an owner when no rule did: the hand-off's `owner` parameter.
pub const BY_PARAM: &str = "param";
/// What chose an owner when no rule did: a fallback owner.
pub const BY_FALLBACK: &str = "fallback";
/// What chose an owner when nothing else did ("sales").
pub const BY_DEFAULT: &str = "default";
/// An operator's command named the new owner.
pub const BY_COMMAND: &str = "command";
/// An `opportunity.reassigned` event named the new owner.
pub const BY_EVENT: &str = "event";

/// How a team rule picks someone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Each member in turn.
    RoundRobin,
    /// The member with the fewest open leads (ties: the first listed).
    LeastLoad,
}

/// Who a rule gives the lead to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// One owner.
    Owner(String),
    /// Someone in a team of the policy.
    Team {
        /// The team's name.
        name: String,
        /// How someone is picked.
        strategy: Strategy,
    },
}

/// A compiled assignment rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    /// Its name, recorded with each lead it assigns.
    pub name: String,
    /// Its condition (`None`: always).
    pub when: Option<Condition>,
    /// Who it chooses.
    pub target: Target,
    /// Where it is written, for errors (`assignment.rules[0]`).
    pub path: String,
}

/// Compiled assignment rules.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Rules {
    /// Tried in order.
    pub rules: Vec<Rule>,
    /// The owner when none chooses.
    pub fallback: Option<String>,
}

impl Rules {
    /// The teams the rules name.
    pub fn teams(&self) -> impl Iterator<Item = (&str, &str)> {
        self.rules.iter().filter_map(|r| match &r.target {
            Target::Team { name, .. } => Some((r.path.as_str(), name.as_str())),
            Target::Owner(_) => None,
        })
    }
}

/// Compiles assignment rules written at `path`; every problem goes to `issues`. Teams are
/// checked against the policy elsewhere (a campaign is compiled without it).
pub fn compile(
    spec: &v1::AssignmentRules,
    path: &str,
    env: &Arc<Env>,
    limits: &CelLimits,
    issues: &mut Vec<Issue>,
) -> Rules {
    let mut report = |path: String, reason: String| issues.push(Issue { path, reason });
    let mut names = BTreeSet::new();
    let mut rules = Vec::new();
    for (i, r) in spec.rules.iter().enumerate() {
        let at = format!("{path}.rules[{i}]");
        if r.name.trim().is_empty() {
            report(format!("{at}.name"), "required".into());
        } else if [BY_PARAM, BY_FALLBACK, BY_DEFAULT, BY_COMMAND, BY_EVENT]
            .contains(&r.name.as_str())
        {
            report(
                format!("{at}.name"),
                format!(
                    "`{}` is reserved for what chose an owner without a rule",
                    r.name
                ),
            );
        } else if !names.insert(r.name.as_str()) {
            report(
                format!("{at}.name"),
                format!("`{}` names another rule too", r.name),
            );
        }
        let strategy = match v1::AssignmentStrategy::try_from(r.strategy) {
            Ok(v1::AssignmentStrategy::LeastLoad) => Strategy::LeastLoad,
            Ok(_) => Strategy::RoundRobin,
            Err(_) => {
                report(
                    format!("{at}.strategy"),
                    format!("unknown strategy {}", r.strategy),
                );
                Strategy::RoundRobin
            }
        };
        let target = match (r.owner.trim(), r.team.trim()) {
            ("", "") => {
                report(at.clone(), "give an `owner` or a `team`".into());
                continue;
            }
            (owner, "") => {
                if r.strategy != 0 {
                    report(
                        format!("{at}.strategy"),
                        "only a `team` rule chooses by a strategy".into(),
                    );
                }
                Target::Owner(owner.to_string())
            }
            ("", team) => Target::Team {
                name: team.to_string(),
                strategy,
            },
            _ => {
                report(at.clone(), "give an `owner` or a `team`, not both".into());
                continue;
            }
        };
        let when = if r.when.trim().is_empty() {
            None
        } else {
            match Condition::compile(&r.when, Scope::Audience, env, limits) {
                Ok(c) => Some(c),
                Err(e) => {
                    report(format!("{at}.when"), e.to_string());
                    None
                }
            }
        };
        rules.push(Rule {
            name: r.name.clone(),
            when,
            target,
            path: at,
        });
    }
    let fallback = Some(spec.fallback_owner.trim())
        .filter(|f| !f.is_empty())
        .map(str::to_string);
    Rules { rules, fallback }
}

/// Checks the policy's teams and returns them by name.
pub fn teams(spec: &[v1::Team], issues: &mut Vec<Issue>) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for (i, t) in spec.iter().enumerate() {
        let at = format!("teams[{i}]");
        let name = t.name.trim();
        if name.is_empty() {
            issues.push(Issue {
                path: format!("{at}.name"),
                reason: "required".into(),
            });
            continue;
        }
        if t.members.is_empty() {
            issues.push(Issue {
                path: format!("{at}.members"),
                reason: format!("team `{name}` has nobody in it"),
            });
        }
        let mut seen = BTreeSet::new();
        for (k, m) in t.members.iter().enumerate() {
            if m.trim().is_empty() {
                issues.push(Issue {
                    path: format!("{at}.members[{k}]"),
                    reason: "empty owner".into(),
                });
            } else if !seen.insert(m.trim()) {
                issues.push(Issue {
                    path: format!("{at}.members[{k}]"),
                    reason: format!("`{m}` is in team `{name}` twice"),
                });
            }
        }
        let members = t.members.iter().map(|m| m.trim().to_string()).collect();
        if out.insert(name.to_string(), members).is_some() {
            issues.push(Issue {
                path: format!("{at}.name"),
                reason: format!("another team is named `{name}`"),
            });
        }
    }
    out
}

/// Issues for the teams `rules` name that `teams` lacks, paths prefixed with `prefix`.
#[must_use]
pub fn missing_teams(
    rules: &Rules,
    teams: &BTreeMap<String, Vec<String>>,
    prefix: &str,
) -> Vec<Issue> {
    rules
        .teams()
        .filter(|(_, team)| !teams.contains_key(*team))
        .map(|(path, team)| Issue {
            path: format!("{prefix}{path}.team"),
            reason: format!("team `{team}` is not in the policy (teams)"),
        })
        .collect()
}

/// What the partition's assignment rules read: open leads per owner and turns per team,
/// as counted before this step.
pub trait Workload {
    /// Open (or accepted, not yet closed) leads of `owner`.
    fn open_leads(&self, owner: &str) -> u64;
    /// Leads `team`'s round-robin has handed out.
    fn turns(&self, team: &str) -> u64;
}

/// Nobody has leads: for callers without assignment rules.
impl Workload for () {
    fn open_leads(&self, _: &str) -> u64 {
        0
    }
    fn turns(&self, _: &str) -> u64 {
        0
    }
}

impl Workload for v1::Workload {
    fn open_leads(&self, owner: &str) -> u64 {
        self.open_leads.get(owner).copied().unwrap_or(0)
    }
    fn turns(&self, team: &str) -> u64 {
        self.turns.get(team).copied().unwrap_or(0)
    }
}

/// How one effect changes open leads, per owner (at most two owners: a reassignment).
#[must_use]
pub fn load_changes(effect: &Effect) -> Vec<(&str, i64)> {
    let Effect::Lead { owner, change, .. } = effect else {
        return Vec::new();
    };
    match change {
        LeadChange::Opened(_) => vec![(owner.as_str(), 1)],
        LeadChange::Breached | LeadChange::Won(_) | LeadChange::Lost => vec![(owner.as_str(), -1)],
        LeadChange::Reassigned { from, .. } => vec![(from.as_str(), -1), (owner.as_str(), 1)],
        LeadChange::Accepted | LeadChange::LateAcceptance => Vec::new(),
    }
}

/// The team whose round-robin took a turn in this effect, if one did.
#[must_use]
pub fn turn_taken(effect: &Effect) -> Option<&str> {
    match effect {
        Effect::Lead {
            change: LeadChange::Opened(by) | LeadChange::Reassigned { by, .. },
            ..
        } => by.round_robin.as_deref(),
        _ => None,
    }
}

/// Counts one effect into the partition's workload.
pub fn record(workload: &mut v1::Workload, effect: &Effect) {
    for (owner, change) in load_changes(effect) {
        let n = workload.open_leads.entry(owner.to_string()).or_default();
        *n = n.saturating_add_signed(change);
        if *n == 0 {
            workload.open_leads.remove(owner);
        }
    }
    if let Some(team) = turn_taken(effect) {
        *workload.turns.entry(team.to_string()).or_default() += 1;
    }
}

/// Adds one partition's workload to a total.
pub fn merge(total: &mut v1::Workload, part: &v1::Workload) {
    for (owner, n) in &part.open_leads {
        *total.open_leads.entry(owner.clone()).or_default() += n;
    }
    for (team, n) in &part.turns {
        *total.turns.entry(team.clone()).or_default() += n;
    }
}
