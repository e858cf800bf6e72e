//! The embedded SQLite store.
//!
//! Write path: every write is a closure queued to one writer thread, which takes whatever
//! is queued (up to [`MAX_BATCH`]), runs each in its own savepoint inside one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers every caller. With
//! `journal_mode=WAL` and `synchronous=FULL` the commit is fsynced before any response
//! is sent, so an acknowledged grant survives a crash, and one fsync is shared by every
//! write in the batch (group commit). One writer also makes every atomic step trivially
//! serialised: two redemptions of one code can never interleave.
//!
//! Checkpoints (copying the WAL back into the database file) run on a thread of their
//! own, so the writer's loop does only the work callers wait for; the writer checkpoints
//! (passively) only when the WAL has grown past a bound the background thread could not
//! keep.
//!
//! Read path: a small pool of read-only connections used from `spawn_blocking`; WAL lets
//! them read while the writer writes.

/// Public so that upgrade tests can build a store at an older schema.
pub mod migrations;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use rusqlite::{params, Connection, OpenFlags, OptionalExtension, Row, RowIndex};
use tessera_core::client::Client;
use tessera_core::keys::{KeyRetirement, SigningKeyRecord};
use tessera_core::model::{
    AccessToken, AuditEvent, AuthorizationCode, Consent, Grant, Hash, Pruned, RefreshToken,
    Rotation, Session, Tenant, TokenState, User,
};
use tessera_core::personal_token::PersonalAccessToken;
use tessera_core::{ScopeSet, UnixTime};
use tessera_store::{Issuance, RefreshLookup, Store, StoreError, StoreResult, Swap};

/// Most writes committed together; bounds the latency one batch adds.
pub const MAX_BATCH: usize = 512;
const BUSY_TIMEOUT_MS: u64 = 5000;
const MAX_IDLE_READERS: usize = 8;
/// The background checkpointer runs at most this often while writes come in.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(100);
/// WAL frames (pages) past which the writer copies the rest of the WAL itself, so that it
/// can start again: under sustained writes the checkpointer never sees the WAL complete,
/// and the file would grow.
const WAL_RESTART_FRAMES: i64 = 8192;

/// What the writer and the checkpointer share.
#[derive(Default)]
struct CheckpointSignal {
    /// Commits since the checkpointer last ran.
    commits: AtomicU64,
    /// Set by the checkpointer when the WAL is past [`WAL_RESTART_FRAMES`].
    restart_wanted: AtomicBool,
    stop: AtomicBool,
    wake: (Mutex<()>, Condvar),
}

impl CheckpointSignal {
    /// Under the lock, so that a checkpointer about to wait cannot miss it.
    fn notify(&self) {
        let _guard = self.wake.0.lock().unwrap_or_else(|e| e.into_inner());
        self.wake.1.notify_one();
    }
}

pub struct SqliteStore {
    writer: mpsc::SyncSender<Box<dyn WriteJob>>,
    readers: Mutex<Vec<Connection>>,
    path: PathBuf,
    /// Joined on drop, so that a dropped store has committed and closed its file.
    writer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    checkpoint: Arc<CheckpointSignal>,
    checkpointer_thread: Mutex<Option<std::thread::JoinHandle<()>>>,
    parsed_clients: ParsedClients,
}

/// Clients parsed from their stored settings, by id, each with the exact text it was
/// parsed from. Every lookup still reads the row, and a cached parse is reused only when
/// the row's text is byte-identical to it, so a client changed by anyone (the CLI in
/// another process included) is seen at its next lookup. Parsing the settings JSON was a
/// tenth of an introspection request's instructions.
#[derive(Default)]
struct ParsedClients(Mutex<std::collections::HashMap<String, (Box<str>, Client)>>);

/// Entries kept at most; past it the cache starts over (a server with more clients than
/// this only loses the shortcut).
const MAX_PARSED_CLIENTS: usize = 4096;

impl ParsedClients {
    fn client(&self, id: &str, settings: &str) -> rusqlite::Result<Client> {
        let mut cache = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((text, client)) = cache.get(id) {
            if **text == *settings {
                return Ok(client.clone());
            }
        }
        let client: Client = serde_json::from_str(settings).map_err(json_err)?;
        if cache.len() >= MAX_PARSED_CLIENTS {
            cache.clear();
        }
        cache.insert(id.to_owned(), (settings.into(), client.clone()));
        Ok(client)
    }
}

