//! `tessera`: the server and its administration commands (contract §1).

mod config;
mod demo;
mod logging;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;
use tessera_crypto::{MasterKey, Passwords};
use tessera_server::admin::{self, NewClient, NewUser};
use tessera_server::{AppState, Clock, SystemClock};
use tessera_store::Store;
use tessera_store_postgres::{PostgresOptions, PostgresStore};
use tessera_store_sqlite::SqliteStore;

/// jemalloc rather than glibc's allocator: buffers allocated on one thread and freed on
/// another (every store write: the worker builds the rows, the writer thread drops them)
/// took an arena lock per free under glibc, and allocation was a fifth of the workers'
/// time under refresh load (docs/benchmarks.md, session 6). Its options are built in
/// through `.cargo/config.toml`.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Parser)]
#[command(
    name = "tessera",
    version,
    about = "Tessera OAuth 2.0 / OpenID Connect authorization server"
)]
struct Cli {
    /// Store URL: sqlite://PATH (default ./tessera-data/tessera.db) or postgres://…
    #[arg(long, global = true, env = "TESSERA_DATABASE_URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server (migrates the store first).
    Serve(ServeArgs),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCmd),
    /// Manage users.
    #[command(subcommand)]
    User(UserCmd),
    /// Manage OAuth clients.
    #[command(subcommand)]
    Client(ClientCmd),
    /// Signing keys (JWKS).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Read the audit trail.
    Audit {
        /// Start time: Unix seconds, or an age such as 30m, 12h, 7d [default: 24h]
        #[arg(long, default_value = "24h")]
        since: String,
        /// Most events to print
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// Remove expired codes, tokens, sessions and spent grants now.
    Janitor {
        #[arg(long)]
        json: bool,
        /// Audit events older than this many seconds are deleted too (0 keeps them).
        #[arg(long, default_value_t = tessera_server::config::DEFAULT_AUDIT_RETENTION)]
        audit_retention: i64,
    },
}

/// Parses `--since`: Unix seconds, or an age (`90s`, `30m`, `12h`, `7d`) before now.
fn parse_since(text: &str, now: i64) -> Result<i64> {
    if let Ok(t) = text.parse::<i64>() {
        return Ok(t);
    }
    let (num, unit) = text.split_at(text.len().saturating_sub(1));
    let n: i64 = num.parse().map_err(|_| {
        anyhow!("invalid --since {text:?}: use Unix seconds or an age like 30m, 12h, 7d")
    })?;
    let secs = match unit {
        "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        "d" => n * 86400,
        _ => bail!("invalid --since {text:?}: use Unix seconds or an age like 30m, 12h, 7d"),
    };
    Ok(now - secs)
}

/// Audits an administrative action taken from the command line.
async fn audit_cli(
    store: &dyn Store,
    kind: &str,
    client_id: Option<&str>,
    tenant: Option<&str>,
) -> Result<()> {
    store
        .append_audit(&[tessera_core::model::AuditEvent {
            at: now(),
            kind: kind.into(),
            tenant: tenant.map(str::to_owned),
            actor: Some("cli".into()),
            client_id: client_id.map(str::to_owned),
            ip: None,
            request_id: None,
            detail: None,
        }])
        .await?;
    Ok(())
}

