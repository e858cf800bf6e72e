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
