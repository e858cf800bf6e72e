//! Token introspection (RFC 7662), revocation (RFC 7009), and the user endpoints that
//! accept bearer tokens (OIDC UserInfo, `/v1/users/me`).

use crate::audit::{record, Origin, Subject};
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use serde_json::{json, Value};
use tessera_core::model::{AccessToken, RefreshToken, User};
use tessera_core::params::Params;
use tessera_core::{ErrorCode, OAuthError};
use tessera_crypto::SecretHash;

use super::{authenticate_client, present_client};
use crate::error::ApiError;
use crate::extract::{header_str, Form};
use crate::issue::{is_access_token, PERSONAL_TOKEN_PREFIX, REFRESH_PREFIX};
use crate::AppState;

/// RFC 7662 §2.2: what an active token's introspection says. Optional members are left
/// out, not sent as `null`. A typed body rather than a `json!` map: this is answered for
/// every introspection.
#[derive(serde::Serialize)]
struct Introspection<'a> {
    active: bool,
    token_type: &'static str,
    scope: String,
    client_id: &'a str,
    exp: i64,
    iat: i64,
    iss: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sub: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tenant: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    aud: Option<Audience<'a>>,
}

/// One audience as a string, several as an array (RFC 7519 §4.1.3).
#[derive(serde::Serialize)]
#[serde(untagged)]
enum Audience<'a> {
    One(&'a str),
    Many(&'a [String]),
}

fn audience(audiences: &[String]) -> Option<Audience<'_>> {
    match audiences {
        [] => None,
        [one] => Some(Audience::One(one)),
        many => Some(Audience::Many(many)),
    }
}

/// The token an introspection request presents, as read with its client.
enum Presented {
    Access(Option<AccessToken>),
    Refresh(Option<RefreshToken>),
    /// No token, or one that is none of ours: nothing to read.
    Unknown,
}

pub async fn introspect(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Form(params): Form,
) -> Result<Response, ApiError> {
    let caller = present_client(&state, &headers, &params, &origin).await?;
    let token = params.required("token");
    // The caller's client and the token, read together; nothing read is used before the
    // client is authenticated below.
    let store = state.store();
    let (client, presented) = match token {
        Ok(token) if is_access_token(token) => {
            let hash = SecretHash::of(token).0;
            let (client, at) = store
                .get_client_and_access_token(caller.client_id(), &hash)
                .await?;
            (client, Presented::Access(at))
        }
        Ok(token) if token.starts_with(REFRESH_PREFIX) => {
            let hash = SecretHash::of(token).0;
            let found = store
                .get_client_and_refresh_token(caller.client_id(), &hash)
                .await?;
            (found.client, Presented::Refresh(found.token))
        }
        _ => (
            store.get_client(caller.client_id()).await?,
            Presented::Unknown,
        ),
    };
    let client = caller.verify(&state, &origin, client).await?;
    // RFC 7662 §2.1: the caller must be authenticated; a public client is not.
    if client.public {
        return Err(
            OAuthError::invalid_client("introspection requires a confidential client").into(),
        );
    }
    let token = token?;
    params.single("token_type_hint")?;
    let now = state.now();
    let inactive = || Ok(no_store(Json(json!({"active": false})).into_response()));
    let issuer = &state.settings().issuer;
    match presented {
        Presented::Access(Some(at)) if at.is_active(now) => {
            note_personal_token_use(&state, token);
            let body = Introspection {
                active: true,
                token_type: "Bearer",
                scope: at.scope.to_string(),
                client_id: &at.client_id,
                exp: at.expires_at,
                iat: at.issued_at,
                iss: issuer,
                sub: at.user_id.as_deref(),
                tenant: at.tenant.as_deref(),
                aud: audience(&at.audiences),
            };
            Ok(no_store(Json(body).into_response()))
        }
        // Refresh tokens are credentials of their client only: others learn nothing.
        Presented::Refresh(Some(rt)) if rt.is_active(now) && rt.grant.client_id == client.id => {
            let user = rt.grant.user_id.as_deref();
            let body = Introspection {
                active: true,
                token_type: "refresh_token",
                scope: rt.grant.scope.to_string(),
                client_id: &rt.grant.client_id,
                exp: rt.expires_at,
                iat: rt.issued_at,
                iss: issuer,
                sub: user,
                // A refresh token's tenant is that of its user.
                tenant: user.and(rt.grant.tenant.as_deref()),
                aud: None,
            };
            Ok(no_store(Json(body).into_response()))
        }
        _ => inactive(),
    }
}

