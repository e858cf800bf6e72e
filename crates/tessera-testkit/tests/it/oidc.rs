//! OpenID Connect end to end: the `openidconnect` crate as a certified-style relying party
//! for each signing algorithm, the applicable checks of the OpenID conformance suite's
//! basic and config OP plans (each test named after its plan module), and snapshots of the
//! discovery document and the JWKS shape.

use std::collections::HashSet;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{DecodingKey, Validation};
use openidconnect::core::{
    CoreAuthenticationFlow, CoreClient, CoreJwsSigningAlgorithm, CoreProviderMetadata,
    CoreUserInfoClaims,
};
use openidconnect::{
    AccessTokenHash, AuthorizationCode, ClientId, ClientSecret, CsrfToken, IssuerUrl, Nonce,
    OAuth2TokenResponse, PkceCodeChallenge, RedirectUrl, Scope, TokenResponse,
};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};
use tessera_testkit::{
    with_query, Browser, Callback, ClientSpec, ConsentChoice, Form, Pkce, Stop, TestClient,
    TestServer,
};

const USER: &str = "ana";
const PW: &str = "correct horse battery staple";
const CALLBACK: &str = "https://rp.example.com/callback";
const LOGGED_OUT: &str = "https://rp.example.com/logged-out";

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

async fn setup() -> (TestServer, TestClient, String) {
    let server = TestServer::start().await;
    let user = server.user(USER, PW).await;
    let client = server
        .client(ClientSpec {
            name: "Conformance RP".into(),
            redirect_uris: vec![CALLBACK.into()],
            post_logout_redirect_uris: vec![LOGGED_OUT.into()],
            ..Default::default()
        })
        .await;
    (server, client, user.id)
}

/// An authorization request at the canonical endpoint with PKCE S256; `extra` adds
/// `scope`, `state`, `nonce`, `prompt`, `max_age`, ….
fn authorize_url(
    server: &TestServer,
    client: &TestClient,
    pkce: &Pkce,
    extra: &[(&str, &str)],
) -> String {
    let mut pairs = vec![
        ("response_type", "code"),
        ("client_id", client.id.as_str()),
        ("redirect_uri", client.redirect_uri.as_str()),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
    ];
    pairs.extend_from_slice(extra);
    with_query(&server.url("/oauth2/authorize"), &pairs)
}

async fn exchange(
    server: &TestServer,
    client: &TestClient,
    code: &str,
    verifier: &str,
) -> (StatusCode, Value) {
    let (status, _, body) = server
        .post_form(
            "/oauth2/token",
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", &client.redirect_uri),
                ("code_verifier", verifier),
            ],
            client.basic(),
        )
        .await;
    (status, body)
}

/// Authorizes through `browser` (signing in with `login` if asked) and redeems the code.
async fn authorize_and_redeem(
    server: &TestServer,
    browser: &Browser,
    client: &TestClient,
    extra: &[(&str, &str)],
    login: Option<(&str, &str)>,
) -> (Callback, Value) {
    let pkce = Pkce::new();
    let cb = browser
        .authorize(
            &authorize_url(server, client, &pkce, extra),
            login,
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("authorization callback");
    let (status, body) = exchange(server, client, cb.code(), &pkce.verifier).await;
    assert_eq!(status, StatusCode::OK, "token response: {body}");
    (cb, body)
}

async fn get_json(server: &TestServer, url: &str) -> Value {
    let resp = server.http().get(url).send().await.expect("GET");
    assert_eq!(resp.status(), StatusCode::OK, "GET {url}");
    resp.json().await.expect("JSON body")
}

async fn discovery(server: &TestServer) -> Value {
    get_json(server, &server.url("/.well-known/openid-configuration")).await
}

/// Verifies `token`'s signature with the key its `kid` names in the published JWKS (found
/// through discovery), and its `iss`, `aud` and `exp`; returns the header and the claims.
async fn verified_id_token(
    server: &TestServer,
    client: &TestClient,
    token: &str,
) -> (jsonwebtoken::Header, Value) {
    let header = jsonwebtoken::decode_header(token).expect("JOSE header");
    let kid = header.kid.clone().expect("ID token header names its kid");
    let jwks_uri = discovery(server).await["jwks_uri"]
        .as_str()
        .expect("jwks_uri")
        .to_owned();
    let jwks: JwkSet = serde_json::from_value(get_json(server, &jwks_uri).await).expect("JWKS");
    let jwk = jwks.find(&kid).expect("the signing key is published");
    let key = DecodingKey::from_jwk(jwk).expect("usable JWK");
    let mut validation = Validation::new(header.alg);
    validation.set_audience(&[&client.id]);
    validation.set_issuer(&[&server.issuer]);
    validation.set_required_spec_claims(&["exp", "iat", "iss", "sub", "aud"]);
    let data = jsonwebtoken::decode::<Value>(token, &key, &validation)
        .expect("ID token verifies against the JWKS");
    (header, data.claims)
}

fn id_token_of(tokens: &Value) -> &str {
    tokens["id_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no id_token in {tokens}"))
}

