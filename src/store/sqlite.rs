//! The SQLite store (WAL mode). All writes go through one connection, so
//! they never contend inside the process; reads use a small pool beside it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use causeway_core::{Body, Committed, IdKind, now_ms};

use crate::archive::export::{ExportLog, Exported, Range};
use crate::archive::files::{Kept, Outcome, Waiting};
use crate::archive::retention::{Hold, NewHold, Pruned, Stats};
use crate::archive::{Found, FoundSender, Hit, SearchKind, SearchQuery};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlSafeStr, Sqlite};

use super::common::{
    Indexed, RANKED_AMONG, audit_entry, broadcast_summary, export_log, hold_of, kind_code, kind_of, outbox_item, outbox_row, parse_event,
    recipient_status, requested_of, stored_portal,
};
use super::{
    AuditEntry, Author, Completion, LaneDepth, MapHit, NewEvent, OutboxDepth, OutboxItem, OutboxRow, OutboxState, RemoteKey, Store,
    StoreError, Stored, StoredKind, StoredPortal,
};

/// Rows per multi-row statement (SQLite allows 32766 bound parameters).
const CHUNK: usize = 200;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "portals", include_str!("../../migrations/sqlite/0002_portals.sql")),
    (3, "outbox_first_failure", include_str!("../../migrations/sqlite/0003_outbox_first_failure.sql")),
    (4, "outbox_recipient", include_str!("../../migrations/sqlite/0004_outbox_recipient.sql")),
    (5, "search", include_str!("../../migrations/sqlite/0005_search.sql")),
    (6, "archive_files", include_str!("../../migrations/sqlite/0006_archive_files.sql")),
    (7, "retention", include_str!("../../migrations/sqlite/0007_retention.sql")),
    (8, "export_log", include_str!("../../migrations/sqlite/0008_export_log.sql")),
    (9, "console", include_str!("../../migrations/sqlite/0009_console.sql")),
    (10, "broadcasts", include_str!("../../migrations/sqlite/0010_broadcasts.sql")),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS.iter().map(|(v, d, sql)| Migration::new(*v, (*d).into(), MigrationType::Simple, sql.into_sql_str(), false)).collect(),
    )
}

pub struct SqliteStore {
    write: SqlitePool,
    read: SqlitePool,
}

impl SqliteStore {
    /// Open (creating and migrating if needed) the database at `path`.
    /// `full_sync` makes every commit survive power loss, not just a crash.
    pub async fn open(path: &Path, full_sync: bool) -> Result<Self, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(if full_sync { SqliteSynchronous::Full } else { SqliteSynchronous::Normal })
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(false);
        // A local file does not go stale: no ping before each use (each one
        // is a round trip to the connection's thread), and connections are kept.
        let pool = |n| SqlitePoolOptions::new().max_connections(n).test_before_acquire(false).idle_timeout(None).max_lifetime(None);
        let write = pool(1).connect_with(opts.clone()).await?;
        migrator().run(&write).await?;
        let read = pool(4).connect_with(opts.read_only(true)).await?;
        let store = SqliteStore { write, read };
        store.index_backlog().await?;
        Ok(store)
    }
}

impl SqliteStore {
    /// Run a script that is one transaction (`BEGIN …; …; COMMIT`) on the
    /// write connection in one go: one hand-off to SQLite's thread instead of
    /// one per statement. If a statement fails, the transaction is rolled back.
    async fn commit_with(&self, batch: &[NewEvent], broadcast: Option<&crate::broadcast::Planned>) -> Result<Vec<Stored>, StoreError> {
        // One transaction, sent to SQLite's thread as one script.
        let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
        let mut jsons = Vec::with_capacity(batch.len());
        for ne in batch {
            let e = &ne.event;
            jsons.push(serde_json::to_string(e).map_err(|err| StoreError::Corrupt(e.id.clone(), err))?);
        }
        // Archive and outbox rows, many per statement; RETURNING names each
        // row's seq (in no promised order, hence by event or delivery id;
        // the first column tells which table).
        let mut seq_of: HashMap<String, i64> = HashMap::with_capacity(batch.len());
        let mut outbox_seq_of: HashMap<String, i64> = HashMap::new();
        let rows: Vec<(&NewEvent, &String)> = batch.iter().zip(&jsons).collect();
        for chunk in rows.chunks(CHUNK) {
            q.push("INSERT INTO archive (event_id, portal, at_ms, kind, origin_bridge, origin_room, sender, person, event) ");
            q.push_values(chunk, |mut b, (ne, json)| {
                let e = &ne.event;
                b.push_bind(&e.id)
                    .push_bind(&e.portal)
                    .push_bind(e.at_ms)
                    .push_bind(e.body.kind())
                    .push_bind(&e.origin.bridge)
                    .push_bind(&e.origin.room)
                    .push_bind(&e.sender.id)
                    .push_bind(e.sender.person.as_deref())
                    .push_bind(json.as_str());
            });
            q.push(" RETURNING 'a', event_id, seq; ");
        }
        // Map rows: the origin's id, and each delivery id (so an echo of a
        // delivery is recognised even before the target confirms it).
        let maps: Vec<(&str, &str, &str, &str, i64)> = batch
            .iter()
            .flat_map(|ne| {
                let k = &ne.origin_key;
                let id = ne.event.id.as_str();
                std::iter::once((k.bridge.as_str(), k.room.as_str(), k.remote_id.as_str(), id, kind_code(IdKind::Origin)))
                    .chain(ne.aliases.iter().map(move |a| (k.bridge.as_str(), k.room.as_str(), a.as_str(), id, kind_code(IdKind::Alias))))
                    .chain(
                        ne.deliveries
                            .iter()
                            .map(move |d| (d.bridge.as_str(), d.room.as_str(), d.id.as_str(), id, kind_code(IdKind::DeliveryKey))),
                    )
            })
            .collect();
        for chunk in maps.chunks(CHUNK) {
            q.push("INSERT OR IGNORE INTO message_map (bridge, room, remote_id, event_id, kind) ");
            q.push_values(chunk, |mut b, (bridge, room, remote, event, kind)| {
                b.push_bind(*bridge).push_bind(*room).push_bind(*remote).push_bind(*event).push_bind(*kind);
            });
            q.push("; ");
        }
        let now = now_ms();
        let rows: Vec<(&super::NewDelivery, &str)> =
            batch.iter().flat_map(|ne| ne.deliveries.iter().map(|d| (d, ne.event.id.as_str()))).collect();
        for chunk in rows.chunks(CHUNK) {
            q.push("INSERT INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms, recipient) ");
            q.push_values(chunk, |mut b, (d, event)| {
                b.push_bind(&d.id)
                    .push_bind(*event)
                    .push_bind(&d.bridge)
                    .push_bind(&d.room)
                    .push_bind(now)
                    .push_bind(d.recipient.as_deref());
            });
            q.push(" RETURNING 'o', delivery_id, seq; ");
        }
        // The search index and the files to keep, in the same transaction
        // (docs/archive.md).
        index_for_search(&mut q, batch);
        files_to_keep(&mut q, batch);
        if let Some(b) = broadcast {
            planned_broadcast(&mut q, b);
        }
        q.push("COMMIT");
        for r in self.write_script(q).await? {
            let table: &str = r.get(0);
            match table {
                "a" => seq_of.insert(r.get(1), r.get(2)),
                _ => outbox_seq_of.insert(r.get(1), r.get(2)),
            };
        }
        // RETURNING names every row it inserted; should one be missing all
        // the same, the event is committed and its lanes read the store.
        Ok(batch
            .iter()
            .map(|ne| Stored {
                seq: seq_of.get(&ne.event.id).copied().unwrap_or_default(),
                outbox: ne.deliveries.iter().map(|d| outbox_seq_of.get(&d.id).copied()).collect::<Option<_>>().unwrap_or_default(),
            })
            .collect())
    }

