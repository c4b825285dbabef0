//! A rust-libp2p peer over QUIC (Swarm + libp2p-quic + libp2p-stream, ping and identify, with
//! their defaults) driven on its own task, for the QUIC interoperability tests. The behaviour is
//! `rust_peer`'s; the reports carry what the QUIC tests check (addresses, dial errors).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, identify, ping};
use tokio::sync::mpsc;

use super::rust_peer::{Behaviour, BehaviourEvent};

/// What the peer's task reports.
#[derive(Debug)]
pub enum Report {
    Connected {
        peer: PeerId,
        /// The address of the other end, as rust-libp2p sees it.
        remote: Multiaddr,
    },
    Identified {
        peer: PeerId,
        agent_version: String,
        protocols: Vec<String>,
        /// The addresses the peer says it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
    Pinged {
        peer: PeerId,
        ok: bool,
    },
    DialFailed {
        error: String,
    },
    Closed {
        peer: PeerId,
    },
}

enum Command {
    Dial(Multiaddr),
    Disconnect(PeerId),
}

pub struct QuicPeer {
    pub peer_id: PeerId,
    /// Where it listens: `/ip4/127.0.0.1/udp/<port>/quic-v1`.
    pub listen_addr: Multiaddr,
    pub control: libp2p_stream::Control,
    pub reports: mpsc::Receiver<Report>,
    commands: mpsc::Sender<Command>,
    task: tokio::task::JoinHandle<()>,
}

impl QuicPeer {
    pub async fn start() -> QuicPeer {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_quic()
            .with_behaviour(|key| Behaviour {
                stream: libp2p_stream::Behaviour::new(),
                ping: ping::Behaviour::new(
                    ping::Config::new().with_interval(Duration::from_millis(200)),
                ),
                identify: identify::Behaviour::new(identify::Config::new(
                    "ipfs/0.1.0".into(),
                    key.public(),
                )),
            })
            .expect("behaviour")
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(60)))
            .build();
        swarm
            .listen_on("/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap())
            .unwrap();
        let listen_addr = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                    return address;
                }
            }
        })
        .await
        .expect("rust-libp2p listens on QUIC in time");
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (report_tx, reports) = mpsc::channel(256);
        let (commands, mut command_rx) = mpsc::channel::<Command>(8);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    command = command_rx.recv() => match command {
                        Some(Command::Dial(addr)) => {
                            if let Err(e) = swarm.dial(addr) {
                                let _ = report_tx.try_send(Report::DialFailed { error: e.to_string() });
                            }
                        }
                        Some(Command::Disconnect(peer)) => {
                            let _ = swarm.disconnect_peer_id(peer);
                        }
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        let report = match event {
                            SwarmEvent::ConnectionEstablished { peer_id, endpoint, .. } => Some(Report::Connected {
                                peer: peer_id,
                                remote: endpoint.get_remote_address().clone(),
                            }),
                            SwarmEvent::ConnectionClosed { peer_id, .. } => Some(Report::Closed { peer: peer_id }),
                            SwarmEvent::OutgoingConnectionError { error, .. } => Some(Report::DialFailed { error: error.to_string() }),
                            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                                Some(Report::Identified {
                                    peer: peer_id,
                                    agent_version: info.agent_version,
                                    protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
                                    listen_addrs: info.listen_addrs,
                                })
                            }
                            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) => {
                                Some(Report::Pinged { peer, ok: result.is_ok() })
                            }
                            _ => None,
                        };
                        if let Some(report) = report {
                            let _ = report_tx.try_send(report);
                        }
                    }
                }
            }
        });
        QuicPeer {
            peer_id,
            listen_addr,
            control,
            reports,
            commands,
            task,
        }
    }

    /// Asks the swarm to dial `addr`; a failure comes as [`Report::DialFailed`].
    pub async fn dial(&self, addr: Multiaddr) {
        self.commands.send(Command::Dial(addr)).await.unwrap();
    }

    /// Asks the swarm to close its connections to `peer` (streams still held on its side end
    /// with them).
    pub async fn disconnect(&self, peer: PeerId) {
        self.commands.send(Command::Disconnect(peer)).await.unwrap();
    }

    /// Waits (bounded) for a report matching `pred`, skipping others.
    pub async fn wait_for(&mut self, mut pred: impl FnMut(&Report) -> bool) -> Report {
        tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let r = self.reports.recv().await.expect("rust peer task ended");
                if pred(&r) {
                    return r;
                }
            }
        })
        .await
        .expect("timed out waiting for the rust-libp2p peer")
    }

    /// Ends the peer at once, as if its process died: the swarm and its connections are dropped
    /// (quinn then closes each connection).
    pub fn stop(self) {
        self.task.abort();
    }
}
