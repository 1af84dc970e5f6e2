//! A person of the directory, as the config or the LDAP import gives them,
//! and the rule for person ids (both sources follow it).

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Clone, Debug, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct PersonConfig {
    pub id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub avatar: Option<String>,
    /// Bridge name → the person's id on that bridge's network.
    #[serde(default)]
    pub accounts: BTreeMap<String, String>,
    /// The groups the person is in (`broadcast.senders`, `--to group:NAME`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<String>,
    /// The bridges a broadcast reaches them on, first choice first (else
    /// `broadcast.order`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub broadcast_via: Vec<String>,
}

impl PersonConfig {
    /// Whether the person is in `group` (case-insensitive).
    pub fn in_group(&self, group: &str) -> bool {
        self.groups.iter().any(|g| g.eq_ignore_ascii_case(group))
    }

    /// A person for tests: named `id` in capitals, with these accounts
    /// (bridge, account) and groups.
    #[cfg(test)]
    pub fn for_tests(id: &str, accounts: &[(&str, &str)], groups: &[&str]) -> PersonConfig {
        PersonConfig {
            id: id.into(),
            name: id.to_uppercase(),
            avatar: None,
            accounts: accounts.iter().map(|(b, a)| (b.to_string(), a.to_string())).collect(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
            broadcast_via: Vec::new(),
        }
    }
}

/// Letters, digits, `-`, `_` and `.`, at most 64: never a `:`, so a person
/// id and a `bridge:account` never look alike.
pub(crate) fn valid_person_id(s: &str) -> bool {
    s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}
