//! Broadcasts: one announcement that reaches every person or every room,
//! whatever network they are on (docs/broadcast.md).
//!
//! A broadcast is asked for (the admin API, `causeway broadcast`, or
//! `!broadcast` in a room) and kept in the store; the daemon plans it: it
//! chooses each person's network, and commits, in one transaction, the
//! announcement as an archived event of a portal of its own
//! (`broadcast:<id>`), one outbox delivery per recipient, and the list of
//! recipients. Rooms get it as a notice through their lanes; people get it
//! as a direct message from the bridge's own account through one lane per
//! bridge ([`PEOPLE_ROOM`]), paced by `broadcast.rate`. A recipient's state is
//! its delivery's: in the outbox (pending or failed), or gone (delivered).

use std::collections::BTreeMap;

use causeway_core::{Attachment, Text};
use serde::{Deserialize, Serialize};

pub mod cli;
pub mod plan;
pub mod planner;

use crate::person::PersonConfig;

/// `broadcast:` in the config.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastConfig {
    /// Who may broadcast from a room (`!broadcast …`), and to what. The
    /// admin API and the command line may always.
    #[serde(default)]
    pub senders: Vec<SenderRule>,
    /// The networks a person is reached on, first choice first: bridge
    /// types or bridge names (a person's `broadcast_via` comes first).
    #[serde(default = "default_order")]
    pub order: Vec<String>,
    /// Deliveries to people per second, per bridge name or type (the
    /// defaults keep within a homeserver's and a mail server's limits).
    #[serde(default)]
    pub rate: BTreeMap<String, f64>,
    /// Most recipients of one broadcast.
    #[serde(default = "default_max_recipients")]
    pub max_recipients: usize,
}

impl Default for BroadcastConfig {
    fn default() -> Self {
        BroadcastConfig { senders: Vec::new(), order: default_order(), rate: BTreeMap::new(), max_recipients: default_max_recipients() }
    }
}

fn default_order() -> Vec<String> {
    ["xmpp", "matrix", "email", "webhook"].map(String::from).to_vec()
}

fn default_max_recipients() -> usize {
    100_000
}

/// Deliveries per second to people on a network of this type, unless
/// `broadcast.rate` says otherwise.
fn default_rate(kind: &str) -> f64 {
    match kind {
        "matrix" => 10.0,
        "email" => 5.0,
        "xmpp" => 50.0,
        _ => 50.0,
    }
}

/// People (by id, or by group) who may broadcast to some targets.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SenderRule {
    #[serde(default)]
    pub people: Vec<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// What they may broadcast to: targets as `--to` writes them, where
    /// `portal:*` and `group:*` stand for any; empty: anything.
    #[serde(default)]
    pub to: Vec<String>,
}

impl BroadcastConfig {
    /// Deliveries per second to people through `bridge` (of type `kind`).
    pub fn rate_of(&self, bridge: &str, kind: &str) -> f64 {
        self.rate.get(bridge).or_else(|| self.rate.get(kind)).copied().unwrap_or_else(|| default_rate(kind))
    }

    /// Whether `person` may broadcast to every one of `targets`.
    pub fn may_send(&self, person: &PersonConfig, targets: &[Target]) -> bool {
        let allowed: Vec<&SenderRule> = self
            .senders
            .iter()
            .filter(|r| r.people.iter().any(|p| p.eq_ignore_ascii_case(&person.id)) || r.groups.iter().any(|g| person.in_group(g)))
            .collect();
        targets.iter().all(|t| allowed.iter().any(|r| r.to.is_empty() || r.to.iter().any(|pattern| t.within(pattern))))
    }

    /// Everything wrong, each at its path under `broadcast`.
    pub fn check(&self, bridges: &[String]) -> Vec<(String, String)> {
        let mut errors = Vec::new();
        for (i, r) in self.senders.iter().enumerate() {
            if r.people.is_empty() && r.groups.is_empty() {
                errors.push((format!("broadcast.senders[{i}]"), "names nobody: give `people` or `groups`".into()));
            }
            for (j, t) in r.to.iter().enumerate() {
                let pattern = t.replace('*', "x");
                if let Err(e) = pattern.parse::<Target>() {
                    errors.push((format!("broadcast.senders[{i}].to[{j}]"), e));
                }
            }
        }
        for (name, rate) in &self.rate {
            if !(rate.is_finite() && *rate > 0.0) {
                errors.push((format!("broadcast.rate.{name}"), "must be a number of deliveries per second above zero".into()));
            }
        }
        for (i, o) in self.order.iter().enumerate() {
            let kinds = ["xmpp", "matrix", "email", "webhook"];
            if !kinds.contains(&o.as_str()) && !bridges.contains(o) {
                errors.push((format!("broadcast.order[{i}]"), format!("{o:?} is neither a bridge type nor a bridge")));
            }
        }
        if self.max_recipients == 0 {
            errors.push(("broadcast.max_recipients".into(), "must be at least 1".into()));
        }
        errors
    }
}

