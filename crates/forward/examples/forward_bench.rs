//! Forwarding benchmark: one TCP client → forward on node A → node B → TCP sink/echo server,
//! all on 127.0.0.1, next to the same traffic over plain TCP loopback, alternating rounds in one
//! process run.
//!
//! ```text
//! cargo run --release -p p2pnet-forward --example forward_bench -- [--quick] [--json]
//! ```
//!
//! Reports throughput (MiB/s, one connection), 64-byte ping-pong round-trip time (µs) and the
//! aggregate throughput of many concurrent connections (100 × 16 MiB; `--quick`: 20 × 4 MiB).
//! `--json` prints one object per line: `{"name","unit","median","min","max","baseline",
//! "ratio"}`; `ratio` is ours / baseline for throughput and baseline / ours for latency, so a
//! ratio above 1 is always better.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use p2pnet_forward::{ForwardConfig, Forwarder, ListenOptions};
use p2pnet_host::{Host, HostConfig, Protocol, generate_keypair, with_p2p};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const WRITE: usize = 256 * 1024;

struct Params {
    rounds: usize,
    bytes: usize,
    pings: usize,
    many: usize,
    many_bytes: usize,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
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

    // Plain services on loopback.
    let sink = serve(|s| Box::pin(sink(s))).await?;
    let echo = serve(|s| Box::pin(echo(s))).await?;

    // Node B serves both through remote listeners; node A forwards local ports to them.
    let b = Host::new(generate_keypair(), HostConfig::default())?;
    let b_addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    let fb = Forwarder::new(b.clone(), ForwardConfig::default());
    fb.listen("/x/sink", tcp(sink), ListenOptions::default())?;
    fb.listen("/x/echo", tcp(echo), ListenOptions::default())?;
    let a = Host::new(generate_keypair(), HostConfig::default())?;
    a.dial(with_p2p(&b_addr, b.peer_id())).await?;
    let fa = Forwarder::new(a.clone(), ForwardConfig::default());
    let any = "/ip4/127.0.0.1/tcp/0".parse()?;
    let fsink = port(&fa.forward("/x/sink", any, b.peer_id()).await?.listen_addr)?;
    let any = "/ip4/127.0.0.1/tcp/0".parse()?;
    let fecho = port(&fa.forward("/x/echo", any, b.peer_id()).await?.listen_addr)?;

    let (mut tcp_tp, mut fwd_tp, mut tcp_rtt, mut fwd_rtt) = (vec![], vec![], vec![], vec![]);
    for _ in 0..p.rounds {
        tcp_tp.push(throughput(sink, p.bytes).await?);
        fwd_tp.push(throughput(fsink, p.bytes).await?);
        tcp_rtt.push(rtt(echo, p.pings).await?);
        fwd_rtt.push(rtt(fecho, p.pings).await?);
    }
    let tcp_many = many(sink, p.many, p.many_bytes).await?;
    let fwd_many = many(fsink, p.many, p.many_bytes).await?;

    let tcp_tp = Stats::of(&tcp_tp);
    let fwd_tp = Stats::of(&fwd_tp);
    let tcp_rtt = Stats::of(&tcp_rtt);
    let fwd_rtt = Stats::of(&fwd_rtt);
    let tcp_many = Stats::of(&[tcp_many]);
    let fwd_many = Stats::of(&[fwd_many]);
    let rows = [
        // Named apart from the host group's `tcp.throughput`: this one ran beside the tunnel.
        ("tcp.throughput.alongside_forward", "MiB/s", tcp_tp, None),
        (
            "forward.throughput",
            "MiB/s",
            fwd_tp,
            Some((
                "tcp.throughput.alongside_forward",
                fwd_tp.median / tcp_tp.median,
            )),
        ),
        ("tcp.rtt", "us", tcp_rtt, None),
        (
            "forward.rtt",
            "us",
            fwd_rtt,
            Some(("tcp.rtt", tcp_rtt.median / fwd_rtt.median)),
        ),
        ("tcp.many.throughput", "MiB/s", tcp_many, None),
        (
            "forward.many.throughput",
            "MiB/s",
            fwd_many,
            Some(("tcp.many.throughput", fwd_many.median / tcp_many.median)),
        ),
    ];
    if !json {
        println!(
            "rounds {}, {} MiB per throughput round, {} pings per rtt round, {} x {} MiB concurrent",
            p.rounds,
            p.bytes >> 20,
            p.pings,
            p.many,
            p.many_bytes >> 20
        );
    }
    for (name, unit, s, base) in rows {
        if json {
            let (baseline, ratio) = match base {
                Some((b, r)) => (format!("\"{b}\""), format!("{r:.3}")),
                None => ("null".into(), "null".into()),
            };
            println!(
                "{{\"name\":\"{name}\",\"unit\":\"{unit}\",\"median\":{:.3},\"min\":{:.3},\"max\":{:.3},\"baseline\":{baseline},\"ratio\":{ratio}}}",
                s.median, s.min, s.max
            );
        } else {
            let extra = base.map_or(String::new(), |(_, r)| format!("  ratio {r:.2}"));
            println!(
                "{name:<26} median {:>10.1} {unit:<6} min {:>10.1}  max {:>10.1}{extra}",
                s.median, s.min, s.max
            );
        }
    }
    fa.shutdown().await;
    fb.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

#[derive(Clone, Copy)]
struct Stats {
    median: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(v: &[f64]) -> Stats {
        let mut v = v.to_vec();
        v.sort_by(f64::total_cmp);
        Stats {
            median: v[v.len() / 2],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}

fn tcp(port: u16) -> p2pnet_host::Multiaddr {
    p2pnet_host::Multiaddr::empty()
        .with(Protocol::Ip4([127, 0, 0, 1].into()))
        .with(Protocol::Tcp(port))
}

fn port(addr: &p2pnet_host::Multiaddr) -> anyhow::Result<u16> {
    match addr.iter().last() {
        Some(Protocol::Tcp(p)) => Ok(p),
        _ => anyhow::bail!("not a tcp address: {addr}"),
    }
}

type ServeFn =
    fn(TcpStream) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + 'static>>;

async fn serve(f: ServeFn) -> anyhow::Result<u16> {
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
async fn throughput(port: u16, bytes: usize) -> anyhow::Result<f64> {
    let start = Instant::now();
    send(port, bytes).await?;
    Ok(bytes as f64 / (1 << 20) as f64 / start.elapsed().as_secs_f64())
}

async fn send(port: u16, bytes: usize) -> anyhow::Result<()> {
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
async fn rtt(port: u16, pings: usize) -> anyhow::Result<f64> {
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
async fn many(port: u16, n: usize, bytes: usize) -> anyhow::Result<f64> {
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
