//! Two connected state machines: stream ends, limits, windows, hostile frames.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use p2pnet_yamux::*;

struct Pair {
    client: Connection,
    server: Connection,
    now: Instant,
}

impl Pair {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        let mut p = Self {
            client: Connection::new(Mode::Client, config.clone(), now),
            server: Connection::new(Mode::Server, config, now),
            now,
        };
        p.settle();
        drain(&mut p.client);
        drain(&mut p.server);
        p
    }

    /// Carries bytes both ways until neither side has anything to send.
    fn settle(&mut self) {
        for _ in 0..100 {
            let a = pump(&mut self.client, &mut self.server, self.now);
            let b = pump(&mut self.server, &mut self.client, self.now);
            if a == 0 && b == 0 {
                return;
            }
        }
        panic!("did not settle");
    }
}

fn pump(from: &mut Connection, to: &mut Connection, now: Instant) -> usize {
    let mut wire = Vec::new();
    from.take_transmit(&mut wire);
    let n = wire.len();
    if n > 0 {
        let _ = to.handle_input(&mut BytesMut::from(&wire[..]), now);
    }
    n
}

fn drain(c: &mut Connection) -> Vec<Event> {
    std::iter::from_fn(|| c.poll_event()).collect()
}

fn inbound(c: &mut Connection) -> StreamId {
    drain(c)
        .into_iter()
        .find_map(|e| match e {
            Event::Inbound(id) => Some(id),
            _ => None,
        })
        .expect("an inbound stream")
}

fn read_all(c: &mut Connection, id: StreamId, now: Instant) -> (Vec<u8>, ReadOutcome) {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match c.read(id, &mut buf, now).unwrap() {
            ReadOutcome::Data(n) => out.extend_from_slice(&buf[..n]),
            other => return (out, other),
        }
    }
}

#[test]
fn open_write_finish_read_end() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    assert_eq!(
        p.client.write(id, b"ping").unwrap(),
        WriteOutcome::Written(4)
    );
    p.client.finish(id).unwrap();
    p.settle();
    let s = inbound(&mut p.server);
    assert_eq!(
        read_all(&mut p.server, s, p.now),
        (b"ping".to_vec(), ReadOutcome::End)
    );
    // Half close: the server still writes back.
    assert_eq!(
        p.server.write(s, b"pong").unwrap(),
        WriteOutcome::Written(4)
    );
    p.server.finish(s).unwrap();
    p.settle();
    assert_eq!(
        read_all(&mut p.client, id, p.now),
        (b"pong".to_vec(), ReadOutcome::End)
    );
    // Writing after our FIN is an error of its own.
    assert_eq!(p.client.write(id, b"x"), Err(StreamError::Finished));
    p.client.release(id);
    p.server.release(s);
    p.settle();
    assert_eq!((p.client.stream_count(), p.server.stream_count()), (0, 0));
}

#[test]
fn reset_after_our_fin_reaches_the_peer() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    p.client.write(id, b"upload").unwrap();
    p.client.finish(id).unwrap();
    p.settle();
    let s = inbound(&mut p.server);
    // The server is mid-answer when the client resets after its half close.
    p.server.write(s, b"partial").unwrap();
    p.settle();
    p.client.reset(id).unwrap();
    p.settle();
    // The server's writes fail: the client is gone.
    assert_eq!(p.server.write(s, b"more"), Err(StreamError::Reset));
    // Its reads still give the complete upload (its FIN came before the reset), then the end.
    assert_eq!(
        read_all(&mut p.server, s, p.now),
        (b"upload".to_vec(), ReadOutcome::End)
    );
}

#[test]
fn reset_after_the_peers_fin_is_not_a_fin() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    p.client.write(id, b"request").unwrap();
    p.settle();
    let s = inbound(&mut p.server);
    p.server.write(s, b"answer").unwrap();
    p.server.finish(s).unwrap();
    p.settle();
    // The client got the server's FIN and aborts its own upload mid-way.
    p.client.reset(id).unwrap();
    p.settle();
    let mut buf = [0u8; 64];
    assert_eq!(p.server.read(s, &mut buf, p.now), Err(StreamError::Reset));
}

