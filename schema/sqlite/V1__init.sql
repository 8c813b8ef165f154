-- provisio schema, version 1 (SQLite).
--
-- The whole data model: spaces (tenants), accounts with their dictionary, passwords (HA1 only)
-- and tombstones, provisioning tokens, QR-login auth tokens, API keys and Digest challenges.
-- Kept column for column parallel to schema/postgres/V1__init.sql so both backends pass the
-- same contract suite. Conventions:
--   * times are INTEGER unix milliseconds supplied by the application;
--   * booleans are INTEGER 0/1 (checked);
--   * token/key hashes are BLOB (SHA-256 of the clear value, never the value itself);
--   * ids are AUTOINCREMENT so, as with PostgreSQL identities, an id is never reused.
-- Tables are STRICT so a wrongly typed value is an error instead of a silent conversion.
-- Foreign keys need `PRAGMA foreign_keys = ON`, which the store sets on every connection.

-- A tenant: one SIP domain served on one HTTP host (model::Space).
CREATE TABLE spaces (
    id                                    INTEGER PRIMARY KEY AUTOINCREMENT,
    domain                                TEXT    NOT NULL,
    host                                  TEXT    NOT NULL,
    name                                  TEXT    NOT NULL,
    super_space                           INTEGER NOT NULL DEFAULT 0 CHECK (super_space IN (0, 1)),
    realm                                 TEXT    NOT NULL,
    password_algorithm                    TEXT    NOT NULL DEFAULT 'SHA-256'
                                                  CHECK (password_algorithm IN ('MD5', 'SHA-256')),
    base_rc                               TEXT,
    custom_entries                        TEXT,
    overwrite_all                         INTEGER NOT NULL DEFAULT 0 CHECK (overwrite_all IN (0, 1)),
    ui_super                              INTEGER NOT NULL DEFAULT 0 CHECK (ui_super IN (0, 1)),
    ui_disable_chat_feature               INTEGER NOT NULL DEFAULT 0 CHECK (ui_disable_chat_feature IN (0, 1)),
    ui_disable_meetings_feature           INTEGER NOT NULL DEFAULT 0 CHECK (ui_disable_meetings_feature IN (0, 1)),
    ui_disable_broadcast_feature          INTEGER NOT NULL DEFAULT 1 CHECK (ui_disable_broadcast_feature IN (0, 1)),
    ui_hide_settings                      INTEGER NOT NULL DEFAULT 0 CHECK (ui_hide_settings IN (0, 1)),
    ui_hide_account_settings              INTEGER NOT NULL DEFAULT 0 CHECK (ui_hide_account_settings IN (0, 1)),
    ui_disable_call_recordings_feature    INTEGER NOT NULL DEFAULT 0 CHECK (ui_disable_call_recordings_feature IN (0, 1)),
    ui_only_display_sip_uri_username      INTEGER NOT NULL DEFAULT 0 CHECK (ui_only_display_sip_uri_username IN (0, 1)),
    ui_assistant_hide_create_account      INTEGER NOT NULL DEFAULT 0 CHECK (ui_assistant_hide_create_account IN (0, 1)),
    ui_assistant_disable_qr_code          INTEGER NOT NULL DEFAULT 0 CHECK (ui_assistant_disable_qr_code IN (0, 1)),
    ui_assistant_hide_third_party_account INTEGER NOT NULL DEFAULT 0 CHECK (ui_assistant_hide_third_party_account IN (0, 1)),
    ui_max_account                        INTEGER NOT NULL DEFAULT 0,
    vcard_list_url                        TEXT,
    public_url                            TEXT,
    token_lifetime_minutes                INTEGER NOT NULL DEFAULT 0,
    header_mode                           TEXT    NOT NULL DEFAULT 'required'
                                                  CHECK (header_mode IN ('required', 'linphone-user-agent', 'off')),
    hook_failure                          TEXT    NOT NULL DEFAULT 'fail' CHECK (hook_failure IN ('fail', 'skip')),
    max_accounts                          INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT spaces_domain_key UNIQUE (domain),
    CONSTRAINT spaces_host_key UNIQUE (host),
    CONSTRAINT spaces_name_key UNIQUE (name)
) STRICT;

