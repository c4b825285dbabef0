//! Connect time in round trips (part of the `host` group): a fresh client dials a server through a
//! [`DelayRelay`] that delays every byte or datagram by [`DELAY`] each way (RTT = 2 × [`DELAY`]),
//! opens a stream, writes one byte and reads it back. For our TCP stack (TCP + noise XX + yamux,
//! `host.connect.rtt50ms`), our QUIC (`quic.connect.rtt50ms`), rust-libp2p over TCP
//! (`rust_libp2p.connect.rtt50ms`) and over QUIC (`rust_libp2p.quic.connect.rtt50ms`), taking
//! turns run by run; each sample is one run, reported in milliseconds and, as `….in_rtt`, in
//! multiples of the nominal RTT. For our two, also the part `Host::dial` took (`host.dial.*`,
//! `quic.dial.*`): the handshakes, before the stream is negotiated (multistream-select V1, one
//! round trip) and its byte echoed (one more).
//!
//! Next to them, the relay's own figures: a plain TCP connect + one byte echoed
//! (`tcp.connect.rtt50ms`, two round trips: the handshake and the byte) and one UDP datagram
//! echoed (`udp.echo.rtt50ms`, one). What they take over 2 and 1 RTT is the relay's own cost
//! (mostly the timer's millisecond granularity).

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result};
use p2pnet_host::{
    Host, HostConfig, InboundStream, Multiaddr, Protocol, generate_keypair, with_p2p,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use crate::delay_relay::DelayRelay;
use crate::report::Figure;
use crate::rust_libp2p::{self, Job, Transport};

/// Each way: the relayed round-trip time is twice this.
pub(crate) const DELAY: Duration = Duration::from_millis(25);
/// The protocol whose stream echoes what it reads.
const ECHO: &str = "/bench/echo/1.0.0";
/// One connect (with its byte) gives up after this.
const ONE_RUN: Duration = Duration::from_secs(10);

/// The socket address of `addr` (`/ip4/…/tcp/…` or `/ip4/…/udp/…`, anything after ignored).
pub(crate) fn socket_addr(addr: &Multiaddr) -> Result<SocketAddr> {
    let mut ip = None;
    for p in addr.iter() {
        match p {
            Protocol::Ip4(a) => ip = Some(a),
            Protocol::Tcp(port) | Protocol::Udp(port) => {
                let ip = ip.with_context(|| format!("no /ip4 before the port in {addr}"))?;
                return Ok(SocketAddr::from((ip, port)));
            }
            _ => {}
        }
    }
    anyhow::bail!("no tcp or udp port in {addr}")
}

/// `addr` with its TCP or UDP port replaced by `port` (the rest, `/quic-v1` or `/p2p/…`, kept).
fn with_port(addr: &Multiaddr, port: u16) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(port),
            Protocol::Udp(_) => Protocol::Udp(port),
            other => other,
        })
        .collect()
}

/// One stack's figures: milliseconds and round trips.
struct Side {
    ms: Figure,
    rtts: Figure,
}

impl Side {
    fn new(name: &str) -> Side {
        Side {
            ms: Figure::new(&format!("{name}.rtt{}ms", rtt_ms()), "ms", false),
            rtts: Figure::new(&format!("{name}.rtt{}ms.in_rtt", rtt_ms()), "RTT", false),
        }
    }

    fn push(&mut self, took: Duration) {
        let ms = took.as_secs_f64() * 1e3;
        self.ms.samples.push(ms);
        self.rtts.samples.push(ms / rtt_ms() as f64);
    }
}

fn rtt_ms() -> u128 {
    (2 * DELAY).as_millis()
}

/// Our server: listening on TCP and (where the host has it) QUIC, echoing on [`ECHO`].
struct OurServer {
    host: Host,
    tcp: Multiaddr,
    quic: Option<Multiaddr>,
    _echo: p2pnet_host::StreamHandlerRegistration,
}

