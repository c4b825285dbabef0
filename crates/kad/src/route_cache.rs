//! The route cache: the routing table's peers and addresses in a small versioned JSON file, so a
//! restarted node does not depend on its bootstrap list (as Nebulas keeps `routetable.cache`).
//!
//! ```json
//! {"version":1,"peers":[{"id":"12D3KooW…","addrs":["/ip4/192.0.2.7/tcp/4001"]}]}
//! ```
//!
//! Written atomically (a temporary file next to it, synced, then renamed over it) and bounded
//! ([`MAX_CACHED_PEERS`] peers of at most [`MAX_CACHED_ADDRS`] addresses). Reading never fails:
//! a missing file is an empty cache; an oversized, corrupt or unknown-version file, or entries
//! that do not parse, are logged and skipped.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use p2pnet_host::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

/// The format version written and understood.
pub const VERSION: u32 = 1;
/// Most peers written (and read).
pub const MAX_CACHED_PEERS: usize = 2048;
/// Most addresses written (and read) per peer.
pub const MAX_CACHED_ADDRS: usize = 8;
/// Largest file read: bigger ones are ignored.
pub const MAX_FILE_SIZE: u64 = 2 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct File {
    version: u32,
    #[serde(default)]
    peers: Vec<CachedPeer>,
}

#[derive(Serialize, Deserialize)]
struct CachedPeer {
    id: String,
    #[serde(default)]
    addrs: Vec<String>,
}

/// The file's contents for `peers` (bounded as the module says).
pub fn encode(peers: &[(PeerId, Vec<Multiaddr>)]) -> Vec<u8> {
    let file = File {
        version: VERSION,
        peers: peers
            .iter()
            .take(MAX_CACHED_PEERS)
            .map(|(p, addrs)| CachedPeer {
                id: p.to_base58(),
                addrs: addrs
                    .iter()
                    .take(MAX_CACHED_ADDRS)
                    .map(|a| a.to_string())
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_vec(&file).unwrap_or_default()
}

/// The peers in a file's contents. A corrupt file or one of another version gives an error
/// saying why; entries that do not parse are skipped.
pub fn decode(bytes: &[u8]) -> Result<Vec<(PeerId, Vec<Multiaddr>)>, String> {
    let file: File =
        serde_json::from_slice(bytes).map_err(|e| format!("not a route cache: {e}"))?;
    if file.version != VERSION {
        return Err(format!(
            "route cache version {} (expected {VERSION})",
            file.version
        ));
    }
    let mut out = Vec::new();
    for p in file.peers.into_iter().take(MAX_CACHED_PEERS) {
        let Ok(id) = p.id.parse::<PeerId>() else {
            continue;
        };
        let addrs: Vec<Multiaddr> = p
            .addrs
            .iter()
            .take(MAX_CACHED_ADDRS)
            .filter_map(|a| a.parse().ok())
            .collect();
        if !addrs.is_empty() && !out.iter().any(|(q, _)| *q == id) {
            out.push((id, addrs));
        }
    }
    Ok(out)
}

/// Reads the cache at `path`: its peers, or none (with a warning) when it is unreadable,
/// oversized or corrupt. A missing file is no peers and no warning.
pub fn load(path: &Path) -> Vec<(PeerId, Vec<Multiaddr>)> {
    let file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "route cache unreadable; ignored");
            return Vec::new();
        }
    };
    let mut bytes = Vec::new();
    if let Err(e) = file.take(MAX_FILE_SIZE + 1).read_to_end(&mut bytes) {
        tracing::warn!(path = %path.display(), error = %e, "route cache unreadable; ignored");
        return Vec::new();
    }
    if bytes.len() as u64 > MAX_FILE_SIZE {
        tracing::warn!(path = %path.display(), max = MAX_FILE_SIZE, "route cache too large; ignored");
        return Vec::new();
    }
    match decode(&bytes) {
        Ok(peers) => peers,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "route cache corrupt; ignored");
            Vec::new()
        }
    }
}

fn temp_path(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".tmp");
    path.with_file_name(name)
}

/// Writes the cache of `peers` to `path` atomically: a temporary file next to it, synced, then
/// renamed over it.
pub fn save(path: &Path, peers: &[(PeerId, Vec<Multiaddr>)]) -> std::io::Result<()> {
    let bytes = encode(peers);
    let tmp = temp_path(path);
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    let r = write();
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peers(n: usize) -> Vec<(PeerId, Vec<Multiaddr>)> {
        (0..n)
            .map(|i| {
                let a: Multiaddr = format!("/ip4/192.0.2.{}/tcp/4001", i % 250)
                    .parse()
                    .unwrap();
                (PeerId::random(), vec![a])
            })
            .collect()
    }

    #[test]
    fn save_and_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes");
        assert!(load(&path).is_empty(), "missing file: no peers");
        let p = peers(5);
        save(&path, &p).unwrap();
        assert_eq!(load(&path), p);
        assert!(!temp_path(&path).exists());
        // Overwritten in place.
        let q = peers(2);
        save(&path, &q).unwrap();
        assert_eq!(load(&path), q);
    }

    #[test]
    fn bad_files_are_ignored_and_sizes_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("routes");
        std::fs::write(&path, b"\x00garbage{").unwrap();
        assert!(load(&path).is_empty());
        std::fs::write(&path, br#"{"version":99,"peers":[]}"#).unwrap();
        assert!(load(&path).is_empty());
        std::fs::write(&path, vec![b' '; MAX_FILE_SIZE as usize + 10]).unwrap();
        assert!(load(&path).is_empty());
        // Entries that do not parse are skipped, the rest kept.
        let good = PeerId::random();
        let text = format!(
            r#"{{"version":1,"peers":[{{"id":"nope","addrs":["/ip4/1.2.3.4/tcp/1"]}},{{"id":"{good}","addrs":["bad","/ip4/1.2.3.4/tcp/1"]}}]}}"#
        );
        assert_eq!(
            decode(text.as_bytes()).unwrap(),
            vec![(good, vec!["/ip4/1.2.3.4/tcp/1".parse().unwrap()])]
        );
        // Written bounded.
        let many = peers(MAX_CACHED_PEERS + 10);
        assert_eq!(decode(&encode(&many)).unwrap().len(), MAX_CACHED_PEERS);
        assert!((encode(&many).len() as u64) < MAX_FILE_SIZE);
    }
}
