//! The topology: which rooms make which portal, which links receive
//! deliveries, and the feed of each receiving link's outbox lane.
//!
//! The router adds portals here (the configured ones at start, direct
//! conversations when they are opened) and hands each committed row to its
//! lane's feed; the outbox takes the lanes and reads their feeds; presence
//! names links. Nothing here touches the store or a network.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};

use causeway_core::{Degrade, Event, new_id};
use tokio::sync::{Notify, mpsc};

use crate::store::{NewDelivery, OutboxItem};

/// How many rows a lane reads at a time, and holds handed over at most.
pub const LANE_BATCH: u32 = 256;

/// One link of a portal: a room on a bridge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Link {
    pub bridge: String,
    pub room: String,
}

impl Link {
    pub fn new(bridge: impl Into<String>, room: impl Into<String>) -> Self {
        Link { bridge: bridge.into(), room: room.into() }
    }
}

/// Where a portal comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortalKind {
    /// `portals:` of the config; fixed while Causeway runs.
    Configured,
    /// A direct conversation, opened at run time and kept in the store.
    Direct,
    /// Made in the console (or its API) at run time and kept in the store.
    Console,
    /// The lanes of broadcasts to people ([`causeway_core::PEOPLE_ROOM`] of
    /// each bridge that reaches people): no conversation, never submitted to.
    Broadcast,
}

impl PortalKind {
    /// Whether the console may change or remove such a portal (one made
    /// at run time).
    pub fn editable(self) -> bool {
        matches!(self, PortalKind::Direct | PortalKind::Console)
    }

    pub fn name(self) -> &'static str {
        match self {
            PortalKind::Configured => "configured",
            PortalKind::Direct => "direct",
            PortalKind::Console => "console",
            PortalKind::Broadcast => "broadcast",
        }
    }
}

/// Rooms that are one conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Portal {
    pub id: String,
    pub kind: PortalKind,
    pub links: Vec<Link>,
    pub degrade: Degrade,
}

impl Portal {
    /// A new direct conversation's id.
    pub fn direct_id() -> String {
        format!("dm-{}", new_id())
    }
}

/// What wakes an outbox lane: rows just committed, handed over in memory
/// so the lane need not read them back, or a plain wake for rows the lane
/// must read from the store (written by another process, or more than it
/// holds while it is busy). The store stays the source of truth: a lane
/// starts by reading it, and falls back to it whenever its feed overflows.
#[derive(Default)]
pub struct LaneFeed {
    notify: Notify,
    state: Mutex<FeedState>,
    /// The link left its portal: the lane stops.
    closed: std::sync::atomic::AtomicBool,
    /// When the lane last delivered (ms since the epoch; 0 never).
    last_delivered_ms: std::sync::atomic::AtomicI64,
    /// The last failure of a delivery here: when, and what the network said.
    last_error: Mutex<Option<(i64, String)>>,
}

#[derive(Default)]
struct FeedState {
    /// Committed rows, in commit (so sequence) order.
    items: VecDeque<OutboxItem>,
    /// The store has rows the items do not cover.
    read: bool,
}

impl LaneFeed {
    fn state(&self) -> std::sync::MutexGuard<'_, FeedState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A row just committed for this lane.
    pub fn push(&self, item: OutboxItem) {
        {
            let mut s = self.state();
            if s.read || s.items.len() >= LANE_BATCH as usize {
                // The lane reads the store anyway; holding rows is no use.
                s.items.clear();
                s.read = true;
            } else {
                s.items.push_back(item);
            }
        }
        self.notify.notify_one();
    }

    /// Rows are waiting in the store.
    pub fn wake(&self) {
        {
            let mut s = self.state();
            s.items.clear();
            s.read = true;
        }
        self.notify.notify_one();
    }

    /// What was handed over so far, and whether the store must be read.
    pub fn take(&self) -> (VecDeque<OutboxItem>, bool) {
        let mut s = self.state();
        (std::mem::take(&mut s.items), std::mem::take(&mut s.read))
    }

