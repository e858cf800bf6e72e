//! Discovery, health and static assets.

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::pages::{static_asset, CSS, FORM_POST_JS};
use crate::AppState;

pub async fn discovery(State(state): State<AppState>) -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
        ],
        state.0.discovery.clone(),
    )
        .into_response()
}

/// RFC 7517 key set: pending, active and retired keys, each with `kid`, `use`, `alg`.
pub async fn jwks(State(state): State<AppState>) -> Response {
    static CACHE_CONTROL: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    let cache_control = CACHE_CONTROL.get_or_init(|| {
        HeaderValue::from_str(&format!("public, max-age={}", crate::keys::JWKS_MAX_AGE))
            .unwrap_or_else(|_| HeaderValue::from_static("no-cache"))
    });
    let body = state.key_ring().jwks_json(state.now());
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ),
            (header::CACHE_CONTROL, cache_control.clone()),
        ],
        body,
    )
        .into_response()
}

pub async fn live() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

pub async fn ready(State(state): State<AppState>) -> Response {
    match state.store().ping().await {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "unavailable", "reason": "store unreachable"})),
            )
                .into_response()
        }
    }
}

pub async fn css() -> Response {
    static_asset(CSS, "text/css; charset=utf-8")
}

pub async fn form_post_js() -> Response {
    static_asset(FORM_POST_JS, "text/javascript; charset=utf-8")
}

pub async fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"error": "not_found", "error_description": "no such endpoint"})),
    )
        .into_response()
}
