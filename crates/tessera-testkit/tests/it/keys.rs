//! Signing keys: the published JWKS, rotation without downtime, keys that survive a
//! restart, and private keys that exist only sealed in the store. Tokens are verified
//! independently with the `jsonwebtoken` crate against the JWKS the server publishes.

use std::collections::BTreeSet;
use std::sync::Arc;

use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Header, Validation};
use reqwest::header::HeaderMap;
use reqwest::StatusCode;
use serde_json::Value;
use tessera_crypto::jose::SigningAlg;
use tessera_crypto::MasterKey;
use tessera_server::keys::{load_or_init, rotate};
use tessera_server::{sealer, AppState, Settings};
use tessera_store::Store;
use tessera_testkit::{
    contains_bytes, with_query, ClientSpec, ConsentChoice, Pkce, TestClient, TestServer,
};

const USER: &str = "keys.user";
const PASSWORD: &str = "keys correct horse battery";

/// GET the JWKS over HTTP: its headers and body.
pub(crate) async fn fetch_jwks(server: &TestServer) -> (HeaderMap, Value) {
    fetch_jwks_at(&server.url("/.well-known/jwks.json")).await
}

async fn fetch_jwks_at(url: &str) -> (HeaderMap, Value) {
    let resp = reqwest::get(url).await.expect("jwks request");
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    let headers = resp.headers().clone();
    let body: Value = resp.json().await.expect("jwks is JSON");
    (headers, body)
}

/// The kids the JWKS publishes.
pub(crate) fn kids(jwks: &Value) -> BTreeSet<String> {
    jwks["keys"]
        .as_array()
        .expect("keys array")
        .iter()
        .map(|k| k["kid"].as_str().expect("kid").to_owned())
        .collect()
}

pub(crate) fn header(token: &str) -> Header {
    decode_header(token).unwrap_or_else(|e| panic!("not a JWS ({e}): {token}"))
}

/// Verifies `token` with the JWK of `jwks` named by its header's `kid`, with the
/// algorithm the JWK declares, checking `aud` and `iss` (and `exp` when `check_exp`).
pub(crate) fn verify_with(
    token: &str,
    jwks: &Value,
    aud: &str,
    iss: &str,
    check_exp: bool,
) -> Result<Value, String> {
    let header = decode_header(token).map_err(|e| format!("header: {e}"))?;
    let kid = header.kid.clone().ok_or("no kid in the header")?;
    let jwk_json = jwks["keys"]
        .as_array()
        .ok_or("no keys array")?
        .iter()
        .find(|k| k["kid"] == kid.as_str())
        .ok_or_else(|| format!("kid {kid} is not published"))?;
    let jwk: Jwk = serde_json::from_value(jwk_json.clone()).map_err(|e| format!("jwk: {e}"))?;
    let alg: Algorithm = jwk_json["alg"]
        .as_str()
        .ok_or("jwk without alg")?
        .parse()
        .map_err(|e| format!("jwk alg: {e}"))?;
    if header.alg != alg {
        return Err(format!("header alg {:?} but key alg {alg:?}", header.alg));
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|e| format!("decoding key: {e}"))?;
    let mut validation = Validation::new(alg);
    validation.set_audience(&[aud]);
    validation.set_issuer(&[iss]);
    validation.validate_exp = check_exp;
    validation.leeway = 0;
    decode::<Value>(token, &key, &validation)
        .map(|d| d.claims)
        .map_err(|e| format!("verification failed: {e}"))
}

/// Fetches the JWKS and verifies `token` against it.
pub(crate) async fn verify(server: &TestServer, token: &str, aud: &str) -> Result<Value, String> {
    let (_, jwks) = fetch_jwks(server).await;
    verify_with(token, &jwks, aud, &server.issuer, true)
}

async fn setup(alg: Option<&str>) -> (TestServer, TestClient) {
    let server = TestServer::start().await;
    server.user(USER, PASSWORD).await;
    let client = server
        .client(ClientSpec {
            name: "Keys test RP".into(),
            redirect_uris: vec!["https://rp.example/keys/cb".into()],
            id_token_alg: alg.map(str::to_owned),
            ..Default::default()
        })
        .await;
    (server, client)
}

