//! [`Connection`]: the yamux state machine of one connection, with no I/O.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};

use crate::config::{Config, INITIAL_WINDOW};
use crate::error::{ConnectionError, OpenError, ProtocolError, StreamError};
use crate::frame::{FrameType, HEADER_LEN, Header, go_away};
use crate::stream::{Origin, ReadOutcome, StreamId, StreamState, WriteOutcome};
use crate::{Flags, Mode};

/// Payload chunks at least this long are handed on as slices of the read buffer; shorter ones
/// are copied, so that a few bytes never pin a whole read buffer.
const MIN_SLICE: usize = 32 * 1024;
/// How far answers to the peer's frames may take the write buffer past what stream data fills.
pub const CONTROL_SLACK: usize = 64 * 1024;
/// How often the round-trip time is measured again while windows are being granted.
const RTT_REFRESH: Duration = Duration::from_secs(30);

/// Something the driver must act on (see [`Connection::poll_event`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The peer opened this stream; it is ours to use (and later to release).
    Inbound(StreamId),
    /// The peer opened a stream over [`Config::max_inbound_streams`]; it was reset.
    InboundRefused(StreamId),
    /// A read on this stream that was `Blocked` may now succeed.
    Readable(StreamId),
    /// A write on this stream that was `Blocked` may now succeed.
    Writable(StreamId),
    /// Every stream may have changed (the connection closed, was lost or broke): wake them all.
    AllStreams,
    /// The peer sent GoAway with this code; it takes no new streams.
    RemoteGoAway(u32),
}

/// Where the decoder is in the byte stream.
#[derive(Debug, Clone, Copy)]
enum Decode {
    Header,
    /// Inside a data frame's payload; its flags apply once the payload is through.
    Payload {
        stream: u32,
        remaining: u32,
        flags: Flags,
        deliver: bool,
    },
}

/// The yamux state machine of one connection.
///
/// Feed it what the transport read ([`Connection::handle_input`]), send what it produces
/// ([`Connection::take_transmit`]), act on its events ([`Connection::poll_event`]) and call the
/// stream operations on behalf of the application. It never does I/O and never blocks; time comes
/// in as arguments.
#[derive(Debug)]
pub struct Connection {
    mode: Mode,
    config: Config,
    streams: HashMap<u32, StreamState>,
    next_id: Option<u32>,
    inbound: usize,
    outbound: usize,
    awaiting_ack: usize,
    out: Vec<u8>,
    /// Streams whose writes were blocked by a full write buffer.
    out_waiters: Vec<u32>,
    events: VecDeque<Event>,
    decode: Decode,
    closed: Option<ConnectionError>,
    remote_go_away: bool,
    /// Our ping in flight: its value and when it was sent.
    ping: Option<(u32, Instant)>,
    next_ping: u32,
    rtt: Option<Duration>,
    rtt_at: Option<Instant>,
    /// Receive window granted above the initial window, summed over streams.
    window_extra: usize,
}

