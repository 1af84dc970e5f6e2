//! The conformance suite every bridge passes against its real server.
//!
//! A test puts two real clients ([`Peer`]s) in one portal: the network under
//! test on one side and any other network (the webhook bridge needs no server,
//! so it is the usual partner) on the other. [`run`] then sends text, a reply,
//! an edit, a reaction, a retraction, a file, a presence change, typing,
//! a topic, leaving and coming back in both directions and checks that each
//! arrives as the right event, *referencing the right message in the
//! receiver's own ids*. It checks too what a bridge must never do: hand a
//! sender their own message back (echo), take a message twice when its
//! network delivers it again, lose or double one when Causeway is killed
//! mid-stream, let one side change the other's messages, or take hostile
//! text as markup; and, where both sides hold direct conversations, that a
//! message one to one reaches the person and the answer comes back. A case
//! is skipped only where a side declares the capability absent.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::bridge::Capabilities;
use crate::event::{Attachment, Body, Membership, Show};

/// Something a peer does on its network.
#[derive(Clone, Debug)]
pub enum Action {
    Text {
        text: String,
        reply_to: Option<String>,
    },
    /// A message in the thread whose root is `root`.
    InThread {
        text: String,
        root: String,
    },
    /// A message that mentions (pings) the author of `of` (this side's id
    /// of a message), as a client of this network mentions someone.
    Mention {
        text: String,
        of: String,
    },
    Edit {
        target: String,
        text: String,
    },
    Retract {
        target: String,
    },
    React {
        target: String,
        key: String,
    },
    File {
        attachment: Attachment,
        caption: String,
    },
    Presence {
        show: Show,
        status: Option<String>,
    },
    /// Start (`true`) or stop typing.
    Typing {
        active: bool,
    },
    /// Set the room's topic.
    Topic {
        text: String,
    },
    /// Leave the room.
    Leave,
    /// Come back into the room.
    Join,
}

/// A peer's account as Causeway knows it: what another network's peer
/// writes to, one to one, through the ghost that stands for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// The name of the bridge the account is on.
    pub bridge: String,
    /// The account's id on that network.
    pub id: String,
}

/// Something a peer saw on its network, in its network's ids.
#[derive(Clone, Debug)]
pub struct Seen {
    /// The network's id for what was seen (what a reply would refer to).
    pub id: String,
    pub sender_name: String,
    pub body: Body<String>,
}

/// A real client of one network, in the portal's room on that network.
#[async_trait]
pub trait Peer: Send {
    fn label(&self) -> String;
    /// What this side's room can show (the bridge's declared capabilities).
    fn capabilities(&self) -> Capabilities;
    /// Whether this side is told of reactions it cannot show (a notice);
    /// `false` where its bridge leaves them out (email, by default).
    fn reaction_notices(&self) -> bool {
        true
    }
    /// Whether `seen` pings this side's user (names them so that their
    /// client tells them). `false` where this side cannot tell.
    fn pinged(&self, _seen: &Seen) -> bool {
        false
    }
    /// Do `action`; returns the network's id of the message it created.
    async fn act(&mut self, action: Action) -> Result<String, String>;
    /// The next thing this client sees, waiting at most `timeout`.
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String>;
    /// The content behind a file link as this client gets it (with its own
    /// login where its network wants one).
    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String>;
    /// Hand Causeway once more what this side sent as `id`, the way its
    /// network does when an acknowledgement was lost (a retried request, a
    /// re-pushed transaction, a mail delivered twice). `Ok(false)` where a
    /// client of this network cannot make that happen.
    async fn redeliver(&mut self, _id: &str) -> Result<bool, String> {
        Ok(false)
    }
    /// This side's account, where it holds direct conversations through
    /// Causeway; `None` where it does not.
    fn account(&self) -> Option<Account> {
        None
    }
    /// Write `text` one to one to `to` (an account on another network,
    /// through its ghost here), as an answer to `reply_to` (this side's id
    /// of a direct message); returns this side's id of what was sent.
    async fn direct(&mut self, _to: &Account, _text: &str, _reply_to: Option<String>) -> Result<String, String> {
        Err(format!("{} holds no direct conversations", self.label()))
    }
    /// Whether this side shows read markers in direct conversations (and
    /// makes them, [`Peer::mark_read`]).
    fn read_markers(&self) -> bool {
        false
    }
    /// Say that this side has seen the direct message `id` (its own id of
    /// it), as a client does when the person looks at it.
    async fn mark_read(&mut self, _id: &str) -> Result<(), String> {
        Err(format!("{} makes no read markers", self.label()))
    }
    /// The next direct message to this side, waiting at most `timeout`.
    async fn next_direct(&mut self, _timeout: Duration) -> Result<Seen, String> {
        Err(format!("{} holds no direct conversations", self.label()))
    }
}

/// The Causeway the peers talk through, for the restart case.
#[async_trait]
pub trait Causeway: Send {
    /// Kill Causeway at once (no chance to flush anything) and start it
    /// again on the same store; return once its bridges are up again.
    async fn restart(&mut self) -> Result<(), String>;
}

/// Options for one run.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long to wait for each event to arrive on the other side.
    pub timeout: Duration,
    /// Distinguishes this run's messages from earlier ones in the same room.
    pub nonce: String,
    /// A real file (URL and its bytes) for the file case. With it, the
    /// receiver must get the same bytes behind its own link (networks that
    /// copy files into their own store pass); without it, a made-up link
    /// must arrive as it is.
    pub file: Option<(String, Vec<u8>)>,
}

impl Default for Options {
    fn default() -> Self {
        Options { timeout: Duration::from_secs(10), nonce: crate::event::new_id(), file: None }
    }
}

/// What a run did.
#[derive(Debug, Default)]
pub struct Report {
    pub passed: Vec<String>,
    pub skipped: Vec<String>,
}

impl Report {
    fn record(&mut self, case: String, done: bool) {
        if done { self.passed.push(case) } else { self.skipped.push(case) }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} passed: {}", self.passed.len(), self.passed.join(", "))?;
        if !self.skipped.is_empty() {
            write!(f, "; {} skipped: {}", self.skipped.len(), self.skipped.join(", "))?;
        }
        Ok(())
    }
}

