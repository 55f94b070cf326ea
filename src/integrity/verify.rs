//! Verification: recomputes every event hash, the identifier commitments, each
//! link's Merkle root and the links themselves, and reports what no longer
//! matches — a modified, missing, inserted or reordered event, a broken link,
//! or (against a checkpoint kept outside) a truncated chain.
//!
//! It streams: the chain is read in order, then the events a window of
//! chain links at a time, each window checked on blocking threads while the
//! next is read, so memory stays bounded whatever the size of the chain.
//! Archived events of
//! the links in range are checked like live ones: their archives are opened
//! (their SHA-256 sums checked) into a temporary table read beside
//! `audit_log`. With an object store, a verification of the whole trail
//! also walks the organization's signed archive digests, which must name
//! exactly the archives listed.
//! What it reads, and how, is [`crate::db::verification`].

use std::collections::{HashMap, HashSet, VecDeque};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::join;
use futures_util::TryStreamExt;
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::task::JoinHandle;
use tokio_postgres::{GenericClient, IsolationLevel};
use utoipa::ToSchema;

use super::canonical;
use super::chain;
use super::checkpoint::{self, CheckpointError, CheckpointStatement, SignedCheckpoint};
use super::keys::{IntegrityKeys, PublicKeys};
use crate::alerts::system;
use crate::archive_store::{ArchiveError, ArchiveStore};
use crate::db::verification::{self, ChainEvent, ChainLink, Removal};
use crate::db::{archives, gdpr, DbError, PgPool};

/// At most this many problems are listed (all are counted).
const MAX_LISTED_PROBLEMS: usize = 1000;
/// Events (about) read and checked as one window of chain links. Bigger
/// windows cost memory; smaller ones a round trip and an execution of the
/// window's statement each (a fixed cost of about 1 ms measured).
const WINDOW_EVENTS: usize = 8192;
/// Windows being checked (on blocking threads) while the next is read; the
/// reading waits for the oldest past this, so at most this many windows and
/// one more are in memory.
const MAX_WINDOWS_IN_FLIGHT: usize = 2;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ProblemKind {
    Modified,
    Missing,
    Inserted,
    Reordered,
    Truncated,
    /// An archive's bytes no longer match their recorded SHA-256, or its
    /// file is missing (its events then also show as missing).
    CorruptedArchive,
    /// The signed archive digests in object storage are missing, unsigned or
    /// unlinked, or disagree with the archives listed.
    ArchiveDigest,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Problem {
    pub kind: ProblemKind,
    /// The event concerned, when one can be named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub event_id: Option<i64>,
    /// The chain link concerned.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<i64>,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Report {
    /// Events whose hash was recomputed.
    pub checked: u64,
    /// Events deleted by a recorded retention operation: their kept chain
    /// leaves stand in for them in their links.
    pub deleted_by_retention: u64,
    /// Events erased by a recorded GDPR erasure: their kept chain leaves
    /// stand in for them, as for retention.
    pub erased_by_gdpr: u64,
    /// Checked events whose identifier a recorded GDPR operation replaced by a
    /// pseudonym (counted in `checked` too).
    pub pseudonymized: u64,
    /// Chain links whose hash was recomputed (always the whole chain).
    pub links_checked: u64,
    pub valid: bool,
    /// Number of problems; `problems` lists the first 1000.
    pub problem_count: u64,
    pub problems: Vec<Problem>,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("the checkpoint is for organization `{0}`, not this one")]
    CheckpointOfAnotherOrganization(String),
    #[error(transparent)]
    Database(#[from] DbError),
}

impl From<tokio_postgres::Error> for VerifyError {
    fn from(error: tokio_postgres::Error) -> Self {
        VerifyError::Database(error.into())
    }
}

/// What to verify.
pub struct Scope<'a> {
    pub organization_id: &'a str,
    /// Events from this time (inclusive); `None` from the beginning.
    pub from: Option<DateTime<Utc>>,
    /// Events before this time; `None` to the end.
    pub to: Option<DateTime<Utc>>,
    pub checkpoint: Option<&'a SignedCheckpoint>,
    /// Counts the events checked so far, for whoever shows the progress.
    pub progress: Option<&'a AtomicU64>,
}

