//! Minting tokens and codes: fresh secrets for the client, records with their hashes for
//! the store. This is the only place plaintext tokens are created.

use tessera_core::client::Client;
use tessera_core::model::{AccessToken, Grant, RefreshToken, TokenState, DEFAULT_REFRESH_TTL};
use tessera_core::token::TokenResponse;
use tessera_core::{OAuthError, ScopeSet, UnixTime};
use tessera_crypto::{random_secret, SecretHash};
use tessera_store::Issuance;

pub const ACCESS_PREFIX: &str = "tat_";
pub const REFRESH_PREFIX: &str = "trt_";
pub const CODE_PREFIX: &str = "tac_";
pub const SESSION_PREFIX: &str = "tss_";
pub const CLIENT_SECRET_PREFIX: &str = "tcs_";

pub fn secret(prefix: &str) -> Result<String, OAuthError> {
    random_secret(prefix).map_err(|e| {
        tracing::error!(error = %e, "random source failed");
        OAuthError::server_error("internal error")
    })
}

/// Tokens minted for one response, and what to store for them.
pub struct Minted {
    pub access_token: String,
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
            id_token: None,
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

/// Mints an access token with `scope` under `grant`, and a refresh token when
/// `with_refresh`. `new_grant` stores the grant in the same atomic step.
pub fn mint(
    client: &Client,
    grant: &Grant,
    scope: ScopeSet,
    with_refresh: bool,
    new_grant: bool,
    now: UnixTime,
) -> Result<Minted, OAuthError> {
    let access_token = secret(ACCESS_PREFIX)?;
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
        };
        (Some(token), Some(record))
    } else {
        (None, None)
    };
    Ok(Minted {
        access_token,
        refresh_token,
        issuance: Issuance {
            new_grant: new_grant.then(|| grant.clone()),
            access,
            refresh,
        },
        expires_in: client.access_token_ttl,
    })
}

pub fn new_grant_id() -> Result<String, OAuthError> {
    tessera_crypto::random_id(16).map_err(|_| OAuthError::server_error("internal error"))
}
