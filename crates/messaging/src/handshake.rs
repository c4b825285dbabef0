//! The session handshake: `_hello` → `_ok` (carrying the responder's own hello) or `_bye`.
//!
//! Payload encodings are documented in `docs/wire-format.md`.

use std::fmt;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use p2pnet_host::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::frame::{Frame, MessageKind};

/// Kind of the opener's first frame.
pub const KIND_HELLO: &str = "_hello";
/// Kind of the responder's acceptance (payload: its own hello).
pub const KIND_OK: &str = "_ok";
/// Kind of a refusal or a goodbye (payload: a [`Bye`]).
pub const KIND_BYE: &str = "_bye";

/// The largest payload of a handshake frame (`_hello`, `_ok`, or a `_bye` before the session is
/// live). A longer one is refused from its frame header, before anything is allocated for it;
/// [`Hello::encode`] leaves out listen addresses that would not fit.
pub const MAX_HANDSHAKE_FRAME: usize = 4096;

const MAX_ADDRS: usize = 32;
const MAX_TEXT: usize = 255;

/// A protocol version; two peers are compatible when their major versions are equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProtocolVersion {
    /// Incompatible changes bump this.
    pub major: u8,
    /// Compatible additions bump this.
    pub minor: u8,
}

impl ProtocolVersion {
    /// The version this crate speaks: 1.0.
    pub const CURRENT: ProtocolVersion = ProtocolVersion { major: 1, minor: 0 };

    /// Whether a peer speaking `other` can talk with us.
    pub fn is_compatible_with(&self, other: &ProtocolVersion) -> bool {
        self.major == other.major
    }
}

impl fmt::Display for ProtocolVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// What each side announces about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    /// The sender's chain id.
    pub chain_id: u32,
    /// The sender's protocol version.
    pub protocol_version: ProtocolVersion,
    /// Whether the sender offers snappy compression.
    pub compression: bool,
    /// The sender's client version (at most 255 bytes are sent).
    pub client_version: String,
    /// Addresses the sender listens on (at most 32 are sent).
    pub listen_addrs: Vec<Multiaddr>,
}

impl Hello {
    /// Encodes the hello payload.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(64);
        b.put_u32(self.chain_id);
        b.put_u8(self.protocol_version.major);
        b.put_u8(self.protocol_version.minor);
        b.put_u8(u8::from(self.compression));
        put_text(&mut b, &self.client_version);
        // The count byte, then as many addresses as fit in a handshake frame.
        let mut size = b.len() + 1;
        let mut addrs: Vec<Vec<u8>> = Vec::new();
        for a in &self.listen_addrs {
            let a = a.to_vec();
            if addrs.len() == MAX_ADDRS {
                break;
            }
            if size + 2 + a.len() <= MAX_HANDSHAKE_FRAME {
                size += 2 + a.len();
                addrs.push(a);
            }
        }
        b.put_u8(addrs.len() as u8);
        for a in addrs {
            b.put_u16(a.len() as u16);
            b.put_slice(&a);
        }
        b.freeze()
    }

    /// Decodes a hello payload; `None` if it is malformed.
    pub fn decode(mut b: &[u8]) -> Option<Hello> {
        if b.remaining() < 7 {
            return None;
        }
        let chain_id = b.get_u32();
        let protocol_version = ProtocolVersion {
            major: b.get_u8(),
            minor: b.get_u8(),
        };
        let compression = match b.get_u8() {
            0 => false,
            1 => true,
            _ => return None,
        };
        let client_version = get_text(&mut b)?;
        if b.remaining() < 1 {
            return None;
        }
        let n = b.get_u8() as usize;
        if n > MAX_ADDRS {
            return None;
        }
        let mut listen_addrs = Vec::with_capacity(n);
        for _ in 0..n {
            if b.remaining() < 2 {
                return None;
            }
            let len = b.get_u16() as usize;
            if b.remaining() < len {
                return None;
            }
            listen_addrs.push(Multiaddr::try_from(b[..len].to_vec()).ok()?);
            b.advance(len);
        }
        if b.has_remaining() {
            return None;
        }
        Some(Hello {
            chain_id,
            protocol_version,
            compression,
            client_version,
            listen_addrs,
        })
    }

    /// The `_hello` frame carrying this hello.
    pub fn to_frame(&self) -> Frame {
        reserved_frame(KIND_HELLO, self.encode())
    }

    /// The `_ok` frame carrying this hello.
    pub fn to_ok_frame(&self) -> Frame {
        reserved_frame(KIND_OK, self.encode())
    }
}

