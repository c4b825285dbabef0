//! Exact stream ends between two real hosts: our own close wakes readers, resets reach the peer
//! in every state, a FIN that came before a close is an end and not a reset, limits harm nothing.

#[macro_use]
mod common;

use std::io::ErrorKind;
use std::time::Duration;

use common::*;
use p2pnet_host::{HostConfig, HostError, InboundStream, LimitKind, Limits, StreamReceiver};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const WAIT: Duration = Duration::from_secs(2);

fn quiet() -> HostConfig {
    HostConfig {
        identify: false,
        ..HostConfig::default()
    }
}

/// A client connected to a server that hands its inbound streams on `/t/1.0.0` over a channel.
async fn pair(t: Transport) -> (p2pnet_host::Host, p2pnet_host::Host, StreamReceiver) {
    let (server, addr) = listening_over(t, quiet()).await;
    let incoming = server.accept_streams("/t/1.0.0", 16).unwrap();
    let client = host(quiet());
    client.dial(addr).await.unwrap();
    (client, server, incoming)
}

async fn next(incoming: &mut StreamReceiver) -> InboundStream {
    tokio::time::timeout(WAIT, incoming.recv())
        .await
        .expect("an inbound stream in time")
        .unwrap()
}

/// Writes until a write fails (bounded: 1,000 × 64 KiB within [`WAIT`]); the error's kind.
async fn writes_fail(stream: &mut p2pnet_host::Stream) -> ErrorKind {
    let chunk = vec![0u8; 64 * 1024];
    tokio::time::timeout(WAIT, async {
        for _ in 0..1000 {
            if let Err(e) = stream.write_all(&chunk).await {
                return e.kind();
            }
        }
        panic!("writes to a reset stream kept succeeding");
    })
    .await
    .expect("the writer learns of the reset in time")
}

/// Opens a stream from `client` to `server` on `/t/1.0.0`.
async fn open(client: &p2pnet_host::Host, server: &p2pnet_host::Host) -> p2pnet_host::Stream {
    client
        .new_stream(server.peer_id(), ["/t/1.0.0"])
        .await
        .unwrap()
}