#[derive(Default)]
struct Findings {
    problems: Vec<Problem>,
    count: u64,
    /// Events whose identifiers a recorded GDPR operation replaced.
    pseudonymized: u64,
}

impl Findings {
    fn merge(&mut self, other: Findings) {
        self.count += other.count - other.problems.len() as u64;
        self.pseudonymized += other.pseudonymized;
        for problem in other.problems {
            self.add(problem.kind, problem.event_id, problem.seq, problem.message);
        }
    }

    fn add(&mut self, kind: ProblemKind, event_id: Option<i64>, seq: Option<i64>, message: String) {
        self.count += 1;
        if self.problems.len() < MAX_LISTED_PROBLEMS {
            self.problems.push(Problem {
                kind,
                event_id,
                seq,
                message,
            });
        }
    }
}

/// Verifies the events of `scope`'s range and the organization's whole chain,
/// all read from one snapshot.
pub async fn verify(
    pool: &PgPool,
    keys: &IntegrityKeys,
    store: &ArchiveStore,
    scope: &Scope<'_>,
) -> Result<Report, VerifyError> {
    let org = scope.organization_id;
    let mut client = pool.get().await?;
    // One snapshot for all reads; the temporary table of archived events
    // disappears with it.
    let client = client
        .build_transaction()
        .isolation_level(IsolationLevel::RepeatableRead)
        .start()
        .await?;
    // Every key that has signed here: a checkpoint or digest signed before a
    // rotation names its own.
    let public_keys = PublicKeys::load(&client).await?;
    let statement = attested(&public_keys, scope)?;
    let mut findings = Findings::default();

    // 1. The whole chain, in order.
    let walk = check_chain(&client, scope, &mut findings).await?;
    // Pseudonyms that recorded GDPR operations gave (read before the events
    // stream: the connection answers in order).
    let pseudonyms = Arc::new(recorded_pseudonyms(&client, org).await?);
    // 2. Archived events of the links in range, next to the live ones.
    let archived = load_archives(&client, store, org, &walk.in_range, &mut findings).await?;
    // The digests cover the whole trail; a range is checked by its archives' sums.
    if scope.from.is_none() && scope.to.is_none() {
        check_digests(&client, store, &public_keys, org, &mut findings).await?;
    }
    // 3. Their events, against their links.
    let checker = EventChecker::new(
        canonical::Committer::new(keys.commitment_key(), org),
        pseudonyms,
    );
    let counts = check_events(
        &client,
        scope,
        checker,
        walk.in_range,
        (walk.span, archived),
        &mut findings,
    )
    .await?;
    // 4. The end of the chain.
    check_tail(
        &client,
        org,
        walk.last.as_ref(),
        statement.as_ref(),
        &mut findings,
    )
    .await?;

    Ok(Report {
        checked: counts.checked,
        deleted_by_retention: counts.deleted_by_retention,
        erased_by_gdpr: counts.erased_by_gdpr,
        pseudonymized: findings.pseudonymized,
        links_checked: walk.links_checked,
        valid: findings.count == 0,
        problem_count: findings.count,
        problems: findings.problems,
    })
}

/// The statement of the checkpoint to verify against, its signature checked;
/// it must be this organization's.
fn attested(
    keys: &PublicKeys,
    scope: &Scope<'_>,
) -> Result<Option<CheckpointStatement>, VerifyError> {
    let Some(signed) = scope.checkpoint else {
        return Ok(None);
    };
    let statement = checkpoint::open_with_any(keys, signed)?;
    if statement.organization_id != scope.organization_id {
        return Err(VerifyError::CheckpointOfAnotherOrganization(
            statement.organization_id,
        ));
    }
    Ok(Some(statement))
}

/// A time span; `None` leaves that end open.
type Span = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// What walking the chain leaves for the steps after it.
struct ChainWalk {
    /// The links whose events the range touches, by link id.
    in_range: HashMap<i64, ChainLink>,
    /// The time span those links' events cover, widened to the range asked
    /// for (`None`: open at that end).
    span: Span,
    links_checked: u64,
    /// The last link: its seq and hash.
    last: Option<(i64, String)>,
}

