//! The driver's own work on real hosts on 127.0.0.1, with short intervals: bucket refresh,
//! republishing and the sweep, `Mode::Auto`, the route cache, the query cap, metrics, and the
//! addresses `provide` announces.

use std::future::Future;
use std::time::Duration;

use p2pnet_host::{Host, HostConfig, Multiaddr, PeerId, generate_keypair};
use p2pnet_kad::store::StoreConfig;
use p2pnet_kad::{KadConfig, KadError, Kademlia, Mode, QueryKind, query::QueryConfig};

const PROTO: &str = "/ipfs/kad/1.0.0";

struct Node {
    host: Host,
    kad: Kademlia,
    addr: Multiaddr,
}

fn config() -> KadConfig {
    KadConfig {
        query: QueryConfig {
            request_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(10),
            ..QueryConfig::default()
        },
        ..KadConfig::default()
    }
}

async fn node(config: KadConfig) -> Node {
    let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let addr = host
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    let kad = Kademlia::new(host.clone(), config).unwrap();
    Node { host, kad, addr }
}

async fn stop(nodes: impl IntoIterator<Item = Node>) {
    for n in nodes {
        n.kad.shutdown().await;
        n.host.shutdown().await;
    }
}

/// Waits (up to 10 s) until `cond` holds.
async fn eventually<F, Fut>(what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    for _ in 0..200 {
        if cond().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

async fn in_table(kad: &Kademlia, peer: PeerId) -> bool {
    kad.routing_table()
        .await
        .unwrap()
        .iter()
        .any(|e| e.peer == peer)
}

async fn within<F: Future<Output = ()>>(secs: u64, f: F) {
    tokio::time::timeout(Duration::from_secs(secs), f)
        .await
        .expect("test timed out")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refresh_finds_peers_that_joined_later_and_metrics_move() {
    within(30, async {
        let fast = KadConfig {
            refresh_interval: Duration::from_millis(300),
            ..config()
        };
        let a = node(fast).await;
        let b = node(config()).await;
        a.kad
            .add_peer(b.host.peer_id(), vec![b.addr.clone()])
            .await
            .unwrap();
        a.kad.bootstrap().await.unwrap();
        // c joins later, through b only; a never bootstraps again.
        let c = node(config()).await;
        c.kad
            .add_peer(b.host.peer_id(), vec![b.addr.clone()])
            .await
            .unwrap();
        c.kad.bootstrap().await.unwrap();
        let cp = c.host.peer_id();
        eventually("a's refresh to find c", || in_table(&a.kad, cp)).await;
        // Refreshes go on by themselves, every interval.
        // (A refresh is counted when it starts; wait for two lookups to have finished too.)
        eventually("refreshes", || async {
            let m = a.kad.metrics();
            m.refreshes >= 2 && m.query(QueryKind::FindNode).succeeded >= 2 && m.hops.count >= 2
        })
        .await;

        let m = a.kad.metrics();
        assert!(m.refreshes >= 1, "{m:?}");
        let find = m.query(QueryKind::FindNode);
        assert!(find.started >= 2 && find.succeeded >= 2, "{find:?}");
        assert!(m.hops.count >= 2 && m.hops.max >= 1, "{:?}", m.hops);
        assert!(m.table_size >= 2 && !m.buckets.is_empty(), "{m:?}");
        assert_eq!(
            m.buckets.iter().map(|(_, n)| n).sum::<usize>(),
            m.table_size
        );
        assert!(m.server);
        assert!(b.kad.metrics().inbound.find_node >= 2);
        stop([a, b, c]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn republished_entries_outlive_their_ttl_and_the_rest_is_swept() {
    within(30, async {
        let short = |republish: Duration| KadConfig {
            store: StoreConfig {
                record_ttl: Duration::from_millis(800),
                provider_ttl: Duration::from_millis(800),
                ..StoreConfig::default()
            },
            record_republish_interval: republish,
            provider_republish_interval: republish,
            sweep_interval: Duration::from_millis(50),
            ..config()
        };
        let b = node(short(Duration::ZERO)).await;
        // a republishes every 200 ms; c never does.
        let a = node(short(Duration::from_millis(200))).await;
        let c = node(short(Duration::ZERO)).await;
        for n in [&a, &c] {
            n.kad
                .add_peer(b.host.peer_id(), vec![b.addr.clone()])
                .await
                .unwrap();
        }
        a.kad
            .put_record(b"/a/record", b"kept".to_vec())
            .await
            .unwrap();
        a.kad.provide(b"/a/provided").await.unwrap();
        c.kad
            .put_record(b"/c/record", b"gone".to_vec())
            .await
            .unwrap();
        c.kad.provide(b"/c/provided").await.unwrap();
        // ADD_PROVIDER has no answer: b takes it a moment later.
        eventually("b to store both", || async {
            let m = b.kad.metrics();
            (m.records, m.provider_keys) == (2, 2)
        })
        .await;

        // Three lifetimes later b holds a's entries only.
        tokio::time::sleep(Duration::from_millis(2400)).await;
        let m = b.kad.metrics();
        assert_eq!((m.records, m.provider_keys), (1, 1), "{m:?}");
        assert!(a.kad.metrics().republished >= 4);
        assert!(a.kad.metrics().query(QueryKind::PutValue).succeeded >= 2);
        let providers = b.kad.providers(b"/a/provided").await.unwrap();
        assert!(
            providers
                .providers
                .iter()
                .any(|(p, _)| *p == a.host.peer_id())
        );
        let got = b.kad.get_record(b"/a/record", 1).await.unwrap();
        assert_eq!(got.records[0].value, b"kept");

        // Stopping ends republishing: after a lifetime, b holds nothing.
        assert!(a.kad.remove_record(b"/a/record").await.unwrap());
        assert!(a.kad.stop_providing(b"/a/provided").await.unwrap());
        assert!(!a.kad.stop_providing(b"/a/provided").await.unwrap());
        tokio::time::sleep(Duration::from_millis(1200)).await;
        let m = b.kad.metrics();
        assert_eq!((m.records, m.provider_keys), (0, 0), "{m:?}");
        stop([a, b, c]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_mode_serves_once_the_address_is_confirmed_public() {
    within(30, async {
        let a = node(KadConfig {
            mode: Mode::Auto,
            ..config()
        })
        .await;
        let b = node(config()).await;
        // Loopback only: a client.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!a.kad.is_server());
        assert!(!a.host.check_proto_exists(PROTO));
        // The NAT verdict says public: a server, answering b.
        a.kad.set_public_address_confirmed(true);
        eventually("server mode", || async { a.kad.is_server() }).await;
        assert!(a.host.check_proto_exists(PROTO));
        assert!(a.kad.metrics().server);
        b.kad
            .add_peer(a.host.peer_id(), vec![a.addr.clone()])
            .await
            .unwrap();
        b.kad.bootstrap().await.unwrap();
        assert!(a.kad.metrics().inbound.find_node >= 1);
        // And back.
        a.kad.set_public_address_confirmed(false);
        eventually("client mode", || async { !a.kad.is_server() }).await;
        assert!(!a.host.check_proto_exists(PROTO));
        stop([a, b]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_route_cache_brings_the_table_back_after_a_restart() {
    within(30, async {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes");
        let cached = || KadConfig {
            route_cache: Some(path.clone()),
            route_cache_interval: Duration::from_millis(100),
            ..config()
        };
        let b = node(config()).await;
        let c = node(config()).await;
        c.kad
            .add_peer(b.host.peer_id(), vec![b.addr.clone()])
            .await
            .unwrap();
        c.kad.bootstrap().await.unwrap();
        let a = node(cached()).await;
        a.kad
            .add_peer(b.host.peer_id(), vec![b.addr.clone()])
            .await
            .unwrap();
        a.kad.bootstrap().await.unwrap();
        assert!(in_table(&a.kad, c.host.peer_id()).await);
        // Written periodically while it runs…
        eventually("a periodic save", || async {
            a.kad.metrics().route_cache_saves >= 1
        })
        .await;
        assert!(path.exists());
        stop([a]).await;

        // …and a restarted node (same data dir) has b and c without any bootstrap list.
        let a2 = node(cached()).await;
        let table = a2.kad.routing_table().await.unwrap();
        let peers: Vec<PeerId> = table.iter().map(|e| e.peer).collect();
        assert!(peers.contains(&b.host.peer_id()) && peers.contains(&c.host.peer_id()));
        let found = a2.kad.bootstrap().await.unwrap();
        assert!(!found.peers.is_empty());

        // A corrupt cache is ignored.
        a2.kad.shutdown().await;
        std::fs::write(&path, b"{not json").unwrap();
        let a3 = node(cached()).await;
        assert!(a3.kad.routing_table().await.unwrap().is_empty());
        stop([a2, a3, b, c]).await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_over_the_cap_wait_their_turn() {
    within(30, async {
        // A black hole: serves the protocol, never answers.
        let hole = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let hole_addr = hole
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let _streams = hole.accept_streams(PROTO, 64).unwrap();
        let a = node(KadConfig {
            max_concurrent_queries: 1,
            query: QueryConfig {
                request_timeout: Duration::from_millis(300),
                timeout: Duration::from_secs(5),
                ..QueryConfig::default()
            },
            ..KadConfig::default()
        })
        .await;
        a.kad
            .add_peer(hole.peer_id(), vec![hole_addr])
            .await
            .unwrap();
        let lookups = (0..3).map(|_| {
            let kad = a.kad.clone();
            tokio::spawn(async move { kad.find_peer(PeerId::random()).await })
        });
        let lookups: Vec<_> = lookups.collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(a.kad.metrics().queries_waiting, 2);
        let started = std::time::Instant::now();
        for l in lookups {
            assert!(matches!(l.await.unwrap(), Err(KadError::PeerNotFound(_))));
        }
        // One after the other: each waited for its request to time out.
        assert!(started.elapsed() >= Duration::from_millis(700));
        let m = a.kad.metrics();
        assert_eq!(m.queries_waiting, 0);
        let find = m.query(QueryKind::FindNode);
        assert_eq!((find.started, find.failed), (3, 3), "{find:?}");
        stop([a]).await;
        hole.shutdown().await;
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn provide_announces_observed_addresses() {
    within(30, async {
        let open = || KadConfig {
            accept_private_addrs: true,
            ..config()
        };
        let a = node(open()).await;
        let b = node(open()).await;
        a.kad
            .add_peer(b.host.peer_id(), vec![b.addr.clone()])
            .await
            .unwrap();
        a.kad.bootstrap().await.unwrap();
        eventually("an observed address", || async {
            !a.host.observed_addrs().is_empty()
        })
        .await;
        let observed: Vec<Multiaddr> = a
            .host
            .observed_addrs()
            .iter()
            .map(|o| p2pnet_host::without_p2p(o).0)
            .collect();
        a.kad.provide(b"/observed").await.unwrap();
        let found = b.kad.providers(b"/observed").await.unwrap();
        let (_, addrs) = found
            .providers
            .iter()
            .find(|(p, _)| *p == a.host.peer_id())
            .expect("a provides");
        assert!(addrs.contains(&a.addr), "{addrs:?}");
        assert!(
            observed.iter().any(|o| addrs.contains(o)),
            "{addrs:?} / {observed:?}"
        );
        stop([a, b]).await;
    })
    .await;
}
