//! How the bridge ends a tunnelled connection between two real hosts on 127.0.0.1: an abort of
//! the local side is a reset of the stream (never a clean end), a reset of the stream is an
//! abort of the local socket, and a clean end is a half close that delivers every byte.

mod common;

use std::io::ErrorKind;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Aborts a TCP connection: RST, not FIN.
fn abort(s: TcpStream) {
    s.set_zero_linger().unwrap();
    drop(s);
}

/// Reads to the end and reports how it ended.
async fn read_to_end_or_error(s: &mut TcpStream) -> std::io::Result<()> {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match s.read(&mut buf).await {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
    }
}

/// A client that aborts mid-upload: the target must see a reset, not a complete upload.
#[tokio::test]
async fn client_abort_mid_upload_resets_the_target() {
    let nodes = Nodes::new().await;
    let (got_tx, mut got_rx) = mpsc::channel(1);
    let (end_tx, mut end_rx) = mpsc::channel(1);
    let svc = service(move |mut s| {
        let (got_tx, end_tx) = (got_tx.clone(), end_tx.clone());
        async move {
            // Say when the first bytes are in, then read on to the end.
            let mut first = [0u8; 1000];
            s.read_exact(&mut first).await.unwrap();
            got_tx.send(()).await.unwrap();
            end_tx
                .send(read_to_end_or_error(&mut s).await)
                .await
                .unwrap();
        }
    })
    .await;
    let tunnel = nodes.tunnel("/x/upload", svc.addr.clone()).await;
    let mut client = connect(&tunnel).await;
    client.write_all(&[5u8; 1000]).await.unwrap();
    within(5, got_rx.recv()).await.unwrap();
    client.write_all(&[6u8; 500]).await.unwrap();
    abort(client);
    let end = within(5, end_rx.recv()).await.unwrap();
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
    eventually("streams unregistered", || {
        nodes.fa.list_streams().is_empty() && nodes.fb.list_streams().is_empty()
    })
    .await;
    nodes.shutdown().await;
}

/// A target that aborts mid-answer, before any half close: the client sees a reset.
#[tokio::test]
async fn target_abort_mid_answer_resets_the_client() {
    let nodes = Nodes::new().await;
    let svc = service(|mut s| async move {
        s.write_all(&[1u8; 4096]).await.unwrap();
        // Wait for the client's go, then abort.
        let mut go = [0u8; 1];
        s.read_exact(&mut go).await.unwrap();
        abort(s);
    })
    .await;
    let tunnel = nodes.tunnel("/x/answer", svc.addr.clone()).await;
    let mut client = connect(&tunnel).await;
    let mut first = vec![0u8; 4096];
    within(5, client.read_exact(&mut first)).await.unwrap();
    client.write_all(b"!").await.unwrap();
    let (rest, end) = within(5, read_all(&mut client)).await;
    assert!(rest.is_empty());
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
    nodes.shutdown().await;
}

/// A client that half-closes (its request is complete) and then aborts while the answer is
/// still coming: the target's writes fail instead of going on into a closed tunnel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_abort_after_its_half_close_fails_the_target() {
    let nodes = Nodes::new().await;
    let (end_tx, mut end_rx) = mpsc::channel(1);
    let svc = service(move |mut s| {
        let end_tx = end_tx.clone();
        async move {
            read_to_end_or_error(&mut s).await.unwrap();
            let chunk = vec![3u8; 64 * 1024];
            let end = loop {
                if let Err(e) = s.write_all(&chunk).await {
                    break e;
                }
            };
            end_tx.send(end).await.unwrap();
        }
    })
    .await;
    let tunnel = nodes.tunnel("/x/download", svc.addr.clone()).await;
    let mut client = connect(&tunnel).await;
    client.write_all(b"send me everything").await.unwrap();
    client.shutdown().await.unwrap();
    let mut some = vec![0u8; 256 * 1024];
    within(5, client.read_exact(&mut some)).await.unwrap();
    abort(client);
    let end = within(5, end_rx.recv()).await.unwrap();
    // The first write after the target's RST fails with ECONNRESET, later ones with EPIPE.
    assert!(
        matches!(
            end.kind(),
            ErrorKind::ConnectionReset | ErrorKind::BrokenPipe
        ),
        "{end:?}"
    );
    eventually("streams unregistered", || {
        nodes.fa.list_streams().is_empty() && nodes.fb.list_streams().is_empty()
    })
    .await;
    nodes.shutdown().await;
}

