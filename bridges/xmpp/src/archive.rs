//! Catching up from a room's archive (XEP-0313 on the MUC).
//!
//! After (re)joining a room whose disco#info shows `urn:xmpp:mam:2`, the
//! bridge asks the archive for everything after the stanza-id (XEP-0359,
//! by the room) of the last message it took from the room, page by page
//! (XEP-0059), and takes each result once, in order, with the same checks
//! as a live message, before any live stanza of the room (held meanwhile
//! in the submitter, see [`crate::inbound::submit_in_order`]). The join
//! asks for no history then, so nothing comes twice. A room without an
//! archive, or whose archive errs, is caught up from its history replay as
//! before, as far as that reaches.

use std::sync::Arc;
use std::time::Duration;

use causeway_core::BridgeContext;
use tokio::sync::mpsc;
use tokio_xmpp::minidom::{Element, Node};
use tokio_xmpp::parsers::data_forms::{DataForm, DataFormType, Field};
use tokio_xmpp::parsers::disco::{DiscoInfoQuery, DiscoInfoResult};
use tokio_xmpp::parsers::mam::{Fin, Query, QueryId, Result_};
use tokio_xmpp::parsers::message::{Message, MessageType};
use tokio_xmpp::parsers::rsm::SetQuery;
use tokio_xmpp::parsers::stanza_error::DefinedCondition;

use crate::connection::renamespace;
use crate::inbound::{self, Inbound};
use crate::ns::{NS_CLIENT, NS_COMPONENT, NS_FORWARD, NS_MAM};
use crate::{Inner, RequestError, stanzas};

/// Results asked for per page (the server may give fewer).
const PAGE: usize = 100;
/// Pages read per catch-up at most; what is left is read at the next join.
pub(crate) const MAX_PAGES: usize = 50;
/// How long one page may take to arrive.
const PAGE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a whole catch-up may take; the room's live stanzas wait that long at most.
pub(crate) const MAX_TIME: Duration = Duration::from_secs(300);

/// Where a room's catch-up starts: after the stanza-id of the last message
/// taken from it, else (none stored yet) at a time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Mark {
    pub after: Option<String>,
    pub since_ms: Option<i64>,
}

/// Whether `room` keeps an archive the bridge can ask (disco#info).
pub(crate) async fn has_archive(inner: &Inner, room: &str) -> Result<bool, DiscoError> {
    let query = Element::from(DiscoInfoQuery { node: None });
    let payload = inner.request(&inner.bot_jid(), room, false, query).await?.ok_or(DiscoError::Empty)?;
    let info = DiscoInfoResult::try_from(payload).map_err(DiscoError::Malformed)?;
    Ok(info.features.contains(NS_MAM))
}

/// Why a room's features are not known.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DiscoError {
    #[error(transparent)]
    Request(#[from] crate::RequestError),
    #[error("empty disco#info answer")]
    Empty,
    #[error("disco#info answer: {0}")]
    Malformed(tokio_xmpp::parsers::FromElementError),
}

/// Whether a message is an archive result (`<result xmlns='urn:xmpp:mam:2'>`).
pub(crate) fn is_result(m: &Message) -> bool {
    m.payloads.iter().any(|p| p.is("result", NS_MAM))
}

