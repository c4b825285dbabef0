//! `p2pnet-kad`: a Kademlia DHT on a [`p2pnet_host::Host`], wire-compatible with libp2p's
//! kad-dht (`/ipfs/kad/1.0.0` by default, configurable so a private network runs its own DHT).
//!
//! A sans-IO core (time and messages in, messages and decisions out, tested without sockets):
//! - [`key`]: SHA-256 keys, XOR distance, bucket indices;
//! - [`routing`]: the routing table (k-buckets with replacement caches, liveness checks of the
//!   least recently seen entry as outputs, IP diversity limits);
//! - [`query`]: the iterative lookup (α in flight, request and query timeouts, bounded answers,
//!   optional disjoint paths);
//! - [`store`]: bounded record and provider stores with expiry, and [`store::RecordValidator`];
//! - [`refresh`], [`republish`]: which buckets are due for a refresh and which of our records
//!   and provider keys are due to be published again;
//! - [`route_cache`]: the routing table saved to a file and loaded at start;
//! - [`message`], [`protocol`]: the protobuf `Message` and its uvarint framing.
//!
//! Under it, [`Kademlia`] drives it on host streams: one task owns the state, it answers
//! `FIND_NODE`, `GET_VALUE`, `PUT_VALUE`, `ADD_PROVIDER`, `GET_PROVIDERS` in server mode (or in
//! [`Mode::Auto`] once the node is reachable) and offers `bootstrap`, `find_peer`,
//! `closest_peers`, `get_record`, `put_record`, `provide` and `providers`, at most
//! [`KadConfig::max_concurrent_queries`] at once. Its maintenance tick refreshes buckets,
//! republishes, sweeps expired entries and saves the route cache; [`Kademlia::metrics`] is a
//! snapshot of its counters ([`metrics`]).
//!
//! ```
//! use p2pnet_host::{Host, HostConfig, generate_keypair};
//! use p2pnet_kad::{KadConfig, Kademlia};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Host::new(generate_keypair(), HostConfig::default())?;
//! let b = Host::new(generate_keypair(), HostConfig::default())?;
//! let kad_a = Kademlia::new(a.clone(), KadConfig::default())?;
//! let kad_b = Kademlia::new(b.clone(), KadConfig::default())?;
//! let b_addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
//!
//! // b is a's bootstrap node.
//! kad_a.add_peer(b.peer_id(), vec![b_addr]).await?;
//! kad_a.bootstrap().await?;
//!
//! // A record put by a is stored by b too, and b finds it.
//! let put = kad_a.put_record(b"/demo/key", b"hello".to_vec()).await?;
//! assert_eq!(put.stored_at, vec![b.peer_id()]);
//! let got = kad_b.get_record(b"/demo/key", 1).await?;
//! assert_eq!(got.records[0].value, b"hello");
//!
//! for (kad, host) in [(kad_a, a), (kad_b, b)] {
//!     kad.shutdown().await;
//!     host.shutdown().await;
//! }
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod addrs;
pub mod config;
mod driver;
pub mod error;
pub mod key;
pub mod message;
pub mod metrics;
pub mod outcome;
pub mod protocol;
pub mod query;
pub mod refresh;
pub mod republish;
pub mod route_cache;
pub mod routing;
mod rpc;
pub mod store;

pub use config::{KadConfig, Mode};
pub use driver::Kademlia;
pub use error::KadError;
pub use key::{Distance, Key};
pub use metrics::{KadMetrics, QueryKind};
pub use outcome::{
    ClosestPeers, FoundRecord, PeerFound, ProvidersFound, PutOutcome, QueryStats, RecordsFound,
    TableEntry,
};
pub use store::{AcceptAll, RecordValidator};

/// Decoders of bytes that come from the network, exposed for fuzzing.
#[doc(hidden)]
pub mod fuzzing {
    use crate::message::{MessageType, Request, Response};

    /// Decodes `bytes` as frames, each as a request and as a response of every type, the way a
    /// server and a client would; returns how many frames decoded. Never panics.
    pub fn decode_messages(bytes: &[u8]) -> usize {
        let mut rest = bytes;
        let mut n = 0;
        while let Ok(Some((msg, used))) =
            crate::protocol::decode_frame(rest, crate::protocol::DEFAULT_MAX_MESSAGE_SIZE)
        {
            let _ = Request::from_proto(msg.clone(), 20);
            for ty in [
                MessageType::FindNode,
                MessageType::GetValue,
                MessageType::GetProviders,
                MessageType::PutValue,
            ] {
                let _ = Response::from_proto(msg.clone(), ty, 20);
            }
            n += 1;
            rest = &rest[used..];
        }
        n
    }
}
