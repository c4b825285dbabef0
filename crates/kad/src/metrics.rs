//! Counters of a [`crate::Kademlia`] and their snapshot, [`KadMetrics`].
//!
//! The counters are atomics shared by the driver task, the stream tasks and the handles, so a
//! snapshot ([`crate::Kademlia::metrics`]) is cheap and never waits for the driver. The routing
//! table and store sizes are published by the driver when they change.

use std::sync::atomic::{AtomicU64, Ordering};

use parking_lot::Mutex;

use crate::message::MessageType;

/// What a query is for, as metrics count it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueryKind {
    /// `FIND_NODE` lookups: `find_peer`, `closest_peers`, `bootstrap`, bucket refreshes.
    FindNode,
    /// `get_record`.
    GetValue,
    /// `put_record` (and record republishing).
    PutValue,
    /// `provide` (and provider re-announcements).
    AddProvider,
    /// `providers`.
    GetProviders,
}

impl QueryKind {
    /// Every kind, in the order of [`KadMetrics::queries`].
    pub const ALL: [QueryKind; 5] = [
        QueryKind::FindNode,
        QueryKind::GetValue,
        QueryKind::PutValue,
        QueryKind::AddProvider,
        QueryKind::GetProviders,
    ];

    /// A short name (`find_node`, `get_value`, …) for labels.
    pub fn as_str(self) -> &'static str {
        match self {
            QueryKind::FindNode => "find_node",
            QueryKind::GetValue => "get_value",
            QueryKind::PutValue => "put_value",
            QueryKind::AddProvider => "add_provider",
            QueryKind::GetProviders => "get_providers",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// How a query ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum QueryEnd {
    Succeeded,
    Failed,
    TimedOut,
}

/// The outcomes of one kind of query.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryCounts {
    /// Queries started.
    pub started: u64,
    /// Queries that found what they looked for (a peer, a value, providers, a closest peer; a
    /// put or announcement that at least one peer accepted).
    pub succeeded: u64,
    /// Queries that ended without it (no known peers, not found, refused, shut down).
    pub failed: u64,
    /// Queries the query timeout cut short without success.
    pub timed_out: u64,
}

/// Hops of finished lookups: how many of them took each number of hops, with sum and max.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HopStats {
    /// `histogram[h]`: lookups that took `h` hops; the last slot counts `HOP_SLOTS - 1` hops
    /// and more.
    pub histogram: [u64; HOP_SLOTS],
    /// The sum of the hops of every lookup counted.
    pub sum: u64,
    /// How many lookups were counted.
    pub count: u64,
    /// The most hops one lookup took.
    pub max: u64,
}

/// The slots of [`HopStats::histogram`].
pub const HOP_SLOTS: usize = 16;

/// Requests other peers made of us, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundCounts {
    /// `FIND_NODE`.
    pub find_node: u64,
    /// `GET_VALUE`.
    pub get_value: u64,
    /// `PUT_VALUE`.
    pub put_value: u64,
    /// `ADD_PROVIDER`.
    pub add_provider: u64,
    /// `GET_PROVIDERS`.
    pub get_providers: u64,
    /// `PING`.
    pub ping: u64,
}

/// What was refused to other peers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Refusals {
    /// Requests over a peer's request rate.
    pub rate: u64,
    /// Streams over a peer's bound on concurrent inbound streams.
    pub stream_cap: u64,
    /// Streams reset for a malformed, oversized or invalid message.
    pub malformed: u64,
}

/// A snapshot of a node's metrics ([`crate::Kademlia::metrics`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KadMetrics {
    /// Peers in the routing table.
    pub table_size: usize,
    /// `(bucket index, peers)` of each non-empty bucket, closest bucket first.
    pub buckets: Vec<(usize, usize)>,
    /// Records stored here (ours and others').
    pub records: usize,
    /// Keys with provider records here.
    pub provider_keys: usize,
    /// Whether the node serves the protocol (server mode) right now.
    pub server: bool,
    /// Queries by kind, in the order of [`QueryKind::ALL`].
    pub queries: [(QueryKind, QueryCounts); 5],
    /// Queries waiting for a slot under [`crate::KadConfig::max_concurrent_queries`].
    pub queries_waiting: u64,
    /// The hops of finished lookups.
    pub hops: HopStats,
    /// Requests other peers made of us.
    pub inbound: InboundCounts,
    /// What was refused to other peers.
    pub refusals: Refusals,
    /// Bucket refreshes started.
    pub refreshes: u64,
    /// Records and provider records we re-put or re-announced.
    pub republished: u64,
    /// Times the route cache was written.
    pub route_cache_saves: u64,
}

impl Default for KadMetrics {
    fn default() -> Self {
        KadMetrics {
            table_size: 0,
            buckets: Vec::new(),
            records: 0,
            provider_keys: 0,
            server: false,
            queries: QueryKind::ALL.map(|k| (k, QueryCounts::default())),
            queries_waiting: 0,
            hops: HopStats::default(),
            inbound: InboundCounts::default(),
            refusals: Refusals::default(),
            refreshes: 0,
            republished: 0,
            route_cache_saves: 0,
        }
    }
}

impl KadMetrics {
    /// The counts of one kind of query.
    pub fn query(&self, kind: QueryKind) -> QueryCounts {
        self.queries[kind.index()].1
    }
}

#[derive(Default)]
struct KindCounters {
    started: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
}

