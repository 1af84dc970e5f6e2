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
use crate::presence::PresenceBook;
use crate::store::{Author, MapHit, NewDelivery, NewEvent, RemoteKey, Store, StoreError, Stored, StoredKind, StoredLink, StoredPortal};
use crate::topology::{Link, Portal, PortalKind, Topology};

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
            let sub = Submission { bridge: link.bridge, incoming, reply, synthetic: true, back_to_origin: false, quiet: false };
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
    /// Archived (so that it is known when it comes again) and delivered
    /// nowhere: a command such as `!broadcast`.
    quiet: bool,
}

pub struct Router {
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
    /// The running bridges, by name: changed while Causeway runs by a
    /// config reload ([`crate::running::Running`]).
    bridges: RwLock<BTreeMap<String, Arc<dyn Bridge>>>,
    topology: Arc<Topology>,
    directory: RwLock<Arc<Directory>>,
    submissions: mpsc::Sender<Submission>,
    committed: broadcast::Sender<Arc<Committed>>,
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
    relayed_elsewhere: Mutex<HashMap<CopyKey, (Option<String>, std::time::Instant)>>,
    /// `router.direct`, and the strangers' conversations opened in the
    /// current hour (when it began, how many).
    direct: crate::config::DirectConfig,
    strangers_opened: Mutex<(std::time::Instant, u32)>,
    /// `broadcast:`; broadcasts are planned one at a time, and a request
    /// made here wakes the planner.
    pub broadcast: crate::broadcast::BroadcastConfig,
    /// Portal id → its time zone, as configured.
    time_zones: RwLock<HashMap<String, String>>,
    /// What the portals' calendars hold (docs/calendars.md).
    calendars: crate::calendar::Book,
    planning: tokio::sync::Mutex<()>,
    broadcast_wake: tokio::sync::Notify,
}

/// The id of the portal whose links are the lanes to people (one
/// [`causeway_core::PEOPLE_ROOM`] per bridge that reaches people).
pub const PEOPLE_PORTAL: &str = "@people";

fn time_zones(portals: &[crate::config::PortalConfig]) -> HashMap<String, String> {
    portals.iter().filter_map(|p| Some((p.id.clone(), p.time_zone.clone()?))).collect()
}

impl Router {
    /// The configured portals' time zones, as a reload has them.
    pub fn set_time_zones(&self, portals: &[crate::config::PortalConfig]) {
        *self.time_zones.write().unwrap() = time_zones(portals);
        for p in portals {
            self.calendars.set_zone(&p.id, p.time_zone.as_deref());
        }
    }

    /// What the portals' calendars hold.
    pub fn calendars(&self) -> &crate::calendar::Book {
        &self.calendars
    }

    /// Announce `text` into every room of `portal` that shows notices, as
    /// Causeway's own notice, once per `key`: true when it was made now,
    /// false when it was made before (or the portal is gone).
    pub async fn announce(&self, portal: &str, key: &str, text: String) -> Result<bool, StoreError> {
        use causeway_core::MessageKind;
        let _one = self.planning.lock().await;
        let origin_key = remote_key(BROADCAST_ORIGIN, portal, key);
        if self.store.lookup_remotes(std::slice::from_ref(&origin_key)).await?.contains_key(&origin_key) {
            return Ok(false);
        }
        let Some(p) = self.topology.get(portal) else { return Ok(false) };
        let body = Body::message(causeway_core::Text::plain(text), MessageKind::Notice);
        let deliveries: Vec<NewDelivery> = p
            .links
            .iter()
            .filter(|l| self.wanted_on(l, &body, p.degrade))
            .map(|l| NewDelivery { id: new_id(), bridge: l.bridge.clone(), room: l.room.clone(), recipient: None })
            .collect();
        let event = Event {
            id: new_id(),
            portal: portal.to_string(),
            origin: Origin { bridge: BROADCAST_ORIGIN.into(), room: portal.to_string(), remote_id: Some(key.to_string()) },
            sender: Sender { id: NOTICE_SENDER.into(), person: None, name: "Causeway".into(), avatar: None },
            at_ms: now_ms(),
            body,
        };
        let ne = NewEvent { origin_key, event, aliases: Vec::new(), deliveries };
        let Some(stored) = self.store.commit(std::slice::from_ref(&ne)).await?.pop() else { return Ok(false) };
        self.after_commit(ne, &stored, now_ms());
        Ok(true)
    }
}
/// The origin bridge of a broadcast's event (no bridge is called this).
pub const BROADCAST_ORIGIN: &str = "causeway";

