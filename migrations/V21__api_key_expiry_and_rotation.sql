-- API keys that end, show their last use, and rotate.

ALTER TABLE api_keys
    -- After this instant the key is refused (401 `key_expired`); NULL: never.
    ADD COLUMN expires_at timestamptz,
    -- When the key last authenticated a request, to within the flush interval;
    -- written at most about once a minute per key (see src/auth/last_use.rs).
    ADD COLUMN last_used_at timestamptz,
    -- When the secret was last replaced (POST /v1/api-keys/{id}/rotate).
    ADD COLUMN rotated_at timestamptz,
    -- The secret a rotation replaced (its SHA-256), accepted until
    -- previous_secret_expires_at so that clients can switch over. A second
    -- rotation overwrites it: only the latest replaced secret is kept.
    ADD COLUMN previous_secret_hash bytea CHECK (length(previous_secret_hash) = 32),
    ADD COLUMN previous_secret_expires_at timestamptz,
    ADD CONSTRAINT api_keys_previous_secret_complete
        CHECK ((previous_secret_hash IS NULL) = (previous_secret_expires_at IS NULL));
