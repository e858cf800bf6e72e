//! Catenda's documented integration, step by step: `/oauth2/authorize` with
//! `response_mode=fragment` and `state`, `prompt=none` and `prompt=login`, a PKCE public
//! client that exchanges and refreshes without a secret, rotation that kills the previous
//! access and refresh tokens, one-hour access tokens, and client credentials without a
//! refresh token.

use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{
    with_query, Browser, ClientSpec, ConsentChoice, Pkce, Stop, TestClient, TestServer,
};

const USER: &str = "catenda-user";
const PASSWORD: &str = "catenda correct horse";
const CALLBACK: &str = "https://bim.catenda.example/oauth/callback";

async fn setup() -> (TestServer, TestClient) {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Catenda Hub".into(),
            redirect_uris: vec![CALLBACK.into()],
            ..Default::default()
        })
        .await;
    (server, client)
}

/// Catenda's authorize URL: `/oauth2/authorize`, fragment mode, a state, and `extra`.
fn authorize_url(
    server: &TestServer,
    client: &TestClient,
    state: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("scope", "openid profile"),
        ("response_mode", "fragment"),
        ("state", state),
    ];
    pairs.extend_from_slice(extra);
    with_query(&server.url("/oauth2/authorize"), &pairs)
}

/// The raw first response to an authorization request: must be a redirect straight to the
/// client (no page in between). Returns the Location.
async fn direct_redirect(browser: &Browser, url: &str) -> String {
    let resp = browser.get(url).await;
    let status = resp.status();
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    assert!(
        status.is_redirection(),
        "expected a redirect, got {status}: {}",
        resp.text().await.unwrap_or_default()
    );
    assert!(
        location.starts_with(CALLBACK),
        "redirect must go straight to the client, went to {location}"
    );
    location
}

async fn token(
    server: &TestServer,
    form: &[(&str, &str)],
    basic: Option<(&str, &str)>,
) -> (StatusCode, Value) {
    let (status, headers, body) = server.post_form("/oauth2/token", form, basic).await;
    if status == StatusCode::OK {
        assert_eq!(headers["cache-control"], "no-store");
    }
    (status, body)
}

#[tokio::test]
async fn fragment_response_mode_carries_code_state_iss_and_tenant() {
    let (server, client) = setup().await;
    let cb = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "catenda-state-fragment", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(
        cb.mode, "fragment",
        "response_mode=fragment must use the fragment: {}",
        cb.url
    );
    assert!(cb.url.starts_with(&format!("{CALLBACK}#")), "{}", cb.url);
    assert!(
        !cb.url.contains("?code="),
        "the code must not be in the query: {}",
        cb.url
    );
    assert_eq!(cb.get("state"), Some("catenda-state-fragment"));
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()));
    assert_eq!(cb.get("tenant"), Some("default"));

    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", cb.code()),
            ("redirect_uri", &client.redirect_uri),
        ],
        client.basic(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
}

#[tokio::test]
async fn prompt_none_without_session_is_login_required_with_state() {
    let (server, client) = setup().await;
    let browser = server.browser();
    let url = authorize_url(&server, &client, "catenda-silent-1", &[("prompt", "none")]);
    // No page at all: the first response already goes back to the client.
    let location = direct_redirect(&browser, &url).await;
    assert!(
        location.contains('#'),
        "fragment mode for errors too: {location}"
    );
    let cb = browser
        .authorize(&url, None, None)
        .await
        .expect("an error callback, not a page");
    assert_eq!(cb.mode, "fragment");
    assert_eq!(cb.get("error"), Some("login_required"), "{}", cb.url);
    assert_eq!(cb.get("state"), Some("catenda-silent-1"));
    assert_eq!(cb.get("code"), None);
}