/// An archive result, as what to take from it: only one the bridge asked
/// for (its query id, for that room), sent by the room itself, holding a
/// group chat message of that room. Anything else is dropped with a line
/// in the log.
pub(crate) fn take_result(inner: &Inner, m: Message) -> Option<Inbound> {
    let outer = m.from.clone();
    let element = m.payloads.into_iter().find(|p| p.is("result", NS_MAM))?;
    let result = match parse_result(element) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!(from = ?outer.map(|f| f.to_string()), "dropping an archive result that does not parse: {e}");
            return None;
        }
    };
    let looked = result.queryid.as_ref().and_then(|q| inner.state().history.lookbacks.get(&q.0).cloned());
    if let Some(room) = looked {
        // A look back for deliveries an earlier run may have sent: noted, not taken.
        if outer.as_ref().is_some_and(|f| f.resource().is_none() && f.to_bare().to_string() == room)
            && let Some(id) = result.forwarded.message.id.as_ref().filter(|i| !i.0.is_empty() && i.0.len() <= 256)
            && !result.id.is_empty()
            && result.id.len() <= 256
        {
            inner.state().history.archived_ids.entry(room).or_default().insert(id.0.clone(), result.id.clone());
        }
        return None;
    }
    let asked = result.queryid.as_ref().and_then(|q| inner.state().history.mam_queries.get(&q.0).cloned());
    let Some((room, after_ms)) = asked else {
        tracing::warn!(from = ?outer.map(|f| f.to_string()), "dropping an archive result nobody asked for");
        return None;
    };
    if !outer.as_ref().is_some_and(|f| f.resource().is_none() && f.to_bare().to_string() == room) {
        tracing::warn!(room = %room, from = ?outer.map(|f| f.to_string()), "dropping an archive result not from the room asked");
        return None;
    }
    archived(inner, &room, result, after_ms)
}

/// `<result>` with the forwarded message in the stream's namespace (the
/// archive forwards it as `jabber:client`), read by xmpp-parsers.
fn parse_result(element: Element) -> Result<Result_, tokio_xmpp::parsers::FromElementError> {
    let element = rebuild(element, &|child| {
        if child.is("forwarded", NS_FORWARD) { rebuild(child, &|m| renamespace(m, NS_CLIENT, NS_COMPONENT)) } else { child }
    });
    Result_::try_from(element)
}

/// `e` with each child element passed through `f`.
fn rebuild(mut e: Element, f: &dyn Fn(Element) -> Element) -> Element {
    let mut out = Element::bare(e.name(), e.ns());
    *out.attrs_mut() = e.attrs().clone();
    for node in e.take_nodes() {
        match node {
            Node::Element(child) => {
                out.append_child(f(child));
            }
            Node::Text(t) => out.append_text_node(t),
        }
    }
    out
}

/// One archived message of `room` as what to take: parsed and filtered
/// like a live one (the bridge's own and its ghosts' are not taken; a
/// delivery in doubt found here is one). Read from a time (`after_ms`),
/// what is not newer is not taken: the query's start is to the second.
fn archived(inner: &Inner, room: &str, result: Result_, after_ms: Option<i64>) -> Option<Inbound> {
    let Some(sid) = Some(result.id).filter(|id| !id.is_empty() && id.len() <= 256) else {
        tracing::warn!(room = %room, "dropping an archive result without a usable id");
        return None;
    };
    let now = causeway_core::now_ms();
    let at_ms = result.forwarded.delay.as_ref().map_or(now, |d| d.stamp.0.timestamp_millis()).min(now);
    if after_ms.is_some_and(|after| at_ms <= after) {
        return None;
    }
    let m = result.forwarded.message;
    if m.type_ != MessageType::Groupchat || crate::stanzas::relayed(&m.payloads) {
        return None;
    }
    let from = m.from.clone()?;
    if from.to_bare().to_string() != room {
        tracing::warn!(room = %room, from = %from, "dropping an archived message from outside the room");
        return None;
    }
    let id = m.id.as_ref().map(|i| i.0.clone());
    {
        let mut st = inner.state();
        if let Some(id) = &id
            && st.sent.in_doubt.contains(id)
        {
            // A delivery whose reflection was lost: it is in the room.
            st.sent.found.insert(id.clone(), Some(sid));
            return None;
        }
    }
    let Some(nick) = from.resource().map(|r| r.as_str().to_string()) else {
        // The room speaking for itself: a moderator took a message back.
        return match stanzas::Moderated::find(&m.payloads) {
            Some(Ok(moderated)) => inbound::moderation(inner, room, moderated, &m).into_iter().next().map(|mut incoming| {
                incoming.remote_id = Some(sid);
                incoming.at_ms = Some(at_ms);
                Inbound::CatchUp { incoming, id }
            }),
            Some(Err(e)) => {
                tracing::warn!(room = %room, "dropping a malformed archived moderation: {e}");
                None
            }
            None => None,
        };
    };
    {
        let st = inner.state();
        if nick == inner.options.bot_nick || st.ghost.ghost_nicks.get(room).is_some_and(|n| n.contains(&nick)) {
            return None; // our own
        }
    }
    if m.bodies.is_empty() && !m.subjects.is_empty() {
        return None; // the subject is the room's state, not something said
    }
    let body_text = m.get_best_body_cloned(vec![]).map(|(_, b)| b);
    let size = body_text.as_ref().map_or(0, String::len);
    if size > inner.options.max_stanza_bytes {
        tracing::warn!(room = %room, nick = %nick, size, "dropping an oversized archived message");
        return None;
    }
    inbound::said_while_away(room, &nick, sid, id, body_text, m, at_ms, "the archive")
}

