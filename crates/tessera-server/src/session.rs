//! SSO session cookies, CSRF tokens and the signed state carried through pages.

use axum::http::{HeaderMap, HeaderValue};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tessera_core::model::{Session, User};
use tessera_crypto::{b64url, b64url_decode, constant_time_eq, hmac_sha256, SecretHash};
use tessera_store::StoreError;

use crate::error::PageError;
use crate::AppState;

pub const SESSION_COOKIE: &str = "tessera_session";
pub const CSRF_COOKIE: &str = "tessera_csrf";

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// `HttpOnly; SameSite=Lax; Path=/`, plus `Secure` behind https.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.settings().secure_cookies() {
        "; Secure"
    } else {
        ""
    };
    let text = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}");
    HeaderValue::from_str(&text).unwrap_or_else(|_| HeaderValue::from_static(""))
}

pub fn clear_cookie(state: &AppState, name: &str) -> HeaderValue {
    set_cookie(state, name, "", 0)
}

/// The signed-in user, if the session cookie names a live session of an existing user.
pub async fn current(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<(Session, User)>, StoreError> {
    let Some(secret) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let hash = SecretHash::of(secret);
    let Some(session) = state.store().get_session(hash.as_bytes()).await? else {
        return Ok(None);
    };
    if session.expires_at <= state.now() {
        return Ok(None);
    }
    let user = state.store().get_user(&session.user_id).await?;
    Ok(user.map(|u| (session, u)))
}

/// The CSRF cookie of this browser, created when missing. Forms carry
/// HMAC(key, cookie); a cross-site page can neither read the cookie nor compute the MAC.
pub struct Csrf {
    cookie_value: String,
    is_new: bool,
}

impl Csrf {
    pub fn ensure(headers: &HeaderMap) -> Csrf {
        match cookie(headers, CSRF_COOKIE).filter(|v| v.len() >= 32) {
            Some(v) => Csrf {
                cookie_value: v.to_owned(),
                is_new: false,
            },
            None => Csrf {
                cookie_value: tessera_crypto::random_id(32).unwrap_or_default(),
                is_new: true,
            },
        }
    }

    pub fn form_token(&self, state: &AppState) -> String {
        b64url(&hmac_sha256(
            &state.0.csrf_key,
            &[self.cookie_value.as_bytes()],
        ))
    }

    /// The `Set-Cookie` to send when the cookie was just created.
    pub fn set_cookie(&self, state: &AppState) -> Option<HeaderValue> {
        self.is_new
            .then(|| set_cookie(state, CSRF_COOKIE, &self.cookie_value, 7 * 24 * 3600))
    }

    /// Checks the token posted with a form against this browser's cookie.
    pub fn verify(
        state: &AppState,
        headers: &HeaderMap,
        posted: Option<&str>,
    ) -> Result<(), PageError> {
        let refused = || {
            PageError::forbidden(
                "The form could not be verified (CSRF check failed). Go back, reload the page and try again.",
            )
        };
        let cookie_value = cookie(headers, CSRF_COOKIE).ok_or_else(refused)?;
        let posted = posted.ok_or_else(refused)?;
        let expected = b64url(&hmac_sha256(&state.0.csrf_key, &[cookie_value.as_bytes()]));
        if constant_time_eq(expected.as_bytes(), posted.as_bytes()) {
            Ok(())
        } else {
            Err(refused())
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    p: T,
    iat: i64,
}

/// Signs `payload` so that a page can carry it through the browser unaltered.
pub fn sign<T: Serialize>(state: &AppState, payload: &T) -> String {
    let json = serde_json::to_vec(&Envelope {
        p: payload,
        iat: state.now(),
    })
    .unwrap_or_default();
    let mac = hmac_sha256(&state.0.page_state_key, &[&json]);
    format!("{}.{}", b64url(&json), b64url(&mac))
}

/// Verifies and opens a blob made by [`sign`] that is younger than `page_ttl`.
pub fn open<T: DeserializeOwned>(state: &AppState, blob: Option<&str>) -> Result<T, PageError> {
    let invalid = || {
        PageError::bad_request("This sign-in request is invalid or has expired. Return to the application and start again.")
    };
    let (body, mac) = blob.and_then(|b| b.split_once('.')).ok_or_else(invalid)?;
    let json = b64url_decode(body).ok_or_else(invalid)?;
    let mac = b64url_decode(mac).ok_or_else(invalid)?;
    let expected = hmac_sha256(&state.0.page_state_key, &[&json]);
    if !constant_time_eq(&expected, &mac) {
        return Err(invalid());
    }
    let env: Envelope<T> = serde_json::from_slice(&json).map_err(|_| invalid())?;
    let age = state.now() - env.iat;
    if !(0..=state.settings().page_ttl).contains(&age) {
        return Err(invalid());
    }
    Ok(env.p)
}
