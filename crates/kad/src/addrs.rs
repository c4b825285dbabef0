//! Address hygiene for addresses other peers tell us about, and the per-peer inbound limits.

use std::collections::HashMap;
use std::time::Instant;

use p2pnet_host::PeerId;

/// The host's rule for addresses other peers tell us about (identify's), applied to kad answers.
pub(crate) use p2pnet_host::keep_learned_addr;

/// Most peers the rate limiter remembers; beyond it, peers with a full bucket are forgotten.
const MAX_TRACKED: usize = 4096;

/// A token bucket per peer.
#[derive(Debug)]
pub(crate) struct RequestRate {
    per_second: f64,
    burst: f64,
    peers: HashMap<PeerId, (f64, Instant)>,
}

impl RequestRate {
    pub(crate) fn new(per_second: u32, burst: u32) -> Self {
        RequestRate {
            per_second: f64::from(per_second.max(1)),
            burst: f64::from(burst.max(1)),
            peers: HashMap::new(),
        }
    }

    /// Whether `peer` may make one more request at `now`.
    pub(crate) fn allow(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.peers.len() >= MAX_TRACKED && !self.peers.contains_key(&peer) {
            let (rate, burst) = (self.per_second, self.burst);
            self.peers.retain(|_, (tokens, last)| {
                *tokens + now.saturating_duration_since(*last).as_secs_f64() * rate < burst
            });
            if self.peers.len() >= MAX_TRACKED {
                return false;
            }
        }
        let (tokens, last) = self.peers.entry(peer).or_insert((self.burst, now));
        let refill = now.saturating_duration_since(*last).as_secs_f64() * self.per_second;
        *tokens = (*tokens + refill).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p2pnet_host::Multiaddr;
    use std::time::Duration;

    fn a(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn private_addresses_only_in_scope() {
        let lo = a("/ip4/127.0.0.1/tcp/1");
        let public = a("/ip4/8.8.8.8/tcp/1");
        assert!(keep_learned_addr(&public, None, false));
        assert!(!keep_learned_addr(&lo, None, false));
        assert!(!keep_learned_addr(&lo, Some(&public), false));
        assert!(keep_learned_addr(
            &lo,
            Some(&a("/ip4/127.0.0.2/tcp/9")),
            false
        ));
        assert!(!keep_learned_addr(
            &a("/dns/example.com/tcp/1"),
            None,
            false
        ));
        assert!(keep_learned_addr(&lo, None, true));
    }

    #[test]
    fn rate_limits_refill() {
        let mut r = RequestRate::new(10, 3);
        let p = PeerId::random();
        let now = Instant::now();
        assert!((0..3).all(|_| r.allow(p, now)));
        assert!(!r.allow(p, now));
        assert!(r.allow(p, now + Duration::from_millis(150)));
        assert!(r.allow(PeerId::random(), now));
    }
}
