//! Sign-in, consent and sign-out pages (contract §3). Every form carries a CSRF token.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use tessera_core::authorize::AuthorizationRequest;
use tessera_core::model::{Consent, Session, DEFAULT_TENANT};
use tessera_core::params::Params;
use tessera_core::ErrorCode;
use tessera_crypto::SecretHash;

use super::authorize::{decide, issue_code, refuse, see_other, ConsentRequest};
use crate::audit::{record, Origin, Subject};
use crate::error::PageError;
use crate::extract::{page_field, PageForm, Query};
use crate::issue::{secret, SESSION_PREFIX};
use crate::limits::ClientIp;
use crate::pages::{describe_scope, render, ConsentPage, HomePage, LoginPage, LogoutPage};
use crate::session::{self, Csrf, SESSION_COOKIE};
use crate::AppState;

/// Only local paths may be a post-login destination (no open redirect, RFC 9700 §4.11).
fn safe_return_to(value: Option<&str>) -> Option<&str> {
    value.filter(|v| v.starts_with('/') && !v.starts_with("//") && !v.contains('\\'))
}

fn with_cookies(
    mut resp: Response,
    cookies: impl IntoIterator<Item = Option<HeaderValue>>,
) -> Response {
    for c in cookies.into_iter().flatten() {
        resp.headers_mut().append(header::SET_COOKIE, c);
    }
    resp
}

struct LoginView<'a> {
    request: Option<&'a str>,
    return_to: Option<&'a str>,
    error: Option<&'a str>,
    username: &'a str,
}

async fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    view: LoginView<'_>,
    status: StatusCode,
) -> Result<Response, PageError> {
    let (app, tenant) = match view.request {
        Some(blob) => {
            let req: AuthorizationRequest = session::open(state, Some(blob))?;
            let client = state.store().get_client(&req.client_id).await?;
            (client.map(|c| c.name), req.tenant)
        }
        None => (None, DEFAULT_TENANT.to_owned()),
    };
    let csrf = Csrf::ensure(headers);
    let page = LoginPage {
        csrf: &csrf.form_token(state),
        request: view.request,
        return_to: view.return_to,
        app_name: app.as_deref(),
        error: view.error,
        username: view.username,
        tenant: &tenant,
    };
    Ok(with_cookies(
        render(status, &page),
        [csrf.set_cookie(state)],
    ))
}

pub async fn login_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query,
) -> Result<Response, PageError> {
    let params = params.map_err(|e| PageError::bad_request(e.description))?;
    let view = LoginView {
        request: params.single("request").ok().flatten(),
        return_to: safe_return_to(params.single("return_to").ok().flatten()),
        error: None,
        username: "",
    };
    login_page(&state, &headers, view, StatusCode::OK).await
}

