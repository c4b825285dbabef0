//! At most one message session per peer and direction: who holds each (peer, direction) slot.
//!
//! A stream gets a session task only with a claim on its slot. A slot held by a session that is
//! still handshaking refuses newer streams (that session has a deadline); a slot held by a live or
//! closing session goes to the newer stream, and the older session is told to stop at once
//! (its `kill` token). The claim is given back when the session's task ends.

use std::collections::HashMap;
use std::sync::Arc;

use p2pnet_host::PeerId;
use parking_lot::Mutex;
use tokio_util::sync::CancellationToken;

use crate::session::Role;

/// Where a session is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Before the handshake finished (bounded by the handshake deadline).
    Handshaking,
    /// The peer's one session.
    Live,
    /// Lost a tie-break, was replaced, or failed its handshake: ends within a short deadline.
    Closing,
}

#[derive(Debug)]
struct Holder {
    id: u64,
    phase: Phase,
    kill: CancellationToken,
}

#[derive(Debug, Default)]
struct PeerSlots {
    slots: [Option<Holder>; 2],
    tasks: usize,
}

/// The slots of every peer with a session task.
#[derive(Debug, Default)]
pub(crate) struct SlotTable {
    peers: Mutex<HashMap<PeerId, PeerSlots>>,
}

fn index(role: Role) -> usize {
    match role {
        Role::Inbound => 0,
        Role::Outbound => 1,
    }
}

impl SlotTable {
    /// Claims the `(peer, role)` slot for session `id`; `None` when a session in that slot is
    /// still handshaking. A live or closing holder is killed and the slot changes hands.
    pub(crate) fn claim(
        self: &Arc<Self>,
        peer: PeerId,
        role: Role,
        id: u64,
        parent: &CancellationToken,
    ) -> Option<SlotGuard> {
        let mut peers = self.peers.lock();
        let entry = peers.entry(peer).or_default();
        let slot = &mut entry.slots[index(role)];
        if let Some(old) = slot {
            if old.phase == Phase::Handshaking {
                return None;
            }
            old.kill.cancel();
        }
        let kill = parent.child_token();
        *slot = Some(Holder {
            id,
            phase: Phase::Handshaking,
            kill: kill.clone(),
        });
        entry.tasks += 1;
        Some(SlotGuard {
            table: self.clone(),
            peer,
            role,
            id,
            kill,
        })
    }

    /// How many session tasks run for `peer` (handshaking, live or closing).
    pub(crate) fn tasks(&self, peer: &PeerId) -> usize {
        self.peers.lock().get(peer).map_or(0, |p| p.tasks)
    }
}

/// A session's claim on its slot; given back on drop.
#[derive(Debug)]
pub(crate) struct SlotGuard {
    table: Arc<SlotTable>,
    peer: PeerId,
    role: Role,
    id: u64,
    kill: CancellationToken,
}

impl SlotGuard {
    /// The session id.
    pub(crate) fn id(&self) -> u64 {
        self.id
    }

    /// Cancelled when a newer stream took the slot (or the messenger shuts down).
    pub(crate) fn kill(&self) -> &CancellationToken {
        &self.kill
    }

    /// Records the session's phase, if it still holds its slot.
    pub(crate) fn set_phase(&self, phase: Phase) {
        let mut peers = self.table.peers.lock();
        if let Some(Some(h)) = peers
            .get_mut(&self.peer)
            .map(|p| &mut p.slots[index(self.role)])
            && h.id == self.id
        {
            h.phase = phase;
        }
    }
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        let mut peers = self.table.peers.lock();
        let Some(entry) = peers.get_mut(&self.peer) else {
            return;
        };
        let slot = &mut entry.slots[index(self.role)];
        if slot.as_ref().is_some_and(|h| h.id == self.id) {
            *slot = None;
        }
        entry.tasks = entry.tasks.saturating_sub(1);
        if entry.tasks == 0 {
            peers.remove(&self.peer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_claim_per_direction_handshaking_refuses_live_is_replaced() {
        let t = Arc::new(SlotTable::default());
        let root = CancellationToken::new();
        let p = p2pnet_host::generate_keypair().public().to_peer_id();
        let a = t.claim(p, Role::Inbound, 1, &root).unwrap();
        assert!(t.claim(p, Role::Inbound, 2, &root).is_none());
        let out = t.claim(p, Role::Outbound, 3, &root).unwrap();
        assert_eq!(t.tasks(&p), 2);
        a.set_phase(Phase::Live);
        let b = t.claim(p, Role::Inbound, 4, &root).unwrap();
        assert!(a.kill().is_cancelled() && !b.kill().is_cancelled());
        assert_eq!(t.tasks(&p), 3);
        drop(a); // the killed session ends: b keeps the slot
        assert_eq!(t.tasks(&p), 2);
        assert!(t.claim(p, Role::Inbound, 5, &root).is_none());
        b.set_phase(Phase::Closing);
        let c = t.claim(p, Role::Inbound, 6, &root).unwrap();
        assert!(b.kill().is_cancelled());
        drop((b, c, out));
        assert_eq!(t.tasks(&p), 0);
        assert!(t.peers.lock().is_empty());
        root.cancel();
        let d = t.claim(p, Role::Inbound, 7, &root).unwrap();
        assert!(d.kill().is_cancelled());
    }
}
