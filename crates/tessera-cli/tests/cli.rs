#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The `tessera` binary as users and their scripts run it (contract §1).

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use serde_json::Value;
use tessera_testkit::{postgres_url_or_local, wait_until_serving, PgSchema};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");

fn db_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("tessera.db").display())
}

/// Runs `tessera --database <dir> args…` with `stdin`.
fn run(dir: &Path, args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(BIN)
        .arg("--database")
        .arg(db_url(dir))
        .args(args)
        .env_remove("TESSERA_DATABASE_URL")
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn tessera");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().expect("wait")
}

fn ok_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "command failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("JSON output")
}

fn first_error_line(out: &Output) -> String {
    assert!(!out.status.success(), "expected failure, got success");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

#[test]
fn tenant_and_user_creation() {
    let dir = tempfile::tempdir().unwrap();
    let t = ok_json(&run(
        dir.path(),
        &["tenant", "create", "acme", "--json"],
        "",
    ));
    assert_eq!(t["id"], "acme");
    let err = first_error_line(&run(dir.path(), &["tenant", "create", "acme"], ""));
    assert!(err.contains("already exists"), "{err}");
    let err = first_error_line(&run(dir.path(), &["tenant", "create", "Bad Name"], ""));
    assert!(err.contains("invalid tenant name"), "{err}");

    let u = ok_json(&run(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "alice",
            "--tenant",
            "acme",
            "--email",
            "alice@acme.example",
            "--name",
            "Alice",
            "--password-stdin",
            "--json",
        ],
        "pass phrase with spaces\n",
    ));
    assert_eq!(u["username"], "alice");
    assert_eq!(u["tenant"], "acme");
    assert_eq!(u["email"], "alice@acme.example");
    assert!(u.get("password").is_none() && u.get("password_hash").is_none());

    let err = first_error_line(&run(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "alice",
            "--tenant",
            "acme",
            "--password-stdin",
        ],
        "another password\n",
    ));
    assert!(err.contains("already exists"), "{err}");
    let err = first_error_line(&run(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "bob",
            "--tenant",
            "nope",
            "--password-stdin",
        ],
        "long enough pw\n",
    ));
    assert!(
        err.contains("tenant") && err.contains("does not exist"),
        "{err}"
    );
    let err = first_error_line(&run(
        dir.path(),
        &["user", "create", "--username", "bob", "--password-stdin"],
        "short\n",
    ));
    assert!(err.contains("at least 8"), "{err}");
    let err = first_error_line(&run(
        dir.path(),
        &[
            "user",
            "create",
            "--username",
            "bob",
            "--email",
            "not-an-email",
            "--password-stdin",
        ],
        "long enough pw\n",
    ));
    assert!(err.contains("email"), "{err}");
    // Without --password-stdin the command refuses to run.
    let out = run(dir.path(), &["user", "create", "--username", "bob"], "");
    assert!(!out.status.success());
}

