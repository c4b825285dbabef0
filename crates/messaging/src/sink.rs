//! [`MessageSink`]: where inbound messages go, and [`InboundMessage`], what goes there.

use std::future::Future;

use bytes::Bytes;
use p2pnet_host::PeerId;
use tokio::sync::mpsc;

use crate::frame::MessageKind;
use crate::seen::MessageId;

/// A message received from a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InboundMessage {
    /// The peer that sent it.
    pub peer: PeerId,
    /// Its kind.
    pub kind: MessageKind,
    /// Its payload, uncompressed.
    pub payload: Bytes,
    /// Its identity for relaying (see [`crate::Messenger::relay`]).
    pub id: MessageId,
}

/// The receiver went away; the session delivering into it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message sink closed")]
pub struct SinkClosed;

/// Where each session hands its inbound messages.
///
/// `deliver` may wait (the sink is full): the session then stops reading from its stream, and
/// the back-pressure flows to the sender through yamux and TCP. Nothing is dropped.
pub trait MessageSink: Send + Sync + 'static {
    /// Hands over one message, waiting for room if needed.
    fn deliver(&self, msg: InboundMessage) -> impl Future<Output = Result<(), SinkClosed>> + Send;
}

/// A bounded tokio channel is a sink.
impl MessageSink for mpsc::Sender<InboundMessage> {
    async fn deliver(&self, msg: InboundMessage) -> Result<(), SinkClosed> {
        self.send(msg).await.map_err(|_| SinkClosed)
    }
}
