//! The client-server API as the application service speaks it: the
//! `as_token`, and `?user_id=` to act as one of its users (identity assertion).

use std::time::Duration;

use causeway_core::{DeliveryError, Secret};
use reqwest::{Method, StatusCode, Url};
use ruma::{OwnedEventId, OwnedMxcUri, OwnedRoomId, UserId};
use serde_json::{Value, json};

/// The homeserver's `errcode`, for the ones the bridge acts on; any other
/// is kept as it came.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ErrCode {
    Forbidden,
    NotFound,
    UserInUse,
    TooLarge,
    UnknownToken,
    MissingToken,
    LimitExceeded,
    InvalidParam,
    Other(String),
}

impl ErrCode {
    const NAMED: [(&'static str, ErrCode); 8] = [
        ("M_FORBIDDEN", ErrCode::Forbidden),
        ("M_NOT_FOUND", ErrCode::NotFound),
        ("M_USER_IN_USE", ErrCode::UserInUse),
        ("M_TOO_LARGE", ErrCode::TooLarge),
        ("M_UNKNOWN_TOKEN", ErrCode::UnknownToken),
        ("M_MISSING_TOKEN", ErrCode::MissingToken),
        ("M_LIMIT_EXCEEDED", ErrCode::LimitExceeded),
        ("M_INVALID_PARAM", ErrCode::InvalidParam),
    ];

    pub fn parse(s: &str) -> ErrCode {
        Self::NAMED.iter().find(|(n, _)| *n == s).map_or_else(|| ErrCode::Other(s.to_string()), |(_, c)| c.clone())
    }
}

impl std::fmt::Display for ErrCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ErrCode::Other(s) => f.write_str(s),
            known => f.write_str(Self::NAMED.iter().find(|(_, c)| c == known).map_or("", |(n, _)| n)),
        }
    }
}

/// Why a request to the homeserver failed.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Rate limited (`M_LIMIT_EXCEEDED`, 429): try again after the delay.
    #[error("rate limited by the homeserver")]
    Limited { retry_after: Option<Duration> },
    /// The homeserver refused the request; repeating it will not help.
    #[error("{status} {errcode}: {error}")]
    Refused { status: u16, errcode: ErrCode, error: String },
    /// The homeserver is not answering well (network, 5xx, timeout).
    #[error("{0}")]
    Unavailable(String),
}

impl ApiError {
    pub fn errcode(&self) -> Option<&ErrCode> {
        match self {
            ApiError::Refused { errcode, .. } => Some(errcode),
            _ => None,
        }
    }

    /// Whether the homeserver refused with `code`.
    pub fn is(&self, code: ErrCode) -> bool {
        self.errcode() == Some(&code)
    }
}

impl From<ApiError> for DeliveryError {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Limited { retry_after } => DeliveryError::Transient { reason: e.to_string(), retry_after },
            ApiError::Unavailable(_) => DeliveryError::transient(e.to_string()),
            // The homeserver's own error for a request it could not complete.
            ApiError::Refused { status, .. } if status == 408 || status >= 500 => DeliveryError::transient(e.to_string()),
            // The token was refused: the registration is being changed; not this delivery's fault.
            ApiError::Refused { errcode: ErrCode::UnknownToken | ErrCode::MissingToken, .. } => DeliveryError::transient(e.to_string()),
            ApiError::Refused { .. } => DeliveryError::permanent(e.to_string()),
        }
    }
}

pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Secret,
}

/// A file from the media repository.
pub struct Media {
    /// The answer, its body not read yet: [`Media::chunks`] reads it.
    resp: reqwest::Response,
    pub content_type: Option<String>,
    max: u64,
}

impl Media {
    /// The file as it comes from the homeserver, a chunk at a time (never
    /// whole in memory); ends in an error past `max` bytes.
    pub fn chunks(self) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
        use futures_util::TryStreamExt;
        causeway_core::http::bounded_body(self.resp, self.max).map_err(std::io::Error::other)
    }
}

