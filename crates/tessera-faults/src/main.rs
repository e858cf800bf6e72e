//! `tessera-faults crash | soak`: see the library documentation.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{anyhow, Result};
use clap::{Parser, Subcommand};
use tessera_faults::{crash, server, soak};

#[derive(Parser)]
#[command(
    name = "tessera-faults",
    about = "Crash and soak drivers for tessera serve"
)]
struct Cli {
    /// The tessera binary [default: target/<profile>/tessera next to this program, or TESSERA_BIN]
    #[arg(long, global = true)]
    tessera: Option<PathBuf>,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// SIGKILL the server under load, restart it on the same store, check every promise.
    Crash {
        #[arg(long, default_value_t = 20)]
        kills: u32,
        #[arg(long, default_value_t = 8)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        /// Shortest load before a kill, in milliseconds
        #[arg(long, default_value_t = 300)]
        min_uptime_ms: u64,
        /// Longest load before a kill, in milliseconds
        #[arg(long, default_value_t = 3000)]
        max_uptime_ms: u64,
        /// Stop killing after this many seconds
        #[arg(long, default_value_t = 600)]
        max_seconds: u64,
        /// Run on PostgreSQL (a fresh schema) instead of a temporary SQLite file,
        /// e.g. postgres://postgres@127.0.0.1:5432/test
        #[arg(long)]
        postgres: Option<String>,
    },
    /// Mixed load for a while; prints RSS, open files and store size over time.
    Soak {
        #[arg(long, default_value_t = 10)]
        minutes: u64,
        /// Seconds between samples
        #[arg(long, default_value_t = 30)]
        every: u64,
        #[arg(long, default_value_t = 4)]
        workers: usize,
        #[arg(long, default_value_t = 8)]
        seed: u64,
        /// Token lifetime of the load's clients, in seconds
        #[arg(long, default_value_t = 60)]
        token_ttl: i64,
    },
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            std::process::exit(1)
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(true) => {}
        Ok(false) => std::process::exit(1),
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::exit(2)
        }
    }
}

/// Whether every promise held.
async fn run(cli: Cli) -> Result<bool> {
    let tessera = match cli.tessera {
        Some(p) => p,
        None => server::default_tessera_binary()?,
    };
    match cli.command {
        Cmd::Crash {
            kills,
            seed,
            workers,
            min_uptime_ms,
            max_uptime_ms,
            max_seconds,
            postgres,
        } => {
            if min_uptime_ms > max_uptime_ms {
                return Err(anyhow!("--min-uptime-ms must not exceed --max-uptime-ms"));
            }
            let report = crash::run(&crash::CrashOptions {
                tessera,
                postgres,
                kills,
                seed,
                workers,
                min_uptime_ms,
                max_uptime_ms,
                max_duration: Duration::from_secs(max_seconds),
            })
            .await?;
            print!("{}", report.table());
            Ok(report.violations.is_empty())
        }
        Cmd::Soak {
            minutes,
            every,
            workers,
            seed,
            token_ttl,
        } => {
            let report = soak::run(&soak::SoakOptions {
                tessera,
                duration: Duration::from_secs(minutes * 60),
                sample_every: Duration::from_secs(every.max(1)),
                workers,
                seed,
                token_ttl,
            })
            .await?;
            print!("{}", report.table());
            Ok(report.violations.is_empty())
        }
    }
}
