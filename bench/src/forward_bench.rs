//! `forward` group: one TCP client → forward on node A → node B → TCP sink/echo server, all on
//! 127.0.0.1, next to the same traffic over plain TCP loopback and through the same tunnel built
//! on rust-libp2p (see [`crate::rust_libp2p::Tunnel`]), alternating round by round in one
//! process run.
//!
//! Reports throughput (MiB/s, one connection, 256 KiB writes, timed until the sink answered after
//! reading everything), 64-byte ping-pong round-trip time (µs) and the aggregate throughput of
//! many concurrent connections through our tunnel (100 × 16 MiB; `--quick`: 20 × 4 MiB). The
//! throughput also through the same two tunnels with their nodes connected over QUIC
//! (`forward.quic.throughput`, `rust_libp2p.forward.quic.throughput`).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use p2pnet_forward::{ForwardConfig, Forwarder, ListenOptions};
use p2pnet_host::{Host, HostConfig, Protocol, generate_keypair, with_p2p};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::report::Figure;
use crate::rust_libp2p;

const WRITE: usize = 256 * 1024;

struct Params {
    rounds: usize,
    bytes: usize,
    pings: usize,
    many: usize,
    many_bytes: usize,
}

/// The three ways to the same sink and echo servers.
#[derive(Clone, Copy)]
struct Route {
    sink: u16,
    echo: u16,
}

/// One route of a profiling aid, set up: the TCP port to use and what must stay alive meanwhile.
struct Profiled {
    port: u16,
    _keep: (Host, Host, Forwarder, Forwarder, rust_libp2p::Tunnel),
}

/// Builds our tunnel and the rust-libp2p one to the local service on `service_port` (over
/// `protocol`, with `host` as both hosts' configuration); returns `which` of them, or the service
/// itself for `tcp`.
async fn route(
    which: &str,
    protocol: &'static str,
    service_port: u16,
    host: HostConfig,
) -> Result<Profiled> {
    let config = ForwardConfig::default();
    let b = Host::new(generate_keypair(), host.clone())?;
    let b_addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    let fb = Forwarder::new(b.clone(), config.clone());
    fb.listen(protocol, tcp(service_port), ListenOptions::default())?;
    let a = Host::new(generate_keypair(), host)?;
    a.dial(with_p2p(&b_addr, b.peer_id())).await?;
    let fa = Forwarder::new(a.clone(), config.clone());
    let any = "/ip4/127.0.0.1/tcp/0".parse()?;
    let ours = port(&fa.forward(protocol, any, b.peer_id()).await?.listen_addr)?;
    let (tunnel, ports) =
        rust_libp2p::Tunnel::new(&[(protocol, service_port)], config.buffer_size).await?;
    let port = match which {
        "tcp" => service_port,
        "ours" => ours,
        "rust" => ports[0],
        other => anyhow::bail!("unknown route {other:?} (tcp, ours or rust)"),
    };
    Ok(Profiled {
        port,
        _keep: (a, b, fa, fb, tunnel),
    })
}

/// Profiling aid (`p2pnet-bench forward-tput --route tcp|ours|rust --pings N
/// [--yamux-split-send-size B]`, not part of the report): N MiB through one route into a sink,
/// after 64 MiB of warm-up.
pub(crate) async fn tput_only(
    which: &str,
    mib: usize,
    split_send_size: Option<usize>,
) -> Result<Vec<Figure>> {
    let mut host = HostConfig::default();
    if let Some(size) = split_send_size {
        host.yamux_split_send_size = size;
    }
    let sink_port = serve(|s| Box::pin(sink(s))).await?;
    let r = route(which, "/x/sink", sink_port, host).await?;
    throughput(r.port, 64 << 20).await?;
    let mut f = Figure::new(&format!("{which}.throughput"), "MiB/s", true);
    f.samples.push(throughput(r.port, mib << 20).await?);
    Ok(vec![f])
}

/// Profiling aid (`p2pnet-bench forward-rtt --route tcp|ours|rust --pings N`, not part of the
/// report): only 64-byte ping-pongs on one route, after 1,000 of warm-up, so that `perf stat`,
/// `perf record` or `strace -c` see nothing else.
pub(crate) async fn rtt_only(which: &str, pings: usize) -> Result<Vec<Figure>> {
    let echo_port = serve(|s| Box::pin(echo(s))).await?;
    let r = route(which, "/x/echo", echo_port, HostConfig::default()).await?;
    rtt(r.port, 1000).await?;
    let mut f = Figure::new(&format!("{which}.rtt"), "us", false);
    f.samples.push(rtt(r.port, pings).await?);
    Ok(vec![f])
}

