//! Kademlia interop with rust-libp2p's kad in small mixed networks on 127.0.0.1: our node
//! bootstraps from rust-libp2p nodes and finds a peer only they know; a rust-libp2p node finds
//! our node through another; records and provider records travel both ways.

#[path = "common/rust_kad.rs"]
mod rust_kad;

use std::time::Duration;

use p2pnet_host::{Host, HostConfig, Multiaddr, PeerId, generate_keypair};
use p2pnet_kad::{KadConfig, Kademlia, query::QueryConfig};
use rust_kad::RustKad;

fn to_ours(addr: &libp2p::Multiaddr) -> Multiaddr {
    addr.to_vec().try_into().unwrap()
}

fn to_theirs(addr: &Multiaddr) -> libp2p::Multiaddr {
    addr.to_vec().try_into().unwrap()
}

fn their_peer(p: &PeerId) -> libp2p::PeerId {
    libp2p::PeerId::from_bytes(&p.to_bytes()).unwrap()
}

fn our_peer(p: &libp2p::PeerId) -> PeerId {
    PeerId::from_bytes(&p.to_bytes()).unwrap()
}

struct Ours {
    host: Host,
    kad: Kademlia,
    addr: Multiaddr,
}

async fn ours() -> Ours {
    let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let kad = Kademlia::new(
        host.clone(),
        KadConfig {
            query: QueryConfig {
                request_timeout: Duration::from_secs(5),
                timeout: Duration::from_secs(20),
                ..QueryConfig::default()
            },
            ..KadConfig::default()
        },
    )
    .unwrap();
    let addr = host
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    Ours { host, kad, addr }
}

/// Rust nodes that all know each other.
async fn rust_mesh(n: usize) -> Vec<RustKad> {
    let mut nodes = Vec::new();
    for _ in 0..n {
        nodes.push(RustKad::start().await);
    }
    for a in &nodes {
        for b in &nodes {
            if a.peer_id != b.peer_id {
                a.add_address(b.peer_id, b.listen_addr.clone()).await;
            }
        }
    }
    nodes
}

async fn join(o: &Ours, r: &RustKad) {
    o.kad
        .add_peer(our_peer(&r.peer_id), vec![to_ours(&r.listen_addr)])
        .await
        .unwrap();
}

