//! What the benchmarks share to hand out work and print figures (included with
//! `#[path]`, so each bench uses only part of it).
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Hands out request (or batch) numbers to concurrent clients until `total`
/// or the deadline.
pub struct Claims {
    next: AtomicU64,
    total: u64,
    deadline: Instant,
}

impl Claims {
    pub fn new(total: u64, deadline: Instant) -> Self {
        Self {
            next: AtomicU64::new(0),
            total,
            deadline,
        }
    }

    pub fn claim(&self) -> Option<u64> {
        if Instant::now() >= self.deadline {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (n < self.total).then_some(n)
    }
}

#[derive(Default)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Duration,
    pub p90: Duration,
    pub p99: Duration,
    pub max: Duration,
}

impl Percentiles {
    /// Nearest-rank percentiles.
    pub fn of(mut samples: Vec<Duration>) -> Self {
        samples.sort_unstable();
        let rank = |p: f64| {
            let index = ((p / 100.0) * samples.len() as f64).ceil() as usize;
            samples
                .get(index.saturating_sub(1))
                .copied()
                .unwrap_or_default()
        };
        Self {
            count: samples.len(),
            p50: rank(50.0),
            p90: rank(90.0),
            p99: rank(99.0),
            max: samples.last().copied().unwrap_or_default(),
        }
    }
}

/// A cheap deterministic scramble of `n` (splitmix64), one stream per `salt`.
pub fn mix(n: u64, salt: u64) -> u64 {
    let mut z = n
        .wrapping_add(salt.wrapping_mul(0x9E37_79B9_7F4A_7C15))
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// How a figure compares with the floor an issue sets.
pub fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// A whole number with thousands separators: `55,000`.
pub fn grouped(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// What the clients of one timed run did.
#[derive(Default)]
pub struct Tally {
    pub ok: u64,
    /// Failed requests by status (or error) and message.
    pub failures: BTreeMap<String, u64>,
    pub latencies: Vec<Duration>,
    pub elapsed: Duration,
}

impl Tally {
    pub fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (failure, count) in other.failures {
            *self.failures.entry(failure).or_default() += count;
        }
        self.latencies.extend(other.latencies);
    }

    pub fn record(&mut self, started: Instant, outcome: Result<(), String>) {
        match outcome {
            Ok(()) => {
                self.ok += 1;
                self.latencies.push(started.elapsed());
            }
            Err(failure) => *self.failures.entry(failure).or_default() += 1,
        }
    }

    pub fn print_failures(&self) {
        for (failure, count) in &self.failures {
            println!("  {count} x {failure}");
        }
    }
}

/// The whole machine's CPU time from `/proc/stat`: busy and all jiffies, so a
/// phase can say how many cores everything (worker, PostgreSQL, this process)
/// kept busy, and so whether it was bound by the CPU.
#[derive(Clone, Copy)]
pub struct MachineCpu {
    busy: u64,
    total: u64,
    /// CPU ticks of every `postgres` process (server and backends) so far.
    postgres: u64,
}

/// Cores kept busy over a span: by the whole machine, and by PostgreSQL.
#[derive(Debug, Clone, Copy, Default)]
pub struct Busy {
    pub machine: f64,
    pub postgres: f64,
}

impl MachineCpu {
    pub fn now() -> Self {
        let stat = std::fs::read_to_string("/proc/stat").expect("read /proc/stat");
        let jiffies: Vec<u64> = stat
            .lines()
            .next()
            .and_then(|line| line.strip_prefix("cpu "))
            .expect("a cpu line in /proc/stat")
            .split_whitespace()
            .map(|field| field.parse().expect("jiffies are numbers"))
            .collect();
        let total = jiffies.iter().sum();
        // idle and iowait are the 4th and 5th.
        let idle = jiffies[3] + jiffies.get(4).copied().unwrap_or(0);
        Self {
            busy: total - idle,
            total,
            postgres: postgres_ticks(),
        }
    }

    /// Cores kept busy since `self`. PostgreSQL's share misses backends that
    /// exited in between (the worker's connections are long-lived).
    pub fn busy_since(self) -> Busy {
        let now = Self::now();
        let elapsed = (now.total - self.total).max(1) as f64;
        let cores = Self::cores() as f64;
        Busy {
            machine: (now.busy - self.busy) as f64 / elapsed * cores,
            postgres: now.postgres.saturating_sub(self.postgres) as f64 / elapsed * cores,
        }
    }

    pub fn cores() -> usize {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    }
}

/// User and system ticks of every process named `postgres`.
fn postgres_ticks() -> u64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
        .filter_map(|stat| {
            let open = stat.find('(')?;
            let close = stat.rfind(')')?;
            (&stat[open + 1..close] == "postgres").then(|| {
                // After the command name: the state, ..., utime and stime (the 12th and 13th).
                stat[close + 1..]
                    .split_whitespace()
                    .skip(11)
                    .take(2)
                    .filter_map(|field| field.parse::<u64>().ok())
                    .sum::<u64>()
            })
        })
        .sum()
}