/// RFC 7009 §2: revokes a token of the calling client. Tokens of other clients and
/// unknown tokens are answered with 200 too (§2.2), revealing nothing.
pub async fn revoke(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Form(params): Form,
) -> Result<Response, ApiError> {
    let client = authenticate_client(&state, &headers, &params, &origin).await?;
    let token = params.required("token")?;
    params.single("token_type_hint")?;
    let now = state.now();
    let hash = SecretHash::of(token).0;
    if is_access_token(token) {
        if let Some(at) = state.store().get_access_token(&hash).await? {
            if at.client_id == client.id {
                state.store().revoke_access_token(&hash, now).await?;
                let subject = Subject {
                    tenant: at.tenant.as_deref(),
                    actor: Some(&client.id),
                    client_id: Some(&client.id),
                    detail: Some(format!("access_token grant_id={}", at.grant_id)),
                };
                record(&state, &origin, "token.revoked", subject).await;
            }
        }
    } else if token.starts_with(REFRESH_PREFIX) {
        if let Some(rt) = state.store().get_refresh_token(&hash).await? {
            // §2.1: revoking a refresh token revokes the access tokens of its grant too.
            if rt.grant.client_id == client.id {
                state.store().revoke_grant(&rt.grant.id, now).await?;
                let subject = Subject {
                    tenant: rt.grant.tenant.as_deref(),
                    actor: Some(&client.id),
                    client_id: Some(&client.id),
                    detail: Some(format!("refresh_token grant_id={}", rt.grant.id)),
                };
                record(&state, &origin, "token.revoked", subject).await;
                tracing::info!(client_id = %client.id, grant_id = %rt.grant.id, "refresh token revoked with its grant");
            }
        }
    }
    Ok(no_store(StatusCode::OK.into_response()))
}

fn no_store(mut resp: Response) -> Response {
    resp.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    resp
}

fn bearer_error(description: &str) -> ApiError {
    ApiError::Bearer(OAuthError::new(ErrorCode::InvalidToken, description))
}

/// RFC 6750 §2.1/§2.2: the token comes in the Authorization header or, for POST, the form
/// body, never both.
fn bearer_token<'a>(headers: &'a HeaderMap, form: Option<&'a Params>) -> Result<&'a str, ApiError> {
    let from_header = match header_str(headers, "authorization") {
        Some(h) => {
            let (scheme, token) = h
                .trim()
                .split_once(' ')
                .ok_or_else(|| bearer_error("malformed Authorization header"))?;
            if !scheme.eq_ignore_ascii_case("bearer") {
                return Err(bearer_error("use the Bearer scheme"));
            }
            Some(token.trim())
        }
        None => None,
    };
    let from_body = match form {
        Some(p) => p.single("access_token")?,
        None => None,
    };
    match (from_header, from_body) {
        (Some(_), Some(_)) => {
            Err(OAuthError::invalid_request("send the token in one place only").into())
        }
        (Some(t), None) | (None, Some(t)) => Ok(t),
        (None, None) => Err(bearer_error("a bearer token is required")),
    }
}

/// The live access token and its user.
async fn authorized_user(state: &AppState, token: &str) -> Result<(AccessToken, User), ApiError> {
    let invalid = || bearer_error("the access token is invalid, expired or revoked");
    if !is_access_token(token) {
        return Err(invalid());
    }
    let at = state
        .store()
        .get_access_token(&SecretHash::of(token).0)
        .await?
        .filter(|at| at.is_active(state.now()))
        .ok_or_else(invalid)?;
    note_personal_token_use(state, token);
    let user_id = at
        .user_id
        .clone()
        .ok_or_else(|| bearer_error("this access token does not represent a user"))?;
    let user = state
        .store()
        .get_user(&user_id)
        .await?
        .ok_or_else(invalid)?;
    Ok((at, user))
}

