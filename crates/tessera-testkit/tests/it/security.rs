//! The security rules of the authorization code flow, each checked through real HTTP:
//! single-use codes bound to their client, PKCE S256 only, exact redirect URI matching,
//! error pages instead of redirects for untrusted requests, CSRF on every form, secrets
//! never stored or logged in plaintext, and token entropy.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{
    basic_header, contains_bytes, logs, with_query, ClientSpec, ConsentChoice, Form, Pkce, Stop,
    TestClient, TestServer,
};

const USER: &str = "alice";
const PASSWORD: &str = "alice-long-password-1";
const REDIRECT: &str = "https://app.example.com/cb";

async fn server_with_user() -> TestServer {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    server
}

async fn confidential(server: &TestServer, name: &str) -> TestClient {
    server
        .client(ClientSpec {
            name: name.into(),
            redirect_uris: vec![REDIRECT.into()],
            ..Default::default()
        })
        .await
}

async fn public(server: &TestServer, name: &str) -> TestClient {
    server
        .client(ClientSpec {
            name: name.into(),
            redirect_uris: vec![REDIRECT.into()],
            public: true,
            ..Default::default()
        })
        .await
}

/// `/oauth2/authorize` for `client` with scope `openid`, state `s-1`, and `extra`.
fn authorize_url(server: &TestServer, client: &TestClient, extra: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &client.id),
        ("redirect_uri", &client.redirect_uri),
        ("scope", "openid"),
        ("state", "s-1"),
    ];
    pairs.extend_from_slice(extra);
    with_query(&server.url("/oauth2/authorize"), &pairs)
}

/// Runs the browser flow (sign-in and consent as needed) and returns the code.
async fn code_for(server: &TestServer, client: &TestClient, extra: &[(&str, &str)]) -> String {
    let cb = server
        .browser()
        .authorize(
            &authorize_url(server, client, extra),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some("s-1"), "{}", cb.url);
    cb.code().to_owned()
}

/// Redeems `code` as a confidential `client` (HTTP Basic), with `extra` parameters.
async fn redeem(
    server: &TestServer,
    client: &TestClient,
    code: &str,
    extra: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut form: Vec<(&str, &str)> = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", &client.redirect_uri),
    ];
    form.extend_from_slice(extra);
    server
        .post_form("/oauth2/token", &form, client.basic())
        .await
}

async fn refresh(
    server: &TestServer,
    client: &TestClient,
    refresh_token: &str,
) -> (StatusCode, Value) {
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
            client.basic(),
        )
        .await;
    (status, body)
}

fn text(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no {key} in {v}"))
        .to_owned()
}

