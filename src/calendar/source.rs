//! Where a calendar's objects come from: a CalDAV collection (RFC 4791),
//! asked first for its change tag (`getctag`, or the RFC 6578 sync token)
//! so that an unchanged calendar costs one small request; or an iCalendar
//! file, fetched with `If-None-Match` / `If-Modified-Since`. The URLs are
//! the operator's (the config), not someone else's; answers are bounded.

use std::time::Duration;

use super::CalendarConfig;

/// The largest answer read.
const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
const TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{0}")]
    Http(String),
    #[error("the server answered {0}")]
    Status(u16),
    #[error("the answer is larger than {MAX_ANSWER_BYTES} bytes")]
    TooLarge,
    #[error("the answer is not a WebDAV multistatus: {0}")]
    Xml(String),
}

/// What was seen last time: the change tag (CalDAV) or the validators
/// (a file).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Seen {
    pub tag: Option<String>,
    pub etag: Option<String>,
    pub modified: Option<String>,
}

/// A calendar's iCalendar objects, when they changed since `seen`.
pub enum Fetched {
    Unchanged,
    Changed { objects: Vec<String>, seen: Seen },
}

pub struct Source {
    http: reqwest::Client,
    config: CalendarConfig,
}

const PROPFIND_TAG: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<d:propfind xmlns:d="DAV:" xmlns:cs="http://calendarserver.org/ns/"><d:prop><cs:getctag/><d:sync-token/></d:prop></d:propfind>"#;

const REPORT_EVENTS: &str = r#"<?xml version="1.0" encoding="utf-8"?>
<c:calendar-query xmlns:d="DAV:" xmlns:c="urn:ietf:params:xml:ns:caldav">
<d:prop><d:getetag/><c:calendar-data/></d:prop>
<c:filter><c:comp-filter name="VCALENDAR"><c:comp-filter name="VEVENT"/></c:comp-filter></c:filter>
</c:calendar-query>"#;

impl Source {
    pub fn new(config: CalendarConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .no_proxy()
            .build()
            .expect("an HTTP client");
        Source { http, config }
    }

    fn request(&self, method: &str, url: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        let r = self.http.request(method, url);
        match &self.config.username {
            Some(u) => r.basic_auth(u, self.config.password.as_deref()),
            None => r,
        }
    }

    /// The objects, unless nothing changed since `seen`.
    pub async fn fetch(&self, seen: &Seen) -> Result<Fetched, FetchError> {
        match (&self.config.caldav, &self.config.ics) {
            (Some(url), _) => self.fetch_caldav(url, seen).await,
            (None, Some(url)) => self.fetch_ics(url, seen).await,
            (None, None) => Ok(Fetched::Unchanged),
        }
    }

    async fn fetch_caldav(&self, url: &str, seen: &Seen) -> Result<Fetched, FetchError> {
        let answer = self.dav(self.request("PROPFIND", url).header("Depth", "0"), PROPFIND_TAG).await?;
        let tag = change_tag(&answer)?;
        if tag.is_some() && tag == seen.tag {
            return Ok(Fetched::Unchanged);
        }
        let answer = self.dav(self.request("REPORT", url).header("Depth", "1"), REPORT_EVENTS).await?;
        let objects = calendar_data(&answer)?;
        Ok(Fetched::Changed { objects, seen: Seen { tag, ..Seen::default() } })
    }

    async fn dav(&self, r: reqwest::RequestBuilder, body: &'static str) -> Result<String, FetchError> {
        let r = r
            .header("Content-Type", "application/xml; charset=utf-8")
            .body(body)
            .send()
            .await
            .map_err(|e| FetchError::Http(e.to_string()))?;
        if r.status().as_u16() != 207 {
            return Err(FetchError::Status(r.status().as_u16()));
        }
        read(r).await
    }

