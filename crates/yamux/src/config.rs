//! Connection configuration.

/// The receive window every stream starts with, fixed by the yamux specification.
pub const INITIAL_WINDOW: u32 = 256 * 1024;

/// How a [`crate::Connection`] behaves. Every field has a default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Streams the peer may have open at once; a stream over it is reset alone. Default 1,024.
    pub max_inbound_streams: usize,
    /// Streams we may have open at once; an open over it fails with
    /// [`crate::OpenError::LimitReached`]. Default 1,024.
    pub max_outbound_streams: usize,
    /// Streams we open that the peer has not acknowledged yet; more opens wait
    /// ([`crate::Connection::open_stream`] returns `Ok(None)`). Default 256, as the spec asks.
    pub max_ack_backlog: usize,
    /// The largest receive window one stream's auto-tuning may reach. Default 16 MiB.
    pub max_stream_window: u32,
    /// How much receive window the streams of one connection may have *above* the initial
    /// 256 KiB each, together: auto-tuning stops growing windows beyond it. Default 64 MiB.
    pub connection_window_budget: usize,
    /// The largest data frame we send. Default 64 KiB.
    pub max_frame_data: usize,
    /// Bytes of encoded frames waiting for the transport before stream writes block.
    /// Default 256 KiB.
    pub write_buffer: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_inbound_streams: 1024,
            max_outbound_streams: 1024,
            max_ack_backlog: 256,
            max_stream_window: 16 * 1024 * 1024,
            connection_window_budget: 64 * 1024 * 1024,
            max_frame_data: 64 * 1024,
            write_buffer: 256 * 1024,
        }
    }
}
