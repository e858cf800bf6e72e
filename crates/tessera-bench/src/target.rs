//! What load is sent to: Tessera started from a binary and provisioned through its CLI, or
//! a peer started by `serve-peer.sh` and described by the JSON line it prints.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hyper::header::HeaderValue;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use url::Url;

use crate::http::{basic_auth, loopback, request_target, Conn};

pub const REDIRECT_URI: &str = "http://127.0.0.1:9/cb";

/// A registered confidential client.
#[derive(Clone)]
pub struct ClientCreds {
    pub id: String,
    pub basic: HeaderValue,
}

impl ClientCreds {
    fn new(id: &str, secret: &str) -> Result<ClientCreds> {
        Ok(ClientCreds {
            id: id.to_owned(),
            basic: basic_auth(id, secret)?,
        })
    }
}

pub struct Target {
    pub label: String,
    pub origin: Url,
    pub token: String,
    pub introspection: Option<String>,
    pub authorize: Option<String>,
    pub discovery: String,
    pub jwks: Option<String>,
    /// The scope sent with client_credentials (the peers' configuration knows `api:read`).
    pub cc_scope: Option<String>,
    /// Opaque access tokens; its refresh/ID tokens are ES256 on Tessera.
    pub client: ClientCreds,
    pub jwt_es256: Option<ClientCreds>,
    pub jwt_eddsa: Option<ClientCreds>,
    /// A client that shows the consent page (remembered after the first Allow).
    pub flow_client: Option<ClientCreds>,
    pub user: Option<(String, String)>,
    pub pid: Option<u32>,
    pub ready_ms: Option<f64>,
    pub peer_tools: Option<PathBuf>,
    child: Option<Child>,
}

/// The line `serve-peer.sh TARGET PORT` prints.
#[derive(Deserialize)]
struct PeerLine {
    target: String,
    discovery_endpoint: String,
    client_id: String,
    client_secret: String,
    pid: Option<u32>,
    #[serde(default)]
    scope: String,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    token_endpoint: String,
    introspection_endpoint: Option<String>,
    authorization_endpoint: Option<String>,
    jwks_uri: Option<String>,
}

/// Endpoints advertised by the discovery document, each required to be on `origin`.
async fn discover(origin: &Url, discovery: &str) -> Result<Discovery> {
    let mut conn = Conn::new(origin)?;
    let reply = conn.get(discovery).await?;
    if !reply.status.is_success() {
        bail!("discovery answered {}", reply.status);
    }
    let doc: Discovery = serde_json::from_slice(&reply.body).context("discovery document")?;
    for url in [
        Some(&doc.token_endpoint),
        doc.introspection_endpoint.as_ref(),
    ]
    .into_iter()
    .flatten()
    {
        let u = loopback(url)?;
        if u.origin() != origin.origin() {
            bail!("discovery advertises {url}, not on {origin}: refusing to send load there");
        }
    }
    Ok(doc)
}

fn path_of(url: &str) -> Result<String> {
    Ok(request_target(&loopback(url)?))
}

impl Target {
    async fn from_discovery(
        label: String,
        origin: Url,
        discovery: String,
        client: ClientCreds,
    ) -> Result<Target> {
        let doc = discover(&origin, &discovery).await?;
        loopback(&doc.issuer)?;
        Ok(Target {
            label,
            token: path_of(&doc.token_endpoint)?,
            introspection: doc
                .introspection_endpoint
                .as_deref()
                .map(path_of)
                .transpose()?,
            authorize: doc
                .authorization_endpoint
                .as_deref()
                .map(path_of)
                .transpose()?,
            jwks: doc.jwks_uri.as_deref().map(path_of).transpose()?,
            discovery,
            origin,
            cc_scope: None,
            client,
            jwt_es256: None,
            jwt_eddsa: None,
            flow_client: None,
            user: None,
            pid: None,
            ready_ms: None,
            peer_tools: None,
            child: None,
        })
    }

    /// A peer from the JSON line of `serve-peer.sh` (or `@FILE` holding it).
    pub async fn peer(spec: &str, peer_tools: &Path) -> Result<Target> {
        let text = match spec.strip_prefix('@') {
            Some(file) => {
                std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?
            }
            None => spec.to_owned(),
        };
        let line: PeerLine = serde_json::from_str(text.trim()).context("peer JSON line")?;
        let discovery = loopback(&line.discovery_endpoint)?;
        let origin = Url::parse(&discovery.origin().ascii_serialization())?;
        let client = ClientCreds::new(&line.client_id, &line.client_secret)?;
        let mut t =
            Target::from_discovery(line.target, origin, request_target(&discovery), client).await?;
        t.cc_scope = Some(line.scope).filter(|s| !s.is_empty());
        t.pid = line.pid;
        t.peer_tools = Some(peer_tools.to_owned());
        Ok(t)
    }

