//! The HTTP surface: `/metrics`, `/healthz`, `/readyz`, and every bridge's
//! inbound routes under `/bridges/<name>`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::metrics::Metrics;

#[derive(Clone)]
pub struct Surface {
    pub metrics: Arc<Metrics>,
    /// Set once every bridge has started and the outbox runs.
    pub ready: Arc<AtomicBool>,
}

pub fn router(surface: Surface, bridge_routes: Vec<(String, Router)>) -> Router {
    let mut app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .with_state(surface);
    for (name, routes) in bridge_routes {
        app = app.nest(&format!("/bridges/{name}"), routes);
    }
    app
}

async fn metrics(State(s): State<Surface>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], s.metrics.encode())
}

async fn ready(State(s): State<Surface>) -> impl IntoResponse {
    if s.ready.load(Ordering::Acquire) {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "starting\n")
    }
}
