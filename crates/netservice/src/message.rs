//! What flows from message sessions into the dispatcher.

use bytes::Bytes;
use p2pnet_dispatcher::{DispatchSender, Message};
use p2pnet_host::PeerId;
use p2pnet_messaging::{InboundMessage, MessageId, MessageKind, MessageSink, SinkClosed};

/// A message received from a peer, as subscribers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetMessage {
    /// The peer it came from (authenticated by noise).
    pub peer: PeerId,
    /// Its kind.
    pub kind: MessageKind,
    /// Its payload.
    pub payload: Bytes,
    /// Its id: a keyed hash of kind and payload (the same on compressed and plain links).
    pub id: MessageId,
}

impl From<InboundMessage> for NetMessage {
    fn from(m: InboundMessage) -> Self {
        Self {
            peer: m.peer,
            kind: m.kind,
            payload: m.payload,
            id: m.id,
        }
    }
}

impl From<&NetMessage> for InboundMessage {
    fn from(m: &NetMessage) -> Self {
        InboundMessage {
            peer: m.peer,
            kind: m.kind,
            payload: m.payload.clone(),
            id: m.id,
        }
    }
}

impl Message for NetMessage {
    type Kind = MessageKind;
    type Sender = PeerId;

    fn kind(&self) -> &MessageKind {
        &self.kind
    }

    fn sender(&self) -> &PeerId {
        &self.peer
    }

    fn payload(&self) -> &[u8] {
        &self.payload
    }

    fn content_hash(&self) -> Option<u64> {
        Some(self.id.0)
    }

    fn kind_label(kind: &MessageKind) -> String {
        kind.as_str().to_owned()
    }
}

/// Hands inbound messages to the dispatcher, waiting for room when its queue is full, so that
/// back-pressure reaches the sending peer through yamux and TCP instead of losing messages.
#[derive(Debug, Clone)]
pub(crate) struct DispatchSink(pub(crate) DispatchSender<NetMessage>);

impl MessageSink for DispatchSink {
    async fn deliver(&self, msg: InboundMessage) -> Result<(), SinkClosed> {
        self.0.send_async(msg.into()).await.map_err(|_| SinkClosed)
    }
}
