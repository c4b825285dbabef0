//! The subscriber registry and the routing table the dispatch loop reads.
//!
//! Registrations change under a mutex; each change builds a new immutable [`Routes`] table and
//! bumps a generation counter. The loop checks the counter once per round (one atomic load) and
//! takes the new table only when it changed, so routing itself takes no lock.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::config::SubscriberOptions;
use crate::error::DispatchError;
use crate::message::Message;
use crate::subscriber::{SubscriberHandle, SubscriberShared};

/// Counters of one kind, written by the dispatch loop.
#[derive(Debug, Default)]
pub(crate) struct KindStats {
    /// Messages offered to the kind's subscribers (after the duplicate filter).
    pub(crate) dispatched: AtomicU64,
    /// Payload bytes of those messages.
    pub(crate) dispatched_bytes: AtomicU64,
    /// Messages the duplicate filter dropped.
    pub(crate) duplicates: AtomicU64,
}

/// One subscriber of a kind, as the loop sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Target {
    /// Index into [`Routes::subscribers`].
    pub(crate) slot: u32,
    /// Index of the kind among the subscriber's kinds.
    pub(crate) kind_index: u32,
    /// Whether the subscriber has several kinds.
    pub(crate) multi_kind: bool,
}

/// How the loop handles one kind.
pub(crate) struct KindRoute {
    pub(crate) targets: Vec<Target>,
    pub(crate) dedup: bool,
    pub(crate) stats: Arc<KindStats>,
}

/// An immutable routing table.
pub(crate) struct Routes<M: Message> {
    pub(crate) generation: u64,
    /// Kinds with at least one subscriber: index into `kinds`.
    pub(crate) by_kind: HashMap<M::Kind, usize>,
    pub(crate) kinds: Vec<KindRoute>,
    /// Every registered subscriber; `Target::slot` indexes this.
    pub(crate) subscribers: Vec<Arc<SubscriberShared<M>>>,
    /// Kinds whose duplicate filter is on (with or without subscribers).
    pub(crate) dedup_kinds: HashSet<M::Kind>,
}

impl<M: Message> Routes<M> {
    fn empty() -> Self {
        Self {
            generation: 0,
            by_kind: HashMap::new(),
            kinds: Vec::new(),
            subscribers: Vec::new(),
            dedup_kinds: HashSet::new(),
        }
    }
}

/// Every registered subscriber, and every kind's counters with whether its filter is on.
pub(crate) type RegistrySnapshot<M> = (
    Vec<Arc<SubscriberShared<M>>>,
    Vec<(<M as Message>::Kind, Arc<KindStats>, bool)>,
);

struct State<M: Message> {
    subscribers: BTreeMap<SubscriberHandle, Arc<SubscriberShared<M>>>,
    /// Kinds whose filter was turned on with `Dispatcher::set_dedup`.
    dedup_explicit: HashSet<M::Kind>,
    /// Counters of every kind ever registered; kept when its subscribers leave.
    kind_stats: HashMap<M::Kind, Arc<KindStats>>,
    routes: Arc<Routes<M>>,
    closed: bool,
}

/// The registry of subscribers of one dispatcher.
pub(crate) struct Registry<M: Message> {
    state: Mutex<State<M>>,
    generation: AtomicU64,
    next_id: AtomicU64,
    /// Subscribers dropped while their consumer was panicking.
    panicked: AtomicU64,
}

impl<M: Message> Registry<M> {
    /// Counts a subscriber lost to a panicking consumer.
    pub(crate) fn note_panicked(&self) {
        self.panicked.fetch_add(1, Ordering::Relaxed);
    }

    /// Subscribers lost to panicking consumers so far.
    pub(crate) fn panicked(&self) -> u64 {
        self.panicked.load(Ordering::Relaxed)
    }

    pub(crate) fn new() -> Self {
        Self {
            state: Mutex::new(State {
                subscribers: BTreeMap::new(),
                dedup_explicit: HashSet::new(),
                kind_stats: HashMap::new(),
                routes: Arc::new(Routes::empty()),
                closed: false,
            }),
            generation: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            panicked: AtomicU64::new(0),
        }
    }

    /// Adds a subscriber; takes effect for every message enqueued after this returns.
    pub(crate) fn register(
        &self,
        kinds: Vec<M::Kind>,
        options: SubscriberOptions,
        default_capacity: usize,
    ) -> Result<Arc<SubscriberShared<M>>, DispatchError> {
        let mut distinct: Vec<M::Kind> = Vec::with_capacity(kinds.len());
        for kind in kinds {
            if !distinct.contains(&kind) {
                distinct.push(kind);
            }
        }
        if distinct.is_empty() {
            return Err(DispatchError::NoKinds);
        }
        let capacity = options.capacity.unwrap_or(default_capacity);
        if capacity == 0 {
            return Err(DispatchError::InvalidConfig(
                "a subscriber's capacity must be at least 1".to_owned(),
            ));
        }
        if distinct.len() > u32::MAX as usize {
            return Err(DispatchError::InvalidConfig("too many kinds".to_owned()));
        }
        let mut state = self.state.lock();
        if state.closed {
            return Err(DispatchError::Stopped);
        }
        let handle = SubscriberHandle::new(self.next_id.fetch_add(1, Ordering::Relaxed));
        let shared = Arc::new(SubscriberShared::new(
            handle,
            options.name,
            distinct,
            options.policy,
            capacity,
            options.filter_duplicates,
        ));
        state.subscribers.insert(handle, Arc::clone(&shared));
        self.rebuild(&mut state);
        drop(state);
        tracing::debug!(
            subscriber = handle.id(),
            name = shared.name.as_deref().unwrap_or(""),
            kinds = ?shared.kinds,
            policy = ?shared.policy,
            capacity,
            filter_duplicates = shared.filter_duplicates,
            "subscriber registered"
        );
        Ok(shared)
    }

