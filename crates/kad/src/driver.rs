//! The driver: one task owns the routing table, the stores and the running queries; it learns
//! peers from the host's identify events and from answers, serves inbound streams through
//! per-stream tasks, and sends requests on tasks of their own. Everything it spawns is joined
//! by [`Kademlia::shutdown`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use p2pnet_host::{
    Host, HostEvent, InboundStream, Multiaddr, PeerId, RECENT_ADDR_TTL, RateLimiter, StreamReceiver,
};
use parking_lot::Mutex;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addrs::{RequestRate, keep_learned_addr};
use crate::config::{KadConfig, Mode};
use crate::error::KadError;
use crate::key::Key;
use crate::message::{ConnectionType, KadPeer, KadRecord, Request, Response};
use crate::outcome::{
    ClosestPeers, FoundRecord, PeerFound, ProvidersFound, PutOutcome, QueryStats, RecordsFound,
    TableEntry,
};
use crate::query::{Action, Query, QueryResult};
use crate::routing::{Insert, RoutingTable};
use crate::rpc;
use crate::store::{ProviderStore, RecordStore};

/// Commands waiting for the driver task.
const COMMAND_CAPACITY: usize = 256;
/// Answers and check results waiting for the driver task.
const EVENT_CAPACITY: usize = 1024;
/// Inbound kad streams waiting to be served.
const INBOUND_CAPACITY: usize = 64;
/// How often expired records are dropped.
const PRUNE_INTERVAL: Duration = Duration::from_secs(60);

/// What a lookup is for.
#[derive(Debug, Clone)]
enum LookupKind {
    /// The closest peers to a key.
    Closest,
    /// One peer's addresses.
    FindPeer(PeerId),
    /// Values of a key, until `quorum` are found.
    GetValue { quorum: usize },
    /// Providers of a key, until `want` are found.
    GetProviders { want: usize },
}

#[derive(Debug, Default)]
struct LookupOutcome {
    result: QueryResult,
    records: Vec<FoundRecord>,
    providers: Vec<(PeerId, Vec<Multiaddr>)>,
    found: Option<(PeerId, Vec<Multiaddr>)>,
}

type Reply<T> = oneshot::Sender<Result<T, KadError>>;

enum Command {
    Lookup {
        key: Vec<u8>,
        kind: LookupKind,
        reply: Reply<LookupOutcome>,
    },
    AddPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: oneshot::Sender<Insert>,
    },
    Table {
        reply: oneshot::Sender<Vec<TableEntry>>,
    },
    PutLocal {
        key: Vec<u8>,
        value: Vec<u8>,
        reply: Reply<()>,
    },
    ProvideLocal {
        key: Vec<u8>,
        reply: Reply<()>,
    },
    Inbound {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Option<Response>>,
    },
}

enum Event {
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

struct Running {
    query: Query,
    kind: LookupKind,
    request: Request,
    key: Vec<u8>,
    reply: Option<Reply<LookupOutcome>>,
    outcome: LookupOutcome,
}

/// A Kademlia DHT node on a [`Host`]: peer routing, records and provider records, wire-compatible
/// with libp2p's kad-dht. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Kademlia {
    inner: Arc<Inner>,
}

struct Inner {
    host: Host,
    config: Arc<KadConfig>,
    commands: mpsc::Sender<Command>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for Kademlia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kademlia")
            .field("peer", &self.inner.host.peer_id())
            .field("protocol", &self.inner.config.protocol)
            .field("mode", &self.inner.config.mode)
            .finish()
    }
}

