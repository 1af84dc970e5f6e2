//! The archive as IT uses it, filled through real clients on the four
//! networks: search from the command line and over HTTP.
#![cfg(all(feature = "webhook", feature = "xmpp", feature = "matrix", feature = "email"))]

mod common;

use std::time::{Duration, Instant};

use causeway_core::conformance::{Action, Peer};
use common::WebhookPeer;
use common::mail::MailPeer;
use common::matrix::MatrixPeer;
use common::world::{ALIAS, MUC, World};
use common::xmpp::XmppPeer;
use serde_json::Value;

const TOKEN: &str = "archive-token";

/// `causeway archive search … --json`: the hits' texts, best first.
fn search(w: &World, args: &[&str]) -> Vec<Value> {
    let mut all = vec!["archive", "search", "--json", "--context", "1"];
    all.extend_from_slice(args);
    let out = w.daemon.cli(&all);
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["hits"].as_array().unwrap().clone()
}

/// The hits' texts, each as said (a mail's subject, which comes first, left out).
fn texts(hits: &[Value]) -> Vec<String> {
    hits.iter().map(|h| h["message"]["text"].as_str().unwrap().rsplit("\n\n").next().unwrap().to_string()).collect()
}

/// Until `args` finds exactly `n` messages (what was said is archived when
/// the daemon takes it; a network may take a moment to pass it on).
async fn until_found(w: &World, args: &[&str], n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let hits = search(w, args);
        if hits.len() == n {
            return hits;
        }
        assert!(Instant::now() < deadline, "{args:?}: found {:?}\n{}", texts(&hits), w.daemon.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Polish from XMPP, Hindi from Matrix, emoji from the webhook, English by
/// mail; then searches by word, prefix and phrase, without diacritics, by
/// person, network and time, an edit and a retraction on the networks, and
/// the same over HTTP behind the API token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_was_said_on_four_networks_is_found() {
    let with_token = |c: String| {
        let http = r#"http: { listen: "127.0.0.1:{port}" }"#;
        assert!(c.contains(http), "the world's http section changed");
        c.replace(http, &format!(r#"http: {{ listen: "127.0.0.1:{{port}}", api_token: {TOKEN} }}"#))
    };
    let mut w = World::start_with("", with_token, &[]).await;
    let mut web = WebhookPeer::new("w", w.daemon.url("/bridges/hooks/w"), "tw", w.hook.take().unwrap());
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut carol = MailPeer::new(&w.mail, "carol", "Carol D.");
    let say = |text: &str| Action::Text { text: text.into(), reply_to: None };
    // Each waits for the one before to be archived, so the order is known.
    let polish = alice.act(say("Zażółć gęślą jaźń — plan wydania")).await.unwrap();
    let found = until_found(&w, &["zazolc"], 1).await;
    let hindi = bob.act(say("नमस्ते दुनिया, आज की बैठक 🎉")).await.unwrap();
    until_found(&w, &["दुनिया"], 1).await;
    web.act(say("🎉 release party tonight 🥳")).await.unwrap();
    until_found(&w, &["party"], 1).await;
    carol.act(say("the release plan is ready")).await.unwrap();

    // Words, without their diacritics, in any script.
    assert_eq!(found[0]["message"]["text"], "Zażółć gęślą jaźń — plan wydania");
    assert_eq!(found[0]["message"]["sender"]["person"], "alice");
    assert_eq!(found[0]["message"]["network"], "xmpp");
    let gesla = search(&w, &["gesla"]);
    assert!(gesla[0]["snippet"].as_str().unwrap().contains("[gęślą]"), "the words found, marked: {}", gesla[0]);
    let release = until_found(&w, &["relea*"], 2).await;
    let found = search(&w, &["बैठक"]);
    assert_eq!(found[0]["message"]["sender"]["person"], "bob");
    assert_eq!(found[0]["before"][0]["text"], "Zażółć gęślą jaźń — plan wydania", "with what came before");
    assert_eq!(found[0]["after"][0]["text"], "🎉 release party tonight 🥳", "and after");
    // Prefix, phrase, and each filter.
    let mut release = texts(&release);
    release.sort();
    assert_eq!(release, ["the release plan is ready", "🎉 release party tonight 🥳"]);
    assert_eq!(texts(&search(&w, &["\"release plan\""])), ["the release plan is ready"]);
    assert_eq!(texts(&search(&w, &["release", "--person", "carol"])), ["the release plan is ready"]);
    assert_eq!(texts(&search(&w, &["release", "--person", "dave"])), ["🎉 release party tonight 🥳"]);
    assert_eq!(texts(&search(&w, &["release", "--person", "hooks:w"])), ["🎉 release party tonight 🥳"], "an account");
    assert_eq!(texts(&search(&w, &["release", "--network", "hooks"])), ["🎉 release party tonight 🥳"]);
    assert!(search(&w, &["बैठक", "--person", "alice"]).is_empty());
    assert_eq!(search(&w, &["plan", "--since", "1h", "--portal", "ops"]).len(), 2);
    assert!(search(&w, &["plan", "--until", "1h"]).is_empty(), "nothing is older than an hour");
    assert!(search(&w, &["plan", "--portal", "elsewhere"]).is_empty());

    // Alice corrects herself on XMPP: the new words are found, the old are not.
    alice.act(Action::Edit { target: polish, text: "Zażółć gęślą jaźń — plan wydania poprawiony".into() }).await.unwrap();
    let edited = until_found(&w, &["poprawiony"], 1).await;
    assert_eq!(edited[0]["message"]["edited"], true);
    // Bob takes his message back on Matrix: not found, unless asked for.
    bob.act(Action::Retract { target: hindi }).await.unwrap();
    until_found(&w, &["बैठक"], 0).await;
    let kept = search(&w, &["बैठक", "--retracted"]);
    assert_eq!(kept[0]["message"]["retracted"], true);

    // The same over HTTP, behind the token; nothing anyone types is an error
    // of the database.
    let http = reqwest::Client::new();
    let url = w.daemon.url("/api/archive/search");
    let get = |q: &[(&str, &str)], token: Option<&str>| {
        let mut r = http.get(reqwest::Url::parse_with_params(&url, q).unwrap());
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        async move {
            let r = r.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (status, v) = get(&[("q", "zazolc"), ("person", "alice")], Some(TOKEN)).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(texts(v["hits"].as_array().unwrap()), ["Zażółć gęślą jaźń — plan wydania poprawiony"]);
    assert_eq!(get(&[("q", "zazolc")], None).await.0, 401);
    assert_eq!(get(&[("q", "zazolc")], Some("wrong")).await.0, 401);
    for bad in [vec![("q", "!!! ***")], vec![("q", "x"), ("since", "yesterday")], vec![("q", "x"), ("kind", "poem")], vec![]] {
        let (status, v) = get(&bad, Some(TOKEN)).await;
        assert_eq!(status, 400, "{bad:?}: {v}");
        assert_eq!(v["error"], "bad_query");
    }
    for hostile in ["NEAR(a b)", "\"", "a OR", "text:plan", "'; DROP TABLE archive; --", "x\u{0}y", "*plan", "-plan ^x"] {
        let (status, v) = get(&[("q", hostile)], Some(TOKEN)).await;
        assert!(status == 200 || status == 400, "{hostile:?}: {status} {v}");
    }
    assert!(w.daemon.metric("causeway_archive_searches_total", r#"result="ok""#).await >= 1.0);
    assert!(w.daemon.metric("causeway_archive_searches_total", r#"result="refused""#).await >= 4.0);
}
