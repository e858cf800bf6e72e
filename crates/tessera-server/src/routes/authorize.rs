//! The authorization endpoint and the decision it leads to: sign in, consent, or a code.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Extension;
use serde::{Deserialize, Serialize};
use tessera_core::authorize::{
    self, callback, error_fields, success_fields, AuthorizationRequest, Callback, ResponseMode,
    UntrustedRequest,
};
use tessera_core::client::Client;
use tessera_core::model::{AuthorizationCode, Grant, Session, User};
use tessera_core::params::Params;
use tessera_core::{ErrorCode, OAuthError};
use tessera_crypto::SecretHash;

use crate::error::PageError;
use crate::extract::{PageForm, Query};
use crate::issue::{new_grant_id, secret, CODE_PREFIX};
use crate::limits::ClientIp;
use crate::pages::{render, FormPostPage};
use crate::{session, AppState};

pub async fn get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(ip): Extension<ClientIp>,
    Query(params): Query,
) -> Response {
    if let Some(limited) = limit(&state, ip) {
        return limited;
    }
    authorize(&state, &headers, params, false)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// OIDC Core §3.1.2.1: the authorization endpoint accepts POST with a form body too.
pub async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(ip): Extension<ClientIp>,
    PageForm(params): PageForm,
) -> Response {
    if let Some(limited) = limit(&state, ip) {
        return limited;
    }
    authorize(&state, &headers, Ok(params), true)
        .await
        .unwrap_or_else(IntoResponse::into_response)
}

/// Authorization requests per source address.
fn limit(state: &AppState, ClientIp(ip): ClientIp) -> Option<Response> {
    let limits = &state.0.limits;
    if !limits.settings.enabled {
        return None;
    }
    let wait = limits.authorize.request(&crate::limits::ip_key(ip))?;
    crate::metrics::event("rate_limited", "authorize");
    Some(crate::error::too_many_page(wait))
}

fn untrusted(e: UntrustedRequest) -> PageError {
    PageError::bad_request(e.to_string())
}

async fn authorize(
    state: &AppState,
    headers: &HeaderMap,
    params: Result<Params, OAuthError>,
    posted: bool,
) -> Result<Response, PageError> {
    let params = params.map_err(|e| PageError::bad_request(e.description))?;
    let client_id = authorize::client_id(&params).map_err(untrusted)?;
    let client = state
        .store()
        .get_client(client_id)
        .await?
        .ok_or_else(|| untrusted(UntrustedRequest::UnknownClient))?;
    let (redirect_uri, sent) =
        authorize::trusted_redirect_uri(&params, &client).map_err(untrusted)?;
    // From here on the redirect URI is trusted: errors go back to the client.
    let request = match authorize::validate(&params, &client, redirect_uri.clone(), sent) {
        Ok(r) => r,
        Err(e) => {
            return Ok(respond(
                state,
                &redirect_uri,
                e.response_mode,
                error_fields(&e.error, e.state.as_deref(), &state.settings().issuer),
                posted,
            ))
        }
    };
    let current = session::current(state, headers).await?;
    decide(state, &client, request, current, false, posted).await
}

/// Where the request goes next, given who is signed in. `fresh_login` is set right after
/// the user signed in for this very request, which satisfies `prompt=login`/`max_age`.
pub(crate) async fn decide(
    state: &AppState,
    client: &Client,
    request: AuthorizationRequest,
    current: Option<(Session, User)>,
    fresh_login: bool,
    posted: bool,
) -> Result<Response, PageError> {
    let now = state.now();
    let current = current.filter(|(s, _)| s.tenant == request.tenant);
    let needs_login = match &current {
        None => true,
        Some((s, _)) => {
            !fresh_login
                && (request.prompt.login || request.max_age.is_some_and(|m| now - s.auth_time > m))
        }
    };
    if needs_login {
        if request.prompt.none {
            return Ok(refuse(
                state,
                &request,
                ErrorCode::LoginRequired,
                "the user is not signed in",
                posted,
            ));
        }
        let blob = session::sign(state, &request);
        return Ok(see_other(&format!("/login?request={}", urlencode(&blob))));
    }
    let Some((session, user)) = current else {
        return Err(PageError::bad_request("no session"));
    };
    if needs_consent(state, client, &request, &user).await? {
        if request.prompt.none {
            return Ok(refuse(
                state,
                &request,
                ErrorCode::ConsentRequired,
                "the user has not consented",
                posted,
            ));
        }
        let blob = session::sign(
            state,
            &ConsentRequest {
                request,
                user_id: user.id,
            },
        );
        return Ok(see_other(&format!("/consent?request={}", urlencode(&blob))));
    }
    issue_code(state, &request, &session, &user, posted).await
}

