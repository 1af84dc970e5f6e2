//! The webhook bridge: each endpoint is a room.
//!
//! - inbound: `POST /bridges/<bridge>/<endpoint>` (native or Slack JSON),
//!   authenticated by bearer token or HMAC signature, answered `202` only
//!   once the event is durable;
//! - outbound: a signed `POST` of every portal event to the endpoint's URL,
//!   with the delivery id as `Idempotency-Key`;
//! - events: `GET /bridges/<bridge>/<endpoint>/events`, the portal's events as
//!   server-sent events, resumable with `Last-Event-ID`.

pub mod auth;
pub mod config;
pub mod payload;
/// Request signatures (HMAC-SHA256): the shared implementation, and the headers.
pub mod sign {
    pub use crate::auth::{GITHUB_SIGNATURE_HEADER, SIGNATURE_HEADER, SLACK_SIGNATURE_HEADER, SLACK_TIMESTAMP_HEADER, TIMESTAMP_HEADER};
    pub use causeway_core::sign::{sign, sign_at, verify, verify_at};
}

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use causeway_core::network::{NetworkOf, Options};
use causeway_core::secret::url_for_log;
use causeway_core::{
    Accepted, Body, Bridge, BridgeContext, BridgeError, Capabilities, Committed, Delivered, Delivery, DeliveryError, DirectError, Event,
    Incoming, OptionError, Recipient, Sender, SubmitError, parse_options,
};
use futures_util::Stream;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;

use crate::config::{EndpointOptions, Format, OutboundOptions, WebhookOptions};
use crate::payload::PayloadError;

/// Causeway's mark on every delivery it posts: a request carrying it was
/// relayed by a Causeway and is never relayed again (two bridges on the
/// same pair of endpoints do not ping-pong).
pub const RELAY_HEADER: &str = "x-causeway-relayed";

pub struct WebhookBridge {
    options: WebhookOptions,
    client: reqwest::Client,
    ctx: OnceLock<BridgeContext>,
    /// Signatures taken lately (a replay of one is refused).
    seen: auth::Seen,
}

impl WebhookBridge {
    /// Read the options and build the bridge (tests and tools; the daemon
    /// goes through [`NETWORK`]).
    pub fn from_options(options: serde_json::Value) -> Result<Self, Vec<OptionError>> {
        Self::new(parse_options(options)?)
    }

    /// Build the bridge of checked options: its HTTP client.
    pub fn new(options: WebhookOptions) -> Result<Self, Vec<OptionError>> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("causeway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            // Each request has its endpoint's `outbound.timeout` as a whole.
            .connect_timeout(std::time::Duration::from_secs(10))
            .build()
            .map_err(|e| vec![OptionError::new("", format!("cannot build the HTTP client: {e}"))])?;
        Ok(WebhookBridge { options, client, ctx: OnceLock::new(), seen: auth::Seen::default() })
    }

    /// The endpoint of a room: the room itself, or for a direct
    /// conversation (`<endpoint>/<account>/<with>`) its first part.
    fn endpoint(&self, room: &str) -> Option<&EndpointOptions> {
        let name = room.split_once('/').map_or(room, |(e, _)| e);
        self.options.endpoints.get(name)
    }
}

/// A direct conversation's room on a direct endpoint.
#[derive(Debug, PartialEq, Eq)]
struct DirectRoom<'a> {
    endpoint: &'a str,
    /// The account on this network (no `/`).
    account: &'a str,
    /// The other side: a person id or `bridge:id`.
    with: &'a str,
}

impl<'a> DirectRoom<'a> {
    fn parse(room: &'a str) -> Option<Self> {
        let (endpoint, rest) = room.split_once('/')?;
        let (account, with) = rest.split_once('/')?;
        (!endpoint.is_empty() && !account.is_empty() && !with.is_empty()).then_some(DirectRoom { endpoint, account, with })
    }

    fn name(endpoint: &str, account: &str, with: &str) -> String {
        format!("{endpoint}/{account}/{with}")
    }
}

