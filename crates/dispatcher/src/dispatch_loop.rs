//! The dispatch loop: takes messages off the receive queue in batches, filters duplicates,
//! routes each message to the subscribers of its kind, and delivers one batch per subscriber per
//! round.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{Ordering, fence};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TryRecvError, select};

use crate::dedup::DedupWindow;
use crate::message::Message;
use crate::registry::Routes;
use crate::shared::{Envelope, Shared};
use crate::subscriber::Staged;

/// How many times the idle loop yields the processor before it sleeps on the queue.
const IDLE_YIELDS: usize = 2;

/// Everything the loop owns.
pub(crate) struct DispatchLoop<M: Message> {
    rx: Receiver<Envelope<M>>,
    /// Never receives; disconnected by `stop()` to wake the loop when it is idle.
    wake: Receiver<()>,
    shared: Arc<Shared<M>>,
    max_batch: usize,
    metrics_interval: Duration,
    dedup_capacity: usize,
    routes: Arc<Routes<M>>,
    /// One per subscriber slot of `routes`.
    staged: Vec<Staged<M>>,
    dedup: HashMap<M::Kind, DedupWindow>,
    /// The kind of the previous message and its route (`None`: unknown kind), so that runs of
    /// one kind are routed without hashing.
    last_kind: Option<(M::Kind, Option<usize>)>,
    /// Counts for `last_kind`'s route not yet added to its shared counters.
    pending_dispatched: u64,
    pending_bytes: u64,
    received: u64,
    unknown_kind: u64,
}

impl<M: Message> DispatchLoop<M> {
    pub(crate) fn new(
        rx: Receiver<Envelope<M>>,
        wake: Receiver<()>,
        shared: Arc<Shared<M>>,
        max_batch: usize,
        metrics_interval: Duration,
        dedup_capacity: usize,
    ) -> Self {
        let routes = shared.registry.routes();
        let mut staged = Vec::new();
        staged.resize_with(routes.subscribers.len(), Staged::default);
        Self {
            rx,
            wake,
            max_batch: max_batch.max(1),
            metrics_interval,
            dedup_capacity,
            routes,
            staged,
            dedup: HashMap::new(),
            last_kind: None,
            pending_dispatched: 0,
            pending_bytes: 0,
            received: shared.received.load(Ordering::Relaxed),
            unknown_kind: shared.unknown_kind.load(Ordering::Relaxed),
            shared,
        }
    }

    /// Runs until `stop()`; then discards (and counts) what is left in the queue.
    pub(crate) fn run(mut self) {
        tracing::debug!(max_batch = self.max_batch, "dispatch loop started");
        let mut next_tick = Instant::now() + self.metrics_interval;
        loop {
            if self.shared.stopping.load(Ordering::Acquire) {
                break;
            }
            let first = match self.rx.try_recv() {
                Ok(envelope) => envelope,
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => match self.yield_for_message() {
                    // Before sleeping, give the producers the processor a few times: a message
                    // that arrives meanwhile is taken without a futex wake-up, and this
                    // round's batch is larger.
                    Some(envelope) => envelope,
                    None => {
                        // Idle: refresh the gauge when due, then sleep until a message, a stop
                        // or the next tick.
                        let now = Instant::now();
                        if now >= next_tick {
                            self.refresh_gauge();
                            next_tick = now + self.metrics_interval;
                        }
                        let wait = next_tick.saturating_duration_since(now);
                        select! {
                            recv(self.rx) -> envelope => match envelope {
                                Ok(envelope) => envelope,
                                Err(_) => break,
                            },
                            recv(self.wake) -> _ => break,
                            default(wait) => continue,
                        }
                    }
                },
            };
            self.round(first);
            let now = Instant::now();
            if now >= next_tick {
                self.refresh_gauge();
                next_tick = now + self.metrics_interval;
            }
        }
        let discarded = discard_queue(&self.rx, &self.shared);
        tracing::debug!(
            received = self.received,
            unknown_kind = self.unknown_kind,
            discarded,
            "dispatch loop stopped"
        );
    }

    /// Yields the thread up to [`IDLE_YIELDS`] times, looking for a message after each.
    fn yield_for_message(&self) -> Option<Envelope<M>> {
        for _ in 0..IDLE_YIELDS {
            std::thread::yield_now();
            if let Ok(envelope) = self.rx.try_recv() {
                return Some(envelope);
            }
        }
        None
    }

    /// One round: routes `first` and up to `max_batch - 1` more envelopes as they come off the
    /// queue, then delivers one batch per subscriber and publishes the counters.
    fn round(&mut self, first: Envelope<M>) {
        self.handle(first);
        for _ in 1..self.max_batch {
            match self.rx.try_recv() {
                Ok(envelope) => self.handle(envelope),
                Err(_) => break,
            }
        }
        // Room was made: wake async senders waiting for it.
        fence(Ordering::SeqCst);
        if self.shared.async_waiters.load(Ordering::SeqCst) > 0 {
            self.shared.room.notify_waiters();
        }
        self.deliver_staged();
        self.publish();
    }

