//! A peer process killed with SIGKILL in the middle of a forwarded 256 MiB transfer: the local
//! TCP client sees a reset, not a hang; the registries are clean; after the peer restarts with
//! the same identity, the next forwarded connection works with no manual step.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use p2pnet_netservice::{NetConfig, NetService};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOTAL: usize = 256 << 20;

struct Node(Child);

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_node(config_path: &std::path::Path) -> (Node, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_p2pnet-test-node"))
        .arg(config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start node");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("node started");
    let id = line
        .strip_prefix("peer id:")
        .expect("peer id line")
        .trim()
        .to_owned();
    (Node(child), id)
}

/// A TCP service that reads and discards; answers "ok" when its client finishes.
async fn sink() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        let _ = s.write_all(b"ok").await;
                        return;
                    }
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_peer_mid_transfer_resets_the_client_and_comes_back() {
    let sink_port = sink().await;
    let b_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let b_config = dir.path().join("b.toml");
    std::fs::write(
        &b_config,
        format!(
            "identity_key = \"b.key\"\n[host]\nlisten_addrs = [\"/ip4/127.0.0.1/tcp/{b_port}\"]\n\n\
             [[listen]]\nprotocol = \"/x/sink\"\ntarget_addr = \"/ip4/127.0.0.1/tcp/{sink_port}\"\n"
        ),
    )
    .unwrap();
    let (b, b_id) = start_node(&b_config);

    let mut config = NetConfig::default();
    config.host.listen_addrs = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.forwarding.dial_timeout = Duration::from_secs(5);
    let a = NetService::new(config).unwrap();
    a.start().await.unwrap();
    let info = a
        .forward(
            "/x/sink",
            "/ip4/127.0.0.1/tcp/0",
            &format!("/ip4/127.0.0.1/tcp/{b_port}/p2p/{b_id}"),
        )
        .await
        .unwrap();
    let port = common::tcp::tcp_port(&info.listen_addr);

    // Start the transfer; kill B once a quarter has gone through.
    let mut client = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let chunk = vec![0x42u8; 256 * 1024];
    let mut sent = 0usize;
    let mut b = Some(b);
    let outcome = tokio::time::timeout(Duration::from_secs(60), async {
        while sent < TOTAL {
            if sent >= TOTAL / 4
                && let Some(mut node) = b.take()
            {
                node.0.kill().unwrap(); // SIGKILL
                node.0.wait().unwrap();
            }
            match client.write_all(&chunk).await {
                Ok(()) => sent += chunk.len(),
                Err(e) => return Err(e),
            }
        }
        client.shutdown().await?;
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.map(|_| reply)
    })
    .await
    .expect("the client hung instead of seeing a reset");
    match outcome {
        Err(e) => assert!(
            matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ),
            "expected a reset, got {e:?}"
        ),
        Ok(reply) => panic!("transfer 'succeeded' although the peer died: {reply:?}"),
    }
    assert!(sent < TOTAL, "the whole transfer went through a dead peer");
    // Registries clean.
    for _ in 0..500 {
        if a.list_streams().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(a.list_streams().is_empty(), "stream registry not cleaned");
    assert_eq!(a.list_listeners().len(), 1, "the forward itself stays");

    // B comes back with the same identity; the next connection works with no manual step.
    let (_b2, b2_id) = start_node(&b_config);
    assert_eq!(b2_id, b_id);
    let mut again = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    again.write_all(&chunk).await.unwrap();
    again.shutdown().await.unwrap();
    let mut reply = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), again.read_to_end(&mut reply))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(reply, b"ok");
    a.stop().await;
}
