//! JWT access tokens (RFC 9068): their header and claims, verified independently with
//! `jsonwebtoken` against the published JWKS, and revocation that still works although
//! the signature stays valid.

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{with_query, ClientSpec, ConsentChoice, Pkce, TestClient, TestServer};

use super::keys::{fetch_jwks, header, verify, verify_with};

const TENANT: &str = "acme";
const USER: &str = "jwt.user";
const PASSWORD: &str = "jwt correct horse battery";
const API: &str = "https://api.acme.example";
const DAY: i64 = 86400;

async fn server_with_user() -> (TestServer, String) {
    let server = TestServer::start().await;
    let user = server.user_in(TENANT, USER, PASSWORD).await;
    (server, user.id)
}

async fn jwt_client(server: &TestServer, alg: &str, ttl: Option<i64>) -> TestClient {
    server
        .client(ClientSpec {
            name: format!("JWT client {alg}"),
            redirect_uris: vec!["https://rp.acme.example/cb".into()],
            audiences: vec![API.into()],
            access_token_format: Some("jwt".into()),
            access_token_ttl: ttl,
            id_token_alg: Some(alg.into()),
            tenant: Some(TENANT.into()),
            ..Default::default()
        })
        .await
}

/// A code flow through the browser; `audience` is sent when given.
async fn code_flow(
    server: &TestServer,
    client: &TestClient,
    scope: &str,
    audience: Option<&str>,
) -> Value {
    let pkce = Pkce::new();
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("scope", scope),
        ("state", "jwt-state"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    if let Some(a) = audience {
        pairs.push(("audience", a));
    }
    let cb = server
        .browser()
        .authorize(
            &with_query(&server.url("/oauth2/authorize"), &pairs),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let (status, headers, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", cb.code()),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", &pkce.verifier),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    body
}

fn access_token(body: &Value) -> String {
    body["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token: {body}"))
        .to_owned()
}

/// Checks the RFC 9068 header and every claim of `token`; returns the claims.
#[allow(clippy::too_many_arguments)]
async fn check_jwt(
    server: &TestServer,
    client: &TestClient,
    token: &str,
    alg: Algorithm,
    aud: &str,
    sub: &str,
    scope: &str,
    ttl: i64,
    tenant: Option<&str>,
) -> Value {
    assert_eq!(token.split('.').count(), 3, "not a compact JWS: {token}");
    let h = header(token);
    assert_eq!(h.typ.as_deref(), Some("at+jwt"), "RFC 9068 §2.1 typ");
    assert_eq!(h.alg, alg);
    let kid = h.kid.clone().expect("kid");
    let (_, jwks) = fetch_jwks(server).await;
    let jwk = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .unwrap_or_else(|| panic!("kid {kid} not in {jwks}"))
        .clone();
    assert_eq!(
        jwk["alg"],
        format!("{alg:?}"),
        "signed with the client's key"
    );
    let claims = verify(server, token, aud)
        .await
        .unwrap_or_else(|e| panic!("{e}: {token}"));
    // The audience check is real: another audience is refused.
    assert!(verify(server, token, "https://other.example")
        .await
        .is_err());
    assert_eq!(claims["iss"], server.issuer.as_str());
    assert_eq!(claims["sub"], sub);
    assert_eq!(claims["aud"], aud);
    assert_eq!(claims["client_id"], client.id.as_str());
    assert_eq!(claims["scope"], scope, "{claims}");
    assert!(
        claims["jti"].as_str().is_some_and(|j| j.len() >= 16),
        "jti: {claims}"
    );
    let iat = claims["iat"].as_i64().expect("iat");
    assert!(
        (iat - server.now()).abs() <= 5,
        "iat {iat} vs {}",
        server.now()
    );
    assert_eq!(claims["exp"].as_i64().expect("exp"), iat + ttl, "{claims}");
    match tenant {
        Some(t) => assert_eq!(claims["tenant"], t, "{claims}"),
        None => assert!(claims.get("tenant").is_none(), "{claims}"),
    }
    claims
}

#[tokio::test]
async fn jwt_access_tokens_es256_and_eddsa() {
    let (server, user_id) = server_with_user().await;
    for (alg_name, alg, ttl) in [
        ("ES256", Algorithm::ES256, Some(DAY)),
        ("EdDSA", Algorithm::EdDSA, None),
    ] {
        let client = jwt_client(&server, alg_name, ttl).await;
        let ttl = ttl.unwrap_or(3600);

        // With an audience: it is the token's aud.
        let body = code_flow(&server, &client, "openid profile", Some(API)).await;
        assert_eq!(body["expires_in"], ttl, "{body}");
        let scope = body["scope"].as_str().expect("scope").to_owned();
        assert!(scope.split(' ').any(|s| s == "openid"), "{scope}");
        assert!(scope.split(' ').any(|s| s == "profile"), "{scope}");
        let at1 = access_token(&body);
        let c1 = check_jwt(
            &server,
            &client,
            &at1,
            alg,
            API,
            &user_id,
            &scope,
            ttl,
            Some(TENANT),
        )
        .await;
        // The ID token is not an access token, and vice versa.
        let id_header = header(body["id_token"].as_str().expect("id_token"));
        assert_ne!(id_header.typ.as_deref(), Some("at+jwt"));
        assert_eq!(id_header.alg, alg);

        // Introspection agrees with the claims.
        let intro = server.introspect(&client, &at1).await;
        assert_eq!(intro["active"], true, "{intro}");
        assert_eq!(intro["client_id"], client.id.as_str());
        assert_eq!(intro["sub"], user_id.as_str());
        assert_eq!(intro["aud"], API);
        assert_eq!(intro["exp"], c1["exp"]);
        assert_eq!(intro["tenant"], TENANT);

        // Without one: the issuer (Tessera's own userinfo) is the audience.
        let body = code_flow(&server, &client, "openid", None).await;
        let at2 = access_token(&body);
        let c2 = check_jwt(
            &server,
            &client,
            &at2,
            alg,
            &server.issuer,
            &user_id,
            "openid",
            ttl,
            Some(TENANT),
        )
        .await;
        assert_ne!(c1["jti"], c2["jti"], "every token has its own jti");
    }
}

#[tokio::test]
async fn client_credentials_jwt_names_the_client() {
    let server = TestServer::start().await;
    server
        .store
        .create_tenant(&tessera_core::model::Tenant {
            id: TENANT.into(),
            created_at: server.now(),
        })
        .await
        .unwrap();
    let client = server
        .client(ClientSpec {
            name: "JWT machine".into(),
            grant_types: Some("client_credentials".into()),
            scopes: Some("api.read api.write".into()),
            audiences: vec![API.into()],
            access_token_format: Some("jwt".into()),
            id_token_alg: Some("EdDSA".into()),
            tenant: Some(TENANT.into()),
            ..Default::default()
        })
        .await;
    let (status, headers, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("scope", "api.read"),
                ("audience", API),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(headers["cache-control"], "no-store");
    assert!(body.get("refresh_token").is_none(), "{body}");
    let at = access_token(&body);
    check_jwt(
        &server,
        &client,
        &at,
        Algorithm::EdDSA,
        API,
        &client.id,
        "api.read",
        3600,
        Some(TENANT),
    )
    .await;
    let intro = server.introspect(&client, &at).await;
    assert_eq!(intro["active"], true, "{intro}");

    // Without an audience the issuer is the audience.
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "client_credentials"), ("scope", "api.write")],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    check_jwt(
        &server,
        &client,
        &access_token(&body),
        Algorithm::EdDSA,
        &server.issuer,
        &client.id,
        "api.write",
        3600,
        Some(TENANT),
    )
    .await;

    // An audience the client may not request is refused.
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("audience", "https://not-allowed.example"),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"] == "invalid_target" || body["error"] == "invalid_request",
        "{body}"
    );
}