impl Client {
    pub fn new(homeserver: &str, token: Secret, timeout: Duration) -> Result<Client, String> {
        let base = Url::parse(homeserver).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("causeway/", env!("CARGO_PKG_VERSION")))
            .timeout(timeout)
            .connect_timeout(timeout.min(std::time::Duration::from_secs(10)))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Client { http, base, token })
    }

    /// `base` + the path segments (each percent-encoded as one segment) +
    /// `?user_id=` when acting as `as_user`.
    fn url(&self, segments: &[&str], as_user: Option<&UserId>) -> Url {
        let mut url = self.base.clone();
        {
            let mut path = url.path_segments_mut().expect("an http(s) URL has a path");
            path.pop_if_empty();
            for s in segments {
                path.push(s);
            }
        }
        if let Some(user) = as_user {
            url.query_pairs_mut().append_pair("user_id", user.as_str());
        }
        url
    }

    async fn call(&self, method: Method, url: Url, body: Option<&Value>) -> Result<Value, ApiError> {
        let mut req = self.http.request(method, url).bearer_auth(self.token.expose());
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(|e| ApiError::Unavailable(format!("homeserver: {e}")))?;
        answer(resp).await
    }

    pub async fn whoami(&self) -> Result<String, ApiError> {
        let v = self.call(Method::GET, self.url(&["_matrix", "client", "v3", "account", "whoami"], None), None).await?;
        Ok(v["user_id"].as_str().unwrap_or_default().to_string())
    }

    /// Register one of the application service's users; already registered is fine.
    pub async fn register(&self, localpart: &str) -> Result<(), ApiError> {
        let body = json!({"type": "m.login.application_service", "username": localpart, "inhibit_login": true});
        match self.call(Method::POST, self.url(&["_matrix", "client", "v3", "register"], None), Some(&body)).await {
            Ok(_) => Ok(()),
            Err(e) if e.is(ErrCode::UserInUse) => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn set_displayname(&self, user: &UserId, name: &str) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "profile", user.as_str(), "displayname"], Some(user));
        self.call(Method::PUT, url, Some(&json!({"displayname": name}))).await.map(drop)
    }

    pub async fn set_avatar(&self, user: &UserId, mxc: &str) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "profile", user.as_str(), "avatar_url"], Some(user));
        self.call(Method::PUT, url, Some(&json!({"avatar_url": mxc}))).await.map(drop)
    }

    pub async fn upload(&self, bytes: Vec<u8>, content_type: &str, filename: Option<&str>) -> Result<OwnedMxcUri, ApiError> {
        let mut url = self.url(&["_matrix", "media", "v3", "upload"], None);
        if let Some(f) = filename {
            url.query_pairs_mut().append_pair("filename", f);
        }
        let resp = self
            .http
            .post(url)
            .bearer_auth(self.token.expose())
            .header(reqwest::header::CONTENT_TYPE, content_type)
            .body(bytes)
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(format!("homeserver: {e}")))?;
        let v = answer(resp).await?;
        v["content_uri"].as_str().map(OwnedMxcUri::from).ok_or_else(|| ApiError::Unavailable("upload answer without content_uri".into()))
    }

    /// Start fetching a file of the media repository (authenticated media);
    /// its body is read as it is passed on.
    pub async fn download(&self, server: &str, media_id: &str, max: u64) -> Result<Media, ApiError> {
        let url = self.url(&["_matrix", "client", "v1", "media", "download", server, media_id], None);
        let resp = self
            .http
            .get(url)
            .bearer_auth(self.token.expose())
            .send()
            .await
            .map_err(|e| ApiError::Unavailable(format!("homeserver: {e}")))?;
        if !resp.status().is_success() {
            return Err(answer(resp).await.err().unwrap_or_else(|| ApiError::Unavailable("no media".into())));
        }
        let content_type = resp.headers().get(reqwest::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_string);
        let too_large = || ApiError::Refused { status: 413, errcode: ErrCode::TooLarge, error: format!("larger than {max} bytes") };
        if resp.content_length().is_some_and(|l| l > max) {
            return Err(too_large());
        }
        Ok(Media { resp, content_type, max })
    }

    /// The room an alias points to, if any.
    pub async fn resolve_alias(&self, alias: &str) -> Result<Option<OwnedRoomId>, ApiError> {
        match self.call(Method::GET, self.url(&["_matrix", "client", "v3", "directory", "room", alias], None), None).await {
            Ok(v) => Ok(v["room_id"].as_str().and_then(|r| OwnedRoomId::try_from(r).ok())),
            Err(e) if e.is(ErrCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// `user`'s account data of `kind` (`m.direct`, …), if they have any.
    pub async fn account_data(&self, user: &UserId, kind: &str) -> Result<Option<Value>, ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "user", user.as_str(), "account_data", kind], Some(user));
        match self.call(Method::GET, url, None).await {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is(ErrCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn set_account_data(&self, user: &UserId, kind: &str, content: &Value) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "user", user.as_str(), "account_data", kind], Some(user));
        self.call(Method::PUT, url, Some(content)).await.map(|_| ())
    }

    /// Create a room (as `as_user`, else the bridge's own user).
    pub async fn create_room(&self, body: &Value, as_user: Option<&UserId>) -> Result<OwnedRoomId, ApiError> {
        let v = self.call(Method::POST, self.url(&["_matrix", "client", "v3", "createRoom"], as_user), Some(body)).await?;
        v["room_id"]
            .as_str()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
            .ok_or_else(|| ApiError::Unavailable("createRoom answer without room_id".into()))
    }

    pub async fn join(&self, room: &str, as_user: Option<&UserId>) -> Result<OwnedRoomId, ApiError> {
        let v = self.call(Method::POST, self.url(&["_matrix", "client", "v3", "join", room], as_user), Some(&json!({}))).await?;
        v["room_id"]
            .as_str()
            .and_then(|r| OwnedRoomId::try_from(r).ok())
            .ok_or_else(|| ApiError::Unavailable("join answer without room_id".into()))
    }

    pub async fn invite(&self, room: &str, user: &UserId, as_user: Option<&UserId>) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "invite"], as_user);
        match self.call(Method::POST, url, Some(&json!({"user_id": user}))).await {
            Ok(_) => Ok(()),
            // Refused: nothing to do if they are in the room or invited
            // already (the homeserver says so only in prose), as the room's
            // state tells.
            Err(e) if e.is(ErrCode::Forbidden) => match self.membership(room, user, as_user).await {
                Ok(Some(m)) if m == "join" || m == "invite" => Ok(()),
                _ => Err(e),
            },
            Err(e) => Err(e),
        }
    }

    /// `user`'s membership of `room` (`join`, `invite`, `leave`, …) as
    /// `as_user` (else the bridge's user) sees it; `None`: never a member.
    pub async fn membership(&self, room: &str, user: &UserId, as_user: Option<&UserId>) -> Result<Option<String>, ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "state", "m.room.member", user.as_str()], as_user);
        match self.call(Method::GET, url, None).await {
            Ok(v) => Ok(v["membership"].as_str().map(str::to_string)),
            Err(e) if e.is(ErrCode::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn leave(&self, room: &str, as_user: &UserId) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "leave"], Some(as_user));
        self.call(Method::POST, url, Some(&json!({}))).await.map(drop)
    }

    /// Joined members with their display names.
    pub async fn joined_members(&self, room: &str) -> Result<Vec<(String, Option<String>)>, ApiError> {
        let v = self.call(Method::GET, self.url(&["_matrix", "client", "v3", "rooms", room, "joined_members"], None), None).await?;
        let joined = v["joined"].as_object().cloned().unwrap_or_default();
        Ok(joined.into_iter().map(|(id, m)| (id, m["display_name"].as_str().map(str::to_string))).collect())
    }

    /// Send a message-like event; `txn` makes a retry the same event.
    pub async fn send(&self, room: &str, event_type: &str, txn: &str, content: &Value, as_user: &UserId) -> Result<OwnedEventId, ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "send", event_type, txn], Some(as_user));
        event_id(self.call(Method::PUT, url, Some(content)).await?)
    }

    /// Who sent `event` in `room` (as the bridge's user sees it).
    pub async fn event_sender(&self, room: &str, event: &str) -> Result<Option<ruma::OwnedUserId>, ApiError> {
        let v = self.call(Method::GET, self.url(&["_matrix", "client", "v3", "rooms", room, "event", event], None), None).await?;
        Ok(v["sender"].as_str().and_then(|s| ruma::OwnedUserId::try_from(s).ok()))
    }

    /// Whether `user` may redact other people's events in `room`: their
    /// power level (the room's `users`, else `users_default`) reaches its
    /// `redact` level (50 unless the room says otherwise).
    pub async fn may_redact(&self, room: &str, user: &UserId) -> Result<bool, ApiError> {
        Ok(may_redact(&self.power_levels(room).await?, user.as_str()))
    }

    /// The content of `room`'s `m.room.power_levels`.
    async fn power_levels(&self, room: &str) -> Result<Value, ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "state", "m.room.power_levels", ""], None);
        self.call(Method::GET, url, None).await
    }

    /// Whether `user` may ping the whole of `room` (`@room`): their power
    /// level reaches the room's `notifications.room` level (50 unless the
    /// room says otherwise).
    pub async fn may_ping_room(&self, room: &str, user: &UserId) -> Result<bool, ApiError> {
        Ok(reaches(&self.power_levels(room).await?, user.as_str(), &["notifications", "room"]))
    }

    /// `as_user` has read `room` up to `event` (a public read receipt).
    pub async fn read_receipt(&self, room: &str, event: &str, as_user: &UserId) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "receipt", "m.read", event], Some(as_user));
        self.call(Method::POST, url, Some(&json!({}))).await.map(|_| ())
    }

    /// Redact `event`; `content` is the redaction's content (`reason`, …).
    pub async fn redact(&self, room: &str, event: &str, txn: &str, content: &Value, as_user: &UserId) -> Result<OwnedEventId, ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "redact", event, txn], Some(as_user));
        event_id(self.call(Method::PUT, url, Some(content)).await?)
    }

    pub async fn set_state(
        &self,
        room: &str,
        event_type: &str,
        key: &str,
        content: &Value,
        as_user: &UserId,
    ) -> Result<OwnedEventId, ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "state", event_type, key], Some(as_user));
        event_id(self.call(Method::PUT, url, Some(content)).await?)
    }

    /// A page of a room's timeline as the bridge's user (or `as_user`) sees it: newest
    /// first from the end (`from: None`) or from a token, with the token of
    /// the next page (none at the room's start). Events stay raw, parsed
    /// one by one like those the homeserver pushes.
    pub async fn messages_back(
        &self,
        room: &str,
        from: Option<&str>,
        limit: u32,
        as_user: Option<&UserId>,
    ) -> Result<(Vec<ruma::serde::Raw<ruma::events::AnyTimelineEvent>>, Option<String>), ApiError> {
        let mut url = self.url(&["_matrix", "client", "v3", "rooms", room, "messages"], as_user);
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("dir", "b").append_pair("limit", &limit.to_string());
            if let Some(f) = from {
                q.append_pair("from", f);
            }
        }
        let v = self.call(Method::GET, url, None).await?;
        let end = v["end"].as_str().map(str::to_string);
        let chunk = match v.get("chunk") {
            Some(c) => {
                serde_json::from_value(c.clone()).map_err(|e| ApiError::Unavailable(format!("a timeline page that does not parse: {e}")))?
            }
            None => Vec::new(),
        };
        Ok((chunk, end))
    }

    /// Ask the homeserver to contact the application service now
    /// (`/appservice/{id}/ping`); it also drains a recoverer still running.
    pub async fn ping(&self, appservice_id: &str, transaction_id: &str) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v1", "appservice", appservice_id, "ping"], None);
        self.call(Method::POST, url, Some(&json!({"transaction_id": transaction_id}))).await.map(drop)
    }

    pub async fn typing(&self, room: &str, user: &UserId, typing: bool) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "rooms", room, "typing", user.as_str()], Some(user));
        self.call(Method::PUT, url, Some(&json!({"typing": typing, "timeout": 30_000}))).await.map(drop)
    }

    pub async fn presence(&self, user: &UserId, presence: &str, status: Option<&str>) -> Result<(), ApiError> {
        let url = self.url(&["_matrix", "client", "v3", "presence", user.as_str(), "status"], Some(user));
        let mut body = json!({"presence": presence});
        if let Some(s) = status {
            body["status_msg"] = json!(s);
        }
        self.call(Method::PUT, url, Some(&body)).await.map(drop)
    }
}

