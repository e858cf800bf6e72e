//! Registered clients and their policies; client authentication (RFC 6749 §2.3).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::{OAuthError, ScopeSet, UnixTime};

/// Grant types a client may be registered for. New grants (device code, token exchange)
/// are added here and in [`crate::token::TokenRequest`], nowhere else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub const ALL: [GrantType; 3] = [
        GrantType::AuthorizationCode,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantType::AuthorizationCode => "authorization_code",
            GrantType::RefreshToken => "refresh_token",
            GrantType::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(s: &str) -> Option<GrantType> {
        Self::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// Client authentication methods (RFC 7591 §2 names). `private_key_jwt` slots in here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthMethod {
    ClientSecretBasic,
    ClientSecretPost,
    None,
}

impl ClientAuthMethod {
    pub const ALL: [ClientAuthMethod; 3] = [
        ClientAuthMethod::ClientSecretBasic,
        ClientAuthMethod::ClientSecretPost,
        ClientAuthMethod::None,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuthMethod::ClientSecretBasic => "client_secret_basic",
            ClientAuthMethod::ClientSecretPost => "client_secret_post",
            ClientAuthMethod::None => "none",
        }
    }

    pub fn parse(s: &str) -> Option<ClientAuthMethod> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// When the token endpoint hands out a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefreshPolicy {
    /// Whenever the client may use the refresh_token grant.
    Always,
    /// Only when the granted scope contains `offline_access` (Katana, OIDC Core §11).
    OfflineAccess,
}

impl RefreshPolicy {
    pub fn parse(s: &str) -> Option<RefreshPolicy> {
        match s {
            "always" => Some(RefreshPolicy::Always),
            "offline-access" | "offline_access" => Some(RefreshPolicy::OfflineAccess),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            RefreshPolicy::Always => "always",
            RefreshPolicy::OfflineAccess => "offline-access",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessTokenFormat {
    Opaque,
    Jwt,
}

impl AccessTokenFormat {
    pub fn parse(s: &str) -> Option<AccessTokenFormat> {
        match s {
            "opaque" => Some(AccessTokenFormat::Opaque),
            "jwt" => Some(AccessTokenFormat::Jwt),
            _ => None,
        }
    }
    pub fn as_str(self) -> &'static str {
        match self {
            AccessTokenFormat::Opaque => "opaque",
            AccessTokenFormat::Jwt => "jwt",
        }
    }
}

/// A registered client. `secret_hash` is the SHA-256 of the secret; the secret itself is
/// shown once at creation and never stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub name: String,
    #[serde(skip)]
    pub secret_hash: Option<[u8; 32]>,
    pub public: bool,
    pub auth_methods: Vec<ClientAuthMethod>,
    pub grant_types: Vec<GrantType>,
    pub redirect_uris: Vec<String>,
    pub scopes: ScopeSet,
    pub audiences: Vec<String>,
    pub refresh_policy: RefreshPolicy,
    pub access_token_format: AccessTokenFormat,
    pub access_token_ttl: i64,
    pub refresh_token_ttl: Option<i64>,
    pub require_pkce: bool,
    pub skip_consent: bool,
    pub tenant: Option<String>,
    pub owner: Option<String>,
    pub created_at: UnixTime,
    /// JWS algorithm of ID tokens and JWT access tokens (OIDC Registration
    /// `id_token_signed_response_alg`). New clients get [`DEFAULT_SIGNING_ALG`]; records
    /// stored before the field existed keep the RS256 they were signed with.
    #[serde(default = "stored_before_signing_algs")]
    pub id_token_signed_response_alg: String,
    /// Where RP-initiated logout may send the browser afterwards.
    #[serde(default)]
    pub post_logout_redirect_uris: Vec<String>,
}

/// The algorithm of clients registered without one: ES256 signs about twenty times faster
/// than RS256 (RSA-2048 signing dominated the refresh profile), with shorter tokens, and
/// every mainstream OIDC library verifies it. RS256 and EdDSA stay available per client.
pub const DEFAULT_SIGNING_ALG: &str = "ES256";

fn stored_before_signing_algs() -> String {
    "RS256".to_owned()
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

pub const DEFAULT_ACCESS_TOKEN_TTL: i64 = 3600;
/// One year: the longest lifetime the providers we replace document.
pub const MAX_TOKEN_TTL: i64 = 31_536_000;

impl Client {
    pub fn allows_grant(&self, grant: GrantType) -> bool {
        self.grant_types.contains(&grant)
    }

    /// PKCE is mandatory for public clients (OAuth 2.1 §7.5.1) and for clients registered so.
    pub fn pkce_required(&self) -> bool {
        self.public || self.require_pkce
    }

    /// Whether a token response for `scope` carries a refresh token.
    pub fn issues_refresh_token(&self, scope: &ScopeSet) -> bool {
        self.allows_grant(GrantType::RefreshToken)
            && match self.refresh_policy {
                RefreshPolicy::Always => true,
                RefreshPolicy::OfflineAccess => scope.contains(crate::scope::OFFLINE_ACCESS),
            }
    }

    /// Checks that every requested audience/resource is registered for this client
    /// (RFC 8707 §2: `invalid_target`).
    pub fn check_audiences(&self, requested: &[String]) -> Result<(), OAuthError> {
        match requested.iter().find(|a| !self.audiences.contains(a)) {
            None => Ok(()),
            Some(a) => Err(OAuthError::new(
                crate::ErrorCode::InvalidTarget,
                format!("audience {a:?} is not allowed for this client"),
            )),
        }
    }

    /// Checks requested scopes against the registration (`invalid_scope`).
    pub fn check_scopes(&self, requested: &ScopeSet) -> Result<(), OAuthError> {
        let extra = requested.not_in(&self.scopes);
        if extra.is_empty() {
            Ok(())
        } else {
            Err(OAuthError::invalid_scope(format!(
                "scope not allowed for this client: {}",
                extra.join(" ")
            )))
        }
    }
}

/// Client credentials as presented at the token, introspection or revocation endpoint.
#[derive(Clone)]
pub struct PresentedClient {
    pub client_id: String,
    pub secret: Option<String>,
    pub method: ClientAuthMethod,
}

impl std::fmt::Debug for PresentedClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedClient")
            .field("client_id", &self.client_id)
            .field("method", &self.method)
            .finish_non_exhaustive()
    }
}

