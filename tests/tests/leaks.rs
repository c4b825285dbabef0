//! After `stop()`, nothing a node opened is left: no socket, no file descriptor, no task.
//!
//! Alone in its own test binary, so that no other test opens descriptors in this process while it
//! counts them (`cargo test` runs a binary's tests as threads of one process).

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use p2pnet_dispatcher::SubscriberOptions;
use p2pnet_host::with_p2p;
use p2pnet_messaging::Priority;
use p2pnet_netservice::{ListenTunnel, NetConfig, NetService};

/// This process's open file descriptors and what each points to.
fn open_fds() -> BTreeMap<String, String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .map(|e| {
            let target = std::fs::read_link(e.path())
                .map(|t| t.display().to_string())
                .unwrap_or_default();
            (e.file_name().to_string_lossy().into_owned(), target)
        })
        .collect()
}

/// Sockets among them (a directory listing's own descriptor is not one).
fn sockets() -> BTreeMap<String, String> {
    open_fds()
        .into_iter()
        .filter(|(_, target)| target.starts_with("socket:"))
        .collect()
}

fn config(listen: &str, metrics: bool) -> NetConfig {
    let mut config = NetConfig::default();
    config.host.listen_addrs = vec![listen.into()];
    if metrics {
        config.metrics_addr = Some("127.0.0.1:0".into());
    }
    config
}

/// Once over TCP connections and once over QUIC ones, one after the other (the descriptor count
/// is the process's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_leaves_no_socket_descriptor_or_task() {
    scenario("/ip4/127.0.0.1/tcp/0").await;
    scenario("/ip4/127.0.0.1/udp/0/quic-v1").await;
}

async fn scenario(listen: &str) {
    let metrics = tokio::runtime::Handle::current().metrics();
    let tasks_before = metrics.num_alive_tasks();
    let fds_before = open_fds();
    let sockets_before = sockets();

    // Two nodes using every component: a connection, a message session and a message, a listen
    // tunnel, a forward tunnel with a stream through it, the metrics endpoint.
    let echo = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    let echo_thread = std::thread::spawn(move || {
        use std::io::{Read, Write};
        let (mut s, _) = echo.accept().unwrap();
        let mut buf = [0u8; 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => s.write_all(&buf[..n]).unwrap(),
            }
        }
    });
    let a = NetService::new(config(listen, true)).unwrap();
    let b = NetService::new(config(listen, false)).unwrap();
    a.start().await.unwrap();
    b.start().await.unwrap();
    let mut at_b = b.register(&["k"], SubscriberOptions::new()).unwrap();
    let b_addr = with_p2p(&b.listen_addrs()[0], b.peer_id());
    a.host().dial(b_addr.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !a.peers().contains(&b.peer_id()) {
        assert!(Instant::now() < deadline, "no session");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.send_to_peer(&b.peer_id(), "k", &b"m"[..], Priority::Normal)
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), at_b.recv_async())
        .await
        .unwrap()
        .unwrap();
    b.listen(ListenTunnel {
        protocol: "/x/leak".into(),
        target_addr: format!("/ip4/127.0.0.1/tcp/{echo_port}"),
        report_peer_id: false,
        allow: vec![],
    })
    .unwrap();
    let info = a
        .forward("/x/leak", "/ip4/127.0.0.1/tcp/0", &b_addr.to_string())
        .await
        .unwrap();
    let mut client = common::tcp::connect(&info.listen_addr).await;
    common::tcp::echo(&mut client, b"ping").await;
    assert!(
        sockets().len() >= sockets_before.len() + 8,
        "the scenario should hold sockets open"
    );
    let transport = a.host().connections(None)[0].transport.to_string();
    assert!(
        listen.contains(&transport),
        "{listen} carried over {transport}"
    );

    // Stop both while the forwarded stream is still open; then drop everything.
    let started = Instant::now();
    a.stop().await;
    b.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    drop((a, b, at_b, client));
    echo_thread.join().unwrap();

    // quinn's endpoint tasks end a moment after their last handle: bounded wait.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let leaked: Vec<_> = open_fds()
            .into_iter()
            .filter(|(fd, target)| fds_before.get(fd) != Some(target))
            .collect();
        // The runtime's own idle tasks aside, every task spawned by the nodes has ended.
        let tasks = metrics.num_alive_tasks();
        if leaked.is_empty() && tasks <= tasks_before {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "left after stop: descriptors {leaked:?}, tasks {tasks} (before: {tasks_before})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
