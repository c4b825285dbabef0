//! `NetConfig`: the node's whole configuration, loaded from TOML. Every field has a default,
//! documented where it is defined; `NetConfig::default_toml()` prints them all.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use p2pnet_dispatcher::DispatcherConfig;
use p2pnet_forward::ForwardConfig;
use p2pnet_host::{HostConfig, Limits, Multiaddr, PeerId, Protocol};
use p2pnet_messaging::MessagingConfig;
use serde::{Deserialize, Serialize};

use crate::NetError;

/// Every field with its default and a comment; tests keep it equal to `NetConfig::default()`.
const DEFAULT_TOML: &str = include_str!("default-config.toml");

/// The configuration of a [`crate::NetService`].
///
/// ```toml
/// identity_key = "identity.key"
/// bootstrap = ["/ip4/192.0.2.7/tcp/4001/p2p/12D3KooW…"]
/// metrics_addr = "127.0.0.1:9464"
///
/// [host]
/// listen_addrs = ["/ip4/0.0.0.0/tcp/4001"]
///
/// [messaging]
/// chain_id = 1
///
/// [[forward]]
/// protocol = "/x/ssh"
/// listen_addr = "/ip4/127.0.0.1/tcp/2222"
/// peer = "12D3KooW…"
///
/// [[listen]]
/// protocol = "/x/ssh"
/// target_addr = "/ip4/127.0.0.1/tcp/22"
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetConfig {
    /// The identity key file (libp2p protobuf encoding), created on first start. A relative
    /// path is taken relative to the directory the configuration is used from (the daemon's data
    /// directory). `None` gives a fresh identity each start. Default `None`.
    pub identity_key: Option<PathBuf>,
    /// Peers dialed at start and redialed when lost: `/ip4|ip6|dns|dns4|dns6/…/tcp/…/p2p/<id>`.
    /// Default empty.
    pub bootstrap: Vec<String>,
    /// Where Prometheus metrics are served (text format, `GET /metrics`), e.g.
    /// `127.0.0.1:9464`. Must be a loopback address unless `metrics_allow_remote`. Default
    /// `None` (off).
    pub metrics_addr: Option<String>,
    /// Allow `metrics_addr` beyond loopback (the metrics tell peers, tunnels and traffic to
    /// whoever can reach them). Default false.
    pub metrics_allow_remote: bool,
    /// The host: listen addresses, limits, timeouts.
    pub host: HostSection,
    /// Keeping peers: watermarks and redial backoff.
    pub peers: PeersSection,
    /// The message dispatcher.
    pub dispatcher: DispatcherConfig,
    /// Message sessions (the chain id lives here).
    pub messaging: MessagingConfig,
    /// Forwarding settings (`allow_custom_protocols`, timeouts, buffers, stream caps).
    pub forwarding: ForwardConfig,
    /// Tunnels `forward`ed at start: local listen address → peer and protocol.
    pub forward: Vec<ForwardTunnel>,
    /// Tunnels `listen`ed at start: protocol → local target.
    pub listen: Vec<ListenTunnel>,
    /// Discovery: the Kademlia DHT (peer routing by id, records, providers).
    pub discovery: DiscoverySection,
}