    async fn fetch_ics(&self, url: &str, seen: &Seen) -> Result<Fetched, FetchError> {
        let mut r = self.request("GET", url);
        if let Some(e) = &seen.etag {
            r = r.header("If-None-Match", e);
        }
        if let Some(m) = &seen.modified {
            r = r.header("If-Modified-Since", m);
        }
        let r = r.send().await.map_err(|e| FetchError::Http(e.to_string()))?;
        if r.status().as_u16() == 304 {
            return Ok(Fetched::Unchanged);
        }
        if !r.status().is_success() {
            return Err(FetchError::Status(r.status().as_u16()));
        }
        let header = |name: &str| r.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_string);
        let now = Seen { tag: None, etag: header("etag"), modified: header("last-modified") };
        let body = read(r).await?;
        Ok(Fetched::Changed { objects: vec![body], seen: now })
    }
}

async fn read(mut r: reqwest::Response) -> Result<String, FetchError> {
    if r.content_length().is_some_and(|n| n as usize > MAX_ANSWER_BYTES) {
        return Err(FetchError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = r.chunk().await.map_err(|e| FetchError::Http(e.to_string()))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(FetchError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

fn multistatus(xml: &str) -> Result<roxmltree::Document<'_>, FetchError> {
    let opts = roxmltree::ParsingOptions { allow_dtd: false, nodes_limit: 1_000_000, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(xml, opts).map_err(|e| FetchError::Xml(e.to_string()))?;
    if !doc.root_element().has_tag_name(("DAV:", "multistatus")) {
        return Err(FetchError::Xml(format!("the root is <{}>", doc.root_element().tag_name().name())));
    }
    Ok(doc)
}

/// The collection's `getctag` or, failing that, its `sync-token`.
pub fn change_tag(xml: &str) -> Result<Option<String>, FetchError> {
    let doc = multistatus(xml)?;
    let find = |ns: &str, name: &str| {
        doc.descendants()
            .find(|n| n.has_tag_name((ns, name)))
            .and_then(|n| n.text())
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    Ok(find("http://calendarserver.org/ns/", "getctag").or_else(|| find("DAV:", "sync-token")))
}

/// The `calendar-data` of every response of a REPORT.
pub fn calendar_data(xml: &str) -> Result<Vec<String>, FetchError> {
    let doc = multistatus(xml)?;
    Ok(doc
        .descendants()
        .filter(|n| n.has_tag_name(("urn:ietf:params:xml:ns:caldav", "calendar-data")))
        .filter_map(|n| n.text())
        .map(str::to_string)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multistatus_answers_give_their_tag_and_objects() {
        let tag = r#"<?xml version="1.0"?><multistatus xmlns="DAV:" xmlns:CS="http://calendarserver.org/ns/"><response><href>/a/cal/</href>
<propstat><prop><CS:getctag>"abc123"</CS:getctag><sync-token>http://radicale.org/ns/sync/xyz</sync-token></prop><status>HTTP/1.1 200 OK</status></propstat></response></multistatus>"#;
        assert_eq!(change_tag(tag).unwrap().as_deref(), Some("\"abc123\""));
        let sync_only = tag.replace(r#"<CS:getctag>"abc123"</CS:getctag>"#, "");
        assert_eq!(change_tag(&sync_only).unwrap().as_deref(), Some("http://radicale.org/ns/sync/xyz"));
        let report = r#"<multistatus xmlns="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav"><response><href>/a/cal/1.ics</href><propstat><prop>
<getetag>"e1"</getetag><C:calendar-data>BEGIN:VCALENDAR&#13;
END:VCALENDAR</C:calendar-data></prop></propstat></response><response><href>/a/cal/2.ics</href><propstat><prop><C:calendar-data>BEGIN:VCALENDAR
END:VCALENDAR</C:calendar-data></prop></propstat></response></multistatus>"#;
        let objects = calendar_data(report).unwrap();
        assert_eq!(objects.len(), 2);
        assert!(objects[0].starts_with("BEGIN:VCALENDAR\r\n"));
    }

    #[test]
    fn hostile_answers_are_errors() {
        for bad in [
            "",
            "<html>login</html>",
            "<!DOCTYPE x [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;&a;\">]><multistatus xmlns=\"DAV:\">&b;</multistatus>",
            "<multistatus xmlns=\"DAV:\"><unclosed>",
        ] {
            assert!(calendar_data(bad).is_err(), "{bad:?}");
        }
        assert_eq!(change_tag("<multistatus xmlns=\"DAV:\"/>").unwrap(), None);
    }
}