/// Waits (bounded) until `r` has `peer` in its routing table (it learns us through identify).
async fn until_in_table(r: &RustKad, peer: &PeerId) {
    let want = their_peer(peer);
    for _ in 0..100 {
        if r.routing_table().await.contains(&want) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("rust-libp2p never put {peer} in its table");
}

async fn bounded<F: std::future::Future<Output = ()>>(f: F) {
    tokio::time::timeout(Duration::from_secs(60), f)
        .await
        .expect("interop test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn we_bootstrap_from_rust_nodes_and_find_a_peer_only_they_know() {
    bounded(async {
        let mesh = rust_mesh(3).await;
        let o = ours().await;
        join(&o, &mesh[0]).await;
        let boot = o.kad.bootstrap().await.unwrap();
        assert!(boot.peers.len() >= 3, "{boot:?}");
        // A fourth rust node, which only the third knows.
        let hidden = RustKad::start().await;
        mesh[2]
            .add_address(hidden.peer_id, hidden.listen_addr.clone())
            .await;
        let target = our_peer(&hidden.peer_id);
        assert!(!o.host.is_connected(&target));
        let found = o.kad.find_peer(target).await.unwrap();
        assert!(
            found.addrs.contains(&to_ours(&hidden.listen_addr)),
            "{found:?}"
        );
        assert!(found.stats.hops >= 1);
        // The addresses went to the peer store: the host connects by id alone.
        o.host.connect(target).await.unwrap();
        o.kad.shutdown().await;
        o.host.shutdown().await;
        for r in mesh {
            r.stop();
        }
        hidden.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_node_finds_our_node_through_another() {
    bounded(async {
        let relay = RustKad::start().await;
        let o = ours().await;
        join(&o, &relay).await;
        o.kad.bootstrap().await.unwrap();
        until_in_table(&relay, &o.host.peer_id()).await;
        // The asker knows only the other rust node.
        let asker = RustKad::start().await;
        asker
            .add_address(relay.peer_id, relay.listen_addr.clone())
            .await;
        let peers = asker.closest_peers(their_peer(&o.host.peer_id())).await;
        let us = peers
            .iter()
            .find(|p| p.peer_id == their_peer(&o.host.peer_id()))
            .unwrap_or_else(|| panic!("our node is not among {peers:?}"));
        let ours_addr = to_theirs(&o.addr);
        assert!(
            us.addrs
                .iter()
                .any(|a| a.iter().take(2).eq(ours_addr.iter())),
            "{us:?}"
        );
        o.kad.shutdown().await;
        o.host.shutdown().await;
        relay.stop();
        asker.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_travel_both_ways() {
    bounded(async {
        let mesh = rust_mesh(2).await;
        let o = ours().await;
        join(&o, &mesh[0]).await;
        o.kad.bootstrap().await.unwrap();
        until_in_table(&mesh[0], &o.host.peer_id()).await;
        until_in_table(&mesh[1], &o.host.peer_id()).await;

        // Ours → theirs: both rust nodes accept our PUT_VALUE…
        let put = o
            .kad
            .put_record(b"/p2pnet/ours", b"v1".to_vec())
            .await
            .unwrap();
        for r in &mesh {
            assert!(put.stored_at.contains(&our_peer(&r.peer_id)), "{put:?}");
        }
        // …and a fresh rust node that knows only us gets it over the network.
        let fresh = RustKad::start().await;
        fresh
            .add_address(their_peer(&o.host.peer_id()), to_theirs(&o.addr))
            .await;
        let (from, value) = fresh
            .get_record(b"/p2pnet/ours")
            .await
            .expect("record found");
        assert_eq!(value, b"v1");
        assert!(from.is_some(), "came from the network");

        // Theirs → ours: a rust node puts, and our GET_VALUE reads it from rust nodes.
        assert!(mesh[1].put_record(b"/rust/theirs", b"v2").await);
        let got = o.kad.get_record(b"/rust/theirs", 2).await.unwrap();
        assert!(got.records.iter().all(|r| r.value == b"v2"), "{got:?}");
        let rust_ids: Vec<PeerId> = mesh
            .iter()
            .chain([&fresh])
            .map(|r| our_peer(&r.peer_id))
            .collect();
        assert!(
            got.records.iter().any(|r| rust_ids.contains(&r.peer)),
            "{got:?}"
        );
        o.kad.shutdown().await;
        o.host.shutdown().await;
        for r in mesh {
            r.stop();
        }
        fresh.stop();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn providers_travel_both_ways() {
    bounded(async {
        let mesh = rust_mesh(2).await;
        let o = ours().await;
        join(&o, &mesh[0]).await;
        o.kad.bootstrap().await.unwrap();
        until_in_table(&mesh[0], &o.host.peer_id()).await;
        until_in_table(&mesh[1], &o.host.peer_id()).await;

        // We provide; a rust node finds us.
        let provided = o.kad.provide(b"cid-ours").await.unwrap();
        assert!(!provided.stored_at.is_empty(), "{provided:?}");
        let found = mesh[1].providers(b"cid-ours").await;
        assert!(found.contains(&their_peer(&o.host.peer_id())), "{found:?}");

        // A rust node provides; we find it, with its address.
        assert!(mesh[0].provide(b"cid-theirs").await);
        let p = o.kad.providers(b"cid-theirs").await.unwrap();
        let (_, addrs) = p
            .providers
            .iter()
            .find(|(who, _)| *who == our_peer(&mesh[0].peer_id))
            .unwrap_or_else(|| panic!("rust provider missing from {p:?}"));
        assert!(addrs.contains(&to_ours(&mesh[0].listen_addr)), "{addrs:?}");
        o.kad.shutdown().await;
        o.host.shutdown().await;
        for r in mesh {
            r.stop();
        }
    })
    .await;
}
