//! The IT console's API through the real `causeway` binary: logins,
//! sessions, CSRF, read-only tokens, the limit on failed logins, portals
//! made, changed and removed at run time (and kept across a restart),
//! dead letters retried and dropped, broadcasts and their recipients, the
//! audit log; good and hostile input
//! on every route.
#![cfg(feature = "webhook")]

mod common;

use std::time::Duration;

use common::{Daemon, Hook, Mode, free_port, post};
use reqwest::StatusCode;
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

struct Tokens {
    ops: String,
    viewer: String,
}

/// Endpoints `a`…`d` of one webhook bridge; `a` and `b` in the configured
/// portal `ops`; `c` and `d` free for the console.
fn config(admin_port: u16, hooks: [&str; 4]) -> (String, Tokens) {
    let (ops, ops_hash) = causeway::admin::auth::new_token();
    let (viewer, viewer_hash) = causeway::admin::auth::new_token();
    let [a, b, c, d] = hooks;
    let config = format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 50ms, retry_max: 200ms, give_up_after: 1s }}
admin:
  listen: "127.0.0.1:{admin_port}"
  login_failures_per_minute: 3
  tokens:
    - {{ name: ops, sha256: "{ops_hash}" }}
    - {{ name: viewer, sha256: "{viewer_hash}", read_only: true }}
bridges:
  hooks:
    type: webhook
    endpoints:
      a: {{ inbound: {{ token: "token-a" }}, outbound: {{ url: "{a}" }} }}
      b: {{ inbound: {{ token: "token-b" }}, outbound: {{ url: "{b}" }} }}
      c: {{ inbound: {{ token: "token-c" }}, outbound: {{ url: "{c}" }} }}
      d: {{ inbound: {{ token: "token-d" }}, outbound: {{ url: "{d}" }} }}
portals:
  - id: ops
    links:
      - {{ bridge: hooks, room: a }}
      - {{ bridge: hooks, room: b }}
people:
  - {{ id: alice, name: Alice Liddell, accounts: {{ hooks: alice }} }}
"#
    );
    (config, Tokens { ops, viewer })
}

/// A console client: its session cookie and CSRF token once logged in.
struct Admin {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
    csrf: Option<String>,
}

impl Admin {
    fn new(port: u16) -> Admin {
        Admin { http: reqwest::Client::new(), base: format!("http://127.0.0.1:{port}/admin/api"), cookie: None, csrf: None }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn login(&mut self, token: &str) -> (StatusCode, Value) {
        let r = self.http.post(self.url("/login")).json(&json!({"token": token})).send().await.unwrap();
        let status = r.status();
        if let Some(c) = r.headers().get("set-cookie") {
            let c = c.to_str().unwrap();
            for attr in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
                assert!(c.contains(attr), "the session cookie is {attr}: {c}");
            }
            self.cookie = Some(c.split(';').next().unwrap().to_string());
        }
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if let Some(csrf) = body["csrf"].as_str() {
            self.csrf = Some(csrf.to_string());
        }
        (status, body)
    }

    fn with_session(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        match &self.csrf {
            Some(t) => req.header("x-csrf-token", t),
            None => req,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let r = self.with_session(req).send().await.unwrap();
        let status = r.status();
        let text = r.text().await.unwrap();
        (status, if text.is_empty() { Value::Null } else { serde_json::from_str(&text).unwrap_or(Value::String(text)) })
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path))).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).json(&body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(self.http.patch(self.url(path)).json(&body)).await
    }

    async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path))).await
    }
}

async fn say(d: &Daemon, endpoint: &str, text: &str) -> u16 {
    post(
        &reqwest::Client::new(),
        &d.url(&format!("/bridges/hooks/{endpoint}")),
        &format!("token-{endpoint}"),
        &json!({"sender": {"id": "alice"}, "text": text}),
    )
    .await
    .0
}

