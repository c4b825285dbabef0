//! `p2pnet-dispatcher`: routes incoming messages to the subscribers of their kind.
//!
//! Network readers put messages into one bounded **receive queue** through a
//! [`DispatchSender`]; a dispatch loop on its own OS thread takes them off in batches, drops
//! duplicates (per kind, opt-in), and offers each message to every [`Subscriber`] registered for
//! its kind, each through its own bounded channel and under its own [`DeliveryPolicy`]. The crate
//! knows nothing about the network: it is generic over the [`Message`] trait.
//!
//! It is the Nebulas dispatcher made correct and faster:
//! - every message is accounted for: for each subscriber, `delivered + dropped` equals the
//!   messages of its kinds that were dispatched; messages of an unknown kind, duplicates, and
//!   messages discarded at stop are counted ([`DispatcherMetrics`]);
//! - [`deregister`](Dispatcher::deregister) works by [`SubscriberHandle`] and really removes
//!   the subscriber; one subscriber deregistering never turns off a duplicate filter another one
//!   asked for;
//! - [`stop`](Dispatcher::stop) joins the loop and returns promptly whatever the queue and the
//!   subscribers are doing;
//! - the loop delivers one batch per subscriber per round and wakes each consumer at most once
//!   for it, instead of one channel operation and one wake-up per message and subscriber.
//!
//! # Example
//! ```
//! use std::sync::Arc;
//! use std::time::Duration;
//! use p2pnet_dispatcher::{DeliveryPolicy, Dispatcher, DispatcherConfig, Message, SubscriberOptions};
//!
//! #[derive(Clone, Debug)]
//! struct NetMessage {
//!     kind: &'static str,
//!     from: u64,
//!     payload: Arc<[u8]>, // cheap to clone: every subscriber of the kind gets a copy
//! }
//!
//! impl Message for NetMessage {
//!     type Kind = &'static str;
//!     type Sender = u64;
//!     fn kind(&self) -> &&'static str { &self.kind }
//!     fn sender(&self) -> &u64 { &self.from }
//!     fn payload(&self) -> &[u8] { &self.payload }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dispatcher = Dispatcher::new(DispatcherConfig::default())?;
//! // A consumer that must not lose blocks waits for room; the gossip one drops when behind.
//! let mut blocks = dispatcher.register(
//!     ["block"],
//!     SubscriberOptions::new().policy(DeliveryPolicy::Block { timeout: Duration::from_secs(1) }),
//! )?;
//! let mut gossip = dispatcher.register(["tx", "block"], SubscriberOptions::new().capacity(1024))?;
//! dispatcher.start()?;
//!
//! let sender = dispatcher.sender(); // clone one per network reader
//! sender.send(NetMessage { kind: "tx", from: 7, payload: Arc::from(&b"pay bob"[..]) })?;
//! sender.send(NetMessage { kind: "block", from: 7, payload: Arc::from(&b"block 1"[..]) })?;
//!
//! assert_eq!(blocks.recv()?.payload.as_ref(), b"block 1");
//! assert_eq!(gossip.recv()?.kind, "tx"); // in queue order
//! assert_eq!(gossip.recv()?.kind, "block");
//!
//! dispatcher.flush(Duration::from_secs(5))?;
//! let metrics = dispatcher.metrics();
//! assert_eq!(metrics.received, 2);
//! assert_eq!(metrics.kind(&"block").dispatched, 1);
//! dispatcher.stop(); // joins the loop; subscribers are closed
//! assert!(blocks.recv().is_err());
//! # Ok(())
//! # }
//! ```
//!
//! From a tokio task, send with [`DispatchSender::send_async`] (it waits for room without blocking
//! the worker) and receive with [`Subscriber::recv_async`] or use the subscriber as a
//! [`futures::Stream`].
//!
//! # Threads and channels
//! - The receive queue is a bounded `crossbeam-channel` of
//!   [`DispatcherConfig::queue_capacity`] (default 65,536).
//! - The loop runs on one named thread. Each round it takes up to
//!   [`DispatcherConfig::max_batch`] messages, routes them through an immutable routing table
//!   (replaced, not locked, when registrations change), and hands each subscriber one batch.
//! - Each subscriber's channel holds at most its capacity in messages (plus the batch its
//!   consumer is reading). [`DeliveryPolicy::DropNewest`] drops what does not fit for that
//!   subscriber only and warns at most once per second per subscriber;
//!   [`DeliveryPolicy::Block`] makes the loop wait for room up to a timeout.
#![deny(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

mod config;
mod dedup;
mod dispatch_loop;
mod dispatcher;
mod error;
mod message;
mod metrics;
mod registry;
mod sender;
mod shared;
mod subscriber;

pub use config::{DeliveryPolicy, DispatcherConfig, SubscriberOptions};
pub use dispatcher::Dispatcher;
pub use error::{DispatchError, SendError};
pub use message::Message;
pub use metrics::{DeliveryCounts, DispatcherMetrics, KindMetrics, SubscriberMetrics};
pub use sender::DispatchSender;
pub use subscriber::{Subscriber, SubscriberHandle};
