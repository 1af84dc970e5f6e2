//! The email bridge: a portal is a mailing list.
//!
//! - Each linked room is a list address. Mail to it (read from the bridge's
//!   IMAP mailbox) enters the portal; what is said in the portal goes out by
//!   SMTP to the list's subscribers, one mail per message or a digest.
//! - Mail is taken in UID order and flagged or moved only once committed;
//!   auto-replies, bounces and Causeway's own mail are never taken; mail
//!   that cannot be taken is quarantined, never lost.
//! - Outgoing mail has the delivery id as Message-ID and the references of
//!   the conversation, so mail clients thread it and replies find their way.

pub mod compose;
pub mod config;
pub mod files;
#[doc(hidden)]
pub mod fuzz;
pub mod held;
pub mod imap;
pub mod invite;
pub mod read;
pub mod smtp;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use axum::extract::{Path, Query, State};
use axum::routing::get;
use causeway_core::network::{NetworkOf, Options};
use causeway_core::text::escape_html;
use causeway_core::{
    Accepted, Body, Bridge, BridgeContext, BridgeError, Capabilities, Degrade, Delivered, Delivery, DeliveryError, Incoming, OptionError,
    RemoteSender, SubmitError, Text, now_ms, parse_options,
};

use crate::compose::{DigestEntry, List};
use crate::config::{Changes, EmailOptions, SubjectAs};
use crate::files::Files;
use crate::read::{Taken, Verdict};

/// Where the bridge keeps its state.
const UID_KEY: &str = "imap:last_uid";
const UIDVALIDITY_KEY: &str = "imap:uidvalidity";
const FILES_KEY: &str = "files:key";
const SUBJECT_KEY: &str = "subject:";
const DIGEST_KEY: &str = "digest:";
const SENT_KEY: &str = "sent:";
const HELD_KEY: &str = "held:";
/// A gathered mail goes out early once it holds this many.
const MAX_GATHERED: usize = 500;

/// What the router said of a mail's event: none when the list is in no
/// portal; an error when the store did not take it (the mail is read again).
fn submitted(r: Result<Accepted, SubmitError>) -> Result<Option<Accepted>, ReadError> {
    match r {
        Ok(a) => Ok(Some(a)),
        Err(SubmitError::NotLinked(_)) => Ok(None),
        Err(e @ (SubmitError::Unavailable(_) | SubmitError::Stopped)) => Err(ReadError::Store(e)),
    }
}

/// Where the card shown for an event (by UID) of a list is kept.
fn invite_key(list: &str, uid: &str) -> String {
    format!("invite:{list}:{}", hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(uid.as_bytes())[..16]))
}

fn digest_key(list: &str, address: &str) -> String {
    format!("{DIGEST_KEY}{list}:{address}")
}

