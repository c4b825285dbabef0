//! Model test: two connected state machines under random operations (opens, writes, reads,
//! finishes, resets, releases, a close or a lost transport), with the bytes in transit delivered
//! in random chunks at random times, checked against a reference model.
//!
//! The model reads the frames as they are delivered (their order is never changed: TCP is
//! ordered) and keeps, per side and stream, what the documented contract says the application
//! must see: every read and write outcome, open outcome, event and count is predicted exactly.
//! At the end, with every byte delivered, each stream is read to its end and checked against
//! the plain contract (FIN: all bytes then `End`; RST: `Reset`; neither: all bytes then
//! `Blocked`).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use p2pnet_yamux::*;
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    Open(usize),
    Write(usize, usize, usize),
    Read(usize, usize, usize),
    Finish(usize, usize),
    Reset(usize, usize),
    Release(usize, usize),
    /// `take_transmit` of one side into its bytes in transit.
    Flush(usize),
    /// Delivers up to this many bytes in transit from one side to the other.
    Deliver(usize, usize),
    Advance(u64),
    Close(usize),
    Lost,
}

/// One side's view of one stream, as the contract defines it.
#[derive(Debug)]
struct MStream {
    /// The handle (inbound streams get it from `Event::Inbound`).
    sid: Option<StreamId>,
    local_fin: bool,
    remote_fin: bool,
    failure: Option<StreamError>,
    /// Bytes of the peer's data the application read.
    read_pos: usize,
    /// Bytes of the peer's data that arrived (read or buffered).
    arrived: usize,
    send_window: u64,
    awaiting_ack: bool,
    /// Got `Blocked` and no event since.
    read_blocked: bool,
    write_blocked: bool,
}

impl MStream {
    fn new(sid: Option<StreamId>) -> Self {
        Self {
            awaiting_ack: sid.is_some(),
            sid,
            local_fin: false,
            remote_fin: false,
            failure: None,
            read_pos: 0,
            arrived: 0,
            send_window: u64::from(INITIAL_WINDOW),
            read_blocked: false,
            write_blocked: false,
        }
    }

    fn finished(&self) -> bool {
        self.local_fin && self.remote_fin
    }

    fn fail(&mut self, why: StreamError) -> bool {
        if self.failure.is_some() || self.finished() {
            return false;
        }
        self.failure = Some(why);
        if !self.remote_fin {
            self.arrived = self.read_pos;
        }
        true
    }

    fn predict_read(&self, len: usize) -> Result<ReadOutcome, StreamError> {
        if let Some(f) = self.failure
            && !self.remote_fin
        {
            return Err(f);
        }
        if len == 0 {
            return Ok(ReadOutcome::Data(0));
        }
        if self.arrived > self.read_pos {
            return Ok(ReadOutcome::Data(len.min(self.arrived - self.read_pos)));
        }
        if self.remote_fin {
            return Ok(ReadOutcome::End);
        }
        Ok(ReadOutcome::Blocked)
    }

    fn predict_write(
        &self,
        len: usize,
        room: usize,
        max_frame: usize,
    ) -> Result<WriteOutcome, StreamError> {
        if self.local_fin {
            return Err(StreamError::Finished);
        }
        if let Some(f) = self.failure {
            return Err(f);
        }
        if len == 0 {
            return Ok(WriteOutcome::Written(0));
        }
        if self.send_window == 0 || room == 0 {
            return Ok(WriteOutcome::Blocked);
        }
        let n = (len as u64)
            .min(self.send_window)
            .min(room.max(max_frame) as u64);
        Ok(WriteOutcome::Written(n as usize))
    }
}

/// The frame reader of the bytes delivered into one side.
#[derive(Debug, Default)]
struct Parser {
    header: Vec<u8>,
    /// Stream, remaining payload, flags, whether the payload is buffered.
    payload: Option<(u32, u32, Flags, bool)>,
}

