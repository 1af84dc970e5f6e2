//! End to end through the real `causeway` binary: webhook ↔ router ↔ webhook.
#![cfg(feature = "webhook")]

mod common;

use std::time::Duration;

use causeway_core::conformance;
use causeway_webhook::sign;
use common::{Daemon, Hook, Mode, WebhookPeer, archive_len, post};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);

/// Portal `ops`: endpoint `a` (HMAC-signed inbound, native outbound to
/// `hook_a`) and endpoint `b` (token inbound, signed native outbound to `hook_b`).
fn two_links(hook_a: &str, hook_b: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 50ms, retry_max: 300ms }}
bridges:
  hooks:
    type: webhook
    max_body_bytes: 4096
    endpoints:
      a:
        inbound: {{ hmac_secret: "secret-a", token: "token-a" }}
        outbound: {{ url: "{hook_a}" }}
        events: {{ token: "events-token" }}
      b:
        inbound: {{ token: "token-b" }}
        outbound: {{ url: "{hook_b}", hmac_secret: "secret-out-b" }}
      c:
        inbound: {{ format: slack, token: "token-c" }}
portals:
  - id: ops
    links:
      - {{ bridge: hooks, room: a }}
      - {{ bridge: hooks, room: b }}
      - {{ bridge: hooks, room: c }}
people:
  - id: alice
    name: Alice Liddell
    accounts: {{ hooks: alice }}
"#
    )
}

async fn post_signed(d: &Daemon, endpoint: &str, secret: &[u8], body: &Value) -> (u16, Value) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    post_signed_at(d, endpoint, secret, body, now, None).await
}

