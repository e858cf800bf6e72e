//! The behaviour every [`Store`] backend must show. Backends run [`run_all`] from their own
//! tests against a fresh store; each check uses its own ids so checks do not interfere.

use std::sync::Arc;

use tessera_core::client::{AccessTokenFormat, Client, ClientAuthMethod, GrantType, RefreshPolicy};
use tessera_core::model::{
    AccessToken, AuthorizationCode, Consent, Grant, Hash, RefreshToken, Session, Tenant,
    TokenState, User, DEFAULT_TENANT,
};
use tessera_core::ScopeSet;

use crate::{Issuance, Store, StoreError, Swap};

const NOW: i64 = 1_800_000_000;

fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        tessera_crypto::random_id(9).unwrap_or_default()
    )
}

fn hash() -> Hash {
    let mut h = [0u8; 32];
    let _ = tessera_crypto::fill_random(&mut h);
    h
}

pub fn sample_client(id: &str) -> Client {
    Client {
        id: id.to_owned(),
        name: format!("App {id}"),
        secret_hash: Some(hash()),
        public: false,
        auth_methods: vec![ClientAuthMethod::ClientSecretBasic],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        redirect_uris: vec!["https://app.example/cb".into()],
        scopes: ScopeSet::parse("openid offline_access").unwrap_or_default(),
        audiences: vec!["https://api.example".into()],
        refresh_policy: RefreshPolicy::Always,
        access_token_format: AccessTokenFormat::Opaque,
        access_token_ttl: 3600,
        refresh_token_ttl: Some(86400),
        require_pkce: true,
        skip_consent: false,
        tenant: None,
        owner: None,
        created_at: NOW,
        id_token_signed_response_alg: "ES256".into(),
        post_logout_redirect_uris: vec!["https://app.example/bye".into()],
    }
}

fn grant(client_id: &str, user_id: &str) -> Grant {
    Grant {
        id: unique("g"),
        client_id: client_id.to_owned(),
        user_id: Some(user_id.to_owned()),
        tenant: Some(DEFAULT_TENANT.to_owned()),
        scope: ScopeSet::parse("openid offline_access").unwrap_or_default(),
        audiences: vec!["https://api.example".into()],
        auth_time: Some(NOW - 5),
        sid: Some(unique("sid")),
        created_at: NOW,
    }
}

fn issuance(grant: &Grant, new_grant: bool) -> Issuance {
    let access = AccessToken {
        hash: hash(),
        grant_id: grant.id.clone(),
        client_id: grant.client_id.clone(),
        user_id: grant.user_id.clone(),
        tenant: grant.tenant.clone(),
        scope: grant.scope.clone(),
        audiences: grant.audiences.clone(),
        issued_at: NOW,
        expires_at: NOW + 3600,
        revoked: false,
    };
    let refresh = RefreshToken {
        hash: hash(),
        grant: grant.clone(),
        access_token_hash: Some(access.hash),
        issued_at: NOW,
        expires_at: NOW + 86400,
        state: TokenState::Active,
        grant_revoked: false,
        rotation: None,
    };
    Issuance {
        new_grant: new_grant.then(|| grant.clone()),
        standing_grant: false,
        access,
        refresh: Some(refresh),
        audit: Vec::new(),
    }
}

/// Sets when the issuance's access token and its refresh token (if any) expire.
fn expiring(mut iss: Issuance, access: i64, refresh: i64) -> Issuance {
    iss.access.expires_at = access;
    if let Some(r) = iss.refresh.as_mut() {
        r.expires_at = refresh;
    }
    iss
}

fn code(grant: &Grant) -> AuthorizationCode {
    AuthorizationCode {
        hash: hash(),
        grant: grant.clone(),
        redirect_uri: "https://app.example/cb".into(),
        redirect_uri_sent: true,
        nonce: Some("n-0S6_WzA2Mj".into()),
        code_challenge: Some("E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into()),
        expires_at: NOW + 300,
        used: false,
    }
}

async fn user(store: &dyn Store) -> User {
    let u = User {
        id: unique("u"),
        tenant: DEFAULT_TENANT.into(),
        username: unique("alice"),
        email: Some("alice@example.com".into()),
        name: Some("Alice".into()),
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
        created_at: NOW,
    };
    must(store.create_user(&u).await, "create_user");
    u
}

async fn client(store: &dyn Store) -> Client {
    let c = sample_client(&unique("c"));
    must(store.create_client(&c).await, "create_client");
    c
}

fn must<T>(r: Result<T, StoreError>, what: &str) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic_with(&format!("{what} failed: {e}")),
    }
}

#[allow(clippy::panic)]
fn panic_with(msg: &str) -> ! {
    panic!("{msg}")
}

macro_rules! check {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            panic_with(&format!($($msg)+));
        }
    };
}

/// Runs every check. `store` must be freshly migrated.
pub async fn run_all(store: Arc<dyn Store>) {
    tenants(&*store).await;
    users(&*store).await;
    clients(&*store).await;
    sessions_and_consents(&*store).await;
    code_redemption(&*store).await;
    refresh_rotation(&*store).await;
    a_client_and_its_token_are_read_together(&*store).await;
    grant_revocation(&*store).await;
    client_deletion_revokes_everything(&*store).await;
    parallel_redemption_has_one_winner(store.clone()).await;
    parallel_rotation_has_one_winner(store.clone()).await;
    refresh_retry_reissues_only_for_an_unused_successor(&*store).await;
    hostile_keys_find_nothing(&*store).await;
    parallel_retries_have_one_winner(store.clone()).await;
    signing_keys(&*store).await;
    audit_trail(&*store).await;
    audit_retention(&*store).await;
    audit_rides_with_its_issuance(&*store).await;
    a_failing_step_undoes_only_itself(store.clone()).await;
    a_grant_outlives_every_token_issued_under_it(&*store).await;
    a_standing_grant_is_stored_once_and_lives_with_its_client(&*store).await;
    janitor_prunes_only_dead_rows(&*store).await;
    self_service::run(&*store).await;
}

