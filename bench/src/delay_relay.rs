//! A userspace delay relay on 127.0.0.1: a TCP or UDP port that forwards everything to a target
//! and back, each way after a fixed delay, so that a loopback dial sees a round-trip time of twice
//! that delay.
//!
//! Data is delayed, not throttled: every chunk (TCP) or datagram (UDP) is stamped when it is read
//! and released, in order, once the delay has passed since then, whatever else is in flight (the
//! queues hold up to [`QUEUE`] chunks per direction: far more than a connect exchanges).
//!
//! TCP: the kernel completes the client's handshake with the relay's listener at once, so the
//! relay accounts for the handshake itself: it connects to the target one delay after the accept
//! (the SYN on its way) and releases no client byte before the SYN-ACK would have reached the
//! client (two delays after the accept), plus the delay of the byte's own way. A connect through
//! the relay thus costs one round trip before the first byte reaches the target, as over a real
//! path. The end of each direction (FIN) is delayed like data.
//!
//! Every task belongs to the relay: [`DelayRelay::stop`] (or dropping it) ends them all.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// Chunks (or datagrams) queued per direction at most.
pub(crate) const QUEUE: usize = 4096;
const READ_BUF: usize = 64 * 1024;

/// One queued chunk: when to release it and its bytes (`None`: the end of the stream).
type Delayed = (Instant, Option<Vec<u8>>);

/// A running relay: its address, and the task that owns every task it started.
pub(crate) struct DelayRelay {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayRelay {
    /// A TCP relay to `target`, each direction delayed by `delay`.
    pub(crate) async fn tcp(target: SocketAddr, delay: Duration) -> Result<DelayRelay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((client, _)) => {
                            conns.spawn(tcp_conn(client, target, delay));
                        }
                        Err(_) => break,
                    },
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
            // Dropping `conns` aborts the connections still open.
        });
        Ok(DelayRelay { addr, task })
    }

    /// A UDP relay to `target`, each direction delayed by `delay`: every client address gets its
    /// own upstream socket, so the target sees one peer per client.
    pub(crate) async fn udp(target: SocketAddr, delay: Duration) -> Result<DelayRelay> {
        let socket = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = socket.local_addr()?;
        let task = tokio::spawn(udp_relay(socket, target, delay));
        Ok(DelayRelay { addr, task })
    }

    /// Where clients connect (or send) to reach the target.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the relay and every task it started; returns once they have ended.
    pub(crate) async fn stop(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for DelayRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One relayed TCP connection: see the module documentation for how the handshake is accounted.
async fn tcp_conn(client: TcpStream, target: SocketAddr, delay: Duration) {
    let accepted = Instant::now();
    let _ = client.set_nodelay(true);
    let (client_r, client_w) = client.into_split();
    let (up_tx, up_rx) = mpsc::channel(QUEUE);
    let (down_tx, down_rx) = mpsc::channel(QUEUE);
    let upstream = async move {
        // The SYN on its way to the target.
        tokio::time::sleep(delay).await;
        let Ok(up) = TcpStream::connect(target).await else {
            return; // drops `up_rx` and `down_tx`: the client side ends
        };
        let _ = up.set_nodelay(true);
        let (up_r, up_w) = up.into_split();
        tokio::join!(
            read_stamped(up_r, down_tx, delay, accepted),
            write_released(up_w, up_rx),
        );
    };
    tokio::join!(
        // No client byte leaves before the SYN-ACK would have reached the client.
        read_stamped(client_r, up_tx, delay, accepted + 2 * delay),
        write_released(client_w, down_rx),
        upstream,
    );
}

/// Reads chunks from `r` and queues each, to be released `delay` after it was read (or after
/// `not_before`, if later); queues the end of the stream the same way.
async fn read_stamped(
    mut r: OwnedReadHalf,
    tx: mpsc::Sender<Delayed>,
    delay: Duration,
    not_before: Instant,
) {
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let n = r.read(&mut buf).await.unwrap_or(0);
        let at = Instant::now().max(not_before) + delay;
        let chunk = (n > 0).then(|| buf[..n].to_vec());
        if tx.send((at, chunk)).await.is_err() || n == 0 {
            return;
        }
    }
}

/// Writes each queued chunk to `w` at its release time, in order; half-closes `w` at the end.
async fn write_released(mut w: OwnedWriteHalf, mut rx: mpsc::Receiver<Delayed>) {
    while let Some((at, chunk)) = rx.recv().await {
        tokio::time::sleep_until(at).await;
        match chunk {
            Some(bytes) => {
                if w.write_all(&bytes).await.is_err() {
                    return;
                }
            }
            None => break,
        }
    }
    let _ = w.shutdown().await;
}

async fn udp_relay(socket: Arc<UdpSocket>, target: SocketAddr, delay: Duration) {
    // Every task of every session; dropped (so aborted) with this task.
    let mut tasks = JoinSet::new();
    let mut sessions: HashMap<SocketAddr, mpsc::Sender<(Instant, Vec<u8>)>> = HashMap::new();
    let mut buf = vec![0u8; READ_BUF];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else {
            break;
        };
        let at = Instant::now() + delay;
        let tx = match sessions.get(&from) {
            Some(tx) => tx.clone(),
            None => {
                let Ok(up) = udp_session(&socket, from, target, delay, &mut tasks).await else {
                    continue;
                };
                sessions.insert(from, up.clone());
                up
            }
        };
        // A full queue loses the datagram, as a congested path would; it never slows the rest.
        let _ = tx.try_send((at, buf[..n].to_vec()));
    }
}

/// Starts the tasks of one client's session: its upstream socket, the datagrams going up and
/// those coming back. Returns the queue of datagrams going up.
async fn udp_session(
    socket: &Arc<UdpSocket>,
    client: SocketAddr,
    target: SocketAddr,
    delay: Duration,
    tasks: &mut JoinSet<()>,
) -> Result<mpsc::Sender<(Instant, Vec<u8>)>> {
    let up = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
    up.connect(target).await?;
    let (up_tx, mut up_rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let (down_tx, mut down_rx) = mpsc::channel::<(Instant, Vec<u8>)>(QUEUE);
    let sender = up.clone();
    tasks.spawn(async move {
        while let Some((at, datagram)) = up_rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = sender.send(&datagram).await;
        }
    });
    tasks.spawn(async move {
        let mut buf = vec![0u8; READ_BUF];
        loop {
            match up.recv(&mut buf).await {
                Ok(n) => {
                    let _ = down_tx.try_send((Instant::now() + delay, buf[..n].to_vec()));
                }
                // An ICMP port unreachable for an earlier datagram: the socket still works.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(_) => return,
            }
        }
    });
    let socket = socket.clone();
    tasks.spawn(async move {
        while let Some((at, datagram)) = down_rx.recv().await {
            tokio::time::sleep_until(at).await;
            let _ = socket.send_to(&datagram, client).await;
        }
    });
    Ok(up_tx)
}
