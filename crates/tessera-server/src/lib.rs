//! The HTTP layer of Tessera: routes, extractors, pages, sessions, CSRF and the one
//! mapping from errors to responses ([`error`]). Protocol rules live in `tessera-core`;
//! handlers here parse, call core with typed values and `now`, and persist via the store.

pub mod admin;
pub mod audit;
pub mod clock;
pub mod config;
mod connections;
mod envelope;
pub mod error;
mod extract;
mod issue;
pub mod janitor;
pub mod keys;
pub mod limits;
mod metrics;
mod pages;
mod request_log;
mod routes;
mod security;
pub mod self_service;
mod session;
mod state;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::Settings;
pub use connections::ConnectionLimits;
pub use request_log::LogFormat;
pub use state::{sealer, AppState};

use std::future::Future;

use axum::Router;
use tokio::net::TcpListener;

/// The whole application: every route with its middleware.
pub fn router(state: AppState) -> Router {
    routes::router(state)
}

/// Serves `router(state)` on `listener` until `shutdown` resolves, then finishes the
/// requests in flight.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, state, shutdown, ConnectionLimits::default()).await
}

/// [`serve`] with explicit connection time limits (slow clients, shutdown grace).
pub async fn serve_with(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
    limits: ConnectionLimits,
) -> std::io::Result<()> {
    let reloader = {
        let state = state.clone();
        tokio::spawn(async move {
            let every = std::time::Duration::from_secs(state.settings().key_reload_interval);
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Err(e) = keys::rotate_if_due(&state).await {
                    tracing::error!(error = %e, "automatic key rotation failed");
                }
                if let Err(e) = state.reload_keys().await {
                    tracing::error!(error = %e, "reloading signing keys failed");
                }
            }
        })
    };
    let janitor = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(60));
            loop {
                tick.tick().await;
                match janitor::sweep(
                    &**state.store(),
                    state.now(),
                    state.settings().audit_retention,
                )
                .await
                {
                    Ok(p) if p.total() > 0 => tracing::info!(pruned = ?p, "janitor pass"),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "janitor pass failed"),
                }
            }
        })
    };
    let app = router(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        limits.request_timeout,
    ));
    let result = connections::serve(listener, app, shutdown, limits).await;
    reloader.abort();
    janitor.abort();
    // Awaiting the aborted tasks drops their state, so the store can close once the
    // caller drops its own handle.
    let _ = reloader.await;
    let _ = janitor.await;
    result
}