mod self_service;
/// A step that fails half-way (its grant and audit event written, then its access token
/// refused as a duplicate) leaves nothing behind, and the steps running at the same time
/// (on SQLite: committed in the same batch) are all stored.
async fn a_failing_step_undoes_only_itself(store: Arc<dyn Store>) {
    use tessera_core::model::AuditEvent;
    let u = user(&*store).await;
    let c = client(&*store).await;
    let first = issuance(&grant(&c.id, &u.id), true);
    must(store.issue(&first).await, "issue");
    let marker = unique("doomed");
    let far = NOW + 30_000_000;
    let mut doomed = issuance(&grant(&c.id, &u.id), true);
    doomed.access.hash = first.access.hash;
    doomed.audit = vec![AuditEvent {
        at: far,
        kind: marker.clone(),
        tenant: None,
        actor: None,
        client_id: Some(c.id.clone()),
        ip: None,
        request_id: None,
        detail: None,
    }];
    let neighbours: Vec<Issuance> = (0..24)
        .map(|_| issuance(&grant(&c.id, &u.id), true))
        .collect();
    let mut tasks = Vec::new();
    for (i, iss) in neighbours.iter().enumerate() {
        let (step_store, iss) = (store.clone(), iss.clone());
        tasks.push(tokio::spawn(async move { step_store.issue(&iss).await }));
        if i == neighbours.len() / 2 {
            let (store, doomed) = (store.clone(), doomed.clone());
            tasks.push(tokio::spawn(async move {
                match store.issue(&doomed).await {
                    Ok(()) => Err(StoreError::Internal("the duplicate was stored".into())),
                    Err(_) => Ok(()),
                }
            }));
        }
    }
    for task in tasks {
        match task.await {
            Ok(result) => must(result, "a step of the batch"),
            Err(e) => panic_with(&format!("task failed: {e}")),
        }
    }
    for iss in &neighbours {
        check!(
            must(
                store
                    .get_refresh_token(&iss.refresh.as_ref().map(|r| r.hash).unwrap_or_default())
                    .await,
                "get_refresh_token"
            )
            .is_some(),
            "a neighbour of the failing step was stored"
        );
    }
    let events = must(store.list_audit(far, 100).await, "list_audit");
    check!(
        !events.iter().any(|e| e.kind == marker),
        "the failing step's audit event was undone"
    );
}

/// An issuance's audit events are stored with its tokens, and not at all when the step
/// stores nothing (a code already redeemed).
async fn audit_rides_with_its_issuance(store: &dyn Store) {
    use tessera_core::model::AuditEvent;
    let u = user(store).await;
    let c = client(store).await;
    let marker = unique("issued");
    let far = NOW + 20_000_000;
    let event = |kind: &str| AuditEvent {
        at: far,
        kind: format!("{marker}.{kind}"),
        tenant: Some(DEFAULT_TENANT.into()),
        actor: Some(u.id.clone()),
        client_id: Some(c.id.clone()),
        ip: None,
        request_id: None,
        detail: None,
    };
    let g = grant(&c.id, &u.id);
    let mut issued = issuance(&g, true);
    issued.audit = vec![event("issue")];
    must(store.issue(&issued).await, "issue");
    let code = code(&g);
    must(store.insert_code(&code).await, "insert_code");
    let mut first = issuance(&g, false);
    first.audit = vec![event("redeem")];
    check!(
        must(
            store.redeem_code(&code.hash, &first, NOW).await,
            "redeem_code"
        ) == Swap::Done,
        "first redemption wins"
    );
    let mut second = issuance(&g, false);
    second.audit = vec![event("replay")];
    check!(
        must(
            store.redeem_code(&code.hash, &second, NOW).await,
            "redeem_code"
        ) == Swap::AlreadyUsed,
        "second redemption loses"
    );
    let got = must(store.list_audit(far, 100).await, "list_audit");
    let kinds: Vec<&str> = got
        .iter()
        .filter_map(|e| e.kind.strip_prefix(&marker))
        .collect();
    check!(
        kinds == [".issue", ".redeem"],
        "events of stored issuances only, in order: {kinds:?}"
    );
    check!(
        must(
            store.get_access_token(&issued.access.hash).await,
            "get_access_token"
        )
        .is_some(),
        "the tokens were stored with their event"
    );
}

async fn audit_trail(store: &dyn Store) {
    use tessera_core::model::AuditEvent;
    let marker = unique("kind");
    let event = |at: i64, n: u32| AuditEvent {
        at,
        kind: format!("{marker}.{n}"),
        tenant: Some(DEFAULT_TENANT.into()),
        actor: Some("user-1".into()),
        client_id: Some("client-1".into()),
        ip: Some("127.0.0.1".into()),
        request_id: Some(format!("req-{n}")),
        detail: Some("grant_type=authorization_code".into()),
    };
    let far = NOW + 10_000_000;
    must(
        store
            .append_audit(&[event(far, 1), event(far + 1, 2)])
            .await,
        "append_audit",
    );
    must(
        store.append_audit(&[event(far + 2, 3)]).await,
        "append_audit",
    );
    let got = must(store.list_audit(far + 1, 10).await, "list_audit");
    let mine: Vec<_> = got.iter().filter(|e| e.kind.starts_with(&marker)).collect();
    check!(mine.len() == 2, "since filters and keeps order: {mine:?}");
    check!(
        *mine[0] == event(far + 1, 2) && *mine[1] == event(far + 2, 3),
        "events round trip in order"
    );
    check!(
        must(store.list_audit(far, 1).await, "list_audit").len() == 1,
        "limit is honoured"
    );
}

