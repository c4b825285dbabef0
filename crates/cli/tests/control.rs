//! The `p2pnet` client commands end to end: two daemons as separate processes (temporary data
//! directories, loopback only) driven through their control sockets.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{Proc, WAIT};
use serde_json::{Value, json};

/// A daemon on `data_dir`, listening on loopback; with its peer id and address.
struct Daemon {
    proc: Proc,
    dir: PathBuf,
    peer: String,
    addr: String,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2pnet"));
        cmd.arg("--data-dir")
            .arg(dir)
            .args(["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"]);
        let proc = Proc::spawn(cmd);
        let peer = after(&proc.line_with("peer id:"), "peer id:");
        let addr = after(&proc.line_with("listening:"), "listening:");
        proc.line_with("control:");
        Daemon {
            proc,
            dir: dir.to_owned(),
            peer,
            addr,
        }
    }

    /// Runs a client command against this daemon; bounded.
    fn run(&self, args: &[&str]) -> Output {
        p2pnet(&self.dir, args)
    }

    /// Runs a client command that must succeed; its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "p2pnet {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Runs a client command with `--json`; its parsed output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let text = self.ok(&all);
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }
}

fn after(line: &str, prefix: &str) -> String {
    line.split(prefix).nth(1).unwrap().trim().to_owned()
}

/// `p2pnet --data-dir DIR ARGS…`, killed after 30 s.
fn p2pnet(dir: &Path, args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .arg("--data-dir")
        .arg(dir)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + WAIT;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("p2pnet {args:?} did not finish within {WAIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    child.wait_with_output().unwrap()
}

/// A TCP echo server on loopback; its port.
fn echo_server() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in listener.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to the entry port and checks one echo; returns the open connection.
fn round_trip(port: u16, text: &[u8]) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(WAIT)).unwrap();
    s.write_all(text).unwrap();
    let mut back = vec![0; text.len()];
    s.read_exact(&mut back).unwrap();
    assert_eq!(back, text);
    s
}