fn assert_invalid_grant(status: StatusCode, body: &Value) {
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// Asserts that `resp` is an HTML error page and not a redirect to anywhere.
async fn assert_error_page(resp: reqwest::Response, what: &str) {
    let status = resp.status();
    let location = resp.headers().get("location").cloned();
    let content_type = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.unwrap_or_default();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert!(location.is_none(), "{what}: redirected to {location:?}");
    assert!(
        content_type.starts_with("text/html"),
        "{what}: content-type {content_type}"
    );
    assert!(body.contains("<html"), "{what}: not a page: {body}");
    assert!(!body.contains("code="), "{what}: page leaks a code: {body}");
}

// RFC 6749 §4.1.2 and §10.5: a code is single-use; a second redemption is refused and the
// tokens issued from the first one are revoked (RFC 9700 §4.5 as well).
#[tokio::test]
async fn replayed_code_is_refused_and_revokes_its_tokens() {
    let server = server_with_user().await;
    let client = confidential(&server, "Replay app").await;
    let code = code_for(&server, &client, &[]).await;

    let (status, _, first) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let access = text(&first, "access_token");
    let refresh_token = text(&first, "refresh_token");
    assert_eq!(server.introspect(&client, &access).await["active"], true);
    assert_eq!(
        server.introspect(&client, &refresh_token).await["active"],
        true
    );

    let (status, _, second) = redeem(&server, &client, &code, &[]).await;
    assert_invalid_grant(status, &second);
    assert!(second.get("access_token").is_none(), "{second}");

    assert_eq!(server.introspect(&client, &access).await["active"], false);
    assert_eq!(
        server.introspect(&client, &refresh_token).await["active"],
        false
    );
    let (status, body) = server.bearer_get("/userinfo", &access, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let (status, body) = refresh(&server, &client, &refresh_token).await;
    assert_invalid_grant(status, &body);
}

// RFC 6749 §4.1.3: the server must ensure the code was issued to the authenticated client.
// A foreign client's attempt must not burn or revoke the code (RFC 9700 §4.5 does not let a
// third party revoke someone else's grant).
#[tokio::test]
async fn code_is_bound_to_its_client() {
    let server = server_with_user().await;
    let owner = confidential(&server, "Owner app").await;
    let other = confidential(&server, "Other app").await;
    let code = code_for(&server, &owner, &[]).await;

    // The other client, with its own valid credentials, by Basic and by body.
    let (status, _, body) = redeem(&server, &other, &code, &[]).await;
    assert_invalid_grant(status, &body);
    let other_secret = other.secret.clone().unwrap();
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", REDIRECT),
                ("client_id", &other.id),
                ("client_secret", &other_secret),
            ],
            None,
        )
        .await;
    assert_invalid_grant(status, &body);

    // The code still works for its own client.
    let (status, _, tokens) = redeem(&server, &owner, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = text(&tokens, "access_token");
    assert_eq!(
        tokens.get("refresh_token").map(Value::is_string),
        Some(true)
    );

    // A foreign client presenting the (now used) code revokes nothing either.
    let (status, _, body) = redeem(&server, &other, &code, &[]).await;
    assert_invalid_grant(status, &body);
    assert_eq!(server.introspect(&owner, &access).await["active"], true);
    let (status, body) = server.bearer_get("/userinfo", &access, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// RFC 6749 §4.1.2: codes are short-lived; the contract fixes 300 seconds.
#[tokio::test]
async fn code_expires_after_300_seconds() {
    let server = server_with_user().await;
    let client = confidential(&server, "Slow app").await;

    let late = code_for(&server, &client, &[]).await;
    server.clock.advance(301);
    let (status, _, body) = redeem(&server, &client, &late, &[]).await;
    assert_invalid_grant(status, &body);

    let in_time = code_for(&server, &client, &[]).await;
    server.clock.advance(299);
    let (status, _, body) = redeem(&server, &client, &in_time, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let exactly = code_for(&server, &client, &[]).await;
    server.clock.advance(300);
    let (status, _, body) = redeem(&server, &client, &exactly, &[]).await;
    assert_invalid_grant(status, &body);
}

/// Runs an authorization request that must come back as an error callback.
async fn error_callback(
    server: &TestServer,
    client: &TestClient,
    extra: &[(&str, &str)],
) -> tessera_testkit::Callback {
    let cb = server
        .browser()
        .authorize(
            &authorize_url(server, client, extra),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("an error callback, not a page");
    assert!(cb.get("code").is_none(), "no code expected: {}", cb.url);
    assert!(cb.url.starts_with(REDIRECT), "{}", cb.url);
    assert_eq!(cb.get("state"), Some("s-1"), "{}", cb.url);
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()), "{}", cb.url);
    cb
}

// RFC 7636 §4.2 and RFC 9700 §2.1.1: only S256 is accepted; `plain` is refused.
#[tokio::test]
async fn pkce_plain_is_refused() {
    let server = server_with_user().await;
    let client = public(&server, "Plain app").await;
    let verifier = Pkce::new().verifier;
    let cb = error_callback(
        &server,
        &client,
        &[
            ("code_challenge", &verifier),
            ("code_challenge_method", "plain"),
        ],
    )
    .await;
    assert_eq!(cb.get("error"), Some("invalid_request"), "{}", cb.url);
}

// RFC 7636 §4.3: a missing code_challenge_method means `plain`, which is refused.
#[tokio::test]
async fn pkce_missing_method_is_refused() {
    let server = server_with_user().await;
    let client = public(&server, "No-method app").await;
    let pkce = Pkce::new();
    let cb = error_callback(&server, &client, &[("code_challenge", &pkce.challenge)]).await;
    assert_eq!(cb.get("error"), Some("invalid_request"), "{}", cb.url);
}

// RFC 9700 §2.1.1 / RFC 8252 §8.1: a public client must use PKCE.
#[tokio::test]
async fn public_client_without_challenge_is_refused() {
    let server = server_with_user().await;
    let client = public(&server, "Careless SPA").await;
    let cb = error_callback(&server, &client, &[]).await;
    assert_eq!(cb.get("error"), Some("invalid_request"), "{}", cb.url);
}

// RFC 7636 §4.6: the verifier must hash to the challenge; otherwise invalid_grant.
#[tokio::test]
async fn wrong_code_verifier_is_invalid_grant() {
    let server = server_with_user().await;
    let client = public(&server, "SPA").await;
    let pkce = Pkce::new();
    let code = code_for(
        &server,
        &client,
        &[
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let exchange = |verifier: String| {
        let server = &server;
        let client = &client;
        let code = code.clone();
        async move {
            let mut form = vec![
                ("grant_type", "authorization_code".to_owned()),
                ("code", code),
                ("redirect_uri", REDIRECT.to_owned()),
                ("client_id", client.id.clone()),
            ];
            if !verifier.is_empty() {
                form.push(("code_verifier", verifier));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            server.post_form("/oauth2/token", &form, None).await
        }
    };
    let (status, _, body) = exchange(Pkce::new().verifier).await;
    assert_invalid_grant(status, &body);
    let (status, _, body) = exchange(String::new()).await;
    assert_invalid_grant(status, &body);

    // The right verifier is the control: the same request shape does succeed.
    let fresh = code_for(
        &server,
        &client,
        &[
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
    .await;
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &fresh),
                ("redirect_uri", REDIRECT),
                ("client_id", &client.id),
                ("code_verifier", &pkce.verifier),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

// RFC 9700 §4.8.2: a code_verifier for a code issued without a challenge is a PKCE downgrade.
#[tokio::test]
async fn pkce_downgrade_is_invalid_grant() {
    let server = server_with_user().await;
    let client = confidential(&server, "Downgrade app").await;
    let code = code_for(&server, &client, &[]).await;
    let verifier = Pkce::new().verifier;
    let (status, _, body) = redeem(&server, &client, &code, &[("code_verifier", &verifier)]).await;
    assert_invalid_grant(status, &body);
}

// RFC 6749 §3.1.2.3 / §4.1.2.1, RFC 9700 §4.1.3: exact string matching; a mismatching
// redirect URI is shown an error page and never redirected to.
#[tokio::test]
async fn redirect_uri_variants_get_an_error_page() {
    let server = server_with_user().await;
    let client = confidential(&server, "Exact app").await;
    // Sign in and consent first, so that a lax server would have every reason to redirect.
    let browser = server.browser();
    browser
        .authorize(
            &authorize_url(&server, &client, &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("control flow");
    for variant in [
        "https://app.example.com/cb/",
        "https://APP.EXAMPLE.COM/cb",
        "https://app.example.com/CB",
        "https://app.example.com/cb?extra=1",
        "https://app.example.com/%63b",
        "https://app.example.com:8443/cb",
        "https://app.example.com:443/cb",
        "http://app.example.com/cb",
        "https://evil.example.com/cb",
    ] {
        let url = with_query(
            &server.url("/oauth2/authorize"),
            &[
                ("response_type", "code"),
                ("client_id", &client.id),
                ("redirect_uri", variant),
                ("scope", "openid"),
                ("state", "s-1"),
            ],
        );
        assert_error_page(browser.get(&url).await, variant).await;
    }
    // The registered URI itself still redirects with a code (the test can tell the two apart).
    let resp = browser.get(&authorize_url(&server, &client, &[])).await;
    assert_eq!(resp.status(), StatusCode::FOUND);
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location.starts_with(&format!("{REDIRECT}?code=")),
        "{location}"
    );
}

// RFC 6749 §4.1.2.1: an unknown or missing client_id is never redirected.
#[tokio::test]
async fn unknown_client_gets_an_error_page() {
    let server = server_with_user().await;
    let browser = server.browser();
    let url = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", "no-such-client"),
            ("redirect_uri", REDIRECT),
            ("state", "s-1"),
        ],
    );
    assert_error_page(browser.get(&url).await, "unknown client").await;
    let url = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("redirect_uri", REDIRECT),
            ("state", "s-1"),
        ],
    );
    assert_error_page(browser.get(&url).await, "missing client_id").await;
}

// RFC 6749 §3.1.2.3: with several registered URIs the request must name one.
#[tokio::test]
async fn missing_redirect_uri_with_two_registered_gets_an_error_page() {
    let server = server_with_user().await;
    let two = server
        .client(ClientSpec {
            name: "Two callbacks".into(),
            redirect_uris: vec![REDIRECT.into(), "https://app.example.com/other".into()],
            ..Default::default()
        })
        .await;
    let url = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &two.id),
            ("scope", "openid"),
            ("state", "s-1"),
        ],
    );
    assert_error_page(
        server.browser().get(&url).await,
        "two registered, none sent",
    )
    .await;

    // With exactly one registered URI it may be omitted (the control).
    let one = confidential(&server, "One callback").await;
    let url = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &one.id),
            ("scope", "openid"),
            ("state", "s-1"),
        ],
    );
    let cb = server
        .browser()
        .authorize(&url, Some((USER, PASSWORD)), Some(ConsentChoice::Allow))
        .await
        .expect("callback");
    assert!(cb.url.starts_with(REDIRECT), "{}", cb.url);
    let code = cb.code().to_owned();
    // The code was issued without redirect_uri, so the token request may omit it too.
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "authorization_code"), ("code", &code)],
            one.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn assert_invalid_client(status: StatusCode, headers: &HeaderMap, body: &Value) {
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    let www = headers
        .get("www-authenticate")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no WWW-Authenticate: {headers:?}"));
    assert!(www.to_ascii_lowercase().starts_with("basic"), "{www}");
}

