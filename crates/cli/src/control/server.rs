//! The daemon's end of the control socket: `<data-dir>/p2pnet.sock`, mode 0600, and only
//! connections from the daemon's own user are served.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use p2pnet_dispatcher::SubscriberOptions;
use p2pnet_forward::{Direction, ExistingStreams, ListenerFilter, ListenerInfo, Origin, StreamId};
use p2pnet_host::{Multiaddr, PeerId, with_p2p};
use p2pnet_messaging::Priority;
use p2pnet_netservice::{ListenTunnel, NetService};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::protocol::{MAX_LINE, ProtocolError, Request, Response, parse_request};

/// How long `send` waits for a message session with a peer it just dialed.
const SESSION_WAIT: Duration = Duration::from_secs(10);

/// The control socket, bound but not yet serving.
pub(crate) struct Bound {
    listener: UnixListener,
    path: PathBuf,
    uid: u32,
}

/// Binds the control socket at `path`. A socket left by a dead daemon is replaced; one that
/// answers means a daemon is running, which is an error.
pub(crate) fn bind(path: &Path) -> Result<Bound> {
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            bail!(
                "a p2pnet daemon is already running (its control socket {} answers)",
                path.display()
            );
        }
        tracing::info!(path = %path.display(), "removing a stale control socket");
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path)
        .with_context(|| format!("binding the control socket {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("restricting {}", path.display()))?;
    // Served: the user this process runs as, never whoever owns the file at that path (which
    // someone able to write to the directory could have swapped).
    Ok(Bound {
        listener,
        path: path.to_owned(),
        uid: crate::strict::euid(),
    })
}

/// What a connection handler needs.
struct Ctx {
    svc: NetService,
    config_path: PathBuf,
    uid: u32,
}

/// A serving control socket; [`Server::shutdown`] stops it and removes the socket file.
pub(crate) struct Server {
    path: PathBuf,
    stop: CancellationToken,
    tasks: TaskTracker,
}

impl Bound {
    /// Gives the socket up without serving (the node did not start).
    pub(crate) fn close(self) {
        drop(self.listener);
        let _ = std::fs::remove_file(&self.path);
    }

    /// Starts serving `svc`; `--persist` writes tunnels to `config_path`.
    pub(crate) fn serve(self, svc: NetService, config_path: PathBuf) -> Server {
        let stop = CancellationToken::new();
        let tasks = TaskTracker::new();
        let ctx = std::sync::Arc::new(Ctx {
            svc,
            config_path,
            uid: self.uid,
        });
        let (listener, task_stop, conn_tasks) = (self.listener, stop.clone(), tasks.clone());
        tasks.spawn(async move {
            loop {
                let stream = tokio::select! {
                    _ = task_stop.cancelled() => return,
                    r = listener.accept() => match r {
                        Ok((stream, _)) => stream,
                        Err(e) => {
                            tracing::warn!(error = %e, "control socket accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    },
                };
                conn_tasks.spawn(serve_conn(stream, ctx.clone(), task_stop.clone()));
            }
        });
        Server {
            path: self.path,
            stop,
            tasks,
        }
    }
}

impl Server {
    pub(crate) async fn shutdown(self) {
        self.stop.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(2), self.tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!("control connections did not end within 2 s");
        }
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "could not remove the control socket");
        }
    }
}

async fn serve_conn(stream: UnixStream, ctx: std::sync::Arc<Ctx>, stop: CancellationToken) {
    match stream.peer_cred() {
        Ok(cred) if cred.uid() == ctx.uid => {}
        Ok(cred) => {
            tracing::warn!(
                uid = cred.uid(),
                "control connection from another user refused"
            );
            return;
        }
        Err(e) => {
            tracing::warn!(error = %e, "control connection without credentials refused");
            return;
        }
    }
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    loop {
        let mut line = Vec::new();
        let mut bounded = (&mut rd).take(MAX_LINE as u64);
        let read = tokio::select! {
            _ = stop.cancelled() => return,
            r = bounded.read_until(b'\n', &mut line) => r,
        };
        match read {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if line.len() >= MAX_LINE && !line.ends_with(b"\n") {
            // The rest of an over-long line cannot be told from a next request: answer and hang up.
            let too_long = Response::err(ProtocolError::TooLong { max: MAX_LINE });
            let _ = wr.write_all(too_long.to_line().as_bytes()).await;
            return;
        }
        let response = match parse_request(&line) {
            Ok(None) => continue,
            Err(e) => Response::err(e),
            Ok(Some(Request::Subscribe { kind })) => {
                subscribe(&ctx.svc, &kind, rd, wr, stop).await;
                return;
            }
            Ok(Some(request)) => {
                tracing::debug!(?request, "control request");
                match handle(&ctx, request).await {
                    Ok(result) => Response::ok(result),
                    Err(e) => Response::err(format!("{e:#}")),
                }
            }
        };
        if wr.write_all(response.to_line().as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Streams messages of `kind` to the client until it hangs up or the daemon stops.
async fn subscribe(
    svc: &NetService,
    kind: &str,
    mut rd: BufReader<OwnedReadHalf>,
    mut wr: OwnedWriteHalf,
    stop: CancellationToken,
) {
    let mut sub = match svc.register(&[kind], SubscriberOptions::new().name("control")) {
        Ok(sub) => sub,
        Err(e) => {
            let _ = wr.write_all(Response::err(e).to_line().as_bytes()).await;
            return;
        }
    };
    let first = Response::ok(json!({ "subscribed": kind }));
    if wr.write_all(first.to_line().as_bytes()).await.is_err() {
        return;
    }
    let mut scratch = [0u8; 256];
    loop {
        let line = tokio::select! {
            _ = stop.cancelled() => return,
            r = rd.read(&mut scratch) => match r {
                Ok(0) | Err(_) => return, // the client hung up
                Ok(_) => continue,
            },
            m = sub.recv_async() => match m {
                Ok(m) => Response::ok(json!({
                    "peer": m.peer.to_string(),
                    "kind": m.kind.as_str(),
                    "data": String::from_utf8_lossy(&m.payload),
                })),
                Err(e) => Response::err(e),
            },
        };
        if wr.write_all(line.to_line().as_bytes()).await.is_err() || !line.ok {
            return;
        }
    }
}

async fn handle(ctx: &Ctx, request: Request) -> Result<Value> {
    let svc = &ctx.svc;
    Ok(match request {
        Request::Id => json!({
            "peer_id": svc.peer_id().to_string(),
            "listen_addrs": svc.listen_addrs().iter()
                .map(|a| with_p2p(a, svc.peer_id()).to_string()).collect::<Vec<_>>(),
        }),
        Request::Peers => {
            let sessions = svc.peers();
            let mut conns = svc.host().connections(None);
            conns.sort_by_key(|c| (c.peer.to_string(), c.remote_addr.to_string()));
            Value::Array(
                conns
                    .iter()
                    .map(|c| {
                        json!({
                            "peer_id": c.peer.to_string(),
                            "addr": c.remote_addr.to_string(),
                            "direction": match c.direction {
                                p2pnet_host::Direction::Inbound => "inbound",
                                p2pnet_host::Direction::Outbound => "outbound",
                            },
                            "transport": c.transport.to_string(),
                            "session": sessions.contains(&c.peer),
                        })
                    })
                    .collect(),
            )
        }
        Request::Connect { addr } => {
            let addr: Multiaddr = addr
                .parse()
                .with_context(|| format!("bad address {addr}"))?;
            let peer = svc.host().dial(addr).await?;
            json!({ "peer_id": peer.to_string() })
        }
        Request::Disconnect { peer } => {
            let peer = svc.add_peer(&peer)?;
            let closed = svc.close_peer(&peer, "asked through the control socket");
            json!({ "peer_id": peer.to_string(), "connections_closed": closed })
        }
        Request::Ping { peer } => {
            let peer = svc.add_peer(&peer)?;
            let rtt = svc.host().ping(peer).await?;
            json!({ "peer_id": peer.to_string(), "rtt_ms": rtt.as_secs_f64() * 1e3 })
        }
        Request::Forward {
            protocol,
            listen_addr,
            peer,
            persist,
        } => {
            let info = svc.forward(&protocol, &listen_addr, &peer).await?;
            persisted(ctx, listener_json(&info), persist)?
        }
        Request::Listen {
            protocol,
            target_addr,
            report_peer_id,
            allow,
            persist,
        } => {
            let info = svc.listen(ListenTunnel {
                protocol,
                target_addr,
                report_peer_id,
                allow,
            })?;
            persisted(ctx, listener_json(&info), persist)?
        }
        Request::Ls => {
            let mut listeners = svc.list_listeners();
            listeners.sort_by_key(|l| l.id);
            Value::Array(listeners.iter().map(listener_json).collect())
        }
        Request::Streams => {
            let mut streams = svc.list_streams();
            streams.sort_by_key(|s| s.id);
            Value::Array(
                streams
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.id.to_string(),
                            "protocol": s.protocol,
                            "origin": match s.origin { Origin::Local => "local", Origin::Remote => "remote" },
                            "local_addr": s.local_addr.to_string(),
                            "peer_id": s.remote_peer.to_string(),
                            "remote_addr": s.remote_addr.to_string(),
                            "bytes_in": s.bytes_in,
                            "bytes_out": s.bytes_out,
                        })
                    })
                    .collect(),
            )
        }
        Request::Close {
            all,
            protocol,
            listen_addr,
            target_addr,
        } => {
            let parse = |a: Option<String>| -> Result<Option<Multiaddr>> {
                a.map(|a| a.parse().with_context(|| format!("bad address {a}")))
                    .transpose()
            };
            let filter = ListenerFilter {
                protocol,
                listen_addr: parse(listen_addr)?,
                target_addr: parse(target_addr)?,
            };
            if !all && filter == ListenerFilter::all() {
                bail!("say which listeners: all, or by protocol, listen or target address");
            }
            let closed = svc.close_listeners(&filter, ExistingStreams::Keep);
            json!({ "closed": closed })
        }
        Request::StreamClose { id } => {
            let n: u64 = id
                .trim_start_matches('s')
                .parse()
                .with_context(|| format!("bad stream id {id} (expected e.g. s3)"))?;
            if !svc.close_stream(StreamId(n)) {
                bail!("no stream {}", StreamId(n));
            }
            json!({ "closed": StreamId(n).to_string() })
        }
        Request::Send { peer, kind, data } => {
            let peer = svc.add_peer(&peer)?;
            wait_for_session(svc, peer).await?;
            svc.send_to_peer(&peer, &kind, data.into_bytes(), Priority::Normal)?;
            json!({ "peer_id": peer.to_string(), "sent": true })
        }
        Request::Broadcast { kind, data } => {
            let report = svc.broadcast(&kind, data.into_bytes(), Priority::Normal)?;
            json!({
                "reached": report.reached.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "failed": report.failed.iter()
                    .map(|(p, e)| json!({ "peer_id": p.to_string(), "error": e.to_string() }))
                    .collect::<Vec<_>>(),
            })
        }
        Request::Subscribe { .. } => bail!("subscribe is served on its own connection"),
        Request::Metrics => json!({ "text": svc.prometheus_text() }),
        Request::DhtFindPeer { peer } => {
            let (peer, _) = p2pnet_netservice::parse_peer("peer", &peer)?;
            let found = svc.discovery()?.find_peer(peer).await?;
            json!({
                "peer_id": found.peer.to_string(),
                "addrs": found.addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "hops": found.stats.hops,
            })
        }
        Request::DhtGet { key } => {
            let found = svc.discovery()?.get_record(key.as_bytes(), 1).await?;
            json!({
                "key": key,
                "records": found.records.iter().map(|r| json!({
                    "peer_id": r.peer.to_string(),
                    "value": String::from_utf8_lossy(&r.value),
                })).collect::<Vec<_>>(),
                "hops": found.stats.hops,
            })
        }
        Request::DhtPut { key, value } => {
            let out = svc
                .discovery()?
                .put_record(key.as_bytes(), value.into_bytes())
                .await?;
            put_json(&key, &out)
        }
        Request::DhtProvide { key } => {
            let out = svc.discovery()?.provide(key.as_bytes()).await?;
            put_json(&key, &out)
        }
        Request::DhtProviders { key } => {
            let found = svc.discovery()?.providers(key.as_bytes()).await?;
            json!({
                "key": key,
                "providers": found.providers.iter().map(|(p, addrs)| json!({
                    "peer_id": p.to_string(),
                    "addrs": addrs.iter().map(ToString::to_string).collect::<Vec<_>>(),
                })).collect::<Vec<_>>(),
                "hops": found.stats.hops,
            })
        }
        Request::DhtTable => {
            let mut table = svc.discovery()?.routing_table().await?;
            table.sort_by_key(|e| (std::cmp::Reverse(e.bucket), e.peer.to_string()));
            Value::Array(
                table
                    .iter()
                    .map(|e| {
                        json!({
                            "bucket": e.bucket,
                            "peer_id": e.peer.to_string(),
                            "addrs": e.addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(" "),
                        })
                    })
                    .collect(),
            )
        }
    })
}

/// Saves the tunnels to the daemon's configuration file when asked.
fn persisted(ctx: &Ctx, mut result: Value, persist: bool) -> Result<Value> {
    if persist {
        ctx.svc
            .persist_tunnels(&ctx.config_path)
            .with_context(|| format!("saving to {}", ctx.config_path.display()))?;
        result["persisted"] = json!(ctx.config_path.display().to_string());
    }
    Ok(result)
}

fn listener_json(l: &ListenerInfo) -> Value {
    json!({
        "id": l.id.to_string(),
        "protocol": l.protocol,
        "direction": match l.direction { Direction::Local => "forward", Direction::Remote => "listen" },
        "listen_addr": l.listen_addr.to_string(),
        "target_addr": l.target_addr.to_string(),
    })
}

/// Dials `peer` if needed and waits (bounded) until a message session with it is open.
async fn wait_for_session(svc: &NetService, peer: PeerId) -> Result<()> {
    svc.host().connect(peer).await?;
    let deadline = tokio::time::Instant::now() + SESSION_WAIT;
    while !svc.peers().contains(&peer) {
        if tokio::time::Instant::now() >= deadline {
            bail!("no message session with {peer} after {SESSION_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// What a put or a provide reports.
fn put_json(key: &str, out: &p2pnet_kad::PutOutcome) -> Value {
    json!({
        "key": key,
        "stored_at": out.stored_at.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "failed": out.failed.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "hops": out.stats.hops,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_served_uid_is_the_effective_uid() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("p2pnet.sock");
        let bound = bind(&path).unwrap();
        assert_eq!(bound.uid, rustix::process::geteuid().as_raw());
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        bound.close();
        assert!(!path.exists());
    }
}
