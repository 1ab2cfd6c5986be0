//! The report's SVG charts, drawn with `plotters` (SVG backend only, no font files: text is
//! emitted as SVG `<text>` and the viewer's sans-serif font renders it).

use super::*;
use plotters::coord::ranged1d::ValueFormatter;
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

const WIDTH: u32 = 980;
/// Right of the plot, for the legend, so it never hides a point.
const LEGEND_WIDTH: u32 = 290;
const HEIGHT: u32 = 480;

/// One legend entry: points in data coordinates, optionally one text label per point.
pub(super) struct Series {
    pub(super) label: String,
    pub(super) points: Vec<(f64, f64)>,
    /// Drawn beside each point when not empty (same length as `points`).
    pub(super) point_labels: Vec<String>,
    /// Connect the points with a line (a sweep) or only mark them (a scatter).
    pub(super) line: bool,
    /// Hollow markers: a second source (another engine, another run) beside the filled ones.
    pub(super) hollow: bool,
}

/// Axes and title of a chart.
pub(super) struct Axes<'a> {
    pub(super) title: &'a str,
    pub(super) x_desc: &'a str,
    pub(super) y_desc: &'a str,
    /// Logarithmic x axis (context lengths double from one point to the next).
    pub(super) log_x: bool,
}

/// Plotting errors carry the chart's title.
fn drawing<E: std::fmt::Display>(title: &str) -> impl Fn(E) -> anyhow::Error + '_ {
    move |e| anyhow!("drawing the chart '{title}': {e}")
}

fn color(i: usize) -> RGBColor {
    // Distinct on white and for the common forms of colour blindness (Okabe–Ito).
    const PALETTE: [RGBColor; 8] = [
        RGBColor(0, 114, 178),
        RGBColor(213, 94, 0),
        RGBColor(0, 158, 115),
        RGBColor(204, 121, 167),
        RGBColor(230, 159, 0),
        RGBColor(86, 180, 233),
        RGBColor(0, 0, 0),
        RGBColor(240, 228, 66),
    ];
    PALETTE[i % PALETTE.len()]
}

/// Lower and upper bound of an axis holding `values`, padded so no point sits on the frame.
fn span(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut lo, mut hi) = (f64::INFINITY, f64::NEG_INFINITY);
    for v in values.filter(|v| v.is_finite() && (!log || *v > 0.0)) {
        lo = lo.min(v);
        hi = hi.max(v);
    }
    if !lo.is_finite() {
        return if log { (1.0, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        (lo / 1.25, hi * 1.25)
    } else {
        // Speeds and sizes start at 0, so bars and points compare by height.
        (0.0, if hi > 0.0 { hi * 1.15 } else { 1.0 })
    }
}

/// A chart of `series` against shared axes, as an SVG document. An empty chart (no series)
/// still draws its axes and says "no data".
pub(super) fn xy_chart(axes: &Axes, series: &[Series]) -> Result<String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(drawing(axes.title))?;
        let all = || series.iter().flat_map(|s| s.points.iter());
        let (x0, mut x1) = span(all().map(|p| p.0), axes.log_x);
        let (y0, y1) = span(all().map(|p| p.1), false);
        if axes.log_x {
            // Ticks at the measured x values only (context lengths double, a log axis picks
            // its own ticks between them otherwise).
            let mut ticks: Vec<f64> = all().map(|p| p.0).filter(|x| *x > 0.0).collect();
            ticks.sort_by(f64::total_cmp);
            ticks.dedup();
            let chart = base_chart(&root, axes.title)?
                .build_cartesian_2d((x0..x1).log_scale().with_key_points(ticks), y0..y1)
                .map_err(drawing(axes.title))?;
            draw_xy(chart, axes, series)?;
        } else {
            // Room on the right for the point labels of the rightmost points.
            if series.iter().any(|s| !s.point_labels.is_empty()) {
                x1 *= 1.2;
            }
            let chart = base_chart(&root, axes.title)?
                .build_cartesian_2d(x0..x1, y0..y1)
                .map_err(drawing(axes.title))?;
            draw_xy(chart, axes, series)?;
        }
        let legend: Vec<(&str, Marker)> = series
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let marker = Marker::Dot {
                    color: color(i),
                    hollow: s.hollow,
                };
                (s.label.as_str(), marker)
            })
            .collect();
        draw_legend(&root, &legend)?;
        if series.iter().all(|s| s.points.is_empty()) {
            root.draw(&Text::new(
                "no data",
                ((WIDTH / 2) as i32 - 30, (HEIGHT / 2) as i32),
                ("sans-serif", 20),
            ))
            .map_err(drawing(axes.title))?;
        }
        root.present().map_err(drawing(axes.title))?;
    }
    Ok(svg)
}

