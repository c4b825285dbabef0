//! [`MessagingConfig`]: every knob of the messaging layer, with documented defaults.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::codec::DEFAULT_MAX_MESSAGE_SIZE;
use crate::handshake::ProtocolVersion;

/// Configuration of a [`crate::Messenger`]; the `[messaging]` table of the node's TOML file.
///
/// Durations are written in milliseconds (`handshake_timeout_ms = 10000`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MessagingConfig {
    /// The network (chain) id; peers with another one are refused. Default `1`.
    pub chain_id: u32,
    /// Our protocol version; peers with another major version are refused. Default `1.0`.
    pub protocol_version: ProtocolVersion,
    /// The client version announced in the handshake. Default `"p2pnet/<crate version>"`.
    pub client_version: String,
    /// The largest message (payload, on the wire and decompressed) we send or accept.
    /// Default 16 MiB.
    pub max_message_size: usize,
    /// Whether we offer snappy compression in the handshake; a link compresses when both
    /// sides offer it. Default `true`.
    pub compression: bool,
    /// Payloads of at least this many bytes are compressed on compressing links. Default 1024.
    pub compress_threshold: usize,
    /// How long a handshake may take. Default 10 s.
    #[serde(with = "millis", rename = "handshake_timeout_ms")]
    pub handshake_timeout: Duration,
    /// How long one batched write may block before the peer is considered stuck and its session
    /// ends. Default 10 s.
    #[serde(with = "millis", rename = "write_timeout_ms")]
    pub write_timeout: Duration,
    /// Capacity (messages) of each peer's High queue. Default 2048.
    pub queue_high: usize,
    /// Capacity (messages) of each peer's Normal queue. Default 2048.
    pub queue_normal: usize,
    /// Capacity (messages) of each peer's Low queue. Default 2048.
    pub queue_low: usize,
    /// Cap on the bytes queued for one peer across its three queues. Default 64 MiB.
    pub max_queued_bytes: usize,
    /// A writer gathers queued frames into one buffer of up to this many bytes per write.
    /// Default 256 KiB.
    pub max_batch_bytes: usize,
    /// Bytes asked of the stream per read. Default 64 KiB.
    pub read_chunk: usize,
    /// How many message ids are remembered per peer for relay loop prevention. Default 8192.
    pub seen_capacity: usize,
    /// Messages per second a peer may send before its session is ended as a flood
    /// (0: unlimited). Default 2,000,000.
    pub max_inbound_rate: u32,
    /// Capacity of the session event channel. Default 1024.
    pub event_capacity: usize,
}

impl Default for MessagingConfig {
    fn default() -> Self {
        Self {
            chain_id: 1,
            protocol_version: ProtocolVersion::CURRENT,
            client_version: format!("p2pnet/{}", env!("CARGO_PKG_VERSION")),
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            compression: true,
            compress_threshold: 1024,
            handshake_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            queue_high: 2048,
            queue_normal: 2048,
            queue_low: 2048,
            max_queued_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 256 * 1024,
            read_chunk: 64 * 1024,
            seen_capacity: 8192,
            max_inbound_rate: 2_000_000,
            event_capacity: 1024,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_and_partial_tables() {
        let c = MessagingConfig::default();
        let text = toml::to_string(&c).unwrap();
        assert!(text.contains("handshake_timeout_ms = 10000"), "{text}");
        let back: MessagingConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let partial: MessagingConfig = toml::from_str("chain_id = 9\nqueue_high = 3").unwrap();
        assert_eq!(partial.chain_id, 9);
        assert_eq!(partial.queue_high, 3);
        assert_eq!(partial.queue_low, 2048);
        assert!(toml::from_str::<MessagingConfig>("nope = 1").is_err());
    }
}
