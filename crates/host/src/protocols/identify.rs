//! `/ipfs/id/1.0.0`: peers tell each other their public key, listen addresses, protocols,
//! agent version and the address they see us at.
//!
//! The responder writes one length-prefixed (unsigned varint) protobuf message and closes the
//! stream. Everything read is bounded: the message size, the number of addresses and protocols.

use std::sync::Arc;
use std::time::Duration;

use libp2p_identity::PublicKey;
use multiaddr::Multiaddr;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::addr::keep_learned_addr;
use crate::connection::ConnectionHandle;
use crate::host::HostInner;
use crate::peer_store::RECENT_ADDR_TTL;
use crate::{HostEvent, InboundStream};

/// The identify protocol name.
pub(crate) const PROTOCOL: &str = "/ipfs/id/1.0.0";
/// The protocol version we announce (the one go-libp2p and rust-libp2p use).
const PROTOCOL_VERSION: &str = "ipfs/0.1.0";
/// The largest identify message we read.
pub(crate) const MAX_MESSAGE_LEN: usize = 64 * 1024;
const MAX_ADDRS: usize = 32;
const MAX_OBSERVED: usize = 8;
const TIMEOUT: Duration = Duration::from_secs(10);

/// The identify message (field numbers from the libp2p specification).
#[derive(Clone, PartialEq, prost::Message)]
pub(crate) struct Identify {
    #[prost(string, optional, tag = "5")]
    pub(crate) protocol_version: Option<String>,
    #[prost(string, optional, tag = "6")]
    pub(crate) agent_version: Option<String>,
    #[prost(bytes = "vec", optional, tag = "1")]
    pub(crate) public_key: Option<Vec<u8>>,
    #[prost(bytes = "vec", repeated, tag = "2")]
    pub(crate) listen_addrs: Vec<Vec<u8>>,
    #[prost(bytes = "vec", optional, tag = "4")]
    pub(crate) observed_addr: Option<Vec<u8>>,
    #[prost(string, repeated, tag = "3")]
    pub(crate) protocols: Vec<String>,
}

/// Why an identify message was rejected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum DecodeError {
    #[error("bad length prefix")]
    Length,
    #[error("message of {0} bytes exceeds the limit")]
    TooLarge(usize),
    #[error("truncated message")]
    Truncated,
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
}

/// Encodes `msg` with its unsigned-varint length prefix.
pub(crate) fn encode(msg: &Identify) -> Vec<u8> {
    use prost::Message as _;
    let body = msg.encode_to_vec();
    let mut len_buf = unsigned_varint::encode::usize_buffer();
    let prefix = unsigned_varint::encode::usize(body.len(), &mut len_buf);
    let mut out = Vec::with_capacity(prefix.len() + body.len());
    out.extend_from_slice(prefix);
    out.extend_from_slice(&body);
    out
}

/// Decodes one length-prefixed identify message. Never panics; bounded by `MAX_MESSAGE_LEN`.
pub(crate) fn decode(bytes: &[u8]) -> Result<Identify, DecodeError> {
    use prost::Message as _;
    let (len, rest) = unsigned_varint::decode::usize(bytes).map_err(|_| DecodeError::Length)?;
    if len > MAX_MESSAGE_LEN {
        return Err(DecodeError::TooLarge(len));
    }
    let body = rest.get(..len).ok_or(DecodeError::Truncated)?;
    Identify::decode(body).map_err(|e| DecodeError::Protobuf(e.to_string()))
}

fn our_identify(inner: &HostInner, observed: &Multiaddr) -> Identify {
    let listen_addrs = {
        let listeners = inner.listeners.lock();
        listeners
            .values()
            .flat_map(|l| l.addrs.iter().map(|a| a.to_vec()))
            .take(MAX_ADDRS)
            .collect()
    };
    let mut protocols = inner.protocol_names();
    protocols.sort();
    Identify {
        protocol_version: Some(PROTOCOL_VERSION.to_owned()),
        agent_version: Some(inner.config.agent_version.clone()),
        public_key: Some(inner.keypair.public().encode_protobuf()),
        listen_addrs,
        observed_addr: Some(observed.to_vec()),
        protocols,
    }
}