impl ChainWalk {
    /// Keeps `link` if the range touches its events.
    fn keep_if_in_range(&mut self, link: ChainLink, scope: &Scope<'_>) {
        let touches = scope.from.is_none_or(|from| link.max_timestamp >= from)
            && scope.to.is_none_or(|to| link.min_timestamp < to);
        if touches {
            if scope.from.is_some() {
                self.span.0 = self.span.0.min(Some(link.min_timestamp));
            }
            if scope.to.is_some() {
                self.span.1 = self.span.1.max(Some(link.max_timestamp));
            }
            self.in_range.insert(link.link_id, link);
        }
    }
}

/// Every link's own hash and its pointer to the previous one, and no gap in
/// their sequence; keeps the links whose events the range touches.
async fn check_chain(
    client: &impl GenericClient,
    scope: &Scope<'_>,
    findings: &mut Findings,
) -> Result<ChainWalk, VerifyError> {
    let links = verification::chain_links(client, scope.organization_id).await?;
    let mut links = pin!(links);
    let mut walk = ChainWalk {
        in_range: HashMap::new(),
        span: (scope.from, scope.to),
        links_checked: 0,
        last: None,
    };
    let mut previous = chain::GENESIS;
    let mut expected_seq = 1i64;
    while let Some(link) = links.try_next().await? {
        walk.links_checked += 1;
        if link.seq != expected_seq {
            findings.add(
                ProblemKind::Missing,
                None,
                Some(expected_seq),
                format!("chain links {expected_seq} to {} are missing", link.seq - 1),
            );
        }
        check_link(&link, &previous, findings);
        previous = chain::parse_hash(&link.link).unwrap_or(chain::GENESIS);
        expected_seq = link.seq + 1;
        walk.last = Some((link.seq, link.link.clone()));
        walk.keep_if_in_range(link, scope);
    }
    Ok(walk)
}

fn check_link(link: &ChainLink, previous: &[u8; 32], findings: &mut Findings) {
    let seq = Some(link.seq);
    let parsed = (
        chain::parse_hash(&link.prev_link),
        chain::parse_hash(&link.merkle_root),
        chain::parse_hash(&link.link),
    );
    let (Some(prev), Some(root), Some(stored)) = parsed else {
        findings.add(
            ProblemKind::Modified,
            None,
            seq,
            "the chain link holds a malformed hash".to_owned(),
        );
        return;
    };
    if prev != *previous {
        findings.add(
            ProblemKind::Modified,
            None,
            seq,
            "the link does not point to the previous link".to_owned(),
        );
    }
    let count = u32::try_from(link.event_count).unwrap_or(0);
    if chain::link(&prev, link.seq, count, &root) != stored {
        findings.add(
            ProblemKind::Modified,
            None,
            seq,
            "the link's hash does not match its content".to_owned(),
        );
    }
}

/// What the events pass counts besides problems.
#[derive(Default)]
struct EventCounts {
    checked: u64,
    deleted_by_retention: u64,
    erased_by_gdpr: u64,
}

impl EventCounts {
    fn add(&mut self, other: &EventCounts) {
        self.checked += other.checked;
        self.deleted_by_retention += other.deleted_by_retention;
        self.erased_by_gdpr += other.erased_by_gdpr;
    }

    /// Every event of the links looked at, checked or removed.
    fn all(&self) -> u64 {
        self.checked + self.deleted_by_retention + self.erased_by_gdpr
    }
}

/// A window of the chain: the links of the range with ids in
/// `after < link_id <= upto`, whose events are read and checked together.
/// The windows cover every link id (the first starts at `i64::MIN`, the last
/// ends at `i64::MAX`), so an event claiming a link outside the range is
/// read too, and reported when it lies in the range.
struct Window {
    after: i64,
    upto: i64,
    links: HashMap<i64, ChainLink>,
}

