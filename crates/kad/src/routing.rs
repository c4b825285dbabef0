//! The routing table: 256 buckets of at most `k` peers each (least recently seen first), a
//! replacement cache per bucket, a liveness check of the least recently seen entry before it is
//! evicted, and IP diversity limits against eclipse attacks.
//!
//! Sans-IO: the table never checks liveness itself. When a full bucket meets a new peer,
//! [`RoutingTable::insert`] answers [`Insert::Pending`] naming the entry to check; the driver
//! checks it and reports back with [`RoutingTable::on_check_result`].
//!
//! Only peers in server mode (announcing our kad protocol) belong here; the caller decides that.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use p2pnet_host::{AddrScope, Multiaddr, PeerId, Protocol, addr_scope};

use crate::key::{KEY_BITS, Key};

/// Most addresses kept per entry.
pub const MAX_ADDRS_PER_ENTRY: usize = 32;

/// The routing table's configuration.
#[derive(Debug, Clone)]
pub struct RoutingConfig {
    /// Peers per bucket (`k`). Default 20.
    pub k: usize,
    /// Peers kept in each bucket's replacement cache. Default 20.
    pub replacement_cache: usize,
    /// Most peers of one IPv4 /24 (IPv6 /48) in a bucket. Default 2.
    pub max_per_bucket_group: usize,
    /// Most peers of one IPv4 /16 (IPv6 /32) in the whole table. Default 10.
    pub max_per_table_group: usize,
    /// Whether the diversity limits also apply to loopback and private addresses. Default false:
    /// a local network or a test on 127.0.0.1 is one operator by nature, as in go-libp2p's
    /// diversity filter.
    pub limit_private: bool,
    /// How long a liveness check may stay unanswered before the checked entry counts as dead.
    /// Default 10 s.
    pub check_timeout: Duration,
}

impl Default for RoutingConfig {
    fn default() -> Self {
        RoutingConfig {
            k: 20,
            replacement_cache: 20,
            max_per_bucket_group: 2,
            max_per_table_group: 10,
            limit_private: false,
            check_timeout: Duration::from_secs(10),
        }
    }
}

/// The IP groups a peer counts in for the diversity limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Groups {
    /// IPv4 /24 or IPv6 /48 (family tag first).
    narrow: [u8; 7],
    /// IPv4 /16 or IPv6 /32.
    wide: [u8; 5],
}

fn groups_of(addrs: &[Multiaddr], limit_private: bool) -> Option<Groups> {
    for addr in addrs {
        if !limit_private && addr_scope(addr) != AddrScope::Public {
            continue;
        }
        let ip = match addr.iter().next() {
            Some(Protocol::Ip4(ip)) => IpAddr::V4(ip),
            Some(Protocol::Ip6(ip)) => IpAddr::V6(ip),
            _ => continue,
        };
        return Some(match ip {
            IpAddr::V4(v4) => {
                let o = v4.octets();
                Groups {
                    narrow: [4, o[0], o[1], o[2], 0, 0, 0],
                    wide: [4, o[0], o[1], 0, 0],
                }
            }
            IpAddr::V6(v6) => {
                let o = v6.octets();
                Groups {
                    narrow: [6, o[0], o[1], o[2], o[3], o[4], o[5]],
                    wide: [6, o[0], o[1], o[2], o[3]],
                }
            }
        });
    }
    None
}

/// A peer in the table.
#[derive(Debug, Clone)]
pub struct Entry {
    /// The peer.
    pub peer: PeerId,
    /// Its key.
    pub key: Key,
    /// Its addresses (at most [`MAX_ADDRS_PER_ENTRY`]).
    pub addrs: Vec<Multiaddr>,
    /// When we last heard from it.
    pub last_seen: Instant,
    groups: Option<Groups>,
}

