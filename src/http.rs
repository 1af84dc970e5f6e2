//! The HTTP surface: `/metrics`, `/healthz`, `/readyz`, `/api/people/{id}/presence`,
//! `/api/archive/search`, `/api/archive/holds`, and every bridge's inbound routes under `/bridges/<name>`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use axum::Json;
use axum::Router;
use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tower_service::Service;

use crate::metrics::Metrics;
use crate::router::Router as Portals;

#[derive(Clone)]
pub struct Surface {
    pub metrics: Arc<Metrics>,
    /// Set once every bridge has started and the outbox runs.
    pub ready: Arc<AtomicBool>,
    pub router: Arc<Portals>,
    pub store: Arc<dyn crate::store::Store>,
    pub api_token: Option<causeway_core::Secret>,
}

/// Every running bridge's inbound routes, by bridge name, reached under
/// `/bridges/<name>`: mounted when the bridge starts, taken away or
/// replaced when a reload removes or changes it.
#[derive(Clone, Default)]
pub struct Mounted(Arc<RwLock<BTreeMap<String, Router>>>);

impl Mounted {
    /// `name`'s routes from now on (`None`: it has none, or does not run).
    pub fn mount(&self, name: &str, routes: Option<Router>) {
        let mut map = self.0.write().unwrap_or_else(|p| p.into_inner());
        match routes {
            Some(r) => map.insert(name.to_string(), r),
            None => map.remove(name),
        };
    }

    fn get(&self, name: &str) -> Option<Router> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }
}

/// A request under `/bridges/<name>/…`, handed to that bridge's routes with
/// the path they see (`/…`), as `nest` would.
async fn to_bridge(mounted: Mounted, mut req: Request) -> Response {
    let path = req.uri().path();
    let Some(rest) = path.strip_prefix("/bridges/") else {
        return error(StatusCode::NOT_FOUND, "not_found", "no such path");
    };
    let (name, tail) = match rest.split_once('/') {
        Some((name, tail)) => (name, format!("/{tail}")),
        None => (rest, "/".to_string()),
    };
    let Some(mut routes) = mounted.get(name) else {
        return error(StatusCode::NOT_FOUND, "not_found", format!("no running bridge {name:?} has routes here"));
    };
    let uri = match req.uri().query() {
        Some(q) => format!("{tail}?{q}"),
        None => tail,
    };
    match uri.parse::<Uri>() {
        Ok(uri) => *req.uri_mut() = uri,
        Err(_) => return error(StatusCode::BAD_REQUEST, "bad_path", "the path cannot be read"),
    }
    let _ = std::future::poll_fn(|cx| Service::<Request>::poll_ready(&mut routes, cx)).await;
    match routes.call(req).await {
        Ok(r) => r,
        Err(never) => match never {},
    }
}

pub fn router(surface: Surface, mounted: Mounted) -> Router {
    let to_bridges = {
        let m = mounted.clone();
        move |req: Request| to_bridge(m.clone(), req)
    };
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/people/{id}/presence", get(presence))
        .route("/api/archive/search", get(search))
        .route("/api/archive/holds", get(holds).post(add_hold))
        .route("/api/archive/holds/{id}/release", post(release_hold))
        // Not a route with path parameters: the bridge's own routes would
        // see them beside theirs.
        .fallback(to_bridges)
        .with_state(surface)
}

