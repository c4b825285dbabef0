//! Local endpoints: parsing `/ip4|ip6/…/tcp/PORT` and `/unix/PATH` addresses, binding listeners,
//! connecting to targets, and the local connection type the bridge works with.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use p2pnet_host::{Multiaddr, Protocol};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream, UnixListener, UnixStream};

use crate::ForwardError;

/// The listen backlog of forwarding TCP listeners: how many connections the kernel completes and
/// queues until the accept loop takes them. `TcpListener::bind` (tokio through mio, like std)
/// uses 128, and a burst of more clients than that overflows the queue: the kernel drops their
/// SYNs (they wait a second or more for a retry) and, once it falls back to SYN cookies, resets
/// connections whose handshake it could not finish, before we ever see them. The kernel caps the
/// value at `net.core.somaxconn` (4,096 by default since Linux 5.4), as it does for Go's
/// listeners, which ask for that much. (Unix listeners already ask for the maximum on Linux.)
pub(crate) const LISTEN_BACKLOG: u32 = 4096;

/// A local address: a TCP socket address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// Builds the multiaddr of a Unix socket path: `/unix/<path>`, with the path (slashes included)
/// held in one component. Its text form percent-encodes the path, for example
/// `/unix/%2Ftmp%2Fsvc.sock`, and parses back to the same address.
pub fn unix_multiaddr(path: impl AsRef<Path>) -> Multiaddr {
    let encoded = percent_encode(&path.as_ref().to_string_lossy());
    Multiaddr::empty().with(Protocol::Unix(encoded.into()))
}

fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Endpoint {
    /// Parses `/ip4|ip6/<ip>/tcp/<port>` or `/unix/<path>` (the path percent-encoded in one
    /// component, or given as several components: `/unix/tmp/svc.sock` is `/tmp/svc.sock`).
    pub(crate) fn parse(addr: &Multiaddr) -> Result<Endpoint, ForwardError> {
        let unsupported = |reason| ForwardError::UnsupportedAddress {
            addr: addr.clone(),
            reason,
        };
        let mut iter = addr.iter();
        match iter.next() {
            Some(Protocol::Ip4(ip)) => tcp_port(iter, IpAddr::V4(ip)).ok_or_else(|| {
                unsupported("expected /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>")
            }),
            Some(Protocol::Ip6(ip)) => tcp_port(iter, IpAddr::V6(ip)).ok_or_else(|| {
                unsupported("expected /ip4/<ip>/tcp/<port> or /ip6/<ip>/tcp/<port>")
            }),
            Some(Protocol::Unix(first)) => {
                let mut path = percent_decode(&first)
                    .ok_or_else(|| unsupported("invalid percent-encoding in /unix path"))?;
                for p in iter {
                    let Protocol::Unix(seg) = p else {
                        return Err(unsupported("nothing may follow a /unix path"));
                    };
                    let seg = percent_decode(&seg)
                        .ok_or_else(|| unsupported("invalid percent-encoding in /unix path"))?;
                    path.push('/');
                    path.push_str(&seg);
                }
                if path.is_empty() {
                    return Err(unsupported("empty /unix path"));
                }
                if !path.starts_with('/') {
                    path.insert(0, '/');
                }
                Ok(Endpoint::Unix(PathBuf::from(path)))
            }
            _ => Err(unsupported(
                "expected /ip4|ip6/<ip>/tcp/<port> or /unix/<path>",
            )),
        }
    }

    /// The multiaddr of this endpoint.
    pub(crate) fn to_multiaddr(&self) -> Multiaddr {
        match self {
            Endpoint::Tcp(sa) => socket_multiaddr(*sa),
            Endpoint::Unix(path) => unix_multiaddr(path),
        }
    }
}

fn tcp_port<'a>(mut iter: impl Iterator<Item = Protocol<'a>>, ip: IpAddr) -> Option<Endpoint> {
    match (iter.next(), iter.next()) {
        (Some(Protocol::Tcp(port)), None) => Some(Endpoint::Tcp(SocketAddr::new(ip, port))),
        _ => None,
    }
}

pub(crate) fn socket_multiaddr(sa: SocketAddr) -> Multiaddr {
    let ip = match sa.ip() {
        IpAddr::V4(ip) => Protocol::Ip4(ip),
        IpAddr::V6(ip) => Protocol::Ip6(ip),
    };
    Multiaddr::empty().with(ip).with(Protocol::Tcp(sa.port()))
}

/// A bound local listener. A Unix listener removes its socket file when dropped.
#[derive(Debug)]
pub(crate) enum LocalListener {
    Tcp(TcpListener),
    Unix {
        listener: UnixListener,
        path: PathBuf,
    },
}