/// Cuts the links of the range, in link order, into windows of about
/// `WINDOW_EVENTS` events.
fn windows(in_range: HashMap<i64, ChainLink>) -> Vec<Window> {
    let mut links: Vec<ChainLink> = in_range.into_values().collect();
    links.sort_by_key(|link| link.link_id);
    let mut windows = Vec::new();
    let mut current = Window {
        after: i64::MIN,
        upto: i64::MAX,
        links: HashMap::new(),
    };
    let mut events = 0;
    for link in links {
        if events >= WINDOW_EVENTS {
            let after = current.upto;
            windows.push(std::mem::replace(
                &mut current,
                Window {
                    after,
                    upto: i64::MAX,
                    links: HashMap::new(),
                },
            ));
            events = 0;
        }
        events += link.event_count.max(0) as usize;
        current.upto = link.link_id;
        current.links.insert(link.link_id, link);
    }
    current.upto = i64::MAX;
    windows.push(current);
    windows
}

/// What a window's check found.
struct WindowFindings {
    findings: Findings,
    counts: EventCounts,
}

/// The events pass: each window's events are read, then handed with the
/// window's links to a blocking thread, which sorts, groups and checks them
/// while the next window is read (hashing on other threads than the one
/// reading, on every core). Memory is bounded by the window, not the range.
async fn check_events(
    client: &impl GenericClient,
    scope: &Scope<'_>,
    checker: EventChecker,
    in_range: HashMap<i64, ChainLink>,
    (span, archived): (Span, bool),
    findings: &mut Findings,
) -> Result<EventCounts, VerifyError> {
    let statement = verification::prepare_events(client, archived).await?;
    let mut counts = EventCounts::default();
    let mut running: VecDeque<JoinHandle<WindowFindings>> = VecDeque::new();
    let bounds = (scope.from, scope.to);
    let read = |window: &Window| {
        verification::events_in_window(
            client,
            &statement,
            scope.organization_id,
            span,
            (window.after, window.upto),
        )
    };
    let mut windows = windows(in_range).into_iter().peekable();
    let mut reading = match windows.peek() {
        Some(first) => Some(read(first).await?),
        None => None,
    };
    while let Some(window) = windows.next() {
        let rows = reading.take().expect("the window's read was asked for");
        let events = match windows.peek() {
            // The next window is asked for now: PostgreSQL starts it as
            // soon as this one ends, without waiting for a round trip.
            Some(following) => {
                let (events, next) = join(rows.try_collect::<Vec<_>>(), read(following)).await;
                reading = Some(next?);
                events?
            }
            None => rows.try_collect().await?,
        };
        let mut checker = checker.clone();
        running.push_back(tokio::task::spawn_blocking(move || {
            check_window(window.links, events, bounds, &mut checker)
        }));
        if running.len() >= MAX_WINDOWS_IN_FLIGHT {
            let done = running.pop_front().expect("a running window");
            merge_window(done, findings, &mut counts).await;
            if let Some(progress) = scope.progress {
                progress.store(counts.all(), Ordering::Relaxed);
            }
        }
    }
    for done in running {
        merge_window(done, findings, &mut counts).await;
    }
    Ok(counts)
}

async fn merge_window(
    done: JoinHandle<WindowFindings>,
    findings: &mut Findings,
    counts: &mut EventCounts,
) {
    let window = done.await.expect("a window check does not panic");
    findings.merge(window.findings);
    counts.add(&window.counts);
}

/// Checks a window's events (on a blocking thread): sorted by link and id,
/// each link's group against its link, the events of links not in the range
/// as strays, and the window's links none of whose events came as emptied.
fn check_window(
    mut links: HashMap<i64, ChainLink>,
    mut events: Vec<ChainEvent>,
    bounds: Span,
    checker: &mut EventChecker,
) -> WindowFindings {
    let mut findings = Findings::default();
    let mut counts = EventCounts::default();
    // Nearly in order as read: the sort mostly confirms it.
    events.sort_by_cached_key(|event| (event.chain_link(), event.id()));
    for group in events.chunk_by(|a, b| a.chain_link() == b.chain_link()) {
        let mut removed = 0;
        for event in group {
            match event.removed_by() {
                Some(Removal::Retention) => counts.deleted_by_retention += 1,
                Some(Removal::GdprErasure) => counts.erased_by_gdpr += 1,
                None => continue,
            }
            removed += 1;
        }
        counts.checked += (group.len() - removed) as u64;
        match links.remove(&group[0].chain_link()) {
            Some(link) => check_members(&link, group, checker, &mut findings),
            None => report_strays(group, bounds, &mut findings),
        }
    }
    let mut emptied: Vec<ChainLink> = links.into_values().collect();
    emptied.sort_by_key(|link| link.seq);
    for link in emptied {
        check_members(&link, &[], checker, &mut findings);
    }
    WindowFindings { findings, counts }
}

