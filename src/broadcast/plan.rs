//! Whom a broadcast reaches: the receiving rooms of the portals it names,
//! and each person it names once, on the first of their networks that
//! reaches people.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use causeway_core::PEOPLE_ROOM;

use super::{BroadcastConfig, PlannedRecipient, Request, Target};
use crate::directory::Directory;
use crate::person::PersonConfig;
use crate::topology::{Link, Portal, PortalKind};

/// What planning needs to know of the running bridges: those that reach
/// people, by name, with their type.
pub type PeopleBridges = BTreeMap<String, &'static str>;

/// Choose the recipients of `request`: the receiving rooms of the portals
/// it names (`receives` says which rooms show a notice), and each person
/// once, on the first of their networks that reaches people. An error
/// names what cannot be sent to (an unknown portal, person or group).
pub fn plan(
    request: &Request,
    config: &BroadcastConfig,
    directory: &Directory,
    portals: &[Arc<Portal>],
    people_bridges: &PeopleBridges,
    receives: impl Fn(&Link) -> bool,
) -> Result<Vec<PlannedRecipient>, String> {
    let mut rooms: Vec<Link> = Vec::new();
    let mut ids: Vec<String> = Vec::new();
    let mut seen_people = HashSet::new();
    let mut add = |p: &PersonConfig| {
        if seen_people.insert(p.id.clone()) {
            ids.push(p.id.clone());
        }
    };
    let conversation = |p: &&Arc<Portal>| matches!(p.kind, PortalKind::Configured | PortalKind::Console);
    for t in &request.to {
        match t {
            Target::All => directory.people().iter().for_each(&mut add),
            Target::Portals => rooms.extend(portals.iter().filter(conversation).flat_map(|p| p.links.iter().cloned())),
            Target::Portal(id) => {
                let p = portals.iter().filter(conversation).find(|p| p.id == *id).ok_or_else(|| format!("no portal {id:?}"))?;
                rooms.extend(p.links.iter().cloned());
            }
            Target::People(list) => {
                for id in list {
                    add(directory.person(id).ok_or_else(|| format!("nobody called {id:?} in the directory"))?);
                }
            }
            Target::Group(g) => {
                let members: Vec<&PersonConfig> = directory.people().iter().filter(|p| p.in_group(g)).collect();
                if members.is_empty() {
                    return Err(format!("nobody is in group {g:?}"));
                }
                members.into_iter().for_each(&mut add);
            }
        }
    }
    let people: Vec<&PersonConfig> = ids.iter().filter_map(|id| directory.person(id)).collect();
    let mut seen_rooms = HashSet::new();
    rooms.retain(|l| seen_rooms.insert(l.clone()) && receives(l));
    let total = rooms.len() + people.len();
    if total == 0 {
        return Err("it reaches nobody: no such people or rooms".into());
    }
    if total > config.max_recipients {
        return Err(format!("{total} recipients, more than broadcast.max_recipients ({})", config.max_recipients));
    }
    let mut out: Vec<PlannedRecipient> = rooms
        .into_iter()
        .map(|l| PlannedRecipient {
            person: None,
            bridge: Some(l.bridge),
            room: Some(l.room),
            account: None,
            delivery_id: Some(causeway_core::new_id()),
            note: None,
        })
        .collect();
    for p in people {
        out.push(match network_of(p, config, people_bridges) {
            Some((bridge, account)) => PlannedRecipient {
                person: Some(p.id.clone()),
                bridge: Some(bridge),
                room: Some(PEOPLE_ROOM.to_string()),
                account: Some(account),
                delivery_id: Some(causeway_core::new_id()),
                note: None,
            },
            None => {
                let has: Vec<&str> = p.accounts.keys().map(String::as_str).collect();
                let note = if has.is_empty() {
                    "no account on any network".to_string()
                } else {
                    format!("no account on a network that takes broadcasts (has: {})", has.join(", "))
                };
                PlannedRecipient {
                    person: Some(p.id.clone()),
                    bridge: None,
                    room: None,
                    account: None,
                    delivery_id: None,
                    note: Some(note),
                }
            }
        });
    }
    Ok(out)
}

