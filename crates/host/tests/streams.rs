//! Streams between two real hosts on loopback: echo, bulk, half close, many streams, errors.

#[macro_use]
mod common;

use std::time::Duration;

use common::*;
use p2pnet_host::{Direction, HostConfig, HostError, HostEvent, Limits, with_p2p};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn connect_both_ways_with_directions(t: Transport) {
    let (a, a_addr) = listening_over(t, HostConfig::default()).await;
    let (b, b_addr) = listening_over(t, HostConfig::default()).await;
    let mut a_events = a.events();
    let mut b_events = b.events();

    assert_eq!(a.dial(b_addr.clone()).await.unwrap(), b.peer_id());
    let ev = wait_event(&mut a_events, |e| matches!(e, HostEvent::Connected { .. })).await;
    assert!(
        matches!(ev, HostEvent::Connected { direction: Direction::Outbound, peer, .. } if peer == b.peer_id())
    );
    let ev = wait_event(&mut b_events, |e| matches!(e, HostEvent::Connected { .. })).await;
    assert!(
        matches!(ev, HostEvent::Connected { direction: Direction::Inbound, peer, .. } if peer == a.peer_id())
    );

    // Dialing back by /p2p/ address reuses the live connection.
    assert_eq!(b.dial(a_addr).await.unwrap(), a.peer_id());
    assert_eq!(b.connections(Some(&a.peer_id())).len(), 1);

    // And a third host dials the first: the other direction for `a`.
    let c = host(HostConfig::default());
    c.dial(with_p2p(&a.listen_addrs()[0], a.peer_id()))
        .await
        .unwrap();
    eventually("a sees c", || a.is_connected(&c.peer_id())).await;
    assert_eq!(
        a.connections(Some(&c.peer_id()))[0].direction,
        Direction::Inbound
    );
    assert_eq!(a.metrics().connections_inbound, 1);
    assert_eq!(a.metrics().connections_outbound, 1);
    for h in [a, b, c] {
        h.shutdown().await;
    }
}

async fn echo_round_trip(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    assert_eq!(s.protocol(), "/echo/1.0.0");
    assert_eq!(s.peer(), server.peer_id());
    for round in 0..10u8 {
        let msg = vec![round; 100 + round as usize];
        s.write_all(&msg).await.unwrap();
        let mut back = vec![0; msg.len()];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(back, msg);
    }
    client.shutdown().await;
    server.shutdown().await;
}

async fn sixty_four_mib_with_sha256(t: Transport) {
    const LEN: usize = 64 << 20;
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    // The server hashes what it receives and answers with the digest.
    let _handler = server
        .set_stream_handler(
            "/sink/1.0.0",
            |mut s: p2pnet_host::InboundStream| async move {
                let mut hasher = Sha256::new();
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0usize;
                loop {
                    let n = s.stream.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    total += n;
                    hasher.update(&buf[..n]);
                }
                s.stream
                    .write_all(&(total as u64).to_be_bytes())
                    .await
                    .unwrap();
                s.stream.write_all(&hasher.finalize()).await.unwrap();
                s.stream.shutdown().await.unwrap();
            },
        )
        .unwrap();
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/sink/1.0.0"]).await.unwrap();
    let mut expected = Sha256::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut seed = 0x9e3779b97f4a7c15u64;
    for _ in 0..LEN / chunk.len() {
        for b in chunk.iter_mut() {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            *b = seed as u8;
        }
        expected.update(&chunk);
        s.write_all(&chunk).await.unwrap();
    }
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply.len(), 8 + 32);
    assert_eq!(
        u64::from_be_bytes(reply[..8].try_into().unwrap()),
        LEN as u64
    );
    assert_eq!(&reply[8..], expected.finalize().as_slice());
    client.shutdown().await;
    server.shutdown().await;
}

async fn half_close_still_reads_reply(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    // Reads the whole request first, then answers: needs a working half close.
    let _handler = server
        .set_stream_handler(
            "/upper/1.0.0",
            |mut s: p2pnet_host::InboundStream| async move {
                let mut req = Vec::new();
                s.stream.read_to_end(&mut req).await.unwrap();
                s.stream.write_all(&req.to_ascii_uppercase()).await.unwrap();
                s.stream.shutdown().await.unwrap();
            },
        )
        .unwrap();
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/upper/1.0.0"]).await.unwrap();
    s.write_all(b"request body").await.unwrap();
    s.shutdown().await.unwrap();
    let mut reply = Vec::new();
    s.read_to_end(&mut reply).await.unwrap();
    assert_eq!(reply, b"REQUEST BODY");
    client.shutdown().await;
    server.shutdown().await;
}

