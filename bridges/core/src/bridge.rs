//! The contract between the router and a bridge.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::event::{Event, EventId, Incoming, RemoteSender, Sender};

/// What a bridge's room can show. The router degrades the rest (see
/// [`crate::degrade`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Capabilities {
    /// The room accepts deliveries at all (an inbound-only webhook does not).
    pub outbound: bool,
    pub html: bool,
    pub edits: bool,
    pub retractions: bool,
    pub reactions: bool,
    pub replies: bool,
    pub threads: bool,
    /// People here mention others so that they are pinged, and are pinged
    /// by mentions from elsewhere (mail is not: it is told `@Name` only).
    pub mentions: bool,
    pub files: bool,
    pub presence: bool,
    pub typing: bool,
    pub membership: bool,
    pub topic: bool,
    /// Read markers (who has seen what): where the bridge's
    /// `read_markers` option takes them (direct conversations by default).
    pub read_markers: bool,
}

impl Capabilities {
    /// Everything the event model can express.
    pub const ALL: Capabilities = Capabilities {
        outbound: true,
        html: true,
        edits: true,
        retractions: true,
        reactions: true,
        replies: true,
        threads: true,
        mentions: true,
        files: true,
        presence: true,
        typing: true,
        membership: true,
        topic: true,
        read_markers: true,
    };
    /// Plain text messages only.
    pub const TEXT_ONLY: Capabilities = Capabilities {
        outbound: true,
        html: false,
        edits: false,
        retractions: false,
        reactions: false,
        replies: false,
        threads: false,
        mentions: false,
        files: false,
        presence: false,
        typing: false,
        membership: false,
        topic: false,
        read_markers: false,
    };
    /// Receives nothing.
    pub const NONE: Capabilities = Capabilities { outbound: false, ..Capabilities::TEXT_ONLY };
    /// A broadcast to one person ([`PEOPLE_ROOM`]): a formatted text with files.
    pub const PEOPLE: Capabilities = Capabilities { html: true, files: true, ..Capabilities::TEXT_ONLY };
}

/// The room of deliveries to people one by one (a broadcast): each such
/// delivery names its person's account on the network in
/// [`Delivery::recipient`], and reaches them as a direct message from the
/// bridge's own account. No network's room is called this.
pub const PEOPLE_ROOM: &str = "@people";

/// Where a bridge passes read markers on (its `read_markers` option):
/// `direct`, `all` or `off` (YAML's bare `off` and `false` read as a
/// boolean, taken as `off` too).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", try_from = "ReadMarkersOption")]
pub enum ReadMarkers {
    /// In direct conversations only: in a group chat they would be noise.
    #[default]
    Direct,
    /// In group chats too.
    All,
    /// Nowhere.
    Off,
}

/// `read_markers` as written: a name, or a boolean where YAML made one of `off`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ReadMarkersOption {
    Flag(bool),
    Name(String),
}

impl TryFrom<ReadMarkersOption> for ReadMarkers {
    type Error = String;
    fn try_from(o: ReadMarkersOption) -> Result<Self, String> {
        match o {
            ReadMarkersOption::Flag(false) => Ok(ReadMarkers::Off),
            ReadMarkersOption::Name(n) if n == "direct" => Ok(ReadMarkers::Direct),
            ReadMarkersOption::Name(n) if n == "all" => Ok(ReadMarkers::All),
            ReadMarkersOption::Name(n) if n == "off" => Ok(ReadMarkers::Off),
            ReadMarkersOption::Flag(true) => Err("read_markers: say where, `direct` or `all`".into()),
            ReadMarkersOption::Name(n) => Err(format!("read_markers: unknown value {n:?}, expected direct, all or off")),
        }
    }
}

impl ReadMarkers {
    /// Whether a room (a direct conversation's, or a group chat) shows them.
    pub fn shown(self, direct: bool) -> bool {
        match self {
            ReadMarkers::Direct => direct,
            ReadMarkers::All => true,
            ReadMarkers::Off => false,
        }
    }
}

/// What to do with an event the target cannot show as such.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Degrade {
    /// Say it in a short text notice ("reacted 👍", "(edited) …").
    #[default]
    Notice,
    /// Leave it out.
    Drop,
}

