-- Alerts raised by rules: deduplication, rules, window state, subscriptions.

-- Which rule raised an alert and for which group (the grouped field's value),
-- and how often it fired while open: a rule firing again for the same group
-- while its alert is open updates that alert instead of creating another.
ALTER TABLE alerts
    ADD COLUMN rule_id       varchar(255),
    ADD COLUMN group_key     text,
    ADD COLUMN occurrences   integer NOT NULL DEFAULT 1 CHECK (occurrences > 0),
    ADD COLUMN first_seen_at timestamptz NOT NULL DEFAULT now(),
    ADD COLUMN last_seen_at  timestamptz NOT NULL DEFAULT now();

-- At most one open alert per rule and group; also the look-up of that alert.
CREATE UNIQUE INDEX alerts_open_rule_group_idx ON alerts (organization_id, rule_id, group_key)
    WHERE rule_id IS NOT NULL AND status IN ('active', 'acknowledged');
-- The cooldown: the last closed alert of a rule and group.
CREATE INDEX alerts_closed_rule_group_idx ON alerts (organization_id, rule_id, group_key, resolved_at DESC)
    WHERE rule_id IS NOT NULL AND status = 'resolved';
-- Retention of closed alerts.
CREATE INDEX alerts_closed_at_idx ON alerts ((coalesce(resolved_at, dismissed_at)))
    WHERE status IN ('resolved', 'dismissed');

-- An organization's own rules (rules from config.toml apply to every organization).
CREATE TABLE alert_rules (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id  varchar(255) NOT NULL,
    name             varchar(100) NOT NULL,
    -- The rule as the API takes it (kind, conditions, threshold, window, group_by,
    -- severity, type, cooldown), validated by the worker.
    definition       jsonb NOT NULL,
    enabled          boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    created_by       varchar(255),
    updated_at       timestamptz NOT NULL DEFAULT now(),
    UNIQUE (organization_id, name)
);

-- Sliding-window state of threshold rules: one row per matching event, so the
-- count in a window is shared by every worker and survives their restarts.
CREATE TABLE alert_window_hits (
    organization_id varchar(255) NOT NULL,
    rule_id         varchar(255) NOT NULL,
    group_key       text NOT NULL,
    occurred_at     timestamptz NOT NULL,
    event_id        bigint NOT NULL,
    -- Past this (occurred_at + the rule's window) the hit counts in no window.
    expires_at      timestamptz NOT NULL,
    PRIMARY KEY (organization_id, rule_id, group_key, occurred_at, event_id)
);
CREATE INDEX alert_window_hits_expiry_idx ON alert_window_hits (expires_at);

-- Which destinations hear of which alerts.
CREATE TABLE alert_subscriptions (
    id              bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id varchar(255) NOT NULL,
    destination_id  bigint NOT NULL REFERENCES delivery_destinations (id) ON DELETE CASCADE,
    min_severity    varchar(20) NOT NULL DEFAULT 'HIGH'
        CHECK (min_severity IN ('INFO', 'LOW', 'MEDIUM', 'HIGH', 'CRITICAL')),
    -- Empty: every type.
    types           text[] NOT NULL DEFAULT '{}'
        CHECK (types <@ ARRAY['SECURITY', 'COMPLIANCE', 'PERFORMANCE', 'SYSTEM', 'DELIVERY', 'CUSTOM']::text[]),
    enabled         boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    created_by      varchar(255),
    UNIQUE (organization_id, destination_id)
);

SELECT audit_isolate_tenant_table(t::regclass)
FROM unnest(ARRAY['alert_rules', 'alert_window_hits', 'alert_subscriptions']) AS t;