/// Wait until `peer` sees something `want` accepts, skipping the rest
/// (presence noise, other tests' leftovers).
pub async fn expect<T>(peer: &mut dyn Peer, timeout: Duration, what: &str, want: impl FnMut(&Seen) -> Option<T>) -> Result<T, String> {
    expect_in(peer, false, timeout, what, want).await
}

/// [`expect`] among the room's messages, or (`direct`) among the peer's
/// direct messages.
async fn expect_in<T>(
    peer: &mut dyn Peer,
    direct: bool,
    timeout: Duration,
    what: &str,
    mut want: impl FnMut(&Seen) -> Option<T>,
) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{}: no {what} within {timeout:?}; saw instead: {skipped:?}", peer.label()));
        }
        let next = if direct { peer.next_direct(left).await } else { peer.next(left).await };
        match next {
            Ok(seen) => match want(&seen) {
                Some(t) => return Ok(t),
                None => skipped.push(seen),
            },
            Err(e) => return Err(format!("{}: waiting for {what}: {e}; saw instead: {skipped:?}", peer.label())),
        }
    }
}

/// Run the suite in both directions, restarting `causeway` for the
/// restart case.
pub async fn run(a: &mut dyn Peer, b: &mut dyn Peer, causeway: &mut dyn Causeway, opts: &Options) -> Result<Report, String> {
    let mut report = Report::default();
    one_way(a, b, causeway, opts, "a→b", &mut report).await?;
    one_way(b, a, causeway, opts, "b→a", &mut report).await?;
    let done = direct_conversation(a, b, opts).await?;
    report.record("direct conversation".into(), done);
    Ok(report)
}

fn message_text(body: &Body<String>) -> Option<(&str, Option<&String>, &[Attachment])> {
    match body {
        Body::Message { text, reply_to, attachments, .. } => Some((&text.plain, reply_to.as_ref(), attachments)),
        _ => None,
    }
}

/// One direction of [`run`]: what `from` does, `to` must see.
struct Way<'a> {
    from: &'a mut dyn Peer,
    to: &'a mut dyn Peer,
    opts: &'a Options,
    dir: &'a str,
    /// Both sides' ids of the direction's first message.
    from_id: String,
    to_id: String,
}

impl Way<'_> {
    /// Whether both sides can show what `f` names.
    fn both(&self, f: fn(&Capabilities) -> bool) -> bool {
        f(&self.from.capabilities()) && f(&self.to.capabilities())
    }

    fn text(&self, what: &str) -> String {
        format!("conformance {what} {} {}", self.dir, self.opts.nonce)
    }
}

/// One direction of [`run`]: the cases in their order, each run once the
/// one before is done, then the echo check over all the sender saw.
async fn one_way(
    from: &mut dyn Peer,
    to: &mut dyn Peer,
    causeway: &mut dyn Causeway,
    opts: &Options,
    dir: &str,
    report: &mut Report,
) -> Result<(), String> {
    let mut watched = Watched { inner: from, own: Vec::new(), echoes: Vec::new() };
    // Text: both sides' ids of it are what the other cases refer to.
    let text = format!("conformance text {dir} {}", opts.nonce);
    let from_id = watched.act(Action::Text { text: text.clone(), reply_to: None }).await?;
    let to_id =
        expect(to, opts.timeout, "text message", |s| message_text(&s.body).filter(|(p, _, _)| p.contains(&text)).map(|_| s.id.clone()))
            .await?;
    report.passed.push(format!("{dir} text"));
    let mut way = Way { from: &mut watched, to: &mut *to, opts, dir, from_id, to_id };
    let cases = [
        ("reply", reply(&mut way).await?),
        ("reaction", reaction(&mut way).await?),
        ("edit", edit(&mut way).await?),
        ("retraction", retraction(&mut way).await?),
        ("thread", thread(&mut way).await?),
        ("mention", mention(&mut way).await?),
        ("file", file(&mut way).await?),
        ("presence", presence(&mut way).await?),
        ("typing", typing(&mut way).await?),
        ("topic", topic(&mut way).await?),
        ("membership", membership(&mut way).await?),
        ("hostile text", hostile_text(&mut way).await?),
        ("foreign edit and retraction", foreign_changes(&mut way).await?),
        ("redelivery", redelivery(&mut way).await?),
        ("restart", restart(&mut way, causeway).await?),
    ];
    for (name, done) in cases {
        report.record(format!("{dir} {name}"), done);
    }
    drop(way);
    no_echo(&mut watched, to, opts, dir).await?;
    report.passed.push(format!("{dir} no echo"));
    Ok(())
}

/// A peer whose every sighting is checked for what it sent itself: a
/// bridge must never hand a sender their own message back.
struct Watched<'a> {
    inner: &'a mut dyn Peer,
    /// The texts (and statuses, topics) this side sent.
    own: Vec<String>,
    /// What it saw of them.
    echoes: Vec<Seen>,
}

#[async_trait]
impl Peer for Watched<'_> {
    fn label(&self) -> String {
        self.inner.label()
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    fn reaction_notices(&self) -> bool {
        self.inner.reaction_notices()
    }
    fn pinged(&self, seen: &Seen) -> bool {
        self.inner.pinged(seen)
    }
    async fn act(&mut self, action: Action) -> Result<String, String> {
        match &action {
            Action::Text { text, .. }
            | Action::InThread { text, .. }
            | Action::Mention { text, .. }
            | Action::Edit { text, .. }
            | Action::Topic { text } => self.own.push(text.clone()),
            Action::File { caption, .. } => self.own.push(caption.clone()),
            Action::Presence { status: Some(status), .. } => self.own.push(status.clone()),
            _ => {}
        }
        self.inner.act(action).await
    }
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String> {
        let seen = self.inner.next(timeout).await?;
        let says = match &seen.body {
            Body::Message { text, .. } | Body::Edit { text, .. } => Some(text.plain.as_str()),
            Body::Topic { text } => Some(text.as_str()),
            Body::Presence { status, .. } => status.as_deref(),
            _ => None,
        };
        // Quoted lines (a reply's fallback, a mail's quote) are not echoes.
        let unquoted = |s: &str| s.lines().filter(|l| !l.trim_start().starts_with('>')).collect::<Vec<_>>().join("\n");
        if says.map(unquoted).is_some_and(|says| self.own.iter().any(|own| says.contains(own.as_str()))) {
            self.echoes.push(seen.clone());
        }
        Ok(seen)
    }
    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
        self.inner.fetch(url).await
    }
    async fn redeliver(&mut self, id: &str) -> Result<bool, String> {
        self.inner.redeliver(id).await
    }
}

