//! The coordinator's side of the workers: it starts `p2pnet-sim worker` processes (the binary
//! re-executing itself), sends them requests and matches their responses. Every call has a
//! timeout; [`WorkerPool::close`] shuts the workers down and kills any that do not exit, and the
//! children are killed on drop too, so no worker outlives the run, whatever ended it.

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Mutex as AsyncMutex, oneshot};

use crate::proto::{Backend, Envelope, Request, Response};

/// How long a worker may take to exit after `Shutdown`.
const EXIT_TIMEOUT: Duration = Duration::from_secs(40);

type Waiters = Arc<Mutex<HashMap<u64, oneshot::Sender<Response>>>>;

struct Worker {
    child: Child,
    stdin: AsyncMutex<Option<ChildStdin>>,
    waiters: Waiters,
    reader: tokio::task::JoinHandle<()>,
}

/// A set of worker processes, each running one backend's nodes.
pub(crate) struct WorkerPool {
    workers: Vec<Worker>,
    next_id: AtomicU64,
}

impl WorkerPool {
    /// Starts `count` workers running `backend`.
    pub(crate) fn start(count: usize, backend: Backend, log: &str) -> Result<WorkerPool> {
        let exe = std::env::current_exe().context("locating the sim binary")?;
        // rust-libp2p's kad warns on every automatic bootstrap of a node without peers (each
        // node, before the plan gives it its bootstrap peers): noise, not news.
        let log = if backend == Backend::RustLibp2p && log == "warn" {
            "warn,libp2p_kad=error"
        } else {
            log
        };
        let mut workers = Vec::with_capacity(count);
        for index in 0..count {
            let backend_arg = match backend {
                Backend::Ours => "ours",
                Backend::RustLibp2p => "rust-libp2p",
            };
            let mut child = Command::new(&exe)
                .args(["worker", "--backend", backend_arg, "--index"])
                .arg(index.to_string())
                .env("P2PNET_SIM_LOG", log)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting worker {index}"))?;
            let stdin = child.stdin.take().context("worker stdin")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let waiters: Waiters = Arc::default();
            let w = waiters.clone();
            let reader = tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    match serde_json::from_str::<Envelope<Response>>(&line) {
                        Ok(env) => {
                            let tx = w.lock().ok().and_then(|mut m| m.remove(&env.id));
                            if let Some(tx) = tx {
                                let _ = tx.send(env.body);
                            }
                        }
                        Err(e) => tracing::warn!(worker = index, %e, "unreadable worker line"),
                    }
                }
                // The worker is gone: fail every call still waiting (their senders drop).
                if let Ok(mut m) = w.lock() {
                    m.clear();
                }
            });
            workers.push(Worker {
                child,
                stdin: AsyncMutex::new(Some(stdin)),
                waiters,
                reader,
            });
        }
        Ok(WorkerPool {
            workers,
            next_id: AtomicU64::new(1),
        })
    }

    /// How many workers there are.
    pub(crate) fn len(&self) -> usize {
        self.workers.len()
    }

    /// Sends `req` to worker `index` and waits up to `timeout` for its response. A worker's
    /// `Error` response, a timeout and a dead worker are all errors.
    pub(crate) async fn call(
        &self,
        index: usize,
        req: Request,
        timeout: Duration,
    ) -> Result<Response> {
        let worker = self.workers.get(index).context("no such worker")?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        worker
            .waiters
            .lock()
            .map_err(|_| anyhow!("waiters poisoned"))?
            .insert(id, tx);
        let mut line = serde_json::to_string(&Envelope { id, body: req })?;
        line.push('\n');
        {
            let mut stdin = worker.stdin.lock().await;
            let stdin = stdin.as_mut().context("worker stdin closed")?;
            stdin
                .write_all(line.as_bytes())
                .await
                .with_context(|| format!("writing to worker {index}"))?;
            stdin.flush().await?;
        }
        let answer = tokio::time::timeout(timeout, rx).await;
        if let Ok(mut m) = worker.waiters.lock() {
            m.remove(&id);
        }
        match answer {
            Err(_) => bail!("worker {index} did not answer within {timeout:?}"),
            Ok(Err(_)) => bail!("worker {index} exited"),
            Ok(Ok(Response::Error { message })) => bail!("worker {index}: {message}"),
            Ok(Ok(r)) => Ok(r),
        }
    }

    /// Shuts every worker down (they stop their nodes), waits for them to exit, and kills those
    /// that do not within the timeout. Returns an error if a worker had to be killed or failed.
    pub(crate) async fn close(mut self) -> Result<()> {
        let mut problems = Vec::new();
        for i in 0..self.workers.len() {
            if let Err(e) = self.call(i, Request::Shutdown, EXIT_TIMEOUT).await {
                problems.push(format!("shutdown of worker {i}: {e:#}"));
            }
        }
        for (i, w) in self.workers.iter_mut().enumerate() {
            // Closing stdin makes a worker that missed the request exit too.
            w.stdin.lock().await.take();
            match tokio::time::timeout(EXIT_TIMEOUT, w.child.wait()).await {
                Ok(Ok(status)) if status.success() => {}
                Ok(Ok(status)) => problems.push(format!("worker {i} exited with {status}")),
                Ok(Err(e)) => problems.push(format!("waiting for worker {i}: {e}")),
                Err(_) => {
                    problems.push(format!("worker {i} did not exit; killed"));
                    let _ = w.child.kill().await;
                }
            }
            w.reader.abort();
        }
        if problems.is_empty() {
            Ok(())
        } else {
            bail!("{}", problems.join("; "))
        }
    }
}
