//! Bad input to every endpoint gets an RFC error, never a crash or a framework default
//! page, and the server keeps serving afterwards.

use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::{
    basic_header, with_query, ClientSpec, ConsentChoice, TestClient, TestServer,
};

const USER: &str = "erin";
const PASSWORD: &str = "erin-long-password-5";
const REDIRECT: &str = "https://app.example.com/cb";

async fn setup() -> (TestServer, TestClient) {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Robust app".into(),
            redirect_uris: vec![REDIRECT.into()],
            grant_types: Some("authorization_code,refresh_token,client_credentials".into()),
            ..Default::default()
        })
        .await;
    (server, client)
}

/// POSTs a raw body with `content_type` (None: no header) and optional raw Authorization.
async fn post_raw(
    server: &TestServer,
    path: &str,
    content_type: Option<&str>,
    authorization: Option<&str>,
    body: impl Into<reqwest::Body>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = server.http().post(server.url(path)).body(body);
    if let Some(ct) = content_type {
        req = req.header("content-type", ct);
    }
    if let Some(a) = authorization {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text)
        .unwrap_or_else(|_| panic!("{path}: not JSON ({status}): {text}"));
    (status, headers, json)
}

const FORM: &str = "application/x-www-form-urlencoded";

fn assert_error(what: &str, status: StatusCode, body: &Value, want_status: StatusCode, want: &str) {
    assert_eq!(status, want_status, "{what}: {body}");
    assert_eq!(body["error"], want, "{what}: {body}");
    assert!(
        body["error_description"].is_string(),
        "{what}: no description: {body}"
    );
    assert!(body.get("access_token").is_none(), "{what}: {body}");
}

/// The server still answers a normal request: a client_credentials token that introspects
/// as active.
async fn assert_still_serving(server: &TestServer, client: &TestClient) {
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "client_credentials")],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "the server stopped serving: {body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(server.introspect(client, token).await["active"], true);
    let live = server
        .http()
        .get(server.url("/health/live"))
        .send()
        .await
        .unwrap();
    assert_eq!(live.status(), StatusCode::OK);
}

// RFC 6749 §5.2: a missing or unknown grant_type.
#[tokio::test]
async fn token_endpoint_grant_type_errors() {
    let (server, client) = setup().await;
    let (status, _, body) = server
        .post_form("/oauth2/token", &[("code", "x")], client.basic())
        .await;
    assert_error(
        "missing grant_type",
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let (status, _, body) = server.post_form("/oauth2/token", &[], client.basic()).await;
    assert_error(
        "empty body",
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    for grant in [
        "password",
        "implicit",
        "urn:ietf:params:oauth:grant-type:device_code",
        "AUTHORIZATION_CODE",
    ] {
        let (status, _, body) = server
            .post_form("/oauth2/token", &[("grant_type", grant)], client.basic())
            .await;
        assert_error(
            grant,
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
        );
    }
    // A grant's required parameter missing.
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "authorization_code")],
            client.basic(),
        )
        .await;
    assert_error(
        "no code",
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "refresh_token")],
            client.basic(),
        )
        .await;
    assert_error(
        "no refresh_token",
        status,
        &body,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    assert_still_serving(&server, &client).await;
}

// RFC 6749 §3.1/§3.2: parameters must not be repeated.
#[tokio::test]
async fn token_endpoint_duplicated_parameters() {
    let (server, client) = setup().await;
    for form in [
        vec![
            ("grant_type", "client_credentials"),
            ("grant_type", "client_credentials"),
        ],
        vec![
            ("grant_type", "client_credentials"),
            ("scope", "profile"),
            ("scope", "email"),
        ],
        vec![
            ("grant_type", "authorization_code"),
            ("code", "tac_a"),
            ("code", "tac_b"),
        ],
        vec![
            ("grant_type", "refresh_token"),
            ("refresh_token", "trt_a"),
            ("refresh_token", "trt_b"),
        ],
    ] {
        let (status, _, body) = server
            .post_form("/oauth2/token", &form, client.basic())
            .await;
        assert_error(
            &format!("{form:?}"),
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    // Repeated client credentials in the body are refused too (not silently first-wins).
    let secret = client.secret.clone().unwrap();
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "client_credentials"),
                ("client_id", &client.id),
                ("client_id", "someone-else"),
                ("client_secret", &secret),
            ],
            None,
        )
        .await;
    assert!(
        status == StatusCode::BAD_REQUEST || status == StatusCode::UNAUTHORIZED,
        "{status} {body}"
    );
    assert!(
        body["error"] == "invalid_request" || body["error"] == "invalid_client",
        "{body}"
    );
    assert!(body.get("access_token").is_none());
    assert_still_serving(&server, &client).await;
}

