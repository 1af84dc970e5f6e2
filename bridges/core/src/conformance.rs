//! The conformance suite every bridge passes against its real server.
//!
//! A test puts two real clients ([`Peer`]s) in one portal: the network under
//! test on one side and any other network (the webhook bridge needs no server,
//! so it is the usual partner) on the other. [`run`] then sends text, a reply,
//! an edit, a reaction, a retraction, a file, a presence change, typing and
//! a topic in both directions and checks that each arrives as the right event, *referencing
//! the right message in the receiver's own ids*. A case is skipped only where
//! a side declares the capability absent.

use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::bridge::Capabilities;
use crate::event::{Attachment, Body, Show};

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
    /// Do `action`; returns the network's id of the message it created.
    async fn act(&mut self, action: Action) -> Result<String, String>;
    /// The next thing this client sees, waiting at most `timeout`.
    async fn next(&mut self, timeout: Duration) -> Result<Seen, String>;
    /// The content behind a file link as this client gets it (with its own
    /// login where its network wants one).
    async fn fetch(&mut self, url: &str) -> Result<Vec<u8>, String>;
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
pub async fn expect<T>(peer: &mut dyn Peer, timeout: Duration, what: &str, mut want: impl FnMut(&Seen) -> Option<T>) -> Result<T, String> {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("{}: no {what} within {timeout:?}; saw instead: {skipped:?}", peer.label()));
        }
        match peer.next(left).await {
            Ok(seen) => match want(&seen) {
                Some(t) => return Ok(t),
                None => skipped.push(seen),
            },
            Err(e) => return Err(format!("{}: waiting for {what}: {e}; saw instead: {skipped:?}", peer.label())),
        }
    }
}

/// Run the suite in both directions.
pub async fn run(a: &mut dyn Peer, b: &mut dyn Peer, opts: &Options) -> Result<Report, String> {
    let mut report = Report::default();
    one_way(a, b, opts, "a→b", &mut report).await?;
    one_way(b, a, opts, "b→a", &mut report).await?;
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

async fn one_way(from: &mut dyn Peer, to: &mut dyn Peer, opts: &Options, dir: &str, report: &mut Report) -> Result<(), String> {
    // Text: both sides' ids of it are what the other cases refer to.
    let text = format!("conformance text {dir} {}", opts.nonce);
    let from_id = from.act(Action::Text { text: text.clone(), reply_to: None }).await?;
    let to_id =
        expect(to, opts.timeout, "text message", |s| message_text(&s.body).filter(|(p, _, _)| p.contains(&text)).map(|_| s.id.clone()))
            .await?;
    report.passed.push(format!("{dir} text"));
    let mut way = Way { from, to, opts, dir, from_id, to_id };
    // In this order: each case runs once the one before is done.
    let cases = [
        ("reply", reply(&mut way).await?),
        ("reaction", reaction(&mut way).await?),
        ("edit", edit(&mut way).await?),
        ("retraction", retraction(&mut way).await?),
        ("thread", thread(&mut way).await?),
        ("file", file(&mut way).await?),
        ("presence", presence(&mut way).await?),
        ("typing", typing(&mut way).await?),
        ("topic", topic(&mut way).await?),
    ];
    for (name, done) in cases {
        if done { report.passed.push(format!("{dir} {name}")) } else { report.skipped.push(format!("{dir} {name}")) }
    }
    Ok(())
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

/// The suite across many networks in one portal: from each peer in turn, a
/// message (everyone sees it), then a reply to the previous peer's message,
/// an edit of its own, and a reaction to the next peer's message. Every
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
    Ok(report)
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