impl Drop for SqliteStore {
    /// A clean close: the readers go first, so that the writer's connection is the last
    /// one and its close checkpoints the WAL into the database file; then the writer
    /// finishes what is queued and closes.
    fn drop(&mut self) {
        if let Ok(mut pool) = self.readers.lock() {
            pool.clear();
        }
        self.checkpoint.stop.store(true, Ordering::SeqCst);
        self.checkpoint.notify();
        let checkpointer = self
            .checkpointer_thread
            .lock()
            .ok()
            .and_then(|mut h| h.take());
        if let Some(handle) = checkpointer {
            let _ = handle.join();
        }
        let (closed, _) = mpsc::sync_channel(0);
        drop(std::mem::replace(&mut self.writer, closed));
        let handle = self.writer_thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

/// A queued write: `run` inside the batch transaction, then `finish` with the commit's
/// outcome. The caller learns its result only after the commit.
trait WriteJob: Send {
    /// Runs the step, inside a savepoint of its own when `isolated`; false if it failed.
    fn run(&mut self, conn: &Connection, isolated: bool) -> bool;
    fn finish(self: Box<Self>, commit: Result<(), StoreError>);
}

/// `op` is `Fn`: a batch in which one step fails is run a second time (see `run_batch`).
struct Job<T, F> {
    op: F,
    result: Option<StoreResult<T>>,
    reply: tokio::sync::oneshot::Sender<StoreResult<T>>,
}

impl<T: Send, F: Fn(&Connection) -> StoreResult<T> + Send> WriteJob for Job<T, F> {
    fn run(&mut self, conn: &Connection, isolated: bool) -> bool {
        let result = if isolated {
            in_savepoint(conn, &self.op)
        } else {
            (self.op)(conn)
        };
        let ok = result.is_ok();
        self.result = Some(result);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<(), StoreError>) {
        let outcome = match (commit, self.result) {
            (Ok(()), Some(result)) => result,
            (Ok(()), None) => Err(StoreError::Internal("write was not run".into())),
            (Err(e), _) => Err(e),
        };
        let _ = self.reply.send(outcome);
    }
}

/// One failing step must not undo the other steps of its batch.
fn in_savepoint<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    // Cached statements: these run for every write, and parsing them showed in profiles.
    conn.prepare_cached("SAVEPOINT step")
        .and_then(|mut s| s.execute([]))
        .map_err(map_err)?;
    match op(conn) {
        Ok(v) => {
            conn.prepare_cached("RELEASE step")
                .and_then(|mut s| s.execute([]))
                .map_err(map_err)?;
            Ok(v)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO step; RELEASE step")
                .map_err(map_err)?;
            Err(e)
        }
    }
}

/// Runs a batch in one transaction. Steps run bare first: a savepoint per step costs two
/// statements and a copy of every page the step touches, for a failure that is rare. If a
/// step fails, the whole transaction is rolled back and the batch run again with each
/// step in its own savepoint, so that only the failing step is undone.
fn run_batch(conn: &Connection, batch: &mut [Box<dyn WriteJob>]) -> Result<(), StoreError> {
    conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
    if !batch.iter_mut().all(|job| job.run(conn, false)) {
        // A failed statement may already have ended the transaction; either way none of
        // this batch's writes stay.
        let _ = conn.execute_batch("ROLLBACK");
        conn.execute_batch("BEGIN IMMEDIATE").map_err(map_err)?;
        for job in batch.iter_mut() {
            job.run(conn, true);
        }
    }
    let done = conn.execute_batch("COMMIT").map_err(map_err);
    if done.is_err() {
        let _ = conn.execute_batch("ROLLBACK");
    }
    done
}

fn map_err(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode as C;
    match &e {
        rusqlite::Error::SqliteFailure(f, _) => match f.code {
            C::ConstraintViolation => StoreError::Conflict(e.to_string()),
            C::DatabaseBusy
            | C::DatabaseLocked
            | C::DiskFull
            | C::ReadOnly
            | C::CannotOpen
            | C::SystemIoFailure => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Internal(e.to_string()),
        },
        _ => StoreError::Internal(e.to_string()),
    }
}

fn open_connection(path: &Path, read_only: bool) -> StoreResult<Connection> {
    let flags = if read_only {
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX
    } else {
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX
    };
    let conn = Connection::open_with_flags(path, flags).map_err(map_err)?;
    conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))
        .map_err(map_err)?;
    if !read_only {
        // WAL + FULL: each commit is fsynced to the WAL before the writer answers.
        conn.execute_batch(
            // temp_store: savepoint journals stay in memory instead of a temporary file
            // created and removed for every batch.
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;
             PRAGMA temp_store=MEMORY;",
        )
        .map_err(map_err)?;
    }
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> StoreResult<()> {
    // IMMEDIATE: a second process migrating at the same time waits, then sees the result.
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(map_err)?;
    let current: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(map_err)?;
    let known = migrations::MIGRATIONS.len() as i64;
    if current > known {
        return Err(StoreError::Internal(format!(
            "the store was migrated by a newer Tessera (schema {current}, this build knows {known})"
        )));
    }
    for (i, sql) in migrations::MIGRATIONS
        .iter()
        .enumerate()
        .skip(current as usize)
    {
        tx.execute_batch(sql).map_err(map_err)?;
        tx.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
            .map_err(map_err)?;
    }
    tx.commit().map_err(map_err)
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path`, applies migrations, and starts
    /// the writer thread.
    pub fn open(path: impl AsRef<Path>) -> StoreResult<SqliteStore> {
        let path = path.as_ref().to_path_buf();
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            // The data folder holds hashes and (later) encrypted keys: owner-only.
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|e| {
                    StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                })?;
        }
        let mut conn = open_connection(&path, false)?;
        migrate(&mut conn)?;
        // Checkpoints are the checkpointer's job (see the module comment); a WAL that
        // grew past 64 MiB is cut back to that when it starts again.
        conn.execute_batch("PRAGMA wal_autocheckpoint=0; PRAGMA journal_size_limit=67108864")
            .map_err(map_err)?;
        let checkpoint_conn = open_connection(&path, false)?;
        let checkpoint = Arc::new(CheckpointSignal::default());
        let (tx, rx) = mpsc::sync_channel::<Box<dyn WriteJob>>(4 * MAX_BATCH);
        let signal = checkpoint.clone();
        let writer_thread = std::thread::Builder::new()
            .name("tessera-sqlite-writer".into())
            .spawn(move || writer_loop(conn, rx, &signal))
            .map_err(|e| StoreError::Internal(format!("cannot start writer thread: {e}")))?;
        let signal = checkpoint.clone();
        let checkpointer_thread = std::thread::Builder::new()
            .name("tessera-sqlite-checkpointer".into())
            .spawn(move || checkpointer_loop(checkpoint_conn, &signal))
            .map_err(|e| StoreError::Internal(format!("cannot start checkpointer: {e}")))?;
        Ok(SqliteStore {
            writer: tx,
            readers: Mutex::new(Vec::new()),
            path,
            writer_thread: Mutex::new(Some(writer_thread)),
            checkpoint,
            checkpointer_thread: Mutex::new(Some(checkpointer_thread)),
            parsed_clients: ParsedClients::default(),
        })
    }

    /// Parses `sqlite://path` / `sqlite:path` URLs (and bare paths).
    pub fn path_from_url(url: &str) -> PathBuf {
        let rest = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
            .unwrap_or(url);
        PathBuf::from(rest.split('?').next().unwrap_or(rest))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn read_client(&self, c: &Connection, id: &str) -> StoreResult<Option<Client>> {
        c.prepare_cached("SELECT secret_hash, settings FROM clients WHERE id = ?1")
            .and_then(|mut s| {
                s.query_row([id], |row| {
                    let settings = row.get_ref(1)?.as_str()?;
                    let mut client = self.parsed_clients.client(id, settings)?;
                    client.secret_hash = optional_hash(row.get_ref(0)?.as_blob_or_null()?);
                    Ok(client)
                })
                .optional()
            })
            .map_err(map_err)
    }

    async fn write<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let (reply, rx) = tokio::sync::oneshot::channel();
        let job = Box::new(Job {
            op,
            result: None,
            reply,
        });
        let sender = self.writer.clone();
        // The queue is bounded: when full, wait off the async threads.
        match sender.try_send(job) {
            Ok(()) => {}
            Err(mpsc::TrySendError::Full(job)) => {
                tokio::task::spawn_blocking(move || sender.send(job))
                    .await
                    .map_err(|e| StoreError::Internal(e.to_string()))?
                    .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
            }
            Err(mpsc::TrySendError::Disconnected(_)) => {
                return Err(StoreError::Unavailable("writer stopped".into()))
            }
        }
        rx.await
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// A lookup by key, run on the calling thread: a few microseconds on a pooled
    /// connection cost less than the hand-off to a blocking thread and back, and the
    /// number of reader connections then stays bounded by the runtime's worker threads
    /// (the blocking pool opened and closed a connection per request under load).
    async fn lookup<T, F>(&self, op: F) -> StoreResult<T>
    where
        F: FnOnce(&Connection) -> StoreResult<T>,
    {
        let conn = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path, true)?,
        };
        let result = op(&conn);
        // A connection left inside a transaction (one whose end failed) is not reused:
        // it would serve a stale snapshot.
        if conn.is_autocommit() {
            if let Ok(mut pool) = self.readers.lock() {
                if pool.len() < MAX_IDLE_READERS {
                    pool.push(conn);
                }
            }
        }
        result
    }

    /// Scans (lists, audit reads) run on a blocking thread.
    async fn read<T, F>(&self, op: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.readers.lock().ok().and_then(|mut pool| pool.pop());
        let conn = match conn {
            Some(c) => c,
            None => open_connection(&self.path, true)?,
        };
        let (conn, result) = tokio::task::spawn_blocking(move || {
            let result = op(&conn);
            (conn, result)
        })
        .await
        .map_err(|e| StoreError::Internal(e.to_string()))?;
        if let Ok(mut pool) = self.readers.lock() {
            if pool.len() < MAX_IDLE_READERS {
                pool.push(conn);
            }
        }
        result
    }
}

