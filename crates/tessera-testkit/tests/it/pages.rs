//! What a person and a browser see (contract §3): the login, consent and logout pages, the
//! remembered consent, the response modes, security headers, the session cookie, and the
//! `iss`/`tenant` parameters of every callback.

use reqwest::StatusCode;
use scraper::{Html, Selector};
use tessera_testkit::{
    with_query, Callback, ClientSpec, ConsentChoice, Form, Stop, TestClient, TestServer,
};

const USER: &str = "bob";
const PASSWORD: &str = "bob-long-password-2";
const REDIRECT: &str = "https://app.example.com/cb";
const INVALID: &str = "Invalid username or password";

async fn setup() -> (TestServer, TestClient) {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Photo Printer".into(),
            redirect_uris: vec![REDIRECT.into()],
            ..Default::default()
        })
        .await;
    (server, client)
}

fn authorize_url(
    server: &TestServer,
    client: &TestClient,
    scope: &str,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs: Vec<(&str, &str)> = vec![
        ("response_type", "code"),
        ("client_id", &client.id),
        ("redirect_uri", &client.redirect_uri),
        ("scope", scope),
        ("state", "st-9"),
    ];
    pairs.extend_from_slice(extra);
    with_query(&server.url("/oauth2/authorize"), &pairs)
}

fn select<'a>(doc: &'a Html, css: &str) -> Vec<scraper::ElementRef<'a>> {
    let sel = Selector::parse(css).unwrap();
    doc.select(&sel).collect()
}

fn inner_text(e: &scraper::ElementRef<'_>) -> String {
    e.text()
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// The input labelled exactly `label` (via `<label for=…>`), which must exist.
fn labelled_input<'a>(doc: &'a Html, label: &str) -> scraper::ElementRef<'a> {
    let labels = select(doc, "label[for]");
    let l = labels
        .iter()
        .find(|l| inner_text(l) == label)
        .unwrap_or_else(|| panic!("no label {label:?} in {}", doc.html()));
    let id = l.value().attr("for").unwrap();
    select(doc, "input[id]")
        .into_iter()
        .find(|i| i.value().attr("id") == Some(id))
        .unwrap_or_else(|| panic!("label {label:?} points at missing input #{id}"))
}

fn assert_login_page(html: &str) {
    let doc = Html::parse_document(html);
    let username = labelled_input(&doc, "Username");
    assert_eq!(username.value().attr("name"), Some("username"));
    let password = labelled_input(&doc, "Password");
    assert_eq!(password.value().attr("name"), Some("password"));
    assert_eq!(password.value().attr("type"), Some("password"));
    let buttons = select(
        &doc,
        "form[action='/login'] button, form[action='/login'] input[type=submit]",
    );
    assert!(
        buttons
            .iter()
            .any(|b| inner_text(b) == "Sign in" || b.value().attr("value") == Some("Sign in")),
        "no Sign in button: {html}"
    );
}

/// The text of every alert/error element of a page.
fn alerts(html: &str) -> Vec<String> {
    let doc = Html::parse_document(html);
    select(&doc, "[role=alert], .error")
        .iter()
        .map(inner_text)
        .collect()
}

// Contract §3: the login form has inputs labelled Username and Password and a Sign in button.
#[tokio::test]
async fn login_page_has_labelled_inputs_and_sign_in_button() {
    let (server, client) = setup().await;
    let browser = server.browser();
    let resp = browser.get("/login").await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_login_page(&resp.text().await.unwrap());

    // The login page reached from an authorization request names the application too.
    let err = browser
        .authorize(&authorize_url(&server, &client, "openid", &[]), None, None)
        .await
        .expect_err("login page");
    let Stop::Login { body } = err else {
        panic!("expected login, got {err:?}")
    };
    assert_login_page(&body);
    assert!(body.contains("Photo Printer"), "{body}");
}

// Contract §3: a failed sign-in says "Invalid username or password" and nothing about which
// part was wrong.
#[tokio::test]
async fn wrong_password_shows_only_the_generic_message() {
    let (server, client) = setup().await;
    let browser = server.browser();
    let url = authorize_url(&server, &client, "openid", &[]);
    for (username, password) in [
        (USER, "not-the-password"),
        ("nobody-here", PASSWORD),
        ("", ""),
    ] {
        let err = browser
            .authorize(&url, Some((username, password)), None)
            .await
            .expect_err("back to the login page");
        let Stop::Login { body } = err else {
            panic!("expected login, got {err:?}")
        };
        assert_login_page(&body);
        assert_eq!(alerts(&body), vec![INVALID.to_owned()], "{body}");
        let lower = body.to_lowercase();
        for hint in [
            "unknown user",
            "no such user",
            "not found",
            "wrong password",
            "incorrect password",
            "does not exist",
        ] {
            assert!(!lower.contains(hint), "the page hints {hint:?}: {body}");
        }
    }
    // A correct sign-in shows no error and continues to consent.
    let err = browser
        .authorize(&url, Some((USER, PASSWORD)), None)
        .await
        .expect_err("consent page");
    let Stop::Consent { body } = err else {
        panic!("expected consent, got {err:?}")
    };
    assert!(!body.contains(INVALID));
}

