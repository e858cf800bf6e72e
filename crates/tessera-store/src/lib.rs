//! The storage boundary of Tessera: one trait every backend implements, and the
//! conformance suite every backend must pass (see [`conformance`]).
//!
//! Operations are whole protocol steps ("redeem this code and store these tokens"), not
//! rows, so that each backend makes each step atomic its own way (SQLite: one writer
//! thread committing queued steps in groups; PostgreSQL: a transaction with conditional
//! updates). Races are then impossible by construction: a code is redeemed, or a refresh
//! token rotated, by exactly one caller.
//!
//! Invariant: no plaintext secret crosses this boundary; only SHA-256 hashes do.

use async_trait::async_trait;
use tessera_core::client::Client;
use tessera_core::keys::{KeyRetirement, SigningKeyRecord};
use tessera_core::model::{
    AccessToken, AuditEvent, AuthorizationCode, Consent, Grant, Hash, Pruned, RefreshToken,
    Session, Tenant, User,
};
use tessera_core::personal_token::PersonalAccessToken;
use tessera_core::UnixTime;

pub mod conformance;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique constraint: the tenant, username or client already exists.
    #[error("already exists: {0}")]
    Conflict(String),
    /// A referenced record (e.g. the tenant of a new user) does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The store cannot be reached or is out of resources (disk full, read-only, down):
    /// the server answers 503 / `temporarily_unavailable`.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Anything else; logged, answered as `server_error`.
    #[error("store failure: {0}")]
    Internal(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// What [`Store::get_client_and_refresh_token`] found.
#[derive(Debug, Clone, Default)]
pub struct RefreshLookup {
    pub client: Option<Client>,
    pub token: Option<RefreshToken>,
    /// The user of the token's grant, when [`RefreshLookup::user_wanted`] names one and
    /// that user exists.
    pub user: Option<User>,
}

impl RefreshLookup {
    /// The user to read with `token`: its grant's, if its scope lets a refresh return an
    /// ID token (OIDC Core §12.2).
    pub fn user_wanted(token: &RefreshToken) -> Option<&str> {
        token
            .grant
            .user_id
            .as_deref()
            .filter(|_| token.grant.scope.contains("openid"))
    }
}

/// Tokens to persist in one atomic step: the access token, and the refresh token issued
/// with it, under a grant that is created in the same step when `new_grant` is set.
#[derive(Debug, Clone)]
pub struct Issuance {
    pub new_grant: Option<Grant>,
    /// `new_grant` is the client's standing client_credentials grant: stored by the first
    /// step that names it (a later step keeps the stored row as it is) and kept until the
    /// client is deleted, so its bound is "never" and no token ever writes its row.
    pub standing_grant: bool,
    pub access: AccessToken,
    pub refresh: Option<RefreshToken>,
    /// Audit events describing this issuance, appended in the same atomic step if and only
    /// if the tokens are stored: one durable commit per token response, not two.
    pub audit: Vec<AuditEvent>,
}

impl Issuance {
    /// The bound of the grant this step creates: never for a standing grant, else the
    /// latest expiry among the tokens this step stores. The janitor deletes a grant only
    /// once past its stored bound, and a token whose grant is gone is dead, so the bound
    /// must never fall short of a live token (tokens stored later under the grant raise
    /// it: see the backends' migration 7).
    pub fn new_grant_bound(&self) -> UnixTime {
        if self.standing_grant {
            return UnixTime::MAX;
        }
        let refresh = self.refresh.as_ref().map_or(0, |r| r.expires_at);
        self.access.expires_at.max(refresh)
    }
}

/// Outcome of an atomic compare-and-set step (code redemption, refresh rotation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    /// This caller won: the tokens are stored.
    Done,
    /// Someone else already consumed the code / rotated the token: nothing was stored.
    AlreadyUsed,
}

/// Failure counters every node of a cluster shares (PostgreSQL), so abuse limits hold
/// however a load balancer spreads the requests. Counts live in fixed one-minute windows.
#[async_trait]
pub trait SharedCounters: Send + Sync {
    /// Adds `cost` to `key`'s count in the window starting at `window_start` (Unix
    /// seconds) and returns the window's new total.
    async fn add_failures(&self, key: &str, window_start: UnixTime, cost: u32) -> StoreResult<u64>;
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Cheap round trip, for readiness checks.
    async fn ping(&self) -> StoreResult<()>;

