//! The token endpoint (RFC 6749 §3.2): one handler per grant, dispatched in one place.

use crate::audit::{record, Origin, Subject};
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use axum::Json;
use tessera_core::client::GrantType;
use tessera_core::client::{AccessTokenFormat, Client};
use tessera_core::model::{refreshed_scope, Grant, Hash, RefreshUse, User};
use tessera_core::token::{check_client_credentials_scope, TokenRequest};
use tessera_core::{OAuthError, ScopeSet};
use tessera_crypto::jose::{SigningAlg, SigningKey};
use tessera_crypto::SecretHash;
use tessera_store::{RefreshLookup, Swap};

use super::present_client;
use crate::error::ApiError;
use crate::extract::Form;
use crate::issue::{id_token, mint, standing_grant_id, IdTokenFacts, JwtSigner, Minted};
use crate::AppState;

pub async fn token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Form(params): Form,
) -> Result<Response, ApiError> {
    let caller = present_client(&state, &headers, &params, &origin).await?;
    let request = TokenRequest::parse(&params);
    // A refresh reads its client, its token and the token's user together; nothing read
    // is used before the client is authenticated below.
    let store = state.store();
    let (client, mut presented_refresh) = match &request {
        Ok(TokenRequest::RefreshToken { refresh_token, .. }) => {
            let hash = SecretHash::of(refresh_token).0;
            let mut found = store
                .get_client_and_refresh_token(caller.client_id(), &hash)
                .await?;
            (found.client.take(), Some((hash, found)))
        }
        _ => (store.get_client(caller.client_id()).await?, None),
    };
    let client = caller.verify(&state, &origin, client).await?;
    let request = request?;
    if !client.allows_grant(request.grant_type()) {
        return Err(OAuthError::unauthorized_client(format!(
            "this client is not registered for the {} grant",
            request.grant_type().as_str()
        ))
        .into());
    }
    let grant_type = request.grant_type().as_str();
    // Each grant's future is boxed: inline, the largest of them made this handler's
    // future 8.7 KiB, copied whole at every move on the way into axum's box (memcpy was
    // 8 % of a client-credentials request's instructions; docs/benchmarks.md, session 9).
    let minted = match request {
        TokenRequest::AuthorizationCode {
            code,
            redirect_uri,
            code_verifier,
        } => {
            Box::pin(authorization_code(
                &state,
                &origin,
                &client,
                &code,
                redirect_uri.as_deref(),
                code_verifier.as_deref(),
            ))
            .await?
        }
        TokenRequest::RefreshToken { scope, .. } => {
            // Always read above for this grant; an empty lookup would be invalid_grant.
            let (hash, found) = presented_refresh.take().unwrap_or_default();
            Box::pin(refresh(
                &state,
                &origin,
                &client,
                hash,
                found,
                scope.as_ref(),
            ))
            .await?
        }
        TokenRequest::ClientCredentials { scope, audiences } => {
            Box::pin(client_credentials(
                &state, &origin, &client, scope, audiences,
            ))
            .await?
        }
    };
    crate::metrics::event("token_issued", grant_type);
    // Stored with the tokens (one commit); logged once it is.
    for event in &minted.issuance.audit {
        crate::audit::log_routine(event);
    }
    let mut resp = Json(minted.response()).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    Ok(resp)
}

/// The audit event of a token response, stored in the same atomic step as its tokens.
fn attach_audit(
    state: &AppState,
    origin: &Origin,
    client: &Client,
    grant: GrantType,
    minted: &mut Minted,
) {
    let grant_type = grant.as_str();
    let access = &minted.issuance.access;
    let kind = if grant == GrantType::RefreshToken {
        "token.refreshed"
    } else {
        "token.issued"
    };
    let subject = Subject {
        tenant: access.tenant.as_deref(),
        actor: access.user_id.as_deref().or(Some(&client.id)),
        client_id: Some(&client.id),
        detail: Some(format!(
            "grant_type={grant_type} grant_id={}",
            access.grant_id
        )),
    };
    let event = crate::audit::event(state, origin, kind, subject);
    minted.issuance.audit.push(event);
}

