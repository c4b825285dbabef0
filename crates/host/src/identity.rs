//! Node identity: Ed25519 key pairs stored as libp2p protobuf-encoded key files.

use std::path::Path;
use std::sync::Arc;

use libp2p_identity::Keypair;

use crate::HostError;

/// The largest key file we read; a protobuf Ed25519 key is 68 bytes.
const MAX_KEY_FILE_LEN: u64 = 4096;

/// Generates a fresh Ed25519 key pair.
pub fn generate_keypair() -> Keypair {
    Keypair::generate_ed25519()
}

/// Writes `keypair` to `path` in the libp2p protobuf key encoding, with mode 0600 on Unix.
///
/// The file is written to a temporary name beside `path` and renamed, so a crash never leaves a
/// half-written key.
pub fn save_keypair(keypair: &Keypair, path: &Path) -> Result<(), HostError> {
    let io_err = |source| HostError::KeyFileIo {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let bytes = keypair
        .to_protobuf_encoding()
        .map_err(|e| HostError::KeyFileMalformed {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io_err)?;
    }
    let tmp = path.with_extension("tmp");
    {
        use std::io::Write;
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let mut file = opts.open(&tmp).map_err(io_err)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(std::fs::Permissions::from_mode(0o600))
                .map_err(io_err)?;
        }
        file.write_all(&bytes).map_err(io_err)?;
        file.sync_all().map_err(io_err)?;
    }
    std::fs::rename(&tmp, path).map_err(io_err)
}

/// Reads a key pair written by [`save_keypair`] (or any libp2p protobuf-encoded key).
///
/// A file that is not a valid key is [`HostError::KeyFileMalformed`] naming the file.
pub fn load_keypair(path: &Path) -> Result<Keypair, HostError> {
    let io_err = |source| HostError::KeyFileIo {
        path: path.to_owned(),
        source: Arc::new(source),
    };
    let malformed = |reason: String| HostError::KeyFileMalformed {
        path: path.to_owned(),
        reason,
    };
    let len = std::fs::metadata(path).map_err(io_err)?.len();
    if len > MAX_KEY_FILE_LEN {
        return Err(malformed(format!(
            "{len} bytes, a key file has at most {MAX_KEY_FILE_LEN}"
        )));
    }
    let bytes = std::fs::read(path).map_err(io_err)?;
    Keypair::from_protobuf_encoding(&bytes).map_err(|e| malformed(e.to_string()))
}

/// Loads the key pair at `path`, or generates one and saves it there when the file does not exist.
pub fn load_or_generate_keypair(path: &Path) -> Result<Keypair, HostError> {
    match path.try_exists() {
        Ok(true) => load_keypair(path),
        Ok(false) => {
            let keypair = generate_keypair();
            save_keypair(&keypair, path)?;
            tracing::info!(path = %path.display(), peer = %keypair.public().to_peer_id(), "generated a new identity");
            Ok(keypair)
        }
        Err(source) => Err(HostError::KeyFileIo {
            path: path.to_owned(),
            source: Arc::new(source),
        }),
    }
}
