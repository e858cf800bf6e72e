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