/// RFC 6749 §4.1.3. A code presented twice is refused and everything issued from it
/// revoked (§4.1.2, RFC 9700 §4.5); this includes the losers of a parallel redemption.
async fn authorization_code(
    state: &AppState,
    origin: &Origin,
    client: &Client,
    code: &str,
    redirect_uri: Option<&str>,
    code_verifier: Option<&str>,
) -> Result<Minted, ApiError> {
    let now = state.now();
    let hash = SecretHash::of(code).0;
    let record = state
        .store()
        .get_code(&hash)
        .await?
        .ok_or_else(|| OAuthError::invalid_grant("authorization code is invalid or expired"))?;
    record.check_redemption(&client.id, redirect_uri, code_verifier, now)?;
    let replayed = || {
        OAuthError::invalid_grant(
            "authorization code was already used; the tokens issued from it are revoked",
        )
    };
    if record.used {
        revoke_presented_twice(
            state,
            origin,
            client,
            &record.grant,
            "code.replay_grant_revoked",
        )
        .await?;
        return Err(replayed().into());
    }
    let with_refresh = client.issues_refresh_token(&record.grant.scope);
    let jwt = jwt_signer(state, client).await?;
    let mut minted = mint(
        client,
        &record.grant,
        record.grant.scope.clone(),
        with_refresh,
        true,
        now,
        jwt.as_ref(),
    )?;
    minted.id_token = openid_token(
        state,
        client,
        &record.grant,
        &minted,
        record.nonce.as_deref(),
        None,
    )
    .await?;
    attach_audit(
        state,
        origin,
        client,
        GrantType::AuthorizationCode,
        &mut minted,
    );
    match state
        .store()
        .redeem_code(&hash, &minted.issuance, now)
        .await?
    {
        Swap::Done => Ok(minted),
        Swap::AlreadyUsed => {
            revoke_presented_twice(
                state,
                origin,
                client,
                &record.grant,
                "code.replay_grant_revoked",
            )
            .await?;
            Err(replayed().into())
        }
    }
}

/// RFC 6749 §6 with rotation (RFC 9700 §4.14.2): every use yields a new refresh token;
/// presenting a rotated one revokes the whole family — unless the operator opened a retry
/// window and the successor is still unused (see `retry`). `found` is what the store read,
/// with the client, for the presented refresh token, whose hash is `hash`.
async fn refresh(
    state: &AppState,
    origin: &Origin,
    client: &Client,
    hash: Hash,
    found: RefreshLookup,
    requested_scope: Option<&ScopeSet>,
) -> Result<Minted, ApiError> {
    let now = state.now();
    let record = found
        .token
        .ok_or_else(|| OAuthError::invalid_grant("refresh token is invalid, expired or revoked"))?;
    let window = state.settings().refresh_retry_window;
    match record.check_use(&client.id, now, window)? {
        RefreshUse::Valid => {}
        RefreshUse::Reuse => return Err(reuse(state, origin, client, &record.grant).await),
        RefreshUse::Retry { successor, sealed } => {
            let retry = RetryOf {
                old: &hash,
                successor: &successor,
                sealed: &sealed,
                since: now - window,
            };
            return retry_or_reuse(state, origin, client, &record.grant, requested_scope, retry)
                .await;
        }
    }
    let scope = refreshed_scope(&record.grant.scope, requested_scope)?;
    let jwt = jwt_signer(state, client).await?;
    let mut minted = mint(client, &record.grant, scope, true, false, now, jwt.as_ref())?;
    // OIDC Core §12.2: a refresh that carries openid returns a fresh ID token.
    minted.id_token = openid_token(state, client, &record.grant, &minted, None, found.user).await?;
    let sealed_successor = match (&minted.refresh_token, window > 0) {
        (Some(successor), true) => Some(
            state
                .successor_sealer()
                .seal(successor.as_bytes(), &hash)
                .map_err(|_| OAuthError::server_error("internal error"))?,
        ),
        _ => None,
    };
    attach_audit(state, origin, client, GrantType::RefreshToken, &mut minted);
    match state
        .store()
        .rotate_refresh_token(&hash, &minted.issuance, sealed_successor.as_deref(), now)
        .await?
    {
        Swap::Done => Ok(minted),
        // Lost a race against a parallel presentation of the same token. With a retry
        // window that is the case it exists for: answer with the winner's successor.
        Swap::AlreadyUsed if window > 0 => {
            let again = state.store().get_refresh_token(&hash).await?;
            match again.map(|r| r.check_use(&client.id, now, window)) {
                Some(Ok(RefreshUse::Retry { successor, sealed })) => {
                    let retry = RetryOf {
                        old: &hash,
                        successor: &successor,
                        sealed: &sealed,
                        since: now - window,
                    };
                    retry_or_reuse(state, origin, client, &record.grant, requested_scope, retry)
                        .await
                }
                _ => Err(reuse(state, origin, client, &record.grant).await),
            }
        }
        Swap::AlreadyUsed => Err(reuse(state, origin, client, &record.grant).await),
    }
}

