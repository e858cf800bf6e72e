//! The audit trail and the janitor, through the real HTTP interface and store.

use reqwest::StatusCode;
use tessera_testkit::{with_query, ClientSpec, ConsentChoice, Form, TestServer};

#[tokio::test]
async fn security_events_are_audited_without_secrets() {
    let server = TestServer::start().await;
    server.user("ana", "ana's long password").await;
    let client = server
        .client(ClientSpec {
            name: "audited".into(),
            redirect_uris: vec!["https://app.example/cb".into()],
            ..Default::default()
        })
        .await;
    let secret = client.secret.clone().unwrap();
    let browser = server.browser();
    // A failed sign-in first.
    let page = browser.get("/login").await.text().await.unwrap();
    let mut form = Form::with_action(&page, "/login").unwrap();
    form.set("username", "ana");
    form.set("password", "wrong password");
    let resp = browser.post("/login", &form.fields).await;
    assert!(
        resp.headers().get("x-request-id").is_some(),
        "every response names its request"
    );
    let url = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("scope", "openid offline_access"),
            ("state", "s"),
        ],
    );
    let cb = browser
        .authorize(
            &url,
            Some(("ana", "ana's long password")),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let (status, _, tokens) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", cb.code()),
                ("redirect_uri", "https://app.example/cb"),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", refresh)];
    assert_eq!(
        server
            .post_form("/oauth2/token", &form, client.basic())
            .await
            .0,
        StatusCode::OK
    );
    assert_eq!(
        server
            .post_form("/oauth2/token", &form, client.basic())
            .await
            .0,
        StatusCode::BAD_REQUEST
    );
    let (status, _, _) = server
        .post_form("/oauth2/token", &form, Some((&client.id, "not the secret")))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let events = server.store.list_audit(0, 1000).await.unwrap();
    let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
    for expected in [
        "sign_in.failed",
        "sign_in.succeeded",
        "consent.given",
        "token.issued",
        "token.refreshed",
        "refresh.reuse_family_revoked",
        "client.auth_failed",
    ] {
        assert!(kinds.contains(&expected), "{expected} missing in {kinds:?}");
    }
    let issued = events.iter().find(|e| e.kind == "token.issued").unwrap();
    assert_eq!(issued.client_id.as_deref(), Some(client.id.as_str()));
    assert_eq!(issued.tenant.as_deref(), Some("default"));
    assert_eq!(issued.ip.as_deref(), Some("127.0.0.1"));
    assert!(issued.request_id.is_some());
    assert!(events.iter().all(|e| e.at > 0));
    let text = serde_json::to_string(&events).unwrap();
    for secret_value in [
        secret.as_str(),
        refresh,
        tokens["access_token"].as_str().unwrap(),
        cb.code(),
        "ana's long password",
        "wrong password",
    ] {
        assert!(
            !text.contains(secret_value),
            "a secret reached the audit trail"
        );
    }
}