async fn thousand_concurrent_streams_on_one_connection(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..1000u32 {
        let client = client.clone();
        tasks.spawn(async move {
            let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
            let msg = i.to_be_bytes().repeat(16);
            s.write_all(&msg).await.unwrap();
            s.shutdown().await.unwrap();
            let mut back = Vec::new();
            s.read_to_end(&mut back).await.unwrap();
            assert_eq!(back, msg);
        });
    }
    let mut done = 0;
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 1000);
    assert_eq!(
        client.connections(None).len(),
        1,
        "all streams on one connection"
    );
    assert_eq!(server.metrics().refused_streams, 0);
    client.shutdown().await;
    server.shutdown().await;
}

async fn unknown_protocol_is_not_supported(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let err = client
        .new_stream(peer, ["/nope/1.0.0", "/nope/2.0.0"])
        .await
        .unwrap_err();
    match err {
        HostError::ProtocolNotSupported { peer: p, protocols } => {
            assert_eq!(p, server.peer_id());
            assert_eq!(protocols, vec!["/nope/1.0.0", "/nope/2.0.0"]);
        }
        other => panic!("expected ProtocolNotSupported, got {other:?}"),
    }
    // The connection and host are unharmed.
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let mut s = client
        .new_stream(peer, ["/nope/1.0.0", "/echo/1.0.0"])
        .await
        .unwrap();
    assert_eq!(s.protocol(), "/echo/1.0.0");
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}

async fn dropping_the_registration_refuses_new_streams(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let echo = serve_echo(&server, "/echo/1.0.0");
    assert_eq!(echo.protocol(), "/echo/1.0.0");
    assert!(server.check_proto_exists("/echo/1.0.0"));
    assert!(server.protocols().contains(&"/echo/1.0.0".to_owned()));
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut open = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    drop(echo);
    assert!(!server.check_proto_exists("/echo/1.0.0"));
    let err = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap_err();
    assert!(
        matches!(err, HostError::ProtocolNotSupported { .. }),
        "{err:?}"
    );
    // The stream opened before the removal runs on.
    open.write_all(b"still").await.unwrap();
    let mut back = [0u8; 5];
    open.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still");
    // Dropping a receiver of `accept_streams` removes its handler too.
    let incoming = server.accept_streams("/r/1.0.0", 1).unwrap();
    assert_eq!(incoming.protocol(), "/r/1.0.0");
    assert!(server.check_proto_exists("/r/1.0.0"));
    drop(incoming);
    let err = client.new_stream(peer, ["/r/1.0.0"]).await.unwrap_err();
    assert!(
        matches!(err, HostError::ProtocolNotSupported { .. }),
        "{err:?}"
    );
    client.shutdown().await;
    server.shutdown().await;
}

async fn a_taken_protocol_is_an_error_and_the_first_handler_serves_on(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    fn taken<T>(r: Result<T, HostError>) -> String {
        match r {
            Err(HostError::ProtocolTaken { protocol }) => protocol,
            Err(other) => panic!("expected ProtocolTaken, got {other:?}"),
            Ok(_) => panic!("expected ProtocolTaken, got a registration"),
        }
    }
    assert_eq!(
        taken(server.set_stream_handler("/echo/1.0.0", |_s| async {})),
        "/echo/1.0.0"
    );
    assert_eq!(
        taken(server.accept_streams("/echo/1.0.0", 1)),
        "/echo/1.0.0"
    );
    // A refused handler that owns a registration is dropped without deadlocking the table.
    let owned = serve_echo(&server, "/owned/1.0.0");
    assert_eq!(
        taken(server.set_stream_handler("/echo/1.0.0", move |_s| {
            let _keep = &owned;
            async {}
        })),
        "/echo/1.0.0"
    );
    assert!(!server.check_proto_exists("/owned/1.0.0"));
    // The built-in protocols cannot be taken over either.
    for p in [
        p2pnet_host::protocol_names::PING,
        p2pnet_host::protocol_names::IDENTIFY,
    ] {
        assert_eq!(taken(server.set_stream_handler(p, |_s| async {})), p);
    }
    // The first handler still answers.
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    s.write_all(b"first").await.unwrap();
    let mut back = [0u8; 5];
    s.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"first");
    client.ping(server.peer_id()).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}

