//! CATAPA's documented integration, step by step: users live in a tenant, the callback
//! names that tenant, the client authenticates with HTTP Basic at `/oauth/token`, Deny
//! comes back as `access_denied` with the state, `/v1/users/me` needs the `Tenant`
//! header, and access tokens may live a day.

use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{with_query, ClientSpec, ConsentChoice, TestClient, TestServer};

const TENANT: &str = "acme";
const USER: &str = "budi.santoso";
const PASSWORD: &str = "catapa correct horse";
const CALLBACK: &str = "https://hr.catapa.example/oauth/callback";

async fn setup(ttl: Option<i64>) -> (TestServer, TestClient, tessera_core::model::User) {
    let server = TestServer::start().await;
    let user = server.user_in(TENANT, USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "CATAPA payroll".into(),
            redirect_uris: vec![CALLBACK.into()],
            tenant: Some(TENANT.into()),
            access_token_ttl: ttl,
            ..Default::default()
        })
        .await;
    (server, client, user)
}

fn authorize_url(server: &TestServer, client: &TestClient, state: &str) -> String {
    with_query(
        &server.url("/oauth/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", "openid profile email"),
            ("state", state),
        ],
    )
}

/// Sign in and allow; returns the code.
async fn code(server: &TestServer, client: &TestClient, state: &str) -> String {
    let cb = server
        .browser()
        .authorize(
            &authorize_url(server, client, state),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some(state));
    assert_eq!(
        cb.get("tenant"),
        Some(TENANT),
        "the callback names the user's tenant: {}",
        cb.url
    );
    cb.code().to_owned()
}

/// The token request exactly as CATAPA sends it: HTTP Basic, nothing about the client in the body.
async fn exchange(server: &TestServer, client: &TestClient, code: &str) -> Value {
    let (status, headers, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &client.redirect_uri),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert_eq!(body["token_type"], "Bearer");
    body
}

#[tokio::test]
async fn basic_auth_exchange_with_tenant_in_callback() {
    let (server, client, user) = setup(None).await;
    let code = code(&server, &client, "catapa-state-1").await;
    let body = exchange(&server, &client, &code).await;
    assert_eq!(body["expires_in"], 3600);
    let access = body["access_token"].as_str().expect("access token");
    let intro = server.introspect(&client, access).await;
    assert_eq!(intro["active"], true);
    assert_eq!(intro["tenant"], TENANT);
    assert_eq!(intro["sub"], user.id.as_str());
}

#[tokio::test]
async fn wrong_basic_credentials_are_invalid_client_with_www_authenticate() {
    let (server, client, _) = setup(None).await;
    let code = code(&server, &client, "catapa-state-2").await;
    let (status, headers, body) = server
        .post_form(
            "/oauth/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &client.redirect_uri),
            ],
            Some((&client.id, "not-the-secret")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client");
    let challenge = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    assert!(
        challenge.to_ascii_lowercase().starts_with("basic"),
        "WWW-Authenticate: {challenge:?}"
    );
    // The code was not spent by the failed attempt.
    exchange(&server, &client, &code).await;
}

#[tokio::test]
async fn a_user_of_another_tenant_cannot_sign_in_through_a_tenant_client() {
    let (server, client, _) = setup(None).await;
    server.user("outsider", "outsider password").await;
    let result = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "catapa-outsider"),
            Some(("outsider", "outsider password")),
            Some(ConsentChoice::Allow),
        )
        .await;
    match result {
        Err(tessera_testkit::Stop::Login { body }) => {
            assert!(body.contains("Invalid username or password"), "{body}");
        }
        other => panic!("a default-tenant user must not sign in to {TENANT}: {other:?}"),
    }
}

#[tokio::test]
async fn deny_gives_access_denied_with_state() {
    let (server, client, _) = setup(None).await;
    let cb = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "catapa-deny"),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Deny),
        )
        .await
        .expect("error callback at the redirect URI");
    assert!(cb.url.starts_with(CALLBACK), "{}", cb.url);
    assert_eq!(cb.get("error"), Some("access_denied"), "{}", cb.url);
    assert_eq!(cb.get("state"), Some("catapa-deny"));
    assert_eq!(cb.get("code"), None);
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()));
}

#[tokio::test]
async fn users_me_requires_the_matching_tenant_header() {
    let (server, client, user) = setup(None).await;
    // Another tenant exists, with its own user.
    server
        .user_in("globex", "other.user", "globex password")
        .await;
    let code = code(&server, &client, "catapa-me").await;
    let body = exchange(&server, &client, &code).await;
    let access = body["access_token"].as_str().expect("access token");

    let (status, me) = server
        .bearer_get("/v1/users/me", access, &[("Tenant", TENANT)])
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["id"], user.id.as_str());
    assert_eq!(me["username"], USER);
    assert_eq!(me["name"], format!("{USER} Example"));
    assert_eq!(me["email"], format!("{USER}@example.com"));
    assert_eq!(me["tenant"], TENANT);

    let (status, body) = server.bearer_get("/v1/users/me", access, &[]).await;
    assert_eq!(
        status,
        StatusCode::BAD_REQUEST,
        "missing Tenant header: {body}"
    );
    assert_eq!(body["error"], "invalid_request");

    let (status, _) = server
        .bearer_get("/v1/users/me", access, &[("Tenant", "globex")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = server
        .bearer_get("/v1/users/me", access, &[("Tenant", "default")])
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    // A bad token is still 401, whatever the tenant.
    let (status, _) = server
        .bearer_get("/v1/users/me", "not-a-token", &[("Tenant", TENANT)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn a_day_long_access_token_when_the_client_is_set_so() {
    let (server, client, _) = setup(Some(86400)).await;
    let code = code(&server, &client, "catapa-ttl").await;
    let body = exchange(&server, &client, &code).await;
    assert_eq!(body["expires_in"], 86400);
    let access = body["access_token"].as_str().expect("access token");
    let intro = server.introspect(&client, access).await;
    assert_eq!(intro["active"], true);
    let lifetime = intro["exp"].as_i64().unwrap_or(0) - intro["iat"].as_i64().unwrap_or(0);
    assert_eq!(lifetime, 86400, "{intro}");
    // Still valid at the start of the last hour, not after a day.
    server.clock.advance(86400 - 3600);
    let (status, _) = server
        .bearer_get("/v1/users/me", access, &[("Tenant", TENANT)])
        .await;
    assert_eq!(status, StatusCode::OK);
    server.clock.advance(3601);
    let (status, _) = server
        .bearer_get("/v1/users/me", access, &[("Tenant", TENANT)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