async fn echo_handler(mut s: InboundStream) {
    let (mut r, mut w) = s.stream.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
    let _ = w.shutdown().await;
}

/// A fresh host (built before the clock starts) dials `addr`, opens an [`ECHO`] stream, writes
/// one byte and reads it back: the time that took, and the part of it `dial` took.
async fn ours_once(addr: &Multiaddr) -> Result<(Duration, Duration)> {
    let fresh = Host::new(
        generate_keypair(),
        HostConfig {
            identify: false,
            ..HostConfig::default()
        },
    )?;
    let t = Instant::now();
    let result = async {
        let peer = fresh.dial(addr.clone()).await?;
        let dialed = t.elapsed();
        let mut s = fresh.new_stream(peer, [ECHO]).await?;
        s.write_all(&[7]).await?;
        s.flush().await?;
        let mut back = [0u8; 1];
        s.read_exact(&mut back).await?;
        anyhow::ensure!(back == [7], "echo answered {back:?}");
        anyhow::Ok((t.elapsed(), dialed))
    }
    .await;
    fresh.shutdown().await;
    result
}

/// A plain TCP connect to `addr`, one byte written and read back.
async fn tcp_once(addr: SocketAddr) -> Result<Duration> {
    let t = Instant::now();
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.set_nodelay(true)?;
    s.write_all(&[7]).await?;
    let mut back = [0u8; 1];
    s.read_exact(&mut back).await?;
    Ok(t.elapsed())
}

/// One UDP datagram to `addr` and its echo.
async fn udp_once(addr: SocketAddr) -> Result<Duration> {
    let s = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    s.connect(addr).await?;
    let t = Instant::now();
    s.send(&[7]).await?;
    let mut back = [0u8; 16];
    s.recv(&mut back).await?;
    Ok(t.elapsed())
}

/// Plain echo servers on loopback, TCP and UDP; their tasks.
async fn plain_echoes() -> Result<(SocketAddr, SocketAddr, Vec<tokio::task::JoinHandle<()>>)> {
    let tcp = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_addr = tcp.local_addr()?;
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
    let udp_addr = udp.local_addr()?;
    let tcp_task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        while let Ok((mut s, _)) = tcp.accept().await {
            let _ = s.set_nodelay(true);
            conns.spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    let udp_task = tokio::spawn(async move {
        let mut buf = vec![0u8; 2048];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            let _ = udp.send_to(&buf[..n], from).await;
        }
    });
    Ok((tcp_addr, udp_addr, vec![tcp_task, udp_task]))
}

/// Runs `f` within [`ONE_RUN`].
async fn bounded<T>(f: impl Future<Output = Result<T>>) -> Result<T> {
    tokio::time::timeout(ONE_RUN, f)
        .await
        .context("a connect through the delay relay took over 10 s")?
}

