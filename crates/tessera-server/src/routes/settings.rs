//! Developer self-service pages (contract §3): `/settings/api` (clients the signed-in user
//! owns, personal access tokens) and `/settings/apps` (applications the user authorized).
//!
//! Every page needs a session (else: sign in, then back here); every form carries the
//! CSRF token of `session::Csrf`. The operations themselves live in `self_service`.

use askama::Template;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::Extension;
use tessera_core::client::Client;
use tessera_core::model::User;
use tessera_core::params::Params;

use super::authorize::see_other;
use crate::audit::{record, Origin, Subject};
use crate::error::PageError;
use crate::extract::{page_field, PageForm, Query};
use crate::pages::{describe_scope, render, static_asset};
use crate::self_service::{
    self, format_time, split_callback_urls, FieldErrors, SelfServiceError, PERSONAL_TOKEN_DAYS,
};
use crate::session::{self as web_session, Csrf};
use crate::AppState;

pub const API_PATH: &str = "/settings/api";
pub const APPS_PATH: &str = "/settings/apps";
pub const SETTINGS_JS: &str = include_str!("../../static/settings.js");

/// Scopes offered as checkboxes for personal access tokens.
const TOKEN_SCOPE_CHOICES: [&str; 3] = ["openid", "profile", "email"];

/// A secret shown once, right after it was made.
pub struct Revealed {
    pub heading: String,
    pub note: &'static str,
    /// (label, element id, value)
    pub fields: Vec<(&'static str, &'static str, String)>,
}

pub struct ClientRow {
    pub id: String,
    pub name: String,
    pub callback_urls: Vec<String>,
    pub kind: &'static str,
    pub public: bool,
    pub created: String,
}

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub scopes: String,
    pub last_used: String,
    pub expires: String,
    pub expired: bool,
}

/// What the client form shows: the values typed and the messages beside them.
#[derive(Default)]
pub struct ClientFormView {
    pub name: String,
    pub callback_urls: String,
    pub public: bool,
    pub errors: FieldErrors,
}

pub struct TokenFormView {
    pub name: String,
    pub checked: Vec<String>,
    pub other_scopes: String,
    pub days: i64,
    pub errors: FieldErrors,
}

impl TokenFormView {
    pub fn is_checked(&self, scope: &str) -> bool {
        self.checked.iter().any(|c| c == scope)
    }
    pub fn is_days(&self, days: &i64) -> bool {
        self.days == *days
    }
}

impl Default for TokenFormView {
    fn default() -> Self {
        TokenFormView {
            name: String::new(),
            checked: vec!["openid".into(), "profile".into()],
            other_scopes: String::new(),
            days: 30,
            errors: FieldErrors::default(),
        }
    }
}

#[derive(Template)]
#[template(path = "settings_api.html")]
pub struct ApiSettingsPage {
    pub csrf: String,
    pub username: String,
    pub notice: Option<&'static str>,
    pub revealed: Option<Revealed>,
    pub allow_user_clients: bool,
    pub clients: Vec<ClientRow>,
    pub client_form: ClientFormView,
    pub tokens: Vec<TokenRow>,
    pub token_form: TokenFormView,
    pub scope_choices: Vec<(&'static str, &'static str)>,
    pub day_choices: Vec<i64>,
}

#[derive(Template)]
#[template(path = "settings_client.html")]
pub struct EditClientPage {
    pub csrf: String,
    pub username: String,
    pub client_id: String,
    pub form: ClientFormView,
}

pub struct AppRow {
    pub client_id: String,
    pub name: String,
    pub permissions: Vec<(String, &'static str)>,
    pub granted: String,
}

#[derive(Template)]
#[template(path = "settings_apps.html")]
pub struct AppsPage {
    pub csrf: String,
    pub username: String,
    pub notice: Option<&'static str>,
    pub apps: Vec<AppRow>,
}

/// The signed-in user, or a redirect to sign in that comes back to `return_to`.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    return_to: &str,
) -> Result<Result<User, Response>, PageError> {
    match web_session::current(state, headers).await? {
        Some((_, user)) => Ok(Ok(user)),
        None => {
            let target: String = url::form_urlencoded::Serializer::new(String::new())
                .append_pair("return_to", return_to)
                .finish();
            Ok(Err(see_other(&format!("/login?{target}"))))
        }
    }
}

/// Resolves to the user, or returns the sign-in redirect from the handler.
macro_rules! user_or_sign_in {
    ($state:expr, $headers:expr, $return_to:expr) => {
        match signed_in(&$state, &$headers, $return_to).await? {
            Ok(user) => user,
            Err(redirect) => return Ok(redirect),
        }
    };
}

