//! Reading the config again while Causeway runs (`SIGHUP`, or
//! `POST /admin/api/reload`): a config that does not check is refused with
//! the errors `causeway check` gives, and the running one stays; one that
//! checks has its bridges, portals and people applied at once. Portals that
//! stay as they were keep their lanes and what is in flight; a room taken
//! out stops its lane and what was pending for it becomes dead letters. A
//! bridge whose section changed is stopped and started again with the new
//! one (its lanes wait meanwhile, and what failed in doubt is retried with
//! the same delivery id); a bridge added is started, one removed stopped.
//! What cannot change without a restart is named.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Serialize;

use crate::config::{Config, ConfigError, PortalConfig};
use crate::directory::People;
use crate::router::Router;
use crate::running::Running;
use crate::topology::{Link, Portal, PortalKind};

/// What a reload did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Reloaded {
    pub bridges_added: Vec<String>,
    pub bridges_changed: Vec<String>,
    pub bridges_removed: Vec<String>,
    /// Bridges that did not start (`name: why`): not running; the next
    /// reload tries them again.
    pub bridges_failed: Vec<String>,
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
        let failed = if self.bridges_failed.is_empty() { String::new() } else { format!("; not started: {:?}", self.bridges_failed) };
        format!(
            "bridges added {:?}, changed {:?}, removed {:?}; portals added {:?}, changed {:?}, removed {:?}; {} people{failed}{later}",
            self.bridges_added,
            self.bridges_changed,
            self.bridges_removed,
            self.portals_added,
            self.portals_changed,
            self.portals_removed,
            self.people
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
    running: Arc<Running>,
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
    pub fn new(
        path: PathBuf,
        config: Config,
        router: Arc<Router>,
        running: Arc<Running>,
        people: Arc<People>,
        edits: Arc<tokio::sync::Mutex<()>>,
    ) -> Self {
        Reloader { path, router, running, people, edits, current: tokio::sync::Mutex::new(config) }
    }

    /// Read the file again and apply what it changed.
    ///
    /// One piece (over 80 lines): the order of a reload — check, build, take
    /// out, stop, add, start, join — read top to bottom in one place.
    pub async fn reload(&self) -> Result<Reloaded, ReloadError> {
        let loaded = crate::config::load(&self.path).map_err(|e| ReloadError::Invalid(e.0))?;
        let new = loaded.config;
        let _one = self.edits.lock().await;
        let mut current = self.current.lock().await;
        let mut errors = Vec::new();
        let mut done = Reloaded::default();

        // Which bridges change: against what runs (a bridge that did not
        // start at the last reload is added again).
        let running = self.running.sections().await;
        for (name, section) in &new.bridges {
            match running.get(name) {
                None => done.bridges_added.push(name.clone()),
                Some(was) if was != section => done.bridges_changed.push(name.clone()),
                Some(_) => {}
            }
        }
        done.bridges_removed = running.keys().filter(|n| !new.bridges.contains_key(*n)).cloned().collect();
        // A console portal lives beside the config: its rooms keep their bridge.
        for name in &done.bridges_removed {
            for p in self.router.topology().portals().iter().filter(|p| p.kind == PortalKind::Console) {
                if p.links.iter().any(|l| &l.bridge == name) {
                    errors.push(ConfigError::new(
                        format!("bridges.{name}"),
                        format!("the console portal {:?} links a room of it: take that room out first", p.id),
                    ));
                }
            }
        }
        for (i, p) in new.portals.iter().enumerate() {
            for (j, l) in p.links.iter().enumerate() {
                if let Some(other) = self.router.topology().portal(&Link::new(l.bridge.as_str(), l.room.as_str()))
                    && other.kind != PortalKind::Configured
                {
                    errors.push(ConfigError::new(
                        format!("portals[{i}].links[{j}].room"),
                        format!("already linked in the {} portal {:?}: remove it there first", other.kind.name(), other.id),
                    ));
                }
            }
        }
        // Built before anything changes: a bridge that cannot be built
        // refuses the whole config.
        let mut built = BTreeMap::new();
        for name in done.bridges_added.iter().chain(&done.bridges_changed) {
            let Some(options) = loaded.bridges.get(name) else { continue };
            match crate::bridges::build_one(name, options.as_ref()) {
                Ok(b) => {
                    built.insert(name.clone(), b);
                }
                Err(e) => errors.extend(e.into_iter().map(|e| ConfigError::new(e.path, e.message))),
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
        // The old instances stop (their connections end, what they took in
        // is submitted); the new ones are there for the portals below and
        // start after them, joining every room they have. A changed
        // bridge's new instance is registered before the old one stops:
        // what comes in meanwhile is queued for its rooms, and waits.
        for name in &done.bridges_removed {
            self.running.remove(name).await;
        }
        for (name, b) in &built {
            self.running.register(name, b);
        }
        for name in &done.bridges_changed {
            self.running.stop(name).await;
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
                joining.extend(new_links.into_iter().filter(|l| !built.contains_key(&l.bridge)));
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
        for (name, b) in built {
            let section = new.bridges.get(&name).cloned().unwrap_or_default();
            if let Err(e) = self.running.start(&name, section, b).await {
                tracing::error!(bridge = %name, "{e:#}");
                done.bridges_failed.push(format!("{name}: {e:#}"));
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

        self.router.set_time_zones(&new.portals);
        // Calendars are polled as the daemon started them.
        let calendars = |ps: &[PortalConfig]| -> Vec<(String, Vec<crate::calendar::CalendarConfig>, Option<String>)> {
            ps.iter()
                .filter(|p| !p.calendars.is_empty() || p.agenda.is_some())
                .map(|p| (p.id.clone(), p.calendars.clone(), p.agenda.clone()))
                .collect()
        };
        if calendars(&current.portals) != calendars(&new.portals) {
            done.restart_needed.push("portals[].calendars".into());
        }
        self.people.configured(&new.people);
        done.people = self.router.directory().people().len();

        let (was, now) = (sections(&current), sections(&new));
        for (name, value) in &now {
            if matches!(name.as_str(), "bridges" | "portals" | "people") {
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
            bridges_added = ?done.bridges_added, bridges_changed = ?done.bridges_changed, bridges_removed = ?done.bridges_removed,
            added = ?done.portals_added, changed = ?done.portals_changed, removed = ?done.portals_removed,
            people = done.people, "config reloaded"
        );
        *current = new;
        Ok(done)
    }
}
