//! Multiaddr helpers.

use libp2p_identity::PeerId;
use multiaddr::{Multiaddr, Protocol};

/// Splits a trailing `/p2p/<id>` off `addr`: the transport address and the peer id, if any.
pub fn without_p2p(addr: &Multiaddr) -> (Multiaddr, Option<PeerId>) {
    let mut addr = addr.clone();
    match addr.iter().last() {
        Some(Protocol::P2p(peer)) => {
            addr.pop();
            (addr, Some(peer))
        }
        _ => (addr, None),
    }
}

/// Appends `/p2p/<peer>` to `addr` (replacing one that is there).
pub fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    without_p2p(addr).0.with(Protocol::P2p(peer))
}

/// Whether `addr` is a TCP address this host can dial or listen on.
pub(crate) fn is_tcp(addr: &Multiaddr) -> bool {
    let mut iter = addr.iter();
    matches!(
        (iter.next(), iter.next()),
        (
            Some(Protocol::Ip4(_) | Protocol::Ip6(_)),
            Some(Protocol::Tcp(_))
        )
    )
}