/// The `webhook` network, for the daemon's table.
pub const NETWORK: NetworkOf<WebhookOptions> = NetworkOf::new();

impl Options for WebhookOptions {
    const KIND: &'static str = "webhook";

    fn room_ok(&self, room: &str) -> Result<(), String> {
        check_room(self, room)
    }

    fn bridge(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
        Ok(Arc::new(WebhookBridge::new(self.clone())?))
    }
}

/// Whether `room` is an endpoint of `options` linked in portals, or a
/// direct conversation of a direct endpoint.
fn check_room(options: &WebhookOptions, room: &str) -> Result<(), String> {
    if let Some(d) = DirectRoom::parse(room) {
        return match options.endpoints.get(d.endpoint) {
            Some(e) if e.direct => Ok(()),
            _ => Err(format!("{room:?} is not a direct conversation of a direct endpoint")),
        };
    }
    if let Some(e) = options.endpoints.get(room) {
        if e.direct {
            return Err(format!("endpoint {room:?} carries direct conversations (`direct: true`); it is not linked in portals"));
        }
        Ok(())
    } else {
        let known: Vec<&str> = options.endpoints.keys().map(String::as_str).collect();
        Err(format!("no endpoint named {room:?} in this webhook bridge (endpoints: {})", known.join(", ")))
    }
}

#[async_trait]
impl Bridge for WebhookBridge {
    fn kind(&self) -> &'static str {
        WebhookOptions::KIND
    }

    fn check_room(&self, room: &str) -> Result<(), String> {
        check_room(&self.options, room)
    }

    fn capabilities(&self, room: &str) -> Capabilities {
        match self.endpoint(room).and_then(|e| e.outbound.as_ref()).map(|o| o.format) {
            // Read markers are for the people of a conversation, not for machines.
            Some(Format::Native) => Capabilities { read_markers: false, ..Capabilities::ALL },
            Some(Format::Slack) => Capabilities::TEXT_ONLY,
            None => Capabilities::NONE,
        }
    }

    async fn start(self: Arc<Self>, ctx: BridgeContext) -> Result<Option<Router>, BridgeError> {
        self.ctx.set(ctx).map_err(|_| BridgeError::Other("webhook bridge started twice".into()))?;
        let limit = self.options.max_body_bytes;
        let router = Router::new()
            .route("/{endpoint}", post(inbound))
            .route("/{endpoint}/events", get(events))
            .layer(DefaultBodyLimit::max(limit))
            .with_state(self);
        Ok(Some(router))
    }

    /// Its network pushes over HTTP, which may reach any instance.
    fn runs_everywhere(&self) -> bool {
        true
    }

    fn reaches_people(&self) -> bool {
        self.options.endpoints.values().any(|e| e.direct && e.outbound.is_some())
    }

    async fn open_direct(&self, account: &str, peer: &Sender, peer_bridge: &str) -> Result<String, DirectError> {
        let endpoint = self
            .options
            .endpoints
            .iter()
            .find(|(_, e)| e.direct && e.outbound.is_some())
            .map(|(name, _)| name)
            .ok_or_else(|| DirectError::Unsupported("this webhook bridge has no direct endpoint with an outbound URL".into()))?;
        if account.is_empty() || account.contains('/') {
            return Err(DirectError::Unknown(format!("{account:?} cannot be a webhook account in a direct conversation")));
        }
        Ok(DirectRoom::name(endpoint, account, &Recipient::key_of(peer, peer_bridge)))
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Delivered, DeliveryError> {
        if delivery.room == causeway_core::PEOPLE_ROOM {
            // A broadcast to one person: as a direct message from whoever
            // sent it, on the direct endpoint.
            let account = delivery.recipient.as_deref().unwrap_or_default();
            let room = self
                .open_direct(account, &delivery.event.sender, &delivery.event.origin.bridge)
                .await
                .map_err(|e| DeliveryError::permanent(format!("cannot reach {account:?}: {e}")))?;
            let mut d = delivery.clone();
            d.room = room;
            return Box::pin(self.deliver(&d)).await;
        }
        let out = self
            .endpoint(&delivery.room)
            .and_then(|e| e.outbound.as_ref())
            .ok_or_else(|| DeliveryError::permanent(format!("endpoint {:?} has no outbound URL", delivery.room)))?;
        // A text larger than the receiver takes goes in numbered parts:
        // smaller ones each time it answers 413, down to 1 KiB.
        let mut budget = out.max_text_bytes();
        // After a 413 the parts are new ones, under keys of their own (a
        // part the receiver took before must not hide a different one).
        let mut key = delivery.id.clone();
        loop {
            let mut first = None;
            let mut too_large = false;
            for (id, event) in pieces(&key, &delivery.event, budget) {
                match self.post(out, delivery, &id, &event).await? {
                    Posted::Done(remote) => {
                        first.get_or_insert(remote);
                    }
                    Posted::TooLarge => {
                        too_large = true;
                        break;
                    }
                }
            }
            if !too_large {
                return Ok(Delivered { remote_id: first.flatten() });
            }
            let longest = message_text(&delivery.event).map_or(0, str::len).min(budget.unwrap_or(usize::MAX));
            if longest <= MIN_PART_BYTES {
                return Err(DeliveryError::permanent(format!("{} answered 413 even to a part of {longest} bytes", url_for_log(&out.url))));
            }
            let smaller = (longest / 2).max(MIN_PART_BYTES);
            budget = Some(smaller);
            key = format!("{}.s{smaller}", delivery.id);
            tracing::info!(url = %url_for_log(&out.url), budget, "the receiver took the text as too large, sending it in smaller parts");
        }
    }
}

