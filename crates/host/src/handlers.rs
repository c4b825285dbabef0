//! Stream handlers: the table the host negotiates inbound streams against, and the registrations
//! that own its entries.

use std::collections::HashMap;
use std::sync::Weak;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::host::HostInner;
use crate::{HostError, InboundStream};

/// A stream handler: called with every inbound stream negotiated on its protocol. The future
/// runs on a task the host owns; it is cancelled when the host shuts down.
pub(crate) type HandlerFn =
    std::sync::Arc<dyn Fn(InboundStream) -> BoxFuture<'static, ()> + Send + Sync>;

struct Entry {
    /// Which registration owns the entry.
    id: u64,
    handler: HandlerFn,
}

/// The protocols the host serves, each with exactly one handler.
///
/// Handlers may own anything, including `Host` clones and registrations, so none is ever
/// dropped with the lock held: removal hands the handler back to be dropped after the lock.
#[derive(Default)]
pub(crate) struct Handlers {
    entries: RwLock<HashMap<String, Entry>>,
}

impl Handlers {
    /// Adds `handler` for `protocol` under registration `id`, unless the protocol already has
    /// one or `running` (checked under the lock, so that no handler outlives a shutdown's
    /// clearing) says the host is shut down.
    pub(crate) fn insert(
        &self,
        protocol: &str,
        id: u64,
        handler: HandlerFn,
        running: impl FnOnce() -> Result<(), HostError>,
    ) -> Result<(), HostError> {
        let mut entries = self.entries.write();
        let refused = match running() {
            Err(e) => Some(e),
            Ok(()) if entries.contains_key(protocol) => Some(HostError::ProtocolTaken {
                protocol: protocol.to_owned(),
            }),
            Ok(()) => None,
        };
        if let Some(e) = refused {
            // The refused handler is dropped after the lock.
            drop(entries);
            drop(handler);
            return Err(e);
        }
        entries.insert(protocol.to_owned(), Entry { id, handler });
        Ok(())
    }

    /// Removes the handler of `protocol` if registration `id` owns it, and returns it (for the
    /// caller to drop once the lock is released).
    #[must_use]
    fn remove(&self, protocol: &str, id: u64) -> Option<HandlerFn> {
        let mut entries = self.entries.write();
        if entries.get(protocol).is_some_and(|e| e.id == id) {
            entries.remove(protocol).map(|e| e.handler)
        } else {
            None
        }
    }

    /// Removes every handler and returns them (for the caller to drop once the lock is released).
    #[must_use]
    pub(crate) fn take_all(&self) -> Vec<HandlerFn> {
        std::mem::take(&mut *self.entries.write())
            .into_values()
            .map(|e| e.handler)
            .collect()
    }

    pub(crate) fn get(&self, protocol: &str) -> Option<HandlerFn> {
        self.entries.read().get(protocol).map(|e| e.handler.clone())
    }

    pub(crate) fn contains(&self, protocol: &str) -> bool {
        self.entries.read().contains_key(protocol)
    }

    /// The protocols served, in no particular order.
    pub(crate) fn names(&self) -> Vec<String> {
        self.entries.read().keys().cloned().collect()
    }
}

/// The registration of one stream handler, returned by [`crate::Host::set_stream_handler`].
///
/// The handler serves its protocol while the registration lives; dropping the registration
/// removes exactly that handler (never a later one registered for the same protocol), after
/// which new inbound streams on the protocol are refused by negotiation (the dialer gets
/// [`HostError::ProtocolNotSupported`]). Streams already handed to the handler run on.
///
/// A registration does not keep the host alive. When the host shuts down it drops every handler
/// itself; dropping a registration afterwards (or after the host is gone) does nothing.
///
/// Bind it to a named variable: `let _ = host.set_stream_handler(…)?` drops it at once.
#[must_use = "the stream handler is removed when its registration is dropped"]
pub struct StreamHandlerRegistration {
    host: Weak<HostInner>,
    protocol: String,
    id: u64,
}

impl StreamHandlerRegistration {
    pub(crate) fn new(host: Weak<HostInner>, protocol: String, id: u64) -> Self {
        Self { host, protocol, id }
    }