/// Everything `peer` sees until the message with `sentinel`, which the
/// other side sends now (so whatever was on its way comes before it).
async fn until_sentinel(peer: &mut dyn Peer, other: &mut dyn Peer, timeout: Duration, sentinel: &str) -> Result<Vec<Seen>, String> {
    other.act(Action::Text { text: sentinel.to_string(), reply_to: None }).await?;
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let s = peer.next(left).await.map_err(|e| format!("{}: waiting for {sentinel:?}: {e}; saw {seen:?}", peer.label()))?;
        if message_text(&s.body).is_some_and(|(p, _, _)| p.contains(sentinel)) {
            return Ok(seen);
        }
        seen.push(s);
    }
}

/// A reply answered from the receiving side must point at the sender's own
/// id for the original. `Ok(false)`: skipped (a side cannot show it).
async fn reply(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.replies) {
        return Ok(false);
    }
    let reply = w.text("reply");
    w.to.act(Action::Text { text: reply.clone(), reply_to: Some(w.to_id.clone()) }).await?;
    let got = expect(w.from, w.opts.timeout, "reply", |s| {
        message_text(&s.body).filter(|(p, _, _)| p.contains(&reply)).map(|(_, r, _)| r.cloned())
    })
    .await?;
    if got.as_ref() != Some(&w.from_id) {
        return Err(format!("{} reply: refers to {got:?}, expected {:?}", w.dir, w.from_id));
    }
    Ok(true)
}

/// A reaction from the receiving side targets the sender's id.
async fn reaction(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.reactions) {
        return Ok(false);
    }
    w.to.act(Action::React { target: w.to_id.clone(), key: "👍".into() }).await?;
    let target = expect(w.from, w.opts.timeout, "reaction", |s| match &s.body {
        Body::Reaction { target, key, removed: false } if key == "👍" => Some(target.clone()),
        _ => None,
    })
    .await?;
    if target != w.from_id {
        return Err(format!("{} reaction: targets {target:?}, expected {:?}", w.dir, w.from_id));
    }
    Ok(true)
}

/// An edit by the sender targets the receiver's id.
async fn edit(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.edits) {
        return Ok(false);
    }
    let edited = w.text("edited");
    w.from.act(Action::Edit { target: w.from_id.clone(), text: edited.clone() }).await?;
    let target = expect(w.to, w.opts.timeout, "edit", |s| match &s.body {
        Body::Edit { target, text } if text.plain.contains(&edited) => Some(target.clone()),
        _ => None,
    })
    .await?;
    if target != w.to_id {
        return Err(format!("{} edit: targets {target:?}, expected {:?}", w.dir, w.to_id));
    }
    Ok(true)
}

/// A retraction by the sender targets the receiver's id.
async fn retraction(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.retractions) {
        return Ok(false);
    }
    w.from.act(Action::Retract { target: w.from_id.clone() }).await?;
    let target = expect(w.to, w.opts.timeout, "retraction", |s| match &s.body {
        Body::Retract { target, .. } => Some(target.clone()),
        _ => None,
    })
    .await?;
    if target != w.to_id {
        return Err(format!("{} retraction: targets {target:?}, expected {:?}", w.dir, w.to_id));
    }
    Ok(true)
}

/// A message in the thread of the first one has the receiver's id of it as root.
async fn thread(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.threads) {
        return Ok(false);
    }
    let text = w.text("thread");
    w.from.act(Action::InThread { text: text.clone(), root: w.from_id.clone() }).await?;
    let root = expect(w.to, w.opts.timeout, "message in a thread", |s| match &s.body {
        Body::Message { text: body, thread, .. } if body.plain.contains(&text) => Some(thread.clone()),
        _ => None,
    })
    .await?;
    if root.as_ref() != Some(&w.to_id) {
        return Err(format!("{} thread: root {root:?}, expected {:?}", w.dir, w.to_id));
    }
    Ok(true)
}

/// The receiving side mentions the author of the first message, the way
/// its clients do; the sender sees a message that pings them (on mail: the
/// text names them as `@Name`).
async fn mention(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.to.capabilities().mentions {
        return Ok(false);
    }
    let text = w.text("mention");
    w.to.act(Action::Mention { text: text.clone(), of: w.to_id.clone() }).await?;
    let seen =
        expect(w.from, w.opts.timeout, "mention", |s| message_text(&s.body).filter(|(p, _, _)| p.contains(&text)).map(|_| s.clone()))
            .await?;
    if !w.from.pinged(&seen) {
        return Err(format!("{} mention: {} is not pinged by {seen:?}", w.dir, w.from.label()));
    }
    Ok(true)
}

