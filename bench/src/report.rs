//! Results: median and range of several rounds, with an optional baseline ratio.

/// One named figure.
#[derive(Debug, Clone)]
pub(crate) struct Figure {
    pub(crate) name: String,
    pub(crate) unit: &'static str,
    pub(crate) samples: Vec<f64>,
    pub(crate) baseline: Option<String>,
    pub(crate) ratio: Option<f64>,
    /// Whether larger is better (throughput) or smaller (latency).
    pub(crate) higher_is_better: bool,
}

impl Figure {
    pub(crate) fn new(name: &str, unit: &'static str, higher_is_better: bool) -> Self {
        Self {
            name: name.to_owned(),
            unit,
            samples: Vec::new(),
            baseline: None,
            ratio: None,
            higher_is_better,
        }
    }

    pub(crate) fn median(&self) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        if s.is_empty() {
            return f64::NAN;
        }
        let mid = s.len() / 2;
        if s.len().is_multiple_of(2) {
            (s[mid - 1] + s[mid]) / 2.0
        } else {
            s[mid]
        }
    }

    fn min(&self) -> f64 {
        self.samples.iter().copied().fold(f64::INFINITY, f64::min)
    }

    fn max(&self) -> f64 {
        self.samples
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }

    /// Sets the baseline and the ratio so that > 1 always means "better than the baseline".
    pub(crate) fn against(mut self, baseline: &Figure) -> Self {
        let (ours, base) = (self.median(), baseline.median());
        self.ratio = Some(if self.higher_is_better {
            ours / base
        } else {
            base / ours
        });
        self.baseline = Some(baseline.name.clone());
        self
    }
}

fn json_num(v: f64) -> String {
    if v.is_finite() {
        format!("{v:.3}")
    } else {
        "null".into()
    }
}

pub(crate) fn print(results: &[Figure], json: bool) {
    for f in results {
        if json {
            println!(
                "{{\"name\":\"{}\",\"unit\":\"{}\",\"median\":{},\"min\":{},\"max\":{},\"baseline\":{},\"ratio\":{}}}",
                f.name,
                f.unit,
                json_num(f.median()),
                json_num(f.min()),
                json_num(f.max()),
                f.baseline
                    .as_ref()
                    .map_or("null".into(), |b| format!("\"{b}\"")),
                f.ratio.map_or("null".into(), json_num),
            );
        } else {
            println!(
                "{:<42} {:>12.1} {:<8} [{:.1} – {:.1}] {}",
                f.name,
                f.median(),
                f.unit,
                f.min(),
                f.max(),
                match (&f.baseline, f.ratio) {
                    (Some(b), Some(r)) => format!("{r:.2}× vs {b}"),
                    _ => String::new(),
                }
            );
        }
    }
}
