//! What the stores share: how an event and an id's kind are stored, what
//! the search index keeps of a message, how many matches search ranks.

use causeway_core::{Event, IdKind};

use super::{AuditEntry, OutboxItem, OutboxRow, StoreError, StoredKind, StoredPortal};
use crate::archive::export::ExportLog;
use crate::archive::retention::Hold;

pub(super) fn parse_event(id: &str, json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(id.to_string(), e))
}

/// How `message_map.kind` stores each [`IdKind`]: the one place that says it
/// (the schema is in docs/architecture.md).
pub(super) const fn kind_code(kind: IdKind) -> i64 {
    match kind {
        IdKind::Origin => 0,
        IdKind::DeliveryKey => 1,
        IdKind::Reported => 2,
        IdKind::Alias => 3,
    }
}

/// The [`IdKind`] a stored `message_map.kind` stands for.
pub(super) fn kind_of(code: i64) -> Option<IdKind> {
    [IdKind::Origin, IdKind::DeliveryKey, IdKind::Reported, IdKind::Alias].into_iter().find(|k| kind_code(*k) == code)
}

/// A message's row of the search index.
pub(super) struct Indexed {
    pub(super) text: String,
    pub(super) folded: String,
    pub(super) files: String,
}

impl Indexed {
    pub(super) fn of(text: &str, attachments: &[causeway_core::Attachment]) -> Indexed {
        let files: Vec<&str> = attachments.iter().filter_map(|a| a.name.as_deref()).collect();
        let names = files.join(" ");
        let folded = [crate::archive::folded(text), crate::archive::folded(&names)];
        Indexed { text: text.to_string(), folded: folded.into_iter().flatten().collect::<Vec<_>>().join(" "), files: names }
    }
}

/// Matches a search ranks, newest first: beyond them, a word in every
/// tenth message would cost a ranking of the whole archive (BENCHMARKS.md).
pub const RANKED_AMONG: u32 = 10_000;

/// A row of either store, read by column name: the stores name their
/// columns alike and keep them as text and 64-bit integers.
pub(super) trait Cols {
    fn text(&self, column: &str) -> String;
    fn maybe_text(&self, column: &str) -> Option<String>;
    fn int(&self, column: &str) -> i64;
    fn maybe_int(&self, column: &str) -> Option<i64>;
}

macro_rules! cols {
    ($row:ty) => {
        impl Cols for $row {
            fn text(&self, column: &str) -> String {
                sqlx::Row::get(self, column)
            }
            fn maybe_text(&self, column: &str) -> Option<String> {
                sqlx::Row::get(self, column)
            }
            fn int(&self, column: &str) -> i64 {
                sqlx::Row::get(self, column)
            }
            fn maybe_int(&self, column: &str) -> Option<i64> {
                sqlx::Row::get(self, column)
            }
        }
    };
}
cols!(sqlx::sqlite::SqliteRow);
cols!(sqlx::postgres::PgRow);

fn count(n: i64) -> u64 {
    n.max(0) as u64
}

fn attempts(n: i64) -> u32 {
    n.try_into().unwrap_or(u32::MAX)
}

/// An outbox row for operators.
pub(super) fn outbox_row(r: &impl Cols) -> OutboxRow {
    OutboxRow {
        seq: r.int("seq"),
        delivery_id: r.text("delivery_id"),
        event_id: r.text("event_id"),
        portal: r.text("portal"),
        kind: r.text("kind"),
        bridge: r.text("bridge"),
        room: r.text("room"),
        attempts: attempts(r.int("attempts")),
        enqueued_ms: r.int("enqueued_ms"),
        next_attempt_ms: r.maybe_int("next_attempt_ms"),
        last_error: r.maybe_text("last_error"),
        recipient: r.maybe_text("recipient"),
    }
}

/// A pending delivery with its event (`event_id`, `event`).
pub(super) fn outbox_item(r: &impl Cols) -> Result<OutboxItem, StoreError> {
    Ok(OutboxItem {
        seq: r.int("seq"),
        delivery_id: r.text("delivery_id"),
        attempts: attempts(r.int("attempts")),
        enqueued_ms: r.int("enqueued_ms"),
        first_failed_ms: r.maybe_int("first_failed_ms"),
        recipient: r.maybe_text("recipient"),
        event: parse_event(&r.text("event_id"), &r.text("event"))?,
    })
}

/// A row of `broadcasts`, as it was asked for.
pub(super) fn requested_of(r: &impl Cols) -> Result<crate::broadcast::Requested, StoreError> {
    let id = r.text("id");
    Ok(crate::broadcast::Requested {
        request: serde_json::from_str(&r.text("request")).map_err(|e| StoreError::Corrupt(id.clone(), e))?,
        id,
        requested_ms: r.int("requested_ms"),
        requested_by: r.text("requested_by"),
    })
}

