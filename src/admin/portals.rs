//! Portals made, changed and removed at run time (the console and its
//! API): checked as the config checks its portals, kept in the store, put
//! in the topology, and their rooms joined or left by their bridges.

use std::sync::Arc;
use std::time::Duration;

use causeway_core::now_ms;
use serde::{Deserialize, Serialize};

use crate::router::Router;
use crate::store::{Store, StoredKind, StoredLink, StoredPortal};
use crate::topology::{Link, Portal, PortalKind};

/// Rooms one portal links at most.
pub const MAX_LINKS: usize = 32;
/// How long a bridge is given to join a room before the answer is sent
/// (it goes on trying after that).
const JOIN_WAIT: Duration = Duration::from_secs(10);

/// A new portal: `{"id": …, "links": [{"bridge": …, "room": …}, …]}`.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NewPortal {
    /// Letters, digits, `-` and `_`; made up when left out.
    #[serde(default)]
    pub id: Option<String>,
    pub links: Vec<StoredLink>,
}

/// Rooms to link into a portal and rooms to take out of it.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PortalChange {
    #[serde(default)]
    pub add: Vec<StoredLink>,
    #[serde(default)]
    pub remove: Vec<StoredLink>,
}

impl PortalChange {
    /// The change in words, for the audit log.
    pub fn describe(&self) -> String {
        let text = |links: &[StoredLink]| links.iter().map(|l| format!("{}:{}", l.bridge, l.room)).collect::<Vec<_>>().join(", ");
        format!("add {}; remove {}", text(&self.add), text(&self.remove))
    }
}

/// Rooms in words (`bridge:room, …`), for the audit log.
pub fn links_text(links: &[Link]) -> String {
    links.iter().map(|l| format!("{}:{}", l.bridge, l.room)).collect::<Vec<_>>().join(", ")
}

/// A mistake at a field of the request (shown beside it in the console).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    #[error("the portal is not valid")]
    Invalid(Vec<FieldError>),
    #[error("no portal {0:?}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the store failed: {0}")]
    Unavailable(String),
}

/// How a bridge took a room it was asked to join.
#[derive(Clone, Debug, Serialize)]
pub struct Joined {
    pub bridge: String,
    pub room: String,
    /// Why it could not (yet): it goes on trying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn field(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

#[doc(hidden)]
pub fn fuzz_id(s: &str) -> bool {
    valid_id(s)
}

fn valid_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 64 && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Everything wrong with `links` (at `path[i]`) as new links of portal `id`.
fn check_links(router: &Router, id: &str, links: &[StoredLink], path: &str, errors: &mut Vec<FieldError>) {
    for (i, l) in links.iter().enumerate() {
        let at = format!("{path}[{i}]");
        let Some(bridge) = router.bridge(&l.bridge) else {
            let running = router.bridges();
            let known: Vec<&str> = running.keys().map(String::as_str).collect();
            errors.push(field(format!("{at}.bridge"), format!("no bridge named {:?} (there are: {})", l.bridge, known.join(", "))));
            continue;
        };
        if let Err(e) = bridge.check_room(&l.room) {
            errors.push(field(format!("{at}.room"), e));
            continue;
        }
        if links[..i].contains(l) {
            errors.push(field(format!("{at}.room"), "named twice"));
            continue;
        }
        if let Some(other) = router.topology().portal(&Link::new(l.bridge.as_str(), l.room.as_str()))
            && other.id != id
        {
            errors.push(field(format!("{at}.room"), format!("already linked in portal {:?}", other.id)));
        }
    }
}

fn links_of(stored: &[StoredLink]) -> Vec<Link> {
    stored.iter().map(|l| Link::new(l.bridge.as_str(), l.room.as_str())).collect()
}

fn stored(links: &[Link]) -> Vec<StoredLink> {
    links.iter().map(|l| StoredLink { bridge: l.bridge.clone(), room: l.room.clone() }).collect()
}

/// Ask each bridge to join its new rooms; what each said.
async fn join(router: &Router, links: &[Link]) -> Vec<Joined> {
    let mut out = Vec::new();
    for l in links {
        let Some(bridge) = router.bridge(&l.bridge) else { continue };
        let error = match tokio::time::timeout(JOIN_WAIT, bridge.linked(&l.room)).await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(e),
            Err(_) => Some(format!("not joined within {JOIN_WAIT:?}; still trying")),
        };
        if let Some(e) = &error {
            tracing::warn!(bridge = %l.bridge, room = %l.room, "a newly linked room is not joined: {e}");
        }
        out.push(Joined { bridge: l.bridge.clone(), room: l.room.clone(), error });
    }
    out
}

async fn leave(router: &Router, links: &[Link]) {
    for l in links {
        if let Some(bridge) = router.bridge(&l.bridge) {
            bridge.unlinked(&l.room).await;
        }
    }
}

