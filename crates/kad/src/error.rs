//! The crate's error type.

use std::sync::Arc;
use std::time::Duration;

use p2pnet_host::{HostError, PeerId};

/// Everything that can go wrong in Kademlia: on the wire, in the stores and in queries.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum KadError {
    /// The host refused or failed an operation (registration, dial, stream).
    #[error(transparent)]
    Host(#[from] HostError),
    /// Reading or writing a stream failed.
    #[error("stream I/O failed: {0}")]
    Io(Arc<std::io::Error>),
    /// A message's length prefix announced more than we accept.
    #[error("message of {len} bytes exceeds the limit of {max}")]
    MessageTooLarge {
        /// The announced length.
        len: u64,
        /// The configured limit.
        max: usize,
    },
    /// A message's length prefix is not a valid uvarint.
    #[error("invalid length prefix")]
    InvalidLength,
    /// A message did not decode as the protobuf `Message`.
    #[error("malformed message: {0}")]
    Decode(String),
    /// A message decoded but is not a valid request or response (unknown type, missing record,
    /// answer of the wrong type…).
    #[error("invalid message: {0}")]
    InvalidMessage(&'static str),
    /// The peer answered nothing in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out.
        operation: &'static str,
        /// The configured timeout.
        after: Duration,
    },
    /// A record was refused: by the validator or by the store's bounds.
    #[error("record refused: {0}")]
    RecordRefused(String),
    /// A value is larger than the store accepts.
    #[error("value of {len} bytes exceeds the limit of {max}")]
    ValueTooLarge {
        /// The value's size.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A store is full (in total or for this peer).
    #[error("{0} store full")]
    StoreFull(&'static str),
    /// The routing table knows no peer to ask.
    #[error("no known peers to query")]
    NoKnownPeers,
    /// A lookup ended without finding the peer.
    #[error("peer {0} not found")]
    PeerNotFound(PeerId),
    /// A lookup ended without finding any record for the key.
    #[error("no record found")]
    RecordNotFound,
    /// The Kademlia service has shut down.
    #[error("kademlia has shut down")]
    ShutDown,
}

impl From<std::io::Error> for KadError {
    fn from(e: std::io::Error) -> Self {
        KadError::Io(Arc::new(e))
    }
}
