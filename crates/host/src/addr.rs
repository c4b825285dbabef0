//! Multiaddr helpers.

use std::net::{Ipv4Addr, Ipv6Addr};

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

/// The addresses a `/dns|dns4|dns6/<name>/tcp|udp/<port>/…` address stands for: the name
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
    let (port, transport) = match iter.next() {
        Some(Protocol::Tcp(port)) => (port, Protocol::Tcp(port)),
        Some(Protocol::Udp(port)) => (port, Protocol::Udp(port)),
        _ => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "expected /tcp/<port> or /udp/<port> after the name",
            ));
        }
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
        let resolved: Multiaddr = [first, transport.clone()]
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
    /// 127.0.0.0/8, ::1, and the name `localhost`.
    Loopback,
    /// Private, link-local, unique-local, shared (CGNAT), "this network" and unspecified ranges,
    /// and names under special-use local domains (`.local`, `.home.arpa`, `.internal`, …).
    Private,
    /// Everything else.
    Public,
}

/// The scope of `addr`, from its first component.
///
/// IPv6 addresses that carry an IPv4 address (IPv4-mapped `::ffff:a.b.c.d`, IPv4-compatible
/// `::a.b.c.d`, NAT64 `64:ff9b::a.b.c.d`) have the scope of that IPv4 address. A `/dns*` name is
/// judged by what it says (`localhost` is loopback, special-use local domains are private, other
/// names public), but it may resolve to anything: `keep_learned_addr` does not take a peer's
/// word for it. Other addresses (no IP, no name) count as public.
pub fn addr_scope(addr: &Multiaddr) -> AddrScope {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ip4_scope(ip),
        Some(Protocol::Ip6(ip)) => ip6_scope(ip),
        Some(Protocol::Dns(name) | Protocol::Dns4(name) | Protocol::Dns6(name)) => {
            name_scope(&name)
        }
        _ => AddrScope::Public,
    }
}

fn ip4_scope(ip: Ipv4Addr) -> AddrScope {
    let o = ip.octets();
    if ip.is_loopback() {
        AddrScope::Loopback
    } else if ip.is_private()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_documentation()
        // 0.0.0.0/8, "this network"
        || o[0] == 0
        // 100.64.0.0/10, shared address space (carrier-grade NAT)
        || (o[0] == 100 && (o[1] & 0xc0) == 64)
    {
        AddrScope::Private
    } else {
        AddrScope::Public
    }
}

fn ip6_scope(ip: Ipv6Addr) -> AddrScope {
    if let Some(v4) = embedded_ipv4(ip) {
        return ip4_scope(v4);
    }
    let seg = ip.segments();
    if ip.is_loopback() {
        AddrScope::Loopback
    } else if ip.is_unspecified()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site local fec0::/10 (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0064 && seg[1] == 0xff9b && seg[2] == 0x0001)
    // local-use NAT64 64:ff9b:1::/48
    {
        AddrScope::Private
    } else {
        AddrScope::Public
    }
}

/// The IPv4 address inside an IPv4-mapped (`::ffff:0:0/96`), IPv4-compatible (`::/96`, other
/// than `::` and `::1`) or NAT64 well-known-prefix (`64:ff9b::/96`) IPv6 address.
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return Some(v4);
    }
    let seg = ip.segments();
    let low = Ipv4Addr::from((u128::from(ip) & 0xffff_ffff) as u32);
    match seg[..6] {
        [0, 0, 0, 0, 0, 0] if !ip.is_unspecified() && !ip.is_loopback() => Some(low),
        [0x0064, 0xff9b, 0, 0, 0, 0] => Some(low),
        _ => None,
    }
}

