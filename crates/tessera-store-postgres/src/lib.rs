//! The PostgreSQL store: many stateless Tessera nodes on one database.
//!
//! Every atomic protocol step is one transaction whose decision is a conditional
//! `UPDATE … WHERE <still unused>`: under READ COMMITTED a second, concurrent update of the
//! same row waits for the first to commit, re-checks its `WHERE` against the new row
//! version and matches nothing, so exactly one caller redeems a code or rotates a refresh
//! token, whichever node it runs on. Nothing is written for a loser: its transaction is
//! rolled back (or commits only the no-op).
//!
//! Migrations run at connect on a dedicated connection holding a session-level
//! `pg_advisory_lock` (keyed by the `search_path`), so when several nodes start at once one
//! migrates and the others wait, then find nothing left to do. `tessera_schema_version`
//! records how many migrations were applied.
//!
//! The pool fails fast: when no connection can be had within `acquire_timeout` (the
//! database is down or saturated) a step fails with [`StoreError::Unavailable`], which the
//! server answers with 503 / `temporarily_unavailable`.

/// Public so that upgrade tests can build a store at an older schema.
pub mod migrations;
mod tls;

use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Connection, Executor, Postgres, QueryBuilder, Row};
use tessera_core::client::Client;
use tessera_core::keys::{KeyRetirement, SigningKeyRecord};
use tessera_core::model::{
    AccessToken, AuditEvent, AuthorizationCode, Consent, Grant, Hash, Pruned, RefreshToken,
    Rotation, Session, Tenant, TokenState, User,
};
use tessera_core::personal_token::PersonalAccessToken;
use tessera_core::{ScopeSet, UnixTime};
use tessera_store::{
    Issuance, RefreshLookup, SharedCounters, Store, StoreError, StoreResult, Swap,
};

pub use tls::{TlsMode, TlsOptions};

/// Pool size when none is configured.
pub const DEFAULT_MAX_CONNECTIONS: u32 = 10;
/// How long a step waits for a pooled connection before failing as `Unavailable`.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest a statement may run (or a transaction sit idle) on the server before PostgreSQL
/// cancels it; Tessera's statements take milliseconds, so this only cuts off lock waits
/// behind a frozen node and an overloaded database.
pub const DEFAULT_STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A pooled connection that was idle for less than this is handed out without a ping.
/// sqlx's default pings every connection it hands out, a round trip more for every store
/// call: without it refresh is 15–30 % and cc 18–33 % faster (docs/benchmarks.md, item
/// 48). A connection idle for longer is pinged first, so that one the database dropped
/// while this node was quiet (a restart, an idle-session timeout) is replaced instead of
/// failing a request (HikariCP's `aliveBypassWindowMs` is the same rule). One dropped
/// while in use fails its step with `Unavailable` (503), as during an outage.
pub const PING_IF_IDLE_FOR: Duration = Duration::from_millis(500);
/// First key of the migration advisory lock ("tess"); the second is the search path's hash.
const LOCK_CLASS: i32 = 0x7465_7373;

/// Connection settings beyond the URL.
#[derive(Debug, Clone)]
pub struct PostgresOptions {
    /// Most connections this node keeps open.
    pub max_connections: u32,
    /// Longest wait for a connection (including the first one) before failing.
    pub acquire_timeout: Duration,
    /// The schema holding Tessera's tables (set as `search_path` on every connection and
    /// created when missing). `None`: the `schema` parameter of the URL if any, else the
    /// server's default search path (usually `public`).
    pub schema: Option<String>,
    /// `statement_timeout` and `idle_in_transaction_session_timeout` of every connection
    /// (zero: the server's own settings).
    pub statement_timeout: Duration,
    /// TLS to the database; the URL's `sslmode`/`sslrootcert`/… apply where this is unset.
    pub tls: TlsOptions,
}

impl Default for PostgresOptions {
    fn default() -> Self {
        PostgresOptions {
            max_connections: DEFAULT_MAX_CONNECTIONS,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            schema: None,
            statement_timeout: DEFAULT_STATEMENT_TIMEOUT,
            tls: TlsOptions::default(),
        }
    }
}

pub struct PostgresStore {
    pool: PgPool,
}

fn map_err(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => {
            let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
            match code.as_str() {
                "23505" => StoreError::Conflict(e.to_string()),
                "23503" => StoreError::NotFound(e.to_string()),
                // Connection exceptions, insufficient resources, operator intervention
                // (shutdown, cannot connect now), read-only transaction, lock or
                // statement timeouts, serialization failures and deadlocks: transient.
                c if c.starts_with("08")
                    || c.starts_with("53")
                    || c.starts_with("57P")
                    || matches!(c, "25006" | "55P03" | "57014" | "40001" | "40P01") =>
                {
                    StoreError::Unavailable(e.to_string())
                }
                _ => StoreError::Internal(e.to_string()),
            }
        }
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable(e.to_string()),
        _ => StoreError::Internal(e.to_string()),
    }
}

/// What every pooled connection runs first: the search path, and the timeouts that keep a
/// statement stuck behind a lock (or a transaction left open by a frozen node) from
/// holding a request, or the rows it locked, for longer than `statement_timeout`.
fn session_settings(set_path: Option<&str>, statement_timeout: Duration) -> Option<String> {
    let mut sql: Vec<String> = set_path.map(str::to_owned).into_iter().collect();
    let millis = statement_timeout.as_millis();
    if millis > 0 {
        sql.push(format!("SET statement_timeout = {millis}"));
        sql.push(format!(
            "SET idle_in_transaction_session_timeout = {millis}"
        ));
    }
    (!sql.is_empty()).then(|| sql.join("; "))
}

/// A schema name is put into SQL text (`SET search_path`, `CREATE SCHEMA`), so only plain
/// identifiers are accepted.
fn validate_schema(schema: &str) -> StoreResult<()> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !schema.as_bytes()[0].is_ascii_digit();
    if ok {
        Ok(())
    } else {
        Err(StoreError::Internal(format!(
            "invalid PostgreSQL schema name {schema:?}: use lowercase letters, digits and _"
        )))
    }
}

