//! The transport stack: TCP (tokio) → multistream-select → noise XX → multistream-select → yamux.

use std::time::Duration;

use libp2p_core::muxing::StreamMuxerBox;
use libp2p_core::transport::{Boxed, Transport as _};
use libp2p_core::upgrade::Version;
use libp2p_identity::{Keypair, PeerId};

use crate::{HostError, Limits};

/// The boxed transport every listener and the dialer use.
pub(crate) type BoxedTransport = Boxed<(PeerId, StreamMuxerBox)>;

/// Builds the transport for one listener or for dialing.
///
/// Security and muxer negotiation use multistream-select `V1Lazy`: every libp2p peer supports
/// noise and yamux, so the dialer saves a round trip by sending the handshake optimistically.
pub(crate) fn build(
    keypair: &Keypair,
    limits: &Limits,
    handshake_timeout: Duration,
) -> Result<BoxedTransport, HostError> {
    let noise = libp2p_noise::Config::new(keypair).map_err(|e| HostError::KeyFileMalformed {
        path: Default::default(),
        reason: format!("noise cannot use this key: {e}"),
    })?;
    let mut yamux = libp2p_yamux::Config::default();
    // Our own limits refuse streams first; yamux's limit is the hard backstop.
    yamux.set_max_num_streams(
        limits.max_inbound_streams_per_connection + limits.max_outbound_streams_per_connection + 16,
    );
    let tcp = libp2p_tcp::tokio::Transport::new(libp2p_tcp::Config::new().nodelay(true));
    Ok(tcp
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux)
        .timeout(handshake_timeout)
        .map(|(peer, muxer), _| (peer, StreamMuxerBox::new(muxer)))
        .boxed())
}