pub async fn login_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(ClientIp(ip)): Extension<ClientIp>,
    Extension(origin): Extension<Origin>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let field = |name| page_field(&form, name);
    Csrf::verify(&state, &headers, field("csrf_token")?)?;
    let blob = field("request")?;
    let return_to = safe_return_to(field("return_to")?);
    let request: Option<AuthorizationRequest> = match blob {
        Some(_) => Some(session::open(&state, blob)?),
        None => None,
    };
    let tenant = request
        .as_ref()
        .map(|r| r.tenant.as_str())
        .unwrap_or(DEFAULT_TENANT);
    let username = field("username")?.unwrap_or("");
    let password = field("password")?.unwrap_or("").to_owned();

    // Failures are counted per username *and* address, so a storm against one user slows
    // that pair only, never the user's own sign-in from elsewhere; and per address.
    let limits = &state.0.limits;
    let user_key = format!("login:{tenant}:{username}:{ip}");
    let ip_key = crate::limits::ip_key(ip);
    if limits.settings.enabled {
        let blocked = limits
            .login_per_user
            .blocked(&user_key)
            .or_else(|| limits.login_per_ip.blocked(&ip_key));
        if let Some(wait) = blocked {
            crate::metrics::event("rate_limited", "login");
            let subject = Subject {
                tenant: Some(tenant),
                detail: Some(format!("username={username}")),
                ..Default::default()
            };
            record(&state, &origin, "rate_limit.hit", subject).await;
            return Ok(crate::error::too_many_page(wait));
        }
    }
    let user = state.store().find_user(tenant, username).await?;
    let verified = verify_password(
        &state,
        password,
        user.as_ref().map(|u| u.password_hash.clone()),
    )
    .await?;
    let user = match (user, verified) {
        (Some(u), true) => u,
        _ => {
            let subject = Subject {
                tenant: Some(tenant),
                detail: Some(format!("username={username}")),
                ..Default::default()
            };
            record(&state, &origin, "sign_in.failed", subject).await;
            if limits.settings.enabled {
                let store = &**state.store();
                let blocked = [
                    limits
                        .login_per_user
                        .charge_shared(store, &user_key, 1, state.now())
                        .await,
                    limits
                        .login_per_ip
                        .charge_shared(store, &ip_key, 1, state.now())
                        .await,
                ];
                if let Some(wait) = blocked.into_iter().flatten().max() {
                    crate::metrics::event("rate_limited", "login");
                    let subject = Subject {
                        tenant: Some(tenant),
                        detail: Some(format!("username={username}")),
                        ..Default::default()
                    };
                    record(&state, &origin, "rate_limit.hit", subject).await;
                    return Ok(crate::error::too_many_page(wait));
                }
            }
            let view = LoginView {
                request: blob,
                return_to,
                error: Some("Invalid username or password"),
                username,
            };
            return login_page(&state, &headers, view, StatusCode::OK).await;
        }
    };
    let subject = Subject {
        tenant: Some(tenant),
        actor: Some(&user.id),
        ..Default::default()
    };
    record(&state, &origin, "sign_in.succeeded", subject).await;

    // A new session id at every sign-in: no fixation of a pre-login cookie.
    if let Some(old) = session::cookie(&headers, SESSION_COOKIE) {
        state
            .store()
            .delete_session(SecretHash::of(old).as_bytes())
            .await?;
    }
    let now = state.now();
    let token = secret(SESSION_PREFIX).map_err(|e| PageError::bad_request(e.description))?;
    let new_session = Session {
        hash: SecretHash::of(&token).0,
        sid: tessera_crypto::random_id(16).map_err(|e| PageError::bad_request(e.to_string()))?,
        user_id: user.id.clone(),
        tenant: user.tenant.clone(),
        auth_time: now,
        expires_at: now + state.settings().session_ttl,
    };
    state.store().create_session(&new_session).await?;
    let cookie = session::set_cookie(&state, SESSION_COOKIE, &token, state.settings().session_ttl);

    let resp = match request {
        Some(request) => {
            let client = state
                .store()
                .get_client(&request.client_id)
                .await?
                .ok_or_else(|| PageError::bad_request("The application no longer exists."))?;
            decide(
                &state,
                &client,
                request,
                Some((new_session, user)),
                true,
                true,
            )
            .await?
        }
        None => see_other(return_to.unwrap_or("/")),
    };
    Ok(with_cookies(resp, [Some(cookie)]))
}

pub async fn consent_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query,
) -> Result<Response, PageError> {
    let params = params.map_err(|e| PageError::bad_request(e.description))?;
    let blob = params.single("request").ok().flatten();
    let pending: ConsentRequest = session::open(&state, blob)?;
    let (_, user) = signed_in_as(&state, &headers, &pending.user_id).await?;
    let client = state
        .store()
        .get_client(&pending.request.client_id)
        .await?
        .ok_or_else(|| PageError::bad_request("The application no longer exists."))?;
    let csrf = Csrf::ensure(&headers);
    let redirect_host = url::Url::parse(&pending.request.redirect_uri)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_else(|| pending.request.redirect_uri.clone());
    let page = ConsentPage {
        csrf: &csrf.form_token(&state),
        request: blob.unwrap_or(""),
        app_name: &client.name,
        username: &user.username,
        permissions: pending
            .request
            .scope
            .iter()
            .map(|s| (s.to_owned(), describe_scope(s)))
            .collect(),
        audiences: &pending.request.audiences,
        redirect_host,
    };
    Ok(with_cookies(
        render(StatusCode::OK, &page),
        [csrf.set_cookie(&state)],
    ))
}

