-- Delivery queue: a claim index by destination, and cheaper attempt logs.

-- Every delivery attempt writes one delivery_logs row; these two only made
-- each of those writes dearer.
--
-- The foreign key to delivery_destinations ran a lookup (and a KEY SHARE lock
-- on the destination's row) per attempt. It is redundant: a log row is only
-- ever written from its delivery_queue row, in the same statement, and
-- delivery_queue.destination_id keeps its foreign key (destinations are
-- soft-deleted, so the id stays valid for the history).
ALTER TABLE delivery_logs DROP CONSTRAINT delivery_logs_destination_id_fkey;
-- No query reads the log by destination (health lives in destination_health).
DROP INDEX delivery_logs_destination_idx;

-- Claims find the destinations with due work by skipping along this index,
-- one probe each, and take each one's best rows (priority, then due time), no
-- more than it has room for: a full or hung destination with a long backlog
-- costs one probe, where the priority-first index made claims read past its
-- whole backlog. It replaces that index.
CREATE INDEX delivery_queue_due_by_destination_idx
    ON delivery_queue (destination_id, priority DESC, (coalesce(next_retry_at, scheduled_at)))
    WHERE status IN ('pending', 'retrying');
DROP INDEX delivery_queue_due_idx;
