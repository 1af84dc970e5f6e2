//! The console's pages under `/admin/`: server-rendered HTML (maud), plain
//! forms that work without JavaScript, one small script that keeps the
//! overview current, one style sheet; nothing from elsewhere.
//!
//! The pages use the session cookie only; every form that changes anything
//! carries the session's CSRF token.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use causeway_core::now_ms;
use maud::{DOCTYPE, Markup, html};
use serde_json::Value;

use super::Console;
use super::auth::{Caller, Refused};
use super::portals::{FieldError, NewPortal, PortalChange, PortalError};
use crate::store::{OutboxState, StoredLink};
use crate::topology::PortalKind;

const CSS: &str = include_str!("console.css");
const JS: &str = include_str!("console.js");
/// Rows of the new portal form.
const FORM_LINKS: usize = 4;

pub fn routes() -> Router<Console> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/admin/overview") }))
        .route("/login", get(login_page).post(login))
        .route("/logout", post(logout))
        .route("/overview", get(overview))
        .route("/portals", get(portals).post(create_portal))
        .route("/portals/{id}", get(portal))
        .route("/portals/{id}/links", post(change_links))
        .route("/portals/{id}/delete", post(delete_portal))
        .route("/people", get(people))
        .route("/people/import", post(import_people))
        .route("/reload", post(reload))
        .route("/outbox", get(outbox))
        .route("/outbox/retry", post(retry_matching))
        .route("/outbox/{delivery}/retry", post(retry_one))
        .route("/outbox/{delivery}/drop", post(drop_one))
        .route("/audit", get(audit))
        .route("/broadcasts", get(broadcasts).post(send_broadcast))
        .route("/broadcasts/{id}", get(broadcast_page))
        .route("/archive", get(archive))
        .route("/archive/exports", post(start_export))
        .route("/archive/exports/{id}", get(export_page))
        .route("/archive/exports/{id}/download", get(download_export))
        .route("/static/console.css", get(|| async { ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], CSS) }))
        .route("/static/console.js", get(|| async { ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8")], JS) }))
}

fn when(ms: i64) -> String {
    jiff::Timestamp::from_millisecond(ms).map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string()).unwrap_or_default()
}

fn ago(ms: Option<i64>) -> String {
    match ms {
        None => "—".into(),
        Some(ms) => {
            let s = ((now_ms() - ms).max(0) / 1000) as u64;
            match s {
                0..60 => format!("{s} s"),
                60..3600 => format!("{} min", s / 60),
                _ => format!("{} h", s / 3600),
            }
        }
    }
}

/// The page around `body`, with the navigation.
fn layout(title: &str, caller: Option<&Caller>, active: &str, body: Markup) -> Markup {
    let nav = [
        ("overview", "Overview"),
        ("portals", "Portals"),
        ("people", "People"),
        ("outbox", "Outbox"),
        ("broadcasts", "Broadcasts"),
        ("archive", "Archive"),
        ("audit", "Audit log"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Causeway console" }
                link rel="icon" href="data:,";
                link rel="stylesheet" href="/admin/static/console.css";
                script src="/admin/static/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to the content" }
                header {
                    span.brand { "Causeway" }
                    @if let Some(c) = caller {
                        nav aria-label="Console" {
                            ul {
                                @for (path, name) in nav {
                                    li {
                                        @if path == active {
                                            a href={ "/admin/" (path) } aria-current="page" { (name) }
                                        } @else {
                                            a href={ "/admin/" (path) } { (name) }
                                        }
                                    }
                                }
                            }
                        }
                        form.logout method="post" action="/admin/logout" {
                            (csrf(c))
                            span.who { (c.who) @if c.read_only { " (read-only)" } }
                            button type="submit" { "Log out" }
                        }
                    }
                }
                main id="main" tabindex="-1" {
                    h1 { (title) }
                    (body)
                }
            }
        }
    }
}

fn csrf(c: &Caller) -> Markup {
    html! { input type="hidden" name="csrf" value=(c.csrf.as_deref().unwrap_or("")); }
}

fn page(status: StatusCode, markup: Markup) -> Response {
    (status, [(header::CONTENT_TYPE, "text/html; charset=utf-8")], markup.into_string()).into_response()
}

fn notice(kind: &str, text: &str) -> Markup {
    html! { p class={ "notice " (kind) } role=(if kind == "error" { "alert" } else { "status" }) { (text) } }
}

/// Who is logged in, or the way to the login page.
fn caller(c: &Console, headers: &HeaderMap, from: SocketAddr) -> Result<Caller, Box<Response>> {
    // Pages take the session only: a bearer token is for the API.
    let mut only_cookie = headers.clone();
    only_cookie.remove(header::AUTHORIZATION);
    c.auth.caller(&only_cookie, from.ip()).map_err(|_| Box::new(Redirect::to("/admin/login").into_response()))
}

/// Who sends a form that changes something: logged in, not read-only, the
/// session's CSRF token in the form, and from the console's own pages.
fn changer(c: &Console, headers: &HeaderMap, from: SocketAddr, form: &[(String, String)]) -> Result<Caller, Box<Response>> {
    let caller = caller(c, headers, from)?;
    let given = form.iter().find(|(k, _)| k == "csrf").map(|(_, v)| v.as_str());
    if !caller.csrf_ok(given) || !same_origin(headers) {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            layout(
                "Refused",
                Some(&caller),
                "",
                notice("error", "This form did not come from this console (its CSRF token is missing or wrong)."),
            ),
        )));
    }
    if caller.read_only {
        return Err(Box::new(page(
            StatusCode::FORBIDDEN,
            layout("Refused", Some(&caller), "", notice("error", "A read-only login changes nothing.")),
        )));
    }
    Ok(caller)
}

/// Who looks at a page: logged in (else the way to the login page).
struct Viewer(Caller);

