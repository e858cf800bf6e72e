//! Request parameters (query strings and form bodies) as RFC 6749 §3.1 reads them.

use std::collections::BTreeMap;

use crate::OAuthError;

/// Parameters that RFC 8707 (`resource`) and common practice (`audience`) allow to repeat.
const REPEATABLE: &[&str] = &["resource", "audience"];
/// More parameters than any legitimate OAuth request carries.
const MAX_PARAMS: usize = 64;
/// Longer than any legitimate value (state, nonce, tokens, redirect URIs).
pub const MAX_VALUE_LEN: usize = 4096;

/// Decoded `application/x-www-form-urlencoded` parameters.
#[derive(Debug, Default, Clone)]
pub struct Params {
    values: BTreeMap<String, Vec<String>>,
}

impl Params {
    /// Decodes `input`. Invalid UTF-8 after percent-decoding, too many parameters, or an
    /// oversized value is an `invalid_request`.
    pub fn parse(input: &[u8]) -> Result<Params, OAuthError> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut count = 0usize;
        for (key, value) in url::form_urlencoded::parse(input) {
            count += 1;
            if count > MAX_PARAMS {
                return Err(OAuthError::invalid_request("too many parameters"));
            }
            // form_urlencoded decodes lossily; a replacement character means the
            // percent-encoded bytes were not UTF-8.
            if key.contains('\u{FFFD}') || value.contains('\u{FFFD}') {
                return Err(OAuthError::invalid_request(
                    "parameters must be UTF-8 after percent-decoding",
                ));
            }
            if value.len() > MAX_VALUE_LEN || key.len() > 128 {
                return Err(OAuthError::invalid_request(format!(
                    "parameter {} is too long",
                    truncate(&key)
                )));
            }
            // RFC 6749 §3.1: a parameter sent without a value is treated as omitted.
            if value.is_empty() {
                values.entry(key.into_owned()).or_default();
                continue;
            }
            values
                .entry(key.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Ok(Params { values })
    }

    /// The single value of `name`. RFC 6749 §3.1: parameters MUST NOT be included more
    /// than once, so a repeated one is an `invalid_request`.
    pub fn single(&self, name: &str) -> Result<Option<&str>, OAuthError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one.as_str())),
            Some(_) => Err(OAuthError::invalid_request(format!(
                "parameter {name} is repeated"
            ))),
        }
    }

    /// Like [`Params::single`], but absence is an `invalid_request` too.
    pub fn required(&self, name: &str) -> Result<&str, OAuthError> {
        self.single(name)?
            .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter {name}")))
    }

    /// Every value of a repeatable parameter.
    pub fn multi(&self, name: &str) -> Vec<&str> {
        debug_assert!(REPEATABLE.contains(&name));
        self.values
            .get(name)
            .map(|v| v.iter().map(String::as_str).collect())
            .unwrap_or_default()
    }

    /// Whether `name` was present at all, even empty.
    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    /// Whether `name` appeared with an empty value only (e.g. `scope=`).
    pub fn is_empty_value(&self, name: &str) -> bool {
        matches!(self.values.get(name), Some(v) if v.is_empty())
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeated_parameter_is_invalid_request() {
        let p = Params::parse(b"a=1&a=2&b=3").unwrap();
        assert_eq!(p.single("b").unwrap(), Some("3"));
        assert_eq!(
            p.single("a").unwrap_err().code,
            crate::ErrorCode::InvalidRequest
        );
    }

    #[test]
    fn empty_value_is_omitted() {
        let p = Params::parse(b"scope=&x=1").unwrap();
        assert_eq!(p.single("scope").unwrap(), None);
        assert!(p.is_empty_value("scope"));
        assert!(p.required("scope").is_err());
    }

    #[test]
    fn invalid_utf8_is_rejected() {
        assert!(Params::parse(b"a=%ff%fe").is_err());
        assert!(Params::parse(b"a=%E2%82%AC").is_ok());
    }

    #[test]
    fn resource_may_repeat() {
        let p = Params::parse(b"resource=https%3A%2F%2Fa&resource=https%3A%2F%2Fb").unwrap();
        assert_eq!(p.multi("resource"), vec!["https://a", "https://b"]);
    }

    #[test]
    fn too_many_or_too_long_is_rejected() {
        let many: String = (0..100).map(|i| format!("k{i}=v&")).collect();
        assert!(Params::parse(many.as_bytes()).is_err());
        let long = format!("a={}", "x".repeat(MAX_VALUE_LEN + 1));
        assert!(Params::parse(long.as_bytes()).is_err());
    }
}
