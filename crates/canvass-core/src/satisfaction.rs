//! What contacts say of us (seed 002): survey answers on the net-promoter scale, complaints
//! and reported faults, taken from touchpoints into the contact's profile, and the rules that
//! refuse a malformed one.

use canvass_proto::{v1, wkt};

/// Event type of a survey answer: `campaignId` and `attrs.score` (0-10) required,
/// `attrs.survey` optional.
pub const SURVEY_ANSWERED_EVENT: &str = "survey.answered";
/// Event type of a complaint: `campaignId` and `attrs.product` optional.
pub const COMPLAINT_EVENT: &str = "complaint";
/// Event type of a product fault a contact reported: `attrs.product` (and `campaignId`)
/// optional.
pub const FAULT_REPORTED_EVENT: &str = "fault.reported";
/// The highest score of the scale.
pub const MAX_SCORE: u32 = 10;

/// Where a score falls in the net-promoter classification (Reichheld): 9-10 promoters, 7-8
/// passives, 0-6 detractors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    /// 9 or 10.
    Promoter,
    /// 7 or 8.
    Passive,
    /// 0 to 6.
    Detractor,
}

/// The net-promoter group of `score`.
#[must_use]
pub fn group(score: u32) -> Group {
    match score {
        9.. => Group::Promoter,
        7 | 8 => Group::Passive,
        _ => Group::Detractor,
    }
}

/// Whether `event` is a survey answer, complaint or fault report that names a campaign
/// (which must then be one the engine knows).
#[must_use]
pub fn names_campaign(event: &v1::TouchpointEvent) -> bool {
    !event.campaign_id.is_empty()
        && [SURVEY_ANSWERED_EVENT, COMPLAINT_EVENT, FAULT_REPORTED_EVENT]
            .contains(&event.r#type.as_str())
}

fn attr<'e>(event: &'e v1::TouchpointEvent, name: &str) -> Option<&'e wkt::value::Kind> {
    event.attrs.as_ref()?.fields.get(name)?.kind.as_ref()
}

fn text(event: &v1::TouchpointEvent, name: &str) -> String {
    match attr(event, name) {
        Some(wkt::value::Kind::StringValue(s)) => s.clone(),
        _ => String::new(),
    }
}

/// The score of a survey answer, or why it has none: a whole number from 0 to 10, written as
/// a number or a numeric string.
fn score(event: &v1::TouchpointEvent) -> Result<u32, String> {
    let field = "field `event.attrs.score`";
    let value = match attr(event, "score") {
        None | Some(wkt::value::Kind::NullValue(_)) => return Err(format!("{field}: required")),
        Some(wkt::value::Kind::NumberValue(n)) => *n,
        Some(wkt::value::Kind::StringValue(s)) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("{field}: `{s}` is not a number"))?,
        Some(_) => return Err(format!("{field}: a number from 0 to {MAX_SCORE}")),
    };
    if value.fract() != 0.0 || !(0.0..=f64::from(MAX_SCORE)).contains(&value) {
        return Err(format!(
            "{field}: {value} is out of range (a whole number from 0 to {MAX_SCORE})"
        ));
    }
    // Whole and within 0..=10 by the check above.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(value as u32)
}

/// Why a score given in a profile (`field`) is not on the scale, if it is not.
#[must_use]
pub fn score_problem(score: u32, field: &str) -> Option<String> {
    (score > MAX_SCORE).then(|| {
        format!("field `{field}`: {score} is out of range (a whole number from 0 to {MAX_SCORE})")
    })
}

/// Why `event` cannot be taken, if it is one of this module's kinds and malformed (checked
/// before it is logged, so a bad one is dead-lettered, never half applied).
#[must_use]
pub fn problem(event: &v1::TouchpointEvent) -> Option<String> {
    if event.r#type != SURVEY_ANSWERED_EVENT {
        return None;
    }
    if event.campaign_id.trim().is_empty() {
        return Some(format!(
            "field `event.campaignId`: required for a `{SURVEY_ANSWERED_EVENT}` event (the campaign the survey was about)"
        ));
    }
    score(event).err()
}

/// Records `event` in the contact's profile, if it is one of this module's kinds.
pub fn record(contact: &mut v1::Contact, event: &v1::TouchpointEvent) {
    let kind = match event.r#type.as_str() {
        SURVEY_ANSWERED_EVENT => {
            // Refused before logging when malformed (see `problem`); a score that got past
            // an older check is skipped rather than guessed.
            if let Ok(score) = score(event) {
                contact.surveys.push(v1::SurveyAnswer {
                    campaign_id: event.campaign_id.clone(),
                    score,
                    at: event.occurred_at,
                    survey: text(event, "survey"),
                });
            }
            return;
        }
        COMPLAINT_EVENT => v1::IssueKind::Complaint,
        FAULT_REPORTED_EVENT => v1::IssueKind::Fault,
        _ => return,
    };
    contact.issues.push(v1::Issue {
        kind: kind.into(),
        campaign_id: event.campaign_id.clone(),
        product: text(event, "product"),
        at: event.occurred_at,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(score: wkt::value::Kind, campaign: &str) -> v1::TouchpointEvent {
        v1::TouchpointEvent {
            id: "s1".into(),
            r#type: SURVEY_ANSWERED_EVENT.into(),
            contact_id: "c1".into(),
            campaign_id: campaign.into(),
            attrs: Some(wkt::Struct {
                fields: [("score".to_string(), wkt::Value { kind: Some(score) })]
                    .into_iter()
                    .collect(),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_score_is_a_whole_number_from_0_to_10_and_names_its_campaign() {
        use wkt::value::Kind::{NumberValue, StringValue};
        assert_eq!(problem(&answer(NumberValue(10.0), "spring")), None);
        assert_eq!(problem(&answer(StringValue("0".into()), "spring")), None);
        for (bad, why) in [
            (NumberValue(11.0), "out of range"),
            (NumberValue(-1.0), "out of range"),
            (NumberValue(7.5), "out of range"),
            (StringValue("great".into()), "not a number"),
        ] {
            let reason = problem(&answer(bad, "spring")).unwrap();
            assert!(
                reason.contains("event.attrs.score") && reason.contains(why),
                "{reason}"
            );
        }
        let reason = problem(&answer(NumberValue(9.0), "")).unwrap();
        assert!(reason.contains("event.campaignId"), "{reason}");
    }

    #[test]
    fn answers_complaints_and_faults_go_into_the_profile() {
        let mut contact = v1::Contact::default();
        record(
            &mut contact,
            &answer(wkt::value::Kind::NumberValue(9.0), "spring"),
        );
        let complaint = v1::TouchpointEvent {
            r#type: COMPLAINT_EVENT.into(),
            ..Default::default()
        };
        record(&mut contact, &complaint);
        record(
            &mut contact,
            &v1::TouchpointEvent {
                r#type: "email.opened".into(),
                ..Default::default()
            },
        );
        assert_eq!(contact.surveys.len(), 1);
        assert_eq!(contact.surveys[0].score, 9);
        assert_eq!(contact.issues.len(), 1);
        assert_eq!(contact.issues[0].kind(), v1::IssueKind::Complaint);
        assert_eq!(group(9), Group::Promoter);
        assert_eq!(group(8), Group::Passive);
        assert_eq!(group(6), Group::Detractor);
    }
}
