//! Retry delays for transient failures: exponential with full jitter, capped (design D1).

use std::time::Duration;

/// The largest delay attempt `attempt` (1-based) may wait: `base · 2^(attempt−1)`, at most `cap`.
pub fn retry_ceiling(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let factor = 2u32.saturating_pow(attempt.saturating_sub(1).min(31));
    base.saturating_mul(factor).min(cap)
}

/// A delay drawn uniformly from `0..=ceiling` in whole seconds (SQS visibility is in seconds).
/// Full jitter spreads the retries of a burst of failures instead of bunching them.
pub fn retry_delay(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let ceiling = retry_ceiling(attempt, base, cap).as_secs();
    Duration::from_secs(rand::random_range(0..=ceiling))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_per_attempt_and_stops_at_the_cap() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(900);
        let ceilings: Vec<u64> = (1..=11)
            .map(|a| retry_ceiling(a, base, cap).as_secs())
            .collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
        assert_eq!(retry_ceiling(u32::MAX, base, cap), cap);
    }

    #[test]
    fn delays_stay_within_the_ceiling_and_vary() {
        let base = Duration::from_secs(2);
        let cap = Duration::from_secs(900);
        let delays: Vec<Duration> = (0..200).map(|_| retry_delay(6, base, cap)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(64)));
        let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
        assert!(distinct.len() > 10, "jitter spreads delays: {distinct:?}");
    }
}