/// `[discovery]`: the Kademlia DHT (`p2pnet-kad`) that finds peers by id and keeps the routing
/// table the peer keeper fills connections from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DiscoverySection {
    /// Whether the node runs the DHT. Default true.
    pub enabled: bool,
    /// The protocol. Default `/ipfs/kad/1.0.0` (the public DHT's); a private network uses its
    /// own, e.g. `/p2pnet/<network>/kad/1.0.0`, and never mixes with the public one.
    pub protocol: String,
    /// `server` (answers queries, is put in others' tables), `client` (only asks) or `auto`
    /// (server once the node has a public address: a confirmed one, or until a NAT verdict
    /// exists a listen address that is not private). Default `server`.
    pub mode: String,
    /// Peers per bucket (k). Default 20.
    pub bucket_size: usize,
    /// Requests in flight per lookup (α). Default 3.
    pub alpha: usize,
    /// Time one request may take, milliseconds. Default 10,000.
    pub request_timeout_ms: u64,
    /// Time a whole lookup may take, milliseconds. Default 60,000.
    pub query_timeout_ms: u64,
    /// Most peers of one IPv4 /24 (IPv6 /48) in a bucket. Default 2.
    pub max_peers_per_bucket_group: usize,
    /// Most peers of one IPv4 /16 (IPv6 /32) in the table. Default 10.
    pub max_peers_per_table_group: usize,
    /// Records kept for others. Default 1,024.
    pub max_records: usize,
    /// Largest record value, bytes. Default 65,536.
    pub max_value_size: usize,
    /// Providers kept per key. Default 20.
    pub max_providers_per_key: usize,
    /// Each bucket not queried this long is refreshed with a lookup of a random id in it,
    /// milliseconds; 0 turns refreshing off. Default 600,000.
    pub refresh_interval_ms: u64,
    /// Lookups running at once; more wait their turn. Default 32.
    pub max_concurrent_queries: usize,
    /// Lookups go along α disjoint paths (S/Kademlia), harder for one operator to steer.
    /// Default false.
    pub disjoint_paths: bool,
    /// Where the routing table is saved (every few minutes when it changed, and at stop) and
    /// loaded from at start, so a restarted node does not depend on its bootstrap list. A
    /// relative path is taken relative to the data directory. Default unset (the daemon uses
    /// `routes`).
    pub route_cache: Option<PathBuf>,
}

impl Default for DiscoverySection {
    fn default() -> Self {
        let k = p2pnet_kad::KadConfig::default();
        Self {
            enabled: true,
            protocol: k.protocol.clone(),
            mode: "server".into(),
            bucket_size: k.routing.k,
            alpha: k.query.alpha,
            request_timeout_ms: k.query.request_timeout.as_millis() as u64,
            query_timeout_ms: k.query.timeout.as_millis() as u64,
            max_peers_per_bucket_group: k.routing.max_per_bucket_group,
            max_peers_per_table_group: k.routing.max_per_table_group,
            max_records: k.store.max_records,
            max_value_size: k.store.max_value_size,
            max_providers_per_key: k.store.max_providers_per_key,
            refresh_interval_ms: k.refresh_interval.as_millis() as u64,
            max_concurrent_queries: k.max_concurrent_queries,
            disjoint_paths: k.query.disjoint_paths,
            route_cache: None,
        }
    }
}

impl DiscoverySection {
    /// The Kademlia configuration this describes.
    pub fn kad_config(&self) -> p2pnet_kad::KadConfig {
        let mut k = p2pnet_kad::KadConfig {
            protocol: self.protocol.clone(),
            mode: match self.mode.as_str() {
                "client" => p2pnet_kad::Mode::Client,
                "auto" => p2pnet_kad::Mode::Auto,
                _ => p2pnet_kad::Mode::Server,
            },
            refresh_interval: ms(self.refresh_interval_ms),
            max_concurrent_queries: self.max_concurrent_queries,
            route_cache: self.route_cache.clone(),
            ..p2pnet_kad::KadConfig::default()
        };
        k.routing.k = self.bucket_size;
        k.routing.max_per_bucket_group = self.max_peers_per_bucket_group;
        k.routing.max_per_table_group = self.max_peers_per_table_group;
        k.query.k = self.bucket_size;
        k.query.alpha = self.alpha;
        k.query.request_timeout = ms(self.request_timeout_ms);
        k.query.timeout = ms(self.query_timeout_ms);
        k.store.max_records = self.max_records;
        k.store.max_value_size = self.max_value_size;
        k.store.max_providers_per_key = self.max_providers_per_key;
        k.query.disjoint_paths = self.disjoint_paths;
        k
    }
}

