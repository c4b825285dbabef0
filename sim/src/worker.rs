//! `p2pnet-sim worker`: a process that runs a share of the simulated nodes and serves the
//! coordinator's requests ([`crate::proto`]) from stdin, answering on stdout. It stops every
//! node and exits on `Shutdown` or when stdin closes (the coordinator is gone).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use crate::ours::OurNode;
use crate::proto::{Backend, Envelope, Request, Response, Spawned};
use crate::rust_libp2p::RustNode;

/// Longest request line accepted (a `Spawn` of a few thousand nodes fits easily).
const MAX_LINE: usize = 1 << 20;
/// How long stopping all nodes may take at the end.
const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// One node of either backend.
enum Node {
    Ours(OurNode),
    Rust(RustNode),
}

impl Node {
    async fn start(backend: Backend) -> Result<Node> {
        Ok(match backend {
            Backend::Ours => Node::Ours(OurNode::start().await?),
            Backend::RustLibp2p => Node::Rust(RustNode::start().await?),
        })
    }

    async fn stop(&self) {
        match self {
            Node::Ours(n) => n.stop().await,
            Node::Rust(n) => n.stop().await,
        }
    }
}

type Nodes = Arc<Mutex<HashMap<u32, Arc<Node>>>>;

fn get(nodes: &Nodes, node: u32) -> Result<Arc<Node>> {
    nodes
        .lock()
        .map_err(|_| anyhow!("node map poisoned"))?
        .get(&node)
        .cloned()
        .ok_or_else(|| anyhow!("node {node} is not running in this worker"))
}

/// Runs the worker until `Shutdown` or the end of stdin.
pub(crate) async fn run(backend: Backend) -> Result<()> {
    let nodes: Nodes = Arc::default();
    let (out_tx, mut out_rx) = mpsc::channel::<String>(1024);
    let writer = tokio::spawn(async move {
        let mut stdout = tokio::io::stdout();
        while let Some(mut line) = out_rx.recv().await {
            line.push('\n');
            if stdout.write_all(line.as_bytes()).await.is_err() {
                break;
            }
            let _ = stdout.flush().await;
        }
    });
    let mut tasks = JoinSet::new();
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    let mut shutdown_id = None;
    while let Some(line) = lines.next_line().await.context("reading stdin")? {
        if line.len() > MAX_LINE {
            return Err(anyhow!("request line of {} bytes", line.len()));
        }
        let req: Envelope<Request> = serde_json::from_str(&line).context("bad request line")?;
        if matches!(req.body, Request::Shutdown) {
            shutdown_id = Some(req.id);
            break;
        }
        let nodes = nodes.clone();
        let out = out_tx.clone();
        tasks.spawn(async move {
            let body = match serve(backend, &nodes, req.body).await {
                Ok(r) => r,
                Err(e) => Response::Error {
                    message: format!("{e:#}"),
                },
            };
            let line = serde_json::to_string(&Envelope { id: req.id, body }).unwrap_or_else(|e| {
                format!(
                    "{{\"id\":{},\"body\":{{\"op\":\"error\",\"message\":\"{e}\"}}}}",
                    req.id
                )
            });
            let _ = out.send(line).await;
        });
        while tasks.try_join_next().is_some() {}
    }
    // Let requests in flight finish (they are bounded by their own timeouts), then stop nodes.
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(STOP_TIMEOUT, drain).await.is_err() {
        tracing::warn!("requests still running after {STOP_TIMEOUT:?}; aborted");
        tasks.abort_all();
    }
    let all: Vec<Arc<Node>> = nodes
        .lock()
        .map_err(|_| anyhow!("node map poisoned"))?
        .drain()
        .map(|(_, n)| n)
        .collect();
    let stopping = futures::future::join_all(all.iter().map(|n| n.stop()));
    if tokio::time::timeout(STOP_TIMEOUT, stopping).await.is_err() {
        tracing::warn!("stopping the nodes took longer than {STOP_TIMEOUT:?}");
    }
    if let Some(id) = shutdown_id {
        let line = serde_json::to_string(&Envelope {
            id,
            body: Response::Ok,
        })?;
        let _ = out_tx.send(line).await;
    }
    drop(out_tx);
    let _ = tokio::time::timeout(Duration::from_secs(5), writer).await;
    Ok(())
}

async fn serve(backend: Backend, nodes: &Nodes, req: Request) -> Result<Response> {
    Ok(match req {
        Request::Spawn { nodes: which } => {
            let started =
                futures::future::join_all(which.iter().map(|_| Node::start(backend))).await;
            let mut spawned = Vec::with_capacity(which.len());
            let mut map = nodes.lock().map_err(|_| anyhow!("node map poisoned"))?;
            for (index, node) in which.iter().zip(started) {
                let node = node.with_context(|| format!("starting node {index}"))?;
                let peer = match &node {
                    Node::Ours(n) => n.peer_addr(),
                    Node::Rust(n) => n.peer_addr(),
                };
                spawned.push(Spawned { node: *index, peer });
                map.insert(*index, Arc::new(node));
            }
            Response::Spawned { nodes: spawned }
        }
        Request::AddPeers { node, peers } => {
            match &*get(nodes, node)? {
                Node::Ours(n) => n.add_peers(&peers).await?,
                Node::Rust(n) => n.add_peers(&peers).await?,
            }
            Response::Ok
        }
        Request::Bootstrap { node } => {
            let started = std::time::Instant::now();
            let (ok, stats, error) = match &*get(nodes, node)? {
                Node::Ours(n) => n.bootstrap().await,
                Node::Rust(n) => n.bootstrap().await?,
            };
            Response::Lookup {
                ok,
                stats,
                latency_us: micros(started.elapsed()),
                error,
            }
        }
        Request::FindPeer { node, target, cold } => {
            let (ok, stats, latency, error) = match &*get(nodes, node)? {
                Node::Ours(n) => n.find_peer(&target, cold).await?,
                Node::Rust(n) => n.find_peer(&target, cold).await?,
            };
            Response::Lookup {
                ok,
                stats,
                latency_us: micros(latency),
                error,
            }
        }
        Request::Tables { nodes: which } => {
            let mut sizes = Vec::with_capacity(which.len());
            for index in which {
                let size = match &*get(nodes, index)? {
                    Node::Ours(n) => n.table_size().await?,
                    Node::Rust(n) => n.table_size().await?,
                };
                sizes.push((index, size));
            }
            Response::Tables { sizes }
        }
        Request::Kill { nodes: which } => {
            let mut killed = Vec::with_capacity(which.len());
            {
                let mut map = nodes.lock().map_err(|_| anyhow!("node map poisoned"))?;
                for index in &which {
                    killed.push(
                        map.remove(index)
                            .ok_or_else(|| anyhow!("node {index} is not running"))?,
                    );
                }
            }
            futures::future::join_all(killed.iter().map(|n| n.stop())).await;
            Response::Ok
        }
        Request::Shutdown => Response::Ok,
    })
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