struct Side {
    conn: Connection,
    mode: Mode,
    m: BTreeMap<u32, MStream>,
    inbound: usize,
    outbound: usize,
    next_id: u32,
    closed: Option<ConnectionError>,
    go_away: bool,
    /// Bytes taken from `conn`, not yet delivered to the peer.
    transit: VecDeque<u8>,
    /// What was delivered into `conn` and is not consumed yet (a partial header).
    input: BytesMut,
    parser: Parser,
    /// Bytes this side wrote, per stream (kept after release).
    written: HashMap<u32, Vec<u8>>,
    /// Streams whose FIN we sent before any RST.
    fin_sent: BTreeSet<u32>,
    /// Streams we reset (RST sent) before any FIN.
    rst_sent: BTreeSet<u32>,
    /// Streams we reset ourselves.
    reset_locally: BTreeSet<u32>,
    /// Events the model expects before the next check.
    expect_inbound: Vec<u32>,
    expect_refused: Vec<u32>,
    expect_go_away: bool,
    expect_all: bool,
    /// Inbound streams this side refused (the peer's stream ends with RST).
    refused: BTreeSet<u32>,
}

impl Side {
    fn new(mode: Mode, config: Config, now: Instant) -> Self {
        Self {
            conn: Connection::new(mode, config, now),
            mode,
            m: BTreeMap::new(),
            inbound: 0,
            outbound: 0,
            next_id: match mode {
                Mode::Client => 1,
                Mode::Server => 2,
            },
            closed: None,
            go_away: false,
            transit: VecDeque::new(),
            input: BytesMut::new(),
            parser: Parser::default(),
            written: HashMap::new(),
            fin_sent: BTreeSet::new(),
            rst_sent: BTreeSet::new(),
            reset_locally: BTreeSet::new(),
            expect_inbound: Vec::new(),
            expect_refused: Vec::new(),
            expect_go_away: false,
            expect_all: false,
            refused: BTreeSet::new(),
        }
    }

    fn pick(&self, i: usize) -> Option<u32> {
        if self.m.is_empty() {
            return None;
        }
        self.m.keys().nth(i % self.m.len()).copied()
    }

    fn is_ours(&self, id: u32) -> bool {
        (self.mode == Mode::Client) == (id % 2 == 1)
    }

    fn awaiting(&self) -> usize {
        self.m.values().filter(|s| s.awaiting_ack).count()
    }

    fn end(&mut self, why: ConnectionError, e: StreamError) {
        if self.closed.is_some() {
            return;
        }
        self.closed = Some(why);
        for s in self.m.values_mut() {
            s.fail(e);
        }
        self.expect_all = true;
    }

