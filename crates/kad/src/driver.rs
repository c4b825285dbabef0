//! The driver: one task owns the routing table, the stores and the running queries; it learns
//! peers from the host's identify events and from answers, serves inbound streams through
//! per-stream tasks, and sends requests on tasks of their own. A maintenance tick of the same
//! task refreshes buckets, republishes what we published, drops expired entries, saves the route
//! cache and, in [`Mode::Auto`], switches between server and client. Everything it spawns is
//! joined by [`Kademlia::shutdown`].

mod maintenance;
mod serve;
mod task;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};

use p2pnet_host::{Host, Multiaddr, PeerId};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::addrs::keep_learned_addr;
use crate::config::{KadConfig, Mode};
use crate::error::KadError;
use crate::message::{ConnectionType, KadPeer, KadRecord, MAX_ADDRS_PER_PEER, Request};
use crate::metrics::{Counters, KadMetrics, QueryEnd, QueryKind};
use crate::outcome::{
    ClosestPeers, FoundRecord, PeerFound, ProvidersFound, PutOutcome, QueryStats, RecordsFound,
    TableEntry,
};
use crate::query::QueryResult;
use crate::routing::Insert;
use crate::rpc;

use task::Driver;

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

/// A query slot under [`KadConfig::max_concurrent_queries`], shared by the caller and the
/// lookup it runs: freed when both are done.
type Slot = Arc<OwnedSemaphorePermit>;

enum Command {
    Lookup {
        key: Vec<u8>,
        kind: LookupKind,
        slot: Slot,
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
    Unpublish {
        key: Vec<u8>,
        record: bool,
        reply: oneshot::Sender<bool>,
    },
    Inbound {
        peer: PeerId,
        request: Request,
        reply: oneshot::Sender<Option<Response>>,
    },
}

use crate::message::Response;

/// The NAT verdict as [`Kademlia::set_public_address_confirmed`] gave it.
const VERDICT_NONE: u8 = 0;
const VERDICT_PRIVATE: u8 = 1;
const VERDICT_PUBLIC: u8 = 2;

/// What the handles, the driver and the tasks it spawns share.
#[derive(Clone)]
struct Shared {
    host: Host,
    config: Arc<KadConfig>,
    cancel: CancellationToken,
    counters: Arc<Counters>,
    slots: Arc<Semaphore>,
    /// One of the `VERDICT_*` values.
    verdict: Arc<AtomicU8>,
    /// Whether the protocol is registered (server mode) right now.
    server: Arc<AtomicBool>,
    /// Wakes the driver to re-evaluate its mode.
    wake: Arc<Notify>,
}

/// The operations of [`Kademlia`], on a command channel: the handles run them, and so do the
/// driver's republishing tasks.
#[derive(Clone)]
struct Ops {
    shared: Shared,
    commands: mpsc::Sender<Command>,
}

/// A Kademlia DHT node on a [`Host`]: peer routing, records and provider records, wire-compatible
/// with libp2p's kad-dht. Cheap to clone; every clone drives the same node.
#[derive(Clone)]
pub struct Kademlia {
    inner: Arc<Inner>,
}

struct Inner {
    ops: Ops,
    tasks: TaskTracker,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ops.shared.cancel.cancel();
    }
}

impl std::fmt::Debug for Kademlia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = &self.inner.ops.shared;
        f.debug_struct("Kademlia")
            .field("peer", &s.host.peer_id())
            .field("protocol", &s.config.protocol)
            .field("mode", &s.config.mode)
            .field("server", &s.server.load(Ordering::Relaxed))
            .finish()
    }
}

