-- Initial schema: every table of the seed's data model, in snake_case, with real
-- types (boolean, timestamptz, bigint, uuid, bytea) and CHECK constraints where the
-- seed stored booleans, numbers or enumerations as strings.
--
-- Every tenant table carries `organization_id` (the future Citus distribution
-- column) and its indexes lead with it, because every query is scoped to one
-- organization.

-- ---------------------------------------------------------------------------
-- audit_log: range-partitioned by month on "timestamp" (audit_log_YYYY_MM).
-- ---------------------------------------------------------------------------

-- A sequence rather than an identity column: PostgreSQL 15 does not allow
-- identity columns on partitioned tables.
CREATE SEQUENCE audit_log_id_seq AS bigint;

CREATE TABLE audit_log (
    id                   bigint       NOT NULL DEFAULT nextval('audit_log_id_seq'),
    "timestamp"          timestamptz  NOT NULL,
    ttl                  varchar(255),
    principal_id         varchar(255) NOT NULL,
    organization_id      varchar(255) NOT NULL,
    action               varchar(255) NOT NULL,
    target_resource_type varchar(255),
    target_resource_id   varchar(255),
    status               varchar(50)  NOT NULL
        CHECK (status IN ('attempt', 'success', 'failure')),
    outcome_description  text,
    hash                 varchar(64)  NOT NULL CHECK (hash ~ '^[0-9a-f]{64}$'),
    hash_algorithm       varchar(50)  NOT NULL DEFAULT 'SHA-256',
    event_version        varchar(20)  NOT NULL DEFAULT '1.0',
    correlation_id       varchar(255),
    data_classification  varchar(20)  NOT NULL DEFAULT 'INTERNAL'
        CHECK (data_classification IN ('PUBLIC', 'INTERNAL', 'CONFIDENTIAL', 'PHI')),
    retention_policy     varchar(50)  NOT NULL DEFAULT 'standard',
    -- Milliseconds from receipt to commit.
    processing_latency   integer CHECK (processing_latency >= 0),
    archived_at          timestamptz,
    details              jsonb CHECK (details IS NULL OR jsonb_typeof(details) = 'object'),
    -- A partitioned table's primary key must include the partition column.
    PRIMARY KEY (id, "timestamp")
) PARTITION BY RANGE ("timestamp");

ALTER SEQUENCE audit_log_id_seq OWNED BY audit_log.id;

-- Indexes for the query patterns; created on the parent, so every partition gets them.
-- Listing and keyset pagination by time.
CREATE INDEX audit_log_org_time_idx ON audit_log (organization_id, "timestamp" DESC, id DESC);
-- Exact and prefix (`auth.*`) action filters: varchar_pattern_ops serves LIKE 'prefix%'.
CREATE INDEX audit_log_org_action_idx ON audit_log (organization_id, action varchar_pattern_ops, "timestamp");
CREATE INDEX audit_log_org_principal_idx ON audit_log (organization_id, principal_id, "timestamp");
CREATE INDEX audit_log_org_target_idx
    ON audit_log (organization_id, target_resource_type, target_resource_id, "timestamp");
CREATE INDEX audit_log_org_correlation_idx
    ON audit_log (organization_id, correlation_id) WHERE correlation_id IS NOT NULL;
CREATE INDEX audit_log_org_status_idx ON audit_log (organization_id, status, "timestamp");

-- Creates the partition holding `month` (any day of it), bounds in UTC, if it is
-- missing; returns its name. Partition maintenance calls it too.
CREATE FUNCTION audit_log_ensure_partition(month date) RETURNS text
LANGUAGE plpgsql AS $$
DECLARE
    month_start timestamptz := date_trunc('month', month::timestamp) AT TIME ZONE 'UTC';
    month_end   timestamptz := (date_trunc('month', month::timestamp) + interval '1 month') AT TIME ZONE 'UTC';
    partition   text := format('audit_log_%s', to_char(month, 'YYYY_MM'));
BEGIN
    EXECUTE format(
        'CREATE TABLE IF NOT EXISTS %I PARTITION OF audit_log FOR VALUES FROM (%L) TO (%L)',
        partition, month_start, month_end);
    RETURN partition;
