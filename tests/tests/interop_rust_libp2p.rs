//! Interoperability with rust-libp2p: each side dials the other and opens streams on a protocol
//! the other serves; data is checked both ways. Ping and identify work across too.

mod common;

use std::time::Duration;

use common::rust_peer::{Report, RustPeer};
use futures::{AsyncReadExt as _, AsyncWriteExt as _, StreamExt as _};
use libp2p::StreamProtocol;
use p2pnet_host::{Host, HostConfig, HostEvent, generate_keypair};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ECHO: &str = "/p2pnet/test/echo/1.0.0";

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_dials_us_and_opens_our_protocol() {
    let ours = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let addr = ours
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let _echo = ours
        .set_stream_handler(ECHO, |mut s: p2pnet_host::InboundStream| async move {
            let (mut r, mut w) = tokio::io::split(&mut s.stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
        })
        .unwrap();
    let mut events = ours.events();

    let mut theirs = RustPeer::start().await;
    let full = to_theirs(&p2pnet_host::with_p2p(&addr, ours.peer_id()));
    theirs.dial(full).await;
    theirs
        .wait_for(|r| matches!(r, Report::Connected { .. }))
        .await;
    let stream = theirs
        .control
        .open_stream(their_peer(&ours.peer_id()), StreamProtocol::new(ECHO))
        .await
        .expect("rust-libp2p opens a stream on our protocol");
    let payload = pattern(4 << 20);
    // Write and read concurrently: an echo of more than the flow-control windows would
    // otherwise deadlock by design.
    let (mut rd, mut wr) = stream.split();
    let write = {
        let payload = payload.clone();
        async move {
            wr.write_all(&payload).await.unwrap();
            wr.close().await.unwrap(); // half close
        }
    };
    let read = async move {
        let mut back = Vec::new();
        rd.read_to_end(&mut back).await.unwrap();
        back
    };
    let ((), back) =
        tokio::time::timeout(Duration::from_secs(20), futures::future::join(write, read))
            .await
            .unwrap();
    assert_eq!(Sha256::digest(&back), Sha256::digest(&payload));

    // Both identify exchanges and pings work across implementations.
    let report = theirs
        .wait_for(|r| matches!(r, Report::Identified { .. }))
        .await;
    let Report::Identified {
        peer,
        agent_version,
        protocols,
    } = report
    else {
        unreachable!()
    };
    assert_eq!(our_peer(&peer), ours.peer_id());
    assert!(agent_version.starts_with("p2pnet/"), "{agent_version}");
    assert!(protocols.contains(&ECHO.to_owned()), "{protocols:?}");
    theirs
        .wait_for(|r| matches!(r, Report::Pinged { ok: true, .. }))
        .await;
    let ev = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let HostEvent::Identified { agent_version, .. } = events.recv().await.unwrap() {
                return agent_version;
            }
        }
    })
    .await
    .unwrap();
    assert!(ev.starts_with("rust-libp2p"), "{ev}");
    let rtt = ours.ping(our_peer(&theirs.peer_id)).await.unwrap();
    assert!(rtt < Duration::from_secs(5));

    theirs.stop();
    ours.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_dial_rust_libp2p_and_open_its_protocol() {
    let mut theirs = RustPeer::start().await;
    let mut incoming = theirs.control.accept(StreamProtocol::new(ECHO)).unwrap();
    // rust-libp2p side: reverse each request and answer after the requester half-closes.
    let server = tokio::spawn(async move {
        let mut served = 0;
        while let Some((_peer, mut stream)) = incoming.next().await {
            let mut req = Vec::new();
            stream.read_to_end(&mut req).await.unwrap();
            req.reverse();
            stream.write_all(&req).await.unwrap();
            stream.close().await.unwrap();
            served += 1;
            if served == 3 {
                return served;
            }
        }
        served
    });

    let ours = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let full = to_ours(
        &theirs
            .listen_addr
            .clone()
            .with(libp2p::multiaddr::Protocol::P2p(theirs.peer_id)),
    );
    let peer = ours.dial(full).await.unwrap();
    assert_eq!(peer, our_peer(&theirs.peer_id));
    for round in 0..3usize {
        let mut s = ours
            .new_stream(peer, ["/unsupported/1.0.0", ECHO])
            .await
            .unwrap();
        assert_eq!(s.protocol(), ECHO);
        let req = pattern(100_000 + round * 7);
        s.write_all(&req).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back))
            .await
            .unwrap()
            .unwrap();
        let mut expected = req.clone();
        expected.reverse();
        assert_eq!(back, expected);
    }
    assert_eq!(
        tokio::time::timeout(Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap(),
        3
    );
    // A protocol rust-libp2p does not serve is refused by negotiation.
    assert!(matches!(
        ours.new_stream(peer, ["/nope/1.0.0"]).await,
        Err(p2pnet_host::HostError::ProtocolNotSupported { .. })
    ));
    // Identify from the rust-libp2p side reached our peer store.
    theirs
        .wait_for(|r| matches!(r, Report::Connected { .. }))
        .await;
    for _ in 0..500 {
        if ours.peer_store().agent_version(&peer).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        ours.peer_store()
            .agent_version(&peer)
            .unwrap()
            .starts_with("rust-libp2p")
    );

    theirs.stop();
    ours.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_with_wrong_peer_id_is_refused() {
    let theirs = RustPeer::start().await;
    let ours = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let impostor = p2pnet_host::PeerId::random();
    let wrong = p2pnet_host::with_p2p(&to_ours(&theirs.listen_addr), impostor);
    match ours.dial(wrong).await {
        Err(p2pnet_host::HostError::PeerIdMismatch { expected, actual }) => {
            assert_eq!(expected, impostor);
            assert_eq!(actual, our_peer(&theirs.peer_id));
        }
        other => panic!("expected PeerIdMismatch, got {other:?}"),
    }
    theirs.stop();
    ours.shutdown().await;
}

// Stream ends against rust-libp2p: half close then reset, and a reset after the peer's FIN, with
// each side resetting, and over a connection either side dialed.
//
// What rust-libp2p 0.57 can express (libp2p-swarm 0.48 `Stream`, libp2p-yamux 0.48, yamux 0.14.1):
// its `Stream` has no `reset()`; dropping one is its only abort, and what the drop sends depends
// on the yamux state (`Connection::on_drop_stream`): RST while neither FIN was sent nor received,
// our FIN back after our FIN arrived (a graceful end, not a reset), and nothing at all after its
// own FIN (data frames for the forgotten stream are then ignored without RST, paritytech/yamux
// #110). On its side a peer's RST makes reads return `Ok(0)` (end of stream, bytes before it
// stay readable) and writes fail with `WriteZero`.

const ENDS: &str = "/p2pnet/test/ends/1.0.0";
const WAIT: Duration = Duration::from_secs(5);
/// The yamux spec's initial stream window: what a peer may send before a window update.
const INITIAL_WINDOW: usize = 256 * 1024;

/// Our host and a rust-libp2p peer, connected (dialed by us when `we_dial`, else by them).
struct Pair {
    ours: Host,
    theirs: RustPeer,
    /// The rust-libp2p peer, in our types.
    peer: p2pnet_host::PeerId,
}

async fn pair(we_dial: bool) -> Pair {
    let ours = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let mut theirs = RustPeer::start().await;
    let peer = our_peer(&theirs.peer_id);
    if we_dial {
        let full = to_ours(
            &theirs
                .listen_addr
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(theirs.peer_id)),
        );
        assert_eq!(ours.dial(full).await.unwrap(), peer);
    } else {
        let addr = ours
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        theirs
            .dial(to_theirs(&p2pnet_host::with_p2p(&addr, ours.peer_id())))
            .await;
    }
    theirs
        .wait_for(|r| matches!(r, Report::Connected { .. }))
        .await;
    tokio::time::timeout(WAIT, async {
        while ours.connections(Some(&peer)).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("our host sees the connection");
    Pair { ours, theirs, peer }
}

async fn next_inbound(incoming: &mut p2pnet_host::StreamReceiver) -> p2pnet_host::InboundStream {
    tokio::time::timeout(WAIT, incoming.recv())
        .await
        .expect("an inbound stream in time")
        .unwrap()
}

/// Half close then reset, we reset: we upload and FIN; rust-libp2p reads to EOF and starts
/// answering; our `reset()` must fail its writes promptly (`WriteZero`, its kind for a reset
/// stream) rather than let them stall once our window is used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_after_our_half_close_fails_rust_libp2p_writes() {
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
        let (answering_tx, answering_rx) = tokio::sync::oneshot::channel();
        let theirs = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert_eq!(got, b"upload");
            s.write_all(b"answer").await.unwrap();
            answering_tx.send(()).unwrap();
            let chunk = vec![7u8; 64 * 1024];
            for _ in 0..1000 {
                if let Err(e) = s.write_all(&chunk).await {
                    return e;
                }
            }
            panic!("writes to a reset stream kept succeeding");
        });
        let mut s = p.ours.new_stream(p.peer, [ENDS]).await.unwrap();
        s.write_all(b"upload").await.unwrap();
        s.shutdown().await.unwrap();
        tokio::time::timeout(WAIT, answering_rx)
            .await
            .expect("rust-libp2p reads the upload to EOF and answers")
            .unwrap();
        s.reset();
        let err = tokio::time::timeout(WAIT, theirs)
            .await
            .unwrap_or_else(|_| panic!("rust-libp2p's writer stalls (we_dial: {we_dial})"))
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::WriteZero, "{err}");
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// Half close then reset, rust-libp2p "resets": it uploads and FINs, we read to EOF and answer,
/// it drops the stream. rust-libp2p cannot send RST after its own FIN: the drop sends nothing
/// and it ignores our later data frames, so our writer gets no error; it stalls once exactly the
/// initial window is used, and only the end of the connection fails it (`ConnectionReset`, lost
/// transport). Between two of our hosts the writer fails at once (`stream_ends.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_drop_after_its_half_close_stalls_our_writes_until_the_connection_ends() {
    for we_dial in [true, false] {
        let p = pair(we_dial).await;
        let mut incoming = p.ours.accept_streams(ENDS, 4).unwrap();
        let mut control = p.theirs.control.clone();
        let us = their_peer(&p.ours.peer_id());
        let (answered_tx, answered_rx) = tokio::sync::oneshot::channel::<()>();
        let theirs = tokio::spawn(async move {
            let mut s = control
                .open_stream(us, StreamProtocol::new(ENDS))
                .await
                .unwrap();
            s.write_all(b"upload").await.unwrap();
            s.close().await.unwrap();
            answered_rx.await.unwrap();
            drop(s); // rust-libp2p's only abort
        });
        let mut inbound = next_inbound(&mut incoming).await;
        let mut got = Vec::new();
        tokio::time::timeout(WAIT, inbound.stream.read_to_end(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, b"upload");
        inbound.stream.write_all(b"answer").await.unwrap();
        answered_tx.send(()).unwrap();
        tokio::time::timeout(WAIT, theirs).await.unwrap().unwrap();

        let written = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(6));
        let writer = tokio::spawn({
            let written = written.clone();
            async move {
                let chunk = vec![7u8; 64 * 1024];
                loop {
                    match inbound.stream.write(&chunk).await {
                        Ok(n) => written.fetch_add(n, std::sync::atomic::Ordering::Relaxed),
                        Err(e) => return e,
                    };
                }
            }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        let stalled_at = written.load(std::sync::atomic::Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(!writer.is_finished(), "our writer got an answer after all");
        assert_eq!(
            written.load(std::sync::atomic::Ordering::Relaxed),
            stalled_at
        );
        // The window also carried our multistream-select answer (two length-prefixed lines).
        let negotiation = 1 + "/multistream/1.0.0\n".len() + 1 + ENDS.len() + 1;
        assert_eq!(
            stalled_at + negotiation,
            INITIAL_WINDOW,
            "we_dial: {we_dial}"
        );
        // The end of the connection ends the stall.
        p.theirs.stop();
        let err = tokio::time::timeout(WAIT, writer)
            .await
            .expect("the end of the connection wakes our writer")
            .unwrap();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        p.ours.shutdown().await;
    }
}

/// A reset after the peer's FIN, we reset: rust-libp2p answers and FINs, we read the answer to
/// EOF, then reset mid-upload. rust-libp2p reads a peer's RST as end of stream: its reader gets
/// every byte we sent, then `Ok(0)`, as if the upload were whole. It cannot tell a reset from a
/// FIN once its own FIN is out; between two of our hosts the reader fails with `ConnectionReset`
/// (`stream_ends.rs`). What is checked here: the reset ends rust-libp2p's read (it does not hang)
/// and the bytes before it arrive intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn our_reset_after_rust_libp2p_fin_ends_its_read_as_eof() {
    for we_dial in [true, false] {
        let mut p = pair(we_dial).await;
        let mut incoming = p.theirs.control.accept(StreamProtocol::new(ENDS)).unwrap();
        let theirs = tokio::spawn(async move {
            let (_, mut s) = incoming.next().await.unwrap();
            s.write_all(b"go ahead").await.unwrap();
            s.close().await.unwrap();
            let mut got = Vec::new();
            let read = s.read_to_end(&mut got).await;
            (read.map_err(|e| e.kind()), got)
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
        let (read, got) = tokio::time::timeout(WAIT, theirs)
            .await
            .unwrap_or_else(|_| panic!("rust-libp2p's reader hangs (we_dial: {we_dial})"))
            .unwrap();
        assert_eq!(got, b"part one, part two");
        assert_eq!(read, Ok(got.len()), "rust-libp2p reads a reset as EOF");
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// A reset after the peer's FIN, rust-libp2p "resets": we answer and FIN, it reads the answer to
/// EOF, uploads a little more and drops the stream. rust-libp2p cannot send RST after the peer's
/// FIN: the drop sends FIN, so we read its bytes and a clean end, exactly as for a whole upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_drop_after_our_fin_reads_as_a_clean_end() {
    for we_dial in [true, false] {
        let p = pair(we_dial).await;
        let mut incoming = p.ours.accept_streams(ENDS, 4).unwrap();
        let mut control = p.theirs.control.clone();
        let us = their_peer(&p.ours.peer_id());
        let theirs = tokio::spawn(async move {
            let mut s = control
                .open_stream(us, StreamProtocol::new(ENDS))
                .await
                .unwrap();
            s.write_all(b"part one,").await.unwrap();
            let mut answer = Vec::new();
            s.read_to_end(&mut answer).await.unwrap();
            assert_eq!(answer, b"go ahead");
            s.write_all(b" part two").await.unwrap();
            drop(s); // rust-libp2p's only abort
        });
        let mut inbound = next_inbound(&mut incoming).await;
        inbound.stream.write_all(b"go ahead").await.unwrap();
        inbound.stream.shutdown().await.unwrap();
        let mut got = Vec::new();
        let read = tokio::time::timeout(WAIT, inbound.stream.read_to_end(&mut got))
            .await
            .expect("the drop ends our read");
        tokio::time::timeout(WAIT, theirs).await.unwrap().unwrap();
        assert_eq!(got, b"part one, part two");
        assert_eq!(read.unwrap(), got.len(), "rust-libp2p's drop here is a FIN");
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}

/// rust-libp2p's one real reset: dropping a stream neither side has finished sends RST, and we
/// report it exactly: reads fail with `ConnectionReset` (not EOF), and so do writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_libp2p_drop_of_an_open_stream_is_a_reset_for_us() {
    for we_dial in [true, false] {
        let p = pair(we_dial).await;
        let mut incoming = p.ours.accept_streams(ENDS, 4).unwrap();
        let mut control = p.theirs.control.clone();
        let us = their_peer(&p.ours.peer_id());
        let (read_tx, read_rx) = tokio::sync::oneshot::channel::<()>();
        let theirs = tokio::spawn(async move {
            let mut s = control
                .open_stream(us, StreamProtocol::new(ENDS))
                .await
                .unwrap();
            s.write_all(b"part of an upload").await.unwrap();
            read_rx.await.unwrap();
            drop(s);
        });
        let mut inbound = next_inbound(&mut incoming).await;
        let mut part = [0u8; 17];
        tokio::time::timeout(WAIT, inbound.stream.read_exact(&mut part))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(&part, b"part of an upload");
        read_tx.send(()).unwrap();
        tokio::time::timeout(WAIT, theirs).await.unwrap().unwrap();
        let mut rest = Vec::new();
        let err = tokio::time::timeout(WAIT, inbound.stream.read_to_end(&mut rest))
            .await
            .unwrap()
            .expect_err("a reset is not an end of stream");
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        let err = inbound.stream.write_all(b"late").await.unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset, "{err}");
        p.theirs.stop();
        p.ours.shutdown().await;
    }
}
