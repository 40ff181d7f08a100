//! Per-token rate limits: a token bucket per long-lived token (its `jid`, so a refresh token
//! and every access token issued from it share one budget), in this gateway's memory.
//!
//! `gateway.rate_limit_per_second` tokens refill each second up to `gateway.rate_limit_burst`;
//! a request finding the bucket empty is refused with 429 and `Retry-After` (the seconds until
//! a token is back) before its body is read. With N gateway replicas a token's budget is at
//! most N times the setting. 0 turns the limit off.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use uuid::Uuid;

struct Bucket {
    tokens: f64,
    at: Instant,
}

pub struct RateLimiter {
    per_second: f64,
    burst: f64,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

/// Buckets kept before idle ones (full again) are swept.
const SWEEP_ABOVE: usize = 100_000;

impl RateLimiter {
    pub fn new(per_second: u32, burst: u32) -> RateLimiter {
        RateLimiter { per_second: f64::from(per_second), burst: f64::from(burst.max(1)), buckets: Mutex::new(HashMap::new()) }
    }

    /// Take one token for `key` at `now`; `Err(wait)` when there is none.
    pub fn check(&self, key: Uuid, now: Instant) -> Result<(), Duration> {
        if self.per_second <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock().expect("rate limiter lock");
        if buckets.len() > SWEEP_ABOVE {
            let full_after = Duration::from_secs_f64(self.burst / self.per_second);
            buckets.retain(|_, b| now.duration_since(b.at) < full_after);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: self.burst, at: now });
        let refill = now.saturating_duration_since(bucket.at).as_secs_f64() * self.per_second;
        bucket.tokens = (bucket.tokens + refill).min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / self.per_second))
        }
    }
}

/// Refuse the request with 429 when `principal`'s token has no budget left.
pub fn enforce(limiter: &RateLimiter, principal: &buildstats_core::auth::Principal) -> Result<(), crate::http::ApiError> {
    limiter.check(principal.refresh_jid, Instant::now()).map_err(|wait| {
        metrics::counter!("gateway_rate_limited_total").increment(1);
        crate::http::ApiError::TooManyRequests { retry_after_seconds: wait.as_secs_f64().ceil().max(1.0) as u64 }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_gets_its_burst_then_its_rate_and_others_are_not_affected() {
        let limiter = RateLimiter::new(2, 3);
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(limiter.check(a, t0).is_ok());
        }
        let wait = limiter.check(a, t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.5).abs() < 1e-9, "{wait:?}: one token every 0.5 s");
        assert!(limiter.check(b, t0).is_ok(), "another token has its own bucket");
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_ok(), "refilled after 0.5 s");
        assert!(limiter.check(a, t0 + Duration::from_millis(500)).is_err());
        assert!(RateLimiter::new(0, 0).check(a, t0).is_ok(), "0 = no limit");
    }
}