-- A SIP account (model::Account); deleting its space deletes it.
CREATE TABLE accounts (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    username      TEXT    NOT NULL,
    domain        TEXT    NOT NULL REFERENCES spaces (domain) ON DELETE CASCADE,
    email         TEXT,
    display_name  TEXT,
    phone         TEXT,
    activated     INTEGER NOT NULL DEFAULT 0 CHECK (activated IN (0, 1)),
    blocked       INTEGER NOT NULL DEFAULT 0 CHECK (blocked IN (0, 1)),
    admin         INTEGER NOT NULL DEFAULT 0 CHECK (admin IN (0, 1)),
    dtmf_protocol TEXT,
    ip_address    TEXT,
    user_agent    TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    CONSTRAINT accounts_username_domain_key UNIQUE (username, domain)
) STRICT;
CREATE INDEX accounts_domain_idx ON accounts (domain);

-- Free-form per-account key/values, visible to hooks.
CREATE TABLE account_dictionary (
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT    NOT NULL,
    value      TEXT    NOT NULL,
    PRIMARY KEY (account_id, key)
) STRICT;

-- Identities of deleted accounts, which can never be created again.
CREATE TABLE accounts_tombstones (
    username   TEXT    NOT NULL,
    domain     TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    CONSTRAINT accounts_tombstones_username_domain_key UNIQUE (username, domain)
) STRICT;

-- SIP passwords, as HA1 only, one per algorithm.
CREATE TABLE passwords (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    algorithm  TEXT    NOT NULL CHECK (algorithm IN ('MD5', 'SHA-256')),
    ha1        TEXT    NOT NULL,
    CONSTRAINT passwords_account_id_algorithm_key UNIQUE (account_id, algorithm)
) STRICT;

-- One-time provisioning tokens; the account's unused token with the highest id is current.
CREATE TABLE provisioning_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash BLOB    NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER,
    used_at    INTEGER,
    CONSTRAINT provisioning_tokens_token_hash_key UNIQUE (token_hash)
) STRICT;
-- (account_id, id): "the account's newest token" is one index probe, not a scan.
CREATE INDEX provisioning_tokens_account_id_idx ON provisioning_tokens (account_id, id);

-- QR-login tokens: minted unattached, attached by a logged-in device, redeemed once.
CREATE TABLE auth_tokens (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash BLOB    NOT NULL,
    account_id INTEGER REFERENCES accounts (id) ON DELETE CASCADE,
    ip         TEXT,
    user_agent TEXT,
    created_at INTEGER NOT NULL,
    CONSTRAINT auth_tokens_token_hash_key UNIQUE (token_hash)
) STRICT;
CREATE INDEX auth_tokens_account_id_idx ON auth_tokens (account_id);
CREATE INDEX auth_tokens_created_at_idx ON auth_tokens (created_at);

-- API keys: one user key per account (expires_after_minutes NULL), any number of admin keys.
CREATE TABLE api_keys (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id            INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_hash              BLOB    NOT NULL,
    name                  TEXT,
    ip                    TEXT,
    expires_after_minutes INTEGER,
    created_at            INTEGER NOT NULL,
    last_used_at          INTEGER NOT NULL,
    requests              INTEGER NOT NULL DEFAULT 0,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
) STRICT;
CREATE INDEX api_keys_account_id_idx ON api_keys (account_id);
CREATE UNIQUE INDEX api_keys_one_user_key_idx ON api_keys (account_id) WHERE expires_after_minutes IS NULL;

-- Digest challenges (FlexiAPI's "opaques"), bound to an account and an IP.
CREATE TABLE digest_nonces (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    opaque     TEXT    NOT NULL,
    nonce      TEXT    NOT NULL,
    ip         TEXT    NOT NULL,
    nc         INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    CONSTRAINT digest_nonces_opaque_key UNIQUE (opaque)
) STRICT;
CREATE INDEX digest_nonces_account_id_idx ON digest_nonces (account_id);
CREATE INDEX digest_nonces_created_at_idx ON digest_nonces (created_at);
