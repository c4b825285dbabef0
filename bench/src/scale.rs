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
    Ok(vec![memory, connections, ping])
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
