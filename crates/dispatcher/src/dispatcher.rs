//! [`Dispatcher`]: owns the receive queue, the subscriber registry and the dispatch thread.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, SendTimeoutError, Sender};
use parking_lot::Mutex;

use crate::config::{DispatcherConfig, SubscriberOptions};
use crate::dispatch_loop::{DispatchLoop, discard_queue};
use crate::error::DispatchError;
use crate::message::Message;
use crate::metrics::{self, Collector, DispatcherMetrics};
use crate::sender::DispatchSender;
use crate::shared::{Envelope, Shared};
use crate::subscriber::{Subscriber, SubscriberHandle};

enum Lifecycle<M> {
    /// Created, not started: the queue fills but nothing is dispatched.
    Idle {
        rx: Receiver<Envelope<M>>,
    },
    /// The loop runs; dropping `wake` wakes it when idle.
    Running {
        thread: JoinHandle<()>,
        wake: Sender<()>,
    },
    Stopped,
}

/// The message dispatcher: a bounded receive queue, a dispatch loop on its own thread, and a
/// registry of subscribers.
///
/// Every method takes `&self`; share the dispatcher in an `Arc` if several owners need it.
/// Dropping it stops it.
///
/// # Lifecycle
/// [`new`](Self::new) → (register subscribers, hand out [`sender`](Self::sender)s) →
/// [`start`](Self::start) → … → [`stop`](Self::stop). Messages sent before `start` wait in the
/// queue. Subscribers may come and go at any time while it runs. A stopped dispatcher cannot be
/// started again.
pub struct Dispatcher<M: Message> {
    config: DispatcherConfig,
    shared: Arc<Shared<M>>,
    tx: Sender<Envelope<M>>,
    lifecycle: Mutex<Lifecycle<M>>,
}

impl<M: Message> fmt::Debug for Dispatcher<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &*self.lifecycle.lock() {
            Lifecycle::Idle { .. } => "idle",
            Lifecycle::Running { .. } => "running",
            Lifecycle::Stopped => "stopped",
        };
        f.debug_struct("Dispatcher")
            .field("state", &state)
            .field("queued", &self.tx.len())
            .field("config", &self.config)
            .finish()
    }
}

impl<M: Message> Dispatcher<M> {
    /// Creates a dispatcher (not yet running) after checking `config`.
    pub fn new(config: DispatcherConfig) -> Result<Self, DispatchError> {
        config.validate()?;
        let (tx, rx) = crossbeam_channel::bounded(config.queue_capacity);
        Ok(Self {
            shared: Arc::new(Shared::new(config.queue_capacity)),
            tx,
            lifecycle: Mutex::new(Lifecycle::Idle { rx }),
            config,
        })
    }

    /// The configuration it was created with.
    pub fn config(&self) -> &DispatcherConfig {
        &self.config
    }

    /// Starts the dispatch loop on a thread named [`DispatcherConfig::thread_name`].
    ///
    /// Fails with [`DispatchError::AlreadyStarted`] if it runs, [`DispatchError::Stopped`] after
    /// [`stop`](Self::stop), and [`DispatchError::Spawn`] if the thread cannot be created (the
    /// dispatcher is stopped then).
    pub fn start(&self) -> Result<(), DispatchError> {
        let mut lifecycle = self.lifecycle.lock();
        let rx = match std::mem::replace(&mut *lifecycle, Lifecycle::Stopped) {
            Lifecycle::Idle { rx } => rx,
            running @ Lifecycle::Running { .. } => {
                *lifecycle = running;
                return Err(DispatchError::AlreadyStarted);
            }
            Lifecycle::Stopped => return Err(DispatchError::Stopped),
        };
        let (wake, wake_rx) = crossbeam_channel::bounded(0);
        let dispatch_loop = DispatchLoop::new(
            rx,
            wake_rx,
            Arc::clone(&self.shared),
            self.config.max_batch,
            self.config.metrics_interval,
            self.config.dedup_capacity,
        );
        let spawned = std::thread::Builder::new()
            .name(self.config.thread_name.clone())
            .spawn(move || dispatch_loop.run());
        match spawned {
            Ok(thread) => {
                *lifecycle = Lifecycle::Running { thread, wake };
                tracing::info!(
                    queue_capacity = self.config.queue_capacity,
                    max_batch = self.config.max_batch,
                    thread = %self.config.thread_name,
                    "dispatcher started"
                );
                Ok(())
            }
            Err(error) => {
                drop(lifecycle);
                tracing::error!(%error, "could not spawn the dispatch thread");
                self.shut_down();
                Err(DispatchError::Spawn(error))
            }
        }
    }

    /// Stops the dispatcher and joins its thread. Idempotent; returns promptly even with a full
    /// queue and `Block` subscribers whose channels are full.
    ///
    /// Afterwards senders fail with [`DispatchError::Stopped`] (including those blocked in
    /// `send`), messages still queued are discarded (counted in
    /// [`DispatcherMetrics::discarded_at_stop`]), and every subscriber is closed: it receives what
    /// was already delivered to it, then [`DispatchError::Closed`]. A sender blocked in `send`
    /// while the queue is emptied may still get one message in, which is then dropped uncounted.
    pub fn stop(&self) {
        let mut lifecycle = self.lifecycle.lock();
        let previous = std::mem::replace(&mut *lifecycle, Lifecycle::Stopped);
        self.shared.stopping.store(true, Ordering::SeqCst);
        match previous {
            Lifecycle::Stopped => return,
            Lifecycle::Idle { rx } => {
                discard_queue(&rx, &self.shared);
            }
            Lifecycle::Running { thread, wake } => {
                // Wake the loop wherever it waits: idle on the queue, or for room in a `Block`
                // subscriber's channel.
                drop(wake);
                self.shared.registry.interrupt_writers();
                if thread.join().is_err() {
                    tracing::error!("the dispatch thread panicked");
                }
            }
        }
        // Hold the lifecycle lock until everything is closed, so a concurrent `stop` returns
        // only once the dispatcher is fully stopped.
        self.shut_down();
        drop(lifecycle);
        tracing::info!(
            received = self.shared.received.load(Ordering::Relaxed),
            discarded_at_stop = self.shared.discarded_at_stop.load(Ordering::Relaxed),
            "dispatcher stopped"
        );
    }

