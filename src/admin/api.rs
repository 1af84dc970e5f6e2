//! The admin API's handlers (`/admin/api/…`); the routes and their answers
//! are described in [`super::openapi`].

use std::net::SocketAddr;

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use causeway_core::now_ms;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::Caller;
use super::portals::{NewPortal, PortalChange, PortalError};
use super::{Console, error};
use crate::store::{OutboxState, StoreError};
use crate::topology::Portal;

/// Rows one list answer holds at most.
const MAX_ROWS: u32 = 500;
/// What a reason or a free text may hold at most.
const MAX_TEXT: usize = 1000;

/// The routes behind the login.
pub fn routes() -> Router<Console> {
    Router::new()
        .route("/session", get(session))
        .route("/logout", post(logout))
        .route("/overview", get(overview))
        .route("/bridges", get(bridges))
        .route("/portals", get(list_portals).post(create_portal))
        .route("/portals/{id}", get(show_portal).patch(change_portal).delete(delete_portal))
        .route("/people", get(people))
        .route("/people/import", post(import_people))
        .route("/outbox", get(outbox))
        .route("/outbox/retry", post(retry_matching))
        .route("/outbox/{delivery}/retry", post(retry_one))
        .route("/outbox/{delivery}/drop", post(drop_one))
        .route("/audit", get(audit))
        .route("/broadcasts", get(list_broadcasts).post(send_broadcast))
        .route("/broadcasts/{id}", get(show_broadcast))
        .route("/reload", post(reload))
        .route("/archive/search", get(search))
        .route("/archive/exports", get(list_exports).post(start_export))
        .route("/archive/exports/{id}", get(show_export))
        .route("/archive/exports/{id}/download", get(download_export))
}

/// The routes open to anyone who reaches the listener.
pub fn open_routes() -> Router<Console> {
    Router::new().route("/login", post(login)).route("/openapi.json", get(|| async { Json(super::openapi::document()) }))
}

fn bad_json(e: JsonRejection) -> Response {
    let status = if e.status() == StatusCode::PAYLOAD_TOO_LARGE { StatusCode::PAYLOAD_TOO_LARGE } else { StatusCode::BAD_REQUEST };
    error(status, "bad_request", e.body_text())
}

fn bad_query(e: QueryRejection) -> Response {
    error(StatusCode::BAD_REQUEST, "bad_query", e.body_text())
}

fn unavailable(e: StoreError) -> Response {
    tracing::warn!(error = %e, "admin API: the store failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store could not be read or written")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    token: String,
}

/// Log in with an admin token: a session cookie and its CSRF token.
async fn login(State(c): State<Console>, ConnectInfo(from): ConnectInfo<SocketAddr>, body: Result<Json<Login>, JsonRejection>) -> Response {
    let Login { token } = match body {
        Ok(Json(l)) => l,
        Err(e) => return bad_json(e),
    };
    let caller = match c.auth.check_token(&token, from.ip()) {
        Ok(caller) => caller,
        Err(refused) => {
            tracing::warn!(from = %from.ip(), "admin login failed");
            return super::refusal(&c, refused);
        }
    };
    c.metrics.admin_logins.get_or_create(&crate::metrics::result("ok")).inc();
    let (cookie, csrf) = c.auth.open_session(&caller);
    c.audit(&caller, "login", "", &format!("from {}", from.ip())).await;
    let mut r = Json(json!({"who": caller.who, "read_only": caller.read_only, "csrf": csrf})).into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a cookie of hex digits"));
    r
}

async fn logout(State(c): State<Console>, Extension(caller): Extension<Caller>, headers: HeaderMap) -> Response {
    c.auth.close_session(&headers);
    c.audit(&caller, "logout", "", "").await;
    let mut r = StatusCode::NO_CONTENT.into_response();
    let clear = c.auth.cookie("", std::time::Duration::ZERO);
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("a plain cookie"));
    r
}

async fn session(Extension(caller): Extension<Caller>) -> Response {
    Json(json!({"who": caller.who, "read_only": caller.read_only, "csrf": caller.csrf})).into_response()
}

