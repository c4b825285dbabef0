//! The state of one stream inside a [`crate::Connection`].

use std::collections::VecDeque;
use std::time::Instant;

use bytes::Bytes;

use crate::config::INITIAL_WINDOW;
use crate::error::StreamError;

/// Identifies a stream on its connection (the yamux stream id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StreamId(pub(crate) u32);

impl StreamId {
    /// The stream id on the wire.
    pub fn get(self) -> u32 {
        self.0
    }
}

impl std::fmt::Display for StreamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who opened a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Origin {
    /// We did.
    Local,
    /// The peer did.
    Remote,
}

/// What a read gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadOutcome {
    /// This many bytes were copied.
    Data(usize),
    /// The peer finished the stream and every byte before its FIN was read.
    End,
    /// Nothing to read yet; [`crate::Event::Readable`] tells when to try again.
    Blocked,
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// This many bytes were taken (at least one).
    Written(usize),
    /// No send window or no room in the write buffer; [`crate::Event::Writable`] tells when to
    /// try again.
    Blocked,
}

/// One stream's state.
#[derive(Debug)]
pub(crate) struct StreamState {
    pub(crate) origin: Origin,
    /// We sent (queued) our FIN.
    pub(crate) local_fin: bool,
    /// The peer's FIN arrived.
    pub(crate) remote_fin: bool,
    /// Why the stream failed, if it did.
    pub(crate) failure: Option<StreamError>,
    /// Bytes we may still send.
    pub(crate) send_window: u32,
    /// Bytes the peer may still send us.
    pub(crate) recv_credit: u32,
    /// The receive window we aim to keep granted (credit + buffered).
    pub(crate) window: u32,
    /// When we last granted window (auto-tuning measures how fast it is used up).
    pub(crate) window_epoch: Option<Instant>,
    /// Received bytes not read yet.
    pub(crate) recv_buf: VecDeque<Bytes>,
    pub(crate) buffered: usize,
    /// An inbound stream we have not acknowledged yet (the ACK goes with our first frame).
    pub(crate) need_ack: bool,
    /// An outbound stream the peer has not acknowledged yet (counts in the ACK backlog).
    pub(crate) awaiting_ack: bool,
    /// A reader was told `Blocked` and waits for [`crate::Event::Readable`].
    pub(crate) read_waiting: bool,
    /// A writer was told `Blocked` and waits for [`crate::Event::Writable`].
    pub(crate) write_waiting: bool,
}

impl StreamState {
    pub(crate) fn new(origin: Origin) -> Self {
        Self {
            origin,
            local_fin: false,
            remote_fin: false,
            failure: None,
            send_window: INITIAL_WINDOW,
            recv_credit: INITIAL_WINDOW,
            window: INITIAL_WINDOW,
            window_epoch: None,
            recv_buf: VecDeque::new(),
            buffered: 0,
            need_ack: origin == Origin::Remote,
            awaiting_ack: origin == Origin::Local,
            read_waiting: false,
            write_waiting: false,
        }
    }

    /// Both directions ended cleanly.
    pub(crate) fn finished(&self) -> bool {
        self.local_fin && self.remote_fin
    }

    /// Marks the stream failed unless it finished or failed already. Returns whether it changed.
    pub(crate) fn fail(&mut self, why: StreamError) -> bool {
        if self.failure.is_some() || self.finished() {
            return false;
        }
        self.failure = Some(why);
        if !self.remote_fin {
            // What the peer sent is incomplete: nobody may read it as if it were whole.
            self.recv_buf.clear();
            self.buffered = 0;
        }
        true
    }

    /// Copies buffered bytes into `buf`.
    pub(crate) fn read_into(&mut self, buf: &mut [u8]) -> usize {
        let mut n = 0;
        while n < buf.len() {
            let Some(front) = self.recv_buf.front_mut() else {
                break;
            };
            let take = front.len().min(buf.len() - n);
            buf[n..n + take].copy_from_slice(&front[..take]);
            n += take;
            if take == front.len() {
                self.recv_buf.pop_front();
            } else {
                let _ = front.split_to(take);
            }
        }
        self.buffered -= n;
        n
    }
}
