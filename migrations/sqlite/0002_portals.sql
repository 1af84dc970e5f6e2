-- Portals opened at run time (direct conversations), beside the configured
-- ones. `links` is a JSON array of {"bridge": …, "room": …}.
CREATE TABLE portals (
    id         TEXT    PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    links      TEXT    NOT NULL
) WITHOUT ROWID;
