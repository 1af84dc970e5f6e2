//! Reading the config again while Causeway runs (`SIGHUP`, or
//! `POST /admin/api/reload`): a config that does not check is refused with
//! the errors `causeway check` gives, and the running one stays; one that
//! checks has its portals and people applied at once. Portals that stay as
//! they were keep their lanes and what is in flight; a room taken out stops
//! its lane and what was pending for it becomes dead letters. What cannot
//! change without a restart is named.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError, PortalConfig};
use crate::directory::People;
use crate::router::Router;
use crate::topology::{Link, Portal, PortalKind};

/// What a reload did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Reloaded {
    pub portals_added: Vec<String>,
    pub portals_changed: Vec<String>,
    pub portals_removed: Vec<String>,
    pub people: usize,
    /// Sections that changed but take effect only at the next start.
    pub restart_needed: Vec<String>,
    /// Rooms a bridge could not join (yet): it goes on trying.
    pub not_joined: Vec<String>,
}

impl Reloaded {
    /// What the reload did, in words, for the audit log.
    pub fn summary(&self) -> String {
        let later = if self.restart_needed.is_empty() { String::new() } else { format!("; at the next start: {:?}", self.restart_needed) };
        format!(
            "added {:?}, changed {:?}, removed {:?}, {} people{later}",
            self.portals_added, self.portals_changed, self.portals_removed, self.people
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// What `causeway check` says of the file.
    #[error("the config does not check")]
    Invalid(Vec<ConfigError>),
}

pub struct Reloader {
    path: PathBuf,
    router: Arc<Router>,
    people: Arc<People>,
    /// One reload (or console change of portals) at a time.
    edits: Arc<tokio::sync::Mutex<()>>,
    current: tokio::sync::Mutex<Config>,
}

fn links(p: &PortalConfig) -> Vec<Link> {
    p.links.iter().map(|l| Link::new(l.bridge.as_str(), l.room.as_str())).collect()
}

/// The sections of a config as JSON, to tell which changed.
fn sections(c: &Config) -> BTreeMap<String, serde_json::Value> {
    match serde_json::to_value(c) {
        Ok(serde_json::Value::Object(m)) => m.into_iter().collect(),
        _ => BTreeMap::new(),
    }
}

impl Reloader {
    pub fn new(path: PathBuf, config: Config, router: Arc<Router>, people: Arc<People>, edits: Arc<tokio::sync::Mutex<()>>) -> Self {
        Reloader { path, router, people, edits, current: tokio::sync::Mutex::new(config) }
    }

    /// Read the file again and apply what it changed.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let loaded = crate::config::load(&self.path).map_err(|e| ReloadError::Invalid(e.0))?;
        let new = loaded.config;
        let _one = self.edits.lock().await;
        let mut current = self.current.lock().await;
        let mut errors = Vec::new();
        let mut done = Reloaded::default();

        // Bridges are built and connected at the start: a portal of a
        // bridge that is not running cannot be applied now.
        for (i, p) in new.portals.iter().enumerate() {
            for (j, l) in p.links.iter().enumerate() {
                let at = format!("portals[{i}].links[{j}]");
                if self.router.bridge(&l.bridge).is_none() {
                    errors
                        .push(ConfigError::new(format!("{at}.bridge"), format!("bridge {:?} is not running: restart to add it", l.bridge)));
                } else if let Some(other) = self.router.topology().portal(&Link::new(l.bridge.as_str(), l.room.as_str()))
                    && other.kind != PortalKind::Configured
                {
                    errors.push(ConfigError::new(
                        format!("{at}.room"),
                        format!("already linked in the {} portal {:?}: remove it there first", other.kind.name(), other.id),
                    ));
                }
            }
        }
        if !errors.is_empty() {
            return Err(ReloadError::Invalid(errors));
        }

        let old: BTreeMap<&str, &PortalConfig> = current.portals.iter().map(|p| (p.id.as_str(), p)).collect();
        let wanted: BTreeMap<&str, &PortalConfig> = new.portals.iter().map(|p| (p.id.as_str(), p)).collect();
        // Removed first: a room may move from one portal to another.
        let mut left = Vec::new();
        for (id, p) in &old {
            match wanted.get(id) {
                None => {
                    left.extend(self.router.topology().remove(id, None));
                    done.portals_removed.push(id.to_string());
                }
                Some(w) => {
                    let gone: Vec<Link> = links(p).into_iter().filter(|l| !links(w).contains(l)).collect();
                    if !gone.is_empty() {
                        left.extend(self.router.topology().remove(id, Some(&gone)));
                    }
                }
            }
        }
        for l in &left {
            if let Some(b) = self.router.bridge(&l.bridge) {
                b.unlinked(&l.room).await;
            }
        }
        let mut joining = Vec::new();
        for (id, w) in &wanted {
            let degrade = w.degrade.unwrap_or(new.router.degrade);
            let before = old.get(id);
            let new_links: Vec<Link> = match before {
                None => links(w),
                Some(p) => links(w).into_iter().filter(|l| !links(p).contains(l)).collect(),
            };
            let changed = before.is_some_and(|p| links(p) != links(w) || p.degrade != w.degrade);
            if !new_links.is_empty() {
                self.router.add_portal(Portal { id: id.to_string(), kind: PortalKind::Configured, links: new_links.clone(), degrade });
                joining.extend(new_links);
            }
            if before.is_some() {
                self.router.topology().set_degrade(id, degrade);
            }
            if before.is_none() {
                done.portals_added.push(id.to_string());
            } else if changed {
                done.portals_changed.push(id.to_string());
            }
        }
        for l in &joining {
            if let Some(b) = self.router.bridge(&l.bridge)
                && let Err(e) = b.linked(&l.room).await
            {
                tracing::warn!(bridge = %l.bridge, room = %l.room, "a room linked by the reload is not joined yet: {e}");
                done.not_joined.push(format!("{}:{}: {e}", l.bridge, l.room));
            }
        }

        self.people.configured(&new.people);
        done.people = self.router.directory().people().len();

        let (was, now) = (sections(&current), sections(&new));
        for (name, value) in &now {
            if matches!(name.as_str(), "portals" | "people") {
                continue;
            }
            if was.get(name) != Some(value) {
                done.restart_needed.push(name.clone());
            }
        }
        for name in was.keys().filter(|n| !now.contains_key(*n)) {
            done.restart_needed.push(name.clone());
        }
        if !done.restart_needed.is_empty() {
            tracing::warn!(sections = ?done.restart_needed, "changed in the config; they take effect at the next start");
        }
        tracing::info!(
            added = ?done.portals_added, changed = ?done.portals_changed, removed = ?done.portals_removed,
            people = done.people, "config reloaded"
        );
        *current = new;
        Ok(done)
    }
}