async fn janitor_prunes_only_dead_rows(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    // Far in the future relative to every other check, so only this check's rows are
    // old enough... all rows of other checks expire before LATER too; only ours matter.
    let later = NOW + 100_000;
    let live_grant = grant(&c.id, &u.id);
    let live = expiring(issuance(&live_grant, true), later + 3600, later + 86400);
    must(store.issue(&live).await, "issue live");
    let dead_grant = grant(&c.id, &u.id);
    let dead = issuance(&dead_grant, true);
    must(store.issue(&dead).await, "issue dead");
    let rotated_grant = grant(&c.id, &u.id);
    let mut first = issuance(&rotated_grant, true);
    if let Some(r) = first.refresh.as_mut() {
        r.expires_at = later + 86400;
    }
    must(store.issue(&first).await, "issue");
    let second = expiring(issuance(&rotated_grant, false), later + 3600, later + 86400);
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    must(
        store.rotate_refresh_token(&old, &second, None, NOW).await,
        "rotate",
    );

    let mut pruned = tessera_core::model::Pruned::default();
    loop {
        let p = must(store.prune_expired(later, 0, 2).await, "prune_expired");
        check!(
            p.access_tokens <= 2 && p.refresh_tokens <= 2 && p.grants <= 2,
            "batches are bounded: {p:?}"
        );
        if p.total() == 0 {
            break;
        }
        pruned.access_tokens += p.access_tokens;
        pruned.refresh_tokens += p.refresh_tokens;
    }
    check!(
        pruned.access_tokens >= 1 && pruned.refresh_tokens >= 1,
        "expired rows pruned: {pruned:?}"
    );
    let dead_at = must(store.get_access_token(&dead.access.hash).await, "get");
    check!(dead_at.is_none(), "expired access token pruned");
    let live_at = must(store.get_access_token(&live.access.hash).await, "get");
    check!(live_at.is_some(), "live access token kept");
    let live_rt = live.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    check!(
        must(store.get_refresh_token(&live_rt).await, "get").is_some(),
        "live refresh token kept"
    );
    let rotated = must(store.get_refresh_token(&old).await, "get");
    check!(
        rotated.map(|r| r.state) == Some(TokenState::Rotated),
        "a rotated, unexpired refresh token is kept: it detects reuse"
    );
}

async fn signing_keys(store: &dyn Store) {
    use tessera_core::keys::{KeyRetirement, SigningKeyRecord};
    let first = SigningKeyRecord {
        kid: unique("k"),
        alg: "ES256".into(),
        sealed: vec![1, 2, 3],
        created_at: NOW,
        activates_at: NOW,
        retires_at: None,
        publish_until: None,
    };
    must(
        store
            .save_signing_keys(std::slice::from_ref(&first), &[])
            .await,
        "save_signing_keys",
    );
    let second = SigningKeyRecord {
        kid: unique("k"),
        activates_at: NOW + 60,
        ..first.clone()
    };
    let retire = KeyRetirement {
        kid: first.kid.clone(),
        retires_at: NOW + 60,
        publish_until: NOW + 3660,
    };
    must(
        store
            .save_signing_keys(std::slice::from_ref(&second), &[retire])
            .await,
        "rotate keys",
    );
    let keys = must(store.list_signing_keys().await, "list_signing_keys");
    let got_first = keys.iter().find(|k| k.kid == first.kid);
    check!(
        got_first.map(|k| (k.retires_at, k.publish_until))
            == Some((Some(NOW + 60), Some(NOW + 3660))),
        "old key retired: {got_first:?}"
    );
    check!(keys.contains(&second), "new key stored as given");
    check!(
        matches!(
            store
                .save_signing_keys(std::slice::from_ref(&second), &[])
                .await,
            Err(StoreError::Conflict(_))
        ),
        "duplicate kid is a Conflict"
    );
}

async fn tenants(store: &dyn Store) {
    must(store.ping().await, "ping");
    check!(
        must(store.get_tenant(DEFAULT_TENANT).await, "get_tenant").is_some(),
        "the default tenant must exist after migration"
    );
    let t = Tenant {
        id: unique("acme").to_lowercase(),
        created_at: NOW,
    };
    must(store.create_tenant(&t).await, "create_tenant");
    check!(
        matches!(store.create_tenant(&t).await, Err(StoreError::Conflict(_))),
        "duplicate tenant must be a Conflict"
    );
    check!(
        must(store.get_tenant(&t.id).await, "get_tenant") == Some(t.clone()),
        "tenant round trip"
    );
    check!(
        must(store.list_tenants().await, "list_tenants")
            .iter()
            .any(|x| x.id == t.id),
        "list_tenants lists the new tenant"
    );
}

async fn users(store: &dyn Store) {
    let u = user(store).await;
    check!(
        must(store.get_user(&u.id).await, "get_user").as_ref() == Some(&u),
        "user round trip keeps every field, password hash included"
    );
    check!(
        must(
            store.find_user(DEFAULT_TENANT, &u.username).await,
            "find_user"
        )
        .map(|x| x.id)
            == Some(u.id.clone()),
        "find_user by tenant and username"
    );
    let mut dup = u.clone();
    dup.id = unique("u");
    check!(
        matches!(store.create_user(&dup).await, Err(StoreError::Conflict(_))),
        "same username in the same tenant is a Conflict"
    );
    let other = Tenant {
        id: unique("other").to_lowercase(),
        created_at: NOW,
    };
    must(store.create_tenant(&other).await, "create_tenant");
    dup.tenant = other.id.clone();
    must(
        store.create_user(&dup).await,
        "same username in another tenant",
    );
    check!(
        must(store.find_user(&other.id, &u.username).await, "find_user").map(|x| x.id)
            == Some(dup.id.clone()),
        "users are isolated per tenant"
    );
    let mut orphan = u.clone();
    orphan.id = unique("u");
    orphan.tenant = "no-such-tenant".into();
    check!(
        matches!(
            store.create_user(&orphan).await,
            Err(StoreError::NotFound(_))
        ),
        "a user in an unknown tenant is NotFound"
    );
}

