-- Scheduled reports: executions as a queue of runs, and their stored outputs.

-- A run is a row from the moment it is due: the scheduler inserts it
-- (`pending`), a worker claims it under a lease (`running`), and a claim whose
-- worker died is claimed again when the lease runs out. A schedule's slot is
-- inserted once (the unique index), however many workers see it due.
ALTER TABLE report_executions
    ADD COLUMN trigger        varchar(20) NOT NULL DEFAULT 'scheduled'
        CHECK (trigger IN ('scheduled', 'manual')),
    ADD COLUMN period_from    timestamptz,
    ADD COLUMN period_to      timestamptz,
    ADD COLUMN lease_until    timestamptz,
    ADD COLUMN claimed_by     varchar(100),
    ADD COLUMN attempts       integer NOT NULL DEFAULT 0 CHECK (attempts >= 0),
    ADD COLUMN requested_by   varchar(255),
    ADD COLUMN completed_at   timestamptz,
    -- The output: its SHA-256 (hex), size in bytes and media type.
    ADD COLUMN output_sha256  varchar(64) CHECK (output_sha256 ~ '^[0-9a-f]{64}$'),
    ADD COLUMN output_bytes   bigint CHECK (output_bytes >= 0),
    ADD COLUMN output_format  varchar(20) CHECK (output_format IN ('json', 'csv', 'html'));
CREATE UNIQUE INDEX report_executions_slot_idx
    ON report_executions (report_config_id, scheduled_time) WHERE trigger = 'scheduled';
CREATE INDEX report_executions_claimable_idx
    ON report_executions (lease_until) WHERE status IN ('pending', 'running');

-- The output of a run, in zstd-compressed chunks written as the report is
-- produced, so neither producing nor downloading it holds it in memory.
CREATE TABLE report_outputs (
    execution_id    uuid NOT NULL REFERENCES report_executions (id) ON DELETE CASCADE,
    seq             integer NOT NULL CHECK (seq >= 0),
    organization_id varchar(255) NOT NULL,
    data            bytea NOT NULL,
    PRIMARY KEY (execution_id, seq)
);

-- The schedule's destinations are `delivery.destination_ids` (jsonb array);
-- `schedule` is {"cron": "...", "timezone": "..."}.
ALTER TABLE scheduled_reports
    ADD CONSTRAINT scheduled_reports_schedule_shape
        CHECK (jsonb_typeof(schedule -> 'cron') = 'string' AND jsonb_typeof(schedule -> 'timezone') = 'string');
CREATE UNIQUE INDEX scheduled_reports_org_name_idx ON scheduled_reports (organization_id, name);

SELECT audit_isolate_tenant_table('report_outputs'::regclass);