impl Kademlia {
    /// Starts Kademlia on `host`. In [`Mode::Server`] it registers the protocol (so identify
    /// announces it; fails with [`p2pnet_host::HostError::ProtocolTaken`] if something else
    /// serves it); in [`Mode::Client`] it only asks. Peers already connected and identified as
    /// servers are put in the routing table. Must be called within a tokio runtime.
    pub fn new(host: Host, config: KadConfig) -> Result<Kademlia, KadError> {
        p2pnet_host::validate_protocol(&config.protocol)?;
        let receiver = match config.mode {
            Mode::Server => Some(host.accept_streams(config.protocol.clone(), INBOUND_CAPACITY)?),
            Mode::Client => None,
        };
        let config = Arc::new(config);
        let host_events = host.events();
        let (commands, command_rx) = mpsc::channel(COMMAND_CAPACITY);
        let (event_tx, event_rx) = mpsc::channel(EVENT_CAPACITY);
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let local = host.peer_id();
        let mut driver = Driver {
            table: RoutingTable::new(local, config.routing.clone()),
            records: RecordStore::new(config.store.clone(), config.validator.clone()),
            providers: ProviderStore::new(config.store.clone()),
            rate: RequestRate::new(
                config.inbound_requests_per_second,
                config.inbound_request_burst,
            ),
            host: host.clone(),
            config: config.clone(),
            local,
            queries: HashMap::new(),
            next_query: 0,
            event_tx,
            commands: commands.downgrade(),
            cancel: cancel.clone(),
            tasks: tasks.clone(),
            inbound_counts: Arc::default(),
            checks: HashSet::new(),
            warn: Arc::new(RateLimiter::default()),
        };
        let now = Instant::now();
        for peer in host.connected_peers() {
            if host
                .peer_store()
                .protocols(&peer)
                .contains(&config.protocol)
            {
                let addrs = host.peer_store().addrs(&peer);
                driver.insert_peer(peer, addrs, now);
            }
        }
        tasks.spawn(driver.run(command_rx, event_rx, host_events, receiver));
        tracing::info!(peer = %local, protocol = %config.protocol, mode = ?config.mode, "kademlia started");
        Ok(Kademlia {
            inner: Arc::new(Inner {
                host,
                config,
                commands,
                cancel,
                tasks,
            }),
        })
    }

