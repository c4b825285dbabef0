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