fn access_token_of(tokens: &Value) -> &str {
    tokens["access_token"]
        .as_str()
        .unwrap_or_else(|| panic!("no access_token in {tokens}"))
}

/// OIDC Core §3.1.3.6: base64url of the left half of SHA-256 (RS256/ES256).
fn sha256_half(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..16])
}

fn int(claims: &Value, name: &str) -> i64 {
    claims[name]
        .as_i64()
        .unwrap_or_else(|| panic!("{name} is not an integer in {claims}"))
}

// ---------------------------------------------------------------------------------------
// The `openidconnect` crate as relying party, once per signing algorithm
// ---------------------------------------------------------------------------------------

async fn relying_party(alg_name: &str, alg: CoreJwsSigningAlgorithm) {
    let server = TestServer::start().await;
    let user = server.user(USER, PW).await;
    let client = server
        .client(ClientSpec {
            name: format!("RP {alg_name}"),
            redirect_uris: vec![CALLBACK.into()],
            id_token_alg: Some(alg_name.into()),
            ..Default::default()
        })
        .await;
    let http = openidconnect::reqwest::Client::builder()
        .redirect(openidconnect::reqwest::redirect::Policy::none())
        .build()
        .expect("http client");

    let metadata = CoreProviderMetadata::discover_async(
        IssuerUrl::new(server.issuer.clone()).expect("issuer URL"),
        &http,
    )
    .await
    .expect("discovery accepted by openidconnect");
    assert!(
        metadata
            .id_token_signing_alg_values_supported()
            .contains(&alg),
        "{alg_name} is advertised"
    );
    let rp = CoreClient::from_provider_metadata(
        metadata,
        ClientId::new(client.id.clone()),
        client.secret.clone().map(ClientSecret::new),
    )
    .set_redirect_uri(RedirectUrl::new(client.redirect_uri.clone()).expect("redirect URL"));

    let (challenge, pkce_verifier) = PkceCodeChallenge::new_random_sha256();
    let (auth_url, csrf, nonce) = rp
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("profile".into()))
        .add_scope(Scope::new("email".into()))
        .set_pkce_challenge(challenge)
        .url();
    let cb = server
        .browser()
        .authorize(
            auth_url.as_str(),
            Some((USER, PW)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert_eq!(cb.get("state"), Some(csrf.secret().as_str()));
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()));

    let tokens = rp
        .exchange_code(AuthorizationCode::new(cb.code().to_owned()))
        .expect("token endpoint discovered")
        .set_pkce_verifier(pkce_verifier)
        .request_async(&http)
        .await
        .expect("code exchange");
    let id_token = tokens.id_token().expect("an ID token for scope openid");
    assert_eq!(id_token.signing_alg().expect("signed"), &alg);

    // Signature (via the discovered JWKS), iss, aud, exp and nonce.
    let verifier = rp.id_token_verifier().set_allowed_algs([alg.clone()]);
    let claims = id_token
        .claims(&verifier, &nonce)
        .expect("ID token verifies");
    // The same token must fail with another nonce, and under a verifier that only accepts
    // another algorithm: the checks above are real.
    assert!(id_token
        .claims(&verifier, &Nonce::new("some-other-nonce".into()))
        .is_err());
    let other = if alg == CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256 {
        CoreJwsSigningAlgorithm::EcdsaP256Sha256
    } else {
        CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256
    };
    assert!(id_token
        .claims(&rp.id_token_verifier().set_allowed_algs([other]), &nonce)
        .is_err());

    // at_hash, as the openidconnect documentation prescribes.
    let expected_hash = claims.access_token_hash().expect("at_hash present");
    let actual_hash = AccessTokenHash::from_token(
        tokens.access_token(),
        id_token.signing_alg().expect("alg"),
        id_token.signing_key(&verifier).expect("signing key"),
    )
    .expect("hash");
    assert_eq!(
        &actual_hash, expected_hash,
        "at_hash matches the access token"
    );

    // Claims.
    assert_eq!(claims.subject().as_str(), user.id);
    let auth_time = claims.auth_time().expect("auth_time").timestamp();
    assert!(
        (server.now() - 5..=server.now()).contains(&auth_time),
        "auth_time {auth_time} is the sign-in just now ({})",
        server.now()
    );
    assert_eq!(
        claims.email().map(|e| e.as_str()),
        Some(format!("{USER}@example.com").as_str())
    );
    assert_eq!(claims.preferred_username().map(|u| u.as_str()), Some(USER));

    // UserInfo, with the subject the ID token named.
    let info: CoreUserInfoClaims = rp
        .user_info(
            tokens.access_token().to_owned(),
            Some(claims.subject().clone()),
        )
        .expect("userinfo endpoint discovered")
        .request_async(&http)
        .await
        .expect("userinfo");
    assert_eq!(info.subject(), claims.subject());
    assert_eq!(
        info.email().map(|e| e.as_str()),
        Some(format!("{USER}@example.com").as_str())
    );
    assert_eq!(info.preferred_username().map(|u| u.as_str()), Some(USER));
}

