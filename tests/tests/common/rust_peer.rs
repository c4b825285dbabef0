//! A rust-libp2p peer (Swarm + libp2p-stream + ping + identify over TCP/noise/yamux, all with
//! their defaults) driven on its own task, for interoperability tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{Multiaddr, PeerId, identify, noise, ping, tcp, yamux};
use tokio::sync::mpsc;

#[derive(NetworkBehaviour)]
pub struct Behaviour {
    pub stream: libp2p_stream::Behaviour,
    pub ping: ping::Behaviour,
    pub identify: identify::Behaviour,
}

/// What the peer's task reports.
#[derive(Debug)]
pub enum Report {
    Identified {
        peer: PeerId,
        agent_version: String,
        protocols: Vec<String>,
    },
    Pinged {
        peer: PeerId,
        ok: bool,
    },
    Connected {
        peer: PeerId,
    },
}

pub struct RustPeer {
    pub peer_id: PeerId,
    pub listen_addr: Multiaddr,
    pub control: libp2p_stream::Control,
    pub reports: mpsc::Receiver<Report>,
    dial_tx: mpsc::Sender<Multiaddr>,
    task: tokio::task::JoinHandle<()>,
}

impl RustPeer {
    pub async fn start() -> RustPeer {
        let mut swarm = libp2p::SwarmBuilder::with_new_identity()
            .with_tokio()
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )
            .expect("tcp transport")
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
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .unwrap();
        let listen_addr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = swarm.select_next_some().await {
                break address;
            }
        };
        let peer_id = *swarm.local_peer_id();
        let control = swarm.behaviour().stream.new_control();
        let (report_tx, reports) = mpsc::channel(256);
        let (dial_tx, mut dial_rx) = mpsc::channel::<Multiaddr>(8);
        let task = tokio::spawn(async move {
            loop {
                tokio::select! {
                    addr = dial_rx.recv() => match addr {
                        Some(addr) => { let _ = swarm.dial(addr); }
                        None => return,
                    },
                    event = swarm.select_next_some() => {
                        let report = match event {
                            SwarmEvent::ConnectionEstablished { peer_id, .. } => Some(Report::Connected { peer: peer_id }),
                            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. })) => {
                                Some(Report::Identified {
                                    peer: peer_id,
                                    agent_version: info.agent_version,
                                    protocols: info.protocols.iter().map(|p| p.to_string()).collect(),
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
        RustPeer {
            peer_id,
            listen_addr,
            control,
            reports,
            dial_tx,
            task,
        }
    }

    pub async fn dial(&self, addr: Multiaddr) {
        self.dial_tx.send(addr).await.unwrap();
    }

    /// Waits (bounded) for a report matching `pred`.
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

    pub fn stop(self) {
        self.task.abort();
    }
}