/// The session of the user a pending consent belongs to; anyone else is refused.
async fn signed_in_as(
    state: &AppState,
    headers: &HeaderMap,
    user_id: &str,
) -> Result<(Session, tessera_core::model::User), PageError> {
    match session::current(state, headers).await? {
        Some((s, u)) if u.id == user_id => Ok((s, u)),
        _ => Err(PageError::forbidden(
            "Your session has ended or belongs to another user. Return to the application and sign in again.",
        )),
    }
}

pub async fn consent_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let field = |name| page_field(&form, name);
    Csrf::verify(&state, &headers, field("csrf_token")?)?;
    let pending: ConsentRequest = session::open(&state, field("request")?)?;
    let (session, user) = signed_in_as(&state, &headers, &pending.user_id).await?;
    let request = pending.request;
    match field("decision")? {
        Some("allow") => {}
        Some("deny") => {
            let subject = Subject {
                tenant: Some(&request.tenant),
                actor: Some(&user.id),
                client_id: Some(&request.client_id),
                detail: Some(format!("scope={}", request.scope)),
            };
            record(&state, &origin, "consent.denied", subject).await;
            return Ok(refuse(
                &state,
                &request,
                ErrorCode::AccessDenied,
                "the user denied the request",
                true,
            ));
        }
        _ => return Err(PageError::bad_request("Choose Allow or Deny.")),
    }
    if state
        .store()
        .get_client(&request.client_id)
        .await?
        .is_none()
    {
        return Err(PageError::bad_request("The application no longer exists."));
    }
    // Remember the union, so that a later request for fewer scopes needs no new consent.
    let previous = state
        .store()
        .get_consent(&user.id, &request.client_id)
        .await?;
    let scope = previous
        .map(|c| c.scope.union(&request.scope))
        .unwrap_or_else(|| request.scope.clone());
    state
        .store()
        .save_consent(&Consent {
            user_id: user.id.clone(),
            client_id: request.client_id.clone(),
            scope,
            granted_at: state.now(),
        })
        .await?;
    let subject = Subject {
        tenant: Some(&request.tenant),
        actor: Some(&user.id),
        client_id: Some(&request.client_id),
        detail: Some(format!("scope={}", request.scope)),
    };
    record(&state, &origin, "consent.given", subject).await;
    issue_code(&state, &request, &session, &user, true).await
}

/// Where to send the browser after an RP-initiated logout (OIDC RP-Initiated Logout §2).
#[derive(serde::Serialize, serde::Deserialize)]
struct LogoutRequest {
    redirect: String,
    state: Option<String>,
}

/// Validates `post_logout_redirect_uri` against the registration of the client named by
/// `id_token_hint` (signed by us) or `client_id`. An unregistered URI is never followed.
async fn logout_request(
    state: &AppState,
    params: &Params,
) -> Result<Option<LogoutRequest>, PageError> {
    let field = |name| page_field(params, name);
    let Some(redirect) = field("post_logout_redirect_uri")? else {
        return Ok(None);
    };
    let hinted = match field("id_token_hint")? {
        Some(hint) => {
            let claims =
                tessera_crypto::jose::verify_jwt(hint, &state.key_ring().verifiers(state.now()))
                    .filter(|c| {
                        c.get("iss").and_then(|i| i.as_str())
                            == Some(state.settings().issuer.as_str())
                    })
                    .ok_or_else(|| {
                        PageError::bad_request("The id_token_hint was not issued by this server.")
                    })?;
            claims
                .get("aud")
                .and_then(|a| a.as_str())
                .map(str::to_owned)
        }
        None => None,
    };
    let client_id = match (hinted, field("client_id")?) {
        (Some(h), Some(c)) if h != c => {
            return Err(PageError::bad_request(
                "client_id does not match the id_token_hint.",
            ))
        }
        (Some(h), _) => h,
        (None, Some(c)) => c.to_owned(),
        (None, None) => {
            return Err(PageError::bad_request(
                "post_logout_redirect_uri needs an id_token_hint or a client_id.",
            ))
        }
    };
    let client = state.store().get_client(&client_id).await?;
    let registered =
        client.is_some_and(|c| c.post_logout_redirect_uris.iter().any(|u| u == redirect));
    if !registered {
        return Err(PageError::bad_request(
            "The post_logout_redirect_uri is not registered for this application.",
        ));
    }
    Ok(Some(LogoutRequest {
        redirect: redirect.to_owned(),
        state: field("state")?.map(str::to_owned),
    }))
}

