//! [`FrameCodec`]: the sans-IO encoder and decoder of the wire format (see `docs/wire-format.md`).
//!
//! Bytes go in, frames or [`CodecError`]s come out; no I/O happens here. The decoder checks the
//! announced size against the maximum from the header alone, before anything is allocated for the
//! payload, and never reserves more than the bytes that actually arrived.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::CodecError;
use crate::frame::{Frame, MAX_KIND_LEN, MessageKind};

/// The four magic bytes every frame starts with.
pub const MAGIC: [u8; 4] = *b"P2PM";
/// The frame format version this codec writes and reads.
pub const FRAME_VERSION: u8 = 1;
/// The length of a frame header in bytes.
pub const HEADER_LEN: usize = 34;
/// Flag bit: the payload is snappy-compressed (raw snappy format).
pub const FLAG_COMPRESSED: u8 = 0x01;
/// The default maximum message size: 16 MiB.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 16 * 1024 * 1024;

/// A decoded, validated header.
#[derive(Debug, Clone, Copy)]
struct Header {
    flags: u8,
    kind: MessageKind,
    len: usize,
    payload_crc: u32,
}

/// The sans-IO encoder/decoder of frames for one chain id.
///
/// The decoder is stateful: it remembers a validated header while the payload is still arriving,
/// so each header is checked once however the bytes are split.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    chain_id: u32,
    max_message_size: usize,
    compress_threshold: Option<usize>,
    pending: Option<Header>,
}

impl FrameCodec {
    /// A codec for `chain_id`, the default maximum size and no compression on encode.
    pub fn new(chain_id: u32) -> Self {
        Self {
            chain_id,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            compress_threshold: None,
            pending: None,
        }
    }

    /// Sets the maximum message size (of the payload on the wire and decompressed).
    pub fn with_max_message_size(mut self, max: usize) -> Self {
        self.max_message_size = max;
        self
    }

    /// Compress payloads of at least `threshold` bytes on encode (`None`: never).
    pub fn with_compression(mut self, threshold: Option<usize>) -> Self {
        self.compress_threshold = threshold;
        self
    }

    /// The chain id frames are written with and checked against.
    pub fn chain_id(&self) -> u32 {
        self.chain_id
    }

    /// The maximum message size.
    pub fn max_message_size(&self) -> usize {
        self.max_message_size
    }

    /// The compression threshold used on encode.
    pub fn compress_threshold(&self) -> Option<usize> {
        self.compress_threshold
    }

    /// Appends the encoding of `frame` to `dst`.
    ///
    /// Fails with [`CodecError::TooLarge`] when the payload exceeds the maximum size.
    pub fn encode(&self, frame: &Frame, dst: &mut BytesMut) -> Result<(), CodecError> {
        self.encode_parts(frame.kind, &frame.payload, dst)
    }

    /// Encodes `frame` into a new buffer.
    pub fn encode_to_bytes(&self, frame: &Frame) -> Result<Bytes, CodecError> {
        let mut dst = BytesMut::with_capacity(HEADER_LEN + frame.payload.len());
        self.encode(frame, &mut dst)?;
        Ok(dst.freeze())
    }

    /// Appends the encoding of a frame of `kind` carrying `payload` to `dst`.
    pub fn encode_parts(
        &self,
        kind: MessageKind,
        payload: &[u8],
        dst: &mut BytesMut,
    ) -> Result<(), CodecError> {
        if payload.len() > self.max_message_size {
            return Err(CodecError::TooLarge {
                size: payload.len() as u64,
                max: self.max_message_size,
            });
        }
        let compressed = match self.compress_threshold {
            Some(t) if payload.len() >= t && !payload.is_empty() => {
                snap::raw::Encoder::new().compress_vec(payload).ok()
            }
            _ => None,
        };
        // Only keep the compressed form when it is smaller.
        let (flags, body): (u8, &[u8]) = match &compressed {
            Some(c) if c.len() < payload.len() => (FLAG_COMPRESSED, c),
            _ => (0, payload),
        };
        let len = u32::try_from(body.len()).map_err(|_| CodecError::TooLarge {
            size: body.len() as u64,
            max: self.max_message_size,
        })?;
        dst.reserve(HEADER_LEN + body.len());
        let start = dst.len();
        dst.put_slice(&MAGIC);
        dst.put_u32(self.chain_id);
        dst.put_u8(flags);
        dst.put_u8(FRAME_VERSION);
        dst.put_slice(kind.padded());
        dst.put_u32(len);
        dst.put_u32(crc32c::crc32c(body));
        let header_crc = crc32c::crc32c(&dst[start..start + HEADER_LEN - 4]);
        dst.put_u32(header_crc);
        dst.put_slice(body);
        Ok(())
    }

