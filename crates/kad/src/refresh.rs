//! Bucket refresh, sans-IO: which buckets have not been queried for the refresh interval, and a
//! random peer id in a bucket's range to look up for each.
//!
//! A bucket counts as queried when a lookup of a key in its range starts. The buckets
//! refreshed are those of the non-empty range: from the farthest (255) down to the closest
//! non-empty one, but no closer than [`MAX_REFRESH_CPL`] bits of common prefix (as
//! go-libp2p-kad-dht: closer ranges are covered by the lookup of our own id, and finding an id
//! in them costs `2^cpl` hashes).

use std::time::{Duration, Instant};

use p2pnet_host::PeerId;
use rand::RngCore;

use crate::key::{KEY_BITS, Key};

/// The longest common prefix with our key of a bucket that is refreshed by a random id.
pub const MAX_REFRESH_CPL: usize = 15;

/// When each bucket was last queried.
#[derive(Debug)]
pub struct RefreshTracker {
    last: Vec<Option<Instant>>,
}

impl Default for RefreshTracker {
    fn default() -> Self {
        RefreshTracker {
            last: vec![None; KEY_BITS],
        }
    }
}

impl RefreshTracker {
    /// Notes that a lookup of a key in bucket `bucket` started at `now`.
    pub fn queried(&mut self, bucket: usize, now: Instant) {
        if let Some(slot) = self.last.get_mut(bucket) {
            *slot = Some(now);
        }
    }

    /// The buckets due for a refresh at `now`, farthest first: those from 255 down to
    /// `closest_nonempty` (no closer than [`MAX_REFRESH_CPL`]) not queried for `interval`
    /// since `since` (the bootstrap) or their last lookup.
    pub fn due(
        &self,
        closest_nonempty: Option<usize>,
        interval: Duration,
        since: Instant,
        now: Instant,
    ) -> Vec<usize> {
        let Some(closest) = closest_nonempty else {
            return Vec::new();
        };
        let lowest = closest.max(KEY_BITS - 1 - MAX_REFRESH_CPL);
        (lowest..KEY_BITS)
            .rev()
            .filter(|&b| {
                let last = self.last[b].map_or(since, |t| t.max(since));
                now.saturating_duration_since(last) >= interval
            })
            .collect()
    }
}

/// A random peer id (a SHA-256 multihash of random bytes) whose key falls in bucket `bucket`
/// around `local`. `None` for buckets closer than [`MAX_REFRESH_CPL`] (too costly to hit).
pub fn random_peer_in_bucket(local: &Key, bucket: usize, rng: &mut impl RngCore) -> Option<PeerId> {
    if bucket >= KEY_BITS || KEY_BITS - 1 - bucket > MAX_REFRESH_CPL {
        return None;
    }
    // Hits with probability 2^-(cpl + 1): at most 2^16 tries expected; 64 times that bounds it.
    for _ in 0..(1u32 << 22) {
        let mut bytes = [0u8; 34];
        bytes[0] = 0x12; // sha2-256
        bytes[1] = 32;
        rng.fill_bytes(&mut bytes[2..]);
        let Ok(peer) = PeerId::from_bytes(&bytes) else {
            continue;
        };
        if local.distance(&Key::from_peer(&peer)).bucket_index() == Some(bucket) {
            return Some(peer);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_ids_fall_in_their_bucket() {
        let local = Key::from_peer(&PeerId::random());
        let mut rng = rand::thread_rng();
        for bucket in [255, 250, 245, KEY_BITS - 1 - MAX_REFRESH_CPL] {
            let p = random_peer_in_bucket(&local, bucket, &mut rng).unwrap();
            assert_eq!(
                local.distance(&Key::from_peer(&p)).bucket_index(),
                Some(bucket)
            );
        }
        assert!(random_peer_in_bucket(&local, 100, &mut rng).is_none());
    }

    #[test]
    fn buckets_not_queried_for_the_interval_are_due() {
        let mut t = RefreshTracker::default();
        let start = Instant::now();
        let i = Duration::from_secs(600);
        assert!(t.due(None, i, start, start + i).is_empty());
        assert!(t.due(Some(250), i, start, start).is_empty());
        t.queried(253, start + Duration::from_secs(300));
        let due = t.due(Some(250), i, start, start + i);
        assert_eq!(due, vec![255, 254, 252, 251, 250]);
        // A table with very close peers refreshes no closer than MAX_REFRESH_CPL.
        let due = t.due(Some(3), i, start, start + 2 * i);
        assert_eq!(due.len(), MAX_REFRESH_CPL + 1);
        assert_eq!(*due.last().unwrap(), KEY_BITS - 1 - MAX_REFRESH_CPL);
    }
}