/// Tokens from a fresh sign-in: a full code flow with PKCE through the browser.
async fn code_flow(server: &TestServer, client: &TestClient) -> Value {
    let pkce = Pkce::new();
    let url = with_query(
        &server.url("/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", &client.redirect_uri),
            ("scope", "openid profile"),
            ("state", "keys-state"),
            ("nonce", "keys-nonce"),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let cb = server
        .browser()
        .authorize(&url, Some((USER, PASSWORD)), Some(ConsentChoice::Allow))
        .await
        .expect("callback");
    let (status, _, body) = server
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
    assert!(body["id_token"].is_string(), "no id_token: {body}");
    body
}

async fn refresh(server: &TestServer, client: &TestClient, refresh_token: &str) -> Value {
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
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["id_token"].is_string(),
        "no id_token on refresh: {body}"
    );
    body
}

fn id_token(body: &Value) -> &str {
    body["id_token"].as_str().expect("id_token")
}

fn kid_of(token: &str) -> String {
    header(token).kid.expect("kid in header")
}

async fn rotate_now(server: &TestServer, delay: i64) -> Vec<tessera_core::keys::SigningKeyRecord> {
    let sealer = sealer(&server.master_key).unwrap();
    let new = rotate(&*server.store, &sealer, server.now(), delay)
        .await
        .expect("rotate");
    server.state.reload_keys().await.expect("reload keys");
    new
}

#[tokio::test]
async fn jwks_publishes_one_key_per_algorithm() {
    let server = TestServer::start().await;
    let (headers, jwks) = fetch_jwks(&server).await;
    let cc = headers
        .get("cache-control")
        .and_then(|v| v.to_str().ok())
        .expect("Cache-Control on the JWKS")
        .to_owned();
    assert!(cc.contains("public"), "cache-control: {cc}");
    let max_age: i64 = cc
        .split(',')
        .map(str::trim)
        .find_map(|d| d.strip_prefix("max-age="))
        .unwrap_or_else(|| panic!("no max-age in {cc}"))
        .parse()
        .expect("max-age is a number");
    assert!(max_age > 0, "cache-control: {cc}");
    assert!(
        headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(
                |v| v.starts_with("application/json") || v.starts_with("application/jwk-set+json")
            ),
        "content type: {headers:?}"
    );

    let keys = jwks["keys"].as_array().expect("keys array");
    assert_eq!(keys.len(), 3, "one key per algorithm: {jwks}");
    for (alg, kty, crv) in [
        ("EdDSA", "OKP", Some("Ed25519")),
        ("ES256", "EC", Some("P-256")),
        ("RS256", "RSA", None),
    ] {
        let matching: Vec<&Value> = keys.iter().filter(|k| k["alg"] == alg).collect();
        assert_eq!(matching.len(), 1, "one {alg} key: {jwks}");
        let k = matching[0];
        assert_eq!(k["kty"], kty, "{k}");
        assert_eq!(k["use"], "sig", "{k}");
        assert!(k["kid"].as_str().is_some_and(|s| !s.is_empty()), "kid: {k}");
        match crv {
            Some(crv) => {
                assert_eq!(k["crv"], crv, "{k}");
                assert!(k["x"].is_string(), "{k}");
            }
            None => {
                assert!(k["n"].is_string() && k["e"].is_string(), "{k}");
                let n = base64::Engine::decode(
                    &base64::engine::general_purpose::URL_SAFE_NO_PAD,
                    k["n"].as_str().unwrap(),
                )
                .expect("n is base64url");
                assert!(n.len() * 8 >= 2048, "RSA modulus of {} bits", n.len() * 8);
            }
        }
        if kty == "EC" {
            assert!(k["y"].is_string(), "{k}");
        }
        // Public keys only.
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(k.get(private).is_none(), "private member {private} in {k}");
        }
        // An independent JOSE library accepts it.
        let jwk: Jwk = serde_json::from_value(k.clone()).expect("parses as a JWK");
        DecodingKey::from_jwk(&jwk).expect("usable as a verification key");
    }
    assert_eq!(kids(&jwks).len(), 3, "kids are distinct: {jwks}");
    let stored: BTreeSet<String> = server
        .store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(kids(&jwks), stored, "the JWKS publishes the stored keys");
}

