//! Subscribers: the consumer end ([`Subscriber`]), its registration handle
//! ([`SubscriberHandle`]), and the bounded channel between the dispatch loop and the consumer.
//!
//! The channel carries *batches*: the loop collects every message one round gives a subscriber
//! into one buffer, puts it in the channel under one lock, and wakes the consumer at most once for
//! it. When the consumer finds nothing in hand, it takes *every* waiting batch under one lock and
//! then hands out their messages without any synchronisation.
//!
//! The capacity counts messages waiting in the channel, not yet taken by the consumer: a batch
//! that does not fit whole is cut, and (with [`DeliveryPolicy::DropNewest`]) its tail is dropped
//! for this subscriber only. Because the consumer takes everything waiting at once, it may hold up
//! to another `capacity` messages on its side; whether a message fits therefore never depends on
//! how the loop happened to batch earlier messages.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Weak;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::Stream;
use parking_lot::{Condvar, Mutex, MutexGuard};

use crate::config::DeliveryPolicy;
use crate::error::DispatchError;
use crate::message::Message;
use crate::registry::Registry;

/// At most this many empty batch buffers are kept per subscriber for reuse, so that the steady
/// state allocates nothing.
const SPARE_BUFFERS: usize = 2;

/// Drops are reported at most once per this interval per subscriber.
const WARN_INTERVAL: Duration = Duration::from_secs(1);

/// Identifies one registration; pass it to
/// [`Dispatcher::deregister`](crate::Dispatcher::deregister).
///
/// Ids are never reused, so a stale handle can never remove a newer subscriber (the Nebulas
/// original removed subscribers by pointer and silently kept a re-created one).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubscriberHandle(u64);

impl SubscriberHandle {
    pub(crate) fn new(id: u64) -> Self {
        Self(id)
    }

    /// The numeric id, unique within its dispatcher.
    pub fn id(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriberHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subscriber #{}", self.0)
    }
}

/// Per (subscriber, kind) counters, written by the dispatch loop only.
#[derive(Debug, Default)]
pub(crate) struct KindCounters {
    pub(crate) delivered: AtomicU64,
    pub(crate) dropped: AtomicU64,
}

/// The state the consumer and the loop share, under one lock.
struct Inbox<M> {
    batches: VecDeque<VecDeque<M>>,
    /// Messages in `batches`.
    queued: usize,
    closed: bool,
    /// The consumer thread waits on `readable`.
    consumer_parked: bool,
    /// The consumer task to wake.
    waker: Option<Waker>,
    /// The loop waits on `writable` (a `Block` subscriber with a full channel).
    loop_waiting: bool,
    /// Empty buffers the consumer handed back, for the loop to fill again.
    spare: Vec<VecDeque<M>>,
    /// Drops not yet reported, and when they were last reported.
    unreported_drops: u64,
    last_warning: Option<Instant>,
}

/// One registered subscriber, shared by the registry, the loop and the consumer.
pub(crate) struct SubscriberShared<M: Message> {
    pub(crate) handle: SubscriberHandle,
    pub(crate) name: Option<String>,
    /// Distinct kinds, in registration order.
    pub(crate) kinds: Vec<M::Kind>,
    /// Parallel to `kinds`.
    pub(crate) counters: Vec<KindCounters>,
    pub(crate) policy: DeliveryPolicy,
    pub(crate) capacity: usize,
    pub(crate) filter_duplicates: bool,
    inbox: Mutex<Inbox<M>>,
    readable: Condvar,
    writable: Condvar,
}

/// What one round collected for one subscriber, before delivery.
pub(crate) struct Staged<M> {
    messages: VecDeque<M>,
    /// Index into the subscriber's kinds of each message; only kept when it has several kinds.
    kinds: VecDeque<u32>,
}

impl<M> Default for Staged<M> {
    fn default() -> Self {
        Self {
            messages: VecDeque::new(),
            kinds: VecDeque::new(),
        }
    }
}

