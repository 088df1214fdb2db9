//! CEL conditions: compiled once per spec, evaluated against the variables their place allows,
//! within limits on their size, their nesting and the work of each evaluation.

mod budget;
mod shape;

use std::{fmt, sync::Arc};

pub use cel::Env;
use cel::{Context, IdedExpr, Value};

pub use shape::{ShapeError, ShapeLimits};

/// Bounds on CEL conditions. Size and nesting are checked when a spec is validated: the size
/// before the expression is parsed, the nesting on the tree the parser built (the parse runs
/// on a stack of its own; the evaluator recurses once per level); the cost bounds each
/// evaluation. Set by the policy (`celLimits`), so replay applies the same bounds
/// at the same point of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CelLimits {
    /// Longest expression, in bytes.
    pub max_bytes: usize,
    /// Deepest tree (operators, member accesses, calls, comprehensions on one path).
    pub max_depth: usize,
    /// Most cost units one evaluation may spend: one per element of each comprehension's
    /// range, and per cell of each value a `map` or `filter` builds.
    pub max_cost: u64,
}

impl CelLimits {
    /// What applies when the policy says nothing.
    pub const DEFAULT: Self = Self {
        max_bytes: 16 * 1024,
        max_depth: 64,
        max_cost: 100_000,
    };

    /// The most a policy may allow: nesting past this is not safe on a thread's default
    /// stack (measured by the tests of this module on a 2 MiB stack, in a debug build).
    pub const CEILING: Self = Self {
        // The parse's own stack is sized for this (see `shape`).
        max_bytes: 64 * 1024,
        max_depth: 100,
        max_cost: 100_000_000,
    };

    fn shape(self) -> ShapeLimits {
        ShapeLimits {
            max_bytes: self.max_bytes,
            max_depth: self.max_depth,
        }
    }
}

impl Default for CelLimits {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The CEL variables a condition may name, fixed by where the condition sits in the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Audience filter: `contact`, `campaign`.
    Audience,
    /// Entry trigger guard: `contact`, `event`, `campaign`.
    EntryTrigger,
    /// Event transition guard: `contact`, `event`, `state`, `campaign`.
    EventTransition,
    /// Immediate transition guard: `contact`, `state`, `campaign` (there is no event:
    /// the state may have been entered by a timer or at launch).
    Immediate,
}

impl Scope {
    /// Variables visible in this scope.
    #[must_use]
    pub fn variables(self) -> &'static [&'static str] {
        match self {
            Scope::Audience => &["contact", "campaign"],
            Scope::EntryTrigger => &["contact", "event", "campaign"],
            Scope::EventTransition => &["contact", "event", "state", "campaign"],
            Scope::Immediate => &["contact", "state", "campaign"],
        }
    }
}

/// The parser's own limit, on bracketed levels only: above [`CelLimits::CEILING`]'s nesting,
/// so that the measure of the whole tree (which says more) refuses first.
const PARSER_RECURSION_LIMIT: u16 = 128;

/// Every variable any scope knows, to tell a misplaced variable from a misspelt one.
const ALL_VARIABLES: [&str; 4] = ["contact", "event", "state", "campaign"];

/// Why a CEL expression was rejected when the spec was compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The expression does not parse.
    #[error("invalid CEL: {0}")]
    Syntax(String),
    /// The expression is longer or nests deeper than the limits allow.
    #[error("CEL over the limits: {0}")]
    Shape(#[from] ShapeError),
    /// The expression names a variable that is not available here.
    #[error("`{name}` is not available here (available: {available})")]
    UnavailableVariable {
        /// The variable named.
        name: String,
        /// The variables that are available, comma-separated.
        available: String,
    },
    /// The expression names a variable no scope knows.
    #[error("unknown variable `{name}` (available: {available})")]
    UnknownVariable {
        /// The variable named.
        name: String,
        /// The variables that are available, comma-separated.
        available: String,
    },
}

/// The standard CEL environment (functions and macros), built once per spec and shared by
/// all its conditions: building it is far costlier than evaluating a guard.
#[must_use]
pub fn standard_env() -> Arc<Env> {
    Arc::new(Env::stdlib())
}