#[test]
fn release_after_our_fin_sends_rst_so_the_peers_writer_does_not_stall() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    p.client.finish(id).unwrap();
    p.settle();
    let s = inbound(&mut p.server);
    p.client.release(id);
    p.settle();
    assert_eq!(p.server.write(s, b"x"), Err(StreamError::Reset));
}

#[test]
fn peer_reset_fails_a_blocked_reader_and_writer() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    p.settle();
    let s = inbound(&mut p.server);
    let mut buf = [0u8; 8];
    assert_eq!(p.server.read(s, &mut buf, p.now), Ok(ReadOutcome::Blocked));
    p.client.write(id, b"lost").unwrap();
    p.client.reset(id).unwrap();
    p.settle();
    let events = drain(&mut p.server);
    assert!(events.contains(&Event::Readable(s)), "{events:?}");
    // Data before an RST is not handed out as if the stream were whole.
    assert_eq!(p.server.read(s, &mut buf, p.now), Err(StreamError::Reset));
    assert_eq!(p.server.write(s, b"x"), Err(StreamError::Reset));
    assert_eq!(p.server.finish(s), Err(StreamError::Reset));
}

#[test]
fn our_close_aborts_unfinished_streams_but_finished_ones_read_to_the_end() {
    let mut p = Pair::new(Config::default());
    let open = p.client.open_stream().unwrap().unwrap();
    let done = p.client.open_stream().unwrap().unwrap();
    p.client.write(done, b"all of it").unwrap();
    p.client.finish(done).unwrap();
    p.settle();
    drain(&mut p.server);
    // Stream ids are the same numbers on both sides.
    let mut buf = [0u8; 8];
    assert_eq!(
        p.server.read(open, &mut buf, p.now),
        Ok(ReadOutcome::Blocked)
    );
    p.server.close();
    assert!(drain(&mut p.server).contains(&Event::AllStreams));
    assert_eq!(
        p.server.read(open, &mut buf, p.now),
        Err(StreamError::Aborted)
    );
    assert_eq!(p.server.write(open, b"x"), Err(StreamError::Aborted));
    assert_eq!(p.server.write(done, b"x"), Err(StreamError::Aborted));
    assert_eq!(
        read_all(&mut p.server, done, p.now),
        (b"all of it".to_vec(), ReadOutcome::End)
    );
    assert!(matches!(
        p.server.open_stream(),
        Err(OpenError::Closed(ConnectionError::Closed))
    ));
    // The client learns of the GoAway and opens no more.
    p.settle();
    assert!(drain(&mut p.client).contains(&Event::RemoteGoAway(0)));
    assert_eq!(p.client.open_stream(), Err(OpenError::RemoteGoAway));
}

#[test]
fn lost_connection_resets_unfinished_streams_only() {
    let mut p = Pair::new(Config::default());
    let open = p.client.open_stream().unwrap().unwrap();
    let done = p.client.open_stream().unwrap().unwrap();
    p.client.write(open, b"cut").unwrap();
    p.client.write(done, b"whole").unwrap();
    p.client.finish(done).unwrap();
    p.settle();
    p.server.connection_lost();
    let mut buf = [0u8; 8];
    assert_eq!(p.server.read(open, &mut buf, p.now), Err(StreamError::Lost));
    assert_eq!(
        read_all(&mut p.server, done, p.now),
        (b"whole".to_vec(), ReadOutcome::End)
    );
}