/// After a registration is dropped the protocol can be registered again, and the new handler
/// is the one that serves.
async fn a_protocol_can_be_registered_again_after_its_registration_is_dropped(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    drop(serve_echo(&server, "/p/1.0.0"));
    let mut incoming = server.accept_streams("/p/1.0.0", 1).unwrap();
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/p/1.0.0"]).await.unwrap();
    s.write_all(b"x").await.unwrap();
    let inbound = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbound.peer, client.peer_id());
    assert_eq!(inbound.protocol, "/p/1.0.0");
    client.shutdown().await;
    server.shutdown().await;
}

/// Shutdown drops every handler, including handlers that own host clones and registrations of
/// other protocols; a registration dropped after shutdown or after the host is gone does
/// nothing, and no handler can be registered after shutdown.
#[tokio::test]
async fn registrations_and_shutdown() {
    let server = host(HostConfig::default());
    let inner_registration = serve_echo(&server, "/inner/1.0.0");
    let held = std::sync::Mutex::new(Some(inner_registration));
    let host_clone = server.clone();
    let outer = server
        .set_stream_handler("/outer/1.0.0", move |_s| {
            // The handler owns a host clone and another registration.
            let _keep = (&host_clone, &held);
            async {}
        })
        .unwrap();
    let mut incoming = server.accept_streams("/r/1.0.0", 1).unwrap();
    tokio::time::timeout(Duration::from_secs(5), server.shutdown())
        .await
        .expect("shutdown does not deadlock on handlers that own registrations");
    assert!(server.protocols().is_empty(), "{:?}", server.protocols());
    // The channel's sender went with the handler.
    assert!(incoming.recv().await.is_none());
    drop(outer);
    drop(incoming);
    assert!(matches!(
        server.set_stream_handler("/late/1.0.0", |_s| async {}),
        Err(HostError::ShutDown)
    ));
    // A registration that outlives its host is harmless too.
    let other = host(HostConfig::default());
    let registration = serve_echo(&other, "/echo/1.0.0");
    other.shutdown().await;
    drop(other);
    drop(registration);
    drop(server);
}

#[tokio::test]
async fn invalid_protocol_names_are_rejected() {
    let h = host(HostConfig::default());
    assert!(matches!(
        h.set_stream_handler("no-slash", |_s| async {}),
        Err(HostError::InvalidProtocol { .. })
    ));
    let err = h.new_stream(h.peer_id(), ["bad"]).await.unwrap_err();
    assert!(matches!(err, HostError::InvalidProtocol { .. }));
    h.shutdown().await;
}

async fn inbound_stream_limit_is_enforced(t: Transport) {
    let config = HostConfig {
        limits: Limits {
            max_inbound_streams_per_connection: 2,
            ..Limits::default()
        },
        identify: false,
        ..HostConfig::default()
    };
    let (server, addr) = listening_over(t, config).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig {
        identify: false,
        ..HostConfig::default()
    });
    let peer = client.dial(addr).await.unwrap();
    let s1 = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    let s2 = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    // The refused stream is reset: the opener sees a failed negotiation, not "unsupported".
    let err = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap_err();
    assert!(matches!(err, HostError::Negotiation { .. }), "{err:?}");
    assert_eq!(server.metrics().refused_streams, 1);
    // Freeing a slot lets the next stream in: the node is unharmed.
    drop(s1);
    eventually("slot freed", || server.metrics().streams_open < 2).await;
    let mut s3 = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    s3.write_all(b"ok").await.unwrap();
    let mut b = [0u8; 2];
    s3.read_exact(&mut b).await.unwrap();
    drop(s2);
    client.shutdown().await;
    server.shutdown().await;
}

async fn outbound_stream_limit_is_enforced(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig {
        limits: Limits {
            max_outbound_streams_per_connection: 1,
            ..Limits::default()
        },
        identify: false,
        ..HostConfig::default()
    });
    let peer = client.dial(addr).await.unwrap();
    let _s1 = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    let err = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap_err();
    assert!(
        matches!(
            err,
            HostError::LimitReached {
                limit: p2pnet_host::LimitKind::OutboundStreams
            }
        ),
        "{err:?}"
    );
    client.shutdown().await;
    server.shutdown().await;
}

async fn stream_reset_is_an_error_for_the_peer(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let mut incoming = server.accept_streams("/r/1.0.0", 4).unwrap();
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/r/1.0.0"]).await.unwrap();
    s.write_all(b"abc").await.unwrap();
    s.flush().await.unwrap();
    let mut inbound = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(inbound.peer, client.peer_id());
    let mut b = [0u8; 3];
    inbound.stream.read_exact(&mut b).await.unwrap();
    s.reset();
    // Reads fail with a reset (not an end of stream), and writes fail: the peer learns
    // promptly that nobody listens.
    let mut rest = Vec::new();
    let err = tokio::time::timeout(
        Duration::from_secs(5),
        inbound.stream.read_to_end(&mut rest),
    )
    .await
    .unwrap()
    .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(rest.is_empty());
    let chunk = vec![0u8; 64 * 1024];
    let write_failed = tokio::time::timeout(Duration::from_secs(5), async {
        for _ in 0..1000 {
            if inbound.stream.write_all(&chunk).await.is_err() {
                return true;
            }
        }
        false
    })
    .await
    .unwrap();
    assert!(write_failed, "writes to a reset stream must fail");
    client.shutdown().await;
    server.shutdown().await;
}