/// Polls `f` until it returns `Some` (bounded).
fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn forward_through_two_daemons_ls_streams_close_and_persist() {
    let echo_port = echo_server();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let b = Daemon::start(dir_b.path());
    let mut a = Daemon::start(dir_a.path());
    let target = format!("/ip4/127.0.0.1/tcp/{echo_port}");

    // B offers the echo service on /x/echo.
    let listener = b.json(&["listen", "/x/echo", &target]);
    let b_listener = json!({
        "id": "l1", "protocol": "/x/echo", "direction": "listen",
        "listen_addr": format!("/p2p/{}", b.peer), "target_addr": target,
    });
    assert_eq!(listener, b_listener);
    assert_eq!(b.json(&["ls"]), json!([b_listener]));

    // A forwards a local port to it, and saves the tunnel.
    let port = free_port();
    let entry = format!("/ip4/127.0.0.1/tcp/{port}");
    let forward = a.json(&["forward", "/x/echo", &entry, &b.addr, "--persist"]);
    let config = dir_a.path().join("p2pnet.toml");
    let a_listener = json!({
        "id": "l1", "protocol": "/x/echo", "direction": "forward",
        "listen_addr": entry, "target_addr": format!("/p2p/{}", b.peer),
    });
    let mut persisted = a_listener.clone();
    persisted["persisted"] = json!(config.display().to_string());
    assert_eq!(forward, persisted);
    assert_eq!(a.json(&["ls"]), json!([a_listener]));
    let ls = a.ok(&["ls"]);
    let mut rows = ls.lines();
    assert_eq!(
        rows.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["ID", "DIRECTION", "PROTOCOL", "LISTEN", "TARGET"]
    );
    let b_p2p = format!("/p2p/{}", b.peer);
    assert_eq!(
        rows.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["l1", "forward", "/x/echo", entry.as_str(), b_p2p.as_str()]
    );

    // A round trip through the tunnel; the stream is listed while it is open.
    let conn = round_trip(port, b"hello through two daemons");
    let client_addr = conn.local_addr().unwrap();
    let b_transport = b.addr.split("/p2p/").next().unwrap().to_owned();
    let expected = json!([{
        "id": "s1", "protocol": "/x/echo", "origin": "local",
        "local_addr": format!("/ip4/127.0.0.1/tcp/{}", client_addr.port()),
        "peer_id": b.peer, "remote_addr": b_transport,
        "bytes_in": 25, "bytes_out": 25,
    }]);
    eventually("the stream's counters", || {
        (a.json(&["streams"]) == expected).then_some(())
    });
    let streams = a.ok(&["streams"]);
    assert!(streams.starts_with("ID "), "{streams}");
    assert!(
        streams.lines().nth(1).unwrap().starts_with("s1 "),
        "{streams}"
    );
    assert!(streams.contains(&b.peer), "{streams}");
    drop(conn);
    eventually("the stream to end", || {
        (a.json(&["streams"]) == json!([])).then_some(())
    });
    assert_eq!(a.ok(&["streams"]), "no streams\n");

    // Restart A: the saved tunnel is back and works.
    assert!(a.proc.stop().success());
    assert!(
        !dir_a.path().join("p2pnet.sock").exists(),
        "socket removed at stop"
    );
    drop(a);
    let a = Daemon::start(dir_a.path());
    assert_eq!(a.json(&["ls"]), json!([a_listener]));
    drop(round_trip(port, b"again after a restart"));

    // close: a filter is required; by protocol, then everything.
    let out = a.run(&["close"]);
    assert!(!out.status.success());
    assert_eq!(
        a.ok(&["close", "--protocol", "/x/other"]),
        "closed 0 listener(s)\n"
    );
    assert_eq!(
        a.json(&["close", "--listen", &entry]),
        json!({ "closed": 1 })
    );
    assert_eq!(a.json(&["ls"]), json!([]));
    assert_eq!(a.ok(&["ls"]), "no listeners\n");
    assert_eq!(b.ok(&["close", "--all"]), "closed 1 listener(s)\n");
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_err());
    let out = a.run(&["stream-close", "s99"]);
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "error: no stream s99\n"
    );
}