/// Per bridge: connected, events in and out, what waits, how late, the
/// last error.
pub async fn bridge_states(c: &Console) -> Result<Vec<Value>, StoreError> {
    let lanes = c.store.lane_depths().await?;
    let now = now_ms();
    let mut out = Vec::new();
    for (name, bridge) in &c.router.bridges() {
        let label = crate::metrics::bridge(name);
        let mine = lanes.iter().filter(|((b, _), _)| b == name).map(|(_, d)| d);
        let (mut pending, mut dead, mut oldest) = (0, 0, None::<i64>);
        for d in mine {
            pending += d.pending;
            dead += d.dead;
            if let Some(ms) = d.oldest_pending_ms {
                oldest = Some(oldest.map_or(ms, |o| o.min(ms)));
            }
        }
        let last_error = c.router.topology().last_error(name);
        out.push(json!({
            "name": name,
            "kind": bridge.kind(),
            "up": bridge.is_up(),
            "ghosts": bridge.ghosts(),
            "events_in": c.metrics.received.get_or_create(&label).get(),
            "events_out": c.metrics.delivered.get_or_create(&label).get(),
            "dead_letters_total": c.metrics.dead_letters.get_or_create(&label).get(),
            "pending": pending,
            "dead": dead,
            "lag_ms": oldest.map(|o| (now - o).max(0)),
            "last_error": last_error.map(|(at_ms, message)| LastError { at_ms, message }),
        }));
    }
    Ok(out)
}

async fn bridges(State(c): State<Console>) -> Response {
    match bridge_states(&c).await {
        Ok(b) => Json(json!({"bridges": b})).into_response(),
        Err(e) => unavailable(e),
    }
}

/// The overview: bridges, portals, what waits, how fast deliveries go.
async fn overview(State(c): State<Console>) -> Response {
    let bridges = match bridge_states(&c).await {
        Ok(b) => b,
        Err(e) => return unavailable(e),
    };
    let portals = c.router.topology().portals();
    let count = |k: crate::topology::PortalKind| portals.iter().filter(|p| p.kind == k).count();
    Json(json!({
        "at_ms": now_ms(),
        "bridges": bridges,
        "portals": {
            "configured": count(crate::topology::PortalKind::Configured),
            "console": count(crate::topology::PortalKind::Console),
            "direct": count(crate::topology::PortalKind::Direct),
        },
        "people": c.router.directory().people().len(),
        "latency_ms_sum": c.metrics.latency_ms_sum.load(std::sync::atomic::Ordering::Relaxed),
        "latency_count": c.metrics.latency_count.load(std::sync::atomic::Ordering::Relaxed),
    }))
    .into_response()
}

fn portal_summary(p: &Portal) -> Value {
    json!({
        "id": p.id,
        "kind": p.kind.name(),
        "links": p.links.iter().map(|l| json!({"bridge": l.bridge, "room": l.room})).collect::<Vec<_>>(),
    })
}

async fn list_portals(State(c): State<Console>) -> Response {
    let portals: Vec<Value> = c.router.topology().portals().iter().map(|p| portal_summary(p)).collect();
    Json(json!({"portals": portals})).into_response()
}

/// When something last failed, and what was said.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LastError {
    pub at_ms: i64,
    pub message: String,
}

/// One room of a portal as the console shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LinkState {
    pub bridge: String,
    pub room: String,
    /// Its bridge is connected to its network.
    pub connected: bool,
    /// The bridge sits in the room (none where the network has no rooms to sit in).
    pub joined: Option<bool>,
    pub receives: bool,
    pub pending: u64,
    pub dead: u64,
    pub oldest_pending_ms: Option<i64>,
    pub last_delivered_ms: Option<i64>,
    pub last_error: Option<LastError>,
}

/// The state of each room of `p`, in its order.
pub async fn link_states(c: &Console, p: &Portal) -> Result<Vec<LinkState>, StoreError> {
    let lanes = c.store.lane_depths().await?;
    Ok(p.links
        .iter()
        .map(|l| {
            let bridge = c.router.bridge(&l.bridge);
            let depth = lanes.get(&(l.bridge.clone(), l.room.clone())).cloned().unwrap_or_default();
            LinkState {
                bridge: l.bridge.clone(),
                room: l.room.clone(),
                connected: bridge.as_ref().is_some_and(|b| b.is_up()),
                joined: bridge.as_ref().and_then(|b| b.joined(&l.room)),
                receives: bridge.as_ref().is_some_and(|b| b.capabilities(&l.room).outbound),
                pending: depth.pending,
                dead: depth.dead,
                oldest_pending_ms: depth.oldest_pending_ms,
                last_delivered_ms: c.router.topology().last_delivered_ms(l),
                last_error: c.router.topology().link_error(l).map(|(at_ms, message)| LastError { at_ms, message }),
            }
        })
        .collect())
}

