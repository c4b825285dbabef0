//! Messages per second between two peers (64 B, 1 KiB, 64 KiB payloads) and broadcast latency
//! to 32 peers, all real hosts on 127.0.0.1. Run by `cargo xtask bench messaging`:
//! `cargo run --release -p p2pnet-messaging --example messaging_bench -- [--quick] [--json]`.
//!
//! Throughput is counted at the receiving sink: a message counts once it is delivered. The
//! sender retries on `Backpressure` (the per-peer queue is full), yielding to let it drain.
//! Every loop is bounded in count and in time; a stall is reported as an error.
//!
//! Broadcast latency: a hub node with sessions to exactly 32 receivers calls
//! [`Messenger::broadcast`]; the figure is the time until all 32 sinks have the message.
#![allow(clippy::print_stdout)] // a benchmark program: stdout is its report

// The results type and JSON/table printer shared with `p2pnet-bench`, so every group reports
// alike (median of the rounds, min and max). This example uses no baselines.
#[allow(dead_code)]
#[path = "../../../bench/src/report.rs"]
mod report;

use std::time::{Duration, Instant};

use p2pnet_host::{Host, HostConfig, generate_keypair, with_p2p};
use p2pnet_messaging::{InboundMessage, MessagingConfig, MessagingError, Messenger, Priority};
use report::Figure;
use tokio::sync::mpsc;

type BenchResult<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// How long one measurement may take before it counts as a stall.
const STALL: Duration = Duration::from_secs(30);

struct Node {
    host: Host,
    messenger: Messenger,
    inbox: mpsc::Receiver<InboundMessage>,
}

async fn node() -> BenchResult<Node> {
    let host = Host::new(generate_keypair(), HostConfig::default())?;
    host.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
    let (tx, inbox) = mpsc::channel(65_536);
    let config = MessagingConfig {
        // Measure the wire and sessions, not snappy.
        compression: false,
        ..MessagingConfig::default()
    };
    let messenger = Messenger::new(host.clone(), config, tx);
    messenger.start()?;
    Ok(Node {
        host,
        messenger,
        inbox,
    })
}

async fn connect(a: &Node, b: &Node) -> BenchResult<()> {
    let addr = with_p2p(&b.host.listen_addrs()[0], b.host.peer_id());
    a.host.dial(addr).await?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.messenger.has_session(&b.host.peer_id())
        && b.messenger.has_session(&a.host.peer_id()))
    {
        if Instant::now() >= deadline {
            return Err("no messaging session within 10 s".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    Ok(())
}

/// Sends `count` messages of `size` bytes from `a` to `b`; returns messages per second, counted
/// when the last one reaches `b`'s sink.
async fn throughput(a: &Node, b: &mut Node, size: usize, count: usize) -> BenchResult<f64> {
    let payload = bytes::Bytes::from(vec![0x5a_u8; size]);
    let to = b.host.peer_id();
    let started = Instant::now();
    let deadline = started + STALL;
    let receive = async {
        let mut got = 0usize;
        while got < count {
            let left = deadline.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, b.inbox.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => return Err(format!("{size} B: {got} of {count} delivered in {STALL:?}")),
            }
        }
        Ok(())
    };
    let send = async {
        let mut sent = 0usize;
        while sent < count {
            match a
                .messenger
                .send_to_peer(&to, "bench", payload.clone(), Priority::Normal)
            {
                Ok(()) => sent += 1,
                Err(MessagingError::Backpressure { .. }) => {
                    if Instant::now() >= deadline {
                        return Err(format!("{size} B: {sent} of {count} queued in {STALL:?}"));
                    }
                    tokio::task::yield_now().await;
                }
                Err(e) => return Err(format!("send failed: {e}")),
            }
        }
        Ok(())
    };
    let (sent, received) = tokio::join!(send, receive);
    sent?;
    received?;
    Ok(count as f64 / started.elapsed().as_secs_f64())
}

/// One `broadcast` from `hub` (whose only sessions are the receivers): microseconds until every
/// receiver's sink has it.
async fn broadcast_latency(hub: &Node, to: &mut [Node]) -> BenchResult<f64> {
    let started = Instant::now();
    let report = hub
        .messenger
        .broadcast("bcast", &b"x"[..], Priority::High)?;
    if report.reached.len() != to.len() {
        return Err(format!(
            "broadcast reached {} of {} peers ({} failed)",
            report.reached.len(),
            to.len(),
            report.failed.len()
        )
        .into());
    }
    let deadline = started + Duration::from_secs(10);
    for n in to.iter_mut() {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, n.inbox.recv()).await {
            Ok(Some(_)) => {}
            _ => return Err("a broadcast was not delivered within 10 s".into()),
        }
    }
    Ok(started.elapsed().as_secs_f64() * 1e6)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> BenchResult<()> {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let rounds = if quick { 3 } else { 5 };
    let scale = if quick { 1 } else { 3 };

    let a = node().await?;
    let mut b = node().await?;
    connect(&a, &b).await?;
    let cases: [(&str, usize, usize); 3] = [
        ("messaging.msgs.64b", 64, 200_000 * scale),
        ("messaging.msgs.1kib", 1024, 50_000 * scale),
        ("messaging.msgs.64kib", 64 * 1024, 2_000 * scale),
    ];
    let mut figures: Vec<Figure> = cases
        .iter()
        .map(|(name, _, _)| Figure::new(name, "msgs/s", true))
        .collect();
    // Rounds alternate the sizes so that a noisy moment hits them all alike.
    for _ in 0..rounds {
        for (i, (_, size, count)) in cases.iter().enumerate() {
            let rate = throughput(&a, &mut b, *size, *count).await?;
            figures[i].samples.push(rate);
        }
    }

    let hub = node().await?;
    let mut receivers = Vec::new();
    for _ in 0..32 {
        let r = node().await?;
        connect(&hub, &r).await?;
        receivers.push(r);
    }
    let mut latency = Figure::new("messaging.broadcast_latency.32", "µs", false);
    for _ in 0..rounds * 10 {
        let us = broadcast_latency(&hub, &mut receivers).await?;
        latency.samples.push(us);
    }
    figures.push(latency);

    report::print(&figures, json);
    for n in receivers.into_iter().chain([a, b, hub]) {
        n.messenger.shutdown().await;
        n.host.shutdown().await;
    }
    Ok(())
}