/// Largest answer of a receiver that is read (for the id it names).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// The smallest part a text is cut into for a receiver that answers 413.
const MIN_PART_BYTES: usize = 1024;

fn message_text(event: &Event<String>) -> Option<&str> {
    match &event.body {
        Body::Message { text, .. } => Some(&text.plain),
        _ => None,
    }
}

/// The event as the requests to post, with their idempotency keys: itself
/// under the delivery id, or, when its text is over `budget`, numbered
/// parts under `<id>`, `<id>.p2`, … (the first with its files and reply).
fn pieces(id: &str, event: &Event<String>, budget: Option<usize>) -> Vec<(String, Event<String>)> {
    let Body::Message { text, .. } = &event.body else {
        return vec![(id.to_string(), event.clone())];
    };
    let Some(max) = budget.filter(|max| text.plain.len() > *max || text.html.as_ref().is_some_and(|h| h.len() > *max)) else {
        return vec![(id.to_string(), event.clone())];
    };
    event
        .body
        .plain_only()
        .in_parts(id, max)
        .into_iter()
        .map(|(key, body)| {
            let mut part = event.clone();
            part.body = body;
            (key, part)
        })
        .collect()
}

/// What one POST came to.
enum Posted {
    /// Taken, with the receiver's id for it if it named one.
    Done(Option<String>),
    /// 413: the receiver takes less.
    TooLarge,
}

