//! One keep-alive HTTP/1.1 connection per simulated client, with its own cookie jar.
//!
//! A raw hyper connection rather than a pooled client: each load task owns exactly one
//! socket (as `oha -c N` does), and the client costs as little CPU as possible, since it
//! shares the machine with the server it measures.

use std::collections::BTreeMap;

use anyhow::{anyhow, bail, Context, Result};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, COOKIE, HOST, LOCATION, SET_COOKIE};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use url::Url;

/// The answer to one request.
pub struct Reply {
    pub status: StatusCode,
    pub location: Option<String>,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> Result<serde_json::Value> {
        serde_json::from_slice(&self.body).context("response body is not JSON")
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// A connection to one origin (loopback only).
pub struct Conn {
    authority: String,
    sender: Option<SendRequest<Full<Bytes>>>,
    cookies: BTreeMap<String, String>,
}

/// Refuses anything but a plain-HTTP loopback URL: load is never sent elsewhere.
pub fn loopback(url: &str) -> Result<Url> {
    let url = Url::parse(url).with_context(|| format!("not a URL: {url}"))?;
    let host_ok = matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    if url.scheme() != "http" || !host_ok {
        bail!("refusing to send load to {url}: only http://127.0.0.1 is allowed");
    }
    Ok(url)
}

/// Path and query of `url`, the request target of an origin-form request.
pub fn request_target(url: &Url) -> String {
    match url.query() {
        Some(q) => format!("{}?{q}", url.path()),
        None => url.path().to_owned(),
    }
}

impl Conn {
    pub fn new(origin: &Url) -> Result<Conn> {
        let host = origin
            .host_str()
            .ok_or_else(|| anyhow!("no host in {origin}"))?;
        let port = origin
            .port_or_known_default()
            .ok_or_else(|| anyhow!("no port in {origin}"))?;
        Ok(Conn {
            authority: format!("{host}:{port}"),
            sender: None,
            cookies: BTreeMap::new(),
        })
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>> {
        let reusable = self
            .sender
            .as_ref()
            .is_some_and(|s| !s.is_closed() && s.is_ready());
        if !reusable {
            let stream = tokio::net::TcpStream::connect(&self.authority)
                .await
                .with_context(|| format!("connecting to {}", self.authority))?;
            stream.set_nodelay(true)?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            // The connection task ends when the sender is dropped or the peer closes.
            tokio::spawn(connection);
            self.sender = Some(sender);
        }
        self.sender.as_mut().ok_or_else(|| anyhow!("no connection"))
    }

    /// Sends one request; `body` is a form (`application/x-www-form-urlencoded`) when set.
    pub async fn send(
        &mut self,
        method: Method,
        target: &str,
        authorization: Option<&HeaderValue>,
        form: Option<Bytes>,
    ) -> Result<Reply> {
        let mut builder = Request::builder()
            .method(method)
            .uri(target)
            .header(HOST, self.authority.as_str());
        if let Some(a) = authorization {
            builder = builder.header(AUTHORIZATION, a);
        }
        if !self.cookies.is_empty() {
            let jar = self
                .cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ");
            builder = builder.header(COOKIE, jar);
        }
        let body = match form {
            Some(b) => {
                builder = builder.header(CONTENT_TYPE, "application/x-www-form-urlencoded");
                b
            }
            None => Bytes::new(),
        };
        let request = builder.body(Full::new(body))?;
        let sender = self.sender().await?;
        let response = match sender.send_request(request).await {
            Ok(r) => r,
            Err(e) => {
                // A dead keep-alive connection: the next request reconnects.
                self.sender = None;
                return Err(e.into());
            }
        };
        let status = response.status();
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        for set in response.headers().get_all(SET_COOKIE) {
            self.keep_cookie(set.to_str().unwrap_or_default());
        }
        let body = response.into_body().collect().await?.to_bytes();
        Ok(Reply {
            status,
            location,
            body,
        })
    }

    pub async fn get(&mut self, target: &str) -> Result<Reply> {
        self.send(Method::GET, target, None, None).await
    }

    pub async fn post_form(
        &mut self,
        target: &str,
        authorization: Option<&HeaderValue>,
        fields: &[(&str, &str)],
    ) -> Result<Reply> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(Method::POST, target, authorization, Some(Bytes::from(body)))
            .await
    }

    fn keep_cookie(&mut self, set_cookie: &str) {
        let pair = set_cookie.split(';').next().unwrap_or_default();
        if let Some((name, value)) = pair.split_once('=') {
            let (name, value) = (name.trim(), value.trim());
            let expired = set_cookie.to_ascii_lowercase().contains("max-age=0");
            if expired || value.is_empty() {
                self.cookies.remove(name);
            } else {
                self.cookies.insert(name.to_owned(), value.to_owned());
            }
        }
    }
}

/// `Authorization: Basic` for a client (RFC 6749 §2.3.1: form-encode id and secret first).
pub fn basic_auth(client_id: &str, client_secret: &str) -> Result<HeaderValue> {
    use base64::Engine;
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let raw = format!("{}:{}", enc(client_id), enc(client_secret));
    let value = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    );
    Ok(HeaderValue::from_str(&value)?)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn only_loopback_http_is_accepted() {
        assert!(loopback("http://127.0.0.1:3100/token").is_ok());
        assert!(loopback("http://localhost:1/").is_ok());
        assert!(loopback("https://127.0.0.1:3100/token").is_err());
        assert!(loopback("http://example.com/token").is_err());
        assert!(loopback("http://10.0.0.1/token").is_err());
    }

    #[test]
    fn basic_auth_form_encodes_before_base64() {
        let v = basic_auth("a b", "s:e").unwrap();
        // "a+b:s%3Ae"
        assert_eq!(v.to_str().unwrap(), "Basic YStiOnMlM0Fl");
    }

    #[test]
    fn cookies_are_kept_replaced_and_expired() {
        let mut c = Conn::new(&Url::parse("http://127.0.0.1:1").unwrap()).unwrap();
        c.keep_cookie("sid=abc; Path=/; HttpOnly");
        c.keep_cookie("csrf=1");
        c.keep_cookie("sid=def; Path=/");
        assert_eq!(c.cookies.get("sid").map(String::as_str), Some("def"));
        c.keep_cookie("csrf=; Max-Age=0");
        assert!(!c.cookies.contains_key("csrf"));
    }

    #[test]
    fn request_target_keeps_the_query() {
        let u = Url::parse("http://127.0.0.1:1/a/b?x=1&y=2").unwrap();
        assert_eq!(request_target(&u), "/a/b?x=1&y=2");
    }
}