#[test]
fn control_socket_is_private_refuses_garbage_and_keeps_serving() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("data");
    let daemon = Daemon::start(&dir);
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    let sock = dir.join("p2pnet.sock");
    assert_eq!(mode(&sock), 0o600);
    assert_eq!(mode(&dir), 0o700);

    let mut conn = std::os::unix::net::UnixStream::connect(&sock).unwrap();
    conn.set_read_timeout(Some(WAIT)).unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut answer = |request: &[u8]| -> Value {
        conn.write_all(request).unwrap();
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    };
    let bad = answer(b"this is not json\n");
    assert_eq!(bad["ok"], json!(false));
    assert!(
        bad["error"]
            .as_str()
            .unwrap()
            .starts_with("malformed request"),
        "{bad}"
    );
    let unknown = answer(b"{\"cmd\":\"launch-missiles\"}\n");
    assert_eq!(unknown["ok"], json!(false));
    assert!(
        unknown["error"]
            .as_str()
            .unwrap()
            .contains("launch-missiles"),
        "{unknown}"
    );
    // The same connection still serves.
    let id = answer(b"{\"cmd\":\"id\"}\n");
    assert_eq!(id["ok"], json!(true));
    assert_eq!(id["result"]["peer_id"], json!(daemon.peer));
    // An overlong line: an error, then the connection is closed.
    let long = answer(&vec![b'x'; 70 * 1024]);
    assert_eq!(
        long,
        json!({ "ok": false, "error": "request line longer than 65536 bytes" })
    );
    let mut rest = String::new();
    assert_eq!(reader.read_line(&mut rest).unwrap_or(0), 0, "{rest}");

    // The daemon is unaffected.
    let id = daemon.json(&["id"]);
    assert_eq!(id["peer_id"], json!(daemon.peer));
    assert_eq!(id["listen_addrs"], json!([daemon.addr]));
    let text = daemon.ok(&["id"]);
    assert_eq!(
        text,
        format!("peer id: {}\nlistening: {}\n", daemon.peer, daemon.addr)
    );
    let metrics = daemon.ok(&["metrics"]);
    assert!(metrics.contains("# TYPE"), "{metrics}");

    // A second daemon on the same data directory is refused clearly.
    let out = Command::new(env!("CARGO_BIN_EXE_p2pnet"))
        .arg("--data-dir")
        .arg(&dir)
        .args(["daemon", "--listen", "/ip4/127.0.0.1/tcp/0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("already running"), "{err}");

    // A daemon killed outright leaves its socket; the next one replaces it.
    drop(daemon);
    assert!(sock.exists());
    let out = p2pnet(&dir, &["id"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no p2pnet daemon is running"));
    let again = Daemon::start(&dir);
    assert_eq!(again.json(&["id"])["peer_id"], json!(again.peer));
}

#[test]
fn client_without_a_daemon_says_so_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let out = p2pnet(dir.path(), &["ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "error: no p2pnet daemon is running (no socket at {})\n",
            dir.path().join("p2pnet.sock").display()
        )
    );
    assert!(out.stdout.is_empty());
}

#[test]
fn messages_between_daemons_connect_ping_peers() {
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Daemon::start(dir_a.path());
    let b = Daemon::start(dir_b.path());

    assert_eq!(a.json(&["connect", &b.addr]), json!({ "peer_id": b.peer }));
    let pong = a.ok(&["ping", &b.peer]);
    assert!(
        pong.starts_with(&format!("pong from {} in ", b.peer)),
        "{pong}"
    );
    let peers = eventually("a session with b", || {
        let p = a.json(&["peers"]);
        (p[0]["session"] == json!(true)).then_some(p)
    });
    assert_eq!(peers.as_array().unwrap().len(), 1, "{peers}");
    assert_eq!(peers[0]["peer_id"], json!(b.peer));
    assert_eq!(peers[0]["direction"], json!("outbound"));
    assert_eq!(peers[0]["transport"], json!("tcp"));

    // B subscribes to "chat"; A sends one message, then broadcasts another.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_p2pnet"));
    cmd.arg("--data-dir")
        .arg(dir_b.path())
        .args(["--json", "subscribe", "chat"]);
    let sub = Proc::spawn(cmd);
    sub.line_with("subscribed to chat");
    assert_eq!(
        a.ok(&["send", &b.addr, "chat", "hello b"]),
        format!("sent to {}\n", b.peer)
    );
    let line = sub.line_with("\"kind\"");
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({ "peer": a.peer, "kind": "chat", "data": "hello b" })
    );
    assert_eq!(
        a.json(&["broadcast", "chat", "hello everyone"]),
        json!({ "reached": [b.peer], "failed": [] })
    );
    let line = sub.line_with("\"kind\"");
    assert_eq!(
        serde_json::from_str::<Value>(&line).unwrap(),
        json!({ "peer": a.peer, "kind": "chat", "data": "hello everyone" })
    );
    drop(sub);

    let out = a.json(&["disconnect", &b.peer]);
    assert_eq!(out["peer_id"], json!(b.peer));
    assert!(out["connections_closed"].as_u64().unwrap() >= 1, "{out}");
    let bad = a.run(&["ping", "not-a-peer"]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.starts_with("error: "), "{err}");
}

#[test]
fn demo_runs_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let out = p2pnet(dir.path(), &["demo"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("summary"), "{stdout}");
    assert!(stdout.contains("1000 of 1000 delivered"), "{stdout}");
}

/// Another user cannot drive the daemon: the socket's mode keeps them out, and when an owner
/// loosens the modes by mistake the daemon still refuses connections whose peer credentials carry
/// another uid. Needs root (to run a client as `nobody`); says so and passes vacuously otherwise.
#[test]
#[allow(clippy::print_stderr)] // says why it skips
fn another_user_is_refused_even_when_the_modes_are_loosened() {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let tmp = tempfile::tempdir().unwrap();
    if std::fs::metadata(tmp.path()).unwrap().uid() != 0 {
        eprintln!("skipped: running a client as another user needs root");
        return;
    }
    let dir = tmp.path().join("data");
    let daemon = Daemon::start(&dir);
    let as_nobody = || {
        Command::new(env!("CARGO_BIN_EXE_p2pnet"))
            .arg("--data-dir")
            .arg(&dir)
            .arg("id")
            .uid(65534)
            .gid(65534)
            .output()
    };
    let chmod = |p: &Path, mode: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap()
    };
    // The modes as the daemon set them: nobody cannot even reach the socket.
    let Ok(out) = as_nobody() else {
        eprintln!("skipped: user nobody cannot run the p2pnet binary here");
        return;
    };
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("ermission denied"), "{err}");

    // Loosened: nobody connects, and is refused by the credentials check.
    chmod(tmp.path(), 0o755);
    chmod(&dir, 0o777);
    chmod(&dir.join("p2pnet.sock"), 0o666);
    let out = as_nobody().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let line = daemon
        .proc
        .line_with("control connection from another user refused");
    assert!(line.contains("uid=65534"), "{line}");
    // The owner is still served.
    assert_eq!(daemon.json(&["id"])["peer_id"], json!(daemon.peer));
}