impl axum::extract::FromRequestParts<Console> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, c: &Console) -> Result<Self, Response> {
        let from = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0);
        let Some(from) = from else { return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()) };
        caller(c, &parts.headers, from).map(Viewer).map_err(|r| *r)
    }
}

/// A form that changes something, from who may send it (see [`changer`]);
/// anyone else gets the page that says why.
struct Change {
    caller: Caller,
    form: Vec<(String, String)>,
}

impl axum::extract::FromRequest<Console> for Change {
    type Rejection = Response;

    async fn from_request(req: axum::extract::Request, c: &Console) -> Result<Self, Response> {
        let from = req.extensions().get::<ConnectInfo<SocketAddr>>().map(|ci| ci.0);
        let Some(from) = from else { return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response()) };
        let headers = req.headers().clone();
        let Form(form) = Form::<Vec<(String, String)>>::from_request(req, c).await.map_err(IntoResponse::into_response)?;
        let caller = changer(c, &headers, from, &form).map_err(|r| *r)?;
        Ok(Change { caller, form })
    }
}

/// A form posted from elsewhere names another origin (browsers send it).
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|o| o.to_str().ok()) else { return true };
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or("");
    origin.split_once("://").is_some_and(|(_, rest)| rest == host)
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> &'a str {
    form.iter().find(|(k, _)| k == name).map_or("", |(_, v)| v.trim())
}

async fn login_page(State(c): State<Console>, headers: HeaderMap, ConnectInfo(from): ConnectInfo<SocketAddr>) -> Response {
    if caller(&c, &headers, from).is_ok() {
        return Redirect::to("/admin/overview").into_response();
    }
    page(StatusCode::OK, login_form(None))
}

fn login_form(error: Option<&str>) -> Markup {
    layout(
        "Log in",
        None,
        "",
        html! {
            @if let Some(e) = error { (notice("error", e)) }
            form.card method="post" action="/admin/login" {
                label for="token" { "Admin token" }
                input id="token" name="token" type="password" autocomplete="current-password" required autofocus
                    aria-describedby="token-help" aria-invalid=(if error.is_some() { "true" } else { "false" });
                p id="token-help" .help { "The token " code { "causeway admin token" } " made for you." }
                button type="submit" { "Log in" }
            }
        },
    )
}

async fn login(
    State(c): State<Console>,
    headers: HeaderMap,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    if !same_origin(&headers) {
        // Another site must not log a browser in (as someone else).
        return page(StatusCode::FORBIDDEN, login_form(Some("This login did not come from this console.")));
    }
    let token = field(&form, "token");
    let caller = match c.auth.check_token(token, from.ip()) {
        Ok(caller) => caller,
        Err(refused) => {
            let (status, why, result) = match refused {
                Refused::Limited { .. } => (StatusCode::TOO_MANY_REQUESTS, "Too many failed logins from here; wait a minute.", "limited"),
                _ => (StatusCode::UNAUTHORIZED, "That is not an admin token.", "failed"),
            };
            c.metrics.admin_logins.get_or_create(&crate::metrics::result(result)).inc();
            tracing::warn!(from = %from.ip(), "console login failed");
            return page(status, login_form(Some(why)));
        }
    };
    c.metrics.admin_logins.get_or_create(&crate::metrics::result("ok")).inc();
    let (cookie, _) = c.auth.open_session(&caller);
    c.audit(&caller, "login", "", &format!("from {}", from.ip())).await;
    let mut r = Redirect::to("/admin/overview").into_response();
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).expect("a cookie of hex digits"));
    r
}

async fn logout(
    State(c): State<Console>,
    headers: HeaderMap,
    ConnectInfo(from): ConnectInfo<SocketAddr>,
    Form(form): Form<Vec<(String, String)>>,
) -> Response {
    let caller = match caller(&c, &headers, from) {
        Ok(caller) if caller.csrf_ok(Some(field(&form, "csrf"))) => caller,
        Ok(_) => return StatusCode::FORBIDDEN.into_response(),
        Err(r) => return *r,
    };
    c.auth.close_session(&headers);
    c.audit(&caller, "logout", "", "").await;
    let mut r = Redirect::to("/admin/login").into_response();
    let clear = c.auth.cookie("", std::time::Duration::ZERO);
    r.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&clear).expect("a plain cookie"));
    r
}

fn bridges_table(bridges: &[Value]) -> Markup {
    html! {
        div.scroll {
            table #bridges {
                caption { "Bridges (updates by itself)" }
                thead { tr {
                    th scope="col" { "Bridge" } th scope="col" { "State" } th scope="col" { "In" } th scope="col" { "Out" }
                    th scope="col" { "Pending" } th scope="col" { "Dead letters" } th scope="col" { "Oldest pending" } th scope="col" { "Last error" }
                } }
                tbody {
                    @for b in bridges {
                        @let name = b["name"].as_str().unwrap_or("");
                        tr data-bridge=(name) {
                            th scope="row" { (name) " " span.kind { (b["kind"].as_str().unwrap_or("")) } }
                            td data-field="up" class=(if b["up"] == true { "up" } else { "down" }) {
                                (if b["up"] == true { "up" } else { "down" })
                            }
                            td data-field="events_in" { (b["events_in"]) }
                            td data-field="events_out" { (b["events_out"]) }
                            td data-field="pending" { (b["pending"]) }
                            td data-field="dead" { a href={ "/admin/outbox?state=dead&bridge=" (name) } { (b["dead"]) } }
                            td data-field="lag" { (b["lag_ms"].as_i64().map_or("—".to_string(), |ms| format!("{} s", ms / 1000))) }
                            td data-field="last_error" { (b["last_error"]["message"].as_str().unwrap_or("—")) }
                        }
                    }
                }
            }
        }
    }
}

