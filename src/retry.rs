//! Backoff: the one place that decides how long a loop waits before trying again.
//!
//! Every loop that retries or polls uses a [`Backoff`]: the consumer's receive loop, the delete
//! batcher, the visibility-retry delay of a failed message, the enqueue send retry, the Bedrock
//! call retry, the graph-cache lock wait, the database check and the start-up waits. A hand-rolled
//! module rather than a crate such as `backon`: most of these loops are not "call a closure until
//! it succeeds" (the visibility delay is handed to SQS, the enqueue retry resends only the
//! refused entries, the poll loop runs forever and resets on success), so what they share is the
//! delay schedule, which is a dozen lines.

use std::time::Duration;

/// An exponential schedule: step `n` (1-based) may wait up to `base · 2^(n−1)`, at most `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    base: Duration,
    cap: Duration,
    jitter: Jitter,
}

/// How a delay is drawn below its ceiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Jitter {
    /// Exactly the ceiling.
    None,
    /// Uniform in `0..=ceiling`, in milliseconds. Full jitter spreads the retries of a burst of
    /// failures instead of bunching them.
    Full,
    /// Uniform in `0..=ceiling`, in whole seconds (SQS visibility is in seconds).
    FullSeconds,
}

impl Backoff {
    /// Doubling from `base` up to `cap`, no jitter.
    pub const fn exponential(base: Duration, cap: Duration) -> Self {
        Self {
            base,
            cap,
            jitter: Jitter::None,
        }
    }

    /// The same delay every time.
    pub const fn fixed(every: Duration) -> Self {
        Self::exponential(every, every)
    }

    /// Draws each delay uniformly from `0..=ceiling` (milliseconds).
    pub const fn full_jitter(self) -> Self {
        Self {
            jitter: Jitter::Full,
            ..self
        }
    }

    /// Draws each delay uniformly from `0..=ceiling` in whole seconds.
    pub const fn full_jitter_seconds(self) -> Self {
        Self {
            jitter: Jitter::FullSeconds,
            ..self
        }
    }

    /// The largest delay of step `step` (1-based): `base · 2^(step−1)`, at most `cap`.
    pub fn ceiling(&self, step: u32) -> Duration {
        let factor = 2u32.saturating_pow(step.saturating_sub(1).min(31));
        self.base.saturating_mul(factor).min(self.cap)
    }

    /// The delay of step `step` (1-based), jittered as configured.
    pub fn delay(&self, step: u32) -> Duration {
        let ceiling = self.ceiling(step);
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => {
                let millis = u64::try_from(ceiling.as_millis()).unwrap_or(u64::MAX);
                Duration::from_millis(rand::random_range(0..=millis))
            }
            Jitter::FullSeconds => Duration::from_secs(rand::random_range(0..=ceiling.as_secs())),
        }
    }

    /// A counter over this schedule for loops that keep their own state.
    pub fn steps(self) -> Steps {
        Steps {
            backoff: self,
            step: 0,
        }
    }

    /// Runs `op` up to `attempts` times, sleeping between tries while `retryable` says the error
    /// is worth another; returns the first success or the last error.
    pub async fn retry<T, E, F, Fut>(
        &self,
        attempts: u32,
        mut op: F,
        retryable: impl Fn(&E) -> bool,
    ) -> Result<T, E>
    where
        F: FnMut(u32) -> Fut,
        Fut: std::future::Future<Output = Result<T, E>>,
    {
        let mut attempt = 1;
        loop {
            match op(attempt).await {
                Err(err) if attempt < attempts && retryable(&err) => {
                    tokio::time::sleep(self.delay(attempt)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }
}

/// Consecutive steps of a [`Backoff`]; [`Steps::reset`] after a success.
#[derive(Debug, Clone)]
pub struct Steps {
    backoff: Backoff,
    step: u32,
}

impl Steps {
    /// Counts one more failure and returns the delay to wait before the next try.
    pub fn next_delay(&mut self) -> Duration {
        self.step = self.step.saturating_add(1);
        self.backoff.delay(self.step)
    }

    /// Failures counted since the last reset.
    pub fn count(&self) -> u32 {
        self.step
    }

    /// Starts again from the first step.
    pub fn reset(&mut self) {
        self.step = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceiling_doubles_per_step_and_stops_at_the_cap() {
        let b = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(900));
        let ceilings: Vec<u64> = (1..=11).map(|a| b.ceiling(a).as_secs()).collect();
        assert_eq!(ceilings, [2, 4, 8, 16, 32, 64, 128, 256, 512, 900, 900]);
        assert_eq!(b.ceiling(u32::MAX), Duration::from_secs(900));
        assert_eq!(b.ceiling(0), Duration::from_secs(2));
    }

    #[test]
    fn unjittered_steps_double_reset_and_cap() {
        let mut s =
            Backoff::exponential(Duration::from_millis(250), Duration::from_secs(10)).steps();
        let first: Vec<u128> = (0..4).map(|_| s.next_delay().as_millis()).collect();
        assert_eq!(first, [250, 500, 1000, 2000]);
        assert_eq!(s.count(), 4);
        for _ in 0..40 {
            s.next_delay();
        }
        assert_eq!(s.next_delay(), Duration::from_secs(10));
        s.reset();
        assert_eq!(s.next_delay(), Duration::from_millis(250));
    }

    #[test]
    fn fixed_never_grows() {
        let b = Backoff::fixed(Duration::from_secs(10));
        assert!((1..50).all(|n| b.delay(n) == Duration::from_secs(10)));
    }

    #[test]
    fn jittered_delays_stay_within_the_ceiling_and_vary() {
        for b in [
            Backoff::exponential(Duration::from_secs(2), Duration::from_secs(900)).full_jitter(),
            Backoff::exponential(Duration::from_secs(2), Duration::from_secs(900))
                .full_jitter_seconds(),
        ] {
            let delays: Vec<Duration> = (0..200).map(|_| b.delay(6)).collect();
            assert!(delays.iter().all(|d| *d <= Duration::from_secs(64)));
            let distinct: std::collections::BTreeSet<_> = delays.iter().collect();
            assert!(distinct.len() > 10, "jitter spreads delays: {distinct:?}");
        }
        let whole = Backoff::exponential(Duration::from_secs(2), Duration::from_secs(900))
            .full_jitter_seconds();
        assert!((0..100).all(|_| whole.delay(5).subsec_nanos() == 0));
    }

    #[tokio::test]
    async fn retry_stops_at_success_at_the_limit_or_on_a_final_error() {
        let b = Backoff::exponential(Duration::from_millis(1), Duration::from_millis(4));
        let mut calls = 0;
        let r: Result<u32, &str> = b
            .retry(
                5,
                |n| {
                    calls += 1;
                    async move { if n < 3 { Err("again") } else { Ok(n) } }
                },
                |_| true,
            )
            .await;
        assert_eq!((r, calls), (Ok(3), 3));

        let mut calls = 0;
        let r: Result<(), &str> = b
            .retry(
                3,
                |_| {
                    calls += 1;
                    async { Err("again") }
                },
                |_| true,
            )
            .await;
        assert_eq!((r, calls), (Err("again"), 3));

        let mut calls = 0;
        let r: Result<(), &str> = b
            .retry(
                3,
                |_| {
                    calls += 1;
                    async { Err("final") }
                },
                |e| *e != "final",
            )
            .await;
        assert_eq!((r, calls), (Err("final"), 1));
    }
}