impl WebhookBridge {
    /// POST one event (or one part of one) under idempotency key `id`.
    async fn post(&self, out: &OutboundOptions, delivery: &Delivery, id: &str, event: &Event<String>) -> Result<Posted, DeliveryError> {
        let body = match out.format {
            Format::Native => {
                let mut n = payload::render_native(event, Some(id));
                n.direct =
                    DirectRoom::parse(&delivery.room).map(|d| payload::Direct { to: d.account.to_string(), with: d.with.to_string() });
                serde_json::to_vec(&n)
            }
            Format::Slack => match payload::render_slack(event) {
                Some(s) => serde_json::to_vec(&s),
                // Degradation leaves only messages for text-only endpoints.
                None => return Ok(Posted::Done(None)),
            },
        }
        .map_err(|e| DeliveryError::permanent(format!("cannot encode: {e}")))?;
        let mut req = self
            .client
            .post(&out.url)
            .timeout(out.timeout)
            .header(header::CONTENT_TYPE, "application/json")
            .header("idempotency-key", id)
            .header("x-causeway-event", event.body.kind())
            .header(RELAY_HEADER, "1");
        if let Some(secret) = &out.hmac_secret {
            let now = causeway_core::now_ms() / 1000;
            req = req
                .header(sign::TIMESTAMP_HEADER, now.to_string())
                .header(sign::SIGNATURE_HEADER, sign::sign_at(secret.expose().as_bytes(), now, &body));
        }
        if let Some(token) = &out.token {
            req = req.bearer_auth(token.expose());
        }
        let resp = req
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::transient(format!("POST to {} failed: {}", url_for_log(&out.url), e.without_url())))?;
        let status = resp.status();
        if status.is_success() {
            // The receiver may name its own id for the message (in a small
            // answer: a huge one is not read whole).
            let mut resp = resp;
            let mut bytes = Vec::new();
            while let Ok(Some(chunk)) = resp.chunk().await {
                if bytes.len() + chunk.len() > MAX_ANSWER_BYTES {
                    bytes.clear();
                    break;
                }
                bytes.extend_from_slice(&chunk);
            }
            let remote_id = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v.get("id").and_then(|i| i.as_str()).map(str::to_string))
                .filter(|id| !id.is_empty() && id.len() <= 256);
            return Ok(Posted::Done(remote_id));
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE && message_text(event).is_some() {
            return Ok(Posted::TooLarge);
        }
        let retry_after = causeway_core::http::retry_after(resp.headers());
        let reason = format!("{} answered {status}", url_for_log(&out.url));
        if status.is_server_error() || matches!(status.as_u16(), 408 | 425 | 429) {
            Err(DeliveryError::Transient { reason, retry_after })
        } else {
            Err(DeliveryError::permanent(reason))
        }
    }
}

/// A JSON error response: `{"error": code, "message": text}`.
fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": code, "message": message.to_string()}))).into_response()
}