// RFC 6749 Appendix B: the body is UTF-8 form encoding; anything else is invalid_request.
#[tokio::test]
async fn token_endpoint_invalid_encodings() {
    let (server, client) = setup().await;
    let basic = basic_header(&client.id, client.secret.as_deref().unwrap());
    for (what, body) in [
        (
            "%ff value",
            "grant_type=client_credentials&scope=%ff"
                .as_bytes()
                .to_vec(),
        ),
        (
            "%ff%fe key",
            b"grant_type=client_credentials&%ff%fe=1".to_vec(),
        ),
        (
            "raw invalid UTF-8",
            b"grant_type=client_credentials&scope=\xff\xfe".to_vec(),
        ),
        (
            "overlong UTF-8",
            b"grant_type=client_credentials&scope=%c0%af".to_vec(),
        ),
        (
            "lone surrogate",
            b"grant_type=client_credentials&scope=%ed%a0%80".to_vec(),
        ),
    ] {
        let (status, _, json) =
            post_raw(&server, "/oauth2/token", Some(FORM), Some(&basic), body).await;
        assert_error(
            what,
            status,
            &json,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    // Malformed percent escapes are kept literally by form decoding: never a crash.
    let (status, _, json) = post_raw(
        &server,
        "/oauth2/token",
        Some(FORM),
        Some(&basic),
        "grant_type=client_credentials&scope=%zz%",
    )
    .await;
    assert!(status == StatusCode::BAD_REQUEST, "{status} {json}");
    assert!(json["error"].is_string(), "{json}");
    assert_still_serving(&server, &client).await;
}

// RFC 6749 §3.2: the token endpoint takes application/x-www-form-urlencoded only.
#[tokio::test]
async fn token_endpoint_wrong_content_type() {
    let (server, client) = setup().await;
    let basic = basic_header(&client.id, client.secret.as_deref().unwrap());
    for ct in [
        Some("application/json"),
        Some("text/plain"),
        Some("multipart/form-data; boundary=x"),
        None,
    ] {
        let body = if ct == Some("application/json") {
            r#"{"grant_type":"client_credentials"}"#
        } else {
            "grant_type=client_credentials"
        };
        let (status, _, json) = post_raw(&server, "/oauth2/token", ct, Some(&basic), body).await;
        assert_error(
            &format!("{ct:?}"),
            status,
            &json,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    // Parameters in the query string of a POST are not read as the body.
    let resp = server
        .http()
        .post(with_query(
            &server.url("/oauth2/token"),
            &[("grant_type", "client_credentials")],
        ))
        .header("authorization", &basic)
        .header("content-type", FORM)
        .body("")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    // A form content type with a charset parameter is fine.
    let (status, _, json) = post_raw(
        &server,
        "/oauth2/token",
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        Some(&basic),
        "grant_type=client_credentials",
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_still_serving(&server, &client).await;
}

// A body larger than 64 KiB is refused with 413 (or 400) and a JSON error.
#[tokio::test]
async fn oversized_bodies_are_refused() {
    let (server, client) = setup().await;
    let basic = basic_header(&client.id, client.secret.as_deref().unwrap());
    let huge = format!(
        "grant_type=client_credentials&scope={}",
        "a".repeat(70 * 1024)
    );
    for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
        let (status, _, json) =
            post_raw(&server, path, Some(FORM), Some(&basic), huge.clone()).await;
        assert!(
            status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST,
            "{path}: {status} {json}"
        );
        assert_eq!(json["error"], "invalid_request", "{path}: {json}");
    }
    // Far larger, announced by Content-Length.
    let (status, _, json) = post_raw(
        &server,
        "/oauth2/token",
        Some(FORM),
        Some(&basic),
        "a=".to_owned() + &"b".repeat(1 << 20),
    )
    .await;
    assert!(
        status == StatusCode::PAYLOAD_TOO_LARGE || status == StatusCode::BAD_REQUEST,
        "{status}"
    );
    assert!(json["error"].is_string());
    // Under the body limit, but one value longer than any legitimate one, and too many
    // parameters.
    let long_value = format!("grant_type=client_credentials&scope={}", "a".repeat(10_000));
    let (status, _, json) = post_raw(
        &server,
        "/oauth2/token",
        Some(FORM),
        Some(&basic),
        long_value,
    )
    .await;
    assert_error(
        "long value",
        status,
        &json,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    let many: String =
        (0..500).map(|i| format!("p{i}=v&")).collect::<String>() + "grant_type=client_credentials";
    let (status, _, json) =
        post_raw(&server, "/oauth2/token", Some(FORM), Some(&basic), many).await;
    assert_error(
        "many params",
        status,
        &json,
        StatusCode::BAD_REQUEST,
        "invalid_request",
    );
    // The login form has the same limit, answered with a page.
    let resp = server
        .http()
        .post(server.url("/login"))
        .header("content-type", FORM)
        .body(huge)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == StatusCode::PAYLOAD_TOO_LARGE || resp.status() == StatusCode::BAD_REQUEST
    );
    assert_still_serving(&server, &client).await;
}

// RFC 6749 §2.3.1 / §5.2: a malformed Basic header is invalid_client, 401 with
// WWW-Authenticate.
#[tokio::test]
async fn malformed_basic_header() {
    let (server, client) = setup().await;
    let id_only = format!("Basic {}", base64_std(client.id.as_bytes()));
    let bad_utf8 = format!("Basic {}", base64_std(b"\xff\xfe:\xfd"));
    let bad_escape = format!(
        "Basic {}",
        base64_std(format!("{}:%zz%", client.id).as_bytes())
    );
    for header in [
        "Basic",
        "Basic ",
        "Basic !!!not-base64!!!",
        "Basic ====",
        id_only.as_str(),
        bad_utf8.as_str(),
        bad_escape.as_str(),
        "Digest username=\"x\"",
        "Bearer tat_abc",
    ] {
        for path in ["/oauth2/token", "/oauth2/introspect", "/oauth2/revoke"] {
            let (status, headers, json) = post_raw(
                &server,
                path,
                Some(FORM),
                Some(header),
                "grant_type=client_credentials&token=tat_x",
            )
            .await;
            assert_error(
                &format!("{path} {header:?}"),
                status,
                &json,
                StatusCode::UNAUTHORIZED,
                "invalid_client",
            );
            assert!(
                headers.contains_key("www-authenticate"),
                "{path} {header:?}: {headers:?}"
            );
        }
    }
    assert_still_serving(&server, &client).await;
}

fn base64_std(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

// RFC 7662 §2.1 and RFC 7009 §2.1: `token` is required; client authentication is required.
#[tokio::test]
async fn introspection_and_revocation_without_token() {
    let (server, client) = setup().await;
    for path in ["/oauth2/introspect", "/oauth2/revoke"] {
        let (status, _, body) = server.post_form(path, &[], client.basic()).await;
        assert_error(
            &format!("{path} no token"),
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        let (status, _, body) = server
            .post_form(path, &[("token", "")], client.basic())
            .await;
        assert_error(
            &format!("{path} empty token"),
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        let (status, _, body) = server
            .post_form(
                path,
                &[("token", "tat_a"), ("token", "tat_b")],
                client.basic(),
            )
            .await;
        assert_error(
            &format!("{path} two tokens"),
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
        let (status, headers, body) = server.post_form(path, &[("token", "tat_a")], None).await;
        assert_error(
            &format!("{path} no client"),
            status,
            &body,
            StatusCode::UNAUTHORIZED,
            "invalid_client",
        );
        assert!(headers.contains_key("www-authenticate"));
        let basic = basic_header(&client.id, client.secret.as_deref().unwrap());
        let (status, _, body) = post_raw(
            &server,
            path,
            Some("application/json"),
            Some(&basic),
            r#"{"token":"x"}"#,
        )
        .await;
        assert_error(
            &format!("{path} json"),
            status,
            &body,
            StatusCode::BAD_REQUEST,
            "invalid_request",
        );
    }
    // Unknown and garbage tokens: inactive (RFC 7662 §2.2) / 200 (RFC 7009 §2.2).
    for token in ["tat_garbage", "trt_garbage", "garbage", "\u{1F600}"] {
        assert_eq!(
            server.introspect(&client, token).await,
            serde_json::json!({"active": false})
        );
        let (status, _, _) = server
            .post_form("/oauth2/revoke", &[("token", token)], client.basic())
            .await;
        assert_eq!(status, StatusCode::OK, "{token}");
    }
    assert_still_serving(&server, &client).await;
}

async fn assert_page(server: &TestServer, url: &str, what: &str) {
    let resp = server.http().get(url).send().await.unwrap();
    let status = resp.status();
    assert!(
        resp.headers().get("location").is_none(),
        "{what}: redirected"
    );
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let body = resp.text().await.unwrap();
    assert_eq!(status, StatusCode::BAD_REQUEST, "{what}: {body}");
    assert!(ct.starts_with("text/html"), "{what}: {ct}");
}

// RFC 6749 §3.1 and §4.1.2.1: a malformed request whose client or redirect URI cannot be
// trusted gets an error page.
#[tokio::test]
async fn authorize_with_duplicated_or_garbage_parameters() {
    let (server, client) = setup().await;
    let base = server.url("/oauth2/authorize");
    let dup_client = format!(
        "{base}?response_type=code&client_id={id}&client_id={id}&redirect_uri={r}",
        id = client.id,
        r = "https%3A%2F%2Fapp.example.com%2Fcb"
    );
    assert_page(&server, &dup_client, "duplicated client_id").await;
    let dup_redirect = format!(
        "{base}?response_type=code&client_id={id}&redirect_uri={r}&redirect_uri={r}",
        id = client.id,
        r = "https%3A%2F%2Fapp.example.com%2Fcb"
    );
    assert_page(&server, &dup_redirect, "duplicated redirect_uri").await;
    for garbage in [
        "%ff%fe=%zz&&&===",
        "client_id=%ff",
        "&&&&",
        "=",
        "client_id",
        "response_type=code&client_id=%00%01",
    ] {
        assert_page(&server, &format!("{base}?{garbage}"), garbage).await;
    }
    let long = format!("{base}?client_id={}", "x".repeat(6000));
    assert_page(&server, &long, "long client_id").await;

    // Once the client and redirect URI are trusted, a duplicated parameter goes back to
    // the client as invalid_request with the state (RFC 6749 §4.1.2.1).
    let dup_scope = with_query(
        &base,
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", REDIRECT),
            ("scope", "openid"),
            ("scope", "profile"),
            ("state", "s-dup"),
        ],
    );
    let resp = server.http().get(&dup_scope).send().await.unwrap();
    assert!(resp.status().is_redirection(), "{}", resp.status());
    let location = resp.headers()["location"].to_str().unwrap();
    let url = url::Url::parse(location).unwrap();
    let params: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(
        params.get("error").map(String::as_str),
        Some("invalid_request"),
        "{location}"
    );
    assert_eq!(
        params.get("state").map(String::as_str),
        Some("s-dup"),
        "{location}"
    );
    assert!(location.starts_with(REDIRECT), "{location}");
    // Unsupported response_type, same rule.
    let token_type = with_query(
        &base,
        &[
            ("response_type", "token"),
            ("client_id", &client.id),
            ("state", "s-t"),
        ],
    );
    let resp = server.http().get(&token_type).send().await.unwrap();
    let location = resp.headers()["location"].to_str().unwrap();
    assert!(
        location.contains("error=unsupported_response_type"),
        "{location}"
    );

    // The pages endpoints answer garbage with pages too.
    for url in [
        server.url("/login?request=%ff"),
        server.url("/login?request=garbage.garbage"),
        server.url("/consent?request=garbage"),
        server.url("/consent"),
    ] {
        let resp = server.http().get(&url).send().await.unwrap();
        assert!(resp.status().is_client_error(), "{url}: {}", resp.status());
    }
    assert_still_serving(&server, &client).await;
}

// RFC 6750 §3.1: a bad bearer token is 401 with WWW-Authenticate: Bearer error="invalid_token".
#[tokio::test]
async fn userinfo_with_garbage_bearer_token() {
    let (server, client) = setup().await;
    for token in ["garbage", "tat_garbage", "tat_", "trt_abc", "a b c"] {
        let resp = server
            .http()
            .get(server.url("/userinfo"))
            .header("authorization", format!("Bearer {token}"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{token}");
        let www = resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(www.starts_with("Bearer"), "{www}");
        assert!(www.contains("error=\"invalid_token\""), "{www}");
    }
    // No token at all: 401 with a Bearer challenge.
    let resp = server
        .http()
        .get(server.url("/userinfo"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));
    // Another scheme, or a header that is not text.
    for value in [
        reqwest::header::HeaderValue::from_static("Basic Zm9vOmJhcg=="),
        reqwest::header::HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap(),
        reqwest::header::HeaderValue::from_static("Bearer"),
    ] {
        let resp = server
            .http()
            .get(server.url("/userinfo"))
            .header("authorization", value.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{value:?}");
        assert!(resp.headers().contains_key("www-authenticate"), "{value:?}");
    }
    // POST userinfo with a garbage form token, and /v1/users/me.
    let (status, headers, _) = server
        .post_form("/userinfo", &[("access_token", "tat_nope")], None)
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(headers.contains_key("www-authenticate"));
    let (status, _) = server
        .bearer_get("/v1/users/me", "tat_nope", &[("tenant", "default")])
        .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_still_serving(&server, &client).await;
}

/// Sends raw bytes on a fresh TCP connection and returns what came back (maybe nothing).
/// Blocking std sockets on a blocking thread: the workspace's tokio has no io-util.
async fn raw_exchange(server: &TestServer, bytes: &[u8]) -> String {
    use std::io::{Read, Write};
    let addr = server.issuer.trim_start_matches("http://").to_owned();
    let bytes = bytes.to_vec();
    tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let _ = stream.write_all(&bytes);
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    })
    .await
    .unwrap()
}

// Junk at the HTTP level: the connection is refused with 400 (or closed), the server lives on.
#[tokio::test]
async fn malformed_http_does_not_stop_the_server() {
    let (server, client) = setup().await;
    for junk in [
        &b"\x00\x01\x02\x03 garbage\r\n\r\n"[..],
        b"GET /oauth2/authorize?x=\xff HTTP/1.1\r\nHost: a\r\n\r\n",
        b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n",
        b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nContent-Length: 20\r\n\r\nabc",
        b"POST /oauth2/token HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Type: application/x-www-form-urlencoded\r\n\r\nzz\r\n",
    ] {
        let answer = raw_exchange(&server, junk).await;
        if !answer.is_empty() {
            assert!(
                answer.starts_with("HTTP/1.1 4"),
                "{:?} was answered {answer}",
                String::from_utf8_lossy(junk)
            );
        }
    }
    assert_still_serving(&server, &client).await;
}

// After every kind of bad input, the complete flow still works on the same server.
#[tokio::test]
async fn full_flow_still_works_after_bad_input() {
    let (server, client) = setup().await;
    let basic = basic_header(&client.id, client.secret.as_deref().unwrap());
    post_raw(
        &server,
        "/oauth2/token",
        Some(FORM),
        Some(&basic),
        "grant_type=%ff",
    )
    .await;
    post_raw(
        &server,
        "/oauth2/token",
        Some(FORM),
        Some("Basic !!!"),
        "grant_type=x",
    )
    .await;
    post_raw(
        &server,
        "/oauth2/token",
        Some(FORM),
        Some(&basic),
        "a=".to_owned() + &"b".repeat(100_000),
    )
    .await;
    post_raw(
        &server,
        "/oauth2/introspect",
        Some("text/plain"),
        Some(&basic),
        "token",
    )
    .await;
    raw_exchange(&server, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03").await;
    server
        .http()
        .get(server.url("/oauth2/authorize?%ff"))
        .send()
        .await
        .unwrap();
    server.bearer_get("/userinfo", "junk", &[]).await;

    let cb = server
        .browser()
        .authorize(
            &with_query(
                &server.url("/oauth2/authorize"),
                &[
                    ("response_type", "code"),
                    ("client_id", &client.id),
                    ("redirect_uri", REDIRECT),
                    ("scope", "openid profile"),
                    ("state", "after"),
                ],
            ),
            Some((USER, PASSWORD)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some("after"));
    let (status, _, tokens) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", cb.code()),
                ("redirect_uri", REDIRECT),
            ],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{tokens}");
    let (status, me) = server
        .bearer_get("/userinfo", tokens["access_token"].as_str().unwrap(), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{me}");
    assert_eq!(me["preferred_username"], USER);
}