#[test]
fn client_create_with_every_option_and_management() {
    let dir = tempfile::tempdir().unwrap();
    ok_json(&run(
        dir.path(),
        &["tenant", "create", "acme", "--json"],
        "",
    ));
    let c = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "Full",
            "--redirect-uri",
            "https://app.example.com/cb",
            "--redirect-uri",
            "http://127.0.0.1:7000/cb",
            "--grant-types",
            "authorization_code,refresh_token,client_credentials",
            "--auth-method",
            "client_secret_basic",
            "--scopes",
            "openid profile email offline_access api:read",
            "--audience",
            "https://api.example.com",
            "--refresh-tokens",
            "offline-access",
            "--access-token-format",
            "opaque",
            "--access-token-ttl",
            "86400",
            "--refresh-token-ttl",
            "31536000",
            "--require-pkce",
            "--skip-consent",
            "--tenant",
            "acme",
            "--json",
        ],
        "",
    ));
    let id = c["client_id"].as_str().unwrap().to_owned();
    let secret = c["client_secret"].as_str().unwrap().to_owned();
    assert!(secret.len() >= 43);
    assert_eq!(c["redirect_uris"].as_array().unwrap().len(), 2);
    assert_eq!(c["grant_types"].as_array().unwrap().len(), 3);
    assert_eq!(
        c["token_endpoint_auth_methods"],
        serde_json::json!(["client_secret_basic"])
    );
    assert_eq!(c["refresh_tokens"], "offline-access");
    assert_eq!(c["access_token_ttl"], 86400);
    assert_eq!(c["refresh_token_ttl"], 31536000);
    assert_eq!(c["require_pkce"], true);
    assert_eq!(c["skip_consent"], true);
    assert_eq!(c["tenant"], "acme");
    assert_eq!(
        c["audiences"],
        serde_json::json!(["https://api.example.com"])
    );

    let public = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "SPA",
            "--public",
            "--redirect-uri",
            "https://spa.example.com/cb",
            "--json",
        ],
        "",
    ));
    assert!(public["client_secret"].is_null());
    assert_eq!(
        public["token_endpoint_auth_methods"],
        serde_json::json!(["none"])
    );

    let list = ok_json(&run(dir.path(), &["client", "list", "--json"], ""));
    assert_eq!(list.as_array().unwrap().len(), 2);
    let listed =
        String::from_utf8_lossy(&run(dir.path(), &["client", "list", "--json"], "").stdout)
            .to_string();
    assert!(
        !listed.contains(&secret),
        "the secret is shown only at creation"
    );

    let shown = ok_json(&run(dir.path(), &["client", "show", &id, "--json"], ""));
    assert_eq!(shown["name"], "Full");
    assert!(shown.get("client_secret").is_none());

    let rotated = ok_json(&run(
        dir.path(),
        &["client", "rotate-secret", &id, "--json"],
        "",
    ));
    assert_ne!(rotated["client_secret"].as_str().unwrap(), secret);
    let err = first_error_line(&run(
        dir.path(),
        &[
            "client",
            "rotate-secret",
            public["client_id"].as_str().unwrap(),
        ],
        "",
    ));
    assert!(err.contains("public"), "{err}");

    assert!(run(dir.path(), &["client", "delete", &id], "")
        .status
        .success());
    let err = first_error_line(&run(dir.path(), &["client", "show", &id], ""));
    assert!(err.contains("no client"), "{err}");
    let err = first_error_line(&run(dir.path(), &["client", "delete", &id], ""));
    assert!(err.contains("no client"), "{err}");
}

#[test]
fn bad_client_input_is_refused_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["--name", "A", "--redirect-uri", "not a uri"],
            "not an absolute URI",
        ),
        (
            &["--name", "A", "--redirect-uri", "https://a.example/cb#frag"],
            "fragment",
        ),
        (
            &["--name", "A", "--redirect-uri", "http://a.example/cb"],
            "https",
        ),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--grant-types",
                "password",
            ],
            "unknown grant type",
        ),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--auth-method",
                "private_key_jwt",
            ],
            "unknown auth method",
        ),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--refresh-tokens",
                "never",
            ],
            "refresh-token policy",
        ),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--access-token-ttl",
                "5",
            ],
            "between 60",
        ),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--access-token-ttl",
                "31536001",
            ],
            "between 60",
        ),
        (
            &[
                "--name",
                "A",
                "--public",
                "--grant-types",
                "client_credentials",
            ],
            "public client",
        ),
        (&["--name", "A"], "--redirect-uri is required"),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--scopes",
                "bad\"scope",
            ],
            "invalid --scopes",
        ),
        (
            &[
                "--name",
                "A",
                "--redirect-uri",
                "https://a.example/cb",
                "--tenant",
                "missing",
            ],
            "does not exist",
        ),
    ];
    for (args, expected) in cases {
        let mut full = vec!["client", "create"];
        full.extend_from_slice(args);
        let err = first_error_line(&run(dir.path(), &full, ""));
        assert!(
            err.starts_with("error:") && err.contains(expected),
            "{args:?}: {err}"
        );
    }
    // Unknown flags are usage errors.
    let out = run(
        dir.path(),
        &["client", "create", "--name", "A", "--frobnicate"],
        "",
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--frobnicate"));

    ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "Dup",
            "--redirect-uri",
            "https://a.example/cb",
            "--json",
        ],
        "",
    ));
    let err = first_error_line(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "Dup",
            "--redirect-uri",
            "https://a.example/cb",
        ],
        "",
    ));
    assert!(err.contains("already exists"), "{err}");
    // Only the one good client exists.
    let list = ok_json(&run(dir.path(), &["client", "list", "--json"], ""));
    assert_eq!(list.as_array().unwrap().len(), 1);
}