    /// The protocol this registration serves.
    pub fn protocol(&self) -> &str {
        &self.protocol
    }
}

impl std::fmt::Debug for StreamHandlerRegistration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamHandlerRegistration")
            .field("protocol", &self.protocol)
            .field("id", &self.id)
            .finish()
    }
}

impl Drop for StreamHandlerRegistration {
    fn drop(&mut self) {
        let Some(inner) = self.host.upgrade() else {
            return;
        };
        // Dropped after the lock is released: the handler may own registrations or hosts.
        let removed = inner.handlers.remove(&self.protocol, self.id);
        if removed.is_some() {
            tracing::debug!(protocol = %self.protocol, "stream handler removed");
        }
        drop(removed);
    }
}

/// The inbound streams of one protocol, returned by [`crate::Host::accept_streams`]: a bounded
/// channel that owns the protocol's [`StreamHandlerRegistration`].
///
/// Dropping the receiver removes the handler. [`StreamReceiver::recv`] returns `None` once the
/// host has shut down.
#[must_use = "the stream handler is removed when its receiver is dropped"]
#[derive(Debug)]
pub struct StreamReceiver {
    rx: mpsc::Receiver<InboundStream>,
    registration: StreamHandlerRegistration,
}

impl StreamReceiver {
    pub(crate) fn new(
        rx: mpsc::Receiver<InboundStream>,
        registration: StreamHandlerRegistration,
    ) -> Self {
        Self { rx, registration }
    }

    /// The next inbound stream; `None` once the host has shut down.
    pub async fn recv(&mut self) -> Option<InboundStream> {
        self.rx.recv().await
    }

    /// The next inbound stream if one is waiting.
    pub fn try_recv(&mut self) -> Result<InboundStream, mpsc::error::TryRecvError> {
        self.rx.try_recv()
    }

    /// Polls for the next inbound stream (see [`StreamReceiver::recv`]).
    pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<InboundStream>> {
        self.rx.poll_recv(cx)
    }

    /// The protocol whose streams this receives.
    pub fn protocol(&self) -> &str {
        self.registration.protocol()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::{Host, HostConfig, generate_keypair};

    /// An old registration dropped after its protocol was registered again leaves the new
    /// handler in place: removal goes by registration id, not by name.
    #[tokio::test]
    async fn an_old_registration_never_removes_a_newer_one() {
        let host = Host::new(generate_keypair(), HostConfig::default()).unwrap();
        let first = host.set_stream_handler("/p/1.0.0", |_s| async {}).unwrap();
        // A second handle on the first registration, standing for one that is dropped late.
        let late = StreamHandlerRegistration::new(
            Arc::downgrade(&host.inner),
            first.protocol.clone(),
            first.id,
        );
        drop(first);
        assert!(!host.check_proto_exists("/p/1.0.0"));
        let second = host.set_stream_handler("/p/1.0.0", |_s| async {}).unwrap();
        assert_ne!(second.id, late.id);
        drop(late);
        assert!(host.check_proto_exists("/p/1.0.0"));
        drop(second);
        assert!(!host.check_proto_exists("/p/1.0.0"));
        host.shutdown().await;
    }

    #[test]
    fn removal_goes_by_id() {
        let handlers = Handlers::default();
        let handler: HandlerFn = Arc::new(|_s| Box::pin(async {}));
        handlers
            .insert("/p", 1, handler.clone(), || Ok(()))
            .unwrap();
        assert!(matches!(
            handlers.insert("/p", 2, handler.clone(), || Ok(())),
            Err(HostError::ProtocolTaken { .. })
        ));
        assert!(handlers.remove("/p", 2).is_none());
        assert!(handlers.contains("/p"));
        assert!(handlers.remove("/p", 1).is_some());
        assert!(!handlers.contains("/p"));
        assert!(matches!(
            handlers.insert("/p", 3, handler, || Err(HostError::ShutDown)),
            Err(HostError::ShutDown)
        ));
        assert!(!handlers.contains("/p"));
    }
}
