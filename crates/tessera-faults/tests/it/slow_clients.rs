//! Slow and idle clients (issue 8 §4): slowloris connections are cut off by the
//! header-read and body timeouts, and thousands of idle connections do not stop new
//! requests from being served.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Waits until the server closes the connection (EOF or reset); returns what it sent.
async fn until_closed(mut reader: tokio::net::tcp::OwnedReadHalf) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return String::from_utf8_lossy(&got).into_owned(),
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// A fresh request on a fresh connection must be answered quickly.
async fn served_quickly(http: &reqwest::Client, origin: &str) {
    let started = Instant::now();
    let resp = http
        .get(format!("{origin}/health/ready"))
        .send()
        .await
        .expect("a new request is served");
    assert_eq!(resp.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "a new request took {:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_headers_and_trickled_bodies_are_cut_off_while_others_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = crate::tessera_in(dir.path(), "header_read_timeout = 2\nrequest_timeout = 2\n");
    let server = tessera.start().await.unwrap();
    let origin = server.origin();
    let mut slow = tokio::task::JoinSet::new();
    for i in 0..300 {
        let addr = server.addr;
        let body = i % 3 == 0;
        slow.spawn(async move {
            let started = Instant::now();
            let (reader, mut writer) = TcpStream::connect(addr).await.unwrap().into_split();
            let head: &[u8] = if body {
                b"POST /oauth2/token HTTP/1.1\r\nHost: t\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\n"
            } else {
                b"GET /health/live HTTP/1.1\r\nHost: t\r\n"
            };
            writer.write_all(head).await.unwrap();
            // Trickle one more byte (or header) every 300 ms, never finishing.
            let trickle = tokio::spawn(async move {
                for _ in 0..100 {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                    let more: &[u8] = if body { b"a" } else { b"X-Slow: 1\r\n" };
                    if writer.write_all(more).await.is_err() {
                        break;
                    }
                }
            });
            let answer = until_closed(reader).await;
            trickle.abort();
            (body, started.elapsed(), answer)
        });
    }
    // While they trickle, new clients are served at once.
    let http = reqwest::Client::new();
    for _ in 0..10 {
        served_quickly(&http, &origin).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while let Some(done) = slow.join_next().await {
        let (body, took, answer) = done.unwrap();
        assert!(
            took < Duration::from_secs(6),
            "a slow client (body: {body}) held its connection for {took:?}"
        );
        if body {
            // A trickled body gets an answer, not a silent hang.
            assert!(answer.starts_with("HTTP/1.1 4"), "{answer}");
        }
    }
    served_quickly(&http, &origin).await;
}
