//! The configuration of a [`crate::Kademlia`].

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use p2pnet_host::{AddrScope, Multiaddr, addr_scope};

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
    /// Server once the node has a confirmed public address, client otherwise. Until a NAT
    /// verdict is given ([`crate::Kademlia::set_public_address_confirmed`]), a listen address
    /// of the host that is neither private nor loopback counts as one. Re-evaluated on the
    /// driver's maintenance tick and at once when a verdict is given.
    Auto,
}

impl Mode {
    /// Whether a node in this mode serves the protocol, given the NAT verdict (`None`: none
    /// yet) and the host's listen addresses.
    pub fn serves(self, verdict: Option<bool>, listen_addrs: &[Multiaddr]) -> bool {
        match self {
            Mode::Server => true,
            Mode::Client => false,
            Mode::Auto => verdict.unwrap_or_else(|| {
                listen_addrs
                    .iter()
                    .any(|a| addr_scope(a) == AddrScope::Public)
            }),
        }
    }
}

/// Everything a [`crate::Kademlia`] can be configured with. Every field has a default.
#[derive(Clone)]
pub struct KadConfig {
    /// The protocol name. Default `/ipfs/kad/1.0.0`; a private network uses its own (e.g.
    /// `/p2pnet/<network>/kad/1.0.0`) so that it never mixes with the public DHT.
    pub protocol: String,
    /// Server, client or auto. Default server.
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
    /// How long a bucket may go without a lookup in its range before it is refreshed (a lookup
    /// of a random id in it), counted from the first [`crate::Kademlia::bootstrap`]. Default
    /// 10 min; `Duration::ZERO` turns refreshing off.
    pub refresh_interval: Duration,
    /// How often records we put are put again (here and at the `k` closest peers), so that they
    /// outlive [`StoreConfig::record_ttl`]. Default 22 h (below the 36 h lifetime);
    /// `Duration::ZERO` turns it off.
    pub record_republish_interval: Duration,
    /// How often keys we provide are announced again. Default 22 h (the spec's; provider records
    /// live 48 h); `Duration::ZERO` turns it off.
    pub provider_republish_interval: Duration,
    /// How often expired records and provider records are dropped. Default 60 s.
    pub sweep_interval: Duration,
    /// Where the routing table is saved (and loaded from at start), e.g. `<data-dir>/routes`.
    /// Default none.
    pub route_cache: Option<PathBuf>,
    /// How often the route cache is written when the table changed (it is also written at
    /// shutdown). Default 5 min.
    pub route_cache_interval: Duration,
    /// Most queries running at once (lookups, puts and announcements, ours and the node's own
    /// refreshes). Calls over it wait, first come first served, for one to end; refreshes and
    /// republications over it wait for the next tick. Default 32.
    pub max_concurrent_queries: usize,
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
            refresh_interval: Duration::from_secs(600),
            record_republish_interval: Duration::from_secs(22 * 3600),
            provider_republish_interval: Duration::from_secs(22 * 3600),
            sweep_interval: Duration::from_secs(60),
            route_cache: None,
            route_cache_interval: Duration::from_secs(300),
            max_concurrent_queries: 32,
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
            .field("refresh_interval", &self.refresh_interval)
            .field("record_republish_interval", &self.record_republish_interval)
            .field(
                "provider_republish_interval",
                &self.provider_republish_interval,
            )
            .field("sweep_interval", &self.sweep_interval)
            .field("route_cache", &self.route_cache)
            .field("route_cache_interval", &self.route_cache_interval)
            .field("max_concurrent_queries", &self.max_concurrent_queries)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_serves_with_a_public_address_or_a_verdict() {
        let lo: Multiaddr = "/ip4/127.0.0.1/tcp/1".parse().unwrap();
        let lan: Multiaddr = "/ip4/192.168.1.2/tcp/1".parse().unwrap();
        let public: Multiaddr = "/ip4/8.8.4.4/tcp/1".parse().unwrap();
        assert!(!Mode::Auto.serves(None, &[]));
        assert!(!Mode::Auto.serves(None, &[lo.clone(), lan.clone()]));
        assert!(Mode::Auto.serves(None, &[lan.clone(), public.clone()]));
        // A verdict overrides the listen addresses.
        assert!(!Mode::Auto.serves(Some(false), std::slice::from_ref(&public)));
        assert!(Mode::Auto.serves(Some(true), std::slice::from_ref(&lo)));
        assert!(Mode::Server.serves(Some(false), &[]));
        assert!(!Mode::Client.serves(Some(true), &[public]));
    }
}
