//! The router: takes events from bridges, drops echoes and duplicates,
//! resolves portal and person, and commits archive + message map + one
//! outbox row per other link in ONE transaction before anyone is acked.
//!
//! All submissions go through one writer task that commits them in groups
//! (group commit): under load one transaction carries many events, so
//! durability costs one disk flush per group, not per event. The single
//! writer also gives every portal one total order.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use async_trait::async_trait;
use causeway_core::{
    Accepted, Body, Bridge, Capabilities, Committed, Degrade, Event, Host, IdKind, Incoming, Origin, SubmitError, degrade,
    new_id, now_ms,
};
use tokio::sync::{Notify, broadcast, mpsc, oneshot};

use crate::config::Config;
use crate::directory::Directory;
use crate::metrics::{self, Metrics};
use crate::store::{NewDelivery, NewEvent, RemoteKey, Store};

/// One link of a portal: a room on a bridge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    pub bridge: String,
    pub room: String,
}

pub struct Portal {
    pub id: String,
    pub links: Vec<Link>,
    pub degrade: Degrade,
}

struct Submission {
    bridge: String,
    incoming: Incoming,
    reply: oneshot::Sender<Result<Accepted, SubmitError>>,
}

pub struct Router {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    bridges: BTreeMap<String, Arc<dyn Bridge>>,
    portals: Vec<Portal>,
    /// Link → index into `portals`.
    link_portal: HashMap<Link, usize>,
    directory: Directory,
    submissions: mpsc::Sender<Submission>,
    committed: broadcast::Sender<Arc<Committed>>,
    /// One wake-up per outbox lane (a link that receives deliveries).
    lanes: HashMap<Link, Arc<Notify>>,
}

impl Router {
    /// Build the router and start its writer task.
    pub fn start(
        config: &Config,
        bridges: BTreeMap<String, Arc<dyn Bridge>>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
    ) -> Arc<Router> {
        let default_degrade = config.router.degrade;
        let portals: Vec<Portal> = config
            .portals
            .iter()
            .map(|p| Portal {
                id: p.id.clone(),
                links: p.links.iter().map(|l| Link { bridge: l.bridge.clone(), room: l.room.clone() }).collect(),
                degrade: p.degrade.unwrap_or(default_degrade),
            })
            .collect();
        let mut link_portal = HashMap::new();
        let mut lanes = HashMap::new();
        for (i, p) in portals.iter().enumerate() {
            for l in &p.links {
                link_portal.insert(l.clone(), i);
                if bridges.get(&l.bridge).is_some_and(|b| b.capabilities(&l.room).outbound) {
                    lanes.insert(l.clone(), Arc::new(Notify::new()));
                }
            }
        }
        let max_batch = config.store.max_batch;
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let (committed, _) = broadcast::channel(4096);
        let router = Arc::new(Router {
            store,
            metrics,
            bridges,
            portals,
            link_portal,
            directory: Directory::new(&config.people),
            submissions: tx,
            committed,
            lanes,
        });
        tokio::spawn(router.clone().writer(rx, max_batch));
        router
    }

    pub fn portals(&self) -> &[Portal] {
        &self.portals
    }

    pub fn lanes(&self) -> impl Iterator<Item = (&Link, &Arc<Notify>)> {
        self.lanes.iter()
    }

    pub fn wake_lane(&self, bridge: &str, room: &str) {
        if let Some(n) = self.lanes.get(&Link { bridge: bridge.into(), room: room.into() }) {
            n.notify_one();
        }
    }

    /// The degradation policy of the portal a link belongs to.
    pub fn degrade_policy(&self, link: &Link) -> Degrade {
        self.link_portal.get(link).map(|&i| self.portals[i].degrade).unwrap_or_default()
    }

    fn capabilities(&self, link: &Link) -> Capabilities {
        self.bridges.get(&link.bridge).map(|b| b.capabilities(&link.room)).unwrap_or(Capabilities::NONE)
    }

