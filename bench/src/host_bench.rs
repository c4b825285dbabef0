//! `host` group: one stream's bulk throughput (plain TCP, p2pnet-host and rust-libp2p, each over
//! TCP and over QUIC), connection set-up and stream-open latency, and connect time in round trips
//! through a delay relay (see [`crate::connect_rtt`]).

use std::time::{Duration, Instant};

use anyhow::Result;
use p2pnet_host::{
    Host, HostConfig, HostError, InboundStream, Multiaddr, StreamHandlerRegistration,
    generate_keypair, with_p2p,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::report::Figure;
use crate::rust_libp2p;

const SINK: &str = "/bench/sink/1.0.0";
const CHUNK: usize = 256 * 1024;
/// Where QUIC listeners bind.
pub(crate) const QUIC_LOOPBACK: &str = "/ip4/127.0.0.1/udp/0/quic-v1";

fn mib_per_s(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / (1024.0 * 1024.0) / took.as_secs_f64()
}

/// Reads until EOF, then answers one byte: the sender's clock stops when all bytes arrived.
async fn sink<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S) {
    let mut buf = vec![0u8; CHUNK];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => break,
            Ok(_) => {}
            Err(_) => return,
        }
    }
    let _ = s.write_all(&[1]).await;
    let _ = s.shutdown().await;
}

async fn send<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(
    mut s: S,
    bytes: u64,
    chunk: &[u8],
) -> Result<()> {
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    s.shutdown().await?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    Ok(())
}

/// A server serving [`SINK`] (for as long as the returned registration lives) and a client
/// connected to it.
async fn host_pair(
    config: HostConfig,
) -> Result<(Host, Host, p2pnet_host::PeerId, StreamHandlerRegistration)> {
    let server = Host::new(generate_keypair(), config.clone())?;
    let addr = server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    client_of(server, addr, config).await
}

/// [`host_pair`] over QUIC (the server listening on QUIC only, so the connection is QUIC); `None`
/// where the host has no QUIC.
async fn quic_host_pair(
    config: HostConfig,
) -> Result<Option<(Host, Host, p2pnet_host::PeerId, StreamHandlerRegistration)>> {
    let server = Host::new(generate_keypair(), config.clone())?;
    let Some(addr) = listen_quic(&server, "quic.stream.throughput").await? else {
        server.shutdown().await;
        return Ok(None);
    };
    Ok(Some(client_of(server, addr, config).await?))
}

/// `server` serves [`SINK`] on `addr`; a new client connects to it.
async fn client_of(
    server: Host,
    addr: Multiaddr,
    config: HostConfig,
) -> Result<(Host, Host, p2pnet_host::PeerId, StreamHandlerRegistration)> {
    let sink_handler = server.set_stream_handler(SINK, |s: InboundStream| sink(s.stream))?;
    let client = Host::new(generate_keypair(), config)?;
    let peer = client.dial(with_p2p(&addr, server.peer_id())).await?;
    Ok((server, client, peer, sink_handler))
}