/// Copies committed WAL frames into the database file while the writer goes on writing
/// (a passive checkpoint never blocks it), at most every [`CHECKPOINT_INTERVAL`].
fn checkpointer_loop(conn: Connection, signal: &CheckpointSignal) {
    let (lock, wake) = &signal.wake;
    loop {
        {
            let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
            let _ = wake.wait_timeout_while(guard, Duration::from_secs(5), |_| {
                signal.commits.load(Ordering::Relaxed) == 0 && !signal.stop.load(Ordering::SeqCst)
            });
        }
        if signal.stop.load(Ordering::SeqCst) {
            break;
        }
        if signal.commits.swap(0, Ordering::Relaxed) == 0 {
            continue;
        }
        // (busy, frames in the WAL, frames checkpointed)
        let outcome = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, i64>(2)?,
            ))
        });
        match outcome {
            Ok((_, frames, _)) if frames > WAL_RESTART_FRAMES => {
                signal.restart_wanted.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "background checkpoint failed"),
        }
        std::thread::sleep(CHECKPOINT_INTERVAL);
    }
    // Closed before the writer, whose close then checkpoints and removes the WAL.
    drop(conn);
}

fn writer_loop(
    conn: Connection,
    rx: mpsc::Receiver<Box<dyn WriteJob>>,
    checkpoint: &CheckpointSignal,
) {
    let mut batch: Vec<Box<dyn WriteJob>> = Vec::with_capacity(MAX_BATCH);
    while let Ok(first) = rx.recv() {
        batch.push(first);
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let commit = run_batch(&conn, &mut batch);
        if let Err(e) = &commit {
            tracing::error!(error = %e, batch = batch.len(), "store commit failed");
        }
        for job in batch.drain(..) {
            job.finish(match &commit {
                Ok(()) => Ok(()),
                Err(StoreError::Unavailable(m)) => Err(StoreError::Unavailable(m.clone())),
                Err(e) => Err(StoreError::Internal(e.to_string())),
            });
        }
        if checkpoint.commits.fetch_add(1, Ordering::Relaxed) == 0 {
            checkpoint.notify();
        }
        if checkpoint.restart_wanted.swap(false, Ordering::Relaxed) {
            // Most frames are already copied by the checkpointer; this copies the rest
            // (passive: it never waits for readers or the checkpointer, a RESTART
            // checkpoint's busy waits showed as p99 spikes), and once the WAL is wholly
            // copied the next commit starts it again from its beginning.
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "WAL catch-up checkpoint failed");
            }
        }
    }
    // All senders gone: the store was dropped. Closing checkpoints the WAL.
    match conn.close() {
        Ok(()) => tracing::debug!("store closed"),
        Err((_, e)) => tracing::warn!(error = %e, "closing the store failed"),
    }
}

/// Runs `op` in one read transaction, so that several lookups share one snapshot and one
/// begin and end: a read transaction's begin and end take SQLite's shared-memory lock and
/// a `fcntl` lock on the WAL index each, which cost more than the lookups themselves.
fn in_read_transaction<T>(
    conn: &Connection,
    op: impl FnOnce(&Connection) -> StoreResult<T>,
) -> StoreResult<T> {
    conn.prepare_cached("BEGIN")
        .and_then(|mut s| s.execute([]))
        .map_err(map_err)?;
    let result = op(conn);
    let end = if result.is_ok() { "COMMIT" } else { "ROLLBACK" };
    let ended = conn
        .prepare_cached(end)
        .and_then(|mut s| s.execute([]))
        .map_err(map_err);
    let value = result?;
    ended?;
    Ok(value)
}

fn read_user(c: &Connection, id: &str) -> StoreResult<Option<User>> {
    c.prepare_cached("SELECT * FROM users WHERE id = ?1")
        .and_then(|mut s| s.query_row([id], user_from).optional())
        .map_err(map_err)
}

fn read_access_token(c: &Connection, h: &Hash) -> StoreResult<Option<AccessToken>> {
    c.prepare_cached(
        // Columns by position: this lookup runs for every introspection and
        // bearer request, and finding columns by name compared every name.
        "SELECT a.hash, a.grant_id, a.client_id, a.user_id, a.tenant, a.scope,
                a.audiences, a.issued_at, a.expires_at,
                (a.revoked_at IS NOT NULL OR g.revoked_at IS NOT NULL) AS revoked
         FROM access_tokens a JOIN grants g ON g.id = a.grant_id WHERE a.hash = ?1",
    )
    .and_then(|mut s| {
        s.query_row([h.as_slice()], |r| {
            Ok(AccessToken {
                hash: hash_of(r, 0)?,
                grant_id: r.get(1)?,
                client_id: r.get(2)?,
                user_id: r.get(3)?,
                tenant: r.get(4)?,
                scope: scope_of(r, 5)?,
                audiences: audiences_of(r, 6)?,
                issued_at: r.get(7)?,
                expires_at: r.get(8)?,
                revoked: r.get(9)?,
            })
        })
        .optional()
    })
    .map_err(map_err)
}

fn read_refresh_token(c: &Connection, h: &Hash) -> StoreResult<Option<RefreshToken>> {
    c.prepare_cached(
        // Columns by position, as in `read_access_token`: every refresh reads this.
        "SELECT r.hash, r.access_token_hash, r.issued_at, r.expires_at, r.state,
                r.rotated_at, r.successor_hash, r.successor_sealed,
                (g.revoked_at IS NOT NULL) AS grant_revoked,
                g.id, g.client_id, g.user_id, g.tenant, g.scope, g.audiences,
                g.auth_time, g.created_at, g.sid
         FROM refresh_tokens r JOIN grants g ON g.id = r.grant_id WHERE r.hash = ?1",
    )
    .and_then(|mut s| {
        s.query_row([h.as_slice()], |r| {
            let state = r.get_ref(4)?.as_str()?;
            Ok(RefreshToken {
                hash: hash_of(r, 0)?,
                access_token_hash: optional_hash(r.get_ref(1)?.as_blob_or_null()?),
                issued_at: r.get(2)?,
                expires_at: r.get(3)?,
                state: TokenState::parse(state).unwrap_or(TokenState::Revoked),
                rotation: rotation_at(r, 5)?,
                grant_revoked: r.get(8)?,
                grant: grant_at(r, 9)?,
            })
        })
        .optional()
    })
    .map_err(map_err)
}

