//! QUIC (`/ip4|ip6/<ip>/udp/<port>/quic-v1`): quinn endpoints with libp2p's TLS 1.3 handshake
//! (libp2p-tls: a self-signed certificate carrying the peer's libp2p key, ALPN `libp2p`).
//!
//! A QUIC connection needs no noise or yamux: TLS authenticates the peer and QUIC carries the
//! streams. The host drives quinn directly (not through libp2p-quic's `StreamMuxer`, whose
//! streams finish when dropped and cannot be reset), so a QUIC stream's ends are as exact as a
//! yamux one's ([`stream::QuicStream`]).
//!
//! Each listen address is one endpoint (one UDP socket); dials go out from a listening endpoint
//! of the same family when there is one (so a peer sees our listening port, which hole
//! punching relies on), else from a dial-only endpoint per family.

pub(crate) mod stream;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::{Keypair, PeerId};
use multiaddr::{Multiaddr, Protocol};
use parking_lot::Mutex;
use quinn::crypto::rustls::{QuicClientConfig, QuicServerConfig};

use crate::{HostConfig, HostError};

/// The TLS server name every libp2p QUIC dialer sends (the certificate, not the name, is checked).
const SERVER_NAME: &str = "l";
/// The receive and send buffer asked for each endpoint's UDP socket (the kernel caps it at
/// `net.core.rmem_max` / `wmem_max`): a burst of datagrams, a close among them, is not dropped
/// for want of room as easily as with the 208 KiB default.
const SOCKET_BUFFER: usize = 4 << 20;
/// How long shutdown waits for the endpoints to say goodbye to their peers.
const CLOSE_WAIT: Duration = Duration::from_millis(500);

/// The QUIC side of a host: its configurations and endpoints.
pub(crate) struct Quic {
    client: quinn::ClientConfig,
    server: quinn::ServerConfig,
    endpoint_config: quinn::EndpointConfig,
    /// Listening endpoints, by listener id (they dial too).
    listening: Mutex<Vec<(u64, quinn::Endpoint)>>,
    /// Dial-only endpoints: IPv4, IPv6.
    dialing: Mutex<[Option<quinn::Endpoint>; 2]>,
}

impl Quic {
    /// Builds the TLS and transport configurations from the host's key and configuration.
    pub(crate) fn new(keypair: &Keypair, config: &HostConfig) -> Result<Quic, HostError> {
        let bad_key = |reason: String| HostError::KeyFileMalformed {
            path: Default::default(),
            reason: format!("QUIC TLS cannot use this key: {reason}"),
        };
        let client_tls =
            libp2p_tls::make_client_config(keypair, None).map_err(|e| bad_key(e.to_string()))?;
        let server_tls =
            libp2p_tls::make_server_config(keypair).map_err(|e| bad_key(e.to_string()))?;
        let client_tls =
            QuicClientConfig::try_from(client_tls).map_err(|e| bad_key(e.to_string()))?;
        let server_tls =
            QuicServerConfig::try_from(server_tls).map_err(|e| bad_key(e.to_string()))?;

        let q = &config.quic;
        let limits = &config.limits;
        let mut transport = quinn::TransportConfig::default();
        let inbound = u32::try_from(limits.max_inbound_streams_per_connection).unwrap_or(u32::MAX);
        transport
            .max_concurrent_bidi_streams(inbound.into())
            .max_concurrent_uni_streams(0u32.into())
            .datagram_receive_buffer_size(None)
            .allow_spin(false)
            .stream_receive_window(q.max_stream_window.into())
            .receive_window(q.max_connection_window.into())
            .send_window(u64::from(q.max_connection_window))
            .keep_alive_interval(Some(q.keep_alive));
        let idle =
            quinn::IdleTimeout::try_from(q.idle_timeout).map_err(|_| HostError::InvalidConfig {
                field: "quic.idle_timeout",
                reason: format!("{:?} is too long for QUIC", q.idle_timeout),
            })?;
        transport.max_idle_timeout(Some(idle));
        let transport = Arc::new(transport);

        let mut server = quinn::ServerConfig::with_crypto(Arc::new(server_tls));
        server.transport = transport.clone();
        server.migration(false);
        server.max_incoming(limits.max_pending_incoming.max(1));
        let mut client = quinn::ClientConfig::new(Arc::new(client_tls));
        client.transport_config(transport);
        let mut endpoint_config = quinn::EndpointConfig::default();
        endpoint_config.supported_versions(vec![1]);
        Ok(Quic {
            client,
            server,
            endpoint_config,
            listening: Mutex::default(),
            dialing: Mutex::default(),
        })
    }