impl<M> Staged<M> {
    /// Adds a message of the subscriber's `kind_index`-th kind.
    #[inline]
    pub(crate) fn push(&mut self, message: M, kind_index: u32, multi_kind: bool) {
        self.messages.push_back(message);
        if multi_kind {
            self.kinds.push_back(kind_index);
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    fn clear(&mut self) {
        self.messages.clear();
        self.kinds.clear();
    }
}

/// What delivering one staged batch did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Delivery {
    pub(crate) delivered: usize,
    pub(crate) dropped: usize,
}

impl<M: Message> SubscriberShared<M> {
    pub(crate) fn new(
        handle: SubscriberHandle,
        name: Option<String>,
        kinds: Vec<M::Kind>,
        policy: DeliveryPolicy,
        capacity: usize,
        filter_duplicates: bool,
    ) -> Self {
        let counters = kinds.iter().map(|_| KindCounters::default()).collect();
        Self {
            handle,
            name,
            kinds,
            counters,
            policy,
            capacity,
            filter_duplicates,
            inbox: Mutex::new(Inbox {
                batches: VecDeque::new(),
                queued: 0,
                closed: false,
                consumer_parked: false,
                waker: None,
                loop_waiting: false,
                spare: Vec::new(),
                unreported_drops: 0,
                last_warning: None,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
        }
    }

    pub(crate) fn multi_kind(&self) -> bool {
        self.kinds.len() > 1
    }

    /// Messages waiting in the channel (not counting the batch the consumer is reading).
    pub(crate) fn queued(&self) -> usize {
        self.inbox.lock().queued
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.inbox.lock().closed
    }

    /// Closes the channel: the loop delivers nothing more, the consumer gets what is already in
    /// it and then [`DispatchError::Closed`]. Wakes everyone waiting.
    pub(crate) fn close(&self) {
        let waker = {
            let mut inbox = self.inbox.lock();
            inbox.closed = true;
            self.readable.notify_all();
            self.writable.notify_all();
            inbox.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes the loop if it waits for room in this channel, so that it notices `stopping`.
    pub(crate) fn interrupt_writer(&self) {
        let _inbox = self.inbox.lock();
        self.writable.notify_all();
    }

    /// Delivers `staged` under this subscriber's policy; called by the dispatch loop only.
    /// Leaves `staged` empty. Nothing is counted for a closed (deregistered) subscriber.
    pub(crate) fn deliver(&self, staged: &mut Staged<M>, stopping: &AtomicBool) -> Delivery {
        let mut outcome = Delivery::default();
        let mut deadline = None;
        let mut inbox = self.inbox.lock();
        loop {
            if inbox.closed {
                drop(inbox);
                staged.clear();
                return outcome;
            }
            let total = staged.messages.len();
            if total == 0 {
                break;
            }
            let room = self.capacity.saturating_sub(inbox.queued);
            let accept = room.min(total);
            if accept == total {
                let fresh = inbox.spare.pop().unwrap_or_default();
                let batch = std::mem::replace(&mut staged.messages, fresh);
                self.count(&staged.kinds, accept, |c| &c.delivered);
                staged.kinds.clear();
                self.push_batch(&mut inbox, batch);
                outcome.delivered += accept;
                break;
            }
            if accept > 0 {
                // Deliver the head now, keep the tail for later.
                let tail = staged.messages.split_off(accept);
                let head = std::mem::replace(&mut staged.messages, tail);
                self.count(&staged.kinds, accept, |c| &c.delivered);
                staged.kinds.drain(..accept.min(staged.kinds.len()));
                self.push_batch(&mut inbox, head);
                outcome.delivered += accept;
                continue;
            }
            // The channel is full.
            let give_up = match self.policy {
                DeliveryPolicy::DropNewest => true,
                DeliveryPolicy::Block { timeout } => {
                    if stopping.load(Ordering::Acquire) {
                        true
                    } else {
                        let now = Instant::now();
                        let until = *deadline.get_or_insert(now + timeout);
                        if now >= until {
                            true
                        } else {
                            inbox.loop_waiting = true;
                            self.writable.wait_until(&mut inbox, until);
                            inbox.loop_waiting = false;
                            false
                        }
                    }
                }
            };
            if give_up {
                let dropped = staged.messages.len();
                self.count(&staged.kinds, dropped, |c| &c.dropped);
                outcome.dropped += dropped;
                inbox.unreported_drops += dropped as u64;
                let report = match inbox.last_warning {
                    Some(last) if last.elapsed() < WARN_INTERVAL => None,
                    _ => {
                        inbox.last_warning = Some(Instant::now());
                        Some(std::mem::take(&mut inbox.unreported_drops))
                    }
                };
                let queued = inbox.queued;
                drop(inbox);
                staged.clear();
                if let Some(dropped) = report {
                    tracing::warn!(
                        subscriber = self.handle.id(),
                        name = self.name.as_deref().unwrap_or(""),
                        policy = ?self.policy,
                        capacity = self.capacity,
                        queued,
                        dropped,
                        "subscriber channel full: messages dropped for this subscriber (reported at most once per second)"
                    );
                }
                return outcome;
            }
        }
        drop(inbox);
        outcome
    }

    /// Adds one batch to the channel and wakes the consumer if it waits.
    fn push_batch(&self, inbox: &mut MutexGuard<'_, Inbox<M>>, batch: VecDeque<M>) {
        inbox.queued += batch.len();
        inbox.batches.push_back(batch);
        if inbox.consumer_parked {
            self.readable.notify_one();
        }
        if let Some(waker) = inbox.waker.take() {
            // Waking under the lock is fine: the woken task takes the lock after we release it.
            waker.wake();
        }
    }

    /// Adds `n` to one counter per message: the first `n` entries of `kinds`, or all to the only
    /// kind.
    fn count(&self, kinds: &VecDeque<u32>, n: usize, which: impl Fn(&KindCounters) -> &AtomicU64) {
        if n == 0 {
            return;
        }
        if kinds.is_empty() {
            if let Some(counters) = self.counters.first() {
                which(counters).fetch_add(n as u64, Ordering::Relaxed);
            }
            return;
        }
        let mut tally = vec![0u64; self.counters.len()];
        for &index in kinds.iter().take(n) {
            if let Some(slot) = tally.get_mut(index as usize) {
                *slot += 1;
            }
        }
        for (counters, count) in self.counters.iter().zip(tally) {
            if count > 0 {
                which(counters).fetch_add(count, Ordering::Relaxed);
            }
        }
    }

    /// Moves every waiting batch to the consumer's side and hands back its empty buffers; false
    /// if the channel is empty.
    fn refill(&self, inbox: &mut Inbox<M>, hand: &mut Hand<M>) -> bool {
        if inbox.batches.is_empty() {
            return false;
        }
        debug_assert!(hand.taken.is_empty());
        std::mem::swap(&mut inbox.batches, &mut hand.taken);
        hand.len += std::mem::take(&mut inbox.queued);
        while inbox.spare.len() < SPARE_BUFFERS {
            match hand.spares.pop() {
                Some(buffer) => inbox.spare.push(buffer),
                None => break,
            }
        }
        if inbox.loop_waiting {
            self.writable.notify_one();
        }
        true
    }
}

/// The messages a consumer has taken out of the channel but not yet returned.
struct Hand<M> {
    /// The batch being read.
    current: VecDeque<M>,
    /// Further batches taken with it.
    taken: VecDeque<VecDeque<M>>,
    /// Messages in `current` and `taken`.
    len: usize,
    /// Empty buffers to give back to the loop.
    spares: Vec<VecDeque<M>>,
}

impl<M> Hand<M> {
    fn new() -> Self {
        Self {
            current: VecDeque::new(),
            taken: VecDeque::new(),
            len: 0,
            spares: Vec::new(),
        }
    }

    #[inline]
    fn pop(&mut self) -> Option<M> {
        loop {
            if let Some(message) = self.current.pop_front() {
                self.len -= 1;
                return Some(message);
            }
            let next = self.taken.pop_front()?;
            let used = std::mem::replace(&mut self.current, next);
            if used.capacity() > 0 && self.spares.len() < SPARE_BUFFERS {
                self.spares.push(used);
            }
        }
    }
}

/// The consumer end of a registration: receives the messages of its kinds, in the order they
/// were enqueued.
///
/// Consume it from a thread with [`recv`](Self::recv), [`recv_timeout`](Self::recv_timeout) and
/// [`try_recv`](Self::try_recv), or from a tokio task with [`recv_async`](Self::recv_async) or as a
/// [`Stream`]; the async ways never block a runtime worker. Never call the blocking ones from an
/// async task.
///
/// Dropping the subscriber deregisters it.
pub struct Subscriber<M: Message> {
    shared: std::sync::Arc<SubscriberShared<M>>,
    registry: Weak<Registry<M>>,
    /// Messages taken out of the channel, not yet returned.
    hand: Hand<M>,
}

impl<M: Message> fmt::Debug for Subscriber<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscriber")
            .field("handle", &self.shared.handle)
            .field("name", &self.shared.name)
            .field("kinds", &self.shared.kinds)
            .field("policy", &self.shared.policy)
            .field("capacity", &self.shared.capacity)
            .finish_non_exhaustive()
    }
}

impl<M: Message> Subscriber<M> {
    pub(crate) fn new(
        shared: std::sync::Arc<SubscriberShared<M>>,
        registry: Weak<Registry<M>>,
    ) -> Self {
        Self {
            shared,
            registry,
            hand: Hand::new(),
        }
    }

    /// The handle to deregister this subscriber with.
    pub fn handle(&self) -> SubscriberHandle {
        self.shared.handle
    }

    /// The name given at registration.
    pub fn name(&self) -> Option<&str> {
        self.shared.name.as_deref()
    }

    /// The kinds this subscriber receives.
    pub fn kinds(&self) -> &[M::Kind] {
        &self.shared.kinds
    }

    /// The delivery policy.
    pub fn policy(&self) -> DeliveryPolicy {
        self.shared.policy
    }

    /// The channel capacity in messages.
    pub fn capacity(&self) -> usize {
        self.shared.capacity
    }

    /// Messages delivered and not yet received.
    pub fn len(&self) -> usize {
        self.hand.len + self.shared.queued()
    }

    /// Whether no message is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the subscriber was deregistered or its dispatcher stopped. Messages delivered
    /// before that can still be received.
    pub fn is_closed(&self) -> bool {
        self.shared.is_closed()
    }

    /// Takes a waiting message without blocking: [`DispatchError::Empty`] if there is none,
    /// [`DispatchError::Closed`] if there is none and there never will be.
    pub fn try_recv(&mut self) -> Result<M, DispatchError> {
        if let Some(message) = self.hand.pop() {
            return Ok(message);
        }
        let mut inbox = self.shared.inbox.lock();
        if self.shared.refill(&mut inbox, &mut self.hand) {
            drop(inbox);
            return self.hand.pop().ok_or(DispatchError::Empty);
        }
        if inbox.closed {
            Err(DispatchError::Closed)
        } else {
            Err(DispatchError::Empty)
        }
    }

    /// Waits for the next message; [`DispatchError::Closed`] once the subscriber is closed and
    /// drained. Blocks the calling thread: not for async tasks.
    pub fn recv(&mut self) -> Result<M, DispatchError> {
        self.recv_until(None)
    }

    /// Waits up to `timeout` for the next message: [`DispatchError::Timeout`] if none came,
    /// [`DispatchError::Closed`] once the subscriber is closed and drained. Blocks the calling
    /// thread: not for async tasks.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<M, DispatchError> {
        self.recv_until(Some(Instant::now() + timeout))
    }

    fn recv_until(&mut self, deadline: Option<Instant>) -> Result<M, DispatchError> {
        if let Some(message) = self.hand.pop() {
            return Ok(message);
        }
        let mut inbox = self.shared.inbox.lock();
        loop {
            if self.shared.refill(&mut inbox, &mut self.hand) {
                drop(inbox);
                return self.hand.pop().ok_or(DispatchError::Empty);
            }
            if inbox.closed {
                return Err(DispatchError::Closed);
            }
            inbox.consumer_parked = true;
            let timed_out = match deadline {
                Some(deadline) => self
                    .shared
                    .readable
                    .wait_until(&mut inbox, deadline)
                    .timed_out(),
                None => {
                    self.shared.readable.wait(&mut inbox);
                    false
                }
            };
            inbox.consumer_parked = false;
            if timed_out && inbox.batches.is_empty() {
                return Err(if inbox.closed {
                    DispatchError::Closed
                } else {
                    DispatchError::Timeout
                });
            }
        }
    }

    /// Waits for the next message without blocking the thread: for tokio (or any async) tasks.
    /// [`DispatchError::Closed`] once the subscriber is closed and drained. Cancel safe: a
    /// message is only taken when the future completes.
    pub async fn recv_async(&mut self) -> Result<M, DispatchError> {
        futures::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next message, registering `cx`'s waker when there is none.
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Result<M, DispatchError>> {
        if let Some(message) = self.hand.pop() {
            return Poll::Ready(Ok(message));
        }
        let mut inbox = self.shared.inbox.lock();
        if self.shared.refill(&mut inbox, &mut self.hand) {
            drop(inbox);
            return match self.hand.pop() {
                Some(message) => Poll::Ready(Ok(message)),
                None => Poll::Ready(Err(DispatchError::Empty)),
            };
        }
        if inbox.closed {
            return Poll::Ready(Err(DispatchError::Closed));
        }
        match &mut inbox.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }

    /// Moves every message that is waiting, without blocking, to the end of `out`; returns how
    /// many. Handy for consumers that work in batches themselves.
    pub fn drain_into(&mut self, out: &mut Vec<M>) -> usize {
        let before = out.len();
        out.reserve(self.hand.len);
        while let Some(message) = self.hand.pop() {
            out.push(message);
        }
        let refilled = {
            let mut inbox = self.shared.inbox.lock();
            self.shared.refill(&mut inbox, &mut self.hand)
        };
        if refilled {
            out.reserve(self.hand.len);
            while let Some(message) = self.hand.pop() {
                out.push(message);
            }
        }
        out.len() - before
    }
}

// The subscriber is never pin-projected: the messages it holds are moved out, never pinned.
impl<M: Message> Unpin for Subscriber<M> {}

impl<M: Message> Stream for Subscriber<M> {
    type Item = M;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<M>> {
        match self.get_mut().poll_recv(cx) {
            Poll::Ready(Ok(message)) => Poll::Ready(Some(message)),
            Poll::Ready(Err(_)) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<M: Message> Drop for Subscriber<M> {
    fn drop(&mut self) {
        if let Some(registry) = self.registry.upgrade() {
            // A consumer that panics drops its subscriber while unwinding: it is removed like
            // any other, the loop goes on, and the loss is counted and logged.
            if std::thread::panicking() {
                registry.note_panicked();
                tracing::warn!(
                    subscriber = self.shared.handle.id(),
                    "subscriber's consumer panicked; removed"
                );
            }
            registry.deregister(self.shared.handle);
        }
        self.shared.close();
    }
}
