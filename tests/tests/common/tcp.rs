//! Local TCP clients of forwarded listeners.

use std::time::Duration;

use p2pnet_host::{Multiaddr, Protocol};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The TCP port of an `/ip4|ip6/…/tcp/<port>` address (a forward listener's, say).
pub(crate) fn tcp_port(addr: &Multiaddr) -> u16 {
    addr.iter()
        .find_map(|p| match p {
            Protocol::Tcp(port) => Some(port),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no TCP port in {addr}"))
}

/// Writes `data` and reads as many bytes back (an echo service at the far end), within 10 s.
pub(crate) async fn echo(stream: &mut TcpStream, data: &[u8]) {
    stream.write_all(data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(Duration::from_secs(10), stream.read_exact(&mut back))
        .await
        .expect("no echo within 10 s")
        .unwrap();
    assert_eq!(back, data);
}

/// Connects to the TCP port of `addr` on 127.0.0.1.
pub(crate) async fn connect(addr: &Multiaddr) -> TcpStream {
    TcpStream::connect(("127.0.0.1", tcp_port(addr)))
        .await
        .unwrap()
}
