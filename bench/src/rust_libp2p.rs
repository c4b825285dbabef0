//! The rust-libp2p baseline: two Swarms with `libp2p-stream` over TCP + noise + yamux, every
//! setting at its default, driven on their own tasks.

use std::time::Duration;

use anyhow::{Context, Result};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};

pub(crate) const SINK: StreamProtocol = StreamProtocol::new("/bench/sink/1.0.0");

/// A client swarm connected to a server swarm that sinks streams on [`SINK`].
pub(crate) struct Pair {
    pub(crate) control: libp2p_stream::Control,
    pub(crate) server: PeerId,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn swarm() -> Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
    Ok(libp2p::SwarmBuilder::with_new_identity()
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )?
        .with_behaviour(|_| libp2p_stream::Behaviour::new())?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
        .build())
}

impl Pair {
    pub(crate) async fn new() -> Result<Pair> {
        let mut server = swarm()?;
        server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
        let addr: Multiaddr = loop {
            if let SwarmEvent::NewListenAddr { address, .. } = server.select_next_some().await {
                break address;
            }
        };
        let server_id = *server.local_peer_id();
        let mut incoming = server.behaviour().new_control().accept(SINK)?;
        let mut tasks = vec![tokio::spawn(async move {
            loop {
                server.select_next_some().await;
            }
        })];
        tasks.push(tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(sink(stream));
            }
        }));
        let mut client = swarm()?;
        client.dial(addr.with(libp2p::multiaddr::Protocol::P2p(server_id)))?;
        loop {
            if let SwarmEvent::ConnectionEstablished { .. } = client.select_next_some().await {
                break;
            }
        }
        let control = client.behaviour().new_control();
        tasks.push(tokio::spawn(async move {
            loop {
                client.select_next_some().await;
            }
        }));
        Ok(Pair {
            control,
            server: server_id,
            tasks,
        })
    }

    /// Sends `bytes` over a new stream; returns when the server has read them all.
    pub(crate) async fn transfer(&mut self, bytes: u64, chunk: &[u8]) -> Result<()> {
        let mut s = self
            .control
            .open_stream(self.server, SINK)
            .await
            .context("rust-libp2p open_stream")?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            s.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        s.close().await?;
        let mut ack = [0u8; 1];
        s.read_exact(&mut ack).await?;
        Ok(())
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn sink(mut s: libp2p::Stream) {
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = s.write_all(&[1]).await;
    let _ = s.close().await;
}
