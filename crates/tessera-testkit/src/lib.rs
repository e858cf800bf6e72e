#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]
//! Starts the real Tessera server on 127.0.0.1:0 with a fresh store, and drives it over
//! real HTTP like a browser or a client application would.

mod backend;
mod browser;
mod process;
mod proxy;

pub use backend::{postgres_url, postgres_url_or_local, Backend, PgSchema};
pub use browser::{Browser, Callback, ConsentChoice, Form, Stop};
pub use process::wait_until_serving;
pub use proxy::TcpProxy;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_core::model::{Tenant, User};
use tessera_crypto::{MasterKey, Passwords};
use tessera_server::admin::{self, NewClient, NewUser};
use tessera_server::{AppState, Clock, ManualClock, Settings};
use tessera_store::Store;

pub use tessera_server::admin::NewClient as ClientSpec;

/// Everything the server logged in this test process, at TRACE level.
static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

#[derive(Clone)]
struct LogWriter(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Ok(mut v) = self.0.lock() {
            v.extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn install_log_capture() {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let writer = LogWriter(buf.clone());
        let _ = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .event_format(tessera_server::LogFormat)
            .with_writer(move || writer.clone())
            .try_init();
        buf
    });
}

/// The captured log text so far (all tests of this process).
pub fn logs() -> String {
    LOGS.get()
        .and_then(|b| {
            b.lock()
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        })
        .unwrap_or_default()
}

/// A registered client as a test sees it.
#[derive(Debug, Clone)]
pub struct TestClient {
    pub id: String,
    pub secret: Option<String>,
    pub redirect_uri: String,
}

impl TestClient {
    pub fn basic(&self) -> Option<(&str, &str)> {
        self.secret.as_deref().map(|s| (self.id.as_str(), s))
    }
}

pub struct TestServer {
    pub issuer: String,
    pub store: Arc<dyn Store>,
    pub clock: ManualClock,
    /// The SQLite file (unused on PostgreSQL; see `backend`).
    pub db_path: PathBuf,
    /// SQLite by default; PostgreSQL when `TESSERA_TEST_DATABASE_URL` says so.
    pub backend: Backend,
    pub passwords: Passwords,
    pub master_key: MasterKey,
    /// The running server's state (key ring, settings), for tests that rotate keys.
    pub state: AppState,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl TestServer {
    pub async fn start() -> TestServer {
        Self::start_with(|_| {}).await
    }

    /// Starts a server whose settings `adjust` may change (issuer is set afterwards).
    pub async fn start_with(adjust: impl FnOnce(&mut Settings)) -> TestServer {
        install_log_capture();
        let dir = tempfile::tempdir().expect("tempdir");
        let backend = Backend::from_env(dir.path());
        let store = backend.open().await;
        Self::start_on(dir, backend, store, adjust).await
    }

    /// Starts a server on PostgreSQL at `url` (e.g. through a [`TcpProxy`]) in `schema`,
    /// with pool `options` (their `schema` is replaced by `schema`'s).
    pub async fn start_on_postgres(
        url: &str,
        schema: PgSchema,
        options: tessera_store_postgres::PostgresOptions,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        install_log_capture();
        let dir = tempfile::tempdir().expect("tempdir");
        let options = tessera_store_postgres::PostgresOptions {
            schema: Some(schema.name.clone()),
            ..options
        };
        let store: Arc<dyn Store> = Arc::new(
            tessera_store_postgres::PostgresStore::connect_with(url, options)
                .await
                .expect("connect postgres"),
        );
        let backend = Backend::Postgres {
            url: url.to_owned(),
            schema,
        };
        Self::start_on(dir, backend, store, adjust).await
    }

    async fn start_on(
        dir: tempfile::TempDir,
        backend: Backend,
        store: Arc<dyn Store>,
        adjust: impl FnOnce(&mut Settings),
    ) -> TestServer {
        let db_path = dir.path().join("tessera.db");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let mut settings = Settings::default();
        adjust(&mut settings);
        settings.issuer = format!("http://{addr}");
        settings.validate().expect("settings");
        let clock = ManualClock::new();
        let passwords = Passwords::new().expect("argon2");
        let master_key = MasterKey::generate().expect("key");
        let state = AppState::new(
            settings,
            store.clone(),
            Arc::new(clock.clone()),
            &master_key,
            passwords.clone(),
        )
        .await
        .expect("state");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let served = state.clone();
        let task = tokio::spawn(async move {
            let state = served;
            let _ = tessera_server::serve(listener, state, async {
                let _ = rx.await;
            })
            .await;
        });
        TestServer {
            issuer: format!("http://{addr}"),
            store,
            clock,
            db_path,
            backend,
            passwords,
            master_key,
            state,
            shutdown: Some(tx),
            task: Some(task),
            _dir: dir,
        }
    }

    /// Stops the server and waits for in-flight requests to finish.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path)
    }

