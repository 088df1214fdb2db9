//! Reading specs, contacts and events from files, with errors that name the file, line and field.

use std::{
    fmt, fs,
    path::{Path, PathBuf},
};

use anyhow::Context as _;
use canvass_core::{Campaign, Catalog, compile};
use canvass_proto::{json, v1};
use prost::Message as _;

/// A problem with one place in an input file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    /// The file.
    pub file: PathBuf,
    /// 1-based line, if the problem has one.
    pub line: Option<usize>,
    /// The field, as a JSON path, if known.
    pub field: Option<String>,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if let Some(field) = &self.field {
            write!(f, ": field `{field}`")?;
        }
        write!(f, ": {}", self.reason)
    }
}

impl std::error::Error for InputError {}

/// Reads a spec: binary protobuf for `.pb`/`.binpb` files, canonical JSON otherwise.
pub fn read_spec(path: &Path) -> Result<v1::CampaignSpec, InputError> {
    let at = |line, field, reason| InputError {
        file: path.to_path_buf(),
        line,
        field,
        reason,
    };
    let bytes = fs::read(path).map_err(|e| at(None, None, format!("cannot read: {e}")))?;
    let binary = matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("pb" | "binpb")
    );
    if binary {
        return v1::CampaignSpec::decode(bytes.as_slice())
            .map_err(|e| at(None, None, format!("not a CampaignSpec: {e}")));
    }
    let text = String::from_utf8(bytes).map_err(|e| at(None, None, format!("not UTF-8: {e}")))?;
    json::from_str(&text).map_err(|e| {
        at(
            Some(e.line),
            (!e.path.is_empty()).then_some(e.path),
            format!("{} (column {})", e.reason, e.column),
        )
    })
}

/// A spec that failed to read or to compile, with every problem found.
#[derive(Debug)]
pub struct SpecProblems {
    /// The file.
    pub file: PathBuf,
    /// Problems found.
    pub problems: Vec<String>,
}

/// Reads and compiles specs. Returns the compiled campaigns, or every problem of every file.
pub fn load_specs(paths: &[PathBuf]) -> Result<Vec<(PathBuf, Campaign)>, Vec<SpecProblems>> {
    let mut campaigns = Vec::new();
    let mut failures = Vec::new();
    for path in paths {
        match read_spec(path) {
            Err(e) => failures.push(SpecProblems {
                file: path.clone(),
                problems: vec![e.to_string()],
            }),
            Ok(spec) => match compile(&spec) {
                Ok(c) => campaigns.push((path.clone(), c)),
                Err(errors) => failures.push(SpecProblems {
                    file: path.clone(),
                    problems: errors
                        .issues
                        .iter()
                        .map(|i| format!("{}: {i}", path.display()))
                        .collect(),
                }),
            },
        }
    }
    if failures.is_empty() {
        Ok(campaigns)
    } else {
        Err(failures)
    }
}

/// Builds a catalog, to check the specs against one another (a second spec with the same id
/// and version is an error; `dangling_references` finds sub-campaigns not given).
pub fn catalog(campaigns: Vec<(PathBuf, Campaign)>) -> anyhow::Result<Catalog> {
    let mut catalog = Catalog::new();
    for (path, campaign) in campaigns {
        catalog
            .insert(campaign)
            .with_context(|| format!("{}", path.display()))?;
    }
    Ok(catalog)
}

/// The messages of a JSON-lines file, and its lines that could not be read.
#[derive(Debug)]
pub struct JsonLines<T> {
    /// Good lines, in file order.
    pub good: Vec<T>,
    /// One error per bad line.
    pub bad: Vec<InputError>,
}

/// Reads a JSON-lines file of messages; blank lines are skipped. `check` adds
/// message-specific requirements (missing required fields). Each bad line becomes an
/// [`InputError`].
pub fn read_jsonl<T: serde::de::DeserializeOwned>(
    path: &Path,
    check: impl Fn(&T) -> Option<(&'static str, String)>,
) -> anyhow::Result<JsonLines<T>> {
    let text =
        fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let n = i + 1;
        if line.trim().is_empty() {
            continue;
        }
        let at = |field: Option<String>, reason: String| InputError {
            file: path.to_path_buf(),
            line: Some(n),
            field,
            reason,
        };
        match json::from_str::<T>(line) {
            Err(e) => bad.push(at(
                (!e.path.is_empty()).then_some(e.path),
                format!("{} (column {})", e.reason, e.column),
            )),
            Ok(msg) => match check(&msg) {
                Some((field, reason)) => bad.push(at(Some(field.to_string()), reason)),
                None => good.push(msg),
            },
        }
    }
    Ok(JsonLines { good, bad })
}

/// Requirements on a contact line.
pub fn check_contact(c: &v1::Contact) -> Option<(&'static str, String)> {
    c.id.trim()
        .is_empty()
        .then(|| ("id", "required".to_string()))
}

/// Requirements on an event line.
pub fn check_event(e: &v1::TouchpointEvent) -> Option<(&'static str, String)> {
    let missing = [
        ("id", e.id.trim().is_empty()),
        ("type", e.r#type.trim().is_empty()),
        ("contactId", e.contact_id.trim().is_empty()),
        ("occurredAt", e.occurred_at.is_none()),
    ];
    missing
        .into_iter()
        .find(|(_, m)| *m)
        .map(|(f, _)| (f, "required".to_string()))
}

/// Parses an RFC 3339 instant given on the command line.
pub fn parse_instant(text: &str) -> anyhow::Result<canvass_core::UnixMillis> {
    let t = chrono::DateTime::parse_from_rfc3339(text).with_context(|| {
        format!("`{text}` is not an RFC 3339 time such as 2026-03-01T09:00:00Z")
    })?;
    Ok(canvass_core::UnixMillis(t.timestamp_millis()))
}