async fn overview(State(c): State<Console>, Viewer(caller): Viewer) -> Response {
    let bridges = super::api::bridge_states(&c).await.unwrap_or_default();
    let portals = c.router.topology().portals();
    let count = |k: PortalKind| portals.iter().filter(|p| p.kind == k).count();
    let latency = c.metrics.delivery_latency_summary();
    let body = html! {
        section.tiles aria-label="At a glance" {
            div.tile { span.n data-total="events_per_minute" { "…" } span.l { "events per minute" } }
            div.tile { span.n data-total="pending" { (bridges.iter().map(|b| b["pending"].as_u64().unwrap_or(0)).sum::<u64>()) } span.l { "waiting in the outbox" } }
            div.tile { span.n data-total="dead" { (bridges.iter().map(|b| b["dead"].as_u64().unwrap_or(0)).sum::<u64>()) } span.l { "dead letters" } }
            div.tile { span.n data-total="latency" { (latency.map_or("—".into(), |s| format!("{:.2} s", s))) } span.l { "mean delivery latency" } }
            div.tile { span.n { (count(PortalKind::Configured) + count(PortalKind::Console)) } span.l { "portals (" (count(PortalKind::Direct)) " direct)" } }
            div.tile { span.n { (c.router.directory().people().len()) } span.l { "people" } }
        }
        (bridges_table(&bridges))
        p.help #live aria-live="polite" { "Updated " span #updated { (when(now_ms())) } }
        @if !caller.read_only {
            form.card method="post" action="/admin/reload" {
                h2 { "The config file" }
                (csrf(&caller))
                p.help { "Read it again, as SIGHUP does: portals and people change at once; a file that does not check is refused." }
                button type="submit" { "Reload the config" }
            }
        }
    };
    page(StatusCode::OK, layout("Overview", Some(&caller), "overview", body))
}

async fn reload(State(c): State<Console>, Change { caller, .. }: Change) -> Response {
    let (status, body) = match c.reloader.reload().await {
        Ok(done) => {
            c.audit(&caller, "config.reload", "", &done.summary()).await;
            let list = |v: &[String]| if v.is_empty() { "none".to_string() } else { v.join(", ") };
            (
                StatusCode::OK,
                html! {
                    (notice("ok", "The config was read again."))
                    dl {
                        dt { "Bridges added" } dd { (list(&done.bridges_added)) }
                        dt { "Bridges restarted with new settings" } dd { (list(&done.bridges_changed)) }
                        dt { "Bridges removed" } dd { (list(&done.bridges_removed)) }
                        @if !done.bridges_failed.is_empty() { dt { "Bridges not started" } dd { (done.bridges_failed.join("; ")) } }
                        dt { "Portals added" } dd { (list(&done.portals_added)) }
                        dt { "Portals changed" } dd { (list(&done.portals_changed)) }
                        dt { "Portals removed" } dd { (list(&done.portals_removed)) }
                        dt { "People" } dd { (done.people) }
                        dt { "Changed, for the next start" } dd { (list(&done.restart_needed)) }
                        @if !done.not_joined.is_empty() { dt { "Not joined yet" } dd { (done.not_joined.join("; ")) } }
                    }
                },
            )
        }
        Err(crate::reload::ReloadError::Invalid(errors)) => {
            c.audit(&caller, "config.reload", "", &format!("refused: {} problem(s)", errors.len())).await;
            (
                StatusCode::UNPROCESSABLE_ENTITY,
                html! {
                    (notice("error", "The config does not check; the running one stays."))
                    ul.problems { @for e in &errors { li { code { (e.path) } ": " (e.message) } } }
                },
            )
        }
    };
    page(status, layout("Reload", Some(&caller), "overview", html! { (body) p { a href="/admin/overview" { "Back to the overview" } } }))
}

async fn import_people(State(c): State<Console>, Change { caller, .. }: Change) -> Response {
    let Some(ldap) = &c.ldap else { return people_page(&c, &caller, Some(notice("error", "There is no directory.ldap in the config."))) };
    let message = match c.people.import_now(ldap, c.store.as_ref()).await {
        Ok(n) => {
            c.audit(&caller, "people.import", "ldap", &format!("{n} people")).await;
            notice("ok", &format!("Imported: the directory holds {n} people."))
        }
        Err(e) => {
            c.audit(&caller, "people.import", "ldap", &format!("failed: {e}")).await;
            notice("error", &format!("The import failed ({e}); the people imported before stay."))
        }
    };
    people_page(&c, &caller, Some(message))
}

fn kind_badge(kind: PortalKind) -> Markup {
    html! { span class={ "badge " (kind.name()) } { (kind.name()) } }
}

fn portal_form(c: &Console, caller: &Caller, form: &[(String, String)], errors: &[FieldError]) -> Markup {
    let error_of = |f: &str| errors.iter().find(|e| e.field == f).map(|e| e.message.clone());
    let running = c.router.bridges();
    let bridges: Vec<&String> = running.keys().collect();
    html! {
        form.card method="post" action="/admin/portals" novalidate {
            h2 { "New portal" }
            (csrf(caller))
            @if let Some(e) = error_of("links") { (notice("error", &e)) }
            div.field {
                label for="id" { "Portal id " span.help { "(letters, digits, - and _; left empty, one is made up)" } }
                input id="id" name="id" value=(field(form, "id")) aria-invalid=(error_of("id").is_some()) aria-describedby="id-error";
                @if let Some(e) = error_of("id") { p.field-error id="id-error" { (e) } }
            }
            fieldset {
                legend { "Rooms to link (two at least)" }
                @for i in 0..FORM_LINKS {
                    @let bridge_err = error_of(&format!("links[{i}].bridge"));
                    @let room_err = error_of(&format!("links[{i}].room"));
                    @let chosen = field(form, &format!("bridge_{i}"));
                    div.link-row {
                        div.field {
                            label for={ "bridge_" (i) } { "Bridge " (i + 1) }
                            select id={ "bridge_" (i) } name={ "bridge_" (i) } aria-invalid=(bridge_err.is_some()) {
                                option value="" { "—" }
                                @for b in &bridges {
                                    option value=(b) selected[chosen == b.as_str()] { (b) }
                                }
                            }
                            @if let Some(e) = bridge_err { p.field-error { (e) } }
                        }
                        div.field {
                            label for={ "room_" (i) } { "Room " (i + 1) }
                            input id={ "room_" (i) } name={ "room_" (i) } value=(field(form, &format!("room_{i}")))
                                aria-invalid=(room_err.is_some()) aria-describedby={ "room_" (i) "-error" };
                            @if let Some(e) = room_err { p.field-error id={ "room_" (i) "-error" } { (e) } }
                        }
                    }
                }
            }
            button type="submit" { "Make the portal" }
        }
    }
}

