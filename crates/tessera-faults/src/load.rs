//! The mixed load (code flows with sign-in and consent, refreshes, revocations, client
//! creation) and the ledger of every response it received, which the checks replay
//! against the restarted server and its store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use anyhow::{anyhow, Context, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tessera_crypto::SecretHash;
use tessera_store::Store;
use tessera_store_postgres::PostgresStore;
use tessera_store_sqlite::SqliteStore;

use crate::flow::{self, ClientCreds, Outcome, Tokens};
use crate::server::{sqlite_path, Tessera};

/// A provisioned user.
#[derive(Clone, Debug)]
pub struct LoadUser {
    pub id: String,
    pub username: String,
    pub password: String,
}

/// Tokens of one grant and the client they belong to.
#[derive(Clone, Debug)]
pub struct Family {
    pub client: ClientCreds,
    pub tokens: Tokens,
    /// When the server acknowledged these tokens.
    pub acknowledged_at: std::time::Instant,
}

/// Counts of acknowledged (and lost) responses.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub code_flows: u64,
    pub consents: u64,
    pub refreshes: u64,
    pub revocations: u64,
    pub clients: u64,
    /// Requests whose response never arrived (their outcome is unknown and not checked).
    pub lost: u64,
}

impl Counts {
    pub fn acknowledged(&self) -> u64 {
        self.code_flows + self.consents + self.refreshes + self.revocations + self.clients
    }
}

/// Everything the server acknowledged, hence promised to keep.
#[derive(Default)]
pub struct Ledger {
    /// Refresh tokens that must still refresh (acknowledged, never presented since).
    pub live: Vec<Family>,
    /// Acknowledged revocations: refresh and access token must stay inactive.
    pub revoked: Vec<Family>,
    /// Acknowledged rotations: the old token must stay consumed and its successor stored.
    pub rotations: Vec<(Family, String)>,
    /// Acknowledged consents (user id, client id).
    pub consents: Vec<(String, String)>,
    /// Clients whose creation was acknowledged.
    pub clients: Vec<ClientCreds>,
    pub counts: Counts,
    /// Broken promises and unexpected answers, in words.
    pub violations: Vec<String>,
}

pub type SharedLedger = Arc<Mutex<Ledger>>;

pub fn lock(ledger: &SharedLedger) -> MutexGuard<'_, Ledger> {
    match ledger.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

/// Provisions users and clients through the CLI, as an operator would.
pub fn provision(
    tessera: &Tessera,
    users: usize,
    clients: usize,
) -> Result<(Vec<LoadUser>, Vec<ClientCreds>)> {
    let mut made_users = Vec::new();
    for i in 0..users {
        let username = format!("faults{i}");
        let password = format!("a long passphrase {i}");
        let out = tessera.admin(
            &[
                "user",
                "create",
                "--username",
                &username,
                "--password-stdin",
                "--json",
            ],
            Some(&format!("{password}\n")),
        )?;
        let json: serde_json::Value = serde_json::from_str(&out)?;
        let id = json["id"]
            .as_str()
            .ok_or_else(|| anyhow!("no user id in {out}"))?
            .to_owned();
        made_users.push(LoadUser {
            id,
            username,
            password,
        });
    }
    let mut made_clients = Vec::new();
    for i in 0..clients {
        made_clients.push(create_client(tessera, &format!("faults-initial-{i}"))?);
    }
    Ok((made_users, made_clients))
}

pub fn create_client(tessera: &Tessera, name: &str) -> Result<ClientCreds> {
    run_client_create(tessera, name, &[])
}

/// A client whose access and refresh tokens live `ttl` seconds.
pub fn create_client_with_ttl(tessera: &Tessera, name: &str, ttl: i64) -> Result<ClientCreds> {
    let ttl = ttl.to_string();
    run_client_create(
        tessera,
        name,
        &["--access-token-ttl", &ttl, "--refresh-token-ttl", &ttl],
    )
}

