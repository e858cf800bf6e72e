//! `tessera-faults soak`: a long mixed load against one `tessera serve`, sampling the
//! server's resident memory, open files and store size, so that growth shows.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::load::{self, lock, Ledger, Load};
use crate::server::Tessera;

#[derive(Clone, Debug)]
pub struct SoakOptions {
    pub tessera: PathBuf,
    pub duration: Duration,
    pub sample_every: Duration,
    pub workers: usize,
    pub seed: u64,
    /// Token lifetimes of the load's clients: short, so that the janitor (every minute,
    /// expired rows plus a 300 s grace) has something to remove during the run.
    pub token_ttl: i64,
}

#[derive(Clone, Debug)]
pub struct Sample {
    pub at: Duration,
    pub rss_kib: u64,
    pub open_files: u64,
    pub store_bytes: u64,
    /// Rows per table, to tell what grows.
    pub refresh_tokens: i64,
    pub access_tokens: i64,
    pub audit_events: i64,
    pub acknowledged: u64,
}

#[derive(Debug)]
pub struct SoakReport {
    pub samples: Vec<Sample>,
    pub violations: Vec<String>,
}

impl SoakReport {
    pub fn table(&self) -> String {
        let mut out = String::from(
            "  min:s  rss_KiB  open_fds  store_KiB  refresh_rows  access_rows  audit_rows  acknowledged\n",
        );
        for s in &self.samples {
            out += &format!(
                "{:>4}:{:02}  {:>7}  {:>8}  {:>9}  {:>12}  {:>11}  {:>10}  {:>12}\n",
                s.at.as_secs() / 60,
                s.at.as_secs() % 60,
                s.rss_kib,
                s.open_files,
                s.store_bytes / 1024,
                s.refresh_tokens,
                s.access_tokens,
                s.audit_events,
                s.acknowledged
            );
        }
        out += &format!("violations: {}\n", self.violations.len());
        for v in self.violations.iter().take(20) {
            out += &format!("  VIOLATION: {v}\n");
        }
        out
    }
}

/// VmRSS of a process, from /proc.
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse().ok())
        })
        .unwrap_or(0)
}

/// Open file descriptors of a process (sockets included).
pub fn open_files(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// The database file with its WAL and shared-memory files.
pub fn store_bytes(db: &Path) -> u64 {
    ["", "-wal", "-shm"]
        .iter()
        .filter_map(|suffix| {
            let mut p = db.as_os_str().to_owned();
            p.push(suffix);
            std::fs::metadata(PathBuf::from(p)).ok()
        })
        .map(|m| m.len())
        .sum()
}

fn row_count(db: &Path, table: &str) -> i64 {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0)))
        .unwrap_or(-1)
}

pub async fn run(opts: &SoakOptions) -> Result<SoakReport> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("tessera.db");
    // Every simulated browser comes from 127.0.0.1, which the per-address authorize limit
    // exists to stop; and a short audit retention, so that ten minutes show the janitor
    // holding the store flat (the default keeps 90 days).
    let config = dir.path().join("soak.toml");
    std::fs::write(
        &config,
        "audit_retention = 300\n[rate_limits]\nauthorize_requests = { burst = 1000000, per_minute = 1000000 }\n",
    )?;
    let tessera = Tessera {
        binary: opts.tessera.clone(),
        database: format!("sqlite://{}", db.display()),
        env: Vec::new(),
        serve_args: vec!["--config".into(), config.display().to_string()],
    };
    let provisioner = tessera.clone();
    let ttl = opts.token_ttl;
    let (users, clients) = tokio::task::spawn_blocking(move || {
        let (users, _) = load::provision(&provisioner, 3, 0)?;
        let clients = (0..4)
            .map(|i| load::create_client_with_ttl(&provisioner, &format!("soak-{i}"), ttl))
            .collect::<Result<Vec<_>>>()?;
        Ok::<_, anyhow::Error>((users, clients))
    })
    .await??;
    let ledger = Arc::new(Mutex::new(Ledger {
        clients,
        ..Ledger::default()
    }));
    let server = tessera.start().await?;
    let stop = Arc::new(AtomicBool::new(false));
    let load = Load {
        origin: server.origin(),
        tessera: tessera.clone(),
        users: Arc::new(users),
        ledger: ledger.clone(),
        stop: stop.clone(),
        // No new clients: each would add consents and a CLI process, not steady load.
        client_create_ratio: 0.0,
        // Half the lifetime: a token is never presented near its expiry.
        max_token_age: Some(Duration::from_secs(opts.token_ttl.max(2) as u64 / 2)),
    };
    let mut workers = load.spawn(opts.workers, opts.seed);
    let started = Instant::now();
    let mut samples = Vec::new();
    loop {
        let at = started.elapsed();
        samples.push(Sample {
            at,
            rss_kib: rss_kib(server.pid()),
            open_files: open_files(server.pid()),
            store_bytes: store_bytes(&db),
            refresh_tokens: row_count(&db, "refresh_tokens"),
            access_tokens: row_count(&db, "access_tokens"),
            audit_events: row_count(&db, "audit_events"),
            acknowledged: lock(&ledger).counts.acknowledged(),
        });
        if let Some(s) = samples.last() {
            eprintln!(
                "soak {:>4}s rss={}KiB fds={} store={}KiB ack={}",
                s.at.as_secs(),
                s.rss_kib,
                s.open_files,
                s.store_bytes / 1024,
                s.acknowledged
            );
        }
        if at >= opts.duration {
            break;
        }
        tokio::time::sleep(
            opts.sample_every
                .min(opts.duration.saturating_sub(at) + Duration::from_millis(1)),
        )
        .await;
    }
    stop.store(true, Ordering::Relaxed);
    while workers.join_next().await.is_some() {}
    server.kill()?;
    let violations = lock(&ledger).violations.clone();
    Ok(SoakReport {
        samples,
        violations,
    })
}