async fn portals_page(c: &Console, caller: &Caller, form: &[(String, String)], errors: &[FieldError], status: StatusCode) -> Response {
    let list = c.router.topology().portals();
    let body = html! {
        div.scroll {
            table {
                caption { "Portals" }
                thead { tr { th scope="col" { "Id" } th scope="col" { "Kind" } th scope="col" { "Rooms" } } }
                tbody {
                    @for p in &list {
                        tr {
                            th scope="row" { a href={ "/admin/portals/" (p.id) } { (p.id) } }
                            td { (kind_badge(p.kind)) }
                            td { @for l in &p.links { span.link { (l.bridge) ": " (l.room) } " " } }
                        }
                    }
                }
            }
        }
        @if !caller.read_only { (portal_form(c, caller, form, errors)) }
    };
    page(status, layout("Portals", Some(caller), "portals", body))
}

async fn portals(State(c): State<Console>, Viewer(caller): Viewer) -> Response {
    portals_page(&c, &caller, &[], &[], StatusCode::OK).await
}

async fn create_portal(State(c): State<Console>, Change { caller, form }: Change) -> Response {
    // Rows left empty are not rooms; the others keep their row's number,
    // so a mistake is shown beside the field it is in.
    let rows: Vec<(usize, StoredLink)> = (0..FORM_LINKS)
        .map(|i| (i, StoredLink { bridge: field(&form, &format!("bridge_{i}")).into(), room: field(&form, &format!("room_{i}")).into() }))
        .filter(|(_, l)| !(l.bridge.is_empty() && l.room.is_empty()))
        .collect();
    let id = Some(field(&form, "id").to_string()).filter(|s| !s.is_empty());
    let new = NewPortal { id, links: rows.iter().map(|(_, l)| l.clone()).collect() };
    match super::portals::create(&c.router, c.store.as_ref(), &c.edits, new).await {
        Ok((p, _)) => {
            c.audit(&caller, "portal.create", &p.id, &super::portals::links_text(&p.links)).await;
            Redirect::to(&format!("/admin/portals/{}", p.id)).into_response()
        }
        Err(PortalError::Invalid(errors)) => {
            let errors: Vec<FieldError> = errors
                .into_iter()
                .map(|mut e| {
                    // links[n] of the request is the nth row given.
                    if let Some(rest) = e.field.strip_prefix("links[")
                        && let Some((n, tail)) = rest.split_once(']')
                        && let Some((row, _)) = n.parse::<usize>().ok().and_then(|n| rows.get(n))
                    {
                        e.field = format!("links[{row}]{tail}");
                    }
                    e
                })
                .collect();
            portals_page(&c, &caller, &form, &errors, StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => {
            let errors = [FieldError { field: "id".into(), message: e.to_string() }];
            portals_page(&c, &caller, &form, &errors, StatusCode::CONFLICT).await
        }
    }
}

async fn portal_page(c: &Console, caller: &Caller, id: &str, message: Option<Markup>, status: StatusCode) -> Response {
    let Some(p) = c.router.topology().get(id) else {
        return page(
            StatusCode::NOT_FOUND,
            layout("No such portal", Some(caller), "portals", notice("error", &format!("There is no portal {id:?}."))),
        );
    };
    let links = super::api::link_states(c, &p).await.unwrap_or_default();
    let editable = p.kind.editable() && !caller.read_only;
    let body = html! {
        @if let Some(m) = message { (m) }
        p { (kind_badge(p.kind)) @if p.kind == PortalKind::Configured { " From the config file: change it there, then reload." } }
        div.scroll {
            table {
                caption { "Rooms" }
                thead { tr {
                    th scope="col" { "Bridge" } th scope="col" { "Room" } th scope="col" { "Connected" } th scope="col" { "In the room" } th scope="col" { "Last delivery" }
                    th scope="col" { "Pending" } th scope="col" { "Dead" } th scope="col" { "Last error" }
                    @if editable { th scope="col" { span.sr { "Actions" } } }
                } }
                tbody {
                    @for l in &links {
                        tr {
                            td { (l.bridge) } th scope="row" { (l.room) }
                            td class=(if l.connected { "up" } else { "down" }) { (if l.connected { "yes" } else { "no" }) }
                            td data-field="joined" class=(match l.joined { Some(true) => "up", Some(false) => "down", None => "" }) {
                                (match l.joined { Some(true) => "joined", Some(false) => "not joined", None => "—" })
                            }
                            td { (l.last_delivered_ms.map_or("—".into(), |ms| format!("{} ago", ago(Some(ms))))) }
                            td { (l.pending) } td { (l.dead) }
                            td { (l.last_error.as_ref().map_or("—", |e| e.message.as_str())) }
                            @if editable {
                                td {
                                    form method="post" action={ "/admin/portals/" (p.id) "/links" } {
                                        (csrf(caller))
                                        input type="hidden" name="remove_bridge" value=(l.bridge);
                                        input type="hidden" name="remove_room" value=(l.room);
                                        button.secondary type="submit" aria-label={ "Take " (l.room) " out" } { "Take out" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        @if editable {
            form.card method="post" action={ "/admin/portals/" (p.id) "/links" } {
                h2 { "Link a room" }
                (csrf(caller))
                div.link-row {
                    div.field {
                        label for="add_bridge" { "Bridge" }
                        select id="add_bridge" name="add_bridge" {
                            @for b in c.router.bridges().keys() { option value=(b) { (b) } }
                        }
                    }
                    div.field { label for="add_room" { "Room" } input id="add_room" name="add_room" required; }
                }
                button type="submit" { "Link it" }
            }
            form.card.danger method="post" action={ "/admin/portals/" (p.id) "/delete" } {
                h2 { "Remove the portal" }
                (csrf(caller))
                p.help { "Its rooms are left; what waits for them becomes dead letters. What was said stays in the archive." }
                button.danger type="submit" { "Remove " (p.id) }
            }
        }
    };
    page(status, layout(&format!("Portal {}", p.id), Some(caller), "portals", body))
}

async fn portal(State(c): State<Console>, Viewer(caller): Viewer, Path(id): Path<String>) -> Response {
    portal_page(&c, &caller, &id, None, StatusCode::OK).await
}

async fn change_links(State(c): State<Console>, Path(id): Path<String>, Change { caller, form }: Change) -> Response {
    let link = |b: &str, r: &str| StoredLink { bridge: field(&form, b).into(), room: field(&form, r).into() };
    let mut change = PortalChange::default();
    if !field(&form, "add_room").is_empty() {
        change.add.push(link("add_bridge", "add_room"));
    }
    if !field(&form, "remove_room").is_empty() {
        change.remove.push(link("remove_bridge", "remove_room"));
    }
    let detail = change.describe();
    match super::portals::change(&c.router, c.store.as_ref(), &c.edits, &id, change).await {
        Ok((_, joined)) => {
            c.audit(&caller, "portal.change", &id, &detail).await;
            let failed: Vec<String> = joined.iter().filter_map(|j| j.error.as_ref().map(|e| format!("{}: {e}", j.room))).collect();
            let message = if failed.is_empty() {
                notice("ok", "Changed.")
            } else {
                notice("error", &format!("Changed, but not every room is joined yet: {}", failed.join("; ")))
            };
            portal_page(&c, &caller, &id, Some(message), StatusCode::OK).await
        }
        Err(PortalError::Invalid(errors)) => {
            let text = errors.iter().map(|e| e.message.clone()).collect::<Vec<_>>().join("; ");
            portal_page(&c, &caller, &id, Some(notice("error", &text)), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(e) => portal_page(&c, &caller, &id, Some(notice("error", &e.to_string())), StatusCode::CONFLICT).await,
    }
}

async fn delete_portal(State(c): State<Console>, Path(id): Path<String>, Change { caller, .. }: Change) -> Response {
    match super::portals::delete(&c.router, c.store.as_ref(), &c.edits, &id).await {
        Ok(gone) => {
            c.audit(&caller, "portal.delete", &id, &super::portals::links_text(&gone)).await;
            Redirect::to("/admin/portals").into_response()
        }
        Err(e) => portal_page(&c, &caller, &id, Some(notice("error", &e.to_string())), StatusCode::CONFLICT).await,
    }
}

async fn people(State(c): State<Console>, Viewer(caller): Viewer) -> Response {
    people_page(&c, &caller, None)
}

fn people_page(c: &Console, caller: &Caller, message: Option<Markup>) -> Response {
    let directory = c.router.directory();
    let last = c.people.last_import();
    let body = html! {
        @if let Some(m) = message { (m) }
        @if c.ldap.is_some() {
            section.card aria-labelledby="ldap" {
                h2 #ldap { "LDAP directory" }
                p { "Last import: " (last.imported_ms.map_or("none yet".into(), when)) }
                @if !last.left_out.is_empty() {
                    details {
                        summary { (last.left_out.len()) " entries left out" }
                        ul { @for why in &last.left_out { li { (why) } } }
                    }
                }
                @if !caller.read_only {
                    form method="post" action="/admin/people/import" {
                        (csrf(caller))
                        button type="submit" { "Import now" }
                    }
                }
            }
        }
        div.scroll {
            table {
                caption { (directory.people().len()) " people" }
                thead { tr { th scope="col" { "Id" } th scope="col" { "Name" } th scope="col" { "Accounts" } th scope="col" { "Presence" } } }
                tbody {
                    @for p in directory.people() {
                        @let shown = c.router.presence.view(&p.id).map(|v| serde_json::to_value(v.show).ok().and_then(|s| s.as_str().map(str::to_string)).unwrap_or_default());
                        tr {
                            th scope="row" { (p.id) } td { (p.name) }
                            td { @for (bridge, account) in &p.accounts { span.link { (bridge) ": " (account) } " " } }
                            td { (shown.unwrap_or_else(|| "offline".into())) }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("People", Some(caller), "people", body))
}

#[derive(serde::Deserialize, Default)]
struct OutboxQuery {
    state: Option<String>,
    bridge: Option<String>,
    room: Option<String>,
}

async fn outbox_page(c: &Console, caller: &Caller, q: &OutboxQuery, message: Option<Markup>) -> Response {
    let dead = q.state.as_deref() != Some("pending");
    let (bridge, room) = (q.bridge.as_deref().filter(|s| !s.is_empty()), q.room.as_deref().filter(|s| !s.is_empty()));
    let state = if dead { OutboxState::Dead } else { OutboxState::Pending };
    let rows = c.store.find_outbox(state, bridge, room, 0, 200).await.unwrap_or_default();
    let back = format!(
        "/admin/outbox?state={}&bridge={}&room={}",
        if dead { "dead" } else { "pending" },
        serde_urlencoded::to_string([("", bridge.unwrap_or(""))]).unwrap_or_default().trim_start_matches('='),
        serde_urlencoded::to_string([("", room.unwrap_or(""))]).unwrap_or_default().trim_start_matches('=')
    );
    let body = html! {
        @if let Some(m) = message { (m) }
        form.filters method="get" action="/admin/outbox" {
            div.field {
                label for="state" { "Show" }
                select id="state" name="state" {
                    option value="dead" selected[dead] { "Dead letters" }
                    option value="pending" selected[!dead] { "Pending" }
                }
            }
            div.field { label for="bridge" { "Bridge" } input id="bridge" name="bridge" value=(bridge.unwrap_or("")); }
            div.field { label for="room" { "Room" } input id="room" name="room" value=(room.unwrap_or("")); }
            button type="submit" { "Show" }
        }
        @if dead && !caller.read_only && !rows.is_empty() {
            form method="post" action="/admin/outbox/retry" {
                (csrf(caller))
                input type="hidden" name="bridge" value=(bridge.unwrap_or(""));
                input type="hidden" name="room" value=(room.unwrap_or(""));
                input type="hidden" name="back" value=(back);
                button type="submit" { "Retry every dead letter shown" }
            }
        }
        div.scroll {
            table #outbox {
                caption { (rows.len()) (if dead { " dead letters" } else { " pending deliveries" }) }
                thead { tr {
                    th scope="col" { "Queued" } th scope="col" { "Portal" } th scope="col" { "To" } th scope="col" { "Attempts" }
                    th scope="col" { "Last error" } @if dead && !caller.read_only { th scope="col" { span.sr { "Actions" } } }
                } }
                tbody {
                    @for r in &rows {
                        tr data-delivery=(r.delivery_id) {
                            td { (when(r.enqueued_ms)) }
                            td { (r.portal) }
                            th scope="row" { (r.bridge) ": " (r.room) @if let Some(who) = &r.recipient { " (" (who) ")" } }
                            td { (r.attempts) }
                            td { (r.last_error.as_deref().unwrap_or("—")) }
                            @if dead && !caller.read_only {
                                td.actions {
                                    form method="post" action={ "/admin/outbox/" (r.delivery_id) "/retry" } {
                                        (csrf(caller))
                                        input type="hidden" name="back" value=(back);
                                        button type="submit" { "Retry" }
                                    }
                                    form method="post" action={ "/admin/outbox/" (r.delivery_id) "/drop" } {
                                        (csrf(caller))
                                        input type="hidden" name="back" value=(back);
                                        label.sr for={ "reason-" (r.seq) } { "Why drop it" }
                                        input id={ "reason-" (r.seq) } name="reason" placeholder="why drop it" required maxlength="1000";
                                        button.secondary type="submit" { "Drop" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("Outbox", Some(caller), "outbox", body))
}

async fn outbox(State(c): State<Console>, Viewer(caller): Viewer, Query(q): Query<OutboxQuery>) -> Response {
    outbox_page(&c, &caller, &q, None).await
}

/// Back to the outbox page the form was on.
fn back_to(form: &[(String, String)]) -> Redirect {
    let back = field(form, "back");
    // Only a path of this console: never a redirect elsewhere.
    if back.starts_with("/admin/outbox") && !back.contains("//") { Redirect::to(back) } else { Redirect::to("/admin/outbox") }
}

async fn retry_one(State(c): State<Console>, Path(delivery): Path<String>, Change { caller, form }: Change) -> Response {
    match c.store.requeue(&delivery).await {
        Ok(true) => {
            c.audit(&caller, "outbox.retry", &delivery, "").await;
            back_to(&form).into_response()
        }
        Ok(false) => {
            outbox_page(&c, &caller, &OutboxQuery::default(), Some(notice("error", "No such dead letter (retried already?)."))).await
        }
        Err(e) => outbox_page(&c, &caller, &OutboxQuery::default(), Some(notice("error", &e.to_string()))).await,
    }
}

async fn retry_matching(State(c): State<Console>, Change { caller, form }: Change) -> Response {
    let bridge = Some(field(&form, "bridge")).filter(|s| !s.is_empty());
    let room = Some(field(&form, "room")).filter(|s| !s.is_empty());
    match c.store.requeue_matching(bridge, room).await {
        Ok(n) => {
            let target = [bridge, room].iter().flatten().copied().collect::<Vec<_>>().join(":");
            c.audit(&caller, "outbox.retry_all", if target.is_empty() { "all" } else { &target }, &format!("{n} queued again")).await;
            back_to(&form).into_response()
        }
        Err(e) => outbox_page(&c, &caller, &OutboxQuery::default(), Some(notice("error", &e.to_string()))).await,
    }
}

async fn drop_one(State(c): State<Console>, Path(delivery): Path<String>, Change { caller, form }: Change) -> Response {
    let reason = field(&form, "reason");
    if reason.is_empty() || reason.len() > 1000 {
        return outbox_page(
            &c,
            &caller,
            &OutboxQuery::default(),
            Some(notice("error", "Say why it is dropped (at most 1000 characters).")),
        )
        .await;
    }
    match c.store.drop_dead_letter(&delivery, reason, &caller.who).await {
        Ok(true) => {
            c.audit(&caller, "outbox.drop", &delivery, reason).await;
            back_to(&form).into_response()
        }
        Ok(false) => outbox_page(&c, &caller, &OutboxQuery::default(), Some(notice("error", "No such dead letter."))).await,
        Err(e) => outbox_page(&c, &caller, &OutboxQuery::default(), Some(notice("error", &e.to_string()))).await,
    }
}

async fn audit(State(c): State<Console>, Viewer(caller): Viewer) -> Response {
    let entries = c.store.audit_log(None, 200).await.unwrap_or_default();
    let body = html! {
        div.scroll {
            table #audit {
                caption { "The latest " (entries.len()) " admin actions" }
                thead { tr { th scope="col" { "When" } th scope="col" { "Who" } th scope="col" { "What" } th scope="col" { "On" } th scope="col" { "Detail" } } }
                tbody {
                    @for e in &entries {
                        tr { td { (when(e.at_ms)) } th scope="row" { (e.who) } td { (e.action) } td { (e.target) } td { (e.detail) } }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("Audit log", Some(&caller), "audit", body))
}

async fn archive(State(c): State<Console>, Viewer(caller): Viewer, Query(params): Query<Vec<(String, String)>>) -> Response {
    let q = field(&params, "q").to_string();
    let portal = field(&params, "portal").to_string();
    let person = field(&params, "person").to_string();
    let mut result = None;
    if !q.is_empty() {
        let search = crate::archive::SearchParams {
            q: q.clone(),
            portal: Some(portal.clone()),
            person: Some(person.clone()),
            network: None,
            since: None,
            until: None,
            kind: None,
            retracted: false,
            limit: Some(50),
            context: Some(0),
        };
        result = Some(match crate::http::search_archive(&c.metrics, c.store.as_ref(), Ok(search)).await {
            Ok((query, hits)) => {
                c.audit(&caller, "archive.search", &portal, &query.fts).await;
                Ok(hits)
            }
            Err(crate::http::SearchRefused::Query(e)) => Err(e),
            Err(crate::http::SearchRefused::Failed) => Err("The archive could not be searched.".to_string()),
        });
    }
    let body = html! {
        form.filters role="search" method="get" action="/admin/archive" {
            div.field { label for="q" { "Words" } input id="q" name="q" type="search" value=(q) required; }
            div.field { label for="portal" { "Portal" } input id="portal" name="portal" value=(portal); }
            div.field { label for="person" { "Person" } input id="person" name="person" value=(person); }
            button type="submit" { "Search" }
        }
        @match &result {
            None => {}
            Some(Err(e)) => { (notice("error", e)) }
            Some(Ok(hits)) => {
                p role="status" { (hits.len()) " found" }
                ol.hits {
                    @for h in hits {
                        li {
                            p.meta { (when(h.message.at_ms)) " · " (h.message.portal) " · " (h.message.sender.name) " on " (h.message.network) }
                            p { (h.message.text) }
                        }
                    }
                }
            }
        }
    };
    let jobs = c.exports.list();
    let body = html! {
        (body)
        @if !caller.read_only {
            form.card method="post" action="/admin/archive/exports" {
                h2 { "Export" }
                (csrf(&caller))
                div.link-row {
                    div.field {
                        label for="format" { "Format" }
                        select id="format" name="format" {
                            option value="html" { "Printable page (HTML)" }
                            option value="pdf" { "PDF" }
                            option value="json" { "JSON" }
                            option value="mbox" { "Mail (mbox)" }
                            option value="slack" { "Slack export archive" }
                        }
                    }
                    div.field { label for="export-portal" { "Portal (empty: all)" } input id="export-portal" name="portal" value=(portal); }
                }
                div.link-row {
                    div.field { label for="export-since" { "Since" } input id="export-since" name="since" placeholder="2026-01-01 or 30d"; }
                    div.field { label for="export-until" { "Until" } input id="export-until" name="until"; }
                }
                button type="submit" { "Export" }
            }
        }
        @if !jobs.is_empty() {
            div.scroll {
                table #exports {
                    caption { "Exports made here" }
                    thead { tr { th scope="col" { "Started" } th scope="col" { "By" } th scope="col" { "Format" } th scope="col" { "State" } } }
                    tbody {
                        @for j in &jobs {
                            tr {
                                td { a href={ "/admin/archive/exports/" (j.id) } { (when(j.started_ms)) } }
                                td { (j.by) } td { (j.format.name()) } td { (j.doing) }
                            }
                        }
                    }
                }
            }
        }
    };
    page(StatusCode::OK, layout("Archive", Some(&caller), "archive", body))
}

async fn start_export(State(c): State<Console>, Change { caller, form }: Change) -> Response {
    let format = match serde_json::from_value::<crate::archive::export::Format>(Value::String(field(&form, "format").into())) {
        Ok(f) => f,
        Err(_) => {
            return page(StatusCode::UNPROCESSABLE_ENTITY, layout("Export", Some(&caller), "archive", notice("error", "Choose a format.")));
        }
    };
    let some = |name: &str| Some(field(&form, name).to_string()).filter(|s| !s.is_empty());
    let wanted = super::exports::Wanted {
        format,
        portals: some("portal").into_iter().collect(),
        person: None,
        since: some("since"),
        until: some("until"),
        tz: None,
    };
    let what = format!("{} of {}", format.name(), some("portal").unwrap_or_else(|| "every portal".into()));
    match c.exports.start(c.store.clone(), wanted, &caller.who) {
        Ok(job) => {
            c.audit(&caller, "archive.export", &job.id, &what).await;
            Redirect::to(&format!("/admin/archive/exports/{}", job.id)).into_response()
        }
        Err(e) => page(StatusCode::UNPROCESSABLE_ENTITY, layout("Export", Some(&caller), "archive", notice("error", &e.to_string()))),
    }
}

/// An export's progress; the page looks again every 2 s while it runs
/// (no script needed), and offers the file once done.
async fn export_page(State(c): State<Console>, Viewer(caller): Viewer, Path(id): Path<String>) -> Response {
    let Some(job) = c.exports.get(&id) else {
        return page(
            StatusCode::NOT_FOUND,
            layout("No such export", Some(&caller), "archive", notice("error", "There is no such export.")),
        );
    };
    let running = job.state == super::exports::State::Running;
    let body = html! {
        @if running { meta http-equiv="refresh" content="2"; }
        p { (job.format.name()) " export started " (when(job.started_ms)) " by " (job.by) }
        label for="progress" { (job.doing) ": " (job.done) " of " (job.total) " events" }
        progress id="progress" max=(job.total.max(1)) value=(if running { job.done } else { job.total.max(1) }) { (job.done) " of " (job.total) }
        @if let Some(e) = &job.error { (notice("error", e)) }
        @if job.state == super::exports::State::Done {
            p { a.button #download href={ "/admin/archive/exports/" (job.id) "/download" } download=(job.filename) { "Download " (job.filename) } }
        }
        p { a href="/admin/archive" { "Back to the archive" } }
    };
    page(StatusCode::OK, layout("Export", Some(&caller), "archive", body))
}

async fn download_export(State(c): State<Console>, Viewer(caller): Viewer, Path(id): Path<String>) -> Response {
    super::api::download(&c, &caller, &id).await
}

fn counts_text(s: &crate::broadcast::Summary) -> String {
    let c = &s.counts;
    format!("{} recipients: {} delivered, {} pending, {} failed, {} unreachable", c.total, c.delivered, c.pending, c.failed, c.unreachable)
}

/// The broadcast form and the latest broadcasts.
async fn broadcasts_page(c: &Console, caller: &Caller, form: &[(String, String)], message: Option<Markup>, status: StatusCode) -> Response {
    let latest = c.store.broadcasts(None, 50).await.unwrap_or_default();
    let to = if form.is_empty() { "all" } else { field(form, "to") };
    let body = html! {
        @if let Some(m) = message { (m) }
        @if !caller.read_only {
            form #broadcast method="post" action="/admin/broadcasts" {
                (csrf(caller))
                p {
                    label for="to" { "To" }
                    input #to name="to" value=(to) required aria-describedby="to-help";
                    small #to-help { "all, portals, portal:ID, people:ID,ID or group:NAME; several, separated by spaces" }
                }
                p { label for="text" { "Announcement" } textarea #text name="text" rows="4" required { (field(form, "text")) } }
                p { label for="from" { "From" } input #from name="from" value=(field(form, "from")) placeholder=(caller.who); }
                button type="submit" { "Send the broadcast" }
            }
        }
        div.scroll {
            table #broadcasts {
                caption { "The latest broadcasts" }
                thead { tr { th scope="col" { "Broadcast" } th scope="col" { "Asked" } th scope="col" { "By" } th scope="col" { "To" } th scope="col" { "State" } th scope="col" { "Recipients" } } }
                tbody {
                    @for s in &latest {
                        tr {
                            th scope="row" { a href={ "/admin/broadcasts/" (s.requested.id) } { (s.requested.id) } }
                            td { (when(s.requested.requested_ms)) }
                            td { (s.requested.requested_by) }
                            td { (s.requested.request.to.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")) }
                            td { (s.state()) }
                            td { (counts_text(s)) }
                        }
                    }
                }
            }
        }
    };
    page(status, layout("Broadcasts", Some(caller), "broadcasts", body))
}

async fn broadcasts(State(c): State<Console>, Viewer(caller): Viewer) -> Response {
    broadcasts_page(&c, &caller, &[], None, StatusCode::OK).await
}

async fn send_broadcast(State(c): State<Console>, Change { caller, form }: Change) -> Response {
    use super::broadcasts::{Asked, SendError, send};
    let to: Vec<String> = field(&form, "to").split_whitespace().map(str::to_string).collect();
    let from = Some(field(&form, "from")).filter(|f| !f.is_empty());
    let asked = Asked { to: &to, text: field(&form, "text"), html: None, attachments: Vec::new(), from };
    match send(&c, &caller, asked).await {
        Ok(s) if s.error.is_none() => Redirect::to(&format!("/admin/broadcasts/{}", s.requested.id)).into_response(),
        Ok(s) => {
            let why = format!("Not sent: {}.", s.error.unwrap_or_default());
            broadcasts_page(&c, &caller, &form, Some(notice("error", &why)), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(SendError::Invalid(e)) => {
            broadcasts_page(&c, &caller, &form, Some(notice("error", &e)), StatusCode::UNPROCESSABLE_ENTITY).await
        }
        Err(SendError::Store(_)) => {
            let why = "The store could not be written; nothing was sent.";
            broadcasts_page(&c, &caller, &form, Some(notice("error", why)), StatusCode::SERVICE_UNAVAILABLE).await
        }
    }
}

/// One broadcast and each recipient; the page looks again every 2 s while
/// deliveries are pending (no script needed).
async fn broadcast_page(State(c): State<Console>, Viewer(caller): Viewer, Path(id): Path<String>) -> Response {
    let Some(s) = c.store.broadcasts(Some(&id), 1).await.ok().and_then(|mut s| s.pop()) else {
        return page(
            StatusCode::NOT_FOUND,
            layout("No such broadcast", Some(&caller), "broadcasts", notice("error", "There is no such broadcast.")),
        );
    };
    let recipients = c.store.broadcast_recipients(&id).await.unwrap_or_default();
    let sending = matches!(s.state(), "sending" | "waiting");
    let body = html! {
        @if sending { meta http-equiv="refresh" content="2"; }
        p { "Asked " (when(s.requested.requested_ms)) " by " (s.requested.requested_by) ", to "
            (s.requested.request.to.iter().map(ToString::to_string).collect::<Vec<_>>().join(" ")) }
        blockquote { (s.requested.request.text.plain) }
        p #state role="status" { "State: " strong { (s.state()) } ". " (counts_text(&s)) }
        @if let Some(e) = &s.error { (notice("error", e)) }
        div.scroll {
            table #recipients {
                caption { "Recipients" }
                thead { tr { th scope="col" { "Person or room" } th scope="col" { "Bridge" } th scope="col" { "Account or room" } th scope="col" { "State" } th scope="col" { "Why" } } }
                tbody {
                    @for r in &recipients {
                        tr {
                            th scope="row" { (r.person.as_deref().unwrap_or("(room)")) }
                            td { (r.bridge.as_deref().unwrap_or("—")) }
                            td { (r.account.as_deref().or(r.room.as_deref()).unwrap_or("—")) }
                            td { (r.state.name()) }
                            td { (r.error.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
        p { a href="/admin/broadcasts" { "Back to the broadcasts" } }
    };
    page(StatusCode::OK, layout(&format!("Broadcast {id}"), Some(&caller), "broadcasts", body))
}
