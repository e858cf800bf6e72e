#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! PostgreSQL outages, always on PostgreSQL: the server talks to the database through a
//! [`TcpProxy`] that the test cuts in the middle of a load of code flows, refreshes and
//! client-credentials grants. While the database is gone every answer is a fast 503
//! (`temporarily_unavailable` on the API, an error page in the browser) and the node says
//! it is not ready; once the proxy forwards again the same server recovers by itself, and
//! every grant that was answered with 200 is whole.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use sqlx::Connection;
use tessera_store_postgres::PostgresOptions;
use tessera_testkit::{
    postgres_url_or_local, ClientSpec, ConsentChoice, PgSchema, Stop, TcpProxy, TestClient,
    TestServer,
};

const USER: &str = "outage-user";
const PASSWORD: &str = "outage-long-password-1";
/// Longest any single answer may take, outage or not.
const BOUND: Duration = Duration::from_secs(5);
const REFRESH_WORKERS: usize = 3;
const CREDENTIALS_WORKERS: usize = 2;

/// One answered request.
#[derive(Debug)]
struct Outcome {
    what: &'static str,
    started: Instant,
    elapsed: Duration,
    status: u16,
    body: Value,
}

#[derive(Default)]
struct Journal {
    outcomes: Mutex<Vec<Outcome>>,
    /// Access tokens of client-credentials answers with 200.
    credential_tokens: Mutex<Vec<String>>,
    /// Refresh tokens of code exchanges answered with 200 (never used afterwards).
    code_refresh_tokens: Mutex<Vec<String>>,
}

impl Journal {
    fn record(&self, what: &'static str, started: Instant, status: u16, body: &Value) {
        self.outcomes.lock().unwrap().push(Outcome {
            what,
            started,
            elapsed: started.elapsed(),
            status,
            body: body.clone(),
        });
    }
}

struct Fixture {
    proxy: TcpProxy,
    server: TestServer,
    client: TestClient,
    http: reqwest::Client,
    direct_url: String,
    schema: String,
}

async fn setup() -> Fixture {
    let direct_url = postgres_url_or_local();
    let parsed = url::Url::parse(&direct_url).unwrap();
    let upstream: SocketAddr = tokio::net::lookup_host((
        parsed.host_str().unwrap(),
        parsed.port_or_known_default().unwrap_or(5432),
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let proxy = TcpProxy::start(upstream).await;
    let schema = PgSchema::new("outage");
    let schema_name = schema.name.clone();
    let options = PostgresOptions {
        max_connections: 8,
        acquire_timeout: Duration::from_secs(1),
        statement_timeout: Duration::from_secs(2),
        ..PostgresOptions::default()
    };
    let server = TestServer::start_on_postgres(&proxy.url(&direct_url), schema, options, |s| {
        // A client that lost the answer to a refresh retries it (see the retry window).
        s.refresh_retry_window = 300;
        s.rate_limits.enabled = false;
    })
    .await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Outage app".into(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            grant_types: Some("authorization_code,refresh_token,client_credentials".into()),
            ..Default::default()
        })
        .await;
    // Not one request may hang: a stuck one fails the test instead of stalling it.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Fixture {
        proxy,
        server,
        client,
        http,
        direct_url,
        schema: schema_name,
    }
}

async fn post_token(f: &Fixture, form: &[(&str, &str)]) -> (u16, Value) {
    post(f, "/oauth2/token", form).await
}

async fn post(f: &Fixture, path: &str, form: &[(&str, &str)]) -> (u16, Value) {
    let (id, secret) = f.client.basic().unwrap();
    let resp = f
        .http
        .post(f.server.url(path))
        .basic_auth(id, Some(secret))
        .form(form)
        .send()
        .await
        .expect("answer within the client timeout");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn authorize_url(f: &Fixture) -> String {
    tessera_testkit::with_query(
        &f.server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &f.client.id),
            ("redirect_uri", &f.client.redirect_uri),
            ("scope", "openid offline_access"),
            ("state", "s"),
        ],
    )
}

/// A code flow through the browser and its exchange: the token answer, or the status of
/// the page that stopped the flow.
async fn code_flow(f: &Fixture, j: &Journal) -> Option<Value> {
    let started = Instant::now();
    let browser = f.server.browser();
    let callback = browser
        .authorize(
            &authorize_url(f),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await;
    let code = match callback {
        Ok(cb) => cb.code().to_owned(),
        Err(Stop::Page { status, body }) => {
            let json = Value::String(body);
            j.record("authorize", started, status.as_u16(), &json);
            return None;
        }
        Err(other) => panic!("the code flow stopped unexpectedly: {other:?}"),
    };
    let started = Instant::now();
    let (status, body) = post_token(
        f,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &f.client.redirect_uri),
        ],
    )
    .await;
    j.record("code", started, status, &body);
    (status == 200).then_some(body)
}