    /// Whether `body` would show anything at all on `link`.
    fn wanted_on(&self, link: &Link, body: &Body, policy: Degrade) -> bool {
        let caps = self.capabilities(link);
        caps.outbound && body.clone().map_refs(|r| Some(Some(r))).and_then(|b| degrade(b, &caps, policy)).is_some()
    }

    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Submission>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while rx.recv_many(&mut batch, max_batch).await > 0 {
            self.commit_batch(std::mem::take(&mut batch)).await;
        }
    }

    async fn commit_batch(&self, batch: Vec<Submission>) {
        let key = |bridge: &str, room: &str, id: &str| RemoteKey {
            bridge: bridge.to_string(),
            room: room.to_string(),
            remote_id: id.to_string(),
        };
        let mut keys = Vec::new();
        for s in &batch {
            let room = &s.incoming.room;
            keys.extend(s.incoming.remote_id.iter().map(|id| key(&s.bridge, room, id)));
            keys.extend(s.incoming.body.refs().into_iter().map(|id| key(&s.bridge, room, id)));
        }
        let hits = match self.store.lookup_remotes(&keys).await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "message map lookup failed; refusing {} events", batch.len());
                for s in batch {
                    let _ = s.reply.send(Err(SubmitError::Unavailable("the store is not answering".into())));
                }
                return;
            }
        };
        // Ids accepted earlier in this same batch.
        let mut fresh: HashMap<RemoteKey, String> = HashMap::new();
        let mut new_events = Vec::with_capacity(batch.len());
        let mut replies = Vec::with_capacity(batch.len());
        for Submission { bridge, incoming, reply } in batch {
            let Incoming { room, sender, remote_id, aliases, at_ms, body } = incoming;
            let dropped = |reason: &str| self.metrics.dropped.get_or_create(&metrics::reason(&bridge, reason)).inc();
            if let Some(rid) = &remote_id {
                let k = key(&bridge, &room, rid);
                if let Some(hit) = hits.get(&k) {
                    let answer = if hit.origin {
                        dropped("duplicate");
                        Accepted::Duplicate { event_id: hit.event_id.clone() }
                    } else {
                        dropped("loop");
                        Accepted::Echo
                    };
                    let _ = reply.send(Ok(answer));
                    continue;
                }
                if let Some(event_id) = fresh.get(&k) {
                    dropped("duplicate");
                    let _ = reply.send(Ok(Accepted::Duplicate { event_id: event_id.clone() }));
                    continue;
                }
            }
            let translated = body.map_refs(|r| {
                let k = key(&bridge, &room, &r);
                fresh.get(&k).cloned().or_else(|| hits.get(&k).map(|h| h.event_id.clone()))
            });
            let Some(body) = translated else {
                dropped("unknown_target");
                let _ = reply.send(Ok(Accepted::Ignored { reason: "refers to a message Causeway never saw" }));
                continue;
            };
            let link = Link { bridge, room };
            let Some(&pi) = self.link_portal.get(&link) else {
                let _ = reply.send(Err(SubmitError::NotLinked(link.room)));
                continue;
            };
            let portal = &self.portals[pi];
            let Link { bridge, room } = link;
            let event_id = new_id();
            let sender = self.directory.resolve(&bridge, sender);
            let event = Event {
                id: event_id.clone(),
                portal: portal.id.clone(),
                origin: Origin { bridge: bridge.clone(), room: room.clone(), remote_id: remote_id.clone() },
                sender,
                at_ms: at_ms.unwrap_or_else(now_ms),
                body,
            };
            let deliveries = portal
                .links
                .iter()
                .filter(|l| !(l.bridge == bridge && l.room == room))
                .filter(|l| self.wanted_on(l, &event.body, portal.degrade))
                .map(|l| NewDelivery { id: new_id(), bridge: l.bridge.clone(), room: l.room.clone() })
                .collect();
            let origin_key = key(&bridge, &room, remote_id.as_deref().unwrap_or(&event_id));
            for a in &aliases {
                fresh.insert(key(&bridge, &room, a), event_id.clone());
            }
            fresh.insert(origin_key.clone(), event_id);
            new_events.push(NewEvent { event, origin_key, aliases, deliveries });
            replies.push(reply);
        }
        if new_events.is_empty() {
            return;
        }
        self.metrics.commit_batch.observe(new_events.len() as f64);
        match self.store.commit(&new_events).await {
            Ok(seqs) => {
                for ((ne, seq), reply) in new_events.into_iter().zip(seqs).zip(replies) {
                    let bridge = &ne.event.origin.bridge;
                    self.metrics.received.get_or_create(&metrics::bridge(bridge)).inc();
                    for d in &ne.deliveries {
                        self.metrics.outbox_depth.get_or_create(&metrics::bridge(&d.bridge)).inc();
                        self.wake_lane(&d.bridge, &d.room);
                    }
                    let _ = reply.send(Ok(Accepted::Stored { event_id: ne.event.id.clone() }));
                    // Nobody listening is fine.
                    let _ = self.committed.send(Arc::new(Committed { seq, event: ne.event }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; refusing {} events", replies.len());
                for reply in replies {
                    let _ = reply.send(Err(SubmitError::Unavailable("the store could not commit".into())));
                }
            }
        }
    }
}

#[async_trait]
impl Host for Router {
    async fn submit(&self, bridge: &str, incoming: Incoming) -> Result<Accepted, SubmitError> {
        let link = Link { bridge: bridge.to_string(), room: incoming.room.clone() };
        if !self.link_portal.contains_key(&link) {
            return Err(SubmitError::NotLinked(incoming.room));
        }
        if self.bridges.get(bridge).is_some_and(|b| b.is_own_sender(&incoming.room, &incoming.sender.id)) {
            self.metrics.dropped.get_or_create(&metrics::reason(bridge, "loop")).inc();
            return Ok(Accepted::Echo);
        }
        let (reply, answer) = oneshot::channel();
        let sub = Submission { bridge: link.bridge, incoming, reply };
        self.submissions.send(sub).await.map_err(|_| SubmitError::Unavailable("shutting down".into()))?;
        answer.await.map_err(|_| SubmitError::Unavailable("shutting down".into()))?
    }

    fn portal_of(&self, bridge: &str, room: &str) -> Option<String> {
        let link = Link { bridge: bridge.to_string(), room: room.to_string() };
        self.link_portal.get(&link).map(|&i| self.portals[i].id.clone())
    }

    fn rooms(&self, bridge: &str) -> Vec<String> {
        let mut rooms: Vec<String> = self.link_portal.keys().filter(|l| l.bridge == bridge).map(|l| l.room.clone()).collect();
        rooms.sort();
        rooms
    }

    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.committed.subscribe()
    }

    async fn history(&self, portal: &str, after_seq: i64, limit: u32) -> Result<Vec<Committed>, SubmitError> {
        self.store.history(portal, after_seq, limit).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }

    fn count_rejected(&self, bridge: &str, reason: &'static str) {
        self.metrics.rejected.get_or_create(&metrics::reason(bridge, reason)).inc();
    }

    async fn ids_of(&self, bridge: &str, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, SubmitError> {
        self.store.ids_of(bridge, room, remote_id).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }

    async fn load_state(&self, bridge: &str, key: &str) -> Result<Option<String>, SubmitError> {
        self.store.load_state(bridge, key).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }

    async fn save_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), SubmitError> {
        self.store.save_state(bridge, key, value).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }
}