/// Why reading the mailbox stopped: the session ends and a new one is
/// opened after a wait (a mail not yet flagged or moved is read again).
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error(transparent)]
    Imap(#[from] imap::ImapError),
    /// The store did not take an event or keep the bridge's place.
    #[error("the store: {0}")]
    Store(#[from] SubmitError),
    #[error("cannot keep an attachment: {0}")]
    Files(std::io::Error),
    #[error("the bridge is not started")]
    NotStarted,
}

pub struct EmailBridge {
    inner: Arc<Inner>,
}

/// A list's subscribers, resolved.
#[derive(Default, Clone)]
struct Subscribers {
    /// Get every message as it comes.
    now: Vec<String>,
    /// Get a digest this often.
    digest: Vec<(String, Duration)>,
}

struct Inner {
    options: EmailOptions,
    ctx: OnceLock<BridgeContext>,
    smtp: smtp::Smtp,
    files: OnceLock<Files>,
    up: AtomicBool,
    /// Fetches files from other networks' links (someone else chose them).
    fetcher: causeway_core::fetch::Fetcher,
    /// One change to the stored digests (and held-back mail) at a time.
    digests: tokio::sync::Mutex<()>,
    /// Mails sent in this window, against `send_limit`.
    sent: std::sync::Mutex<held::SendCounts>,
}

impl EmailBridge {
    /// Read the options and build the bridge (tests and tools; the daemon
    /// goes through [`NETWORK`]).
    pub fn from_options(options: serde_json::Value) -> Result<Self, Vec<OptionError>> {
        Self::new(parse_options(options)?)
    }

    /// Build the bridge of checked options: its SMTP transport and fetcher.
    pub fn new(options: EmailOptions) -> Result<Self, Vec<OptionError>> {
        let smtp = smtp::Smtp::new(&options.smtp).map_err(|e| vec![OptionError::new("smtp.server", e.to_string())])?;
        let fetcher = causeway_core::fetch::Fetcher::new(&options.fetch, Duration::from_secs(10), Duration::from_secs(60))
            .map_err(|e| vec![OptionError::new("fetch", e)])?;
        // Links to attachments of incoming mail that this bridge signs.
        causeway_core::fetch::trust_own_links(&format!("{}/files/", options.url.trim_end_matches('/')));
        let sent = std::sync::Mutex::new(held::SendCounts::new(options.send_limit.clone(), std::time::Instant::now()));
        Ok(EmailBridge {
            inner: Arc::new(Inner {
                sent,
                options,
                ctx: OnceLock::new(),
                smtp,
                files: OnceLock::new(),
                up: AtomicBool::new(false),
                fetcher,
                digests: tokio::sync::Mutex::new(()),
            }),
        })
    }
}

impl Inner {
    fn list(&self, address: &str) -> List {
        let name = self.options.lists.get(address).and_then(|o| o.name.clone());
        let name = name.unwrap_or_else(|| address.split(['@', '+']).next().unwrap_or(address).to_string());
        List { address: address.to_string(), name, owner: self.options.owner.clone().unwrap_or_else(|| address.to_string()) }
    }

    /// A list's subscribers as they are now (the directory may have been
    /// imported again since the start).
    fn subscribers(&self, list: &str) -> Subscribers {
        match self.ctx.get() {
            Some(ctx) => self.resolve_subscribers(ctx, list, false),
            None => Subscribers::default(),
        }
    }

    /// Every subscriber address of a list (for the sender policy).
    fn all_subscribers(&self, list: &str) -> Vec<String> {
        let s = self.subscribers(list);
        s.now.into_iter().chain(s.digest.into_iter().map(|(a, _)| a)).collect()
    }

    /// Subscribers as addresses: a person is their account on this bridge.
    fn resolve_subscribers(&self, ctx: &BridgeContext, address: &str, warn: bool) -> Subscribers {
        let mut s = Subscribers::default();
        let Some(list) = self.options.lists.get(address) else { return s };
        for sub in &list.subscribers {
            let target = sub.target();
            let resolved = if config::is_address(target) { Some(target.to_string()) } else { ctx.account_of(target) };
            match (resolved, sub.digest()) {
                (Some(a), Some(d)) => s.digest.push((a.to_ascii_lowercase(), d)),
                (Some(a), None) => s.now.push(a.to_ascii_lowercase()),
                (None, _) if warn => {
                    tracing::warn!(bridge = ctx.name(), list = %address, "subscriber {target:?} is neither an address nor a person with an account on this bridge")
                }
                (None, _) => {}
            }
        }
        s
    }

    /// The incoming events of a taken mail (a topic first, where the
    /// subject becomes one), with its attachments stored.
    /// The mail's files, kept where other networks fetch them.
    async fn attachments(&self, t: &Taken) -> Result<Vec<causeway_core::Attachment>, ReadError> {
        let files = self.files.get().ok_or(ReadError::NotStarted)?;
        let mut attachments = Vec::new();
        for f in &t.files {
            let url = files.store(&f.name, &f.mime, &f.bytes).await.map_err(ReadError::Files)?;
            attachments.push(causeway_core::Attachment {
                url,
                name: Some(f.name.clone()),
                mime: Some(f.mime.clone()),
                size: Some(f.bytes.len() as u64),
            });
        }
        Ok(attachments)
    }

    async fn incoming(&self, t: &Taken, fallback_id: String) -> Result<Vec<Incoming>, ReadError> {
        let attachments = self.attachments(t).await?;
        let sender = RemoteSender { id: t.from.clone(), name: t.name.clone(), avatar: None };
        let mut plain = t.plain.clone();
        let mut html = t.html.clone();
        let mut events = Vec::new();
        if let Some(subject) = &t.new_subject {
            match self.options.lists.get(&t.list).map(|l| l.subject).unwrap_or_default() {
                SubjectAs::Prefix => {
                    plain = if plain.is_empty() { subject.clone() } else { format!("{subject}\n\n{plain}") };
                    let s = escape_html(subject);
                    html = Some(match html {
                        Some(h) => format!("<p><b>{s}</b></p>{h}"),
                        None => format!("<p><b>{s}</b></p>{}", escape_html(&t.plain).replace('\n', "<br>")),
                    });
                }
                SubjectAs::Topic => events.push(Incoming {
                    room: t.list.clone(),
                    sender: sender.clone(),
                    remote_id: Some(format!("topic-{}", t.message_id.clone().unwrap_or_else(|| fallback_id.clone()))),
                    aliases: Vec::new(),
                    at_ms: t.at_ms,
                    body: Body::Topic { text: subject.clone() },
                }),
                SubjectAs::None => {}
            }
        }
        let body = Body::Message {
            text: Text { plain, html },
            kind: Default::default(),
            attachments,
            reply_to: t.in_reply_to.clone(),
            thread: None,
            mentions: Vec::new(),
        };
        events.push(Incoming {
            room: t.list.clone(),
            sender,
            remote_id: Some(t.message_id.clone().unwrap_or(fallback_id)),
            aliases: Vec::new(),
            at_ms: t.at_ms,
            body,
        });
        Ok(events)
    }

    /// A mail with an invitation: a new card in the list's portal, an edit
    /// of the card shown for its event (a later SEQUENCE, or its
    /// cancellation), a line saying what an attendee answered, or nothing
    /// (an older or repeated copy). The card shown is kept per list and
    /// UID. Edits come from the mail's sender, so the router takes them only
    /// from whoever sent the card (the organiser). False when the list is
    /// in no portal.
    async fn take_invitation(&self, ctx: &BridgeContext, t: &Taken, inv: &invite::Invitation, fallback: String) -> Result<bool, ReadError> {
        let key = invite_key(&t.list, &inv.uid);
        let shown: Option<invite::Invitation> =
            ctx.load_state(&key).await.map_err(ReadError::Store)?.and_then(|v| serde_json::from_str(&v).ok());
        let (tz, tz_name) = ctx
            .time_zone(&t.list)
            .and_then(|name| Some((causeway_core::time_zone::zone(&name)?, name)))
            .unwrap_or((calcard::common::timezone::Tz::UTC, "UTC".into()));
        let card = |i: &invite::Invitation| invite::card(i, tz, &tz_name);
        let alias = format!("ical:{}", inv.uid);
        let (body, aliases, keep) = match invite::decide(shown.as_ref(), inv, &t.from) {
            invite::Decision::New => {
                let body = Body::Message {
                    text: card(inv),
                    kind: Default::default(),
                    attachments: self.attachments(t).await?,
                    reply_to: None,
                    thread: None,
                    mentions: Vec::new(),
                };
                (body, vec![alias], Some(inv))
            }
            invite::Decision::Update => (Body::Edit { target: alias, text: card(inv) }, Vec::new(), Some(inv)),
            invite::Decision::Answer(word) => {
                let summary = shown.as_ref().map_or(inv.summary.as_str(), |s| s.summary.as_str());
                let body = Body::Message {
                    text: Text::plain(format!("{word} the invitation “{summary}”")),
                    kind: Default::default(),
                    attachments: Vec::new(),
                    reply_to: Some(alias),
                    thread: None,
                    mentions: Vec::new(),
                };
                (body, Vec::new(), None)
            }
            invite::Decision::Stale => {
                tracing::info!(bridge = ctx.name(), list = %t.list, uid = %inv.uid, sequence = inv.sequence, "an invitation no newer than the card shown: not shown again");
                ctx.count_rejected("stale_invitation");
                return Ok(ctx.portal_of(&t.list).is_some());
            }
        };
        let incoming = Incoming {
            room: t.list.clone(),
            sender: RemoteSender { id: t.from.clone(), name: t.name.clone(), avatar: None },
            remote_id: Some(t.message_id.clone().unwrap_or(fallback)),
            aliases,
            at_ms: t.at_ms,
            body,
        };
        let Some(accepted) = submitted(ctx.submit(incoming).await)? else { return Ok(false) };
        if let (Some(keep), Accepted::Stored { .. } | Accepted::Duplicate { .. }) = (keep, accepted) {
            let value = serde_json::to_string(keep).expect("an invitation serializes");
            ctx.save_state(&key, &value).await.map_err(ReadError::Store)?;
        }
        Ok(true)
    }

    /// Keep reading the mailbox: connect, take what is new, wait, again.
    async fn run_imap(self: Arc<Self>, ctx: BridgeContext) {
        let mut backoff = causeway_core::retry::Backoff::new(Duration::from_millis(500), Duration::from_secs(60));
        loop {
            match self.serve_imap(&ctx).await {
                Ok(()) => {}
                Err(e) => {
                    self.up.store(false, Ordering::Release);
                    let delay = backoff.next_wait();
                    tracing::warn!(bridge = ctx.name(), retry_in = ?delay, "IMAP: {e}");
                    tokio::time::sleep(delay).await;
                    continue;
                }
            }
            backoff.reset();
        }
    }

    /// One IMAP session, until it fails.
    async fn serve_imap(&self, ctx: &BridgeContext) -> Result<(), ReadError> {
        let o = &self.options.imap;
        let mut session = match imap::connect(o).await {
            Ok(s) => s,
            Err(e @ imap::ConnectError::Refused(_)) => {
                tracing::error!(bridge = ctx.name(), "IMAP {e} (check imap.username and imap.password)");
                return Err(imap::ImapError::from(e).into());
            }
            Err(e) => return Err(imap::ImapError::from(e).into()),
        };
        imap::ensure_folder(&mut session, &o.quarantine).await?;
        if let Some(p) = &o.processed {
            imap::ensure_folder(&mut session, p).await?;
        }
        let caps = imap::timed("CAPABILITY", async { session.capabilities().await.map_err(imap::failed("CAPABILITY")) }).await?;
        let (idle, has_move) = (caps.has_str("IDLE"), caps.has_str("MOVE"));
        let stored = ctx.load_state(UIDVALIDITY_KEY).await?;
        if stored.is_none() {
            // A first start: mail already in the mailbox is not news.
            let next = imap::timed("EXAMINE", imap::uid_next(&mut session, &o.mailbox)).await?;
            ctx.save_state(UID_KEY, &next.saturating_sub(1).to_string()).await?;
            tracing::info!(bridge = ctx.name(), mailbox = %o.mailbox, "first start: taking mail from UID {next} on");
        }
        let validity = imap::timed("SELECT", imap::select(&mut session, &o.mailbox)).await?;
        let mut last: u32 = ctx.load_state(UID_KEY).await?.and_then(|v| v.parse().ok()).unwrap_or(0);
        if stored.as_deref().is_some_and(|s| s != validity.to_string()) {
            // The mailbox was rebuilt: UIDs start anew. Read it all again;
            // mail taken before is recognised by its Message-ID.
            tracing::warn!(bridge = ctx.name(), mailbox = %o.mailbox, "UIDVALIDITY changed; reading the mailbox again");
            last = 0;
            ctx.save_state(UID_KEY, "0").await?;
        }
        ctx.save_state(UIDVALIDITY_KEY, &validity.to_string()).await?;
        self.up.store(true, Ordering::Release);
        tracing::info!(bridge = ctx.name(), mailbox = %o.mailbox, last_uid = last, idle, "reading mail");
        loop {
            // Until a search finds nothing new: news that came while taking
            // mail is not announced again during IDLE.
            loop {
                let uids = imap::timed("UID SEARCH", imap::new_uids(&mut session, last)).await?;
                if uids.is_empty() {
                    break;
                }
                for uid in uids {
                    self.take(ctx, &mut session, uid, has_move).await?;
                    last = uid;
                    ctx.save_state(UID_KEY, &uid.to_string()).await?;
                }
            }
            if idle {
                session = imap::wait(session, o.poll_interval.min(Duration::from_secs(25 * 60))).await?;
            } else {
                tokio::time::sleep(o.poll_interval).await;
                imap::timed("NOOP", async { session.noop().await.map_err(imap::failed("NOOP")) }).await?;
            }
        }
    }

    /// Take one mail: commit it, then flag or move it.
    async fn take(&self, ctx: &BridgeContext, session: &mut imap::Session, uid: u32, has_move: bool) -> Result<(), ReadError> {
        let o = &self.options.imap;
        let size = imap::timed("UID FETCH", imap::size(session, uid)).await?;
        let verdict = if size.is_some_and(|s| u64::from(s) > self.options.max_message_bytes) {
            // Not even fetched.
            Verdict::Quarantine { reason: "too_large", detail: format!("{} bytes, more than max_message_bytes", size.unwrap_or(0)) }
        } else {
            let Some(raw) = imap::timed("UID FETCH", imap::fetch(session, uid)).await? else {
                // Gone meanwhile (expunged by someone): said, not passed over quietly.
                tracing::warn!(bridge = ctx.name(), uid, "a mail the search found has no body to fetch (expunged meanwhile?); not taken");
                ctx.count_rejected("gone");
                return Ok(());
            };
            let verdict = read::read(&raw, &self.options, &|list| self.all_subscribers(list));
            if let Verdict::Take(t) = verdict {
                // Without a Message-ID, the mail's content identifies it.
                let fallback = format!("sha256-{}@{}", hex::encode(&<sha2::Sha256 as sha2::Digest>::digest(&raw)[..16]), t.list);
                let mut linked = true;
                match &t.invitation {
                    Some(invitation) => linked = self.take_invitation(ctx, &t, invitation, fallback).await?,
                    None => {
                        for incoming in self.incoming(&t, fallback).await? {
                            linked &= submitted(ctx.submit(incoming).await)?.is_some();
                        }
                    }
                }
                if linked {
                    if let (Some(id), Some(subject)) = (&t.message_id, &t.new_subject) {
                        let _ = ctx.save_message_state(&format!("{SUBJECT_KEY}{id}"), subject).await;
                    }
                    Verdict::Take(t)
                } else {
                    Verdict::Quarantine { reason: "not_linked", detail: format!("{} is in no portal", t.list) }
                }
            } else {
                verdict
            }
        };
        let done = async {
            match verdict {
                Verdict::Take(_) => match &o.processed {
                    Some(folder) => imap::move_to(session, uid, folder, has_move).await,
                    None => imap::mark_seen(session, uid).await,
                },
                Verdict::Ignore { reason, detail } => {
                    tracing::info!(bridge = ctx.name(), uid, reason, "mail not taken: {detail}");
                    ctx.count_rejected(reason);
                    imap::mark_seen(session, uid).await
                }
                Verdict::Quarantine { reason, detail } => {
                    tracing::warn!(bridge = ctx.name(), uid, reason, folder = %o.quarantine, "mail quarantined: {detail}");
                    ctx.count_rejected(reason);
                    imap::move_to(session, uid, &o.quarantine, has_move).await
                }
            }
        };
        Ok(imap::timed("flag or move", done).await?)
    }

    /// Send digests that are due, every few seconds.
    async fn run_digests(self: Arc<Self>, ctx: BridgeContext) {
        loop {
            tokio::select! {
                _ = ctx.stopping() => return,
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            }
            for list in self.options.lists.keys() {
                if let Err(e) = self.send_held_if_due(&ctx, list).await {
                    tracing::warn!(bridge = ctx.name(), list = %list, "gathered mail not sent yet: {e}");
                }
                for (address, every) in self.subscribers(list).digest {
                    if let Err(e) = self.send_digest_if_due(&ctx, list, &address, every).await {
                        tracing::warn!(bridge = ctx.name(), list = %list, subscriber = %address, "digest not sent yet: {e}");
                    }
                }
            }
        }
    }

    /// A subscriber's digest so far.
    async fn digest_entries(ctx: &BridgeContext, key: &str) -> Result<Vec<DigestEntry>, String> {
        match ctx.load_state(key).await.map_err(|e| e.to_string())? {
            Some(v) => serde_json::from_str(&v).map_err(|e| format!("the stored digest {key} is not readable: {e}")),
            None => Ok(Vec::new()),
        }
    }

    async fn send_digest_if_due(&self, ctx: &BridgeContext, list: &str, address: &str, every: Duration) -> Result<(), String> {
        let key = digest_key(list, address);
        let entries = {
            let _one = self.digests.lock().await;
            Self::digest_entries(ctx, &key).await?
        };
        let Some(first) = entries.first() else { return Ok(()) };
        if now_ms() - first.at_ms < every.as_millis() as i64 {
            return Ok(());
        }
        let l = self.list(list);
        let mail = compose::digest(&l, &entries).map_err(|e| e.to_string())?;
        self.smtp.send(&l.address, &[address.to_string()], &mail.bytes).await.map_err(|e| e.to_string())?;
        // Sent: take out what it held; what came meanwhile waits for the
        // next one. (A crash right here sends this one again.)
        let _one = self.digests.lock().await;
        let sent: std::collections::HashSet<&str> = entries.iter().map(|e| e.delivery_id.as_str()).collect();
        let rest: Vec<DigestEntry> =
            Self::digest_entries(ctx, &key).await?.into_iter().filter(|e| !sent.contains(e.delivery_id.as_str())).collect();
        ctx.save_state(&key, &serde_json::to_string(&rest).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
        tracing::info!(bridge = ctx.name(), list, subscriber = address, messages = entries.len(), "digest sent");
        Ok(())
    }

    /// Why this delivery waits for the list's next gathered mail, if it
    /// does: a change notice to gather, or a message beyond the send limit.
    fn hold_reason(&self, d: &Delivery) -> Option<&'static str> {
        let changes = match d.stands_for {
            Some("reaction") => Some(self.options.reactions),
            Some(_) => Some(self.options.changes),
            None => None,
        };
        if changes == Some(Changes::Batch) {
            return Some("batched");
        }
        // Counted on the first attempt only: a retry was admitted then.
        if d.attempt > 1 {
            return None;
        }
        let sender = format!("{}:{}", d.event.origin.bridge, d.event.sender.id);
        let admitted =
            self.sent.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(&d.room, &sender, std::time::Instant::now());
        (!admitted).then_some("send_limit")
    }

    /// Keep `entry` for the list's next gathered mail.
    async fn hold(&self, ctx: &BridgeContext, list: &str, entry: DigestEntry) -> Result<(), DeliveryError> {
        self.add_entry(ctx, &format!("{HELD_KEY}{list}"), entry).await
    }

    /// Send the list's gathered mail to everyone who gets mail as it comes,
    /// once its first entry has waited `batch_every`.
    async fn send_held_if_due(&self, ctx: &BridgeContext, list: &str) -> Result<(), String> {
        let key = format!("{HELD_KEY}{list}");
        let entries = {
            let _one = self.digests.lock().await;
            Self::digest_entries(ctx, &key).await?
        };
        let Some(first) = entries.first() else { return Ok(()) };
        // Early when a flood has gathered a mail's worth.
        if now_ms() - first.at_ms < self.options.batch_every.as_millis() as i64 && entries.len() < MAX_GATHERED {
            return Ok(());
        }
        let l = self.list(list);
        let mail = compose::held(&l, &entries).map_err(|e| e.to_string())?;
        let subs = self.subscribers(list);
        // Each subscriber once, also when a send fails halfway.
        self.send_to_each(ctx, &mail.message_id, None, &l.address, &subs.now, &mail.bytes).await.map_err(|e| e.to_string())?;
        let _one = self.digests.lock().await;
        let sent: std::collections::HashSet<&str> = entries.iter().map(|e| e.delivery_id.as_str()).collect();
        let rest: Vec<DigestEntry> =
            Self::digest_entries(ctx, &key).await?.into_iter().filter(|e| !sent.contains(e.delivery_id.as_str())).collect();
        ctx.save_state(&key, &serde_json::to_string(&rest).map_err(|e| e.to_string())?).await.map_err(|e| e.to_string())?;
        tracing::info!(bridge = ctx.name(), list, subscribers = subs.now.len(), messages = entries.len(), "gathered mail sent");
        Ok(())
    }

    /// Add a message to a subscriber's next digest.
    async fn add_to_digest(&self, ctx: &BridgeContext, list: &str, address: &str, entry: DigestEntry) -> Result<(), DeliveryError> {
        self.add_entry(ctx, &digest_key(list, address), entry).await
    }

    async fn add_entry(&self, ctx: &BridgeContext, key: &str, entry: DigestEntry) -> Result<(), DeliveryError> {
        let _one = self.digests.lock().await;
        let mut entries = Self::digest_entries(ctx, key).await.map_err(DeliveryError::transient)?;
        if entries.iter().any(|e| e.delivery_id == entry.delivery_id) {
            return Ok(()); // this delivery again, after a retry
        }
        entries.push(entry);
        let json = serde_json::to_string(&entries).map_err(|e| DeliveryError::transient(e.to_string()))?;
        ctx.save_state(key, &json).await.map_err(|e| DeliveryError::transient(e.to_string()))
    }

    /// Send `mail` to each address by itself (one refusing address holds up
    /// nobody else), remembering who has it, so a retry reaches only the rest.
    async fn send_each(&self, ctx: &BridgeContext, d: &Delivery, from: &str, to: &[String], mail: &[u8]) -> Result<(), DeliveryError> {
        self.send_to_each(ctx, &d.id, Some(d), from, to, mail).await
    }

    /// As [`send_each`](Self::send_each), for mail that is no delivery of
    /// its own (a gathered mail): an address refused for good is logged,
    /// counted and passed over.
    async fn send_to_each(
        &self,
        ctx: &BridgeContext,
        delivery_id: &str,
        d: Option<&Delivery>,
        from: &str,
        to: &[String],
        mail: &[u8],
    ) -> Result<(), DeliveryError> {
        let key = format!("{SENT_KEY}{delivery_id}");
        let transient = |e: String| DeliveryError::transient(e);
        let mut done: Vec<String> = match ctx.load_state(&key).await.map_err(|e| transient(e.to_string()))? {
            Some(v) => serde_json::from_str(&v).unwrap_or_default(),
            None => Vec::new(),
        };
        for address in to {
            if done.contains(address) {
                continue;
            }
            match self.smtp.send(from, std::slice::from_ref(address), mail).await {
                Ok(()) => {}
                Err(DeliveryError::Permanent { reason }) => {
                    // This subscriber cannot have it; the others still can.
                    // A dead letter of its own, retried for them alone.
                    tracing::error!(list = from, subscriber = %address, delivery = delivery_id, "not delivered to this subscriber: {reason}");
                    ctx.count_rejected("subscriber_refused");
                    match d {
                        Some(d) if d.recipient.is_none() => {
                            ctx.refused_recipient(d, address, &reason).await.map_err(|e| transient(e.to_string()))?
                        }
                        // Only them: the delivery itself is the dead letter.
                        Some(_) => return Err(DeliveryError::Permanent { reason }),
                        None => {}
                    }
                }
                Err(e) => return Err(e),
            }
            done.push(address.clone());
            let json = serde_json::to_string(&done).map_err(|e| transient(e.to_string()))?;
            ctx.save_state(&key, &json).await.map_err(|e| transient(e.to_string()))?;
        }
        // Everyone has it: nothing left to remember.
        if !done.is_empty() {
            let _ = ctx.delete_state(&key).await;
        }
        Ok(())
    }

    /// Files of a message: attached where they can be fetched, else linked.
    async fn files_of(&self, attachments: &[causeway_core::Attachment]) -> Result<(Vec<compose::File>, Vec<String>), DeliveryError> {
        let mut files = Vec::new();
        let mut links = Vec::new();
        for a in attachments {
            match self.fetcher.fetch_to_copy(&a.url, self.options.max_attachment_bytes).await? {
                Some(f) => files.push(compose::File {
                    name: a
                        .name
                        .clone()
                        .unwrap_or_else(|| a.url.rsplit('/').next().unwrap_or("file").split('?').next().unwrap_or("file").to_string()),
                    mime: a.mime.clone().or(f.content_type).unwrap_or_else(|| "application/octet-stream".into()),
                    bytes: f.bytes,
                }),
                None => links.push(a.url.clone()),
            }
        }
        Ok((files, links))
    }

    /// A broadcast to one person ([`causeway_core::PEOPLE_ROOM`]): a mail
    /// of its own from `broadcast_from` to their address.
    async fn deliver_to_person(&self, ctx: &BridgeContext, d: &Delivery) -> Result<Delivered, DeliveryError> {
        let Body::Message { text, attachments, .. } = &d.event.body else { return Ok(Delivered::default()) };
        let from = self
            .options
            .broadcast_from
            .as_deref()
            .ok_or_else(|| DeliveryError::permanent("no broadcast_from: this bridge reaches no people"))?;
        let to = d.recipient.as_deref().ok_or_else(|| DeliveryError::permanent("a delivery to people names nobody"))?;
        if !compose::plausible_address(to) {
            return Err(DeliveryError::permanent(format!("{to:?} is not a mail address")));
        }
        let (files, links) = self.files_of(attachments).await?;
        let mail = compose::announcement(from, &d.event.sender.name, to, &d.id, text, files, &links, &d.event.id)
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))?;
        self.send_each(ctx, d, from, &[to.to_string()], &mail.bytes).await?;
        Ok(Delivered::default())
    }

    async fn deliver(&self, d: &Delivery) -> Result<Delivered, DeliveryError> {
        let Some(ctx) = self.ctx.get() else { return Err(DeliveryError::transient("starting")) };
        if d.room == causeway_core::PEOPLE_ROOM {
            return self.deliver_to_person(ctx, d).await;
        }
        let Body::Message { text, kind, attachments, reply_to, mentions, .. } = &d.event.body else {
            // Nothing else is shown by mail (the router made notices of what can be).
            return Ok(Delivered::default());
        };
        let list = self.list(&d.room);
        let sender = compose::display_name(&d.event.sender.name, &d.event.origin.bridge);
        let subs = self.subscribers(&d.room);
        if d.recipient.is_none() {
            // Digests first: adding again after a retry is a no-op, sending is not.
            let mut gathered = text.plain.clone();
            for a in attachments {
                gathered.push_str(&format!("\n{}", a.url));
            }
            let entry = DigestEntry { at_ms: now_ms(), from: sender.clone(), text: gathered, delivery_id: d.id.clone() };
            for (address, _) in &subs.digest {
                self.add_to_digest(ctx, &d.room, address, entry.clone()).await?;
            }
            if let Some(reason) = self.hold_reason(d) {
                // Into the list's next gathered mail, files as links.
                self.hold(ctx, &d.room, entry).await?;
                ctx.count_held(reason);
                return Ok(Delivered::default());
            }
        }
        let (files, links) = self.files_of(attachments).await?;
        let subject = match reply_to {
            Some(r) => match ctx.load_state(&format!("{SUBJECT_KEY}{r}")).await.map_err(|e| DeliveryError::transient(e.to_string()))? {
                Some(s) => compose::reply_subject(&s),
                None => compose::subject_for(&list, &text.plain),
            },
            None => compose::subject_for(&list, &text.plain),
        };
        let text = &compose::with_mentions(text, mentions);
        let mail = compose::message(&list, &d.id, &sender, text, *kind, &subject, reply_to.as_deref(), &[], files, &links, &d.event.id)
            .map_err(|e| DeliveryError::permanent(format!("cannot build the mail: {e}")))?;
        if let Some(one) = &d.recipient {
            // A dead letter of one subscriber, retried: for them alone.
            self.send_each(ctx, d, &list.address, std::slice::from_ref(one), &mail.bytes).await?;
            return Ok(Delivered { remote_id: Some(mail.message_id) });
        }
        self.send_each(ctx, d, &list.address, &subs.now, &mail.bytes).await?;
        // Replies to this mail say "Re:" to the same subject.
        let root = subject.strip_prefix("Re: ").unwrap_or(&subject);
        let _ = ctx.save_message_state(&format!("{SUBJECT_KEY}{}", mail.message_id), root).await;
        Ok(Delivered { remote_id: Some(mail.message_id) })
    }
}

