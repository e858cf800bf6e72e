//! Katana's documented integration, step by step: authorize at `/authorize` with
//! `offline_access` and `audience`, exchange at `/oauth/token` with the client credentials
//! in the body, refresh, and the chain killed when an old refresh token comes back.

use reqwest::StatusCode;
use tessera_testkit::{with_query, ClientSpec, ConsentChoice, TestServer};

const API: &str = "https://api.katana.example";

async fn setup(policy: &str) -> (TestServer, tessera_testkit::TestClient) {
    let server = TestServer::start().await;
    server.user("maria", "correct horse battery").await;
    let client = server
        .client(ClientSpec {
            name: "Katana integration".into(),
            redirect_uris: vec!["https://app.example.com/katana/callback".into()],
            audiences: vec![API.into()],
            refresh_tokens: Some(policy.into()),
            ..Default::default()
        })
        .await;
    (server, client)
}

fn authorize_url(server: &TestServer, client: &tessera_testkit::TestClient, scope: &str) -> String {
    with_query(
        &server.url("/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", scope),
            ("audience", API),
            ("state", "katana-state-1"),
        ],
    )
}

#[tokio::test]
async fn code_refresh_and_reuse_kills_the_chain() {
    let (server, client) = setup("offline-access").await;
    let browser = server.browser();
    let cb = browser
        .authorize(
            &authorize_url(&server, &client, "offline_access"),
            Some(("maria", "correct horse battery")),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some("katana-state-1"));
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()));
    let secret = client.secret.clone().unwrap();
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
    assert_eq!(body["token_type"], "Bearer");
    assert_eq!(body["expires_in"], 3600);
    let access1 = body["access_token"].as_str().unwrap().to_owned();
    let refresh1 = body["refresh_token"]
        .as_str()
        .expect("refresh token with offline_access")
        .to_owned();
    let intro = server.introspect(&client, &access1).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["aud"], API);

    let (status, _, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client.id),
                ("client_secret", &secret),
                ("refresh_token", &refresh1),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let access2 = body["access_token"].as_str().unwrap().to_owned();
    let refresh2 = body["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(refresh1, refresh2);
    assert_eq!(server.introspect(&client, &access1).await["active"], false);
    assert_eq!(server.introspect(&client, &access2).await["active"], true);

    // Reuse of the rotated token: refused, and the whole chain dies.
    let (status, _, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client.id),
                ("client_secret", &secret),
                ("refresh_token", &refresh1),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    assert_eq!(server.introspect(&client, &access2).await["active"], false);
    let (status, _, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "refresh_token"),
                ("client_id", &client.id),
                ("client_secret", &secret),
                ("refresh_token", &refresh2),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn no_refresh_token_without_offline_access() {
    let (server, client) = setup("offline-access").await;
    let cb = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "openid"),
            Some(("maria", "correct horse battery")),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let secret = client.secret.clone().unwrap();
    let (status, _, body) = server
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
    assert!(body.get("refresh_token").is_none(), "{body}");
    assert_eq!(body["scope"], "openid");
}
