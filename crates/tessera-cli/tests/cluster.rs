#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Scale-out: three `tessera serve` processes on one PostgreSQL schema, as behind a load
//! balancer. Any request may land on any node: a flow hops between them, races are spread
//! over them, keys rotated anywhere are published everywhere within the reload bound, and
//! failure limits are counted across nodes.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{postgres_url_or_local, wait_until_serving, Form, PgSchema, Pkce};

const BIN: &str = env!("CARGO_BIN_EXE_tessera");
const MASTER_KEY: &str = "Y2x1c3Rlci10ZXN0LW1hc3Rlci1rZXktMzItYnl0ZXM";
const ISSUER: &str = "https://auth.cluster.test";
const USER: &str = "hopper";
const PASSWORD: &str = "hopper-long-password-1";
const REDIRECT: &str = "https://app.example.com/cb";

/// One `tessera serve` of the cluster, killed on drop.
struct Node {
    child: Child,
    base: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Cluster {
    nodes: Vec<Node>,
    url: String,
    dir: tempfile::TempDir,
    _schema: PgSchema,
}

impl Cluster {
    /// `n` nodes on a fresh schema, sharing the master key and the issuer; `envs` are
    /// extra settings for every node.
    fn start(n: usize, envs: &[(&str, &str)]) -> Cluster {
        Cluster::start_with(n, envs, &[])
    }

    /// As `start`, with extra `tessera serve` arguments.
    fn start_with(n: usize, envs: &[(&str, &str)], serve_args: &[&str]) -> Cluster {
        let schema = PgSchema::new("cluster");
        let url = schema.url(&postgres_url_or_local());
        let dir = tempfile::tempdir().unwrap();
        let mut nodes = Vec::new();
        for _ in 0..n {
            nodes.push(start_node(dir.path(), &url, envs, serve_args));
        }
        Cluster {
            nodes,
            url,
            dir,
            _schema: schema,
        }
    }

    fn node(&self, i: usize) -> &str {
        &self.nodes[i % self.nodes.len()].base
    }

    /// Runs an admin command against the cluster's store.
    fn admin(&self, args: &[&str], stdin: &str) -> Value {
        let mut child = Command::new(BIN)
            .arg("--database")
            .arg(&self.url)
            .args(args)
            .env_remove("TESSERA_DATABASE_URL")
            .env("TESSERA_MASTER_KEY", MASTER_KEY)
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let out: Output = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "tessera {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
    }

