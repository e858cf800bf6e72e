//! The authorization endpoint (RFC 6749 §4.1.1, OIDC Core §3.1.2.1, RFC 9207, RFC 8707).
//!
//! Two phases, because errors are reported differently before and after the client and
//! its redirect URI are trusted (RFC 6749 §4.1.2.1): [`trusted_redirect_uri`] failures are
//! shown on an error page, never redirected; [`validate`] failures go back to the client.

use serde::{Deserialize, Serialize};
use url::Url;

use crate::client::{Client, GrantType};
use crate::model::{validate_tenant_id, DEFAULT_TENANT};
use crate::params::Params;
use crate::pkce::CodeChallenge;
use crate::{ErrorCode, OAuthError, ScopeSet};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResponseMode {
    Query,
    Fragment,
    /// OAuth 2.0 Form Post Response Mode.
    FormPost,
}

impl ResponseMode {
    pub const ALL: [ResponseMode; 3] = [
        ResponseMode::Query,
        ResponseMode::Fragment,
        ResponseMode::FormPost,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseMode::Query => "query",
            ResponseMode::Fragment => "fragment",
            ResponseMode::FormPost => "form_post",
        }
    }
    fn parse(s: &str) -> Option<ResponseMode> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// OIDC Core §3.1.2.1 `prompt` values we support.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

/// A validated authorization request, carried (signed) through the login and consent pages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizationRequest {
    pub client_id: String,
    pub redirect_uri: String,
    pub redirect_uri_sent: bool,
    pub response_mode: ResponseMode,
    pub state: Option<String>,
    pub scope: ScopeSet,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub prompt: Prompt,
    pub max_age: Option<i64>,
    pub audiences: Vec<String>,
    pub tenant: String,
}

/// Failures that must not redirect: the redirect target is not (yet) trusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UntrustedRequest {
    #[error("The request has no client_id.")]
    MissingClientId,
    #[error("The application is unknown.")]
    UnknownClient,
    #[error("The redirect_uri is not registered for this application.")]
    RedirectUriMismatch,
    #[error("The request has no redirect_uri and the application registered several.")]
    RedirectUriRequired,
    #[error("The request is malformed: {0}")]
    Malformed(String),
}

/// Reads `client_id` without trusting anything yet.
pub fn client_id(params: &Params) -> Result<&str, UntrustedRequest> {
    params
        .single("client_id")
        .map_err(|e| UntrustedRequest::Malformed(e.description))?
        .ok_or(UntrustedRequest::MissingClientId)
}

/// RFC 6749 §3.1.2.3 with exact matching: returns the redirect URI to use and whether the
/// request sent it. It may be omitted only when exactly one URI is registered.
pub fn trusted_redirect_uri(
    params: &Params,
    client: &Client,
) -> Result<(String, bool), UntrustedRequest> {
    let requested = params
        .single("redirect_uri")
        .map_err(|e| UntrustedRequest::Malformed(e.description))?;
    match requested {
        Some(uri) => crate::redirect::find_exact(&client.redirect_uris, uri)
            .map(|u| (u.to_owned(), true))
            .ok_or(UntrustedRequest::RedirectUriMismatch),
        None => match client.redirect_uris.as_slice() {
            [only] => Ok((only.clone(), false)),
            _ => Err(UntrustedRequest::RedirectUriRequired),
        },
    }
}

/// An error to send back to the trusted redirect URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectedError {
    pub error: OAuthError,
    pub response_mode: ResponseMode,
    pub state: Option<String>,
}