    /// The model's reading of bytes delivered into this side.
    fn parse(&mut self, config: &Config, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            if let Some((id, remaining, flags, deliver)) = self.parser.payload {
                let n = bytes.len().min(remaining as usize);
                bytes = &bytes[n..];
                if deliver
                    && let Some(s) = self.m.get_mut(&id)
                    && s.failure.is_none()
                {
                    s.arrived += n;
                }
                let remaining = remaining - n as u32;
                if remaining == 0 {
                    self.parser.payload = None;
                    self.end_flags(id, flags);
                } else {
                    self.parser.payload = Some((id, remaining, flags, deliver));
                }
                continue;
            }
            let take = (HEADER_LEN - self.parser.header.len()).min(bytes.len());
            self.parser.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.parser.header.len() < HEADER_LEN {
                continue;
            }
            let raw: [u8; HEADER_LEN] = self.parser.header[..].try_into().unwrap();
            self.parser.header.clear();
            let h = Header::decode(&raw).expect("an honest peer sends valid headers");
            self.on_header(config, h);
        }
    }

    fn on_header(&mut self, config: &Config, h: Header) {
        match h.ty {
            FrameType::Ping => return,
            FrameType::GoAway => {
                assert_eq!(h.length, 0, "an honest GoAway is normal");
                if !self.go_away {
                    self.go_away = true;
                    self.expect_go_away = true;
                }
                return;
            }
            FrameType::Data | FrameType::WindowUpdate => {}
        }
        let id = h.stream_id;
        assert_ne!(id, 0);
        if h.flags.contains(Flags::SYN) {
            assert!(!self.is_ours(id), "SYN of our parity {id}");
            assert!(!self.m.contains_key(&id), "duplicate SYN {id}");
            if self.inbound >= config.max_inbound_streams {
                self.refused.insert(id);
                self.expect_refused.push(id);
            } else {
                self.m.insert(id, MStream::new(None));
                self.inbound += 1;
                self.expect_inbound.push(id);
            }
        }
        let mut deliver = false;
        if let Some(s) = self.m.get_mut(&id) {
            if h.flags.contains(Flags::ACK) {
                s.awaiting_ack = false;
            }
            match h.ty {
                FrameType::WindowUpdate => s.send_window += u64::from(h.length),
                _ => deliver = s.failure.is_none() && !s.remote_fin,
            }
        }
        if h.ty == FrameType::Data && h.length > 0 {
            self.parser.payload = Some((id, h.length, h.flags, deliver));
        } else {
            self.end_flags(id, h.flags);
        }
    }

    fn end_flags(&mut self, id: u32, flags: Flags) {
        let Some(s) = self.m.get_mut(&id) else {
            return;
        };
        if flags.contains(Flags::RST) {
            s.fail(StreamError::Reset);
            s.awaiting_ack = false;
        } else if flags.contains(Flags::FIN) && s.failure.is_none() {
            s.remote_fin = true;
        }
    }

    /// Polls every event and checks the side against the model.
    fn check(&mut self, max_window: usize) {
        while let Some(e) = self.conn.poll_event() {
            match e {
                Event::Inbound(id) => {
                    let at = self.expect_inbound.iter().position(|&x| x == id.get());
                    self.expect_inbound
                        .remove(at.unwrap_or_else(|| panic!("unexpected {e:?}")));
                    self.m.get_mut(&id.get()).expect("an accepted stream").sid = Some(id);
                }
                Event::InboundRefused(id) => {
                    let at = self.expect_refused.iter().position(|&x| x == id.get());
                    self.expect_refused
                        .remove(at.unwrap_or_else(|| panic!("unexpected {e:?}")));
                }
                Event::Readable(id) => {
                    if let Some(s) = self.m.get_mut(&id.get()) {
                        s.read_blocked = false;
                    }
                }
                Event::Writable(id) => {
                    if let Some(s) = self.m.get_mut(&id.get()) {
                        s.write_blocked = false;
                    }
                }
                Event::AllStreams => {
                    self.expect_all = false;
                    for s in self.m.values_mut() {
                        s.read_blocked = false;
                        s.write_blocked = false;
                    }
                }
                Event::RemoteGoAway(code) => {
                    assert!(self.expect_go_away, "unexpected {e:?}");
                    assert_eq!(code, 0);
                    self.expect_go_away = false;
                }
            }
        }
        assert!(
            self.expect_inbound.is_empty(),
            "lost Inbound {:?}",
            self.expect_inbound
        );
        assert!(
            self.expect_refused.is_empty(),
            "lost InboundRefused {:?}",
            self.expect_refused
        );
        assert!(!self.expect_go_away, "lost RemoteGoAway");
        assert!(!self.expect_all, "lost AllStreams");
        assert_eq!(self.conn.stream_count(), self.m.len());
        assert_eq!(self.conn.inbound_count(), self.inbound);
        assert_eq!(self.conn.outbound_count(), self.outbound);
        assert_eq!(self.conn.closed(), self.closed);
        assert_eq!(self.conn.remote_go_away(), self.go_away);
        let config = self.conn.config().clone();
        assert!(self.inbound <= config.max_inbound_streams);
        assert!(self.outbound <= config.max_outbound_streams);
        let room = config
            .write_buffer
            .saturating_sub(self.conn.pending_transmit());
        let max_frame = config.max_frame_data.max(1);
        for (&id, s) in &self.m {
            let sid = s.sid.expect("every stream's id is known");
            if s.read_blocked {
                assert_eq!(
                    s.predict_read(1),
                    Ok(ReadOutcome::Blocked),
                    "stream {id}: a blocked reader's state changed without Readable"
                );
            }
            if s.write_blocked {
                assert_eq!(
                    s.predict_write(1, room, max_frame),
                    Ok(WriteOutcome::Blocked),
                    "stream {id}: a blocked writer's state changed without Writable"
                );
            }
            let buffered = self.conn.readable_bytes(sid);
            assert!(
                buffered <= max_window,
                "stream {id}: {buffered} bytes buffered"
            );
            assert_eq!(buffered, s.arrived - s.read_pos, "stream {id}: buffered");
        }
    }
}

