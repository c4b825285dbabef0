//! What only the QUIC transport has: dials ranked and raced across transports, identify
//! announcing both, and QUIC switched off.

mod common;

use std::time::{Duration, Instant};

use common::*;
use p2pnet_host::{
    HostConfig, HostError, Multiaddr, PERMANENT_ADDR_TTL, QuicConfig, TransportKind, with_p2p,
};

/// A server listening on loopback TCP and QUIC: it and its two addresses (without `/p2p/`).
async fn both_transports() -> (p2pnet_host::Host, Multiaddr, Multiaddr) {
    let server = host(HostConfig::default());
    let tcp = server.listen_on(Transport::Tcp.loopback()).await.unwrap();
    let quic = server.listen_on(Transport::Quic.loopback()).await.unwrap();
    (server, tcp, quic)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_both_transports_is_reached_over_quic() {
    let (server, tcp, quic) = both_transports().await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    // TCP known first: the ranking still puts QUIC ahead.
    client
        .peer_store()
        .add_addrs(server.peer_id(), [tcp, quic.clone()], PERMANENT_ADDR_TTL);
    client.connect(server.peer_id()).await.unwrap();
    let conns = client.connections(Some(&server.peer_id()));
    assert_eq!(conns.len(), 1, "the loser of the race is cancelled");
    assert_eq!(conns[0].transport, TransportKind::Quic);
    assert_eq!(conns[0].remote_addr, quic);
    // Streams, ping and identify work over it.
    client.ping(server.peer_id()).await.unwrap();
    let server_conns = server.connections(None);
    assert_eq!(server_conns[0].transport, TransportKind::Quic);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        client.connections(Some(&server.peer_id())).len(),
        1,
        "no second connection"
    );
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswering_quic_address_hands_over_to_tcp_after_its_head_start() {
    let (server, tcp, _quic) = both_transports().await;
    // A UDP socket that takes packets and never answers: a black-holed QUIC address.
    let hole = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let hole_addr: Multiaddr = format!(
        "/ip4/127.0.0.1/udp/{}/quic-v1",
        hole.local_addr().unwrap().port()
    )
    .parse()
    .unwrap();
    let client = host(HostConfig::default()); // dial timeout 10 s
    client.peer_store().add_addrs(
        server.peer_id(),
        [hole_addr, tcp.clone()],
        PERMANENT_ADDR_TTL,
    );
    let started = Instant::now();
    client.connect(server.peer_id()).await.unwrap();
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(2),
        "took {took:?}: TCP waited for the QUIC dial to time out"
    );
    assert!(
        took >= Duration::from_millis(200),
        "took {took:?}: TCP did not let QUIC go first"
    );
    let conns = client.connections(Some(&server.peer_id()));
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].transport, TransportKind::Tcp);
    assert_eq!(conns[0].remote_addr, tcp);
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_peer_id_over_quic_is_refused_and_the_right_one_connects() {
    let (server, _tcp, quic) = both_transports().await;
    let client = host(HostConfig::default());
    let impostor = p2pnet_host::generate_keypair().public().to_peer_id();
    match client.dial(with_p2p(&quic, impostor)).await {
        Err(HostError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, impostor);
            assert_eq!(actual, server.peer_id());
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    eventually("the impostor's connection is gone", || {
        client.connections(None).is_empty()
    })
    .await;
    assert_eq!(
        client
            .dial(with_p2p(&quic, server.peer_id()))
            .await
            .unwrap(),
        server.peer_id()
    );
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_announces_both_transports() {
    let (server, tcp, quic) = both_transports().await;
    let client = host(HostConfig::default());
    let mut events = client.events();
    client
        .dial(with_p2p(&quic, server.peer_id()))
        .await
        .unwrap();
    let _ = wait_event(&mut events, |e| {
        matches!(e, p2pnet_host::HostEvent::Identified { peer, .. } if *peer == server.peer_id())
    })
    .await;
    let known = client.peer_store().addrs(&server.peer_id());
    assert!(known.contains(&tcp), "{known:?}");
    assert!(known.contains(&quic), "{known:?}");
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn quic_switched_off_refuses_quic_addresses() {
    let off = HostConfig {
        quic: QuicConfig {
            enabled: false,
            ..QuicConfig::default()
        },
        ..HostConfig::default()
    };
    let (server, _tcp, quic) = both_transports().await;
    let client = host(off.clone());
    let err = client
        .listen_on(Transport::Quic.loopback())
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::InvalidAddress { .. }), "{err:?}");
    let err = client
        .dial(with_p2p(&quic, server.peer_id()))
        .await
        .unwrap_err();
    assert!(matches!(err, HostError::InvalidAddress { .. }), "{err:?}");
    // TCP is untouched.
    client.listen_on(Transport::Tcp.loopback()).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}