    pub fn now(&self) -> i64 {
        self.clock.now()
    }

    /// Creates a user in the default tenant.
    pub async fn user(&self, username: &str, password: &str) -> User {
        self.user_in("default", username, password).await
    }

    /// Creates a user in `tenant`, creating the tenant when missing.
    pub async fn user_in(&self, tenant: &str, username: &str, password: &str) -> User {
        if self
            .store
            .get_tenant(tenant)
            .await
            .expect("store")
            .is_none()
        {
            self.store
                .create_tenant(&Tenant {
                    id: tenant.into(),
                    created_at: self.now(),
                })
                .await
                .expect("create tenant");
        }
        admin::create_user(
            &*self.store,
            &self.passwords,
            NewUser {
                tenant,
                username,
                email: Some(&format!("{username}@example.com")),
                name: Some(&format!("{username} Example")),
                password,
            },
            self.now(),
        )
        .await
        .expect("create user")
    }

    /// Registers a client exactly as `tessera client create` would.
    pub async fn client(&self, spec: NewClient) -> TestClient {
        let (client, secret) = admin::create_client(&*self.store, &spec, self.now())
            .await
            .expect("create client");
        TestClient {
            id: client.id,
            secret,
            redirect_uri: client.redirect_uris.first().cloned().unwrap_or_default(),
        }
    }

    /// A cookie-keeping browser that does not follow redirects by itself.
    pub fn browser(&self) -> Browser {
        Browser::new(&self.issuer)
    }

    /// A plain HTTP client (no cookies, no redirects).
    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client")
    }

    /// POSTs a form to `path` (e.g. `/oauth/token`), with HTTP Basic when `basic` is set.
    pub async fn post_form(
        &self,
        path: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self.http().post(self.url(path)).form(form);
        if let Some((id, secret)) = basic {
            req = req.header("authorization", basic_header(id, secret));
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        (status, headers, json)
    }

    /// Introspects `token` as `client` (RFC 7662).
    pub async fn introspect(&self, client: &TestClient, token: &str) -> Value {
        let (status, _, body) = self
            .post_form("/oauth2/introspect", &[("token", token)], client.basic())
            .await;
        assert_eq!(status, StatusCode::OK, "introspection failed: {body}");
        body
    }

    /// GET `path` with a bearer token and extra headers; returns status and JSON.
    pub async fn bearer_get(
        &self,
        path: &str,
        token: &str,
        extra: &[(&str, &str)],
    ) -> (StatusCode, Value) {
        let mut req = self.http().get(self.url(path)).bearer_auth(token);
        for (k, v) in extra {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("request");
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// Every byte the store holds (SQLite files, or every PostgreSQL row).
    pub fn store_bytes(&self) -> Vec<u8> {
        self.backend.bytes()
    }

    /// A new handle on this server's store, as a restarted process would open it.
    pub async fn reopen_store(&self) -> Arc<dyn Store> {
        self.backend.open().await
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub fn basic_header(id: &str, secret: &str) -> String {
    let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    format!(
        "Basic {}",
        STANDARD.encode(format!("{}:{}", enc(id), enc(secret)))
    )
}

/// A PKCE verifier and its S256 challenge.
#[derive(Debug, Clone)]
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Pkce {
        let verifier = tessera_crypto::random_id(32).expect("random");
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce {
            verifier,
            challenge,
        }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether `needle` occurs anywhere in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Builds `base?k=v&…` with proper encoding.
pub fn with_query(base: &str, pairs: &[(&str, &str)]) -> String {
    let q = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(pairs)
        .finish();
    format!("{base}?{q}")
}
