//! Proofs a client checks without trusting the worker: an event's inclusion
//! proof up to a signed checkpoint's tree root, and consistency proofs
//! between checkpoints. Each is checked by the Rust verifier and by the
//! independent `docs/vectors/reference.py`, untouched (both accept) and with
//! one byte altered (both refuse); a chain cut and grown again fails
//! consistency with a checkpoint taken before.

mod common;

use std::path::PathBuf;
use std::process::Command;

use audit_worker::config::Secret;
use audit_worker::integrity::checkpoint::{CheckpointStatement, SignedCheckpoint};
use audit_worker::integrity::proof::{self, ConsistencyProof, EventProof};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::{error_fields, event, spawn_app, spawn_app_with, Event, TestApp};
use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use reqwest::Method;
use serde_json::{json, Value};

/// Ingests one request per size in `batches` (each request is one chain
/// link); returns the event ids in order.
async fn ingest_batches(app: &TestApp, key: &str, batches: &[usize]) -> Vec<i64> {
    let mut ids = Vec::new();
    for (batch, size) in batches.iter().enumerate() {
        let events: Vec<Event> = (0..*size)
            .map(|i| {
                event(&format!("user-{batch}-{i}"), "record.read")
                    .target("patient", format!("p-{i}"))
                    .details(json!({"n": i, "ratio": 2.50, "note": "é\n\"x\""}))
            })
            .collect();
        let receipts = app.ingest(key, events).await;
        ids.extend(receipts.iter().map(|r| r["id"].as_i64().unwrap()));
    }
    ids
}

/// `POST /v1/integrity/checkpoints`; asserts 201 and returns the new checkpoint's seq.
async fn sign_checkpoint(app: &TestApp, key: &str) -> (i64, Value) {
    let (status, body) = app
        .call(Method::POST, "/v1/integrity/checkpoints", Some(key), None)
        .await;
    assert_eq!(status, 201, "{body}");
    let stored = body["checkpoints"][0].clone();
    (stored["seq"].as_i64().unwrap(), stored)
}

async fn try_proof(app: &TestApp, key: &str, id: i64, checkpoint: &str) -> (u16, Value) {
    let query = if checkpoint.is_empty() {
        String::new()
    } else {
        format!("?checkpoint={checkpoint}")
    };
    app.call(
        Method::GET,
        &format!("/v1/events/{id}/proof{query}"),
        Some(key),
        None,
    )
    .await
}

async fn proof_of(app: &TestApp, key: &str, id: i64, checkpoint: &str) -> Value {
    let (status, body) = try_proof(app, key, id, checkpoint).await;
    assert_eq!(status, 200, "proof of {id}: {body}");
    body
}

async fn try_consistency(app: &TestApp, key: &str, from: i64, to: i64) -> (u16, Value) {
    app.call(
        Method::GET,
        &format!("/v1/integrity/consistency?from={from}&to={to}"),
        Some(key),
        None,
    )
    .await
}

/// The published public key, as the endpoint gives it and as bytes.
async fn public_key(app: &TestApp) -> (String, VerifyingKey) {
    let (status, body) = app
        .call(Method::GET, "/v1/integrity/public-key", None, None)
        .await;
    assert_eq!(status, 200);
    let text = body["public_key"].as_str().unwrap().to_owned();
    let bytes: [u8; 32] = STANDARD.decode(&text).unwrap().try_into().unwrap();
    (text, VerifyingKey::from_bytes(&bytes).unwrap())
}

/// Runs `reference.py COMMAND FILE [ARGS]` on `body`; whether it says valid.
fn reference(command: &str, body: &Value, args: &[&str]) -> bool {
    let file: PathBuf = std::env::temp_dir().join(format!("proof-{}.json", uuid::Uuid::new_v4()));
    std::fs::write(&file, body.to_string()).unwrap();
    let output = Command::new("python3")
        .arg("docs/vectors/reference.py")
        .arg(command)
        .arg(&file)
        .args(args)
        .output()
        .expect("python3 runs");
    std::fs::remove_file(&file).unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.is_empty() || stderr.starts_with("invalid:"),
        "reference.py failed: {stderr}"
    );
    output.status.success() && stdout.trim() == "valid"
}

fn rust_accepts_proof(body: &Value, key: &VerifyingKey) -> bool {
    serde_json::from_value::<EventProof>(body.clone())
        .ok()
        .is_some_and(|proof| proof::verify_event_proof(&proof, key).is_ok())
}

fn rust_accepts_consistency(body: &Value) -> bool {
    serde_json::from_value::<ConsistencyProof>(body.clone())
        .ok()
        .is_some_and(|proof| proof::verify_consistency_proof(&proof).is_ok())
}

