//! Every figure of a report's JSON as one row of a long table, so the CSV holds what the JSON
//! holds and nothing is left out when a figure is added to a report.
//!
//! A row says where its figure is: the campaign (performance reports), the section (the
//! field holding it: `campaign` for a campaign's own scalars, `report` or `summary` for the
//! report's), the item (the element of a list, named by its identifying fields, e.g. a
//! funnel state, a kind, `from>to`), and the metric (the JSON field name; a nested object's
//! fields are dotted, `entries.mail`). Identifying fields name the item and are not rows.
//! Fields come in the order of their names at each level.

use serde_json::{Map, Value};

/// One figure and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Figure {
    /// Campaign id, empty outside a campaign.
    pub campaign: String,
    /// The field the figure is in.
    pub section: String,
    /// The list element it belongs to, empty outside lists.
    pub item: String,
    /// Its JSON field name (dotted inside nested objects).
    pub metric: String,
    /// Its value as text.
    pub value: String,
}

/// The fields that name an element of the list `list`, and how they are joined.
#[must_use]
pub fn identity(list: &str) -> (&'static [&'static str], &'static str) {
    match list {
        "campaigns" | "top" => (&["id"], ""),
        "funnel" => (&["state"], ""),
        "steps" => (&["from", "to"], ">"),
        "groups" => (&["group"], ""),
        "days" => (&["day"], ""),
        "actions" => (&["kind"], ""),
        "arms" => (&["arm"], ""),
        "channels" => (&["name", "currency"], " "),
        "segments" => (&["name"], ""),
        "money" => (&["currency"], ""),
        "tiers" => (&["tier"], ""),
        "churn" => (&["from", "tier"], " "),
        "sources" => (&["channel"], ""),
        "satisfaction" | "concerns" => (&["by", "name"], " "),
        "materials" => (&["material"], ""),
        "weeks" | "months" => (&["period"], ""),
        "owners" => (&["owner"], ""),
        _ => (&[], ""),
    }
}

/// The figures of a report serialized as `json`: `top` names the section of its own scalars.
#[must_use]
pub fn figures(json: &Value, top: &str) -> Vec<Figure> {
    let mut out = Vec::new();
    let Some(report) = json.as_object() else {
        return out;
    };
    let mut at = Place {
        campaign: String::new(),
        section: top.to_string(),
        item: String::new(),
    };
    for (key, value) in report {
        if key == "campaigns" {
            for c in value.as_array().into_iter().flatten() {
                let Some(c) = c.as_object() else { continue };
                let mut inside = Place {
                    campaign: text(c.get("id").unwrap_or(&Value::Null)),
                    section: "campaign".to_string(),
                    item: String::new(),
                };
                for (key, value) in c.iter().filter(|(k, _)| *k != "id") {
                    field(&mut out, &mut inside, key, value);
                }
            }
        } else {
            field(&mut out, &mut at, key, value);
        }
    }
    out
}

/// Where the figures being walked are.
struct Place {
    campaign: String,
    section: String,
    item: String,
}

/// A field of a report or of a campaign: scalars stay in the current section, objects and
/// lists become sections of their own.
fn field(out: &mut Vec<Figure>, at: &mut Place, key: &str, value: &Value) {
    match value {
        Value::Object(o) => {
            let mut inside = Place {
                campaign: at.campaign.clone(),
                section: key.to_string(),
                item: String::new(),
            };
            fields(out, &mut inside, "", o);
        }
        Value::Array(list) => {
            let mut inside = Place {
                campaign: at.campaign.clone(),
                section: key.to_string(),
                item: String::new(),
            };
            elements(out, &mut inside, key, list, "");
        }
        scalar => push(out, at, key, scalar),
    }
}

/// The fields of an object, their names prefixed with `prefix`.
fn fields(out: &mut Vec<Figure>, at: &mut Place, prefix: &str, o: &Map<String, Value>) {
    for (key, value) in o {
        let metric = format!("{prefix}{key}");
        match value {
            Value::Object(inner) => fields(out, at, &format!("{metric}."), inner),
            Value::Array(list) => elements(out, at, key, list, prefix),
            scalar => push(out, at, &metric, scalar),
        }
    }
}

/// The elements of the list `list`, each an item named by its identifying fields (after the
/// item of the element it is in, for a list inside a list's element).
fn elements(out: &mut Vec<Figure>, at: &mut Place, list: &str, values: &[Value], prefix: &str) {
    let (keys, join) = identity(list);
    let outer = at.item.clone();
    for (index, value) in values.iter().enumerate() {
        let Some(o) = value.as_object() else {
            at.item = join_item(&outer, &index.to_string());
            push(out, at, &format!("{prefix}{list}"), value);
            continue;
        };
        let name: Vec<String> = keys
            .iter()
            .map(|k| text(o.get(*k).unwrap_or(&Value::Null)))
            .collect();
        let name = if keys.is_empty() {
            index.to_string()
        } else {
            name.join(join)
        };
        at.item = join_item(&outer, &name);
        let rest: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| !keys.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        fields(out, at, prefix, &rest);
    }
    at.item = outer;
}

fn join_item(outer: &str, name: &str) -> String {
    if outer.is_empty() {
        name.to_string()
    } else {
        format!("{outer} {name}")
    }
}

fn push(out: &mut Vec<Figure>, at: &Place, metric: &str, value: &Value) {
    if value.is_null() {
        return;
    }
    out.push(Figure {
        campaign: at.campaign.clone(),
        section: at.section.clone(),
        item: at.item.clone(),
        metric: metric.to_string(),
        value: text(value),
    });
}

/// A scalar as the CSV shows it: strings as they are, numbers and booleans as JSON writes
/// them.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_become_items_and_nested_objects_dotted_metrics() {
        let json = serde_json::json!({
            "model": "last-touch",
            "campaigns": [{
                "id": "spring",
                "enrolled": 3,
                "budget": {"spent": "0.20"},
                "steps": [{"from": "mail", "to": "opened", "contacts": 1}],
                "days": [{"day": "2026-04-01", "entries": {"mail": 2}}]
            }],
            "segments": [{
                "name": "(none)",
                "density": {"eligible": 3},
                "money": [{"currency": "EUR", "cost": "1.00"}]
            }]
        });
        let rows: Vec<String> = figures(&json, "report")
            .into_iter()
            .map(|f| {
                format!(
                    "{},{},{},{},{}",
                    f.campaign, f.section, f.item, f.metric, f.value
                )
            })
            .collect();
        assert_eq!(
            rows,
            [
                "spring,budget,,spent,0.20",
                "spring,days,2026-04-01,entries.mail,2",
                "spring,campaign,,enrolled,3",
                "spring,steps,mail>opened,contacts,1",
                ",report,,model,last-touch",
                ",segments,(none),density.eligible,3",
                ",segments,(none) EUR,cost,1.00",
            ]
        );
    }
}
