//! The token endpoint's request (RFC 6749 §4.1.3, §4.4.2, §6) as one variant per grant.

use crate::params::Params;
use crate::{ErrorCode, OAuthError, ScopeSet};

/// A parsed token request. Adding a grant means adding a variant here and its handler in
/// the server's grant dispatch.
#[derive(Clone, PartialEq, Eq)]
pub enum TokenRequest {
    AuthorizationCode {
        code: String,
        redirect_uri: Option<String>,
        code_verifier: Option<String>,
    },
    RefreshToken {
        refresh_token: String,
        /// `None` when absent or empty (`scope=` is accepted and ignored, contract §4).
        scope: Option<ScopeSet>,
    },
    ClientCredentials {
        scope: ScopeSet,
        audiences: Vec<String>,
    },
}

impl std::fmt::Debug for TokenRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Codes, verifiers and refresh tokens are secrets: name the grant only.
        f.write_str(match self {
            TokenRequest::AuthorizationCode { .. } => "TokenRequest::AuthorizationCode",
            TokenRequest::RefreshToken { .. } => "TokenRequest::RefreshToken",
            TokenRequest::ClientCredentials { .. } => "TokenRequest::ClientCredentials",
        })
    }
}

impl TokenRequest {
    pub fn parse(params: &Params) -> Result<TokenRequest, OAuthError> {
        let grant_type = params.required("grant_type")?;
        match grant_type {
            "authorization_code" => Ok(TokenRequest::AuthorizationCode {
                code: params.required("code")?.to_owned(),
                redirect_uri: params.single("redirect_uri")?.map(str::to_owned),
                code_verifier: params.single("code_verifier")?.map(str::to_owned),
            }),
            "refresh_token" => {
                // redirect_uri is accepted and ignored (Kanka sends it).
                params.single("redirect_uri")?;
                Ok(TokenRequest::RefreshToken {
                    refresh_token: params.required("refresh_token")?.to_owned(),
                    scope: params.single("scope")?.map(ScopeSet::parse).transpose()?,
                })
            }
            "client_credentials" => {
                let mut audiences: Vec<String> = Vec::new();
                for a in params
                    .multi("audience")
                    .into_iter()
                    .chain(params.multi("resource"))
                {
                    if !audiences.iter().any(|x| x == a) {
                        audiences.push(a.to_owned());
                    }
                }
                Ok(TokenRequest::ClientCredentials {
                    scope: ScopeSet::parse(params.single("scope")?.unwrap_or(""))?,
                    audiences,
                })
            }
            other => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                format!(
                    "unsupported grant_type {:?}",
                    other.chars().take(64).collect::<String>()
                ),
            )),
        }
    }

    pub fn grant_type(&self) -> crate::client::GrantType {
        use crate::client::GrantType;
        match self {
            TokenRequest::AuthorizationCode { .. } => GrantType::AuthorizationCode,
            TokenRequest::RefreshToken { .. } => GrantType::RefreshToken,
            TokenRequest::ClientCredentials { .. } => GrantType::ClientCredentials,
        }
    }
}

/// Scopes that only make sense with a resource owner, refused for client_credentials.
pub fn check_client_credentials_scope(scope: &ScopeSet) -> Result<(), OAuthError> {
    for user_scope in [crate::scope::OPENID, crate::scope::OFFLINE_ACCESS] {
        if scope.contains(user_scope) {
            return Err(OAuthError::invalid_scope(format!(
                "{user_scope} needs a user; it cannot be granted to client_credentials"
            )));
        }
    }
    Ok(())
}

/// The successful token response body (RFC 6749 §5.1).
#[derive(Debug, Clone, serde::Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub scope: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id_token: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(q: &str) -> Result<TokenRequest, OAuthError> {
        TokenRequest::parse(&Params::parse(q.as_bytes()).unwrap())
    }

    #[test]
    fn one_variant_per_grant() {
        assert!(matches!(
            parse("grant_type=authorization_code&code=x").unwrap(),
            TokenRequest::AuthorizationCode { .. }
        ));
        assert_eq!(
            parse("grant_type=refresh_token&refresh_token=r&scope=").unwrap(),
            TokenRequest::RefreshToken {
                refresh_token: "r".into(),
                scope: None
            }
        );
        assert_eq!(
            parse("grant_type=password").unwrap_err().code,
            ErrorCode::UnsupportedGrantType
        );
        assert_eq!(parse("code=x").unwrap_err().code, ErrorCode::InvalidRequest);
        assert_eq!(
            parse("grant_type=authorization_code").unwrap_err().code,
            ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let r = parse("grant_type=refresh_token&refresh_token=SECRET").unwrap();
        assert!(!format!("{r:?}").contains("SECRET"));
    }
}
