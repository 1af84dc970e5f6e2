//! A person's presence across networks: each of their accounts reports its
//! own; what every other network shows is the most available of them (with
//! its status), and "away" once they have been idle for a while.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use causeway_core::Show;
use serde::Serialize;

use crate::topology::Link;

/// Presence as shown: how available, and the status text.
pub type Shown = (Show, Option<String>);

/// The status shown while idle.
pub const IDLE_STATUS: &str = "idle";

#[derive(Clone, Debug, Serialize)]
pub struct Reported {
    pub show: Show,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub at_ms: i64,
}

#[derive(Default)]
struct Person {
    /// Bridge → what the person's account there said last.
    accounts: BTreeMap<String, Reported>,
    /// What the other networks were last told.
    shown: Option<Shown>,
    last_active_ms: i64,
    /// Where they spoke last (where an idle notice is said to come from).
    last_seen: Option<(Link, String)>,
    idle: bool,
}

impl Person {
    /// The most available account's presence (the latest among equals);
    /// away while idle.
    fn aggregate(&self) -> Option<Shown> {
        let best = self.accounts.values().min_by(|a, b| a.show.cmp(&b.show).then(b.at_ms.cmp(&a.at_ms)))?;
        if self.idle && best.show == Show::Online {
            return Some((Show::Away, Some(IDLE_STATUS.into())));
        }
        Some((best.show, best.status.clone()))
    }

    /// The aggregate, if other networks have not been told it yet.
    fn changed(&mut self) -> Option<Shown> {
        let now = self.aggregate()?;
        if self.shown.as_ref() == Some(&now) {
            return None;
        }
        self.shown = Some(now.clone());
        Some(now)
    }
}

/// What `/api/people/{id}/presence` answers.
#[derive(Clone, Debug, Serialize)]
pub struct View {
    pub person: String,
    pub show: Show,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    pub idle: bool,
    pub accounts: BTreeMap<String, Reported>,
}

pub struct PresenceBook {
    people: Mutex<HashMap<String, Person>>,
    idle_after: Option<Duration>,
}

impl PresenceBook {
    pub fn new(idle_after: Option<Duration>) -> Self {
        PresenceBook { people: Mutex::new(HashMap::new()), idle_after }
    }

    fn people(&self) -> std::sync::MutexGuard<'_, HashMap<String, Person>> {
        self.people.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A report from `person`'s account on `bridge`; the presence to show
    /// everywhere else when it changes what they show.
    pub fn report(&self, person: &str, bridge: &str, show: Show, status: Option<String>, at_ms: i64) -> Option<Shown> {
        let mut people = self.people();
        let p = people.entry(person.to_string()).or_default();
        p.accounts.insert(bridge.to_string(), Reported { show, status, at_ms });
        if show == Show::Online {
            p.idle = false;
            p.last_active_ms = p.last_active_ms.max(at_ms);
        }
        p.changed()
    }

    /// `person` said something on `link` (as `sender_id`): no longer idle.
    /// The presence to show when that changes it.
    pub fn active(&self, person: &str, link: &Link, sender_id: &str, at_ms: i64) -> Option<Shown> {
        let mut people = self.people();
        let p = people.entry(person.to_string()).or_default();
        p.last_active_ms = p.last_active_ms.max(at_ms);
        p.last_seen = Some((link.clone(), sender_id.to_string()));
        if !p.idle {
            return None;
        }
        p.idle = false;
        p.changed()
    }

    /// People idle since `idle_after`: marked idle; where they spoke last,
    /// and the presence to show.
    pub fn idle_now(&self, now_ms: i64) -> Vec<(Link, String, Shown)> {
        let Some(after) = self.idle_after else { return Vec::new() };
        let mut out = Vec::new();
        for p in self.people().values_mut() {
            let quiet = now_ms - p.last_active_ms >= after.as_millis() as i64;
            if p.idle || !quiet || p.last_active_ms == 0 {
                continue;
            }
            let Some((link, sender)) = p.last_seen.clone() else { continue };
            p.idle = true;
            if let Some(shown) = p.changed() {
                out.push((link, sender, shown));
            }
        }
        out
    }

    pub fn view(&self, person: &str) -> Option<View> {
        let people = self.people();
        let p = people.get(person)?;
        let (show, status) = p.aggregate()?;
        Some(View { person: person.to_string(), show, status, idle: p.idle, accounts: p.accounts.clone() })
    }

    /// How often idleness is looked for.
    pub fn tick(&self) -> Option<Duration> {
        self.idle_after.map(|d| (d / 4).clamp(Duration::from_millis(200), Duration::from_secs(10)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link() -> Link {
        Link { bridge: "xmpp".into(), room: "ops@conference.x".into() }
    }

    #[test]
    fn the_most_available_account_wins_and_repeats_are_quiet() {
        let b = PresenceBook::new(None);
        assert_eq!(b.report("alice", "xmpp", Show::Away, Some("lunch".into()), 1), Some((Show::Away, Some("lunch".into()))));
        // Online on Matrix wins over away on XMPP.
        assert_eq!(b.report("alice", "matrix", Show::Online, None, 2), Some((Show::Online, None)));
        // Another away report changes nothing shown.
        assert_eq!(b.report("alice", "xmpp", Show::Xa, Some("gone".into()), 3), None);
        // Matrix goes offline: XMPP's extended away shows.
        assert_eq!(b.report("alice", "matrix", Show::Offline, None, 4), Some((Show::Xa, Some("gone".into()))));
        let v = b.view("alice").unwrap();
        assert_eq!((v.show, v.accounts.len()), (Show::Xa, 2));
        assert!(b.view("nobody").is_none());
    }

    #[test]
    fn idle_people_show_away_until_they_speak() {
        let b = PresenceBook::new(Some(Duration::from_secs(60)));
        b.report("bob", "matrix", Show::Online, None, 1_000);
        b.active("bob", &link(), "bob@x", 1_000);
        assert!(b.idle_now(30_000).is_empty(), "not idle yet");
        let idle = b.idle_now(61_000);
        assert_eq!(idle, vec![(link(), "bob@x".to_string(), (Show::Away, Some(IDLE_STATUS.to_string())))]);
        assert!(b.idle_now(200_000).is_empty(), "said once");
        assert_eq!(b.active("bob", &link(), "bob@x", 210_000), Some((Show::Online, None)));
        assert!(b.active("bob", &link(), "bob@x", 211_000).is_none());
        // Someone away anyway does not become "idle".
        b.report("carol", "mail", Show::Dnd, None, 1_000);
        b.active("carol", &link(), "c", 1_000);
        assert!(b.idle_now(100_000).iter().all(|(_, s, _)| s != "c"));
    }
}