async fn clients(store: &dyn Store) {
    let c = client(store).await;
    let got = must(store.get_client(&c.id).await, "get_client");
    check!(got.is_some(), "client round trip");
    let got = got.unwrap_or_else(|| sample_client("x"));
    check!(got.secret_hash == c.secret_hash, "secret hash kept");
    check!(
        got.redirect_uris == c.redirect_uris && got.scopes == c.scopes,
        "settings kept"
    );
    check!(
        matches!(store.create_client(&c).await, Err(StoreError::Conflict(_))),
        "duplicate client id is a Conflict"
    );
    let new_hash = hash();
    check!(
        must(
            store.set_client_secret(&c.id, &new_hash).await,
            "set_client_secret"
        ),
        "rotate existing"
    );
    check!(
        must(store.get_client(&c.id).await, "get_client").and_then(|c| c.secret_hash)
            == Some(new_hash),
        "secret rotated"
    );
    check!(
        !must(
            store.set_client_secret("nope", &new_hash).await,
            "set_client_secret"
        ),
        "rotating an unknown client reports false"
    );
    // A lookup after a change sees the change, however often the client was read before.
    let mut changed =
        must(store.get_client(&c.id).await, "get_client").unwrap_or_else(|| sample_client("x"));
    changed.redirect_uris = vec!["https://changed.example/cb".into()];
    changed.skip_consent = !changed.skip_consent;
    check!(
        must(store.update_client(&changed).await, "update_client"),
        "update existing"
    );
    let got = must(store.get_client(&c.id).await, "get_client");
    check!(
        got.as_ref()
            .map(|g| (&g.redirect_uris, g.skip_consent, g.secret_hash))
            == Some((&changed.redirect_uris, changed.skip_consent, Some(new_hash))),
        "an updated client is read back as updated, with its secret"
    );
    check!(
        must(store.list_clients().await, "list_clients")
            .iter()
            .any(|x| x.id == c.id),
        "list_clients"
    );
}

async fn sessions_and_consents(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let s = Session {
        hash: hash(),
        sid: unique("sid"),
        user_id: u.id.clone(),
        tenant: DEFAULT_TENANT.into(),
        auth_time: NOW,
        expires_at: NOW + 3600,
    };
    must(store.create_session(&s).await, "create_session");
    check!(
        must(store.get_session(&s.hash).await, "get_session") == Some(s.clone()),
        "session round trip"
    );
    must(store.delete_session(&s.hash).await, "delete_session");
    check!(
        must(store.get_session(&s.hash).await, "get_session").is_none(),
        "session deleted"
    );

    check!(
        must(store.get_consent(&u.id, &c.id).await, "get_consent").is_none(),
        "no consent yet"
    );
    let mut consent = Consent {
        user_id: u.id.clone(),
        client_id: c.id.clone(),
        scope: ScopeSet::parse("openid").unwrap_or_default(),
        granted_at: NOW,
    };
    must(store.save_consent(&consent).await, "save_consent");
    consent.scope = ScopeSet::parse("openid offline_access").unwrap_or_default();
    must(
        store.save_consent(&consent).await,
        "save_consent again replaces",
    );
    check!(
        must(store.get_consent(&u.id, &c.id).await, "get_consent") == Some(consent.clone()),
        "consent replaced"
    );
}

async fn code_redemption(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let g = grant(&c.id, &u.id);
    let code = code(&g);
    must(store.insert_code(&code).await, "insert_code");
    check!(
        must(store.get_code(&code.hash).await, "get_code") == Some(code.clone()),
        "code round trip"
    );
    let iss = issuance(&g, true);
    check!(
        must(
            store.redeem_code(&code.hash, &iss, NOW).await,
            "redeem_code"
        ) == Swap::Done,
        "first redemption wins"
    );
    check!(
        must(store.get_code(&code.hash).await, "get_code").map(|c| c.used) == Some(true),
        "code marked used"
    );
    let at = must(
        store.get_access_token(&iss.access.hash).await,
        "get_access_token",
    );
    check!(
        at.as_ref() == Some(&iss.access),
        "access token stored as issued: {at:?}"
    );
    let rt = must(
        store
            .get_refresh_token(&iss.refresh.as_ref().map(|r| r.hash).unwrap_or_default())
            .await,
        "get_refresh_token",
    );
    check!(
        rt.as_ref() == iss.refresh.as_ref(),
        "refresh token stored as issued: {rt:?}"
    );
    let again = issuance(&g, true);
    check!(
        must(
            store.redeem_code(&code.hash, &again, NOW).await,
            "redeem_code"
        ) == Swap::AlreadyUsed,
        "second redemption loses"
    );
    check!(
        must(store.get_access_token(&again.access.hash).await, "get").is_none(),
        "a losing redemption stores nothing"
    );
}

async fn refresh_rotation(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let g = grant(&c.id, &u.id);
    let first = issuance(&g, true);
    must(store.issue(&first).await, "issue");
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let second = issuance(&g, false);
    check!(
        must(
            store
                .rotate_refresh_token(&old, &second, None, NOW + 1)
                .await,
            "rotate"
        ) == Swap::Done,
        "rotation of an active token"
    );
    let old_rt = must(store.get_refresh_token(&old).await, "get_refresh_token");
    check!(
        old_rt.map(|r| r.state) == Some(TokenState::Rotated),
        "old refresh token rotated"
    );
    let old_at = must(
        store.get_access_token(&first.access.hash).await,
        "get_access_token",
    );
    check!(
        old_at.map(|a| a.revoked) == Some(true),
        "old access token revoked with it"
    );
    let new_at = must(
        store.get_access_token(&second.access.hash).await,
        "get_access_token",
    );
    check!(
        new_at.map(|a| a.revoked) == Some(false),
        "new access token live"
    );
    let third = issuance(&g, false);
    check!(
        must(
            store
                .rotate_refresh_token(&old, &third, None, NOW + 2)
                .await,
            "rotate"
        ) == Swap::AlreadyUsed,
        "rotating a rotated token stores nothing"
    );
    check!(
        must(store.get_access_token(&third.access.hash).await, "get").is_none(),
        "nothing stored for the loser"
    );
}

