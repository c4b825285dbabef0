//! Interoperability with rust-libp2p over QUIC (`/udp/…/quic-v1`, libp2p-quic 0.14 on quinn
//! 0.11): each side dials the other and opens streams on a protocol the other serves, data checked
//! both ways; identify carries QUIC listen addresses both ways; a wrong `/p2p/` id is refused;
//! stream resets and connection ends mid-transfer are reported exactly.
//!
//! What rust-libp2p can express on a QUIC stream: its `Stream` has no `reset()`, and dropping
//! one does what quinn does for dropped streams: its send half is *finished* (FIN after every byte
//! its writes accepted, `SendStream::drop`), its receive half is stopped (`STOP_SENDING` code 0,
//! `RecvStream::drop`) unless read to its end. On its side a peer's `RESET_STREAM` fails reads
//! and a peer's `STOP_SENDING` fails writes, both with `ConnectionReset` (quinn's
//! `From<ReadError>`/`From<WriteError>` for `io::Error`).

mod common;

use std::time::Duration;

use common::quic_peer::{QuicPeer, Report};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::StreamProtocol;
use p2pnet_host::{Direction, Host, HostConfig, HostError, HostEvent, Protocol, generate_keypair};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: &str = "/p2pnet/test/echo/1.0.0";
const ENDS: &str = "/p2pnet/test/ends/1.0.0";
const QUIC_LISTEN: &str = "/ip4/127.0.0.1/udp/0/quic-v1";
const ECHO_BYTES: usize = 1 << 20;
/// Our bound on one step (a dial, a transfer, an event).
const WAIT: Duration = Duration::from_secs(10);

fn to_ours(addr: &libp2p::Multiaddr) -> p2pnet_host::Multiaddr {
    addr.to_vec().try_into().unwrap()
}

fn to_theirs(addr: &p2pnet_host::Multiaddr) -> libp2p::Multiaddr {
    addr.to_vec().try_into().unwrap()
}

fn their_peer(p: &p2pnet_host::PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(&p.to_bytes()).unwrap()
}