/// A file: as an attachment where both carry files (the same bytes behind
/// the receiver's own link, given a real file), else as a link in text.
async fn file(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.from.capabilities().files {
        return Ok(false);
    }
    let n = &w.opts.nonce;
    let (url, bytes) = match &w.opts.file {
        Some((url, bytes)) => (url.clone(), Some(bytes.clone())),
        None => (format!("https://files.example/conformance-{n}.txt"), None),
    };
    let caption = w.text("file");
    let mime = if bytes.is_some() { "image/png" } else { "text/plain" };
    let name = if bytes.is_some() { "c.png" } else { "c.txt" };
    let attachment =
        Attachment { url: url.clone(), name: Some(name.into()), mime: Some(mime.into()), size: bytes.as_ref().map(|b| b.len() as u64) };
    w.from.act(Action::File { attachment, caption }).await?;
    let files = w.to.capabilities().files;
    let got = expect(w.to, w.opts.timeout, "file", |s| {
        let (plain, _, attachments) = message_text(&s.body)?;
        if !files {
            return plain.contains(&url).then_some(None);
        }
        attachments.first().filter(|a| bytes.is_some() || a.url == url).map(|a| Some(a.url.clone()))
    })
    .await?;
    if let (Some(expected), Some(link)) = (&bytes, got) {
        let fetched = w.to.fetch(&link).await?;
        if &fetched != expected {
            return Err(format!("{} file: {link} gives {} bytes, not the {} sent", w.dir, fetched.len(), expected.len()));
        }
    }
    Ok(true)
}

/// The sender's presence (away, with a status) reaches the receiver.
async fn presence(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.presence) {
        return Ok(false);
    }
    let status = w.text("away");
    w.from.act(Action::Presence { show: Show::Away, status: Some(status.clone()) }).await?;
    expect(w.to, w.opts.timeout, "presence", |s| match &s.body {
        Body::Presence { show: Show::Away, status: Some(st) } if st == &status => Some(()),
        _ => None,
    })
    .await?;
    Ok(true)
}

/// The sender starts typing; the receiver sees someone typing.
async fn typing(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.typing) {
        return Ok(false);
    }
    w.from.act(Action::Typing { active: true }).await?;
    expect(w.to, w.opts.timeout, "typing", |s| matches!(s.body, Body::Typing { active: true }).then_some(())).await?;
    w.from.act(Action::Typing { active: false }).await?;
    Ok(true)
}

/// The sender sets the room's topic; the receiver's room takes it.
async fn topic(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.topic) {
        return Ok(false);
    }
    let text = w.text("topic");
    w.from.act(Action::Topic { text: text.clone() }).await?;
    expect(w.to, w.opts.timeout, "topic", |s| matches!(&s.body, Body::Topic { text: t } if *t == text).then_some(())).await?;
    Ok(true)
}

/// The sender leaves the room and comes back; the receiver sees both.
async fn membership(w: &mut Way<'_>) -> Result<bool, String> {
    if !w.both(|c| c.membership) {
        return Ok(false);
    }
    w.from.act(Action::Leave).await?;
    expect(w.to, w.opts.timeout, "leave", |s| matches!(s.body, Body::Membership(Membership::Leave)).then_some(())).await?;
    w.from.act(Action::Join).await?;
    expect(w.to, w.opts.timeout, "join", |s| matches!(s.body, Body::Membership(Membership::Join)).then_some(())).await?;
    Ok(true)
}

/// Text that looks like markup (a script, an element with a handler,
/// entities, a CDATA end, a direction override) arrives as the same text:
/// shown as written, never taken as markup.
async fn hostile_text(w: &mut Way<'_>) -> Result<bool, String> {
    let text = format!("{} <script>alert(1)</script> <img src=x onerror=alert(2)> &amp; &lt;b&gt; ]]> \u{202e}txt.exe", w.text("hostile"));
    w.from.act(Action::Text { text: text.clone(), reply_to: None }).await?;
    let marker = w.text("hostile");
    let got = expect(w.to, w.opts.timeout, "hostile text", |s| match &s.body {
        Body::Message { text, .. } if text.plain.contains(&marker) => Some(text.clone()),
        _ => None,
    })
    .await?;
    if !got.plain.contains(&text[marker.len()..]) {
        return Err(format!("{} hostile text: arrived as {:?}, sent as {text:?}", w.dir, got.plain));
    }
    if let Some(html) = &got.html {
        let lower = html.to_ascii_lowercase();
        // Escaped, the text may say anything; as elements, nothing of it.
        if lower.contains("<script") || lower.contains("<img") {
            return Err(format!("{} hostile text: became markup {html:?}", w.dir));
        }
    }
    Ok(true)
}

/// The receiving side tries to edit and retract the sender's message: a
/// partner may only speak, so the sender sees neither (nor a notice of it).
async fn foreign_changes(w: &mut Way<'_>) -> Result<bool, String> {
    let to = w.to.capabilities();
    if !to.edits && !to.retractions {
        return Ok(false);
    }
    let mine = w.text("mine");
    let mine_id = w.from.act(Action::Text { text: mine.clone(), reply_to: None }).await?;
    let theirs = expect(w.to, w.opts.timeout, "message to change", |s| {
        message_text(&s.body).filter(|(p, _, _)| p.contains(&mine)).map(|_| s.id.clone())
    })
    .await?;
    let forged = w.text("forged");
    // Refused at the door or dropped later: either way nothing may arrive.
    if to.edits {
        let _ = w.to.act(Action::Edit { target: theirs.clone(), text: forged.clone() }).await;
    }
    if to.retractions {
        let _ = w.to.act(Action::Retract { target: theirs }).await;
    }
    let sentinel = w.text("after forgery");
    let seen = until_sentinel(w.from, w.to, w.opts.timeout, &sentinel).await?;
    if let Some(s) = seen.iter().find(|s| match &s.body {
        Body::Edit { target, text } => *target == mine_id || text.plain.contains(&forged),
        Body::Retract { target, .. } => *target == mine_id,
        Body::Message { text, .. } => text.plain.contains(&forged) || text.plain.contains("retracted"),
        _ => false,
    }) {
        return Err(format!("{} foreign change reached the author: {s:?}", w.dir));
    }
    Ok(true)
}

/// The sender's network delivers a message a second time (as after a lost
/// acknowledgement): the receiver sees it once.
async fn redelivery(w: &mut Way<'_>) -> Result<bool, String> {
    let text = w.text("once");
    let id = w.from.act(Action::Text { text: text.clone(), reply_to: None }).await?;
    expect(w.to, w.opts.timeout, "message to redeliver", |s| message_text(&s.body).filter(|(p, _, _)| p.contains(&text)).map(|_| ()))
        .await?;
    if !w.from.redeliver(&id).await? {
        return Ok(false);
    }
    let sentinel = w.text("after redelivery");
    let seen = until_sentinel(w.to, w.from, w.opts.timeout, &sentinel).await?;
    if let Some(s) = seen.iter().find(|s| message_text(&s.body).is_some_and(|(p, _, _)| p.contains(&text))) {
        return Err(format!("{} redelivery: taken twice: {s:?}", w.dir));
    }
    Ok(true)
}