/// The query for one page after `mark`.
fn query(queryid: &str, mark: &Mark) -> Query {
    let form = match (&mark.after, mark.since_ms) {
        (None, Some(ms)) => time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
            .ok()
            .and_then(|t| t.replace_nanosecond(0).ok())
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .map(|start| DataForm::new(DataFormType::Submit, NS_MAM, vec![Field::text_single("start", &start)])),
        _ => None,
    };
    Query {
        queryid: Some(QueryId(queryid.to_string())),
        node: None,
        form,
        set: Some(SetQuery { max: Some(PAGE), after: mark.after.clone(), before: None, index: None }),
        flip_page: false,
    }
}

/// How many of a room's latest messages a look back reads.
const LOOKBACK: usize = 100;

/// Whether a delivery that an earlier run of Causeway may have sent
/// (`Delivery::maybe_sent`) is in the room already: the room's stanza-id of
/// it, if so. A room's archive is looked back at once per run, at its
/// first such delivery: every delivery of an earlier run comes before any
/// of this one in the room's lane, so what the earlier run sent is among
/// the room's latest messages then. `None` also when the room has no
/// archive or it does not answer (the delivery is then sent).
pub(crate) async fn sent_before(inner: &Inner, room: &str, id: &str) -> Option<String> {
    let looked = inner.state().history.archived_ids.contains_key(room);
    if !looked {
        // The bridge must sit in the room to read its archive.
        let deadline = tokio::time::Instant::now() + inner.options.confirm_timeout;
        while !inner.state().rooms.subject_seen.contains(room) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let queryid = causeway_core::new_id();
        inner.state().history.lookbacks.insert(queryid.clone(), room.to_string());
        let query = Query {
            queryid: Some(QueryId(queryid.clone())),
            node: None,
            form: None,
            // The last page: the newest messages.
            set: Some(SetQuery { max: Some(LOOKBACK), after: None, before: Some(String::new()), index: None }),
            flip_page: false,
        };
        let answer = inner.request_within(&inner.bot_jid(), room, true, query.into(), PAGE_TIMEOUT).await;
        let mut st = inner.state();
        st.history.lookbacks.remove(&queryid);
        match answer {
            // Results come before the answer on the stream: all noted now.
            Ok(_) => {
                st.history.archived_ids.entry(room.to_string()).or_default();
            }
            Err(e) => {
                tracing::warn!(room = %room, delivery = id, "cannot look in the room's archive for a delivery an earlier run may have sent; sending it: {e}");
                return None;
            }
        }
    }
    inner.state().history.archived_ids.get(room).and_then(|ids| ids.get(id).cloned())
}

/// How a catch-up from the archive ended.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything after the mark was read.
    Complete { pages: usize },
    /// Not all of it; the rest is read at the next join.
    Incomplete(String),
}