#[derive(serde::Deserialize)]
struct Sig {
    sig: Option<String>,
}

async fn file(
    State(inner): State<Arc<Inner>>,
    Path((hash, _name)): Path<(String, String)>,
    Query(q): Query<Sig>,
) -> axum::response::Response {
    match inner.files.get() {
        Some(f) => f.serve(&hash, q.sig.as_deref()).await,
        None => (axum::http::StatusCode::SERVICE_UNAVAILABLE, "starting").into_response(),
    }
}

use axum::response::IntoResponse;

/// The `email` network, for the daemon's table.
pub const NETWORK: NetworkOf<EmailOptions> = NetworkOf::new();

impl Options for EmailOptions {
    const KIND: &'static str = "email";

    fn room_ok(&self, room: &str) -> Result<(), String> {
        check_room(self, room)
    }

    fn bridge(&self) -> Result<Arc<dyn Bridge>, Vec<OptionError>> {
        Ok(Arc::new(EmailBridge::new(self.clone())?))
    }
}

/// Whether `room` is one of the lists of `options`.
fn check_room(options: &EmailOptions, room: &str) -> Result<(), String> {
    if options.lists.contains_key(room) {
        Ok(())
    } else {
        let known: Vec<&str> = options.lists.keys().map(String::as_str).collect();
        Err(format!("no list {room:?} in this email bridge (lists: {})", known.join(", ")))
    }
}