/// The combined reads answer exactly what the single reads answer, each half on its own
/// (an unknown client or token leaves the other half found), and see every write made
/// before them.
async fn a_client_and_its_token_are_read_together(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let g = grant(&c.id, &u.id);
    let first = issuance(&g, true);
    must(store.issue(&first).await, "issue");
    let at = first.access.hash;
    let rt = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();

    let (client_read, token_read) = must(
        store.get_client_and_access_token(&c.id, &at).await,
        "get_client_and_access_token",
    );
    let fields = |x: Option<Client>| x.map(|x| (x.id, x.secret_hash, x.redirect_uris, x.scopes));
    let single = must(store.get_client(&c.id).await, "get_client");
    let (client_read, single) = (fields(client_read), fields(single));
    check!(
        client_read.is_some() && client_read == single && client_read == fields(Some(c.clone())),
        "the client as get_client reads it, with its secret hash"
    );
    let alone = must(store.get_access_token(&at).await, "get_access_token");
    check!(
        token_read.is_some() && token_read == alone,
        "the access token as get_access_token reads it"
    );
    let (nobody, token_read) = must(
        store
            .get_client_and_access_token("no-such-client", &at)
            .await,
        "read",
    );
    check!(
        nobody.is_none() && token_read.is_some(),
        "unknown client, known token"
    );
    let (client_read, nothing) = must(
        store.get_client_and_access_token(&c.id, &hash()).await,
        "read",
    );
    check!(
        client_read.is_some() && nothing.is_none(),
        "known client, unknown token"
    );

    let found = must(
        store.get_client_and_refresh_token(&c.id, &rt).await,
        "get_client_and_refresh_token",
    );
    check!(found.client.is_some(), "the refresh token's client");
    let alone = must(store.get_refresh_token(&rt).await, "get_refresh_token");
    check!(
        found.token.is_some() && found.token == alone,
        "the refresh token as get_refresh_token reads it"
    );
    check!(
        found.user.map(|x| x.id) == Some(u.id.clone()),
        "with the user of its openid grant"
    );

    // A grant without openid: no ID token can come of it, so no user is read.
    let mut plain = grant(&c.id, &u.id);
    plain.scope = ScopeSet::parse("offline_access").unwrap_or_default();
    let other = issuance(&plain, true);
    must(store.issue(&other).await, "issue");
    let other_rt = other.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let found = must(
        store.get_client_and_refresh_token(&c.id, &other_rt).await,
        "read",
    );
    check!(
        found.token.is_some() && found.user.is_none(),
        "no user read for a grant without openid"
    );
    let found = must(
        store
            .get_client_and_refresh_token("no-such-client", &hash())
            .await,
        "read",
    );
    check!(
        found.client.is_none() && found.token.is_none() && found.user.is_none(),
        "nothing found, nothing read"
    );

    // Writes made after a combined read are seen by the next one.
    let second = issuance(&g, false);
    must(
        store
            .rotate_refresh_token(&rt, &second, None, NOW + 1)
            .await,
        "rotate",
    );
    let found = must(store.get_client_and_refresh_token(&c.id, &rt).await, "read");
    check!(
        found.token.map(|t| t.state) == Some(TokenState::Rotated),
        "the rotation is seen"
    );
    let (_, token_read) = must(store.get_client_and_access_token(&c.id, &at).await, "read");
    check!(
        token_read.map(|t| t.revoked) == Some(true),
        "the access token revoked by the rotation is seen revoked"
    );
    must(store.delete_client(&c.id).await, "delete_client");
    let (client_read, _) = must(store.get_client_and_access_token(&c.id, &at).await, "read");
    check!(client_read.is_none(), "the deleted client is gone");
}

async fn grant_revocation(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let g = grant(&c.id, &u.id);
    let first = issuance(&g, true);
    must(store.issue(&first).await, "issue");
    let second = issuance(&g, false);
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    must(
        store
            .rotate_refresh_token(&old, &second, None, NOW + 1)
            .await,
        "rotate",
    );
    must(store.revoke_grant(&g.id, NOW + 2).await, "revoke_grant");
    let at = must(store.get_access_token(&second.access.hash).await, "get");
    check!(
        at.map(|a| a.revoked) == Some(true),
        "access token of a revoked grant is revoked"
    );
    let rt = must(
        store
            .get_refresh_token(&second.refresh.as_ref().map(|r| r.hash).unwrap_or_default())
            .await,
        "get",
    );
    check!(
        rt.map(|r| r.grant_revoked) == Some(true),
        "refresh token of a revoked grant is revoked"
    );

    let other = issuance(&grant(&c.id, &u.id), true);
    must(store.issue(&other).await, "issue");
    must(
        store.revoke_access_token(&other.access.hash, NOW).await,
        "revoke_access_token",
    );
    let at = must(store.get_access_token(&other.access.hash).await, "get");
    check!(
        at.map(|a| a.revoked) == Some(true),
        "single access token revoked"
    );
    let rt = must(
        store
            .get_refresh_token(&other.refresh.as_ref().map(|r| r.hash).unwrap_or_default())
            .await,
        "get",
    );
    check!(
        rt.map(|r| r.is_active(NOW)) == Some(true),
        "its refresh token unaffected"
    );
}

/// Runs the janitor's pruning at `at` (no grace) until nothing is left to prune.
async fn prune_everything_expired(store: &dyn Store, at: i64) {
    while must(store.prune_expired(at, 0, 1000).await, "prune_expired").total() > 0 {}
}

