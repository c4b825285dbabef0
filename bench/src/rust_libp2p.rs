//! The rust-libp2p baseline: two Swarms with `libp2p-stream` over TCP + noise + yamux, every
//! setting at its default, driven on their own tasks.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};

pub(crate) const SINK: StreamProtocol = StreamProtocol::new("/bench/sink/1.0.0");

/// A client swarm connected to a server swarm that sinks streams on [`SINK`].
pub(crate) struct Pair {
    pub(crate) control: libp2p_stream::Control,
    pub(crate) server: PeerId,
    /// The server's listen address with its `/p2p/` suffix.
    server_addr: Multiaddr,
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

/// A new swarm listening on 127.0.0.1: the swarm and its address with the `/p2p/` suffix.
async fn listening() -> Result<(libp2p::Swarm<libp2p_stream::Behaviour>, Multiaddr)> {
    let mut s = swarm()?;
    s.listen_on("/ip4/127.0.0.1/tcp/0".parse()?)?;
    let addr: Multiaddr = loop {
        if let SwarmEvent::NewListenAddr { address, .. } = s.select_next_some().await {
            break address;
        }
    };
    let id = *s.local_peer_id();
    Ok((s, addr.with(libp2p::multiaddr::Protocol::P2p(id))))
}

/// Drives `s` on a task of its own, forever (until the task is aborted).
fn drive(mut s: libp2p::Swarm<libp2p_stream::Behaviour>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            s.select_next_some().await;
        }
    })
}

/// A new swarm connected to `addr`, driven on its own task: its stream control and the task.
async fn connected(
    addr: Multiaddr,
) -> Result<(libp2p_stream::Control, tokio::task::JoinHandle<()>)> {
    let mut s = swarm()?;
    s.dial(addr)?;
    loop {
        if let SwarmEvent::ConnectionEstablished { .. } = s.select_next_some().await {
            break;
        }
    }
    let control = s.behaviour().new_control();
    Ok((control, drive(s)))
}

impl Pair {
    pub(crate) async fn new() -> Result<Pair> {
        let (server, server_addr) = listening().await?;
        let server_id = *server.local_peer_id();
        let mut incoming = server.behaviour().new_control().accept(SINK)?;
        let mut tasks = vec![drive(server)];
        tasks.push(tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(sink(stream));
            }
        }));
        let (control, client) = connected(server_addr.clone()).await?;
        tasks.push(client);
        Ok(Pair {
            control,
            server: server_id,
            server_addr,
            tasks,
        })
    }

    /// Opens a stream on the live connection, negotiates [`SINK`], half-closes it and reads the
    /// server's 1-byte answer: the same job as `host.stream_open`.
    pub(crate) async fn stream_open(&mut self) -> Result<()> {
        sink_round_trip(&mut self.control, self.server).await
    }

    /// A fresh client swarm (built before the clock starts) dials the server: TCP + noise XX +
    /// yamux, then the first negotiated stream, half-closed, and the server's 1-byte answer. The
    /// same job as `host.connect`; returns the time it took.
    pub(crate) async fn connect_fresh(&self) -> Result<Duration> {
        let mut client = swarm()?;
        let mut control = client.behaviour().new_control();
        let (established_tx, established_rx) = tokio::sync::oneshot::channel();
        let t = Instant::now();
        client.dial(self.server_addr.clone())?;
        let driver = tokio::spawn(async move {
            let mut established_tx = Some(established_tx);
            loop {
                match client.select_next_some().await {
                    SwarmEvent::ConnectionEstablished { .. } => {
                        if let Some(tx) = established_tx.take() {
                            let _ = tx.send(Ok(()));
                        }
                    }
                    SwarmEvent::OutgoingConnectionError { error, .. } => {
                        if let Some(tx) = established_tx.take() {
                            let _ = tx.send(Err(error.to_string()));
                        }
                    }
                    _ => {}
                }
            }
        });
        let result = async {
            established_rx
                .await
                .context("rust-libp2p swarm task ended")?
                .map_err(|e| anyhow::anyhow!("rust-libp2p dial: {e}"))?;
            sink_round_trip(&mut control, self.server).await?;
            anyhow::Ok(t.elapsed())
        }
        .await;
        driver.abort();
        result
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

/// Opens a [`SINK`] stream to `server`, half-closes it and reads the server's 1-byte answer.
async fn sink_round_trip(control: &mut libp2p_stream::Control, server: PeerId) -> Result<()> {
    let mut s = control
        .open_stream(server, SINK)
        .await
        .context("rust-libp2p open_stream")?;
    s.close().await?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    Ok(())
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

/// The forwarding tunnel built on rust-libp2p, as a go-ipfs style `p2p forward`/`p2p listen`
/// would be: node A accepts local TCP connections and opens one `libp2p-stream` stream to node B
/// per connection; node B connects each inbound stream to a local TCP target. Both ends copy with
/// `tokio::io::copy_bidirectional_with_sizes` and the same buffer size as p2pnet-forward.
pub(crate) struct Tunnel {
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Tunnel {
    /// Builds the two swarms; `routes` are (protocol, target TCP port on B). Returns the tunnel
    /// and, for each route, the local TCP port on node A that forwards to it.
    pub(crate) async fn new(
        routes: &[(&'static str, u16)],
        buffer_size: usize,
    ) -> Result<(Tunnel, Vec<u16>)> {
        let (b, b_addr) = listening().await?;
        let b_id = *b.local_peer_id();
        let mut tasks = Vec::new();
        for &(protocol, target) in routes {
            let mut incoming = b
                .behaviour()
                .new_control()
                .accept(StreamProtocol::new(protocol))?;
            tasks.push(tokio::spawn(async move {
                while let Some((_, stream)) = incoming.next().await {
                    tokio::spawn(async move {
                        let Ok(tcp) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await
                        else {
                            return;
                        };
                        let _ = tcp.set_nodelay(true);
                        bridge(tcp, stream, buffer_size).await;
                    });
                }
            }));
        }
        tasks.push(drive(b));

        let (control, a) = connected(b_addr).await?;
        tasks.push(a);
        let mut ports = Vec::new();
        for &(protocol, _) in routes {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            ports.push(listener.local_addr()?.port());
            let control = control.clone();
            tasks.push(tokio::spawn(async move {
                while let Ok((tcp, _)) = listener.accept().await {
                    let _ = tcp.set_nodelay(true);
                    let mut control = control.clone();
                    tokio::spawn(async move {
                        let Ok(stream) = control
                            .open_stream(b_id, StreamProtocol::new(protocol))
                            .await
                        else {
                            return;
                        };
                        bridge(tcp, stream, buffer_size).await;
                    });
                }
            }));
        }
        Ok((Tunnel { tasks }, ports))
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn bridge(mut tcp: tokio::net::TcpStream, stream: libp2p::Stream, buffer_size: usize) {
    use tokio_util::compat::FuturesAsyncReadCompatExt;
    let mut stream = stream.compat();
    let _ =
        tokio::io::copy_bidirectional_with_sizes(&mut tcp, &mut stream, buffer_size, buffer_size)
            .await;
}
