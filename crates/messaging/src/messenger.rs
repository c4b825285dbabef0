//! [`Messenger`]: one message session per connected peer, and the send/broadcast/relay API.

use std::cell::OnceCell;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};

use bytes::Bytes;
use p2pnet_host::{Host, HostEvent, PeerId};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, broadcast, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::debug;

use crate::codec::FrameCodec;
use crate::config::MessagingConfig;
use crate::error::{CodecError, MessagingError};
use crate::events::SessionEvent;
use crate::frame::MessageKind;
use crate::handshake::Hello;
use crate::metrics::{MessagingMetrics, Metrics};
use crate::queues::{PeerQueues, Priority, QueueRefusal};
use crate::seen::{MessageId, SeenSet};
use crate::session::{self, Role};
use crate::sink::{InboundMessage, MessageSink};
use crate::slots::SlotTable;

/// The stream protocol of message sessions.
pub const PROTOCOL: &str = "/p2pnet/msg/1.0.0";

/// How many inbound streams may wait to be picked up.
const ACCEPT_BACKLOG: usize = 64;

/// What a send to several peers did.
#[derive(Debug, Default, Clone)]
pub struct SendReport {
    /// Peers the message was queued for.
    pub reached: Vec<PeerId>,
    /// Peers it could not be queued for, and why (e.g. [`MessagingError::Backpressure`]).
    pub failed: Vec<(PeerId, MessagingError)>,
}

/// The queues and relay memory of one peer; survives a tie-break replacement of its session.
#[derive(Debug)]
pub(crate) struct PeerState {
    pub(crate) queues: PeerQueues,
    pub(crate) seen: Mutex<SeenSet>,
    /// Held by the one writer that drains the queues; a replacing writer waits for it.
    pub(crate) writer: tokio::sync::Mutex<()>,
    /// Sessions of this peer that are no longer live but still deliver what the peer sent on
    /// them before it switched streams; the live session delivers only once they are done.
    draining: AtomicUsize,
    drained: Notify,
}

impl PeerState {
    fn new(config: &MessagingConfig) -> Self {
        Self {
            queues: PeerQueues::new(
                [config.queue_high, config.queue_normal, config.queue_low],
                config.max_queued_bytes,
            ),
            seen: Mutex::new(SeenSet::new(config.seen_capacity)),
            writer: tokio::sync::Mutex::new(()),
            draining: AtomicUsize::new(0),
            drained: Notify::new(),
        }
    }

    /// Whether a replaced or losing session of this peer is still delivering.
    pub(crate) fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire) > 0
    }

    /// Waits until no session of this peer is draining (each has a deadline).
    pub(crate) async fn drained(&self) {
        loop {
            let notified = self.drained.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if !self.is_draining() {
                return;
            }
            notified.await;
        }
    }
}

/// Counts one draining session of a peer while alive.
#[derive(Debug)]
pub(crate) struct DrainTicket(Arc<PeerState>);

impl DrainTicket {
    fn new(state: &Arc<PeerState>) -> Self {
        state.draining.fetch_add(1, Ordering::AcqRel);
        Self(state.clone())
    }
}

impl Drop for DrainTicket {
    fn drop(&mut self) {
        if self.0.draining.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.drained.notify_waiters();
        }
    }
}

/// Where a replaced session receives its [`DrainTicket`].
pub(crate) type Handoff = Arc<Mutex<Option<DrainTicket>>>;

#[derive(Debug)]
struct PeerSlot {
    state: Arc<PeerState>,
    session_id: u64,
    opener: PeerId,
    stop: CancellationToken,
    handoff: Handoff,
    compression: bool,
}

/// The outcome of registering a freshly handshaken session.
pub(crate) enum Registration {
    /// The session is the peer's one session (`replaced`: it took over from another).
    Active {
        state: Arc<PeerState>,
        session_id: u64,
        stop: CancellationToken,
        /// Receives a drain ticket when this session is replaced in turn (held, never read).
        _handoff: Handoff,
        replaced: bool,
    },
    /// Another session wins the tie-break: this one only reads until the peer closes it.
    Drain {
        state: Arc<PeerState>,
        /// Counts this session as draining while it runs (held, never read).
        _ticket: DrainTicket,
    },
}

pub(crate) struct Inner<S> {
    pub(crate) host: Host,
    pub(crate) config: MessagingConfig,
    pub(crate) sink: S,
    pub(crate) metrics: Metrics,
    pub(crate) cancel: CancellationToken,
    peers: RwLock<HashMap<PeerId, PeerSlot>>,
    pub(crate) slots: Arc<SlotTable>,
    events: broadcast::Sender<SessionEvent>,
    tracker: TaskTracker,
    started: AtomicBool,
    next_session: AtomicU64,
    hasher: RandomState,
    plain: FrameCodec,
    compressing: FrameCodec,
}