    /// Decodes the next frame from the front of `src`, consuming its bytes.
    ///
    /// Returns `Ok(None)` when more bytes are needed. After an error the stream is unusable (the
    /// session ends); the codec itself may be reused after [`FrameCodec::reset`].
    pub fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, CodecError> {
        let header = match self.pending {
            Some(h) => h,
            None => {
                if src.len() < HEADER_LEN {
                    return Ok(None);
                }
                let h = self.parse_header(&src[..HEADER_LEN])?;
                src.advance(HEADER_LEN);
                self.pending = Some(h);
                h
            }
        };
        if src.len() < header.len {
            return Ok(None);
        }
        self.pending = None;
        let body = src.split_to(header.len).freeze();
        if crc32c::crc32c(&body) != header.payload_crc {
            return Err(CodecError::BadPayloadChecksum);
        }
        let payload = if header.flags & FLAG_COMPRESSED != 0 {
            let size = snap::raw::decompress_len(&body).map_err(|_| CodecError::BadCompression)?;
            if size > self.max_message_size {
                return Err(CodecError::TooLarge {
                    size: size as u64,
                    max: self.max_message_size,
                });
            }
            let out = snap::raw::Decoder::new()
                .decompress_vec(&body)
                .map_err(|_| CodecError::BadCompression)?;
            Bytes::from(out)
        } else {
            body
        };
        Ok(Some(Frame {
            kind: header.kind,
            payload,
        }))
    }

    /// Call when the input ended: `Ok(())` if it ended between frames, else
    /// [`CodecError::Truncated`].
    ///
    /// `missing` is how many more bytes the frame in progress needed. It is `0` when `src`
    /// still holds bytes that [`FrameCodec::decode`] could consume (call `decode` until it
    /// returns `Ok(None)` first); any `src` is accepted, this never panics.
    pub fn decode_eof(&self, src: &BytesMut) -> Result<(), CodecError> {
        if self.pending.is_none() && src.is_empty() {
            return Ok(());
        }
        Err(CodecError::Truncated {
            missing: self.bytes_needed(src.len()),
        })
    }

    /// How many more bytes the decoder needs before it can make progress, given `buffered` bytes.
    /// Never more than the header, or the remaining payload of a validated header.
    pub fn bytes_needed(&self, buffered: usize) -> usize {
        match self.pending {
            Some(h) => h.len.saturating_sub(buffered),
            None => HEADER_LEN.saturating_sub(buffered),
        }
    }

    /// Forgets a partially received frame.
    pub fn reset(&mut self) {
        self.pending = None;
    }

    fn parse_header(&self, h: &[u8]) -> Result<Header, CodecError> {
        let mut magic = [0u8; 4];
        magic.copy_from_slice(&h[0..4]);
        if magic != MAGIC {
            return Err(CodecError::BadMagic(magic));
        }
        let header_crc = u32::from_be_bytes([h[30], h[31], h[32], h[33]]);
        if crc32c::crc32c(&h[..HEADER_LEN - 4]) != header_crc {
            return Err(CodecError::BadHeaderChecksum);
        }
        let version = h[9];
        if version != FRAME_VERSION {
            return Err(CodecError::UnknownVersion(version));
        }
        let flags = h[8];
        if flags & !FLAG_COMPRESSED != 0 {
            return Err(CodecError::UnknownFlags(flags));
        }
        let chain = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        if chain != self.chain_id {
            return Err(CodecError::WrongChainId {
                expected: self.chain_id,
                got: chain,
            });
        }
        let mut kind = [0u8; MAX_KIND_LEN];
        kind.copy_from_slice(&h[10..22]);
        let kind = MessageKind::from_padded(&kind)?;
        let len = u32::from_be_bytes([h[22], h[23], h[24], h[25]]);
        if len as u64 > self.max_message_size as u64 {
            return Err(CodecError::TooLarge {
                size: len as u64,
                max: self.max_message_size,
            });
        }
        let payload_crc = u32::from_be_bytes([h[26], h[27], h[28], h[29]]);
        Ok(Header {
            flags,
            kind,
            len: len as usize,
            payload_crc,
        })
    }
}