/// (bridge, room, the id the message had where it came from).
type CopyKey = (String, String, String);

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
        let router = Arc::new(Router {
            store,
            metrics,
            bridges: RwLock::new(bridges),
            topology: Arc::new(Topology::new(default_degrade).sharing_the_store(config.cluster.is_some())),
            directory: RwLock::new(Arc::new(Directory::new(&config.people))),
            submissions: tx,
            committed,
            opening: tokio::sync::Mutex::new(()),
            presence: PresenceBook::new(config.router.presence.idle_after),
            notify_dead_letters: config.outbox.notify_dead_letters,
            ignore: config.router.ignore.clone(),
            peer_secret: config.router.peer.as_ref().map(|p| p.secret.clone()),
            standby: config.router.peer.as_ref().and_then(|p| p.standby),
            relayed_elsewhere: Mutex::new(HashMap::new()),
            direct: config.router.direct.clone(),
            strangers_opened: Mutex::new((std::time::Instant::now(), 0)),
            broadcast: config.broadcast.clone(),
            time_zones: RwLock::new(time_zones(&config.portals)),
            calendars: crate::calendar::Book::new(),
            planning: tokio::sync::Mutex::new(()),
            broadcast_wake: tokio::sync::Notify::new(),
        });
        for (name, b) in router.bridges() {
            router.reach_people_through(&name, &b);
        }
        for p in &config.portals {
            let links = p.links.iter().map(|l| Link { bridge: l.bridge.clone(), room: l.room.clone() }).collect();
            router.add_portal(Portal {
                id: p.id.clone(),
                kind: PortalKind::Configured,
                links,
                degrade: p.degrade.unwrap_or(default_degrade),
            });
        }
        router.set_time_zones(&config.portals);
        for p in stored {
            let links: Vec<Link> = p
                .links
                .into_iter()
                .map(|l| Link { bridge: l.bridge, room: l.room })
                .filter(|l| {
                    let known = router.bridge(&l.bridge).is_some_and(|b| b.check_room(&l.room).is_ok());
                    let free = !router.topology.is_linked(l);
                    if !(known && free) {
                        tracing::warn!(portal = %p.id, bridge = %l.bridge, room = %l.room,
                            "a stored direct conversation's room is no longer available (bridge removed, or the room is now configured); left out");
                    }
                    known && free
                })
                .collect();
            let kind = match p.kind {
                StoredKind::Direct => PortalKind::Direct,
                StoredKind::Console => PortalKind::Console,
            };
            if links.len() >= 2 {
                router.add_portal(Portal { id: p.id, kind, links, degrade: default_degrade });
            }
        }
        tokio::spawn(router.clone().writer(rx, max_batch));
        if let Some(tick) = router.presence.tick() {
            tokio::spawn(idle_watch(Arc::downgrade(&router), tick));
        }
        router
    }

    /// Which rooms make which portal, and the outbox lanes.
    pub fn topology(&self) -> &Arc<Topology> {
        &self.topology
    }

    /// The running bridge of this name.
    pub fn bridge(&self, name: &str) -> Option<Arc<dyn Bridge>> {
        self.bridges.read().unwrap_or_else(|p| p.into_inner()).get(name).cloned()
    }

    /// Every running bridge, by name, as it is now.
    pub fn bridges(&self) -> BTreeMap<String, Arc<dyn Bridge>> {
        self.bridges.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// `name` runs as `bridge` from now on (`None`: it does not run). The
    /// outbox's lanes take the bridge of their link at each delivery.
    pub(crate) fn set_bridge(&self, name: &str, bridge: Option<Arc<dyn Bridge>>) {
        let mut map = self.bridges.write().unwrap_or_else(|p| p.into_inner());
        match &bridge {
            Some(b) => map.insert(name.to_string(), b.clone()),
            None => map.remove(name),
        };
        drop(map);
        if let Some(b) = bridge {
            self.reach_people_through(name, &b);
        }
    }

    /// A lane to people through `bridge`, if it reaches people (kept while
    /// Causeway runs: rows wait in it while the bridge does not run).
    fn reach_people_through(&self, name: &str, bridge: &Arc<dyn Bridge>) {
        let link = Link::new(name, causeway_core::PEOPLE_ROOM);
        if bridge.reaches_people() && !self.topology.is_linked(&link) {
            self.topology
                .add(Portal { id: PEOPLE_PORTAL.into(), kind: PortalKind::Broadcast, links: vec![link], degrade: Degrade::Notice }, |_| {
                    true
                });
        }
    }

    /// The store, for the broadcasts' planner and status.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Keep a broadcast asked for here, and wake the planner.
    pub async fn request_broadcast(&self, requested: &crate::broadcast::Requested) -> Result<(), StoreError> {
        self.store.request_broadcast(requested).await?;
        self.broadcast_wake.notify_one();
        Ok(())
    }

    /// A broadcast was asked for in this process.
    pub async fn broadcast_requested(&self) {
        self.broadcast_wake.notified().await;
    }

    /// The running bridges that reach people, with their types.
    fn people_bridges(&self) -> crate::broadcast::plan::PeopleBridges {
        self.bridges().into_iter().filter(|(_, b)| b.reaches_people()).map(|(n, b)| (n, b.kind())).collect()
    }

    /// Plan every broadcast asked for and not planned yet: choose its
    /// recipients and commit its event, deliveries and recipients in one
    /// transaction; one that cannot be sent is refused with why. A store
    /// that does not answer leaves them for the next round.
    pub async fn plan_broadcasts(&self) {
        let _one = self.planning.lock().await;
        let waiting = match self.store.unplanned_broadcasts().await {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the broadcasts asked for");
                return;
            }
        };
        for requested in waiting {
            if let Err(e) = self.plan_broadcast(&requested).await {
                tracing::warn!(broadcast = %requested.id, error = %e, "broadcast not planned yet; trying again");
                return;
            }
        }
    }

    async fn plan_broadcast(&self, requested: &crate::broadcast::Requested) -> Result<(), StoreError> {
        use causeway_core::MessageKind;
        let request = &requested.request;
        let body = Body::Message {
            text: request.text.clone(),
            kind: MessageKind::Notice,
            attachments: request.attachments.clone(),
            reply_to: None,
            thread: None,
            mentions: Vec::new(),
        };
        let directory = self.directory();
        let portals = self.topology.portals();
        let receives = |l: &Link| self.topology.portal(l).is_some_and(|p| self.wanted_on(l, &body, p.degrade));
        let recipients =
            match crate::broadcast::plan::plan(request, &self.broadcast, &directory, &portals, &self.people_bridges(), receives) {
                Ok(r) => r,
                Err(why) => {
                    tracing::warn!(broadcast = %requested.id, "broadcast refused: {why}");
                    self.metrics.broadcasts.get_or_create(&metrics::result("refused")).inc();
                    return self.store.refuse_broadcast(&requested.id, &why).await;
                }
            };
        let portal = requested.portal();
        let person = request.from_person.as_ref().and_then(|p| directory.person(p));
        let sender = Sender {
            id: request.from_person.clone().unwrap_or_else(|| NOTICE_SENDER.to_string()),
            person: person.map(|p| p.id.clone()),
            name: request.from_name.clone(),
            avatar: person.and_then(|p| p.avatar.clone()),
        };
        let id = new_id();
        let event = Event {
            id: id.clone(),
            portal: portal.clone(),
            origin: Origin { bridge: BROADCAST_ORIGIN.into(), room: portal.clone(), remote_id: None },
            sender,
            at_ms: now_ms(),
            body,
        };
        let deliveries: Vec<NewDelivery> = recipients
            .iter()
            .filter_map(|r| {
                Some(NewDelivery {
                    id: r.delivery_id.clone()?,
                    bridge: r.bridge.clone()?,
                    room: r.room.clone()?,
                    recipient: r.account.clone(),
                })
            })
            .collect();
        let ne = NewEvent { origin_key: remote_key(BROADCAST_ORIGIN, &portal, &id), event, aliases: Vec::new(), deliveries };
        let planned = crate::broadcast::Planned { id: requested.id.clone(), event_id: id, recipients };
        let stored = self.store.commit_broadcast(&ne, &planned).await?;
        let rooms = planned.recipients.iter().filter(|r| r.person.is_none()).count();
        let unreachable = planned.recipients.iter().filter(|r| r.delivery_id.is_none()).count();
        tracing::info!(broadcast = %requested.id, by = %requested.requested_by, rooms, people = planned.recipients.len() - rooms, unreachable,
            "broadcast planned");
        self.metrics.broadcasts.get_or_create(&metrics::result("planned")).inc();
        self.after_commit(ne, &stored, now_ms());
        Ok(())
    }

    /// `!broadcast …` from `sender` in `link`'s room: broadcast it when the
    /// sender may, and say in the room what became of it.
    async fn broadcast_command(&self, link: &Link, sender: &Sender, command: crate::broadcast::Command) {
        let directory = self.directory();
        let person = sender.person.as_ref().and_then(|p| directory.person(p));
        let answer = match (person, command) {
            (_, crate::broadcast::Command::Invalid(why)) => why,
            (None, _) => "Only people of the directory may broadcast.".to_string(),
            (Some(p), crate::broadcast::Command::Send(to, text)) if self.broadcast.may_send(p, &to) => {
                match crate::broadcast::Request::new(to, &text, None, Vec::new(), &p.name) {
                    Err(why) => format!("Not broadcast: {why}."),
                    Ok(mut request) => {
                        request.from_person = Some(p.id.clone());
                        let requested = crate::broadcast::Requested::new(&format!("person:{}", p.id), request);
                        match self.store.request_broadcast(&requested).await {
                            Err(e) => format!("Not broadcast: the store is not answering ({e})."),
                            Ok(()) => {
                                self.plan_broadcasts().await;
                                match self.store.broadcasts(Some(&requested.id), 1).await.ok().and_then(|mut s| s.pop()) {
                                    Some(s) if s.error.is_some() => format!("Not broadcast: {}.", s.error.unwrap_or_default()),
                                    Some(s) => format!(
                                        "Broadcast {} is on its way to {} recipients ({} cannot be reached).",
                                        s.requested.id, s.counts.total, s.counts.unreachable
                                    ),
                                    None => format!("Broadcast {} is on its way.", requested.id),
                                }
                            }
                        }
                    }
                }
            }
            (Some(_), crate::broadcast::Command::Send(to, _)) => {
                let to: Vec<String> = to.iter().map(ToString::to_string).collect();
                format!("You may not broadcast to {} (broadcast.senders).", to.join(", "))
            }
        };
        if let Err(e) = self.notify(link, answer).await {
            tracing::warn!(bridge = %link.bridge, room = %link.room, "broadcast command answer not sent: {e}");
        }
    }

    /// Add a portal (see [`Topology::add`]); the links that receive
    /// deliveries get a lane. Returns the id of the portal the links are in.
    pub(crate) fn add_portal(&self, portal: Portal) -> String {
        self.topology.add(portal, |l| self.capabilities(l).outbound)
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
        let sub = Submission { bridge, incoming, reply, synthetic, back_to_origin, quiet: false };
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

    fn capabilities(&self, link: &Link) -> Capabilities {
        match self.bridge(&link.bridge) {
            Some(b) => people_or_room(b.as_ref(), &link.room),
            None => Capabilities::NONE,
        }
    }

    /// Whether `body` would show anything at all on `link`.
    fn wanted_on(&self, link: &Link, body: &Body, policy: Degrade) -> bool {
        let caps = self.capabilities(link);
        let policy = self.bridge(&link.bridge).map_or(policy, |b| b.degrade_for(&link.room, body.kind(), policy));
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
        let open = self.topology.count(PortalKind::Direct);
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
                if self.bridge(bridge).is_none() {
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
                if self.bridge(bridge).is_none() {
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

    /// Commit one group of submissions, in four steps: look up what the
    /// message map knows of the ids they name, classify each (taken, or
    /// answered at once), build the new events with their deliveries, and
    /// commit them all in one transaction and hand the rows to the lanes.
    async fn commit_batch(&self, batch: Vec<Submission>) {
        let mut known = match self.look_up(&batch).await {
            Ok(k) => k,
            Err(e) => {
                tracing::error!(error = %e, "message map lookup failed; refusing {} events", batch.len());
                for s in batch {
                    let _ = s.reply.send(Err(SubmitError::Unavailable("the store is not answering".into())));
                }
                return;
            }
        };
        let mut new_events = Vec::with_capacity(batch.len());
        // One per event; none for an event the router adds itself.
        let mut replies = Vec::with_capacity(batch.len());
        for Submission { bridge, incoming, reply, synthetic, back_to_origin, quiet } in batch {
            let built = self.classify(&bridge, incoming, &known, &new_events).and_then(|t| self.build(t, synthetic, back_to_origin, quiet));
            match built {
                Ok(events) => {
                    let mut own = Some(reply);
                    for ne in events {
                        known.remember(&ne);
                        new_events.push(ne);
                        replies.push(own.take());
                    }
                }
                Err(refusal) => {
                    if let Some(reason) = refusal.dropped {
                        self.metrics.dropped.get_or_create(&metrics::reason(&bridge, reason)).inc();
                    }
                    let _ = reply.send(refusal.answer);
                }
            }
        }
        if !new_events.is_empty() {
            self.commit_and_hand_over(new_events, replies).await;
        }
    }

    /// Step 1: what the message map knows of every id the batch names (the
    /// submissions' own and those they refer to), in one look-up.
    async fn look_up(&self, batch: &[Submission]) -> Result<Known, StoreError> {
        let mut keys = Vec::new();
        for s in batch {
            let room = &s.incoming.room;
            keys.extend(s.incoming.remote_id.iter().map(|id| remote_key(&s.bridge, room, id)));
            keys.extend(s.incoming.body.refs().into_iter().map(|id| remote_key(&s.bridge, room, id)));
        }
        Ok(Known { hits: self.store.lookup_remotes(&keys).await?, fresh: HashMap::new() })
    }

    /// Step 2: whether the router takes a submission. It does not when it
    /// has it already (a duplicate) or sent it itself (an echo), when it
    /// refers to a message the router never saw, when its room is in no
    /// portal, or when it changes a message of someone else's. `earlier`
    /// are the events taken before it in this batch.
    fn classify(&self, bridge: &str, incoming: Incoming, known: &Known, earlier: &[NewEvent]) -> Result<Taken, Refusal> {
        let Incoming { room, sender, remote_id, aliases, at_ms, body } = incoming;
        if let Some(rid) = &remote_id {
            let k = remote_key(bridge, &room, rid);
            match (known.hits.get(&k), known.fresh.get(&k)) {
                (Some(hit), _) if !hit.origin => return Err(Refusal::dropped("loop", Accepted::Echo)),
                (Some(MapHit { event_id, .. }), _) | (None, Some(event_id)) => {
                    return Err(Refusal::dropped("duplicate", Accepted::Duplicate { event_id: event_id.clone() }));
                }
                (None, None) => {}
            }
        }
        let Some(mut body) = body.map_refs(|r| known.event_of(&remote_key(bridge, &room, &r))) else {
            return Err(Refusal::dropped("unknown_target", Accepted::Ignored { reason: "refers to a message Causeway never saw" }));
        };
        // A reply to a message of a thread stays in that thread (a mail
        // answering one, a client that shows no threads).
        if let Body::Message { reply_to: Some(parent), thread: thread @ None, .. } = &mut body {
            *thread = known.thread_of(parent, earlier);
        }
        // Whom a message mentions, as the router names them: an account of
        // a person as the person; someone unknown, or a bridge that is not
        // there, is nobody to ping.
        if let Body::Message { mentions, .. } = &mut body {
            mentions.retain_mut(|m| match m.recipient().map(|r| self.canonical(&r)) {
                Some(Ok(r)) => {
                    m.who = r.to_string();
                    true
                }
                Some(Err(_)) => false,
                None => m.is_room(),
            });
        }
        let link = Link { bridge: bridge.to_string(), room };
        let Some(portal) = self.topology.portal(&link).filter(|p| p.kind != PortalKind::Broadcast) else {
            return Err(Refusal { answer: Err(SubmitError::NotLinked(link.room)), dropped: None });
        };
        let sender = self.directory().resolve(bridge, sender);
        if let Some(target) = authored_target(&body)
            && !known.author_of(target, earlier).is_some_and(|a| a.may_change(bridge, &sender))
        {
            tracing::info!(bridge, room = %link.room, sender = %sender.id, kind = body.kind(), "dropping a change of someone else's message");
            return Err(Refusal::dropped(
                "forged_reference",
                Accepted::Ignored { reason: "only its sender may change or take back a message" },
            ));
        }
        // Having seen one's own message is no news to anyone.
        if let Body::Read { target } = &body
            && known.author_of(target, earlier).is_some_and(|a| a.may_change(bridge, &sender))
        {
            return Err(Refusal::dropped("own_message", Accepted::Ignored { reason: "a read marker of the reader's own message" }));
        }
        Ok(Taken { link, portal, sender, body, remote_id, aliases, at_ms: at_ms.unwrap_or_else(now_ms) })
    }

    /// Step 3: the events a taken submission makes, with a delivery for
    /// each link that would show it: its own event, and after it the
    /// presence of a person that speaking woke from idle. A presence is
    /// what all of a person's accounts say together, so one that changes
    /// nothing makes no event. `back_to_origin`: deliver to the submission's
    /// own room alone (a notice) instead of to the portal's other links.
    fn build(&self, taken: Taken, synthetic: bool, back_to_origin: bool, quiet: bool) -> Result<Vec<NewEvent>, Refusal> {
        let Taken { link, portal, sender, body, remote_id, aliases, at_ms } = taken;
        let mut woken = None;
        let body = match (&sender.person, body) {
            (Some(p), Body::Presence { show, status }) if !synthetic => match self.presence.report(p, &link.bridge, show, status, at_ms) {
                Some((show, status)) => {
                    self.metrics.presence_updates.get_or_create(&metrics::bridge(&link.bridge)).inc();
                    Body::Presence { show, status }
                }
                None => return Err(Refusal { answer: Ok(Accepted::Ignored { reason: "presence unchanged" }), dropped: None }),
            },
            (Some(p), body @ Body::Message { .. }) => {
                woken = self.presence.active(p, &link, &sender.id, at_ms);
                body
            }
            (_, body) => body,
        };
        let event_for = |id: String, remote_id: Option<String>, aliases: Vec<String>, body: Body| {
            let deliveries = portal
                .links
                .iter()
                .filter(|l| !quiet && (**l == link) == back_to_origin)
                .filter(|l| self.wanted_on(l, &body, portal.degrade))
                .map(|l| NewDelivery { id: new_id(), bridge: l.bridge.clone(), room: l.room.clone(), recipient: None })
                .collect();
            let origin_key = remote_key(&link.bridge, &link.room, remote_id.as_deref().unwrap_or(&id));
            let origin = Origin { bridge: link.bridge.clone(), room: link.room.clone(), remote_id };
            let event = Event { id, portal: portal.id.clone(), origin, sender: sender.clone(), at_ms, body };
            NewEvent { event, origin_key, aliases, deliveries }
        };
        let mut events = vec![event_for(new_id(), remote_id, aliases, body)];
        if let Some((show, status)) = woken {
            events.push(event_for(new_id(), None, Vec::new(), Body::Presence { show, status }));
        }
        Ok(events)
    }

    /// Step 4: commit the new events in one transaction; then answer their
    /// bridges, give each lane its rows, and tell the subscribers. When the
    /// commit fails, every submission is refused (the bridge keeps it and
    /// tries again).
    async fn commit_and_hand_over(&self, new_events: Vec<NewEvent>, replies: Vec<Option<Reply>>) {
        self.metrics.commit_batch.observe(new_events.len() as f64);
        let stored = match self.store.commit(&new_events).await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::error!(error = %e, "commit failed; refusing {} events", replies.len());
                for reply in replies.into_iter().flatten() {
                    let _ = reply.send(Err(SubmitError::Unavailable("the store could not commit".into())));
                }
                return;
            }
        };
        let now = now_ms();
        for ((ne, stored), reply) in new_events.into_iter().zip(stored).zip(replies) {
            self.metrics.received.get_or_create(&metrics::bridge(&ne.event.origin.bridge)).inc();
            if let Some(reply) = reply {
                let _ = reply.send(Ok(Accepted::Stored { event_id: ne.event.id.clone() }));
            }
            self.after_commit(ne, &stored, now);
        }
    }

    /// What follows the commit of an event: its deliveries counted and
    /// handed to their lanes, and the event to whoever follows the portals.
    fn after_commit(&self, ne: NewEvent, stored: &Stored, now: i64) {
        for d in &ne.deliveries {
            self.metrics.outbox_depth.get_or_create(&metrics::bridge(&d.bridge)).inc();
        }
        self.topology.hand_over(&ne.event, &ne.deliveries, &stored.outbox, now);
        // Nobody listening is fine.
        let _ = self.committed.send(Arc::new(Committed { seq: stored.seq, event: ne.event }));
    }
}

type Reply = oneshot::Sender<Result<Accepted, SubmitError>>;

fn remote_key(bridge: &str, room: &str, id: &str) -> RemoteKey {
    RemoteKey { bridge: bridge.to_string(), room: room.to_string(), remote_id: id.to_string() }
}

/// What the message map and the batch so far know of the ids a batch names.
struct Known {
    /// From the store, looked up once for the whole batch.
    hits: HashMap<RemoteKey, MapHit>,
    /// Ids of the events taken earlier in this batch.
    fresh: HashMap<RemoteKey, String>,
}

impl Known {
    /// The event a network's id stands for.
    fn event_of(&self, k: &RemoteKey) -> Option<String> {
        self.fresh.get(k).cloned().or_else(|| self.hits.get(k).map(|h| h.event_id.clone()))
    }

    /// Who said the event `event_id`: archived, or taken earlier in this
    /// batch (`earlier`).
    fn author_of(&self, event_id: &str, earlier: &[NewEvent]) -> Option<Author> {
        self.hits.values().find(|h| h.event_id == event_id).and_then(|h| h.author.clone()).or_else(|| {
            earlier.iter().find(|ne| ne.event.id == event_id).map(|ne| Author {
                bridge: ne.event.origin.bridge.clone(),
                sender: ne.event.sender.id.clone(),
                person: ne.event.sender.person.clone(),
            })
        })
    }

    /// The root of the thread the event `event_id` is in: archived, or
    /// taken earlier in this batch (`earlier`).
    fn thread_of(&self, event_id: &str, earlier: &[NewEvent]) -> Option<String> {
        let fresh = earlier.iter().find(|ne| ne.event.id == event_id).map(|ne| match &ne.event.body {
            Body::Message { thread, .. } => thread.clone(),
            _ => None,
        });
        fresh.unwrap_or_else(|| self.hits.values().find(|h| h.event_id == event_id).and_then(|h| h.thread.clone()))
    }

    /// A taken event's ids, so later submissions of the batch find it.
    fn remember(&mut self, ne: &NewEvent) {
        for a in &ne.aliases {
            self.fresh.insert(remote_key(&ne.origin_key.bridge, &ne.origin_key.room, a), ne.event.id.clone());
        }
        self.fresh.insert(ne.origin_key.clone(), ne.event.id.clone());
    }
}

impl Author {
    /// Whether `sender` on `bridge` may edit or take back what this author
    /// said: the same account, or the same person of the directory.
    fn may_change(&self, bridge: &str, sender: &Sender) -> bool {
        (self.bridge == bridge && self.sender == sender.id) || (self.person.is_some() && self.person == sender.person)
    }
}

/// A submission the router takes, its references translated to event ids.
struct Taken {
    link: Link,
    portal: Arc<Portal>,
    sender: Sender,
    body: Body,
    remote_id: Option<String>,
    aliases: Vec<String>,
    at_ms: i64,
}

/// The answer a submission gets without a new event, and the reason the
/// `dropped` counter counts it under (if it counts it).
#[derive(Debug)]
struct Refusal {
    answer: Result<Accepted, SubmitError>,
    dropped: Option<&'static str>,
}

impl Refusal {
    fn dropped(reason: &'static str, answer: Accepted) -> Self {
        Refusal { answer: Ok(answer), dropped: Some(reason) }
    }
}

#[async_trait]
impl Host for Router {
    async fn submit(&self, bridge: &str, incoming: Incoming) -> Result<Accepted, SubmitError> {
        let link = Link { bridge: bridge.to_string(), room: incoming.room.clone() };
        if !self.topology.is_linked(&link) {
            return Err(SubmitError::NotLinked(incoming.room));
        }
        let ignored = self.ignore.get(bridge).is_some_and(|patterns| patterns.iter().any(|p| glob_match(p, &incoming.sender.id)));
        if ignored || self.bridge(bridge).is_some_and(|b| b.is_own_sender(&incoming.room, &incoming.sender.id)) {
            self.metrics.dropped.get_or_create(&metrics::reason(bridge, "loop")).inc();
            return Ok(Accepted::Echo);
        }
        if let Some(command) = crate::broadcast::command(&incoming.body) {
            // Archived, so that the same message coming again is known and
            // the command runs once; shown nowhere.
            let sender = self.directory().resolve(bridge, incoming.sender.clone());
            let (reply, answer) = oneshot::channel();
            let sub = Submission { bridge: link.bridge.clone(), incoming, reply, synthetic: false, back_to_origin: false, quiet: true };
            self.submissions.send(sub).await.map_err(|_| SubmitError::Unavailable("shutting down".into()))?;
            let accepted = answer.await.map_err(|_| SubmitError::Unavailable("shutting down".into()))??;
            if matches!(accepted, Accepted::Stored { .. }) {
                self.broadcast_command(&link, &sender, command).await;
            }
            return Ok(accepted);
        }
        if let Some(command) = crate::calendar::command(&incoming.body) {
            // Shown like any message; the answer follows it in every room.
            let accepted = self.submit_to_writer(link.bridge.clone(), incoming, false, false).await?;
            if let (Accepted::Stored { event_id }, Some(portal)) = (&accepted, self.topology.portal(&link)) {
                let text = match command {
                    crate::calendar::Command::Agenda(span) => crate::calendar::agenda(&self.calendars, &portal.id, span, now_ms() / 1000),
                    crate::calendar::Command::Invalid(usage) => usage,
                };
                match self.announce(&portal.id, &format!("agenda-answer|{event_id}"), text).await {
                    Ok(_) => {
                        self.metrics.calendar_announcements.get_or_create(&metrics::KindLabel { kind: "answer".into() }).inc();
                    }
                    Err(e) => tracing::warn!(portal = %portal.id, "!agenda not answered: {e}"),
                }
            }
            return Ok(accepted);
        }
        self.submit_to_writer(link.bridge, incoming, false, false).await
    }

    fn portal_of(&self, bridge: &str, room: &str) -> Option<String> {
        self.topology.portal(&Link::new(bridge, room)).map(|p| p.id.clone())
    }

    fn time_zone(&self, bridge: &str, room: &str) -> Option<String> {
        let portal = self.topology.portal(&Link::new(bridge, room))?;
        self.time_zones.read().unwrap().get(&portal.id).cloned()
    }

    fn rooms(&self, bridge: &str) -> Vec<String> {
        self.topology.rooms_of(bridge)
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
        if stranger && let Err(e) = self.stranger_may_open(bridge, &initiator.id) {
            let reason = if matches!(e, DirectError::NotAllowed(_)) { "direct_not_allowed" } else { "direct_limit" };
            self.metrics.rejected.get_or_create(&metrics::reason(bridge, reason)).inc();
            return Err(e);
        }
        let peer = self.directory().resolve(bridge, initiator);
        let mut refusals = Vec::new();
        for (target, account) in self.direct_targets(bridge, with)? {
            let Some(b) = self.bridge(&target) else { continue };
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
            let (id, mut all) = match self.topology.portal(&links[1]) {
                Some(p) => {
                    if let Some(other) = p.links.iter().find(|l| l.bridge == bridge) {
                        return Err(DirectError::Unsupported(format!(
                            "this conversation already runs through {}; write there",
                            other.room
                        )));
                    }
                    (p.id.clone(), p.links.clone())
                }
                None => (Portal::direct_id(), Vec::new()),
            };
            all.extend(links.iter().filter(|l| !all.contains(l)).cloned().collect::<Vec<_>>());
            let links_stored = all.into_iter().map(|l| StoredLink { bridge: l.bridge, room: l.room }).collect();
            let stored = StoredPortal { id: id.clone(), created_ms: now_ms(), links: links_stored, kind: StoredKind::Direct };
            self.store.save_portal(&stored).await.map_err(|e| DirectError::Unavailable(e.to_string()))?;
            let id = self.add_portal(Portal { id, kind: PortalKind::Direct, links, degrade: self.topology.default_degrade() });
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

    async fn save_message_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), SubmitError> {
        self.store.save_message_state(bridge, key, value).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }

    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), SubmitError> {
        self.store.delete_state(bridge, key).await.map_err(|e| SubmitError::Unavailable(e.to_string()))
    }
}

/// What the peer's mark signs: the room the copy is in and the id the
/// message had where it came from (a mark copied into another room is not
/// the peer's there).
/// What a bridge's room can show, where [`causeway_core::PEOPLE_ROOM`] is
/// a person (when the bridge reaches people at all).
pub fn people_or_room(bridge: &dyn Bridge, room: &str) -> Capabilities {
    if room != causeway_core::PEOPLE_ROOM {
        bridge.capabilities(room)
    } else if bridge.reaches_people() {
        Capabilities::PEOPLE
    } else {
        Capabilities::NONE
    }
}

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
    //! Each step of the commit against a real SQLite store in a temp dir,
    //! with bridges that only say which rooms receive deliveries.
    use super::*;
    use crate::store::sqlite::SqliteStore;
    use crate::store::{Completion, OutboxState};
    use causeway_core::{BridgeContext, BridgeError, Delivered, DeliveryError, Show, Text};

    struct Fake {
        receives: bool,
    }

    #[async_trait]
    impl Bridge for Fake {
        fn kind(&self) -> &'static str {
            "fake"
        }
        fn check_room(&self, _room: &str) -> Result<(), String> {
            Ok(())
        }
        fn capabilities(&self, _room: &str) -> Capabilities {
            if self.receives { Capabilities::ALL } else { Capabilities::NONE }
        }
        async fn start(self: Arc<Self>, _ctx: BridgeContext) -> Result<Option<axum::Router>, BridgeError> {
            Ok(None)
        }
        async fn deliver(&self, _delivery: &Delivery) -> Result<Delivered, DeliveryError> {
            Err(DeliveryError::permanent("no deliveries in these tests"))
        }
    }

    /// Rooms r (on a), s (on b) and the inbound-only webhook room `in`, one
    /// portal; alice has accounts on a and b.
    const CONFIG: &str = "
