//! [`DispatchSender`]: the clonable handle that feeds the receive queue.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};

use crate::error::{DispatchError, SendError};
use crate::message::Message;
use crate::shared::{Envelope, Shared};

/// Puts messages into the dispatcher's bounded receive queue. Cheap to clone; one per network
/// reader is the usual use.
///
/// Three ways to send, by what the caller may do when the queue is full:
/// - [`try_send`](Self::try_send): never waits; hands the message back.
/// - [`send`](Self::send) / [`send_timeout`](Self::send_timeout): block the thread until there is
///   room.
/// - [`send_async`](Self::send_async): for tokio tasks; waits for room without blocking the
///   worker thread, so a network reader is back-pressured instead of losing data.
///
/// Every way fails with [`DispatchError::Stopped`] once the dispatcher is stopped.
pub struct DispatchSender<M: Message> {
    tx: Sender<Envelope<M>>,
    shared: Arc<Shared<M>>,
}

impl<M: Message> Clone for DispatchSender<M> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<M: Message> fmt::Debug for DispatchSender<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatchSender")
            .field("queued", &self.tx.len())
            .field("capacity", &self.shared.queue_capacity)
            .field("stopped", &self.is_stopped())
            .finish()
    }
}

/// Releases an async sender's place among the waiters, also when its future is dropped.
struct WaiterGuard<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for WaiterGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl<M: Message> DispatchSender<M> {
    pub(crate) fn new(tx: Sender<Envelope<M>>, shared: Arc<Shared<M>>) -> Self {
        Self { tx, shared }
    }

    fn stopped_error(message: M) -> SendError<M> {
        SendError::new(message, DispatchError::Stopped)
    }

    /// Enqueues `message` if there is room now; otherwise hands it back with
    /// [`DispatchError::QueueFull`] (or [`DispatchError::Stopped`]).
    pub fn try_send(&self, message: M) -> Result<(), SendError<M>> {
        if self.is_stopped() {
            return Err(Self::stopped_error(message));
        }
        match self.tx.try_send(Envelope::Message(message)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(envelope)) => Err(SendError::new(
                into_message(envelope),
                DispatchError::QueueFull,
            )),
            Err(TrySendError::Disconnected(envelope)) => {
                Err(Self::stopped_error(into_message(envelope)))
            }
        }
    }

    /// Enqueues `message`, blocking the thread while the queue is full. Returns
    /// [`DispatchError::Stopped`] (with the message) if the dispatcher stops first. Not for async
    /// tasks: use [`send_async`](Self::send_async) there.
    pub fn send(&self, message: M) -> Result<(), SendError<M>> {
        if self.is_stopped() {
            return Err(Self::stopped_error(message));
        }
        self.tx
            .send(Envelope::Message(message))
            .map_err(|error| Self::stopped_error(into_message(error.into_inner())))
    }

    /// Like [`send`](Self::send), giving up with [`DispatchError::Timeout`] after `timeout`.
    pub fn send_timeout(&self, message: M, timeout: Duration) -> Result<(), SendError<M>> {
        if self.is_stopped() {
            return Err(Self::stopped_error(message));
        }
        match self.tx.send_timeout(Envelope::Message(message), timeout) {
            Ok(()) => Ok(()),
            Err(SendTimeoutError::Timeout(envelope)) => Err(SendError::new(
                into_message(envelope),
                DispatchError::Timeout,
            )),
            Err(SendTimeoutError::Disconnected(envelope)) => {
                Err(Self::stopped_error(into_message(envelope)))
            }
        }
    }

    /// Enqueues `message`, waiting asynchronously while the queue is full; never blocks the
    /// thread. Returns [`DispatchError::Stopped`] (with the message) if the dispatcher stops
    /// first. If the future is dropped before it completes, the message is dropped unsent.
    pub async fn send_async(&self, message: M) -> Result<(), SendError<M>> {
        let mut message = match self.try_send(message) {
            Ok(()) => return Ok(()),
            Err(error) if error.is_full() => error.into_message(),
            Err(error) => return Err(error),
        };
        loop {
            // Register interest before the second attempt, so a slot freed in between is not
            // missed: the loop notifies after every round that took messages while any async
            // sender waits.
            let notified = self.shared.room.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            self.shared.async_waiters.fetch_add(1, Ordering::SeqCst);
            // Pairs with the fence in the loop between taking messages and reading the count.
            std::sync::atomic::fence(Ordering::SeqCst);
            let _guard = WaiterGuard(&self.shared.async_waiters);
            message = match self.try_send(message) {
                Ok(()) => return Ok(()),
                Err(error) if error.is_full() => error.into_message(),
                Err(error) => return Err(error),
            };
            notified.await;
        }
    }

    /// Whether the dispatcher was stopped.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    /// Messages in the queue now.
    pub fn len(&self) -> usize {
        self.tx.len()
    }

    /// Whether the queue is empty now.
    pub fn is_empty(&self) -> bool {
        self.tx.is_empty()
    }

    /// The queue's capacity.
    pub fn capacity(&self) -> usize {
        self.shared.queue_capacity
    }
}

fn into_message<M>(envelope: Envelope<M>) -> M {
    match envelope {
        Envelope::Message(message) => message,
        // A sender only ever puts `Envelope::Message` in; `try_send` hands back what it was given.
        Envelope::Barrier(_) => unreachable!("DispatchSender never sends barriers"),
    }
}
