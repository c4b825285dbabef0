//! The per-kind duplicate filter: a window over the last N distinct content hashes.

use std::collections::{HashSet, VecDeque};

/// Remembers the last `capacity` distinct content hashes that passed the filter.
///
/// A hash is *first seen* when it is not in the window: it is recorded, evicting the oldest hash
/// when the window is full. A hash already in the window is a duplicate; seeing it again does not
/// refresh its place (like golang-lru's `ContainsOrAdd`, which the Nebulas original used), so the
/// window is exactly "the last `capacity` distinct hashes let through".
#[derive(Debug)]
pub(crate) struct DedupWindow {
    capacity: usize,
    order: VecDeque<u64>,
    seen: HashSet<u64>,
}

impl DedupWindow {
    /// An empty window; `capacity` is at least 1 (checked by the configuration).
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    /// Records `hash` and returns `true` if it was not in the window; returns `false` (a
    /// duplicate) otherwise.
    pub(crate) fn insert(&mut self, hash: u64) -> bool {
        if self.seen.contains(&hash) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.order.push_back(hash);
        self.seen.insert(hash);
        true
    }

    /// How many hashes the window holds.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::DedupWindow;
    use proptest::prelude::*;
    use std::collections::VecDeque;

    #[test]
    fn duplicate_within_window_is_rejected() {
        let mut window = DedupWindow::new(3);
        assert!(window.insert(1));
        assert!(!window.insert(1));
        assert!(window.insert(2));
        assert!(window.insert(3));
        assert!(!window.insert(1));
        // 4 evicts 1, the oldest.
        assert!(window.insert(4));
        assert!(window.insert(1));
        assert_eq!(window.len(), 3);
    }

    #[test]
    fn duplicate_does_not_refresh_its_entry() {
        let mut window = DedupWindow::new(2);
        assert!(window.insert(1));
        assert!(window.insert(2));
        assert!(!window.insert(1)); // does not make 1 the newest
        assert!(window.insert(3)); // evicts 1
        assert!(window.insert(1));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]
        /// The window matches a naive model: "in the last `capacity` distinct hashes let through".
        #[test]
        fn matches_model(capacity in 1usize..8, hashes in proptest::collection::vec(0u64..12, 0..200)) {
            let mut window = DedupWindow::new(capacity);
            let mut model: VecDeque<u64> = VecDeque::new();
            for hash in hashes {
                let fresh = !model.contains(&hash);
                if fresh {
                    if model.len() == capacity {
                        model.pop_front();
                    }
                    model.push_back(hash);
                }
                prop_assert_eq!(window.insert(hash), fresh);
                prop_assert!(window.len() <= capacity);
            }
        }
    }
}
