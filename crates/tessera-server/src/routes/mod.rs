//! Route table. Aliases of the providers we replace map onto the same handlers.

mod authorize;
mod meta;
mod pages;
mod resource;
mod settings;
mod token;

use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::middleware;
use axum::routing::{get, post};
use axum::Router;
use tessera_core::client::{Client, PresentedClient};
use tessera_core::params::Params;
use tessera_core::OAuthError;

use crate::audit::Origin;
use crate::error::ApiError;
use crate::extract::header_str;
use crate::limits::ClientIp;
use crate::AppState;

/// The token endpoint and its aliases.
const TOKEN_PATHS: [&str; 3] = ["/oauth2/token", "/oauth/token", "/token"];
const REVOKE_PATH: &str = "/oauth2/revoke";
const INTROSPECT_PATH: &str = "/oauth2/introspect";

/// The endpoints where clients authenticate, whose failures count against the caller's
/// address (`limits::guard_client_endpoint`). `route` is the matched route.
pub(crate) fn is_client_endpoint(route: &str) -> bool {
    TOKEN_PATHS.contains(&route) || route == REVOKE_PATH || route == INTROSPECT_PATH
}

pub fn router(state: AppState) -> Router {
    let authorize = get(authorize::get).post(authorize::post);
    let token = post(token::token);
    let userinfo = get(resource::userinfo_get).post(resource::userinfo_post);
    Router::new()
        .route("/oauth2/authorize", authorize.clone())
        .route("/authorize", authorize.clone())
        .route("/oauth/authorize", authorize)
        .route(TOKEN_PATHS[0], token.clone())
        .route(TOKEN_PATHS[1], token.clone())
        .route(TOKEN_PATHS[2], token)
        .route(REVOKE_PATH, post(resource::revoke))
        .route(INTROSPECT_PATH, post(resource::introspect))
        .route("/userinfo", userinfo)
        .route("/v1/users/me", get(resource::users_me))
        .route("/login", get(pages::login_get).post(pages::login_post))
        .route(
            "/consent",
            get(pages::consent_get).post(pages::consent_post),
        )
        .route("/logout", get(pages::logout_get).post(pages::logout_post))
        .route("/", get(pages::home))
        .route("/health/ready", get(meta::ready))
        .route("/metrics", get(crate::metrics::render))
        // Developer self-service pages.
        .route(settings::API_PATH, get(settings::api_get))
        .route("/settings/api/clients", post(settings::create_client))
        .route(
            "/settings/api/clients/{id}",
            get(settings::edit_client_get).post(settings::edit_client_post),
        )
        .route(
            "/settings/api/clients/{id}/rotate-secret",
            post(settings::rotate_secret),
        )
        .route(
            "/settings/api/clients/{id}/delete",
            post(settings::delete_client),
        )
        .route("/settings/api/tokens", post(settings::create_token))
        .route(
            "/settings/api/tokens/{id}/revoke",
            post(settings::revoke_token),
        )
        .route(settings::APPS_PATH, get(settings::apps_get))
        .route(
            "/settings/apps/{client_id}/revoke",
            post(settings::revoke_app),
        )
        .fallback(meta::not_found)
        .layer(DefaultBodyLimit::max(state.settings().max_body_bytes))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::envelope::envelope,
        ))
        .merge(documents(&state))
        .with_state(state)
}

/// The fixed documents: their handlers never log, so their envelope does not name the
/// request for log lines.
fn documents(state: &AppState) -> Router<AppState> {
    let discovery = get(meta::discovery);
    Router::new()
        .route("/.well-known/jwks.json", get(meta::jwks))
        .route("/.well-known/openid-configuration", discovery.clone())
        .route("/.well-known/oauth-authorization-server", discovery)
        .route("/health/live", get(meta::live))
        .route("/static/tessera.css", get(meta::css))
        .route("/static/form_post.js", get(meta::form_post_js))
        .route("/static/settings.js", get(settings::settings_js))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::envelope::envelope_unnamed,
        ))
}

