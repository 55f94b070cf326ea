//! GDPR requests over archived events. A subject's events do not stop being
//! theirs when they leave `audit_log`: exports include them, and
//! pseudonymization and erasure rewrite the archives that hold them (each
//! rewrite one transaction of the request's recorded operation, see
//! [`archive::rewrite`]), so nothing of the subject is left in clear in any
//! store. Only archives whose recorded commitments name the subject are
//! opened.

use uuid::Uuid;

use super::operations::Gdpr;
use super::GdprError;
use crate::archive_store::event::ArchivedEvent;
use crate::db::archives::{self, Archive};
use crate::db::gdpr::{self, Preserved};
use crate::maintenance::archive::{self, Rewrite};

/// What erasure did to the archived events.
#[derive(Debug, Default, Clone, Copy)]
pub struct ArchivedErasure {
    /// The subject's own archived events kept (preserved), under the pseudonym.
    pub preserved: u64,
    /// Archived events now under the pseudonym (kept own events, and other
    /// principals' events naming the subject).
    pub pseudonymized: u64,
}

impl Gdpr {
    async fn archives_of(
        &self,
        organization_id: &str,
        commitment: &str,
    ) -> Result<Vec<Archive>, GdprError> {
        let client = self.pool.get().await?;
        Ok(archives::holding_subject(&**client, organization_id, commitment).await?)
    }

    /// Puts the pseudonym in place of the subject in every archive naming
    /// them; how many archived events changed.
    pub(super) async fn pseudonymize_archived(
        &self,
        operation: Uuid,
        organization_id: &str,
        commitment: &str,
        pseudonym: &str,
    ) -> Result<u64, GdprError> {
        let mut changed = 0;
        for archive in self.archives_of(organization_id, commitment).await? {
            let mut events = self
                .archives
                .read(&**self.pool.get().await?, &archive)
                .await?;
            let count = pseudonymize_all(&mut events, commitment, pseudonym);
            if count > 0 {
                let rewrite = Rewrite {
                    operation,
                    events,
                    erased: Vec::new(),
                };
                archive::rewrite(&self.pool, &self.archives, &self.keys, &archive, rewrite).await?;
                changed += count;
            }
        }
        Ok(changed)
    }

    /// Erases the subject's own archived events that `preserved` does not
    /// keep (their chain leaves stay) and puts the pseudonym in place of the
    /// subject in every archived event left.
    pub(super) async fn erase_archived(
        &self,
        operation: Uuid,
        organization_id: &str,
        commitment: &str,
        pseudonym: &str,
        preserved: &Preserved<'_>,
    ) -> Result<ArchivedErasure, GdprError> {
        let mut done = ArchivedErasure::default();
        for archive in self.archives_of(organization_id, commitment).await? {
            let client = self.pool.get().await?;
            let events = self.archives.read(&**client, &archive).await?;
            let (own, others): (Vec<_>, Vec<_>) = events
                .into_iter()
                .partition(|event| event.principal_commitment == commitment);
            let kept = gdpr::preserved_among(
                &**client,
                &own.iter()
                    .map(|e| {
                        (
                            e.action.as_str(),
                            e.data_classification.as_str(),
                            e.timestamp,
                        )
                    })
                    .collect::<Vec<_>>(),
                preserved,
            )
            .await?;
            drop(client);
            let mut erased = Vec::new();
            let mut events = others;
            for (event, keep) in own.into_iter().zip(kept) {
                if keep {
                    done.preserved += 1;
                    events.push(event);
                } else {
                    erased.push(event.leaf());
                }
            }
            events.sort_by_key(|event| event.id);
            let count = pseudonymize_all(&mut events, commitment, pseudonym);
            done.pseudonymized += count;
            if count > 0 || !erased.is_empty() {
                let rewrite = Rewrite {
                    operation,
                    events,
                    erased,
                };
                archive::rewrite(&self.pool, &self.archives, &self.keys, &archive, rewrite).await?;
            }
        }
        Ok(done)
    }
}

/// Pseudonymizes the subject in `events`; how many changed.
fn pseudonymize_all(events: &mut [ArchivedEvent], commitment: &str, pseudonym: &str) -> u64 {
    events
        .iter_mut()
        .map(|event| u64::from(event.pseudonymize(commitment, pseudonym)))
        .sum()
}
