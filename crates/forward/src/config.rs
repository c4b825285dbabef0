//! [`ForwardConfig`]: the forwarder's settings, nestable as a `[forward]` TOML table.

use std::time::Duration;

use p2pnet_host::{HostError, protocol_names, validate_protocol};
use serde::{Deserialize, Serialize};

use crate::ForwardError;

/// The smallest bridge buffer accepted; smaller values are raised to it.
pub(crate) const MIN_BUFFER_SIZE: usize = 1024;
/// The largest bridge buffer accepted; larger values are lowered to it.
pub(crate) const MAX_BUFFER_SIZE: usize = 16 << 20;

/// Settings of a [`crate::Forwarder`]. Every field has a documented default; durations are
/// written in seconds (fractions allowed) in TOML and JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForwardConfig {
    /// Allow protocol names that do not start with `/x/`. Default `false` (kubo's rule, so
    /// tunnels cannot shadow real protocols). Built-in protocols can never be taken over.
    pub allow_custom_protocols: bool,
    /// Time allowed to open the libp2p stream for a forwarded connection (dial, handshake and
    /// negotiation), and to connect to the local target of a remote listener. Default 30 s.
    #[serde(with = "secs")]
    pub dial_timeout: Duration,
    /// Size of each of the two copy buffers of a bridged stream, in bytes. Default 64 KiB;
    /// clamped to 1 KiB ..= 16 MiB.
    pub buffer_size: usize,
    /// A bridged stream that moves no byte in either direction for this long is reset on both
    /// sides. Default `None`: no idle timeout.
    #[serde(with = "opt_secs", skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<Duration>,
    /// Bridged streams open at once, over all listeners; connections over the limit are refused
    /// (TCP reset, stream reset). Default 4,096.
    pub max_streams: usize,
    /// Of [`Self::max_streams`], how many are kept for connections to local `forward`
    /// listeners: streams from peers (through `listen` listeners) are refused once
    /// `max_streams - reserved_local_streams` of them are open, so peers cannot lock out local
    /// clients. Default 512.
    pub reserved_local_streams: usize,
    /// Streams one remote peer may have open at once through `listen` listeners, all of them
    /// together; its streams over the cap are reset. Default 512.
    pub max_streams_per_peer: usize,
    /// Streams one listener may have open at once: a `forward` listener's connections or a
    /// `listen` listener's streams. Default 2,048.
    pub max_streams_per_listener: usize,
}

impl Default for ForwardConfig {
    fn default() -> Self {
        Self {
            allow_custom_protocols: false,
            dial_timeout: Duration::from_secs(30),
            buffer_size: 64 * 1024,
            idle_timeout: None,
            max_streams: 4096,
            reserved_local_streams: 512,
            max_streams_per_peer: 512,
            max_streams_per_listener: 2048,
        }
    }
}

impl ForwardConfig {
    /// Checks a tunnel protocol name as [`crate::Forwarder::forward`] and
    /// [`crate::Forwarder::listen`] do: first the host's rule for every protocol name
    /// ([`p2pnet_host::validate_protocol`]), then this crate's: never a built-in protocol of the
    /// host, and under `/x/` unless [`ForwardConfig::allow_custom_protocols`].
    pub fn check_protocol(&self, protocol: &str) -> Result<(), ForwardError> {
        validate_protocol(protocol).map_err(|e| match e {
            HostError::InvalidProtocol { protocol, reason } => {
                ForwardError::InvalidProtocol { protocol, reason }
            }
            other => ForwardError::Host(other),
        })?;
        if protocol == protocol_names::PING || protocol == protocol_names::IDENTIFY {
            return Err(ForwardError::ReservedProtocol(protocol.to_owned()));
        }
        if !self.allow_custom_protocols && !protocol.starts_with("/x/") {
            return Err(ForwardError::InvalidProtocol {
                protocol: protocol.to_owned(),
                reason: "must start with /x/ unless custom protocols are allowed",
            });
        }
        Ok(())
    }

    pub(crate) fn effective_buffer_size(&self) -> usize {
        self.buffer_size.clamp(MIN_BUFFER_SIZE, MAX_BUFFER_SIZE)
    }
}

fn duration_from_secs<E: serde::de::Error>(s: f64) -> Result<Duration, E> {
    Duration::try_from_secs_f64(s).map_err(|e| E::custom(format!("invalid duration {s}: {e}")))
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        super::duration_from_secs(f64::deserialize(d)?)
    }
}

mod opt_secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<f64>::deserialize(d)?
            .map(super::duration_from_secs)
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_round_trips_through_toml() {
        let text = toml::to_string(&ForwardConfig::default()).unwrap();
        assert_eq!(
            text,
            "allow_custom_protocols = false\ndial_timeout = 30.0\nbuffer_size = 65536\nmax_streams = 4096\n\
             reserved_local_streams = 512\nmax_streams_per_peer = 512\n\
             max_streams_per_listener = 2048\n"
        );
        let back: ForwardConfig = toml::from_str(&text).unwrap();
        assert_eq!(back, ForwardConfig::default());
    }

    #[test]
    fn partial_toml_and_idle_timeout() {
        let c: ForwardConfig = toml::from_str("idle_timeout = 2.5\nbuffer_size = 1").unwrap();
        assert_eq!(c.idle_timeout, Some(Duration::from_millis(2500)));
        assert_eq!(c.dial_timeout, Duration::from_secs(30));
        assert_eq!(c.effective_buffer_size(), MIN_BUFFER_SIZE);
        assert!(toml::from_str::<ForwardConfig>("dial_timeout = -1.0").is_err());
        assert!(toml::from_str::<ForwardConfig>("bogus = 1").is_err());
    }
}
