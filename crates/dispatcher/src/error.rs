//! The crate's error type, [`DispatchError`], and [`SendError`], which hands a refused message
//! back to its sender.

use std::fmt;

use crate::subscriber::SubscriberHandle;

/// Everything that can go wrong in the dispatcher.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DispatchError {
    /// The receive queue is full (from [`DispatchSender::try_send`](crate::DispatchSender::try_send)).
    #[error("the dispatcher's receive queue is full")]
    QueueFull,
    /// The dispatcher was stopped: it accepts no more messages or subscribers.
    #[error("the dispatcher is stopped")]
    Stopped,
    /// [`Dispatcher::start`](crate::Dispatcher::start) was called on a running dispatcher.
    #[error("the dispatcher is already running")]
    AlreadyStarted,
    /// The subscriber was deregistered or the dispatcher stopped, and every message delivered to
    /// it before that has been received.
    #[error("the subscriber is closed: deregistered or its dispatcher stopped")]
    Closed,
    /// No message arrived, or no room appeared, before the timeout.
    #[error("timed out")]
    Timeout,
    /// No message is waiting (from [`Subscriber::try_recv`](crate::Subscriber::try_recv)).
    #[error("no message is waiting")]
    Empty,
    /// The handle names no registered subscriber (never registered, or already deregistered).
    #[error("{0} is not registered")]
    UnknownSubscriber(SubscriberHandle),
    /// A subscriber must take at least one message kind.
    #[error("a subscriber needs at least one message kind")]
    NoKinds,
    /// A configuration value is out of range.
    #[error("invalid dispatcher configuration: {0}")]
    InvalidConfig(String),
    /// The operating system refused to start the dispatch thread.
    #[error("could not spawn the dispatch thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// A message the dispatcher refused, handed back with the reason
/// ([`DispatchError::QueueFull`], [`DispatchError::Stopped`] or [`DispatchError::Timeout`]).
///
/// Converts into a [`DispatchError`] (dropping the message) for use with `?`.
pub struct SendError<M> {
    message: M,
    reason: DispatchError,
}

impl<M> SendError<M> {
    pub(crate) fn new(message: M, reason: DispatchError) -> Self {
        Self { message, reason }
    }

    /// Why the message was refused.
    pub fn reason(&self) -> &DispatchError {
        &self.reason
    }

    /// The refused message.
    pub fn message(&self) -> &M {
        &self.message
    }

    /// Takes the refused message back.
    pub fn into_message(self) -> M {
        self.message
    }

    /// Splits into the message and the reason.
    pub fn into_parts(self) -> (M, DispatchError) {
        (self.message, self.reason)
    }

    /// Whether the message was refused because the queue was full (it may be retried).
    pub fn is_full(&self) -> bool {
        matches!(
            self.reason,
            DispatchError::QueueFull | DispatchError::Timeout
        )
    }

    /// Whether the message was refused because the dispatcher is stopped.
    pub fn is_stopped(&self) -> bool {
        matches!(self.reason, DispatchError::Stopped)
    }
}

impl<M> fmt::Debug for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendError")
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

impl<M> fmt::Display for SendError<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "message not sent: {}", self.reason)
    }
}

impl<M> std::error::Error for SendError<M> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.reason)
    }
}

impl<M> From<SendError<M>> for DispatchError {
    fn from(error: SendError<M>) -> Self {
        error.reason
    }
}
