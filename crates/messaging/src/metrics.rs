//! Counters of the messaging layer and [`MessagingMetrics`], their snapshot.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};

use p2pnet_host::PeerId;
use parking_lot::Mutex;

use crate::frame::MessageKind;
use crate::queues::Priority;

/// Distinct message kinds tracked; further kinds are counted under `_other`, so a peer sending
/// random kinds cannot grow the table.
const MAX_KINDS: usize = 256;

/// Per-kind traffic.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindStats {
    /// Messages received.
    pub messages_in: u64,
    /// Payload bytes received (uncompressed).
    pub bytes_in: u64,
    /// Messages queued for sending (one per peer).
    pub messages_out: u64,
    /// Payload bytes queued for sending (uncompressed, one per peer).
    pub bytes_out: u64,
}

/// A snapshot of the messaging counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MessagingMetrics {
    /// Sessions open now.
    pub sessions_open: usize,
    /// Traffic per message kind.
    pub by_kind: BTreeMap<String, KindStats>,
    /// Frame bytes written to streams (headers included, after compression).
    pub wire_bytes_out: u64,
    /// Frame bytes read from streams.
    pub wire_bytes_in: u64,
    /// Messages refused because a queue was full, per priority (High, Normal, Low).
    pub backpressure: [u64; 3],
    /// Frames still queued when their session ended (counted, never silently lost).
    pub dropped_on_close: u64,
    /// Handshake failures by reason label.
    pub handshake_failures: BTreeMap<&'static str, u64>,
    /// Decode errors by kind label.
    pub decode_errors: BTreeMap<&'static str, u64>,
    /// Sessions closed by reason label.
    pub sessions_closed: BTreeMap<&'static str, u64>,
    /// Inbound streams reset unread because the peer already had a session handshaking in that
    /// direction.
    pub streams_refused: u64,
    /// Queue depths per peer (High, Normal, Low).
    pub queue_depths: BTreeMap<PeerId, [usize; 3]>,
}

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    kinds: Mutex<HashMap<MessageKind, KindStats>>,
    pub(crate) wire_bytes_out: AtomicU64,
    pub(crate) wire_bytes_in: AtomicU64,
    backpressure: [AtomicU64; 3],
    pub(crate) dropped_on_close: AtomicU64,
    pub(crate) streams_refused: AtomicU64,
    labels: Mutex<Labels>,
}

#[derive(Debug, Default)]
struct Labels {
    handshake_failures: BTreeMap<&'static str, u64>,
    decode_errors: BTreeMap<&'static str, u64>,
    sessions_closed: BTreeMap<&'static str, u64>,
}

impl Metrics {
    fn with_kind(&self, kind: MessageKind, f: impl FnOnce(&mut KindStats)) {
        let mut g = self.kinds.lock();
        let key = if g.len() >= MAX_KINDS && !g.contains_key(&kind) {
            MessageKind::from_static("_other")
        } else {
            kind
        };
        f(g.entry(key).or_default());
    }

    pub(crate) fn message_out(&self, kind: MessageKind, bytes: usize, count: u64) {
        self.with_kind(kind, |s| {
            s.messages_out += count;
            s.bytes_out += bytes as u64 * count;
        });
    }

    /// Adds a reader's batch of inbound counts.
    pub(crate) fn messages_in(&self, batch: &mut Vec<(MessageKind, u64, u64)>) {
        if batch.is_empty() {
            return;
        }
        let mut g = self.kinds.lock();
        for (kind, n, bytes) in batch.drain(..) {
            let key = if g.len() >= MAX_KINDS && !g.contains_key(&kind) {
                MessageKind::from_static("_other")
            } else {
                kind
            };
            let s = g.entry(key).or_default();
            s.messages_in += n;
            s.bytes_in += bytes;
        }
    }

    pub(crate) fn backpressure(&self, p: Priority) {
        self.backpressure[p.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn handshake_failure(&self, label: &'static str) {
        *self
            .labels
            .lock()
            .handshake_failures
            .entry(label)
            .or_default() += 1;
    }

    pub(crate) fn decode_error(&self, label: &'static str) {
        *self.labels.lock().decode_errors.entry(label).or_default() += 1;
    }

    pub(crate) fn session_closed(&self, label: &'static str) {
        *self.labels.lock().sessions_closed.entry(label).or_default() += 1;
    }

    pub(crate) fn snapshot(
        &self,
        sessions_open: usize,
        queue_depths: BTreeMap<PeerId, [usize; 3]>,
    ) -> MessagingMetrics {
        let labels = self.labels.lock();
        MessagingMetrics {
            sessions_open,
            by_kind: self
                .kinds
                .lock()
                .iter()
                .map(|(k, v)| (k.as_str().to_owned(), *v))
                .collect(),
            wire_bytes_out: self.wire_bytes_out.load(Ordering::Relaxed),
            wire_bytes_in: self.wire_bytes_in.load(Ordering::Relaxed),
            backpressure: [0, 1, 2].map(|i| self.backpressure[i].load(Ordering::Relaxed)),
            dropped_on_close: self.dropped_on_close.load(Ordering::Relaxed),
            handshake_failures: labels.handshake_failures.clone(),
            decode_errors: labels.decode_errors.clone(),
            sessions_closed: labels.sessions_closed.clone(),
            streams_refused: self.streams_refused.load(Ordering::Relaxed),
            queue_depths,
        }
    }
}
