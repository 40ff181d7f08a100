//! Exponential backoff with jitter for store calls that failed for now.

use std::time::Duration;

use rand::Rng;

/// Delays double from `initial` up to `max`; each is drawn from `[d/2, d]` ("equal jitter"),
/// so a fleet of consumers hit by the same outage does not retry in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
    max: Duration,
    attempts: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff { next: initial.max(Duration::from_millis(1)), max: max.max(initial), attempts: 0 }
    }

    /// The delay before the next attempt.
    pub fn next_delay(&mut self) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        self.attempts += 1;
        let half = base / 2;
        let jitter = rand::rng().random_range(0..=half.as_micros() as u64);
        half + Duration::from_micros(jitter)
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_max() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(1000));
        let expected_bases = [100u64, 200, 400, 800, 1000, 1000, 1000];
        for base in expected_bases {
            let d = b.next_delay().as_millis() as u64;
            assert!(d >= base / 2 && d <= base, "delay {d} outside [{}, {base}]", base / 2);
        }
        assert_eq!(b.attempts(), 7);
    }
}
