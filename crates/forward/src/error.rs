//! The crate's error type.

use std::io;
use std::sync::Arc;

use p2pnet_host::{HostError, Multiaddr};

use crate::StreamLimit;

/// Everything that can go wrong when setting up or managing forwards.
///
/// Failures of individual forwarded connections (peer unreachable, target down) are not
/// returned to anyone: they close the connection and are logged with the peer and protocol.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    /// The protocol name is not acceptable (not under `/x/` without
    /// [`crate::ForwardConfig::allow_custom_protocols`], or not a valid libp2p protocol name).
    #[error("invalid protocol {protocol:?}: {reason}")]
    InvalidProtocol {
        /// The protocol given.
        protocol: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The protocol belongs to the host (a built-in protocol or another component's handler)
    /// and cannot be taken over by a tunnel.
    #[error("protocol {0:?} is served by the host and cannot be taken over")]
    ReservedProtocol(String),
    /// A remote listener for this protocol already exists.
    #[error("protocol {0:?} is already listened on")]
    ProtocolInUse(String),
    /// A local listener on this address already exists.
    #[error("local address {0} is already forwarded")]
    ListenAddrInUse(Multiaddr),
    /// Binding the local listener failed (for example the address is used by another program).
    #[error("cannot bind {addr}: {source}")]
    Bind {
        /// The address we tried to bind.
        addr: Multiaddr,
        /// The OS error.
        #[source]
        source: Arc<io::Error>,
    },
    /// An address this crate cannot use: listen addresses and targets must be
    /// `/ip4|ip6/<ip>/tcp/<port>` or `/unix/<path>`.
    #[error("unsupported address {addr}: {reason}")]
    UnsupportedAddress {
        /// The address given.
        addr: Multiaddr,
        /// Why it cannot be used.
        reason: &'static str,
    },
    /// A stream or connection was refused because a stream cap of
    /// [`crate::ForwardConfig`] is reached; it alone is reset, and counted in
    /// [`crate::Forwarder::refused_streams`].
    #[error("stream refused: {limit} limit of {max} reached")]
    StreamLimit {
        /// Which cap.
        limit: StreamLimit,
        /// Its value.
        max: usize,
    },
    /// The host refused an operation.
    #[error(transparent)]
    Host(#[from] HostError),
    /// The forwarder has been shut down.
    #[error("the forwarder is shut down")]
    ShutDown,
}