/// What [`RoutingTable::insert`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Insert {
    /// The peer was added to its bucket.
    Inserted,
    /// The peer was already there: it is now the most recently seen, with the new addresses.
    Updated,
    /// The bucket is full: the driver must check whether `check` (its least recently seen
    /// entry) is alive and call [`RoutingTable::on_check_result`]. The new peer waits.
    Pending {
        /// The entry to check.
        check: PeerId,
    },
    /// The bucket is full and a check is already under way: the peer went to the replacement
    /// cache.
    Queued,
    /// The peer was not taken.
    Rejected(Rejected),
}

/// Why a peer was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejected {
    /// It is us.
    LocalPeer,
    /// Its bucket holds as many peers of its IPv4 /24 (IPv6 /48) as allowed.
    BucketDiversity,
    /// The table holds as many peers of its IPv4 /16 (IPv6 /32) as allowed.
    TableDiversity,
}

#[derive(Debug)]
struct PendingCheck {
    check: PeerId,
    candidate: Entry,
    since: Instant,
}

#[derive(Debug, Default)]
struct Bucket {
    /// Least recently seen first.
    entries: Vec<Entry>,
    /// Most recently seen last.
    replacements: VecDeque<Entry>,
    pending: Option<PendingCheck>,
}

/// The routing table of a node.
#[derive(Debug)]
pub struct RoutingTable {
    local: Key,
    local_peer: PeerId,
    config: RoutingConfig,
    buckets: Vec<Bucket>,
    /// How many entries of each wide group the table holds.
    wide_counts: HashMap<[u8; 5], usize>,
    len: usize,
    generation: u64,
}

impl RoutingTable {
    /// An empty table around `local`.
    pub fn new(local: PeerId, config: RoutingConfig) -> RoutingTable {
        let mut config = config;
        config.k = config.k.max(1);
        RoutingTable {
            local: Key::from_peer(&local),
            local_peer: local,
            config,
            buckets: (0..KEY_BITS).map(|_| Bucket::default()).collect(),
            wide_counts: HashMap::new(),
            len: 0,
            generation: 0,
        }
    }

    /// Our own key.
    pub fn local_key(&self) -> Key {
        self.local
    }

    /// The configuration.
    pub fn config(&self) -> &RoutingConfig {
        &self.config
    }

    /// How many peers the table holds (not counting replacement caches).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// A number that changes whenever a peer joins or leaves the table or an entry's addresses
    /// change (so a saved copy is known to be stale).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The index of the closest non-empty bucket.
    pub fn closest_nonempty_bucket(&self) -> Option<usize> {
        self.buckets.iter().position(|b| !b.entries.is_empty())
    }

    /// The bucket index of `key`, `None` for our own key.
    pub fn bucket_of(&self, key: &Key) -> Option<usize> {
        self.local.distance(key).bucket_index()
    }

    /// The entry of `peer`, if it is in the table.
    pub fn get(&self, peer: &PeerId) -> Option<&Entry> {
        let idx = self.bucket_of(&Key::from_peer(peer))?;
        self.buckets[idx].entries.iter().find(|e| e.peer == *peer)
    }

    /// Whether `peer` is in the table.
    pub fn contains(&self, peer: &PeerId) -> bool {
        self.get(peer).is_some()
    }

    /// Every entry, bucket by bucket (closest bucket first), least recently seen first within a
    /// bucket.
    pub fn entries(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.buckets
            .iter()
            .enumerate()
            .flat_map(|(i, b)| b.entries.iter().map(move |e| (i, e)))
    }