#[test]
fn outbound_limit_fails_the_open_and_harms_nothing() {
    let config = Config {
        max_outbound_streams: 2,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    let a = p.client.open_stream().unwrap().unwrap();
    let _b = p.client.open_stream().unwrap().unwrap();
    assert_eq!(p.client.open_stream(), Err(OpenError::LimitReached(2)));
    p.client.write(a, b"still fine").unwrap();
    p.settle();
    p.client.release(a);
    assert!(p.client.open_stream().unwrap().is_some());
}

#[test]
fn inbound_over_the_limit_is_reset_alone() {
    let mut p = Pair::new(Config {
        max_inbound_streams: 1,
        ..Config::default()
    });
    let a = p.client.open_stream().unwrap().unwrap();
    let b = p.client.open_stream().unwrap().unwrap();
    p.client.write(a, b"kept").unwrap();
    p.client.write(b, b"refused").unwrap();
    p.settle();
    let events = drain(&mut p.server);
    assert_eq!(events, vec![Event::Inbound(a), Event::InboundRefused(b)]);
    assert_eq!(p.client.write(b, b"x"), Err(StreamError::Reset));
    assert_eq!(
        p.server.read(a, &mut [0u8; 4], p.now),
        Ok(ReadOutcome::Data(4))
    );
}

#[test]
fn ack_backlog_holds_opens_until_acknowledged() {
    let mut p = Pair::new(Config {
        max_ack_backlog: 3,
        ..Config::default()
    });
    let ids: Vec<_> = (0..3)
        .map(|_| p.client.open_stream().unwrap().unwrap())
        .collect();
    assert_eq!(p.client.open_stream(), Ok(None));
    p.settle();
    assert_eq!(p.client.open_stream(), Ok(None), "no implicit ACK");
    let s = inbound(&mut p.server);
    assert_eq!(s, ids[0]);
    p.server.write(s, b"ack").unwrap();
    p.settle();
    assert!(p.client.open_stream().unwrap().is_some());
}

#[test]
fn a_blocked_writer_resumes_on_window_update() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    let data = vec![7u8; 1 << 20];
    let mut sent = 0;
    while let WriteOutcome::Written(n) = p.client.write(id, &data[sent..]).unwrap() {
        sent += n;
        let mut wire = Vec::new();
        p.client.take_transmit(&mut wire);
        p.server
            .handle_input(&mut BytesMut::from(&wire[..]), p.now)
            .unwrap();
    }
    assert_eq!(sent, INITIAL_WINDOW as usize);
    let s = inbound(&mut p.server);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while got.len() < data.len() {
        match p.server.read(s, &mut buf, p.now).unwrap() {
            ReadOutcome::Data(n) => got.extend_from_slice(&buf[..n]),
            ReadOutcome::Blocked => {
                p.settle();
                assert!(drain(&mut p.client).contains(&Event::Writable(id)));
                while let WriteOutcome::Written(n) = p.client.write(id, &data[sent..]).unwrap() {
                    sent += n;
                    if sent == data.len() {
                        break;
                    }
                }
                p.settle();
            }
            ReadOutcome::End => panic!("early end"),
        }
    }
    assert_eq!(got, data);
}

