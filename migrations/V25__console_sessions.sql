-- Sessions of the web console (`/console`). The browser's cookie holds a
-- random token; only its SHA-256 is stored here, with the API key the person
-- signed in with: its id and its secret's SHA-256 (as `api_keys` keeps it),
-- never the key itself, so that every request is checked against the key's
-- revocation, expiry and rotation. Looked up by token before any
-- organization is known: a table without a tenant (a Citus local table).
CREATE TABLE console_sessions (
    token_hash      bytea PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    key_id          varchar(32) NOT NULL,
    key_secret_hash bytea NOT NULL,
    -- The token every form of the session carries (CSRF).
    csrf_token      varchar(64) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    last_seen_at    timestamptz NOT NULL DEFAULT now(),
    -- Absolute end (`console.session_ttl` after sign-in); the idle end is
    -- `last_seen_at` plus `console.idle_timeout`.
    expires_at      timestamptz NOT NULL
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