// RFC 6749 §5.2: failed client authentication is invalid_client, 401 with WWW-Authenticate.
#[tokio::test]
async fn bad_client_credentials_are_401_with_www_authenticate() {
    let server = server_with_user().await;
    let client = confidential(&server, "Authenticated app").await;
    let code = code_for(&server, &client, &[]).await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", REDIRECT),
    ];

    let (status, headers, body) = server
        .post_form("/oauth2/token", &form, Some((&client.id, "tcs_wrong")))
        .await;
    assert_invalid_client(status, &headers, &body);
    let (status, headers, body) = server
        .post_form("/oauth2/token", &form, Some(("nobody", "tcs_wrong")))
        .await;
    assert_invalid_client(status, &headers, &body);
    let mut with_body = form.to_vec();
    with_body.extend([
        ("client_id", client.id.as_str()),
        ("client_secret", "tcs_wrong"),
    ]);
    let (status, headers, body) = server.post_form("/oauth2/token", &with_body, None).await;
    assert_invalid_client(status, &headers, &body);
    // A confidential client cannot pass itself off as public by omitting its secret.
    let mut no_secret = form.to_vec();
    no_secret.push(("client_id", client.id.as_str()));
    let (status, headers, body) = server.post_form("/oauth2/token", &no_secret, None).await;
    assert_invalid_client(status, &headers, &body);
    // No client authentication at all.
    let (status, headers, body) = server.post_form("/oauth2/token", &form, None).await;
    assert_invalid_client(status, &headers, &body);

    // None of those burned the code.
    let (status, _, body) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

