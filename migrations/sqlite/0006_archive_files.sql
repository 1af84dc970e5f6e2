-- Files that crossed, kept in the archive (docs/archive.md). A blob is one
-- content, stored once under its SHA-256 (`archive.files_dir`), counted by
-- the files that are it.
CREATE TABLE archive_blob (
    sha256 TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    refs INTEGER NOT NULL DEFAULT 0
) WITHOUT ROWID;

-- Each attachment of each archived message (`seq`, its `n`th): 0 waiting to
-- be fetched (`next_ms` the next try), 1 kept (`sha256`), 2 link only (the
-- portal keeps links), 3 refused (`reason`: too large, over quota, where the
-- link leads, what its server answered), 4 given up after `tries` failures.
CREATE TABLE archive_file (
    seq INTEGER NOT NULL,
    n INTEGER NOT NULL,
    state INTEGER NOT NULL DEFAULT 0,
    sha256 TEXT,
    mime TEXT,
    reason TEXT,
    tries INTEGER NOT NULL DEFAULT 0,
    next_ms INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (seq, n)
) WITHOUT ROWID;
CREATE INDEX archive_file_waiting ON archive_file (next_ms) WHERE state = 0;
CREATE INDEX archive_file_blob ON archive_file (sha256) WHERE sha256 IS NOT NULL;
