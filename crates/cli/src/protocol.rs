//! The control protocol: one JSON request per line, one JSON response per line.
//!
//! ```text
//! → {"cmd":"forward","protocol":"/x/ssh","listen_addr":"/ip4/127.0.0.1/tcp/2222","peer":"12D3…"}
//! ← {"ok":true,"result":{"id":"l1","protocol":"/x/ssh",…}}
//! → {"cmd":"nonsense"}
//! ← {"ok":false,"error":"unknown variant `nonsense`, …"}
//! ```
//!
//! `subscribe` answers once (`{"ok":true,"result":{"subscribed":KIND}}`) and then sends one
//! response line per message (`{"ok":true,"result":{"peer":…,"kind":…,"data":…}}`) until the
//! client hangs up.
//!
//! The daemon reads a request line with [`parse_request`], which bounds it and never panics
//! (fuzzed by `cargo xtask fuzz --target control_request`):
//!
//! ```
//! use p2pnet_cli::protocol::{ProtocolError, Request, parse_request};
//!
//! assert_eq!(parse_request(b"{\"cmd\":\"ls\"}\n").unwrap(), Some(Request::Ls));
//! assert_eq!(parse_request(b"  \n").unwrap(), None);
//! assert!(matches!(parse_request(b"{\"cmd\":\"rm -rf\"}"), Err(ProtocolError::Malformed(_))));
//! ```

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line accepted, in bytes (newline included); a longer one is answered with an
/// error and the connection closed.
pub const MAX_LINE: usize = 64 * 1024;

/// Why a request line was not understood.
#[derive(Debug, thiserror::Error)]
pub enum ProtocolError {
    /// The line is longer than [`MAX_LINE`] bytes.
    #[error("request line longer than {max} bytes")]
    TooLong {
        /// The bound.
        max: usize,
    },
    /// Not JSON, not a known command, or a field missing or of the wrong type.
    #[error("malformed request: {0}")]
    Malformed(#[source] serde_json::Error),
}

/// Parses one request line (trailing newline optional). A blank line is `Ok(None)`.
pub fn parse_request(line: &[u8]) -> Result<Option<Request>, ProtocolError> {
    if line.len() > MAX_LINE {
        return Err(ProtocolError::TooLong { max: MAX_LINE });
    }
    if line.trim_ascii().is_empty() {
        return Ok(None);
    }
    serde_json::from_slice(line)
        .map(Some)
        .map_err(ProtocolError::Malformed)
}

/// A request to the daemon. Peers are peer ids or multiaddrs ending in `/p2p/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub enum Request {
    /// This node's peer id and listen addresses.
    Id,
    /// Connected peers.
    Peers,
    /// Dial an address.
    Connect {
        /// A multiaddr ending in `/p2p/<id>`.
        addr: String,
    },
    /// Close every connection to a peer.
    Disconnect {
        /// The peer.
        peer: String,
    },
    /// Round-trip time to a peer.
    Ping {
        /// The peer.
        peer: String,
    },
    /// Forward local connections on `listen_addr` to `peer` on `protocol`.
    Forward {
        /// The stream protocol, e.g. `/x/ssh`.
        protocol: String,
        /// The local address to accept connections on, e.g. `/ip4/127.0.0.1/tcp/2222`.
        listen_addr: String,
        /// The peer to open streams to.
        peer: String,
        /// Also write the tunnel to the daemon's configuration file.
        #[serde(default)]
        persist: bool,
    },
    /// Bridge inbound streams on `protocol` to `target_addr`.
    Listen {
        /// The stream protocol, e.g. `/x/ssh`.
        protocol: String,
        /// The local service each stream is bridged to.
        target_addr: String,
        /// Send the remote peer id as the first line to the target.
        #[serde(default)]
        report_peer_id: bool,
        /// Only these peers may open streams (empty: everyone).
        #[serde(default)]
        allow: Vec<String>,
        /// Also write the tunnel to the daemon's configuration file.
        #[serde(default)]
        persist: bool,
    },
    /// The forwarding listeners.
    Ls,
    /// The forwarded streams.
    Streams,
    /// Close the listeners matching every criterion given (`all` for every listener).
    Close {
        /// Every listener.
        #[serde(default)]
        all: bool,
        /// Listeners of this protocol.
        #[serde(default)]
        protocol: Option<String>,
        /// Listeners on this local address.
        #[serde(default)]
        listen_addr: Option<String>,
        /// Listeners bridging to this target.
        #[serde(default)]
        target_addr: Option<String>,
    },
    /// Reset one forwarded stream.
    StreamClose {
        /// The stream id as `ls`/`streams` show it (`s3`, or just `3`).
        id: String,
    },
    /// Send a message to one peer.
    Send {
        /// The peer.
        peer: String,
        /// The message kind (subscribers register for kinds).
        kind: String,
        /// The payload, as UTF-8 text.
        data: String,
    },
    /// Send a message to every peer with a session.
    Broadcast {
        /// The message kind.
        kind: String,
        /// The payload, as UTF-8 text.
        data: String,
    },
    /// Stream messages of `kind` on this connection.
    Subscribe {
        /// The message kind.
        kind: String,
    },
    /// Prometheus text.
    Metrics,
    /// Find a peer's addresses through the DHT.
    DhtFindPeer {
        /// The peer id.
        peer: String,
    },
    /// Get the value of a DHT record.
    DhtGet {
        /// The key, as UTF-8 text (its bytes are the record key).
        key: String,
    },
    /// Put a DHT record.
    DhtPut {
        /// The key, as UTF-8 text.
        key: String,
        /// The value, as UTF-8 text.
        value: String,
    },
    /// Announce this node as a provider of a key.
    DhtProvide {
        /// The key, as UTF-8 text.
        key: String,
    },
    /// Find the providers of a key.
    DhtProviders {
        /// The key, as UTF-8 text.
        key: String,
    },
    /// The DHT's routing table.
    DhtTable,
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// What it returned, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Why it failed, when it failed: one line for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    /// A success carrying `result`.
    pub fn ok(result: Value) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failure saying `error`.
    pub fn err(error: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(error.to_string()),
        }
    }

    /// The response as one line, newline included.
    pub fn to_line(&self) -> String {
        let mut line = serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"ok":false,"error":"unencodable response"}"#.to_owned());
        line.push('\n');
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_unknown_commands_are_errors() {
        let r = Request::Forward {
            protocol: "/x/a".into(),
            listen_addr: "/ip4/127.0.0.1/tcp/1".into(),
            peer: "p".into(),
            persist: false,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(text.starts_with(r#"{"cmd":"forward""#), "{text}");
        assert_eq!(serde_json::from_str::<Request>(&text).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"cmd":"stream-close","id":"s1"}"#).unwrap(),
            Request::StreamClose { id: "s1".into() }
        );
        assert!(serde_json::from_str::<Request>(r#"{"cmd":"nonsense"}"#).is_err());
        assert!(serde_json::from_str::<Request>("{").is_err());
        assert_eq!(
            Response::err("boom").to_line(),
            "{\"ok\":false,\"error\":\"boom\"}\n"
        );
    }
}