fn our_peer(p: &libp2p::PeerId) -> p2pnet_host::PeerId {
    p2pnet_host::PeerId::from_bytes(&p.to_bytes()).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// `/ip4/127.0.0.1/udp/<port ≠ 0>/quic-v1`, nothing more.
fn is_loopback_quic(addr: &p2pnet_host::Multiaddr) -> bool {
    let parts: Vec<_> = addr.iter().collect();
    matches!(
        parts.as_slice(),
        [Protocol::Ip4(ip), Protocol::Udp(port), Protocol::QuicV1] if ip.is_loopback() && *port != 0
    )
}

/// The rust-libp2p peer's QUIC address with its `/p2p/` id, in our types.
fn their_full_addr(theirs: &QuicPeer) -> p2pnet_host::Multiaddr {
    p2pnet_host::with_p2p(&to_ours(&theirs.listen_addr), our_peer(&theirs.peer_id))
}

/// Our host with an echo handler on [`ECHO`], serving while the registration lives.
fn our_host() -> (Host, p2pnet_host::StreamHandlerRegistration) {
    let ours = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let echo = ours
        .set_stream_handler(ECHO, |mut s: p2pnet_host::InboundStream| async move {
            let (mut r, mut w) = tokio::io::split(&mut s.stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .unwrap();
    (ours, echo)
}

/// Serves [`ECHO`] on the rust-libp2p peer: every stream is echoed until its writer half-closes.
fn serve_their_echo(theirs: &mut QuicPeer) -> tokio::task::JoinHandle<()> {
    let mut incoming = theirs.control.accept(StreamProtocol::new(ECHO)).unwrap();
    tokio::spawn(async move {
        while let Some((_peer, stream)) = incoming.next().await {
            tokio::spawn(async move {
                let (r, mut w) = stream.split();
                if futures::io::copy(r, &mut w).await.is_ok() {
                    let _ = w.close().await;
                }
            });
        }
    })
}

/// Writes `payload` on our stream, half-closes, and reads the echo to its end, concurrently (an
/// echo of more than the flow-control windows would otherwise deadlock by design).
async fn echo_through(s: p2pnet_host::Stream, payload: &[u8]) -> Vec<u8> {
    let (mut rd, mut wr) = s.into_split();
    let write = async move {
        wr.write_all(payload).await.unwrap();
        wr.shutdown().await.unwrap();
    };
    let read = async move {
        let mut back = Vec::with_capacity(payload.len());
        rd.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::time::timeout(WAIT, futures::future::join(write, read))
        .await
        .expect("the echo over QUIC timed out");
    back
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    tokio::time::timeout(WAIT, async {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("timed out waiting until {what}"));
}

/// (1) rust-libp2p dials our QUIC listener and echoes 1 MiB through our protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_dials_our_quic_listener_and_opens_our_protocol() {
    let (ours, _echo) = our_host();
    let addr = ours.listen_on(QUIC_LISTEN.parse().unwrap()).await.unwrap();
    assert!(is_loopback_quic(&addr), "{addr}");
    assert!(
        ours.listen_addrs().contains(&addr),
        "{:?}",
        ours.listen_addrs()
    );

    let mut theirs = QuicPeer::start().await;
    theirs
        .dial(to_theirs(&p2pnet_host::with_p2p(&addr, ours.peer_id())))
        .await;
    let Report::Connected { peer, remote } = theirs
        .wait_for(|r| matches!(r, Report::Connected { .. } | Report::DialFailed { .. }))
        .await
    else {
        panic!("rust-libp2p could not dial our QUIC listener");
    };
    assert_eq!(our_peer(&peer), ours.peer_id());
    assert_eq!(p2pnet_host::without_p2p(&to_ours(&remote)).0, addr);

    let stream = tokio::time::timeout(
        WAIT,
        theirs
            .control
            .open_stream(their_peer(&ours.peer_id()), StreamProtocol::new(ECHO)),
    )
    .await
    .expect("open_stream timed out")
    .expect("rust-libp2p opens a stream on our protocol over QUIC");
    let payload = pattern(ECHO_BYTES);
    let (mut rd, mut wr) = stream.split();
    let write = {
        let payload = payload.clone();
        async move {
            wr.write_all(&payload).await.unwrap();
            wr.close().await.unwrap(); // half close: our echo ends its side then
        }
    };
    let read = async move {
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) = tokio::time::timeout(WAIT, futures::future::join(write, read))
        .await
        .expect("the echo through our host timed out");
    assert_eq!(back.len(), ECHO_BYTES);
    assert_eq!(Sha256::digest(&back), Sha256::digest(&payload));

    // Our side of the connection: inbound, from rust-libp2p's QUIC address.
    let them = our_peer(&theirs.peer_id);
    let conns = ours.connections(Some(&them));
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].direction, Direction::Inbound);
    assert!(is_loopback_quic(&conns[0].remote_addr), "{conns:?}");

    // Pings both ways over QUIC.
    theirs
        .wait_for(|r| matches!(r, Report::Pinged { ok: true, .. }))
        .await;
    let rtt = tokio::time::timeout(WAIT, ours.ping(them))
        .await
        .expect("ping timed out")
        .unwrap();
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");

    theirs.stop();
    ours.shutdown().await;
}

/// (2) We dial rust-libp2p's QUIC listen address and echo through its protocol: 1 MiB, then
/// several streams at once on the one connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_dial_rust_libp2p_over_quic_and_open_its_protocol() {
    let mut theirs = QuicPeer::start().await;
    let _server = serve_their_echo(&mut theirs);
    let (ours, _echo) = our_host();
    let peer = tokio::time::timeout(WAIT, ours.dial(their_full_addr(&theirs)))
        .await
        .expect("dial timed out")
        .expect("we dial rust-libp2p over QUIC");
    assert_eq!(peer, our_peer(&theirs.peer_id));
    let conns = ours.connections(None);
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0].peer, peer);
    assert_eq!(conns[0].direction, Direction::Outbound);
    assert_eq!(conns[0].remote_addr, to_ours(&theirs.listen_addr));

    let s = ours
        .new_stream(peer, ["/unsupported/1.0.0", ECHO])
        .await
        .unwrap();
    assert_eq!(s.protocol(), ECHO);
    let payload = pattern(ECHO_BYTES);
    let back = echo_through(s, &payload).await;
    assert_eq!(back.len(), ECHO_BYTES);
    assert_eq!(Sha256::digest(&back), Sha256::digest(&payload));

    // Four streams at once, each with its own data. Each is opened alone and its first byte
    // echoed before the next is opened: libp2p-stream drops (with STOP_SENDING, a reset for our
    // writer) an inbound stream that arrives while its acceptor has one not yet taken
    // (`Shared::on_inbound_stream`, a zero-capacity channel).
    let mut streams = Vec::new();
    for i in 0..4usize {
        let mut s = ours.new_stream(peer, [ECHO]).await.unwrap();
        let mut payload = pattern(100_000 + i * 7);
        payload.rotate_left(i);
        s.write_all(&payload[..1]).await.unwrap();
        let mut first = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut first))
            .await
            .expect("the first byte's echo timed out")
            .unwrap();
        assert_eq!(first[0], payload[0]);
        streams.push((s, payload));
    }
    let rounds = streams
        .into_iter()
        .enumerate()
        .map(|(i, (s, payload))| async move {
            let back = echo_through(s, &payload[1..]).await;
            assert_eq!(back, payload[1..], "stream {i}");
        });
    futures::future::join_all(rounds).await;

    // A protocol rust-libp2p does not serve is refused by negotiation; the connection stays.
    assert!(matches!(
        ours.new_stream(peer, ["/nope/1.0.0"]).await,
        Err(HostError::ProtocolNotSupported { .. })
    ));
    let rtt = tokio::time::timeout(WAIT, ours.ping(peer))
        .await
        .expect("ping timed out")
        .unwrap();
    assert!(rtt < Duration::from_secs(5), "{rtt:?}");
    assert_eq!(ours.connections(None).len(), 1);

    theirs.stop();
    ours.shutdown().await;
}