/// `[host]`: listen addresses, limits and timeouts of the libp2p host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HostSection {
    /// Addresses to listen on: `/ip4|ip6/<ip>/tcp/<port>` and `/ip4|ip6/<ip>/udp/<port>/quic-v1`.
    /// Default `["/ip4/0.0.0.0/tcp/4001", "/ip4/0.0.0.0/udp/4001/quic-v1"]`.
    pub listen_addrs: Vec<String>,
    /// Established connections in total. Default 1,024.
    pub max_connections: usize,
    /// Connections to one peer. Default 4.
    pub max_connections_per_peer: usize,
    /// Inbound handshakes in progress. Default 256.
    pub max_pending_incoming: usize,
    /// Inbound streams per connection. Default 1,024.
    pub max_inbound_streams_per_connection: usize,
    /// Outbound streams per connection. Default 1,024.
    pub max_outbound_streams_per_connection: usize,
    /// Dial timeout (TCP + noise + yamux), milliseconds. Default 10,000.
    pub dial_timeout_ms: u64,
    /// Inbound handshake timeout, milliseconds. Default 10,000.
    pub handshake_timeout_ms: u64,
    /// Protocol negotiation timeout, milliseconds. Default 10,000.
    pub negotiation_timeout_ms: u64,
    /// Close connections idle this long, milliseconds; 0 keeps them. Default 300,000.
    pub idle_timeout_ms: u64,
    /// Keep private/loopback addresses other peers announce. Default false.
    pub accept_private_learned_addrs: bool,
    /// `[host.quic]`: the QUIC transport.
    pub quic: QuicSection,
}

/// `[host.quic]`: the QUIC transport. Its stream limits are the `[host]` ones (inbound streams
/// per connection is the stream credit a peer gets), so the transports cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuicSection {
    /// Whether QUIC addresses may be listened on and dialed. Default true.
    pub enabled: bool,
    /// Receive window of one stream, bytes. Default 10,000,000.
    pub max_stream_window: u32,
    /// Receive window of a whole connection (the most it buffers), bytes. Default 15,000,000.
    pub max_connection_window: u32,
    /// A connection that hears nothing from its peer this long is lost, milliseconds.
    /// Default 10,000.
    pub idle_timeout_ms: u64,
    /// Keep-alive interval when nothing else is sent, milliseconds. Default 5,000.
    pub keep_alive_ms: u64,
}

impl Default for QuicSection {
    fn default() -> Self {
        let q = p2pnet_host::QuicConfig::default();
        Self {
            enabled: q.enabled,
            max_stream_window: q.max_stream_window,
            max_connection_window: q.max_connection_window,
            idle_timeout_ms: q.idle_timeout.as_millis() as u64,
            keep_alive_ms: q.keep_alive.as_millis() as u64,
        }
    }
}

impl Default for HostSection {
    fn default() -> Self {
        let host = HostConfig::default();
        let limits = Limits::default();
        Self {
            listen_addrs: vec![
                "/ip4/0.0.0.0/tcp/4001".into(),
                "/ip4/0.0.0.0/udp/4001/quic-v1".into(),
            ],
            max_connections: limits.max_connections,
            max_connections_per_peer: limits.max_connections_per_peer,
            max_pending_incoming: limits.max_pending_incoming,
            max_inbound_streams_per_connection: limits.max_inbound_streams_per_connection,
            max_outbound_streams_per_connection: limits.max_outbound_streams_per_connection,
            dial_timeout_ms: host.dial_timeout.as_millis() as u64,
            handshake_timeout_ms: host.handshake_timeout.as_millis() as u64,
            negotiation_timeout_ms: host.negotiation_timeout.as_millis() as u64,
            idle_timeout_ms: host.idle_timeout.map_or(0, |d| d.as_millis() as u64),
            accept_private_learned_addrs: host.accept_private_learned_addrs,
            quic: QuicSection::default(),
        }
    }
}