/// Runs `tessera --database <url> args…` in `dir` with no master key in the environment.
fn run_pg(dir: &Path, url: &str, args: &[&str], envs: &[(&str, &str)]) -> Output {
    Command::new(BIN)
        .arg("--database")
        .arg(url)
        .args(args)
        .env_remove("TESSERA_DATABASE_URL")
        .env_remove("TESSERA_MASTER_KEY")
        .env_remove("TESSERA_MASTER_KEY_FILE")
        .envs(envs.iter().copied())
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("run tessera")
}

#[test]
fn admin_commands_work_on_postgres() {
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::new("cli");
    let url = schema.url(&postgres_url_or_local());
    let t = ok_json(&run_pg(
        dir.path(),
        &url,
        &["tenant", "create", "acme", "--json"],
        &[],
    ));
    assert_eq!(t["id"], "acme");
    let c = ok_json(&run_pg(
        dir.path(),
        &url,
        &[
            "client",
            "create",
            "--name",
            "On Postgres",
            "--redirect-uri",
            "https://app.example.com/cb",
            "--tenant",
            "acme",
            "--json",
        ],
        &[],
    ));
    let id = c["client_id"].as_str().unwrap().to_owned();
    assert!(c["client_secret"].as_str().unwrap().len() >= 43);
    let list = ok_json(&run_pg(
        dir.path(),
        &url,
        &["client", "list", "--json"],
        &[],
    ));
    let list = list.as_array().unwrap();
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["client_id"], id.as_str());
    assert_eq!(list[0]["name"], "On Postgres");
    assert_eq!(list[0]["tenant"], "acme");
    let tenants = ok_json(&run_pg(
        dir.path(),
        &url,
        &["tenant", "list", "--json"],
        &[],
    ));
    let ids: Vec<&str> = tenants
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["id"].as_str())
        .collect();
    assert_eq!(ids, ["acme", "default"]);
    // Nothing was written next to the working directory: the store is the database.
    assert!(!dir.path().join("tessera-data").exists());

    // Signing keys need the master key every node shares; it is never generated here.
    let out = run_pg(dir.path(), &url, &["keys", "list", "--json"], &[]);
    let err = first_error_line(&out);
    assert!(
        err.contains("TESSERA_MASTER_KEY") && err.contains("master_key_file"),
        "{err}"
    );
    assert!(!dir.path().join("tessera-data").exists());
    let key = [(
        "TESSERA_MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )];
    let keys = ok_json(&run_pg(dir.path(), &url, &["keys", "list", "--json"], &key));
    assert!(!keys.as_array().unwrap().is_empty(), "{keys}");
}

#[test]
fn unreachable_postgres_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_pg(
        dir.path(),
        "postgres://postgres@127.0.0.1:1/test",
        &["client", "list"],
        &[],
    );
    let err = first_error_line(&out);
    assert!(err.contains("PostgreSQL"), "{err}");
}

