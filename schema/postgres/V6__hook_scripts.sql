-- provisio schema, version 6 (PostgreSQL): hook scripts in the database (#11).
--
-- `hook_scripts` holds every version of every script ever saved, nothing overwritten: a save,
-- a rollback and a deletion each add the next version of the script's name. A script's live
-- version is its newest; a deletion is a version without source (a tombstone), so the script
-- is not live while its history stays readable. Names are those of the hooks directory's files
-- without `.rhai`: `default`, a shared module (`policy`), or a space's domain.
--
-- Every write bumps the change topic `hooks` (the V3 change feed: a NOTIFY on
-- `provisio_changes`), so every instance reloads its scripts within the staleness bound.
--
-- `hook_instances` is where each running instance reports the versions it serves (with a
-- heartbeat), so `GET /api/hooks/status` can show whether the fleet agrees. It bumps nothing.
-- Kept parallel to schema/sqlite/V6__hook_scripts.sql.

CREATE TABLE hook_scripts (
    id                BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `default`, a module name, or a space's (lower-case) domain.
    name              TEXT   NOT NULL,
    -- 1, 2, 3… per name.
    version           BIGINT NOT NULL,
    -- The script; NULL marks a deletion (tombstone).
    source            TEXT,
    -- The fixtures stored beside the script: a JSON array of {name, fixture, expected}.
    fixtures          TEXT,
    -- Who saved it: `user@domain` of an account, or `cli`.
    author            TEXT   NOT NULL,
    author_account_id BIGINT,
    comment           TEXT,
    -- When (unix ms).
    created_at        BIGINT NOT NULL,
    UNIQUE (name, version)
);

INSERT INTO changes (topic, version) VALUES ('hooks', 1);

CREATE TRIGGER hook_scripts_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON hook_scripts
    FOR EACH STATEMENT EXECUTE FUNCTION provisio_bump_change('hooks');

CREATE TABLE hook_instances (
    -- Random id of one running server process.
    instance   TEXT   PRIMARY KEY,
    -- Host name and process id, for people.
    host       TEXT   NOT NULL,
    -- When the process started and last reported (unix ms).
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL,
    -- What it serves (JSON: source mode, change version, scripts with origin and version).
    report     TEXT   NOT NULL
);
