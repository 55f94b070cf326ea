-- Delivery: per-destination settings, soft deletion (the delivery history of a
-- deleted destination is kept), and queue leases.

ALTER TABLE delivery_destinations
    -- Concurrency, rate limit, breaker and retry settings of this destination.
    ADD COLUMN settings   jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(settings) = 'object'),
    ADD COLUMN deleted_at timestamptz;

ALTER TABLE delivery_queue
    -- A claimed item not finished by then is claimed again (its worker died).
    ADD COLUMN lease_expires_at timestamptz,
    ADD COLUMN claimed_by       varchar(255),
    ADD COLUMN last_error       text;

-- Due work: pending or retrying items whose time has come, best priority first.
CREATE INDEX delivery_queue_due_idx
    ON delivery_queue (priority DESC, (coalesce(next_retry_at, scheduled_at)))
    WHERE status IN ('pending', 'retrying');
-- Claims whose lease ran out.
CREATE INDEX delivery_queue_lease_idx ON delivery_queue (lease_expires_at) WHERE status = 'processing';