fn pattern(id: u32, offset: usize) -> u8 {
    ((offset as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8 ^ (id as u8)
}

struct World {
    sides: [Side; 2],
    config: Config,
    now: Instant,
    dead: bool,
}

impl World {
    fn new(config: Config) -> Self {
        let now = Instant::now();
        Self {
            sides: [
                Side::new(Mode::Client, config.clone(), now),
                Side::new(Mode::Server, config.clone(), now),
            ],
            config,
            now,
            dead: false,
        }
    }

    fn max_window(&self) -> usize {
        self.config.max_stream_window.max(INITIAL_WINDOW) as usize
    }

    fn check(&mut self) {
        let w = self.max_window();
        for s in &mut self.sides {
            s.check(w);
        }
    }

    fn flush(&mut self, from: usize) {
        let side = &mut self.sides[from];
        let mut wire = Vec::new();
        side.conn.take_transmit(&mut wire);
        if !self.dead {
            side.transit.extend(wire);
        }
    }

    fn deliver(&mut self, from: usize, max: usize) {
        if self.sides[from].transit.is_empty() {
            self.flush(from);
        }
        let n = max.min(self.sides[from].transit.len());
        if n == 0 {
            return;
        }
        let chunk: Vec<u8> = self.sides[from].transit.drain(..n).collect();
        let to = &mut self.sides[1 - from];
        if let Some(closed) = to.closed {
            let mut input = BytesMut::from(&chunk[..]);
            assert_eq!(to.conn.handle_input(&mut input, self.now), Err(closed));
            return;
        }
        // The frames' effect on the reference model first, then on the connection.
        to.parse(&self.config, &chunk);
        to.input.extend_from_slice(&chunk);
        to.conn
            .handle_input(&mut to.input, self.now)
            .expect("two honest peers never break the protocol");
        assert!(to.input.len() < HEADER_LEN, "only a partial header stays");
    }

    fn apply(&mut self, op: &Op) {
        let now = self.now;
        let max_frame = self.config.max_frame_data.max(1);
        match *op {
            Op::Open(side) => {
                let s = &mut self.sides[side];
                let want = if let Some(c) = s.closed {
                    Err(OpenError::Closed(c))
                } else if s.go_away {
                    Err(OpenError::RemoteGoAway)
                } else if s.outbound >= self.config.max_outbound_streams {
                    Err(OpenError::LimitReached(self.config.max_outbound_streams))
                } else if s.awaiting() >= self.config.max_ack_backlog {
                    Ok(None)
                } else {
                    Ok(Some(s.next_id))
                };
                let got = s.conn.open_stream();
                assert_eq!(got.map(|o| o.map(StreamId::get)), want, "open");
                if let Ok(Some(id)) = got {
                    s.m.insert(id.get(), MStream::new(Some(id)));
                    s.outbound += 1;
                    s.next_id += 2;
                }
            }
            Op::Write(side, pick, len) => {
                let s = &mut self.sides[side];
                let Some(id) = s.pick(pick) else { return };
                let sid = s.m[&id].sid.unwrap();
                let written = s.written.entry(id).or_default();
                let data: Vec<u8> = (written.len()..written.len() + len)
                    .map(|o| pattern(id, o))
                    .collect();
                let room = self
                    .config
                    .write_buffer
                    .saturating_sub(s.conn.pending_transmit());
                let ms = s.m.get_mut(&id).unwrap();
                let want = ms.predict_write(len, room, max_frame);
                let got = s.conn.write(sid, &data);
                assert_eq!(got, want, "write {len} on {id}");
                match got {
                    Ok(WriteOutcome::Written(n)) => {
                        ms.send_window -= n as u64;
                        written.extend_from_slice(&data[..n]);
                    }
                    Ok(WriteOutcome::Blocked) => ms.write_blocked = true,
                    Err(_) => {}
                }
            }
            Op::Read(side, pick, len) => {
                if let Some(id) = self.sides[side].pick(pick) {
                    let _ = self.read(side, id, len);
                }
            }
            Op::Finish(side, pick) => {
                let s = &mut self.sides[side];
                let Some(id) = s.pick(pick) else { return };
                let ms = s.m.get_mut(&id).unwrap();
                let want = match ms.failure {
                    Some(f) if !ms.local_fin => Err(f),
                    _ => Ok(()),
                };
                let first = !ms.local_fin && ms.failure.is_none();
                assert_eq!(s.conn.finish(ms.sid.unwrap()), want, "finish {id}");
                if first {
                    ms.local_fin = true;
                    ms.write_blocked = false;
                    if !s.rst_sent.contains(&id) {
                        s.fin_sent.insert(id);
                    }
                }
            }
            Op::Reset(side, pick) => {
                let s = &mut self.sides[side];
                let Some(id) = s.pick(pick) else { return };
                let ms = s.m.get_mut(&id).unwrap();
                assert_eq!(s.conn.reset(ms.sid.unwrap()), Ok(()));
                if ms.failure.is_none() && !ms.finished() {
                    ms.remote_fin = false;
                    ms.fail(StreamError::ResetLocally);
                    ms.awaiting_ack = false;
                    if !s.fin_sent.contains(&id) {
                        s.rst_sent.insert(id);
                    }
                    s.reset_locally.insert(id);
                }
                ms.read_blocked = false;
                ms.write_blocked = false;
            }
            Op::Release(side, pick) => {
                let s = &mut self.sides[side];
                let Some(id) = s.pick(pick) else { return };
                let ms = s.m.remove(&id).unwrap();
                let sid = ms.sid.unwrap();
                s.conn.release(sid);
                if ms.failure.is_none()
                    && !ms.finished()
                    && s.closed.is_none()
                    && !s.fin_sent.contains(&id)
                {
                    s.rst_sent.insert(id);
                }
                if s.is_ours(id) {
                    s.outbound -= 1;
                } else {
                    s.inbound -= 1;
                }
                let mut buf = [0u8; 4];
                assert_eq!(
                    s.conn.read(sid, &mut buf, now),
                    Err(StreamError::UnknownStream)
                );
                assert_eq!(s.conn.write(sid, b"x"), Err(StreamError::UnknownStream));
            }
            Op::Flush(side) => self.flush(side),
            Op::Deliver(from, max) => {
                if !self.dead {
                    self.deliver(from, max);
                }
            }
            Op::Advance(ms) => self.now += Duration::from_millis(ms),
            Op::Close(side) => {
                let s = &mut self.sides[side];
                s.conn.close();
                s.end(ConnectionError::Closed, StreamError::Aborted);
                for ms in s.m.values_mut() {
                    ms.read_blocked = false;
                    ms.write_blocked = false;
                }
            }
            Op::Lost => self.lose(),
        }
        self.check();
    }

    fn lose(&mut self) {
        self.dead = true;
        for s in &mut self.sides {
            s.conn.connection_lost();
            s.end(ConnectionError::Lost, StreamError::Lost);
            s.transit.clear();
            s.input.clear();
            s.parser = Parser::default();
        }
    }

    /// Delivers everything both ways until nothing moves; a closed side's transport then ends.
    fn settle(&mut self) {
        if self.dead {
            return;
        }
        for _ in 0..10_000 {
            self.flush(0);
            self.flush(1);
            if self.sides[0].transit.is_empty() && self.sides[1].transit.is_empty() {
                break;
            }
            self.deliver(0, usize::MAX);
            self.deliver(1, usize::MAX);
            self.check();
        }
        if self.sides.iter().any(|s| s.closed.is_some()) {
            self.lose();
            self.check();
        }
    }

    fn read(&mut self, side: usize, id: u32, len: usize) -> Result<ReadOutcome, StreamError> {
        let now = self.now;
        let (s, peer) = split(&mut self.sides, side);
        let ms = s.m.get_mut(&id).unwrap();
        let want = ms.predict_read(len);
        let mut buf = vec![0u8; len];
        let got = s.conn.read(ms.sid.unwrap(), &mut buf, now);
        assert_eq!(got, want, "read {len} on {id}");
        match got {
            Ok(ReadOutcome::Data(n)) => {
                let sent = peer.written.get(&id).map_or(&[][..], |v| &v[..]);
                assert_eq!(
                    &buf[..n],
                    &sent[ms.read_pos..ms.read_pos + n],
                    "bytes of {id}"
                );
                ms.read_pos += n;
            }
            Ok(ReadOutcome::Blocked) => ms.read_blocked = true,
            Ok(ReadOutcome::End) => {
                let sent = peer.written.get(&id).map_or(0, Vec::len);
                assert_eq!(ms.read_pos, sent, "End of {id} before all its bytes");
                assert!(peer.fin_sent.contains(&id), "End of {id} without FIN");
            }
            Err(_) => {}
        }
        got
    }

    /// Reads every stream to its end and checks it against the plain contract: with no close and
    /// no lost transport, a stream whose writer finished gives all its bytes then `End`, one it
    /// reset gives `Reset`, any other all its bytes then `Blocked`.
    fn read_everything(&mut self, clean: bool) {
        self.settle();
        for side in 0..2 {
            let ids: Vec<u32> = self.sides[side].m.keys().copied().collect();
            for id in ids {
                let outcome = loop {
                    let o = self.read(side, id, 64 * 1024);
                    self.check();
                    if !matches!(o, Ok(ReadOutcome::Data(_))) {
                        break o;
                    }
                };
                if !clean {
                    continue;
                }
                let (r, w) = split(&mut self.sides, side);
                let got = r.m[&id].read_pos;
                let sent = w.written.get(&id).map_or(0, Vec::len);
                if r.reset_locally.contains(&id) {
                    assert_eq!(outcome, Err(StreamError::ResetLocally), "{id}");
                } else if w.fin_sent.contains(&id) {
                    assert_eq!((got, outcome), (sent, Ok(ReadOutcome::End)), "{id}: FIN");
                } else if w.rst_sent.contains(&id) || w.refused.contains(&id) {
                    assert_eq!(outcome, Err(StreamError::Reset), "{id}: RST");
                } else {
                    assert_eq!(
                        (got, outcome),
                        (sent, Ok(ReadOutcome::Blocked)),
                        "{id}: open"
                    );
                }
            }
        }
    }
}

fn split(sides: &mut [Side; 2], i: usize) -> (&mut Side, &mut Side) {
    let [a, b] = sides;
    if i == 0 { (a, b) } else { (b, a) }
}

fn op(config: Config) -> impl Strategy<Value = Op> {
    let _ = config;
    let side = 0..2usize;
    let pick = any::<usize>();
    let write_len = prop_oneof![4 => 0..64usize, 2 => 64..8192usize, 2 => 8192..600_000usize];
    let read_len = prop_oneof![3 => 1..64usize, 2 => 64..70_000usize, 1 => Just(0usize)];
    let deliver_len = prop_oneof![2 => 1..32usize, 2 => 1..100_000usize, 2 => Just(usize::MAX)];
    prop_oneof![
        2 => side.clone().prop_map(Op::Open),
        8 => (side.clone(), pick, write_len).prop_map(|(s, p, l)| Op::Write(s, p, l)),
        8 => (side.clone(), pick, read_len).prop_map(|(s, p, l)| Op::Read(s, p, l)),
        2 => (side.clone(), pick).prop_map(|(s, p)| Op::Finish(s, p)),
        1 => (side.clone(), pick).prop_map(|(s, p)| Op::Reset(s, p)),
        1 => (side.clone(), pick).prop_map(|(s, p)| Op::Release(s, p)),
        2 => side.clone().prop_map(Op::Flush),
        10 => (side, deliver_len).prop_map(|(s, n)| Op::Deliver(s, n)),
        2 => (0..200u64).prop_map(Op::Advance),
    ]
}

fn config() -> impl Strategy<Value = Config> {
    (
        1..5usize,
        1..6usize,
        1..5usize,
        prop_oneof![
            Just(INITIAL_WINDOW),
            Just(1024 * 1024),
            Just(16 * 1024 * 1024)
        ],
        prop_oneof![Just(0usize), Just(512 * 1024), Just(64 * 1024 * 1024)],
        prop_oneof![
            Just(100usize),
            Just(4096),
            Just(64 * 1024),
            Just(256 * 1024)
        ],
        prop_oneof![Just(1usize), Just(4096), Just(64 * 1024), Just(256 * 1024)],
    )
        .prop_map(
            |(inbound, outbound, backlog, window, budget, frame, write_buffer)| Config {
                max_inbound_streams: inbound,
                max_outbound_streams: outbound,
                max_ack_backlog: backlog,
                max_stream_window: window,
                connection_window_budget: budget,
                max_frame_data: frame,
                write_buffer,
            },
        )
}

fn case() -> impl Strategy<Value = (Config, Vec<Op>, Option<(usize, Op)>)> {
    let ending = prop_oneof![
        3 => Just(None),
        1 => any::<usize>().prop_map(|at| Some((at, Op::Close(0)))),
        1 => any::<usize>().prop_map(|at| Some((at, Op::Close(1)))),
        1 => any::<usize>().prop_map(|at| Some((at, Op::Lost))),
    ];
    config().prop_flat_map(move |c| {
        (
            Just(c.clone()),
            proptest::collection::vec(op(c), 1..120),
            ending.clone(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn two_connections_follow_the_model((config, mut ops, ending) in case()) {
        if let Some((at, end)) = ending {
            let at = at % (ops.len() + 1);
            ops.insert(at, end);
        }
        let clean = !ops.iter().any(|o| matches!(o, Op::Close(_) | Op::Lost));
        let mut world = World::new(config);
        world.check();
        for op in &ops {
            world.apply(op);
        }
        world.read_everything(clean);
    }
}