/// Catch `room` up from its archive after `mark`, then tell the submitter
/// (`token` matches the [`Inbound::ArchiveStart`] sent before the join).
pub(crate) async fn catch_up(inner: Arc<Inner>, ctx: BridgeContext, tx: mpsc::Sender<Inbound>, room: String, mark: Mark, token: u64) {
    let outcome = match tokio::time::timeout(MAX_TIME, page_through(&inner, &room, mark, token)).await {
        Ok(o) => o,
        Err(_) => Outcome::Incomplete(format!("not done in {MAX_TIME:?}")),
    };
    match &outcome {
        Outcome::Complete { pages } => tracing::info!(bridge = ctx.name(), room = %room, pages, "caught up from the room's archive"),
        Outcome::Incomplete(why) => {
            tracing::warn!(bridge = ctx.name(), room = %room, "catching up from the room's archive stopped ({why}); the rest is read at the next join");
            ctx.count_rejected("catch_up_incomplete");
        }
    }
    let complete = matches!(outcome, Outcome::Complete { .. });
    // Results already handed on come before this in the queue.
    let _ = tx.send(Inbound::ArchiveEnd { room: room.clone(), token, complete }).await;
    let mut st = inner.state();
    if st.history.catching_up.get(&room) == Some(&token) {
        st.history.catching_up.remove(&room);
    }
}