// Contract §3: the consent page names the application, lists the permissions, and has
// Allow and Deny buttons.
#[tokio::test]
async fn consent_page_names_client_and_lists_scopes() {
    let (server, client) = setup().await;
    let err = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "openid profile email", &[]),
            Some((USER, PASSWORD)),
            None,
        )
        .await
        .expect_err("consent page");
    let Stop::Consent { body } = err else {
        panic!("expected consent, got {err:?}")
    };
    let doc = Html::parse_document(&body);
    let headings: Vec<String> = select(&doc, "h1").iter().map(inner_text).collect();
    assert!(
        headings.iter().any(|h| h.contains("Photo Printer")),
        "{headings:?}"
    );
    let page_text = inner_text(&select(&doc, "body")[0]);
    for scope in ["openid", "profile", "email"] {
        assert!(
            page_text.contains(scope),
            "scope {scope} not listed: {page_text}"
        );
    }
    assert!(
        !page_text.contains("offline_access"),
        "an unrequested scope is listed"
    );
    let buttons: Vec<String> = select(&doc, "form[action='/consent'] button")
        .iter()
        .map(inner_text)
        .collect();
    assert!(buttons.contains(&"Allow".to_owned()), "{buttons:?}");
    assert!(buttons.contains(&"Deny".to_owned()), "{buttons:?}");
}

fn assert_success(server: &TestServer, cb: &Callback) {
    assert!(cb.get("code").is_some(), "no code: {}", cb.url);
    assert_eq!(cb.get("state"), Some("st-9"), "{}", cb.url);
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()), "{}", cb.url);
    assert!(
        cb.get("tenant").is_some_and(|t| !t.is_empty()),
        "no tenant: {}",
        cb.url
    );
}

// Contract §3: consent is remembered per user, client and scope set.
#[tokio::test]
async fn consent_is_remembered_per_user_client_and_scopes() {
    let (server, client) = setup().await;
    let other_client = server
        .client(ClientSpec {
            name: "Other app".into(),
            redirect_uris: vec![REDIRECT.into()],
            ..Default::default()
        })
        .await;
    server.user("carol", "carol-long-password-3").await;
    let browser = server.browser();
    let cb = browser
        .authorize(
            &authorize_url(&server, &client, "openid profile", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("first consent");
    assert_success(&server, &cb);

    // The same scopes again, and a subset: no consent page.
    for scope in ["openid profile", "profile openid", "openid"] {
        let cb = browser
            .authorize(&authorize_url(&server, &client, scope, &[]), None, None)
            .await
            .unwrap_or_else(|e| panic!("{scope}: consent asked again: {e:?}"));
        assert_success(&server, &cb);
    }
    // A wider scope asks again.
    let wider = browser
        .authorize(
            &authorize_url(&server, &client, "openid profile email", &[]),
            None,
            None,
        )
        .await;
    assert!(matches!(wider, Err(Stop::Consent { .. })), "{wider:?}");
    // Another client of the same user asks.
    let other = browser
        .authorize(
            &authorize_url(&server, &other_client, "openid", &[]),
            None,
            None,
        )
        .await;
    assert!(matches!(other, Err(Stop::Consent { .. })), "{other:?}");
    // Another user of the same client asks.
    let carol = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "openid", &[]),
            Some(("carol", "carol-long-password-3")),
            None,
        )
        .await;
    assert!(matches!(carol, Err(Stop::Consent { .. })), "{carol:?}");
    // A denial is not remembered as consent.
    let denied = server
        .browser()
        .authorize(
            &authorize_url(&server, &other_client, "openid", &[]),
            Some(("carol", "carol-long-password-3")),
            Some(ConsentChoice::Deny),
        )
        .await
        .expect("error callback");
    assert_eq!(denied.get("error"), Some("access_denied"), "{}", denied.url);
    assert_eq!(denied.get("state"), Some("st-9"));
    assert_eq!(denied.get("iss"), Some(server.issuer.as_str()));
}