/// A compiled CEL condition that must evaluate to a boolean.
#[derive(Clone)]
pub struct Condition {
    source: Arc<str>,
    expr: Arc<IdedExpr>,
    env: Arc<Env>,
    /// Whether the expression has comprehensions, whose work is metered.
    metered: bool,
    /// The scope variables the expression names: only those are built and bound when it
    /// runs (building the contact's CEL value costs more than most guards).
    uses: Vec<&'static str>,
}

/// Two conditions are the same when written the same (they compile the same).
impl PartialEq for Condition {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Checks `source` against the size and nesting `limits`, parses it and checks that it
    /// names only variables `scope` provides. `env` is the environment it will run in (see
    /// [`standard_env`]).
    pub fn compile(
        source: &str,
        scope: Scope,
        env: &Arc<Env>,
        limits: &CelLimits,
    ) -> Result<Self, CompileError> {
        let mut expr = shape::parse(source, env, PARSER_RECURSION_LIMIT, limits.shape())?
            .map_err(|e| CompileError::Syntax(syntax_message(&e)))?;
        let bound = comprehension_variables(source);
        let available = scope.variables().join(", ");
        let mut uses = Vec::new();
        for name in expr.references().variables() {
            if let Some(known) = scope.variables().iter().find(|v| **v == name) {
                uses.push(*known);
                continue;
            }
            if bound.iter().any(|b| b == name) {
                continue;
            }
            let name = name.to_string();
            let available = available.clone();
            return Err(if ALL_VARIABLES.contains(&name.as_str()) {
                CompileError::UnavailableVariable { name, available }
            } else {
                CompileError::UnknownVariable { name, available }
            });
        }
        let metered = budget::instrument(&mut expr);
        // The meter's wrappers are levels the evaluator recurses through too: the tree that
        // runs must be within the limit, not only the one written.
        let depth = shape::depth(&expr);
        if depth > limits.max_depth {
            return Err(CompileError::Shape(ShapeError::TooDeep {
                depth,
                limit: limits.max_depth,
            }));
        }
        Ok(Self {
            source: source.into(),
            expr: Arc::new(expr),
            env: Arc::clone(env),
            metered,
            uses,
        })
    }

    /// Why the condition can never be evaluated within `max_cost`, if that is known now: an
    /// expression that names no variable always does the same work, so it is evaluated once
    /// here, as validation. An expression over variables is bounded when it runs.
    #[must_use]
    pub fn constant_cost_problem(&self, max_cost: u64) -> Option<String> {
        if !self.metered || !self.uses.is_empty() {
            return None;
        }
        match self.eval(&Bindings::default(), max_cost) {
            Err(EvalError(reason)) if reason.starts_with(budget::EXCEEDED) => Some(format!(
                "{reason}, whatever the contact: it names no variable, so every evaluation does this work"
            )),
            _ => None,
        }
    }

    /// Whether the expression names the scope variable `name` (so it must be bound).
    #[must_use]
    pub fn uses(&self, name: &str) -> bool {
        self.uses.contains(&name)
    }

    /// The expression as written in the spec.
    #[must_use]
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Evaluates the condition, spending at most `max_cost` units. A missing key, a type
    /// mismatch, a non-boolean result or a spent budget is an error, which callers treat as
    /// "does not match" and report.
    pub fn eval(&self, bindings: &Bindings, max_cost: u64) -> Result<bool, EvalError> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        for (name, value) in &bindings.values {
            ctx.add_variable_from_value(*name, value.clone());
        }
        let meter = self.metered.then(|| budget::install(&mut ctx, max_cost));
        let result = ctx.resolve(&self.expr);
        // `exists` and `all` set a step's error aside and may still find their answer in a
        // later step: a spent budget fails the evaluation all the same.
        if let Some(meter) = meter.as_ref().filter(|m| m.ran_out()) {
            return Err(EvalError(meter.exceeded()));
        }
        match result {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError(format!(
                "expected a boolean, got {:?}",
                other.type_of()
            ))),
            Err(_) if meter.as_ref().is_some_and(budget::Meter::ran_out) => {
                Err(EvalError(meter.map(|m| m.exceeded()).unwrap_or_default()))
            }
            Err(e) => Err(EvalError(e.to_string())),
        }
    }
}