fn after_logout(request: &LogoutRequest) -> Response {
    let mut url = match url::Url::parse(&request.redirect) {
        Ok(u) => u,
        Err(_) => return PageError::bad_request("invalid redirect").into_response(),
    };
    if let Some(s) = &request.state {
        url.query_pairs_mut().append_pair("state", s);
    }
    see_other(url.as_str())
}

pub async fn logout_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query,
) -> Result<Response, PageError> {
    let params = params.map_err(|e| PageError::bad_request(e.description))?;
    let request = logout_request(&state, &params).await?;
    let current = session::current(&state, &headers).await?;
    if current.is_none() {
        if let Some(r) = &request {
            return Ok(after_logout(r));
        }
    }
    let blob = request.as_ref().map(|r| session::sign(&state, r));
    let csrf = Csrf::ensure(&headers);
    let username = current
        .as_ref()
        .map(|(_, u)| u.username.as_str())
        .unwrap_or("");
    let page = LogoutPage {
        csrf: &csrf.form_token(&state),
        request: blob.as_deref(),
        username,
        signed_out: current.is_none(),
    };
    Ok(with_cookies(
        render(StatusCode::OK, &page),
        [csrf.set_cookie(&state)],
    ))
}

pub async fn logout_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let field = |name| page_field(&form, name);
    Csrf::verify(&state, &headers, field("csrf_token")?)?;
    let request: Option<LogoutRequest> = match field("logout_request")? {
        Some(blob) => Some(session::open(&state, Some(blob))?),
        None => None,
    };
    if let Some(secret) = session::cookie(&headers, SESSION_COOKIE) {
        state
            .store()
            .delete_session(SecretHash::of(secret).as_bytes())
            .await?;
    }
    let clear = Some(session::clear_cookie(&state, SESSION_COOKIE));
    if let Some(r) = request {
        return Ok(with_cookies(after_logout(&r), [clear]));
    }
    let page = LogoutPage {
        csrf: "",
        request: None,
        username: "",
        signed_out: true,
    };
    Ok(with_cookies(render(StatusCode::OK, &page), [clear]))
}

pub async fn home(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, PageError> {
    let current = session::current(&state, &headers).await?;
    let page = HomePage {
        username: current.as_ref().map(|(_, u)| u.username.as_str()),
    };
    Ok(render(StatusCode::OK, &page).into_response())
}

/// Verifies a password on a blocking thread, at most `password_concurrency` at once.
/// Unknown users are checked against a dummy hash so timing does not reveal them.
async fn verify_password(
    state: &AppState,
    password: String,
    phc: Option<String>,
) -> Result<bool, PageError> {
    let _permit = state
        .0
        .password_slots
        .acquire()
        .await
        .map_err(|_| PageError::bad_request("server is shutting down"))?;
    let passwords = state.0.passwords.clone();
    tokio::task::spawn_blocking(move || match phc {
        Some(phc) => passwords.verify(&password, &phc),
        None => {
            passwords.verify_dummy(&password);
            false
        }
    })
    .await
    .map_err(|_| PageError::bad_request("internal error"))
}