/// The dead letters of `room`, once there are `n`.
async fn dead_letters(admin: &Admin, room: &str, n: usize) -> Vec<Value> {
    let deadline = std::time::Instant::now() + T;
    loop {
        let (status, body) = admin.get(&format!("/outbox?state=dead&bridge=hooks&room={room}")).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rows = body["rows"].as_array().unwrap().clone();
        if rows.len() >= n {
            return rows;
        }
        assert!(std::time::Instant::now() < deadline, "no {n} dead letters of {room}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn the_console_api_lets_in_only_its_tokens_and_every_change_is_audited() {
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Fail(400)).await;
    let mut hook_c = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_d = Hook::start(Mode::Accept { own_ids: None }).await;
    let admin_port = free_port();
    let (config, tokens) = config(admin_port, [&hook_a.url(), &hook_b.url(), &hook_c.url(), &hook_d.url()]);
    let mut d = Daemon::start(&config).await;
    let mut admin = Admin::new(admin_port);
    let raw = reqwest::Client::new();

    // Nothing of the console is on the listener the networks reach.
    for path in ["/admin/api/openapi.json", "/admin/api/bridges", "/admin/api/login", "/admin/"] {
        assert_eq!(raw.get(d.url(path)).send().await.unwrap().status(), StatusCode::NOT_FOUND, "{path} on http.listen");
    }
    // The OpenAPI document is open; everything else wants a login.
    let (status, doc) = admin.get("/openapi.json").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(doc["openapi"], "3.1.0");
    for path in ["/bridges", "/portals", "/portals/ops", "/people", "/outbox", "/audit", "/archive/search?q=x", "/overview", "/session"] {
        let r = raw.get(admin.url(path)).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} without a login");
        assert!(r.headers().contains_key("www-authenticate"));
        let forged = format!("causeway_admin={}", "a".repeat(64));
        assert_eq!(raw.get(admin.url(path)).header("cookie", forged).send().await.unwrap().status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(admin.get("/no/such/route").await.0, StatusCode::NOT_FOUND);

    // Failed logins are limited per address (here 127.0.0.2 and .3, so the
    // rest of the test, from 127.0.0.1, is not held back): guessed logins
    // and guessed bearer tokens alike.
    let from = |ip: &str| reqwest::Client::builder().local_address(ip.parse::<std::net::IpAddr>().unwrap()).build().unwrap();
    let guesser = from("127.0.0.2");
    for _ in 0..3 {
        let r = guesser.post(admin.url("/login")).json(&json!({"token": "guess"})).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    let r = guesser.post(admin.url("/login")).json(&json!({"token": tokens.ops})).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS, "even the right token waits after too many failures");
    assert!(r.headers().contains_key("retry-after"));
    let bearer = from("127.0.0.3");
    for path in ["/bridges", "/portals", "/audit"] {
        let r = bearer.get(admin.url(path)).bearer_auth("cwa_forged").send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{path} with a forged token");
    }
    let r = bearer.get(admin.url("/bridges")).bearer_auth(&tokens.viewer).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(d.metric("causeway_admin_logins_total", r#"result="limited""#).await, 2.0);
    assert_eq!(d.metric("causeway_admin_logins_total", r#"result="failed""#).await, 6.0);

    // Hostile logins: not JSON, unknown fields, too large.
    for body in ["{", "[]", r#"{"token": 5}"#, r#"{"token": "x", "admin": true}"#] {
        let r = raw.post(admin.url("/login")).header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{body}");
    }
    let huge = json!({"token": "x".repeat(100_000)});
    assert_eq!(raw.post(admin.url("/login")).json(&huge).send().await.unwrap().status(), StatusCode::PAYLOAD_TOO_LARGE);

    // Log in: a session cookie and its CSRF token.
    let (status, who) = admin.login(&tokens.ops).await;
    assert_eq!(status, StatusCode::OK, "{who}");
    assert_eq!((who["who"].as_str(), who["read_only"].as_bool()), (Some("ops"), Some(false)));
    let (_, session) = admin.get("/session").await;
    assert_eq!(session["who"], "ops");

    // A change without the CSRF token, or with a forged one, is refused.
    let new = json!({"id": "sales", "links": [{"bridge": "hooks", "room": "c"}, {"bridge": "hooks", "room": "d"}]});
    let cookie = admin.cookie.clone().unwrap();
    let r = raw.post(admin.url("/portals")).header("cookie", &cookie).json(&new).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let r =
        raw.post(admin.url("/portals")).header("cookie", &cookie).header("x-csrf-token", "0".repeat(64)).json(&new).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "a forged CSRF token");
    // A read-only token sees but does not change.
    let r = raw.get(admin.url("/portals")).bearer_auth(&tokens.viewer).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = raw.post(admin.url("/portals")).bearer_auth(&tokens.viewer).json(&new).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "read-only");

    // Portals that cannot be: each mistake at its field.
    let cases = [
        (json!({"links": [{"bridge": "nope", "room": "c"}, {"bridge": "hooks", "room": "d"}]}), "links[0].bridge"),
        (json!({"links": [{"bridge": "hooks", "room": "zz"}, {"bridge": "hooks", "room": "d"}]}), "links[0].room"),
        (json!({"links": [{"bridge": "hooks", "room": "c"}]}), "links"),
        (json!({"links": [{"bridge": "hooks", "room": "c"}, {"bridge": "hooks", "room": "c"}]}), "links[1].room"),
        (json!({"links": [{"bridge": "hooks", "room": "a"}, {"bridge": "hooks", "room": "d"}]}), "links[0].room"),
        (json!({"id": "no spaces!", "links": [{"bridge": "hooks", "room": "c"}, {"bridge": "hooks", "room": "d"}]}), "id"),
    ];
    for (body, field) in cases {
        let (status, answer) = admin.post("/portals", body.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {answer}");
        assert!(answer["fields"].as_array().unwrap().iter().any(|f| f["field"] == field), "{body}: {answer}");
    }
    assert_eq!(admin.post("/portals", json!({"id": "ops", "links": new["links"]})).await.0, StatusCode::CONFLICT);
    assert_eq!(admin.post("/portals", json!({"links": "c,d"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(admin.post("/portals", json!({"links": [], "owner": "me"})).await.0, StatusCode::BAD_REQUEST);
    let r = admin
        .with_session(raw.post(admin.url("/portals")))
        .header("content-type", "application/json")
        .body("{\"links\": [")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);

    // A portal made at run time: messages cross at once.
    let (status, made) = admin.post("/portals", new.clone()).await;
    assert_eq!(status, StatusCode::CREATED, "{made}");
    assert_eq!(made["kind"], "console");
    assert_eq!(say(&d, "c", "hello sales").await, 202);
    assert_eq!(hook_d.next(T).await.json["text"], "hello sales");
    let (_, list) = admin.get("/portals").await;
    let kinds: Vec<(&str, &str)> =
        list["portals"].as_array().unwrap().iter().map(|p| (p["id"].as_str().unwrap(), p["kind"].as_str().unwrap())).collect();
    assert_eq!(kinds, [("ops", "configured"), ("sales", "console")]);
    // The hook has the message before Causeway has its answer: the link
    // shows the delivery once that answer came back.
    let deadline = std::time::Instant::now() + T;
    let link_d = loop {
        let (_, sales) = admin.get("/portals/sales").await;
        let link_d = sales["links"].as_array().unwrap().iter().find(|l| l["room"] == "d").unwrap().clone();
        if link_d["last_delivered_ms"].as_i64().is_some() && link_d["pending"] == 0 {
            break link_d;
        }
        assert!(std::time::Instant::now() < deadline, "the delivery is not shown on its link: {sales}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((link_d["connected"].as_bool(), link_d["receives"].as_bool()), (Some(true), Some(true)));
    assert!(link_d["joined"].is_null(), "a webhook endpoint has no room to sit in: {link_d}");
    assert_eq!(admin.get("/portals/nope").await.0, StatusCode::NOT_FOUND);

    // Configured portals change only with the config.
    assert_eq!(admin.patch("/portals/ops", json!({"remove": [{"bridge": "hooks", "room": "b"}]})).await.0, StatusCode::CONFLICT);
    assert_eq!(admin.delete("/portals/ops").await.0, StatusCode::CONFLICT);
    // A portal keeps two rooms at least; unknown rooms are not taken out.
    let (status, answer) = admin.patch("/portals/sales", json!({"remove": [{"bridge": "hooks", "room": "d"}]})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{answer}");
    let (status, answer) = admin.patch("/portals/sales", json!({"remove": [{"bridge": "hooks", "room": "a"}]})).await;
    assert_eq!((status, answer["fields"][0]["field"].as_str()), (StatusCode::UNPROCESSABLE_ENTITY, Some("remove[0].room")));
    assert_eq!(admin.patch("/portals/nope", json!({})).await.0, StatusCode::NOT_FOUND);

    // A dead letter: `b` refuses; it is listed, retried once `b` takes it.
    assert_eq!(say(&d, "a", "first for b").await, 202);
    let rows = dead_letters(&admin, "b", 1).await;
    let first = rows[0]["delivery_id"].as_str().unwrap().to_string();
    let (_, bridges) = admin.get("/bridges").await;
    let hooks = &bridges["bridges"][0];
    assert_eq!((hooks["name"].as_str(), hooks["dead"].as_u64()), (Some("hooks"), Some(1)), "{bridges}");
    assert!(hooks["last_error"]["message"].as_str().is_some_and(|m| m.contains("400")), "{bridges}");
    assert!(hooks["events_in"].as_u64().unwrap() >= 2);
    assert_eq!(admin.post("/outbox/nope/retry", json!({})).await.0, StatusCode::NOT_FOUND);
    hook_b.set_mode(Mode::Accept { own_ids: None });
    assert_eq!(admin.post(&format!("/outbox/{first}/retry"), json!({})).await.0, StatusCode::OK);
    let got = hook_b.next(T).await;
    assert_eq!((got.json["text"].as_str(), got.key.as_str()), (Some("first for b"), first.as_str()), "the same delivery id");

    // Another is dropped, with a reason; it stays in the archive.
    hook_b.set_mode(Mode::Fail(400));
    assert_eq!(say(&d, "a", "second for b").await, 202);
    let second = dead_letters(&admin, "b", 1).await[0]["delivery_id"].as_str().unwrap().to_string();
    assert_eq!(admin.post(&format!("/outbox/{second}/drop"), json!({})).await.0, StatusCode::BAD_REQUEST, "no reason");
    assert_eq!(admin.post(&format!("/outbox/{second}/drop"), json!({"reason": "  "})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        admin.post(&format!("/outbox/{second}/drop"), json!({"reason": "x".repeat(1001)})).await.0,
        StatusCode::UNPROCESSABLE_ENTITY
    );
    assert_eq!(admin.post(&format!("/outbox/{second}/drop"), json!({"reason": "b was retired"})).await.0, StatusCode::OK);
    assert_eq!(admin.post(&format!("/outbox/{second}/drop"), json!({"reason": "again"})).await.0, StatusCode::NOT_FOUND);
    assert!(admin.get("/outbox?state=dead").await.1["rows"].as_array().unwrap().is_empty());
    let (_, found) = admin.get("/archive/search?q=second&person=alice").await;
    assert_eq!(found["hits"].as_array().map(Vec::len), Some(1), "{found}");
    // An export made here, followed while it runs, downloaded once done.
    assert_eq!(admin.post("/archive/exports", json!({"format": "exe"})).await.0, StatusCode::BAD_REQUEST);
    assert_eq!(admin.post("/archive/exports", json!({"format": "json", "to": "/etc"})).await.0, StatusCode::BAD_REQUEST);
    let (status, job) = admin.post("/archive/exports", json!({"format": "json", "portals": ["ops"]})).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{job}");
    let id_export = job["id"].as_str().unwrap().to_string();
    let id = id_export.clone();
    let deadline = std::time::Instant::now() + T;
    let job = loop {
        let (_, job) = admin.get(&format!("/archive/exports/{id}")).await;
        if job["state"] != "running" {
            break job;
        }
        assert!(std::time::Instant::now() < deadline, "{job}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(job["state"], "done", "{job}");
    let r = admin.with_session(raw.get(admin.url(&format!("/archive/exports/{id}/download")))).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-disposition"].to_str().unwrap().starts_with("attachment; filename=\"causeway-"));
    let exported: Value = r.json().await.unwrap();
    let texts: Vec<&str> = exported["events"].as_array().unwrap().iter().filter_map(|e| e["current_text"].as_str()).collect();
    assert!(texts.contains(&"first for b") && texts.contains(&"second for b"), "{texts:?}");
    assert_eq!(admin.get("/archive/exports/nope").await.0, StatusCode::NOT_FOUND);
    assert_eq!(admin.get("/archive/exports/nope/download").await.0, StatusCode::NOT_FOUND);
    let (_, exports) = admin.get("/archive/exports").await;
    assert_eq!(exports["log"][0]["by"], "console:ops", "{exports}");
    assert_eq!(exports["jobs"][0]["id"], id.as_str());

    // Retry all matching, and what is not a match.
    assert_eq!(admin.post("/outbox/retry", json!({"bridge": "nope"})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(admin.post("/outbox/retry", json!({"room": "b"})).await.0, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(admin.post("/outbox/retry", json!({"bridge": "hooks"})).await.1["queued"], 0);
    for q in ["state=gone", "limit=-1", "after=x", "colour=red"] {
        assert_eq!(admin.get(&format!("/outbox?{q}")).await.0, StatusCode::BAD_REQUEST, "{q}");
    }
    assert_eq!(admin.get("/archive/search?q=").await.0, StatusCode::BAD_REQUEST);
    assert_eq!(admin.get("/audit?limit=x").await.0, StatusCode::BAD_REQUEST);

    // The people.
    let (_, people) = admin.get("/people").await;
    assert_eq!(people["people"][0]["id"], "alice");
    assert_eq!(people["people"][0]["accounts"]["hooks"], "alice");

    // The console's portal is kept across a restart.
    assert!(d.terminate().success());
    d.restart().await;
    assert_eq!(say(&d, "d", "after the restart").await, 202);
    assert_eq!(hook_c.next(T).await.json["text"], "after the restart");
    let (status, _) = admin.get("/portals/sales").await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "sessions end with the process");
    admin.login(&tokens.ops).await;
    assert_eq!(admin.get("/portals/sales").await.1["kind"], "console");

    // Removed: its rooms are linked no more, and it is gone after a restart.
    assert_eq!(admin.delete("/portals/sales").await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.delete("/portals/sales").await.0, StatusCode::NOT_FOUND);
    assert_eq!(say(&d, "c", "nobody hears").await, 404);
    assert!(hook_d.drain(Duration::from_millis(300)).await.is_empty());
    // The rooms are free again: a new portal may take them.
    let (status, again) = admin.post("/portals", json!({"links": new["links"]})).await;
    assert_eq!(status, StatusCode::CREATED, "{again}");
    let id = again["id"].as_str().unwrap().to_string();
    assert_eq!(say(&d, "c", "in a new portal").await, 202);
    assert_eq!(hook_d.next(T).await.json["text"], "in a new portal");

    // The audit log says who did what.
    let (_, audit) = admin.get("/audit").await;
    let said: Vec<(String, String, String)> = audit["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["who"].as_str().unwrap().into(), e["action"].as_str().unwrap().into(), e["target"].as_str().unwrap().into()))
        .collect();
    for want in [
        ("ops", "portal.create", "sales"),
        ("ops", "outbox.retry", first.as_str()),
        ("ops", "outbox.drop", second.as_str()),
        ("ops", "outbox.retry_all", "hooks"),
        ("ops", "archive.export", id_export.as_str()),
        ("ops", "archive.download", id_export.as_str()),
        ("ops", "portal.delete", "sales"),
        ("ops", "portal.create", id.as_str()),
        ("ops", "login", ""),
    ] {
        assert!(said.iter().any(|(w, a, t)| (w.as_str(), a.as_str(), t.as_str()) == want), "{want:?} not in {said:?}");
    }
    let dropped = audit["entries"].as_array().unwrap().iter().find(|e| e["action"] == "outbox.drop").unwrap();
    assert_eq!(dropped["detail"], "b was retired");
    assert!(!said.iter().any(|(w, ..)| w == "viewer"), "looking is not an action");
    let r = raw.get(admin.url("/audit?limit=2")).bearer_auth(&tokens.viewer).send().await.unwrap();
    let page: Value = r.json().await.unwrap();
    assert_eq!(page["entries"].as_array().unwrap().len(), 2);
    assert!(page["next_before"].as_i64().is_some());

    // Logged out: the cookie opens nothing.
    assert_eq!(admin.post("/logout", json!({})).await.0, StatusCode::NO_CONTENT);
    assert_eq!(admin.get("/session").await.0, StatusCode::UNAUTHORIZED);
    assert!(d.terminate().success(), "{}", d.log());
}

/// schemathesis (PyPI) against the OpenAPI document: examples, coverage,
/// fuzzing and stateful runs of every route with an admin token find no
/// server error and no answer its document does not describe (status,
/// content type, body, headers), and no route that ignores the token.
/// `CAUSEWAY_SCHEMATHESIS_SEED` and `CAUSEWAY_SCHEMATHESIS_EXAMPLES` change
/// the run (by default a fixed seed: the same cases every time).
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let hooks = [Hook::start(Mode::Accept { own_ids: None }).await, Hook::start(Mode::Fail(400)).await];
    let admin_port = free_port();
    let (config, tokens) = config(admin_port, [&hooks[0].url(), &hooks[1].url(), &hooks[0].url(), &hooks[0].url()]);
    // Its cases with wrong tokens would otherwise hold back the rest.
    let mut d = Daemon::start(&config.replace("login_failures_per_minute: 3", "login_failures_per_minute: 1000000")).await;
    // A dead letter and something in the archive, for the routes to find.
    assert_eq!(say(&d, "a", "for the schema run").await, 202);
    let mut admin = Admin::new(admin_port);
    admin.login(&tokens.ops).await;
    dead_letters(&admin, "b", 1).await;
    let python = String::from_utf8(
        std::process::Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/python.sh"))
            .arg("path")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let schemathesis = std::path::Path::new(python.trim()).with_file_name("schemathesis");
    let seed = std::env::var("CAUSEWAY_SCHEMATHESIS_SEED").unwrap_or_else(|_| "20261204".into());
    let examples = std::env::var("CAUSEWAY_SCHEMATHESIS_EXAMPLES").unwrap_or_else(|_| "40".into());
    let out = tokio::process::Command::new(&schemathesis)
        .arg("run")
        .arg(format!("http://127.0.0.1:{admin_port}/admin/api/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {}", tokens.ops)])
        .args(["--checks", "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance,ignored_auth"])
        .args(["--max-examples", &examples, "--seed", &seed, "--workers", "1"])
        .current_dir(d.dir.path())
        .env("NO_COLOR", "1")
        .output()
        .await
        .expect("schemathesis (bash tests/peers/python.sh install)");
    let report = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "schemathesis found answers the document does not allow:\n{report}\n--- causeway ---\n{}", d.log());
    assert!(report.contains("passed") && !report.contains(" failed"), "{report}");
    assert!(!d.log().contains("panicked"), "{}", d.log());
    assert!(d.terminate().success(), "{}", d.log());
}

/// `kill -HUP` with a portal and a person added to the config: the new
/// portal carries messages, the person is known, and a stream through the
/// old portal loses and doubles nothing while it happens. A config that
/// does not check is refused, by SIGHUP and by the API, with the errors
/// `causeway check` gives, and the running one stays.
#[tokio::test]
async fn a_reload_adds_a_portal_and_a_person_and_the_old_portal_loses_nothing() {
    let hooks = [
        Hook::start(Mode::Accept { own_ids: None }).await,
        Hook::start(Mode::Accept { own_ids: None }).await,
        Hook::start(Mode::Accept { own_ids: None }).await,
        Hook::start(Mode::Accept { own_ids: None }).await,
    ];
    let [hook_a, mut hook_b, mut hook_c, mut hook_d] = hooks;
    let admin_port = free_port();
    let (config, tokens) = config(admin_port, [&hook_a.url(), &hook_b.url(), &hook_c.url(), &hook_d.url()]);
    let mut d = Daemon::start(&config).await;
    let mut admin = Admin::new(admin_port);
    admin.login(&tokens.ops).await;
    assert_eq!(say(&d, "c", "before").await, 404, "c is in no portal yet");

    // A stream through the old portal, while the config is read again.
    let stream = {
        let url = d.url("/bridges/hooks/a");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for n in 0..200 {
                let (status, _) = post(&http, &url, "token-a", &json!({"sender": {"id": "alice"}, "text": format!("n{n}")})).await;
                assert_eq!(status, 202);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let grown = config.replace(
        "people:\n",
        "  - id: partners\n    links:\n      - { bridge: hooks, room: c }\n      - { bridge: hooks, room: d }\npeople:\n  - { id: carol, name: Carol Danvers, accounts: { hooks: carol } }\n",
    );
    let path = d.config_path();
    let before = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, before.replace(&config[config.find("portals:").unwrap()..], &grown[grown.find("portals:").unwrap()..])).unwrap();
    let hup = std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    stream.await.unwrap();
    let mut got = Vec::new();
    while got.len() < 200 {
        got.push(hook_b.next(T).await.json["text"].as_str().unwrap().to_string());
    }
    let want: Vec<String> = (0..200).map(|n| format!("n{n}")).collect();
    assert_eq!(got, want, "every message of the old portal, once, in order");
    assert!(hook_b.drain(Duration::from_millis(300)).await.is_empty(), "nothing twice");

    // The new portal and the new person.
    let deadline = std::time::Instant::now() + T;
    while !d.log().contains("config reloaded") {
        assert!(std::time::Instant::now() < deadline, "no reload:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let carol = json!({"sender": {"id": "carol"}, "text": "hello partners"});
    assert_eq!(post(&reqwest::Client::new(), &d.url("/bridges/hooks/c"), "token-c", &carol).await.0, 202);
    let m = hook_d.next(T).await;
    assert_eq!((m.json["text"].as_str(), m.json["sender"]["name"].as_str()), (Some("hello partners"), Some("Carol Danvers")));
    let (_, portals) = admin.get("/portals/partners").await;
    assert_eq!(portals["kind"], "configured");

    // A config that does not check: refused, the running one stays.
    let good = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, good.replace("room: d }", "room: nowhere }")).unwrap();
    let check = d.cli(&["check"]);
    assert!(!check.status.success());
    let checked = String::from_utf8_lossy(&check.stderr).to_string();
    let (status, refused) = admin.post("/reload", json!({})).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
    assert!(!refused["fields"].as_array().unwrap().is_empty(), "{refused}");
    for f in refused["fields"].as_array().unwrap() {
        let line = format!("{}: {}", f["field"].as_str().unwrap(), f["message"].as_str().unwrap());
        assert!(checked.contains(&line), "{line:?} is what causeway check says:\n{checked}");
    }
    std::process::Command::new("kill").args(["-HUP", &d.pid().to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(d.log().contains("the new config does not check; the running one stays"), "{}", d.log());
    assert_eq!(say(&d, "c", "still linked").await, 202);
    assert_eq!(hook_d.next(T).await.json["text"], "still linked");

    // Taken out again by the API's reload: its rooms are linked no more.
    std::fs::write(&path, &before).unwrap();
    let (status, done) = admin.post("/reload", json!({})).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["portals_removed"], json!(["partners"]));
    assert_eq!(say(&d, "c", "gone").await, 404);
    assert!(hook_c.drain(Duration::from_millis(200)).await.is_empty());
    let (_, audit) = admin.get("/audit").await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "config.reload"));
    drop(hook_a);
    assert!(d.terminate().success(), "{}", d.log());
}

/// A broadcast sent through the API: refused for a read-only token and for
/// what names nobody; otherwise 202, each recipient followed to its end
/// (`delivered`, `failed` where the room refuses it, `unreachable` for a
/// person with no network that takes broadcasts), each once, and audited.
#[tokio::test]
async fn a_broadcast_through_the_api_reports_each_recipient() {
    let mut room_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let room_b = Hook::start(Mode::Fail(400)).await;
    let mut direct = Hook::start(Mode::Accept { own_ids: None }).await;
    let admin_port = free_port();
    let (ops, ops_hash) = causeway::admin::auth::new_token();
    let (viewer, viewer_hash) = causeway::admin::auth::new_token();
    let config = format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 50ms, retry_max: 200ms, give_up_after: 1s }}
admin:
  listen: "127.0.0.1:{admin_port}"
  tokens:
    - {{ name: ops, sha256: "{ops_hash}" }}
    - {{ name: viewer, sha256: "{viewer_hash}", read_only: true }}
bridges:
  hooks:
    type: webhook
    endpoints:
      a: {{ inbound: {{ token: "token-a" }}, outbound: {{ url: "{a}" }} }}
      b: {{ inbound: {{ token: "token-b" }}, outbound: {{ url: "{b}" }} }}
      dm: {{ direct: true, inbound: {{ token: "token-dm" }}, outbound: {{ url: "{dm}" }} }}
portals:
  - id: ops
    links: [{{ bridge: hooks, room: a }}, {{ bridge: hooks, room: b }}]
people:
  - {{ id: alice, name: Alice Liddell, accounts: {{ hooks: alice }} }}
  - {{ id: bob, name: Bob Ross, accounts: {{ hooks: bob }}, groups: [staff] }}
  - {{ id: carol, name: Carol Ann, groups: [staff] }}
"#,
        a = room_a.url(),
        b = room_b.url(),
        dm = direct.url()
    );
    let _d = Daemon::start(&config).await;
    let mut viewing = Admin::new(admin_port);
    assert_eq!(viewing.login(&viewer).await.0, StatusCode::OK);
    let mut admin = Admin::new(admin_port);
    assert_eq!(admin.login(&ops).await.0, StatusCode::OK);

    let body = json!({"to": ["all", "portal:ops"], "text": "Fire drill at 15:00", "from": "Facilities"});
    assert_eq!(viewing.post("/broadcasts", body.clone()).await.0, StatusCode::FORBIDDEN);
    for (bad, why) in [
        (json!({"to": ["group:nobody"], "text": "x"}), "nobody is in group"),
        (json!({"to": ["portal:nope"], "text": "x"}), "no portal"),
        (json!({"to": ["everyone"], "text": "x"}), "not a target"),
        (json!({"to": ["all"], "text": "  "}), "no text"),
        (json!({"to": [], "text": "x"}), "whom"),
        (json!({"to": ["all"], "text": "x", "attachments": [{"url": "file:///etc/passwd"}]}), "http(s)"),
    ] {
        let (status, answer) = admin.post("/broadcasts", bad.clone()).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{bad}: {answer}");
        assert!(answer.to_string().contains(why), "{bad}: {answer}");
    }

    let (status, sent) = admin.post("/broadcasts", body).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{sent}");
    let id = sent["broadcast"]["id"].as_str().unwrap().to_string();
    assert_eq!(sent["broadcast"]["counts"]["total"], 5, "{sent}");
    let deadline = std::time::Instant::now() + T;
    let shown = loop {
        let (status, shown) = admin.get(&format!("/broadcasts/{id}")).await;
        assert_eq!(status, StatusCode::OK, "{shown}");
        if shown["state"] == "done" {
            break shown;
        }
        assert!(std::time::Instant::now() < deadline, "not done: {shown}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let mut states: Vec<(String, String)> = shown["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let whom = r["person"].as_str().or(r["room"].as_str()).unwrap().to_string();
            (whom, r["state"].as_str().unwrap().to_string())
        })
        .collect();
    states.sort();
    let want = [("a", "delivered"), ("alice", "delivered"), ("b", "failed"), ("bob", "delivered"), ("carol", "unreachable")];
    assert_eq!(states, want.map(|(w, s)| (w.to_string(), s.to_string())), "{shown}");
    let counts = &shown["broadcast"]["counts"];
    assert_eq!((counts["delivered"].as_u64(), counts["failed"].as_u64(), counts["unreachable"].as_u64()), (Some(3), Some(1), Some(1)));

    // Each once: a notice in room a, a direct message to alice and to bob.
    let in_a = room_a.drain(Duration::from_secs(1)).await;
    assert_eq!(in_a.len(), 1, "{in_a:?}");
    assert!(in_a[0].json["text"].as_str().unwrap().contains("Fire drill"), "{:?}", in_a[0].json);
    let mut to: Vec<String> =
        direct.drain(Duration::from_secs(1)).await.iter().map(|r| r.json["direct"]["to"].as_str().unwrap_or("?").to_string()).collect();
    to.sort();
    assert_eq!(to, ["alice", "bob"]);

    let (_, list) = admin.get("/broadcasts").await;
    // Those refused when planned (nobody in the group, no such portal) are
    // listed with why; those not understood were never kept.
    assert_eq!(list["broadcasts"].as_array().unwrap().len(), 1 + 2, "{list}");
    let (_, audit) = admin.get("/audit").await;
    assert!(audit["entries"].as_array().unwrap().iter().any(|e| e["action"] == "broadcast.send" && e["target"] == id.as_str()), "{audit}");
    assert_eq!(admin.get("/broadcasts/b-nope").await.0, StatusCode::NOT_FOUND);
}