async fn page_through(inner: &Inner, room: &str, mut mark: Mark, token: u64) -> Outcome {
    // Read from a time: nothing from before it is taken, on any page.
    let mut floor = if mark.after.is_none() { mark.since_ms } else { None };
    // The archive is asked once the bridge sits in the room (so nothing
    // said after the last result is missed: it comes live, held).
    let deadline = tokio::time::Instant::now() + inner.options.confirm_timeout;
    loop {
        {
            let st = inner.state();
            if st.history.catching_up.get(room) != Some(&token) {
                return Outcome::Incomplete("the connection was made again".into());
            }
            if st.rooms.refused.contains(room) {
                return Outcome::Incomplete("the room refused the bridge".into());
            }
            if st.rooms.subject_seen.contains(room) {
                break;
            }
        }
        if tokio::time::Instant::now() > deadline {
            break; // asked all the same
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for page in 0..MAX_PAGES {
        if inner.state().history.catching_up.get(room) != Some(&token) {
            return Outcome::Incomplete("the connection was made again".into());
        }
        let queryid = causeway_core::new_id();
        inner.state().history.mam_queries.insert(queryid.clone(), (room.to_string(), floor));
        let answer = inner.request_within(&inner.bot_jid(), room, true, query(&queryid, &mark).into(), PAGE_TIMEOUT).await;
        inner.state().history.mam_queries.remove(&queryid);
        let fin = match answer {
            Ok(Some(payload)) => match Fin::try_from(payload) {
                Ok(fin) => fin,
                Err(e) => return Outcome::Incomplete(format!("the archive's answer does not parse: {e}")),
            },
            Ok(None) => return Outcome::Incomplete("the archive answered nothing".into()),
            Err(RequestError::Refused(DefinedCondition::ItemNotFound)) if mark.after.is_some() && mark.since_ms.is_some() => {
                // The last id taken is no longer in the archive (expired):
                // from the last look's time instead.
                tracing::warn!(room = %room, after = ?mark.after, "the archive no longer has the last message taken; reading it from the time of the last look");
                mark.after = None;
                floor = mark.since_ms;
                continue;
            }
            Err(e) => return Outcome::Incomplete(format!("the archive refused: {e}")),
        };
        match fin.set.last {
            Some(last) if !fin.complete => {
                if mark.after.as_deref() == Some(last.as_str()) {
                    return Outcome::Incomplete("the archive gave the same page again".into());
                }
                mark.after = Some(last);
            }
            _ => return Outcome::Complete { pages: page + 1 },
        }
    }
    Outcome::Incomplete(format!("more than {MAX_PAGES} pages"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::XmppBridge;
    use causeway_core::Body;

    const ROOM: &str = "ops@conference.example.org";
    const BOT: &str = "causeway@bridge.example.org/causeway";

    fn bridge() -> XmppBridge {
        let options = serde_json::json!({"domain": "bridge.example.org", "secret": "s", "max_stanza_bytes": 1000});
        let b = XmppBridge::from_options(options).unwrap();
        b.inner.state().ghost.ghost_nicks.entry(ROOM.into()).or_default().insert("Ghost".into());
        b.inner.state().history.mam_queries.insert("q1".into(), (ROOM.into(), None));
        // Read from a time: only what is newer.
        b.inner.state().history.mam_queries.insert("q-since".into(), (ROOM.into(), Some(1_735_689_600_000)));
        b
    }

    /// An archive result message from `outer` for query `qid`, archive id `id`, around `inner`.
    fn result(outer: &str, qid: &str, id: &str, inner: &str) -> Message {
        let xml = format!(
            "<message xmlns='jabber:component:accept' from='{outer}' to='{BOT}'><result xmlns='urn:xmpp:mam:2' queryid='{qid}' id='{id}'>\
             <forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='2025-01-01T00:00:00Z'/>{inner}</forwarded></result></message>"
        );
        Message::try_from(xml.parse::<Element>().unwrap()).unwrap()
    }

    fn said(nick: &str, extra: &str) -> String {
        format!(
            "<message xmlns='jabber:client' from='{ROOM}/{nick}' type='groupchat' id='m-{nick}'><body>hi from {nick}</body>{extra}</message>"
        )
    }

    fn taken(b: &XmppBridge, m: Message) -> Option<causeway_core::Incoming> {
        match take_result(&b.inner, m) {
            Some(Inbound::CatchUp { incoming, .. }) => Some(incoming),
            Some(_) => panic!("not a catch-up"),
            None => None,
        }
    }

    #[test]
    fn a_result_is_the_archived_message_under_its_archive_id() {
        let b = bridge();
        let i = taken(&b, result(ROOM, "q1", "a1", &said("Alice", "<unknown xmlns='urn:example:x'/>"))).expect("taken");
        assert_eq!((i.room.as_str(), i.remote_id.as_deref(), i.aliases.as_slice()), (ROOM, Some("a1"), &["m-Alice".to_string()][..]));
        assert_eq!(i.sender.id, format!("{ROOM}/Alice"));
        assert_eq!(i.at_ms, Some(1_735_689_600_000));
        assert!(matches!(&i.body, Body::Message { text, .. } if text.plain == "hi from Alice"), "{:?}", i.body);
        // The same stream namespace as live stanzas works too.
        let component = said("Alice", "").replace("jabber:client", "jabber:component:accept");
        assert!(taken(&b, result(ROOM, "q1", "a2", &component)).is_some());
        // An archived moderation is a retraction under the archive's id.
        let moderation = format!(
            "<message xmlns='jabber:client' from='{ROOM}' type='groupchat'><apply-to xmlns='urn:xmpp:fasten:0' id='s9'>\
             <moderated xmlns='urn:xmpp:message-moderate:0' by='{ROOM}/Mod'><retract xmlns='urn:xmpp:message-retract:0'/></moderated></apply-to></message>"
        );
        let i = taken(&b, result(ROOM, "q1", "a3", &moderation)).expect("a moderation");
        assert_eq!((i.body, i.remote_id.as_deref()), (Body::Retract { target: "s9".into(), moderated: true }, Some("a3")));
    }

    #[test]
    fn a_look_back_notes_what_was_sent_and_takes_nothing() {
        let b = bridge();
        b.inner.state().history.lookbacks.insert("lb".into(), ROOM.into());
        // Our ghost's message of an earlier run, under its delivery id.
        let ours = "<message xmlns='jabber:client' from='ops@conference.example.org/Ghost' type='groupchat' id='delivery-7'><body>hi</body></message>";
        assert!(take_result(&b.inner, result(ROOM, "lb", "s7", ours)).is_none(), "noted, not taken");
        // Someone else's answer to a look back is not believed; a message without an id notes nothing.
        assert!(take_result(&b.inner, result("mallory@evil.example", "lb", "s8", &ours.replace("delivery-7", "delivery-8"))).is_none());
        assert!(take_result(&b.inner, result(ROOM, "lb", "s9", &said("Alice", "").replace(" id='m-Alice'", ""))).is_none());
        assert!(take_result(&b.inner, result(ROOM, "lb", &"x".repeat(300), &ours.replace("delivery-7", "delivery-10"))).is_none());
        let st = b.inner.state();
        let ids = st.history.archived_ids.get(ROOM).expect("noted");
        assert_eq!(ids.get("delivery-7").map(String::as_str), Some("s7"));
        assert_eq!(ids.len(), 1, "{ids:?}");
    }

    #[test]
    fn hostile_or_foreign_results_are_dropped() {
        let b = bridge();
        let alice = said("Alice", "");
        let huge =
            format!("<message xmlns='jabber:client' from='{ROOM}/Alice' type='groupchat'><body>{}</body></message>", "x".repeat(5000));
        let long_id = "i".repeat(300);
        for (outer, qid, id, inner, why) in [
            ("mallory@evil.example", "q1", "a1", alice.as_str(), "from someone other than the room"),
            ("other@conference.example.org", "q1", "a1", alice.as_str(), "from another room"),
            (&format!("{ROOM}/Alice") as &str, "q1", "a1", alice.as_str(), "from an occupant"),
            (ROOM, "q-unknown", "a1", alice.as_str(), "for a query nobody sent"),
            (ROOM, "q1", "a1", &said("Alice", "").replace(ROOM, "other@conference.example.org"), "inner from outside the room"),
            (ROOM, "q1", "a1", &said("Alice", "").replace(ROOM, "mallory@evil.example"), "inner from a user"),
            (ROOM, "q1", "", alice.as_str(), "no archive id"),
            (ROOM, "q1", &long_id, alice.as_str(), "an archive id too long to be one"),
            (ROOM, "q1", "a1", &said("Ghost", ""), "our own ghost"),
            (ROOM, "q1", "a1", &said("Causeway", ""), "the bridge itself"),
            (ROOM, "q1", "a1", &said("Alice", "").replace("groupchat", "chat"), "not group chat"),
            (ROOM, "q1", "a1", &huge, "oversized"),
            (
                ROOM,
                "q1",
                "a1",
                &format!("<message xmlns='jabber:client' from='{ROOM}/Alice' type='groupchat'><subject>s</subject></message>"),
                "a subject",
            ),
            (
                ROOM,
                "q1",
                "a1",
                &format!(
                    "<message xmlns='jabber:client' from='{ROOM}/Alice' type='groupchat'><composing xmlns='http://jabber.org/protocol/chatstates'/></message>"
                ),
                "typing",
            ),
            (ROOM, "q1", "a1", "<message xmlns='jabber:client' type='groupchat'><body>x</body></message>", "no inner from"),
            (ROOM, "q1", "a1", "<presence xmlns='jabber:client'/>", "not a message"),
            (ROOM, "q1", "a1", "", "nothing forwarded"),
            (
                ROOM,
                "q1",
                "a1",
                &format!(
                    "<message xmlns='jabber:client' from='{ROOM}/Alice' type='groupchat'><retract xmlns='urn:xmpp:message-retract:1'/></message>"
                ),
                "malformed retraction",
            ),
        ] {
            assert!(taken(&b, result(outer, qid, id, inner)).is_none(), "{why}");
        }
        // A result without its query id, or garbage inside <result>.
        for bad in [
            format!(
                "<message xmlns='jabber:component:accept' from='{ROOM}' to='{BOT}'><result xmlns='urn:xmpp:mam:2' id='a1'><forwarded xmlns='urn:xmpp:forward:0'>{alice}</forwarded></result></message>"
            ),
            format!(
                "<message xmlns='jabber:component:accept' from='{ROOM}' to='{BOT}'><result xmlns='urn:xmpp:mam:2' queryid='q1' id='a1'><junk/>{}</result></message>",
                "<deep>".repeat(50) + &"</deep>".repeat(50)
            ),
            format!(
                "<message xmlns='jabber:component:accept' from='{ROOM}' to='{BOT}'><result xmlns='urn:xmpp:mam:2' queryid='q1' id='a1'><forwarded xmlns='urn:xmpp:forward:0'><delay xmlns='urn:xmpp:delay' stamp='not a time'/>{alice}</forwarded></result></message>"
            ),
        ] {
            let m = Message::try_from(bad.parse::<Element>().unwrap()).unwrap();
            assert!(is_result(&m));
            assert!(take_result(&b.inner, m).is_none(), "{bad:.200}");
        }
    }

    #[test]
    fn read_from_a_time_only_what_is_newer_is_taken() {
        let b = bridge();
        assert!(taken(&b, result(ROOM, "q-since", "a1", &said("Alice", ""))).is_none(), "as old as the start");
        let newer = result(ROOM, "q-since", "a2", &said("Alice", "")).clone();
        let mut v = Vec::new();
        Element::from(newer).write_to(&mut v).unwrap();
        let xml = String::from_utf8(v).unwrap().replace("2025-01-01T00:00:00Z", "2025-01-01T00:00:01Z");
        assert!(taken(&b, Message::try_from(xml.parse::<Element>().unwrap()).unwrap()).is_some());
    }

    #[test]
    fn a_delivery_in_doubt_found_in_the_archive_is_confirmed_not_taken() {
        let b = bridge();
        b.inner.state().sent.in_doubt.insert("m-Ghost2".into());
        let mine = said("Ghost2", "");
        assert!(taken(&b, result(ROOM, "q1", "a7", &mine)).is_none());
        assert_eq!(b.inner.state().sent.found.get("m-Ghost2"), Some(&Some("a7".to_string())));
    }

    #[test]
    fn a_stamp_in_the_future_is_now() {
        let b = bridge();
        let m = result(ROOM, "q1", "a1", &said("Alice", "")).clone();
        let mut e = Element::from(m);
        let xml = {
            let mut v = Vec::new();
            e.write_to(&mut v).unwrap();
            String::from_utf8(v).unwrap().replace("2025-01-01T00:00:00Z", "2999-01-01T00:00:00Z")
        };
        e = xml.parse().unwrap();
        let i = taken(&b, Message::try_from(e).unwrap()).unwrap();
        assert!(i.at_ms.unwrap() <= causeway_core::now_ms());
    }

    #[test]
    fn queries_page_after_the_last_id_else_from_a_time() {
        let xml = |q: Query| {
            let mut v = Vec::new();
            Element::from(q).write_to(&mut v).unwrap();
            String::from_utf8(v).unwrap()
        };
        let after = xml(query("q1", &Mark { after: Some("s-41".into()), since_ms: Some(1_735_689_600_000) }));
        assert!(after.contains("queryid='q1'") && after.contains("<after>s-41</after>") && after.contains("<max>100</max>"), "{after}");
        assert!(!after.contains("jabber:x:data"), "the id alone decides: {after}");
        let since = xml(query("q2", &Mark { after: None, since_ms: Some(1_735_689_600_500) }));
        assert!(since.contains("urn:xmpp:mam:2") && since.contains("var='start'") && since.contains("2025-01-01T00:00:00Z"), "{since}");
        assert!(!since.contains("<after>"), "{since}");
    }
}
