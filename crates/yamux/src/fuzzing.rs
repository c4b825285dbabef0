//! Harnesses for the fuzz targets (`fuzz/fuzz_targets/yamux_*.rs`) and the replay of the inputs
//! they found (`fuzz/regressions/yamux_*/`). Not part of the stable API.

use std::time::{Duration, Instant};

use bytes::BytesMut;

use crate::{
    Config, Connection, Event, Flags, FrameType, HEADER_LEN, Header, INITIAL_WINDOW, Mode,
    ProtocolError, StreamId,
};

/// Every 12 bytes of `data` as a frame header: what decodes encodes back to the same bytes, and
/// what does not decode is a typed error naming the offending byte.
pub fn frames(data: &[u8]) {
    for chunk in data.chunks_exact(HEADER_LEN) {
        let raw: &[u8; HEADER_LEN] = chunk.try_into().expect("exact chunk");
        match Header::decode(raw) {
            Ok(h) => {
                assert_eq!(&h.encode(), raw, "{h:?} re-encodes differently");
                assert_eq!(Header::decode(&h.encode()), Ok(h));
            }
            Err(ProtocolError::UnknownVersion(v)) => assert_eq!(v, raw[0]),
            Err(ProtocolError::UnknownFrameType(t)) => {
                assert_eq!((raw[0], t), (0, raw[1]));
            }
            Err(e) => panic!("a header alone cannot be {e:?}"),
        }
    }
}

/// Reads the script of [`connection`].
struct Script<'a>(&'a [u8]);

impl Script<'_> {
    fn byte(&mut self) -> Option<u8> {
        let (&b, rest) = self.0.split_first()?;
        self.0 = rest;
        Some(b)
    }

    fn u16(&mut self) -> Option<u16> {
        Some(u16::from_be_bytes([self.byte()?, self.byte()?]))
    }

    fn bytes(&mut self, n: usize) -> &[u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }
}

fn pick(ids: &[StreamId], b: u8) -> Option<StreamId> {
    (!ids.is_empty()).then(|| ids[usize::from(b) % ids.len()])
}

