//! The driver task: owns the routing table, the stores and the running lookups, and reacts to
//! commands, answers, host events and its timers.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pnet_host::{
    Host, HostEvent, Multiaddr, PeerId, RECENT_ADDR_TTL, RateLimiter, StreamReceiver,
};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc};
use tokio_util::task::TaskTracker;

use super::{Command, LookupKind, LookupOutcome, Reply, Shared, Slot, announced_addrs};
use crate::addrs::{RequestRate, keep_learned_addr};
use crate::config::KadConfig;
use crate::error::KadError;
use crate::key::Key;
use crate::message::{KadPeer, Request, Response};
use crate::metrics::{QueryEnd, QueryKind};
use crate::outcome::{FoundRecord, TableEntry};
use crate::query::{Action, Query};
use crate::refresh::RefreshTracker;
use crate::republish::Schedule;
use crate::routing::{Insert, RoutingTable};
use crate::rpc;
use crate::store::{ProviderStore, RecordStore};

/// Commands waiting for the driver task.
pub(super) const COMMAND_CAPACITY: usize = 256;
/// Answers and check results waiting for the driver task.
const EVENT_CAPACITY: usize = 1024;
/// Inbound kad streams waiting to be served.
pub(super) const INBOUND_CAPACITY: usize = 64;

pub(super) enum Event {
    Answer {
        query: u64,
        peer: PeerId,
        result: Result<Response, KadError>,
    },
    Checked {
        peer: PeerId,
        alive: bool,
    },
}

pub(super) struct Running {
    pub(super) query: Query,
    pub(super) kind: LookupKind,
    pub(super) request: Request,
    pub(super) key: Vec<u8>,
    pub(super) reply: Option<Reply<LookupOutcome>>,
    pub(super) outcome: LookupOutcome,
    /// The query slot, held until the lookup ends.
    pub(super) _slot: Slot,
    /// Started by the driver itself (a refresh): counted in the metrics here.
    pub(super) internal: bool,
}

pub(super) struct Driver {
    pub(super) shared: Shared,
    pub(super) host: Host,
    pub(super) config: Arc<KadConfig>,
    pub(super) local: PeerId,
    pub(super) table: RoutingTable,
    pub(super) records: RecordStore,
    pub(super) providers: ProviderStore,
    pub(super) rate: RequestRate,
    pub(super) queries: HashMap<u64, Running>,
    pub(super) next_query: u64,
    pub(super) event_tx: mpsc::Sender<Event>,
    event_rx: Option<mpsc::Receiver<Event>>,
    /// For stream and republishing tasks to reach the driver; weak, so that the driver's channel
    /// closes when the last `Kademlia` is gone.
    pub(super) commands: mpsc::WeakSender<Command>,
    pub(super) tasks: TaskTracker,
    pub(super) inbound_counts: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// Peers whose liveness check is under way.
    pub(super) checks: HashSet<PeerId>,
    pub(super) warn: Arc<RateLimiter>,
    /// The protocol's registration while we serve it.
    pub(super) server: Option<StreamReceiver>,
    /// When the first bootstrap started: bucket refreshes count from it.
    pub(super) bootstrapped: Option<Instant>,
    pub(super) refresh: RefreshTracker,
    /// When our own id was last looked up.
    pub(super) last_self_lookup: Option<Instant>,
    /// Our records, to put again.
    pub(super) published: Schedule<Vec<u8>>,
    /// The keys we provide, to announce again.
    pub(super) provided: Schedule<()>,
    pub(super) last_sweep: Instant,
    pub(super) last_cache_save: Instant,
    /// The table generation last written to the route cache.
    pub(super) saved_generation: u64,
    /// The table generation and store sizes last published to the metrics.
    pub(super) published_sizes: (u64, usize, usize),
    pub(super) next_tick: Instant,
}

/// A republication interval, `None` when it is off.
fn interval(d: Duration) -> Option<Duration> {
    (!d.is_zero()).then_some(d)
}

