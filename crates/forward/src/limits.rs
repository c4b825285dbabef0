//! Caps on bridged streams: in total, the share peers may hold (the rest is kept for local
//! `forward` clients), per remote peer and per listener. A stream over a cap is refused alone,
//! counted, and warned about at most once a second.

use p2pnet_host::RateLimiter;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use p2pnet_host::PeerId;
use parking_lot::Mutex;

use crate::registry::ListenerId;
use crate::{ForwardConfig, ForwardError};

/// The stream caps of [`ForwardConfig`], as named in [`ForwardError::StreamLimit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StreamLimit {
    /// [`ForwardConfig::max_streams`]: all bridged streams.
    Total,
    /// The share of streams from peers: `max_streams - reserved_local_streams`.
    Remote,
    /// [`ForwardConfig::max_streams_per_peer`].
    PerPeer,
    /// [`ForwardConfig::max_streams_per_listener`].
    PerListener,
}

impl std::fmt::Display for StreamLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StreamLimit::Total => "total stream",
            StreamLimit::Remote => "remote stream",
            StreamLimit::PerPeer => "per-peer stream",
            StreamLimit::PerListener => "per-listener stream",
        })
    }
}

/// How many streams and connections each cap has refused since the forwarder started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RefusedStreams {
    /// Refused by [`StreamLimit::Total`].
    pub total: u64,
    /// Refused by [`StreamLimit::Remote`].
    pub remote: u64,
    /// Refused by [`StreamLimit::PerPeer`].
    pub per_peer: u64,
    /// Refused by [`StreamLimit::PerListener`].
    pub per_listener: u64,
}

/// The open-stream counts the caps are checked against.
#[derive(Debug)]
pub(crate) struct StreamLimits {
    max_total: usize,
    max_remote: usize,
    max_per_peer: usize,
    max_per_listener: usize,
    open: Mutex<Open>,
    refused: [AtomicU64; 4],
    warn_limiter: RateLimiter,
}

#[derive(Debug, Default)]
struct Open {
    total: usize,
    remote: usize,
    per_peer: HashMap<PeerId, usize>,
    per_listener: HashMap<ListenerId, usize>,
}

/// One open bridged stream, counted until dropped.
#[derive(Debug)]
pub(crate) struct StreamPermit {
    limits: Arc<StreamLimits>,
    listener: ListenerId,
    remote_peer: Option<PeerId>,
}

impl StreamLimits {
    pub(crate) fn new(config: &ForwardConfig) -> Self {
        Self {
            max_total: config.max_streams,
            max_remote: config
                .max_streams
                .saturating_sub(config.reserved_local_streams),
            max_per_peer: config.max_streams_per_peer,
            max_per_listener: config.max_streams_per_listener,
            open: Mutex::default(),
            refused: Default::default(),
            warn_limiter: RateLimiter::default(),
        }
    }

    /// A permit for one more stream of `listener`; `remote_peer` is the peer of a stream that
    /// came in through a `listen` listener (`None` for a local `forward` connection). Over a
    /// cap, the refusal is counted and the cap returned.
    pub(crate) fn try_acquire(
        self: &Arc<Self>,
        listener: ListenerId,
        remote_peer: Option<PeerId>,
    ) -> Result<StreamPermit, ForwardError> {
        let mut open = self.open.lock();
        let refused = if open.total >= self.max_total {
            Some((StreamLimit::Total, self.max_total))
        } else if open.per_listener.get(&listener).copied().unwrap_or(0) >= self.max_per_listener {
            Some((StreamLimit::PerListener, self.max_per_listener))
        } else if let Some(peer) = remote_peer {
            if open.remote >= self.max_remote {
                Some((StreamLimit::Remote, self.max_remote))
            } else if open.per_peer.get(&peer).copied().unwrap_or(0) >= self.max_per_peer {
                Some((StreamLimit::PerPeer, self.max_per_peer))
            } else {
                None
            }
        } else {
            None
        };
        if let Some((limit, max)) = refused {
            drop(open);
            self.refused[limit as usize].fetch_add(1, Ordering::Relaxed);
            return Err(ForwardError::StreamLimit { limit, max });
        }
        open.total += 1;
        *open.per_listener.entry(listener).or_default() += 1;
        if let Some(peer) = remote_peer {
            open.remote += 1;
            *open.per_peer.entry(peer).or_default() += 1;
        }
        Ok(StreamPermit {
            limits: self.clone(),
            listener,
            remote_peer,
        })
    }

