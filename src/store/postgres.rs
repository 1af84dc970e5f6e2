//! The PostgreSQL store: one pool, each write one transaction. Rows that
//! take sequence numbers (archive and outbox) are added by one transaction
//! at a time ([`take_turn`]), so their order is the order of the commits,
//! as with SQLite's one writer; several processes may share the database.
//! Many rows go in one statement, as arrays (`UNNEST`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use causeway_core::{Body, Committed, Event, IdKind, now_ms};

use crate::archive::export::{ExportLog, Exported, Range};
use crate::archive::files::{Kept, Outcome, Waiting};
use crate::archive::retention::{Hold, NewHold, Pruned, Stats};
use crate::archive::{Found, FoundSender, Hit, SearchKind, SearchQuery};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, QueryBuilder, Row, SqlSafeStr};

use super::common::{
    Indexed, RANKED_AMONG, audit_entry, broadcast_summary, export_log, hold_of, kind_code, kind_of, outbox_item, outbox_row, parse_event,
    recipient_status, requested_of, stored_portal,
};
use super::{
    AuditEntry, Author, Completion, LaneDepth, MapHit, NewDelivery, NewEvent, OutboxDepth, OutboxItem, OutboxRow, OutboxState, RemoteKey,
    Store, StoreError, Stored, StoredKind, StoredPortal,
};

mod search;

#[doc(hidden)]
pub use search::fuzz as fuzz_search;

/// The channel of PostgreSQL notifications sent when rows are added.
pub const OUTBOX_CHANNEL: &str = "causeway_outbox";

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/postgres/0001_initial.sql")),
    (2, "leases", include_str!("../../migrations/postgres/0002_leases.sql")),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS.iter().map(|(v, d, sql)| Migration::new(*v, (*d).into(), MigrationType::Simple, sql.into_sql_str(), false)).collect(),
    )
}

/// Connections of the pool: the writer, the lanes, the console and the API.
const CONNECTIONS: u32 = 10;

pub struct PostgresStore {
    pool: PgPool,
    wakeups: Wakeups,
}

/// How other instances learn that a transaction added outbox rows
/// (docs/scale-out.md): the one that holds their connection delivers them
/// at once instead of at its next look.
#[derive(Clone, Default)]
pub enum Wakeups {
    /// Nobody to tell (one instance alone).
    #[default]
    Quiet,
    /// A PostgreSQL notification on [`OUTBOX_CHANNEL`], sent as the
    /// transaction commits.
    Postgres,
    /// Notified after the commit, for whoever passes it on (NATS).
    Told(Arc<tokio::sync::Notify>),
}

impl PostgresStore {
    /// Connect to the database at `url` (`postgres://user:pass@host:port/db`;
    /// `?options[search_path]=s` keeps the tables in schema `s`), creating
    /// or migrating its tables if needed.
    pub async fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with(url, Wakeups::Quiet).await
    }

    /// [`PostgresStore::open`], telling others of added rows by `wakeups`.
    pub async fn open_with(url: &str, wakeups: Wakeups) -> Result<Self, StoreError> {
        let opts = PgConnectOptions::from_str(url)?;
        let pool = PgPoolOptions::new().max_connections(CONNECTIONS).connect_with(opts).await?;
        migrator().run(&pool).await?;
        Ok(PostgresStore { pool, wakeups })
    }

    /// Whether the transaction that adds rows also sends a notification.
    fn notifies(&self) -> bool {
        matches!(self.wakeups, Wakeups::Postgres)
    }

    /// A transaction that added rows has committed.
    fn added(&self) {
        if let Wakeups::Told(n) = &self.wakeups {
            n.notify_one();
        }
    }
}

/// Take the turn to add archive or outbox rows, held to the end of the
/// transaction: sequence numbers are then given in the order the
/// transactions commit, so a lane that read its rows up to a seq never
/// misses a lower one committed after (a sequence alone gives them as
/// transactions start). Taken first, before any row is locked.
///
/// With `notify` it also tells every instance on the database, once the
/// transaction commits, that rows were added ([`OUTBOX_CHANNEL`]), in the
/// same round trip.
async fn take_turn(conn: &mut PgConnection, notify: bool) -> Result<(), StoreError> {
    if notify {
        sqlx::query("SELECT pg_advisory_xact_lock('outbox'::regclass::oid::bigint), pg_notify($1, '')")
            .bind(OUTBOX_CHANNEL)
            .execute(conn)
            .await?;
    } else {
        sqlx::query("SELECT pg_advisory_xact_lock('outbox'::regclass::oid::bigint)").execute(conn).await?;
    }
    Ok(())
}

/// PostgreSQL's text holds no NUL (SQLite's does): one is kept as U+FFFD,
/// in what is stored and in what is looked up alike.
fn nul_free(s: &str) -> Cow<'_, str> {
    if s.contains('\0') { Cow::Owned(s.replace('\0', "\u{FFFD}")) } else { Cow::Borrowed(s) }
}

/// A column of texts, as an array to bind.
fn texts<'a>(each: impl Iterator<Item = &'a str>) -> Vec<Cow<'a, str>> {
    each.map(nul_free).collect()
}

/// A column of texts that may be NULL, as an array to bind.
fn maybe_texts<'a>(each: impl Iterator<Item = Option<&'a str>>) -> Vec<Option<Cow<'a, str>>> {
    each.map(|s| s.map(nul_free)).collect()
}

/// The event an edit, retraction, reaction or read marker names.
fn target_of(body: &Body) -> Option<&str> {
    match body {
        Body::Edit { target, .. } | Body::Retract { target, .. } | Body::Reaction { target, .. } | Body::Read { target } => {
            Some(target.as_str())
        }
        _ => None,
    }
}

/// The root of a message's thread.
fn thread_of(body: &Body) -> Option<&str> {
    match body {
        Body::Message { thread, .. } => thread.as_deref(),
        _ => None,
    }
}

/// A message's latest text as the index keeps it (without NUL), and
/// whether an edit changed it: unchanged, the message's own text.
fn latest(kept: String, original: String) -> (String, bool) {
    if kept == nul_free(&original) { (original, false) } else { (kept, true) }
}

const INSERT_ARCHIVE: &str = "\
    INSERT INTO archive (event_id, portal, at_ms, kind, origin_bridge, origin_room, sender, person, target, thread, event) \
    SELECT event_id, portal, at_ms, kind, origin_bridge, origin_room, sender, person, target, thread, event \
    FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
                $10::text[], $11::text[]) \
    WITH ORDINALITY AS v (event_id, portal, at_ms, kind, origin_bridge, origin_room, sender, person, target, thread, event, n) \
    ORDER BY n RETURNING event_id, seq";

