//! The iterative lookup: a state machine that says whom to ask next and when it is done.
//!
//! Sans-IO: the driver asks [`Query::next_action`] what to do, sends the requests it is told
//! to, and reports each answer ([`Query::on_success`]) or failure ([`Query::on_failure`]).
//! At most `alpha` requests are in flight; a request unanswered after `request_timeout` counts
//! as failed (a late answer is still taken). The lookup ends when the `k` closest peers known
//! (not counting failed ones) have all answered, when no one is left to ask, when the caller
//! found what it was looking for ([`Query::finish`]), or after the query timeout.
//!
//! The same machine runs `FIND_NODE`, `GET_VALUE` and `GET_PROVIDERS` lookups; the caller
//! decides what an answer carries besides closer peers.
//!
//! With [`QueryConfig::disjoint_paths`] (S/Kademlia), the lookup runs `d = α` paths: the seeds
//! are dealt to the paths closest first, round robin; a peer an answer names joins the path of
//! the peer that answered unless another path has it already, so no peer is used by two paths.
//! Each path has one request in flight and ends on its own terms (its `k` closest answered, or
//! no one left); the lookup ends when every path has. The result is the `k` closest that
//! answered over all paths.

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use p2pnet_host::{Multiaddr, PeerId};

use crate::key::{Distance, Key};
use crate::message::{KadPeer, MAX_ADDRS_PER_PEER};

/// Most peers a query remembers as learned (with addresses) over its lifetime.
const MAX_LEARNED: usize = 1024;

/// A query's parameters.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Requests in flight at once (α). Default 3.
    pub alpha: usize,
    /// How many closest peers the lookup looks for, and the most closer peers taken from one
    /// answer (`k`). Default 20.
    pub k: usize,
    /// Time a peer has to answer one request. Default 10 s.
    pub request_timeout: Duration,
    /// Time the whole query may take. Default 60 s.
    pub timeout: Duration,
    /// Whether the lookup runs α disjoint paths (S/Kademlia) instead of one. Default false.
    pub disjoint_paths: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            alpha: 3,
            k: 20,
            request_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(60),
            disjoint_paths: false,
        }
    }
}

/// Where a query stands with one peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Not asked yet.
    NotContacted,
    /// Asked at this instant; no answer yet.
    Waiting(Instant),
    /// Answered.
    Succeeded,
    /// Failed or timed out.
    Failed,
}

#[derive(Debug, Clone)]
struct Candidate {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
    state: PeerState,
    /// Requests on the path to this peer, asking it included (a seed is one hop away).
    hop: u32,
    /// The path this peer belongs to (always 0 without disjoint paths).
    path: usize,
}

/// What the driver should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Send the request to `peer` (at `addrs`, if it is not connected).
    Send {
        /// The peer to ask.
        peer: PeerId,
        /// Its addresses as the query learned them.
        addrs: Vec<Multiaddr>,
    },
    /// Wait for answers (or for the next timeout, see [`Query::next_deadline`]).
    Wait,
    /// The query is over: take [`Query::into_result`].
    Finished,
}

/// What one path of a lookup may do next.
enum PathStep {
    /// Send this.
    Send(Action),
    /// Requests are in flight (or waiting for a free slot).
    Busy,
    /// The path is over.
    Done,
}

/// What a finished query found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryResult {
    /// The closest peers that answered (at most `k`), closest first, with their addresses.
    pub closest: Vec<(PeerId, Vec<Multiaddr>)>,
    /// Every peer some answer named, with the addresses it gave.
    pub learned: Vec<(PeerId, Vec<Multiaddr>)>,
    /// The longest chain of requests that led to one of the closest peers (or, when
    /// [`Query::finish_at`] marked one, to the answer that ended the query).
    pub hops: u32,
    /// How many requests were sent.
    pub requests: u32,
    /// How many requests failed or timed out.
    pub failures: u32,
    /// Whether the query timeout ended it.
    pub timed_out: bool,
}

