//! The SQLite store (WAL mode). All writes go through one connection, so
//! they never contend inside the process; reads use a small pool beside it.

use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use causeway_core::{Committed, Event, IdKind, now_ms};
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{QueryBuilder, Row, SqlSafeStr, Sqlite};

use super::{
    Author, Completion, MapHit, NewEvent, OutboxDepth, OutboxItem, OutboxRow, OutboxState, RemoteKey, Store, StoreError, Stored,
    StoredPortal,
};

/// Rows per multi-row statement (SQLite allows 32766 bound parameters).
const CHUNK: usize = 200;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../../migrations/sqlite/0001_initial.sql")),
    (2, "portals", include_str!("../../migrations/sqlite/0002_portals.sql")),
    (3, "outbox_first_failure", include_str!("../../migrations/sqlite/0003_outbox_first_failure.sql")),
    (4, "outbox_recipient", include_str!("../../migrations/sqlite/0004_outbox_recipient.sql")),
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
        Ok(SqliteStore { write, read })
    }
}

impl SqliteStore {
    /// Run a script that is one transaction (`BEGIN …; …; COMMIT`) on the
    /// write connection in one go: one hand-off to SQLite's thread instead of
    /// one per statement. If a statement fails, the transaction is rolled back.
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

fn parse_event(id: &str, json: &str) -> Result<Event, StoreError> {
    serde_json::from_str(json).map_err(|e| StoreError::Corrupt(id.to_string(), e))
}

fn outbox_row(r: &SqliteRow) -> OutboxRow {
    OutboxRow {
        seq: r.get("seq"),
        delivery_id: r.get("delivery_id"),
        event_id: r.get("event_id"),
        portal: r.get("portal"),
        kind: r.get("kind"),
        bridge: r.get("bridge"),
        room: r.get("room"),
        attempts: r.get::<i64, _>("attempts").try_into().unwrap_or(u32::MAX),
        enqueued_ms: r.get("enqueued_ms"),
        next_attempt_ms: r.get("next_attempt_ms"),
        last_error: r.get("last_error"),
        recipient: r.get("recipient"),
    }
}

/// How `message_map.kind` stores each [`IdKind`]: the one place that says it
/// (the schema is in docs/architecture.md).
const fn kind_code(kind: IdKind) -> i64 {
    match kind {
        IdKind::Origin => 0,
        IdKind::DeliveryKey => 1,
        IdKind::Reported => 2,
        IdKind::Alias => 3,
    }
}

/// The [`IdKind`] a stored `message_map.kind` stands for.
fn kind_of(code: i64) -> Option<IdKind> {
    [IdKind::Origin, IdKind::DeliveryKey, IdKind::Reported, IdKind::Alias].into_iter().find(|k| kind_code(*k) == code)
}

#[async_trait]
impl Store for SqliteStore {
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
        let rows: Vec<(&str, &str, &str, &str)> = batch
            .iter()
            .flat_map(|ne| ne.deliveries.iter().map(|d| (d.id.as_str(), ne.event.id.as_str(), d.bridge.as_str(), d.room.as_str())))
            .collect();
        for chunk in rows.chunks(CHUNK) {
            q.push("INSERT INTO outbox (delivery_id, event_id, bridge, room, enqueued_ms) ");
            q.push_values(chunk, |mut b, (id, event, bridge, room)| {
                b.push_bind(*id).push_bind(*event).push_bind(*bridge).push_bind(*room).push_bind(now);
            });
            q.push(" RETURNING 'o', delivery_id, seq; ");
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
        rows.iter()
            .map(|r| {
                let id: String = r.get("event_id");
                Ok(OutboxItem {
                    seq: r.get("seq"),
                    delivery_id: r.get("delivery_id"),
                    attempts: r.get::<i64, _>("attempts").try_into().unwrap_or(u32::MAX),
                    enqueued_ms: r.get("enqueued_ms"),
                    first_failed_ms: r.get("first_failed_ms"),
                    recipient: r.get("recipient"),
                    event: parse_event(&id, r.get("event"))?,
                })
            })
            .collect()
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
        let state = match state {
            OutboxState::Pending => 0,
            OutboxState::Dead => 2,
        };
        let rows = sqlx::query(
            "SELECT o.seq, o.delivery_id, o.event_id, a.portal, a.kind, o.bridge, o.room, o.attempts, o.enqueued_ms, \
             o.next_attempt_ms, o.last_error, o.recipient FROM outbox o JOIN archive a ON a.event_id = o.event_id \
             WHERE o.state = ? ORDER BY o.seq LIMIT ?",
        )
        .bind(state)
        .bind(i64::from(limit))
        .fetch_all(&self.read)
        .await?;
        Ok(rows.iter().map(outbox_row).collect())
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
        sqlx::query("INSERT INTO portals (id, created_ms, links) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE SET links = excluded.links")
            .bind(&portal.id)
            .bind(portal.created_ms)
            .bind(links)
            .execute(&self.write)
            .await?;
        Ok(())
    }

