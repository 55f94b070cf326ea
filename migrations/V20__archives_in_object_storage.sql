-- Archives in object storage (Parquet + manifest + signed digests), and the
-- look-up GDPR requests need to reach archived events.

-- Where an archive's bytes are: in `data` (store 'postgres', JSON Lines and
-- zstd), or as an object (store 's3' or 'directory', Parquet) at
-- `object_key`, beside its manifest.
ALTER TABLE archive_storage
    ALTER COLUMN data DROP NOT NULL,
    ADD COLUMN store varchar(20) NOT NULL DEFAULT 'postgres'
        CHECK (store IN ('postgres', 's3', 'directory')),
    ADD COLUMN object_key text,
    -- The principal and target commitments of the archived events, so that a
    -- GDPR request opens only the archives that hold its subject. NULL (the
    -- archives written before this column) means "open it to know".
    ADD COLUMN subject_commitments text[],
    ADD CHECK ((store = 'postgres') = (data IS NOT NULL)),
    ADD CHECK ((store = 'postgres') = (object_key IS NULL));

CREATE INDEX archive_storage_subjects_idx ON archive_storage USING gin (subject_commitments);

-- Each organization's latest archive digest in each object store
-- (`<prefix>/digests/<org>/<n>.json`): the next one links to it. Its row is
-- locked while a digest is written, so that the digests of one organization
-- in one store form a single chain. Sequence 0 (no SHA-256): none written yet.
CREATE TABLE archive_digest_head (
    organization_id varchar(255) NOT NULL,
    store           varchar(20) NOT NULL CHECK (store IN ('s3', 'directory')),
    sequence        bigint NOT NULL CHECK (sequence >= 0),
    sha256          varchar(64) CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (organization_id, store),
    CHECK ((sequence = 0) = (sha256 IS NULL))
);

SELECT audit_isolate_tenant_table('archive_digest_head'::regclass);
