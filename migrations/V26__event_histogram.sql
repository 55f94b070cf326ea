-- Events per hour (UTC) and status of each organization: the console draws
-- a search's time histogram from these counts, because counting a million
-- events at each page view takes longer than the page may.
--
-- The HistogramActor adds each organization's chain links in chain order
-- (links are numbered in commit order, so none is skipped) and records how
-- far it counted in `event_histogram_progress`; a reader adds the links
-- after that place itself. A deletion from audit_log takes its events back
-- out of the counts if they were counted (trigger below), so the counts stay
-- those of the events that exist.
CREATE TABLE event_histogram (
    organization_id varchar(255) NOT NULL,
    hour            timestamptz NOT NULL,
    status          varchar(50) NOT NULL,
    events          bigint NOT NULL,
    PRIMARY KEY (organization_id, hour, status)
);

CREATE TABLE event_histogram_progress (
    organization_id varchar(255) PRIMARY KEY,
    -- The last link (audit_chain.seq) whose events are in event_histogram.
    through_seq     bigint NOT NULL
);

SELECT audit_isolate_tenant_table(t::regclass)
FROM unnest(ARRAY['event_histogram', 'event_histogram_progress']) AS t;

-- Takes deleted events out of the counts. It first locks the organizations'
-- progress rows, which a roll-up holds while it counts: a roll-up then either
-- counted the events before (and they are taken out here) or starts after
-- this deletion commits (and never sees them).
CREATE FUNCTION event_histogram_uncount() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM 1 FROM event_histogram_progress
    WHERE organization_id IN (SELECT DISTINCT organization_id FROM gone)
    ORDER BY organization_id
    FOR UPDATE;
    WITH counted AS (
        SELECT g.organization_id, date_trunc('hour', g."timestamp", 'UTC') AS hour, g.status,
               count(*) AS events
        FROM gone g
        JOIN audit_chain c ON c.organization_id = g.organization_id AND c.link_id = g.chain_link
        JOIN event_histogram_progress p ON p.organization_id = g.organization_id
        WHERE c.seq <= p.through_seq
        GROUP BY 1, 2, 3
    )
    UPDATE event_histogram h SET events = h.events - counted.events
    FROM counted
    WHERE h.organization_id = counted.organization_id AND h.hour = counted.hour
      AND h.status = counted.status;
    RETURN NULL;
END
$$;

CREATE TRIGGER audit_log_uncount AFTER DELETE ON audit_log
REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION event_histogram_uncount();
