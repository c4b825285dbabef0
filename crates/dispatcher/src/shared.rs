//! State shared by the [`Dispatcher`](crate::Dispatcher), its senders, the dispatch loop and the
//! metrics collector.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};

use crate::message::Message;
use crate::registry::Registry;

/// What travels through the receive queue.
pub(crate) enum Envelope<M> {
    /// A message to dispatch.
    Message(M),
    /// Answered once every message enqueued before it has been offered to its subscribers.
    Barrier(crossbeam_channel::Sender<()>),
}

pub(crate) struct Shared<M: Message> {
    pub(crate) registry: Arc<Registry<M>>,
    /// Set once by `stop()`; senders refuse new messages and the loop ends its round.
    pub(crate) stopping: AtomicBool,
    /// Messages taken off the queue.
    pub(crate) received: AtomicU64,
    /// Messages of a kind nobody subscribed to.
    pub(crate) unknown_kind: AtomicU64,
    /// Messages still queued when the dispatcher stopped.
    pub(crate) discarded_at_stop: AtomicU64,
    /// The queue-depth gauge (refreshed by the loop every metrics interval, and on demand).
    pub(crate) queue_depth: AtomicUsize,
    pub(crate) queue_capacity: usize,
    /// Async senders waiting for room in the queue, and how to wake them.
    pub(crate) room: tokio::sync::Notify,
    pub(crate) async_waiters: AtomicUsize,
}

impl<M: Message> Shared<M> {
    pub(crate) fn new(queue_capacity: usize) -> Self {
        Self {
            registry: Arc::new(Registry::new()),
            stopping: AtomicBool::new(false),
            received: AtomicU64::new(0),
            unknown_kind: AtomicU64::new(0),
            discarded_at_stop: AtomicU64::new(0),
            queue_depth: AtomicUsize::new(0),
            queue_capacity,
            room: tokio::sync::Notify::new(),
            async_waiters: AtomicUsize::new(0),
        }
    }
}
