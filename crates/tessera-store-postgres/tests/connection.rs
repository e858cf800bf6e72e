#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! How the store connects to the local PostgreSQL: the session timeouts, and TLS (the
//! server presents its certificate, on Debian the snakeoil one for `localhost`; `.ci/run`
//! turns ssl on where it is off). Each test connects in a fresh schema and checks on the
//! server side what its session got.

use std::path::PathBuf;

use sqlx::Connection;
use tessera_store::{Store, StoreError};
use tessera_store_postgres::{PostgresOptions, PostgresStore, TlsMode, TlsOptions};

fn database_url() -> String {
    std::env::var("TESSERA_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// `database_url()` with its host replaced.
fn url_with_host(host: &str) -> String {
    let url = database_url();
    let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
    url.replacen(options.get_host(), host, 1)
}

/// The certificate file the server presents, read through a plain connection.
async fn server_certificate() -> PathBuf {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        ssl, "on",
        "the test PostgreSQL has ssl off: run the setup in .ci/run"
    );
    let file: String = sqlx::query_scalar("SHOW ssl_cert_file")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    let path = PathBuf::from(file);
    if path.is_absolute() {
        path
    } else {
        panic!("ssl_cert_file {path:?} is relative to the data directory")
    }
}

struct TestSchema {
    name: String,
}

impl TestSchema {
    fn new() -> TestSchema {
        let mut bytes = [0u8; 6];
        tessera_crypto::fill_random(&mut bytes).unwrap();
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        TestSchema {
            name: format!("tessera_test_tls_{suffix}"),
        }
    }

    fn options(&self, tls: TlsOptions) -> PostgresOptions {
        PostgresOptions {
            schema: Some(self.name.clone()),
            tls,
            ..PostgresOptions::default()
        }
    }
}

impl Drop for TestSchema {
    fn drop(&mut self) {
        let sql = format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name);
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

/// Whether the store's own session is encrypted, as the server sees it.
async fn encrypted(store: &PostgresStore) -> bool {
    sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

fn tls(mode: TlsMode, root_cert: Option<PathBuf>) -> TlsOptions {
    TlsOptions {
        mode: Some(mode),
        root_cert,
        ..TlsOptions::default()
    }
}

#[tokio::test]
async fn require_encrypts_without_checking_the_certificate() {
    server_certificate().await;
    let schema = TestSchema::new();
    let store =
        PostgresStore::connect_with(&database_url(), schema.options(tls(TlsMode::Require, None)))
            .await
            .unwrap();
    assert!(encrypted(&store).await);
    store.close().await;
}

#[tokio::test]
async fn disable_stays_in_plain_text() {
    let schema = TestSchema::new();
    let store =
        PostgresStore::connect_with(&database_url(), schema.options(tls(TlsMode::Disable, None)))
            .await
            .unwrap();
    assert!(!encrypted(&store).await);
    store.close().await;
}

#[tokio::test]
async fn the_url_sslmode_still_works() {
    server_certificate().await;
    let schema = TestSchema::new();
    let url = format!("{}?sslmode=require", database_url());
    let store = PostgresStore::connect_with(&url, schema.options(TlsOptions::default()))
        .await
        .unwrap();
    assert!(encrypted(&store).await);
    store.close().await;
}

#[tokio::test]
async fn verify_ca_accepts_the_server_signed_by_the_given_root() {
    let cert = server_certificate().await;
    let schema = TestSchema::new();
    // `localhost`, not 127.0.0.1: sqlx 0.8.6 checks the name in verify-ca too under the
    // rustls it builds with (launchbadge/sqlx#3793), which fails closed.
    let store = PostgresStore::connect_with(
        &url_with_host("localhost"),
        schema.options(tls(TlsMode::VerifyCa, Some(cert))),
    )
    .await
    .unwrap();
    assert!(encrypted(&store).await);
    store.close().await;
}

#[tokio::test]
async fn verify_full_accepts_the_name_on_the_certificate() {
    let cert = server_certificate().await;
    let schema = TestSchema::new();
    // The snakeoil certificate names `localhost`.
    let store = PostgresStore::connect_with(
        &url_with_host("localhost"),
        schema.options(tls(TlsMode::VerifyFull, Some(cert))),
    )
    .await
    .unwrap();
    assert!(encrypted(&store).await);
    store.close().await;
}

fn expect_tls_failure(result: Result<PostgresStore, StoreError>, hint: &str) {
    match result {
        Ok(_) => panic!("connected although the certificate check should fail"),
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("TLS"),
                "not reported as a TLS failure: {text}"
            );
            assert!(text.contains(hint), "{text}");
        }
    }
}

#[tokio::test]
async fn verify_full_refuses_a_host_the_certificate_does_not_name() {
    let cert = server_certificate().await;
    let schema = TestSchema::new();
    let result = PostgresStore::connect_with(
        &url_with_host("127.0.0.1"),
        schema.options(tls(TlsMode::VerifyFull, Some(cert))),
    )
    .await;
    expect_tls_failure(result, "not valid for name");
}

#[tokio::test]
async fn verification_refuses_a_certificate_from_another_root() {
    server_certificate().await;
    let other = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/unrelated-ca.pem");
    for mode in [TlsMode::VerifyCa, TlsMode::VerifyFull] {
        let schema = TestSchema::new();
        let result = PostgresStore::connect_with(
            &url_with_host("localhost"),
            schema.options(tls(mode, Some(other.clone()))),
        )
        .await;
        expect_tls_failure(result, "UnknownIssuer");
    }
}

#[tokio::test]
async fn a_missing_root_certificate_file_is_named() {
    let schema = TestSchema::new();
    let result = PostgresStore::connect_with(
        &database_url(),
        schema.options(tls(
            TlsMode::VerifyFull,
            Some("/nonexistent/tessera-root.pem".into()),
        )),
    )
    .await;
    let err = result.err().expect("refused");
    assert!(
        err.to_string().contains("/nonexistent/tessera-root.pem"),
        "{err}"
    );
}

#[tokio::test]
async fn every_connection_cancels_statements_that_outlive_the_timeout() {
    let schema = TestSchema::new();
    let options = PostgresOptions {
        statement_timeout: std::time::Duration::from_millis(300),
        ..schema.options(TlsOptions::default())
    };
    let store = PostgresStore::connect_with(&database_url(), options)
        .await
        .unwrap();
    for setting in ["statement_timeout", "idle_in_transaction_session_timeout"] {
        let value: String = sqlx::query_scalar(&format!("SHOW {setting}"))
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(value, "300ms", "{setting}");
    }
    let started = std::time::Instant::now();
    let err = sqlx::query("SELECT pg_sleep(5)")
        .execute(store.pool())
        .await
        .unwrap_err();
    let code = err
        .as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned());
    // 57014 query_canceled, which the store reports as Unavailable.
    assert_eq!(code.as_deref(), Some("57014"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
    store.close().await;
}

/// Ends, from another session, every session whose `application_name` is `name`; how many.
async fn terminate_sessions_named(name: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    let ended: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                               WHERE application_name = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(name)
    .fetch_one(&mut conn)
    .await
    .unwrap();
    conn.close().await.unwrap();
    ended
}

#[tokio::test]
async fn connections_the_database_dropped_while_idle_are_replaced_without_a_failed_step() {
    let schema = TestSchema::new();
    // The store's sessions carry a name of their own, so that only they are ended below
    // (other tests share the server).
    let app = format!("{}_pool", schema.name);
    let sep = if database_url().contains('?') {
        '&'
    } else {
        '?'
    };
    let url = format!("{}{sep}application_name={app}", database_url());
    let store = PostgresStore::connect_with(&url, schema.options(TlsOptions::default()))
        .await
        .unwrap();
    for _ in 0..3 {
        store.ping().await.unwrap();
        assert!(store.get_client("nobody").await.unwrap().is_none());
        assert!(
            terminate_sessions_named(&app).await >= 1,
            "the store keeps a pooled session"
        );
        // Idle past the window: the pool checks the connection before handing it out,
        // finds it closed, and opens another instead of failing the step.
        tokio::time::sleep(tessera_store_postgres::PING_IF_IDLE_FOR * 2).await;
        assert!(store.get_client("nobody").await.unwrap().is_none());
        let name: String = sqlx::query_scalar("SELECT current_setting('application_name')")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(name, app, "the new session is the store's own");
    }
    store.close().await;
}