/// OIDC Core §5.3: `sub` always, other claims as the granted scopes allow.
fn userinfo_claims(at: &AccessToken, user: &User) -> Value {
    let mut claims = crate::issue::user_claims(user, &at.scope);
    claims.insert("sub".into(), json!(user.id));
    claims.insert("tenant".into(), json!(user.tenant));
    Value::Object(claims)
}

pub async fn userinfo_get(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let token = bearer_token(&headers, None)?;
    let (at, user) = authorized_user(&state, token).await?;
    Ok(no_store(Json(userinfo_claims(&at, &user)).into_response()))
}

pub async fn userinfo_post(
    State(state): State<AppState>,
    req: Request,
) -> Result<Response, ApiError> {
    let headers = req.headers().clone();
    // RFC 6750 §2.1: a POST may carry the token in the Authorization header alone, with no
    // body and so no Content-Type; only a form body is read for `access_token` (§2.2).
    let params = if headers.contains_key(axum::http::header::CONTENT_TYPE) {
        Some(Form::from_request(req, &state).await?.0)
    } else {
        None
    };
    let token = bearer_token(&headers, params.as_ref())?;
    let (at, user) = authorized_user(&state, token).await?;
    Ok(no_store(Json(userinfo_claims(&at, &user)).into_response()))
}

/// CATAPA's `/v1/users/me`: the `Tenant` header must name the token's tenant.
pub async fn users_me(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let tenant = header_str(&headers, "tenant")
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| OAuthError::invalid_request("the Tenant header is required"))?;
    let token = bearer_token(&headers, None)?;
    let (at, user) = authorized_user(&state, token).await?;
    if at.tenant.as_deref() != Some(tenant) {
        return Err(ApiError::Status(
            StatusCode::FORBIDDEN,
            OAuthError::new(
                ErrorCode::AccessDenied,
                "the token belongs to another tenant",
            ),
        ));
    }
    Ok(no_store(
        Json(json!({
            "id": user.id,
            "username": user.username,
            "name": user.name,
            "email": user.email,
            "tenant": user.tenant,
        }))
        .into_response(),
    ))
}

/// Records the "last used" time of a personal access token off the request path: the
/// answer does not wait for it, and a failure only loses that time.
fn note_personal_token_use(state: &AppState, token: &str) {
    if !token.starts_with(PERSONAL_TOKEN_PREFIX) {
        return;
    }
    let (state, hash) = (state.clone(), SecretHash::of(token).0);
    tokio::spawn(async move {
        if let Err(e) = state.store().touch_personal_token(&hash, state.now()).await {
            tracing::warn!(error = %e, "recording the use of a personal access token failed");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(audiences: &[String], sub: Option<&str>) -> Value {
        let body = Introspection {
            active: true,
            token_type: "Bearer",
            scope: "read".into(),
            client_id: "c",
            exp: 20,
            iat: 10,
            iss: "https://issuer.example",
            sub,
            tenant: None,
            aud: audience(audiences),
        };
        serde_json::to_value(&body).expect("serializes")
    }

    #[test]
    fn introspection_names_one_audience_as_a_string_several_as_an_array_none_not_at_all() {
        let one = body(&["api".into()], Some("u1"));
        assert_eq!(one["aud"], json!("api"));
        assert_eq!(one["sub"], json!("u1"));
        let many = body(&["a".into(), "b".into()], None);
        assert_eq!(many["aud"], json!(["a", "b"]));
        let none = body(&[], None);
        let members = none.as_object().expect("an object");
        for absent in ["aud", "sub", "tenant"] {
            assert!(!members.contains_key(absent), "{absent} left out: {none}");
        }
        assert_eq!(none["active"], json!(true));
        assert_eq!(none["exp"], json!(20));
    }
}
