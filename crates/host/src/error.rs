//! The host's error type.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

/// Which configured limit refused an operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LimitKind {
    /// `Limits::max_connections`: established connections in total.
    Connections,
    /// `Limits::max_connections_per_peer`.
    ConnectionsPerPeer,
    /// `Limits::max_pending_incoming`: inbound handshakes in progress.
    PendingIncoming,
    /// `Limits::max_inbound_streams_per_connection`.
    InboundStreams,
    /// `Limits::max_outbound_streams_per_connection`.
    OutboundStreams,
}

impl std::fmt::Display for LimitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            LimitKind::Connections => "total connections",
            LimitKind::ConnectionsPerPeer => "connections per peer",
            LimitKind::PendingIncoming => "pending inbound handshakes",
            LimitKind::InboundStreams => "inbound streams per connection",
            LimitKind::OutboundStreams => "outbound streams per connection",
        };
        f.write_str(s)
    }
}

/// Everything that can go wrong in the host.
///
/// The error is `Clone` so that one dial can answer every caller that was coalesced into it;
/// I/O causes are kept behind an `Arc`.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum HostError {
    /// The peer is not connected and the peer store has no address for it.
    #[error("no known address for peer {peer}")]
    NoAddresses {
        /// The peer we wanted to reach.
        peer: PeerId,
    },
    /// Dialing failed (connection refused, handshake failed, unreachable…).
    #[error("dial to {addr} failed: {reason}")]
    DialFailed {
        /// The address dialed.
        addr: Multiaddr,
        /// What went wrong, from the transport.
        reason: String,
    },
    /// The peer that answered a dial to `/p2p/<expected>` authenticated as someone else.
    #[error("dialed peer {expected} but {actual} answered")]
    PeerIdMismatch {
        /// The peer id in the dialed address.
        expected: PeerId,
        /// The peer id the noise handshake authenticated.
        actual: PeerId,
    },
    /// An operation did not finish in time.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What timed out: `"dial"`, `"protocol negotiation"`, `"ping"`…
        operation: &'static str,
        /// The configured timeout.
        after: std::time::Duration,
    },
    /// The peer supports none of the protocols we proposed.
    #[error("peer {peer} supports none of {protocols:?}")]
    ProtocolNotSupported {
        /// The remote peer.
        peer: PeerId,
        /// The protocols we proposed.
        protocols: Vec<String>,
    },
    /// Protocol negotiation failed for another reason than "not supported" (malformed messages).
    #[error("protocol negotiation with {peer} failed: {reason}")]
    Negotiation {
        /// The remote peer.
        peer: PeerId,
        /// The multistream-select error.
        reason: String,
    },
    /// A configured limit refused the operation.
    #[error("limit reached: {limit}")]
    LimitReached {
        /// Which limit.
        limit: LimitKind,
    },
    /// The connection to the peer closed before or during the operation.
    #[error("connection to {peer} closed")]
    ConnectionClosed {
        /// The remote peer.
        peer: PeerId,
    },
    /// The host has been shut down.
    #[error("the host is shut down")]
    ShutDown,
    /// A configuration value the host cannot use.
    #[error("invalid configuration {field}: {reason}")]
    InvalidConfig {
        /// The field, e.g. `quic.idle_timeout`.
        field: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// A multiaddr this host cannot use (for example not `/ip4|ip6/…/tcp/…`).
    #[error("unsupported address {addr}: {reason}")]
    InvalidAddress {
        /// The address given.
        addr: Multiaddr,
        /// Why it cannot be used.
        reason: String,
    },
    /// Binding a listener failed (address in use, permission denied…).
    #[error("cannot listen on {addr}: {source}")]
    ListenFailed {
        /// The address we tried to bind.
        addr: Multiaddr,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A protocol name that multistream-select cannot carry (see [`crate::validate_protocol`]:
    /// it must start with `/`, be at most 140 bytes long and hold no control character).
    #[error("invalid protocol name {protocol:?}: {reason}")]
    InvalidProtocol {
        /// The name given.
        protocol: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The protocol already has a stream handler (a built-in one or another registration's);
    /// it serves on, untouched. Drop its registration first to serve the protocol otherwise.
    #[error("protocol {protocol:?} already has a stream handler")]
    ProtocolTaken {
        /// The protocol asked for.
        protocol: String,
    },
    /// Reading or writing a key file failed.
    #[error("key file {path}: {source}")]
    KeyFileIo {
        /// The key file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// A key file exists but does not hold a valid libp2p protobuf-encoded Ed25519 key.
    #[error("key file {path} is malformed: {reason}")]
    KeyFileMalformed {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A ping reply did not echo what we sent.
    #[error("ping to {peer} answered with wrong bytes")]
    PingMismatch {
        /// The remote peer.
        peer: PeerId,
    },
    /// An I/O error on an established stream.
    #[error("i/o error during {context}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The error.
        #[source]
        source: Arc<io::Error>,
    },
}

impl HostError {
    pub(crate) fn io(context: &'static str, source: io::Error) -> Self {
        HostError::Io {
            context,
            source: Arc::new(source),
        }
    }
}