/// A running `tessera serve`, killed on drop.
struct Server {
    child: Child,
    base: String,
    stderr_lines: std::sync::mpsc::Receiver<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[allow(clippy::zombie_processes)] // the returned Server waits for the child on drop
fn serve(dir: &Path, args: &[&str], envs: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args([
        "--database",
        &db_url(dir),
        "serve",
        "--listen",
        "127.0.0.1:0",
    ])
    .args(args)
    .env_remove("TESSERA_DATABASE_URL")
    .env_remove("TESSERA_ISSUER")
    .env("RUST_LOG", "trace")
    .current_dir(dir)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let (base, stderr_lines) = wait_until_serving(&mut child);
    Server {
        child,
        base,
        stderr_lines,
    }
}

impl Server {
    fn logs_so_far(&self) -> String {
        let mut out = String::new();
        while let Ok(line) = self.stderr_lines.try_recv() {
            out.push_str(&line);
            out.push('\n');
        }
        out
    }
}

#[tokio::test]
async fn serve_with_admin_commands_on_the_same_store_and_clean_logs() {
    let dir = tempfile::tempdir().unwrap();
    let server = serve(dir.path(), &[], &[]);
    let http = reqwest::Client::new();
    let disco: Value = http
        .get(format!("{}/.well-known/openid-configuration", server.base))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(disco["issuer"], server.base);
    assert!(dir.path().join("master.key").exists());
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(dir.path().join("master.key"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o777, 0o600);

    // An admin command while the server runs on the same store.
    let c = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--grant-types",
            "client_credentials",
            "--json",
        ],
        "",
    ));
    let (id, secret) = (
        c["client_id"].as_str().unwrap(),
        c["client_secret"].as_str().unwrap(),
    );
    let tok: Value = http
        .post(format!("{}/oauth2/token", server.base))
        .basic_auth(id, Some(secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tok["access_token"].as_str().expect("token").to_owned();
    assert!(tok.get("refresh_token").is_none());
    let intro: Value = http
        .post(format!("{}/oauth2/introspect", server.base))
        .basic_auth(id, Some(secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(intro["active"], true);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let logs = server.logs_so_far();
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the most verbose level is on"
    );
    for secret_value in [secret, access.as_str()] {
        assert!(!logs.contains(secret_value), "a secret reached the log");
    }
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_data_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &[], &[]);
    let c = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "svc",
            "--grant-types",
            "client_credentials",
            "--json",
        ],
        "",
    ));
    let (id, secret) = (
        c["client_id"].as_str().unwrap().to_owned(),
        c["client_secret"].as_str().unwrap().to_owned(),
    );
    let http = reqwest::Client::new();
    let tok: Value = http
        .post(format!("{}/oauth/token", server.base))
        .basic_auth(&id, Some(&secret))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let access = tok["access_token"].as_str().unwrap().to_owned();
    Command::new("kill")
        .args(["-TERM", &server.child.id().to_string()])
        .status()
        .unwrap();
    let status = server.child.wait().unwrap();
    assert!(status.success(), "SIGTERM exits 0, got {status}");

    let server = serve(dir.path(), &[], &[]);
    let intro: Value = http
        .post(format!("{}/oauth2/introspect", server.base))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", access.as_str())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        intro["active"], true,
        "a token acknowledged before the restart is still valid"
    );
}

