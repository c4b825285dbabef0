//! `p2pnet daemon`: a node (`NetService`) on the network until interrupted.
//!
//! Configuration comes from `--config FILE`, else `<data-dir>/p2pnet.toml` when it exists, else
//! the defaults; `--listen`, `--bootstrap` and `--metrics` override it. The identity is kept in
//! `<data-dir>/identity.key` unless the configuration names another file. The control socket is
//! `<data-dir>/p2pnet.sock` (see [`crate::control`]).

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use p2pnet_host::{Multiaddr, Protocol, with_p2p};
use p2pnet_netservice::{NetConfig, NetService};

use crate::{control, strict};

/// The configuration file looked for in the data directory.
const CONFIG_FILE: &str = "p2pnet.toml";

#[derive(clap::Args)]
pub(crate) struct DaemonArgs {
    /// Configuration file (TOML). Default `<data-dir>/p2pnet.toml` when it exists.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen address (repeatable); overrides the configuration. Default /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<Multiaddr>,
    /// A peer to connect to at start, as `/ip4/…/tcp/…/p2p/<id>` (repeatable); overrides the
    /// configuration.
    #[arg(long = "bootstrap", value_name = "ADDR")]
    bootstrap: Vec<Multiaddr>,
    /// Serve Prometheus metrics on this local address (e.g. 127.0.0.1:9464).
    #[arg(long, value_name = "ADDR")]
    metrics: Option<String>,
    /// Print the whole default configuration and exit.
    #[arg(long)]
    print_default_config: bool,
}

/// Replaces the TCP or UDP port of `addr` with 0.
fn any_port(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            Protocol::Tcp(_) => Protocol::Tcp(0),
            Protocol::Udp(_) => Protocol::Udp(0),
            other => other,
        })
        .collect()
}

/// Whether the TCP (or, for QUIC, UDP) port of `addr` is already taken by someone else.
fn port_taken(addr: &Multiaddr) -> bool {
    let mut it = addr.iter();
    let ip: std::net::IpAddr = match it.next() {
        Some(Protocol::Ip4(ip)) => ip.into(),
        Some(Protocol::Ip6(ip)) => ip.into(),
        _ => return false,
    };
    match it.next() {
        Some(Protocol::Tcp(port)) if port != 0 => {
            std::net::TcpListener::bind((ip, port)).is_err_and(|e| e.kind() == ErrorKind::AddrInUse)
        }
        Some(Protocol::Udp(port)) if port != 0 => {
            std::net::UdpSocket::bind((ip, port)).is_err_and(|e| e.kind() == ErrorKind::AddrInUse)
        }
        _ => false,
    }
}

/// Listen addresses the user did not choose fall back to a free port when theirs is taken, with
/// a clear log line; chosen ones are kept (and fail at start if taken).
fn resolve_listen(addrs: Vec<String>, chosen: bool) -> Vec<String> {
    if chosen {
        return addrs;
    }
    addrs
        .into_iter()
        .map(|a| match a.parse::<Multiaddr>() {
            Ok(addr) if port_taken(&addr) => {
                let fallback = any_port(&addr);
                tracing::warn!(%addr, %fallback, "default port is taken; listening on a free port instead");
                fallback.to_string()
            }
            _ => a,
        })
        .collect()
}

fn load_config(data_dir: &Path, args: &DaemonArgs) -> Result<(NetConfig, bool)> {
    let in_data_dir = data_dir.join(CONFIG_FILE);
    let file = match &args.config {
        Some(path) => Some(path.as_path()),
        None if in_data_dir.exists() => Some(in_data_dir.as_path()),
        None => None,
    };
    let (mut config, from_file) = match file {
        Some(path) => {
            // It declares tunnels: another user must not have written it.
            strict::check_private(path, "configuration file", strict::euid(), true)?;
            (NetConfig::load(path)?, true)
        }
        None => (NetConfig::default(), false),
    };
    if config.identity_key.is_none() {
        config.identity_key = Some("identity.key".into());
    }
    if config.discovery.route_cache.is_none() {
        config.discovery.route_cache = Some("routes".into());
    }
    let chosen = !args.listen.is_empty() || from_file;
    if !args.listen.is_empty() {
        config.host.listen_addrs = args.listen.iter().map(ToString::to_string).collect();
    }
    if !args.bootstrap.is_empty() {
        config.bootstrap = args.bootstrap.iter().map(ToString::to_string).collect();
    }
    if let Some(m) = &args.metrics {
        config.metrics_addr = Some(m.clone());
    }
    config.host.listen_addrs =
        resolve_listen(std::mem::take(&mut config.host.listen_addrs), chosen);
    config.validate()?;
    Ok((config, chosen))
}

