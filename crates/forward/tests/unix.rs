//! Unix domain sockets on either end of a tunnel.

mod common;

use std::io::ErrorKind;
use std::path::Path;

use common::*;
use p2pnet_forward::{
    ExistingStreams, ForwardError, ListenOptions, ListenerFilter, unix_multiaddr,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

/// A Unix-socket echo service at `path`; the task ends with the test's runtime.
fn unix_echo(path: &Path) -> tokio::task::JoinHandle<()> {
    let listener = UnixListener::bind(path).unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    })
}

#[tokio::test]
async fn unix_listen_address_to_tcp_target() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fwd.sock");
    let nodes = Nodes::new().await;
    let echo = echo_service().await;
    nodes
        .fb
        .listen("/x/echo", echo.addr.clone(), ListenOptions::default())
        .unwrap();
    let info = nodes
        .fa
        .forward("/x/echo", unix_multiaddr(&path), nodes.b.peer_id())
        .await
        .unwrap();
    assert_eq!(info.listen_addr, unix_multiaddr(&path));
    let mut client = UnixStream::connect(&path).await.unwrap();
    client.write_all(b"over a unix socket").await.unwrap();
    client.shutdown().await.unwrap();
    let mut back = Vec::new();
    within(5, client.read_to_end(&mut back)).await.unwrap();
    assert_eq!(back, b"over a unix socket");
    eventually("streams unregistered", || {
        nodes.fa.list_streams().is_empty() && nodes.fb.list_streams().is_empty()
    })
    .await;

    // The same path twice is a conflict.
    let e = nodes
        .fa
        .forward("/x/echo", unix_multiaddr(&path), nodes.b.peer_id())
        .await
        .unwrap_err();
    assert!(matches!(e, ForwardError::ListenAddrInUse(_)), "{e}");

    // Closing the listener removes the socket file.
    assert_eq!(
        nodes
            .fa
            .close_listeners(&ListenerFilter::all(), ExistingStreams::Keep),
        1
    );
    eventually("socket file removed", || !path.exists()).await;
    nodes.shutdown().await;
}

#[tokio::test]
async fn tcp_listen_address_to_unix_target() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("svc.sock");
    let _svc = unix_echo(&target);
    let nodes = Nodes::new().await;
    let tunnel = nodes.tunnel("/x/unix-echo", unix_multiaddr(&target)).await;
    let mut client = connect(&tunnel).await;
    let msg = vec![42u8; 300_000];
    client.write_all(&msg).await.unwrap();
    client.shutdown().await.unwrap();
    let (back, end) = within(10, read_all(&mut client)).await;
    end.unwrap();
    assert_eq!(back, msg);
    eventually("streams unregistered", || {
        nodes.fa.list_streams().is_empty() && nodes.fb.list_streams().is_empty()
    })
    .await;
    nodes.shutdown().await;
}

#[tokio::test]
async fn stale_socket_is_replaced_and_live_or_foreign_files_are_not() {
    let dir = tempfile::tempdir().unwrap();
    let nodes = Nodes::new().await;
    let peer = nodes.b.peer_id();

    // A stale socket file (its listener is gone, the file stays).
    let stale = dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    assert!(stale.exists());
    nodes
        .fa
        .forward("/x/s", unix_multiaddr(&stale), peer)
        .await
        .unwrap();
    // It is ours now: connecting works.
    UnixStream::connect(&stale).await.unwrap();

    // A socket another program accepts on: refused with AddrInUse, left alone.
    let live = dir.path().join("live.sock");
    let _keep = std::os::unix::net::UnixListener::bind(&live).unwrap();
    match nodes
        .fa
        .forward("/x/s", unix_multiaddr(&live), peer)
        .await
        .unwrap_err()
    {
        ForwardError::Bind { source, .. } => assert_eq!(source.kind(), ErrorKind::AddrInUse),
        other => panic!("unexpected {other}"),
    }
    assert!(live.exists());

    // A regular file: refused, left alone.
    let file = dir.path().join("file");
    std::fs::write(&file, b"keep me").unwrap();
    assert!(matches!(
        nodes.fa.forward("/x/s", unix_multiaddr(&file), peer).await,
        Err(ForwardError::Bind { .. })
    ));
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");

    // Shutdown removes our socket file.
    within(5, nodes.fa.shutdown()).await;
    assert!(!stale.exists());
    assert!(live.exists());
    nodes.shutdown().await;
}
