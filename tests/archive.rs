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

/// The next message `peer` sees whose text has `words`: its id there.
async fn seen_on(peer: &mut dyn Peer, words: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let seen = peer.next(left).await.unwrap_or_else(|e| panic!("{} never saw {words:?}: {e}", peer.label()));
        if let causeway_core::Body::Message { text, .. } = &seen.body
            && text.plain.contains(words)
        {
            return seen.id;
        }
    }
}

/// Run `python3` on `script` with `args`; its standard output.
fn python(script: &str, args: &[&std::path::Path]) -> String {
    python_in("python3", script, args)
}

fn python_in(python: &str, script: &str, args: &[&std::path::Path]) -> String {
    let out = std::process::Command::new(python).arg("-c").arg(script).args(args).output().unwrap();
    assert!(out.status.success(), "python: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

/// A conversation on the four networks (a reply, a reaction, an edit, a
/// thread), exported: the mbox read by Python's `mailbox` with the replies
/// as mail threads, the JSON with the edit and the reaction, the printable
/// page in Chromium to a PDF whose text (`pdftotext`) has the messages in
/// their order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exports_are_read_by_mail_programs_and_print_in_order() {
    let mut w = World::start("archive: { retention_every: 1s }").await;
    let mut web = WebhookPeer::new("w", w.daemon.url("/bridges/hooks/w"), "tw", w.hook.take().unwrap());
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut carol = MailPeer::new(&w.mail, "carol", "Carol D.");
    let say = |text: &str, reply_to: Option<String>| Action::Text { text: text.into(), reply_to };

    let first = alice.act(say("Zażółć gęślą jaźń: the first", None)).await.unwrap();
    let on_matrix = seen_on(&mut bob, "the first").await;
    bob.act(say("नमस्ते, the answer", Some(on_matrix.clone()))).await.unwrap();
    bob.act(Action::React { target: on_matrix, key: "👍".into() }).await.unwrap();
    let on_hook = seen_on(&mut web, "the answer").await;
    web.act(Action::InThread { text: "🎉 the thread goes on".into(), root: on_hook }).await.unwrap();
    seen_on(&mut alice, "the thread goes on").await;
    carol.act(say("the last word by mail", None)).await.unwrap();
    alice.act(Action::Edit { target: first, text: "Zażółć gęślą jaźń: the first, corrected".into() }).await.unwrap();
    until_found(&w, &["corrected"], 1).await;
    until_found(&w, &["last", "word"], 1).await;
    let reacted = Instant::now() + Duration::from_secs(30);
    let dir = tempfile::tempdir().unwrap();
    let export = |format: &str, name: &str| {
        let path = dir.path().join(name);
        let out = w.daemon.cli(&[
            "archive",
            "export",
            "--portal",
            "ops",
            "--format",
            format,
            "--tz",
            "Europe/Warsaw",
            "-o",
            path.to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        path
    };

    // JSON: every event, messages with their latest text and reactions.
    let json: Value = loop {
        let v: Value = serde_json::from_slice(&std::fs::read(export("json", "ops.json")).unwrap()).unwrap();
        let has_reaction = v["events"].as_array().unwrap().iter().any(|e| e["reactions"].as_array().is_some_and(|r| !r.is_empty()));
        if has_reaction {
            break v;
        }
        assert!(Instant::now() < reacted, "the reaction never reached the archive: {v}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let events = json["events"].as_array().unwrap();
    let messages: Vec<&Value> = events.iter().filter(|e| e["body"]["type"] == "message").collect();
    assert_eq!(messages.len(), 4, "{json}");
    assert_eq!(messages[0]["current_text"], "Zażółć gęślą jaźń: the first, corrected");
    assert_eq!(messages[0]["edited"], true);
    assert_eq!(messages[0]["sender"]["person"], "alice");
    assert_eq!(messages[0]["reactions"][0]["key"], "👍");
    assert_eq!(messages[1]["body"]["reply_to"], messages[0]["id"], "the answer names what it answers");
    assert_eq!(messages[2]["body"]["thread"], messages[1]["id"], "the thread names its root");
    assert!(events.iter().any(|e| e["body"]["type"] == "edit"), "the edit itself is there too");

    // mbox: Python's mailbox reads it; the replies are mail threads.
    let mbox = export("mbox", "ops.mbox");
    let read = python(
        "import mailbox, json, sys\n\
         out = []\n\
         for m in mailbox.mbox(sys.argv[1]):\n\
         \x20   body = m.get_payload(decode=True).decode('utf-8')\n\
         \x20   out.append({'id': m['Message-ID'], 'in_reply_to': m['In-Reply-To'], 'references': m['References'], 'from': m['From'], 'subject': str(m['Subject']), 'body': body})\n\
         print(json.dumps(out))",
        &[&mbox],
    );
    let mails: Vec<Value> = serde_json::from_str(&read).unwrap();
    assert_eq!(mails.len(), 4, "{read}");
    let id = |n: usize| format!("<{}@archive.causeway>", messages[n]["id"].as_str().unwrap());
    assert_eq!(mails[0]["id"].as_str(), Some(id(0).as_str()));
    assert!(mails[0]["body"].as_str().unwrap().starts_with("Zażółć gęślą jaźń: the first, corrected"), "{}", mails[0]);
    assert!(mails[0]["body"].as_str().unwrap().contains("Reactions: 👍"), "{}", mails[0]);
    assert_eq!(mails[1]["in_reply_to"].as_str(), Some(id(0).as_str()), "the answer threads under the first");
    assert_eq!(mails[2]["in_reply_to"].as_str(), Some(id(1).as_str()), "the thread under its root");
    assert!(mails[1]["body"].as_str().unwrap().contains("नमस्ते"));
    assert!(mails[0]["from"].as_str().unwrap().contains("alice@xmpp.test"), "{}", mails[0]);

    // The printable page, and the PDF Chromium prints of it.
    let html = std::fs::read_to_string(export("html", "ops.html")).unwrap();
    assert!(html.contains("<style>") && html.contains("break-before:page"), "self-contained, with print rules");
    assert!(html.contains("(edited)") && html.contains("↪ Alice Liddell"), "edits and replies shown");
    let pdf = export("pdf", "ops.pdf");
    let text = std::process::Command::new("pdftotext").arg(&pdf).arg("-").output().unwrap();
    assert!(text.status.success(), "pdftotext: {}", String::from_utf8_lossy(&text.stderr));
    let text = String::from_utf8_lossy(&text.stdout).into_owned();
    let at = |words: &str| text.find(words).unwrap_or_else(|| panic!("{words:?} not in the PDF:\n{text}"));
    assert!(at("Zażółć gęślą jaźń: the first, corrected") < at("the answer"), "{text}");
    assert!(at("the answer") < at("the thread goes on"));
    assert!(at("the thread goes on") < at("the last word by mail"));
    assert!(!dir.path().join("ops.partial.html").exists(), "the page printed is not left behind");

    // Slack: slack-export-viewer's reader (PyPI) reads the archive, with
    // the people's names, the threads and the reaction.
    let zip = export("slack", "ops.zip");
    let venv =
        String::from_utf8(std::process::Command::new("bash").arg("tests/peers/python.sh").arg("path").output().unwrap().stdout).unwrap();
    let read = python_in(
        venv.trim(),
        &format!(
            "import json, os, sys, tempfile\n\
             tempfile.tempdir = {:?}\n\
             from slackviewer.config import Config\n\
             from slackviewer.reader import Reader\n\
             r = Reader(Config({{'archive': sys.argv[1], 'debug': False, 'hide_channels': None, 'since': None, 'skip_channel_member_change': True, 'thread_note': False, 'filter_user': None}}))\n\
             out = {{name: [{{'user': m.username, 'text': m.msg, 'thread': m.is_thread_msg, 'reactions': m.reactions}} for m in msgs] for name, msgs in r.compile_channels().items()}}\n\
             print(json.dumps(out))",
            dir.path().to_str().unwrap()
        ),
        &[&zip],
    );
    let channels: Value = serde_json::from_str(read.lines().last().unwrap()).unwrap_or_else(|e| panic!("{e}: {read}"));
    let ops = channels["ops"].as_array().unwrap_or_else(|| panic!("no channel ops: {read}"));
    let said: Vec<(&str, &str, bool)> =
        ops.iter().map(|m| (m["user"].as_str().unwrap(), m["text"].as_str().unwrap(), m["thread"].as_bool().unwrap())).collect();
    assert_eq!(said.len(), 4, "{read}");
    assert_eq!((said[0].0, said[0].2), ("Alice Liddell", false), "{read}");
    assert!(said[0].1.contains("Zażółć gęślą jaźń: the first, corrected"), "{read}");
    assert!(said[1].1.contains("नमस्ते") && said[1].2, "the answer is in the first one's thread: {read}");
    assert!(said[2].1.contains("🎉 the thread goes on") && said[2].2, "{read}");
    assert!(said[3].1.contains("the last word by mail") && !said[3].2, "{read}");
    assert_eq!(said[3].0, "Carol Danvers", "a person is named as the directory names them");
    assert_eq!(ops[0]["reactions"][0]["name"], "👍", "{read}");

    // Every export is in the export log, with who made it; the daemon
    // counts them.
    let out = w.daemon.cli(&["archive", "exports", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let log: Value = serde_json::from_slice(&out.stdout).unwrap();
    let made = log["exports"].as_array().unwrap();
    let mut formats: Vec<&str> = made.iter().map(|e| e["format"].as_str().unwrap()).collect();
    formats.sort();
    formats.dedup();
    assert_eq!(formats, ["html", "json", "mbox", "pdf", "slack"], "{log}");
    for e in made {
        assert_eq!(e["portals"], serde_json::json!(["ops"]), "{e}");
        assert!(e["events"].as_u64().unwrap() > 0 && !e["by"].as_str().unwrap().is_empty(), "{e}");
    }
    assert!(made.iter().any(|e| e["output"].as_str().unwrap().ends_with("ops.zip")));
    let deadline = Instant::now() + Duration::from_secs(20);
    while w.daemon.metric("causeway_archive_exports_total", r#"format="slack""#).await != 1.0 {
        assert!(Instant::now() < deadline, "the daemon did not count the exports");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// A file server on the tests' files address whose files can be deleted:
/// `/photo.png` (a small PNG) and `/big.bin` (larger than the archive keeps).
async fn deletable_files(png: Vec<u8>) -> (std::net::SocketAddr, std::sync::Arc<std::sync::atomic::AtomicBool>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    let gone = std::sync::Arc::new(AtomicBool::new(false));
    let listener = tokio::net::TcpListener::bind((common::FILES_HOST, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let g = gone.clone();
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let (g, png) = (g.clone(), png.clone());
        async move {
            use axum::response::IntoResponse;
            match uri.path() {
                _ if g.load(Ordering::SeqCst) => axum::http::StatusCode::NOT_FOUND.into_response(),
                "/photo.png" => ([("content-type", "image/png")], png).into_response(),
                "/big.bin" => ([("content-type", "application/octet-stream")], vec![7u8; 200_000]).into_response(),
                _ => axum::http::StatusCode::NOT_FOUND.into_response(),
            }
        }
    });
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, gone)
}

/// Files that crossed are kept: one from an XMPP link and the same bytes
/// uploaded to Matrix are kept once; one over `archive.max_file_bytes` is
/// a link. After the file server deleted them, the mbox export still
/// attaches them (read by Python's `mailbox`) and the JSON export names
/// the kept content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_are_kept_once_and_exported_after_their_server_deleted_them() {
    use sha2::{Digest, Sha256};
    let (_, png) = common::serve_file().await;
    let (files, gone) = deletable_files(png.clone()).await;
    let w = World::start(&format!("archive: {{ {}, max_file_bytes: 100000 }}", common::FETCH_ALLOW)).await;
    let d = &w.daemon;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let file = |path: &str, mime: &str| causeway_core::Attachment {
        url: format!("http://{files}/{path}"),
        name: Some(path.into()),
        mime: Some(mime.into()),
        size: None,
    };
    alice.act(Action::File { attachment: file("photo.png", "image/png"), caption: "the photo".into() }).await.unwrap();
    seen_on(&mut bob, "the photo").await;
    bob.act(Action::File { attachment: file("photo.png", "image/png"), caption: "the same photo".into() }).await.unwrap();
    alice.act(Action::File { attachment: file("big.bin", "application/octet-stream"), caption: "too big".into() }).await.unwrap();

    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let count = |result: &'static str| async move { d.metric("causeway_archive_files_total", &format!(r#"result="{result}""#)).await };
        let (kept, duplicate, refused) = (count("kept").await, count("duplicate").await, count("refused").await);
        if (kept, duplicate, refused) == (1.0, 1.0, 1.0) {
            break;
        }
        assert!(Instant::now() < deadline, "kept {kept}, duplicate {duplicate}, refused {refused}\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(d.metric("causeway_archive_file_bytes", "").await, png.len() as f64, "one content, kept once");
    let mut on_disk = Vec::new();
    // (Beside the folders of the contents: the files' lock.)
    for folder in std::fs::read_dir(d.dir.path().join("archive-files")).unwrap().map(|f| f.unwrap().path()).filter(|p| p.is_dir()) {
        on_disk.extend(std::fs::read_dir(folder).unwrap().map(|f| f.unwrap().file_name()));
    }
    let sha = hex::encode(Sha256::digest(&png));
    assert_eq!(on_disk, [std::ffi::OsString::from(&sha)], "one file on disk, named by its content");

    // The network deletes them; the archive has them still.
    gone.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(common::fetch(&format!("http://{files}/photo.png")).await.is_err());
    let dir = tempfile::tempdir().unwrap();
    let export = |format: &str| {
        let path = dir.path().join(format!("ops.{format}"));
        let out = d.cli(&["archive", "export", "--portal", "ops", "--format", format, "-o", path.to_str().unwrap()]);
        assert!(out.status.success(), "{format}: {}", String::from_utf8_lossy(&out.stderr));
        path
    };
    let read = python(
        "import mailbox, json, sys, hashlib\n\
         out = {}\n\
         for m in mailbox.mbox(sys.argv[1]):\n\
         \x20   parts = list(m.walk()) if m.is_multipart() else [m]\n\
         \x20   text = [p.get_payload(decode=True).decode('utf-8') for p in parts if p.get_content_type() == 'text/plain' and not p.get_filename()]\n\
         \x20   files = [[p.get_filename(), p.get_content_type(), hashlib.sha256(p.get_payload(decode=True)).hexdigest()] for p in parts if p.get_filename()]\n\
         \x20   out[text[0].split('\\n')[0]] = {'text': text[0], 'files': files}\n\
         print(json.dumps(out))",
        &[&export("mbox")],
    );
    let mails: Value = serde_json::from_str(&read).unwrap_or_else(|e| panic!("{e}: {read}"));
    let mail = |caption: &str| mails.as_object().unwrap().iter().find(|(k, _)| k.contains(caption)).map(|(_, v)| v.clone());
    for caption in ["the photo", "the same photo"] {
        let m = mail(caption).unwrap_or_else(|| panic!("no mail of {caption:?}: {read}"));
        assert_eq!(m["files"].as_array().unwrap().len(), 1, "{caption}: {read}");
        assert_eq!(m["files"][0][1], "image/png", "{read}");
        assert_eq!(m["files"][0][2], sha.as_str(), "{caption}: the photo's bytes are attached: {read}");
    }
    let big = mail("too big").unwrap_or_else(|| panic!("no mail of the big file: {read}"));
    assert!(big["files"].as_array().unwrap().is_empty(), "{read}");
    assert!(big["text"].as_str().unwrap().contains(&format!("http://{files}/big.bin")), "the big one is its link: {read}");

    let json: Value = serde_json::from_slice(&std::fs::read(export("json")).unwrap()).unwrap();
    let kept: Vec<&Value> = json["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["body"]["attachments"].as_array()?.first())
        .filter_map(|a| a.get("kept"))
        .collect();
    assert_eq!(kept.len(), 2, "{json}");
    assert!(kept.iter().all(|k| k["sha256"] == sha.as_str() && k["size"] == png.len()), "{json}");
}

/// Retention of a portal (`archive.retention: 20s`, applied every second)
/// with a legal hold on Bob, set and released over the API: what is older
/// than the retention goes (its search entries too; an edit of it no longer
/// finds it), what is newer stays, and Bob's stay while the hold is in force.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_deletes_what_is_old_and_a_hold_keeps_what_it_covers() {
    const RETENTION: Duration = Duration::from_secs(20);
    let edit = |c: String| {
        let http = r#"http: { listen: "127.0.0.1:{port}" }"#;
        let portal = "  - id: ops\n";
        assert!(c.contains(http) && c.contains(portal), "the world's config changed");
        c.replace(http, &format!(r#"http: {{ listen: "127.0.0.1:{{port}}", api_token: {TOKEN} }}"#))
            .replace(portal, &format!("{portal}    archive: {{ retention: {}s }}\n", RETENTION.as_secs()))
    };
    let w = World::start_with("archive: { retention_every: 1s }", edit, &[]).await;
    let d = &w.daemon;
    let mut alice = XmppPeer::join(&w.prosody, "alice", MUC, "Alice", 0).await;
    let mut bob = MatrixPeer::join(&w.synapse.url(), "bob", ALIAS).await;
    let mut carol = MailPeer::new(&w.mail, "carol", "Carol D.");
    let say = |text: &str| Action::Text { text: text.into(), reply_to: None };
    let old = alice.act(say("old words from alice")).await.unwrap();
    bob.act(say("old words from bob")).await.unwrap();
    carol.act(say("old words from carol")).await.unwrap();
    until_found(&w, &["old", "words"], 3).await;
    let said = Instant::now();

    // The hold, over the API: refused without the token or a reason.
    let http = reqwest::Client::new();
    let holds = d.url("/api/archive/holds");
    let hold = serde_json::json!({"person": "bob", "reason": "case 42", "by": "legal@corp.example"});
    assert_eq!(http.post(&holds).json(&hold).send().await.unwrap().status(), 401);
    let (status, body) = common::post(&http, &holds, TOKEN, &serde_json::json!({"person": "bob", "by": "x"})).await;
    assert_eq!(status, 400, "no reason: {body}");
    let (status, body) =
        common::post(&http, &holds, TOKEN, &serde_json::json!({"person": "bob", "portal": "ops", "reason": "r", "by": "x"})).await;
    assert_eq!(status, 422, "two things at once: {body}");
    let (status, set) = common::post(&http, &holds, TOKEN, &hold).await;
    assert_eq!(status, 201, "{set}");
    assert_eq!((set["person"].as_str(), set["set_by"].as_str()), (Some("bob"), Some("legal@corp.example")));
    let listed: Value = http.get(&holds).bearer_auth(TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed["holds"].as_array().unwrap().len(), 1, "{listed}");

    // Newer words, half a retention later; then the old ones age out.
    tokio::time::sleep_until((said + RETENTION / 2).into()).await;
    alice.act(say("new words from alice")).await.unwrap();
    until_found(&w, &["new", "words"], 1).await;
    let left = until_found(&w, &["old", "words"], 1).await;
    assert!(said.elapsed() < RETENTION + RETENTION / 2, "the newer ones were found before they aged out too");
    assert_eq!(texts(&left), ["old words from bob"], "the held one stays");
    assert_eq!(texts(&search(&w, &["new", "words"])), ["new words from alice"], "the newer one stays");
    // Everything older than the retention (and a pass's second or two)
    // is Bob's, once Bob's are that old.
    tokio::time::sleep_until((said + RETENTION + Duration::from_secs(4)).into()).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ops.json");
    let out = d.cli(&["archive", "export", "--portal", "ops", "--format", "json", "-o", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let json: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let cut = json["about"]["exported_at_ms"].as_i64().unwrap() - RETENTION.as_millis() as i64 - 3000;
    let old_events: Vec<&Value> = json["events"].as_array().unwrap().iter().filter(|e| e["at_ms"].as_i64().unwrap() < cut).collect();
    assert!(!old_events.is_empty() && old_events.iter().all(|e| e["sender"]["person"] == "bob"), "{old_events:?}");
    assert!(d.metric("causeway_archive_retention_deleted_events_total", "").await >= 2.0);

    // Alice corrects the message retention took: nothing is there to correct.
    let dropped = || d.metric("causeway_events_dropped_total", r#"bridge="xmpp",reason="unknown_target""#);
    let before = dropped().await;
    alice.act(Action::Edit { target: old, text: "old words from alice, corrected".into() }).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while dropped().await < before + 1.0 {
        assert!(Instant::now() < deadline, "the edit of a deleted message was not dropped\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(search(&w, &["corrected"]).is_empty());

    // Released: Bob's words age out as everyone's.
    let id = set["id"].as_i64().unwrap();
    let release = d.url(&format!("/api/archive/holds/{id}/release"));
    let (status, released) = common::post(&http, &release, TOKEN, &serde_json::json!({"by": "legal@corp.example"})).await;
    assert_eq!(status, 200, "{released}");
    assert!(released["released_ms"].is_i64());
    let (status, _) = common::post(&http, &release, TOKEN, &serde_json::json!({"by": "legal@corp.example"})).await;
    assert_eq!(status, 404, "released once");
    until_found(&w, &["old", "words"], 0).await;
    let out = d.cli(&["archive", "holds", "--all", "--json"]);
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["holds"][0]["released_by"], "legal@corp.example", "the hold's story is kept: {all}");
}
