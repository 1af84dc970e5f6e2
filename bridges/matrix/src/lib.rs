//! The Matrix bridge: an application service.
//!
//! - The homeserver pushes room events to `PUT /_matrix/app/v1/transactions/{txn}`
//!   under the bridge's routes; they are committed before the `200` (a crash
//!   before it makes the homeserver resend, and the router drops the repeat).
//! - Everyone from another network is a ghost (`@<ghost_prefix>…`), registered
//!   on first use, named and pictured like the person, joined to the rooms,
//!   speaking by identity assertion (`?user_id=`) with the delivery id as
//!   transaction id.
//! - Portal rooms are linked by id (the bridge's user must be invited) or by
//!   an alias in the bridge's namespace, created when missing.

pub mod client;
pub mod config;
mod direct;
#[doc(hidden)]
pub mod fuzz;
pub mod ghost;
pub mod inbound;
pub mod outbound;
mod reconcile;
pub mod registration;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use causeway_core::fetch::Fetcher;
use causeway_core::network::{Options, clap};
use causeway_core::{
    Bridge, BridgeContext, BridgeError, Capabilities, Configured, Delivered, Delivery, DeliveryError, DirectError, Network, OptionError,
    Sender, parse_options,
};
use ruma::{OwnedRoomId, OwnedUserId, RoomAliasId, RoomId, UserId};
use serde_json::json;

use crate::client::{ApiError, Client, ErrCode};
use crate::config::MatrixOptions;

/// Where a linked room's id is kept in the bridge's state.
const ROOM_KEY: &str = "room:";
/// Where the ghost of a direct conversation's room is kept.
const DIRECT_GHOST_KEY: &str = "direct-ghost:";
/// How often the bridge checks that the homeserver answers.
const HEALTH_CHECK: Duration = Duration::from_secs(10);

pub struct MatrixBridge {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct State {
    /// Linked room (as configured: id or alias) → room id, once resolved.
    room_ids: HashMap<String, OwnedRoomId>,
    /// Room id → linked room.
    links: HashMap<OwnedRoomId, String>,
    /// Ghosts registered with the homeserver.
    registered: HashSet<OwnedUserId>,
    /// Ghost → (display name, avatar source URL) as last set.
    profiles: HashMap<OwnedUserId, (String, Option<String>)>,
    /// (room id, user) pairs known to be joined.
    joined: HashSet<(OwnedRoomId, OwnedUserId)>,
    /// Room id → members (user → display name) as last seen.
    members: HashMap<OwnedRoomId, HashMap<OwnedUserId, Option<String>>>,
    /// Room id → who was typing at the last typing notice.
    typing: HashMap<OwnedRoomId, HashSet<OwnedUserId>>,
    /// Events Causeway sent as people's own accounts, lately (oldest first).
    puppet_sent: std::collections::VecDeque<String>,
    /// (room id, account) → sends as that account not yet answered.
    puppet_inflight: HashMap<(OwnedRoomId, OwnedUserId), usize>,
    /// Transactions taken lately, oldest first.
    txns: std::collections::VecDeque<String>,
    /// Room id → the newest event reconciliation has seen there (or the
    /// first pushed): the timeline is read back to it.
    marks: HashMap<OwnedRoomId, String>,
    /// The number of the last transaction taken (Synapse counts 1, 2, 3 …).
    last_txn: Option<u64>,
    /// When `last_txn` was last stored.
    last_txn_saved: Option<std::time::Instant>,
    /// Direct conversation's link → the ghost in its room, who says
    /// everything from the other side there.
    direct_ghosts: HashMap<String, OwnedUserId>,
}

pub(crate) struct Inner {
    options: MatrixOptions,
    client: Client,
    /// Acts as people's own accounts (double puppeting), when configured.
    puppet: Option<Client>,
    bot: OwnedUserId,
    ctx: OnceLock<BridgeContext>,
    up: AtomicBool,
    /// Every linked room has been tried once.
    set_up_done: AtomicBool,
    /// The bridge's user was invited into a room: try setting up again now.
    invited: tokio::sync::Notify,
    state: Mutex<State>,
    /// Held while events are taken (a transaction, a reconciliation pass),
    /// so that what one finds is never overtaken by the other.
    intake: tokio::sync::Mutex<()>,
    /// For files and avatars from other networks, copied into the media
    /// repository: links someone else chose.
    fetcher: Fetcher,
    /// Places for files passed on at once (`media_concurrency`).
    media_places: Arc<tokio::sync::Semaphore>,
}

impl MatrixBridge {
    /// Read the options and build the bridge (tests and tools; the daemon
    /// goes through [`Matrix`]).
    pub fn from_options(options: serde_json::Value) -> Result<Self, Vec<OptionError>> {
        Self::new(parse_options(options)?)
    }