impl LocalListener {
    /// Binds `endpoint`. A Unix socket file nobody accepts on any more (a stale file left by an
    /// earlier run) is replaced; a live one, or a file that is not a socket, is an error.
    pub(crate) async fn bind(endpoint: &Endpoint, addr: &Multiaddr) -> Result<Self, ForwardError> {
        let bind_err = |e: io::Error| ForwardError::Bind {
            addr: addr.clone(),
            source: Arc::new(e),
        };
        match endpoint {
            Endpoint::Tcp(sa) => bind_tcp(*sa).map(LocalListener::Tcp).map_err(bind_err),
            Endpoint::Unix(path) => {
                replace_stale_socket(path).await.map_err(bind_err)?;
                let listener = UnixListener::bind(path).map_err(bind_err)?;
                Ok(LocalListener::Unix {
                    listener,
                    path: path.clone(),
                })
            }
        }
    }

    /// The endpoint actually bound (port 0 resolved).
    pub(crate) fn local_endpoint(&self) -> io::Result<Endpoint> {
        match self {
            LocalListener::Tcp(l) => l.local_addr().map(Endpoint::Tcp),
            LocalListener::Unix { path, .. } => Ok(Endpoint::Unix(path.clone())),
        }
    }

    /// Accepts one connection; returns it and the multiaddr of its other end.
    pub(crate) async fn accept(&self) -> io::Result<(LocalConn, Multiaddr)> {
        match self {
            LocalListener::Tcp(l) => {
                let (s, from) = l.accept().await?;
                let _ = s.set_nodelay(true);
                Ok((LocalConn::Tcp(s), socket_multiaddr(from)))
            }
            LocalListener::Unix { listener, path } => {
                let (s, _) = listener.accept().await?;
                // Unix clients are usually unnamed: report the socket they connected to.
                Ok((LocalConn::Unix(s), unix_multiaddr(path)))
            }
        }
    }
}

impl Drop for LocalListener {
    fn drop(&mut self) {
        if let LocalListener::Unix { path, .. } = self {
            match std::fs::remove_file(&*path) {
                Ok(()) => tracing::debug!(path = %path.display(), "removed unix socket"),
                Err(e) => {
                    tracing::debug!(path = %path.display(), error = %e, "could not remove unix socket")
                }
            }
        }
    }
}

/// Binds a TCP listener as `TcpListener::bind` does (`SO_REUSEADDR`), with [`LISTEN_BACKLOG`].
fn bind_tcp(sa: SocketAddr) -> io::Result<TcpListener> {
    let socket = match sa {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_reuseaddr(true)?;
    socket.bind(sa)?;
    socket.listen(LISTEN_BACKLOG)
}

async fn replace_stale_socket(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let meta = match tokio::fs::symlink_metadata(path).await {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !meta.file_type().is_socket() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "path exists and is not a socket",
        ));
    }
    match UnixStream::connect(path).await {
        Ok(_) => Err(io::Error::new(
            io::ErrorKind::AddrInUse,
            "a live socket is accepting on this path",
        )),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(path = %path.display(), "replacing stale unix socket");
            tokio::fs::remove_file(path).await
        }
        Err(e) => Err(e),
    }
}

/// Connects to a local target.
pub(crate) async fn connect(endpoint: &Endpoint) -> io::Result<LocalConn> {
    match endpoint {
        Endpoint::Tcp(sa) => {
            let s = TcpStream::connect(sa).await?;
            let _ = s.set_nodelay(true);
            Ok(LocalConn::Tcp(s))
        }
        Endpoint::Unix(path) => UnixStream::connect(path).await.map(LocalConn::Unix),
    }
}

