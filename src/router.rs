//! The router: takes events from bridges, drops echoes and duplicates,
//! resolves portal and person, and commits archive + message map + one
//! outbox row per other link in ONE transaction before anyone is acked.
//!
//! All submissions go through one writer task that commits them in groups
//! (group commit): under load one transaction carries many events, so
//! durability costs one disk flush per group, not per event. The single
//! writer also gives every portal one total order.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use causeway_core::{
    Accepted, Body, Bridge, Capabilities, Committed, Degrade, Delivery, DirectError, Event, Host, IdKind, Incoming, Origin, Recipient,
    RemoteSender, Sender, SubmitError, degrade, new_id, now_ms,
};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::config::Config;
use crate::directory::Directory;
use crate::metrics::{self, Metrics};
use crate::outbox::LaneFeed;
use crate::presence::PresenceBook;
use crate::store::{Author, MapHit, NewDelivery, NewEvent, OutboxItem, RemoteKey, Store, StoredLink, StoredPortal};

/// Tell the networks when people have gone idle: a presence said where each
/// spoke last.
async fn idle_watch(router: std::sync::Weak<Router>, tick: std::time::Duration) {
    loop {
        tokio::time::sleep(tick).await;
        let Some(router) = router.upgrade() else { return };
        for (link, sender, (show, status)) in router.presence.idle_now(now_ms()) {
            let incoming = Incoming {
                room: link.room,
                sender: RemoteSender { id: sender, name: None, avatar: None },
                remote_id: None,
                aliases: Vec::new(),
                at_ms: None,
                body: Body::Presence { show, status },
            };
            let (reply, _) = oneshot::channel();
            let sub = Submission { bridge: link.bridge, incoming, reply, synthetic: true, back_to_origin: false };
            if router.submissions.send(sub).await.is_err() {
                return;
            }
        }
    }
}

