//! A rust-libp2p Kademlia node (Swarm + kad in server mode + identify, over TCP/noise/yamux)
//! driven on its own task, answering the interop tests' requests through a channel. Like
//! rust-libp2p applications do, it adds the listen addresses that identify reports for peers
//! announcing the kad protocol to its routing table.
#![allow(dead_code, unreachable_pub)]

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub kad: kad::Behaviour<MemoryStore>,
    pub identify: identify::Behaviour,
}

type RecordReply = oneshot::Sender<Option<(Option<PeerId>, Vec<u8>)>>;

enum Cmd {
    AddAddress(PeerId, Multiaddr),
    Closest(PeerId, oneshot::Sender<Vec<kad::PeerInfo>>),
    Put(Vec<u8>, Vec<u8>, oneshot::Sender<bool>),
    Get(Vec<u8>, RecordReply),
    Provide(Vec<u8>, oneshot::Sender<bool>),
    Providers(Vec<u8>, oneshot::Sender<HashSet<PeerId>>),
    RoutingTable(oneshot::Sender<Vec<PeerId>>),
}

enum Pending {
    Closest(oneshot::Sender<Vec<kad::PeerInfo>>),
    Put(oneshot::Sender<bool>),
    Get(Option<RecordReply>),
    Provide(oneshot::Sender<bool>),
    Providers(Option<oneshot::Sender<HashSet<PeerId>>>),
}

pub struct RustKad {
    pub peer_id: PeerId,
    pub listen_addr: Multiaddr,
    cmds: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

const TIMEOUT: Duration = Duration::from_secs(20);

impl RustKad {
    pub async fn start() -> RustKad {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let mut config = kad::Config::new(kad::PROTOCOL_NAME);
                config.set_query_timeout(Duration::from_secs(15));
                config.set_periodic_bootstrap_interval(None);
                let mut kad = kad::Behaviour::with_config(id, MemoryStore::new(id), config);
                kad.set_mode(Some(kad::Mode::Server));
                Behaviour {
                    kad,
                    identify: identify::Behaviour::new(identify::Config::new(
                        "ipfs/0.1.0".into(),
                        key.public(),
                    )),
                }
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let listen_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let peer_id = *swarm.local_peer_id();
        let (cmds, mut rx) = mpsc::channel::<Cmd>(16);
        let task = tokio::spawn(async move {
            let mut pending: HashMap<kad::QueryId, Pending> = HashMap::new();
            loop {
                tokio::select! {
                    cmd = rx.recv() => {
                        let Some(cmd) = cmd else { return };
                        let kad = &mut swarm.behaviour_mut().kad;
                        match cmd {
                            Cmd::AddAddress(p, a) => { kad.add_address(&p, a); }
                            Cmd::Closest(p, tx) => { pending.insert(kad.get_closest_peers(p), Pending::Closest(tx)); }
                            Cmd::Put(k, v, tx) => match kad.put_record(kad::Record::new(k, v), kad::Quorum::One) {
                                Ok(id) => { pending.insert(id, Pending::Put(tx)); }
                                Err(_) => { let _ = tx.send(false); }
                            },
                            Cmd::Get(k, tx) => { pending.insert(kad.get_record(kad::RecordKey::new(&k)), Pending::Get(Some(tx))); }
                            Cmd::Provide(k, tx) => match kad.start_providing(kad::RecordKey::new(&k)) {
                                Ok(id) => { pending.insert(id, Pending::Provide(tx)); }
                                Err(_) => { let _ = tx.send(false); }
                            },
                            Cmd::Providers(k, tx) => { pending.insert(kad.get_providers(kad::RecordKey::new(&k)), Pending::Providers(Some(tx))); }
                            Cmd::RoutingTable(tx) => {
                                let peers = kad.kbuckets().flat_map(|b| b.iter().map(|e| *e.node.key.preimage()).collect::<Vec<_>>()).collect();
                                let _ = tx.send(peers);
                            }
                        }
                    }
                    event = swarm.select_next_some() => match event {
                        SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }))
                            if info.protocols.contains(&kad::PROTOCOL_NAME) =>
                        {
                            for a in info.listen_addrs {
                                swarm.behaviour_mut().kad.add_address(&peer_id, a);
                            }
                        }
                        SwarmEvent::Behaviour(BehaviourEvent::Kad(kad::Event::OutboundQueryProgressed { id, result, step, .. })) => {
                            on_progress(&mut pending, id, result, step.last);
                        }
                        _ => {}
                    }
                }
            }
        });
        RustKad {
            peer_id,
            listen_addr,
            cmds,
            task,
        }
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Cmd) -> T {
        let (tx, rx) = oneshot::channel();
        self.cmds.send(make(tx)).await.unwrap();
        tokio::time::timeout(TIMEOUT, rx)
            .await
            .expect("rust-libp2p query timed out")
            .expect("rust-libp2p task ended")
    }

    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) {
        self.cmds.send(Cmd::AddAddress(peer, addr)).await.unwrap();
    }

    pub async fn closest_peers(&self, key: PeerId) -> Vec<kad::PeerInfo> {
        self.ask(|tx| Cmd::Closest(key, tx)).await
    }

    pub async fn put_record(&self, key: &[u8], value: &[u8]) -> bool {
        self.ask(|tx| Cmd::Put(key.to_vec(), value.to_vec(), tx))
            .await
    }

    /// The first record found: the peer that had it (`None`: our own store) and its value.
    pub async fn get_record(&self, key: &[u8]) -> Option<(Option<PeerId>, Vec<u8>)> {
        self.ask(|tx| Cmd::Get(key.to_vec(), tx)).await
    }

    pub async fn provide(&self, key: &[u8]) -> bool {
        self.ask(|tx| Cmd::Provide(key.to_vec(), tx)).await
    }

    pub async fn providers(&self, key: &[u8]) -> HashSet<PeerId> {
        self.ask(|tx| Cmd::Providers(key.to_vec(), tx)).await
    }

    pub async fn routing_table(&self) -> Vec<PeerId> {
        self.ask(Cmd::RoutingTable).await
    }

    pub fn stop(self) {
        self.task.abort();
    }
}

