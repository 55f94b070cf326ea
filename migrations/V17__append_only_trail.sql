-- The trail is append-only, enforced by PostgreSQL: rows of audit_log (every
-- partition, present and future), audit_chain, integrity_checkpoints,
-- audit_integrity_log and trail_operations are never updated, deleted or
-- truncated, whoever asks (the table owner included). The one exception: an
-- UPDATE or DELETE of audit_log inside a recorded operation, a transaction
-- that names (setting `audit_worker.operation`) a row of trail_operations of
-- the row's organization, of a kind allowed for that statement, whose record
-- event is in the organization's chain. audit_chain_head only moves forward.
-- A superuser who disables triggers is outside this promise; verification
-- still catches what they change.

-- Recorded operations. A row can only be added once its record event (the
-- audit event saying what is about to happen) is in the organization's chain.
CREATE TABLE trail_operations (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id varchar(255) NOT NULL,
    kind            varchar(30) NOT NULL
        CHECK (kind IN ('archival', 'retention_deletion', 'gdpr_pseudonymization', 'gdpr_erasure')),
    record_event_id bigint NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX trail_operations_org_idx ON trail_operations (organization_id, created_at DESC);
SELECT audit_isolate_tenant_table('trail_operations'::regclass);

CREATE FUNCTION audit_trail_operation_recorded() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
BEGIN
    IF NOT EXISTS (
        SELECT 1 FROM audit_log e JOIN audit_chain c
          ON c.organization_id = e.organization_id AND c.link_id = e.chain_link
        WHERE e.organization_id = NEW.organization_id AND e.id = NEW.record_event_id
    ) THEN
        RAISE EXCEPTION 'a recorded operation needs its record event in the chain: event % of % is not',
            NEW.record_event_id, NEW.organization_id
            USING ERRCODE = 'foreign_key_violation';
    END IF;
    RETURN NEW;
END
$$;
CREATE TRIGGER trail_operations_recorded BEFORE INSERT ON trail_operations
    FOR EACH ROW EXECUTE FUNCTION audit_trail_operation_recorded();

-- Refuses the statement: the trail is append-only.
CREATE FUNCTION audit_trail_refuse() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION '% on % refused: the audit trail is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only the worker''s recorded operations (archival, retention, GDPR) change the trail; see docs/integrity.md.';
END
$$;

-- Lets an UPDATE or DELETE of an audit_log row through only inside a recorded
-- operation of the row's organization, of one of the kinds given as arguments.
CREATE FUNCTION audit_log_guard() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    operation text := current_setting('audit_worker.operation', true);
BEGIN
    IF operation ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$' AND EXISTS (
        SELECT 1 FROM trail_operations o
        WHERE o.id = operation::uuid AND o.organization_id = OLD.organization_id AND o.kind = ANY (TG_ARGV)
    ) THEN
        IF TG_OP = 'DELETE' THEN
            RETURN OLD;
        END IF;
        RETURN NEW;
    END IF;
    RAISE EXCEPTION '% on % refused: the audit trail is append-only', TG_OP, TG_TABLE_NAME
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Only the worker''s recorded operations (archival, retention, GDPR) change the trail; see docs/integrity.md.';
END
$$;

-- Row triggers on the partitioned parent are cloned onto every partition,
-- present and future. Pseudonymization rewrites identifiers (erasure
-- pseudonymizes what it keeps); archival, retention and erasure delete.
CREATE TRIGGER audit_log_update_guard BEFORE UPDATE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard('gdpr_pseudonymization', 'gdpr_erasure');
CREATE TRIGGER audit_log_delete_guard BEFORE DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION audit_log_guard('archival', 'retention_deletion', 'gdpr_erasure');
-- TRUNCATE triggers are per table: on the parent here, on each partition
-- below and in audit_log_ensure_partition.
CREATE TRIGGER audit_log_truncate_guard BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse();
DO $$
DECLARE
    partition regclass;
