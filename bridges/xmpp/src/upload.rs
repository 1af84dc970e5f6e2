//! HTTP File Upload (XEP-0363): copy a file from another network to the XMPP
//! server, so XMPP clients fetch it from their own server.

use causeway_core::Attachment;
use causeway_core::DeliveryError;
use causeway_core::secret::link_for_log;
use tokio_xmpp::jid::FullJid;
use tokio_xmpp::minidom::Element;
use tokio_xmpp::minidom::rxml::xml_ncname;

use crate::Inner;
use crate::ns::NS_UPLOAD;

/// Headers a slot may ask for (XEP-0363 §5); others are ignored.
const ALLOWED_HEADERS: [&str; 3] = ["authorization", "cookie", "expires"];

/// Where to PUT the file and where it will be fetched from.
#[derive(Debug, PartialEq, Eq)]
pub struct Slot {
    pub put: String,
    pub headers: Vec<(String, String)>,
    pub get: String,
}

/// Why a slot answer is refused.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SlotError {
    #[error("expected a slot, got <{0}/>")]
    NotASlot(String),
    #[error("slot without {0} url")]
    NoUrl(&'static str),
    #[error("{0} url {1:?} is not http(s)")]
    NotHttp(&'static str, String),
}

/// Why a file was not put on the upload service (its link is sent instead).
#[derive(Debug, thiserror::Error)]
pub(crate) enum UploadError {
    #[error("slot request: {0}")]
    Request(#[from] crate::RequestError),
    #[error("empty slot answer")]
    NoSlot,
    #[error(transparent)]
    Slot(#[from] SlotError),
    #[error("upload: {0}")]
    Put(reqwest::Error),
    #[error("upload answered {0}")]
    Status(reqwest::StatusCode),
}

impl Slot {
    /// Read a `<slot/>` answer; refuses anything that is not http(s).
    pub fn parse(e: &Element) -> Result<Slot, SlotError> {
        if !e.is("slot", NS_UPLOAD) {
            return Err(SlotError::NotASlot(e.name().to_string()));
        }
        let url = |name: &'static str| -> Result<String, SlotError> {
            let u = e.get_child(name, NS_UPLOAD).and_then(|c| c.attr("url")).ok_or(SlotError::NoUrl(name))?;
            if u.starts_with("https://") || u.starts_with("http://") {
                Ok(u.to_string())
            } else {
                Err(SlotError::NotHttp(name, u.to_string()))
            }
        };
        let headers = e
            .get_child("put", NS_UPLOAD)
            .map(|p| {
                p.children()
                    .filter(|h| h.name() == "header")
                    .filter_map(|h| Some((h.attr("name")?.to_string(), h.text())))
                    .filter(|(n, v)| ALLOWED_HEADERS.contains(&n.to_ascii_lowercase().as_str()) && !v.contains(['\r', '\n']))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Slot { put: url("put")?, headers, get: url("get")? })
    }
}

/// Copy `a` to the upload service: `Some` — the link XMPP clients should
/// use; `None` — send the original link (too large, refused, or the
/// upload service would not take it); `Err` — the file's server is not
/// answering: the delivery is tried again later (as every bridge does,
/// [`causeway_core::fetch::Fetcher::fetch_to_copy`]).
pub(crate) async fn copy(inner: &Inner, service: &str, from: &FullJid, a: &Attachment) -> Result<Option<String>, DeliveryError> {
    let max = inner.options.upload_max_bytes;
    let link = link_for_log(&a.url);
    if a.size.is_some_and(|s| s > max) {
        tracing::info!(url = %link, "not copied to the upload service, sending the link: {} bytes is over upload_max_bytes", a.size.unwrap_or(0));
        return Ok(None);
    }
    let Some(fetched) = inner.fetcher.fetch_to_copy(&a.url, max).await? else { return Ok(None) };
    let mime = a.mime.clone().or(fetched.content_type);
    let name =
        a.name.clone().or_else(|| a.url.rsplit('/').next().map(str::to_string)).filter(|n| !n.is_empty()).unwrap_or_else(|| "file".into());
    match put(inner, service, from, name, mime, fetched.bytes).await {
        Ok(url) => Ok(Some(url)),
        Err(e) => {
            tracing::warn!(url = %link, "not copied to the upload service, sending the link: {e}");
            Ok(None)
        }
    }
}

/// Put `bytes` on the upload service under `name`; returns the link XMPP
/// clients should use.
pub(crate) async fn put(
    inner: &Inner,
    service: &str,
    from: &FullJid,
    name: String,
    mime: Option<String>,
    bytes: Vec<u8>,
) -> Result<String, UploadError> {
    let mut request = Element::builder("request", NS_UPLOAD)
        .attr(xml_ncname!("filename").into(), name)
        .attr(xml_ncname!("size").into(), bytes.len().to_string());
    if let Some(m) = &mime {
        request = request.attr(xml_ncname!("content-type").into(), m.as_str());
    }
    let answer = inner.request(from, service, false, request.build()).await?;
    let slot = Slot::parse(&answer.ok_or(UploadError::NoSlot)?)?;
    let mut put = inner.http.put(&slot.put).body(bytes);
    for (n, v) in &slot.headers {
        put = put.header(n.as_str(), v.as_str());
    }
    if let Some(m) = &mime {
        put = put.header("content-type", m.as_str());
    }
    let done = put.send().await.map_err(UploadError::Put)?;
    if !done.status().is_success() {
        return Err(UploadError::Status(done.status()));
    }
    Ok(slot.get)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_read_and_checked() {
        let xml = "<slot xmlns='urn:xmpp:http:upload:0'><put url='https://up/x'><header name='Authorization'>Basic a</header>\
                   <header name='X-Evil'>1</header><header name='Cookie'>a\nb</header></put><get url='https://dl/x'/></slot>";
        let slot = Slot::parse(&xml.parse().unwrap()).unwrap();
        assert_eq!(
            slot,
            Slot { put: "https://up/x".into(), headers: vec![("Authorization".into(), "Basic a".into())], get: "https://dl/x".into() }
        );
        for (bad, why) in [
            ("<slot xmlns='urn:xmpp:http:upload:0'><get url='https://dl/x'/></slot>", SlotError::NoUrl("put")),
            (
                "<slot xmlns='urn:xmpp:http:upload:0'><put url='file:///etc/passwd'/><get url='https://dl/x'/></slot>",
                SlotError::NotHttp("put", "file:///etc/passwd".into()),
            ),
            (
                "<slot xmlns='urn:xmpp:http:upload:0'><put url='https://up/x'/><get url='javascript:x'/></slot>",
                SlotError::NotHttp("get", "javascript:x".into()),
            ),
            ("<other xmlns='urn:xmpp:http:upload:0'/>", SlotError::NotASlot("other".into())),
        ] {
            assert_eq!(Slot::parse(&bad.parse().unwrap()), Err(why), "{bad}");
        }
    }
}