/// The janitor deletes a grant only past the latest expiry of the tokens issued under it,
/// and a token whose grant is gone is dead: so a rotation (or a retry) that issues tokens
/// outliving the grant's first ones must keep the grant alive for them.
async fn a_grant_outlives_every_token_issued_under_it(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let prune_at = NOW + 10_000;

    // A chain: first tokens short-lived, their successors long-lived.
    let chain = grant(&c.id, &u.id);
    let first = expiring(issuance(&chain, true), NOW + 100, NOW + 100);
    must(store.issue(&first).await, "issue");
    let second = expiring(issuance(&chain, false), prune_at + 3600, prune_at + 86_400);
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    must(
        store
            .rotate_refresh_token(&old, &second, None, NOW + 1)
            .await,
        "rotate",
    );

    // A retry: the successor is short-lived, the access token the retry issues is not.
    let retried = grant(&c.id, &u.id);
    let parent = expiring(issuance(&retried, true), NOW + 100, NOW + 100);
    must(store.issue(&parent).await, "issue");
    let successor = expiring(issuance(&retried, false), NOW + 100, NOW + 100);
    let parent_rt = parent.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let successor_rt = successor
        .refresh
        .as_ref()
        .map(|r| r.hash)
        .unwrap_or_default();
    must(
        store
            .rotate_refresh_token(&parent_rt, &successor, Some(b"sealed"), NOW + 1)
            .await,
        "rotate",
    );
    let mut reissued = issuance(&retried, false).access;
    reissued.expires_at = prune_at + 3600;
    check!(
        must(
            store
                .retry_rotation(&parent_rt, &successor_rt, NOW, &reissued, NOW + 2)
                .await,
            "retry_rotation"
        ) == Swap::Done,
        "retry within the window"
    );

    // Under a stored grant, an issuance whose access token outlives the refresh token
    // beside it.
    let lopsided = grant(&c.id, &u.id);
    let opening = expiring(issuance(&lopsided, true), NOW + 100, NOW + 100);
    must(store.issue(&opening).await, "issue");
    let skewed = expiring(issuance(&lopsided, false), prune_at + 3600, NOW + 100);
    must(store.issue(&skewed).await, "issue");
    // And the other way round: a refresh token that outlives the access token beside it.
    let leaning = grant(&c.id, &u.id);
    let opening = expiring(issuance(&leaning, true), NOW + 100, NOW + 100);
    must(store.issue(&opening).await, "issue");
    let tall = expiring(issuance(&leaning, false), NOW + 100, prune_at + 3600);
    must(store.issue(&tall).await, "issue");

    prune_everything_expired(store, prune_at).await;
    check!(
        must(store.get_refresh_token(&old).await, "get").is_none(),
        "the chain's expired first refresh token is pruned"
    );
    let at = must(store.get_access_token(&skewed.access.hash).await, "get");
    check!(
        at.map(|a| a.revoked) == Some(false),
        "an access token that outlives its refresh token keeps its grant through the janitor"
    );
    let tall_rt = tall.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let live = must(store.get_refresh_token(&tall_rt).await, "get");
    check!(
        live.is_some_and(|r| r.is_active(prune_at)),
        "a refresh token that outlives its access token keeps its grant through the janitor"
    );
    let second_rt = second.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let live = must(store.get_refresh_token(&second_rt).await, "get");
    check!(
        live.is_some_and(|r| r.is_active(prune_at)),
        "its live successor keeps its grant through the janitor"
    );
    let at = must(store.get_access_token(&second.access.hash).await, "get");
    check!(
        at.map(|a| a.revoked) == Some(false),
        "and so does its live access token"
    );
    let third = issuance(&chain, false);
    check!(
        must(
            store
                .rotate_refresh_token(&second_rt, &third, None, prune_at)
                .await,
            "rotate"
        ) == Swap::Done,
        "the chain rotates on after the janitor's pass"
    );
    let at = must(store.get_access_token(&reissued.hash).await, "get");
    check!(
        at.map(|a| a.revoked) == Some(false),
        "an access token from a retry keeps its grant through the janitor"
    );
}

/// A client's standing client_credentials grant is stored by the first step that names it
/// (a later one is no conflict) and outlives every token under it: the janitor keeps it
/// after they are all gone, and only deleting the client removes it and kills its tokens.
async fn a_standing_grant_is_stored_once_and_lives_with_its_client(store: &dyn Store) {
    let c = client(store).await;
    let mut standing = grant(&c.id, "nobody");
    standing.id = format!("cc_{}", c.id);
    standing.user_id = None;
    let cc = |expires_at: i64| {
        let mut iss = issuance(&standing, true);
        iss.standing_grant = true;
        iss.refresh = None;
        iss.access.user_id = None;
        iss.access.expires_at = expires_at;
        iss
    };
    let first = cc(NOW + 100);
    must(store.issue(&first).await, "issue");
    let second = cc(NOW + 50_000);
    check!(
        store.issue(&second).await.is_ok(),
        "a standing grant named again is no conflict"
    );
    prune_everything_expired(store, NOW + 10_000).await;
    check!(
        must(store.get_access_token(&first.access.hash).await, "get").is_none(),
        "the expired token is pruned"
    );
    let live = must(store.get_access_token(&second.access.hash).await, "get");
    check!(
        live.map(|a| a.revoked) == Some(false),
        "the later token keeps the grant through the janitor"
    );
    // Past every token: the grant stays, so a token stored under it without storing it
    // again (as a concurrent step that found it a moment before would) still lives.
    prune_everything_expired(store, NOW + 100_000).await;
    let mut third = cc(NOW + 200_000);
    third.new_grant = None;
    must(store.issue(&third).await, "issue");
    let live = must(store.get_access_token(&third.access.hash).await, "get");
    check!(
        live.map(|a| a.revoked) == Some(false),
        "the standing grant outlives all its tokens"
    );
    must(store.delete_client(&c.id).await, "delete_client");
    check!(
        must(store.get_access_token(&third.access.hash).await, "get").is_none(),
        "and goes with its client, killing its tokens"
    );
}

