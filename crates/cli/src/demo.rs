//! `p2pnet demo`: three nodes in this process on 127.0.0.1. Node c offers a TCP echo service on
//! `/x/demo-echo`, node a forwards a local port to it and pushes some MiB through and back, then
//! a broadcasts messages that b's and c's dispatchers deliver to subscribers. Prints a summary.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use p2pnet_dispatcher::SubscriberOptions;
use p2pnet_host::{Protocol, with_p2p};
use p2pnet_messaging::Priority;
use p2pnet_netservice::{ListenTunnel, NetConfig, NetService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const PROTOCOL: &str = "/x/demo-echo";
const KIND: &str = "demo";
/// Bytes pushed through the tunnel (and echoed back).
const TRANSFER: u64 = 32 * 1024 * 1024;
const MESSAGES: u64 = 500;
/// Every step is bounded by this.
const STEP_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) async fn run() -> Result<()> {
    let mut config = NetConfig::default();
    config.host.listen_addrs = vec!["/ip4/127.0.0.1/tcp/0".into()];
    let mut nodes = Vec::new();
    for _ in 0..3 {
        let svc = NetService::new(config.clone())?;
        svc.start().await?;
        nodes.push(svc);
    }
    let result = tokio::time::timeout(STEP_TIMEOUT * 3, scenario(&nodes)).await;
    for svc in &nodes {
        svc.stop().await;
    }
    result.context("the demo took too long")?
}

fn addr_of(svc: &NetService) -> Result<String> {
    let addr = svc
        .listen_addrs()
        .into_iter()
        .next()
        .context("no listen address")?;
    Ok(with_p2p(&addr, svc.peer_id()).to_string())
}

fn bar(len: u64, template: &str) -> ProgressBar {
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

async fn scenario(nodes: &[NetService]) -> Result<()> {
    let [a, b, c] = nodes else {
        bail!("the demo needs three nodes")
    };
    println!(
        "nodes: a {}  b {}  c {}",
        a.peer_id(),
        b.peer_id(),
        c.peer_id()
    );

    // Connect every pair and wait for the message sessions.
    a.host().dial(addr_of(b)?.parse()?).await?;
    a.host().dial(addr_of(c)?.parse()?).await?;
    b.host().dial(addr_of(c)?.parse()?).await?;
    let deadline = Instant::now() + STEP_TIMEOUT;
    while nodes.iter().any(|n| n.peers().len() < 2) {
        if Instant::now() > deadline {
            bail!("the three nodes did not all connect");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("connected: 3 nodes, 3 connections");

    // c: a TCP echo service, offered on /x/demo-echo. a: a local port forwarded to it.
    let echo = TcpListener::bind("127.0.0.1:0").await?;
    let echo_port = echo.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = echo.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    c.listen(ListenTunnel {
        protocol: PROTOCOL.into(),
        target_addr: format!("/ip4/127.0.0.1/tcp/{echo_port}"),
        report_peer_id: false,
        allow: vec![],
    })?;
    let entry = a
        .forward(PROTOCOL, "/ip4/127.0.0.1/tcp/0", &addr_of(c)?)
        .await?;
    let entry_port = entry
        .listen_addr
        .iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .context("the forward listener has no TCP port")?;
    println!(
        "forwarding: a {} -> c {PROTOCOL} -> 127.0.0.1:{echo_port}",
        entry.listen_addr
    );

    let started = Instant::now();
    let progress = bar(
        TRANSFER,
        "echo  [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
    );
    let stream = TcpStream::connect(("127.0.0.1", entry_port)).await?;
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let chunk = vec![0x5a_u8; 64 * 1024];
        let mut sent = 0;
        while sent < TRANSFER {
            wr.write_all(&chunk).await?;
            sent += chunk.len() as u64;
        }
        wr.shutdown().await
    });
    let mut buf = vec![0u8; 64 * 1024];
    let mut back = 0u64;
    let read_all = async {
        while back < TRANSFER {
            let n = rd.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            back += n as u64;
            progress.set_position(back);
        }
        std::io::Result::Ok(())
    };
    tokio::time::timeout(STEP_TIMEOUT, read_all)
        .await
        .context("the echo transfer took too long")??;
    writer.await??;
    progress.finish_and_clear();
    let elapsed = started.elapsed();
    if back != TRANSFER {
        bail!("echo returned {back} of {TRANSFER} bytes");
    }
    let mib = TRANSFER as f64 / (1024.0 * 1024.0);

    // Messages: a broadcasts, b's and c's dispatchers deliver them to subscribers.
    let mut subs = vec![
        b.register(
            &[KIND],
            SubscriberOptions::new().capacity(MESSAGES as usize),
        )?,
        c.register(
            &[KIND],
            SubscriberOptions::new().capacity(MESSAGES as usize),
        )?,
    ];
    let progress = bar(2 * MESSAGES, "msgs  [{bar:30}] {pos}/{len}");
    let msg_started = Instant::now();
    let mut refused = 0;
    for i in 0..MESSAGES {
        let payload = format!("demo message {i}").into_bytes();
        let mut report = a.broadcast(KIND, payload.clone(), Priority::Normal)?;
        let mut tries = 0;
        while !report.failed.is_empty() && tries < 100 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let failed: Vec<_> = report.failed.iter().map(|(p, _)| *p).collect();
            report = a.send_to_peers(
                |p| failed.contains(p),
                KIND,
                payload.clone(),
                Priority::Normal,
            )?;
            tries += 1;
        }
        refused += report.failed.len();
    }
    let mut delivered = 0u64;
    let deadline = tokio::time::Instant::now() + STEP_TIMEOUT;
    'outer: for sub in &mut subs {
        for _ in 0..MESSAGES {
            match tokio::time::timeout_at(deadline, sub.recv_async()).await {
                Ok(Ok(_)) => {
                    delivered += 1;
                    progress.set_position(delivered);
                }
                _ => break 'outer,
            }
        }
    }
    progress.finish_and_clear();
    let msg_elapsed = msg_started.elapsed();

    let (ma, mb) = (a.metrics(), b.metrics());
    println!();
    println!("summary");
    println!(
        "  echo through the tunnel: {mib:.0} MiB there and back in {:.2} s ({:.0} MiB/s each way)",
        elapsed.as_secs_f64(),
        mib / elapsed.as_secs_f64()
    );
    println!(
        "  messages: {delivered} of {} delivered to subscribers in {:.0} ms ({refused} refused)",
        2 * MESSAGES,
        msg_elapsed.as_secs_f64() * 1e3
    );
    println!(
        "  a: {} connections, {} message sessions, {} bytes of messages sent",
        ma.host.connections_inbound + ma.host.connections_outbound,
        ma.messaging.sessions_open,
        ma.messaging.wire_bytes_out
    );
    println!(
        "  b: dispatcher received {}, forwarding listeners on a: {}, streams open on a: {}",
        mb.dispatcher.received, ma.forward_listeners, ma.forward_streams
    );
    if delivered != 2 * MESSAGES {
        bail!("only {delivered} of {} messages delivered", 2 * MESSAGES);
    }
    Ok(())
}
