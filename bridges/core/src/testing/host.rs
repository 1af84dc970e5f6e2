//! A fake [`Host`]: what a bridge's inbound path hands the daemon, kept in
//! memory, so a bridge can test it without the router, the store or the
//! other networks. It keeps the daemon's contract where a bridge relies on
//! it: a room not linked is refused, the same (room, remote id) twice is a
//! duplicate, state and the message map are kept per bridge.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::broadcast;

use crate::{
    Accepted, BridgeContext, Committed, Delivery, DirectError, Host, IdKind, Incoming, Recipient, RemoteSender, SubmitError, new_id,
};

#[derive(Default)]
struct Inner {
    /// (bridge, room) → portal.
    links: HashMap<(String, String), String>,
    /// (person, bridge) → account.
    accounts: HashMap<(String, String), String>,
    /// What was submitted and taken (stored), in order.
    taken: Vec<(String, Incoming)>,
    /// (bridge, room, remote id) → event id, for duplicates and `ids_of`.
    seen: HashMap<(String, String, String), String>,
    /// Every count_* call: (bridge, what, reason).
    counts: Vec<(String, &'static str, String)>,
    state: HashMap<(String, String), String>,
    /// Opened direct conversations: (bridge, room) → portal.
    direct: HashSet<(String, String)>,
}

/// A daemon in memory; see the module.
pub struct FakeHost {
    inner: Mutex<Inner>,
    taken: tokio::sync::Notify,
    committed: broadcast::Sender<Arc<Committed>>,
}

impl FakeHost {
    pub fn new() -> Arc<Self> {
        Arc::new(FakeHost { inner: Mutex::default(), taken: tokio::sync::Notify::new(), committed: broadcast::channel(64).0 })
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Link `room` of `bridge` into `portal`.
    pub fn link(&self, bridge: &str, room: &str, portal: &str) {
        self.inner().links.insert((bridge.to_string(), room.to_string()), portal.to_string());
    }

    /// A directory person's account on `bridge`.
    pub fn account(&self, person: &str, bridge: &str, account: &str) {
        self.inner().accounts.insert((person.to_string(), bridge.to_string()), account.to_string());
    }

    /// The context a bridge named `bridge` starts with.
    pub fn context(self: &Arc<Self>, bridge: &str) -> BridgeContext {
        BridgeContext::new(bridge, self.clone())
    }

    /// Everything taken so far, in order: (bridge, event as submitted).
    pub fn taken(&self) -> Vec<(String, Incoming)> {
        self.inner().taken.clone()
    }

    /// Wait (at most `within`) until `n` events have been taken; all taken.
    pub async fn wait_taken(&self, n: usize, within: Duration) -> Vec<(String, Incoming)> {
        let until = tokio::time::Instant::now() + within;
        loop {
            let wake = self.taken.notified();
            let taken = self.taken();
            if taken.len() >= n || tokio::time::Instant::now() >= until {
                return taken;
            }
            let _ = tokio::time::timeout_at(until, wake).await;
        }
    }

    /// The reasons counted as `what` (`rejected`, `held`, `fetch_refused`) for `bridge`.
    pub fn counted(&self, bridge: &str, what: &str) -> Vec<String> {
        self.inner().counts.iter().filter(|(b, w, _)| b == bridge && *w == what).map(|(_, _, r)| r.clone()).collect()
    }

    fn count(&self, bridge: &str, what: &'static str, reason: impl Into<String>) {
        self.inner().counts.push((bridge.to_string(), what, reason.into()));
    }
}

#[async_trait]
impl Host for FakeHost {
    async fn submit(&self, bridge: &str, incoming: Incoming) -> Result<Accepted, SubmitError> {
        let accepted = {
            let mut inner = self.inner();
            let key = (bridge.to_string(), incoming.room.clone());
            if !inner.links.contains_key(&key) && !inner.direct.contains(&key) {
                return Err(SubmitError::NotLinked(incoming.room));
            }
            let seen = incoming.remote_id.as_ref().map(|r| (bridge.to_string(), incoming.room.clone(), r.clone()));
            if let Some(event_id) = seen.as_ref().and_then(|k| inner.seen.get(k)) {
                return Ok(Accepted::Duplicate { event_id: event_id.clone() });
            }
            let event_id = new_id();
            if let Some(k) = seen {
                inner.seen.insert(k, event_id.to_string());
            }
            for alias in &incoming.aliases {
                inner.seen.insert((bridge.to_string(), incoming.room.clone(), alias.clone()), event_id.to_string());
            }
            inner.taken.push((bridge.to_string(), incoming));
            Accepted::Stored { event_id }
        };
        self.taken.notify_waiters();
        Ok(accepted)
    }

