//! People: who a network's sender is, across networks. They come from the
//! config and, optionally, from LDAP (imported at start and every
//! `refresh`; the last good import is kept in the store for when the
//! directory server is away).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use causeway_core::{RemoteSender, Sender};

use crate::ldap::{self, LdapConfig};
use crate::metrics::{self, Metrics};
use crate::person::PersonConfig;
use crate::store::Store;

/// Where the last good LDAP import is kept (`bridge_state`; no bridge can
/// be called this).
const STATE_OWNER: &str = "@directory";
const STATE_KEY: &str = "ldap";

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

    /// The configured people, then the imported ones that do not clash
    /// with them (by person id, case-folded, or by account); what was left
    /// out and why. An id or account two imported entries claim belongs to
    /// neither: which one a directory server returns first is arbitrary, and
    /// an entry must not take over someone else's account.
    pub fn merged(configured: &[PersonConfig], imported: &[PersonConfig]) -> (Self, Vec<String>) {
        let mut claims: HashMap<String, usize> = HashMap::new();
        let mut account_claims: HashMap<(String, String), usize> = HashMap::new();
        for p in imported {
            *claims.entry(p.id.to_ascii_lowercase()).or_default() += 1;
            for (b, a) in &p.accounts {
                *account_claims.entry((b.clone(), a.clone())).or_default() += 1;
            }
        }
        let mut people = configured.to_vec();
        let mut ids: HashSet<String> = people.iter().map(|p| p.id.to_ascii_lowercase()).collect();
        let mut taken: HashMap<(String, String), String> = HashMap::new();
        for p in &people {
            for (b, a) in &p.accounts {
                taken.insert((b.clone(), a.clone()), p.id.clone());
            }
        }
        let mut left_out = Vec::new();
        for p in imported {
            if claims[&p.id.to_ascii_lowercase()] > 1 {
                left_out.push(format!("{}: more than one directory entry has this id", p.id));
                continue;
            }
            if !ids.insert(p.id.to_ascii_lowercase()) {
                left_out.push(format!("{}: a person with this id is configured already", p.id));
                continue;
            }
            let mut p = p.clone();
            let id = p.id.clone();
            p.accounts.retain(|b, a| {
                let contested = account_claims[&(b.clone(), a.clone())] > 1;
                if contested {
                    left_out.push(format!("{id}: {b} account {a:?} is claimed by more than one directory entry"));
                }
                !contested
            });
            p.accounts.retain(|b, a| match taken.get(&(b.clone(), a.clone())) {
                Some(owner) => {
                    left_out.push(format!("{}: {b} account {a:?} belongs to {owner} already", p.id));
                    false
                }
                None => {
                    taken.insert((b.clone(), a.clone()), p.id.clone());
                    true
                }
            });
            people.push(p);
        }
        (Directory::new(&people), left_out)
    }

    pub fn people(&self) -> &[PersonConfig] {
        &self.people
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
            Some(p) => {
                Sender { id: sender.id, person: Some(p.id.clone()), name: p.name.clone(), avatar: p.avatar.clone().or(sender.avatar) }
            }
            None => Sender {
                name: sender.name.filter(|n| !n.trim().is_empty()).unwrap_or_else(|| sender.id.clone()),
                id: sender.id,
                person: None,
                avatar: sender.avatar,
            },
        }
    }
}

/// The people of the LDAP directory: imported now, or (the server away)
/// the last good import. `None`: neither.
pub async fn ldap_people(config: &LdapConfig, store: &dyn Store, metrics: &Metrics) -> Option<Vec<PersonConfig>> {
    match import(config, store, metrics).await {
        Ok(people) => Some(people),
        Err(e) => {
            let stored = stored_people(store).await;
            match &stored {
                Some(people) => tracing::warn!(people = people.len(), "{e}; using the last good import until the next refresh"),
                None => tracing::error!("{e}; there is no earlier import: only the configured people are known until the next refresh"),
            }
            stored
        }
    }
}

