//! Merkle tree math of RFC 9162 (section 2.1), without I/O: tree hashes over
//! ranges built from stored subtrees, inclusion and consistency proofs, and
//! their verifiers. Used for an organization's link tree (leaves: the chain's
//! link hashes, `docs/integrity.md` section 10) and for the event path inside
//! one link (leaves: its event hashes).
//!
//! Hand-written rather than taken from a crate: the proofs must come from
//! subtree hashes stored in PostgreSQL (a million links are never loaded to
//! answer one proof), which the Merkle crates, built around in-memory trees,
//! do not offer; and the algorithms are a few lines each, checked below
//! against a naive tree for every size up to 70.

use std::collections::{BTreeSet, HashMap};

use sha2::{Digest, Sha256};

pub type Hash = [u8; 32];

/// A complete subtree aligned on its size: the `2^level` leaves from
/// `index * 2^level`. RFC 9162's recursion splits every range into such a
/// left subtree and the rest, so these are all a tree ever needs stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId {
    pub level: u32,
    pub index: u64,
}

impl NodeId {
    fn covering(start: u64, size: u64) -> Self {
        let level = size.trailing_zeros();
        NodeId {
            level,
            index: start >> level,
        }
    }
}

/// A half-open range of leaf indices, `[start, end)`.
pub type Range = (u64, u64);

/// `SHA-256(0x00 || data)`.
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0u8]);
    hasher.update(data);
    hasher.finalize().into()
}

/// `SHA-256(0x01 || left || right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([1u8]);
    hasher.update(left);
    hasher.update(right);
    hasher.finalize().into()
}

/// The largest power of two below `n` (`n >= 2`): where RFC 9162 splits.
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The stored subtrees whose hashes make MTH(`range`), left to right.
/// `range` must be one RFC 9162's recursion reaches from `[0, n)` (every
/// range the proofs below use is): its left parts are then aligned subtrees.
pub fn decompose((mut start, end): Range) -> Vec<NodeId> {
    let mut nodes = Vec::new();
    while start < end {
        let size = end - start;
        let part = if size.is_power_of_two() {
            size
        } else {
            split(size)
        };
        debug_assert_eq!(start % part, 0, "not a range of the RFC 9162 recursion");
        nodes.push(NodeId::covering(start, part));
        start += part;
    }
    nodes
}

/// MTH of a range from its [`decompose`]d subtrees' hashes (each left part
/// is a sibling of the hash of everything right of it); `None` when one is
/// not in `stored`.
pub fn range_hash(range: Range, stored: &HashMap<NodeId, Hash>) -> Option<Hash> {
    let mut nodes = decompose(range).into_iter().rev();
    let mut hash = *stored.get(&nodes.next()?)?;
    for node in nodes {
        hash = node_hash(stored.get(&node)?, &hash);
    }
    Some(hash)
}

/// The ranges whose MTHs make the audit path of leaf `index` in a tree of
/// `size` leaves (RFC 9162 2.1.3.1), the leaf's sibling first.
pub fn inclusion_ranges(index: u64, size: u64) -> Vec<Range> {
    let (mut start, mut end, mut m) = (0, size, index);
    let mut ranges = Vec::new();
    while end - start > 1 {
        let k = split(end - start);
        if m < k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
        }
    }
    ranges.reverse();
    ranges
}

/// The ranges whose MTHs make the consistency proof from `old` to `new`
/// leaves (RFC 9162 2.1.4.1, `0 < old <= new`), deepest first.
pub fn consistency_ranges(old: u64, new: u64) -> Vec<Range> {
    let (mut start, mut end, mut m, mut whole) = (0, new, old, true);
    let mut ranges = Vec::new();
    while m != end - start {
        let k = split(end - start);
        if m <= k {
            ranges.push((start + k, end));
            end = start + k;
        } else {
            ranges.push((start, start + k));
            start += k;
            m -= k;
            whole = false;
        }
    }
    // The old tree is a subtree of the new one only when the recursion never
    // went right; otherwise its last part is a node the verifier needs.
    if !whole {
        ranges.push((start, end));
    }
    ranges.reverse();
    ranges
}

/// Every stored subtree the MTHs of `ranges` read: fetch these, in one go.
pub fn needed(ranges: &[Range]) -> BTreeSet<NodeId> {
    ranges.iter().flat_map(|range| decompose(*range)).collect()
}

/// The subtrees to read to grow a tree of `old_size` leaves: on each level,
/// the last complete node when it still waits for its right sibling.
pub fn frontier(old_size: u64) -> Vec<NodeId> {
    (0..64)
        .filter(|level| (old_size >> level) & 1 == 1)
        .map(|level| NodeId {
            level,
            index: (old_size >> level) - 1,
        })
        .collect()
}