/// Builds a raw header (with a valid header checksum) from its fields; for tests and fuzzing of
/// peers that misbehave.
pub fn raw_header(
    magic: [u8; 4],
    chain_id: u32,
    flags: u8,
    version: u8,
    kind: &[u8; MAX_KIND_LEN],
    len: u32,
    payload_crc: u32,
) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&magic);
    h[4..8].copy_from_slice(&chain_id.to_be_bytes());
    h[8] = flags;
    h[9] = version;
    h[10..22].copy_from_slice(kind);
    h[22..26].copy_from_slice(&len.to_be_bytes());
    h[26..30].copy_from_slice(&payload_crc.to_be_bytes());
    let crc = crc32c::crc32c(&h[..30]);
    h[30..34].copy_from_slice(&crc.to_be_bytes());
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn frame(kind: &str, payload: &[u8]) -> Frame {
        Frame::new(kind, payload.to_vec()).unwrap()
    }

    fn kind_field(k: &str) -> [u8; 12] {
        let mut f = [0u8; 12];
        f[..k.len()].copy_from_slice(k.as_bytes());
        f
    }

    #[test]
    fn round_trip_and_layout() {
        let c = FrameCodec::new(7);
        let bytes = c.encode_to_bytes(&frame("block", b"hello")).unwrap();
        assert_eq!(bytes.len(), HEADER_LEN + 5);
        assert_eq!(&bytes[0..4], b"P2PM");
        assert_eq!(&bytes[4..8], &7u32.to_be_bytes());
        assert_eq!(bytes[8], 0);
        assert_eq!(bytes[9], 1);
        assert_eq!(&bytes[10..22], &kind_field("block"));
        assert_eq!(&bytes[22..26], &5u32.to_be_bytes());
        assert_eq!(&bytes[26..30], &crc32c::crc32c(b"hello").to_be_bytes());
        assert_eq!(&bytes[30..34], &crc32c::crc32c(&bytes[..30]).to_be_bytes());
        let mut d = FrameCodec::new(7);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), Some(frame("block", b"hello")));
        assert!(buf.is_empty());
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        d.decode_eof(&buf).unwrap();
    }

    #[test]
    fn compression_applies_above_threshold_and_round_trips() {
        let c = FrameCodec::new(1).with_compression(Some(100));
        let payload = vec![b'a'; 10_000];
        let bytes = c.encode_to_bytes(&frame("tx", &payload)).unwrap();
        assert_eq!(bytes[8], FLAG_COMPRESSED);
        assert!(bytes.len() < 1000);
        let small = c.encode_to_bytes(&frame("tx", &payload[..99])).unwrap();
        assert_eq!(small[8], 0);
        // A receiver without compression configured still decodes it.
        let mut d = FrameCodec::new(1);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap().payload, payload);
    }

    #[test]
    fn every_error_is_typed() {
        let c = FrameCodec::new(7);
        let good = c.encode_to_bytes(&frame("block", b"hello")).unwrap();
        let dec = |b: &[u8], max: usize| {
            let mut d = FrameCodec::new(7).with_max_message_size(max);
            let mut buf = BytesMut::from(b);
            d.decode(&mut buf)
        };
        let mut b = good.to_vec();
        b[0] = b'X';
        assert_eq!(dec(&b, 1 << 20), Err(CodecError::BadMagic(*b"X2PM")));
        let mut b = good.to_vec();
        b[12] ^= 1;
        assert_eq!(dec(&b, 1 << 20), Err(CodecError::BadHeaderChecksum));
        let mut b = good.to_vec();
        b[HEADER_LEN] ^= 1;
        assert_eq!(dec(&b, 1 << 20), Err(CodecError::BadPayloadChecksum));
        assert_eq!(dec(&good, 4), Err(CodecError::TooLarge { size: 5, max: 4 }));
        let h = raw_header(MAGIC, 7, 0, 2, &kind_field("a"), 0, 0);
        assert_eq!(dec(&h, 1 << 20), Err(CodecError::UnknownVersion(2)));
        let h = raw_header(MAGIC, 8, 0, 1, &kind_field("a"), 0, crc32c::crc32c(b""));
        assert_eq!(
            dec(&h, 1 << 20),
            Err(CodecError::WrongChainId {
                expected: 7,
                got: 8
            })
        );
        let h = raw_header(MAGIC, 7, 0x80, 1, &kind_field("a"), 0, 0);
        assert_eq!(dec(&h, 1 << 20), Err(CodecError::UnknownFlags(0x80)));
        let h = raw_header(MAGIC, 7, 0, 1, &kind_field(" a"), 0, 0);
        assert_eq!(dec(&h, 1 << 20), Err(CodecError::BadKind));
        let h = raw_header(
            MAGIC,
            7,
            FLAG_COMPRESSED,
            1,
            &kind_field("a"),
            1,
            crc32c::crc32c(&[0xff]),
        );
        let mut b = h.to_vec();
        b.push(0xff);
        assert_eq!(dec(&b, 1 << 20), Err(CodecError::BadCompression));
        // Truncation is reported at end of input, in the header and in the payload.
        let mut d = FrameCodec::new(7);
        let mut buf = BytesMut::from(&good[..10]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(
            d.decode_eof(&buf),
            Err(CodecError::Truncated { missing: 24 })
        );
        let mut d = FrameCodec::new(7);
        let mut buf = BytesMut::from(&good[..HEADER_LEN + 2]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(
            d.decode_eof(&buf),
            Err(CodecError::Truncated { missing: 3 })
        );
    }

    #[test]
    fn huge_announced_length_allocates_nothing() {
        // A header announcing 4 GiB with a valid checksum: refused from the header alone.
        let h = raw_header(MAGIC, 7, 0, 1, &kind_field("a"), u32::MAX, 0);
        let mut d = FrameCodec::new(7);
        let mut buf = BytesMut::from(&h[..]);
        assert!(matches!(
            d.decode(&mut buf),
            Err(CodecError::TooLarge { .. })
        ));
        // Within the maximum, the decoder only asks for what is missing; it reserves nothing.
        let h = raw_header(MAGIC, 7, 0, 1, &kind_field("a"), 1_000_000, 0);
        let mut d = FrameCodec::new(7);
        let mut buf = BytesMut::from(&h[..]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert!(buf.capacity() < 1000);
        assert_eq!(d.bytes_needed(buf.len()), 1_000_000);
    }

    #[test]
    fn oversized_decompression_is_refused() {
        let payload = vec![0u8; 100_000];
        let c = FrameCodec::new(1).with_compression(Some(1));
        let bytes = c.encode_to_bytes(&frame("z", &payload)).unwrap();
        assert!(bytes.len() < 10_000);
        let mut d = FrameCodec::new(1).with_max_message_size(50_000);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(CodecError::TooLarge {
                size: 100_000,
                max: 50_000
            })
        );
    }

    #[test]
    fn decode_eof_with_more_bytes_than_needed_never_underflows() {
        let c = FrameCodec::new(7);
        let good = c.encode_to_bytes(&frame("block", b"hello")).unwrap();
        // No header parsed yet, but more than a header buffered.
        let d = FrameCodec::new(7);
        let buf = BytesMut::from(&good[..]);
        assert_eq!(
            d.decode_eof(&buf),
            Err(CodecError::Truncated { missing: 0 })
        );
        // A header parsed, and more than its payload buffered (a caller that did not drain).
        let mut d = FrameCodec::new(7);
        let mut buf = BytesMut::from(&good[..HEADER_LEN + 2]);
        assert_eq!(d.decode(&mut buf).unwrap(), None);
        assert_eq!(
            d.decode_eof(&buf),
            Err(CodecError::Truncated { missing: 3 })
        );
        buf.extend_from_slice(&[0u8; 64]);
        assert_eq!(
            d.decode_eof(&buf),
            Err(CodecError::Truncated { missing: 0 })
        );
        // Between frames, nothing buffered: a clean end.
        d.reset();
        assert_eq!(d.decode_eof(&BytesMut::new()), Ok(()));
    }

    fn arb_frame() -> impl Strategy<Value = Frame> {
        (
            "[!-~]{1,12}",
            prop::collection::vec(any::<u8>(), 0..2048),
            any::<bool>(),
        )
            .prop_map(|(k, mut p, repetitive)| {
                if repetitive {
                    p = p.iter().map(|b| b & 3).collect();
                }
                Frame::new(&k, p).unwrap()
            })
    }

    proptest! {
        #[test]
        fn prop_round_trip(frames in prop::collection::vec(arb_frame(), 1..8), compress in any::<bool>()) {
            let c = FrameCodec::new(42).with_compression(compress.then_some(16));
            let mut buf = BytesMut::new();
            for f in &frames {
                c.encode(f, &mut buf).unwrap();
            }
            let mut d = FrameCodec::new(42);
            let mut out = Vec::new();
            while let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
            prop_assert_eq!(out, frames);
            prop_assert!(d.decode_eof(&buf).is_ok());
        }

        #[test]
        fn prop_split_at_every_boundary(f in arb_frame(), compress in any::<bool>()) {
            let c = FrameCodec::new(3).with_compression(compress.then_some(16));
            let bytes = c.encode_to_bytes(&f).unwrap();
            for cut in 0..=bytes.len() {
                let mut d = FrameCodec::new(3);
                let mut buf = BytesMut::from(&bytes[..cut]);
                let first = d.decode(&mut buf).unwrap();
                if cut == bytes.len() {
                    prop_assert_eq!(first.as_ref(), Some(&f));
                    continue;
                }
                prop_assert_eq!(first, None);
                buf.extend_from_slice(&bytes[cut..]);
                let second = d.decode(&mut buf).unwrap();
                prop_assert_eq!(second.as_ref(), Some(&f));
            }
        }

        #[test]
        fn prop_arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512), max in 0usize..1024) {
            let mut d = FrameCodec::new(3).with_max_message_size(max);
            let mut buf = BytesMut::from(&bytes[..]);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(_)) => continue,
                    Ok(None) => { let _ = d.decode_eof(&buf); break; }
                    Err(_) => break,
                }
            }
        }

        #[test]
        fn prop_decode_eof_never_panics(f in arb_frame(), cut in any::<prop::sample::Index>(), extra in prop::collection::vec(any::<u8>(), 0..256)) {
            let bytes = FrameCodec::new(3).encode_to_bytes(&f).unwrap();
            let cut = cut.index(bytes.len() + 1);
            let mut d = FrameCodec::new(3);
            let mut buf = BytesMut::from(&bytes[..cut]);
            let decoded = d.decode(&mut buf).unwrap();
            let needed = d.bytes_needed(buf.len());
            // Whatever the caller appends without decoding, the answer is bounded, never a panic.
            let clean = d.decode_eof(&buf);
            prop_assert_eq!(clean.is_ok(), decoded.is_some() || cut == 0);
            if decoded.is_none() && cut > 0 {
                prop_assert_eq!(clean, Err(CodecError::Truncated { missing: needed }));
            }
            buf.extend_from_slice(&extra);
            match d.decode_eof(&buf) {
                Ok(()) => prop_assert!(buf.is_empty()),
                Err(CodecError::Truncated { missing }) => prop_assert!(missing <= needed.max(HEADER_LEN)),
                Err(e) => prop_assert!(false, "unexpected {:?}", e),
            }
        }

        #[test]
        fn prop_corrupted_frames_never_panic(f in arb_frame(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
            let c = FrameCodec::new(3).with_compression(Some(8));
            let mut bytes = c.encode_to_bytes(&f).unwrap().to_vec();
            let i = pos.index(bytes.len());
            bytes[i] ^= 1 << bit;
            let mut d = FrameCodec::new(3);
            let mut buf = BytesMut::from(&bytes[..]);
            // A flipped bit is always caught by a checksum or a field check, never returned.
            let r = d.decode(&mut buf);
            prop_assert!(r.is_err() || r == Ok(None), "{:?}", r);
        }
    }
}
