//! Prometheus metrics of every component, read at scrape time, and the local endpoint that
//! serves them in the text format.

use std::sync::Arc;

use p2pnet_forward::Forwarder;
use p2pnet_host::Host;
use p2pnet_messaging::Messenger;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::NetError;
use crate::message::DispatchSink;

fn counter(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: u64) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

fn gauge(enc: &mut DescriptorEncoder<'_>, name: &str, help: &str, v: usize) -> std::fmt::Result {
    let m = ConstGauge::new(i64::try_from(v).unwrap_or(i64::MAX));
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

/// Picks one figure out of a kind's messaging statistics.
type KindValue = fn(&p2pnet_messaging::KindStats) -> u64;

/// Reads the host's, messaging's and forwarding's figures on each scrape.
#[derive(Debug)]
pub(crate) struct ComponentCollector {
    pub(crate) host: Host,
    pub(crate) messenger: Arc<Messenger<DispatchSink>>,
    pub(crate) forwarder: Forwarder,
}

impl prometheus_client::collector::Collector for ComponentCollector {
    fn encode(&self, mut enc: DescriptorEncoder<'_>) -> std::fmt::Result {
        let h = self.host.metrics();
        gauge(
            &mut enc,
            "p2pnet_host_connections_inbound",
            "Established inbound connections.",
            h.connections_inbound,
        )?;
        gauge(
            &mut enc,
            "p2pnet_host_connections_outbound",
            "Established outbound connections.",
            h.connections_outbound,
        )?;
        gauge(
            &mut enc,
            "p2pnet_host_streams_open",
            "Open streams.",
            h.streams_open,
        )?;
        counter(
            &mut enc,
            "p2pnet_host_dial_failures",
            "Failed dials.",
            h.dial_failures,
        )?;
        counter(
            &mut enc,
            "p2pnet_host_refused_streams",
            "Inbound streams refused by a limit.",
            h.refused_streams,
        )?;
        counter(
            &mut enc,
            "p2pnet_host_refused_connections",
            "Connections refused by a limit.",
            h.refused_connections,
        )?;
        counter(
            &mut enc,
            "p2pnet_host_failed_handshakes",
            "Inbound handshakes that failed or timed out.",
            h.failed_handshakes,
        )?;
        counter(
            &mut enc,
            "p2pnet_host_failed_negotiations",
            "Inbound stream negotiations that failed.",
            h.failed_negotiations,
        )?;

        let m = self.messenger.metrics();
        gauge(
            &mut enc,
            "p2pnet_messaging_sessions_open",
            "Open message sessions.",
            m.sessions_open,
        )?;
        counter(
            &mut enc,
            "p2pnet_messaging_wire_in_bytes",
            "Frame bytes received.",
            m.wire_bytes_in,
        )?;
        counter(
            &mut enc,
            "p2pnet_messaging_wire_out_bytes",
            "Frame bytes sent.",
            m.wire_bytes_out,
        )?;
        let per_kind: [(&str, &str, KindValue); 4] = [
            (
                "p2pnet_messaging_messages_in",
                "Messages received, per kind.",
                |s| s.messages_in,
            ),
            (
                "p2pnet_messaging_messages_out",
                "Messages sent, per kind.",
                |s| s.messages_out,
            ),
            (
                "p2pnet_messaging_payload_in_bytes",
                "Payload bytes received, per kind.",
                |s| s.bytes_in,
            ),
            (
                "p2pnet_messaging_payload_out_bytes",
                "Payload bytes sent, per kind.",
                |s| s.bytes_out,
            ),
        ];
        for (name, help, value) in per_kind {
            let proto = ConstCounter::new(0u64);
            let mut family = enc.encode_descriptor(name, help, None, proto.metric_type())?;
            for (kind, stats) in &m.by_kind {
                ConstCounter::new(value(stats))
                    .encode(family.encode_family(&[("kind", kind.as_str())])?)?;
            }
        }
        let by_reason: [(&str, &str, &std::collections::BTreeMap<&'static str, u64>); 3] = [
            (
                "p2pnet_messaging_handshake_failures",
                "Failed handshakes, per reason.",
                &m.handshake_failures,
            ),
            (
                "p2pnet_messaging_decode_errors",
                "Frames that failed to decode, per error.",
                &m.decode_errors,
            ),
            (
                "p2pnet_messaging_sessions_closed",
                "Closed sessions, per reason.",
                &m.sessions_closed,
            ),
        ];
        for (name, help, map) in by_reason {
            let proto = ConstCounter::new(0u64);
            let mut family = enc.encode_descriptor(name, help, None, proto.metric_type())?;
            for (reason, v) in map {
                ConstCounter::new(*v).encode(family.encode_family(&[("reason", *reason)])?)?;
            }
        }
        let proto = ConstCounter::new(0u64);
        let mut family = enc.encode_descriptor(
            "p2pnet_messaging_backpressure",
            "Sends refused because a peer's queue was full, per priority.",
            None,
            proto.metric_type(),
        )?;
        for (priority, v) in ["high", "normal", "low"].into_iter().zip(m.backpressure) {
            ConstCounter::new(v).encode(family.encode_family(&[("priority", priority)])?)?;
        }

        let streams = self.forwarder.list_streams();
        gauge(
            &mut enc,
            "p2pnet_forward_listeners",
            "Forwarding listeners.",
            self.forwarder.list_listeners().len(),
        )?;
        gauge(
            &mut enc,
            "p2pnet_forward_streams",
            "Bridged streams open now.",
            streams.len(),
        )?;
        gauge(
            &mut enc,
            "p2pnet_forward_open_streams_in_bytes",
            "Bytes received by the streams open now.",
            streams.iter().map(|s| s.bytes_in as usize).sum(),
        )?;
        gauge(
            &mut enc,
            "p2pnet_forward_open_streams_out_bytes",
            "Bytes sent by the streams open now.",
            streams.iter().map(|s| s.bytes_out as usize).sum(),
        )?;
        Ok(())
    }
}

/// Encodes `registry` in the Prometheus text format.
pub(crate) fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        tracing::warn!("encoding metrics failed");
    }
    text
}

/// Serves `GET /metrics` on a local address from its own thread until dropped.
pub(crate) struct MetricsServer {
    server: Arc<tiny_http::Server>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// The address actually bound.
    pub(crate) addr: std::net::SocketAddr,
}

impl MetricsServer {
    pub(crate) fn start(
        addr: &str,
        registry: Arc<parking_lot::Mutex<Registry>>,
    ) -> Result<MetricsServer, NetError> {
        let err = |reason: String| NetError::Metrics {
            addr: addr.to_owned(),
            reason,
        };
        let server = Arc::new(tiny_http::Server::http(addr).map_err(|e| err(e.to_string()))?);
        let bound = server
            .server_addr()
            .to_ip()
            .ok_or_else(|| err("not an IP address".into()))?;
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("p2pnet-metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let body = encode(&registry.lock());
                        let header = tiny_http::Header::from_bytes(
                            "Content-Type",
                            "text/plain; version=0.0.4; charset=utf-8",
                        )
                        .ok();
                        let mut r = tiny_http::Response::from_string(body);
                        if let Some(h) = header {
                            r = r.with_header(h);
                        }
                        r
                    } else {
                        tiny_http::Response::from_string("see /metrics\n").with_status_code(404)
                    };
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| err(e.to_string()))?;
        tracing::info!(address = %bound, "serving metrics");
        Ok(MetricsServer {
            server,
            thread: Some(thread),
            addr: bound,
        })
    }

    /// Stops serving and joins the thread.
    pub(crate) fn stop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.stop();
    }
}
