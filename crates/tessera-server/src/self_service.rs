//! What a signed-in user may do on the settings pages: register and manage clients they
//! own, revoke applications they authorized, and manage personal access tokens.
//!
//! Client registration goes through [`crate::admin`], exactly like `tessera client create`,
//! so a client made here obeys the same validation and protocol code. Every operation on
//! a client first checks that the user owns it; a client of someone else is answered like
//! a client that does not exist, so ids cannot be probed.

use tessera_core::client::Client;
use tessera_core::model::{AccessToken, Grant, User};
use tessera_core::personal_token::{
    PersonalAccessToken, MAX_PERSONAL_TOKEN_TTL, PERSONAL_TOKEN_CLIENT_ID,
};
use tessera_core::{redirect, ScopeSet, UnixTime};
use tessera_crypto::SecretHash;
use tessera_store::{Issuance, Store, StoreError};

use crate::admin::{self, AdminError, NewClient};
use crate::issue::{new_grant_id, secret, PERSONAL_TOKEN_PREFIX};

/// Most callback URLs one client may register from the page.
pub const MAX_CALLBACK_URLS: usize = 10;
/// Longest client or token name.
pub const MAX_NAME_LEN: usize = 200;
/// Lifetimes offered for personal access tokens, in days.
pub const PERSONAL_TOKEN_DAYS: [i64; 4] = [7, 30, 90, 365];

/// Messages shown beside the fields of a form; empty means the input is valid.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FieldErrors {
    pub name: Option<String>,
    pub callback_urls: Option<String>,
    pub scopes: Option<String>,
    pub expiry: Option<String>,
}

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self == &FieldErrors::default()
    }
}

/// Why an operation failed: bad input (shown beside the fields) or the store.
#[derive(Debug)]
pub enum SelfServiceError {
    Fields(FieldErrors),
    Store(StoreError),
}

impl From<StoreError> for SelfServiceError {
    fn from(e: StoreError) -> Self {
        SelfServiceError::Store(e)
    }
}

fn name_error(name: &str) -> Option<String> {
    let name = name.trim();
    if name.is_empty() {
        Some("Enter a name.".into())
    } else if name.chars().count() > MAX_NAME_LEN {
        Some(format!("Use at most {MAX_NAME_LEN} characters."))
    } else if name.chars().any(char::is_control) {
        Some("The name must not contain control characters.".into())
    } else {
        None
    }
}

