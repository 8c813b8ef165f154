-- provisio schema, version 2 (SQLite): who won each token.
--
-- A consume records a random request id with the token's use (`used_by`). When the commit's
-- outcome is unknown to the request, it reads the id back: if it is its own, the consume did
-- happen and the request serves the document (src/pipeline/consume.rs). Auth tokens were
-- deleted on use, which leaves nothing to read back; they are now marked spent (`used_at`,
-- `used_by`) and housekeeping deletes them later.
-- Kept parallel to schema/postgres/V2__consume_owner.sql.

-- Request id of the consume that burned the token (NULL: unused, or used before version 2).
ALTER TABLE provisioning_tokens ADD COLUMN used_by BLOB;

-- When an auth token was redeemed (NULL: not yet), and by which request.
ALTER TABLE auth_tokens ADD COLUMN used_at INTEGER;
ALTER TABLE auth_tokens ADD COLUMN used_by BLOB;
