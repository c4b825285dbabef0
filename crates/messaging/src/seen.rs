//! [`SeenSet`]: a bounded set of message ids (oldest forgotten first), one per peer, so that
//! relaying never sends a message back to a peer that sent it or was already sent it.

use std::collections::{HashSet, VecDeque};

/// A message's identity: a keyed 64-bit hash of its kind and uncompressed payload, so it is the
/// same whether the link compressed it or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MessageId(pub u64);

/// A bounded set of message ids with first-in-first-out eviction.
#[derive(Debug)]
pub(crate) struct SeenSet {
    set: HashSet<u64>,
    order: VecDeque<u64>,
    cap: usize,
}

impl SeenSet {
    pub(crate) fn new(cap: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    /// Records `id`; returns whether it was new.
    pub(crate) fn insert(&mut self, id: MessageId) -> bool {
        if !self.set.insert(id.0) {
            return false;
        }
        self.order.push_back(id.0);
        if self.order.len() > self.cap
            && let Some(old) = self.order.pop_front()
        {
            self.set.remove(&old);
        }
        true
    }

    /// Whether `id` is remembered.
    pub(crate) fn contains_id(&self, id: MessageId) -> bool {
        self.set.contains(&id.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fifo() {
        let mut s = SeenSet::new(2);
        assert!(s.insert(MessageId(1)));
        assert!(!s.insert(MessageId(1)));
        assert!(s.insert(MessageId(2)));
        assert!(s.insert(MessageId(3)));
        assert!(!s.contains_id(MessageId(1)));
        assert!(s.contains_id(MessageId(2)) && s.contains_id(MessageId(3)));
        assert_eq!(s.order.len(), 2);
        assert_eq!(s.set.len(), 2);
    }
}