/// Map rows; one already there (or twice in the rows) stays as it was.
const INSERT_MAP: &str = "\
    INSERT INTO message_map (bridge, room, remote_id, event_id, kind) \
    SELECT bridge, room, remote_id, event_id, kind \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[]) \
    WITH ORDINALITY AS v (bridge, room, remote_id, event_id, kind, n) \
    ORDER BY n ON CONFLICT DO NOTHING";

/// Outbox rows, at the end of their lanes in the rows' order.
const INSERT_OUTBOX: &str = "\
    INSERT INTO outbox (delivery_id, event_id, bridge, room, recipient, enqueued_ms) \
    SELECT delivery_id, event_id, bridge, room, recipient, $6 \
    FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
    WITH ORDINALITY AS v (delivery_id, event_id, bridge, room, recipient, n) \
    ORDER BY n RETURNING delivery_id, seq";

/// Search rows: the text's words, then the file names' (search::FILES_FROM).
const INSERT_SEARCH: &str = "\
    INSERT INTO archive_search (seq, text, files, files_tsv, tsv) \
    SELECT seq, text, files, files_tsv::tsvector, text_tsv::tsvector || files_tsv::tsvector \
    FROM UNNEST($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[]) AS v (seq, text, files, text_tsv, files_tsv)";

/// A message's search row changed: an edit's text (`$1`, its words `$2`)
/// in place of its text, or taken back (`$3`). `$4` names the message, or
/// an edit of it (followed to the message).
const MESSAGE_CHANGED: &str = "\
    UPDATE archive_search SET text = COALESCE($1, text), tsv = COALESCE($2::tsvector || files_tsv, tsv), retracted = retracted OR $3 \
    WHERE seq = (SELECT seq FROM archive WHERE kind = 'message' AND event_id = \
        COALESCE((SELECT target FROM archive WHERE kind = 'edit' AND event_id = $4), $4))";

const INSERT_RECIPIENTS: &str = "\
    INSERT INTO broadcast_recipients (broadcast_id, n, person, bridge, room, recipient, delivery_id, note) \
    SELECT $1, n - 1, person, bridge, room, recipient, delivery_id, note \
    FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[]) \
    WITH ORDINALITY AS v (person, bridge, room, recipient, delivery_id, note, n)";

impl PostgresStore {
    /// One transaction, read top to bottom: archive, message map, outbox,
    /// the search index and the files to keep (docs/archive.md), and a
    /// broadcast's recipients and plan.
    async fn commit_with(&self, batch: &[NewEvent], broadcast: Option<&crate::broadcast::Planned>) -> Result<Vec<Stored>, StoreError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut jsons = Vec::with_capacity(batch.len());
        for ne in batch {
            let e = &ne.event;
            jsons.push(serde_json::to_string(e).map_err(|err| StoreError::Corrupt(e.id.clone(), err))?);
        }
        let events: Vec<&Event> = batch.iter().map(|ne| &ne.event).collect();
        let mut tx = self.pool.begin().await?;
        take_turn(&mut tx, self.notifies()).await?;
        // RETURNING names each row's seq, by event or delivery id.
        let seq_of: HashMap<String, i64> = sqlx::query(INSERT_ARCHIVE)
            .bind(texts(events.iter().map(|e| e.id.as_str())))
            .bind(texts(events.iter().map(|e| e.portal.as_str())))
            .bind(events.iter().map(|e| e.at_ms).collect::<Vec<_>>())
            .bind(events.iter().map(|e| e.body.kind()).collect::<Vec<_>>())
            .bind(texts(events.iter().map(|e| e.origin.bridge.as_str())))
            .bind(texts(events.iter().map(|e| e.origin.room.as_str())))
            .bind(texts(events.iter().map(|e| e.sender.id.as_str())))
            .bind(maybe_texts(events.iter().map(|e| e.sender.person.as_deref())))
            .bind(maybe_texts(events.iter().map(|e| target_of(&e.body))))
            .bind(maybe_texts(events.iter().map(|e| thread_of(&e.body))))
            .bind(&jsons)
            .fetch_all(&mut *tx)
            .await?
            .iter()
            .map(|r| (r.get("event_id"), r.get("seq")))
            .collect();
        let seq_for = |e: &Event| seq_of.get(&*nul_free(&e.id)).copied();

        // Map rows: the origin's id, its aliases, and each delivery id (so an
        // echo of a delivery is recognised even before the target confirms it).
        let (mut bridges, mut rooms, mut remotes, mut ids, mut kinds) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ne in batch {
            let k = &ne.origin_key;
            let rows = std::iter::once((k.bridge.as_str(), k.room.as_str(), k.remote_id.as_str(), IdKind::Origin))
                .chain(ne.aliases.iter().map(|a| (k.bridge.as_str(), k.room.as_str(), a.as_str(), IdKind::Alias)))
                .chain(ne.deliveries.iter().map(|d| (d.bridge.as_str(), d.room.as_str(), d.id.as_str(), IdKind::DeliveryKey)));
            for (bridge, room, remote, kind) in rows {
                bridges.push(nul_free(bridge));
                rooms.push(nul_free(room));
                remotes.push(nul_free(remote));
                ids.push(nul_free(&ne.event.id));
                kinds.push(kind_code(kind));
            }
        }
        sqlx::query(INSERT_MAP).bind(bridges).bind(rooms).bind(remotes).bind(ids).bind(kinds).execute(&mut *tx).await?;

