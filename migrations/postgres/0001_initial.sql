-- Causeway store, PostgreSQL: the schema migrations/sqlite ends with
-- (0001 to 0010), in one. Integers are BIGINT (read as i64), times in ms
-- since the epoch. What SQLite reads from the event's JSON (the message
-- an edit names, a message's thread) has a column of its own here.

-- One row per archived event; the archive is append-only. `target`: the
-- event an edit, retraction, reaction or read marker names; `thread`: a
-- message's thread root.
CREATE TABLE archive (
    seq           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id      TEXT   NOT NULL UNIQUE,
    portal        TEXT   NOT NULL,
    at_ms         BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    origin_bridge TEXT   NOT NULL,
    origin_room   TEXT   NOT NULL,
    sender        TEXT   NOT NULL,
    person        TEXT,
    target        TEXT,
    thread        TEXT,
    event         TEXT   NOT NULL  -- the whole event as JSON
);
CREATE INDEX archive_portal ON archive (portal, seq);
-- Retention reads a portal's events by age.
CREATE INDEX archive_age ON archive (portal, at_ms);
-- The messages an edit, a retraction or a reaction refers to.
CREATE INDEX archive_target ON archive (target) WHERE target IS NOT NULL;

-- The message map: which event a network's message id stands for.
-- kind 0: the event came in with this id (its origin)
-- kind 1: the delivery id we sent it with (our idempotency key; also how echoes are caught)
-- kind 2: the id the target network reported for our delivery
-- kind 3: another id of an incoming message (an alias)
CREATE TABLE message_map (
    bridge    TEXT   NOT NULL,
    room      TEXT   NOT NULL,
    remote_id TEXT   NOT NULL,
    event_id  TEXT   NOT NULL,
    kind      BIGINT NOT NULL,
    PRIMARY KEY (bridge, room, remote_id)
);
CREATE INDEX message_map_event ON message_map (event_id, bridge, room, kind);

-- The outbox: one row per pending or dead delivery; delivered rows are
-- deleted. state 0: pending, 2: dead letter. `first_failed_ms`: when the
-- first attempt failed (`outbox.give_up_after` counts from then);
-- `recipient`: one recipient of a room's delivery, its own dead letter.
-- Its sequence is the highest seq ever used (max_outbox_seq); rows take
-- it in the order of their commits (PostgresStore's take_turn).
CREATE TABLE outbox (
    seq             BIGINT GENERATED ALWAYS AS IDENTITY (SEQUENCE NAME outbox_seq) PRIMARY KEY,
    delivery_id     TEXT   NOT NULL UNIQUE,
    event_id        TEXT   NOT NULL,
    bridge          TEXT   NOT NULL,
    room            TEXT   NOT NULL,
    state           BIGINT NOT NULL DEFAULT 0,
    attempts        BIGINT NOT NULL DEFAULT 0,
    enqueued_ms     BIGINT NOT NULL,
    next_attempt_ms BIGINT,
    last_error      TEXT,
    first_failed_ms BIGINT,
    recipient       TEXT
);
CREATE INDEX outbox_lane ON outbox (bridge, room, state, seq);
-- Retention leaves the events an outbox row still needs.
CREATE INDEX outbox_event ON outbox (event_id);

-- Durable per-bridge state: cursors, sync tokens, transaction ids. State
-- of one message (a thread's id, a reaction's id on the network) has
-- `message_ms`, when it was saved; retention prunes it.
CREATE TABLE bridge_state (
    bridge     TEXT   NOT NULL,
    key        TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    message_ms BIGINT,
    PRIMARY KEY (bridge, key)
);

-- Portals opened at run time, beside the configured ones. `links` is a
-- JSON array of {"bridge": …, "room": …}; kind 0 a direct conversation,
-- 1 made in the console.
CREATE TABLE portals (
    id         TEXT   PRIMARY KEY,
    created_ms BIGINT NOT NULL,
    links      TEXT   NOT NULL,
    kind       BIGINT NOT NULL DEFAULT 0
);

-- Full-text search over the archive: one row per archived message, `seq`
-- its archive seq. `text` is the message's latest text (an edit replaces
-- it), `files` the names of its attachments, `retracted` set once it was
-- taken back. The words are made by Causeway (as SQLite's FTS5 tokenizer
-- makes them: letters, numbers, private use and marks; case and Latin
-- diacritics folded, ł → l, ß → ss): `files_tsv` the file names' words
-- from position 2, `tsv` the text's words from position 1 followed by
-- those (`||` moves them past the text, a position apart, so that no
-- phrase spans the two).
CREATE TABLE archive_search (
    seq       BIGINT   PRIMARY KEY,
    text      TEXT     NOT NULL,
    files     TEXT     NOT NULL,
    retracted BOOLEAN  NOT NULL DEFAULT FALSE,
    files_tsv TSVECTOR NOT NULL,
    tsv       TSVECTOR NOT NULL
);
CREATE INDEX archive_search_words ON archive_search USING GIN (tsv);