fn event_id(v: Value) -> Result<OwnedEventId, ApiError> {
    v["event_id"]
        .as_str()
        .and_then(|e| OwnedEventId::try_from(e).ok())
        .ok_or_else(|| ApiError::Unavailable("answer without event_id".into()))
}

/// A response as JSON, or the error it stands for.
async fn answer(resp: reqwest::Response) -> Result<Value, ApiError> {
    let status = resp.status();
    let retry_header = causeway_core::http::retry_after(resp.headers());
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(body);
    }
    let errcode = ErrCode::parse(body["errcode"].as_str().unwrap_or(""));
    let error = body["error"].as_str().unwrap_or("").chars().take(300).collect::<String>();
    if status == StatusCode::TOO_MANY_REQUESTS || errcode == ErrCode::LimitExceeded {
        let retry_after = body["retry_after_ms"].as_u64().map(Duration::from_millis).or(retry_header);
        return Err(ApiError::Limited { retry_after });
    }
    if status.is_server_error() && errcode == ErrCode::Other(String::new()) {
        return Err(ApiError::Unavailable(format!("homeserver answered {status}")));
    }
    Err(ApiError::Refused { status: status.as_u16(), errcode, error })
}

/// From a room's `m.room.power_levels` content: may `user` redact others'
/// events? Levels may be numbers or (in old rooms) numeric strings.
fn may_redact(levels: &Value, user: &str) -> bool {
    reaches(levels, user, &["redact"])
}

