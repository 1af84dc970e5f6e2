//! The IT console: an admin API under `/admin/api/…` (its OpenAPI document
//! at `/admin/api/openapi.json`) and the console's pages under `/admin/`,
//! on a listener of their own (`admin.listen`), never on `http.listen`.
//!
//! Every request but the login and the OpenAPI document is authenticated
//! (a session cookie or a bearer token); every change needs a token that
//! is not read-only and, with a session, its CSRF token; every change is
//! written to the audit log (docs/console.md).

pub mod api;
pub mod auth;
pub mod broadcasts;
pub mod exports;
pub mod openapi;
pub mod pages;
pub mod portals;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::metrics::Metrics;
use crate::router::Router as Portals;
use crate::store::Store;

/// Request bodies the console takes at most.
pub const MAX_BODY: usize = 64 * 1024;

/// What the console's handlers share.
#[derive(Clone)]
pub struct Console {
    pub router: Arc<Portals>,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub auth: Arc<auth::Auth>,
    /// One portal change (or reload) at a time.
    pub edits: Arc<tokio::sync::Mutex<()>>,
    pub reloader: Arc<crate::reload::Reloader>,
    pub people: Arc<crate::directory::People>,
    /// `directory.ldap`, for an import on demand.
    pub ldap: Option<crate::ldap::LdapConfig>,
    /// Exports made from the console.
    pub exports: Arc<exports::Exports>,
}

impl Console {
    /// Write an admin action to the audit log (and the log).
    pub async fn audit(&self, caller: &auth::Caller, action: &str, target: &str, detail: &str) {
        tracing::info!(who = %caller.who, action, target, detail, "admin action");
        if let Err(e) = self.store.audit(&caller.who, action, target, detail).await {
            tracing::error!(error = %e, who = %caller.who, action, target, "cannot write the audit log");
        }
    }
}

/// An error as the API answers it: `{"error": code, "message": …}`.
pub fn error(status: StatusCode, code: &str, message: impl std::fmt::Display) -> Response {
    (status, axum::Json(json!({"error": code, "message": message.to_string()}))).into_response()
}

/// What a client sends the console, as the fuzz target gives it (`fuzz/`):
/// a first line read as the Cookie header, the rest as a request body of
/// each kind. Not an API.
#[doc(hidden)]
pub fn fuzz_request(data: &[u8]) {
    let (cookie, body) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    let mut headers = axum::http::HeaderMap::new();
    if let Ok(v) = HeaderValue::from_bytes(cookie) {
        headers.insert(header::COOKIE, v);
    }
    auth::fuzz_cookie(&headers);
    if let Ok(p) = serde_json::from_slice::<portals::NewPortal>(body) {
        let _ = p.id.as_deref().map(portals::fuzz_id);
    }
    let _ = serde_json::from_slice::<portals::PortalChange>(body);
}

/// The console's routes, for its own listener.
pub fn routes(console: Console) -> Router {
    let api = api::routes()
        .layer(middleware::from_fn_with_state(console.clone(), authenticate))
        .merge(api::open_routes())
        .fallback(|| async { error(StatusCode::NOT_FOUND, "not_found", "no such admin API route") });
    Router::new()
        .nest("/admin/api", api)
        .nest("/admin", pages::routes())
        .route("/admin/", axum::routing::get(|| async { axum::response::Redirect::to("/admin/overview") }))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(headers))
        .with_state(console)
}

/// Who asks, let in or not: a session (with its CSRF token on changes) or
/// a bearer token; a read-only token changes nothing. The caller rides
/// along in the request's extensions.
async fn authenticate(State(c): State<Console>, ConnectInfo(from): ConnectInfo<SocketAddr>, mut req: Request, next: Next) -> Response {
    let caller = match c.auth.caller(req.headers(), from.ip()) {
        Ok(caller) => caller,
        Err(refused) => return refusal(&c, refused),
    };
    let changes = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes {
        if caller.read_only {
            return error(StatusCode::FORBIDDEN, "read_only", format!("{} may look but not change", caller.who));
        }
        let given = req.headers().get(auth::CSRF_HEADER).and_then(|v| v.to_str().ok());
        if !caller.csrf_ok(given) {
            return error(StatusCode::FORBIDDEN, "csrf", format!("a change needs the session's CSRF token in {}", auth::CSRF_HEADER));
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The answer to a request that is not let in, counted.
pub fn refusal(c: &Console, refused: auth::Refused) -> Response {
    match refused {
        auth::Refused::Unauthorized | auth::Refused::WrongToken => {
            if refused == auth::Refused::WrongToken {
                c.metrics.admin_logins.get_or_create(&crate::metrics::result("failed")).inc();
            }
            let mut r = error(StatusCode::UNAUTHORIZED, "unauthorized", "log in, or send an admin token as Authorization: Bearer");
            r.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer realm=\"causeway-admin\""));
            r
        }
        auth::Refused::Limited { retry_after } => {
            c.metrics.admin_logins.get_or_create(&crate::metrics::result("limited")).inc();
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "limited", "too many failed logins from this address; wait a minute");
            r.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(retry_after.as_secs().max(1)));
            r
        }
    }
}

/// What every answer of the console carries: not cached, not framed by
/// another site, no guessing of content types, no scripts or styles but
/// its own, no address told to other sites (but its own origin to itself:
/// forms are checked for it).
async fn headers(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("same-origin"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
    );
    r
}
