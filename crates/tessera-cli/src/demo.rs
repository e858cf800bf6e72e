//! `serve --demo`: on an empty store, a tenant, a user and a client ready to try.

use anyhow::Result;
use tessera_crypto::Passwords;
use tessera_server::admin::{self, NewClient, NewUser};
use tessera_server::{Clock, SystemClock};
use tessera_store::Store;

pub async fn provision(store: &dyn Store, issuer: &str) -> Result<()> {
    if !store.list_clients().await?.is_empty() || store.get_tenant("demo").await?.is_some() {
        println!("--demo: the store is not empty; no demo data created.");
        return Ok(());
    }
    let now = SystemClock.now();
    admin::create_tenant(store, "demo", now).await?;
    let password = tessera_crypto::random_id(12)?;
    let user = admin::create_user(
        store,
        &Passwords::new()?,
        NewUser {
            tenant: "demo",
            username: "demo",
            email: Some("demo@example.com"),
            name: Some("Demo User"),
            password: &password,
        },
        now,
    )
    .await?;
    let base = issuer.trim_end_matches('/');
    // A loopback callback nobody listens on: the browser's address bar shows the code.
    let redirect_uri = "http://127.0.0.1:9/callback".to_owned();
    let (client, secret) = admin::create_client(
        store,
        &NewClient {
            name: "Demo app".into(),
            redirect_uris: vec![redirect_uri.clone()],
            scopes: Some("openid profile email offline_access".into()),
            tenant: Some("demo".into()),
            ..NewClient::default()
        },
        now,
    )
    .await?;
    let secret = secret.unwrap_or_default();
    let authorize = format!(
        "{base}/oauth2/authorize?response_type=code&client_id={}&redirect_uri={}&scope=openid%20profile%20offline_access&state=demo",
        client.id,
        url::form_urlencoded::byte_serialize(redirect_uri.as_bytes()).collect::<String>()
    );
    println!(
        "Demo data created (shown once):\n  tenant:        demo\n  user:          {} / password {}\n  client_id:     {}\n  client_secret: {}\n  redirect_uri:  {}\n\nOpen this URL, sign in, allow, and copy `code` from the address bar:\n  {}\n\nThen exchange it:\n  curl -u '{}:{}' -d grant_type=authorization_code -d code=CODE -d redirect_uri={} {base}/oauth2/token",
        user.username, password, client.id, secret, redirect_uri, authorize, client.id, secret, redirect_uri
    );
    Ok(())
}
