-- provisio schema, version 3 (SQLite): the change feed.
--
-- Every instance keeps the spaces in memory. A version per topic ("spaces"; later topics add
-- their own row) tells it whether its copy is stale: triggers bump it on every insert, update
-- or delete, in the writer's transaction, so a change made by another process (the CLI while
-- a server runs) is noticed by comparing versions (src/store/changes.rs). SQLite has no
-- NOTIFY and no statement-level triggers: one bump per row changed.
-- Kept parallel to schema/postgres/V3__change_feed.sql.

-- Current version of each change topic.
CREATE TABLE changes (
    topic   TEXT    PRIMARY KEY,
    version INTEGER NOT NULL
) STRICT;
INSERT INTO changes (topic, version) VALUES ('spaces', 1);

CREATE TRIGGER spaces_changed_insert AFTER INSERT ON spaces BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'spaces';
END;
CREATE TRIGGER spaces_changed_update AFTER UPDATE ON spaces BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'spaces';
END;
CREATE TRIGGER spaces_changed_delete AFTER DELETE ON spaces BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'spaces';
END;