/// Why a peer says goodbye (the code on the wire).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ByeReason {
    /// Our chain ids differ (code 1).
    WrongChainId,
    /// Our protocol versions are incompatible (code 2).
    IncompatibleVersion,
    /// The peer broke the protocol, e.g. a message before the handshake (code 3).
    ProtocolViolation,
    /// The handshake took too long (code 4).
    Timeout,
    /// The node is shutting down (code 5).
    ShuttingDown,
    /// Any other code.
    Other(u8),
}

impl ByeReason {
    fn code(self) -> u8 {
        match self {
            ByeReason::WrongChainId => 1,
            ByeReason::IncompatibleVersion => 2,
            ByeReason::ProtocolViolation => 3,
            ByeReason::Timeout => 4,
            ByeReason::ShuttingDown => 5,
            ByeReason::Other(c) => c,
        }
    }

    fn from_code(c: u8) -> Self {
        match c {
            1 => ByeReason::WrongChainId,
            2 => ByeReason::IncompatibleVersion,
            3 => ByeReason::ProtocolViolation,
            4 => ByeReason::Timeout,
            5 => ByeReason::ShuttingDown,
            c => ByeReason::Other(c),
        }
    }
}

/// A `_bye` payload: a reason code and a human-readable message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bye {
    /// The reason.
    pub reason: ByeReason,
    /// Details for humans (at most 255 bytes are sent).
    pub message: String,
}

impl Bye {
    /// Encodes the bye payload.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(2 + self.message.len());
        b.put_u8(self.reason.code());
        put_text(&mut b, &self.message);
        b.freeze()
    }

    /// Decodes a bye payload; `None` if it is malformed.
    pub fn decode(mut b: &[u8]) -> Option<Bye> {
        if b.remaining() < 1 {
            return None;
        }
        let reason = ByeReason::from_code(b.get_u8());
        let message = get_text(&mut b)?;
        Some(Bye { reason, message })
    }

    /// The `_bye` frame carrying this bye.
    pub fn to_frame(&self) -> Frame {
        reserved_frame(KIND_BYE, self.encode())
    }
}

fn reserved_frame(kind: &'static str, payload: Bytes) -> Frame {
    Frame {
        kind: MessageKind::from_static(kind),
        payload,
    }
}

fn put_text(b: &mut BytesMut, s: &str) {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    b.put_u8(end as u8);
    b.put_slice(&s.as_bytes()[..end]);
}

fn get_text(b: &mut &[u8]) -> Option<String> {
    if b.remaining() < 1 {
        return None;
    }
    let len = b.get_u8() as usize;
    if b.remaining() < len {
        return None;
    }
    let s = std::str::from_utf8(&b[..len]).ok()?.to_owned();
    b.advance(len);
    Some(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hello_and_bye_round_trip() {
        let h = Hello {
            chain_id: 5,
            protocol_version: ProtocolVersion { major: 1, minor: 3 },
            compression: true,
            client_version: "x".repeat(300),
            listen_addrs: vec!["/ip4/127.0.0.1/tcp/4001".parse().unwrap()],
        };
        let back = Hello::decode(&h.encode()).unwrap();
        assert_eq!(back.client_version.len(), 255);
        assert_eq!(back.listen_addrs, h.listen_addrs);
        assert_eq!(back.chain_id, 5);
        assert!(back.compression);
        let e = h.encode();
        for cut in 0..e.len() {
            assert_eq!(Hello::decode(&e[..cut]), None);
        }
        let bye = Bye {
            reason: ByeReason::WrongChainId,
            message: "chain 5 != 6".into(),
        };
        assert_eq!(Bye::decode(&bye.encode()), Some(bye));
        assert_eq!(Bye::decode(&[9, 0]).unwrap().reason, ByeReason::Other(9));
        // Long addresses: only those that fit a handshake frame are sent.
        let long: Multiaddr = format!("/dns/{}.example/tcp/4001", "a".repeat(240))
            .parse()
            .unwrap();
        let h = Hello {
            listen_addrs: vec![long; 32],
            ..h
        };
        let e = h.encode();
        assert!(e.len() <= MAX_HANDSHAKE_FRAME, "{}", e.len());
        let back = Hello::decode(&e).unwrap();
        assert!((10..32).contains(&back.listen_addrs.len()));
        assert!(
            ProtocolVersion::CURRENT.is_compatible_with(&ProtocolVersion { major: 1, minor: 9 })
        );
        assert!(
            !ProtocolVersion::CURRENT.is_compatible_with(&ProtocolVersion { major: 2, minor: 0 })
        );
    }
}