async fn retry_or_reuse(
    state: &AppState,
    origin: &Origin,
    client: &Client,
    grant: &Grant,
    requested_scope: Option<&ScopeSet>,
    retry: RetryOf<'_>,
) -> Result<Minted, ApiError> {
    match retry_rotation(state, client, grant, requested_scope, retry).await? {
        Some(minted) => {
            crate::metrics::event("refresh_retry", "served");
            let subject = Subject {
                tenant: grant.tenant.as_deref(),
                actor: grant.user_id.as_deref(),
                client_id: Some(&client.id),
                detail: Some(format!("grant_id={}", grant.id)),
            };
            record(state, origin, "token.refresh_retried", subject).await;
            tracing::info!(client_id = %client.id, grant_id = %grant.id, "refresh retried inside the retry window: same successor returned");
            Ok(minted)
        }
        None => Err(reuse(state, origin, client, grant).await),
    }
}

/// A rotated refresh token presented again inside the retry window.
struct RetryOf<'a> {
    old: &'a [u8; 32],
    successor: &'a [u8; 32],
    sealed: &'a [u8],
    since: i64,
}

/// Answers a retried refresh with the same successor refresh token and a fresh access
/// token (which replaces the successor's previous one), or `None` when the successor was
/// used meanwhile — then the presentation is reuse after all.
async fn retry_rotation(
    state: &AppState,
    client: &Client,
    grant: &Grant,
    requested_scope: Option<&ScopeSet>,
    retry: RetryOf<'_>,
) -> Result<Option<Minted>, ApiError> {
    let now = state.now();
    let Ok(successor) = state.successor_sealer().open(retry.sealed, retry.old) else {
        tracing::error!(grant_id = %grant.id, "a sealed refresh successor does not open");
        return Ok(None);
    };
    let successor = String::from_utf8(successor.to_vec()).unwrap_or_default();
    if SecretHash::of(&successor).0 != *retry.successor {
        return Ok(None);
    }
    let scope = refreshed_scope(&grant.scope, requested_scope)?;
    let jwt = jwt_signer(state, client).await?;
    let mut minted = mint(client, grant, scope, false, false, now, jwt.as_ref())?;
    minted.id_token = openid_token(state, client, grant, &minted, None, None).await?;
    match state
        .store()
        .retry_rotation(
            retry.old,
            retry.successor,
            retry.since,
            &minted.issuance.access,
            now,
        )
        .await?
    {
        Swap::Done => {
            minted.refresh_token = Some(successor);
            Ok(Some(minted))
        }
        Swap::AlreadyUsed => Ok(None),
    }
}

/// A refresh token presented after its rotation: the family goes, the request fails.
async fn reuse(state: &AppState, origin: &Origin, client: &Client, grant: &Grant) -> ApiError {
    if let Err(e) =
        revoke_presented_twice(state, origin, client, grant, "refresh.reuse_family_revoked").await
    {
        return e;
    }
    OAuthError::invalid_grant("refresh token was already used; the authorization is revoked").into()
}

