//! `p2pnet-forward`: tunnels TCP and Unix-socket services between peers over authenticated
//! libp2p streams — kubo's `ipfs p2p`, with half close that works, per-listener allow-lists and
//! Unix sockets on either end.
//!
//! A [`Forwarder`] runs on a [`p2pnet_host::Host`]. [`Forwarder::listen`] serves a protocol by
//! connecting each inbound stream to a local target; [`Forwarder::forward`] binds a local
//! address and tunnels each connection to a peer's protocol. Both are recorded in the listener
//! registry, every bridged stream in the stream registry with live byte counters.
//!
//! ```
//! use p2pnet_forward::{ForwardConfig, Forwarder, ListenOptions};
//! use p2pnet_host::{Host, HostConfig, generate_keypair, with_p2p};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // A TCP echo service next to node B.
//! let service = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let service_addr = format!("/ip4/127.0.0.1/tcp/{}", service.local_addr()?.port());
//! tokio::spawn(async move {
//!     let (mut s, _) = service.accept().await?;
//!     let (mut r, mut w) = s.split();
//!     tokio::io::copy(&mut r, &mut w).await?;
//!     w.shutdown().await
//! });
//!
//! // Node B exposes it as /x/echo; node A forwards a local port to it.
//! let b = Host::new(generate_keypair(), HostConfig::default())?;
//! let b_addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
//! let fb = Forwarder::new(b.clone(), ForwardConfig::default());
//! fb.listen("/x/echo", service_addr.parse()?, ListenOptions::default())?;
//!
//! let a = Host::new(generate_keypair(), HostConfig::default())?;
//! a.dial(with_p2p(&b_addr, b.peer_id())).await?;
//! let fa = Forwarder::new(a.clone(), ForwardConfig::default());
//! let tunnel = fa.forward("/x/echo", "/ip4/127.0.0.1/tcp/0".parse()?, b.peer_id()).await?;
//!
//! // Any TCP client can use the tunnel.
//! let port = match tunnel.listen_addr.iter().last() {
//!     Some(p2pnet_host::Protocol::Tcp(port)) => port,
//!     _ => unreachable!(),
//! };
//! let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
//! client.write_all(b"hello").await?;
//! client.shutdown().await?; // half close: the answer still comes back
//! let mut echo = Vec::new();
//! client.read_to_end(&mut echo).await?;
//! assert_eq!(echo, b"hello");
//!
//! fa.shutdown().await;
//! fb.shutdown().await;
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod bridge;
mod config;
mod endpoint;
mod error;
mod forwarder;
mod limits;
mod registry;

pub use config::ForwardConfig;
pub use endpoint::unix_multiaddr;
pub use error::ForwardError;
pub use forwarder::{ExistingStreams, Forwarder, ListenOptions};
pub use limits::{RefusedStreams, StreamLimit};
pub use registry::{
    Direction, ListenerFilter, ListenerId, ListenerInfo, ListenerRegistry, Origin, StreamId,
    StreamInfo, StreamRegistry,
};