    /// Counters shared with other nodes on the same store, if this store can be shared
    /// (SQLite is one node by construction: its limits stay in memory).
    fn shared_counters(&self) -> Option<&dyn SharedCounters> {
        None
    }

    async fn create_tenant(&self, tenant: &Tenant) -> StoreResult<()>;
    async fn get_tenant(&self, id: &str) -> StoreResult<Option<Tenant>>;
    async fn list_tenants(&self) -> StoreResult<Vec<Tenant>>;

    /// Fails with `NotFound` when the tenant does not exist, `Conflict` when the username
    /// is taken in that tenant.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, id: &str) -> StoreResult<Option<User>>;
    async fn find_user(&self, tenant: &str, username: &str) -> StoreResult<Option<User>>;

    async fn create_client(&self, client: &Client) -> StoreResult<()>;
    async fn get_client(&self, id: &str) -> StoreResult<Option<Client>>;
    async fn list_clients(&self) -> StoreResult<Vec<Client>>;
    /// Deletes the client with every code, grant, token and consent it holds, so that
    /// nothing it was issued validates again. Returns whether it existed.
    async fn delete_client(&self, id: &str) -> StoreResult<bool>;
    /// Replaces the secret hash. Returns whether the client existed.
    async fn set_client_secret(&self, id: &str, secret_hash: &Hash) -> StoreResult<bool>;

    async fn create_session(&self, session: &Session) -> StoreResult<()>;
    async fn get_session(&self, hash: &Hash) -> StoreResult<Option<Session>>;
    async fn delete_session(&self, hash: &Hash) -> StoreResult<()>;

    async fn get_consent(&self, user_id: &str, client_id: &str) -> StoreResult<Option<Consent>>;
    /// Inserts or replaces the consent of this user for this client.
    async fn save_consent(&self, consent: &Consent) -> StoreResult<()>;

    async fn insert_code(&self, code: &AuthorizationCode) -> StoreResult<()>;
    async fn get_code(&self, hash: &Hash) -> StoreResult<Option<AuthorizationCode>>;
    /// Marks the code used and stores `issuance`, atomically, if and only if the code is
    /// still unused.
    async fn redeem_code(
        &self,
        code_hash: &Hash,
        issuance: &Issuance,
        now: UnixTime,
    ) -> StoreResult<Swap>;

    /// Stores tokens that consume nothing (client_credentials).
    async fn issue(&self, issuance: &Issuance) -> StoreResult<()>;
    async fn get_access_token(&self, hash: &Hash) -> StoreResult<Option<AccessToken>>;
    async fn get_refresh_token(&self, hash: &Hash) -> StoreResult<Option<RefreshToken>>;

