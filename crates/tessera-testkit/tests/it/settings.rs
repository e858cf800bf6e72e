//! Developer self-service pages over real HTTP: `/settings/api` (clients a user owns,
//! personal access tokens) and `/settings/apps` (apps the user authorized). Access
//! control between users, CSRF on every form, and the protocol working with clients made
//! on the page exactly as with CLI-made ones.

use reqwest::StatusCode;
use scraper::{Html, Selector};
use serde_json::Value;
use tessera_testkit::{
    with_query, Browser, Callback, ClientSpec, ConsentChoice, Pkce, TestClient, TestServer,
};

const PASSWORD: &str = "a-long-password-1";
const CALLBACK: &str = "https://app.example.com/cb";

async fn signed_in(server: &TestServer, username: &str) -> Browser {
    server.user(username, PASSWORD).await;
    let browser = server.browser();
    let resp = browser.sign_in(username, PASSWORD).await;
    assert_eq!(
        resp.status(),
        StatusCode::SEE_OTHER,
        "sign-in of {username}"
    );
    browser
}

async fn page(browser: &Browser, path: &str) -> (StatusCode, String) {
    let resp = browser.get(path).await;
    (resp.status(), resp.text().await.unwrap())
}

fn csrf_of(html: &str) -> String {
    let doc = Html::parse_document(html);
    let sel = Selector::parse("input[name=csrf_token]").unwrap();
    doc.select(&sel)
        .next()
        .and_then(|e| e.value().attr("value"))
        .expect("a CSRF token on the page")
        .to_owned()
}

fn value_of(html: &str, id: &str) -> Option<String> {
    let doc = Html::parse_document(html);
    let sel = Selector::parse(&format!("#{id}")).unwrap();
    doc.select(&sel)
        .next()
        .and_then(|e| e.value().attr("value"))
        .map(str::to_owned)
}

