//! The protocol steps of the load, over real HTTP, as a client and a browser see them.
//! Every step reports whether its response arrived (acknowledged), was refused, or was
//! lost (the connection failed: the outcome is unknown).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tessera_testkit::Form;

/// A registered client, as `tessera client create --json` printed it.
#[derive(Clone, Debug)]
pub struct ClientCreds {
    pub id: String,
    pub secret: String,
}

/// The redirect URI every load client registers; nothing listens there.
pub const CALLBACK: &str = "http://127.0.0.1:9/cb";

#[derive(Clone, Debug)]
pub struct Tokens {
    pub access: String,
    pub refresh: String,
}

#[derive(Debug)]
pub enum Outcome<T> {
    /// The server answered with success.
    Ack(T),
    /// The server answered with a refusal or error (status and body).
    Refused(StatusCode, String),
    /// No answer: the request may or may not have taken effect.
    Lost(String),
}

fn lost<T>(e: reqwest::Error) -> Outcome<T> {
    Outcome::Lost(e.to_string())
}

/// An API client without cookies or redirects, with a bound on every request so that a
/// killed server never stalls the driver.
pub fn api_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

fn browser_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

async fn token_request(
    http: &reqwest::Client,
    origin: &str,
    client: &ClientCreds,
    form: &[(&str, &str)],
) -> Outcome<Tokens> {
    let resp = match http
        .post(format!("{origin}/oauth2/token"))
        .basic_auth(&client.id, Some(&client.secret))
        .form(form)
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return lost(e),
    };
    let status = resp.status();
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return lost(e),
    };
    if status != StatusCode::OK {
        return Outcome::Refused(status, body);
    }
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match (
        json["access_token"].as_str(),
        json["refresh_token"].as_str(),
    ) {
        (Some(a), Some(r)) => Outcome::Ack(Tokens {
            access: a.to_owned(),
            refresh: r.to_owned(),
        }),
        _ => Outcome::Refused(status, format!("no tokens in {body}")),
    }
}

pub async fn refresh(
    http: &reqwest::Client,
    origin: &str,
    client: &ClientCreds,
    refresh_token: &str,
) -> Outcome<Tokens> {
    token_request(
        http,
        origin,
        client,
        &[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ],
    )
    .await
}

/// RFC 7009 revocation of a refresh token (and with it its grant).
pub async fn revoke(
    http: &reqwest::Client,
    origin: &str,
    client: &ClientCreds,
    token: &str,
) -> Outcome<()> {
    match http
        .post(format!("{origin}/oauth2/revoke"))
        .basic_auth(&client.id, Some(&client.secret))
        .form(&[("token", token)])
        .send()
        .await
    {
        Ok(r) if r.status() == StatusCode::OK => Outcome::Ack(()),
        Ok(r) => {
            let status = r.status();
            Outcome::Refused(status, r.text().await.unwrap_or_default())
        }
        Err(e) => lost(e),
    }
}

/// RFC 7662: whether the token is active for `client`.
pub async fn introspect(
    http: &reqwest::Client,
    origin: &str,
    client: &ClientCreds,
    token: &str,
) -> Outcome<bool> {
    let resp = match http
        .post(format!("{origin}/oauth2/introspect"))
        .basic_auth(&client.id, Some(&client.secret))
        .form(&[("token", token)])
        .send()
        .await
    {
        Ok(r) => r,
        Err(e) => return lost(e),
    };
    let status = resp.status();
    let body = match resp.text().await {
        Ok(b) => b,
        Err(e) => return lost(e),
    };
    if status != StatusCode::OK {
        return Outcome::Refused(status, body);
    }
    let json: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    match json["active"].as_bool() {
        Some(active) => Outcome::Ack(active),
        None => Outcome::Refused(status, body),
    }
}

/// How far one authorization-code flow got.
#[derive(Debug, Default)]
pub struct FlowReport {
    /// The consent page was answered and the answer acknowledged.
    pub consented: bool,
    /// The code before its exchange (a graceful-restart test redeems it later).
    pub code: Option<String>,
    pub failure: Option<Outcome<()>>,
}

/// A browser signs in, consents when asked, and stops at the callback with a code.
pub async fn authorize(
    origin: &str,
    client: &ClientCreds,
    username: &str,
    password: &str,
    scope: &str,
) -> FlowReport {
    let http = browser_client();
    let mut report = FlowReport::default();
    let mut url = tessera_testkit::with_query(
        &format!("{origin}/oauth2/authorize"),
        &[
            ("response_type", "code"),
            ("client_id", &client.id),
            ("redirect_uri", CALLBACK),
            ("scope", scope),
            ("state", "faults"),
        ],
    );
    let mut pending: Option<(String, Vec<(String, String)>)> = None;
    let mut consent_posted = false;
    for _ in 0..8 {
        let sent = match pending.take() {
            Some((action, fields)) => {
                http.post(format!("{origin}{action}"))
                    .form(&fields)
                    .send()
                    .await
            }
            None => http.get(&url).send().await,
        };
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                report.failure = Some(lost(e));
                return report;
            }
        };
        let status = resp.status();
        if status.is_redirection() {
            let location = resp
                .headers()
                .get("location")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            if location.starts_with(CALLBACK) {
                report.consented = consent_posted;
                let code = url::Url::parse(&location).ok().and_then(|u| {
                    u.query_pairs()
                        .find(|(k, _)| k == "code")
                        .map(|(_, v)| v.into_owned())
                });
                match code {
                    Some(code) => report.code = Some(code),
                    None => {
                        report.failure = Some(Outcome::Refused(status, location));
                    }
                }
                return report;
            }
            url = if location.starts_with('/') {
                format!("{origin}{location}")
            } else {
                location
            };
            continue;
        }
        let body = match resp.text().await {
            Ok(b) => b,
            Err(e) => {
                report.failure = Some(lost(e));
                return report;
            }
        };
        let forms = Form::all(&body);
        if let Some(mut form) = forms.iter().find(|f| f.action == "/login").cloned() {
            form.set("username", username);
            form.set("password", password);
            pending = Some(("/login".into(), form.fields));
            continue;
        }
        if let Some(form) = forms.iter().find(|f| f.action == "/consent").cloned() {
            let mut fields = form.fields;
            fields.push(("decision".into(), "allow".into()));
            pending = Some(("/consent".into(), fields));
            consent_posted = true;
            continue;
        }
        report.failure = Some(Outcome::Refused(status, body));
        return report;
    }
    report.failure = Some(Outcome::Refused(
        StatusCode::LOOP_DETECTED,
        "too many steps".into(),
    ));
    report
}

/// Exchanges a code for tokens.
pub async fn redeem(
    http: &reqwest::Client,
    origin: &str,
    client: &ClientCreds,
    code: &str,
) -> Outcome<Tokens> {
    token_request(
        http,
        origin,
        client,
        &[
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CALLBACK),
        ],
    )
    .await
}