BEGIN
    FOR partition IN SELECT inhrelid::regclass FROM pg_inherits WHERE inhparent = 'audit_log'::regclass LOOP
        EXECUTE format('CREATE TRIGGER audit_log_truncate_guard BEFORE TRUNCATE ON %s '
                       'FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse()', partition);
    END LOOP;
END
$$;

DO $$
DECLARE
    protected text;
BEGIN
    FOREACH protected IN ARRAY ARRAY['audit_chain', 'integrity_checkpoints', 'audit_integrity_log', 'trail_operations'] LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE OR DELETE ON %I '
                       'FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse()', protected || '_append_only', protected);
        EXECUTE format('CREATE TRIGGER %I BEFORE TRUNCATE ON %I '
                       'FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse()', protected || '_truncate_guard', protected);
    END LOOP;
END
$$;

-- The head moves forward only (rewinding it would hide a truncated tail). The
-- check is the trigger's WHEN condition, evaluated without calling a function
-- on the hot path: every ingest transaction moves a head, inside the head's
-- lock. Where a head points is checked by verification (a head ahead of its
-- chain breaks the next link).
CREATE TRIGGER audit_chain_head_forward BEFORE UPDATE ON audit_chain_head
    FOR EACH ROW
    WHEN (NOT (NEW.organization_id = OLD.organization_id AND NEW.seq > OLD.seq
               AND NEW.event_total >= OLD.event_total))
    EXECUTE FUNCTION audit_trail_refuse();
CREATE TRIGGER audit_chain_head_append_only BEFORE DELETE ON audit_chain_head
    FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse();
CREATE TRIGGER audit_chain_head_truncate_guard BEFORE TRUNCATE ON audit_chain_head
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse();

-- New partitions get their TRUNCATE guard as they are made.
CREATE OR REPLACE FUNCTION audit_log_ensure_partition(month date) RETURNS text
LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
DECLARE
    month_start timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
    month_end   timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
    partition   text := format('audit_log_%s', to_char(month, 'YYYY_MM'));
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('audit_log_ensure_partition'), hashtext(partition));
    IF to_regclass(partition) IS NOT NULL THEN
        RETURN partition;
    END IF;
    PERFORM set_config('lock_timeout', '5s', true);
    EXECUTE format('CREATE TABLE %I (LIKE audit_log INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', partition);
    EXECUTE format('ALTER TABLE %I ADD CONSTRAINT %I CHECK ("timestamp" >= %L AND "timestamp" < %L)',
        partition, partition || '_bounds', month_start, month_end);
    EXECUTE format('CREATE TRIGGER audit_log_truncate_guard BEFORE TRUNCATE ON %I '
                   'FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse()', partition);
    EXECUTE format('ALTER TABLE audit_log ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
        partition, month_start, month_end);
    EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', partition, partition || '_bounds');
    RETURN partition;
END
$$;

-- Partitions are created and dropped (only when empty) by their owner, so a
-- runtime role without DDL rights can keep them.
ALTER FUNCTION audit_log_drop_empty_partition(text) SECURITY DEFINER;
ALTER FUNCTION audit_log_drop_empty_partition(text) SET search_path = public, pg_temp;

-- A least-privilege runtime role: grant it to the login role `serve` runs as
-- (see the README). It reads and appends to the trail, changes it only through
-- recorded operations (the triggers above), owns nothing and runs no DDL.
DO $$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'audit_worker_runtime') THEN
        CREATE ROLE audit_worker_runtime NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;
END
$$;
GRANT audit_worker_tenant TO audit_worker_runtime;
GRANT USAGE ON SCHEMA public TO audit_worker_runtime;
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO audit_worker_runtime;
GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO audit_worker_runtime;
REVOKE UPDATE, DELETE ON audit_chain, integrity_checkpoints, audit_integrity_log, trail_operations
    FROM audit_worker_runtime;
REVOKE DELETE ON audit_chain_head FROM audit_worker_runtime;
REVOKE INSERT, UPDATE, DELETE ON refinery_schema_history FROM audit_worker_runtime;
-- Tables of later migrations: the same rights by default (a later trail table
-- revokes what it must not allow).
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO audit_worker_runtime;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO audit_worker_runtime;