#[test]
fn window_grows_when_used_up_within_round_trips() {
    // The ping's answer arrives a second later: a long round trip, so every window is used up
    // "within a few round trips" and doubles.
    let now = Instant::now();
    let mut client = Connection::new(Mode::Client, Config::default(), now);
    let mut server = Connection::new(Mode::Server, Config::default(), now);
    pump(&mut client, &mut server, now);
    pump(&mut server, &mut client, now + Duration::from_secs(1));
    assert_eq!(client.rtt(), Some(Duration::from_secs(1)));
    // The server sends, the client reads: the client's window for the stream grows.
    let id = server.open_stream().unwrap().unwrap();
    pump(&mut server, &mut client, now);
    let mut total_granted_frames = 0;
    let chunk = vec![1u8; 64 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    for _ in 0..64 {
        while let Ok(WriteOutcome::Written(_)) = server.write(id, &chunk) {}
        pump(&mut server, &mut client, now);
        while let Ok(ReadOutcome::Data(_)) = client.read(id, &mut buf, now) {}
        total_granted_frames += pump(&mut client, &mut server, now) / HEADER_LEN;
    }
    assert!(total_granted_frames > 0);
    assert!(client.readable_bytes(id) <= Config::default().max_stream_window as usize);
    // Data kept flowing with larger windows: a write now takes more than the initial window.
    let big = vec![2u8; 8 << 20];
    let mut sent = 0;
    while sent < big.len()
        && let Ok(WriteOutcome::Written(n)) = server.write(id, &big[sent..])
    {
        sent += n;
        let mut wire = Vec::new();
        server.take_transmit(&mut wire);
        client
            .handle_input(&mut BytesMut::from(&wire[..]), now)
            .unwrap();
    }
    assert!(
        sent > INITIAL_WINDOW as usize,
        "window did not grow: {sent}"
    );
}

#[test]
fn data_over_the_window_is_a_protocol_error_with_go_away() {
    let mut server = Connection::new(Mode::Server, Config::default(), Instant::now());
    let mut wire = Vec::new();
    let syn = Header {
        ty: FrameType::Data,
        flags: Flags::SYN,
        stream_id: 1,
        length: INITIAL_WINDOW + 1,
    };
    wire.extend_from_slice(&syn.encode());
    let err = server
        .handle_input(&mut BytesMut::from(&wire[..]), Instant::now())
        .unwrap_err();
    assert!(matches!(
        err,
        ConnectionError::Protocol(ProtocolError::WindowExceeded { stream: 1, .. })
    ));
    let mut out = Vec::new();
    server.take_transmit(&mut out);
    let last: [u8; HEADER_LEN] = out[out.len() - HEADER_LEN..].try_into().unwrap();
    let h = Header::decode(&last).unwrap();
    assert_eq!(
        (h.ty, h.length),
        (FrameType::GoAway, frame::go_away::PROTOCOL_ERROR)
    );
}

#[test]
fn hostile_headers_are_typed_errors() {
    let cases: [(Header, ProtocolError); 3] = [
        (
            Header {
                ty: FrameType::Data,
                flags: Flags::SYN,
                stream_id: 2,
                length: 0,
            },
            ProtocolError::WrongParity(2),
        ),
        (
            Header {
                ty: FrameType::WindowUpdate,
                flags: Flags::default(),
                stream_id: 0,
                length: 1,
            },
            ProtocolError::StreamIdZero,
        ),
        (
            Header {
                ty: FrameType::WindowUpdate,
                flags: Flags::SYN,
                stream_id: 1,
                length: u32::MAX,
            },
            ProtocolError::WindowOverflow(1),
        ),
    ];
    for (h, want) in cases {
        let mut server = Connection::new(Mode::Server, Config::default(), Instant::now());
        let err = server
            .handle_input(&mut BytesMut::from(&h.encode()[..]), Instant::now())
            .unwrap_err();
        assert_eq!(err, ConnectionError::Protocol(want));
    }
    // A duplicate SYN.
    let mut server = Connection::new(Mode::Server, Config::default(), Instant::now());
    let syn = Header {
        ty: FrameType::WindowUpdate,
        flags: Flags::SYN,
        stream_id: 1,
        length: 0,
    };
    let mut wire = syn.encode().to_vec();
    wire.extend_from_slice(&syn.encode());
    assert_eq!(
        server.handle_input(&mut BytesMut::from(&wire[..]), Instant::now()),
        Err(ConnectionError::Protocol(ProtocolError::DuplicateStream(1)))
    );
}

#[test]
fn input_split_at_every_byte_decodes_the_same() {
    let mut p = Pair::new(Config::default());
    let id = p.client.open_stream().unwrap().unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        match p.client.write(id, &data[sent..]).unwrap() {
            WriteOutcome::Written(n) => sent += n,
            WriteOutcome::Blocked => unreachable!(),
        }
    }
    p.client.finish(id).unwrap();
    let mut wire = Vec::new();
    p.client.take_transmit(&mut wire);
    let mut input = BytesMut::new();
    for b in wire {
        input.extend_from_slice(&[b]);
        p.server.handle_input(&mut input, p.now).unwrap();
    }
    let s = inbound(&mut p.server);
    assert_eq!(read_all(&mut p.server, s, p.now), (data, ReadOutcome::End));
}

#[test]
fn pings_are_answered_and_data_for_unknown_streams_skipped() {
    let mut server = Connection::new(Mode::Server, Config::default(), Instant::now());
    let mut out = Vec::new();
    server.take_transmit(&mut out); // its own first ping
    out.clear();
    let mut wire = Vec::new();
    wire.extend_from_slice(
        &Header {
            ty: FrameType::Ping,
            flags: Flags::SYN,
            stream_id: 0,
            length: 77,
        }
        .encode(),
    );
    wire.extend_from_slice(
        &Header {
            ty: FrameType::Data,
            flags: Flags::default(),
            stream_id: 9,
            length: 3,
        }
        .encode(),
    );
    wire.extend_from_slice(b"abc");
    server
        .handle_input(&mut BytesMut::from(&wire[..]), Instant::now())
        .unwrap();
    server.take_transmit(&mut out);
    let answer = Header::decode(&out[..HEADER_LEN].try_into().unwrap()).unwrap();
    assert_eq!(
        answer,
        Header {
            ty: FrameType::Ping,
            flags: Flags::ACK,
            stream_id: 0,
            length: 77
        }
    );
    assert_eq!(server.stream_count(), 0);
}