#[tokio::test]
async fn relying_party_eddsa() {
    relying_party("EdDSA", CoreJwsSigningAlgorithm::EdDsa).await;
}

#[tokio::test]
async fn relying_party_es256() {
    relying_party("ES256", CoreJwsSigningAlgorithm::EcdsaP256Sha256).await;
}

#[tokio::test]
async fn relying_party_rs256() {
    relying_party("RS256", CoreJwsSigningAlgorithm::RsaSsaPkcs1V15Sha256).await;
}

// ---------------------------------------------------------------------------------------
// Config OP plan
// ---------------------------------------------------------------------------------------

/// oidcc-discovery-endpoint-verification: issuer equals the URL the document was fetched
/// from, every endpoint is served under it, the mandatory fields are there.
#[tokio::test]
async fn oidcc_discovery_endpoint_verification() {
    let server = TestServer::start().await;
    let doc = discovery(&server).await;
    assert_eq!(doc["issuer"], server.issuer.as_str());
    let base = format!("{}/", server.issuer);
    for field in [
        "authorization_endpoint",
        "token_endpoint",
        "userinfo_endpoint",
        "jwks_uri",
        "end_session_endpoint",
        "revocation_endpoint",
        "introspection_endpoint",
    ] {
        let url = doc[field]
            .as_str()
            .unwrap_or_else(|| panic!("{field} missing from {doc}"));
        assert!(
            url.starts_with(&base),
            "{field} = {url} is not under {base}"
        );
    }
    let list = |field: &str| -> Vec<String> {
        doc[field]
            .as_array()
            .unwrap_or_else(|| panic!("{field} is not a list in {doc}"))
            .iter()
            .map(|v| v.as_str().expect("string").to_owned())
            .collect()
    };
    assert!(list("response_types_supported").contains(&"code".to_owned()));
    assert!(list("scopes_supported").contains(&"openid".to_owned()));
    assert!(!list("subject_types_supported").is_empty());
    // CheckDiscEndpointIdTokenSigningAlgValuesSupportedContainsRS256 (and no "none").
    let algs = list("id_token_signing_alg_values_supported");
    assert!(algs.contains(&"RS256".to_owned()), "{algs:?}");
    assert!(!algs.contains(&"none".to_owned()), "{algs:?}");
    assert_eq!(list("code_challenge_methods_supported"), vec!["S256"]);
    assert!(list("claims_supported").contains(&"sub".to_owned()));
    assert_eq!(doc["authorization_response_iss_parameter_supported"], true);
    // The endpoints answer where they are advertised.
    get_json(&server, doc["jwks_uri"].as_str().expect("jwks_uri")).await;
    // The RFC 8414 alias names the same issuer.
    let alias = get_json(
        &server,
        &server.url("/.well-known/oauth-authorization-server"),
    )
    .await;
    assert_eq!(alias["issuer"], server.issuer.as_str());
}