/// Answers an identify request: our message, then a clean close.
pub(crate) async fn serve(inner: Arc<HostInner>, mut inbound: InboundStream) {
    let bytes = encode(&our_identify(&inner, &inbound.remote_addr));
    let write = async {
        inbound.stream.write_all(&bytes).await?;
        inbound.stream.shutdown().await
    };
    if let Ok(Err(e)) | Err(e) = tokio::time::timeout(TIMEOUT, write)
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))
    {
        tracing::debug!(peer = %inbound.peer, error = %e, "identify answer failed");
    }
}

/// Asks the peer on `handle` to identify itself and records the answer.
pub(crate) async fn request(inner: Arc<HostInner>, handle: ConnectionHandle) {
    let peer = handle.peer;
    let exchange = async {
        let stream = inner
            .open_stream_on(&handle, &[PROTOCOL.to_owned()])
            .await
            .map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        stream
            .take(MAX_MESSAGE_LEN as u64 + 10)
            .read_to_end(&mut buf)
            .await
            .map_err(|e| e.to_string())?;
        decode(&buf).map_err(|e| e.to_string())
    };
    let msg = match tokio::time::timeout(TIMEOUT, exchange).await {
        Ok(Ok(msg)) => msg,
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "identify failed");
            return;
        }
        Err(_) => {
            tracing::debug!(%peer, "identify timed out");
            return;
        }
    };
    if let Some(key) = &msg.public_key {
        match PublicKey::try_decode_protobuf(key) {
            Ok(key) if key.to_peer_id() == peer => {}
            _ => {
                tracing::warn!(%peer, "identify carried a public key that is not the peer's; ignored");
                return;
            }
        }
    }
    let listen_addrs: Vec<Multiaddr> = msg
        .listen_addrs
        .into_iter()
        .take(MAX_ADDRS)
        .filter_map(|a| Multiaddr::try_from(a).ok())
        .collect();
    // Only addresses we may dial go to the peer store: private and loopback ones only when
    // allowed, or when the peer reached us over the same kind of network.
    let dialable: Vec<Multiaddr> = listen_addrs
        .iter()
        .filter(|a| {
            keep_learned_addr(
                a,
                Some(&handle.remote_addr),
                inner.config.accept_private_learned_addrs,
            )
        })
        .cloned()
        .collect();
    if dialable.len() < listen_addrs.len() {
        tracing::debug!(%peer, ignored = listen_addrs.len() - dialable.len(), "ignored private addresses announced by a peer");
    }
    if let Some(observed) = msg.observed_addr.and_then(|a| Multiaddr::try_from(a).ok()) {
        let mut obs = inner.observed_addrs.lock();
        obs.retain(|a| *a != observed);
        obs.insert(0, observed);
        obs.truncate(MAX_OBSERVED);
    }
    inner.peer_store.add_addrs(peer, dialable, RECENT_ADDR_TTL);
    let agent_version = msg.agent_version.unwrap_or_default();
    inner
        .peer_store
        .set_identify(peer, msg.protocols.clone(), Some(agent_version.clone()));
    tracing::debug!(%peer, agent = %agent_version, protocols = msg.protocols.len(), "peer identified");
    inner.emit(HostEvent::Identified {
        peer,
        agent_version,
        protocols: inner.peer_store.protocols(&peer),
        listen_addrs,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let msg = Identify {
            protocol_version: Some("ipfs/0.1.0".into()),
            agent_version: Some("x".into()),
            public_key: Some(vec![1, 2, 3]),
            listen_addrs: vec!["/ip4/1.2.3.4/tcp/1".parse::<Multiaddr>().unwrap().to_vec()],
            observed_addr: None,
            protocols: vec!["/a".into()],
        };
        assert_eq!(decode(&encode(&msg)).unwrap(), msg);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        assert_eq!(decode(&[]), Err(DecodeError::Length));
        assert_eq!(decode(&[0xff; 12]), Err(DecodeError::Length));
        // Announces 1 MiB: refused before anything is read or allocated.
        let mut big = unsigned_varint::encode::usize_buffer();
        let prefix = unsigned_varint::encode::usize(1 << 20, &mut big).to_vec();
        assert_eq!(decode(&prefix), Err(DecodeError::TooLarge(1 << 20)));
        assert_eq!(decode(&[5, 1, 2]), Err(DecodeError::Truncated));
        assert!(matches!(
            decode(&[2, 0xff, 0xff]),
            Err(DecodeError::Protobuf(_))
        ));
    }
}