/// The last good import, as kept in the store.
async fn stored_people(store: &dyn Store) -> Option<Vec<PersonConfig>> {
    match store.load_state(STATE_OWNER, STATE_KEY).await {
        Ok(Some(json)) => serde_json::from_str::<Vec<PersonConfig>>(&json).ok(),
        Ok(None) => None,
        Err(e) => {
            tracing::warn!("cannot read the last LDAP import from the store: {e}");
            None
        }
    }
}

/// One import: counted, logged, and kept in the store when it worked.
async fn import(config: &LdapConfig, store: &dyn Store, metrics: &Metrics) -> Result<Vec<PersonConfig>, ldap::ImportError> {
    let imported = match ldap::import(config).await {
        Ok(i) => i,
        Err(e) => {
            metrics.directory_imports.get_or_create(&metrics::result("failed")).inc();
            return Err(e);
        }
    };
    if imported.people.is_empty() {
        // Nobody at all, where there were people: far likelier a lost read
        // right or a wrong base than an emptied company.
        let before = stored_people(store).await.map_or(0, |p| p.len());
        if before > 0 {
            metrics.directory_imports.get_or_create(&metrics::result("failed")).inc();
            return Err(ldap::ImportError::Emptied(before));
        }
    }
    metrics.directory_imports.get_or_create(&metrics::result("ok")).inc();
    metrics.directory_skipped.get_or_create(&metrics::source("ldap")).set(imported.skipped.len() as i64);
    for (dn, why) in &imported.skipped {
        tracing::warn!(dn = %dn, "LDAP entry: {why}");
    }
    tracing::info!(people = imported.people.len(), skipped = imported.skipped.len(), "imported people from LDAP");
    match serde_json::to_string(&imported.people) {
        Ok(json) => {
            if let Err(e) = store.save_state(STATE_OWNER, STATE_KEY, &json).await {
                tracing::warn!("cannot keep the LDAP import in the store: {e}");
            }
        }
        Err(e) => tracing::warn!("cannot keep the LDAP import: {e}"),
    }
    Ok(imported.people)
}

/// Import again every `refresh`, giving each good import to `apply`.
pub async fn refresh_ldap(
    config: LdapConfig,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    apply: impl Fn(Vec<PersonConfig>) + Send,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            _ = tokio::time::sleep(config.refresh) => {}
        }
        match import(&config, store.as_ref(), &metrics).await {
            Ok(people) => apply(people),
            Err(e) => tracing::warn!("{e}; keeping the people imported before"),
        }
    }
}

/// Where the directory's people come from, and the directory made of them:
/// the configured ones (changed by a reload) and the last LDAP import
/// (changed by each import), merged into the router's directory whenever
/// either changes.
pub struct People {
    sources: std::sync::Mutex<Sources>,
    /// Where each new directory goes (the router's).
    apply: Box<dyn Fn(Directory) + Send + Sync>,
    metrics: Arc<Metrics>,
}

#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct Sources {
    #[serde(skip)]
    configured: Vec<PersonConfig>,
    #[serde(skip)]
    imported: Option<Vec<PersonConfig>>,
    /// When the last LDAP import was applied.
    pub imported_ms: Option<i64>,
    /// What the last import left out, and why.
    pub left_out: Vec<String>,
    /// How many people the directory holds.
    pub people: usize,
}

impl People {
    pub fn new(configured: &[PersonConfig], apply: impl Fn(Directory) + Send + Sync + 'static, metrics: Arc<Metrics>) -> Self {
        let sources = Sources { configured: configured.to_vec(), ..Sources::default() };
        People { sources: std::sync::Mutex::new(sources), apply: Box::new(apply), metrics }
    }

    fn sources(&self) -> std::sync::MutexGuard<'_, Sources> {
        self.sources.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The configured people, from a reload.
    pub fn configured(&self, people: &[PersonConfig]) {
        let mut s = self.sources();
        s.configured = people.to_vec();
        self.apply(&mut s);
    }

    /// A good LDAP import.
    pub fn imported(&self, people: Vec<PersonConfig>) {
        let mut s = self.sources();
        s.imported = Some(people);
        s.imported_ms = Some(causeway_core::now_ms());
        self.apply(&mut s);
    }