/// `[peers]`: how many peers to keep and how to redial them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PeersSection {
    /// Below this many connected peers, lost bootstrap and recently useful peers are redialed.
    /// Default 8.
    pub low_watermark: usize,
    /// Above this many, the surplus (never bootstrap or protected peers) is disconnected.
    /// Default 64.
    pub high_watermark: usize,
    /// How often the watermarks are checked, milliseconds. Default 5,000.
    pub check_interval_ms: u64,
    /// First redial delay, milliseconds; doubles per failure, with ±20 % jitter. Default 1,000.
    pub min_backoff_ms: u64,
    /// Longest redial delay, milliseconds. Default 300,000.
    pub max_backoff_ms: u64,
}

impl Default for PeersSection {
    fn default() -> Self {
        Self {
            low_watermark: 8,
            high_watermark: 64,
            check_interval_ms: 5_000,
            min_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

/// A `[[forward]]` tunnel: connections to `listen_addr` are bridged to `peer` on `protocol`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForwardTunnel {
    /// The protocol (under `/x/` unless `forwarding.allow_custom_protocols`).
    pub protocol: String,
    /// The local address to accept connections on (`/ip4/…/tcp/…` or `/unix/…`).
    pub listen_addr: String,
    /// The peer: a peer id, or a multiaddr ending in `/p2p/<id>` (added to the peer store).
    pub peer: String,
}

/// A `[[listen]]` tunnel: streams on `protocol` are bridged to `target_addr`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenTunnel {
    /// The protocol (under `/x/` unless `forwarding.allow_custom_protocols`).
    pub protocol: String,
    /// The local target (`/ip4/…/tcp/…` or `/unix/…`).
    pub target_addr: String,
    /// Write `<peer id>\n` to the target before any data. Default false.
    #[serde(default)]
    pub report_peer_id: bool,
    /// Only these peers may use the tunnel; empty means everyone. Default empty.
    #[serde(default)]
    pub allow: Vec<String>,
}

fn invalid(field: impl Into<String>, value: impl Into<String>, reason: impl ToString) -> NetError {
    NetError::Config {
        field: field.into(),
        value: value.into(),
        reason: reason.to_string(),
    }
}

/// Parses a multiaddr from the configuration, naming the field on error.
pub(crate) fn parse_addr(field: &str, value: &str) -> Result<Multiaddr, NetError> {
    value
        .parse::<Multiaddr>()
        .map_err(|e| invalid(field, value, e))
}

/// A peer id, or a multiaddr ending in `/p2p/<id>`: the peer and the address, if any.
pub fn parse_peer(field: &str, value: &str) -> Result<(PeerId, Option<Multiaddr>), NetError> {
    if let Ok(peer) = value.parse::<PeerId>() {
        return Ok((peer, None));
    }
    let addr = parse_addr(field, value)?;
    match p2pnet_host::without_p2p(&addr) {
        (transport, Some(peer)) => Ok((peer, Some(transport))),
        _ => Err(invalid(
            field,
            value,
            "expected a peer id or an address ending in /p2p/<id>",
        )),
    }
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl NetConfig {
    /// Parses TOML; unknown fields and invalid values are errors naming the field.
    pub fn from_toml_str(text: &str) -> Result<NetConfig, NetError> {
        let config: NetConfig = toml::from_str(text).map_err(|e| NetError::ConfigFile {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Loads and validates a TOML file.
    pub fn load(path: &Path) -> Result<NetConfig, NetError> {
        let text = std::fs::read_to_string(path).map_err(|e| NetError::ConfigFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
        Self::from_toml_str(&text).map_err(|e| match e {
            NetError::ConfigFile { reason, .. } => NetError::ConfigFile {
                path: path.to_owned(),
                reason,
            },
            other => other,
        })
    }

    /// The configuration as TOML.
    pub fn to_toml(&self) -> String {
        // Serializing our own plain structs cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// The whole default configuration as TOML, each field with a comment saying what it does;
    /// optional fields that are unset by default appear commented out.
    pub fn default_toml() -> String {
        DEFAULT_TOML.to_owned()
    }

    /// Checks every value that a type does not already check.
    pub fn validate(&self) -> Result<(), NetError> {
        for (i, a) in self.host.listen_addrs.iter().enumerate() {
            let addr = parse_addr(&format!("host.listen_addrs[{i}]"), a)?;
            let parts: Vec<Protocol<'_>> = addr.iter().collect();
            let ip = matches!(parts.first(), Some(Protocol::Ip4(_) | Protocol::Ip6(_)));
            let tcp = ip && parts.len() == 2 && matches!(parts[1], Protocol::Tcp(_));
            let quic = ip
                && parts.len() == 3
                && matches!(parts[1], Protocol::Udp(_))
                && matches!(parts[2], Protocol::QuicV1);
            if !tcp && !quic {
                return Err(invalid(
                    format!("host.listen_addrs[{i}]"),
                    a,
                    "expected /ip4|ip6/<ip>/tcp/<port> or /ip4|ip6/<ip>/udp/<port>/quic-v1",
                ));
            }
            if quic && !self.host.quic.enabled {
                return Err(invalid(
                    format!("host.listen_addrs[{i}]"),
                    a,
                    "a QUIC address, but host.quic.enabled is false",
                ));
            }
        }
        let d = &self.discovery;
        if !matches!(d.mode.as_str(), "server" | "client") {
            return Err(invalid(
                "discovery.mode",
                &d.mode,
                "expected server or client",
            ));
        }
        if let Err(e) = p2pnet_host::validate_protocol(&d.protocol) {
            return Err(invalid("discovery.protocol", &d.protocol, e));
        }
        for (field, v) in [
            ("discovery.bucket_size", d.bucket_size),
            ("discovery.alpha", d.alpha),
            (
                "discovery.max_peers_per_bucket_group",
                d.max_peers_per_bucket_group,
            ),
            (
                "discovery.max_peers_per_table_group",
                d.max_peers_per_table_group,
            ),
            ("discovery.max_value_size", d.max_value_size),
            ("discovery.max_concurrent_queries", d.max_concurrent_queries),
        ] {
            if v == 0 {
                return Err(invalid(field, v.to_string(), "must be above 0"));
            }
        }
        if d.request_timeout_ms == 0 || d.query_timeout_ms < d.request_timeout_ms {
            return Err(invalid(
                "discovery.query_timeout_ms",
                d.query_timeout_ms.to_string(),
                "must be at least discovery.request_timeout_ms (above 0)",
            ));
        }
        let q = &self.host.quic;
        if q.idle_timeout_ms == 0 || q.keep_alive_ms == 0 || q.keep_alive_ms >= q.idle_timeout_ms {
            return Err(invalid(
                "host.quic.keep_alive_ms",
                q.keep_alive_ms.to_string(),
                "must be above 0 and below host.quic.idle_timeout_ms (above 0)",
            ));
        }
        if q.max_stream_window == 0 || q.max_connection_window < q.max_stream_window {
            return Err(invalid(
                "host.quic.max_connection_window",
                q.max_connection_window.to_string(),
                "must be at least host.quic.max_stream_window (above 0)",
            ));
        }
        for (i, b) in self.bootstrap.iter().enumerate() {
            let field = format!("bootstrap[{i}]");
            let (_, addr) = parse_peer(&field, b)?;
            if addr.is_none() {
                return Err(invalid(
                    field,
                    b,
                    "a bootstrap peer needs an address: /ip4/…/tcp/…/p2p/<id>",
                ));
            }
        }
        if let Some(m) = &self.metrics_addr {
            let addr = m
                .parse::<SocketAddr>()
                .map_err(|e| invalid("metrics_addr", m, e))?;
            if !addr.ip().is_loopback() && !self.metrics_allow_remote {
                return Err(invalid(
                    "metrics_addr",
                    m,
                    "not a loopback address; set metrics_allow_remote = true to serve metrics \
                     beyond this machine",
                ));
            }
        }
        if self.peers.low_watermark > self.peers.high_watermark {
            return Err(invalid(
                "peers.low_watermark",
                self.peers.low_watermark.to_string(),
                "must not exceed peers.high_watermark",
            ));
        }
        if self.peers.min_backoff_ms == 0 || self.peers.min_backoff_ms > self.peers.max_backoff_ms {
            return Err(invalid(
                "peers.min_backoff_ms",
                self.peers.min_backoff_ms.to_string(),
                "must be > 0 and at most peers.max_backoff_ms",
            ));
        }
        for (name, v) in [
            ("host.max_connections", self.host.max_connections),
            (
                "host.max_connections_per_peer",
                self.host.max_connections_per_peer,
            ),
            (
                "host.max_inbound_streams_per_connection",
                self.host.max_inbound_streams_per_connection,
            ),
            (
                "host.max_outbound_streams_per_connection",
                self.host.max_outbound_streams_per_connection,
            ),
        ] {
            if v == 0 {
                return Err(invalid(name, "0", "must be at least 1"));
            }
        }
        for (i, t) in self.forward.iter().enumerate() {
            self.check_tunnel_protocol(&format!("forward[{i}].protocol"), &t.protocol)?;
            parse_addr(&format!("forward[{i}].listen_addr"), &t.listen_addr)?;
            parse_peer(&format!("forward[{i}].peer"), &t.peer)?;
        }
        for (i, t) in self.listen.iter().enumerate() {
            self.check_tunnel_protocol(&format!("listen[{i}].protocol"), &t.protocol)?;
            parse_addr(&format!("listen[{i}].target_addr"), &t.target_addr)?;
            for (j, p) in t.allow.iter().enumerate() {
                p.parse::<PeerId>()
                    .map_err(|e| invalid(format!("listen[{i}].allow[{j}]"), p, e))?;
            }
        }
        self.dispatcher.validate()?;
        Ok(())
    }

    /// A tunnel protocol as the forwarder will check it (`p2pnet_forward::ForwardConfig::check_protocol`).
    fn check_tunnel_protocol(&self, field: &str, protocol: &str) -> Result<(), NetError> {
        self.forwarding
            .check_protocol(protocol)
            .map_err(|e| invalid(field, protocol, e))
    }

    /// The host configuration this describes.
    pub fn host_config(&self) -> HostConfig {
        let h = &self.host;
        HostConfig {
            limits: Limits {
                max_connections: h.max_connections,
                max_connections_per_peer: h.max_connections_per_peer,
                max_pending_incoming: h.max_pending_incoming,
                max_inbound_streams_per_connection: h.max_inbound_streams_per_connection,
                max_outbound_streams_per_connection: h.max_outbound_streams_per_connection,
            },
            dial_timeout: ms(h.dial_timeout_ms),
            handshake_timeout: ms(h.handshake_timeout_ms),
            negotiation_timeout: ms(h.negotiation_timeout_ms),
            idle_timeout: (h.idle_timeout_ms > 0).then(|| ms(h.idle_timeout_ms)),
            accept_private_learned_addrs: h.accept_private_learned_addrs,
            quic: p2pnet_host::QuicConfig {
                enabled: h.quic.enabled,
                max_stream_window: h.quic.max_stream_window,
                max_connection_window: h.quic.max_connection_window,
                idle_timeout: ms(h.quic.idle_timeout_ms),
                keep_alive: ms(h.quic.keep_alive_ms),
            },
            ..HostConfig::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The commented default file says exactly what the code does: it parses to the defaults,
    /// and names every field the defaults serialise to (or shows it commented out when unset).
    #[test]
    fn the_commented_default_file_is_the_defaults() {
        let text = NetConfig::default_toml();
        assert_eq!(
            NetConfig::from_toml_str(&text).unwrap(),
            NetConfig::default()
        );
        let mut full = NetConfig {
            identity_key: Some("identity.key".into()),
            metrics_addr: Some("127.0.0.1:9464".into()),
            ..NetConfig::default()
        };
        full.forwarding.idle_timeout = Some(Duration::from_secs(600));
        full.forward.push(ForwardTunnel {
            protocol: "/x/ssh".into(),
            listen_addr: "/ip4/127.0.0.1/tcp/2222".into(),
            peer: "12D3KooWQpL3vbBrkQ3KvgSgYwhrZUXhBu3k4bVDcRJN1S4DP7gk".into(),
        });
        full.listen.push(ListenTunnel {
            protocol: "/x/ssh".into(),
            target_addr: "/ip4/127.0.0.1/tcp/22".into(),
            report_peer_id: false,
            allow: vec![],
        });
        let uncommented: String = text
            .lines()
            .map(|l| l.trim_start_matches("# "))
            .collect::<Vec<_>>()
            .join("\n");
        for line in full.to_toml().lines() {
            let Some((key, _)) = line.split_once(" = ") else {
                continue;
            };
            assert!(
                uncommented.contains(&format!("{key} = ")),
                "field {key:?} missing from default-config.toml"
            );
        }
    }

    #[test]
    fn default_round_trips_through_toml() {
        let text = NetConfig::default().to_toml();
        assert_eq!(
            NetConfig::from_toml_str(&text).unwrap(),
            NetConfig::default()
        );
    }

    #[test]
    fn quic_listen_addresses_and_the_quic_section_are_checked() {
        let ok = NetConfig::from_toml_str(
            "[host]\nlisten_addrs = [\"/ip6/::/udp/0/quic-v1\", \"/ip4/127.0.0.1/tcp/0\"]",
        )
        .unwrap();
        assert_eq!(ok.host.listen_addrs.len(), 2);
        for bad in [
            "/ip4/127.0.0.1/udp/1",
            "/ip4/127.0.0.1/udp/1/quic",
            "/ip4/127.0.0.1/udp/1/quic-v1/webtransport",
        ] {
            let err = NetConfig::from_toml_str(&format!("[host]\nlisten_addrs = [\"{bad}\"]"))
                .unwrap_err();
            assert!(
                matches!(err, NetError::Config { ref field, .. } if field == "host.listen_addrs[0]"),
                "{bad}: {err}"
            );
        }
        let err = NetConfig::from_toml_str(
            "[host]\nlisten_addrs = [\"/ip4/127.0.0.1/udp/0/quic-v1\"]\n[host.quic]\nenabled = false",
        )
        .unwrap_err();
        assert!(err.to_string().contains("host.quic.enabled"), "{err}");
        let err = NetConfig::from_toml_str("[host.quic]\nkeep_alive_ms = 20000").unwrap_err();
        assert!(
            matches!(err, NetError::Config { ref field, .. } if field == "host.quic.keep_alive_ms"),
            "{err}"
        );
        let c = NetConfig::from_toml_str("[host.quic]\nmax_stream_window = 1000\nmax_connection_window = 5000\nidle_timeout_ms = 3000\nkeep_alive_ms = 1000").unwrap();
        let q = c.host_config().quic;
        assert_eq!((q.max_stream_window, q.max_connection_window), (1000, 5000));
        assert_eq!(q.idle_timeout, std::time::Duration::from_secs(3));
    }

    #[test]
    fn invalid_values_name_their_field() {
        let err =
            NetConfig::from_toml_str("[host]\nlisten_addrs = [\"not an address\"]").unwrap_err();
        match err {
            NetError::Config { field, value, .. } => {
                assert_eq!(field, "host.listen_addrs[0]");
                assert_eq!(value, "not an address");
            }
            other => panic!("{other:?}"),
        }
        let err = NetConfig::from_toml_str("bootstrap = [\"/ip4/1.2.3.4/tcp/1\"]").unwrap_err();
        assert!(
            matches!(err, NetError::Config { ref field, .. } if field == "bootstrap[0]"),
            "{err}"
        );
        let err = NetConfig::from_toml_str("metrics_addr = \"nowhere\"").unwrap_err();
        assert!(
            matches!(err, NetError::Config { ref field, .. } if field == "metrics_addr"),
            "{err}"
        );
        let err = NetConfig::from_toml_str("metrics_addr = \"0.0.0.0:9464\"").unwrap_err();
        assert!(
            matches!(err, NetError::Config { ref field, ref reason, .. }
                if field == "metrics_addr" && reason.contains("metrics_allow_remote")),
            "{err}"
        );
        let allowed = NetConfig::from_toml_str(
            "metrics_addr = \"0.0.0.0:9464\"\nmetrics_allow_remote = true",
        )
        .unwrap();
        assert!(allowed.metrics_allow_remote);
        assert!(NetConfig::from_toml_str("metrics_addr = \"[::1]:9464\"").is_ok());
        let err = NetConfig::from_toml_str("[peers]\nlow_watermark = 10\nhigh_watermark = 5")
            .unwrap_err();
        assert!(
            matches!(err, NetError::Config { ref field, .. } if field == "peers.low_watermark"),
            "{err}"
        );
        let err = NetConfig::from_toml_str("unknown_field = 1").unwrap_err();
        assert!(matches!(err, NetError::ConfigFile { .. }), "{err}");
    }

    #[test]
    fn tunnels_parse() {
        let peer = PeerId::random();
        let text = format!(
            "[[forward]]\nprotocol = \"/x/ssh\"\nlisten_addr = \"/ip4/127.0.0.1/tcp/2222\"\npeer = \"{peer}\"\n\n[[listen]]\nprotocol = \"/x/ssh\"\ntarget_addr = \"/ip4/127.0.0.1/tcp/22\"\nreport_peer_id = true\nallow = [\"{peer}\"]\n"
        );
        let config = NetConfig::from_toml_str(&text).unwrap();
        assert_eq!(config.forward.len(), 1);
        assert_eq!(config.listen[0].allow, vec![peer.to_string()]);
        assert!(config.listen[0].report_peer_id);
    }

    /// Tunnel protocols are checked as the forwarder checks them, naming the field.
    #[test]
    fn tunnel_protocols_are_checked() {
        let peer = PeerId::random();
        let forward = |p: &str| {
            format!(
                "[[forward]]\nprotocol = \"{p}\"\nlisten_addr = \"/ip4/127.0.0.1/tcp/2222\"\npeer = \"{peer}\"\n"
            )
        };
        let listen = |p: &str| {
            format!("[[listen]]\nprotocol = \"{p}\"\ntarget_addr = \"/ip4/127.0.0.1/tcp/22\"\n")
        };
        for (text, field) in [
            (forward("x/ssh"), "forward[0].protocol"),
            (forward("/ssh"), "forward[0].protocol"),
            (listen("/x/a\\u0000b"), "listen[0].protocol"),
            (listen("/ipfs/ping/1.0.0"), "listen[0].protocol"),
        ] {
            let err = NetConfig::from_toml_str(&text).unwrap_err();
            assert!(
                matches!(err, NetError::Config { field: ref f, .. } if f == field),
                "{text}: {err}"
            );
        }
        let custom = format!(
            "[forwarding]\nallow_custom_protocols = true\n\n{}",
            listen("/ssh")
        );
        assert!(NetConfig::from_toml_str(&custom).is_ok());
    }
}