/// POST `body` signed as made at `ts` (Unix seconds), with an `Idempotency-Key` if given.
async fn post_signed_at(d: &Daemon, endpoint: &str, secret: &[u8], body: &Value, ts: i64, key: Option<&str>) -> (u16, Value) {
    let raw = serde_json::to_vec(body).unwrap();
    let mut req = reqwest::Client::new()
        .post(d.url(&format!("/bridges/hooks/{endpoint}")))
        .header("content-type", "application/json")
        .header("x-causeway-timestamp", ts.to_string())
        .header("x-causeway-signature", sign::sign_at(secret, ts, &raw));
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let r = req.body(raw).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn signed_message_and_replies_cross_with_translated_references() {
    let mut hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Accept { own_ids: Some("B-".into()) }).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;

    // A signed message on `a` reaches `b`, from the directory's person.
    let msg = json!({"id": "a-1", "sender": {"id": "alice", "name": "al"}, "text": "deploy done", "html": "<b>deploy</b> done<script>x</script>"});
    let (status, answer) = post_signed(&d, "a", b"secret-a", &msg).await;
    assert_eq!(status, 202, "{answer}");
    let got = hook_b.next(T).await;
    assert_eq!(got.json["text"], "deploy done");
    assert_eq!(got.json["html"], "<b>deploy</b> done");
    assert_eq!(got.json["sender"]["name"], "Alice Liddell");
    assert_eq!(got.json["sender"]["person"], "alice");
    assert_eq!(got.json["id"], got.key.as_str());
    assert_eq!(got.json["event_id"], answer["event_id"]);
    let sig = got.headers["x-causeway-signature"].to_str().unwrap();
    let ts: i64 = got.headers["x-causeway-timestamp"].to_str().unwrap().parse().unwrap();
    assert!(sign::verify_at(b"secret-out-b", ts, &got.body, sig), "outbound signature does not verify");
    assert_eq!(got.id, "B-1");

    // A reply from `a` points, on `b`, at the id `b` gave the original.
    let reply = json!({"id": "a-2", "sender": {"id": "alice"}, "text": "and verified", "reply_to": "a-1"});
    assert_eq!(post_signed(&d, "a", b"secret-a", &reply).await.0, 202);
    let got = hook_b.next(T).await;
    assert_eq!(got.json["reply_to"], "B-1");

    // A reply from `b` (in b's ids) points, on `a`, at a's own id; `a`
    // receives neither of its own messages back.
    let client = reqwest::Client::new();
    let back = json!({"id": "b-9", "sender": {"id": "bob", "name": "Bob"}, "text": "thanks", "reply_to": "B-1"});
    let (status, _) = post(&client, &d.url("/bridges/hooks/b"), "token-b", &back).await;
    assert_eq!(status, 202);
    let got = hook_a.next(T).await;
    assert_eq!((got.json["text"].as_str(), got.json["reply_to"].as_str()), (Some("thanks"), Some("a-1")));
    assert_eq!(got.json["sender"]["name"], "Bob");

    // The same event again (a retrying sender) is a duplicate, not a second delivery.
    let (status, answer) = post_signed(&d, "a", b"secret-a", &msg).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")));

    // Slack-compatible inbound on `c`.
    let (status, _) = post(&client, &d.url("/bridges/hooks/c"), "token-c", &json!({"text": "from slack", "username": "CI"})).await;
    assert_eq!(status, 202);
    let got = hook_b.next(T).await;
    assert_eq!((got.json["text"].as_str(), got.json["sender"]["name"].as_str()), (Some("from slack"), Some("CI")));
    assert_eq!(hook_a.next(T).await.json["text"], "from slack");

    // A bad signature or token: 401, nothing stored, nothing delivered.
    let stored = archive_len(&d, "ops").await;
    let evil = json!({"id": "evil", "sender": {"id": "mallory"}, "text": "pwned"});
    assert_eq!(post_signed(&d, "a", b"wrong-secret", &evil).await.0, 401);
    assert_eq!(post(&client, &d.url("/bridges/hooks/a"), "token-b", &evil).await.0, 401);
    // `a` signs: its own token alone is not enough.
    assert_eq!(post(&client, &d.url("/bridges/hooks/a"), "token-a", &evil).await.0, 401);
    assert_eq!(post(&client, &d.url("/bridges/hooks/b"), "", &evil).await.0, 401);
    let r = client.post(d.url("/bridges/hooks/b")).header("content-type", "application/json").body(evil.to_string()).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "unauthorized");
    assert!(hook_b.drain(Duration::from_millis(500)).await.is_empty());
    assert!(hook_a.drain(Duration::from_millis(10)).await.is_empty());
    assert_eq!(archive_len(&d, "ops").await, stored);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="unauthorized""#).await, 5.0);
    assert_eq!(d.metric("causeway_events_received_total", r#"bridge="hooks""#).await, 4.0);
    assert_eq!(d.metric("causeway_events_delivered_total", r#"bridge="hooks""#).await, 5.0);
}

#[tokio::test]
async fn an_echoed_delivery_is_not_delivered_again() {
    let mut hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    // `b` posts every delivery straight back into Causeway: once with the
    // payload as is, once with only the Idempotency-Key header to go by.
    for keep_id in [true, false] {
        hook_b.set_mode(Mode::Echo { url: d.url("/bridges/hooks/b"), token: "token-b".into(), keep_id });
        let text = format!("loop test keep_id={keep_id}");
        let msg = json!({"sender": {"id": "alice"}, "text": text});
        assert_eq!(post_signed(&d, "a", b"secret-a", &msg).await.0, 202);
        let got = hook_b.next(T).await;
        assert_eq!(got.json["text"], text.as_str());
        assert_eq!(got.headers["x-echo-status"], "200");
        assert_eq!(got.headers["x-echo-answer"].to_str().unwrap(), r#"{"reason":"echo","status":"ignored"}"#);
        // Nothing comes back to `a`, and `b` gets nothing more.
        assert!(hook_a.drain(Duration::from_millis(700)).await.is_empty());
        assert!(hook_b.drain(Duration::from_millis(10)).await.is_empty());
    }
    assert_eq!(d.metric("causeway_events_dropped_total", r#"bridge="hooks",reason="loop""#).await, 2.0);
    // Also after a restart (the map is durable, not a memory).
    assert!(d.terminate().success(), "unclean exit on SIGTERM:\n{}", d.log());
    d.restart().await;
    hook_b.set_mode(Mode::Accept { own_ids: None });
    let first = {
        let msg = json!({"sender": {"id": "alice"}, "text": "after restart"});
        post_signed(&d, "a", b"secret-a", &msg).await;
        hook_b.next(T).await
    };
    let (status, answer) = post(&reqwest::Client::new(), &d.url("/bridges/hooks/b"), "token-b", &first.json).await;
    assert_eq!((status, answer["reason"].as_str()), (200, Some("echo")));
    assert!(hook_a.drain(Duration::from_millis(700)).await.is_empty());
}

#[tokio::test]
async fn hostile_requests_get_clear_errors_and_store_nothing() {
    let mut hook_b = Hook::start(Mode::Accept { own_ids: None }).await;
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    let client = reqwest::Client::new();
    let url = d.url("/bridges/hooks/b");
    let send = |body: Vec<u8>, ctype: &'static str| {
        let (client, url) = (client.clone(), url.clone());
        async move {
            let r = client.post(url).bearer_auth("token-b").header("content-type", ctype).body(body).send().await.unwrap();
            let status = r.status().as_u16();
            let body: Value = r.json().await.unwrap_or(Value::Null);
            (status, body)
        }
    };
    let json_ct = "application/json";
    let cases: Vec<(Vec<u8>, &str, u16, &str)> = vec![
        (b"{not json".to_vec(), json_ct, 400, "malformed"),
        (b"\xff\xfe\xfd".to_vec(), json_ct, 400, "malformed"),
        (b"[1,2,3]".to_vec(), json_ct, 400, "malformed"),
        (br#"{"sender":{"id":"x"},"text":5}"#.to_vec(), json_ct, 400, "malformed"),
        (br#"{"sender":{"id":"x"}}"#.to_vec(), json_ct, 422, "invalid"),
        (br#"{"sender":{"id":"x"},"type":"reaction","target":"nope","key":"+1"}"#.to_vec(), json_ct, 200, ""),
        (br#"{"sender":{"id":"x"},"text":"hi"}"#.to_vec(), "text/plain", 415, "unsupported_media_type"),
        (br#"{"sender":{"id":"x"},"text":"hi"}"#.to_vec(), "application/x-www-form-urlencoded", 415, "unsupported_media_type"),
        (vec![b' '; 5000], json_ct, 413, "too_large"),
        (format!(r#"{{"sender":{{"id":"x"}},"text":"{}"}}"#, "a".repeat(10_000)).into_bytes(), json_ct, 413, "too_large"),
    ];
    for (body, ctype, want_status, want_error) in cases {
        let shown = String::from_utf8_lossy(&body[..body.len().min(40)]).to_string();
        let (status, answer) = send(body, ctype).await;
        assert_eq!(status, want_status, "{shown:?} as {ctype}: {answer}");
        if want_error.is_empty() {
            assert_eq!(answer["status"], "ignored", "{shown:?}");
        } else {
            assert_eq!(answer["error"], want_error, "{shown:?}: {answer}");
            assert!(answer["message"].as_str().is_some_and(|m| !m.is_empty()), "{shown:?}: no message");
        }
    }
    let r = client.post(d.url("/bridges/hooks/nope")).bearer_auth("x").json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let r = client.post(d.url("/bridges/nope/a")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // Still healthy, nothing stored or delivered.
    assert_eq!(client.get(d.url("/healthz")).send().await.unwrap().status(), 200);
    assert_eq!(archive_len(&d, "ops").await, 0);
    assert!(hook_b.drain(Duration::from_millis(300)).await.is_empty());
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="too_large""#).await, 2.0);
    assert_eq!(d.metric("causeway_events_dropped_total", r#"bridge="hooks",reason="unknown_target""#).await, 1.0);
}

#[tokio::test]
async fn config_mistakes_are_named_by_causeway_check() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        r#"
http: { listen: "127.0.0.1:99999" }
bridges:
  hooks:
    type: webhook
    endpoints:
      a: { inbound: {} }
      b: { outbound: { url: "ftp://x" } }
  mx: { type: matrix }
portals:
  - id: ops
    links: [{ bridge: hooks, room: zz }, { bridge: nope, room: a }]
"#,
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_causeway")).args(["check", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("http.listen: invalid socket address"), "{err}");
    std::fs::write(&path, std::fs::read_to_string(&path).unwrap().replace("99999", "8080")).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_causeway")).args(["check", "--config"]).arg(&path).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for want in [
        "bridges.hooks.endpoints.a.inbound: give `token` or `hmac_secret`",
        "bridges.hooks.endpoints.b.outbound.url: scheme \"ftp\" is not http or https",
        "bridges.mx: missing field `homeserver`",
        "portals[0].links[1].bridge: no bridge named \"nope\"",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_causeway")).args(["check", "--config", "config.example.yaml"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn a_refused_delivery_becomes_a_dead_letter_that_the_cli_can_retry() {
    let mut hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Fail(400)).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    let msg = json!({"sender": {"id": "alice"}, "text": "refused"});
    assert_eq!(post_signed(&d, "a", b"secret-a", &msg).await.0, 202);
    let deadline = std::time::Instant::now() + T;
    while d.metric("causeway_dead_letters_total", r#"bridge="hooks""#).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "no dead letter:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(d.metric("causeway_dead_letter_depth", r#"bridge="hooks""#).await, 1.0);
    assert_eq!(d.metric("causeway_delivery_failures_total", r#"bridge="hooks",reason="permanent""#).await, 1.0);
    // The room the message came from is told, and nobody else.
    let notice = hook_a.next(T).await;
    let said = notice.json["text"].as_str().unwrap_or_default();
    assert!(said.starts_with("Not delivered to b (hooks): \"refused\"") && said.contains("400"), "{}", notice.json);
    assert_eq!(notice.json["message_kind"], "notice", "{}", notice.json);
    let out = d.cli(&["outbox", "--json", "dead"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let dead: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(dead.as_array().unwrap().len(), 1, "{dead}");
    assert!(dead[0]["last_error"].as_str().unwrap().contains("400"), "{dead}");
    let id = dead[0]["delivery_id"].as_str().unwrap().to_string();
    let table = String::from_utf8(d.cli(&["outbox"]).stdout).unwrap();
    assert!(table.lines().any(|l| l.starts_with("hooks") && l.trim_end().ends_with('1')), "{table}");

    // Fixed receiver, operator retries: delivered with the same key.
    hook_b.set_mode(Mode::Accept { own_ids: None });
    let out = d.cli(&["outbox", "retry", &id]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got = hook_b.next(T).await;
    assert_eq!((got.key.as_str(), got.json["text"].as_str()), (id.as_str(), Some("refused")));
    assert_eq!(d.cli(&["outbox", "retry", &id]).status.code(), Some(1));
    // The gauges follow what another process changed.
    let deadline = std::time::Instant::now() + T;
    while d.metric("causeway_dead_letter_depth", r#"bridge="hooks""#).await != 0.0
        || d.metric("causeway_outbox_depth", r#"bridge="hooks""#).await != 0.0
    {
        assert!(std::time::Instant::now() < deadline, "depth gauges did not settle at 0");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(hook_a.drain(Duration::from_millis(100)).await.is_empty());
}

/// A signed request cannot be replayed: the same signed body again under a
/// fresh `Idempotency-Key` (or none) is refused, and so is a body signed
/// longer ago than the tolerance; the same one under its own key again is
/// a plain duplicate.
#[tokio::test]
async fn a_signed_request_cannot_be_replayed() {
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
    let pay = json!({"sender": {"id": "alice"}, "text": "pay 100 to mallory"});
    assert_eq!(post_signed_at(&d, "a", b"secret-a", &pay, now, Some("k1")).await.0, 202);
    let (status, answer) = post_signed_at(&d, "a", b"secret-a", &pay, now, Some("k2")).await;
    assert_eq!((status, answer["error"].as_str()), (409, Some("replayed")), "{answer}");
    assert_eq!(post_signed_at(&d, "a", b"secret-a", &pay, now, None).await.0, 409);
    let (status, answer) = post_signed_at(&d, "a", b"secret-a", &pay, now, Some("k1")).await;
    assert_eq!((status, answer["status"].as_str()), (200, Some("duplicate")), "{answer}");
    // Signed ten minutes ago (the tolerance is five), or ten minutes ahead.
    for ts in [now - 600, now + 600] {
        let (status, answer) =
            post_signed_at(&d, "a", b"secret-a", &json!({"sender": {"id": "alice"}, "text": "old"}), ts, Some("k3")).await;
        assert_eq!((status, answer["error"].as_str()), (401, Some("stale_signature")), "{answer}");
    }
    let got = hook_b.next(T).await;
    assert_eq!(got.json["text"], "pay 100 to mallory");
    assert!(hook_b.drain(Duration::from_millis(500)).await.is_empty(), "a replay was delivered");
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="replayed""#).await, 2.0);
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="stale_signature""#).await, 2.0);
}

/// A text larger than a receiver takes arrives in numbered parts: cut to
/// `max_text_bytes` where it is set (and by default for the Slack format),
/// and smaller each time a receiver answers 413. Never a dead letter.
#[tokio::test]
async fn an_oversized_text_arrives_in_parts_whatever_the_receiver_takes() {
    let mut limited = Hook::start(Mode::Limit(8 * 1024)).await;
    let mut slack = Hook::start(Mode::Accept { own_ids: None }).await;
    let config = format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 50ms, retry_max: 300ms }}
bridges:
  hooks:
    type: webhook
    max_body_bytes: 200000
    endpoints:
      a: {{ inbound: {{ token: "token-a" }} }}
      b: {{ outbound: {{ url: "{}" }} }}
      c: {{ outbound: {{ url: "{}", format: slack, max_text_bytes: 3000 }} }}
portals:
  - id: ops
    links: [{{ bridge: hooks, room: a }}, {{ bridge: hooks, room: b }}, {{ bridge: hooks, room: c }}]
"#,
        limited.url(),
        slack.url()
    );
    let d = Daemon::start(&config).await;
    let text: String = (0..2000).map(|i| format!("line {i} of a long log\n")).collect();
    let (status, _) = post(
        &reqwest::Client::new(),
        &d.url("/bridges/hooks/a"),
        "token-a",
        &json!({"sender": {"id": "w", "name": "Logger"}, "text": text}),
    )
    .await;
    assert_eq!(status, 202);
    let whole = |parts: &[common::Received], field: &str| -> (String, usize) {
        let mut joined = String::new();
        for (i, p) in parts.iter().enumerate() {
            let t = p.json[field].as_str().unwrap_or_default();
            let prefix = format!("({}/{}) ", i + 1, parts.len());
            assert!(t.starts_with(&prefix), "part {i}: {:?}", &t[..t.len().min(40)]);
            joined.push_str(t[prefix.len()..].trim_end());
            joined.push('\n');
        }
        (joined, parts.len())
    };
    let mut got_b = Vec::new();
    while got_b.last().is_none_or(|r: &common::Received| {
        let t = r.json["text"].as_str().unwrap_or_default();
        !t.contains("line 1999 ")
    }) {
        got_b.push(limited.next(T).await);
    }
    assert!(got_b.iter().all(|r| r.body.len() <= 8 * 1024), "a part over the receiver's limit was taken");
    let (joined, n) = whole(&got_b, "text");
    assert_eq!(joined, text, "the parts do not make the text");
    assert!(n >= 6, "{n} parts for {} bytes under 8 KiB", text.len());
    let keys: std::collections::HashSet<&str> = got_b.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys.len(), n, "parts share a key");

    let mut got_c = Vec::new();
    while got_c.last().is_none_or(|r: &common::Received| !r.json["text"].as_str().unwrap_or_default().contains("line 1999 ")) {
        got_c.push(slack.next(T).await);
    }
    assert!(got_c.iter().all(|r| r.json["text"].as_str().unwrap().len() <= 3000 + 64), "a Slack part over max_text_bytes");
    let (joined, _) = whole(&got_c, "text");
    assert_eq!(joined, text);
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="hooks""#).await, 0.0, "{}", d.log());
}

/// What any Causeway posts carries its mark; a post with the mark (another
/// Causeway delivering here) is never relayed again. Our own deliveries
/// carry it too.
#[tokio::test]
async fn a_post_marked_by_a_causeway_is_not_relayed_again() {
    let mut hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    let client = reqwest::Client::new();
    let msg = json!({"sender": {"id": "bob"}, "text": "relayed elsewhere"});
    let r =
        client.post(d.url("/bridges/hooks/b")).bearer_auth("token-b").header("x-causeway-relayed", "1").json(&msg).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.json::<Value>().await.unwrap()["reason"], "relayed");
    assert!(hook_a.drain(Duration::from_millis(500)).await.is_empty());
    assert_eq!(d.metric("causeway_inbound_rejected_total", r#"bridge="hooks",reason="relayed_by_another_bridge""#).await, 1.0);
    // Unmarked, it crosses; the delivery carries the mark.
    let msg = json!({"sender": {"id": "bob"}, "text": "said here"});
    assert_eq!(post(&client, &d.url("/bridges/hooks/b"), "token-b", &msg).await.0, 202);
    let got = hook_a.next(T).await;
    assert_eq!(got.headers.get("x-causeway-relayed").and_then(|v| v.to_str().ok()), Some("1"));
    assert!(hook_b.drain(Duration::from_millis(200)).await.is_empty());
}

/// `causeway outbox retry --all` queues every dead letter again (only those
/// of the bridge and room named), in their order, under the same keys.
#[tokio::test]
async fn every_dead_letter_is_retried_in_order_with_retry_all() {
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Fail(400)).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    for i in 0..3 {
        let msg = json!({"sender": {"id": "alice"}, "text": format!("refused {i}")});
        assert_eq!(post_signed(&d, "a", b"secret-a", &msg).await.0, 202);
    }
    let deadline = std::time::Instant::now() + T;
    while d.metric("causeway_dead_letters_total", r#"bridge="hooks""#).await < 3.0 {
        assert!(std::time::Instant::now() < deadline, "no dead letters:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead: Value = serde_json::from_slice(&d.cli(&["outbox", "--json", "dead"]).stdout).unwrap();
    let keys: Vec<String> = dead.as_array().unwrap().iter().map(|r| r["delivery_id"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys.len(), 3, "{dead}");
    // --bridge and --room need --all; a filter that matches nothing queues nothing.
    assert!(!d.cli(&["outbox", "retry", "--bridge", "hooks"]).status.success());
    let out = d.cli(&["outbox", "retry", "--all", "--bridge", "hooks", "--room", "a"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("0 dead letter"), "{}", String::from_utf8_lossy(&out.stdout));
    hook_b.set_mode(Mode::Accept { own_ids: None });
    let out = d.cli(&["outbox", "retry", "--all", "--bridge", "hooks", "--room", "b"]);
    assert!(
        out.status.success() && String::from_utf8_lossy(&out.stdout).starts_with("3 dead letter"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    for (i, key) in keys.iter().enumerate() {
        let got = hook_b.next(T).await;
        assert_eq!((got.key.as_str(), got.json["text"].as_str()), (key.as_str(), Some(format!("refused {i}").as_str())));
    }
    let out = d.cli(&["outbox", "--json", "dead"]);
    assert_eq!(serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().unwrap().len(), 0);
}

/// `outbox.give_up_after` counts from a delivery's first failure: a message
/// that waited behind another that was failing still gets its full time.
#[tokio::test]
async fn give_up_after_counts_from_the_first_failure_not_from_queueing() {
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut hook_b = Hook::start(Mode::Fail(503)).await;
    let config = two_links(&hook_a.url(), &hook_b.url()).replace("retry_max: 300ms }", "retry_max: 300ms, give_up_after: 3s }");
    let d = Daemon::start(&config).await;
    for text in ["first", "second"] {
        let msg = json!({"sender": {"id": "alice"}, "text": text});
        assert_eq!(post_signed(&d, "a", b"secret-a", &msg).await.0, 202);
    }
    // The first is given up on after 3 s; the second, 3 s old by then, has
    // only begun to fail.
    let deadline = std::time::Instant::now() + T;
    while d.metric("causeway_dead_letters_total", r#"bridge="hooks""#).await < 1.0 {
        assert!(std::time::Instant::now() < deadline, "the first was never given up on:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    hook_b.set_mode(Mode::Accept { own_ids: None });
    let got = hook_b.next(T).await;
    assert_eq!(got.json["text"], "second", "{}", d.log());
    assert_eq!(d.metric("causeway_dead_letters_total", r#"bridge="hooks""#).await, 1.0, "{}", d.log());
}

#[tokio::test]
async fn server_sent_events_stream_the_portal_and_resume() {
    let hook_a = Hook::start(Mode::Accept { own_ids: None }).await;
    let hook_b = Hook::start(Mode::Accept { own_ids: None }).await;
    let d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    let client = reqwest::Client::new();
    let events = d.url("/bridges/hooks/a/events");
    assert_eq!(client.get(&events).send().await.unwrap().status(), 401);

    let mut resp = client.get(&events).bearer_auth("events-token").send().await.unwrap();
    assert_eq!(resp.status(), 200);
    for i in 0..3 {
        let msg = json!({"sender": {"id": "bob"}, "text": format!("sse {i}")});
        assert_eq!(post(&client, &d.url("/bridges/hooks/b"), "token-b", &msg).await.0, 202);
    }
    let mut text = String::new();
    while text.matches("event: message").count() < 3 {
        let chunk = tokio::time::timeout(T, resp.chunk()).await.expect("SSE timed out").unwrap().expect("SSE ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains(r#""text":"sse 2""#), "{text}");
    let first_id = text.lines().find_map(|l| l.strip_prefix("id: ")).unwrap().to_string();
    drop(resp);

    // Resume after the first: the archive replays the two that followed.
    let mut resp = client.get(&events).bearer_auth("events-token").header("last-event-id", &first_id).send().await.unwrap();
    let mut text = String::new();
    while text.matches("event: message").count() < 2 {
        let chunk = tokio::time::timeout(T, resp.chunk()).await.expect("SSE timed out").unwrap().expect("SSE ended");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(!text.contains("sse 0") && text.contains("sse 1") && text.contains("sse 2"), "{text}");

    // A reader still connected does not hold up a clean stop.
    let mut d = d;
    let started = std::time::Instant::now();
    assert!(d.terminate().success(), "unclean exit:\n{}", d.log());
    assert!(started.elapsed() < Duration::from_secs(8), "stop took {:?}", started.elapsed());
    drop(resp);
}

#[tokio::test]
async fn webhook_conformance() {
    let hook_a = Hook::start(Mode::Accept { own_ids: Some("A-".into()) }).await;
    let hook_b = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = Daemon::start(&two_links(&hook_a.url(), &hook_b.url())).await;
    let mut a = WebhookPeer::new("a", d.url("/bridges/hooks/a"), "token-a", hook_a).signed(b"secret-a");
    let mut b = WebhookPeer::new("b", d.url("/bridges/hooks/b"), "token-b", hook_b);
    let mut causeway = common::Restarts { daemon: &mut d, bridges: &["hooks"] };
    let result = conformance::run(&mut a, &mut b, &mut causeway, &conformance::Options::default()).await;
    let report = result.unwrap_or_else(|e| panic!("{e}\n{}", d.log()));
    // Everything both ways; direct conversations are the XMPP suite's.
    assert_eq!(report.passed.len(), 34, "{report}");
    assert_eq!(report.skipped, ["direct conversation"], "{report}");
}

#[tokio::test]
async fn json_logs_and_a_clear_error_when_the_port_is_taken() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.yaml");
    let db = dir.path().join("c.db");
    std::fs::write(
        &path,
        format!(
            "http: {{ listen: \"{}\" }}\nstore: {{ path: \"{}\" }}\nbridges: {{ h: {{ type: webhook, endpoints: {{ a: {{ inbound: {{ token: t }} }} }} }} }}\nportals: [{{ id: p, links: [{{ bridge: h, room: a }}] }}]\n",
            taken.local_addr().unwrap(),
            db.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["--log-format", "json", "run", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let logged: Vec<Value> = err.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let line = logged.iter().find(|l| l["level"] == "ERROR").unwrap_or_else(|| panic!("no JSON error line in:\n{err}"));
    assert!(line["message"].as_str().unwrap().contains("(http.listen)"), "{line}");
}