    async fn write_script(&self, mut q: QueryBuilder<Sqlite>) -> Result<Vec<SqliteRow>, StoreError> {
        let mut conn = self.write.acquire().await?;
        match q.build().fetch_all(&mut *conn).await {
            Ok(rows) => Ok(rows),
            Err(e) => {
                // Only fails when no transaction is open (it failed at BEGIN).
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                Err(e.into())
            }
        }
    }
}

/// The search index's part of a commit: each message's text and file
/// names, an edit's text in place of its message's, a retraction marked.
/// An edit or retraction may name an edit of the message: it is followed
/// to the message.
/// A planned broadcast's recipients, and its plan, in the transaction of its event.
fn planned_broadcast(q: &mut QueryBuilder<Sqlite>, b: &crate::broadcast::Planned) {
    let rows: Vec<(usize, &crate::broadcast::PlannedRecipient)> = b.recipients.iter().enumerate().collect();
    for chunk in rows.chunks(CHUNK) {
        q.push("INSERT INTO broadcast_recipients (broadcast_id, n, person, bridge, room, recipient, delivery_id, note) ");
        q.push_values(chunk, |mut v, (n, r)| {
            v.push_bind(&b.id)
                .push_bind(*n as i64)
                .push_bind(r.person.as_deref())
                .push_bind(r.bridge.as_deref())
                .push_bind(r.room.as_deref())
                .push_bind(r.account.as_deref())
                .push_bind(r.delivery_id.as_deref())
                .push_bind(r.note.as_deref());
        });
        q.push("; ");
    }
    q.push("UPDATE broadcasts SET event_id = ").push_bind(&b.event_id).push(", planned_ms = ").push_bind(now_ms());
    q.push(" WHERE id = ").push_bind(&b.id).push("; ");
}

fn index_for_search(q: &mut QueryBuilder<Sqlite>, batch: &[NewEvent]) {
    let said: Vec<(&str, Indexed)> = batch
        .iter()
        .filter_map(|ne| match &ne.event.body {
            Body::Message { text, attachments, .. } => Some((ne.event.id.as_str(), Indexed::of(&text.plain, attachments))),
            _ => None,
        })
        .collect();
    for chunk in said.chunks(CHUNK) {
        q.push(
            "INSERT INTO archive_search (rowid, text, folded, files, retracted) \
             SELECT a.seq, v.column2, v.column3, v.column4, 0 FROM (VALUES ",
        );
        let mut sep = q.separated(", ");
        for (id, row) in chunk {
            sep.push("(")
                .push_bind_unseparated(*id)
                .push_unseparated(", ")
                .push_bind_unseparated(row.text.clone())
                .push_unseparated(", ")
                .push_bind_unseparated(row.folded.clone())
                .push_unseparated(", ")
                .push_bind_unseparated(row.files.clone())
                .push_unseparated(")");
        }
        q.push(") v JOIN archive a ON a.event_id = v.column1; ");
    }
    let message_of = |q: &mut QueryBuilder<Sqlite>, target: &str| {
        q.push(" WHERE rowid = (SELECT seq FROM archive WHERE kind = 'message' AND event_id = COALESCE((SELECT json_extract(event, '$.body.target') FROM archive WHERE kind = 'edit' AND event_id = ")
            .push_bind(target)
            .push("), ")
            .push_bind(target)
            .push(")); ");
    };
    for ne in batch {
        match &ne.event.body {
            Body::Edit { target, text } => {
                let folded = crate::archive::folded(&text.plain).unwrap_or_default();
                q.push("UPDATE archive_search SET text = ").push_bind(text.plain.as_str()).push(", folded = ").push_bind(folded);
                message_of(q, target);
            }
            Body::Retract { target, .. } => {
                q.push("UPDATE archive_search SET retracted = 1");
                message_of(q, target);
            }
            _ => {}
        }
    }
}

/// Every attachment of the batch's messages, waiting to be kept.
fn files_to_keep(q: &mut QueryBuilder<Sqlite>, batch: &[NewEvent]) {
    let files: Vec<(&str, i64)> = batch
        .iter()
        .filter_map(|ne| match &ne.event.body {
            Body::Message { attachments, .. } => Some((ne.event.id.as_str(), attachments.len())),
            _ => None,
        })
        .flat_map(|(id, count)| (0..count as i64).map(move |n| (id, n)))
        .collect();
    for chunk in files.chunks(CHUNK) {
        q.push("INSERT OR IGNORE INTO archive_file (seq, n) SELECT a.seq, v.column2 FROM (VALUES ");
        let mut sep = q.separated(", ");
        for (id, n) in chunk {
            sep.push("(").push_bind_unseparated(*id).push_unseparated(", ").push_bind_unseparated(*n).push_unseparated(")");
        }
        q.push(") v JOIN archive a ON a.event_id = v.column1; ");
    }
}

/// Messages archived before search existed, a chunk at a time from a seq:
/// each with its latest edit's text and whether it was taken back (an edit
/// or a retraction may name an edit of the message).
const BACKLOG: &str = "\
    WITH m AS (SELECT seq, event_id, event FROM archive WHERE kind = 'message' AND seq >= ? AND seq <= ? ORDER BY seq LIMIT 500), \
    changes AS (SELECT m.event_id AS message, m.event_id AS target FROM m \
                UNION ALL SELECT m.event_id, x.event_id FROM m JOIN archive x \
                ON json_extract(x.event, '$.body.target') = m.event_id AND x.kind = 'edit') \
    SELECT m.seq, m.event_id, m.event, \
      (SELECT json_extract(e.event, '$.body.text.plain') FROM changes c JOIN archive e \
       ON json_extract(e.event, '$.body.target') = c.target AND e.kind = 'edit' \
       WHERE c.message = m.event_id ORDER BY e.seq DESC LIMIT 1) AS edited, \
      EXISTS (SELECT 1 FROM changes c JOIN archive r ON json_extract(r.event, '$.body.target') = c.target AND r.kind = 'retract' \
       WHERE c.message = m.event_id) AS retracted \
    FROM m ORDER BY m.seq";