async fn our_close_of_the_connection_wakes_a_blocked_reader(t: Transport) {
    let (client, server, mut incoming) = pair(t).await;
    let mut s = open(&client, &server).await;
    s.write_all(b"hi").await.unwrap();
    let mut inbound = next(&mut incoming).await;
    let reader = tokio::spawn(async move {
        let mut buf = [0u8; 8];
        s.read(&mut buf).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await; // the reader is parked in read()
    assert_eq!(client.close_peer(&server.peer_id()), 1);
    let err = tokio::time::timeout(WAIT, reader)
        .await
        .expect("the blocked reader wakes")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionAborted);
    // The peer's reader learns that the stream was cut, not finished. (Bytes it had not read
    // yet may go with the connection: a lost yamux connection fails unfinished streams, and a
    // QUIC CONNECTION_CLOSE discards stream state, RFC 9000 10.2.)
    let mut got = Vec::new();
    let err = tokio::time::timeout(WAIT, inbound.stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert!(got.is_empty() || got == b"hi", "{got:?}");
    client.shutdown().await;
    server.shutdown().await;
}

async fn shutdown_wakes_blocked_readers_and_writers(t: Transport) {
    let (client, server, mut incoming) = pair(t).await;
    let mut reader = open(&client, &server).await;
    let mut writer = open(&client, &server).await;
    let _a = next(&mut incoming).await;
    let _b = next(&mut incoming).await;
    let read = tokio::spawn(async move { reader.read(&mut [0u8; 8]).await });
    // Nobody reads on the server: the writer fills its window and blocks.
    let write = tokio::spawn(async move {
        let chunk = vec![0u8; 64 * 1024];
        loop {
            writer.write_all(&chunk).await?;
        }
        #[allow(unreachable_code)]
        Ok::<(), std::io::Error>(())
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    tokio::time::timeout(WAIT, client.shutdown())
        .await
        .expect("shutdown does not hang");
    let read_err = tokio::time::timeout(WAIT, read).await.unwrap().unwrap();
    let write_err = tokio::time::timeout(WAIT, write).await.unwrap().unwrap();
    assert_eq!(read_err.unwrap_err().kind(), ErrorKind::ConnectionAborted);
    assert_eq!(write_err.unwrap_err().kind(), ErrorKind::ConnectionAborted);
    server.shutdown().await;
}

async fn reset_after_our_half_close_reaches_the_peer(t: Transport) {
    let (client, server, mut incoming) = pair(t).await;
    let mut s = open(&client, &server).await;
    s.write_all(b"upload").await.unwrap();
    s.shutdown().await.unwrap();
    let mut inbound = next(&mut incoming).await;
    let mut got = Vec::new();
    inbound.stream.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"upload");
    // The server answers; the client, half closed, aborts.
    inbound.stream.write_all(b"answer").await.unwrap();
    s.reset();
    // The server's writer fails promptly instead of stalling once its window is used.
    assert_eq!(
        writes_fail(&mut inbound.stream).await,
        ErrorKind::ConnectionReset
    );
    client.shutdown().await;
    server.shutdown().await;
}

async fn reset_after_the_peers_fin_is_a_reset_not_a_fin(t: Transport) {
    let (client, server, mut incoming) = pair(t).await;
    let mut s = open(&client, &server).await;
    s.write_all(b"part of an upload").await.unwrap();
    let mut inbound = next(&mut incoming).await;
    inbound.stream.write_all(b"go ahead").await.unwrap();
    inbound.stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    s.read_to_end(&mut answer).await.unwrap();
    assert_eq!(answer, b"go ahead");
    // The client aborts mid-upload after the server's FIN: the server must not see a whole
    // upload.
    s.reset();
    let mut got = Vec::new();
    let err = tokio::time::timeout(WAIT, inbound.stream.read_to_end(&mut got))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    client.shutdown().await;
    server.shutdown().await;
}

async fn dropping_a_half_closed_stream_resets_it(t: Transport) {
    let (client, server, mut incoming) = pair(t).await;
    let mut s = open(&client, &server).await;
    s.shutdown().await.unwrap();
    let mut inbound = next(&mut incoming).await;
    drop(s);
    assert_eq!(
        writes_fail(&mut inbound.stream).await,
        ErrorKind::ConnectionReset
    );
    client.shutdown().await;
    server.shutdown().await;
}

async fn a_fin_before_our_close_reads_every_byte_then_eof(t: Transport) {
    const LEN: usize = 1 << 20;
    let (server, addr) = listening_over(t, quiet()).await;
    let handler_host = server.clone();
    let _handler = server
        .set_stream_handler("/tail/1.0.0", move |mut s: InboundStream| {
            let host = handler_host.clone();
            async move {
                let data: Vec<u8> = (0..LEN).map(|i| (i % 253) as u8).collect();
                s.stream.write_all(&data).await.unwrap();
                s.stream.shutdown().await.unwrap();
                // And the server closes the connection right away.
                host.close_peer(&s.peer);
            }
        })
        .unwrap();
    let client = host(quiet());
    let peer = client.dial(addr).await.unwrap();
    let mut s = client.new_stream(peer, ["/tail/1.0.0"]).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .unwrap()
        .expect("a complete transfer ends with EOF, not a reset");
    assert_eq!(got.len(), LEN);
    assert!(got.iter().enumerate().all(|(i, b)| *b == (i % 253) as u8));
    client.shutdown().await;
    server.shutdown().await;
}

async fn an_outbound_open_over_the_limit_fails_alone(t: Transport) {
    let (server, addr) = listening_over(t, quiet()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig {
        limits: Limits {
            max_outbound_streams_per_connection: 2,
            ..Limits::default()
        },
        ..quiet()
    });
    let peer = client.dial(addr).await.unwrap();
    let mut a = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    let mut b = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    for _ in 0..10 {
        let err = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap_err();
        assert!(
            matches!(
                err,
                HostError::LimitReached {
                    limit: LimitKind::OutboundStreams
                }
            ),
            "{err:?}"
        );
    }
    // The connection and its streams are untouched.
    for s in [&mut a, &mut b] {
        s.write_all(b"still here").await.unwrap();
        let mut back = [0u8; 10];
        s.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"still here");
    }
    assert_eq!(client.connections(Some(&peer)).len(), 1);
    assert_eq!(client.connections(Some(&peer))[0].open_streams, 2);
    // A released stream frees its place at once.
    drop(a);
    client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    client.shutdown().await;
    server.shutdown().await;
}

/// yamux: a stream over the peer's limit is reset alone (QUIC has no such stream: the peer's
/// stream credit holds it back, see the next test).
async fn inbound_streams_over_the_limit_are_reset_alone(t: Transport) {
    let (server, addr) = listening_over(
        t,
        HostConfig {
            limits: Limits {
                max_inbound_streams_per_connection: 3,
                ..Limits::default()
            },
            ..quiet()
        },
    )
    .await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(quiet());
    let peer = client.dial(addr).await.unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap());
    }
    for _ in 0..20 {
        assert!(client.new_stream(peer, ["/echo/1.0.0"]).await.is_err());
    }
    assert_eq!(server.metrics().refused_streams, 20);
    for s in &mut kept {
        s.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        s.read_exact(&mut back).await.unwrap();
    }
    client.shutdown().await;
    server.shutdown().await;
}