-- Files that crossed, kept in the archive (docs/archive.md). A blob is one
-- content, stored once under its SHA-256 (`archive.files_dir`), counted by
-- the files that are it.
CREATE TABLE archive_blob (
    sha256 TEXT   PRIMARY KEY,
    size   BIGINT NOT NULL,
    refs   BIGINT NOT NULL DEFAULT 0
);

-- Each attachment of each archived message (`seq`, its `n`th): 0 waiting to
-- be fetched (`next_ms` the next try), 1 kept (`sha256`), 2 link only (the
-- portal keeps links), 3 refused (`reason`: too large, over quota, where the
-- link leads, what its server answered), 4 given up after `tries` failures.
CREATE TABLE archive_file (
    seq     BIGINT NOT NULL,
    n       BIGINT NOT NULL,
    state   BIGINT NOT NULL DEFAULT 0,
    sha256  TEXT,
    mime    TEXT,
    reason  TEXT,
    tries   BIGINT NOT NULL DEFAULT 0,
    next_ms BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (seq, n)
);
CREATE INDEX archive_file_waiting ON archive_file (next_ms) WHERE state = 0;
CREATE INDEX archive_file_blob ON archive_file (sha256) WHERE sha256 IS NOT NULL;

-- Legal holds (docs/archive.md): while a hold is not released, retention
-- deletes nothing of the portal, or nothing a person (a directory id, or
-- an account as `bridge:id`) said. Exactly one of `portal` and `person`.
CREATE TABLE archive_hold (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    portal      TEXT,
    person      TEXT,
    reason      TEXT   NOT NULL,
    set_by      TEXT   NOT NULL,
    set_ms      BIGINT NOT NULL,
    released_ms BIGINT,
    released_by TEXT,
    CHECK ((portal IS NULL) <> (person IS NULL))
);

-- Every export made (docs/archive.md): who took what of the archive, when,
-- and where it was written. Kept like the holds, for the audit.
CREATE TABLE archive_export (
    id       BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms    BIGINT NOT NULL,
    by       TEXT   NOT NULL,
    format   TEXT   NOT NULL,
    portals  TEXT   NOT NULL,
    person   TEXT,
    since_ms BIGINT,
    until_ms BIGINT,
    events   BIGINT NOT NULL,
    output   TEXT   NOT NULL
);

-- The IT console (docs/console.md): every admin action, who (the token's
-- name), what, on what, when.
CREATE TABLE admin_audit (
    id     BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at_ms  BIGINT NOT NULL,
    who    TEXT   NOT NULL,
    action TEXT   NOT NULL,
    target TEXT   NOT NULL,
    detail TEXT   NOT NULL DEFAULT ''
);

-- Dead letters an operator gave up on, with the reason; the event itself
-- stays in the archive.
CREATE TABLE outbox_dropped (
    delivery_id TEXT   PRIMARY KEY,
    event_id    TEXT   NOT NULL,
    bridge      TEXT   NOT NULL,
    room        TEXT   NOT NULL,
    recipient   TEXT,
    attempts    BIGINT NOT NULL,
    last_error  TEXT,
    reason      TEXT   NOT NULL,
    dropped_by  TEXT   NOT NULL,
    dropped_ms  BIGINT NOT NULL
);

-- Broadcasts (docs/broadcast.md): one announcement to many people and
-- rooms, as it was asked for; planned once the daemon has chosen its
-- recipients (event_id set, with its archived event and deliveries in the
-- same transaction), or refused (error set).
CREATE TABLE broadcasts (
    id           TEXT   PRIMARY KEY,
    requested_ms BIGINT NOT NULL,
    requested_by TEXT   NOT NULL,
    request      TEXT   NOT NULL,
    event_id     TEXT,
    planned_ms   BIGINT,
    error        TEXT
);
CREATE INDEX broadcasts_unplanned ON broadcasts (requested_ms) WHERE event_id IS NULL AND error IS NULL;

-- Each recipient of a planned broadcast: a person (on the network chosen
-- for them) or a room of a portal, with the outbox delivery that reaches
-- them; no delivery when they could not be reached (note says why). A
-- delivery no longer in the outbox was delivered.
CREATE TABLE broadcast_recipients (
    broadcast_id TEXT   NOT NULL,
    n            BIGINT NOT NULL,
    person       TEXT,
    bridge       TEXT,
    room         TEXT,
    recipient    TEXT,
    delivery_id  TEXT,
    note         TEXT,
    PRIMARY KEY (broadcast_id, n)
);
