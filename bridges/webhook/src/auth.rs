//! Who may post to an inbound endpoint: its signature (with the time it was
//! made, so that it cannot be replayed later), or its bearer token, and the
//! memory of signatures already taken, so that the same signed body is not
//! taken twice under a new idempotency key.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use axum::http::HeaderMap;
use causeway_core::sign;

use crate::config::{InboundOptions, SignatureScheme};

pub const SIGNATURE_HEADER: &str = "x-causeway-signature";
pub const TIMESTAMP_HEADER: &str = "x-causeway-timestamp";
pub const GITHUB_SIGNATURE_HEADER: &str = "x-hub-signature-256";
pub const SLACK_SIGNATURE_HEADER: &str = "x-slack-signature";
pub const SLACK_TIMESTAMP_HEADER: &str = "x-slack-request-timestamp";

/// How long a GitHub-style signature (over the body alone, no time) is
/// remembered: a replay within it is refused, one after it cannot be told.
pub const UNTIMED_MEMORY: Duration = Duration::from_secs(24 * 3600);
/// Signatures remembered at most (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 100_000;

/// Why a request is not let in.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// No valid signature or token.
    Unauthorized(&'static str),
    /// Signed too long ago, or in the future beyond the tolerance.
    Stale(String),
}

/// A request that is let in: by its signature (remember it under `key`
/// until `until_ms`), or by its token or an open endpoint.
#[derive(Debug, PartialEq, Eq)]
pub enum Admitted {
    Signed { key: String, until_ms: i64 },
    Token,
    Open,
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// Whether the request's bearer token is `secret` (in constant time).
pub fn bearer_matches(secret: &causeway_core::Secret, headers: &HeaderMap) -> bool {
    causeway_core::http::bearer(headers).is_some_and(|t| secret.matches(t))
}

/// Let a request in or not. With `hmac_secret` set, only a valid
/// signature does (a token alone is not enough); else the token; else an
/// endpoint that says `allow_unauthenticated`.
pub fn admit(inb: &InboundOptions, headers: &HeaderMap, body: &[u8], now_ms: i64) -> Result<Admitted, Refused> {
    if let Some(secret) = &inb.hmac_secret {
        let secret = secret.expose().as_bytes();
        let tolerance = inb.signature_tolerance.as_millis() as i64;
        let timed = |ts_header: &str, sig_header: &str, verify: fn(&[u8], i64, &[u8], &str) -> bool| {
            let (Some(ts), Some(sig)) = (header(headers, ts_header), header(headers, sig_header)) else {
                return Err(Refused::Unauthorized("missing signature or timestamp"));
            };
            let ts: i64 = ts.parse().map_err(|_| Refused::Unauthorized("the timestamp is not a number of seconds"))?;
            if !verify(secret, ts, body, sig) {
                return Err(Refused::Unauthorized("wrong signature"));
            }
            let age = now_ms - ts.saturating_mul(1000);
            if age.abs() > tolerance {
                return Err(Refused::Stale(format!("signed {}s from now; at most {}s are accepted", age / 1000, tolerance / 1000)));
            }
            Ok(Admitted::Signed { key: sig.to_string(), until_ms: ts.saturating_mul(1000) + tolerance })
        };
        return match inb.signature {
            SignatureScheme::Causeway => timed(TIMESTAMP_HEADER, SIGNATURE_HEADER, sign::verify_at),
            SignatureScheme::Slack => timed(SLACK_TIMESTAMP_HEADER, SLACK_SIGNATURE_HEADER, sign::verify_slack),
            SignatureScheme::Github => match header(headers, GITHUB_SIGNATURE_HEADER) {
                Some(sig) if sign::verify(secret, body, sig) => {
                    Ok(Admitted::Signed { key: sig.to_string(), until_ms: now_ms + UNTIMED_MEMORY.as_millis() as i64 })
                }
                Some(_) => Err(Refused::Unauthorized("wrong signature")),
                None => Err(Refused::Unauthorized("missing signature")),
            },
        };
    }
    if let Some(token) = &inb.token {
        return match causeway_core::http::bearer(headers) {
            Some(t) if token.matches(t) => Ok(Admitted::Token),
            _ => Err(Refused::Unauthorized("missing or wrong token")),
        };
    }
    if inb.allow_unauthenticated {
        return Ok(Admitted::Open);
    }
    Err(Refused::Unauthorized("the endpoint takes no requests"))
}

/// Signatures taken lately, per endpoint, each with the id of what it
/// carried: the same signature again under another id is a replay.
#[derive(Default)]
pub struct Seen {
    inner: Mutex<SeenInner>,
}

#[derive(Default)]
struct SeenInner {
    by_key: HashMap<(String, String), (i64, Option<String>)>,
    order: VecDeque<(i64, (String, String))>,
}

impl Seen {
    /// Whether `key` was taken on `endpoint` before for something other
    /// than `id` (the same id again is a plain duplicate, answered as one).
    pub fn is_replay(&self, endpoint: &str, key: &str, id: Option<&str>, now_ms: i64) -> bool {
        let st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match st.by_key.get(&(endpoint.to_string(), key.to_string())) {
            Some((until, seen_id)) if *until >= now_ms => seen_id.as_deref() != id || id.is_none(),
            _ => false,
        }
    }