async fn a_closed_connection_is_never_handed_out(t: Transport) {
    let (server, addr) = listening_over(t, quiet()).await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(quiet());
    let peer = client.dial(addr.clone()).await.unwrap();
    let first = client.connections(Some(&peer))[0].id;
    client.close_peer(&peer);
    // The very next stream goes over a new connection, not the closing one.
    let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    assert_ne!(s.connection(), first);
    s.write_all(b"x").await.unwrap();
    s.read_exact(&mut [0u8; 1]).await.unwrap();
    eventually("the closed connection is forgotten", || {
        client
            .connections(Some(&peer))
            .iter()
            .all(|c| c.id != first)
    })
    .await;
    client.shutdown().await;
    server.shutdown().await;
}

/// Both sides write at full speed at once, on several streams of one connection: neither
/// connection task may stop reading its socket while the other waits for it to.
async fn both_directions_at_full_speed_never_deadlock(t: Transport) {
    const LEN: usize = 16 << 20;
    const STREAMS: usize = 4;
    let (server, addr) = listening_over(t, quiet()).await;
    // The server writes LEN and reads LEN on each stream, at the same time.
    let _both = server
        .set_stream_handler("/both/1.0.0", |s: InboundStream| async move {
            let (mut r, mut w) = tokio::io::split(s.stream);
            let write = async {
                let chunk = vec![0x42u8; 256 * 1024];
                for _ in 0..LEN / chunk.len() {
                    w.write_all(&chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
            };
            let read = async {
                let mut sink = vec![0u8; 256 * 1024];
                let mut n = 0;
                loop {
                    match r.read(&mut sink).await.unwrap() {
                        0 => break,
                        k => n += k,
                    }
                }
                assert_eq!(n, LEN);
            };
            tokio::join!(write, read);
        })
        .unwrap();
    let client = host(quiet());
    let peer = client.dial(addr).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..STREAMS {
        let s = client.new_stream(peer, ["/both/1.0.0"]).await.unwrap();
        tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = tokio::io::split(s);
            let write = async {
                let chunk = vec![0x24u8; 256 * 1024];
                for _ in 0..LEN / chunk.len() {
                    w.write_all(&chunk).await.unwrap();
                }
                w.shutdown().await.unwrap();
            };
            let read = async {
                let mut got = Vec::new();
                r.read_to_end(&mut got).await.unwrap();
                got.len()
            };
            tokio::join!(write, read).1
        }));
    }
    for t in tasks {
        let got = tokio::time::timeout(Duration::from_secs(30), t)
            .await
            .expect("a full-speed transfer both ways finished")
            .unwrap();
        assert_eq!(got, LEN);
    }
    client.shutdown().await;
    server.shutdown().await;
}

/// Many bulk transfers each ending with a FIN and a one-byte answer: the last frames of each
/// (FIN, answer) always leave, also when the socket was full at the last flush.
async fn the_last_frames_of_every_transfer_are_flushed(t: Transport) {
    let (server, addr) = listening_over(t, quiet()).await;
    let _sink = server
        .set_stream_handler("/sink/1.0.0", |mut s: InboundStream| async move {
            let mut buf = vec![0u8; 256 * 1024];
            while s.stream.read(&mut buf).await.unwrap_or(0) > 0 {}
            let _ = s.stream.write_all(&[1]).await;
            let _ = s.stream.shutdown().await;
        })
        .unwrap();
    let client = host(quiet());
    let peer = client.dial(addr).await.unwrap();
    let chunk = vec![7u8; 256 * 1024];
    for round in 0..20 {
        let mut s = client.new_stream(peer, ["/sink/1.0.0"]).await.unwrap();
        tokio::time::timeout(Duration::from_secs(20), async {
            for _ in 0..16 {
                s.write_all(&chunk).await.unwrap();
            }
            s.shutdown().await.unwrap();
            let mut ack = [0u8; 1];
            s.read_exact(&mut ack).await.unwrap();
        })
        .await
        .unwrap_or_else(|_| panic!("transfer {round} never finished"));
    }
    client.shutdown().await;
    server.shutdown().await;
}

