//! One message session: the handshake, then a reader task half (decode → sink) and a writer half
//! (priority queues → batched writes), both on one task per stream.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use p2pnet_host::{OwnedReadHalf, OwnedWriteHalf};
use p2pnet_host::{PeerId, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::codec::{FrameCodec, HEADER_LEN};
use crate::error::CodecError;
use crate::events::{CloseReason, HandshakeFailure, SessionEvent};
use crate::frame::Frame;
use crate::handshake::{Bye, ByeReason, Hello, KIND_BYE, KIND_HELLO, KIND_OK, MAX_HANDSHAKE_FRAME};
use crate::messenger::{Inner, Registration};
use crate::sink::{InboundMessage, MessageSink};
use crate::slots::{Phase, SlotGuard};

/// How long we wait for a refused peer to read our bye and close before disconnecting it.
const BYE_LINGER: Duration = Duration::from_secs(1);

/// How long a session that is no longer live (it lost the tie-break or was replaced) may still
/// read what the peer sent before it switched streams; then it is dropped.
const CLOSE_DEADLINE: Duration = Duration::from_secs(2);

/// Who opened the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Outbound,
    Inbound,
}

#[derive(Debug)]
enum ReadError {
    Decode(CodecError),
    Io(String),
    Eof,
}

/// Reads frames from a stream half; the buffer only grows with bytes that arrived.
struct FrameReader {
    rd: OwnedReadHalf,
    buf: BytesMut,
    codec: FrameCodec,
    chunk: usize,
    wire_in: u64,
}

impl FrameReader {
    fn try_next(&mut self) -> Result<Option<Frame>, ReadError> {
        self.codec.decode(&mut self.buf).map_err(ReadError::Decode)
    }

