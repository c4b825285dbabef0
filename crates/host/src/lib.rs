//! `p2pnet-host`: a libp2p host built directly on `libp2p-core`.
//!
//! A [`Host`] speaks standard libp2p: TCP, noise XX for authentication and encryption, yamux for
//! multiplexing and multistream-select 1.0 for protocol negotiation, so rust-libp2p, go-libp2p and
//! js-libp2p peers can dial it and be dialed by it. It answers `/ipfs/ping/1.0.0` and
//! `/ipfs/id/1.0.0`.
//!
//! ```
//! use p2pnet_host::{Host, HostConfig, generate_keypair};
//! use tokio::io::{AsyncReadExt, AsyncWriteExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let server = Host::new(generate_keypair(), HostConfig::default())?;
//! let addr = server.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
//! // The echo handler serves while `_echo` lives.
//! let _echo = server.set_stream_handler("/echo/1.0.0", |mut s: p2pnet_host::InboundStream| async move {
//!     // Read and write at once: the halves borrow the stream, no lock of their own.
//!     let (mut r, mut w) = s.stream.split();
//!     let _ = tokio::io::copy(&mut r, &mut w).await;
//!     let _ = w.shutdown().await;
//! })?;
//!
//! let client = Host::new(generate_keypair(), HostConfig::default())?;
//! let peer = client.dial(p2pnet_host::with_p2p(&addr, server.peer_id())).await?;
//! let mut stream = client.new_stream(peer, ["/echo/1.0.0"]).await?;
//! stream.write_all(b"hello").await?;
//! stream.shutdown().await?; // half close: we can still read the echo
//! let mut echo = Vec::new();
//! stream.read_to_end(&mut echo).await?;
//! assert_eq!(echo, b"hello");
//!
//! client.shutdown().await;
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod addr;
mod config;
mod connection;
mod dial;
mod error;
mod events;
mod handlers;
mod host;
mod identity;
mod listen;
mod log;
mod metrics;
mod muxer;
mod peer_store;
mod protocol_name;
mod protocols;
mod quic;
mod stream;
mod substream;
mod transport;

pub use addr::{AddrScope, addr_scope, keep_learned_addr, with_p2p, without_p2p};
pub use config::{HostConfig, Limits, QuicConfig};
pub use connection::{ConnectionId, Direction, TransportKind};
pub use error::{HostError, LimitKind};
pub use events::HostEvent;
pub use handlers::{StreamHandlerRegistration, StreamReceiver};
pub use host::{ConnectionInfo, Host};
pub use identity::{generate_keypair, load_keypair, load_or_generate_keypair, save_keypair};
pub use libp2p_identity::{Keypair, PeerId, PublicKey};
pub use log::RateLimiter;
pub use metrics::HostMetrics;
pub use multiaddr::{Multiaddr, Protocol};
pub use peer_store::{PERMANENT_ADDR_TTL, PeerStore, RECENT_ADDR_TTL};
pub use protocol_name::{MAX_PROTOCOL_LEN, validate_protocol};
pub use stream::{InboundStream, OwnedReadHalf, OwnedWriteHalf, ReadHalf, Stream, WriteHalf};

/// Finds addresses of peers the host has none for (a DHT, a directory service, …), plugged in
/// with [`Host::set_peer_routing`].
pub trait PeerRouting: Send + Sync + 'static {
    /// `peer`'s addresses, or none. Called at most once per dial that found no address; the host
    /// bounds it by its dial timeout.
    fn find_addrs(&self, peer: PeerId) -> futures::future::BoxFuture<'static, Vec<Multiaddr>>;
}

/// Protocol names of the built-in protocols.
pub mod protocol_names {
    /// `/ipfs/ping/1.0.0`.
    pub const PING: &str = crate::protocols::ping::PROTOCOL;
    /// `/ipfs/id/1.0.0`.
    pub const IDENTIFY: &str = crate::protocols::identify::PROTOCOL;
}

/// Decoders of bytes that come from the network, exposed for fuzzing and property tests.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes one length-prefixed identify message; returns whether it decoded.
    pub fn decode_identify(bytes: &[u8]) -> bool {
        crate::protocols::identify::decode(bytes).is_ok()
    }
}
