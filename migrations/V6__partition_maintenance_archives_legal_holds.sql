-- Partition maintenance, archives and legal holds.

-- Creates the partition holding `month` (any day of it), bounds in UTC, if it is
-- missing; returns its name. The table is built beside audit_log and then
-- attached: ATTACH PARTITION takes only a SHARE UPDATE EXCLUSIVE lock on
-- audit_log, which neither reads nor inserts wait for, where CREATE TABLE ...
-- PARTITION OF would take an ACCESS EXCLUSIVE one. The CHECK constraint that
-- matches the bounds spares ATTACH a scan. The parent's indexes are built on
-- the (empty) partition as it is attached.
CREATE OR REPLACE FUNCTION audit_log_ensure_partition(month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
    month_end   timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
    partition   text := format('audit_log_%s', to_char(month, 'YYYY_MM'));
BEGIN
    -- Two workers creating the same month take turns; the second finds it made.
    PERFORM pg_advisory_xact_lock(hashtext('audit_log_ensure_partition'), hashtext(partition));
    IF to_regclass(partition) IS NOT NULL THEN
        RETURN partition;
    END IF;
    -- Never queue behind a long lock holder (and make ingest queue behind us).
    PERFORM set_config('lock_timeout', '5s', true);
    EXECUTE format('CREATE TABLE %I (LIKE audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', partition);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK ("timestamp" >= %L AND "timestamp" < %L)',
        partition, partition || '_bounds', month_start, month_end);
    EXECUTE format('ALTER TABLE audit_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        partition, month_start, month_end);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', partition, partition || '_bounds');
    RETURN partition;
END
$$;

-- Archives: what verification and look-ups need, as columns (the rest is in metadata).
ALTER TABLE archive_storage
    ADD COLUMN event_count    integer NOT NULL CHECK (event_count > 0),
    ADD COLUMN first_event_at timestamptz NOT NULL,
    ADD COLUMN last_event_at  timestamptz NOT NULL,
    -- The chain links (audit_chain.link_id) the archived events belong to.
    ADD COLUMN first_link     bigint NOT NULL,
    ADD COLUMN last_link      bigint NOT NULL,
    ADD CHECK (first_event_at <= last_event_at),
    ADD CHECK (first_link <= last_link);
CREATE INDEX archive_storage_org_links_idx ON archive_storage (organization_id, first_link, last_link);

-- Legal holds: while active, nothing they cover is deleted (events, archives,
-- partitions). A hold covers the organization's events, narrowed to one
-- principal and/or a time range when those are given.
CREATE TABLE legal_holds (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    principal_id    varchar(255),
    starts_at       timestamptz,
    ends_at         timestamptz,
    reason          text NOT NULL CHECK (length(reason) > 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      varchar(255),
    released_at     timestamptz,
    released_by     varchar(255),
    CHECK (starts_at IS NULL OR ends_at IS NULL OR starts_at < ends_at)
);
CREATE INDEX legal_holds_active_idx ON legal_holds (organization_id) WHERE released_at IS NULL;
SELECT audit_isolate_tenant_table('legal_holds');

-- Detaches and drops the audit_log partition named `partition` when it holds no
-- row; returns whether it did. Checked and quoted here, so callers never paste
-- a table name into SQL.
CREATE FUNCTION audit_log_drop_empty_partition(partition text) RETURNS boolean
LANGUAGE plpgsql AS $$
DECLARE
    holds_rows boolean;
BEGIN
    IF partition !~ '^audit_log_[0-9]{4}_[0-9]{2}$' OR NOT EXISTS (
        SELECT 1 FROM pg_inherits WHERE inhparent = 'audit_log'::regclass AND inhrelid = to_regclass(partition)
    ) THEN
        RAISE EXCEPTION 'no audit_log partition named %', partition;
    END IF;
    PERFORM set_config('lock_timeout', '5s', true);
    EXECUTE format('SELECT EXISTS (SELECT 1 FROM %I)', partition) INTO holds_rows;
    IF holds_rows THEN
        RETURN false;
    END IF;
    EXECUTE format('ALTER TABLE audit_log DETACH PARTITION %I', partition);
    EXECUTE format('DROP TABLE %I', partition);
    RETURN true;
END
$$;
