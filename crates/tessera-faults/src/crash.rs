//! `tessera-faults crash`: mixed load against `tessera serve`, SIGKILL at seeded random
//! moments, restart on the same store, and after every restart a check of everything
//! the killed server had acknowledged.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::flow::{self, Outcome};
use crate::load::{self, lock, Counts, Ledger, Load};
use crate::server::Tessera;

#[derive(Clone, Debug)]
pub struct CrashOptions {
    pub tessera: PathBuf,
    /// A PostgreSQL URL (a fresh schema is used); SQLite in a temporary folder otherwise.
    pub postgres: Option<String>,
    pub kills: u32,
    pub seed: u64,
    pub workers: usize,
    /// Load runs this long (uniformly drawn, milliseconds) before each kill.
    pub min_uptime_ms: u64,
    pub max_uptime_ms: u64,
    /// Stop killing once this much time has passed (the run stays bounded).
    pub max_duration: Duration,
}

/// One kill and the check after the restart.
#[derive(Clone, Debug)]
pub struct Round {
    pub uptime_ms: u64,
    /// Running totals when the server was killed.
    pub counts_after: Counts,
    /// Facts checked so far (after every restart before this kill).
    pub checks: u64,
    pub violations_after: usize,
}

#[derive(Debug)]
pub struct CrashReport {
    pub backend: &'static str,
    pub rounds: Vec<Round>,
    pub counts: Counts,
    pub checks: u64,
    /// Live refresh tokens refreshed for real at the end.
    pub final_refreshes: u64,
    pub violations: Vec<String>,
    pub elapsed: Duration,
}

impl CrashReport {
    pub fn table(&self) -> String {
        let c = &self.counts;
        let mut out = format!(
            "crash test on {} — {} kills in {:.1} s\n",
            self.backend,
            self.rounds.len(),
            self.elapsed.as_secs_f64()
        );
        out += "round  uptime_ms  acknowledged  lost  checked  violations\n";
        for (i, r) in self.rounds.iter().enumerate() {
            out += &format!(
                "{:>5}  {:>9}  {:>12}  {:>4}  {:>6}  {:>10}\n",
                i + 1,
                r.uptime_ms,
                r.counts_after.acknowledged(),
                r.counts_after.lost,
                r.checks,
                r.violations_after
            );
        }
        out += &format!(
            "acknowledged: {} code flows, {} consents, {} refreshes, {} revocations, {} clients; \
             {} responses lost to kills\n",
            c.code_flows, c.consents, c.refreshes, c.revocations, c.clients, c.lost
        );
        out += &format!(
            "checks after restarts: {}; live refresh tokens refreshed at the end: {}; violations: {}\n",
            self.checks,
            self.final_refreshes,
            self.violations.len()
        );
        for v in self.violations.iter().take(20) {
            out += &format!("  VIOLATION: {v}\n");
        }
        out
    }
}

pub async fn run(opts: &CrashOptions) -> Result<CrashReport> {
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let mut schema_to_drop = None;
    let (database, env, backend) = match &opts.postgres {
        Some(url) => {
            let schema = format!("tessera_faults_{}_{}", std::process::id(), opts.seed);
            schema_to_drop = Some((url.clone(), schema.clone()));
            let sep = if url.contains('?') { '&' } else { '?' };
            let key = tessera_crypto::MasterKey::generate()?.to_text().to_string();
            (
                format!("{url}{sep}schema={schema}"),
                vec![("TESSERA_MASTER_KEY".to_owned(), key)],
                "PostgreSQL",
            )
        }
        None => (
            format!("sqlite://{}", dir.path().join("tessera.db").display()),
            Vec::new(),
            "SQLite",
        ),
    };
    let tessera = Tessera {
        binary: opts.tessera.clone(),
        database: database.clone(),
        env,
        serve_args: Vec::new(),
    };
    let provisioner = tessera.clone();
    let (users, clients) =
        tokio::task::spawn_blocking(move || load::provision(&provisioner, 3, 2)).await??;
    let ledger = Arc::new(Mutex::new(Ledger {
        clients,
        ..Ledger::default()
    }));
    let users = Arc::new(users);
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let mut rounds = Vec::new();
    let mut checks = 0;
    for round in 0..opts.kills {
        if round > 0 && started.elapsed() > opts.max_duration {
            break;
        }
        let server = tessera.start().await?;
        let origin = server.origin();
        if round > 0 {
            checks += load::verify(&origin, &database, &ledger).await?;
        }
        let stop = Arc::new(AtomicBool::new(false));
        let load = Load {
            origin,
            tessera: tessera.clone(),
            users: users.clone(),
            ledger: ledger.clone(),
            stop: stop.clone(),
            client_create_ratio: 0.03,
            // Tokens live an hour (access) and 30 days (refresh): none expires in a run.
            max_token_age: None,
        };
        let mut workers = load.spawn(opts.workers, opts.seed ^ u64::from(round));
        let uptime_ms = rng.random_range(opts.min_uptime_ms..=opts.max_uptime_ms);
        tokio::time::sleep(Duration::from_millis(uptime_ms)).await;
        // The kill lands while the workers have requests in flight.
        server.kill()?;
        stop.store(true, Ordering::Relaxed);
        while workers.join_next().await.is_some() {}
        let l = lock(&ledger);
        rounds.push(Round {
            uptime_ms,
            counts_after: l.counts,
            checks,
            violations_after: l.violations.len(),
        });
    }
    // The last restart: check once more, then every live refresh token must refresh.
    let mut server = tessera.start().await?;
    let origin = server.origin();
    checks += load::verify(&origin, &database, &ledger).await?;
    let live = lock(&ledger).live.clone();
    let http = flow::api_client();
    let mut final_refreshes = 0;
    for family in &live {
        match flow::refresh(&http, &origin, &family.client, &family.tokens.refresh).await {
            Outcome::Ack(_) => final_refreshes += 1,
            Outcome::Refused(s, b) => lock(&ledger).violations.push(format!(
                "acknowledged refresh token does not refresh: HTTP {s}: {b}"
            )),
            Outcome::Lost(e) => lock(&ledger)
                .violations
                .push(format!("final refresh got no answer: {e}")),
        }
    }
    server.terminate()?;
    let status = server.wait_exit(Duration::from_secs(30)).await?;
    if !status.success() {
        lock(&ledger)
            .violations
            .push(format!("tessera exited with {status} after SIGTERM"));
    }
    if let Some(path) = crate::server::sqlite_path(&database) {
        let integrity = load::sqlite_integrity(path)?;
        if integrity != "ok" {
            lock(&ledger).violations.push(format!(
                "SQLite integrity check after shutdown: {integrity}"
            ));
        }
    }
    if let Some((url, schema)) = schema_to_drop {
        drop_schema(&url, &schema).await?;
    }
    let l = lock(&ledger);
    if rounds.is_empty() {
        bail!("no kill happened");
    }
    Ok(CrashReport {
        backend,
        rounds,
        counts: l.counts,
        checks,
        final_refreshes,
        violations: l.violations.clone(),
        elapsed: started.elapsed(),
    })
}

/// Removes the run's PostgreSQL schema (its name is ours: letters, digits, underscores).
async fn drop_schema(url: &str, schema: &str) -> Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(url).await?;
    sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}