fn run_client_create(tessera: &Tessera, name: &str, extra: &[&str]) -> Result<ClientCreds> {
    let mut args = vec![
        "client",
        "create",
        "--name",
        name,
        "--redirect-uri",
        flow::CALLBACK,
        "--scopes",
        "openid offline_access",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = tessera.admin(&args, None)?;
    let json: serde_json::Value = serde_json::from_str(&out)?;
    match (json["client_id"].as_str(), json["client_secret"].as_str()) {
        (Some(id), Some(secret)) => Ok(ClientCreds {
            id: id.to_owned(),
            secret: secret.to_owned(),
        }),
        _ => Err(anyhow!("no client credentials in {out}")),
    }
}

/// What the load workers share.
#[derive(Clone)]
pub struct Load {
    pub origin: String,
    pub tessera: Tessera,
    pub users: Arc<Vec<LoadUser>>,
    pub ledger: SharedLedger,
    pub stop: Arc<AtomicBool>,
    /// Chance per step of creating a client with the CLI (a process per client).
    pub client_create_ratio: f64,
    /// Tokens older than this are retired from the load unused: with short-lived tokens
    /// (the soak) a refusal of an expired token is right, not a broken promise.
    pub max_token_age: Option<std::time::Duration>,
}

impl Load {
    /// Runs `workers` workers until `stop` is set; each has its own seeded generator.
    pub fn spawn(&self, workers: usize, seed: u64) -> tokio::task::JoinSet<()> {
        let mut set = tokio::task::JoinSet::new();
        for w in 0..workers {
            let load = self.clone();
            set.spawn(async move {
                load.worker(seed.wrapping_mul(31).wrapping_add(w as u64))
                    .await
            });
        }
        set
    }

    async fn worker(self, seed: u64) {
        let mut rng = StdRng::seed_from_u64(seed);
        let http = flow::api_client();
        while !self.stop.load(Ordering::Relaxed) {
            let roll: f64 = rng.random();
            if roll < self.client_create_ratio {
                self.create_client(&mut rng).await;
                continue;
            }
            let taken = if roll < 0.30 {
                None
            } else {
                let mut ledger = lock(&self.ledger);
                if let Some(max_age) = self.max_token_age {
                    ledger
                        .live
                        .retain(|f| f.acknowledged_at.elapsed() < max_age);
                }
                if ledger.live.is_empty() {
                    None
                } else {
                    let i = rng.random_range(0..ledger.live.len());
                    Some(ledger.live.swap_remove(i))
                }
            };
            let lost_before = lock(&self.ledger).counts.lost;
            match taken {
                None => self.code_flow(&http, &mut rng).await,
                Some(family) if roll < 0.82 => self.refresh(&http, family).await,
                Some(family) => self.revoke(&http, family).await,
            }
            if lock(&self.ledger).counts.lost > lost_before {
                // The server is probably down: back off like a client would, instead of
                // spending the ledger's live tokens on refused connections.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    }

    async fn create_client(&self, rng: &mut StdRng) {
        let tessera = self.tessera.clone();
        let name = format!("faults-{:016x}", rng.random::<u64>());
        let made = tokio::task::spawn_blocking(move || create_client(&tessera, &name)).await;
        let mut ledger = lock(&self.ledger);
        match made {
            Ok(Ok(client)) => {
                ledger.counts.clients += 1;
                ledger.clients.push(client);
            }
            Ok(Err(e)) => ledger
                .violations
                .push(format!("client create failed: {e:#}")),
            Err(e) => ledger.violations.push(format!("client create task: {e}")),
        }
    }

    async fn code_flow(&self, http: &reqwest::Client, rng: &mut StdRng) {
        let (client, user) = {
            let ledger = lock(&self.ledger);
            if ledger.clients.is_empty() || self.users.is_empty() {
                return;
            }
            let client = ledger.clients[rng.random_range(0..ledger.clients.len())].clone();
            let user = self.users[rng.random_range(0..self.users.len())].clone();
            (client, user)
        };
        let report = flow::authorize(
            &self.origin,
            &client,
            &user.username,
            &user.password,
            "openid offline_access",
        )
        .await;
        if report.consented {
            let mut ledger = lock(&self.ledger);
            ledger.counts.consents += 1;
            ledger.consents.push((user.id.clone(), client.id.clone()));
        }
        if let Some(failure) = report.failure {
            self.note_failure("authorize", failure);
            return;
        }
        let Some(code) = report.code else { return };
        match flow::redeem(http, &self.origin, &client, &code).await {
            Outcome::Ack(tokens) => {
                let mut ledger = lock(&self.ledger);
                ledger.counts.code_flows += 1;
                ledger.live.push(Family {
                    client,
                    tokens,
                    acknowledged_at: std::time::Instant::now(),
                });
            }
            other => self.note_failure("code exchange", other),
        }
    }

    async fn refresh(&self, http: &reqwest::Client, family: Family) {
        let outcome =
            flow::refresh(http, &self.origin, &family.client, &family.tokens.refresh).await;
        match outcome {
            Outcome::Ack(tokens) => {
                let mut ledger = lock(&self.ledger);
                ledger.counts.refreshes += 1;
                let successor = tokens.refresh.clone();
                ledger.live.push(Family {
                    client: family.client.clone(),
                    tokens,
                    acknowledged_at: std::time::Instant::now(),
                });
                ledger.rotations.push((family, successor));
            }
            other => self.note_failure("refresh of an acknowledged refresh token", other),
        }
    }

    async fn revoke(&self, http: &reqwest::Client, family: Family) {
        match flow::revoke(http, &self.origin, &family.client, &family.tokens.refresh).await {
            Outcome::Ack(()) => {
                let mut ledger = lock(&self.ledger);
                ledger.counts.revocations += 1;
                ledger.revoked.push(family);
            }
            other => self.note_failure("revocation", other),
        }
    }

    /// A lost response is expected around a kill; a refusal is a broken promise.
    fn note_failure<T>(&self, what: &str, outcome: Outcome<T>) {
        let mut ledger = lock(&self.ledger);
        match outcome {
            Outcome::Lost(_) => ledger.counts.lost += 1,
            Outcome::Refused(status, body) => {
                let body: String = body.chars().take(200).collect();
                ledger
                    .violations
                    .push(format!("{what}: HTTP {status}: {body}"));
            }
            Outcome::Ack(_) => {}
        }
    }
}

/// Opens the store the server uses, to look at it directly.
pub async fn open_store(database: &str) -> Result<Arc<dyn Store>> {
    if PostgresStore::is_postgres_url(database) {
        let store = PostgresStore::connect_with(database, Default::default())
            .await
            .context("cannot open the PostgreSQL store")?;
        return Ok(Arc::new(store));
    }
    let path = sqlite_path(database).ok_or_else(|| anyhow!("not a sqlite:// URL: {database}"))?;
    Ok(Arc::new(
        SqliteStore::open(path).context("cannot open the SQLite store")?,
    ))
}

/// `PRAGMA integrity_check` on a read-only connection: "ok" when the file is sound.
pub fn sqlite_integrity(path: &std::path::Path) -> Result<String> {
    let conn =
        rusqlite::Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))?;
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")?
        .query_map([], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows.join("; "))
}

/// Replays the ledger against the running server (HTTP) and the store; returns how many
/// facts were checked. Broken promises are appended to the ledger's violations.
pub async fn verify(origin: &str, database: &str, ledger: &SharedLedger) -> Result<u64> {
    let (live, revoked, rotations, consents, clients) = {
        let l = lock(ledger);
        (
            l.live.clone(),
            l.revoked.clone(),
            l.rotations.clone(),
            l.consents.clone(),
            l.clients.clone(),
        )
    };
    let http = flow::api_client();
    let mut broken = Vec::new();
    let mut checks = 0u64;
    let mut expect = |what: String, outcome: Outcome<bool>, want: bool| {
        checks += 1;
        match outcome {
            Outcome::Ack(active) if active == want => {}
            Outcome::Ack(active) => {
                broken.push(format!("{what}: active={active}, expected {want}"))
            }
            Outcome::Refused(s, b) => broken.push(format!("{what}: HTTP {s}: {b}")),
            Outcome::Lost(e) => broken.push(format!("{what}: no answer: {e}")),
        }
    };
    for f in &live {
        let r = flow::introspect(&http, origin, &f.client, &f.tokens.refresh).await;
        expect("acknowledged refresh token".into(), r, true);
        let a = flow::introspect(&http, origin, &f.client, &f.tokens.access).await;
        expect("access token of an acknowledged grant".into(), a, true);
    }
    for f in &revoked {
        let r = flow::introspect(&http, origin, &f.client, &f.tokens.refresh).await;
        expect("revoked refresh token".into(), r, false);
        let a = flow::introspect(&http, origin, &f.client, &f.tokens.access).await;
        expect("access token of a revoked grant".into(), a, false);
    }
    for (old, _) in &rotations {
        let r = flow::introspect(&http, origin, &old.client, &old.tokens.refresh).await;
        expect("rotated refresh token".into(), r, false);
    }
    let store = open_store(database).await?;
    for (_, successor) in &rotations {
        checks += 1;
        if store
            .get_refresh_token(&SecretHash::of(successor).0)
            .await?
            .is_none()
        {
            broken.push("a consumed refresh token's successor is missing from the store".into());
        }
    }
    for (user, client) in &consents {
        checks += 1;
        if store.get_consent(user, client).await?.is_none() {
            broken.push(format!(
                "acknowledged consent of {user} for {client} is missing"
            ));
        }
    }
    for c in &clients {
        checks += 1;
        if store.get_client(&c.id).await?.is_none() {
            broken.push(format!("acknowledged client {} is missing", c.id));
        }
    }
    drop(store);
    if let Some(path) = sqlite_path(database) {
        checks += 1;
        let integrity = sqlite_integrity(path)?;
        if integrity != "ok" {
            broken.push(format!("SQLite integrity check: {integrity}"));
        }
    }
    lock(ledger).violations.extend(broken);
    Ok(checks)
}