/// Whom a broadcast is for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Target {
    /// Everyone in the directory, each on their network.
    All,
    /// Every room of every portal.
    Portals,
    /// Every room of one portal.
    Portal(String),
    /// These people of the directory.
    People(Vec<String>),
    /// The people of a group.
    Group(String),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let s = s.trim();
        let shown = shown(s);
        let named = |what: &str, v: &str| {
            let v = v.trim();
            if v.is_empty() { Err(format!("{what} needs a name: {shown}")) } else { Ok(v.to_string()) }
        };
        match s.split_once(':') {
            None if s == "all" => Ok(Target::All),
            None if s == "portals" => Ok(Target::Portals),
            Some(("portal", id)) => Ok(Target::Portal(named("portal:", id)?)),
            Some(("group", g)) => Ok(Target::Group(named("group:", g)?)),
            Some(("people", ids)) => {
                let ids: Vec<String> = ids.split(',').map(str::trim).filter(|i| !i.is_empty()).map(String::from).collect();
                if ids.is_empty() { Err(format!("people: needs person ids: {shown}")) } else { Ok(Target::People(ids)) }
            }
            _ => Err(format!("{shown} is not a target: all, portals, portal:ID, people:ID,ID or group:NAME")),
        }
    }
}

/// What was written, quoted (control and odd characters escaped), and cut
/// short where long: error messages answer in rooms, and must not echo a
/// whole message back.
fn shown(s: &str) -> String {
    const MOST: usize = 80;
    let mut out = String::from('"');
    for c in s.chars() {
        let escaped: String = if c == '\'' { c.to_string() } else { c.escape_debug().collect() };
        if out.len() + escaped.len() > MOST {
            out.push_str("\"…");
            return out;
        }
        out.push_str(&escaped);
    }
    out.push('"');
    out
}

impl TryFrom<String> for Target {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        s.parse()
    }
}

impl From<Target> for String {
    fn from(t: Target) -> String {
        t.to_string()
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::All => f.write_str("all"),
            Target::Portals => f.write_str("portals"),
            Target::Portal(id) => write!(f, "portal:{id}"),
            Target::People(ids) => write!(f, "people:{}", ids.join(",")),
            Target::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl Target {
    /// Whether a sender rule's `pattern` covers this target.
    fn within(&self, pattern: &str) -> bool {
        let pattern = pattern.trim();
        match (self, pattern.split_once(':')) {
            (Target::All, None) => pattern == "all",
            (Target::Portals, None) => pattern == "portals",
            (Target::Portal(id), Some(("portal", p))) => p == "*" || p == id,
            (Target::Group(g), Some(("group", p))) => p == "*" || p.eq_ignore_ascii_case(g),
            (Target::People(ids), Some(("people", p))) => {
                p == "*" || ids.iter().all(|id| p.split(',').any(|q| q.trim().eq_ignore_ascii_case(id)))
            }
            (Target::People(_), None) => pattern == "people",
            _ => false,
        }
    }
}

/// What was asked for, as kept until it is planned.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Request {
    pub to: Vec<Target>,
    /// The announcement; `html` is sanitized when it is asked for.
    pub text: Text,
    #[serde(default)]
    pub attachments: Vec<Attachment>,
    /// Whom it is from, as the rooms show it.
    pub from_name: String,
    /// The directory's person who sent it (from a room).
    #[serde(default)]
    pub from_person: Option<String>,
}

/// Longest announcement text, in bytes.
pub const MAX_TEXT_BYTES: usize = 32 * 1024;

impl Request {
    /// A request from the outside (the API, the command line), checked.
    pub fn new(to: Vec<Target>, plain: &str, html: Option<&str>, attachments: Vec<Attachment>, from_name: &str) -> Result<Request, String> {
        if to.is_empty() {
            return Err("say whom it is for (--to / `to`)".into());
        }
        let html = html.map(causeway_core::text::sanitize_html).filter(|h| !h.trim().is_empty());
        let plain = match (plain.trim().is_empty(), &html) {
            (true, Some(h)) => causeway_core::text::html_to_plain(h),
            _ => plain.to_string(),
        };
        if plain.trim().is_empty() {
            return Err("the announcement has no text".into());
        }
        if plain.len() > MAX_TEXT_BYTES || html.as_ref().is_some_and(|h| h.len() > 2 * MAX_TEXT_BYTES) {
            return Err(format!("the announcement is longer than {MAX_TEXT_BYTES} bytes"));
        }
        for a in &attachments {
            if !(a.url.starts_with("https://") || a.url.starts_with("http://")) {
                return Err(format!("attachment {:?} is not an http(s) URL", a.url));
            }
        }
        let from_name: String = from_name.chars().filter(|c| !c.is_control()).take(100).collect();
        Ok(Request {
            to,
            text: Text { plain, html },
            attachments,
            from_name: if from_name.trim().is_empty() { "Causeway".into() } else { from_name },
            from_person: None,
        })
    }
}

/// A broadcast as the store keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Requested {
    pub id: String,
    pub requested_ms: i64,
    /// Who asked: `cli`, `admin:<token name>`, or `person:<id>`.
    pub requested_by: String,
    pub request: Request,
}