#[tokio::test]
async fn rotation_without_downtime() {
    let (server, client) = setup(None).await;
    let first = code_flow(&server, &client).await;
    let t1 = id_token(&first).to_owned();
    let h1 = header(&t1);
    assert_eq!(h1.alg, Algorithm::ES256, "ES256 is the default");
    let k1 = h1.kid.clone().expect("kid");
    verify(&server, &t1, &client.id).await.expect("t1 verifies");

    let rotated_at = server.now();
    let new = rotate_now(&server, 120).await;
    assert_eq!(new.len(), 3, "one new key per algorithm");
    let k2 = new
        .iter()
        .find(|k| k.alg == "ES256")
        .expect("new ES256 key")
        .kid
        .clone();
    assert_ne!(k1, k2);

    // The new keys are published at once, next to the old ones.
    let (_, jwks) = fetch_jwks(&server).await;
    let published = kids(&jwks);
    assert_eq!(published.len(), 6, "{jwks}");
    assert!(published.contains(&k1) && published.contains(&k2), "{jwks}");
    for k in &new {
        assert!(published.contains(&k.kid), "{} not published", k.kid);
    }

    // ...but they do not sign before the delay has passed.
    let during = code_flow(&server, &client).await;
    assert_eq!(kid_of(id_token(&during)), k1, "pending key signed at once");
    server.clock.advance(119);
    let during = refresh(
        &server,
        &client,
        during["refresh_token"].as_str().expect("refresh token"),
    )
    .await;
    assert_eq!(kid_of(id_token(&during)), k1, "pending key signed early");

    // Once the delay has passed the new key signs, and the old key is retired.
    server.clock.advance(1);
    assert_eq!(server.now(), rotated_at + 120);
    let after = code_flow(&server, &client).await;
    let t3 = id_token(&after).to_owned();
    assert_eq!(kid_of(&t3), k2, "new tokens carry the new kid");
    verify(&server, &t3, &client.id).await.expect("t3 verifies");
    let after = refresh(
        &server,
        &client,
        after["refresh_token"].as_str().expect("refresh token"),
    )
    .await;
    assert_eq!(
        kid_of(id_token(&after)),
        k2,
        "refresh signs with the new key"
    );

    // Tokens signed before the rotation keep verifying.
    verify(&server, &t1, &client.id)
        .await
        .expect("the old ID token still verifies after rotation");

    let old = server
        .store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .find(|k| k.kid == k1)
        .expect("old key still stored");
    let retires_at = old.retires_at.expect("old key retired");
    assert_eq!(retires_at, rotated_at + 120);

    // The old key stays published until every token it signed has expired.
    server.clock.advance(retires_at + 3600 - 1 - server.now());
    let (_, jwks) = fetch_jwks(&server).await;
    assert!(kids(&jwks).contains(&k1), "removed too early: {jwks}");
    verify_with(&t1, &jwks, &client.id, &server.issuer, false)
        .expect("still verifiable just before the end");
    server.state.reload_keys().await.unwrap();
    let (_, jwks) = fetch_jwks(&server).await;
    assert!(
        kids(&jwks).contains(&k1),
        "removed too early on reload: {jwks}"
    );

    server.clock.advance(1);
    let (_, jwks) = fetch_jwks(&server).await;
    let published = kids(&jwks);
    assert!(
        !published.contains(&k1),
        "expired key still published: {jwks}"
    );
    assert!(published.contains(&k2), "{jwks}");
    assert_eq!(published.len(), 3, "{jwks}");
    assert!(verify_with(&t1, &jwks, &client.id, &server.issuer, false).is_err());
    server.state.reload_keys().await.unwrap();
    let (_, jwks) = fetch_jwks(&server).await;
    assert!(!kids(&jwks).contains(&k1), "back after reload: {jwks}");
    // And the server keeps signing with the new key.
    let later = code_flow(&server, &client).await;
    assert_eq!(kid_of(id_token(&later)), k2);
}

