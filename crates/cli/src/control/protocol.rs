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

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest request line accepted, in bytes (newline included); a longer one is answered with an
/// error and the connection closed.
pub(crate) const MAX_LINE: usize = 64 * 1024;

/// A request to the daemon. Peers are peer ids or multiaddrs ending in `/p2p/<id>`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "kebab-case")]
pub(crate) enum Request {
    /// This node's peer id and listen addresses.
    Id,
    /// Connected peers.
    Peers,
    /// Dial an address.
    Connect { addr: String },
    /// Close every connection to a peer.
    Disconnect { peer: String },
    /// Round-trip time to a peer.
    Ping { peer: String },
    /// Forward local connections on `listen_addr` to `peer` on `protocol`.
    Forward {
        protocol: String,
        listen_addr: String,
        peer: String,
        #[serde(default)]
        persist: bool,
    },
    /// Bridge inbound streams on `protocol` to `target_addr`.
    Listen {
        protocol: String,
        target_addr: String,
        #[serde(default)]
        report_peer_id: bool,
        #[serde(default)]
        allow: Vec<String>,
        #[serde(default)]
        persist: bool,
    },
    /// The forwarding listeners.
    Ls,
    /// The forwarded streams.
    Streams,
    /// Close the listeners matching every criterion given (`all` for every listener).
    Close {
        #[serde(default)]
        all: bool,
        #[serde(default)]
        protocol: Option<String>,
        #[serde(default)]
        listen_addr: Option<String>,
        #[serde(default)]
        target_addr: Option<String>,
    },
    /// Reset one forwarded stream (`s3` or `3`).
    StreamClose { id: String },
    /// Send a message to one peer.
    Send {
        peer: String,
        kind: String,
        data: String,
    },
    /// Send a message to every peer with a session.
    Broadcast { kind: String, data: String },
    /// Stream messages of `kind` on this connection.
    Subscribe { kind: String },
    /// Prometheus text.
    Metrics,
}

/// A response line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Response {
    pub(crate) ok: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) error: Option<String>,
}

impl Response {
    pub(crate) fn ok(result: Value) -> Self {
        Self {
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    pub(crate) fn err(error: impl std::fmt::Display) -> Self {
        Self {
            ok: false,
            result: None,
            error: Some(error.to_string()),
        }
    }

    /// The response as one line, newline included.
    pub(crate) fn to_line(&self) -> String {
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