#[async_trait]
impl Bridge for EmailBridge {
    fn kind(&self) -> &'static str {
        EmailOptions::KIND
    }

    fn check_room(&self, room: &str) -> Result<(), String> {
        check_room(&self.inner.options, room)
    }

    fn capabilities(&self, _room: &str) -> Capabilities {
        Capabilities { html: true, replies: true, files: true, ..Capabilities::TEXT_ONLY }
    }

    fn degrade_for(&self, _room: &str, kind: &'static str, policy: Degrade) -> Degrade {
        // One reaction or edit must not become a mail to each subscriber:
        // dropped, or a notice the delivery gathers (`Changes::Batch`).
        let changes = match kind {
            "reaction" => self.inner.options.reactions,
            "edit" | "retract" | "topic" => self.inner.options.changes,
            _ => return policy,
        };
        if changes == Changes::Drop { Degrade::Drop } else { policy }
    }

    fn is_own_sender(&self, _room: &str, sender: &str) -> bool {
        self.inner.options.lists.keys().any(|l| l.eq_ignore_ascii_case(sender))
    }

    async fn start(self: Arc<Self>, ctx: BridgeContext) -> Result<Option<axum::Router>, BridgeError> {
        let inner = &self.inner;
        inner.ctx.set(ctx.clone()).map_err(|_| BridgeError::Other("email bridge started twice".into()))?;
        inner.fetcher.attach(&ctx);
        for list in inner.options.lists.keys() {
            inner.resolve_subscribers(&ctx, list, true);
        }
        if inner.options.policy.authserv_id.is_none() {
            tracing::warn!(
                bridge = ctx.name(),
                "policy.authserv_id is not set: a From address is taken on its word; set it to your receiving server's Authentication-Results id"
            );
        }
        // The key of attachment links: made once, kept.
        let key = match ctx.load_state(FILES_KEY).await.map_err(|e| BridgeError::Other(e.to_string()))? {
            Some(k) => k,
            None => {
                let k = causeway_core::secret::random_key();
                ctx.save_state(FILES_KEY, &k).await.map_err(|e| BridgeError::Other(e.to_string()))?;
                k
            }
        };
        let files = Files::new(&inner.options.attachments_dir, &inner.options.url, key.into_bytes(), files::CONCURRENCY)
            .map_err(|e| BridgeError::Config(format!("attachments_dir {}: {e}", inner.options.attachments_dir.display())))?;
        let _ = inner.files.set(files);
        ctx.spawn(inner.clone().run_imap(ctx.clone()));
        // Ends between two rounds: a digest is not cut while it is sent.
        tokio::spawn(inner.clone().run_digests(ctx.clone()));
        Ok(Some(axum::Router::new().route("/files/{hash}/{name}", get(file)).with_state(inner.clone())))
    }

    async fn deliver(&self, delivery: &Delivery) -> Result<Delivered, DeliveryError> {
        self.inner.deliver(delivery).await
    }

    fn is_up(&self) -> bool {
        self.inner.up.load(Ordering::Acquire)
    }

    fn reaches_people(&self) -> bool {
        self.inner.options.broadcast_from.is_some()
    }
}
