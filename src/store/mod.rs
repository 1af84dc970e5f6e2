//! Durable state: archive, message map, outbox, bridge state.
//!
//! The router and the outbox talk to [`Store`] only: SQLite (`sqlite`, the
//! default) and PostgreSQL (`postgres`) implement it.

use std::collections::HashMap;

use async_trait::async_trait;
use causeway_core::{Committed, Event, EventId, IdKind};

mod common;
pub mod postgres;
pub mod sqlite;
#[cfg(test)]
mod tests;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored event {0} is not readable: {1}")]
    Corrupt(String, serde_json::Error),
}

/// A network's message id, scoped to its bridge and room.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RemoteKey {
    pub bridge: String,
    pub room: String,
    pub remote_id: String,
}

/// What the message map knows of a [`RemoteKey`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapHit {
    pub event_id: EventId,
    /// The id came in from the network (true) or is one of our deliveries (false).
    pub origin: bool,
    /// Who said the event (where it is archived).
    pub author: Option<Author>,
    /// The root of the thread the event is in, if it is in one.
    pub thread: Option<EventId>,
}

/// Who said an archived event: their account where it came from, and the
/// directory's person when there was one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Author {
    pub bridge: String,
    pub sender: String,
    pub person: Option<String>,
}

/// One accepted event, as committed in one transaction with its deliveries.
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub event: Event,
    /// The origin's id for the event (the event id itself when the network has none).
    pub origin_key: RemoteKey,
    /// Other ids of the event on its origin (same bridge and room).
    pub aliases: Vec<String>,
    pub deliveries: Vec<NewDelivery>,
}

/// Where a committed event went: its archive sequence number, and the
/// outbox sequence number of each of its deliveries (in their order; empty
/// if the store could not tell, and the lanes then read their rows back).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stored {
    pub seq: i64,
    pub outbox: Vec<i64>,
}

#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub id: String,
    pub bridge: String,
    pub room: String,
    /// For this recipient of the room alone: a person's account, in
    /// [`causeway_core::PEOPLE_ROOM`] (a broadcast).
    pub recipient: Option<String>,
}

/// A pending delivery with its event, as an outbox lane works on it.
#[derive(Clone, Debug)]
pub struct OutboxItem {
    pub seq: i64,
    pub delivery_id: String,
    pub attempts: u32,
    pub enqueued_ms: i64,
    /// When the first attempt failed (`outbox.give_up_after` counts from it).
    pub first_failed_ms: Option<i64>,
    /// For one recipient of the room only (see [`Store::dead_letter_recipient`]).
    pub recipient: Option<String>,
    pub event: Event,
}

/// A delivery the target accepted.
#[derive(Clone, Debug)]
pub struct Completion {
    pub seq: i64,
    pub delivery_id: String,
    pub event_id: EventId,
    pub bridge: String,
    pub room: String,
    /// The id the network gave the message, when it is not the delivery id.
    pub remote_id: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboxState {
    Pending,
    Dead,
}

/// An outbox row for operators (`causeway outbox`).
#[derive(Clone, Debug, serde::Serialize)]
pub struct OutboxRow {
    pub seq: i64,
    pub delivery_id: String,
    pub event_id: String,
    pub portal: String,
    pub kind: String,
    pub bridge: String,
    pub room: String,
    pub attempts: u32,
    pub enqueued_ms: i64,
    pub next_attempt_ms: Option<i64>,
    pub last_error: Option<String>,
    /// Set for a dead letter of one recipient of the room.
    pub recipient: Option<String>,
}

/// A portal opened at run time: a direct conversation, or one made in the
/// console.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredPortal {
    pub id: String,
    pub created_ms: i64,
    pub links: Vec<StoredLink>,
    pub kind: StoredKind,
}

/// What made a run-time portal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredKind {
    Direct,
    Console,
}

/// An admin action, as the audit log keeps it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct AuditEntry {
    pub id: i64,
    pub at_ms: i64,
    /// The name of the admin token.
    pub who: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

/// Per (bridge, room): what waits in the outbox.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LaneDepth {
    pub pending: u64,
    pub dead: u64,
    /// When the oldest pending row was queued.
    pub oldest_pending_ms: Option<i64>,
}

#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoredLink {
    pub bridge: String,
    pub room: String,
}

