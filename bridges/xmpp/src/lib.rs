//! The XMPP bridge: an external component (XEP-0114).
//!
//! - The bridge sits in every linked group chat (MUC) under `bot_nick` and
//!   turns what people say there into events.
//! - Everyone from another network is a ghost: a JID under the component's
//!   domain that joins the room with the person's name as nick and speaks
//!   there. A delivery is done when the room reflects the ghost's message
//!   back (which also gives the room's stanza-id, what replies, reactions and
//!   retractions in the room refer to).
//! - The connection is re-established with backoff; ghosts rejoin.

mod archive;
pub mod config;
mod connection;
pub mod convert;
mod depth;
pub mod direct;
#[doc(hidden)]
pub mod fuzz;
pub mod ghost;
pub mod inbound;
pub mod jid;
mod mentions;
pub mod ns;
pub mod outbound;
pub mod stanzas;
pub mod styling;
mod threads;
pub mod upload;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use causeway_core::network::{NetworkOf, Options};
use causeway_core::{
    Bridge, BridgeContext, BridgeError, Capabilities, Delivered, Delivery, DeliveryError, DirectError, OptionError, Sender, parse_options,
};
use tokio::sync::{mpsc, oneshot};
use tokio_xmpp::Stanza;
use tokio_xmpp::jid::{BareJid, FullJid, Jid};

use crate::config::{Connect, XmppOptions};
use crate::connection::{ConnectError, Connection, Next};

/// The resource every ghost and the bridge's own occupant use.
const RESOURCE: &str = "causeway";
/// The localpart of the bridge's own occupant JID.
const BOT_NODE: &str = "causeway";
/// Messages of history the bridge asks for when it (re)joins a room that
/// keeps no archive: to find deliveries whose confirmation was lost, and
/// what was said while it was away. A room with an archive is asked for
/// none; its archive is read instead ([`archive`]).
const BOT_HISTORY: u32 = 1000;
/// Rooms the bridge joins at once after connecting. The server answers the
/// stream in order: a message for one room must not wait behind the
/// history replays of a thousand others.
const JOIN_WINDOW: usize = 8;
/// Where the times of the bridge's first and last look at a room are kept,
/// with the room's stanza-id of the last message taken from it when known
/// (`<first ms> <last ms>[ <stanza-id>]`).
const SEEN_KEY: &str = "seen:";
/// Messages this much older than the last look are asked for again (clocks
/// differ); what was taken already is recognised by its stanza-id.
const CATCH_UP_MARGIN_MS: i64 = 120_000;
/// While connected, the last look at each room is stored this often.
const LOOK_EVERY: Duration = Duration::from_secs(300);
/// A room whose last message taken moved on has its mark stored this
/// often: a restart reads the archive from no further back than this.
const MARK_EVERY: Duration = Duration::from_secs(2);

pub struct XmppBridge {
    inner: Arc<Inner>,
}

/// A ghost's place in one room.
#[derive(Clone, Debug)]
struct Seat {
    nick: String,
    /// The presence to show again after a reconnect.
    presence: Option<(Option<causeway_core::Show>, Option<String>)>,
}

/// What the bridge knows while it runs, by concern; one lock over all of it
/// ([`Inner::state`]), so that a step sees its concerns change together.
#[derive(Default)]
struct State {
    /// The rooms the bridge sits in, as it last saw them.
    rooms: Rooms,
    /// The ghosts: their seats in rooms and who they stand for.
    ghost: Ghosts,
    /// What the bridge sent, until the rooms confirm it.
    sent: Sent,
    /// Reading rooms' history: join replays and archive (MAM) catch-ups and look-backs.
    history: History,
    /// (room, ghost JID) → who waits for the ghost's join to be answered.
    joins: HashMap<(String, String), oneshot::Sender<Result<(), convert::JoinError>>>,
    /// Our requests (iq id) waiting for the answer's payload.
    iqs: HashMap<String, oneshot::Sender<Result<Option<tokio_xmpp::minidom::Element>, RequestError>>>,
    /// The client's bound JID (client mode), once connected.
    bound: Option<FullJid>,
}

/// The rooms the bridge sits in, as it last saw them.
#[derive(Default)]
struct Rooms {
    /// Rooms where the bridge's own join has completed.
    joined: HashSet<String>,
    /// Rooms whose current subject has been seen since joining. The subject
    /// comes after the history replay, so this also means "history done".
    subject_seen: HashSet<String>,
    /// Rooms that refused the bridge's own join (since it was last sent).
    refused: HashSet<String>,
    /// room → occupants (nick → real bare JID when the room shows it).
    occupants: HashMap<String, HashMap<String, Option<String>>>,
    /// Stanza-ids the bridge moderated, whose announcements are its own.
    moderated: HashSet<String>,
    /// Rooms that hide real JIDs from the bridge (the operator is told once).
    hiding: HashSet<String>,
}

/// The ghosts: their seats in rooms and who they stand for.
#[derive(Default)]
struct Ghosts {
    /// (room, ghost bare JID) → its seat, once joined.
    seats: HashMap<(String, String), Seat>,
    /// Seats to take again after a reconnect.
    lost_seats: HashMap<(String, String), Seat>,
    /// room → ghost nicks in it (their messages are our own echoes).
    ghost_nicks: HashMap<String, HashSet<String>>,
    /// Ghost bare JID → who it stands for (a [`causeway_core::Recipient`]
    /// key), for direct messages to ghosts; also stored durably.
    ghosts: HashMap<String, String>,
}

