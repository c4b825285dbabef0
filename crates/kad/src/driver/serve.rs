//! Serving other peers: the per-peer bound on inbound streams, the answers to their requests,
//! and the task that serves one inbound stream.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use p2pnet_host::{InboundStream, Multiaddr, PeerId, RECENT_ADDR_TTL};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};

use super::task::Driver;
use super::{Command, announced_addrs};
use crate::config::KadConfig;
use crate::key::Key;
use crate::message::{ConnectionType, KadPeer, KadRecord, Request, Response};
use crate::metrics::Counters;
use crate::rpc;

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

impl Driver {
    pub(super) fn on_inbound_stream(&mut self, s: InboundStream) {
        let peer = s.peer;
        {
            let mut counts = self.inbound_counts.lock();
            let n = counts.entry(peer).or_default();
            if *n >= self.config.max_inbound_streams_per_peer {
                drop(counts);
                self.shared.counters.refused_stream_cap();
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
        let counters = self.shared.counters.clone();
        self.spawn(async move {
            let _guard = guard;
            serve_stream(s, commands, config, counters).await;
        });
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

    pub(super) fn answer(
        &mut self,
        peer: PeerId,
        request: Request,
        now: Instant,
    ) -> Option<Response> {
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
                            announced_addrs(&self.host, &self.config)
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
}

/// Serves one inbound stream: any number of requests, each answered in turn, until the peer
/// closes it, goes idle, breaks the protocol or is refused.
async fn serve_stream(
    s: InboundStream,
    commands: mpsc::Sender<Command>,
    config: Arc<KadConfig>,
    counters: Arc<Counters>,
) {
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
                counters.refused_malformed();
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
                counters.refused_malformed();
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
