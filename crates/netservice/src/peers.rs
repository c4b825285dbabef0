//! Keeping peers: redial lost bootstrap and recently useful peers with exponential backoff and
//! jitter while under the low watermark; trim the surplus over the high watermark.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use p2pnet_host::{Host, HostEvent, Multiaddr, PERMANENT_ADDR_TTL, PeerId};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::config::PeersSection;

/// Recently useful peers remembered for redialing.
const MAX_REMEMBERED: usize = 64;

/// A peer we want to keep, and when we may try it again.
#[derive(Debug)]
struct Target {
    bootstrap: bool,
    failures: u32,
    next_try: Instant,
}

/// The redial delay after `failures` failed dials: doubling from `min`, capped at `max`, ±20 %.
pub(crate) fn backoff(failures: u32, min: Duration, max: Duration) -> Duration {
    let base = min.saturating_mul(1u32 << failures.min(20)).min(max);
    let jitter = rand::thread_rng().gen_range(0.8..1.2);
    base.mul_f64(jitter).min(max)
}

/// Runs until `stop` is cancelled.
pub(crate) async fn keep_peers(
    host: Host,
    kad: Option<p2pnet_kad::Kademlia>,
    bootstrap: Vec<(PeerId, Multiaddr)>,
    config: PeersSection,
    stop: CancellationToken,
) {
    let min = Duration::from_millis(config.min_backoff_ms);
    let max = Duration::from_millis(config.max_backoff_ms);
    let mut targets: HashMap<PeerId, Target> = HashMap::new();
    for (peer, addr) in &bootstrap {
        host.peer_store()
            .add_addrs(*peer, [addr.clone()], PERMANENT_ADDR_TTL);
        targets.insert(
            *peer,
            Target {
                bootstrap: true,
                failures: 0,
                next_try: Instant::now(),
            },
        );
    }
    let mut events = host.events();
    let mut tick = tokio::time::interval(Duration::from_millis(config.check_interval_ms.max(10)));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            event = events.recv() => {
                // A peer we were connected to and lost entirely is worth redialing.
                if let Ok(HostEvent::Disconnected { peer, remaining: 0, .. }) = event
                    && !targets.contains_key(&peer)
                    && targets.len() < MAX_REMEMBERED + bootstrap.len()
                {
                    targets.insert(peer, Target { bootstrap: false, failures: 0, next_try: Instant::now() + min });
                }
                continue;
            }
            _ = tick.tick() => {}
        }
        let connected = host.connected_peers();
        if connected.len() < config.low_watermark {
            let due: Vec<PeerId> = targets
                .iter()
                .filter(|(p, t)| t.next_try <= Instant::now() && !host.is_connected(p))
                .map(|(p, _)| *p)
                .collect();
            for peer in due {
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    r = host.connect(peer) => r,
                };
                let Some(target) = targets.get_mut(&peer) else {
                    continue;
                };
                match result {
                    Ok(()) => {
                        tracing::info!(%peer, bootstrap = target.bootstrap, "redialed peer");
                        target.failures = 0;
                    }
                    Err(e) => {
                        target.failures += 1;
                        let wait = backoff(target.failures, min, max);
                        target.next_try = Instant::now() + wait;
                        tracing::debug!(%peer, error = %e, retry_in = ?wait, "redial failed");
                        // Forget non-bootstrap peers that keep failing.
                        if !target.bootstrap && target.failures > 8 {
                            targets.remove(&peer);
                        }
                    }
                }
            }
            // Still short: fill from the DHT's routing table.
            let short = config
                .low_watermark
                .saturating_sub(host.connected_peers().len());
            if short > 0
                && let Some(kad) = &kad
                && let Ok(table) = kad.routing_table().await
            {
                for peer in fill_candidates(table, &host, short) {
                    let result = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = host.connect(peer) => r,
                    };
                    match result {
                        Ok(()) => {
                            tracing::debug!(%peer, "connected to a peer of the routing table")
                        }
                        Err(e) => {
                            tracing::debug!(%peer, error = %e, "routing table peer unreachable")
                        }
                    }
                }
            }
        } else if connected.len() > config.high_watermark {
            let surplus = connected.len() - config.high_watermark;
            let trimmable = connected
                .into_iter()
                .filter(|p| !host.is_protected(p) && !targets.get(p).is_some_and(|t| t.bootstrap))
                .take(surplus);
            for peer in trimmable {
                tracing::info!(%peer, "disconnecting: over the high watermark");
                host.close_peer(&peer);
            }
        }
    }
}

/// Up to `want` routing-table peers we are not connected to, taken one bucket at a time (the
/// farthest buckets first, then round after round), so the connections spread over the key
/// space instead of clustering in one bucket.
pub(crate) fn fill_candidates(
    table: Vec<p2pnet_kad::TableEntry>,
    host: &Host,
    want: usize,
) -> Vec<PeerId> {
    let mut by_bucket: std::collections::BTreeMap<std::cmp::Reverse<usize>, Vec<PeerId>> =
        std::collections::BTreeMap::new();
    for e in table {
        if !host.is_connected(&e.peer) && e.peer != host.peer_id() {
            by_bucket
                .entry(std::cmp::Reverse(e.bucket))
                .or_default()
                .push(e.peer);
        }
    }
    let mut out = Vec::new();
    let mut round = 0;
    while out.len() < want {
        let before = out.len();
        for peers in by_bucket.values() {
            if let Some(p) = peers.get(round) {
                out.push(*p);
                if out.len() == want {
                    break;
                }
            }
        }
        if out.len() == before {
            break;
        }
        round += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let min = Duration::from_secs(1);
        let max = Duration::from_secs(60);
        for failures in 0..30 {
            let d = backoff(failures, min, max);
            let base = min.saturating_mul(1u32 << failures.min(20)).min(max);
            assert!(d <= max);
            assert!(
                d >= base.mul_f64(0.8) && d <= base.mul_f64(1.2),
                "{failures}: {d:?}"
            );
        }
    }

    fn entry(bucket: usize) -> p2pnet_kad::TableEntry {
        p2pnet_kad::TableEntry {
            peer: p2pnet_host::generate_keypair().public().to_peer_id(),
            addrs: Vec::new(),
            bucket,
            last_seen: std::time::Instant::now(),
        }
    }

    #[tokio::test]
    async fn fill_candidates_spread_over_buckets_farthest_first() {
        let host = Host::new(
            p2pnet_host::generate_keypair(),
            p2pnet_host::HostConfig::default(),
        )
        .unwrap();
        // Three peers in bucket 255, two in 254, one in 200.
        let table: Vec<_> = [255, 255, 255, 254, 254, 200].map(entry).into();
        let ids: Vec<PeerId> = table.iter().map(|e| e.peer).collect();
        let picked = fill_candidates(table.clone(), &host, 4);
        // One per bucket first (farthest first), then the second round.
        assert_eq!(picked, vec![ids[0], ids[3], ids[5], ids[1]]);
        assert_eq!(fill_candidates(table.clone(), &host, 100).len(), 6);
        assert!(fill_candidates(table, &host, 0).is_empty());
        host.shutdown().await;
    }
}
