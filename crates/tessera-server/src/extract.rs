//! Extractors that turn requests into core's [`Params`], with OAuth errors for malformed
//! input instead of framework rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use tessera_core::params::Params;
use tessera_core::OAuthError;

use crate::error::{ApiError, PageError};

async fn read_form<S: Send + Sync>(
    req: Request,
    state: &S,
) -> Result<Params, (StatusCode, OAuthError)> {
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("application/x-www-form-urlencoded")
        })
        .unwrap_or(false);
    if !is_form {
        return Err((
            StatusCode::BAD_REQUEST,
            OAuthError::invalid_request("the body must be application/x-www-form-urlencoded"),
        ));
    }
    let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
        let status = rejection.status();
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            (
                status,
                OAuthError::invalid_request("the request body is too large"),
            )
        } else {
            (
                StatusCode::BAD_REQUEST,
                OAuthError::invalid_request("unreadable request body"),
            )
        }
    })?;
    Params::parse(&bytes).map_err(|e| (StatusCode::BAD_REQUEST, e))
}

/// A form body for the JSON endpoints.
pub struct Form(pub Params);

impl<S: Send + Sync> FromRequest<S> for Form {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match read_form(req, state).await {
            Ok(p) => Ok(Form(p)),
            Err((StatusCode::BAD_REQUEST, e)) => Err(ApiError::OAuth(e)),
            Err((status, e)) => Err(ApiError::Status(status, e)),
        }
    }
}

/// A form body posted from one of our pages.
pub struct PageForm(pub Params);

impl<S: Send + Sync> FromRequest<S> for PageForm {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        read_form(req, state)
            .await
            .map(PageForm)
            .map_err(|(status, e)| PageError {
                status,
                title: "This request cannot be completed",
                message: e.description,
            })
    }
}

/// One field of a posted page form; a repeated field is a bad request.
pub fn page_field<'a>(form: &'a Params, name: &str) -> Result<Option<&'a str>, PageError> {
    form.single(name)
        .map_err(|e| PageError::bad_request(e.description))
}

/// The query string as [`Params`]; malformed queries are reported by the handler, which
/// knows whether to answer with a page or JSON.
pub struct Query(pub Result<Params, OAuthError>);

impl<S: Send + Sync> FromRequestParts<S> for Query {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        Ok(Query(Params::parse(
            parts.uri.query().unwrap_or("").as_bytes(),
        )))
    }
}

/// Reads one header as text; a non-text value counts as absent.
pub fn header_str<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}