fn texts(html: &str, css: &str) -> Vec<String> {
    let doc = Html::parse_document(html);
    let sel = Selector::parse(css).unwrap();
    doc.select(&sel)
        .map(|e| {
            e.text()
                .collect::<String>()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn fields(csrf: &str, rest: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut out = vec![("csrf_token".to_owned(), csrf.to_owned())];
    out.extend(rest.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    out
}

/// Creates a client on the page; returns (client id, secret) as the page shows them.
async fn create_client(browser: &Browser, name: &str, callbacks: &str) -> (String, String) {
    let (_, html) = page(browser, "/settings/api").await;
    let form = fields(
        &csrf_of(&html),
        &[
            ("name", name),
            ("callback_urls", callbacks),
            ("client_type", "confidential"),
        ],
    );
    let resp = browser.post("/settings/api/clients", &form).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let id = value_of(&html, "new-client-id").expect("Client ID shown");
    let secret = value_of(&html, "new-client-secret").expect("Client secret shown");
    (id, secret)
}

fn authorize_url(server: &TestServer, client_id: &str, pkce: &Pkce, scope: &str) -> String {
    with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", client_id),
            ("redirect_uri", CALLBACK),
            ("scope", scope),
            ("state", "s-1"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    )
}

/// Runs the code flow in `browser` (already signed in) and exchanges the code.
async fn tokens(
    server: &TestServer,
    browser: &Browser,
    client_id: &str,
    secret: &str,
    scope: &str,
) -> Value {
    let pkce = Pkce::new();
    let cb: Callback = browser
        .authorize(
            &authorize_url(server, client_id, &pkce, scope),
            None,
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some("s-1"));
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", cb.code()),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &pkce.verifier),
            ],
            Some((client_id, secret)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "code exchange: {body}");
    body
}

async fn refresh(
    server: &TestServer,
    client_id: &str,
    secret: &str,
    token: &str,
) -> (StatusCode, Value) {
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", token)],
            Some((client_id, secret)),
        )
        .await;
    (status, body)
}

#[tokio::test]
async fn settings_pages_send_strangers_to_sign_in_and_back() {
    let server = TestServer::start().await;
    server.user("ann", PASSWORD).await;
    for path in ["/settings/api", "/settings/apps"] {
        let browser = server.browser();
        let resp = browser.get(path).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER, "{path}");
        let login = resp.headers()["location"].to_str().unwrap().to_owned();
        assert!(login.starts_with("/login?return_to="), "{login}");
        let html = browser.get(&login).await.text().await.unwrap();
        let mut form = tessera_testkit::Form::with_action(&html, "/login").unwrap();
        assert_eq!(
            form.field("return_to"),
            Some(path),
            "the login form remembers the page"
        );
        form.set("username", "ann");
        form.set("password", PASSWORD);
        let resp = browser.post("/login", &form.fields).await;
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        assert_eq!(
            resp.headers()["location"],
            path,
            "back to the page after sign-in"
        );
        let (status, html) = page(&browser, path).await;
        assert_eq!(status, StatusCode::OK);
        assert!(html.contains("Signed in as <strong>ann</strong>"));
    }
    // A form posted without a session changes nothing and asks for a sign-in.
    let resp = server
        .browser()
        .post(
            "/settings/api/clients",
            &fields("x", &[("name", "n"), ("callback_urls", CALLBACK)]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(server.store.list_clients().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_client_made_on_the_page_runs_the_code_flow_like_any_other() {
    let server = TestServer::start().await;
    let browser = signed_in(&server, "ann").await;
    let (status, html) = page(&browser, "/settings/api").await;
    assert_eq!(status, StatusCode::OK);
    for label in ["Name", "Callback URL"] {
        assert!(
            texts(&html, "label").iter().any(|l| l == label),
            "label {label:?} on the page"
        );
    }
    assert!(texts(&html, "button").iter().any(|b| b == "Create"));

    let (id, secret) = create_client(
        &browser,
        "Ann's Photo Book",
        "https://app.example.com/cb\nhttp://127.0.0.1:8765/cb",
    )
    .await;
    assert!(secret.starts_with("tcs_"));
    let stored = server.store.get_client(&id).await.unwrap().unwrap();
    let ann = server
        .store
        .find_user("default", "ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.owner.as_deref(), Some(ann.id.as_str()));
    assert_eq!(stored.tenant.as_deref(), Some("default"));
    assert_eq!(
        stored.redirect_uris,
        vec![CALLBACK, "http://127.0.0.1:8765/cb"]
    );
    assert!(!tessera_testkit::contains_bytes(
        &server.store_bytes(),
        secret.as_bytes()
    ));

    // The list shows it; a reload never shows the secret again.
    let (_, html) = page(&browser, "/settings/api").await;
    assert!(texts(&html, ".item h3").contains(&"Ann's Photo Book".to_owned()));
    assert!(texts(&html, "code.client-id").contains(&id));
    assert!(html.contains("http://127.0.0.1:8765/cb"));
    assert!(!html.contains(&secret), "the secret is shown once");

    // The consent page names the app; the code flow and refresh work with its secret.
    let pkce = Pkce::new();
    let stop = browser
        .authorize(
            &authorize_url(&server, &id, &pkce, "openid profile"),
            None,
            None,
        )
        .await
        .unwrap_err();
    match stop {
        tessera_testkit::Stop::Consent { body } => {
            assert_eq!(texts(&body, "h1"), vec!["Authorize Ann's Photo Book"]);
        }
        other => panic!("expected the consent page, got {other:?}"),
    }
    let body = tokens(&server, &browser, &id, &secret, "openid profile").await;
    let (status, user) = server
        .bearer_get("/userinfo", body["access_token"].as_str().unwrap(), &[])
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(user["preferred_username"], "ann");
    let (status, next) = refresh(
        &server,
        &id,
        &secret,
        body["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{next}");
}

#[tokio::test]
async fn bad_callback_urls_and_names_come_back_beside_their_fields() {
    let server = TestServer::start().await;
    let browser = signed_in(&server, "ann").await;
    let (_, html) = page(&browser, "/settings/api").await;
    let csrf = csrf_of(&html);
    let cases = [
        (
            "App",
            "http://app.example.com/cb",
            "callback-error",
            "https",
        ),
        (
            "App",
            "https://app.example.com/cb#top",
            "callback-error",
            "fragment",
        ),
        ("App", "/relative/cb", "callback-error", "absolute"),
        ("App", "", "callback-error", "at least one"),
        ("   ", CALLBACK, "name-error", "Enter a name"),
    ];
    for (name, urls, error_id, words) in cases {
        let resp = browser
            .post(
                "/settings/api/clients",
                &fields(&csrf, &[("name", name), ("callback_urls", urls)]),
            )
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{name:?} {urls:?}");
        let html = resp.text().await.unwrap();
        let message = texts(&html, &format!("#{error_id}"));
        assert!(
            message.first().is_some_and(|m| m.contains(words)),
            "{urls:?}: {message:?}"
        );
        assert!(html.contains("aria-invalid=\"true\""));
        // What was typed is kept for correction.
        if !urls.is_empty() {
            assert!(html.contains(urls), "the typed URL is kept");
        }
    }
    assert!(
        server.store.list_clients().await.unwrap().is_empty(),
        "nothing was created"
    );

    // A name the user already uses is refused beside the name.
    create_client(&browser, "Twice", CALLBACK).await;
    let resp = browser
        .post(
            "/settings/api/clients",
            &fields(&csrf, &[("name", "Twice"), ("callback_urls", CALLBACK)]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.unwrap();
    assert!(texts(&html, "#name-error")[0].contains("already have"));
}

#[tokio::test]
async fn user_b_cannot_see_edit_rotate_or_delete_user_a_clients() {
    let server = TestServer::start().await;
    let alice = signed_in(&server, "alice").await;
    let (id, secret) = create_client(&alice, "Alice App", CALLBACK).await;
    let before = server.store.get_client(&id).await.unwrap().unwrap();

    let bob = signed_in(&server, "bob").await;
    let (_, html) = page(&bob, "/settings/api").await;
    assert!(
        !html.contains(&id) && !html.contains("Alice App"),
        "B's list is B's"
    );
    let csrf = csrf_of(&html);

    let (status, html) = page(&bob, &format!("/settings/api/clients/{id}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(!html.contains("Alice App"));
    let attempts = [
        (
            format!("/settings/api/clients/{id}"),
            fields(
                &csrf,
                &[
                    ("name", "Stolen"),
                    ("callback_urls", "https://evil.example/cb"),
                ],
            ),
        ),
        (
            format!("/settings/api/clients/{id}/rotate-secret"),
            fields(&csrf, &[]),
        ),
        (
            format!("/settings/api/clients/{id}/delete"),
            fields(&csrf, &[]),
        ),
    ];
    for (path, form) in &attempts {
        let resp = bob.post(path, form).await;
        assert_eq!(resp.status(), StatusCode::NOT_FOUND, "{path}");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("tcs_"), "no secret leaks");
    }
    // Guessing an id that does not exist looks exactly the same.
    let (status, _) = page(&bob, "/settings/api/clients/AAAAAAAAAAAAAAAAAAAAAA").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let after = server.store.get_client(&id).await.unwrap().unwrap();
    assert_eq!(after.name, before.name);
    assert_eq!(after.redirect_uris, before.redirect_uris);
    assert_eq!(
        after.secret_hash, before.secret_hash,
        "the secret was not rotated"
    );
    // Alice's secret still authenticates her client.
    let (status, _, _) = server
        .post_form(
            "/oauth2/introspect",
            &[("token", "tat_x")],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn every_settings_form_refuses_a_missing_or_wrong_csrf_token() {
    let server = TestServer::start().await;
    let browser = signed_in(&server, "ann").await;
    let (id, _) = create_client(&browser, "Mine", CALLBACK).await;
    let (_, html) = page(&browser, "/settings/api").await;
    let good = csrf_of(&html);
    // A token of another browser (another CSRF cookie) is wrong here.
    let other = signed_in(&server, "eve").await;
    let (_, other_html) = page(&other, "/settings/api").await;
    let foreign = csrf_of(&other_html);
    assert_ne!(good, foreign);

    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/settings/api/clients".into(),
            vec![("name", "New"), ("callback_urls", CALLBACK)],
        ),
        (
            format!("/settings/api/clients/{id}"),
            vec![("name", "Renamed"), ("callback_urls", CALLBACK)],
        ),
        (format!("/settings/api/clients/{id}/rotate-secret"), vec![]),
        (format!("/settings/api/clients/{id}/delete"), vec![]),
        (
            "/settings/api/tokens".into(),
            vec![
                ("token_name", "t"),
                ("scope_openid", "on"),
                ("expires_in_days", "30"),
            ],
        ),
        ("/settings/api/tokens/whatever/revoke".into(), vec![]),
        (format!("/settings/apps/{id}/revoke"), vec![]),
    ];
    let before = server.store.get_client(&id).await.unwrap().unwrap();
    for (path, rest) in &posts {
        let missing: Vec<(String, String)> = rest
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        for (what, form) in [
            ("missing", missing),
            ("wrong", fields("not-the-token", rest)),
            ("foreign", fields(&foreign, rest)),
        ] {
            let resp = browser.post(path, &form).await;
            assert_eq!(
                resp.status(),
                StatusCode::FORBIDDEN,
                "{what} CSRF token on {path}"
            );
            assert!(resp.text().await.unwrap().contains("CSRF"));
        }
    }
    let after = server.store.get_client(&id).await.unwrap().unwrap();
    assert_eq!(after.name, before.name);
    assert_eq!(after.secret_hash, before.secret_hash);
    assert_eq!(server.store.list_clients().await.unwrap().len(), 1);
    let ann = server
        .store
        .find_user("default", "ann")
        .await
        .unwrap()
        .unwrap();
    assert!(server
        .store
        .list_personal_tokens(&ann.id)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn edit_rotate_and_delete_a_client() {
    let server = TestServer::start().await;
    let browser = signed_in(&server, "ann").await;
    let (id, secret) = create_client(&browser, "Before", CALLBACK).await;
    let body = tokens(&server, &browser, &id, &secret, "openid offline_access").await;
    let access = body["access_token"].as_str().unwrap().to_owned();

    // Edit: the form shows the current values; saving replaces name and callbacks.
    let (status, html) = page(&browser, &format!("/settings/api/clients/{id}")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(value_of(&html, "name").as_deref(), Some("Before"));
    let csrf = csrf_of(&html);
    let resp = browser
        .post(
            &format!("/settings/api/clients/{id}"),
            &fields(
                &csrf,
                &[
                    ("name", "After"),
                    ("callback_urls", "http://evil.example/cb"),
                ],
            ),
        )
        .await;
    assert_eq!(
        resp.status(),
        StatusCode::BAD_REQUEST,
        "edits are validated too"
    );
    let resp = browser
        .post(
            &format!("/settings/api/clients/{id}"),
            &fields(
                &csrf,
                &[
                    ("name", "After"),
                    (
                        "callback_urls",
                        "https://new.example/cb\r\nhttps://app.example.com/cb",
                    ),
                ],
            ),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let stored = server.store.get_client(&id).await.unwrap().unwrap();
    assert_eq!(stored.name, "After");
    assert_eq!(
        stored.redirect_uris,
        vec!["https://new.example/cb", CALLBACK]
    );
    let (_, html) = page(&browser, "/settings/api?done=updated").await;
    assert!(html.contains("Application saved."));

    // Rotate: the page shows a new secret; the old one stops working at once.
    let resp = browser
        .post(
            &format!("/settings/api/clients/{id}/rotate-secret"),
            &fields(&csrf, &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let new_secret = value_of(&html, "new-client-secret").unwrap();
    assert_ne!(new_secret, secret);
    let (status, _, _) = server
        .post_form(
            "/oauth2/introspect",
            &[("token", &access)],
            Some((&id, &secret)),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the old secret is refused"
    );
    let (status, _, active) = server
        .post_form(
            "/oauth2/introspect",
            &[("token", &access)],
            Some((&id, &new_secret)),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(active["active"], true);

    // Delete: the client and every token it held are gone.
    let resp = browser
        .post(
            &format!("/settings/api/clients/{id}/delete"),
            &fields(&csrf, &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert!(server.store.get_client(&id).await.unwrap().is_none());
    let (status, _) = server.bearer_get("/userinfo", &access, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    let (_, html) = page(&browser, "/settings/api?done=deleted").await;
    assert!(!html.contains(&id));
}

#[tokio::test]
async fn revoking_an_app_revokes_its_tokens_for_that_user_only() {
    let server = TestServer::start().await;
    let client: TestClient = server
        .client(ClientSpec {
            name: "Photo Printer".into(),
            redirect_uris: vec![CALLBACK.into()],
            ..Default::default()
        })
        .await;
    let secret = client.secret.clone().unwrap();
    let ann = signed_in(&server, "ann").await;
    let ben = signed_in(&server, "ben").await;
    let ann_tokens = tokens(&server, &ann, &client.id, &secret, "openid profile").await;
    let ben_tokens = tokens(&server, &ben, &client.id, &secret, "openid profile").await;

    let (status, html) = page(&ann, "/settings/apps").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(texts(&html, ".item h2"), vec!["Photo Printer"]);
    assert!(texts(&html, ".permissions .scope").contains(&"profile".to_owned()));
    assert!(texts(&html, "button").contains(&"Revoke".to_owned()));
    let csrf = csrf_of(&html);
    let resp = ann
        .post(
            &format!("/settings/apps/{}/revoke", client.id),
            &fields(&csrf, &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let (_, html) = page(&ann, "/settings/apps?done=app_revoked").await;
    assert!(texts(&html, ".item h2").is_empty());
    assert!(html.contains("Access revoked."));

    // Ann's refresh token stops working at once; so does her access token.
    let (status, body) = refresh(
        &server,
        &client.id,
        &secret,
        ann_tokens["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(body["error"], "invalid_grant");
    let (status, _) = server
        .bearer_get(
            "/userinfo",
            ann_tokens["access_token"].as_str().unwrap(),
            &[],
        )
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    // Ben's tokens for the same app live on.
    let (status, body) = refresh(
        &server,
        &client.id,
        &secret,
        ben_tokens["refresh_token"].as_str().unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // The app must ask Ann again.
    let pkce = Pkce::new();
    let stop = ann
        .authorize(
            &authorize_url(&server, &client.id, &pkce, "openid"),
            None,
            None,
        )
        .await;
    assert!(matches!(stop, Err(tessera_testkit::Stop::Consent { .. })));

    // Revoking an app Ann never authorized (or twice) is a clean 404.
    let resp = ann
        .post(
            &format!("/settings/apps/{}/revoke", client.id),
            &fields(&csrf, &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn personal_access_tokens_work_like_access_tokens_until_revoked() {
    let server = TestServer::start().await;
    let introspector = server
        .client(ClientSpec {
            name: "Resource server".into(),
            grant_types: Some("client_credentials".into()),
            ..Default::default()
        })
        .await;
    let browser = signed_in(&server, "ann").await;
    let (_, html) = page(&browser, "/settings/api").await;
    let csrf = csrf_of(&html);

    // Bad input comes back beside the fields.
    let resp = browser
        .post(
            "/settings/api/tokens",
            &fields(
                &csrf,
                &[
                    ("token_name", ""),
                    ("other_scopes", "offline_access"),
                    ("expires_in_days", "9999"),
                ],
            ),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    let html = resp.text().await.unwrap();
    assert!(!texts(&html, "#token-name-error").is_empty());
    assert!(texts(&html, "#scopes-error")[0].contains("offline_access"));
    assert!(!texts(&html, "#expiry-error").is_empty());

    let resp = browser
        .post(
            "/settings/api/tokens",
            &fields(
                &csrf,
                &[
                    ("token_name", "backup script"),
                    ("scope_openid", "on"),
                    ("scope_profile", "on"),
                    ("other_scopes", "photos:read"),
                    ("expires_in_days", "30"),
                ],
            ),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let token = value_of(&html, "new-token").expect("the token is shown once");
    assert!(token.starts_with("tpat_"));
    assert!(!tessera_testkit::contains_bytes(
        &server.store_bytes(),
        token.as_bytes()
    ));
    let (_, html) = page(&browser, "/settings/api").await;
    assert!(!html.contains(&token), "shown once only");
    assert_eq!(texts(&html, "#token-1"), vec!["backup script"]);
    assert!(html.contains("openid photos:read profile"));
    assert!(html.contains("Never"));

    let (status, claims) = server.bearer_get("/userinfo", &token, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims["preferred_username"], "ann");
    let info = server.introspect(&introspector, &token).await;
    assert_eq!(info["active"], true);
    assert_eq!(info["scope"], "openid photos:read profile");
    let ann = server
        .store
        .find_user("default", "ann")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info["sub"], ann.id.as_str());
    let exp = info["exp"].as_i64().unwrap();
    assert_eq!(exp - server.now(), 30 * 24 * 3600);

    // Last use is recorded (off the request path, so allow it a moment).
    let mut used = None;
    for _ in 0..50 {
        used = server.store.list_personal_tokens(&ann.id).await.unwrap()[0].last_used_at;
        if used.is_some() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(used, Some(server.now()));
    let (_, html) = page(&browser, "/settings/api").await;
    assert!(!html.contains("Never"));

    // Another user cannot revoke it; its owner can, and it stops working at once.
    let id = server.store.list_personal_tokens(&ann.id).await.unwrap()[0]
        .id
        .clone();
    let eve = signed_in(&server, "eve").await;
    let (_, eve_html) = page(&eve, "/settings/api").await;
    let resp = eve
        .post(
            &format!("/settings/api/tokens/{id}/revoke"),
            &fields(&csrf_of(&eve_html), &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        server.bearer_get("/userinfo", &token, &[]).await.0,
        StatusCode::OK
    );
    let resp = browser
        .post(
            &format!("/settings/api/tokens/{id}/revoke"),
            &fields(&csrf, &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        server.bearer_get("/userinfo", &token, &[]).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        server.introspect(&introspector, &token).await["active"],
        false
    );
    let (_, html) = page(&browser, "/settings/api?done=token_revoked").await;
    assert!(html.contains("Personal access token revoked."));
    assert!(texts(&html, "#token-1").is_empty());
}

#[tokio::test]
async fn user_clients_can_be_switched_off() {
    let server = TestServer::start_with(|s| s.allow_user_clients = false).await;
    let browser = signed_in(&server, "ann").await;
    let (status, html) = page(&browser, "/settings/api").await;
    assert_eq!(status, StatusCode::OK);
    assert!(tessera_testkit::Form::with_action(&html, "/settings/api/clients").is_none());
    assert!(html.contains("switched off"));
    // Personal access tokens stay available.
    assert!(tessera_testkit::Form::with_action(&html, "/settings/api/tokens").is_some());
    let resp = browser
        .post(
            "/settings/api/clients",
            &fields(
                &csrf_of(&html),
                &[("name", "Sneaky"), ("callback_urls", CALLBACK)],
            ),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    assert!(server.store.list_clients().await.unwrap().is_empty());
}

#[tokio::test]
async fn settings_pages_load_only_their_own_assets_and_cannot_be_framed() {
    let server = TestServer::start().await;
    let browser = signed_in(&server, "ann").await;
    create_client(&browser, "Framed?", CALLBACK).await;
    for path in ["/settings/api", "/settings/apps"] {
        let resp = browser.get(path).await;
        let csp = resp.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe-inline"));
        assert_eq!(resp.headers()["x-frame-options"], "DENY");
        let html = resp.text().await.unwrap();
        let doc = Html::parse_document(&html);
        for script in doc.select(&Selector::parse("script").unwrap()) {
            let src = script.value().attr("src").expect("no inline script");
            assert!(src.starts_with("/static/"), "{src}");
            assert!(script.text().collect::<String>().trim().is_empty());
        }
        assert!(
            !html.contains(" style=") && !html.contains("<style"),
            "no inline styles"
        );
        for link in doc.select(&Selector::parse("link[rel=stylesheet]").unwrap()) {
            assert!(link.value().attr("href").unwrap().starts_with("/static/"));
        }
        // Every input has a label.
        for input in doc.select(
            &Selector::parse(
                "input:not([type=hidden]):not([type=radio]):not([type=checkbox]), textarea, select",
            )
            .unwrap(),
        ) {
            let id = input.value().attr("id").expect("labelled inputs have ids");
            assert!(html.contains(&format!("for=\"{id}\"")), "label for {id}");
        }
    }
    let js = browser.get("/static/settings.js").await;
    assert_eq!(js.status(), StatusCode::OK);
    assert!(js.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/javascript"));
}

#[tokio::test]
async fn a_public_client_gets_no_secret_and_proves_itself_with_pkce() {
    let server = TestServer::start().await;
    let browser = signed_in(&server, "ann").await;
    let (_, html) = page(&browser, "/settings/api").await;
    let csrf = csrf_of(&html);
    let resp = browser
        .post(
            "/settings/api/clients",
            &fields(
                &csrf,
                &[
                    ("name", "Ann's SPA"),
                    ("callback_urls", CALLBACK),
                    ("client_type", "public"),
                ],
            ),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    let id = value_of(&html, "new-client-id").expect("Client ID shown");
    assert!(value_of(&html, "new-client-secret").is_none(), "no secret");
    let stored = server.store.get_client(&id).await.unwrap().unwrap();
    assert!(stored.public && stored.require_pkce && stored.secret_hash.is_none());

    let (_, html) = page(&browser, "/settings/api").await;
    assert!(html.contains("Public (PKCE)"));
    assert!(tessera_testkit::Form::with_action(
        &html,
        &format!("/settings/api/clients/{id}/rotate-secret")
    )
    .is_none());
    let resp = browser
        .post(
            &format!("/settings/api/clients/{id}/rotate-secret"),
            &fields(&csrf, &[]),
        )
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    // The code flow with client_id and PKCE only.
    let pkce = Pkce::new();
    let cb = browser
        .authorize(
            &authorize_url(&server, &id, &pkce, "openid"),
            None,
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", cb.code()),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &pkce.verifier),
                ("client_id", &id),
            ],
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