/// RFC 6749 §4.4: tokens for the client itself, never with a refresh token.
async fn client_credentials(
    state: &AppState,
    origin: &Origin,
    client: &Client,
    scope: ScopeSet,
    audiences: Vec<String>,
) -> Result<Minted, ApiError> {
    let now = state.now();
    check_client_credentials_scope(&scope)?;
    client.check_scopes(&scope)?;
    client.check_audiences(&audiences)?;
    // The grant as the tokens are minted from it (this request's scope and audiences);
    // stored, if the client has none yet, without them (see `standing_grant_id`).
    let grant = Grant {
        id: standing_grant_id(&client.id),
        client_id: client.id.clone(),
        user_id: None,
        tenant: client.tenant.clone(),
        scope: scope.clone(),
        audiences,
        auth_time: None,
        sid: None,
        created_at: now,
    };
    let jwt = jwt_signer(state, client).await?;
    let mut minted = mint(client, &grant, scope, false, true, now, jwt.as_ref())?;
    minted.issuance.standing_grant = true;
    if let Some(stored) = minted.issuance.new_grant.as_mut() {
        stored.scope = ScopeSet::empty();
        stored.audiences.clear();
    }
    attach_audit(
        state,
        origin,
        client,
        GrantType::ClientCredentials,
        &mut minted,
    );
    state.store().issue(&minted.issuance).await?;
    Ok(minted)
}

fn no_key() -> ApiError {
    tracing::error!("no signing key is available");
    OAuthError::server_error("internal error").into()
}

/// The client's signing algorithm (its `id_token_signed_response_alg`).
fn client_alg(client: &Client) -> SigningAlg {
    SigningAlg::parse(&client.id_token_signed_response_alg).unwrap_or(SigningAlg::RS256)
}

async fn signing_key(
    state: &AppState,
    client: &Client,
) -> Result<std::sync::Arc<SigningKey>, ApiError> {
    state.signer(client_alg(client)).await.ok_or_else(no_key)
}

async fn jwt_signer(state: &AppState, client: &Client) -> Result<Option<JwtSigner>, ApiError> {
    if client.access_token_format != AccessTokenFormat::Jwt {
        return Ok(None);
    }
    Ok(Some(JwtSigner {
        key: signing_key(state, client).await?,
        issuer: state.settings().issuer.clone(),
    }))
}

/// The ID token for a user grant whose access token carries `openid` (OIDC Core §3.1.3.3).
/// `read` is the grant's user if the caller has already read it.
async fn openid_token(
    state: &AppState,
    client: &Client,
    grant: &Grant,
    minted: &Minted,
    nonce: Option<&str>,
    read: Option<User>,
) -> Result<Option<String>, ApiError> {
    let scope = &minted.issuance.access.scope;
    let Some(user_id) = grant
        .user_id
        .as_deref()
        .filter(|_| scope.contains("openid"))
    else {
        return Ok(None);
    };
    let user =
        match read.filter(|u| u.id == user_id) {
            Some(user) => user,
            None => state.store().get_user(user_id).await?.ok_or_else(|| {
                OAuthError::invalid_grant("the user of this grant no longer exists")
            })?,
        };
    let key = signing_key(state, client).await?;
    let token = id_token(
        &key,
        &state.settings().issuer,
        IdTokenFacts {
            client,
            grant,
            user: &user,
            scope,
            nonce,
            access_token: &minted.access_token,
            now: state.now(),
        },
    )?;
    Ok(Some(token))
}

/// A code or refresh token came back a second time (a replay, reuse, or the loser of a
/// race): revoke everything its grant issued, and say so in the audit trail, the log and
/// the metrics.
async fn revoke_presented_twice(
    state: &AppState,
    origin: &Origin,
    client: &Client,
    grant: &Grant,
    kind: &'static str,
) -> Result<(), ApiError> {
    state.store().revoke_grant(&grant.id, state.now()).await?;
    tracing::warn!(client_id = %client.id, grant_id = %grant.id, kind, "credential presented twice: grant revoked");
    crate::metrics::event("presented_twice", kind);
    let subject = Subject {
        tenant: grant.tenant.as_deref(),
        actor: Some(&client.id),
        client_id: Some(&client.id),
        detail: Some(format!("grant_id={}", grant.id)),
    };
    record(state, origin, kind, subject).await;
    Ok(())
}