impl Kademlia {
    /// Starts Kademlia on `host`. In [`Mode::Server`] it registers the protocol (so identify
    /// announces it; fails with [`p2pnet_host::HostError::ProtocolTaken`] if something else
    /// serves it); in [`Mode::Client`] it only asks; in [`Mode::Auto`] it registers the
    /// protocol once the node looks reachable (see [`Mode::Auto`]). Peers already connected and
    /// identified as servers are put in the routing table, and so are the peers of the route
    /// cache ([`KadConfig::route_cache`]) if there is one. Must be called within a tokio
    /// runtime.
    pub fn new(host: Host, config: KadConfig) -> Result<Kademlia, KadError> {
        p2pnet_host::validate_protocol(&config.protocol)?;
        let receiver = match config.mode {
            Mode::Server => {
                Some(host.accept_streams(config.protocol.clone(), task::INBOUND_CAPACITY)?)
            }
            Mode::Client | Mode::Auto => None,
        };
        let config = Arc::new(config);
        let (commands, command_rx) = mpsc::channel(task::COMMAND_CAPACITY);
        let shared = Shared {
            host: host.clone(),
            config: config.clone(),
            cancel: CancellationToken::new(),
            counters: Arc::default(),
            slots: Arc::new(Semaphore::new(config.max_concurrent_queries.max(1))),
            verdict: Arc::new(AtomicU8::new(VERDICT_NONE)),
            server: Arc::new(AtomicBool::new(receiver.is_some())),
            wake: Arc::new(Notify::new()),
        };
        shared.counters.set_server(receiver.is_some());
        let tasks = TaskTracker::new();
        let driver = Driver::new(
            shared.clone(),
            commands.downgrade(),
            tasks.clone(),
            receiver,
        );
        tasks.spawn(driver.run(command_rx));
        tracing::info!(peer = %host.peer_id(), protocol = %config.protocol, mode = ?config.mode, "kademlia started");
        Ok(Kademlia {
            inner: Arc::new(Inner {
                ops: Ops { shared, commands },
                tasks,
            }),
        })
    }

    /// The host this node runs on.
    pub fn host(&self) -> &Host {
        &self.inner.ops.shared.host
    }

    /// The configuration.
    pub fn config(&self) -> &KadConfig {
        &self.inner.ops.shared.config
    }

    /// Whether the node serves the protocol right now (server mode, or [`Mode::Auto`] that
    /// became one).
    pub fn is_server(&self) -> bool {
        self.inner.ops.shared.server.load(Ordering::Relaxed)
    }

    /// Gives the NAT verdict for [`Mode::Auto`]: whether the node has a confirmed public
    /// address. From now on it decides the mode instead of the listen addresses; the switch
    /// happens at once (the protocol is registered or unregistered). No effect in the other
    /// modes.
    pub fn set_public_address_confirmed(&self, confirmed: bool) {
        let s = &self.inner.ops.shared;
        let v = if confirmed {
            VERDICT_PUBLIC
        } else {
            VERDICT_PRIVATE
        };
        s.verdict.store(v, Ordering::Relaxed);
        tracing::debug!(confirmed, "public address verdict");
        s.wake.notify_one();
    }

    /// A snapshot of the node's counters and table sizes; cheap, does not wait for the driver.
    pub fn metrics(&self) -> KadMetrics {
        self.inner.ops.shared.counters.snapshot()
    }

    /// Adds a peer known to be a kad server (a bootstrap node) with its addresses, to the
    /// routing table and the host's peer store. Returns what the table did.
    pub async fn add_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<Insert, KadError> {
        self.inner
            .ops
            .ask(|reply| Command::AddPeer { peer, addrs, reply })
            .await
    }

    /// Looks up our own id: fills the routing table with the peers around us and makes us
    /// known to them. Needs at least one peer in the table (see [`Kademlia::add_peer`]), a
    /// connected peer that announced our protocol, or a route cache. The first call also
    /// starts the periodic bucket refresh ([`KadConfig::refresh_interval`]).
    pub async fn bootstrap(&self) -> Result<ClosestPeers, KadError> {
        let local = self.host().peer_id();
        self.closest_peers(&local.to_bytes()).await
    }