impl Requested {
    pub fn new(requested_by: &str, request: Request) -> Self {
        Requested {
            id: format!("b-{}", causeway_core::new_id()),
            requested_ms: causeway_core::now_ms(),
            requested_by: requested_by.to_string(),
            request,
        }
    }

    /// The portal its event is archived in.
    pub fn portal(&self) -> String {
        format!("broadcast:{}", self.id)
    }
}

/// One recipient as planned: a room of a portal, or a person on a network
/// (`room` is [`PEOPLE_ROOM`] and `account` their account there); no
/// delivery when they cannot be reached, with why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlannedRecipient {
    pub person: Option<String>,
    pub bridge: Option<String>,
    pub room: Option<String>,
    pub account: Option<String>,
    pub delivery_id: Option<String>,
    pub note: Option<String>,
}

/// A planned broadcast: its event and recipients.
#[derive(Clone, Debug)]
pub struct Planned {
    pub id: String,
    pub event_id: String,
    pub recipients: Vec<PlannedRecipient>,
}

/// How a broadcast's recipients stand.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub total: u64,
    pub delivered: u64,
    pub pending: u64,
    pub failed: u64,
    pub unreachable: u64,
}

impl Counts {
    /// Nothing waits any more.
    pub fn done(&self) -> bool {
        self.pending == 0
    }
}

/// A broadcast with its counts.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    #[serde(flatten)]
    pub requested: Requested,
    pub event_id: Option<String>,
    pub planned_ms: Option<i64>,
    /// Why it was not sent.
    pub error: Option<String>,
    pub counts: Counts,
}

impl Summary {
    pub fn state(&self) -> &'static str {
        match (&self.error, &self.event_id) {
            (Some(_), _) => "refused",
            (None, None) => "waiting",
            (None, Some(_)) if self.counts.done() => "done",
            (None, Some(_)) => "sending",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientState {
    Delivered,
    Pending,
    Failed,
    Unreachable,
}

impl RecipientState {
    pub fn name(self) -> &'static str {
        match self {
            RecipientState::Delivered => "delivered",
            RecipientState::Pending => "pending",
            RecipientState::Failed => "failed",
            RecipientState::Unreachable => "unreachable",
        }
    }
}

/// One recipient and where its delivery stands.
#[derive(Clone, Debug, Serialize)]
pub struct RecipientStatus {
    pub person: Option<String>,
    pub bridge: Option<String>,
    pub room: Option<String>,
    pub account: Option<String>,
    pub delivery_id: Option<String>,
    pub state: RecipientState,
    pub attempts: u32,
    pub error: Option<String>,
}

/// `!broadcast` written in a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// To these targets (all, when none is named), this text.
    Send(Vec<Target>, String),
    /// Not understood: the answer says how it is written.
    Invalid(String),
}

const USAGE: &str = "Write `!broadcast [--to TARGET]… TEXT`, where TARGET is all, portals, portal:ID, people:ID,ID or group:NAME.";

