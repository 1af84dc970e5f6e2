-- The IT console (docs/console.md).

-- Every admin action: who (the token's name), what, on what, when.
CREATE TABLE admin_audit (
    id     INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms  INTEGER NOT NULL,
    who    TEXT    NOT NULL,
    action TEXT    NOT NULL,
    target TEXT    NOT NULL,
    detail TEXT    NOT NULL DEFAULT ''
);

-- Dead letters an operator gave up on, with the reason; the event itself
-- stays in the archive.
CREATE TABLE outbox_dropped (
    delivery_id TEXT    PRIMARY KEY,
    event_id    TEXT    NOT NULL,
    bridge      TEXT    NOT NULL,
    room        TEXT    NOT NULL,
    recipient   TEXT,
    attempts    INTEGER NOT NULL,
    last_error  TEXT,
    reason      TEXT    NOT NULL,
    dropped_by  TEXT    NOT NULL,
    dropped_ms  INTEGER NOT NULL
) WITHOUT ROWID;

-- Run-time portals: 0 a direct conversation, 1 made in the console.
ALTER TABLE portals ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