#[tokio::test]
async fn keys_survive_a_restart() {
    let (mut server, client) = setup(Some("EdDSA")).await;
    let body = code_flow(&server, &client).await;
    let t1 = id_token(&body).to_owned();
    let k1 = kid_of(&t1);
    assert_eq!(header(&t1).alg, Algorithm::EdDSA);
    verify(&server, &t1, &client.id).await.expect("verifies");
    let before: BTreeSet<String> = server
        .store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(before.len(), 3);
    server.stop().await;

    // A new process: a new store handle on the same file, the same master key.
    let store: Arc<dyn Store> = server.reopen_store().await;
    let ring = load_or_init(&*store, &sealer(&server.master_key).unwrap(), server.now())
        .await
        .expect("keys open after restart");
    let after: BTreeSet<String> = store
        .list_signing_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.kid)
        .collect();
    assert_eq!(before, after, "no new keys were generated");
    assert_eq!(
        ring.signer(SigningAlg::EdDSA, server.now())
            .expect("an EdDSA signer")
            .kid,
        k1,
        "the same key signs after the restart"
    );
    let jwks = ring.jwks(server.now());
    assert_eq!(kids(&jwks), before);
    let claims = verify_with(&t1, &jwks, &client.id, &server.issuer, true)
        .expect("a token signed before the restart verifies");
    assert_eq!(claims["nonce"], "keys-nonce");

    // And a restarted server publishes the same keys over HTTP.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let settings = Settings {
        issuer: server.issuer.clone(),
        ..Default::default()
    };
    let state = AppState::new(
        settings,
        store.clone(),
        Arc::new(server.clock.clone()),
        &server.master_key,
        server.passwords.clone(),
    )
    .await
    .expect("restarted state");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(tessera_server::serve(listener, state, async {
        let _ = rx.await;
    }));
    let (_, jwks) = fetch_jwks_at(&format!("http://{addr}/.well-known/jwks.json")).await;
    assert_eq!(
        kids(&jwks),
        before,
        "the restarted server publishes the same keys"
    );
    verify_with(&t1, &jwks, &client.id, &server.issuer, true)
        .expect("verifies against the restarted server's JWKS");
    let _ = tx.send(());
    let _ = task.await;
    let after: usize = store.list_signing_keys().await.unwrap().len();
    assert_eq!(after, 3, "the restarted server generated no keys");
}

#[tokio::test]
async fn private_keys_are_sealed_at_rest() {
    let server = TestServer::start().await;
    // Two generations of keys: the initial ones and a rotation's.
    rotate_now(&server, 120).await;
    let sealer = sealer(&server.master_key).unwrap();
    let records = server.store.list_signing_keys().await.unwrap();
    assert_eq!(records.len(), 6);
    let bytes = server.store_bytes();
    let logs = tessera_testkit::logs();
    for r in &records {
        assert!(
            contains_bytes(&bytes, &r.sealed),
            "the sealed key {} is not found in the store files: the search is blind",
            r.kid
        );
        let pkcs8 = sealer
            .open(&r.sealed, r.kid.as_bytes())
            .expect("opens with the master key");
        assert!(
            pkcs8.len() >= 48,
            "{} PKCS#8 of {} bytes",
            r.kid,
            pkcs8.len()
        );
        assert_ne!(&pkcs8[..], &r.sealed[..]);
        assert!(
            !contains_bytes(&bytes, &pkcs8),
            "private key {} in plaintext in the store",
            r.kid
        );
        // No sizeable piece of it either (past the ASN.1 prefix every piece holds key
        // material).
        for chunk in pkcs8[16..].chunks_exact(24) {
            assert!(
                !contains_bytes(&bytes, chunk),
                "part of private key {} in plaintext in the store",
                r.kid
            );
        }
        let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, &pkcs8);
        assert!(
            !contains_bytes(&bytes, b64.as_bytes()),
            "base64 key in store"
        );
        assert!(!logs.contains(&b64), "private key {} in the logs", r.kid);
        // The AAD binds each sealed key to its kid.
        assert!(
            sealer.open(&r.sealed, b"another-kid").is_err(),
            "sealed key {} opens under another kid",
            r.kid
        );
    }
}

#[tokio::test]
async fn a_wrong_master_key_cannot_open_the_keys() {
    let server = TestServer::start().await;
    let before = server.store.list_signing_keys().await.unwrap();
    let wrong = MasterKey::generate().unwrap();
    let result = load_or_init(&*server.store, &sealer(&wrong).unwrap(), server.now()).await;
    assert!(result.is_err(), "keys opened under another master key");
    let wrong_sealer = sealer(&wrong).unwrap();
    for r in &before {
        assert!(wrong_sealer.open(&r.sealed, r.kid.as_bytes()).is_err());
    }
    // Nothing was replaced or added by the failed attempt.
    let after = server.store.list_signing_keys().await.unwrap();
    assert_eq!(before, after);
    // A server with the wrong key refuses to start rather than mint new keys.
    let started = AppState::new(
        Settings::default(),
        server.store.clone(),
        Arc::new(server.clock.clone()),
        &wrong,
        server.passwords.clone(),
    )
    .await;
    assert!(
        started.is_err(),
        "a server started with the wrong master key"
    );
    assert_eq!(server.store.list_signing_keys().await.unwrap(), before);
    // The right key still opens them.
    load_or_init(
        &*server.store,
        &sealer(&server.master_key).unwrap(),
        server.now(),
    )
    .await
    .expect("the right master key opens the keys");
}
