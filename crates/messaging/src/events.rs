//! [`SessionEvent`]: what happened to message sessions, and why.

use p2pnet_host::{Multiaddr, PeerId};

use crate::error::CodecError;
use crate::handshake::{ByeReason, ProtocolVersion};

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeFailure {
    /// The peer is on another chain.
    WrongChainId {
        /// Ours.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The peer speaks an incompatible protocol version.
    IncompatibleVersion {
        /// Ours.
        ours: ProtocolVersion,
        /// Theirs.
        theirs: ProtocolVersion,
    },
    /// The peer refused us with a bye.
    Refused {
        /// Its reason.
        reason: ByeReason,
        /// Its message.
        message: String,
    },
    /// The handshake took longer than the configured timeout.
    Timeout,
    /// The peer sent something other than the expected handshake frame.
    ProtocolViolation(String),
    /// The peer's bytes were not a valid frame.
    Decode(CodecError),
    /// The stream failed or ended.
    Io(String),
}

impl HandshakeFailure {
    /// A short stable label, used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            HandshakeFailure::WrongChainId { .. } => "wrong_chain_id",
            HandshakeFailure::IncompatibleVersion { .. } => "incompatible_version",
            HandshakeFailure::Refused { .. } => "refused",
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::ProtocolViolation(_) => "protocol_violation",
            HandshakeFailure::Decode(_) => "decode",
            HandshakeFailure::Io(_) => "io",
        }
    }
}

/// Why an established session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CloseReason {
    /// The peer closed the stream.
    PeerClosed,
    /// The peer said goodbye.
    PeerBye {
        /// Its reason.
        reason: ByeReason,
        /// Its message.
        message: String,
    },
    /// The peer sent bytes that are not a valid frame.
    Decode(CodecError),
    /// The peer broke the protocol (e.g. a second hello).
    ProtocolViolation(String),
    /// The peer sent more messages per second than allowed.
    Flood,
    /// A write blocked longer than the write timeout: the peer stopped reading.
    WriteTimeout,
    /// The stream failed.
    Io(String),
    /// The sink was closed.
    SinkClosed,
    /// The messenger shut down.
    Shutdown,
    /// A newer stream from the peer in the same direction took this session's place.
    Replaced,
}

impl CloseReason {
    /// A short stable label, used in metrics.
    pub fn label(&self) -> &'static str {
        match self {
            CloseReason::PeerClosed => "peer_closed",
            CloseReason::PeerBye { .. } => "peer_bye",
            CloseReason::Decode(_) => "decode",
            CloseReason::ProtocolViolation(_) => "protocol_violation",
            CloseReason::Flood => "flood",
            CloseReason::WriteTimeout => "write_timeout",
            CloseReason::Io(_) => "io",
            CloseReason::SinkClosed => "sink_closed",
            CloseReason::Shutdown => "shutdown",
            CloseReason::Replaced => "replaced",
        }
    }
}

/// Something that happened to a message session.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionEvent {
    /// A session was established (handshake done) and is the peer's one session.
    Opened {
        /// The peer.
        peer: PeerId,
        /// Whether we opened the stream.
        outbound: bool,
        /// The client version it announced.
        client_version: String,
        /// The addresses it announced.
        listen_addrs: Vec<Multiaddr>,
    },
    /// The peer's session ended.
    Closed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: CloseReason,
    },
    /// A handshake with the peer failed; on a chain or version mismatch the peer is also
    /// disconnected.
    HandshakeFailed {
        /// The peer.
        peer: PeerId,
        /// Why.
        reason: HandshakeFailure,
    },
}
