-- Streams: an organization's committed events that match a filter, delivered
-- to one of its destinations in chain order, in batches, at least once. The
-- cursor names the last event the destination accepted by its place in the
-- chain (the link's number, then the event's id within the link): links are
-- numbered in commit order under the chain head's lock, so every event before
-- the cursor was committed before any event after it.
CREATE TABLE stream_subscriptions (
    id                   bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    organization_id      varchar(255) NOT NULL,
    destination_id       bigint NOT NULL REFERENCES delivery_destinations (id),
    -- The filters of GET /v1/events that a stream takes (action, status,
    -- data_classification, principal_id, target_resource_type).
    filter               jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(filter) = 'object'),
    format               varchar(20) NOT NULL CHECK (format IN ('native', 'ocsf', 'splunk_hec')),
    batch_max_events     integer NOT NULL CHECK (batch_max_events BETWEEN 1 AND 10000),
    batch_max_delay_ms   integer NOT NULL CHECK (batch_max_delay_ms BETWEEN 0 AND 3600000),
    -- `start` as given: now, earliest, or an instant (only events at or after it).
    start_from           varchar(40) NOT NULL,
    starts_at            timestamptz,
    paused               boolean NOT NULL DEFAULT false,
    cursor_link_seq      bigint NOT NULL DEFAULT 0 CHECK (cursor_link_seq >= 0),
    cursor_event_id      bigint NOT NULL DEFAULT 0 CHECK (cursor_event_id >= 0),
    -- The batch in flight: a delivery in delivery_queue (its id is the batch's
    -- id, kept across retries), holding the events after the cursor up to
    -- this place. The cursor moves there once the delivery is delivered.
    batch_delivery_id    uuid,
    batch_link_seq       bigint,
    batch_event_id       bigint,
    -- The last event of the last batch the destination accepted, and when.
    -- (The cursor may be further on: past events the filter leaves out.)
    last_delivered_event_id bigint,
    last_delivered_at    timestamptz,
    created_by           varchar(255),
    created_at           timestamptz NOT NULL DEFAULT now(),
    updated_at           timestamptz NOT NULL DEFAULT now(),
    CHECK ((batch_delivery_id IS NULL) = (batch_link_seq IS NULL)
       AND (batch_delivery_id IS NULL) = (batch_event_id IS NULL))
);
CREATE INDEX stream_subscriptions_org_idx ON stream_subscriptions (organization_id, id);
CREATE INDEX stream_subscriptions_destination_idx ON stream_subscriptions (destination_id);
SELECT audit_isolate_tenant_table('stream_subscriptions');

-- How a delivery's payload goes on the wire: one JSON document, or (a
-- stream's batch) a JSON array sent one record a line (NDJSON).
ALTER TABLE delivery_queue
    ADD COLUMN body varchar(10) NOT NULL DEFAULT 'document' CHECK (body IN ('document', 'ndjson'));

-- Syslog destinations (RFC 5424 over TCP or TLS), for SIEM collectors.
ALTER TABLE delivery_destinations DROP CONSTRAINT delivery_destinations_type_check;
ALTER TABLE delivery_destinations ADD CONSTRAINT delivery_destinations_type_check
    CHECK (type IN ('webhook', 'email', 's3', 'ftp', 'syslog'));
