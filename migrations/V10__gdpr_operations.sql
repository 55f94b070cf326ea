-- GDPR: pseudonymization and erasure as recorded operations.

-- One mapping per subject: `original_id` is encrypted deterministically (the
-- same identifier always gives the same ciphertext), so V1's unique
-- constraint on (organization_id, original_id) holds; `subject_commitment` is
-- the identifier's commitment (docs/integrity.md section 2), which every event
-- of the subject carries, pseudonymized or not.
ALTER TABLE pseudonym_mapping
    ADD COLUMN subject_commitment varchar(64) NOT NULL CHECK (subject_commitment ~ '^[0-9a-f]{64}$'),
    ADD COLUMN created_by varchar(255);
DROP INDEX pseudonym_mapping_pseudonym_idx;
CREATE UNIQUE INDEX pseudonym_mapping_pseudonym_idx ON pseudonym_mapping (organization_id, pseudonym_id);
CREATE UNIQUE INDEX pseudonym_mapping_subject_idx ON pseudonym_mapping (organization_id, subject_commitment);

-- Every GDPR operation. Pseudonymization and erasure change events; the audit
-- event recording the operation's start (`record_event_id`, in the chain,
-- naming this id, the subject's commitment and the pseudonym) is what lets
-- verification accept the changes as this operation's.
CREATE TABLE gdpr_operations (
    id                 uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id    varchar(255) NOT NULL,
    kind               varchar(20) NOT NULL
        CHECK (kind IN ('export', 'pseudonymize', 'erase', 'reverse', 'rectification', 'restriction', 'objection')),
    subject_commitment varchar(64) CHECK (subject_commitment ~ '^[0-9a-f]{64}$'),
    pseudonym_id       text,
    strategy           varchar(20) CHECK (strategy IN ('hash', 'token', 'encryption')),
    status             varchar(20) NOT NULL DEFAULT 'running'
        CHECK (status IN ('running', 'completed', 'failed')),
    requested_by       varchar(255) NOT NULL,
    parameters         jsonb NOT NULL DEFAULT '{}',
    -- Counts, an export's manifest.
    result             jsonb,
    record_event_id    bigint,
    started_at         timestamptz NOT NULL DEFAULT now(),
    completed_at       timestamptz
);
CREATE INDEX gdpr_operations_org_idx ON gdpr_operations (organization_id, started_at DESC);
CREATE INDEX gdpr_operations_subject_idx ON gdpr_operations (organization_id, subject_commitment);

-- A subject's events, found by commitment (so also under a pseudonym), in id
-- order: batches walk them from where the last one stopped.
CREATE INDEX audit_log_principal_commitment_idx ON audit_log (organization_id, principal_commitment, id);
CREATE INDEX audit_log_target_commitment_idx ON audit_log (organization_id, target_resource_commitment, id)
    WHERE target_resource_commitment IS NOT NULL;

-- Leaves kept by erasure name a GDPR operation, not a retention one.
ALTER TABLE audit_pruned_leaf
    DROP CONSTRAINT audit_pruned_leaf_operation_id_fkey,
    ADD COLUMN operation_kind varchar(20) NOT NULL DEFAULT 'retention'
        CHECK (operation_kind IN ('retention', 'gdpr_erasure'));

SELECT audit_isolate_tenant_table('gdpr_operations'::regclass);