/// `text` with its character at `at` replaced by another (hex stays hex,
/// base64 stays base64): one byte altered.
fn flip(text: &str, at: usize) -> String {
    let mut bytes = text.as_bytes().to_vec();
    bytes[at] = if bytes[at] == b'a' { b'b' } else { b'a' };
    String::from_utf8(bytes).unwrap()
}

/// Alters one string of `body` at the JSON pointer `path` by one byte.
fn altered(body: &Value, path: &str, at: usize) -> Value {
    let mut body = body.clone();
    let slot = body.pointer_mut(path).unwrap_or_else(|| panic!("{path}"));
    *slot = Value::String(flip(slot.as_str().unwrap(), at));
    body
}

/// Every event proof verifies, in Rust and in the reference; each altered
/// byte (event, path, link, signature) makes both refuse. Events ingested
/// before any checkpoint was signed are proven too: the tree is built from
/// the chain when the first checkpoint is signed.
#[actix_web::test]
async fn event_proofs_verify_and_one_altered_byte_fails_them() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let (public_text, public) = public_key(&app).await;
    let ids = ingest_batches(&app, &key, &[1, 5, 3, 8, 2, 1, 4]).await;
    // Seven links of these events, after any the worker wrote itself (the
    // record of the key's creation).
    let (seq, _) = sign_checkpoint(&app, &key).await;
    assert!(seq >= 7, "{seq}");

    for (n, id) in ids.iter().enumerate() {
        let body = proof_of(&app, &key, *id, "latest").await;
        assert!(rust_accepts_proof(&body, &public), "{body}");
        assert_eq!(body["tree"]["tree_size"], seq);
        if n % 4 == 0 {
            assert!(reference("verify-proof", &body, &[&public_text]), "{body}");
        }
    }

    // An event in the middle of a link of 8: paths of log2 of their trees.
    let body = proof_of(&app, &key, ids[12], "").await;
    assert_eq!(body["link"]["event_count"], 8);
    assert_eq!(body["link"]["audit_path"].as_array().unwrap().len(), 3);
    assert_eq!(
        body["tree"]["leaf_index"],
        body["link"]["seq"].as_i64().unwrap() - 1
    );
    let tree_path = body["tree"]["audit_path"].as_array().unwrap().len();
    assert!(
        (1..=(seq as f64).log2().ceil() as usize).contains(&tree_path),
        "{body}"
    );
    let mut action = body.clone();
    action["event"]["action"] = json!("record.reae");
    let mut details = body.clone();
    details["event"]["details"]["n"] = json!(5);
    let signature = body["checkpoint"]["signature"].as_str().unwrap().len();
    let cases = [
        ("event action", action),
        ("event details", details),
        ("event hash", altered(&body, "/event_hash", 10)),
        ("link path", altered(&body, "/link/audit_path/1", 5)),
        ("link", altered(&body, "/link/link", 0)),
        ("link root", altered(&body, "/link/merkle_root", 63)),
        ("previous link", altered(&body, "/link/prev_link", 7)),
        ("tree path", altered(&body, "/tree/audit_path/0", 20)),
        (
            "signature",
            altered(&body, "/checkpoint/signature", signature / 2),
        ),
        ("payload", altered(&body, "/checkpoint/payload", 3)),
    ];
    for (what, case) in cases {
        assert_ne!(case, body, "{what}");
        assert!(
            !rust_accepts_proof(&case, &public),
            "Rust accepts an altered {what}"
        );
        assert!(
            !reference("verify-proof", &case, &[&public_text]),
            "reference.py accepts an altered {what}"
        );
    }
    let mut moved = body.clone();
    moved["link"]["leaf_index"] = json!(4);
    assert!(!rust_accepts_proof(&moved, &public));
    assert!(!reference("verify-proof", &moved, &[&public_text]));
}

