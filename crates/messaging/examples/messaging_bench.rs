//! Messages per second between two peers (64 B, 1 KiB, 64 KiB payloads) and broadcast latency
//! to 32 peers, all real hosts on 127.0.0.1. Run by `cargo xtask bench messaging`:
//! `cargo run --release -p p2pnet-messaging --example messaging_bench -- [--quick] [--json]`.
//!
//! Throughput is counted at the receiving sink: a message counts once it is delivered. The
//! sender retries on `Backpressure` (the per-peer queue is full), yielding to let it drain.
#![allow(clippy::print_stdout)] // a benchmark program: stdout is its report

use std::time::{Duration, Instant};

use p2pnet_host::{Host, HostConfig, generate_keypair, with_p2p};
use p2pnet_messaging::{InboundMessage, MessagingConfig, MessagingError, Messenger, Priority};
use tokio::sync::mpsc;

struct Node {
    host: Host,
    messenger: Messenger,
    inbox: mpsc::Receiver<InboundMessage>,
}

async fn node() -> Node {
    let host = Host::new(generate_keypair(), HostConfig::default()).expect("host");
    host.listen_on("/ip4/127.0.0.1/tcp/0".parse().expect("addr"))
        .await
        .expect("listen");
    let (tx, inbox) = mpsc::channel(65_536);
    let config = MessagingConfig {
        // Measure the wire and sessions, not snappy.
        compression: false,
        ..MessagingConfig::default()
    };
    let messenger = Messenger::new(host.clone(), config, tx);
    messenger.start().expect("start messaging");
    Node {
        host,
        messenger,
        inbox,
    }
}

async fn connect(a: &Node, b: &Node) {
    let addr = with_p2p(&b.host.listen_addrs()[0], b.host.peer_id());
    a.host.dial(addr).await.expect("dial");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.messenger.has_session(&b.host.peer_id())
        && b.messenger.has_session(&a.host.peer_id()))
    {
        assert!(Instant::now() < deadline, "no session");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sends `count` messages of `size` bytes from `a` to `b`; returns messages per second.
async fn throughput(a: &Node, b: &mut Node, size: usize, count: usize) -> f64 {
    let payload = bytes::Bytes::from(vec![0x5a_u8; size]);
    let to = b.host.peer_id();
    let started = Instant::now();
    let receive = async {
        let mut got = 0usize;
        while got < count {
            match tokio::time::timeout(Duration::from_secs(30), b.inbox.recv()).await {
                Ok(Some(_)) => got += 1,
                _ => panic!("delivery stalled after {got} of {count}"),
            }
        }
    };
    let send = async {
        let mut sent = 0usize;
        while sent < count {
            match a
                .messenger
                .send_to_peer(&to, "bench", payload.clone(), Priority::Normal)
            {
                Ok(()) => sent += 1,
                Err(MessagingError::Backpressure { .. }) => tokio::task::yield_now().await,
                Err(e) => panic!("send failed: {e}"),
            }
        }
    };
    tokio::join!(send, receive);
    count as f64 / started.elapsed().as_secs_f64()
}

/// One message to all 32 receivers at once (a broadcast to that peer set): microseconds until all have it.
async fn broadcast_latency(from: &Node, to: &mut [Node]) -> f64 {
    let targets: std::collections::HashSet<_> = to.iter().map(|n| n.host.peer_id()).collect();
    let started = Instant::now();
    let report = from
        .messenger
        .send_to_peers(|p| targets.contains(p), "bcast", &b"x"[..], Priority::High)
        .expect("broadcast");
    assert_eq!(report.reached.len(), to.len());
    for n in to.iter_mut() {
        tokio::time::timeout(Duration::from_secs(10), n.inbox.recv())
            .await
            .expect("delivered");
    }
    started.elapsed().as_secs_f64() * 1e6
}

struct Figure {
    name: &'static str,
    unit: &'static str,
    samples: Vec<f64>,
}

impl Figure {
    fn stats(&self) -> (f64, f64, f64) {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        let median = s[s.len() / 2];
        (median, s[0], s[s.len() - 1])
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let json = args.iter().any(|a| a == "--json");
    let rounds = if quick { 3 } else { 5 };
    let scale = if quick { 1 } else { 3 };

    let a = node().await;
    let mut b = node().await;
    connect(&a, &b).await;
    let cases: [(&'static str, usize, usize); 3] = [
        ("messaging.msgs.64b", 64, 200_000 * scale),
        ("messaging.msgs.1kib", 1024, 50_000 * scale),
        ("messaging.msgs.64kib", 64 * 1024, 2_000 * scale),
    ];
    let mut figures: Vec<Figure> = cases
        .iter()
        .map(|(name, _, _)| Figure {
            name,
            unit: "msgs/s",
            samples: Vec::new(),
        })
        .collect();
    // Rounds alternate the sizes so that a noisy moment hits them all alike.
    for _ in 0..rounds {
        for (i, (_, size, count)) in cases.iter().enumerate() {
            let rate = throughput(&a, &mut b, *size, *count).await;
            figures[i].samples.push(rate);
        }
    }

    let mut receivers = Vec::new();
    for _ in 0..32 {
        let r = node().await;
        connect(&a, &r).await;
        receivers.push(r);
    }
    let mut latency = Figure {
        name: "messaging.broadcast_latency.32",
        unit: "µs",
        samples: Vec::new(),
    };
    for _ in 0..rounds * 10 {
        latency
            .samples
            .push(broadcast_latency(&a, &mut receivers).await);
    }
    figures.push(latency);

    for f in &figures {
        let (median, min, max) = f.stats();
        if json {
            println!(
                "{{\"name\":\"{}\",\"unit\":\"{}\",\"median\":{median:.1},\"min\":{min:.1},\"max\":{max:.1},\"baseline\":null,\"ratio\":null}}",
                f.name, f.unit
            );
        } else {
            println!(
                "{:<34} {median:>14.1} {:<7} [{min:.1} – {max:.1}]",
                f.name, f.unit
            );
        }
    }
    for n in receivers.into_iter().chain([a, b]) {
        n.messenger.shutdown().await;
        n.host.shutdown().await;
    }
}