    /// The peers closest to `key` (any bytes: a peer id's bytes for a peer), found by an
    /// iterative `FIND_NODE` lookup.
    pub async fn closest_peers(&self, key: &[u8]) -> Result<ClosestPeers, KadError> {
        let ops = &self.inner.ops;
        ops.tracked(QueryKind::FindNode, async {
            let slot = ops.slot().await?;
            let o = ops.lookup(key.to_vec(), LookupKind::Closest, slot).await?;
            let end = end_of(!o.result.closest.is_empty(), o.result.timed_out);
            let r = ClosestPeers {
                peers: o.result.closest.clone(),
                stats: stats(o.result),
            };
            Ok((r, end))
        })
        .await
    }

    /// Finds `peer`'s addresses: at once if we are connected to it, otherwise by a lookup that
    /// ends as soon as some answer names it with addresses. The addresses go to the host's peer
    /// store, so `host.connect(peer)` works next.
    pub async fn find_peer(&self, peer: PeerId) -> Result<PeerFound, KadError> {
        let ops = &self.inner.ops;
        let host = self.host();
        ops.tracked(QueryKind::FindNode, async {
            if host.is_connected(&peer) {
                let found = PeerFound {
                    peer,
                    addrs: host.peer_store().addrs(&peer),
                    stats: QueryStats::default(),
                };
                return Ok((found, QueryEnd::Succeeded));
            }
            let slot = ops.slot().await?;
            let o = ops
                .lookup(peer.to_bytes(), LookupKind::FindPeer(peer), slot)
                .await?;
            match o.found {
                Some((peer, addrs)) => Ok((
                    PeerFound {
                        peer,
                        addrs,
                        stats: stats(o.result),
                    },
                    QueryEnd::Succeeded,
                )),
                None => Err((KadError::PeerNotFound(peer), o.result.timed_out)),
            }
        })
        .await
    }

    /// Gets the value of `key`: ours if we store it, and those of other peers until `quorum`
    /// values are found (or the lookup runs out of peers). Fails with
    /// [`KadError::RecordNotFound`] when none is found.
    pub async fn get_record(&self, key: &[u8], quorum: usize) -> Result<RecordsFound, KadError> {
        let ops = &self.inner.ops;
        ops.tracked(QueryKind::GetValue, async {
            let slot = ops.slot().await?;
            let kind = LookupKind::GetValue {
                quorum: quorum.max(1),
            };
            let o = ops.lookup(key.to_vec(), kind, slot).await?;
            if o.records.is_empty() {
                return Err((KadError::RecordNotFound, o.result.timed_out));
            }
            let mut records = o.records;
            let values: Vec<&[u8]> = records.iter().map(|r| r.value.as_slice()).collect();
            let best = self
                .config()
                .validator
                .select(key, &values)
                .min(records.len() - 1);
            records.swap(0, best);
            let found = RecordsFound {
                records,
                stats: stats(o.result),
            };
            Ok((found, QueryEnd::Succeeded))
        })
        .await
    }

    /// Stores `value` under `key` here and on the `k` peers closest to the key (`PUT_VALUE`).
    /// We are its publisher: it is put again every [`KadConfig::record_republish_interval`]
    /// until [`Kademlia::remove_record`].
    pub async fn put_record(&self, key: &[u8], value: Vec<u8>) -> Result<PutOutcome, KadError> {
        let ops = &self.inner.ops;
        let (k, v) = (key.to_vec(), value.clone());
        ops.ask(|reply| Command::PutLocal {
            key: k,
            value: v,
            reply,
        })
        .await??;
        ops.put_remote(key, value).await
    }

    /// Stops republishing our record of `key` and drops it from our store (copies other peers
    /// hold expire on their own). Returns whether we had published it.
    pub async fn remove_record(&self, key: &[u8]) -> Result<bool, KadError> {
        let key = key.to_vec();
        self.inner
            .ops
            .ask(|reply| Command::Unpublish {
                key,
                record: true,
                reply,
            })
            .await
    }

