//! Reading the canonical proto3 JSON form with errors that name the field, line and column.

use std::fmt;

use serde::{Serialize, de::DeserializeOwned};
use serde_json::error::Category;

/// A JSON document that does not decode into the expected message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct JsonError {
    /// Path of the offending field in lowerCamelCase JSON form (`states[2].transitions[0].after`);
    /// empty when the document itself is malformed.
    pub path: String,
    /// 1-based line in the text given.
    pub line: usize,
    /// 1-based column in that line.
    pub column: usize,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(
                f,
                "line {} column {}: {}",
                self.line, self.column, self.reason
            )
        } else {
            write!(
                f,
                "line {} column {}: field `{}`: {}",
                self.line, self.column, self.path, self.reason
            )
        }
    }
}

/// Decodes a message from its canonical JSON form.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        error(
            if path == "." { String::new() } else { path },
            &e.into_inner(),
        )
    })?;
    de.end().map_err(|e| error(String::new(), &e))?;
    Ok(value)
}

fn error(path: String, e: &serde_json::Error) -> JsonError {
    let mut reason = strip_position(&e.to_string());
    let malformed = matches!(e.classify(), Category::Syntax | Category::Eof);
    if malformed {
        reason = format!("invalid JSON: {reason}");
    }
    JsonError {
        // Where the document itself is malformed, no field is to blame.
        path: if malformed { String::new() } else { path },
        line: e.line(),
        column: e.column(),
        reason,
    }
}

/// Encodes a message in its canonical JSON form on one line.
///
/// # Errors
/// A value the mapping cannot express (a timestamp outside years 0001 to 9999, a
/// non-finite number): the caller must not write or count what it could not encode.
pub fn to_string<T: Serialize>(message: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string(message)
}

/// Encodes a message in its canonical JSON form, indented for people.
///
/// # Errors
/// As [`to_string`].
pub fn to_string_pretty<T: Serialize>(message: &T) -> Result<String, serde_json::Error> {
    serde_json::to_string_pretty(message)
}

/// serde_json appends " at line L column C"; the position is reported separately.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(cut) => message[..cut].to_string(),
        None => message.to_string(),
    }
}