/// Causeway is killed right after taking two messages and started again;
/// two more follow. The receiver sees each of the four exactly once.
async fn restart(w: &mut Way<'_>, causeway: &mut dyn Causeway) -> Result<bool, String> {
    let texts: Vec<String> = (1..=4).map(|i| w.text(&format!("restart {i}/4"))).collect();
    for t in &texts[..2] {
        w.from.act(Action::Text { text: t.clone(), reply_to: None }).await?;
    }
    causeway.restart().await?;
    for t in &texts[2..] {
        w.from.act(Action::Text { text: t.clone(), reply_to: None }).await?;
    }
    let mut counts = vec![0; texts.len()];
    let count = |counts: &mut Vec<usize>, s: &Seen| {
        if let Some((plain, _, _)) = message_text(&s.body)
            && let Some(i) = texts.iter().position(|t| plain.contains(t.as_str()))
        {
            counts[i] += 1;
        }
    };
    let deadline = Instant::now() + w.opts.timeout * 3;
    while counts.contains(&0) {
        let left = deadline.saturating_duration_since(Instant::now());
        let s = w.to.next(left).await.map_err(|e| format!("{} restart: {e}; seen so far {counts:?} of {texts:?}", w.dir))?;
        count(&mut counts, &s);
    }
    // Whatever is still on its way comes before a message sent now.
    let sentinel = w.text("after restart");
    for s in until_sentinel(w.to, w.from, w.opts.timeout, &sentinel).await? {
        count(&mut counts, &s);
    }
    if counts.iter().any(|&c| c != 1) {
        return Err(format!("{} restart: seen {counts:?} times, each of {texts:?} must be seen once", w.dir));
    }
    Ok(true)
}

/// [`one_way`]: nothing the sender sent came back to it, up to a message
/// the receiver sends now (everything relayed before it has arrived).
async fn no_echo(from: &mut Watched<'_>, to: &mut dyn Peer, opts: &Options, dir: &str) -> Result<(), String> {
    let sentinel = format!("conformance echo check {dir} {}", opts.nonce);
    until_sentinel(from, to, opts.timeout, &sentinel).await?;
    if !from.echoes.is_empty() {
        return Err(format!("{dir} echo: {} saw its own messages back: {:?}", from.label(), from.echoes));
    }
    Ok(())
}

/// Where both sides hold direct conversations: `a` writes one to one to
/// `b`'s account, `b` sees it and answers it, and `a` sees the answer
/// pointing at its own message; where both show read markers, `b` marks
/// `a`'s message seen and `a` is told of it.
pub async fn direct_conversation(a: &mut dyn Peer, b: &mut dyn Peer, opts: &Options) -> Result<bool, String> {
    let (Some(of_a), Some(of_b)) = (a.account(), b.account()) else {
        return Ok(false);
    };
    let text = format!("conformance direct {}", opts.nonce);
    let a_id = a.direct(&of_b, &text, None).await?;
    let b_id = expect_in(b, true, opts.timeout, "direct message", |s| {
        message_text(&s.body).filter(|(p, _, _)| p.contains(&text)).map(|_| s.id.clone())
    })
    .await?;
    let answer = format!("conformance direct answer {}", opts.nonce);
    b.direct(&of_a, &answer, Some(b_id.clone())).await?;
    let reply_to = expect_in(a, true, opts.timeout, "direct answer", |s| {
        message_text(&s.body).filter(|(p, _, _)| p.contains(&answer)).map(|(_, reply_to, _)| reply_to.cloned())
    })
    .await?;
    let both_reply = a.capabilities().replies && b.capabilities().replies;
    if both_reply && reply_to.as_ref() != Some(&a_id) {
        return Err(format!("direct answer refers to {reply_to:?}, expected {a_id:?}"));
    }
    // Where both show read markers: b has seen a's message, and a is told.
    if a.read_markers() && b.read_markers() {
        b.mark_read(&b_id).await?;
        let read = expect_in(a, true, opts.timeout, "read marker", |s| match &s.body {
            Body::Read { target } => Some(target.clone()),
            _ => None,
        })
        .await?;
        if read != a_id {
            return Err(format!("read marker for {read:?}, expected {a_id:?}"));
        }
    }
    Ok(true)
}

/// The suite across many networks in one portal: from each peer in turn, a
/// message (everyone sees it), then a reply to the previous peer's message,
/// an edit of its own, a reaction to the next peer's message, a message
/// in the thread of the first peer's message ([`threads_all`]), and a
/// mention of the next peer ([`mentions_all`]). Every
/// other peer must show each one referencing its own id of the message
/// meant, or — where it cannot show an edit or a reaction — the notice the
/// router sends instead (`degrade: notice`; for a reaction only where the
/// peer takes such notices, [`Peer::reaction_notices`]).
pub async fn run_all(peers: &mut [&mut dyn Peer], opts: &Options) -> Result<Report, String> {
    let mut report = Report::default();
    let ids = texts_all(peers, opts, &mut report).await?;
    replies_all(peers, opts, &ids, &mut report).await?;
    edits_all(peers, opts, &ids, &mut report).await?;
    reactions_all(peers, opts, &ids, &mut report).await?;
    threads_all(peers, opts, &ids, &mut report).await?;
    mentions_all(peers, opts, &ids, &mut report).await?;
    Ok(report)
}

