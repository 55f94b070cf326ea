-- Deletion by retention, as recorded operations.

-- One deletion: of an organization's live events past their policy's
-- delete_after_days, or of one of its archives.
CREATE TABLE retention_operations (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id     varchar(255) NOT NULL,
    kind                varchar(20) NOT NULL CHECK (kind IN ('delete_events', 'delete_archive')),
    retention_policy    varchar(100) NOT NULL,
    data_classification varchar(20) NOT NULL,
    -- Events before this time were due.
    older_than          timestamptz NOT NULL,
    event_count         integer NOT NULL CHECK (event_count > 0),
    archive_id          uuid,
    performed_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX retention_operations_org_idx ON retention_operations (organization_id, performed_at DESC);

-- The chain leaves of deleted events: what verification needs to check their
-- links without the events. A leaf names the operation that deleted it.
CREATE TABLE audit_pruned_leaf (
    organization_id varchar(255) NOT NULL,
    chain_link      bigint NOT NULL,
    event_id        bigint NOT NULL,
    event_timestamp timestamptz NOT NULL,
    hash            varchar(64) NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    operation_id    uuid NOT NULL REFERENCES retention_operations (id),
    PRIMARY KEY (organization_id, chain_link, event_id)
);

SELECT audit_isolate_tenant_table(t::regclass)
FROM unnest(ARRAY['retention_operations', 'audit_pruned_leaf']) AS t;
