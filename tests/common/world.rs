//! All four networks at once: a real Prosody, Synapse, Postfix + Dovecot and
//! a webhook receiver, with Causeway joining one room of each in a portal.

use std::time::{Duration, Instant};

use super::mail::{LIST, MailServer};
use super::matrix::{Synapse, bridge_config as matrix_bridge};
use super::xmpp::Prosody;
use super::{Daemon, Hook, Mode};

pub const MUC: &str = "ops@conference.xmpp.test";
pub const ALIAS: &str = "#causeway_ops:matrix.test";

pub struct World {
    pub prosody: Prosody,
    pub synapse: Synapse,
    pub mail: MailServer,
    pub hook: Option<Hook>,
    pub daemon: Daemon,
}

/// The config of the four-network portal (`extra` is appended: more top-level sections).
pub fn config(prosody: &Prosody, synapse_port: u16, mail: &MailServer, hook: &str, extra: &str) -> String {
    format!(
        r#"
http: {{ listen: "127.0.0.1:{{port}}" }}
store: {{ path: "{{db}}" }}
outbox: {{ retry_initial: 100ms, retry_max: 2s }}
bridges:
  hooks:
    type: webhook
    endpoints:
      w: {{ inbound: {{ token: tw }}, outbound: {{ url: "{hook}" }}, events: {{ token: te }} }}
  xmpp: {xmpp}
  matrix: {matrix}
  mail: {mail}
portals:
  - id: ops
    links:
      - {{ bridge: hooks, room: w }}
      - {{ bridge: xmpp, room: "{MUC}" }}
      - {{ bridge: matrix, room: "{ALIAS}" }}
      - {{ bridge: mail, room: "{LIST}" }}
people:
  - id: alice
    name: Alice Liddell
    accounts: {{ xmpp: alice@xmpp.test }}
  - id: bob
    name: Bob Builder
    accounts: {{ matrix: "@bob:matrix.test" }}
  - id: carol
    name: Carol Danvers
    accounts: {{ mail: carol@mail.test }}
  - id: dave
    name: Dave Bowman
    accounts: {{ hooks: w }}
{extra}
"#,
        xmpp = prosody.bridge_config(),
        matrix = matrix_bridge(synapse_port),
        mail = mail.bridge_config(&format!(r#""{LIST}": {{ name: Ops, subscribers: [carol] }}"#)),
    )
}

/// A config edit for [`World::start_with`]: the list sends every message as
/// it comes, however many (the soak counts mails one by one).
pub fn without_send_limit(config: String) -> String {
    assert!(config.contains("policy: { allow: [partner.example] }"), "the mail bridge's config changed");
    config.replace(
        "policy: { allow: [partner.example] }",
        "policy: { allow: [partner.example] }, send_limit: { per_list: 1000000, per_sender: 1000000 }",
    )
}

/// A config edit for [`World::start_with`]: the list's gathered mail (edits,
/// retractions, topics: `changes: batch`) goes out every 2 s instead of
/// every 10 minutes, so a test sees it come.
pub fn gathered_quickly(config: String) -> String {
    assert!(config.contains("policy: { allow: [partner.example] }"), "the mail bridge's config changed");
    config.replace("policy: { allow: [partner.example] }", "policy: { allow: [partner.example] }, batch_every: 2s")
}

impl World {
    pub async fn start(extra: &str) -> World {
        Self::start_with(extra, |c| c, &[]).await
    }

    /// As [`World::start`], with the config changed by `edit` first and
    /// Causeway started with `env`.
    pub async fn start_with(extra: &str, edit: impl FnOnce(String) -> String, env: &[(&str, &str)]) -> World {
        let prosody = Prosody::start();
        let mail = MailServer::start();
        let hook = Hook::start(Mode::Accept { own_ids: None }).await;
        let synapse_port = super::free_port();
        let mut daemon = Daemon::prepare(&edit(config(&prosody, synapse_port, &mail, &hook.url(), extra)), env);
        let registration = daemon.dir.path().join("registration.yaml");
        let out = daemon.cli(&["matrix", "registration", "--output", registration.to_str().unwrap()]);
        assert!(out.status.success(), "registration: {}", String::from_utf8_lossy(&out.stderr));
        let synapse = Synapse::start_with(&registration, synapse_port, None);
        synapse.register("bob");
        daemon.restart().await;
        let w = World { prosody, synapse, mail, hook: Some(hook), daemon };
        w.wait_up().await;
        w
    }

    /// Until every bridge is connected and the Matrix room is set up.
    pub async fn wait_up(&self) {
        let d = &self.daemon;
        let deadline = Instant::now() + Duration::from_secs(30);
        d.wait_up(&["xmpp", "matrix", "mail"], Duration::from_secs(30)).await.unwrap_or_else(|e| panic!("{e}"));
        while !d.log().contains("every Matrix room is set up") {
            assert!(Instant::now() < deadline, "Matrix room not set up:\n{}", d.log());
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}
