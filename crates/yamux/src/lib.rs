//! `p2pnet-yamux`: the yamux stream multiplexer (`/yamux/1.0.0`) as a sans-IO state machine.
//!
//! [`Connection`] holds every stream of one connection. It takes the bytes the transport read
//! and gives the bytes to send, plus [`Event`]s; the application's stream operations
//! ([`Connection::read`], [`Connection::write`], [`Connection::finish`], [`Connection::reset`],
//! [`Connection::release`]) are plain calls that never block. There are no sockets, tasks or
//! clocks inside: time comes in as an argument. `p2pnet-host` drives it over a noise session.
//!
//! Stream ends are exact, in every state and both directions:
//! - a peer's FIN is [`ReadOutcome::End`] after every byte it sent before it;
//! - a peer's RST fails reads (unless its FIN had arrived) and writes with [`StreamError::Reset`];
//! - [`Connection::reset`] always sends RST, after our own FIN too;
//! - our graceful [`Connection::close`] (GoAway) fails every unfinished stream with
//!   [`StreamError::Aborted`] and a lost transport with [`StreamError::Lost`]; a stream whose FIN
//!   had arrived still yields its buffered bytes and then its end.
//!
//! Limits are one mechanism: a stream counts from its open (or the peer's SYN) until
//! [`Connection::release`]; an open over [`Config::max_outbound_streams`] fails with
//! [`OpenError::LimitReached`] and harms nothing, a peer's stream over
//! [`Config::max_inbound_streams`] is reset alone. Receive windows start at the spec's 256 KiB,
//! grow (doubling) when used up within a few round trips, up to [`Config::max_stream_window`] and
//! within [`Config::connection_window_budget`] per connection; received data is buffered only as
//! it arrives.
//!
//! ```
//! use std::time::Instant;
//! use bytes::BytesMut;
//! use p2pnet_yamux::{Config, Connection, Event, Mode, ReadOutcome, WriteOutcome};
//!
//! let now = Instant::now();
//! let mut client = Connection::new(Mode::Client, Config::default(), now);
//! let mut server = Connection::new(Mode::Server, Config::default(), now);
//! // Carries whatever `from` has to send into `to` (a real driver uses a socket).
//! fn pump(from: &mut Connection, to: &mut Connection) {
//!     let mut wire = Vec::new();
//!     from.take_transmit(&mut wire);
//!     to.handle_input(&mut BytesMut::from(&wire[..]), Instant::now()).unwrap();
//! }
//!
//! let id = client.open_stream().unwrap().expect("no ACK backlog yet");
//! assert_eq!(client.write(id, b"hello").unwrap(), WriteOutcome::Written(5));
//! client.finish(id).unwrap();
//! pump(&mut client, &mut server);
//!
//! let inbound = std::iter::from_fn(|| server.poll_event())
//!     .find_map(|e| match e { Event::Inbound(id) => Some(id), _ => None })
//!     .unwrap();
//! let mut buf = [0u8; 16];
//! assert_eq!(server.read(inbound, &mut buf, now).unwrap(), ReadOutcome::Data(5));
//! assert_eq!(&buf[..5], b"hello");
//! assert_eq!(server.read(inbound, &mut buf, now).unwrap(), ReadOutcome::End);
//! ```
#![deny(missing_docs)]

mod config;
mod connection;
mod error;
pub mod frame;
#[doc(hidden)]
pub mod fuzzing;
mod stream;

pub use config::{Config, INITIAL_WINDOW};
pub use connection::{CONTROL_SLACK, Connection, Event};
pub use error::{ConnectionError, OpenError, ProtocolError, StreamError};
pub use frame::{Flags, FrameType, HEADER_LEN, Header};
pub use stream::{Origin, ReadOutcome, StreamId, WriteOutcome};

/// The protocol name negotiated with multistream-select.
pub const PROTOCOL_NAME: &str = "/yamux/1.0.0";

/// Which side of the connection we are: the client (the dialer) opens odd stream ids, the server
/// even ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The dialing side.
    Client,
    /// The listening side.
    Server,
}
