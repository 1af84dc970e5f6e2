//! Reconciliation: take what the homeserver stored in a linked room but
//! never pushed.
//!
//! A homeserver can strand an application service transaction: Synapse,
//! finishing the replay of what it queued during an outage, stores a
//! transaction made meanwhile without sending it, and sends it only at the
//! next outage. Its events are in the room all the same, so the bridge reads
//! each linked room's recent timeline as its own user and submits every
//! event there; the router recognises what it has by event id, so only
//! what was missed becomes new.
//!
//! When: a few times after start and after the homeserver answers again
//! (the stranded transaction is made *after* recovery), and at once when a
//! transaction's number skips one (Synapse numbers them 1, 2, 3 …) — then
//! before that transaction's own events, so what was found late still comes
//! before what follows it. Bounded: the timeline is read back only to the
//! room's mark (the newest event reconciliation has seen there), at most
//! [`MAX_PAGES`] pages, and a quiet room costs one small request.

use std::time::Duration;

use causeway_core::BridgeContext;
use ruma::events::AnyTimelineEvent;
use ruma::serde::Raw;
use ruma::{OwnedRoomId, RoomId};

use crate::Inner;

/// Where a room's mark is kept in the bridge's state.
pub(crate) const MARK_KEY: &str = "mark:";
/// Where the number of the last transaction taken is kept.
pub(crate) const TXN_KEY: &str = "last_txn";
/// The first page is small: in a quiet room it holds the mark.
const FIRST_PAGE: u32 = 10;
const PAGE: u32 = 100;
/// Pages read back at most per room and pass.
pub(crate) const MAX_PAGES: usize = 5;
/// Passes after start and after the homeserver answers again.
pub(crate) const PASSES: [Duration; 3] = [Duration::from_secs(3), Duration::from_secs(15), Duration::from_secs(60)];

/// Whether transaction `txn` leaves out one after `last` (both numbers, as
/// Synapse gives them; other homeservers' ids are not compared).
pub(crate) fn skips(last: Option<u64>, txn: &str) -> bool {
    match (last, txn.parse::<u64>()) {
        (Some(last), Ok(n)) => n > last.saturating_add(1),
        _ => false,
    }
}

/// Events of a page that are newer than the mark (the page is newest
/// first), and whether the mark was among them.
fn newer_than_mark(page: Vec<Raw<AnyTimelineEvent>>, mark: &str) -> (Vec<Raw<AnyTimelineEvent>>, bool) {
    let mut newer = Vec::with_capacity(page.len());
    for raw in page {
        if raw.get_field::<String>("event_id").ok().flatten().as_deref() == Some(mark) {
            return (newer, true);
        }
        newer.push(raw);
    }
    (newer, false)
}

impl Inner {
    /// The marks stored for linked rooms, read once at start.
    pub(crate) async fn load_marks(&self, ctx: &BridgeContext) {
        let rooms: Vec<OwnedRoomId> = self.state().links.keys().cloned().collect();
        for room in rooms {
            if let Ok(Some(mark)) = ctx.load_state(&format!("{MARK_KEY}{room}")).await {
                self.state().marks.insert(room, mark);
            }
        }
        if let Ok(Some(n)) = ctx.load_state(TXN_KEY).await {
            self.state().last_txn = n.parse().ok();
        }
    }

    /// A pushed event in a linked room: the room's first one gives it its
    /// mark (nothing before it is reconciled: that was before Causeway).
    pub(crate) async fn note_pushed(&self, ctx: &BridgeContext, room: &RoomId, event_id: &str) {
        let first = {
            let mut st = self.state();
            if st.marks.contains_key(room) {
                false
            } else {
                st.marks.insert(room.to_owned(), event_id.to_string());
                true
            }
        };
        if first && let Err(e) = ctx.save_state(&format!("{MARK_KEY}{room}"), event_id).await {
            tracing::warn!(bridge = ctx.name(), room = %room, "cannot store the room's mark: {e}");
        }
    }
}