/// `host` listens on QUIC loopback: the bound address, or `None` (saying so, and that `skipping`
/// is skipped) where the host refuses QUIC addresses as invalid, i.e. has no QUIC transport.
#[allow(clippy::print_stderr, reason = "the note on what is skipped")]
pub(crate) async fn listen_quic(host: &Host, skipping: &str) -> Result<Option<Multiaddr>> {
    match host.listen_on(QUIC_LOOPBACK.parse()?).await {
        Ok(addr) => Ok(Some(addr)),
        Err(e @ HostError::InvalidAddress { .. }) => {
            eprintln!("p2pnet-bench: the host has no QUIC ({e}): skipping {skipping}");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

/// The whole group; with `only_quic`, only what QUIC adds (our and rust-libp2p's stream
/// throughput over QUIC, next to both over TCP, and the connect times through the delay relay).
pub(crate) async fn run(
    quick: bool,
    split_send_size: Option<usize>,
    only_quic: bool,
) -> Result<Vec<Figure>> {
    let mut config = HostConfig::default();
    if let Some(size) = split_send_size {
        config.yamux_split_send_size = size;
    }
    let rounds = if quick { 3 } else { 7 };
    let bytes: u64 = if quick { 256 << 20 } else { 1 << 30 };
    let chunk = vec![0x5a_u8; CHUNK];

    // Plain TCP.
    let tcp_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let tcp_addr = tcp_listener.local_addr()?;
    let tcp_server = tokio::spawn(async move {
        while let Ok((s, _)) = tcp_listener.accept().await {
            let _ = s.set_nodelay(true);
            tokio::spawn(sink(s));
        }
    });
    let (server, client, peer, _sink) = host_pair(config.clone()).await?;
    let mut theirs = rust_libp2p::Pair::new().await?;
    // The same, over QUIC: our pair where the host has QUIC, rust-libp2p's over libp2p-quic.
    let quic = quic_host_pair(config.clone()).await?;
    let mut theirs_quic = rust_libp2p::Pair::over(rust_libp2p::Transport::Quic).await?;

    let mut tcp = Figure::new("tcp.throughput", "MiB/s", true);
    let mut ours = Figure::new("host.stream.throughput", "MiB/s", true);
    let mut rust = Figure::new("rust_libp2p.stream.throughput", "MiB/s", true);
    let mut ours_quic = Figure::new("quic.stream.throughput", "MiB/s", true);
    let mut rust_quic = Figure::new("rust_libp2p.quic.stream.throughput", "MiB/s", true);
    for round in 0..rounds {
        if !only_quic {
            let s = tokio::net::TcpStream::connect(tcp_addr).await?;
            s.set_nodelay(true)?;
            let t = Instant::now();
            send(s, bytes, &chunk).await?;
            tcp.samples.push(mib_per_s(bytes, t.elapsed()));
        }

        let t = Instant::now();
        let s = client.new_stream(peer, [SINK]).await?;
        send(s, bytes, &chunk).await?;
        ours.samples.push(mib_per_s(bytes, t.elapsed()));

        let t = Instant::now();
        theirs.transfer(bytes, &chunk).await?;
        rust.samples.push(mib_per_s(bytes, t.elapsed()));

        // QUIC: ours and rust-libp2p's taking turns at going first.
        for turn in 0..2 {
            if (round + turn) % 2 == 0 {
                if let Some((_, quic_client, quic_peer, _)) = &quic {
                    let t = Instant::now();
                    let s = quic_client.new_stream(*quic_peer, [SINK]).await?;
                    send(s, bytes, &chunk).await?;
                    ours_quic.samples.push(mib_per_s(bytes, t.elapsed()));
                }
            } else {
                let t = Instant::now();
                theirs_quic.transfer(bytes, &chunk).await?;
                rust_quic.samples.push(mib_per_s(bytes, t.elapsed()));
            }
        }
    }
    if let Some((quic_server, quic_client, _, _)) = quic.as_ref() {
        quic_client.shutdown().await;
        quic_server.shutdown().await;
    }
    drop(theirs_quic);
    let mut quic_figures = Vec::new();
    if quic.is_some() {
        let mut quic_vs_rust = ours_quic.clone().against(&rust_quic);
        quic_vs_rust.name = "quic.stream.throughput.vs_rust_libp2p".into();
        quic_figures.push(ours_quic.against(&ours));
        quic_figures.push(quic_vs_rust);
    }
    quic_figures.push(rust_quic.against(&rust));
    if only_quic {
        client.shutdown().await;
        server.shutdown().await;
        tcp_server.abort();
        let mut vs_rust = ours.clone().against(&rust);
        vs_rust.name = "host.stream.throughput.vs_rust_libp2p".into();
        let mut figures = vec![ours, rust, vs_rust];
        figures.extend(quic_figures);
        figures.extend(crate::connect_rtt::run(quick).await?);
        return Ok(figures);
    }

    // Stream open on a live connection (negotiated, then closed), and a whole new connection
    // (TCP + noise + yamux + first negotiated stream), ours and rust-libp2p's in the same rounds,
    // taking turns at going first. Each sample is the mean of `opens` (or `connects`) of them.
    let opens = if quick { 200 } else { 1000 };
    // Fresh connections per round and side: each sample is their mean.
    let connects = if quick { 10 } else { 20 };
    let mut stream_open = Figure::new("host.stream_open", "µs", false);
    let mut rust_stream_open = Figure::new("rust_libp2p.stream_open", "µs", false);
    let mut connect = Figure::new("host.connect", "ms", false);
    let mut rust_connect = Figure::new("rust_libp2p.connect", "ms", false);
    let server_addr = with_p2p(&server.listen_addrs()[0], server.peer_id());
    for round in 0..rounds {
        for turn in 0..2 {
            if (round + turn) % 2 == 0 {
                let t = Instant::now();
                for _ in 0..opens {
                    let mut s = client.new_stream(peer, [SINK]).await?;
                    s.shutdown().await?;
                    let mut ack = [0u8; 1];
                    s.read_exact(&mut ack).await?;
                }
                stream_open
                    .samples
                    .push(t.elapsed().as_secs_f64() * 1e6 / opens as f64);
            } else {
                let t = Instant::now();
                for _ in 0..opens {
                    theirs.stream_open().await?;
                }
                rust_stream_open
                    .samples
                    .push(t.elapsed().as_secs_f64() * 1e6 / opens as f64);
            }
        }
        for turn in 0..2 {
            let mut took = Duration::ZERO;
            if (round + turn) % 2 == 0 {
                for _ in 0..connects {
                    took += connect_once(&server_addr).await?;
                }
                connect
                    .samples
                    .push(took.as_secs_f64() * 1e3 / connects as f64);
            } else {
                for _ in 0..connects {
                    took += theirs.connect_fresh().await?;
                }
                rust_connect
                    .samples
                    .push(took.as_secs_f64() * 1e3 / connects as f64);
            }
        }
    }

    client.shutdown().await;
    server.shutdown().await;
    tcp_server.abort();

    let vs_tcp = ours.clone().against(&tcp);
    let mut vs_rust = ours.clone().against(&rust);
    vs_rust.name = "host.stream.throughput.vs_rust_libp2p".into();
    let rust_vs_tcp = rust.clone().against(&tcp);
    let mut stream_open_vs_rust = stream_open.clone().against(&rust_stream_open);
    stream_open_vs_rust.name = "host.stream_open.vs_rust_libp2p".into();
    let mut connect_vs_rust = connect.clone().against(&rust_connect);
    connect_vs_rust.name = "host.connect.vs_rust_libp2p".into();
    let mut figures = vec![tcp, vs_tcp, rust_vs_tcp, vs_rust];
    figures.extend(quic_figures);
    figures.extend([
        stream_open,
        rust_stream_open,
        stream_open_vs_rust,
        connect,
        rust_connect,
        connect_vs_rust,
    ]);
    figures.extend(crate::connect_rtt::run(quick).await?);
    Ok(figures)
}

/// One fresh host (built before the clock starts) dials `server_addr`, opens its first stream,
/// half-closes it and reads the 1-byte answer: the time that took.
async fn connect_once(server_addr: &p2pnet_host::Multiaddr) -> Result<Duration> {
    let fresh = Host::new(
        generate_keypair(),
        HostConfig {
            identify: false,
            ..HostConfig::default()
        },
    )?;
    let t = Instant::now();
    let p = fresh.dial(server_addr.clone()).await?;
    let mut s = fresh.new_stream(p, [SINK]).await?;
    s.shutdown().await?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await?;
    let took = t.elapsed();
    fresh.shutdown().await;
    Ok(took)
}

/// Profiling aid (not in the report): `n` fresh connections, each with its first stream, to one
/// server, on `route` (`ours` or `rust`); prints the median.
pub(crate) async fn connect_only(
    route: &str,
    n: usize,
    server_identify: bool,
) -> Result<Vec<Figure>> {
    let mut figure = Figure::new(&format!("{route}.connect"), "µs", false);
    match route {
        "ours" => {
            let (server, client, _, _sink) = host_pair(HostConfig {
                identify: server_identify,
                ..HostConfig::default()
            })
            .await?;
            let server_addr = with_p2p(&server.listen_addrs()[0], server.peer_id());
            for _ in 0..n {
                let took = connect_once(&server_addr).await?;
                figure.samples.push(took.as_secs_f64() * 1e6);
            }
            client.shutdown().await;
            server.shutdown().await;
        }
        "rust" => {
            let theirs = rust_libp2p::Pair::new().await?;
            for _ in 0..n {
                let took = theirs.connect_fresh().await?;
                figure.samples.push(took.as_secs_f64() * 1e6);
            }
        }
        other => anyhow::bail!("unknown route {other:?} (ours or rust)"),
    }
    Ok(vec![figure])
}

/// Profiling aid (not in the report): `n` stream opens on one live connection, on `route`
/// (`ours` or `rust`); prints the mean per open.
pub(crate) async fn stream_open_only(route: &str, n: usize) -> Result<Vec<Figure>> {
    let mut figure = Figure::new(&format!("{route}.stream_open"), "µs", false);
    match route {
        "ours" => {
            let (server, client, peer, _sink) = host_pair(HostConfig::default()).await?;
            let t = Instant::now();
            for _ in 0..n {
                let mut s = client.new_stream(peer, [SINK]).await?;
                s.shutdown().await?;
                let mut ack = [0u8; 1];
                s.read_exact(&mut ack).await?;
            }
            figure
                .samples
                .push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
            client.shutdown().await;
            server.shutdown().await;
        }
        "rust" => {
            let mut theirs = rust_libp2p::Pair::new().await?;
            let t = Instant::now();
            for _ in 0..n {
                theirs.stream_open().await?;
            }
            figure
                .samples
                .push(t.elapsed().as_secs_f64() * 1e6 / n as f64);
        }
        other => anyhow::bail!("unknown route {other:?} (ours or rust)"),
    }
    Ok(vec![figure])
}
