//! Framing: each message is an unsigned-varint length prefix followed by the protobuf bytes.
//! Sans-IO: bytes in, messages or typed errors out. The length is checked against the limit
//! before anything is allocated.

use prost::Message as _;

use crate::error::KadError;
use crate::message::proto;

/// The default protocol name.
pub const DEFAULT_PROTOCOL: &str = "/ipfs/kad/1.0.0";

/// The default largest message: a 64 KiB value plus room for the key, the peers and the framing.
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 64 * 1024 + 16 * 1024;

/// Longest uvarint accepted for a length (enough for any `u64`; our limits need far fewer).
pub const MAX_VARINT_LEN: usize = 10;

/// Reads a uvarint from the front of `buf`: `Ok(None)` if `buf` ends inside it.
pub fn decode_uvarint(buf: &[u8]) -> Result<Option<(u64, usize)>, KadError> {
    let mut value: u64 = 0;
    for (i, b) in buf.iter().enumerate().take(MAX_VARINT_LEN) {
        let low = u64::from(b & 0x7f);
        if i == MAX_VARINT_LEN - 1 && (low > 1) {
            return Err(KadError::InvalidLength);
        }
        value |= low << (7 * i);
        if b & 0x80 == 0 {
            // Minimal encoding: no trailing zero groups (except the single zero byte).
            if i > 0 && *b == 0 {
                return Err(KadError::InvalidLength);
            }
            return Ok(Some((value, i + 1)));
        }
    }
    if buf.len() >= MAX_VARINT_LEN {
        return Err(KadError::InvalidLength);
    }
    Ok(None)
}

/// Appends `value` as a uvarint to `out`.
pub fn encode_uvarint(mut value: u64, out: &mut Vec<u8>) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// Checks a length prefix against `max`.
pub fn check_len(len: u64, max: usize) -> Result<usize, KadError> {
    match usize::try_from(len) {
        Ok(n) if n <= max => Ok(n),
        _ => Err(KadError::MessageTooLarge { len, max }),
    }
}

/// One frame: the length prefix and the encoded message.
pub fn encode_frame(msg: &proto::Message) -> Vec<u8> {
    msg.encode_length_delimited_to_vec()
}

/// Decodes the protobuf body of one frame.
pub fn decode_body(body: &[u8]) -> Result<proto::Message, KadError> {
    proto::Message::decode(body).map_err(|e| KadError::Decode(e.to_string()))
}

/// Decodes one frame from the front of `buf`: the message and the bytes it took, or `Ok(None)`
/// when `buf` holds only part of it. A length over `max` is an error at once.
pub fn decode_frame(buf: &[u8], max: usize) -> Result<Option<(proto::Message, usize)>, KadError> {
    let Some((len, prefix)) = decode_uvarint(buf)? else {
        return Ok(None);
    };
    let len = check_len(len, max)?;
    let Some(body) = buf.get(prefix..prefix + len) else {
        return Ok(None);
    };
    Ok(Some((decode_body(body)?, prefix + len)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageType;
    use proptest::prelude::*;

    #[test]
    fn frames_round_trip_and_partial_input_waits() {
        let m = proto::Message {
            r#type: MessageType::FindNode as i32,
            key: vec![9; 300],
            ..Default::default()
        };
        let f = encode_frame(&m);
        assert_eq!(f[0] & 0x80, 0x80, "300+ bytes need two prefix bytes");
        let (back, used) = decode_frame(&f, 1024).unwrap().unwrap();
        assert_eq!((back, used), (m, f.len()));
        for cut in 0..f.len() {
            assert!(decode_frame(&f[..cut], 1024).unwrap().is_none());
        }
        assert!(matches!(
            decode_frame(&f, 100),
            Err(KadError::MessageTooLarge { .. })
        ));
    }

    #[test]
    fn bad_varints_are_errors() {
        assert!(decode_uvarint(&[0xff; 11]).is_err());
        assert!(decode_uvarint(&[0x80, 0x00]).is_err()); // not minimal
        assert_eq!(decode_uvarint(&[0x80]).unwrap(), None);
        let mut max = Vec::new();
        encode_uvarint(u64::MAX, &mut max);
        assert_eq!(decode_uvarint(&max).unwrap(), Some((u64::MAX, 10)));
        assert!(matches!(
            decode_frame(&max, 1 << 20),
            Err(KadError::MessageTooLarge { .. })
        ));
    }

    proptest! {
        #[test]
        fn uvarint_round_trips(v in any::<u64>()) {
            let mut b = Vec::new();
            encode_uvarint(v, &mut b);
            prop_assert_eq!(decode_uvarint(&b).unwrap(), Some((v, b.len())));
        }

        #[test]
        fn any_bytes_decode_or_fail(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode_frame(&bytes, 1024);
        }
    }
}
