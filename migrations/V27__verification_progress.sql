-- A verification the console started and is still running: how far it got,
-- so that any worker's console can show its progress. The worker running it
-- updates `updated_at` every half second; a row not updated for a while is
-- that of a run whose worker stopped, and a new run replaces it.
CREATE TABLE verification_progress (
    organization_id varchar(255) PRIMARY KEY,
    started_at      timestamptz NOT NULL DEFAULT now(),
    started_by      varchar(255) NOT NULL,
    -- The chain's events when the run started (what it has to check).
    events_total    bigint NOT NULL,
    events_checked  bigint NOT NULL DEFAULT 0,
    updated_at      timestamptz NOT NULL DEFAULT now()
);

SELECT audit_isolate_tenant_table('verification_progress'::regclass);