    /// Build the bridge of checked options: its homeserver clients and fetcher.
    pub fn new(options: MatrixOptions) -> Result<Self, Vec<OptionError>> {
        let bot = UserId::parse(format!("@{}:{}", options.sender_localpart, options.server_name))
            .map_err(|e| vec![OptionError::new("sender_localpart", e.to_string())])?;
        let client = Client::new(&options.homeserver, options.as_token.clone(), options.request_timeout)
            .map_err(|e| vec![OptionError::new("homeserver", e)])?;
        let puppet = match &options.double_puppet_token {
            Some(t) => Some(
                Client::new(&options.homeserver, t.clone(), options.request_timeout)
                    .map_err(|e| vec![OptionError::new("homeserver", e)])?,
            ),
            None => None,
        };
        let fetcher = Fetcher::new(&options.fetch, options.request_timeout.min(Duration::from_secs(10)), options.request_timeout)
            .map_err(|e| vec![OptionError::new("fetch", e)])?;
        // Links to Matrix files that this bridge signs (other bridges copy them).
        causeway_core::fetch::trust_own_links(&format!(
            "{}/media/",
            options.public_url.as_deref().unwrap_or(&options.url).trim_end_matches('/')
        ));
        Ok(MatrixBridge {
            inner: Arc::new(Inner {
                client,
                puppet,
                bot,
                ctx: OnceLock::new(),
                up: AtomicBool::new(false),
                set_up_done: AtomicBool::new(false),
                invited: tokio::sync::Notify::new(),
                state: Mutex::new(State::default()),
                intake: tokio::sync::Mutex::new(()),
                media_places: Arc::new(tokio::sync::Semaphore::new(options.media_concurrency.max(1))),
                options,
                fetcher,
            }),
        })
    }

    /// The registration file for the homeserver.
    pub fn registration(&self) -> String {
        registration::yaml(&self.inner.options)
    }

    /// The double puppeting registration, when `double_puppet_token` is set.
    pub fn double_puppet_registration(&self) -> Option<String> {
        registration::double_puppet_yaml(&self.inner.options)
    }
}

impl Inner {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The person's own account to speak as in `room` (double puppeting):
    /// only with `double_puppet_token`, only for a sender from a bridge of
    /// `double_puppet_from`, only a person of the directory, only an account
    /// of this homeserver that is not the bridge's own, and only while it
    /// is in the room (Causeway never joins it anywhere).
    fn puppet_of(&self, sender: &Sender, from_bridge: &str, room: &RoomId) -> Option<OwnedUserId> {
        self.puppet.as_ref()?;
        if !self.options.double_puppet_from.iter().any(|b| b == from_bridge) {
            return None;
        }
        let account = self.ctx.get()?.account_of(sender.person.as_deref()?)?;
        let user = OwnedUserId::try_from(account).ok()?;
        let here = self.state().members.get(room).is_some_and(|m| m.contains_key(&user));
        (user.server_name().as_str() == self.options.server_name && !self.is_ours(user.as_str()) && here).then_some(user)
    }

    /// Remember an event sent as a person's own account.
    fn sent_as(&self, event: &ruma::EventId) {
        let mut st = self.state();
        if st.puppet_sent.len() >= 4096 {
            st.puppet_sent.pop_front();
        }
        st.puppet_sent.push_back(event.to_string());
    }