async fn client_deletion_revokes_everything(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let g = grant(&c.id, &u.id);
    let iss = issuance(&g, true);
    must(store.issue(&iss).await, "issue");
    let code = code(&grant(&c.id, &u.id));
    must(store.insert_code(&code).await, "insert_code");
    must(
        store
            .save_consent(&Consent {
                user_id: u.id.clone(),
                client_id: c.id.clone(),
                scope: ScopeSet::empty(),
                granted_at: NOW,
            })
            .await,
        "save_consent",
    );
    check!(
        must(store.delete_client(&c.id).await, "delete_client"),
        "deleted"
    );
    check!(
        !must(store.delete_client(&c.id).await, "delete_client"),
        "second delete reports false"
    );
    check!(
        must(store.get_client(&c.id).await, "get").is_none(),
        "client gone"
    );
    let at = must(store.get_access_token(&iss.access.hash).await, "get");
    check!(at.is_none_or(|a| a.revoked), "access token gone or revoked");
    let rt = must(
        store
            .get_refresh_token(&iss.refresh.as_ref().map(|r| r.hash).unwrap_or_default())
            .await,
        "get",
    );
    check!(
        rt.is_none_or(|r| !r.is_active(NOW)),
        "refresh token gone or revoked"
    );
    let old = iss.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    check!(
        must(
            store
                .rotate_refresh_token(&old, &issuance(&g, false), None, NOW + 1)
                .await,
            "rotate"
        ) == Swap::AlreadyUsed,
        "a refresh token of a deleted client cannot be rotated"
    );
    check!(
        must(store.get_code(&code.hash).await, "get").is_none(),
        "codes gone"
    );
    check!(
        must(store.get_consent(&u.id, &c.id).await, "get").is_none(),
        "consent gone"
    );
}

async fn parallel_redemption_has_one_winner(store: Arc<dyn Store>) {
    let u = user(&*store).await;
    let c = client(&*store).await;
    let g = grant(&c.id, &u.id);
    let code = code(&g);
    must(store.insert_code(&code).await, "insert_code");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let iss = issuance(&g, true);
        let h = code.hash;
        tasks.push(tokio::spawn(async move {
            store.redeem_code(&h, &iss, NOW).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(Swap::Done)) => wins += 1,
            Ok(Ok(Swap::AlreadyUsed)) => {}
            other => panic_with(&format!("parallel redemption failed: {other:?}")),
        }
    }
    check!(
        wins == 1,
        "exactly one of 16 parallel redemptions wins, got {wins}"
    );
}