pub(crate) async fn run(data_dir: PathBuf, args: DaemonArgs) -> Result<()> {
    if args.print_default_config {
        print!("{}", NetConfig::default_toml());
        return Ok(());
    }
    // Installed before anything starts: a SIGTERM that arrives while the node is still starting
    // (a supervisor giving up early) then stops it cleanly instead of killing the process.
    let signals = Signals::install()?;
    // Whatever the daemon creates (the persisted configuration, the socket before its chmod) is
    // its user's alone, and passes the checks below at the next start.
    strict::private_umask();
    prepare_data_dir(&data_dir)?;
    let (config, _) = load_config(&data_dir, &args)?;
    let config_path = args
        .config
        .clone()
        .unwrap_or_else(|| data_dir.join(CONFIG_FILE));
    // Bound before the node starts, so that a second daemon on the same data directory stops
    // here with a clear error instead of taking ports.
    let control = control::server::bind(&control::socket_path(&data_dir))?;
    let svc = NetService::new_in(config, &data_dir)?;
    if let Err(e) = svc.start().await {
        control.close();
        return Err(e).context("starting the node");
    }
    let server = control.serve(svc.clone(), config_path);
    println!("peer id: {}", svc.peer_id());
    for addr in svc.listen_addrs() {
        println!("listening: {}", with_p2p(&addr, svc.peer_id()));
    }
    if let Some(m) = svc.metrics_addr() {
        println!("metrics: http://{m}/metrics");
    }
    println!("control: {}", control::socket_path(&data_dir).display());

    let signal = signals.wait().await;
    tracing::info!("stopping");
    server.shutdown().await;
    svc.stop().await;
    tracing::info!("stopped");
    signal
}

/// Creates the data directory (mode 0700) if it is missing, then refuses it unless it belongs
/// to this user and neither group nor others may write to it: whoever can write there can swap
/// the control socket or plant a configuration with tunnels.
fn prepare_data_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating the data directory {}", dir.display()))?;
    }
    strict::check_private(dir, "data directory", strict::euid(), false)?;
    Ok(())
}

/// SIGINT and SIGTERM, caught from the moment they are installed.
struct Signals {
    int: tokio::signal::unix::Signal,
    term: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Self> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Self {
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
        })
    }

    /// Waits for the first of them (also one that arrived before this call).
    async fn wait(mut self) -> Result<()> {
        tokio::select! {
            _ = self.int.recv() => Ok(()),
            _ = self.term.recv() => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_default_port_falls_back_to_a_free_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let addr = format!("/ip4/127.0.0.1/tcp/{port}");
        // Chosen by the user: kept, so that start fails with a clear error.
        assert_eq!(resolve_listen(vec![addr.clone()], true), vec![addr.clone()]);
        // The default: falls back to a free port.
        assert_eq!(
            resolve_listen(vec![addr], false),
            vec!["/ip4/127.0.0.1/tcp/0".to_owned()]
        );
        // A free port is kept as it is.
        let free = "/ip4/127.0.0.1/tcp/0".to_owned();
        assert_eq!(resolve_listen(vec![free.clone()], false), vec![free]);
    }

    #[test]
    fn a_taken_default_udp_port_falls_back_too() {
        let taken = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let addr = format!("/ip4/127.0.0.1/udp/{port}/quic-v1");
        assert_eq!(resolve_listen(vec![addr.clone()], true), vec![addr.clone()]);
        assert_eq!(
            resolve_listen(vec![addr], false),
            vec!["/ip4/127.0.0.1/udp/0/quic-v1".to_owned()]
        );
    }
}
