#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The settings pages in a real headless Chromium, driven over WebDriver (chromedriver +
//! fantoccini): sign in, register a client, read its ID and secret from the page, run the
//! authorization-code flow with it through the browser, revoke it on `/settings/apps` and
//! see its refresh token refused, create and revoke a personal access token.
//!
//! Screenshots of every page at desktop (1280 px) and phone (390 px) width are written
//! to `target/screenshots/`. This test fails, never skips, when Chromium or chromedriver
//! is missing: `scripts/test.sh` installs them.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use reqwest::StatusCode;
use serde_json::{json, Value};
use tessera_testkit::{with_query, Pkce, TestServer};

const PASSWORD: &str = "a-long-password-1";

/// chromedriver on a free port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    async fn start() -> Driver {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // Its own process group, so that the Chromium it starts is stopped with it.
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .process_group(0)
            // Never the test runner's stdin: a browser reading it would steal the input
            // of whatever shell runs the tests.
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver must be installed (apt-get install chromium chromium-driver)");
        // Owned by the guard at once: every path below stops it again on drop.
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return driver;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("chromedriver did not start on port {port}");
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg("--")
            .arg(format!("-{}", self.child.id()))
            .stdin(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn chromium(driver: &Driver) -> Client {
    let binary = ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .find_map(|name| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|dir| dir.join(name))
                    .find(|p| p.is_file())
            })
        })
        .expect("Chromium must be installed (apt-get install chromium chromium-driver)");
    let caps = json!({
        "browserName": "chrome",
        "goog:chromeOptions": {
            "binary": binary,
            "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
                     "--disable-gpu", "--window-size=1280,1000", "--hide-scrollbars"]
        }
    });
    let Value::Object(caps) = caps else {
        unreachable!()
    };
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

/// A tiny HTTP listener standing in for the application's callback: it answers every
/// request with a short page, and the test reads the callback URL from the browser.
/// (A plain thread: the workspace's tokio has no `io-util`.)
fn callback_listener() -> String {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for mut socket in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = socket.read(&mut buf);
            let body = "<!doctype html><title>Callback</title><p>Callback received.</p>";
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = socket.write_all(resp.as_bytes());
        }
    });
    format!("http://127.0.0.1:{}/callback", addr.port())
}

