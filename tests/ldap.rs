//! People from a real OpenLDAP slapd (tests/peers/ldap.sh) over StartTLS:
//! imported at start and on refresh, names the same on every network,
//! hostile entries left out with their reason, and the last good import
//! kept for when the directory server is away.
#![cfg(feature = "webhook")]

mod common;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Daemon, Hook, Mode, free_port, post};
use serde_json::{Value, json};

const T: Duration = Duration::from_secs(10);
/// People generated beyond the named ones: more than a page and more than
/// the server's size limit for one search, so paging must work.
const CROWD: usize = 60;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/ldap.sh")
}

struct Slapd {
    dir: tempfile::TempDir,
    port: u16,
}

impl Slapd {
    fn start() -> Slapd {
        let s = Slapd { dir: tempfile::tempdir().unwrap(), port: free_port() };
        s.up();
        s
    }

    fn up(&self) {
        let out = Command::new("bash").arg(script()).arg("start").arg(self.dir.path()).arg(self.port.to_string()).output().unwrap();
        assert!(
            out.status.success(),
            "slapd did not start:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn down(&self) {
        let out = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output().unwrap();
        assert!(out.status.success(), "slapd did not stop: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn apply(&self, ldif: &str) {
        let file = self.dir.path().join("change.ldif");
        std::fs::write(&file, ldif).unwrap();
        let out = Command::new("bash").arg(script()).arg("apply").arg(self.dir.path()).arg(&file).output().unwrap();
        assert!(out.status.success(), "ldapmodify failed: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn ca(&self) -> PathBuf {
        self.dir.path().join("certs/ca.pem")
    }
}

impl Drop for Slapd {
    fn drop(&mut self) {
        let _ = Command::new("bash").arg(script()).arg("stop").arg(self.dir.path()).output();
    }
}

fn person(uid: &str, cn: &str, extra: &str) -> String {
    format!("dn: uid={uid},ou=people,dc=corp,dc=test\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {cn}\nsn: {cn}\n{extra}\n")
}

/// The directory: two people to talk as, hostile and clashing entries,
/// and a crowd.
fn directory() -> String {
    let mut ldif = String::new();
    ldif += &person("alice", "Alice L", "displayName: Alice Liddell\nmail: alice@mail.test\n");
    ldif += &person("bob", "Bob Builder", "");
    // Not usable as a person id.
    ldif += &person("x:y", "Colon", "");
    // A bell in the display name (base64 in LDIF).
    ldif += &person("dave", "Dave", "displayName:: RGF2ZQdCZWxs\n");
    // The same id as a configured person: the config wins.
    ldif += &person("carol", "Carol from LDAP", "");
    for i in 0..CROWD {
        ldif += &person(&format!("p{i:03}"), &format!("Person {i}"), "");
    }
    ldif
}

fn config(slapd: &Slapd, hook: &str, ldap_extra: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 50ms, retry_max: 300ms }}
bridges:
  hooks:
    type: webhook
    endpoints:
      a:
        inbound: {{ token: token-a }}
      b:
        outbound: {{ url: "{hook}" }}
portals:
  - id: ops
    links:
      - {{ bridge: hooks, room: a }}
      - {{ bridge: hooks, room: b }}
people:
  - id: carol
    name: Carol Configured
    accounts: {{ hooks: carol }}
directory:
  ldap:
    url: "ldap://127.0.0.1:{port}"
    starttls: true
    ca_file: "{ca}"
    bind_dn: "cn=causeway,ou=services,dc=corp,dc=test"
    password: causeway-pw
    base: "ou=people,dc=corp,dc=test"
    accounts: {{ hooks: "{{uid}}" }}
    refresh: 1s
    page_size: 20
{ldap_extra}"#,
        port = slapd.port,
        ca = slapd.ca().display(),
    )
}

/// Post as `sender` on endpoint `a`; the name and person the other
/// endpoint is shown.
async fn shown_as(d: &Daemon, hook: &mut Hook, sender: &str, text: &str) -> (String, Value) {
    let (status, body) =
        post(&reqwest::Client::new(), &d.url("/bridges/hooks/a"), "token-a", &json!({"sender": {"id": sender}, "text": text})).await;
    assert_eq!(status, 202, "{body}");
    loop {
        let r = hook.next(T).await;
        if r.json["text"] == text {
            return (r.json["sender"]["name"].as_str().unwrap_or_default().to_string(), r.json["sender"]["person"].clone());
        }
    }
}

fn people_cli(config: &Path) -> (std::process::Output, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_causeway"))
        .args(["people", "--json", "--config"])
        .arg(config)
        .env_remove("SSL_CERT_FILE")
        .output()
        .unwrap();
    let json = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (out, json)
}