/// oidcc-discovery-endpoint-verification, JWKS part (ValidateServerJWKs,
/// CheckForKeyIdInServerJWKs, EnsureServerJwksDoesNotContainPrivateOrSymmetricKeys): every
/// key has a unique kid, use=sig and an advertised alg; no private or symmetric material.
#[tokio::test]
async fn oidcc_discovery_jwks_consistency() {
    let server = TestServer::start().await;
    let doc = discovery(&server).await;
    let supported: HashSet<String> = doc["id_token_signing_alg_values_supported"]
        .as_array()
        .expect("algs")
        .iter()
        .map(|v| v.as_str().expect("alg").to_owned())
        .collect();
    let jwks = get_json(&server, doc["jwks_uri"].as_str().expect("jwks_uri")).await;
    let keys = jwks["keys"].as_array().expect("keys");
    assert!(!keys.is_empty());
    let mut kids = HashSet::new();
    let mut algs = HashSet::new();
    for key in keys {
        let kid = key["kid"].as_str().expect("kid");
        assert!(kids.insert(kid.to_owned()), "duplicate kid {kid}");
        assert_eq!(key["use"], "sig", "{key}");
        let alg = key["alg"].as_str().expect("alg");
        assert!(supported.contains(alg), "{alg} not advertised");
        algs.insert(alg.to_owned());
        let kty = match alg {
            "RS256" => "RSA",
            "ES256" => "EC",
            "EdDSA" => "OKP",
            other => panic!("unexpected alg {other}"),
        };
        assert_eq!(key["kty"], kty, "{key}");
        for private in ["d", "p", "q", "dp", "dq", "qi", "k"] {
            assert!(key.get(private).is_none(), "{private} published in {key}");
        }
        // Every published key is usable by a standard JOSE library.
        let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(key.clone()).expect("JWK");
        DecodingKey::from_jwk(&jwk).expect("usable key");
    }
    assert_eq!(algs, supported, "every advertised alg has a published key");
}

// ---------------------------------------------------------------------------------------
// Basic OP plan
// ---------------------------------------------------------------------------------------

/// oidcc-server: the ID token of a code flow carries iss, sub, aud, exp, iat, auth_time,
/// the nonce exactly as sent, sid and a correct at_hash; signed with the client's (default
/// ES256) key from the JWKS.
#[tokio::test]
async fn oidcc_server() {
    let (server, client, user_id) = setup().await;
    let nonce = "n-0S6_WzA2Mj .+/=\u{e9}";
    let (_, tokens) = authorize_and_redeem(
        &server,
        &server.browser(),
        &client,
        &[("scope", "openid"), ("state", "st"), ("nonce", nonce)],
        Some((USER, PW)),
    )
    .await;
    assert_eq!(tokens["token_type"], "Bearer");
    let (header, claims) = verified_id_token(&server, &client, id_token_of(&tokens)).await;
    assert_eq!(header.alg, jsonwebtoken::Algorithm::ES256);
    assert_eq!(claims["iss"], server.issuer.as_str());
    assert_eq!(claims["sub"], user_id.as_str());
    // aud is the client id (a string, or a list holding it).
    match &claims["aud"] {
        Value::String(a) => assert_eq!(a, &client.id),
        Value::Array(a) => assert!(a.iter().any(|v| v == client.id.as_str()), "{claims}"),
        other => panic!("bad aud {other}"),
    }
    let (iat, exp) = (int(&claims, "iat"), int(&claims, "exp"));
    assert!(exp > iat, "{claims}");
    assert!((iat - server.now()).abs() <= 5, "iat {iat} is now");
    let auth_time = int(&claims, "auth_time");
    assert!(auth_time <= iat && iat - auth_time <= 5, "{claims}");
    assert_eq!(claims["nonce"], nonce, "nonce echoed exactly");
    assert!(
        claims["sid"].as_str().is_some_and(|s| !s.is_empty()),
        "sid in {claims}"
    );
    assert_eq!(
        claims["at_hash"],
        sha256_half(access_token_of(&tokens)).as_str()
    );
    // Scope openid alone discloses no profile or email claims.
    for c in ["email", "name", "preferred_username"] {
        assert!(claims.get(c).is_none(), "{c} without its scope: {claims}");
    }
}

