//! `/ipfs/ping/1.0.0`: the peer echoes 32-byte payloads back on the same stream.

use std::time::{Duration, Instant};

use rand::RngCore as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::{HostError, InboundStream, Stream};

/// The ping protocol name.
pub(crate) const PROTOCOL: &str = "/ipfs/ping/1.0.0";
const PAYLOAD_LEN: usize = 32;
/// A ping stream with no ping for this long is closed (peers ping every 15 s by default).
const SERVE_IDLE: Duration = Duration::from_secs(60);

/// Answers pings until the peer closes the stream or goes quiet.
pub(crate) async fn serve(mut inbound: InboundStream) {
    let mut buf = [0u8; PAYLOAD_LEN];
    loop {
        match tokio::time::timeout(SERVE_IDLE, inbound.stream.read_exact(&mut buf)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        if inbound.stream.write_all(&buf).await.is_err() || inbound.stream.flush().await.is_err() {
            return;
        }
    }
}

/// Sends one ping on `stream` and measures the round trip.
pub(crate) async fn ping(mut stream: Stream, timeout: Duration) -> Result<Duration, HostError> {
    let peer = stream.peer();
    let mut payload = [0u8; PAYLOAD_LEN];
    rand::thread_rng().fill_bytes(&mut payload);
    let round_trip = async {
        let started = Instant::now();
        stream.write_all(&payload).await?;
        stream.flush().await?;
        let mut echo = [0u8; PAYLOAD_LEN];
        stream.read_exact(&mut echo).await?;
        let rtt = started.elapsed();
        // A clean close, so the peer's handler sees an end of stream rather than a reset.
        stream.shutdown().await?;
        Ok::<_, std::io::Error>((rtt, echo))
    };
    let (rtt, echo) = tokio::time::timeout(timeout, round_trip)
        .await
        .map_err(|_| HostError::Timeout {
            operation: "ping",
            after: timeout,
        })?
        .map_err(|e| HostError::io("ping", e))?;
    if echo != payload {
        return Err(HostError::PingMismatch { peer });
    }
    Ok(rtt)
}
