//! `scale` group: one node holding many connections from client hosts on loopback.
//!
//! The clients run in a child process (`p2pnet-bench scale-clients`), so the node's resident
//! memory, read from `/proc/self/status` before and after, is its own.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use p2pnet_host::{Host, HostConfig, Limits, Multiaddr, generate_keypair, with_p2p};

use crate::report::Figure;

/// Raises the open-file soft limit to the hard limit.
fn raise_fd_limit() {
    if let Ok((_, hard)) = rlimit::Resource::NOFILE.get() {
        let _ = rlimit::Resource::NOFILE.set(hard, hard);
    }
}

fn resident_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .context("no VmRSS in /proc/self/status")
}

fn scale_config(n: usize) -> HostConfig {
    HostConfig {
        limits: Limits {
            max_connections: n + 64,
            max_pending_incoming: n + 64,
            ..Limits::default()
        },
        idle_timeout: None,
        ..HostConfig::default()
    }
}

pub(crate) async fn run(n: usize) -> Result<Vec<Figure>> {
    raise_fd_limit();
    let node = Host::new(generate_keypair(), scale_config(n))?;
    let addr = node.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    let target = with_p2p(&addr, node.peer_id());
    // Let the allocator settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = resident_kib()?;

    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args([
            "scale-clients",
            "--target",
            &target.to_string(),
            "--connections",
            &n.to_string(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the client process")?;
    let stdout = child.stdout.take().context("client stdout")?;
    // The child prints "connected N" once all its dials are done.
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).map(|_| line)
    })
    .await??;
    if !line.starts_with("connected") {
        bail!("client process failed: {line:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while node.connected_peers().len() < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Identify exchanges have finished by now; let buffers settle.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = node.connected_peers();
    let after = resident_kib()?;

    // Every connection must answer a ping: at most 64 pings in flight.
    let mut rtts = Vec::with_capacity(held.len());
    let mut answered = 0usize;
    for chunk in held.chunks(64) {
        let pings = chunk.iter().map(|p| node.ping(*p));
        for rtt in futures::future::join_all(pings).await.into_iter().flatten() {
            answered += 1;
            rtts.push(rtt.as_secs_f64() * 1e3);
        }
    }
    rtts.sort_by(f64::total_cmp);
    let p99 = rtts
        .get((rtts.len() * 99 / 100).min(rtts.len().saturating_sub(1)))
        .copied();

    let _ = child.kill();
    let _ = child.wait();
    node.shutdown().await;

    let mut memory = Figure::new("scale.idle_conn_memory", "KiB", false);
    memory
        .samples
        .push(after.saturating_sub(before) as f64 / held.len().max(1) as f64);
    let mut connections = Figure::new("scale.connections", "conns", true);
    connections.samples.push(answered as f64);
    let mut ping = Figure::new("scale.ping_p99", "ms", false);
    ping.samples.push(p99.unwrap_or(f64::NAN));
    let streams = if n >= 1000 {
        STREAMS_FULL
    } else {
        STREAMS_QUICK
    };
    let stream_memory = stream_memory(streams).await?;
    Ok(vec![memory, connections, ping, stream_memory])
}

/// Idle forwarded streams for the full run. Not 10,000: the hard file-descriptor limit of these
/// machines is 20,000 and the two nodes hold two sockets per stream.
const STREAMS_FULL: usize = 9_000;
const STREAMS_QUICK: usize = 1_000;

/// Resident memory per idle forwarded stream: node A forwards a local port to node B, which
/// bridges to a target service. The TCP clients and the target service run in a child process,
/// so the figure covers both nodes' share of a stream (A's and B's bridge, yamux stream, socket).
async fn stream_memory(n: usize) -> Result<Figure> {
    use std::io::Write as _;
    let limits = Limits {
        max_inbound_streams_per_connection: n + 64,
        max_outbound_streams_per_connection: n + 64,
        ..Limits::default()
    };
    let config = HostConfig {
        limits,
        idle_timeout: None,
        ..HostConfig::default()
    };
    let forward_config = p2pnet_forward::ForwardConfig {
        max_streams: n + 64,
        ..Default::default()
    };
    let a = Host::new(generate_keypair(), config.clone())?;
    let b = Host::new(generate_keypair(), config)?;
    let b_addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    let fa = p2pnet_forward::Forwarder::new(a.clone(), forward_config.clone());
    let fb = p2pnet_forward::Forwarder::new(b.clone(), forward_config);
    a.dial(with_p2p(&b_addr, b.peer_id())).await?;

    // The child binds the target service first and tells us its port.
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["scale-stream-clients", "--connections", &n.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the client process")?;
    let mut stdin = child.stdin.take().context("client stdin")?;
    let stdout = child.stdout.take().context("client stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let next = |what: &str| {
        rx.recv_timeout(Duration::from_secs(120))
            .with_context(|| format!("client process: no {what}"))
    };
    let target_port: u16 = next("target port")?.trim_start_matches("target ").parse()?;
    fb.listen(
        "/x/idle",
        format!("/ip4/127.0.0.1/tcp/{target_port}").parse()?,
        p2pnet_forward::ListenOptions::default(),
    )?;
    let info = fa
        .forward("/x/idle", "/ip4/127.0.0.1/tcp/0".parse()?, b.peer_id())
        .await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = resident_kib()?;
    writeln!(stdin, "{}", info.listen_addr)?;
    let connected = next("connected line")?;
    if !connected.starts_with("connected") {
        bail!("client process failed: {connected:?}");
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while (fa.list_streams().len() < n || fb.list_streams().len() < n) && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let live = fa.list_streams().len().min(fb.list_streams().len());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = resident_kib()?;
    let _ = child.kill();
    let _ = child.wait();
    fa.shutdown().await;
    fb.shutdown().await;
    a.shutdown().await;
    b.shutdown().await;
    if live < n {
        bail!("only {live} of {n} forwarded streams came up");
    }
    let mut figure = Figure::new("scale.stream_memory", "KiB", false);
    figure
        .samples
        .push(after.saturating_sub(before) as f64 / n as f64);
    Ok(figure)
}

/// The child process of `stream_memory`: a target service that echoes one byte per connection
/// and then holds it idle, and `n` clients of the forwarded port (read from stdin).
pub(crate) async fn stream_clients(n: usize) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_fd_limit();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("target {}", target.local_addr()?.port());
    tokio::spawn(async move {
        while let Ok((mut s, _)) = target.accept().await {
            tokio::spawn(async move {
                let mut b = [0u8; 1];
                if s.read_exact(&mut b).await.is_ok() && s.write_all(&b).await.is_ok() {
                    std::future::pending::<()>().await;
                }
            });
        }
    });
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    let addr: Multiaddr = line.trim().parse().context("forward address")?;
    let port = match addr.iter().nth(1) {
        Some(p2pnet_host::Protocol::Tcp(p)) => p,
        _ => bail!("not a TCP address: {addr}"),
    };
    let mut held = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(100) {
        let mut opens = Vec::new();
        for _ in (chunk * 100)..((chunk + 1) * 100).min(n) {
            opens.push(async move {
                let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
                s.write_all(b"x").await?;
                let mut b = [0u8; 1];
                s.read_exact(&mut b).await?;
                Ok::<_, std::io::Error>(s)
            });
        }
        for s in futures::future::join_all(opens).await {
            held.push(s.context("forwarded connection")?);
        }
    }
    println!("connected {n}");
    std::future::pending::<()>().await;
    Ok(())
}

/// The child process: `n` client hosts each holding one connection to `target`.
pub(crate) async fn clients(target: &str, n: usize) -> Result<()> {
    raise_fd_limit();
    let target: Multiaddr = target.parse().context("--target")?;
    let config = HostConfig {
        idle_timeout: None,
        ..HostConfig::default()
    };
    let mut hosts = Vec::with_capacity(n);
    for chunk in 0..n.div_ceil(50) {
        let mut dials = Vec::new();
        for _ in (chunk * 50)..((chunk + 1) * 50).min(n) {
            let host = Host::new(generate_keypair(), config.clone())?;
            let t = target.clone();
            let h = host.clone();
            dials.push(async move { h.dial(t).await });
            hosts.push(host);
        }
        for r in futures::future::join_all(dials).await {
            r.context("client dial")?;
        }
    }
    println!("connected {n}");
    // Hold the connections until the parent kills us.
    std::future::pending::<()>().await;
    Ok(())
}