/// One piece (over 80 lines): a request's checks in the order they must run
/// (endpoint, authentication, signature and replay, body, direct recipient),
/// each answering with its own status.
async fn inbound(
    State(bridge): State<Arc<WebhookBridge>>,
    Path(endpoint): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(ctx) = bridge.ctx.get() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "starting", "the bridge is starting");
    };
    let Some(inb) = bridge.endpoint(&endpoint).and_then(|e| e.inbound.as_ref()) else {
        ctx.count_rejected("not_found");
        return error(StatusCode::NOT_FOUND, "not_found", format!("no inbound endpoint {endpoint:?}"));
    };
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        ctx.count_rejected("content_type");
        return error(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type", "send Content-Type: application/json");
    }
    let body = match body {
        Ok(b) => b,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            ctx.count_rejected("too_large");
            let message = format!("the body is larger than {} bytes", bridge.options.max_body_bytes);
            return error(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message);
        }
        Err(rejection) => {
            ctx.count_rejected("bad_body");
            return error(rejection.status(), "bad_body", rejection.body_text());
        }
    };
    let now = causeway_core::now_ms();
    let admitted = match auth::admit(inb, &headers, &body, now) {
        Ok(a) => a,
        Err(auth::Refused::Unauthorized(why)) => {
            ctx.count_rejected("unauthorized");
            return error(StatusCode::UNAUTHORIZED, "unauthorized", why);
        }
        Err(auth::Refused::Stale(why)) => {
            ctx.count_rejected("stale_signature");
            return error(StatusCode::UNAUTHORIZED, "stale_signature", why);
        }
    };
    if headers.contains_key(RELAY_HEADER) {
        // Relayed by a Causeway (another one, posting here): never relayed again.
        ctx.count_rejected("relayed_by_another_bridge");
        return (StatusCode::OK, axum::Json(json!({"status": "ignored", "reason": "relayed"}))).into_response();
    }
    let header_id = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_string);
    let parsed = match inb.format {
        Format::Native => payload::parse_native_to(&endpoint, &body, header_id),
        Format::Slack => payload::parse_slack(&endpoint, &body, header_id).map(|i| (i, None)),
    };
    let incoming = match parsed {
        Ok((i, to)) if bridge.endpoint(&endpoint).is_some_and(|e| e.direct) => match direct_room(ctx, &endpoint, i, to).await {
            Ok(i) => i,
            Err(response) => return response,
        },
        Ok((i, _)) => i,
        Err(e) => {
            let (status, code) = match e {
                PayloadError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
                _ => (StatusCode::BAD_REQUEST, "malformed"),
            };
            ctx.count_rejected(code);
            return error(status, code, e);
        }
    };
    let mut incoming = incoming;
    if let Body::Retract { moderated, .. } = &mut incoming.body
        && *moderated
        && !inb.may_moderate
    {
        // Only an endpoint the operator trusts to moderate may say so.
        *moderated = false;
    }
    if let Body::Message { mentions, .. } = &mut incoming.body
        && !inb.may_mention_room
    {
        mentions.retain(|m| !m.is_room());
    }
    let id = incoming.remote_id.clone();
    if let auth::Admitted::Signed { key, .. } = &admitted
        && bridge.seen.is_replay(&endpoint, key, id.as_deref(), now)
    {
        // The same signed body again, as something new: a replay.
        ctx.count_rejected("replayed");
        return error(StatusCode::CONFLICT, "replayed", "this signed request was taken before");
    }
    let answer = ctx.submit(incoming).await;
    if let (auth::Admitted::Signed { key, until_ms }, Ok(_)) = (&admitted, &answer) {
        bridge.seen.remember(&endpoint, key, id, *until_ms, now);
    }
    match answer {
        Ok(Accepted::Stored { event_id }) => {
            (StatusCode::ACCEPTED, axum::Json(json!({"status": "accepted", "event_id": event_id}))).into_response()
        }
        Ok(Accepted::Duplicate { event_id }) => {
            (StatusCode::OK, axum::Json(json!({"status": "duplicate", "event_id": event_id}))).into_response()
        }
        Ok(Accepted::Echo) => (StatusCode::OK, axum::Json(json!({"status": "ignored", "reason": "echo"}))).into_response(),
        Ok(Accepted::Ignored { reason }) => (StatusCode::OK, axum::Json(json!({"status": "ignored", "reason": reason}))).into_response(),
        Err(e @ SubmitError::NotLinked(_)) => error(StatusCode::NOT_FOUND, "not_linked", e),
        Err(e @ (SubmitError::Unavailable(_) | SubmitError::Stopped)) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e);
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            r
        }
    }
}

/// Put a message posted to a direct endpoint into its conversation
/// (`<endpoint>/<sender>/<to>`), opening the conversation on first use.
async fn direct_room(ctx: &BridgeContext, endpoint: &str, mut incoming: Incoming, to: Option<String>) -> Result<Incoming, Response> {
    let refuse = |status, code, message: String| {
        ctx.count_rejected(code);
        error(status, code, message)
    };
    let Some(to) = to else {
        return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "a direct endpoint needs `to`: a person id or bridge:id".into()));
    };
    let Some(with) = Recipient::parse(&to) else {
        return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("`to` {to:?} is not a person id or bridge:id")));
    };
    // One room per two people, however `to` names the other one.
    let with = match ctx.canonical_recipient(&with) {
        Ok(w) => w,
        Err(e) => return Err(refuse(StatusCode::NOT_FOUND, "unknown_recipient", e.to_string())),
    };
    if incoming.sender.id.contains('/') {
        return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "on a direct endpoint `sender.id` cannot contain `/`".into()));
    }
    let room = DirectRoom::name(endpoint, &incoming.sender.id, &with.to_string());
    if ctx.portal_of(&room).is_none() {
        match ctx.open_direct(&room, &with, incoming.sender.clone()).await {
            Ok(_) => {}
            Err(e @ DirectError::Unknown(_)) => return Err(refuse(StatusCode::NOT_FOUND, "unknown_recipient", e.to_string())),
            Err(e @ DirectError::Unsupported(_)) => return Err(refuse(StatusCode::UNPROCESSABLE_ENTITY, "no_direct", e.to_string())),
            // Counted by the router.
            Err(e @ DirectError::NotAllowed(_)) => return Err(error(StatusCode::FORBIDDEN, "direct_not_allowed", e.to_string())),
            Err(e @ DirectError::Limited(_)) => {
                let mut r = error(StatusCode::TOO_MANY_REQUESTS, "direct_limit", e.to_string());
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                return Err(r);
            }
            Err(e @ DirectError::Unavailable(_)) => {
                let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", e);
                r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
                return Err(r);
            }
        }
    }
    incoming.room = room;
    Ok(incoming)
}

