//! Host configuration and limits.

use std::time::Duration;

/// Resource limits. Anything over a limit is refused, counted in [`crate::HostMetrics`] and
/// logged; the host keeps running.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Established connections in total, both directions. Default 1,024.
    pub max_connections: usize,
    /// Established connections to one peer. Default 4 (room for simultaneous dials).
    pub max_connections_per_peer: usize,
    /// Inbound connections still in the TCP/noise/yamux handshake. Default 256.
    pub max_pending_incoming: usize,
    /// Open inbound streams on one connection. Default 1,024.
    pub max_inbound_streams_per_connection: usize,
    /// Open outbound streams on one connection. Default 1,024.
    pub max_outbound_streams_per_connection: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            max_connections_per_peer: 4,
            max_pending_incoming: 256,
            max_inbound_streams_per_connection: 1024,
            max_outbound_streams_per_connection: 1024,
        }
    }
}

/// Configuration of a [`crate::Host`]. Every field has a default.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Resource limits.
    pub limits: Limits,
    /// Time allowed for a dial: TCP connect, noise and yamux, or the QUIC handshake. Default 10 s.
    pub dial_timeout: Duration,
    /// Time allowed for an inbound connection's noise and yamux handshake. Default 10 s.
    pub handshake_timeout: Duration,
    /// Time allowed for multistream-select on a new stream. Default 10 s.
    pub negotiation_timeout: Duration,
    /// A connection with no open stream for this long is closed, unless its peer is protected.
    /// `None` keeps idle connections forever. Default 5 minutes.
    pub idle_timeout: Option<Duration>,
    /// The agent version announced by identify. Default `p2pnet/<version>`.
    pub agent_version: String,
    /// Whether to request identify from every new connection. Default true.
    pub identify: bool,
    /// The largest yamux data frame we send. Larger frames mean fewer frames, wake-ups and
    /// headers per byte; smaller ones interleave streams more finely. Default 64 KiB (yamux's
    /// own default is 16 KiB; see docs/benchmarks.md).
    pub yamux_split_send_size: usize,
    /// Whether addresses in private or loopback ranges that *other* peers announce (identify)
    /// are kept for dialing. When false (the default) such an address is kept only if it is in
    /// the same scope as the connection it came over (a peer we reach over loopback may announce
    /// loopback addresses), so a node never starts dialing private ranges it was told about.
    pub accept_private_learned_addrs: bool,
    /// The QUIC transport (`/udp/<port>/quic-v1`). Its stream limits are [`Limits`]'.
    pub quic: QuicConfig,
}

/// Configuration of the QUIC transport. Stream limits are not here: a QUIC connection takes the
/// host's [`Limits`] (inbound ones as the peer's stream credit, outbound ones as our own cap), so
/// the two transports cannot disagree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicConfig {
    /// Whether QUIC addresses may be listened on and dialed. Default true.
    pub enabled: bool,
    /// Bytes a peer may send on one stream before we read them (the stream's receive window).
    /// Default 10 MB (libp2p-quic's figure).
    pub max_stream_window: u32,
    /// Bytes a peer may send on all streams of a connection before we read them: the most one
    /// connection buffers. Default 15 MB.
    pub max_connection_window: u32,
    /// A connection that hears nothing from its peer for this long is lost (QUIC's idle
    /// timeout; the host's own `idle_timeout`, for connections without streams, is separate).
    /// Default 10 s.
    pub idle_timeout: Duration,
    /// How often to send a keep-alive when nothing else is sent (below the peer's idle timeout).
    /// Default 5 s.
    pub keep_alive: Duration,
}

impl Default for QuicConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            max_stream_window: 10_000_000,
            max_connection_window: 15_000_000,
            idle_timeout: Duration::from_secs(10),
            keep_alive: Duration::from_secs(5),
        }
    }
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            limits: Limits::default(),
            dial_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            negotiation_timeout: Duration::from_secs(10),
            idle_timeout: Some(Duration::from_secs(300)),
            agent_version: concat!("p2pnet/", env!("CARGO_PKG_VERSION")).to_owned(),
            identify: true,
            yamux_split_send_size: 64 * 1024,
            accept_private_learned_addrs: false,
            quic: QuicConfig::default(),
        }
    }
}