    pub fn is_tessera(&self) -> bool {
        self.child.is_some()
    }

    /// Peak resident memory of the server process so far (VmHWM), in MiB.
    pub fn peak_rss_mib(&self) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid?)).ok()?;
        let kib: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kib / 1024.0)
    }

    /// Starts a new peak-RSS window (`/proc/PID/clear_refs`, "5"), so that each scenario
    /// reports its own peak rather than the process's lifetime peak.
    pub fn reset_peak_rss(&self) {
        if let Some(pid) = self.pid {
            let _ = std::fs::write(format!("/proc/{pid}/clear_refs"), "5");
        }
    }

    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            terminate(&mut child).await;
        }
    }
}

/// CPU time process `pid` has used so far (`/proc/PID/stat`), in seconds.
pub fn cpu_seconds_of(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The kernel reports these in USER_HZ, which is 100 on every Linux architecture.
    cpu_ticks_from_stat(&stat).map(|ticks| ticks as f64 / 100.0)
}

/// utime + stime (fields 14 and 15) of a `/proc/PID/stat` line. The command name (field
/// 2) may itself hold spaces and parentheses, so fields are counted from its last `)`.
fn cpu_ticks_from_stat(stat: &str) -> Option<u64> {
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// SIGTERM (graceful), then SIGKILL if the process is still there after 5 s.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = Command::new("kill").arg(pid.to_string()).status().await;
        if tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .is_ok()
        {
            return;
        }
    }
    let _ = child.kill().await;
}

/// How Tessera is started: a fresh store under `work_dir` (a real disk, so that fsync costs
/// what it costs; not a tmpfs), listening on `port`.
pub struct TesseraLaunch<'a> {
    pub bin: &'a Path,
    pub work_dir: &'a Path,
    pub port: u16,
    pub extra_args: &'a [String],
    pub label: String,
    /// A PostgreSQL URL instead of the fresh SQLite store (a fresh `schema=` is added).
    pub postgres: Option<&'a str>,
}

/// The one setting changed from the defaults: every simulated browser of the code-flow
/// scenario comes from 127.0.0.1, which the per-address authorize limit (1200/min) is
/// meant to stop. Token-endpoint limits stay as they are (they charge failures only).
const BENCH_CONFIG: &str =
    "[rate_limits]\nauthorize_requests = { burst = 1000000, per_minute = 6000000 }\n";

fn spawn_serve(l: &TesseraLaunch<'_>, data: &Path, db: &str) -> Result<Child> {
    let origin = format!("http://127.0.0.1:{}", l.port);
    let log = std::fs::File::create(data.join("server.log"))?;
    let config = data.join("bench.toml");
    std::fs::write(&config, BENCH_CONFIG)?;
    Command::new(l.bin)
        .current_dir(data)
        .env_remove("RUST_LOG")
        .env_remove("TESSERA_DATABASE_URL")
        .args(["serve", "--listen", &format!("127.0.0.1:{}", l.port)])
        .args(["--issuer", &origin, "--database", db])
        .arg("--config")
        .arg(&config)
        .args(l.extra_args)
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", l.bin.display()))
}