    async fn next(&mut self) -> Result<Frame, ReadError> {
        loop {
            if let Some(f) = self.try_next()? {
                return Ok(f);
            }
            self.fill().await?;
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        // Never more room than one frame of the current bound (small during the handshake).
        let room = self
            .chunk
            .min(self.codec.max_message_size().saturating_add(HEADER_LEN));
        self.buf.reserve(room);
        let n = self
            .rd
            .read_buf(&mut self.buf)
            .await
            .map_err(|e| ReadError::Io(e.to_string()))?;
        if n == 0 {
            self.codec
                .decode_eof(&self.buf)
                .map_err(ReadError::Decode)?;
            return Err(ReadError::Eof);
        }
        self.wire_in += n as u64;
        Ok(())
    }
}

/// Why a session whose `kill` token fired ends: shutdown, or a newer stream took its slot.
fn killed<S>(inner: &Inner<S>) -> CloseReason {
    if inner.cancel.is_cancelled() {
        CloseReason::Shutdown
    } else {
        CloseReason::Replaced
    }
}

async fn write_frame(
    codec: &FrameCodec,
    wr: &mut OwnedWriteHalf,
    frame: &Frame,
) -> std::io::Result<()> {
    let mut b = BytesMut::new();
    codec
        .encode(frame, &mut b)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    wr.write_all(&b).await?;
    wr.flush().await
}

/// Runs one session over `stream` until it ends; `slot` is its claim on the peer's slot for
/// this direction, given back when the task ends.
pub(crate) async fn run<S: MessageSink>(
    inner: Arc<Inner<S>>,
    stream: Stream,
    peer: PeerId,
    role: Role,
    slot: SlotGuard,
) {
    let cfg = &inner.config;
    let codec = FrameCodec::new(cfg.chain_id)
        .with_max_message_size(cfg.max_message_size)
        .with_compression(None);
    let (rd, mut wr) = stream.into_split();
    // Until the session is live only small handshake frames are read.
    let mut reader = FrameReader {
        rd,
        buf: BytesMut::new(),
        codec: codec.clone().with_max_message_size(MAX_HANDSHAKE_FRAME),
        chunk: cfg.read_chunk.max(1024),
        wire_in: 0,
    };
    let kill = slot.kill().clone();
    let hs = tokio::select! {
        _ = kill.cancelled() => return,
        r = tokio::time::timeout(cfg.handshake_timeout, handshake(&inner, &codec, &mut reader, &mut wr, role)) => r,
    };
    let hello = match hs {
        Ok(Ok(h)) => h,
        Ok(Err(failure)) => {
            slot.set_phase(Phase::Closing);
            return handshake_failed(&inner, peer, &codec, reader, wr, failure, &kill).await;
        }
        Err(_) => {
            slot.set_phase(Phase::Closing);
            return handshake_failed(
                &inner,
                peer,
                &codec,
                reader,
                wr,
                HandshakeFailure::Timeout,
                &kill,
            )
            .await;
        }
    };
    // The decoder is between frames here: the full bound applies from the next header on.
    reader.codec = codec.clone();
    inner.metrics.wire_bytes_in.fetch_add(
        std::mem::take(&mut reader.wire_in),
        std::sync::atomic::Ordering::Relaxed,
    );
    let opener = match role {
        Role::Outbound => inner.host.peer_id(),
        Role::Inbound => peer,
    };
    let compression = cfg.compression && hello.compression;
    let reg = inner.register(peer, opener, compression, slot.id());
    let (state, session_id, stop) = match &reg {
        Registration::Active {
            state,
            session_id,
            stop,
            replaced,
            ..
        } => {
            slot.set_phase(Phase::Live);
            if !replaced {
                debug!(%peer, ?role, client = %hello.client_version, "message session opened");
                inner.emit(SessionEvent::Opened {
                    peer,
                    outbound: role == Role::Outbound,
                    client_version: hello.client_version.clone(),
                    listen_addrs: hello.listen_addrs.clone(),
                });
            } else {
                debug!(%peer, ?role, "message session replaced by the tie-break winner");
            }
            (state.clone(), Some(*session_id), Some(stop.clone()))
        }
        Registration::Drain { state, .. } => {
            slot.set_phase(Phase::Closing);
            debug!(%peer, ?role, "duplicate message session: draining it");
            (state.clone(), None, None)
        }
    };

    let reason = {
        let read = read_loop(&inner, peer, &state, &mut reader, &kill, stop.as_ref());
        tokio::pin!(read);
        let superseded = match &stop {
            Some(stop) => {
                let write = async {
                    let mut wr = wr;
                    let r = write_loop(&inner, &state, &mut wr, stop, &kill).await;
                    (r, wr)
                };
                tokio::pin!(write);
                tokio::select! {
                    r = &mut read => Err(r),
                    (w, wr) = &mut write => match w {
                        // Superseded: stop writing, read what the peer still sends.
                        None => Ok(wr),
                        Some(r) => Err(r),
                    },
                }
            }
            None => Ok(wr),
        };
        match superseded {
            Err(r) => r,
            Ok(mut wr) => {
                slot.set_phase(Phase::Closing);
                let closing = async {
                    let _ = wr.shutdown().await;
                    read.await
                };
                match tokio::time::timeout(CLOSE_DEADLINE, closing).await {
                    Ok(r) => r,
                    Err(_) => {
                        debug!(%peer, ?role, "closing message session: deadline passed, dropped");
                        CloseReason::Replaced
                    }
                }
            }
        }
    };
    inner
        .metrics
        .wire_bytes_in
        .fetch_add(reader.wire_in, std::sync::atomic::Ordering::Relaxed);
    // Done delivering: the live session (if another one is) may go on.
    drop(reg);
    if let CloseReason::Decode(e) = &reason {
        warn!(%peer, error = %e, "invalid frame from peer: session ended");
        inner.metrics.decode_error(e.label());
    }
    let still_active = session_id.is_some_and(|id| inner.unregister(&peer, id));
    if still_active {
        match &reason {
            CloseReason::Decode(_)
            | CloseReason::Flood
            | CloseReason::ProtocolViolation(_)
            | CloseReason::WriteTimeout => {
                warn!(%peer, reason = ?reason, "message session ended")
            }
            _ => debug!(%peer, reason = ?reason, "message session ended"),
        }
        inner.metrics.session_closed(reason.label());
        inner.emit(SessionEvent::Closed { peer, reason });
    }
    drop(slot);
}

async fn handshake<S: MessageSink>(
    inner: &Inner<S>,
    codec: &FrameCodec,
    reader: &mut FrameReader,
    wr: &mut OwnedWriteHalf,
    role: Role,
) -> Result<Hello, HandshakeFailure> {
    let ours = inner.our_hello();
    let io = |e: std::io::Error| HandshakeFailure::Io(e.to_string());
    if role == Role::Outbound {
        write_frame(codec, wr, &ours.to_frame()).await.map_err(io)?;
    }
    let frame = reader.next().await.map_err(|e| match e {
        ReadError::Decode(CodecError::WrongChainId { expected, got }) => {
            HandshakeFailure::WrongChainId {
                ours: expected,
                theirs: got,
            }
        }
        ReadError::Decode(e) => HandshakeFailure::Decode(e),
        ReadError::Io(e) => HandshakeFailure::Io(e),
        ReadError::Eof => HandshakeFailure::Io("stream ended during the handshake".into()),
    })?;
    let expected = match role {
        Role::Outbound => KIND_OK,
        Role::Inbound => KIND_HELLO,
    };
    let kind = frame.kind.as_str();
    if kind == KIND_BYE {
        let bye = Bye::decode(&frame.payload).unwrap_or(Bye {
            reason: ByeReason::Other(0),
            message: "malformed bye".into(),
        });
        return Err(HandshakeFailure::Refused {
            reason: bye.reason,
            message: bye.message,
        });
    }
    if kind != expected {
        return Err(HandshakeFailure::ProtocolViolation(format!(
            "expected {expected}, got {kind:?}"
        )));
    }
    let theirs = Hello::decode(&frame.payload)
        .ok_or_else(|| HandshakeFailure::ProtocolViolation(format!("malformed {kind}")))?;
    if theirs.chain_id != ours.chain_id {
        return Err(HandshakeFailure::WrongChainId {
            ours: ours.chain_id,
            theirs: theirs.chain_id,
        });
    }
    if !ours
        .protocol_version
        .is_compatible_with(&theirs.protocol_version)
    {
        return Err(HandshakeFailure::IncompatibleVersion {
            ours: ours.protocol_version,
            theirs: theirs.protocol_version,
        });
    }
    if role == Role::Inbound {
        write_frame(codec, wr, &ours.to_ok_frame())
            .await
            .map_err(io)?;
    }
    Ok(theirs)
}

async fn handshake_failed<S: MessageSink>(
    inner: &Inner<S>,
    peer: PeerId,
    codec: &FrameCodec,
    mut reader: FrameReader,
    mut wr: OwnedWriteHalf,
    failure: HandshakeFailure,
    kill: &CancellationToken,
) {
    let (bye, disconnect) = match &failure {
        HandshakeFailure::WrongChainId { ours, theirs } => (
            Some(Bye {
                reason: ByeReason::WrongChainId,
                message: format!("chain id {theirs} is not ours ({ours})"),
            }),
            true,
        ),
        HandshakeFailure::IncompatibleVersion { ours, theirs } => (
            Some(Bye {
                reason: ByeReason::IncompatibleVersion,
                message: format!("protocol version {theirs} is incompatible with ours ({ours})"),
            }),
            true,
        ),
        HandshakeFailure::ProtocolViolation(m) => (
            Some(Bye {
                reason: ByeReason::ProtocolViolation,
                message: m.clone(),
            }),
            false,
        ),
        HandshakeFailure::Decode(e) => (
            Some(Bye {
                reason: ByeReason::ProtocolViolation,
                message: e.to_string(),
            }),
            false,
        ),
        HandshakeFailure::Timeout => (
            Some(Bye {
                reason: ByeReason::Timeout,
                message: "handshake timed out".into(),
            }),
            false,
        ),
        _ => (None, false),
    };
    warn!(%peer, reason = ?failure, "message handshake failed");
    inner.metrics.handshake_failure(failure.label());
    if let HandshakeFailure::Decode(e) = &failure {
        inner.metrics.decode_error(e.label());
    }
    inner.emit(SessionEvent::HandshakeFailed {
        peer,
        reason: failure,
    });
    if let Some(bye) = bye {
        let linger = async {
            write_frame(codec, &mut wr, &bye.to_frame()).await?;
            wr.shutdown().await?;
            // Let the peer read the bye: wait (bounded) until it closes its side.
            while reader.next().await.is_ok() {}
            Ok::<(), std::io::Error>(())
        };
        tokio::select! {
            _ = kill.cancelled() => {}
            _ = tokio::time::timeout(BYE_LINGER, linger) => {}
        }
    }
    if disconnect {
        inner.host.close_peer(&peer);
    }
}

async fn read_loop<S: MessageSink>(
    inner: &Inner<S>,
    peer: PeerId,
    state: &crate::messenger::PeerState,
    reader: &mut FrameReader,
    kill: &CancellationToken,
    gate: Option<&CancellationToken>,
) -> CloseReason {
    let rate = inner.config.max_inbound_rate;
    let mut window = Instant::now();
    let mut in_window: u32 = 0;
    let mut batch = Vec::with_capacity(8);
    let reason = loop {
        let next = match reader.try_next() {
            Ok(Some(f)) => Ok(f),
            Ok(None) => {
                inner.metrics.messages_in(&mut batch);
                inner.metrics.wire_bytes_in.fetch_add(
                    std::mem::take(&mut reader.wire_in),
                    std::sync::atomic::Ordering::Relaxed,
                );
                tokio::select! {
                    _ = inner.cancel.cancelled() => break CloseReason::Shutdown,
                    _ = kill.cancelled() => break killed(inner),
                    r = reader.next() => r,
                }
            }
            Err(e) => Err(e),
        };
        let frame = match next {
            Ok(f) => f,
            Err(ReadError::Decode(e)) => break CloseReason::Decode(e),
            Err(ReadError::Io(e)) => break CloseReason::Io(e),
            Err(ReadError::Eof) => break CloseReason::PeerClosed,
        };
        if frame.kind.is_reserved() {
            if frame.kind.as_str() == KIND_BYE {
                let bye = Bye::decode(&frame.payload).unwrap_or(Bye {
                    reason: ByeReason::Other(0),
                    message: "malformed bye".into(),
                });
                break CloseReason::PeerBye {
                    reason: bye.reason,
                    message: bye.message,
                };
            }
            break CloseReason::ProtocolViolation(format!(
                "unexpected {} after the handshake",
                frame.kind
            ));
        }
        if rate > 0 {
            in_window += 1;
            if in_window > rate {
                if window.elapsed() < Duration::from_secs(1) {
                    break CloseReason::Flood;
                }
                window = Instant::now();
                in_window = 1;
            }
        }
        let id = inner.message_id(frame.kind, &frame.payload);
        state.seen.lock().insert(id);
        match batch.iter().position(|(k, _, _)| *k == frame.kind) {
            Some(i) => {
                batch[i].1 += 1;
                batch[i].2 += frame.payload.len() as u64;
            }
            None if batch.len() < 8 => batch.push((frame.kind, 1, frame.payload.len() as u64)),
            None => {
                inner.metrics.messages_in(&mut batch);
                batch.push((frame.kind, 1, frame.payload.len() as u64));
            }
        }
        let msg = InboundMessage {
            peer,
            kind: frame.kind,
            payload: frame.payload,
            id,
        };
        // A live session delivers after the sessions it replaced have delivered what the peer
        // sent on them (each within its deadline), so a switch of streams never reorders.
        if let Some(stop) = gate
            && !stop.is_cancelled()
            && state.is_draining()
        {
            tokio::select! {
                _ = inner.cancel.cancelled() => break CloseReason::Shutdown,
                _ = kill.cancelled() => break killed(inner),
                _ = stop.cancelled() => {}
                _ = state.drained() => {}
            }
        }
        tokio::select! {
            _ = inner.cancel.cancelled() => break CloseReason::Shutdown,
            _ = kill.cancelled() => break killed(inner),
            r = inner.sink.deliver(msg) => if r.is_err() { break CloseReason::SinkClosed },
        }
    };
    inner.metrics.messages_in(&mut batch);
    reason
}

/// Drains the peer's queues into batched writes. `None`: superseded by another session.
async fn write_loop<S: MessageSink>(
    inner: &Inner<S>,
    state: &crate::messenger::PeerState,
    wr: &mut OwnedWriteHalf,
    stop: &CancellationToken,
    kill: &CancellationToken,
) -> Option<CloseReason> {
    let max = inner.config.max_batch_bytes.max(1);
    // Exactly one writer drains the peer's queues: a replacing writer starts once the writer it
    // replaces has finished its batch and stopped.
    let _owner = tokio::select! {
        biased;
        _ = inner.cancel.cancelled() => return Some(CloseReason::Shutdown),
        _ = kill.cancelled() => return Some(killed(inner)),
        _ = stop.cancelled() => return None,
        owner = state.writer.lock() => owner,
    };
    let mut out = BytesMut::with_capacity(max.min(1 << 20));
    loop {
        if stop.is_cancelled() {
            // Superseded: take nothing more from the queues; the new writer owns them.
            return None;
        }
        out.clear();
        if state.queues.drain_into(&mut out, max) == 0 {
            tokio::select! {
                biased;
                _ = inner.cancel.cancelled() => return Some(CloseReason::Shutdown),
                _ = kill.cancelled() => return Some(killed(inner)),
                _ = stop.cancelled() => return None,
                _ = state.queues.wait() => continue,
            }
        }
        let write = async {
            wr.write_all(&out).await?;
            wr.flush().await
        };
        tokio::select! {
            _ = inner.cancel.cancelled() => return Some(CloseReason::Shutdown),
            _ = kill.cancelled() => return Some(killed(inner)),
            r = tokio::time::timeout(inner.config.write_timeout, write) => match r {
                Err(_) => return Some(CloseReason::WriteTimeout),
                Ok(Err(e)) => return Some(CloseReason::Io(e.to_string())),
                Ok(Ok(())) => {
                    inner.metrics.wire_bytes_out.fetch_add(out.len() as u64, std::sync::atomic::Ordering::Relaxed);
                }
            },
        }
    }
}