/// Proofs against an older checkpoint, 409 for events newer than it, 404 for
/// what the caller cannot see, 400 for a garbled checkpoint; consistency
/// between the two checkpoints verifies in Rust and in the reference.
#[actix_web::test]
async fn proofs_against_older_checkpoints_and_consistency_between_them() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    let other = app.create_key("org-b", "org:admin").await;
    let (public_text, public) = public_key(&app).await;
    let old_ids = ingest_batches(&app, &key, &[2, 3, 1]).await;
    let (first, first_stored) = sign_checkpoint(&app, &key).await;
    let new_ids = ingest_batches(&app, &key, &[4, 1, 1, 2, 6]).await;
    let (second, _) = sign_checkpoint(&app, &key).await;
    assert_eq!(second - first, 5);
    let other_ids = ingest_batches(&app, &other, &[2]).await;
    sign_checkpoint(&app, &other).await;

    let old = proof_of(&app, &key, old_ids[4], &first.to_string()).await;
    assert_eq!(old["tree"]["tree_size"], first);
    assert_eq!(old["checkpoint"], first_stored["checkpoint"]);
    assert!(rust_accepts_proof(&old, &public));
    assert!(reference("verify-proof", &old, &[&public_text]));
    let latest = proof_of(&app, &key, old_ids[4], "latest").await;
    assert_eq!(latest["tree"]["tree_size"], second);
    assert!(rust_accepts_proof(&latest, &public));

    let (status, body) = try_proof(&app, &key, new_ids[0], &first.to_string()).await;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let (status, body) = try_proof(&app, &key, other_ids[0], "latest").await;
    assert_eq!(status, 404, "{body}");
    let (status, body) = try_proof(&app, &other, old_ids[0], "latest").await;
    assert_eq!(status, 404, "{body}");
    let (status, _) = try_proof(&app, &key, i64::MAX, "latest").await;
    assert_eq!(status, 404);
    let missing = (first + 1).to_string();
    let (status, body) = try_proof(&app, &key, old_ids[0], &missing).await;
    assert_eq!(status, 404, "checkpoint {missing} does not exist: {body}");
    for garbage in ["0", "-1", "lates", "1.5", "99999999999999999999"] {
        let (status, body) = try_proof(&app, &key, old_ids[0], garbage).await;
        assert_eq!(status, 400, "{garbage}: {body}");
        assert_eq!(error_fields(&body), ["checkpoint"], "{garbage}");
    }

    // Consistency: from the first checkpoint to the second.
    let (status, body) = try_consistency(&app, &key, first, second).await;
    assert_eq!(status, 200, "{body}");
    let statement: Value =
        serde_json::from_str(first_stored["checkpoint"]["payload"].as_str().unwrap()).unwrap();
    assert_eq!(body["from"]["tree_root"], statement["tree_root"]);
    assert_eq!(body["from"]["tree_size"], first);
    assert_eq!(body["to"]["tree_root"], latest_root(&latest));
    assert!(rust_accepts_consistency(&body));
    assert!(reference("verify-consistency", &body, &[]));
    let broken = altered(&body, "/proof/0", 9);
    assert!(!rust_accepts_consistency(&broken));
    assert!(!reference("verify-consistency", &broken, &[]));
    // Any older size works, up to a checkpoint's.
    for from in 1..=second {
        let (status, body) = try_consistency(&app, &key, from, second).await;
        assert_eq!(status, 200, "{body}");
        assert!(rust_accepts_consistency(&body), "{from}: {body}");
    }

    let (status, body) = try_consistency(&app, &key, second, first).await;
    assert_eq!(status, 400);
    assert_eq!(error_fields(&body), ["from"]);
    let (status, body) = try_consistency(&app, &key, 0, first).await;
    assert_eq!(status, 400);
    assert_eq!(error_fields(&body), ["from"]);
    let (status, body) = try_consistency(&app, &key, 1, second - 1).await;
    assert_eq!(status, 404, "no checkpoint of size {}: {body}", second - 1);
    let (status, body) = try_consistency(&app, &other, 1, second).await;
    assert_eq!(
        status, 404,
        "org-b has no checkpoint of size {second}: {body}"
    );
}

/// The `tree_root` the proof's checkpoint signs.
fn latest_root(proof: &Value) -> Value {
    let statement: Value =
        serde_json::from_str(proof["checkpoint"]["payload"].as_str().unwrap()).unwrap();
    statement["tree_root"].clone()
}

