//! A minimal browser: keeps cookies, follows our own redirects, fills the login form and
//! answers the consent page, and stops at the client's redirect URI.

use std::collections::HashMap;

use reqwest::StatusCode;
use scraper::{Html, Selector};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentChoice {
    Allow,
    Deny,
}

/// The authorization response as the client receives it.
#[derive(Debug, Clone)]
pub struct Callback {
    pub url: String,
    /// "query", "fragment" or "form_post".
    pub mode: &'static str,
    pub params: HashMap<String, String>,
}

impl Callback {
    pub fn get(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
    pub fn code(&self) -> &str {
        self.get("code")
            .unwrap_or_else(|| panic!("no code in callback {}", self.url))
    }
}

/// Why the browser stopped before reaching the client.
#[derive(Debug)]
pub enum Stop {
    /// A page that is neither a login, a consent nor a form_post response.
    Page { status: StatusCode, body: String },
    /// The login page, when no credentials were given (or they were refused).
    Login { body: String },
    /// The consent page, when no choice was given.
    Consent { body: String },
}

/// A form on a page: its action and every named input with its value.
#[derive(Debug, Clone)]
pub struct Form {
    pub action: String,
    pub method: String,
    pub id: Option<String>,
    pub fields: Vec<(String, String)>,
}

impl Form {
    /// Every form of `html`.
    pub fn all(html: &str) -> Vec<Form> {
        let doc = Html::parse_document(html);
        let forms = Selector::parse("form").expect("selector");
        let inputs = Selector::parse("input[name]").expect("selector");
        doc.select(&forms)
            .map(|f| Form {
                action: f.value().attr("action").unwrap_or("").to_owned(),
                method: f.value().attr("method").unwrap_or("get").to_lowercase(),
                id: f.value().attr("id").map(str::to_owned),
                fields: f
                    .select(&inputs)
                    .map(|i| {
                        (
                            i.value().attr("name").unwrap_or("").to_owned(),
                            i.value().attr("value").unwrap_or("").to_owned(),
                        )
                    })
                    .collect(),
            })
            .collect()
    }

    pub fn with_action(html: &str, action: &str) -> Option<Form> {
        Self::all(html).into_iter().find(|f| f.action == action)
    }

    pub fn set(&mut self, name: &str, value: &str) {
        match self.fields.iter_mut().find(|(n, _)| n == name) {
            Some(f) => f.1 = value.to_owned(),
            None => self.fields.push((name.to_owned(), value.to_owned())),
        }
    }

    pub fn field(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

pub struct Browser {
    pub http: reqwest::Client,
    origin: String,
}

impl Browser {
    pub fn new(origin: &str) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .cookie_store(true)
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .expect("client"),
            origin: origin.to_owned(),
        }
    }

    fn absolute(&self, location: &str) -> String {
        if location.starts_with('/') {
            format!("{}{}", self.origin, location)
        } else {
            location.to_owned()
        }
    }

    pub async fn get(&self, url: &str) -> reqwest::Response {
        self.http.get(self.absolute(url)).send().await.expect("GET")
    }

    pub async fn post(&self, url: &str, fields: &[(String, String)]) -> reqwest::Response {
        self.http
            .post(self.absolute(url))
            .form(fields)
            .send()
            .await
            .expect("POST")
    }

    /// Signs in on the standalone login page.
    pub async fn sign_in(&self, username: &str, password: &str) -> reqwest::Response {
        let page = self.get("/login").await.text().await.expect("body");
        let mut form = Form::with_action(&page, "/login").expect("login form");
        form.set("username", username);
        form.set("password", password);
        self.post("/login", &form.fields).await
    }

    /// Follows an authorization request through sign-in and consent to the client's
    /// redirect URI. `login` is used at most once; `consent` answers the consent page.
    pub async fn authorize(
        &self,
        url: &str,
        login: Option<(&str, &str)>,
        consent: Option<ConsentChoice>,
    ) -> Result<Callback, Stop> {
        let mut login = login;
        let mut consent = consent;
        let mut resp = self.get(url).await;
        for _ in 0..12 {
            let status = resp.status();
            if status.is_redirection() {
                let loc = resp
                    .headers()
                    .get("location")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let abs = self.absolute(&loc);
                if abs.starts_with(&format!("{}/", self.origin)) {
                    resp = self.get(&abs).await;
                    continue;
                }
                return Ok(callback_from_url(&abs));
            }
            let body = resp.text().await.expect("body");
            let forms = Form::all(&body);
            if let Some(mut form) = forms.iter().find(|f| f.action == "/login").cloned() {
                let Some((u, p)) = login.take() else {
                    return Err(Stop::Login { body });
                };
                form.set("username", u);
                form.set("password", p);
                resp = self.post("/login", &form.fields).await;
                continue;
            }
            if let Some(form) = forms.iter().find(|f| f.action == "/consent").cloned() {
                let Some(choice) = consent.take() else {
                    return Err(Stop::Consent { body });
                };
                let mut fields = form.fields.clone();
                fields.push((
                    "decision".into(),
                    match choice {
                        ConsentChoice::Allow => "allow",
                        ConsentChoice::Deny => "deny",
                    }
                    .into(),
                ));
                resp = self.post("/consent", &fields).await;
                continue;
            }
            if let Some(form) = forms.iter().find(|f| f.id.as_deref() == Some("form_post")) {
                return Ok(Callback {
                    url: form.action.clone(),
                    mode: "form_post",
                    params: form.fields.iter().cloned().collect(),
                });
            }
            return Err(Stop::Page { status, body });
        }
        Err(Stop::Page {
            status: StatusCode::LOOP_DETECTED,
            body: "too many steps".into(),
        })
    }
}

fn callback_from_url(url: &str) -> Callback {
    let parsed = url::Url::parse(url).expect("callback URL");
    let (mode, params): (&'static str, HashMap<String, String>) = match parsed.fragment() {
        Some(f) if !f.is_empty() => (
            "fragment",
            url::form_urlencoded::parse(f.as_bytes())
                .into_owned()
                .collect(),
        ),
        _ => ("query", parsed.query_pairs().into_owned().collect()),
    };
    Callback {
        url: url.to_owned(),
        mode,
        params,
    }
}
