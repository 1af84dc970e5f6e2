//! People: who a network's sender is, across networks.

use std::collections::HashMap;

use causeway_core::{RemoteSender, Sender};

use crate::config::PersonConfig;

pub struct Directory {
    people: Vec<PersonConfig>,
    /// (bridge, native id) → index into `people`.
    by_account: HashMap<(String, String), usize>,
}

impl Directory {
    pub fn new(people: &[PersonConfig]) -> Self {
        let mut by_account = HashMap::new();
        for (i, p) in people.iter().enumerate() {
            for (bridge, id) in &p.accounts {
                by_account.insert((bridge.clone(), id.clone()), i);
            }
        }
        Directory { people: people.to_vec(), by_account }
    }

    /// The person with this id; ghost addresses may have lowercased it.
    pub fn person(&self, id: &str) -> Option<&PersonConfig> {
        self.people.iter().find(|p| p.id == id).or_else(|| self.people.iter().find(|p| p.id.eq_ignore_ascii_case(id)))
    }

    /// The person an account on `bridge` belongs to.
    pub fn person_of(&self, bridge: &str, id: &str) -> Option<&PersonConfig> {
        self.by_account.get(&(bridge.to_string(), id.to_string())).map(|&i| &self.people[i])
    }

    /// The sender as every network should show them: the person's name when
    /// they are in the directory, else the network's display name, else the id.
    pub fn resolve(&self, bridge: &str, sender: RemoteSender) -> Sender {
        match self.by_account.get(&(bridge.to_string(), sender.id.clone())).map(|&i| &self.people[i]) {
            Some(p) => Sender {
                id: sender.id,
                person: Some(p.id.clone()),
                name: p.name.clone(),
                avatar: p.avatar.clone().or(sender.avatar),
            },
            None => Sender {
                name: sender.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| sender.id.clone()),
                id: sender.id,
                person: None,
                avatar: sender.avatar,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_people_get_their_directory_name() {
        let alice = PersonConfig {
            id: "alice".into(),
            name: "Alice Liddell".into(),
            avatar: None,
            accounts: [("xmpp".to_string(), "alice@corp".to_string())].into(),
        };
        let d = Directory::new(&[alice]);
        let s = d.resolve("xmpp", RemoteSender { id: "alice@corp".into(), name: Some("al".into()), avatar: None });
        assert_eq!((s.person.as_deref(), s.name.as_str()), (Some("alice"), "Alice Liddell"));
        let s = d.resolve("matrix", RemoteSender { id: "alice@corp".into(), name: Some(" ".into()), avatar: None });
        assert_eq!((s.person, s.name.as_str()), (None, "alice@corp"));
    }
}