/// Three daemons: b knows a, c knows b. c finds a by id alone, records and provider records
/// put on one are read on another, and `dht table` lists the peers.
#[test]
fn dht_commands_find_peers_and_records_across_daemons() {
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let a = Daemon::start(dirs[0].path());
    let b = Daemon::start(dirs[1].path());
    let c = Daemon::start(dirs[2].path());
    b.ok(&["connect", &a.addr]);
    c.ok(&["connect", &b.addr]);
    // Identify tells each side the other serves the DHT; then c looks a up through b.
    let found = eventually("c finds a through b", || {
        let out = c.run(&["--json", "dht", "find-peer", &a.peer]);
        out.status
            .success()
            .then(|| serde_json::from_slice::<Value>(&out.stdout).unwrap())
    });
    assert_eq!(found["peer_id"], json!(a.peer));
    assert!(
        found["addrs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| a.addr.starts_with(x.as_str().unwrap())),
        "{found}"
    );
    // c connects to a by id alone (the host asks the DHT).
    assert_eq!(
        c.json(&["connect", &format!("/p2p/{}", a.peer)])["peer_id"],
        json!(a.peer)
    );

    let put = c.json(&["dht", "put", "greeting", "hello from c"]);
    assert!(!put["stored_at"].as_array().unwrap().is_empty(), "{put}");
    let got = a.json(&["dht", "get", "greeting"]);
    assert_eq!(got["records"][0]["value"], json!("hello from c"), "{got}");
    assert!(a.ok(&["dht", "get", "greeting"]).contains("hello from c"));

    a.ok(&["dht", "provide", "blob"]);
    let providers = c.json(&["dht", "providers", "blob"]);
    assert_eq!(
        providers["providers"][0]["peer_id"],
        json!(a.peer),
        "{providers}"
    );

    let table = b.json(&["dht", "table"]);
    let peers: Vec<&str> = table
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["peer_id"].as_str().unwrap())
        .collect();
    assert!(
        peers.contains(&a.peer.as_str()) && peers.contains(&c.peer.as_str()),
        "{table}"
    );
    assert!(b.ok(&["dht", "table"]).starts_with("BUCKET"));
}