    /// Until something is pushed or woken (at once if that happened since
    /// the last wait), or the feed is closed.
    pub async fn woken(&self) {
        self.notify.notified().await
    }

    /// The link left its portal: its lane stops.
    fn close(&self) {
        self.closed.store(true, std::sync::atomic::Ordering::Release);
        self.notify.notify_one();
    }

    pub fn is_closed(&self) -> bool {
        self.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub fn delivered(&self, at_ms: i64) {
        self.last_delivered_ms.store(at_ms, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn last_delivered_ms(&self) -> Option<i64> {
        Some(self.last_delivered_ms.load(std::sync::atomic::Ordering::Relaxed)).filter(|&ms| ms > 0)
    }

    /// A delivery here failed.
    pub fn failed(&self, at_ms: i64, error: &str) {
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some((at_ms, error.to_string()));
    }

    pub fn last_error(&self) -> Option<(i64, String)> {
        self.last_error.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

/// A lane as the outbox gets it: the link it delivers to and its feed.
pub type Lane = (Link, Arc<LaneFeed>);

#[derive(Default)]
struct Rooms {
    /// By id; a portal that gains or loses links is replaced by a copy.
    portals: BTreeMap<String, Arc<Portal>>,
    /// Link → the id of its portal.
    link_portal: HashMap<Link, String>,
    /// What feeds each outbox lane (a link that receives deliveries).
    lanes: HashMap<Link, Arc<LaneFeed>>,
}

/// Which rooms make which portal, and the lanes of the receiving links.
pub struct Topology {
    rooms: RwLock<Rooms>,
    /// The policy of a room in no portal.
    default_degrade: Degrade,
    /// Lanes added after the outbox took the first ones.
    new_lanes: mpsc::UnboundedSender<Lane>,
    new_lanes_rx: Mutex<Option<mpsc::UnboundedReceiver<Lane>>>,
    /// Other instances add rows to the same store (`cluster:`): the lanes
    /// read every row from it, in order, instead of taking this instance's
    /// from [`Topology::hand_over`].
    shared_store: bool,
}

impl Topology {
    pub fn new(default_degrade: Degrade) -> Self {
        let (new_lanes, rx) = mpsc::unbounded_channel();
        Topology { rooms: RwLock::default(), default_degrade, new_lanes, new_lanes_rx: Mutex::new(Some(rx)), shared_store: false }
    }

    /// The store is shared with other instances (see `shared_store`).
    pub fn sharing_the_store(mut self, shared: bool) -> Self {
        self.shared_store = shared;
        self
    }

    fn rooms(&self) -> std::sync::RwLockReadGuard<'_, Rooms> {
        self.rooms.read().unwrap_or_else(|p| p.into_inner())
    }

    pub fn default_degrade(&self) -> Degrade {
        self.default_degrade
    }

    /// Add a portal, or, when one of its links is in a portal already, add
    /// its other links to that one. A new link for which `receives` holds
    /// gets a lane. Returns the id of the portal the links are in.
    pub fn add(&self, portal: Portal, receives: impl Fn(&Link) -> bool) -> String {
        let Portal { id, kind, links, degrade } = portal;
        let mut t = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let id = match links.iter().find_map(|l| t.link_portal.get(l).cloned()) {
            Some(existing) => existing,
            None => {
                t.portals.entry(id.clone()).or_insert_with(|| Arc::new(Portal { id: id.clone(), kind, links: Vec::new(), degrade }));
                id
            }
        };
        let mut grown = (*t.portals[&id]).clone();
        for l in links {
            if t.link_portal.contains_key(&l) {
                continue;
            }
            t.link_portal.insert(l.clone(), id.clone());
            grown.links.push(l.clone());
            if receives(&l) {
                let feed = Arc::new(LaneFeed::default());
                t.lanes.insert(l.clone(), feed.clone());
                // The outbox reads this channel once it runs (see take_lanes).
                let _ = self.new_lanes.send((l, feed));
            }
        }
        t.portals.insert(id.clone(), Arc::new(grown));
        id
    }

    /// Take `links` out of portal `id` (all of them: the portal goes); their
    /// lanes stop, and what was still pending for them becomes dead letters
    /// (the outbox does that). Returns the links taken out.
    pub fn remove(&self, id: &str, links: Option<&[Link]>) -> Vec<Link> {
        let mut t = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        let Some(portal) = t.portals.get(id).cloned() else { return Vec::new() };
        let (gone, kept): (Vec<Link>, Vec<Link>) = portal.links.iter().cloned().partition(|l| links.is_none_or(|only| only.contains(l)));
        for l in &gone {
            t.link_portal.remove(l);
            if let Some(feed) = t.lanes.remove(l) {
                feed.close();
            }
        }
        if kept.is_empty() {
            t.portals.remove(id);
        } else {
            t.portals.insert(id.to_string(), Arc::new(Portal { links: kept, ..(*portal).clone() }));
        }
        gone
    }

    /// Change what portal `id` does with what a room cannot show.
    pub fn set_degrade(&self, id: &str, degrade: Degrade) {
        let mut t = self.rooms.write().unwrap_or_else(|p| p.into_inner());
        if let Some(p) = t.portals.get(id).cloned()
            && p.degrade != degrade
        {
            t.portals.insert(id.to_string(), Arc::new(Portal { degrade, ..(*p).clone() }));
        }
    }

    /// Every portal, by id.
    pub fn portals(&self) -> Vec<Arc<Portal>> {
        self.rooms().portals.values().cloned().collect()
    }

    /// The portal of this id.
    pub fn get(&self, id: &str) -> Option<Arc<Portal>> {
        self.rooms().portals.get(id).cloned()
    }

    /// The last failure of a delivery to `link`.
    pub fn link_error(&self, link: &Link) -> Option<(i64, String)> {
        self.rooms().lanes.get(link).and_then(|f| f.last_error())
    }

    /// The newest failure of a delivery to any room of `bridge`.
    pub fn last_error(&self, bridge: &str) -> Option<(i64, String)> {
        self.rooms().lanes.iter().filter(|(l, _)| l.bridge == bridge).filter_map(|(_, f)| f.last_error()).max_by_key(|(at, _)| *at)
    }

    /// When `link`'s lane last delivered.
    pub fn last_delivered_ms(&self, link: &Link) -> Option<i64> {
        self.rooms().lanes.get(link).and_then(|f| f.last_delivered_ms())
    }

    /// The portal `link` is in.
    pub fn portal(&self, link: &Link) -> Option<Arc<Portal>> {
        let t = self.rooms();
        t.link_portal.get(link).and_then(|id| t.portals.get(id).cloned())
    }

    pub fn is_linked(&self, link: &Link) -> bool {
        self.rooms().link_portal.contains_key(link)
    }

    /// The degradation policy of the portal `link` is in.
    pub fn degrade_of(&self, link: &Link) -> Degrade {
        self.portal(link).map_or(self.default_degrade, |p| p.degrade)
    }

    /// The rooms of `bridge` that are in a portal, sorted.
    pub fn rooms_of(&self, bridge: &str) -> Vec<String> {
        let mut rooms: Vec<String> = self
            .rooms()
            .link_portal
            .keys()
            .filter(|l| l.bridge == bridge && l.room != causeway_core::PEOPLE_ROOM)
            .map(|l| l.room.clone())
            .collect();
        rooms.sort();
        rooms
    }

    /// How many portals of this kind there are.
    pub fn count(&self, kind: PortalKind) -> usize {
        self.rooms().portals.values().filter(|p| p.kind == kind).count()
    }

    /// Lanes as they are now, and from now on every lane added later.
    /// Taken once (by the outbox).
    pub fn take_lanes(&self) -> (Vec<Lane>, mpsc::UnboundedReceiver<Lane>) {
        let mut rx = self.new_lanes_rx.lock().unwrap_or_else(|p| p.into_inner()).take().expect("lanes taken once");
        // Under the lock no lane is added: those announced so far are in
        // the snapshot, those added later come through `rx`.
        let t = self.rooms();
        while rx.try_recv().is_ok() {}
        let now = t.lanes.iter().map(|(l, n)| (l.clone(), n.clone())).collect();
        (now, rx)
    }

    /// Tell a lane it has rows to read from the store.
    pub fn wake(&self, link: &Link) {
        if let Some(feed) = self.rooms().lanes.get(link) {
            feed.wake();
        }
    }

    /// Give each lane its rows of a just committed event: `deliveries` and
    /// their outbox sequence numbers `seqs` (in the same order; where the
    /// store could not tell them, the lane is told to read them back).
    ///
    /// With a shared store the lane is only told to read: a row another
    /// instance committed just before these has the lower number, and
    /// taking these first would pass it over.
    pub fn hand_over(&self, event: &Event, deliveries: &[NewDelivery], seqs: &[i64], now_ms: i64) {
        let t = self.rooms();
        for (i, d) in deliveries.iter().enumerate() {
            let Some(feed) = t.lanes.get(&Link::new(d.bridge.as_str(), d.room.as_str())) else { continue };
            match seqs.get(i) {
                Some(&seq) if !self.shared_store => feed.push(OutboxItem {
                    seq,
                    delivery_id: d.id.clone(),
                    attempts: 0,
                    enqueued_ms: now_ms,
                    first_failed_ms: None,
                    recipient: d.recipient.clone(),
                    event: event.clone(),
                }),
                _ => feed.wake(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use causeway_core::Body;

    fn event(id: &str) -> Event {
        Event {
            id: id.into(),
            portal: "p".into(),
            origin: causeway_core::Origin { bridge: "a".into(), room: "r".into(), remote_id: None },
            sender: causeway_core::Sender { id: "alice".into(), person: None, name: "Alice".into(), avatar: None },
            at_ms: 1,
            body: Body::text("hi"),
        }
    }

    fn item(seq: i64) -> OutboxItem {
        let event = event(&format!("e{seq}"));
        OutboxItem { seq, delivery_id: format!("d{seq}"), attempts: 0, enqueued_ms: 0, first_failed_ms: None, recipient: None, event }
    }

    fn portal(id: &str, kind: PortalKind, links: &[(&str, &str)]) -> Portal {
        Portal { id: id.into(), kind, links: links.iter().map(|(b, r)| Link::new(*b, *r)).collect(), degrade: Degrade::default() }
    }

    #[test]
    fn a_lane_feed_hands_over_in_order_and_falls_back_to_the_store() {
        let feed = LaneFeed::default();
        for seq in 1..=3 {
            feed.push(item(seq));
        }
        let (items, read) = feed.take();
        assert_eq!(items.iter().map(|i| i.seq).collect::<Vec<_>>(), [1, 2, 3]);
        assert!(!read);
        assert!(feed.take().0.is_empty(), "taken once");

        // More than a batch while the lane is busy: the store is read instead.
        for seq in 0..=i64::from(LANE_BATCH) {
            feed.push(item(seq));
        }
        feed.push(item(1000));
        let (items, read) = feed.take();
        assert!(read && items.is_empty());

        // A plain wake (rows from elsewhere) means the store, too.
        feed.push(item(1));
        feed.wake();
        let (items, read) = feed.take();
        assert!(read && items.is_empty());
        assert!(!feed.take().1, "the wake is taken once");
    }

    #[test]
    fn portals_join_where_a_link_is_taken_and_only_receiving_links_get_lanes() {
        let t = Topology::new(Degrade::default());
        let id = t.add(portal("ops", PortalKind::Configured, &[("xmpp", "ops@muc"), ("hook", "in")]), |l| l.bridge != "hook");
        assert_eq!(id, "ops");
        // A second portal naming a taken link joins the first.
        let dm = portal("dm-1", PortalKind::Direct, &[("matrix", "!ops:hs"), ("xmpp", "ops@muc")]);
        assert_eq!(t.add(dm, |_| true), "ops", "joins the portal that has the link");
        let ops = t.portal(&Link::new("matrix", "!ops:hs")).expect("linked");
        assert_eq!(ops.id, "ops");
        assert_eq!(ops.links.len(), 3);
        assert_eq!(t.count(PortalKind::Configured), 1);
        assert_eq!(t.count(PortalKind::Direct), 0);
        assert!(!t.is_linked(&Link::new("matrix", "!other:hs")));
        assert_eq!(t.rooms_of("xmpp"), ["ops@muc"]);

        let (lanes, mut later) = t.take_lanes();
        let mut names: Vec<_> = lanes.iter().map(|(l, _)| l.bridge.as_str()).collect();
        names.sort();
        assert_eq!(names, ["matrix", "xmpp"], "the webhook does not receive");
        assert!(later.try_recv().is_err(), "what the snapshot holds is not announced again");

        t.add(portal("dm-2", PortalKind::Direct, &[("xmpp", "bob@x"), ("matrix", "!dm:hs")]), |_| true);
        assert_eq!(t.count(PortalKind::Direct), 1);
        let mut added = vec![later.try_recv().expect("a lane").0, later.try_recv().expect("a lane").0];
        added.sort_by(|a, b| a.bridge.cmp(&b.bridge));
        assert_eq!(added, [Link::new("matrix", "!dm:hs"), Link::new("xmpp", "bob@x")]);
    }

    #[test]
    fn links_taken_out_stop_their_lanes_and_free_their_rooms() {
        let t = Topology::new(Degrade::default());
        t.add(portal("ops", PortalKind::Console, &[("a", "r"), ("b", "s"), ("c", "u")]), |_| true);
        let (lanes, _) = t.take_lanes();
        let feed = |b: &str| lanes.iter().find(|(l, _)| l.bridge == b).expect("lane").1.clone();
        assert_eq!(t.remove("ops", Some(&[Link::new("c", "u"), Link::new("x", "y")])), [Link::new("c", "u")]);
        assert!(feed("c").is_closed() && !feed("a").is_closed());
        assert!(!t.is_linked(&Link::new("c", "u")));
        assert_eq!(t.get("ops").expect("kept").links, [Link::new("a", "r"), Link::new("b", "s")]);
        // A room taken out may be linked again, into another portal.
        assert_eq!(t.add(portal("other", PortalKind::Console, &[("c", "u")]), |_| true), "other");
        assert_eq!(t.remove("ops", None).len(), 2);
        assert!(t.get("ops").is_none() && feed("a").is_closed() && feed("b").is_closed());
        assert_eq!(t.portals().iter().map(|p| p.id.as_str()).collect::<Vec<_>>(), ["other"]);
        assert!(t.remove("nothing", None).is_empty());
    }

    #[test]
    fn committed_rows_reach_their_lanes_and_unknown_seqs_wake_them() {
        let t = Topology::new(Degrade::default());
        t.add(portal("ops", PortalKind::Configured, &[("a", "r"), ("b", "s"), ("c", "u")]), |l| l.bridge != "a");
        let (lanes, _) = t.take_lanes();
        let feed = |b: &str| lanes.iter().find(|(l, _)| l.bridge == b).expect("lane").1.clone();
        let deliveries = ["b", "c"].map(|b| NewDelivery {
            id: format!("d-{b}"),
            bridge: b.into(),
            room: if b == "b" { "s".into() } else { "u".into() },
            recipient: None,
        });
        t.hand_over(&event("e1"), &deliveries, &[7, 8], 100);
        let (items, read) = feed("b").take();
        assert!(!read);
        assert_eq!((items[0].seq, items[0].delivery_id.as_str(), items[0].event.id.as_str()), (7, "d-b", "e1"));
        assert_eq!(feed("c").take().0[0].seq, 8);

        // The store did not say the rows' numbers: the lanes read them back.
        t.hand_over(&event("e2"), &deliveries, &[], 100);
        let (items, read) = feed("b").take();
        assert!(read && items.is_empty());
    }
}