    fn portal_of(&self, bridge: &str, room: &str) -> Option<String> {
        self.inner().links.get(&(bridge.to_string(), room.to_string())).cloned()
    }

    fn rooms(&self, bridge: &str) -> Vec<String> {
        let mut rooms: Vec<String> = self.inner().links.keys().filter(|(b, _)| b == bridge).map(|(_, r)| r.clone()).collect();
        rooms.sort();
        rooms
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.committed.subscribe()
    }

    async fn history(&self, _portal: &str, _after_seq: i64, _limit: u32) -> Result<Vec<Committed>, SubmitError> {
        Ok(Vec::new())
    }

    fn count_rejected(&self, bridge: &str, reason: &'static str) {
        self.count(bridge, "rejected", reason);
    }

    fn count_reconciled(&self, bridge: &str, n: u64) {
        self.count(bridge, "reconciled", n.to_string());
    }

    fn count_held(&self, bridge: &str, reason: &'static str) {
        self.count(bridge, "held", reason);
    }

    fn count_fetch_refused(&self, bridge: &str, reason: &'static str) {
        self.count(bridge, "fetch_refused", reason);
    }

    fn sign_mark(&self, _room: &str, _origin: &str) -> Option<String> {
        None
    }

    fn relayed_by_peer(&self, _bridge: &str, _room: &str, _origin: &str, _sig: &str, _copy: Option<&str>) {}

    async fn refused_recipient(&self, bridge: &str, _delivery: &Delivery, recipient: &str, reason: &str) -> Result<(), SubmitError> {
        self.count(bridge, "refused_recipient", format!("{recipient}: {reason}"));
        Ok(())
    }

    async fn ids_of(&self, bridge: &str, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, SubmitError> {
        let inner = self.inner();
        let Some(event) = inner.seen.get(&(bridge.to_string(), room.to_string(), remote_id.to_string())) else {
            return Ok(Vec::new());
        };
        Ok(inner
            .seen
            .iter()
            .filter(|((b, r, _), e)| b == bridge && r == room && *e == event)
            .map(|((_, _, id), _)| (id.clone(), IdKind::Origin))
            .collect())
    }

    fn account_of(&self, person: &str, bridge: &str) -> Option<String> {
        self.inner().accounts.get(&(person.to_string(), bridge.to_string())).cloned()
    }

    fn canonical_recipient(&self, with: &Recipient) -> Result<Recipient, DirectError> {
        Ok(with.clone())
    }

    async fn open_direct(&self, bridge: &str, room: &str, with: &Recipient, _initiator: RemoteSender) -> Result<String, DirectError> {
        self.inner().direct.insert((bridge.to_string(), room.to_string()));
        Ok(format!("direct:{with}"))
    }

    async fn load_state(&self, bridge: &str, key: &str) -> Result<Option<String>, SubmitError> {
        Ok(self.inner().state.get(&(bridge.to_string(), key.to_string())).cloned())
    }

    async fn save_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), SubmitError> {
        self.inner().state.insert((bridge.to_string(), key.to_string()), value.to_string());
        Ok(())
    }

    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), SubmitError> {
        self.inner().state.remove(&(bridge.to_string(), key.to_string()));
        Ok(())
    }
}
