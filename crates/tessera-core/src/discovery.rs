//! Authorization server metadata (RFC 8414) and OpenID Provider metadata (OIDC Discovery
//! §3), listing exactly what this build implements.

use serde_json::{json, Value};

use crate::authorize::ResponseMode;
use crate::client::{ClientAuthMethod, GrantType};

/// Scopes advertised in `scopes_supported`.
pub const SCOPES_SUPPORTED: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// JWS algorithms of ID tokens and JWT access tokens (RS256 first: the OIDC default).
pub const SIGNING_ALGS: [&str; 3] = ["RS256", "ES256", "EdDSA"];

pub const CLAIMS_SUPPORTED: [&str; 15] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "at_hash",
    "sid",
    "tenant",
    "name",
    "preferred_username",
    "email",
    "email_verified",
    "client_id",
];

pub fn metadata(issuer: &str) -> Value {
    let base = issuer.trim_end_matches('/');
    let auth_methods: Vec<&str> = ClientAuthMethod::ALL.iter().map(|m| m.as_str()).collect();
    let secret_methods: Vec<&str> = auth_methods
        .iter()
        .copied()
        .filter(|m| *m != "none")
        .collect();
    json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{base}/oauth2/authorize"),
        "token_endpoint": format!("{base}/oauth2/token"),
        "revocation_endpoint": format!("{base}/oauth2/revoke"),
        "introspection_endpoint": format!("{base}/oauth2/introspect"),
        "userinfo_endpoint": format!("{base}/userinfo"),
        "jwks_uri": format!("{base}/.well-known/jwks.json"),
        "end_session_endpoint": format!("{base}/logout"),
        "response_types_supported": ["code"],
        "response_modes_supported": ResponseMode::ALL.iter().map(|m| m.as_str()).collect::<Vec<_>>(),
        "grant_types_supported": GrantType::ALL.iter().map(|g| g.as_str()).collect::<Vec<_>>(),
        "token_endpoint_auth_methods_supported": auth_methods,
        "revocation_endpoint_auth_methods_supported": auth_methods,
        "introspection_endpoint_auth_methods_supported": secret_methods,
        "code_challenge_methods_supported": ["S256"],
        "scopes_supported": SCOPES_SUPPORTED,
        "prompt_values_supported": ["none", "login", "consent"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": SIGNING_ALGS,
        "claims_supported": CLAIMS_SUPPORTED,
        "claims_parameter_supported": false,
        "authorization_response_iss_parameter_supported": true,
        "request_parameter_supported": false,
        "request_uri_parameter_supported": false,
    })
}