    /// How many peers each non-empty bucket holds: `(bucket index, count)`.
    pub fn bucket_sizes(&self) -> Vec<(usize, usize)> {
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, b)| !b.entries.is_empty())
            .map(|(i, b)| (i, b.entries.len()))
            .collect()
    }

    /// The peer a pending liveness check in `peer`'s bucket is about, if any.
    pub fn pending_check(&self, peer: &PeerId) -> Option<PeerId> {
        let idx = self.bucket_of(&Key::from_peer(peer))?;
        self.buckets[idx].pending.as_ref().map(|p| p.check)
    }

    /// The `n` entries closest to `target`, closest first.
    pub fn closest(&self, target: &Key, n: usize) -> Vec<&Entry> {
        let mut all: Vec<&Entry> = self.buckets.iter().flat_map(|b| b.entries.iter()).collect();
        all.sort_unstable_by_key(|e| e.key.distance(target));
        all.truncate(n);
        all
    }

    fn diversity_allows(&self, bucket: usize, groups: Option<Groups>) -> Result<(), Rejected> {
        let Some(g) = groups else { return Ok(()) };
        let in_bucket = self.buckets[bucket]
            .entries
            .iter()
            .filter(|e| e.groups.map(|eg| eg.narrow) == Some(g.narrow))
            .count();
        if in_bucket >= self.config.max_per_bucket_group {
            return Err(Rejected::BucketDiversity);
        }
        if self.wide_counts.get(&g.wide).copied().unwrap_or(0) >= self.config.max_per_table_group {
            return Err(Rejected::TableDiversity);
        }
        Ok(())
    }

    fn push_entry(&mut self, bucket: usize, entry: Entry) {
        if let Some(g) = entry.groups {
            *self.wide_counts.entry(g.wide).or_default() += 1;
        }
        self.buckets[bucket].entries.push(entry);
        self.len += 1;
        self.generation += 1;
    }

    fn take_entry(&mut self, bucket: usize, pos: usize) -> Entry {
        let entry = self.buckets[bucket].entries.remove(pos);
        if let Some(g) = entry.groups
            && let Some(n) = self.wide_counts.get_mut(&g.wide)
        {
            *n -= 1;
            if *n == 0 {
                self.wide_counts.remove(&g.wide);
            }
        }
        self.len -= 1;
        self.generation += 1;
        entry
    }

    fn add_replacement(&mut self, bucket: usize, entry: Entry) {
        let cap = self.config.replacement_cache;
        let b = &mut self.buckets[bucket];
        b.replacements.retain(|e| e.peer != entry.peer);
        if cap == 0 {
            return;
        }
        if b.replacements.len() >= cap {
            b.replacements.pop_front();
        }
        b.replacements.push_back(entry);
    }

    /// Tells the table that `peer` (a server-mode peer) was seen at `now` with `addrs`.
    ///
    /// At most [`MAX_ADDRS_PER_ENTRY`] addresses are kept; an empty list keeps the addresses
    /// the entry had.
    pub fn insert(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, now: Instant) -> Insert {
        let key = Key::from_peer(&peer);
        let Some(idx) = self.bucket_of(&key) else {
            return Insert::Rejected(Rejected::LocalPeer);
        };
        if peer == self.local_peer {
            return Insert::Rejected(Rejected::LocalPeer);
        }
        let mut addrs = addrs;
        addrs.truncate(MAX_ADDRS_PER_ENTRY);
        if let Some(pos) = self.buckets[idx]
            .entries
            .iter()
            .position(|e| e.peer == peer)
        {
            let mut entry = self.buckets[idx].entries.remove(pos);
            entry.last_seen = now;
            if !addrs.is_empty() && entry.addrs != addrs {
                entry.addrs = addrs;
                self.generation += 1;
            }
            self.buckets[idx].entries.push(entry);
            return Insert::Updated;
        }
        let groups = groups_of(&addrs, self.config.limit_private);
        if let Err(why) = self.diversity_allows(idx, groups) {
            return Insert::Rejected(why);
        }
        let entry = Entry {
            peer,
            key,
            addrs,
            last_seen: now,
            groups,
        };
        if self.buckets[idx].entries.len() < self.config.k {
            self.buckets[idx].replacements.retain(|e| e.peer != peer);
            if self.buckets[idx]
                .pending
                .as_ref()
                .is_some_and(|p| p.candidate.peer == peer)
            {
                self.buckets[idx].pending = None;
            }
            self.push_entry(idx, entry);
            return Insert::Inserted;
        }
        // Full bucket: a stale check counts as failed, making room.
        if let Some(p) = &self.buckets[idx].pending
            && now.saturating_duration_since(p.since) >= self.config.check_timeout
        {
            let check = p.check;
            if self.on_check_result(&check, false, now) == Some(peer) {
                return Insert::Inserted;
            }
            return self.insert(peer, entry.addrs, now);
        }
        if let Some(p) = &mut self.buckets[idx].pending {
            if p.candidate.peer == peer {
                p.candidate = entry;
                return Insert::Queued;
            }
            self.add_replacement(idx, entry);
            return Insert::Queued;
        }
        let check = self.buckets[idx].entries[0].peer;
        self.buckets[idx].replacements.retain(|e| e.peer != peer);
        self.buckets[idx].pending = Some(PendingCheck {
            check,
            candidate: entry,
            since: now,
        });
        Insert::Pending { check }
    }

    /// The result of the liveness check of `peer` that [`Insert::Pending`] asked for. Alive: it
    /// stays, as the most recently seen, and the waiting peer goes to the replacement cache.
    /// Dead: it is evicted and the waiting peer takes its place. Returns the peer inserted, if
    /// any.
    pub fn on_check_result(&mut self, peer: &PeerId, alive: bool, now: Instant) -> Option<PeerId> {
        let idx = self.bucket_of(&Key::from_peer(peer))?;
        let pending = match &self.buckets[idx].pending {
            Some(p) if p.check == *peer => self.buckets[idx].pending.take()?,
            _ => return None,
        };
        let pos = self.buckets[idx]
            .entries
            .iter()
            .position(|e| e.peer == *peer);
        if alive && let Some(pos) = pos {
            let mut entry = self.buckets[idx].entries.remove(pos);
            entry.last_seen = now;
            self.buckets[idx].entries.push(entry);
            self.add_replacement(idx, pending.candidate);
            return None;
        }
        if let Some(pos) = pos {
            self.take_entry(idx, pos);
        }
        if self.buckets[idx].entries.len() < self.config.k
            && self.diversity_allows(idx, pending.candidate.groups).is_ok()
        {
            let inserted = pending.candidate.peer;
            self.push_entry(idx, pending.candidate);
            return Some(inserted);
        }
        self.add_replacement(idx, pending.candidate);
        self.promote_replacement(idx)
    }

    /// Moves the most recently seen replacement that the diversity limits allow into bucket
    /// `idx` if it has room.
    fn promote_replacement(&mut self, idx: usize) -> Option<PeerId> {
        if self.buckets[idx].entries.len() >= self.config.k {
            return None;
        }
        let pos = (0..self.buckets[idx].replacements.len()).rev().find(|&i| {
            self.diversity_allows(idx, self.buckets[idx].replacements[i].groups)
                .is_ok()
        })?;
        let entry = self.buckets[idx].replacements.remove(pos)?;
        let peer = entry.peer;
        self.push_entry(idx, entry);
        Some(peer)
    }

    /// Removes `peer` (it failed us), filling its place from the replacement cache. Returns
    /// whether it was in the table.
    pub fn remove(&mut self, peer: &PeerId, now: Instant) -> bool {
        let Some(idx) = self.bucket_of(&Key::from_peer(peer)) else {
            return false;
        };
        self.buckets[idx].replacements.retain(|e| e.peer != *peer);
        if self.buckets[idx]
            .pending
            .as_ref()
            .is_some_and(|p| p.check == *peer)
        {
            self.on_check_result(peer, false, now);
            return true;
        }
        if let Some(p) = &self.buckets[idx].pending
            && p.candidate.peer == *peer
        {
            self.buckets[idx].pending = None;
        }
        let Some(pos) = self.buckets[idx]
            .entries
            .iter()
            .position(|e| e.peer == *peer)
        else {
            return false;
        };
        self.take_entry(idx, pos);
        self.promote_replacement(idx);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn addr(a: u8, b: u8, c: u8, d: u8) -> Multiaddr {
        format!("/ip4/{a}.{b}.{c}.{d}/tcp/4001").parse().unwrap()
    }

    /// Peers sorted into the bucket they fall in around `local`.
    fn peers_in_bucket(local: &PeerId, bucket: usize, n: usize) -> Vec<PeerId> {
        let lk = Key::from_peer(local);
        let mut out = Vec::new();
        while out.len() < n {
            let p = PeerId::random();
            if lk.distance(&Key::from_peer(&p)).bucket_index() == Some(bucket) {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn full_bucket_asks_for_a_check_and_evicts_a_dead_entry() {
        let local = PeerId::random();
        let config = RoutingConfig {
            k: 2,
            ..RoutingConfig::default()
        };
        let mut t = RoutingTable::new(local, config);
        let now = Instant::now();
        let p = peers_in_bucket(&local, 255, 4);
        assert_eq!(
            t.insert(p[0], vec![addr(1, 1, 1, 1)], now),
            Insert::Inserted
        );
        assert_eq!(
            t.insert(p[1], vec![addr(2, 1, 1, 1)], now),
            Insert::Inserted
        );
        assert_eq!(
            t.insert(p[2], vec![addr(3, 1, 1, 1)], now),
            Insert::Pending { check: p[0] }
        );
        assert_eq!(t.insert(p[3], vec![addr(4, 1, 1, 1)], now), Insert::Queued);
        // p0 is dead: p2 takes its place.
        assert_eq!(t.on_check_result(&p[0], false, now), Some(p[2]));
        assert!(!t.contains(&p[0]) && t.contains(&p[2]));
        // p1 is now the least recently seen; p1 alive keeps it.
        assert_eq!(
            t.insert(p[0], vec![addr(5, 1, 1, 1)], now),
            Insert::Pending { check: p[1] }
        );
        assert_eq!(t.on_check_result(&p[1], true, now), None);
        assert!(t.contains(&p[1]) && !t.contains(&p[0]));
        // Removing an entry promotes the newest replacement (p0, then p3).
        assert!(t.remove(&p[2], now));
        assert!(t.contains(&p[0]));
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn stale_checks_count_as_dead() {
        let local = PeerId::random();
        let config = RoutingConfig {
            k: 1,
            ..RoutingConfig::default()
        };
        let timeout = config.check_timeout;
        let mut t = RoutingTable::new(local, config);
        let now = Instant::now();
        let p = peers_in_bucket(&local, 255, 2);
        t.insert(p[0], vec![], now);
        assert!(matches!(
            t.insert(p[1], vec![], now),
            Insert::Pending { .. }
        ));
        assert_eq!(t.insert(p[1], vec![], now + timeout), Insert::Inserted);
        assert!(t.contains(&p[1]) && !t.contains(&p[0]));
    }

    #[test]
    fn diversity_limits_per_bucket_and_table() {
        let local = PeerId::random();
        let mut t = RoutingTable::new(local, RoutingConfig::default());
        let now = Instant::now();
        let p = peers_in_bucket(&local, 255, 3);
        assert_eq!(
            t.insert(p[0], vec![addr(8, 8, 8, 1)], now),
            Insert::Inserted
        );
        assert_eq!(
            t.insert(p[1], vec![addr(8, 8, 8, 2)], now),
            Insert::Inserted
        );
        assert_eq!(
            t.insert(p[2], vec![addr(8, 8, 8, 3)], now),
            Insert::Rejected(Rejected::BucketDiversity)
        );
        // Loopback and private addresses are not limited by default.
        for p in peers_in_bucket(&local, 255, 5) {
            assert_eq!(t.insert(p, vec![addr(127, 0, 0, 1)], now), Insert::Inserted);
        }
        // The /16 limit spans buckets: 10 peers of 9.9.0.0/16, in /24s of their own.
        let mut t = RoutingTable::new(local, RoutingConfig::default());
        let mut inserted = 0;
        for i in 0..40u8 {
            let p = PeerId::random();
            if t.insert(p, vec![addr(9, 9, i, 1)], now) == Insert::Inserted {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 10);
        assert_eq!(
            t.insert(PeerId::random(), vec![addr(9, 9, 200, 1)], now),
            Insert::Rejected(Rejected::TableDiversity)
        );
        // IPv6: /48 per bucket.
        let mut t = RoutingTable::new(local, RoutingConfig::default());
        let v6 = |i: u16| -> Multiaddr { format!("/ip6/2001:db9:1::{i}/tcp/1").parse().unwrap() };
        let p = peers_in_bucket(&local, 255, 3);
        assert_eq!(t.insert(p[0], vec![v6(1)], now), Insert::Inserted);
        assert_eq!(t.insert(p[1], vec![v6(2)], now), Insert::Inserted);
        assert_eq!(
            t.insert(p[2], vec![v6(3)], now),
            Insert::Rejected(Rejected::BucketDiversity)
        );
        assert_eq!(
            t.insert(local, vec![], now),
            Insert::Rejected(Rejected::LocalPeer)
        );
    }

    /// The reference model: a flat list of entries, each with the tick it was last seen; a
    /// bucket is the entries of one index, least recently seen first.
    #[derive(Default, Debug)]
    struct Model {
        entries: Vec<(PeerId, usize, u64, u8)>, // peer, bucket, last seen, /24 group
        pending: HashMap<usize, (PeerId, PeerId, u8)>, // bucket -> (check, candidate, group)
        replacements: HashMap<usize, Vec<(PeerId, u8)>>,
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(usize, u8),
        Check(usize, bool),
        Remove(usize),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..40usize, 0..6u8).prop_map(|(p, g)| Op::Insert(p, g)),
            2 => (0..40usize, any::<bool>()).prop_map(|(p, a)| Op::Check(p, a)),
            1 => (0..40usize).prop_map(Op::Remove),
        ]
    }

    const K: usize = 3;
    const PER_BUCKET: usize = 2;

    impl Model {
        fn bucket(&self, b: usize) -> Vec<(PeerId, u64, u8)> {
            let mut v: Vec<_> = self
                .entries
                .iter()
                .filter(|e| e.1 == b)
                .map(|e| (e.0, e.2, e.3))
                .collect();
            v.sort_by_key(|e| e.1);
            v
        }
        fn group_count(&self, b: usize, g: u8) -> usize {
            self.entries.iter().filter(|e| e.1 == b && e.3 == g).count()
        }
        fn add_repl(&mut self, b: usize, p: PeerId, g: u8) {
            let r = self.replacements.entry(b).or_default();
            r.retain(|e| e.0 != p);
            if r.len() >= K {
                r.remove(0);
            }
            r.push((p, g));
        }
        fn promote(&mut self, b: usize, tick: u64) {
            if self.bucket(b).len() >= K {
                return;
            }
            let r = self.replacements.entry(b).or_default().clone();
            if let Some(i) = (0..r.len())
                .rev()
                .find(|&i| self.group_count(b, r[i].1) < PER_BUCKET)
            {
                self.replacements.get_mut(&b).unwrap().remove(i);
                self.entries.push((r[i].0, b, tick, r[i].1));
            }
        }
        fn check(&mut self, peer: PeerId, b: usize, alive: bool, tick: u64) {
            let Some((check, cand, g)) = self.pending.get(&b).copied() else {
                return;
            };
            if check != peer {
                return;
            }
            self.pending.remove(&b);
            let present = self.entries.iter().position(|e| e.0 == peer);
            if alive && let Some(i) = present {
                self.entries[i].2 = tick;
                self.add_repl(b, cand, g);
                return;
            }
            if let Some(i) = present {
                self.entries.remove(i);
            }
            if self.bucket(b).len() < K && self.group_count(b, g) < PER_BUCKET {
                self.entries.push((cand, b, tick, g));
            } else {
                self.add_repl(b, cand, g);
                self.promote(b, tick);
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        #[test]
        fn table_matches_model(ops in proptest::collection::vec(op(), 1..200)) {
            let local = PeerId::random();
            let local_key = Key::from_peer(&local);
            let peers: Vec<PeerId> = (0..40).map(|_| PeerId::random()).collect();
            let bucket = |p: &PeerId| local_key.distance(&Key::from_peer(p)).bucket_index().unwrap();
            let config = RoutingConfig {
                k: K,
                replacement_cache: K,
                max_per_bucket_group: PER_BUCKET,
                max_per_table_group: 1000,
                check_timeout: Duration::from_secs(1_000_000),
                ..RoutingConfig::default()
            };
            let mut table = RoutingTable::new(local, config);
            let mut model = Model::default();
            let start = Instant::now();
            for (tick, op) in ops.into_iter().enumerate() {
                let tick = tick as u64 + 1;
                let now = start + Duration::from_millis(tick);
                match op {
                    Op::Insert(i, g) => {
                        let p = peers[i];
                        let b = bucket(&p);
                        let got = table.insert(p, vec![addr(20 + g, 1, 1, 1)], now);
                        let expected = if let Some(e) = model.entries.iter_mut().find(|e| e.0 == p) {
                            e.2 = tick;
                            Insert::Updated
                        } else if model.group_count(b, g) >= PER_BUCKET {
                            Insert::Rejected(Rejected::BucketDiversity)
                        } else if model.bucket(b).len() < K {
                            model.entries.push((p, b, tick, g));
                            if let Some(r) = model.replacements.get_mut(&b) { r.retain(|e| e.0 != p); }
                            if model.pending.get(&b).is_some_and(|x| x.1 == p) { model.pending.remove(&b); }
                            Insert::Inserted
                        } else if let Some(pending) = model.pending.get_mut(&b) {
                            if pending.1 == p { pending.2 = g; } else { model.add_repl(b, p, g); }
                            Insert::Queued
                        } else {
                            let check = model.bucket(b)[0].0;
                            if let Some(r) = model.replacements.get_mut(&b) { r.retain(|e| e.0 != p); }
                            model.pending.insert(b, (check, p, g));
                            Insert::Pending { check }
                        };
                        prop_assert_eq!(got, expected);
                    }
                    Op::Check(i, alive) => {
                        let p = peers[i];
                        table.on_check_result(&p, alive, now);
                        model.check(p, bucket(&p), alive, tick);
                    }
                    Op::Remove(i) => {
                        let p = peers[i];
                        let b = bucket(&p);
                        let was = table.remove(&p, now);
                        if let Some(r) = model.replacements.get_mut(&b) { r.retain(|e| e.0 != p); }
                        let expected = if model.pending.get(&b).is_some_and(|x| x.0 == p) {
                            model.check(p, b, false, tick);
                            true
                        } else {
                            if model.pending.get(&b).is_some_and(|x| x.1 == p) {
                                model.pending.remove(&b);
                            }
                            if let Some(i) = model.entries.iter().position(|e| e.0 == p) {
                                model.entries.remove(i);
                                model.promote(b, tick);
                                true
                            } else {
                                false
                            }
                        };
                        prop_assert_eq!(was, expected);
                    }
                }
                // Same buckets, same order, bounded by k.
                prop_assert_eq!(table.len(), model.entries.len());
                for b in 0..KEY_BITS {
                    let ours: Vec<PeerId> = table.buckets[b].entries.iter().map(|e| e.peer).collect();
                    let theirs: Vec<PeerId> = model.bucket(b).iter().map(|e| e.0).collect();
                    prop_assert!(ours.len() <= K);
                    prop_assert_eq!(ours, theirs);
                }
                // Closest peers: the model's entries sorted by distance.
                let target = Key::from_peer(&peers[(tick as usize * 7) % peers.len()]);
                let mut sorted: Vec<PeerId> = model.entries.iter().map(|e| e.0).collect();
                sorted.sort_by_key(|p| Key::from_peer(p).distance(&target));
                sorted.truncate(5);
                let closest: Vec<PeerId> = table.closest(&target, 5).iter().map(|e| e.peer).collect();
                prop_assert_eq!(closest, sorted);
            }
        }
    }
}
