-- Full-text search over the archive (SQLite FTS5): one row per archived
-- message, its rowid the message's archive seq. `text` is the message's
-- latest text (an edit replaces it), `folded` the same with the Latin
-- letters Unicode gives no decomposition spelled plain (ł → l, ß → ss;
-- empty where nothing changes), `files` the names of its attachments,
-- `retracted` 1 once it was taken back. Words of any script are tokens
-- (letters, numbers and combining marks, so Devanagari words stay whole);
-- diacritics are removed, so `zazolc` finds `Zażółć`.
CREATE VIRTUAL TABLE archive_search USING fts5(
    text,
    folded,
    files,
    retracted UNINDEXED,
    tokenize = "unicode61 remove_diacritics 2 categories 'L* N* Co M*'"
);

-- The messages an edit, a retraction or a reaction refers to.
CREATE INDEX archive_target ON archive (json_extract(event, '$.body.target'));

-- What was archived before: indexed when the store opens, oldest first,
-- from the first message's seq to this one (see SqliteStore::open).
INSERT INTO bridge_state (bridge, key, value)
SELECT 'causeway', 'search_backlog', MIN(seq) || ' ' || MAX(seq) FROM archive WHERE kind = 'message' HAVING COUNT(*) > 0;
