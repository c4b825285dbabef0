//! yamux (`/yamux/1.0.0`), driven directly.
//!
//! This is the same `yamux` implementation that `libp2p-yamux` wraps, with two things that
//! adapter does not give: the frame size and receive window can be tuned, and the stream type is
//! kept (not boxed), so a stream can tell a reset by the peer from a clean end of stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::{AsyncRead, AsyncWrite};
use libp2p_core::muxing::{StreamMuxer, StreamMuxerEvent};
use libp2p_core::upgrade::{InboundConnectionUpgrade, OutboundConnectionUpgrade, UpgradeInfo};

use crate::Limits;

/// The yamux protocol name.
const PROTOCOL: &str = "/yamux/1.0.0";
/// The receive window every stream starts with, by the yamux specification.
const INITIAL_WINDOW: usize = 256 * 1024;
/// At least this much receive window may be shared by a connection's streams.
const MIN_CONNECTION_WINDOW: usize = 1 << 30;

/// Any connection I/O, boxed so the muxer type does not depend on the layers beneath.
trait ConnectionIo: AsyncRead + AsyncWrite + Send {}
impl<T: AsyncRead + AsyncWrite + Send> ConnectionIo for T {}

/// One multiplexed connection.
pub(crate) struct Muxer {
    connection: yamux::Connection<Pin<Box<dyn ConnectionIo>>>,
}

impl std::fmt::Debug for Muxer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Muxer").finish_non_exhaustive()
    }
}

/// The connection upgrade that negotiates yamux.
#[derive(Debug, Clone)]
pub(crate) struct YamuxUpgrade {
    config: yamux::Config,
}

impl YamuxUpgrade {
    pub(crate) fn new(limits: &Limits, split_send_size: usize) -> Self {
        let max_streams = limits.max_inbound_streams_per_connection
            + limits.max_outbound_streams_per_connection
            + 16;
        let mut config = yamux::Config::default();
        // yamux insists that every stream can have the initial window at once; the memory is
        // only taken as data actually waits to be read.
        config.set_max_connection_receive_window(Some(
            MIN_CONNECTION_WINDOW.max(INITIAL_WINDOW.saturating_mul(max_streams)),
        ));
        config.set_max_num_streams(max_streams);
        config.set_split_send_size(split_send_size);
        Self { config }
    }

    fn muxer<C: AsyncRead + AsyncWrite + Send + 'static>(&self, io: C, mode: yamux::Mode) -> Muxer {
        Muxer {
            connection: yamux::Connection::new(Box::pin(io), self.config.clone(), mode),
        }
    }
}

impl UpgradeInfo for YamuxUpgrade {
    type Info = &'static str;
    type InfoIter = std::iter::Once<Self::Info>;

    fn protocol_info(&self) -> Self::InfoIter {
        std::iter::once(PROTOCOL)
    }
}

impl<C> InboundConnectionUpgrade<C> for YamuxUpgrade
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Muxer, io::Error>>;

    fn upgrade_inbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(self.muxer(io, yamux::Mode::Server)))
    }
}

impl<C> OutboundConnectionUpgrade<C> for YamuxUpgrade
where
    C: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    type Output = Muxer;
    type Error = io::Error;
    type Future = futures::future::Ready<Result<Muxer, io::Error>>;

    fn upgrade_outbound(self, io: C, _: Self::Info) -> Self::Future {
        futures::future::ready(Ok(self.muxer(io, yamux::Mode::Client)))
    }
}

impl StreamMuxer for Muxer {
    type Substream = yamux::Stream;
    type Error = yamux::ConnectionError;

    fn poll_inbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        match std::task::ready!(self.connection.poll_next_inbound(cx)) {
            Some(result) => Poll::Ready(result),
            None => Poll::Ready(Err(yamux::ConnectionError::Closed)),
        }
    }

    fn poll_outbound(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Result<Self::Substream, Self::Error>> {
        self.connection.poll_new_outbound(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.connection.poll_close(cx)
    }

    fn poll(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Result<StreamMuxerEvent, Self::Error>> {
        // All I/O is driven by `poll_inbound`, which the connection task polls continuously.
        Poll::Pending
    }
}
