//! The driver's maintenance tick: the mode of [`crate::Mode::Auto`], bucket refreshes,
//! republishing, the sweep of expired entries, the route cache and the published sizes.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use p2pnet_host::{Multiaddr, PeerId, RECENT_ADDR_TTL};

use super::task::{Driver, INBOUND_CAPACITY};
use super::{LookupKind, Ops, VERDICT_NONE, VERDICT_PUBLIC};
use crate::metrics::{QueryKind, Sizes};
use crate::refresh::random_peer_in_bucket;
use crate::route_cache;

/// The longest time between two ticks (so [`crate::Mode::Auto`] sees new listen addresses).
const MAX_TICK: Duration = Duration::from_secs(1);
/// The shortest.
const MIN_TICK: Duration = Duration::from_millis(10);

impl Driver {
    /// The time between two ticks: a quarter of the shortest interval configured, within
    /// [`MIN_TICK`] and [`MAX_TICK`].
    fn tick_period(&self) -> Duration {
        let c = &self.config;
        let cache = c.route_cache.as_ref().map(|_| c.route_cache_interval);
        [
            Some(c.refresh_interval),
            Some(c.record_republish_interval),
            Some(c.provider_republish_interval),
            Some(c.sweep_interval),
            cache,
        ]
        .into_iter()
        .flatten()
        .filter(|d| !d.is_zero())
        .map(|d| d / 4)
        .min()
        .unwrap_or(MAX_TICK)
        .clamp(MIN_TICK, MAX_TICK)
    }

    pub(super) fn tick(&mut self, now: Instant) {
        self.next_tick = now + self.tick_period();
        self.update_mode();
        if now.saturating_duration_since(self.last_sweep) >= self.config.sweep_interval {
            self.records.prune(now);
            self.providers.prune(now);
            self.last_sweep = now;
        }
        self.refresh_buckets(now);
        self.republish(now);
        self.save_route_cache(now);
    }

    /// Registers or unregisters the protocol as the mode says.
    pub(super) fn update_mode(&mut self) {
        let verdict = match self.shared.verdict.load(Ordering::Relaxed) {
            VERDICT_NONE => None,
            v => Some(v == VERDICT_PUBLIC),
        };
        let serve = self.config.mode.serves(verdict, &self.host.listen_addrs());
        match (serve, self.server.is_some()) {
            (true, false) => {
                match self
                    .host
                    .accept_streams(self.config.protocol.clone(), INBOUND_CAPACITY)
                {
                    Ok(r) => {
                        self.server = Some(r);
                        tracing::info!(protocol = %self.config.protocol, ?verdict, "kademlia now in server mode");
                    }
                    Err(e) => {
                        if self.warn.allow() {
                            tracing::warn!(protocol = %self.config.protocol, error = %e, "kademlia cannot serve its protocol; stays a client");
                        }
                    }
                }
            }
            (false, true) => {
                self.server = None;
                tracing::info!(protocol = %self.config.protocol, ?verdict, "kademlia now in client mode");
            }
            _ => {}
        }
        let server = self.server.is_some();
        self.shared.server.store(server, Ordering::Relaxed);
        self.shared.counters.set_server(server);
    }

    /// After the first bootstrap: a lookup of a random id in every bucket of the non-empty
    /// range not queried for the refresh interval, and of our own id as often.
    fn refresh_buckets(&mut self, now: Instant) {
        let interval = self.config.refresh_interval;
        let Some(since) = self.bootstrapped else {
            return;
        };
        if interval.is_zero() {
            return;
        }
        let local_key = self.table.local_key();
        let mut targets: Vec<(Vec<u8>, Option<usize>)> = Vec::new();
        if self
            .last_self_lookup
            .is_none_or(|t| now.saturating_duration_since(t) >= interval)
        {
            targets.push((self.local.to_bytes(), None));
        }
        let due = self
            .refresh
            .due(self.table.closest_nonempty_bucket(), interval, since, now);
        let mut rng = rand::thread_rng();
        for bucket in due {
            if let Some(peer) = random_peer_in_bucket(&local_key, bucket, &mut rng) {
                targets.push((peer.to_bytes(), Some(bucket)));
            }
        }
        for (key, bucket) in targets {
            // Refreshes take free slots only; the rest wait for the next tick.
            let Ok(permit) = self.shared.slots.clone().try_acquire_owned() else {
                tracing::debug!("query slots taken; refresh postponed");
                return;
            };
            tracing::debug!(bucket = ?bucket, "bucket refresh");
            self.shared.counters.refreshed();
            self.shared.counters.query_started(QueryKind::FindNode);
            self.start_lookup(key, LookupKind::Closest, Arc::new(permit), None, true, now);
        }
    }