#[tokio::test]
async fn prompt_none_with_session_and_remembered_consent_returns_code_without_a_page() {
    let (server, client) = setup().await;
    let browser = server.browser();
    // First a normal, interactive authorization: sign in and consent.
    let first = browser
        .authorize(
            &authorize_url(&server, &client, "catenda-first", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("first callback");
    assert!(first.get("code").is_some(), "{}", first.url);

    // Then silently: no page, straight to the client with a fresh code.
    let url = authorize_url(&server, &client, "catenda-silent-2", &[("prompt", "none")]);
    direct_redirect(&browser, &url).await;
    let cb = browser
        .authorize(&url, None, None)
        .await
        .expect("silent callback without any page");
    assert_eq!(cb.get("error"), None, "{}", cb.url);
    assert_eq!(cb.get("state"), Some("catenda-silent-2"));
    assert_ne!(cb.code(), first.code());
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("code", cb.code()),
            ("redirect_uri", &client.redirect_uri),
        ],
        client.basic(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // A scope the user never consented to cannot be granted silently.
    let wider = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", "openid profile email"),
            ("response_mode", "fragment"),
            ("state", "catenda-silent-3"),
            ("prompt", "none"),
        ],
    );
    let cb = browser
        .authorize(&wider, None, None)
        .await
        .expect("error callback, not a page");
    assert_eq!(cb.get("error"), Some("consent_required"), "{}", cb.url);
    assert_eq!(cb.get("state"), Some("catenda-silent-3"));
}