/// One connection fed hostile bytes, in arbitrary chunks, interleaved with application
/// operations; `data` is the script choosing both. Nothing may panic, and after every step:
/// no stream buffers more than the largest receive window, the bytes waiting for the transport
/// grow only by what the step may produce (answers to what came in, or one write's frames), the
/// counts stay within the limits, and an ended connection stays ended.
pub fn connection(data: &[u8]) {
    let mut s = Script(data);
    let (Some(c0), Some(c1)) = (s.byte(), s.byte()) else {
        return;
    };
    let config = Config {
        max_inbound_streams: 1 + usize::from(c0 & 3),
        max_outbound_streams: 1 + usize::from((c0 >> 2) & 3),
        max_ack_backlog: 1 + usize::from((c0 >> 4) & 3),
        max_stream_window: [INITIAL_WINDOW, 1 << 20, 16 << 20][usize::from(c1 & 3) % 3],
        connection_window_budget: [0, 1 << 20, 64 << 20][usize::from((c1 >> 2) & 3) % 3],
        max_frame_data: [100, 4096, 64 << 10, 256 << 10][usize::from((c1 >> 4) & 3)],
        write_buffer: [1, 4096, 64 << 10, 256 << 10][usize::from(c1 >> 6)],
    };
    let mode = if c0 & 0x40 == 0 {
        Mode::Client
    } else {
        Mode::Server
    };
    let max_window = config.max_stream_window.max(INITIAL_WINDOW) as usize;
    let max_frame = config.max_frame_data.max(1);
    let start = Instant::now();
    let mut now = start;
    let mut conn = Connection::new(mode, config.clone(), now);
    let mut staged: Vec<u8> = Vec::new();
    let mut input = BytesMut::new();
    let mut ids: Vec<StreamId> = Vec::new();
    let mut wire = Vec::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut ended = false;

    while let Some(op) = s.byte() {
        let before = conn.pending_transmit();
        // How much this step may add to the bytes waiting for the transport.
        let mut allowed = 2 * HEADER_LEN;
        match op % 12 {
            // Raw hostile bytes.
            0 => {
                let n = usize::from(s.byte().unwrap_or(0));
                staged.extend_from_slice(s.bytes(n));
            }
            // A well-formed header (and payload), so that deep states are reached.
            1 => {
                let (Some(ty), Some(flags), Some(id), Some(sel)) =
                    (s.byte(), s.byte(), s.byte(), s.byte())
                else {
                    break;
                };
                let length = match sel {
                    0..=127 => u32::from(sel),
                    128..=191 => u32::from(s.u16().unwrap_or(0)) << 4,
                    192..=253 => INITIAL_WINDOW + u32::from(sel) - 222,
                    _ => u32::MAX - u32::from(sel & 1),
                };
                let ty = [
                    FrameType::Data,
                    FrameType::WindowUpdate,
                    FrameType::Ping,
                    FrameType::GoAway,
                ][usize::from(ty & 3)];
                let h = Header {
                    ty,
                    flags: Flags(u16::from(flags & 0x0f) | (u16::from(flags & 0x80) << 4)),
                    stream_id: u32::from(id),
                    length,
                };
                staged.extend_from_slice(&h.encode());
                if ty == FrameType::Data {
                    let n = (length as usize).min(300_000);
                    staged.extend(std::iter::repeat_n(0x5a, n));
                }
            }
            // Deliver some of what is staged, in one chunk.
            2 => {
                let n = usize::from(s.u16().unwrap_or(u16::MAX)).min(staged.len());
                let k = input.len() + n;
                input.extend_from_slice(&staged[..n]);
                staged.drain(..n);
                // Every header answered by at most one frame, and GoAway on a protocol error.
                allowed = (k / HEADER_LEN + 2) * HEADER_LEN;
                let r = conn.handle_input(&mut input, now);
                if ended {
                    assert!(r.is_err(), "an ended connection took input");
                }
                match r {
                    Ok(()) => assert!(input.len() < HEADER_LEN, "a whole header was left"),
                    Err(e) => {
                        ended = true;
                        assert_eq!(conn.closed(), Some(e));
                        assert!(input.is_empty());
                    }
                }
            }
            3 => {
                if let Ok(Some(id)) = conn.open_stream() {
                    ids.push(id);
                }
            }
            4 => {
                let (Some(p), Some(len)) = (s.byte(), s.u16()) else {
                    break;
                };
                if let Some(id) = pick(&ids, p) {
                    let len = usize::from(len) * 8;
                    let room = config.write_buffer.saturating_sub(before).max(max_frame);
                    allowed = room + room.div_ceil(max_frame) * HEADER_LEN;
                    let data = vec![0xa5; len];
                    let _ = conn.write(id, &data);
                    if before >= config.write_buffer {
                        allowed = 0;
                    }
                }
            }
            5 => {
                let (Some(p), Some(len)) = (s.byte(), s.u16()) else {
                    break;
                };
                if let Some(id) = pick(&ids, p) {
                    let len = usize::from(len).min(buf.len());
                    let _ = conn.read(id, &mut buf[..len], now);
                }
            }
            6 => {
                if let Some(id) = pick(&ids, s.byte().unwrap_or(0)) {
                    let _ = conn.finish(id);
                }
            }
            7 => {
                if let Some(id) = pick(&ids, s.byte().unwrap_or(0)) {
                    let _ = conn.reset(id);
                }
            }
            8 => {
                if let Some(id) = pick(&ids, s.byte().unwrap_or(0)) {
                    conn.release(id);
                    ids.retain(|&x| x != id);
                    assert_eq!(conn.readable_bytes(id), 0);
                }
            }
            9 => {
                wire.clear();
                conn.take_transmit(&mut wire);
                assert_eq!(wire.len(), before);
                assert_eq!(conn.pending_transmit(), 0);
            }
            10 => now += Duration::from_millis(u64::from(s.byte().unwrap_or(0)) * 16),
            _ => {
                if s.byte().unwrap_or(0) & 1 == 0 {
                    conn.close();
                } else {
                    conn.connection_lost();
                }
                ended = true;
            }
        }
        let grown = conn.pending_transmit().saturating_sub(before);
        assert!(
            grown <= allowed,
            "op {op}: {grown} bytes queued, at most {allowed} allowed"
        );
        while let Some(e) = conn.poll_event() {
            if let Event::Inbound(id) = e {
                assert!(!ids.contains(&id), "{id} announced twice");
                ids.push(id);
            }
        }
        assert_eq!(ended, conn.closed().is_some());
        assert!(conn.inbound_count() <= config.max_inbound_streams);
        assert!(conn.outbound_count() <= config.max_outbound_streams);
        assert_eq!(conn.stream_count(), ids.len());
        assert_eq!(
            conn.stream_count(),
            conn.inbound_count() + conn.outbound_count()
        );
        for &id in &ids {
            let buffered = conn.readable_bytes(id);
            assert!(
                buffered <= max_window,
                "stream {id}: {buffered} bytes buffered, window at most {max_window}"
            );
        }
    }
}
