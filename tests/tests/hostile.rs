//! Hostile peers against a full node: floods of streams over the limit and of garbage. The node
//! refuses and counts them, its resident memory stays bounded, and a good peer sees no error.

use std::time::Duration;

use p2pnet_dispatcher::SubscriberOptions;
use p2pnet_host::{Host, HostConfig, generate_keypair, with_p2p};
use p2pnet_messaging::Priority;
use p2pnet_netservice::{NetConfig, NetService};
use tokio::io::AsyncWriteExt;

fn resident_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_and_garbage_floods_are_refused_and_memory_stays_bounded() {
    let mut config = NetConfig::default();
    config.host.listen_addrs = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.host.max_inbound_streams_per_connection = 64;
    config.host.handshake_timeout_ms = 500;
    let node = NetService::new(config).unwrap();
    node.start().await.unwrap();
    let node_addr = with_p2p(&node.listen_addrs()[0], node.peer_id());

    // A good peer with a message session.
    let mut good_config = NetConfig::default();
    good_config.host.listen_addrs = vec!["/ip4/127.0.0.1/tcp/0".into()];
    good_config.bootstrap = vec![node_addr.to_string()];
    let good = NetService::new(good_config).unwrap();
    good.start().await.unwrap();
    let mut inbox = node.register(&["ping"], SubscriberOptions::new()).unwrap();
    for _ in 0..500 {
        if good.peers().contains(&node.peer_id()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = resident_kib();

    // The attacker: a real libp2p host opening 3,000 streams that it never closes (the node's
    // limit is 64 per connection), on a protocol the node does not serve and on one it does.
    let attacker = Host::new(
        generate_keypair(),
        HostConfig {
            identify: false,
            ..HostConfig::default()
        },
    )
    .unwrap();
    let peer = attacker.dial(node_addr.clone()).await.unwrap();
    let mut held = Vec::new();
    let mut refused = 0u32;
    // Opens the attacker's own stream limit refuses never reach the node.
    let mut refused_locally = 0u32;
    for i in 0..3000u32 {
        let proto = if i % 2 == 0 {
            "/p2pnet/msg/1.0.0"
        } else {
            "/nope/1.0.0"
        };
        let open =
            tokio::time::timeout(Duration::from_secs(5), attacker.new_stream(peer, [proto])).await;
        match open {
            Ok(Ok(s)) => held.push(s),
            Ok(Err(p2pnet_host::HostError::LimitReached { .. })) => refused_locally += 1,
            _ => refused += 1,
        }
        // Keep the good peer talking throughout.
        if i % 100 == 0 {
            good.send_to_peer(
                &node.peer_id(),
                "ping",
                i.to_be_bytes().to_vec(),
                Priority::Normal,
            )
            .unwrap();
        }
    }
    // Every stream on the unserved protocol is refused by negotiation. A message stream is
    // refused by the connection's stream limit, or reset by the messenger, which keeps at most
    // one stream per peer and direction: the attacker's first one, still handshaking. (The
    // attacker may see a reset message stream as opened, when the reset comes after its
    // negotiation.) So every stream that reached the node but one ends refused, exactly once.
    assert!(refused >= 1500, "only {refused} of 3000 streams refused");
    let reached = u64::from(3000 - refused_locally);
    let refused_by_node = || {
        let host = node.host().metrics();
        host.refused_streams + host.failed_negotiations + node.metrics().messaging.streams_refused
    };
    for _ in 0..500 {
        if refused_by_node() >= reached - 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        refused_by_node(),
        reached - 1,
        "{refused} refused at the attacker, {refused_locally} by its own limit"
    );
    // And the node holds no more of the attacker's streams than its limit.
    let open: usize = node
        .host()
        .connections(Some(&attacker.peer_id()))
        .iter()
        .map(|c| c.open_streams)
        .sum();
    assert!(open <= 64, "{open} attacker streams open on the node");

    // Garbage over raw TCP, 200 connections.
    let port = match node.listen_addrs()[0].iter().nth(1) {
        Some(p2pnet_host::Protocol::Tcp(p)) => p,
        _ => unreachable!(),
    };
    for _ in 0..200 {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(&[0xab; 1024]).await;
        }
    }
    for _ in 0..500 {
        if node.host().metrics().failed_handshakes >= 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(node.host().metrics().failed_handshakes >= 200);

    // Bounded: the flood cost the node (and the attacker, same process) little memory.
    let grown_mib = resident_kib().saturating_sub(before) / 1024;
    assert!(grown_mib < 64, "resident memory grew by {grown_mib} MiB");

    // The good peer saw nothing: every message arrived, in order.
    for i in (0..3000u32).step_by(100) {
        let msg = tokio::time::timeout(Duration::from_secs(10), inbox.recv_async())
            .await
            .expect("good peer's message delayed")
            .unwrap();
        assert_eq!(&msg.payload[..], &i.to_be_bytes());
    }
    assert!(good.peers().contains(&node.peer_id()));

    drop(held);
    attacker.shutdown().await;
    good.stop().await;
    node.stop().await;
}