/// Message sessions with every connected peer of a [`Host`], delivering inbound messages to a
/// [`MessageSink`].
///
/// A cheap clone handle. Call [`Messenger::start`] once, and [`Messenger::shutdown`] to stop
/// and join every task it spawned.
pub struct Messenger<S: MessageSink = mpsc::Sender<InboundMessage>> {
    inner: Arc<Inner<S>>,
}

impl<S: MessageSink> Clone for Messenger<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<S: MessageSink> std::fmt::Debug for Messenger<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("peer", &self.inner.host.peer_id())
            .field("sessions", &self.inner.peers.read().len())
            .finish()
    }
}

struct Encoded<'a> {
    kind: MessageKind,
    payload: &'a Bytes,
    plain: OnceCell<Result<Bytes, CodecError>>,
    compressed: OnceCell<Result<Bytes, CodecError>>,
}

impl Encoded<'_> {
    fn get<S>(&self, inner: &Inner<S>, compression: bool) -> Result<Bytes, CodecError> {
        let (cell, codec) = if compression {
            (&self.compressed, &inner.compressing)
        } else {
            (&self.plain, &inner.plain)
        };
        cell.get_or_init(|| {
            let mut b =
                bytes::BytesMut::with_capacity(crate::codec::HEADER_LEN + self.payload.len());
            codec.encode_parts(self.kind, self.payload, &mut b)?;
            Ok(b.freeze())
        })
        .clone()
    }
}

impl<S: MessageSink> Inner<S> {
    pub(crate) fn emit(&self, ev: SessionEvent) {
        let _ = self.events.send(ev);
    }

    pub(crate) fn message_id(&self, kind: MessageKind, payload: &[u8]) -> MessageId {
        MessageId(self.hasher.hash_one((kind.as_str(), payload)))
    }

    pub(crate) fn our_hello(&self) -> Hello {
        Hello {
            chain_id: self.config.chain_id,
            protocol_version: self.config.protocol_version,
            compression: self.config.compression,
            client_version: self.config.client_version.clone(),
            listen_addrs: self.host.listen_addrs(),
        }
    }

    /// Registers a handshaken session; at most one session per peer is active. On a conflict
    /// the stream opened by the smaller peer id wins (a later stream of the same opener replaces
    /// the earlier one, which its slot has already told to stop), so both ends keep the same
    /// stream.
    pub(crate) fn register(
        &self,
        peer: PeerId,
        opener: PeerId,
        compression: bool,
        session_id: u64,
    ) -> Registration {
        let stop = self.cancel.child_token();
        let mut peers = self.peers.write();
        let (state, replaced) = match peers.get(&peer) {
            None => (Arc::new(PeerState::new(&self.config)), false),
            Some(old) if old.opener == opener || opener < old.opener => {
                // The old session drains what was sent on its stream before we deliver from the
                // new one, and its writer stops before the new writer starts.
                *old.handoff.lock() = Some(DrainTicket::new(&old.state));
                old.stop.cancel();
                (old.state.clone(), true)
            }
            Some(old) => {
                return Registration::Drain {
                    state: old.state.clone(),
                    _ticket: DrainTicket::new(&old.state),
                };
            }
        };
        let handoff = Handoff::default();
        peers.insert(
            peer,
            PeerSlot {
                state: state.clone(),
                session_id,
                opener,
                stop: stop.clone(),
                handoff: handoff.clone(),
                compression,
            },
        );
        state.queues.wake();
        Registration::Active {
            state,
            session_id,
            stop,
            _handoff: handoff,
            replaced,
        }
    }

    /// Removes the peer's session if it is still `session_id`; returns whether it was.
    pub(crate) fn unregister(&self, peer: &PeerId, session_id: u64) -> bool {
        let mut peers = self.peers.write();
        match peers.get(peer) {
            Some(slot) if slot.session_id == session_id => {
                let dropped = slot.state.queues.close();
                if dropped > 0 {
                    self.metrics
                        .dropped_on_close
                        .fetch_add(dropped as u64, Ordering::Relaxed);
                    debug!(%peer, dropped, "queued messages dropped with their session");
                }
                peers.remove(peer);
                true
            }
            _ => false,
        }
    }

    fn enqueue(
        &self,
        peer: PeerId,
        slot: &PeerSlot,
        msg: &Encoded<'_>,
        priority: Priority,
    ) -> Result<(), MessagingError> {
        let bytes = msg.get(self, slot.compression)?;
        match slot.state.queues.push(priority, bytes) {
            Ok(()) => Ok(()),
            Err(QueueRefusal::Full) => {
                self.metrics.backpressure(priority);
                Err(MessagingError::Backpressure { peer, priority })
            }
            Err(QueueRefusal::Closed) => Err(MessagingError::NotConnected(peer)),
        }
    }
}

