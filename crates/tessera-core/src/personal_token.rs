//! Personal access tokens: bearer tokens a user creates for their own scripts, with a
//! name, scopes and an expiry. Each is an ordinary access token under a grant of its own,
//! so userinfo, introspection and revocation treat it exactly like any other.

use crate::model::Hash;
use crate::{ScopeSet, UnixTime};

/// The `client_id` of the grants and access tokens behind personal access tokens. Client
/// ids we generate are 22 base64url characters, so this one can never name a real client.
pub const PERSONAL_TOKEN_CLIENT_ID: &str = "personal-access-token";

/// Longest lifetime a personal access token may be given: one year.
pub const MAX_PERSONAL_TOKEN_TTL: i64 = 365 * 24 * 3600;

/// The record of a personal access token; the token itself is shown once and only its
/// SHA-256 hash is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersonalAccessToken {
    pub id: String,
    pub user_id: String,
    pub tenant: String,
    pub name: String,
    pub scope: ScopeSet,
    /// The grant its access token lives under; revoking the token revokes the grant.
    pub grant_id: String,
    pub token_hash: Hash,
    pub created_at: UnixTime,
    pub expires_at: UnixTime,
    pub last_used_at: Option<UnixTime>,
}

impl PersonalAccessToken {
    pub fn is_expired(&self, now: UnixTime) -> bool {
        now >= self.expires_at
    }
}