fn base_chart<'a, 'b>(
    root: &'a DrawingArea<SVGBackend<'b>, Shift>,
    title: &str,
) -> Result<ChartBuilder<'a, 'b, SVGBackend<'b>>> {
    let mut b = ChartBuilder::on(root);
    b.caption(title, ("sans-serif", 20))
        .margin(12)
        .margin_right(LEGEND_WIDTH)
        .x_label_area_size(44)
        .y_label_area_size(64);
    Ok(b)
}

fn draw_xy<'a, 'b: 'a, X>(
    mut chart: ChartContext<'a, SVGBackend<'b>, Cartesian2d<X, RangedCoordf64>>,
    axes: &Axes,
    series: &[Series],
) -> Result<()>
where
    X: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let err = drawing(axes.title);
    chart
        .configure_mesh()
        .max_light_lines(1)
        .x_desc(axes.x_desc)
        .y_desc(axes.y_desc)
        .x_label_formatter(&|v| axis_number(*v))
        .y_label_formatter(&|v| axis_number(*v))
        .draw()
        .map_err(&err)?;
    for (i, s) in series.iter().enumerate() {
        let c = color(i);
        let marker = if s.hollow {
            c.stroke_width(2)
        } else {
            c.filled()
        };
        if s.line {
            chart
                .draw_series(LineSeries::new(s.points.iter().copied(), c.stroke_width(2)))
                .map_err(&err)?;
        }
        let labels = s
            .point_labels
            .iter()
            .map(Some)
            .chain(std::iter::repeat(None));
        chart
            .draw_series(s.points.iter().zip(labels).map(|(&p, label)| {
                let text = label.cloned().unwrap_or_default();
                EmptyElement::at(p)
                    + Circle::new((0, 0), 4, marker)
                    + Text::new(text, (6, -14), ("sans-serif", 11))
            }))
            .map_err(&err)?;
    }
    Ok(())
}

/// How a legend entry is marked.
#[derive(Clone, Copy)]
enum Marker {
    Dot { color: RGBColor, hollow: bool },
    Square(RGBColor),
}

/// The legend, drawn on the whole image right of the plot: plotters' own legend stays inside
/// the plotting area, where it would hide points.
fn draw_legend(
    root: &DrawingArea<SVGBackend<'_>, Shift>,
    entries: &[(&str, Marker)],
) -> Result<()> {
    let x = (WIDTH - LEGEND_WIDTH + 24) as i32;
    let err = drawing("legend");
    for (i, (label, marker)) in entries.iter().enumerate() {
        let y = 52 + 20 * i as i32;
        match *marker {
            Marker::Dot { color, hollow } => {
                let style = if hollow {
                    color.stroke_width(2)
                } else {
                    color.filled()
                };
                root.draw(&Circle::new((x + 5, y), 4, style))
                    .map_err(&err)?;
            }
            Marker::Square(color) => {
                root.draw(&Rectangle::new(
                    [(x, y - 5), (x + 11, y + 6)],
                    color.filled(),
                ))
                .map_err(&err)?;
            }
        }
        let style =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        root.draw(&Text::new(label.to_string(), (x + 18, y), style))
            .map_err(&err)?;
    }
    Ok(())
}

