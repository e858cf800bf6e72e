//! Redirect URIs: validated at registration, compared exactly at use (RFC 9700 §4.1.3,
//! OAuth 2.1 §2.3.1: simple string comparison, no normalisation, no wildcards).

use url::{Host, Url};

/// Why a URI cannot be registered as a redirect URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI {0:?} is not an absolute URI")]
    NotAbsolute(String),
    #[error("redirect URI {0:?} has a fragment, which RFC 6749 §3.1.2 forbids")]
    Fragment(String),
    #[error("redirect URI {0:?} uses plain http on a non-loopback host; use https")]
    InsecureHttp(String),
    #[error("redirect URI {0:?} carries user information")]
    UserInfo(String),
    #[error("redirect URI {0:?} has an unsupported scheme; use https, loopback http, or a reverse-domain private-use scheme")]
    Scheme(String),
    #[error("redirect URI {0:?} is longer than 2000 characters")]
    TooLong(String),
}

/// Checks a redirect URI offered for registration and returns it unchanged: the exact
/// string registered is the exact string later compared.
pub fn validate_registration(uri: &str) -> Result<String, RedirectUriError> {
    let owned = || uri.to_owned();
    if uri.len() > 2000 {
        return Err(RedirectUriError::TooLong(uri.chars().take(60).collect()));
    }
    if uri.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RedirectUriError::NotAbsolute(owned()));
    }
    let parsed = Url::parse(uri).map_err(|_| RedirectUriError::NotAbsolute(owned()))?;
    if parsed.fragment().is_some() || uri.contains('#') {
        return Err(RedirectUriError::Fragment(owned()));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(RedirectUriError::UserInfo(owned()));
    }
    match parsed.scheme() {
        "https" => Ok(owned()),
        "http" if is_loopback(&parsed) => Ok(owned()),
        "http" => Err(RedirectUriError::InsecureHttp(owned())),
        // RFC 8252 §7.1: native apps use private-use schemes in reverse-domain form.
        scheme if scheme.contains('.') => Ok(owned()),
        _ => Err(RedirectUriError::Scheme(owned())),
    }
}

fn is_loopback(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The registered URI equal to `requested`, byte for byte. Trailing slashes, case, extra
/// query parameters, percent-encoding variants and other ports all fail to match.
pub fn find_exact<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered
        .iter()
        .find(|r| r.as_str() == requested)
        .map(String::as_str)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_https_loopback_and_private_use() {
        for ok in [
            "https://app.example.com/cb",
            "http://127.0.0.1:9/cb",
            "http://localhost:3000/callback",
            "http://[::1]/cb",
            "com.example.app:/oauth",
            "https://app.example.com/cb?x=1",
        ] {
            assert_eq!(validate_registration(ok).as_deref(), Ok(ok), "{ok}");
        }
    }

    #[test]
    fn rejects_unsafe_uris() {
        for bad in [
            "/relative",
            "https://app.example.com/cb#frag",
            "http://app.example.com/cb",
            "https://user:pw@app.example.com/cb",
            "javascript:alert(1)",
            "data:text/html,hi",
            "https://app.example.com/c b",
        ] {
            assert!(validate_registration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn matching_is_exact() {
        let reg = vec!["https://app.example.com/cb".to_owned()];
        assert!(find_exact(&reg, "https://app.example.com/cb").is_some());
        for variant in [
            "https://app.example.com/cb/",
            "https://APP.example.com/cb",
            "https://app.example.com/CB",
            "https://app.example.com/cb?x=1",
            "https://app.example.com/%63b",
            "https://app.example.com:8443/cb",
            "https://app.example.com:443/cb",
            "http://app.example.com/cb",
        ] {
            assert!(find_exact(&reg, variant).is_none(), "{variant}");
        }
    }
}