impl PresentedClient {
    /// Reads the credentials from an `Authorization` header value and the body's
    /// `client_id` / `client_secret`. RFC 6749 §2.3: a client MUST NOT use more than one
    /// authentication method in a request.
    pub fn from_request(
        authorization: Option<&str>,
        body_client_id: Option<&str>,
        body_secret: Option<&str>,
    ) -> Result<PresentedClient, OAuthError> {
        if let Some(header) = authorization {
            let (id, secret) = parse_basic(header)?;
            if body_secret.is_some() {
                return Err(OAuthError::invalid_request(
                    "use either HTTP Basic or client_secret in the body, not both",
                ));
            }
            if body_client_id.is_some_and(|b| b != id) {
                return Err(OAuthError::invalid_request(
                    "client_id in the body differs from the authenticated client",
                ));
            }
            return Ok(PresentedClient {
                client_id: id,
                secret: Some(secret),
                method: ClientAuthMethod::ClientSecretBasic,
            });
        }
        let client_id = body_client_id
            .ok_or_else(|| OAuthError::invalid_client("client authentication is required"))?;
        Ok(match body_secret {
            Some(secret) => PresentedClient {
                client_id: client_id.to_owned(),
                secret: Some(secret.to_owned()),
                method: ClientAuthMethod::ClientSecretPost,
            },
            None => PresentedClient {
                client_id: client_id.to_owned(),
                secret: None,
                method: ClientAuthMethod::None,
            },
        })
    }

    /// Authenticates against the registered `client` (whose id was looked up from
    /// `self.client_id`). Every failure is the same `invalid_client`, so an attacker learns
    /// nothing about which part was wrong.
    pub fn authenticate(&self, client: &Client) -> Result<(), OAuthError> {
        let failed = || OAuthError::invalid_client("client authentication failed");
        if !client.auth_methods.contains(&self.method) {
            return Err(failed());
        }
        match (&self.secret, &client.secret_hash, self.method) {
            (None, _, ClientAuthMethod::None) if client.public => Ok(()),
            (Some(secret), Some(stored), _) if !client.public => {
                let presented: [u8; 32] = Sha256::digest(secret.as_bytes()).into();
                if bool::from(presented.ct_eq(stored)) {
                    Ok(())
                } else {
                    Err(failed())
                }
            }
            _ => Err(failed()),
        }
    }
}

/// RFC 6749 §2.3.1 / RFC 7617: `Basic base64(urlencode(id) ":" urlencode(secret))`.
pub fn parse_basic(header: &str) -> Result<(String, String), OAuthError> {
    let bad = || OAuthError::invalid_client("malformed HTTP Basic credentials");
    let (scheme, rest) = header.trim().split_once(' ').ok_or_else(bad)?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(OAuthError::invalid_client(
            "unsupported Authorization scheme at this endpoint",
        ));
    }
    let decoded = STANDARD.decode(rest.trim()).map_err(|_| bad())?;
    let text = String::from_utf8(decoded).map_err(|_| bad())?;
    let (id, secret) = text.split_once(':').ok_or_else(bad)?;
    let id = form_decode(id).ok_or_else(bad)?;
    let secret = form_decode(secret).ok_or_else(bad)?;
    if id.is_empty() {
        return Err(bad());
    }
    Ok((id, secret))
}