END
$$;

-- The current month and the next six.
SELECT audit_log_ensure_partition(
    (date_trunc('month', now() AT TIME ZONE 'UTC') + make_interval(months => ahead))::date)
FROM generate_series(0, 6) AS ahead;

-- ---------------------------------------------------------------------------
-- Presets, integrity, retention, archives.
-- ---------------------------------------------------------------------------

CREATE TABLE audit_preset (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name                varchar(255) NOT NULL,
    description         text,
    organization_id     varchar(255) NOT NULL,
    action              varchar(255) NOT NULL,
    data_classification varchar(20)  NOT NULL DEFAULT 'INTERNAL'
        CHECK (data_classification IN ('PUBLIC', 'INTERNAL', 'CONFIDENTIAL', 'PHI')),
    required_fields     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(required_fields) = 'array'),
    default_values      jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(default_values) = 'object'),
    validation          jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(validation) = 'object'),
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          varchar(255),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          varchar(255),
    UNIQUE (organization_id, name)
);

CREATE TABLE audit_integrity_log (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id        varchar(255) NOT NULL,
    -- The event a verification finding is about, when there is one. Deliberately
    -- not a foreign key: archival and GDPR erasure remove events on purpose, and
    -- the record that they were verified must outlive them.
    audit_log_id           bigint,
    verification_timestamp timestamptz NOT NULL DEFAULT now(),
    verification_status    varchar(20) NOT NULL
        CHECK (verification_status IN ('success', 'failure')),
    verification_details   jsonb,
    verified_by            varchar(255),
    hash_verified          varchar(64),
    expected_hash          varchar(64)
);
CREATE INDEX audit_integrity_log_org_time_idx
    ON audit_integrity_log (organization_id, verification_timestamp DESC);

CREATE TABLE audit_retention_policy (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    policy_name         varchar(100) NOT NULL,
    organization_id     varchar(255) NOT NULL,
    retention_days      integer NOT NULL CHECK (retention_days > 0),
    archive_after_days  integer CHECK (archive_after_days >= 0),
    delete_after_days   integer CHECK (delete_after_days > 0),
    data_classification varchar(20) NOT NULL
        CHECK (data_classification IN ('PUBLIC', 'INTERNAL', 'CONFIDENTIAL', 'PHI')),
    description         text,
    is_active           boolean NOT NULL DEFAULT true,
    created_at          timestamptz NOT NULL DEFAULT now(),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    created_by          varchar(255),
    UNIQUE (organization_id, policy_name),
    CHECK (archive_after_days IS NULL OR archive_after_days <= retention_days)
);

CREATE TABLE archive_storage (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id   varchar(255) NOT NULL,
    -- Time range, event count, compression, SHA-256 of both forms, chain links.
    metadata          jsonb NOT NULL,
    -- Compressed bytes (the seed kept them as text).
    data              bytea NOT NULL,
    created_at        timestamptz NOT NULL DEFAULT now(),
    retrieved_count   integer NOT NULL DEFAULT 0,
    last_retrieved_at timestamptz
);
CREATE INDEX archive_storage_org_time_idx ON archive_storage (organization_id, created_at DESC);

CREATE TABLE archive_dlq_event (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id     varchar(255) NOT NULL,
    "timestamp"         timestamptz NOT NULL DEFAULT now(),
    action              varchar(255) NOT NULL,
    failure_reason      text NOT NULL,
    failure_count       integer NOT NULL DEFAULT 1 CHECK (failure_count > 0),
    first_failure_time  timestamptz NOT NULL,
    last_failure_time   timestamptz NOT NULL,
    original_job_id     varchar(255),
    original_queue_name varchar(255),
    original_event      jsonb,
    metadata            jsonb
);
CREATE INDEX archive_dlq_event_org_idx ON archive_dlq_event (organization_id, last_failure_time DESC);

-- ---------------------------------------------------------------------------
-- Errors and configuration history (operator data).
-- ---------------------------------------------------------------------------

