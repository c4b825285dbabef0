//! The `p2pnet daemon` binary end to end: first start, identity kept across restarts, the
//! fallback from a taken default port, bootstrap, and a clean stop on SIGTERM (which removes the
//! control socket).

mod common;

use std::process::Command;
use std::time::Duration;

fn value_after(line: &str, prefix: &str) -> String {
    line.split(prefix).nth(1).unwrap().trim().to_owned()
}

#[test]
fn daemon_starts_keeps_identity_bootstraps_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = common::daemon(dir.path(), &["--listen", "/ip4/127.0.0.1/tcp/0"]);
    let peer = value_after(&a.line_with("peer id:"), "peer id:");
    let addr = value_after(&a.line_with("listening:"), "listening:");
    assert!(addr.ends_with(&format!("/p2p/{peer}")), "{addr}");
    let key = dir.path().join("identity.key");
    assert!(key.exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    // A second node bootstraps from the first.
    let dir_b = tempfile::tempdir().unwrap();
    let mut b = common::daemon(
        dir_b.path(),
        &["--listen", "/ip4/127.0.0.1/tcp/0", "--bootstrap", &addr],
    );
    let line = b.line_with("connected to bootstrap peer");
    assert!(line.contains(&peer), "{line}");
    assert!(b.stop().success());

    assert!(a.stop().success(), "clean exit on SIGTERM");
    assert!(
        !dir.path().join("p2pnet.sock").exists(),
        "control socket removed"
    );
    // Restart: same identity.
    let mut again = common::daemon(dir.path(), &["--listen", "/ip4/127.0.0.1/tcp/0"]);
    assert_eq!(value_after(&again.line_with("peer id:"), "peer id:"), peer);
    assert!(again.stop().success());
}

#[test]
fn explicit_listen_address_in_use_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["daemon", "--listen", &format!("/ip4/127.0.0.1/tcp/{port}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("in use"), "{err}");
}

#[test]
fn malformed_identity_is_reported_with_its_path() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("identity.key"), b"garbage").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("identity.key") && err.contains("malformed"),
        "{err}"
    );
}

#[test]
fn two_daemons_tunnel_a_tcp_service_from_their_configuration() {
    use std::io::{Read, Write};
    // The TCP service next to daemon B: echoes one request, then closes.
    let service = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let service_port = service.local_addr().unwrap().port();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = service.accept() {
            let mut req = Vec::new();
            let _ = s.read_to_end(&mut req);
            let _ = s.write_all(&req);
        }
    });
    let dir_b = tempfile::tempdir().unwrap();
    std::fs::write(
        dir_b.path().join("p2pnet.toml"),
        format!(
            "[host]\nlisten_addrs = [\"/ip4/127.0.0.1/tcp/0\"]\n\n[[listen]]\nprotocol = \"/x/echo\"\n\
             target_addr = \"/ip4/127.0.0.1/tcp/{service_port}\"\n"
        ),
    )
    .unwrap();
    let mut b = common::daemon(dir_b.path(), &[]);
    let b_addr = value_after(&b.line_with("listening:"), "listening:");

    let entry_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir_a = tempfile::tempdir().unwrap();
    std::fs::write(
        dir_a.path().join("p2pnet.toml"),
        format!(
            "[host]\nlisten_addrs = [\"/ip4/127.0.0.1/tcp/0\"]\n\n[[forward]]\nprotocol = \"/x/echo\"\n\
             listen_addr = \"/ip4/127.0.0.1/tcp/{entry_port}\"\npeer = \"{b_addr}\"\n"
        ),
    )
    .unwrap();
    let mut a = common::daemon(dir_a.path(), &[]);
    a.line_with("listening:");

    let mut client = std::net::TcpStream::connect(("127.0.0.1", entry_port)).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    client.write_all(b"through two daemons").unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = Vec::new();
    client.read_to_end(&mut back).unwrap();
    assert_eq!(back, b"through two daemons");
    assert!(a.stop().success());
    assert!(b.stop().success());
}

