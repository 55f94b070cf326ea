#!/usr/bin/env python3
"""Independent reference implementation of docs/integrity.md (event hash,
identifier commitment, Merkle root, chain link), written from the spec alone.
Run it to regenerate the test vectors in this folder; the Rust tests check the
worker against them, so the two implementations must agree byte for byte.

Its JSON canonicalization covers the vectors' values (strings, integers,
short decimals, booleans, null); a full RFC 8785 implementation must also
format every number as ECMAScript does.
"""
import hashlib, hmac, json, struct, sys

EVENT_DOMAIN = b"audit-worker/event/v1\x00"
IDENTIFIER_DOMAIN = b"audit-worker/identifier/v1\x00"
LINK_DOMAIN = b"audit-worker/link/v1\x00"

FIELDS = ["organization_id", "timestamp", "ttl", "principal_commitment", "action",
          "target_resource_type", "target_resource_commitment", "status",
          "outcome_description", "hash_algorithm", "event_version", "correlation_id",
          "data_classification", "retention_policy", "idempotency_key", "details"]


def jcs(value):
    # Keys sorted by UTF-16 code units; no whitespace; UTF-8 output.
    def key(k):
        return k.encode("utf-16-be")
    if isinstance(value, dict):
        return "{" + ",".join(json.dumps(k, ensure_ascii=False) + ":" + jcs(value[k])
                              for k in sorted(value, key=key)) + "}"
    if isinstance(value, list):
        return "[" + ",".join(jcs(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return json.dumps(value, ensure_ascii=False)


def canonical(event):
    out = bytearray(EVENT_DOMAIN)
    for name in FIELDS:
        value = event.get(name)
        if value is None:
            out.append(0)
            continue
        text = jcs(value) if name == "details" else value
        data = text.encode("utf-8")
        out.append(1)
        out += struct.pack(">I", len(data)) + data
    return bytes(out)


def commitment(key, organization_id, identifier):
    org = organization_id.encode()
    return hmac.new(key, IDENTIFIER_DOMAIN + struct.pack(">I", len(org)) + org + identifier.encode(),
                    hashlib.sha256).hexdigest()


def merkle_root(leaves):
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\x00" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\x01" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def link(prev, seq, count, root):
    return hashlib.sha256(LINK_DOMAIN + prev + struct.pack(">QI", seq, count) + root).digest()


def main():
    key = bytes([0x42]) * 32
    c = commitment(key, "org-1", "user-7")
    event = {
        "organization_id": "org-1", "timestamp": "2026-01-02T03:04:05.123456Z",
        "principal_commitment": c, "action": "auth.login", "status": "success",
        "hash_algorithm": "SHA-256", "event_version": "1.0", "data_classification": "INTERNAL",
        "retention_policy": "standard",
        "details": {"b": [1, 2.50, "x"], "a": {"z": None, "\u00e9": True}},
    }
    data = canonical(event)
    event_hash = hashlib.sha256(data).digest()
    leaves = [event_hash, hashlib.sha256(b"second").digest(), hashlib.sha256(b"third").digest()]
    root = merkle_root(leaves)
    first_link = link(bytes(32), 1, 3, root)
    files = {
        "commitment.txt": c,
        "canonical.hex": data.hex(),
        "event_hash.txt": event_hash.hex(),
        "merkle_root.txt": root.hex(),
        "link.txt": first_link.hex(),
    }
    if "--check" in sys.argv:
        bad = [n for n, v in files.items() if open(n).read().strip() != v]
        sys.exit(f"mismatch: {bad}" if bad else 0)
    for name, value in files.items():
        with open(name, "w") as f:
            f.write(value + "\n")


if __name__ == "__main__":
    main()