/// Authenticates the calling client (RFC 6749 §2.3) for the token, introspection and
/// revocation endpoints. Every failure is the same `invalid_client`.
pub(crate) async fn authenticate_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    origin: &Origin,
) -> Result<Client, ApiError> {
    let presented = present_client(state, headers, params, origin).await?;
    let client = state.store().get_client(presented.client_id()).await?;
    presented.verify(state, origin, client).await
}

/// Client credentials read from a request and let past the rate limits, not yet checked
/// against the client's record: a handler that reads that record together with what the
/// request presents (one store round trip) checks them with [`ClientPresented::verify`]
/// before it uses or reveals anything it read.
pub(crate) struct ClientPresented {
    presented: PresentedClient,
    ip: ClientIp,
}

/// The first half of [`authenticate_client`].
pub(crate) async fn present_client(
    state: &AppState,
    headers: &HeaderMap,
    params: &Params,
    origin: &Origin,
) -> Result<ClientPresented, ApiError> {
    let ip = ClientIp(origin.ip.unwrap_or(std::net::IpAddr::from([0, 0, 0, 0])));
    let limits = &state.0.limits;
    let presented = PresentedClient::from_request(
        header_str(headers, "authorization"),
        params.single("client_id")?,
        params.single("client_secret")?,
    );
    let presented = match presented {
        Ok(p) => p,
        Err(e) => {
            charge_auth_failure(state, ip, None).await;
            return Err(e.into());
        }
    };
    if limits.settings.enabled {
        let client_key = || crate::limits::client_key(&presented.client_id);
        if let Some(wait) = limits.token_failures.blocked_lazily(client_key) {
            crate::metrics::event("rate_limited", "client");
            return Err(ApiError::RateLimited(wait));
        }
    }
    Ok(ClientPresented { presented, ip })
}

impl ClientPresented {
    pub(crate) fn client_id(&self) -> &str {
        &self.presented.client_id
    }

    /// The second half of [`authenticate_client`]: `client` is the stored record of
    /// [`client_id`](Self::client_id), read after the rate-limit check.
    pub(crate) async fn verify(
        self,
        state: &AppState,
        origin: &Origin,
        client: Option<Client>,
    ) -> Result<Client, ApiError> {
        let presented = self.presented;
        let verdict = match client {
            Some(client) => presented.authenticate(&client).map(|_| client),
            None => {
                // Spend the same hashing work as a real check.
                let _ =
                    tessera_crypto::SecretHash::digest(presented.secret.as_deref().unwrap_or(""));
                Err(OAuthError::invalid_client("client authentication failed"))
            }
        };
        match verdict {
            Ok(client) => Ok(client),
            Err(e) => {
                let client_key = crate::limits::client_key(&presented.client_id);
                charge_auth_failure(state, self.ip, Some(&client_key)).await;
                let subject = crate::audit::Subject {
                    client_id: Some(&presented.client_id),
                    detail: Some(format!("method={}", presented.method.as_str())),
                    ..Default::default()
                };
                crate::audit::record(state, origin, "client.auth_failed", subject).await;
                Err(e.into())
            }
        }
    }
}

/// A failed client authentication costs more than other failures, to the address and
/// to the client id it tried.
async fn charge_auth_failure(state: &AppState, ClientIp(ip): ClientIp, client_key: Option<&str>) {
    let limits = &state.0.limits;
    if !limits.settings.enabled {
        return;
    }
    let cost = limits.settings.client_auth_failure_cost;
    let store = &**state.store();
    let blocked_ip = limits
        .token_failures
        .charge_shared(store, &crate::limits::ip_key(ip), cost, state.now())
        .await;
    let blocked_client = match client_key {
        Some(k) => {
            limits
                .token_failures
                .charge_shared(store, k, cost, state.now())
                .await
        }
        None => None,
    };
    if blocked_ip.is_some() || blocked_client.is_some() {
        tracing::warn!(%ip, "failed client authentications: blocked");
    }
}
