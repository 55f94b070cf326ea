//! When to try a failed delivery again, and whether to.

use std::time::Duration;

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

/// After 429s and timeouts the receiver is struggling: never retry sooner.
pub const MIN_WAIT_AFTER_OVERLOAD: Duration = Duration::from_secs(60);

/// The wait before retry number `retry` (1-based), ±20% jitter, at least
/// `at_least` (a Retry-After, or the overload minimum); `None` when the
/// schedule is exhausted.
pub fn next_wait(
    schedule: &[Duration],
    retry: usize,
    at_least: Option<Duration>,
) -> Option<Duration> {
    let base = *schedule.get(retry.checked_sub(1)?)?;
    let jitter = rand::rng().random_range(0.8..=1.2);
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
            let wait = next_wait(&schedule, 2, None).unwrap();
            assert!(wait >= Duration::from_secs(80) && wait <= Duration::from_secs(120));
        }
        assert!(
            next_wait(&schedule, 1, Some(Duration::from_secs(60))).unwrap()
                >= Duration::from_secs(60)
        );
        assert!(next_wait(&schedule, 3, None).is_none());
        assert!(next_wait(&schedule, 0, None).is_none());
    }
}
