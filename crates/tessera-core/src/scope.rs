//! Scope sets (RFC 6749 §3.3).

use std::collections::BTreeSet;
use std::fmt;

use crate::OAuthError;

/// Space-separated scope tokens, order-insensitive and deduplicated.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ScopeSet(BTreeSet<String>);

pub const OPENID: &str = "openid";
pub const OFFLINE_ACCESS: &str = "offline_access";

/// Scopes a client may request when its registration names none.
pub const DEFAULT_ALLOWED: &str = "openid profile email offline_access";

impl ScopeSet {
    /// Parses a scope string. RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E ).
    pub fn parse(text: &str) -> Result<ScopeSet, OAuthError> {
        let mut set = BTreeSet::new();
        for token in text.split(' ').filter(|t| !t.is_empty()) {
            let valid = token
                .bytes()
                .all(|b| b == 0x21 || (0x23..=0x5b).contains(&b) || (0x5d..=0x7e).contains(&b));
            if !valid || token.len() > 256 {
                return Err(OAuthError::invalid_scope(
                    "scope contains a character RFC 6749 §3.3 forbids",
                ));
            }
            set.insert(token.to_owned());
        }
        Ok(ScopeSet(set))
    }

    pub fn empty() -> ScopeSet {
        ScopeSet(BTreeSet::new())
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.contains(scope)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn is_subset(&self, other: &ScopeSet) -> bool {
        self.0.is_subset(&other.0)
    }

    pub fn union(&self, other: &ScopeSet) -> ScopeSet {
        ScopeSet(self.0.union(&other.0).cloned().collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The scopes of `self` not in `allowed`, for error messages.
    pub fn not_in<'a>(&'a self, allowed: &ScopeSet) -> Vec<&'a str> {
        self.0
            .iter()
            .filter(|s| !allowed.0.contains(*s))
            .map(String::as_str)
            .collect()
    }
}

impl fmt::Display for ScopeSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for s in &self.0 {
            if !first {
                f.write_str(" ")?;
            }
            f.write_str(s)?;
            first = false;
        }
        Ok(())
    }
}

impl TryFrom<String> for ScopeSet {
    type Error = OAuthError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        ScopeSet::parse(&value)
    }
}

impl From<ScopeSet> for String {
    fn from(value: ScopeSet) -> Self {
        value.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_dedups_and_orders() {
        let s = ScopeSet::parse("b a  b").unwrap();
        assert_eq!(s.to_string(), "a b");
    }

    #[test]
    fn rejects_forbidden_characters() {
        assert!(ScopeSet::parse("a\"b").is_err());
        assert!(ScopeSet::parse("a\\b").is_err());
        assert!(ScopeSet::parse("read:all").is_ok());
    }

    #[test]
    fn subset() {
        let a = ScopeSet::parse("a").unwrap();
        let ab = ScopeSet::parse("a b").unwrap();
        assert!(a.is_subset(&ab));
        assert!(!ab.is_subset(&a));
        assert_eq!(ab.not_in(&a), vec!["b"]);
    }
}