/// Validates the rest of the request once the redirect URI is trusted.
pub fn validate(
    params: &Params,
    client: &Client,
    redirect_uri: String,
    redirect_uri_sent: bool,
) -> Result<AuthorizationRequest, RedirectedError> {
    // state and response_mode are needed to report any other error, so read them first,
    // falling back to the defaults when they are themselves malformed.
    let state = params.single("state").ok().flatten().map(str::to_owned);
    let mode_param = params.single("response_mode");
    let response_mode = match mode_param {
        Ok(Some(m)) => ResponseMode::parse(m),
        Ok(None) => Some(ResponseMode::Query),
        Err(_) => None,
    };
    let fail = |error: OAuthError, mode: ResponseMode| RedirectedError {
        error,
        response_mode: mode,
        state: state.clone(),
    };
    let Some(response_mode) = response_mode else {
        return Err(fail(
            OAuthError::invalid_request("unsupported or repeated response_mode"),
            ResponseMode::Query,
        ));
    };
    let fail = |error: OAuthError| fail(error, response_mode);
    if params.single("state").is_err() {
        return Err(fail(OAuthError::invalid_request(
            "parameter state is repeated",
        )));
    }
    let result = (|| {
        let response_type = params.required("response_type")?;
        if response_type != "code" {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
        if !client.allows_grant(GrantType::AuthorizationCode) {
            return Err(OAuthError::unauthorized_client(
                "this client is not registered for the authorization_code grant",
            ));
        }
        if params.contains("request") || params.contains("request_uri") {
            return Err(OAuthError::invalid_request(
                "request objects are not supported",
            ));
        }
        let scope = ScopeSet::parse(params.single("scope")?.unwrap_or(""))?;
        client.check_scopes(&scope)?;

        let code_challenge = match params.single("code_challenge")? {
            Some(c) => Some(
                CodeChallenge::parse(c, params.single("code_challenge_method")?)?
                    .as_str()
                    .to_owned(),
            ),
            None if params.single("code_challenge_method")?.is_some() => {
                return Err(OAuthError::invalid_request(
                    "code_challenge_method without code_challenge",
                ))
            }
            None if client.pkce_required() => {
                return Err(OAuthError::invalid_request(
                    "PKCE is required for this client: send code_challenge with method S256",
                ))
            }
            None => None,
        };

        let prompt = parse_prompt(params.single("prompt")?)?;
        let max_age = match params.single("max_age")? {
            Some(v) => Some(v.parse::<i64>().ok().filter(|v| *v >= 0).ok_or_else(|| {
                OAuthError::invalid_request("max_age must be a non-negative integer")
            })?),
            None => None,
        };
        let nonce = params.single("nonce")?.map(str::to_owned);

        let mut audiences: Vec<String> = Vec::new();
        for a in params
            .multi("audience")
            .into_iter()
            .chain(params.multi("resource"))
        {
            // audience may carry several space-separated values (Auth0 style is one value).
            if !audiences.iter().any(|x| x == a) {
                audiences.push(a.to_owned());
            }
        }
        for r in params.multi("resource") {
            // RFC 8707 §2: a resource is an absolute URI without a fragment.
            let ok = Url::parse(r)
                .map(|u| u.fragment().is_none())
                .unwrap_or(false);
            if !ok {
                return Err(OAuthError::new(
                    ErrorCode::InvalidTarget,
                    "resource must be an absolute URI without a fragment",
                ));
            }
        }
        client.check_audiences(&audiences)?;

        let tenant = resolve_tenant(client, params.single("tenant")?)?;

        Ok(AuthorizationRequest {
            client_id: client.id.clone(),
            redirect_uri,
            redirect_uri_sent,
            response_mode,
            state: state.clone(),
            scope,
            nonce,
            code_challenge,
            prompt,
            max_age,
            audiences,
            tenant,
        })
    })();
    result.map_err(fail)
}

fn parse_prompt(value: Option<&str>) -> Result<Prompt, OAuthError> {
    let mut prompt = Prompt::default();
    for p in value.unwrap_or("").split(' ').filter(|s| !s.is_empty()) {
        match p {
            "none" => prompt.none = true,
            "login" => prompt.login = true,
            "consent" => prompt.consent = true,
            "select_account" => {}
            _ => {
                return Err(OAuthError::invalid_request(format!(
                    "unsupported prompt {p:?}"
                )))
            }
        }
    }
    // OIDC Core §3.1.2.1: none with any other value is an error.
    if prompt.none && (prompt.login || prompt.consent) {
        return Err(OAuthError::invalid_request(
            "prompt=none cannot be combined with other values",
        ));
    }
    Ok(prompt)
}

/// A client restricted to a tenant signs users in there; otherwise the request may name
/// a tenant (`tenant=`), and the default tenant is used when it does not.
fn resolve_tenant(client: &Client, requested: Option<&str>) -> Result<String, OAuthError> {
    match (&client.tenant, requested) {
        (Some(own), Some(req)) if own != req => Err(OAuthError::invalid_request(
            "this client belongs to another tenant",
        )),
        (Some(own), _) => Ok(own.clone()),
        (None, Some(req)) => {
            validate_tenant_id(req).map_err(OAuthError::invalid_request)?;
            Ok(req.to_owned())
        }
        (None, None) => Ok(DEFAULT_TENANT.to_owned()),
    }
}

/// Where and how the authorization response goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Callback {
    /// Redirect the browser to this URL (query or fragment mode).
    Redirect(String),
    /// Auto-submit a form with these fields to `action` (form_post mode).
    FormPost {
        action: String,
        fields: Vec<(String, String)>,
    },
}

/// Builds the authorization response. Every response carries `iss` (RFC 9207) and, for
/// success, `tenant`; `state` is echoed whenever the request had one.
pub fn callback(
    redirect_uri: &str,
    mode: ResponseMode,
    fields: Vec<(String, String)>,
) -> Result<Callback, OAuthError> {
    match mode {
        ResponseMode::FormPost => Ok(Callback::FormPost {
            action: redirect_uri.to_owned(),
            fields,
        }),
        ResponseMode::Query => {
            let mut url = Url::parse(redirect_uri)
                .map_err(|_| OAuthError::server_error("registered redirect URI is unparsable"))?;
            url.query_pairs_mut().extend_pairs(fields.iter());
            Ok(Callback::Redirect(url.into()))
        }
        ResponseMode::Fragment => {
            let mut url = Url::parse(redirect_uri)
                .map_err(|_| OAuthError::server_error("registered redirect URI is unparsable"))?;
            let encoded = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(fields.iter())
                .finish();
            url.set_fragment(Some(&encoded));
            Ok(Callback::Redirect(url.into()))
        }
    }
}