/// One delivery of one event to one room. `id` is the idempotency key: it is
/// the same on every attempt, so a bridge uses it as the network's
/// transaction id / stanza id / Message-ID / `Idempotency-Key`.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub id: String,
    pub room: String,
    /// 1 on the first try.
    pub attempt: u32,
    /// Only for this recipient of the room (a retried dead letter of one
    /// list subscriber, see [`BridgeContext::refused_recipient`]); in
    /// [`PEOPLE_ROOM`], the account of the person it is for.
    pub recipient: Option<String>,
    /// It may have reached the network already: an earlier attempt failed
    /// in doubt, or an earlier run of Causeway stopped before it could
    /// record the delivery. A network without idempotency keys (a MUC
    /// shows a message sent twice twice) looks before sending it again.
    pub maybe_sent: bool,
    /// What the event was (`"edit"`, `"retract"`, `"reaction"`, `"topic"`,
    /// as [`Body::kind`](crate::Body::kind)) when it became this notice
    /// because the room cannot show it in place.
    pub stands_for: Option<&'static str>,
    /// The event, with references translated to the target network's ids
    /// and already degraded to the room's capabilities.
    pub event: Event<String>,
}

/// A successful delivery.
#[derive(Clone, Debug, Default)]
pub struct Delivered {
    /// The id the network gave the message, if it differs from the delivery
    /// id. Later replies, edits and reactions on this network refer to it.
    pub remote_id: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// Worth retrying: the network is down, slow, or rate limiting us.
    #[error("transient: {reason}")]
    Transient { reason: String, retry_after: Option<Duration> },
    /// Retrying will not help: the network refused this delivery.
    #[error("permanent: {reason}")]
    Permanent { reason: String },
}

impl DeliveryError {
    pub fn transient(reason: impl Into<String>) -> Self {
        DeliveryError::Transient { reason: reason.into(), retry_after: None }
    }
    pub fn permanent(reason: impl Into<String>) -> Self {
        DeliveryError::Permanent { reason: reason.into() }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Other(String),
}

/// The router's answer to a submitted event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Accepted {
    /// Durable: archived, mapped, and queued for every other link.
    Stored { event_id: EventId },
    /// The same (room, remote id) was accepted before.
    Duplicate { event_id: EventId },
    /// Our own delivery or ghost coming back: dropped to prevent a loop.
    Echo,
    /// Valid but nothing to do (e.g. an edit of a message we never saw).
    Ignored { reason: &'static str },
}

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("room {0:?} is not linked to any portal")]
    NotLinked(String),
    /// The store could not commit; the network should retry later.
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// This instance of the bridge has stopped (Causeway stops, or a
    /// reload replaced it): the event is not taken from it.
    #[error("the bridge has stopped")]
    Stopped,
}

/// The other side of a direct conversation, as the bridge where it starts
/// knows them (from a ghost's address, or a `to` field).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Recipient {
    /// A person from the directory, by id.
    Person(String),
    /// An account on another bridge's network.
    Account { bridge: String, id: String },
}

impl Recipient {
    /// Read `person-id` or `bridge:account-id` (person ids never hold a `:`).
    pub fn parse(s: &str) -> Option<Recipient> {
        let s = s.trim();
        match s.split_once(':') {
            Some((bridge, id)) if !bridge.is_empty() && !id.is_empty() => {
                Some(Recipient::Account { bridge: bridge.to_string(), id: id.to_string() })
            }
            Some(_) => None,
            None if !s.is_empty() => Some(Recipient::Person(s.to_string())),
            None => None,
        }
    }

    /// How a sender is named as a recipient: their person id when the
    /// directory knows them, else `bridge:id`. [`Recipient::parse`] reads it back.
    pub fn key_of(sender: &Sender, bridge: &str) -> String {
        match &sender.person {
            Some(p) => p.clone(),
            None => format!("{bridge}:{}", sender.id),
        }
    }
}

impl std::fmt::Display for Recipient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Recipient::Person(p) => f.write_str(p),
            Recipient::Account { bridge, id } => write!(f, "{bridge}:{id}"),
        }
    }
}

