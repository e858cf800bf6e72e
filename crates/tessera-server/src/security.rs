//! The security headers every response carries.

use axum::http::{header, HeaderMap, HeaderValue};

/// Pages load only our own CSS and scripts; nothing may frame them (clickjacking,
/// RFC 6749 §10.13). `form-action` is left out on purpose: browsers apply it to the
/// redirect that follows a form post, which would block the redirect to the client.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// Adds the security headers to a response (handlers may have set their own CSP or
/// cache policy, which are kept).
pub fn apply_headers(h: &mut HeaderMap, https: bool) {
    // Room for all of them at once, rather than regrowing the map insert by insert.
    h.reserve(7);
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CONTENT_SECURITY_POLICY)
        .or_insert(HeaderValue::from_static(CSP));
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    if https {
        h.insert(
            header::STRICT_TRANSPORT_SECURITY,
            HeaderValue::from_static("max-age=31536000"),
        );
    }
}