/// oidcc-ensure-request-without-nonce-succeeds-for-code-flow: no nonce sent, none returned.
#[tokio::test]
async fn oidcc_ensure_request_without_nonce_succeeds_for_code_flow() {
    let (server, client, _) = setup().await;
    let (_, tokens) = authorize_and_redeem(
        &server,
        &server.browser(),
        &client,
        &[("scope", "openid"), ("state", "st")],
        Some((USER, PW)),
    )
    .await;
    let (_, claims) = verified_id_token(&server, &client, id_token_of(&tokens)).await;
    assert!(claims.get("nonce").is_none(), "{claims}");
}

/// The sign-in, then `extra` after `advance` seconds: returns the first and second
/// auth_time, after checking that the second request stops at the login page.
async fn reauthentication(extra: &[(&str, &str)], advance: i64) -> (i64, i64, i64) {
    let (server, client, _) = setup().await;
    let browser = server.browser();
    let (_, first) = authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "one"), ("nonce", "n1")],
        Some((USER, PW)),
    )
    .await;
    let (_, first) = verified_id_token(&server, &client, id_token_of(&first)).await;
    server.clock.advance(advance);

    let mut params = vec![("scope", "openid"), ("state", "two"), ("nonce", "n2")];
    params.extend_from_slice(extra);
    // Without credentials the browser must stop at the login page.
    let stopped = browser
        .authorize(
            &authorize_url(&server, &client, &Pkce::new(), &params),
            None,
            Some(ConsentChoice::Allow),
        )
        .await;
    assert!(
        matches!(stopped, Err(Stop::Login { .. })),
        "expected a fresh login, got {stopped:?}"
    );
    let (_, second) =
        authorize_and_redeem(&server, &browser, &client, &params, Some((USER, PW))).await;
    let (_, second) = verified_id_token(&server, &client, id_token_of(&second)).await;
    assert_eq!(second["nonce"], "n2");
    (
        int(&first, "auth_time"),
        int(&second, "auth_time"),
        server.now(),
    )
}

/// oidcc-max-age-1: a session older than max_age forces a new login, and auth_time
/// reports it.
#[tokio::test]
async fn oidcc_max_age_1() {
    let (first, second, now) = reauthentication(&[("max_age", "1")], 5).await;
    assert!(second > first, "auth_time {second} after {first}");
    assert_eq!(second, now);
}

/// oidcc-max-age-10000: a recent enough session is reused; auth_time stays.
#[tokio::test]
async fn oidcc_max_age_10000() {
    let (server, client, _) = setup().await;
    let browser = server.browser();
    let (_, first) = authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "one")],
        Some((USER, PW)),
    )
    .await;
    let (_, first) = verified_id_token(&server, &client, id_token_of(&first)).await;
    server.clock.advance(5);
    // No credentials: a login page would stop the browser.
    let (_, second) = authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "two"), ("max_age", "10000")],
        None,
    )
    .await;
    let (_, second) = verified_id_token(&server, &client, id_token_of(&second)).await;
    assert_eq!(second["auth_time"], first["auth_time"]);
    assert!(int(&second, "iat") > int(&first, "iat"));
}

/// oidcc-prompt-login: prompt=login forces a new login even with a session, and
/// auth_time is updated.
#[tokio::test]
async fn oidcc_prompt_login() {
    let (first, second, now) = reauthentication(&[("prompt", "login")], 5).await;
    assert!(second > first, "auth_time {second} after {first}");
    assert_eq!(second, now);
}