#[tokio::test]
async fn a_revoked_jwt_is_dead_though_its_signature_is_valid() {
    let (server, user_id) = server_with_user().await;
    let client = jwt_client(&server, "ES256", None).await;
    let body = code_flow(&server, &client, "openid profile", None).await;
    let at = access_token(&body);

    let (status, info) = server.bearer_get("/userinfo", &at, &[]).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["sub"], user_id.as_str());
    assert_eq!(info["preferred_username"], USER);
    let (status, me) = server
        .bearer_get("/v1/users/me", &at, &[("Tenant", TENANT)])
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(server.introspect(&client, &at).await["active"], true);

    let (status, _, _) = server
        .post_form(
            "/oauth2/revoke",
            &[("token", &at), ("token_type_hint", "access_token")],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    let intro = server.introspect(&client, &at).await;
    assert_eq!(intro["active"], false, "{intro}");
    assert_eq!(
        intro.as_object().map(|o| o.len()),
        Some(1),
        "an inactive token reveals nothing: {intro}"
    );
    let (status, _) = server.bearer_get("/userinfo", &at, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let resp = server
        .http()
        .post(server.url("/userinfo"))
        .bearer_auth(&at)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("invalid_token")),
        "{:?}",
        resp.headers()
    );
    let (status, _) = server
        .bearer_get("/v1/users/me", &at, &[("Tenant", TENANT)])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // The refusal is by jti, not by signature: the JWT itself still verifies.
    let (_, jwks) = fetch_jwks(&server).await;
    verify_with(&at, &jwks, &server.issuer, &server.issuer, true)
        .expect("signature is still valid");

    // Revoking one access token leaves the rest of the grant alone.
    let rt = body["refresh_token"].as_str().expect("refresh token");
    assert_eq!(server.introspect(&client, rt).await["active"], true);
}

#[tokio::test]
async fn a_refresh_retires_the_previous_jwt() {
    let (server, user_id) = server_with_user().await;
    let client = jwt_client(&server, "EdDSA", None).await;
    let body = code_flow(&server, &client, "openid profile", Some(API)).await;
    let at1 = access_token(&body);
    let rt1 = body["refresh_token"].as_str().expect("refresh token");
    let (status, _) = server.bearer_get("/userinfo", &at1, &[]).await;
    assert_eq!(status, StatusCode::OK);

    let (status, _, body2) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", rt1)],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body2}");
    let at2 = access_token(&body2);
    assert_ne!(at1, at2);
    let c2 = check_jwt(
        &server,
        &client,
        &at2,
        Algorithm::EdDSA,
        API,
        &user_id,
        body2["scope"].as_str().expect("scope"),
        3600,
        Some(TENANT),
    )
    .await;
    let c1 = verify(&server, &at1, API)
        .await
        .expect("at1 still verifies");
    assert_ne!(c1["jti"], c2["jti"]);

    // The previous JWT is refused although its signature and exp are fine.
    assert_eq!(server.introspect(&client, &at1).await["active"], false);
    let (status, _) = server.bearer_get("/userinfo", &at1, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // The new one works.
    assert_eq!(server.introspect(&client, &at2).await["active"], true);
    let (status, info) = server.bearer_get("/userinfo", &at2, &[]).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    assert_eq!(info["sub"], user_id.as_str());
}