/// Removes Tessera's own `schema=NAME` parameter from the URL (the driver does not know
/// it) and returns it.
fn split_schema(url: &str) -> (String, Option<String>) {
    let Some((base, query)) = url.split_once('?') else {
        return (url.to_owned(), None);
    };
    let mut schema = None;
    let rest: Vec<&str> = query
        .split('&')
        .filter(|pair| match pair.strip_prefix("schema=") {
            Some(name) => {
                schema = Some(name.to_owned());
                false
            }
            None => !pair.is_empty(),
        })
        .collect();
    if rest.is_empty() {
        (base.to_owned(), schema)
    } else {
        (format!("{base}?{}", rest.join("&")), schema)
    }
}

async fn migrate(conn: &mut PgConnection, schema: Option<&str>) -> StoreResult<()> {
    const LOCK_KEY: &str = "hashtext(current_setting('search_path'))";
    sqlx::query(&format!("SELECT pg_advisory_lock($1, {LOCK_KEY})"))
        .bind(LOCK_CLASS)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    let result = migrate_locked(conn, schema).await;
    // Also released when the connection closes, which the caller does next.
    let _ = sqlx::query(&format!("SELECT pg_advisory_unlock($1, {LOCK_KEY})"))
        .bind(LOCK_CLASS)
        .execute(&mut *conn)
        .await;
    result
}

async fn migrate_locked(conn: &mut PgConnection, schema: Option<&str>) -> StoreResult<()> {
    if let Some(s) = schema {
        conn.execute(sqlx::raw_sql(&format!(
            "CREATE SCHEMA IF NOT EXISTS \"{s}\""
        )))
        .await
        .map_err(map_err)?;
    }
    conn.execute(sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS tessera_schema_version (version BIGINT NOT NULL)",
    ))
    .await
    .map_err(map_err)?;
    let current: Option<i64> =
        sqlx::query_scalar("SELECT max(version) FROM tessera_schema_version")
            .fetch_one(&mut *conn)
            .await
            .map_err(map_err)?;
    let current = match current {
        Some(v) => v,
        None => {
            sqlx::query("INSERT INTO tessera_schema_version (version) VALUES (0)")
                .execute(&mut *conn)
                .await
                .map_err(map_err)?;
            0
        }
    };
    let known = migrations::MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Internal(format!(
            "the store was migrated by a newer Tessera (schema {current}, this build knows {known})"
        )));
    }
    for (i, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(current.max(0) as usize)
    {
        let mut tx = conn.begin().await.map_err(map_err)?;
        tx.execute(sqlx::raw_sql(sql)).await.map_err(map_err)?;
        sqlx::query("UPDATE tessera_schema_version SET version = $1")
            .bind(i as i64 + 1)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        tracing::info!(version = i + 1, "applied PostgreSQL migration");
    }
    Ok(())
}

impl PostgresStore {
    /// Whether `url` names a PostgreSQL database.
    pub fn is_postgres_url(url: &str) -> bool {
        url.starts_with("postgres://") || url.starts_with("postgresql://")
    }

    /// Connects with default [`PostgresOptions`] and applies migrations.
    pub async fn connect(url: &str) -> StoreResult<PostgresStore> {
        PostgresStore::connect_with(url, PostgresOptions::default()).await
    }

    /// Connects (failing within `acquire_timeout` when the database cannot be reached),
    /// then applies migrations under an advisory lock. The URL may carry `schema=NAME`.
    pub async fn connect_with(url: &str, options: PostgresOptions) -> StoreResult<PostgresStore> {
        let (url, url_schema) = split_schema(url);
        let schema = options.schema.clone().or(url_schema);
        if let Some(s) = &schema {
            validate_schema(s)?;
        }
        let connect: PgConnectOptions = url
            .parse()
            .map_err(|e| StoreError::Internal(format!("invalid PostgreSQL URL: {e}")))?;
        let connect = options.tls.apply(connect)?;
        let set_path = schema
            .as_ref()
            .map(|s| format!("SET search_path TO \"{s}\""));
        // Plain SETs rather than a startup `options` parameter: poolers such as PgBouncer
        // reject the latter. The migration connection below keeps no statement timeout,
        // since building an index on a large table may take long.
        let after_connect_sql = session_settings(set_path.as_deref(), options.statement_timeout);
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= PING_IF_IDLE_FOR {
                        // An error closes this connection; the pool opens another.
                        conn.ping().await?;
                    }
                    Ok(true)
                })
            })
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _meta| {
                let sql = after_connect_sql.clone();
                Box::pin(async move {
                    if let Some(sql) = sql {
                        conn.execute(sqlx::raw_sql(&sql)).await?;
                    }
                    Ok(())
                })
            })
            .connect_with(connect.clone())
            .await
            .map_err(tls::explain)?;

        // A connection of its own, so that the session lock dies with it whatever happens.
        let mut conn = tokio::time::timeout(
            options.acquire_timeout,
            PgConnection::connect_with(&connect),
        )
        .await
        .map_err(|_| StoreError::Unavailable("timed out connecting to PostgreSQL".into()))?
        .map_err(map_err)?;
        if let Some(sql) = &set_path {
            conn.execute(sqlx::raw_sql(sql)).await.map_err(map_err)?;
        }
        let migrated = migrate(&mut conn, schema.as_deref()).await;
        let _ = conn.close().await;
        migrated?;
        Ok(PostgresStore { pool })
    }

    /// The connection pool (for readiness details and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Closes every connection; later steps fail as `Unavailable`.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn begin(&self) -> StoreResult<sqlx::Transaction<'static, Postgres>> {
        self.pool.begin().await.map_err(map_err)
    }

    /// Runs a combined read (`$1` the client id, `$2` the token hash, the client's columns
    /// left-joined): its one row, and the client in it if there is one.
    async fn combined_read(
        &self,
        sql: &'static str,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<(PgRow, Option<Client>)> {
        let row = sqlx::query(sql)
            .bind(storable(client_id).then_some(client_id))
            .bind(token_hash.as_slice())
            .fetch_one(&self.pool)
            .await
            .map_err(map_err)?;
        let client = joined(&row, "settings", client_from)?;
        Ok((row, client))
    }
}

fn get<'r, T>(row: &'r PgRow, col: &str) -> StoreResult<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(col).map_err(map_err)
}

fn to_hash(bytes: &[u8]) -> StoreResult<Hash> {
    <[u8; 32]>::try_from(bytes).map_err(|_| StoreError::Internal("hash is not 32 bytes".into()))
}

fn hash_of(row: &PgRow, col: &str) -> StoreResult<Hash> {
    let bytes: Vec<u8> = get(row, col)?;
    to_hash(&bytes)
}

