-- The claim query orders due work by coalesce(next_retry_at, scheduled_at),
-- which delivery_queue_due_idx (V5) serves; the V1 index on scheduled_at alone
-- is never used and only costs a write on every enqueue and status change.
DROP INDEX delivery_queue_claim_idx;
