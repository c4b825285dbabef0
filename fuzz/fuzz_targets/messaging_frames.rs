//! Any byte string, split anywhere, either decodes or errors; the decoder never panics.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use p2pnet_messaging::FrameCodec;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let max = usize::from(data[0]) * 1024;
    let split = usize::from(data[1]) % data.len();
    let mut codec = FrameCodec::new(1).with_max_message_size(max);
    let mut buf = BytesMut::from(&data[2..2 + split.saturating_sub(2).min(data.len() - 2)]);
    let rest = &data[2 + split.saturating_sub(2).min(data.len() - 2)..];
    for chunk in [&[][..], rest] {
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => continue,
                Ok(None) => break,
                Err(_) => return,
            }
        }
    }
    let _ = codec.decode_eof(&buf);
});