/// The table and store sizes the driver publishes.
#[derive(Debug, Default, Clone)]
pub(crate) struct Sizes {
    pub(crate) table_size: usize,
    pub(crate) buckets: Vec<(usize, usize)>,
    pub(crate) records: usize,
    pub(crate) provider_keys: usize,
    pub(crate) server: bool,
}

/// The live counters.
#[derive(Default)]
pub(crate) struct Counters {
    kinds: [KindCounters; 5],
    waiting: AtomicU64,
    hops: [AtomicU64; HOP_SLOTS],
    hops_sum: AtomicU64,
    hops_count: AtomicU64,
    hops_max: AtomicU64,
    inbound: [AtomicU64; 6],
    refused_rate: AtomicU64,
    refused_stream_cap: AtomicU64,
    refused_malformed: AtomicU64,
    refreshes: AtomicU64,
    republished: AtomicU64,
    route_cache_saves: AtomicU64,
    sizes: Mutex<Sizes>,
}

fn inc(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

impl Counters {
    pub(crate) fn query_started(&self, kind: QueryKind) {
        inc(&self.kinds[kind.index()].started);
    }

    pub(crate) fn query_ended(&self, kind: QueryKind, end: QueryEnd) {
        let k = &self.kinds[kind.index()];
        inc(match end {
            QueryEnd::Succeeded => &k.succeeded,
            QueryEnd::Failed => &k.failed,
            QueryEnd::TimedOut => &k.timed_out,
        });
    }

    pub(crate) fn waiting(&self, delta: i64) {
        if delta >= 0 {
            self.waiting.fetch_add(delta as u64, Ordering::Relaxed);
        } else {
            self.waiting
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }

    pub(crate) fn hops(&self, hops: u32) {
        let h = u64::from(hops);
        inc(&self.hops[(hops as usize).min(HOP_SLOTS - 1)]);
        self.hops_sum.fetch_add(h, Ordering::Relaxed);
        inc(&self.hops_count);
        self.hops_max.fetch_max(h, Ordering::Relaxed);
    }

    pub(crate) fn inbound(&self, ty: MessageType) {
        let i = match ty {
            MessageType::FindNode => 0,
            MessageType::GetValue => 1,
            MessageType::PutValue => 2,
            MessageType::AddProvider => 3,
            MessageType::GetProviders => 4,
            MessageType::Ping => 5,
        };
        inc(&self.inbound[i]);
    }

    pub(crate) fn refused_rate(&self) {
        inc(&self.refused_rate);
    }

    pub(crate) fn refused_stream_cap(&self) {
        inc(&self.refused_stream_cap);
    }

    pub(crate) fn refused_malformed(&self) {
        inc(&self.refused_malformed);
    }

    pub(crate) fn refreshed(&self) {
        inc(&self.refreshes);
    }

    pub(crate) fn republished(&self) {
        inc(&self.republished);
    }

    pub(crate) fn route_cache_saved(&self) {
        inc(&self.route_cache_saves);
    }

    pub(crate) fn set_sizes(&self, sizes: Sizes) {
        *self.sizes.lock() = sizes;
    }

    pub(crate) fn set_server(&self, server: bool) {
        self.sizes.lock().server = server;
    }

    pub(crate) fn snapshot(&self) -> KadMetrics {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let sizes = self.sizes.lock().clone();
        let queries = QueryKind::ALL.map(|kind| {
            let k = &self.kinds[kind.index()];
            (
                kind,
                QueryCounts {
                    started: get(&k.started),
                    succeeded: get(&k.succeeded),
                    failed: get(&k.failed),
                    timed_out: get(&k.timed_out),
                },
            )
        });
        let i = &self.inbound;
        KadMetrics {
            table_size: sizes.table_size,
            buckets: sizes.buckets,
            records: sizes.records,
            provider_keys: sizes.provider_keys,
            server: sizes.server,
            queries,
            queries_waiting: get(&self.waiting),
            hops: HopStats {
                histogram: std::array::from_fn(|h| get(&self.hops[h])),
                sum: get(&self.hops_sum),
                count: get(&self.hops_count),
                max: get(&self.hops_max),
            },
            inbound: InboundCounts {
                find_node: get(&i[0]),
                get_value: get(&i[1]),
                put_value: get(&i[2]),
                add_provider: get(&i[3]),
                get_providers: get(&i[4]),
                ping: get(&i[5]),
            },
            refusals: Refusals {
                rate: get(&self.refused_rate),
                stream_cap: get(&self.refused_stream_cap),
                malformed: get(&self.refused_malformed),
            },
            refreshes: get(&self.refreshes),
            republished: get(&self.republished),
            route_cache_saves: get(&self.route_cache_saves),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_show_in_the_snapshot() {
        let c = Counters::default();
        c.query_started(QueryKind::GetValue);
        c.query_ended(QueryKind::GetValue, QueryEnd::TimedOut);
        c.hops(3);
        c.hops(40);
        c.inbound(MessageType::Ping);
        c.refused_rate();
        let m = c.snapshot();
        assert_eq!(m.query(QueryKind::GetValue).started, 1);
        assert_eq!(m.query(QueryKind::GetValue).timed_out, 1);
        assert_eq!(m.query(QueryKind::FindNode), QueryCounts::default());
        assert_eq!(m.hops.histogram[3], 1);
        assert_eq!(m.hops.histogram[HOP_SLOTS - 1], 1);
        assert_eq!((m.hops.sum, m.hops.count, m.hops.max), (43, 2, 40));
        assert_eq!(m.inbound.ping, 1);
        assert_eq!(m.refusals.rate, 1);
    }
}
