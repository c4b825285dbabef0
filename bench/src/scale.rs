//! `scale` group: one node holding many connections from client hosts on loopback, and many idle
//! forwarded streams through one pair of nodes.
//!
//! Everything not measured runs in child processes of this binary (`scale-clients`,
//! `scale-stream-node`, `scale-stream-target`, `scale-stream-clients`), so each node's resident
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

/// How long any step of the stream benchmark may take.
const STEP: Duration = Duration::from_secs(120);

/// A child process of this binary, talked to by lines on stdin and stdout; killed on drop.
struct ChildProc {
    what: &'static str,
    child: std::process::Child,
    stdin: std::process::ChildStdin,
    lines: std::sync::mpsc::Receiver<String>,
}

impl ChildProc {
    fn spawn(what: &'static str, args: &[&str]) -> Result<Self> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting the {what} process"))?;
        let stdin = child.stdin.take().context("child stdin")?;
        let stdout = child.stdout.take().context("child stdout")?;
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Ok(Self {
            what,
            child,
            stdin,
            lines,
        })
    }

    /// The next line starting with `prefix`, without it (blocking; bounded by `STEP`).
    async fn expect(&self, prefix: &str) -> Result<String> {
        let line = tokio::task::block_in_place(|| self.lines.recv_timeout(STEP))
            .with_context(|| format!("{} process: no {prefix:?} line", self.what))?;
        line.strip_prefix(prefix)
            .map(|rest| rest.trim().to_owned())
            .with_context(|| format!("{} process said {line:?}, not {prefix:?}", self.what))
    }

