-- Broadcasts (docs/broadcast.md): one announcement to many people and rooms.

-- A broadcast as it was asked for; planned once the daemon has chosen its
-- recipients (event_id set, with its archived event and deliveries in the
-- same transaction), or refused (error set).
CREATE TABLE broadcasts (
    id           TEXT    PRIMARY KEY,
    requested_ms INTEGER NOT NULL,
    requested_by TEXT    NOT NULL,
    request      TEXT    NOT NULL,
    event_id     TEXT,
    planned_ms   INTEGER,
    error        TEXT
) WITHOUT ROWID;
CREATE INDEX broadcasts_unplanned ON broadcasts (requested_ms) WHERE event_id IS NULL AND error IS NULL;

-- Each recipient of a planned broadcast: a person (on the network chosen
-- for them) or a room of a portal, with the outbox delivery that reaches
-- them; no delivery when they could not be reached (note says why). A
-- delivery no longer in the outbox was delivered.
CREATE TABLE broadcast_recipients (
    broadcast_id TEXT    NOT NULL,
    n            INTEGER NOT NULL,
    person       TEXT,
    bridge       TEXT,
    room         TEXT,
    recipient    TEXT,
    delivery_id  TEXT,
    note         TEXT,
    PRIMARY KEY (broadcast_id, n)
) WITHOUT ROWID;