/// PostgreSQL text cannot hold NUL, so no stored key contains one: a lookup by such a key
/// (hostile input) finds nothing instead of failing the query.
fn storable(key: &str) -> bool {
    !key.contains('\0')
}

fn rotation_from(row: &PgRow) -> StoreResult<Option<Rotation>> {
    let at: Option<UnixTime> = get(row, "rotated_at")?;
    Ok(match (at, opt_hash_of(row, "successor_hash")?) {
        (Some(at), Some(successor)) => Some(Rotation {
            at,
            successor,
            sealed_successor: get(row, "successor_sealed")?,
        }),
        _ => None,
    })
}

fn opt_hash_of(row: &PgRow, col: &str) -> StoreResult<Option<Hash>> {
    let bytes: Option<Vec<u8>> = get(row, col)?;
    bytes.map(|b| to_hash(&b)).transpose()
}

fn scope_of(row: &PgRow, col: &str) -> StoreResult<ScopeSet> {
    let s: String = get(row, col)?;
    ScopeSet::parse(&s).map_err(|e| StoreError::Internal(format!("stored scope: {e}")))
}

fn audiences_of(row: &PgRow, col: &str) -> StoreResult<Vec<String>> {
    let s: String = get(row, col)?;
    serde_json::from_str(&s).map_err(|e| StoreError::Internal(format!("stored audiences: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

/// The columns `access_token_from` reads (`a`: the token, `g`: its grant). A macro, so that
/// the queries built with it are constant strings.
macro_rules! access_token_columns {
    () => {
        "a.hash, a.grant_id, a.client_id, a.user_id, a.tenant, a.scope, a.audiences,
         a.issued_at, a.expires_at,
         (a.revoked_at IS NOT NULL OR g.revoked_at IS NOT NULL) AS revoked"
    };
}

fn access_token_from(r: &PgRow) -> StoreResult<AccessToken> {
    Ok(AccessToken {
        hash: hash_of(r, "hash")?,
        grant_id: get(r, "grant_id")?,
        client_id: get(r, "client_id")?,
        user_id: get(r, "user_id")?,
        tenant: get(r, "tenant")?,
        scope: scope_of(r, "scope")?,
        audiences: audiences_of(r, "audiences")?,
        issued_at: get(r, "issued_at")?,
        expires_at: get(r, "expires_at")?,
        revoked: get(r, "revoked")?,
    })
}

/// The columns `refresh_token_from` reads (`r`: the token, `g`: its grant).
macro_rules! refresh_token_columns {
    () => {
        "r.hash, r.access_token_hash, r.issued_at, r.expires_at, r.state,
         r.rotated_at, r.successor_hash, r.successor_sealed,
         g.id AS grant_id, g.client_id, g.user_id, g.tenant, g.scope, g.audiences,
         g.auth_time, g.created_at, g.sid, (g.revoked_at IS NOT NULL) AS grant_revoked"
    };
}

fn refresh_token_from(r: &PgRow) -> StoreResult<RefreshToken> {
    let state: String = get(r, "state")?;
    Ok(RefreshToken {
        hash: hash_of(r, "hash")?,
        grant: grant_from(r)?,
        access_token_hash: opt_hash_of(r, "access_token_hash")?,
        issued_at: get(r, "issued_at")?,
        expires_at: get(r, "expires_at")?,
        state: TokenState::parse(&state).unwrap_or(TokenState::Revoked),
        grant_revoked: get(r, "grant_revoked")?,
        rotation: rotation_from(r)?,
    })
}

/// Whether a left-joined part of a row was found: `col` is one of its NOT NULL columns.
fn present(row: &PgRow, col: &str) -> StoreResult<bool> {
    use sqlx::ValueRef;
    Ok(!row.try_get_raw(col).map_err(map_err)?.is_null())
}

/// A left-joined part of a row, read by `read` if it was found (`col`: one of its NOT NULL
/// columns).
fn joined<T>(
    row: &PgRow,
    col: &str,
    read: impl FnOnce(&PgRow) -> StoreResult<T>,
) -> StoreResult<Option<T>> {
    present(row, col)?.then(|| read(row)).transpose()
}

fn user_from(row: &PgRow) -> StoreResult<User> {
    Ok(User {
        id: get(row, "id")?,
        tenant: get(row, "tenant")?,
        username: get(row, "username")?,
        email: get(row, "email")?,
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        created_at: get(row, "created_at")?,
    })
}

fn client_from(row: &PgRow) -> StoreResult<Client> {
    let settings: String = get(row, "settings")?;
    let mut client: Client = serde_json::from_str(&settings)
        .map_err(|e| StoreError::Internal(format!("stored client settings: {e}")))?;
    client.secret_hash = opt_hash_of(row, "secret_hash")?;
    Ok(client)
}

fn grant_from(row: &PgRow) -> StoreResult<Grant> {
    Ok(Grant {
        id: get(row, "grant_id")?,
        client_id: get(row, "client_id")?,
        user_id: get(row, "user_id")?,
        tenant: get(row, "tenant")?,
        scope: scope_of(row, "scope")?,
        audiences: audiences_of(row, "audiences")?,
        auth_time: get(row, "auth_time")?,
        sid: get(row, "sid")?,
        created_at: get(row, "created_at")?,
    })
}

fn tenant_from(row: &PgRow) -> StoreResult<Tenant> {
    Ok(Tenant {
        id: get(row, "id")?,
        created_at: get(row, "created_at")?,
    })
}

fn key_from(row: &PgRow) -> StoreResult<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: get(row, "kid")?,
        alg: get(row, "alg")?,
        sealed: get(row, "sealed")?,
        created_at: get(row, "created_at")?,
        activates_at: get(row, "activates_at")?,
        retires_at: get(row, "retires_at")?,
        publish_until: get(row, "publish_until")?,
    })
}

fn audit_from(row: &PgRow) -> StoreResult<AuditEvent> {
    Ok(AuditEvent {
        at: get(row, "at")?,
        kind: get(row, "kind")?,
        tenant: get(row, "tenant")?,
        actor: get(row, "actor")?,
        client_id: get(row, "client_id")?,
        ip: get(row, "ip")?,
        request_id: get(row, "request_id")?,
        detail: get(row, "detail")?,
    })
}

/// One bounded `DELETE` of the janitor: `$1` is the cutoff time, `$2` the batch size.
async fn prune(conn: &mut PgConnection, cutoff: i64, batch: i64, sql: &str) -> StoreResult<u64> {
    sqlx::query(sql)
        .bind(cutoff)
        .bind(batch)
        .execute(&mut *conn)
        .await
        .map(|r| r.rows_affected())
        .map_err(map_err)
}

async fn insert_access_token(conn: &mut PgConnection, a: &AccessToken) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO access_tokens (hash, grant_id, client_id, user_id, tenant, scope, audiences, issued_at, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.hash.as_slice())
    .bind(&a.grant_id)
    .bind(&a.client_id)
    .bind(&a.user_id)
    .bind(&a.tenant)
    .bind(a.scope.to_string())
    .bind(to_json(&a.audiences)?)
    .bind(a.issued_at)
    .bind(a.expires_at)
    .execute(&mut *conn)
    .await
    .map_err(map_err)?;
    Ok(())
}