impl Connection {
    /// A new connection. It starts by measuring the round-trip time with a ping.
    pub fn new(mode: Mode, config: Config, now: Instant) -> Self {
        let mut c = Self {
            mode,
            config,
            streams: HashMap::new(),
            next_id: Some(match mode {
                Mode::Client => 1,
                Mode::Server => 2,
            }),
            inbound: 0,
            outbound: 0,
            awaiting_ack: 0,
            out: Vec::new(),
            out_waiters: Vec::new(),
            events: VecDeque::new(),
            decode: Decode::Header,
            closed: None,
            remote_go_away: false,
            ping: None,
            next_ping: 1,
            rtt: None,
            rtt_at: None,
            window_extra: 0,
        };
        c.send_ping(now);
        c
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Streams in use (opened, not released), both directions.
    pub fn stream_count(&self) -> usize {
        self.streams.len()
    }

    /// Streams in use that the peer opened.
    pub fn inbound_count(&self) -> usize {
        self.inbound
    }

    /// Streams in use that we opened.
    pub fn outbound_count(&self) -> usize {
        self.outbound
    }

    /// The last measured round-trip time.
    pub fn rtt(&self) -> Option<Duration> {
        self.rtt
    }

    /// Why the connection ended, once it has.
    pub fn closed(&self) -> Option<ConnectionError> {
        self.closed
    }

    /// Whether the peer sent GoAway.
    pub fn remote_go_away(&self) -> bool {
        self.remote_go_away
    }

    /// Bytes waiting to be sent.
    pub fn pending_transmit(&self) -> usize {
        self.out.len()
    }

    /// Whether the frames waiting to be sent are more than stream data alone can queue
    /// ([`Config::write_buffer`] plus one frame) by [`CONTROL_SLACK`]: answers to what the peer
    /// sent (pings, refusals of its streams) piled up. The driver then sends before it reads
    /// more, so a peer that floods us and does not read is not answered without bound, while
    /// two honest peers that both write at full speed never both stop reading.
    pub fn transmit_full(&self) -> bool {
        self.out.len()
            >= self.config.write_buffer + self.config.max_frame_data + HEADER_LEN + CONTROL_SLACK
    }

    /// Moves the bytes to send into `buf` (appending; an empty `buf` is swapped in, keeping both
    /// allocations). Streams that were blocked by the full buffer become writable.
    pub fn take_transmit(&mut self, buf: &mut Vec<u8>) {
        if buf.is_empty() {
            std::mem::swap(buf, &mut self.out);
        } else {
            buf.append(&mut self.out);
        }
        for id in std::mem::take(&mut self.out_waiters) {
            if let Some(s) = self.streams.get_mut(&id)
                && std::mem::take(&mut s.write_waiting)
            {
                self.events.push_back(Event::Writable(StreamId(id)));
            }
        }
    }

    /// The next event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Takes what the transport read. Complete frames are consumed from `input` (data is handed
    /// to streams as it arrives, without waiting for the whole frame); a partial header stays.
    ///
    /// A protocol error ends the connection: GoAway (protocol error) is queued, unfinished
    /// streams fail with [`StreamError::Lost`], and the error is returned.
    pub fn handle_input(
        &mut self,
        input: &mut BytesMut,
        now: Instant,
    ) -> Result<(), ConnectionError> {
        if let Some(e) = self.closed {
            input.clear();
            return Err(e);
        }
        loop {
            match self.decode {
                Decode::Header => {
                    let Some(bytes) = input.get(..HEADER_LEN) else {
                        return Ok(());
                    };
                    let mut raw = [0u8; HEADER_LEN];
                    raw.copy_from_slice(bytes);
                    input.advance(HEADER_LEN);
                    if let Err(e) = Header::decode(&raw).and_then(|h| self.on_header(h, now)) {
                        input.clear();
                        return Err(self.protocol_error(e));
                    }
                }
                Decode::Payload {
                    stream,
                    remaining,
                    flags,
                    deliver,
                } => {
                    if input.is_empty() {
                        return Ok(());
                    }
                    let n = input.len().min(remaining as usize);
                    if deliver {
                        let chunk = if n >= MIN_SLICE {
                            input.split_to(n).freeze()
                        } else {
                            let c = Bytes::copy_from_slice(&input[..n]);
                            input.advance(n);
                            c
                        };
                        self.deliver(stream, chunk);
                    } else {
                        input.advance(n);
                    }
                    let remaining = remaining - n as u32;
                    if remaining == 0 {
                        self.decode = Decode::Header;
                        self.apply_end_flags(stream, flags);
                    } else {
                        self.decode = Decode::Payload {
                            stream,
                            remaining,
                            flags,
                            deliver,
                        };
                    }
                }
            }
        }
    }

    /// Opens a stream (its SYN is queued at once, so data may follow immediately).
    /// `Ok(None)`: the ACK backlog is full; try again after more input.
    pub fn open_stream(&mut self) -> Result<Option<StreamId>, OpenError> {
        if let Some(e) = self.closed {
            return Err(OpenError::Closed(e));
        }
        if self.remote_go_away {
            return Err(OpenError::RemoteGoAway);
        }
        if self.outbound >= self.config.max_outbound_streams {
            return Err(OpenError::LimitReached(self.config.max_outbound_streams));
        }
        if self.awaiting_ack >= self.config.max_ack_backlog {
            return Ok(None);
        }
        let id = self.next_id.ok_or(OpenError::IdsExhausted)?;
        self.next_id = id.checked_add(2);
        self.push_header(FrameType::WindowUpdate, Flags::SYN, id, 0);
        self.streams.insert(id, StreamState::new(Origin::Local));
        self.outbound += 1;
        self.awaiting_ack += 1;
        Ok(Some(StreamId(id)))
    }

    /// Reads into `buf`. After a peer's FIN, every byte sent before it is read and then
    /// [`ReadOutcome::End`]; after a reset, a close or a lost connection, a stream whose FIN had
    /// not arrived fails.
    pub fn read(
        &mut self,
        id: StreamId,
        buf: &mut [u8],
        now: Instant,
    ) -> Result<ReadOutcome, StreamError> {
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if let Some(f) = s.failure
            && !s.remote_fin
        {
            return Err(f);
        }
        if buf.is_empty() {
            return Ok(ReadOutcome::Data(0));
        }
        if s.buffered > 0 {
            let n = s.read_into(buf);
            self.grant_window(id.0, now);
            return Ok(ReadOutcome::Data(n));
        }
        if s.remote_fin {
            return Ok(ReadOutcome::End);
        }
        s.read_waiting = true;
        Ok(ReadOutcome::Blocked)
    }

    /// Bytes buffered for reading on `id`.
    pub fn readable_bytes(&self, id: StreamId) -> usize {
        self.streams.get(&id.0).map_or(0, |s| s.buffered)
    }

    /// Writes (some of) `data`, as data frames of at most [`Config::max_frame_data`], within the
    /// stream's send window and the write buffer.
    pub fn write(&mut self, id: StreamId, data: &[u8]) -> Result<WriteOutcome, StreamError> {
        let max_frame = self.config.max_frame_data.max(1);
        let room = self.config.write_buffer.saturating_sub(self.out.len());
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if s.local_fin {
            return Err(StreamError::Finished);
        }
        if let Some(f) = s.failure {
            return Err(f);
        }
        if data.is_empty() {
            return Ok(WriteOutcome::Written(0));
        }
        if s.send_window == 0 {
            s.write_waiting = true;
            return Ok(WriteOutcome::Blocked);
        }
        if room == 0 {
            // Listed once however often the writer retries before the buffer is taken.
            s.write_waiting = true;
            if !self.out_waiters.contains(&id.0) {
                self.out_waiters.push(id.0);
            }
            return Ok(WriteOutcome::Blocked);
        }
        let n = data
            .len()
            .min(s.send_window as usize)
            .min(room.max(max_frame));
        s.send_window -= n as u32;
        let mut flags = Flags::default();
        if std::mem::take(&mut s.need_ack) {
            flags = Flags::ACK;
        }
        self.out.reserve(n + n.div_ceil(max_frame) * HEADER_LEN);
        for chunk in data[..n].chunks(max_frame) {
            self.push_header(FrameType::Data, flags, id.0, chunk.len() as u32);
            self.out.extend_from_slice(chunk);
            flags = Flags::default();
        }
        Ok(WriteOutcome::Written(n))
    }

    /// Half-closes `id`: queues our FIN. The peer may still write. Idempotent.
    pub fn finish(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if s.local_fin {
            return Ok(());
        }
        if let Some(f) = s.failure {
            return Err(f);
        }
        s.local_fin = true;
        let mut flags = Flags::FIN;
        if std::mem::take(&mut s.need_ack) {
            flags |= Flags::ACK;
        }
        self.push_header(FrameType::WindowUpdate, flags, id.0, 0);
        Ok(())
    }

    /// Resets `id` in both directions: RST is sent in every state but a finished or failed one
    /// (after our FIN too). Later reads and writes fail with [`StreamError::ResetLocally`].
    pub fn reset(&mut self, id: StreamId) -> Result<(), StreamError> {
        let s = self
            .streams
            .get_mut(&id.0)
            .ok_or(StreamError::UnknownStream)?;
        if s.failure.is_none() && !s.finished() {
            s.remote_fin = false;
            s.fail(StreamError::ResetLocally);
            if std::mem::take(&mut s.awaiting_ack) {
                self.awaiting_ack -= 1;
            }
            self.push_header(FrameType::WindowUpdate, Flags::RST, id.0, 0);
        }
        Ok(())
    }

    /// The application is done with `id` (its handle was dropped). A stream not finished both
    /// ways is reset; the stream then no longer counts against the limits.
    pub fn release(&mut self, id: StreamId) {
        let Some(s) = self.streams.remove(&id.0) else {
            return;
        };
        if s.failure.is_none() && !s.finished() && self.closed.is_none() {
            self.push_header(FrameType::WindowUpdate, Flags::RST, id.0, 0);
        }
        if s.awaiting_ack {
            self.awaiting_ack -= 1;
        }
        match s.origin {
            Origin::Local => self.outbound -= 1,
            Origin::Remote => self.inbound -= 1,
        }
        self.window_extra -= (s.window - INITIAL_WINDOW) as usize;
    }

    /// Closes the connection gracefully: GoAway (normal) is queued, and every stream not
    /// finished fails with [`StreamError::Aborted`] (a stream whose FIN arrived still yields
    /// its buffered bytes, then its end). Send what is left, then close the transport.
    pub fn close(&mut self) {
        if self.closed.is_some() {
            return;
        }
        self.push_header(FrameType::GoAway, Flags::default(), 0, go_away::NORMAL);
        self.end(ConnectionError::Closed, StreamError::Aborted);
    }

    /// The transport ended (or failed): every stream not finished fails with
    /// [`StreamError::Lost`] (one whose FIN arrived yields its buffered bytes, then its end).
    pub fn connection_lost(&mut self) {
        if self.closed.is_none() {
            self.end(ConnectionError::Lost, StreamError::Lost);
        }
    }

    fn end(&mut self, why: ConnectionError, stream_error: StreamError) {
        self.closed = Some(why);
        for s in self.streams.values_mut() {
            s.fail(stream_error);
        }
        self.events.push_back(Event::AllStreams);
    }

    fn protocol_error(&mut self, e: ProtocolError) -> ConnectionError {
        tracing::debug!(error = %e, "yamux protocol error");
        self.push_header(
            FrameType::GoAway,
            Flags::default(),
            0,
            go_away::PROTOCOL_ERROR,
        );
        self.end(ConnectionError::Protocol(e), StreamError::Lost);
        ConnectionError::Protocol(e)
    }

    fn push_header(&mut self, ty: FrameType, flags: Flags, stream_id: u32, length: u32) {
        let h = Header {
            ty,
            flags,
            stream_id,
            length,
        };
        self.out.extend_from_slice(&h.encode());
    }

    fn send_ping(&mut self, now: Instant) {
        let value = self.next_ping;
        self.next_ping = self.next_ping.wrapping_add(1);
        self.ping = Some((value, now));
        self.push_header(FrameType::Ping, Flags::SYN, 0, value);
    }

    fn is_ours(&self, id: u32) -> bool {
        match self.mode {
            Mode::Client => !id.is_multiple_of(2),
            Mode::Server => id.is_multiple_of(2),
        }
    }

    fn on_header(&mut self, h: Header, now: Instant) -> Result<(), ProtocolError> {
        match h.ty {
            FrameType::Ping => {
                if h.flags.contains(Flags::SYN) {
                    self.push_header(FrameType::Ping, Flags::ACK, 0, h.length);
                } else if h.flags.contains(Flags::ACK)
                    && let Some((value, sent)) = self.ping
                    && value == h.length
                {
                    self.ping = None;
                    self.rtt = Some(now.saturating_duration_since(sent));
                    self.rtt_at = Some(now);
                }
                return Ok(());
            }
            FrameType::GoAway => {
                if !self.remote_go_away {
                    tracing::debug!(code = h.length, "peer sent yamux GoAway");
                    self.remote_go_away = true;
                    self.events.push_back(Event::RemoteGoAway(h.length));
                }
                return Ok(());
            }
            FrameType::Data | FrameType::WindowUpdate => {}
        }
        let id = h.stream_id;
        if id == 0 {
            return Err(ProtocolError::StreamIdZero);
        }
        if h.flags.contains(Flags::SYN) {
            self.on_syn(id)?;
        }
        let mut deliver = false;
        if let Some(s) = self.streams.get_mut(&id) {
            if h.flags.contains(Flags::ACK) && std::mem::take(&mut s.awaiting_ack) {
                self.awaiting_ack -= 1;
            }
            match h.ty {
                FrameType::WindowUpdate => {
                    s.send_window = s
                        .send_window
                        .checked_add(h.length)
                        .ok_or(ProtocolError::WindowOverflow(id))?;
                    if h.length > 0 && std::mem::take(&mut s.write_waiting) {
                        self.events.push_back(Event::Writable(StreamId(id)));
                    }
                }
                _ => {
                    if s.failure.is_none() && !s.remote_fin {
                        if h.length > s.recv_credit {
                            return Err(ProtocolError::WindowExceeded {
                                stream: id,
                                length: h.length,
                                window: s.recv_credit,
                            });
                        }
                        s.recv_credit -= h.length;
                        deliver = true;
                    }
                }
            }
        }
        if h.ty == FrameType::Data && h.length > 0 {
            self.decode = Decode::Payload {
                stream: id,
                remaining: h.length,
                flags: h.flags,
                deliver,
            };
        } else {
            self.apply_end_flags(id, h.flags);
        }
        Ok(())
    }

    fn on_syn(&mut self, id: u32) -> Result<(), ProtocolError> {
        if self.is_ours(id) {
            return Err(ProtocolError::WrongParity(id));
        }
        if self.streams.contains_key(&id) {
            return Err(ProtocolError::DuplicateStream(id));
        }
        if self.inbound >= self.config.max_inbound_streams {
            self.push_header(FrameType::WindowUpdate, Flags::RST, id, 0);
            self.events.push_back(Event::InboundRefused(StreamId(id)));
            return Ok(());
        }
        self.streams.insert(id, StreamState::new(Origin::Remote));
        self.inbound += 1;
        self.events.push_back(Event::Inbound(StreamId(id)));
        Ok(())
    }

    fn deliver(&mut self, id: u32, chunk: Bytes) {
        // A stream that failed while this frame was arriving (we reset it) keeps nothing more.
        if let Some(s) = self.streams.get_mut(&id)
            && s.failure.is_none()
        {
            s.buffered += chunk.len();
            s.recv_buf.push_back(chunk);
            if std::mem::take(&mut s.read_waiting) {
                self.events.push_back(Event::Readable(StreamId(id)));
            }
        }
    }

    fn apply_end_flags(&mut self, id: u32, flags: Flags) {
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        let mut changed = false;
        if flags.contains(Flags::RST) {
            changed = s.fail(StreamError::Reset);
            if std::mem::take(&mut s.awaiting_ack) {
                self.awaiting_ack -= 1;
            }
        } else if flags.contains(Flags::FIN) && s.failure.is_none() && !s.remote_fin {
            s.remote_fin = true;
            changed = true;
        }
        if changed {
            if std::mem::take(&mut s.read_waiting) {
                self.events.push_back(Event::Readable(StreamId(id)));
            }
            if std::mem::take(&mut s.write_waiting) {
                self.events.push_back(Event::Writable(StreamId(id)));
            }
        }
    }

    /// Grants the peer more window on `id` once half of it was read, growing the window when it
    /// was used up within a few round trips (up to the stream maximum and connection budget).
    fn grant_window(&mut self, id: u32, now: Instant) {
        let max_window = self.config.max_stream_window.max(INITIAL_WINDOW);
        let budget = self.config.connection_window_budget;
        let Some(s) = self.streams.get_mut(&id) else {
            return;
        };
        if s.failure.is_some() || s.remote_fin {
            return;
        }
        // The rest of a data frame being received was granted already (its length left the
        // credit when its header came) but is not buffered yet.
        let in_flight = match self.decode {
            Decode::Payload {
                stream,
                remaining,
                deliver: true,
                ..
            } if stream == id => remaining,
            _ => 0,
        };
        let granted = s.recv_credit as usize + s.buffered + in_flight as usize;
        let room = (s.window as usize).saturating_sub(granted);
        if room < s.window as usize / 2 {
            return;
        }
        if let (Some(rtt), Some(epoch)) = (self.rtt, s.window_epoch)
            && now.saturating_duration_since(epoch) < rtt * 4
            && s.window < max_window
        {
            let grown = s.window.saturating_mul(2).min(max_window);
            let extra = (grown - s.window) as usize;
            if self.window_extra + extra <= budget {
                self.window_extra += extra;
                s.window = grown;
            }
        }
        s.window_epoch = Some(now);
        let delta = s.window - s.recv_credit - s.buffered as u32 - in_flight;
        s.recv_credit += delta;
        let mut flags = Flags::default();
        if std::mem::take(&mut s.need_ack) {
            flags = Flags::ACK;
        }
        self.push_header(FrameType::WindowUpdate, flags, id, delta);
        if self.ping.is_none()
            && self
                .rtt_at
                .is_none_or(|at| now.duration_since(at) >= RTT_REFRESH)
        {
            self.send_ping(now);
        }
    }
}