/// The text's snippet where the words matched in the text, else the best
/// column's (the folded text, the file names); matches marked `[…]`.
fn snippet(of_text: String, best: String) -> String {
    let (open, close) = ('\u{E000}', '\u{E001}');
    let s = if of_text.contains(open) { of_text } else { best };
    s.replace(open, "[").replace(close, "]")
}

/// An archived message with its search row, as search shows it.
fn found(r: &SqliteRow) -> Result<Found, StoreError> {
    let id: String = r.get("event_id");
    let e = parse_event(&id, r.get("event"))?;
    let text: String = r.get("text");
    let (original, attachments, reply_to, thread) = match e.body {
        Body::Message { text, attachments, reply_to, thread, .. } => (text.plain, attachments, reply_to, thread),
        _ => (String::new(), Vec::new(), None, None),
    };
    Ok(Found {
        seq: r.get("seq"),
        event_id: e.id,
        portal: e.portal,
        at_ms: e.at_ms,
        network: e.origin.bridge,
        room: e.origin.room,
        sender: FoundSender { id: e.sender.id, name: e.sender.name, person: e.sender.person },
        edited: text != original,
        text,
        retracted: r.get::<i64, _>("retracted") != 0,
        attachments,
        reply_to,
        thread,
    })
}

impl SqliteStore {
    /// Index what was archived before search existed (the migration left
    /// its range in `bridge_state`), a chunk per transaction, so that an
    /// interrupted start goes on where it stopped.
    /// A kept file noted, its content counted once more; whether the
    /// content is new. Nothing is noted for an attachment no longer
    /// waiting (its message was deleted meanwhile).
    async fn file_kept(&self, seq: i64, n: i64, file: &Kept) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let noted =
            sqlx::query("UPDATE archive_file SET state = 1, sha256 = ?, mime = ?, reason = NULL WHERE seq = ? AND n = ? AND state = 0")
                .bind(&file.sha256)
                .bind(file.mime.as_deref())
                .bind(seq)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        if noted.rows_affected() == 0 {
            return Ok(false);
        }
        let refs: i64 = sqlx::query_scalar(
            "INSERT INTO archive_blob (sha256, size, refs) VALUES (?, ?, 1) \
             ON CONFLICT (sha256) DO UPDATE SET refs = refs + 1 RETURNING refs",
        )
        .bind(&file.sha256)
        .bind(file.size as i64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(refs == 1)
    }

    async fn index_backlog(&self) -> Result<(), StoreError> {
        let Some(range) = self.load_state("causeway", "search_backlog").await? else { return Ok(()) };
        let mut parts = range.split(' ').map(str::parse::<i64>);
        let (Some(Ok(mut next)), Some(Ok(last))) = (parts.next(), parts.next()) else {
            return self.delete_state("causeway", "search_backlog").await;
        };
        tracing::info!(from = next, to = last, "indexing the archive for search");
        let mut done = 0u64;
        loop {
            let rows = sqlx::query(BACKLOG).bind(next).bind(last).fetch_all(&self.read).await?;
            let Some(end) = rows.last().map(|r| r.get::<i64, _>("seq")) else { break };
            let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
            q.push("INSERT INTO archive_search (rowid, text, folded, files, retracted) ");
            let mut indexed = Vec::with_capacity(rows.len());
            for r in &rows {
                let e = parse_event(r.get("event_id"), r.get("event"))?;
                let Body::Message { text, attachments, .. } = &e.body else { continue };
                let edited: Option<String> = r.get("edited");
                let row = Indexed::of(edited.as_deref().unwrap_or(&text.plain), attachments);
                indexed.push((r.get::<i64, _>("seq"), row, r.get::<bool, _>("retracted")));
            }
            q.push_values(&indexed, |mut b, (seq, row, retracted)| {
                b.push_bind(*seq)
                    .push_bind(row.text.clone())
                    .push_bind(row.folded.clone())
                    .push_bind(row.files.clone())
                    .push_bind(*retracted);
            });
            next = end + 1;
            q.push("; UPDATE bridge_state SET value = ")
                .push_bind(format!("{next} {last}"))
                .push(" WHERE bridge = 'causeway' AND key = 'search_backlog'; COMMIT");
            if indexed.is_empty() {
                continue;
            }
            self.write_script(q).await?;
            done += indexed.len() as u64;
            tracing::info!(indexed = done, at_seq = end, to = last, "indexing the archive for search");
        }
        self.delete_state("causeway", "search_backlog").await?;
        tracing::info!(indexed = done, "the archive is indexed for search");
        Ok(())
    }

