-- Witness destinations (issue 28, item 4): every signed checkpoint of an
-- organization is delivered to each of its destinations marked `witness`, so
-- that a copy the database cannot rewrite exists outside it.
--
-- Only webhook and S3 destinations can be witnesses (a witness must keep
-- the checkpoint where `verify --checkpoint URL` can fetch it); Object Lock
-- retention is an S3 notion. The API refuses the rest naming the field;
-- these checks keep the rule whatever writes the row.
ALTER TABLE delivery_destinations
    ADD COLUMN witness boolean NOT NULL DEFAULT false,
    ADD COLUMN object_lock_days integer,
    ADD CONSTRAINT delivery_destinations_witness_kind
        CHECK (NOT witness OR type IN ('webhook', 's3')),
    ADD CONSTRAINT delivery_destinations_object_lock_days
        CHECK (object_lock_days IS NULL OR (type = 's3' AND object_lock_days BETWEEN 1 AND 36500));

-- Each checkpoint looks up its organization's witnesses: few rows, read often.
CREATE INDEX delivery_destinations_witness_idx ON delivery_destinations (organization_id)
    WHERE witness AND deleted_at IS NULL;

-- The object name a delivery is stored under, decided when it is queued
-- (`checkpoints/<organization>/<seq>.json`); NULL: the destination's own
-- naming (an S3 destination's key_template). Set only by the worker, never
-- by a client, so a delivery cannot pass itself off as a checkpoint.
ALTER TABLE delivery_queue ADD COLUMN object_key text;
