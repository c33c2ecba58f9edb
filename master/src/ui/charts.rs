//! Charts drawn on the server as inline SVG: no JavaScript, no build step.
//! Each chart is a `<figure class="chart">` with a title, axes labelled with
//! their range, and a legend.

use maud::{Markup, PreEscaped, html};

const WIDTH: f64 = 520.0;
const HEIGHT: f64 = 150.0;
const LEFT: f64 = 72.0;
const BOTTOM: f64 = 20.0;
const TOP: f64 = 8.0;

/// One line of a chart: its name, colour and a value per batch.
pub struct Series<'a> {
    pub name: &'a str,
    pub color: &'a str,
    pub values: Vec<f64>,
}

fn format_value(v: f64) -> String {
    if v >= 1_000_000.0 {
        format!("{:.1}M", v / 1_000_000.0)
    } else if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 100.0 || v == v.trunc() {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// The frame shared by every chart: title, empty message or the plot, legend.
fn frame(
    id: &str,
    title: &str,
    unit: &str,
    batches: &[u64],
    legend: &[(&str, &str)],
    max: f64,
    plot: String,
) -> Markup {
    let (first, last) = (
        batches.first().copied().unwrap_or(0),
        batches.last().copied().unwrap_or(0),
    );
    let svg = format!(
        r##"<svg viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{title}">
<line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{base}" stroke="#999"/>
<line x1="{LEFT}" y1="{base}" x2="{w}" y2="{base}" stroke="#999"/>
<text x="{lx}" y="{ty}" text-anchor="end" font-size="10">{max_label} {unit}</text>
<text x="{lx}" y="{base}" text-anchor="end" font-size="10">0</text>
<text x="{LEFT}" y="{h}" font-size="10">batch {first}</text>
<text x="{w}" y="{h}" text-anchor="end" font-size="10">batch {last}</text>
{plot}</svg>"##,
        w = WIDTH,
        h = HEIGHT,
        base = HEIGHT - BOTTOM,
        lx = LEFT - 4.0,
        ty = TOP + 8.0,
        max_label = format_value(max),
    );
    html! {
        figure.chart data-chart=(id) {
            figcaption { (title) }
            (PreEscaped(svg))
            div.legend {
                @for (name, color) in legend {
                    span { span.swatch style=(format!("background:{color}")) {} (name) }
                }
            }
        }
    }
}

fn scale_max(max: f64) -> f64 {
    if max > 0.0 { max * 1.1 } else { 1.0 }
}

fn x_at(i: usize, n: usize) -> f64 {
    let span = WIDTH - LEFT - 4.0;
    if n <= 1 {
        LEFT + span / 2.0
    } else {
        LEFT + span * i as f64 / (n - 1) as f64
    }
}

fn y_at(v: f64, max: f64) -> f64 {
    let span = HEIGHT - BOTTOM - TOP;
    HEIGHT - BOTTOM - span * (v / max).clamp(0.0, 1.0)
}

/// Lines over batches. `empty` is shown instead when there is nothing to draw.
pub fn lines(
    id: &str,
    title: &str,
    unit: &str,
    batches: &[u64],
    series: &[Series],
    empty: Option<&str>,
) -> Markup {
    let max = scale_max(
        series
            .iter()
            .flat_map(|s| s.values.iter().copied())
            .fold(0.0, f64::max),
    );
    let legend: Vec<(&str, &str)> = series.iter().map(|s| (s.name, s.color)).collect();
    if let Some(message) = empty
        .filter(|_| batches.is_empty() || series.iter().all(|s| s.values.iter().all(|v| *v == 0.0)))
    {
        return html! { figure.chart data-chart=(id) { figcaption { (title) } p.muted { (message) } } };
    }
    let mut plot = String::new();
    for s in series {
        let points: Vec<String> = s
            .values
            .iter()
            .enumerate()
            .map(|(i, v)| format!("{:.1},{:.1}", x_at(i, s.values.len()), y_at(*v, max)))
            .collect();
        plot.push_str(&format!(
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            s.color,
            points.join(" ")
        ));
    }
    frame(id, title, unit, batches, &legend, max, plot)
}

/// Stacked bars over batches: each bar is the sum of the series' values.
pub fn stacked_bars(
    id: &str,
    title: &str,
    unit: &str,
    batches: &[u64],
    series: &[Series],
) -> Markup {
    let n = batches.len();
    let totals: Vec<f64> = (0..n)
        .map(|i| series.iter().map(|s| s.values[i]).sum())
        .collect();
    let max = scale_max(totals.iter().copied().fold(0.0, f64::max));
    let legend: Vec<(&str, &str)> = series.iter().map(|s| (s.name, s.color)).collect();
    let slot = (WIDTH - LEFT - 4.0) / n.max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let mut plot = String::new();
    for (i, batch) in batches.iter().enumerate() {
        let x = LEFT + slot * i as f64 + (slot - bar) / 2.0;
        let mut below = 0.0;
        for s in series {
            let v = s.values[i];
            if v <= 0.0 {
                continue;
            }
            let (top, bottom) = (y_at(below + v, max), y_at(below, max));
            plot.push_str(&format!(
                r#"<rect x="{x:.1}" y="{top:.1}" width="{bar:.1}" height="{:.1}" fill="{}"><title>batch {}: {} {v:.0} {unit}</title></rect>"#,
                (bottom - top).max(0.5),
                s.color,
                batch,
                s.name
            ));
            below += v;
        }
    }
    frame(id, title, unit, batches, &legend, max, plot)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charts_are_svg_with_their_series() {
        let batches = [3, 4, 5];
        let chart = lines(
            "rate",
            "Input rate",
            "rows/s",
            &batches,
            &[Series {
                name: "input",
                color: "#1f77b4",
                values: vec![10.0, 20.0, 15.0],
            }],
            None,
        )
        .into_string();
        assert!(
            chart.contains("<svg") && chart.contains("<polyline"),
            "{chart}"
        );
        assert!(chart.contains("batch 3") && chart.contains("batch 5"));
        assert!(
            chart.contains("22 rows/s"),
            "the axis is labelled with its range: {chart}"
        );
        let bars = stacked_bars(
            "duration",
            "Batch duration",
            "ms",
            &batches,
            &[
                Series {
                    name: "tasks",
                    color: "#2ca02c",
                    values: vec![5.0, 6.0, 7.0],
                },
                Series {
                    name: "commit",
                    color: "#d62728",
                    values: vec![1.0, 0.0, 2.0],
                },
            ],
        )
        .into_string();
        assert_eq!(
            bars.matches("<rect").count(),
            5,
            "zero-height segments are left out"
        );
        let empty = lines("wm", "Watermark", "s", &[], &[], Some("no watermark")).into_string();
        assert!(empty.contains("no watermark") && !empty.contains("<svg"));
    }
}
