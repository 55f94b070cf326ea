-- The link tree (docs/integrity.md, format version 2): per organization, an
-- RFC 9162 Merkle tree whose leaves are the chain's link hashes. Checkpoints
-- sign its root, and proofs of inclusion and consistency are read from it.
--
-- Only complete subtrees aligned on their size are stored (node `node_index`
-- of level L covers leaves node_index * 2^L to (node_index + 1) * 2^L - 1;
-- level 0 holds SHA-256(0x00 || link)). RFC 9162 splits every range into such
-- a left subtree and the rest, so any tree hash or proof path is O(log n)
-- stored rows. A node never changes once complete: rows are only inserted,
-- before each checkpoint is signed, from the stored size to the chain head.

CREATE TABLE audit_tree_node (
    organization_id varchar(255) NOT NULL,
    level           smallint NOT NULL CHECK (level BETWEEN 0 AND 62),
    node_index      bigint NOT NULL CHECK (node_index >= 0),
    hash            bytea NOT NULL CHECK (length(hash) = 32),
    PRIMARY KEY (organization_id, level, node_index)
);

SELECT audit_isolate_tenant_table('audit_tree_node'::regclass);

-- The tree root a checkpoint signs (its tree size is its seq); NULL for the
-- checkpoints signed before this migration, whose statements have none.
ALTER TABLE integrity_checkpoints
    ADD COLUMN tree_root varchar(64) CHECK (tree_root ~ '^[0-9a-f]{64}$');

-- Part of the trail: append-only like the chain it is built from (V17).
CREATE TRIGGER audit_tree_node_append_only BEFORE UPDATE OR DELETE ON audit_tree_node
    FOR EACH ROW EXECUTE FUNCTION audit_trail_refuse();
CREATE TRIGGER audit_tree_node_truncate_guard BEFORE TRUNCATE ON audit_tree_node
    FOR EACH STATEMENT EXECUTE FUNCTION audit_trail_refuse();
REVOKE UPDATE, DELETE ON audit_tree_node FROM audit_worker_runtime;