/// A local connection: the TCP or Unix side of a bridge.
#[derive(Debug)]
pub(crate) enum LocalConn {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl LocalConn {
    /// Aborts the connection: a TCP reset (`SO_LINGER` 0, then close) or a Unix close.
    pub(crate) fn abort(self) {
        if let LocalConn::Tcp(s) = &self
            && let Err(e) = s.set_zero_linger()
        {
            tracing::debug!(error = %e, "cannot set SO_LINGER 0; closing normally");
        }
        drop(self);
    }
}

impl AsyncRead for LocalConn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalConn::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            LocalConn::Unix(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for LocalConn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            LocalConn::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            LocalConn::Unix(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalConn::Tcp(s) => Pin::new(s).poll_flush(cx),
            LocalConn::Unix(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            LocalConn::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            LocalConn::Unix(s) => Pin::new(s).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tcp_and_unix() {
        let a: Multiaddr = "/ip4/127.0.0.1/tcp/4001".parse().unwrap();
        assert_eq!(
            Endpoint::parse(&a).unwrap(),
            Endpoint::Tcp("127.0.0.1:4001".parse().unwrap())
        );
        let a: Multiaddr = "/ip6/::1/tcp/0".parse().unwrap();
        assert_eq!(
            Endpoint::parse(&a).unwrap(),
            Endpoint::Tcp("[::1]:0".parse().unwrap())
        );
        let u = unix_multiaddr("/tmp/a b/svc.sock");
        assert_eq!(
            Endpoint::parse(&u).unwrap(),
            Endpoint::Unix("/tmp/a b/svc.sock".into())
        );
        let text = u.to_string();
        assert_eq!(text, "/unix/%2Ftmp%2Fa%20b%2Fsvc.sock");
        assert_eq!(text.parse::<Multiaddr>().unwrap(), u);
        let plain: Multiaddr = "/unix/tmp/svc.sock".parse().unwrap_or_else(|_| {
            Multiaddr::empty()
                .with(Protocol::Unix("tmp".into()))
                .with(Protocol::Unix("svc.sock".into()))
        });
        assert_eq!(
            Endpoint::parse(&plain).unwrap(),
            Endpoint::Unix("/tmp/svc.sock".into())
        );
    }

    #[test]
    fn refuses_other_addresses() {
        for a in [
            "/ip4/127.0.0.1/udp/1",
            "/ip4/127.0.0.1",
            "/ip4/127.0.0.1/tcp/1/tcp/2",
            "/dns4/localhost/tcp/1",
        ] {
            let a: Multiaddr = a.parse().unwrap();
            assert!(matches!(
                Endpoint::parse(&a),
                Err(ForwardError::UnsupportedAddress { .. })
            ));
        }
        let bad = Multiaddr::empty().with(Protocol::Unix("%zz".into()));
        assert!(Endpoint::parse(&bad).is_err());
    }
}

/// A burst of connections larger than std's (and so tokio's) listen backlog of 128 must queue in
/// the kernel until the accept loop takes them. With a backlog of 128 the 130th client's SYN is
/// dropped while nobody accepts, and under load the kernel falls back to SYN cookies and resets
/// clients (the flake of the 500-connection forwarding test).
#[cfg(test)]
mod backlog_tests {
    #![allow(clippy::print_stderr)]

    use std::future::Future;
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::task::JoinSet;

    use super::*;

    /// How many connections to queue: 512, or less where `net.core.somaxconn` caps the backlog
    /// lower (`None` where it is too low for the test to mean anything).
    fn burst() -> Option<usize> {
        let somaxconn = std::fs::read_to_string("/proc/sys/net/core/somaxconn")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(4096);
        let n = somaxconn.min(LISTEN_BACKLOG as usize).min(512);
        (n > 200).then_some(n)
    }

    async fn queue_then_accept<C, F>(listener: LocalListener, n: usize, connect: C)
    where
        C: Fn() -> F,
        F: Future<Output = io::Result<LocalConn>> + Send + 'static,
    {
        // Nobody accepts yet: every handshake must complete into the kernel's queue.
        let mut clients = JoinSet::new();
        for _ in 0..n {
            clients.spawn(connect());
        }
        let mut conns = Vec::with_capacity(n);
        tokio::time::timeout(Duration::from_secs(10), async {
            while let Some(r) = clients.join_next().await {
                conns.push(r.unwrap().expect("connect"));
            }
        })
        .await
        .unwrap_or_else(|_| {
            panic!(
                "only {} of {n} connections were queued without an accept",
                conns.len()
            )
        });
        for (i, c) in conns.iter_mut().enumerate() {
            c.write_all(&(i as u32).to_be_bytes()).await.unwrap();
        }
        // Every queued connection is then accepted intact.
        let mut seen = vec![false; n];
        for _ in 0..n {
            let (mut conn, _) = tokio::time::timeout(Duration::from_secs(10), listener.accept())
                .await
                .expect("accept timed out")
                .unwrap();
            let mut b = [0u8; 4];
            conn.read_exact(&mut b).await.unwrap();
            seen[u32::from_be_bytes(b) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
    }

    #[tokio::test]
    async fn tcp_listener_queues_a_burst_larger_than_128() {
        let Some(n) = burst() else {
            eprintln!("skipped: net.core.somaxconn is too low for a burst over 128");
            return;
        };
        let ep = Endpoint::Tcp("127.0.0.1:0".parse().unwrap());
        let listener = LocalListener::bind(&ep, &ep.to_multiaddr()).await.unwrap();
        let bound = listener.local_endpoint().unwrap();
        queue_then_accept(listener, n, move || {
            let bound = bound.clone();
            async move { connect(&bound).await }
        })
        .await;
    }

    #[tokio::test]
    async fn unix_listener_queues_a_burst_larger_than_128() {
        let Some(n) = burst() else {
            eprintln!("skipped: net.core.somaxconn is too low for a burst over 128");
            return;
        };
        let dir = tempfile::tempdir().unwrap();
        let ep = Endpoint::Unix(dir.path().join("burst.sock"));
        let listener = LocalListener::bind(&ep, &ep.to_multiaddr()).await.unwrap();
        queue_then_accept(listener, n, move || {
            let ep = ep.clone();
            async move { connect(&ep).await }
        })
        .await;
    }
}