    /// A user and a confidential client; returns (client_id, client_secret).
    fn provision(&self) -> (String, String) {
        self.admin(
            &[
                "user",
                "create",
                "--username",
                USER,
                "--password-stdin",
                "--json",
            ],
            &format!("{PASSWORD}\n"),
        );
        let c = self.admin(
            &[
                "client",
                "create",
                "--name",
                "Cluster app",
                "--redirect-uri",
                REDIRECT,
                "--scopes",
                "openid profile offline_access",
                "--json",
            ],
            "",
        );
        (
            c["client_id"].as_str().unwrap().to_owned(),
            c["client_secret"].as_str().unwrap().to_owned(),
        )
    }
}

#[allow(clippy::zombie_processes)] // Node waits for the child on drop
fn start_node(dir: &Path, url: &str, envs: &[(&str, &str)], serve_args: &[&str]) -> Node {
    let mut cmd = Command::new(BIN);
    cmd.args(["--database", url, "serve", "--listen", "127.0.0.1:0"])
        .args(["--issuer", ISSUER])
        .args(serve_args)
        .env_remove("TESSERA_DATABASE_URL")
        .env("TESSERA_MASTER_KEY", MASTER_KEY)
        .env("RUST_LOG", "info")
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn serve");
    let (base, _logs) = wait_until_serving(&mut child);
    Node { child, base }
}

/// A browser whose requests go to whichever node the test names: its cookie jar is shared
/// (cookies are per host, not per port), as it would be behind one load balancer.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// The path and query of a redirect that stays on the authorization server (relative, or
/// absolute on the issuer); `None` for a redirect to the client.
fn on_server(location: &str) -> Option<String> {
    if location.starts_with('/') {
        return Some(location.to_owned());
    }
    location.strip_prefix(ISSUER).map(str::to_owned)
}

fn location(resp: &reqwest::Response) -> String {
    resp.headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

fn query_param(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
}

/// Drives an authorization request through the nodes in turn, one hop per request,
/// signing in and allowing as asked; returns the callback URL.
async fn authorize_hopping(cluster: &Cluster, browser: &reqwest::Client, query: &str) -> String {
    let mut hop = 0;
    let mut resp = browser
        .get(format!("{}/oauth2/authorize?{query}", cluster.node(hop)))
        .send()
        .await
        .unwrap();
    for _ in 0..12 {
        hop += 1;
        let node = cluster.node(hop);
        if resp.status().is_redirection() {
            let loc = location(&resp);
            let Some(path) = on_server(&loc) else {
                return loc;
            };
            resp = browser.get(format!("{node}{path}")).send().await.unwrap();
            continue;
        }
        let status = resp.status();
        let body = resp.text().await.unwrap();
        let forms = Form::all(&body);
        let form = if let Some(mut f) = forms.iter().find(|f| f.action == "/login").cloned() {
            f.set("username", USER);
            f.set("password", PASSWORD);
            f
        } else if let Some(mut f) = forms.iter().find(|f| f.action == "/consent").cloned() {
            f.fields.push(("decision".into(), "allow".into()));
            f
        } else {
            panic!("unexpected page ({status}) at hop {hop}: {body}");
        };
        resp = browser
            .post(format!("{node}{}", form.action))
            .form(&form.fields)
            .send()
            .await
            .unwrap();
    }
    panic!("too many hops");
}

async fn token(
    node: &str,
    client: &(String, String),
    form: &[(&str, &str)],
) -> (StatusCode, Value) {
    let resp = reqwest::Client::new()
        .post(format!("{node}/oauth2/token"))
        .basic_auth(&client.0, Some(&client.1))
        .form(form)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    (status, resp.json().await.unwrap_or(Value::Null))
}

async fn introspect(node: &str, client: &(String, String), token: &str) -> bool {
    let v: Value = reqwest::Client::new()
        .post(format!("{node}/oauth2/introspect"))
        .basic_auth(&client.0, Some(&client.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["active"] == true
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_owned()
}

fn authorize_query(client_id: &str, pkce: &Pkce, extra: &str) -> String {
    format!(
        "response_type=code&client_id={client_id}&redirect_uri={}&scope=openid%20profile%20offline_access&state=st-1&code_challenge={}&code_challenge_method=S256{extra}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        pkce.challenge
    )
}

#[tokio::test]
async fn a_flow_hops_between_three_nodes() {
    let cluster = Cluster::start(3, &[]);
    let client = cluster.provision();
    let browser = browser();
    let pkce = Pkce::new();
    let callback =
        authorize_hopping(&cluster, &browser, &authorize_query(&client.0, &pkce, "")).await;
    assert!(callback.starts_with(REDIRECT), "{callback}");
    assert_eq!(query_param(&callback, "state").as_deref(), Some("st-1"));
    assert_eq!(query_param(&callback, "iss").as_deref(), Some(ISSUER));
    let code = query_param(&callback, "code").expect("code");

    // Issued by one node, redeemed at another.
    let (status, first) = token(
        cluster.node(1),
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{first}");
    assert!(first["id_token"].is_string());
    for i in 0..3 {
        assert!(introspect(cluster.node(i), &client, &text(&first, "access_token")).await);
    }
    // Refreshed at a third; the rotated token is refused at every node and kills the chain.
    let (status, second) = token(
        cluster.node(2),
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &text(&first, "refresh_token")),
        ],
    )
    .await;
    assert_eq!(status, 200, "{second}");
    let me: Value = reqwest::Client::new()
        .get(format!("{}/userinfo", cluster.node(0)))
        .bearer_auth(text(&second, "access_token"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["preferred_username"], USER, "{me}");

    // The session made on the way is honoured by any node: prompt=none needs no page.
    let pkce2 = Pkce::new();
    let resp = browser
        .get(format!(
            "{}/oauth2/authorize?{}",
            cluster.node(2),
            authorize_query(&client.0, &pkce2, "&prompt=none")
        ))
        .send()
        .await
        .unwrap();
    let loc = location(&resp);
    assert!(
        loc.starts_with(REDIRECT) && query_param(&loc, "code").is_some(),
        "session and consent known to another node: {loc}"
    );

    let (status, body) = token(
        cluster.node(0),
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &text(&first, "refresh_token")),
        ],
    )
    .await;
    assert_eq!(
        (status.as_u16(), body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    for i in 0..3 {
        assert!(
            !introspect(cluster.node(i), &client, &text(&second, "refresh_token")).await,
            "family revoked, as seen from node {i}"
        );
    }
}

/// Sends `n` copies of `form` at once, spread over the nodes.
async fn storm(
    cluster: &Cluster,
    client: &(String, String),
    form: &[(&str, &str)],
    n: usize,
) -> Vec<(u16, Value)> {
    let form: Vec<(String, String)> = form
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut tasks = Vec::new();
    for i in 0..n {
        let (node, client, form) = (cluster.node(i).to_owned(), client.clone(), form.clone());
        tasks.push(tokio::spawn(async move {
            let pairs: Vec<(&str, &str)> =
                form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            let (status, body) = token(&node, &client, &pairs).await;
            (status.as_u16(), body)
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

#[tokio::test]
async fn races_spread_over_nodes_have_exactly_one_winner() {
    let cluster = Cluster::start(3, &[]);
    let client = cluster.provision();
    let browser = browser();
    let pkce = Pkce::new();
    let callback =
        authorize_hopping(&cluster, &browser, &authorize_query(&client.0, &pkce, "")).await;
    let code = query_param(&callback, "code").unwrap();
    let results = storm(
        &cluster,
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
        15,
    )
    .await;
    assert!(results.iter().all(|(s, _)| *s < 500), "{results:?}");
    let wins: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(wins.len(), 1, "one redemption: {results:?}");
    assert!(results
        .iter()
        .filter(|(s, _)| *s != 200)
        .all(|(s, b)| *s == 400 && b["error"] == "invalid_grant"));

    // A fresh chain, then a refresh race over the nodes.
    let pkce = Pkce::new();
    let callback =
        authorize_hopping(&cluster, &browser, &authorize_query(&client.0, &pkce, "")).await;
    let (status, first) = token(
        cluster.node(0),
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &query_param(&callback, "code").unwrap()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let results = storm(
        &cluster,
        &client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", &text(&first, "refresh_token")),
        ],
        15,
    )
    .await;
    assert!(results.iter().all(|(s, _)| *s < 500), "{results:?}");
    let wins: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(wins.len(), 1, "one new token pair: {results:?}");
}

#[tokio::test]
async fn a_retry_window_set_on_every_node_serves_retries_at_any_node() {
    let cluster = Cluster::start(2, &[("TESSERA_REFRESH_RETRY_WINDOW", "30")]);
    let client = cluster.provision();
    let browser = browser();
    let pkce = Pkce::new();
    let callback =
        authorize_hopping(&cluster, &browser, &authorize_query(&client.0, &pkce, "")).await;
    let (_, first) = token(
        cluster.node(0),
        &client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &query_param(&callback, "code").unwrap()),
            ("redirect_uri", REDIRECT),
            ("code_verifier", &pkce.verifier),
        ],
    )
    .await;
    let r0 = text(&first, "refresh_token");
    let (status, lost) = token(
        cluster.node(0),
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
    )
    .await;
    assert_eq!(status, 200, "{lost}");
    let (status, retried) = token(
        cluster.node(1),
        &client,
        &[("grant_type", "refresh_token"), ("refresh_token", &r0)],
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(
        text(&retried, "refresh_token"),
        text(&lost, "refresh_token")
    );
}

#[tokio::test]
async fn keys_rotated_anywhere_are_published_by_every_node_within_the_reload_interval() {
    let cluster = Cluster::start(3, &[("TESSERA_KEY_RELOAD_INTERVAL", "1")]);
    let kids = |v: &Value| -> Vec<String> {
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect()
    };
    let jwks = |node: String| async move {
        reqwest::get(format!("{node}/.well-known/jwks.json"))
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let before = kids(&jwks(cluster.node(0).to_owned()).await);
    for i in 1..3 {
        assert_eq!(
            kids(&jwks(cluster.node(i).to_owned()).await),
            before,
            "one key set"
        );
    }
    let rotated = cluster.admin(&["keys", "rotate", "--json"], "");
    let new_kids: Vec<String> = match &rotated {
        Value::Array(keys) => keys
            .iter()
            .filter_map(|k| k["kid"].as_str().map(str::to_owned))
            .collect(),
        other => other["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["kid"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    };
    assert!(!new_kids.is_empty(), "rotation printed its keys: {rotated}");
    let started = Instant::now();
    for i in 0..3 {
        loop {
            let now = kids(&jwks(cluster.node(i).to_owned()).await);
            if new_kids.iter().all(|k| now.contains(k)) {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "node {i} did not publish {new_kids:?} within the bound: {now:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn failure_limits_are_counted_across_nodes() {
    // Six failures a minute per address, whichever node sees them; each node alone
    // would allow six as well, so per-node counting would never answer 429 here.
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("tessera.toml");
    std::fs::write(
        &config,
        "[rate_limits]\ntoken_failures = { burst = 6, per_minute = 1 }\n",
    )
    .unwrap();
    let config = config.to_str().unwrap().to_owned();
    let cluster = Cluster::start_with(3, &[], &["--config", &config]);
    let client = cluster.provision();
    let mut statuses = Vec::new();
    for i in 0..12 {
        let (status, body) = token(
            cluster.node(i),
            &client,
            &[
                ("grant_type", "authorization_code"),
                ("code", "no-such-code"),
                ("redirect_uri", REDIRECT),
            ],
        )
        .await;
        assert!(
            status.as_u16() == 400 || status.as_u16() == 429,
            "{status} {body}"
        );
        statuses.push(status.as_u16());
    }
    // 6 allowed, then each of the 3 nodes learns of the excess at its next failure.
    let first_429 = statuses.iter().position(|s| *s == 429);
    assert!(
        first_429.is_some_and(|i| i <= 6 + 3),
        "cluster-wide counting blocks by the 10th failure: {statuses:?}"
    );
    assert!(
        statuses[9..].iter().all(|s| *s == 429),
        "then every node refuses: {statuses:?}"
    );
}
