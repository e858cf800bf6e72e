//! Configuration for `tessera serve`, layered: defaults → file (`--config`, TOML) →
//! `TESSERA_*` environment → command-line flags. Validated once, passed explicitly.

use std::collections::HashMap;
use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use config::{Config, Environment, File, FileFormat};
use serde::{Deserialize, Serialize};
use tessera_server::Settings;

pub const DEFAULT_DATABASE: &str = "sqlite://./tessera-data/tessera.db";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServeConfig {
    pub listen: String,
    pub database_url: String,
    /// Empty: derived from the listening address.
    pub issuer: String,
    /// PostgreSQL pool: most connections of this node.
    pub database_max_connections: u32,
    /// PostgreSQL pool: seconds to wait for a connection before answering 503.
    pub database_acquire_timeout: u64,
    /// Where the master key is kept when `TESSERA_MASTER_KEY` is not set; empty: next
    /// to the SQLite database (with PostgreSQL one of the two is required).
    pub master_key_file: String,
    pub code_ttl: i64,
    pub session_ttl: i64,
    pub page_ttl: i64,
    pub max_body_bytes: usize,
    pub password_concurrency: usize,
    pub key_rotation_interval: i64,
    pub refresh_retry_window: i64,
    pub key_reload_interval: u64,
    pub audit_retention: i64,
    /// `[rate_limits]` table in the file (see README).
    pub rate_limits: tessera_server::limits::RateLimitSettings,
    /// Whether signed-in users may register their own clients on `/settings/api`.
    pub allow_user_clients: bool,
    /// Seconds a client has to send a request's headers (slowloris bound).
    pub header_read_timeout: u64,
    /// Seconds a request may take, its body included (408 after).
    pub request_timeout: u64,
    /// Seconds requests in flight get to finish after SIGTERM / Ctrl-C.
    pub shutdown_grace: u64,
    /// PostgreSQL: seconds a statement may run (or a transaction idle) before the database
    /// cancels it; 0 keeps the database's own setting.
    pub database_statement_timeout: u64,
    /// PostgreSQL TLS: `disable`, `prefer`, `require`, `verify-ca` or `verify-full`; empty:
    /// the URL's `sslmode` (default `prefer`).
    pub database_tls_mode: String,
    /// PEM files for PostgreSQL TLS (empty: unset, or the URL's `sslrootcert`, …).
    pub database_tls_root_cert: String,
    pub database_tls_client_cert: String,
    pub database_tls_client_key: String,
}

impl Default for ServeConfig {
    fn default() -> Self {
        let s = Settings::default();
        let limits = tessera_server::ConnectionLimits::default();
        ServeConfig {
            listen: "127.0.0.1:8080".into(),
            database_url: DEFAULT_DATABASE.into(),
            issuer: String::new(),
            database_max_connections: tessera_store_postgres::DEFAULT_MAX_CONNECTIONS,
            database_acquire_timeout: tessera_store_postgres::DEFAULT_ACQUIRE_TIMEOUT.as_secs(),
            master_key_file: String::new(),
            code_ttl: s.code_ttl,
            session_ttl: s.session_ttl,
            page_ttl: s.page_ttl,
            max_body_bytes: s.max_body_bytes,
            password_concurrency: s.password_concurrency,
            key_rotation_interval: s.key_rotation_interval,
            refresh_retry_window: s.refresh_retry_window,
            key_reload_interval: s.key_reload_interval,
            audit_retention: s.audit_retention,
            rate_limits: s.rate_limits,
            allow_user_clients: s.allow_user_clients,
            header_read_timeout: limits.header_read_timeout.as_secs(),
            request_timeout: limits.request_timeout.as_secs(),
            shutdown_grace: limits.shutdown_grace.as_secs(),
            database_statement_timeout: tessera_store_postgres::DEFAULT_STATEMENT_TIMEOUT.as_secs(),
            database_tls_mode: String::new(),
            database_tls_root_cert: String::new(),
            database_tls_client_cert: String::new(),
            database_tls_client_key: String::new(),
        }
    }
}

/// Environment variables read as settings; others with the prefix (e.g. test settings,
/// `TESSERA_MASTER_KEY`, which is read separately) are ignored.
const ENV_KEYS: &[&str] = &[
    "listen",
    "database_url",
    "database_max_connections",
    "database_acquire_timeout",
    "issuer",
    "master_key_file",
    "code_ttl",
    "session_ttl",
    "page_ttl",
    "max_body_bytes",
    "password_concurrency",
    "key_rotation_interval",
    "refresh_retry_window",
    "key_reload_interval",
    "audit_retention",
    "allow_user_clients",
    "header_read_timeout",
    "request_timeout",
    "shutdown_grace",
    "database_statement_timeout",
    "database_tls_mode",
    "database_tls_root_cert",
    "database_tls_client_cert",
    "database_tls_client_key",
];