/// The target finished its answer (FIN) and the client then aborts mid-upload: the tunnel's
/// stream is reset after its half close, and the target sees a reset, not a complete upload.
#[tokio::test]
async fn client_abort_mid_upload_after_the_answer_resets_the_target() {
    let nodes = Nodes::new().await;
    let (got_tx, mut got_rx) = mpsc::channel(1);
    let (end_tx, mut end_rx) = mpsc::channel(1);
    let svc = service(move |mut s| {
        let (got_tx, end_tx) = (got_tx.clone(), end_tx.clone());
        async move {
            s.write_all(b"ready").await.unwrap();
            s.shutdown().await.unwrap();
            let mut first = [0u8; 1000];
            s.read_exact(&mut first).await.unwrap();
            got_tx.send(()).await.unwrap();
            end_tx
                .send(read_to_end_or_error(&mut s).await)
                .await
                .unwrap();
        }
    })
    .await;
    let tunnel = nodes.tunnel("/x/upload", svc.addr.clone()).await;
    let mut client = connect(&tunnel).await;
    let (answer, end) = within(5, read_all(&mut client)).await;
    end.unwrap();
    assert_eq!(answer, b"ready");
    client.write_all(&[5u8; 1000]).await.unwrap();
    within(5, got_rx.recv()).await.unwrap();
    client.write_all(&[6u8; 500]).await.unwrap();
    abort(client);
    let end = within(5, end_rx.recv()).await.unwrap();
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
    nodes.shutdown().await;
}

/// The client sent its whole request (FIN) and the target then aborts mid-answer: the stream is
/// reset after the half close, and the client sees a reset, not a complete answer.
#[tokio::test]
async fn target_abort_after_the_clients_half_close_resets_the_client() {
    let nodes = Nodes::new().await;
    let (go_tx, go_rx) = mpsc::channel::<()>(1);
    let go_rx = std::sync::Arc::new(tokio::sync::Mutex::new(go_rx));
    let svc = service(move |mut s| {
        let go_rx = go_rx.clone();
        async move {
            read_to_end_or_error(&mut s).await.unwrap();
            s.write_all(&[1u8; 4096]).await.unwrap();
            go_rx.lock().await.recv().await.unwrap();
            abort(s);
        }
    })
    .await;
    let tunnel = nodes.tunnel("/x/answer", svc.addr.clone()).await;
    let mut client = connect(&tunnel).await;
    client.write_all(b"request").await.unwrap();
    client.shutdown().await.unwrap();
    let mut first = vec![0u8; 4096];
    within(5, client.read_exact(&mut first)).await.unwrap();
    go_tx.send(()).await.unwrap();
    let (rest, end) = within(5, read_all(&mut client)).await;
    assert!(rest.is_empty());
    assert_eq!(end.unwrap_err().kind(), ErrorKind::ConnectionReset);
    nodes.shutdown().await;
}

/// A handler writes 1 MiB and shuts its stream down, then its host closes the connection: the
/// forward client reads the whole 1 MiB, then a clean end of stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tail_of_a_transfer_survives_the_peer_closing_the_connection() {
    const LEN: usize = 1 << 20;
    let nodes = Nodes::new().await;
    let mut inbound = nodes.b.accept_streams("/x/tail", 1).unwrap();
    let tunnel = nodes
        .fa
        .forward("/x/tail", LOOPBACK.parse().unwrap(), nodes.b.peer_id())
        .await
        .unwrap();
    let mut client = connect(&tunnel).await;
    let b = nodes.b.clone();
    let a = nodes.a.peer_id();
    let handler = tokio::spawn(async move {
        let mut s = inbound.recv().await.unwrap();
        let mut pattern = Pattern::new(LEN);
        s.stream.write_all(pattern.chunk(0)).await.unwrap();
        s.stream.shutdown().await.unwrap();
        assert_eq!(b.close_peer(&a), 1);
        // The stream lives on until the connection is gone.
        drop(s);
    });
    let (data, end) = within(10, read_all(&mut client)).await;
    within(5, handler).await.unwrap();
    assert_eq!(data.len(), LEN, "{end:?}");
    end.unwrap();
    assert_eq!(data, Pattern::new(LEN).chunk(0));
    nodes.shutdown().await;
}