async fn insert_audit(conn: &mut PgConnection, events: &[AuditEvent]) -> StoreResult<()> {
    for e in events {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, tenant, actor, client_id, ip, request_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(e.at)
        .bind(&e.kind)
        .bind(&e.tenant)
        .bind(&e.actor)
        .bind(&e.client_id)
        .bind(&e.ip)
        .bind(&e.request_id)
        .bind(&e.detail)
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    }
    Ok(())
}

/// A statement built of data-modifying `WITH` parts: "WITH " before the first part, ", "
/// between parts.
struct WithParts<'a> {
    q: QueryBuilder<'a, Postgres>,
    parts: usize,
}

impl<'a> WithParts<'a> {
    fn new() -> Self {
        WithParts {
            q: QueryBuilder::new(""),
            parts: 0,
        }
    }

    /// Starts the next part, named `name`.
    fn part(&mut self, name: &str) -> &mut QueryBuilder<'a, Postgres> {
        self.q.push(if self.parts == 0 { "WITH " } else { ", " });
        self.parts += 1;
        self.q.push(name).push(" AS (");
        &mut self.q
    }

    /// Runs the statement as a compare-and-set whose first part, `cas`, matched the one
    /// row it swaps, or nothing (another caller won it).
    async fn swap(mut self, pool: &PgPool, cas: &str) -> StoreResult<Swap> {
        self.q.push(" SELECT count(*) FROM ").push(cas);
        let swapped: i64 = self
            .q
            .build_query_scalar()
            .fetch_one(pool)
            .await
            .map_err(map_err)?;
        Ok(if swapped == 1 {
            Swap::Done
        } else {
            Swap::AlreadyUsed
        })
    }

    /// Pushes an issuance's rows as parts: the grant (if new), the audit events, the
    /// access token and the refresh token, each inserted only if `guard` (a condition on
    /// earlier parts, or `TRUE`) holds. The token tables' triggers raise the bound of an
    /// existing grant a token outlives (migration 7), so only a new grant carries its bound.
    fn push_issuance(&mut self, iss: &'a Issuance, guard: &str) -> StoreResult<()> {
        if let Some(g) = &iss.new_grant {
            let q = self.part("new_grant");
            q.push(
                "INSERT INTO grants (id, client_id, user_id, tenant, scope, audiences, auth_time,
                 created_at, sid, expires_at) SELECT ",
            );
            q.separated(", ")
                .push_bind(&g.id)
                .push_bind(&g.client_id)
                .push_bind(&g.user_id)
                .push_bind(&g.tenant)
                .push_bind(g.scope.to_string())
                .push_bind(to_json(&g.audiences)?)
                .push_bind(g.auth_time)
                .push_bind(g.created_at)
                .push_bind(&g.sid)
                .push_bind(iss.new_grant_bound());
            q.push(" WHERE ").push(guard);
            // A client's standing grant is stored once; DO NOTHING takes no lock on the
            // stored row, so the client's concurrent requests do not queue behind each
            // other (a DO UPDATE locks the row even when its WHERE leaves it as it is).
            q.push(if iss.standing_grant {
                " ON CONFLICT (id) DO NOTHING)"
            } else {
                ")"
            });
        }
        for (n, e) in iss.audit.iter().enumerate() {
            let q = self.part(&format!("new_audit_{n}"));
            q.push(
                "INSERT INTO audit_events (at, kind, tenant, actor, client_id, ip, request_id,
                 detail) SELECT ",
            );
            q.separated(", ")
                .push_bind(e.at)
                .push_bind(&e.kind)
                .push_bind(&e.tenant)
                .push_bind(&e.actor)
                .push_bind(&e.client_id)
                .push_bind(&e.ip)
                .push_bind(&e.request_id)
                .push_bind(&e.detail);
            q.push(" WHERE ").push(guard).push(")");
        }
        let a = &iss.access;
        let q = self.part("new_access");
        q.push(
            "INSERT INTO access_tokens (hash, grant_id, client_id, user_id, tenant, scope,
             audiences, issued_at, expires_at) SELECT ",
        );
        q.separated(", ")
            .push_bind(a.hash.as_slice())
            .push_bind(&a.grant_id)
            .push_bind(&a.client_id)
            .push_bind(&a.user_id)
            .push_bind(&a.tenant)
            .push_bind(a.scope.to_string())
            .push_bind(to_json(&a.audiences)?)
            .push_bind(a.issued_at)
            .push_bind(a.expires_at);
        q.push(" WHERE ").push(guard).push(")");
        if let Some(r) = &iss.refresh {
            let q = self.part("new_refresh");
            q.push(
                "INSERT INTO refresh_tokens (hash, grant_id, access_token_hash, issued_at,
                 expires_at, state) SELECT ",
            );
            q.separated(", ")
                .push_bind(r.hash.as_slice())
                .push_bind(&r.grant.id)
                .push_bind(r.access_token_hash.as_ref().map(|h| h.as_slice()))
                .push_bind(r.issued_at)
                .push_bind(r.expires_at);
            q.push(", 'active' WHERE ").push(guard).push(")");
        }
        Ok(())
    }
}

/// An issuance as one statement (one round trip, atomic on its own).
async fn insert_issuance(conn: &mut PgConnection, iss: &Issuance) -> StoreResult<()> {
    let mut statement = WithParts::new();
    statement.push_issuance(iss, "TRUE")?;
    statement.q.push(" SELECT 1");
    statement
        .q
        .build()
        .execute(&mut *conn)
        .await
        .map_err(map_err)?;
    Ok(())
}

