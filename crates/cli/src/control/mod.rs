//! The control API: a Unix socket in the data directory that only the owner can use.

pub(crate) mod client;
pub(crate) mod server;

pub(crate) use p2pnet_cli::protocol;

use std::path::{Path, PathBuf};

/// The control socket's file name in the data directory.
pub(crate) const SOCKET_FILE: &str = "p2pnet.sock";

/// Where the daemon using `data_dir` listens for control connections.
pub(crate) fn socket_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SOCKET_FILE)
}