// Contract §1/§3: a first-party client (skip_consent) never shows the consent page.
#[tokio::test]
async fn skip_consent_client_never_asks() {
    let (server, _) = setup().await;
    let first_party = server
        .client(ClientSpec {
            name: "First party".into(),
            redirect_uris: vec![REDIRECT.into()],
            skip_consent: true,
            ..Default::default()
        })
        .await;
    let browser = server.browser();
    for scope in ["openid", "openid profile email offline_access"] {
        let cb = browser
            .authorize(
                &authorize_url(&server, &first_party, scope, &[]),
                Some((USER, PASSWORD)),
                None,
            )
            .await
            .unwrap_or_else(|e| panic!("{scope}: {e:?}"));
        assert_success(&server, &cb);
    }
}

// OIDC Core §3.1.2.1: prompt=consent asks again even when consent was given.
#[tokio::test]
async fn prompt_consent_asks_again() {
    let (server, client) = setup().await;
    let browser = server.browser();
    browser
        .authorize(
            &authorize_url(&server, &client, "openid", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let again = browser
        .authorize(
            &authorize_url(&server, &client, "openid", &[("prompt", "consent")]),
            None,
            None,
        )
        .await;
    assert!(matches!(again, Err(Stop::Consent { .. })), "{again:?}");
    let cb = browser
        .authorize(
            &authorize_url(&server, &client, "openid", &[("prompt", "consent")]),
            None,
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_success(&server, &cb);
}

/// Signs in and consents for `scope` so that later requests go straight to the callback.
async fn signed_in(server: &TestServer, client: &TestClient) -> tessera_testkit::Browser {
    let browser = server.browser();
    browser
        .authorize(
            &authorize_url(server, client, "openid", &[]),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    browser
}

// OAuth 2.0 Form Post Response Mode §2: an HTML form that posts the response parameters
// to the redirect URI.
#[tokio::test]
async fn form_post_mode_posts_code_state_and_iss() {
    let (server, client) = setup().await;
    let browser = signed_in(&server, &client).await;
    let resp = browser
        .get(&authorize_url(
            &server,
            &client,
            "openid",
            &[("response_mode", "form_post")],
        ))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert!(resp.headers().get("location").is_none());
    let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/html"), "{ct}");
    let body = resp.text().await.unwrap();
    let forms = Form::all(&body);
    assert_eq!(forms.len(), 1, "{body}");
    let form = &forms[0];
    assert_eq!(form.method, "post");
    assert_eq!(form.action, REDIRECT);
    assert!(form.field("code").is_some_and(|c| !c.is_empty()), "{body}");
    assert_eq!(form.field("state"), Some("st-9"));
    assert_eq!(form.field("iss"), Some(server.issuer.as_str()));
    assert_eq!(form.field("tenant"), Some("default"));
    // Nothing of the response leaks into a URL.
    assert!(!body.contains(&format!("{REDIRECT}?")), "{body}");
    // The posted code is a real one.
    let (status, _, tokens) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", form.field("code").unwrap()),
                ("redirect_uri", REDIRECT),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
}

// OAuth 2.0 Multiple Response Type Encoding Practices §2.1: fragment mode puts every
// parameter in the fragment, none in the query.
#[tokio::test]
async fn fragment_mode_puts_params_in_the_fragment() {
    let (server, client) = setup().await;
    let browser = signed_in(&server, &client).await;
    let resp = browser
        .get(&authorize_url(
            &server,
            &client,
            "openid",
            &[("response_mode", "fragment")],
        ))
        .await;
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = resp.headers()["location"].to_str().unwrap().to_owned();
    let url = url::Url::parse(&location).unwrap();
    assert_eq!(
        format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap(),
            url.path()
        ),
        REDIRECT
    );
    assert_eq!(url.query(), None, "{location}");
    let params: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(url.fragment().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    assert!(
        params.get("code").is_some_and(|c| !c.is_empty()),
        "{location}"
    );
    assert_eq!(params.get("state").map(String::as_str), Some("st-9"));
    assert_eq!(params.get("iss"), Some(&server.issuer));
    assert_eq!(params.get("tenant").map(String::as_str), Some("default"));
}

fn assert_frame_protection(what: &str, resp: &reqwest::Response) {
    let h = resp.headers();
    assert_eq!(
        h.get("x-frame-options").and_then(|v| v.to_str().ok()),
        Some("DENY"),
        "{what}: X-Frame-Options"
    );
    let csp = h
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("{what}: no CSP"));
    assert!(
        csp.split(';').any(|d| d.trim() == "frame-ancestors 'none'"),
        "{what}: CSP {csp}"
    );
}

/// Follows redirects inside the server and returns the first other response.
async fn follow(
    browser: &tessera_testkit::Browser,
    server: &TestServer,
    url: &str,
) -> reqwest::Response {
    let mut resp = browser.get(url).await;
    while resp.status().is_redirection() {
        let loc = resp.headers()["location"].to_str().unwrap().to_owned();
        if !(loc.starts_with('/') || loc.starts_with(&server.issuer)) {
            break;
        }
        resp = browser.get(&loc).await;
    }
    resp
}

// RFC 6749 §10.13 (clickjacking), contract §3: every page forbids framing.
#[tokio::test]
async fn every_page_forbids_framing() {
    let (server, client) = setup().await;
    let browser = server.browser();
    let login = follow(
        &browser,
        &server,
        &authorize_url(&server, &client, "openid", &[]),
    )
    .await;
    assert_frame_protection("login page", &login);
    let body = login.text().await.unwrap();
    let mut form = Form::with_action(&body, "/login").unwrap();
    form.set("username", USER);
    form.set("password", "wrong password");
    let failed = browser.post("/login", &form.fields).await;
    assert_frame_protection("failed login page", &failed);
    form.set("password", PASSWORD);
    let signed_in = browser.post("/login", &form.fields).await;
    assert!(signed_in.status().is_redirection());
    let consent_url = signed_in.headers()["location"].to_str().unwrap().to_owned();
    assert!(consent_url.starts_with("/consent"), "{consent_url}");
    let consent = follow(&browser, &server, &consent_url).await;
    assert_eq!(consent.status(), StatusCode::OK);
    assert_frame_protection("consent page", &consent);
    let consent_body = consent.text().await.unwrap();
    assert!(Form::with_action(&consent_body, "/consent").is_some());

    for path in ["/login", "/logout", "/"] {
        let resp = browser.get(path).await;
        assert_eq!(resp.status(), StatusCode::OK, "{path}");
        assert_frame_protection(path, &resp);
    }
    let error_page = browser
        .get(&with_query(
            &server.url("/oauth2/authorize"),
            &[("client_id", "unknown"), ("response_type", "code")],
        ))
        .await;
    assert_eq!(error_page.status(), StatusCode::BAD_REQUEST);
    assert_frame_protection("error page", &error_page);
    let csrf_refused = browser
        .post("/consent", &[("decision".into(), "allow".into())])
        .await;
    assert_eq!(csrf_refused.status(), StatusCode::FORBIDDEN);
    assert_frame_protection("CSRF refusal page", &csrf_refused);

    let mut consent_form = Form::with_action(&consent_body, "/consent").unwrap();
    consent_form.set("decision", "allow");
    browser.post("/consent", &consent_form.fields).await;
    let form_post = browser
        .get(&authorize_url(
            &server,
            &client,
            "openid",
            &[("response_mode", "form_post")],
        ))
        .await;
    assert_eq!(form_post.status(), StatusCode::OK);
    assert_frame_protection("form_post page", &form_post);
}

fn set_cookie<'a>(resp: &'a reqwest::Response, name: &str) -> Option<&'a str> {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|c| c.starts_with(&format!("{name}=")))
}

fn attributes(cookie: &str) -> Vec<String> {
    cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

// RFC 6265 §4.1.2.5-6, RFC 9700 §4.4 (session integrity): the SSO cookie is HttpOnly and
// SameSite=Lax, and only Secure when the issuer is https (this test server is http).
#[tokio::test]
async fn session_cookie_is_httponly_and_samesite_lax() {
    let (server, _) = setup().await;
    let browser = server.browser();
    let page = browser.get("/login").await;
    let csrf = set_cookie(&page, "tessera_csrf")
        .expect("CSRF cookie")
        .to_owned();
    let body = page.text().await.unwrap();
    let mut form = Form::with_action(&body, "/login").unwrap();
    form.set("username", USER);
    form.set("password", PASSWORD);
    let resp = browser.post("/login", &form.fields).await;
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let session = set_cookie(&resp, "tessera_session").expect("session cookie");
    for (what, cookie) in [("session", session), ("csrf", csrf.as_str())] {
        let attrs = attributes(cookie);
        assert!(attrs.contains(&"httponly".to_owned()), "{what}: {cookie}");
        assert!(
            attrs.contains(&"samesite=lax".to_owned()),
            "{what}: {cookie}"
        );
        assert!(
            !attrs.contains(&"secure".to_owned()),
            "{what}: Secure on an http issuer: {cookie}"
        );
        assert!(attrs.contains(&"path=/".to_owned()), "{what}: {cookie}");
    }
    // The home page now knows who is signed in.
    let home = browser.get("/").await.text().await.unwrap();
    assert!(home.contains(USER), "{home}");
}

// OIDC RP-Initiated Logout §2 (in spirit) and contract §3: sign-out is a CSRF-protected POST
// that ends the SSO session.
#[tokio::test]
async fn logout_ends_the_session() {
    let (server, client) = setup().await;
    let browser = signed_in(&server, &client).await;
    let url = authorize_url(&server, &client, "openid", &[]);

    let page = browser.get("/logout").await;
    assert_eq!(page.status(), StatusCode::OK);
    let body = page.text().await.unwrap();
    let form = Form::with_action(&body, "/logout").expect("logout form");
    assert_eq!(form.method, "post");
    assert!(
        form.field("csrf_token").is_some_and(|t| !t.is_empty()),
        "{body}"
    );

    // Without the CSRF token nothing happens: still signed in.
    let refused = browser.post("/logout", &[]).await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    let still = browser.authorize(&url, None, None).await;
    assert!(
        still.is_ok(),
        "the session ended without CSRF token: {still:?}"
    );

    // A GET does not sign out either (it only shows the form).
    browser.get("/logout").await;
    assert!(browser.authorize(&url, None, None).await.is_ok());

    let resp = browser.post("/logout", &form.fields).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let cleared = set_cookie(&resp, "tessera_session").expect("session cookie cleared");
    assert!(
        cleared.starts_with("tessera_session=;")
            || attributes(cleared).contains(&"max-age=0".to_owned()),
        "{cleared}"
    );
    let after = browser.authorize(&url, None, None).await;
    assert!(matches!(after, Err(Stop::Login { .. })), "{after:?}");
}

// The server side of the session is gone too: replaying the old cookie does not work.
#[tokio::test]
async fn logged_out_session_cookie_cannot_be_replayed() {
    let (server, client) = setup().await;
    let browser = server.browser();
    let page = browser.get("/login").await.text().await.unwrap();
    let mut form = Form::with_action(&page, "/login").unwrap();
    form.set("username", USER);
    form.set("password", PASSWORD);
    let resp = browser.post("/login", &form.fields).await;
    let cookie = set_cookie(&resp, "tessera_session")
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let logout = browser.get("/logout").await.text().await.unwrap();
    let form = Form::with_action(&logout, "/logout").unwrap();
    assert_eq!(
        browser.post("/logout", &form.fields).await.status(),
        StatusCode::OK
    );

    let resp = server
        .http()
        .get(authorize_url(&server, &client, "openid", &[]))
        .header("cookie", cookie)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_redirection());
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.starts_with("/login"),
        "the old session still works: {location}"
    );
}