/// A refresh token's rotation from three columns starting at `first`: `rotated_at`,
/// `successor_hash`, `successor_sealed`.
fn rotation_at(row: &Row, first: usize) -> rusqlite::Result<Option<Rotation>> {
    let at: Option<UnixTime> = row.get(first)?;
    let successor = optional_hash(row.get_ref(first + 1)?.as_blob_or_null()?);
    Ok(match (at, successor) {
        (Some(at), Some(successor)) => Some(Rotation {
            at,
            successor,
            sealed_successor: row.get(first + 2).ok().flatten(),
        }),
        _ => None,
    })
}

fn hash_of<I: RowIndex>(row: &Row, idx: I) -> rusqlite::Result<Hash> {
    let bytes = row.get_ref(idx)?.as_blob()?;
    <[u8; 32]>::try_from(bytes).map_err(|_| {
        rusqlite::Error::FromSqlConversionFailure(
            0,
            rusqlite::types::Type::Blob,
            "hash is not 32 bytes".into(),
        )
    })
}

fn json_err(e: serde_json::Error) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
}

fn scope_of<I: RowIndex>(row: &Row, idx: I) -> rusqlite::Result<ScopeSet> {
    ScopeSet::parse(row.get_ref(idx)?.as_str()?).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Text, Box::new(e))
    })
}

fn audiences_of<I: RowIndex>(row: &Row, idx: I) -> rusqlite::Result<Vec<String>> {
    let s = row.get_ref(idx)?.as_str()?;
    // Most tokens have no audience: skip the parser for the empty list.
    if s == "[]" {
        return Ok(Vec::new());
    }
    serde_json::from_str(s).map_err(json_err)
}

fn to_json<T: serde::Serialize>(v: &T) -> StoreResult<String> {
    serde_json::to_string(v).map_err(|e| StoreError::Internal(e.to_string()))
}

fn tenant_from(row: &Row) -> rusqlite::Result<Tenant> {
    Ok(Tenant {
        id: row.get("id")?,
        created_at: row.get("created_at")?,
    })
}

fn user_from(row: &Row) -> rusqlite::Result<User> {
    Ok(User {
        id: row.get("id")?,
        tenant: row.get("tenant")?,
        username: row.get("username")?,
        email: row.get("email")?,
        name: row.get("name")?,
        password_hash: row.get("password_hash")?,
        created_at: row.get("created_at")?,
    })
}

fn client_from(row: &Row) -> rusqlite::Result<Client> {
    let settings: String = row.get("settings")?;
    let mut client: Client = serde_json::from_str(&settings).map_err(json_err)?;
    client.secret_hash = optional_hash(row.get_ref("secret_hash")?.as_blob_or_null()?);
    Ok(client)
}

/// A stored 32-byte digest, when there is one of that length.
fn optional_hash(stored: Option<&[u8]>) -> Option<[u8; 32]> {
    stored.and_then(|s| <[u8; 32]>::try_from(s).ok())
}

/// A grant from nine columns starting at `first`: `id`, `client_id`, `user_id`, `tenant`,
/// `scope`, `audiences`, `auth_time`, `created_at`, `sid`.
fn grant_at(row: &Row, first: usize) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: row.get(first)?,
        client_id: row.get(first + 1)?,
        user_id: row.get(first + 2)?,
        tenant: row.get(first + 3)?,
        scope: scope_of(row, first + 4)?,
        audiences: audiences_of(row, first + 5)?,
        auth_time: row.get(first + 6)?,
        created_at: row.get(first + 7)?,
        sid: row.get(first + 8)?,
    })
}

fn grant_from(row: &Row) -> rusqlite::Result<Grant> {
    Ok(Grant {
        id: row.get("grant_id")?,
        client_id: row.get("client_id")?,
        user_id: row.get("user_id")?,
        tenant: row.get("tenant")?,
        scope: scope_of(row, "scope")?,
        audiences: audiences_of(row, "audiences")?,
        auth_time: row.get("auth_time")?,
        sid: row.get("sid")?,
        created_at: row.get("created_at")?,
    })
}