async fn split_halves_read_and_write_at_once_and_release_the_stream_together(t: Transport) {
    let (client, server, mut incoming) = pair(t).await;
    let mut s = open(&client, &server).await;
    let mut inbound = next(&mut incoming).await;
    // Borrowed halves in one task: write, half close through the write half, read the answer.
    {
        let (mut r, mut w) = s.split();
        let peer_side = async {
            let mut got = Vec::new();
            inbound.stream.read_to_end(&mut got).await.unwrap();
            inbound.stream.write_all(&got).await.unwrap();
            inbound.stream.shutdown().await.unwrap();
        };
        let ours = async {
            w.write_all(b"through the halves").await.unwrap();
            w.shutdown().await.unwrap();
            let mut back = Vec::new();
            r.read_to_end(&mut back).await.unwrap();
            back
        };
        let ((), back) = tokio::join!(peer_side, ours);
        assert_eq!(back, b"through the halves");
    }
    assert_eq!(client.connections(None)[0].open_streams, 1);
    drop(s);
    eventually("the stream is released", || {
        client.connections(None)[0].open_streams == 0
    })
    .await;

    // Owned halves: the stream lives until both are gone, and either can reset it.
    let s = open(&client, &server).await;
    let mut inbound = next(&mut incoming).await;
    let (r, w) = s.into_split();
    drop(r);
    assert_eq!(
        client.connections(None)[0].open_streams,
        1,
        "the write half holds it"
    );
    w.reset();
    let err = tokio::time::timeout(WAIT, inbound.stream.read(&mut [0u8; 4]))
        .await
        .unwrap()
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    drop(w);
    eventually("released with its last half", || {
        client.connections(None)[0].open_streams == 0
    })
    .await;
    client.shutdown().await;
    server.shutdown().await;
}

/// QUIC: the limit on inbound streams is the peer's stream credit, so a stream over it waits
/// (bounded by the negotiation timeout) and goes ahead as soon as one is released.
async fn inbound_streams_over_the_limit_wait_for_credit(t: Transport) {
    let (server, addr) = listening_over(
        t,
        HostConfig {
            limits: Limits {
                max_inbound_streams_per_connection: 3,
                ..Limits::default()
            },
            ..quiet()
        },
    )
    .await;
    let _echo = serve_echo(&server, "/echo/1.0.0");
    let client = host(HostConfig {
        negotiation_timeout: Duration::from_millis(300),
        ..quiet()
    });
    let peer = client.dial(addr).await.unwrap();
    let mut kept = Vec::new();
    for _ in 0..3 {
        kept.push(client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap());
    }
    let err = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap_err();
    assert!(matches!(err, HostError::Timeout { .. }), "{err:?}");
    for s in &mut kept {
        s.write_all(b"ok").await.unwrap();
        let mut back = [0u8; 2];
        s.read_exact(&mut back).await.unwrap();
    }
    // Released (reset) streams give their credit back.
    kept.pop();
    let mut s = tokio::time::timeout(WAIT, async {
        loop {
            if let Ok(s) = client.new_stream(peer, ["/echo/1.0.0"]).await {
                break s;
            }
        }
    })
    .await
    .expect("a released stream's credit comes back");
    s.write_all(b"ok").await.unwrap();
    s.read_exact(&mut [0u8; 2]).await.unwrap();
    assert_eq!(client.connections(Some(&peer)).len(), 1);
    client.shutdown().await;
    server.shutdown().await;
}

// Each case above, once per transport (`over!` is in `common`).
mod tcp {
    over!(Tcp: our_close_of_the_connection_wakes_a_blocked_reader,
        shutdown_wakes_blocked_readers_and_writers,
        reset_after_our_half_close_reaches_the_peer,
        reset_after_the_peers_fin_is_a_reset_not_a_fin,
        dropping_a_half_closed_stream_resets_it,
        a_fin_before_our_close_reads_every_byte_then_eof,
        an_outbound_open_over_the_limit_fails_alone,
        inbound_streams_over_the_limit_are_reset_alone,
        a_closed_connection_is_never_handed_out,
        both_directions_at_full_speed_never_deadlock,
        the_last_frames_of_every_transfer_are_flushed,
        split_halves_read_and_write_at_once_and_release_the_stream_together);
}

mod quic {
    over!(Quic: our_close_of_the_connection_wakes_a_blocked_reader,
        shutdown_wakes_blocked_readers_and_writers,
        reset_after_our_half_close_reaches_the_peer,
        reset_after_the_peers_fin_is_a_reset_not_a_fin,
        dropping_a_half_closed_stream_resets_it,
        a_fin_before_our_close_reads_every_byte_then_eof,
        an_outbound_open_over_the_limit_fails_alone,
        a_closed_connection_is_never_handed_out,
        both_directions_at_full_speed_never_deadlock,
        the_last_frames_of_every_transfer_are_flushed,
        split_halves_read_and_write_at_once_and_release_the_stream_together,
        inbound_streams_over_the_limit_wait_for_credit);
}
