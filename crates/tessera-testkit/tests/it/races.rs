//! Races and retries over real HTTP: many parallel presentations of one code or one refresh
//! token give exactly one success and never a 5xx; the opt-in refresh retry window returns
//! the same successor to a client that lost its response, and only then.

use std::collections::HashSet;

use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{ClientSpec, ConsentChoice, TestClient, TestServer};

const USER: &str = "racer";
const PASSWORD: &str = "racer-long-password-1";
const PARALLEL: usize = 16;

async fn setup(window: i64) -> (TestServer, TestClient) {
    let server = TestServer::start_with(|s| s.refresh_retry_window = window).await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Race app".into(),
            redirect_uris: vec!["https://app.example.com/cb".into()],
            ..Default::default()
        })
        .await;
    (server, client)
}

async fn code(server: &TestServer, client: &TestClient) -> String {
    let url = tessera_testkit::with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", "openid offline_access"),
            ("state", "s"),
        ],
    );
    server
        .browser()
        .authorize(&url, Some((USER, PASSWORD)), Some(ConsentChoice::Allow))
        .await
        .expect("callback")
        .code()
        .to_owned()
}

async fn token(server: &TestServer, client: &TestClient, form: &[(&str, &str)]) -> (u16, Value) {
    let (status, _, body) = server
        .post_form("/oauth2/token", form, client.basic())
        .await;
    (status.as_u16(), body)
}

async fn refresh(server: &TestServer, client: &TestClient, rt: &str) -> (u16, Value) {
    token(
        server,
        client,
        &[("grant_type", "refresh_token"), ("refresh_token", rt)],
    )
    .await
}

async fn first_tokens(server: &TestServer, client: &TestClient) -> Value {
    let code = code(server, client).await;
    let (status, body) = token(
        server,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", &client.redirect_uri),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    body
}

fn text(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("no {k} in {v}"))
        .to_owned()
}

async fn active(server: &TestServer, client: &TestClient, token: &str) -> bool {
    server.introspect(client, token).await["active"] == true
}

/// Runs `PARALLEL` copies of `form` at once against the token endpoint.
async fn storm(
    server: &TestServer,
    client: &TestClient,
    form: Vec<(String, String)>,
) -> Vec<(u16, Value)> {
    let mut tasks = Vec::new();
    for _ in 0..PARALLEL {
        let http = server.http();
        let url = server.url("/oauth2/token");
        let (id, secret) = client
            .basic()
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        let form = form.clone();
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .basic_auth(id, Some(secret))
                .form(&form)
                .send()
                .await
                .expect("send");
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap_or(Value::Null))
        }));
    }
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("task"));
    }
    out
}

fn assert_no_5xx(results: &[(u16, Value)]) {
    for (status, body) in results {
        assert!(*status < 500, "a racing request got {status}: {body}");
        assert!(
            !body.to_string().contains("locked"),
            "a racing request saw a lock: {body}"
        );
    }
}

#[tokio::test]
async fn parallel_redemptions_of_one_code_have_exactly_one_winner() {
    let (server, client) = setup(0).await;
    let code = code(&server, &client).await;
    let form = vec![
        ("grant_type".to_owned(), "authorization_code".to_owned()),
        ("code".to_owned(), code),
        ("redirect_uri".to_owned(), client.redirect_uri.clone()),
    ];
    let results = storm(&server, &client, form).await;
    assert_no_5xx(&results);
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(
        winners.len(),
        1,
        "exactly one redemption succeeds: {results:?}"
    );
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
}

#[tokio::test]
async fn parallel_refreshes_of_one_token_never_leave_two_live_children() {
    let (server, client) = setup(0).await;
    let first = first_tokens(&server, &client).await;
    let form = vec![
        ("grant_type".to_owned(), "refresh_token".to_owned()),
        ("refresh_token".to_owned(), text(&first, "refresh_token")),
    ];
    let results = storm(&server, &client, form).await;
    assert_no_5xx(&results);
    let winners: Vec<_> = results.iter().filter(|(s, _)| *s == 200).collect();
    assert_eq!(winners.len(), 1, "exactly one new token pair: {results:?}");
    for (status, body) in results.iter().filter(|(s, _)| *s != 200) {
        assert_eq!(
            (*status, body["error"].as_str()),
            (400, Some("invalid_grant"))
        );
    }
    // The losers presented a rotated token: the strict rule revokes the family, so no
    // child is left alive at all — in particular never two.
    let child = text(&winners[0].1, "refresh_token");
    assert!(
        !active(&server, &client, &child).await,
        "family revoked after reuse"
    );
}

