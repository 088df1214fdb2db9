//! Charts drawn with plotters, as SVG documents or PNG images, in memory: each campaign's
//! funnel in journey order (goal states marked, the date range and the cost with its
//! currency in the caption) and its open and click rates per week; the value pyramid with
//! its labels beside the tiers, and satisfaction (NPS and mean score) per period.
//!
//! Text is laid out with DejaVu Sans, embedded (assets/, Bitstream Vera license), so a chart
//! looks the same on every machine whatever fonts it has.

use plotters::{
    coord::{
        Shift,
        ranged1d::SegmentedCoord,
        types::{RangedCoordf64, RangedCoordusize},
    },
    prelude::*,
    style::{
        FontStyle, register_font,
        text_anchor::{HPos, Pos, VPos},
    },
};

use crate::{CampaignReport, Report, value::ValueReport};

/// The font every chart's text is measured and drawn with.
static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
const FAMILY: &str = "sans-serif";
const WIDTH: u32 = 900;
const COLORS: [RGBColor; 4] = [
    RGBColor(47, 111, 171),
    RGBColor(181, 118, 42),
    RGBColor(138, 79, 158),
    RGBColor(79, 127, 143),
];
const GOAL: RGBColor = RGBColor(63, 143, 95);

/// How a chart is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// An SVG document.
    Svg,
    /// A PNG image.
    Png,
}

fn font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // The embedded file is a valid font: the charts' tests draw with it.
        let _ = register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

type Drawn = Result<(), String>;

fn fail<E: std::fmt::Debug>(e: E) -> String {
    format!("drawing the chart failed: {e:?}")
}

/// A chart that can be drawn on any backend.
trait Draw {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn;
}

/// Draws `chart` on a canvas `height` tall and encodes it.
fn render(height: u32, format: Format, chart: &impl Draw) -> Result<Vec<u8>, String> {
    font();
    match format {
        Format::Svg => {
            let mut svg = String::new();
            {
                let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
                root.fill(&WHITE).map_err(fail)?;
                chart.draw(&root)?;
                root.present().map_err(fail)?;
            }
            Ok(svg.into_bytes())
        }
        Format::Png => {
            let size = usize::try_from(WIDTH)
                .ok()
                .and_then(|w| w.checked_mul(usize::try_from(height).ok()?))
                .and_then(|n| n.checked_mul(3))
                .ok_or_else(|| format!("a chart {height} pixels tall is too big to draw"))?;
            let mut pixels = vec![0u8; size];
            {
                let root =
                    BitMapBackend::with_buffer(&mut pixels, (WIDTH, height)).into_drawing_area();
                root.fill(&WHITE).map_err(fail)?;
                chart.draw(&root)?;
                root.present().map_err(fail)?;
            }
            let mut png = Vec::new();
            let mut encoder = png::Encoder::new(&mut png, WIDTH, height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            let mut writer = encoder.write_header().map_err(fail)?;
            writer.write_image_data(&pixels).map_err(fail)?;
            writer.finish().map_err(fail)?;
            Ok(png)
        }
    }
}

/// Whether the campaign has weekly rates to draw: something was confirmed delivered.
fn has_weeks(c: &CampaignReport) -> bool {
    c.weeks.iter().any(|w| w.delivered > 0)
}

fn funnel_height(c: &CampaignReport) -> u32 {
    90 + 34 * u32::try_from(c.funnel.len().max(1)).unwrap_or(64)
}

const WEEKS_HEIGHT: u32 = 260;

/// The campaigns' funnels and their weekly open and click rates.
///
/// # Errors
/// Only if drawing fails.
pub fn performance(report: &Report, format: Format) -> Result<Vec<u8>, String> {
    let height: u32 = report
        .campaigns
        .iter()
        .map(|c| funnel_height(c) + if has_weeks(c) { WEEKS_HEIGHT } else { 0 })
        .sum::<u32>()
        .max(60);
    render(height, format, &Performance(report))
}

struct Performance<'a>(&'a Report);

impl Draw for Performance<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        draw_performance(root, self.0)
    }
}

fn draw_performance<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, report: &Report) -> Drawn {
    if report.campaigns.is_empty() {
        root.draw_text(
            "No campaigns",
            &(FAMILY, 18).into_text_style(root),
            (20, 20),
        )
        .map_err(fail)?;
        return Ok(());
    }
    let mut rest = root.clone();
    for (i, c) in report.campaigns.iter().enumerate() {
        let (top, below) = rest.split_vertically(funnel_height(c));
        draw_funnel(&top, c, COLORS[i % COLORS.len()])?;
        rest = below;
        if has_weeks(c) {
            let (weeks, below) = rest.split_vertically(WEEKS_HEIGHT);
            draw_weeks(&weeks, c)?;
            rest = below;
        }
    }
    Ok(())
}

