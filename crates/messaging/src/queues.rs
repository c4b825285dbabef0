//! [`Priority`] and the bounded per-peer priority queues the writer drains, High first.

use std::collections::VecDeque;

use bytes::{Bytes, BytesMut};
use parking_lot::Mutex;
use tokio::sync::Notify;

/// The priority of an outbound message. High always goes first, then Normal, then Low.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Priority {
    /// Goes before everything else.
    High,
    /// The usual priority.
    Normal,
    /// Goes when nothing else waits.
    Low,
}

impl Priority {
    /// All priorities, highest first.
    pub const ALL: [Priority; 3] = [Priority::High, Priority::Normal, Priority::Low];

    pub(crate) fn index(self) -> usize {
        match self {
            Priority::High => 0,
            Priority::Normal => 1,
            Priority::Low => 2,
        }
    }
}

/// Why a frame was not queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueueRefusal {
    Full,
    Closed,
}

#[derive(Debug, Default)]
struct Inner {
    queues: [VecDeque<Bytes>; 3],
    bytes: usize,
    closed: bool,
}

/// The three bounded queues of one peer, and the wake-up of its writer.
#[derive(Debug)]
pub(crate) struct PeerQueues {
    inner: Mutex<Inner>,
    caps: [usize; 3],
    max_bytes: usize,
    notify: Notify,
}

impl PeerQueues {
    pub(crate) fn new(caps: [usize; 3], max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            caps,
            max_bytes,
            notify: Notify::new(),
        }
    }

    /// Queues one encoded frame, or refuses it when its queue (or the byte cap) is full.
    pub(crate) fn push(&self, priority: Priority, frame: Bytes) -> Result<(), QueueRefusal> {
        {
            let mut g = self.inner.lock();
            if g.closed {
                return Err(QueueRefusal::Closed);
            }
            let i = priority.index();
            // An empty peer always takes one frame, so a large message never deadlocks.
            if g.queues[i].len() >= self.caps[i]
                || (g.bytes > 0 && g.bytes + frame.len() > self.max_bytes)
            {
                return Err(QueueRefusal::Full);
            }
            g.bytes += frame.len();
            g.queues[i].push_back(frame);
        }
        self.notify.notify_one();
        Ok(())
    }

    /// Moves frames, High first, into `out` until it holds at least `max` bytes or the queues
    /// are empty; returns how many frames were moved.
    pub(crate) fn drain_into(&self, out: &mut BytesMut, max: usize) -> usize {
        let mut g = self.inner.lock();
        let mut n = 0;
        for i in 0..3 {
            while out.len() < max {
                let Some(f) = g.queues[i].pop_front() else {
                    break;
                };
                g.bytes -= f.len();
                out.extend_from_slice(&f);
                n += 1;
            }
        }
        n
    }

    /// Waits until a frame may be available.
    pub(crate) async fn wait(&self) {
        self.notify.notified().await;
    }

    /// Wakes the writer (e.g. after a new writer took over the queues).
    pub(crate) fn wake(&self) {
        self.notify.notify_one();
    }

    /// Refuses all further frames and drops the queued ones; returns how many were dropped.
    pub(crate) fn close(&self) -> usize {
        let mut g = self.inner.lock();
        g.closed = true;
        g.bytes = 0;
        g.queues.iter_mut().map(|q| std::mem::take(q).len()).sum()
    }

    /// The number of frames in each queue, High first.
    pub(crate) fn depths(&self) -> [usize; 3] {
        let g = self.inner.lock();
        [g.queues[0].len(), g.queues[1].len(), g.queues[2].len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn high_first_bounded_and_byte_capped() {
        let q = PeerQueues::new([2, 2, 2], 100);
        q.push(Priority::Low, Bytes::from_static(b"l1")).unwrap();
        q.push(Priority::Normal, Bytes::from_static(b"n1")).unwrap();
        q.push(Priority::High, Bytes::from_static(b"h1")).unwrap();
        q.push(Priority::High, Bytes::from_static(b"h2")).unwrap();
        assert_eq!(
            q.push(Priority::High, Bytes::from_static(b"h3")),
            Err(QueueRefusal::Full)
        );
        assert_eq!(q.depths(), [2, 1, 1]);
        let mut out = BytesMut::new();
        assert_eq!(q.drain_into(&mut out, 1000), 4);
        assert_eq!(&out[..], b"h1h2n1l1");
        // The byte cap: a first frame always fits, then the cap applies.
        q.push(Priority::Low, Bytes::from(vec![0u8; 150])).unwrap();
        assert_eq!(
            q.push(Priority::Low, Bytes::from_static(b"x")),
            Err(QueueRefusal::Full)
        );
        out.clear();
        assert_eq!(q.drain_into(&mut out, 10), 1);
        q.push(Priority::Low, Bytes::from_static(b"x")).unwrap();
        assert_eq!(q.close(), 1);
        assert_eq!(
            q.push(Priority::Low, Bytes::from_static(b"x")),
            Err(QueueRefusal::Closed)
        );
    }
}
