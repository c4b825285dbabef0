//! Metrics: the [`DispatcherMetrics`] snapshot and the Prometheus collector.
//!
//! Every counter is an atomic the dispatch loop writes with relaxed stores (mostly once per round,
//! never under a lock); a snapshot reads them without stopping the loop, so the figures of one
//! snapshot may be a round apart from each other.

use std::collections::HashMap;
use std::fmt;
use std::hash::Hash;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crossbeam_channel::Sender;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

use crate::config::DeliveryPolicy;
use crate::message::Message;
use crate::shared::{Envelope, Shared};
use crate::subscriber::SubscriberHandle;

/// A snapshot of the dispatcher's counters, from
/// [`Dispatcher::metrics`](crate::Dispatcher::metrics).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct DispatcherMetrics<K: Eq + Hash> {
    /// Messages in the receive queue (read when the snapshot was taken).
    pub queue_depth: usize,
    /// The receive queue's capacity.
    pub queue_capacity: usize,
    /// Messages the loop took off the queue.
    pub received: u64,
    /// Messages of a kind no subscriber was registered for (dropped, counted here).
    pub unknown_kind: u64,
    /// Messages still in the queue when the dispatcher stopped (dropped, counted here).
    pub discarded_at_stop: u64,
    /// Subscribers removed because their consumer panicked while holding them.
    pub subscribers_panicked: u64,
    /// Per kind: every kind that ever had a subscriber or a duplicate filter.
    pub kinds: HashMap<K, KindMetrics>,
    /// Per registered subscriber, by registration order. A deregistered subscriber's counters
    /// leave with it.
    pub subscribers: Vec<SubscriberMetrics<K>>,
}

impl<K: Eq + Hash> DispatcherMetrics<K> {
    /// The counters of `kind` (zero if it never had subscribers).
    pub fn kind(&self, kind: &K) -> KindMetrics {
        self.kinds.get(kind).copied().unwrap_or_default()
    }

    /// The counters of one subscriber, if it is registered.
    pub fn subscriber(&self, handle: SubscriberHandle) -> Option<&SubscriberMetrics<K>> {
        self.subscribers.iter().find(|s| s.handle == handle)
    }
}

/// Counters of one message kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct KindMetrics {
    /// Messages offered to the kind's subscribers (after the duplicate filter).
    pub dispatched: u64,
    /// Payload bytes of those messages.
    pub dispatched_bytes: u64,
    /// Messages the duplicate filter dropped.
    pub duplicates: u64,
    /// Whether the duplicate filter is on.
    pub dedup: bool,
}

/// Delivered and dropped counts of one subscriber for one kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeliveryCounts {
    /// Messages put into the subscriber's channel.
    pub delivered: u64,
    /// Messages that did not fit (policy `DropNewest`, or `Block` after its timeout).
    pub dropped: u64,
}

/// Counters of one subscriber.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriberMetrics<K> {
    /// Its handle.
    pub handle: SubscriberHandle,
    /// Its name, if it was given one.
    pub name: Option<String>,
    /// Its delivery policy.
    pub policy: DeliveryPolicy,
    /// Its channel capacity in messages.
    pub capacity: usize,
    /// Messages in its channel now (not counting the batch the consumer is reading).
    pub queued: usize,
    /// Whether it is closed (the dispatcher stopped).
    pub closed: bool,
    /// Per kind, in registration order.
    pub kinds: Vec<(K, DeliveryCounts)>,
}

impl<K: PartialEq> SubscriberMetrics<K> {
    /// Messages delivered, all kinds together.
    pub fn delivered(&self) -> u64 {
        self.kinds.iter().map(|(_, c)| c.delivered).sum()
    }

    /// Messages dropped, all kinds together.
    pub fn dropped(&self) -> u64 {
        self.kinds.iter().map(|(_, c)| c.dropped).sum()
    }

    /// The counts of one kind (zero if the subscriber does not take it).
    pub fn kind(&self, kind: &K) -> DeliveryCounts {
        self.kinds
            .iter()
            .find(|(k, _)| k == kind)
            .map(|(_, c)| *c)
            .unwrap_or_default()
    }
}

/// Reads every counter.
pub(crate) fn snapshot<M: Message>(
    shared: &Shared<M>,
    queue_depth: usize,
) -> DispatcherMetrics<M::Kind> {
    let (subscribers, kinds) = shared.registry.snapshot();
    let kinds = kinds
        .into_iter()
        .map(|(kind, stats, dedup)| {
            let metrics = KindMetrics {
                dispatched: stats.dispatched.load(Ordering::Relaxed),
                dispatched_bytes: stats.dispatched_bytes.load(Ordering::Relaxed),
                duplicates: stats.duplicates.load(Ordering::Relaxed),
                dedup,
            };
            (kind, metrics)
        })
        .collect();
    let subscribers = subscribers
        .iter()
        .map(|s| SubscriberMetrics {
            handle: s.handle,
            name: s.name.clone(),
            policy: s.policy,
            capacity: s.capacity,
            queued: s.queued(),
            closed: s.is_closed(),
            kinds: s
                .kinds
                .iter()
                .zip(&s.counters)
                .map(|(kind, c)| {
                    let counts = DeliveryCounts {
                        delivered: c.delivered.load(Ordering::Relaxed),
                        dropped: c.dropped.load(Ordering::Relaxed),
                    };
                    (kind.clone(), counts)
                })
                .collect(),
        })
        .collect();
    DispatcherMetrics {
        queue_depth,
        queue_capacity: shared.queue_capacity,
        received: shared.received.load(Ordering::Relaxed),
        unknown_kind: shared.unknown_kind.load(Ordering::Relaxed),
        discarded_at_stop: shared.discarded_at_stop.load(Ordering::Relaxed),
        subscribers_panicked: shared.registry.panicked(),
        kinds,
        subscribers,
    }
}

