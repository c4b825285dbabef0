//! Small statistics over samples: percentiles (nearest rank), summaries and histograms.

use serde::Serialize;

/// A distribution's summary.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct Dist {
    /// Samples.
    pub(crate) count: usize,
    /// Smallest.
    pub(crate) min: f64,
    /// Median (nearest rank).
    pub(crate) median: f64,
    /// 99th percentile (nearest rank).
    pub(crate) p99: f64,
    /// Largest.
    pub(crate) max: f64,
    /// Mean.
    pub(crate) mean: f64,
}

/// The `p`-th percentile (0–100) of sorted samples, by nearest rank; 0 for no samples.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl Dist {
    /// Summarizes `samples` (any order).
    pub(crate) fn of(samples: impl IntoIterator<Item = f64>) -> Dist {
        let mut v: Vec<f64> = samples.into_iter().filter(|x| x.is_finite()).collect();
        if v.is_empty() {
            return Dist::default();
        }
        v.sort_by(f64::total_cmp);
        Dist {
            count: v.len(),
            min: v[0],
            median: percentile(&v, 50.0),
            p99: percentile(&v, 99.0),
            max: v[v.len() - 1],
            mean: v.iter().sum::<f64>() / v.len() as f64,
        }
    }
}

/// Counts of integer values: `(value, count)` for every value from the smallest to the largest.
pub(crate) fn int_histogram(values: impl IntoIterator<Item = u64>) -> Vec<(u64, usize)> {
    let values: Vec<u64> = values.into_iter().collect();
    let (Some(&lo), Some(&hi)) = (values.iter().min(), values.iter().max()) else {
        return Vec::new();
    };
    let mut counts = vec![0usize; usize::try_from(hi - lo).unwrap_or(0) + 1];
    for v in values {
        counts[usize::try_from(v - lo).unwrap_or(0)] += 1;
    }
    (lo..=hi).zip(counts).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&v, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
        let d = Dist::of([3.0, 1.0, 2.0]);
        assert_eq!((d.min, d.median, d.max, d.mean), (1.0, 2.0, 3.0, 2.0));
    }

    #[test]
    fn integer_histogram_fills_gaps() {
        assert_eq!(int_histogram([2, 4, 4]), vec![(2, 1), (3, 0), (4, 2)]);
        assert!(int_histogram([]).is_empty());
    }
}
