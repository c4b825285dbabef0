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
            received: shared.received.load(Ordering::Relaxed),
            unknown_kind: shared.unknown_kind.load(Ordering::Relaxed),
            shared,
        }
    }

    /// Runs until `stop()`; then discards (and counts) what is left in the queue.
    pub(crate) fn run(mut self) {
        tracing::debug!(max_batch = self.max_batch, "dispatch loop started");
        let mut batch: Vec<Envelope<M>> = Vec::with_capacity(self.max_batch);
        let mut next_tick = Instant::now() + self.metrics_interval;
        loop {
            if self.shared.stopping.load(Ordering::Acquire) {
                break;
            }
            match self.rx.try_recv() {
                Ok(envelope) => batch.push(envelope),
                Err(TryRecvError::Disconnected) => break,
                Err(TryRecvError::Empty) => {
                    // Idle: refresh the gauge when due, then sleep until a message, a stop or the
                    // next tick.
                    let now = Instant::now();
                    if now >= next_tick {
                        self.refresh_gauge();
                        next_tick = now + self.metrics_interval;
                    }
                    let wait = next_tick.saturating_duration_since(now);
                    select! {
                        recv(self.rx) -> envelope => match envelope {
                            Ok(envelope) => batch.push(envelope),
                            Err(_) => break,
                        },
                        recv(self.wake) -> _ => break,
                        default(wait) => continue,
                    }
                }
            }
            while batch.len() < self.max_batch {
                match self.rx.try_recv() {
                    Ok(envelope) => batch.push(envelope),
                    Err(_) => break,
                }
            }
            // Room was made: wake async senders waiting for it.
            fence(Ordering::SeqCst);
            if self.shared.async_waiters.load(Ordering::SeqCst) > 0 {
                self.shared.room.notify_waiters();
            }
            self.refresh_routes();
            self.dispatch(&mut batch);
            self.shared.received.store(self.received, Ordering::Relaxed);
            self.shared
                .unknown_kind
                .store(self.unknown_kind, Ordering::Relaxed);
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

    fn refresh_gauge(&self) {
        self.shared
            .queue_depth
            .store(self.rx.len(), Ordering::Relaxed);
    }

    /// Takes the registry's new routing table if it changed. Runs between rounds, when every
    /// staged buffer is empty.
    fn refresh_routes(&mut self) {
        if self.shared.registry.generation() == self.routes.generation {
            return;
        }
        self.routes = self.shared.registry.routes();
        self.staged.clear();
        self.staged
            .resize_with(self.routes.subscribers.len(), Staged::default);
        let routes = &self.routes;
        self.dedup
            .retain(|kind, _| routes.dedup_kinds.contains(kind));
    }

    /// Routes one batch and delivers it.
    fn dispatch(&mut self, batch: &mut Vec<Envelope<M>>) {
        let routes = Arc::clone(&self.routes);
        for envelope in batch.drain(..) {
            let message = match envelope {
                Envelope::Message(message) => message,
                Envelope::Barrier(reply) => {
                    self.deliver_staged(&routes);
                    // The waiter may have given up; nothing to do then.
                    let _ = reply.try_send(());
                    continue;
                }
            };
            self.received += 1;
            let kind = message.kind();
            let Some(route) = routes.by_kind.get(kind) else {
                self.unknown_kind += 1;
                tracing::trace!(?kind, sender = ?message.sender(), "message of a kind nobody subscribed to");
                continue;
            };
            if route.dedup
                && let Some(hash) = message.content_hash()
            {
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
                    continue;
                }
            }
            route.stats.dispatched.fetch_add(1, Ordering::Relaxed);
            route
                .stats
                .dispatched_bytes
                .fetch_add(message.payload().len() as u64, Ordering::Relaxed);
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
        self.deliver_staged(&routes);
    }

    /// Delivers every subscriber's staged messages.
    fn deliver_staged(&mut self, routes: &Routes<M>) {
        for (staged, subscriber) in self.staged.iter_mut().zip(&routes.subscribers) {
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