/// The bridge and account a person is reached on: their own
/// `broadcast_via` first, then `broadcast.order` (a type stands for its
/// bridges in name order).
fn network_of(p: &PersonConfig, config: &BroadcastConfig, people_bridges: &PeopleBridges) -> Option<(String, String)> {
    let choices = p.broadcast_via.iter().chain(&config.order);
    for choice in choices {
        let matching = people_bridges.iter().filter(|(name, kind)| *name == choice || **kind == choice.as_str());
        for (name, _) in matching {
            if let Some(account) = p.accounts.get(name) {
                return Some((name.clone(), account.clone()));
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A planned recipient: person, bridge, account or room, whether it has a delivery.
    type Row<'a> = (Option<&'a str>, Option<&'a str>, Option<&'a str>, bool);

    fn request(to: &[&str]) -> Request {
        Request::new(to.iter().map(|t| t.parse().unwrap()).collect(), "Hello", None, Vec::new(), "IT").unwrap()
    }

    #[test]
    fn each_person_is_planned_once_on_their_first_network_that_reaches_people() {
        let mut carol = PersonConfig::for_tests("carol", &[("mail", "carol@corp"), ("chat", "carol@x")], &[]);
        carol.broadcast_via = vec!["mail".into()];
        let d = Directory::new(&[
            PersonConfig::for_tests("alice", &[("chat", "alice@x"), ("mx", "@alice:m")], &["it"]),
            PersonConfig::for_tests("bob", &[("mx", "@bob:m"), ("mail", "bob@corp")], &["it"]),
            carol,
            PersonConfig::for_tests("dave", &[("hooks", "dave")], &[]),
            PersonConfig::for_tests("erin", &[], &[]),
        ]);
        let bridges: PeopleBridges =
            [("chat", "xmpp"), ("mx", "matrix"), ("mail", "email")].into_iter().map(|(n, k)| (n.to_string(), k)).collect();
        let config = BroadcastConfig::default();
        let portal = Arc::new(Portal {
            id: "ops".into(),
            kind: PortalKind::Configured,
            links: vec![Link::new("chat", "ops@muc"), Link::new("hooks", "in-only")],
            degrade: Default::default(),
        });
        let dm = Arc::new(Portal {
            id: "dm-1".into(),
            kind: PortalKind::Direct,
            links: vec![Link::new("chat", "direct:x|y")],
            degrade: Default::default(),
        });
        let portals = [portal, dm];
        let receives = |l: &Link| l.room != "in-only";
        let planned = plan(&request(&["all", "people:bob", "portals"]), &config, &d, &portals, &bridges, receives).unwrap();
        let got: Vec<Row> = planned
            .iter()
            .map(|r| (r.person.as_deref(), r.bridge.as_deref(), r.account.as_deref().or(r.room.as_deref()), r.delivery_id.is_some()))
            .collect();
        assert_eq!(
            got,
            [
                (None, Some("chat"), Some("ops@muc"), true),
                (Some("alice"), Some("chat"), Some("alice@x"), true),
                (Some("bob"), Some("mx"), Some("@bob:m"), true),
                (Some("carol"), Some("mail"), Some("carol@corp"), true),
                (Some("dave"), None, None, false),
                (Some("erin"), None, None, false),
            ]
        );
        assert!(planned[4].note.as_deref().unwrap().contains("has: hooks"));
        assert!(planned.iter().filter_map(|r| r.delivery_id.as_ref()).collect::<HashSet<_>>().len() == 4);
        // Groups, and what cannot be sent to.
        let it = plan(&request(&["group:IT"]), &config, &d, &portals, &bridges, receives).unwrap();
        assert_eq!(it.iter().map(|r| r.person.as_deref().unwrap()).collect::<Vec<_>>(), ["alice", "bob"]);
        for (to, why) in [("group:ops", "nobody is in group"), ("people:zed", "nobody called"), ("portal:dm-1", "no portal")] {
            assert!(plan(&request(&[to]), &config, &d, &portals, &bridges, receives).unwrap_err().contains(why), "{to}");
        }
        let small = BroadcastConfig { max_recipients: 2, ..BroadcastConfig::default() };
        assert!(plan(&request(&["all"]), &small, &d, &portals, &bridges, receives).unwrap_err().contains("max_recipients"));
    }
}