/// The subtrees that become complete when `leaves` (leaf hashes, already
/// `leaf_hash`ed) are appended to a tree of `old_size` leaves, the leaves
/// themselves included; `frontier` holds [`frontier`]`(old_size)`'s hashes.
/// `None` when one of those is missing.
pub fn grow(
    old_size: u64,
    frontier: &HashMap<NodeId, Hash>,
    leaves: &[Hash],
) -> Option<Vec<(NodeId, Hash)>> {
    let mut grown: Vec<(NodeId, Hash)> = Vec::with_capacity(leaves.len() * 2);
    let (mut level, mut first) = (0u32, old_size);
    let mut row = leaves.to_vec();
    while !row.is_empty() {
        grown.extend(row.iter().enumerate().map(|(offset, hash)| {
            let node = NodeId {
                level,
                index: first + offset as u64,
            };
            (node, *hash)
        }));
        if first % 2 == 1 {
            let left = frontier.get(&NodeId {
                level,
                index: first - 1,
            })?;
            row.insert(0, *left);
            first -= 1;
        }
        row = row
            .chunks_exact(2)
            .map(|pair| node_hash(&pair[0], &pair[1]))
            .collect();
        level += 1;
        first /= 2;
    }
    Some(grown)
}

/// RFC 9162 2.1.3.2: whether `path` takes `leaf` (a leaf hash) at `index`
/// to `root` in a tree of `size` leaves.
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, path: &[Hash], root: &Hash) -> bool {
    if index >= size {
        return false;
    }
    let (mut fnode, mut snode, mut hash) = (index, size - 1, *leaf);
    for sibling in path {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            hash = node_hash(sibling, &hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && hash == *root
}

/// RFC 9162 2.1.4.2: whether `proof` shows the tree of `new_size` leaves
/// with `new_root` extends the one of `old_size` leaves with `old_root`.
pub fn verify_consistency(
    old_size: u64,
    new_size: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> bool {
    if old_size == 0 || old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if old_size.is_power_of_two() {
        path.push(*old_root);
    }
    path.extend_from_slice(proof);
    let Some((first, rest)) = path.split_first() else {
        return false;
    };
    let (mut fnode, mut snode) = (old_size - 1, new_size - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut old_hash, mut new_hash) = (*first, *first);
    for node in rest {
        if snode == 0 {
            return false;
        }
        if fnode & 1 == 1 || fnode == snode {
            old_hash = node_hash(node, &old_hash);
            new_hash = node_hash(node, &new_hash);
            while fnode & 1 == 0 && fnode != 0 {
                fnode >>= 1;
                snode >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, node);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    snode == 0 && old_hash == *old_root && new_hash == *new_root
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrity::chain;

    fn data(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| Sha256::digest(i.to_be_bytes()).into())
            .collect()
    }

    /// Every subtree of a tree over `data` (what the store would hold).
    fn all_nodes(data: &[Hash]) -> HashMap<NodeId, Hash> {
        let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        grow(0, &HashMap::new(), &leaves)
            .unwrap()
            .into_iter()
            .collect()
    }

    /// MTH straight from the definition, for the ranges a proof names.
    fn naive(data: &[Hash], (start, end): Range) -> Hash {
        chain::merkle_root(&data[start as usize..end as usize])
    }

    const MAX: u64 = 70;

    #[test]
    fn stored_subtrees_give_every_tree_hash() {
        let data = data(MAX);
        let nodes = all_nodes(&data);
        for size in 1..=MAX {
            assert_eq!(
                range_hash((0, size), &nodes),
                Some(naive(&data, (0, size))),
                "{size}"
            );
        }
    }

    #[test]
    fn growing_in_steps_stores_what_growing_at_once_does() {
        let data = data(MAX);
        let leaves: Vec<Hash> = data.iter().map(|d| leaf_hash(d)).collect();
        let whole = all_nodes(&data);
        for step in 1..9 {
            let mut stored: HashMap<NodeId, Hash> = HashMap::new();
            let mut size = 0;
            while size < MAX {
                let next = (size + step).min(MAX);
                let frontier: HashMap<NodeId, Hash> = frontier(size)
                    .into_iter()
                    .map(|node| (node, stored[&node]))
                    .collect();
                let grown = grow(size, &frontier, &leaves[size as usize..next as usize]).unwrap();
                for (node, hash) in grown {
                    assert!(stored.insert(node, hash).is_none(), "{node:?} twice");
                }
                size = next;
            }
            assert_eq!(stored, whole, "step {step}");
        }
    }

    #[test]
    fn growing_without_the_frontier_is_refused() {
        let leaves = [leaf_hash(b"x")];
        assert_eq!(grow(3, &HashMap::new(), &leaves), None);
    }

    #[test]
    fn inclusion_proofs_verify_and_nothing_else_does() {
        let data = data(MAX);
        let nodes = all_nodes(&data);
        for size in 1..=MAX {
            let root = naive(&data, (0, size));
            for index in 0..size {
                let path: Vec<Hash> = inclusion_ranges(index, size)
                    .into_iter()
                    .map(|range| range_hash(range, &nodes).unwrap())
                    .collect();
                assert!(path.len() <= 7);
                let leaf = leaf_hash(&data[index as usize]);
                assert!(verify_inclusion(&leaf, index, size, &path, &root));
                assert!(!verify_inclusion(
                    &leaf_hash(b"other"),
                    index,
                    size,
                    &path,
                    &root
                ));
                assert!(!verify_inclusion(&leaf, index + 1, size, &path, &root));
                if size > 1 {
                    let mut altered = path.clone();
                    altered[path.len() / 2][0] ^= 1;
                    assert!(!verify_inclusion(&leaf, index, size, &altered, &root));
                    assert!(!verify_inclusion(&leaf, index, size, &path[1..], &root));
                }
            }
        }
    }

    #[test]
    fn consistency_proofs_verify_and_nothing_else_does() {
        let data = data(MAX);
        let nodes = all_nodes(&data);
        for new in 1..=MAX {
            let new_root = naive(&data, (0, new));
            for old in 1..=new {
                let old_root = naive(&data, (0, old));
                let proof: Vec<Hash> = consistency_ranges(old, new)
                    .into_iter()
                    .map(|range| range_hash(range, &nodes).unwrap())
                    .collect();
                assert!(proof.len() <= 14);
                assert!(
                    verify_consistency(old, new, &old_root, &new_root, &proof),
                    "{old} -> {new}"
                );
                let mut other = old_root;
                other[31] ^= 1;
                assert!(!verify_consistency(old, new, &other, &new_root, &proof));
                assert!(!verify_consistency(old, new, &old_root, &other, &proof));
                if !proof.is_empty() {
                    let mut altered = proof.clone();
                    altered[0][0] ^= 1;
                    assert!(!verify_consistency(
                        old, new, &old_root, &new_root, &altered
                    ));
                }
            }
        }
    }

    /// A chain cut back to `cut` links and grown again with other links keeps
    /// no consistency with a root taken before the cut.
    #[test]
    fn a_rewritten_tail_breaks_consistency() {
        let original = data(20);
        let old_root = naive(&original, (0, 12));
        let mut rewritten = original[..9].to_vec();
        rewritten.extend((0..11u8).map(|i| -> Hash { Sha256::digest([b'x', i]).into() }));
        let nodes = all_nodes(&rewritten);
        let new_root = naive(&rewritten, (0, 20));
        let proof: Vec<Hash> = consistency_ranges(12, 20)
            .into_iter()
            .map(|range| range_hash(range, &nodes).unwrap())
            .collect();
        assert!(!verify_consistency(12, 20, &old_root, &new_root, &proof));
    }

    /// The vectors of docs/vectors/tree.json (made by the independent reference.py).
    #[test]
    fn published_tree_vectors_hold() {
        let vectors: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/vectors/tree.json")).unwrap();
        let hex_list = |value: &serde_json::Value| -> Vec<String> {
            value
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h.as_str().unwrap().to_owned())
                .collect()
        };
        let leaves: Vec<Hash> = hex_list(&vectors["leaves"])
            .iter()
            .map(|h| leaf_hash(&chain::parse_hash(h).unwrap()))
            .collect();
        let nodes: HashMap<NodeId, Hash> = grow(0, &HashMap::new(), &leaves)
            .unwrap()
            .into_iter()
            .collect();
        let hashes = |ranges: Vec<Range>| -> Vec<String> {
            ranges
                .into_iter()
                .map(|range| hex::encode(range_hash(range, &nodes).unwrap()))
                .collect()
        };
        for (size, root) in vectors["roots"].as_object().unwrap() {
            let size: u64 = size.parse().unwrap();
            assert_eq!(hashes(vec![(0, size)]), [root.as_str().unwrap()]);
        }
        for case in vectors["inclusion"].as_array().unwrap() {
            let (index, size) = (
                case["leaf_index"].as_u64().unwrap(),
                case["tree_size"].as_u64().unwrap(),
            );
            assert_eq!(
                hashes(inclusion_ranges(index, size)),
                hex_list(&case["audit_path"])
            );
        }
        for case in vectors["consistency"].as_array().unwrap() {
            let (old, new) = (case["from"].as_u64().unwrap(), case["to"].as_u64().unwrap());
            assert_eq!(
                hashes(consistency_ranges(old, new)),
                hex_list(&case["proof"])
            );
        }
    }

    #[test]
    fn a_proof_reads_few_stored_subtrees() {
        let size = 1_000_003;
        assert!(needed(&inclusion_ranges(777_777, size)).len() <= 40);
        assert!(needed(&consistency_ranges(333_333, size)).len() <= 80);
    }
}
