//! Administrative operations shared by the CLI (and later the settings pages): the one
//! place where new tenants, users and clients are validated.

use tessera_core::client::{
    AccessTokenFormat, Client, ClientAuthMethod, GrantType, RefreshPolicy,
    DEFAULT_ACCESS_TOKEN_TTL, MAX_TOKEN_TTL,
};
use tessera_core::model::{validate_tenant_id, Tenant, User};
use tessera_core::{redirect, ScopeSet, UnixTime};
use tessera_crypto::Passwords;
use tessera_store::{Store, StoreError};

use crate::issue::client_secret;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input is wrong; the message says what and how to fix it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Store(#[from] StoreError),
}

fn invalid(msg: impl Into<String>) -> AdminError {
    AdminError::Invalid(msg.into())
}

pub async fn create_tenant(
    store: &dyn Store,
    name: &str,
    now: UnixTime,
) -> Result<Tenant, AdminError> {
    validate_tenant_id(name).map_err(AdminError::Invalid)?;
    let tenant = Tenant {
        id: name.to_owned(),
        created_at: now,
    };
    match store.create_tenant(&tenant).await {
        Err(StoreError::Conflict(_)) => Err(invalid(format!("tenant {name:?} already exists"))),
        other => other.map(|_| tenant).map_err(AdminError::from),
    }
}

pub struct NewUser<'a> {
    pub tenant: &'a str,
    pub username: &'a str,
    pub email: Option<&'a str>,
    pub name: Option<&'a str>,
    pub password: &'a str,
}

pub const MIN_PASSWORD_LEN: usize = 8;

/// Validates and creates a user; the password is hashed with Argon2id here (slow: call
/// from a blocking context or accept the wait, as the CLI does).
pub async fn create_user(
    store: &dyn Store,
    passwords: &Passwords,
    new: NewUser<'_>,
    now: UnixTime,
) -> Result<User, AdminError> {
    let username = new.username;
    if username.is_empty() || username.len() > 128 {
        return Err(invalid("username must be 1 to 128 characters"));
    }
    if username
        .chars()
        .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "username must not contain spaces or control characters",
        ));
    }
    if new.password.chars().count() < MIN_PASSWORD_LEN {
        return Err(invalid(format!(
            "password must be at least {MIN_PASSWORD_LEN} characters"
        )));
    }
    if new.password.len() > 1024 {
        return Err(invalid("password must be at most 1024 bytes"));
    }
    if let Some(email) = new.email {
        let ok = email.len() <= 254
            && email
                .split_once('@')
                .is_some_and(|(l, d)| !l.is_empty() && d.contains('.'))
            && !email.chars().any(char::is_whitespace);
        if !ok {
            return Err(invalid(format!("invalid email address {email:?}")));
        }
    }
    if store.get_tenant(new.tenant).await?.is_none() {
        return Err(invalid(format!(
            "tenant {:?} does not exist; create it with `tessera tenant create {}`",
            new.tenant, new.tenant
        )));
    }
    let user = User {
        id: tessera_crypto::random_id(16).map_err(|e| invalid(e.to_string()))?,
        tenant: new.tenant.to_owned(),
        username: username.to_owned(),
        email: new.email.map(str::to_owned),
        name: new.name.map(str::to_owned),
        password_hash: passwords
            .hash(new.password)
            .map_err(|e| invalid(e.to_string()))?,
        created_at: now,
    };
    match store.create_user(&user).await {
        Err(StoreError::Conflict(_)) => Err(invalid(format!(
            "user {username:?} already exists in tenant {:?}",
            new.tenant
        ))),
        other => other.map(|_| user).map_err(AdminError::from),
    }
}

/// A client registration as given by an administrator; `None` means the default.
#[derive(Debug, Default, Clone)]
pub struct NewClient {
    pub name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Option<String>,
    pub public: bool,
    pub auth_method: Option<String>,
    pub scopes: Option<String>,
    pub audiences: Vec<String>,
    pub refresh_tokens: Option<String>,
    pub access_token_format: Option<String>,
    pub access_token_ttl: Option<i64>,
    pub refresh_token_ttl: Option<i64>,
    pub require_pkce: bool,
    pub skip_consent: bool,
    pub tenant: Option<String>,
    pub owner: Option<String>,
    /// `EdDSA`, `ES256` or `RS256` [RS256].
    pub id_token_alg: Option<String>,
    pub post_logout_redirect_uris: Vec<String>,
}