async fn metrics(State(s): State<Surface>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

fn error(status: StatusCode, error: &str, message: impl std::fmt::Display) -> Response {
    (status, Json(json!({"error": error, "message": message.to_string()}))).into_response()
}

/// The answer to a request without the API token (where one is set).
fn unauthorized(s: &Surface, headers: &HeaderMap) -> Option<Response> {
    match &s.api_token {
        Some(token) if !causeway_core::http::bearer(headers).is_some_and(|g| token.matches(g)) => {
            Some(error(StatusCode::UNAUTHORIZED, "unauthorized", "missing or wrong token"))
        }
        _ => None,
    }
}

/// The archive API is there only with an API token: the archive holds
/// everything everyone said.
fn archive_denied(s: &Surface, headers: &HeaderMap) -> Option<Response> {
    if s.api_token.is_none() {
        return Some(error(StatusCode::FORBIDDEN, "forbidden", "the archive API needs http.api_token in the config"));
    }
    unauthorized(s, headers)
}

fn unavailable(e: crate::store::StoreError) -> Response {
    tracing::warn!(error = %e, "archive API: the store failed");
    error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the archive could not be read or written")
}

#[derive(serde::Deserialize)]
struct HoldsQuery {
    #[serde(default)]
    released: bool,
}

/// Legal holds in force (`?released=true`: all, with those released).
async fn holds(
    State(s): State<Surface>,
    headers: HeaderMap,
    q: Result<Query<HoldsQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(denied) = archive_denied(&s, &headers) {
        return denied;
    }
    let Ok(Query(q)) = q else { return error(StatusCode::BAD_REQUEST, "bad_query", "released is true or false") };
    match s.store.holds(q.released).await {
        Ok(h) => Json(json!({"holds": h})).into_response(),
        Err(e) => unavailable(e),
    }
}

/// Set a legal hold: `{"portal": …}` or `{"person": …}`, with `reason` and `by`.
async fn add_hold(
    State(s): State<Surface>,
    headers: HeaderMap,
    body: Result<Json<crate::archive::retention::NewHold>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(denied) = archive_denied(&s, &headers) {
        return denied;
    }
    let hold = match body {
        Ok(Json(h)) => h,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if let Err(e) = hold.check() {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e);
    }
    match s.store.add_hold(&hold).await {
        Ok(h) => {
            tracing::info!(id = h.id, portal = ?h.portal, person = ?h.person, by = %h.set_by, reason = %h.reason, "legal hold set");
            (StatusCode::CREATED, Json(h)).into_response()
        }
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Release {
    by: String,
}

/// Release a legal hold: `{"by": …}`.
async fn release_hold(
    State(s): State<Surface>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Result<Json<Release>, axum::extract::rejection::JsonRejection>,
) -> Response {
    if let Some(denied) = archive_denied(&s, &headers) {
        return denied;
    }
    let Ok(id) = id.parse::<i64>() else { return error(StatusCode::NOT_FOUND, "not_found", "no such hold") };
    let by = match body {
        Ok(Json(r)) => r.by,
        Err(e) => return error(StatusCode::BAD_REQUEST, "bad_request", e.body_text()),
    };
    if let Err(e) = crate::archive::retention::check_by(&by) {
        return error(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e);
    }
    match s.store.release_hold(id, &by).await {
        Ok(Some(h)) => {
            tracing::info!(id = h.id, by = %by, "legal hold released");
            Json(h).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, "not_found", format!("no hold {id} in force")),
        Err(e) => unavailable(e),
    }
}

/// Search the archive (docs/archive.md). Only with an API token: the
/// archive holds everything everyone said.
async fn search(
    State(s): State<Surface>,
    headers: HeaderMap,
    params: Result<Query<crate::archive::SearchParams>, axum::extract::rejection::QueryRejection>,
) -> Response {
    if let Some(denied) = archive_denied(&s, &headers) {
        return denied;
    }
    let params = params.map(|Query(p)| p).map_err(|e| e.body_text());
    match search_archive(&s.metrics, s.store.as_ref(), params).await {
        Ok((_, hits)) => Json(json!({"hits": hits})).into_response(),
        Err(refused) => refused.response(),
    }
}

/// Why an archive search asked over HTTP has no results.
pub enum SearchRefused {
    /// The query or a time says nothing (the message says why).
    Query(String),
    /// The store could not be read.
    Failed,
}

impl SearchRefused {
    /// The API's answer.
    pub fn response(self) -> Response {
        match self {
            SearchRefused::Query(e) => error(StatusCode::BAD_REQUEST, "bad_query", e),
            SearchRefused::Failed => error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "the archive could not be searched"),
        }
    }
}

/// An archive search asked over HTTP (`/api/archive/search`, the console's
/// API and page), counted in `archive_searches_total{result}`: the query
/// made of the parameters, and its results.
pub async fn search_archive(
    metrics: &Metrics,
    store: &dyn crate::store::Store,
    params: Result<crate::archive::SearchParams, String>,
) -> Result<(crate::archive::SearchQuery, Vec<crate::archive::Hit>), SearchRefused> {
    let count = |result: &str| metrics.archive_searches.get_or_create(&crate::metrics::result(result)).inc();
    let query = match params.and_then(|p| p.query(causeway_core::now_ms()).map_err(|e| e.to_string())) {
        Ok(q) => q,
        Err(e) => {
            count("refused");
            return Err(SearchRefused::Query(e));
        }
    };
    match store.search(&query).await {
        Ok(hits) => {
            count("ok");
            Ok((query, hits))
        }
        Err(e) => {
            count("failed");
            tracing::warn!(error = %e, "archive search failed");
            Err(SearchRefused::Failed)
        }
    }
}

/// A person's presence across their networks.
async fn presence(State(s): State<Surface>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(denied) = unauthorized(&s, &headers) {
        return denied;
    }
    let Some(id) = s.router.person_id(&id) else {
        return (StatusCode::NOT_FOUND, Json(json!({"error": "not_found", "message": format!("no person {id:?} in the directory")})))
            .into_response();
    };
    match s.router.presence.view(&id) {
        Some(v) => Json(v).into_response(),
        // Known, but no network has said anything of them yet.
        None => Json(json!({"person": id, "show": "offline", "idle": false, "accounts": {}})).into_response(),
    }
}

async fn ready(State(s): State<Surface>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) { (StatusCode::OK, "ready\n") } else { (StatusCode::SERVICE_UNAVAILABLE, "starting\n") }
}
