-- API keys, and row-level security on every tenant table.
--
-- Tenant-scoped work runs in transactions that switch to the role
-- `audit_worker_tenant` and set `app.organization_id`; the policies below then
-- hide every row of other organizations, so a query that forgot its
-- `organization_id` filter still returns nothing of another tenant. (The owner
-- of the tables, which the worker connects as, is not subject to these
-- policies: that is what lets authentication look a key up before it knows the
-- organization.)

CREATE TABLE api_keys (
    -- Public identifier, also embedded in the key itself.
    id              varchar(32) PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    name            varchar(255),
    role            varchar(100) NOT NULL,
    -- SHA-256 of the key's secret part; the secret itself is never stored.
    secret_hash     bytea NOT NULL CHECK (length(secret_hash) = 32),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      varchar(255),
    revoked_at      timestamptz,
    revoked_by      varchar(255)
);
CREATE INDEX api_keys_org_idx ON api_keys (organization_id, created_at);
CREATE INDEX api_keys_org_role_idx ON api_keys (organization_id, role) WHERE revoked_at IS NULL;

-- Roles are cluster-wide, and several databases of one cluster (tests, staging)
-- may migrate at once: tolerate a concurrent creation.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_worker_tenant') THEN
        CREATE ROLE audit_worker_tenant NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;

-- The connecting user must be able to `SET ROLE audit_worker_tenant` (a superuser
-- always can; granting a role to itself is an error, hence the check).
DO $$
BEGIN
    IF NOT (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) THEN
        EXECUTE format('GRANT audit_worker_tenant TO %I', current_user);
    END IF;
END
$$;

-- Puts `tenant_table` under row-level security keyed on its organization_id and
-- lets the tenant role use it. Every migration that adds a tenant table calls it.
-- Partitions of audit_log get no grant: tenants reach them only through the
-- parent, whose policy applies.
CREATE FUNCTION audit_isolate_tenant_table(tenant_table regclass) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format(
        'CREATE POLICY tenant_isolation ON %s '
        'USING (organization_id = current_setting(''app.organization_id'', true)) '
        'WITH CHECK (organization_id = current_setting(''app.organization_id'', true))',
        tenant_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO audit_worker_tenant', tenant_table);
END
$$;

SELECT audit_isolate_tenant_table(t::regclass) FROM unnest(ARRAY[
    'audit_log', 'audit_preset', 'audit_integrity_log', 'audit_retention_policy',
    'archive_storage', 'archive_dlq_event', 'alerts', 'report_templates',
    'scheduled_reports', 'report_executions', 'pseudonym_mapping', 'organization_role',
    'delivery_destinations', 'delivery_logs', 'delivery_queue', 'destination_health',
    'api_keys'
]) AS t;

GRANT USAGE ON SEQUENCE audit_log_id_seq TO audit_worker_tenant;
