//! A node in its own process for fault tests: runs a `NetService` from a TOML file (relative
//! paths in it are taken from the file's directory), prints `peer id: <id>` once started, and
//! runs until killed or interrupted.
#![allow(clippy::print_stdout)] // its stdout is the test's interface

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .ok_or("usage: p2pnet-test-node CONFIG.toml")?
        .into();
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    let config = p2pnet_netservice::NetConfig::load(&path)?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let svc = p2pnet_netservice::NetService::new_in(config, &dir)?;
        svc.start().await?;
        println!("peer id: {}", svc.peer_id());
        let _ = tokio::signal::ctrl_c().await;
        svc.stop().await;
        Ok(())
    })
}