#[tokio::test]
async fn people_come_from_ldap_and_follow_it() {
    let slapd = Slapd::start();
    slapd.apply(&directory());
    let mut hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let mut d = Daemon::prepare(&config(&slapd, &hook.url(), ""), &[]);

    // What the import makes of the directory, before anything runs.
    let (out, listing) = people_cli(&d.config_path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let people = listing["people"].as_array().unwrap();
    assert_eq!(people.len(), 1 + 2 + CROWD, "{listing:#}");
    let find = |id: &str| people.iter().find(|p| p["id"] == id).cloned().unwrap_or(Value::Null);
    assert_eq!(find("alice")["name"], "Alice Liddell");
    assert_eq!(find("alice")["accounts"]["hooks"], "alice");
    assert_eq!(find("alice")["source"], "ldap");
    assert_eq!(find("bob")["name"], "Bob Builder", "no displayName: the cn");
    assert_eq!(find("carol")["name"], "Carol Configured");
    assert_eq!(find("carol")["source"], "config");
    assert_eq!(find(&format!("p{:03}", CROWD - 1))["name"], format!("Person {}", CROWD - 1));
    let reasons: Vec<String> = listing["skipped"].as_array().unwrap().iter().map(|s| format!("{} {}", s["dn"], s["reason"])).collect();
    for want in ["uid=x:y", "control characters", "carol: a person with this id is configured already"] {
        assert!(reasons.iter().any(|r| r.contains(want)), "{want:?} in {reasons:?}");
    }
    assert_eq!(reasons.len(), 3, "{reasons:?}");

    // Running: an LDAP person speaks under their directory name.
    d.restart().await;
    assert_eq!(shown_as(&d, &mut hook, "alice", "one").await, ("Alice Liddell".to_string(), json!("alice")));
    assert_eq!(d.metric("causeway_directory_people", r#"source="ldap""#).await, (2 + CROWD) as f64);
    assert_eq!(d.metric("causeway_directory_skipped", r#"source="ldap""#).await, 2.0);

    // A change in the directory shows after the next refresh.
    slapd
        .apply("dn: uid=alice,ou=people,dc=corp,dc=test\nchangetype: modify\nreplace: displayName\ndisplayName: Alice Pleasance Liddell\n");
    let deadline = Instant::now() + T;
    let mut i = 0;
    loop {
        i += 1;
        let (name, _) = shown_as(&d, &mut hook, "alice", &format!("again {i}")).await;
        if name == "Alice Pleasance Liddell" {
            break;
        }
        assert_eq!(name, "Alice Liddell");
        assert!(Instant::now() < deadline, "the new name did not arrive:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A new person too.
    slapd.apply(&person("erin", "Erin", "displayName: Erin Example\n"));
    let deadline = Instant::now() + T;
    loop {
        i += 1;
        let (name, person) = shown_as(&d, &mut hook, "erin", &format!("erin {i}")).await;
        if person == "erin" {
            assert_eq!(name, "Erin Example");
            break;
        }
        assert!(Instant::now() < deadline, "erin did not appear:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The directory server away: a restart keeps the last good import.
    slapd.down();
    d.terminate();
    d.restart().await;
    assert_eq!(shown_as(&d, &mut hook, "bob", "still here").await, ("Bob Builder".to_string(), json!("bob")));
    assert_eq!(shown_as(&d, &mut hook, "erin", "me too").await, ("Erin Example".to_string(), json!("erin")));
    assert!(d.log().contains("using the last good import"), "{}", d.log());
    assert!(d.metric("causeway_directory_imports_total", r#"result="failed""#).await >= 1.0);

    // Back: imported again.
    slapd.up();
    let deadline = Instant::now() + T;
    let ok = d.metric("causeway_directory_imports_total", r#"result="ok""#).await;
    while d.metric("causeway_directory_imports_total", r#"result="ok""#).await <= ok {
        assert!(Instant::now() < deadline, "no import after slapd came back:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Everyone gone from the directory at once: far likelier a broken
    // import than an emptied company; the people are kept.
    let mut gone = String::new();
    for uid in ["alice", "bob", "x:y", "dave", "carol", "erin"].into_iter().map(String::from).chain((0..CROWD).map(|i| format!("p{i:03}")))
    {
        gone += &format!("dn: uid={uid},ou=people,dc=corp,dc=test\nchangetype: delete\n\n");
    }
    slapd.apply(&gone);
    let failed = d.metric("causeway_directory_imports_total", r#"result="failed""#).await;
    let deadline = Instant::now() + T;
    while d.metric("causeway_directory_imports_total", r#"result="failed""#).await <= failed {
        assert!(Instant::now() < deadline, "the empty import was not refused:\n{}", d.log());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(d.log().contains("found nobody"), "{}", d.log());
    assert_eq!(shown_as(&d, &mut hook, "alice", "after the purge").await, ("Alice Pleasance Liddell".to_string(), json!("alice")));
    d.terminate();
}

#[tokio::test]
async fn ldap_problems_are_named() {
    let slapd = Slapd::start();
    let hook = "http://127.0.0.1:9/hook";
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: String| {
        let p = dir.path().join(name);
        let text = text.replace("{port}", "8080").replace("{db}", &dir.path().join("c.db").display().to_string());
        std::fs::write(&p, text).unwrap();
        p
    };

    // A wrong password.
    let wrong = write("wrong.yaml", config(&slapd, hook, "").replace("password: causeway-pw", "password: nope"));
    let (out, _) = people_cli(&wrong);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refused the bind as cn=causeway"), "{err}");
    assert!(!err.contains("nope"), "the password must not be shown: {err}");

    // The server's certificate not trusted (no ca_file, not in the system's store).
    let untrusted = write("untrusted.yaml", config(&slapd, hook, "").replace(&format!("    ca_file: \"{}\"\n", slapd.ca().display()), ""));
    let (out, _) = people_cli(&untrusted);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the LDAP server") && err.to_lowercase().contains("certificate"), "{err}");

    // Nobody listening.
    let mut text = config(&slapd, hook, "    timeout: 3s\n");
    text = text.replace(&format!("127.0.0.1:{}", slapd.port), &format!("127.0.0.1:{}", free_port()));
    let (out, _) = people_cli(&write("closed.yaml", text));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the LDAP server"), "{}", String::from_utf8_lossy(&out.stderr));

    // A filter that matches too much for max_people.
    let mut many = String::new();
    for i in 0..5 {
        let _ = write!(many, "{}", person(&format!("m{i}"), "M", ""));
    }
    slapd.apply(&many);
    let (out, _) = people_cli(&write("many.yaml", config(&slapd, hook, "    max_people: 3\n")));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("more than max_people (3)"), "{}", String::from_utf8_lossy(&out.stderr));

    // Options that cannot work are refused before anything starts.
    let bad = write(
        "bad.yaml",
        config(&slapd, hook, "").replace("ldap://127.0.0.1", "ldap://ldap.corp.example").replace("starttls: true", "starttls: false")
            + "    filter: uid=*\n",
    );
    let out = Command::new(env!("CARGO_BIN_EXE_causeway")).args(["check", "--config"]).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("directory.ldap.url: the password and the directory would cross the network in the clear"), "{err}");
    assert!(err.contains("directory.ldap.filter"), "{err}");
}

/// The console imports on demand: the last import and what it left out
/// are shown, a new entry is there after the import, and a directory
/// server that is away fails the import without losing anyone.
#[tokio::test]
async fn the_console_imports_from_ldap_on_demand() {
    let slapd = Slapd::start();
    slapd.apply(&directory());
    let hook = Hook::start(Mode::Accept { own_ids: None }).await;
    let admin_port = free_port();
    let (token, hash) = causeway::admin::auth::new_token();
    let admin = format!("admin:\n  listen: \"127.0.0.1:{admin_port}\"\n  tokens: [{{ name: it, sha256: \"{hash}\" }}]\n");
    let config = format!("{}\n{admin}", config(&slapd, &hook.url(), "").replace("refresh: 1s", "refresh: 1h"));
    let mut d = Daemon::start(&config).await;
    let api = |path: &str| format!("http://127.0.0.1:{admin_port}/admin/api{path}");
    let http = reqwest::Client::new();
    let people = || async {
        let v: Value = http.get(api("/people")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
        v
    };
    let before = people().await;
    assert!(before["ldap"]["imported_ms"].as_i64().is_some(), "{before}");
    let left_out: Vec<&str> = before["ldap"]["left_out"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    assert!(left_out.iter().any(|l| l.contains("carol: a person with this id is configured already")), "{left_out:?}");
    let count = before["people"].as_array().unwrap().len();

    slapd.apply(&person("frank", "Frank", "displayName: Frank Fresh\n"));
    let r = http.post(api("/people/import")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let done: Value = r.json().await.unwrap();
    assert_eq!(done["people"], count + 1, "{done}");
    let after = people().await;
    assert!(after["people"].as_array().unwrap().iter().any(|p| p["id"] == "frank" && p["name"] == "Frank Fresh"), "{after}");

    slapd.down();
    let r = http.post(api("/people/import")).bearer_auth(&token).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(people().await["people"].as_array().unwrap().len(), count + 1, "nobody lost");
    let audit: Value = http.get(api("/audit")).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    let imports = audit["entries"].as_array().unwrap().iter().filter(|e| e["action"] == "people.import").count();
    assert_eq!(imports, 2);
    slapd.up();
    d.terminate();
}