/// What the bridge sent, until the rooms confirm it.
#[derive(Default)]
struct Sent {
    /// Our deliveries as the rooms reflected them (see [`inbound::Reflected`]).
    reflected: inbound::Reflected,
    /// Delivery id → who waits for the room to reflect it.
    confirms: HashMap<String, oneshot::Sender<Result<Option<String>, DeliveryError>>>,
    /// Deliveries whose fate is unknown (the connection dropped, or no
    /// reflection came in time): before sending one again, the room's
    /// history is checked for it.
    in_doubt: HashSet<String>,
    /// In-doubt deliveries found in the room after all, with their stanza-ids.
    found: HashMap<String, Option<String>>,
    /// Parts of a split message the room has confirmed (part id → its
    /// stanza-id), until the whole message is delivered.
    parts_sent: HashMap<String, Option<String>>,
}

/// Reading rooms' history: join replays and archive (MAM) catch-ups and look-backs.
#[derive(Default)]
struct History {
    /// Room → when the bridge first and last looked at it (its join's
    /// history replay ended); history newer than that is taken on rejoin.
    seen: HashMap<String, (i64, i64)>,
    /// Rooms replaying their history now → take messages newer than this.
    catch_up: HashMap<String, i64>,
    /// Archive queries waiting for their results: query id → room, and
    /// the time results must be newer than (a catch-up read from a time).
    mam_queries: HashMap<String, (String, Option<i64>)>,
    /// Archive look-backs waiting for their results: query id → room.
    lookbacks: HashMap<String, String>,
    /// Room → the ids of the latest messages its archive held when looked
    /// back at (the id each was sent under → the room's stanza-id), for
    /// deliveries an earlier run may have sent.
    archived_ids: HashMap<String, HashMap<String, String>>,
    /// Rooms being caught up from their archive now → the catch-up's token.
    catching_up: HashMap<String, u64>,
    /// The last catch-up token given out.
    last_token: u64,
    /// Room → the room's stanza-id of the last message taken from it
    /// (where the next catch-up from its archive starts).
    last_sid: HashMap<String, String>,
    /// Room → the stanza-id its stored mark holds (what `last_sid` was
    /// when the mark was last written).
    saved_sid: HashMap<String, String>,
}

/// Why an iq request got no result.
#[derive(Debug, thiserror::Error)]
enum RequestError {
    /// The other side answered with an error.
    #[error("refused: {0:?}")]
    Refused(tokio_xmpp::parsers::stanza_error::DefinedCondition),
    /// No answer (disconnected, timed out).
    #[error("{0}")]
    Lost(String),
}

struct Inner {
    options: XmppOptions,
    /// The mode, with its options.
    connect: Connect,
    ctx: OnceLock<BridgeContext>,
    /// Where stanzas read are handed on, once the bridge runs (rooms linked
    /// at run time are joined through it too).
    inbound_tx: OnceLock<mpsc::Sender<inbound::Inbound>>,
    /// The connection's loop, which [`Bridge::stop`] waits for.
    run_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
    up: AtomicBool,
    out: mpsc::UnboundedSender<Stanza>,
    out_rx: Mutex<Option<mpsc::UnboundedReceiver<Stanza>>>,
    state: Mutex<State>,
    /// A room's own join settled (its subject came, or it was refused).
    settled: tokio::sync::Notify,
    /// Puts files to the upload service (whose slots our server gives).
    http: reqwest::Client,
    /// Fetches files from other networks' links (someone else chose them).
    fetcher: causeway_core::fetch::Fetcher,
}

impl XmppBridge {
    /// Read the options and build the bridge (tests and tools; the daemon
    /// goes through [`NETWORK`]).
    pub fn from_options(options: serde_json::Value) -> Result<Self, Vec<OptionError>> {
        Self::new(parse_options(options)?)
    }

    /// Build the bridge of checked options: its HTTP clients.
    pub fn new(options: XmppOptions) -> Result<Self, Vec<OptionError>> {
        let connect = options.connect()?;
        let http = http_client(&options)?;
        let fetcher = causeway_core::fetch::Fetcher::new(&options.fetch, options.http_connect_timeout, options.http_timeout)
            .map_err(|e| vec![OptionError::new("fetch", e)])?;
        let (out, out_rx) = mpsc::unbounded_channel();
        Ok(XmppBridge {
            inner: Arc::new(Inner {
                options,
                connect,
                ctx: OnceLock::new(),
                inbound_tx: OnceLock::new(),
                run_task: Mutex::new(None),
                up: AtomicBool::new(false),
                out,
                out_rx: Mutex::new(Some(out_rx)),
                state: Mutex::new(State::default()),
                settled: tokio::sync::Notify::new(),
                http,
                fetcher,
            }),
        })
    }
}

impl Inner {
    /// Who an occupant is: their real bare JID where the room shows it, else
    /// the JID of the person the room's `nicks` map names for the nick, else
    /// the occupant JID (`room/nick`).
    pub(crate) fn occupant_id(&self, room: &str, nick: &str, real: Option<String>) -> String {
        real.or_else(|| {
            let person = self.options.nicks.get(room)?.get(nick)?;
            self.ctx.get()?.account_of(person)
        })
        .unwrap_or_else(|| format!("{room}/{nick}"))
    }

    /// The component's domain, under which ghosts live (empty in client mode).
    fn domain(&self) -> &str {
        match &self.connect {
            Connect::Component { domain, .. } => domain,
            Connect::Client { .. } => "",
        }
    }

    fn client_mode(&self) -> bool {
        matches!(self.connect, Connect::Client { .. })
    }

    /// What precedes each relayed message in client mode.
    fn relay_prefix(&self) -> &str {
        match &self.connect {
            Connect::Client { relay_prefix, .. } => relay_prefix,
            Connect::Component { .. } => "",
        }
    }