/// Whether `text` is `pattern`, where `*` stands for any run of characters.
fn glob_match(pattern: &str, text: &str) -> bool {
    let mut parts = pattern.split('*');
    let first = parts.next().unwrap_or_default();
    let Some(mut rest) = text.strip_prefix(first) else { return false };
    let parts: Vec<&str> = parts.collect();
    let Some((last, middle)) = parts.split_last() else { return rest.is_empty() };
    for p in middle {
        match rest.find(p) {
            Some(i) => rest = &rest[i + p.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

/// Who Causeway's own notices come from.
pub const NOTICE_SENDER: &str = "causeway";

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

/// Which rooms make which portal, and which links receive deliveries.
/// Configured portals are fixed; direct conversations are added at run time.
#[derive(Default)]
struct Topology {
    /// Only ever appended to, so an index stays valid.
    portals: Vec<Portal>,
    /// Link → index into `portals`.
    link_portal: HashMap<Link, usize>,
    /// What feeds each outbox lane (a link that receives deliveries).
    lanes: HashMap<Link, Arc<LaneFeed>>,
}

struct Submission {
    bridge: String,
    incoming: Incoming,
    reply: oneshot::Sender<Result<Accepted, SubmitError>>,
    /// Said by Causeway itself (a person gone idle): shown as it is, not a
    /// report of one of their accounts.
    synthetic: bool,
    /// Delivered only to the room it names (a notice to the sender's room),
    /// not to the portal's other links.
    back_to_origin: bool,
}

pub struct Router {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    bridges: BTreeMap<String, Arc<dyn Bridge>>,
    topology: RwLock<Topology>,
    default_degrade: Degrade,
    directory: RwLock<Arc<Directory>>,
    submissions: mpsc::Sender<Submission>,
    committed: broadcast::Sender<Arc<Committed>>,
    /// Lanes added at run time, for the outbox to start.
    new_lanes: mpsc::UnboundedSender<(Link, Arc<LaneFeed>)>,
    new_lanes_rx: Mutex<Option<mpsc::UnboundedReceiver<(Link, Arc<LaneFeed>)>>>,
    /// One direct conversation is opened at a time (two first messages of
    /// the same conversation must not open it twice).
    opening: tokio::sync::Mutex<()>,
    pub presence: PresenceBook,
    /// `outbox.notify_dead_letters`.
    notify_dead_letters: bool,
    /// `router.ignore`: per bridge, senders never taken in.
    ignore: BTreeMap<String, Vec<String>>,
    /// `router.peer`: the shared secret of the marks, and the standby wait.
    peer_secret: Option<causeway_core::Secret>,
    pub standby: Option<std::time::Duration>,
    /// (bridge, room, origin id) → the id of the peer's copy there, and
    /// when it was seen (`router.peer.standby`; forgotten after a while).
    relayed_elsewhere: Mutex<HashMap<(String, String, String), (Option<String>, std::time::Instant)>>,
    /// `router.direct`, and the strangers' conversations opened in the
    /// current hour (when it began, how many).
    direct: crate::config::DirectConfig,
    strangers_opened: Mutex<(std::time::Instant, u32)>,
}

/// How long another bridge's copies are remembered (far longer than any
/// `router.standby`).
const RELAYED_ELSEWHERE_FOR: std::time::Duration = std::time::Duration::from_secs(600);
/// Copies remembered at most.
const RELAYED_ELSEWHERE_MAX: usize = 100_000;

impl Router {
    /// Build the router and start its writer task. `stored` are the portals
    /// opened at run time before (direct conversations).
    pub fn start(
        config: &Config,
        bridges: BTreeMap<String, Arc<dyn Bridge>>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        stored: Vec<StoredPortal>,
    ) -> Arc<Router> {
        let default_degrade = config.router.degrade;
        let max_batch = config.store.max_batch;
        let (tx, rx) = mpsc::channel(max_batch * 4);
        let (committed, _) = broadcast::channel(4096);
        let (new_lanes, new_lanes_rx) = mpsc::unbounded_channel();
        let router = Arc::new(Router {
            store,
            metrics,
            bridges,
            topology: RwLock::new(Topology::default()),
            default_degrade,
            directory: RwLock::new(Arc::new(Directory::new(&config.people))),
            submissions: tx,
            committed,
            new_lanes,
            new_lanes_rx: Mutex::new(Some(new_lanes_rx)),
            opening: tokio::sync::Mutex::new(()),
            presence: PresenceBook::new(config.router.presence.idle_after),
            notify_dead_letters: config.outbox.notify_dead_letters,
            ignore: config.router.ignore.clone(),
            peer_secret: config.router.peer.as_ref().map(|p| p.secret.clone()),
            standby: config.router.peer.as_ref().and_then(|p| p.standby),
            relayed_elsewhere: Mutex::new(HashMap::new()),
            direct: config.router.direct.clone(),
            strangers_opened: Mutex::new((std::time::Instant::now(), 0)),
        });
        for p in &config.portals {
            let links = p.links.iter().map(|l| Link { bridge: l.bridge.clone(), room: l.room.clone() }).collect();
            router.add_portal(Portal { id: p.id.clone(), links, degrade: p.degrade.unwrap_or(default_degrade) });
        }
        for p in stored {
            let links: Vec<Link> = p
                .links
                .into_iter()
                .map(|l| Link { bridge: l.bridge, room: l.room })
                .filter(|l| {
                    let known = router.bridges.get(&l.bridge).is_some_and(|b| b.check_room(&l.room).is_ok());
                    let free = router.portal_index(l).is_none();
                    if !(known && free) {
                        tracing::warn!(portal = %p.id, bridge = %l.bridge, room = %l.room,
                            "a stored direct conversation's room is no longer available (bridge removed, or the room is now configured); left out");
                    }
                    known && free
                })
                .collect();
            if links.len() >= 2 {
                router.add_portal(Portal { id: p.id, links, degrade: default_degrade });
            }
        }
        tokio::spawn(router.clone().writer(rx, max_batch));
        if let Some(tick) = router.presence.tick() {
            tokio::spawn(idle_watch(Arc::downgrade(&router), tick));
        }
        router
    }

    fn topology(&self) -> std::sync::RwLockReadGuard<'_, Topology> {
        self.topology.read().unwrap_or_else(|p| p.into_inner())
    }

    fn portal_index(&self, link: &Link) -> Option<usize> {
        self.topology().link_portal.get(link).copied()
    }

    /// Add a portal (or, when one of its links is taken, add its other
    /// links to that portal); new receiving links get a lane. Returns the
    /// id of the portal the links are in.
    fn add_portal(&self, portal: Portal) -> String {
        let Portal { id, links, degrade } = portal;
        let mut t = self.topology.write().unwrap_or_else(|p| p.into_inner());
        let index = match links.iter().find_map(|l| t.link_portal.get(l).copied()) {
            Some(i) => i,
            None => {
                t.portals.push(Portal { id, links: Vec::new(), degrade });
                t.portals.len() - 1
            }
        };
        for l in links {
            if t.link_portal.contains_key(&l) {
                continue;
            }
            t.link_portal.insert(l.clone(), index);
            t.portals[index].links.push(l.clone());
            if self.bridges.get(&l.bridge).is_some_and(|b| b.capabilities(&l.room).outbound) {
                let feed = Arc::new(LaneFeed::default());
                t.lanes.insert(l.clone(), feed.clone());
                // The outbox reads this channel once it runs (see take_lanes).
                let _ = self.new_lanes.send((l, feed));
            }
        }
        t.portals[index].id.clone()
    }

    /// The directory's id of `person` (however its case is written).
    pub fn person_id(&self, person: &str) -> Option<String> {
        self.directory().person(person).map(|p| p.id.clone())
    }

    /// The directory as it is now.
    pub fn directory(&self) -> Arc<Directory> {
        self.directory.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Use this directory from now on (a new import).
    pub fn set_directory(&self, directory: Directory) {
        *self.directory.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(directory);
    }

    /// Lanes as they are now, and from now on every lane added later.
    pub fn take_lanes(&self) -> (Vec<(Link, Arc<LaneFeed>)>, mpsc::UnboundedReceiver<(Link, Arc<LaneFeed>)>) {
        let mut rx = self.new_lanes_rx.lock().unwrap_or_else(|p| p.into_inner()).take().expect("lanes taken once");
        // Under the lock no lane is added: those announced so far are in
        // the snapshot, those added later come through `rx`.
        let t = self.topology();
        while rx.try_recv().is_ok() {}
        let now = t.lanes.iter().map(|(l, n)| (l.clone(), n.clone())).collect();
        (now, rx)
    }

    /// Tell a lane it has rows to read from the store.
    pub fn wake_lane(&self, bridge: &str, room: &str) {
        if let Some(feed) = self.topology().lanes.get(&Link { bridge: bridge.into(), room: room.into() }) {
            feed.wake();
        }
    }

    /// Tell the people of `room` something (a message of theirs that did
    /// not reach another network): a notice from Causeway, archived in the
    /// portal and delivered to that room alone. Returns once committed.
    pub async fn notify(&self, link: &Link, text: String) -> Result<Accepted, SubmitError> {
        let incoming = Incoming {
            room: link.room.clone(),
            sender: RemoteSender { id: NOTICE_SENDER.into(), name: Some("Causeway".into()), avatar: None },
            remote_id: None,
            aliases: Vec::new(),
            at_ms: None,
            body: Body::Message {
                text: causeway_core::Text::plain(text),
                kind: causeway_core::MessageKind::Notice,
                attachments: Vec::new(),
                reply_to: None,
                thread: None,
                mentions: Vec::new(),
            },
        };
        self.submit_to_writer(link.bridge.clone(), incoming, true, true).await
    }

    /// Hand a submission to the writer and wait for its answer.
    async fn submit_to_writer(
        &self,
        bridge: String,
        incoming: Incoming,
        synthetic: bool,
        back_to_origin: bool,
    ) -> Result<Accepted, SubmitError> {
        let (reply, answer) = oneshot::channel();
        let sub = Submission { bridge, incoming, reply, synthetic, back_to_origin };
        self.submissions.send(sub).await.map_err(|_| SubmitError::Unavailable("shutting down".into()))?;
        answer.await.map_err(|_| SubmitError::Unavailable("shutting down".into()))?
    }

    /// The notice a dead letter for `target` gives the room its message came
    /// from, where `outbox.notify_dead_letters` wants one: only for messages
    /// people wrote (never for a notice, so notices never beget notices).
    pub fn dead_letter_notice(&self, target: &Link, event: &Event, reason: &str) -> Option<(Link, String)> {
        let Body::Message { text, kind, .. } = &event.body else { return None };
        if !self.notify_dead_letters || *kind == causeway_core::MessageKind::Notice {
            return None;
        }
        let origin = Link { bridge: event.origin.bridge.clone(), room: event.origin.room.clone() };
        let quote: String = text.plain.chars().take(60).collect();
        let more = if text.plain.chars().count() > 60 { "…" } else { "" };
        let reason: String = reason.chars().take(200).collect();
        Some((
            origin,
            format!("Not delivered to {} ({}): \"{quote}{more}\" from {}: {reason}", target.room, target.bridge, event.sender.name),
        ))
    }

    /// The degradation policy of the portal a link belongs to.
    pub fn degrade_policy(&self, link: &Link) -> Degrade {
        let t = self.topology();
        t.link_portal.get(link).map(|&i| t.portals[i].degrade).unwrap_or(self.default_degrade)
    }

    fn capabilities(&self, link: &Link) -> Capabilities {
        self.bridges.get(&link.bridge).map(|b| b.capabilities(&link.room)).unwrap_or(Capabilities::NONE)
    }

    /// Whether `body` would show anything at all on `link`.
    fn wanted_on(&self, link: &Link, body: &Body, policy: Degrade) -> bool {
        let caps = self.capabilities(link);
        let policy = self.bridges.get(&link.bridge).map_or(policy, |b| b.degrade_for(&link.room, body.kind(), policy));
        caps.outbound && body.clone().map_refs(|r| Some(Some(r))).and_then(|b| degrade(b, &caps, policy)).is_some()
    }

    /// Whether `sender` on `bridge`, no person of the directory, may open a
    /// direct conversation now (`router.direct`).
    fn stranger_may_open(&self, bridge: &str, sender: &str) -> Result<(), DirectError> {
        if let Some(patterns) = self.direct.strangers.get(bridge)
            && !patterns.iter().any(|p| glob_match(p, sender))
        {
            return Err(DirectError::NotAllowed(format!("{sender} is not among those who may write to people here one to one")));
        }
        let open = self.topology().portals.iter().filter(|p| p.id.starts_with("dm-")).count();
        if open >= self.direct.max_open {
            return Err(DirectError::Limited(format!("{open} are open (router.direct.max_open)")));
        }
        let mut opened = self.strangers_opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if opened.0.elapsed() >= std::time::Duration::from_secs(3600) {
            *opened = (std::time::Instant::now(), 0);
        }
        if opened.1 >= self.direct.strangers_per_hour {
            return Err(DirectError::Limited(format!("{} opened this hour (router.direct.strangers_per_hour)", opened.1)));
        }
        Ok(())
    }

    /// `with` as the router names it: a person by their configured id, an
    /// account that belongs to a person as that person.
    fn canonical(&self, with: &Recipient) -> Result<Recipient, DirectError> {
        match with {
            Recipient::Person(id) => self
                .directory()
                .person(id)
                .map(|p| Recipient::Person(p.id.clone()))
                .ok_or_else(|| DirectError::Unknown(format!("nobody called {id:?} in the directory"))),
            Recipient::Account { bridge, id } => {
                if !self.bridges.contains_key(bridge) {
                    return Err(DirectError::Unknown(format!("no bridge named {bridge:?}")));
                }
                Ok(match self.directory().person_of(bridge, id) {
                    Some(p) => Recipient::Person(p.id.clone()),
                    None => with.clone(),
                })
            }
        }
    }

    /// Where a direct conversation with `with` goes: (bridge, account) pairs
    /// to try, in order.
    fn direct_targets(&self, from_bridge: &str, with: &Recipient) -> Result<Vec<(String, String)>, DirectError> {
        match with {
            Recipient::Person(id) => {
                let directory = self.directory();
                let person = directory.person(id).ok_or_else(|| DirectError::Unknown(format!("nobody called {id:?} in the directory")))?;
                let targets: Vec<_> =
                    person.accounts.iter().filter(|(b, _)| b.as_str() != from_bridge).map(|(b, a)| (b.clone(), a.clone())).collect();
                if targets.is_empty() {
                    return Err(DirectError::Unsupported(format!("{} has no account on another network", person.name)));
                }
                Ok(targets)
            }
            Recipient::Account { bridge, id } => {
                if !self.bridges.contains_key(bridge) {
                    return Err(DirectError::Unknown(format!("no bridge named {bridge:?}")));
                }
                if bridge == from_bridge {
                    return Err(DirectError::Unsupported(format!("{id} is on this network: write to them directly")));
                }
                Ok(vec![(bridge.clone(), id.clone())])
            }
        }
    }

    async fn writer(self: Arc<Self>, mut rx: mpsc::Receiver<Submission>, max_batch: usize) {
        let mut batch = Vec::with_capacity(max_batch);
        while rx.recv_many(&mut batch, max_batch).await > 0 {
            self.commit_batch(std::mem::take(&mut batch)).await;
        }
    }

    /// Another bridge's copy, in `link`'s room, of the message that came in
    /// under `origin` (its id on the network it came from), if one was seen:
    /// `Some(its id there)`.
    pub fn copy_elsewhere(&self, link: &Link, origin: &str) -> Option<Option<String>> {
        let seen = self.relayed_elsewhere.lock().unwrap_or_else(|e| e.into_inner());
        seen.get(&(link.bridge.clone(), link.room.clone(), origin.to_string()))
            .filter(|(_, at)| at.elapsed() < RELAYED_ELSEWHERE_FOR)
            .map(|(c, _)| c.clone())
    }

    /// Whether `sender` (on `bridge`) may edit or take back the event
    /// `target`: only who said it may — the same account, or the same
    /// person of the directory. `hits` and `batch` are where the target's
    /// author is found (the store, or earlier in this batch).
    fn may_change(&self, bridge: &str, sender: &Sender, target: &str, hits: &HashMap<RemoteKey, MapHit>, batch: &[NewEvent]) -> bool {
        let author = hits.values().find(|h| h.event_id == target).and_then(|h| h.author.clone()).or_else(|| {
            batch.iter().find(|ne| ne.event.id == target).map(|ne| Author {
                bridge: ne.event.origin.bridge.clone(),
                sender: ne.event.sender.id.clone(),
                person: ne.event.sender.person.clone(),
            })
        });
        match author {
            Some(a) => (a.bridge == bridge && a.sender == sender.id) || (a.person.is_some() && a.person == sender.person),
            None => false,
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
        // One per event; none for an event the router adds itself.
        let mut replies: Vec<Option<oneshot::Sender<Result<Accepted, SubmitError>>>> = Vec::with_capacity(batch.len());
        for Submission { bridge, incoming, reply, synthetic, back_to_origin } in batch {
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
            let topology = self.topology();
            let Some(&pi) = topology.link_portal.get(&link) else {
                drop(topology);
                let _ = reply.send(Err(SubmitError::NotLinked(link.room)));
                continue;
            };
            let portal = &topology.portals[pi];
            let Link { bridge, room } = link;
            let event_id = new_id();
            let sender = self.directory().resolve(&bridge, sender);
            if let Some(target) = authored_target(&body)
                && !self.may_change(&bridge, &sender, target, &hits, &new_events)
            {
                drop(topology);
                self.metrics.dropped.get_or_create(&metrics::reason(&bridge, "forged_reference")).inc();
                tracing::info!(bridge = %bridge, room = %room, sender = %sender.id, kind = body.kind(), "dropping a change of someone else's message");
                let _ = reply.send(Ok(Accepted::Ignored { reason: "only its sender may change or take back a message" }));
                continue;
            }
            let at_ms = at_ms.unwrap_or_else(now_ms);
            // A person's presence is what their accounts say together; what
            // they say wakes them from idle.
            let mut back = None;
            let body = match (&sender.person, body) {
                (Some(p), Body::Presence { show, status }) if !synthetic => match self.presence.report(p, &bridge, show, status, at_ms) {
                    Some((show, status)) => {
                        self.metrics.presence_updates.get_or_create(&metrics::bridge(&bridge)).inc();
                        Body::Presence { show, status }
                    }
                    None => {
                        drop(topology);
                        let _ = reply.send(Ok(Accepted::Ignored { reason: "presence unchanged" }));
                        continue;
                    }
                },
                (Some(p), body @ Body::Message { .. }) => {
                    back = self.presence.active(p, &Link { bridge: bridge.clone(), room: room.clone() }, &sender.id, at_ms);
                    body
                }
                (_, body) => body,
            };
            let deliveries_for = |body: &Body| -> Vec<NewDelivery> {
                portal
                    .links
                    .iter()
                    .filter(|l| (l.bridge == bridge && l.room == room) == back_to_origin)
                    .filter(|l| self.wanted_on(l, body, portal.degrade))
                    .map(|l| NewDelivery { id: new_id(), bridge: l.bridge.clone(), room: l.room.clone() })
                    .collect()
            };
            let deliveries = deliveries_for(&body);
            let extra = back.map(|(show, status)| {
                let body = Body::Presence { show, status };
                let id = new_id();
                let origin = Origin { bridge: bridge.clone(), room: room.clone(), remote_id: None };
                let deliveries = deliveries_for(&body);
                let event = Event { id: id.clone(), portal: portal.id.clone(), origin, sender: sender.clone(), at_ms, body };
                NewEvent { event, origin_key: key(&bridge, &room, &id), aliases: Vec::new(), deliveries }
            });
            let event = Event {
                id: event_id.clone(),
                portal: portal.id.clone(),
                origin: Origin { bridge: bridge.clone(), room: room.clone(), remote_id: remote_id.clone() },
                sender,
                at_ms,
                body,
            };
            drop(topology);
            let origin_key = key(&bridge, &room, remote_id.as_deref().unwrap_or(&event_id));
            for a in &aliases {
                fresh.insert(key(&bridge, &room, a), event_id.clone());
            }
            fresh.insert(origin_key.clone(), event_id);
            new_events.push(NewEvent { event, origin_key, aliases, deliveries });
            replies.push(Some(reply));
            if let Some(e) = extra {
                new_events.push(e);
                replies.push(None);
            }
        }
        if new_events.is_empty() {
            return;
        }
        self.metrics.commit_batch.observe(new_events.len() as f64);
        match self.store.commit(&new_events).await {
            Ok(stored) => {
                let now = now_ms();
                for ((ne, stored), reply) in new_events.into_iter().zip(stored).zip(replies) {
                    let bridge = &ne.event.origin.bridge;
                    self.metrics.received.get_or_create(&metrics::bridge(bridge)).inc();
                    {
                        // Each lane gets its new rows in hand: it need not
                        // read back what was just written.
                        let t = self.topology();
                        for (i, d) in ne.deliveries.iter().enumerate() {
                            self.metrics.outbox_depth.get_or_create(&metrics::bridge(&d.bridge)).inc();
                            let Some(feed) = t.lanes.get(&Link { bridge: d.bridge.clone(), room: d.room.clone() }) else {
                                continue;
                            };
                            match stored.outbox.get(i) {
                                Some(&seq) => feed.push(OutboxItem {
                                    seq,
                                    delivery_id: d.id.clone(),
                                    attempts: 0,
                                    enqueued_ms: now,
                                    first_failed_ms: None,
                                    recipient: None,
                                    event: ne.event.clone(),
                                }),
                                None => feed.wake(),
                            }
                        }
                    }
                    let seq = stored.seq;
                    if let Some(reply) = reply {
                        let _ = reply.send(Ok(Accepted::Stored { event_id: ne.event.id.clone() }));
                    }
                    // Nobody listening is fine.
                    let _ = self.committed.send(Arc::new(Committed { seq, event: ne.event }));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "commit failed; refusing {} events", replies.len());
                for reply in replies.into_iter().flatten() {
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
        if self.portal_index(&link).is_none() {
            return Err(SubmitError::NotLinked(incoming.room));
        }
        let ignored = self.ignore.get(bridge).is_some_and(|patterns| patterns.iter().any(|p| glob_match(p, &incoming.sender.id)));
        if ignored || self.bridges.get(bridge).is_some_and(|b| b.is_own_sender(&incoming.room, &incoming.sender.id)) {
            self.metrics.dropped.get_or_create(&metrics::reason(bridge, "loop")).inc();
            return Ok(Accepted::Echo);
        }
        self.submit_to_writer(link.bridge, incoming, false, false).await
    }

    fn portal_of(&self, bridge: &str, room: &str) -> Option<String> {
        let link = Link { bridge: bridge.to_string(), room: room.to_string() };
        let t = self.topology();
        t.link_portal.get(&link).map(|&i| t.portals[i].id.clone())
    }

    fn rooms(&self, bridge: &str) -> Vec<String> {
        let mut rooms: Vec<String> = self.topology().link_portal.keys().filter(|l| l.bridge == bridge).map(|l| l.room.clone()).collect();
        rooms.sort();
        rooms
    }

    fn account_of(&self, person: &str, bridge: &str) -> Option<String> {
        self.directory().person(person).and_then(|p| p.accounts.get(bridge).cloned())
    }

    fn canonical_recipient(&self, with: &Recipient) -> Result<Recipient, DirectError> {
        self.canonical(with)
    }

    async fn open_direct(&self, bridge: &str, room: &str, with: &Recipient, initiator: RemoteSender) -> Result<String, DirectError> {
        let _one_at_a_time = self.opening.lock().await;
        if let Some(portal) = self.portal_of(bridge, room) {
            return Ok(portal);
        }
        let with = &self.canonical(with)?;
        let stranger = self.directory().person_of(bridge, &initiator.id).is_none();
        if stranger {
            if let Err(e) = self.stranger_may_open(bridge, &initiator.id) {
                let reason = if matches!(e, DirectError::NotAllowed(_)) { "direct_not_allowed" } else { "direct_limit" };
                self.metrics.rejected.get_or_create(&metrics::reason(bridge, reason)).inc();
                return Err(e);
            }
        }
        let peer = self.directory().resolve(bridge, initiator);
        let mut refusals = Vec::new();
        for (target, account) in self.direct_targets(bridge, with)? {
            let Some(b) = self.bridges.get(&target) else { continue };
            let target_room = match b.open_direct(&account, &peer, bridge).await {
                Ok(r) => r,
                Err(DirectError::Unavailable(e)) => return Err(DirectError::Unavailable(e)),
                Err(e) => {
                    refusals.push((matches!(e, DirectError::Unknown(_)), format!("{target}: {e}")));
                    continue;
                }
            };
            let links =
                vec![Link { bridge: bridge.to_string(), room: room.to_string() }, Link { bridge: target.clone(), room: target_room }];
            // The other side's room may be a conversation already (opened
            // from there): this room joins it, unless that conversation has
            // a room on this bridge already (the same two people through
            // another address), which would deliver everything twice.
            // Stored before it is used.
            let (id, mut all) = match self.portal_index(&links[1]) {
                Some(i) => {
                    let t = self.topology();
                    let p = &t.portals[i];
                    if let Some(other) = p.links.iter().find(|l| l.bridge == bridge) {
                        return Err(DirectError::Unsupported(format!(
                            "this conversation already runs through {}; write there",
                            other.room
                        )));
                    }
                    (p.id.clone(), p.links.clone())
                }
                None => (format!("dm-{}", new_id()), Vec::new()),
            };
            all.extend(links.iter().filter(|l| !all.contains(l)).cloned().collect::<Vec<_>>());
            let links_stored = all.into_iter().map(|l| StoredLink { bridge: l.bridge, room: l.room }).collect();
            let stored = StoredPortal { id: id.clone(), created_ms: now_ms(), links: links_stored };
            self.store.save_portal(&stored).await.map_err(|e| DirectError::Unavailable(e.to_string()))?;
            let id = self.add_portal(Portal { id, links, degrade: self.default_degrade });
            if stranger {
                self.strangers_opened.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1 += 1;
            }
            tracing::info!(portal = %id, bridge, room, with = %with, stranger, "opened a direct conversation");
            self.metrics.direct_opened.get_or_create(&metrics::bridge(bridge)).inc();
            return Ok(id);
        }
        let unknown_everywhere = refusals.iter().all(|(unknown, _)| *unknown);
        let why = refusals.into_iter().map(|(_, r)| r).collect::<Vec<_>>().join("; ");
        Err(if unknown_everywhere {
            DirectError::Unknown(format!("{with} cannot be reached: {why}"))
        } else {
            DirectError::Unsupported(format!("no network of {with} takes direct conversations ({why})"))
        })
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

    async fn refused_recipient(&self, bridge: &str, delivery: &Delivery, recipient: &str, reason: &str) -> Result<(), SubmitError> {
        // The same for the same recipient, so a retried delivery refused
        // again adds no second row.
        let hex: String = recipient.bytes().map(|b| format!("{b:02x}")).collect();
        let id = format!("{}.r{hex}", delivery.id);
        let fresh = self
            .store
            .dead_letter_recipient(&delivery.event.id, bridge, &delivery.room, &id, recipient, reason)
            .await
            .map_err(|e| SubmitError::Unavailable(e.to_string()))?;
        if !fresh {
            return Ok(());
        }
        tracing::error!(bridge, room = %delivery.room, recipient, delivery = %id, "dead letter for one recipient: {reason}");
        let label = metrics::bridge(bridge);
        self.metrics.dead_letters.get_or_create(&label).inc();
        self.metrics.dead_letter_depth.get_or_create(&label).inc();
        let target = Link { bridge: bridge.to_string(), room: format!("{} ({recipient})", delivery.room) };
        if let Some((origin, text)) = self.dead_letter_notice(&target, &delivery.event, reason)
            && let Err(e) = self.notify(&origin, text).await
        {
            tracing::warn!(bridge = %origin.bridge, room = %origin.room, "dead letter notice not sent: {e}");
        }
        Ok(())
    }

    fn sign_mark(&self, room: &str, origin: &str) -> Option<String> {
        let secret = self.peer_secret.as_ref()?;
        Some(causeway_core::sign::sign_hex(secret.expose().as_bytes(), mark_material(room, origin).as_bytes()))
    }

    fn relayed_by_peer(&self, bridge: &str, room: &str, origin: &str, sig: &str, copy: Option<&str>) {
        let Some(secret) = self.peer_secret.as_ref().filter(|_| self.standby.is_some()) else { return };
        let material = mark_material(room, origin);
        if origin.is_empty() || origin.len() > 256 || !causeway_core::sign::verify_hex(secret.expose().as_bytes(), material.as_bytes(), sig)
        {
            // Not the peer's: anyone can write a mark, only the peer signs it.
            tracing::debug!(bridge, room, origin, "a marked copy not signed by the peer");
            return;
        }
        let mut seen = self.relayed_elsewhere.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= RELAYED_ELSEWHERE_MAX {
            seen.retain(|_, (_, at)| at.elapsed() < RELAYED_ELSEWHERE_FOR);
            if seen.len() >= RELAYED_ELSEWHERE_MAX {
                return;
            }
        }
        tracing::debug!(bridge, room, origin, "the peer relayed it here");
        seen.insert((bridge.to_string(), room.to_string(), origin.to_string()), (copy.map(str::to_string), std::time::Instant::now()));
    }

    fn count_fetch_refused(&self, bridge: &str, reason: &'static str) {
        self.metrics.fetch_refused.get_or_create(&metrics::reason(bridge, reason)).inc();
    }

    fn count_held(&self, bridge: &str, reason: &'static str) {
        self.metrics.held_back.get_or_create(&metrics::reason(bridge, reason)).inc();
    }

    fn count_reconciled(&self, bridge: &str, n: u64) {
        self.metrics.reconciled.get_or_create(&metrics::bridge(bridge)).inc_by(n);
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

    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), SubmitError> {
        self.store.delete_state(bridge, key).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }
}

/// What the peer's mark signs: the room the copy is in and the id the
/// message had where it came from (a mark copied into another room is not
/// the peer's there).
fn mark_material(room: &str, origin: &str) -> String {
    format!("causeway-mark\n{room}\n{origin}")
}

/// The event an edit or a retraction changes, where only its sender may
/// (a retraction the network says a moderator made is not checked here).
fn authored_target(body: &Body) -> Option<&str> {
    match body {
        Body::Edit { target, .. } | Body::Retract { target, moderated: false } => Some(target),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn ignore_patterns_match_whole_ids_with_stars_for_any_run() {
        assert!(glob_match("@other_*:corp", "@other_alice:corp"));
        assert!(glob_match("@other_*:corp", "@other_:corp"));
        assert!(!glob_match("@other_*:corp", "@other_alice:corp.evil"));
        assert!(!glob_match("@other_*:corp", "x@other_alice:corp"));
        assert!(glob_match("*@bridge2.xmpp.test*", "ops@conference.xmpp.test/x@bridge2.xmpp.test/r"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "abc"));
        assert!(!glob_match("a*b*c", "acb"));
        assert!(!glob_match("ab*ba", "aba"), "the two ends may not overlap");
    }
}
