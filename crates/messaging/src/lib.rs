//! The p2pnet message layer: the wire format and one message session per connected peer.
//!
//! - [`FrameCodec`] is a sans-IO encoder/decoder of [`Frame`]s (documented byte by byte in
//!   `docs/wire-format.md`): a 34-byte big-endian header with magic, chain id, flags, version,
//!   kind, length and CRC32C checksums; optional snappy compression; a maximum size checked from
//!   the header before anything is allocated; typed [`CodecError`]s.
//! - [`Messenger`] runs sessions on the stream protocol [`PROTOCOL`] over a
//!   [`p2pnet_host::Host`]: a Hello/Ok/Bye handshake (chain id and protocol version compared),
//!   exactly one session per peer (and at most one stream per peer and direction: handshake
//!   frames of at most [`MAX_HANDSHAKE_FRAME`] bytes, deadlines on every session that is not
//!   live), bounded High/Normal/Low queues per peer with
//!   [`MessagingError::Backpressure`], batched writes with a write timeout, and inbound messages
//!   handed to a [`MessageSink`] with back-pressure (nothing is dropped).
//!
//! ```
//! use p2pnet_messaging::{Frame, FrameCodec};
//! use bytes::BytesMut;
//!
//! let codec = FrameCodec::new(1).with_compression(Some(1024));
//! let mut wire = BytesMut::new();
//! codec.encode(&Frame::new("block", &b"payload"[..])?, &mut wire)?;
//!
//! let mut decoder = FrameCodec::new(1);
//! let frame = decoder.decode(&mut wire)?.expect("a whole frame");
//! assert_eq!(frame.kind.as_str(), "block");
//! assert_eq!(&frame.payload[..], b"payload");
//! # Ok::<(), p2pnet_messaging::CodecError>(())
//! ```
//!
//! Sessions between two hosts:
//!
//! ```
//! use p2pnet_host::{Host, HostConfig, generate_keypair, with_p2p};
//! use p2pnet_messaging::{Messenger, MessagingConfig, Priority};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let a = Host::new(generate_keypair(), HostConfig::default())?;
//! let b = Host::new(generate_keypair(), HostConfig::default())?;
//! let addr = b.listen_on("/ip4/127.0.0.1/tcp/0".parse()?).await?;
//! let (tx_a, _rx_a) = tokio::sync::mpsc::channel(1024);
//! let (tx_b, mut rx_b) = tokio::sync::mpsc::channel(1024);
//! let ma = Messenger::new(a.clone(), MessagingConfig::default(), tx_a);
//! let mb = Messenger::new(b.clone(), MessagingConfig::default(), tx_b);
//! ma.start()?;
//! mb.start()?;
//! a.dial(with_p2p(&addr, b.peer_id())).await?;
//! let mut events = ma.events();
//! while !ma.has_session(&b.peer_id()) {
//!     let _ = tokio::time::timeout(std::time::Duration::from_secs(10), events.recv()).await?;
//! }
//! ma.send_to_peer(&b.peer_id(), "hello", &b"hi"[..], Priority::Normal)?;
//! let msg = rx_b.recv().await.expect("a message");
//! assert_eq!((msg.peer, &msg.payload[..]), (a.peer_id(), &b"hi"[..]));
//! ma.shutdown().await;
//! mb.shutdown().await;
//! a.shutdown().await;
//! b.shutdown().await;
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

mod codec;
mod config;
mod error;
mod events;
mod frame;
mod handshake;
mod messenger;
mod metrics;
mod queues;
mod seen;
mod session;
mod sink;
mod slots;

pub use codec::{
    DEFAULT_MAX_MESSAGE_SIZE, FLAG_COMPRESSED, FRAME_VERSION, FrameCodec, HEADER_LEN, MAGIC,
    raw_header,
};
pub use config::MessagingConfig;
pub use error::{CodecError, MessagingError};
pub use events::{CloseReason, HandshakeFailure, SessionEvent};
pub use frame::{Frame, MAX_KIND_LEN, MessageKind};
pub use handshake::{
    Bye, ByeReason, Hello, KIND_BYE, KIND_HELLO, KIND_OK, MAX_HANDSHAKE_FRAME, ProtocolVersion,
};
pub use messenger::{Messenger, PROTOCOL, SendReport};
pub use metrics::{KindStats, MessagingMetrics};
pub use queues::Priority;
pub use seen::MessageId;
pub use sink::{InboundMessage, MessageSink, SinkClosed};
