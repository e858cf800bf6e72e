//! The one place where errors become HTTP responses. Internal details are logged here and
//! never sent: clients see an RFC error code and a safe description.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tessera_core::{ErrorCode, OAuthError};
use tessera_store::StoreError;

/// Errors of the JSON endpoints (token, introspection, revocation, userinfo).
#[derive(Debug)]
pub enum ApiError {
    OAuth(OAuthError),
    /// RFC 6750 §3.1 errors at resource endpoints (userinfo).
    Bearer(OAuthError),
    /// A plain HTTP status with an OAuth-style body (e.g. 403 on a foreign tenant).
    Status(StatusCode, OAuthError),
    Store(StoreError),
    /// Too many failures from this address or for this client: 429 with `Retry-After`.
    RateLimited(std::time::Duration),
}

impl From<OAuthError> for ApiError {
    fn from(e: OAuthError) -> Self {
        ApiError::OAuth(e)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Store(e)
    }
}

/// HTTP status of a token-endpoint style error (RFC 6749 §5.2).
fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
        ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_REQUEST,
    }
}

fn body(e: &OAuthError) -> Json<serde_json::Value> {
    Json(json!({ "error": e.code.as_str(), "error_description": e.description }))
}

/// The protocol error a store failure is reported as; the details go to the log only.
pub fn store_failure(e: &StoreError) -> OAuthError {
    match e {
        StoreError::Unavailable(detail) => {
            tracing::error!(error = %detail, "store unavailable");
            OAuthError::new(
                ErrorCode::TemporarilyUnavailable,
                "the service is temporarily unavailable; retry later",
            )
        }
        other => {
            tracing::error!(error = %other, "store failure");
            OAuthError::server_error("internal error")
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, err, www) = match self {
            ApiError::OAuth(e) => {
                let www = (e.code == ErrorCode::InvalidClient)
                    .then(|| "Basic realm=\"tessera\"".to_owned());
                (status_of(e.code), e, www)
            }
            ApiError::Bearer(e) => {
                let www = format!(
                    "Bearer realm=\"tessera\", error=\"{}\", error_description=\"{}\"",
                    e.code.as_str(),
                    e.description.replace('"', "'")
                );
                (status_of(e.code), e, Some(www))
            }
            ApiError::Status(status, e) => (status, e, None),
            ApiError::Store(e) => {
                let err = store_failure(&e);
                (status_of(err.code), err, None)
            }
            ApiError::RateLimited(wait) => {
                let err = OAuthError::new(
                    ErrorCode::TemporarilyUnavailable,
                    "too many failed requests; retry later",
                );
                let mut resp = (StatusCode::TOO_MANY_REQUESTS, body(&err)).into_response();
                let h = resp.headers_mut();
                h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
                if let Ok(v) = HeaderValue::from_str(&crate::limits::retry_after(wait).to_string())
                {
                    h.insert(header::RETRY_AFTER, v);
                }
                return resp;
            }
        };
        let mut resp = (status, body(&err)).into_response();
        let headers = resp.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if let Some(v) = www.and_then(|w| HeaderValue::from_str(&w).ok()) {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        resp
    }
}

/// Errors shown to a person as a page (authorization endpoint before the redirect URI is
/// trusted, login, consent).
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub title: &'static str,
    pub message: String,
}

impl PageError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::BAD_REQUEST,
            title: "This request cannot be completed",
            message: message.into(),
        }
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        PageError {
            status: StatusCode::FORBIDDEN,
            title: "This request was refused",
            message: message.into(),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(e: StoreError) -> Self {
        let err = store_failure(&e);
        PageError {
            status: status_of(err.code),
            title: "Something went wrong",
            message: if err.code == ErrorCode::TemporarilyUnavailable {
                "The service is temporarily unavailable. Please try again in a moment.".into()
            } else {
                "An internal error occurred. Please try again.".into()
            },
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        crate::pages::error_page(self.status, self.title, &self.message)
    }
}

/// The page shown when a browser is rate limited (429 with `Retry-After`).
pub fn too_many_page(wait: std::time::Duration) -> Response {
    let secs = crate::limits::retry_after(wait);
    let mut resp = crate::pages::error_page(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        &format!("Too many attempts from here. Try again in {secs} seconds."),
    );
    if let Ok(v) = HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(header::RETRY_AFTER, v);
    }
    resp
}