/// (3) Identify over QUIC: rust-libp2p learns our `/quic-v1` listen address (next to our TCP
/// one), and its QUIC listen address reaches our peer store. rust-libp2p dials us, so its
/// address can only come from its identify message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_over_quic_carries_quic_listen_addrs_both_ways() {
    let (ours, _echo) = our_host();
    let quic = ours.listen_on(QUIC_LISTEN.parse().unwrap()).await.unwrap();
    let tcp = ours
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let mut events = ours.events();

    let mut theirs = QuicPeer::start().await;
    let them = our_peer(&theirs.peer_id);
    theirs
        .dial(to_theirs(&p2pnet_host::with_p2p(&quic, ours.peer_id())))
        .await;

    // What rust-libp2p learned about us.
    let Report::Identified {
        peer,
        agent_version,
        protocols,
        listen_addrs,
    } = theirs
        .wait_for(|r| matches!(r, Report::Identified { .. }))
        .await
    else {
        unreachable!()
    };
    assert_eq!(our_peer(&peer), ours.peer_id());
    assert!(agent_version.starts_with("p2pnet/"), "{agent_version}");
    assert!(protocols.iter().any(|p| p == ECHO), "{protocols:?}");
    let listen_addrs: Vec<_> = listen_addrs.iter().map(to_ours).collect();
    assert!(
        listen_addrs.contains(&quic),
        "{quic} not in {listen_addrs:?}"
    );
    assert!(listen_addrs.contains(&tcp), "{tcp} not in {listen_addrs:?}");

    // What we learned about rust-libp2p.
    let their_quic = to_ours(&theirs.listen_addr);
    let (agent, announced) = tokio::time::timeout(WAIT, async {
        loop {
            if let HostEvent::Identified {
                peer,
                agent_version,
                listen_addrs,
                ..
            } = events.recv().await.unwrap()
                && peer == them
            {
                return (agent_version, listen_addrs);
            }
        }
    })
    .await
    .expect("no identify from rust-libp2p over QUIC");
    assert!(agent.starts_with("rust-libp2p"), "{agent}");
    assert!(announced.contains(&their_quic), "{announced:?}");
    wait_until("rust-libp2p's QUIC address is in our peer store", || {
        ours.peer_store().addrs(&them).contains(&their_quic)
    })
    .await;
    let stored = ours.peer_store().addrs(&them);
    assert!(stored.iter().all(is_loopback_quic), "{stored:?}");

    theirs.stop();
    ours.shutdown().await;
}