/// A portal with the state of each of its links.
async fn portal_detail(c: &Console, p: &Portal) -> Result<Value, StoreError> {
    let mut v = portal_summary(p);
    v["links"] = json!(link_states(c, p).await?);
    v["degrade"] = serde_json::to_value(p.degrade).unwrap_or(Value::Null);
    Ok(v)
}

async fn show_portal(State(c): State<Console>, Path(id): Path<String>) -> Response {
    let Some(p) = c.router.topology().get(&id) else { return error(StatusCode::NOT_FOUND, "not_found", format!("no portal {id:?}")) };
    match portal_detail(&c, &p).await {
        Ok(v) => Json(v).into_response(),
        Err(e) => unavailable(e),
    }
}

fn portal_error(e: PortalError) -> Response {
    match e {
        PortalError::Invalid(fields) => {
            (StatusCode::UNPROCESSABLE_ENTITY, Json(json!({"error": "invalid", "message": "the portal is not valid", "fields": fields})))
                .into_response()
        }
        PortalError::NotFound(id) => error(StatusCode::NOT_FOUND, "not_found", format!("no portal {id:?}")),
        PortalError::Conflict(m) => error(StatusCode::CONFLICT, "conflict", m),
        PortalError::Unavailable(m) => {
            tracing::warn!("admin API: {m}");
            error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the store could not be written")
        }
    }
}

async fn create_portal(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewPortal>, JsonRejection>,
) -> Response {
    let new = match body {
        Ok(Json(n)) => n,
        Err(e) => return bad_json(e),
    };
    match super::portals::create(&c.router, c.store.as_ref(), &c.edits, new).await {
        Ok((p, joined)) => {
            c.audit(&caller, "portal.create", &p.id, &super::portals::links_text(&p.links)).await;
            let mut v = portal_summary(&p);
            v["joined"] = json!(joined);
            (StatusCode::CREATED, [(header::LOCATION, format!("/admin/api/portals/{}", p.id))], Json(v)).into_response()
        }
        Err(e) => portal_error(e),
    }
}

async fn change_portal(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(id): Path<String>,
    body: Result<Json<PortalChange>, JsonRejection>,
) -> Response {
    let change = match body {
        Ok(Json(ch)) => ch,
        Err(e) => return bad_json(e),
    };
    let detail = change.describe();
    match super::portals::change(&c.router, c.store.as_ref(), &c.edits, &id, change).await {
        Ok((p, joined)) => {
            c.audit(&caller, "portal.change", &p.id, &detail).await;
            let mut v = portal_summary(&p);
            v["joined"] = json!(joined);
            Json(v).into_response()
        }
        Err(e) => portal_error(e),
    }
}

async fn delete_portal(State(c): State<Console>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    match super::portals::delete(&c.router, c.store.as_ref(), &c.edits, &id).await {
        Ok(gone) => {
            c.audit(&caller, "portal.delete", &id, &super::portals::links_text(&gone)).await;
            StatusCode::NO_CONTENT.into_response()
        }
        Err(e) => portal_error(e),
    }
}

/// The directory: each person, their accounts and their presence.
async fn people(State(c): State<Console>) -> Response {
    let directory = c.router.directory();
    let people: Vec<Value> = directory
        .people()
        .iter()
        .map(|p| {
            let presence = c.router.presence.view(&p.id);
            json!({
                "id": p.id,
                "name": p.name,
                "accounts": p.accounts,
                "show": presence.as_ref().map_or(json!("offline"), |v| json!(v.show)),
                "presence": presence,
            })
        })
        .collect();
    let ldap = c.people.last_import();
    Json(json!({"people": people, "ldap": {"imported_ms": ldap.imported_ms, "left_out": ldap.left_out}})).into_response()
}

