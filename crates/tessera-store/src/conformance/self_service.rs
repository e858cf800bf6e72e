//! Conformance checks of the developer self-service steps (settings pages): clients by
//! owner, editing, consents of a user and their revocation, personal access tokens.

use tessera_core::model::{Consent, DEFAULT_TENANT};
use tessera_core::personal_token::{PersonalAccessToken, PERSONAL_TOKEN_CLIENT_ID};
use tessera_core::ScopeSet;

use super::{client, code, grant, issuance, must, panic_with, unique, user, NOW};
use crate::{Issuance, Store};

pub(super) async fn run(store: &dyn Store) {
    clients_by_owner_and_update(store).await;
    consent_revocation_revokes_the_users_tokens_only(store).await;
    personal_tokens(store).await;
}

async fn clients_by_owner_and_update(store: &dyn Store) {
    let (alice, bob) = (unique("owner"), unique("owner"));
    let mut mine = super::sample_client(&unique("c"));
    mine.owner = Some(alice.clone());
    let mut theirs = super::sample_client(&unique("c"));
    theirs.owner = Some(bob.clone());
    must(store.create_client(&mine).await, "create_client");
    must(store.create_client(&theirs).await, "create_client");
    let listed = must(store.list_clients_by_owner(&alice).await, "list_by_owner");
    check!(
        listed.len() == 1 && listed.first().map(|c| c.id.as_str()) == Some(mine.id.as_str()),
        "only the owner's clients are listed: {:?}",
        listed.iter().map(|c| &c.id).collect::<Vec<_>>()
    );
    check!(
        must(store.list_clients_by_owner(&unique("nobody")).await, "list").is_empty(),
        "an owner without clients lists none"
    );

    let secret_before = must(store.get_client(&mine.id).await, "get").and_then(|c| c.secret_hash);
    let mut edited = mine.clone();
    edited.name = "Renamed".into();
    edited.redirect_uris = vec!["https://a.example/cb".into(), "https://b.example/cb".into()];
    edited.secret_hash = None;
    check!(
        must(store.update_client(&edited).await, "update_client"),
        "update reports an existing client"
    );
    let stored = must(store.get_client(&mine.id).await, "get");
    check!(
        stored
            .as_ref()
            .map(|c| (c.name.as_str(), c.redirect_uris.len()))
            == Some(("Renamed", 2)),
        "name and redirect URIs replaced"
    );
    check!(
        stored.as_ref().and_then(|c| c.secret_hash) == secret_before && secret_before.is_some(),
        "the secret hash survives an update"
    );
    check!(
        stored.and_then(|c| c.owner) == Some(alice),
        "the owner survives an update"
    );
    let mut ghost = super::sample_client(&unique("c"));
    ghost.name = "ghost".into();
    check!(
        !must(store.update_client(&ghost).await, "update_client"),
        "updating a missing client reports false"
    );
    check!(
        must(store.get_client(&ghost.id).await, "get").is_none(),
        "and creates nothing"
    );
}

async fn consent_revocation_revokes_the_users_tokens_only(store: &dyn Store) {
    let (u, other_user) = (user(store).await, user(store).await);
    let (c, other_client) = (client(store).await, client(store).await);
    let consent = |user_id: &str, client_id: &str, at: i64| Consent {
        user_id: user_id.to_owned(),
        client_id: client_id.to_owned(),
        scope: ScopeSet::parse("openid").unwrap_or_default(),
        granted_at: at,
    };
    must(
        store.save_consent(&consent(&u.id, &c.id, NOW)).await,
        "save",
    );
    must(
        store
            .save_consent(&consent(&u.id, &other_client.id, NOW + 5))
            .await,
        "save",
    );
    must(
        store
            .save_consent(&consent(&other_user.id, &c.id, NOW))
            .await,
        "save",
    );
    let listed = must(store.list_consents(&u.id).await, "list_consents");
    check!(
        listed
            .iter()
            .map(|k| k.client_id.as_str())
            .collect::<Vec<_>>()
            == vec![other_client.id.as_str(), c.id.as_str()],
        "a user's consents, newest first"
    );

    let mine = issuance(&grant(&c.id, &u.id), true);
    let mine_later = issuance(&grant(&c.id, &u.id), true);
    let other_users = issuance(&grant(&c.id, &other_user.id), true);
    let other_clients = issuance(&grant(&other_client.id, &u.id), true);
    for iss in [&mine, &mine_later, &other_users, &other_clients] {
        must(store.issue(iss).await, "issue");
    }
    let pending = code(&grant(&c.id, &u.id));
    must(store.insert_code(&pending).await, "insert_code");

    check!(
        must(
            store.revoke_consent(&u.id, &c.id, NOW + 10).await,
            "revoke_consent"
        ),
        "revoking an existing consent reports true"
    );
    check!(
        must(store.get_consent(&u.id, &c.id).await, "get").is_none(),
        "the consent is gone"
    );
    let dead = |iss: &Issuance| (iss.access.hash, iss.refresh.as_ref().map(|r| r.hash));
    for iss in [&mine, &mine_later] {
        let (at, rt) = dead(iss);
        let at = must(store.get_access_token(&at).await, "get");
        check!(
            at.is_none_or(|a| !a.is_active(NOW + 11)),
            "the user's access tokens are revoked"
        );
        let rt = must(
            store.get_refresh_token(&rt.unwrap_or_default()).await,
            "get",
        );
        check!(
            rt.is_none_or(|r| !r.is_active(NOW + 11)),
            "the user's refresh tokens are revoked"
        );
    }
    check!(
        must(store.get_code(&pending.hash).await, "get").is_none_or(|k| k.used),
        "an unused code of the consent can no longer be redeemed"
    );
    for iss in [&other_users, &other_clients] {
        let (at, rt) = dead(iss);
        let at = must(store.get_access_token(&at).await, "get");
        check!(
            at.is_some_and(|a| a.is_active(NOW + 11)),
            "other users' and clients' access tokens live on"
        );
        let rt = must(
            store.get_refresh_token(&rt.unwrap_or_default()).await,
            "get",
        );
        check!(
            rt.is_some_and(|r| r.is_active(NOW + 11)),
            "other users' and clients' refresh tokens live on"
        );
    }
    check!(
        must(store.get_consent(&other_user.id, &c.id).await, "get").is_some()
            && must(store.get_consent(&u.id, &other_client.id).await, "get").is_some(),
        "other consents stay"
    );
    check!(
        !must(
            store.revoke_consent(&u.id, &c.id, NOW + 12).await,
            "revoke_consent"
        ),
        "revoking again reports false"
    );
}

