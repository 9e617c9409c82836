//! [`LocalLimiter`]: the same budget as `limiter.lua`, in process, over this replica's share of
//! every limit; used while Redis is unreachable or not configured. Its clock is tokio's; the
//! tests drive it with explicit times.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

use super::{Decision, Limits, Spent, adaptive};

/// In-process GCRA state; time is tokio's, so tests can pause it.
pub(super) struct LocalLimiter {
    origin: Instant,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Theoretical arrival times, milliseconds since `origin`.
    requests_tat: f64,
    tokens_tat: f64,
    leases: u64,
    /// The learnt rate of the whole cluster (adaptive); `None` until first used.
    rate: Option<f64>,
    /// When the rate last grew and was last cut, milliseconds since `origin`.
    updated: f64,
    cut: Option<f64>,
    /// Adaptive: when each attempt in the last [`adaptive::WINDOW_MS`] was sent, oldest first.
    sent: VecDeque<f64>,
}

impl LocalLimiter {
    pub(super) fn new() -> Self {
        Self {
            origin: Instant::now(),
            state: Mutex::default(),
        }
    }

    fn now(&self) -> f64 {
        self.origin.elapsed().as_secs_f64() * 1000.0
    }

    /// Admits one call costing `tokens` within `1/share` of `limits`, or says how long to wait.
    pub(super) fn acquire(&self, limits: &Limits, share: u64, tokens: u64) -> Decision {
        self.acquire_at(self.now(), limits, share, tokens)
    }

    /// [`LocalLimiter::acquire`] at `now` milliseconds since the limiter was made.
    fn acquire_at(&self, now: f64, limits: &Limits, share: u64, tokens: u64) -> Decision {
        let share = share.max(1) as f64;
        let mut s = self.state.lock().expect("budget lock");
        let rate = s.cluster_rate(limits, now).map(|r| r / share);
        let previous = s.requests_tat;
        let requests_tat = s.requests_tat.max(now);
        let tokens_tat = s.tokens_tat.max(now);
        let mut wait: f64 = 0.0;
        if rate.is_some() {
            wait = wait.max(requests_tat - now);
        }
        let tpm = limits.tpm() / share;
        if tpm > 0.0 {
            wait = wait.max(tokens_tat - now);
        }
        let leases = limits.local_leases(share as u64);
        if leases > 0 && s.leases >= leases {
            wait = wait.max(super::LEASE_POLL.as_secs_f64() * 1000.0);
        }
        if limits.adaptive {
            let mut capped = false;
            if let Some(r) = rate {
                // At most `r` attempts in any window, as in limiter.lua.
                if let Some(oldest) = s.sent_in_window(now)
                    && s.sent.len() as f64 >= r
                {
                    wait = wait.max(oldest + adaptive::WINDOW_MS - now);
                    capped = true;
                }
                if capped || previous > now - 60_000.0 / r {
                    s.grow(limits, now);
                }
            }
            s.updated = now;
        }
        if wait > 0.0 {
            return Decision::wait(wait, rate);
        }
        if let Some(r) = rate {
            s.requests_tat = requests_tat + 60_000.0 / r;
        }
        if tpm > 0.0 {
            s.tokens_tat = tokens_tat + tokens as f64 * 60_000.0 / tpm;
        }
        if leases > 0 {
            s.leases += 1;
        }
        if limits.adaptive {
            s.sent.push_back(now);
        }
        Decision::granted(rate)
    }

    /// Accounts what a call admitted here (or on Redis, now unreachable) really spent.
    pub(super) fn settle(&self, limits: &Limits, share: u64, estimate: u64, spent: Spent) {
        self.settle_at(self.now(), limits, share, estimate, spent);
    }

    fn settle_at(&self, now: f64, limits: &Limits, share: u64, estimate: u64, spent: Spent) {
        let share = share.max(1) as f64;
        let mut s = self.state.lock().expect("budget lock");
        if limits.adaptive {
            // As in limiter.lua: the window keeps what Bedrock counted. Attempts are not told
            // apart here, so a throttled one takes the newest entry out.
            let throttled = spent.throttled.min(spent.requests);
            let kept = u32::from(throttled == 0 && spent.requests > 0);
            if kept == 0 {
                s.sent.pop_back();
            }
            for _ in 0..spent.requests - throttled - kept {
                s.sent.push_back(now);
            }
            if throttled > 0 && s.cut.is_none_or(|cut| now - cut >= adaptive::COOLDOWN_MS) {
                let rate = s.cluster_rate(limits, now).unwrap_or(adaptive::START_RPM);
                // This replica sent its share: the cluster's count is `share` times it.
                let accepted = s.sent.iter().filter(|&&t| t > now - 60_000.0).count() as f64;
                let cut = (accepted * share * adaptive::KEEP).max(rate * adaptive::MAX_CUT);
                s.rate = Some(cut.min(rate).max(1.0));
                s.cut = Some(now);
                s.updated = now;
            }
        }
        if let Some(rate) = s.cluster_rate(limits, now).map(|r| r / share)
            && spent.requests > 1
        {
            s.requests_tat =
                s.requests_tat.max(now) + f64::from(spent.requests - 1) * 60_000.0 / rate;
        }
        let tpm = limits.tpm() / share;
        if tpm > 0.0 {
            let delta = spent.tokens as f64 - estimate as f64;
            s.tokens_tat = (s.tokens_tat + delta * 60_000.0 / tpm).max(now);
        }
    }

