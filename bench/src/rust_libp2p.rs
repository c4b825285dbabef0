//! The rust-libp2p baseline: two Swarms with `libp2p-stream` over TCP + noise + yamux (or over
//! libp2p-quic), every setting at its default, driven on their own tasks.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::swarm::SwarmEvent;
use libp2p::{Multiaddr, PeerId, StreamProtocol, noise, tcp, yamux};

pub(crate) const SINK: StreamProtocol = StreamProtocol::new("/bench/sink/1.0.0");
/// Echoes what it reads until EOF.
pub(crate) const ECHO: StreamProtocol = StreamProtocol::new("/bench/echo/1.0.0");

/// Which rust-libp2p transport a swarm uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// TCP + noise XX + yamux.
    Tcp,
    /// libp2p-quic (`/quic-v1`).
    Quic,
}

impl Transport {
    fn listen_addr(self) -> &'static str {
        match self {
            Transport::Tcp => "/ip4/127.0.0.1/tcp/0",
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1",
        }
    }
}

/// A client swarm connected to a server swarm that sinks streams on [`SINK`] and echoes them on
/// [`ECHO`].
pub(crate) struct Pair {
    pub(crate) control: libp2p_stream::Control,
    pub(crate) server: PeerId,
    /// The server's listen address with its `/p2p/` suffix.
    server_addr: Multiaddr,
    transport: Transport,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn swarm(transport: Transport) -> Result<libp2p::Swarm<libp2p_stream::Behaviour>> {
    let builder = libp2p::SwarmBuilder::with_new_identity().with_tokio();
    Ok(match transport {
        Transport::Tcp => builder
            .with_tcp(
                tcp::Config::default(),
                noise::Config::new,
                yamux::Config::default,
            )?
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build(),
        Transport::Quic => builder
            .with_quic()
            .with_behaviour(|_| libp2p_stream::Behaviour::new())?
            .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(600)))
            .build(),
    })
}

/// A new swarm listening on 127.0.0.1 over `transport`: the swarm and its address with the
/// `/p2p/` suffix.
async fn listening(
    transport: Transport,
) -> Result<(libp2p::Swarm<libp2p_stream::Behaviour>, Multiaddr)> {
    let mut s = swarm(transport)?;
    s.listen_on(transport.listen_addr().parse()?)?;
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

/// A new swarm connected to `addr` over `transport`, driven on its own task: its stream control
/// and the task.
async fn connected(
    addr: Multiaddr,
    transport: Transport,
) -> Result<(libp2p_stream::Control, tokio::task::JoinHandle<()>)> {
    let mut s = swarm(transport)?;
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
    /// Over TCP + noise + yamux.
    pub(crate) async fn new() -> Result<Pair> {
        Self::over(Transport::Tcp).await
    }

    pub(crate) async fn over(transport: Transport) -> Result<Pair> {
        let (server, server_addr) = listening(transport).await?;
        let server_id = *server.local_peer_id();
        let mut incoming = server.behaviour().new_control().accept(SINK)?;
        let mut echoes = server.behaviour().new_control().accept(ECHO)?;
        let mut tasks = vec![drive(server)];
        tasks.push(tokio::spawn(async move {
            while let Some((_, stream)) = incoming.next().await {
                tokio::spawn(sink(stream));
            }
        }));
        tasks.push(tokio::spawn(async move {
            while let Some((_, stream)) = echoes.next().await {
                tokio::spawn(echo(stream));
            }
        }));
        let (control, client) = connected(server_addr.clone(), transport).await?;
        tasks.push(client);
        Ok(Pair {
            control,
            server: server_id,
            server_addr,
            transport,
            tasks,
        })
    }

    /// The server's listen address with its `/p2p/` suffix.
    pub(crate) fn server_addr(&self) -> &Multiaddr {
        &self.server_addr
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
        let addr = self.server_addr.clone();
        self.connect_fresh_via(addr, Job::Sink).await
    }

    /// [`Pair::connect_fresh`] dialing `addr` (the server's, or a relay's in front of it, with the
    /// server's `/p2p/` suffix), the first stream doing `job`.
    pub(crate) async fn connect_fresh_via(&self, addr: Multiaddr, job: Job) -> Result<Duration> {
        let mut client = swarm(self.transport)?;
        let mut control = client.behaviour().new_control();
        let (established_tx, established_rx) = tokio::sync::oneshot::channel();
        let t = Instant::now();
        client.dial(addr)?;
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
            match job {
                Job::Sink => sink_round_trip(&mut control, self.server).await?,
                Job::EchoByte => echo_byte(&mut control, self.server).await?,
            }
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

/// What the first stream of a fresh connection does.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Job {
    /// [`SINK`]: half-close, read the 1-byte answer.
    Sink,
    /// [`ECHO`]: write one byte, read it back.
    EchoByte,
}

/// Opens an [`ECHO`] stream to `server`, writes one byte and reads it back.
async fn echo_byte(control: &mut libp2p_stream::Control, server: PeerId) -> Result<()> {
    let mut s = control
        .open_stream(server, ECHO)
        .await
        .context("rust-libp2p open_stream")?;
    s.write_all(&[7]).await?;
    s.flush().await?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back).await?;
    anyhow::ensure!(back == [7], "echo answered {back:?}");
    Ok(())
}

async fn echo(s: libp2p::Stream) {
    let (mut r, mut w) = s.split();
    let _ = futures::io::copy(&mut r, &mut w).await;
    let _ = w.close().await;
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
        Self::over(Transport::Tcp, routes, buffer_size).await
    }

    /// [`Tunnel::new`] with A and B connected over `transport`.
    pub(crate) async fn over(
        transport: Transport,
        routes: &[(&'static str, u16)],
        buffer_size: usize,
    ) -> Result<(Tunnel, Vec<u16>)> {
        let (b, b_addr) = listening(transport).await?;
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

        let (control, a) = connected(b_addr, transport).await?;
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
