//! Charts as plain SVG: stacked bars and lines over a categorical x axis, with a legend, axis labels
//! and grid lines. Coordinates are written with one decimal, so the same data give the same bytes.
//! Every label is escaped by the caller's [`super::html::esc`].

use super::html::esc;
use std::fmt::Write;

/// The Okabe–Ito palette (told apart with the common colour-vision deficiencies).
pub mod colour {
    /// Orange.
    pub const ORANGE: &str = "#E69F00";
    /// Sky blue.
    pub const SKY: &str = "#56B4E9";
    /// Bluish green.
    pub const GREEN: &str = "#009E73";
    /// Yellow.
    pub const YELLOW: &str = "#F0E442";
    /// Blue.
    pub const BLUE: &str = "#0072B2";
    /// Vermillion.
    pub const VERMILLION: &str = "#D55E00";
    /// Reddish purple.
    pub const PURPLE: &str = "#CC79A7";
    /// Black.
    pub const BLACK: &str = "#000000";
}

/// How a line is drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dash {
    /// Solid.
    Solid,
    /// Dashed.
    Dashed,
    /// Dotted.
    Dotted,
}

/// One series of a chart.
pub struct Series {
    /// Legend text.
    pub name: String,
    /// Fill or stroke colour.
    pub colour: &'static str,
    /// One value per x category.
    pub values: Vec<f64>,
    /// For a line.
    pub dash: Dash,
}

impl Series {
    /// A series of counts.
    pub fn counts(name: &str, colour: &'static str, values: impl IntoIterator<Item = u64>) -> Series {
        Series {
            name: name.to_owned(),
            colour,
            values: values.into_iter().map(|v| v as f64).collect(),
            dash: Dash::Solid,
        }
    }

    /// The same, drawn as a line with `dash`.
    pub fn dashed(mut self, dash: Dash) -> Series {
        self.dash = dash;
        self
    }
}

/// A chart: stacked bars and lines over categories.
pub struct Chart<'a> {
    /// The `id` of the `<svg>` element.
    pub id: &'a str,
    /// Accessible title.
    pub title: &'a str,
    /// The y axis's label.
    pub y_label: &'a str,
    /// The x axis's label.
    pub x_label: &'a str,
    /// One label per category.
    pub x_labels: &'a [String],
    /// Stacked bars, bottom first.
    pub bars: Vec<Series>,
    /// Lines over the bars.
    pub lines: Vec<Series>,
    /// A vertical marker at a category, with its label (a deadline).
    pub marker: Option<(usize, String)>,
    /// Formats a y value for the axis.
    pub y_format: fn(f64) -> String,
}

const WIDTH: f64 = 1040.0;
const HEIGHT: f64 = 340.0;
const LEFT: f64 = 86.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 52.0;
const BOTTOM: f64 = 64.0;

/// The smallest of 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8 × 10^k at or above `v` (1 for nothing to show).
fn nice_ceiling(v: f64) -> f64 {
    if v.is_nan() || v <= 0.0 {
        return 1.0;
    }
    let mut step = 1.0;
    while step * 10.0 <= v {
        step *= 10.0;
    }
    while step > v {
        step /= 10.0;
    }
    [10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0, 80.0, 100.0]
        .iter()
        .map(|m| m * step / 10.0)
        .find(|c| *c >= v)
        .unwrap_or(step * 10.0)
}

/// A count for an axis: with thousands separators below a million, then in millions or billions.
pub fn axis_count(v: f64) -> String {
    if v.fract() != 0.0 && v < 10.0 {
        return format!("{v:.1}");
    }
    let trim = |x: f64| {
        let t = format!("{x:.1}");
        t.strip_suffix(".0").map(str::to_owned).unwrap_or(t)
    };
    if v >= 1e9 {
        format!("{} bn", trim(v / 1e9))
    } else if v >= 1e6 {
        format!("{} M", trim(v / 1e6))
    } else {
        crate::text::thousands(v.round().max(0.0) as u64)
    }
}

/// A percentage (axis labels).
pub fn axis_percent(v: f64) -> String {
    format!("{v:.0}%")
}