    /// Whether Causeway sent this event as a person's own account.
    fn sent_as_puppet(&self, room: &RoomId, user: &UserId, event_id: &str) -> bool {
        let st = self.state();
        st.puppet_sent.iter().any(|e| e == event_id) || st.puppet_inflight.get(&(room.to_owned(), user.to_owned())).is_some_and(|n| *n > 0)
    }

    /// Whether `user` is the bridge's own (the bot or a ghost).
    fn is_ours(&self, user: &str) -> bool {
        let Ok(u) = <&UserId>::try_from(user) else { return false };
        u.server_name().as_str() == self.options.server_name && (u == self.bot || u.localpart().starts_with(&self.options.ghost_prefix))
    }

    /// The linked room a room id stands for. While rooms are being set up,
    /// wait a little for it (a room Causeway just created sends its first
    /// events before its creation is answered).
    async fn link_of(&self, room: &RoomId) -> Option<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(l) = self.state().links.get(room).cloned() {
                return Some(l);
            }
            if self.set_up_done.load(Ordering::Acquire) || tokio::time::Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The room id of a linked room, resolved at start.
    fn room_id(&self, link: &str) -> Result<OwnedRoomId, DeliveryError> {
        self.state().room_ids.get(link).cloned().ok_or_else(|| DeliveryError::Transient {
            reason: format!("room {link} is not set up yet"),
            retry_after: Some(Duration::from_secs(1)),
        })
    }

    /// Resolve (or create) every linked room and sit the bot in it, retrying
    /// until all are done. The bridge counts as up once the homeserver has
    /// accepted the token.
    async fn set_up(self: Arc<Self>, ctx: BridgeContext) {
        let mut backoff = causeway_core::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        loop {
            let delay = backoff.next_wait();
            match self.client.whoami().await {
                Ok(me) if me == self.bot.as_str() => break,
                Ok(me) => {
                    tracing::error!(bridge = ctx.name(), "the homeserver says as_token belongs to {me}, not {}", self.bot);
                }
                Err(e) => tracing::warn!(bridge = ctx.name(), retry_in = ?delay, "homeserver not answering: {e}"),
            }
            tokio::time::sleep(delay).await;
        }
        self.up.store(true, Ordering::Release);
        // A recoverer still running sends what it holds at once.
        if let Err(e) = self.client.ping(&self.options.id, &format!("causeway-start-{}", std::process::id())).await {
            tracing::debug!(bridge = ctx.name(), "appservice ping not answered: {e}");
        }
        ctx.spawn(inbound::reconcile_passes(self.clone(), ctx.clone()));
        // Direct conversations' rooms are the ghosts', not the bridge user's.
        let mut pending: Vec<String> = ctx.rooms().into_iter().filter(|l| direct::room_of(l).is_none()).collect();
        let mut backoff = causeway_core::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        while !pending.is_empty() {
            let delay = backoff.next_wait();
            let mut failed = Vec::new();
            for link in pending {
                if let Err(e) = self.set_up_room(&ctx, &link).await {
                    tracing::warn!(bridge = ctx.name(), room = %link, retry_in = ?delay, "room not set up: {e}");
                    failed.push(link);
                }
            }
            // After one pass, events of rooms still unknown are not waited for.
            self.set_up_done.store(true, Ordering::Release);
            pending = failed;
            if !pending.is_empty() {
                // Again after the delay, or at once when the bridge is invited somewhere.
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = self.invited.notified() => {}
                }
            }
        }
        tracing::info!(bridge = ctx.name(), "every Matrix room is set up");
        // From now on, follow whether the homeserver answers.
        loop {
            tokio::time::sleep(HEALTH_CHECK).await;
            let ok = self.client.whoami().await.is_ok();
            if ok != self.up.swap(ok, Ordering::AcqRel) {
                if ok {
                    tracing::info!(bridge = ctx.name(), "the homeserver answers again");
                    ctx.spawn(inbound::reconcile_passes(self.clone(), ctx.clone()));
                } else {
                    tracing::warn!(bridge = ctx.name(), "the homeserver does not answer");
                }
            }
        }
    }