#[derive(Subcommand)]
enum KeysCmd {
    /// List signing keys and their states (pending, active, retired, expired).
    List {
        #[arg(long)]
        json: bool,
        /// TOML configuration file (for master_key_file)
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Publish new signing keys now; they sign after --delay seconds, and the keys they
    /// replace stay published until every token they signed has expired.
    Rotate {
        /// Seconds between publishing and signing [default: 120]
        #[arg(long, default_value_t = tessera_server::keys::DEFAULT_PUBLISH_DELAY)]
        delay: i64,
        #[arg(long)]
        json: bool,
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on [default: 127.0.0.1:8080]
    #[arg(long)]
    listen: Option<String>,
    /// Issuer URL [default: http://<listen address>]
    #[arg(long)]
    issuer: Option<String>,
    /// TOML configuration file
    #[arg(long)]
    config: Option<PathBuf>,
    /// On an empty store, create a demo tenant, user and client and print how to use them.
    #[arg(long)]
    demo: bool,
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create a tenant (users and tokens are isolated per tenant).
    Create {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// List tenants.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserCmd {
    /// Create a user; the password is read from standard input.
    Create {
        #[arg(long)]
        username: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        #[arg(long)]
        email: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// Read the password from standard input (one trailing newline is dropped).
        #[arg(long, required = true)]
        password_stdin: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClientCmd {
    /// Register a client; prints its id and (once) its secret.
    Create(Box<ClientCreateArgs>),
    /// List clients.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one client's settings.
    Show {
        /// The client id (ids may begin with `-`: they are base64url).
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Delete a client and revoke everything it was issued.
    Delete {
        /// The client id (ids may begin with `-`: they are base64url).
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Replace a client's secret; the old one stops working at once.
    RotateSecret {
        /// The client id (ids may begin with `-`: they are base64url).
        #[arg(allow_hyphen_values = true)]
        id: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ClientCreateArgs {
    #[arg(long)]
    name: String,
    /// Redirect URI (repeatable); compared exactly.
    #[arg(long = "redirect-uri")]
    redirect_uris: Vec<String>,
    /// Comma-separated: authorization_code,refresh_token,client_credentials
    #[arg(long)]
    grant_types: Option<String>,
    /// No secret; PKCE required.
    #[arg(long)]
    public: bool,
    /// client_secret_basic | client_secret_post | none [default: both secret methods]
    #[arg(long)]
    auth_method: Option<String>,
    /// Allowed scopes, space-separated [default: "openid profile email offline_access"]
    #[arg(long)]
    scopes: Option<String>,
    /// Allowed audiences/resources (repeatable).
    #[arg(long = "audience", num_args = 1..)]
    audiences: Vec<String>,
    /// always | offline-access [default: always]
    #[arg(long)]
    refresh_tokens: Option<String>,
    /// opaque | jwt [default: opaque]
    #[arg(long)]
    access_token_format: Option<String>,
    /// Access-token lifetime in seconds [default: 3600]
    #[arg(long)]
    access_token_ttl: Option<i64>,
    /// Refresh-token lifetime in seconds [default: 30 days]
    #[arg(long)]
    refresh_token_ttl: Option<i64>,
    #[arg(long)]
    require_pkce: bool,
    /// First-party client: no consent page.
    #[arg(long)]
    skip_consent: bool,
    /// Restrict the client to one tenant.
    #[arg(long)]
    tenant: Option<String>,
    /// ID token / JWT access token algorithm: EdDSA | ES256 | RS256 [default: ES256]
    #[arg(long)]
    id_token_alg: Option<String>,
    /// Where RP-initiated logout may redirect (repeatable).
    #[arg(long = "post-logout-redirect-uri")]
    post_logout_redirect_uris: Vec<String>,
    #[arg(long)]
    json: bool,
}

fn main() {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => fail(&anyhow!("cannot start the async runtime: {e}")),
    };
    if let Err(e) = runtime.block_on(run(cli)) {
        fail(&e);
    }
}

/// Prints the error (first line says what is wrong) and exits non-zero.
fn fail(e: &anyhow::Error) -> ! {
    logging::flush();
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    std::process::exit(1)
}

fn now() -> i64 {
    SystemClock.now()
}

/// Opens the store named by `url` (migrating it) with default pool settings.
async fn open_store(url: &str) -> Result<Arc<dyn Store>> {
    open_store_with(url, PostgresOptions::default()).await
}

/// Opens the store named by `url` (migrating it): `sqlite://PATH` (or a bare path), or
/// `postgres://…` / `postgresql://…` with the given pool settings.
async fn open_store_with(url: &str, pg: PostgresOptions) -> Result<Arc<dyn Store>> {
    if PostgresStore::is_postgres_url(url) {
        let store = PostgresStore::connect_with(url, pg)
            .await
            .with_context(|| format!("cannot open the PostgreSQL store at {}", redact_url(url)))?;
        return Ok(Arc::new(store));
    }
    if !url.starts_with("sqlite:") && url.contains("://") {
        bail!(
            "unsupported database URL {:?}; use sqlite://PATH or postgres://…",
            redact_url(url)
        );
    }
    let path = SqliteStore::path_from_url(url);
    let store = SqliteStore::open(&path)
        .with_context(|| format!("cannot open the store at {}", path.display()))?;
    Ok(Arc::new(store))
}

/// The URL without its password, for error messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("****"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

fn database_url(cli: &Option<String>) -> String {
    cli.clone()
        .unwrap_or_else(|| config::DEFAULT_DATABASE.to_owned())
}

fn print_json(v: &serde_json::Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

async fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Serve(args) => serve(cli.database, args).await,
        Command::Tenant(cmd) => {
            let store = open_store(&database_url(&cli.database)).await?;
            match cmd {
                TenantCmd::Create { name, json } => {
                    let t = admin::create_tenant(&*store, &name, now()).await?;
                    if json {
                        print_json(&json!({"id": t.id, "created_at": t.created_at}));
                    } else {
                        println!("created tenant {}", t.id);
                    }
                }
                TenantCmd::List { json } => {
                    let list = store.list_tenants().await?;
                    if json {
                        print_json(&json!(list
                            .iter()
                            .map(|t| json!({"id": t.id, "created_at": t.created_at}))
                            .collect::<Vec<_>>()));
                    } else {
                        for t in list {
                            println!("{}", t.id);
                        }
                    }
                }
            }
            Ok(())
        }
        Command::User(UserCmd::Create {
            username,
            tenant,
            email,
            name,
            password_stdin: _,
            json,
        }) => {
            let mut password = String::new();
            std::io::stdin()
                .read_to_string(&mut password)
                .context("cannot read the password from standard input")?;
            if password.ends_with('\n') {
                password.pop();
                if password.ends_with('\r') {
                    password.pop();
                }
            }
            let store = open_store(&database_url(&cli.database)).await?;
            let passwords = Passwords::new()?;
            let user = admin::create_user(
                &*store,
                &passwords,
                NewUser {
                    tenant: &tenant,
                    username: &username,
                    email: email.as_deref(),
                    name: name.as_deref(),
                    password: &password,
                },
                now(),
            )
            .await?;
            if json {
                print_json(
                    &json!({"id": user.id, "username": user.username, "tenant": user.tenant, "email": user.email, "name": user.name}),
                );
            } else {
                println!(
                    "created user {} (id {}) in tenant {}",
                    user.username, user.id, user.tenant
                );
            }
            Ok(())
        }
        Command::Client(cmd) => client_command(cmd, &database_url(&cli.database)).await,
        Command::Keys(cmd) => keys_command(cmd, cli.database).await,
        Command::Audit { since, limit, json } => {
            let store = open_store(&database_url(&cli.database)).await?;
            let since = parse_since(&since, now())?;
            let events = store.list_audit(since, limit).await?;
            if json {
                print_json(&json!(events));
            } else {
                for e in &events {
                    println!(
                        "{}  {:28} tenant={} actor={} client={} ip={} req={} {}",
                        e.at,
                        e.kind,
                        e.tenant.as_deref().unwrap_or("-"),
                        e.actor.as_deref().unwrap_or("-"),
                        e.client_id.as_deref().unwrap_or("-"),
                        e.ip.as_deref().unwrap_or("-"),
                        e.request_id.as_deref().unwrap_or("-"),
                        e.detail.as_deref().unwrap_or("")
                    );
                }
            }
            Ok(())
        }
        Command::Janitor {
            json,
            audit_retention,
        } => {
            if audit_retention < 0 {
                anyhow::bail!("--audit-retention must be 0 or a number of seconds");
            }
            let store = open_store(&database_url(&cli.database)).await?;
            let pruned = tessera_server::janitor::sweep(&*store, now(), audit_retention).await?;
            if json {
                print_json(&json!(pruned));
            } else {
                println!(
                    "pruned {} codes, {} access tokens, {} refresh tokens, {} grants, {} sessions, {} audit events",
                    pruned.codes,
                    pruned.access_tokens,
                    pruned.refresh_tokens,
                    pruned.grants,
                    pruned.sessions,
                    pruned.audit_events
                );
            }
            Ok(())
        }
    }
}

async fn keys_command(cmd: KeysCmd, database: Option<String>) -> Result<()> {
    let config_file = match &cmd {
        KeysCmd::List { config, .. } | KeysCmd::Rotate { config, .. } => config.clone(),
    };
    let cfg = config::load(&config::Flags {
        config_file,
        listen: None,
        issuer: None,
        database_url: database,
    })?;
    let sealer = tessera_server::sealer(&master_key(&cfg)?)?;
    let store = open_store_with(&cfg.database_url, cfg.postgres_options()?).await?;
    let now = now();
    // Make sure there is something to list or rotate from (first use).
    tessera_server::keys::load_or_init(&*store, &sealer, now).await?;
    match cmd {
        KeysCmd::List { json, .. } => {
            let keys = store.list_signing_keys().await?;
            let rows: Vec<serde_json::Value> = keys
                .iter()
                .map(|k| {
                    json!({
                        "kid": k.kid, "alg": k.alg, "state": k.state(now).as_str(),
                        "created_at": k.created_at, "activates_at": k.activates_at,
                        "retires_at": k.retires_at, "publish_until": k.publish_until,
                    })
                })
                .collect();
            if json {
                print_json(&json!(rows));
            } else {
                for k in &keys {
                    println!("{}  {:6}  {}", k.kid, k.alg, k.state(now).as_str());
                }
            }
        }
        KeysCmd::Rotate { delay, json, .. } => {
            let new = tessera_server::keys::rotate(&*store, &sealer, now, delay).await?;
            if json {
                print_json(&json!(new
                    .iter()
                    .map(|k| json!({"kid": k.kid, "alg": k.alg, "activates_at": k.activates_at}))
                    .collect::<Vec<_>>()));
            } else {
                for k in &new {
                    println!(
                        "published {} ({}); signs from {} (in {delay} s)",
                        k.kid, k.alg, k.activates_at
                    );
                }
            }
        }
    }
    Ok(())
}

async fn client_command(cmd: ClientCmd, db: &str) -> Result<()> {
    match cmd {
        ClientCmd::Create(a) => {
            let new = NewClient {
                name: a.name,
                redirect_uris: a.redirect_uris,
                grant_types: a.grant_types,
                public: a.public,
                auth_method: a.auth_method,
                scopes: a.scopes,
                audiences: a.audiences,
                refresh_tokens: a.refresh_tokens,
                access_token_format: a.access_token_format,
                access_token_ttl: a.access_token_ttl,
                refresh_token_ttl: a.refresh_token_ttl,
                require_pkce: a.require_pkce,
                skip_consent: a.skip_consent,
                tenant: a.tenant,
                owner: None,
                id_token_alg: a.id_token_alg,
                post_logout_redirect_uris: a.post_logout_redirect_uris,
            };
            // Validate before touching the store, so bad input writes nothing at all.
            admin::build_client(&new, String::new(), now())?;
            let store = open_store(db).await?;
            let (client, secret) = admin::create_client(&*store, &new, now()).await?;
            audit_cli(
                &*store,
                "client.created",
                Some(&client.id),
                client.tenant.as_deref(),
            )
            .await?;
            let mut out = admin::client_json(&client);
            if let Some(obj) = out.as_object_mut() {
                obj.insert("client_secret".into(), json!(secret));
            }
            if a.json {
                print_json(&out);
            } else {
                println!("client_id:     {}", client.id);
                match &secret {
                    Some(s) => println!(
                        "client_secret: {s}\n(the secret is shown only now; store it safely)"
                    ),
                    None => println!("public client: no secret; PKCE is required"),
                }
            }
            Ok(())
        }
        ClientCmd::List { json } => {
            let store = open_store(db).await?;
            let clients = store.list_clients().await?;
            if json {
                print_json(&json!(clients
                    .iter()
                    .map(admin::client_json)
                    .collect::<Vec<_>>()));
            } else {
                for c in clients {
                    let grants: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
                    println!(
                        "{}  {}  [{}]  {}",
                        c.id,
                        c.name,
                        grants.join(","),
                        c.redirect_uris.join(" ")
                    );
                }
            }
            Ok(())
        }
        ClientCmd::Show { id, json } => {
            let store = open_store(db).await?;
            let client = store
                .get_client(&id)
                .await?
                .ok_or_else(|| anyhow!("no client with id {id:?}"))?;
            let v = admin::client_json(&client);
            if json {
                print_json(&v);
            } else if let Some(obj) = v.as_object() {
                for (k, v) in obj {
                    println!("{k}: {v}");
                }
            }
            Ok(())
        }
        ClientCmd::Delete { id, json } => {
            let store = open_store(db).await?;
            if !store.delete_client(&id).await? {
                bail!("no client with id {id:?}");
            }
            audit_cli(&*store, "client.deleted", Some(&id), None).await?;
            if json {
                print_json(&json!({"client_id": id, "deleted": true}));
            } else {
                println!("deleted client {id} and revoked everything it was issued");
            }
            Ok(())
        }
        ClientCmd::RotateSecret { id, json } => {
            let store = open_store(db).await?;
            let secret = admin::rotate_secret(&*store, &id).await?;
            audit_cli(&*store, "client.secret_rotated", Some(&id), None).await?;
            if json {
                print_json(&json!({"client_id": id, "client_secret": secret}));
            } else {
                println!("client_secret: {secret}\n(the old secret no longer works)");
            }
            Ok(())
        }
    }
}

/// The master key from `TESSERA_MASTER_KEY`, or a key file created with mode 0600.
///
/// On PostgreSQL every node must hold the same key (it seals the signing keys they share),
/// so there the key must be given explicitly and a missing file is never generated.
fn master_key(cfg: &config::ServeConfig) -> Result<MasterKey> {
    if let Ok(text) = std::env::var("TESSERA_MASTER_KEY") {
        return MasterKey::parse(&text)
            .context("TESSERA_MASTER_KEY is invalid (expected base64url of 32 bytes)");
    }
    if PostgresStore::is_postgres_url(&cfg.database_url) {
        if cfg.master_key_file.is_empty() {
            bail!(
                "a PostgreSQL store needs the master key shared by every node: set TESSERA_MASTER_KEY \
                 (base64url of 32 random bytes) or master_key_file (TESSERA_MASTER_KEY_FILE)"
            );
        }
        let path = PathBuf::from(&cfg.master_key_file);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read master key file {} (with a PostgreSQL store it is never generated: \
                 every node needs the same key)",
                path.display()
            )
        })?;
        return MasterKey::parse(&text)
            .with_context(|| format!("master key file {} is invalid", path.display()));
    }
    let path = if cfg.master_key_file.is_empty() {
        let db = SqliteStore::path_from_url(&cfg.database_url);
        db.parent().unwrap_or(Path::new(".")).join("master.key")
    } else {
        PathBuf::from(&cfg.master_key_file)
    };
    if path.exists() {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read master key file {}", path.display()))?;
        return MasterKey::parse(&text)
            .with_context(|| format!("master key file {} is invalid", path.display()));
    }
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let key = MasterKey::generate()?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Owner-only, like the data folder the SQLite store creates.
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("cannot create master key file {}", path.display()))?;
    file.write_all(key.to_text().as_bytes())?;
    file.sync_all()?;
    tracing::info!(path = %path.display(), "created a new master key file (mode 0600)");
    Ok(key)
}

/// Every connection is a file descriptor: a server allowed only the usual soft limit of
/// 1024 would refuse clients long before memory or CPU run short. Raise the soft limit to
/// the hard one (no privilege needed) and say what we got.
fn raise_open_files_limit() {
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(open_files_limit = n, "open files limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open files limit"),
    }
}

async fn serve(database: Option<String>, args: ServeArgs) -> Result<()> {
    init_logging();
    let cfg = config::load(&config::Flags {
        config_file: args.config,
        listen: args.listen,
        issuer: args.issuer,
        database_url: database,
    })?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .with_context(|| format!("cannot listen on {}", cfg.listen))?;
    let bound = listener.local_addr()?;
    let settings = cfg.settings(bound)?;
    let limits = cfg.connection_limits()?;
    let key = master_key(&cfg)?;
    let store = open_store_with(&cfg.database_url, cfg.postgres_options()?).await?;
    let issuer = settings.issuer.clone();
    let state = AppState::new(
        settings,
        store.clone(),
        Arc::new(SystemClock),
        &key,
        Passwords::new()?,
    )
    .await?;
    if args.demo {
        demo::provision(&*store, &issuer).await?;
    }
    // Last before serving, so that a configuration error stays the first line printed.
    raise_open_files_limit();
    tracing::info!(issuer = %issuer, "tessera serving at http://{bound}");
    tessera_server::serve_with(listener, state, shutdown_signal(), limits).await?;
    // The server has let go of the store; dropping the last handle commits what is
    // queued and closes it (SQLite: the WAL is checkpointed into the database file).
    drop(store);
    tracing::info!("store closed; tessera stopped");
    logging::flush();
    Ok(())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(logging::Stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(tessera_server::LogFormat)
        .try_init();
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing requests in flight");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The options from `.cargo/config.toml` reached the allocator this binary runs on
    /// (without them, peak RSS under load grows by a fifth).
    #[test]
    fn the_allocator_is_jemalloc_with_the_built_in_options() {
        let conf = tikv_jemalloc_ctl::config::malloc_conf::read().expect("jemalloc answers");
        // The crate hands the C string over with its terminator.
        assert_eq!(
            conf.trim_end_matches('\0'),
            "percpu_arena:percpu,dirty_decay_ms:1000,muzzy_decay_ms:0"
        );
    }

    /// Client ids are base64url, so one in 64 begins with `-`; such an id is still an id.
    #[test]
    fn client_ids_beginning_with_a_hyphen_are_accepted() {
        for command in ["show", "delete", "rotate-secret"] {
            let cli = Cli::try_parse_from(["tessera", "client", command, "-qXj3", "--json"])
                .unwrap_or_else(|e| panic!("{command}: {e}"));
            let (id, json) = match cli.command {
                Command::Client(ClientCmd::Show { id, json })
                | Command::Client(ClientCmd::Delete { id, json })
                | Command::Client(ClientCmd::RotateSecret { id, json }) => (id, json),
                _ => panic!("{command}: another command"),
            };
            assert_eq!((id.as_str(), json), ("-qXj3", true), "{command}");
        }
    }
}
