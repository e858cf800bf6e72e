//! The server's typed settings, validated once and passed explicitly.

use serde::{Deserialize, Serialize};

/// Audit events are kept 90 days unless configured otherwise.
pub const DEFAULT_AUDIT_RETENTION: i64 = 90 * 24 * 3600;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// The issuer identifier (RFC 8414 §2); every URL the server advertises derives from it.
    pub issuer: String,
    /// Lifetime of authorization codes in seconds (contract §4: 300).
    pub code_ttl: i64,
    /// Lifetime of the SSO session in seconds.
    pub session_ttl: i64,
    /// How long a login or consent page stays valid, in seconds.
    pub page_ttl: i64,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Argon2 verifications running at once; more wait their turn.
    pub password_concurrency: usize,
    /// Rotate signing keys automatically when the newest is this old (seconds; 0: only
    /// by `tessera keys rotate`).
    pub key_rotation_interval: i64,
    /// Abuse limits (HTTP 429 with Retry-After).
    pub rate_limits: crate::limits::RateLimitSettings,
    /// Seconds during which a just-rotated refresh token presented again returns the same
    /// successor (a client that lost the response retries) instead of revoking the
    /// family. 0, the default, keeps the strict rule: any reuse kills the chain.
    pub refresh_retry_window: i64,
    /// How often each node re-reads the signing keys from the store (seconds), so keys
    /// rotated on another node are published here within this bound.
    pub key_reload_interval: u64,
    /// Seconds audit events are kept; the janitor deletes older ones (0: forever).
    pub audit_retention: i64,
    /// Whether signed-in users may register OAuth clients of their own on `/settings/api`.
    pub allow_user_clients: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            issuer: "http://127.0.0.1:8080".into(),
            code_ttl: tessera_core::model::DEFAULT_CODE_TTL,
            session_ttl: 24 * 3600,
            page_ttl: 3600,
            max_body_bytes: 64 * 1024,
            password_concurrency: 2,
            key_rotation_interval: 0,
            rate_limits: crate::limits::RateLimitSettings::default(),
            refresh_retry_window: 0,
            key_reload_interval: 30,
            audit_retention: DEFAULT_AUDIT_RETENTION,
            allow_user_clients: true,
        }
    }
}

impl Settings {
    /// Checks the settings once at start; the message names the bad setting.
    pub fn validate(&self) -> Result<(), String> {
        let url = url::Url::parse(&self.issuer)
            .map_err(|e| format!("issuer {:?} is not a URL: {e}", self.issuer))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("issuer {:?} must be an http(s) URL", self.issuer));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!(
                "issuer {:?} must not have a query or fragment (RFC 8414 §2)",
                self.issuer
            ));
        }
        if !(10..=3600).contains(&self.code_ttl) {
            return Err("code_ttl must be between 10 and 3600 seconds".into());
        }
        if self.session_ttl < 60 {
            return Err("session_ttl must be at least 60 seconds".into());
        }
        if self.page_ttl < 60 {
            return Err("page_ttl must be at least 60 seconds".into());
        }
        if self.max_body_bytes < 1024 {
            return Err("max_body_bytes must be at least 1024".into());
        }
        if self.key_rotation_interval != 0 && self.key_rotation_interval < 3600 {
            return Err("key_rotation_interval must be 0 (off) or at least 3600 seconds".into());
        }
        self.rate_limits.validate()?;
        if !(0..=300).contains(&self.refresh_retry_window) {
            return Err("refresh_retry_window must be between 0 (off) and 300 seconds".into());
        }
        if self.audit_retention != 0 && self.audit_retention < 60 {
            return Err("audit_retention must be 0 (keep forever) or at least 60 seconds".into());
        }
        if !(1..=300).contains(&self.key_reload_interval) {
            return Err("key_reload_interval must be between 1 and 300 seconds".into());
        }
        if self.password_concurrency == 0 {
            return Err("password_concurrency must be at least 1".into());
        }
        Ok(())
    }

    /// Cookies get `Secure` when the issuer is served over https.
    pub fn secure_cookies(&self) -> bool {
        self.issuer.starts_with("https://")
    }

    /// The issuer without a trailing slash, for building endpoint URLs.
    pub fn base_url(&self) -> &str {
        self.issuer.trim_end_matches('/')
    }
}
