//! Helpers shared by the forwarder's integration tests: two connected hosts with forwarders,
//! and small TCP services on 127.0.0.1.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::time::Duration;

use p2pnet_forward::{ForwardConfig, Forwarder, ListenerInfo};
use p2pnet_host::{Host, HostConfig, Multiaddr, Protocol, generate_keypair, with_p2p};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::task::JoinHandle;

pub const LOOPBACK: &str = "/ip4/127.0.0.1/tcp/0";

/// Node A (forwards) and node B (listens), connected.
pub struct Nodes {
    pub a: Host,
    pub b: Host,
    pub fa: Forwarder,
    pub fb: Forwarder,
}

impl Nodes {
    pub async fn new() -> Nodes {
        Self::with(ForwardConfig::default(), ForwardConfig::default()).await
    }

    pub async fn with(ca: ForwardConfig, cb: ForwardConfig) -> Nodes {
        init_tracing();
        let b = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let b_addr = b.listen_on(LOOPBACK.parse().unwrap()).await.unwrap();
        let a = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        a.dial(with_p2p(&b_addr, b.peer_id())).await.unwrap();
        let fa = Forwarder::new(a.clone(), ca);
        let fb = Forwarder::new(b.clone(), cb);
        Nodes { a, b, fa, fb }
    }

    /// B serves `protocol` by `target`, A forwards a fresh local port to it; returns A's listener.
    pub async fn tunnel(&self, protocol: &str, target: Multiaddr) -> ListenerInfo {
        self.fb
            .listen(protocol, target, Default::default())
            .unwrap();
        self.fa
            .forward(protocol, LOOPBACK.parse().unwrap(), self.b.peer_id())
            .await
            .unwrap()
    }

    pub async fn shutdown(self) {
        within(10, async {
            self.fa.shutdown().await;
            self.fb.shutdown().await;
            self.a.shutdown().await;
            self.b.shutdown().await;
        })
        .await;
    }
}

/// Sends the crates' logs to the test's captured output (shown when a test fails). `RUST_LOG`
/// chooses what is logged; by default warnings and errors.
pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_test_writer()
        .try_init();
}

/// Awaits `fut`, failing the test after `secs` seconds.
pub async fn within<T>(secs: u64, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("timed out")
}

/// Waits (bounded, 5 s) until `cond` holds.
pub async fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..500 {
        if cond() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}

pub fn tcp_addr(port: u16) -> Multiaddr {
    format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
}

pub fn port_of(addr: &Multiaddr) -> u16 {
    match addr.iter().last() {
        Some(Protocol::Tcp(p)) => p,
        _ => panic!("not a tcp address: {addr}"),
    }
}

/// Connects a TCP client to a local listener of the forwarder.
pub async fn connect(listener: &ListenerInfo) -> TcpStream {
    TcpStream::connect(("127.0.0.1", port_of(&listener.listen_addr)))
        .await
        .unwrap()
}

/// A TCP listener on 127.0.0.1 with a backlog that takes a burst of hundreds of connections
/// (`TcpListener::bind` queues only 128; beyond that the kernel drops or, with SYN cookies,
/// resets connections, and a target that does so is not what the tests are about).
pub fn listen_tcp() -> TcpListener {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    socket.listen(4096).unwrap()
}

/// A service on 127.0.0.1: each connection is served by `serve` on its own task.
pub struct Service {
    pub addr: Multiaddr,
    task: JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub async fn service<F, Fut>(serve: F) -> Service
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = listen_tcp();
    let addr = tcp_addr(listener.local_addr().unwrap().port());
    let task = tokio::spawn(async move {
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                r = listener.accept() => {
                    let Ok((s, _)) = r else { return };
                    conns.spawn(serve(s));
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    Service { addr, task }
}

/// Echoes until EOF, then half-closes.
pub async fn echo_service() -> Service {
    service(|mut s| async move {
        let (mut r, mut w) = s.split();
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = w.shutdown().await;
    })
    .await
}

/// Reads to EOF, then answers with the length (u64 BE) and the SHA-256 of what it read.
pub async fn sink_service() -> Service {
    service(|mut s| async move {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => {
                    total += n as u64;
                    hasher.update(&buf[..n]);
                }
                Err(_) => return,
            }
        }
        let _ = s.write_all(&total.to_be_bytes()).await;
        let _ = s.write_all(&hasher.finalize()).await;
        let _ = s.shutdown().await;
    })
    .await
}

/// Deterministic test data: `len` bytes in chunks of `chunk`, handed to `f` one chunk at a time.
pub struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    pub fn new(chunk: usize) -> Self {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let block = (0..chunk)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                seed as u8
            })
            .collect();
        Self { block }
    }

    /// Chunk `i`: the block with `i` in its first eight bytes.
    pub fn chunk(&mut self, i: u64) -> &[u8] {
        self.block[..8].copy_from_slice(&i.to_be_bytes());
        &self.block
    }
}

/// Reads to the end (or an error) and returns what was read and how it ended.
pub async fn read_all(s: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return (out, Ok(())),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => return (out, Err(e)),
        }
    }
}
