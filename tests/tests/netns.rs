//! Multi-host: three network namespaces joined by veth pairs on a subnet made for the test
//! (10.213.1.0/24 and 10.213.2.0/24, routed through the middle namespace), one `p2pnet daemon`
//! in each. The outer two bootstrap through the middle one; a TCP-like service behind node C is
//! forwarded to node A across two network hops, and 64 MiB go through with a SHA-256 check.
//! Each node is its own process (`p2pnet-test-node`, a `NetService` configured by TOML,
//! tunnels included).
//!
//! Ignored by default: it needs root to create namespaces. Run it with `cargo xtask netns`,
//! which checks that and says why it skips when it cannot run.
//! The data endpoints are Unix sockets, which are not namespaced, so the test process itself
//! stays in the root namespace; every byte between the nodes crosses the veth network.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

const DATA_LEN: usize = 64 << 20;

fn run(args: &[&str]) -> Result<(), String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{args:?}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Everything the test created; removed on drop, also when the test fails.
struct Lab {
    namespaces: Vec<String>,
    daemons: Vec<Child>,
}

impl Drop for Lab {
    fn drop(&mut self) {
        for d in &mut self.daemons {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in &self.namespaces {
            let _ = run(&["ip", "netns", "del", ns]);
        }
    }
}

/// Starts a node in namespace `ns` from a TOML configuration; returns its peer id.
fn node(lab: &mut Lab, ns: &str, config: &Path) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_p2pnet-test-node"))
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().unwrap();
    lab.daemons.push(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx.recv_timeout(left).expect("node printed no peer id");
        if let Some(id) = line.strip_prefix("peer id:") {
            return id.trim().to_owned();
        }
    }
}

fn write_config(path: &Path, text: &str) -> PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

#[test]
#[ignore = "needs root and network namespaces; run with `cargo xtask netns`"]
fn forward_across_two_hops_of_namespaces() {
    let tag = std::process::id() % 100_000;
    let (a, r, c) = (
        format!("p2pt{tag}a"),
        format!("p2pt{tag}r"),
        format!("p2pt{tag}c"),
    );
    let mut lab = Lab {
        namespaces: Vec::new(),
        daemons: Vec::new(),
    };
    for ns in [&a, &r, &c] {
        run(&["ip", "netns", "add", ns]).expect("create namespace");
        lab.namespaces.push(ns.clone());
        run(&["ip", "-n", ns, "link", "set", "lo", "up"]).unwrap();
    }
    let (va, vra, vc, vrc) = (
        format!("v{tag}a"),
        format!("v{tag}ra"),
        format!("v{tag}c"),
        format!("v{tag}rc"),
    );
    let setup: Vec<Vec<String>> = vec![
        vec![
            "ip", "link", "add", &va, "netns", &a, "type", "veth", "peer", "name", &vra, "netns",
            &r,
        ],
        vec![
            "ip", "link", "add", &vc, "netns", &c, "type", "veth", "peer", "name", &vrc, "netns",
            &r,
        ],
        vec!["ip", "-n", &a, "addr", "add", "10.213.1.2/24", "dev", &va],
        vec!["ip", "-n", &r, "addr", "add", "10.213.1.1/24", "dev", &vra],
        vec!["ip", "-n", &c, "addr", "add", "10.213.2.2/24", "dev", &vc],
        vec!["ip", "-n", &r, "addr", "add", "10.213.2.1/24", "dev", &vrc],
        vec!["ip", "-n", &a, "link", "set", &va, "up"],
        vec!["ip", "-n", &r, "link", "set", &vra, "up"],
        vec!["ip", "-n", &c, "link", "set", &vc, "up"],
        vec!["ip", "-n", &r, "link", "set", &vrc, "up"],
        vec![
            "ip",
            "-n",
            &a,
            "route",
            "add",
            "default",
            "via",
            "10.213.1.1",
        ],
        vec![
            "ip",
            "-n",
            &c,
            "route",
            "add",
            "default",
            "via",
            "10.213.2.1",
        ],
        vec![
            "ip",
            "netns",
            "exec",
            &r,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ],
    ]
    .into_iter()
    .map(|v| v.into_iter().map(str::to_owned).collect())
    .collect();
    for cmd in &setup {
        let args: Vec<&str> = cmd.iter().map(String::as_str).collect();
        run(&args).unwrap();
    }

    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let r_id = node(
        &mut lab,
        &r,
        &write_config(
            &d.join("r.toml"),
            "[host]\nlisten_addrs = [\"/ip4/0.0.0.0/tcp/4001\"]\n",
        ),
    );

    // The service behind C: a sink that answers with the SHA-256 of what it received.
    let service = d.join("service.sock");
    let listener = UnixListener::bind(&service).unwrap();
    let sink = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 256 * 1024];
        let mut total = 0usize;
        loop {
            let n = s.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            total += n;
            hasher.update(&buf[..n]);
        }
        s.write_all(&hasher.finalize()).unwrap();
        total
    });
    let c_config = format!(
        "bootstrap = [\"/ip4/10.213.2.1/tcp/4001/p2p/{r_id}\"]\n[host]\nlisten_addrs = [\"/ip4/10.213.2.2/tcp/4001\"]\n\n\
         [[listen]]\nprotocol = \"/x/sink\"\ntarget_addr = \"{}\"\n",
        p2pnet_forward::unix_multiaddr(&service)
    );
    let c_id = node(&mut lab, &c, &write_config(&d.join("c.toml"), &c_config));
    let entry = d.join("entry.sock");
    let a_config = format!(
        "bootstrap = [\"/ip4/10.213.1.1/tcp/4001/p2p/{r_id}\"]\n[host]\nlisten_addrs = [\"/ip4/10.213.1.2/tcp/4001\"]\n\n\
         [[forward]]\nprotocol = \"/x/sink\"\nlisten_addr = \"{}\"\npeer = \"/ip4/10.213.2.2/tcp/4001/p2p/{c_id}\"\n",
        p2pnet_forward::unix_multiaddr(&entry)
    );
    let a_id = node(&mut lab, &a, &write_config(&d.join("a.toml"), &a_config));
    assert_ne!(a_id, c_id);

    // 64 MiB from A's side, through A → (router) → C, into the service.
    let mut s = UnixStream::connect(&entry).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let mut expected = Sha256::new();
    let mut chunk = vec![0u8; 256 * 1024];
    let mut x = 0x2545_f491_4f6c_dd1d_u64;
    for _ in 0..DATA_LEN / chunk.len() {
        for b in chunk.iter_mut() {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            *b = x as u8;
        }
        expected.update(&chunk);
        s.write_all(&chunk).unwrap();
    }
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut digest = Vec::new();
    s.read_to_end(&mut digest).unwrap();
    assert_eq!(sink.join().unwrap(), DATA_LEN);
    assert_eq!(
        digest,
        expected.finalize().to_vec(),
        "SHA-256 across two hops"
    );
    drop(lab);
}
