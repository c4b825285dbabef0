//! The control protocol between the coordinator and its worker processes: one JSON object per
//! line, requests on the worker's stdin, responses on its stdout, matched by `id`. A worker
//! serves requests concurrently, so responses may come in any order.

use serde::{Deserialize, Serialize};

/// Which Kademlia implementation a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum Backend {
    /// `p2pnet-kad` on `p2pnet-host`.
    Ours,
    /// rust-libp2p's `libp2p-kad` on a `Swarm` (TCP + noise + yamux, identify).
    RustLibp2p,
}

impl Backend {
    /// The name used in reports.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Backend::Ours => "p2pnet",
            Backend::RustLibp2p => "rust-libp2p",
        }
    }
}

/// A request and the id its response carries.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Envelope<T> {
    /// Chosen by the coordinator, unique per worker.
    pub(crate) id: u64,
    /// The request or response.
    pub(crate) body: T,
}

/// A peer as the plan hands it around: its id and one address to dial (both as strings, so
/// that both backends parse them with their own types).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct PeerAddr {
    /// The peer id (base58).
    pub(crate) peer: String,
    /// Its listen address (`/ip4/127.0.0.1/tcp/<port>`).
    pub(crate) addr: String,
}

/// What the coordinator asks a worker.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Request {
    /// Start these nodes (global indices), each with a new identity, listening on 127.0.0.1.
    Spawn {
        /// The nodes' indices in the plan.
        nodes: Vec<u32>,
    },
    /// Tell `node` about bootstrap peers.
    AddPeers {
        /// The node.
        node: u32,
        /// Its bootstrap peers.
        peers: Vec<PeerAddr>,
    },
    /// Run `node`'s bootstrap (a lookup of its own id).
    Bootstrap {
        /// The node.
        node: u32,
    },
    /// Look `target` up from `node`; first drop any connection to it (`cold`), so the lookup
    /// goes through the DHT rather than the connection.
    FindPeer {
        /// The asking node.
        node: u32,
        /// The peer looked for.
        target: String,
        /// Whether to close a connection to the target first.
        cold: bool,
    },
    /// The routing table sizes of these nodes.
    Tables {
        /// The nodes.
        nodes: Vec<u32>,
    },
    /// Stop these nodes (their hosts shut down: their ports close).
    Kill {
        /// The nodes.
        nodes: Vec<u32>,
    },
    /// Stop every node and exit.
    Shutdown,
}

/// How one lookup went, in the terms both backends can report.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct LookupStats {
    /// Hops (longest request chain to the result); `None` where the backend does not say.
    pub(crate) hops: Option<u32>,
    /// Requests sent.
    pub(crate) requests: u32,
    /// Requests that failed or timed out.
    pub(crate) failures: u32,
    /// Whether the query timeout cut it short.
    pub(crate) timed_out: bool,
}

/// One started node.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Spawned {
    /// Its index in the plan.
    pub(crate) node: u32,
    /// Its id and listen address.
    pub(crate) peer: PeerAddr,
}

/// What a worker answers.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum Response {
    /// The started nodes.
    Spawned {
        /// One per requested node.
        nodes: Vec<Spawned>,
    },
    /// Done.
    Ok,
    /// A bootstrap or lookup finished (possibly unsuccessfully: that is a result, not a
    /// harness error).
    Lookup {
        /// Whether it succeeded (for `FindPeer`: the target's address was found).
        ok: bool,
        /// Its statistics (none when it failed before starting).
        stats: LookupStats,
        /// Wall time, in microseconds.
        latency_us: u64,
        /// Why it failed.
        error: Option<String>,
    },
    /// Routing table sizes, `(node, entries)`.
    Tables {
        /// One per requested node.
        sizes: Vec<(u32, usize)>,
    },
    /// The request could not be carried out (unknown node, bad peer id…): a harness error.
    Error {
        /// What went wrong.
        message: String,
    },
}
