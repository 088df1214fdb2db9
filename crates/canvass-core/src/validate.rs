//! Spec validation: every problem at once, each with its path in the spec's JSON form and a reason.

use std::{
    collections::{BTreeMap, HashMap, HashSet, VecDeque},
    fmt,
    str::FromStr,
    sync::Arc,
};

use canvass_proto::{v1, wkt};
use rust_decimal::Decimal;

use crate::{
    condition::{CelLimits, Condition, Scope, standard_env},
    spec::{self, Campaign, Reentry, StateIdx, Trigger},
    time::{SpanMillis, span_problem},
};

/// One problem found in a spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// Where, as a path in the spec's JSON form (e.g. `states.invited.transitions[1].to`).
    pub path: String,
    /// What is wrong, and where useful how to fix it.
    pub reason: String,
}

impl fmt::Display for Issue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.reason)
    }
}

/// All the problems that keep a spec from compiling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors {
    /// The campaign id, as written (possibly empty or invalid).
    pub campaign_id: String,
    /// Every problem, in spec order.
    pub issues: Vec<Issue>,
}

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "campaign `{}` has {} problem(s):",
            self.campaign_id,
            self.issues.len()
        )?;
        for issue in &self.issues {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

/// Longest id accepted for campaigns, states and variants.
const MAX_ID_LEN: usize = 64;

/// Why `id` is not a valid identifier, if it is not. Ids are `[a-z0-9][a-z0-9_-]*`: they
/// appear in idempotency keys and paths, so they must not contain separators.
#[must_use]
pub fn id_problem(id: &str) -> Option<String> {
    if id.is_empty() {
        return Some("required".into());
    }
    if id.len() > MAX_ID_LEN {
        return Some(format!("longer than {MAX_ID_LEN} characters"));
    }
    let valid_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
    let first_ok = id.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit());
    if !first_ok || !id.chars().all(valid_char) {
        return Some(format!(
            "`{id}` is not a valid id: use lowercase letters, digits, '-' and '_', starting with a letter or digit"
        ));
    }
    None
}

/// Validates and compiles a spec under the default CEL limits. Reports every problem found,
/// not only the first.
pub fn compile(spec: &v1::CampaignSpec) -> Result<Campaign, SpecErrors> {
    compile_with(spec, &CelLimits::DEFAULT)
}

/// Validates and compiles a spec whose CEL conditions must stay within `limits`; a
/// condition that names no variable and costs more than `limits.max_cost` is refused too.
pub fn compile_with(spec: &v1::CampaignSpec, limits: &CelLimits) -> Result<Campaign, SpecErrors> {
    check(spec, limits, true)
}

/// Compiles a spec the log holds (accepted when it was submitted, under the limits then in
/// force): under the ceiling, without evaluating anything, so that it always compiles again.
pub fn compile_stored(spec: &v1::CampaignSpec) -> Result<Campaign, SpecErrors> {
    // No length limit: a spec the log holds may predate it (the parse's stack grows with
    // the length); the depth ceiling stays, since the evaluator needs it.
    let limits = CelLimits {
        max_bytes: usize::MAX,
        ..CelLimits::CEILING
    };
    check(spec, &limits, false)
}

fn check(spec: &v1::CampaignSpec, limits: &CelLimits, new: bool) -> Result<Campaign, SpecErrors> {
    let mut c = Checker {
        issues: Vec::new(),
        env: standard_env(),
        limits: *limits,
        new,
    };
    let campaign = c.campaign(spec);
    match campaign {
        Some(campaign) if c.issues.is_empty() => Ok(campaign),
        _ => Err(SpecErrors {
            campaign_id: spec.id.clone(),
            issues: c.issues,
        }),
    }
}

struct Checker {
    issues: Vec<Issue>,
    env: Arc<cel::Env>,
    limits: CelLimits,
    /// A new submission, not a spec the log holds: conditions that name no variable are
    /// evaluated against the cost limit, and durations are bounded (a spec accepted before
    /// these checks existed must still load).
    new: bool,
}

impl Checker {
    fn report(&mut self, path: impl Into<String>, reason: impl Into<String>) {
        self.issues.push(Issue {
            path: path.into(),
            reason: reason.into(),
        });
    }

    fn condition(&mut self, path: &str, source: &str, scope: Scope) -> Option<Condition> {
        match Condition::compile(source, scope, &self.env, &self.limits) {
            Ok(c) => {
                if let Some(problem) = self
                    .new
                    .then(|| c.constant_cost_problem(self.limits.max_cost))
                    .flatten()
                {
                    self.report(path, problem);
                }
                Some(c)
            }
            Err(e) => {
                self.report(path, e.to_string());
                None
            }
        }
    }

