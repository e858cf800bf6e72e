//! The OAuth 2.0 / OpenID Connect protocol rules of Tessera.
//!
//! Pure: no HTTP framework, no SQL, no clock. Handlers parse requests into the typed values
//! defined here, pass `now` explicitly, and map [`error::OAuthError`] to responses in one place.

pub mod authorize;
pub mod client;
pub mod discovery;
pub mod error;
pub mod keys;
pub mod model;
pub mod params;
pub mod personal_token;
pub mod pkce;
pub mod redirect;
pub mod scope;
pub mod token;

pub use error::{ErrorCode, OAuthError};
pub use scope::ScopeSet;

/// Seconds since the Unix epoch. Every protocol function takes the current time as a value.
pub type UnixTime = i64;
