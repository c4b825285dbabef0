//! `p2pnet daemon`: a node on the network until interrupted.

use std::io::ErrorKind;
use std::path::PathBuf;

use anyhow::{Context, Result};
use p2pnet_host::{Host, HostConfig, HostError, Multiaddr, load_or_generate_keypair, with_p2p};

/// The address a node listens on when told nothing else.
const DEFAULT_LISTEN: &str = "/ip4/0.0.0.0/tcp/4001";

#[derive(clap::Args)]
pub(crate) struct DaemonArgs {
    /// Listen address (repeatable). Default /ip4/0.0.0.0/tcp/4001.
    #[arg(long = "listen", value_name = "ADDR")]
    listen: Vec<Multiaddr>,
    /// A peer to connect to at start, as `/ip4/…/tcp/…/p2p/<id>` (repeatable).
    #[arg(long = "bootstrap", value_name = "ADDR")]
    bootstrap: Vec<Multiaddr>,
}

/// Replaces the TCP port of `addr` with 0.
fn any_port(addr: &Multiaddr) -> Multiaddr {
    addr.iter()
        .map(|p| match p {
            p2pnet_host::Protocol::Tcp(_) => p2pnet_host::Protocol::Tcp(0),
            other => other,
        })
        .collect()
}

async fn listen(host: &Host, addr: Multiaddr, explicit: bool) -> Result<()> {
    match host.listen_on(addr.clone()).await {
        Ok(_) => Ok(()),
        Err(HostError::ListenFailed { source, .. })
            if !explicit && source.kind() == ErrorKind::AddrInUse =>
        {
            let fallback = any_port(&addr);
            tracing::warn!(%addr, %fallback, "default port is taken; listening on a free port instead");
            host.listen_on(fallback)
                .await
                .map(drop)
                .context("listening on a free port")
        }
        Err(e) => Err(e).with_context(|| format!("cannot listen on {addr}")),
    }
}

pub(crate) async fn run(data_dir: PathBuf, args: DaemonArgs) -> Result<()> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("creating the data directory {}", data_dir.display()))?;
    let keypair = load_or_generate_keypair(&data_dir.join("identity.key"))?;
    let host = Host::new(keypair, HostConfig::default())?;

    let explicit = !args.listen.is_empty();
    let addrs = if explicit {
        args.listen
    } else {
        vec![DEFAULT_LISTEN.parse().context("default listen address")?]
    };
    for addr in addrs {
        if let Err(e) = listen(&host, addr, explicit).await {
            host.shutdown().await;
            return Err(e);
        }
    }
    println!("peer id: {}", host.peer_id());
    for addr in host.listen_addrs() {
        println!("listening: {}", with_p2p(&addr, host.peer_id()));
    }
    for addr in args.bootstrap {
        match host.dial(addr.clone()).await {
            Ok(peer) => tracing::info!(%peer, %addr, "connected to bootstrap peer"),
            Err(e) => tracing::warn!(%addr, error = %e, "bootstrap peer unreachable"),
        }
    }

    wait_for_signal().await?;
    tracing::info!("stopping");
    host.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn wait_for_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.context("waiting for Ctrl-C"),
        _ = term.recv() => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_default_port_falls_back_to_a_free_one() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let addr: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap();
        let host = Host::new(p2pnet_host::generate_keypair(), HostConfig::default()).unwrap();
        // Asked for explicitly: an error.
        assert!(listen(&host, addr.clone(), true).await.is_err());
        // The default: falls back to a free port.
        listen(&host, addr, false).await.unwrap();
        let bound = host.listen_addrs();
        assert_eq!(bound.len(), 1);
        assert_ne!(bound[0].to_string(), format!("/ip4/127.0.0.1/tcp/{port}"));
        host.shutdown().await;
    }
}