/// Axis tick text: integers without decimals, small numbers with a few.
fn axis_number(v: f64) -> String {
    if v.abs() >= 100.0 || v == v.round() {
        format!("{v:.0}")
    } else if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// One horizontal bar made of stacked parts (their values in `part_names` order).
pub(super) struct StackedBar {
    pub(super) label: String,
    pub(super) parts: Vec<f64>,
}

/// Horizontal stacked bars, one per entry of `bars`, as an SVG document.
pub(super) fn stacked_bars(
    title: &str,
    x_desc: &str,
    part_names: &[&str],
    bars: &[StackedBar],
) -> Result<String> {
    let err = drawing(title);
    let longest_label = bars
        .iter()
        .map(|b| b.label.chars().count())
        .max()
        .unwrap_or(1);
    let height = (120 + 44 * bars.len() as u32).max(220);
    let total_max = bars
        .iter()
        .map(|b| b.parts.iter().sum::<f64>())
        .fold(0.0f64, f64::max);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (WIDTH, height)).into_drawing_area();
        root.fill(&WHITE).map_err(&err)?;
        let rows = bars.len().max(1);
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .margin_right(LEGEND_WIDTH)
            .x_label_area_size(44)
            .y_label_area_size((longest_label as u32 * 7 + 16).clamp(60, 360))
            .build_cartesian_2d(0.0..(total_max * 1.2).max(1.0), -0.5..rows as f64 - 0.5)
            .map_err(&err)?;
        chart
            .configure_mesh()
            .disable_y_mesh()
            .y_labels(0)
            .max_light_lines(1)
            .x_desc(x_desc)
            .x_label_formatter(&|v| axis_number(*v))
            .draw()
            .map_err(&err)?;
        for (k, _) in part_names.iter().enumerate() {
            let c = color(k);
            let rects = bars.iter().enumerate().map(move |(i, b)| {
                let start: f64 = b.parts[..k.min(b.parts.len())].iter().sum();
                let end = start + b.parts.get(k).copied().unwrap_or(0.0);
                let y = i as f64;
                Rectangle::new([(start, y - 0.3), (end, y + 0.3)], c.filled())
            });
            chart.draw_series(rects).map_err(&err)?;
        }
        // The bar's name left of it and its total right of it, on the whole image (text
        // inside the chart would be clipped to the plotting area).
        let right = TextStyle::from(("sans-serif", 12).into_font())
            .pos(Pos::new(HPos::Right, VPos::Center));
        let left =
            TextStyle::from(("sans-serif", 12).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
        for (i, b) in bars.iter().enumerate() {
            let total: f64 = b.parts.iter().sum();
            let (x0, y) = chart.backend_coord(&(0.0, i as f64));
            let (x1, _) = chart.backend_coord(&(total, i as f64));
            root.draw(&Text::new(b.label.clone(), (x0 - 8, y), right.clone()))
                .map_err(&err)?;
            let total_text = format!("{} MiB", axis_number(total));
            root.draw(&Text::new(total_text, (x1 + 6, y), left.clone()))
                .map_err(&err)?;
        }
        let legend: Vec<(&str, Marker)> = part_names
            .iter()
            .enumerate()
            .map(|(k, name)| (*name, Marker::Square(color(k))))
            .collect();
        draw_legend(&root, &legend)?;
        root.present().map_err(&err)?;
    }
    Ok(svg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn series(label: &str, points: &[(f64, f64)]) -> Series {
        Series {
            label: label.into(),
            points: points.to_vec(),
            point_labels: points.iter().map(|p| format!("at {}", p.0)).collect(),
            line: true,
            hollow: false,
        }
    }

    #[test]
    fn xy_chart_names_every_series_and_point() {
        let axes = Axes {
            title: "decode <speed> & more",
            x_desc: "context length",
            y_desc: "tok/s",
            log_x: true,
        };
        let svg = xy_chart(
            &axes,
            &[
                series("a.gguf, 1 thread", &[(128.0, 10.0), (4096.0, 5.0)]),
                series("b.vspec, 2 threads", &[(128.0, 20.0)]),
            ],
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("a.gguf, 1 thread") && svg.contains("b.vspec, 2 threads"));
        assert!(svg.contains("at 4096"));
        // Text is escaped, so the document stays well formed.
        assert!(svg.contains("decode &lt;speed&gt; &amp; more"));
        assert_eq!(svg.matches("<text").count(), svg.matches("</text>").count());
    }

    #[test]
    fn empty_and_degenerate_charts_still_draw() {
        for log_x in [false, true] {
            let axes = Axes {
                title: "t",
                x_desc: "x",
                y_desc: "y",
                log_x,
            };
            assert!(xy_chart(&axes, &[]).unwrap().contains("no data"));
            let one = xy_chart(&axes, &[series("s", &[(5.0, 0.0)])]).unwrap();
            assert!(one.contains(">\ns\n<") || one.contains(">s<"), "{one}");
        }
        let svg = stacked_bars("m", "MiB", &["weights", "KV"], &[]).unwrap();
        assert!(svg.contains("weights"));
    }

    #[test]
    fn stacked_bars_label_bars_and_parts() {
        let svg = stacked_bars(
            "planned memory",
            "MiB",
            &["weights", "arena", "KV cache"],
            &[
                StackedBar {
                    label: "smollm2.gguf".into(),
                    parts: vec![90.0, 3.0, 45.0],
                },
                StackedBar {
                    label: "x.vspec".into(),
                    parts: vec![50.0, 3.0, 45.0],
                },
            ],
        )
        .unwrap();
        for needle in [
            "smollm2.gguf",
            "x.vspec",
            "weights",
            "arena",
            "KV cache",
            "138 MiB",
        ] {
            assert!(svg.contains(needle), "{needle}");
        }
    }
}
