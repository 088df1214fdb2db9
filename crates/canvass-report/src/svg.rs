//! Charts as self-contained SVG documents, for people who would rather look than read: the
//! funnel of each campaign (entries per state, in spec order) and the value pyramid.

use std::fmt::Write as _;

use crate::Report;

const WIDTH: u32 = 760;
const LABEL: u32 = 200;
const BAR_AREA: u32 = 440;
const ROW: u32 = 26;
const COLORS: [&str; 6] = [
    "#2f6fab", "#3f8f5f", "#b5762a", "#8a4f9e", "#a83f48", "#4f7f8f",
];

/// Escapes text for SVG.
pub(crate) fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One horizontal bar chart section: a title, then one bar per `(label, value, note)`.
pub(crate) struct Bars<'a> {
    pub title: String,
    pub rows: Vec<(String, f64, String)>,
    pub color: &'a str,
}

/// Draws bar sections under each other in one SVG document.
pub(crate) fn bar_chart(title: &str, sections: &[Bars<'_>]) -> String {
    let rows: usize = sections.iter().map(|s| s.rows.len() + 2).sum();
    let height = 40
        + u32::try_from(rows)
            .unwrap_or(u32::MAX / ROW)
            .saturating_mul(ROW);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="13">
<title>{}</title>
<rect width="100%" height="100%" fill="white"/>
<text x="10" y="24" font-size="16" font-weight="bold">{}</text>
"#,
        escape(title),
        escape(title)
    );
    let mut y = 40;
    for section in sections {
        let _ = writeln!(
            svg,
            r#"<text x="10" y="{}" font-weight="bold">{}</text>"#,
            y + 18,
            escape(&section.title)
        );
        y += ROW;
        let max = section.rows.iter().map(|r| r.1).fold(0.0_f64, f64::max);
        for (label, value, note) in &section.rows {
            let width = if max > 0.0 {
                // Bars are at most BAR_AREA wide; the product is small and positive.
                #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
                let w = (value / max * f64::from(BAR_AREA)).round() as u32;
                w
            } else {
                0
            };
            let _ = writeln!(
                svg,
                r#"<text x="{}" y="{}" text-anchor="end">{}</text><rect x="{}" y="{}" width="{width}" height="{}" fill="{}"><title>{}: {}</title></rect><text x="{}" y="{}">{}</text>"#,
                LABEL - 8,
                y + 17,
                escape(label),
                LABEL,
                y + 4,
                ROW - 8,
                section.color,
                escape(label),
                escape(note),
                LABEL + width + 6,
                y + 17,
                escape(note)
            );
            y += ROW;
        }
        y += ROW;
    }
    svg.push_str("</svg>\n");
    svg
}

/// The funnel of every campaign: entries per state in spec order, with the share of the
/// treated contacts that reached it.
#[must_use]
pub fn funnel(report: &Report) -> String {
    let sections: Vec<Bars<'_>> = report
        .campaigns
        .iter()
        .enumerate()
        .map(|(i, c)| Bars {
            title: format!(
                "{} - {} enrolled, {} held out",
                c.id, c.enrolled, c.held_out
            ),
            #[allow(clippy::cast_precision_loss)]
            rows: c
                .funnel
                .iter()
                .map(|s| {
                    let share = s
                        .share_of_treated
                        .map(|r| format!(" ({:.1}%)", r * 100.0))
                        .unwrap_or_default();
                    (
                        s.state.clone(),
                        s.entries as f64,
                        format!("{}{share}", s.entries),
                    )
                })
                .collect(),
            color: COLORS[i % COLORS.len()],
        })
        .collect();
    bar_chart("Campaign funnels", &sections)
}

/// The value pyramid: customers and share of value per tier.
#[must_use]
pub fn tiers(report: &crate::value::ValueReport) -> String {
    #[allow(clippy::cast_precision_loss)]
    let sections = [
        Bars {
            title: format!("Share of value ({} total)", report.total_value),
            rows: report
                .tiers
                .iter()
                .map(|t| {
                    let share = t.share_of_value.unwrap_or(0.0);
                    (
                        format!("tier {}", t.tier),
                        share,
                        format!("{:.1}% ({})", share * 100.0, t.value),
                    )
                })
                .collect(),
            color: COLORS[0],
        },
        Bars {
            title: format!("Customers ({} in all)", report.customers),
            rows: report
                .tiers
                .iter()
                .map(|t| {
                    (
                        format!("tier {}", t.tier),
                        t.customers as f64,
                        t.customers.to_string(),
                    )
                })
                .collect(),
            color: COLORS[1],
        },
    ];
    bar_chart(&format!("Value pyramid as of {}", report.as_of), &sections)
}