/// Why a direct conversation could not be opened.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum DirectError {
    /// Nobody by that name, or not reachable from here.
    #[error("{0}")]
    Unknown(String),
    /// None of their networks takes direct conversations through Causeway.
    #[error("{0}")]
    Unsupported(String),
    /// Try again later (the store or the other network is not answering).
    #[error("temporarily unavailable: {0}")]
    Unavailable(String),
    /// This sender may not open one (`router.direct.strangers`).
    #[error("not allowed: {0}")]
    NotAllowed(String),
    /// Too many are open, or were opened lately (`router.direct`): later.
    #[error("too many direct conversations: {0}")]
    Limited(String),
}

/// How an id in the message map came to stand for its message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum IdKind {
    /// The network's id of a message that came in from it.
    Origin,
    /// Another id of a message that came in ([`Incoming::aliases`]).
    Alias,
    /// The delivery id Causeway sent the message with.
    DeliveryKey,
    /// The id the network reported for a delivered message.
    Reported,
}

/// An archived event with its position in the archive.
#[derive(Clone, Debug)]
pub struct Committed {
    pub seq: i64,
    pub event: Event,
}

/// What the daemon offers a running bridge.
#[async_trait]
pub trait Host: Send + Sync + 'static {
    /// Hand an event to the router; returns once it is durable (or refused).
    async fn submit(&self, bridge: &str, incoming: Incoming) -> Result<Accepted, SubmitError>;
    /// The portal a room is linked to.
    fn portal_of(&self, bridge: &str, room: &str) -> Option<String>;
    /// The time zone of the portal a room is linked to (an IANA or
    /// Windows name, as configured), for what shows times there.
    fn time_zone(&self, _bridge: &str, _room: &str) -> Option<String> {
        None
    }
    /// Every room of `bridge` linked to a portal.
    fn rooms(&self, bridge: &str) -> Vec<String>;
    /// Every event committed from now on, in archive order.
    fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>>;
    /// A portal's archived events after `after_seq`, oldest first.
    async fn history(&self, portal: &str, after_seq: i64, limit: u32) -> Result<Vec<Committed>, SubmitError>;
    /// Count an inbound request refused before it became an event.
    fn count_rejected(&self, bridge: &str, reason: &'static str);
    /// Count events the network never pushed that the bridge found itself
    /// (reading a room's timeline or archive) and that were new.
    fn count_reconciled(&self, bridge: &str, n: u64);
    /// Count a delivery held back, to be sent gathered with others later.
    fn count_held(&self, bridge: &str, reason: &'static str);
    /// Count a link from another network the bridge did not fetch.
    fn count_fetch_refused(&self, bridge: &str, reason: &'static str);
    /// The signature of this Causeway's mark on a copy in `room` naming
    /// `origin` (the id the message had where it came from), when a peer is
    /// configured (`router.peer`).
    fn sign_mark(&self, room: &str, origin: &str) -> Option<String>;
    /// A copy of the message that came in under `origin` arrived in `room`
    /// as `copy` (its id there), marked and signed by the peer (`sig`): a
    /// Causeway standing by need not deliver it there.
    fn relayed_by_peer(&self, bridge: &str, room: &str, origin: &str, sig: &str, copy: Option<&str>);
    /// One recipient of a delivery refused it for good while the room took
    /// it (a list subscriber the mail server refuses): a dead letter of its
    /// own, retried for that recipient alone.
    async fn refused_recipient(&self, bridge: &str, delivery: &Delivery, recipient: &str, reason: &str) -> Result<(), SubmitError>;
    /// Every id the message map has, on (bridge, room), for the message
    /// that `remote_id` stands for there.
    async fn ids_of(&self, bridge: &str, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, SubmitError>;
    /// A directory person's account on `bridge` (their `accounts` entry).
    fn account_of(&self, person: &str, bridge: &str) -> Option<String>;
    /// `with` as the router names it (a person by their configured id, an
    /// account that belongs to a person as that person), or why nobody.
    /// Name direct conversations' rooms from this, so both ways meet.
    fn canonical_recipient(&self, with: &Recipient) -> Result<Recipient, DirectError>;
    /// The portal of the direct conversation in `room` (on `bridge`) between
    /// `initiator` and `with`: found, or opened on the recipient's network
    /// and stored, so it outlives restarts.
    async fn open_direct(&self, bridge: &str, room: &str, with: &Recipient, initiator: RemoteSender) -> Result<String, DirectError>;
    /// Durable per-bridge state (cursors, sync tokens).
    async fn load_state(&self, bridge: &str, key: &str) -> Result<Option<String>, SubmitError>;
    async fn save_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), SubmitError>;
    /// State that belongs to one message (a thread's id, a reaction's event
    /// on the network): dropped when the archive's retention has dropped
    /// the messages of that time.
    async fn save_message_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), SubmitError> {
        self.save_state(bridge, key, value).await
    }
    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), SubmitError>;
}

