//! One RPC over a host stream: open, write the request, read the response. And the reading and
//! writing of frames on any stream, bounded by the message size.

use std::time::Duration;

use p2pnet_host::{Host, PeerId};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::error::KadError;
use crate::message::{Request, Response, proto};
use crate::protocol::{MAX_VARINT_LEN, check_len, decode_body, decode_uvarint, encode_frame};

/// Reads one frame. `Ok(None)` on a clean end of stream before its first byte. The length is
/// checked against `max` before the body is allocated.
pub(crate) async fn read_message<R: AsyncRead + Unpin>(
    r: &mut R,
    max: usize,
) -> Result<Option<proto::Message>, KadError> {
    let mut prefix = [0u8; MAX_VARINT_LEN];
    let mut n = 0;
    let len = loop {
        let got = r.read(&mut prefix[n..n + 1]).await?;
        if got == 0 {
            if n == 0 {
                return Ok(None);
            }
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
        }
        n += 1;
        if let Some((len, _)) = decode_uvarint(&prefix[..n])? {
            break len;
        }
    };
    let len = check_len(len, max)?;
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    decode_body(&body).map(Some)
}

/// Writes one frame and flushes it.
pub(crate) async fn write_message<W: AsyncWrite + Unpin>(
    w: &mut W,
    msg: &proto::Message,
) -> Result<(), KadError> {
    w.write_all(&encode_frame(msg)).await?;
    w.flush().await?;
    Ok(())
}

/// Sends `request` to `peer` on a new stream and reads its response (none for
/// `ADD_PROVIDER`), all within `timeout`.
pub(crate) async fn request(
    host: &Host,
    peer: PeerId,
    protocol: &str,
    request: &Request,
    max_message_size: usize,
    max_peers: usize,
    timeout: Duration,
) -> Result<Response, KadError> {
    let exchange = async {
        // A request that is answered goes out with the protocol proposal (the peer announced
        // the protocol; a refusal fails the read): one round trip per request, not two. One
        // that is not answered waits for the negotiation, so a refusal is known.
        let mut stream = if request.expects_response() {
            host.new_stream_optimistic(peer, protocol).await?
        } else {
            host.new_stream(peer, [protocol]).await?
        };
        write_message(&mut stream, &request.to_proto()).await?;
        if !request.expects_response() {
            stream.shutdown().await?;
            return Ok(Response::default());
        }
        let msg = read_message(&mut stream, max_message_size)
            .await?
            .ok_or(KadError::InvalidMessage("stream ended without a response"))?;
        // One request per stream: we are done writing.
        let _ = stream.shutdown().await;
        Response::from_proto(msg, request.message_type(), max_peers)
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(r) => r,
        Err(_) => Err(KadError::Timeout {
            operation: "kad request",
            after: timeout,
        }),
    }
}