/// Events of a link that is not among the links of the range: if they lie in
/// the range (`from` inclusive, `to` exclusive), no link row backs them.
fn report_strays(events: &[ChainEvent], (from, to): Span, findings: &mut Findings) {
    for event in events {
        let timestamp = event.timestamp();
        let in_scope =
            from.is_none_or(|from| timestamp >= from) && to.is_none_or(|to| timestamp < to);
        if in_scope {
            findings.add(
                ProblemKind::Inserted,
                Some(event.id()),
                None,
                "the event belongs to no chain link".to_owned(),
            );
        }
    }
}

/// Opens the organization's archives holding events of the links in range
/// into the temporary table `verify_archived`; whether there were any. A
/// corrupted or missing archive is reported and left out.
async fn load_archives(
    client: &impl GenericClient,
    store: &ArchiveStore,
    org: &str,
    in_range: &HashMap<i64, ChainLink>,
    findings: &mut Findings,
) -> Result<bool, VerifyError> {
    let (Some(first), Some(last)) = (in_range.keys().min(), in_range.keys().max()) else {
        return Ok(false);
    };
    let found = archives::covering_links(client, org, *first, *last).await?;
    if found.is_empty() {
        return Ok(false);
    }
    verification::create_archived_copy(client).await?;
    for archive in found {
        match store.read(client, &archive).await {
            Ok(events) => {
                let lines: Vec<String> = events.iter().map(|event| event.line()).collect();
                verification::copy_archived(client, &lines).await?;
            }
            Err(ArchiveError::Db(error)) => return Err(error.into()),
            Err(error) => {
                findings.add(ProblemKind::CorruptedArchive, None, None, error.to_string())
            }
        }
    }
    Ok(true)
}

/// Walks the organization's archive digests (with an object store) and
/// compares the archives they leave in place with those listed.
async fn check_digests(
    client: &impl GenericClient,
    store: &ArchiveStore,
    keys: &PublicKeys,
    org: &str,
    findings: &mut Findings,
) -> Result<(), VerifyError> {
    let walk = match store.walk_digests(client, org, keys).await {
        Ok(Some(walk)) => walk,
        Ok(None) => return Ok(()),
        Err(ArchiveError::Db(error)) => return Err(error.into()),
        Err(error) => {
            findings.add(
                ProblemKind::ArchiveDigest,
                None,
                None,
                format!("the archive digests cannot be read: {error}"),
            );
            return Ok(());
        }
    };
    let mut problems = walk.problems;
    let mut digested = walk.live;
    // Archives of another store are checked when read (and reported
    // unreachable then).
    for archive in archives::list(client, org).await? {
        if archive.store != walk.store {
            continue;
        }
        let recorded = archive.metadata["manifest_sha256"]
            .as_str()
            .unwrap_or_default();
        match digested.remove(&archive.id) {
            Some(digest) if digest.manifest_sha256 == recorded => {}
            Some(_) => problems.push(format!(
                "archive {} is listed with another manifest than its digest names",
                archive.id
            )),
            None => problems.push(format!("archive {} has no digest", archive.id)),
        }
    }
    for id in digested.keys() {
        problems.push(format!("archive {id} is in the digests but not listed"));
    }
    for problem in problems {
        findings.add(ProblemKind::ArchiveDigest, None, None, problem);
    }
    Ok(())
}

/// What checking events needs beside the events, and a buffer for their
/// canonical bytes reused from one event to the next.
#[derive(Clone)]
struct EventChecker {
    committer: canonical::Committer,
    pseudonyms: Arc<Pseudonyms>,
    canonical: Vec<u8>,
}

impl EventChecker {
    fn new(committer: canonical::Committer, pseudonyms: Arc<Pseudonyms>) -> Self {
        EventChecker {
            committer,
            pseudonyms,
            canonical: Vec::with_capacity(2048),
        }
    }