/// Polls discovery until it answers 200; the time from spawn to that answer.
async fn wait_ready(origin: &Url, child: &mut Child, started: Instant) -> Result<f64> {
    let deadline = started + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait()? {
            bail!("tessera exited before it was ready ({status})");
        }
        if let Ok(mut conn) = Conn::new(origin) {
            if let Ok(r) = conn.get("/.well-known/openid-configuration").await {
                if r.status.is_success() {
                    return Ok(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    bail!("tessera was not ready after 30 s")
}

async fn cli(
    bin: &Path,
    data: &Path,
    db: &str,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String> {
    let mut child = Command::new(bin)
        .current_dir(data)
        .env_remove("RUST_LOG")
        .env_remove("TESSERA_DATABASE_URL")
        .args(args)
        .args(["--database", db])
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes()).await?;
    }
    let out = child.wait_with_output().await?;
    if !out.status.success() {
        bail!(
            "tessera {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn create_client(
    bin: &Path,
    data: &Path,
    db: &str,
    name: &str,
    extra: &[&str],
) -> Result<ClientCreds> {
    let mut args = vec![
        "client",
        "create",
        "--name",
        name,
        "--redirect-uri",
        REDIRECT_URI,
        "--grant-types",
        "client_credentials,authorization_code,refresh_token",
        "--scopes",
        "openid offline_access",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = cli(bin, data, db, &args, None).await?;
    let v: serde_json::Value = serde_json::from_str(out.trim()).context("client create --json")?;
    let field = |k: &str| {
        v.get(k)
            .and_then(|x| x.as_str())
            .ok_or_else(|| anyhow!("client create printed no {k}"))
    };
    ClientCreds::new(field("client_id")?, field("client_secret")?)
}

/// Starts Tessera on a fresh store, provisions it through the CLI as the contract
/// describes, then restarts it to measure readiness on an existing store.
pub async fn start_tessera(l: TesseraLaunch<'_>) -> Result<Target> {
    std::fs::create_dir_all(l.work_dir)?;
    let data =
        std::fs::canonicalize(l.work_dir)?.join(format!("{}-{}", l.label, std::process::id()));
    if data.exists() {
        std::fs::remove_dir_all(&data)?;
    }
    std::fs::create_dir_all(&data)?;
    let db = match l.postgres {
        // A fresh schema per start, so every run begins on an empty store.
        Some(url) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            let schema = format!("bench_{}_{}", l.label.replace('-', "_"), std::process::id());
            format!("{url}{sep}schema={schema}")
        }
        None => format!("sqlite://{}/tessera.db", data.display()),
    };
    let origin = Url::parse(&format!("http://127.0.0.1:{}", l.port))?;

    let mut child = spawn_serve(&l, &data, &db)?;
    wait_ready(&origin, &mut child, Instant::now()).await?;
    let password = crate::scenario::random_b64(18)?;
    cli(
        l.bin,
        &data,
        &db,
        &["user", "create", "--username", "bench", "--password-stdin"],
        Some(&format!("{password}\n")),
    )
    .await?;
    // ES256 rather than the RS256 default: ID tokens on refresh and code exchange are
    // signed with it (RS256 signing alone would cap a 2-core machine near 2k/s).
    let es256 = ["--id-token-alg", "ES256"];
    let client = create_client(
        l.bin,
        &data,
        &db,
        "bench",
        &[&es256[..], &["--skip-consent"]].concat(),
    )
    .await?;
    let jwt_es256 = create_client(
        l.bin,
        &data,
        &db,
        "bench-jwt-es256",
        &[
            "--skip-consent",
            "--access-token-format",
            "jwt",
            "--id-token-alg",
            "ES256",
        ],
    )
    .await?;
    let jwt_eddsa = create_client(
        l.bin,
        &data,
        &db,
        "bench-jwt-eddsa",
        &[
            "--skip-consent",
            "--access-token-format",
            "jwt",
            "--id-token-alg",
            "EdDSA",
        ],
    )
    .await?;
    let flow_client = create_client(l.bin, &data, &db, "bench-flow", &es256).await?;

    // Readiness on an existing store: stop, start again, time until discovery answers.
    terminate(&mut child).await;
    let started = Instant::now();
    let mut child = spawn_serve(&l, &data, &db)?;
    let ready_ms = wait_ready(&origin, &mut child, started).await?;

    let mut t = Target::from_discovery(
        l.label,
        origin,
        "/.well-known/openid-configuration".to_owned(),
        client,
    )
    .await?;
    t.jwt_es256 = Some(jwt_es256);
    t.jwt_eddsa = Some(jwt_eddsa);
    t.flow_client = Some(flow_client);
    t.user = Some(("bench".to_owned(), password));
    t.pid = child.id();
    t.ready_ms = Some(ready_ms);
    t.child = Some(child);
    Ok(t)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn cpu_ticks_are_user_plus_system_counted_past_the_command_name() {
        // A real line's shape; the command name holds a space and a parenthesis.
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 1234 0 0 0 \
                    731 269 0 0 20 0 5 0 12345 100000 2000 18446744073709551615";
        assert_eq!(cpu_ticks_from_stat(stat), Some(1000));
        assert_eq!(cpu_ticks_from_stat("4242 (x) S 1 2"), None);
        assert_eq!(cpu_ticks_from_stat("no name here"), None);
    }

    #[test]
    fn this_process_has_used_some_cpu_and_the_count_only_grows() {
        let me = std::process::id();
        let before = cpu_seconds_of(me).expect("own /proc/PID/stat");
        let mut x = 0u64;
        let t = std::time::Instant::now();
        while t.elapsed() < std::time::Duration::from_millis(60) {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let after = cpu_seconds_of(me).unwrap();
        assert!(after >= before + 0.03, "{before} → {after}");
        assert!(cpu_seconds_of(u32::MAX).is_none());
    }
}