    /// Binds a listening endpoint to `addr` (a port in use is an `AddrInUse` error).
    pub(crate) fn bind(&self, id: u64, addr: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let socket = udp_socket(addr)?;
        let endpoint = quinn::Endpoint::new(
            self.endpoint_config.clone(),
            Some(self.server.clone()),
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        self.listening.lock().push((id, endpoint.clone()));
        Ok(endpoint)
    }

    /// Stops listener `id`: it takes no new connection; those it carries go on.
    pub(crate) fn unbind(&self, id: u64) {
        let mut listening = self.listening.lock();
        if let Some(i) = listening.iter().position(|(l, _)| *l == id) {
            let (_, endpoint) = listening.remove(i);
            endpoint.set_server_config(None);
        }
    }

    /// The endpoint to dial `target` from.
    fn dial_endpoint(&self, target: SocketAddr) -> std::io::Result<quinn::Endpoint> {
        let fits = |local: SocketAddr| {
            local.is_ipv4() == target.is_ipv4()
                && (local.ip().is_unspecified()
                    || (local.ip().is_loopback() && target.ip().is_loopback()))
        };
        if let Some((_, e)) = self
            .listening
            .lock()
            .iter()
            .find(|(_, e)| e.local_addr().is_ok_and(fits))
        {
            return Ok(e.clone());
        }
        let slot = usize::from(!target.is_ipv4());
        let mut dialing = self.dialing.lock();
        if let Some(e) = &dialing[slot] {
            return Ok(e.clone());
        }
        let any: IpAddr = if target.is_ipv4() {
            Ipv4Addr::UNSPECIFIED.into()
        } else {
            Ipv6Addr::UNSPECIFIED.into()
        };
        let socket = udp_socket(SocketAddr::new(any, 0))?;
        let endpoint = quinn::Endpoint::new(
            self.endpoint_config.clone(),
            None,
            socket,
            Arc::new(quinn::TokioRuntime),
        )?;
        dialing[slot] = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// Dials `target` and completes the handshake: the authenticated peer and the connection.
    pub(crate) async fn connect(
        &self,
        target: SocketAddr,
    ) -> Result<(PeerId, quinn::Connection), String> {
        let endpoint = self.dial_endpoint(target).map_err(|e| e.to_string())?;
        let connecting = endpoint
            .connect_with(self.client.clone(), target, SERVER_NAME)
            .map_err(|e| e.to_string())?;
        let conn = connecting.await.map_err(|e| e.to_string())?;
        let peer = peer_id(&conn).inspect_err(|_| conn.close(0u32.into(), b""))?;
        Ok((peer, conn))
    }

    /// Closes every endpoint and waits (bounded) until their connections have said goodbye, so
    /// that no socket is left when the host's shutdown returns.
    pub(crate) async fn close_all(&self) {
        let mut endpoints: Vec<quinn::Endpoint> =
            self.listening.lock().drain(..).map(|(_, e)| e).collect();
        endpoints.extend(self.dialing.lock().iter_mut().filter_map(Option::take));
        for e in &endpoints {
            e.close(0u32.into(), b"shutdown");
        }
        let idle = futures::future::join_all(endpoints.iter().map(|e| e.wait_idle()));
        let _ = tokio::time::timeout(CLOSE_WAIT, idle).await;
    }
}

/// A UDP socket bound to `addr` with [`SOCKET_BUFFER`]-sized buffers (as far as the kernel
/// allows; a refusal is not an error). No `SO_REUSEPORT`: a port in use is `AddrInUse`.
fn udp_socket(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if let Err(e) = socket.set_recv_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    if let Err(e) = socket.set_send_buffer_size(SOCKET_BUFFER) {
        tracing::debug!(error = %e, "cannot enlarge the UDP send buffer");
    }
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// The peer a connection's TLS handshake authenticated (its certificate's libp2p key).
pub(crate) fn peer_id(conn: &quinn::Connection) -> Result<PeerId, String> {
    let identity = conn
        .peer_identity()
        .ok_or("the peer presented no certificate")?;
    let certs = identity
        .downcast::<Vec<quinn::rustls::pki_types::CertificateDer<'static>>>()
        .map_err(|_| "unexpected certificate type")?;
    let cert = certs.first().ok_or("the peer presented no certificate")?;
    let cert = libp2p_tls::certificate::parse(cert).map_err(|e| e.to_string())?;
    Ok(cert.peer_id())
}

/// The socket address of a QUIC address: `/ip4|ip6/<ip>/udp/<port>/quic-v1` (with nothing after
/// it but `/p2p/…`).
pub(crate) fn socket_addr(addr: &Multiaddr) -> Option<SocketAddr> {
    let mut iter = addr.iter();
    let ip: IpAddr = match iter.next()? {
        Protocol::Ip4(ip) => ip.into(),
        Protocol::Ip6(ip) => ip.into(),
        _ => return None,
    };
    let Protocol::Udp(port) = iter.next()? else {
        return None;
    };
    let Protocol::QuicV1 = iter.next()? else {
        return None;
    };
    match iter.next() {
        None | Some(Protocol::P2p(_)) => Some(SocketAddr::new(ip, port)),
        Some(_) => None,
    }
}

/// The QUIC address of a socket address.
pub(crate) fn multiaddr(addr: SocketAddr) -> Multiaddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => match ip.to_ipv4_mapped() {
            Some(v4) => Protocol::Ip4(v4),
            None => Protocol::Ip6(ip),
        },
    };
    Multiaddr::empty()
        .with(ip)
        .with(Protocol::Udp(addr.port()))
        .with(Protocol::QuicV1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quic_addresses_round_trip_and_others_are_not_quic() {
        let a: Multiaddr = "/ip4/127.0.0.1/udp/4001/quic-v1".parse().unwrap();
        let sa = socket_addr(&a).unwrap();
        assert_eq!(sa, "127.0.0.1:4001".parse().unwrap());
        assert_eq!(multiaddr(sa), a);
        let six: Multiaddr = "/ip6/::1/udp/9/quic-v1".parse().unwrap();
        assert_eq!(multiaddr(socket_addr(&six).unwrap()), six);
        for other in [
            "/ip4/127.0.0.1/tcp/4001",
            "/ip4/127.0.0.1/udp/4001",
            "/ip4/127.0.0.1/udp/4001/quic",
            "/ip4/127.0.0.1/udp/4001/quic-v1/webtransport",
            "/dns4/example.com/udp/4001/quic-v1",
        ] {
            assert!(socket_addr(&other.parse().unwrap()).is_none(), "{other}");
        }
    }
}