    /// The event's hash recomputed; `None` when its `details` are not JSON.
    fn recompute_hash(&mut self, event: &ChainEvent) -> Option<[u8; 32]> {
        self.canonical.clear();
        canonical::write_canonical_details_text(
            &event.hashed_fields(),
            event.details_text(),
            &mut self.canonical,
        )
        .ok()?;
        Some(Sha256::digest(&self.canonical).into())
    }
}

/// Compares one link with the events that claim it.
fn check_members(
    link: &ChainLink,
    members: &[ChainEvent],
    checker: &mut EventChecker,
    findings: &mut Findings,
) {
    let mut leaves = Vec::with_capacity(members.len());
    let mut modified = false;
    for event in members {
        let (leaf, intact) = check_member(link, event, checker, findings);
        modified |= !intact;
        leaves.push(leaf);
    }
    check_membership(link, members, &leaves, modified, findings);
}

/// Checks one event against its hash, its commitments and its link's ids;
/// returns its leaf and whether its content is intact. An event a recorded
/// operation removed has its kept leaf, and nothing else, to check.
fn check_member(
    link: &ChainLink,
    event: &ChainEvent,
    checker: &mut EventChecker,
    findings: &mut Findings,
) -> ([u8; 32], bool) {
    if event.removed_by().is_some() {
        return (chain::parse_hash(event.hash()).unwrap_or_default(), true);
    }
    let (id, seq) = (event.id(), Some(link.seq));
    let recomputed = checker.recompute_hash(event);
    let mut intact = true;
    if !recomputed.is_some_and(|hash| canonical::hex_equals(&hash, event.hash())) {
        intact = false;
        findings.add(
            ProblemKind::Modified,
            Some(id),
            seq,
            "the event's content no longer matches its hash".to_owned(),
        );
    } else {
        match identifiers(event, &checker.committer, &checker.pseudonyms) {
            Identifiers::Intact => {}
            Identifiers::Pseudonymized => findings.pseudonymized += 1,
            Identifiers::Changed(field) => {
                intact = false;
                findings.add(
                    ProblemKind::Modified,
                    Some(id),
                    seq,
                    format!("`{field}` no longer matches its commitment, and no recorded operation changed it"),
                );
            }
        }
    }
    if id < link.first_event_id || id > link.last_event_id {
        findings.add(
            ProblemKind::Inserted,
            Some(id),
            seq,
            format!(
                "the event's id lies outside its link ({} to {})",
                link.first_event_id, link.last_event_id
            ),
        );
    }
    (recomputed.unwrap_or_default(), intact)
}

/// The link's events as a whole: as many as it holds and, when each is
/// intact, in the order its Merkle root commits to.
fn check_membership(
    link: &ChainLink,
    members: &[ChainEvent],
    leaves: &[[u8; 32]],
    modified: bool,
    findings: &mut Findings,
) {
    let seq = Some(link.seq);
    let found = members.len() as i64;
    if found < link.event_count {
        findings.add(
            ProblemKind::Missing,
            None,
            seq,
            format!(
                "{} of the link's {} events are missing (ids {} to {})",
                link.event_count - found,
                link.event_count,
                link.first_event_id,
                link.last_event_id
            ),
        );
    } else if found > link.event_count {
        findings.add(
            ProblemKind::Inserted,
            None,
            seq,
            format!(
                "the link holds {} events but {found} claim it",
                link.event_count
            ),
        );
    } else if !modified && Some(chain::merkle_root(leaves)) != chain::parse_hash(&link.merkle_root)
    {
        // Every event is intact and the count is right: their order (ids) changed.
        findings.add(
            ProblemKind::Reordered,
            members.first().map(ChainEvent::id),
            seq,
            "the link's events are intact but no longer in their recorded order".to_owned(),
        );
    }
}

/// Per subject commitment, the pseudonyms recorded GDPR operations gave it.
type Pseudonyms = HashMap<String, HashSet<String>>;

async fn recorded_pseudonyms(
    client: &impl GenericClient,
    org: &str,
) -> Result<Pseudonyms, DbError> {
    let mut pseudonyms = Pseudonyms::new();
    for (commitment, pseudonym) in gdpr::recorded_pseudonyms(client, org).await? {
        pseudonyms.entry(commitment).or_default().insert(pseudonym);
    }
    Ok(pseudonyms)
}

