-- provisio schema, version 4 (PostgreSQL): the audit trail.
--
-- One row per event worth answering "who did what, when, from where": a document delivered (the
-- device inventory: which phone fetched which account's configuration), a token minted, a
-- password reset, an account, API key or space created, changed or deleted. Rows are written
-- in batches off the request path (src/audit.rs) and deleted after `audit_retention_days` by
-- housekeeping. No foreign keys on purpose: the trail outlives the accounts and spaces it names.
-- No secret is ever stored here (no token, key, password or HA1).
-- Kept parallel to schema/sqlite/V4__audit.sql.

CREATE TABLE audit_events (
    id               BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- When it happened (unix ms).
    at               BIGINT  NOT NULL,
    -- Who acted: an authenticated account, the command line, or an anonymous client (a token
    -- fetch carries no identity of its own).
    actor_kind       TEXT    NOT NULL CHECK (actor_kind IN ('account', 'cli', 'anonymous')),
    actor_account_id BIGINT,
    -- The actor as a person reads it: user@domain, `cli` or `anonymous`.
    actor_label      TEXT    NOT NULL,
    -- What happened: `document.delivered`, `token.minted`, `account.created`, …
    action           TEXT    NOT NULL,
    -- What it happened to: an account id, a space domain or an API key id, as text.
    target           TEXT,
    -- The account the event is about (provisioned, created, changed…), for per-account queries.
    account_id       BIGINT,
    -- The space (domain) the event belongs to, so a space admin sees only its own.
    space            TEXT,
    client_ip        TEXT,
    user_agent       TEXT,
    outcome          TEXT    NOT NULL,
    -- Free detail: the route template of a document, the switch of an account update.
    detail           TEXT
);
CREATE INDEX audit_events_at_idx ON audit_events (at);
CREATE INDEX audit_events_account_idx ON audit_events (account_id, action, at);
CREATE INDEX audit_events_actor_idx ON audit_events (actor_account_id, at);
CREATE INDEX audit_events_space_idx ON audit_events (space, at);