fn on_progress(
    pending: &mut HashMap<kad::QueryId, Pending>,
    id: kad::QueryId,
    result: kad::QueryResult,
    last: bool,
) {
    match &result {
        kad::QueryResult::GetRecord(Ok(kad::GetRecordOk::FoundRecord(r))) => {
            if let Some(Pending::Get(tx)) = pending.get_mut(&id)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(Some((r.peer, r.record.value.clone())));
            }
        }
        kad::QueryResult::GetProviders(Ok(kad::GetProvidersOk::FoundProviders {
            providers,
            ..
        })) => {
            if let Some(Pending::Providers(tx)) = pending.get_mut(&id)
                && let Some(tx) = tx.take()
            {
                let _ = tx.send(providers.clone());
            }
        }
        _ => {}
    }
    if !last {
        return;
    }
    let Some(p) = pending.remove(&id) else {
        return;
    };
    match (p, result) {
        (Pending::Closest(tx), kad::QueryResult::GetClosestPeers(r)) => {
            let peers = match r {
                Ok(ok) => ok.peers,
                Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
            };
            let _ = tx.send(peers);
        }
        (Pending::Put(tx), kad::QueryResult::PutRecord(r)) => {
            let _ = tx.send(r.is_ok());
        }
        (Pending::Provide(tx), kad::QueryResult::StartProviding(r)) => {
            let _ = tx.send(r.is_ok());
        }
        (Pending::Get(Some(tx)), _) => {
            let _ = tx.send(None);
        }
        (Pending::Providers(Some(tx)), _) => {
            let _ = tx.send(HashSet::new());
        }
        _ => {}
    }
}