async fn needs_consent(
    state: &AppState,
    client: &Client,
    request: &AuthorizationRequest,
    user: &User,
) -> Result<bool, PageError> {
    if client.skip_consent {
        return Ok(false);
    }
    if request.prompt.consent {
        return Ok(true);
    }
    let remembered = state.store().get_consent(&user.id, &client.id).await?;
    Ok(!remembered.is_some_and(|c| c.covers(&request.scope)))
}

/// The authorization request awaiting the consent of `user_id`.
#[derive(Serialize, Deserialize)]
pub(crate) struct ConsentRequest {
    pub request: AuthorizationRequest,
    pub user_id: String,
}

/// Stores a fresh code bound to client, redirect URI, PKCE challenge, nonce, user and
/// tenant (contract §4), and sends it to the client.
pub(crate) async fn issue_code(
    state: &AppState,
    request: &AuthorizationRequest,
    session: &Session,
    user: &User,
    posted: bool,
) -> Result<Response, PageError> {
    let now = state.now();
    let internal = |e: OAuthError| PageError::bad_request(e.description);
    let code = secret(CODE_PREFIX).map_err(internal)?;
    let record = AuthorizationCode {
        hash: SecretHash::of(&code).0,
        grant: Grant {
            id: new_grant_id().map_err(internal)?,
            client_id: request.client_id.clone(),
            user_id: Some(user.id.clone()),
            tenant: Some(request.tenant.clone()),
            scope: request.scope.clone(),
            audiences: request.audiences.clone(),
            auth_time: Some(session.auth_time),
            sid: Some(session.sid.clone()),
            created_at: now,
        },
        redirect_uri: request.redirect_uri.clone(),
        redirect_uri_sent: request.redirect_uri_sent,
        nonce: request.nonce.clone(),
        code_challenge: request.code_challenge.clone(),
        expires_at: now + state.settings().code_ttl,
        used: false,
    };
    state.store().insert_code(&record).await?;
    Ok(respond(
        state,
        &request.redirect_uri,
        request.response_mode,
        success_fields(&code, request, &state.settings().issuer),
        posted,
    ))
}

/// An error response to the trusted redirect URI of `request`.
pub(crate) fn refuse(
    state: &AppState,
    request: &AuthorizationRequest,
    code: ErrorCode,
    description: &str,
    posted: bool,
) -> Response {
    let err = OAuthError::new(code, description);
    respond(
        state,
        &request.redirect_uri,
        request.response_mode,
        error_fields(&err, request.state.as_deref(), &state.settings().issuer),
        posted,
    )
}

/// Sends the authorization response in the requested mode. After a form post the redirect
/// is 303 so the browser does not re-post (RFC 9700 §4.12).
fn respond(
    state: &AppState,
    redirect_uri: &str,
    mode: ResponseMode,
    fields: Vec<(String, String)>,
    posted: bool,
) -> Response {
    let _ = state;
    match callback(redirect_uri, mode, fields) {
        Ok(Callback::Redirect(url)) if posted => Redirect::to(&url).into_response(),
        Ok(Callback::Redirect(url)) => found(&url),
        Ok(Callback::FormPost { action, fields }) => render(
            StatusCode::OK,
            &FormPostPage {
                action: &action,
                fields: &fields,
            },
        ),
        Err(e) => PageError::bad_request(e.description).into_response(),
    }
}

fn found(url: &str) -> Response {
    match HeaderValue::from_str(url) {
        Ok(v) => (StatusCode::FOUND, [(header::LOCATION, v)]).into_response(),
        Err(_) => PageError::bad_request("invalid redirect").into_response(),
    }
}

pub(crate) fn see_other(url: &str) -> Response {
    Redirect::to(url).into_response()
}

pub(crate) fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
