//! Events the host publishes to subscribers of [`crate::Host::events`].

use libp2p_identity::PeerId;
use multiaddr::Multiaddr;

use crate::connection::{ConnectionId, Direction};

/// Something that happened to the host's connections.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HostEvent {
    /// A connection was established (noise-authenticated, yamux running).
    Connected {
        /// The remote peer.
        peer: PeerId,
        /// The new connection.
        connection: ConnectionId,
        /// Who dialed.
        direction: Direction,
        /// The remote address.
        remote_addr: Multiaddr,
    },
    /// A connection closed.
    Disconnected {
        /// The remote peer.
        peer: PeerId,
        /// The connection that closed.
        connection: ConnectionId,
        /// Who had dialed.
        direction: Direction,
        /// The remote address.
        remote_addr: Multiaddr,
        /// How many connections to this peer remain.
        remaining: usize,
    },
    /// A peer answered identify.
    Identified {
        /// The remote peer.
        peer: PeerId,
        /// Its agent version.
        agent_version: String,
        /// The protocols it serves.
        protocols: Vec<String>,
        /// The addresses it listens on.
        listen_addrs: Vec<Multiaddr>,
    },
}
