//! The [`Message`] trait: what the dispatcher needs to know about a message.

use std::fmt::Debug;
use std::hash::Hash;

/// A message the dispatcher can route.
///
/// The dispatcher looks at a message's [`kind`](Message::kind) to find its subscribers, at its
/// [`content_hash`](Message::content_hash) for the optional duplicate filter, and at its
/// [`payload`](Message::payload) length for the byte counters. It never looks inside the payload.
///
/// # Cloning
/// A message is delivered to every subscriber of its kind, so the dispatch loop clones it once per
/// subscriber beyond the first (the last subscriber gets the original). Make the clone cheap: keep
/// large payloads behind an [`Arc`](std::sync::Arc) or in a `bytes::Bytes`, or wrap the whole
/// message in an `Arc` and implement this trait for your own newtype around it.
///
/// # Example
/// ```
/// use std::sync::Arc;
/// use p2pnet_dispatcher::Message;
///
/// #[derive(Clone, Debug)]
/// struct NetMessage {
///     kind: &'static str,
///     from: u64,
///     payload: Arc<[u8]>,
/// }
///
/// impl Message for NetMessage {
///     type Kind = &'static str;
///     type Sender = u64;
///     fn kind(&self) -> &&'static str {
///         &self.kind
///     }
///     fn sender(&self) -> &u64 {
///         &self.from
///     }
///     fn payload(&self) -> &[u8] {
///         &self.payload
///     }
/// }
/// ```
pub trait Message: Clone + Send + 'static {
    /// The message's type key, which subscribers register for (for example the 12-byte name of a
    /// wire message, or an enum).
    type Kind: Eq + Hash + Clone + Send + Sync + Debug + 'static;

    /// Who sent the message: opaque to the dispatcher (for example a peer id). It only appears in
    /// trace-level logs.
    type Sender: Debug + Send + Sync + ?Sized;

    /// The message's kind.
    fn kind(&self) -> &Self::Kind;

    /// The message's sender.
    fn sender(&self) -> &Self::Sender;

    /// The message's payload; the dispatcher only counts its length.
    fn payload(&self) -> &[u8];

    /// A digest of the message's content for the duplicate filter, or `None` to let the message
    /// through the filter unconditionally (the default).
    ///
    /// Use a cryptographic digest (for example the first 8 bytes of a SHA-256 of the payload) or a
    /// keyed hash when peers are untrusted: a peer who can make two different payloads collide can
    /// make the filter drop the second one.
    fn content_hash(&self) -> Option<u64> {
        None
    }

    /// The text used for a kind in Prometheus labels and logs. The default is the kind's `Debug`
    /// form with surrounding double quotes removed, so a `&str` or `String` kind `"tx"` becomes
    /// `tx`.
    fn kind_label(kind: &Self::Kind) -> String {
        let text = format!("{kind:?}");
        match text.strip_prefix('"').and_then(|t| t.strip_suffix('"')) {
            Some(inner) => inner.to_owned(),
            None => text,
        }
    }
}
