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
