//! Message sessions between real hosts on 127.0.0.1 (real TCP, noise, yamux).
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use p2pnet_host::{
    Host, HostConfig, HostError, Multiaddr, PeerId, Stream, generate_keypair, with_p2p,
};
use p2pnet_messaging::{
    ByeReason, CloseReason, CodecError, Frame, FrameCodec, HandshakeFailure, Hello, InboundMessage,
    MAGIC, MessagingConfig, MessagingError, Messenger, PROTOCOL, Priority, ProtocolVersion,
    SessionEvent, raw_header,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{broadcast, mpsc};

const T: Duration = Duration::from_secs(10);

struct Node {
    host: Host,
    addr: Multiaddr,
    m: Messenger,
    rx: mpsc::Receiver<InboundMessage>,
    events: broadcast::Receiver<SessionEvent>,
}

impl Node {
    async fn new(config: MessagingConfig, sink_capacity: usize) -> Node {
        let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let addr = host
            .listen_on("/ip4/127.0.0.1/tcp/0".parse().unwrap())
            .await
            .unwrap();
        let addr = with_p2p(&addr, host.peer_id());
        let (tx, rx) = mpsc::channel(sink_capacity);
        let m = Messenger::new(host.clone(), config, tx);
        let events = m.events();
        m.start().unwrap();
        Node {
            host,
            addr,
            m,
            rx,
            events,
        }
    }

    fn id(&self) -> PeerId {
        self.host.peer_id()
    }

    async fn stop(self) {
        tokio::time::timeout(T, self.m.shutdown()).await.unwrap();
        assert_eq!(self.m.task_count(), 0);
        assert!(
            !self.host.check_proto_exists(PROTOCOL),
            "the handler goes with the messenger"
        );
        self.host.shutdown().await;
    }

    async fn event(&mut self, mut pred: impl FnMut(&SessionEvent) -> bool) -> SessionEvent {
        tokio::time::timeout(T, async {
            loop {
                let ev = self.events.recv().await.unwrap();
                if pred(&ev) {
                    return ev;
                }
            }
        })
        .await
        .expect("timed out waiting for a session event")
    }

    async fn recv(&mut self) -> InboundMessage {
        tokio::time::timeout(T, self.rx.recv())
            .await
            .unwrap()
            .unwrap()
    }
}

async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn link(a: &Node, b: &Node) {
    a.host.dial(b.addr.clone()).await.unwrap();
    let (ma, mb, ia, ib) = (a.m.clone(), b.m.clone(), a.id(), b.id());
    eventually("session both ways", || {
        ma.has_session(&ib) && mb.has_session(&ia)
    })
    .await;
}

fn cfg() -> MessagingConfig {
    MessagingConfig::default()
}

#[tokio::test]
async fn handshake_ok_and_messages_both_ways() {
    let mut a = Node::new(cfg(), 64).await;
    let mut b = Node::new(cfg(), 64).await;
    a.host.dial(b.addr.clone()).await.unwrap();
    let bid = b.id();
    let ev = a.event(|e| matches!(e, SessionEvent::Opened { .. })).await;
    let SessionEvent::Opened {
        peer,
        client_version,
        listen_addrs,
        ..
    } = ev
    else {
        unreachable!()
    };
    assert_eq!(peer, bid);
    assert!(client_version.starts_with("p2pnet/"));
    assert_eq!(listen_addrs, b.host.listen_addrs());
    b.event(|e| matches!(e, SessionEvent::Opened { .. })).await;
    // Exactly one session per peer on both sides, even though both opened a stream.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.m.peers(), vec![bid]);
    assert_eq!(b.m.peers(), vec![a.id()]);
    assert_eq!(a.m.metrics().sessions_open, 1);

    a.m.send_to_peer(&bid, "tx", &b"one"[..], Priority::Normal)
        .unwrap();
    let big = Bytes::from(vec![7u8; 100_000]); // compressed on the link
    a.m.send_to_peer(&bid, "block", big.clone(), Priority::Low)
        .unwrap();
    b.m.send_to_peer(&a.id(), "tx", &b"back"[..], Priority::High)
        .unwrap();
    let m1 = b.recv().await;
    assert_eq!(
        (m1.peer, m1.kind.as_str(), &m1.payload[..]),
        (a.id(), "tx", &b"one"[..])
    );
    let m2 = b.recv().await;
    assert_eq!(m2.payload, big);
    assert_eq!(a.recv().await.payload, Bytes::from_static(b"back"));
    let ma = a.m.metrics();
    assert_eq!(ma.by_kind["block"].messages_out, 1);
    assert!(
        ma.wire_bytes_out < 10_000,
        "compressed: {}",
        ma.wire_bytes_out
    );
    let mb = b.m.metrics();
    assert_eq!(mb.by_kind["block"].messages_in, 1);
    assert_eq!(mb.by_kind["block"].bytes_in, 100_000);
    assert!(matches!(
        a.m.send_to_peer(&bid, "_hello", &b""[..], Priority::Normal),
        Err(MessagingError::ReservedKind(_))
    ));
    assert!(matches!(
        a.m.send_to_peer(&bid, "way-too-long-kind", &b""[..], Priority::Normal),
        Err(MessagingError::Codec(CodecError::BadKind))
    ));
    a.stop().await;
    b.stop().await;
}

/// A second messenger on one host cannot take the first one's protocol over.
#[tokio::test]
async fn a_second_messenger_on_one_host_is_refused() {
    let a = Node::new(cfg(), 16).await;
    let (tx, _rx) = mpsc::channel(1);
    let second = Messenger::new(a.host.clone(), cfg(), tx);
    let err = second.start().unwrap_err();
    assert!(
        matches!(err, MessagingError::Host(HostError::ProtocolTaken { .. })),
        "{err}"
    );
    tokio::time::timeout(T, second.shutdown()).await.unwrap();
    assert!(
        a.host.check_proto_exists(PROTOCOL),
        "the first messenger's handler is untouched"
    );
    a.stop().await;
}

fn refused_for(ev: &SessionEvent, bye: ByeReason) -> bool {
    match ev {
        SessionEvent::HandshakeFailed { reason, .. } => match reason {
            HandshakeFailure::WrongChainId { .. } => bye == ByeReason::WrongChainId,
            HandshakeFailure::IncompatibleVersion { .. } => bye == ByeReason::IncompatibleVersion,
            HandshakeFailure::Refused { reason, .. } => *reason == bye,
            _ => false,
        },
        _ => false,
    }
}

#[tokio::test]
async fn wrong_chain_id_is_refused_with_reason_and_disconnected() {
    let mut a = Node::new(cfg(), 8).await;
    let mut b = Node::new(
        MessagingConfig {
            chain_id: 2,
            ..cfg()
        },
        8,
    )
    .await;
    a.host.dial(b.addr.clone()).await.unwrap();
    a.event(|e| refused_for(e, ByeReason::WrongChainId)).await;
    b.event(|e| refused_for(e, ByeReason::WrongChainId)).await;
    let (ha, bid) = (a.host.clone(), b.id());
    eventually("disconnected", || !ha.is_connected(&bid)).await;
    assert!(a.m.peers().is_empty() && b.m.peers().is_empty());
    assert!(a.m.metrics().handshake_failures.values().sum::<u64>() >= 1);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn incompatible_version_is_refused() {
    let mut a = Node::new(cfg(), 8).await;
    let v2 = ProtocolVersion { major: 2, minor: 0 };
    let mut b = Node::new(
        MessagingConfig {
            protocol_version: v2,
            ..cfg()
        },
        8,
    )
    .await;
    a.host.dial(b.addr.clone()).await.unwrap();
    a.event(|e| refused_for(e, ByeReason::IncompatibleVersion))
        .await;
    b.event(|e| refused_for(e, ByeReason::IncompatibleVersion))
        .await;
    let (ha, bid) = (a.host.clone(), b.id());
    eventually("disconnected", || !ha.is_connected(&bid)).await;
    a.stop().await;
    b.stop().await;
}

/// A raw test peer: a bare host speaking the protocol by hand.
struct Raw {
    host: Host,
    stream: Stream,
    codec: FrameCodec,
}

impl Raw {
    async fn connect(target: &Node, handshake: bool) -> Raw {
        let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        host.dial(target.addr.clone()).await.unwrap();
        let stream = host.new_stream(target.id(), [PROTOCOL]).await.unwrap();
        let codec = FrameCodec::new(target.m.config().chain_id);
        let mut raw = Raw {
            host,
            stream,
            codec,
        };
        if handshake {
            let hello = Hello {
                chain_id: raw.codec.chain_id(),
                protocol_version: ProtocolVersion::CURRENT,
                compression: false,
                client_version: "raw".into(),
                listen_addrs: vec![],
            };
            raw.send_frame(&hello.to_frame()).await;
            let ok = raw.read_frame().await.unwrap();
            assert_eq!(ok.kind.as_str(), "_ok");
        }
        raw
    }

    async fn send_frame(&mut self, f: &Frame) {
        let mut b = BytesMut::new();
        self.codec.encode(f, &mut b).unwrap();
        self.stream.write_all(&b).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn send_raw(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn read_frame(&mut self) -> Option<Frame> {
        let mut d = self.codec.clone();
        let mut buf = BytesMut::new();
        tokio::time::timeout(T, async {
            loop {
                if let Some(f) = d.decode(&mut buf).unwrap() {
                    return Some(f);
                }
                if self.stream.read_buf(&mut buf).await.ok()? == 0 {
                    return None;
                }
            }
        })
        .await
        .unwrap()
    }
}

fn kind(k: &str) -> [u8; 12] {
    let mut f = [0u8; 12];
    f[..k.len()].copy_from_slice(k.as_bytes());
    f
}

#[tokio::test]
async fn every_decoder_error_ends_only_that_session() {
    let config = MessagingConfig {
        max_message_size: 64 * 1024,
        ..cfg()
    };
    let mut m = Node::new(config, 64).await;
    let mut good = Node::new(cfg(), 64).await;
    link(&m, &good).await;
    let chain = m.m.config().chain_id;
    let good_frame = FrameCodec::new(chain)
        .encode_to_bytes(&Frame::new("tx", &b"x"[..]).unwrap())
        .unwrap();
    let mut cases: Vec<(Vec<u8>, CodecError)> = Vec::new();
    let mut b = good_frame.to_vec();
    b[0] = b'Z';
    cases.push((b, CodecError::BadMagic(*b"Z2PM")));
    let mut b = good_frame.to_vec();
    b[5] ^= 0xff;
    cases.push((b, CodecError::BadHeaderChecksum));
    let mut b = good_frame.to_vec();
    *b.last_mut().unwrap() ^= 1;
    cases.push((b, CodecError::BadPayloadChecksum));
    cases.push((
        raw_header(MAGIC, chain, 0, 1, &kind("tx"), 1 << 20, 0).to_vec(),
        CodecError::TooLarge {
            size: 1 << 20,
            max: 64 * 1024,
        },
    ));
    cases.push((
        raw_header(MAGIC, chain, 0, 9, &kind("tx"), 0, 0).to_vec(),
        CodecError::UnknownVersion(9),
    ));
    cases.push((
        raw_header(MAGIC, chain + 1, 0, 1, &kind("tx"), 0, 0).to_vec(),
        CodecError::WrongChainId {
            expected: chain,
            got: chain + 1,
        },
    ));
    cases.push((
        good_frame[..20].to_vec(),
        CodecError::Truncated { missing: 14 },
    ));

    for (bytes, expected) in cases {
        let mut raw = Raw::connect(&m, true).await;
        let rid = raw.host.peer_id();
        let mid = m.id();
        eventually("raw session", || m.m.has_session(&rid)).await;
        raw.send_raw(&bytes).await;
        if matches!(expected, CodecError::Truncated { .. }) {
            raw.stream.shutdown().await.unwrap();
        }
        let ev = m
            .event(|e| matches!(e, SessionEvent::Closed { peer, .. } if *peer == rid))
            .await;
        assert_eq!(
            ev,
            SessionEvent::Closed {
                peer: rid,
                reason: CloseReason::Decode(expected.clone())
            }
        );
        // The good peer's session is unaffected, both ways.
        good.m
            .send_to_peer(&mid, "ping", &b"p"[..], Priority::Normal)
            .unwrap();
        assert_eq!(m.recv().await.peer, good.id());
        m.m.send_to_peer(&good.id(), "pong", &b"p"[..], Priority::Normal)
            .unwrap();
        assert_eq!(good.recv().await.kind.as_str(), "pong");
        assert!(m.m.has_session(&good.id()));
        raw.host.shutdown().await;
    }
    let metrics = m.m.metrics();
    for label in [
        "bad_magic",
        "bad_header_checksum",
        "bad_payload_checksum",
        "too_large",
        "unknown_version",
        "wrong_chain_id",
        "truncated",
    ] {
        assert_eq!(
            metrics.decode_errors.get(label),
            Some(&1),
            "{label}: {:?}",
            metrics.decode_errors
        );
    }
    assert_eq!(metrics.sessions_closed.get("decode"), Some(&7));
    m.stop().await;
    good.stop().await;
}

#[tokio::test]
async fn message_before_handshake_and_flood_end_the_session() {
    let mut m = Node::new(
        MessagingConfig {
            max_inbound_rate: 100,
            ..cfg()
        },
        1024,
    )
    .await;
    // A message before the handshake: bye with reason, handshake failure event.
    let mut raw = Raw::connect(&m, false).await;
    let rid = raw.host.peer_id();
    raw.send_frame(&Frame::new("tx", &b"early"[..]).unwrap())
        .await;
    let bye = raw.read_frame().await.unwrap();
    assert_eq!(bye.kind.as_str(), "_bye");
    assert_eq!(
        p2pnet_messaging::Bye::decode(&bye.payload).unwrap().reason,
        ByeReason::ProtocolViolation
    );
    let ev = m
        .event(|e| matches!(e, SessionEvent::HandshakeFailed { .. }))
        .await;
    assert!(
        matches!(ev, SessionEvent::HandshakeFailed { peer, reason: HandshakeFailure::ProtocolViolation(_) } if peer == rid)
    );
    raw.host.shutdown().await;

    // A flood above 100 messages per second.
    let mut raw = Raw::connect(&m, true).await;
    let rid = raw.host.peer_id();
    let mut b = BytesMut::new();
    for i in 0..500u32 {
        raw.codec
            .encode(&Frame::new("tx", i.to_be_bytes().to_vec()).unwrap(), &mut b)
            .unwrap();
    }
    raw.send_raw(&b).await;
    let ev = m
        .event(|e| matches!(e, SessionEvent::Closed { peer, .. } if *peer == rid))
        .await;
    assert_eq!(
        ev,
        SessionEvent::Closed {
            peer: rid,
            reason: CloseReason::Flood
        }
    );
    assert_eq!(m.m.metrics().sessions_closed.get("flood"), Some(&1));
    raw.host.shutdown().await;
    m.stop().await;
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_after_the_write_timeout() {
    let config = MessagingConfig {
        write_timeout: Duration::from_millis(500),
        ..cfg()
    };
    let mut m = Node::new(config, 64).await;
    let raw = Raw::connect(&m, true).await; // never reads
    let rid = raw.host.peer_id();
    eventually("raw session", || m.m.has_session(&rid)).await;
    let payload = Bytes::from(
        (0..65536u32)
            .map(|i| (i * 7919 % 251) as u8)
            .collect::<Vec<u8>>(),
    );
    let mut queued = 0;
    for _ in 0..400 {
        if m.m
            .send_to_peer(&rid, "blob", payload.clone(), Priority::Low)
            .is_ok()
        {
            queued += 1;
        }
    }
    assert!(queued > 100);
    let ev = m.event(|e| matches!(e, SessionEvent::Closed { .. })).await;
    assert_eq!(
        ev,
        SessionEvent::Closed {
            peer: rid,
            reason: CloseReason::WriteTimeout
        }
    );
    assert!(m.m.metrics().dropped_on_close > 0);
    drop(raw.stream);
    raw.host.shutdown().await;
    m.stop().await;
}

#[tokio::test]
async fn hundred_thousand_messages_in_order_under_sink_backpressure() {
    const N: u64 = 100_000;
    let a = Node::new(cfg(), 64).await;
    let mut b = Node::new(cfg(), 16).await;
    link(&a, &b).await;
    let (ma, bid) = (a.m.clone(), b.id());
    let sender = tokio::spawn(async move {
        let mut backpressured = 0u64;
        for i in 0..N {
            loop {
                match ma.send_to_peer(&bid, "seq", i.to_be_bytes().to_vec(), Priority::Normal) {
                    Ok(()) => break,
                    Err(MessagingError::Backpressure { .. }) => {
                        backpressured += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
        backpressured
    });
    // A slow start: the sink (16 slots) stays full for a while.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let recv = async {
        for i in 0..N {
            let m = b.rx.recv().await.unwrap();
            assert_eq!(u64::from_be_bytes(m.payload[..].try_into().unwrap()), i);
        }
    };
    tokio::time::timeout(Duration::from_secs(60), recv)
        .await
        .unwrap();
    let backpressured = sender.await.unwrap();
    assert!(backpressured > 0, "the sender never saw back-pressure");
    assert_eq!(a.m.metrics().backpressure[1], backpressured);
    assert_eq!(b.m.metrics().by_kind["seq"].messages_in, N);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn high_priority_goes_first_under_a_congested_queue() {
    let a = Node::new(cfg(), 64).await;
    let mut b = Node::new(cfg(), 1).await;
    link(&a, &b).await;
    let bid = b.id();
    // Filler the receiver will not read yet: the link and then the queue fill up.
    let filler = Bytes::from(
        (0..65536u32)
            .map(|i| (i * 31 % 253) as u8)
            .collect::<Vec<u8>>(),
    );
    for _ in 0..200 {
        a.m.send_to_peer(&bid, "fill", filler.clone(), Priority::Normal)
            .unwrap();
    }
    let ma = a.m.clone();
    eventually("writer blocked with a backlog", || {
        ma.metrics()
            .queue_depths
            .get(&bid)
            .is_some_and(|d| d[1] > 0)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(a.m.metrics().queue_depths[&bid][1] > 0);
    for i in 0..50u32 {
        a.m.send_to_peer(&bid, "lo", i.to_be_bytes().to_vec(), Priority::Low)
            .unwrap();
    }
    for i in 0..50u32 {
        a.m.send_to_peer(&bid, "hi", i.to_be_bytes().to_vec(), Priority::High)
            .unwrap();
    }
    let mut order = Vec::new();
    for _ in 0..300 {
        let m = b.recv().await;
        if m.kind.as_str() != "fill" {
            order.push(m.kind.as_str().to_owned());
        }
    }
    let first_lo = order.iter().position(|k| k == "lo").unwrap();
    let last_hi = order.iter().rposition(|k| k == "hi").unwrap();
    assert_eq!(order.len(), 100);
    assert!(last_hi < first_lo, "order: {order:?}");
    a.stop().await;
    b.stop().await;
}

/// Runs a gossip app on a node: relays each message the first time it sees it; returns the
/// number of copies received.
fn gossip(mut node: Node, relay: bool) -> tokio::task::JoinHandle<(Node, usize)> {
    tokio::spawn(async move {
        let mut seen = HashSet::new();
        let mut copies = 0;
        while let Ok(Some(msg)) =
            tokio::time::timeout(Duration::from_millis(700), node.rx.recv()).await
        {
            copies += 1;
            if relay && seen.insert(msg.payload.clone()) {
                node.m.relay(&msg, Priority::Normal);
            }
        }
        (node, copies)
    })
}

#[tokio::test]
async fn broadcast_and_relay_in_a_triangle() {
    let a = Node::new(cfg(), 64).await;
    let b = Node::new(cfg(), 64).await;
    let c = Node::new(cfg(), 64).await;
    link(&a, &b).await;
    link(&b, &c).await;
    link(&a, &c).await;
    // Plain broadcast: each peer exactly once.
    let report = a.m.broadcast("plain", &b"p"[..], Priority::Normal).unwrap();
    let mut expected = vec![b.id(), c.id()];
    expected.sort();
    assert_eq!(report.reached, expected);
    assert!(report.failed.is_empty());
    let (ma, mb, mc) = (a.m.clone(), b.m.clone(), c.m.clone());
    let (ta, tb, tc) = (gossip(a, false), gossip(b, false), gossip(c, false));
    let (a, ca) = ta.await.unwrap();
    let (b, cb) = tb.await.unwrap();
    let (c, cc) = tc.await.unwrap();
    assert_eq!((ca, cb, cc), (0, 1, 1));
    // Broadcast then relay: the message never comes back to A; B and C relay to each other at
    // most once (never back to A, which sent it).
    ma.broadcast("gossip", &b"g"[..], Priority::Normal).unwrap();
    let (ta, tb, tc) = (gossip(a, true), gossip(b, true), gossip(c, true));
    let (a, ca) = ta.await.unwrap();
    let (b, cb) = tb.await.unwrap();
    let (c, cc) = tc.await.unwrap();
    assert_eq!(ca, 0);
    assert!((1..=2).contains(&cb) && (1..=2).contains(&cc), "{cb} {cc}");
    for m in [&ma, &mb, &mc] {
        assert!(
            m.metrics()
                .by_kind
                .get("gossip")
                .map_or(0, |s| s.messages_out)
                <= 2
        );
    }
    // Relaying again sends nothing: every peer has sent or been sent it.
    let again = b.m.relay(
        &InboundMessage {
            peer: a.id(),
            kind: p2pnet_messaging::MessageKind::new("gossip").unwrap(),
            payload: Bytes::from_static(b"g"),
            id: b
                .m
                .message_id(p2pnet_messaging::MessageKind::new("gossip").unwrap(), b"g"),
        },
        Priority::Normal,
    );
    assert!(again.reached.is_empty());
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn relay_in_a_line_of_five_reaches_each_node_exactly_once() {
    let mut nodes = Vec::new();
    for _ in 0..5 {
        nodes.push(Node::new(cfg(), 64).await);
    }
    for i in 0..4 {
        link(&nodes[i], &nodes[i + 1]).await;
    }
    let report = nodes[0]
        .m
        .broadcast("block", &b"b1"[..], Priority::High)
        .unwrap();
    assert_eq!(report.reached, vec![nodes[1].id()]);
    let tasks: Vec<_> = nodes.into_iter().map(|n| gossip(n, true)).collect();
    let mut copies = Vec::new();
    let mut nodes = Vec::new();
    for t in tasks {
        let (n, c) = t.await.unwrap();
        copies.push(c);
        nodes.push(n);
    }
    assert_eq!(copies, vec![0, 1, 1, 1, 1]);
    for n in nodes {
        n.stop().await;
    }
}

#[tokio::test]
async fn send_to_peers_filters_and_reports() {
    let a = Node::new(
        MessagingConfig {
            queue_low: 1,
            ..cfg()
        },
        64,
    )
    .await;
    let mut b = Node::new(cfg(), 64).await;
    let c = Node::new(cfg(), 64).await;
    link(&a, &b).await;
    link(&a, &c).await;
    let bid = b.id();
    let r =
        a.m.send_to_peers(|p| *p == bid, "only-b", &b"x"[..], Priority::Normal)
            .unwrap();
    assert_eq!(r.reached, vec![bid]);
    assert_eq!(b.recv().await.kind.as_str(), "only-b");
    let stranger = generate_keypair().public().to_peer_id();
    assert!(matches!(
        a.m.send_to_peer(&stranger, "x", &b""[..], Priority::Normal),
        Err(MessagingError::NotConnected(p)) if p == stranger
    ));
    a.stop().await;
    b.stop().await;
    c.stop().await;
}

#[tokio::test]
async fn messages_sent_after_bye_are_never_delivered() {
    let mut m = Node::new(cfg(), 64).await;
    let good = Node::new(cfg(), 64).await;
    link(&m, &good).await;

    // A raw peer on another chain: refused with Bye(WrongChainId) ...
    let mut raw = Raw::connect(&m, false).await;
    let rid = raw.host.peer_id();
    let wrong = Hello {
        chain_id: m.m.config().chain_id.wrapping_add(1),
        protocol_version: ProtocolVersion::CURRENT,
        compression: false,
        client_version: "raw".into(),
        listen_addrs: vec![],
    };
    let wrong_codec = FrameCodec::new(wrong.chain_id);
    let mut b = BytesMut::new();
    wrong_codec.encode(&wrong.to_frame(), &mut b).unwrap();
    raw.send_raw(&b).await;
    m.event(|e| matches!(e, SessionEvent::HandshakeFailed { peer, .. } if *peer == rid))
        .await;
    // ... keeps talking anyway, in both chain ids. None of it may reach the sink.
    let mut flood = BytesMut::new();
    for i in 0..200u32 {
        let f = Frame::new("tx", i.to_be_bytes().to_vec()).unwrap();
        raw.codec.encode(&f, &mut flood).unwrap();
        wrong_codec.encode(&f, &mut flood).unwrap();
    }
    let _ = raw.stream.write_all(&flood).await;
    let _ = raw.stream.flush().await;
    eventually("the refused peer is disconnected", || {
        !m.host.is_connected(&rid)
    })
    .await;

    // The good peer is unaffected, and its message is the only one the sink ever sees.
    good.m
        .send_to_peer(&m.id(), "tx", &b"from the good peer"[..], Priority::Normal)
        .unwrap();
    let msg = m.recv().await;
    assert_eq!(msg.peer, good.id());
    assert_eq!(&msg.payload[..], b"from the good peer");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        m.rx.try_recv().is_err(),
        "a message sent after Bye was delivered"
    );
    raw.host.shutdown().await;
    good.stop().await;
    m.stop().await;
}

/// Both peers dial each other at the same moment (usually two connections, four session streams). The
/// tie-break leaves one session per side, the same stream on both ends, and every message of a
/// burst each way arrives exactly once and in order.
#[tokio::test]
async fn simultaneous_dials_end_with_one_session_and_lose_nothing() {
    let mut a = Node::new(cfg(), 4096).await;
    let mut b = Node::new(cfg(), 4096).await;
    let (ra, rb) = tokio::join!(a.host.dial(b.addr.clone()), b.host.dial(a.addr.clone()));
    assert_eq!(ra.unwrap(), b.id());
    assert_eq!(rb.unwrap(), a.id());
    let (ma, mb, ia, ib) = (a.m.clone(), b.m.clone(), a.id(), b.id());
    eventually("session both ways", || {
        ma.has_session(&ib) && mb.has_session(&ia)
    })
    .await;
    // Let the losing streams be drained and closed.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.m.peers(), vec![ib]);
    assert_eq!(b.m.peers(), vec![ia]);
    assert_eq!(a.m.metrics().sessions_open, 1);
    assert_eq!(b.m.metrics().sessions_open, 1);

    const N: u32 = 1000;
    for i in 0..N {
        a.m.send_to_peer(&ib, "seq", i.to_be_bytes().to_vec(), Priority::Normal)
            .unwrap();
        b.m.send_to_peer(&ia, "seq", i.to_be_bytes().to_vec(), Priority::Normal)
            .unwrap();
    }
    for node in [&mut a, &mut b] {
        for i in 0..N {
            let m = node.recv().await;
            assert_eq!(&m.payload[..], &i.to_be_bytes()[..], "message {i}");
        }
        assert!(
            tokio::time::timeout(Duration::from_millis(200), node.rx.recv())
                .await
                .is_err(),
            "a message arrived twice"
        );
    }
    a.stop().await;
    b.stop().await;
}

/// The resident set size of this process, in KiB (each nextest test runs in its own process).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Reads `stream` until the node ends it (end of stream or reset); returns whether a `_bye`
/// came first. Fails the test when the node keeps it open for longer than `T`.
async fn until_ended(stream: &mut Stream, chain: u32) -> bool {
    let mut d = FrameCodec::new(chain);
    let mut buf = BytesMut::new();
    let mut bye = false;
    tokio::time::timeout(T, async {
        loop {
            while let Ok(Some(f)) = d.decode(&mut buf) {
                bye |= f.kind.as_str() == "_bye";
            }
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await
    .expect("the node kept a hostile stream open");
    bye
}

/// One peer opens 200 message streams and starts a 16 MiB frame on each: as its handshake frame
/// on even streams, after a good handshake on odd ones; then 50 more at once. The node keeps at
/// most one stream per direction for it, refuses the oversized handshake frames from their
/// header, replaces each live session by the next stream, ends every stream promptly, keeps its
/// memory bounded, and a good peer's messages still flow both ways.
#[tokio::test]
async fn one_peer_with_200_streams_of_16_mib_frames_stays_bounded() {
    const BIG: u32 = 16 * 1024 * 1024;
    let mut m = Node::new(cfg(), 64).await;
    let mut good = Node::new(cfg(), 64).await;
    link(&m, &good).await;
    let chain = m.m.config().chain_id;
    let attacker = Host::new(generate_keypair(), HostConfig::default()).unwrap();
    attacker.dial(m.addr.clone()).await.unwrap();
    let aid = attacker.peer_id();
    let codec = FrameCodec::new(chain);
    let hello = Hello {
        chain_id: chain,
        protocol_version: ProtocolVersion::CURRENT,
        compression: false,
        client_version: "attacker".into(),
        listen_addrs: vec![],
    };
    let mut hello_bytes = BytesMut::new();
    codec.encode(&hello.to_frame(), &mut hello_bytes).unwrap();
    let big_hello = raw_header(MAGIC, chain, 0, 1, &kind("_hello"), BIG, 0);
    let big_msg = raw_header(MAGIC, chain, 0, 1, &kind("blob"), BIG, 0);
    // Within one stream window: the writes never wait for the node to read.
    let unread = vec![0x5au8; 200 * 1024];
    // A live session reads this much of its 16 MiB frame.
    let read = vec![0xa5u8; 512 * 1024];
    let rss_before = rss_kib();

    let mut old = Vec::new();
    for i in 0..200 {
        let mut s = attacker.new_stream(m.id(), [PROTOCOL]).await.unwrap();
        if i % 2 == 0 {
            s.write_all(&big_hello).await.unwrap();
            let _ = s.write_all(&unread).await;
            let _ = s.flush().await;
            assert!(until_ended(&mut s, chain).await, "stream {i}: no bye");
            let ev = m
                .event(|e| matches!(e, SessionEvent::HandshakeFailed { peer, .. } if *peer == aid))
                .await;
            assert_eq!(
                ev,
                SessionEvent::HandshakeFailed {
                    peer: aid,
                    reason: HandshakeFailure::Decode(CodecError::TooLarge {
                        size: BIG as u64,
                        max: p2pnet_messaging::MAX_HANDSHAKE_FRAME,
                    }),
                }
            );
            let mm = m.m.clone();
            eventually("the refused session ended", || mm.session_count(&aid) == 0).await;
        } else {
            s.write_all(&hello_bytes).await.unwrap();
            s.flush().await.unwrap();
            let mut d = codec.clone();
            let mut buf = BytesMut::new();
            let ok = tokio::time::timeout(T, async {
                loop {
                    if let Some(f) = d.decode(&mut buf).unwrap() {
                        return f;
                    }
                    assert!(s.read_buf(&mut buf).await.unwrap() > 0);
                }
            })
            .await
            .unwrap();
            assert_eq!(ok.kind.as_str(), "_ok");
            let mm = m.m.clone();
            eventually("the session is live", || mm.has_session(&aid)).await;
            s.write_all(&big_msg).await.unwrap();
            s.write_all(&read).await.unwrap();
            s.flush().await.unwrap();
            old.push(s);
        }
        assert!(m.m.session_count(&aid) <= 2, "stream {i}");
    }
    // Every replaced live session was ended by the next stream, and its stream with it.
    let last = old.pop().unwrap();
    for (i, s) in old.iter_mut().enumerate() {
        assert!(!until_ended(s, chain).await, "replaced stream {i}");
    }
    let mut both = vec![good.id(), aid];
    both.sort();
    assert_eq!(m.m.peers(), both);

    // 50 streams at once, each announcing a 16 MiB handshake frame: each is refused from its
    // header (bye) or reset unread because another one is still handshaking.
    let burst: Vec<_> = (0..50)
        .map(|_| {
            let (h, id, hdr, unread) = (attacker.clone(), m.id(), big_hello, unread.clone());
            tokio::spawn(async move {
                // A stream the messenger resets at once may fail its negotiation already.
                let Ok(mut s) = h.new_stream(id, [PROTOCOL]).await else {
                    return false;
                };
                let _ = s.write_all(&hdr).await;
                let _ = s.write_all(&unread).await;
                let _ = s.flush().await;
                until_ended(&mut s, chain).await
            })
        })
        .collect();
    let mut byes = 0;
    for t in burst {
        byes += u64::from(t.await.unwrap());
    }
    drop(last);
    let mm = m.m.clone();
    eventually("no session left for the attacker", || {
        mm.session_count(&aid) == 0
    })
    .await;
    let grown = rss_kib().saturating_sub(rss_before);
    assert!(grown < 32 * 1024, "resident memory grew by {grown} KiB");

    let metrics = m.m.metrics();
    assert_eq!(metrics.decode_errors.get("too_large"), Some(&(100 + byes)));
    assert_eq!(
        metrics.handshake_failures.get("decode"),
        Some(&(100 + byes))
    );
    assert_eq!(metrics.streams_refused, 50 - byes);
    assert_eq!(metrics.sessions_closed.get("replaced"), Some(&100));
    assert!(byes >= 1);

    // The good peer is unaffected, both ways.
    good.m
        .send_to_peer(&m.id(), "ping", &b"p"[..], Priority::Normal)
        .unwrap();
    assert_eq!(m.recv().await.peer, good.id());
    m.m.send_to_peer(&good.id(), "pong", &b"p"[..], Priority::Normal)
        .unwrap();
    assert_eq!(good.recv().await.kind.as_str(), "pong");
    attacker.shutdown().await;
    m.stop().await;
    good.stop().await;
}

/// Reads frames from one half of a raw stream.
struct FramesIn<R> {
    rd: R,
    buf: BytesMut,
    codec: FrameCodec,
}

impl<R: tokio::io::AsyncRead + Unpin> FramesIn<R> {
    /// The next frame, `None` at the end of the stream (or a reset).
    async fn next(&mut self) -> Option<Frame> {
        tokio::time::timeout(T, async {
            loop {
                if let Some(f) = self.codec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                match self.rd.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("timed out reading a frame")
    }
}

fn seq_of(payload: &[u8]) -> u32 {
    u32::from_be_bytes(payload[..4].try_into().unwrap())
}

fn seq_frames(codec: &FrameCodec, range: std::ops::Range<u32>) -> BytesMut {
    let mut b = BytesMut::new();
    for i in range {
        codec
            .encode(&Frame::new("up", i.to_be_bytes().to_vec()).unwrap(), &mut b)
            .unwrap();
    }
    b
}

/// The live session is replaced by the tie-break winner while both directions are loaded. The
/// replaced writer stops before the new one starts: every message from the node arrives once
/// and in order, the old stream's part first, then the new stream's. The node delivers what the
/// peer sent on the old stream before what it sent on the new one. Exactly one session is live.
#[tokio::test]
async fn replacement_under_load_neither_reorders_nor_duplicates() {
    const M: u32 = 20_000; // node → peer
    const H: u32 = 3_000; // peer → node, on each stream
    let mut n = Node::new(cfg(), 16).await;
    let chain = n.m.config().chain_id;
    // The peer's id is the larger one: the node's stream wins the tie-break.
    let key = (0..64)
        .map(|_| generate_keypair())
        .find(|k| k.public().to_peer_id() > n.id())
        .unwrap();
    let peer = Host::new(key, HostConfig::default()).unwrap();
    let pid = peer.peer_id();
    let mut incoming = peer.accept_streams(PROTOCOL, 4).unwrap();
    peer.dial(n.addr.clone()).await.unwrap();
    // The node's stream (the winner) is left unanswered for now.
    let s2 = tokio::time::timeout(T, incoming.recv())
        .await
        .unwrap()
        .unwrap()
        .stream;
    // The peer's own stream is handshaken first: it is the live session.
    let s1 = peer.new_stream(n.id(), [PROTOCOL]).await.unwrap();
    let codec = FrameCodec::new(chain);
    let (rd1, mut wr1) = tokio::io::split(s1);
    let (rd2, mut wr2) = tokio::io::split(s2);
    let mut in1 = FramesIn {
        rd: rd1,
        buf: BytesMut::new(),
        codec: codec.clone(),
    };
    let mut in2 = FramesIn {
        rd: rd2,
        buf: BytesMut::new(),
        codec: codec.clone(),
    };
    let hello = Hello {
        chain_id: chain,
        protocol_version: ProtocolVersion::CURRENT,
        compression: false,
        client_version: "raw".into(),
        listen_addrs: vec![],
    };
    let mut b = BytesMut::new();
    codec.encode(&hello.to_frame(), &mut b).unwrap();
    wr1.write_all(&b).await.unwrap();
    assert_eq!(in1.next().await.unwrap().kind.as_str(), "_ok");
    let m = n.m.clone();
    eventually("the peer's stream is live", || m.has_session(&pid)).await;

    // Load from the node: M messages as fast as the queue takes them.
    let producer = tokio::spawn(async move {
        let filler = [0u8; 200];
        for i in 0..M {
            let mut p = i.to_be_bytes().to_vec();
            p.extend_from_slice(&filler);
            loop {
                match m.send_to_peer(&pid, "seq", p.clone(), Priority::Normal) {
                    Ok(()) => break,
                    Err(MessagingError::Backpressure { .. }) => {
                        tokio::time::sleep(Duration::from_millis(1)).await
                    }
                    Err(e) => panic!("{e}"),
                }
            }
        }
    });
    // Load from the peer on its stream; the node's sink (16 slots) is not read yet.
    wr1.write_all(&seq_frames(&codec, 0..H)).await.unwrap();
    let mut got = Vec::with_capacity(M as usize);
    while got.len() < 2_000 {
        let f = in1.next().await.unwrap();
        got.push(seq_of(&f.payload));
    }
    assert!(!producer.is_finished(), "no load left at the replacement");

    // Now answer the node's stream: it wins and replaces the live one, mid-load.
    let theirs = in2.next().await.unwrap();
    assert_eq!(theirs.kind.as_str(), "_hello");
    let mut b = BytesMut::new();
    codec.encode(&hello.to_ok_frame(), &mut b).unwrap();
    wr2.write_all(&b).await.unwrap();
    // The peer switches too: the rest of its messages on the new stream, then it closes the old.
    wr2.write_all(&seq_frames(&codec, H..2 * H)).await.unwrap();
    wr1.shutdown().await.unwrap();

    let mut rx = std::mem::replace(&mut n.rx, mpsc::channel(1).1);
    let delivered = tokio::spawn(async move {
        let mut v = Vec::with_capacity(2 * H as usize);
        for _ in 0..2 * H {
            let msg = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
            v.push(seq_of(&msg.payload));
        }
        (v, rx)
    });
    // The old stream ends (the replaced writer stopped), and the new one carries the rest.
    while let Some(f) = in1.next().await {
        got.push(seq_of(&f.payload));
    }
    let on_old = got.len();
    while got.len() < M as usize {
        let f = in2.next().await.unwrap();
        got.push(seq_of(&f.payload));
    }
    producer.await.unwrap();
    assert!(on_old < M as usize, "the new stream carried nothing");
    assert!(
        got.iter().copied().eq(0..M),
        "node → peer reordered or duplicated around message {on_old}: {:?}",
        got.iter().enumerate().find(|(i, s)| **s != *i as u32)
    );
    let (inbound, rx) = delivered.await.unwrap();
    assert!(
        inbound.iter().copied().eq(0..2 * H),
        "peer → node reordered or duplicated: {:?}",
        inbound.iter().enumerate().find(|(i, s)| **s != *i as u32)
    );
    n.rx = rx;
    assert!(
        tokio::time::timeout(Duration::from_millis(100), in2.next())
            .await
            .is_err(),
        "a message arrived twice"
    );

    // One session, the node's stream; the replaced one ended without a Closed event.
    assert_eq!(n.m.peers(), vec![pid]);
    assert_eq!(n.m.metrics().sessions_open, 1);
    let m = n.m.clone();
    eventually("the replaced session ended", || m.session_count(&pid) == 1).await;
    let mut opened = 0;
    while let Ok(ev) = n.events.try_recv() {
        match ev {
            SessionEvent::Opened { peer, .. } if peer == pid => opened += 1,
            SessionEvent::Closed { peer, reason } if peer == pid => panic!("closed: {reason:?}"),
            _ => {}
        }
    }
    assert_eq!(opened, 1);
    n.m.send_to_peer(&pid, "after", &b"x"[..], Priority::High)
        .unwrap();
    assert_eq!(in2.next().await.unwrap().kind.as_str(), "after");
    drop((wr2, in2));
    peer.shutdown().await;
    n.stop().await;
}
