//! TLS to PostgreSQL (rustls on aws-lc-rs). The modes are libpq's `sslmode` values, so the
//! URL form (`?sslmode=verify-full&sslrootcert=…`) and the settings mean the same; settings
//! given here override the URL's.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgSslMode};
use tessera_store::{StoreError, StoreResult};

use crate::map_err;

/// libpq's `sslmode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Plain TCP only.
    Disable,
    /// TLS when the server offers it, else plain (libpq's default).
    Prefer,
    /// TLS, without checking the server's certificate.
    Require,
    /// TLS with a certificate signed by a trusted root (`root_cert`, else the public roots).
    VerifyCa,
    /// As `VerifyCa`, and the certificate must name the host of the URL.
    VerifyFull,
}

impl FromStr for TlsMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(TlsMode::Disable),
            "prefer" => Ok(TlsMode::Prefer),
            "require" => Ok(TlsMode::Require),
            "verify-ca" => Ok(TlsMode::VerifyCa),
            "verify-full" => Ok(TlsMode::VerifyFull),
            other => Err(format!(
                "unknown database TLS mode {other:?}: use disable, prefer, require, verify-ca or verify-full"
            )),
        }
    }
}

impl TlsMode {
    fn ssl_mode(self) -> PgSslMode {
        match self {
            TlsMode::Disable => PgSslMode::Disable,
            TlsMode::Prefer => PgSslMode::Prefer,
            TlsMode::Require => PgSslMode::Require,
            TlsMode::VerifyCa => PgSslMode::VerifyCa,
            TlsMode::VerifyFull => PgSslMode::VerifyFull,
        }
    }
}

/// TLS settings of the database connection; `None` keeps what the URL says.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    pub mode: Option<TlsMode>,
    /// PEM file of the roots that sign the server's certificate (`verify-ca`/`verify-full`).
    pub root_cert: Option<PathBuf>,
    /// PEM certificate and key presented to the server (`clientcert=` in `pg_hba.conf`).
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
}

fn read_pem(what: &str, path: &Path) -> StoreResult<Vec<u8>> {
    std::fs::read(path).map_err(|e| {
        StoreError::Internal(format!(
            "cannot read the database TLS {what} {}: {e}",
            path.display()
        ))
    })
}

impl TlsOptions {
    /// `options` with these settings applied. The files are read now, so that a wrong path
    /// fails at start with its name rather than at every connection.
    pub(crate) fn apply(&self, mut options: PgConnectOptions) -> StoreResult<PgConnectOptions> {
        if self.client_cert.is_some() != self.client_key.is_some() {
            return Err(StoreError::Internal(
                "database TLS: a client certificate needs its key and a key its certificate".into(),
            ));
        }
        if let Some(mode) = self.mode {
            options = options.ssl_mode(mode.ssl_mode());
        }
        if let Some(path) = &self.root_cert {
            options = options.ssl_root_cert_from_pem(read_pem("root certificate", path)?);
        }
        if let Some(path) = &self.client_cert {
            options = options.ssl_client_cert_from_pem(read_pem("client certificate", path)?);
        }
        if let Some(path) = &self.client_key {
            options = options.ssl_client_key_from_pem(read_pem("client key", path)?);
        }
        Ok(options)
    }
}

/// The first connection's failure, saying so when it is the TLS handshake: rustls reports a
/// certificate it refuses as an I/O error of kind `InvalidData`, which alone reads like a
/// network fault.
pub(crate) fn explain(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::InvalidData => {
            StoreError::Unavailable(format!("TLS handshake with PostgreSQL failed: {io}"))
        }
        _ => map_err(e),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes_parse_as_libpq_spells_them() {
        assert_eq!("verify-full".parse::<TlsMode>(), Ok(TlsMode::VerifyFull));
        assert_eq!("disable".parse::<TlsMode>(), Ok(TlsMode::Disable));
        assert!("verify_full"
            .parse::<TlsMode>()
            .unwrap_err()
            .contains("verify-full"));
    }

    #[test]
    fn a_missing_file_is_named() {
        let tls = TlsOptions {
            root_cert: Some("/nonexistent/root.pem".into()),
            ..TlsOptions::default()
        };
        let url: PgConnectOptions = "postgres://u@localhost/db".parse().unwrap();
        let err = tls.apply(url).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/root.pem"), "{err}");
    }

    #[test]
    fn a_client_certificate_needs_its_key() {
        let tls = TlsOptions {
            client_cert: Some("/etc/hostname".into()),
            ..TlsOptions::default()
        };
        let url: PgConnectOptions = "postgres://u@localhost/db".parse().unwrap();
        assert!(tls.apply(url).is_err());
    }

    #[test]
    fn the_mode_overrides_the_url() {
        let tls = TlsOptions {
            mode: Some(TlsMode::Require),
            ..TlsOptions::default()
        };
        let url: PgConnectOptions = "postgres://u@localhost/db?sslmode=disable".parse().unwrap();
        assert!(matches!(
            tls.apply(url).unwrap().get_ssl_mode(),
            PgSslMode::Require
        ));
    }
}