#[tokio::test]
async fn prompt_login_forces_the_login_page_despite_a_live_session() {
    let (server, client) = setup().await;
    let browser = server.browser();
    browser
        .authorize(
            &authorize_url(&server, &client, "catenda-a", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("first callback");

    // The session is live: without prompt the browser gets a code with no page.
    let cb = browser
        .authorize(
            &authorize_url(&server, &client, "catenda-b", &[]),
            None,
            None,
        )
        .await
        .expect("SSO without a page");
    assert!(cb.get("code").is_some(), "{}", cb.url);

    // prompt=login: the login page again.
    let url = authorize_url(&server, &client, "catenda-c", &[("prompt", "login")]);
    match browser.authorize(&url, None, None).await {
        Err(Stop::Login { body }) => {
            assert!(body.contains("Sign in"), "login page expected: {body}");
        }
        other => panic!("prompt=login must show the login page, got {other:?}"),
    }
    // Signing in again completes the request (consent is remembered).
    let cb = browser
        .authorize(&url, Some((USER, PASSWORD)), None)
        .await
        .expect("callback after fresh sign-in");
    assert_eq!(cb.get("state"), Some("catenda-c"));
    assert!(cb.get("code").is_some(), "{}", cb.url);
}

#[tokio::test]
async fn pkce_public_client_exchanges_and_refreshes_without_secret_and_rotation_kills_old_tokens() {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let public = server
        .client(ClientSpec {
            name: "Catenda mobile".into(),
            redirect_uris: vec![CALLBACK.into()],
            public: true,
            ..Default::default()
        })
        .await;
    assert!(public.secret.is_none(), "a public client has no secret");
    // A confidential client of the resource server, to introspect with.
    let resource = server
        .client(ClientSpec {
            name: "Catenda API".into(),
            redirect_uris: vec!["https://api.catenda.example/unused".into()],
            ..Default::default()
        })
        .await;

    let pkce = Pkce::new();
    let cb = server
        .browser()
        .authorize(
            &authorize_url(
                &server,
                &public,
                "catenda-pkce",
                &[
                    ("code_challenge", &pkce.challenge),
                    ("code_challenge_method", "S256"),
                ],
            ),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some("catenda-pkce"));

    // Exchange: client_id and code_verifier, no secret anywhere.
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &public.id),
            ("code", cb.code()),
            ("redirect_uri", &public.redirect_uri),
            ("code_verifier", &pkce.verifier),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access1 = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh1 = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();
    assert_eq!(server.introspect(&resource, &access1).await["active"], true);
    let (status, _) = server.bearer_get("/userinfo", &access1, &[]).await;
    assert_eq!(status, StatusCode::OK);

    // Refresh without a secret.
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &public.id),
            ("refresh_token", &refresh1),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 3600);
    let access2 = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh2 = body["refresh_token"]
        .as_str()
        .expect("rotated refresh token")
        .to_owned();
    assert_ne!(access1, access2);
    assert_ne!(refresh1, refresh2);

    // The previous access token is dead: introspection and userinfo.
    assert_eq!(
        server.introspect(&resource, &access1).await["active"],
        false
    );
    let (status, _) = server.bearer_get("/userinfo", &access1, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The new one works.
    assert_eq!(server.introspect(&resource, &access2).await["active"], true);
    let (status, info) = server.bearer_get("/userinfo", &access2, &[]).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["preferred_username"], USER);

    // The previous refresh token is refused.
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "refresh_token"),
            ("client_id", &public.id),
            ("refresh_token", &refresh1),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn public_client_cannot_exchange_without_code_verifier() {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let public = server
        .client(ClientSpec {
            name: "Catenda mobile".into(),
            redirect_uris: vec![CALLBACK.into()],
            public: true,
            ..Default::default()
        })
        .await;
    // Without a challenge the public client is refused at the authorization endpoint.
    let cb = server
        .browser()
        .authorize(
            &authorize_url(&server, &public, "catenda-no-pkce", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("error callback");
    assert_eq!(cb.get("error"), Some("invalid_request"), "{}", cb.url);
    assert_eq!(cb.get("state"), Some("catenda-no-pkce"));

    let pkce = Pkce::new();
    let cb = server
        .browser()
        .authorize(
            &authorize_url(
                &server,
                &public,
                "catenda-pkce",
                &[
                    ("code_challenge", &pkce.challenge),
                    ("code_challenge_method", "S256"),
                ],
            ),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let (status, body) = token(
        &server,
        &[
            ("grant_type", "authorization_code"),
            ("client_id", &public.id),
            ("code", cb.code()),
            ("redirect_uri", &public.redirect_uri),
        ],
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.get("access_token").is_none(), "{body}");
}

async fn client_credentials(server: &TestServer, client: &TestClient) -> Value {
    let (status, body) = token(
        server,
        &[("grant_type", "client_credentials")],
        client.basic(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    body
}

#[tokio::test]
async fn client_credentials_never_returns_a_refresh_token() {
    let server = TestServer::start().await;
    let machine = server
        .client(ClientSpec {
            name: "Catenda sync service".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let body = client_credentials(&server, &machine).await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    assert!(body.get("refresh_token").is_none(), "{body}");
    let access = body["access_token"].as_str().expect("access token");
    let intro = server.introspect(&machine, access).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["client_id"], machine.id.as_str());
    assert!(
        intro.get("sub").is_none(),
        "no user behind a client_credentials token: {intro}"
    );

    // Even a client that may refresh (policy `always`) gets none from client_credentials.
    let both = server
        .client(ClientSpec {
            name: "Catenda both".into(),
            redirect_uris: vec![CALLBACK.into()],
            grant_types: Some("authorization_code,refresh_token,client_credentials".into()),
            refresh_tokens: Some("always".into()),
            ..Default::default()
        })
        .await;
    let body = client_credentials(&server, &both).await;
    assert!(body.get("refresh_token").is_none(), "{body}");

    // A client not registered for the grant is refused.
    let web = server
        .client(ClientSpec {
            name: "Catenda web only".into(),
            redirect_uris: vec![CALLBACK.into()],
            ..Default::default()
        })
        .await;
    let (status, body) = token(
        &server,
        &[("grant_type", "client_credentials")],
        web.basic(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "unauthorized_client");
}

/// A client's client_credentials tokens share its standing grant (one row per client, not
/// per token): each keeps its own scope, revoking one leaves the others alive, and deleting
/// the client kills them all.
#[tokio::test]
async fn client_credentials_tokens_are_independent_until_their_client_goes() {
    let server = TestServer::start().await;
    let machine = server
        .client(ClientSpec {
            name: "Catenda sync service".into(),
            grant_types: Some("client_credentials".into()),
            scopes: Some("read write".into()),
            ..Default::default()
        })
        .await;
    let (status, read) = token(
        &server,
        &[("grant_type", "client_credentials"), ("scope", "read")],
        machine.basic(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{read}");
    let (status, write) = token(
        &server,
        &[("grant_type", "client_credentials"), ("scope", "write")],
        machine.basic(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{write}");
    let (read, write) = (
        read["access_token"].as_str().unwrap().to_owned(),
        write["access_token"].as_str().unwrap().to_owned(),
    );
    assert_eq!(server.introspect(&machine, &read).await["scope"], "read");
    assert_eq!(server.introspect(&machine, &write).await["scope"], "write");

    let (status, _, _) = server
        .post_form("/oauth2/revoke", &[("token", &read)], machine.basic())
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(server.introspect(&machine, &read).await["active"], false);
    assert_eq!(
        server.introspect(&machine, &write).await["active"],
        true,
        "revoking one client_credentials token leaves the client's others alive"
    );

    let resource = server
        .client(ClientSpec {
            name: "Catenda API".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    assert_eq!(server.introspect(&resource, &write).await["active"], true);
    assert!(server.store.delete_client(&machine.id).await.unwrap());
    assert_eq!(
        server.introspect(&resource, &write).await["active"],
        false,
        "a deleted client's tokens are dead"
    );
}
