//! HTTP pieces the daemon and every bridge share, one implementation each.

use std::time::Duration;

use axum::http::{HeaderMap, header};

/// The token of an `Authorization: Bearer <token>` header. The scheme is
/// matched in any case (RFC 9110 §11.1); another scheme, or no token, is
/// none. Compare what it gives in constant time ([`crate::Secret::matches`]).
pub fn bearer(headers: &HeaderMap) -> Option<&[u8]> {
    let v = headers.get(header::AUTHORIZATION)?.as_bytes();
    let (scheme, token) = (v.get(..7)?, v.get(7..)?);
    scheme.eq_ignore_ascii_case(b"bearer ").then_some(token).filter(|t| !t.is_empty())
}

/// How long a `Retry-After` header asks to wait, where it gives a number of
/// seconds (RFC 9110 §10.2.3; the date form is not taken: clocks differ).
/// Callers cap it (`outbox.retry_max`).
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers.get(header::RETRY_AFTER)?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn with(name: header::HeaderName, value: &[u8]) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from_bytes(value).unwrap());
        h
    }

    #[test]
    fn a_bearer_token_in_any_case_of_the_scheme_and_nothing_else() {
        for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
            assert_eq!(bearer(&with(header::AUTHORIZATION, format!("{scheme} t0k").as_bytes())), Some(&b"t0k"[..]), "{scheme}");
        }
        for not in [&b"Basic dDprCg=="[..], b"Bearer ", b"Bearer", b"Bearertok", b"", b"Token t"] {
            assert_eq!(bearer(&with(header::AUTHORIZATION, not)), None, "{:?}", String::from_utf8_lossy(not));
        }
        assert_eq!(bearer(&HeaderMap::new()), None);
        assert_eq!(bearer(&with(header::AUTHORIZATION, b"Bearer \xff\xfe")), Some(&b"\xff\xfe"[..]), "bytes, compared as they are");
    }

    #[test]
    fn retry_after_in_seconds_only() {
        assert_eq!(retry_after(&with(header::RETRY_AFTER, b"5")), Some(Duration::from_secs(5)));
        assert_eq!(retry_after(&with(header::RETRY_AFTER, b" 120 ")), Some(Duration::from_secs(120)));
        for not in [&b"Wed, 21 Oct 2015 07:28:00 GMT"[..], b"-1", b"1.5", b"", b"99999999999999999999999", b"\xff"] {
            assert_eq!(retry_after(&with(header::RETRY_AFTER, not)), None, "{:?}", String::from_utf8_lossy(not));
        }
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }
}
