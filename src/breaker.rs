//! The circuit breaker of a dependency (a destination, or PostgreSQL for
//! ingest): closed → open after `failure_threshold` consecutive failures →
//! half-open after `reset_timeout`, letting one probe through → closed on its
//! success, open again on its failure. Hand-written: it is a few lines of
//! state owned by one actor, where a crate would bring its own clock and async
//! wrapper for no gain.

use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    Open {
        until: Instant,
    },
    /// The probe is out; nothing else goes until it answers.
    HalfOpen,
}

impl BreakerState {
    /// As `destination_health.circuit_breaker_state` spells it.
    pub fn name(&self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open { .. } => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }
}

#[derive(Debug)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    failure_threshold: u32,
    reset_timeout: Duration,
}

impl Breaker {
    pub fn new(failure_threshold: u32, reset_timeout: Duration) -> Self {
        Self {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            failure_threshold,
            reset_timeout,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// May an attempt start now? `Err(wait)` while open (or while the probe is out).
    pub fn admit(&mut self, now: Instant) -> Result<(), Duration> {
        match self.state {
            BreakerState::Closed => Ok(()),
            BreakerState::Open { until } if now >= until => {
                self.state = BreakerState::HalfOpen;
                Ok(())
            }
            BreakerState::Open { until } => Err(until - now),
            BreakerState::HalfOpen => Err(self.reset_timeout.min(Duration::from_secs(1))),
        }
    }

    /// How much longer it stays open from `now`; `None` unless open.
    pub fn open_for(&self, now: Instant) -> Option<Duration> {
        match self.state {
            BreakerState::Open { until } => until.checked_duration_since(now),
            _ => None,
        }
    }

    pub fn succeeded(&mut self) {
        self.consecutive_failures = 0;
        self.state = BreakerState::Closed;
    }

    /// Records a failure; true when this failure opened the breaker.
    pub fn failed(&mut self, now: Instant) -> bool {
        self.consecutive_failures += 1;
        let open = matches!(self.state, BreakerState::HalfOpen)
            || self.consecutive_failures >= self.failure_threshold;
        let was_open = matches!(self.state, BreakerState::Open { .. });
        if open {
            self.state = BreakerState::Open {
                until: now + self.reset_timeout,
            };
        }
        open && !was_open
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_probes_once_after_the_timeout() {
        let start = Instant::now();
        let mut breaker = Breaker::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            assert!(breaker.admit(start).is_ok());
            assert!(!breaker.failed(start));
        }
        assert!(breaker.failed(start), "the third failure opens it");
        assert_eq!(
            breaker.admit(start + Duration::from_secs(59)),
            Err(Duration::from_secs(1))
        );
        assert!(
            breaker.admit(start + Duration::from_secs(60)).is_ok(),
            "the probe"
        );
        assert!(
            breaker.admit(start + Duration::from_secs(60)).is_err(),
            "only one probe"
        );
        assert!(
            breaker.failed(start + Duration::from_secs(61)),
            "a failed probe reopens"
        );
        assert!(breaker.admit(start + Duration::from_secs(121)).is_ok());
        breaker.succeeded();
        assert_eq!(breaker.state(), BreakerState::Closed);
        assert!(breaker.admit(start + Duration::from_secs(121)).is_ok());
    }
}
