//! The audit trail: every security-relevant event is appended to the store (durable
//! before the response, like the grant it describes) and logged under target `audit`.
//! Events carry ids, names and addresses, never a secret.
//!
//! Routine successes that come at request rate (a token issued or refreshed) are logged
//! at debug, the rest at info: as Keycloak logs its successful events at debug and its
//! errors at warn. Every one of them is in the store either way (`tessera audit`); an
//! operator who wants them in the log too sets `RUST_LOG=info,audit=debug`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use tessera_core::model::AuditEvent;

use crate::AppState;

/// Identifies one request in logs and audit events; also sent as `X-Request-Id`. Written
/// as a per-process random prefix and a counter: unique, cheap, unguessable enough for
/// correlation (it is not a secret). A number until written, so that a request whose
/// log lines never name it does not format it twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64);

impl RequestId {
    pub fn next() -> RequestId {
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        RequestId(COUNTER.fetch_add(1, Ordering::Relaxed))
    }
}

impl std::fmt::Display for RequestId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        static PREFIX: OnceLock<String> = OnceLock::new();
        let prefix = PREFIX.get_or_init(|| tessera_crypto::random_id(6).unwrap_or_default());
        write!(f, "{prefix}-{}", self.0)
    }
}

/// Where a request came from, for audit events.
#[derive(Debug, Clone, Default)]
pub struct Origin {
    pub ip: Option<IpAddr>,
    pub request_id: Option<String>,
}

/// The subject of an event.
#[derive(Debug, Default)]
pub struct Subject<'a> {
    pub tenant: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub client_id: Option<&'a str>,
    pub detail: Option<String>,
}

/// Records `kind` durably; a failing store is logged, never turned into a failed request
/// after the fact.
pub async fn record(state: &AppState, origin: &Origin, kind: &str, subject: Subject<'_>) {
    let event = event(state, origin, kind, subject);
    log(&event);
    if let Err(e) = state
        .store()
        .append_audit(std::slice::from_ref(&event))
        .await
    {
        tracing::error!(error = %e, kind, "audit event could not be stored");
    }
}

/// The event for `kind`, to be stored by the caller: token issuance puts it in the same
/// atomic store step as the tokens (`Issuance::audit`), so one commit covers both.
pub fn event(state: &AppState, origin: &Origin, kind: &str, subject: Subject<'_>) -> AuditEvent {
    AuditEvent {
        at: state.now(),
        kind: kind.to_owned(),
        tenant: subject.tenant.map(str::to_owned),
        actor: subject.actor.map(str::to_owned),
        client_id: subject.client_id.map(str::to_owned),
        ip: origin.ip.map(|ip| ip.to_string()),
        request_id: origin.request_id.clone(),
        detail: subject.detail,
    }
}

/// One audit line at `$level` (tracing's macros take the level as a constant).
macro_rules! audit_line {
    ($level:expr, $event:expr) => {
        tracing::event!(
            target: "audit",
            $level,
            kind = %$event.kind,
            tenant = $event.tenant.as_deref(),
            actor = $event.actor.as_deref(),
            client_id = $event.client_id.as_deref(),
            ip = $event.ip.as_deref(),
            request_id = $event.request_id.as_deref(),
            detail = $event.detail.as_deref(),
            "audit"
        )
    };
}

/// Logs a stored event under target `audit`.
pub fn log(event: &AuditEvent) {
    audit_line!(tracing::Level::INFO, event);
}

/// [`log`] at debug, for the events of routine successes (see the module comment): at
/// info, their lines were a sixteenth of a client-credentials request's instructions, and
/// a line per token at tens of thousands of tokens a second.
pub fn log_routine(event: &AuditEvent) {
    audit_line!(tracing::Level::DEBUG, event);
}