pub struct Flags {
    pub config_file: Option<PathBuf>,
    pub listen: Option<String>,
    pub issuer: Option<String>,
    pub database_url: Option<String>,
}

pub fn load(flags: &Flags) -> Result<ServeConfig> {
    let mut builder = Config::builder().add_source(
        Config::try_from(&ServeConfig::default()).context("internal: default configuration")?,
    );
    if let Some(path) = &flags.config_file {
        if !path.exists() {
            return Err(anyhow!("config file {} does not exist", path.display()));
        }
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        builder = builder.add_source(File::from_str(&text, FileFormat::Toml));
    }
    let env: HashMap<String, String> = std::env::vars()
        .filter_map(|(k, v)| {
            let key = k.strip_prefix("TESSERA_")?.to_ascii_lowercase();
            ENV_KEYS.contains(&key.as_str()).then_some((key, v))
        })
        .collect();
    builder = builder.add_source(Environment::default().source(Some(env)).try_parsing(true));
    for (key, value) in [
        ("listen", &flags.listen),
        ("issuer", &flags.issuer),
        ("database_url", &flags.database_url),
    ] {
        if let Some(v) = value {
            builder = builder.set_override(key, v.as_str())?;
        }
    }
    let cfg: ServeConfig = builder
        .build()
        .and_then(|c| c.try_deserialize())
        .map_err(|e| anyhow!("invalid configuration: {e}"))?;
    Ok(cfg)
}

impl ServeConfig {
    /// Connection time limits; each must be at least one second.
    pub fn connection_limits(&self) -> Result<tessera_server::ConnectionLimits> {
        let secs = |name: &str, v: u64| {
            if v == 0 {
                Err(anyhow!(
                    "invalid configuration: {name} must be at least 1 second"
                ))
            } else {
                Ok(std::time::Duration::from_secs(v))
            }
        };
        Ok(tessera_server::ConnectionLimits {
            header_read_timeout: secs("header_read_timeout", self.header_read_timeout)?,
            request_timeout: secs("request_timeout", self.request_timeout)?,
            shutdown_grace: secs("shutdown_grace", self.shutdown_grace)?,
        })
    }

    /// Pool and TLS settings for a PostgreSQL store (ignored by SQLite).
    pub fn postgres_options(&self) -> Result<tessera_store_postgres::PostgresOptions> {
        let path = |p: &String| (!p.is_empty()).then(|| PathBuf::from(p));
        let mode = match self.database_tls_mode.as_str() {
            "" => None,
            m => Some(
                m.parse::<tessera_store_postgres::TlsMode>()
                    .map_err(|e| anyhow!("invalid configuration: {e}"))?,
            ),
        };
        Ok(tessera_store_postgres::PostgresOptions {
            max_connections: self.database_max_connections.max(1),
            acquire_timeout: std::time::Duration::from_secs(self.database_acquire_timeout.max(1)),
            schema: None,
            statement_timeout: std::time::Duration::from_secs(self.database_statement_timeout),
            tls: tessera_store_postgres::TlsOptions {
                mode,
                root_cert: path(&self.database_tls_root_cert),
                client_cert: path(&self.database_tls_client_cert),
                client_key: path(&self.database_tls_client_key),
            },
        })
    }

    /// The server settings, with the issuer derived from the bound address when unset.
    pub fn settings(&self, bound: std::net::SocketAddr) -> Result<Settings> {
        let issuer = if self.issuer.is_empty() {
            let host = if bound.ip().is_unspecified() {
                "127.0.0.1".to_owned()
            } else if bound.is_ipv6() {
                format!("[{}]", bound.ip())
            } else {
                bound.ip().to_string()
            };
            format!("http://{host}:{}", bound.port())
        } else {
            self.issuer.clone()
        };
        let settings = Settings {
            issuer,
            code_ttl: self.code_ttl,
            session_ttl: self.session_ttl,
            page_ttl: self.page_ttl,
            max_body_bytes: self.max_body_bytes,
            password_concurrency: self.password_concurrency,
            key_rotation_interval: self.key_rotation_interval,
            refresh_retry_window: self.refresh_retry_window,
            key_reload_interval: self.key_reload_interval,
            audit_retention: self.audit_retention,
            rate_limits: self.rate_limits.clone(),
            allow_user_clients: self.allow_user_clients,
        };
        settings
            .validate()
            .map_err(|e| anyhow!("invalid configuration: {e}"))?;
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn user_clients_are_allowed_unless_the_config_file_says_otherwise() {
        let bound: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let flags = |config_file| Flags {
            config_file,
            listen: None,
            issuer: None,
            database_url: None,
        };
        let defaults = load(&flags(None)).unwrap();
        assert!(defaults.settings(bound).unwrap().allow_user_clients);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tessera.toml");
        std::fs::write(&file, "allow_user_clients = false\n").unwrap();
        let off = load(&flags(Some(file))).unwrap();
        assert!(!off.settings(bound).unwrap().allow_user_clients);
    }
}