/// Whether `user`'s power level in `levels` reaches the level at `path`
/// (50 where the room names none).
fn reaches(levels: &Value, user: &str, path: &[&str]) -> bool {
    let level = |v: &Value| v.as_i64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
    let needed = path.iter().try_fold(levels, |v, k| v.get(*k)).and_then(level).unwrap_or(50);
    let mine =
        levels.get("users").and_then(|u| u.get(user)).and_then(level).or_else(|| levels.get("users_default").and_then(level)).unwrap_or(0);
    mine >= needed
}

#[cfg(test)]
mod tests {
    #[test]
    fn who_may_ping_the_room_is_read_from_the_power_levels() {
        let levels = serde_json::json!({"notifications": {"room": 100}, "users": {"@admin:x": 100, "@mod:x": 50}});
        assert!(reaches(&levels, "@admin:x", &["notifications", "room"]));
        assert!(!reaches(&levels, "@mod:x", &["notifications", "room"]));
        assert!(reaches(&serde_json::json!({"users": {"@mod:x": 50}}), "@mod:x", &["notifications", "room"]), "50 by default");
        assert!(!reaches(&serde_json::json!({"notifications": "nonsense"}), "@someone:x", &["notifications", "room"]));
    }

    #[test]
    fn who_may_redact_is_read_from_the_power_levels() {
        let levels = serde_json::json!({"redact": 50, "users": {"@mod:x": 50, "@admin:x": "100", "@low:x": 10}, "users_default": 0});
        assert!(may_redact(&levels, "@mod:x") && may_redact(&levels, "@admin:x"));
        assert!(!may_redact(&levels, "@low:x") && !may_redact(&levels, "@someone:x"));
        assert!(may_redact(&serde_json::json!({"users_default": 50}), "@anyone:x"), "redact defaults to 50");
        assert!(!may_redact(&serde_json::json!({"redact": "bad"}), "@anyone:x"));
    }

