//! Server-rendered pages (askama, autoescaped). Labels are part of the contract (§3).

use askama::Template;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage<'a> {
    pub csrf: &'a str,
    pub request: Option<&'a str>,
    pub return_to: Option<&'a str>,
    pub app_name: Option<&'a str>,
    pub error: Option<&'a str>,
    pub username: &'a str,
    pub tenant: &'a str,
}

#[derive(Template)]
#[template(path = "consent.html")]
pub struct ConsentPage<'a> {
    pub csrf: &'a str,
    pub request: &'a str,
    pub app_name: &'a str,
    pub username: &'a str,
    pub permissions: Vec<(String, &'static str)>,
    pub audiences: &'a [String],
    pub redirect_host: String,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    title: &'a str,
    message: &'a str,
}

#[derive(Template)]
#[template(path = "form_post.html")]
pub struct FormPostPage<'a> {
    pub action: &'a str,
    pub fields: &'a [(String, String)],
}

#[derive(Template)]
#[template(path = "logout.html")]
pub struct LogoutPage<'a> {
    pub csrf: &'a str,
    /// Signed RP-initiated logout request (where to go afterwards).
    pub request: Option<&'a str>,
    pub username: &'a str,
    pub signed_out: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub struct HomePage<'a> {
    pub username: Option<&'a str>,
}

/// What a scope lets the application do, in words a person understands.
pub fn describe_scope(scope: &str) -> &'static str {
    match scope {
        "openid" => "Know who you are (your account identifier)",
        "profile" => "See your name and username",
        "email" => "See your email address",
        "offline_access" => "Keep access while you are away (long-lived refresh)",
        _ => "Access granted under this permission",
    }
}

/// Renders a page with `status`; a template failure becomes a plain 500.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    }
}

pub fn error_page(status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &ErrorPage { title, message })
}

pub const CSS: &str = include_str!("../static/tessera.css");
pub const FORM_POST_JS: &str = include_str!("../static/form_post.js");

pub fn static_asset(body: &'static str, content_type: &'static str) -> Response {
    let mut resp = body.into_response();
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=3600"),
    );
    resp
}