/// A CEL evaluation failure, with the interpreter's message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EvalError(pub String);

/// The variables bound for one evaluation.
#[derive(Debug, Default, Clone)]
pub struct Bindings {
    values: Vec<(&'static str, Value)>,
}

impl Bindings {
    /// Binds `name` to `value`, replacing an earlier binding of the same name.
    #[must_use]
    pub fn with(mut self, name: &'static str, value: Value) -> Self {
        self.values.retain(|(n, _)| *n != name);
        self.values.push((name, value));
        self
    }
}

/// First line of a parser error, as `line L column C: message`, without the grammar's long
/// token list.
fn syntax_message(err: &cel::ParseErrors) -> String {
    // The first error only, from its fields: formatting them all copies the source line once
    // per error, and an expression of stray characters has one error per character.
    let Some(first) = err.errors.first() else {
        return "syntax error".into();
    };
    let msg = first.msg.lines().next().unwrap_or("syntax error").trim();
    let msg = match msg.find(" expecting {") {
        Some(cut) => &msg[..cut],
        None => msg,
    };
    let (line, column) = first.pos;
    if line > 0 {
        format!("line {line} column {column}: {msg}")
    } else {
        msg.to_string()
    }
}

/// Names bound by CEL macros (`list.exists(p, ...)`): the interpreter reports them as
/// references, but they are not free variables.
fn comprehension_variables(source: &str) -> Vec<String> {
    const MACROS: [&str; 6] = [
        ".exists(",
        ".all(",
        ".exists_one(",
        ".map(",
        ".filter(",
        ".existsOne(",
    ];
    let mut names = Vec::new();
    for m in MACROS {
        let mut rest = source;
        while let Some(at) = rest.find(m) {
            rest = &rest[at + m.len()..];
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            if !name.is_empty() {
                names.push(name);
            }
        }
    }
    names
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn event_with_rating(rating: Value) -> Bindings {
        let attrs: HashMap<String, Value> = [("rating".to_string(), rating)].into_iter().collect();
        let event: HashMap<String, Value> = [("attrs".to_string(), Value::from(attrs))]
            .into_iter()
            .collect();
        Bindings::default().with("event", Value::from(event))
    }

    #[test]
    fn guards_compare_numbers_across_int_and_double() {
        let c = Condition::compile(
            "event.attrs.rating >= 4",
            Scope::EventTransition,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(
            c.eval(
                &event_with_rating(Value::Int(5)),
                CelLimits::DEFAULT.max_cost
            ),
            Ok(true)
        );
        assert_eq!(
            c.eval(
                &event_with_rating(Value::Float(3.5)),
                CelLimits::DEFAULT.max_cost
            ),
            Ok(false)
        );
        assert_eq!(
            c.eval(
                &event_with_rating(Value::Int(4)),
                CelLimits::DEFAULT.max_cost
            ),
            Ok(true)
        );
    }

    #[test]
    fn a_missing_key_is_an_error_not_a_silent_false() {
        let c = Condition::compile(
            "event.attrs.score >= 4",
            Scope::EventTransition,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        assert!(
            c.eval(
                &event_with_rating(Value::Int(5)),
                CelLimits::DEFAULT.max_cost
            )
            .is_err()
        );
    }

    #[test]
    fn only_the_variables_named_are_bound() {
        let c = Condition::compile(
            "event.attrs.rating >= 4 && contact.purchases.exists(p, p.product == 'A')",
            Scope::EventTransition,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        assert!(c.uses("event") && c.uses("contact"));
        assert!(!c.uses("state") && !c.uses("campaign") && !c.uses("p"));
        // A variable it names must be bound: leaving `contact` out is an error.
        assert!(
            c.eval(
                &event_with_rating(Value::Int(5)),
                CelLimits::DEFAULT.max_cost
            )
            .is_err()
        );
        let guard = Condition::compile(
            "event.attrs.rating >= 4",
            Scope::EventTransition,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(
            guard.eval(
                &event_with_rating(Value::Int(4)),
                CelLimits::DEFAULT.max_cost
            ),
            Ok(true)
        );
    }

    #[test]
    fn non_boolean_results_are_errors() {
        let c = Condition::compile(
            "event.attrs.rating",
            Scope::EventTransition,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        let err = c
            .eval(
                &event_with_rating(Value::Int(5)),
                CelLimits::DEFAULT.max_cost,
            )
            .unwrap_err();
        assert!(err.0.contains("expected a boolean"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_briefly() {
        let err = Condition::compile(
            "event.type ==",
            Scope::EventTransition,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap_err();
        let CompileError::Syntax(msg) = err else {
            panic!("{err:?}")
        };
        assert!(msg.contains("Syntax error"), "{msg}");
        assert!(!msg.contains("expecting {"), "{msg}");
    }

    #[test]
    fn variables_are_checked_against_the_scope() {
        assert_eq!(
            Condition::compile(
                "event.type == 'x'",
                Scope::Audience,
                &standard_env(),
                &CelLimits::DEFAULT
            )
            .unwrap_err(),
            CompileError::UnavailableVariable {
                name: "event".into(),
                available: "contact, campaign".into()
            }
        );
        assert!(matches!(
            Condition::compile("contat.tags.size() > 0", Scope::Audience, &standard_env(), &CelLimits::DEFAULT).unwrap_err(),
            CompileError::UnknownVariable { name, .. } if name == "contat"
        ));
        assert!(
            Condition::compile(
                "contact.purchases.exists(p, p.product == 'A')",
                Scope::Audience,
                &standard_env(),
                &CelLimits::DEFAULT,
            )
            .is_ok()
        );
    }

    fn compile_with(source: &str, limits: &CelLimits) -> Result<Condition, CompileError> {
        Condition::compile(source, Scope::EventTransition, &standard_env(), limits)
    }

    fn literal_list(n: usize) -> String {
        format!("[{}]", vec!["1"; n].join(","))
    }

    #[test]
    fn nested_comprehensions_stop_at_the_cost_limit() {
        let r = literal_list(60);
        let source = format!("{r}.all(a, {r}.all(b, {r}.all(c, {r}.all(d, a + b + c + d > 0))))");
        let c = compile_with(&source, &CelLimits::DEFAULT).unwrap();
        let err = c.eval(&Bindings::default(), 100_000).unwrap_err();
        assert!(err.0.contains("cost limit exceeded"), "{err}");
        assert!(err.0.contains("100000"), "{err}");
        // Two levels within a budget that covers them exactly: the outer range of 60, then 60
        // inner ranges of 60.
        let small = format!("{r}.all(a, {r}.all(b, true))");
        let c = compile_with(&small, &CelLimits::DEFAULT).unwrap();
        assert_eq!(c.eval(&Bindings::default(), 60 + 60 * 60), Ok(true));
        assert!(c.eval(&Bindings::default(), 60 + 60 * 60 - 1).is_err());
    }

    #[test]
    fn results_that_multiply_stop_at_the_cost_limit() {
        // Each of 3000 elements maps to a copy of a 3000-element list: 9M values unchecked.
        let r = literal_list(3000);
        let source = format!("size({r}.map(a, {r})) > 0");
        let c = compile_with(&source, &CelLimits::DEFAULT).unwrap();
        let err = c.eval(&Bindings::default(), 100_000).unwrap_err();
        assert!(err.0.contains("cost limit exceeded"), "{err}");
        let filtered = format!("size({r}.filter(a, a == 1)) == 3000");
        let c = compile_with(&filtered, &CelLimits::DEFAULT).unwrap();
        // 3000 elements of the range, 3000 kept, and the operand `a` of each step's `==`.
        assert_eq!(c.eval(&Bindings::default(), 9000), Ok(true));
        assert!(c.eval(&Bindings::default(), 8999).is_err());
    }

    #[test]
    fn a_condition_naming_no_variable_is_judged_against_the_cost_when_validated() {
        let r = literal_list(1000);
        let constant = compile_with(
            &format!("{r}.all(a, {r}.all(b, true))"),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        let problem = constant.constant_cost_problem(100_000).unwrap();
        assert!(problem.starts_with("cost limit exceeded"), "{problem}");
        assert_eq!(constant.constant_cost_problem(2_000_000), None);
        // Over a variable it is bounded when it runs instead.
        let over_event = compile_with(
            &format!("size(event.id) > 0 && {r}.all(a, {r}.all(b, true))"),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(over_event.constant_cost_problem(100_000), None);
    }

    /// Linear work repeated in a loop is charged: `t in tags` scans the list at every step.
    #[test]
    fn operands_that_grow_are_charged_at_every_step() {
        let tags: Vec<Value> = (0..1000).map(|i| Value::from(format!("t{i}"))).collect();
        let contact: HashMap<String, Value> = [("tags".to_string(), Value::List(tags.into()))]
            .into_iter()
            .collect();
        let b = Bindings::default().with("contact", Value::from(contact));
        let c = Condition::compile(
            "contact.tags.all(t, t in contact.tags)",
            Scope::Audience,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        let err = c.eval(&b, 100_000).unwrap_err();
        assert!(err.0.starts_with("cost limit exceeded"), "{err}");
        // A comparison with a literal costs a cell per step, not the list.
        let cheap = Condition::compile(
            "contact.tags.exists(t, t == 't999')",
            Scope::Audience,
            &standard_env(),
            &CelLimits::DEFAULT,
        )
        .unwrap();
        assert_eq!(cheap.eval(&b, 100_000), Ok(true));
        assert!(cheap.eval(&b, 1000).is_err());
    }

    #[test]
    fn a_spent_budget_fails_even_when_a_later_step_would_answer() {
        // The first element's inner comprehension runs out; `exists` would find `true` in
        // the second element's cheap step.
        let source = format!(
            "[0, 1].exists(i, i == 0 ? {r}.all(a, {r}.all(b, true)) : true)",
            r = literal_list(1000)
        );
        let c = compile_with(&source, &CelLimits::DEFAULT).unwrap();
        let err = c.eval(&Bindings::default(), 100_000).unwrap_err();
        assert!(err.0.starts_with("cost limit exceeded"), "{err}");
    }

    #[test]
    fn conditions_without_comprehensions_are_not_metered() {
        let c = compile_with("1 + 2 == 3", &CelLimits::DEFAULT).unwrap();
        assert!(!c.metered);
        assert_eq!(c.eval(&Bindings::default(), 0), Ok(true));
    }

    #[test]
    fn over_the_limits_is_a_compile_error_naming_the_limit() {
        let chain = vec!["1"; 30_000].join("+");
        let err = compile_with(&format!("{chain} > 0"), &CelLimits::CEILING).unwrap_err();
        assert!(
            matches!(
                err,
                CompileError::Shape(ShapeError::TooDeep {
                    depth: 30_001,
                    limit: 100
                })
            ),
            "{err}"
        );
        let err = compile_with(
            "contact.tier == 'A'",
            &CelLimits {
                max_bytes: 8,
                ..CelLimits::DEFAULT
            },
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "CEL over the limits: the expression is 19 bytes long, more than the limit of 8"
        );
    }

    /// Token soups, weighted towards what nests (operator chains, brackets, calls) and what
    /// a lexer may read differently from the check (quotes, escapes, prefixes, numbers glued
    /// to words): whatever the check accepts compiles and runs on a 2 MiB stack.
    #[test]
    fn whatever_the_check_accepts_runs_on_a_default_stack() {
        use proptest::prelude::*;
        const TOKENS: [&str; 34] = [
            "1", "a", "+", "+", "+", ".b", ".b", "(", ")", "[", "]", "{", "}", "f(", "in ", "1in ",
            "'", "\"", "'''", "\\", "\\q", "r'", "b'", "br'", "rb'", "?", ":", "!", "-", " ", "\n",
            "&&", ",", "0x",
        ];
        // What a lexer might read differently, then a long run of what nests, then noise.
        const TRICKS: [&str; 15] = [
            "'\r",
            "'\\q",
            "'\\\n",
            "''''",
            "rb'x'",
            "'",
            "\"\"\"",
            "1e",
            "0x",
            "1.",
            "r'\\",
            "b\"",
            "a.`//`",
            "'\"\"\"\n",
            "0XBr'",
        ];
        const UNITS: [&str; 8] = ["+1", "1in ", ".b", "(", "[", "f(", "!", "-"];
        let soup = (
            proptest::collection::vec(0..TRICKS.len(), 0..4),
            0..UNITS.len(),
            50usize..4000,
            proptest::collection::vec(0..TOKENS.len(), 0..200),
        )
            .prop_map(|(tricks, unit, n, noise)| {
                let mut s: String = tricks.into_iter().map(|i| TRICKS[i]).collect();
                s.push_str(&UNITS[unit].repeat(n));
                s.extend(noise.into_iter().map(|i| TOKENS[i]));
                s
            });
        let limits = CelLimits::CEILING;
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let config = ProptestConfig {
                    cases: 200,
                    failure_persistence: None,
                    ..ProptestConfig::default()
                };
                proptest::test_runner::TestRunner::new(config)
                    .run(&soup, |source| {
                        if let Ok(c) = compile_with(&source, &limits) {
                            let _ = c.eval(&Bindings::default(), limits.max_cost);
                        }
                        Ok(())
                    })
                    .map_err(|e| e.to_string())
            })
            .expect("thread");
        handle.join().expect("no stack overflow").unwrap();
    }

    /// The deepest expression of each shape that the ceiling accepts compiles and runs on a
    /// thread with the default 2 MiB stack: the nesting limit is what keeps the recursive
    /// parser and evaluator within it.
    #[test]
    fn the_deepest_accepted_conditions_run_on_a_default_stack() {
        type Shape = fn(usize) -> String;
        let shapes: [(&str, Shape); 11] = [
            ("sum", |n| format!("{} > 0", vec!["1"; n].join(" + "))),
            ("parens", |n| {
                format!("{}1{} == 1", "(".repeat(n), ")".repeat(n))
            }),
            ("calls", |n| {
                format!("{}1{} == 1", "int(".repeat(n), ")".repeat(n))
            }),
            ("lists", |n| {
                format!(
                    "{}1{}{} == 1",
                    "[".repeat(n),
                    "]".repeat(n),
                    "[0]".repeat(n)
                )
            }),
            ("not", |n| format!("{}true", "!".repeat(n))),
            ("neg", |n| {
                format!("{}1{} != 0", "-(".repeat(n), ")".repeat(n))
            }),
            ("ternary", |n| {
                format!("{}true{}", "false ? false : ".repeat(n), "")
            }),
            ("comprehensions", |n| {
                format!("{}true{}", "[1].all(x, ".repeat(n), ")".repeat(n))
            }),
            ("maps", |n| {
                format!("size({}1{}) == 1", "{1: ".repeat(n), "}".repeat(n))
            }),
            ("sum in a loop", |n| {
                format!("[1].all(x, {} > 0)", vec!["x"; n].join(" + "))
            }),
            ("chained maps", |n| {
                format!("size([1]{}) == 1", ".map(x, x)".repeat(n))
            }),
        ];
        let limits = CelLimits::CEILING;
        let handle = std::thread::Builder::new()
            .stack_size(2 * 1024 * 1024)
            .spawn(move || {
                let mut deepest = Vec::new();
                for (name, make) in shapes {
                    let too_deep = |n: usize| {
                        matches!(
                            compile_with(&make(n), &limits),
                            Err(CompileError::Shape(ShapeError::TooDeep { .. }))
                        )
                    };
                    let mut n = 1;
                    while !too_deep(n + 1) && n < 1000 {
                        n += 1;
                    }
                    // The parser's own limit may refuse some shapes first (a syntax error):
                    // only overflowing the stack is wrong.
                    if let Ok(c) = compile_with(&make(n), &limits) {
                        let _ = c.eval(&Bindings::default(), limits.max_cost);
                    }
                    deepest.push((name, n));
                }
                deepest
            })
            .expect("thread");
        let deepest = handle.join().expect("no stack overflow");
        assert!(deepest.iter().all(|(_, n)| *n >= 20), "{deepest:?}");
    }
}
