//! Operations endpoints: health, readiness, Prometheus metrics, discovery.

use reqwest::StatusCode;
use tessera_testkit::{ClientSpec, TestServer};

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    let http = server.http();
    let live = http.get(server.url("/health/live")).send().await.unwrap();
    assert_eq!(live.status(), StatusCode::OK);
    let ready: serde_json::Value = http
        .get(server.url("/health/ready"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["status"], "ready");
}

#[tokio::test]
async fn metrics_count_requests_per_route_and_issued_tokens() {
    let server = TestServer::start().await;
    let client = server
        .client(ClientSpec {
            name: "metrics".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let (status, _, _) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let text = metrics(&server).await;
    assert!(counts_request(&text, "/oauth2/token", 200), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("tessera_events_total")
            && l.contains("event=\"token_issued\"")
            && l.contains("kind=\"client_credentials\"")),
        "{text}"
    );
}

/// The fixed documents are served outside the request log span, but with everything else
/// the envelope gives every response: security headers, a request id, and a count in the
/// metrics under their route.
#[tokio::test]
async fn fixed_documents_carry_the_envelope() {
    let server = TestServer::start().await;
    let http = server.http();
    for path in [
        "/.well-known/openid-configuration",
        "/.well-known/oauth-authorization-server",
        "/.well-known/jwks.json",
        "/health/live",
        "/static/tessera.css",
        "/static/form_post.js",
        "/static/settings.js",
    ] {
        let resp = http.get(server.url(path)).send().await.unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        let h = resp.headers();
        assert!(h.get("x-request-id").is_some(), "{path}: request id");
        assert_eq!(h["x-content-type-options"], "nosniff", "{path}");
        assert_eq!(h["x-frame-options"], "DENY", "{path}");
        assert!(h.get("content-security-policy").is_some(), "{path}: CSP");
    }
    let text = metrics(&server).await;
    assert!(
        counts_request(&text, "/.well-known/jwks.json", 200),
        "{text}"
    );
}

/// The server's Prometheus exposition.
async fn metrics(server: &TestServer) -> String {
    let resp = server.http().get(server.url("/metrics")).send().await;
    resp.unwrap().text().await.unwrap()
}

/// Whether `metrics` count a request to `route` answered with `status`.
fn counts_request(metrics: &str, route: &str, status: u16) -> bool {
    metrics.lines().any(|l| {
        l.starts_with("tessera_http_requests_total")
            && l.contains(&format!("route=\"{route}\""))
            && l.contains(&format!("status=\"{status}\""))
    })
}

/// RFC 8414 §3 / OIDC Discovery §4: both documents, same content, issuer exact, and only
/// what is implemented.
#[tokio::test]
async fn discovery_lists_exactly_what_is_implemented() {
    let server = TestServer::start().await;
    let http = server.http();
    let oidc: serde_json::Value = http
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let oauth: serde_json::Value = http
        .get(server.url("/.well-known/oauth-authorization-server"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(oidc, oauth);
    assert_eq!(oidc["issuer"], server.issuer);
    assert_eq!(oidc["token_endpoint"], server.url("/oauth2/token"));
    assert_eq!(
        oidc["authorization_endpoint"],
        server.url("/oauth2/authorize")
    );
    assert_eq!(
        oidc["code_challenge_methods_supported"],
        serde_json::json!(["S256"])
    );
    assert_eq!(
        oidc["response_types_supported"],
        serde_json::json!(["code"])
    );
    assert_eq!(
        oidc["grant_types_supported"],
        serde_json::json!(["authorization_code", "refresh_token", "client_credentials"])
    );
    assert_eq!(oidc["authorization_response_iss_parameter_supported"], true);
    // Every advertised endpoint answers (none is a dead link).
    for key in [
        "token_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        let url = oidc[key].as_str().unwrap();
        let status = http
            .post(url)
            .form(&[("x", "y")])
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(status, StatusCode::NOT_FOUND, "{key}");
    }
    let status = http
        .get(oidc["userinfo_endpoint"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}
