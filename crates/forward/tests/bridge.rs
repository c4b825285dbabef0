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