    /// A local lease ends.
    pub(super) fn release(&self) {
        let mut s = self.state.lock().expect("budget lock");
        s.leases = s.leases.saturating_sub(1);
    }

    /// Starts the adaptive rate from what the cluster had learnt when Redis was last reachable.
    pub(super) fn follow(&self, cluster_rate: f64) {
        let now = self.now();
        let mut s = self.state.lock().expect("budget lock");
        s.rate = Some(cluster_rate);
        s.updated = now;
    }
}

impl State {
    /// The rate the whole cluster may call at: the learnt one (adaptive, capped by the
    /// configured rpm) or the configured one; `None` = unlimited.
    fn cluster_rate(&mut self, limits: &Limits, now: f64) -> Option<f64> {
        let rpm = limits.rpm();
        if limits.adaptive {
            let rate = *self.rate.get_or_insert(limits.start_rpm());
            if self.updated == 0.0 {
                self.updated = now;
            }
            Some(if rpm > 0.0 { rate.min(rpm) } else { rate })
        } else {
            (rpm > 0.0).then_some(rpm)
        }
    }

    /// Drops attempts older than the window; the oldest left, if any.
    fn sent_in_window(&mut self, now: f64) -> Option<f64> {
        while self
            .sent
            .front()
            .is_some_and(|&t| t <= now - adaptive::WINDOW_MS)
        {
            self.sent.pop_front();
        }
        self.sent.front().copied()
    }