/// A per-kind metric family: name, help, unit, and how to read it.
type PerKind = (
    &'static str,
    &'static str,
    Option<Unit>,
    fn(&KindMetrics) -> u64,
);

/// A per-subscriber-and-kind metric family: name, help, and how to read it.
type PerSubscriber = (&'static str, &'static str, fn(&DeliveryCounts) -> u64);

/// Exposes the snapshot to a `prometheus-client` registry at each scrape.
pub(crate) struct Collector<M: Message> {
    pub(crate) shared: Arc<Shared<M>>,
    pub(crate) tx: Sender<Envelope<M>>,
}

impl<M: Message> fmt::Debug for Collector<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DispatcherCollector")
            .finish_non_exhaustive()
    }
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    value: u64,
) -> Result<(), fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, unit, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: usize,
) -> Result<(), fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl<M: Message> prometheus_client::collector::Collector for Collector<M> {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), fmt::Error> {
        let depth = self.tx.len();
        self.shared.queue_depth.store(depth, Ordering::Relaxed);
        let snapshot = snapshot(&self.shared, depth);
        gauge(
            &mut encoder,
            "p2pnet_dispatcher_queue_depth",
            "Messages in the receive queue.",
            depth,
        )?;
        gauge(
            &mut encoder,
            "p2pnet_dispatcher_queue_capacity",
            "Capacity of the receive queue.",
            snapshot.queue_capacity,
        )?;
        counter(
            &mut encoder,
            "p2pnet_dispatcher_received",
            "Messages taken off the receive queue.",
            None,
            snapshot.received,
        )?;
        counter(
            &mut encoder,
            "p2pnet_dispatcher_unknown_kind",
            "Messages of a kind no subscriber was registered for.",
            None,
            snapshot.unknown_kind,
        )?;
        counter(
            &mut encoder,
            "p2pnet_dispatcher_discarded_at_stop",
            "Messages still queued when the dispatcher stopped.",
            None,
            snapshot.discarded_at_stop,
        )?;
        counter(
            &mut encoder,
            "p2pnet_dispatcher_subscribers_panicked",
            "Subscribers removed because their consumer panicked.",
            None,
            snapshot.subscribers_panicked,
        )?;

        let kinds: Vec<(String, KindMetrics)> = snapshot
            .kinds
            .iter()
            .map(|(kind, m)| (M::kind_label(kind), *m))
            .collect();
        let per_kind: [PerKind; 3] = [
            (
                "p2pnet_dispatcher_dispatched",
                "Messages offered to subscribers, per kind.",
                None,
                |m| m.dispatched,
            ),
            (
                "p2pnet_dispatcher_payload",
                "Payload bytes offered to subscribers, per kind.",
                Some(Unit::Bytes),
                |m| m.dispatched_bytes,
            ),
            (
                "p2pnet_dispatcher_duplicates",
                "Messages dropped by the duplicate filter, per kind.",
                None,
                |m| m.duplicates,
            ),
        ];
        for (name, help, unit, value) in per_kind {
            let metric = ConstCounter::new(0u64);
            let mut family =
                encoder.encode_descriptor(name, help, unit.as_ref(), metric.metric_type())?;
            for (label, m) in &kinds {
                let labels = [("kind", label.as_str())];
                ConstCounter::new(value(m)).encode(family.encode_family(&labels)?)?;
            }
        }

        let per_subscriber: [PerSubscriber; 2] = [
            (
                "p2pnet_dispatcher_delivered",
                "Messages put into a subscriber's channel, per subscriber and kind.",
                |c| c.delivered,
            ),
            (
                "p2pnet_dispatcher_dropped",
                "Messages dropped because a subscriber's channel was full, per subscriber and kind.",
                |c| c.dropped,
            ),
        ];
        for (name, help, value) in per_subscriber {
            let metric = ConstCounter::new(0u64);
            let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            for subscriber in &snapshot.subscribers {
                let id = subscriber.handle.id().to_string();
                let subscriber_name = subscriber.name.as_deref().unwrap_or("");
                for (kind, counts) in &subscriber.kinds {
                    let kind = M::kind_label(kind);
                    let labels = [
                        ("subscriber", id.as_str()),
                        ("name", subscriber_name),
                        ("kind", kind.as_str()),
                    ];
                    ConstCounter::new(value(counts)).encode(family.encode_family(&labels)?)?;
                }
            }
        }
        let metric = ConstGauge::new(0i64);
        let mut family = encoder.encode_descriptor(
            "p2pnet_dispatcher_subscriber_queued",
            "Messages waiting in a subscriber's channel.",
            None,
            metric.metric_type(),
        )?;
        for subscriber in &snapshot.subscribers {
            let id = subscriber.handle.id().to_string();
            let labels = [
                ("subscriber", id.as_str()),
                ("name", subscriber.name.as_deref().unwrap_or("")),
            ];
            let queued = i64::try_from(subscriber.queued).unwrap_or(i64::MAX);
            ConstGauge::new(queued).encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}