#[tokio::test]
async fn configuration_layers_file_then_env_then_flags() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("tessera.toml");
    std::fs::write(
        &cfg,
        "issuer = \"https://from-file.example\"\ncode_ttl = 120\n",
    )
    .unwrap();
    let cfg = cfg.to_str().unwrap();
    let issuer = |server: &Server| {
        let base = server.base.clone();
        async move {
            let d: Value = reqwest::get(format!("{base}/.well-known/oauth-authorization-server"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            d["issuer"].as_str().unwrap().to_owned()
        }
    };
    let s = serve(dir.path(), &["--config", cfg], &[]);
    assert_eq!(issuer(&s).await, "https://from-file.example");
    drop(s);
    let s = serve(
        dir.path(),
        &["--config", cfg],
        &[("TESSERA_ISSUER", "https://from-env.example")],
    );
    assert_eq!(issuer(&s).await, "https://from-env.example");
    drop(s);
    let s = serve(
        dir.path(),
        &["--config", cfg, "--issuer", "https://from-flag.example"],
        &[("TESSERA_ISSUER", "https://from-env.example")],
    );
    assert_eq!(issuer(&s).await, "https://from-flag.example");
    drop(s);

    std::fs::write(dir.path().join("bad.toml"), "no_such_setting = 1\n").unwrap();
    let out = Command::new(BIN)
        .args([
            "--database",
            &db_url(dir.path()),
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--config",
        ])
        .arg(dir.path().join("bad.toml"))
        .output()
        .unwrap();
    let err = first_error_line(&out);
    assert!(err.contains("no_such_setting"), "{err}");
}

#[tokio::test]
async fn demo_mode_prints_working_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = serve(dir.path(), &["--demo"], &[]);
    let mut stdout = String::new();
    let mut reader = BufReader::new(server.child.stdout.take().unwrap());
    let mut line = String::new();
    while reader.read_line(&mut line).unwrap() > 0 {
        stdout.push_str(&line);
        if line.contains("curl") {
            break;
        }
        line.clear();
    }
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("{name} missing in:\n{stdout}"))
    };
    let id = field("client_id:");
    let secret = field("client_secret:");
    assert!(stdout.contains("/oauth2/authorize?response_type=code"));
    let user_line = field("user:");
    assert!(user_line.starts_with("demo / password "));
    // The printed secret authenticates the printed client.
    let resp = reqwest::Client::new()
        .post(format!("{}/oauth2/introspect", server.base))
        .basic_auth(&id, Some(&secret))
        .form(&[("token", "tat_unknown")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[test]
fn keys_list_and_rotate() {
    let dir = tempfile::tempdir().unwrap();
    let keys = ok_json(&run(dir.path(), &["keys", "list", "--json"], ""));
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 3, "one key per algorithm on first use");
    let mut algs: Vec<&str> = keys.iter().map(|k| k["alg"].as_str().unwrap()).collect();
    algs.sort();
    assert_eq!(algs, ["ES256", "EdDSA", "RS256"]);
    assert!(keys.iter().all(|k| k["state"] == "active"));

    let rotated = ok_json(&run(
        dir.path(),
        &["keys", "rotate", "--delay", "300", "--json"],
        "",
    ));
    assert_eq!(rotated.as_array().unwrap().len(), 3);
    let after = ok_json(&run(dir.path(), &["keys", "list", "--json"], ""));
    let state_of = |kid: &str| {
        after
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap()["state"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    for new in rotated.as_array().unwrap() {
        assert_eq!(
            state_of(new["kid"].as_str().unwrap()),
            "pending",
            "published before it signs"
        );
    }
    for old in keys {
        let kid = old["kid"].as_str().unwrap();
        assert_eq!(
            state_of(kid),
            "active",
            "the old key signs until the new one activates"
        );
        let rec = after
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["kid"] == kid)
            .unwrap();
        assert!(
            rec["publish_until"].as_i64().unwrap() >= rec["retires_at"].as_i64().unwrap() + 3600
        );
    }
    // The master key file seals them: without it nothing opens.
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let out = Command::new(BIN)
        .args(["--database", &db_url(dir.path()), "keys", "list"])
        .env(
            "TESSERA_MASTER_KEY",
            "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )
        .current_dir(dir.path())
        .output()
        .unwrap();
    let err = first_error_line(&out);
    assert!(err.contains("does not open"), "{err}");
}

#[test]
fn client_signing_algorithm_and_logout_uris() {
    let dir = tempfile::tempdir().unwrap();
    let c = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "rp",
            "--redirect-uri",
            "https://rp.example/cb",
            "--id-token-alg",
            "EdDSA",
            "--post-logout-redirect-uri",
            "https://rp.example/bye",
            "--access-token-format",
            "jwt",
            "--json",
        ],
        "",
    ));
    assert_eq!(c["id_token_signed_response_alg"], "EdDSA");
    assert_eq!(c["access_token_format"], "jwt");
    let default = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "plain",
            "--redirect-uri",
            "https://rp.example/cb",
            "--json",
        ],
        "",
    ));
    assert_eq!(default["id_token_signed_response_alg"], "ES256");
    assert_eq!(
        c["post_logout_redirect_uris"],
        serde_json::json!(["https://rp.example/bye"])
    );
    let err = first_error_line(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "bad",
            "--redirect-uri",
            "https://rp.example/cb",
            "--id-token-alg",
            "none",
        ],
        "",
    ));
    assert!(err.contains("unknown signing algorithm"), "{err}");
}