async fn lost_connection_is_a_read_error_not_eof(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let mut incoming = server.accept_streams("/r/1.0.0", 4).unwrap();
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/r/1.0.0"]).await.unwrap();
    s.write_all(b"partial").await.unwrap();
    s.flush().await.unwrap();
    let mut inbound = tokio::time::timeout(Duration::from_secs(5), incoming.recv())
        .await
        .unwrap()
        .unwrap();
    let mut b = [0u8; 7];
    inbound.stream.read_exact(&mut b).await.unwrap();
    // The client goes away in the middle of the transfer.
    client.shutdown().await;
    let mut rest = Vec::new();
    let r = tokio::time::timeout(
        Duration::from_secs(5),
        inbound.stream.read_to_end(&mut rest),
    )
    .await
    .unwrap();
    let err = r.expect_err("a lost connection must not look like a clean end of stream");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    drop(s);
    server.shutdown().await;
}

async fn an_optimistic_stream_answers_in_one_round_trip_and_a_refusal_fails_the_read(t: Transport) {
    let (server, addr) = listening_over(t, HostConfig::default()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig::default());
    let peer = client.dial(addr).await.unwrap();
    // Accepted: the data written right away comes back after the peer's answer is taken off.
    let mut s = client
        .new_stream_optimistic(peer, "/echo/1.0.0")
        .await
        .unwrap();
    assert_eq!(s.protocol(), "/echo/1.0.0");
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    s.write_all(&data).await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, data);
    // Through owned halves too (a one-byte read buffer drains the leftover bit by bit).
    let (mut r, mut w) = client
        .new_stream_optimistic(peer, "/echo/1.0.0")
        .await
        .unwrap()
        .into_split();
    w.write_all(b"halves").await.unwrap();
    w.shutdown().await.unwrap();
    let mut got = Vec::new();
    let mut one = [0u8; 1];
    while r.read(&mut one).await.unwrap() == 1 {
        got.push(one[0]);
    }
    assert_eq!(got, b"halves");
    // Refused: the first read says so; the connection serves on.
    let mut s = client
        .new_stream_optimistic(peer, "/nobody/1.0.0")
        .await
        .unwrap();
    let _ = s.write_all(b"lost").await;
    let err = tokio::time::timeout(Duration::from_secs(5), s.read(&mut [0u8; 8]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::Unsupported, "{err}");
    let mut again = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    again.write_all(b"x").await.unwrap();
    again.read_exact(&mut [0u8; 1]).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}

// Each case above, once per transport (`over!` is in `common`).
mod tcp {
    over!(Tcp: an_optimistic_stream_answers_in_one_round_trip_and_a_refusal_fails_the_read,
        connect_both_ways_with_directions,
        echo_round_trip,
        sixty_four_mib_with_sha256,
        half_close_still_reads_reply,
        thousand_concurrent_streams_on_one_connection,
        unknown_protocol_is_not_supported,
        dropping_the_registration_refuses_new_streams,
        a_taken_protocol_is_an_error_and_the_first_handler_serves_on,
        a_protocol_can_be_registered_again_after_its_registration_is_dropped,
        inbound_stream_limit_is_enforced,
        outbound_stream_limit_is_enforced,
        stream_reset_is_an_error_for_the_peer,
        lost_connection_is_a_read_error_not_eof);
}

mod quic {
    over!(Quic: an_optimistic_stream_answers_in_one_round_trip_and_a_refusal_fails_the_read,
        connect_both_ways_with_directions,
        echo_round_trip,
        sixty_four_mib_with_sha256,
        half_close_still_reads_reply,
        thousand_concurrent_streams_on_one_connection,
        unknown_protocol_is_not_supported,
        dropping_the_registration_refuses_new_streams,
        a_taken_protocol_is_an_error_and_the_first_handler_serves_on,
        a_protocol_can_be_registered_again_after_its_registration_is_dropped,
        outbound_stream_limit_is_enforced,
        stream_reset_is_an_error_for_the_peer,
        lost_connection_is_a_read_error_not_eof);
}
