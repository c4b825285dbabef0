//! [`Frame`]: one message (a kind and a payload) and [`MessageKind`], its short ASCII name.

use std::fmt;

use bytes::Bytes;

use crate::error::CodecError;

/// The longest message kind, in bytes.
pub const MAX_KIND_LEN: usize = 12;

/// A message kind: 1 to 12 printable ASCII bytes (`0x21..=0x7e`), e.g. `"block"` or `"tx"`.
///
/// Kinds starting with `_` are reserved for the session protocol (`_hello`, `_ok`, `_bye`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageKind {
    bytes: [u8; MAX_KIND_LEN],
    len: u8,
}

impl MessageKind {
    /// Validates `kind`.
    pub fn new(kind: &str) -> Result<Self, CodecError> {
        Self::from_bytes(kind.as_bytes())
    }

    /// Validates raw kind bytes (no padding).
    pub fn from_bytes(kind: &[u8]) -> Result<Self, CodecError> {
        if kind.is_empty()
            || kind.len() > MAX_KIND_LEN
            || !kind.iter().all(|b| (0x21..=0x7e).contains(b))
        {
            return Err(CodecError::BadKind);
        }
        let mut bytes = [0u8; MAX_KIND_LEN];
        bytes[..kind.len()].copy_from_slice(kind);
        Ok(Self {
            bytes,
            len: kind.len() as u8,
        })
    }

    /// A kind from a constant known to be valid (the reserved kinds).
    pub(crate) const fn from_static(kind: &'static str) -> Self {
        let src = kind.as_bytes();
        let mut bytes = [0u8; MAX_KIND_LEN];
        let mut i = 0;
        while i < src.len() && i < MAX_KIND_LEN {
            bytes[i] = src[i];
            i += 1;
        }
        Self {
            bytes,
            len: i as u8,
        }
    }

    /// Parses the 12-byte zero-padded field of a header.
    pub(crate) fn from_padded(field: &[u8; MAX_KIND_LEN]) -> Result<Self, CodecError> {
        let len = field.iter().position(|&b| b == 0).unwrap_or(MAX_KIND_LEN);
        if field[len..].iter().any(|&b| b != 0) {
            return Err(CodecError::BadKind);
        }
        Self::from_bytes(&field[..len])
    }

    /// The zero-padded 12-byte header field.
    pub(crate) fn padded(&self) -> &[u8; MAX_KIND_LEN] {
        &self.bytes
    }

    /// The kind as a string.
    pub fn as_str(&self) -> &str {
        // Only printable ASCII is ever stored.
        std::str::from_utf8(&self.bytes[..self.len as usize]).unwrap_or("")
    }

    /// Whether the kind is reserved for the session protocol (starts with `_`).
    pub fn is_reserved(&self) -> bool {
        self.bytes[0] == b'_'
    }
}

impl fmt::Debug for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for MessageKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<&str> for MessageKind {
    type Error = CodecError;
    fn try_from(kind: &str) -> Result<Self, CodecError> {
        Self::new(kind)
    }
}

/// One message: a kind and an opaque payload (uncompressed).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Frame {
    /// What the payload is.
    pub kind: MessageKind,
    /// The payload, uncompressed.
    pub payload: Bytes,
}

impl Frame {
    /// A frame of `kind` (validated) carrying `payload`.
    pub fn new(kind: &str, payload: impl Into<Bytes>) -> Result<Self, CodecError> {
        Ok(Self {
            kind: MessageKind::new(kind)?,
            payload: payload.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_validated() {
        assert_eq!(MessageKind::new("block").unwrap().as_str(), "block");
        assert_eq!(
            MessageKind::new("abcdefghijkl").unwrap().as_str(),
            "abcdefghijkl"
        );
        assert_eq!(MessageKind::new(""), Err(CodecError::BadKind));
        assert_eq!(MessageKind::new("abcdefghijklm"), Err(CodecError::BadKind));
        assert_eq!(MessageKind::new("a b"), Err(CodecError::BadKind));
        assert_eq!(MessageKind::new("é"), Err(CodecError::BadKind));
        assert!(MessageKind::new("_hello").unwrap().is_reserved());
        let mut padded = [0u8; 12];
        padded[..2].copy_from_slice(b"tx");
        assert_eq!(MessageKind::from_padded(&padded).unwrap().as_str(), "tx");
        padded[5] = b'x';
        assert_eq!(MessageKind::from_padded(&padded), Err(CodecError::BadKind));
    }
}