portals:
  - id: ops
    links:
      - {bridge: a, room: r}
      - {bridge: b, room: s}
      - {bridge: hook, room: in}
people:
  - id: alice
    name: Alice Liddell
    accounts: {a: alice, b: alice-b}
router:
  presence: {idle_after: 1h}
";

    struct World {
        _dir: tempfile::TempDir,
        router: Arc<Router>,
        store: Arc<dyn Store>,
    }

    async fn world() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn Store> = Arc::new(SqliteStore::open(&dir.path().join("causeway.db"), false).await.unwrap());
        let config: Config = serde_saphyr::from_str(CONFIG).unwrap();
        let fake = |receives| Arc::new(Fake { receives }) as Arc<dyn Bridge>;
        let bridges = BTreeMap::from([("a".into(), fake(true)), ("b".into(), fake(true)), ("hook".into(), fake(false))]);
        let router = Router::start(&config, bridges, store.clone(), Arc::new(Metrics::new()), Vec::new());
        World { _dir: dir, router, store }
    }

    fn incoming(room: &str, sender: &str, id: Option<&str>, body: Body) -> Incoming {
        let sender = RemoteSender { id: sender.into(), name: None, avatar: None };
        Incoming { room: room.into(), sender, remote_id: id.map(str::to_string), aliases: Vec::new(), at_ms: Some(1_000), body }
    }

    fn edit(target: &str) -> Body {
        Body::Edit { target: target.into(), text: Text::plain("changed") }
    }

    fn submission(bridge: &str, incoming: Incoming) -> Submission {
        Submission { bridge: bridge.into(), incoming, reply: oneshot::channel().0, synthetic: false, back_to_origin: false, quiet: false }
    }

    async fn stored(router: &Router, bridge: &str, incoming: Incoming) -> String {
        match router.submit(bridge, incoming).await {
            Ok(Accepted::Stored { event_id }) => event_id,
            other => panic!("not stored: {other:?}"),
        }
    }

    fn refused(r: Result<Taken, Refusal>) -> (Result<Accepted, SubmitError>, Option<&'static str>) {
        match r {
            Ok(t) => panic!("taken: {:?}", t.body.kind()),
            Err(r) => (r.answer, r.dropped),
        }
    }

    #[tokio::test]
    async fn look_up_finds_what_the_store_and_the_batch_know() {
        let w = world().await;
        let first = stored(&w.router, "a", incoming("r", "bob", Some("a-1"), Body::text("hi"))).await;
        let batch = [
            submission("a", incoming("r", "bob", Some("a-2"), edit("a-1"))),
            submission("b", incoming("s", "carol", Some("b-9"), Body::text("new"))),
        ];
        let mut known = w.router.look_up(&batch).await.unwrap();
        let key = remote_key("a", "r", "a-1");
        assert_eq!(known.event_of(&key).as_deref(), Some(first.as_str()));
        assert_eq!(known.hits[&key].author.as_ref().map(|a| a.sender.as_str()), Some("bob"));
        assert_eq!(known.event_of(&remote_key("b", "s", "b-9")), None, "not seen yet");
        assert_eq!(known.event_of(&remote_key("b", "s", "a-1")), None, "ids are scoped to their room");

        // What the batch takes is known to the rest of it, aliases too.
        let mut taken = w.router.classify("b", incoming("s", "carol", Some("b-9"), Body::text("new")), &known, &[]).unwrap();
        taken.aliases = vec!["b-9-alias".into()];
        let events = w.router.build(taken, false, false, false).unwrap();
        known.remember(&events[0]);
        assert_eq!(known.event_of(&remote_key("b", "s", "b-9")), Some(events[0].event.id.clone()));
        assert_eq!(known.event_of(&remote_key("b", "s", "b-9-alias")), Some(events[0].event.id.clone()));
    }

    #[tokio::test]
    async fn classify_tells_duplicates_echoes_unknown_targets_strangers_rooms_and_forgeries_apart() {
        let w = world().await;
        let r = &w.router;
        let first = stored(r, "a", incoming("r", "bob", Some("a-1"), Body::text("hi"))).await;
        // Its delivery to b was sent, and b calls it b-1 there.
        let row = w.store.list_outbox(OutboxState::Pending, 10).await.unwrap().into_iter().find(|o| o.bridge == "b").unwrap();
        let done = Completion {
            seq: row.seq,
            delivery_id: row.delivery_id,
            event_id: first.clone(),
            bridge: "b".into(),
            room: "s".into(),
            remote_id: Some("b-1".into()),
        };
        w.store.complete(&[done]).await.unwrap();
        let batch = [
            submission("a", incoming("r", "bob", Some("a-1"), Body::text("hi"))),
            submission("b", incoming("s", "nobody", Some("b-1"), Body::text("hi"))),
        ];
        let known = r.look_up(&batch).await.unwrap();
        let classify = |bridge: &str, i: Incoming| r.classify(bridge, i, &known, &[]);

        let (answer, dropped) = refused(classify("a", incoming("r", "bob", Some("a-1"), Body::text("hi"))));
        assert!(matches!(answer, Ok(Accepted::Duplicate { event_id }) if event_id == first));
        assert_eq!(dropped, Some("duplicate"));

        let (answer, dropped) = refused(classify("b", incoming("s", "nobody", Some("b-1"), Body::text("hi"))));
        assert!(matches!(answer, Ok(Accepted::Echo)), "our own copy came back");
        assert_eq!(dropped, Some("loop"));

        let (answer, dropped) = refused(classify("a", incoming("r", "bob", Some("a-3"), edit("never-seen"))));
        assert!(matches!(answer, Ok(Accepted::Ignored { .. })));
        assert_eq!(dropped, Some("unknown_target"));

        let (answer, dropped) = refused(classify("a", incoming("elsewhere", "bob", Some("a-4"), Body::text("hi"))));
        assert!(matches!(answer, Err(SubmitError::NotLinked(room)) if room == "elsewhere"));
        assert_eq!(dropped, None);

        let (answer, dropped) = refused(classify("a", incoming("r", "mallory", Some("a-5"), edit("a-1"))));
        assert!(matches!(answer, Ok(Accepted::Ignored { .. })), "only bob may edit bob's message");
        assert_eq!(dropped, Some("forged_reference"));

        // Bob may, and the reference is now the event's id; the copy's id
        // on b stands for the same event.
        let taken = classify("a", incoming("r", "bob", Some("a-6"), edit("a-1"))).unwrap();
        assert!(matches!(&taken.body, Body::Edit { target, .. } if *target == first));
        let taken =
            classify("b", incoming("s", "carol", Some("b-7"), Body::Reaction { target: "b-1".into(), key: "👍".into(), removed: false }));
        assert!(matches!(taken.unwrap().body, Body::Reaction { target, .. } if target == first));

        // Anyone may have seen a message, but having seen one's own is no news.
        let read = |target: &str| Body::Read { target: target.into() };
        let (answer, dropped) = refused(classify("a", incoming("r", "bob", None, read("a-1"))));
        assert!(matches!(answer, Ok(Accepted::Ignored { .. })), "bob read what bob wrote");
        assert_eq!(dropped, Some("own_message"));
        let taken = classify("b", incoming("s", "carol", None, read("b-1"))).unwrap();
        assert!(matches!(taken.body, Body::Read { target } if target == first));
    }

    #[tokio::test]
    async fn mentions_name_people_as_the_directory_does() {
        let w = world().await;
        let r = &w.router;
        let known = r.look_up(&[]).await.unwrap();
        let mentioning = |who: &[&str]| Body::Message {
            text: Text::plain("hey"),
            kind: Default::default(),
            attachments: vec![],
            reply_to: None,
            thread: None,
            mentions: who.iter().map(|w| causeway_core::Mention::new(*w, Some("x".into()))).collect(),
        };
        let body = mentioning(&["b:alice-b", "a:stranger", "alice", "nobody", "nowhere:x", "@room", "::"]);
        let taken = r.classify("a", incoming("r", "bob", Some("a-1"), body), &known, &[]).unwrap();
        let Body::Message { mentions, .. } = taken.body else { panic!() };
        let who: Vec<&str> = mentions.iter().map(|m| m.who.as_str()).collect();
        assert_eq!(who, ["alice", "a:stranger", "alice", "@room"], "her account is her; the unknown and malformed are nobody");
        assert!(mentions.iter().all(|m| m.text.as_deref() == Some("x")), "the words naming them stay");
    }

    #[tokio::test]
    async fn a_reply_to_a_message_of_a_thread_stays_in_the_thread() {
        let w = world().await;
        let r = &w.router;
        let root = stored(r, "a", incoming("r", "bob", Some("a-1"), Body::text("root"))).await;
        let in_thread = Body::Message {
            text: Text::plain("in the thread"),
            kind: Default::default(),
            attachments: vec![],
            reply_to: None,
            thread: Some("a-1".into()),
            mentions: vec![],
        };
        stored(r, "a", incoming("r", "bob", Some("a-2"), in_thread)).await;
        let batch = [submission("a", incoming("r", "carol", Some("a-3"), Body::text_replying("answer", Some("a-2".into()))))];
        let mut known = r.look_up(&batch).await.unwrap();
        let thread_of = |t: &Taken| match &t.body {
            Body::Message { thread, .. } => thread.clone(),
            other => panic!("{other:?}"),
        };
        let answer = r.classify("a", incoming("r", "carol", Some("a-3"), Body::text_replying("answer", Some("a-2".into()))), &known, &[]);
        assert_eq!(thread_of(&answer.unwrap()), Some(root.clone()), "archived: a reply to a-2 is in a-1's thread");
        let to_root =
            r.classify("a", incoming("r", "carol", Some("a-4"), Body::text_replying("on the root", Some("a-1".into()))), &known, &[]);
        assert_eq!(thread_of(&to_root.unwrap()), None, "a reply to the root itself is an ordinary reply");
        // Within one batch: an answer to the answer.
        let answer = r.classify("a", incoming("r", "carol", Some("a-3"), Body::text_replying("answer", Some("a-2".into()))), &known, &[]);
        let earlier = r.build(answer.unwrap(), false, false, false).unwrap();
        known.remember(&earlier[0]);
        let again =
            r.classify("a", incoming("r", "dave", Some("a-5"), Body::text_replying("and again", Some("a-3".into()))), &known, &earlier);
        assert_eq!(thread_of(&again.unwrap()), Some(root));
    }

    #[tokio::test]
    async fn a_person_may_change_what_they_said_from_another_account_even_within_one_batch() {
        let w = world().await;
        let r = &w.router;
        let known = r.look_up(&[]).await.unwrap();
        let said = r.classify("a", incoming("r", "alice", Some("a-1"), Body::text("hi")), &known, &[]).unwrap();
        assert_eq!(said.sender.person.as_deref(), Some("alice"), "the directory knows her account");
        let mut known = known;
        let earlier = r.build(said, false, false, false).unwrap();
        known.remember(&earlier[0]);
        let fixed = r.classify("b", incoming("s", "alice-b", Some("b-1"), edit("a-1")), &known, &[]);
        assert!(fixed.is_err(), "a-1 is on a, not on b: b's id for it is not known yet");
        let fixed = r.classify("a", incoming("r", "alice", Some("a-2"), edit("a-1")), &known, &earlier).unwrap();
        assert!(matches!(fixed.body, Body::Edit { ref target, .. } if *target == earlier[0].event.id));
        // The same person from her other account may change it too.
        let author = known.author_of(&earlier[0].event.id, &earlier).unwrap();
        let other = r.directory().resolve("b", RemoteSender { id: "alice-b".into(), name: None, avatar: None });
        assert!(author.may_change("b", &other), "same person, other account");
        let stranger = r.directory().resolve("b", RemoteSender { id: "alice".into(), name: None, avatar: None });
        assert!(!author.may_change("b", &stranger), "the same name on another network is someone else");
    }

    #[tokio::test]
    async fn build_delivers_to_the_other_receiving_links_and_wakes_the_idle() {
        let w = world().await;
        let r = &w.router;
        let known = r.look_up(&[]).await.unwrap();
        let taken = r.classify("hook", incoming("in", "ci", Some("h-1"), Body::text("build green")), &known, &[]).unwrap();
        let events = r.build(taken, false, false, false).unwrap();
        let to: Vec<_> = events[0].deliveries.iter().map(|d| (d.bridge.as_str(), d.room.as_str())).collect();
        assert_eq!(to, [("a", "r"), ("b", "s")], "not back to its own room, not to the webhook that only takes in");
        assert_eq!(events[0].origin_key, remote_key("hook", "in", "h-1"));
        assert_eq!(events[0].event.portal, "ops");

        // A notice goes back to its own room alone.
        let taken = r.classify("a", incoming("r", NOTICE_SENDER, None, Body::text("note")), &known, &[]).unwrap();
        let events = r.build(taken, true, true, false).unwrap();
        let to: Vec<_> = events[0].deliveries.iter().map(|d| (d.bridge.as_str(), d.room.as_str())).collect();
        assert_eq!(to, [("a", "r")]);
        assert_eq!(events[0].origin_key.remote_id, events[0].event.id, "no network id: the event's own");

        // Alice online, then idle, then she speaks: her message and her
        // presence back to online, in that order.
        let online = Body::Presence { show: Show::Online, status: None };
        let taken = r.classify("a", incoming("r", "alice", None, online.clone()), &known, &[]).unwrap();
        assert_eq!(r.build(taken, false, false, false).unwrap().len(), 1);
        let taken = r.classify("a", incoming("r", "alice", None, online), &known, &[]).unwrap();
        assert!(r.build(taken, false, false, false).is_err(), "presence unchanged: no event");
        let taken = r.classify("a", incoming("r", "alice", Some("a-1"), Body::text("first")), &known, &[]).unwrap();
        assert_eq!(r.build(taken, false, false, false).unwrap().len(), 1, "not idle: nothing to wake");
        assert_eq!(r.presence.idle_now(i64::MAX).len(), 1);
        let taken = r.classify("a", incoming("r", "alice", Some("a-2"), Body::text("back")), &known, &[]).unwrap();
        let events = r.build(taken, false, false, false).unwrap();
        assert_eq!(events.len(), 2);
        assert!(matches!(events[1].event.body, Body::Presence { show: Show::Online, .. }));
        assert_eq!(events[1].deliveries.len(), 1, "to b; the webhook takes nothing");
        assert_ne!(events[0].event.id, events[1].event.id);
    }

    #[tokio::test]
    async fn committed_rows_are_answered_handed_to_their_lanes_and_announced() {
        let w = world().await;
        let r = &w.router;
        let (lanes, _) = r.topology().take_lanes();
        let lane = |bridge: &str| lanes.iter().find(|(l, _)| l.bridge == bridge).unwrap().1.clone();
        let mut announced = r.subscribe();
        let known = r.look_up(&[]).await.unwrap();
        let taken = r.classify("a", incoming("r", "bob", Some("a-1"), Body::text("hi")), &known, &[]).unwrap();
        let events = r.build(taken, false, false, false).unwrap();
        let id = events[0].event.id.clone();
        let (reply, answer) = oneshot::channel();
        r.commit_and_hand_over(events, vec![Some(reply)]).await;
        assert!(matches!(answer.await.unwrap(), Ok(Accepted::Stored { event_id }) if event_id == id));
        let (items, read) = lane("b").take();
        assert!(!read, "handed over, not to be read back");
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].event.id, id);
        let pending = w.store.pending("b", "s", 0, 10).await.unwrap();
        assert_eq!((pending[0].seq, &pending[0].delivery_id), (items[0].seq, &items[0].delivery_id), "the same row as in the store");
        assert!(lane("a").take().0.is_empty(), "not to where it came from");
        assert_eq!(announced.recv().await.unwrap().event.id, id);
        assert_eq!(w.store.history("ops", 0, 10).await.unwrap().len(), 1);
    }

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
