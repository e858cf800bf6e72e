#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The shared store conformance suite against PostgreSQL, each test in a fresh schema
//! (`TESSERA_TEST_DATABASE_URL`, default postgres://postgres@127.0.0.1:5432/test).

use std::sync::Arc;

use sqlx::Connection;
use tessera_store::{Store, StoreError};
use tessera_store_postgres::{PostgresOptions, PostgresStore};

fn database_url() -> String {
    std::env::var("TESSERA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A schema of its own for one test, dropped (with everything in it) on drop.
struct TestSchema {
    name: String,
}

impl TestSchema {
    fn new(what: &str) -> TestSchema {
        let mut bytes = [0u8; 6];
        tessera_crypto::fill_random(&mut bytes).unwrap();
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        TestSchema {
            name: format!("tessera_test_{what}_{suffix}"),
        }
    }

    fn options(&self) -> PostgresOptions {
        PostgresOptions {
            schema: Some(self.name.clone()),
            ..PostgresOptions::default()
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
        // On its own runtime: the test's runtime may be shutting down.
        let done = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&database_url()).await?;
                sqlx::Executor::execute(&mut conn, sqlx::raw_sql(&sql)).await?;
                conn.close().await
            })
        })
        .join();
        if !matches!(done, Ok(Ok(()))) {
            eprintln!("could not drop test schema {}: {done:?}", self.name);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_passes_the_store_conformance_suite() {
    let schema = TestSchema::new("conf");
    let store = PostgresStore::connect_with(&database_url(), schema.options())
        .await
        .unwrap();
    let store = Arc::new(store);
    tessera_store::conformance::run_all(store.clone()).await;
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_once_and_both_succeed() {
    let schema = TestSchema::new("mig");
    let url = database_url();
    let (a, b, c) = tokio::join!(
        PostgresStore::connect_with(&url, schema.options()),
        PostgresStore::connect_with(&url, schema.options()),
        PostgresStore::connect_with(&url, schema.options()),
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    let client = tessera_store::conformance::sample_client("made-at-a");
    a.create_client(&client).await.unwrap();
    assert!(b.get_client("made-at-a").await.unwrap().is_some());
    assert!(c.get_tenant("default").await.unwrap().is_some());
    let versions: Vec<i64> = sqlx::query_scalar("SELECT version FROM tessera_schema_version")
        .fetch_all(a.pool())
        .await
        .unwrap();
    assert_eq!(versions.len(), 1, "one version row: {versions:?}");
    assert!(versions[0] >= 1);
    let tenants: i64 = sqlx::query_scalar("SELECT count(*) FROM tenants WHERE id = 'default'")
        .fetch_one(a.pool())
        .await
        .unwrap();
    assert_eq!(tenants, 1, "the default tenant is created once");
    // Reconnecting to a migrated schema keeps the data.
    drop((a, b, c));
    let again = PostgresStore::connect_with(&url, schema.options())
        .await
        .unwrap();
    assert!(again.get_client("made-at-a").await.unwrap().is_some());
    again.close().await;
}

#[tokio::test]
async fn schema_can_be_named_in_the_url() {
    let schema = TestSchema::new("url");
    let url = format!("{}?schema={}", database_url(), schema.name);
    let store = PostgresStore::connect(&url).await.unwrap();
    store.ping().await.unwrap();
    let path: String = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(path, schema.name);
    store.close().await;
}

#[tokio::test]
async fn an_unreachable_database_is_unavailable_and_fails_fast() {
    // Nothing listens on port 1 of the loopback address.
    let started = std::time::Instant::now();
    let result = PostgresStore::connect_with(
        "postgres://postgres@127.0.0.1:1/test",
        PostgresOptions {
            acquire_timeout: std::time::Duration::from_secs(2),
            ..PostgresOptions::default()
        },
    )
    .await;
    assert!(
        matches!(result, Err(StoreError::Unavailable(_))),
        "{:?}",
        result.err()
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}

#[tokio::test]
async fn a_closed_pool_is_unavailable() {
    let schema = TestSchema::new("closed");
    let store = PostgresStore::connect_with(&database_url(), schema.options())
        .await
        .unwrap();
    store.close().await;
    assert!(matches!(
        store.ping().await,
        Err(StoreError::Unavailable(_))
    ));
}

/// Upgrading a store from before grant bounds (schema 6): each grant's bound becomes the
/// latest expiry of its tokens, so the janitor keeps every grant a live token needs and
/// prunes the others, and the token tables lose their grant indexes.
#[tokio::test]
async fn upgrading_gives_each_grant_the_latest_expiry_of_its_tokens() {
    const NOW: i64 = 1_800_000_000;
    let schema = TestSchema::new("upgrade");
    let (live_at, live_rt) = ([1u8; 32], [2u8; 32]);
    {
        let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
        let setup = format!(
            "CREATE SCHEMA \"{0}\"; SET search_path TO \"{0}\";
             CREATE TABLE tessera_schema_version (version BIGINT NOT NULL);
             INSERT INTO tessera_schema_version (version) VALUES (6);",
            schema.name
        );
        sqlx::raw_sql(&setup).execute(&mut conn).await.unwrap();
        for sql in &tessera_store_postgres::migrations::MIGRATIONS[..6] {
            sqlx::raw_sql(sql).execute(&mut conn).await.unwrap();
        }
        for grant in ["live", "dead", "empty"] {
            sqlx::query(
                "INSERT INTO grants (id, client_id, user_id, tenant, scope, audiences, created_at)
                 VALUES ($1, 'app', 'u', 'default', 'openid offline_access', '[]', $2)",
            )
            .bind(grant)
            .bind(NOW - 10_000)
            .execute(&mut conn)
            .await
            .unwrap();
        }
        for (table, hash, grant, expires_at) in [
            ("access", live_at, "live", NOW + 3600),
            ("refresh", live_rt, "live", NOW + 86_400),
            ("access", [3u8; 32], "dead", NOW - 50),
            ("refresh", [4u8; 32], "dead", NOW - 40),
        ] {
            let sql = match table {
                "access" => {
                    "INSERT INTO access_tokens (hash, grant_id, client_id, user_id, tenant, scope,
                     audiences, issued_at, expires_at) VALUES ($1, $2, 'app', 'u', 'default',
                     'openid offline_access', '[]', $3, $4)"
                }
                _ => {
                    "INSERT INTO refresh_tokens (hash, grant_id, issued_at, expires_at, state)
                     VALUES ($1, $2, $3, $4, 'active')"
                }
            };
            sqlx::query(sql)
                .bind(hash.as_slice())
                .bind(grant)
                .bind(NOW - 100)
                .bind(expires_at)
                .execute(&mut conn)
                .await
                .unwrap();
        }
        conn.close().await.unwrap();
    }

    let store = PostgresStore::connect_with(&database_url(), schema.options())
        .await
        .unwrap();
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
    let grants: Vec<(String, i64)> =
        sqlx::query_as("SELECT id, expires_at FROM grants ORDER BY id")
            .fetch_all(store.pool())
            .await
            .unwrap();
    assert_eq!(grants, vec![("live".to_owned(), NOW + 86_400)]);
    // A token stored as a version before 7 stored it (nothing but the row: a node not yet
    // upgraded) still raises its grant's bound, to one more lifetime past it.
    sqlx::query(
        "INSERT INTO refresh_tokens (hash, grant_id, issued_at, expires_at, state)
         VALUES ($1, 'live', $2, $3, 'active')",
    )
    .bind([5u8; 32].as_slice())
    .bind(NOW + 100)
    .bind(NOW + 200_100)
    .execute(store.pool())
    .await
    .unwrap();
    let bound: i64 = sqlx::query_scalar("SELECT expires_at FROM grants WHERE id = 'live'")
        .fetch_one(store.pool())
        .await
        .unwrap();
    assert_eq!(bound, NOW + 200_100 + 200_000);
    let indexes: Vec<String> = sqlx::query_scalar(
        "SELECT indexname::text FROM pg_indexes WHERE schemaname = current_schema()
         AND indexname IN ('access_tokens_grant', 'refresh_tokens_grant')",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert!(indexes.is_empty(), "{indexes:?}");
    store.close().await;
}
