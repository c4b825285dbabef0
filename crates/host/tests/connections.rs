//! Dialing, limits, coalescing, identity checks, idle closing, ping, identify, hostile clients,
//! and shutdown, all between real hosts on loopback.

#[macro_use]
mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::*;
use p2pnet_host::{
    Direction, HostConfig, HostError, HostEvent, LimitKind, Limits, Multiaddr, PeerId, with_p2p,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn wrong_peer_id_is_refused(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let client = host(HostConfig::default());
    let impostor = PeerId::random();
    let wrong = with_p2p(&addr, impostor);
    match client.dial(wrong).await {
        Err(HostError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, impostor);
            assert_eq!(actual, server.peer_id());
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    assert!(!client.is_connected(&server.peer_id()));
    assert_eq!(client.metrics().dial_failures, 1);
    // The right id still works.
    assert_eq!(client.dial(addr).await.unwrap(), server.peer_id());
    client.shutdown().await;
    server.shutdown().await;
}

/// `/dns4/<name>/tcp/<port>` is resolved by the system resolver (only `localhost` here, which
/// `/etc/hosts` answers: no query leaves the machine) and the `/p2p/` id still checked.
async fn dial_by_dns_name_resolves_and_checks_the_peer_id(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let port = addr
        .iter()
        .find_map(|p| match p {
            multiaddr::Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap();
    let client = host(HostConfig::default());
    let named: Multiaddr = format!("/dns4/localhost/tcp/{port}").parse().unwrap();
    match client.dial(with_p2p(&named, PeerId::random())).await {
        Err(HostError::PeerIdMismatch { actual, .. }) => assert_eq!(actual, server.peer_id()),
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    assert_eq!(
        client
            .dial(with_p2p(&named, server.peer_id()))
            .await
            .unwrap(),
        server.peer_id()
    );
    assert!(client.is_connected(&server.peer_id()));
    // A name without a TCP port is not an address we can use.
    let udp: Multiaddr = "/dns4/localhost/udp/1".parse().unwrap();
    assert!(matches!(
        client.dial(udp).await,
        Err(HostError::InvalidAddress { .. })
    ));
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test]
async fn dial_failures_are_typed() {
    let client = host(HostConfig {
        dial_timeout: Duration::from_secs(2),
        ..HostConfig::default()
    });
    // Nobody listens on this port (bound and released).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
    assert!(matches!(
        client.dial(addr).await,
        Err(HostError::DialFailed { .. })
    ));
    // No address known.
    let stranger = PeerId::random();
    assert!(matches!(
        client.new_stream(stranger, ["/x/1"]).await,
        Err(HostError::NoAddresses { peer }) if peer == stranger
    ));
    // Not a TCP address.
    let udp: Multiaddr = "/ip4/127.0.0.1/udp/1".parse().unwrap();
    assert!(matches!(
        client.dial(udp).await,
        Err(HostError::InvalidAddress { .. })
    ));
    client.shutdown().await;
}

async fn new_stream_dials_from_peer_store(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    client
        .peer_store()
        .add_addrs(server.peer_id(), [addr], p2pnet_host::PERMANENT_ADDR_TTL);
    let mut s = client
        .new_stream(server.peer_id(), ["/echo/1.0.0"])
        .await
        .unwrap();
    s.write_all(b"hi").await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    assert!(client.is_connected(&server.peer_id()));
    client.shutdown().await;
    server.shutdown().await;
}

async fn concurrent_dials_are_coalesced(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let client = host(HostConfig::default());
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let client = client.clone();
        let addr = addr.clone();
        tasks.spawn(async move { client.dial(addr).await });
    }
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), server.peer_id());
    }
    assert_eq!(client.connections(None).len(), 1);
    assert_eq!(client.metrics().connections_outbound, 1);
    client.shutdown().await;
    server.shutdown().await;
}

async fn total_connection_limit_refuses_and_survives(t: Transport) {
    let config = HostConfig {
        limits: Limits {
            max_connections: 1,
            ..Limits::default()
        },
        ..HostConfig::default()
    };
    let (server, addr) = listening_over(t, config).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let first = host(HostConfig::default());
    first.dial(addr.clone()).await.unwrap();
    eventually("server has first", || server.connected_peers().len() == 1).await;

    let second = host(HostConfig::default());
    // The dialer may complete its half of the handshake; the server drops it right after.
    let _ = second.dial(addr.clone()).await;
    eventually("refusal counted", || {
        server.metrics().refused_connections == 1
    })
    .await;
    eventually("second dropped", || !second.is_connected(&server.peer_id())).await;
    assert_eq!(server.connected_peers(), vec![first.peer_id()]);

    // The first peer is unharmed.
    let mut s = first
        .new_stream(server.peer_id(), ["/echo/1.0.0"])
        .await
        .unwrap();
    s.write_all(b"ok").await.unwrap();
    let mut b = [0u8; 2];
    s.read_exact(&mut b).await.unwrap();
    for h in [first, second, server] {
        h.shutdown().await;
    }
}

async fn per_peer_connection_limit(t: Transport) {
    let (server, addr) = listening_over(
        t,
        HostConfig {
            limits: Limits {
                max_connections_per_peer: 1,
                ..Limits::default()
            },
            ..HostConfig::default()
        },
    )
    .await;
    let client = host(HostConfig::default());
    // Dial without /p2p/ twice: no coalescing possible, so two connections are attempted.
    let plain = p2pnet_host::without_p2p(&addr).0;
    client.dial(plain.clone()).await.unwrap();
    let _ = client.dial(plain).await;
    eventually("refusal counted", || {
        server.metrics().refused_connections == 1
    })
    .await;
    assert_eq!(server.connections(None).len(), 1);
    client.shutdown().await;
    server.shutdown().await;
}

async fn port_in_use_is_a_clear_error(t: Transport) {
    let (server, _) = listening_over(t, HostConfig::default()).await;
    let taken = server.listen_addrs()[0].clone();
    let other = host(HostConfig::default());
    match other.listen_on(taken.clone()).await {
        Err(HostError::ListenFailed { addr, source }) => {
            assert_eq!(addr, taken);
            assert_eq!(source.kind(), ErrorKind::AddrInUse, "{source}");
        }
        other => panic!("expected ListenFailed, got {other:?}"),
    }
    other.shutdown().await;
    server.shutdown().await;
}

async fn listener_can_be_closed(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let bound = server.listen_addrs()[0].clone();
    assert!(server.close_listener(&bound));
    eventually("listener gone", || server.listen_addrs().is_empty()).await;
    let client = host(HostConfig {
        dial_timeout: Duration::from_secs(2),
        ..HostConfig::default()
    });
    assert!(client.dial(addr).await.is_err());
    client.shutdown().await;
    server.shutdown().await;
}

async fn ping_measures_round_trip(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    for _ in 0..3 {
        let rtt = client.ping(peer).await.unwrap();
        assert!(rtt < Duration::from_secs(5));
    }
    assert!(
        server.ping(client.peer_id()).await.is_ok(),
        "ping works both ways"
    );
    client.shutdown().await;
    server.shutdown().await;
}

async fn identify_is_exchanged(t: Transport) {
    let (server, addr) = listening_over(
        t,
        HostConfig {
            agent_version: "server/1".into(),
            ..HostConfig::default()
        },
    )
    .await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    let mut events = client.events();
    client.dial(addr).await.unwrap();
    let ev = wait_event(&mut events, |e| matches!(e, HostEvent::Identified { .. })).await;
    let HostEvent::Identified {
        peer,
        agent_version,
        protocols,
        listen_addrs,
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(peer, server.peer_id());
    assert_eq!(agent_version, "server/1");
    assert!(protocols.contains(&"/echo/1.0.0".to_owned()));
    assert!(protocols.contains(&"/ipfs/ping/1.0.0".to_owned()));
    assert_eq!(listen_addrs, server.listen_addrs());
    assert_eq!(
        client
            .peer_store()
            .agent_version(&server.peer_id())
            .as_deref(),
        Some("server/1")
    );
    assert!(
        client
            .peer_store()
            .addrs(&server.peer_id())
            .contains(&server.listen_addrs()[0])
    );
    // The server learns the client's identity too, and the client learns its observed address.
    eventually("server identified client", || {
        server
            .peer_store()
            .agent_version(&client.peer_id())
            .is_some()
    })
    .await;
    eventually("observed address", || !client.observed_addrs().is_empty()).await;
    client.shutdown().await;
    server.shutdown().await;
}

async fn idle_connections_close_unless_protected(t: Transport) {
    let config = HostConfig {
        idle_timeout: Some(Duration::from_millis(300)),
        ..HostConfig::default()
    };
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let client = host(config.clone());
    let mut events = client.events();
    client.dial(addr.clone()).await.unwrap();
    let ev = wait_event(&mut events, |e| matches!(e, HostEvent::Disconnected { .. })).await;
    assert!(
        matches!(ev, HostEvent::Disconnected { peer, direction: Direction::Outbound, remaining: 0, .. } if peer == server.peer_id())
    );

    // A protected peer stays connected well past the idle timeout.
    client.protect(server.peer_id());
    client.dial(addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(client.is_connected(&server.peer_id()));
    client.unprotect(&server.peer_id());
    eventually("closed after unprotect", || {
        !client.is_connected(&server.peer_id())
    })
    .await;
    client.shutdown().await;
    server.shutdown().await;
}

async fn close_peer_disconnects(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let client = host(HostConfig::default());
    let mut server_events = server.events();
    client.dial(addr).await.unwrap();
    eventually("connected", || server.is_connected(&client.peer_id())).await;
    assert_eq!(client.close_peer(&server.peer_id()), 1);
    wait_event(&mut server_events, |e| {
        matches!(e, HostEvent::Disconnected { .. })
    })
    .await;
    assert!(!client.is_connected(&server.peer_id()));
    assert_eq!(client.metrics().connections_outbound, 0);
    client.shutdown().await;
    server.shutdown().await;
}

async fn garbage_and_half_handshakes_are_dropped(t: Transport) {
    let (server, addr) = listening_over(
        t,
        HostConfig {
            handshake_timeout: Duration::from_millis(500),
            ..HostConfig::default()
        },
    )
    .await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let tcp = p2pnet_host::without_p2p(&addr).0;
    let port = match tcp.iter().nth(1) {
        Some(p2pnet_host::Protocol::Tcp(p)) => p,
        _ => unreachable!(),
    };
    let target = format!("127.0.0.1:{port}");

    // 1. Garbage bytes.
    let mut garbage = tokio::net::TcpStream::connect(&target).await.unwrap();
    garbage.write_all(&[0xde; 4096]).await.unwrap();
    // 2. A half-finished handshake: multistream header and noise proposal, then silence.
    let mut half = tokio::net::TcpStream::connect(&target).await.unwrap();
    half.write_all(b"\x13/multistream/1.0.0\n\x07/noise\n")
        .await
        .unwrap();
    // 3. Nothing at all (slowloris).
    let mut silent = tokio::net::TcpStream::connect(&target).await.unwrap();

    for (name, sock) in [
        ("garbage", &mut garbage),
        ("half", &mut half),
        ("silent", &mut silent),
    ] {
        let mut sink = Vec::new();
        let r = tokio::time::timeout(Duration::from_secs(5), sock.read_to_end(&mut sink)).await;
        assert!(r.is_ok(), "{name} connection was not dropped in time");
    }
    eventually("handshake failures counted", || {
        server.metrics().failed_handshakes == 3
    })
    .await;
    assert!(server.connected_peers().is_empty());

    // The host keeps serving real peers.
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    s.write_all(b"alive").await.unwrap();
    let mut b = [0u8; 5];
    s.read_exact(&mut b).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}

async fn pending_handshake_limit(t: Transport) {
    let (server, addr) = listening_over(
        t,
        HostConfig {
            limits: Limits {
                max_pending_incoming: 2,
                ..Limits::default()
            },
            handshake_timeout: Duration::from_secs(3),
            ..HostConfig::default()
        },
    )
    .await;
    let port = match p2pnet_host::without_p2p(&addr).0.iter().nth(1) {
        Some(p2pnet_host::Protocol::Tcp(p)) => p,
        _ => unreachable!(),
    };
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap(),
        );
    }
    eventually("third refused", || {
        server.metrics().refused_connections == 1
    })
    .await;
    drop(silent);
    server.shutdown().await;
    let _ = LimitKind::PendingIncoming;
}

async fn shutdown_joins_every_task_and_frees_the_port(t: Transport) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let baseline = metrics.num_alive_tasks();
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    let peer = client.dial(addr.clone()).await.unwrap();
    // Busy streams in both directions while we shut down.
    let mut streams = Vec::new();
    for _ in 0..20 {
        let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
        s.write_all(b"busy").await.unwrap();
        streams.push(s);
    }
    assert!(server.task_count() > 0);
    let started = std::time::Instant::now();
    server.shutdown().await;
    client.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "shutdown took {:?}",
        started.elapsed()
    );
    assert_eq!(server.task_count(), 0);
    assert_eq!(client.task_count(), 0);
    drop(streams);
    eventually("no task left on the runtime", || {
        metrics.num_alive_tasks() == baseline
    })
    .await;
    // Idempotent, and everything after it fails cleanly.
    server.shutdown().await;
    assert!(matches!(
        client.dial(addr.clone()).await,
        Err(HostError::ShutDown)
    ));
    assert!(matches!(
        server.listen_on(t.loopback()).await,
        Err(HostError::ShutDown)
    ));
    // The listening socket is gone: the port can be bound again.
    match p2pnet_host::without_p2p(&addr).0.iter().nth(1) {
        Some(p2pnet_host::Protocol::Tcp(port)) => {
            std::net::TcpListener::bind(("127.0.0.1", port))
                .expect("port still bound after shutdown");
        }
        Some(p2pnet_host::Protocol::Udp(port)) => {
            std::net::UdpSocket::bind(("127.0.0.1", port))
                .expect("port still bound after shutdown");
        }
        _ => unreachable!(),
    }
}

// Each case above, once per transport (`over!` is in `common`).
mod tcp {
    over!(Tcp: wrong_peer_id_is_refused,
        dial_by_dns_name_resolves_and_checks_the_peer_id,
        new_stream_dials_from_peer_store,
        concurrent_dials_are_coalesced,
        total_connection_limit_refuses_and_survives,
        per_peer_connection_limit,
        port_in_use_is_a_clear_error,
        listener_can_be_closed,
        ping_measures_round_trip,
        identify_is_exchanged,
        idle_connections_close_unless_protected,
        close_peer_disconnects,
        garbage_and_half_handshakes_are_dropped,
        pending_handshake_limit,
        shutdown_joins_every_task_and_frees_the_port);
}

mod quic {
    over!(Quic: wrong_peer_id_is_refused,
        new_stream_dials_from_peer_store,
        concurrent_dials_are_coalesced,
        total_connection_limit_refuses_and_survives,
        per_peer_connection_limit,
        port_in_use_is_a_clear_error,
        listener_can_be_closed,
        ping_measures_round_trip,
        identify_is_exchanged,
        idle_connections_close_unless_protected,
        close_peer_disconnects,
        shutdown_joins_every_task_and_frees_the_port);
}