/// [`run_all`]: from each peer that makes mentions, one of the next peer's
/// author; every other peer sees the message, and the one mentioned is
/// pinged by it (on mail: named as `@Name`).
async fn mentions_all(peers: &mut [&mut dyn Peer], opts: &Options, ids: &[Vec<String>], report: &mut Report) -> Result<(), String> {
    let (n, t) = (peers.len(), opts.timeout);
    for s in 0..n {
        let m = (s + 1) % n;
        if !peers[s].capabilities().mentions {
            report.skipped.push(format!("mention from {}", peers[s].label()));
            continue;
        }
        let text = format!("four-way mention from {} {}", peers[s].label(), opts.nonce);
        peers[s].act(Action::Mention { text: text.clone(), of: ids[m][s].clone() }).await?;
        for r in (0..n).filter(|&r| r != s) {
            let seen =
                expect(&mut *peers[r], t, "mention", |x| message_text(&x.body).filter(|(p, _, _)| p.contains(&text)).map(|_| x.clone()))
                    .await?;
            if r == m && !peers[r].pinged(&seen) {
                return Err(format!("mention from {} does not ping {}: {seen:?}", peers[s].label(), peers[r].label()));
            }
        }
        report.passed.push(format!("mention from {}", peers[s].label()));
    }
    Ok(())
}

/// [`run_all`]: a message from each peer, seen by every other. Returns
/// `ids[m][p]`: peer p's id for the message of peer m.
async fn texts_all(peers: &mut [&mut dyn Peer], opts: &Options, report: &mut Report) -> Result<Vec<Vec<String>>, String> {
    let (n, t) = (peers.len(), opts.timeout);
    let mut ids: Vec<Vec<String>> = vec![vec![String::new(); n]; n];
    let texts: Vec<String> = (0..n).map(|s| format!("four-way text from {} {}", peers[s].label(), opts.nonce)).collect();
    for s in 0..n {
        let id = peers[s].act(Action::Text { text: texts[s].clone(), reply_to: None }).await?;
        ids[s][s] = id;
        for r in (0..n).filter(|&r| r != s) {
            let text = texts[s].clone();
            let seen =
                expect(&mut *peers[r], t, "text", |x| message_text(&x.body).filter(|(p, _, _)| p.contains(&text)).map(|_| x.id.clone()))
                    .await?;
            ids[s][r] = seen;
        }
        report.passed.push(format!("text from {}", peers[s].label()));
    }
    Ok(ids)
}

/// [`run_all`]: from each peer a reply to the previous peer's message.
async fn replies_all(peers: &mut [&mut dyn Peer], opts: &Options, ids: &[Vec<String>], report: &mut Report) -> Result<(), String> {
    let (n, t) = (peers.len(), opts.timeout);
    for s in 0..n {
        let m = (s + n - 1) % n; // the previous peer's message
        if !peers[s].capabilities().replies {
            report.skipped.push(format!("reply from {}", peers[s].label()));
            continue;
        }
        let reply = format!("four-way reply from {} {}", peers[s].label(), opts.nonce);
        peers[s].act(Action::Text { text: reply.clone(), reply_to: Some(ids[m][s].clone()) }).await?;
        for r in (0..n).filter(|&r| r != s) {
            let got = expect(&mut *peers[r], t, "reply", |x| {
                message_text(&x.body).filter(|(p, _, _)| p.contains(&reply)).map(|(_, r, _)| r.cloned())
            })
            .await?;
            if peers[r].capabilities().replies && got.as_ref() != Some(&ids[m][r]) {
                return Err(format!(
                    "reply from {} seen by {} refers to {got:?}, expected {:?}",
                    peers[s].label(),
                    peers[r].label(),
                    ids[m][r]
                ));
            }
        }
        report.passed.push(format!("reply from {}", peers[s].label()));
    }
    Ok(())
}

/// [`run_all`]: from each peer an edit of its own message (a notice where
/// a receiver cannot show edits).
async fn edits_all(peers: &mut [&mut dyn Peer], opts: &Options, ids: &[Vec<String>], report: &mut Report) -> Result<(), String> {
    let (n, t) = (peers.len(), opts.timeout);
    for s in 0..n {
        if !peers[s].capabilities().edits {
            report.skipped.push(format!("edit from {}", peers[s].label()));
            continue;
        }
        let edited = format!("four-way edited from {} {}", peers[s].label(), opts.nonce);
        peers[s].act(Action::Edit { target: ids[s][s].clone(), text: edited.clone() }).await?;
        for r in (0..n).filter(|&r| r != s) {
            if peers[r].capabilities().edits {
                let target = expect(&mut *peers[r], t, "edit", |x| match &x.body {
                    Body::Edit { target, text } if text.plain.contains(&edited) => Some(target.clone()),
                    _ => None,
                })
                .await?;
                if target != ids[s][r] {
                    return Err(format!(
                        "edit from {} seen by {} targets {target:?}, expected {:?}",
                        peers[s].label(),
                        peers[r].label(),
                        ids[s][r]
                    ));
                }
            } else {
                let notice = format!("(edited) {edited}");
                expect(&mut *peers[r], t, "edit notice", |x| message_text(&x.body).filter(|(p, _, _)| p.contains(&notice)).map(|_| ()))
                    .await?;
            }
        }
        report.passed.push(format!("edit from {}", peers[s].label()));
    }
    Ok(())
}

/// [`run_all`]: from each peer a reaction to the next peer's message (a
/// notice where a receiver cannot show reactions and takes notices).
async fn reactions_all(peers: &mut [&mut dyn Peer], opts: &Options, ids: &[Vec<String>], report: &mut Report) -> Result<(), String> {
    let (n, t) = (peers.len(), opts.timeout);
    for s in 0..n {
        let m = (s + 1) % n; // the next peer's message
        if !peers[s].capabilities().reactions {
            report.skipped.push(format!("reaction from {}", peers[s].label()));
            continue;
        }
        let key = ["👍", "🎉", "👀", "🚀", "✅"][s % 5].to_string();
        peers[s].act(Action::React { target: ids[m][s].clone(), key: key.clone() }).await?;
        for r in (0..n).filter(|&r| r != s) {
            if peers[r].capabilities().reactions {
                let target = expect(&mut *peers[r], t, "reaction", |x| match &x.body {
                    Body::Reaction { target, key: k, removed: false } if *k == key => Some(target.clone()),
                    _ => None,
                })
                .await?;
                if target != ids[m][r] {
                    return Err(format!(
                        "reaction from {} seen by {} targets {target:?}, expected {:?}",
                        peers[s].label(),
                        peers[r].label(),
                        ids[m][r]
                    ));
                }
            } else if peers[r].reaction_notices() {
                let notice = format!("reacted {key}");
                expect(&mut *peers[r], t, "reaction notice", |x| message_text(&x.body).filter(|(p, _, _)| p.contains(&notice)).map(|_| ()))
                    .await?;
            }
        }
        report.passed.push(format!("reaction from {}", peers[s].label()));
    }
    Ok(())
}