async fn events(State(bridge): State<Arc<WebhookBridge>>, Path(endpoint): Path<String>, headers: HeaderMap) -> Response {
    let Some(ctx) = bridge.ctx.get() else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "starting", "the bridge is starting");
    };
    let Some(opts) = bridge.endpoint(&endpoint).and_then(|e| e.events.as_ref()) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("no event stream at endpoint {endpoint:?}"));
    };
    if !auth::bearer_matches(&opts.token, &headers) {
        ctx.count_rejected("unauthorized");
        return error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong token");
    }
    let Some(portal) = ctx.portal_of(&endpoint) else {
        return error(StatusCode::NOT_FOUND, "not_linked", format!("endpoint {endpoint:?} is not linked to a portal"));
    };
    let last_seen = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<i64>().ok());
    Sse::new(portal_stream(ctx.clone(), portal, last_seen)).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn sse_event(c: &Committed) -> SseEvent {
    let data = serde_json::to_string(&payload::render_native(&c.event, None)).unwrap_or_default();
    SseEvent::default().id(c.seq.to_string()).event(c.event.body.kind()).data(data)
}

/// The portal's events: the archive after `last_seen` (when resuming), then
/// live ones, with gaps (a slow reader lagging behind) filled from the archive.
fn portal_stream(ctx: BridgeContext, portal: String, last_seen: Option<i64>) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let (tx, rx) = mpsc::channel(64);
    let mut live = ctx.subscribe();
    // Ends when the client goes, or this instance of the bridge stops (the
    // client comes back with Last-Event-ID).
    ctx.clone().spawn(async move {
        let mut last = last_seen;
        let catch_up = |last: i64, tx: mpsc::Sender<Result<SseEvent, Infallible>>, ctx: BridgeContext, portal: String| async move {
            let mut last = last;
            loop {
                let page = ctx.history(&portal, last, 500).await.unwrap_or_default();
                let n = page.len();
                for c in page {
                    last = c.seq;
                    if tx.send(Ok(sse_event(&c))).await.is_err() {
                        return None;
                    }
                }
                if n < 500 {
                    return Some(last);
                }
            }
        };
        if let Some(l) = last {
            match catch_up(l, tx.clone(), ctx.clone(), portal.clone()).await {
                Some(l) => last = Some(l),
                None => return,
            }
        }
        loop {
            let next = tokio::select! {
                _ = tx.closed() => return,
                n = live.recv() => n,
            };
            match next {
                Ok(c) => {
                    if c.event.portal != portal || last.is_some_and(|l| c.seq <= l) {
                        continue;
                    }
                    last = Some(c.seq);
                    if tx.send(Ok(sse_event(&c))).await.is_err() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    let from = last.unwrap_or(0);
                    match catch_up(from, tx.clone(), ctx.clone(), portal.clone()).await {
                        Some(l) => last = Some(l),
                        None => return,
                    }
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    ReceiverStream::new(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direct_rooms_read_back() {
        let name = DirectRoom::name("dm", "dave", "matrix:@al/ice:m.org");
        assert_eq!(DirectRoom::parse(&name), Some(DirectRoom { endpoint: "dm", account: "dave", with: "matrix:@al/ice:m.org" }));
        for bad in ["dm", "dm/dave", "dm//x", "/a/b", "dm/a/"] {
            assert_eq!(DirectRoom::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn direct_endpoints_are_not_linked_in_portals() {
        let b = WebhookBridge::from_options(serde_json::json!({"endpoints": {
            "dm": {"direct": true, "outbound": {"url": "http://127.0.0.1:1/x"}},
            "w": {"outbound": {"url": "http://127.0.0.1:1/x"}},
        }}))
        .unwrap();
        assert!(b.check_room("dm").unwrap_err().contains("direct"));
        assert!(b.check_room("dm/dave/alice").is_ok());
        assert!(b.check_room("w/dave/alice").is_err());
        assert!(b.check_room("w").is_ok());
        assert_eq!(
            b.capabilities("dm/dave/alice"),
            Capabilities { read_markers: false, ..Capabilities::ALL },
            "read markers are for people"
        );
    }

    #[test]
    fn direct_endpoints_take_native_and_stream_nothing() {
        let errors = WebhookBridge::from_options(serde_json::json!({"endpoints": {
            "dm": {"direct": true, "inbound": {"format": "slack", "token": "t"}, "events": {"token": "t"}},
        }}))
        .err()
        .unwrap();
        let paths: Vec<&str> = errors.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(paths, ["endpoints.dm.events", "endpoints.dm.inbound.format"]);
    }

    #[test]
    fn the_example_documents_every_option() {
        let o: WebhookOptions = parse_options(serde_json::json!({"endpoints": {
            "alerts": {"inbound": {"format": "native", "token": "t", "hmac_secret": "h"}, "events": {"token": "e"}},
            "chat": {"outbound": {"url": "http://127.0.0.1:9999/hook", "token": "t", "hmac_secret": "h", "max_text_bytes": 16000}},
            "dm": {"direct": true, "inbound": {"token": "t"}, "outbound": {"url": "http://127.0.0.1:9999/dm"}},
        }}))
        .unwrap();
        let missing = causeway_core::testing::undocumented(causeway_core::testing::EXAMPLE, "webhook", &o);
        assert!(missing.is_empty(), "config.example.yaml does not document {missing:?}");
    }

    /// The inbound path against the fake host of `causeway-core`'s
    /// `testing` feature: no daemon, a real HTTP request.
    #[tokio::test]
    async fn an_inbound_post_reaches_the_host_once() {
        let host = causeway_core::testing::FakeHost::new();
        host.link("hooks", "alerts", "ops");
        let bridge =
            Arc::new(WebhookBridge::from_options(serde_json::json!({"endpoints": {"alerts": {"inbound": {"token": "t0k"}}}})).unwrap());
        let routes = bridge.start(host.context("hooks")).await.unwrap().unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/alerts", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, routes).await });
        let post = |token: &'static str| {
            reqwest::Client::new()
                .post(&url)
                .bearer_auth(token)
                .json(&serde_json::json!({"id": "m1", "sender": {"id": "ci", "name": "CI"}, "text": "build green"}))
                .send()
        };
        assert_eq!(post("wrong").await.unwrap().status(), 401);
        assert_eq!(post("t0k").await.unwrap().status(), 202);
        assert_eq!(post("t0k").await.unwrap().status(), 200, "the same id again is a duplicate");
        let taken = host.taken();
        assert_eq!(taken.len(), 1, "{taken:?}");
        assert_eq!((taken[0].1.room.as_str(), taken[0].1.remote_id.as_deref()), ("alerts", Some("m1")));
        assert_eq!(host.counted("hooks", "rejected").len(), 1);
    }
}