    /// Announces that we provide `key`: recorded here and sent (`ADD_PROVIDER`, with our listen
    /// addresses and the observed addresses that pass address hygiene) to the `k` peers closest
    /// to the key. Announced again every [`KadConfig::provider_republish_interval`] until
    /// [`Kademlia::stop_providing`].
    pub async fn provide(&self, key: &[u8]) -> Result<PutOutcome, KadError> {
        let ops = &self.inner.ops;
        let k = key.to_vec();
        ops.ask(|reply| Command::ProvideLocal { key: k, reply })
            .await??;
        ops.announce(key).await
    }

    /// Stops announcing `key` and drops our provider record of it (records other peers hold
    /// expire on their own). Returns whether we provided it.
    pub async fn stop_providing(&self, key: &[u8]) -> Result<bool, KadError> {
        let key = key.to_vec();
        self.inner
            .ops
            .ask(|reply| Command::Unpublish {
                key,
                record: false,
                reply,
            })
            .await
    }

    /// Finds providers of `key`: ours and those the peers around the key know, until `k` are
    /// found or the lookup ends.
    pub async fn providers(&self, key: &[u8]) -> Result<ProvidersFound, KadError> {
        let ops = &self.inner.ops;
        let want = self.config().query.k;
        ops.tracked(QueryKind::GetProviders, async {
            let slot = ops.slot().await?;
            let o = ops
                .lookup(key.to_vec(), LookupKind::GetProviders { want }, slot)
                .await?;
            let end = end_of(!o.providers.is_empty(), o.result.timed_out);
            // A provider record may come without addresses (rust-libp2p announces only
            // confirmed external ones): the host may know some (connected, identified).
            let store = self.host().peer_store();
            let providers = o
                .providers
                .into_iter()
                .map(|(peer, addrs)| {
                    if addrs.is_empty() {
                        (peer, store.addrs(&peer))
                    } else {
                        (peer, addrs)
                    }
                })
                .collect();
            let found = ProvidersFound {
                providers,
                stats: stats(o.result),
            };
            Ok((found, end))
        })
        .await
    }

    /// A snapshot of the routing table, closest bucket first.
    pub async fn routing_table(&self) -> Result<Vec<TableEntry>, KadError> {
        self.inner.ops.ask(|reply| Command::Table { reply }).await
    }

    /// Stops the node: the protocol is unregistered, queries in progress fail with
    /// [`KadError::ShutDown`], the route cache is written, and every task is joined.
    /// Idempotent. The host keeps running.
    pub async fn shutdown(&self) {
        self.inner.ops.shared.cancel.cancel();
        self.inner.tasks.close();
        self.inner.tasks.wait().await;
    }
}

/// How a query that found (or did not find) what it looked for ended.
fn end_of(found: bool, timed_out: bool) -> QueryEnd {
    if found {
        QueryEnd::Succeeded
    } else if timed_out {
        QueryEnd::TimedOut
    } else {
        QueryEnd::Failed
    }
}

/// An error of a tracked query, with whether the query timeout cut it short.
type TrackedError = (KadError, bool);

impl From<KadError> for TrackedError {
    fn from(e: KadError) -> Self {
        (e, false)
    }
}