/// Validates `new` into a [`Client`] (pure, no store access).
pub fn build_client(new: &NewClient, id: String, now: UnixTime) -> Result<Client, AdminError> {
    let name = new.name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(invalid("client name must be 1 to 200 characters"));
    }
    let grant_types: Vec<GrantType> = match &new.grant_types {
        None => vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        Some(list) => {
            let mut out = Vec::new();
            for g in list.split(',').map(str::trim).filter(|g| !g.is_empty()) {
                let grant = GrantType::parse(g).ok_or_else(|| {
                    invalid(format!(
                        "unknown grant type {g:?}; use authorization_code, refresh_token or client_credentials"
                    ))
                })?;
                if !out.contains(&grant) {
                    out.push(grant);
                }
            }
            if out.is_empty() {
                return Err(invalid("--grant-types must name at least one grant type"));
            }
            out
        }
    };
    let auth_method = match new.auth_method.as_deref() {
        None => None,
        Some(m) => Some(ClientAuthMethod::parse(m).ok_or_else(|| {
            invalid(format!(
                "unknown auth method {m:?}; use client_secret_basic, client_secret_post or none"
            ))
        })?),
    };
    let public = new.public || auth_method == Some(ClientAuthMethod::None);
    let auth_methods = match (public, auth_method) {
        (true, None | Some(ClientAuthMethod::None)) => vec![ClientAuthMethod::None],
        (true, Some(m)) => {
            return Err(invalid(format!(
                "a public client has no secret, so it cannot use {}",
                m.as_str()
            )))
        }
        (false, Some(m)) => vec![m],
        (false, None) => vec![
            ClientAuthMethod::ClientSecretBasic,
            ClientAuthMethod::ClientSecretPost,
        ],
    };
    if public && grant_types.contains(&GrantType::ClientCredentials) {
        return Err(invalid(
            "a public client cannot use client_credentials: it has no secret to authenticate with",
        ));
    }
    let mut redirect_uris = Vec::new();
    for uri in &new.redirect_uris {
        let valid = redirect::validate_registration(uri).map_err(|e| invalid(e.to_string()))?;
        if !redirect_uris.contains(&valid) {
            redirect_uris.push(valid);
        }
    }
    if grant_types.contains(&GrantType::AuthorizationCode) && redirect_uris.is_empty() {
        return Err(invalid(
            "--redirect-uri is required for the authorization_code grant",
        ));
    }
    let scopes = ScopeSet::parse(
        new.scopes
            .as_deref()
            .unwrap_or(tessera_core::scope::DEFAULT_ALLOWED),
    )
    .map_err(|e| invalid(format!("invalid --scopes: {}", e.description)))?;
    let mut audiences = Vec::new();
    for a in &new.audiences {
        let a = a.trim();
        if a.is_empty() || a.len() > 2000 || a.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(invalid(format!("invalid audience {a:?}")));
        }
        if !audiences.iter().any(|x: &String| x == a) {
            audiences.push(a.to_owned());
        }
    }
    let refresh_policy = match new.refresh_tokens.as_deref() {
        None => RefreshPolicy::Always,
        Some(p) => RefreshPolicy::parse(p).ok_or_else(|| {
            invalid(format!(
                "unknown refresh-token policy {p:?}; use always or offline-access"
            ))
        })?,
    };
    let access_token_format = match new.access_token_format.as_deref() {
        None => AccessTokenFormat::Opaque,
        Some(f) => match AccessTokenFormat::parse(f) {
            Some(AccessTokenFormat::Opaque) => AccessTokenFormat::Opaque,
            Some(AccessTokenFormat::Jwt) => AccessTokenFormat::Jwt,
            None => {
                return Err(invalid(format!(
                    "unknown access-token format {f:?}; use opaque or jwt"
                )))
            }
        },
    };
    let ttl = |v: Option<i64>, what: &str| -> Result<Option<i64>, AdminError> {
        match v {
            Some(s) if !(60..=MAX_TOKEN_TTL).contains(&s) => Err(invalid(format!(
                "{what} must be between 60 and {MAX_TOKEN_TTL} seconds"
            ))),
            other => Ok(other),
        }
    };
    let access_token_ttl =
        ttl(new.access_token_ttl, "--access-token-ttl")?.unwrap_or(DEFAULT_ACCESS_TOKEN_TTL);
    let refresh_token_ttl = ttl(new.refresh_token_ttl, "--refresh-token-ttl")?;
    if let Some(t) = &new.tenant {
        validate_tenant_id(t).map_err(AdminError::Invalid)?;
    }
    let id_token_signed_response_alg = match new.id_token_alg.as_deref() {
        None => tessera_core::client::DEFAULT_SIGNING_ALG.to_owned(),
        Some(a) => tessera_crypto::jose::SigningAlg::parse(a)
            .ok_or_else(|| {
                invalid(format!(
                    "unknown signing algorithm {a:?}; use EdDSA, ES256 or RS256"
                ))
            })?
            .as_str()
            .to_owned(),
    };
    let mut post_logout_redirect_uris = Vec::new();
    for uri in &new.post_logout_redirect_uris {
        post_logout_redirect_uris
            .push(redirect::validate_registration(uri).map_err(|e| invalid(e.to_string()))?);
    }
    Ok(Client {
        id_token_signed_response_alg,
        post_logout_redirect_uris,
        id,
        name: name.to_owned(),
        secret_hash: None,
        public,
        auth_methods,
        grant_types,
        redirect_uris,
        scopes,
        audiences,
        refresh_policy,
        access_token_format,
        access_token_ttl,
        refresh_token_ttl,
        require_pkce: new.require_pkce || public,
        skip_consent: new.skip_consent,
        tenant: new.tenant.clone(),
        owner: new.owner.clone(),
        created_at: now,
    })
}

