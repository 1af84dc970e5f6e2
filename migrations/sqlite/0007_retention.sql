-- Legal holds (docs/archive.md): while a hold is not released, retention
-- deletes nothing of the portal, or nothing a person (a directory id, or
-- an account as `bridge:id`) said. Exactly one of `portal` and `person`.
CREATE TABLE archive_hold (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    portal TEXT,
    person TEXT,
    reason TEXT NOT NULL,
    set_by TEXT NOT NULL,
    set_ms INTEGER NOT NULL,
    released_ms INTEGER,
    released_by TEXT,
    CHECK ((portal IS NULL) != (person IS NULL))
);

-- Retention reads a portal's events by age, and leaves those an outbox
-- row still needs.
CREATE INDEX archive_age ON archive (portal, at_ms);
CREATE INDEX outbox_event ON outbox (event_id);

-- State of one message (a thread's id, a reaction's id on the network):
-- when it was saved; pruned once retention deleted the messages of then.
ALTER TABLE bridge_state ADD COLUMN message_ms INTEGER;