    /// Closes the subscribers and releases waiting async senders.
    fn shut_down(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        self.shared.registry.close();
        self.shared.room.notify_waiters();
    }

    /// Whether the dispatch loop runs.
    pub fn is_running(&self) -> bool {
        matches!(*self.lifecycle.lock(), Lifecycle::Running { .. })
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.shared.stopping.load(Ordering::Acquire)
    }

    /// A new handle to put messages into the receive queue.
    pub fn sender(&self) -> DispatchSender<M> {
        DispatchSender::new(self.tx.clone(), Arc::clone(&self.shared))
    }

    /// Registers a subscriber for `kinds` (repeated kinds count once). It receives every message
    /// of those kinds enqueued after this returns, in queue order, until it is deregistered or
    /// dropped.
    ///
    /// Fails with [`DispatchError::NoKinds`] for an empty list, [`DispatchError::InvalidConfig`]
    /// for a zero capacity, and [`DispatchError::Stopped`] after [`stop`](Self::stop).
    pub fn register<I>(
        &self,
        kinds: I,
        options: SubscriberOptions,
    ) -> Result<Subscriber<M>, DispatchError>
    where
        I: IntoIterator<Item = M::Kind>,
    {
        let shared = self.shared.registry.register(
            kinds.into_iter().collect(),
            options,
            self.config.subscriber_capacity,
        )?;
        Ok(Subscriber::new(
            shared,
            Arc::downgrade(&self.shared.registry),
        ))
    }

    /// Removes a subscriber: nothing is delivered to it after this returns; it still receives
    /// what was delivered before, then [`DispatchError::Closed`]. Its duplicate-filter request
    /// goes with it; other subscribers' requests stay in force.
    ///
    /// Fails with [`DispatchError::UnknownSubscriber`] if the handle is not registered (never
    /// was, or already removed).
    pub fn deregister(&self, handle: SubscriberHandle) -> Result<(), DispatchError> {
        if self.shared.registry.deregister(handle) {
            Ok(())
        } else {
            Err(DispatchError::UnknownSubscriber(handle))
        }
    }

    /// Turns the duplicate filter of `kind` on or off, independently of subscribers' requests
    /// ([`SubscriberOptions::filter_duplicates`]): the filter is on while this or any registered
    /// subscriber of the kind asks for it. Takes effect for messages enqueued after this returns.
    pub fn set_dedup(&self, kind: M::Kind, on: bool) {
        self.shared.registry.set_dedup(kind, on);
    }

    /// Whether the duplicate filter of `kind` is on.
    pub fn dedup_enabled(&self, kind: &M::Kind) -> bool {
        self.shared.registry.dedup_enabled(kind)
    }

    /// Waits until every message enqueued before this call has been offered to its subscribers
    /// (delivered, dropped or filtered), for at most `timeout`.
    ///
    /// Fails with [`DispatchError::Timeout`] (also when the dispatcher is not started) and
    /// [`DispatchError::Stopped`].
    pub fn flush(&self, timeout: Duration) -> Result<(), DispatchError> {
        if self.is_stopped() {
            return Err(DispatchError::Stopped);
        }
        let deadline = Instant::now() + timeout;
        let (reply, done) = crossbeam_channel::bounded(1);
        match self.tx.send_timeout(Envelope::Barrier(reply), timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(DispatchError::Timeout),
            Err(SendTimeoutError::Disconnected(_)) => return Err(DispatchError::Stopped),
        }
        match done.recv_deadline(deadline) {
            Ok(()) => Ok(()),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(DispatchError::Timeout),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(DispatchError::Stopped),
        }
    }

    /// A snapshot of every counter; refreshes the queue-depth gauge.
    pub fn metrics(&self) -> DispatcherMetrics<M::Kind> {
        let depth = self.tx.len();
        self.shared.queue_depth.store(depth, Ordering::Relaxed);
        metrics::snapshot(&self.shared, depth)
    }

    /// The queue-depth gauge as the loop last refreshed it (every
    /// [`DispatcherConfig::metrics_interval`], or on [`metrics`](Self::metrics)).
    pub fn queue_depth_gauge(&self) -> usize {
        self.shared.queue_depth.load(Ordering::Relaxed)
    }

    /// Registers the dispatcher's metrics into a `prometheus-client` registry; they are read at
    /// each scrape. Names start with `p2pnet_dispatcher_`: `queue_depth`, `queue_capacity`,
    /// `received_total`, `unknown_kind_total`, `discarded_at_stop_total`, and per kind
    /// `dispatched_total`, `payload_bytes_total`, `duplicates_total`; per subscriber and kind
    /// `delivered_total`, `dropped_total`; per subscriber `subscriber_queued`.
    pub fn register_metrics(&self, registry: &mut prometheus_client::registry::Registry) {
        registry.register_collector(Box::new(Collector {
            shared: Arc::clone(&self.shared),
            tx: self.tx.clone(),
        }));
    }
}

impl<M: Message> Drop for Dispatcher<M> {
    fn drop(&mut self) {
        self.stop();
    }
}
