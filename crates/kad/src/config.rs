//! The configuration of a [`crate::Kademlia`].

use std::sync::Arc;
use std::time::Duration;

use crate::protocol::{DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PROTOCOL};
use crate::query::QueryConfig;
use crate::routing::RoutingConfig;
use crate::store::{AcceptAll, RecordValidator, StoreConfig};

/// Whether this node answers queries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Registers the kad protocol (so identify announces it), answers queries and is put in
    /// other nodes' tables.
    Server,
    /// Only asks: the protocol is not registered, so no one puts this node in a table.
    Client,
}

/// Everything a [`crate::Kademlia`] can be configured with. Every field has a default.
#[derive(Clone)]
pub struct KadConfig {
    /// The protocol name. Default `/ipfs/kad/1.0.0`; a private network uses its own (e.g.
    /// `/p2pnet/<network>/kad/1.0.0`) so that it never mixes with the public DHT.
    pub protocol: String,
    /// Server or client. Default server.
    pub mode: Mode,
    /// The routing table (k, replacement cache, diversity limits).
    pub routing: RoutingConfig,
    /// Queries (α, k, request and query timeouts).
    pub query: QueryConfig,
    /// Store bounds and lifetimes.
    pub store: StoreConfig,
    /// Which records are accepted. Default: any key and value within the bounds.
    pub validator: Arc<dyn RecordValidator>,
    /// Largest message read or written. Default 80 KiB (a 64 KiB value and the rest).
    pub max_message_size: usize,
    /// Most kad streams one peer may have open to us at once. Default 32.
    pub max_inbound_streams_per_peer: usize,
    /// Requests per second one peer may make on average. Default 50.
    pub inbound_requests_per_second: u32,
    /// Requests one peer may make in a burst. Default 200.
    pub inbound_request_burst: u32,
    /// How long an inbound stream may stay without a request before it is closed. Default 10 s.
    pub inbound_idle_timeout: Duration,
    /// Whether private and loopback addresses that answers carry are kept even when the peer
    /// that sent them reached us over another kind of network. Default false (as the host's
    /// `accept_private_learned_addrs`).
    pub accept_private_addrs: bool,
}

impl Default for KadConfig {
    fn default() -> Self {
        KadConfig {
            protocol: DEFAULT_PROTOCOL.to_owned(),
            mode: Mode::Server,
            routing: RoutingConfig::default(),
            query: QueryConfig::default(),
            store: StoreConfig::default(),
            validator: Arc::new(AcceptAll),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            max_inbound_streams_per_peer: 32,
            inbound_requests_per_second: 50,
            inbound_request_burst: 200,
            inbound_idle_timeout: Duration::from_secs(10),
            accept_private_addrs: false,
        }
    }
}

impl std::fmt::Debug for KadConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KadConfig")
            .field("protocol", &self.protocol)
            .field("mode", &self.mode)
            .field("routing", &self.routing)
            .field("query", &self.query)
            .field("store", &self.store)
            .field("max_message_size", &self.max_message_size)
            .field(
                "max_inbound_streams_per_peer",
                &self.max_inbound_streams_per_peer,
            )
            .field(
                "inbound_requests_per_second",
                &self.inbound_requests_per_second,
            )
            .field("inbound_request_burst", &self.inbound_request_burst)
            .field("inbound_idle_timeout", &self.inbound_idle_timeout)
            .field("accept_private_addrs", &self.accept_private_addrs)
            .finish_non_exhaustive()
    }
}