/// A campaign's funnel: one bar per state in journey order, top to bottom.
fn draw_funnel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    c: &CampaignReport,
    color: RGBColor,
) -> Drawn {
    let n = c.funnel.len().max(1);
    let max = c.funnel.iter().map(|s| s.entries).max().unwrap_or(0).max(1);
    let range = match (c.days.first(), c.days.last()) {
        (Some(first), Some(last)) if first.day != last.day => {
            format!("{} to {}", first.day, last.day)
        }
        (Some(day), _) => day.day.clone(),
        _ => "no activity yet".to_string(),
    };
    let currency = if c.currency.is_empty() {
        String::new()
    } else {
        format!(" {}", c.currency)
    };
    let caption = format!(
        "{} funnel, {range}: {} enrolled, {} held out, cost {}{currency}",
        c.id, c.enrolled, c.held_out, c.cost.total
    );
    let label = |i: usize| {
        // The axis asks for the segments' ends too: past the last one, no label.
        let state = (n - 1).checked_sub(i).and_then(|j| c.funnel.get(j));
        state.map_or(String::new(), |s| {
            if s.goal {
                format!("{} (goal)", s.state)
            } else {
                s.state.clone()
            }
        })
    };
    let widest = (0..n).map(|i| label(i).chars().count()).max().unwrap_or(0);
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FAMILY, 16))
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(u32::try_from(widest * 8 + 16).unwrap_or(200).min(320))
        // Room to the right of the longest bar for its label.
        .build_cartesian_2d(0u64..max + max / 3 + 1, (0..n).into_segmented())
        .map_err(fail)?;
    chart
        .configure_mesh()
        .disable_y_mesh()
        .y_labels(n)
        .y_label_formatter(&|v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => label(*i),
            _ => String::new(),
        })
        .x_desc("entries")
        .light_line_style(WHITE)
        .label_style((FAMILY, 13))
        .draw()
        .map_err(fail)?;
    let rows: Vec<(usize, &crate::FunnelStep)> = c
        .funnel
        .iter()
        .enumerate()
        .map(|(i, s)| (n - 1 - i, s))
        .collect();
    chart
        .draw_series(rows.iter().map(|(y, s)| {
            let fill = if s.goal { GOAL } else { color };
            let mut bar = Rectangle::new(
                [
                    (0, SegmentValue::Exact(*y)),
                    (s.entries, SegmentValue::Exact(y + 1)),
                ],
                fill.filled(),
            );
            bar.set_margin(4, 4, 0, 0);
            bar
        }))
        .map_err(fail)?;
    chart
        .draw_series(rows.iter().map(|(y, s)| {
            let share = s
                .share_of_treated
                .map(|r| format!(" ({:.1}%)", r * 100.0))
                .unwrap_or_default();
            Text::new(
                format!(" {}{share}", s.entries),
                (s.entries, SegmentValue::CenterOf(*y)),
                (FAMILY, 13)
                    .into_font()
                    .color(&BLACK)
                    .pos(Pos::new(HPos::Left, VPos::Center)),
            )
        }))
        .map_err(fail)?;
    Ok(())
}

/// A campaign's open and click rates per ISO week.
fn draw_weeks<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, c: &CampaignReport) -> Drawn {
    let weeks = &c.weeks;
    #[allow(clippy::cast_precision_loss)]
    let rate = |n: u64, d: u64| {
        if d == 0 {
            0.0
        } else {
            n as f64 / d as f64 * 100.0
        }
    };
    let opens: Vec<f64> = weeks
        .iter()
        .map(|w| rate(w.unique_opens, w.delivered))
        .collect();
    let clicks: Vec<f64> = weeks
        .iter()
        .map(|w| rate(w.unique_clicks, w.delivered))
        .collect();
    let top = opens
        .iter()
        .chain(&clicks)
        .copied()
        .fold(10.0_f64, f64::max)
        .min(100.0);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "{}: unique opens and clicks per delivered message, by week",
                c.id
            ),
            (FAMILY, 15),
        )
        .margin(12)
        .x_label_area_size(34)
        .y_label_area_size(50)
        .build_cartesian_2d(
            RangedCoordusize::from(0..weeks.len()).into_segmented(),
            0.0..top * 1.1,
        )
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_labels(weeks.len())
        .x_label_formatter(&|v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => weeks.get(*i).map_or(String::new(), |w| w.period.clone()),
            _ => String::new(),
        })
        .y_desc("% of delivered")
        .light_line_style(WHITE)
        .label_style((FAMILY, 12))
        .draw()
        .map_err(fail)?;
    let points =
        |values: &[f64]| -> Vec<Option<f64>> { values.iter().copied().map(Some).collect() };
    lines(
        &mut chart,
        [
            ("open rate", COLORS[0], points(&opens)),
            ("click rate", COLORS[1], points(&clicks)),
        ],
    )
}

const PYRAMID_HEIGHT: u32 = 330;
const SATISFACTION_HEIGHT: u32 = 300;