    /// A direct conversation's room (`link`), with `ghost` in it; stored,
    /// so that after a restart the same ghost speaks there.
    async fn remember_room(&self, ctx: &BridgeContext, link: &str, room: &RoomId, ghost: &UserId) {
        {
            let mut st = self.state();
            st.room_ids.insert(link.to_string(), room.to_owned());
            st.links.insert(room.to_owned(), link.to_string());
            st.joined.insert((room.to_owned(), ghost.to_owned()));
            st.direct_ghosts.insert(link.to_string(), ghost.to_owned());
        }
        if let Err(e) = ctx.save_state(&format!("{DIRECT_GHOST_KEY}{link}"), ghost.as_str()).await {
            tracing::warn!(room = %room, "cannot store the ghost of a direct conversation: {e}");
        }
    }

    fn forget_room(&self, link: &str, room: &RoomId) {
        let mut st = self.state();
        st.room_ids.remove(link);
        st.links.remove(room);
        st.direct_ghosts.remove(link);
    }

    /// The ghost that speaks in a direct conversation's room.
    fn direct_ghost(&self, link: &str) -> Option<OwnedUserId> {
        self.state().direct_ghosts.get(link).cloned()
    }

    /// Who reads `room`'s timeline: the bridge's user, or in a direct
    /// conversation (where it is not) the room's ghost.
    fn reader_of(&self, room: &RoomId) -> Option<Option<OwnedUserId>> {
        let st = self.state();
        match st.links.get(room) {
            Some(link) if direct::room_of(link).is_some() => st.direct_ghosts.get(link).cloned().map(Some),
            _ => Some(None),
        }
    }

    /// Room ids known before any request: linked by id, or found at earlier
    /// starts; so transactions for them can be taken at once.
    async fn load_room_ids(&self, ctx: &BridgeContext) {
        for link in ctx.rooms() {
            if let Some(id) = direct::room_of(&link) {
                let ghost = ctx.load_state(&format!("{DIRECT_GHOST_KEY}{link}")).await.ok().flatten();
                let mut st = self.state();
                if let Some(g) = ghost.and_then(|g| OwnedUserId::try_from(g).ok()) {
                    st.joined.insert((id.clone(), g.clone()));
                    st.direct_ghosts.insert(link.clone(), g);
                }
                st.room_ids.insert(link.clone(), id.clone());
                st.links.insert(id, link);
                continue;
            }
            if let Ok(id) = RoomId::parse(&link) {
                let mut st = self.state();
                st.room_ids.insert(link.clone(), id.clone());
                st.links.insert(id, link);
                continue;
            }
            if let Ok(Some(id)) = ctx.load_state(&format!("{ROOM_KEY}{link}")).await
                && let Ok(id) = OwnedRoomId::try_from(id)
            {
                let mut st = self.state();
                st.room_ids.insert(link.clone(), id.clone());
                st.links.insert(id, link);
            }
        }
    }

    async fn set_up_room(&self, ctx: &BridgeContext, link: &str) -> Result<(), ApiError> {
        if RoomId::parse(link).is_err() {
            let id = match self.client.resolve_alias(link).await? {
                Some(id) => id,
                None => self.create_portal_room(link).await?,
            };
            // Known at once, so its events are taken while it is joined.
            let mut st = self.state();
            st.room_ids.insert(link.to_string(), id.clone());
            st.links.insert(id, link.to_string());
        }
        // By the alias where there is one: the homeserver then knows where
        // to join a room of another server from.
        let joined = match self.client.join(link, None).await {
            Ok(id) => id,
            Err(e) => {
                tracing::error!(
                    bridge = ctx.name(), room = %link,
                    "the bridge cannot join: invite {} to the room (and give it moderator rights to redact others' messages)", self.bot
                );
                return Err(e);
            }
        };
        let members = self.client.joined_members(joined.as_str()).await?;
        if let Err(e) = ctx.save_state(&format!("{ROOM_KEY}{link}"), joined.as_str()).await {
            tracing::warn!(room = %link, "cannot store the room id: {e}");
        }
        let mut st = self.state();
        st.room_ids.insert(link.to_string(), joined.clone());
        st.links.insert(joined.clone(), link.to_string());
        let m = st.members.entry(joined.clone()).or_default();
        for (user, name) in members {
            if let Ok(u) = OwnedUserId::try_from(user) {
                m.insert(u, name);
            }
        }
        st.joined.insert((joined, self.bot.clone()));
        Ok(())
    }