/// What a name says about itself: `localhost` (RFC 6761) is loopback; names under special-use
/// or conventional local domains are private; any other name is public.
fn name_scope(name: &str) -> AddrScope {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    let under = |domain: &str| {
        name == domain
            || name
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    if under("localhost") {
        AddrScope::Loopback
    } else if [
        "local",
        "home.arpa",
        "internal",
        "lan",
        "localdomain",
        "intranet",
        "corp",
    ]
    .iter()
    .any(|d| under(d))
        || !name.contains('.')
    {
        // A single label is resolved through the local search domains.
        AddrScope::Private
    } else {
        AddrScope::Public
    }
}

/// Whether an address a peer announced may be kept for dialing.
///
/// An address with an IP: public ones always; private and loopback ones only when
/// `allow_private`, or when they are in the same scope as `via`, the remote address of the
/// connection the announcement came over (if known). Any other address — a `/dns*` name above
/// all, which may resolve into our own network whatever it looks like — only when
/// `allow_private`. Identify applies it to announced addresses, the DHT to its answers.
pub fn keep_learned_addr(addr: &Multiaddr, via: Option<&Multiaddr>, allow_private: bool) -> bool {
    if allow_private {
        return true;
    }
    if !matches!(
        addr.iter().next(),
        Some(Protocol::Ip4(_) | Protocol::Ip6(_))
    ) {
        return false;
    }
    let scope = addr_scope(addr);
    scope == AddrScope::Public || via.is_some_and(|v| addr_scope(v) == scope)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule for an address learned over a connection to `conn`.
    fn keep(addr: &Multiaddr, conn: &Multiaddr, allow_private: bool) -> bool {
        keep_learned_addr(addr, Some(conn), allow_private)
    }

    #[test]
    fn learned_private_addresses_are_dropped_unless_in_scope() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let over_public = a("/ip4/8.8.8.8/tcp/4001");
        let over_loopback = a("/ip4/127.0.0.1/tcp/4001");
        assert!(keep(&a("/ip4/1.1.1.1/tcp/1"), &over_public, false));
        assert!(!keep(&a("/ip4/10.0.0.5/tcp/1"), &over_public, false));
        assert!(!keep(&a("/ip4/127.0.0.1/tcp/1"), &over_public, false));
        assert!(keep(&a("/ip4/10.0.0.5/tcp/1"), &over_public, true));
        assert!(keep(&a("/ip4/127.0.0.1/tcp/1"), &over_loopback, false));
        assert!(!keep(&a("/ip4/192.168.0.2/tcp/1"), &over_loopback, false));
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
        assert_eq!(scope("/ip4/0.1.2.3/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/fec0::1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/::/tcp/1"), AddrScope::Private);
    }

    #[test]
    fn ipv6_carrying_ipv4_has_the_ipv4_scope() {
        let scope = |s: &str| addr_scope(&s.parse().unwrap());
        // IPv4-mapped
        assert_eq!(scope("/ip6/::ffff:10.0.0.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/::ffff:192.168.1.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/::ffff:127.0.0.1/tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/ip6/::ffff:169.254.1.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/::ffff:8.8.8.8/tcp/1"), AddrScope::Public);
        // IPv4-compatible (deprecated), but not :: or ::1
        assert_eq!(scope("/ip6/::10.0.0.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/::127.0.0.2/tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/ip6/::8.8.8.8/tcp/1"), AddrScope::Public);
        assert_eq!(scope("/ip6/::1/tcp/1"), AddrScope::Loopback);
        // NAT64 well-known prefix; the local-use prefix is private
        assert_eq!(scope("/ip6/64:ff9b::10.0.0.1/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/ip6/64:ff9b::8.8.8.8/tcp/1"), AddrScope::Public);
        assert_eq!(scope("/ip6/64:ff9b:1::8.8.8.8/tcp/1"), AddrScope::Private);
    }

    #[test]
    fn names_are_judged_by_what_they_say() {
        let scope = |s: &str| addr_scope(&s.parse().unwrap());
        assert_eq!(scope("/dns/localhost/tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/dns4/LocalHost./tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/dns6/a.b.localhost/tcp/1"), AddrScope::Loopback);
        assert_eq!(scope("/dns/printer.local/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/dns/nas.home.arpa/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/dns/db.internal/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/dns/fileserver/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/dns/example.com/tcp/1"), AddrScope::Public);
        assert_eq!(scope("/dns/notlocalhost.com/tcp/1"), AddrScope::Public);
        assert_eq!(scope("/dns/mylocal/tcp/1"), AddrScope::Private);
        assert_eq!(scope("/dns/x.mylocal.org/tcp/1"), AddrScope::Public);
    }

    #[test]
    fn learned_names_and_mapped_private_addresses_need_allow_private() {
        let a = |s: &str| s.parse::<Multiaddr>().unwrap();
        let over_public = a("/ip4/8.8.8.8/tcp/4001");
        let over_private = a("/ip4/10.0.0.2/tcp/4001");
        let over_loopback = a("/ip4/127.0.0.1/tcp/4001");
        for learned in [
            "/dns/example.com/tcp/1",
            "/dns4/localhost/tcp/1",
            "/dns6/printer.local/tcp/1",
            "/dnsaddr/example.com",
            "/unix/x.sock",
        ] {
            for conn in [&over_public, &over_private, &over_loopback] {
                assert!(!keep(&a(learned), conn, false), "{learned} over {conn}");
                assert!(keep(&a(learned), conn, true), "{learned} over {conn}");
            }
        }
        for (learned, over_public_kept, over_private_kept, over_loopback_kept) in [
            ("/ip6/::ffff:10.0.0.1/tcp/1", false, true, false),
            ("/ip6/::ffff:127.0.0.1/tcp/1", false, false, true),
            ("/ip6/64:ff9b::192.168.0.1/tcp/1", false, true, false),
            ("/ip6/::ffff:1.1.1.1/tcp/1", true, true, true),
        ] {
            assert_eq!(
                [&over_public, &over_private, &over_loopback].map(|conn| keep(
                    &a(learned),
                    conn,
                    false
                )),
                [over_public_kept, over_private_kept, over_loopback_kept],
                "{learned}"
            );
            for conn in [&over_public, &over_private, &over_loopback] {
                assert!(keep(&a(learned), conn, true), "{learned}");
            }
        }
    }
}
