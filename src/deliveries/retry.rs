//! What an attempt came to, and what that makes of its delivery: delivered,
//! tried again after a wait, or dead-lettered. [`decide`] is the whole rule,
//! a plain function of the outcome, the retries made and the destination's
//! schedule, so it is tested without a network or a database.

use std::ops::RangeInclusive;
use std::time::{Duration, Instant};

use rand::Rng;

/// What an attempt's outcome means for the next one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth retrying: 408, 429, 5xx, timeouts, connection errors.
    Retryable,
    /// Retrying cannot help: any other 4xx.
    Permanent,
}

/// Classifies an HTTP status.
pub fn verdict_for_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 429 => Verdict::Retryable,
        400..=499 => Verdict::Permanent,
        _ => Verdict::Retryable,
    }
}

/// What one SMTP, S3 or FTP attempt came to.
pub struct Sent {
    pub verdict: Verdict,
    /// The protocol's reply code, when there is one.
    pub code: Option<i32>,
    pub reason: Option<String>,
    /// Where the payload went (Message-ID, object and ETag, file path).
    pub reference: Option<String>,
}

impl Sent {
    /// An attempt that failed before the server gave a reply code.
    pub fn failed(verdict: Verdict, reason: String) -> Self {
        Self {
            verdict,
            code: None,
            reason: Some(reason),
            reference: None,
        }
    }
}

/// What one attempt came to, whatever the destination's kind.
#[derive(Debug)]
pub struct Outcome {
    pub verdict: Verdict,
    pub response_code: Option<i32>,
    pub latency_ms: i32,
    pub reason: Option<String>,
    pub reference: Option<String>,
    /// The receiver asked for (or showed it needs) a pause at least this long.
    pub wait_at_least: Option<Duration>,
}

impl Outcome {
    /// An attempt that failed for good before it reached the receiver.
    pub fn permanent(reason: &str) -> Self {
        Self {
            verdict: Verdict::Permanent,
            response_code: None,
            latency_ms: 0,
            reason: Some(reason.to_owned()),
            reference: None,
            wait_at_least: None,
        }
    }
}

/// Milliseconds since `started`, as `delivery_logs` keeps them.
pub fn latency_ms(started: Instant) -> i32 {
    started.elapsed().as_millis().min(i32::MAX as u128) as i32
}

/// After 429s and timeouts the receiver is struggling: never retry sooner.
pub const MIN_WAIT_AFTER_OVERLOAD: Duration = Duration::from_secs(60);

/// What an attempt makes of its delivery; stored as the delivery's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStatus {
    Delivered,
    /// Tried again once its wait has passed.
    Retrying,
    /// A dead letter: visible, and replayable through the API.
    Failed,
}

/// What becomes of a delivery after an attempt with `outcome`, and how long
/// it waits before its next one. A retryable outcome is retried while
/// retries are left (`retry_count` made so far, of `max_retries`) and the
/// destination's retry `schedule` has a wait for the next one (`None`: the
/// destination is deleted, nothing to retry against); anything else ends the
/// delivery. The scheduled wait is multiplied by `jitter` (see [`jitter`]), so
/// that deliveries that failed together do not all come back together, and is
/// never shorter than the outcome's `wait_at_least`.
pub fn decide(
    outcome: &Outcome,
    retry_count: i32,
    max_retries: i32,
    schedule: Option<&[Duration]>,
    jitter: f64,
) -> (AttemptStatus, Option<Duration>) {
    match outcome.verdict {
        Verdict::Delivered => (AttemptStatus::Delivered, None),
        Verdict::Retryable if (retry_count as usize) < max_retries as usize => {
            let next = retry_count as usize + 1;
            match schedule
                .and_then(|schedule| next_wait(schedule, next, outcome.wait_at_least, jitter))
            {
                Some(wait) => (AttemptStatus::Retrying, Some(wait)),
                // An exhausted schedule (shorter than max_retries) ends it too.
                None => (AttemptStatus::Failed, None),
            }
        }
        _ => (AttemptStatus::Failed, None),
    }
}

/// How far a scheduled wait may stray: ±20%.
const JITTER: RangeInclusive<f64> = 0.8..=1.2;

/// A random jitter factor for [`decide`].
pub fn jitter() -> f64 {
    rand::rng().random_range(JITTER)
}