    /// Create the room for an alias in the bridge's namespace.
    async fn create_portal_room(&self, link: &str) -> Result<OwnedRoomId, ApiError> {
        let alias = RoomAliasId::parse(link).map_err(|e| ApiError::Refused {
            status: 400,
            errcode: ErrCode::InvalidParam,
            error: e.to_string(),
        })?;
        let local = alias.alias();
        if !local.starts_with(&self.options.alias_prefix) || alias.server_name().as_str() != self.options.server_name {
            return Err(ApiError::Refused {
                status: 404,
                errcode: ErrCode::NotFound,
                error: format!(
                    "{link} does not exist and is outside the bridge's alias namespace (#{}…:{}), so it is not created",
                    self.options.alias_prefix, self.options.server_name
                ),
            });
        }
        let body = json!({
            "room_alias_name": local,
            "name": local.strip_prefix(&self.options.alias_prefix).unwrap_or(local),
            "preset": "public_chat",
            "visibility": "private",
        });
        let id = self.client.create_room(&body, None).await?;
        tracing::info!(room = %link, room_id = %id, "created the portal room");
        Ok(id)
    }

    /// Make sure `ghost` exists with the sender's name and picture.
    async fn ensure_ghost(&self, ghost: &UserId, sender: &Sender) -> Result<(), DeliveryError> {
        if !self.state().registered.contains(ghost) {
            self.client.register(ghost.localpart()).await?;
            self.state().registered.insert(ghost.to_owned());
        }
        let profile = (sender.name.clone(), sender.avatar.clone());
        if self.state().profiles.get(ghost) == Some(&profile) {
            return Ok(());
        }
        self.client.set_displayname(ghost, &sender.name).await?;
        if let Some(url) = &sender.avatar {
            match self.copy_media(url, Some("avatar")).await {
                Ok(Ok((mxc, _, _))) => self.client.set_avatar(ghost, mxc.as_str()).await?,
                Ok(Err(e)) | Err(DeliveryError::Transient { reason: e, .. }) | Err(DeliveryError::Permanent { reason: e }) => {
                    tracing::warn!(ghost = %ghost, url = %causeway_core::secret::link_for_log(url), "avatar not copied: {e}")
                }
            }
        }
        self.state().profiles.insert(ghost.to_owned(), profile);
        Ok(())
    }

    /// Make sure the ghost `user` is in the room (invited by the bridge's
    /// user first where needed).
    async fn ensure_joined(&self, room: &RoomId, user: &UserId) -> Result<(), DeliveryError> {
        let key = (room.to_owned(), user.to_owned());
        if self.state().joined.contains(&key) {
            return Ok(());
        }
        if let Err(e) = self.client.join(room.as_str(), Some(user)).await {
            if !e.is(ErrCode::Forbidden) {
                return Err(e.into());
            }
            self.client.invite(room.as_str(), user, None).await?;
            self.client.join(room.as_str(), Some(user)).await?;
        }
        self.state().joined.insert(key);
        Ok(())
    }

