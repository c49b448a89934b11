//! SVG charts written next to the result tables, with `plotters` (SVG backend only: text
//! becomes `<text>` elements, so no system fonts or fontconfig are needed to draw):
//! throughput bars per scenario and broker (`compare`), and p50/p99/p99.9 latency
//! against the offered rate (`sweep`).

use plotters::prelude::*;

const W: u32 = 960;
const H: u32 = 540;
/// One colour per broker (or per percentile), in order.
const PALETTE: [RGBColor; 6] = [
    RGBColor(0xd6, 0x27, 0x28),
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
];

fn err(e: impl std::fmt::Debug) -> String {
    format!("chart: {e:?}")
}

/// Grouped bars: one group per scenario, one bar per broker in it (value per second).
pub fn throughput_svg(
    title: &str,
    unit: &str,
    groups: &[(String, Vec<(String, f64)>)],
) -> Result<String, String> {
    let mut brokers: Vec<&str> = Vec::new();
    for (_, bars) in groups {
        for (b, _) in bars {
            if !brokers.contains(&b.as_str()) {
                brokers.push(b);
            }
        }
    }
    let top = groups
        .iter()
        .flat_map(|g| g.1.iter().map(|b| b.1))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.15;
    let (scale, suffix) = if top >= 2e6 {
        (1e6, "M")
    } else if top >= 2e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let n = groups.len().max(1) as f64;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..n, 0.0..top / scale)
            .map_err(err)?;
        let names: Vec<String> = groups.iter().map(|g| g.0.clone()).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(groups.len().max(1) * 2 + 1)
            .x_label_formatter(&|x| {
                let i = x.floor() as usize;
                if (x - x.floor() - 0.5).abs() < 0.01 && i < names.len() {
                    names[i].clone()
                } else {
                    String::new()
                }
            })
            .y_desc(format!("{unit} ({suffix})"))
            .y_label_formatter(&|y| format!("{y}"))
            .draw()
            .map_err(err)?;
        let slot = 0.8 / brokers.len().max(1) as f64;
        for (gi, (_, bars)) in groups.iter().enumerate() {
            for (b, v) in bars {
                let bi = brokers.iter().position(|x| x == b).unwrap_or(0);
                let x0 = gi as f64 + 0.1 + slot * bi as f64;
                let color = PALETTE[bi % PALETTE.len()];
                chart
                    .draw_series(std::iter::once(Rectangle::new(
                        [(x0, 0.0), (x0 + slot * 0.9, v / scale)],
                        color.filled(),
                    )))
                    .map_err(err)?;
                chart
                    .draw_series(std::iter::once(Text::new(
                        format!("{:.2}", v / scale),
                        (x0, v / scale + top / scale * 0.01),
                        ("sans-serif", 12),
                    )))
                    .map_err(err)?;
            }
        }
        for (bi, b) in brokers.iter().enumerate() {
            let color = PALETTE[bi % PALETTE.len()];
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [(0.0, 0.0), (0.0, 0.0)],
                    color.filled(),
                )))
                .map_err(err)?
                .label(*b)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 5), (x + 10, y + 5)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

/// One latency curve set: label (broker) and points (offered msg/s, p50, p99, p99.9 in µs).
pub type LatencySeries = (String, Vec<(f64, f64, f64, f64)>);

/// p50 / p99 / p99.9 (solid, dashed-looking thinner, thinnest) against offered rate, log y.
pub fn latency_svg(title: &str, series: &[LatencySeries]) -> Result<String, String> {
    let xmax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(0.0f64, f64::max)
        .max(1.0)
        * 1.5;
    let xmin = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.0))
        .fold(f64::MAX, f64::min)
        .clamp(1e-3, xmax / 10.0)
        / 1.5;
    let ymax = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.3.max(p.2).max(p.1)))
        .fold(1.0f64, f64::max)
        * 2.0;
    let ymin = series
        .iter()
        .flat_map(|s| s.1.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .clamp(1.0, ymax / 10.0)
        / 2.0;
    let (scale, suffix) = if xmax >= 2e6 {
        (1e6, "M")
    } else if xmax >= 2e3 {
        (1e3, "k")
    } else {
        (1.0, "")
    };
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (W, H)).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(70)
            .build_cartesian_2d(
                (xmin / scale..xmax / scale).log_scale(),
                (ymin..ymax).log_scale(),
            )
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(format!("offered deliveries/s ({suffix}, log)"))
            .y_desc("latency, µs (log)")
            .x_label_formatter(&|x| format!("{x}"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()
            .map_err(err)?;
        for (si, (name, pts)) in series.iter().enumerate() {
            let color = PALETTE[si % PALETTE.len()];
            for (pi, (pct, width)) in [("p50", 3u32), ("p99", 2), ("p99.9", 1)]
                .into_iter()
                .enumerate()
            {
                let line: Vec<(f64, f64)> = pts
                    .iter()
                    .map(|p| {
                        let y = [p.1, p.2, p.3][pi].max(ymin);
                        (p.0 / scale, y)
                    })
                    .collect();
                chart
                    .draw_series(std::iter::once(PathElement::new(
                        line.clone(),
                        color.stroke_width(width),
                    )))
                    .map_err(err)?
                    .label(format!("{name} {pct}"))
                    .legend(move |(x, y)| {
                        PathElement::new([(x, y), (x + 16, y)], color.stroke_width(width))
                    });
                chart
                    .draw_series(
                        line.iter()
                            .map(|&(x, y)| Circle::new((x, y), width + 1, color.filled())),
                    )
                    .map_err(err)?;
            }
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperLeft)
            .draw()
            .map_err(err)?;
        root.present().map_err(err)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_and_lines_are_svg_with_labels() {
        let svg = throughput_svg(
            "pairs",
            "deliveries/s",
            &[(
                "pairs".into(),
                vec![("ringmq".into(), 3.1e6), ("mosquitto".into(), 0.4e6)],
            )],
        )
        .unwrap();
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("ringmq") && svg.contains("mosquitto"));
        let svg = latency_svg(
            "sweep",
            &[(
                "ringmq".into(),
                vec![(1e4, 50.0, 90.0, 200.0), (1e5, 60.0, 120.0, 400.0)],
            )],
        )
        .unwrap();
        assert!(svg.contains("ringmq p99.9"), "{svg}");
        assert!(svg.contains("<polyline") || svg.contains("<path"));
    }
}