fn session_cookie_set(resp: &reqwest::Response) -> bool {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|c| c.starts_with("tessera_session=") && !c.starts_with("tessera_session=;"))
}

// RFC 6749 §10.12: the login form is CSRF-protected; without the right token nobody is
// signed in.
#[tokio::test]
async fn login_without_valid_csrf_token_is_refused() {
    let server = server_with_user().await;
    let client = confidential(&server, "CSRF app").await;
    let browser = server.browser();
    // Reach the login page of a real authorization request.
    let err = browser
        .authorize(&authorize_url(&server, &client, &[]), None, None)
        .await
        .expect_err("login page");
    let Stop::Login { body } = err else {
        panic!("expected the login page, got {err:?}")
    };
    let form = Form::with_action(&body, "/login").expect("login form");
    assert!(
        form.field("csrf_token").is_some_and(|t| !t.is_empty()),
        "{form:?}"
    );

    let attempt = |csrf: Option<&str>| {
        let mut fields: Vec<(String, String)> = form
            .fields
            .iter()
            .filter(|(k, _)| k != "csrf_token")
            .cloned()
            .collect();
        fields.push(("username".into(), USER.into()));
        fields.push(("password".into(), PASSWORD.into()));
        if let Some(c) = csrf {
            fields.push(("csrf_token".into(), c.into()));
        }
        fields
    };
    for (what, fields) in [
        ("no token", attempt(None)),
        (
            "wrong token",
            attempt(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ),
        ("empty token", attempt(Some(""))),
    ] {
        let resp = browser.post("/login", &fields).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}");
        assert!(
            !session_cookie_set(&resp),
            "{what}: a session cookie was set"
        );
        assert!(resp.headers().get("location").is_none(), "{what}");
    }
    // A valid token from another browser (another CSRF cookie) is refused too.
    let intruder = server.browser();
    let _ = intruder.get("/login").await;
    let resp = intruder
        .post("/login", &attempt(form.field("csrf_token")))
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(!session_cookie_set(&resp));

    // Nobody got signed in: the next request still asks for the login.
    for b in [&browser, &intruder] {
        let again = b
            .authorize(&authorize_url(&server, &client, &[]), None, None)
            .await;
        assert!(matches!(again, Err(Stop::Login { .. })), "{again:?}");
    }
    // The control: the untouched form signs in.
    let cb = browser
        .authorize(
            &authorize_url(&server, &client, &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert!(cb.get("code").is_some());
}

// RFC 6749 §10.12: the consent form is CSRF-protected; a forged decision issues no code
// and records no consent.
#[tokio::test]
async fn consent_without_valid_csrf_token_is_refused() {
    let server = server_with_user().await;
    let client = confidential(&server, "Consent CSRF app").await;
    let browser = server.browser();
    let err = browser
        .authorize(
            &authorize_url(&server, &client, &[]),
            Some((USER, PASSWORD)),
            None,
        )
        .await
        .expect_err("consent page");
    let Stop::Consent { body } = err else {
        panic!("expected the consent page, got {err:?}")
    };
    let form = Form::with_action(&body, "/consent").expect("consent form");
    let fields = |csrf: Option<&str>| {
        let mut f: Vec<(String, String)> = form
            .fields
            .iter()
            .filter(|(k, _)| k != "csrf_token")
            .cloned()
            .collect();
        f.push(("decision".into(), "allow".into()));
        if let Some(c) = csrf {
            f.push(("csrf_token".into(), c.into()));
        }
        f
    };
    for (what, f) in [
        ("no token", fields(None)),
        (
            "wrong token",
            fields(Some("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")),
        ),
    ] {
        let resp = browser.post("/consent", &f).await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{what}");
        assert!(resp.headers().get("location").is_none(), "{what}");
        let page = resp.text().await.unwrap();
        assert!(!page.contains("code="), "{what}: {page}");
        assert!(
            Form::all(&page).iter().all(|f| f.field("code").is_none()),
            "{what}: {page}"
        );
    }
    // No consent was recorded: the next request asks again.
    let again = browser
        .authorize(&authorize_url(&server, &client, &[]), None, None)
        .await;
    assert!(matches!(again, Err(Stop::Consent { .. })), "{again:?}");
    // The control: the real form with its token issues a code.
    let resp = browser
        .post("/consent", &fields(form.field("csrf_token")))
        .await;
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(location.contains("code="), "{location}");
}

/// Signs in by hand and returns the session cookie value and the callback URL.
async fn manual_flow(server: &TestServer, client: &TestClient) -> (String, String) {
    let browser = server.browser();
    let mut resp = browser.get(&authorize_url(server, client, &[])).await;
    let mut session = None;
    for _ in 0..8 {
        if let Some(s) = resp
            .headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|c| c.strip_prefix("tessera_session="))
        {
            session = Some(s.split(';').next().unwrap_or("").to_owned());
        }
        if resp.status().is_redirection() {
            let location = resp.headers()["location"].to_str().unwrap().to_owned();
            if location.starts_with(REDIRECT) {
                return (session.expect("session cookie"), location);
            }
            resp = browser.get(&location).await;
            continue;
        }
        let page = resp.text().await.unwrap();
        if let Some(mut form) = Form::with_action(&page, "/login") {
            form.set("username", USER);
            form.set("password", PASSWORD);
            resp = browser.post("/login", &form.fields).await;
        } else if let Some(mut form) = Form::with_action(&page, "/consent") {
            form.set("decision", "allow");
            resp = browser.post("/consent", &form.fields).await;
        } else {
            panic!("unexpected page: {page}");
        }
    }
    panic!("flow did not finish");
}

// RFC 6749 §10.3/§10.5 and contract §5: codes, tokens, client secrets and sessions are
// stored only as hashes, the password only as Argon2id, and none of them is logged.
#[tokio::test]
async fn no_plaintext_secrets_in_store_or_logs() {
    let server = server_with_user().await;
    let client = confidential(&server, "Leak check app").await;
    let secret = client.secret.clone().unwrap();
    let (session, callback) = manual_flow(&server, &client).await;
    let code = url::Url::parse(&callback)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("code");
    let (status, _, first) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, second) = refresh(&server, &client, &text(&first, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{second}");
    // Exercise the endpoints that receive tokens, so that their logs are included.
    server
        .introspect(&client, &text(&second, "access_token"))
        .await;
    let (status, _) = server
        .bearer_get("/userinfo", &text(&second, "access_token"), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    // A replay attempt logs a warning; it must not carry the code either.
    let (status, _, _) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    let secrets = [
        ("client secret", secret),
        ("password", PASSWORD.to_owned()),
        ("authorization code", code),
        ("session cookie", session),
        ("access token", text(&first, "access_token")),
        ("refresh token", text(&first, "refresh_token")),
        ("rotated access token", text(&second, "access_token")),
        ("rotated refresh token", text(&second, "refresh_token")),
    ];
    let store = server.store_bytes();
    assert!(store.len() > 4096, "the store files were not found");
    assert!(
        contains_bytes(&store, client.id.as_bytes()),
        "sanity: the client id is stored"
    );
    let logs = server_logs();
    assert!(
        logs.contains("finished processing request"),
        "sanity: the server's request logs are captured"
    );
    for (what, value) in &secrets {
        assert!(value.len() >= 16, "{what} too short to search for");
        assert!(
            !contains_bytes(&store, value.as_bytes()),
            "{what} stored in plaintext"
        );
        // The random part alone, in case a prefix was stripped before storing/logging.
        let tail = value.get(4..).unwrap_or(value);
        assert!(
            !contains_bytes(&store, tail.as_bytes()),
            "{what} (without prefix) stored"
        );
        if let Some(line) = logs.lines().find(|l| l.contains(value.as_str())) {
            panic!("{what} appears in the logs: {line}");
        }
        assert!(
            !logs.contains(tail),
            "{what} (without prefix) appears in the logs"
        );
    }
}

/// The captured log events of the server side. The same process also runs the test's HTTP
/// clients, whose cookie jar legitimately logs the cookies it receives; those events are not
/// the server's and are left out.
fn server_logs() -> String {
    const CLIENT_SIDE: [&str; 3] = [" cookie_store::", " reqwest::", " hyper_util::client::"];
    let mut out = String::new();
    let mut keep = true;
    for line in logs().lines() {
        // A new event starts with its timestamp; other lines continue the previous event.
        if line.starts_with(|c: char| c.is_ascii_digit()) {
            keep = !CLIENT_SIDE.iter().any(|t| line.contains(t));
        }
        if keep {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The random part of a token: base64url after the 4-character prefix, 32 bytes.
fn assert_256_bits(what: &str, token: &str, prefix: &str) {
    assert!(
        token.starts_with(prefix),
        "{what} {token:?} lacks prefix {prefix}"
    );
    let random = token.get(4..).unwrap_or("");
    let bytes = URL_SAFE_NO_PAD
        .decode(random)
        .unwrap_or_else(|e| panic!("{what} is not base64url after its prefix: {e}"));
    assert!(
        bytes.len() >= 32,
        "{what} has only {} random bytes",
        bytes.len()
    );
}

// RFC 6749 §10.10 and RFC 6819 §5.1.4.2.2: tokens must be unguessable (≥ 128 bits; we
// promise 256).
#[tokio::test]
async fn tokens_have_256_bits_of_entropy() {
    let server = server_with_user().await;
    let client = confidential(&server, "Entropy app").await;
    assert_256_bits("client secret", client.secret.as_deref().unwrap(), "tcs_");
    let code = code_for(&server, &client, &[]).await;
    assert_256_bits("code", &code, "tac_");
    let (status, _, body) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_256_bits("access token", &text(&body, "access_token"), "tat_");
    assert_256_bits("refresh token", &text(&body, "refresh_token"), "trt_");
    let (status, again) = refresh(&server, &client, &text(&body, "refresh_token")).await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_256_bits(
        "rotated access token",
        &text(&again, "access_token"),
        "tat_",
    );
    assert_256_bits(
        "rotated refresh token",
        &text(&again, "refresh_token"),
        "trt_",
    );
    assert_ne!(text(&body, "access_token"), text(&again, "access_token"));
    assert_ne!(text(&body, "refresh_token"), text(&again, "refresh_token"));
    let other = code_for(&server, &client, &[]).await;
    assert_ne!(code, other);
}

// RFC 6749 §6 and §10.4: a refresh token is bound to its client; another client's attempt
// fails and must not revoke the real owner's family.
#[tokio::test]
async fn refresh_token_is_bound_to_its_client() {
    let server = server_with_user().await;
    let a = confidential(&server, "Client A").await;
    let b = confidential(&server, "Client B").await;
    let code = code_for(&server, &a, &[]).await;
    let (status, _, tokens) = redeem(&server, &a, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = text(&tokens, "access_token");
    let refresh_token = text(&tokens, "refresh_token");

    let (status, body) = refresh(&server, &b, &refresh_token).await;
    assert_invalid_grant(status, &body);
    // B learns nothing about A's refresh token by introspecting it either.
    assert_eq!(server.introspect(&b, &refresh_token).await["active"], false);

    assert_eq!(server.introspect(&a, &access).await["active"], true);
    let (status, body) = refresh(&server, &a, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        server.introspect(&a, &text(&body, "access_token")).await["active"],
        true
    );
}

// Introspection and refresh read the client together with the token it presents (one
// store read); the client is still authenticated before anything read is used: a wrong
// secret learns nothing about the token and consumes nothing, and with a wrong secret and
// a malformed request the answer is still invalid_client.
#[tokio::test]
async fn credentials_are_checked_before_anything_read_with_them_is_used() {
    let server = server_with_user().await;
    let a = confidential(&server, "Client A").await;
    let code = code_for(&server, &a, &[]).await;
    let (status, _, tokens) = redeem(&server, &a, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let access = text(&tokens, "access_token");
    let refresh_token = text(&tokens, "refresh_token");
    let wrong = Some((a.id.as_str(), "tcs_not-the-secret"));

    for token in [&access, &refresh_token] {
        let (status, _, body) = server
            .post_form("/oauth2/introspect", &[("token", token.as_str())], wrong)
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "invalid_client", "{body}");
        assert!(body.get("active").is_none(), "{body}");
    }
    let (status, _, body) = server.post_form("/oauth2/introspect", &[], wrong).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no token, wrong secret: {body}"
    );
    assert_eq!(body["error"], "invalid_client", "{body}");

    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token.as_str()),
            ],
            wrong,
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    assert_eq!(body["error"], "invalid_client", "{body}");
    let (status, _, body) = server
        .post_form("/oauth2/token", &[("grant_type", "refresh_token")], wrong)
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "no refresh token, wrong secret: {body}"
    );
    assert_eq!(body["error"], "invalid_client", "{body}");

    // Nothing was consumed: the owner refreshes, and its new tokens are live.
    assert_eq!(server.introspect(&a, &access).await["active"], true);
    let (status, body) = refresh(&server, &a, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["id_token"].is_string(),
        "openid refresh returns an ID token: {body}"
    );
    assert_eq!(
        server.introspect(&a, &text(&body, "access_token")).await["active"],
        true
    );
    assert_eq!(
        server.introspect(&a, &text(&body, "refresh_token")).await["active"],
        true
    );
}

fn assert_no_store(what: &str, headers: &HeaderMap) {
    let cc = headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no Cache-Control"));
    assert!(
        cc.split(',').any(|d| d.trim() == "no-store"),
        "{what}: Cache-Control {cc}"
    );
}

// RFC 6749 §5.1 (and §5.2 for errors): token responses must not be cached.
#[tokio::test]
async fn token_responses_carry_cache_control_no_store() {
    let server = server_with_user().await;
    let client = server
        .client(ClientSpec {
            name: "No-store app".into(),
            redirect_uris: vec![REDIRECT.into()],
            grant_types: Some("authorization_code,refresh_token,client_credentials".into()),
            ..Default::default()
        })
        .await;
    let code = code_for(&server, &client, &[]).await;
    let (status, headers, body) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_no_store("authorization_code", &headers);

    let (status, headers, refreshed) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &text(&body, "refresh_token")),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    assert_no_store("refresh_token", &headers);

    let (status, headers, cc) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{cc}");
    assert_no_store("client_credentials", &headers);

    let (status, headers, _) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_no_store("error response", &headers);

    // The same through a raw request with Basic built by hand, at an alias path.
    let resp = server
        .http()
        .post(server.url("/token"))
        .header(
            "authorization",
            basic_header(&client.id, client.secret.as_deref().unwrap()),
        )
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_no_store("alias /token", resp.headers());
}

// RFC 9700 §4.14.2 / RFC 6749 §6: a confidential client's refresh token presented without
// its client authentication is refused, and the stranger cannot kill the family.
#[tokio::test]
async fn unauthenticated_refresh_is_refused_and_keeps_the_family() {
    let server = server_with_user().await;
    let a = confidential(&server, "Client A").await;
    let code = code_for(&server, &a, &[]).await;
    let (status, _, tokens) = redeem(&server, &a, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let refresh_token = text(&tokens, "refresh_token");
    for basic in [None, Some((a.id.as_str(), "guessed-secret"))] {
        let mut form = vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token.as_str()),
        ];
        if basic.is_none() {
            form.push(("client_id", a.id.as_str()));
        }
        let (status, _, body) = server.post_form("/oauth2/token", &form, basic).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error"], "invalid_client");
    }
    assert_eq!(
        server.introspect(&a, &text(&tokens, "access_token")).await["active"],
        true
    );
    let (status, body) = refresh(&server, &a, &refresh_token).await;
    assert_eq!(status, StatusCode::OK, "the family survived: {body}");
}

/// Tokens minted before tokens carried their issue time (prefix + 43 characters, stored
/// under their plain SHA-256) keep working after the upgrade: introspection finds the
/// access token, and the refresh token rotates into tokens of the current format.
#[tokio::test]
async fn tokens_minted_before_issue_times_keep_working() {
    use sha2::{Digest, Sha256};
    use tessera_core::model::{AccessToken, RefreshToken};
    use tessera_crypto::SecretHash;
    use tessera_store::Issuance;

    let server = server_with_user().await;
    let client = confidential(&server, "Upgraded app").await;
    let code = code_for(&server, &client, &[]).await;
    let (status, _, tokens) = redeem(&server, &client, &code, &[]).await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (at, rt) = (
        text(&tokens, "access_token"),
        text(&tokens, "refresh_token"),
    );
    assert_eq!(at.len(), "tat_".len() + 12 + 43, "{at}");
    let current_access = server
        .store
        .get_access_token(&SecretHash::of(&at).0)
        .await
        .unwrap()
        .expect("stored under its key");
    let current_refresh = server
        .store
        .get_refresh_token(&SecretHash::of(&rt).0)
        .await
        .unwrap()
        .expect("stored under its key");

    // What the previous version minted and stored, for the same grant.
    let old_at = format!("tat_{}", URL_SAFE_NO_PAD.encode([7u8; 32]));
    let old_rt = format!("trt_{}", URL_SAFE_NO_PAD.encode([9u8; 32]));
    let digest = |s: &str| -> [u8; 32] { Sha256::digest(s.as_bytes()).into() };
    server
        .store
        .issue(&Issuance {
            new_grant: None,
            standing_grant: false,
            access: AccessToken {
                hash: digest(&old_at),
                ..current_access
            },
            refresh: Some(RefreshToken {
                hash: digest(&old_rt),
                access_token_hash: Some(digest(&old_at)),
                ..current_refresh
            }),
            audit: vec![],
        })
        .await
        .unwrap();

    let body = server.introspect(&client, &old_at).await;
    assert_eq!(body["active"], true, "{body}");
    assert_eq!(body["client_id"], client.id.as_str(), "{body}");

    let (status, _, refreshed) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &old_rt)],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let new_rt = text(&refreshed, "refresh_token");
    assert_eq!(new_rt.len(), "trt_".len() + 12 + 43, "{new_rt}");
    // The old access token went with its rotated refresh token; the old refresh token
    // is spent.
    let body = server.introspect(&client, &old_at).await;
    assert_eq!(body["active"], false, "{body}");
}
