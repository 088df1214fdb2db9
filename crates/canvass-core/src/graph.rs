//! Renders a campaign's state machine as Mermaid or Graphviz DOT, for people to look at.

use std::fmt::Write as _;

use crate::{
    spec::{Campaign, Trigger},
    validate::kind_name,
};

/// Output formats of [`render`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GraphFormat {
    /// A Mermaid `stateDiagram-v2`.
    Mermaid,
    /// A Graphviz `digraph`.
    Dot,
}

fn trigger_label(trigger: &Trigger) -> String {
    match trigger {
        Trigger::Event {
            event_type,
            guard: None,
        } => event_type.clone(),
        Trigger::Event {
            event_type,
            guard: Some(g),
        } => format!("{event_type} [{}]", g.source()),
        Trigger::After(span) => format!("after {span}"),
        Trigger::Immediately(None) => "immediately".into(),
        Trigger::Immediately(Some(g)) => format!("[{}]", g.source()),
    }
}

fn state_note(campaign: &Campaign, i: usize) -> Vec<String> {
    let s = &campaign.states[i];
    let mut lines = Vec::new();
    if let Some(g) = &s.response_group {
        lines.push(format!("group {g}"));
    }
    for a in &s.actions {
        let what = if !a.target_campaign.is_empty() {
            a.target_campaign.as_str()
        } else {
            a.template.as_str()
        };
        lines.push(
            format!("{} {what}", kind_name(a.kind()))
                .trim_end()
                .to_string(),
        );
    }
    if s.goal {
        lines.push("goal".into());
    }
    lines
}

/// Renders the campaign's states and transitions.
#[must_use]
pub fn render(campaign: &Campaign, format: GraphFormat) -> String {
    match format {
        GraphFormat::Mermaid => mermaid(campaign),
        GraphFormat::Dot => dot(campaign),
    }
}

/// Mermaid labels may not hold ':' or quotes inside a transition label.
fn mermaid_text(s: &str) -> String {
    s.replace(':', "#colon;").replace('"', "#quot;")
}

fn mermaid(c: &Campaign) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "---\ntitle: {} v{}\n---\nstateDiagram-v2",
        c.id(),
        c.version()
    );
    let _ = writeln!(out, "    [*] --> {}", c.states[c.initial_state].id);
    if let Some(split) = &c.split {
        for v in split
            .variants
            .iter()
            .filter_map(|v| v.initial_state.map(|s| (v, s)))
        {
            let _ = writeln!(out, "    [*] --> {}: variant {}", c.states[v.1].id, v.0.id);
        }
    }
    for (i, s) in c.states.iter().enumerate() {
        let note = state_note(c, i);
        if !note.is_empty() {
            let _ = writeln!(
                out,
                "    {}: {}<br/>{}",
                s.id,
                s.id,
                mermaid_text(&note.join("<br/>"))
            );
        }
        for t in &s.transitions {
            let _ = writeln!(
                out,
                "    {} --> {}: {}",
                s.id,
                c.states[t.to].id,
                mermaid_text(&trigger_label(&t.trigger))
            );
        }
        if s.terminal {
            let _ = writeln!(out, "    {} --> [*]", s.id);
        }
    }
    out
}

fn dot_text(s: &str) -> String {
    s.replace('\\', "\\\\").replace('"', "\\\"")
}

fn dot(c: &Campaign) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "digraph \"{}\" {{", dot_text(c.id()));
    let _ = writeln!(
        out,
        "  label=\"{} v{}\";\n  rankdir=LR;\n  start [shape=point];",
        dot_text(c.id()),
        c.version()
    );
    let _ = writeln!(out, "  start -> \"{}\";", c.states[c.initial_state].id);
    for (i, s) in c.states.iter().enumerate() {
        let mut label = s.id.clone();
        for line in state_note(c, i) {
            label.push_str("\\n");
            label.push_str(&dot_text(&line));
        }
        let shape = if s.terminal { "doublecircle" } else { "box" };
        let _ = writeln!(out, "  \"{}\" [shape={shape}, label=\"{label}\"];", s.id);
        for t in &s.transitions {
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{}\"];",
                s.id,
                c.states[t.to].id,
                dot_text(&trigger_label(&t.trigger))
            );
        }
    }
    out.push_str("}\n");
    out
}
