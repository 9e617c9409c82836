//! [`RedisLimiter`]: the cluster-wide budget in Redis, every decision one call of
//! `limiter.lua` (atomic, on the Redis server's clock, so replicas' clocks do not matter).
//! Sent with `EVAL`: Redis caches the compiled script by its digest, and a restarted Redis
//! needs no reload step.

use std::time::Duration;

use deadpool_redis::Pool;
use deadpool_redis::redis;

use super::{BudgetError, Decision, Limits, Spent, adaptive};
use crate::config::{BudgetConfig, CacheConfig};

/// The budget's one script (docs/decisions.md, "Bedrock budget: GCRA in one Lua script").
const SCRIPT: &str = include_str!("limiter.lua");

/// Connections per process: one per call being admitted or settled at a time is plenty.
const POOL_SIZE: usize = 4;

pub(super) struct RedisLimiter {
    pool: Pool,
    timeout: Duration,
    keys: [String; 7],
}

/// What `acquire` answered.
pub(super) struct Answer {
    pub decision: Decision,
    /// Replicas that asked for the budget in the last minute.
    pub live_replicas: u64,
}

impl RedisLimiter {
    pub(super) fn new(cache: &CacheConfig, budget: &BudgetConfig) -> Result<Self, BudgetError> {
        let pool = crate::cache::redis_pool(cache, POOL_SIZE).map_err(BudgetError::Setup)?;
        let key = |name: &str| format!("{}{name}", budget.key_prefix);
        Ok(Self {
            pool,
            timeout: Duration::from_millis(cache.redis_timeout_ms),
            keys: [
                key("requests"),
                key("tokens"),
                key("leases"),
                key("replicas"),
                key("adaptive"),
                key("sent"),
                key("reserved"),
            ],
        })
    }

    async fn run<T: redis::FromRedisValue>(&self, args: &[String]) -> Result<T, BudgetError> {
        let call = async {
            let mut conn = self
                .pool
                .get()
                .await
                .map_err(|e| BudgetError::Redis(e.to_string()))?;
            let mut eval = redis::cmd("EVAL");
            eval.arg(SCRIPT)
                .arg(self.keys.len())
                .arg(&self.keys[..])
                .arg(args);
            eval.query_async(&mut *conn)
                .await
                .map_err(|e| BudgetError::Redis(e.to_string()))
        };
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| BudgetError::Redis(format!("no answer within {:?}", self.timeout)))?
    }

    pub(super) async fn acquire(
        &self,
        limits: &Limits,
        lease: &str,
        tokens: u64,
        reserve_usd: f64,
        replica: &str,
    ) -> Result<Answer, BudgetError> {
        let args = [
            "acquire".to_string(),
            limits.rpm().to_string(),
            limits.tpm().to_string(),
            limits.max_concurrent_calls.to_string(),
            lease.to_string(),
            limits.lease_ttl.as_millis().to_string(),
            tokens.to_string(),
            flag(limits.adaptive),
            replica.to_string(),
            limits.start_rpm().to_string(),
            adaptive::GROWTH_PER_SECOND.to_string(),
            adaptive::SETTLED_GROWTH_PER_SECOND.to_string(),
            adaptive::WINDOW_MS.to_string(),
            reserve_usd.to_string(),
        ];
        let (granted, wait_ms, live, milli): (i64, i64, i64, i64) = self.run(&args).await?;
        let rate = (milli >= 0).then(|| milli as f64 / 1000.0);
        let decision = if granted == 1 {
            Decision::granted(rate)
        } else {
            Decision::wait(wait_ms.max(1) as f64, rate)
        };
        Ok(Answer {
            decision,
            live_replicas: live.max(1) as u64,
        })
    }

    /// Releases the lease and the cost reservation, corrects the token reservation by what the
    /// call spent; answers the rate now admitted.
    pub(super) async fn settle(
        &self,
        limits: &Limits,
        lease: &str,
        estimate: u64,
        reserve_usd: f64,
        spent: Spent,
    ) -> Result<Option<f64>, BudgetError> {
        let args = [
            "settle".to_string(),
            limits.rpm().to_string(),
            limits.tpm().to_string(),
            spent.requests.to_string(),
            spent.throttled.min(spent.requests).to_string(),
            (spent.tokens as i64 - estimate as i64).to_string(),
            lease.to_string(),
            flag(limits.adaptive),
            limits.start_rpm().to_string(),
            adaptive::KEEP.to_string(),
            adaptive::MAX_CUT.to_string(),
            adaptive::COOLDOWN_MS.to_string(),
            adaptive::WINDOW_MS.to_string(),
            reserve_usd.to_string(),
        ];
        let reply: Vec<i64> = self.run(&args).await?;
        let milli = reply.first().copied().unwrap_or(-1);
        Ok((milli >= 0).then(|| milli as f64 / 1000.0))
    }

    /// Extends a running call's lease and cost reservation by the TTL; false when the lease
    /// had already expired (or none is held).
    pub(super) async fn renew(
        &self,
        limits: &Limits,
        lease: &str,
        reserve_usd: f64,
    ) -> Result<bool, BudgetError> {
        let args = [
            "renew".to_string(),
            lease.to_string(),
            limits.lease_ttl.as_millis().to_string(),
            reserve_usd.to_string(),
        ];
        Ok(self.run::<i64>(&args).await? == 1)
    }

    /// USD reserved by the calls running across the cluster.
    pub(super) async fn reserved(&self) -> Result<f64, BudgetError> {
        let total: String = self.run(&["reserved".to_string()]).await?;
        total
            .parse()
            .map_err(|e| BudgetError::Redis(format!("reserved total {total:?}: {e}")))
    }
}

fn flag(on: bool) -> String {
    if on { "1" } else { "0" }.to_string()
}