/// A bridge's handle on the daemon, bound to the bridge's configured name.
///
/// One context belongs to one running instance of a bridge: when the
/// daemon stops or replaces that instance (a config reload changed it), it
/// says so ([`BridgeContext::begin_stop`]), the bridge's loops end
/// ([`BridgeContext::stopping`], [`BridgeContext::spawn`]), and once
/// [`Bridge::stop`] has returned the context is closed: nothing more is
/// taken from that instance ([`BridgeContext::close`]).
#[derive(Clone)]
pub struct BridgeContext {
    name: Arc<str>,
    host: Arc<dyn Host>,
    life: Arc<Life>,
}

/// Where a bridge instance is in its life.
struct Life {
    stopping: watch::Sender<bool>,
    closed: std::sync::atomic::AtomicBool,
}

impl BridgeContext {
    pub fn new(name: &str, host: Arc<dyn Host>) -> Self {
        let life = Life { stopping: watch::channel(false).0, closed: false.into() };
        BridgeContext { name: name.into(), host, life: Arc::new(life) }
    }
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The daemon stops this instance of the bridge: its loops end and its
    /// connections close; what it has taken in is still submitted.
    pub fn begin_stop(&self) {
        self.life.stopping.send_replace(true);
    }

    /// Whether this instance is stopping.
    pub fn is_stopping(&self) -> bool {
        *self.life.stopping.borrow()
    }

    /// Resolves once this instance is stopping.
    pub async fn stopping(&self) {
        let mut rx = self.life.stopping.subscribe();
        // The sender lives in `self`: `wait_for` ends only when stopping.
        let _ = rx.wait_for(|s| *s).await;
    }

    /// Run `task` until it ends or this instance stops, whichever is first
    /// (then it is dropped where it waits): the bridge's background work.
    pub fn spawn<F>(&self, task: F) -> tokio::task::JoinHandle<()>
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let ctx = self.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = ctx.stopping() => {}
                _ = task => {}
            }
        })
    }

    /// The instance has stopped: from now on nothing it submits is taken
    /// (a task it left behind cannot bring in events twice beside the
    /// instance that replaced it).
    pub fn close(&self) {
        self.begin_stop();
        self.life.closed.store(true, std::sync::atomic::Ordering::Release);
    }

    fn closed(&self) -> bool {
        self.life.closed.load(std::sync::atomic::Ordering::Acquire)
    }

    pub async fn submit(&self, incoming: Incoming) -> Result<Accepted, SubmitError> {
        if self.closed() {
            return Err(SubmitError::Stopped);
        }
        self.host.submit(&self.name, incoming).await
    }
    pub fn portal_of(&self, room: &str) -> Option<String> {
        self.host.portal_of(&self.name, room)
    }
    pub fn time_zone(&self, room: &str) -> Option<String> {
        self.host.time_zone(&self.name, room)
    }
    pub fn rooms(&self) -> Vec<String> {
        self.host.rooms(&self.name)
    }
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Committed>> {
        self.host.subscribe()
    }
    pub async fn history(&self, portal: &str, after_seq: i64, limit: u32) -> Result<Vec<Committed>, SubmitError> {
        self.host.history(portal, after_seq, limit).await
    }
    pub fn count_rejected(&self, reason: &'static str) {
        self.host.count_rejected(&self.name, reason)
    }
    pub async fn refused_recipient(&self, delivery: &Delivery, recipient: &str, reason: &str) -> Result<(), SubmitError> {
        self.host.refused_recipient(&self.name, delivery, recipient, reason).await
    }
    pub fn sign_mark(&self, room: &str, origin: &str) -> Option<String> {
        self.host.sign_mark(room, origin)
    }
    pub fn relayed_by_peer(&self, room: &str, origin: &str, sig: &str, copy: Option<&str>) {
        self.host.relayed_by_peer(&self.name, room, origin, sig, copy);
    }
    pub fn count_fetch_refused(&self, reason: &'static str) {
        self.host.count_fetch_refused(&self.name, reason);
    }
    /// A delivery held back to go out gathered later (`reason`: why).
    pub fn count_held(&self, reason: &'static str) {
        self.host.count_held(&self.name, reason)
    }
    pub fn count_reconciled(&self, n: u64) {
        self.host.count_reconciled(&self.name, n)
    }
    pub async fn ids_of(&self, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, SubmitError> {
        self.host.ids_of(&self.name, room, remote_id).await
    }
    pub fn account_of(&self, person: &str) -> Option<String> {
        self.host.account_of(person, &self.name)
    }
    pub fn canonical_recipient(&self, with: &Recipient) -> Result<Recipient, DirectError> {
        self.host.canonical_recipient(with)
    }
    pub async fn open_direct(&self, room: &str, with: &Recipient, initiator: RemoteSender) -> Result<String, DirectError> {
        if self.closed() {
            return Err(DirectError::Unavailable("this bridge has stopped".into()));
        }
        self.host.open_direct(&self.name, room, with, initiator).await
    }
    pub async fn load_state(&self, key: &str) -> Result<Option<String>, SubmitError> {
        self.host.load_state(&self.name, key).await
    }
    pub async fn save_state(&self, key: &str, value: &str) -> Result<(), SubmitError> {
        self.host.save_state(&self.name, key, value).await
    }
    /// State of one message, pruned with the archive (see [`Host::save_message_state`]).
    pub async fn save_message_state(&self, key: &str, value: &str) -> Result<(), SubmitError> {
        self.host.save_message_state(&self.name, key, value).await
    }
    pub async fn delete_state(&self, key: &str) -> Result<(), SubmitError> {
        self.host.delete_state(&self.name, key).await
    }
}