/// Whether an event's identifiers are the ones its commitments bind.
enum Identifiers {
    Intact,
    /// At least one is a pseudonym a recorded operation gave that identity.
    Pseudonymized,
    /// This field is neither.
    Changed(&'static str),
}

fn identifiers(
    event: &ChainEvent,
    committer: &canonical::Committer,
    pseudonyms: &Pseudonyms,
) -> Identifiers {
    // Matches its commitment, or is the pseudonym a recorded operation gave it.
    let bound = |value: &str, commitment: &str| -> Option<bool> {
        if committer.matches(value, commitment) {
            Some(false)
        } else if pseudonyms
            .get(commitment)
            .is_some_and(|given| given.contains(value))
        {
            Some(true)
        } else {
            None
        }
    };
    let Some(principal_pseudonymized) = bound(event.principal_id(), event.principal_commitment())
    else {
        return Identifiers::Changed("principal_id");
    };
    let target_pseudonymized = match (
        event.target_resource_id(),
        event.target_resource_commitment(),
    ) {
        (None, None) => false,
        (Some(target), Some(commitment)) => match bound(target, commitment) {
            Some(pseudonymized) => pseudonymized,
            None => return Identifiers::Changed("target_resource_id"),
        },
        _ => return Identifiers::Changed("target_resource_id"),
    };
    if principal_pseudonymized || target_pseudonymized {
        Identifiers::Pseudonymized
    } else {
        Identifiers::Intact
    }
}

/// The tail: the chain head must agree with the last link, and a checkpoint
/// kept outside must still be reached by the chain.
async fn check_tail(
    client: &impl GenericClient,
    org: &str,
    last: Option<&(i64, String)>,
    statement: Option<&CheckpointStatement>,
    findings: &mut Findings,
) -> Result<(), VerifyError> {
    let head_seq = verification::head_seq(client, org).await?;
    let last_seq = last.map_or(0, |(seq, _)| *seq);
    if let Some(head_seq) = head_seq {
        if head_seq > last_seq {
            findings.add(
                ProblemKind::Truncated,
                None,
                Some(head_seq),
                format!("the chain head records {head_seq} links but the chain ends at {last_seq}"),
            );
        }
    }
    if let Some(statement) = statement {
        if last_seq < statement.seq {
            findings.add(
                ProblemKind::Truncated,
                None,
                Some(statement.seq),
                format!(
                    "the checkpoint signed at {} attests {} links, but the chain ends at {last_seq}",
                    statement.signed_at, statement.seq
                ),
            );
        } else {
            let link = verification::link_at(client, org, statement.seq).await?;
            if link.as_deref() != Some(statement.link.as_str()) {
                findings.add(
                    ProblemKind::Modified,
                    None,
                    Some(statement.seq),
                    "the chain no longer holds the link the checkpoint attests".to_owned(),
                );
            }
        }
    }
    Ok(())
}

/// Records a verification run in `audit_integrity_log`; a failed one also
/// raises a CRITICAL COMPLIANCE alert (one open alert per organization).
pub async fn record(
    client: &impl GenericClient,
    org: &str,
    report: &Report,
    scope: &Scope<'_>,
    verified_by: &str,
) -> Result<(), DbError> {
    let details = serde_json::json!({
        "checked": report.checked,
        "links_checked": report.links_checked,
        "problem_count": report.problem_count,
        "problems": report.problems.iter().take(100).collect::<Vec<_>>(),
        "from": scope.from,
        "to": scope.to,
        "checkpoint": scope.checkpoint.is_some(),
    });
    verification::record_run(client, org, report.valid, &details, verified_by).await?;
    if !report.valid {
        let summary = serde_json::json!({
            "problem_count": report.problem_count,
            "problems": report.problems.iter().take(10).collect::<Vec<_>>(),
            "from": scope.from,
            "to": scope.to,
            "verified_by": verified_by,
        });
        system::integrity_failed(client, org, report.problem_count as usize, summary).await?;
    }
    Ok(())
}