#[test]
fn window_granted_mid_frame_does_not_grant_the_bytes_still_in_flight() {
    // A window update sent while part of a data frame is still on its way must not give that
    // frame's remaining bytes to the peer again: what is buffered stays within the window.
    let config = Config {
        max_stream_window: INITIAL_WINDOW,
        max_frame_data: INITIAL_WINDOW as usize,
        write_buffer: 2 * INITIAL_WINDOW as usize,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    let id = p.client.open_stream().unwrap().unwrap();
    let data = vec![5u8; INITIAL_WINDOW as usize];
    assert_eq!(
        p.client.write(id, &data).unwrap(),
        WriteOutcome::Written(data.len())
    );
    let mut wire = Vec::new();
    p.client.take_transmit(&mut wire);
    // The header and three quarters of the one big frame arrive; the server reads them all.
    let cut = wire.len() - data.len() / 4;
    let mut input = BytesMut::from(&wire[..cut]);
    p.server.handle_input(&mut input, p.now).unwrap();
    let s = inbound(&mut p.server);
    let mut buf = vec![0u8; data.len()];
    assert_eq!(
        p.server.read(s, &mut buf, p.now).unwrap(),
        ReadOutcome::Data(data.len() * 3 / 4)
    );
    input.extend_from_slice(&wire[cut..]);
    p.server.handle_input(&mut input, p.now).unwrap();
    p.settle();
    // The client sends all it may.
    while let WriteOutcome::Written(_) = p.client.write(id, &data).unwrap() {
        p.settle();
    }
    assert!(
        p.server.readable_bytes(s) <= INITIAL_WINDOW as usize,
        "{} bytes buffered over a window of {INITIAL_WINDOW}",
        p.server.readable_bytes(s)
    );
}

#[test]
fn data_arriving_after_our_reset_mid_frame_is_not_buffered() {
    let config = Config {
        max_frame_data: 64 * 1024,
        ..Config::default()
    };
    let mut p = Pair::new(config);
    let id = p.client.open_stream().unwrap().unwrap();
    let data = vec![9u8; 64 * 1024];
    p.client.write(id, &data).unwrap();
    let mut wire = Vec::new();
    p.client.take_transmit(&mut wire);
    let half = wire.len() / 2;
    let mut input = BytesMut::from(&wire[..half]);
    p.server.handle_input(&mut input, p.now).unwrap();
    let s = inbound(&mut p.server);
    let mut buf = vec![0u8; data.len()];
    assert!(matches!(
        p.server.read(s, &mut buf, p.now),
        Ok(ReadOutcome::Data(_))
    ));
    assert_eq!(p.server.read(s, &mut buf, p.now), Ok(ReadOutcome::Blocked));
    // The server gives up on the stream while the rest of the frame is on its way.
    p.server.reset(s).unwrap();
    input.extend_from_slice(&wire[half..]);
    p.server.handle_input(&mut input, p.now).unwrap();
    assert_eq!(
        p.server.readable_bytes(s),
        0,
        "the rest was kept for nobody"
    );
    assert!(
        drain(&mut p.server).is_empty(),
        "no wake-up for a stream reset"
    );
    assert_eq!(
        p.server.read(s, &mut buf, p.now),
        Err(StreamError::ResetLocally)
    );
}

#[test]
fn a_writer_retrying_on_a_full_buffer_is_listed_once() {
    let mut p = Pair::new(Config {
        write_buffer: 1024,
        max_frame_data: 1024,
        ..Config::default()
    });
    let id = p.client.open_stream().unwrap().unwrap();
    assert!(matches!(
        p.client.write(id, &[0u8; 4096]).unwrap(),
        WriteOutcome::Written(_)
    ));
    for _ in 0..10_000 {
        assert_eq!(
            p.client.write(id, &[0u8; 16]).unwrap(),
            WriteOutcome::Blocked
        );
    }
    let mut wire = Vec::new();
    p.client.take_transmit(&mut wire);
    // One wake-up for the one writer, not one per retry.
    assert_eq!(drain(&mut p.client), vec![Event::Writable(id)]);
}