    /// The bridge's own occupant JID: `causeway@<domain>/causeway` as a
    /// component, the bound JID as a client.
    fn bot_jid(&self) -> FullJid {
        if let Connect::Client { jid, .. } = &self.connect {
            if let Some(bound) = self.state().bound.clone() {
                return bound;
            }
            return FullJid::new(&format!("{jid}/{RESOURCE}")).expect("validated jid");
        }
        FullJid::new(&format!("{BOT_NODE}@{}/{RESOURCE}", self.domain())).expect("validated domain")
    }

    /// Whether `room` is a MUC of a portal (one the bridge sits in).
    fn links_room(&self, room: &str) -> bool {
        match self.ctx.get() {
            Some(ctx) => ctx.rooms().iter().any(|r| r.eq_ignore_ascii_case(room)),
            // Not started: only a room it sits in already.
            None => self.state().rooms.joined.contains(room),
        }
    }

    /// Whether `to` is the bridge's own address (not a ghost's).
    fn is_bot(&self, to: &Jid) -> bool {
        if let Connect::Client { jid, .. } = &self.connect {
            return to.to_bare().to_string().eq_ignore_ascii_case(&jid.to_string());
        }
        to.node().map(|n| n.as_str()) == Some(BOT_NODE) && to.domain().as_str() == self.domain()
    }

