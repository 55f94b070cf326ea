-- Every key that has signed checkpoints or archive digests, by its key_id
-- (the first 16 hex digits of SHA-256 of the public key): after a rotation,
-- what an earlier key signed still verifies, and the public-key endpoint
-- lists them all. Public keys only; private keys never enter the database
-- except a development key generated into worker_secrets.
CREATE TABLE signing_keys (
    key_id     varchar(16) PRIMARY KEY CHECK (key_id ~ '^[0-9a-f]{16}$'),
    algorithm  varchar(20) NOT NULL DEFAULT 'Ed25519' CHECK (algorithm = 'Ed25519'),
    public_key bytea NOT NULL UNIQUE CHECK (octet_length(public_key) = 32),
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Verification reads the keys inside organization-scoped transactions.
GRANT SELECT ON signing_keys TO audit_worker_tenant;
