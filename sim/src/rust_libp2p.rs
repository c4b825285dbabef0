//! A simulated node of rust-libp2p: a `Swarm` with `libp2p-kad` (server mode, periodic
//! bootstrap off, as the scenario drives bootstraps itself) and identify over TCP + noise +
//! yamux, driven on its own task and asked through a channel. As rust-libp2p applications do,
//! it adds the listen addresses identify reports for peers announcing kad to its routing table
//! (the setup of the interop tests, `tests/tests/common/rust_kad.rs`).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use futures::StreamExt;
use libp2p::kad::{self, store::MemoryStore};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, noise, tcp, yamux};
use tokio::sync::{mpsc, oneshot};

use crate::proto::{LookupStats, PeerAddr};

/// The query timeout (ours is the same, see `ours.rs`).
const QUERY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a cold lookup waits for the connection to its target to close before it starts.
const CLOSE_WAIT: Duration = Duration::from_millis(500);
/// How often the swarm task starts cold lookups whose connection has closed.
const CLOSE_POLL: Duration = Duration::from_millis(10);
/// How long a command may wait for its answer from the swarm task.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(45);

#[derive(NetworkBehaviour)]
struct Behaviour {
    kad: kad::Behaviour<MemoryStore>,
    identify: identify::Behaviour,
}

/// What a lookup reports: `(ok, stats)`.
type Done = oneshot::Sender<(bool, LookupStats)>;

enum Cmd {
    Add(PeerId, Multiaddr),
    Bootstrap(Done),
    Find(PeerId, bool, Done),
    Table(oneshot::Sender<usize>),
}

enum Pending {
    Bootstrap(Done),
    Find(PeerId, Done),
}

/// One rust-libp2p node.
pub(crate) struct RustNode {
    peer: PeerId,
    addr: Multiaddr,
    cmds: mpsc::Sender<Cmd>,
    task: tokio::task::JoinHandle<()>,
}