/// Our tunnel to `sink` (and, where given, `echo`) with node A connected to node B over TCP, or
/// over QUIC with `quic` (B's only listen address, so that the connection is over it): A's local
/// ports and the nodes, which must stay alive meanwhile. `None` for QUIC where the host has none.
async fn our_tunnel(
    quic: bool,
    sink: u16,
    echo: Option<u16>,
    config: &ForwardConfig,
) -> Result<Option<(Route, (Host, Host, Forwarder, Forwarder))>> {
    let b = Host::new(generate_keypair(), HostConfig::default())?;
    let b_addr = if quic {
        match crate::host_bench::listen_quic(&b, "forward.quic.throughput").await? {
            Some(addr) => addr,
            None => {
                b.shutdown().await;
                return Ok(None);
            }
        }
    } else {
        b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?
    };
    let fb = Forwarder::new(b.clone(), config.clone());
    fb.listen("/x/sink", tcp(sink), ListenOptions::default())?;
    if let Some(echo) = echo {
        fb.listen("/x/echo", tcp(echo), ListenOptions::default())?;
    }
    let a = Host::new(generate_keypair(), HostConfig::default())?;
    a.dial(with_p2p(&b_addr, b.peer_id())).await?;
    // The tunnel's streams go over this connection: check it is over the transport asked for.
    for c in a.connections(Some(&b.peer_id())) {
        let is_quic = c.remote_addr.iter().any(|p| matches!(p, Protocol::QuicV1));
        anyhow::ensure!(
            is_quic == quic,
            "node A's connection to B is over {}",
            c.remote_addr
        );
    }
    let fa = Forwarder::new(a.clone(), config.clone());
    let any = "/ip4/127.0.0.1/tcp/0".parse()?;
    let sink_port = port(&fa.forward("/x/sink", any, b.peer_id()).await?.listen_addr)?;
    let echo_port = match echo {
        Some(_) => {
            let any = "/ip4/127.0.0.1/tcp/0".parse()?;
            port(&fa.forward("/x/echo", any, b.peer_id()).await?.listen_addr)?
        }
        None => 0,
    };
    Ok(Some((
        Route {
            sink: sink_port,
            echo: echo_port,
        },
        (a, b, fa, fb),
    )))
}

/// The whole group; with `only_quic`, only the throughput through the four tunnels (ours and
/// rust-libp2p's, over TCP and over QUIC).
pub(crate) async fn run(quick: bool, only_quic: bool) -> Result<Vec<Figure>> {
    let p = if quick {
        Params {
            rounds: 3,
            bytes: 64 << 20,
            pings: 500,
            many: 20,
            many_bytes: 4 << 20,
        }
    } else {
        Params {
            rounds: 5,
            bytes: 256 << 20,
            pings: 2000,
            many: 100,
            many_bytes: 16 << 20,
        }
    };
    let config = ForwardConfig::default();

    // Plain services on loopback.
    let plain = Route {
        sink: serve(|s| Box::pin(sink(s))).await?,
        echo: serve(|s| Box::pin(echo(s))).await?,
    };

    // Ours: node B serves both through remote listeners; node A forwards local ports to them.
    let (ours, (a, b, fa, fb)) = our_tunnel(false, plain.sink, Some(plain.echo), &config)
        .await?
        .context("no TCP tunnel")?;
    // Ours over QUIC, to the sink only; none where the host has no QUIC yet.
    let ours_quic = our_tunnel(true, plain.sink, None, &config).await?;

    // Theirs: the same tunnel on rust-libp2p.
    let (tunnel, ports) = rust_libp2p::Tunnel::new(
        &[("/x/sink", plain.sink), ("/x/echo", plain.echo)],
        config.buffer_size,
    )
    .await?;
    let theirs = Route {
        sink: ports[0],
        echo: ports[1],
    };
    let (quic_tunnel, quic_ports) = rust_libp2p::Tunnel::over(
        rust_libp2p::Transport::Quic,
        &[("/x/sink", plain.sink)],
        config.buffer_size,
    )
    .await?;

    // Named apart from the host group's `tcp.throughput`: this one ran beside the tunnels.
    let mut tcp_tp = Figure::new("tcp.throughput.alongside_forward", "MiB/s", true);
    let mut fwd_tp = Figure::new("forward.throughput", "MiB/s", true);
    let mut rust_tp = Figure::new("rust_libp2p.forward.throughput", "MiB/s", true);
    let mut tcp_rtt = Figure::new("tcp.rtt", "us", false);
    let mut fwd_rtt = Figure::new("forward.rtt", "us", false);
    let mut rust_rtt = Figure::new("rust_libp2p.forward.rtt", "us", false);
    let mut quic_tp = Figure::new("forward.quic.throughput", "MiB/s", true);
    let mut rust_quic_tp = Figure::new("rust_libp2p.forward.quic.throughput", "MiB/s", true);
    for round in 0..p.rounds {
        // Rotate who goes first so that no side always runs on a warmer or colder machine.
        for i in 0..5 {
            match (round + i) % 5 {
                0 if !only_quic => tcp_tp.samples.push(throughput(plain.sink, p.bytes).await?),
                1 => fwd_tp.samples.push(throughput(ours.sink, p.bytes).await?),
                2 => rust_tp
                    .samples
                    .push(throughput(theirs.sink, p.bytes).await?),
                3 => {
                    if let Some((quic, _)) = &ours_quic {
                        quic_tp.samples.push(throughput(quic.sink, p.bytes).await?);
                    }
                }
                4 => rust_quic_tp
                    .samples
                    .push(throughput(quic_ports[0], p.bytes).await?),
                _ => {}
            }
        }
        if only_quic {
            continue;
        }
        for i in 0..3 {
            match (round + i) % 3 {
                0 => tcp_rtt.samples.push(rtt(plain.echo, p.pings).await?),
                1 => fwd_rtt.samples.push(rtt(ours.echo, p.pings).await?),
                _ => rust_rtt.samples.push(rtt(theirs.echo, p.pings).await?),
            }
        }
    }
    let mut tcp_many = Figure::new("tcp.many.throughput", "MiB/s", true);
    let mut fwd_many = Figure::new("forward.many.throughput", "MiB/s", true);
    if !only_quic {
        tcp_many
            .samples
            .push(many(plain.sink, p.many, p.many_bytes).await?);
        fwd_many
            .samples
            .push(many(ours.sink, p.many, p.many_bytes).await?);
    }

    drop(tunnel);
    drop(quic_tunnel);
    let have_quic = ours_quic.is_some();
    let mut nodes = vec![(a, b, fa, fb)];
    nodes.extend(ours_quic.map(|(_, n)| n));
    for (a, b, fa, fb) in nodes {
        fa.shutdown().await;
        fb.shutdown().await;
        a.shutdown().await;
        b.shutdown().await;
    }

    let mut quic_figures = Vec::new();
    if have_quic {
        let mut quic_vs_rust = quic_tp.clone().against(&rust_quic_tp);
        quic_vs_rust.name = "forward.quic.throughput.vs_rust_libp2p".into();
        quic_figures.push(quic_tp.against(&fwd_tp));
        quic_figures.push(quic_vs_rust);
    }
    quic_figures.push(rust_quic_tp.against(&rust_tp));

    let mut tp_vs_rust = fwd_tp.clone().against(&rust_tp);
    tp_vs_rust.name = "forward.throughput.vs_rust_libp2p".into();
    if only_quic {
        let mut figures = vec![fwd_tp, rust_tp, tp_vs_rust];
        figures.extend(quic_figures);
        return Ok(figures);
    }
    let mut rtt_vs_rust = fwd_rtt.clone().against(&rust_rtt);
    rtt_vs_rust.name = "forward.rtt.vs_rust_libp2p".into();
    let fwd_tp = fwd_tp.against(&tcp_tp);
    let rust_tp = rust_tp.against(&tcp_tp);
    let fwd_rtt = fwd_rtt.against(&tcp_rtt);
    let rust_rtt = rust_rtt.against(&tcp_rtt);
    let fwd_many = fwd_many.against(&tcp_many);
    let mut figures = vec![tcp_tp, fwd_tp, rust_tp, tp_vs_rust];
    figures.extend(quic_figures);
    figures.extend([tcp_rtt, fwd_rtt, rust_rtt, rtt_vs_rust, tcp_many, fwd_many]);
    Ok(figures)
}