CREATE TABLE error_log (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    -- Null for errors of the worker itself, which belong to no tenant.
    organization_id varchar(255),
    category        varchar(50)  NOT NULL,
    severity        varchar(20)  NOT NULL CHECK (severity IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    code            varchar(100) NOT NULL,
    message         text NOT NULL,
    component       varchar(100),
    operation       varchar(100),
    correlation_id  varchar(255),
    user_id         varchar(255),
    session_id      varchar(255),
    request_id      varchar(255),
    retryable       boolean NOT NULL DEFAULT false,
    aggregation_key varchar(255),
    context         jsonb,
    troubleshooting jsonb,
    "timestamp"     timestamptz NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX error_log_time_idx ON error_log ("timestamp" DESC);
CREATE INDEX error_log_aggregation_idx ON error_log (aggregation_key, "timestamp" DESC);

CREATE TABLE error_aggregation (
    aggregation_key     varchar(255) PRIMARY KEY,
    category            varchar(50) NOT NULL,
    severity            varchar(20) NOT NULL CHECK (severity IN ('LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    count               bigint NOT NULL DEFAULT 0 CHECK (count >= 0),
    -- Errors per minute over the last aggregation interval (the seed kept a string).
    error_rate          double precision NOT NULL DEFAULT 0,
    trend               varchar(20) NOT NULL DEFAULT 'stable'
        CHECK (trend IN ('increasing', 'decreasing', 'stable')),
    first_occurrence    timestamptz NOT NULL,
    last_occurrence     timestamptz NOT NULL,
    affected_components jsonb NOT NULL DEFAULT '[]',
    affected_users      jsonb NOT NULL DEFAULT '[]',
    samples             jsonb NOT NULL DEFAULT '[]',
    updated_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE config_change_event (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    "timestamp"      timestamptz NOT NULL DEFAULT now(),
    field            varchar(255) NOT NULL,
    previous_value   jsonb,
    new_value        jsonb,
    changed_by       varchar(255) NOT NULL,
    reason           varchar(255),
    environment      varchar(100),
    previous_version varchar(100),
    new_version      varchar(100)
);
CREATE INDEX config_change_event_time_idx ON config_change_event ("timestamp" DESC);

-- ---------------------------------------------------------------------------
-- Alerts.
-- ---------------------------------------------------------------------------

CREATE TABLE alerts (
    id               uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id  varchar(255) NOT NULL,
    severity         varchar(20) NOT NULL
        CHECK (severity IN ('INFO', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    type             varchar(20) NOT NULL
        CHECK (type IN ('SECURITY', 'COMPLIANCE', 'PERFORMANCE', 'SYSTEM', 'DELIVERY', 'CUSTOM')),
    status           varchar(20) NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'acknowledged', 'resolved', 'dismissed')),
    title            varchar(500) NOT NULL,
    description      text,
    source           varchar(100) NOT NULL,
    correlation_id   varchar(255),
    metadata         jsonb NOT NULL DEFAULT '{}',
    -- The seed's 'true'/'false' strings, derived so they can never disagree with the timestamps.
    acknowledged     boolean GENERATED ALWAYS AS (acknowledged_at IS NOT NULL) STORED,
    acknowledged_at  timestamptz,
    acknowledged_by  varchar(255),
    resolved         boolean GENERATED ALWAYS AS (resolved_at IS NOT NULL) STORED,
    resolved_at      timestamptz,
    resolved_by      varchar(255),
    resolution_notes text,
    dismissed_at     timestamptz,
    dismissed_by     varchar(255),
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX alerts_org_time_idx ON alerts (organization_id, created_at DESC, id DESC);
CREATE INDEX alerts_org_status_idx ON alerts (organization_id, status, severity);

-- ---------------------------------------------------------------------------
-- Reports.
-- ---------------------------------------------------------------------------

CREATE TABLE report_templates (
    id                    uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name                  varchar(255) NOT NULL,
    description           text,
    organization_id       varchar(255) NOT NULL,
    report_type           varchar(50) NOT NULL,
    default_criteria      jsonb NOT NULL DEFAULT '{}',
    default_format        varchar(20) NOT NULL DEFAULT 'json'
        CHECK (default_format IN ('json', 'csv', 'html', 'pdf')),
    default_export_config jsonb NOT NULL DEFAULT '{}',
    tags                  jsonb NOT NULL DEFAULT '[]',
    is_active             boolean NOT NULL DEFAULT true,
    created_at            timestamptz NOT NULL DEFAULT now(),
    created_by            varchar(255),
    updated_at            timestamptz NOT NULL DEFAULT now(),
    updated_by            varchar(255),
    UNIQUE (organization_id, name)
);

CREATE TABLE scheduled_reports (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    name            varchar(255) NOT NULL,
    description     text,
    organization_id varchar(255) NOT NULL,
    template_id     uuid REFERENCES report_templates (id) ON DELETE SET NULL,
    report_type     varchar(50) NOT NULL,
    criteria        jsonb NOT NULL DEFAULT '{}',
    format          varchar(20) NOT NULL DEFAULT 'json'
        CHECK (format IN ('json', 'csv', 'html', 'pdf')),
    -- Cron expression and time zone.
    schedule        jsonb NOT NULL,
    delivery        jsonb NOT NULL DEFAULT '{}',
    export          jsonb NOT NULL DEFAULT '{}',
    enabled         boolean NOT NULL DEFAULT true,
    last_run        timestamptz,
    next_run        timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      varchar(255),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    updated_by      varchar(255)
);
CREATE INDEX scheduled_reports_org_idx ON scheduled_reports (organization_id, name);
CREATE INDEX scheduled_reports_due_idx ON scheduled_reports (next_run) WHERE enabled;

CREATE TABLE report_executions (
    id                uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    report_config_id  uuid NOT NULL REFERENCES scheduled_reports (id) ON DELETE CASCADE,
    organization_id   varchar(255) NOT NULL,
    scheduled_time    timestamptz NOT NULL,
    execution_time    timestamptz,
    status            varchar(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'running', 'completed', 'failed')),
    -- Milliseconds.
    duration          integer CHECK (duration >= 0),
    records_processed bigint CHECK (records_processed >= 0),
    export_result     jsonb,
    integrity_report  jsonb,
    delivery_attempts jsonb NOT NULL DEFAULT '[]',
    error             text,
    created_at        timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX report_executions_report_idx
    ON report_executions (organization_id, report_config_id, scheduled_time DESC);

-- ---------------------------------------------------------------------------
-- GDPR and roles.
-- ---------------------------------------------------------------------------

CREATE TABLE pseudonym_mapping (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    "timestamp"     timestamptz NOT NULL DEFAULT now(),
    pseudonym_id    text NOT NULL,
    -- Encrypted original identifier.
    original_id     text NOT NULL,
    strategy        varchar(20) NOT NULL CHECK (strategy IN ('hash', 'token', 'encryption')),
    UNIQUE (organization_id, original_id)
);
CREATE INDEX pseudonym_mapping_pseudonym_idx ON pseudonym_mapping (organization_id, pseudonym_id);

CREATE TABLE organization_role (
    organization_id varchar(255) NOT NULL,
    name            varchar(100) NOT NULL,
    description     text,
    -- [{"resource": "...", "action": "..."}]
    permissions     jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(permissions) = 'array'),
    -- ["role name", ...]
    inherits        jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(inherits) = 'array'),
    PRIMARY KEY (organization_id, name)
);

-- ---------------------------------------------------------------------------
-- Delivery.
-- ---------------------------------------------------------------------------

CREATE TABLE delivery_destinations (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    type            varchar(50) NOT NULL CHECK (type IN ('webhook', 'email', 's3', 'ftp')),
    label           varchar(255) NOT NULL,
    description     text,
    icon            varchar(255),
    instructions    text,
    disabled        boolean NOT NULL DEFAULT false,
    disabled_at     timestamptz,
    disabled_by     varchar(255),
    count_usage     bigint NOT NULL DEFAULT 0,
    last_used_at    timestamptz,
    -- Kind-specific settings; secrets inside are encrypted.
    config          jsonb NOT NULL CHECK (jsonb_typeof(config) = 'object'),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_destinations_org_idx ON delivery_destinations (organization_id, id);

CREATE TABLE delivery_logs (
    id                     bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    delivery_id            varchar(255) NOT NULL,
    destination_id         bigint NOT NULL REFERENCES delivery_destinations (id),
    organization_id        varchar(255) NOT NULL,
    object_details         jsonb,
    status                 varchar(20) NOT NULL
        CHECK (status IN ('pending', 'delivered', 'failed', 'retrying')),
    attempts               jsonb NOT NULL DEFAULT '[]' CHECK (jsonb_typeof(attempts) = 'array'),
    last_attempt_at        timestamptz,
    delivered_at           timestamptz,
    failure_reason         text,
    cross_system_reference varchar(255),
    correlation_id         varchar(255),
    idempotency_key        varchar(255),
    details                jsonb,
    created_at             timestamptz NOT NULL DEFAULT now(),
    updated_at             timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX delivery_logs_org_delivery_idx ON delivery_logs (organization_id, delivery_id);
CREATE INDEX delivery_logs_destination_idx ON delivery_logs (destination_id, created_at DESC);

CREATE TABLE delivery_queue (
    id              uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    organization_id varchar(255) NOT NULL,
    destination_id  bigint NOT NULL REFERENCES delivery_destinations (id),
    payload         jsonb NOT NULL,
    priority        smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN 0 AND 10),
    scheduled_at    timestamptz NOT NULL DEFAULT now(),
    processed_at    timestamptz,
    status          varchar(20) NOT NULL DEFAULT 'pending'
        CHECK (status IN ('pending', 'processing', 'retrying', 'delivered', 'failed')),
    correlation_id  varchar(255),
    idempotency_key varchar(255),
    retry_count     integer NOT NULL DEFAULT 0 CHECK (retry_count >= 0),
    max_retries     integer NOT NULL DEFAULT 7 CHECK (max_retries >= 0),
    next_retry_at   timestamptz,
    metadata        jsonb,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- The claim query: due work, highest priority first, then oldest.
CREATE INDEX delivery_queue_claim_idx ON delivery_queue (priority DESC, scheduled_at)
    WHERE status IN ('pending', 'retrying');
CREATE INDEX delivery_queue_org_status_idx ON delivery_queue (organization_id, status, created_at DESC);
CREATE UNIQUE INDEX delivery_queue_idempotency_idx
    ON delivery_queue (organization_id, idempotency_key, destination_id)
    WHERE idempotency_key IS NOT NULL;

CREATE TABLE destination_health (
    destination_id            bigint PRIMARY KEY REFERENCES delivery_destinations (id) ON DELETE CASCADE,
    organization_id           varchar(255) NOT NULL,
    status                    varchar(20) NOT NULL DEFAULT 'healthy'
        CHECK (status IN ('healthy', 'degraded', 'unhealthy', 'disabled')),
    last_check_at             timestamptz,
    consecutive_failures      integer NOT NULL DEFAULT 0 CHECK (consecutive_failures >= 0),
    total_failures            bigint  NOT NULL DEFAULT 0 CHECK (total_failures >= 0),
    total_deliveries          bigint  NOT NULL DEFAULT 0 CHECK (total_deliveries >= 0),
    -- Percentage 0..100 (the seed kept a string).
    success_rate              double precision CHECK (success_rate BETWEEN 0 AND 100),
    -- Milliseconds.
    average_response_time     integer CHECK (average_response_time >= 0),
    last_failure_at           timestamptz,
    last_success_at           timestamptz,
    disabled_at               timestamptz,
    disabled_reason           text,
    circuit_breaker_state     varchar(20) NOT NULL DEFAULT 'closed'
        CHECK (circuit_breaker_state IN ('closed', 'open', 'half-open')),
    circuit_breaker_opened_at timestamptz,
    metadata                  jsonb,
    updated_at                timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX destination_health_org_idx ON destination_health (organization_id);
