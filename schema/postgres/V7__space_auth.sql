-- provisio schema, version 7 (PostgreSQL): more ways into a space (issue #10).
--
-- A space may trust the JWTs of its OpenID Connect provider (FlexiAPI's
-- `space_oidc_authentication_configurations`, FLEXIAPI-143/167/430/464): the provider is set
-- when `oidc_server_url` is set, and its keys come from a PEM public key or a JWKS URL. A space
-- may also accept verified client certificates on /provisioning/me (FlexiAPI's
-- `client_certificate_authentication`, FLEXIAPI-440). No secret is stored: a public key and
-- URLs only. Kept parallel to schema/sqlite/V7__space_auth.sql.

ALTER TABLE spaces
    -- Base URL of the provider (Keycloak: `https://sso.example.com/`); NULL: no OIDC.
    ADD COLUMN oidc_server_url                   TEXT,
    -- The provider's realm, named in the Bearer challenge with the server URL.
    ADD COLUMN oidc_realm                        TEXT,
    -- PEM public key (RSA or P-256) the tokens are signed with, or NULL with a JWKS URL.
    ADD COLUMN oidc_public_key                   TEXT,
    -- Where the provider publishes its signing keys (fetched, cached, refreshed on a new `kid`).
    ADD COLUMN oidc_jwks_url                     TEXT,
    -- Claim holding the account's SIP URI (FlexiAPI's default `sip_identity`).
    ADD COLUMN oidc_sip_identifier_claim         TEXT    NOT NULL DEFAULT 'sip_identity',
    -- `aud` and `iss` a token must carry, when set (FlexiAPI checks neither).
    ADD COLUMN oidc_audience                     TEXT,
    ADD COLUMN oidc_issuer                       TEXT,
    -- A bearer token is the only way in for user routes and /provisioning/me (FlexiAPI's
    -- behaviour); false keeps Digest and API keys working beside it.
    ADD COLUMN oidc_required                     BOOLEAN NOT NULL DEFAULT FALSE,
    -- /provisioning/me accepts a verified client certificate naming one of the space's accounts.
    ADD COLUMN client_certificate_authentication BOOLEAN NOT NULL DEFAULT FALSE;

-- A JWT without a SIP URI claim names its account by e-mail, within the request's space.
CREATE INDEX accounts_domain_email_idx ON accounts (domain, lower(email));
