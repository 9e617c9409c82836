//! The [`SharedCache`] port: the layer of the graph cache that replicas share.
//!
//! Adapters: [`super::RedisCache`] (production; the Python API reads and writes the same
//! entries) and [`super::MemoryCache`] (one process; the demo). The port is deliberately
//! primitive — get, set with a time to live, a token lock, prefix deletion — so that every policy
//! (keys, formats, when to lock, how long to wait, what a failure means) stays in
//! [`super::GraphCache`] and behaves the same on both.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

/// Why one operation on the shared layer failed. [`super::GraphCache`] logs and counts it and
/// builds instead; it never reaches the cache's callers.
#[derive(Debug, thiserror::Error)]
pub enum SharedCacheError {
    /// No answer within the adapter's time limit (Redis: `cache.redis_timeout_ms`).
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// No connection could be had.
    #[error("no connection: {0}")]
    Connection(String),
    /// The layer answered with an error.
    #[error("{0}")]
    Command(String),
}

/// A key–value layer with expiry and token locks, shared by every replica that points at it.
#[async_trait]
pub trait SharedCache: Send + Sync {
    /// The `layer` label of `graph_cache_requests_total` for this layer's lookups.
    fn layer(&self) -> &'static str;

    /// Checks the layer answers.
    async fn ping(&self) -> Result<(), SharedCacheError>;

    /// The value at `key`, `None` when absent or expired.
    async fn get(&self, key: &str) -> Result<Option<Bytes>, SharedCacheError>;

    /// Stores `value` at `key` for `ttl` (whole seconds, at least one), replacing any value.
    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), SharedCacheError>;

    /// Takes the lock `key` for `ttl` with `token` as its owner; false when someone holds it.
    async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, SharedCacheError>;

    /// Whether anyone holds the lock `key`.
    async fn is_locked(&self, key: &str) -> Result<bool, SharedCacheError>;

    /// Releases the lock `key` if `token` still owns it (a lock that expired and was retaken
    /// stays with its new owner); true when released.
    async fn unlock(&self, key: &str, token: &str) -> Result<bool, SharedCacheError>;

    /// Deletes every key starting with `prefix`, values and locks alike; returns how many.
    async fn delete_prefix(&self, prefix: &str) -> Result<usize, SharedCacheError>;
}
