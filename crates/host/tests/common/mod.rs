//! Helpers shared by the host's integration tests.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use p2pnet_host::{
    Host, HostConfig, HostEvent, Multiaddr, PeerId, StreamHandlerRegistration, generate_keypair,
    with_p2p,
};
use tokio::io::AsyncWriteExt;

pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// A host listening on a free loopback port; returns it and its full `/p2p/` address.
pub async fn listening(config: HostConfig) -> (Host, Multiaddr) {
    let host = Host::new(generate_keypair(), config).unwrap();
    let addr = host.listen_on(LOOPBACK.parse().unwrap()).await.unwrap();
    let full = with_p2p(&addr, host.peer_id());
    (host, full)
}

/// Defines one `#[tokio::test]` per name, calling the test file's function of that name with
/// `Transport::$transport`: `mod tcp { over!(Tcp: a, b); }` runs cases `a` and `b` over TCP.
#[allow(unused_macros)] // used by the suites that run per transport, not by every test file
macro_rules! over {
    ($transport:ident: $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                super::$name(super::Transport::$transport).await
            }
        )*
    };
}

/// The transports every stream test runs over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// TCP + noise + yamux.
    Tcp,
    /// QUIC v1.
    Quic,
}

impl Transport {
    /// A loopback listen address with a free port.
    pub fn loopback(self) -> Multiaddr {
        match self {
            Transport::Tcp => LOOPBACK.parse().unwrap(),
            Transport::Quic => "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
        }
    }
}

/// A host listening on a free loopback port of transport `t`; it and its full `/p2p/` address.
pub async fn listening_over(t: Transport, config: HostConfig) -> (Host, Multiaddr) {
    let host = Host::new(generate_keypair(), config).unwrap();
    let addr = host.listen_on(t.loopback()).await.unwrap();
    let full = with_p2p(&addr, host.peer_id());
    (host, full)
}

pub fn host(config: HostConfig) -> Host {
    Host::new(generate_keypair(), config).unwrap()
}

/// Registers an echo handler on `protocol`: copies until EOF, then half-closes. It serves while
/// the registration lives.
pub fn serve_echo(host: &Host, protocol: &str) -> StreamHandlerRegistration {
    host.set_stream_handler(protocol, |mut s: p2pnet_host::InboundStream| async move {
        let (mut r, mut w) = tokio::io::split(&mut s.stream);
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .unwrap()
}

/// Waits (bounded) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Waits (bounded) for an event matching `pred`.
pub async fn wait_event(
    rx: &mut tokio::sync::broadcast::Receiver<HostEvent>,
    mut pred: impl FnMut(&HostEvent) -> bool,
) -> HostEvent {
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let ev = rx.recv().await.expect("event channel closed");
            if pred(&ev) {
                return ev;
            }
        }
    })
    .await
    .expect("timed out waiting for event")
}

pub fn peer_of(addr: &Multiaddr) -> PeerId {
    p2pnet_host::without_p2p(addr).1.unwrap()
}
