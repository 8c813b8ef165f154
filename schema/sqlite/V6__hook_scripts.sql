-- provisio schema, version 6 (SQLite): hook scripts in the database (#11).
--
-- `hook_scripts` holds every version of every script ever saved, nothing overwritten: a save,
-- a rollback and a deletion each add the next version of the script's name. A script's live
-- version is its newest; a deletion is a version without source (a tombstone). Every write
-- bumps the change topic `hooks` (the V3 change feed), which a running server checks
-- periodically, so a script pushed by another process (the CLI) is served within the bound.
-- `hook_instances`: each running server's report of what it serves, with a heartbeat.
-- Kept parallel to schema/postgres/V6__hook_scripts.sql.

CREATE TABLE hook_scripts (
    id                INTEGER PRIMARY KEY,
    name              TEXT    NOT NULL,
    version           INTEGER NOT NULL,
    source            TEXT,
    fixtures          TEXT,
    author            TEXT    NOT NULL,
    author_account_id INTEGER,
    comment           TEXT,
    created_at        INTEGER NOT NULL,
    UNIQUE (name, version)
) STRICT;

INSERT INTO changes (topic, version) VALUES ('hooks', 1);

CREATE TRIGGER hook_scripts_changed_insert AFTER INSERT ON hook_scripts BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'hooks';
END;
CREATE TRIGGER hook_scripts_changed_update AFTER UPDATE ON hook_scripts BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'hooks';
END;
CREATE TRIGGER hook_scripts_changed_delete AFTER DELETE ON hook_scripts BEGIN
    UPDATE changes SET version = version + 1 WHERE topic = 'hooks';
END;

CREATE TABLE hook_instances (
    instance   TEXT    PRIMARY KEY,
    host       TEXT    NOT NULL,
    started_at INTEGER NOT NULL,
    seen_at    INTEGER NOT NULL,
    report     TEXT    NOT NULL
) STRICT;
