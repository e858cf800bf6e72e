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

/// The CLI changes clients from another process while the server runs: the server's
/// next lookup must see the change (and a deletion), however often it read the client
/// before.
#[tokio::test]
async fn a_client_changed_through_another_connection_is_seen_at_the_next_lookup() {
    use tessera_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let server = SqliteStore::open(&path).unwrap();
    let mut client = tessera_store::conformance::sample_client("shared");
    server.create_client(&client).await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            server
                .get_client("shared")
                .await
                .unwrap()
                .unwrap()
                .redirect_uris,
            client.redirect_uris
        );
    }
    let cli = SqliteStore::open(&path).unwrap();
    client.redirect_uris = vec!["https://elsewhere.example/cb".into()];
    client.require_pkce = !client.require_pkce;
    assert!(cli.update_client(&client).await.unwrap());
    cli.set_client_secret("shared", &[7; 32]).await.unwrap();
    let seen = server.get_client("shared").await.unwrap().unwrap();
    assert_eq!(seen.redirect_uris, client.redirect_uris);
    assert_eq!(seen.require_pkce, client.require_pkce);
    assert_eq!(seen.secret_hash, Some([7; 32]));
    assert!(cli.delete_client("shared").await.unwrap());
    assert!(server.get_client("shared").await.unwrap().is_none());
}

/// Frames written by the writer reach the database file without the writer checkpointing
/// (its automatic checkpoint is off): the background checkpointer copies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_writes_are_checkpointed_in_the_background() {
    use tessera_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = Arc::new(SqliteStore::open(&path).unwrap());
    let mut writes = Vec::new();
    for i in 0..200 {
        let store = store.clone();
        writes.push(tokio::spawn(async move {
            let client = tessera_store::conformance::sample_client(&format!("client-{i}"));
            store.create_client(&client).await.unwrap();
        }));
    }
    for w in writes {
        w.await.unwrap();
    }
    // A passive checkpoint of our own copies nothing more once the checkpointer has run;
    // poll for it with a deadline well above its interval.
    let probe = rusqlite::Connection::open(&path).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let wal_bytes = std::fs::metadata(dir.path().join("tessera.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0);
        let db_pages: i64 = probe
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let file_pages = std::fs::metadata(&path).unwrap().len() as i64 / 4096;
        // The database file holds every page the schema and the 200 clients need.
        if wal_bytes > 0 && file_pages >= db_pages {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file never caught up with the WAL ({file_pages} of {db_pages} pages)"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(store.list_clients().await.unwrap().len(), 200);
}

/// The SQLite this crate links was built with the options in `.cargo/config.toml`: no
/// memory counters and no shared page cache, each of which put a global mutex on the path
/// of every lookup and every write.
#[test]
fn sqlite_is_built_without_global_allocation_locks() {
    let conn = rusqlite::Connection::open_in_memory().unwrap();
    let mut stmt = conn.prepare("PRAGMA compile_options").unwrap();
    let options: Vec<String> = stmt
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        options.iter().any(|o| o == "DEFAULT_MEMSTATUS=0"),
        "{options:?}"
    );
    assert!(
        !options.iter().any(|o| o == "ENABLE_MEMORY_MANAGEMENT"),
        "{options:?}"
    );
}