#[allow(clippy::print_stderr, reason = "the note on runs cut short")]
pub(crate) async fn run(quick: bool) -> Result<Vec<Figure>> {
    let runs = if quick { 5 } else { 10 };
    // However slow the machine, the whole measurement stops taking turns after this.
    let budget = Duration::from_secs(if quick { 60 } else { 120 });

    let host = Host::new(generate_keypair(), HostConfig::default())?;
    let tcp = with_p2p(
        &host.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?,
        host.peer_id(),
    );
    let quic = crate::host_bench::listen_quic(&host, "quic.connect")
        .await?
        .map(|a| with_p2p(&a, host.peer_id()));
    let _echo = host.set_stream_handler(ECHO, echo_handler)?;
    let ours = OurServer {
        _echo,
        host,
        tcp,
        quic,
    };
    let rust_tcp = rust_libp2p::Pair::over(Transport::Tcp).await?;
    let rust_quic = rust_libp2p::Pair::over(Transport::Quic).await?;
    let (plain_tcp, plain_udp, plain_tasks) = plain_echoes().await?;

    let mut relays = Vec::new();
    let mut relay = async |udp: bool, target: SocketAddr| -> Result<u16> {
        let r = if udp {
            DelayRelay::udp(target, DELAY).await?
        } else {
            DelayRelay::tcp(target, DELAY).await?
        };
        let port = r.addr().port();
        relays.push(r);
        Ok(port)
    };
    let ours_tcp_via = with_port(&ours.tcp, relay(false, socket_addr(&ours.tcp)?).await?);
    let ours_quic_via = match &ours.quic {
        Some(q) => Some(with_port(q, relay(true, socket_addr(q)?).await?)),
        None => None,
    };
    let rust_tcp_addr = rust_tcp.server_addr().clone();
    let rust_tcp_via = with_port(
        &rust_tcp_addr,
        relay(false, socket_addr(&rust_tcp_addr)?).await?,
    );
    let rust_quic_addr = rust_quic.server_addr().clone();
    let rust_quic_via = with_port(
        &rust_quic_addr,
        relay(true, socket_addr(&rust_quic_addr)?).await?,
    );
    let plain_tcp_via = SocketAddr::from(([127, 0, 0, 1], relay(false, plain_tcp).await?));
    let plain_udp_via = SocketAddr::from(([127, 0, 0, 1], relay(true, plain_udp).await?));

    let mut host_tcp = Side::new("host.connect");
    let mut host_quic = Side::new("quic.connect");
    // Of which `Host::dial` (the handshakes, without the stream and its byte).
    let mut host_tcp_dial = Side::new("host.dial");
    let mut host_quic_dial = Side::new("quic.dial");
    let mut rust_t = Side::new("rust_libp2p.connect");
    let mut rust_q = Side::new("rust_libp2p.quic.connect");
    let mut plain_t = Side::new("tcp.connect");
    let mut plain_u = Side::new("udp.echo");
    let started = Instant::now();
    let sides = 6;
    'runs: for run in 0..runs {
        // Rotate who goes first.
        for i in 0..sides {
            if started.elapsed() > budget {
                eprintln!(
                    "p2pnet-bench: connect through the delay relay stopped after {run} of {runs} runs ({budget:?} budget)"
                );
                break 'runs;
            }
            match (run + i) % sides {
                0 => {
                    let (took, dialed) = bounded(ours_once(&ours_tcp_via)).await?;
                    host_tcp.push(took);
                    host_tcp_dial.push(dialed);
                }
                1 => {
                    if let Some(via) = &ours_quic_via {
                        let (took, dialed) = bounded(ours_once(via)).await?;
                        host_quic.push(took);
                        host_quic_dial.push(dialed);
                    }
                }
                2 => rust_t.push(
                    bounded(rust_tcp.connect_fresh_via(rust_tcp_via.clone(), Job::EchoByte))
                        .await?,
                ),
                3 => rust_q.push(
                    bounded(rust_quic.connect_fresh_via(rust_quic_via.clone(), Job::EchoByte))
                        .await?,
                ),
                4 => plain_t.push(bounded(tcp_once(plain_tcp_via)).await?),
                _ => plain_u.push(bounded(udp_once(plain_udp_via)).await?),
            }
        }
    }

    for r in relays {
        r.stop().await;
    }
    for t in plain_tasks {
        t.abort();
        let _ = t.await;
    }
    drop((rust_tcp, rust_quic));
    ours.host.shutdown().await;

    let mut figures = vec![
        plain_u.ms,
        plain_u.rtts,
        plain_t.ms,
        plain_t.rtts,
        host_tcp.ms,
        host_tcp.rtts.against(&rust_t.rtts),
        host_tcp_dial.ms,
        host_tcp_dial.rtts,
    ];
    if ours.quic.is_some() {
        figures.push(host_quic.ms);
        figures.push(host_quic.rtts.against(&rust_q.rtts));
        figures.push(host_quic_dial.ms);
        figures.push(host_quic_dial.rtts);
    }
    figures.extend([rust_t.ms, rust_t.rtts, rust_q.ms, rust_q.rtts]);
    Ok(figures)
}