/// One configured connection to a network.
#[async_trait]
pub trait Bridge: Send + Sync + 'static {
    /// The bridge type as written in the config (`webhook`, `xmpp`, …).
    fn kind(&self) -> &'static str;

    /// Check that `room` names something this bridge can link; the error says
    /// what is wrong, for the config validator.
    fn check_room(&self, room: &str) -> Result<(), String>;

    /// What `room` can show.
    fn capabilities(&self, room: &str) -> Capabilities;

    /// What becomes of an event of `kind` (`reaction`, `edit`, …) that
    /// `room` cannot show, where the portal says `policy`: a bridge whose
    /// every delivery costs much (a mail to each subscriber) may leave some
    /// out. Default: the portal's policy.
    fn degrade_for(&self, _room: &str, _kind: &'static str, policy: Degrade) -> Degrade {
        policy
    }

    /// Whether `sender` in `room` is one of our own ghosts (its messages are
    /// echoes of our deliveries and must never come back in).
    fn is_own_sender(&self, _room: &str, _sender: &str) -> bool {
        false
    }

    /// Connect and start receiving. Returns HTTP routes to mount under
    /// `/bridges/<name>`, if the bridge has any.
    async fn start(self: Arc<Self>, ctx: BridgeContext) -> Result<Option<axum::Router>, BridgeError>;

    /// The room of a direct conversation between `account` (someone on this
    /// network) and `peer`, who speaks from `peer_bridge`: where `peer`'s
    /// messages reach `account`. Called once, when the conversation starts
    /// on the other network. The default: this network has none.
    async fn open_direct(&self, _account: &str, _peer: &Sender, _peer_bridge: &str) -> Result<String, DirectError> {
        Err(DirectError::Unsupported(format!("{} bridges carry no direct conversations", self.kind())))
    }

    /// Deliver one event. Called sequentially per room, in order.
    async fn deliver(&self, delivery: &Delivery) -> Result<Delivered, DeliveryError>;

    /// `room` was linked into a portal while the bridge runs (the console, a
    /// config reload): join it, as `start` joins the rooms linked then. The
    /// default: nothing to join (the network reaches the bridge).
    async fn linked(&self, _room: &str) -> Result<(), String> {
        Ok(())
    }

    /// `room` left its portal while the bridge runs: leave it. Default: nothing.
    async fn unlinked(&self, _room: &str) {}

    /// Causeway stops this bridge (it stops, or a config reload changed or
    /// removed the bridge), after [`BridgeContext::begin_stop`]: end the
    /// connections, submit what was taken in, and write down what the next
    /// start needs. Deliveries still waiting fail as transient, to be
    /// retried by the instance that follows. When it returns the context
    /// is closed. Default: nothing (the loops end by
    /// [`BridgeContext::spawn`]).
    async fn stop(&self) {}

    /// Whether the bridge sits in `room` now, where its network has such a
    /// thing (a MUC, a Matrix room); `None` where it has not (a webhook
    /// endpoint, a mailing list). The console shows it per link.
    fn joined(&self, _room: &str) -> Option<bool> {
        None
    }

    /// With several instances on one store: whether this bridge runs on
    /// each of them (it holds no connection of its own, and what its
    /// network sends may reach any instance: HTTP pushes), rather than only
    /// on the instance that holds its lease (an XMPP component, a mailbox:
    /// one connection at a time). Its deliveries are made by the holder
    /// alone either way. Default: only on the holder.
    fn runs_everywhere(&self) -> bool {
        false
    }

    /// Whether the bridge delivers to people one by one ([`PEOPLE_ROOM`]
    /// rows of a broadcast, each to [`Delivery::recipient`]). Default: no.
    fn reaches_people(&self) -> bool {
        false
    }

    /// Whether the bridge is connected to its network (the `bridge_up` metric).
    fn is_up(&self) -> bool {
        true
    }

    /// How many ghosts the bridge keeps on its network (the `ghosts` metric).
    fn ghosts(&self) -> u64 {
        0
    }
}

