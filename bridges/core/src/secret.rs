//! Secrets from the config: never printed, compared in constant time.

use serde::Deserialize;

/// A secret string (token, password, HMAC key). `Debug` and `Display` never
/// show it.
#[derive(Clone, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Compare with `other` in time that depends only on the lengths.
    pub fn matches(&self, other: &[u8]) -> bool {
        constant_time_eq(self.0.as_bytes(), other)
    }
}

/// Written as `***`: an options dump never holds the secret.
impl serde::Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("***")
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// Constant-time equality of two byte strings (time depends only on lengths).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.len() == b.len() && bool::from(a.ct_eq(b))
}

/// A new key: 32 random bytes from the operating system, as hex.
pub fn random_key() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system's random source");
    hex::encode(bytes)
}

/// A URL as it may be written to a log or a stored error: scheme, host and
/// port only, the rest elided (a webhook URL often carries its secret in
/// the path or the query, a signed link in its query).
pub fn url_for_log(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => {
            let host = u.host_str().unwrap_or("?");
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let rest = if u.path().len() > 1 || u.query().is_some() { "/…" } else { "" };
            format!("{}://{host}{port}{rest}", u.scheme())
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// A link someone else chose, as it may be logged: without its query and
/// user info (where signatures and tokens ride), the path kept.
pub fn link_for_log(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut u) => {
            let had_query = u.query().is_some();
            u.set_query(None);
            u.set_fragment(None);
            let _ = u.set_username("");
            let _ = u.set_password(None);
            let mut s = u.to_string();
            if had_query {
                s.push_str("?…");
            }
            s
        }
        Err(_) => "(not a URL)".into(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_32_random_bytes() {
        let (a, b) = (random_key(), random_key());
        assert_eq!((a.len(), b.len()), (64, 64));
        assert_ne!(a, b);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
    }

    #[test]
    fn urls_lose_what_may_be_secret_before_they_are_logged() {
        assert_eq!(url_for_log("https://hooks.example/services/T000/B000/XXXXsecret?token=abc"), "https://hooks.example/…");
        assert_eq!(url_for_log("http://127.0.0.1:9/"), "http://127.0.0.1:9");
        assert_eq!(url_for_log("http://user:pw@h/x"), "http://h/…");
        assert_eq!(url_for_log("nonsense"), "(not a URL)");
        assert_eq!(link_for_log("http://u:p@files/a/b.png?sig=123#f"), "http://files/a/b.png?…");
        assert_eq!(link_for_log("https://files/a.png"), "https://files/a.png");
    }

    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let s = Secret::new("hunter2");
        assert_eq!(format!("{s:?}"), "Secret(***)");
        assert!(s.matches(b"hunter2"));
        assert!(!s.matches(b"hunter3"));
        assert!(!s.matches(b"hunter"));
    }
}