/// An iterative lookup of the peers closest to a key.
#[derive(Debug)]
pub struct Query {
    target: Key,
    local: PeerId,
    config: QueryConfig,
    candidates: BTreeMap<Distance, Candidate>,
    started: Instant,
    finished: bool,
    timed_out: bool,
    requests: u32,
    failures: u32,
    learned: HashMap<PeerId, Vec<Multiaddr>>,
    finish_hops: Option<u32>,
    /// How many paths the lookup runs (1, or α with disjoint paths).
    paths: usize,
    /// Requests in flight per path.
    per_path: usize,
    /// The path the next request is taken from (round robin over paths).
    next_path: usize,
}

impl Query {
    /// A lookup of `target` by `local`, starting from `seeds` (e.g. the routing table's
    /// closest entries).
    pub fn new(
        target: Key,
        local: PeerId,
        seeds: impl IntoIterator<Item = (PeerId, Vec<Multiaddr>)>,
        config: QueryConfig,
        now: Instant,
    ) -> Query {
        let mut config = config;
        config.alpha = config.alpha.max(1);
        config.k = config.k.max(1);
        let (paths, per_path) = if config.disjoint_paths {
            (config.alpha, 1)
        } else {
            (1, config.alpha)
        };
        let mut q = Query {
            target,
            local,
            config,
            candidates: BTreeMap::new(),
            started: now,
            finished: false,
            timed_out: false,
            requests: 0,
            failures: 0,
            learned: HashMap::new(),
            finish_hops: None,
            paths,
            per_path,
            next_path: 0,
        };
        // Seeds closest first, dealt to the paths round robin.
        let mut seeds: Vec<(Distance, PeerId, Vec<Multiaddr>)> = seeds
            .into_iter()
            .map(|(p, a)| (target.distance(&Key::from_peer(&p)), p, a))
            .collect();
        seeds.sort_by_key(|s| s.0);
        seeds.dedup_by(|a, b| a.0 == b.0);
        let mut path = 0;
        for (_, peer, addrs) in seeds {
            if peer == q.local {
                continue;
            }
            q.add_candidate(peer, addrs, 1, path);
            path = (path + 1) % q.paths;
        }
        q
    }

    /// How many paths the lookup runs: 1, or α with [`QueryConfig::disjoint_paths`].
    pub fn paths(&self) -> usize {
        self.paths
    }

    /// The path `peer` belongs to, if it is a candidate.
    pub fn path_of(&self, peer: &PeerId) -> Option<usize> {
        let d = self.target.distance(&Key::from_peer(peer));
        self.candidates.get(&d).map(|c| c.path)
    }

    /// The key looked up.
    pub fn target(&self) -> &Key {
        &self.target
    }

    /// The most candidates kept: the closest `k` and a margin for failures.
    fn max_candidates(&self) -> usize {
        (self.config.k * 5).max(100)
    }

    fn add_candidate(&mut self, peer: PeerId, mut addrs: Vec<Multiaddr>, hop: u32, path: usize) {
        if peer == self.local {
            return;
        }
        addrs.truncate(MAX_ADDRS_PER_PEER);
        let d = self.target.distance(&Key::from_peer(&peer));
        if let Some(c) = self.candidates.get_mut(&d) {
            // A peer belongs to the path that found it first; another path does not take it
            // (nor add to what it knows of it).
            if c.path != path {
                return;
            }
            for a in addrs {
                if c.addrs.len() < MAX_ADDRS_PER_PEER && !c.addrs.contains(&a) {
                    c.addrs.push(a);
                }
            }
            return;
        }
        self.candidates.insert(
            d,
            Candidate {
                peer,
                addrs,
                state: PeerState::NotContacted,
                hop,
                path,
            },
        );
        // Bounded: drop the farthest peers not asked yet.
        while self.candidates.len() > self.max_candidates() {
            let Some(far) = self
                .candidates
                .iter()
                .rev()
                .find(|(_, c)| c.state == PeerState::NotContacted)
                .map(|(d, _)| *d)
            else {
                break;
            };
            self.candidates.remove(&far);
        }
    }

    fn candidate_mut(&mut self, peer: &PeerId) -> Option<&mut Candidate> {
        let d = self.target.distance(&Key::from_peer(peer));
        self.candidates.get_mut(&d)
    }

