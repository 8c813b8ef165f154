-- provisio schema, version 3 (PostgreSQL): the change feed.
--
-- Every instance keeps the spaces in memory. A version per topic ("spaces"; later topics add
-- their own row) tells an instance whether its copy is stale: a trigger bumps it on every
-- insert, update or delete, in the writer's transaction, and announces the new version with
-- NOTIFY on the channel `provisio_changes` (payload `topic:version:schema`, the schema so that
-- several deployments or test schemas sharing one database can tell their notices apart). A
-- NOTIFY is delivered only if its transaction commits, and a lost one is caught by comparing
-- versions (src/store/changes.rs). Kept parallel to schema/sqlite/V3__change_feed.sql.

-- Current version of each change topic.
CREATE TABLE changes (
    topic   TEXT   PRIMARY KEY,
    version BIGINT NOT NULL
);
INSERT INTO changes (topic, version) VALUES ('spaces', 1);

-- Bumps the topic named by the trigger's first argument and announces it. Tables are named
-- through the schema of the table that fired, so it works whatever the caller's search_path.
CREATE FUNCTION provisio_bump_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    bumped BIGINT;
BEGIN
    EXECUTE format('UPDATE %I.changes SET version = version + 1 WHERE topic = $1 RETURNING version',
                   TG_TABLE_SCHEMA)
        INTO bumped USING TG_ARGV[0];
    PERFORM pg_notify('provisio_changes', TG_ARGV[0] || ':' || bumped || ':' || TG_TABLE_SCHEMA);
    RETURN NULL;
END
$$;

-- One bump per statement that writes spaces (a statement that touches no row bumps too, which
-- only costs a needless reload).
CREATE TRIGGER spaces_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON spaces
    FOR EACH STATEMENT EXECUTE FUNCTION provisio_bump_change('spaces');