fn not_found() -> PageError {
    PageError {
        status: StatusCode::NOT_FOUND,
        title: "Not found",
        message: "You have no application with this client ID.".into(),
    }
}

fn with_csrf(state: &AppState, csrf: &Csrf, resp: Response) -> Response {
    let mut resp = resp;
    if let Some(c) = csrf.set_cookie(state) {
        resp.headers_mut().append(axum::http::header::SET_COOKIE, c);
    }
    resp
}

/// Messages after a redirect; the query names one of these, never free text.
fn notice(params: &Params) -> Option<&'static str> {
    match params.single("done").ok().flatten()? {
        "updated" => Some("Application saved."),
        "deleted" => Some("Application deleted. Every token it held is revoked."),
        "token_revoked" => Some("Personal access token revoked."),
        "app_revoked" => Some("Access revoked. The application's tokens no longer work."),
        _ => None,
    }
}

fn client_row(c: &Client) -> ClientRow {
    ClientRow {
        id: c.id.clone(),
        name: c.name.clone(),
        callback_urls: c.redirect_uris.clone(),
        kind: if c.public {
            "Public (PKCE)"
        } else {
            "Confidential"
        },
        public: c.public,
        created: format_time(c.created_at),
    }
}

#[derive(Default)]
struct ApiView {
    notice: Option<&'static str>,
    revealed: Option<Revealed>,
    client_form: ClientFormView,
    token_form: TokenFormView,
}

async fn api_page(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    view: ApiView,
    status: StatusCode,
) -> Result<Response, PageError> {
    let store = state.store();
    let clients = store.list_clients_by_owner(&user.id).await?;
    let now = state.now();
    let tokens = store
        .list_personal_tokens(&user.id)
        .await?
        .into_iter()
        .map(|t| TokenRow {
            expired: t.is_expired(now),
            id: t.id,
            name: t.name,
            scopes: t.scope.to_string(),
            last_used: t
                .last_used_at
                .map(format_time)
                .unwrap_or_else(|| "Never".into()),
            expires: format_time(t.expires_at),
        })
        .collect();
    let csrf = Csrf::ensure(headers);
    let page = ApiSettingsPage {
        csrf: csrf.form_token(state),
        username: user.username.clone(),
        notice: view.notice,
        revealed: view.revealed,
        allow_user_clients: state.settings().allow_user_clients,
        clients: clients.iter().map(client_row).collect(),
        client_form: view.client_form,
        tokens,
        token_form: view.token_form,
        scope_choices: TOKEN_SCOPE_CHOICES
            .iter()
            .map(|s| (*s, describe_scope(s)))
            .collect(),
        day_choices: PERSONAL_TOKEN_DAYS.to_vec(),
    };
    Ok(with_csrf(state, &csrf, render(status, &page)))
}

pub async fn api_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    let params = params.unwrap_or_default();
    let view = ApiView {
        notice: notice(&params),
        ..ApiView::default()
    };
    api_page(&state, &headers, &user, view, StatusCode::OK).await
}

pub async fn create_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    let field = |name| page_field(&form, name);
    Csrf::verify(&state, &headers, field("csrf_token")?)?;
    if !state.settings().allow_user_clients {
        return Err(PageError::forbidden(
            "Registering applications is switched off on this server.",
        ));
    }
    let name = field("name")?.unwrap_or("");
    let callback_text = field("callback_urls")?.unwrap_or("");
    let public = field("client_type")? == Some("public");
    let created = self_service::create_client(
        &**state.store(),
        &user,
        name,
        split_callback_urls(callback_text),
        public,
        state.now(),
    )
    .await;
    let (client, secret) = match created {
        Ok(done) => done,
        Err(SelfServiceError::Store(e)) => return Err(e.into()),
        Err(SelfServiceError::Fields(errors)) => {
            let view = ApiView {
                notice: None,
                revealed: None,
                client_form: ClientFormView {
                    name: name.to_owned(),
                    callback_urls: callback_text.to_owned(),
                    public,
                    errors,
                },
                token_form: TokenFormView::default(),
            };
            return api_page(&state, &headers, &user, view, StatusCode::BAD_REQUEST).await;
        }
    };
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: Some(&client.id),
        detail: Some("settings page".into()),
    };
    record(&state, &origin, "client.created", subject).await;
    let mut fields = vec![("Client ID", "new-client-id", client.id.clone())];
    if let Some(secret) = secret {
        fields.push(("Client secret", "new-client-secret", secret));
    }
    let revealed = Revealed {
        heading: format!("{} is registered", client.name),
        note: if client.public {
            "A public client has no secret: it proves itself with PKCE."
        } else {
            "Copy the client secret now: it is shown only once and stored only as a hash."
        },
        fields,
    };
    let view = ApiView {
        revealed: Some(revealed),
        ..ApiView::default()
    };
    api_page(&state, &headers, &user, view, StatusCode::OK).await
}

