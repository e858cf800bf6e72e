//! An independent client: the `oauth2` crate (v5) builds the authorization request and
//! performs every token request itself, against the running server. Only the browser part
//! (sign-in and consent) is driven by the test kit.

use std::time::Duration;

use oauth2::basic::{BasicClient, BasicErrorResponseType, BasicTokenType};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, RefreshToken, RequestTokenError, Scope, TokenResponse, TokenUrl,
};
use reqwest::StatusCode;
use tessera_testkit::{ClientSpec, ConsentChoice, TestClient, TestServer};

const USER: &str = "independent-user";
const PASSWORD: &str = "independent correct horse";
const CALLBACK: &str = "http://127.0.0.1:9/independent/callback";

/// The HTTP client the oauth2 5.0 docs prescribe: no redirects (SSRF protection).
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("http client")
}

async fn setup(public: bool) -> (TestServer, TestClient) {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: if public {
                "oauth2-rs public"
            } else {
                "oauth2-rs confidential"
            }
            .into(),
            redirect_uris: vec![CALLBACK.into()],
            public,
            ..Default::default()
        })
        .await;
    (server, client)
}

/// Authorization with PKCE through the oauth2 crate's URL and the browser; returns the
/// code and the verifier.
macro_rules! authorize {
    ($server:expr, $oauth:expr) => {{
        let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
        let (url, csrf) = $oauth
            .authorize_url(CsrfToken::new_random)
            .add_scope(Scope::new("openid".into()))
            .add_scope(Scope::new("profile".into()))
            .set_pkce_challenge(challenge)
            .url();
        assert!(
            url.as_str().starts_with(&$server.url("/oauth2/authorize")),
            "{url}"
        );
        let cb = $server
            .browser()
            .authorize(
                url.as_str(),
                Some((USER, PASSWORD)),
                Some(ConsentChoice::Allow),
            )
            .await
            .expect("callback");
        assert_eq!(
            cb.get("state"),
            Some(csrf.secret().as_str()),
            "state must round-trip"
        );
        assert_eq!(cb.get("iss"), Some($server.issuer.as_str()));
        (AuthorizationCode::new(cb.code().to_owned()), verifier)
    }};
}

fn urls(server: &TestServer) -> (AuthUrl, TokenUrl, RedirectUrl) {
    (
        AuthUrl::new(server.url("/oauth2/authorize")).expect("auth url"),
        TokenUrl::new(server.url("/oauth2/token")).expect("token url"),
        RedirectUrl::new(CALLBACK.into()).expect("redirect url"),
    )
}

#[tokio::test]
async fn confidential_client_code_pkce_and_refresh() {
    let (server, client) = setup(false).await;
    let (auth, token, redirect) = urls(&server);
    let oauth = BasicClient::new(ClientId::new(client.id.clone()))
        .set_client_secret(ClientSecret::new(client.secret.clone().expect("secret")))
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect);
    let http = http();

    let (code, verifier) = authorize!(server, oauth);
    let tokens = oauth
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    assert_eq!(*tokens.token_type(), BasicTokenType::Bearer);
    assert_eq!(tokens.expires_in(), Some(Duration::from_secs(3600)));
    let scopes: Vec<String> = tokens
        .scopes()
        .map(|s| s.iter().map(|s| s.to_string()).collect())
        .unwrap_or_default();
    assert!(
        scopes.contains(&"openid".to_owned()) && scopes.contains(&"profile".to_owned()),
        "{scopes:?}"
    );
    let access1 = tokens.access_token().secret().clone();
    let refresh1 = tokens.refresh_token().expect("refresh token").clone();
    let (status, info) = server.bearer_get("/userinfo", &access1, &[]).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["preferred_username"], USER);

    let refreshed = oauth
        .exchange_refresh_token(&refresh1)
        .request_async(&http)
        .await
        .expect("refresh");
    let access2 = refreshed.access_token().secret().clone();
    let refresh2 = refreshed
        .refresh_token()
        .expect("rotated refresh token")
        .clone();
    assert_ne!(access1, access2);
    assert_ne!(refresh1.secret(), refresh2.secret());
    let (status, _) = server.bearer_get("/userinfo", &access2, &[]).await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = server.bearer_get("/userinfo", &access1, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The rotated refresh token comes back as a proper RFC 6749 error the crate understands.
    match oauth
        .exchange_refresh_token(&refresh1)
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant, "{e:?}");
        }
        other => panic!("reuse of a rotated refresh token must be invalid_grant, got {other:?}"),
    }
    // …and it killed the chain.
    let (status, _) = server.bearer_get("/userinfo", &access2, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn confidential_client_with_credentials_in_the_body() {
    let (server, client) = setup(false).await;
    let (auth, token, redirect) = urls(&server);
    let oauth = BasicClient::new(ClientId::new(client.id.clone()))
        .set_client_secret(ClientSecret::new(client.secret.clone().expect("secret")))
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect)
        .set_auth_type(oauth2::AuthType::RequestBody);
    let http = http();
    let (code, verifier) = authorize!(server, oauth);
    let tokens = oauth
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange with client_secret_post");
    assert!(tokens.refresh_token().is_some());
}

