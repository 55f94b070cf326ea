-- A stream's batch is queued as the range of the chain it covers (`stream`:
-- its payload names the subscription's filter, format and range), and its
-- delivery reads the events as it sends them: a batch is no longer written
-- once per subscription as a JSON array of records (`ndjson`, kept for the
-- batches queued before this).
ALTER TABLE delivery_queue DROP CONSTRAINT delivery_queue_body_check;
ALTER TABLE delivery_queue ADD CONSTRAINT delivery_queue_body_check
    CHECK (body IN ('document', 'ndjson', 'stream'));