    /// Puts our due records again (here and at the closest peers) and announces our due
    /// provider keys again, each on a task of its own.
    fn republish(&mut self, now: Instant) {
        let records = self.published.take_due(now);
        let keys = self.provided.take_due(now);
        if records.is_empty() && keys.is_empty() {
            return;
        }
        let Some(commands) = self.commands.upgrade() else {
            return;
        };
        let ops = Ops {
            shared: self.shared.clone(),
            commands,
        };
        for (key, value) in records {
            if let Err(e) = self.records.put(key.clone(), value.clone(), None, now) {
                tracing::debug!(error = %e, "our record no longer fits; not republished");
                self.published.remove(&key);
                continue;
            }
            self.shared.counters.republished();
            let ops = ops.clone();
            self.spawn(async move {
                match ops.put_remote(&key, value).await {
                    Ok(o) => tracing::debug!(stored_at = o.stored_at.len(), "record republished"),
                    Err(e) => tracing::debug!(error = %e, "record republication failed"),
                }
            });
        }
        for (key, ()) in keys {
            let addrs = super::announced_addrs(&self.host, &self.config);
            if let Err(e) = self
                .providers
                .add(key.clone(), self.local, addrs, true, now)
            {
                tracing::debug!(error = %e, "provider record no longer fits; not re-announced");
                self.provided.remove(&key);
                continue;
            }
            self.shared.counters.republished();
            let ops = ops.clone();
            self.spawn(async move {
                match ops.announce(&key).await {
                    Ok(o) => tracing::debug!(
                        stored_at = o.stored_at.len(),
                        "provider record re-announced"
                    ),
                    Err(e) => tracing::debug!(error = %e, "provider re-announcement failed"),
                }
            });
        }
    }

    /// The routing table as the route cache keeps it.
    fn cached_routes(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        // Farthest buckets first: they hold most of the network.
        let mut peers: Vec<(usize, PeerId, Vec<Multiaddr>)> = self
            .table
            .entries()
            .filter(|(_, e)| !e.addrs.is_empty())
            .map(|(b, e)| (b, e.peer, e.addrs.clone()))
            .collect();
        peers.sort_by_key(|p| std::cmp::Reverse(p.0));
        peers.into_iter().map(|(_, p, a)| (p, a)).collect()
    }

    /// Puts the peers of the route cache in the table (and their addresses in the peer store);
    /// dead ones leave it when a request to them fails, as any entry.
    pub(super) fn load_route_cache(&mut self, now: Instant) {
        let Some(path) = self.config.route_cache.clone() else {
            return;
        };
        let peers = route_cache::load(&path);
        let n = peers.len();
        for (peer, addrs) in peers {
            if peer == self.local {
                continue;
            }
            self.host
                .peer_store()
                .add_addrs(peer, addrs.clone(), RECENT_ADDR_TTL);
            self.insert_peer(peer, addrs, now);
        }
        if n > 0 {
            tracing::info!(path = %path.display(), peers = n, table = self.table.len(), "routes loaded from the route cache");
        }
    }

    /// Writes the route cache (on a blocking task) if the table changed since the last write
    /// and the interval has passed.
    fn save_route_cache(&mut self, now: Instant) {
        let Some(path) = self.config.route_cache.clone() else {
            return;
        };
        if self.table.generation() == self.saved_generation
            || now.saturating_duration_since(self.last_cache_save)
                < self.config.route_cache_interval
        {
            return;
        }
        self.saved_generation = self.table.generation();
        self.last_cache_save = now;
        let peers = self.cached_routes();
        let counters = self.shared.counters.clone();
        self.tasks.spawn_blocking(move || {
            match route_cache::save(&path, &peers) {
                Ok(()) => {
                    counters.route_cache_saved();
                    tracing::debug!(path = %path.display(), peers = peers.len(), "route cache written");
                }
                Err(e) => tracing::warn!(path = %path.display(), error = %e, "route cache not written"),
            }
        });
    }

    /// Writes the route cache at shutdown if the table changed.
    pub(super) async fn save_route_cache_at_stop(&mut self) {
        let Some(path) = self.config.route_cache.clone() else {
            return;
        };
        if self.table.generation() == self.saved_generation {
            return;
        }
        let peers = self.cached_routes();
        let counters = self.shared.counters.clone();
        let r = tokio::task::spawn_blocking(move || {
            let r = route_cache::save(&path, &peers);
            (path, peers.len(), r)
        })
        .await;
        match r {
            Ok((path, n, Ok(()))) => {
                counters.route_cache_saved();
                tracing::debug!(path = %path.display(), peers = n, "route cache written at stop");
            }
            Ok((path, _, Err(e))) => {
                tracing::warn!(path = %path.display(), error = %e, "route cache not written")
            }
            Err(e) => tracing::warn!(error = %e, "route cache not written"),
        }
    }

    /// Publishes the table and store sizes to the metrics when they changed.
    pub(super) fn publish_sizes(&mut self) {
        let now = (
            self.table.generation(),
            self.records.len(),
            self.providers.len(),
        );
        if now == self.published_sizes {
            return;
        }
        self.published_sizes = now;
        self.shared.counters.set_sizes(Sizes {
            table_size: self.table.len(),
            buckets: self.table.bucket_sizes(),
            records: self.records.len(),
            provider_keys: self.providers.len(),
            server: self.server.is_some(),
        });
    }
}