impl<S: MessageSink> Messenger<S> {
    /// A messenger for `host` delivering inbound messages to `sink`. Nothing runs before
    /// [`Messenger::start`].
    pub fn new(host: Host, config: MessagingConfig, sink: S) -> Self {
        let plain = FrameCodec::new(config.chain_id).with_max_message_size(config.max_message_size);
        let compressing = plain
            .clone()
            .with_compression(Some(config.compress_threshold));
        let (events, _) = broadcast::channel(config.event_capacity.max(1));
        Self {
            inner: Arc::new(Inner {
                host,
                config,
                sink,
                metrics: Metrics::default(),
                cancel: CancellationToken::new(),
                peers: RwLock::new(HashMap::new()),
                slots: Arc::new(SlotTable::default()),
                events,
                tracker: TaskTracker::new(),
                started: AtomicBool::new(false),
                next_session: AtomicU64::new(0),
                hasher: RandomState::new(),
                plain,
                compressing,
            }),
        }
    }

    /// Registers the protocol handler and opens a session with every connected peer and every
    /// peer that connects from now on.
    pub fn start(&self) -> Result<(), MessagingError> {
        if self.inner.cancel.is_cancelled() {
            return Err(MessagingError::ShutDown);
        }
        if self.inner.started.swap(true, Ordering::SeqCst) {
            return Err(MessagingError::AlreadyStarted);
        }
        let mut inbound = self.inner.host.accept_streams(PROTOCOL, ACCEPT_BACKLOG)?;
        let mut host_events = self.inner.host.events();
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let s = tokio::select! {
                    _ = inner.cancel.cancelled() => break,
                    s = inbound.recv() => match s { Some(s) => s, None => break },
                };
                let peer = s.peer;
                let id = inner.next_session.fetch_add(1, Ordering::Relaxed);
                match inner.slots.claim(peer, Role::Inbound, id, &inner.cancel) {
                    Some(slot) => {
                        inner.tracker.spawn(session::run(
                            inner.clone(),
                            s.stream,
                            peer,
                            Role::Inbound,
                            slot,
                        ));
                    }
                    None => {
                        inner
                            .metrics
                            .streams_refused
                            .fetch_add(1, Ordering::Relaxed);
                        debug!(
                            %peer,
                            "a message session with this peer is still handshaking: stream reset"
                        );
                        s.stream.reset();
                    }
                }
            }
        });
        let this = self.clone();
        self.inner.tracker.spawn(async move {
            loop {
                let ev = tokio::select! {
                    _ = this.inner.cancel.cancelled() => break,
                    ev = host_events.recv() => ev,
                };
                match ev {
                    Ok(HostEvent::Connected { peer, .. }) => this.open(peer),
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        for peer in this.inner.host.connected_peers() {
                            this.open(peer);
                        }
                    }
                    Err(broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        for peer in self.inner.host.connected_peers() {
            self.open(peer);
        }
        Ok(())
    }

    /// Opens an outbound session with `peer` unless one exists or is being opened.
    fn open(&self, peer: PeerId) {
        if self.inner.cancel.is_cancelled() || self.inner.peers.read().contains_key(&peer) {
            return;
        }
        let id = self.inner.next_session.fetch_add(1, Ordering::Relaxed);
        let Some(slot) = self
            .inner
            .slots
            .claim(peer, Role::Outbound, id, &self.inner.cancel)
        else {
            return;
        };
        let inner = self.inner.clone();
        self.inner.tracker.spawn(async move {
            let opened = tokio::select! {
                _ = slot.kill().cancelled() => None,
                r = tokio::time::timeout(inner.config.handshake_timeout, inner.host.new_stream(peer, [PROTOCOL])) => Some(r),
            };
            match opened {
                Some(Ok(Ok(stream))) => {
                    session::run(inner, stream, peer, Role::Outbound, slot).await
                }
                Some(Ok(Err(e))) => debug!(%peer, error = %e, "could not open a message stream"),
                Some(Err(_)) => debug!(%peer, "opening a message stream timed out"),
                None => {}
            }
        });
    }

    /// The host this messenger runs on.
    pub fn host(&self) -> &Host {
        &self.inner.host
    }

    /// The configuration.
    pub fn config(&self) -> &MessagingConfig {
        &self.inner.config
    }

    /// Subscribes to session events.
    pub fn events(&self) -> broadcast::Receiver<SessionEvent> {
        self.inner.events.subscribe()
    }

    /// Peers with an established session, sorted.
    pub fn peers(&self) -> Vec<PeerId> {
        let mut v: Vec<PeerId> = self.inner.peers.read().keys().copied().collect();
        v.sort();
        v
    }

    /// How many message streams with `peer` have a session task now: handshaking, live, or
    /// closing (a tie-break loser or a replaced session, each with a short deadline). At most one
    /// per direction holds its place; one that was just replaced may still be ending.
    pub fn session_count(&self, peer: &PeerId) -> usize {
        self.inner.slots.tasks(peer)
    }

    /// Whether a session with `peer` is established.
    pub fn has_session(&self, peer: &PeerId) -> bool {
        self.inner.peers.read().contains_key(peer)
    }

    /// The identity of a message, as used by [`Messenger::relay`].
    pub fn message_id(&self, kind: MessageKind, payload: &[u8]) -> MessageId {
        self.inner.message_id(kind, payload)
    }

    fn prepare(&self, kind: &str, payload: &Bytes) -> Result<MessageKind, MessagingError> {
        let kind = MessageKind::new(kind)?;
        if kind.is_reserved() {
            return Err(MessagingError::ReservedKind(kind.as_str().to_owned()));
        }
        if payload.len() > self.inner.config.max_message_size {
            return Err(CodecError::TooLarge {
                size: payload.len() as u64,
                max: self.inner.config.max_message_size,
            }
            .into());
        }
        Ok(kind)
    }

    /// Queues a message for `peer`. Fails with [`MessagingError::Backpressure`] when the queue of
    /// that priority is full.
    pub fn send_to_peer(
        &self,
        peer: &PeerId,
        kind: &str,
        payload: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<(), MessagingError> {
        let payload = payload.into();
        let kind = self.prepare(kind, &payload)?;
        let id = self.inner.message_id(kind, &payload);
        let msg = Encoded {
            kind,
            payload: &payload,
            plain: OnceCell::new(),
            compressed: OnceCell::new(),
        };
        let peers = self.inner.peers.read();
        let slot = peers.get(peer).ok_or(MessagingError::NotConnected(*peer))?;
        self.inner.enqueue(*peer, slot, &msg, priority)?;
        slot.state.seen.lock().insert(id);
        drop(peers);
        self.inner.metrics.message_out(kind, payload.len(), 1);
        Ok(())
    }

    /// Queues a message for every peer with a session for which `filter` holds.
    pub fn send_to_peers(
        &self,
        filter: impl Fn(&PeerId) -> bool,
        kind: &str,
        payload: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<SendReport, MessagingError> {
        let payload = payload.into();
        let kind = self.prepare(kind, &payload)?;
        let id = self.inner.message_id(kind, &payload);
        Ok(self.fan_out(kind, &payload, id, priority, |p, _| filter(p)))
    }

    /// Queues a message for every peer with a session.
    pub fn broadcast(
        &self,
        kind: &str,
        payload: impl Into<Bytes>,
        priority: Priority,
    ) -> Result<SendReport, MessagingError> {
        self.send_to_peers(|_| true, kind, payload, priority)
    }

    /// Forwards a received message to every peer that has not sent it to us and has not been
    /// sent it by us (per-peer bounded memory of message ids), so a message never loops.
    pub fn relay(&self, msg: &InboundMessage, priority: Priority) -> SendReport {
        self.fan_out(msg.kind, &msg.payload, msg.id, priority, |_, state| {
            !state.seen.lock().contains_id(msg.id)
        })
    }

    fn fan_out(
        &self,
        kind: MessageKind,
        payload: &Bytes,
        id: MessageId,
        priority: Priority,
        select: impl Fn(&PeerId, &PeerState) -> bool,
    ) -> SendReport {
        let msg = Encoded {
            kind,
            payload,
            plain: OnceCell::new(),
            compressed: OnceCell::new(),
        };
        let mut report = SendReport::default();
        {
            let peers = self.inner.peers.read();
            for (peer, slot) in peers.iter() {
                if !select(peer, &slot.state) {
                    continue;
                }
                match self.inner.enqueue(*peer, slot, &msg, priority) {
                    Ok(()) => {
                        slot.state.seen.lock().insert(id);
                        report.reached.push(*peer);
                    }
                    Err(e) => report.failed.push((*peer, e)),
                }
            }
        }
        report.reached.sort();
        if !report.reached.is_empty() {
            self.inner
                .metrics
                .message_out(kind, payload.len(), report.reached.len() as u64);
        }
        report
    }

    /// A snapshot of the counters.
    pub fn metrics(&self) -> MessagingMetrics {
        let (open, depths) = {
            let peers = self.inner.peers.read();
            let depths: BTreeMap<PeerId, [usize; 3]> = peers
                .iter()
                .map(|(p, s)| (*p, s.state.queues.depths()))
                .collect();
            (peers.len(), depths)
        };
        self.inner.metrics.snapshot(open, depths)
    }

    /// How many tasks the messenger runs now.
    pub fn task_count(&self) -> usize {
        self.inner.tracker.len()
    }

    /// Stops every session, removes the protocol handler (its registration goes with the accept
    /// task), and waits for all tasks to end.
    pub async fn shutdown(&self) {
        self.inner.cancel.cancel();
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}