/// What `room`'s timeline holds after its mark, oldest first, with the
/// newest event's id (the room's next mark, see [`Inner::set_mark`]).
/// Nothing when the room has no mark, nothing is newer, or the homeserver
/// does not answer now (the next pass tries again).
pub(crate) async fn unseen(inner: &Inner, ctx: &BridgeContext, room: &RoomId) -> Option<(Vec<Raw<AnyTimelineEvent>>, String)> {
    let mark = inner.state().marks.get(room).cloned()?;
    let reader = inner.reader_of(room)?;
    let mut events = Vec::new();
    let (mut from, mut reached) = (None::<String>, false);
    for page in 0..MAX_PAGES {
        let limit = if page == 0 { FIRST_PAGE } else { PAGE };
        let (chunk, end) = match inner.client.messages_back(room.as_str(), from.as_deref(), limit, reader.as_deref()).await {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(bridge = ctx.name(), room = %room, "cannot read the room's timeline to reconcile: {e}");
                return None;
            }
        };
        let full = chunk.len() as u32 >= limit;
        let (newer, hit) = newer_than_mark(chunk, &mark);
        events.extend(newer);
        if hit {
            reached = true;
            break;
        }
        match end {
            Some(e) if full && from.as_deref() != Some(e.as_str()) => from = Some(e),
            // The room's beginning.
            _ => {
                reached = true;
                break;
            }
        }
    }
    if !reached {
        tracing::warn!(
            bridge = ctx.name(), room = %room, checked = events.len(),
            "more happened since the room was last reconciled than one pass reads; only the newest events were checked"
        );
    }
    let newest = events.first().and_then(|r| r.get_field::<String>("event_id").ok().flatten())?;
    events.reverse();
    Some((events, newest))
}

impl Inner {
    /// Everything in `room` up to `event_id` has been checked.
    pub(crate) async fn set_mark(&self, ctx: &BridgeContext, room: &RoomId, event_id: &str) {
        self.state().marks.insert(room.to_owned(), event_id.to_string());
        if let Err(e) = ctx.save_state(&format!("{MARK_KEY}{room}"), event_id).await {
            tracing::warn!(bridge = ctx.name(), room = %room, "cannot store the room's mark: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(id: &str) -> Raw<AnyTimelineEvent> {
        Raw::from_json(serde_json::value::to_raw_value(&serde_json::json!({"event_id": id, "type": "m.room.message"})).unwrap())
    }

    #[test]
    fn a_skipped_transaction_number_is_seen() {
        assert!(!skips(None, "5"));
        assert!(!skips(Some(4), "5"));
        assert!(!skips(Some(5), "5"), "the same again");
        assert!(!skips(Some(9), "5"), "an older one resent");
        assert!(skips(Some(506), "508"));
        // Not numbers: nothing to compare.
        assert!(!skips(Some(1), "abc"));
        assert!(!skips(Some(1), "-3"));
        assert!(!skips(Some(u64::MAX), "18446744073709551615"));
        assert!(!skips(Some(1), "99999999999999999999999"));
    }

    #[test]
    fn a_page_is_read_down_to_the_mark() {
        let ids = |v: &[Raw<AnyTimelineEvent>]| v.iter().map(|r| r.get_field::<String>("event_id").unwrap().unwrap()).collect::<Vec<_>>();
        let (newer, hit) = newer_than_mark(vec![raw("$c"), raw("$b"), raw("$a")], "$b");
        assert!(hit);
        assert_eq!(ids(&newer), ["$c"]);
        let (newer, hit) = newer_than_mark(vec![raw("$c"), raw("$b")], "$z");
        assert!(!hit);
        assert_eq!(ids(&newer), ["$c", "$b"]);
        // An event without an id (hostile or broken) is kept for the parser to refuse.
        let odd = Raw::from_json(serde_json::value::to_raw_value(&serde_json::json!({"event_id": 5})).unwrap());
        let (newer, hit) = newer_than_mark(vec![odd, raw("$m")], "$m");
        assert!(hit);
        assert_eq!(newer.len(), 1);
    }
}