    /// Up to `n` messages of `portal` just before (or after) `seq`, in order.
    async fn around(&self, portal: &str, seq: i64, n: u32, after: bool, retracted: bool) -> Result<Vec<Found>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let (cmp, order) = if after { (">", "ASC") } else { ("<", "DESC") };
        let hidden = if retracted { "" } else { " AND s.retracted = 0" };
        let sql = format!(
            "SELECT a.seq, a.event_id, a.event, s.text, s.retracted FROM archive a JOIN archive_search s ON s.rowid = a.seq \
             WHERE a.portal = ? AND a.kind = 'message' AND a.seq {cmp} ?{hidden} ORDER BY a.seq {order} LIMIT ?"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(portal).bind(seq).bind(i64::from(n)).fetch_all(&self.read).await?;
        let mut found = rows.iter().map(found).collect::<Result<Vec<_>, _>>()?;
        if !after {
            found.reverse();
        }
        Ok(found)
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn archived_portals(&self, person: Option<&str>) -> Result<Vec<String>, StoreError> {
        let rows = match person {
            None => sqlx::query("SELECT DISTINCT portal FROM archive ORDER BY portal").fetch_all(&self.read).await?,
            Some(p) => {
                sqlx::query("SELECT DISTINCT portal FROM archive WHERE person = ? OR origin_bridge || ':' || sender = ? ORDER BY portal")
                    .bind(p)
                    .bind(p)
                    .fetch_all(&self.read)
                    .await?
            }
        };
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn archive_seq(&self) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM archive").fetch_one(&self.read).await?;
        Ok(n.unwrap_or(0))
    }

    async fn count_events(&self, portal: &str, range: Range) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM archive WHERE portal = ? AND at_ms >= COALESCE(?, at_ms) AND at_ms < COALESCE(?, at_ms + 1) \
             AND seq <= COALESCE(?, seq)",
        )
        .bind(portal)
        .bind(range.since_ms)
        .bind(range.until_ms)
        .bind(range.upto_seq)
        .fetch_one(&self.read)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn export_page(&self, portal: &str, range: Range, after_seq: i64, limit: u32) -> Result<Vec<Exported>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.seq, a.event_id, a.event, s.text AS text, s.retracted AS retracted \
             FROM archive a LEFT JOIN archive_search s ON s.rowid = a.seq \
             WHERE a.portal = ? AND a.seq > ? AND a.at_ms >= COALESCE(?, a.at_ms) AND a.at_ms < COALESCE(?, a.at_ms + 1) \
             AND a.seq <= COALESCE(?, a.seq) \
             ORDER BY a.seq LIMIT ?",
        )
        .bind(portal)
        .bind(after_seq)
        .bind(range.since_ms)
        .bind(range.until_ms)
        .bind(range.upto_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            let event = parse_event(r.get("event_id"), r.get("event"))?;
            let retracted = r.get::<Option<i64>, _>("retracted").is_some_and(|x| x != 0);
            page.push(Exported {
                seq: r.get("seq"),
                event,
                text: r.get("text"),
                retracted,
                reactions: Vec::new(),
                kept: Default::default(),
            });
        }
        // The reactions to this page's messages, in the archive's order.
        let ids: Vec<&str> = page.iter().filter(|e| matches!(e.event.body, Body::Message { .. })).map(|e| e.event.id.as_str()).collect();
        let mut reactions = Vec::new();
        for chunk in ids.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT event_id, event FROM archive WHERE kind = 'reaction' AND json_extract(event, '$.body.target') IN (",
            );
            let mut sep = q.separated(", ");
            for id in chunk {
                sep.push_bind(*id);
            }
            q.push(") ORDER BY seq");
            for r in q.build().fetch_all(&self.read).await? {
                reactions.push(parse_event(r.get("event_id"), r.get("event"))?);
            }
        }
        let mut of = crate::archive::export::tally_reactions(&reactions);
        for e in &mut page {
            e.reactions = of.remove(&e.event.id).unwrap_or_default();
        }
        // The files kept of this page's messages.
        let with_files: Vec<i64> = page
            .iter()
            .filter(|e| matches!(&e.event.body, Body::Message { attachments, .. } if !attachments.is_empty()))
            .map(|e| e.seq)
            .collect();
        let mut kept: HashMap<i64, std::collections::BTreeMap<usize, Kept>> = HashMap::new();
        for chunk in with_files.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT f.seq, f.n, f.sha256, f.mime, b.size FROM archive_file f JOIN archive_blob b ON b.sha256 = f.sha256 \
                 WHERE f.state = 1 AND f.seq IN (",
            );
            let mut sep = q.separated(", ");
            for seq in chunk {
                sep.push_bind(*seq);
            }
            q.push(")");
            for r in q.build().fetch_all(&self.read).await? {
                let n: i64 = r.get("n");
                let file = Kept { sha256: r.get("sha256"), size: r.get::<i64, _>("size").max(0) as u64, mime: r.get("mime") };
                kept.entry(r.get("seq")).or_default().insert(n.max(0) as usize, file);
            }
        }
        for e in &mut page {
            e.kept = kept.remove(&e.seq).unwrap_or_default();
        }
        Ok(page)
    }

    /// One piece: the transaction of retention, read top to bottom.
    async fn prune(&self, portal: &str, before_ms: i64, limit: u32) -> Result<Pruned, StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new(
            "BEGIN IMMEDIATE; \
             CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY, event_id TEXT NOT NULL); \
             DELETE FROM doomed; \
             INSERT INTO doomed SELECT a.seq, a.event_id FROM archive a WHERE a.portal = ",
        );
        q.push_bind(portal).push(" AND a.at_ms < ").push_bind(before_ms).push(
            " AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = a.event_id) \
             AND NOT EXISTS (SELECT 1 FROM archive_hold h WHERE h.released_ms IS NULL \
                 AND (h.portal = a.portal OR h.person = a.person OR h.person = a.origin_bridge || ':' || a.sender)) \
             ORDER BY a.seq LIMIT ",
        );
        q.push_bind(i64::from(limit)).push(
            "; \
             DELETE FROM archive_search WHERE rowid IN (SELECT seq FROM doomed); \
             DELETE FROM message_map WHERE event_id IN (SELECT event_id FROM doomed); \
             UPDATE archive_blob SET refs = refs - (SELECT COUNT(*) FROM archive_file f \
                 WHERE f.sha256 = archive_blob.sha256 AND f.state = 1 AND f.seq IN (SELECT seq FROM doomed)) \
             WHERE sha256 IN (SELECT sha256 FROM archive_file WHERE state = 1 AND seq IN (SELECT seq FROM doomed)); \
             DELETE FROM archive_file WHERE seq IN (SELECT seq FROM doomed); \
             DELETE FROM archive_blob WHERE refs <= 0 RETURNING 'b', sha256; \
             DELETE FROM archive WHERE seq IN (SELECT seq FROM doomed) RETURNING 'a', seq; \
             DELETE FROM doomed; \
             COMMIT",
        );
        let mut pruned = Pruned::default();
        for r in self.write_script(q).await? {
            match r.get::<&str, _>(0) {
                "b" => pruned.blobs.push(r.get(1)),
                _ => pruned.events += 1,
            }
        }
        Ok(pruned)
    }

    async fn prune_message_state(&self, bridge: &str, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM bridge_state WHERE bridge = ? AND message_ms < ?")
            .bind(bridge)
            .bind(before_ms)
            .execute(&self.write)
            .await?;
        Ok(done.rows_affected())
    }

    async fn add_hold(&self, hold: &NewHold) -> Result<Hold, StoreError> {
        let trimmed = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(str::to_string);
        let row = sqlx::query("INSERT INTO archive_hold (portal, person, reason, set_by, set_ms) VALUES (?, ?, ?, ?, ?) RETURNING *")
            .bind(trimmed(&hold.portal))
            .bind(trimmed(&hold.person))
            .bind(hold.reason.trim())
            .bind(hold.by.trim())
            .bind(now_ms())
            .fetch_one(&self.write)
            .await?;
        Ok(hold_of(&row))
    }

    async fn holds(&self, released_too: bool) -> Result<Vec<Hold>, StoreError> {
        let rows = sqlx::query("SELECT * FROM archive_hold WHERE released_ms IS NULL OR ? ORDER BY id")
            .bind(released_too)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(hold_of).collect())
    }

    async fn release_hold(&self, id: i64, by: &str) -> Result<Option<Hold>, StoreError> {
        let row = sqlx::query("UPDATE archive_hold SET released_ms = ?, released_by = ? WHERE id = ? AND released_ms IS NULL RETURNING *")
            .bind(now_ms())
            .bind(by.trim())
            .bind(id)
            .fetch_optional(&self.write)
            .await?;
        Ok(row.as_ref().map(hold_of))
    }

    async fn log_export(&self, e: &ExportLog) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO archive_export (at_ms, by, format, portals, person, since_ms, until_ms, events, output) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at_ms)
        .bind(&e.by)
        .bind(&e.format)
        .bind(serde_json::to_string(&e.portals).unwrap_or_else(|_| "[]".into()))
        .bind(e.person.as_deref())
        .bind(e.since_ms)
        .bind(e.until_ms)
        .bind(e.events as i64)
        .bind(&e.output)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn exports(&self, limit: u32) -> Result<Vec<ExportLog>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM archive_export ORDER BY id DESC LIMIT ?").bind(i64::from(limit)).fetch_all(&self.read).await?;
        Ok(rows.iter().map(export_log).collect())
    }

    async fn archive_stats(&self) -> Result<Stats, StoreError> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM archive), \
                    (SELECT page_count * page_size FROM pragma_page_count(), pragma_page_size()), \
                    (SELECT COUNT(*) FROM archive_hold WHERE released_ms IS NULL)",
        )
        .fetch_one(&self.read)
        .await?;
        let n = |i: usize| row.get::<i64, _>(i).max(0) as u64;
        let exports = sqlx::query("SELECT format, COUNT(*) FROM archive_export GROUP BY format")
            .fetch_all(&self.read)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1).max(0) as u64))
            .collect();
        Ok(Stats { events: n(0), bytes: n(1), holds: n(2), file_bytes: self.file_bytes().await?, exports })
    }

    async fn files_waiting(&self, now_ms: i64, limit: u32) -> Result<Vec<Waiting>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.seq, f.n, f.tries, a.portal, a.event_id, a.event FROM archive_file f JOIN archive a ON a.seq = f.seq \
             WHERE f.state = 0 AND f.next_ms <= ? ORDER BY f.next_ms, f.seq, f.n LIMIT ?",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        let mut waiting = Vec::with_capacity(rows.len());
        for r in &rows {
            let (seq, n): (i64, i64) = (r.get("seq"), r.get("n"));
            let event = parse_event(r.get("event_id"), r.get("event"))?;
            let attachment = match &event.body {
                Body::Message { attachments, .. } => usize::try_from(n).ok().and_then(|n| attachments.get(n)).cloned(),
                _ => None,
            };
            match attachment {
                Some(attachment) => waiting.push(Waiting { seq, n, tries: r.get("tries"), portal: r.get("portal"), attachment }),
                // Nothing to fetch: noted so, not looked at again.
                None => {
                    self.note_file(seq, n, &Outcome::Refused("no such attachment".into())).await?;
                }
            }
        }
        Ok(waiting)
    }

    async fn note_file(&self, seq: i64, n: i64, outcome: &Outcome) -> Result<bool, StoreError> {
        let (state, reason, next_ms) = match outcome {
            Outcome::Kept(file) => return self.file_kept(seq, n, file).await,
            Outcome::Retry { next_ms, reason } => (0, Some(reason.as_str()), *next_ms),
            Outcome::Link => (2, None, 0),
            Outcome::Refused(why) => (3, Some(why.as_str()), 0),
            Outcome::Failed(why) => (4, Some(why.as_str()), 0),
        };
        sqlx::query("UPDATE archive_file SET state = ?, reason = ?, next_ms = ?, tries = tries + ? WHERE seq = ? AND n = ?")
            .bind(state)
            .bind(reason)
            .bind(next_ms)
            .bind(i64::from(matches!(outcome, Outcome::Retry { .. } | Outcome::Failed(_))))
            .bind(seq)
            .bind(n)
            .execute(&self.write)
            .await?;
        Ok(false)
    }

    async fn blob_known(&self, sha256: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM archive_blob WHERE sha256 = ? AND refs > 0")
            .bind(sha256)
            .fetch_one(&self.read)
            .await?;
        Ok(n > 0)
    }

    async fn file_bytes(&self) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT SUM(size) FROM archive_blob WHERE refs > 0").fetch_one(&self.read).await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Two steps: the best `limit` messages, ranked by the index alone
    /// among the newest [`RANKED_AMONG`] matches (FTS5 drives the query
    /// newest first and stops there; each match's archive row is read by
    /// its key, only when a filter needs it), then only those read in full,
    /// with their snippets.
    async fn search(&self, s: &SearchQuery) -> Result<Vec<Hit>, StoreError> {
        let filtered = s.portal.is_some()
            || s.person.is_some()
            || s.network.is_some()
            || s.since_ms.is_some()
            || s.until_ms.is_some()
            || s.kind == Some(SearchKind::File);
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT seq, score FROM (SELECT archive_search.rowid AS seq, -bm25(archive_search) AS score FROM archive_search ",
        );
        if filtered {
            q.push("CROSS JOIN archive a ON a.seq = archive_search.rowid ");
        }
        q.push("WHERE archive_search MATCH ").push_bind(s.fts.as_str());
        if let Some(p) = &s.portal {
            q.push(" AND a.portal = ").push_bind(p.as_str());
        }
        if let Some(p) = &s.person {
            q.push(" AND (a.person = ")
                .push_bind(p.as_str())
                .push(" OR a.origin_bridge || ':' || a.sender = ")
                .push_bind(p.as_str())
                .push(")");
        }
        if let Some(n) = &s.network {
            q.push(" AND a.origin_bridge = ").push_bind(n.as_str());
        }
        if let Some(t) = s.since_ms {
            q.push(" AND a.at_ms >= ").push_bind(t);
        }
        if let Some(t) = s.until_ms {
            q.push(" AND a.at_ms < ").push_bind(t);
        }
        if !s.retracted {
            q.push(" AND archive_search.retracted = 0");
        }
        if s.kind == Some(SearchKind::File) {
            q.push(" AND json_array_length(a.event, '$.body.attachments') > 0");
        }
        q.push(" ORDER BY archive_search.rowid DESC LIMIT ")
            .push_bind(i64::from(RANKED_AMONG))
            .push(") ORDER BY score DESC, seq DESC LIMIT ")
            .push_bind(i64::from(s.limit));
        let best: Vec<(i64, f64)> = q.build().fetch_all(&self.read).await?.iter().map(|r| (r.get("seq"), r.get("score"))).collect();
        if best.is_empty() {
            return Ok(Vec::new());
        }
        let mut q = QueryBuilder::<Sqlite>::new(
            "SELECT a.seq, a.event_id, a.event, archive_search.text AS text, archive_search.retracted AS retracted, \
             snippet(archive_search, 0, char(57344), char(57345), '…', 16) AS snippet, \
             snippet(archive_search, -1, char(57344), char(57345), '…', 16) AS best \
             FROM archive_search CROSS JOIN archive a ON a.seq = archive_search.rowid WHERE archive_search MATCH ",
        );
        q.push_bind(s.fts.as_str()).push(" AND archive_search.rowid IN (");
        let mut sep = q.separated(", ");
        for (seq, _) in &best {
            sep.push_bind(*seq);
        }
        q.push(")");
        let mut rows: HashMap<i64, SqliteRow> = q.build().fetch_all(&self.read).await?.into_iter().map(|r| (r.get("seq"), r)).collect();
        let mut hits = Vec::with_capacity(best.len());
        for (seq, score) in best {
            let Some(r) = rows.remove(&seq) else { continue };
            let message = found(&r)?;
            let before = self.around(&message.portal, message.seq, s.context, false, s.retracted).await?;
            let after = self.around(&message.portal, message.seq, s.context, true, s.retracted).await?;
            hits.push(Hit { score, snippet: snippet(r.get("snippet"), r.get("best")), message, before, after });
        }
        Ok(hits)
    }

    async fn lookup_remotes(&self, keys: &[RemoteKey]) -> Result<HashMap<RemoteKey, MapHit>, StoreError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(CHUNK) {
            let mut q = QueryBuilder::<Sqlite>::new(
                "SELECT m.bridge, m.room, m.remote_id, m.event_id, m.kind, a.origin_bridge, a.sender, a.person, \
                 json_extract(a.event, '$.body.thread') AS thread \
                 FROM message_map m LEFT JOIN archive a ON a.event_id = m.event_id WHERE (m.bridge, m.room, m.remote_id) IN (VALUES ",
            );
            let mut sep = q.separated(", ");
            for k in chunk {
                sep.push("(")
                    .push_bind_unseparated(k.bridge.clone())
                    .push_unseparated(", ")
                    .push_bind_unseparated(k.room.clone())
                    .push_unseparated(", ")
                    .push_bind_unseparated(k.remote_id.clone())
                    .push_unseparated(")");
            }
            q.push(")");
            for r in q.build().fetch_all(&self.read).await? {
                let key = RemoteKey { bridge: r.get("bridge"), room: r.get("room"), remote_id: r.get("remote_id") };
                let kind = kind_of(r.get("kind"));
                let author = r.get::<Option<String>, _>("origin_bridge").map(|bridge| Author {
                    bridge,
                    sender: r.get("sender"),
                    person: r.get("person"),
                });
                found.insert(
                    key,
                    MapHit {
                        event_id: r.get("event_id"),
                        origin: matches!(kind, Some(IdKind::Origin | IdKind::Alias)),
                        author,
                        thread: r.get("thread"),
                    },
                );
            }
        }
        Ok(found)
    }

    async fn remote_for(&self, event_id: &str, bridge: &str, room: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT remote_id FROM message_map WHERE event_id = ? AND bridge = ? AND room = ? \
             ORDER BY CASE kind WHEN ? THEN 0 WHEN ? THEN 1 WHEN ? THEN 2 ELSE 3 END LIMIT 1",
        )
        .bind(event_id)
        .bind(bridge)
        .bind(room)
        .bind(kind_code(IdKind::Reported))
        .bind(kind_code(IdKind::Origin))
        .bind(kind_code(IdKind::DeliveryKey))
        .fetch_optional(&self.read)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn ids_of(&self, bridge: &str, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.remote_id, m.kind FROM message_map m WHERE m.bridge = ?1 AND m.room = ?2 AND m.event_id = \
             (SELECT event_id FROM message_map WHERE bridge = ?1 AND room = ?2 AND remote_id = ?3)",
        )
        .bind(bridge)
        .bind(room)
        .bind(remote_id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), kind_of(r.get(1)).unwrap_or(IdKind::Alias))).collect())
    }

    /// One piece (over 80 lines): one transaction (archive, message map, outbox
    /// rows), read top to bottom.
    async fn commit(&self, batch: &[NewEvent]) -> Result<Vec<Stored>, StoreError> {
        self.commit_with(batch, None).await
    }

    async fn commit_broadcast(&self, event: &NewEvent, planned: &crate::broadcast::Planned) -> Result<Stored, StoreError> {
        let mut stored = self.commit_with(std::slice::from_ref(event), Some(planned)).await?;
        Ok(stored.pop().unwrap_or(Stored { seq: 0, outbox: Vec::new() }))
    }

    async fn request_broadcast(&self, b: &crate::broadcast::Requested) -> Result<(), StoreError> {
        let request = serde_json::to_string(&b.request).map_err(|e| StoreError::Corrupt(b.id.clone(), e))?;
        sqlx::query("INSERT INTO broadcasts (id, requested_ms, requested_by, request) VALUES (?, ?, ?, ?)")
            .bind(&b.id)
            .bind(b.requested_ms)
            .bind(&b.requested_by)
            .bind(request)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn refuse_broadcast(&self, id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE broadcasts SET error = ?, planned_ms = ? WHERE id = ? AND event_id IS NULL")
            .bind(error)
            .bind(now_ms())
            .bind(id)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn unplanned_broadcasts(&self) -> Result<Vec<crate::broadcast::Requested>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, requested_ms, requested_by, request FROM broadcasts WHERE event_id IS NULL AND error IS NULL ORDER BY requested_ms",
        )
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(requested_of).collect()
    }

    async fn broadcasts(&self, id: Option<&str>, limit: u32) -> Result<Vec<crate::broadcast::Summary>, StoreError> {
        // Counted from the outbox: a delivery that left it was delivered.
        let rows = sqlx::query(
            "SELECT b.id, b.requested_ms, b.requested_by, b.request, b.event_id, b.planned_ms, b.error, \
             (SELECT COUNT(*) FROM broadcast_recipients r WHERE r.broadcast_id = b.id) AS total, \
             (SELECT COUNT(*) FROM broadcast_recipients r WHERE r.broadcast_id = b.id AND r.delivery_id IS NULL) AS unreachable, \
             (SELECT COUNT(*) FROM broadcast_recipients r JOIN outbox o ON o.delivery_id = r.delivery_id \
                WHERE r.broadcast_id = b.id AND o.state = 0) AS pending, \
             (SELECT COUNT(*) FROM broadcast_recipients r JOIN outbox o ON o.delivery_id = r.delivery_id \
                WHERE r.broadcast_id = b.id AND o.state = 2) AS failed, \
             (SELECT COUNT(*) FROM broadcast_recipients r JOIN outbox_dropped d ON d.delivery_id = r.delivery_id \
                WHERE r.broadcast_id = b.id) AS dropped \
             FROM broadcasts b WHERE (?1 IS NULL OR b.id = ?1) ORDER BY b.requested_ms DESC LIMIT ?2",
        )
        .bind(id)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(broadcast_summary).collect()
    }

    async fn broadcast_recipients(&self, id: &str) -> Result<Vec<crate::broadcast::RecipientStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.person, r.bridge, r.room, r.recipient, r.delivery_id, r.note, o.state, o.attempts, o.last_error, \
             d.reason AS dropped, d.last_error AS dropped_error FROM broadcast_recipients r \
             LEFT JOIN outbox o ON o.delivery_id = r.delivery_id LEFT JOIN outbox_dropped d ON d.delivery_id = r.delivery_id \
             WHERE r.broadcast_id = ? ORDER BY r.n",
        )
        .bind(id)
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(recipient_status).collect())
    }

    async fn pending(&self, bridge: &str, room: &str, after_seq: i64, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.seq, o.delivery_id, o.attempts, o.enqueued_ms, o.first_failed_ms, o.recipient, o.event_id, a.event FROM outbox o \
             JOIN archive a ON a.event_id = o.event_id \
             WHERE o.bridge = ? AND o.room = ? AND o.state = 0 AND o.seq > ? ORDER BY o.seq LIMIT ?",
        )
        .bind(bridge)
        .bind(room)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        rows.iter().map(outbox_item).collect()
    }

    async fn lanes_after(&self, after_seq: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT bridge, room, MAX(seq) FROM outbox WHERE seq > ? AND state = 0 GROUP BY bridge, room")
            .bind(after_seq)
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn max_outbox_seq(&self) -> Result<i64, StoreError> {
        // sqlite_sequence keeps the high-water mark even after rows are deleted.
        let row = sqlx::query("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetch_optional(&self.read).await?;
        Ok(row.map(|r| r.get(0)).unwrap_or(0))
    }

    async fn complete(&self, done: &[Completion]) -> Result<(), StoreError> {
        let mut q = QueryBuilder::<Sqlite>::new("BEGIN IMMEDIATE; ");
        for chunk in done.chunks(CHUNK) {
            q.push("DELETE FROM outbox WHERE seq IN (");
            let mut sep = q.separated(", ");
            for c in chunk {
                sep.push_bind(c.seq);
            }
            q.push("); ");
            let reported: Vec<&Completion> = chunk.iter().filter(|c| c.remote_id.as_ref().is_some_and(|r| *r != c.delivery_id)).collect();
            if !reported.is_empty() {
                q.push("INSERT OR IGNORE INTO message_map (bridge, room, remote_id, event_id, kind) ");
                q.push_values(reported, |mut b, c| {
                    b.push_bind(&c.bridge)
                        .push_bind(&c.room)
                        .push_bind(c.remote_id.as_deref())
                        .push_bind(&c.event_id)
                        .push_bind(kind_code(IdKind::Reported));
                });
                q.push("; ");
            }
        }
        q.push("COMMIT");
        self.write_script(q).await?;
        Ok(())
    }

    async fn record_failure(&self, seq: i64, attempts: u32, next_attempt_ms: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET attempts = ?, next_attempt_ms = ?, last_error = ?, first_failed_ms = COALESCE(first_failed_ms, ?) WHERE seq = ?")
            .bind(i64::from(attempts))
            .bind(next_attempt_ms)
            .bind(error)
            .bind(now_ms())
            .bind(seq)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn dead_letter(&self, seq: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET state = 2, attempts = ?, next_attempt_ms = NULL, last_error = ? WHERE seq = ?")
            .bind(i64::from(attempts))
            .bind(error)
            .bind(seq)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn outbox_depths(&self) -> Result<HashMap<String, OutboxDepth>, StoreError> {
        let rows = sqlx::query("SELECT bridge, state, COUNT(*) FROM outbox GROUP BY bridge, state").fetch_all(&self.read).await?;
        let mut out: HashMap<String, OutboxDepth> = HashMap::new();
        for r in rows {
            let d = out.entry(r.get(0)).or_default();
            let n = r.get::<i64, _>(2).try_into().unwrap_or(0);
            match r.get::<i64, _>(1) {
                0 => d.pending += n,
                _ => d.dead += n,
            }
        }
        Ok(out)
    }

    async fn list_outbox(&self, state: OutboxState, limit: u32) -> Result<Vec<OutboxRow>, StoreError> {
        self.find_outbox(state, None, None, 0, limit).await
    }

    async fn requeue(&self, delivery_id: &str) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query("DELETE FROM outbox WHERE delivery_id = ? AND state = 2 RETURNING event_id, bridge, room, recipient")
            .bind(delivery_id)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        sqlx::query("INSERT INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms, recipient) VALUES (?, ?, ?, ?, ?, ?)")
            .bind(delivery_id)
            .bind(row.get::<String, _>(0))
            .bind(row.get::<String, _>(1))
            .bind(row.get::<String, _>(2))
            .bind(now_ms())
            .bind(row.get::<Option<String>, _>(3))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn dead_letter_recipient(
        &self,
        event_id: &str,
        bridge: &str,
        room: &str,
        delivery_id: &str,
        recipient: &str,
        error: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT OR IGNORE INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms, recipient, state, attempts, last_error) \
             VALUES (?, ?, ?, ?, ?, ?, 2, 1, ?)",
        )
        .bind(delivery_id)
        .bind(event_id)
        .bind(bridge)
        .bind(room)
        .bind(now_ms())
        .bind(recipient)
        .bind(error)
        .execute(&self.write)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_matching(&self, bridge: Option<&str>, room: Option<&str>) -> Result<u64, StoreError> {
        // Each row goes to the end of its lane in the order it had; the same
        // delivery ids, so a target that got one already sees no duplicate.
        let mut tx = self.write.begin().await?;
        let rows = sqlx::query(
            "DELETE FROM outbox WHERE state = 2 AND (?1 IS NULL OR bridge = ?1) AND (?2 IS NULL OR room = ?2) \
             RETURNING seq, delivery_id, event_id, bridge, room, recipient",
        )
        .bind(bridge)
        .bind(room)
        .fetch_all(&mut *tx)
        .await?;
        let mut rows: Vec<(i64, String, String, String, String, Option<String>)> =
            rows.iter().map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5))).collect();
        rows.sort_by_key(|r| r.0);
        let now = now_ms();
        for (_, delivery_id, event_id, bridge, room, recipient) in &rows {
            sqlx::query("INSERT INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms, recipient) VALUES (?, ?, ?, ?, ?, ?)")
                .bind(delivery_id)
                .bind(event_id)
                .bind(bridge)
                .bind(room)
                .bind(now)
                .bind(recipient)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(rows.len() as u64)
    }

    async fn history(&self, portal: &str, after_seq: i64, limit: u32) -> Result<Vec<Committed>, StoreError> {
        let rows = sqlx::query("SELECT seq, event_id, event FROM archive WHERE portal = ? AND seq > ? ORDER BY seq LIMIT ?")
            .bind(portal)
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        rows.iter().map(|r| Ok(Committed { seq: r.get(0), event: parse_event(r.get(1), r.get(2))? })).collect()
    }

    async fn load_state(&self, bridge: &str, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM bridge_state WHERE bridge = ? AND key = ?")
            .bind(bridge)
            .bind(key)
            .fetch_optional(&self.read)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn save_message_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bridge_state (bridge, key, value, message_ms) VALUES (?, ?, ?, ?) \
             ON CONFLICT (bridge, key) DO UPDATE SET value = excluded.value, message_ms = excluded.message_ms",
        )
        .bind(bridge)
        .bind(key)
        .bind(value)
        .bind(now_ms())
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn save_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bridge_state (bridge, key, value) VALUES (?, ?, ?) \
             ON CONFLICT (bridge, key) DO UPDATE SET value = excluded.value",
        )
        .bind(bridge)
        .bind(key)
        .bind(value)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM bridge_state WHERE bridge = ? AND key = ?").bind(bridge).bind(key).execute(&self.write).await?;
        Ok(())
    }

    async fn save_portal(&self, portal: &StoredPortal) -> Result<(), StoreError> {
        let links = serde_json::to_string(&portal.links).expect("links serialize");
        let kind = match portal.kind {
            StoredKind::Direct => 0,
            StoredKind::Console => 1,
        };
        sqlx::query(
            "INSERT INTO portals (id, created_ms, links, kind) VALUES (?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET links = excluded.links",
        )
        .bind(&portal.id)
        .bind(portal.created_ms)
        .bind(links)
        .bind(kind)
        .execute(&self.write)
        .await?;
        Ok(())
    }

    async fn load_portals(&self) -> Result<Vec<StoredPortal>, StoreError> {
        let rows = sqlx::query("SELECT id, created_ms, links, kind FROM portals ORDER BY created_ms, id").fetch_all(&self.read).await?;
        rows.iter().map(stored_portal).collect()
    }

    async fn delete_portal(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("DELETE FROM portals WHERE id = ?").bind(id).execute(&self.write).await?.rows_affected() > 0)
    }

    async fn find_outbox(
        &self,
        state: OutboxState,
        bridge: Option<&str>,
        room: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let state = match state {
            OutboxState::Pending => 0,
            OutboxState::Dead => 2,
        };
        let rows = sqlx::query(
            "SELECT o.seq, o.delivery_id, o.event_id, a.portal, a.kind, o.bridge, o.room, o.attempts, o.enqueued_ms, \
             o.next_attempt_ms, o.last_error, o.recipient FROM outbox o JOIN archive a ON a.event_id = o.event_id \
             WHERE o.state = ? AND (?2 IS NULL OR o.bridge = ?2) AND (?3 IS NULL OR o.room = ?3) AND o.seq > ?4 \
             ORDER BY o.seq LIMIT ?5",
        )
        .bind(state)
        .bind(bridge)
        .bind(room)
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn lane_depths(&self) -> Result<HashMap<(String, String), LaneDepth>, StoreError> {
        let rows = sqlx::query("SELECT bridge, room, state, COUNT(*), MIN(enqueued_ms) FROM outbox GROUP BY bridge, room, state")
            .fetch_all(&self.read)
            .await?;
        let mut out: HashMap<(String, String), LaneDepth> = HashMap::new();
        for r in rows {
            let d = out.entry((r.get(0), r.get(1))).or_default();
            let n = r.get::<i64, _>(3).try_into().unwrap_or(0);
            if r.get::<i64, _>(2) == 0 {
                d.pending += n;
                d.oldest_pending_ms = r.get(4);
            } else {
                d.dead += n;
            }
        }
        Ok(out)
    }

    async fn drop_dead_letter(&self, delivery_id: &str, reason: &str, by: &str) -> Result<bool, StoreError> {
        let mut tx = self.write.begin().await?;
        let row = sqlx::query(
            "DELETE FROM outbox WHERE delivery_id = ? AND state = 2 RETURNING event_id, bridge, room, recipient, attempts, last_error",
        )
        .bind(delivery_id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO outbox_dropped (delivery_id, event_id, bridge, room, recipient, attempts, last_error, reason, dropped_by, dropped_ms) \
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (delivery_id) DO UPDATE SET reason = excluded.reason, \
             dropped_by = excluded.dropped_by, dropped_ms = excluded.dropped_ms",
        )
        .bind(delivery_id)
        .bind(row.get::<String, _>(0))
        .bind(row.get::<String, _>(1))
        .bind(row.get::<String, _>(2))
        .bind(row.get::<Option<String>, _>(3))
        .bind(row.get::<i64, _>(4))
        .bind(row.get::<Option<String>, _>(5))
        .bind(reason)
        .bind(by)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn audit(&self, who: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO admin_audit (at_ms, who, action, target, detail) VALUES (?, ?, ?, ?, ?)")
            .bind(now_ms())
            .bind(who)
            .bind(action)
            .bind(target)
            .bind(detail)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn audit_log(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM admin_audit WHERE id < ? ORDER BY id DESC LIMIT ?")
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.read)
            .await?;
        Ok(rows.iter().map(audit_entry).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::{archive, find, said};

    #[tokio::test]
    async fn an_archive_from_before_search_is_indexed_by_the_migration() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), false).await.unwrap();
        archive(&store).await;
        let edit = said(
            "e1",
            "p",
            "xmpp",
            ("alice@x", Some("alice")),
            6_000,
            Body::Edit { target: "pl".into(), text: causeway_core::Text::plain("poprawione") },
        );
        let retract = said("r1", "p", "hook", ("bot", None), 7_000, Body::Retract { target: "party".into(), moderated: false });
        store.commit(&[edit, retract]).await.unwrap();
        // As the archive stood before: no index; then the migration once
        // more, and the store opened again indexes what it left.
        sqlx::raw_sql("DROP TABLE archive_search; DROP INDEX archive_target").execute(&store.write).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(MIGRATIONS[4].2)).execute(&store.write).await.unwrap();
        assert!(find(&store, "budget", |_| {}).await.is_empty(), "not indexed yet");
        drop(store);
        let store = SqliteStore::open(&dir.path().join("t.db"), false).await.unwrap();
        assert_eq!(store.load_state("causeway", "search_backlog").await.unwrap(), None, "done");
        assert_eq!(find(&store, "poprawione", |_| {}).await, ["pl"]);
        assert!(find(&store, "zazolc", |_| {}).await.is_empty());
        assert!(find(&store, "party", |_| {}).await.is_empty());
        assert_eq!(find(&store, "party", |q| q.retracted = true).await, ["party"]);
        assert_eq!(find(&store, "budget", |_| {}).await, ["file"]);
        assert_eq!(find(&store, "बैठक", |_| {}).await, ["hi"]);
    }
}
