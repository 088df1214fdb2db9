//! CEL conditions: compiled once per spec, evaluated against the variables their place allows.

use std::{fmt, sync::Arc};

use cel::{Context, Env, Program, Value};

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

/// Every variable any scope knows, to tell a misplaced variable from a misspelt one.
const ALL_VARIABLES: [&str; 4] = ["contact", "event", "state", "campaign"];

/// Why a CEL expression was rejected when the spec was compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CompileError {
    /// The expression does not parse.
    #[error("invalid CEL: {0}")]
    Syntax(String),
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
    program: Arc<Program>,
    env: Arc<Env>,
    /// The scope variables the expression names: only those are built and bound when it
    /// runs (building the contact's CEL value costs more than most guards).
    uses: Vec<&'static str>,
}

impl fmt::Debug for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Condition").field(&self.source).finish()
    }
}

impl Condition {
    /// Parses `source` and checks that it names only variables `scope` provides. `env` is
    /// the environment it will run in (see [`standard_env`]).
    pub fn compile(source: &str, scope: Scope, env: &Arc<Env>) -> Result<Self, CompileError> {
        let program =
            Program::compile(source).map_err(|e| CompileError::Syntax(syntax_message(&e)))?;
        let bound = comprehension_variables(source);
        let available = scope.variables().join(", ");
        let mut uses = Vec::new();
        for name in program.references().variables() {
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
        Ok(Self {
            source: source.into(),
            program: Arc::new(program),
            env: Arc::clone(env),
            uses,
        })
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

    /// Evaluates the condition. A missing key, a type mismatch or a non-boolean result is an
    /// error, which callers treat as "does not match" and report.
    pub fn eval(&self, bindings: &Bindings) -> Result<bool, EvalError> {
        let mut ctx = Context::with_env(Arc::clone(&self.env));
        for (name, value) in &bindings.values {
            ctx.add_variable_from_value(*name, value.clone());
        }
        match self.program.execute(&ctx) {
            Ok(Value::Bool(b)) => Ok(b),
            Ok(other) => Err(EvalError(format!(
                "expected a boolean, got {:?}",
                other.type_of()
            ))),
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
    let text = err.to_string();
    let first = text.lines().next().unwrap_or("syntax error").trim();
    let first = match first.find(" expecting {") {
        Some(cut) => &first[..cut],
        None => first,
    };
    let rest = first
        .trim_start_matches("ERROR: ")
        .trim_start_matches("<input>:");
    let mut parts = rest.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(line), Some(col), Some(msg))
            if line.parse::<u32>().is_ok() && col.parse::<u32>().is_ok() =>
        {
            format!("line {line} column {col}: {}", msg.trim())
        }
        _ => first.to_string(),
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
        )
        .unwrap();
        assert_eq!(c.eval(&event_with_rating(Value::Int(5))), Ok(true));
        assert_eq!(c.eval(&event_with_rating(Value::Float(3.5))), Ok(false));
        assert_eq!(c.eval(&event_with_rating(Value::Int(4))), Ok(true));
    }

    #[test]
    fn a_missing_key_is_an_error_not_a_silent_false() {
        let c = Condition::compile(
            "event.attrs.score >= 4",
            Scope::EventTransition,
            &standard_env(),
        )
        .unwrap();
        assert!(c.eval(&event_with_rating(Value::Int(5))).is_err());
    }

    #[test]
    fn only_the_variables_named_are_bound() {
        let c = Condition::compile(
            "event.attrs.rating >= 4 && contact.purchases.exists(p, p.product == 'A')",
            Scope::EventTransition,
            &standard_env(),
        )
        .unwrap();
        assert!(c.uses("event") && c.uses("contact"));
        assert!(!c.uses("state") && !c.uses("campaign") && !c.uses("p"));
        // A variable it names must be bound: leaving `contact` out is an error.
        assert!(c.eval(&event_with_rating(Value::Int(5))).is_err());
        let guard = Condition::compile(
            "event.attrs.rating >= 4",
            Scope::EventTransition,
            &standard_env(),
        )
        .unwrap();
        assert_eq!(guard.eval(&event_with_rating(Value::Int(4))), Ok(true));
    }

    #[test]
    fn non_boolean_results_are_errors() {
        let c = Condition::compile(
            "event.attrs.rating",
            Scope::EventTransition,
            &standard_env(),
        )
        .unwrap();
        let err = c.eval(&event_with_rating(Value::Int(5))).unwrap_err();
        assert!(err.0.contains("expected a boolean"), "{err}");
    }

    #[test]
    fn syntax_errors_are_reported_briefly() {
        let err = Condition::compile("event.type ==", Scope::EventTransition, &standard_env())
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
            Condition::compile("event.type == 'x'", Scope::Audience, &standard_env()).unwrap_err(),
            CompileError::UnavailableVariable {
                name: "event".into(),
                available: "contact, campaign".into()
            }
        );
        assert!(matches!(
            Condition::compile("contat.tags.size() > 0", Scope::Audience, &standard_env()).unwrap_err(),
            CompileError::UnknownVariable { name, .. } if name == "contat"
        ));
        assert!(
            Condition::compile(
                "contact.purchases.exists(p, p.product == 'A')",
                Scope::Audience,
                &standard_env(),
            )
            .is_ok()
        );
    }
}