    /// An optional guard: empty means none.
    fn guard(&mut self, path: &str, source: &str, scope: Scope) -> Option<Condition> {
        if source.trim().is_empty() {
            None
        } else {
            self.condition(path, source, scope)
        }
    }

    fn positive_span(&mut self, path: &str, d: &wkt::Duration) -> SpanMillis {
        let span = SpanMillis::from_proto(d);
        if (span.0 <= 0 || self.new)
            && let Some(problem) = span_problem(d)
        {
            self.report(path, problem);
        }
        span
    }

    fn amount(&mut self, path: &str, text: &str) -> Option<Decimal> {
        match Decimal::from_str(text.trim()) {
            Ok(d) if d.is_sign_negative() && !d.is_zero() => {
                self.report(path, format!("must not be negative, got {text}"));
                None
            }
            Ok(d) => Some(d),
            Err(e) => {
                self.report(path, format!("`{text}` is not a decimal amount: {e}"));
                None
            }
        }
    }

    fn campaign(&mut self, spec: &v1::CampaignSpec) -> Option<Campaign> {
        if let Some(p) = id_problem(&spec.id) {
            self.report("id", p);
        }
        if spec.version == 0 {
            self.report("version", "must be at least 1");
        }
        if v1::CampaignGoal::try_from(spec.goal).is_err() {
            self.report("goal", format!("unknown goal {}", spec.goal));
        }
        let audience = spec.audience.as_ref().and_then(|a| {
            if a.filter.trim().is_empty() {
                self.report(
                    "audience.filter",
                    "empty: write `true` to select every contact",
                );
                None
            } else {
                self.condition("audience.filter", &a.filter, Scope::Audience)
            }
        });
        let entry_triggers = spec
            .entry_triggers
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.event_type.trim().is_empty() {
                    self.report(format!("entryTriggers[{i}].eventType"), "required");
                }
                spec::EntryTrigger {
                    event_type: t.event_type.clone(),
                    guard: self.guard(
                        &format!("entryTriggers[{i}].guard"),
                        &t.guard,
                        Scope::EntryTrigger,
                    ),
                }
            })
            .collect();
        let reentry = self.reentry(spec.reentry.as_ref());

        let (state_index, state_paths) = self.state_ids(&spec.states);
        let lookup = |id: &str| state_index.get(id).copied();
        let initial_state = if spec.initial_state.is_empty() {
            self.report("initialState", "required");
            None
        } else {
            let found = lookup(&spec.initial_state);
            if found.is_none() {
                self.report(
                    "initialState",
                    format!("unknown state `{}`", spec.initial_state),
                );
            }
            found
        };
        if spec.states.is_empty() {
            self.report("states", "a campaign needs at least one state");
        }
        let states: Vec<spec::State> = spec
            .states
            .iter()
            .zip(&state_paths)
            .map(|(s, path)| self.state(spec, s, path, &lookup))
            .collect();
        let split = spec.split.as_ref().map(|s| self.split(s, &lookup));
        self.migrations(spec, &lookup);
        let budget = spec.budget.as_ref().map(|b| self.budget(b));
        let assignment = spec.assignment.as_ref().map_or_else(Default::default, |a| {
            crate::assignment::compile(a, "assignment", &self.env, &self.limits, &mut self.issues)
        });
        if let Some(w) = &spec.attribution_window {
            self.positive_span("attributionWindow", w);
        }

        let mut roots: Vec<StateIdx> = initial_state.into_iter().collect();
        if let Some(split) = &split {
            roots.extend(split.variants.iter().filter_map(|v| v.initial_state));
        }
        if !roots.is_empty() {
            self.reachability(&states, &state_paths, &roots);
        }
        self.immediate_cycles(&states, &state_paths);

        Some(Campaign {
            spec: spec.clone(),
            audience,
            entry_triggers,
            reentry,
            initial_state: initial_state?,
            states,
            split,
            budget: budget.flatten(),
            assignment,
            state_index,
            cel_value: crate::bindings::campaign_value(spec),
        })
    }

    fn reentry(&mut self, policy: Option<&v1::ReentryPolicy>) -> Reentry {
        let Some(policy) = policy else {
            return Reentry::Never;
        };
        let mode = v1::ReentryMode::try_from(policy.mode);
        match (mode, &policy.cooldown) {
            (Ok(v1::ReentryMode::AfterCooldown), Some(d)) => {
                Reentry::AfterCooldown(self.positive_span("reentry.cooldown", d))
            }
            (Ok(v1::ReentryMode::AfterCooldown), None) => {
                self.report(
                    "reentry.cooldown",
                    "required with REENTRY_MODE_AFTER_COOLDOWN",
                );
                Reentry::Never
            }
            (Ok(_), Some(_)) => {
                self.report(
                    "reentry.cooldown",
                    "only applies to REENTRY_MODE_AFTER_COOLDOWN",
                );
                Reentry::Never
            }
            (Ok(v1::ReentryMode::Always), None) => Reentry::Always,
            (Ok(_), None) => Reentry::Never,
            (Err(_), _) => {
                self.report("reentry.mode", format!("unknown mode {}", policy.mode));
                Reentry::Never
            }
        }
    }

    /// Indexes the states by id and gives each the path problems will be reported under:
    /// `states.<id>` when the id is valid and unique, `states[<i>]` otherwise.
    fn state_ids(&mut self, states: &[v1::State]) -> (HashMap<String, StateIdx>, Vec<String>) {
        let mut index = HashMap::new();
        let mut paths = Vec::with_capacity(states.len());
        let mut first_at: HashMap<&str, usize> = HashMap::new();
        for (i, s) in states.iter().enumerate() {
            if let Some(p) = id_problem(&s.id) {
                self.report(format!("states[{i}].id"), p);
                paths.push(format!("states[{i}]"));
            } else if let Some(first) = first_at.get(s.id.as_str()) {
                self.report(
                    format!("states[{i}].id"),
                    format!("duplicate state id `{}` (first at states[{first}])", s.id),
                );
                paths.push(format!("states[{i}]"));
            } else {
                first_at.insert(&s.id, i);
                index.insert(s.id.clone(), i);
                paths.push(format!("states.{}", s.id));
            }
        }
        (index, paths)
    }

    fn state(
        &mut self,
        spec: &v1::CampaignSpec,
        s: &v1::State,
        path: &str,
        lookup: &dyn Fn(&str) -> Option<StateIdx>,
    ) -> spec::State {
        if s.terminal && !s.transitions.is_empty() {
            self.report(
                format!("{path}.transitions"),
                "a terminal state has no transitions",
            );
        }
        if !s.terminal && s.transitions.is_empty() {
            self.report(
                path,
                "non-terminal state has no way out: add a transition or mark it terminal",
            );
        }
        for (k, a) in s.actions.iter().enumerate() {
            self.action(spec, a, &format!("{path}.actions[{k}]"));
        }
        let transitions = s
            .transitions
            .iter()
            .enumerate()
            .filter_map(|(j, t)| self.transition(t, &format!("{path}.transitions[{j}]"), lookup))
            .collect();
        let response_group =
            (!s.response_group.trim().is_empty()).then(|| s.response_group.clone());
        spec::State {
            id: s.id.clone(),
            actions: s.actions.clone(),
            response_group,
            terminal: s.terminal,
            goal: s.goal,
            transitions,
        }
    }

    fn transition(
        &mut self,
        t: &v1::Transition,
        path: &str,
        lookup: &dyn Fn(&str) -> Option<StateIdx>,
    ) -> Option<spec::Transition> {
        let to = if t.to.is_empty() {
            self.report(format!("{path}.to"), "required");
            None
        } else {
            let found = lookup(&t.to);
            if found.is_none() {
                self.report(format!("{path}.to"), format!("unknown state `{}`", t.to));
            }
            found
        };
        use v1::transition::When;
        let trigger = match &t.when {
            None => {
                self.report(path, "needs one of `onEvent`, `after` or `immediately`");
                None
            }
            Some(When::OnEvent(e)) => {
                if e.r#type.trim().is_empty() {
                    self.report(format!("{path}.onEvent.type"), "required");
                }
                let guard = self.guard(
                    &format!("{path}.onEvent.guard"),
                    &e.guard,
                    Scope::EventTransition,
                );
                Some(Trigger::Event {
                    event_type: e.r#type.clone(),
                    guard,
                })
            }
            Some(When::After(d)) => Some(Trigger::After(
                self.positive_span(&format!("{path}.after"), d),
            )),
            Some(When::Immediately(i)) => Some(Trigger::Immediately(self.guard(
                &format!("{path}.immediately.guard"),
                &i.guard,
                Scope::Immediate,
            ))),
        };
        Some(spec::Transition {
            to: to?,
            trigger: trigger?,
        })
    }

    fn action(&mut self, spec: &v1::CampaignSpec, a: &v1::ActionSpec, path: &str) {
        use v1::ActionKind as K;
        let Ok(kind) = K::try_from(a.kind) else {
            self.report(
                format!("{path}.kind"),
                format!("unknown action kind {}", a.kind),
            );
            return;
        };
        let needs_template = matches!(kind, K::Email | K::Sms | K::PostalMail | K::PhoneCall);
        let needs_param = match kind {
            K::TrialOffer => Some("product"),
            K::Webhook => Some("url"),
            _ => None,
        };
        if kind == K::Unspecified {
            self.report(format!("{path}.kind"), "required");
        }
        if needs_template && a.template.trim().is_empty() && a.material.trim().is_empty() {
            self.report(
                format!("{path}.template"),
                format!(
                    "required for {} (or a `material` of the catalog)",
                    kind_name(kind)
                ),
            );
        }
        if !a.material.is_empty() && !a.template.is_empty() && a.template != a.material {
            self.report(
                format!("{path}.template"),
                format!(
                    "`{}` differs from the material `{}` it sends: give one",
                    a.template, a.material
                ),
            );
        }
        if a.material.is_empty() && a.material_version > 0 {
            self.report(
                format!("{path}.materialVersion"),
                "needs a `material`".to_string(),
            );
        }
        if let Some(param) = needs_param
            && a.params.get(param).is_none_or(|v| v.trim().is_empty())
        {
            self.report(
                format!("{path}.params.{param}"),
                format!("required for {}", kind_name(kind)),
            );
        }
        match (kind, &a.sla) {
            (K::SalesHandoff, Some(d)) => {
                self.positive_span(&format!("{path}.sla"), d);
            }
            (K::SalesHandoff, None) => {
                self.report(format!("{path}.sla"), "required for SALES_HANDOFF")
            }
            (_, Some(_)) => self.report(format!("{path}.sla"), "only applies to SALES_HANDOFF"),
            (_, None) => {}
        }
        let breach = a.sla_breach_state.as_str();
        if !breach.is_empty() {
            if kind != K::SalesHandoff {
                self.report(
                    format!("{path}.slaBreachState"),
                    "only applies to SALES_HANDOFF",
                );
            } else if !spec.states.iter().any(|s| s.id == breach) {
                self.report(
                    format!("{path}.slaBreachState"),
                    format!("unknown state `{breach}`"),
                );
            }
        }
        match (kind, a.target_campaign.as_str()) {
            (K::StartCampaign, "") => self.report(
                format!("{path}.targetCampaign"),
                "required for START_CAMPAIGN",
            ),
            (K::StartCampaign, target) if target == spec.id => self.report(
                format!("{path}.targetCampaign"),
                "a campaign cannot start itself",
            ),
            (K::StartCampaign, target) => {
                if let Some(p) = id_problem(target) {
                    self.report(format!("{path}.targetCampaign"), p);
                }
            }
            (_, "") => {}
            (_, _) => self.report(
                format!("{path}.targetCampaign"),
                "only applies to START_CAMPAIGN",
            ),
        }
    }

    fn split(&mut self, s: &v1::Split, lookup: &dyn Fn(&str) -> Option<StateIdx>) -> spec::Split {
        if s.holdout_basis_points > 10_000 {
            self.report(
                "split.holdoutBasisPoints",
                format!("at most 10000 (100%), got {}", s.holdout_basis_points),
            );
        }
        let mut seen = HashSet::new();
        let mut variants = Vec::new();
        for (i, v) in s.variants.iter().enumerate() {
            let path = format!("split.variants[{i}]");
            if let Some(p) = id_problem(&v.id) {
                self.report(format!("{path}.id"), p);
            } else if !seen.insert(v.id.as_str()) {
                self.report(
                    format!("{path}.id"),
                    format!("duplicate variant id `{}`", v.id),
                );
            }
            if v.weight == 0 {
                self.report(format!("{path}.weight"), "must be positive");
            }
            let initial = if v.initial_state.is_empty() {
                None
            } else {
                let found = lookup(&v.initial_state);
                if found.is_none() {
                    self.report(
                        format!("{path}.initialState"),
                        format!("unknown state `{}`", v.initial_state),
                    );
                }
                found
            };
            variants.push(spec::Variant {
                id: v.id.clone(),
                weight: v.weight,
                initial_state: initial,
            });
        }
        spec::Split {
            seed: s.seed,
            holdout_basis_points: s.holdout_basis_points.min(10_000),
            variants,
        }
    }

    fn migrations(&mut self, spec: &v1::CampaignSpec, lookup: &dyn Fn(&str) -> Option<StateIdx>) {
        let mut seen = HashSet::new();
        for (i, m) in spec.migrations.iter().enumerate() {
            let path = format!("migrations[{i}]");
            if m.from_version == 0 || m.from_version >= spec.version {
                self.report(
                    format!("{path}.fromVersion"),
                    format!(
                        "must be an earlier version (1 to {})",
                        spec.version.saturating_sub(1)
                    ),
                );
            } else if !seen.insert(m.from_version) {
                self.report(
                    format!("{path}.fromVersion"),
                    format!("version {} is mapped twice", m.from_version),
                );
            }
            for (from, to) in &m.states {
                if let Some(p) = id_problem(from) {
                    self.report(format!("{path}.states"), p);
                }
                if lookup(to).is_none() {
                    self.report(
                        format!("{path}.states.{from}"),
                        format!("unknown state `{to}`"),
                    );
                }
            }
        }
    }

    fn budget(&mut self, b: &v1::Budget) -> Option<spec::Budget> {
        let currency_ok = iso_currency::Currency::from_code(&b.currency).is_some();
        if !currency_ok {
            self.report(
                "budget.currency",
                format!("`{}` is not an ISO 4217 code such as EUR", b.currency),
            );
        }
        let total = if b.total.is_empty() {
            None
        } else {
            self.amount("budget.total", &b.total)
        };
        let mut cost_per_action = BTreeMap::new();
        for (name, cost) in &b.cost_per_action {
            let path = format!("budget.costPerAction.{name}");
            let kind = v1::ActionKind::from_str_name(&format!("ACTION_KIND_{name}"))
                .filter(|k| *k != v1::ActionKind::Unspecified);
            match kind {
                None => self.report(
                    &path,
                    format!("unknown action kind `{name}` (e.g. EMAIL, POSTAL_MAIL)"),
                ),
                Some(kind) => {
                    if let Some(d) = self.amount(&path, cost) {
                        cost_per_action.insert(kind as i32, d);
                    }
                }
            }
        }
        Some(spec::Budget {
            currency: b.currency.clone(),
            total,
            cost_per_action,
        })
    }

    fn reachability(&mut self, states: &[spec::State], paths: &[String], roots: &[StateIdx]) {
        let mut seen = vec![false; states.len()];
        let mut queue: VecDeque<StateIdx> = roots
            .iter()
            .copied()
            .filter(|r| *r < states.len())
            .collect();
        while let Some(i) = queue.pop_front() {
            if std::mem::replace(&mut seen[i], true) {
                continue;
            }
            queue.extend(states[i].transitions.iter().map(|t| t.to));
        }
        for (i, reached) in seen.iter().enumerate() {
            if !reached {
                self.report(&paths[i], "unreachable from the initial state");
            }
        }
    }

    /// Unguarded immediate transitions that lead back to where they started would loop forever.
    /// Each state has at most one such successor (the first one wins), so each walk stops at
    /// a state already walked: linear in the number of states, whatever the spec.
    fn immediate_cycles(&mut self, states: &[spec::State], paths: &[String]) {
        let next = |i: StateIdx| {
            states[i].transitions.iter().find_map(|t| match &t.trigger {
                Trigger::Immediately(None) => Some(t.to),
                _ => None,
            })
        };
        // 0: not walked yet; w + 1: walked by the walk from state w.
        let mut walked = vec![0usize; states.len()];
        let mut on_cycle = vec![false; states.len()];
        for start in 0..states.len() {
            if walked[start] != 0 {
                continue;
            }
            let mut path = Vec::new();
            let mut at = Some(start);
            while let Some(i) = at.filter(|i| *i < states.len()) {
                if walked[i] == start + 1 {
                    // Back on this walk's own path: the states from `i` on form a cycle.
                    let from = path.iter().position(|p| *p == i).unwrap_or(0);
                    for p in &path[from..] {
                        on_cycle[*p] = true;
                    }
                    break;
                }
                if walked[i] != 0 {
                    break;
                }
                walked[i] = start + 1;
                path.push(i);
                at = next(i);
            }
        }
        for (i, path) in paths.iter().enumerate() {
            if on_cycle[i] {
                self.report(
                    path,
                    "unguarded immediate transitions form a cycle through this state",
                );
            }
        }
    }
}

/// The action kind's name without its prefix (`EMAIL`), as used in budgets and summaries.
#[must_use]
pub fn kind_name(kind: v1::ActionKind) -> &'static str {
    kind.as_str_name().trim_start_matches("ACTION_KIND_")
}