#[tokio::test]
async fn public_client_code_pkce_and_refresh() {
    let (server, client) = setup(true).await;
    assert!(client.secret.is_none());
    let (auth, token, redirect) = urls(&server);
    let oauth = BasicClient::new(ClientId::new(client.id.clone()))
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect);
    let http = http();

    let (code, verifier) = authorize!(server, oauth);
    let tokens = oauth
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange without a secret");
    assert_eq!(tokens.expires_in(), Some(Duration::from_secs(3600)));
    let refresh1 = tokens.refresh_token().expect("refresh token").clone();
    let refreshed = oauth
        .exchange_refresh_token(&refresh1)
        .request_async(&http)
        .await
        .expect("refresh without a secret");
    let (status, _) = server
        .bearer_get("/userinfo", refreshed.access_token().secret(), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn wrong_pkce_verifier_is_invalid_grant() {
    let (server, client) = setup(true).await;
    let (auth, token, redirect) = urls(&server);
    let oauth = BasicClient::new(ClientId::new(client.id.clone()))
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect);
    let http = http();
    let (code, _verifier) = authorize!(server, oauth);
    let wrong = PkceCodeVerifier::new(PkceCodeChallenge::new_random_sha256().1.secret().clone());
    match oauth
        .exchange_code(code)
        .set_pkce_verifier(wrong)
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant, "{e:?}");
        }
        other => panic!("a wrong verifier must be invalid_grant, got {other:?}"),
    }
}

#[tokio::test]
async fn refresh_token_of_another_client_is_refused() {
    let (server, client) = setup(false).await;
    let other = server
        .client(ClientSpec {
            name: "oauth2-rs other".into(),
            redirect_uris: vec![CALLBACK.into()],
            ..Default::default()
        })
        .await;
    let (auth, token, redirect) = urls(&server);
    let oauth = BasicClient::new(ClientId::new(client.id.clone()))
        .set_client_secret(ClientSecret::new(client.secret.clone().expect("secret")))
        .set_auth_uri(auth.clone())
        .set_token_uri(token.clone())
        .set_redirect_uri(redirect.clone());
    let http = http();
    let (code, verifier) = authorize!(server, oauth);
    let tokens = oauth
        .exchange_code(code)
        .set_pkce_verifier(verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let refresh = RefreshToken::new(
        tokens
            .refresh_token()
            .expect("refresh token")
            .secret()
            .clone(),
    );
    let thief = BasicClient::new(ClientId::new(other.id.clone()))
        .set_client_secret(ClientSecret::new(other.secret.clone().expect("secret")))
        .set_auth_uri(auth)
        .set_token_uri(token)
        .set_redirect_uri(redirect);
    match thief
        .exchange_refresh_token(&refresh)
        .request_async(&http)
        .await
    {
        Err(RequestTokenError::ServerResponse(e)) => {
            assert_eq!(*e.error(), BasicErrorResponseType::InvalidGrant, "{e:?}");
        }
        other => panic!("another client's refresh token must be refused, got {other:?}"),
    }
}