    fn send(&self, stanza: impl Into<Stanza>) {
        // The receiver lives as long as the bridge.
        let _ = self.out.send(stanza.into());
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Keep connected: connect, serve until the stream ends, back off, again.
    ///
    /// One piece (over 80 lines): one connection's life — connect, join, serve,
    /// and on loss fail every waiter — whose steps share the connection's
    /// state.
    async fn run(self: Arc<Self>, mut out_rx: mpsc::UnboundedReceiver<Stanza>, ctx: BridgeContext) {
        let (inbound_tx, inbound_rx) = mpsc::channel(1024);
        let _ = self.inbound_tx.set(inbound_tx.clone());
        tokio::spawn(inbound::submit_in_order(self.clone(), ctx.clone(), inbound_rx));
        let mut backoff = causeway_core::retry::Backoff::new(self.options.reconnect_initial, self.options.reconnect_max);
        loop {
            let opened = tokio::select! {
                _ = ctx.stopping() => break,
                opened = Connection::open(&self.options, &self.connect) => opened,
            };
            let mut conn = match opened {
                Ok(c) => c,
                Err(e) => {
                    let delay = backoff.next_wait();
                    let server = self.connect.server();
                    match &e {
                        ConnectError::Refused(_) => tracing::error!(bridge = ctx.name(), server, retry_in = ?delay, "cannot log in: {e}"),
                        ConnectError::Unreachable(_) => {
                            tracing::warn!(bridge = ctx.name(), server, retry_in = ?delay, "cannot connect: {e}")
                        }
                    }
                    tokio::select! {
                        _ = ctx.stopping() => break,
                        _ = tokio::time::sleep(delay) => continue,
                    }
                }
            };
            backoff.reset();
            self.state().bound = conn.bound.clone();
            // Whatever was queued for the old connection belongs to deliveries
            // that have already failed and will be retried.
            while out_rx.try_recv().is_ok() {}
            self.up.store(true, Ordering::Release);
            tracing::info!(bridge = ctx.name(), jid = %self.bot_jid(), "connected to the XMPP server");
            // The rooms, a few at a time, beside everything else.
            let joiner = tokio::spawn(self.clone().join_rooms(ctx.clone(), inbound_tx.clone()));
            let lost: Vec<_> = std::mem::take(&mut self.state().ghost.lost_seats).into_iter().collect();
            for ((room, ghost), seat) in lost {
                if let Ok(from) = FullJid::new(&format!("{ghost}/{RESOURCE}")) {
                    self.send(outbound::join(&from, &room, &seat.nick, seat.presence.clone(), 0, None));
                    let mut st = self.state();
                    st.ghost.ghost_nicks.entry(room.clone()).or_default().insert(seat.nick.clone());
                    st.ghost.seats.insert((room, ghost), seat);
                }
            }
            let mut look = tokio::time::interval_at(tokio::time::Instant::now() + LOOK_EVERY, LOOK_EVERY);
            let mut mark = tokio::time::interval_at(tokio::time::Instant::now() + MARK_EVERY, MARK_EVERY);
            let mut stop = false;
            loop {
                tokio::select! {
                    _ = ctx.stopping() => {
                        stop = true;
                        break;
                    }
                    _ = look.tick() => {
                        let rooms: Vec<String> = self.state().rooms.subject_seen.iter().cloned().collect();
                        for room in rooms {
                            let _ = inbound_tx.send(inbound::looked_at(&self, &room)).await;
                        }
                    }
                    _ = mark.tick() => {
                        let rooms: Vec<String> = {
                            let st = self.state();
                            st.rooms.subject_seen.iter().filter(|r| st.history.last_sid.get(*r) != st.history.saved_sid.get(*r)).cloned().collect()
                        };
                        for room in rooms {
                            let _ = inbound_tx.send(inbound::looked_at(&self, &room)).await;
                        }
                    }
                    incoming = conn.next() => match incoming {
                        Some(Next::Stanza(stanza)) => self.handle(stanza, &inbound_tx).await,
                        // A quiet connection is pinged: the server answers, or
                        // the connection times out and is made again.
                        Some(Next::Quiet) => {
                            if let Err(e) = conn.send(self.keepalive_ping().into()).await {
                                tracing::warn!(bridge = ctx.name(), "send failed: {e}");
                                break;
                            }
                        }
                        Some(Next::TooDeep) => ctx.count_rejected("too_deep"),
                        None => break,
                    },
                    Some(stanza) = out_rx.recv() => {
                        if let Err(e) = conn.send(stanza).await {
                            tracing::warn!(bridge = ctx.name(), "send failed: {e}");
                            break;
                        }
                    }
                }
            }
            joiner.abort();
            if stop {
                // What was read is submitted and the rooms' marks written
                // while the connection's state is still there; then the
                // bridge and its ghosts leave their rooms (nobody stays in
                // a room for a bridge that is gone) and the stream ends.
                Self::end_intake(&inbound_tx).await;
                self.write_marks(&ctx).await;
                // What was queued goes out first (a room left just before).
                let mut queued = Vec::new();
                while let Ok(s) = out_rx.try_recv() {
                    queued.push(s);
                }
                let rooms: Vec<String> = self.state().rooms.joined.iter().cloned().collect();
                queued.extend(rooms.iter().flat_map(|r| self.leave(r)).map(Stanza::from));
                for s in queued {
                    if conn.send(s).await.is_err() {
                        break;
                    }
                }
                conn.close().await;
            }
            self.up.store(false, Ordering::Release);
            if stop {
                tracing::info!(bridge = ctx.name(), "disconnecting from the XMPP server: the bridge stops");
            } else {
                tracing::warn!(bridge = ctx.name(), "disconnected from the XMPP server; reconnecting");
            }
            {
                let mut st = self.state();
                st.history.catching_up.clear();
                st.history.mam_queries.clear();
            }
            // Live stanzas held behind a catch-up that will not finish are taken now.
            let _ = inbound_tx.send(inbound::Inbound::Reset).await;
            let mut st = self.state();
            let pending: Vec<_> = st.sent.confirms.drain().collect();
            for (id, w) in pending {
                st.sent.in_doubt.insert(id);
                let _ = w.send(Err(DeliveryError::transient("disconnected from the XMPP server")));
            }
            for (_, w) in st.joins.drain() {
                let _ = w.send(Err(convert::JoinError::Disconnected));
            }
            for (_, w) in st.iqs.drain() {
                let _ = w.send(Err(RequestError::Lost("disconnected from the XMPP server".into())));
            }
            let seats: Vec<_> = st.ghost.seats.drain().collect();
            st.ghost.lost_seats.extend(seats);
            st.ghost.ghost_nicks.clear();
            st.rooms.occupants.clear();
            st.rooms.joined.clear();
            st.rooms.subject_seen.clear();
            st.rooms.refused.clear();
            st.history.catch_up.clear();
            drop(st);
            if stop {
                // The connection closes as it is dropped.
                return;
            }
        }
        // Stopped while not connected.
        Self::end_intake(&inbound_tx).await;
    }

    /// Let the submitter take what it has and end.
    async fn end_intake(inbound_tx: &mpsc::Sender<inbound::Inbound>) {
        let (done, taken) = tokio::sync::oneshot::channel();
        if inbound_tx.send(inbound::Inbound::Stop(done)).await.is_ok() {
            let _ = taken.await;
        }
    }

    /// Write the rooms' marks moved since the last tick (every
    /// MARK_EVERY): else the next start would catch up from the time of
    /// the join instead of the last message taken. Rooms being caught up
    /// keep their mark as it is.
    async fn write_marks(&self, ctx: &BridgeContext) {
        let rooms: Vec<String> = {
            let st = self.state();
            st.rooms
                .subject_seen
                .iter()
                .filter(|r| !st.history.catching_up.contains_key(*r) && st.history.last_sid.get(*r) != st.history.saved_sid.get(*r))
                .cloned()
                .collect()
        };
        for room in rooms {
            if let inbound::Inbound::Looked { room, first, last } = inbound::looked_at(self, &room) {
                inbound::save_mark(self, ctx, room, first, last).await;
            }
        }
    }

    /// Join the configured rooms, at most `JOIN_WINDOW` whose join has not
    /// settled (subject seen, refused, or no answer within the confirmation
    /// timeout) at a time.
    async fn join_rooms(self: Arc<Self>, ctx: BridgeContext, inbound_tx: mpsc::Sender<inbound::Inbound>) {
        let mut waiting: Vec<(String, tokio::time::Instant)> = Vec::new();
        for room in ctx.rooms().iter().filter(|r| direct::DirectRoom::parse(r, self.domain()).is_none()) {
            loop {
                {
                    let st = self.state();
                    let now = tokio::time::Instant::now();
                    waiting.retain(|(r, sent)| {
                        !st.rooms.subject_seen.contains(r) && !st.rooms.refused.contains(r) && now < *sent + self.options.confirm_timeout
                    });
                }
                if waiting.len() < JOIN_WINDOW {
                    break;
                }
                // A stored permit is not lost; the timeouts are looked at
                // now and then.
                tokio::select! {
                    _ = self.settled.notified() => {}
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            self.clone().join_room(&ctx, &inbound_tx, room).await;
            waiting.push((room.clone(), tokio::time::Instant::now()));
        }
    }

    /// Join one room as the bridge: from its archive (XEP-0313) where it
    /// keeps one and the bridge was there before, else with its history
    /// replay since the bridge was last there.
    async fn join_room(self: Arc<Self>, ctx: &BridgeContext, inbound_tx: &mpsc::Sender<inbound::Inbound>, room: &String) {
        let archive = archive::has_archive(&self, room).await.unwrap_or_else(|e| {
            tracing::debug!(bridge = ctx.name(), room = %room, "no archive found: {e}");
            false
        });
        let since = self.catch_up_since(ctx, room).await;
        let after = self.state().history.last_sid.get(room).cloned();
        self.state().rooms.refused.remove(room);
        let bot = self.bot_jid();
        if archive && (after.is_some() || since.is_some()) {
            // From the archive, before anything live of the room.
            let token = {
                let mut st = self.state();
                st.history.catch_up.remove(room);
                st.history.last_token += 1;
                let token = st.history.last_token;
                st.history.catching_up.insert(room.clone(), token);
                token
            };
            let _ = inbound_tx.send(inbound::Inbound::ArchiveStart { room: room.clone(), token }).await;
            self.send(outbound::join(&bot, room, &self.options.bot_nick, None, 0, None));
            let mark = archive::Mark { after, since_ms: since };
            ctx.spawn(archive::catch_up(self.clone(), ctx.clone(), inbound_tx.clone(), room.clone(), mark, token));
        } else if archive {
            // Never looked at (or too long ago): from now on.
            self.state().history.catch_up.remove(room);
            self.send(outbound::join(&bot, room, &self.options.bot_nick, None, 0, None));
        } else {
            if since.is_some() {
                tracing::warn!(
                    bridge = ctx.name(), room = %room,
                    "the room keeps no archive (XEP-0313): what was said while the bridge was away is taken from its history replay, which may not reach back that far"
                );
                ctx.count_rejected("catch_up_without_archive");
            }
            self.send(outbound::join(&bot, room, &self.options.bot_nick, None, BOT_HISTORY, since));
        }
    }

    /// A room linked while the bridge runs: joined now, and waited for
    /// until the room answers (its subject, or a refusal).
    async fn link_room(self: Arc<Self>, room: &str) -> Result<(), String> {
        let (Some(ctx), Some(tx)) = (self.ctx.get().cloned(), self.inbound_tx.get().cloned()) else {
            // Not started yet: the start joins every linked room.
            return Ok(());
        };
        if !self.up.load(Ordering::Acquire) {
            return Err("not connected to the XMPP server; the room is joined once it is".into());
        }
        {
            let mut st = self.state();
            st.rooms.subject_seen.remove(room);
            st.rooms.refused.remove(room);
        }
        let room = room.to_string();
        self.clone().join_room(&ctx, &tx, &room).await;
        let deadline = tokio::time::Instant::now() + self.options.confirm_timeout;
        loop {
            {
                let st = self.state();
                if st.rooms.subject_seen.contains(&room) {
                    return Ok(());
                }
                if st.rooms.refused.contains(&room) {
                    return Err(format!("{room} refused the bridge's join (does it exist, may the bridge enter?)"));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("{room} did not answer the join within {:?}", self.options.confirm_timeout));
            }
            tokio::select! {
                _ = self.settled.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// A room taken out of its portal: the bridge and its ghosts leave it.
    fn unlink_room(&self, room: &str) {
        for p in self.leave(room) {
            self.send(p);
        }
    }

    /// The bridge and its ghosts leave `room`: the presences to send.
    fn leave(&self, room: &str) -> Vec<tokio_xmpp::parsers::presence::Presence> {
        let (bot_nick, seats) = {
            let mut st = self.state();
            st.rooms.joined.remove(room);
            st.rooms.subject_seen.remove(room);
            st.rooms.occupants.remove(room);
            st.ghost.ghost_nicks.remove(room);
            st.ghost.lost_seats.retain(|(r, _), _| r != room);
            let seats: Vec<(String, Seat)> =
                st.ghost.seats.iter().filter(|((r, _), _)| r == room).map(|((_, g), s)| (g.clone(), s.clone())).collect();
            st.ghost.seats.retain(|(r, _), _| r != room);
            (self.options.bot_nick.clone(), seats)
        };
        let leave = |from: FullJid, nick: &str| {
            let mut p = tokio_xmpp::parsers::presence::Presence::new(tokio_xmpp::parsers::presence::Type::Unavailable).with_from(from);
            p.payloads.push(crate::stanzas::relay_mark());
            if let Some(to) = occupant(room, nick) {
                p = p.with_to(to);
            }
            p
        };
        let mut out: Vec<_> = seats
            .into_iter()
            .filter_map(|(ghost, seat)| FullJid::new(&format!("{ghost}/{RESOURCE}")).ok().map(|from| leave(from, &seat.nick)))
            .collect();
        out.push(leave(self.bot_jid(), &bot_nick));
        out
    }

    /// Since when `room`'s history is taken on joining it: what was said
    /// while the bridge was away (as far as the room keeps it); a room never
    /// looked at before starts from now.
    async fn catch_up_since(&self, ctx: &BridgeContext, room: &str) -> Option<i64> {
        let known = self.state().history.seen.get(room).copied();
        let seen = match known {
            Some(seen) => Some(seen),
            None => match ctx.load_state(&format!("{SEEN_KEY}{room}")).await {
                Ok(stored) => stored.as_deref().and_then(parse_seen).map(|(first, last, sid)| {
                    if let Some(sid) = sid {
                        self.state().history.last_sid.insert(room.to_string(), sid);
                    }
                    (first, last)
                }),
                Err(e) => {
                    // Unknown is not "never": no catch-up this time, and
                    // the stored mark is left as it is.
                    tracing::warn!(bridge = ctx.name(), room = %room, "cannot read when the room was last seen: {e}");
                    return Some(causeway_core::now_ms());
                }
            },
        };
        let max_age = self.options.catch_up_max_age.as_millis() as i64;
        let seen = seen.filter(|(_, last)| causeway_core::now_ms() - last <= max_age);
        let mut st = self.state();
        match seen {
            Some(s) => {
                st.history.seen.insert(room.to_string(), s);
            }
            None => {
                // Too long ago (or never): not caught up, from the archive either.
                st.history.seen.remove(room);
                st.history.last_sid.remove(room);
            }
        }
        // Never before the bridge first sat in the room.
        let since = seen.map(|(first, last)| (last - CATCH_UP_MARGIN_MS).max(first));
        if let Some(since) = since {
            st.history.catch_up.insert(room.to_string(), since);
        }
        since
    }

    /// A ping that makes the server answer: to the server itself as a
    /// client; as a component, to its own domain (the server routes it back).
    fn keepalive_ping(&self) -> tokio_xmpp::parsers::iq::Iq {
        use tokio_xmpp::parsers::iq::Iq;
        let bot = self.bot_jid();
        // The bot's domain: the server's as a client, the component's own as one.
        let to: Jid = BareJid::from_parts(None, bot.domain()).into();
        let ping = tokio_xmpp::minidom::Element::builder("ping", "urn:xmpp:ping").build();
        Iq::Get { from: Some(bot.into()), to: Some(to), id: format!("keepalive-{}", causeway_core::new_id()), payload: ping }
    }

    /// Handle one stanza. Events wait for room in the queue to the router:
    /// while it is full the connection is not read (TCP pushes back on the
    /// server) rather than anything being dropped.
    async fn handle(&self, stanza: Stanza, inbound_tx: &mpsc::Sender<inbound::Inbound>) {
        use inbound::Inbound;
        let events: Vec<Inbound> = match stanza {
            Stanza::Message(m) if archive::is_result(&m) => archive::take_result(self, m).into_iter().collect(),
            Stanza::Message(m) if direct::is_direct(self, &m) => direct::inbound(self, m)
                .map(|(incoming, ghost, from, to)| Inbound::Direct { incoming, ghost, from, to })
                .into_iter()
                .collect(),
            Stanza::Message(m) => inbound::message_inbound(self, m),
            Stanza::Presence(p) => {
                // Another Causeway's ghost: known as an occupant, never relayed.
                let relayed = stanzas::relayed(&p.payloads);
                inbound::presence(self, p).into_iter().filter(|_| !relayed).map(Inbound::Event).collect()
            }
            Stanza::Iq(iq) => {
                use tokio_xmpp::parsers::iq::Iq;
                match iq {
                    Iq::Result { id, payload, .. } => {
                        if let Some(w) = self.state().iqs.remove(&id) {
                            let _ = w.send(Ok(payload));
                        }
                    }
                    Iq::Error { id, error, .. } => {
                        if let Some(w) = self.state().iqs.remove(&id) {
                            let _ = w.send(Err(RequestError::Refused(error.defined_condition)));
                        }
                    }
                    request => {
                        if let Some(reply) = inbound::iq(request) {
                            self.send(reply);
                        }
                    }
                }
                Vec::new()
            }
        };
        for e in events {
            // Only fails when the daemon is shutting down.
            let _ = inbound_tx.send(e).await;
        }
    }

    /// Make sure `ghost` sits in `room`; returns its nick there.
    async fn seat(&self, room: &str, ghost: &BareJid, name: &str) -> Result<String, DeliveryError> {
        let key = (room.to_string(), ghost.to_string());
        if let Some(seat) = self.state().ghost.seats.get(&key) {
            return Ok(seat.nick.clone());
        }
        let from = FullJid::new(&format!("{ghost}/{RESOURCE}")).map_err(|e| DeliveryError::permanent(format!("ghost JID: {e}")))?;
        let base = ghost::nick(name);
        for attempt in 0..5 {
            let nick = match attempt {
                0 => base.clone(),
                1 => format!("{base}{}", self.options.nick_suffix),
                n => format!("{base}{} {n}", self.options.nick_suffix),
            };
            let (tx, rx) = oneshot::channel();
            self.state().joins.insert(key.clone(), tx);
            self.state().ghost.ghost_nicks.entry(room.to_string()).or_default().insert(nick.clone());
            self.send(outbound::join(&from, room, &nick, None, 0, None));
            let answer = tokio::time::timeout(self.options.confirm_timeout, rx).await;
            match answer {
                Ok(Ok(Ok(()))) => {
                    self.state().ghost.seats.insert(key, Seat { nick: nick.clone(), presence: None });
                    return Ok(nick);
                }
                Ok(Ok(Err(convert::JoinError::Conflict))) => {
                    self.state().ghost.ghost_nicks.entry(room.to_string()).or_default().remove(&nick);
                    continue;
                }
                Ok(Ok(Err(e))) => {
                    self.state().ghost.ghost_nicks.entry(room.to_string()).or_default().remove(&nick);
                    return Err(match e {
                        convert::JoinError::Disconnected => DeliveryError::transient(e.to_string()),
                        _ => DeliveryError::permanent(format!("cannot join {room}: {e}")),
                    });
                }
                _ => {
                    self.state().joins.remove(&key);
                    return Err(DeliveryError::transient(format!("no answer to joining {room}")));
                }
            }
        }
        Err(DeliveryError::permanent(format!("no free nick for {name:?} in {room}")))
    }

    /// Send an iq (`set`, else `get`) and wait for the answer's payload.
    async fn request(
        &self,
        from: &FullJid,
        to: &str,
        set: bool,
        payload: tokio_xmpp::minidom::Element,
    ) -> Result<Option<tokio_xmpp::minidom::Element>, RequestError> {
        self.request_within(from, to, set, payload, self.options.confirm_timeout).await
    }

    /// [`Inner::request`], waiting at most `timeout`.
    async fn request_within(
        &self,
        from: &FullJid,
        to: &str,
        set: bool,
        payload: tokio_xmpp::minidom::Element,
        timeout: Duration,
    ) -> Result<Option<tokio_xmpp::minidom::Element>, RequestError> {
        use tokio_xmpp::parsers::iq::Iq;
        let to = Jid::new(to).map_err(|e| RequestError::Lost(format!("{to:?}: {e}")))?;
        let id = causeway_core::new_id();
        let (from, to) = (Some(from.clone().into()), Some(to));
        let iq = if set { Iq::Set { from, to, id: id.clone(), payload } } else { Iq::Get { from, to, id: id.clone(), payload } };
        let (tx, rx) = oneshot::channel();
        self.state().iqs.insert(id.clone(), tx);
        self.send(iq);
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => answer,
            Ok(Err(_)) => Err(RequestError::Lost("request lost".into())),
            Err(_) => {
                self.state().iqs.remove(&id);
                Err(RequestError::Lost("no answer in time".into()))
            }
        }
    }

    /// Send a message and wait for the room to reflect it.
    async fn send_confirmed(&self, id: &str, message: tokio_xmpp::parsers::message::Message) -> Result<Option<String>, DeliveryError> {
        let (tx, rx) = oneshot::channel();
        self.state().sent.confirms.insert(id.to_string(), tx);
        self.send(message);
        match tokio::time::timeout(self.options.confirm_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(DeliveryError::transient("confirmation lost")),
            Err(_) => {
                let mut st = self.state();
                st.sent.confirms.remove(id);
                st.sent.in_doubt.insert(id.to_string());
                Err(DeliveryError::transient("the room did not reflect the message in time"))
            }
        }
    }

    /// For a delivery in doubt: wait for the room's history replay (or its
    /// catch-up from the archive) after the bridge's (re)join, then say
    /// whether the message is already there.
    async fn already_delivered(&self, room: &str, id: &str) -> Option<Option<String>> {
        if !self.state().sent.in_doubt.contains(id) {
            return None;
        }
        let start = tokio::time::Instant::now();
        loop {
            let (seen, catching) = {
                let st = self.state();
                (st.rooms.subject_seen.contains(room), st.history.catching_up.contains_key(room))
            };
            let waited = start.elapsed();
            // Not caught up from the archive now, and joined (or no answer in time).
            let settled = !catching && (seen || waited > self.options.confirm_timeout);
            if settled || waited > archive::MAX_TIME {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let mut st = self.state();
        st.sent.in_doubt.remove(id);
        st.sent.found.remove(id)
    }
}

/// The `xmpp` network, for the daemon's table.
pub const NETWORK: NetworkOf<XmppOptions> = NetworkOf::new();

impl Options for XmppOptions {
    const KIND: &'static str = "xmpp";

    fn room_ok(&self, room: &str) -> Result<(), String> {
        match self.connect() {
            Ok(Connect::Component { domain, .. }) => check_room(&domain, room),
            _ => check_room("", room),
        }
    }

    fn bridge(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
        Ok(Arc::new(XmppBridge::new(self.clone())?))
    }
}

/// Whether `room` is a group chat, or a direct conversation of a ghost of
/// `domain` (a component's; empty in client mode).
fn check_room(domain: &str, room: &str) -> Result<(), String> {
    if let Some(direct) = direct::DirectRoom::parse(room, domain) {
        return direct.map(|_| ()).map_err(|e| e.to_string());
    }
    match room.parse::<BareJid>() {
        Ok(j) if j.node().is_some() => Ok(()),
        _ => Err(format!("{room:?} is not a group chat address like room@conference.example.org")),
    }
}

#[async_trait]
impl Bridge for XmppBridge {
    fn kind(&self) -> &'static str {
        XmppOptions::KIND
    }

    fn check_room(&self, room: &str) -> Result<(), String> {
        check_room(self.inner.domain(), room)
    }

    fn capabilities(&self, room: &str) -> Capabilities {
        if self.inner.client_mode() {
            // One account speaks for everyone: it cannot show their presence,
            // typing or comings and goings, and a reaction would be the
            // bridge's own (a short notice says who reacted instead).
            // A name in a relayed message stands for nobody in the room
            // (mentions going in still name the people there).
            return Capabilities {
                mentions: false,
                presence: false,
                typing: false,
                membership: false,
                reactions: false,
                read_markers: false,
                ..Capabilities::ALL
            };
        }
        if room.starts_with("direct:") {
            // One to one: no room to show presence, membership or a subject
            // in, and no threads (see `threads`).
            return Capabilities {
                threads: false,
                presence: false,
                membership: false,
                topic: false,
                read_markers: self.inner.options.read_markers.shown(true),
                ..Capabilities::ALL
            };
        }
        Capabilities { read_markers: self.inner.options.read_markers.shown(false), ..Capabilities::ALL }
    }

    fn is_own_sender(&self, room: &str, sender: &str) -> bool {
        if self.inner.client_mode() {
            let own_occupant = format!("{room}/{}", self.inner.options.bot_nick);
            return sender == own_occupant || sender.parse::<Jid>().is_ok_and(|j| self.inner.is_bot(&j));
        }
        let own_domain = format!("@{}", self.inner.domain());
        if sender.ends_with(&own_domain) || sender.contains(&format!("{own_domain}/")) {
            return true;
        }
        let st = self.inner.state();
        sender
            .strip_prefix(room)
            .and_then(|r| r.strip_prefix('/'))
            .is_some_and(|nick| st.ghost.ghost_nicks.get(room).is_some_and(|n| n.contains(nick)))
    }

    async fn start(self: Arc<Self>, ctx: BridgeContext) -> Result<Option<axum::Router>, BridgeError> {
        self.inner.ctx.set(ctx.clone()).map_err(|_| BridgeError::Other("xmpp bridge started twice".into()))?;
        self.inner.fetcher.attach(&ctx);
        let rx = self.inner.out_rx.lock().unwrap_or_else(|p| p.into_inner()).take();
        let rx = rx.ok_or_else(|| BridgeError::Other("xmpp bridge started twice".into()))?;
        let task = tokio::spawn(self.inner.clone().run(rx, ctx));
        *self.inner.run_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(None)
    }

    async fn open_direct(&self, account: &str, peer: &Sender, peer_bridge: &str) -> Result<String, DirectError> {
        if self.inner.client_mode() {
            return Err(DirectError::Unsupported("an XMPP bridge in client mode has no ghosts to talk one to one".into()));
        }
        direct::open(&self.inner, account, peer, peer_bridge).await
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Delivered, DeliveryError> {
        if !self.inner.up.load(Ordering::Acquire) {
            return Err(DeliveryError::Transient {
                reason: "not connected to the XMPP server".into(),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        if delivery.room == causeway_core::PEOPLE_ROOM {
            return outbound::deliver_to_person(&self.inner, delivery).await;
        }
        match direct::DirectRoom::parse(&delivery.room, self.inner.domain()) {
            Some(Ok(room)) => outbound::deliver_direct(&self.inner, &room, delivery).await,
            Some(Err(e)) => Err(DeliveryError::permanent(e.to_string())),
            None if self.inner.client_mode() => outbound::relay(&self.inner, delivery).await,
            None => outbound::deliver(&self.inner, delivery).await,
        }
    }

    async fn linked(&self, room: &str) -> Result<(), String> {
        if direct::DirectRoom::parse(room, self.inner.domain()).is_some() {
            return Ok(());
        }
        self.inner.clone().link_room(room).await
    }

    async fn unlinked(&self, room: &str) {
        if direct::DirectRoom::parse(room, self.inner.domain()).is_none() {
            self.inner.unlink_room(room);
        }
    }

    async fn stop(&self) {
        // The connection's loop sees the context stopping: it submits what
        // it read, writes the rooms' marks, fails what waits, and ends.
        let task = self.inner.run_task.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }

    fn reaches_people(&self) -> bool {
        true
    }

    fn joined(&self, room: &str) -> Option<bool> {
        if room == causeway_core::PEOPLE_ROOM {
            return None;
        }
        if direct::DirectRoom::parse(room, self.inner.domain()).is_some() {
            return None;
        }
        Some(self.inner.state().rooms.joined.iter().any(|r| r.eq_ignore_ascii_case(room)))
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn ghosts(&self) -> u64 {
        let st = self.inner.state();
        let seated: HashSet<&String> = st.ghost.seats.keys().chain(st.ghost.lost_seats.keys()).map(|(_, g)| g).collect();
        seated.len() as u64
    }
}

/// The one HTTP client of the bridge (file fetches and uploads): every
/// request bounded in time, as a whole and for connecting.
fn http_client(options: &XmppOptions) -> Result<reqwest::Client, Vec<OptionError>> {
    reqwest::Client::builder()
        .user_agent(concat!("causeway/", env!("CARGO_PKG_VERSION")))
        .timeout(options.http_timeout)
        .connect_timeout(options.http_connect_timeout)
        .build()
        .map_err(|e| vec![OptionError::new("", format!("cannot build the HTTP client: {e}"))])
}

/// The JID of a room occupant: `room/nick`.
fn occupant(room: &str, nick: &str) -> Option<Jid> {
    Jid::new(&format!("{room}/{nick}")).ok()
}

/// `<first ms> <last ms>[ <stanza-id>]` as stored under [`SEEN_KEY`].
fn parse_seen(s: &str) -> Option<(i64, i64, Option<String>)> {
    let mut parts = s.splitn(3, ' ');
    let first = parts.next()?.parse().ok()?;
    let last = parts.next()?.parse().ok()?;
    let sid = parts.next().map(str::trim).filter(|s| !s.is_empty() && s.len() <= 256).map(str::to_string);
    Some((first, last, sid))
}

#[cfg(test)]
mod tests {
    use causeway_core::Bridge;

    #[test]
    fn read_markers_cross_in_direct_conversations_unless_told_otherwise() {
        let bridge = |markers: Option<&str>| {
            let mut o = serde_json::json!({"server": "127.0.0.1:5347", "domain": "bridge.xmpp.test", "secret": "s"});
            if let Some(m) = markers {
                o["read_markers"] = m.into();
            }
            super::XmppBridge::from_options(o).unwrap()
        };
        let shown = |b: &super::XmppBridge| {
            (b.capabilities("direct:alice@xmpp.test").read_markers, b.capabilities("ops@conference.xmpp.test").read_markers)
        };
        assert_eq!(shown(&bridge(None)), (true, false), "by default: direct conversations only");
        assert_eq!(shown(&bridge(Some("all"))), (true, true));
        assert_eq!(shown(&bridge(Some("off"))), (false, false));
    }

    #[test]
    fn marks_are_read_with_or_without_the_last_stanza_id() {
        assert_eq!(super::parse_seen("1 2"), Some((1, 2, None)));
        assert_eq!(super::parse_seen("1 2 abc-1"), Some((1, 2, Some("abc-1".into()))));
        assert_eq!(super::parse_seen("1 2 "), Some((1, 2, None)));
        assert_eq!(super::parse_seen("1"), None);
        assert_eq!(super::parse_seen("x 2 s"), None);
    }
}