/// Make a portal. One change at a time (`edits`), so two requests cannot
/// link the same room twice.
pub async fn create(
    router: &Arc<Router>,
    store: &dyn Store,
    edits: &tokio::sync::Mutex<()>,
    new: NewPortal,
) -> Result<(Arc<Portal>, Vec<Joined>), PortalError> {
    let _one = edits.lock().await;
    let mut errors = Vec::new();
    let id = new.id.clone().unwrap_or_else(|| format!("p-{}", &uuid::Uuid::now_v7().simple().to_string()[20..]));
    if !valid_id(&id) {
        errors.push(field("id", "letters, digits, - and _, at most 64"));
    } else if router.topology().get(&id).is_some() {
        return Err(PortalError::Conflict(format!("there is a portal {id:?} already")));
    }
    if new.links.len() < 2 {
        errors.push(field("links", "a portal links at least two rooms"));
    } else if new.links.len() > MAX_LINKS {
        errors.push(field("links", format!("at most {MAX_LINKS} rooms")));
    } else {
        check_links(router, &id, &new.links, "links", &mut errors);
    }
    if !errors.is_empty() {
        return Err(PortalError::Invalid(errors));
    }
    let saved = StoredPortal { id: id.clone(), created_ms: now_ms(), links: new.links.clone(), kind: StoredKind::Console };
    store.save_portal(&saved).await.map_err(|e| PortalError::Unavailable(e.to_string()))?;
    let links = links_of(&new.links);
    router.add_portal(Portal {
        id: id.clone(),
        kind: PortalKind::Console,
        links: links.clone(),
        degrade: router.topology().default_degrade(),
    });
    tracing::info!(portal = %id, links = links.len(), "portal made at run time");
    let joined = join(router, &links).await;
    let portal = router.topology().get(&id).ok_or_else(|| PortalError::NotFound(id.clone()))?;
    Ok((portal, joined))
}

/// Link rooms into a run-time portal and take rooms out of it.
pub async fn change(
    router: &Arc<Router>,
    store: &dyn Store,
    edits: &tokio::sync::Mutex<()>,
    id: &str,
    change: PortalChange,
) -> Result<(Arc<Portal>, Vec<Joined>), PortalError> {
    let _one = edits.lock().await;
    let portal = router.topology().get(id).ok_or_else(|| PortalError::NotFound(id.to_string()))?;
    if portal.kind == PortalKind::Configured {
        return Err(PortalError::Conflict(format!("portal {id:?} is in the config file: change it there (and reload)")));
    }
    if !portal.kind.editable() {
        return Err(PortalError::Conflict(format!("portal {id:?} is Causeway's own ({}): it cannot be changed", portal.kind.name())));
    }
    let mut errors = Vec::new();
    check_links(router, id, &change.add, "add", &mut errors);
    let remove = links_of(&change.remove);
    for (i, l) in remove.iter().enumerate() {
        if !portal.links.contains(l) {
            errors.push(field(format!("remove[{i}].room"), format!("not a room of portal {id:?}")));
        }
    }
    let add: Vec<Link> = links_of(&change.add).into_iter().filter(|l| !portal.links.contains(l)).collect();
    let after = portal.links.iter().filter(|l| !remove.contains(l)).count() + add.len();
    if errors.is_empty() && after < 2 {
        errors.push(field("remove", "a portal links at least two rooms; delete the portal instead"));
    }
    if after > MAX_LINKS {
        errors.push(field("add", format!("at most {MAX_LINKS} rooms")));
    }
    if !errors.is_empty() {
        return Err(PortalError::Invalid(errors));
    }
    let mut links: Vec<Link> = portal.links.iter().filter(|l| !remove.contains(l)).cloned().collect();
    links.extend(add.iter().cloned());
    let kind = if portal.kind == PortalKind::Direct { StoredKind::Direct } else { StoredKind::Console };
    let saved = StoredPortal { id: id.to_string(), created_ms: now_ms(), links: stored(&links), kind };
    store.save_portal(&saved).await.map_err(|e| PortalError::Unavailable(e.to_string()))?;
    if !remove.is_empty() {
        router.topology().remove(id, Some(&remove));
        leave(router, &remove).await;
    }
    if !add.is_empty() {
        router.add_portal(Portal { id: id.to_string(), kind: portal.kind, links: add.clone(), degrade: portal.degrade });
    }
    tracing::info!(portal = %id, added = add.len(), removed = remove.len(), "portal changed at run time");
    let joined = join(router, &add).await;
    let portal = router.topology().get(id).ok_or_else(|| PortalError::NotFound(id.to_string()))?;
    Ok((portal, joined))
}

/// Remove a run-time portal: its rooms are left and what was pending for
/// them becomes dead letters. Its events stay in the archive.
pub async fn delete(router: &Arc<Router>, store: &dyn Store, edits: &tokio::sync::Mutex<()>, id: &str) -> Result<Vec<Link>, PortalError> {
    let _one = edits.lock().await;
    let portal = router.topology().get(id).ok_or_else(|| PortalError::NotFound(id.to_string()))?;
    if portal.kind == PortalKind::Configured {
        return Err(PortalError::Conflict(format!("portal {id:?} is in the config file: remove it there (and reload)")));
    }
    if !portal.kind.editable() {
        return Err(PortalError::Conflict(format!("portal {id:?} is Causeway's own ({}): it cannot be removed", portal.kind.name())));
    }
    store.delete_portal(id).await.map_err(|e| PortalError::Unavailable(e.to_string()))?;
    let gone = router.topology().remove(id, None);
    leave(router, &gone).await;
    tracing::info!(portal = %id, links = gone.len(), "portal removed at run time");
    Ok(gone)
}
