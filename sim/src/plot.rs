//! SVG plots of distributions with `plotters`: grouped bars (a histogram per series) and
//! distribution functions (CDF lines).

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

use crate::stats::percentile;

const SIZE: (u32, u32) = (900, 520);

fn color(i: usize) -> RGBColor {
    const PALETTE: [RGBColor; 6] = [
        RGBColor(31, 119, 180),
        RGBColor(214, 39, 40),
        RGBColor(44, 160, 44),
        RGBColor(255, 127, 14),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
    ];
    PALETTE[i % PALETTE.len()]
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("plotting: {e}")
}

/// Grouped bars: for each series, a bar of height `y` at each `x`, the series side by side
/// within a slot of `width` (the bin width) starting at `x`.
pub(crate) fn bars(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[(String, Vec<(f64, f64)>)],
    width: f64,
) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let x_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(0.0_f64, f64::max)
        + width;
    let x_min = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.0))
        .fold(f64::INFINITY, f64::min)
        .min(x_max - width)
        .max(0.0);
    let y_max = series
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .disable_x_mesh()
        .draw()
        .map_err(err)?;
    let slots = series.len().max(1) as f64;
    let bar = width * 0.8 / slots;
    for (k, (name, points)) in series.iter().enumerate() {
        let c = color(k);
        let offset = width * 0.1 + bar * k as f64;
        chart
            .draw_series(points.iter().map(|&(x, y)| {
                Rectangle::new([(x + offset, 0.0), (x + offset + bar, y)], c.filled())
            }))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], c.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Distribution functions: for each series, the share of samples at or below each value. The
/// x axis ends at the largest 99.5th percentile, so one outlier does not flatten the rest.
pub(crate) fn cdf(
    path: &Path,
    title: &str,
    x_label: &str,
    series: &[(String, Vec<f64>)],
) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let sorted: Vec<(String, Vec<f64>)> = series
        .iter()
        .map(|(n, v)| {
            let mut v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
            v.sort_by(f64::total_cmp);
            (n.clone(), v)
        })
        .collect();
    let x_max = sorted
        .iter()
        .map(|(_, v)| percentile(v, 99.5))
        .fold(0.0_f64, f64::max)
        .max(1.0)
        * 1.05;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(55)
        .build_cartesian_2d(0.0..x_max, 0.0..100.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc("% of lookups at or below")
        .draw()
        .map_err(err)?;
    for (k, (name, v)) in sorted.iter().enumerate() {
        if v.is_empty() {
            continue;
        }
        let c = color(k);
        let n = v.len() as f64;
        let points = v
            .iter()
            .enumerate()
            .map(|(i, &x)| (x.min(x_max), 100.0 * (i + 1) as f64 / n));
        chart
            .draw_series(LineSeries::new(points, c.stroke_width(2)))
            .map_err(err)?
            .label(name.as_str())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 15, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}
