-- Events name their chain link by a global link id, taken from a sequence when
-- the ingest transaction starts, instead of by the organization's link number.
-- The link number (seq) needs the chain head, whose row lock serialises one
-- organization's appends; with the link id, a transaction writes its events
-- first and takes that lock only for its last statements, so several ingest
-- transactions of one organization overlap and only their tails take turns.

CREATE SEQUENCE audit_chain_link_id_seq AS bigint;

ALTER TABLE audit_chain ADD COLUMN link_id bigint;
UPDATE audit_chain SET link_id = nextval('audit_chain_link_id_seq');
ALTER TABLE audit_chain
    ALTER COLUMN link_id SET NOT NULL,
    ALTER COLUMN link_id SET DEFAULT nextval('audit_chain_link_id_seq'),
    ADD CONSTRAINT audit_chain_link_id_key UNIQUE (link_id);
ALTER SEQUENCE audit_chain_link_id_seq OWNED BY audit_chain.link_id;

UPDATE audit_log e SET chain_seq = c.link_id
FROM audit_chain c
WHERE c.organization_id = e.organization_id AND c.seq = e.chain_seq;
ALTER TABLE audit_log RENAME COLUMN chain_seq TO chain_link;
ALTER INDEX audit_log_org_chain_idx RENAME TO audit_log_org_chain_link_idx;