async fn parallel_rotation_has_one_winner(store: Arc<dyn Store>) {
    let u = user(&*store).await;
    let c = client(&*store).await;
    let g = grant(&c.id, &u.id);
    let first = issuance(&g, true);
    must(store.issue(&first).await, "issue");
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        let iss = issuance(&g, false);
        tasks.push(tokio::spawn(async move {
            store.rotate_refresh_token(&old, &iss, None, NOW + 1).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        match t.await {
            Ok(Ok(Swap::Done)) => wins += 1,
            Ok(Ok(Swap::AlreadyUsed)) => {}
            other => panic_with(&format!("parallel rotation failed: {other:?}")),
        }
    }
    check!(
        wins == 1,
        "exactly one of 16 parallel rotations wins, got {wins}"
    );
}

/// The opt-in retry window: rotation records when and into what, and a retry replaces the
/// successor's access token only while the successor is unused and inside the window.
async fn refresh_retry_reissues_only_for_an_unused_successor(store: &dyn Store) {
    let u = user(store).await;
    let c = client(store).await;
    let g = grant(&c.id, &u.id);
    let first = issuance(&g, true);
    must(store.issue(&first).await, "issue");
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let second = issuance(&g, false);
    let successor = second.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let sealed = b"sealed-successor".to_vec();
    must(
        store
            .rotate_refresh_token(&old, &second, Some(&sealed), NOW + 10)
            .await,
        "rotate",
    );
    let rotated = must(store.get_refresh_token(&old).await, "get").map(|r| r.rotation);
    check!(
        rotated
            == Some(Some(tessera_core::model::Rotation {
                at: NOW + 10,
                successor,
                sealed_successor: Some(sealed.clone()),
            })),
        "rotation records time, successor and sealed successor: {rotated:?}"
    );

    // Outside the window: nothing happens.
    let late = issuance(&g, false).access;
    check!(
        must(
            store
                .retry_rotation(&old, &successor, NOW + 11, &late, NOW + 12)
                .await,
            "retry"
        ) == Swap::AlreadyUsed,
        "a retry after the window is refused"
    );
    check!(
        must(store.get_access_token(&late.hash).await, "get").is_none(),
        "nothing stored for a refused retry"
    );
    // A wrong successor: nothing happens.
    let stray = issuance(&g, false).access;
    check!(
        must(
            store
                .retry_rotation(&old, &hash(), NOW, &stray, NOW + 12)
                .await,
            "retry"
        ) == Swap::AlreadyUsed,
        "a retry naming another successor is refused"
    );

    let retry = issuance(&g, false).access;
    check!(
        must(
            store
                .retry_rotation(&old, &successor, NOW, &retry, NOW + 12)
                .await,
            "retry"
        ) == Swap::Done,
        "a retry inside the window, successor unused"
    );
    let replaced = must(store.get_access_token(&second.access.hash).await, "get");
    check!(
        replaced.map(|a| a.revoked) == Some(true),
        "the successor's previous access token is revoked"
    );
    let fresh = must(store.get_access_token(&retry.hash).await, "get");
    check!(
        fresh.map(|a| a.revoked) == Some(false),
        "the retry's access token is live"
    );
    let succ = must(store.get_refresh_token(&successor).await, "get");
    check!(
        succ.as_ref().and_then(|r| r.access_token_hash) == Some(retry.hash),
        "the successor now carries the retry's access token"
    );

    // The successor is used: its sealed copy is dropped and retries of `old` stop.
    let third = issuance(&g, false);
    must(
        store
            .rotate_refresh_token(&successor, &third, Some(&sealed), NOW + 13)
            .await,
        "rotate successor",
    );
    let parent = must(store.get_refresh_token(&old).await, "get");
    check!(
        parent
            .as_ref()
            .and_then(|r| r.rotation.as_ref())
            .is_some_and(|r| r.sealed_successor.is_none()),
        "the sealed successor is erased once the successor is rotated"
    );
    check!(
        must(
            store
                .retry_rotation(&old, &successor, NOW, &issuance(&g, false).access, NOW + 14)
                .await,
            "retry"
        ) == Swap::AlreadyUsed,
        "no retry once the successor was used"
    );
    check!(
        must(store.get_access_token(&third.access.hash).await, "get").map(|a| a.revoked)
            == Some(false),
        "a refused retry leaves the live chain alone"
    );

    // A revoked grant: no retry either.
    let third_rt = third.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    must(store.revoke_grant(&g.id, NOW + 15).await, "revoke");
    check!(
        must(
            store
                .retry_rotation(
                    &successor,
                    &third_rt,
                    NOW,
                    &issuance(&g, false).access,
                    NOW + 16
                )
                .await,
            "retry"
        ) == Swap::AlreadyUsed,
        "no retry into a revoked grant"
    );
}

/// Parallel retries of one rotated token each replace the access token in turn; whatever
/// the interleaving, exactly one access token of the successor stays live.
async fn parallel_retries_have_one_winner(store: Arc<dyn Store>) {
    let u = user(&*store).await;
    let c = client(&*store).await;
    let g = grant(&c.id, &u.id);
    let first = issuance(&g, true);
    must(store.issue(&first).await, "issue");
    let old = first.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    let second = issuance(&g, false);
    let successor = second.refresh.as_ref().map(|r| r.hash).unwrap_or_default();
    must(
        store
            .rotate_refresh_token(&old, &second, Some(b"s"), NOW + 1)
            .await,
        "rotate",
    );
    let mut tasks = Vec::new();
    let mut hashes = vec![second.access.hash];
    for _ in 0..8 {
        let store = store.clone();
        let access = issuance(&g, false).access;
        hashes.push(access.hash);
        tasks.push(tokio::spawn(async move {
            store
                .retry_rotation(&old, &successor, NOW, &access, NOW + 2)
                .await
        }));
    }
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string());
        check!(
            matches!(r, Ok(Ok(Swap::Done))),
            "a retry in the window succeeds: {r:?}"
        );
    }
    let mut live = 0;
    for h in &hashes {
        if must(store.get_access_token(h).await, "get").is_some_and(|a| !a.revoked) {
            live += 1;
        }
    }
    check!(
        live == 1,
        "exactly one live access token for the successor, got {live}"
    );
}

/// Keys straight from a request (NUL and other control bytes) find nothing; they never
/// fail the query (PostgreSQL text cannot even hold NUL).
async fn hostile_keys_find_nothing(store: &dyn Store) {
    for key in ["\0", "a\0b", "\u{1}\u{7f}", "' OR 1=1 --"] {
        check!(
            must(store.get_client(key).await, "get_client").is_none(),
            "no client {key:?}"
        );
        check!(
            must(store.get_user(key).await, "get_user").is_none(),
            "no user {key:?}"
        );
        check!(
            must(store.find_user(DEFAULT_TENANT, key).await, "find_user").is_none(),
            "no username {key:?}"
        );
        check!(
            must(store.get_tenant(key).await, "get_tenant").is_none(),
            "no tenant {key:?}"
        );
        check!(
            must(store.get_consent(key, key).await, "get_consent").is_none(),
            "no consent {key:?}"
        );
        check!(
            !must(store.delete_client(key).await, "delete_client"),
            "nothing to delete for {key:?}"
        );
        let (client, token) = must(
            store.get_client_and_access_token(key, &hash()).await,
            "get_client_and_access_token",
        );
        check!(
            client.is_none() && token.is_none(),
            "no client or access token {key:?}"
        );
        let found = must(
            store.get_client_and_refresh_token(key, &hash()).await,
            "get_client_and_refresh_token",
        );
        check!(
            found.client.is_none() && found.token.is_none() && found.user.is_none(),
            "no client or refresh token {key:?}"
        );
    }
}

/// The janitor's audit retention: events before the cut-off go in bounded batches, the
/// others stay.
async fn audit_retention(store: &dyn Store) {
    use tessera_core::model::AuditEvent;
    let marker = unique("retained");
    let far = NOW + 30_000_000;
    let event = |at: i64| AuditEvent {
        at,
        kind: marker.clone(),
        tenant: None,
        actor: None,
        client_id: None,
        ip: None,
        request_id: None,
        detail: None,
    };
    must(
        store
            .append_audit(&[event(far), event(far + 1), event(far + 100)])
            .await,
        "append_audit",
    );
    let first = must(store.prune_audit(far + 50, 1).await, "prune_audit");
    check!(first == 1, "a batch of one deletes one event, got {first}");
    loop {
        if must(store.prune_audit(far + 50, 1000).await, "prune_audit") == 0 {
            break;
        }
    }
    let left: Vec<i64> = must(store.list_audit(far, 10).await, "list_audit")
        .into_iter()
        .filter(|e| e.kind == marker)
        .map(|e| e.at)
        .collect();
    check!(
        left == vec![far + 100],
        "only the recent event is kept: {left:?}"
    );
}