/// `expires_at`: the grant's bound, the latest expiry of any token issued under it. A
/// client's standing grant is stored once: a later step keeps the stored row.
fn insert_grant(
    conn: &Connection,
    g: &Grant,
    expires_at: UnixTime,
    standing: bool,
) -> StoreResult<()> {
    conn.prepare_cached(if standing {
        "INSERT INTO grants (id, client_id, user_id, tenant, scope, audiences, auth_time, created_at, sid, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) ON CONFLICT (id) DO NOTHING"
    } else {
        "INSERT INTO grants (id, client_id, user_id, tenant, scope, audiences, auth_time, created_at, sid, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)"
    })
    .and_then(|mut s| {
        s.execute(params![
            g.id,
            g.client_id,
            g.user_id,
            g.tenant,
            g.scope.to_string(),
            to_json(&g.audiences).unwrap_or_default(),
            g.auth_time,
            g.created_at,
            g.sid,
            expires_at
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

fn insert_audit(conn: &Connection, events: &[AuditEvent]) -> StoreResult<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut st = conn
        .prepare_cached(
            "INSERT INTO audit_events (at, kind, tenant, actor, client_id, ip, request_id, detail)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
        )
        .map_err(map_err)?;
    for e in events {
        st.execute(params![
            e.at,
            e.kind,
            e.tenant,
            e.actor,
            e.client_id,
            e.ip,
            e.request_id,
            e.detail
        ])
        .map_err(map_err)?;
    }
    Ok(())
}

/// Inserts an access token issued on its own, and raises its grant's bound for it.
fn insert_access_token(conn: &Connection, a: &AccessToken) -> StoreResult<()> {
    insert_access_token_row(conn, a)?;
    raise_grant_bound(conn, &a.grant_id, a.issued_at, a.expires_at)
}

fn insert_access_token_row(conn: &Connection, a: &AccessToken) -> StoreResult<()> {
    conn.prepare_cached(
        "INSERT INTO access_tokens (hash, grant_id, client_id, user_id, tenant, scope, audiences, issued_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )
    .and_then(|mut s| {
        s.execute(params![
            a.hash.as_slice(),
            a.grant_id,
            a.client_id,
            a.user_id,
            a.tenant,
            a.scope.to_string(),
            to_json(&a.audiences).unwrap_or_default(),
            a.issued_at,
            a.expires_at
        ])
    })
    .map_err(map_err)?;
    Ok(())
}

/// Keeps a grant's bound on the expiry of its tokens (migrations 7 and 8), after the token
/// inserts of each step: a token that outlives the bound raises it to one more token
/// lifetime beyond the token, so a refresh chain writes its grant's row once per lifetime
/// rather than per rotation.
fn raise_grant_bound(
    conn: &Connection,
    grant_id: &str,
    issued_at: i64,
    expires_at: i64,
) -> StoreResult<()> {
    conn.prepare_cached(
        "UPDATE grants SET expires_at = ?2 + max(?2 - ?3, 0) WHERE id = ?1 AND expires_at < ?2",
    )
    .and_then(|mut s| s.execute(params![grant_id, expires_at, issued_at]))
    .map_err(map_err)?;
    Ok(())
}

fn insert_issuance(conn: &Connection, iss: &Issuance) -> StoreResult<()> {
    if let Some(g) = &iss.new_grant {
        insert_grant(conn, g, iss.new_grant_bound(), iss.standing_grant)?;
    }
    insert_audit(conn, &iss.audit)?;
    let a = &iss.access;
    insert_access_token_row(conn, a)?;
    // The access token's grant is raised for whichever of its tokens here expires later.
    let mut bound = (a.issued_at, a.expires_at);
    if let Some(r) = &iss.refresh {
        conn.prepare_cached(
            "INSERT INTO refresh_tokens (hash, grant_id, access_token_hash, issued_at, expires_at, state)
             VALUES (?1, ?2, ?3, ?4, ?5, 'active')",
        )
        .and_then(|mut s| {
            s.execute(params![
                r.hash.as_slice(),
                r.grant.id,
                r.access_token_hash.as_ref().map(|h| h.as_slice()),
                r.issued_at,
                r.expires_at
            ])
        })
        .map_err(map_err)?;
        if r.grant.id != a.grant_id {
            raise_grant_bound(conn, &r.grant.id, r.issued_at, r.expires_at)?;
        } else if r.expires_at >= a.expires_at {
            // Two tokens of one grant: one raise covers both, one statement fewer in the
            // writer per refresh and code exchange.
            bound = (r.issued_at, r.expires_at);
        }
    }
    raise_grant_bound(conn, &a.grant_id, bound.0, bound.1)
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> StoreResult<()> {
        self.lookup(|c| c.query_row("SELECT 1", [], |_| Ok(())).map_err(map_err))
            .await
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()> {
        let t = tenant.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO tenants (id, created_at) VALUES (?1, ?2)",
                params![t.id, t.created_at],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("tenant {:?}", t.id)),
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>> {
        let id = id.to_owned();
        self.lookup(move |c| {
            c.prepare_cached("SELECT id, created_at FROM tenants WHERE id = ?1")
                .and_then(|mut s| s.query_row([id], tenant_from).optional())
                .map_err(map_err)
        })
        .await
    }

    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>> {
        self.read(|c| {
            let mut s = c
                .prepare_cached("SELECT id, created_at FROM tenants ORDER BY id")
                .map_err(map_err)?;
            let rows = s.query_map([], tenant_from).map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let u = user.clone();
        self.write(move |c| {
            let tenant_exists: bool = c
                .query_row("SELECT 1 FROM tenants WHERE id = ?1", [&u.tenant], |_| {
                    Ok(())
                })
                .optional()
                .map_err(map_err)?
                .is_some();
            if !tenant_exists {
                return Err(StoreError::NotFound(format!("tenant {:?}", u.tenant)));
            }
            c.execute(
                "INSERT INTO users (id, tenant, username, email, name, password_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    u.id,
                    u.tenant,
                    u.username,
                    u.email,
                    u.name,
                    u.password_hash,
                    u.created_at
                ],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => {
                    StoreError::Conflict(format!("user {:?} in tenant {:?}", u.username, u.tenant))
                }
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_user(&self, id: &str) -> StoreResult<Option<User>> {
        self.lookup(|c| read_user(c, id)).await
    }

    async fn find_user(&self, tenant: &str, username: &str) -> StoreResult<Option<User>> {
        let (tenant, username) = (tenant.to_owned(), username.to_owned());
        self.lookup(move |c| {
            c.prepare_cached("SELECT * FROM users WHERE tenant = ?1 AND username = ?2")
                .and_then(|mut s| s.query_row([tenant, username], user_from).optional())
                .map_err(map_err)
        })
        .await
    }

    async fn create_client(&self, client: &Client) -> StoreResult<()> {
        let settings = to_json(client)?;
        let cl = client.clone();
        self.write(move |c| {
            c.execute(
                "INSERT INTO clients (id, secret_hash, settings, owner, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![
                    cl.id,
                    cl.secret_hash.as_ref().map(|h| h.as_slice()),
                    settings,
                    cl.owner,
                    cl.created_at
                ],
            )
            .map_err(|e| match map_err(e) {
                StoreError::Conflict(_) => StoreError::Conflict(format!("client {:?}", cl.id)),
                other => other,
            })?;
            Ok(())
        })
        .await
    }

    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>> {
        self.lookup(|c| self.read_client(c, id)).await
    }

    async fn list_clients(&self) -> StoreResult<Vec<Client>> {
        self.read(|c| {
            let mut s = c
                .prepare_cached("SELECT secret_hash, settings FROM clients ORDER BY created_at, id")
                .map_err(map_err)?;
            let rows = s.query_map([], client_from).map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn delete_client(&self, id: &str) -> StoreResult<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            // Its tokens die with their grants (every token lookup joins its grant); their
            // rows, unusable, go at their expiry. Finding them now would take an index on
            // the tokens' grant, whose random page per new token was two thirds of the WAL
            // frames under refresh (docs/benchmarks.md, session 7).
            let sql = "
                DELETE FROM grants WHERE client_id = ?1;
                DELETE FROM auth_codes WHERE client_id = ?1;
                DELETE FROM consents WHERE client_id = ?1;";
            for stmt in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
                c.execute(stmt, [&id]).map_err(map_err)?;
            }
            let n = c
                .execute("DELETE FROM clients WHERE id = ?1", [&id])
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn set_client_secret(&self, id: &str, secret_hash: &Hash) -> StoreResult<bool> {
        let (id, h) = (id.to_owned(), *secret_hash);
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE clients SET secret_hash = ?1 WHERE id = ?2",
                    params![h.as_slice(), id],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn create_session(&self, session: &Session) -> StoreResult<()> {
        let s = session.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO sessions (hash, user_id, tenant, auth_time, expires_at, sid) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .and_then(|mut st| {
                st.execute(params![s.hash.as_slice(), s.user_id, s.tenant, s.auth_time, s.expires_at, s.sid])
            })
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_session(&self, hash: &Hash) -> StoreResult<Option<Session>> {
        let h = *hash;
        self.lookup(move |c| {
            c.prepare_cached("SELECT * FROM sessions WHERE hash = ?1")
                .and_then(|mut s| {
                    s.query_row([h.as_slice()], |r| {
                        Ok(Session {
                            hash: hash_of(r, "hash")?,
                            sid: r.get("sid")?,
                            user_id: r.get("user_id")?,
                            tenant: r.get("tenant")?,
                            auth_time: r.get("auth_time")?,
                            expires_at: r.get("expires_at")?,
                        })
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn delete_session(&self, hash: &Hash) -> StoreResult<()> {
        let h = *hash;
        self.write(move |c| {
            c.execute("DELETE FROM sessions WHERE hash = ?1", [h.as_slice()])
                .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Consent>> {
        let (u, cl) = (user_id.to_owned(), client_id.to_owned());
        self.lookup(move |c| {
            c.prepare_cached("SELECT * FROM consents WHERE user_id = ?1 AND client_id = ?2")
                .and_then(|mut s| {
                    s.query_row([u, cl], |r| {
                        Ok(Consent {
                            user_id: r.get("user_id")?,
                            client_id: r.get("client_id")?,
                            scope: scope_of(r, "scope")?,
                            granted_at: r.get("granted_at")?,
                        })
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn save_consent(&self, consent: &Consent) -> StoreResult<()> {
        let k = consent.clone();
        self.write(move |c| {
            c.prepare_cached(
                "INSERT INTO consents (user_id, client_id, scope, granted_at) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (user_id, client_id) DO UPDATE SET scope = excluded.scope, granted_at = excluded.granted_at",
            )
            .and_then(|mut s| s.execute(params![k.user_id, k.client_id, k.scope.to_string(), k.granted_at]))
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn insert_code(&self, code: &AuthorizationCode) -> StoreResult<()> {
        let k = code.clone();
        self.write(move |c| {
            let g = &k.grant;
            c.prepare_cached(
                "INSERT INTO auth_codes (hash, grant_id, client_id, user_id, tenant, scope, audiences, auth_time, created_at,
                                         redirect_uri, redirect_uri_sent, nonce, code_challenge, expires_at, sid)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)",
            )
            .and_then(|mut s| {
                s.execute(params![
                    k.hash.as_slice(),
                    g.id,
                    g.client_id,
                    g.user_id,
                    g.tenant,
                    g.scope.to_string(),
                    to_json(&g.audiences).unwrap_or_default(),
                    g.auth_time,
                    g.created_at,
                    k.redirect_uri,
                    k.redirect_uri_sent,
                    k.nonce,
                    k.code_challenge,
                    k.expires_at,
                    g.sid
                ])
            })
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn get_code(&self, hash: &Hash) -> StoreResult<Option<AuthorizationCode>> {
        let h = *hash;
        self.lookup(move |c| {
            c.prepare_cached("SELECT * FROM auth_codes WHERE hash = ?1")
                .and_then(|mut s| {
                    s.query_row([h.as_slice()], |r| {
                        let used_at: Option<i64> = r.get("used_at")?;
                        Ok(AuthorizationCode {
                            hash: hash_of(r, "hash")?,
                            grant: grant_from(r)?,
                            redirect_uri: r.get("redirect_uri")?,
                            redirect_uri_sent: r.get("redirect_uri_sent")?,
                            nonce: r.get("nonce")?,
                            code_challenge: r.get("code_challenge")?,
                            expires_at: r.get("expires_at")?,
                            used: used_at.is_some(),
                        })
                    })
                    .optional()
                })
                .map_err(map_err)
        })
        .await
    }

    async fn redeem_code(
        &self,
        code_hash: &Hash,
        issuance: &Issuance,
        now: UnixTime,
    ) -> StoreResult<Swap> {
        let (h, iss) = (*code_hash, issuance.clone());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    "UPDATE auth_codes SET used_at = ?1 WHERE hash = ?2 AND used_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![now, h.as_slice()]))
                .map_err(map_err)?;
            if n == 0 {
                return Ok(Swap::AlreadyUsed);
            }
            insert_issuance(c, &iss)?;
            Ok(Swap::Done)
        })
        .await
    }

    async fn issue(&self, issuance: &Issuance) -> StoreResult<()> {
        let iss = issuance.clone();
        self.write(move |c| insert_issuance(c, &iss)).await
    }

    async fn get_access_token(&self, hash: &Hash) -> StoreResult<Option<AccessToken>> {
        self.lookup(|c| read_access_token(c, hash)).await
    }

    async fn get_refresh_token(&self, hash: &Hash) -> StoreResult<Option<RefreshToken>> {
        self.lookup(|c| read_refresh_token(c, hash)).await
    }

    async fn get_client_and_access_token(
        &self,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<(Option<Client>, Option<AccessToken>)> {
        self.lookup(|c| {
            in_read_transaction(c, |c| {
                Ok((
                    self.read_client(c, client_id)?,
                    read_access_token(c, token_hash)?,
                ))
            })
        })
        .await
    }

    async fn get_client_and_refresh_token(
        &self,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<RefreshLookup> {
        self.lookup(|c| {
            in_read_transaction(c, |c| {
                let client = self.read_client(c, client_id)?;
                let token = read_refresh_token(c, token_hash)?;
                let user = match token.as_ref().and_then(RefreshLookup::user_wanted) {
                    Some(user_id) => read_user(c, user_id)?,
                    None => None,
                };
                Ok(RefreshLookup {
                    client,
                    token,
                    user,
                })
            })
        })
        .await
    }

    async fn rotate_refresh_token(
        &self,
        old: &Hash,
        issuance: &Issuance,
        sealed_successor: Option<&[u8]>,
        now: UnixTime,
    ) -> StoreResult<Swap> {
        let (h, iss) = (*old, issuance.clone());
        let sealed = sealed_successor.map(<[u8]>::to_vec);
        let successor = iss.refresh.as_ref().map(|r| r.hash.to_vec());
        self.write(move |c| {
            let n = c
                .prepare_cached(
                    // Correlated on the grant's primary key: an `IN (SELECT … WHERE revoked_at
                    // IS NULL)` list would scan every grant on every refresh. A token whose
                    // grant is gone (its client deleted) is dead like a revoked one.
                    "UPDATE refresh_tokens SET state = 'rotated', rotated_at = ?2,
                            successor_hash = ?3, successor_sealed = ?4
                     WHERE hash = ?1 AND state = 'active'
                     AND EXISTS (SELECT 1 FROM grants g
                                 WHERE g.id = refresh_tokens.grant_id AND g.revoked_at IS NULL)",
                )
                .and_then(|mut s| s.execute(params![h.as_slice(), now, successor, sealed]))
                .map_err(map_err)?;
            if n == 0 {
                return Ok(Swap::AlreadyUsed);
            }
            // This token is used now: its parent's sealed copy of it can never serve a
            // retry again, so it goes.
            c.prepare_cached(
                "UPDATE refresh_tokens SET successor_sealed = NULL
                 WHERE successor_hash = ?1 AND successor_sealed IS NOT NULL",
            )
            .and_then(|mut s| s.execute([h.as_slice()]))
            .map_err(map_err)?;
            c.prepare_cached(
                "UPDATE access_tokens SET revoked_at = ?1 WHERE revoked_at IS NULL AND hash =
                 (SELECT access_token_hash FROM refresh_tokens WHERE hash = ?2)",
            )
            .and_then(|mut s| s.execute(params![now, h.as_slice()]))
            .map_err(map_err)?;
            insert_issuance(c, &iss)?;
            Ok(Swap::Done)
        })
        .await
    }

    async fn retry_rotation(
        &self,
        old: &Hash,
        successor: &Hash,
        rotated_since: UnixTime,
        access: &AccessToken,
        now: UnixTime,
    ) -> StoreResult<Swap> {
        let (old, successor, access) = (*old, *successor, access.clone());
        self.write(move |c| {
            let rotated_into_successor = c
                .prepare_cached(
                    "SELECT 1 FROM refresh_tokens WHERE hash = ?1 AND state = 'rotated'
                     AND rotated_at >= ?2 AND successor_hash = ?3",
                )
                .and_then(|mut s| {
                    s.query_row(
                        params![old.as_slice(), rotated_since, successor.as_slice()],
                        |_| Ok(()),
                    )
                    .optional()
                })
                .map_err(map_err)?
                .is_some();
            if !rotated_into_successor {
                return Ok(Swap::AlreadyUsed);
            }
            let replaced: Option<Option<Vec<u8>>> = c
                .prepare_cached(
                    "SELECT r.access_token_hash FROM refresh_tokens r
                     WHERE r.hash = ?1 AND r.state = 'active' AND r.expires_at > ?2
                     AND EXISTS (SELECT 1 FROM grants g
                                 WHERE g.id = r.grant_id AND g.revoked_at IS NULL)",
                )
                .and_then(|mut s| {
                    s.query_row(params![successor.as_slice(), now], |r| r.get(0))
                        .optional()
                })
                .map_err(map_err)?;
            let Some(replaced) = replaced else {
                return Ok(Swap::AlreadyUsed);
            };
            if let Some(replaced) = replaced {
                c.prepare_cached(
                    "UPDATE access_tokens SET revoked_at = ?1 WHERE hash = ?2 AND revoked_at IS NULL",
                )
                .and_then(|mut s| s.execute(params![now, replaced]))
                .map_err(map_err)?;
            }
            insert_access_token(c, &access)?;
            c.prepare_cached("UPDATE refresh_tokens SET access_token_hash = ?1 WHERE hash = ?2")
                .and_then(|mut s| s.execute(params![access.hash.as_slice(), successor.as_slice()]))
                .map_err(map_err)?;
            Ok(Swap::Done)
        })
        .await
    }

    async fn revoke_grant(&self, grant_id: &str, now: UnixTime) -> StoreResult<()> {
        let id = grant_id.to_owned();
        self.write(move |c| {
            c.execute(
                "UPDATE grants SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![now, id],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn revoke_access_token(&self, hash: &Hash, now: UnixTime) -> StoreResult<()> {
        let h = *hash;
        self.write(move |c| {
            c.execute(
                "UPDATE access_tokens SET revoked_at = ?1 WHERE hash = ?2 AND revoked_at IS NULL",
                params![now, h.as_slice()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<()> {
        let events = events.to_vec();
        self.write(move |c| insert_audit(c, &events)).await
    }

    async fn list_audit(&self, since: UnixTime, limit: u32) -> StoreResult<Vec<AuditEvent>> {
        self.read(move |c| {
            let mut s = c
                .prepare_cached("SELECT * FROM audit_events WHERE at >= ?1 ORDER BY id LIMIT ?2")
                .map_err(map_err)?;
            let rows = s
                .query_map(params![since, limit], |r| {
                    Ok(AuditEvent {
                        at: r.get("at")?,
                        kind: r.get("kind")?,
                        tenant: r.get("tenant")?,
                        actor: r.get("actor")?,
                        client_id: r.get("client_id")?,
                        ip: r.get("ip")?,
                        request_id: r.get("request_id")?,
                        detail: r.get("detail")?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn prune_audit(&self, before: UnixTime, batch: u32) -> StoreResult<u64> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM audit_events WHERE rowid IN
                 (SELECT rowid FROM audit_events WHERE at < ?1 ORDER BY at LIMIT ?2)",
                params![before, batch],
            )
            .map(|n| n as u64)
            .map_err(map_err)
        })
        .await
    }

    async fn prune_expired(&self, now: UnixTime, grace: i64, batch: u32) -> StoreResult<Pruned> {
        let cutoff = now - grace.max(0);
        self.write(move |c| {
            let run = |sql: &str| -> StoreResult<u64> {
                c.execute(sql, params![cutoff, batch])
                    .map(|n| n as u64)
                    .map_err(map_err)
            };
            // Every row goes by its expiry index alone, so a pass reads only what it deletes
            // (revoked rows are dead already and go at their expiry too). Rotated refresh
            // tokens stay until they expire: they are what detects reuse. A grant's bound
            // covers every token issued under it, so no live token loses its grant.
            Ok(Pruned {
                codes: run("DELETE FROM auth_codes WHERE hash IN
                            (SELECT hash FROM auth_codes WHERE expires_at < ?1 LIMIT ?2)")?,
                access_tokens: run("DELETE FROM access_tokens WHERE hash IN
                            (SELECT hash FROM access_tokens WHERE expires_at < ?1 LIMIT ?2)")?,
                refresh_tokens: run("DELETE FROM refresh_tokens WHERE hash IN
                            (SELECT hash FROM refresh_tokens WHERE expires_at < ?1 LIMIT ?2)")?,
                grants: run("DELETE FROM grants WHERE id IN
                            (SELECT id FROM grants WHERE expires_at < ?1 LIMIT ?2)")?,
                audit_events: 0,
                sessions: run("DELETE FROM sessions WHERE hash IN
                            (SELECT hash FROM sessions WHERE expires_at < ?1 LIMIT ?2)")?,
            })
        })
        .await
    }

    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>> {
        self.read(|c| {
            let mut s = c
                .prepare_cached("SELECT * FROM signing_keys ORDER BY activates_at, created_at")
                .map_err(map_err)?;
            let rows = s
                .query_map([], |r| {
                    Ok(SigningKeyRecord {
                        kid: r.get("kid")?,
                        alg: r.get("alg")?,
                        sealed: r.get("sealed")?,
                        created_at: r.get("created_at")?,
                        activates_at: r.get("activates_at")?,
                        retires_at: r.get("retires_at")?,
                        publish_until: r.get("publish_until")?,
                    })
                })
                .map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn save_signing_keys(
        &self,
        new: &[SigningKeyRecord],
        retire: &[KeyRetirement],
    ) -> StoreResult<()> {
        let (new, retire) = (new.to_vec(), retire.to_vec());
        self.write(move |c| {
            for k in &new {
                c.execute(
                    "INSERT INTO signing_keys (kid, alg, sealed, created_at, activates_at, retires_at, publish_until)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    params![k.kid, k.alg, k.sealed, k.created_at, k.activates_at, k.retires_at, k.publish_until],
                )
                .map_err(map_err)?;
            }
            for r in &retire {
                c.execute(
                    "UPDATE signing_keys SET retires_at = ?1, publish_until = ?2 WHERE kid = ?3",
                    params![r.retires_at, r.publish_until, r.kid],
                )
                .map_err(map_err)?;
            }
            Ok(())
        })
        .await
    }

    // ---- Developer self-service (settings pages). ----

    async fn list_clients_by_owner(&self, owner: &str) -> StoreResult<Vec<Client>> {
        let owner = owner.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT secret_hash, settings FROM clients WHERE owner = ?1 ORDER BY created_at, id",
                )
                .map_err(map_err)?;
            let rows = s.query_map([owner], client_from).map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn update_client(&self, client: &Client) -> StoreResult<bool> {
        let settings = to_json(client)?;
        let id = client.id.clone();
        self.write(move |c| {
            let n = c
                .execute(
                    "UPDATE clients SET settings = ?1 WHERE id = ?2",
                    params![settings, id],
                )
                .map_err(map_err)?;
            Ok(n > 0)
        })
        .await
    }

    async fn list_consents(&self, user_id: &str) -> StoreResult<Vec<Consent>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT * FROM consents WHERE user_id = ?1 ORDER BY granted_at DESC, client_id",
                )
                .map_err(map_err)?;
            let rows = s.query_map([user_id], consent_from).map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (u, cl) = (user_id.to_owned(), client_id.to_owned());
        self.write(move |c| {
            let consents = c
                .execute(
                    "DELETE FROM consents WHERE user_id = ?1 AND client_id = ?2",
                    params![u, cl],
                )
                .map_err(map_err)?;
            let grants = c
                .execute(
                    "UPDATE grants SET revoked_at = ?3
                     WHERE user_id = ?1 AND client_id = ?2 AND revoked_at IS NULL",
                    params![u, cl, now],
                )
                .map_err(map_err)?;
            // A code already issued must not outlive the consent it came from.
            c.execute(
                "UPDATE auth_codes SET used_at = ?3
                 WHERE user_id = ?1 AND client_id = ?2 AND used_at IS NULL",
                params![u, cl, now],
            )
            .map_err(map_err)?;
            Ok(consents + grants > 0)
        })
        .await
    }

    async fn create_personal_token(
        &self,
        token: &PersonalAccessToken,
        issuance: &Issuance,
    ) -> StoreResult<()> {
        let (t, iss) = (token.clone(), issuance.clone());
        self.write(move |c| {
            insert_issuance(c, &iss)?;
            c.execute(
                "INSERT INTO personal_access_tokens
                 (id, user_id, tenant, name, scope, grant_id, token_hash, created_at, expires_at, last_used_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    t.id,
                    t.user_id,
                    t.tenant,
                    t.name,
                    t.scope.to_string(),
                    t.grant_id,
                    t.token_hash.as_slice(),
                    t.created_at,
                    t.expires_at,
                    t.last_used_at
                ],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }

    async fn list_personal_tokens(&self, user_id: &str) -> StoreResult<Vec<PersonalAccessToken>> {
        let user_id = user_id.to_owned();
        self.read(move |c| {
            let mut s = c
                .prepare_cached(
                    "SELECT * FROM personal_access_tokens WHERE user_id = ?1 ORDER BY created_at DESC, id",
                )
                .map_err(map_err)?;
            let rows = s.query_map([user_id], personal_token_from).map_err(map_err)?;
            rows.collect::<Result<Vec<_>, _>>().map_err(map_err)
        })
        .await
    }

    async fn revoke_personal_token(
        &self,
        user_id: &str,
        id: &str,
        now: UnixTime,
    ) -> StoreResult<bool> {
        let (u, id) = (user_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let grant: Option<String> = c
                .query_row(
                    "SELECT grant_id FROM personal_access_tokens WHERE id = ?1 AND user_id = ?2",
                    params![id, u],
                    |r| r.get(0),
                )
                .optional()
                .map_err(map_err)?;
            let Some(grant) = grant else {
                return Ok(false);
            };
            c.execute(
                "UPDATE grants SET revoked_at = ?1 WHERE id = ?2 AND revoked_at IS NULL",
                params![now, grant],
            )
            .map_err(map_err)?;
            c.execute(
                "DELETE FROM personal_access_tokens WHERE id = ?1",
                params![id],
            )
            .map_err(map_err)?;
            Ok(true)
        })
        .await
    }

    async fn touch_personal_token(&self, token_hash: &Hash, now: UnixTime) -> StoreResult<()> {
        let h = *token_hash;
        self.write(move |c| {
            c.execute(
                "UPDATE personal_access_tokens SET last_used_at = ?1
                 WHERE token_hash = ?2 AND (last_used_at IS NULL OR last_used_at <= ?1 - 60)",
                params![now, h.as_slice()],
            )
            .map_err(map_err)?;
            Ok(())
        })
        .await
    }
}

fn consent_from(r: &Row) -> rusqlite::Result<Consent> {
    Ok(Consent {
        user_id: r.get("user_id")?,
        client_id: r.get("client_id")?,
        scope: scope_of(r, "scope")?,
        granted_at: r.get("granted_at")?,
    })
}

fn personal_token_from(r: &Row) -> rusqlite::Result<PersonalAccessToken> {
    Ok(PersonalAccessToken {
        id: r.get("id")?,
        user_id: r.get("user_id")?,
        tenant: r.get("tenant")?,
        name: r.get("name")?,
        scope: scope_of(r, "scope")?,
        grant_id: r.get("grant_id")?,
        token_hash: hash_of(r, "token_hash")?,
        created_at: r.get("created_at")?,
        expires_at: r.get("expires_at")?,
        last_used_at: r.get("last_used_at")?,
    })
}

/// Re-exported so callers can name the store type without depending on rusqlite.
pub type SharedStore = Arc<dyn Store>;