/// The broadcast command a message is, if it is one: a message (not a
/// notice) whose text starts with `!broadcast`.
pub fn command(body: &causeway_core::Body) -> Option<Command> {
    let rest = body.command("!broadcast")?;
    let mut rest = rest.trim_start();
    let mut to = Vec::new();
    while let Some(after) = rest.strip_prefix("--to").filter(|a| a.starts_with(char::is_whitespace) || a.starts_with('=')) {
        let after = after.strip_prefix('=').unwrap_or(after).trim_start();
        let end = after.find(char::is_whitespace).unwrap_or(after.len());
        match after[..end].parse::<Target>() {
            Ok(t) => to.push(t),
            Err(e) => return Some(Command::Invalid(format!("{e}. {USAGE}"))),
        }
        rest = after[end..].trim_start();
    }
    if rest.trim().is_empty() {
        return Some(Command::Invalid(USAGE.into()));
    }
    if to.is_empty() {
        to.push(Target::All);
    }
    Some(Command::Send(to, rest.trim_end().to_string()))
}

/// The fuzz target `broadcast_command` (fuzz/): whatever a room sends, the
/// command read from it keeps its promises: a command only from a message
/// that starts with the word, targets that read back as written, answers of
/// bounded length, and a request made of it or refused with a reason.
pub fn fuzz_command(input: &str) {
    use causeway_core::{Body, MessageKind};
    if let Ok(t) = input.parse::<Target>() {
        assert_eq!(t.to_string().parse::<Target>().as_ref(), Ok(&t), "{input:?}");
    }
    let body = Body::text(input);
    let rest = input.trim_start().strip_prefix("!broadcast");
    let is_command = rest.is_some_and(|r| r.is_empty() || r.starts_with(char::is_whitespace));
    match command(&body) {
        None => assert!(!is_command, "{input:?} was not read as a command"),
        Some(Command::Invalid(answer)) => {
            assert!(is_command);
            assert!(answer.len() < USAGE.len() + 400, "an answer of {} bytes", answer.len());
        }
        Some(Command::Send(to, text)) => {
            assert!(is_command && !to.is_empty() && !text.trim().is_empty());
            assert!(input.contains(text.as_str()));
            for t in &to {
                assert_eq!(t.to_string().parse::<Target>().as_ref(), Ok(t), "{input:?}");
            }
            match Request::new(to, &text, None, Vec::new(), "fuzz") {
                Ok(r) => assert!(r.text.plain.len() <= MAX_TEXT_BYTES && r.text.html.is_none()),
                Err(e) => assert!(text.len() > MAX_TEXT_BYTES, "{e}"),
            }
        }
    }
    assert_eq!(command(&Body::message(Text::plain(input), MessageKind::Notice)), None, "a notice is never a command");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_read_back_and_bad_ones_say_what_is_wrong() {
        for t in ["all", "portals", "portal:ops", "people:alice,bob", "group:it"] {
            assert_eq!(t.parse::<Target>().unwrap().to_string(), t);
        }
        assert_eq!("people: alice , ,bob".parse::<Target>(), Ok(Target::People(vec!["alice".into(), "bob".into()])));
        for bad in ["", "everyone", "portal:", "people:", "people:,", "group: ", "room:x"] {
            assert!(bad.parse::<Target>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn requests_want_text_and_whom_and_clean_their_html() {
        let to = vec![Target::All];
        assert!(Request::new(Vec::new(), "x", None, Vec::new(), "IT").is_err());
        assert!(Request::new(to.clone(), "  ", None, Vec::new(), "IT").is_err());
        assert!(Request::new(to.clone(), &"x".repeat(MAX_TEXT_BYTES + 1), None, Vec::new(), "IT").is_err());
        let r = Request::new(to.clone(), "", Some("<b>Fire drill</b><script>alert(1)</script>"), Vec::new(), "\u{7}").unwrap();
        assert_eq!(r.text.plain.trim(), "Fire drill");
        assert!(!r.text.html.as_deref().unwrap().contains("script"));
        assert_eq!(r.from_name, "Causeway");
        let file = Attachment { url: "file:///etc/passwd".into(), name: None, mime: None, size: None };
        assert!(Request::new(to, "x", None, vec![file], "IT").unwrap_err().contains("not an http"));
    }

    #[test]
    fn commands_are_messages_that_start_with_the_word() {
        use causeway_core::{Body, MessageKind};
        let msg = |t: &str, kind| Body::message(Text::plain(t), kind);
        let c = |t: &str| command(&msg(t, MessageKind::Text));
        assert_eq!(c("!broadcast Fire drill at 3\nBe there"), Some(Command::Send(vec![Target::All], "Fire drill at 3\nBe there".into())));
        assert_eq!(
            c("  !broadcast --to portals --to group:it  Hi"),
            Some(Command::Send(vec![Target::Portals, Target::Group("it".into())], "Hi".into()))
        );
        assert!(matches!(c("!broadcast"), Some(Command::Invalid(_))));
        assert!(matches!(c("!broadcast --to nowhere hi"), Some(Command::Invalid(m)) if m.contains("not a target")));
        assert!(matches!(c("!broadcast --to all"), Some(Command::Invalid(_))));
        assert_eq!(
            c("!broadcast --to=people:ann,bob\tHi"),
            Some(Command::Send(vec![Target::People(vec!["ann".into(), "bob".into()])], "Hi".into()))
        );
        assert_eq!(c("!broadcast --toast is ready"), Some(Command::Send(vec![Target::All], "--toast is ready".into())));
        // Hostile: what is echoed back is cut short; odd characters are
        // quoted, not interpreted.
        let long = format!("!broadcast --to {} hi", "é".repeat(10_000));
        assert!(matches!(c(&long), Some(Command::Invalid(m)) if m.len() < 600 && m.contains('…')));
        let controls = format!("!broadcast --to x{} hi", "\u{1e}".repeat(100));
        assert!(matches!(c(&controls), Some(Command::Invalid(m)) if m.len() < USAGE.len() + 200 && m.contains("\\u{1e}")));
        assert!(matches!(c("!broadcast --to portal: hi"), Some(Command::Invalid(m)) if m.contains("needs a name")));
        assert!(matches!(c("!broadcast --to people:,, hi"), Some(Command::Invalid(m)) if m.contains("needs person ids")));
        assert!(matches!(c("!broadcast --to \u{202e}lla hi"), Some(Command::Invalid(m)) if m.contains("\\u{202e}")));
        assert!(matches!(c("!broadcast --to all --to"), Some(Command::Send(t, m)) if t == vec![Target::All] && m == "--to"));
        for input in [
            "!broadcast \0",
            "!broadcast --to=",
            "!broadcast --to= --to=all x",
            "\u{3000}!broadcast\u{3000}x",
            "!broadcast --to portal:a:b c",
        ] {
            fuzz_command(input);
        }
        assert_eq!(c("!broadcasting is fun"), None);
        assert_eq!(c("say !broadcast"), None);
        assert_eq!(command(&msg("!broadcast hi", MessageKind::Notice)), None);
        assert_eq!(command(&Body::Typing { active: true }), None);
    }

    #[test]
    fn senders_may_broadcast_only_to_what_their_rules_name() {
        let yaml = "senders:\n  - people: [alice]\n  - groups: [comms]\n    to: [portal:*, 'group:staff']\n";
        let config: BroadcastConfig = serde_saphyr::from_str(yaml).unwrap();
        assert!(config.check(&[]).is_empty());
        let alice = PersonConfig::for_tests("alice", &[], &[]);
        let carol = PersonConfig::for_tests("carol", &[], &["Comms"]);
        let mallory = PersonConfig::for_tests("mallory", &[], &["staff"]);
        let t = |s: &str| vec![s.parse::<Target>().unwrap()];
        assert!(config.may_send(&alice, &t("all")));
        assert!(config.may_send(&carol, &t("portal:ops")) && config.may_send(&carol, &t("group:STAFF")));
        assert!(!config.may_send(&carol, &t("all")) && !config.may_send(&carol, &t("group:board")));
        assert!(!config.may_send(&mallory, &t("portal:ops")));
        let bad: BroadcastConfig = serde_saphyr::from_str("senders: [{to: [everyone]}]\nrate: {matrix: 0}\norder: [pigeon]\n").unwrap();
        let paths: Vec<String> = bad.check(&["mx".into()]).into_iter().map(|(p, _)| p).collect();
        assert_eq!(paths, ["broadcast.senders[0]", "broadcast.senders[0].to[0]", "broadcast.rate.matrix", "broadcast.order[0]"]);
        assert_eq!(config.rate_of("mx", "matrix"), 10.0);
    }
}