    /// Copy a file from another network into the media repository: its mxc
    /// URI, content type and size. `Ok(Err(_))`: the file cannot be had (send
    /// its link); `Err(_)`: try the delivery again later.
    async fn copy_media(&self, url: &str, name: Option<&str>) -> Result<Result<(ruma::OwnedMxcUri, String, u64), String>, DeliveryError> {
        let Some(fetched) = self.fetcher.fetch_to_copy(url, self.options.media_max_bytes).await? else {
            return Ok(Err("not fetched (see the log)".into()));
        };
        let mime = fetched.content_type.unwrap_or_else(|| "application/octet-stream".into());
        let size = fetched.bytes.len() as u64;
        let mxc = self.client.upload(fetched.bytes, &mime, name).await?;
        Ok(Ok((mxc, mime, size)))
    }
}

/// The `matrix` network, for the daemon's table; its verb
/// `causeway matrix registration` writes the homeserver's registration.
pub struct Matrix;

impl Network for Matrix {
    fn kind(&self) -> &'static str {
        MatrixOptions::KIND
    }

    fn configure(&self, options: serde_json::Value) -> Result<Box<dyn Configured>, Vec<OptionError>> {
        causeway_core::network::configure::<MatrixOptions>(options)
    }

    fn command(&self) -> Option<clap::Command> {
        let registration = clap::Command::new("registration")
            .about("Print the registration YAML of a Matrix bridge of the config (give it to the homeserver, e.g. Synapse's app_service_config_files)")
            .arg(
                clap::Arg::new("double_puppet")
                    .long("double-puppet")
                    .action(clap::ArgAction::SetTrue)
                    .help("The second registration, for double puppeting (needs the bridge's double_puppet_token)"),
            );
        Some(
            clap::Command::new(MatrixOptions::KIND)
                .about("Matrix: the application service registration for the homeserver")
                .subcommand_required(true)
                .subcommand(registration),
        )
    }

    fn run_command(&self, matches: &clap::ArgMatches, name: &str, options: &dyn Configured) -> Result<String, String> {
        let options: &MatrixOptions = causeway_core::network::options_of(options)?;
        match matches.subcommand() {
            Some(("registration", m)) if m.get_flag("double_puppet") => registration::double_puppet_yaml(options)
                .ok_or_else(|| format!("bridges.{name}: set double_puppet_token first (a new random secret)")),
            Some(("registration", _)) => Ok(registration::yaml(options)),
            other => Err(format!("no matrix command {:?}", other.map(|(n, _)| n))),
        }
    }
}

impl Options for MatrixOptions {
    const KIND: &'static str = "matrix";

    fn room_ok(&self, room: &str) -> Result<(), String> {
        check_room(room)
    }

    fn bridge(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
        Ok(Arc::new(MatrixBridge::new(self.clone())?))
    }
}

/// Whether `room` is a Matrix room id or alias.
fn check_room(room: &str) -> Result<(), String> {
    if RoomId::parse(room).is_ok() || RoomAliasId::parse(room).is_ok() {
        Ok(())
    } else {
        Err(format!("{room:?} is not a Matrix room id (!…) or alias (#…:server)"))
    }
}

