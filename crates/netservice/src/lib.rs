//! `p2pnet-netservice`: [`NetService`], a p2pnet node in one value.
//!
//! It composes the host (`p2pnet-host`), the message dispatcher (`p2pnet-dispatcher`), message
//! sessions (`p2pnet-messaging`) and TCP forwarding (`p2pnet-forward`), owns their
//! configuration ([`NetConfig`], loaded from TOML) and starts and stops them in order.
//!
//! ```
//! use p2pnet_dispatcher::SubscriberOptions;
//! use p2pnet_messaging::Priority;
//! use p2pnet_netservice::{NetConfig, NetService};
//!
//! # #[tokio::main]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let mut config = NetConfig::default();
//! config.host.listen_addrs = vec!["/ip4/127.0.0.1/tcp/0".into()];
//! let a = NetService::new(config.clone())?;
//! let b = NetService::new(config)?;
//! a.start().await?;
//! b.start().await?;
//!
//! // b takes "tx" messages off its dispatcher.
//! let mut txs = b.register(&["tx"], SubscriberOptions::new())?;
//! let b_addr = p2pnet_host::with_p2p(&b.listen_addrs()[0], b.peer_id());
//! a.host().dial(b_addr).await?;
//! # for _ in 0..500 { if a.peers().contains(&b.peer_id()) { break } tokio::time::sleep(std::time::Duration::from_millis(10)).await; }
//! a.send_to_peer(&b.peer_id(), "tx", &b"hello"[..], Priority::Normal)?;
//! let msg = txs.recv_async().await?;
//! assert_eq!(msg.peer, a.peer_id());
//! assert_eq!(&msg.payload[..], b"hello");
//!
//! a.stop().await;
//! b.stop().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod config;
mod error;
mod message;
mod metrics;
mod peers;
mod service;

pub use config::{
    DiscoverySection, ForwardTunnel, HostSection, ListenTunnel, NetConfig, PeersSection,
    QuicSection, parse_peer,
};
pub use error::NetError;
pub use message::NetMessage;
pub use service::{NetEvent, NetMetrics, NetService};

/// The README's Rust example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