    /// The state of `peer` in this query.
    pub fn peer_state(&self, peer: &PeerId) -> Option<PeerState> {
        let d = self.target.distance(&Key::from_peer(peer));
        self.candidates.get(&d).map(|c| c.state)
    }

    /// The hop count of `peer` (requests on the path to it, asking it included).
    pub fn hop_of(&self, peer: &PeerId) -> Option<u32> {
        let d = self.target.distance(&Key::from_peer(peer));
        self.candidates.get(&d).map(|c| c.hop)
    }

    /// How many requests are in flight.
    pub fn in_flight(&self) -> usize {
        self.candidates
            .values()
            .filter(|c| matches!(c.state, PeerState::Waiting(_)))
            .count()
    }

    /// Whether the query is over.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The next instant at which something times out (a request or the query).
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.finished {
            return None;
        }
        let query = self.started + self.config.timeout;
        let request = self
            .candidates
            .values()
            .filter_map(|c| match c.state {
                PeerState::Waiting(since) => Some(since + self.config.request_timeout),
                _ => None,
            })
            .min();
        Some(request.map_or(query, |r| r.min(query)))
    }

    /// What to do next. Call it until it answers [`Action::Wait`] or [`Action::Finished`], and
    /// again after each answer, failure or deadline.
    pub fn next_action(&mut self, now: Instant) -> Action {
        if self.finished {
            return Action::Finished;
        }
        if now >= self.started + self.config.timeout {
            self.finished = true;
            self.timed_out = true;
            return Action::Finished;
        }
        let request_timeout = self.config.request_timeout;
        let mut timed_out = 0;
        for c in self.candidates.values_mut() {
            if let PeerState::Waiting(since) = c.state
                && now >= since + request_timeout
            {
                c.state = PeerState::Failed;
                timed_out += 1;
            }
        }
        self.failures += timed_out;
        let mut busy = 0;
        for i in 0..self.paths {
            let path = (self.next_path + i) % self.paths;
            match self.path_step(path, now) {
                PathStep::Send(action) => {
                    self.next_path = (path + 1) % self.paths;
                    return action;
                }
                PathStep::Busy => busy += 1,
                PathStep::Done => {}
            }
        }
        if busy == 0 {
            self.finished = true;
            return Action::Finished;
        }
        Action::Wait
    }

    /// The next request of one path, if it may send one.
    fn path_step(&mut self, path: usize, now: Instant) -> PathStep {
        let in_flight = self
            .candidates
            .values()
            .filter(|c| c.path == path && matches!(c.state, PeerState::Waiting(_)))
            .count();
        let mut considered = 0;
        for c in self.candidates.values_mut().filter(|c| c.path == path) {
            match c.state {
                PeerState::Failed => continue,
                PeerState::Succeeded | PeerState::Waiting(_) => considered += 1,
                PeerState::NotContacted => {
                    if in_flight < self.per_path {
                        c.state = PeerState::Waiting(now);
                        self.requests += 1;
                        return PathStep::Send(Action::Send {
                            peer: c.peer,
                            addrs: c.addrs.clone(),
                        });
                    }
                    considered += 1;
                }
            }
            if considered >= self.config.k {
                break;
            }
        }
        if in_flight > 0 {
            PathStep::Busy
        } else {
            PathStep::Done
        }
    }

    /// `peer` answered with `closer` peers (at most `k` are taken).
    pub fn on_success(&mut self, peer: &PeerId, closer: Vec<KadPeer>) {
        let k = self.config.k;
        let Some(c) = self.candidate_mut(peer) else {
            return;
        };
        match c.state {
            PeerState::Waiting(_) => {}
            PeerState::Failed => {}
            // An answer we did not ask for (or a second one): ignored.
            PeerState::NotContacted | PeerState::Succeeded => return,
        }
        let was_failed = c.state == PeerState::Failed;
        c.state = PeerState::Succeeded;
        let hop = c.hop + 1;
        let path = c.path;
        if was_failed {
            self.failures = self.failures.saturating_sub(1);
        }
        for p in closer.into_iter().take(k) {
            if p.id == self.local {
                continue;
            }
            if self.learned.len() < MAX_LEARNED || self.learned.contains_key(&p.id) {
                let known = self.learned.entry(p.id).or_default();
                for a in &p.addrs {
                    if known.len() < MAX_ADDRS_PER_PEER && !known.contains(a) {
                        known.push(a.clone());
                    }
                }
            }
            if !self.finished {
                self.add_candidate(p.id, p.addrs, hop, path);
            }
        }
    }

    /// The request to `peer` failed.
    pub fn on_failure(&mut self, peer: &PeerId) {
        let Some(c) = self.candidate_mut(peer) else {
            return;
        };
        if matches!(c.state, PeerState::Waiting(_)) {
            c.state = PeerState::Failed;
            self.failures += 1;
        }
    }

    /// Ends the query early: the caller found what it wanted.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Ends the query early because the answer of `peer` had what the caller wanted; the
    /// result's hops are that peer's.
    pub fn finish_at(&mut self, peer: &PeerId) {
        self.finish_hops = self.hop_of(peer);
        self.finished = true;
    }

    /// The peers that answered, closest first (at most `k`).
    pub fn closest_succeeded(&self) -> Vec<(PeerId, Vec<Multiaddr>)> {
        self.candidates
            .values()
            .filter(|c| c.state == PeerState::Succeeded)
            .take(self.config.k)
            .map(|c| (c.peer, c.addrs.clone()))
            .collect()
    }

    /// What the query found.
    pub fn into_result(self) -> QueryResult {
        let k = self.config.k;
        let succeeded: Vec<&Candidate> = self
            .candidates
            .values()
            .filter(|c| c.state == PeerState::Succeeded)
            .take(k)
            .collect();
        let hops = self
            .finish_hops
            .unwrap_or_else(|| succeeded.iter().map(|c| c.hop).max().unwrap_or(0));
        QueryResult {
            closest: succeeded
                .iter()
                .map(|c| (c.peer, c.addrs.clone()))
                .collect(),
            learned: self.learned.into_iter().collect(),
            hops,
            requests: self.requests,
            failures: self.failures,
            timed_out: self.timed_out,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ConnectionType;
    use crate::routing::{RoutingConfig, RoutingTable};
    use std::collections::{HashSet, VecDeque};

    /// A simulated network: every node has a routing table filled with a random sample of the
    /// others; a node answers a lookup with its table's `k` closest to the target.
    struct Net {
        peers: Vec<PeerId>,
        tables: HashMap<PeerId, RoutingTable>,
        dead: HashSet<PeerId>,
    }

    impl Net {
        /// `n` nodes; each offered every other node in a random order, so that its buckets
        /// hold what a settled Kademlia table would (full far buckets, complete near ones).
        fn new(n: usize, seed: u64) -> Net {
            use rand::SeedableRng;
            use rand::seq::SliceRandom;
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            // Peer ids from the seed too: each test sees the same network every run.
            let peers: Vec<PeerId> = (0..n)
                .map(|_| {
                    let mut secret: [u8; 32] = rand::Rng::r#gen(&mut rng);
                    p2pnet_host::Keypair::ed25519_from_bytes(&mut secret)
                        .unwrap()
                        .public()
                        .to_peer_id()
                })
                .collect();
            let now = Instant::now();
            let mut tables = HashMap::new();
            for p in &peers {
                let mut t = RoutingTable::new(*p, RoutingConfig::default());
                let mut order = peers.clone();
                order.shuffle(&mut rng);
                for q in order {
                    t.insert(q, vec![], now);
                }
                tables.insert(*p, t);
            }
            Net {
                peers,
                tables,
                dead: HashSet::new(),
            }
        }

        fn answer(&self, peer: &PeerId, target: &Key) -> Vec<KadPeer> {
            self.tables[peer]
                .closest(target, 20)
                .into_iter()
                .map(|e| KadPeer {
                    id: e.peer,
                    addrs: vec![],
                    connection: ConnectionType::NotConnected,
                })
                .collect()
        }

        fn true_closest(&self, target: &Key, n: usize, except: &PeerId) -> Vec<PeerId> {
            let mut all: Vec<PeerId> = self
                .peers
                .iter()
                .filter(|p| *p != except && !self.dead.contains(*p))
                .copied()
                .collect();
            all.sort_by_key(|p| target.distance(&Key::from_peer(p)));
            all.truncate(n);
            all
        }

        /// Runs a query from `from`, answering requests in the order they were sent, one time
        /// step (1 ms) per answer; dead peers never answer. Checks that at most α are in flight.
        fn run(&self, from: PeerId, target: Key, config: QueryConfig) -> QueryResult {
            let alpha = config.alpha;
            let start = Instant::now();
            let seeds: Vec<_> = self.tables[&from]
                .closest(&target, 20)
                .into_iter()
                .map(|e| (e.peer, vec![]))
                .collect();
            let mut q = Query::new(target, from, seeds, config, start);
            let mut now = start;
            let mut sent: VecDeque<PeerId> = VecDeque::new();
            loop {
                match q.next_action(now) {
                    Action::Send { peer, .. } => {
                        sent.push_back(peer);
                        assert!(q.in_flight() <= alpha);
                        continue;
                    }
                    Action::Finished => break,
                    Action::Wait => {}
                }
                match sent.pop_front() {
                    Some(p) if self.dead.contains(&p) => {
                        // never answers: jump to its deadline
                        now = q.next_deadline().unwrap().max(now);
                    }
                    Some(p) => {
                        now += Duration::from_millis(1);
                        let answer = self.answer(&p, &target);
                        q.on_success(&p, answer);
                    }
                    None => now = q.next_deadline().unwrap(),
                }
            }
            q.into_result()
        }
    }

    #[test]
    fn lookups_find_the_k_closest_in_few_hops() {
        let net = Net::new(300, 1);
        for i in 0..20 {
            let from = net.peers[i];
            let target = Key::from_peer(&net.peers[299 - i]);
            let r = net.run(from, target, QueryConfig::default());
            let found: Vec<PeerId> = r.closest.iter().map(|(p, _)| *p).collect();
            assert_eq!(found, net.true_closest(&target, 20, &from), "lookup {i}");
            assert!(r.hops <= 9, "hops {}", r.hops);
            assert!(!r.timed_out);
            assert_eq!(r.failures, 0);
        }
    }

    #[test]
    fn dead_peers_time_out_and_the_lookup_goes_on() {
        let mut net = Net::new(200, 2);
        let dead = net.peers[100..160].to_vec();
        net.dead.extend(dead);
        let from = net.peers[0];
        let target = Key::from_peer(&net.peers[10]);
        let config = QueryConfig {
            request_timeout: Duration::from_millis(50),
            ..QueryConfig::default()
        };
        let r = net.run(from, target, config);
        let found: Vec<PeerId> = r.closest.iter().map(|(p, _)| *p).collect();
        // Dead entries crowd living ones out of answers, so a few of the farthest may be
        // missed; the closest are found.
        let truth = net.true_closest(&target, 20, &from);
        assert_eq!(found[..10], truth[..10]);
        assert!(found.iter().filter(|p| truth.contains(p)).count() >= 16);
        assert!(r.failures > 0);
        assert!(found.iter().all(|p| !net.dead.contains(p)));
    }

    #[test]
    fn the_query_timeout_ends_everything() {
        let mut net = Net::new(50, 3);
        let dead = net.peers[1..].to_vec();
        net.dead.extend(dead);
        let config = QueryConfig {
            request_timeout: Duration::from_secs(100),
            timeout: Duration::from_secs(5),
            ..QueryConfig::default()
        };
        let r = net.run(net.peers[0], Key::new(b"x"), config);
        assert!(r.timed_out);
        assert!(r.closest.is_empty());
        assert_eq!(r.requests, 3, "only α requests went out");
    }

    #[test]
    fn answers_are_bounded_and_the_local_peer_skipped() {
        let local = PeerId::random();
        let seed = PeerId::random();
        let now = Instant::now();
        let config = QueryConfig {
            k: 5,
            ..QueryConfig::default()
        };
        let mut q = Query::new(Key::new(b"t"), local, [(seed, vec![])], config, now);
        assert!(matches!(q.next_action(now), Action::Send { peer, .. } if peer == seed));
        let mut answer: Vec<KadPeer> = (0..30)
            .map(|_| KadPeer {
                id: PeerId::random(),
                addrs: vec![],
                connection: ConnectionType::NotConnected,
            })
            .collect();
        answer.insert(
            0,
            KadPeer {
                id: local,
                addrs: vec![],
                connection: ConnectionType::Connected,
            },
        );
        q.on_success(&seed, answer);
        assert_eq!(q.learned.len(), 4, "k = 5 entries taken, ours skipped");
        assert_eq!(q.peer_state(&local), None);
        // An unsolicited second answer changes nothing.
        q.on_success(&seed, vec![]);
        assert_eq!(q.candidates.len(), 5);
    }

    #[test]
    fn disjoint_paths_never_share_a_peer() {
        let net = Net::new(300, 4);
        let config = QueryConfig {
            disjoint_paths: true,
            ..QueryConfig::default()
        };
        for i in 0..10 {
            let from = net.peers[i];
            let target = Key::from_peer(&net.peers[150 + i]);
            let seeds: Vec<_> = net.tables[&from]
                .closest(&target, 20)
                .into_iter()
                .map(|e| (e.peer, vec![]))
                .collect();
            let start = Instant::now();
            let mut q = Query::new(target, from, seeds.clone(), config.clone(), start);
            assert_eq!(q.paths(), 3);
            // The path each peer was put on when first seen; it never changes.
            let mut path_of: HashMap<PeerId, usize> = HashMap::new();
            for (p, _) in &seeds {
                path_of.insert(*p, q.path_of(p).unwrap());
            }
            let used: HashSet<usize> = path_of.values().copied().collect();
            assert_eq!(used.len(), 3, "the seeds are dealt to every path");
            let mut sent: VecDeque<PeerId> = VecDeque::new();
            let mut asked: HashSet<PeerId> = HashSet::new();
            let mut now = start;
            loop {
                match q.next_action(now) {
                    Action::Send { peer, .. } => {
                        assert!(asked.insert(peer), "{peer} asked twice");
                        // At most one request per path in flight.
                        let path = q.path_of(&peer).unwrap();
                        let busy = sent.iter().filter(|p| q.path_of(p) == Some(path)).count();
                        assert_eq!(busy, 0, "a second request on path {path}");
                        sent.push_back(peer);
                        continue;
                    }
                    Action::Finished => break,
                    Action::Wait => {}
                }
                let p = sent.pop_front().expect("waiting with nothing in flight");
                now += Duration::from_millis(1);
                let answer = net.answer(&p, &target);
                let path = q.path_of(&p).unwrap();
                q.on_success(&p, answer.clone());
                for named in answer.iter().filter(|n| n.id != from) {
                    let Some(now_on) = q.path_of(&named.id) else {
                        continue; // dropped as too far
                    };
                    let first = *path_of.entry(named.id).or_insert(now_on);
                    assert_eq!(first, now_on, "{} moved between paths", named.id);
                    if !asked.contains(&named.id) && first != path {
                        // Named by another path's peer: it stays on its own path.
                        assert_ne!(q.path_of(&named.id), Some(path));
                    }
                }
            }
            for p in &asked {
                assert_eq!(q.path_of(p), path_of.get(p).copied());
            }
            let r = q.into_result();
            let found: Vec<PeerId> = r.closest.iter().map(|(p, _)| *p).collect();
            let truth = net.true_closest(&target, 20, &from);
            assert_eq!(found[..10], truth[..10], "lookup {i}");
        }
    }

    #[test]
    fn without_disjoint_paths_there_is_one_path() {
        let now = Instant::now();
        let seeds = (0..5).map(|_| (PeerId::random(), vec![]));
        let q = Query::new(
            Key::new(b"t"),
            PeerId::random(),
            seeds,
            QueryConfig::default(),
            now,
        );
        assert_eq!(q.paths(), 1);
        assert!(q.candidates.values().all(|c| c.path == 0));
    }

    #[test]
    fn no_seeds_finishes_at_once() {
        let now = Instant::now();
        let mut q = Query::new(
            Key::new(b"t"),
            PeerId::random(),
            [],
            QueryConfig::default(),
            now,
        );
        assert_eq!(q.next_action(now), Action::Finished);
        assert_eq!(q.into_result(), QueryResult::default());
    }
}
