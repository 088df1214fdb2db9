//! The canonical proto3 JSON mapping: specs round-trip JSON -> proto -> JSON, and bad JSON
//! is reported with the field's path.

#![allow(clippy::unwrap_used)]

use canvass_proto::{json, v1};
use prost::Message;
use serde::{Serialize, de::DeserializeOwned};

fn example(name: &str) -> String {
    let path = format!(
        "{}/../../examples/reference/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Numbers in `google.protobuf.Struct` are doubles: `60` comes back as `60.0`, the same
/// number. Compare documents with every number read as a double.
fn numbers_as_doubles(v: serde_json::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        J::Number(n) => J::from(n.as_f64().unwrap()),
        J::Array(a) => J::Array(a.into_iter().map(numbers_as_doubles).collect()),
        J::Object(o) => J::Object(
            o.into_iter()
                .map(|(k, v)| (k, numbers_as_doubles(v)))
                .collect(),
        ),
        other => other,
    }
}

/// JSON -> message -> JSON gives the same document, and message -> bytes -> message the same message.
fn round_trip<T: DeserializeOwned + Serialize + Message + Default + PartialEq + std::fmt::Debug>(
    text: &str,
) {
    let message: T = json::from_str(text).unwrap();
    let original: serde_json::Value = serde_json::from_str(text).unwrap();
    let again: serde_json::Value =
        serde_json::from_str(&json::to_string(&message).unwrap()).unwrap();
    assert_eq!(numbers_as_doubles(original), numbers_as_doubles(again));
    let decoded = T::decode(message.encode_to_vec().as_slice()).unwrap();
    assert_eq!(decoded, message);
    assert_eq!(
        json::from_str::<T>(&json::to_string_pretty(&message).unwrap()).unwrap(),
        message
    );
}

#[test]
fn the_reference_specs_round_trip() {
    round_trip::<v1::CampaignSpec>(&example("campaign.json"));
    round_trip::<v1::CampaignSpec>(&example("survey.json"));
}

#[test]
fn contact_and_event_lines_round_trip() {
    for line in example("contacts.jsonl").lines() {
        round_trip::<v1::Contact>(line);
    }
    // The example deliberately holds three malformed lines; every other line round-trips.
    let mut good = 0;
    for line in example("events.jsonl").lines() {
        if json::from_str::<v1::TouchpointEvent>(line).is_ok() {
            round_trip::<v1::TouchpointEvent>(line);
            good += 1;
        }
    }
    assert_eq!(good, example("events.jsonl").lines().count() - 2);
}

#[test]
fn durations_and_enums_use_their_canonical_json_forms() {
    let spec: v1::CampaignSpec = json::from_str(&example("campaign.json")).unwrap();
    let invited = &spec.states[0];
    let Some(v1::transition::When::After(after)) = &invited.transitions[1].when else {
        panic!("{:?}", invited.transitions[1]);
    };
    assert_eq!(after.seconds, 7 * 24 * 3600);
    assert_eq!(invited.actions[0].kind(), v1::ActionKind::Email);
    let text = json::to_string(&spec).unwrap();
    assert!(text.contains(r#""after":"604800s""#), "{text}");
    assert!(text.contains(r#""kind":"ACTION_KIND_EMAIL""#), "{text}");
    assert!(text.contains(r#""initialState":"invited""#), "{text}");
}

fn error_of<T: DeserializeOwned + std::fmt::Debug>(text: &str) -> String {
    json::from_str::<T>(text).unwrap_err().to_string()
}

#[test]
fn errors_name_the_field_line_and_column() {
    let spec = "{\n  \"id\": \"x\",\n  \"states\": [{\"id\": \"a\", \"actions\": [{\"kind\": \"ACTION_KIND_FAX\"}]}]\n}";
    let e = error_of::<v1::CampaignSpec>(spec);
    assert!(e.starts_with("line 3 column "), "{e}");
    assert!(e.contains("field `states[0].actions[0].kind`"), "{e}");
    assert!(e.contains("ACTION_KIND_FAX"), "{e}");

    let e = error_of::<v1::CampaignSpec>(r#"{"id": "x", "version": "two"}"#);
    assert!(e.contains("field `version`"), "{e}");

    let e = error_of::<v1::TouchpointEvent>(r#"{"id": "e", "occurredAt": "yesterday"}"#);
    assert!(e.contains("field `occurredAt`"), "{e}");
    assert!(e.contains("`yesterday` is not an RFC 3339 time"), "{e}");

    let e = error_of::<v1::TouchpointEvent>(r#"{"id": "e", "attrs": {"rating": 5}"#);
    assert!(e.contains("invalid JSON"), "{e}");

    let e = error_of::<v1::CampaignSpec>(r#"{"id": "x"} trailing"#);
    assert!(e.contains("invalid JSON"), "{e}");
}

#[test]
fn misspelt_fields_are_errors_not_silently_dropped() {
    let e = error_of::<v1::CampaignSpec>(r#"{"id": "x", "intialState": "a"}"#);
    assert!(e.contains("intialState"), "{e}");
}
