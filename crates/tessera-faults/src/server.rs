//! A real `tessera serve` child process on 127.0.0.1:0: its log is captured, and it is
//! killed with SIGKILL (a crash) or stopped with SIGTERM (a graceful shutdown).

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// The `tessera` binary to drive: `TESSERA_BIN`, else the one cargo built next to this
/// executable (target/<profile>/tessera, also from target/<profile>/deps/).
pub fn default_tessera_binary() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TESSERA_BIN") {
        return Ok(PathBuf::from(path));
    }
    let exe = std::env::current_exe().context("cannot locate the running executable")?;
    for dir in exe.ancestors().skip(1).take(3) {
        let candidate = dir.join("tessera");
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "cannot find the tessera binary next to {}: build it with `cargo build -p tessera-cli` \
         or name it with --tessera / TESSERA_BIN",
        exe.display()
    )
}

/// How to start the server and its admin commands on one store.
#[derive(Clone, Debug)]
pub struct Tessera {
    pub binary: PathBuf,
    /// `sqlite://…` or `postgres://…`.
    pub database: String,
    /// Extra environment (the master key on PostgreSQL).
    pub env: Vec<(String, String)>,
    /// Extra `serve` flags (e.g. `--config FILE`).
    pub serve_args: Vec<String>,
}

impl Tessera {
    pub fn command(&self) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--database").arg(&self.database);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs an admin command to completion; its standard output on success.
    pub fn admin(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot run {}", self.binary.display()))?;
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.unwrap_or("").as_bytes())?;
        }
        let out = child.wait_with_output()?;
        if !out.status.success() {
            bail!(
                "tessera {} failed: {}",
                args.first().copied().unwrap_or(""),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Starts `tessera serve` and waits until it logs the address it serves.
    pub async fn start(&self) -> Result<Server> {
        let mut child = self
            .command()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .args(&self.serve_args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", self.binary.display()))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow!("no stderr pipe"))?;
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (bound_tx, bound_rx) = mpsc::channel();
        {
            let logs = logs.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    if let Some(addr) = serving_address(&line) {
                        let _ = bound_tx.send(addr);
                    }
                    if let Ok(mut l) = logs.lock() {
                        l.push(line);
                    }
                }
            });
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            if let Ok(addr) = bound_rx.try_recv() {
                return Ok(Server { child, addr, logs });
            }
            if let Some(status) = child.try_wait()? {
                let logs = logs.lock().map(|l| l.join("\n")).unwrap_or_default();
                bail!("tessera serve exited at start ({status}):\n{logs}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tessera serve did not log its address within 120 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// `… tessera serving at http://127.0.0.1:PORT …` → the address.
fn serving_address(line: &str) -> Option<SocketAddr> {
    let rest = line.split("serving at http://").nth(1)?;
    rest.split_whitespace().next()?.parse().ok()
}

pub struct Server {
    child: Child,
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Server {
    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Every log line so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// Waits (at most `limit`) until some log line contains every one of `needles`: the
    /// server writes a line before it answers, but our reader of its output may lag behind
    /// on a busy machine. Returns every line so far, whether or not one matched.
    pub async fn wait_for_log(&self, needles: &[&str], limit: Duration) -> Vec<String> {
        let deadline = Instant::now() + limit;
        loop {
            let logs = self.logs();
            let found = logs
                .iter()
                .any(|line| needles.iter().all(|n| line.contains(n)));
            if found || Instant::now() >= deadline {
                return logs;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGKILL: the process dies at once, with no chance to flush or answer anything.
    pub fn kill(mut self) -> Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }

    /// Sends SIGTERM (the graceful shutdown request).
    pub fn terminate(&self) -> Result<()> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()?;
        if !status.success() {
            bail!("kill -TERM {} failed", self.child.id());
        }
        Ok(())
    }

    /// Waits for the process to exit by itself, at most `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> Result<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait()? {
                // Let the reader thread take the last lines.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return Ok(status);
            }
            if Instant::now() > deadline {
                bail!("tessera did not exit within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The SQLite file of a `sqlite://PATH` URL.
pub fn sqlite_path(database: &str) -> Option<&Path> {
    database.strip_prefix("sqlite://").map(Path::new)
}
