-- provisio schema, version 1 (PostgreSQL).
--
-- The whole data model: spaces (tenants), accounts with their dictionary, passwords (HA1 only)
-- and tombstones, provisioning tokens, QR-login auth tokens, API keys and Digest challenges.
-- Kept column for column parallel to schema/sqlite/V1__init.sql so both backends pass the
-- same contract suite. Conventions:
--   * times are BIGINT unix milliseconds supplied by the application;
--   * token/key hashes are BYTEA (SHA-256 of the clear value, never the value itself);
--   * ids are identities, never reused;
--   * constraints are named so the store can say which uniqueness rule a write broke.
-- Tables are created in the first schema of the connection's search_path.

-- A tenant: one SIP domain served on one HTTP host (model::Space).
CREATE TABLE spaces (
    id                                    BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    domain                                TEXT    NOT NULL,
    host                                  TEXT    NOT NULL,
    name                                  TEXT    NOT NULL,
    super_space                           BOOLEAN NOT NULL DEFAULT FALSE,
    realm                                 TEXT    NOT NULL,
    password_algorithm                    TEXT    NOT NULL DEFAULT 'SHA-256'
                                                  CHECK (password_algorithm IN ('MD5', 'SHA-256')),
    base_rc                               TEXT,
    custom_entries                        TEXT,
    overwrite_all                         BOOLEAN NOT NULL DEFAULT FALSE,
    ui_super                              BOOLEAN NOT NULL DEFAULT FALSE,
    ui_disable_chat_feature               BOOLEAN NOT NULL DEFAULT FALSE,
    ui_disable_meetings_feature           BOOLEAN NOT NULL DEFAULT FALSE,
    ui_disable_broadcast_feature          BOOLEAN NOT NULL DEFAULT TRUE,
    ui_hide_settings                      BOOLEAN NOT NULL DEFAULT FALSE,
    ui_hide_account_settings              BOOLEAN NOT NULL DEFAULT FALSE,
    ui_disable_call_recordings_feature    BOOLEAN NOT NULL DEFAULT FALSE,
    ui_only_display_sip_uri_username      BOOLEAN NOT NULL DEFAULT FALSE,
    ui_assistant_hide_create_account      BOOLEAN NOT NULL DEFAULT FALSE,
    ui_assistant_disable_qr_code          BOOLEAN NOT NULL DEFAULT FALSE,
    ui_assistant_hide_third_party_account BOOLEAN NOT NULL DEFAULT FALSE,
    ui_max_account                        BIGINT  NOT NULL DEFAULT 0,
    vcard_list_url                        TEXT,
    public_url                            TEXT,
    token_lifetime_minutes                BIGINT  NOT NULL DEFAULT 0,
    header_mode                           TEXT    NOT NULL DEFAULT 'required'
                                                  CHECK (header_mode IN ('required', 'linphone-user-agent', 'off')),
    hook_failure                          TEXT    NOT NULL DEFAULT 'fail' CHECK (hook_failure IN ('fail', 'skip')),
    max_accounts                          BIGINT  NOT NULL DEFAULT 0,
    CONSTRAINT spaces_domain_key UNIQUE (domain),
    CONSTRAINT spaces_host_key UNIQUE (host),
    CONSTRAINT spaces_name_key UNIQUE (name)
);

-- A SIP account (model::Account); deleting its space deletes it.
CREATE TABLE accounts (
    id            BIGINT  GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    username      TEXT    NOT NULL,
    domain        TEXT    NOT NULL,
    email         TEXT,
    display_name  TEXT,
    phone         TEXT,
    activated     BOOLEAN NOT NULL DEFAULT FALSE,
    blocked       BOOLEAN NOT NULL DEFAULT FALSE,
    admin         BOOLEAN NOT NULL DEFAULT FALSE,
    dtmf_protocol TEXT,
    ip_address    TEXT,
    user_agent    TEXT,
    created_at    BIGINT  NOT NULL,
    updated_at    BIGINT  NOT NULL,
    CONSTRAINT accounts_domain_fkey FOREIGN KEY (domain) REFERENCES spaces (domain) ON DELETE CASCADE,
    CONSTRAINT accounts_username_domain_key UNIQUE (username, domain)
);
CREATE INDEX accounts_domain_idx ON accounts (domain);

-- Free-form per-account key/values, visible to hooks.
CREATE TABLE account_dictionary (
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key        TEXT   NOT NULL,
    value      TEXT   NOT NULL,
    PRIMARY KEY (account_id, key)
);

-- Identities of deleted accounts, which can never be created again.
CREATE TABLE accounts_tombstones (
    username   TEXT   NOT NULL,
    domain     TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    CONSTRAINT accounts_tombstones_username_domain_key UNIQUE (username, domain)
);

-- SIP passwords, as HA1 only, one per algorithm.
CREATE TABLE passwords (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    algorithm  TEXT   NOT NULL CHECK (algorithm IN ('MD5', 'SHA-256')),
    ha1        TEXT   NOT NULL,
    CONSTRAINT passwords_account_id_algorithm_key UNIQUE (account_id, algorithm)
);

-- One-time provisioning tokens; the account's unused token with the highest id is current.
CREATE TABLE provisioning_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    token_hash BYTEA  NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,
    used_at    BIGINT,
    CONSTRAINT provisioning_tokens_token_hash_key UNIQUE (token_hash)
);
-- (account_id, id): "the account's newest token" is one index probe, not a scan.
CREATE INDEX provisioning_tokens_account_id_idx ON provisioning_tokens (account_id, id);

-- QR-login tokens: minted unattached, attached by a logged-in device, redeemed once.
CREATE TABLE auth_tokens (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash BYTEA  NOT NULL,
    account_id BIGINT REFERENCES accounts (id) ON DELETE CASCADE,
    ip         TEXT,
    user_agent TEXT,
    created_at BIGINT NOT NULL,
    CONSTRAINT auth_tokens_token_hash_key UNIQUE (token_hash)
);
CREATE INDEX auth_tokens_account_id_idx ON auth_tokens (account_id);
CREATE INDEX auth_tokens_created_at_idx ON auth_tokens (created_at);

-- API keys: one user key per account (expires_after_minutes NULL), any number of admin keys.
CREATE TABLE api_keys (
    id                    BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id            BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    key_hash              BYTEA  NOT NULL,
    name                  TEXT,
    ip                    TEXT,
    expires_after_minutes BIGINT,
    created_at            BIGINT NOT NULL,
    last_used_at          BIGINT NOT NULL,
    requests              BIGINT NOT NULL DEFAULT 0,
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash)
);
CREATE INDEX api_keys_account_id_idx ON api_keys (account_id);
CREATE UNIQUE INDEX api_keys_one_user_key_idx ON api_keys (account_id) WHERE expires_after_minutes IS NULL;

-- Digest challenges (FlexiAPI's "opaques"), bound to an account and an IP.
CREATE TABLE digest_nonces (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id BIGINT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    opaque     TEXT   NOT NULL,
    nonce      TEXT   NOT NULL,
    ip         TEXT   NOT NULL,
    nc         BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    CONSTRAINT digest_nonces_opaque_key UNIQUE (opaque)
);
CREATE INDEX digest_nonces_account_id_idx ON digest_nonces (account_id);
CREATE INDEX digest_nonces_created_at_idx ON digest_nonces (created_at);