    /// The host this node runs on.
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    /// The configuration.
    pub fn config(&self) -> &KadConfig {
        &self.inner.config
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, KadError> {
        let (tx, rx) = oneshot::channel();
        self.inner
            .commands
            .send(make(tx))
            .await
            .map_err(|_| KadError::ShutDown)?;
        rx.await.map_err(|_| KadError::ShutDown)
    }

    async fn lookup(&self, key: Vec<u8>, kind: LookupKind) -> Result<LookupOutcome, KadError> {
        self.ask(|reply| Command::Lookup { key, kind, reply })
            .await?
    }

    /// Adds a peer known to be a kad server (a bootstrap node) with its addresses, to the
    /// routing table and the host's peer store. Returns what the table did.
    pub async fn add_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<Insert, KadError> {
        self.ask(|reply| Command::AddPeer { peer, addrs, reply })
            .await
    }

    /// Looks up our own id: fills the routing table with the peers around us and makes us
    /// known to them. Needs at least one peer in the table (see [`Kademlia::add_peer`]) or a
    /// connected peer that announced our protocol.
    pub async fn bootstrap(&self) -> Result<ClosestPeers, KadError> {
        let local = self.inner.host.peer_id();
        self.closest_peers(&local.to_bytes()).await
    }

    /// The peers closest to `key` (any bytes: a peer id's bytes for a peer), found by an
    /// iterative `FIND_NODE` lookup.
    pub async fn closest_peers(&self, key: &[u8]) -> Result<ClosestPeers, KadError> {
        let o = self.lookup(key.to_vec(), LookupKind::Closest).await?;
        Ok(ClosestPeers {
            peers: o.result.closest.clone(),
            stats: stats(o.result),
        })
    }

    /// Finds `peer`'s addresses: at once if we are connected to it, otherwise by a lookup that
    /// ends as soon as some answer names it with addresses. The addresses go to the host's peer
    /// store, so `host.connect(peer)` works next.
    pub async fn find_peer(&self, peer: PeerId) -> Result<PeerFound, KadError> {
        let host = &self.inner.host;
        if host.is_connected(&peer) {
            return Ok(PeerFound {
                peer,
                addrs: host.peer_store().addrs(&peer),
                stats: QueryStats::default(),
            });
        }
        let o = self
            .lookup(peer.to_bytes(), LookupKind::FindPeer(peer))
            .await?;
        match o.found {
            Some((peer, addrs)) => Ok(PeerFound {
                peer,
                addrs,
                stats: stats(o.result),
            }),
            None => Err(KadError::PeerNotFound(peer)),
        }
    }

    /// Gets the value of `key`: ours if we store it, and those of other peers until `quorum`
    /// values are found (or the lookup runs out of peers). Fails with
    /// [`KadError::RecordNotFound`] when none is found.
    pub async fn get_record(&self, key: &[u8], quorum: usize) -> Result<RecordsFound, KadError> {
        let o = self
            .lookup(
                key.to_vec(),
                LookupKind::GetValue {
                    quorum: quorum.max(1),
                },
            )
            .await?;
        if o.records.is_empty() {
            return Err(KadError::RecordNotFound);
        }
        let mut records = o.records;
        let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
        let best = self
            .inner
            .config
            .validator
            .select(key, &values)
            .min(records.len() - 1);
        records.swap(0, best);
        Ok(RecordsFound {
            records,
            stats: stats(o.result),
        })
    }

    /// Stores `value` under `key` here and on the `k` peers closest to the key (`PUT_VALUE`).
    pub async fn put_record(&self, key: &[u8], value: Vec<u8>) -> Result<PutOutcome, KadError> {
        let record = KadRecord {
            key: key.to_vec(),
            value,
        };
        let (k, v) = (record.key.clone(), record.value.clone());
        self.ask(|reply| Command::PutLocal {
            key: k,
            value: v,
            reply,
        })
        .await??;
        self.store_at_closest(key, Request::PutValue { record })
            .await
    }

    /// Announces that we provide `key`: recorded here and sent (`ADD_PROVIDER`, with our listen
    /// addresses) to the `k` peers closest to the key.
    pub async fn provide(&self, key: &[u8]) -> Result<PutOutcome, KadError> {
        let k = key.to_vec();
        self.ask(|reply| Command::ProvideLocal { key: k, reply })
            .await??;
        let host = &self.inner.host;
        let me = KadPeer {
            id: host.peer_id(),
            addrs: host.listen_addrs(),
            connection: ConnectionType::Connected,
        };
        self.store_at_closest(
            key,
            Request::AddProvider {
                key: key.to_vec(),
                providers: vec![me],
            },
        )
        .await
    }

    async fn store_at_closest(&self, key: &[u8], request: Request) -> Result<PutOutcome, KadError> {
        let o = self.lookup(key.to_vec(), LookupKind::Closest).await?;
        let config = &self.inner.config;
        let host = &self.inner.host;
        let sends = o.result.closest.iter().map(|(peer, _)| {
            let request = &request;
            async move {
                let r = rpc::request(
                    host,
                    *peer,
                    &config.protocol,
                    request,
                    config.max_message_size,
                    config.query.k,
                    config.query.request_timeout,
                )
                .await;
                if let Err(e) = &r {
                    tracing::debug!(%peer, error = %e, kind = ?request.message_type(), "store request failed");
                }
                (*peer, r.is_ok())
            }
        });
        let results = tokio::select! {
            r = futures::future::join_all(sends) => r,
            _ = self.inner.cancel.cancelled() => return Err(KadError::ShutDown),
        };
        let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, ok)| *ok);
        Ok(PutOutcome {
            stored_at: ok.into_iter().map(|(p, _)| p).collect(),
            failed: failed.into_iter().map(|(p, _)| p).collect(),
            stats: stats(o.result),
        })
    }

    /// Finds providers of `key`: ours and those the peers around the key know, until `k` are
    /// found or the lookup ends.
    pub async fn providers(&self, key: &[u8]) -> Result<ProvidersFound, KadError> {
        let want = self.inner.config.query.k;
        let o = self
            .lookup(key.to_vec(), LookupKind::GetProviders { want })
            .await?;
        Ok(ProvidersFound {
            providers: o.providers,
            stats: stats(o.result),
        })
    }

    /// A snapshot of the routing table, closest bucket first.
    pub async fn routing_table(&self) -> Result<Vec<TableEntry>, KadError> {
        self.ask(|reply| Command::Table { reply }).await
    }

    /// Stops the node: the protocol is unregistered, queries in progress fail with
    /// [`KadError::ShutDown`], and every task is joined. Idempotent. The host keeps running.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