        let deliveries: Vec<(&NewDelivery, &str)> =
            batch.iter().flat_map(|ne| ne.deliveries.iter().map(move |d| (d, ne.event.id.as_str()))).collect();
        let mut outbox_seq_of: HashMap<String, i64> = HashMap::new();
        if !deliveries.is_empty() {
            outbox_seq_of = sqlx::query(INSERT_OUTBOX)
                .bind(texts(deliveries.iter().map(|(d, _)| d.id.as_str())))
                .bind(texts(deliveries.iter().map(|(_, event)| *event)))
                .bind(texts(deliveries.iter().map(|(d, _)| d.bridge.as_str())))
                .bind(texts(deliveries.iter().map(|(d, _)| d.room.as_str())))
                .bind(maybe_texts(deliveries.iter().map(|(d, _)| d.recipient.as_deref())))
                .bind(now_ms())
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| (r.get("delivery_id"), r.get("seq")))
                .collect();
        }

        // The search index: each message's text and file names, an edit's
        // text in place of its message's, a retraction marked. An edit or
        // retraction may name an edit of the message: it is followed to the
        // message.
        let (mut seqs, mut said, mut names, mut text_words, mut file_words) = (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ne in batch {
            let (Body::Message { text, attachments, .. }, Some(seq)) = (&ne.event.body, seq_for(&ne.event)) else { continue };
            let row = Indexed::of(&text.plain, attachments);
            seqs.push(seq);
            text_words.push(search::vector(&row.text, 1, search::TEXT_WORDS));
            file_words.push(search::vector(&row.files, search::FILES_FROM, search::FILE_WORDS));
            said.push(nul_free(&row.text).into_owned());
            names.push(nul_free(&row.files).into_owned());
        }
        if !seqs.is_empty() {
            sqlx::query(INSERT_SEARCH).bind(&seqs).bind(said).bind(names).bind(text_words).bind(file_words).execute(&mut *tx).await?;
        }
        for ne in batch {
            let (text, retracted, target) = match &ne.event.body {
                Body::Edit { target, text } => (Some(text.plain.as_str()), false, target),
                Body::Retract { target, .. } => (None, true, target),
                _ => continue,
            };
            sqlx::query(MESSAGE_CHANGED)
                .bind(text.map(nul_free))
                .bind(text.map(|t| search::vector(t, 1, search::TEXT_WORDS)))
                .bind(retracted)
                .bind(nul_free(target))
                .execute(&mut *tx)
                .await?;
        }

        // Every attachment of the batch's messages, waiting to be kept.
        let (file_seqs, file_ns): (Vec<i64>, Vec<i64>) = batch
            .iter()
            .filter_map(|ne| match &ne.event.body {
                Body::Message { attachments, .. } => Some((seq_for(&ne.event)?, attachments.len() as i64)),
                _ => None,
            })
            .flat_map(|(seq, count)| (0..count).map(move |n| (seq, n)))
            .unzip();
        if !file_seqs.is_empty() {
            sqlx::query("INSERT INTO archive_file (seq, n) SELECT * FROM UNNEST($1::bigint[], $2::bigint[]) ON CONFLICT DO NOTHING")
                .bind(file_seqs)
                .bind(file_ns)
                .execute(&mut *tx)
                .await?;
        }

        // A planned broadcast's recipients, and its plan.
        if let Some(b) = broadcast {
            let r = &b.recipients;
            if !r.is_empty() {
                sqlx::query(INSERT_RECIPIENTS)
                    .bind(nul_free(&b.id))
                    .bind(maybe_texts(r.iter().map(|r| r.person.as_deref())))
                    .bind(maybe_texts(r.iter().map(|r| r.bridge.as_deref())))
                    .bind(maybe_texts(r.iter().map(|r| r.room.as_deref())))
                    .bind(maybe_texts(r.iter().map(|r| r.account.as_deref())))
                    .bind(maybe_texts(r.iter().map(|r| r.delivery_id.as_deref())))
                    .bind(maybe_texts(r.iter().map(|r| r.note.as_deref())))
                    .execute(&mut *tx)
                    .await?;
            }
            sqlx::query("UPDATE broadcasts SET event_id = $1, planned_ms = $2 WHERE id = $3")
                .bind(nul_free(&b.event_id))
                .bind(now_ms())
                .bind(nul_free(&b.id))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.added();
        Ok(batch
            .iter()
            .map(|ne| Stored {
                seq: seq_for(&ne.event).unwrap_or_default(),
                outbox: ne
                    .deliveries
                    .iter()
                    .map(|d| outbox_seq_of.get(&*nul_free(&d.id)).copied())
                    .collect::<Option<_>>()
                    .unwrap_or_default(),
            })
            .collect())
    }

    /// A kept file noted, its content counted once more; whether the
    /// content is new. Nothing is noted for an attachment no longer
    /// waiting (its message was deleted meanwhile).
    async fn file_kept(&self, seq: i64, n: i64, file: &Kept) -> Result<bool, StoreError> {
        let mut tx = self.pool.begin().await?;
        let noted =
            sqlx::query("UPDATE archive_file SET state = 1, sha256 = $1, mime = $2, reason = NULL WHERE seq = $3 AND n = $4 AND state = 0")
                .bind(nul_free(&file.sha256))
                .bind(file.mime.as_deref().map(nul_free))
                .bind(seq)
                .bind(n)
                .execute(&mut *tx)
                .await?;
        if noted.rows_affected() == 0 {
            return Ok(false);
        }
        let refs: i64 = sqlx::query_scalar(
            "INSERT INTO archive_blob (sha256, size, refs) VALUES ($1, $2, 1) \
             ON CONFLICT (sha256) DO UPDATE SET refs = archive_blob.refs + 1 RETURNING refs",
        )
        .bind(nul_free(&file.sha256))
        .bind(file.size as i64)
        .fetch_one(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(refs == 1)
    }

    /// Up to `n` messages of `portal` just before (or after) `seq`, in order.
    async fn around(&self, portal: &str, seq: i64, n: u32, after: bool, retracted: bool) -> Result<Vec<Found>, StoreError> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let sql = if after {
            "SELECT a.seq, a.event_id, a.event, s.text, s.retracted FROM archive a JOIN archive_search s ON s.seq = a.seq \
             WHERE a.portal = $1 AND a.kind = 'message' AND a.seq > $2 AND ($3 OR NOT s.retracted) ORDER BY a.seq LIMIT $4"
        } else {
            "SELECT a.seq, a.event_id, a.event, s.text, s.retracted FROM archive a JOIN archive_search s ON s.seq = a.seq \
             WHERE a.portal = $1 AND a.kind = 'message' AND a.seq < $2 AND ($3 OR NOT s.retracted) ORDER BY a.seq DESC LIMIT $4"
        };
        let rows = sqlx::query(sql).bind(nul_free(portal)).bind(seq).bind(retracted).bind(i64::from(n)).fetch_all(&self.pool).await?;
        let mut found = rows.iter().map(found).collect::<Result<Vec<_>, _>>()?;
        if !after {
            found.reverse();
        }
        Ok(found)
    }
}

