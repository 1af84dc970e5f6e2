-- Every export made (docs/archive.md): who took what of the archive, when,
-- and where it was written. Kept like the holds, for the audit.
CREATE TABLE archive_export (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at_ms INTEGER NOT NULL,
    by TEXT NOT NULL,
    format TEXT NOT NULL,
    portals TEXT NOT NULL,
    person TEXT,
    since_ms INTEGER,
    until_ms INTEGER,
    events INTEGER NOT NULL,
    output TEXT NOT NULL
);
