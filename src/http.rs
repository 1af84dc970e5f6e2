//! The HTTP surface: `/metrics`, `/healthz`, `/readyz`, `/api/people/{id}/presence`,
//! and every bridge's inbound routes under `/bridges/<name>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::json;

use crate::metrics::Metrics;
use crate::router::Router as Portals;

#[derive(Clone)]
pub struct Surface {
    pub metrics: Arc<Metrics>,
    /// Set once every bridge has started and the outbox runs.
    pub ready: Arc<AtomicBool>,
    pub router: Arc<Portals>,
    pub api_token: Option<causeway_core::Secret>,
}

pub fn router(surface: Surface, bridge_routes: Vec<(String, Router)>) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/api/people/{id}/presence", get(presence))
        .with_state(surface);
    for (name, routes) in bridge_routes {
        app = app.nest(&format!("/bridges/{name}"), routes);
    }
    app
}

async fn metrics(State(s): State<Surface>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

/// A person's presence across their networks.
async fn presence(State(s): State<Surface>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(token) = &s.api_token
        && !causeway_core::http::bearer(&headers).is_some_and(|g| token.matches(g))
    {
        return (StatusCode::UNAUTHORIZED, Json(json!({"error": "unauthorized", "message": "missing or wrong token"}))).into_response();
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
