//! What we published, sans-IO: our records (re-put every
//! [`crate::KadConfig::record_republish_interval`]) and the keys we provide (re-announced
//! every [`crate::KadConfig::provider_republish_interval`]), each with the instant it is due.
//! Bounded: at most `max` entries of each; the oldest publication makes room.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One kind of publication (records or provider keys), keyed by the record key.
#[derive(Debug)]
pub struct Schedule<V> {
    interval: Duration,
    max: usize,
    entries: HashMap<Vec<u8>, (V, Instant)>,
}

impl<V: Clone> Schedule<V> {
    /// An empty schedule: each entry is due `interval` after it was (re)published; at most
    /// `max` entries.
    pub fn new(interval: Duration, max: usize) -> Self {
        Schedule {
            interval,
            max: max.max(1),
            entries: HashMap::new(),
        }
    }

    /// How many publications are kept.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Notes that `key` was published (with `value`) at `now`: it is due again after the
    /// interval. A full schedule drops its entry due soonest.
    pub fn published(&mut self, key: Vec<u8>, value: V, now: Instant) {
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max {
            let oldest = self
                .entries
                .iter()
                .min_by_key(|(_, (_, due))| *due)
                .map(|(k, _)| k.clone());
            if let Some(k) = oldest {
                self.entries.remove(&k);
            }
        }
        self.entries.insert(key, (value, now + self.interval));
    }

    /// Stops republishing `key`; returns whether it was scheduled.
    pub fn remove(&mut self, key: &[u8]) -> bool {
        self.entries.remove(key).is_some()
    }

    /// Whether `key` is scheduled.
    pub fn contains(&self, key: &[u8]) -> bool {
        self.entries.contains_key(key)
    }

    /// The entries due at `now`, each rescheduled one interval later (a republication that
    /// fails is tried again at the next one).
    pub fn take_due(&mut self, now: Instant) -> Vec<(Vec<u8>, V)> {
        let mut due = Vec::new();
        for (k, (v, at)) in &mut self.entries {
            if *at <= now {
                due.push((k.clone(), v.clone()));
                *at = now + self.interval;
            }
        }
        due
    }

    /// The next instant something is due.
    pub fn next_due(&self) -> Option<Instant> {
        self.entries.values().map(|(_, at)| *at).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_come_due_once_per_interval_and_are_bounded() {
        let i = Duration::from_secs(10);
        let mut s: Schedule<u8> = Schedule::new(i, 2);
        let t = Instant::now();
        s.published(b"a".to_vec(), 1, t);
        s.published(b"b".to_vec(), 2, t + Duration::from_secs(1));
        assert!(s.take_due(t + Duration::from_secs(9)).is_empty());
        assert_eq!(s.take_due(t + i), vec![(b"a".to_vec(), 1)]);
        assert!(s.take_due(t + i).is_empty(), "rescheduled");
        assert_eq!(s.next_due(), Some(t + Duration::from_secs(11)));
        // Full: the entry due soonest (b) makes room.
        s.published(b"c".to_vec(), 3, t + i);
        assert_eq!(s.len(), 2);
        assert!(!s.contains(b"b") && s.contains(b"a") && s.contains(b"c"));
        assert!(s.remove(b"a"));
        assert!(!s.remove(b"a"));
    }
}