    /// The refusals so far.
    pub(crate) fn refused(&self) -> RefusedStreams {
        let r = |l: StreamLimit| self.refused[l as usize].load(Ordering::Relaxed);
        RefusedStreams {
            total: r(StreamLimit::Total),
            remote: r(StreamLimit::Remote),
            per_peer: r(StreamLimit::PerPeer),
            per_listener: r(StreamLimit::PerListener),
        }
    }

    /// Whether a refusal may be logged now (at most one a second).
    pub(crate) fn may_warn(&self) -> bool {
        self.warn_limiter.allow()
    }
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut open = self.limits.open.lock();
        open.total -= 1;
        decrement(&mut open.per_listener, &self.listener);
        if let Some(peer) = &self.remote_peer {
            open.remote -= 1;
            decrement(&mut open.per_peer, peer);
        }
    }
}

/// Counts one down, removing the entry at zero (the maps hold only what is open).
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, usize>, key: &K) {
    if let Some(n) = map.get_mut(key) {
        *n -= 1;
        if *n == 0 {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use p2pnet_host::generate_keypair;

    use super::*;

    fn limits(
        total: usize,
        reserved: usize,
        per_peer: usize,
        per_listener: usize,
    ) -> Arc<StreamLimits> {
        Arc::new(StreamLimits::new(&ForwardConfig {
            max_streams: total,
            reserved_local_streams: reserved,
            max_streams_per_peer: per_peer,
            max_streams_per_listener: per_listener,
            ..ForwardConfig::default()
        }))
    }

    fn refused_by(r: Result<StreamPermit, ForwardError>) -> (StreamLimit, usize) {
        match r {
            Err(ForwardError::StreamLimit { limit, max }) => (limit, max),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    fn peer() -> PeerId {
        generate_keypair().public().to_peer_id()
    }

    #[test]
    fn each_cap_refuses_and_counts_and_permits_give_back() {
        let l = limits(6, 2, 2, 3);
        let (p, q, r) = (peer(), peer(), peer());
        let (a, b) = (ListenerId(1), ListenerId(2));
        let p1 = l.try_acquire(a, Some(p)).unwrap();
        let _p2 = l.try_acquire(a, Some(p)).unwrap();
        assert_eq!(
            refused_by(l.try_acquire(b, Some(p))),
            (StreamLimit::PerPeer, 2)
        );
        let _q1 = l.try_acquire(a, Some(q)).unwrap();
        assert_eq!(
            refused_by(l.try_acquire(a, Some(r))),
            (StreamLimit::PerListener, 3)
        );
        let _q2 = l.try_acquire(b, Some(q)).unwrap();
        // Peers hold 4 = 6 - 2: the remote share is full, the reserve is for local clients.
        assert_eq!(
            refused_by(l.try_acquire(b, Some(r))),
            (StreamLimit::Remote, 4)
        );
        let _l1 = l.try_acquire(b, None).unwrap();
        let l2 = l.try_acquire(b, None).unwrap();
        assert_eq!(
            refused_by(l.try_acquire(ListenerId(3), None)),
            (StreamLimit::Total, 6)
        );
        assert_eq!(
            l.refused(),
            RefusedStreams {
                total: 1,
                remote: 1,
                per_peer: 1,
                per_listener: 1
            }
        );
        // A permit given back frees its peer's, its listener's and the total count.
        drop(l2);
        drop(p1);
        let _p3 = l.try_acquire(b, Some(p)).unwrap();
        let open = l.open.lock();
        assert_eq!((open.total, open.remote), (5, 4));
        assert_eq!(open.per_peer.get(&p), Some(&2));
        assert_eq!(open.per_listener.get(&a), Some(&2));
    }

    #[test]
    fn counts_leave_no_entries_behind() {
        let l = limits(10, 0, 10, 10);
        let permits: Vec<_> = (0..5)
            .map(|i| l.try_acquire(ListenerId(i), Some(peer())).unwrap())
            .collect();
        drop(permits);
        let open = l.open.lock();
        assert_eq!((open.total, open.remote), (0, 0));
        assert!(open.per_peer.is_empty() && open.per_listener.is_empty());
    }
}