    fn say(&mut self, line: &str) -> Result<()> {
        use std::io::Write as _;
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Reads one line from stdin (blocking, in a runtime thread that may block).
fn read_stdin_line() -> Result<String> {
    let mut line = String::new();
    tokio::task::block_in_place(|| std::io::stdin().read_line(&mut line))?;
    Ok(line.trim().to_owned())
}

fn stream_host_config(n: usize) -> HostConfig {
    HostConfig {
        limits: Limits {
            max_inbound_streams_per_connection: n + 64,
            max_outbound_streams_per_connection: n + 64,
            ..Limits::default()
        },
        idle_timeout: None,
        ..HostConfig::default()
    }
}

fn stream_forward_config(n: usize) -> p2pnet_forward::ForwardConfig {
    p2pnet_forward::ForwardConfig {
        max_streams: n + 64,
        max_streams_per_peer: n + 64,
        max_streams_per_listener: n + 64,
        reserved_local_streams: 0,
        ..Default::default()
    }
}

/// Polls `count` every 50 ms until it reaches `n` or `STEP` passes; returns the last count.
async fn wait_for(n: usize, count: impl Fn() -> usize) -> usize {
    let deadline = Instant::now() + STEP;
    let mut seen = count();
    while seen < n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
        seen = count();
    }
    seen
}

/// Resident memory per idle forwarded stream: node A (this process) forwards a local port to
/// node B, which bridges every stream to a target service. Node B, the target service and the
/// TCP clients each run in a child process of their own, so that each process holds about one
/// socket per stream (the hard file-descriptor limit here is 20,000) and each node's resident
/// memory, before and after, is its own. Reports both nodes together and each node alone.
pub(crate) async fn stream_memory(n: usize) -> Result<Vec<Figure>> {
    raise_fd_limit();
    let n_arg = n.to_string();
    let target = ChildProc::spawn("target", &["scale-stream-target"])?;
    let target_port = target.expect("target ").await?;
    let mut node_b = ChildProc::spawn(
        "node B",
        &[
            "scale-stream-node",
            "--port",
            &target_port,
            "--connections",
            &n_arg,
        ],
    )?;
    let (b_addr, b_before) = {
        let ready = node_b.expect("ready ").await?;
        let (addr, rss) = ready
            .split_once(' ')
            .context("node B: ready <addr> <rss>")?;
        (addr.parse::<Multiaddr>()?, rss.parse::<u64>()?)
    };
    let b_peer = match b_addr.iter().last() {
        Some(p2pnet_host::Protocol::P2p(peer)) => peer,
        _ => bail!("node B's address has no /p2p: {b_addr}"),
    };

    let a = Host::new(generate_keypair(), stream_host_config(n))?;
    let fa = p2pnet_forward::Forwarder::new(a.clone(), stream_forward_config(n));
    a.dial(b_addr).await?;
    let info = fa
        .forward("/x/idle", "/ip4/127.0.0.1/tcp/0".parse()?, b_peer)
        .await?;
    let port = match info.listen_addr.iter().nth(1) {
        Some(p2pnet_host::Protocol::Tcp(p)) => p,
        _ => bail!("not a TCP address: {}", info.listen_addr),
    };
    // Let the allocator settle before the baseline.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a_before = resident_kib()?;

    let clients = ChildProc::spawn(
        "clients",
        &[
            "scale-stream-clients",
            "--port",
            &port.to_string(),
            "--connections",
            &n_arg,
        ],
    )?;
    let opened = clients.expect("connected ").await?;
    if opened != n_arg {
        bail!("clients opened {opened} of {n} connections");
    }
    node_b.say("measure")?;
    let a_streams = wait_for(n, || fa.list_streams().len()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let a_after = resident_kib()?;
    let (b_streams, b_after) = {
        let measured = node_b.expect("measured ").await?;
        let (streams, rss) = measured
            .split_once(' ')
            .context("node B: measured <streams> <rss>")?;
        (streams.parse::<usize>()?, rss.parse::<u64>()?)
    };
    drop(clients);
    drop(node_b);
    drop(target);
    fa.shutdown().await;
    a.shutdown().await;
    if a_streams < n || b_streams < n {
        bail!(
            "only {a_streams} (node A) and {b_streams} (node B) of {n} forwarded streams came up"
        );
    }

    let per_stream = |before: u64, after: u64| after.saturating_sub(before) as f64 / n as f64;
    let (per_a, per_b) = (per_stream(a_before, a_after), per_stream(b_before, b_after));
    let mut both = Figure::new("scale.stream_memory", "KiB", false);
    both.samples.push(per_a + per_b);
    let mut node_a = Figure::new("scale.stream_memory.node_a", "KiB", false);
    node_a.samples.push(per_a);
    let mut node_b = Figure::new("scale.stream_memory.node_b", "KiB", false);
    node_b.samples.push(per_b);
    Ok(vec![both, node_a, node_b])
}

/// Child process: node B. Listens, bridges `/x/idle` to the target service on `target_port`,
/// prints `ready <addr> <rss KiB>`; on `measure` (stdin) waits for `n` streams and prints
/// `measured <streams> <rss KiB>`; then holds everything until killed.
pub(crate) async fn stream_node(target_port: u16, n: usize) -> Result<()> {
    raise_fd_limit();
    let b = Host::new(generate_keypair(), stream_host_config(n))?;
    let addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    let fb = p2pnet_forward::Forwarder::new(b.clone(), stream_forward_config(n));
    fb.listen(
        "/x/idle",
        format!("/ip4/127.0.0.1/tcp/{target_port}").parse()?,
        p2pnet_forward::ListenOptions::default(),
    )?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    println!("ready {} {}", with_p2p(&addr, b.peer_id()), resident_kib()?);
    let command = read_stdin_line()?;
    if command != "measure" {
        bail!("node B: unexpected command {command:?}");
    }
    let streams = wait_for(n, || fb.list_streams().len()).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    println!("measured {streams} {}", resident_kib()?);
    std::future::pending::<()>().await;
    Ok(())
}

/// Child process: the target service. Echoes one byte per connection, then holds it idle.
pub(crate) async fn stream_target() -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_fd_limit();
    let target = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    println!("target {}", target.local_addr()?.port());
    loop {
        let (mut s, _) = target.accept().await?;
        tokio::spawn(async move {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).await.is_ok() && s.write_all(&b).await.is_ok() {
                std::future::pending::<()>().await;
            }
        });
    }
}

/// Child process: `n` TCP clients of the forwarded port, each writing one byte and reading the
/// echo (so every bridge is live), 100 at a time; prints `connected <n>`, then holds them.
pub(crate) async fn stream_clients(port: u16, n: usize) -> Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    raise_fd_limit();
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
        let opened = tokio::time::timeout(STEP, futures::future::join_all(opens))
            .await
            .context("opening forwarded connections timed out")?;
        for s in opened {
            held.push(s.context("forwarded connection")?);
        }
    }
    println!("connected {}", held.len());
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
