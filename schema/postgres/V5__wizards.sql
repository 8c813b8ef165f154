-- provisio schema, version 5 (PostgreSQL): wizard links (FlexiAPI's `wizards`, FLEXIAPI-462).
--
-- A wizard is a single-use link `/wizard/{token}` made by an admin (`POST /api/wizard`) or by a
-- provisioning e-mail. Opening it renders a `sip-linphone:` link; when it names an account, a
-- fresh provisioning token is minted for that account in the same transaction that marks the
-- wizard used. The token is stored only as its SHA-256 hash, like every other token.
-- Kept parallel to schema/sqlite/V5__wizards.sql.

CREATE TABLE wizards (
    id                      BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash              BYTEA   NOT NULL,
    -- The space whose host serves the link (the admin's request space).
    space                   TEXT    NOT NULL REFERENCES spaces (domain) ON DELETE CASCADE,
    -- The admin who made it; a link already sent outlives its author.
    created_by              BIGINT  REFERENCES accounts (id) ON DELETE SET NULL,
    -- The account the link provisions, if any.
    provisioning_account_id BIGINT  REFERENCES accounts (id) ON DELETE CASCADE,
    -- The SIP URI the app is pointed at, as sent (with its `sip:`/`sips:` scheme).
    sip                     TEXT,
    linphone_action         TEXT    CHECK (linphone_action IN ('call', 'show', 'bye', 'accept', 'decline')),
    -- NULL: the `?linphone-use-sips` query parameter of the visit decides.
    linphone_use_sips       BOOLEAN,
    created_at              BIGINT  NOT NULL,
    used_at                 BIGINT,
    CONSTRAINT wizards_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX wizards_provisioning_account_id_idx ON wizards (provisioning_account_id);
CREATE INDEX wizards_created_by_idx ON wizards (created_by);
CREATE INDEX wizards_space_idx ON wizards (space);
