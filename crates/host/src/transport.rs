//! The transport stack: TCP (tokio) → multistream-select → noise XX → multistream-select → yamux.

use std::time::Duration;

use libp2p_core::transport::{Boxed, Transport as _};
use libp2p_core::upgrade::Version;
use libp2p_identity::{Keypair, PeerId};

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
    split_send_size: usize,
) -> Result<BoxedTransport, HostError> {
    let noise = libp2p_noise::Config::new(keypair).map_err(|e| HostError::KeyFileMalformed {
        path: Default::default(),
        reason: format!("noise cannot use this key: {e}"),
    })?;
    // Our own limits refuse streams first; yamux's stream limit is the hard backstop.
    let yamux = YamuxUpgrade::new(limits, split_send_size);
    let tcp = libp2p_tcp::tokio::Transport::new(libp2p_tcp::Config::new().nodelay(true));
    let upgraded = tcp
        .upgrade(Version::V1Lazy)
        .authenticate(noise)
        .multiplex(yamux)
        .timeout(handshake_timeout);
    // `Multiplexed::boxed` would box the muxer too; we keep its type.
    Ok(libp2p_core::Transport::boxed(upgraded))
}
