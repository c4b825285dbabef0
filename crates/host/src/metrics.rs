//! Counters and gauges the host keeps; read them with [`crate::Host::metrics`].

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections_inbound: AtomicUsize,
    pub(crate) connections_outbound: AtomicUsize,
    pub(crate) streams_open: AtomicUsize,
    pub(crate) dial_failures: AtomicU64,
    pub(crate) refused_streams: AtomicU64,
    pub(crate) refused_connections: AtomicU64,
    pub(crate) failed_handshakes: AtomicU64,
    pub(crate) failed_negotiations: AtomicU64,
}

impl Metrics {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> HostMetrics {
        HostMetrics {
            connections_inbound: self.connections_inbound.load(Ordering::Relaxed),
            connections_outbound: self.connections_outbound.load(Ordering::Relaxed),
            streams_open: self.streams_open.load(Ordering::Relaxed),
            dial_failures: self.dial_failures.load(Ordering::Relaxed),
            refused_streams: self.refused_streams.load(Ordering::Relaxed),
            refused_connections: self.refused_connections.load(Ordering::Relaxed),
            failed_handshakes: self.failed_handshakes.load(Ordering::Relaxed),
            failed_negotiations: self.failed_negotiations.load(Ordering::Relaxed),
        }
    }
}

/// A snapshot of the host's counters (totals since start) and gauges (current values).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HostMetrics {
    /// Gauge: established inbound connections.
    pub connections_inbound: usize,
    /// Gauge: established outbound connections.
    pub connections_outbound: usize,
    /// Gauge: open streams, both directions, including those still negotiating.
    pub streams_open: usize,
    /// Counter: dials that failed (unreachable, handshake failure, wrong peer id, timeout).
    pub dial_failures: u64,
    /// Counter: inbound streams refused by the per-connection limit.
    pub refused_streams: u64,
    /// Counter: connections refused by a connection limit.
    pub refused_connections: u64,
    /// Counter: inbound connections whose handshake failed or timed out (garbage, slowloris).
    pub failed_handshakes: u64,
    /// Counter: inbound streams whose protocol negotiation failed (unknown protocol, timeout).
    pub failed_negotiations: u64,
}