/// Callback URLs as typed in the text area: one per line (spaces separate too).
pub fn split_callback_urls(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// The same registration rules as the CLI (`redirect::validate_registration`: absolute,
/// https except loopback or a private-use scheme, no fragment), one message per field.
fn callback_error(urls: &[String]) -> Option<String> {
    if urls.is_empty() {
        return Some("Enter at least one callback URL.".into());
    }
    if urls.len() > MAX_CALLBACK_URLS {
        return Some(format!(
            "Register at most {MAX_CALLBACK_URLS} callback URLs."
        ));
    }
    urls.iter().find_map(|u| {
        redirect::validate_registration(u)
            .err()
            .map(|e| e.to_string())
    })
}

async fn name_taken(
    store: &dyn Store,
    owner: &str,
    name: &str,
    except_id: Option<&str>,
) -> Result<bool, StoreError> {
    Ok(store
        .list_clients_by_owner(owner)
        .await?
        .iter()
        .any(|c| c.name == name.trim() && Some(c.id.as_str()) != except_id))
}

/// Admin validation failures that slipped past the field checks still land beside a field.
fn admin_error(e: AdminError) -> SelfServiceError {
    match e {
        AdminError::Store(e) => SelfServiceError::Store(e),
        AdminError::Invalid(message) => SelfServiceError::Fields(FieldErrors {
            callback_urls: Some(message),
            ..FieldErrors::default()
        }),
    }
}

/// Registers a client owned by `user`, restricted to the user's tenant. Returns it with
/// its secret (confidential clients), shown once.
pub async fn create_client(
    store: &dyn Store,
    user: &User,
    name: &str,
    callback_urls: Vec<String>,
    public: bool,
    now: UnixTime,
) -> Result<(Client, Option<String>), SelfServiceError> {
    let mut errors = FieldErrors {
        name: name_error(name),
        callback_urls: callback_error(&callback_urls),
        ..FieldErrors::default()
    };
    if errors.name.is_none() && name_taken(store, &user.id, name, None).await? {
        errors.name = Some(format!(
            "You already have an application named {:?}.",
            name.trim()
        ));
    }
    if !errors.is_empty() {
        return Err(SelfServiceError::Fields(errors));
    }
    let new = NewClient {
        name: name.trim().to_owned(),
        redirect_uris: callback_urls,
        public,
        tenant: Some(user.tenant.clone()),
        owner: Some(user.id.clone()),
        ..NewClient::default()
    };
    admin::create_client(store, &new, now)
        .await
        .map_err(admin_error)
}

/// The client `id` if `user` owns it; `None` for missing clients and other users' alike.
pub async fn owned_client(
    store: &dyn Store,
    user: &User,
    id: &str,
) -> Result<Option<Client>, StoreError> {
    Ok(store
        .get_client(id)
        .await?
        .filter(|c| c.owner.as_deref() == Some(user.id.as_str())))
}

/// Renames the client and replaces its callback URLs, validated as at registration.
pub async fn update_client(
    store: &dyn Store,
    user: &User,
    client: &Client,
    name: &str,
    callback_urls: Vec<String>,
) -> Result<Client, SelfServiceError> {
    let mut errors = FieldErrors {
        name: name_error(name),
        callback_urls: callback_error(&callback_urls),
        ..FieldErrors::default()
    };
    if errors.name.is_none() && name_taken(store, &user.id, name, Some(&client.id)).await? {
        errors.name = Some(format!(
            "You already have an application named {:?}.",
            name.trim()
        ));
    }
    if !errors.is_empty() {
        return Err(SelfServiceError::Fields(errors));
    }
    // The admin rules once more, on the whole registration as it will be stored.
    let check = NewClient {
        name: name.trim().to_owned(),
        redirect_uris: callback_urls,
        public: client.public,
        ..NewClient::default()
    };
    let checked =
        admin::build_client(&check, client.id.clone(), client.created_at).map_err(admin_error)?;
    let mut updated = client.clone();
    updated.name = checked.name;
    updated.redirect_uris = checked.redirect_uris;
    if !store.update_client(&updated).await? {
        return Err(SelfServiceError::Store(StoreError::NotFound(
            "client".into(),
        )));
    }
    Ok(updated)
}

/// Scopes a personal access token may carry: the claims userinfo can release plus any
/// API scope, but never `offline_access` (a personal token has no refresh token).
fn token_scope(checked: &[&str], other: &str) -> Result<ScopeSet, String> {
    let mut text = checked.join(" ");
    text.push(' ');
    text.push_str(other);
    let scope = ScopeSet::parse(text.trim()).map_err(|e| e.description)?;
    if scope.contains("offline_access") {
        return Err(
            "offline_access does not apply: personal access tokens are not refreshed.".into(),
        );
    }
    if scope.is_empty() {
        return Err("Choose at least one scope.".into());
    }
    Ok(scope)
}

/// Creates a personal access token for `user`; returns its record and the token, shown
/// once. The token is an ordinary access token under a grant of its own.
pub async fn create_personal_token(
    store: &dyn Store,
    user: &User,
    name: &str,
    scopes: &[&str],
    other_scopes: &str,
    days: Option<&str>,
    now: UnixTime,
) -> Result<(PersonalAccessToken, String), SelfServiceError> {
    let mut errors = FieldErrors {
        name: name_error(name),
        ..FieldErrors::default()
    };
    let scope = token_scope(scopes, other_scopes)
        .map_err(|e| errors.scopes = Some(e))
        .ok();
    let days = days
        .and_then(|d| d.parse::<i64>().ok())
        .filter(|d| PERSONAL_TOKEN_DAYS.contains(d));
    if days.is_none() {
        errors.expiry = Some("Choose when the token expires.".into());
    }
    let (Some(scope), Some(days), true) = (scope, days, errors.is_empty()) else {
        return Err(SelfServiceError::Fields(errors));
    };
    let ttl = (days * 24 * 3600).min(MAX_PERSONAL_TOKEN_TTL);
    let internal = |e: String| SelfServiceError::Store(StoreError::Internal(e));
    let token = secret(PERSONAL_TOKEN_PREFIX).map_err(|e| internal(e.description))?;
    let hash = SecretHash::of(&token).0;
    let grant = Grant {
        id: new_grant_id().map_err(|e| internal(e.description))?,
        client_id: PERSONAL_TOKEN_CLIENT_ID.to_owned(),
        user_id: Some(user.id.clone()),
        tenant: Some(user.tenant.clone()),
        scope: scope.clone(),
        audiences: Vec::new(),
        auth_time: None,
        sid: None,
        created_at: now,
    };
    let access = AccessToken {
        hash,
        grant_id: grant.id.clone(),
        client_id: PERSONAL_TOKEN_CLIENT_ID.to_owned(),
        user_id: Some(user.id.clone()),
        tenant: Some(user.tenant.clone()),
        scope: scope.clone(),
        audiences: Vec::new(),
        issued_at: now,
        expires_at: now + ttl,
        revoked: false,
    };
    let record = PersonalAccessToken {
        id: tessera_crypto::random_id(12).map_err(|e| internal(e.to_string()))?,
        user_id: user.id.clone(),
        tenant: user.tenant.clone(),
        name: name.trim().to_owned(),
        scope,
        grant_id: grant.id.clone(),
        token_hash: hash,
        created_at: now,
        expires_at: now + ttl,
        last_used_at: None,
    };
    let issuance = Issuance {
        new_grant: Some(grant),
        standing_grant: false,
        access,
        refresh: None,
        audit: Vec::new(),
    };
    store.create_personal_token(&record, &issuance).await?;
    Ok((record, token))
}

/// A date and time for people, in UTC: `2026-11-23 17:40 UTC`.
pub fn format_time(t: UnixTime) -> String {
    match time::OffsetDateTime::from_unix_timestamp(t) {
        Ok(d) => format!(
            "{:04}-{:02}-{:02} {:02}:{:02} UTC",
            d.year(),
            u8::from(d.month()),
            d.day(),
            d.hour(),
            d.minute()
        ),
        Err(_) => t.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn callback_urls_follow_the_registration_rules() {
        let urls = |s: &str| split_callback_urls(s);
        assert_eq!(callback_error(&urls("https://app.example/cb")), None);
        assert_eq!(
            callback_error(&urls("https://a.example/cb\n  http://127.0.0.1:9/cb\n")),
            None
        );
        assert!(callback_error(&urls("")).is_some());
        assert!(callback_error(&urls("http://app.example/cb")).is_some());
        assert!(callback_error(&urls("https://app.example/cb#frag")).is_some());
        assert!(callback_error(&urls("/relative/cb")).is_some());
        let many = (0..11)
            .map(|i| format!("https://a.example/{i}"))
            .collect::<Vec<_>>();
        assert!(callback_error(&many).is_some());
    }

    #[test]
    fn names_are_checked() {
        assert!(name_error(" ").is_some());
        assert!(name_error("My app").is_none());
        assert!(name_error(&"x".repeat(201)).is_some());
    }

    #[test]
    fn token_scopes_refuse_offline_access_and_nothing() {
        assert_eq!(
            token_scope(&["openid", "profile"], " read:things ").map(|s| s.to_string()),
            Ok("openid profile read:things".to_owned())
        );
        assert!(token_scope(&["offline_access"], "").is_err());
        assert!(token_scope(&[], "").is_err());
        assert!(token_scope(&[], "bad\"scope").is_err());
    }

    #[test]
    fn times_read_as_utc() {
        assert_eq!(format_time(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_time(1_800_000_000), "2027-01-15 08:00 UTC");
    }
}
