//! A server facing a hostile peer on real streams: malformed frames and oversize length
//! prefixes reset that stream only; streams over the per-peer cap are refused; the server
//! keeps answering.

use std::time::Duration;

use p2pnet_host::{Host, HostConfig, generate_keypair, with_p2p};
use p2pnet_kad::{KadConfig, Kademlia};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PROTO: &str = "/ipfs/kad/1.0.0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_excess_streams_are_refused_and_service_goes_on() {
    let run = async {
        let server = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let kad = Kademlia::new(
            server.clone(),
            KadConfig {
                max_inbound_streams_per_peer: 2,
                ..KadConfig::default()
            },
        )
        .unwrap();
        let addr = server
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let evil = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let peer = evil.dial(with_p2p(&addr, server.peer_id())).await.unwrap();

        // An oversize length prefix: reset without reading the body.
        let mut s = evil.new_stream(peer, [PROTO]).await.unwrap();
        s.write_all(&[0xff, 0xff, 0xff, 0x7f]).await.unwrap();
        let mut buf = [0u8; 16];
        assert!(s.read(&mut buf).await.is_err(), "stream reset");

        // Garbage protobuf: reset.
        let mut s = evil.new_stream(peer, [PROTO]).await.unwrap();
        s.write_all(&[3, 0xff, 0xff, 0xff]).await.unwrap();
        assert!(s.read(&mut buf).await.is_err(), "stream reset");

        // Two idle streams fill the cap; a third is refused.
        let mut idle = Vec::new();
        for _ in 0..2 {
            idle.push(evil.new_stream(peer, [PROTO]).await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Over the cap: reset, during negotiation or at the first read.
        if let Ok(mut third) = evil.new_stream(peer, [PROTO]).await {
            let _ = third.write_all(&[2, 0x08, 0x04]).await;
            assert!(third.read(&mut buf).await.is_err(), "over the cap: reset");
        }
        drop(idle);
        tokio::time::sleep(Duration::from_millis(100)).await;

        // Several requests on one stream are all answered.
        let mut s = evil.new_stream(peer, [PROTO]).await.unwrap();
        for _ in 0..3 {
            s.write_all(&[2, 0x08, 0x04]).await.unwrap(); // FIND_NODE, empty key
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await.unwrap();
            let mut body = vec![0u8; len[0] as usize];
            s.read_exact(&mut body).await.unwrap();
            assert_eq!(&body[..2], &[0x08, 0x04], "a FIND_NODE answer");
        }
        s.shutdown().await.unwrap();

        // The refusals and the requests show in the metrics.
        let m = kad.metrics();
        assert!(m.refusals.malformed >= 2, "{:?}", m.refusals);
        assert!(m.refusals.stream_cap >= 1, "{:?}", m.refusals);
        assert!(m.inbound.find_node >= 3, "{:?}", m.inbound);

        kad.shutdown().await;
        evil.shutdown().await;
        server.shutdown().await;
    };
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .unwrap();
}