impl Driver {
    pub(super) fn new(
        shared: Shared,
        commands: mpsc::WeakSender<Command>,
        tasks: TaskTracker,
        server: Option<StreamReceiver>,
    ) -> Driver {
        let host = shared.host.clone();
        let config = shared.config.clone();
        let local = host.peer_id();
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let now = Instant::now();
        // Far in the future when off: never due.
        let never = Duration::from_secs(100 * 365 * 24 * 3600);
        let mut driver = Driver {
            table: RoutingTable::new(local, config.routing.clone()),
            records: RecordStore::new(config.store.clone(), config.validator.clone()),
            providers: ProviderStore::new(config.store.clone()),
            rate: RequestRate::new(
                config.inbound_requests_per_second,
                config.inbound_request_burst,
            ),
            queries: HashMap::new(),
            next_query: 0,
            event_tx,
            event_rx: Some(event_rx),
            commands,
            tasks,
            inbound_counts: Arc::default(),
            checks: HashSet::new(),
            warn: Arc::new(RateLimiter::default()),
            server,
            bootstrapped: None,
            refresh: RefreshTracker::default(),
            last_self_lookup: None,
            published: Schedule::new(
                interval(config.record_republish_interval).unwrap_or(never),
                config.store.max_records,
            ),
            provided: Schedule::new(
                interval(config.provider_republish_interval).unwrap_or(never),
                config.store.max_provided_keys,
            ),
            last_sweep: now,
            last_cache_save: now,
            saved_generation: 0,
            published_sizes: (u64::MAX, 0, 0),
            next_tick: now,
            host,
            config,
            local,
            shared,
        };
        for peer in driver.host.connected_peers() {
            if driver
                .host
                .peer_store()
                .protocols(&peer)
                .contains(&driver.config.protocol)
            {
                let addrs = driver.host.peer_store().addrs(&peer);
                driver.insert_peer(peer, addrs, now);
            }
        }
        driver.load_route_cache(now);
        driver.saved_generation = driver.table.generation();
        driver.publish_sizes();
        driver
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut host_events: broadcast::Receiver<HostEvent> = self.host.events();
        let Some(mut events) = self.event_rx.take() else {
            return;
        };
        let cancel = self.shared.cancel.clone();
        let wake = self.shared.wake.clone();
        let mut host_open = true;
        self.update_mode();
        loop {
            let deadline = self
                .queries
                .values()
                .filter_map(|q| q.query.next_deadline())
                .min()
                .map_or(self.next_tick, |d| d.min(self.next_tick));
            tokio::select! {
                _ = cancel.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(ev) = events.recv() => self.on_event(ev),
                Some(s) = async {
                    match self.server.as_mut() {
                        Some(r) => r.recv().await,
                        None => std::future::pending().await,
                    }
                } => self.on_inbound_stream(s),
                ev = host_events.recv(), if host_open => match ev {
                    Ok(ev) => self.on_host_event(ev),
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        tracing::debug!(missed = n, "kademlia missed host events");
                    }
                    Err(broadcast::error::RecvError::Closed) => host_open = false,
                },
                _ = wake.notified() => self.update_mode(),
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            let ids: Vec<u64> = self.queries.keys().copied().collect();
            for id in ids {
                self.drive(id, now);
            }
            if now >= self.next_tick {
                self.tick(now);
            }
            self.publish_sizes();
        }
        // Unregister the protocol first, then fail what is waiting.
        self.server = None;
        self.shared
            .server
            .store(false, std::sync::atomic::Ordering::Relaxed);
        for (_, mut q) in self.queries.drain() {
            if let Some(reply) = q.reply.take() {
                let _ = reply.send(Err(KadError::ShutDown));
            }
        }
        self.save_route_cache_at_stop().await;
        tracing::debug!(peer = %self.local, "kademlia stopped");
    }