#[tokio::test]
async fn janitor_prunes_expired_rows_and_keeps_live_ones() {
    let server = TestServer::start().await;
    let client = server
        .client(ClientSpec {
            name: "svc".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let form = [("grant_type", "client_credentials")];
    let (_, _, old) = server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    server
        .clock
        .advance(3600 + tessera_server::janitor::GRACE + 1);
    let (_, _, fresh) = server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    let pruned = tessera_server::janitor::sweep(&*server.store, server.now(), 0)
        .await
        .unwrap();
    assert_eq!(pruned.access_tokens, 1, "{pruned:?}");
    assert_eq!(
        pruned.grants, 0,
        "the client's standing grant stays for its live token: {pruned:?}"
    );
    let intro = server
        .introspect(&client, fresh["access_token"].as_str().unwrap())
        .await;
    assert_eq!(intro["active"], true, "the live token survives the sweep");
    let intro = server
        .introspect(&client, old["access_token"].as_str().unwrap())
        .await;
    assert_eq!(intro["active"], false);
    let again = tessera_server::janitor::sweep(&*server.store, server.now(), 0)
        .await
        .unwrap();
    assert_eq!(again.total(), 0, "nothing left to prune: {again:?}");

    // Past its last token's expiry and grace, the token goes and the client's standing
    // grant stays (it lives with the client); the next token works under it.
    server
        .clock
        .advance(3600 + tessera_server::janitor::GRACE + 1);
    let last = tessera_server::janitor::sweep(&*server.store, server.now(), 0)
        .await
        .unwrap();
    assert_eq!((last.access_tokens, last.grants), (1, 0), "{last:?}");
    let (status, _, next) = server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    assert_eq!(status, StatusCode::OK);
    let intro = server
        .introspect(&client, next["access_token"].as_str().unwrap())
        .await;
    assert_eq!(intro["active"], true);
}

#[tokio::test]
async fn the_janitor_keeps_the_audit_trail_for_the_retention_period_only() {
    let server = TestServer::start().await;
    let client = server
        .client(ClientSpec {
            name: "Retained".into(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let form = [("grant_type", "client_credentials")];
    server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    let old = server.now();
    server.clock.advance(120);
    server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    let before = server.store.list_audit(old, 100).await.unwrap();
    assert_eq!(before.len(), 2, "{before:?}");

    // Retention 60 s: the older event goes, the newer one (60 s old... not yet) stays.
    server.clock.advance(30);
    let pruned = tessera_server::janitor::sweep(&*server.store, server.now(), 60)
        .await
        .unwrap();
    assert_eq!(pruned.audit_events, 1, "{pruned:?}");
    let after = server.store.list_audit(0, 100).await.unwrap();
    assert_eq!(after.len(), 1, "{after:?}");
    assert_eq!(after[0].at, old + 120);
    // Retention 0 keeps everything.
    server.clock.advance(10_000);
    let kept = tessera_server::janitor::sweep(&*server.store, server.now(), 0)
        .await
        .unwrap();
    assert_eq!(kept.audit_events, 0);
    assert_eq!(server.store.list_audit(0, 100).await.unwrap().len(), 1);
}

/// The log carries every audit event under target `audit`: routine successes at request
/// rate (a token issued) at debug, everything else (a failed client authentication) at
/// info, each on the line of its own request id.
#[tokio::test]
async fn token_issuance_is_logged_at_debug_and_failures_at_info() {
    let server = TestServer::start().await;
    let client = server
        .client(ClientSpec {
            name: "log levels".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let form = [("grant_type", "client_credentials")];
    let (status, issued, _) = server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, failed, _) = server
        .post_form("/oauth2/token", &form, Some((&client.id, "not the secret")))
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let audit_line = |headers: &reqwest::header::HeaderMap, kind: &str| {
        let id = headers["x-request-id"].to_str().unwrap().to_owned();
        let logs = tessera_testkit::logs();
        logs.lines()
            .find(|l| {
                l.contains(" audit: ")
                    && l.contains(&format!("kind={kind}"))
                    && l.contains(&format!("request_id=\"{id}\""))
            })
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no {kind} audit line for request {id} in:\n{logs}"))
    };
    let line = audit_line(&issued, "token.issued");
    assert!(line.contains(" DEBUG "), "{line}");
    let line = audit_line(&failed, "client.auth_failed");
    assert!(line.contains(" INFO "), "{line}");
}

/// A line written while serving a request names the request: the id the response carried
/// as `X-Request-Id`, its method and its path, never its query string.
#[tokio::test]
async fn a_line_written_inside_a_request_names_its_request_id_method_and_path() {
    let server = TestServer::start().await;
    let client = server
        .client(ClientSpec {
            name: "request lines".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let marker = tessera_crypto::random_id(16).unwrap();
    let (status, headers, _) = server
        .post_form(
            &format!("/oauth2/token?state={marker}"),
            &[("grant_type", "client_credentials")],
            Some((&client.id, "not the secret")),
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let id = headers["x-request-id"].to_str().unwrap();
    let logs = tessera_testkit::logs();
    let prefix = format!("request{{id={id} method=POST path=/oauth2/token}}: audit: ");
    let line = logs
        .lines()
        .find(|l| l.contains(&prefix))
        .unwrap_or_else(|| panic!("no line starting {prefix:?} in:\n{logs}"));
    assert!(line.contains("kind=client.auth_failed"), "{line}");
    assert!(line.contains(" INFO "), "{line}");
    assert!(!logs.contains(&marker), "the query string reached the log");
}