    /// Grows the learnt rate for the time since it was last updated: fast until the first
    /// throttle, slowly after.
    fn grow(&mut self, limits: &Limits, now: f64) {
        let per_second = if self.cut.is_some() {
            adaptive::SETTLED_GROWTH_PER_SECOND
        } else {
            adaptive::GROWTH_PER_SECOND
        };
        if let Some(rate) = self.rate.as_mut() {
            *rate *= 1.0 + per_second * (now - self.updated) / 1000.0;
            if limits.requests_per_minute > 0 {
                *rate = rate.min(limits.rpm());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::ADMITTED;
    use super::*;

    fn limits(configure: impl FnOnce(&mut Limits)) -> Limits {
        let mut l = Limits {
            requests_per_minute: 0,
            tokens_per_minute: 0,
            max_concurrent_calls: 0,
            lease_ttl: Duration::from_secs(30),
            adaptive: false,
        };
        configure(&mut l);
        l
    }

    #[test]
    fn a_replica_alone_admits_its_share_of_the_rate() {
        let l = limits(|l| l.requests_per_minute = 120);
        let local = LocalLimiter::new();
        // Two replicas: 58.8 calls/min each (60 less the 2 % headroom).
        let share = 120.0 * ADMITTED / 2.0;
        let interval = 60_000.0 / share;
        assert!(local.acquire_at(0.0, &l, 2, 0).granted);
        let d = local.acquire_at(0.0, &l, 2, 0);
        assert_eq!(
            (d.granted, d.wait_ms, d.rate),
            (false, interval, Some(share))
        );
        assert!(!local.acquire_at(interval - 1.0, &l, 2, 0).granted);
        assert!(local.acquire_at(interval, &l, 2, 0).granted);
        // Alone, the replica takes the whole rate.
        let d = local.acquire_at(interval, &l, 1, 0);
        assert_eq!(d.rate, Some(share * 2.0));
    }

    #[test]
    fn retried_attempts_use_up_the_next_slots() {
        let l = limits(|l| l.requests_per_minute = 60);
        let local = LocalLimiter::new();
        assert!(local.acquire_at(0.0, &l, 1, 0).granted);
        let spent = Spent {
            requests: 3,
            ..Spent::default()
        };
        local.settle_at(0.0, &l, 1, 0, spent);
        let interval = 60_000.0 / (60.0 * ADMITTED);
        assert_eq!(local.acquire_at(0.0, &l, 1, 0).wait_ms, 3.0 * interval);
    }

    #[test]
    fn settling_corrects_the_token_reservation() {
        // 60,000 tokens/min: a token is a millisecond (plus the headroom).
        let l = limits(|l| l.tokens_per_minute = 60_000);
        let per_token = 1.0 / ADMITTED;
        let local = LocalLimiter::new();
        assert!(local.acquire_at(0.0, &l, 1, 5_000).granted);
        assert_eq!(local.acquire_at(0.0, &l, 1, 10).wait_ms, 5000.0 * per_token);
        let spent = Spent {
            requests: 1,
            tokens: 200,
            throttled: 0,
        };
        local.settle_at(0.0, &l, 1, 5_000, spent);
        let wait = local.acquire_at(0.0, &l, 1, 10).wait_ms;
        assert!((wait - 200.0 * per_token).abs() < 1e-6, "{wait}");
    }

    #[test]
    fn leases_are_shared_out_and_released() {
        let l = limits(|l| l.max_concurrent_calls = 4);
        let local = LocalLimiter::new();
        assert!(local.acquire_at(0.0, &l, 2, 0).granted);
        assert!(local.acquire_at(0.0, &l, 2, 0).granted);
        assert!(
            !local.acquire_at(0.0, &l, 2, 0).granted,
            "two leases of four each"
        );
        local.release();
        assert!(local.acquire_at(0.0, &l, 2, 0).granted);
        // More replicas than leases: each still gets one.
        assert_eq!(l.local_leases(10), 1);
    }

    const SENT: Spent = Spent {
        requests: 1,
        tokens: 0,
        throttled: 0,
    };
    const THROTTLED: Spent = Spent {
        requests: 1,
        tokens: 0,
        throttled: 1,
    };

    #[test]
    fn a_throttle_sets_the_adaptive_rate_to_what_bedrock_accepted_in_the_last_minute() {
        let l = limits(|l| {
            l.adaptive = true;
            l.requests_per_minute = 60;
        });
        let local = LocalLimiter::new();
        // 40 calls 1.5 s apart, then one more that is throttled.
        for i in 0..40 {
            let now = f64::from(i) * 1500.0;
            assert!(local.acquire_at(now, &l, 1, 0).granted, "call {i}");
            local.settle_at(now, &l, 1, 0, SENT);
        }
        assert!(local.acquire_at(60_000.0, &l, 1, 0).granted);
        local.settle_at(60_000.0, &l, 1, 0, THROTTLED);
        // Accepted within the last minute: the 39 after t = 0; the throttled one is not counted.
        let cut = 39.0 * adaptive::KEEP;
        let rate = local.acquire_at(60_001.0, &l, 1, 0).rate.unwrap();
        assert!((rate / cut - 1.0).abs() < 1e-4, "{rate} against {cut}");

        // A second throttle within the cooldown (a call already on its way) does not cut again.
        local.settle_at(61_000.0, &l, 1, 0, THROTTLED);
        let rate = local.acquire_at(61_001.0, &l, 1, 0).rate.unwrap();
        assert!((rate / cut - 1.0).abs() < 1e-4, "{rate} against {cut}");

        // One throttle at most halves the rate, however few calls were accepted.
        let few = LocalLimiter::new();
        assert!(few.acquire_at(0.0, &l, 1, 0).granted);
        few.settle_at(0.0, &l, 1, 0, THROTTLED);
        let rate = few.acquire_at(1.0, &l, 1, 0).rate.unwrap();
        assert_eq!(rate, 60.0 * ADMITTED * adaptive::MAX_CUT);
    }

    #[test]
    fn at_most_the_adaptive_rate_is_sent_in_any_window() {
        // 58.8 calls/min: paced at 1,020 ms, 60 calls would fit in 61 s; the window admits 59.
        let l = limits(|l| {
            l.adaptive = true;
            l.requests_per_minute = 60;
        });
        let local = LocalLimiter::new();
        let (mut now, mut granted) = (0.0, Vec::new());
        while granted.len() < 200 {
            let d = local.acquire_at(now, &l, 1, 0);
            if d.granted {
                granted.push(now);
            }
            now += d.wait_ms.max(1.0);
        }
        let per_window = (60.0 * ADMITTED).ceil() as usize;
        for w in granted.windows(per_window + 1) {
            // (Less a rounding error of the summed waits.)
            assert!(
                w[per_window] - w[0] >= adaptive::WINDOW_MS - 1e-6,
                "{} calls within {} ms",
                per_window + 1,
                w[per_window] - w[0]
            );
        }
    }

    #[test]
    fn waiting_grows_the_rate_fast_until_the_first_throttle_and_slowly_after() {
        let l = limits(|l| l.adaptive = true);
        let local = LocalLimiter::new();
        // Calls held back by the rate for a minute, accepted: about 1 % a second.
        let held_for_a_minute = |from: f64| {
            let (mut now, mut rate) = (from, 0.0);
            while now < from + 60_000.0 {
                let d = local.acquire_at(now, &l, 1, 0);
                if d.granted {
                    local.settle_at(now, &l, 1, 0, SENT);
                }
                rate = d.rate.unwrap();
                now += d.wait_ms.max(1.0);
            }
            (now, rate)
        };
        let (now, rate) = held_for_a_minute(0.0);
        let start = adaptive::START_RPM;
        assert!(
            rate > start * 1.6 && rate < start * 1.9,
            "{rate} from {start}"
        );

        // After a throttle (of the last call sent): about 1 % a minute.
        local.settle_at(now, &l, 1, 0, THROTTLED);
        let cut = local.acquire_at(now, &l, 1, 0).rate.unwrap();
        let (now, rate) = held_for_a_minute(now);
        assert!(rate > cut * 1.005 && rate < cut * 1.02, "{rate} from {cut}");

        // Without waiting callers (demand below the rate) it stays.
        let idle = local.acquire_at(now + 600_000.0, &l, 1, 0).rate.unwrap();
        let later = local.acquire_at(now + 1_200_000.0, &l, 1, 0).rate.unwrap();
        assert_eq!(idle, later);
    }
}
