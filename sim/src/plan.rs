//! Topology and churn plans derived from a seed: the same seed gives the same plan, for every
//! backend, on every machine (`rand`'s `StdRng` seeded with `seed_from_u64`).

use rand::rngs::StdRng;
use rand::seq::{IteratorRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde::Serialize;

/// The plan of the `kad` scenario, in node indices.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct KadPlan {
    /// Nodes.
    pub(crate) n: u32,
    /// Each node's bootstrap peers: up to `fanout` distinct earlier nodes (none for node 0).
    pub(crate) seeds: Vec<Vec<u32>>,
    /// Lookups before churn: `(source, target)`, source ≠ target.
    pub(crate) lookups: Vec<(u32, u32)>,
    /// The nodes killed by the churn, sorted.
    pub(crate) killed: Vec<u32>,
    /// Lookups after churn, among the living.
    pub(crate) after: Vec<(u32, u32)>,
}

/// Random `(source, target)` pairs among `living`, source ≠ target (needs two living nodes).
fn pairs(rng: &mut StdRng, living: &[u32], count: usize) -> Vec<(u32, u32)> {
    if living.len() < 2 {
        return Vec::new();
    }
    (0..count)
        .map(|_| {
            let s = rng.gen_range(0..living.len());
            let mut t = rng.gen_range(0..living.len() - 1);
            if t >= s {
                t += 1;
            }
            (living[s], living[t])
        })
        .collect()
}

impl KadPlan {
    /// The plan for `n` nodes, each bootstrapping from `fanout` random earlier ones,
    /// `lookups` random lookups before and after killing `kill_percent` % of the nodes.
    pub(crate) fn new(n: u32, fanout: usize, lookups: usize, kill_percent: u32, seed: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed);
        let seeds = (0..n)
            .map(|i| {
                let mut s = (0..i).choose_multiple(&mut rng, fanout);
                s.sort_unstable();
                s
            })
            .collect();
        let all: Vec<u32> = (0..n).collect();
        let before = pairs(&mut rng, &all, lookups);
        let kill = usize::try_from(u64::from(n) * u64::from(kill_percent) / 100).unwrap_or(0);
        let mut shuffled = all.clone();
        shuffled.shuffle(&mut rng);
        let mut killed: Vec<u32> = shuffled[..kill.min(shuffled.len())].to_vec();
        killed.sort_unstable();
        let living: Vec<u32> = all
            .iter()
            .copied()
            .filter(|i| killed.binary_search(i).is_err())
            .collect();
        let after = pairs(&mut rng, &living, lookups);
        KadPlan {
            n,
            seeds,
            lookups: before,
            killed,
            after,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plan_is_a_function_of_its_seed() {
        let a = KadPlan::new(200, 3, 1000, 20, 7);
        assert_eq!(a, KadPlan::new(200, 3, 1000, 20, 7));
        assert_ne!(a, KadPlan::new(200, 3, 1000, 20, 8));
    }

    #[test]
    fn seeds_are_earlier_nodes_and_the_dead_are_not_looked_up() {
        let p = KadPlan::new(100, 3, 500, 20, 1);
        assert!(p.seeds[0].is_empty());
        assert_eq!(p.seeds[1], vec![0]);
        for (i, s) in p.seeds.iter().enumerate().skip(3) {
            assert_eq!(s.len(), 3);
            assert!(s.iter().all(|&j| (j as usize) < i));
            assert!(s.windows(2).all(|w| w[0] < w[1]));
        }
        assert_eq!(p.killed.len(), 20);
        assert_eq!(p.lookups.len(), 500);
        assert!(p.lookups.iter().all(|(s, t)| s != t && *t < 100));
        assert!(p.after.iter().all(|(s, t)| {
            s != t && p.killed.binary_search(s).is_err() && p.killed.binary_search(t).is_err()
        }));
    }
}
