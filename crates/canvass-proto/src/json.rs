//! Reading the canonical proto3 JSON form with errors that name the field, line and column.

use std::fmt;

use prost_types::field_descriptor_proto::Type;
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
        let mut error = error(
            if path == "." { String::new() } else { path },
            &e.into_inner(),
        );
        if let Some(reason) = number_reason::<T>(text, &error) {
            error.reason = reason;
        }
        error
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

/// The JSON mapping's numbers decode through an untagged enum (a number or a string), whose
/// error says only that neither matched: this says which value, and the range the field's
/// type holds, found from the message's descriptor.
fn number_reason<T>(text: &str, error: &JsonError) -> Option<String> {
    let untagged = error.reason.contains("untagged enum Content")
        || error.reason.contains("number too large")
        || error.reason.contains("number too small")
        || error.reason.contains("invalid digit");
    if !untagged || error.path.is_empty() {
        return None;
    }
    let root = std::any::type_name::<T>().rsplit("::").next()?;
    let kind = numeric_field(root, &error.path)?;
    let value = value_before(text, error.line, error.column);
    let (name, range) = match kind {
        Type::Int32 | Type::Sint32 | Type::Sfixed32 => ("int32", "-2147483648 to 2147483647"),
        Type::Uint32 | Type::Fixed32 => ("uint32", "0 to 4294967295"),
        Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
            ("int64", "-9223372036854775808 to 9223372036854775807")
        }
        Type::Uint64 | Type::Fixed64 => ("uint64", "0 to 18446744073709551615"),
        Type::Float | Type::Double => ("number", "a finite decimal number"),
        _ => return None,
    };
    Some(format!(
        "`{value}` is not a value this field holds: a {name}, {range}"
    ))
}

/// The type of the field at `path` (`states[2].transitions[0].after`, lowerCamelCase) in
/// the message `root` of `canvass.v1`, if it is a scalar.
fn numeric_field(root: &str, path: &str) -> Option<Type> {
    use std::sync::OnceLock;
    static SET: OnceLock<Option<prost_types::FileDescriptorSet>> = OnceLock::new();
    let set = SET
        .get_or_init(|| prost::Message::decode(crate::FILE_DESCRIPTOR_SET).ok())
        .as_ref()?;
    let message = |full: &str| {
        let full = full.trim_start_matches('.');
        set.file.iter().find_map(|f| {
            let package = f.package();
            f.message_type
                .iter()
                .find(|m| format!("{package}.{}", m.name()) == full)
        })
    };
    let mut current = message(&format!("canvass.v1.{root}"))?;
    let segments: Vec<&str> = path
        .split('.')
        .map(|s| s.split('[').next().unwrap_or(s))
        .filter(|s| !s.is_empty())
        .collect();
    for (i, segment) in segments.iter().enumerate() {
        let field = current
            .field
            .iter()
            .find(|f| f.json_name() == *segment || f.name() == *segment)?;
        if i + 1 == segments.len() {
            return Some(field.r#type());
        }
        current = message(field.type_name())?;
    }
    None
}

/// The JSON value that ends at 1-based `column` of `line` (a number or a string).
fn value_before(text: &str, line: usize, column: usize) -> String {
    let line = text.lines().nth(line.saturating_sub(1)).unwrap_or_default();
    // serde_json counts columns in bytes; cut at a character boundary at or before it.
    let mut end = column.min(line.len());
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let head = line[..end].trim_end_matches([',', '}', ']', ' ']);
    let start = if let Some(inner) = head.strip_suffix('"') {
        inner.rfind('"').unwrap_or(0)
    } else {
        head.char_indices()
            .rev()
            .find(|(_, c)| !(c.is_ascii_alphanumeric() || "+-.".contains(*c)))
            .map_or(0, |(i, c)| i + c.len_utf8())
    };
    head[start..].chars().take(40).collect()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v1;

    #[test]
    fn an_out_of_range_integer_names_the_field_its_value_and_the_range() {
        let err =
            from_str::<v1::CampaignSpec>(r#"{"id": "x", "version": 99999999999}"#).unwrap_err();
        assert_eq!(err.path, "version");
        assert_eq!(
            err.reason,
            "`99999999999` is not a value this field holds: a uint32, 0 to 4294967295"
        );
        let err = from_str::<v1::IngestRecord>(
            r#"{"command": {"actor": "a", "submit": {"campaignId": "c", "version": -1}}}"#,
        )
        .unwrap_err();
        assert_eq!(err.path, "command.submit.version");
        assert!(
            err.reason.starts_with("`-1` is not a value"),
            "{}",
            err.reason
        );
        // Text around it that is not ASCII (serde_json counts columns in bytes).
        let err = from_str::<v1::IngestRecord>(
            r#"{"command":{"actor":"éééé","submit":{"campaignId":"c","version":99999999999 é1}}}"#,
        )
        .unwrap_err();
        assert!(!err.reason.is_empty());
        let err =
            from_str::<v1::CampaignSpec>(r#"{"name": "ééé", "version": 99999999999}"#).unwrap_err();
        assert!(err.reason.starts_with("`99999999999`"), "{}", err.reason);
        let err = from_str::<v1::CampaignSpec>(r#"{"version": "12x"}"#).unwrap_err();
        assert!(
            err.reason.contains(r#"`"12x"`"#) && err.reason.contains("uint32"),
            "{}",
            err.reason
        );
    }
}