#[test]
fn print_default_config_is_valid_toml() {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .args(["daemon", "--print-default-config"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("[host]") && text.contains("listen_addrs"),
        "{text}"
    );
    assert!(
        text.contains("[messaging]") && text.contains("chain_id"),
        "{text}"
    );
}

/// `p2pnet --data-dir DIR daemon ARGS…` expected to refuse to start: its stderr.
fn refused(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .arg("--data-dir")
        .arg(dir)
        .args(["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .args(args)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        !dir.join("p2pnet.sock").exists(),
        "no control socket: {err}"
    );
    assert!(!dir.join("identity.key").exists(), "nothing written: {err}");
    err
}

fn chmod(p: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

/// A data directory others may write to (as a pre-created `/tmp/p2p-a` might be) could have its
/// control socket swapped or a configuration planted: the daemon refuses it, naming path, owner
/// and mode.
#[test]
fn a_data_dir_group_or_others_may_write_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p2p-a");
    std::fs::create_dir(&dir).unwrap();
    for mode in [0o777, 0o770] {
        chmod(&dir, mode);
        let err = refused(&dir, &[]);
        assert!(
            err.contains(&format!(
                "refusing the data directory {}: its mode {mode:04o} (owner uid {}) lets group or \
                 others write to it",
                dir.display(),
                euid()
            )),
            "{err}"
        );
    }
    // Made private, it is used.
    chmod(&dir, 0o700);
    let mut d = common::daemon(&dir, &["--listen", "/ip4/127.0.0.1/tcp/0"]);
    d.line_with("control:");
    assert!(d.stop().success());
}

/// A configuration file others may write to, or that another user owns, is refused.
#[test]
#[allow(clippy::print_stderr)] // says why part of it skips
fn a_configuration_others_may_write_or_own_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    let config = dir.join("p2pnet.toml");
    std::fs::write(&config, "").unwrap();
    chmod(&config, 0o664);
    let err = refused(&dir, &[]);
    assert!(
        err.contains(&format!(
            "refusing the configuration file {}: its mode 0664",
            config.display()
        )),
        "{err}"
    );
    // --config FILE is checked the same way.
    let other = tmp.path().join("other.toml");
    std::fs::write(&other, "").unwrap();
    chmod(&other, 0o646);
    let err = refused(&dir, &["--config", other.to_str().unwrap()]);
    assert!(
        err.contains(&format!(
            "refusing the configuration file {}: its mode 0646",
            other.display()
        )),
        "{err}"
    );
    if euid() != 0 {
        eprintln!("skipped the other-owner case: chown to nobody needs root");
        return;
    }
    chmod(&config, 0o644);
    std::os::unix::fs::chown(&config, Some(65534), Some(65534)).unwrap();
    let err = refused(&dir, &[]);
    assert!(
        err.contains(&format!(
            "refusing the configuration file {}: it is owned by uid 65534 (mode 0644), not by uid 0",
            config.display()
        )),
        "{err}"
    );
}

/// A data directory another user created (mode 0700, theirs) is refused. Needs root to chown it
/// to `nobody`; says so and passes vacuously otherwise.
#[test]
#[allow(clippy::print_stderr)] // says why it skips
fn a_data_dir_owned_by_another_user_is_refused() {
    if euid() != 0 {
        eprintln!("skipped: chown to nobody needs root");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("p2p-a");
    std::fs::create_dir(&dir).unwrap();
    chmod(&dir, 0o700);
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
    let err = refused(&dir, &[]);
    assert!(
        err.contains(&format!(
            "refusing the data directory {}: it is owned by uid 65534 (mode 0700), not by uid 0 \
             this daemon runs as",
            dir.display()
        )),
        "{err}"
    );
}

/// What the daemon creates itself is private, so it passes the checks at the next start: the
/// data directory (0700, parents included) and a configuration it persists.
#[test]
fn the_daemon_creates_private_files() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new/data");
    let mut d = common::daemon(&dir, &["--listen", "/ip4/127.0.0.1/tcp/0"]);
    d.line_with("control:");
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&tmp.path().join("new")), 0o700);
    assert_eq!(mode(&dir.join("identity.key")), 0o600);
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["listen", "/x/t", "/ip4/127.0.0.1/tcp/9", "--persist"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&dir.join("p2pnet.toml")), 0o600);
    assert!(d.stop().success());
    // The next start takes the persisted configuration.
    let mut again = common::daemon(&dir, &["--listen", "/ip4/127.0.0.1/tcp/0"]);
    again.line_with("control:");
    assert!(again.stop().success());
}
