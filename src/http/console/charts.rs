//! Charts drawn as SVG on the server: no script, nothing inline for the CSP
//! to refuse (colours come from the stylesheet's classes). Every chart has a
//! text alternative, and every bar a title with its figures.

use maud::{html, Markup};

/// One column of a column chart: stacked parts, each a stylesheet class
/// (its colour) and a count.
pub struct Column {
    /// Under the axis, for the first, middle and last columns.
    pub label: String,
    /// The column's tooltip: its label and figures.
    pub title: String,
    pub parts: Vec<(&'static str, i64)>,
}

const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 52.0;
const TOP: f64 = 10.0;
const BOTTOM: f64 = 160.0;

/// Stacked columns, left to right, with the scale's top on the axis.
/// `summary` is what a screen reader says of the chart.
pub fn columns(summary: &str, columns: &[Column]) -> Markup {
    let highest = columns
        .iter()
        .map(|column| column.parts.iter().map(|(_, count)| count).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = (WIDTH - LEFT) / columns.len().max(1) as f64;
    let bar = (slot * 0.8).max(1.0);
    let scale = (BOTTOM - TOP) / highest as f64;
    let labelled = [0, columns.len() / 2, columns.len().saturating_sub(1)];
    html! {
        svg.chart viewBox=(format!("0 0 {WIDTH} {HEIGHT}")) role="img" aria-label=(summary) {
            text x=(LEFT - 6.0) y=(TOP + 8.0) text-anchor="end" { (highest) }
            text x=(LEFT - 6.0) y=(BOTTOM) text-anchor="end" { "0" }
            line.axis x1=(LEFT) y1=(BOTTOM) x2=(WIDTH) y2=(BOTTOM) {}
            @for (index, column) in columns.iter().enumerate() {
                @let x = LEFT + index as f64 * slot + (slot - bar) / 2.0;
                g {
                    title { (column.title) }
                    @for (class, y, height) in stack(&column.parts, scale) {
                        rect class=(class) x=(format!("{x:.1}")) y=(format!("{y:.1}"))
                            width=(format!("{bar:.1}")) height=(format!("{height:.1}")) {}
                    }
                }
                @if labelled.contains(&index) {
                    text x=(format!("{:.1}", x + bar / 2.0)) y=(BOTTOM + 18.0) text-anchor="middle" { (column.label) }
                }
            }
        }
    }
}

/// Where each non-empty part of a column sits: class, top, height.
fn stack(parts: &[(&'static str, i64)], scale: f64) -> Vec<(&'static str, f64, f64)> {
    let mut bottom = BOTTOM;
    parts
        .iter()
        .filter(|(_, count)| *count > 0)
        .map(|&(class, count)| {
            // At least a pixel: a count of one among millions stays visible.
            let height = (count as f64 * scale).max(1.0);
            bottom -= height;
            (class, bottom, height)
        })
        .collect()
}

/// Horizontal bars, one per named count, in the order given.
pub fn bars(summary: &str, counts: &[(String, i64)]) -> Markup {
    let highest = counts
        .iter()
        .map(|(_, count)| *count)
        .max()
        .unwrap_or(0)
        .max(1);
    let row = 22.0;
    let height = row * counts.len().max(1) as f64;
    let label_width = 130.0;
    let room = 420.0 - label_width - 50.0;
    html! {
        svg.chart.bars viewBox=(format!("0 0 420 {height}")) role="img" aria-label=(summary) {
            @for (index, (name, count)) in counts.iter().enumerate() {
                @let y = index as f64 * row;
                g {
                    title { (name) ": " (count) }
                    text x=(label_width - 6.0) y=(y + 15.0) text-anchor="end" { (name) }
                    rect.bar x=(label_width) y=(y + 4.0)
                        width=(format!("{:.1}", (*count as f64 / highest as f64 * room).max(if *count > 0 { 1.0 } else { 0.0 })))
                        height="14" {}
                    text x=(format!("{:.1}", label_width + (*count as f64 / highest as f64 * room) + 6.0)) y=(y + 15.0) { (count) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_stack_upwards_from_the_axis_and_skip_empty_ones() {
        let stacked = stack(&[("success", 10), ("failure", 0), ("attempt", 5)], 2.0);
        assert_eq!(
            stacked,
            vec![
                ("success", BOTTOM - 20.0, 20.0),
                ("attempt", BOTTOM - 30.0, 10.0)
            ]
        );
    }

    #[test]
    fn a_tiny_part_is_still_a_pixel_high() {
        let stacked = stack(&[("failure", 1)], 0.0001);
        assert_eq!(stacked, vec![("failure", BOTTOM - 1.0, 1.0)]);
    }

    #[test]
    fn svg_elements_are_closed_so_html_parsing_keeps_them_siblings() {
        let chart = columns(
            "two columns",
            &[
                Column {
                    label: "a".into(),
                    title: "a: 1".into(),
                    parts: vec![("success", 1)],
                },
                Column {
                    label: "b".into(),
                    title: "b: 2".into(),
                    parts: vec![("failure", 2)],
                },
            ],
        )
        .into_string();
        assert_eq!(chart.matches("<rect").count(), 2);
        assert_eq!(chart.matches("</rect>").count(), 2);
        assert!(chart.contains(r#"aria-label="two columns""#));
    }
}