/// Registers a client; returns it with its secret (confidential clients only), which is
/// shown this once and stored only as a hash.
pub async fn create_client(
    store: &dyn Store,
    new: &NewClient,
    now: UnixTime,
) -> Result<(Client, Option<String>), AdminError> {
    let id = tessera_crypto::random_id(16).map_err(|e| invalid(e.to_string()))?;
    let mut client = build_client(new, id, now)?;
    if let Some(t) = &client.tenant {
        if store.get_tenant(t).await?.is_none() {
            return Err(invalid(format!("tenant {t:?} does not exist")));
        }
    }
    // Names are how administrators tell clients apart: unique per owner.
    let clash = store
        .list_clients()
        .await?
        .into_iter()
        .any(|c| c.owner == client.owner && c.name == client.name);
    if clash {
        return Err(invalid(format!(
            "a client named {:?} already exists",
            client.name
        )));
    }
    let secret = if client.public {
        None
    } else {
        let (s, digest) = client_secret().map_err(|e| invalid(e.description))?;
        client.secret_hash = Some(digest.0);
        Some(s)
    };
    store.create_client(&client).await?;
    Ok((client, secret))
}

/// Replaces a confidential client's secret; the old one stops working at once.
pub async fn rotate_secret(store: &dyn Store, id: &str) -> Result<String, AdminError> {
    let client = store
        .get_client(id)
        .await?
        .ok_or_else(|| invalid(format!("no client with id {id:?}")))?;
    if client.public {
        return Err(invalid("a public client has no secret to rotate"));
    }
    let (s, digest) = client_secret().map_err(|e| invalid(e.description))?;
    if !store.set_client_secret(id, &digest.0).await? {
        return Err(invalid(format!("no client with id {id:?}")));
    }
    Ok(s)
}

/// The client as JSON for `--json` output; never contains the secret or its hash.
pub fn client_json(client: &Client) -> serde_json::Value {
    serde_json::json!({
        "client_id": client.id,
        "name": client.name,
        "public": client.public,
        "token_endpoint_auth_methods": client.auth_methods.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "grant_types": client.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "redirect_uris": client.redirect_uris,
        "scopes": client.scopes.to_string(),
        "audiences": client.audiences,
        "refresh_tokens": client.refresh_policy.as_str(),
        "access_token_format": client.access_token_format.as_str(),
        "access_token_ttl": client.access_token_ttl,
        "refresh_token_ttl": client.refresh_token_ttl,
        "require_pkce": client.require_pkce,
        "skip_consent": client.skip_consent,
        "tenant": client.tenant,
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "post_logout_redirect_uris": client.post_logout_redirect_uris,
        "created_at": client.created_at,
    })
}
