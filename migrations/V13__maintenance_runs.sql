-- Runs of the database maintenance job (ANALYZE, VACUUM where dead tuples
-- pile up): what each did, shown in the operators' performance report.
CREATE TABLE maintenance_runs (
    id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    started_at  timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz,
    -- Which worker ran it (host and process id).
    instance    varchar(255) NOT NULL,
    -- `schedule` or `operator`.
    trigger     varchar(20) NOT NULL CHECK (trigger IN ('schedule', 'operator')),
    -- One object per statement: {"table", "action": "ANALYZE"|"VACUUM (ANALYZE)", "dead_tuples", "live_tuples", "ms"}.
    actions     jsonb NOT NULL DEFAULT '[]',
    error       text
);
CREATE INDEX maintenance_runs_started_idx ON maintenance_runs (started_at DESC);

-- The operators' error listing reads the most recently seen first.
CREATE INDEX error_aggregation_last_occurrence_idx ON error_aggregation (last_occurrence DESC);