/// The wait before retry number `retry` (1-based), multiplied by `jitter`, at
/// least `at_least` (a Retry-After, or the overload minimum); `None` when the
/// schedule is exhausted.
fn next_wait(
    schedule: &[Duration],
    retry: usize,
    at_least: Option<Duration>,
    jitter: f64,
) -> Option<Duration> {
    let base = *schedule.get(retry.checked_sub(1)?)?;
    let wait = base.mul_f64(jitter);
    Some(at_least.map_or(wait, |floor| wait.max(floor)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_are_classified() {
        assert_eq!(verdict_for_status(204), Verdict::Delivered);
        assert_eq!(verdict_for_status(408), Verdict::Retryable);
        assert_eq!(verdict_for_status(429), Verdict::Retryable);
        assert_eq!(verdict_for_status(503), Verdict::Retryable);
        assert_eq!(verdict_for_status(404), Verdict::Permanent);
        assert_eq!(verdict_for_status(301), Verdict::Retryable);
    }

    #[test]
    fn waits_follow_the_schedule_with_jitter_and_floors() {
        let schedule = [Duration::from_secs(10), Duration::from_secs(100)];
        for _ in 0..100 {
            let wait = next_wait(&schedule, 2, None, jitter()).unwrap();
            assert!(wait >= Duration::from_secs(80) && wait <= Duration::from_secs(120));
        }
        assert_eq!(
            next_wait(&schedule, 2, None, *JITTER.start()),
            Some(Duration::from_secs(80))
        );
        assert_eq!(
            next_wait(&schedule, 2, None, *JITTER.end()),
            Some(Duration::from_secs(120))
        );
        assert!(
            next_wait(&schedule, 1, Some(Duration::from_secs(60)), jitter()).unwrap()
                >= Duration::from_secs(60)
        );
        assert!(next_wait(&schedule, 3, None, jitter()).is_none());
        assert!(next_wait(&schedule, 0, None, jitter()).is_none());
    }

    const SCHEDULE: [Duration; 3] = [
        Duration::from_secs(5),
        Duration::from_secs(300),
        Duration::from_secs(1800),
    ];

    fn outcome(verdict: Verdict, wait_at_least: Option<Duration>) -> Outcome {
        Outcome {
            verdict,
            response_code: None,
            latency_ms: 12,
            reason: None,
            reference: None,
            wait_at_least,
        }
    }

    #[test]
    fn a_delivered_attempt_ends_the_delivery_with_no_wait() {
        let delivered = outcome(Verdict::Delivered, None);
        assert_eq!(
            decide(&delivered, 0, 3, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Delivered, None)
        );
        assert_eq!(
            decide(&delivered, 3, 3, None, 1.0),
            (AttemptStatus::Delivered, None),
            "delivered on its last retry, or as its destination was deleted"
        );
    }

    #[test]
    fn a_retryable_failure_with_retries_left_waits_its_scheduled_time() {
        let failed = outcome(Verdict::Retryable, None);
        assert_eq!(
            decide(&failed, 0, 3, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Retrying, Some(Duration::from_secs(5)))
        );
        assert_eq!(
            decide(&failed, 1, 3, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Retrying, Some(Duration::from_secs(300)))
        );
        assert_eq!(
            decide(&failed, 1, 3, Some(&SCHEDULE), 0.8),
            (AttemptStatus::Retrying, Some(Duration::from_secs(240))),
            "the jitter scales the scheduled wait"
        );
    }

    #[test]
    fn a_retry_after_or_overload_floor_lengthens_a_short_wait_only() {
        let overloaded = outcome(Verdict::Retryable, Some(MIN_WAIT_AFTER_OVERLOAD));
        assert_eq!(
            decide(&overloaded, 0, 3, Some(&SCHEDULE), 1.2),
            (AttemptStatus::Retrying, Some(MIN_WAIT_AFTER_OVERLOAD)),
            "6 s scheduled, 60 s at least"
        );
        assert_eq!(
            decide(&overloaded, 1, 3, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Retrying, Some(Duration::from_secs(300))),
            "a longer scheduled wait stands"
        );
    }

    #[test]
    fn a_retryable_failure_on_the_last_retry_is_dead_lettered() {
        let failed = outcome(Verdict::Retryable, None);
        assert_eq!(
            decide(&failed, 3, 3, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Failed, None)
        );
        assert_eq!(
            decide(&failed, 0, 0, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Failed, None),
            "no retries allowed"
        );
    }

    #[test]
    fn a_schedule_shorter_than_max_retries_ends_the_delivery_when_it_runs_out() {
        let failed = outcome(Verdict::Retryable, None);
        assert_eq!(
            decide(&failed, 2, 5, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Retrying, Some(Duration::from_secs(1800)))
        );
        assert_eq!(
            decide(&failed, 3, 5, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Failed, None)
        );
    }

    #[test]
    fn a_permanent_failure_is_dead_lettered_at_once() {
        let refused = outcome(Verdict::Permanent, Some(Duration::from_secs(30)));
        assert_eq!(
            decide(&refused, 0, 3, Some(&SCHEDULE), 1.0),
            (AttemptStatus::Failed, None)
        );
    }

    #[test]
    fn a_deleted_destination_fails_its_deliveries() {
        let deleted = Outcome::permanent("the destination was deleted");
        assert_eq!(
            decide(&deleted, 0, 3, None, 1.0),
            (AttemptStatus::Failed, None)
        );
        assert_eq!(
            decide(&outcome(Verdict::Retryable, None), 0, 3, None, 1.0),
            (AttemptStatus::Failed, None),
            "no schedule to retry on"
        );
    }
}
