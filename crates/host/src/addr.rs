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

/// Whether `addr` starts with a name to resolve (`/dns`, `/dns4`, `/dns6`).
pub(crate) fn is_dns(addr: &Multiaddr) -> bool {
    matches!(
        addr.iter().next(),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_))
    )
}

/// The TCP addresses a `/dns|dns4|dns6/<name>/tcp/<port>/…` address stands for: the name
/// resolved by the system resolver (`/dns4` keeps IPv4 answers, `/dns6` IPv6 ones, `/dns` both),
/// each with the rest of the address kept. An empty list when the name has no such address.
pub(crate) async fn resolve_dns(addr: &Multiaddr) -> std::io::Result<Vec<Multiaddr>> {
    let mut iter = addr.iter();
    let (name, want_v4, want_v6) = match iter.next() {
        Some(Protocol::Dns(name)) => (name, true, true),
        Some(Protocol::Dns4(name)) => (name, true, false),
        Some(Protocol::Dns6(name)) => (name, false, true),
        _ => return Ok(vec![addr.clone()]),
    };
    let Some(Protocol::Tcp(port)) = iter.next() else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "expected /tcp/<port> after the name",
        ));
    };
    let rest: Vec<Protocol<'_>> = iter.collect();
    let mut out = Vec::new();
    for ip in tokio::net::lookup_host((&*name, port))
        .await?
        .map(|s| s.ip())
    {
        let first = match ip {
            std::net::IpAddr::V4(v4) if want_v4 => Protocol::Ip4(v4),
            std::net::IpAddr::V6(v6) if want_v6 => Protocol::Ip6(v6),
            _ => continue,
        };
        let resolved: Multiaddr = [first, Protocol::Tcp(port)]
            .into_iter()
            .chain(rest.iter().cloned())
            .collect();
        if !out.contains(&resolved) {
            out.push(resolved);
        }
    }
    Ok(out)
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

/// How far an address reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum AddrScope {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// Private, link-local, unique-local, shared (CGNAT) and unspecified ranges.
    Private,
    /// Everything else.
    Public,
}

/// The scope of the IP in `addr` (an address without an IP, e.g. DNS, counts as public).
pub fn addr_scope(addr: &Multiaddr) -> AddrScope {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => {
            if ip.is_loopback() {
                AddrScope::Loopback
            } else if ip.is_private()
                || ip.is_link_local()
                || ip.is_unspecified()
                || ip.is_broadcast()
                || ip.is_documentation()
                // 100.64.0.0/10, shared address space (carrier-grade NAT)
                || (ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64)
            {
                AddrScope::Private
            } else {
                AddrScope::Public
            }
        }
        Some(Protocol::Ip6(ip)) => {
            let seg0 = ip.segments()[0];
            if ip.is_loopback() {
                AddrScope::Loopback
            } else if ip.is_unspecified()
                || (seg0 & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (seg0 & 0xffc0) == 0xfe80 // link local fe80::/10
                || (seg0 == 0x2001 && ip.segments()[1] == 0x0db8)
            // documentation
            {
                AddrScope::Private
            } else {
                AddrScope::Public
            }
        }
        _ => AddrScope::Public,
    }
}

/// Whether an address a peer announced may be kept for dialing: public addresses always;
/// private and loopback ones only when `allow_private`, or when they are in the same scope as the
/// connection the announcement came over.
pub(crate) fn keep_learned_addr(
    addr: &Multiaddr,
    connection: &Multiaddr,
    allow_private: bool,
) -> bool {
    let scope = addr_scope(addr);
    scope == AddrScope::Public || allow_private || scope == addr_scope(connection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn learned_private_addresses_are_dropped_unless_in_scope() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let over_public = a("/ip4/8.8.8.8/tcp/4001");
        let over_loopback = a("/ip4/127.0.0.1/tcp/4001");
        assert!(keep_learned_addr(
            &a("/ip4/1.1.1.1/tcp/1"),
            &over_public,
            false
        ));
        assert!(!keep_learned_addr(
            &a("/ip4/10.0.0.5/tcp/1"),
            &over_public,
            false
        ));
        assert!(!keep_learned_addr(
            &a("/ip4/127.0.0.1/tcp/1"),
            &over_public,
            false
        ));
        assert!(keep_learned_addr(
            &a("/ip4/10.0.0.5/tcp/1"),
            &over_public,
            true
        ));
        assert!(keep_learned_addr(
            &a("/ip4/127.0.0.1/tcp/1"),
            &over_loopback,
            false
        ));
        assert!(!keep_learned_addr(
            &a("/ip4/192.168.0.2/tcp/1"),
            &over_loopback,
            false
        ));
    }

    #[test]
    fn scopes() {
        let scope = |s: &str| addr_scope(&s.parse().unwrap());
        assert_eq!(scope("/ip4/127.0.0.1/tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/ip4/10.1.2.3/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip4/192.168.1.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip4/172.16.0.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip4/100.64.0.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip4/169.254.0.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip4/8.8.8.8/tcp/1"), AddrScope::Public);
        assert_eq!(scope("/ip6/::1/tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/ip6/fd00::1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/fe80::1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/2606:4700::1/tcp/1"), AddrScope::Public);
    }
}