#[tokio::test]
async fn with_the_window_off_a_lost_response_cannot_be_retried() {
    let (server, client) = setup(0).await;
    let first = first_tokens(&server, &client).await;
    let r0 = text(&first, "refresh_token");
    let (status, second) = refresh(&server, &client, &r0).await;
    assert_eq!(status, 200, "{second}");
    let (status, body) = refresh(&server, &client, &r0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(!active(&server, &client, &text(&second, "refresh_token")).await);
}

#[tokio::test]
async fn a_retry_inside_the_window_returns_the_same_successor() {
    let (server, client) = setup(30).await;
    let first = first_tokens(&server, &client).await;
    let r0 = text(&first, "refresh_token");
    let (status, lost) = refresh(&server, &client, &r0).await;
    assert_eq!(status, 200, "{lost}");
    let r1 = text(&lost, "refresh_token");

    // The client never saw `lost` and presents r0 again, 10 s later.
    server.clock.advance(10);
    let (status, retried) = refresh(&server, &client, &r0).await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(text(&retried, "refresh_token"), r1, "the same successor");
    let access = text(&retried, "access_token");
    assert_ne!(access, text(&lost, "access_token"), "a fresh access token");
    assert!(active(&server, &client, &access).await);
    assert!(
        !active(&server, &client, &text(&lost, "access_token")).await,
        "the lost response's access token is replaced"
    );
    assert!(
        retried["id_token"].is_string(),
        "openid: a fresh ID token too"
    );

    // The chain goes on from the successor.
    let (status, next) = refresh(&server, &client, &r1).await;
    assert_eq!(status, 200, "{next}");
    let r2 = text(&next, "refresh_token");
    assert!(active(&server, &client, &r2).await);

    // r0 again: its successor is used now, so this is reuse and the family dies.
    let (status, body) = refresh(&server, &client, &r0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(!active(&server, &client, &r2).await, "family revoked");
    assert!(!active(&server, &client, &text(&next, "access_token")).await);
}

#[tokio::test]
async fn after_the_window_a_rotated_token_kills_the_chain() {
    let (server, client) = setup(30).await;
    let first = first_tokens(&server, &client).await;
    let r0 = text(&first, "refresh_token");
    let (_, second) = refresh(&server, &client, &r0).await;
    server.clock.advance(31);
    let (status, body) = refresh(&server, &client, &r0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(!active(&server, &client, &text(&second, "refresh_token")).await);
}

#[tokio::test]
async fn an_older_token_inside_the_window_still_kills_the_chain() {
    let (server, client) = setup(30).await;
    let first = first_tokens(&server, &client).await;
    let r0 = text(&first, "refresh_token");
    let (_, second) = refresh(&server, &client, &r0).await;
    let (_, third) = refresh(&server, &client, &text(&second, "refresh_token")).await;
    let (status, body) = refresh(&server, &client, &r0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert!(!active(&server, &client, &text(&third, "refresh_token")).await);
}

#[tokio::test]
async fn with_the_window_on_parallel_refreshes_share_one_successor() {
    let (server, client) = setup(30).await;
    let first = first_tokens(&server, &client).await;
    let form = vec![
        ("grant_type".to_owned(), "refresh_token".to_owned()),
        ("refresh_token".to_owned(), text(&first, "refresh_token")),
    ];
    let results = storm(&server, &client, form).await;
    assert_no_5xx(&results);
    assert!(results.iter().all(|(s, _)| *s == 200), "{results:?}");
    let successors: HashSet<String> = results
        .iter()
        .map(|(_, b)| text(b, "refresh_token"))
        .collect();
    assert_eq!(successors.len(), 1, "one successor for all: {successors:?}");
    let mut live = 0;
    for (_, body) in &results {
        if active(&server, &client, &text(body, "access_token")).await {
            live += 1;
        }
    }
    assert_eq!(live, 1, "exactly one live access token");
    let successor = successors.into_iter().next().unwrap();
    let (status, next) = refresh(&server, &client, &successor).await;
    assert_eq!(status, 200, "{next}");
}

#[tokio::test]
async fn another_client_cannot_retry_someone_elses_token() {
    let (server, client) = setup(30).await;
    let other = server
        .client(ClientSpec {
            name: "Other app".into(),
            redirect_uris: vec!["https://other.example.com/cb".into()],
            ..Default::default()
        })
        .await;
    let first = first_tokens(&server, &client).await;
    let r0 = text(&first, "refresh_token");
    let (_, second) = refresh(&server, &client, &r0).await;
    let (status, body) = refresh(&server, &other, &r0).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (StatusCode::BAD_REQUEST.as_u16(), Some("invalid_grant"))
    );
    assert!(
        active(&server, &client, &text(&second, "refresh_token")).await,
        "a stranger's presentation leaves the family alone"
    );
}
