//! Coalesced dials: a caller joining a dial in progress has its address tried too, and dials
//! that race a shutdown end with `ShutDown` at once. Real hosts on loopback.

mod common;

use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use p2pnet_host::{HostConfig, HostError, Multiaddr, PeerId, with_p2p, without_p2p};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A TCP listener on loopback that accepts connections and never says a word (a handshake to
/// it hangs); its address, and a channel that gets a message at each accepted connection.
fn silent_listener() -> (Multiaddr, mpsc::Receiver<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            held.push(conn);
            if tx.send(()).is_err() {
                return;
            }
        }
    });
    (format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap(), rx)
}

/// Waits (bounded, off the runtime's threads) until the silent listener has accepted a dial.
async fn accepted(rx: mpsc::Receiver<()>) -> mpsc::Receiver<()> {
    tokio::task::spawn_blocking(move || {
        rx.recv_timeout(Duration::from_secs(10))
            .expect("the dial never reached the silent listener");
        rx
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dial_joining_one_in_flight_has_its_address_tried() {
    let (server, real) = listening(HostConfig::default()).await;
    let peer = server.peer_id();
    let (silent, rx) = silent_listener();
    let client = host(HostConfig {
        dial_timeout: Duration::from_millis(500),
        ..HostConfig::default()
    });
    let first = tokio::spawn({
        let client = client.clone();
        let addr = with_p2p(&silent, peer);
        async move { client.dial(addr).await }
    });
    let _rx = accepted(rx).await;
    // The first dial hangs on the silent address; this one joins it with the real address.
    let joined = tokio::time::timeout(Duration::from_secs(10), client.dial(real.clone()))
        .await
        .expect("the joined dial never ended");
    assert_eq!(joined.unwrap(), peer);
    let first = tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the first dial never ended")
        .unwrap();
    assert_eq!(
        first.unwrap(),
        peer,
        "the first caller shares the connection"
    );
    let conns = client.connections(None);
    assert_eq!(conns.len(), 1);
    assert_eq!(conns[0].remote_addr, without_p2p(&real).0);
    assert_eq!(
        client.metrics().dial_failures,
        1,
        "the silent address timed out"
    );
    client.shutdown().await;
    server.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_in_flight_at_shutdown_end_with_shut_down_at_once() {
    let (silent, rx) = silent_listener();
    let client = host(HostConfig {
        dial_timeout: Duration::from_secs(60),
        handshake_timeout: Duration::from_secs(60),
        ..HostConfig::default()
    });
    let peer = PeerId::random();
    let by_peer = tokio::spawn({
        let client = client.clone();
        let addr = with_p2p(&silent, peer);
        async move { client.dial(addr).await }
    });
    let rx = accepted(rx).await;
    let by_addr = tokio::spawn({
        let client = client.clone();
        let addr = silent.clone();
        async move { client.dial(addr).await }
    });
    let _rx = accepted(rx).await;
    let started = Instant::now();
    client.shutdown().await;
    for dial in [by_peer, by_addr] {
        let result = tokio::time::timeout(Duration::from_secs(5), dial)
            .await
            .expect("a dial outlived the shutdown")
            .unwrap();
        assert!(matches!(result, Err(HostError::ShutDown)), "{result:?}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // After it, at once.
    assert!(matches!(
        client.dial(with_p2p(&silent, peer)).await,
        Err(HostError::ShutDown)
    ));
    assert!(matches!(
        client.connect(peer).await,
        Err(HostError::ShutDown)
    ));
}

/// Dials started while the host shuts down (by address with and without `/p2p/`, and by peer)
/// each end promptly: connected before the shutdown, or `ShutDown`. Never left waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dials_racing_a_shutdown_never_wait_forever() {
    let (server, addr) = listening(HostConfig::default()).await;
    let peer = server.peer_id();
    let tcp = without_p2p(&addr).0;
    let (mut connected, mut shut_down) = (0, 0);
    for round in 0..40u32 {
        let client = host(HostConfig::default());
        client
            .peer_store()
            .add_addrs(peer, [tcp.clone()], p2pnet_host::RECENT_ADDR_TTL);
        let mut dials = tokio::task::JoinSet::new();
        for i in 0..6u32 {
            let client = client.clone();
            let (addr, tcp) = (addr.clone(), tcp.clone());
            dials.spawn(async move {
                // Spread the starts around the shutdown.
                for _ in 0..(i + round) % 4 {
                    tokio::task::yield_now().await;
                }
                let dial = async {
                    match i % 3 {
                        0 => client.dial(addr).await.map(drop),
                        1 => client.dial(tcp).await.map(drop),
                        _ => client.connect(peer).await,
                    }
                };
                tokio::time::timeout(Duration::from_secs(5), dial).await
            });
        }
        for _ in 0..round % 3 {
            tokio::task::yield_now().await;
        }
        tokio::time::timeout(Duration::from_secs(5), client.shutdown())
            .await
            .expect("shutdown hung");
        while let Some(r) = dials.join_next().await {
            match r.unwrap() {
                Err(_) => panic!("round {round}: a dial was left waiting"),
                Ok(Ok(())) => connected += 1,
                Ok(Err(HostError::ShutDown)) => shut_down += 1,
                Ok(Err(e)) => panic!("round {round}: unexpected {e:?}"),
            }
        }
    }
    assert_eq!(connected + shut_down, 40 * 6);
    assert!(shut_down > 0, "no dial raced the shutdown");
    server.shutdown().await;
}

/// A routing that knows one peer's address (and counts how often it was asked).
struct OneAddress {
    peer: p2pnet_host::PeerId,
    addr: Multiaddr,
    asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
}

impl p2pnet_host::PeerRouting for OneAddress {
    fn find_addrs(
        &self,
        peer: p2pnet_host::PeerId,
    ) -> futures::future::BoxFuture<'static, Vec<Multiaddr>> {
        self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let found = if peer == self.peer {
            vec![self.addr.clone()]
        } else {
            Vec::new()
        };
        Box::pin(async move { found })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_with_no_known_address_is_found_through_the_peer_routing() {
    let (server, addr) = common::listening(HostConfig::default()).await;
    let _echo = common::serve_echo(&server, "/echo/1.0.0");
    let client = common::host(HostConfig::default());
    let peer = server.peer_id();
    // Without a routing: no address, a typed error.
    assert!(matches!(
        client.connect(peer).await,
        Err(p2pnet_host::HostError::NoAddresses { .. })
    ));
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    client.set_peer_routing(Some(std::sync::Arc::new(OneAddress {
        peer,
        addr: p2pnet_host::without_p2p(&addr).0,
        asked: asked.clone(),
    })));
    // `/p2p/<id>` alone, then a stream by id: found once, then known.
    let only_id: Multiaddr = format!("/p2p/{peer}").parse().unwrap();
    assert_eq!(client.dial(only_id).await.unwrap(), peer);
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 1);
    let mut s = client.new_stream(peer, ["/echo/1.0.0"]).await.unwrap();
    s.write_all(b"by id").await.unwrap();
    s.read_exact(&mut [0u8; 5]).await.unwrap();
    // An unknown peer: the routing is asked, finds nothing, the error stays typed.
    let stranger = p2pnet_host::generate_keypair().public().to_peer_id();
    assert!(matches!(
        client.connect(stranger).await,
        Err(p2pnet_host::HostError::NoAddresses { .. })
    ));
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 2);
    client.shutdown().await;
    server.shutdown().await;
}