/// The fields of a successful response.
pub fn success_fields(
    code: &str,
    request: &AuthorizationRequest,
    issuer: &str,
) -> Vec<(String, String)> {
    let mut f = vec![("code".to_owned(), code.to_owned())];
    if let Some(s) = &request.state {
        f.push(("state".into(), s.clone()));
    }
    f.push(("iss".into(), issuer.to_owned()));
    f.push(("tenant".into(), request.tenant.clone()));
    f
}

/// The fields of an error response (RFC 6749 §4.1.2.1).
pub fn error_fields(
    error: &OAuthError,
    state: Option<&str>,
    issuer: &str,
) -> Vec<(String, String)> {
    let mut f = vec![
        ("error".to_owned(), error.code.as_str().to_owned()),
        ("error_description".to_owned(), error.description.clone()),
    ];
    if let Some(s) = state {
        f.push(("state".into(), s.to_owned()));
    }
    f.push(("iss".into(), issuer.to_owned()));
    f
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::{AccessTokenFormat, ClientAuthMethod, RefreshPolicy};

    fn client() -> Client {
        Client {
            id: "c".into(),
            name: "App".into(),
            secret_hash: None,
            public: true,
            auth_methods: vec![ClientAuthMethod::None],
            grant_types: vec![GrantType::AuthorizationCode],
            redirect_uris: vec!["https://app/cb".into()],
            scopes: ScopeSet::parse("openid offline_access").unwrap(),
            audiences: vec!["https://api".into()],
            refresh_policy: RefreshPolicy::Always,
            access_token_format: AccessTokenFormat::Opaque,
            access_token_ttl: 3600,
            refresh_token_ttl: None,
            require_pkce: false,
            skip_consent: false,
            tenant: None,
            owner: None,
            created_at: 0,
            id_token_signed_response_alg: "RS256".into(),
            post_logout_redirect_uris: vec![],
        }
    }
    const CH: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    fn run(q: &str) -> Result<AuthorizationRequest, RedirectedError> {
        let p = Params::parse(q.as_bytes()).unwrap();
        let c = client();
        let (uri, sent) = trusted_redirect_uri(&p, &c).unwrap();
        validate(&p, &c, uri, sent)
    }

    #[test]
    fn valid_public_request() {
        let r = run(&format!(
            "response_type=code&client_id=c&state=s&scope=openid&code_challenge={CH}&code_challenge_method=S256&audience=https://api"
        ))
        .unwrap();
        assert_eq!(r.redirect_uri, "https://app/cb");
        assert!(!r.redirect_uri_sent);
        assert_eq!(r.tenant, "default");
        assert_eq!(r.audiences, vec!["https://api"]);
    }

    #[test]
    fn errors_keep_state_and_mode() {
        let e = run(&format!("response_type=token&client_id=c&state=xyz&response_mode=fragment&code_challenge={CH}&code_challenge_method=S256")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::UnsupportedResponseType);
        assert_eq!(e.state.as_deref(), Some("xyz"));
        assert_eq!(e.response_mode, ResponseMode::Fragment);
    }

    #[test]
    fn public_client_needs_s256() {
        let e = run("response_type=code&client_id=c").unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
        let e = run(&format!(
            "response_type=code&client_id=c&code_challenge={CH}&code_challenge_method=plain"
        ))
        .unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidRequest);
    }

    #[test]
    fn scope_and_audience_checked() {
        let e = run(&format!("response_type=code&client_id=c&scope=admin&code_challenge={CH}&code_challenge_method=S256")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidScope);
        let e = run(&format!("response_type=code&client_id=c&audience=https://evil&code_challenge={CH}&code_challenge_method=S256")).unwrap_err();
        assert_eq!(e.error.code, ErrorCode::InvalidTarget);
    }

    #[test]
    fn redirect_uri_exact_or_page_error() {
        let c = client();
        let p = Params::parse(b"redirect_uri=https://app/cb/").unwrap();
        assert_eq!(
            trusted_redirect_uri(&p, &c),
            Err(UntrustedRequest::RedirectUriMismatch)
        );
    }

    #[test]
    fn callback_modes() {
        let f = vec![("code".to_owned(), "a b".to_owned())];
        assert_eq!(
            callback("https://app/cb?x=1", ResponseMode::Query, f.clone()).unwrap(),
            Callback::Redirect("https://app/cb?x=1&code=a+b".into())
        );
        assert_eq!(
            callback("https://app/cb", ResponseMode::Fragment, f).unwrap(),
            Callback::Redirect("https://app/cb#code=a+b".into())
        );
    }
}