    fn refresh_gauge(&self) {
        self.shared
            .queue_depth
            .store(self.rx.len(), Ordering::Relaxed);
    }

    /// Makes every counter visible to metrics readers.
    fn publish(&mut self) {
        self.flush_kind_counters();
        self.shared.received.store(self.received, Ordering::Relaxed);
        self.shared
            .unknown_kind
            .store(self.unknown_kind, Ordering::Relaxed);
    }

    /// Adds the pending counts of `last_kind`'s route to its shared counters.
    fn flush_kind_counters(&mut self) {
        if self.pending_dispatched == 0 {
            return;
        }
        if let Some((_, Some(index))) = &self.last_kind
            && let Some(route) = self.routes.kinds.get(*index)
        {
            route
                .stats
                .dispatched
                .fetch_add(self.pending_dispatched, Ordering::Relaxed);
            route
                .stats
                .dispatched_bytes
                .fetch_add(self.pending_bytes, Ordering::Relaxed);
        }
        self.pending_dispatched = 0;
        self.pending_bytes = 0;
    }

    /// Takes the registry's new routing table if it changed, after delivering what was staged
    /// under the old one. Checked before every message (one atomic load), so a message enqueued
    /// after `register` returned always sees the new subscriber.
    #[inline]
    fn refresh_routes(&mut self) {
        if self.shared.registry.generation() == self.routes.generation {
            return;
        }
        self.deliver_staged();
        self.flush_kind_counters();
        self.last_kind = None;
        self.routes = self.shared.registry.routes();
        self.staged.clear();
        self.staged
            .resize_with(self.routes.subscribers.len(), Staged::default);
        let routes = &self.routes;
        self.dedup
            .retain(|kind, _| routes.dedup_kinds.contains(kind));
    }

    /// Finds the route of `kind`, by the one-entry cache or the table.
    #[inline]
    fn route_of(&mut self, kind: &M::Kind) -> Option<usize> {
        if let Some((last, route)) = &self.last_kind
            && last == kind
        {
            return *route;
        }
        self.flush_kind_counters();
        let route = self.routes.by_kind.get(kind).copied();
        self.last_kind = Some((kind.clone(), route));
        route
    }

    /// Routes one envelope: stages a message for its subscribers, or answers a barrier.
    fn handle(&mut self, envelope: Envelope<M>) {
        self.refresh_routes();
        let message = match envelope {
            Envelope::Message(message) => message,
            Envelope::Barrier(reply) => {
                self.deliver_staged();
                self.publish();
                // The waiter may have given up; nothing to do then.
                let _ = reply.try_send(());
                return;
            }
        };
        self.received += 1;
        let Some(index) = self.route_of(message.kind()) else {
            self.unknown_kind += 1;
            tracing::trace!(kind = ?message.kind(), sender = ?message.sender(), "message of a kind nobody subscribed to");
            return;
        };
        // Field borrows only from here: `route` borrows `self.routes`.
        let Some(route) = self.routes.kinds.get(index) else {
            return;
        };
        if route.dedup
            && let Some(hash) = message.content_hash()
        {
            let kind = message.kind();
            let fresh = match self.dedup.get_mut(kind) {
                Some(window) => window.insert(hash),
                None => {
                    let mut window = DedupWindow::new(self.dedup_capacity);
                    window.insert(hash);
                    self.dedup.insert(kind.clone(), window);
                    true
                }
            };
            if !fresh {
                route.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::trace!(?kind, sender = ?message.sender(), hash, "duplicate message dropped");
                return;
            }
        }
        self.pending_dispatched += 1;
        self.pending_bytes += message.payload().len() as u64;
        if let Some((last, others)) = route.targets.split_last() {
            for target in others {
                if let Some(staged) = self.staged.get_mut(target.slot as usize) {
                    staged.push(message.clone(), target.kind_index, target.multi_kind);
                }
            }
            if let Some(staged) = self.staged.get_mut(last.slot as usize) {
                staged.push(message, last.kind_index, last.multi_kind);
            }
        }
    }

    /// Delivers every subscriber's staged messages.
    fn deliver_staged(&mut self) {
        for (staged, subscriber) in self.staged.iter_mut().zip(&self.routes.subscribers) {
            if !staged.is_empty() {
                subscriber.deliver(staged, &self.shared.stopping);
            }
        }
    }
}

/// Empties the queue on stop, counting the messages nobody will see. Senders refuse new messages
/// once `stopping` is set, so this ends (at most one more message per sender blocked in `send`).
pub(crate) fn discard_queue<M: Message>(rx: &Receiver<Envelope<M>>, shared: &Shared<M>) -> u64 {
    let mut discarded = 0u64;
    while let Ok(envelope) = rx.try_recv() {
        if let Envelope::Message(_) = envelope {
            discarded += 1;
        }
    }
    shared
        .discarded_at_stop
        .fetch_add(discarded, Ordering::Relaxed);
    shared.queue_depth.store(0, Ordering::Relaxed);
    discarded
}