    pub(super) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.shared.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Puts a server-mode peer in the table; a full bucket's liveness check starts here.
    pub(super) fn insert_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
        match self.table.insert(peer, addrs, now) {
            Insert::Pending { check } => self.start_check(check),
            Insert::Rejected(why) => {
                tracing::debug!(%peer, reason = ?why, "peer not taken into the routing table");
            }
            Insert::Inserted => tracing::trace!(%peer, "peer added to the routing table"),
            Insert::Updated | Insert::Queued => {}
        }
    }

    fn start_check(&mut self, peer: PeerId) {
        if !self.checks.insert(peer) {
            return;
        }
        let host = self.host.clone();
        let tx = self.event_tx.clone();
        let timeout = self.config.routing.check_timeout;
        self.spawn(async move {
            let alive = host.is_connected(&peer)
                || matches!(
                    tokio::time::timeout(timeout, host.connect(peer)).await,
                    Ok(Ok(()))
                );
            let _ = tx.send(Event::Checked { peer, alive }).await;
        });
    }

    fn on_host_event(&mut self, ev: HostEvent) {
        if let HostEvent::Identified {
            peer, protocols, ..
        } = ev
            && protocols.contains(&self.config.protocol)
        {
            // The host keeps only the addresses that pass its hygiene in the peer store.
            let addrs = self.host.peer_store().addrs(&peer);
            self.insert_peer(peer, addrs, Instant::now());
        }
    }

    fn on_command(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Lookup {
                key,
                kind,
                slot,
                reply,
            } => self.start_lookup(key, kind, slot, Some(reply), false, now),
            Command::AddPeer { peer, addrs, reply } => {
                if !addrs.is_empty() {
                    self.host
                        .peer_store()
                        .add_addrs(peer, addrs.clone(), RECENT_ADDR_TTL);
                }
                let r = self.table.insert(peer, addrs, now);
                if let Insert::Pending { check } = r {
                    self.start_check(check);
                }
                let _ = reply.send(r);
            }
            Command::Table { reply } => {
                let entries = self
                    .table
                    .entries()
                    .map(|(bucket, e)| TableEntry {
                        peer: e.peer,
                        addrs: e.addrs.clone(),
                        bucket,
                        last_seen: e.last_seen,
                    })
                    .collect();
                let _ = reply.send(entries);
            }
            Command::PutLocal { key, value, reply } => {
                let r = self.records.put(key.clone(), value.clone(), None, now);
                if r.is_ok() {
                    self.published.published(key, value, now);
                }
                let _ = reply.send(r);
            }
            Command::ProvideLocal { key, reply } => {
                let addrs = announced_addrs(&self.host, &self.config);
                let r = self
                    .providers
                    .add(key.clone(), self.local, addrs, true, now);
                if r.is_ok() {
                    self.provided.published(key, (), now);
                }
                let _ = reply.send(r);
            }
            Command::Unpublish { key, record, reply } => {
                let had = if record {
                    self.records.remove_local(&key);
                    self.published.remove(&key)
                } else {
                    self.providers.remove(&key, &self.local);
                    self.provided.remove(&key)
                };
                let _ = reply.send(had);
            }
            Command::Inbound {
                peer,
                request,
                reply,
            } => {
                self.shared.counters.inbound(request.message_type());
                let response = if self.rate.allow(peer, now) {
                    self.answer(peer, request, now)
                } else {
                    self.shared.counters.refused_rate();
                    if self.warn.allow() {
                        tracing::warn!(%peer, "kad request rate exceeded; refused");
                    }
                    None
                };
                let _ = reply.send(response);
            }
        }
    }

    pub(super) fn via(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.host
            .connections(Some(peer))
            .into_iter()
            .next()
            .map(|c| c.remote_addr)
    }

    /// The addresses of `peer` a remote told us worth keeping: a `/p2p/` suffix is stripped
    /// (and the address dropped if it names another peer), then address hygiene applies.
    pub(super) fn clean_addrs(
        &self,
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        via: Option<&Multiaddr>,
    ) -> Vec<Multiaddr> {
        let allow =
            self.config.accept_private_addrs || self.host.config().accept_private_learned_addrs;
        let mut out: Vec<Multiaddr> = Vec::with_capacity(addrs.len());
        for a in addrs {
            let (a, named) = p2pnet_host::without_p2p(&a);
            if named.is_some_and(|n| n != peer) || !keep_learned_addr(&a, via, allow) {
                continue;
            }
            if !out.contains(&a) {
                out.push(a);
            }
        }
        out
    }

    pub(super) fn start_lookup(
        &mut self,
        key: Vec<u8>,
        kind: LookupKind,
        slot: Slot,
        reply: Option<Reply<LookupOutcome>>,
        internal: bool,
        now: Instant,
    ) {
        let target = Key::new(&key);
        if let Some(bucket) = self.table.bucket_of(&target) {
            self.refresh.queried(bucket, now);
        }
        if matches!(kind, LookupKind::Closest) && key == self.local.to_bytes() {
            self.bootstrapped.get_or_insert(now);
            self.last_self_lookup = Some(now);
        }
        let k = self.config.query.k;
        let mut seeds: Vec<(PeerId, Vec<Multiaddr>)> = self
            .table
            .closest(&target, k)
            .into_iter()
            .map(|e| (e.peer, e.addrs.clone()))
            .collect();
        if seeds.is_empty() {
            seeds = self
                .host
                .connected_peers()
                .into_iter()
                .filter(|p| {
                    self.host
                        .peer_store()
                        .protocols(p)
                        .contains(&self.config.protocol)
                })
                .map(|p| (p, self.host.peer_store().addrs(&p)))
                .collect();
        }
        let mut outcome = LookupOutcome::default();
        let request = match &kind {
            LookupKind::Closest | LookupKind::FindPeer(_) => Request::FindNode { key: key.clone() },
            LookupKind::GetValue { quorum } => {
                if let Some(r) = self.records.get(&key, now) {
                    outcome.records.push(FoundRecord {
                        peer: self.local,
                        value: r.value.clone(),
                    });
                    if outcome.records.len() >= *quorum {
                        if let Some(reply) = reply {
                            let _ = reply.send(Ok(outcome));
                        }
                        return;
                    }
                }
                Request::GetValue { key: key.clone() }
            }
            LookupKind::GetProviders { .. } => {
                for r in self.providers.providers(&key, now) {
                    let addrs = if r.provider == self.local {
                        announced_addrs(&self.host, &self.config)
                    } else {
                        r.addrs
                    };
                    outcome.providers.push((r.provider, addrs));
                }
                Request::GetProviders { key: key.clone() }
            }
        };
        if seeds.is_empty() {
            let empty_ok = !outcome.records.is_empty() || !outcome.providers.is_empty();
            if internal {
                self.shared
                    .counters
                    .query_ended(QueryKind::FindNode, QueryEnd::Failed);
            }
            if let Some(reply) = reply {
                let _ = reply.send(if empty_ok {
                    Ok(outcome)
                } else {
                    Err(KadError::NoKnownPeers)
                });
            }
            return;
        }
        let query = Query::new(target, self.local, seeds, self.config.query.clone(), now);
        let id = self.next_query;
        self.next_query += 1;
        tracing::debug!(query = id, kind = ?request.message_type(), "lookup started");
        self.queries.insert(
            id,
            Running {
                query,
                kind,
                request,
                key,
                reply,
                outcome,
                _slot: slot,
                internal,
            },
        );
        self.drive(id, now);
    }

    fn drive(&mut self, id: u64, now: Instant) {
        loop {
            let Some(running) = self.queries.get_mut(&id) else {
                return;
            };
            match running.query.next_action(now) {
                Action::Send { peer, addrs } => {
                    if !addrs.is_empty() {
                        self.host
                            .peer_store()
                            .add_addrs(peer, addrs, RECENT_ADDR_TTL);
                    }
                    let request = running.request.clone();
                    let host = self.host.clone();
                    let config = self.config.clone();
                    let tx = self.event_tx.clone();
                    self.spawn(async move {
                        let result = rpc::request(
                            &host,
                            peer,
                            &config.protocol,
                            &request,
                            config.max_message_size,
                            config.query.k,
                            config.query.request_timeout,
                        )
                        .await;
                        let _ = tx
                            .send(Event::Answer {
                                query: id,
                                peer,
                                result,
                            })
                            .await;
                    });
                }
                Action::Wait => return,
                Action::Finished => {
                    let Some(mut running) = self.queries.remove(&id) else {
                        return;
                    };
                    let mut outcome = std::mem::take(&mut running.outcome);
                    outcome.result = running.query.into_result();
                    tracing::debug!(
                        query = id,
                        hops = outcome.result.hops,
                        requests = outcome.result.requests,
                        failures = outcome.result.failures,
                        found = outcome.result.closest.len(),
                        "lookup finished"
                    );
                    self.shared.counters.hops(outcome.result.hops);
                    if running.internal {
                        let end = if !outcome.result.closest.is_empty() {
                            QueryEnd::Succeeded
                        } else if outcome.result.timed_out {
                            QueryEnd::TimedOut
                        } else {
                            QueryEnd::Failed
                        };
                        self.shared.counters.query_ended(QueryKind::FindNode, end);
                    }
                    if let Some(reply) = running.reply.take() {
                        let _ = reply.send(Ok(outcome));
                    }
                    return;
                }
            }
        }
    }

    fn on_event(&mut self, ev: Event) {
        let now = Instant::now();
        match ev {
            Event::Checked { peer, alive } => {
                self.checks.remove(&peer);
                if let Some(inserted) = self.table.on_check_result(&peer, alive, now) {
                    tracing::debug!(evicted = %peer, %inserted, "routing table entry replaced");
                }
            }
            Event::Answer {
                query,
                peer,
                result,
            } => self.on_answer(query, peer, result, now),
        }
    }

    fn on_answer(
        &mut self,
        id: u64,
        peer: PeerId,
        result: Result<Response, KadError>,
        now: Instant,
    ) {
        let response = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(query = id, %peer, error = %e, "kad request failed");
                if let Some(running) = self.queries.get_mut(&id) {
                    running.query.on_failure(&peer);
                }
                if !self.host.is_connected(&peer) {
                    self.table.remove(&peer, now);
                }
                self.drive(id, now);
                return;
            }
        };
        // It answered on our protocol: a server.
        let addrs = self.host.peer_store().addrs(&peer);
        self.insert_peer(peer, addrs, now);
        let via = self.via(&peer);
        let clean = |d: &Driver, peers: Vec<KadPeer>| -> Vec<KadPeer> {
            peers
                .into_iter()
                .filter(|p| p.id != d.local)
                .map(|mut p| {
                    p.addrs = d.clean_addrs(p.id, std::mem::take(&mut p.addrs), via.as_ref());
                    if !p.addrs.is_empty() {
                        d.host
                            .peer_store()
                            .add_addrs(p.id, p.addrs.clone(), RECENT_ADDR_TTL);
                    }
                    p
                })
                .collect()
        };
        let closer = clean(self, response.closer_peers);
        let provider_peers = clean(self, response.provider_peers);
        let validator = self.config.validator.clone();
        let max_value = self.config.store.max_value_size;
        let Some(running) = self.queries.get_mut(&id) else {
            return;
        };
        let mut done = false;
        match running.kind.clone() {
            LookupKind::Closest => {}
            LookupKind::FindPeer(target) => {
                let named = closer
                    .iter()
                    .find(|p| p.id == target && !p.addrs.is_empty())
                    .map(|p| p.addrs.clone());
                let found = if peer == target {
                    Some(self.host.peer_store().addrs(&target))
                } else {
                    named
                };
                if let Some(addrs) = found {
                    running.outcome.found = Some((target, addrs));
                    done = true;
                }
            }
            LookupKind::GetValue { quorum } => {
                if let Some(r) = response.record
                    && r.key == running.key
                    && r.value.len() <= max_value
                    && validator.validate(&r.key, &r.value).is_ok()
                {
                    running.outcome.records.push(FoundRecord {
                        peer,
                        value: r.value,
                    });
                    done = running.outcome.records.len() >= quorum;
                }
            }
            LookupKind::GetProviders { want } => {
                for p in provider_peers {
                    // The same provider named by several peers: every address any of them knew.
                    match running
                        .outcome
                        .providers
                        .iter_mut()
                        .find(|(q, _)| *q == p.id)
                    {
                        Some((_, addrs)) => {
                            for a in p.addrs {
                                if addrs.len() < crate::message::MAX_ADDRS_PER_PEER
                                    && !addrs.contains(&a)
                                {
                                    addrs.push(a);
                                }
                            }
                        }
                        None => running.outcome.providers.push((p.id, p.addrs)),
                    }
                }
                done = running.outcome.providers.len() >= want;
            }
        }
        running.query.on_success(&peer, closer);
        if done {
            running.query.finish_at(&peer);
        }
        self.drive(id, now);
    }
}
