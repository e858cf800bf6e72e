//! Minting tokens and codes: fresh secrets for the client, records with their hashes for
//! the store. This is the only place plaintext tokens are created.

use std::sync::Arc;

use serde_json::{json, Map, Value};
use tessera_core::client::Client;
use tessera_core::model::{
    AccessToken, Grant, RefreshToken, TokenState, User, DEFAULT_REFRESH_TTL,
};
use tessera_core::token::TokenResponse;
use tessera_core::{OAuthError, ScopeSet, UnixTime};
use tessera_crypto::jose::SigningKey;
use tessera_crypto::{random_secret, random_token, SecretHash};
use tessera_store::Issuance;

pub const ACCESS_PREFIX: &str = "tat_";
pub const REFRESH_PREFIX: &str = "trt_";
pub const CODE_PREFIX: &str = "tac_";
pub const SESSION_PREFIX: &str = "tss_";
pub const CLIENT_SECRET_PREFIX: &str = "tcs_";
/// Personal access tokens (settings pages): access tokens a user created by hand.
pub const PERSONAL_TOKEN_PREFIX: &str = "tpat_";

/// A fresh token, code or session secret, stored under [`SecretHash::of`]. Its issue time
/// comes from the wall clock, not the injectable one: it only orders the store's keys.
pub fn secret(prefix: &str) -> Result<String, OAuthError> {
    random_token(prefix, crate::clock::wall_millis()).map_err(random_failed)
}

/// A fresh client secret and the digest to store for it ([`SecretHash::digest`], what
/// client authentication checks).
pub fn client_secret() -> Result<(String, SecretHash), OAuthError> {
    let secret = random_secret(CLIENT_SECRET_PREFIX).map_err(random_failed)?;
    let digest = SecretHash::digest(&secret);
    Ok((secret, digest))
}

fn random_failed(e: tessera_crypto::CryptoError) -> OAuthError {
    tracing::error!(error = %e, "random source failed");
    OAuthError::server_error("internal error")
}

/// Tokens minted for one response, and what to store for them.
pub struct Minted {
    pub access_token: String,
    pub id_token: Option<String>,
    pub refresh_token: Option<String>,
    pub issuance: Issuance,
    pub expires_in: i64,
}

impl Minted {
    pub fn response(&self) -> TokenResponse {
        TokenResponse {
            access_token: self.access_token.clone(),
            token_type: "Bearer",
            expires_in: self.expires_in,
            refresh_token: self.refresh_token.clone(),
            scope: self.issuance.access.scope.to_string(),
            id_token: self.id_token.clone(),
        }
    }
}

/// A refresh token lives as the client says, 30 days by default, and never shorter than
/// the access token it accompanies.
fn refresh_ttl(client: &Client) -> i64 {
    client
        .refresh_token_ttl
        .unwrap_or_else(|| DEFAULT_REFRESH_TTL.max(client.access_token_ttl))
}

/// Signs JWT access tokens (RFC 9068) for clients registered with that format.
pub struct JwtSigner {
    pub key: Arc<SigningKey>,
    pub issuer: String,
}

fn sign_failed(e: tessera_crypto::CryptoError) -> OAuthError {
    tracing::error!(error = %e, "signing failed");
    OAuthError::server_error("internal error")
}

/// An RFC 9068 access token. It is stored by hash like an opaque one, so revocation,
/// introspection and userinfo treat both alike.
fn jwt_access_token(
    signer: &JwtSigner,
    client: &Client,
    grant: &Grant,
    scope: &ScopeSet,
    now: UnixTime,
) -> Result<String, OAuthError> {
    let jti = tessera_crypto::random_id(16).map_err(sign_failed)?;
    // §2.2: sub is the user, or the client itself for client_credentials; aud is the
    // requested resource, else the issuer (Tessera's own userinfo is the resource).
    let aud: Value = match grant.audiences.as_slice() {
        [] => json!(signer.issuer),
        [one] => json!(one),
        many => json!(many),
    };
    let mut claims = json!({
        "iss": signer.issuer,
        "sub": grant.user_id.clone().unwrap_or_else(|| client.id.clone()),
        "aud": aud,
        "client_id": client.id,
        "scope": scope.to_string(),
        "jti": jti,
        "iat": now,
        "exp": now + client.access_token_ttl,
    });
    if let Some(o) = claims.as_object_mut() {
        if let Some(t) = &grant.tenant {
            o.insert("tenant".into(), json!(t));
        }
        if let Some(at) = grant.auth_time {
            o.insert("auth_time".into(), json!(at));
        }
    }
    signer.key.sign_jwt("at+jwt", &claims).map_err(sign_failed)
}