/// An attacker who can write the database cuts the chain back (events,
/// links, tree, head and the later checkpoints) and grows it again, then has
/// a new checkpoint signed: the new tree is self-consistent, but a
/// consistency proof from a checkpoint kept from before fails.
#[actix_web::test]
async fn a_chain_cut_and_grown_again_fails_consistency_with_a_kept_checkpoint() {
    let app = spawn_app().await;
    let key = app.create_key("org-a", "org:admin").await;
    ingest_batches(&app, &key, &[3, 2, 4, 1, 2]).await;
    let (kept_seq, kept) = sign_checkpoint(&app, &key).await;
    assert!(kept_seq >= 5, "{kept_seq}");
    let kept_statement: Value =
        serde_json::from_str(kept["checkpoint"]["payload"].as_str().unwrap()).unwrap();

    let mut db = app.database().await;
    let attack = db.transaction().await.unwrap();
    attack
        .batch_execute(
            "SET LOCAL session_replication_role = replica;
             DELETE FROM audit_log WHERE organization_id = 'org-a' AND chain_link IN
               (SELECT link_id FROM audit_chain WHERE organization_id = 'org-a' AND seq > 3);
             DELETE FROM audit_chain WHERE organization_id = 'org-a' AND seq > 3;
             DELETE FROM audit_tree_node WHERE organization_id = 'org-a'
               AND (node_index + 1) << level > 3;
             DELETE FROM integrity_checkpoints WHERE organization_id = 'org-a';
             UPDATE audit_chain_head h SET seq = 3, link = c.link,
               event_total = (SELECT count(*) FROM audit_log WHERE organization_id = 'org-a')
             FROM audit_chain c WHERE c.organization_id = 'org-a' AND c.seq = 3
               AND h.organization_id = 'org-a';",
        )
        .await
        .unwrap();
    attack.commit().await.unwrap();
    ingest_batches(&app, &key, &[1, 1, 2, 1, 3, 1]).await;
    let (new_seq, _) = sign_checkpoint(&app, &key).await;
    assert_eq!(new_seq, 9);
    assert!(new_seq > kept_seq);

    let (status, body) = try_consistency(&app, &key, kept_seq, new_seq).await;
    assert_eq!(status, 200, "{body}");
    // The rewritten history agrees with itself...
    assert!(rust_accepts_consistency(&body));
    assert!(reference("verify-consistency", &body, &[]));
    // ...but not with the root kept from before.
    assert_ne!(body["from"]["tree_root"], kept_statement["tree_root"]);
    let mut against_kept = body.clone();
    against_kept["from"]["tree_root"] = kept_statement["tree_root"].clone();
    assert!(!rust_accepts_consistency(&against_kept));
    assert!(!reference("verify-consistency", &against_kept, &[]));
}

/// A checkpoint signed before format version 2 (no tree in its statement)
/// still verifies; a proof against it is refused with 409; the next
/// checkpoint builds the tree over the whole older chain, and proofs of its
/// oldest events verify.
#[actix_web::test]
async fn checkpoints_without_a_tree_still_verify_and_the_next_one_covers_the_chain() {
    let seed = [7u8; 32];
    let app = spawn_app_with(|config| {
        config.integrity.signing_key = Secret::new(STANDARD.encode(seed));
    })
    .await;
    let key = app.create_key("org-a", "org:admin").await;
    let (_, public) = public_key(&app).await;
    let ids = ingest_batches(&app, &key, &[2, 2, 3]).await;

    // A version 1 checkpoint, as the worker signed them before.
    let db = app.database().await;
    let head = db
        .query_one(
            "SELECT seq, link, event_total FROM audit_chain_head WHERE organization_id = 'org-a'",
            &[],
        )
        .await
        .unwrap();
    let statement = CheckpointStatement {
        organization_id: "org-a".to_owned(),
        seq: head.get("seq"),
        link: head.get("link"),
        event_total: head.get("event_total"),
        signed_at: "2026-01-01T00:00:00+00:00".to_owned(),
        key_id: audit_worker::integrity::keys::key_id(&public),
        tree_root: None,
        tree_size: None,
    };
    let payload = serde_jcs::to_string(&statement).unwrap();
    let signed = SignedCheckpoint {
        signature: STANDARD.encode(
            SigningKey::from_bytes(&seed)
                .sign(payload.as_bytes())
                .to_bytes(),
        ),
        payload,
    };
    assert!(!signed.payload.contains("tree"), "{}", signed.payload);
    db.execute(
        "INSERT INTO integrity_checkpoints \
           (organization_id, seq, link, event_total, signed_at, payload, signature, key_id) \
         VALUES ('org-a', $1, $2, $3, now(), $4, $5, $6)",
        &[
            &statement.seq,
            &statement.link,
            &statement.event_total,
            &signed.payload,
            &signed.signature,
            &statement.key_id,
        ],
    )
    .await
    .unwrap();
    let report = app.verify_with(&key, json!({"checkpoint": signed})).await;
    assert_eq!(report["valid"], true, "{report}");
    let (status, body) = try_proof(&app, &key, ids[0], "latest").await;
    assert_eq!(status, 409, "{body}");
    let (status, body) = try_consistency(&app, &key, 1, statement.seq).await;
    assert_eq!(status, 404, "{body}");

    ingest_batches(&app, &key, &[1]).await;
    let (seq, _) = sign_checkpoint(&app, &key).await;
    assert_eq!(seq, statement.seq + 1);
    for id in &ids {
        let body = proof_of(&app, &key, *id, "latest").await;
        assert!(rust_accepts_proof(&body, &public), "{body}");
    }
    let (status, body) = try_consistency(&app, &key, statement.seq, seq).await;
    assert_eq!(status, 200, "{body}");
    assert!(rust_accepts_consistency(&body));
}
