//! The yamux frame header: 12 bytes, big endian (version, type, flags, stream id, length).

use crate::error::ProtocolError;

/// Length of every frame header.
pub const HEADER_LEN: usize = 12;
/// The only protocol version.
const VERSION: u8 = 0;

/// What a frame carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FrameType {
    /// Stream data; `length` bytes of payload follow the header.
    Data,
    /// A grant of receive window to the peer; `length` is the increment.
    WindowUpdate,
    /// A ping (SYN) or its answer (ACK); `length` is an opaque value echoed back.
    Ping,
    /// The end of the session; `length` is the error code.
    GoAway,
}

impl FrameType {
    fn from_u8(b: u8) -> Option<Self> {
        Some(match b {
            0 => Self::Data,
            1 => Self::WindowUpdate,
            2 => Self::Ping,
            3 => Self::GoAway,
            _ => return None,
        })
    }

    fn to_u8(self) -> u8 {
        match self {
            Self::Data => 0,
            Self::WindowUpdate => 1,
            Self::Ping => 2,
            Self::GoAway => 3,
        }
    }
}

/// Frame flags (a bit set).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u16);

impl Flags {
    /// Opens a stream; on a ping, asks for an answer.
    pub const SYN: Flags = Flags(0x1);
    /// Acknowledges a stream; on a ping, is the answer.
    pub const ACK: Flags = Flags(0x2);
    /// Half-closes a stream: the sender writes no more.
    pub const FIN: Flags = Flags(0x4);
    /// Resets a stream in both directions.
    pub const RST: Flags = Flags(0x8);

    /// Whether every flag of `other` is set.
    pub fn contains(self, other: Flags) -> bool {
        self.0 & other.0 == other.0
    }
}

impl std::ops::BitOr for Flags {
    type Output = Flags;
    fn bitor(self, rhs: Flags) -> Flags {
        Flags(self.0 | rhs.0)
    }
}

impl std::ops::BitOrAssign for Flags {
    fn bitor_assign(&mut self, rhs: Flags) {
        self.0 |= rhs.0;
    }
}

/// GoAway codes.
pub mod go_away {
    /// Normal termination.
    pub const NORMAL: u32 = 0;
    /// The peer broke the protocol.
    pub const PROTOCOL_ERROR: u32 = 1;
    /// An internal error.
    pub const INTERNAL_ERROR: u32 = 2;
}

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Header {
    /// The frame type.
    pub ty: FrameType,
    /// The flags.
    pub flags: Flags,
    /// The stream (0 for the session: pings and GoAway).
    pub stream_id: u32,
    /// Payload length (data), window increment, ping value or GoAway code.
    pub length: u32,
}

impl Header {
    /// Decodes a header. Unknown flag bits are ignored; an unknown version or type is an error.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, ProtocolError> {
        if bytes[0] != VERSION {
            return Err(ProtocolError::UnknownVersion(bytes[0]));
        }
        let ty = FrameType::from_u8(bytes[1]).ok_or(ProtocolError::UnknownFrameType(bytes[1]))?;
        Ok(Header {
            ty,
            flags: Flags(u16::from_be_bytes([bytes[2], bytes[3]])),
            stream_id: u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]),
            length: u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]),
        })
    }

    /// The 12 bytes of this header.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0] = VERSION;
        b[1] = self.ty.to_u8();
        b[2..4].copy_from_slice(&self.flags.0.to_be_bytes());
        b[4..8].copy_from_slice(&self.stream_id.to_be_bytes());
        b[8..12].copy_from_slice(&self.length.to_be_bytes());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_bytes() {
        let h = Header {
            ty: FrameType::WindowUpdate,
            flags: Flags::SYN | Flags::FIN,
            stream_id: 3,
            length: 0x0004_0000,
        };
        assert_eq!(h.encode(), [0, 1, 0, 5, 0, 0, 0, 3, 0, 4, 0, 0]);
        assert_eq!(Header::decode(&h.encode()).unwrap(), h);
    }

    #[test]
    fn bad_version_and_type() {
        assert_eq!(
            Header::decode(&[1, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownVersion(1))
        );
        assert_eq!(
            Header::decode(&[0, 4, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0]),
            Err(ProtocolError::UnknownFrameType(4))
        );
    }

    proptest! {
        #[test]
        fn round_trip(ty in 0u8..4, flags: u16, id: u32, len: u32) {
            let h = Header { ty: FrameType::from_u8(ty).unwrap(), flags: Flags(flags), stream_id: id, length: len };
            prop_assert_eq!(Header::decode(&h.encode()).unwrap(), h);
        }

        #[test]
        fn decode_never_panics(bytes: [u8; HEADER_LEN]) {
            if let Ok(h) = Header::decode(&bytes) {
                prop_assert_eq!(h.encode(), bytes);
            }
        }
    }
}