/// oidcc-prompt-none-not-logged-in: login_required at the redirect URI, with state.
#[tokio::test]
async fn oidcc_prompt_none_not_logged_in() {
    let (server, client, _) = setup().await;
    let cb = server
        .browser()
        .authorize(
            &authorize_url(
                &server,
                &client,
                &Pkce::new(),
                &[("scope", "openid"), ("state", "pn"), ("prompt", "none")],
            ),
            None,
            None,
        )
        .await
        .expect("an error redirect, not a page");
    assert_eq!(cb.get("error"), Some("login_required"));
    assert_eq!(cb.get("state"), Some("pn"));
    assert_eq!(cb.get("code"), None);
}

/// oidcc-prompt-none-logged-in: a signed-in, consented user gets a code without any page.
#[tokio::test]
async fn oidcc_prompt_none_logged_in() {
    let (server, client, user_id) = setup().await;
    let browser = server.browser();
    authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "one")],
        Some((USER, PW)),
    )
    .await;
    let (_, tokens) = authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "two"), ("prompt", "none")],
        None,
    )
    .await;
    let (_, claims) = verified_id_token(&server, &client, id_token_of(&tokens)).await;
    assert_eq!(claims["sub"], user_id.as_str());
}

/// oidcc-codereuse: a second redemption fails with invalid_grant, and the tokens of the
/// first stop working.
#[tokio::test]
async fn oidcc_codereuse() {
    let (server, client, _) = setup().await;
    let pkce = Pkce::new();
    let cb = server
        .browser()
        .authorize(
            &authorize_url(
                &server,
                &client,
                &pkce,
                &[("scope", "openid"), ("state", "st"), ("nonce", "n")],
            ),
            Some((USER, PW)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    let (status, first) = exchange(&server, &client, cb.code(), &pkce.verifier).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let access = access_token_of(&first);
    assert_eq!(server.introspect(&client, access).await["active"], true);

    let (status, again) = exchange(&server, &client, cb.code(), &pkce.verifier).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{again}");
    assert_eq!(again["error"], "invalid_grant");
    assert!(again.get("id_token").is_none());
    assert_eq!(server.introspect(&client, access).await["active"], false);
    let (status, _) = server.bearer_get("/userinfo", access, &[]).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
}

/// CheckMatchingStateParameter and ValidateIssIfPresentInAuthorizationResponse, run by
/// every basic-plan module: state comes back byte for byte, iss is the issuer.
#[tokio::test]
async fn oidcc_server_state_and_iss_in_authorization_response() {
    let (server, client, _) = setup().await;
    let state = "xyz ABC/+=&?%20é~";
    let cb = server
        .browser()
        .authorize(
            &authorize_url(
                &server,
                &client,
                &Pkce::new(),
                &[("scope", "openid"), ("state", state)],
            ),
            Some((USER, PW)),
            Some(ConsentChoice::Allow),
        )
        .await
        .expect("callback");
    assert!(cb.url.starts_with(CALLBACK), "{}", cb.url);
    assert_eq!(cb.mode, "query");
    assert_eq!(cb.get("state"), Some(state));
    assert_eq!(cb.get("iss"), Some(server.issuer.as_str()));
    assert!(cb.get("code").is_some_and(|c| !c.is_empty()));
}

/// oidcc-refresh-token: refreshing an openid grant returns a fresh ID token for the same
/// user and authentication event, issued now.
#[tokio::test]
async fn oidcc_refresh_token() {
    let (server, client, user_id) = setup().await;
    let (_, tokens) = authorize_and_redeem(
        &server,
        &server.browser(),
        &client,
        &[("scope", "openid"), ("state", "st"), ("nonce", "n")],
        Some((USER, PW)),
    )
    .await;
    let (_, first) = verified_id_token(&server, &client, id_token_of(&tokens)).await;
    let refresh = tokens["refresh_token"]
        .as_str()
        .expect("refresh token (policy always)");
    server.clock.advance(30);
    let (status, _, refreshed) = server
        .post_form(
            "/oauth2/token",
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
            client.basic(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{refreshed}");
    let (_, second) = verified_id_token(&server, &client, id_token_of(&refreshed)).await;
    assert_ne!(id_token_of(&refreshed), id_token_of(&tokens));
    assert_eq!(second["sub"], user_id.as_str());
    assert_eq!(second["sub"], first["sub"]);
    assert_eq!(second["iss"], first["iss"]);
    assert_eq!(second["aud"], first["aud"]);
    assert_eq!(second["auth_time"], first["auth_time"]);
    assert_eq!(int(&second, "iat"), server.now());
    assert!(int(&second, "iat") > int(&first, "iat"));
    assert_eq!(
        second["at_hash"],
        sha256_half(access_token_of(&refreshed)).as_str()
    );
}

/// oidcc-userinfo-get with scope openid only: the subject (and Tessera's tenant), no
/// profile or email claims; sub equals the ID token's.
#[tokio::test]
async fn oidcc_userinfo_get() {
    let (server, client, user_id) = setup().await;
    let (_, tokens) = authorize_and_redeem(
        &server,
        &server.browser(),
        &client,
        &[("scope", "openid"), ("state", "st")],
        Some((USER, PW)),
    )
    .await;
    let (_, claims) = verified_id_token(&server, &client, id_token_of(&tokens)).await;
    let (status, info) = server
        .bearer_get("/userinfo", access_token_of(&tokens), &[])
        .await;
    assert_eq!(status, StatusCode::OK, "{info}");
    let keys: HashSet<&str> = info
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, HashSet::from(["sub", "tenant"]), "{info}");
    assert_eq!(info["sub"], claims["sub"]);
    assert_eq!(info["sub"], user_id.as_str());
    assert_eq!(info["tenant"], "default");
}

/// oidcc-scope-profile, oidcc-scope-email, oidcc-scope-all, oidcc-userinfo-post-header and
/// oidcc-userinfo-post-body: with profile and email granted, userinfo returns their claims
/// however the token is presented.
#[tokio::test]
async fn oidcc_scope_all_and_userinfo_post() {
    let (server, client, user_id) = setup().await;
    let (_, tokens) = authorize_and_redeem(
        &server,
        &server.browser(),
        &client,
        &[("scope", "openid profile email"), ("state", "st")],
        Some((USER, PW)),
    )
    .await;
    let access = access_token_of(&tokens);
    let (_, id_claims) = verified_id_token(&server, &client, id_token_of(&tokens)).await;
    let check = |info: &Value| {
        assert_eq!(info["sub"], user_id.as_str(), "{info}");
        assert_eq!(info["sub"], id_claims["sub"]);
        assert_eq!(info["preferred_username"], USER);
        assert_eq!(info["name"], format!("{USER} Example").as_str());
        assert_eq!(info["email"], format!("{USER}@example.com").as_str());
        assert!(info["email_verified"].is_boolean(), "{info}");
    };
    let (status, info) = server.bearer_get("/userinfo", access, &[]).await;
    assert_eq!(status, StatusCode::OK, "{info}");
    check(&info);

    let resp = server
        .http()
        .post(server.url("/userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);
    check(&resp.json().await.expect("json"));

    let resp = server
        .http()
        .post(server.url("/userinfo"))
        .form(&[("access_token", access)])
        .send()
        .await
        .expect("POST");
    assert_eq!(resp.status(), StatusCode::OK);
    check(&resp.json().await.expect("json"));
}

/// oidcc-rp-initiated-logout: id_token_hint + a registered post_logout_redirect_uri +
/// state; after the user confirms, a 303 to that URI with the state, and the SSO session
/// is gone.
#[tokio::test]
async fn oidcc_rp_initiated_logout() {
    let (server, client, _) = setup().await;
    let browser = server.browser();
    let (_, tokens) = authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "st"), ("nonce", "n")],
        Some((USER, PW)),
    )
    .await;
    let end_session = discovery(&server).await["end_session_endpoint"]
        .as_str()
        .expect("end_session_endpoint")
        .to_owned();
    let logout_url = with_query(
        &end_session,
        &[
            ("id_token_hint", id_token_of(&tokens)),
            ("post_logout_redirect_uri", LOGGED_OUT),
            ("state", "bye-42"),
        ],
    );
    let resp = browser.get(&logout_url).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let page = resp.text().await.expect("body");
    let form = Form::with_action(&page, "/logout").expect("logout confirmation form");
    assert!(
        form.field("csrf_token").is_some_and(|t| !t.is_empty()),
        "the form carries a CSRF token"
    );

    // A forged submission (wrong CSRF token) neither signs out nor redirects.
    let mut forged = form.clone();
    forged.set("csrf_token", "forged");
    let resp = browser.post("/logout", &forged.fields).await;
    assert!(resp.status().is_client_error(), "{}", resp.status());
    assert!(resp.headers().get("location").is_none());

    let resp = browser.post("/logout", &form.fields).await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    let location = resp
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .expect("location")
        .to_owned();
    let url = url::Url::parse(&location).expect("absolute URL");
    assert_eq!(
        format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or(""),
            url.path()
        ),
        LOGGED_OUT
    );
    let pairs: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    assert_eq!(pairs, vec![("state".to_owned(), "bye-42".to_owned())]);

    // The SSO session is over: the next authorization asks for a login.
    let next = browser
        .authorize(
            &authorize_url(
                &server,
                &client,
                &Pkce::new(),
                &[("scope", "openid"), ("state", "after")],
            ),
            None,
            Some(ConsentChoice::Allow),
        )
        .await;
    assert!(
        matches!(next, Err(Stop::Login { .. })),
        "expected the login page, got {next:?}"
    );
}

/// oidcc-rp-initiated-logout-bad-post-logout-redirect-uri: an unregistered URI yields an
/// error page, never a redirect, and the session is left alone.
#[tokio::test]
async fn oidcc_rp_initiated_logout_bad_post_logout_redirect_uri() {
    let (server, client, _) = setup().await;
    let browser = server.browser();
    let (_, tokens) = authorize_and_redeem(
        &server,
        &browser,
        &client,
        &[("scope", "openid"), ("state", "st")],
        Some((USER, PW)),
    )
    .await;
    for bad in [
        "https://evil.example/logged-out",
        "https://rp.example.com/logged-out/extra",
        CALLBACK,
    ] {
        let resp = browser
            .get(&with_query(
                &server.url("/logout"),
                &[
                    ("id_token_hint", id_token_of(&tokens)),
                    ("post_logout_redirect_uri", bad),
                    ("state", "bye"),
                ],
            ))
            .await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert!(resp.headers().get("location").is_none(), "{bad}");
        let page = resp.text().await.expect("body");
        assert!(
            Form::with_action(&page, "/logout").is_none(),
            "no confirmation form for {bad}"
        );
    }
    // Still signed in: prompt=none yields a code.
    let cb = browser
        .authorize(
            &authorize_url(
                &server,
                &client,
                &Pkce::new(),
                &[("scope", "openid"), ("state", "still"), ("prompt", "none")],
            ),
            None,
            None,
        )
        .await
        .expect("callback");
    assert!(cb.get("code").is_some(), "{}", cb.url);
}

// ---------------------------------------------------------------------------------------
// Snapshots
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn discovery_document_snapshot() {
    let server = TestServer::start().await;
    let text = server
        .http()
        .get(server.url("/.well-known/openid-configuration"))
        .send()
        .await
        .expect("GET")
        .text()
        .await
        .expect("body");
    let doc: Value = serde_json::from_str(&text.replace(&server.issuer, "[issuer]")).expect("JSON");
    insta::assert_json_snapshot!("discovery_document", doc);
}

#[tokio::test]
async fn jwks_shape_snapshot() {
    let server = TestServer::start().await;
    let mut jwks = get_json(&server, &server.url("/.well-known/jwks.json")).await;
    if let Some(keys) = jwks["keys"].as_array_mut() {
        keys.sort_by_key(|k| k["alg"].as_str().unwrap_or("").to_owned());
    }
    insta::assert_json_snapshot!("jwks_shape", jwks, {
        ".keys[].kid" => "[kid]",
        ".keys[].n" => "[n]",
        ".keys[].e" => "[e]",
        ".keys[].x" => "[x]",
        ".keys[].y" => "[y]",
    });
}