/// An archived message with its search row, as search shows it.
fn found(r: &PgRow) -> Result<Found, StoreError> {
    let id: String = r.get("event_id");
    let e = parse_event(&id, r.get("event"))?;
    let (original, attachments, reply_to, thread) = match e.body {
        Body::Message { text, attachments, reply_to, thread, .. } => (text.plain, attachments, reply_to, thread),
        _ => (String::new(), Vec::new(), None, None),
    };
    let (text, edited) = latest(r.get("text"), original);
    Ok(Found {
        seq: r.get("seq"),
        event_id: e.id,
        portal: e.portal,
        at_ms: e.at_ms,
        network: e.origin.bridge,
        room: e.origin.room,
        sender: FoundSender { id: e.sender.id, name: e.sender.name, person: e.sender.person },
        edited,
        text,
        retracted: r.get("retracted"),
        attachments,
        reply_to,
        thread,
    })
}

#[async_trait]
impl Store for PostgresStore {
    async fn archived_portals(&self, person: Option<&str>) -> Result<Vec<String>, StoreError> {
        // In byte order, as SQLite orders them.
        let rows = match person {
            None => sqlx::query("SELECT portal FROM archive GROUP BY portal ORDER BY portal COLLATE \"C\"").fetch_all(&self.pool).await?,
            Some(p) => {
                sqlx::query(
                    "SELECT portal FROM archive WHERE person = $1 OR origin_bridge || ':' || sender = $1 \
                     GROUP BY portal ORDER BY portal COLLATE \"C\"",
                )
                .bind(nul_free(p))
                .fetch_all(&self.pool)
                .await?
            }
        };
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn archive_seq(&self) -> Result<i64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM archive").fetch_one(&self.pool).await?;
        Ok(n.unwrap_or(0))
    }