/// A row of `broadcasts` with its counts (`total`, `unreachable`,
/// `pending`, `failed`, `dropped`): a delivery that left the outbox was
/// delivered.
pub(super) fn broadcast_summary(r: &impl Cols) -> Result<crate::broadcast::Summary, StoreError> {
    let (total, unreachable, pending, failed, dropped) =
        (r.int("total"), r.int("unreachable"), r.int("pending"), r.int("failed"), r.int("dropped"));
    Ok(crate::broadcast::Summary {
        requested: requested_of(r)?,
        event_id: r.maybe_text("event_id"),
        planned_ms: r.maybe_int("planned_ms"),
        error: r.maybe_text("error"),
        counts: crate::broadcast::Counts {
            total: count(total),
            delivered: count(total - unreachable - pending - failed - dropped),
            pending: count(pending),
            failed: count(failed + dropped),
            unreachable: count(unreachable),
        },
    })
}

/// A recipient of a broadcast with its outbox row (`state`, `attempts`,
/// `last_error`) and its dropped row (`dropped`, `dropped_error`), if any.
pub(super) fn recipient_status(r: &impl Cols) -> crate::broadcast::RecipientStatus {
    use crate::broadcast::RecipientState;
    let delivery_id = r.maybe_text("delivery_id");
    let (state, error) = match (&delivery_id, r.maybe_int("state"), r.maybe_text("dropped")) {
        (None, _, _) => (RecipientState::Unreachable, r.maybe_text("note")),
        (Some(_), _, Some(reason)) => {
            let e = r.maybe_text("dropped_error");
            (RecipientState::Failed, Some(format!("dropped: {reason}{}", e.map(|e| format!(" ({e})")).unwrap_or_default())))
        }
        (Some(_), Some(2), None) => (RecipientState::Failed, r.maybe_text("last_error")),
        (Some(_), Some(_), None) => (RecipientState::Pending, r.maybe_text("last_error")),
        (Some(_), None, None) => (RecipientState::Delivered, None),
    };
    crate::broadcast::RecipientStatus {
        person: r.maybe_text("person"),
        bridge: r.maybe_text("bridge"),
        room: r.maybe_text("room"),
        account: r.maybe_text("recipient"),
        delivery_id,
        state,
        attempts: r.maybe_int("attempts").unwrap_or_default() as u32,
        error,
    }
}

/// A row of `archive_hold`.
pub(super) fn hold_of(r: &impl Cols) -> Hold {
    Hold {
        id: r.int("id"),
        portal: r.maybe_text("portal"),
        person: r.maybe_text("person"),
        reason: r.text("reason"),
        set_by: r.text("set_by"),
        set_ms: r.int("set_ms"),
        released_ms: r.maybe_int("released_ms"),
        released_by: r.maybe_text("released_by"),
    }
}

/// A row of `archive_export`.
pub(super) fn export_log(r: &impl Cols) -> ExportLog {
    ExportLog {
        at_ms: r.int("at_ms"),
        by: r.text("by"),
        format: r.text("format"),
        portals: serde_json::from_str(&r.text("portals")).unwrap_or_default(),
        person: r.maybe_text("person"),
        since_ms: r.maybe_int("since_ms"),
        until_ms: r.maybe_int("until_ms"),
        events: count(r.int("events")),
        output: r.text("output"),
    }
}

/// A row of `portals`.
pub(super) fn stored_portal(r: &impl Cols) -> Result<StoredPortal, StoreError> {
    let id = r.text("id");
    let links = serde_json::from_str(&r.text("links")).map_err(|e| StoreError::Corrupt(format!("portal {id}"), e))?;
    let kind = if r.int("kind") == 1 { StoredKind::Console } else { StoredKind::Direct };
    Ok(StoredPortal { id, created_ms: r.int("created_ms"), links, kind })
}

/// A row of `admin_audit`.
pub(super) fn audit_entry(r: &impl Cols) -> AuditEntry {
    AuditEntry {
        id: r.int("id"),
        at_ms: r.int("at_ms"),
        who: r.text("who"),
        action: r.text("action"),
        target: r.text("target"),
        detail: r.text("detail"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_id_kind_has_its_own_stored_code_as_the_schema_says() {
        let all = [IdKind::Origin, IdKind::DeliveryKey, IdKind::Reported, IdKind::Alias];
        let codes: Vec<i64> = all.iter().map(|k| kind_code(*k)).collect();
        assert_eq!(codes, [0, 1, 2, 3], "stored in databases: never renumber");
        for k in all {
            assert_eq!(kind_of(kind_code(k)), Some(k));
        }
        assert_eq!(kind_of(4), None);
    }
}
