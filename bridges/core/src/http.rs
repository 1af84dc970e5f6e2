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

/// Why a body read with a bound ended early.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// More than the bound (declared by `Content-Length`, or read).
    #[error("larger than {0} bytes")]
    TooLarge(u64),
    /// The connection failed or timed out while reading.
    #[error("{0}")]
    Failed(reqwest::Error),
}

/// The body of `resp`, a chunk at a time as it comes (never whole in
/// memory), ending in [`BodyError::TooLarge`] once past `max` bytes; a
/// `Content-Length` over `max` ends it before anything is read. Every
/// download of Causeway reads through this.
pub fn bounded_body(resp: reqwest::Response, max: u64) -> impl futures_util::Stream<Item = Result<bytes::Bytes, BodyError>> + Send {
    let declared_over = resp.content_length().is_some_and(|l| l > max);
    futures_util::stream::try_unfold((resp, 0u64), move |(mut resp, read)| async move {
        if declared_over {
            return Err(BodyError::TooLarge(max));
        }
        match resp.chunk().await.map_err(BodyError::Failed)? {
            None => Ok(None),
            Some(c) if read + c.len() as u64 > max => Err(BodyError::TooLarge(max)),
            Some(c) => {
                let read = read + c.len() as u64;
                Ok(Some((c, (resp, read))))
            }
        }
    })
}

/// The whole body of `resp`, at most `max` bytes ([`bounded_body`]).
pub async fn read_bounded(resp: reqwest::Response, max: u64) -> Result<Vec<u8>, BodyError> {
    use futures_util::TryStreamExt;
    let mut body = std::pin::pin!(bounded_body(resp, max));
    let mut bytes = Vec::new();
    while let Some(chunk) = body.try_next().await? {
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
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

    /// One answer on 127.0.0.1: `head` (status line and headers) and `body`.
    async fn serve_once(head: &'static str, body: Vec<u8>) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut c, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 1024];
            let _ = c.read(&mut request).await;
            let _ = c.write_all(head.as_bytes()).await;
            let _ = c.write_all(&body).await;
        });
        url
    }

    #[tokio::test]
    async fn a_body_is_read_up_to_its_bound_and_no_further() {
        let get = |url: String| async move { reqwest::get(url).await.unwrap() };
        // No Content-Length (read until the connection closes).
        let body = vec![b'x'; 1000];
        let url = serve_once("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", body.clone()).await;
        assert_eq!(read_bounded(get(url).await, 1000).await.unwrap(), body);
        let url = serve_once("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n", body.clone()).await;
        assert!(matches!(read_bounded(get(url).await, 999).await, Err(BodyError::TooLarge(999))));
        // A declared length over the bound ends it before any byte is read.
        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 5000000\r\nConnection: close\r\n\r\n", b"x".to_vec()).await;
        assert!(matches!(read_bounded(get(url).await, 4096).await, Err(BodyError::TooLarge(4096))));
        // A connection cut short of its declared length is a failure, not a file.
        let url = serve_once("HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n", b"short".to_vec()).await;
        assert!(matches!(read_bounded(get(url).await, 4096).await, Err(BodyError::Failed(_))));
    }
}