/// Per-bridge outbox counts.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct OutboxDepth {
    pub pending: u64,
    pub dead: u64,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// Search the archive's messages, best first, each with the messages
    /// around it (docs/archive.md).
    async fn search(&self, query: &crate::archive::SearchQuery) -> Result<Vec<crate::archive::Hit>, StoreError>;
    /// The portals the archive holds events of; with `person` (a person
    /// or `bridge:id`), those where they said something.
    async fn archived_portals(&self, person: Option<&str>) -> Result<Vec<String>, StoreError>;
    /// Attachments of archived messages waiting to be fetched for the
    /// archive (their next try due by `now_ms`), oldest first.
    async fn files_waiting(&self, now_ms: i64, limit: u32) -> Result<Vec<crate::archive::files::Waiting>, StoreError>;
    /// What became of attachment `n` of the message at `seq`; whether it
    /// was kept with a content new to the archive.
    async fn note_file(&self, seq: i64, n: i64, outcome: &crate::archive::files::Outcome) -> Result<bool, StoreError>;
    /// Whether the archive keeps a file of this content.
    async fn blob_known(&self, sha256: &str) -> Result<bool, StoreError>;
    /// Bytes of the files kept, each content once.
    async fn file_bytes(&self) -> Result<u64, StoreError>;
    /// Retention: delete at most `limit` events of `portal` said before
    /// `before_ms` (none a hold covers, none an outbox row needs) with their
    /// search entries, message-map rows and files, in one transaction.
    async fn prune(&self, portal: &str, before_ms: i64, limit: u32) -> Result<crate::archive::retention::Pruned, StoreError>;
    /// Delete `bridge`'s per-message state saved before `before_ms`; how many.
    async fn prune_message_state(&self, bridge: &str, before_ms: i64) -> Result<u64, StoreError>;
    async fn add_hold(&self, hold: &crate::archive::retention::NewHold) -> Result<crate::archive::retention::Hold, StoreError>;
    /// Holds in force, or all of them with those released.
    async fn holds(&self, released_too: bool) -> Result<Vec<crate::archive::retention::Hold>, StoreError>;
    /// Release a hold in force; it as it is now, or none such.
    async fn release_hold(&self, id: i64, by: &str) -> Result<Option<crate::archive::retention::Hold>, StoreError>;
    async fn archive_stats(&self) -> Result<crate::archive::retention::Stats, StoreError>;
    /// Note an export made (the audit of who took what).
    async fn log_export(&self, export: &crate::archive::export::ExportLog) -> Result<(), StoreError>;
    /// The latest exports, newest first.
    async fn exports(&self, limit: u32) -> Result<Vec<crate::archive::export::ExportLog>, StoreError>;
    /// The `seq` of the latest archived event (0 when none).
    async fn archive_seq(&self) -> Result<i64, StoreError>;
    /// How many events of `portal` fall in `range`.
    async fn count_events(&self, portal: &str, range: crate::archive::export::Range) -> Result<u64, StoreError>;
    /// For an export: `portal`'s events in `range` after `after_seq`, in
    /// order, messages with their latest text and reactions.
    async fn export_page(
        &self,
        portal: &str,
        range: crate::archive::export::Range,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<crate::archive::export::Exported>, StoreError>;
    /// Look up many network ids at once.
    async fn lookup_remotes(&self, keys: &[RemoteKey]) -> Result<HashMap<RemoteKey, MapHit>, StoreError>;
    /// The id of `event_id` on (bridge, room) that references should use:
    /// the one the network reported, else the origin's id, else our delivery
    /// id, else an alias.
    async fn remote_for(&self, event_id: &str, bridge: &str, room: &str) -> Result<Option<String>, StoreError>;
    /// Every id of the message `remote_id` stands for on (bridge, room).
    async fn ids_of(&self, bridge: &str, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, StoreError>;
    /// Archive, map and enqueue a batch in ONE transaction. Returns each
    /// event's sequence numbers, in the batch's order.
    async fn commit(&self, batch: &[NewEvent]) -> Result<Vec<Stored>, StoreError>;
    /// A broadcast's event with its deliveries, its recipients and its plan,
    /// in one transaction.
    async fn commit_broadcast(&self, event: &NewEvent, planned: &crate::broadcast::Planned) -> Result<Stored, StoreError>;
    /// A broadcast asked for, to be planned by the daemon.
    async fn request_broadcast(&self, b: &crate::broadcast::Requested) -> Result<(), StoreError>;
    /// A broadcast that cannot be planned, and why.
    async fn refuse_broadcast(&self, id: &str, error: &str) -> Result<(), StoreError>;
    /// Broadcasts asked for and not planned yet, oldest first.
    async fn unplanned_broadcasts(&self) -> Result<Vec<crate::broadcast::Requested>, StoreError>;
    /// Broadcasts with their counts, newest first (`id`: that one alone).
    async fn broadcasts(&self, id: Option<&str>, limit: u32) -> Result<Vec<crate::broadcast::Summary>, StoreError>;
    /// Each recipient of a broadcast, with where its delivery stands.
    async fn broadcast_recipients(&self, id: &str) -> Result<Vec<crate::broadcast::RecipientStatus>, StoreError>;
    /// Pending deliveries of one lane after `after_seq`, in order.
    async fn pending(&self, bridge: &str, room: &str, after_seq: i64, limit: u32) -> Result<Vec<OutboxItem>, StoreError>;
    /// Lanes with pending rows after `after_seq` (rows another process
    /// queued, e.g. `causeway outbox retry`), with their highest seq.
    async fn lanes_after(&self, after_seq: i64) -> Result<Vec<(String, String, i64)>, StoreError>;
    /// The highest outbox sequence number ever used.
    async fn max_outbox_seq(&self) -> Result<i64, StoreError>;
    /// Mark deliveries done and map the ids the networks reported.
    async fn complete(&self, done: &[Completion]) -> Result<(), StoreError>;
    /// Remember a failed attempt (for operators; the lane keeps retrying).
    async fn record_failure(&self, seq: i64, attempts: u32, next_attempt_ms: i64, error: &str) -> Result<(), StoreError>;
    /// Give up on a delivery: it stays as a dead letter until requeued.
    async fn dead_letter(&self, seq: i64, attempts: u32, error: &str) -> Result<(), StoreError>;
    /// Pending and dead counts per target bridge.
    async fn outbox_depths(&self) -> Result<HashMap<String, OutboxDepth>, StoreError>;
    async fn list_outbox(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxRow>, StoreError>;
    /// Like `list_outbox`, only rows of `bridge` and `room` where given,
    /// after `after_seq`.
    async fn find_outbox(
        &self,
        state: OutboxState,
        bridge: Option<&str>,
        room: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError>;
    /// Pending and dead counts per (bridge, room).
    async fn lane_depths(&self) -> Result<HashMap<(String, String), LaneDepth>, StoreError>;
    /// Give up on a dead letter for good: it leaves the outbox and is noted
    /// with `reason` and `by` (its event stays in the archive). False when
    /// there is no such dead letter.
    async fn drop_dead_letter(&self, delivery_id: &str, reason: &str, by: &str) -> Result<bool, StoreError>;
    /// Note an admin action in the audit log.
    async fn audit(&self, who: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError>;
    /// The audit log, newest first, before `before_id` (when given).
    async fn audit_log(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError>;
    /// Forget a run-time portal; false when there was none of this id.
    async fn delete_portal(&self, id: &str) -> Result<bool, StoreError>;
    /// Put a dead letter back at the end of its lane (same delivery id).
    async fn requeue(&self, delivery_id: &str) -> Result<bool, StoreError>;
    /// A dead letter for one recipient of a room's delivery (the room took
    /// the rest); false when it is there already (the delivery was retried).
    async fn dead_letter_recipient(
        &self,
        event_id: &str,
        bridge: &str,
        room: &str,
        delivery_id: &str,
        recipient: &str,
        error: &str,
    ) -> Result<bool, StoreError>;
    /// Put every dead letter (of `bridge`, of `room`, where given) back at
    /// the end of its lane, in its order; how many.
    async fn requeue_matching(&self, bridge: Option<&str>, room: Option<&str>) -> Result<u64, StoreError>;
    async fn history(&self, portal: &str, after_seq: i64, limit: u32) -> Result<Vec<Committed>, StoreError>;
    async fn load_state(&self, bridge: &str, key: &str) -> Result<Option<String>, StoreError>;
    async fn save_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), StoreError>;
    /// State of one message: saved with the time, pruned by retention.
    async fn save_message_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), StoreError>;
    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), StoreError>;
    /// Store a run-time portal (or its new set of links).
    async fn save_portal(&self, portal: &StoredPortal) -> Result<(), StoreError>;
    /// Every run-time portal, oldest first.
    async fn load_portals(&self) -> Result<Vec<StoredPortal>, StoreError>;
}