// RFC 9207 §2 and contract §4: every success callback carries iss and the user's tenant,
// in every response mode.
#[tokio::test]
async fn iss_and_tenant_in_every_success_callback() {
    let (server, client) = setup().await;
    server.user_in("acme", "dana", "dana-long-password-4").await;
    let browser = server.browser();
    for mode in ["query", "fragment", "form_post"] {
        let cb = browser
            .authorize(
                &authorize_url(&server, &client, "openid", &[("response_mode", mode)]),
                Some((USER, PASSWORD)),
                Some(ConsentChoice::Allow),
            )
            .await
            .unwrap_or_else(|e| panic!("{mode}: {e:?}"));
        assert_eq!(cb.mode, mode);
        assert_success(&server, &cb);
        assert_eq!(cb.get("tenant"), Some("default"), "{mode}");
    }
    // A user of another tenant gets that tenant.
    let cb = server
        .browser()
        .authorize(
            &authorize_url(&server, &client, "openid", &[("tenant", "acme")]),
            Some(("dana", "dana-long-password-4")),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("acme callback");
    assert_success(&server, &cb);
    assert_eq!(cb.get("tenant"), Some("acme"));
    // A tenant-restricted client puts its tenant in the callback without being asked.
    let acme_client = server
        .client(ClientSpec {
            name: "Acme portal".into(),
            redirect_uris: vec![REDIRECT.into()],
            tenant: Some("acme".into()),
            skip_consent: true,
            ..Default::default()
        })
        .await;
    let cb = server
        .browser()
        .authorize(
            &authorize_url(&server, &acme_client, "openid", &[]),
            Some(("dana", "dana-long-password-4")),
            None,
        )
        .await
        .expect("acme client callback");
    assert_success(&server, &cb);
    assert_eq!(cb.get("tenant"), Some("acme"));
}