/// (4) A wrong `/p2p/` id in our dial to rust-libp2p's QUIC address is refused with
/// `PeerIdMismatch`; the host keeps running and the following correct dial works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_peer_id_over_quic_is_refused_and_the_host_keeps_running() {
    let mut theirs = QuicPeer::start().await;
    let _server = serve_their_echo(&mut theirs);
    let (ours, _echo) = our_host();
    let them = our_peer(&theirs.peer_id);
    let impostor = p2pnet_host::PeerId::random();
    let wrong = p2pnet_host::with_p2p(&to_ours(&theirs.listen_addr), impostor);
    match tokio::time::timeout(WAIT, ours.dial(wrong))
        .await
        .expect("the wrong dial timed out")
    {
        Err(HostError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, impostor);
            assert_eq!(actual, them);
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    assert!(!ours.is_connected(&them));
    assert!(!ours.is_connected(&impostor));
    assert!(ours.connections(None).is_empty());
    assert!(!ours.is_shut_down());

    let peer = tokio::time::timeout(WAIT, ours.dial(their_full_addr(&theirs)))
        .await
        .expect("the correct dial timed out")
        .expect("the correct dial after a refused one");
    assert_eq!(peer, them);
    let s = ours.new_stream(peer, [ECHO]).await.unwrap();
    let payload = pattern(64 * 1024);
    assert_eq!(echo_through(s, &payload).await, payload);

    theirs.stop();
    ours.shutdown().await;
}

/// Our host and a rust-libp2p peer, connected over QUIC (dialed by us when `we_dial`, else by
/// them).
struct Pair {
    ours: Host,
    theirs: QuicPeer,
    /// The rust-libp2p peer, in our types.
    peer: p2pnet_host::PeerId,
}

async fn pair(we_dial: bool) -> Pair {
    let ours = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let mut theirs = QuicPeer::start().await;
    let peer = our_peer(&theirs.peer_id);
    if we_dial {
        let dialed = tokio::time::timeout(WAIT, ours.dial(their_full_addr(&theirs)))
            .await
            .expect("dial timed out")
            .unwrap();
        assert_eq!(dialed, peer);
    } else {
        let addr = ours.listen_on(QUIC_LISTEN.parse().unwrap()).await.unwrap();
        theirs
            .dial(to_theirs(&p2pnet_host::with_p2p(&addr, ours.peer_id())))
            .await;
    }
    theirs
        .wait_for(|r| matches!(r, Report::Connected { .. }))
        .await;
    wait_until("our host sees the connection", || {
        !ours.connections(Some(&peer)).is_empty()
    })
    .await;
    Pair { ours, theirs, peer }
}

/// A rust-libp2p `ENDS` handler that reads `head` bytes of our upload, then writes 64 KiB chunks
/// until `stop` fires (or a write fails), then drops the stream. Returns how many bytes its
/// writes accepted.
fn their_writer_until_dropped(
    p: &mut Pair,
    head: usize,
    stop: tokio::sync::oneshot::Receiver<()>,
) -> tokio::task::JoinHandle<usize> {
    let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
    tokio::spawn(async move {
        let (_, mut s) = incoming.next().await.unwrap();
        let mut got = vec![0u8; head];
        s.read_exact(&mut got).await.unwrap();
        assert_eq!(got, pattern(head));
        let chunk = vec![7u8; 64 * 1024];
        let mut written = 0;
        let mut stop = stop;
        loop {
            tokio::select! {
                biased;
                _ = &mut stop => break,
                n = s.write(&chunk) => match n {
                    Ok(n) => written += n,
                    Err(_) => break,
                },
            }
        }
        drop(s); // rust-libp2p's only abort
        written
    })
}

/// Writes the pattern in 64 KiB chunks until a write fails; returns the error.
fn our_writer_until_error(
    mut w: p2pnet_host::OwnedWriteHalf,
) -> tokio::task::JoinHandle<std::io::Error> {
    tokio::spawn(async move {
        let data = pattern(64 * 1024);
        loop {
            if let Err(e) = w.write_all(&data).await {
                return e;
            }
        }
    })
}