/// Refreshes its own chain until `stop`; a 503 keeps the token it had and tries again.
async fn refresh_worker(f: &Fixture, j: &Journal, stop: &AtomicBool, first: Value) -> Value {
    let mut current = first;
    while !stop.load(Ordering::Relaxed) {
        let refresh_token = current["refresh_token"].as_str().unwrap().to_owned();
        let started = Instant::now();
        let (status, body) = post_token(
            f,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
            ],
        )
        .await;
        j.record("refresh", started, status, &body);
        if status == 200 {
            current = body;
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    current
}

async fn credentials_worker(f: &Fixture, j: &Journal, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        let (status, body) = post_token(f, &[("grant_type", "client_credentials")]).await;
        j.record("client_credentials", started, status, &body);
        if status == 200 {
            let token = body["access_token"].as_str().unwrap().to_owned();
            j.credential_tokens.lock().unwrap().push(token);
        } else {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn code_worker(f: &Fixture, j: &Journal, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        match code_flow(f, j).await {
            Some(body) => {
                let rt = body["refresh_token"].as_str().unwrap().to_owned();
                j.code_refresh_tokens.lock().unwrap().push(rt);
            }
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn get(f: &Fixture, path: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let resp = f
        .http
        .get(f.server.url(path))
        .send()
        .await
        .expect("answer within the client timeout");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap(), started.elapsed())
}

fn is_unavailable(status: u16, body: &Value) -> bool {
    status == 503 && body["error"] == "temporarily_unavailable"
}

/// How many rows of `sql` (a count) the schema holds, read directly, not through the proxy.
async fn count(f: &Fixture, sql: &str) -> i64 {
    let mut conn = sqlx::PgConnection::connect(&f.direct_url).await.unwrap();
    sqlx::query(&format!("SET search_path TO \"{}\"", f.schema))
        .execute(&mut conn)
        .await
        .unwrap();
    let n: i64 = sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_outage_is_a_fast_503_and_the_node_recovers_with_every_grant_whole() {
    let f = Arc::new(setup().await);
    let journal = Arc::new(Journal::default());
    let stop = Arc::new(AtomicBool::new(false));

    // Chains to refresh during the load, and one token of each kind for the endpoints
    // checked during the outage.
    let mut firsts = Vec::new();
    for _ in 0..REFRESH_WORKERS + 1 {
        firsts.push(
            code_flow(&f, &journal)
                .await
                .expect("tokens before the outage"),
        );
    }
    let spare = firsts.pop().unwrap();
    let spare_access = spare["access_token"].as_str().unwrap().to_owned();
    let spare_refresh = spare["refresh_token"].as_str().unwrap().to_owned();

    let mut refreshers = Vec::new();
    for first in firsts {
        let (f, j, stop) = (f.clone(), journal.clone(), stop.clone());
        refreshers.push(tokio::spawn(async move {
            refresh_worker(&f, &j, &stop, first).await
        }));
    }
    let mut others = Vec::new();
    for _ in 0..CREDENTIALS_WORKERS {
        let (f, j, stop) = (f.clone(), journal.clone(), stop.clone());
        others.push(tokio::spawn(async move {
            credentials_worker(&f, &j, &stop).await
        }));
    }
    {
        let (f, j, stop) = (f.clone(), journal.clone(), stop.clone());
        others.push(tokio::spawn(
            async move { code_worker(&f, &j, &stop).await },
        ));
    }

    tokio::time::sleep(Duration::from_millis(800)).await;
    let cut_at = Instant::now();
    f.proxy.cut();
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // During the outage: not ready, still alive, and every endpoint answers 503 quickly.
    let (status, body, took) = get(&f, "/health/ready").await;
    assert_eq!(status, 503, "ready during the outage: {body}");
    assert!(took < BOUND, "readiness took {took:?}");
    let (status, _, took) = get(&f, "/health/live").await;
    assert_eq!(status, 200);
    assert!(took < BOUND, "liveness took {took:?}");
    let (status, body) = post(&f, "/oauth2/introspect", &[("token", &spare_access)]).await;
    assert!(is_unavailable(status, &body), "introspect: {status} {body}");
    let (status, body) = post(&f, "/oauth2/revoke", &[("token", &spare_refresh)]).await;
    assert!(is_unavailable(status, &body), "revoke: {status} {body}");
    let started = Instant::now();
    let resp = f
        .http
        .get(f.server.url("/userinfo"))
        .bearer_auth(&spare_access)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    assert!(is_unavailable(status, &body), "userinfo: {status} {body}");
    assert!(started.elapsed() < BOUND);
    let authorize = authorize_url(&f);
    let path = authorize.strip_prefix(&f.server.issuer).unwrap();
    let (status, page, took) = get(&f, path).await;
    assert_eq!(status, 503, "authorize page during the outage");
    assert!(page.contains("temporarily unavailable"), "{page}");
    assert!(took < BOUND, "authorize page took {took:?}");

    let restored_at = Instant::now();
    f.proxy.restore();
    let mut ready_at = None;
    while restored_at.elapsed() < Duration::from_secs(15) {
        if get(&f, "/health/ready").await.0 == 200 {
            ready_at = Some(Instant::now());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let ready_at = ready_at.expect("ready again after the database came back");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut finals = Vec::new();
    for r in refreshers {
        finals.push(r.await.unwrap());
    }
    for o in others {
        o.await.unwrap();
    }

    let outcomes = std::mem::take(&mut *journal.outcomes.lock().unwrap());
    let tally = |what: &str, status: u16| {
        outcomes
            .iter()
            .filter(|o| o.what == what && o.status == status)
            .count()
    };
    for what in ["refresh", "client_credentials", "code", "authorize"] {
        eprintln!(
            "{what}: {} × 200, {} × 503",
            tally(what, 200),
            tally(what, 503)
        );
    }
    for o in outcomes.iter() {
        let page = o.what == "authorize";
        // An "authorize" outcome is a whole browser flow: several requests and a password
        // check, each bounded, so the flow gets a multiple of the bound.
        let bound = if page { BOUND * 3 } else { BOUND };
        assert!(o.elapsed < bound, "{} took {:?}", o.what, o.elapsed);
        let ok = o.status == 200
            || if page {
                o.status == 503
            } else {
                is_unavailable(o.status, &o.body)
            };
        assert!(ok, "{} answered {} {}", o.what, o.status, o.body);
    }
    let unavailable_during_cut = outcomes
        .iter()
        .filter(|o| o.started > cut_at + Duration::from_millis(100) && o.started < restored_at)
        .filter(|o| o.status == 503)
        .count();
    assert!(unavailable_during_cut > 0, "the cut produced no 503");
    assert!(
        !outcomes
            .iter()
            .any(|o| o.started > cut_at + Duration::from_millis(100)
                && o.started < restored_at
                && o.status == 200),
        "a request succeeded while the database was unreachable"
    );
    for what in ["refresh", "client_credentials"] {
        let recovered = outcomes
            .iter()
            .filter(|o| o.what == what && o.started > ready_at && o.status == 200)
            .count();
        assert!(recovered > 0, "no {what} succeeded after the recovery");
    }

    // Every grant answered with 200 is whole: the chains still refresh, the last access
    // token of each is active, every client-credentials token and every code grant too.
    for last in &finals {
        let access = last["access_token"].as_str().unwrap();
        assert_eq!(f.server.introspect(&f.client, access).await["active"], true);
        let (status, body) = post_token(
            &f,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", last["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
        assert_eq!(status, 200, "a chain broke: {body}");
    }
    let credential_tokens = journal.credential_tokens.lock().unwrap().clone();
    assert!(!credential_tokens.is_empty());
    for token in &credential_tokens {
        assert_eq!(f.server.introspect(&f.client, token).await["active"], true);
    }
    let code_tokens = journal.code_refresh_tokens.lock().unwrap().clone();
    for token in &code_tokens {
        assert_eq!(f.server.introspect(&f.client, token).await["active"], true);
    }

    // Nothing half-written: no token or used code without its grant, no refresh token
    // without the access token issued with it.
    for (what, sql) in [
        (
            "access tokens without a grant",
            "SELECT count(*) FROM access_tokens a WHERE NOT EXISTS (SELECT 1 FROM grants g WHERE g.id = a.grant_id)",
        ),
        (
            "refresh tokens without a grant",
            "SELECT count(*) FROM refresh_tokens r WHERE NOT EXISTS (SELECT 1 FROM grants g WHERE g.id = r.grant_id)",
        ),
        (
            "used codes without a grant",
            "SELECT count(*) FROM auth_codes c WHERE c.used_at IS NOT NULL AND NOT EXISTS (SELECT 1 FROM grants g WHERE g.id = c.grant_id)",
        ),
        (
            "refresh tokens without their access token",
            "SELECT count(*) FROM refresh_tokens r WHERE r.access_token_hash IS NOT NULL AND NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.hash = r.access_token_hash)",
        ),
        (
            "grants without any token",
            "SELECT count(*) FROM grants g WHERE NOT EXISTS (SELECT 1 FROM access_tokens a WHERE a.grant_id = g.id)",
        ),
    ] {
        assert_eq!(count(&f, sql).await, 0, "{what}");
    }
}
