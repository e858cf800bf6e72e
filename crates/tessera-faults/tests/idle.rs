//! Many idle connections (issue 8 §4): 10,000 of them do not stop new requests from
//! being served. A test binary of its own, because it holds 10,000 descriptors of this
//! process, which would starve the other fault tests running beside it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use tokio::net::TcpStream;

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

/// The soft limit on open files of this process.
fn open_files_limit() -> usize {
    std::fs::read_to_string("/proc/self/limits")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Max open files"))
                .and_then(|l| l.split_whitespace().nth(3))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(1024)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_idle_connections_do_not_stop_new_requests() {
    let dir = tempfile::tempdir().unwrap();
    let tessera = support::tessera_in(dir.path(), "header_read_timeout = 120\n");
    let server = tessera.start().await.unwrap();
    // Both ends live on this machine: 10,000, or as many as this process's open-files
    // limit allows (the server inherits the same limit); the figure is printed.
    let limit = open_files_limit();
    let wanted = 10_000.min(limit.saturating_sub(200));
    assert!(
        wanted >= 1_000,
        "the open-files limit ({limit}) is too low for this test; raise it with ulimit -n"
    );
    let mut idle = Vec::with_capacity(wanted);
    for _ in 0..wanted {
        idle.push(TcpStream::connect(server.addr).await.unwrap());
    }
    // Give the server time to accept them all, then check it holds them.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let held = tessera_faults::soak::open_files(server.pid());
    assert!(
        held as usize >= wanted,
        "server holds {held} files for {wanted} connections"
    );
    let http = reqwest::Client::new();
    for _ in 0..5 {
        served_quickly(&http, &server.origin()).await;
    }
    println!(
        "{wanted} idle connections held (open-files limit {limit}); server has {held} open files"
    );
    drop(idle);
}
