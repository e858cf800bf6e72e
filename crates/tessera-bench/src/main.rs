//! `tessera-bench`: closed-loop load against Tessera and its peers, side by side.
//!
//! Tessera is started from a binary on a fresh store and provisioned through its CLI; peers
//! (node-oidc-provider, the HTTP ceiling) are started by the shared harness's
//! `serve-peer.sh TARGET PORT`, whose JSON line is passed with `--peer`. Rounds interleave
//! the targets (A B A B …) so that a noisy neighbour hurts all of them alike; the summary
//! gives medians over rounds and Tessera's ratio to each peer from the same run.

mod http;
mod report;
mod scenario;
mod target;

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::Parser;

use report::Results;
use scenario::Scenario;
use target::{start_tessera, Target, TesseraLaunch};

#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// A built `tessera` binary to start and measure (fresh SQLite store under --work-dir),
    /// optionally labelled: `LABEL=PATH`. Repeatable (e.g. before/after a change, same run);
    /// ratios are those of the first.
    #[arg(long)]
    tessera: Vec<String>,
    /// Port for the first Tessera on 127.0.0.1 (the next ones use the following ports).
    #[arg(long, default_value_t = 3300)]
    tessera_port: u16,
    /// An extra argument for `tessera serve` (repeatable), e.g. `--tessera-arg=--config=bench.toml`.
    #[arg(long = "tessera-arg", allow_hyphen_values = true)]
    tessera_args: Vec<String>,
    /// A peer: the JSON line printed by `serve-peer.sh TARGET PORT`, or @FILE holding it
    /// (repeatable).
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// The shared harness folder (for node-oidc-provider's refresh-token helper).
    #[arg(long, default_value = "/work/shared/bench")]
    peer_tools: PathBuf,
    /// Comma-separated scenarios [default: all that each target supports].
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<Scenario>,
    /// Concurrent connections (closed loop: each sends its next request when answered).
    #[arg(short = 'c', long, default_value_t = 32)]
    connections: usize,
    /// Measured seconds per scenario, target and round.
    #[arg(long, default_value_t = 10)]
    duration: u64,
    /// Unmeasured seconds before each measurement.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Where Tessera's store lives; keep it on a real disk (fsync must cost what it costs).
    #[arg(long, default_value = "bench-data")]
    work_dir: PathBuf,
    /// Run Tessera on this PostgreSQL database instead of SQLite (each start gets a fresh
    /// schema). Needs `TESSERA_MASTER_KEY` in the environment, as every PostgreSQL node does.
    #[arg(long)]
    postgres: Option<String>,
    /// Also write every measurement as JSON lines here.
    #[arg(long)]
    json: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let mut targets = Vec::new();
    for spec in &args.peers {
        targets.push(Target::peer(spec, &args.peer_tools).await?);
    }
    for (i, spec) in args.tessera.iter().enumerate() {
        let (label, bin) = match spec.split_once('=') {
            Some((label, bin)) => (label.to_owned(), bin),
            None if i == 0 => ("tessera".to_owned(), spec.as_str()),
            None => (format!("tessera-{}", i + 1), spec.as_str()),
        };
        // Tessera runs inside its data folder, so the path must not be relative.
        let bin = &std::fs::canonicalize(bin).map_err(|e| anyhow::anyhow!("{bin}: {e}"))?;
        let port = args.tessera_port + u16::try_from(i)?;
        eprintln!("starting {label} ({}) on 127.0.0.1:{port}", bin.display());
        let t = start_tessera(TesseraLaunch {
            bin,
            work_dir: &args.work_dir,
            port,
            extra_args: &args.tessera_args,
            label,
            postgres: args.postgres.as_deref(),
        })
        .await?;
        targets.insert(i, t);
    }
    if targets.is_empty() {
        bail!("nothing to measure: give --tessera and/or --peer");
    }
    let outcome = measure(&args, &targets).await;
    let mut peaks = Vec::new();
    for t in &mut targets {
        peaks.push((t.label.clone(), t.peak_rss_mib(), t.ready_ms));
        t.stop().await;
    }
    let results = outcome?;
    let subject = targets
        .iter()
        .find(|t| t.is_tessera())
        .map(|t| t.label.clone());
    println!("\n{}", results.table(subject.as_deref()));
    println!("| target | peak RSS over the whole run (MiB) | ready after start on an existing store (ms) |");
    println!("|---|---:|---:|");
    for (label, rss, ready) in peaks {
        let show =
            |x: Option<f64>, digits: usize| x.map_or("–".to_owned(), |v| format!("{v:.digits$}"));
        println!("| {label} | {} | {} |", show(rss, 1), show(ready, 0));
    }
    println!(
        "\n{} connections, {} s measured after {} s warm-up, {} round(s), targets interleaved.",
        args.connections, args.duration, args.warmup, args.rounds
    );
    Ok(())
}

async fn measure(args: &Args, targets: &[Target]) -> Result<Results> {
    let scenarios: Vec<Scenario> = if args.scenarios.is_empty() {
        scenario::ALL.to_vec()
    } else {
        args.scenarios.clone()
    };
    let mut json = match &args.json {
        Some(p) => Some(std::fs::File::create(p)?),
        None => None,
    };
    let mut results = Results::default();
    for round in 1..=args.rounds {
        for &s in &scenarios {
            for t in targets.iter().filter(|t| s.runs_on(t)) {
                let m = match scenario::run(
                    t,
                    s,
                    args.connections,
                    Duration::from_secs(args.warmup),
                    Duration::from_secs(args.duration),
                )
                .await
                {
                    Ok(m) => m,
                    Err(e) => {
                        eprintln!("round {round} {s} {}: FAILED: {e:#}", t.label);
                        continue;
                    }
                };
                eprintln!(
                    "round {round} {s:<13} {:<16} {:>9.0}/s p50 {:>7.2} ms p99 {:>7.2} ms cpu {:>6} µs/op errors {}{}",
                    t.label,
                    m.per_second(),
                    m.quantile_ms(0.5),
                    m.quantile_ms(0.99),
                    m.server_cpu_us_per_op
                        .map_or("–".to_owned(), |c| format!("{c:.1}")),
                    m.errors,
                    if m.error_samples.is_empty() {
                        String::new()
                    } else {
                        format!(" e.g. {:?}", m.error_samples)
                    }
                );
                if let Some(f) = json.as_mut() {
                    let line = serde_json::json!({
                        "round": round, "scenario": s.name(), "target": t.label,
                        "ok": m.ok, "errors": m.errors, "seconds": m.seconds,
                        "per_second": m.per_second(),
                        "p50_ms": m.quantile_ms(0.5), "p99_ms": m.quantile_ms(0.99),
                        "max_ms": m.latency.max() as f64 / 1000.0,
                        "peak_rss_mib": m.peak_rss_mib,
                        "server_cpu_us_per_op": m.server_cpu_us_per_op,
                    });
                    writeln!(f, "{line}")?;
                }
                results.add(s, &t.label, m);
            }
        }
    }
    Ok(results)
}
