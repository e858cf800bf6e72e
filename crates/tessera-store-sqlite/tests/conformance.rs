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

/// A combined read that fails half-way (a client row whose settings do not parse) ends
/// its read transaction: the connection goes back to the pool only outside a
/// transaction, so later reads see later writes instead of the failed read's snapshot.
#[tokio::test]
async fn a_failed_combined_read_leaves_no_stale_snapshot() {
    use tessera_store::Store;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let store = SqliteStore::open(&path).unwrap();
    let client = tessera_store::conformance::sample_client("broken");
    store.create_client(&client).await.unwrap();
    let raw = rusqlite::Connection::open(&path).unwrap();
    raw.execute(
        "UPDATE clients SET settings = 'not json' WHERE id = 'broken'",
        [],
    )
    .unwrap();
    for _ in 0..3 {
        assert!(store
            .get_client_and_access_token("broken", &[1; 32])
            .await
            .is_err());
        assert!(store
            .get_client_and_refresh_token("broken", &[1; 32])
            .await
            .is_err());
    }
    let later = tessera_store::conformance::sample_client("later");
    store.create_client(&later).await.unwrap();
    for _ in 0..3 {
        let (found, _) = store
            .get_client_and_access_token("later", &[1; 32])
            .await
            .unwrap();
        assert_eq!(found.map(|c| c.id).as_deref(), Some("later"));
    }
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

/// Upgrading a store from before grant bounds (schema 6): each grant's bound becomes the
/// latest expiry of its tokens, so the janitor keeps every grant a live token needs and
/// prunes the others, and the token tables lose their grant indexes.
#[tokio::test]
async fn upgrading_gives_each_grant_the_latest_expiry_of_its_tokens() {
    use tessera_store::Store;
    const NOW: i64 = 1_800_000_000;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tessera.db");
    let (live_at, live_rt) = ([1u8; 32], [2u8; 32]);
    {
        let conn = rusqlite::Connection::open(&path).unwrap();
        for sql in &tessera_store_sqlite::migrations::MIGRATIONS[..6] {
            conn.execute_batch(sql).unwrap();
        }
        conn.pragma_update(None, "user_version", 6).unwrap();
        for grant in ["live", "dead", "empty"] {
            conn.execute(
                "INSERT INTO grants (id, client_id, user_id, tenant, scope, audiences, created_at)
                 VALUES (?1, 'app', 'u', 'default', 'openid offline_access', '[]', ?2)",
                rusqlite::params![grant, NOW - 10_000],
            )
            .unwrap();
        }
        let token = |table: &str, hash: [u8; 32], grant: &str, expires_at: i64| {
            let sql = match table {
                "access" => {
                    "INSERT INTO access_tokens (hash, grant_id, client_id, user_id, tenant, scope,
                     audiences, issued_at, expires_at) VALUES (?1, ?2, 'app', 'u', 'default',
                     'openid offline_access', '[]', ?3, ?4)"
                }
                _ => {
                    "INSERT INTO refresh_tokens (hash, grant_id, issued_at, expires_at, state)
                     VALUES (?1, ?2, ?3, ?4, 'active')"
                }
            };
            conn.execute(
                sql,
                rusqlite::params![hash.as_slice(), grant, NOW - 100, expires_at],
            )
            .unwrap();
        };
        token("access", live_at, "live", NOW + 3600);
        token("refresh", live_rt, "live", NOW + 86_400);
        token("access", [3u8; 32], "dead", NOW - 50);
        token("refresh", [4u8; 32], "dead", NOW - 40);
    }

    let store = SqliteStore::open(&path).unwrap();
    while store
        .prune_expired(NOW + 3601, 0, 1000)
        .await
        .unwrap()
        .total()
        > 0
    {}
    let rt = store.get_refresh_token(&live_rt).await.unwrap();
    assert!(
        rt.is_some_and(|r| r.is_active(NOW + 3601)),
        "the live refresh token keeps its grant"
    );
    assert!(store.get_access_token(&live_at).await.unwrap().is_none());
    drop(store);

    let conn = rusqlite::Connection::open(&path).unwrap();
    let grants: Vec<(String, i64)> = conn
        .prepare("SELECT id, expires_at FROM grants ORDER BY id")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(grants, vec![("live".to_owned(), NOW + 86_400)]);
    // Migration 8 leaves the bound to the store's own inserts (`raise_grant_bound`;
    // conformance: `a_grant_outlives_every_token_issued_under_it`): no trigger remains to
    // turn each token insert into a statement SQLite must journal.
    let triggers: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(triggers, 0);
    let indexes: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'index' AND name LIKE '%grant%'")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        !indexes
            .iter()
            .any(|i| i == "access_tokens_grant" || i == "refresh_tokens_grant"),
        "{indexes:?}"
    );
}
