//! How the result of an action reaches its campaign: the service that carried it out
//! reports back (over gRPC, or as a touchpoint on a file or Kafka), and the campaign sees a
//! touchpoint of one of the types below. One list of those types, for the engine that makes
//! the touchpoint and the step that counts it.

use std::collections::BTreeMap;

use canvass_proto::{v1, wkt};

use crate::UnixMillis;

/// The action reached the contact.
pub const DELIVERED_EVENT: &str = "action.delivered";
/// The action bounced.
pub const BOUNCED_EVENT: &str = "action.bounced";
/// Sales created the opportunity a hand-off asked for (it reached the contact too).
pub const OPPORTUNITY_CREATED_EVENT: &str = "opportunity.created";
/// The action failed.
pub const FAILED_EVENT: &str = "action.failed";
/// Event types confirming that one of a campaign's actions reached the contact.
pub const REACHED_EVENTS: [&str; 2] = [DELIVERED_EVENT, OPPORTUNITY_CREATED_EVENT];

/// The outcome a result touchpoint of `event_type` confirms, if it is one.
#[must_use]
pub fn outcome_of(event_type: &str) -> Option<v1::DeliveryOutcome> {
    match event_type {
        DELIVERED_EVENT => Some(v1::DeliveryOutcome::Delivered),
        BOUNCED_EVENT => Some(v1::DeliveryOutcome::Bounced),
        OPPORTUNITY_CREATED_EVENT => Some(v1::DeliveryOutcome::OpportunityCreated),
        FAILED_EVENT => Some(v1::DeliveryOutcome::Failed),
        _ => None,
    }
}

/// The action kind a result touchpoint's `kind` attribute names (`EMAIL` or
/// `ACTION_KIND_EMAIL`), if it names one.
#[must_use]
pub fn kind_named(name: &str) -> Option<v1::ActionKind> {
    let name = name.trim();
    v1::ActionKind::from_str_name(name)
        .or_else(|| {
            v1::ActionKind::from_str_name(&format!("ACTION_KIND_{}", name.to_ascii_uppercase()))
        })
        .filter(|k| *k != v1::ActionKind::Unspecified)
}

/// The event a contact's campaigns see when the service that carried out one of its actions
/// reports back: `action.delivered`, `action.bounced`, `action.failed` or
/// `opportunity.created`, with the action's key, campaign, kind, detail and opportunity id
/// as attributes.
#[must_use]
pub fn result_event(ack: &v1::ActionAck, now: UnixMillis) -> v1::TouchpointEvent {
    use wkt::Value;
    let r#type = match v1::DeliveryOutcome::try_from(ack.outcome) {
        Ok(v1::DeliveryOutcome::Delivered) => DELIVERED_EVENT,
        Ok(v1::DeliveryOutcome::Bounced) => BOUNCED_EVENT,
        Ok(v1::DeliveryOutcome::OpportunityCreated) => OPPORTUNITY_CREATED_EVENT,
        _ => FAILED_EVENT,
    };
    let kind = v1::ActionKind::try_from(ack.kind)
        .map(|k| {
            k.as_str_name()
                .trim_start_matches("ACTION_KIND_")
                .to_string()
        })
        .unwrap_or_default();
    let mut fields = BTreeMap::new();
    fields.insert(
        "idempotencyKey".to_string(),
        Value::from(ack.idempotency_key.as_str()),
    );
    fields.insert(
        "campaignId".to_string(),
        Value::from(ack.campaign_id.as_str()),
    );
    fields.insert("kind".to_string(), Value::from(kind.as_str()));
    fields.insert("detail".to_string(), Value::from(ack.detail.as_str()));
    if !ack.opportunity_id.is_empty() {
        fields.insert(
            "opportunityId".to_string(),
            Value::from(ack.opportunity_id.as_str()),
        );
    }
    v1::TouchpointEvent {
        id: format!("result:{}", ack.idempotency_key),
        r#type: r#type.to_string(),
        contact_id: ack.contact_id.clone(),
        occurred_at: Some(now.to_proto()),
        attrs: Some(wkt::Struct { fields }),
        // Only the campaign whose action it was sees the result.
        campaign_id: ack.campaign_id.clone(),
        ..Default::default()
    }
}
