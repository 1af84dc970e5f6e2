//! Fetching files from other networks' links, bounded in size.

/// Why a file could not be fetched.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The link's server refused it (4xx) or it is larger than allowed:
    /// asking again will not help; send the link instead.
    #[error("{0}")]
    Refused(String),
    /// Network trouble or a 5xx: worth another try later.
    #[error("{0}")]
    Unavailable(String),
}

/// A fetched file.
#[derive(Debug)]
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub content_type: Option<String>,
}

/// GET `url` and read at most `max` bytes of it; more is refused without
/// reading it all (whatever `Content-Length` says or does not say).
///
/// A link that takes longer than the client's timeout (a tarpit that sends
/// a byte now and then) is refused, not retried: the delivery goes on with
/// the link, and nothing behind it waits for that server.
pub async fn fetch(client: &reqwest::Client, url: &str, max: u64) -> Result<Fetched, FetchError> {
    let failed = |e: reqwest::Error| {
        if e.is_timeout() {
            FetchError::Refused(format!("GET {url}: too slow ({e})"))
        } else {
            FetchError::Unavailable(format!("GET {url}: {e}"))
        }
    };
    let mut resp = client.get(url).send().await.map_err(failed)?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(FetchError::Unavailable(format!("GET {url}: {status}")));
    }
    if !status.is_success() {
        return Err(FetchError::Refused(format!("GET {url}: {status}")));
    }
    let too_large = || FetchError::Refused(format!("{url} is larger than {max} bytes"));
    if resp.content_length().is_some_and(|l| l > max) {
        return Err(too_large());
    }
    let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
    let mut bytes = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(failed)? {
        if (bytes.len() + chunk.len()) as u64 > max {
            return Err(too_large());
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Fetched { bytes, content_type })
}
