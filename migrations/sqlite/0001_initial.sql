-- Causeway store, SQLite. One row per archived event; the archive is append-only.
CREATE TABLE archive (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id      TEXT    NOT NULL UNIQUE,
    portal        TEXT    NOT NULL,
    at_ms         INTEGER NOT NULL,
    kind          TEXT    NOT NULL,
    origin_bridge TEXT    NOT NULL,
    origin_room   TEXT    NOT NULL,
    sender        TEXT    NOT NULL,
    person        TEXT,
    event         TEXT    NOT NULL  -- the whole event as JSON
);
CREATE INDEX archive_portal ON archive (portal, seq);

-- The message map: which event a network's message id stands for.
-- kind 0: the event came in with this id (its origin)
-- kind 1: the delivery id we sent it with (our idempotency key; also how echoes are caught)
-- kind 2: the id the target network reported for our delivery
CREATE TABLE message_map (
    bridge    TEXT    NOT NULL,
    room      TEXT    NOT NULL,
    remote_id TEXT    NOT NULL,
    event_id  TEXT    NOT NULL,
    kind      INTEGER NOT NULL,
    PRIMARY KEY (bridge, room, remote_id)
) WITHOUT ROWID;
CREATE INDEX message_map_event ON message_map (event_id, bridge, room, kind);

-- The outbox: one row per pending or dead delivery; delivered rows are deleted.
-- state 0: pending, 2: dead letter
CREATE TABLE outbox (
    seq             INTEGER PRIMARY KEY AUTOINCREMENT,
    delivery_id     TEXT    NOT NULL UNIQUE,
    event_id        TEXT    NOT NULL,
    bridge          TEXT    NOT NULL,
    room            TEXT    NOT NULL,
    state           INTEGER NOT NULL DEFAULT 0,
    attempts        INTEGER NOT NULL DEFAULT 0,
    enqueued_ms     INTEGER NOT NULL,
    next_attempt_ms INTEGER,
    last_error      TEXT
);
CREATE INDEX outbox_lane ON outbox (bridge, room, state, seq);

-- Durable per-bridge state: cursors, sync tokens, transaction ids.
CREATE TABLE bridge_state (
    bridge TEXT NOT NULL,
    key    TEXT NOT NULL,
    value  TEXT NOT NULL,
    PRIMARY KEY (bridge, key)
) WITHOUT ROWID;