/// Import the people from LDAP now.
async fn import_people(State(c): State<Console>, Extension(caller): Extension<Caller>) -> Response {
    let Some(ldap) = &c.ldap else {
        return error(StatusCode::CONFLICT, "no_directory", "no directory.ldap in the config");
    };
    let started = std::time::Instant::now();
    match c.people.import_now(ldap, c.store.as_ref()).await {
        Ok(people) => {
            let left_out = c.people.last_import().left_out;
            c.audit(&caller, "people.import", "ldap", &format!("{people} people, {} left out", left_out.len())).await;
            Json(json!({"people": people, "left_out": left_out, "took_ms": started.elapsed().as_millis() as u64})).into_response()
        }
        Err(e) => {
            c.audit(&caller, "people.import", "ldap", &format!("failed: {e}")).await;
            error(StatusCode::BAD_GATEWAY, "import_failed", e)
        }
    }
}

/// Read the config file again (as `SIGHUP` does).
async fn reload(State(c): State<Console>, Extension(caller): Extension<Caller>) -> Response {
    match c.reloader.reload().await {
        Ok(done) => {
            c.audit(&caller, "config.reload", "", &done.summary()).await;
            Json(done).into_response()
        }
        Err(crate::reload::ReloadError::Invalid(errors)) => {
            let fields: Vec<Value> = errors.iter().map(|e| json!({"field": e.path, "message": e.message})).collect();
            c.audit(&caller, "config.reload", "", &format!("refused: {} problem(s)", errors.len())).await;
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                Json(json!({"error": "invalid", "message": "the config does not check; the running one stays", "fields": fields})),
            )
                .into_response()
        }
    }
}

#[derive(Deserialize, Clone, Copy, Default)]
#[serde(rename_all = "snake_case")]
enum StateQuery {
    Pending,
    #[default]
    Dead,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OutboxQuery {
    #[serde(default)]
    state: StateQuery,
    bridge: Option<String>,
    room: Option<String>,
    #[serde(default)]
    after: i64,
    limit: Option<u32>,
}

/// Pending deliveries or dead letters, of a bridge or a room where given.
async fn outbox(State(c): State<Console>, q: Result<Query<OutboxQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let state = match q.state {
        StateQuery::Pending => OutboxState::Pending,
        StateQuery::Dead => OutboxState::Dead,
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_ROWS);
    let rows = match c.store.find_outbox(state, q.bridge.as_deref(), q.room.as_deref(), q.after, limit).await {
        Ok(r) => r,
        Err(e) => return unavailable(e),
    };
    let depths = match c.store.lane_depths().await {
        Ok(d) => d,
        Err(e) => return unavailable(e),
    };
    let mut lanes: Vec<Value> = depths
        .into_iter()
        .filter(|((b, r), _)| q.bridge.as_ref().is_none_or(|x| x == b) && q.room.as_ref().is_none_or(|x| x == r))
        .map(|((bridge, room), d)| json!({"bridge": bridge, "room": room, "pending": d.pending, "dead": d.dead, "oldest_pending_ms": d.oldest_pending_ms}))
        .collect();
    lanes.sort_by(|a, b| (a["bridge"].as_str(), a["room"].as_str()).cmp(&(b["bridge"].as_str(), b["room"].as_str())));
    let next = (rows.len() as u32 == limit).then(|| rows.last().map(|r| r.seq)).flatten();
    Json(json!({"rows": rows, "lanes": lanes, "next_after": next})).into_response()
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Matching {
    bridge: Option<String>,
    room: Option<String>,
}

/// Queue again every dead letter of a bridge, of a room, or all.
async fn retry_matching(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<Matching>, JsonRejection>,
) -> Response {
    let m = match body {
        Ok(Json(m)) => m,
        Err(e) => return bad_json(e),
    };
    if m.room.is_some() && m.bridge.is_none() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "a room is named with its bridge");
    }
    if let Some(b) = &m.bridge
        && c.router.bridge(b).is_none()
    {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("no bridge named {b:?}"));
    }
    match c.store.requeue_matching(m.bridge.as_deref(), m.room.as_deref()).await {
        Ok(n) => {
            let target = match (&m.bridge, &m.room) {
                (Some(b), Some(r)) => format!("{b}:{r}"),
                (Some(b), None) => b.clone(),
                _ => "all".into(),
            };
            c.audit(&caller, "outbox.retry_all", &target, &format!("{n} queued again")).await;
            Json(json!({"queued": n})).into_response()
        }
        Err(e) => unavailable(e),
    }
}