fn form_decode(s: &str) -> Option<String> {
    // Most ids and secrets have nothing to decode (ours are base64url): skip the parser,
    // which showed in every client-authenticated request's profile.
    if !s.contains(['%', '+', '&']) {
        return (!s.contains('\u{FFFD}')).then(|| s.to_owned());
    }
    form_decode_slowly(s)
}

fn form_decode_slowly(s: &str) -> Option<String> {
    let decoded: String = url::form_urlencoded::parse(format!("v={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    (!decoded.contains('\u{FFFD}')).then_some(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(public: bool) -> Client {
        Client {
            id: "c1".into(),
            name: "App".into(),
            secret_hash: (!public).then(|| Sha256::digest(b"s3cr3t").into()),
            public,
            auth_methods: if public {
                vec![ClientAuthMethod::None]
            } else {
                vec![
                    ClientAuthMethod::ClientSecretBasic,
                    ClientAuthMethod::ClientSecretPost,
                ]
            },
            grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            redirect_uris: vec![],
            scopes: ScopeSet::parse("openid offline_access").unwrap(),
            audiences: vec![],
            refresh_policy: RefreshPolicy::OfflineAccess,
            access_token_format: AccessTokenFormat::Opaque,
            access_token_ttl: 3600,
            refresh_token_ttl: None,
            require_pkce: false,
            skip_consent: false,
            tenant: None,
            owner: None,
            created_at: 0,
            id_token_signed_response_alg: DEFAULT_SIGNING_ALG.into(),
            post_logout_redirect_uris: vec![],
        }
    }

    #[test]
    fn records_stored_before_signing_algs_existed_keep_rs256() {
        let mut record = serde_json::to_value(client(false)).unwrap();
        assert_eq!(record["id_token_signed_response_alg"], "ES256");
        record
            .as_object_mut()
            .unwrap()
            .remove("id_token_signed_response_alg");
        let stored: Client = serde_json::from_value(record).unwrap();
        assert_eq!(stored.id_token_signed_response_alg, "RS256");
    }

    #[test]
    fn basic_header_is_url_decoded() {
        let h = format!("Basic {}", STANDARD.encode("my%20id:p%3Ass"));
        assert_eq!(parse_basic(&h).unwrap(), ("my id".into(), "p:ss".into()));
        assert!(parse_basic("Basic !!!").is_err());
        assert!(parse_basic("Bearer x").is_err());
    }

    proptest::proptest! {
        /// The shortcut for values with nothing to decode answers what the form decoder
        /// answers, for any text.
        #[test]
        fn form_decode_shortcut_agrees_with_the_form_decoder(s in "\\PC{0,40}") {
            proptest::prop_assert_eq!(form_decode(&s), form_decode_slowly(&s));
        }

        #[test]
        fn form_decode_agrees_on_form_like_text(s in "[a-zA-Z0-9%+&=_~.\\-]{0,40}") {
            proptest::prop_assert_eq!(form_decode(&s), form_decode_slowly(&s));
        }
    }

    #[test]
    fn two_methods_at_once_refused() {
        let h = format!("Basic {}", STANDARD.encode("c1:s3cr3t"));
        assert!(PresentedClient::from_request(Some(&h), None, Some("s3cr3t")).is_err());
    }

    #[test]
    fn secret_checked_and_method_enforced() {
        let c = client(false);
        let ok = PresentedClient::from_request(None, Some("c1"), Some("s3cr3t")).unwrap();
        assert!(ok.authenticate(&c).is_ok());
        let wrong = PresentedClient::from_request(None, Some("c1"), Some("nope")).unwrap();
        assert!(wrong.authenticate(&c).is_err());
        let none = PresentedClient::from_request(None, Some("c1"), None).unwrap();
        assert!(none.authenticate(&c).is_err());
        let public = client(true);
        assert!(none.authenticate(&public).is_ok());
        assert!(ok.authenticate(&public).is_err());
    }

    #[test]
    fn refresh_policy() {
        let c = client(false);
        assert!(!c.issues_refresh_token(&ScopeSet::parse("openid").unwrap()));
        assert!(c.issues_refresh_token(&ScopeSet::parse("offline_access").unwrap()));
    }
}