    /// Removes a subscriber and closes its channel; nothing is delivered to it after this returns.
    /// Returns whether it was registered.
    pub(crate) fn deregister(&self, handle: SubscriberHandle) -> bool {
        let mut state = self.state.lock();
        let Some(shared) = state.subscribers.remove(&handle) else {
            return false;
        };
        self.rebuild(&mut state);
        drop(state);
        shared.close();
        tracing::debug!(subscriber = handle.id(), "subscriber deregistered");
        true
    }

    /// Turns the explicit duplicate filter of `kind` on or off.
    pub(crate) fn set_dedup(&self, kind: M::Kind, on: bool) {
        let mut state = self.state.lock();
        let changed = if on {
            state.dedup_explicit.insert(kind)
        } else {
            state.dedup_explicit.remove(&kind)
        };
        if changed {
            self.rebuild(&mut state);
        }
    }

    /// Whether `kind`'s duplicate filter is on now.
    pub(crate) fn dedup_enabled(&self, kind: &M::Kind) -> bool {
        self.state.lock().routes.dedup_kinds.contains(kind)
    }

    /// The current routing table.
    pub(crate) fn routes(&self) -> Arc<Routes<M>> {
        Arc::clone(&self.state.lock().routes)
    }

    /// The generation of the current routing table (cheap; for the loop's per-round check).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Every registered subscriber and the per-kind counters, for metrics.
    pub(crate) fn snapshot(&self) -> RegistrySnapshot<M> {
        let state = self.state.lock();
        let subscribers = state.subscribers.values().cloned().collect();
        let kinds = state
            .kind_stats
            .iter()
            .map(|(kind, stats)| {
                (
                    kind.clone(),
                    Arc::clone(stats),
                    state.routes.dedup_kinds.contains(kind),
                )
            })
            .collect();
        (subscribers, kinds)
    }

    /// Wakes the loop out of any wait for room (on stop).
    pub(crate) fn interrupt_writers(&self) {
        let subscribers: Vec<_> = self.state.lock().subscribers.values().cloned().collect();
        for subscriber in subscribers {
            subscriber.interrupt_writer();
        }
    }

    /// Refuses new registrations and closes every subscriber (on stop). Closed subscribers stay
    /// listed for metrics.
    pub(crate) fn close(&self) {
        let subscribers: Vec<_> = {
            let mut state = self.state.lock();
            state.closed = true;
            state.subscribers.values().cloned().collect()
        };
        for subscriber in subscribers {
            subscriber.close();
        }
    }

    /// Builds and publishes a new routing table from `state`.
    fn rebuild(&self, state: &mut State<M>) {
        let generation = state.routes.generation + 1;
        let mut dedup_kinds = state.dedup_explicit.clone();
        for subscriber in state.subscribers.values() {
            if subscriber.filter_duplicates {
                dedup_kinds.extend(subscriber.kinds.iter().cloned());
            }
        }
        for kind in &dedup_kinds {
            state.kind_stats.entry(kind.clone()).or_default();
        }
        let mut by_kind: HashMap<M::Kind, KindRoute> = HashMap::new();
        let mut subscribers = Vec::with_capacity(state.subscribers.len());
        for (slot, subscriber) in state.subscribers.values().enumerate() {
            let multi_kind = subscriber.multi_kind();
            for (kind_index, kind) in subscriber.kinds.iter().enumerate() {
                let stats = state.kind_stats.entry(kind.clone()).or_default();
                let route = by_kind.entry(kind.clone()).or_insert_with(|| KindRoute {
                    targets: Vec::new(),
                    dedup: dedup_kinds.contains(kind),
                    stats: Arc::clone(stats),
                });
                // Slots and kind indexes fit u32: checked at registration, and a registry of
                // more than 4 billion subscribers cannot exist in memory.
                route.targets.push(Target {
                    slot: slot as u32,
                    kind_index: kind_index as u32,
                    multi_kind,
                });
            }
            subscribers.push(Arc::clone(subscriber));
        }
        let mut kinds = Vec::with_capacity(by_kind.len());
        let by_kind = by_kind
            .into_iter()
            .map(|(kind, route)| {
                kinds.push(route);
                (kind, kinds.len() - 1)
            })
            .collect();
        state.routes = Arc::new(Routes {
            generation,
            by_kind,
            kinds,
            subscribers,
            dedup_kinds,
        });
        self.generation.store(generation, Ordering::Release);
    }
}
