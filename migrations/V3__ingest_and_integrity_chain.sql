-- Ingest and the integrity chain.
--
-- Each event's hash covers a canonical serialization of its fields (see
-- docs/integrity.md); personal identifiers enter it only through keyed
-- commitments stored beside them, so that a recorded GDPR operation can replace
-- or erase the identifier without breaking the hash. Events are bound into a
-- per-organization chain: every committed batch of an organization's events is
-- one link, holding the Merkle root of the batch's event hashes and the hash of
-- the previous link.

ALTER TABLE audit_log
    ADD COLUMN idempotency_key            varchar(255),
    -- HMAC-SHA256 (hex) of principal_id / target_resource_id under the commitment key.
    ADD COLUMN principal_commitment       varchar(64) NOT NULL CHECK (principal_commitment ~ '^[0-9a-f]{64}$'),
    ADD COLUMN target_resource_commitment varchar(64) CHECK (target_resource_commitment ~ '^[0-9a-f]{64}$'),
    -- The chain link (audit_chain.seq of this organization) the event belongs to.
    ADD COLUMN chain_seq                  bigint NOT NULL;

-- Verification walks an organization's events link by link.
CREATE INDEX audit_log_org_chain_idx ON audit_log (organization_id, chain_seq, id);

-- Idempotency keys are unique per organization across all partitions, which a
-- unique index on the partitioned table (it must include the timestamp) cannot
-- enforce: hence a table of their own.
CREATE TABLE audit_idempotency (
    organization_id varchar(255) NOT NULL,
    idempotency_key varchar(255) NOT NULL,
    event_id        bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    hash            varchar(64) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, idempotency_key)
);

CREATE TABLE audit_chain (
    organization_id varchar(255) NOT NULL,
    -- 1, 2, 3, ... per organization, without gaps.
    seq             bigint NOT NULL CHECK (seq > 0),
    event_count     integer NOT NULL CHECK (event_count > 0),
    first_event_id  bigint NOT NULL,
    last_event_id   bigint NOT NULL,
    -- Time span of the link's events, so verification of a time range reads only
    -- the partitions it needs.
    min_timestamp   timestamptz NOT NULL,
    max_timestamp   timestamptz NOT NULL,
    merkle_root     varchar(64) NOT NULL,
    prev_link       varchar(64) NOT NULL,
    link            varchar(64) NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, seq)
);
CREATE INDEX audit_chain_org_time_idx ON audit_chain (organization_id, max_timestamp);

-- The newest link per organization. Locking this row serialises appends to one
-- organization's chain (also across worker instances) and nothing else.
CREATE TABLE audit_chain_head (
    organization_id varchar(255) PRIMARY KEY,
    seq             bigint NOT NULL,
    link            varchar(64) NOT NULL,
    event_total     bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

-- Signed statements of a chain's length and last link, kept (and delivered)
-- outside the database so that truncating the chain's tail is detectable.
CREATE TABLE integrity_checkpoints (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    seq             bigint NOT NULL,
    link            varchar(64) NOT NULL,
    event_total     bigint NOT NULL,
    signed_at       timestamptz NOT NULL,
    -- The exact signed bytes (canonical JSON) and the Ed25519 signature (base64).
    payload         text NOT NULL,
    signature       text NOT NULL,
    key_id          varchar(64) NOT NULL,
    UNIQUE (organization_id, seq)
);
CREATE INDEX integrity_checkpoints_org_idx ON integrity_checkpoints (organization_id, id DESC);

-- Keys the worker generates on first start when the configuration provides none
-- (development); production configures them from a secret store.
CREATE TABLE worker_secrets (
    name       varchar(100) PRIMARY KEY,
    value      bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

SELECT audit_isolate_tenant_table(t::regclass) FROM unnest(ARRAY[
    'audit_idempotency', 'audit_chain', 'audit_chain_head', 'integrity_checkpoints'
]) AS t;