impl Chart<'_> {
    /// The SVG element.
    pub fn render(&self) -> String {
        let n = self.x_labels.len().max(1);
        let plot_w = WIDTH - LEFT - RIGHT;
        let plot_h = HEIGHT - TOP - BOTTOM;
        let slot = plot_w / n as f64;
        let stack = |i: usize| self.bars.iter().map(|s| s.values.get(i).copied().unwrap_or(0.0)).sum::<f64>();
        let line_max = self.lines.iter().flat_map(|s| s.values.iter().copied()).fold(0.0, f64::max);
        let max = nice_ceiling((0..n).map(stack).fold(line_max, f64::max));
        let y = |v: f64| TOP + plot_h - (v / max * plot_h).clamp(0.0, plot_h);
        let x_mid = |i: usize| LEFT + slot * (i as f64 + 0.5);
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" id="{}" class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
            esc(self.id),
            esc(self.title)
        );
        let _ = write!(s, "<title>{}</title>", esc(self.title));
        // Grid and y axis labels.
        for k in 0..=5 {
            let v = max * f64::from(k) / 5.0;
            let gy = y(v);
            let _ = write!(
                s,
                r##"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="#d0d0d0" stroke-width="1"/><text x="{:.1}" y="{:.1}" text-anchor="end" class="tick">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                gy + 4.0,
                esc(&(self.y_format)(v))
            );
        }
        // Bars.
        let bar_w = (slot * 0.78).max(1.0);
        for i in 0..n {
            let mut base = 0.0;
            for series in &self.bars {
                let v = series.values.get(i).copied().unwrap_or(0.0);
                if v > 0.0 {
                    let (top, bottom) = (y(base + v), y(base));
                    let _ = write!(
                        s,
                        r#"<rect x="{:.1}" y="{top:.1}" width="{bar_w:.1}" height="{:.1}" fill="{}"><title>{}: {}</title></rect>"#,
                        x_mid(i) - bar_w / 2.0,
                        (bottom - top).max(0.0),
                        series.colour,
                        esc(&format!("{} {}", self.x_labels.get(i).map_or("", String::as_str), series.name)),
                        esc(&axis_count(v))
                    );
                }
                base += v;
            }
        }
        // Lines.
        for series in &self.lines {
            let points: Vec<String> =
                series.values.iter().enumerate().map(|(i, v)| format!("{:.1},{:.1}", x_mid(i), y(*v))).collect();
            let dash = match series.dash {
                Dash::Solid => "",
                Dash::Dashed => r#" stroke-dasharray="8 4""#,
                Dash::Dotted => r#" stroke-dasharray="2 3""#,
            };
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"{dash}/>"#,
                points.join(" "),
                series.colour
            );
            if n <= 60 {
                for (i, v) in series.values.iter().enumerate() {
                    let _ = write!(
                        s,
                        r#"<circle cx="{:.1}" cy="{:.1}" r="3" fill="{}"><title>{}: {}</title></circle>"#,
                        x_mid(i),
                        y(*v),
                        series.colour,
                        esc(&format!("{} {}", self.x_labels.get(i).map_or("", String::as_str), series.name)),
                        esc(&(self.y_format)(*v))
                    );
                }
            }
        }
        if let Some((i, label)) = &self.marker {
            let mx = x_mid(*i);
            let _ = write!(
                s,
                r##"<line x1="{mx:.1}" y1="{TOP}" x2="{mx:.1}" y2="{:.1}" stroke="#000000" stroke-width="1.5" stroke-dasharray="4 3"/><text x="{:.1}" y="{:.1}" class="marker">{}</text>"##,
                TOP + plot_h,
                mx + 4.0,
                TOP + 12.0,
                esc(label)
            );
        }
        // Axes.
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{:.1}" x2="{:.1}" y2="{:.1}" stroke="#000000"/><line x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{:.1}" stroke="#000000"/>"##,
            TOP + plot_h,
            WIDTH - RIGHT,
            TOP + plot_h,
            TOP + plot_h
        );
        // x labels: at most one per 64 px, counted back from the last (the cut), which is always shown.
        let every = ((64.0 / slot).ceil() as usize).max(1);
        for (i, label) in self.x_labels.iter().enumerate() {
            if (n - 1 - i).is_multiple_of(every) {
                let _ = write!(
                    s,
                    r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="tick">{}</text>"#,
                    x_mid(i),
                    TOP + plot_h + 16.0,
                    esc(label)
                );
            }
        }
        let _ = write!(
            s,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" class="axis">{}</text>"#,
            LEFT + plot_w / 2.0,
            HEIGHT - 14.0,
            esc(self.x_label)
        );
        let _ = write!(
            s,
            r#"<text transform="translate(18 {:.1}) rotate(-90)" text-anchor="middle" class="axis">{}</text>"#,
            TOP + plot_h / 2.0,
            esc(self.y_label)
        );
        // Legend, in one row above the plot.
        let mut lx = LEFT;
        for series in self.bars.iter().chain(&self.lines) {
            let is_line = self.lines.iter().any(|l| std::ptr::eq(l, series));
            if is_line {
                let dash = match series.dash {
                    Dash::Solid => "",
                    Dash::Dashed => r#" stroke-dasharray="8 4""#,
                    Dash::Dotted => r#" stroke-dasharray="2 3""#,
                };
                let _ = write!(
                    s,
                    r#"<line x1="{lx:.1}" y1="20" x2="{:.1}" y2="20" stroke="{}" stroke-width="3"{dash}/>"#,
                    lx + 22.0,
                    series.colour
                );
            } else {
                let _ =
                    write!(s, r#"<rect x="{:.1}" y="13" width="14" height="14" fill="{}"/>"#, lx + 4.0, series.colour);
            }
            let _ = write!(s, r#"<text x="{:.1}" y="25" class="legend">{}</text>"#, lx + 28.0, esc(&series.name));
            lx += 40.0 + 7.5 * series.name.chars().count() as f64;
        }
        s.push_str("</svg>");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(7.0), 8.0);
        assert_eq!(nice_ceiling(10.0), 10.0);
        assert_eq!(nice_ceiling(11.0), 12.0);
        assert_eq!(nice_ceiling(105_980.0), 120_000.0);
        assert_eq!(axis_count(1_200_000_000.0), "1.2 bn");
        assert_eq!(axis_count(40_000_000.0), "40 M");
        assert_eq!(axis_count(96_000.0), "96,000");
        assert!((nice_ceiling(0.33) - 0.4).abs() < 1e-9);
    }
}
