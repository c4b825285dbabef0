//! The `p2pnet daemon` binary end to end: first start, identity kept across restarts, the
//! fallback from a taken default port, bootstrap, and a clean stop on SIGTERM (which removes the
//! control socket).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Daemon {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Daemon {
    fn start(data_dir: &std::path::Path, args: &[&str]) -> Daemon {
        let mut child = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
            .arg("--data-dir")
            .arg(data_dir)
            .arg("daemon")
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start p2pnet");
        let (tx, lines) = mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Daemon { child, lines }
    }

    /// The next output line containing `needle` (bounded wait).
    fn line_with(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => break,
            }
        }
        panic!("no output line containing {needle:?}");
    }

    fn stop(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        for _ in 0..200 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("daemon did not stop within 5 s of SIGTERM");
    }
}

/// Whatever happens in a test, no daemon outlives it.
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn value_after(line: &str, prefix: &str) -> String {
    line.split(prefix).nth(1).unwrap().trim().to_owned()
}

#[test]
fn daemon_starts_keeps_identity_bootstraps_and_stops() {
    let dir = tempfile::tempdir().unwrap();
    let a = Daemon::start(dir.path(), &["--listen", "/ip4/127.0.0.1/tcp/0"]);
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
    let b = Daemon::start(
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
    let again = Daemon::start(dir.path(), &["--listen", "/ip4/127.0.0.1/tcp/0"]);
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
    let b = Daemon::start(dir_b.path(), &[]);
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
    let a = Daemon::start(dir_a.path(), &[]);
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