fn stats(r: QueryResult) -> QueryStats {
    QueryStats {
        hops: r.hops,
        requests: r.requests,
        failures: r.failures,
        learned: r.learned,
        timed_out: r.timed_out,
    }
}

/// Counts a peer's open inbound streams; the count drops with the guard.
struct InboundGuard {
    counts: Arc<Mutex<HashMap<PeerId, usize>>>,
    peer: PeerId,
}

impl Drop for InboundGuard {
    fn drop(&mut self) {
        let mut counts = self.counts.lock();
        if let Some(n) = counts.get_mut(&self.peer) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

struct Driver {
    host: Host,
    config: Arc<KadConfig>,
    local: PeerId,
    table: RoutingTable,
    records: RecordStore,
    providers: ProviderStore,
    rate: RequestRate,
    queries: HashMap<u64, Running>,
    next_query: u64,
    event_tx: mpsc::Sender<Event>,
    /// For stream tasks to reach the driver; weak, so that the driver's channel closes when the
    /// last `Kademlia` is gone.
    commands: mpsc::WeakSender<Command>,
    cancel: CancellationToken,
    tasks: TaskTracker,
    inbound_counts: Arc<Mutex<HashMap<PeerId, usize>>>,
    /// Peers whose liveness check is under way.
    checks: HashSet<PeerId>,
    warn: Arc<RateLimiter>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut events: mpsc::Receiver<Event>,
        mut host_events: broadcast::Receiver<HostEvent>,
        mut receiver: Option<StreamReceiver>,
    ) {
        let mut host_open = true;
        let mut last_prune = Instant::now();
        loop {
            let deadline = self
                .queries
                .values()
                .filter_map(|q| q.query.next_deadline())
                .min()
                .unwrap_or_else(|| Instant::now() + PRUNE_INTERVAL);
            tokio::select! {
                _ = self.cancel.cancelled() => break,
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.on_command(cmd),
                    None => break,
                },
                Some(ev) = events.recv() => self.on_event(ev),
                Some(s) = async {
                    match receiver.as_mut() {
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
                _ = tokio::time::sleep_until(deadline.into()) => {}
            }
            let now = Instant::now();
            let ids: Vec<u64> = self.queries.keys().copied().collect();
            for id in ids {
                self.drive(id, now);
            }
            if now.saturating_duration_since(last_prune) >= PRUNE_INTERVAL {
                self.records.prune(now);
                self.providers.prune(now);
                last_prune = now;
            }
        }
        // Unregister the protocol first, then fail what is waiting.
        drop(receiver);
        for (_, mut q) in self.queries.drain() {
            if let Some(reply) = q.reply.take() {
                let _ = reply.send(Err(KadError::ShutDown));
            }
        }
        tracing::debug!(peer = %self.local, "kademlia stopped");
    }

    fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let cancel = self.cancel.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                _ = cancel.cancelled() => {}
                _ = fut => {}
            }
        });
    }

    /// Puts a server-mode peer in the table; a full bucket's liveness check starts here.
    fn insert_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) {
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
            Command::Lookup { key, kind, reply } => self.start_lookup(key, kind, reply, now),
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
                let _ = reply.send(self.records.put(key, value, None, now));
            }
            Command::ProvideLocal { key, reply } => {
                let addrs = self.host.listen_addrs();
                let _ = reply.send(self.providers.add(key, self.local, addrs, true, now));
            }
            Command::Inbound {
                peer,
                request,
                reply,
            } => {
                let response = if self.rate.allow(peer, now) {
                    self.answer(peer, request, now)
                } else {
                    if self.warn.allow() {
                        tracing::warn!(%peer, "kad request rate exceeded; refused");
                    }
                    None
                };
                let _ = reply.send(response);
            }
        }
    }

    fn kad_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> KadPeer {
        let addrs = if addrs.is_empty() {
            self.host.peer_store().addrs(&peer)
        } else {
            addrs
        };
        KadPeer {
            id: peer,
            addrs,
            connection: if self.host.is_connected(&peer) {
                ConnectionType::Connected
            } else {
                ConnectionType::NotConnected
            },
        }
    }

    /// The `k` closest peers of the table to `key`, for an answer to `requester`.
    fn closer_peers(&self, key: &[u8], requester: &PeerId) -> Vec<KadPeer> {
        let k = self.config.routing.k;
        let target = Key::new(key);
        let mut out: Vec<KadPeer> = Vec::with_capacity(k + 1);
        // Findable outside any table: a target we are connected to, or whose addresses we
        // know, is named first (as go-libp2p-kad-dht does).
        if let Ok(target_peer) = PeerId::from_bytes(key)
            && target_peer != *requester
            && target_peer != self.local
            && !self.table.contains(&target_peer)
        {
            let addrs = self.host.peer_store().addrs(&target_peer);
            if !addrs.is_empty() {
                out.push(self.kad_peer(target_peer, addrs));
            }
        }
        for e in self.table.closest(&target, k + 1) {
            if out.len() >= k {
                break;
            }
            if e.peer != *requester {
                out.push(self.kad_peer(e.peer, e.addrs.clone()));
            }
        }
        out
    }

    fn answer(&mut self, peer: PeerId, request: Request, now: Instant) -> Option<Response> {
        tracing::trace!(%peer, kind = ?request.message_type(), "kad request");
        Some(match request {
            Request::FindNode { key } => Response {
                closer_peers: self.closer_peers(&key, &peer),
                ..Default::default()
            },
            Request::GetValue { key } => {
                let record = self.records.get(&key, now).map(|r| KadRecord {
                    key: r.key.clone(),
                    value: r.value.clone(),
                });
                Response {
                    closer_peers: self.closer_peers(&key, &peer),
                    record,
                    ..Default::default()
                }
            }
            Request::PutValue { record } => {
                match self
                    .records
                    .put(record.key.clone(), record.value.clone(), Some(peer), now)
                {
                    Ok(()) => Response {
                        record: Some(record),
                        ..Default::default()
                    },
                    Err(e) => {
                        tracing::debug!(%peer, error = %e, "PUT_VALUE refused");
                        return None;
                    }
                }
            }
            Request::GetProviders { key } => {
                let providers = self
                    .providers
                    .providers(&key, now)
                    .into_iter()
                    .map(|r| {
                        let addrs = if r.provider == self.local {
                            self.host.listen_addrs()
                        } else {
                            r.addrs
                        };
                        self.kad_peer(r.provider, addrs)
                    })
                    .collect();
                Response {
                    closer_peers: self.closer_peers(&key, &peer),
                    provider_peers: providers,
                    ..Default::default()
                }
            }
            Request::AddProvider { key, providers } => {
                let via = self.via(&peer);
                for p in providers.into_iter().filter(|p| p.id == peer) {
                    let addrs = self.clean_addrs(peer, p.addrs, via.as_ref());
                    if !addrs.is_empty() {
                        self.host
                            .peer_store()
                            .add_addrs(peer, addrs.clone(), RECENT_ADDR_TTL);
                    }
                    if let Err(e) = self.providers.add(key.clone(), peer, addrs, false, now) {
                        tracing::debug!(%peer, error = %e, "ADD_PROVIDER refused");
                    }
                }
                Response::default()
            }
            Request::Ping => Response::default(),
        })
    }

    fn via(&self, peer: &PeerId) -> Option<Multiaddr> {
        self.host
            .connections(Some(peer))
            .into_iter()
            .next()
            .map(|c| c.remote_addr)
    }

    /// The addresses of `peer` a remote told us worth keeping: a `/p2p/` suffix is stripped
    /// (and the address dropped if it names another peer), then address hygiene applies.
    fn clean_addrs(
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

    fn on_inbound_stream(&mut self, s: InboundStream) {
        let peer = s.peer;
        {
            let mut counts = self.inbound_counts.lock();
            let n = counts.entry(peer).or_default();
            if *n >= self.config.max_inbound_streams_per_peer {
                drop(counts);
                if self.warn.allow() {
                    tracing::warn!(%peer, limit = self.config.max_inbound_streams_per_peer, "too many kad streams from one peer; refused");
                }
                s.stream.reset();
                return;
            }
            *n += 1;
        }
        let guard = InboundGuard {
            counts: self.inbound_counts.clone(),
            peer,
        };
        let Some(commands) = self.commands.upgrade() else {
            s.stream.reset();
            return;
        };
        let config = self.config.clone();
        self.spawn(async move {
            let _guard = guard;
            serve_stream(s, commands, config).await;
        });
    }

    fn start_lookup(
        &mut self,
        key: Vec<u8>,
        kind: LookupKind,
        reply: Reply<LookupOutcome>,
        now: Instant,
    ) {
        let target = Key::new(&key);
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
                        let _ = reply.send(Ok(outcome));
                        return;
                    }
                }
                Request::GetValue { key: key.clone() }
            }
            LookupKind::GetProviders { .. } => {
                for r in self.providers.providers(&key, now) {
                    let addrs = if r.provider == self.local {
                        self.host.listen_addrs()
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
            let _ = reply.send(if empty_ok {
                Ok(outcome)
            } else {
                Err(KadError::NoKnownPeers)
            });
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
                reply: Some(reply),
                outcome,
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
                    if !running.outcome.providers.iter().any(|(q, _)| *q == p.id) {
                        running.outcome.providers.push((p.id, p.addrs));
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

/// Serves one inbound stream: any number of requests, each answered in turn, until the peer
/// closes it, goes idle, breaks the protocol or is refused.
async fn serve_stream(s: InboundStream, commands: mpsc::Sender<Command>, config: Arc<KadConfig>) {
    let peer = s.peer;
    let mut stream = s.stream;
    loop {
        let msg = match tokio::time::timeout(
            config.inbound_idle_timeout,
            rpc::read_message(&mut stream, config.max_message_size),
        )
        .await
        {
            Ok(Ok(Some(m))) => m,
            Ok(Ok(None)) => break,
            Ok(Err(e)) => {
                tracing::debug!(%peer, error = %e, "bad kad request; stream reset");
                stream.reset();
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "kad stream idle; closed");
                stream.reset();
                return;
            }
        };
        let request = match Request::from_proto(msg, config.routing.k) {
            Ok(r) => r,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "invalid kad request; stream reset");
                stream.reset();
                return;
            }
        };
        let ty = request.message_type();
        let key = match &request {
            Request::FindNode { key }
            | Request::GetValue { key }
            | Request::GetProviders { key }
            | Request::AddProvider { key, .. } => key.clone(),
            Request::PutValue { record } => record.key.clone(),
            Request::Ping => Vec::new(),
        };
        let expects_response = request.expects_response();
        let (tx, rx) = oneshot::channel();
        if commands
            .send(Command::Inbound {
                peer,
                request,
                reply: tx,
            })
            .await
            .is_err()
        {
            stream.reset();
            return;
        }
        match rx.await {
            Ok(Some(response)) => {
                if expects_response
                    && let Err(e) =
                        rpc::write_message(&mut stream, &response.to_proto(ty, &key)).await
                {
                    tracing::debug!(%peer, error = %e, "kad response failed");
                    return;
                }
            }
            Ok(None) | Err(_) => {
                stream.reset();
                return;
            }
        }
    }
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut stream).await;
}