    async fn load_portals(&self) -> Result<Vec<StoredPortal>, StoreError> {
        let rows = sqlx::query("SELECT id, created_ms, links FROM portals ORDER BY created_ms, id").fetch_all(&self.read).await?;
        rows.iter()
            .map(|r| {
                let id: String = r.get("id");
                let links: String = r.get("links");
                let links = serde_json::from_str(&links).map_err(|e| StoreError::Corrupt(format!("portal {id}"), e))?;
                Ok(StoredPortal { id, created_ms: r.get("created_ms"), links })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::NewDelivery;
    use causeway_core::{Body, Origin, Sender};

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

    fn event(id: &str, portal: &str) -> Event {
        Event {
            id: id.into(),
            portal: portal.into(),
            origin: Origin { bridge: "a".into(), room: "r".into(), remote_id: Some(format!("remote-{id}")) },
            sender: Sender { id: "alice".into(), person: None, name: "Alice".into(), avatar: None },
            at_ms: 1,
            body: Body::text(format!("text {id}")),
        }
    }

    fn new_event(id: &str) -> NewEvent {
        NewEvent {
            event: event(id, "p"),
            origin_key: RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: format!("remote-{id}") },
            aliases: vec![format!("alias-{id}")],
            deliveries: vec![NewDelivery { id: format!("d-{id}"), bridge: "b".into(), room: "s".into() }],
        }
    }

    #[tokio::test]
    async fn a_failed_commit_leaves_nothing_and_the_next_one_works() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), true).await.unwrap();
        store.commit(&[new_event("e1")]).await.unwrap();
        // e1 again: the archive refuses it, after e2's row was written in the same script.
        assert!(store.commit(&[new_event("e2"), new_event("e1")]).await.is_err());
        assert_eq!(store.pending("b", "s", 0, 10).await.unwrap().len(), 1, "e2 rolled back with the failed commit");
        assert!(
            store
                .lookup_remotes(&[RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e2".into() }])
                .await
                .unwrap()
                .is_empty()
        );
        store.commit(&[new_event("e3")]).await.unwrap();
        assert_eq!(store.pending("b", "s", 0, 10).await.unwrap().len(), 2);
    }

    #[tokio::test]
    async fn a_message_is_found_with_the_root_of_its_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), true).await.unwrap();
        let alice = Some(Author { bridge: "a".into(), sender: "alice".into(), person: None });
        // A message in e1's thread is found with its root.
        let mut in_thread = new_event("e3");
        in_thread.event.body = Body::Message {
            text: causeway_core::Text::plain("in the thread"),
            kind: Default::default(),
            attachments: vec![],
            reply_to: None,
            thread: Some("e1".into()),
            mentions: vec![],
        };
        store.commit(&[new_event("e1"), in_thread]).await.unwrap();
        let k3 = RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e3".into() };
        let hits = store.lookup_remotes(std::slice::from_ref(&k3)).await.unwrap();
        assert_eq!(hits[&k3], MapHit { event_id: "e3".into(), origin: true, author: alice, thread: Some("e1".into()) });
        let k1 = RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e1".into() };
        assert_eq!(store.lookup_remotes(std::slice::from_ref(&k1)).await.unwrap()[&k1].thread, None, "the root is in no thread");
    }

    #[tokio::test]
    async fn commit_map_deliver_complete() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("t.db"), true).await.unwrap();
        let seqs = store.commit(&[new_event("e1"), new_event("e2")]).await.unwrap();
        assert!(seqs[0].seq < seqs[1].seq);

        let key = RemoteKey { bridge: "a".into(), room: "r".into(), remote_id: "remote-e1".into() };
        let echo = RemoteKey { bridge: "b".into(), room: "s".into(), remote_id: "d-e2".into() };
        let hits = store.lookup_remotes(&[key.clone(), echo.clone()]).await.unwrap();
        let alice = Some(Author { bridge: "a".into(), sender: "alice".into(), person: None });
        assert_eq!(hits[&key], MapHit { event_id: "e1".into(), origin: true, author: alice.clone(), thread: None });
        assert_eq!(hits[&echo], MapHit { event_id: "e2".into(), origin: false, author: alice, thread: None });

        let pending = store.pending("b", "s", 0, 10).await.unwrap();
        assert_eq!(pending.len(), 2);
        assert_eq!(pending[0].event, event("e1", "p"));
        // The commit named each delivery's outbox row, as the lanes get them.
        let named: Vec<i64> = seqs.iter().flat_map(|s| s.outbox.clone()).collect();
        assert_eq!(named, pending.iter().map(|p| p.seq).collect::<Vec<_>>());
        assert_eq!(pending.iter().map(|p| p.delivery_id.as_str()).collect::<Vec<_>>(), ["d-e1", "d-e2"]);
        assert_eq!(store.remote_for("e1", "b", "s").await.unwrap().as_deref(), Some("d-e1"));
        assert_eq!(store.remote_for("e1", "a", "r").await.unwrap().as_deref(), Some("remote-e1"), "origin id before alias");
        let mut ids = store.ids_of("a", "r", "alias-e1").await.unwrap();
        ids.sort();
        assert_eq!(ids, vec![("alias-e1".to_string(), IdKind::Alias), ("remote-e1".to_string(), IdKind::Origin)]);
        assert!(store.ids_of("a", "r", "nope").await.unwrap().is_empty());

        store
            .complete(&[Completion {
                seq: pending[0].seq,
                delivery_id: "d-e1".into(),
                event_id: "e1".into(),
                bridge: "b".into(),
                room: "s".into(),
                remote_id: Some("net-1".into()),
            }])
            .await
            .unwrap();
        assert_eq!(store.remote_for("e1", "b", "s").await.unwrap().as_deref(), Some("net-1"));
        assert_eq!(store.pending("b", "s", 0, 10).await.unwrap().len(), 1);
        assert_eq!(store.max_outbox_seq().await.unwrap(), pending[1].seq);

        store.dead_letter(pending[1].seq, 3, "refused").await.unwrap();
        assert_eq!(store.outbox_depths().await.unwrap()["b"], OutboxDepth { pending: 0, dead: 1 });
        let dead = store.list_outbox(OutboxState::Dead, 10).await.unwrap();
        assert_eq!(dead[0].last_error.as_deref(), Some("refused"));
        assert!(store.requeue("d-e2").await.unwrap());
        assert!(!store.requeue("d-e2").await.unwrap());
        let lanes = store.lanes_after(pending[1].seq).await.unwrap();
        assert_eq!(lanes.len(), 1);
        assert_eq!(store.history("p", seqs[0].seq, 10).await.unwrap()[0].event.id, "e2");
    }

    #[tokio::test]
    async fn state_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        {
            let store = SqliteStore::open(&path, false).await.unwrap();
            store.save_state("imap", "uid", "1").await.unwrap();
            store.save_state("imap", "uid", "2").await.unwrap();
        }
        let store = SqliteStore::open(&path, false).await.unwrap();
        assert_eq!(store.load_state("imap", "uid").await.unwrap().as_deref(), Some("2"));
        assert_eq!(store.load_state("imap", "nope").await.unwrap(), None);
        store.delete_state("imap", "uid").await.unwrap();
        assert_eq!(store.load_state("imap", "uid").await.unwrap(), None);
    }

    #[tokio::test]
    async fn portals_survive_reopen_and_grow_links() {
        use crate::store::{StoredLink, StoredPortal};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.db");
        let link = |b: &str, r: &str| StoredLink { bridge: b.into(), room: r.into() };
        let mut p = StoredPortal { id: "dm-1".into(), created_ms: 5, links: vec![link("xmpp", "direct:a|b"), link("hooks", "dm/b/a")] };
        {
            let store = SqliteStore::open(&path, false).await.unwrap();
            store.save_portal(&p).await.unwrap();
            p.links.push(link("matrix", "!r"));
            store.save_portal(&p).await.unwrap();
        }
        let store = SqliteStore::open(&path, false).await.unwrap();
        assert_eq!(store.load_portals().await.unwrap(), vec![p]);
    }
}
