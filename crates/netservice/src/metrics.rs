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
    pub(crate) kad: Arc<parking_lot::Mutex<Option<p2pnet_kad::Kademlia>>>,
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

        let kad = self.kad.lock().clone();
        if let Some(kad) = kad {
            encode_kad(&mut enc, &kad.metrics())?;
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

/// The DHT's figures.
fn encode_kad(enc: &mut DescriptorEncoder<'_>, k: &p2pnet_kad::KadMetrics) -> std::fmt::Result {
    gauge(
        enc,
        "p2pnet_kad_routing_table_peers",
        "Peers in the routing table.",
        k.table_size,
    )?;
    let proto = ConstGauge::new(0i64);
    let mut family = enc.encode_descriptor(
        "p2pnet_kad_bucket_peers",
        "Peers per non-empty bucket (255: the farthest half of the key space).",
        None,
        proto.metric_type(),
    )?;
    for (bucket, n) in &k.buckets {
        let bucket = bucket.to_string();
        ConstGauge::new(i64::try_from(*n).unwrap_or(i64::MAX))
            .encode(family.encode_family(&[("bucket", bucket.as_str())])?)?;
    }
    gauge(
        enc,
        "p2pnet_kad_records",
        "Records stored for others and our own.",
        k.records,
    )?;
    gauge(
        enc,
        "p2pnet_kad_provider_keys",
        "Keys with provider records.",
        k.provider_keys,
    )?;
    gauge(
        enc,
        "p2pnet_kad_server_mode",
        "1 while the node answers queries.",
        usize::from(k.server),
    )?;
    type Pick = fn(&p2pnet_kad::metrics::QueryCounts) -> u64;
    let outcomes: [(&str, &str, Pick); 4] = [
        (
            "p2pnet_kad_queries_started",
            "Lookups started, per kind.",
            |c| c.started,
        ),
        (
            "p2pnet_kad_queries_succeeded",
            "Lookups that succeeded, per kind.",
            |c| c.succeeded,
        ),
        (
            "p2pnet_kad_queries_failed",
            "Lookups that failed, per kind.",
            |c| c.failed,
        ),
        (
            "p2pnet_kad_queries_timed_out",
            "Lookups cut by the query timeout, per kind.",
            |c| c.timed_out,
        ),
    ];
    for (name, help, pick) in outcomes {
        let proto = ConstCounter::new(0u64);
        let mut family = enc.encode_descriptor(name, help, None, proto.metric_type())?;
        for (kind, counts) in &k.queries {
            ConstCounter::new(pick(counts))
                .encode(family.encode_family(&[("kind", kind.as_str())])?)?;
        }
    }
    gauge(
        enc,
        "p2pnet_kad_queries_waiting",
        "Lookups waiting for a slot.",
        k.queries_waiting as usize,
    )?;
    counter(
        enc,
        "p2pnet_kad_hops",
        "Sum of the hops of finished lookups.",
        k.hops.sum,
    )?;
    counter(
        enc,
        "p2pnet_kad_lookups_finished",
        "Finished lookups (the hops' count).",
        k.hops.count,
    )?;
    gauge(
        enc,
        "p2pnet_kad_hops_max",
        "The most hops a lookup took.",
        k.hops.max as usize,
    )?;
    let i = &k.inbound;
    let proto = ConstCounter::new(0u64);
    let mut family = enc.encode_descriptor(
        "p2pnet_kad_inbound_requests",
        "Requests peers made to us, per type.",
        None,
        proto.metric_type(),
    )?;
    for (kind, v) in [
        ("find_node", i.find_node),
        ("get_value", i.get_value),
        ("put_value", i.put_value),
        ("add_provider", i.add_provider),
        ("get_providers", i.get_providers),
        ("ping", i.ping),
    ] {
        ConstCounter::new(v).encode(family.encode_family(&[("type", kind)])?)?;
    }
    let r = &k.refusals;
    let proto = ConstCounter::new(0u64);
    let mut family = enc.encode_descriptor(
        "p2pnet_kad_refusals",
        "Inbound requests and streams refused, per reason.",
        None,
        proto.metric_type(),
    )?;
    for (reason, v) in [
        ("rate", r.rate),
        ("stream_cap", r.stream_cap),
        ("malformed", r.malformed),
    ] {
        ConstCounter::new(v).encode(family.encode_family(&[("reason", reason)])?)?;
    }
    counter(
        enc,
        "p2pnet_kad_refreshes",
        "Bucket refresh lookups.",
        k.refreshes,
    )?;
    counter(
        enc,
        "p2pnet_kad_republished",
        "Records and provider keys republished.",
        k.republished,
    )?;
    counter(
        enc,
        "p2pnet_kad_route_cache_saves",
        "Saves of the routing table cache.",
        k.route_cache_saves,
    )?;
    Ok(())
}

/// Encodes `registry` in the Prometheus text format.
pub(crate) fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
        tracing::warn!("encoding metrics failed");
    }
    text
}