impl Ops {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, KadError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| KadError::ShutDown)?;
        rx.await.map_err(|_| KadError::ShutDown)
    }

    /// Runs a query, counting it in the metrics by `kind` and how it ended.
    async fn tracked<T>(
        &self,
        kind: QueryKind,
        fut: impl Future<Output = Result<(T, QueryEnd), TrackedError>>,
    ) -> Result<T, KadError> {
        let counters = &self.shared.counters;
        counters.query_started(kind);
        match fut.await {
            Ok((v, end)) => {
                counters.query_ended(kind, end);
                Ok(v)
            }
            Err((e, timed_out)) => {
                counters.query_ended(kind, end_of(false, timed_out));
                Err(e)
            }
        }
    }

    /// A query slot: at once if one is free, otherwise after the queries before us.
    async fn slot(&self) -> Result<Slot, KadError> {
        if let Ok(p) = self.shared.slots.clone().try_acquire_owned() {
            return Ok(Arc::new(p));
        }
        let counters = &self.shared.counters;
        counters.waiting(1);
        let r = tokio::select! {
            p = self.shared.slots.clone().acquire_owned() => p.map_err(|_| KadError::ShutDown),
            _ = self.shared.cancel.cancelled() => Err(KadError::ShutDown),
        };
        counters.waiting(-1);
        r.map(Arc::new)
    }

    async fn lookup(
        &self,
        key: Vec<u8>,
        kind: LookupKind,
        slot: Slot,
    ) -> Result<LookupOutcome, KadError> {
        self.ask(|reply| Command::Lookup {
            key,
            kind,
            slot,
            reply,
        })
        .await?
    }

    /// Puts our record at the `k` closest peers (also used to republish it).
    async fn put_remote(&self, key: &[u8], value: Vec<u8>) -> Result<PutOutcome, KadError> {
        let record = KadRecord {
            key: key.to_vec(),
            value,
        };
        self.tracked(QueryKind::PutValue, async {
            let r = self
                .store_at_closest(key, Request::PutValue { record })
                .await?;
            let end = end_of(!r.stored_at.is_empty(), r.stats.timed_out);
            Ok((r, end))
        })
        .await
    }

    /// Announces us as a provider of `key` to the `k` closest peers (also used to re-announce).
    async fn announce(&self, key: &[u8]) -> Result<PutOutcome, KadError> {
        let host = &self.shared.host;
        let me = KadPeer {
            id: host.peer_id(),
            addrs: announced_addrs(host, &self.shared.config),
            connection: ConnectionType::Connected,
        };
        let request = Request::AddProvider {
            key: key.to_vec(),
            providers: vec![me],
        };
        self.tracked(QueryKind::AddProvider, async {
            let r = self.store_at_closest(key, request).await?;
            let end = end_of(!r.stored_at.is_empty(), r.stats.timed_out);
            Ok((r, end))
        })
        .await
    }

    async fn store_at_closest(&self, key: &[u8], request: Request) -> Result<PutOutcome, KadError> {
        let slot = self.slot().await?;
        let o = self
            .lookup(key.to_vec(), LookupKind::Closest, slot.clone())
            .await?;
        let config = &self.shared.config;
        let host = &self.shared.host;
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
            _ = self.shared.cancel.cancelled() => return Err(KadError::ShutDown),
        };
        drop(slot);
        let (ok, failed): (Vec<_>, Vec<_>) = results.into_iter().partition(|(_, ok)| *ok);
        Ok(PutOutcome {
            stored_at: ok.into_iter().map(|(p, _)| p).collect(),
            failed: failed.into_iter().map(|(p, _)| p).collect(),
            stats: stats(o.result),
        })
    }
}

/// The addresses we announce as a provider: our listen addresses, then the addresses peers
/// observed us at that pass address hygiene (public ones, or any with
/// [`KadConfig::accept_private_addrs`]); without `/p2p/`, no duplicates, at most 32.
fn announced_addrs(host: &Host, config: &KadConfig) -> Vec<Multiaddr> {
    let allow = config.accept_private_addrs || host.config().accept_private_learned_addrs;
    let mut out: Vec<Multiaddr> = Vec::new();
    let observed = host
        .observed_addrs()
        .into_iter()
        .map(|a| p2pnet_host::without_p2p(&a).0)
        .filter(|a| keep_learned_addr(a, None, allow));
    for a in host.listen_addrs().into_iter().chain(observed) {
        if out.len() >= MAX_ADDRS_PER_PEER {
            break;
        }
        if !out.contains(&a) {
            out.push(a);
        }
    }
    out
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