pub async fn edit_client_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    let client = self_service::owned_client(&**state.store(), &user, &id)
        .await?
        .ok_or_else(not_found)?;
    let form = ClientFormView {
        name: client.name.clone(),
        callback_urls: client.redirect_uris.join("\n"),
        public: client.public,
        errors: FieldErrors::default(),
    };
    edit_page(&state, &headers, &user, &client.id, form, StatusCode::OK)
}

fn edit_page(
    state: &AppState,
    headers: &HeaderMap,
    user: &User,
    client_id: &str,
    form: ClientFormView,
    status: StatusCode,
) -> Result<Response, PageError> {
    let csrf = Csrf::ensure(headers);
    let page = EditClientPage {
        csrf: csrf.form_token(state),
        username: user.username.clone(),
        client_id: client_id.to_owned(),
        form,
    };
    Ok(with_csrf(state, &csrf, render(status, &page)))
}

pub async fn edit_client_post(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Path(id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    let field = |name| page_field(&form, name);
    Csrf::verify(&state, &headers, field("csrf_token")?)?;
    let client = self_service::owned_client(&**state.store(), &user, &id)
        .await?
        .ok_or_else(not_found)?;
    let name = field("name")?.unwrap_or("");
    let callback_text = field("callback_urls")?.unwrap_or("");
    let updated = self_service::update_client(
        &**state.store(),
        &user,
        &client,
        name,
        split_callback_urls(callback_text),
    )
    .await;
    match updated {
        Ok(_) => {}
        Err(SelfServiceError::Store(e)) => return Err(e.into()),
        Err(SelfServiceError::Fields(errors)) => {
            let form = ClientFormView {
                name: name.to_owned(),
                callback_urls: callback_text.to_owned(),
                public: client.public,
                errors,
            };
            return edit_page(&state, &headers, &user, &id, form, StatusCode::BAD_REQUEST);
        }
    }
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: Some(&client.id),
        detail: Some("settings page".into()),
    };
    record(&state, &origin, "client.updated", subject).await;
    Ok(see_other(&format!("{API_PATH}?done=updated")))
}

pub async fn rotate_secret(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Path(id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    Csrf::verify(&state, &headers, page_field(&form, "csrf_token")?)?;
    let client = self_service::owned_client(&**state.store(), &user, &id)
        .await?
        .ok_or_else(not_found)?;
    if client.public {
        return Err(PageError::bad_request(
            "A public client has no secret to rotate.",
        ));
    }
    let secret = crate::admin::rotate_secret(&**state.store(), &client.id)
        .await
        .map_err(|e| match e {
            crate::admin::AdminError::Store(e) => PageError::from(e),
            crate::admin::AdminError::Invalid(m) => PageError::bad_request(m),
        })?;
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: Some(&client.id),
        detail: Some("settings page".into()),
    };
    record(&state, &origin, "client.secret_rotated", subject).await;
    let revealed = Revealed {
        heading: format!("New secret for {}", client.name),
        note: "The old secret no longer works. Copy the new one now: it is shown only once.",
        fields: vec![
            ("Client ID", "new-client-id", client.id.clone()),
            ("Client secret", "new-client-secret", secret),
        ],
    };
    let view = ApiView {
        revealed: Some(revealed),
        ..ApiView::default()
    };
    api_page(&state, &headers, &user, view, StatusCode::OK).await
}

pub async fn delete_client(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Path(id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    Csrf::verify(&state, &headers, page_field(&form, "csrf_token")?)?;
    let client = self_service::owned_client(&**state.store(), &user, &id)
        .await?
        .ok_or_else(not_found)?;
    // Deleting the client deletes every code, grant, token and consent it holds.
    state.store().delete_client(&client.id).await?;
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: Some(&client.id),
        detail: Some("settings page".into()),
    };
    record(&state, &origin, "client.deleted", subject).await;
    Ok(see_other(&format!("{API_PATH}?done=deleted")))
}