async fn retry_one(State(c): State<Console>, Extension(caller): Extension<Caller>, Path(delivery): Path<String>) -> Response {
    match c.store.requeue(&delivery).await {
        Ok(true) => {
            c.audit(&caller, "outbox.retry", &delivery, "").await;
            Json(json!({"queued": 1})).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "not_found", format!("no dead letter {delivery:?}")),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Drop {
    reason: String,
}

/// Give up on a dead letter, saying why; its event stays in the archive.
async fn drop_one(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    Path(delivery): Path<String>,
    body: Result<Json<Drop>, JsonRejection>,
) -> Response {
    let reason = match body {
        Ok(Json(d)) => d.reason.trim().to_string(),
        Err(e) => return bad_json(e),
    };
    if reason.is_empty() || reason.len() > MAX_TEXT {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", format!("say why, in at most {MAX_TEXT} bytes"));
    }
    match c.store.drop_dead_letter(&delivery, &reason, &caller.who).await {
        Ok(true) => {
            c.audit(&caller, "outbox.drop", &delivery, &reason).await;
            Json(json!({"dropped": 1})).into_response()
        }
        Ok(false) => error(StatusCode::NOT_FOUND, "not_found", format!("no dead letter {delivery:?}")),
        Err(e) => unavailable(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuditQuery {
    before: Option<i64>,
    limit: Option<u32>,
}

async fn audit(State(c): State<Console>, q: Result<Query<AuditQuery>, QueryRejection>) -> Response {
    let q = match q {
        Ok(Query(q)) => q,
        Err(e) => return bad_query(e),
    };
    let limit = q.limit.unwrap_or(100).clamp(1, MAX_ROWS);
    match c.store.audit_log(q.before, limit).await {
        Ok(entries) => {
            let next = (entries.len() as u32 == limit).then(|| entries.last().map(|e| e.id)).flatten();
            Json(json!({"entries": entries, "next_before": next})).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// Search the archive, as `/api/archive/search` does (docs/archive.md).
async fn search(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    params: Result<Query<crate::archive::SearchParams>, QueryRejection>,
) -> Response {
    let params = params.map(|Query(p)| p).map_err(|e| e.body_text());
    match crate::http::search_archive(&c.metrics, c.store.as_ref(), params).await {
        Ok((query, hits)) => {
            c.audit(&caller, "archive.search", "", &query.fts).await;
            Json(json!({"hits": hits})).into_response()
        }
        Err(refused) => refused.response(),
    }
}

/// A broadcast as the API takes it.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct NewBroadcast {
    to: Vec<String>,
    #[serde(default)]
    text: String,
    #[serde(default)]
    html: Option<String>,
    #[serde(default)]
    attachments: Vec<causeway_core::Attachment>,
    #[serde(default)]
    from: Option<String>,
}

/// Send a broadcast: planned at once (its recipients chosen, every
/// delivery queued); `GET …/broadcasts/{id}` follows it.
async fn send_broadcast(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<NewBroadcast>, JsonRejection>,
) -> Response {
    use super::broadcasts::{Asked, SendError, send};
    let new = match body {
        Ok(Json(n)) => n,
        Err(e) => return bad_json(e),
    };
    let asked = Asked { to: &new.to, text: &new.text, html: new.html.as_deref(), attachments: new.attachments, from: new.from.as_deref() };
    match send(&c, &caller, asked).await {
        Ok(summary) => {
            let status = if summary.error.is_some() { StatusCode::UNPROCESSABLE_ENTITY } else { StatusCode::ACCEPTED };
            let location = format!("/admin/api/broadcasts/{}", summary.requested.id);
            let body = json!({"broadcast": summary, "state": summary.state()});
            (status, [(header::LOCATION, location)], Json(body)).into_response()
        }
        Err(SendError::Invalid(e)) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e),
        Err(SendError::Store(e)) => unavailable(e),
    }
}

async fn list_broadcasts(State(c): State<Console>) -> Response {
    match c.store.broadcasts(None, 100).await {
        Ok(all) => {
            let all: Vec<Value> = all.iter().map(|s| json!({"broadcast": s, "state": s.state()})).collect();
            Json(json!({"broadcasts": all})).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// A broadcast with each recipient's state.
async fn show_broadcast(State(c): State<Console>, Path(id): Path<String>) -> Response {
    let summary = match c.store.broadcasts(Some(&id), 1).await {
        Ok(mut s) => s.pop(),
        Err(e) => return unavailable(e),
    };
    let Some(summary) = summary else { return error(StatusCode::NOT_FOUND, "not_found", format!("no broadcast {id:?}")) };
    match c.store.broadcast_recipients(&id).await {
        Ok(recipients) => Json(json!({"broadcast": summary, "state": summary.state(), "recipients": recipients})).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Start an export; it runs in the background (`GET …/exports/{id}` says
/// how far it is, `…/download` gives the file once done).
async fn start_export(
    State(c): State<Console>,
    Extension(caller): Extension<Caller>,
    body: Result<Json<super::exports::Wanted>, JsonRejection>,
) -> Response {
    let wanted = match body {
        Ok(Json(w)) => w,
        Err(e) => return bad_json(e),
    };
    let what = format!(
        "{} of {}",
        wanted.format.name(),
        if wanted.portals.is_empty() { "every portal".into() } else { wanted.portals.join(", ") }
    );
    match c.exports.start(c.store.clone(), wanted, &caller.who) {
        Ok(job) => {
            c.audit(&caller, "archive.export", &job.id, &what).await;
            (StatusCode::ACCEPTED, [(header::LOCATION, format!("/admin/api/archive/exports/{}", job.id))], Json(job)).into_response()
        }
        Err(e @ super::exports::StartError::Busy) => error(StatusCode::TOO_MANY_REQUESTS, "busy", e),
        Err(e) => error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e),
    }
}

/// The console's exports, and the export log (the CLI's too).
async fn list_exports(State(c): State<Console>) -> Response {
    match c.store.exports(100).await {
        Ok(log) => Json(json!({"jobs": c.exports.list(), "log": log})).into_response(),
        Err(e) => unavailable(e),
    }
}

async fn show_export(State(c): State<Console>, Path(id): Path<String>) -> Response {
    match c.exports.get(&id) {
        Some(job) => Json(job).into_response(),
        None => error(StatusCode::NOT_FOUND, "not_found", format!("no export {id:?}")),
    }
}

/// The file of a finished export, streamed.
pub async fn download(c: &Console, caller: &Caller, id: &str) -> Response {
    let Some(job) = c.exports.get(id) else { return error(StatusCode::NOT_FOUND, "not_found", format!("no export {id:?}")) };
    let Some((job, path)) = c.exports.file(id) else {
        return error(StatusCode::CONFLICT, "not_ready", format!("export {id:?} is {:?}", job.state));
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(path = %path.display(), "cannot read a finished export: {e}");
            return error(StatusCode::GONE, "gone", "the export's file is no longer there");
        }
    };
    c.audit(caller, "archive.download", id, &job.filename).await;
    let stream = futures_util::stream::unfold(Some(file), |file| async move {
        use tokio::io::AsyncReadExt;
        let mut f = file?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(axum::body::Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mime = match job.format {
        crate::archive::export::Format::Json => "application/json",
        crate::archive::export::Format::Mbox => "application/mbox",
        crate::archive::export::Format::Html => "text/html; charset=utf-8",
        crate::archive::export::Format::Pdf => "application/pdf",
        crate::archive::export::Format::Slack => "application/zip",
    };
    (
        [(header::CONTENT_TYPE, mime.to_string()), (header::CONTENT_DISPOSITION, format!("attachment; filename=\"{}\"", job.filename))],
        axum::body::Body::from_stream(stream),
    )
        .into_response()
}

async fn download_export(State(c): State<Console>, Extension(caller): Extension<Caller>, Path(id): Path<String>) -> Response {
    download(&c, &caller, &id).await
}
