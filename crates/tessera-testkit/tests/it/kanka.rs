//! Kanka's documented integration (Laravel Passport style), step by step: authorize at
//! `/oauth/authorize`, exchange at `/oauth/token` for a year-long Bearer token, and refresh
//! with an empty `scope=` and the `redirect_uri` in the body, both accepted and ignored.

use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{with_query, ClientSpec, ConsentChoice, TestClient, TestServer};

const USER: &str = "kanka-gm";
const PASSWORD: &str = "kanka correct horse";
const CALLBACK: &str = "https://campaigns.kanka.example/auth/callback";
const YEAR: i64 = 31_536_000;

async fn setup() -> (TestServer, TestClient) {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Kanka campaign sync".into(),
            redirect_uris: vec![CALLBACK.into()],
            access_token_ttl: Some(YEAR),
            ..Default::default()
        })
        .await;
    (server, client)
}

/// Authorize at `/oauth/authorize` and exchange at `/oauth/token` with the client
/// credentials in the body, as Kanka's guide shows.
async fn tokens(server: &TestServer, client: &TestClient, scope: &str) -> Value {
    let cb = server
        .browser()
        .authorize(
            &with_query(
                &server.url("/oauth/authorize"),
                &[
                    ("client_id", client.id.as_str()),
                    ("redirect_uri", client.redirect_uri.as_str()),
                    ("response_type", "code"),
                    ("scope", scope),
                    ("state", "kanka-state"),
                ],
            ),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some("kanka-state"));
    let secret = client.secret.clone().expect("confidential client");
    let (status, headers, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", &client.id),
                ("client_secret", &secret),
                ("redirect_uri", &client.redirect_uri),
                ("code", cb.code()),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    body
}

async fn refresh(
    server: &TestServer,
    client: &TestClient,
    refresh_token: &str,
) -> (StatusCode, Value) {
    let secret = client.secret.clone().expect("confidential client");
    let (status, _, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
                ("client_id", &client.id),
                ("client_secret", &secret),
                ("redirect_uri", &client.redirect_uri),
                ("scope", ""),
            ],
            None,
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn year_long_bearer_token_from_oauth_token() {
    let (server, client) = setup().await;
    let body = tokens(&server, &client, "openid profile").await;
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], YEAR);
    assert!(body["refresh_token"].is_string(), "{body}");
    let access = body["access_token"].as_str().expect("access token");
    let intro = server.introspect(&client, access).await;
    assert_eq!(intro["active"], true);
    let lifetime = intro["exp"].as_i64().unwrap_or(0) - intro["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, YEAR, "{intro}");
    // Half a year later the token still works.
    server.clock.advance(YEAR / 2);
    let (status, _) = server.bearer_get("/userinfo", access, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn refresh_with_empty_scope_and_redirect_uri_is_accepted() {
    let (server, client) = setup().await;
    let body = tokens(&server, &client, "openid profile email").await;
    let access1 = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh1 = body["refresh_token"]
        .as_str()
        .expect("refresh token")
        .to_owned();

    let (status, body) = refresh(&server, &client, &refresh1).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], YEAR);
    // `scope=` is ignored: the original grant is kept, not narrowed to nothing.
    let mut scopes: Vec<&str> = body["scope"].as_str().unwrap_or("").split(' ').collect();
    scopes.sort_unstable();
    assert_eq!(scopes, ["email", "openid", "profile"], "{body}");
    let access2 = body["access_token"]
        .as_str()
        .expect("access token")
        .to_owned();
    let refresh2 = body["refresh_token"]
        .as_str()
        .expect("rotated refresh token")
        .to_owned();
    assert_ne!(refresh1, refresh2);

    // The refreshed token works at /userinfo with the same claims; the old one does not.
    let (status, info) = server.bearer_get("/userinfo", &access2, &[]).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["preferred_username"], USER);
    assert_eq!(info["email"], format!("{USER}@example.com"));
    let (status, _) = server.bearer_get("/userinfo", &access1, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // And the chain goes on the same way.
    let (status, body) = refresh(&server, &client, &refresh2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access3 = body["access_token"].as_str().expect("access token");
    let (status, _) = server.bearer_get("/userinfo", access3, &[]).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn default_client_keeps_one_hour_tokens() {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Kanka default lifetime".into(),
            redirect_uris: vec![CALLBACK.into()],
            ..Default::default()
        })
        .await;
    let body = tokens(&server, &client, "openid").await;
    assert_eq!(body["expires_in"], 3600);
    let refresh_token = body["refresh_token"].as_str().expect("refresh token");
    let (status, body) = refresh(&server, &client, refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["expires_in"], 3600);
}
