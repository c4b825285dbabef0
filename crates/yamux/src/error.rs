//! Errors: of the connection, of one stream, of opening a stream.

/// The peer broke the yamux protocol; the connection ends (we send GoAway with code 1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A header whose version is not 0.
    #[error("unknown yamux version {0}")]
    UnknownVersion(u8),
    /// A header whose type is not Data, WindowUpdate, Ping or GoAway.
    #[error("unknown yamux frame type {0}")]
    UnknownFrameType(u8),
    /// A Data or WindowUpdate frame for stream 0.
    #[error("stream frame on stream id 0")]
    StreamIdZero,
    /// A SYN for a stream id of our parity (ids we hand out).
    #[error("the peer opened stream {0}, an id of ours")]
    WrongParity(u32),
    /// A SYN for a stream that is open.
    #[error("the peer opened stream {0} twice")]
    DuplicateStream(u32),
    /// More data than the receive window we granted.
    #[error("stream {stream}: {length} bytes of data exceed the receive window of {window}")]
    WindowExceeded {
        /// The stream.
        stream: u32,
        /// The frame's length.
        length: u32,
        /// The window left.
        window: u32,
    },
    /// A window update past 2³² − 1.
    #[error("stream {0}: window update overflows the send window")]
    WindowOverflow(u32),
}

/// Why the connection cannot be used any more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectionError {
    /// The peer broke the protocol.
    #[error("yamux protocol error: {0}")]
    Protocol(#[from] ProtocolError),
    /// We closed the connection ([`crate::Connection::close`]).
    #[error("connection closed")]
    Closed,
    /// The transport under the connection ended ([`crate::Connection::connection_lost`]).
    #[error("connection lost")]
    Lost,
}

/// Why a stream operation failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StreamError {
    /// The peer reset the stream.
    #[error("stream reset by the peer")]
    Reset,
    /// We reset the stream.
    #[error("stream reset")]
    ResetLocally,
    /// We closed the connection before the stream finished.
    #[error("connection closed before the stream finished")]
    Aborted,
    /// The connection was lost (or broken by the peer) before the stream finished.
    #[error("connection lost before the stream finished")]
    Lost,
    /// A write after our own FIN.
    #[error("stream already finished for writing")]
    Finished,
    /// No such stream (never opened, or released).
    #[error("unknown stream")]
    UnknownStream,
}

impl From<StreamError> for std::io::Error {
    fn from(e: StreamError) -> Self {
        use std::io::ErrorKind;
        let kind = match e {
            StreamError::Reset | StreamError::ResetLocally | StreamError::Lost => {
                ErrorKind::ConnectionReset
            }
            StreamError::Aborted => ErrorKind::ConnectionAborted,
            StreamError::Finished => ErrorKind::BrokenPipe,
            StreamError::UnknownStream => ErrorKind::NotConnected,
        };
        std::io::Error::new(kind, e)
    }
}

/// Why a stream could not be opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// [`crate::Config::max_outbound_streams`] streams are open.
    #[error("outbound stream limit of {0} reached")]
    LimitReached(usize),
    /// The peer sent GoAway: it takes no new streams.
    #[error("the peer is going away")]
    RemoteGoAway,
    /// Every stream id of ours was used.
    #[error("stream ids exhausted")]
    IdsExhausted,
    /// The connection is closed or lost.
    #[error("connection is closed: {0}")]
    Closed(ConnectionError),
}