#[async_trait]
impl Bridge for MatrixBridge {
    fn kind(&self) -> &'static str {
        MatrixOptions::KIND
    }

    fn check_room(&self, room: &str) -> Result<(), String> {
        check_room(room)
    }

    fn capabilities(&self, room: &str) -> Capabilities {
        if direct::room_of(room).is_some() {
            // One to one: no presence, comings and goings or topic to show there.
            return Capabilities {
                presence: false,
                membership: false,
                topic: false,
                read_markers: self.inner.options.read_markers.shown(true),
                ..Capabilities::ALL
            };
        }
        Capabilities { read_markers: self.inner.options.read_markers.shown(false), ..Capabilities::ALL }
    }

    fn is_own_sender(&self, _room: &str, sender: &str) -> bool {
        self.inner.is_ours(sender)
    }

    async fn start(self: Arc<Self>, ctx: BridgeContext) -> Result<Option<axum::Router>, BridgeError> {
        self.inner.ctx.set(ctx.clone()).map_err(|_| BridgeError::Other("matrix bridge started twice".into()))?;
        self.inner.fetcher.attach(&ctx);
        self.inner.load_room_ids(&ctx).await;
        self.inner.load_marks(&ctx).await;
        ctx.spawn(self.inner.clone().set_up(ctx.clone()));
        Ok(Some(inbound::routes(self.inner.clone())))
    }

    async fn open_direct(&self, account: &str, peer: &Sender, peer_bridge: &str) -> Result<String, DirectError> {
        if !self.inner.up.load(Ordering::Acquire) {
            return Err(DirectError::Unavailable("the homeserver is not reachable yet".into()));
        }
        direct::open(&self.inner, account, peer, peer_bridge).await
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Delivered, DeliveryError> {
        if !self.inner.up.load(Ordering::Acquire) {
            return Err(DeliveryError::Transient {
                reason: "the homeserver is not reachable yet".into(),
                retry_after: Some(Duration::from_secs(1)),
            });
        }
        if delivery.room == causeway_core::PEOPLE_ROOM {
            return outbound::deliver_to_person(&self.inner, delivery).await;
        }
        outbound::deliver(&self.inner, delivery).await
    }

    /// Its network pushes over HTTP, which may reach any instance.
    fn runs_everywhere(&self) -> bool {
        true
    }

    fn reaches_people(&self) -> bool {
        true
    }

    async fn linked(&self, room: &str) -> Result<(), String> {
        // Not started yet (the start sets up every linked room), or a
        // direct conversation's room (its ghost is in it already).
        let Some(ctx) = self.inner.ctx.get() else { return Ok(()) };
        if direct::room_of(room).is_some() {
            return Ok(());
        }
        if !self.inner.up.load(Ordering::Acquire) {
            return Err("the homeserver is not reachable yet; the room is set up once it is".into());
        }
        self.inner.set_up_room(ctx, room).await.map_err(|e| format!("{e} (invite {} to the room)", self.inner.bot))
    }

    async fn unlinked(&self, link: &str) {
        if direct::room_of(link).is_some() {
            return;
        }
        let id = self.inner.state().room_ids.get(link).cloned();
        let Some(id) = id else { return };
        if let Err(e) = self.inner.client.leave(id.as_str(), &self.inner.bot).await {
            tracing::warn!(room = %link, "the bridge could not leave a room taken out of its portal: {e}");
        }
        let mut st = self.inner.state();
        st.joined.remove(&(id.clone(), self.inner.bot.clone()));
        st.room_ids.remove(link);
        st.links.remove(&id);
    }

    fn joined(&self, link: &str) -> Option<bool> {
        if link == causeway_core::PEOPLE_ROOM {
            return None;
        }
        let st = self.inner.state();
        let Some(id) = st.room_ids.get(link) else { return Some(false) };
        // A direct conversation's room is its ghost's, not the bridge user's.
        let who = st.direct_ghosts.get(link).unwrap_or(&self.inner.bot);
        Some(st.joined.contains(&(id.clone(), who.clone())))
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn ghosts(&self) -> u64 {
        self.inner.state().registered.len() as u64
    }
}

#[cfg(test)]
mod tests {
    use causeway_core::Bridge;

    #[test]
    fn read_receipts_cross_in_direct_conversations_unless_told_otherwise() {
        let bridge = |markers: Option<&str>| {
            let mut o = serde_json::json!({
                "homeserver": "http://127.0.0.1:8008", "server_name": "matrix.test",
                "url": "http://127.0.0.1:1/bridges/matrix", "as_token": "a", "hs_token": "h",
            });
            if let Some(m) = markers {
                o["read_markers"] = m.into();
            }
            super::MatrixBridge::from_options(o).unwrap()
        };
        let shown = |b: &super::MatrixBridge| {
            (b.capabilities("direct:!dm:matrix.test").read_markers, b.capabilities("#ops:matrix.test").read_markers)
        };
        assert_eq!(shown(&bridge(None)), (true, false), "by default: direct conversations only");
        assert_eq!(shown(&bridge(Some("all"))), (true, true));
        assert_eq!(shown(&bridge(Some("off"))), (false, false));
    }
}
