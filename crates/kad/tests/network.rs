//! Twenty real hosts on 127.0.0.1, each bootstrapped from a few earlier ones: every node finds
//! others by id alone, records put by one are got by another, and providers are found.

use std::time::Duration;

use p2pnet_host::{Host, HostConfig, Multiaddr, generate_keypair};
use p2pnet_kad::{KadConfig, Kademlia, query::QueryConfig};

const N: usize = 20;

struct Node {
    host: Host,
    kad: Kademlia,
    addr: Multiaddr,
}

fn config() -> KadConfig {
    KadConfig {
        query: QueryConfig {
            request_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            ..QueryConfig::default()
        },
        ..KadConfig::default()
    }
}

async fn node() -> Node {
    let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    let kad = Kademlia::new(host.clone(), config()).unwrap();
    let addr = host
        .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
        .await
        .unwrap();
    Node { host, kad, addr }
}

async fn network() -> Vec<Node> {
    let mut nodes: Vec<Node> = Vec::new();
    for i in 0..N {
        let n = node().await;
        // Bootstrapped from up to three earlier nodes.
        let mut seeds: Vec<usize> = vec![i.saturating_sub(1), i / 2, i / 3];
        seeds.sort_unstable();
        seeds.dedup();
        if i > 0 {
            for s in seeds {
                n.kad
                    .add_peer(nodes[s].host.peer_id(), vec![nodes[s].addr.clone()])
                    .await
                    .unwrap();
            }
            n.kad.bootstrap().await.unwrap();
        }
        nodes.push(n);
    }
    // A second round, as the periodic refresh would do, so early nodes learn of later ones.
    for n in &nodes {
        n.kad.bootstrap().await.unwrap();
    }
    nodes
}

async fn stop(nodes: Vec<Node>) {
    for n in nodes {
        n.kad.shutdown().await;
        n.host.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_are_found_by_id_and_records_and_providers_travel() {
    let run = async {
        let nodes = network().await;
        for n in &nodes {
            let table = n.kad.routing_table().await.unwrap();
            assert!(table.len() >= 3, "table of {} entries", table.len());
        }
        // find_peer of nodes the asker is not connected to.
        let mut found = 0;
        for i in 0..N {
            let j = (i * 7 + 3) % N;
            if i == j {
                continue;
            }
            let (a, b) = (&nodes[i], &nodes[j]);
            a.host.close_peer(&b.host.peer_id());
            tokio::time::sleep(Duration::from_millis(20)).await;
            let r = a.kad.find_peer(b.host.peer_id()).await.unwrap();
            assert!(r.addrs.contains(&b.addr), "{:?} lacks {}", r.addrs, b.addr);
            assert!(r.stats.hops <= 5, "hops {}", r.stats.hops);
            a.host.connect(b.host.peer_id()).await.unwrap();
            found += 1;
        }
        assert!(found >= N - 1);

        // A record put by one node is got by others.
        let put = nodes[3]
            .kad
            .put_record(b"/test/key", b"value".to_vec())
            .await
            .unwrap();
        assert!(put.stored_at.len() >= 10, "{put:?}");
        for reader in [17, 8, 0] {
            let got = nodes[reader].kad.get_record(b"/test/key", 1).await.unwrap();
            assert_eq!(got.records[0].value, b"value");
        }
        assert!(matches!(
            nodes[5].kad.get_record(b"/no/such/key", 1).await,
            Err(p2pnet_kad::KadError::RecordNotFound)
        ));

        // Providers.
        let provided = nodes[5].kad.provide(b"cid-1").await.unwrap();
        assert!(provided.stored_at.len() >= 10, "{provided:?}");
        let p = nodes[11].kad.providers(b"cid-1").await.unwrap();
        let (who, addrs) = p
            .providers
            .iter()
            .find(|(who, _)| *who == nodes[5].host.peer_id())
            .expect("node 5 is a provider");
        assert_eq!(*who, nodes[5].host.peer_id());
        assert!(addrs.contains(&nodes[5].addr));
        stop(nodes).await;
    };
    tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the network test took too long");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_asks_but_is_not_served_or_tabled() {
    let run = async {
        let server = node().await;
        let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let client = Kademlia::new(
            host.clone(),
            KadConfig {
                mode: p2pnet_kad::Mode::Client,
                ..config()
            },
        )
        .unwrap();
        assert!(!host.check_proto_exists("/ipfs/kad/1.0.0"));
        client
            .add_peer(server.host.peer_id(), vec![server.addr.clone()])
            .await
            .unwrap();
        let r = client.bootstrap().await.unwrap();
        assert_eq!(r.peers.len(), 1);
        // The server saw our identify: no kad protocol, so we are not in its table.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(server.kad.routing_table().await.unwrap().is_empty());
        client.shutdown().await;
        // After shutdown everything fails cleanly.
        assert!(matches!(
            client.bootstrap().await,
            Err(p2pnet_kad::KadError::ShutDown)
        ));
        host.shutdown().await;
        stop(vec![server]).await;
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap();
}