/// A mistake in a bridge's options, at a path relative to the bridge's section.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OptionError {
    pub path: String,
    pub message: String,
}

impl OptionError {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        OptionError { path: path.into(), message: message.into() }
    }
}

/// A bridge's options: deserialized from its config section, then checked
/// for what types alone cannot say.
pub trait BridgeOptions: serde::de::DeserializeOwned {
    /// Everything wrong beyond the types, each at its option path.
    fn check(&self) -> Vec<OptionError>;
}

/// Deserialize and check a bridge's options, naming the failing option on error.
pub fn parse_options<T: BridgeOptions>(options: serde_json::Value) -> Result<T, Vec<OptionError>> {
    let parsed: T = serde_path_to_error::deserialize(options).map_err(|e| {
        let path = e.path().to_string();
        vec![OptionError::new(if path == "." { String::new() } else { path }, e.into_inner().to_string())]
    })?;
    let errors = parsed.check();
    if errors.is_empty() { Ok(parsed) } else { Err(errors) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipients_read_back_what_key_of_writes() {
        let mut s = Sender { id: "bob@xmpp.test".into(), person: None, name: "Bob".into(), avatar: None };
        let key = Recipient::key_of(&s, "xmpp");
        assert_eq!(Recipient::parse(&key), Some(Recipient::Account { bridge: "xmpp".into(), id: "bob@xmpp.test".into() }));
        s.person = Some("bob".into());
        assert_eq!(Recipient::parse(&Recipient::key_of(&s, "xmpp")), Some(Recipient::Person("bob".into())));
        // Matrix ids hold colons of their own: only the first one splits.
        assert_eq!(
            Recipient::parse("matrix:@bob:matrix.test"),
            Some(Recipient::Account { bridge: "matrix".into(), id: "@bob:matrix.test".into() })
        );
        for bad in ["", "  ", ":x", "x:", ":"] {
            assert_eq!(Recipient::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn read_markers_take_names_and_the_boolean_yaml_makes_of_off() {
        let read = |v: serde_json::Value| serde_json::from_value::<ReadMarkers>(v).map_err(|e| e.to_string());
        assert_eq!(read("direct".into()), Ok(ReadMarkers::Direct));
        assert_eq!(read("all".into()), Ok(ReadMarkers::All));
        assert_eq!(read("off".into()), Ok(ReadMarkers::Off));
        assert_eq!(read(false.into()), Ok(ReadMarkers::Off));
        assert!(read(true.into()).unwrap_err().contains("direct` or `all"));
        assert!(read("sometimes".into()).unwrap_err().contains("unknown value"));
        assert!(read(3.into()).is_err());
        assert!(ReadMarkers::Direct.shown(true) && !ReadMarkers::Direct.shown(false));
        assert!(ReadMarkers::All.shown(false) && !ReadMarkers::Off.shown(true));
    }
}