    /// Import from LDAP now (the console's button): how many people the
    /// directory holds after it, or why it failed (the people imported
    /// before stay).
    pub async fn import_now(&self, config: &LdapConfig, store: &dyn Store) -> Result<usize, String> {
        let people = import(config, store, &self.metrics).await.map_err(|e| e.to_string())?;
        self.imported(people);
        Ok(self.sources().people)
    }

    /// The last import: when, and what it left out.
    pub fn last_import(&self) -> Sources {
        self.sources().clone()
    }

    fn apply(&self, s: &mut Sources) {
        let (directory, left_out) = match &s.imported {
            Some(imported) => Directory::merged(&s.configured, imported),
            None => (Directory::new(&s.configured), Vec::new()),
        };
        for why in &left_out {
            tracing::warn!("LDAP person left out: {why}");
        }
        s.left_out = left_out;
        let configured = s.configured.len();
        self.metrics.directory_people.get_or_create(&metrics::source("config")).set(configured as i64);
        if s.imported.is_some() {
            let from_ldap = directory.people().len() - configured;
            self.metrics.directory_people.get_or_create(&metrics::source("ldap")).set(from_ldap as i64);
        }
        s.people = directory.people().len();
        (self.apply)(directory);
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
            groups: Vec::new(),
            broadcast_via: Vec::new(),
        };
        let d = Directory::new(&[alice]);
        let s = d.resolve("xmpp", RemoteSender { id: "alice@corp".into(), name: Some("al".into()), avatar: None });
        assert_eq!((s.person.as_deref(), s.name.as_str()), (Some("alice"), "Alice Liddell"));
        let s = d.resolve("matrix", RemoteSender { id: "alice@corp".into(), name: Some(" ".into()), avatar: None });
        assert_eq!((s.person, s.name.as_str()), (None, "alice@corp"));
    }

    #[test]
    fn configured_people_win_over_imported_ones() {
        let person = |id: &str, accounts: &[(&str, &str)]| PersonConfig {
            id: id.into(),
            name: id.to_uppercase(),
            avatar: None,
            accounts: accounts.iter().map(|(b, a)| (b.to_string(), a.to_string())).collect(),
            groups: Vec::new(),
            broadcast_via: Vec::new(),
        };
        let configured = [person("alice", &[("mail", "alice@corp")])];
        let imported = [
            person("Alice", &[("xmpp", "alice@x")]),
            person("bob", &[("mail", "alice@corp"), ("xmpp", "bob@x"), ("hooks", "bob")]),
            person("carol", &[("xmpp", "bob@x")]),
            person("dave", &[]),
            person("Dave", &[]),
        ];
        let (d, left_out) = Directory::merged(&configured, &imported);
        assert_eq!(d.people().len(), 3, "alice, bob, carol");
        assert_eq!(d.person_of("mail", "alice@corp").unwrap().id, "alice");
        assert_eq!(d.person_of("hooks", "bob").unwrap().id, "bob");
        // Claimed by two entries: neither has it.
        assert!(d.person_of("xmpp", "bob@x").is_none());
        assert!(d.person("carol").unwrap().accounts.is_empty());
        assert!(d.person_of("xmpp", "alice@x").is_none());
        assert!(d.person("dave").is_none());
        let has = |s: &str| left_out.iter().any(|l| l.contains(s));
        assert!(has("Alice: a person with this id is configured already"), "{left_out:?}");
        assert!(has("bob: mail account \"alice@corp\" belongs to alice"), "{left_out:?}");
        assert!(has("bob: xmpp account \"bob@x\" is claimed by more than one"), "{left_out:?}");
        assert!(has("carol: xmpp account \"bob@x\" is claimed by more than one"), "{left_out:?}");
        assert!(has("dave: more than one directory entry has this id") && has("Dave: more than one"), "{left_out:?}");
        assert_eq!(left_out.len(), 6, "{left_out:?}");
    }
}
