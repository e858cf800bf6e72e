//! Abuse limits: HTTP 429 with Retry-After for failure storms, never for legitimate use.

use std::time::Duration;

use reqwest::StatusCode;
use tessera_server::limits::Bucket;
use tessera_testkit::{ClientSpec, ConsentChoice, Form, TestServer};

async fn cc_client(server: &TestServer, name: &str) -> tessera_testkit::TestClient {
    server
        .client(ClientSpec {
            name: name.into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await
}

/// RFC 6819 §4.3.2 / §5.1.4.2.3: online guessing of client secrets is slowed.
#[tokio::test]
async fn bad_client_credentials_storm_gets_429_then_recovers() {
    let server = TestServer::start_with(|s| {
        s.rate_limits.token_failures = Bucket {
            burst: 10,
            per_minute: 60,
        };
        s.rate_limits.client_auth_failure_cost = 5;
    })
    .await;
    let client = cc_client(&server, "svc").await;
    let form = [("grant_type", "client_credentials")];
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let (status, headers, body) = server
            .post_form("/oauth2/token", &form, Some((&client.id, "wrong")))
            .await;
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(
                headers.get("retry-after").is_some(),
                "429 carries Retry-After"
            );
            assert_eq!(
                body["error"], "temporarily_unavailable",
                "RFC-style JSON body"
            );
        }
        statuses.push(status);
    }
    // Two failures fit the burst of 10 at cost 5; the third drains it (and is still
    // answered); from then on the address is blocked.
    assert_eq!(&statuses[..3], &[StatusCode::UNAUTHORIZED; 3]);
    assert!(
        statuses[3..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // Even the right secret waits while the address is blocked…
    let (status, headers, _) = server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    let wait: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    // …and works again after the window.
    tokio::time::sleep(Duration::from_secs(wait + 1)).await;
    let (status, _, body) = server
        .post_form("/oauth2/token", &form, client.basic())
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// The block covers every endpoint where clients authenticate, under each of its paths,
/// and nothing else.
#[tokio::test]
async fn a_blocked_address_is_refused_at_every_client_endpoint_and_only_there() {
    let server = TestServer::start_with(|s| {
        s.rate_limits.token_failures = Bucket {
            burst: 10,
            per_minute: 1,
        };
        s.rate_limits.client_auth_failure_cost = 10;
    })
    .await;
    let client = cc_client(&server, "svc").await;
    // Another client, whose own id is not blocked: what refuses it is its address.
    let other = cc_client(&server, "another svc").await;
    // The first failure fits the burst; the second overdraws it and blocks the address.
    for _ in 0..2 {
        let (status, _, _) = server
            .post_form(
                "/oauth2/token",
                &[("grant_type", "client_credentials")],
                Some((&client.id, "wrong")),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    for path in [
        "/oauth2/token",
        "/oauth/token",
        "/token",
        "/oauth2/revoke",
        "/oauth2/introspect",
    ] {
        let (status, headers, _) = server
            .post_form(path, &[("token", "anything")], other.basic())
            .await;
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS, "{path}");
        assert!(headers.get("retry-after").is_some(), "{path}");
    }
    for path in [
        "/.well-known/openid-configuration",
        "/health/ready",
        "/login",
    ] {
        let status = server
            .http()
            .get(server.url(path))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, StatusCode::OK, "{path}");
    }
}

/// The defaults never throttle a well-behaved integration: hundreds of good requests and
/// a few dozen failures from one address pass untouched.
#[tokio::test]
async fn defaults_leave_a_client_test_suite_alone() {
    let server = TestServer::start().await;
    let client = cc_client(&server, "svc").await;
    let form = [("grant_type", "client_credentials")];
    for i in 0..400 {
        let basic = if i % 10 == 0 {
            Some((client.id.as_str(), "wrong"))
        } else {
            client.basic()
        };
        let (status, _, _) = server.post_form("/oauth2/token", &form, basic).await;
        assert_ne!(
            status,
            StatusCode::TOO_MANY_REQUESTS,
            "request {i} was throttled"
        );
    }
}

/// Issue 5 item 1: a spoofed X-Forwarded-For from an untrusted peer changes nothing.
#[tokio::test]
async fn spoofed_forwarded_for_does_not_evade_the_limit() {
    let server = TestServer::start_with(|s| {
        s.rate_limits.token_failures = Bucket {
            burst: 5,
            per_minute: 1,
        };
        s.rate_limits.client_auth_failure_cost = 5;
    })
    .await;
    let client = cc_client(&server, "svc").await;
    let mut last = StatusCode::OK;
    for i in 0..3 {
        let resp = server
            .http()
            .post(server.url("/oauth2/token"))
            .header("x-forwarded-for", format!("198.51.100.{i}"))
            .header(
                "authorization",
                tessera_testkit::basic_header(&client.id, "wrong"),
            )
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        last = resp.status();
    }
    assert_eq!(last, StatusCode::TOO_MANY_REQUESTS);
}

/// RFC 6819 §5.1.4.2.3 without lock-out DoS: a password storm against one user from one
/// address blocks that pair, not the user's sign-in from elsewhere.
#[tokio::test]
async fn password_storm_slows_the_pair_only() {
    let server = TestServer::start_with(|s| {
        s.rate_limits.login_failures_per_user = Bucket {
            burst: 3,
            per_minute: 1,
        };
        s.rate_limits.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    server.user("victim", "the real password").await;
    let attacker = server.browser();
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let page = attacker.get("/login").await.text().await.unwrap();
        let mut form = Form::with_action(&page, "/login").unwrap();
        form.set("username", "victim");
        form.set("password", "guess");
        let resp = attacker
            .http
            .post(server.url("/login"))
            .header("x-forwarded-for", "203.0.113.66")
            .form(&form.fields)
            .send()
            .await
            .unwrap();
        statuses.push(resp.status());
    }
    assert_eq!(
        statuses.last(),
        Some(&StatusCode::TOO_MANY_REQUESTS),
        "{statuses:?}"
    );
    // The victim, from another address (behind the same trusted proxy), signs in at once.
    let victim = server.browser();
    let page = victim.get("/login").await.text().await.unwrap();
    let mut form = Form::with_action(&page, "/login").unwrap();
    form.set("username", "victim");
    form.set("password", "the real password");
    let resp = victim
        .http
        .post(server.url("/login"))
        .header("x-forwarded-for", "192.0.2.10")
        .form(&form.fields)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "the victim is not locked out"
    );
    // And the rest of the flow works for the victim.
    let client = server
        .client(ClientSpec {
            name: "app".into(),
            redirect_uris: vec!["https://app.example/cb".into()],
            ..Default::default()
        })
        .await;
    let url = tessera_testkit::with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("state", "s"),
        ],
    );
    let cb = victim
        .authorize(&url, None, Some(ConsentChoice::Allow))
        .await
        .expect("callback");
    assert!(cb.get("code").is_some());
}
