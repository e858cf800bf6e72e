#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shared store conformance suite against a fresh SQLite file.

use std::sync::Arc;

use tessera_store_sqlite::SqliteStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_passes_the_store_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path().join("tessera.db")).unwrap();
    tessera_store::conformance::run_all(Arc::new(store)).await;
}

#[tokio::test]
async fn reopening_keeps_data_and_schema() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    {
        let store = SqliteStore::open(&path).unwrap();
        use tessera_store::Store;
        let client = tessera_store::conformance::sample_client("keep-me");
        store.create_client(&client).await.unwrap();
    }
    let store = SqliteStore::open(&path).unwrap();
    use tessera_store::Store;
    assert!(store.get_client("keep-me").await.unwrap().is_some());
}