    async fn count_events(&self, portal: &str, range: Range) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM archive WHERE portal = $1 AND ($2::bigint IS NULL OR at_ms >= $2) \
             AND ($3::bigint IS NULL OR at_ms < $3) AND ($4::bigint IS NULL OR seq <= $4)",
        )
        .bind(nul_free(portal))
        .bind(range.since_ms)
        .bind(range.until_ms)
        .bind(range.upto_seq)
        .fetch_one(&self.pool)
        .await?;
        Ok(n.max(0) as u64)
    }

    async fn export_page(&self, portal: &str, range: Range, after_seq: i64, limit: u32) -> Result<Vec<Exported>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.seq, a.event_id, a.event, s.text AS text, s.retracted AS retracted \
             FROM archive a LEFT JOIN archive_search s ON s.seq = a.seq \
             WHERE a.portal = $1 AND a.seq > $2 AND ($3::bigint IS NULL OR a.at_ms >= $3) AND ($4::bigint IS NULL OR a.at_ms < $4) \
             AND ($5::bigint IS NULL OR a.seq <= $5) ORDER BY a.seq LIMIT $6",
        )
        .bind(nul_free(portal))
        .bind(after_seq)
        .bind(range.since_ms)
        .bind(range.until_ms)
        .bind(range.upto_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        let mut page = Vec::with_capacity(rows.len());
        for r in &rows {
            let event = parse_event(r.get("event_id"), r.get("event"))?;
            let text = match (&event.body, r.get::<Option<String>, _>("text")) {
                (Body::Message { text, .. }, Some(kept)) => Some(latest(kept, text.plain.clone()).0),
                (_, kept) => kept,
            };
            page.push(Exported {
                seq: r.get("seq"),
                event,
                text,
                retracted: r.get::<Option<bool>, _>("retracted").unwrap_or(false),
                reactions: Vec::new(),
                kept: Default::default(),
            });
        }
        // The reactions to this page's messages, in the archive's order.
        let ids: Vec<String> =
            page.iter().filter(|e| matches!(e.event.body, Body::Message { .. })).map(|e| nul_free(&e.event.id).into_owned()).collect();
        let mut reactions = Vec::new();
        if !ids.is_empty() {
            let rows = sqlx::query("SELECT event_id, event FROM archive WHERE kind = 'reaction' AND target = ANY($1) ORDER BY seq")
                .bind(ids)
                .fetch_all(&self.pool)
                .await?;
            for r in &rows {
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
        if !with_files.is_empty() {
            let rows = sqlx::query(
                "SELECT f.seq, f.n, f.sha256, f.mime, b.size FROM archive_file f JOIN archive_blob b ON b.sha256 = f.sha256 \
                 WHERE f.state = 1 AND f.seq = ANY($1)",
            )
            .bind(with_files)
            .fetch_all(&self.pool)
            .await?;
            for r in rows {
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
        let mut tx = self.pool.begin().await?;
        // No outbox row or edit may come for what is deleted meanwhile.
        take_turn(&mut tx, false).await?;
        let doomed: Vec<(i64, String)> = sqlx::query_as(
            "SELECT a.seq, a.event_id FROM archive a WHERE a.portal = $1 AND a.at_ms < $2 \
             AND NOT EXISTS (SELECT 1 FROM outbox o WHERE o.event_id = a.event_id) \
             AND NOT EXISTS (SELECT 1 FROM archive_hold h WHERE h.released_ms IS NULL \
                 AND (h.portal = a.portal OR h.person = a.person OR h.person = a.origin_bridge || ':' || a.sender)) \
             ORDER BY a.seq LIMIT $3",
        )
        .bind(nul_free(portal))
        .bind(before_ms)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        if doomed.is_empty() {
            tx.commit().await?;
            return Ok(Pruned::default());
        }
        let seqs: Vec<i64> = doomed.iter().map(|(seq, _)| *seq).collect();
        let ids: Vec<&str> = doomed.iter().map(|(_, id)| id.as_str()).collect();
        // The files first: one being kept right now is counted, or not noted.
        sqlx::query("SELECT 1 FROM archive_file WHERE seq = ANY($1) FOR UPDATE").bind(&seqs).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM archive_search WHERE seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?;
        sqlx::query("DELETE FROM message_map WHERE event_id = ANY($1)").bind(&ids).execute(&mut *tx).await?;
        sqlx::query(
            "UPDATE archive_blob b SET refs = b.refs - f.n FROM (SELECT sha256, COUNT(*) AS n FROM archive_file \
             WHERE state = 1 AND seq = ANY($1) GROUP BY sha256) f WHERE b.sha256 = f.sha256",
        )
        .bind(&seqs)
        .execute(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM archive_file WHERE seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?;
        let blobs: Vec<String> =
            sqlx::query_scalar("DELETE FROM archive_blob WHERE refs <= 0 RETURNING sha256").fetch_all(&mut *tx).await?;
        let events = sqlx::query("DELETE FROM archive WHERE seq = ANY($1)").bind(&seqs).execute(&mut *tx).await?.rows_affected();
        tx.commit().await?;
        Ok(Pruned { events, blobs })
    }

    async fn prune_message_state(&self, bridge: &str, before_ms: i64) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM bridge_state WHERE bridge = $1 AND message_ms < $2")
            .bind(nul_free(bridge))
            .bind(before_ms)
            .execute(&self.pool)
            .await?;
        Ok(done.rows_affected())
    }

    async fn add_hold(&self, hold: &NewHold) -> Result<Hold, StoreError> {
        let trimmed = |s: &Option<String>| s.as_deref().map(str::trim).filter(|s| !s.is_empty()).map(|s| nul_free(s).into_owned());
        let row = sqlx::query("INSERT INTO archive_hold (portal, person, reason, set_by, set_ms) VALUES ($1, $2, $3, $4, $5) RETURNING *")
            .bind(trimmed(&hold.portal))
            .bind(trimmed(&hold.person))
            .bind(nul_free(hold.reason.trim()))
            .bind(nul_free(hold.by.trim()))
            .bind(now_ms())
            .fetch_one(&self.pool)
            .await?;
        Ok(hold_of(&row))
    }

    async fn holds(&self, released_too: bool) -> Result<Vec<Hold>, StoreError> {
        let rows = sqlx::query("SELECT * FROM archive_hold WHERE released_ms IS NULL OR $1 ORDER BY id")
            .bind(released_too)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(hold_of).collect())
    }

    async fn release_hold(&self, id: i64, by: &str) -> Result<Option<Hold>, StoreError> {
        let row =
            sqlx::query("UPDATE archive_hold SET released_ms = $1, released_by = $2 WHERE id = $3 AND released_ms IS NULL RETURNING *")
                .bind(now_ms())
                .bind(nul_free(by.trim()))
                .bind(id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row.as_ref().map(hold_of))
    }

    async fn log_export(&self, e: &ExportLog) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO archive_export (at_ms, by, format, portals, person, since_ms, until_ms, events, output) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(e.at_ms)
        .bind(nul_free(&e.by))
        .bind(nul_free(&e.format))
        .bind(serde_json::to_string(&e.portals).unwrap_or_else(|_| "[]".into()))
        .bind(e.person.as_deref().map(nul_free))
        .bind(e.since_ms)
        .bind(e.until_ms)
        .bind(e.events as i64)
        .bind(nul_free(&e.output))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn exports(&self, limit: u32) -> Result<Vec<ExportLog>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM archive_export ORDER BY id DESC LIMIT $1").bind(i64::from(limit)).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(export_log).collect())
    }

    async fn archive_stats(&self) -> Result<Stats, StoreError> {
        // `bytes`: what the tables of the store's schema take, with their
        // indexes and TOAST (SQLite: the database file).
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM archive), \
                    (SELECT COALESCE(SUM(pg_total_relation_size(c.oid)), 0)::bigint FROM pg_class c \
                        JOIN pg_namespace s ON s.oid = c.relnamespace WHERE s.nspname = current_schema() AND c.relkind = 'r'), \
                    (SELECT COUNT(*) FROM archive_hold WHERE released_ms IS NULL)",
        )
        .fetch_one(&self.pool)
        .await?;
        let n = |i: usize| row.get::<i64, _>(i).max(0) as u64;
        let exports = sqlx::query("SELECT format, COUNT(*) FROM archive_export GROUP BY format")
            .fetch_all(&self.pool)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get::<i64, _>(1).max(0) as u64))
            .collect();
        Ok(Stats { events: n(0), bytes: n(1), holds: n(2), file_bytes: self.file_bytes().await?, exports })
    }

    async fn files_waiting(&self, now_ms: i64, limit: u32) -> Result<Vec<Waiting>, StoreError> {
        let rows = sqlx::query(
            "SELECT f.seq, f.n, f.tries, a.portal, a.event_id, a.event FROM archive_file f JOIN archive a ON a.seq = f.seq \
             WHERE f.state = 0 AND f.next_ms <= $1 ORDER BY f.next_ms, f.seq, f.n LIMIT $2",
        )
        .bind(now_ms)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        let (state, reason, next_ms): (i64, Option<&str>, i64) = match outcome {
            Outcome::Kept(file) => return self.file_kept(seq, n, file).await,
            Outcome::Retry { next_ms, reason } => (0, Some(reason.as_str()), *next_ms),
            Outcome::Link => (2, None, 0),
            Outcome::Refused(why) => (3, Some(why.as_str()), 0),
            Outcome::Failed(why) => (4, Some(why.as_str()), 0),
        };
        sqlx::query("UPDATE archive_file SET state = $1, reason = $2, next_ms = $3, tries = tries + $4 WHERE seq = $5 AND n = $6")
            .bind(state)
            .bind(reason.map(nul_free))
            .bind(next_ms)
            .bind(i64::from(matches!(outcome, Outcome::Retry { .. } | Outcome::Failed(_))))
            .bind(seq)
            .bind(n)
            .execute(&self.pool)
            .await?;
        Ok(false)
    }

    async fn blob_known(&self, sha256: &str) -> Result<bool, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM archive_blob WHERE sha256 = $1 AND refs > 0")
            .bind(nul_free(sha256))
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    async fn file_bytes(&self) -> Result<u64, StoreError> {
        let n: Option<i64> = sqlx::query_scalar("SELECT SUM(size)::bigint FROM archive_blob WHERE refs > 0").fetch_one(&self.pool).await?;
        Ok(n.unwrap_or(0).max(0) as u64)
    }

    /// Two steps: the best `limit` messages, ranked among the newest
    /// [`RANKED_AMONG`] matches (the index gives the matches, newest first,
    /// and stops there; each one's archive row is read only when a filter
    /// needs it), then only those read in full, with their snippets.
    async fn search(&self, s: &SearchQuery) -> Result<Vec<Hit>, StoreError> {
        let terms = search::terms(&s.fts);
        let Some(words) = search::tsquery(&terms) else { return Ok(Vec::new()) };
        let filtered = s.portal.is_some() || s.person.is_some() || s.network.is_some() || s.since_ms.is_some() || s.until_ms.is_some();
        let mut q = QueryBuilder::<Postgres>::new("SELECT t.seq, ts_rank(t.tsv, ");
        // Divided by the log of its length, as BM25 weighs long messages down.
        q.push_bind(words.as_str()).push("::tsquery, 1)::float8 AS score FROM (SELECT s.seq, s.tsv FROM archive_search s ");
        if filtered {
            q.push("JOIN archive a ON a.seq = s.seq ");
        }
        q.push("WHERE s.tsv @@ ").push_bind(words.as_str()).push("::tsquery");
        if let Some(p) = &s.portal {
            q.push(" AND a.portal = ").push_bind(nul_free(p));
        }
        if let Some(p) = &s.person {
            q.push(" AND (a.person = ")
                .push_bind(nul_free(p))
                .push(" OR a.origin_bridge || ':' || a.sender = ")
                .push_bind(nul_free(p))
                .push(")");
        }
        if let Some(n) = &s.network {
            q.push(" AND a.origin_bridge = ").push_bind(nul_free(n));
        }
        if let Some(t) = s.since_ms {
            q.push(" AND a.at_ms >= ").push_bind(t);
        }
        if let Some(t) = s.until_ms {
            q.push(" AND a.at_ms < ").push_bind(t);
        }
        if !s.retracted {
            q.push(" AND NOT s.retracted");
        }
        if s.kind == Some(SearchKind::File) {
            // Every attachment of a message has its row (noted at commit).
            q.push(" AND EXISTS (SELECT 1 FROM archive_file f WHERE f.seq = s.seq)");
        }
        q.push(" ORDER BY s.seq DESC LIMIT ")
            .push_bind(i64::from(RANKED_AMONG))
            .push(") t ORDER BY score DESC, t.seq DESC LIMIT ")
            .push_bind(i64::from(s.limit));
        let best: Vec<(i64, f64)> = q.build().fetch_all(&self.pool).await?.iter().map(|r| (r.get("seq"), r.get("score"))).collect();
        if best.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(
            "SELECT a.seq, a.event_id, a.event, s.text, s.files, s.retracted FROM archive_search s JOIN archive a ON a.seq = s.seq \
             WHERE s.seq = ANY($1)",
        )
        .bind(best.iter().map(|(seq, _)| *seq).collect::<Vec<_>>())
        .fetch_all(&self.pool)
        .await?;
        let mut rows: HashMap<i64, PgRow> = rows.into_iter().map(|r| (r.get("seq"), r)).collect();
        let mut hits = Vec::with_capacity(best.len());
        for (seq, score) in best {
            let Some(r) = rows.remove(&seq) else { continue };
            let message = found(&r)?;
            let snippet = search::snippet(r.get("text"), r.get("files"), &terms);
            let before = self.around(&message.portal, message.seq, s.context, false, s.retracted).await?;
            let after = self.around(&message.portal, message.seq, s.context, true, s.retracted).await?;
            hits.push(Hit { score, snippet, message, before, after });
        }
        Ok(hits)
    }

    async fn lookup_remotes(&self, keys: &[RemoteKey]) -> Result<HashMap<RemoteKey, MapHit>, StoreError> {
        let mut found = HashMap::new();
        if keys.is_empty() {
            return Ok(found);
        }
        // By each key's place among them: the keys come back as they were asked.
        let rows = sqlx::query(
            "SELECT k.i, m.event_id, m.kind, a.origin_bridge, a.sender, a.person, a.thread \
             FROM UNNEST($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS k (bridge, room, remote_id, i) \
             JOIN message_map m ON m.bridge = k.bridge AND m.room = k.room AND m.remote_id = k.remote_id \
             LEFT JOIN archive a ON a.event_id = m.event_id",
        )
        .bind(texts(keys.iter().map(|k| k.bridge.as_str())))
        .bind(texts(keys.iter().map(|k| k.room.as_str())))
        .bind(texts(keys.iter().map(|k| k.remote_id.as_str())))
        .fetch_all(&self.pool)
        .await?;
        for r in rows {
            let Some(key) = usize::try_from(r.get::<i64, _>("i") - 1).ok().and_then(|i| keys.get(i)) else { continue };
            let kind = kind_of(r.get("kind"));
            let author = r.get::<Option<String>, _>("origin_bridge").map(|bridge| Author {
                bridge,
                sender: r.get("sender"),
                person: r.get("person"),
            });
            found.insert(
                key.clone(),
                MapHit {
                    event_id: r.get("event_id"),
                    origin: matches!(kind, Some(IdKind::Origin | IdKind::Alias)),
                    author,
                    thread: r.get("thread"),
                },
            );
        }
        Ok(found)
    }

    async fn remote_for(&self, event_id: &str, bridge: &str, room: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT remote_id FROM message_map WHERE event_id = $1 AND bridge = $2 AND room = $3 \
             ORDER BY CASE kind WHEN $4 THEN 0 WHEN $5 THEN 1 WHEN $6 THEN 2 ELSE 3 END LIMIT 1",
        )
        .bind(nul_free(event_id))
        .bind(nul_free(bridge))
        .bind(nul_free(room))
        .bind(kind_code(IdKind::Reported))
        .bind(kind_code(IdKind::Origin))
        .bind(kind_code(IdKind::DeliveryKey))
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn ids_of(&self, bridge: &str, room: &str, remote_id: &str) -> Result<Vec<(String, IdKind)>, StoreError> {
        let rows = sqlx::query(
            "SELECT m.remote_id, m.kind FROM message_map m WHERE m.bridge = $1 AND m.room = $2 AND m.event_id = \
             (SELECT event_id FROM message_map WHERE bridge = $1 AND room = $2 AND remote_id = $3)",
        )
        .bind(nul_free(bridge))
        .bind(nul_free(room))
        .bind(nul_free(remote_id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get(0), kind_of(r.get(1)).unwrap_or(IdKind::Alias))).collect())
    }

    async fn commit(&self, batch: &[NewEvent]) -> Result<Vec<Stored>, StoreError> {
        self.commit_with(batch, None).await
    }

    async fn commit_broadcast(&self, event: &NewEvent, planned: &crate::broadcast::Planned) -> Result<Stored, StoreError> {
        let mut stored = self.commit_with(std::slice::from_ref(event), Some(planned)).await?;
        Ok(stored.pop().unwrap_or(Stored { seq: 0, outbox: Vec::new() }))
    }

    async fn request_broadcast(&self, b: &crate::broadcast::Requested) -> Result<(), StoreError> {
        let request = serde_json::to_string(&b.request).map_err(|e| StoreError::Corrupt(b.id.clone(), e))?;
        sqlx::query("INSERT INTO broadcasts (id, requested_ms, requested_by, request) VALUES ($1, $2, $3, $4)")
            .bind(nul_free(&b.id))
            .bind(b.requested_ms)
            .bind(nul_free(&b.requested_by))
            .bind(request)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn refuse_broadcast(&self, id: &str, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE broadcasts SET error = $1, planned_ms = $2 WHERE id = $3 AND event_id IS NULL")
            .bind(nul_free(error))
            .bind(now_ms())
            .bind(nul_free(id))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn unplanned_broadcasts(&self) -> Result<Vec<crate::broadcast::Requested>, StoreError> {
        let rows = sqlx::query(
            "SELECT id, requested_ms, requested_by, request FROM broadcasts WHERE event_id IS NULL AND error IS NULL ORDER BY requested_ms",
        )
        .fetch_all(&self.pool)
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
             FROM broadcasts b WHERE ($1::text IS NULL OR b.id = $1) ORDER BY b.requested_ms DESC LIMIT $2",
        )
        .bind(id.map(nul_free))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(broadcast_summary).collect()
    }

    async fn broadcast_recipients(&self, id: &str) -> Result<Vec<crate::broadcast::RecipientStatus>, StoreError> {
        let rows = sqlx::query(
            "SELECT r.person, r.bridge, r.room, r.recipient, r.delivery_id, r.note, o.state, o.attempts, o.last_error, \
             d.reason AS dropped, d.last_error AS dropped_error FROM broadcast_recipients r \
             LEFT JOIN outbox o ON o.delivery_id = r.delivery_id LEFT JOIN outbox_dropped d ON d.delivery_id = r.delivery_id \
             WHERE r.broadcast_id = $1 ORDER BY r.n",
        )
        .bind(nul_free(id))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(recipient_status).collect())
    }

    async fn pending(&self, bridge: &str, room: &str, after_seq: i64, limit: u32) -> Result<Vec<OutboxItem>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.seq, o.delivery_id, o.attempts, o.enqueued_ms, o.first_failed_ms, o.recipient, o.event_id, a.event FROM outbox o \
             JOIN archive a ON a.event_id = o.event_id \
             WHERE o.bridge = $1 AND o.room = $2 AND o.state = 0 AND o.seq > $3 ORDER BY o.seq LIMIT $4",
        )
        .bind(nul_free(bridge))
        .bind(nul_free(room))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_item).collect()
    }

    async fn lanes_after(&self, after_seq: i64) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query("SELECT bridge, room, MAX(seq) FROM outbox WHERE seq > $1 AND state = 0 GROUP BY bridge, room")
            .bind(after_seq)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect())
    }

    async fn max_outbox_seq(&self) -> Result<i64, StoreError> {
        // The sequence keeps the high-water mark after rows are deleted; with
        // the turn, no transaction holds a number it has not committed.
        let mut tx = self.pool.begin().await?;
        take_turn(&mut tx, false).await?;
        let seq: i64 =
            sqlx::query_scalar("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM outbox_seq").fetch_one(&mut *tx).await?;
        tx.commit().await?;
        Ok(seq)
    }

    async fn complete(&self, done: &[Completion]) -> Result<(), StoreError> {
        if done.is_empty() {
            return Ok(());
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM outbox WHERE seq = ANY($1)")
            .bind(done.iter().map(|c| c.seq).collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        let reported: Vec<&Completion> = done.iter().filter(|c| c.remote_id.as_ref().is_some_and(|r| *r != c.delivery_id)).collect();
        if !reported.is_empty() {
            sqlx::query(INSERT_MAP)
                .bind(texts(reported.iter().map(|c| c.bridge.as_str())))
                .bind(texts(reported.iter().map(|c| c.room.as_str())))
                .bind(texts(reported.iter().map(|c| c.remote_id.as_deref().unwrap_or_default())))
                .bind(texts(reported.iter().map(|c| c.event_id.as_str())))
                .bind(vec![kind_code(IdKind::Reported); reported.len()])
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn record_failure(&self, seq: i64, attempts: u32, next_attempt_ms: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = $1, next_attempt_ms = $2, last_error = $3, first_failed_ms = COALESCE(first_failed_ms, $4) \
             WHERE seq = $5",
        )
        .bind(i64::from(attempts))
        .bind(next_attempt_ms)
        .bind(nul_free(error))
        .bind(now_ms())
        .bind(seq)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn dead_letter(&self, seq: i64, attempts: u32, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET state = 2, attempts = $1, next_attempt_ms = NULL, last_error = $2 WHERE seq = $3")
            .bind(i64::from(attempts))
            .bind(nul_free(error))
            .bind(seq)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn outbox_depths(&self) -> Result<HashMap<String, OutboxDepth>, StoreError> {
        let rows = sqlx::query("SELECT bridge, state, COUNT(*) FROM outbox GROUP BY bridge, state").fetch_all(&self.pool).await?;
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
        let mut tx = self.pool.begin().await?;
        take_turn(&mut tx, self.notifies()).await?;
        let row = sqlx::query("DELETE FROM outbox WHERE delivery_id = $1 AND state = 2 RETURNING event_id, bridge, room, recipient")
            .bind(nul_free(delivery_id))
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        sqlx::query("INSERT INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms, recipient) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(nul_free(delivery_id))
            .bind(row.get::<String, _>(0))
            .bind(row.get::<String, _>(1))
            .bind(row.get::<String, _>(2))
            .bind(now_ms())
            .bind(row.get::<Option<String>, _>(3))
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        self.added();
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
        let mut tx = self.pool.begin().await?;
        take_turn(&mut tx, self.notifies()).await?;
        let done = sqlx::query(
            "INSERT INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms, recipient, state, attempts, last_error) \
             VALUES ($1, $2, $3, $4, $5, $6, 2, 1, $7) ON CONFLICT DO NOTHING",
        )
        .bind(nul_free(delivery_id))
        .bind(nul_free(event_id))
        .bind(nul_free(bridge))
        .bind(nul_free(room))
        .bind(now_ms())
        .bind(nul_free(recipient))
        .bind(nul_free(error))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        self.added();
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_matching(&self, bridge: Option<&str>, room: Option<&str>) -> Result<u64, StoreError> {
        // Each row goes to the end of its lane in the order it had; the same
        // delivery ids, so a target that got one already sees no duplicate.
        let mut tx = self.pool.begin().await?;
        take_turn(&mut tx, self.notifies()).await?;
        let mut rows: Vec<(i64, String, String, String, String, Option<String>)> = sqlx::query_as(
            "DELETE FROM outbox WHERE state = 2 AND ($1::text IS NULL OR bridge = $1) AND ($2::text IS NULL OR room = $2) \
             RETURNING seq, delivery_id, event_id, bridge, room, recipient",
        )
        .bind(bridge.map(nul_free))
        .bind(room.map(nul_free))
        .fetch_all(&mut *tx)
        .await?;
        rows.sort_by_key(|r| r.0);
        if !rows.is_empty() {
            sqlx::query(INSERT_OUTBOX)
                .bind(rows.iter().map(|r| r.1.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.2.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.3.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.4.as_str()).collect::<Vec<_>>())
                .bind(rows.iter().map(|r| r.5.as_deref()).collect::<Vec<_>>())
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        self.added();
        Ok(rows.len() as u64)
    }

    async fn history(&self, portal: &str, after_seq: i64, limit: u32) -> Result<Vec<Committed>, StoreError> {
        let rows = sqlx::query("SELECT seq, event_id, event FROM archive WHERE portal = $1 AND seq > $2 ORDER BY seq LIMIT $3")
            .bind(nul_free(portal))
            .bind(after_seq)
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(Committed { seq: r.get(0), event: parse_event(r.get(1), r.get(2))? })).collect()
    }

    async fn load_state(&self, bridge: &str, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT value FROM bridge_state WHERE bridge = $1 AND key = $2")
            .bind(nul_free(bridge))
            .bind(nul_free(key))
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn save_message_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bridge_state (bridge, key, value, message_ms) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (bridge, key) DO UPDATE SET value = excluded.value, message_ms = excluded.message_ms",
        )
        .bind(nul_free(bridge))
        .bind(nul_free(key))
        .bind(nul_free(value))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn save_state(&self, bridge: &str, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO bridge_state (bridge, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (bridge, key) DO UPDATE SET value = excluded.value",
        )
        .bind(nul_free(bridge))
        .bind(nul_free(key))
        .bind(nul_free(value))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn delete_state(&self, bridge: &str, key: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM bridge_state WHERE bridge = $1 AND key = $2")
            .bind(nul_free(bridge))
            .bind(nul_free(key))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn save_portal(&self, portal: &StoredPortal) -> Result<(), StoreError> {
        let links = serde_json::to_string(&portal.links).expect("links serialize");
        let kind: i64 = match portal.kind {
            StoredKind::Direct => 0,
            StoredKind::Console => 1,
        };
        sqlx::query(
            "INSERT INTO portals (id, created_ms, links, kind) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO UPDATE SET links = excluded.links",
        )
        .bind(nul_free(&portal.id))
        .bind(portal.created_ms)
        .bind(links)
        .bind(kind)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    async fn load_portals(&self) -> Result<Vec<StoredPortal>, StoreError> {
        let rows = sqlx::query("SELECT id, created_ms, links, kind FROM portals ORDER BY created_ms, id COLLATE \"C\"")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(stored_portal).collect()
    }

    async fn delete_portal(&self, id: &str) -> Result<bool, StoreError> {
        Ok(sqlx::query("DELETE FROM portals WHERE id = $1").bind(nul_free(id)).execute(&self.pool).await?.rows_affected() > 0)
    }

    async fn find_outbox(
        &self,
        state: OutboxState,
        bridge: Option<&str>,
        room: Option<&str>,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let state: i64 = match state {
            OutboxState::Pending => 0,
            OutboxState::Dead => 2,
        };
        let rows = sqlx::query(
            "SELECT o.seq, o.delivery_id, o.event_id, a.portal, a.kind, o.bridge, o.room, o.attempts, o.enqueued_ms, \
             o.next_attempt_ms, o.last_error, o.recipient FROM outbox o JOIN archive a ON a.event_id = o.event_id \
             WHERE o.state = $1 AND ($2::text IS NULL OR o.bridge = $2) AND ($3::text IS NULL OR o.room = $3) AND o.seq > $4 \
             ORDER BY o.seq LIMIT $5",
        )
        .bind(state)
        .bind(bridge.map(nul_free))
        .bind(room.map(nul_free))
        .bind(after_seq)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(outbox_row).collect())
    }

    async fn lane_depths(&self) -> Result<HashMap<(String, String), LaneDepth>, StoreError> {
        let rows = sqlx::query("SELECT bridge, room, state, COUNT(*), MIN(enqueued_ms) FROM outbox GROUP BY bridge, room, state")
            .fetch_all(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query(
            "DELETE FROM outbox WHERE delivery_id = $1 AND state = 2 RETURNING event_id, bridge, room, recipient, attempts, last_error",
        )
        .bind(nul_free(delivery_id))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        sqlx::query(
            "INSERT INTO outbox_dropped (delivery_id, event_id, bridge, room, recipient, attempts, last_error, reason, dropped_by, dropped_ms) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) ON CONFLICT (delivery_id) DO UPDATE SET reason = excluded.reason, \
             dropped_by = excluded.dropped_by, dropped_ms = excluded.dropped_ms",
        )
        .bind(nul_free(delivery_id))
        .bind(row.get::<String, _>(0))
        .bind(row.get::<String, _>(1))
        .bind(row.get::<String, _>(2))
        .bind(row.get::<Option<String>, _>(3))
        .bind(row.get::<i64, _>(4))
        .bind(row.get::<Option<String>, _>(5))
        .bind(nul_free(reason))
        .bind(nul_free(by))
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn audit(&self, who: &str, action: &str, target: &str, detail: &str) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO admin_audit (at_ms, who, action, target, detail) VALUES ($1, $2, $3, $4, $5)")
            .bind(now_ms())
            .bind(nul_free(who))
            .bind(nul_free(action))
            .bind(nul_free(target))
            .bind(nul_free(detail))
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn audit_log(&self, before_id: Option<i64>, limit: u32) -> Result<Vec<AuditEntry>, StoreError> {
        let rows = sqlx::query("SELECT * FROM admin_audit WHERE id < $1 ORDER BY id DESC LIMIT $2")
            .bind(before_id.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await?;
        Ok(rows.iter().map(audit_entry).collect())
    }
}
