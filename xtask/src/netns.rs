//! `cargo xtask netns`: the multi-host test in network namespaces (`tests/tests/netns.rs`).
//! Skips, saying why, where namespaces cannot be created (not root, no `ip`, a sandbox).

use std::process::Command;

use anyhow::Result;

/// Why namespaces cannot be used here, or `None` when they can.
fn unavailable() -> Option<String> {
    let probe = format!("p2pnet-probe-{}", std::process::id());
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Err(e) => Some(format!("the `ip` command is not available ({e})")),
        Ok(out) if !out.status.success() => Some(format!(
            "cannot create a network namespace: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Ok(_) => {
            let _ = Command::new("ip").args(["netns", "del", &probe]).status();
            None
        }
    }
}

pub(crate) fn run() -> Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("xtask netns: SKIPPED: {why}");
        return Ok(());
    }
    crate::run_ignored_tests("netns", "the network-namespace test")?;
    eprintln!("xtask netns: ok");
    Ok(())
}
