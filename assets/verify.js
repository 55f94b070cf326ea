// Checks an event's inclusion proof in the browser, with nothing but WebCrypto
// and the public keys the page carries (docs/integrity.md, sections 3, 4, 10
// and 11): the event's canonical bytes hash to its hash, its link's audit path
// leads to the link's Merkle root, the link hash matches its fields, the tree
// path leads to the checkpoint's tree root, and the checkpoint's Ed25519
// signature verifies. The server's word is not taken for any of it.
"use strict";

const EVENT_DOMAIN = "audit-worker/event/v1\u0000";
const LINK_DOMAIN = "audit-worker/link/v1\u0000";
const FIELDS = ["organization_id", "timestamp", "ttl", "principal_commitment", "action",
  "target_resource_type", "target_resource_commitment", "status", "outcome_description",
  "hash_algorithm", "event_version", "correlation_id", "data_classification",
  "retention_policy", "idempotency_key", "details"];
const utf8 = new TextEncoder();

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) { out.set(part, at); at += part.length; }
  return out;
}

function u32(n) { const b = new Uint8Array(4); new DataView(b.buffer).setUint32(0, n); return b; }
function u64(n) { const b = new Uint8Array(8); new DataView(b.buffer).setBigUint64(0, BigInt(n)); return b; }

function unhex(text) {
  if (!/^[0-9a-f]{64}$/.test(text)) throw new Error("not a 32-byte hex value: " + text);
  return Uint8Array.from(text.match(/../g), (h) => parseInt(h, 16));
}
function hex(bytes) { return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join(""); }
function base64(text) { return Uint8Array.from(atob(text), (c) => c.charCodeAt(0)); }
function same(a, b) { return a.length === b.length && a.every((x, i) => x === b[i]); }

async function sha256(...parts) {
  return new Uint8Array(await crypto.subtle.digest("SHA-256", concat(...parts)));
}

// RFC 8785 (JCS): keys sorted by UTF-16 code units; numbers as ECMAScript writes them.
function jcs(value) {
  if (Array.isArray(value)) return "[" + value.map(jcs).join(",") + "]";
  if (value !== null && typeof value === "object") {
    return "{" + Object.keys(value).sort().map((k) => JSON.stringify(k) + ":" + jcs(value[k])).join(",") + "}";
  }
  return JSON.stringify(value);
}

function canonical(event) {
  const parts = [utf8.encode(EVENT_DOMAIN)];
  for (const name of FIELDS) {
    const value = event[name];
    if (value === null || value === undefined) { parts.push(new Uint8Array([0])); continue; }
    const data = utf8.encode(name === "details" ? jcs(value) : value);
    parts.push(new Uint8Array([1]), u32(data.length), data);
  }
  return concat(...parts);
}

const leafHash = (data) => sha256(new Uint8Array([0]), data);
const nodeHash = (left, right) => sha256(new Uint8Array([1]), left, right);

// RFC 9162 2.1.3.2; null when the path cannot be one of this leaf.
async function rootFromInclusion(leaf, index, size, path) {
  if (index >= size) return null;
  let fn = index, sn = size - 1, r = leaf;
  for (const p of path) {
    if (sn === 0) return null;
    if (fn % 2 === 1 || fn === sn) {
      r = await nodeHash(p, r);
      while (fn % 2 === 0 && fn !== 0) { fn = Math.floor(fn / 2); sn = Math.floor(sn / 2); }
    } else {
      r = await nodeHash(r, p);
    }
    fn = Math.floor(fn / 2); sn = Math.floor(sn / 2);
  }
  return sn === 0 ? r : null;
}

async function verify(proof, keys) {
  const checkpoint = proof.checkpoint;
  const payload = utf8.encode(checkpoint.payload);
  const statement = JSON.parse(checkpoint.payload);
  const signer = keys.find((k) => k.key_id === statement.key_id);
  if (!signer) throw new Error("the checkpoint's signing key is not among the published keys");
  const key = await crypto.subtle.importKey("raw", base64(signer.public_key), { name: "Ed25519" }, false, ["verify"]);
  if (!(await crypto.subtle.verify({ name: "Ed25519" }, key, base64(checkpoint.signature), payload))) {
    throw new Error("the checkpoint's signature does not verify");
  }
  if (!("tree_root" in statement)) throw new Error("the checkpoint commits to no tree");
  const event = proof.event;
  const eventHash = await sha256(canonical(event));
  if (hex(eventHash) !== proof.event_hash || event.hash !== proof.event_hash) {
    throw new Error("the event does not hash to its hash");
  }
  const link = proof.link;
  const merkle = unhex(link.merkle_root);
  const linkRoot = await rootFromInclusion(await leafHash(eventHash), link.leaf_index, link.event_count,
    link.audit_path.map(unhex));
  if (!linkRoot || !same(linkRoot, merkle)) throw new Error("the event's path does not lead to its link's root");
  const linkHash = await sha256(utf8.encode(LINK_DOMAIN), unhex(link.prev_link), u64(link.seq),
    u32(link.event_count), merkle);
  if (link.seq < 1 || !same(linkHash, unhex(link.link))) throw new Error("the link hash does not match its fields");
  const tree = proof.tree;
  if (tree.tree_size !== statement.tree_size || statement.seq !== statement.tree_size
      || statement.organization_id !== event.organization_id || tree.leaf_index !== link.seq - 1) {
    throw new Error("the checkpoint is for another organization, tree or link");
  }
  const root = await rootFromInclusion(await leafHash(linkHash), tree.leaf_index, tree.tree_size,
    tree.audit_path.map(unhex));
  if (!root || !same(root, unhex(statement.tree_root))) {
    throw new Error("the tree path does not lead to the checkpoint's tree root");
  }
  return statement;
}

async function main() {
  const output = document.getElementById("proof-status");
  const data = document.getElementById("proof-data");
  if (!output || !data) return;
  try {
    const { proof, keys } = JSON.parse(data.textContent);
    const statement = await verify(proof, keys);
    output.textContent = "verified: included in checkpoint " + statement.seq + ", signed by key " + statement.key_id;
    output.className = "status-success";
  } catch (error) {
    output.textContent = "failed: " + error.message;
    output.className = "status-failure";
  }
}

main();