/// [`run_all`]: one thread on the first peer's message, continued from
/// every peer: where a peer has threads, in the thread; where it has only
/// replies, as an answer to the thread's last message (a mail client
/// answering a mail), which must stay in the thread. Every peer with
/// threads sees each message in the thread of its own id of the root;
/// one without sees it as a reply to the root.
async fn threads_all(peers: &mut [&mut dyn Peer], opts: &Options, ids: &[Vec<String>], report: &mut Report) -> Result<(), String> {
    let (n, t) = (peers.len(), opts.timeout);
    let root = &ids[0];
    // Each peer's id of the thread's latest message.
    let mut last: Vec<Option<String>> = vec![None; n];
    for s in 0..n {
        let caps = peers[s].capabilities();
        let text = format!("four-way thread from {} {}", peers[s].label(), opts.nonce);
        let action = match &last[s] {
            _ if caps.threads => Action::InThread { text: text.clone(), root: root[s].clone() },
            Some(latest) if caps.replies => Action::Text { text: text.clone(), reply_to: Some(latest.clone()) },
            _ => {
                report.skipped.push(format!("thread from {}", peers[s].label()));
                continue;
            }
        };
        last[s] = Some(peers[s].act(action).await?);
        for r in (0..n).filter(|&r| r != s) {
            let (id, reply_to, thread) = expect(&mut *peers[r], t, "message in the thread", |x| match &x.body {
                Body::Message { text: body, reply_to, thread, .. } if body.plain.contains(&text) => {
                    Some((x.id.clone(), reply_to.clone(), thread.clone()))
                }
                _ => None,
            })
            .await?;
            let caps = peers[r].capabilities();
            let fine = if caps.threads {
                thread.as_ref() == Some(&root[r])
            } else {
                !caps.replies || (reply_to.is_some() && (reply_to.as_ref() == Some(&root[r]) || reply_to == last[r]))
            };
            if !fine {
                return Err(format!(
                    "thread message from {} seen by {}: thread {thread:?}, reply to {reply_to:?}; the root there is {:?}",
                    peers[s].label(),
                    peers[r].label(),
                    root[r]
                ));
            }
            last[r] = Some(id);
        }
        report.passed.push(format!("thread from {}", peers[s].label()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The suite itself, against two sides joined in memory by a faithful
    //! relay (it passes) and by relays with one fault each (it fails, and
    //! says which case).

    use std::collections::{HashMap, VecDeque};
    use std::sync::{Arc, Mutex};

    use super::*;
    use crate::event::Text;

    #[derive(Clone, Copy, Default)]
    struct Faults {
        /// Hand each sender its own messages back.
        echo: bool,
        /// Pass on changes of someone else's message.
        foreign: bool,
        /// Take a redelivered message again.
        redelivery: bool,
        /// Send the last message again after a restart.
        restart: bool,
        /// Take markup out of the text.
        strip: bool,
        /// Leave mentions out.
        unmention: bool,
        /// Lose read markers.
        unread: bool,
    }

    #[derive(Default)]
    struct Relay {
        faults: Faults,
        /// What each side has to see, and its direct messages.
        queues: [VecDeque<Seen>; 2],
        direct: [VecDeque<Seen>; 2],
        /// (side, its id) → the other side's id.
        ids: HashMap<(usize, String), String>,
        /// (side, its id) → the side that wrote it.
        authors: HashMap<(usize, String), usize>,
        /// What each side sent, by its id (for redelivery).
        sent: HashMap<(usize, String), Body<String>>,
        last: Option<(usize, Seen)>,
        n: u32,
    }

    impl Relay {
        fn pass(&mut self, from: usize, id: &str, body: Body<String>) {
            let to = 1 - from;
            let other_id = format!("{to}-{}", self.n);
            self.n += 1;
            let mine = |r: &String| self.authors.get(&(from, r.clone())).is_none_or(|a| *a == from);
            let allowed = match &body {
                Body::Edit { target, .. } | Body::Retract { target, .. } => mine(target) || self.faults.foreign,
                _ => true,
            };
            if !allowed {
                return;
            }
            let map = |r: String| self.ids.get(&(from, r.clone())).cloned().unwrap_or(r);
            let mut body = body.map_refs(|r| Some(map(r))).expect("every reference maps");
            if self.faults.strip
                && let Body::Message { text, .. } = &mut body
            {
                text.plain = text.plain.replace("<script>", "");
            }
            if self.faults.unmention
                && let Body::Message { mentions, .. } = &mut body
            {
                mentions.clear();
            }
            self.ids.insert((from, id.to_string()), other_id.clone());
            self.ids.insert((to, other_id.clone()), id.to_string());
            self.authors.insert((from, id.to_string()), from);
            self.authors.insert((to, other_id.clone()), from);
            let seen = Seen { id: other_id, sender_name: format!("side {from}"), body };
            if self.faults.echo {
                self.queues[from].push_back(seen.clone());
            }
            self.last = Some((to, seen.clone()));
            self.queues[to].push_back(seen);
        }
    }

    struct Side {
        side: usize,
        relay: Arc<Mutex<Relay>>,
    }

    #[async_trait]
    impl Peer for Side {
        fn label(&self) -> String {
            format!("side {}", self.side)
        }
        fn capabilities(&self) -> Capabilities {
            Capabilities::ALL
        }
        fn pinged(&self, seen: &Seen) -> bool {
            matches!(&seen.body, Body::Message { mentions, .. } if mentions.iter().any(|m| m.who == format!("side:{}", self.side)))
        }
        async fn act(&mut self, action: Action) -> Result<String, String> {
            let mut relay = self.relay.lock().unwrap();
            relay.n += 1;
            let id = format!("{}-{}", self.side, relay.n);
            let message = |text: String, reply_to, thread, attachments| Body::Message {
                text: Text::plain(text),
                kind: Default::default(),
                attachments,
                reply_to,
                thread,
                mentions: vec![],
            };
            let body = match action {
                Action::Text { text, reply_to } => message(text, reply_to, None, vec![]),
                Action::InThread { text, root } => message(text, None, Some(root), vec![]),
                Action::Mention { text, of } => {
                    let author = relay.authors.get(&(self.side, of)).copied().unwrap_or(self.side);
                    let mut body = message(text, None, None, vec![]);
                    if let Body::Message { mentions, .. } = &mut body {
                        mentions.push(crate::event::Mention::new(format!("side:{author}"), None));
                    }
                    body
                }
                Action::File { attachment, caption } => message(caption, None, None, vec![attachment]),
                Action::Edit { target, text } => Body::Edit { target, text: Text::plain(text) },
                Action::Retract { target } => Body::Retract { target, moderated: false },
                Action::React { target, key } => Body::Reaction { target, key, removed: false },
                Action::Presence { show, status } => Body::Presence { show, status },
                Action::Typing { active } => Body::Typing { active },
                Action::Topic { text } => Body::Topic { text },
                Action::Leave => Body::Membership(Membership::Leave),
                Action::Join => Body::Membership(Membership::Join),
            };
            relay.sent.insert((self.side, id.clone()), body.clone());
            relay.pass(self.side, &id, body);
            Ok(id)
        }
        async fn next(&mut self, _timeout: Duration) -> Result<Seen, String> {
            self.relay.lock().unwrap().queues[self.side].pop_front().ok_or_else(|| "nothing more".to_string())
        }
        async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String> {
            Err(format!("no file behind {url}"))
        }
        async fn redeliver(&mut self, id: &str) -> Result<bool, String> {
            let mut relay = self.relay.lock().unwrap();
            if relay.faults.redelivery {
                let body = relay.sent[&(self.side, id.to_string())].clone();
                relay.pass(self.side, &format!("{id}-again"), body);
            }
            Ok(true)
        }
        fn account(&self) -> Option<Account> {
            Some(Account { bridge: format!("net{}", self.side), id: "someone".into() })
        }
        async fn direct(&mut self, _to: &Account, text: &str, reply_to: Option<String>) -> Result<String, String> {
            let mut relay = self.relay.lock().unwrap();
            relay.n += 1;
            let id = format!("{}-{}", self.side, relay.n);
            let other_id = format!("{}-{}", 1 - self.side, relay.n);
            let reply_to = reply_to.map(|r| relay.ids.get(&(self.side, r.clone())).cloned().unwrap_or(r));
            relay.ids.insert((self.side, id.clone()), other_id.clone());
            relay.ids.insert((1 - self.side, other_id.clone()), id.clone());
            let body = Body::text_replying(text, reply_to);
            relay.direct[1 - self.side].push_back(Seen { id: other_id, sender_name: self.label(), body });
            Ok(id)
        }
        async fn next_direct(&mut self, _timeout: Duration) -> Result<Seen, String> {
            self.relay.lock().unwrap().direct[self.side].pop_front().ok_or_else(|| "nothing more".to_string())
        }
        fn read_markers(&self) -> bool {
            true
        }
        async fn mark_read(&mut self, id: &str) -> Result<(), String> {
            let mut relay = self.relay.lock().unwrap();
            if relay.faults.unread {
                return Ok(());
            }
            let target = relay.ids.get(&(self.side, id.to_string())).cloned().unwrap_or_else(|| id.to_string());
            relay.direct[1 - self.side].push_back(Seen { id: String::new(), sender_name: self.label(), body: Body::Read { target } });
            Ok(())
        }
    }

    struct Restarts(Arc<Mutex<Relay>>);

    #[async_trait]
    impl Causeway for Restarts {
        async fn restart(&mut self) -> Result<(), String> {
            let mut relay = self.0.lock().unwrap();
            if relay.faults.restart
                && let Some((to, seen)) = relay.last.clone()
            {
                relay.queues[to].push_back(seen);
            }
            Ok(())
        }
    }

    async fn run_with(faults: Faults) -> Result<Report, String> {
        let relay = Arc::new(Mutex::new(Relay { faults, ..Default::default() }));
        let (mut a, mut b) = (Side { side: 0, relay: relay.clone() }, Side { side: 1, relay: relay.clone() });
        let opts = Options { timeout: Duration::from_millis(50), ..Default::default() };
        run(&mut a, &mut b, &mut Restarts(relay), &opts).await
    }

    #[tokio::test]
    async fn a_faithful_relay_passes_every_case() {
        let report = run_with(Faults::default()).await.unwrap();
        assert!(report.skipped.is_empty(), "{report}");
        assert_eq!(report.passed.len(), 35, "{report}");
    }

    #[tokio::test]
    async fn each_fault_fails_the_case_that_looks_for_it() {
        let cases = [
            (Faults { echo: true, ..Default::default() }, "saw its own messages back"),
            (Faults { foreign: true, ..Default::default() }, "foreign change reached the author"),
            (Faults { redelivery: true, ..Default::default() }, "redelivery: taken twice"),
            (Faults { restart: true, ..Default::default() }, "must be seen once"),
            (Faults { strip: true, ..Default::default() }, "hostile text: arrived as"),
            (Faults { unmention: true, ..Default::default() }, "is not pinged"),
            (Faults { unread: true, ..Default::default() }, "waiting for read marker"),
        ];
        for (faults, says) in cases {
            let err = run_with(faults).await.expect_err(says);
            assert!(err.contains(says), "{says}: {err}");
        }
    }
}
