//! The transport stack: TCP (tokio) → multistream-select → noise XX → multistream-select →
//! yamux negotiation. The negotiated session is then driven by the connection task.

use std::io;
use std::time::Duration;

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::transport::Boxed;
use libp2p_core::transport::timeout::TransportTimeout;
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};
use libp2p_core::{ConnectedPoint, Transport};
use libp2p_identity::{Keypair, PeerId};
use multistream_select::Version;

use crate::muxer::{Muxer, YamuxUpgrade};
use crate::{HostError, Limits};

/// The boxed transport every listener and the dialer use.
pub(crate) type BoxedTransport = Boxed<(PeerId, Muxer)>;

/// Builds the transport for one listener or for dialing.
///
/// Security and muxer negotiation use multistream-select `V1Lazy`: every libp2p peer supports
/// noise and yamux, so the dialer saves a round trip by sending the handshake optimistically.
pub(crate) fn build(
    keypair: &Keypair,
    limits: &Limits,
    handshake_timeout: Duration,
    max_frame_data: usize,
) -> Result<BoxedTransport, HostError> {
    let noise = libp2p_noise::Config::new(keypair).map_err(|e| HostError::KeyFileMalformed {
        path: Default::default(),
        reason: format!("noise cannot use this key: {e}"),
    })?;
    let yamux = YamuxUpgrade::new(limits, max_frame_data);
    let tcp = libp2p_tcp::tokio::Transport::new(libp2p_tcp::Config::new().nodelay(true));
    let upgraded = tcp.and_then(move |conn, endpoint| secure_and_mux(conn, endpoint, noise, yamux));
    Ok(TransportTimeout::new(upgraded, handshake_timeout).boxed())
}

/// Runs the connection upgrades in the role the connection was opened for (a dial made as
/// listener, for a simultaneous open, upgrades as the listener).
async fn secure_and_mux<C>(
    conn: C,
    endpoint: ConnectedPoint,
    noise: libp2p_noise::Config,
    yamux: YamuxUpgrade,
) -> io::Result<(PeerId, Muxer)>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let as_dialer = matches!(&endpoint, ConnectedPoint::Dialer { role_override, .. } if role_override.is_dialer());
    let (peer, secured) = apply(conn, noise, as_dialer).await?;
    let muxer = apply(secured, yamux, as_dialer).await?;
    Ok((peer, muxer))
}

/// Negotiates one upgrade with multistream-select and applies it.
async fn apply<C, U>(
    conn: C,
    upgrade: U,
    as_dialer: bool,
) -> io::Result<<U as InboundConnectionUpgrade<multistream_select::Negotiated<C>>>::Output>
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    U: UpgradeInfo
        + InboundConnectionUpgrade<multistream_select::Negotiated<C>>
        + OutboundConnectionUpgrade<
            multistream_select::Negotiated<C>,
            Output = <U as InboundConnectionUpgrade<multistream_select::Negotiated<C>>>::Output,
        >,
    U::Info: AsRef<str> + Clone,
    <U as InboundConnectionUpgrade<multistream_select::Negotiated<C>>>::Error:
        std::error::Error + Send + Sync + 'static,
    <U as OutboundConnectionUpgrade<multistream_select::Negotiated<C>>>::Error:
        std::error::Error + Send + Sync + 'static,
{
    let protocols = upgrade.protocol_info();
    if as_dialer {
        let (info, io) = multistream_select::dialer_select_proto(conn, protocols, Version::V1Lazy)
            .await
            .map_err(io::Error::other)?;
        upgrade
            .upgrade_outbound(io, info)
            .await
            .map_err(io::Error::other)
    } else {
        let (info, io) = multistream_select::listener_select_proto(conn, protocols)
            .await
            .map_err(io::Error::other)?;
        upgrade
            .upgrade_inbound(io, info)
            .await
            .map_err(io::Error::other)
    }
}