#[async_trait]
impl SharedCounters for PostgresStore {
    async fn add_failures(&self, key: &str, window_start: UnixTime, cost: u32) -> StoreResult<u64> {
        // One statement, atomic under concurrency from every node.
        let total: i64 = sqlx::query_scalar(
            "INSERT INTO failure_counters (key, window_start, count) VALUES ($1, $2, $3)
             ON CONFLICT (key, window_start)
             DO UPDATE SET count = failure_counters.count + EXCLUDED.count
             RETURNING count",
        )
        .bind(key.replace('\0', ""))
        .bind(window_start)
        .bind(i64::from(cost))
        .fetch_one(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(u64::try_from(total).unwrap_or(0))
    }
}

#[async_trait]
impl Store for PostgresStore {
    fn shared_counters(&self) -> Option<&dyn SharedCounters> {
        Some(self)
    }

    async fn ping(&self) -> StoreResult<()> {
        self.pool
            .execute(sqlx::raw_sql("SELECT 1"))
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        sqlx::query("INSERT INTO tenants (id, created_at) VALUES ($1, $2)")
            .bind(&tenant.id)
            .bind(tenant.created_at)
            .execute(&self.pool)
            .await
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("tenant {:?}", tenant.id)),
                other => other,
            })?;
        Ok(())
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        if !storable(id) {
            return Ok(None);
        }
        sqlx::query("SELECT id, created_at FROM tenants WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(tenant_from)
            .transpose()
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        sqlx::query("SELECT id, created_at FROM tenants ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(tenant_from)
            .collect()
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let u = user;
        sqlx::query(
            "INSERT INTO users (id, tenant, username, email, name, password_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(&u.id)
        .bind(&u.tenant)
        .bind(&u.username)
        .bind(&u.email)
        .bind(&u.name)
        .bind(&u.password_hash)
        .bind(u.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match map_err(e) {
            // The only foreign key of `users` is its tenant.
            StoreError::NotFound(_) => StoreError::NotFound(format!("tenant {:?}", u.tenant)),
            StoreError::Conflict(_) => {
                StoreError::Conflict(format!("user {:?} in tenant {:?}", u.username, u.tenant))
            }
            other => other,
        })?;
        Ok(())
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        if !storable(id) {
            return Ok(None);
        }
        sqlx::query("SELECT * FROM users WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn find_user(&self, tenant: &str, username: &str) -> StoreResult<Option<User>> {
        if !storable(tenant) || !storable(username) {
            return Ok(None);
        }
        sqlx::query("SELECT * FROM users WHERE tenant = $1 AND username = $2")
            .bind(tenant)
            .bind(username)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(user_from)
            .transpose()
    }

    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        let settings = to_json(client)?;
        sqlx::query(
            "INSERT INTO clients (id, secret_hash, settings, owner, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&client.id)
        .bind(client.secret_hash.as_ref().map(|h| h.as_slice()))
        .bind(settings)
        .bind(&client.owner)
        .bind(client.created_at)
        .execute(&self.pool)
        .await
        .map_err(|e| match map_err(e) {
            StoreError::Conflict(_) => StoreError::Conflict(format!("client {:?}", client.id)),
            other => other,
        })?;
        Ok(())
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        if !storable(id) {
            return Ok(None);
        }
        sqlx::query("SELECT secret_hash, settings FROM clients WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?
            .as_ref()
            .map(client_from)
            .transpose()
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        sqlx::query("SELECT secret_hash, settings FROM clients ORDER BY created_at, id")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(client_from)
            .collect()
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let mut tx = self.begin().await?;
        // Its tokens die with their grants (every token lookup joins its grant); their
        // rows, unusable, go at their expiry, as in the SQLite store. Its access tokens are
        // also deleted by client (one scan, as before schema 7): a node of an older version,
        // still running while a cluster is upgraded, accepted an access token without its
        // grant.
        for sql in [
            "DELETE FROM access_tokens WHERE client_id = $1",
            "DELETE FROM grants WHERE client_id = $1",
            "DELETE FROM auth_codes WHERE client_id = $1",
            "DELETE FROM consents WHERE client_id = $1",
        ] {
            sqlx::query(sql)
                .bind(id)
                .execute(&mut *tx)
                .await
                .map_err(map_err)?;
        }
        let n = sqlx::query("DELETE FROM clients WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        tx.commit().await.map_err(map_err)?;
        Ok(n > 0)
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &Hash) -> StoreResult<bool> {
        if !storable(id) {
            return Ok(false);
        }
        let n = sqlx::query("UPDATE clients SET secret_hash = $1 WHERE id = $2")
            .bind(secret_hash.as_slice())
            .bind(id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let s = session;
        sqlx::query(
            "INSERT INTO sessions (hash, user_id, tenant, auth_time, expires_at, sid) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(s.hash.as_slice())
        .bind(&s.user_id)
        .bind(&s.tenant)
        .bind(s.auth_time)
        .bind(s.expires_at)
        .bind(&s.sid)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_session(&self, hash: &Hash) -> StoreResult<Option<Session>> {
        let row = sqlx::query("SELECT * FROM sessions WHERE hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| {
            Ok(Session {
                hash: hash_of(&r, "hash")?,
                sid: get(&r, "sid")?,
                user_id: get(&r, "user_id")?,
                tenant: get(&r, "tenant")?,
                auth_time: get(&r, "auth_time")?,
                expires_at: get(&r, "expires_at")?,
            })
        })
        .transpose()
    }

    async fn delete_session(&self, hash: &Hash) -> StoreResult<()> {
        sqlx::query("DELETE FROM sessions WHERE hash = $1")
            .bind(hash.as_slice())
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn get_consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Consent>> {
        if !storable(user_id) || !storable(client_id) {
            return Ok(None);
        }
        let row = sqlx::query("SELECT * FROM consents WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| {
            Ok(Consent {
                user_id: get(&r, "user_id")?,
                client_id: get(&r, "client_id")?,
                scope: scope_of(&r, "scope")?,
                granted_at: get(&r, "granted_at")?,
            })
        })
        .transpose()
    }

    async fn save_consent(&self, consent: &Consent) -> StoreResult<()> {
        sqlx::query(
            "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, client_id)
             DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
        )
        .bind(&consent.user_id)
        .bind(&consent.client_id)
        .bind(consent.scope.to_string())
        .bind(consent.granted_at)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn insert_code(&self, code: &AuthorizationCode) -> StoreResult<()> {
        let (k, g) = (code, &code.grant);
        sqlx::query(
            "INSERT INTO auth_codes (hash, grant_id, client_id, user_id, tenant, scope, audiences, auth_time, created_at,
                                     redirect_uri, redirect_uri_sent, nonce, code_challenge, expires_at, sid)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
        )
        .bind(k.hash.as_slice())
        .bind(&g.id)
        .bind(&g.client_id)
        .bind(&g.user_id)
        .bind(&g.tenant)
        .bind(g.scope.to_string())
        .bind(to_json(&g.audiences)?)
        .bind(g.auth_time)
        .bind(g.created_at)
        .bind(&k.redirect_uri)
        .bind(k.redirect_uri_sent)
        .bind(&k.nonce)
        .bind(&k.code_challenge)
        .bind(k.expires_at)
        .bind(&g.sid)
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn get_code(&self, hash: &Hash) -> StoreResult<Option<AuthorizationCode>> {
        let row = sqlx::query("SELECT * FROM auth_codes WHERE hash = $1")
            .bind(hash.as_slice())
            .fetch_optional(&self.pool)
            .await
            .map_err(map_err)?;
        row.map(|r| {
            let used_at: Option<i64> = get(&r, "used_at")?;
            Ok(AuthorizationCode {
                hash: hash_of(&r, "hash")?,
                grant: grant_from(&r)?,
                redirect_uri: get(&r, "redirect_uri")?,
                redirect_uri_sent: get(&r, "redirect_uri_sent")?,
                nonce: get(&r, "nonce")?,
                code_challenge: get(&r, "code_challenge")?,
                expires_at: get(&r, "expires_at")?,
                used: used_at.is_some(),
            })
        })
        .transpose()
    }

    async fn redeem_code(
        &self,
        code_hash: &Hash,
        issuance: &Issuance,
        now: UnixTime,
    ) -> StoreResult<Swap> {
        // One statement, as `rotate_refresh_token`: a concurrent redemption of the same
        // code waits in `redeemed` for the winner's commit, then re-checks
        // `used_at IS NULL` and matches nothing, so it inserts nothing.
        let mut statement = WithParts::new();
        statement
            .part("redeemed")
            .push("UPDATE auth_codes SET used_at = ")
            .push_bind(now)
            .push(" WHERE hash = ")
            .push_bind(code_hash.as_slice())
            .push(" AND used_at IS NULL RETURNING 1)");
        statement.push_issuance(issuance, "EXISTS (SELECT 1 FROM redeemed)")?;
        statement.swap(&self.pool, "redeemed").await
    }

    async fn issue(&self, issuance: &Issuance) -> StoreResult<()> {
        // One statement: atomic without a transaction around it.
        let mut conn = self.pool.acquire().await.map_err(map_err)?;
        insert_issuance(&mut conn, issuance).await
    }

    async fn get_access_token(&self, hash: &Hash) -> StoreResult<Option<AccessToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            access_token_columns!(),
            " FROM access_tokens a JOIN grants g ON g.id = a.grant_id WHERE a.hash = $1"
        ))
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(access_token_from).transpose()
    }

    async fn get_refresh_token(&self, hash: &Hash) -> StoreResult<Option<RefreshToken>> {
        let row = sqlx::query(concat!(
            "SELECT ",
            refresh_token_columns!(),
            " FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.hash = $1"
        ))
        .bind(hash.as_slice())
        .fetch_optional(&self.pool)
        .await
        .map_err(map_err)?;
        row.as_ref().map(refresh_token_from).transpose()
    }

    /// One statement, one round trip: the client and the token are each left-joined to a
    /// single row, so either can be missing without hiding the other.
    async fn get_client_and_access_token(
        &self,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<(Option<Client>, Option<AccessToken>)> {
        let sql = concat!(
            "SELECT c.secret_hash, c.settings, ",
            access_token_columns!(),
            " FROM (SELECT 1) AS one
              LEFT JOIN clients c ON c.id = $1
              LEFT JOIN (access_tokens a JOIN grants g ON g.id = a.grant_id) ON a.hash = $2"
        );
        let (row, client) = self.combined_read(sql, client_id, token_hash).await?;
        let token = joined(&row, "hash", access_token_from)?;
        Ok((client, token))
    }

    /// One statement, as `get_client_and_access_token`; the user is joined whenever the
    /// grant has one and kept only when [`RefreshLookup::user_wanted`] says so.
    async fn get_client_and_refresh_token(
        &self,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<RefreshLookup> {
        let sql = concat!(
            "SELECT c.secret_hash, c.settings, ",
            refresh_token_columns!(),
            ", u.id AS u_id, u.tenant AS u_tenant, u.username AS u_username,
                    u.email AS u_email, u.name AS u_name, u.password_hash AS u_password_hash,
                    u.created_at AS u_created_at
             FROM (SELECT 1) AS one
             LEFT JOIN clients c ON c.id = $1
             LEFT JOIN (refresh_tokens r JOIN grants g ON g.id = r.grant_id) ON r.hash = $2
             LEFT JOIN users u ON u.id = g.user_id"
        );
        let (row, client) = self.combined_read(sql, client_id, token_hash).await?;
        let token = joined(&row, "hash", refresh_token_from)?;
        let wanted = token
            .as_ref()
            .and_then(RefreshLookup::user_wanted)
            .is_some();
        let user = if wanted {
            joined(&row, "u_id", |row| {
                Ok(User {
                    id: get(row, "u_id")?,
                    tenant: get(row, "u_tenant")?,
                    username: get(row, "u_username")?,
                    email: get(row, "u_email")?,
                    name: get(row, "u_name")?,
                    password_hash: get(row, "u_password_hash")?,
                    created_at: get(row, "u_created_at")?,
                })
            })?
        } else {
            None
        };
        Ok(RefreshLookup {
            client,
            token,
            user,
        })
    }

    async fn rotate_refresh_token(
        &self,
        old: &Hash,
        issuance: &Issuance,
        sealed_successor: Option<&[u8]>,
        now: UnixTime,
    ) -> StoreResult<Swap> {
        // One statement, one round trip. A concurrent rotation of the same row waits in
        // `rotated` for the winner's commit, then re-checks `state = 'active'` and matches
        // nothing; every other part is guarded by what `rotated` matched.
        let successor = issuance.refresh.as_ref().map(|r| r.hash.to_vec());
        let mut statement = WithParts::new();
        statement
            .part("rotated")
            .push("UPDATE refresh_tokens SET state = 'rotated', rotated_at = ")
            .push_bind(now)
            .push(", successor_hash = ")
            .push_bind(successor)
            .push(", successor_sealed = ")
            .push_bind(sealed_successor)
            .push(" WHERE hash = ")
            .push_bind(old.as_slice())
            .push(
                " AND state = 'active'
                  AND EXISTS (SELECT 1 FROM grants g
                              WHERE g.id = refresh_tokens.grant_id AND g.revoked_at IS NULL)
                  RETURNING access_token_hash)",
            );
        // This token is used now: its parent's sealed copy of it can never serve a retry
        // again, so it goes.
        statement
            .part("unsealed")
            .push("UPDATE refresh_tokens SET successor_sealed = NULL WHERE successor_hash = ")
            .push_bind(old.as_slice())
            .push(" AND successor_sealed IS NOT NULL AND EXISTS (SELECT 1 FROM rotated))");
        // The access token issued with the rotated one is replaced.
        statement
            .part("replaced")
            .push("UPDATE access_tokens SET revoked_at = ")
            .push_bind(now)
            .push(
                " WHERE hash = (SELECT access_token_hash FROM rotated)
                  AND revoked_at IS NULL)",
            );
        statement.push_issuance(issuance, "EXISTS (SELECT 1 FROM rotated)")?;
        statement.swap(&self.pool, "rotated").await
    }

    async fn retry_rotation(
        &self,
        old: &Hash,
        successor: &Hash,
        rotated_since: UnixTime,
        access: &AccessToken,
        now: UnixTime,
    ) -> StoreResult<Swap> {
        let mut tx = self.begin().await?;
        let rotated_into_successor = sqlx::query(
            "SELECT 1 FROM refresh_tokens WHERE hash = $1 AND state = 'rotated'
             AND rotated_at >= $2 AND successor_hash = $3",
        )
        .bind(old.as_slice())
        .bind(rotated_since)
        .bind(successor.as_slice())
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?
        .is_some();
        if !rotated_into_successor {
            return Ok(Swap::AlreadyUsed);
        }
        // FOR UPDATE serialises concurrent retries (and a concurrent rotation) on the
        // successor's row: each sees the access token the previous one installed.
        let row = sqlx::query(
            "SELECT r.access_token_hash FROM refresh_tokens r
             WHERE r.hash = $1 AND r.state = 'active' AND r.expires_at > $2
               AND EXISTS (SELECT 1 FROM grants g
                           WHERE g.id = r.grant_id AND g.revoked_at IS NULL)
             FOR UPDATE OF r",
        )
        .bind(successor.as_slice())
        .bind(now)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(row) = row else {
            return Ok(Swap::AlreadyUsed);
        };
        if let Some(replaced) = opt_hash_of(&row, "access_token_hash")? {
            sqlx::query(
                "UPDATE access_tokens SET revoked_at = $1 WHERE hash = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(replaced.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        insert_access_token(&mut tx, access).await?;
        sqlx::query("UPDATE refresh_tokens SET access_token_hash = $1 WHERE hash = $2")
            .bind(access.hash.as_slice())
            .bind(successor.as_slice())
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(Swap::Done)
    }

    async fn revoke_grant(&self, grant_id: &str, now: UnixTime) -> StoreResult<()> {
        sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(grant_id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?;
        Ok(())
    }

    async fn revoke_access_token(&self, hash: &Hash, now: UnixTime) -> StoreResult<()> {
        sqlx::query(
            "UPDATE access_tokens SET revoked_at = $1 WHERE hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(hash.as_slice())
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        insert_audit(&mut tx, events).await?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_audit(&self, since: UnixTime, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        sqlx::query("SELECT * FROM audit_events WHERE at >= $1 ORDER BY id LIMIT $2")
            .bind(since)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(audit_from)
            .collect()
    }

    async fn prune_audit(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        sqlx::query(
            "DELETE FROM audit_events WHERE id IN
             (SELECT id FROM audit_events WHERE at < $1 ORDER BY at LIMIT $2)",
        )
        .bind(before)
        .bind(i64::from(batch))
        .execute(&self.pool)
        .await
        .map(|r| r.rows_affected())
        .map_err(map_err)
    }

    async fn prune_expired(&self, now: UnixTime, grace: i64, batch: u32) -> StoreResult<Pruned> {
        let cutoff = now - grace.max(0);
        let batch = i64::from(batch);
        let mut tx = self.begin().await?;
        // Every row goes by its expiry index alone, as in the SQLite store: revoked rows are
        // dead already and go at their expiry too; rotated refresh tokens stay until they
        // expire (they detect reuse); a grant's bound covers every token issued under it.
        let pruned = Pruned {
            codes: prune(
                &mut tx,
                cutoff,
                batch,
                "DELETE FROM auth_codes WHERE hash IN
                        (SELECT hash FROM auth_codes WHERE expires_at < $1 LIMIT $2)",
            )
            .await?,
            access_tokens: prune(
                &mut tx,
                cutoff,
                batch,
                "DELETE FROM access_tokens WHERE hash IN
                        (SELECT hash FROM access_tokens WHERE expires_at < $1 LIMIT $2)",
            )
            .await?,
            refresh_tokens: prune(
                &mut tx,
                cutoff,
                batch,
                "DELETE FROM refresh_tokens WHERE hash IN
                        (SELECT hash FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
            )
            .await?,
            grants: prune(
                &mut tx,
                cutoff,
                batch,
                "DELETE FROM grants WHERE id IN
                        (SELECT id FROM grants WHERE expires_at < $1 LIMIT $2)",
            )
            .await?,
            audit_events: 0,
            sessions: prune(
                &mut tx,
                cutoff,
                batch,
                "DELETE FROM sessions WHERE hash IN
                        (SELECT hash FROM sessions WHERE expires_at < $1 LIMIT $2)",
            )
            .await?,
        };
        // Failure counters of windows long closed (not reported: they are not grants).
        prune(&mut tx, now - 300, batch, "DELETE FROM failure_counters WHERE (key, window_start) IN
                    (SELECT key, window_start FROM failure_counters WHERE window_start < $1 LIMIT $2)")
        .await?;
        tx.commit().await.map_err(map_err)?;
        Ok(pruned)
    }

    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        sqlx::query("SELECT * FROM signing_keys ORDER BY activates_at, created_at")
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(key_from)
            .collect()
    }

    async fn save_signing_keys(
        &self,
        new: &[SigningKeyRecord],
        retire: &[KeyRetirement],
    ) -> StoreResult<()> {
        let mut tx = self.begin().await?;
        for k in new {
            sqlx::query(
                "INSERT INTO signing_keys (kid, alg, sealed, created_at, activates_at, retires_at, publish_until)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(&k.kid)
            .bind(&k.alg)
            .bind(&k.sealed)
            .bind(k.created_at)
            .bind(k.activates_at)
            .bind(k.retires_at)
            .bind(k.publish_until)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        for r in retire {
            sqlx::query(
                "UPDATE signing_keys SET retires_at = $1, publish_until = $2 WHERE kid = $3",
            )
            .bind(r.retires_at)
            .bind(r.publish_until)
            .bind(&r.kid)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        }
        tx.commit().await.map_err(map_err)
    }

    // ---- Developer self-service (settings pages). ----

    async fn list_clients_by_owner(&self, owner: &str) -> StoreResult<Vec<Client>> {
        sqlx::query(
            "SELECT secret_hash, settings FROM clients WHERE owner = $1 ORDER BY created_at, id",
        )
        .bind(owner)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(client_from)
        .collect()
    }

    async fn update_client(&self, client: &Client) -> StoreResult<bool> {
        let n = sqlx::query("UPDATE clients SET settings = $1 WHERE id = $2")
            .bind(to_json(client)?)
            .bind(&client.id)
            .execute(&self.pool)
            .await
            .map_err(map_err)?
            .rows_affected();
        Ok(n > 0)
    }

    async fn list_consents(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        sqlx::query("SELECT * FROM consents WHERE user_id = $1 ORDER BY granted_at DESC, client_id")
            .bind(user_id)
            .fetch_all(&self.pool)
            .await
            .map_err(map_err)?
            .iter()
            .map(consent_from)
            .collect()
    }

    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let consents = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2")
            .bind(user_id)
            .bind(client_id)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?
            .rows_affected();
        let grants = sqlx::query(
            "UPDATE grants SET revoked_at = $3
             WHERE user_id = $1 AND client_id = $2 AND revoked_at IS NULL",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?
        .rows_affected();
        // A code already issued must not outlive the consent it came from.
        sqlx::query(
            "UPDATE auth_codes SET used_at = $3
             WHERE user_id = $1 AND client_id = $2 AND used_at IS NULL",
        )
        .bind(user_id)
        .bind(client_id)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(consents + grants > 0)
    }

    async fn create_personal_token(
        &self,
        token: &PersonalAccessToken,
        issuance: &Issuance,
    ) -> StoreResult<()> {
        let t = token;
        let mut tx = self.begin().await?;
        insert_issuance(&mut tx, issuance).await?;
        sqlx::query(
            "INSERT INTO personal_access_tokens
             (id, user_id, tenant, name, scope, grant_id, token_hash, created_at, expires_at, last_used_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&t.id)
        .bind(&t.user_id)
        .bind(&t.tenant)
        .bind(&t.name)
        .bind(t.scope.to_string())
        .bind(&t.grant_id)
        .bind(t.token_hash.as_slice())
        .bind(t.created_at)
        .bind(t.expires_at)
        .bind(t.last_used_at)
        .execute(&mut *tx)
        .await
        .map_err(map_err)?;
        tx.commit().await.map_err(map_err)
    }

    async fn list_personal_tokens(&self, user_id: &str) -> StoreResult<Vec<PersonalAccessToken>> {
        sqlx::query(
            "SELECT * FROM personal_access_tokens WHERE user_id = $1 ORDER BY created_at DESC, id",
        )
        .bind(user_id)
        .fetch_all(&self.pool)
        .await
        .map_err(map_err)?
        .iter()
        .map(personal_token_from)
        .collect()
    }

    async fn revoke_personal_token(
        &self,
        user_id: &str,
        id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let mut tx = self.begin().await?;
        let grant: Option<String> = sqlx::query_scalar(
            "DELETE FROM personal_access_tokens WHERE id = $1 AND user_id = $2 RETURNING grant_id",
        )
        .bind(id)
        .bind(user_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(map_err)?;
        let Some(grant) = grant else {
            return Ok(false);
        };
        sqlx::query("UPDATE grants SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(&grant)
            .execute(&mut *tx)
            .await
            .map_err(map_err)?;
        tx.commit().await.map_err(map_err)?;
        Ok(true)
    }

    async fn touch_personal_token(&self, token_hash: &Hash, now: UnixTime) -> StoreResult<()> {
        sqlx::query(
            "UPDATE personal_access_tokens SET last_used_at = $1
             WHERE token_hash = $2 AND (last_used_at IS NULL OR last_used_at <= $1 - 60)",
        )
        .bind(now)
        .bind(token_hash.as_slice())
        .execute(&self.pool)
        .await
        .map_err(map_err)?;
        Ok(())
    }
}

fn consent_from(row: &PgRow) -> StoreResult<Consent> {
    Ok(Consent {
        user_id: get(row, "user_id")?,
        client_id: get(row, "client_id")?,
        scope: scope_of(row, "scope")?,
        granted_at: get(row, "granted_at")?,
    })
}

fn personal_token_from(row: &PgRow) -> StoreResult<PersonalAccessToken> {
    Ok(PersonalAccessToken {
        id: get(row, "id")?,
        user_id: get(row, "user_id")?,
        tenant: get(row, "tenant")?,
        name: get(row, "name")?,
        scope: scope_of(row, "scope")?,
        grant_id: get(row, "grant_id")?,
        token_hash: hash_of(row, "token_hash")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        last_used_at: get(row, "last_used_at")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_parameter_is_taken_out_of_the_url() {
        assert_eq!(
            split_schema("postgres://u@h/db?schema=t1&sslmode=disable"),
            (
                "postgres://u@h/db?sslmode=disable".to_owned(),
                Some("t1".to_owned())
            )
        );
        assert_eq!(
            split_schema("postgres://u@h/db?schema=t1"),
            ("postgres://u@h/db".to_owned(), Some("t1".to_owned()))
        );
        assert_eq!(
            split_schema("postgres://u@h/db"),
            ("postgres://u@h/db".to_owned(), None)
        );
    }

    #[test]
    fn only_plain_schema_names_are_accepted() {
        assert!(validate_schema("tessera_test_1").is_ok());
        for bad in ["", "1abc", "Tessera", "a\"b", "a;drop", "a b"] {
            assert!(validate_schema(bad).is_err(), "{bad:?}");
        }
    }
}