/// Mints an access token with `scope` under `grant`, and a refresh token when
/// `with_refresh`. `new_grant` stores the grant in the same atomic step. `jwt` is set
/// for clients whose access tokens are JWTs.
#[allow(clippy::too_many_arguments)]
pub fn mint(
    client: &Client,
    grant: &Grant,
    scope: ScopeSet,
    with_refresh: bool,
    new_grant: bool,
    now: UnixTime,
    jwt: Option<&JwtSigner>,
) -> Result<Minted, OAuthError> {
    let access_token = match jwt {
        Some(signer) => jwt_access_token(signer, client, grant, &scope, now)?,
        None => secret(ACCESS_PREFIX)?,
    };
    let access = AccessToken {
        hash: SecretHash::of(&access_token).0,
        grant_id: grant.id.clone(),
        client_id: client.id.clone(),
        user_id: grant.user_id.clone(),
        tenant: grant.tenant.clone(),
        scope,
        audiences: grant.audiences.clone(),
        issued_at: now,
        expires_at: now + client.access_token_ttl,
        revoked: false,
    };
    let (refresh_token, refresh) = if with_refresh {
        let token = secret(REFRESH_PREFIX)?;
        let record = RefreshToken {
            hash: SecretHash::of(&token).0,
            grant: grant.clone(),
            access_token_hash: Some(access.hash),
            issued_at: now,
            expires_at: now + refresh_ttl(client),
            state: TokenState::Active,
            grant_revoked: false,
            rotation: None,
        };
        (Some(token), Some(record))
    } else {
        (None, None)
    };
    Ok(Minted {
        id_token: None,
        access_token,
        refresh_token,
        issuance: Issuance {
            new_grant: new_grant.then(|| grant.clone()),
            standing_grant: false,
            access,
            refresh,
            audit: Vec::new(),
        },
        expires_in: client.access_token_ttl,
    })
}

/// Grant ids sort by creation time (wall clock, not the injectable one: the order only
/// matters to the store's indexes), so new grants are appended rather than scattered.
pub fn new_grant_id() -> Result<String, OAuthError> {
    tessera_crypto::sortable_id(crate::clock::wall_millis())
        .map_err(|_| OAuthError::server_error("internal error"))
}

/// The one grant under which a client's client_credentials tokens are stored: the client's
/// own standing authorization, not a user's, so one row per client instead of one grant
/// row (with its index entries) per token (cc +10 %, docs/benchmarks.md item 29). Every
/// token records its own scope and audiences; the grant lives until the client is
/// deleted, and nothing else revokes it (revoking a cc access token revokes that token
/// alone).
pub fn standing_grant_id(client_id: &str) -> String {
    format!("cc_{client_id}")
}

/// Whether `token` looks like one of our access tokens (opaque or JWT).
pub fn is_access_token(token: &str) -> bool {
    token.starts_with(ACCESS_PREFIX)
        || token.starts_with(PERSONAL_TOKEN_PREFIX)
        || (token.starts_with("eyJ") && token.matches('.').count() == 2)
}

/// Standard claims about `user` that `scope` allows (OIDC Core §5.4).
pub fn user_claims(user: &User, scope: &ScopeSet) -> Map<String, Value> {
    let mut claims = Map::new();
    if scope.contains("profile") {
        claims.insert("preferred_username".into(), json!(user.username));
        if let Some(name) = &user.name {
            claims.insert("name".into(), json!(name));
        }
    }
    if scope.contains("email") {
        if let Some(email) = &user.email {
            claims.insert("email".into(), json!(email));
            // Tessera does not verify addresses; saying so is the honest answer.
            claims.insert("email_verified".into(), json!(false));
        }
    }
    claims
}

/// What an ID token says (OIDC Core §2, §3.1.3.6).
pub struct IdTokenFacts<'a> {
    pub client: &'a Client,
    pub grant: &'a Grant,
    pub user: &'a User,
    pub scope: &'a ScopeSet,
    pub nonce: Option<&'a str>,
    pub access_token: &'a str,
    pub now: UnixTime,
}

pub fn id_token(key: &SigningKey, issuer: &str, f: IdTokenFacts<'_>) -> Result<String, OAuthError> {
    let mut claims = user_claims(f.user, f.scope);
    claims.insert("iss".into(), json!(issuer));
    claims.insert("sub".into(), json!(f.user.id));
    claims.insert("aud".into(), json!(f.client.id));
    claims.insert("exp".into(), json!(f.now + crate::keys::ID_TOKEN_TTL));
    claims.insert("iat".into(), json!(f.now));
    claims.insert("tenant".into(), json!(f.user.tenant));
    if let Some(t) = f.grant.auth_time {
        claims.insert("auth_time".into(), json!(t));
    }
    if let Some(n) = f.nonce {
        claims.insert("nonce".into(), json!(n));
    }
    if let Some(sid) = &f.grant.sid {
        claims.insert("sid".into(), json!(sid));
    }
    claims.insert("at_hash".into(), json!(key.alg.half_hash(f.access_token)));
    key.sign_jwt("JWT", &Value::Object(claims))
        .map_err(sign_failed)
}