    use super::*;

    #[test]
    fn ids_are_one_path_segment_each() {
        let c = Client::new("http://127.0.0.1:8008/", Secret::new("t"), Duration::from_secs(1)).unwrap();
        let user = <&UserId>::try_from("@causeway_a/b:matrix.test").unwrap();
        let url = c.url(&["_matrix", "client", "v3", "rooms", "!r:x", "send", "m.room.message", "t/1"], Some(user));
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8008/_matrix/client/v3/rooms/!r:x/send/m.room.message/t%2F1?user_id=%40causeway_a%2Fb%3Amatrix.test"
        );
        let with_path = Client::new("https://example.org/matrix", Secret::new("t"), Duration::from_secs(1)).unwrap();
        assert_eq!(with_path.url(&["_matrix", "x"], None).as_str(), "https://example.org/matrix/_matrix/x");
    }

    #[test]
    fn errcodes_read_back_as_they_came() {
        for code in ["M_FORBIDDEN", "M_NOT_FOUND", "M_USER_IN_USE", "M_TOO_LARGE", "M_UNKNOWN_TOKEN", "M_LIMIT_EXCEEDED", "M_X_NEW", ""] {
            assert_eq!(ErrCode::parse(code).to_string(), code);
        }
        assert_eq!(ErrCode::parse("M_FORBIDDEN"), ErrCode::Forbidden);
        assert_eq!(ErrCode::parse("m_forbidden"), ErrCode::Other("m_forbidden".into()), "codes are case-sensitive");
    }

    #[test]
    fn errors_map_to_delivery_errors() {
        let limited: DeliveryError = ApiError::Limited { retry_after: Some(Duration::from_millis(1500)) }.into();
        assert!(matches!(limited, DeliveryError::Transient { retry_after: Some(d), .. } if d == Duration::from_millis(1500)));
        let forbidden: DeliveryError = ApiError::Refused { status: 403, errcode: ErrCode::Forbidden, error: "no".into() }.into();
        assert!(matches!(forbidden, DeliveryError::Permanent { .. }));
        let gateway: DeliveryError = ApiError::Refused { status: 502, errcode: ErrCode::parse("M_UNKNOWN"), error: "".into() }.into();
        assert!(matches!(gateway, DeliveryError::Transient { .. }));
    }
}