fn screenshot_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target"));
    let dir = target.join("screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Screenshots the current page at desktop and phone width, and checks that nothing
/// overflows horizontally at phone width (the page is usable without sideways scrolling).
async fn shoot(browser: &Client, name: &str) {
    let dir = screenshot_dir();
    for (label, width, height) in [("desktop", 1280, 1400), ("phone", 390, 1800)] {
        browser.set_window_size(width, height).await.unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        let png = browser.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
        std::fs::write(dir.join(format!("{name}-{label}.png")), png).unwrap();
        let overflow = browser
            .execute(
                "return document.documentElement.scrollWidth - document.documentElement.clientWidth;",
                vec![],
            )
            .await
            .unwrap();
        assert!(
            overflow.as_i64().unwrap_or(0) <= 0,
            "{name} overflows horizontally at {width}px by {overflow}px"
        );
    }
    browser.set_window_size(1280, 1000).await.unwrap();
}

async fn fill(browser: &Client, css: &str, text: &str) {
    let field = browser.find(Locator::Css(css)).await.unwrap();
    field.clear().await.unwrap();
    field.send_keys(text).await.unwrap();
}

async fn click_button(browser: &Client, form_action: &str, text: &str) {
    let xpath = format!("//form[@action='{form_action}']//button[normalize-space(.)='{text}']");
    browser
        .find(Locator::XPath(&xpath))
        .await
        .unwrap_or_else(|e| panic!("button {text:?} in form {form_action}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn value(browser: &Client, css: &str) -> String {
    browser
        .find(Locator::Css(css))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap_or_default()
}

/// The page's text; retried while a navigation replaces the document under us.
async fn body_text(browser: &Client) -> String {
    let mut last = None;
    for _ in 0..50 {
        let text = match browser.find(Locator::Css("body")).await {
            Ok(body) => body.text().await,
            Err(e) => Err(e),
        };
        match text {
            Ok(t) => return t,
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no page text: {last:?}")
}

/// Waits until the page shows `needle` (after a click that navigates).
async fn wait_for_text(browser: &Client, needle: &str) -> String {
    let mut text = String::new();
    for _ in 0..50 {
        text = body_text(browser).await;
        if text.contains(needle) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the page never showed {needle:?}; it shows:\n{text}")
}

async fn path_of(browser: &Client) -> String {
    browser.current_url().await.unwrap().path().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_pages_in_headless_chromium() {
    let server = TestServer::start().await;
    server.user("ann", PASSWORD).await;
    let callback = callback_listener();
    let driver = Driver::start().await;
    let browser = chromium(&driver).await;
    let result = run(&server, &browser, &callback).await;
    let _ = browser.close().await;
    result
}

async fn run(server: &TestServer, browser: &Client, callback: &str) {
    // A settings page without a session sends the browser to sign in, then back.
    browser.goto(&server.url("/settings/api")).await.unwrap();
    assert_eq!(path_of(browser).await, "/login");
    shoot(browser, "login").await;
    fill(browser, "#username", "ann").await;
    fill(browser, "#password", PASSWORD).await;
    click_button(browser, "/login", "Sign in").await;
    wait_for_text(browser, "Your applications").await;
    assert_eq!(path_of(browser).await, "/settings/api");
    shoot(browser, "settings-api-empty").await;

    // Bad input re-renders the form with the message beside the field.
    fill(browser, "#name", "Ann's Photo Book").await;
    fill(browser, "#callback_urls", "http://photos.example.com/cb").await;
    click_button(browser, "/settings/api/clients", "Create").await;
    wait_for_text(browser, "use https").await;
    let error = browser.find(Locator::Css("#callback-error")).await.unwrap();
    assert!(error.text().await.unwrap().contains("https"));
    shoot(browser, "settings-api-invalid").await;

    // Register a client; the page shows its ID and its secret, once.
    fill(browser, "#callback_urls", callback).await;
    click_button(browser, "/settings/api/clients", "Create").await;
    wait_for_text(browser, "is registered").await;
    let client_id = value(browser, "#new-client-id").await;
    let secret = value(browser, "#new-client-secret").await;
    assert_eq!(client_id.len(), 22, "client id {client_id:?}");
    assert!(secret.starts_with("tcs_"), "secret {secret:?}");
    // The copy button is ours (no inline script under the CSP) and reports what it did.
    let copy = browser
        .find(Locator::Css("button[data-copy=new-client-secret]"))
        .await
        .unwrap();
    assert!(
        copy.is_displayed().await.unwrap(),
        "settings.js revealed the copy button"
    );
    copy.click().await.unwrap();
    let status = browser.find(Locator::Css(".copy-status")).await.unwrap();
    let mut said = String::new();
    for _ in 0..20 {
        said = status.text().await.unwrap();
        if !said.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!said.is_empty(), "the copy button announces its result");
    shoot(browser, "settings-api-created").await;

    // The edit page.
    browser
        .goto(&server.url(&format!("/settings/api/clients/{client_id}")))
        .await
        .unwrap();
    assert_eq!(value(browser, "#name").await, "Ann's Photo Book");
    shoot(browser, "settings-api-edit").await;

    // The authorization-code flow with that client: sign in again (prompt=login), the
    // consent page names the app, Allow, and the browser lands on the callback.
    let pkce = Pkce::new();
    let authorize = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client_id),
            ("redirect_uri", callback),
            ("scope", "openid profile offline_access"),
            ("state", "browser-state"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
            ("prompt", "login"),
        ],
    );
    browser.goto(&authorize).await.unwrap();
    assert_eq!(path_of(browser).await, "/login");
    assert!(body_text(browser).await.contains("Ann's Photo Book"));
    fill(browser, "#password", PASSWORD).await;
    fill(browser, "#username", "ann").await;
    click_button(browser, "/login", "Sign in").await;
    let consent = wait_for_text(browser, "Allow").await;
    assert_eq!(path_of(browser).await, "/consent");
    assert!(consent.contains("Authorize Ann's Photo Book"), "{consent}");
    shoot(browser, "consent").await;
    click_button(browser, "/consent", "Allow").await;
    wait_for_text(browser, "Callback received.").await;
    let landed = browser.current_url().await.unwrap();
    assert!(landed.as_str().starts_with(callback), "{landed}");
    let params: std::collections::HashMap<String, String> =
        landed.query_pairs().into_owned().collect();
    assert_eq!(params["state"], "browser-state");
    let code = params["code"].clone();

    let (status, _, tokens) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", callback),
                ("code_verifier", &pkce.verifier),
            ],
            Some((&client_id, &secret)),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "code exchange: {tokens}");
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();

    // /settings/apps lists the app; Revoke stops its refresh token at once.
    browser.goto(&server.url("/settings/apps")).await.unwrap();
    let apps = body_text(browser).await;
    assert!(
        apps.contains("Ann's Photo Book") && apps.contains("offline_access"),
        "{apps}"
    );
    shoot(browser, "settings-apps").await;
    click_button(
        browser,
        &format!("/settings/apps/{client_id}/revoke"),
        "Revoke",
    )
    .await;
    wait_for_text(browser, "Access revoked.").await;
    shoot(browser, "settings-apps-revoked").await;
    let (status, _, refused) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
            Some((&client_id, &secret)),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(refused["error"], "invalid_grant");

    // A personal access token: created, used at /userinfo, revoked.
    browser.goto(&server.url("/settings/api")).await.unwrap();
    fill(browser, "#token_name", "backup script").await;
    browser
        .find(Locator::Css("#expires_in_days"))
        .await
        .unwrap()
        .select_by_value("90")
        .await
        .unwrap();
    click_button(browser, "/settings/api/tokens", "Create token").await;
    wait_for_text(browser, "created").await;
    let token = value(browser, "#new-token").await;
    assert!(token.starts_with("tpat_"), "token {token:?}");
    shoot(browser, "settings-api-token-created").await;
    let (status, claims) = server.bearer_get("/userinfo", &token, &[]).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(claims["preferred_username"], "ann");
    browser.goto(&server.url("/settings/api")).await.unwrap();
    let listed = body_text(browser).await;
    assert!(listed.contains("backup script") && listed.contains("openid profile"));
    shoot(browser, "settings-api-list").await;
    let revoke = browser
        .find(Locator::XPath(
            "//form[contains(@action, '/settings/api/tokens/')]//button[normalize-space(.)='Revoke']",
        ))
        .await
        .unwrap();
    revoke.click().await.unwrap();
    wait_for_text(browser, "Personal access token revoked.").await;
    let (status, _) = server.bearer_get("/userinfo", &token, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    // Delete the client through its disclosure button.
    browser
        .find(Locator::XPath(
            "//details[contains(@class,'danger')]/summary",
        ))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    click_button(
        browser,
        &format!("/settings/api/clients/{client_id}/delete"),
        "Delete",
    )
    .await;
    wait_for_text(browser, "Application deleted.").await;
    assert!(server.store.get_client(&client_id).await.unwrap().is_none());
}
