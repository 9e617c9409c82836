//! [`RedisCache`]: the [`SharedCache`] port on Redis, the production shared layer.
//!
//! Every command is bounded by `cache.redis_timeout_ms`, connection checkout included, and its
//! outcome feeds the `redis` readiness check (informational: the daemon stays ready without
//! Redis). Locks are `SET NX PX` with a random token and a compare-and-delete release.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use deadpool_redis::redis::{self, AsyncConnectionConfig, Cmd, FromRedisValue};
use deadpool_redis::{Manager, Pool, Runtime};

use super::CacheError;
use super::shared::{SharedCache, SharedCacheError};
use crate::config::CacheConfig;
use crate::health::{Check, Health};

/// Redis connections per process; loads are single-flight, so few are ever busy.
const POOL_SIZE: usize = 4;
/// Compare-and-delete, so a replica never releases a lock that expired and was retaken.
const UNLOCK_SCRIPT: &str = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end";

/// A pooled Redis client reporting to the `redis` readiness check.
pub struct RedisCache {
    pool: Pool,
    timeout: Duration,
    check: Check,
    healthy: AtomicBool,
}

impl From<deadpool_redis::PoolError> for SharedCacheError {
    fn from(e: deadpool_redis::PoolError) -> Self {
        SharedCacheError::Connection(e.to_string())
    }
}

impl From<redis::RedisError> for SharedCacheError {
    fn from(e: redis::RedisError) -> Self {
        SharedCacheError::Command(e.to_string())
    }
}

impl RedisCache {
    /// A pool for `cache.redis_url` (not contacted yet) and its readiness check.
    pub fn connect(config: &CacheConfig, health: &Health) -> Result<Self, CacheError> {
        let timeout = Duration::from_millis(config.redis_timeout_ms);
        let pool = pool(config, POOL_SIZE)?;
        let check = health.check("redis", false);
        check.set(false, "not contacted yet");
        Ok(Self {
            pool,
            timeout,
            check,
            healthy: AtomicBool::new(false),
        })
    }

    /// One command, bounded by the timeout, with the outcome reported to the readiness check.
    async fn run<T: FromRedisValue>(&self, cmd: &Cmd) -> Result<T, SharedCacheError> {
        let result = match tokio::time::timeout(self.timeout, async {
            let mut conn = self.pool.get().await?;
            Ok::<T, SharedCacheError>(cmd.query_async(&mut *conn).await?)
        })
        .await
        {
            Ok(result) => result,
            Err(_) => Err(SharedCacheError::Timeout(self.timeout)),
        };
        match &result {
            Ok(_) => {
                if !self.healthy.swap(true, Ordering::Relaxed) {
                    self.check.set(true, "ok");
                }
            }
            Err(e) => {
                self.healthy.store(false, Ordering::Relaxed);
                self.check
                    .set(false, format!("degraded (building without cache): {e}"));
            }
        }
        result
    }
}

/// `prefix*` as a SCAN pattern, with the glob's special characters taken literally.
fn prefix_pattern(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('*');
    pattern
}

#[async_trait]
impl SharedCache for RedisCache {
    fn layer(&self) -> &'static str {
        "redis"
    }

    async fn ping(&self) -> Result<(), SharedCacheError> {
        self.run::<String>(&redis::cmd("PING")).await.map(drop)
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SharedCacheError> {
        let value: Option<Vec<u8>> = self.run(redis::cmd("GET").arg(key)).await?;
        Ok(value.map(Bytes::from))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), SharedCacheError> {
        let mut cmd = redis::cmd("SETEX");
        cmd.arg(key).arg(ttl.as_secs().max(1)).arg(value.as_ref());
        self.run(&cmd).await
    }

    async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, SharedCacheError> {
        let mut cmd = redis::cmd("SET");
        cmd.arg(key)
            .arg(token)
            .arg("NX")
            .arg("PX")
            .arg(ttl.as_millis().max(1) as u64);
        let reply: Option<String> = self.run(&cmd).await?;
        Ok(reply.is_some())
    }

    async fn is_locked(&self, key: &str) -> Result<bool, SharedCacheError> {
        self.run(redis::cmd("EXISTS").arg(key)).await
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<bool, SharedCacheError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(UNLOCK_SCRIPT).arg(1).arg(key).arg(token);
        Ok(self.run::<i64>(&cmd).await? == 1)
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, SharedCacheError> {
        let pattern = prefix_pattern(prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(100);
            let (next, keys): (u64, Vec<String>) = self.run(&scan).await?;
            if !keys.is_empty() {
                deleted += self.run::<usize>(redis::cmd("DEL").arg(&keys)).await?;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}

/// A pool of at most `size` connections to `cache.redis_url` (not contacted yet), every step
/// bounded by `cache.redis_timeout_ms`; the Bedrock budget (src/budget/) opens its own.
pub(crate) fn pool(config: &CacheConfig, size: usize) -> Result<Pool, CacheError> {
    let timeout = Duration::from_millis(config.redis_timeout_ms);
    let connection = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout));
    let manager = Manager::new_with_config(connection_info(config)?, connection)
        .map_err(CacheError::RedisUrl)?;
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(timeout))
        .create_timeout(Some(timeout))
        .recycle_timeout(Some(timeout))
        .build()
        .map_err(CacheError::Pool)
}

/// The Redis address; with `cache.tls_ca_file`, a `rediss://` connection trusts that CA bundle
/// instead of the system store (the redis crate's rustls backend, see docs/deploy.md).
fn connection_info(config: &CacheConfig) -> Result<redis::ConnectionInfo, CacheError> {
    use redis::IntoConnectionInfo;
    let url = config.redis_url.expose();
    if config.tls_ca_file.is_empty() {
        return url.into_connection_info().map_err(CacheError::RedisUrl);
    }
    let pem = std::fs::read(&config.tls_ca_file).map_err(|source| CacheError::TlsCaFile {
        path: config.tls_ca_file.clone(),
        source,
    })?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    let client = redis::Client::build_with_tls(url, certs).map_err(CacheError::RedisUrl)?;
    Ok(client.get_connection_info().clone())
}

#[cfg(test)]
mod tests {
    use super::prefix_pattern;

    #[test]
    fn prefix_pattern_matches_the_prefix_literally() {
        assert_eq!(
            prefix_pattern("social_circles:graph:"),
            "social_circles:graph:*"
        );
        assert_eq!(prefix_pattern(r"a*b?[c]\"), r"a\*b\?\[c\]\\*");
    }
}