#[test]
fn audit_and_janitor_commands() {
    let dir = tempfile::tempdir().unwrap();
    let c = ok_json(&run(
        dir.path(),
        &[
            "client",
            "create",
            "--name",
            "audited",
            "--redirect-uri",
            "https://a.example/cb",
            "--json",
        ],
        "",
    ));
    let id = c["client_id"].as_str().unwrap();
    ok_json(&run(
        dir.path(),
        &["client", "rotate-secret", id, "--json"],
        "",
    ));
    let events = ok_json(&run(dir.path(), &["audit", "--since", "1h", "--json"], ""));
    let kinds: Vec<&str> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["client.created", "client.secret_rotated"]);
    assert_eq!(events[0]["actor"], "cli");
    assert_eq!(events[0]["client_id"], id);
    let text = serde_json::to_string(&events).unwrap();
    assert!(!text.contains(c["client_secret"].as_str().unwrap()));
    let err = first_error_line(&run(dir.path(), &["audit", "--since", "yesterday"], ""));
    assert!(err.contains("invalid --since"), "{err}");
    let pruned = ok_json(&run(dir.path(), &["janitor", "--json"], ""));
    assert_eq!(pruned["access_tokens"], 0);
}

#[test]
fn postgres_tls_settings_are_applied() {
    let dir = tempfile::tempdir().unwrap();
    let schema = PgSchema::new("cli");
    let url = schema.url(&postgres_url_or_local());
    let key = (
        "TESSERA_MASTER_KEY",
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    );
    // Encrypted without a certificate check: the local server's certificate will do.
    let keys = ok_json(&run_pg(
        dir.path(),
        &url,
        &["keys", "list", "--json"],
        &[key, ("TESSERA_DATABASE_TLS_MODE", "require")],
    ));
    assert!(!keys.as_array().unwrap().is_empty(), "{keys}");

    // A root that did not sign the server's certificate: refused, and said so.
    let unrelated = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tessera-store-postgres/tests/fixtures/unrelated-ca.pem");
    let out = run_pg(
        dir.path(),
        &url,
        &["keys", "list", "--json"],
        &[
            key,
            ("TESSERA_DATABASE_TLS_MODE", "verify-full"),
            (
                "TESSERA_DATABASE_TLS_ROOT_CERT",
                unrelated.to_str().unwrap(),
            ),
        ],
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("PostgreSQL") && stderr.contains("TLS handshake"),
        "{stderr}"
    );

    let out = run_pg(
        dir.path(),
        &url,
        &["keys", "list"],
        &[key, ("TESSERA_DATABASE_TLS_MODE", "verify_full")],
    );
    let err = first_error_line(&out);
    assert!(err.contains("verify-full"), "{err}");
}

/// `serve` raises its soft open-files limit to the hard one, so a default soft limit of
/// a few hundred descriptors does not cap the connections it can hold.
#[test]
fn serve_raises_its_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 256 && exec "$0" "$@""#)
        .arg(BIN)
        .args(["--database", &db_url(dir.path())])
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env_remove("TESSERA_DATABASE_URL")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    for line in stderr.lines().map_while(Result::ok) {
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("serving at") {
            break;
        }
    }
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id())).unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let row = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let numbers: Vec<&str> = row.split_whitespace().skip(3).take(2).collect();
    assert_eq!(numbers.len(), 2, "{row}");
    assert_ne!(numbers[0], "256", "soft limit not raised: {row}\n{seen}");
    assert_eq!(
        numbers[0], numbers[1],
        "soft limit raised to the hard one: {row}"
    );
    assert!(seen.contains("open_files_limit"), "{seen}");
}