fn personal_token(user_id: &str, name: &str, created_at: i64) -> (PersonalAccessToken, Issuance) {
    let mut g = grant(PERSONAL_TOKEN_CLIENT_ID, user_id);
    g.scope = ScopeSet::parse("openid profile").unwrap_or_default();
    let mut iss = issuance(&g, true);
    iss.refresh = None;
    let pat = PersonalAccessToken {
        id: unique("pat"),
        user_id: user_id.to_owned(),
        tenant: DEFAULT_TENANT.to_owned(),
        name: name.to_owned(),
        scope: g.scope.clone(),
        grant_id: g.id.clone(),
        token_hash: iss.access.hash,
        created_at,
        expires_at: NOW + 3600,
        last_used_at: None,
    };
    (pat, iss)
}

async fn personal_tokens(store: &dyn Store) {
    let (u, other) = (user(store).await, user(store).await);
    let (first, first_iss) = personal_token(&u.id, "ci", NOW);
    let (second, second_iss) = personal_token(&u.id, "laptop", NOW + 1);
    let (foreign, foreign_iss) = personal_token(&other.id, "theirs", NOW);
    for (pat, iss) in [
        (&first, &first_iss),
        (&second, &second_iss),
        (&foreign, &foreign_iss),
    ] {
        must(
            store.create_personal_token(pat, iss).await,
            "create_personal_token",
        );
    }
    let listed = must(
        store.list_personal_tokens(&u.id).await,
        "list_personal_tokens",
    );
    check!(
        listed == vec![second.clone(), first.clone()],
        "a user's tokens, newest first, exactly as stored"
    );
    let at = must(store.get_access_token(&first.token_hash).await, "get");
    check!(
        at.is_some_and(|a| a.is_active(NOW) && a.client_id == PERSONAL_TOKEN_CLIENT_ID),
        "the token is an ordinary live access token"
    );

    must(
        store
            .touch_personal_token(&first.token_hash, NOW + 100)
            .await,
        "touch",
    );
    must(
        store
            .touch_personal_token(&first.token_hash, NOW + 110)
            .await,
        "touch",
    );
    let used = must(store.list_personal_tokens(&u.id).await, "list")
        .into_iter()
        .find(|p| p.id == first.id)
        .and_then(|p| p.last_used_at);
    check!(
        used == Some(NOW + 100),
        "last use recorded, at most once a minute: {used:?}"
    );
    must(
        store
            .touch_personal_token(&first.token_hash, NOW + 200)
            .await,
        "touch",
    );
    let used = must(store.list_personal_tokens(&u.id).await, "list")
        .into_iter()
        .find(|p| p.id == first.id)
        .and_then(|p| p.last_used_at);
    check!(used == Some(NOW + 200), "a later use is recorded: {used:?}");

    check!(
        !must(
            store
                .revoke_personal_token(&u.id, &foreign.id, NOW + 300)
                .await,
            "revoke"
        ),
        "another user's token cannot be revoked"
    );
    let at = must(store.get_access_token(&foreign.token_hash).await, "get");
    check!(at.is_some_and(|a| a.is_active(NOW + 301)), "and stays live");
    check!(
        must(
            store
                .revoke_personal_token(&u.id, &first.id, NOW + 300)
                .await,
            "revoke"
        ),
        "the owner revokes their token"
    );
    let at = must(store.get_access_token(&first.token_hash).await, "get");
    check!(
        at.is_none_or(|a| !a.is_active(NOW + 301)),
        "a revoked token is inactive"
    );
    let listed = must(store.list_personal_tokens(&u.id).await, "list");
    check!(
        listed.iter().map(|p| p.id.as_str()).collect::<Vec<_>>() == vec![second.id.as_str()],
        "a revoked token is no longer listed"
    );
    check!(
        !must(
            store
                .revoke_personal_token(&u.id, &first.id, NOW + 302)
                .await,
            "revoke"
        ),
        "revoking twice reports false"
    );
}