pub async fn create_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    let field = |name: &str| page_field(&form, name);
    Csrf::verify(&state, &headers, field("csrf_token")?)?;
    let name = field("token_name")?.unwrap_or("");
    // One checkbox per scope (`scope_openid=on`, …).
    let mut checked: Vec<&str> = Vec::new();
    for scope in TOKEN_SCOPE_CHOICES {
        if field(&format!("scope_{scope}"))?.is_some() {
            checked.push(scope);
        }
    }
    let other = field("other_scopes")?.unwrap_or("");
    let days = field("expires_in_days")?;
    let created = self_service::create_personal_token(
        &**state.store(),
        &user,
        name,
        &checked,
        other,
        days,
        state.now(),
    )
    .await;
    let (record_, token) = match created {
        Ok(done) => done,
        Err(SelfServiceError::Store(e)) => return Err(e.into()),
        Err(SelfServiceError::Fields(errors)) => {
            let view = ApiView {
                notice: None,
                revealed: None,
                client_form: ClientFormView::default(),
                token_form: TokenFormView {
                    name: name.to_owned(),
                    checked: checked.iter().map(|s| (*s).to_owned()).collect(),
                    other_scopes: other.to_owned(),
                    days: days.and_then(|d| d.parse().ok()).unwrap_or(30),
                    errors,
                },
            };
            return api_page(&state, &headers, &user, view, StatusCode::BAD_REQUEST).await;
        }
    };
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: None,
        detail: Some(format!(
            "personal access token id={} scope={}",
            record_.id, record_.scope
        )),
    };
    record(&state, &origin, "personal_token.created", subject).await;
    let revealed = Revealed {
        heading: format!("Personal access token {:?} created", record_.name),
        note: "Copy the token now: it is shown only once. Send it as `Authorization: Bearer …`.",
        fields: vec![("Token", "new-token", token)],
    };
    let view = ApiView {
        revealed: Some(revealed),
        ..ApiView::default()
    };
    api_page(&state, &headers, &user, view, StatusCode::OK).await
}

pub async fn revoke_token(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Path(id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, API_PATH);
    Csrf::verify(&state, &headers, page_field(&form, "csrf_token")?)?;
    if !state
        .store()
        .revoke_personal_token(&user.id, &id, state.now())
        .await?
    {
        return Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            message: "You have no personal access token with this id.".into(),
        });
    }
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: None,
        detail: Some(format!("personal access token id={id}")),
    };
    record(&state, &origin, "personal_token.revoked", subject).await;
    Ok(see_other(&format!("{API_PATH}?done=token_revoked")))
}

pub async fn apps_get(
    State(state): State<AppState>,
    headers: HeaderMap,
    Query(params): Query,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, APPS_PATH);
    let params = params.unwrap_or_default();
    let mut apps = Vec::new();
    for consent in state.store().list_consents(&user.id).await? {
        let name = state
            .store()
            .get_client(&consent.client_id)
            .await?
            .map(|c| c.name)
            .unwrap_or_else(|| "(deleted application)".into());
        apps.push(AppRow {
            permissions: consent
                .scope
                .iter()
                .map(|s| (s.to_owned(), describe_scope(s)))
                .collect(),
            client_id: consent.client_id,
            name,
            granted: format_time(consent.granted_at),
        });
    }
    let csrf = Csrf::ensure(&headers);
    let page = AppsPage {
        csrf: csrf.form_token(&state),
        username: user.username.clone(),
        notice: notice(&params),
        apps,
    };
    Ok(with_csrf(&state, &csrf, render(StatusCode::OK, &page)))
}

pub async fn revoke_app(
    State(state): State<AppState>,
    headers: HeaderMap,
    Extension(origin): Extension<Origin>,
    Path(client_id): Path<String>,
    PageForm(form): PageForm,
) -> Result<Response, PageError> {
    let user = user_or_sign_in!(state, headers, APPS_PATH);
    Csrf::verify(&state, &headers, page_field(&form, "csrf_token")?)?;
    // Scoped to this user: another user's consent for the same client is untouched.
    let revoked = state
        .store()
        .revoke_consent(&user.id, &client_id, state.now())
        .await?;
    if !revoked {
        return Err(PageError {
            status: StatusCode::NOT_FOUND,
            title: "Not found",
            message: "You have not authorized this application.".into(),
        });
    }
    let subject = Subject {
        tenant: Some(&user.tenant),
        actor: Some(&user.id),
        client_id: Some(&client_id),
        detail: Some("settings page: consent and tokens revoked".into()),
    };
    record(&state, &origin, "consent.revoked", subject).await;
    Ok(see_other(&format!("{APPS_PATH}?done=app_revoked")))
}

pub async fn settings_js() -> Response {
    static_asset(SETTINGS_JS, "text/javascript; charset=utf-8")
}