impl RustNode {
    /// Starts a node with a new identity on 127.0.0.1 (a free port).
    pub(crate) async fn start() -> Result<RustNode> {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|key| {
                let id = key.public().to_peer_id();
                let mut config = kad::Config::new(kad::PROTOCOL_NAME);
                config.set_query_timeout(QUERY_TIMEOUT);
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
            .map_err(|e| anyhow!("rust-libp2p behaviour: {e}"))?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let addr = loop {
            match tokio::time::timeout_at(deadline, swarm.select_next_some()).await {
                Ok(SwarmEvent::NewListenAddr { address, .. }) => break address,
                Ok(_) => {}
                Err(_) => return Err(anyhow!("rust-libp2p node did not listen in 10 s")),
            }
        };
        let peer = *swarm.local_peer_id();
        let (cmds, rx) = mpsc::channel::<Cmd>(64);
        let task = tokio::spawn(drive(swarm, rx));
        Ok(RustNode {
            peer,
            addr,
            cmds,
            task,
        })
    }

    /// Its id and listen address.
    pub(crate) fn peer_addr(&self) -> PeerAddr {
        PeerAddr {
            peer: self.peer.to_base58(),
            addr: self.addr.to_string(),
        }
    }

    async fn send(&self, cmd: Cmd) -> Result<()> {
        self.cmds
            .send(cmd)
            .await
            .map_err(|_| anyhow!("rust-libp2p node task ended"))
    }

    async fn lookup(&self, make: impl FnOnce(Done) -> Cmd) -> Result<(bool, LookupStats)> {
        let (tx, rx) = oneshot::channel();
        self.send(make(tx)).await?;
        tokio::time::timeout(ANSWER_TIMEOUT, rx)
            .await
            .context("rust-libp2p query did not end")?
            .context("rust-libp2p node task ended")
    }

    /// Puts bootstrap peers in the routing table.
    pub(crate) async fn add_peers(&self, peers: &[PeerAddr]) -> Result<()> {
        for p in peers {
            let peer: PeerId = p.peer.parse().context("peer id")?;
            let addr: Multiaddr = p.addr.parse().context("address")?;
            self.send(Cmd::Add(peer, addr)).await?;
        }
        Ok(())
    }

    /// Bootstraps: `(ok, stats, error)`.
    pub(crate) async fn bootstrap(&self) -> Result<(bool, LookupStats, Option<String>)> {
        let (ok, stats) = self.lookup(Cmd::Bootstrap).await?;
        Ok((ok, stats, (!ok).then(|| "bootstrap failed".to_owned())))
    }

    /// Looks `target` up with `get_closest_peers` (rust-libp2p has no find-peer query; found
    /// means the target is among the closest peers that answered): `(found, stats, latency,
    /// error)`.
    pub(crate) async fn find_peer(
        &self,
        target: &str,
        cold: bool,
    ) -> Result<(bool, LookupStats, Duration, Option<String>)> {
        let target: PeerId = target.parse().context("target peer id")?;
        let started = Instant::now();
        let (ok, stats) = self.lookup(|tx| Cmd::Find(target, cold, tx)).await?;
        Ok((
            ok,
            stats,
            started.elapsed(),
            (!ok).then(|| "not found".to_owned()),
        ))
    }

    /// The routing table's size.
    pub(crate) async fn table_size(&self) -> Result<usize> {
        let (tx, rx) = oneshot::channel();
        self.send(Cmd::Table(tx)).await?;
        tokio::time::timeout(ANSWER_TIMEOUT, rx)
            .await
            .context("rust-libp2p table")?
            .context("rust-libp2p node task ended")
    }

    /// Stops the node: its swarm (and with it every connection and listener) is dropped.
    pub(crate) async fn stop(&self) {
        self.task.abort();
        // An aborted task ends at its next poll; wait (bounded) until it has.
        for _ in 0..1000 {
            if self.task.is_finished() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

fn stats(s: &kad::QueryStats) -> LookupStats {
    LookupStats {
        hops: None,
        requests: s.num_requests(),
        failures: s.num_failures(),
        timed_out: false,
    }
}

/// The swarm task: commands in, query results out. Ends when the node is stopped or every
/// command sender is gone.
async fn drive(mut swarm: libp2p::Swarm<Behaviour>, mut rx: mpsc::Receiver<Cmd>) {
    let mut pending: HashMap<kad::QueryId, Pending> = HashMap::new();
    // Cold lookups waiting for the connection to their target to close: (target, deadline, reply).
    let mut closing: Vec<(PeerId, Instant, Done)> = Vec::new();
    let mut poll = tokio::time::interval(CLOSE_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = poll.tick(), if !closing.is_empty() => {
                let now = Instant::now();
                let (ready, waiting): (Vec<_>, Vec<_>) = closing
                    .drain(..)
                    .partition(|(t, deadline, _)| !swarm.is_connected(t) || now >= *deadline);
                closing = waiting;
                for (target, _, tx) in ready {
                    let id = swarm.behaviour_mut().kad.get_closest_peers(target);
                    pending.insert(id, Pending::Find(target, tx));
                }
            }
            cmd = rx.recv() => {
                let Some(cmd) = cmd else { return };
                match cmd {
                    Cmd::Add(p, a) => {
                        swarm.behaviour_mut().kad.add_address(&p, a);
                    }
                    Cmd::Bootstrap(tx) => match swarm.behaviour_mut().kad.bootstrap() {
                        Ok(id) => { pending.insert(id, Pending::Bootstrap(tx)); }
                        Err(_) => { let _ = tx.send((false, LookupStats::default())); }
                    },
                    Cmd::Find(target, cold, tx) => {
                        if cold && swarm.is_connected(&target) {
                            // Like ours: the lookup starts once the connection is gone, so
                            // it does not race the closing connection.
                            let _ = swarm.disconnect_peer_id(target);
                            closing.push((target, Instant::now() + CLOSE_WAIT, tx));
                            continue;
                        }
                        let id = swarm.behaviour_mut().kad.get_closest_peers(target);
                        pending.insert(id, Pending::Find(target, tx));
                    }
                    Cmd::Table(tx) => {
                        let n = swarm
                            .behaviour_mut()
                            .kad
                            .kbuckets()
                            .map(|b| b.num_entries())
                            .sum();
                        let _ = tx.send(n);
                    }
                }
            }
            event = swarm.select_next_some() => match event {
                SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                    peer_id,
                    info,
                    ..
                })) if info.protocols.contains(&kad::PROTOCOL_NAME) => {
                    for a in info.listen_addrs {
                        swarm.behaviour_mut().kad.add_address(&peer_id, a);
                    }
                }
                SwarmEvent::Behaviour(BehaviourEvent::Kad(
                    kad::Event::OutboundQueryProgressed { id, result, stats: s, step },
                )) => on_progress(&mut swarm.behaviour_mut().kad, &mut pending, id, result, &s, step.last),
                _ => {}
            }
        }
    }
}

fn on_progress(
    kad: &mut kad::Behaviour<MemoryStore>,
    pending: &mut HashMap<kad::QueryId, Pending>,
    id: kad::QueryId,
    result: kad::QueryResult,
    s: &kad::QueryStats,
    last: bool,
) {
    if let (Some(Pending::Find(target, _)), kad::QueryResult::GetClosestPeers(r)) =
        (pending.get(&id), &result)
    {
        // A step that names the target ends the lookup, as ours ends when an answer names it.
        let peers = match r {
            Ok(ok) => &ok.peers,
            Err(kad::GetClosestPeersError::Timeout { peers, .. }) => peers,
        };
        if peers.iter().any(|p| p.peer_id == *target)
            && let Some(Pending::Find(_, tx)) = pending.remove(&id)
        {
            if let Some(mut q) = kad.query_mut(&id) {
                q.finish();
            }
            let _ = tx.send((true, stats(s)));
            return;
        }
    }
    if !last {
        return;
    }
    let Some(p) = pending.remove(&id) else {
        return;
    };
    let timed_out = matches!(
        result,
        kad::QueryResult::GetClosestPeers(Err(_)) | kad::QueryResult::Bootstrap(Err(_))
    );
    let mut st = stats(s);
    st.timed_out = timed_out;
    match p {
        Pending::Bootstrap(tx) => {
            let _ = tx.send((!timed_out, st));
        }
        Pending::Find(_, tx) => {
            let _ = tx.send((false, st));
        }
    }
}