    /// Remember that `key` was taken on `endpoint` for `id`, until `until_ms`.
    pub fn remember(&self, endpoint: &str, key: &str, id: Option<String>, until_ms: i64, now_ms: i64) {
        let mut st = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let k = (endpoint.to_string(), key.to_string());
        st.by_key.insert(k.clone(), (until_ms, id));
        st.order.push_back((until_ms, k));
        while let Some((until, _)) = st.order.front() {
            if *until >= now_ms && st.order.len() <= MAX_REMEMBERED {
                break;
            }
            let (until, k) = st.order.pop_front().expect("front exists");
            if st.by_key.get(&k).is_some_and(|(u, _)| *u == until) {
                st.by_key.remove(&k);
            }
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().unwrap().by_key.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::Secret;

    fn inbound(json: &str) -> InboundOptions {
        serde_json::from_str(json).unwrap()
    }

    fn headers(pairs: &[(&str, String)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(), v.parse().unwrap());
        }
        h
    }

    const NOW: i64 = 1_800_000_000_000;

    #[test]
    fn a_signature_binds_its_time_and_ages_out() {
        let inb = inbound(r#"{"hmac_secret": "k", "token": "t"}"#);
        let ts = NOW / 1000;
        let sig = sign::sign_at(b"k", ts, b"body");
        let ok = headers(&[(TIMESTAMP_HEADER, ts.to_string()), (SIGNATURE_HEADER, sig.clone())]);
        assert_eq!(admit(&inb, &ok, b"body", NOW), Ok(Admitted::Signed { key: sig.clone(), until_ms: NOW + 300_000 }));
        assert!(matches!(admit(&inb, &ok, b"body", NOW + 301_000), Err(Refused::Stale(_))), "five minutes later");
        assert!(matches!(admit(&inb, &ok, b"body", NOW - 301_000), Err(Refused::Stale(_))), "from the future");
        assert!(matches!(admit(&inb, &ok, b"other", NOW), Err(Refused::Unauthorized(_))));
        let moved = headers(&[(TIMESTAMP_HEADER, (ts + 1).to_string()), (SIGNATURE_HEADER, sig.clone())]);
        assert!(matches!(admit(&inb, &moved, b"body", NOW), Err(Refused::Unauthorized(_))), "a new time needs a new signature");
        let untimed = headers(&[(SIGNATURE_HEADER, sign::sign(b"k", b"body"))]);
        assert!(matches!(admit(&inb, &untimed, b"body", NOW), Err(Refused::Unauthorized(_))));
        let token_only = headers(&[("authorization", "Bearer t".into())]);
        assert!(matches!(admit(&inb, &token_only, b"body", NOW), Err(Refused::Unauthorized(_))), "a token alone is not enough");
        for junk in ["", "x", "99999999999999999999999"] {
            let h = headers(&[(TIMESTAMP_HEADER, junk.into()), (SIGNATURE_HEADER, sig.clone())]);
            assert!(admit(&inb, &h, b"body", NOW).is_err(), "{junk:?}");
        }
    }

    #[test]
    fn slack_and_github_schemes() {
        let slack = inbound(r#"{"hmac_secret": "k", "signature": "slack", "signature_tolerance": "1m"}"#);
        let ts = NOW / 1000;
        let sig = sign::sign(b"k", format!("v0:{ts}:body").as_bytes()).replace("sha256=", "v0=");
        let h = headers(&[(SLACK_TIMESTAMP_HEADER, ts.to_string()), (SLACK_SIGNATURE_HEADER, sig)]);
        assert!(matches!(admit(&slack, &h, b"body", NOW), Ok(Admitted::Signed { .. })));
        assert!(matches!(admit(&slack, &h, b"body", NOW + 61_000), Err(Refused::Stale(_))));
        let github = inbound(r#"{"hmac_secret": "k", "signature": "github"}"#);
        let h = headers(&[(GITHUB_SIGNATURE_HEADER, sign::sign(b"k", b"body"))]);
        assert!(matches!(admit(&github, &h, b"body", NOW), Ok(Admitted::Signed { until_ms, .. }) if until_ms == NOW + 86_400_000));
        assert!(admit(&github, &h, b"bodx", NOW).is_err());
    }

    #[test]
    fn tokens_and_open_endpoints() {
        let inb = InboundOptions { token: Some(Secret::new("t")), ..inbound(r#"{"allow_unauthenticated": true}"#) };
        assert_eq!(admit(&inb, &headers(&[("authorization", "bearer t".into())]), b"", NOW), Ok(Admitted::Token));
        assert!(admit(&inb, &headers(&[("authorization", "Bearer u".into())]), b"", NOW).is_err());
        assert_eq!(admit(&inbound(r#"{"allow_unauthenticated": true}"#), &HeaderMap::new(), b"", NOW), Ok(Admitted::Open));
    }

    #[test]
    fn a_signature_taken_once_is_a_replay_under_another_id_and_forgotten_in_time() {
        let seen = Seen::default();
        assert!(!seen.is_replay("a", "sig1", Some("m1"), NOW));
        seen.remember("a", "sig1", Some("m1".into()), NOW + 1000, NOW);
        assert!(seen.is_replay("a", "sig1", Some("m2"), NOW), "a fresh id");
        assert!(seen.is_replay("a", "sig1", None, NOW), "no id");
        assert!(!seen.is_replay("a", "sig1", Some("m1"), NOW), "the same id: a duplicate, not a replay");
        assert!(!seen.is_replay("b", "sig1", Some("m2"), NOW), "per endpoint");
        assert!(!seen.is_replay("a", "sig1", Some("m2"), NOW + 1001), "after its time");
        // Expired ones are forgotten as new ones come.
        for i in 0..10 {
            seen.remember("a", &format!("s{i}"), None, NOW + 5000 + i, NOW + 2000);
        }
        assert_eq!(seen.len(), 10);
    }
}
