//! Ownership and mode checks on the paths the daemon trusts (as ssh's `StrictModes` does).
//!
//! The data directory holds the identity, the configuration (which declares tunnels) and the
//! control socket. If another local user owns it, or may write to it, they can plant a
//! configuration or swap the socket, so the daemon refuses to start on it. The same goes for a
//! configuration file another user owns (root excepted) or may write to.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The uid this process acts as (its effective uid).
pub(crate) fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// Sets the process's umask to 0077: files and directories it creates are its user's alone.
pub(crate) fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

/// Why the daemon refuses a path.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DaemonError {
    /// The path belongs to another user.
    #[error(
        "refusing the {what} {path}: it is owned by uid {owner} (mode {mode:04o}), not by uid \
         {euid} this daemon runs as; use a directory of your own"
    )]
    NotOwned {
        /// "data directory", "configuration file", …
        what: &'static str,
        /// The path refused.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
        /// The daemon's effective uid.
        euid: u32,
    },
    /// Group or others may write to the path.
    #[error(
        "refusing the {what} {path}: its mode {mode:04o} (owner uid {owner}) lets group or others \
         write to it; run `chmod go-w {path}` first"
    )]
    Writable {
        /// "data directory", "configuration file", …
        what: &'static str,
        /// The path refused.
        path: PathBuf,
        /// Its owner.
        owner: u32,
        /// Its permission bits.
        mode: u32,
    },
    /// The path could not be inspected.
    #[error("cannot inspect the {what} {path}: {source}")]
    Inspect {
        /// "data directory", "configuration file", …
        what: &'static str,
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Checks that `path` (followed if it is a symbolic link, whose own owner is checked too) is
/// owned by `euid` — or by root, when `root_ok` — and not writable by group or others.
pub(crate) fn check_private(
    path: &Path,
    what: &'static str,
    euid: u32,
    root_ok: bool,
) -> Result<(), DaemonError> {
    let inspect = |source: std::io::Error| DaemonError::Inspect {
        what,
        path: path.to_owned(),
        source,
    };
    let link = std::fs::symlink_metadata(path).map_err(inspect)?;
    let target = if link.file_type().is_symlink() {
        // Whoever owns the link can point it elsewhere later.
        check_meta(path, what, &link, euid, root_ok, false)?;
        std::fs::metadata(path).map_err(inspect)?
    } else {
        link
    };
    check_meta(path, what, &target, euid, root_ok, true)
}

fn check_meta(
    path: &Path,
    what: &'static str,
    meta: &std::fs::Metadata,
    euid: u32,
    root_ok: bool,
    check_mode: bool,
) -> Result<(), DaemonError> {
    let (owner, mode) = (meta.uid(), meta.mode() & 0o7777);
    if owner != euid && !(root_ok && owner == 0) {
        return Err(DaemonError::NotOwned {
            what,
            path: path.to_owned(),
            owner,
            mode,
            euid,
        });
    }
    if check_mode && mode & 0o022 != 0 {
        return Err(DaemonError::Writable {
            what,
            path: path.to_owned(),
            owner,
            mode,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn group_or_world_writable_is_refused_with_path_owner_and_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let me = euid();
        for mode in [0o777, 0o770, 0o1777, 0o702] {
            chmod(&dir, mode);
            let err = check_private(&dir, "data directory", me, false).unwrap_err();
            let text = err.to_string();
            let DaemonError::Writable {
                what,
                path,
                owner,
                mode: seen,
            } = err
            else {
                panic!("{text}");
            };
            assert_eq!(
                (what, path, owner, seen),
                ("data directory", dir.clone(), me, mode)
            );
            assert!(text.contains(&dir.display().to_string()), "{text}");
            assert!(text.contains(&format!("mode {mode:04o}")), "{text}");
            assert!(text.contains(&format!("owner uid {me}")), "{text}");
        }
        for mode in [0o700, 0o750, 0o755] {
            chmod(&dir, mode);
            check_private(&dir, "data directory", me, false).unwrap();
        }
    }

    #[test]
    fn another_owner_is_refused_root_only_where_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("p2pnet.toml");
        std::fs::write(&file, "").unwrap();
        chmod(&file, 0o644);
        let owner = std::fs::metadata(&file).unwrap().uid();
        // Checked as if this process ran as someone else: no need for root to test the rule.
        let other = owner + 1;
        let err = check_private(&file, "configuration file", other, false).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&format!("owned by uid {owner}")), "{text}");
        let DaemonError::NotOwned {
            what,
            path,
            owner: seen,
            mode,
            euid,
        } = err
        else {
            panic!("{text}");
        };
        assert_eq!(
            (what, path, seen, mode, euid),
            ("configuration file", file.clone(), owner, 0o644, other)
        );
        // Root's files are trusted where allowed (a root-owned configuration in /etc).
        let by_root = check_private(&file, "configuration file", other, true);
        assert_eq!(by_root.is_ok(), owner == 0, "{by_root:?}");
    }

    #[test]
    fn a_link_to_a_private_dir_is_judged_by_both_ends() {
        let tmp = tempfile::tempdir().unwrap();
        let real = tmp.path().join("real");
        std::fs::create_dir(&real).unwrap();
        chmod(&real, 0o700);
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let me = euid();
        check_private(&link, "data directory", me, false).unwrap();
        chmod(&real, 0o777);
        assert!(matches!(
            check_private(&link, "data directory", me, false),
            Err(DaemonError::Writable { mode: 0o777, .. })
        ));
    }

    #[test]
    fn a_missing_path_is_an_inspect_error() {
        let tmp = tempfile::tempdir().unwrap();
        let gone = tmp.path().join("gone");
        let err = check_private(&gone, "data directory", euid(), false).unwrap_err();
        assert!(matches!(err, DaemonError::Inspect { .. }), "{err}");
        assert!(err.to_string().contains("gone"), "{err}");
    }
}
