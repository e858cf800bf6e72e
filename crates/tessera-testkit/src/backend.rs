//! The store a test server runs on: SQLite in a temporary directory by default, or
//! PostgreSQL when `TESSERA_TEST_DATABASE_URL` is a `postgres://` URL — then every server
//! gets a fresh schema of its own, dropped with everything in it when the test ends.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use sqlx::{Connection, Row};
use tessera_store::Store;
use tessera_store_postgres::{PostgresOptions, PostgresStore};
use tessera_store_sqlite::SqliteStore;

/// The PostgreSQL URL the tests were pointed at, if any.
pub fn postgres_url() -> Option<String> {
    std::env::var("TESSERA_TEST_DATABASE_URL")
        .ok()
        .filter(|u| u.starts_with("postgres://") || u.starts_with("postgresql://"))
}

/// The local PostgreSQL of the development and CI machines, for tests that always need one
/// (multi-node, outage): `TESSERA_TEST_DATABASE_URL` when it is PostgreSQL, else
/// 127.0.0.1:5432 database `test`.
pub fn postgres_url_or_local() -> String {
    postgres_url().unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into())
}

pub enum Backend {
    Sqlite { path: PathBuf },
    Postgres { url: String, schema: PgSchema },
}

impl Backend {
    /// The backend the environment asks for; SQLite files go in `dir`.
    pub fn from_env(dir: &Path) -> Backend {
        match postgres_url() {
            Some(url) => Backend::Postgres {
                url,
                schema: PgSchema::new("it"),
            },
            None => Backend::Sqlite {
                path: dir.join("tessera.db"),
            },
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Sqlite { .. } => "sqlite",
            Backend::Postgres { .. } => "postgres",
        }
    }

    /// A new handle on the store (as a restarted process would open it).
    pub async fn open(&self) -> Arc<dyn Store> {
        match self {
            Backend::Sqlite { path } => Arc::new(SqliteStore::open(path).expect("open sqlite")),
            Backend::Postgres { url, schema } => Arc::new(
                PostgresStore::connect_with(url, schema.options())
                    .await
                    .expect("connect postgres"),
            ),
        }
    }

    /// Every byte the store holds: the SQLite files, or every column of every row of the
    /// PostgreSQL schema (bytea raw, everything else as its text form).
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Backend::Sqlite { path } => {
                let mut all = Vec::new();
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.clone().into_os_string();
                    p.push(suffix);
                    if let Ok(bytes) = std::fs::read(PathBuf::from(p)) {
                        all.extend(bytes);
                    }
                }
                all
            }
            Backend::Postgres { url, schema } => {
                let (url, schema) = (url.clone(), schema.name.clone());
                on_own_runtime(async move { dump_schema(&url, &schema).await })
                    .expect("dump postgres schema")
            }
        }
    }
}

async fn dump_schema(url: &str, schema: &str) -> Result<Vec<u8>, sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    let columns = sqlx::query(
        "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
         WHERE table_schema = $1 ORDER BY table_name, ordinal_position",
    )
    .bind(schema)
    .fetch_all(&mut conn)
    .await?;
    let mut all = Vec::new();
    for c in columns {
        let (table, column, kind): (String, String, String) = (c.get(0), c.get(1), c.get(2));
        let expr = if kind == "bytea" {
            format!("\"{column}\"")
        } else {
            format!("convert_to(\"{column}\"::text, 'UTF8')")
        };
        let sql = format!("SELECT {expr} FROM \"{schema}\".\"{table}\"");
        for row in sqlx::query(&sql).fetch_all(&mut conn).await? {
            let value: Option<Vec<u8>> = row.get(0);
            all.extend(value.unwrap_or_default());
            all.push(b'\n');
        }
    }
    conn.close().await?;
    Ok(all)
}

/// Runs `f` to completion on a runtime of its own (callable from sync code and from
/// within a test's runtime, including while that runtime shuts down).
fn on_own_runtime<T: Send + 'static>(
    f: impl std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(f).map_err(|e| e.to_string())
    })
    .join()
    .map_err(|_| "thread panicked".to_owned())?
}

/// A PostgreSQL schema of its own, dropped with everything in it on drop.
pub struct PgSchema {
    pub name: String,
}

impl PgSchema {
    pub fn new(what: &str) -> PgSchema {
        let mut bytes = [0u8; 6];
        tessera_crypto::fill_random(&mut bytes).expect("random");
        let suffix: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        PgSchema {
            name: format!("tessera_test_{what}_{suffix}"),
        }
    }

    pub fn options(&self) -> PostgresOptions {
        PostgresOptions {
            schema: Some(self.name.clone()),
            ..PostgresOptions::default()
        }
    }

    /// `url` with this schema selected (the form `tessera --database` takes).
    pub fn url(&self, url: &str) -> String {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}schema={}", self.name)
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (name, url) = (self.name.clone(), postgres_url_or_local());
        let done = on_own_runtime(async move { drop_schema(&url, &name).await });
        if let Err(e) = done {
            eprintln!("could not drop test schema {}: {e}", self.name);
        }
    }
}

/// Drops `schema`. The test's own server may be frozen mid-transaction on it (its runtime
/// is the one now running this drop), so a drop that waits for a lock terminates the
/// sessions holding locks in the schema and tries again.
async fn drop_schema(url: &str, schema: &str) -> Result<(), sqlx::Error> {
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query("SET lock_timeout = '1s'")
        .execute(&mut conn)
        .await?;
    let drop = format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE");
    let mut last = Ok(());
    for _ in 0..5 {
        last = sqlx::query(&drop).execute(&mut conn).await.map(|_| ());
        if last.is_ok() {
            break;
        }
        sqlx::query(
            "SELECT pg_terminate_backend(l.pid) FROM pg_locks l
             JOIN pg_class c ON c.oid = l.relation
             JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND l.pid <> pg_backend_pid()",
        )
        .bind(schema)
        .execute(&mut conn)
        .await?;
    }
    conn.close().await?;
    last
}