/// The value pyramid and satisfaction per period.
///
/// # Errors
/// Only if drawing fails.
pub fn value(report: &ValueReport, format: Format) -> Result<Vec<u8>, String> {
    render(PYRAMID_HEIGHT + SATISFACTION_HEIGHT, format, &Value(report))
}

struct Value<'a>(&'a ValueReport);

impl Draw for Value<'_> {
    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> Drawn {
        let (pyramid, satisfaction) = root.split_vertically(PYRAMID_HEIGHT);
        draw_pyramid(&pyramid, self.0)?;
        draw_satisfaction(&satisfaction, self.0)
    }
}

/// The tiers as the layers of a pyramid, A on top, each labelled beside it.
fn draw_pyramid<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, r: &ValueReport) -> Drawn {
    let title = format!(
        "Value pyramid as of {}: {} customers, total value {}",
        r.as_of, r.customers, r.total_value
    );
    let area = area
        .margin(12, 0, 0, 0)
        .titled(&title, (FAMILY, 16))
        .map_err(fail)?
        .margin(10, 10, 20, 20);
    let layers = i32::try_from(r.tiers.len().max(1)).unwrap_or(4);
    let (apex, base_half, layer) = (200_i32, 180_i32, 62_i32);
    for (k, t) in (0..layers).zip(&r.tiers) {
        let half = |level: i32| base_half * level / layers;
        let (y0, y1) = (k * layer, (k + 1) * layer);
        let color = COLORS[usize::try_from(k).unwrap_or(0) % COLORS.len()];
        area.draw(&Polygon::new(
            vec![
                (apex - half(k), y0),
                (apex + half(k), y0),
                (apex + half(k + 1), y1),
                (apex - half(k + 1), y1),
            ],
            color.mix(0.85).filled(),
        ))
        .map_err(fail)?;
        area.draw_text(
            &format!("tier {}", t.tier),
            &(FAMILY, 14).into_font().color(&BLACK),
            (apex + base_half + 20, y0 + 12),
        )
        .map_err(fail)?;
        let share = t.share_of_value.map_or("no value".to_string(), |s| {
            format!("{:.1}% of value", s * 100.0)
        });
        area.draw_text(
            &format!(
                "{} customers, {share} ({}), {} churned",
                t.customers, t.value, t.churned
            ),
            &(FAMILY, 13).into_font().color(&RGBColor(60, 60, 60)),
            (apex + base_half + 80, y0 + 13),
        )
        .map_err(fail)?;
    }
    Ok(())
}

/// NPS and the mean score per period, with the respondents under each period.
fn draw_satisfaction<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, r: &ValueReport) -> Drawn {
    let periods: Vec<&crate::satisfaction::SatisfactionRow> =
        r.satisfaction.iter().filter(|s| s.by == "period").collect();
    let mut chart = ChartBuilder::on(area)
        .caption(
            "Satisfaction per period: NPS (-100 to 100) and mean score x 10",
            (FAMILY, 15),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(
            RangedCoordusize::from(0..periods.len().max(1)).into_segmented(),
            -100.0..100.0,
        )
        .map_err(fail)?;
    chart
        .configure_mesh()
        .x_labels(periods.len().max(1))
        .x_label_formatter(&|v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) => periods.get(*i).map_or(String::new(), |p| {
                format!(
                    "{} ({})",
                    p.name.get(..10).unwrap_or(&p.name),
                    p.respondents
                )
            }),
            _ => String::new(),
        })
        .x_desc("period start (respondents)")
        .light_line_style(WHITE)
        .label_style((FAMILY, 12))
        .draw()
        .map_err(fail)?;
    let series = [
        (
            "NPS",
            COLORS[0],
            periods.iter().map(|p| p.nps).collect::<Vec<_>>(),
        ),
        (
            "mean score x 10",
            COLORS[1],
            periods.iter().map(|p| p.mean.map(|m| m * 10.0)).collect(),
        ),
    ];
    lines(&mut chart, series)
}

/// Line series over the segments of a chart, each with its points marked and its name in
/// the legend; a `None` value has no point (the line skips it).
fn lines<'a, DB: DrawingBackend + 'a, const N: usize>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<SegmentedCoord<RangedCoordusize>, RangedCoordf64>>,
    series: [(&str, RGBColor, Vec<Option<f64>>); N],
) -> Drawn {
    for (name, color, values) in series {
        let points: Vec<(SegmentValue<usize>, f64)> = values
            .iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (SegmentValue::CenterOf(i), v)))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
            .map_err(fail)?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
            });
        chart
            .draw_series(
                points
                    .into_iter()
                    .map(|p| Circle::new(p, 3, color.filled())),
            )
            .map_err(fail)?;
    }
    chart
        .configure_series_labels()
        .label_font((FAMILY, 12))
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(fail)?;
    Ok(())
}
