//! The reduced crash run (issue 8 §1): five SIGKILLs under mixed load, each restart
//! checked against every acknowledged response.

use std::time::Duration;

use tessera_faults::crash::{run, CrashOptions};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_kills_under_load_lose_nothing_acknowledged() {
    let report = run(&CrashOptions {
        tessera: crate::tessera_binary(),
        postgres: None,
        kills: 5,
        seed: 8,
        workers: 4,
        min_uptime_ms: 400,
        max_uptime_ms: 2500,
        max_duration: Duration::from_secs(60),
    })
    .await
    .unwrap();
    println!("{}", report.table());
    assert!(report.violations.is_empty(), "{}", report.table());
    assert_eq!(report.rounds.len(), 5);
    let c = report.counts;
    assert!(c.code_flows > 0 && c.consents > 0, "{}", report.table());
    assert!(c.refreshes > 0 && c.revocations > 0, "{}", report.table());
    assert!(
        report.checks > 0 && report.final_refreshes > 0,
        "{}",
        report.table()
    );
}

/// The same on PostgreSQL (`TESSERA_TEST_DATABASE_URL`, default the local test database
/// that CI starts), in a fresh schema that the run drops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn five_kills_on_postgresql_lose_nothing_acknowledged() {
    let url = std::env::var("TESSERA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let report = run(&CrashOptions {
        tessera: crate::tessera_binary(),
        postgres: Some(url),
        kills: 5,
        seed: 9,
        workers: 4,
        min_uptime_ms: 400,
        max_uptime_ms: 2500,
        max_duration: Duration::from_secs(60),
    })
    .await
    .unwrap();
    println!("{}", report.table());
    assert!(report.violations.is_empty(), "{}", report.table());
    assert_eq!(report.backend, "PostgreSQL");
    let c = report.counts;
    assert!(c.code_flows > 0 && c.refreshes > 0, "{}", report.table());
    assert!(
        report.checks > 0 && report.final_refreshes > 0,
        "{}",
        report.table()
    );
}
