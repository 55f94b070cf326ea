//! When each API key was last used, written off the hot path.
//!
//! A request only notes its key's use in memory ([`KeyUses::note`]), and only
//! when this worker has not noted that key within [`MIN_WRITE_INTERVAL`]; the
//! `KeyUseActor` writes the noted uses every `auth.last_used_flush_interval`
//! ([`flush`]), one statement per organization. The statement itself skips
//! rows written within the interval, so several workers together also write a
//! key's row about once a minute. A failed write is logged and dropped: a
//! missing `last_used_at` update is not worth holding memory or requests for.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use dashmap::mapref::entry::Entry;
use dashmap::DashMap;

use crate::db::{api_keys, tenant, DbError, PgPool};

/// How often at most a key's `last_used_at` is written.
pub const MIN_WRITE_INTERVAL: Duration = Duration::from_secs(60);

/// The uses noted since the last flush, shared by the authenticator (which
/// notes) and the `KeyUseActor` (which writes).
#[derive(Default)]
pub struct KeyUses {
    /// Key id → when this worker last noted its use. Read on every request
    /// (a shard's read lock, no allocation while the note is recent); pruned
    /// at each flush, so it holds only the keys used within the interval.
    noted: DashMap<String, Instant>,
    /// Organization → the ids of its keys noted since the last flush.
    pending: Mutex<HashMap<String, Vec<String>>>,
}

impl KeyUses {
    /// Notes a use of the key `id` of `organization_id`, unless one was noted
    /// within [`MIN_WRITE_INTERVAL`].
    pub fn note(&self, id: &str, organization_id: &str) {
        let now = Instant::now();
        let recent = |at: &Instant| now.saturating_duration_since(*at) < MIN_WRITE_INTERVAL;
        if self.noted.get(id).is_some_and(|at| recent(&at)) {
            return;
        }
        // Checked again under the entry's lock: of two requests racing here,
        // one notes the use.
        match self.noted.entry(id.to_owned()) {
            Entry::Occupied(noted) if recent(noted.get()) => return,
            Entry::Occupied(mut noted) => {
                noted.insert(now);
            }
            Entry::Vacant(vacant) => {
                vacant.insert(now);
            }
        }
        self.pending
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .entry(organization_id.to_owned())
            .or_default()
            .push(id.to_owned());
    }

    /// Takes the uses noted so far, and forgets the notes old enough that the
    /// next use must be noted again.
    fn take(&self) -> HashMap<String, Vec<String>> {
        self.noted.retain(|_, at| at.elapsed() < MIN_WRITE_INTERVAL);
        std::mem::take(
            &mut *self
                .pending
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
        )
    }
}

/// Writes the noted uses: one statement per organization, in a transaction
/// scoped to it (row-level security applies to the runtime role). An
/// organization whose write fails is logged and dropped; the others are
/// still written. How many rows were written.
pub async fn flush(uses: &KeyUses, pool: &PgPool) -> u64 {
    let mut written = 0;
    for (organization_id, ids) in uses.take() {
        let at = Utc::now();
        let write = tenant::scoped(pool, &organization_id, async |tx| {
            api_keys::record_uses(tx, &organization_id, &ids, at, MIN_WRITE_INTERVAL).await
        });
        match write.await {
            Ok(rows) => written += rows,
            Err::<_, DbError>(error) => tracing::warn!(
                %error,
                organization_id,
                keys = ids.len(),
                "Could not write the last use of API keys; dropped"
            ),
        }
    }
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_noted_once_within_the_interval() {
        let uses = KeyUses::default();
        for _ in 0..3 {
            uses.note("k1", "org-a");
        }
        uses.note("k2", "org-a");
        uses.note("k3", "org-b");
        let taken = uses.take();
        assert_eq!(taken["org-a"], ["k1", "k2"]);
        assert_eq!(taken["org-b"], ["k3"]);
        uses.note("k1", "org-a");
        assert!(
            uses.take().is_empty(),
            "noted within the interval: not again"
        );
    }

    #[test]
    fn a_key_is_noted_again_once_its_note_is_old() {
        let uses = KeyUses::default();
        uses.note("k1", "org-a");
        uses.take();
        let long_ago = Instant::now()
            .checked_sub(MIN_WRITE_INTERVAL)
            .expect("the monotonic clock reaches a minute back");
        uses.noted.insert("k1".to_owned(), long_ago);
        uses.note("k1", "org-a");
        assert_eq!(uses.take()["org-a"], ["k1"]);
    }

    #[test]
    fn old_notes_are_pruned_at_a_flush() {
        let uses = KeyUses::default();
        uses.note("k1", "org-a");
        uses.note("k2", "org-a");
        let long_ago = Instant::now().checked_sub(MIN_WRITE_INTERVAL).unwrap();
        uses.noted.insert("k1".to_owned(), long_ago);
        uses.take();
        assert!(!uses.noted.contains_key("k1"));
        assert!(uses.noted.contains_key("k2"));
    }
}