/// (5a) rust-libp2p drops a stream mid-transfer (both directions busy, our upload unread). Over
/// QUIC that is no reset of its direction: quinn finishes a dropped send stream, so our read
/// gets exactly the bytes its writes accepted and then a clean end of stream (a truncated
/// download looks whole: rust-libp2p cannot say otherwise). Its unread receive half is stopped:
/// our writer fails with `ConnectionReset` instead of stalling on a full window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_drop_mid_transfer_is_a_fin_for_our_reads_and_a_stop_for_our_writes() {
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let theirs = their_writer_until_dropped(&mut p, 1000, stop_rx);
        let s = p.ours.new_stream(p.peer, [ENDS]).await.unwrap();
        let (mut rd, wr) = s.into_split();
        let writer = our_writer_until_error(wr);
        let mut first = vec![0u8; 256 * 1024];
        tokio::time::timeout(WAIT, rd.read_exact(&mut first))
            .await
            .expect("rust-libp2p's data in time")
            .unwrap();
        stop_tx.send(()).unwrap();
        let written = tokio::time::timeout(WAIT, theirs)
            .await
            .expect("rust-libp2p drops the stream")
            .unwrap();
        let mut rest = Vec::new();
        let read = tokio::time::timeout(WAIT, rd.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("our read hangs after the drop (we_dial: {we_dial})"));
        assert_eq!(
            read.map_err(|e| e.kind()),
            Ok(written - first.len()),
            "a dropped rust-libp2p QUIC stream ends our read cleanly (we_dial: {we_dial})"
        );
        assert!(first.iter().chain(&rest).all(|b| *b == 7));
        let err = tokio::time::timeout(WAIT, writer)
            .await
            .unwrap_or_else(|_| panic!("our writer stalls after the drop (we_dial: {we_dial})"))
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// (5b) rust-libp2p closes the connection mid-transfer, its stream still open (no FIN): our read
/// fails with `ConnectionReset`, never a clean end of stream, and so does our next write.
///
/// The link is quiet when it closes (we have read all it sent): `CONNECTION_CLOSE` is a single
/// datagram QUIC does not repeat unless asked, and a flood can fill our UDP receive buffer
/// (this machine's kernel counts `RcvbufErrors` during these tests). Lost, it is only noticed at
/// our next keep-alive (5 s) or at the idle timeout (10 s), still as `ConnectionReset`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_closing_the_connection_mid_transfer_fails_our_read_with_connection_reset() {
    const SENT: usize = 512 * 1024;
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
        let theirs = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.unwrap();
            let mut head = vec![0u8; 1000];
            s.read_exact(&mut head).await.unwrap();
            s.write_all(&pattern(SENT)).await.unwrap();
            // Holds the stream, unfinished, until the test is done with it.
            let _ = done_rx.await;
            drop(s);
        });
        let mut s = p.ours.new_stream(p.peer, [ENDS]).await.unwrap();
        s.write_all(&pattern(1000)).await.unwrap();
        let mut got = vec![0u8; SENT];
        tokio::time::timeout(WAIT, s.read_exact(&mut got))
            .await
            .expect("rust-libp2p's data in time")
            .unwrap();
        assert_eq!(got, pattern(SENT));
        p.theirs.disconnect(their_peer(&p.ours.peer_id())).await;
        let mut rest = Vec::new();
        let err = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("our read hangs (we_dial: {we_dial})"))
            .expect_err("a closed connection is not an end of stream");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        assert!(rest.is_empty());
        let err = s.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let ours = p.ours.clone();
        let peer = p.peer;
        wait_until("our host drops the closed connection", move || {
            ours.connections(Some(&peer)).is_empty()
        })
        .await;
        done_tx.send(()).unwrap();
        tokio::time::timeout(WAIT, theirs).await.unwrap().unwrap();
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// (5c) Our reset mid-transfer (both directions busy): rust-libp2p's read fails with
/// `ConnectionReset` (quinn's `ReadError::Reset`, not an end of stream) and its write fails with
/// `ConnectionReset` (`WriteError::Stopped`), both promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_mid_transfer_fails_rust_libp2p_reads_and_writes() {
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
        let (reading_tx, reading_rx) = tokio::sync::oneshot::channel();
        let theirs = tokio::spawn(async move {
            let (_, s) = incoming.next().await.unwrap();
            let (mut r, mut w) = s.split();
            let read = async move {
                let mut got = vec![0u8; 1000];
                r.read_exact(&mut got).await.unwrap();
                assert_eq!(got, pattern(1000));
                reading_tx.send(()).unwrap();
                let mut rest = Vec::new();
                r.read_to_end(&mut rest).await.map_err(|e| e.kind())
            };
            let write = async move {
                let chunk = vec![7u8; 64 * 1024];
                for _ in 0..1000 {
                    if let Err(e) = w.write_all(&chunk).await {
                        return Err(e.kind());
                    }
                }
                Ok(())
            };
            futures::future::join(read, write).await
        });
        let mut s = p.ours.new_stream(p.peer, [ENDS]).await.unwrap();
        // Part of an upload (the rest never comes), and part of their download.
        s.write_all(&pattern(4000)).await.unwrap();
        let mut first = vec![0u8; 64 * 1024];
        tokio::time::timeout(WAIT, s.read_exact(&mut first))
            .await
            .expect("rust-libp2p's data in time")
            .unwrap();
        tokio::time::timeout(WAIT, reading_rx)
            .await
            .expect("rust-libp2p reads our upload")
            .unwrap();
        s.reset();
        let (read, write) = tokio::time::timeout(WAIT, theirs)
            .await
            .unwrap_or_else(|_| panic!("rust-libp2p hangs after our reset (we_dial: {we_dial})"))
            .unwrap();
        assert_eq!(
            read.map(|_| ()),
            Err(std::io::ErrorKind::ConnectionReset),
            "rust-libp2p's read after our reset (we_dial: {we_dial})"
        );
        assert_eq!(
            write,
            Err(std::io::ErrorKind::ConnectionReset),
            "rust-libp2p's write after our reset (we_dial: {we_dial})"
        );
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// (5d) Half close then reset, we reset: we upload and FIN, rust-libp2p reads to the end and
/// answers with more than our window; our `reset()` (its `STOP_SENDING`) fails its writes with
/// `ConnectionReset` promptly instead of letting them stall.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_after_our_half_close_fails_rust_libp2p_writes() {
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
        let theirs = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"upload");
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..1000 {
                if let Err(e) = s.write_all(&chunk).await {
                    return e.kind();
                }
            }
            panic!("writes to a reset stream kept succeeding");
        });
        let mut s = p.ours.new_stream(p.peer, [ENDS]).await.unwrap();
        s.write_all(b"upload").await.unwrap();
        s.shutdown().await.unwrap();
        let mut first = [0u8; 1];
        tokio::time::timeout(WAIT, s.read_exact(&mut first))
            .await
            .expect("rust-libp2p answers")
            .unwrap();
        s.reset();
        let kind = tokio::time::timeout(WAIT, theirs)
            .await
            .unwrap_or_else(|_| panic!("rust-libp2p's writer stalls (we_dial: {we_dial})"))
            .unwrap();
        assert_eq!(
            kind,
            std::io::ErrorKind::ConnectionReset,
            "we_dial: {we_dial}"
        );
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// (5e) A reset after the peer's FIN, we reset: rust-libp2p answers and FINs, we read the answer
/// to its end, then reset mid-upload. Over QUIC that is a `RESET_STREAM` rust-libp2p sees: its
/// read fails with `ConnectionReset`, not an end of stream (over yamux it cannot tell, see
/// `interop_rust_libp2p.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_after_rust_libp2p_fin_fails_its_read() {
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
        let theirs = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.unwrap();
            s.write_all(b"go ahead").await.unwrap();
            s.close().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.map_err(|e| e.kind())
        });
        let mut s = p.ours.new_stream(p.peer, [ENDS]).await.unwrap();
        s.write_all(b"part one,").await.unwrap();
        let mut answer = Vec::new();
        tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
            .await
            .unwrap()
            .expect("rust-libp2p's FIN is a clean end");
        assert_eq!(answer, b"go ahead");
        s.write_all(b" part two").await.unwrap();
        s.reset();
        let read = tokio::time::timeout(WAIT, theirs)
            .await
            .unwrap_or_else(|_| panic!("rust-libp2p's reader hangs (we_dial: {we_dial})"))
            .unwrap();
        assert_eq!(
            read,
            Err(std::io::ErrorKind::ConnectionReset),
            "we_dial: {we_dial}"
        );
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}
