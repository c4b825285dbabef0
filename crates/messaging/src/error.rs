//! The crate's errors: [`CodecError`] for the wire format, [`MessagingError`] for everything else.

use p2pnet_host::{HostError, PeerId};

use crate::queues::Priority;

/// Why a byte string is not a valid frame (or a frame cannot be encoded).
///
/// Every variant is a protocol violation by the peer that sent the bytes; a session that sees one
/// ends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The first four bytes are not our magic.
    #[error("bad magic {0:02x?}")]
    BadMagic([u8; 4]),
    /// The header checksum does not match the header.
    #[error("bad header checksum")]
    BadHeaderChecksum,
    /// The payload checksum does not match the payload.
    #[error("bad payload checksum")]
    BadPayloadChecksum,
    /// The announced payload (or its decompressed form) is larger than the configured maximum.
    #[error("message of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The configured maximum.
        max: usize,
    },
    /// The frame format version is not one we speak.
    #[error("unknown frame version {0}")]
    UnknownVersion(u8),
    /// The frame is for another chain (network).
    #[error("wrong chain id {got} (expected {expected})")]
    WrongChainId {
        /// Our chain id.
        expected: u32,
        /// The chain id in the frame.
        got: u32,
    },
    /// The input ended in the middle of a frame.
    #[error("truncated frame: {missing} more bytes were expected")]
    Truncated {
        /// How many bytes were missing at least.
        missing: usize,
    },
    /// Flag bits we do not know are set.
    #[error("unknown flags {0:#04x}")]
    UnknownFlags(u8),
    /// The message kind is empty, too long or not printable ASCII.
    #[error("invalid message kind")]
    BadKind,
    /// A compressed payload is not valid snappy.
    #[error("invalid compressed payload")]
    BadCompression,
}

impl CodecError {
    /// A short stable name of the variant, used as a metrics label.
    pub fn label(&self) -> &'static str {
        match self {
            CodecError::BadMagic(_) => "bad_magic",
            CodecError::BadHeaderChecksum => "bad_header_checksum",
            CodecError::BadPayloadChecksum => "bad_payload_checksum",
            CodecError::TooLarge { .. } => "too_large",
            CodecError::UnknownVersion(_) => "unknown_version",
            CodecError::WrongChainId { .. } => "wrong_chain_id",
            CodecError::Truncated { .. } => "truncated",
            CodecError::UnknownFlags(_) => "unknown_flags",
            CodecError::BadKind => "bad_kind",
            CodecError::BadCompression => "bad_compression",
        }
    }
}

/// Errors of the messaging layer.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    /// The peer's queue of that priority is full; the message was not queued.
    #[error("queue {priority:?} of peer {peer} is full")]
    Backpressure {
        /// The peer.
        peer: PeerId,
        /// The priority whose queue is full.
        priority: Priority,
    },
    /// There is no open message session with the peer.
    #[error("no message session with peer {0}")]
    NotConnected(PeerId),
    /// The message cannot be encoded (invalid kind, too large…).
    #[error("codec: {0}")]
    Codec(#[from] CodecError),
    /// Kinds starting with `_` are reserved for the session protocol.
    #[error("message kind {0:?} is reserved")]
    ReservedKind(String),
    /// The host failed.
    #[error("host: {0}")]
    Host(#[from] HostError),
    /// The messenger was started twice.
    #[error("messenger already started")]
    AlreadyStarted,
    /// The messenger is shut down.
    #[error("messenger is shut down")]
    ShutDown,
}