    /// The client a request authenticates as and the access token it presents
    /// (introspection), as [`get_client`](Store::get_client) and
    /// [`get_access_token`](Store::get_access_token) return them, read together: a
    /// backend can answer both from one snapshot (SQLite: one read transaction instead of
    /// two, whose begin and end were a sixth of an introspection's CPU).
    async fn get_client_and_access_token(
        &self,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<(Option<Client>, Option<AccessToken>)> {
        Ok((
            self.get_client(client_id).await?,
            self.get_access_token(token_hash).await?,
        ))
    }

    /// The client a request authenticates as, the refresh token it presents and that
    /// token's user, read together as in
    /// [`get_client_and_access_token`](Store::get_client_and_access_token). The user is
    /// read only when an ID token may be wanted: the token's grant has a user and its
    /// scope carries `openid`.
    async fn get_client_and_refresh_token(
        &self,
        client_id: &str,
        token_hash: &Hash,
    ) -> StoreResult<RefreshLookup> {
        let client = self.get_client(client_id).await?;
        let token = self.get_refresh_token(token_hash).await?;
        let user = match token.as_ref().and_then(RefreshLookup::user_wanted) {
            Some(user_id) => self.get_user(user_id).await?,
            None => None,
        };
        Ok(RefreshLookup {
            client,
            token,
            user,
        })
    }
    /// If `old` is still active: marks it rotated at `now` into `issuance`'s refresh token,
    /// revokes the access token issued with it, and stores `issuance`, atomically.
    /// Otherwise stores nothing. `sealed_successor` (only with the retry window on) is
    /// kept with `old` until the successor is itself rotated; it is the only place a
    /// refresh token is stored other than by hash, and it is encrypted.
    async fn rotate_refresh_token(
        &self,
        old: &Hash,
        issuance: &Issuance,
        sealed_successor: Option<&[u8]>,
        now: UnixTime,
    ) -> StoreResult<Swap>;
    /// The refresh retry window: if `old` was rotated into `successor` at or after
    /// `rotated_since`, and `successor` is still active (unused, unexpired, its grant not
    /// revoked), replaces the successor's access token with `access` (revoking the one it
    /// replaces), atomically. Otherwise stores nothing and returns `AlreadyUsed`.
    async fn retry_rotation(
        &self,
        old: &Hash,
        successor: &Hash,
        rotated_since: UnixTime,
        access: &AccessToken,
        now: UnixTime,
    ) -> StoreResult<Swap>;

    /// Revokes the grant and with it every access and refresh token issued under it.
    async fn revoke_grant(&self, grant_id: &str, now: UnixTime) -> StoreResult<()>;
    async fn revoke_access_token(&self, hash: &Hash, now: UnixTime) -> StoreResult<()>;

    /// Appends to the audit trail (durable like every other write).
    async fn append_audit(&self, events: &[AuditEvent]) -> StoreResult<()>;
    /// Audit events at or after `since`, oldest first, at most `limit`.
    async fn list_audit(&self, since: UnixTime, limit: u32) -> StoreResult<Vec<AuditEvent>>;

    /// Deletes at most `batch` rows of each kind that can never be used again: codes,
    /// access and refresh tokens and sessions past their expiry (plus `grace` seconds),
    /// and grants with no token left. A live row is never deleted.
    async fn prune_expired(&self, now: UnixTime, grace: i64, batch: u32) -> StoreResult<Pruned>;
    /// Deletes at most `batch` audit events older than `before`, oldest first.
    async fn prune_audit(&self, before: UnixTime, batch: u32) -> StoreResult<u64>;

    async fn list_signing_keys(&self) -> StoreResult<Vec<SigningKeyRecord>>;
    /// Stores new keys and retires old ones in one atomic step (a rotation).
    async fn save_signing_keys(
        &self,
        new: &[SigningKeyRecord],
        retire: &[KeyRetirement],
    ) -> StoreResult<()>;

    // ---- Developer self-service (settings pages): clients owned by users, the apps a
    // user authorized, personal access tokens. ----

    /// Clients whose `owner` is this user id, oldest first.
    async fn list_clients_by_owner(&self, owner: &str) -> StoreResult<Vec<Client>>;
    /// Replaces the stored settings of an existing client (name, redirect URIs, …); the
    /// secret hash, owner and creation time stay. Returns whether the client existed.
    async fn update_client(&self, client: &Client) -> StoreResult<bool>;
    /// Every consent this user gave, most recent first.
    async fn list_consents(&self, user_id: &str) -> StoreResult<Vec<Consent>>;
    /// Deletes the user's consent for the client and, in the same step, revokes every grant
    /// (so every access and refresh token) the client holds for that user and consumes its
    /// unused codes. Returns whether there was a consent or a live grant.
    async fn revoke_consent(
        &self,
        user_id: &str,
        client_id: &str,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Stores a personal access token with its grant and access token (`issuance`),
    /// atomically.
    async fn create_personal_token(
        &self,
        token: &PersonalAccessToken,
        issuance: &Issuance,
    ) -> StoreResult<()>;
    /// The user's personal access tokens, newest first.
    async fn list_personal_tokens(&self, user_id: &str) -> StoreResult<Vec<PersonalAccessToken>>;
    /// Revokes the user's token `id` (its grant) and forgets it. Returns whether this user
    /// had such a token: another user's id changes nothing.
    async fn revoke_personal_token(
        &self,
        user_id: &str,
        id: &str,
        now: UnixTime,
    ) -> StoreResult<bool>;
    /// Records that the token with this hash was used (at most one write a minute).
    async fn touch_personal_token(&self, token_hash: &Hash, now: UnixTime) -> StoreResult<()>;
}