/// At most this many scrapes are served at once; a connection beyond them is closed at once.
const MAX_SCRAPES: usize = 16;
/// A scraper must send its request headers within this time.
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Serves `GET /metrics` (HTTP/1.1, hyper) on a local address from one task that the service
/// owns: [`MetricsServer::stop`] cancels it and joins it and every scrape in flight, so the
/// listening socket is closed when `stop` returns.
pub(crate) struct MetricsServer {
    cancel: tokio_util::sync::CancellationToken,
    task: Option<tokio::task::JoinHandle<()>>,
    /// The address actually bound.
    pub(crate) addr: std::net::SocketAddr,
}

impl MetricsServer {
    /// Binds `addr` and starts serving on the current runtime.
    pub(crate) fn start(
        addr: &str,
        registry: Arc<parking_lot::Mutex<Registry>>,
    ) -> Result<MetricsServer, NetError> {
        let err = |reason: String| NetError::Metrics {
            addr: addr.to_owned(),
            reason,
        };
        let listener = std::net::TcpListener::bind(addr)
            .and_then(|l| l.set_nonblocking(true).map(|()| l))
            .and_then(tokio::net::TcpListener::from_std)
            .map_err(|e| err(e.to_string()))?;
        let bound = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let cancel = tokio_util::sync::CancellationToken::new();
        let task = tokio::spawn(serve(listener, registry, cancel.clone()));
        tracing::info!(address = %bound, "serving metrics");
        Ok(MetricsServer {
            cancel,
            task: Some(task),
            addr: bound,
        })
    }

    /// Stops serving: closes the listener and ends every scrape in flight, then returns.
    pub(crate) async fn stop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        self.cancel.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The accept loop: one task per scrape, at most [`MAX_SCRAPES`] at once.
async fn serve(
    listener: tokio::net::TcpListener,
    registry: Arc<parking_lot::Mutex<Registry>>,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut scrapes = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            () = cancel.cancelled() => break,
            Some(_) = scrapes.join_next(), if !scrapes.is_empty() => continue,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if scrapes.len() >= MAX_SCRAPES {
            tracing::debug!(
                limit = MAX_SCRAPES,
                "metrics scrape refused: too many at once"
            );
            continue;
        }
        let registry = registry.clone();
        scrapes.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let registry = registry.clone();
                async move { Ok::<_, std::convert::Infallible>(respond(&request, &registry)) }
            });
            let served = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
            if let Err(e) = served {
                tracing::debug!(error = %e, "metrics scrape failed");
            }
        });
    }
    drop(listener);
    scrapes.shutdown().await;
}

/// The answer to one request: the text format for `GET /metrics`, 404 for anything else.
fn respond(
    request: &hyper::Request<hyper::body::Incoming>,
    registry: &parking_lot::Mutex<Registry>,
) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let (status, content_type, body) =
        if request.uri().path() == "/metrics" && request.method() == hyper::Method::GET {
            (
                hyper::StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                encode(&registry.lock()),
            )
        } else {
            (
                hyper::StatusCode::NOT_FOUND,
                "text/plain; charset=utf-8",
                "see /metrics\n".to_owned(),
            )
        };
    let mut response = hyper::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static(content_type),
    );
    response
}
