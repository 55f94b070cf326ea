//! Tamper evidence. The format is specified byte for byte in `docs/integrity.md`.
//!
//! - [`canonical`]: an event's canonical bytes, its hash, identifier commitments.
//! - [`chain`]: Merkle roots and chain links.
//! - [`checkpoint`]: Ed25519-signed statements of a chain's length and head.
//! - [`jcs`]: RFC 8785 canonical JSON (the `details` an event hash covers).
//! - [`keys`]: the commitment and signing keys.
//! - [`tree`]: RFC 9162 Merkle tree math: tree hashes from stored subtrees,
//!   inclusion and consistency proofs and their verifiers.
//! - [`proof`]: the proofs the API returns, and their verifiers.
//! - [`verify`]: the verification run.
//! - [`witness`]: checkpoints read back from a file, an HTTPS URL or S3.

pub mod canonical;
pub mod chain;
pub mod checkpoint;
pub mod jcs;
pub mod keys;
pub mod proof;
pub mod tree;
pub mod verify;
pub mod witness;