fn tcp(port: u16) -> p2pnet_host::Multiaddr {
    p2pnet_host::Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Tcp(port))
}

fn port(addr: &p2pnet_host::Multiaddr) -> Result<u16> {
    match addr.iter().last() {
        Some(Protocol::Tcp(p)) => Ok(p),
        _ => anyhow::bail!("not a tcp address: {addr}"),
    }
}

type ServeFn =
    fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

async fn serve(f: ServeFn) -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    let port = l.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((s, _)) = l.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(f(s));
        }
    });
    Ok(port)
}

/// Reads to EOF, then answers one byte.
async fn sink(mut s: TcpStream) {
    let mut buf = vec![0u8; WRITE];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            let _ = s.write_all(b"k").await;
            let _ = s.shutdown().await;
            return;
        }
    }
}

async fn echo(mut s: TcpStream) {
    let (mut r, mut w) = s.split();
    let _ = tokio::io::copy(&mut r, &mut w).await;
}

/// Sends `bytes` and waits for the sink's answer; MiB/s.
async fn throughput(port: u16, bytes: usize) -> Result<f64> {
    let start = Instant::now();
    send(port, bytes).await?;
    Ok(bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

async fn send(port: u16, bytes: usize) -> Result<()> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    let buf = vec![0x5au8; WRITE];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(WRITE);
        s.write_all(&buf[..n]).await?;
        left -= n;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(60), s.read_exact(&mut ack)).await??;
    Ok(())
}

/// Mean round-trip time of 64-byte ping-pongs, µs.
async fn rtt(port: u16, pings: usize) -> Result<f64> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await?;
    s.set_nodelay(true)?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    // Warm up.
    for _ in 0..10 {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    let start = Instant::now();
    for _ in 0..pings {
        s.write_all(&msg).await?;
        s.read_exact(&mut back).await?;
    }
    Ok(start.elapsed().as_secs_f64() * 1e6 / pings as f64)
}

/// `n` connections sending `bytes` each at once; aggregate MiB/s.
async fn many(port: u16, n: usize, bytes: usize) -> Result<f64> {
    let start = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..n {
        set.spawn(send(port, bytes));
    }
    while let Some(r) = set.join_next().await {
        r??;
    }
    Ok((n * bytes) as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}
