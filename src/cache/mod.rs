//! Two-level cache of the social-circles graph, sharing the Python API's Redis entry (docs/decisions.md, "Graph: same content as the Python API, cached in two layers").
//!
//! L1 is an in-process moka cache (`cache.local_ttl_seconds`) whose loader is single-flight:
//! concurrent misses in one process await one load. L2 is the [`SharedCache`] port — Redis in
//! production ([`RedisCache`], at the original's key and TTL, holding the exact JSON the API
//! writes, so either side serves the other's builds), or [`MemoryCache`] in the demo. On an L2
//! miss one replica takes the build lock (`SET NX PX` on Redis) and builds; the others poll the
//! key for up to `cache.lock_wait_ms`, then build themselves. L2 is an optimisation only:
//! unreachable, slow (`cache.redis_timeout_ms` per command) or holding an invalid value means
//! "build and carry on", never an error for the caller.

mod memory;
mod redis;
mod shared;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::config::CacheConfig;
use crate::graph::{Graph, GraphJsonError, GraphParams, from_json, to_python_json};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::retry::Backoff;

pub use memory::MemoryCache;
pub use redis::RedisCache;
pub(crate) use redis::pool as redis_pool;
pub use shared::{SharedCache, SharedCacheError};

/// The original's key prefix; `invalidate` clears everything under it.
pub const KEY_PREFIX: &str = "social_circles:graph:";
/// Values longer than this (10 MiB) are not cached, as in the original.
pub const MAX_CACHED_LEN: usize = 10 * 1024 * 1024;
/// Pauses between polls while another replica builds: from 20 ms, doubling up to 200 ms.
const LOCK_POLL: Backoff =
    Backoff::exponential(Duration::from_millis(20), Duration::from_millis(200));

/// Why the cache could not be set up (bad configuration: fix it and restart).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cache.redis_url is not a usable Redis URL: {0}")]
    RedisUrl(#[source] deadpool_redis::redis::RedisError),
    #[error("cannot create the Redis pool: {0}")]
    Pool(#[source] deadpool_redis::BuildError),
    #[error("cache.tls_ca_file {path}: {source}")]
    TlsCaFile {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// The Redis key of a graph: the original's recipe for the three parameters it knows; an era
/// filter (which the original never caches) is appended so it cannot collide with theirs.
pub fn cache_key(params: &GraphParams) -> String {
    key_with_prefix(KEY_PREFIX, params)
}

fn key_with_prefix(prefix: &str, params: &GraphParams) -> String {
    let mut text = format!(
        "binders={}|min={}|max={}",
        if params.include_binders {
            "True"
        } else {
            "False"
        },
        params.min_book_count,
        params.max_books
    );
    if let Some(eras) = params.era_filter.as_ref().filter(|e| !e.is_empty()) {
        let names: Vec<&str> = eras.iter().map(|e| e.as_str()).collect();
        text.push_str("|era=");
        text.push_str(&names.join(","));
    }
    let digest = hex::encode(Sha256::digest(text.as_bytes()));
    format!("{prefix}{}", &digest[..32])
}

/// The graph cache; cheap to clone, one per process.
#[derive(Clone)]
pub struct GraphCache {
    inner: Arc<Inner>,
}

struct Inner {
    local: moka::future::Cache<String, Arc<Graph>>,
    shared: Option<Shared>,
    prefix: String,
    metrics: Arc<Metrics>,
}

/// The L2 layer and how this cache uses it.
struct Shared {
    port: Arc<dyn SharedCache>,
    ttl: Duration,
    lock_wait: Duration,
    lock_ttl: Duration,
    /// The last value read or written at each key, with the graph parsed from it: a read that
    /// returns the same bytes reuses the graph instead of parsing the value again. The value
    /// changes only when a replica or the API rebuilds it, so most reads find it unchanged, and at
    /// 5,000 books parsing was most of a hit's time (docs/benchmarks.md, "Graph cache hit").
    /// Holding the bytes costs one copy of the value per key; comparing them is one pass, exact
    /// where a digest would be probable.
    parsed: moka::future::Cache<String, (Bytes, Arc<Graph>)>,
}

/// Keys whose parse [`Shared`] remembers; a process uses one per graph parameter set, so this only
/// bounds a pathological mix.
const PARSED_KEYS: u64 = 16;

/// How a load went at the shared layer, for the one metric sample per request.
enum L2 {
    Hit(Arc<Graph>),
    Miss,
    Invalid,
    Error,
}

impl GraphCache {
    /// The production cache at the original's key prefix: Redis when `cache.redis_url` is set,
    /// else in-process only.
    pub fn new(
        config: &CacheConfig,
        metrics: Arc<Metrics>,
        health: &Health,
    ) -> Result<Self, CacheError> {
        Self::with_key_prefix(config, metrics, health, KEY_PREFIX)
    }

    /// Like [`GraphCache::new`] under another key prefix, so tests sharing one Redis stay apart.
    pub fn with_key_prefix(
        config: &CacheConfig,
        metrics: Arc<Metrics>,
        health: &Health,
        prefix: &str,
    ) -> Result<Self, CacheError> {
        let shared: Option<Arc<dyn SharedCache>> = if config.redis_url.is_empty() {
            health
                .check("redis", false)
                .set(true, "not configured: in-process cache only");
            None
        } else {
            Some(Arc::new(RedisCache::connect(config, health)?))
        };
        Ok(Self::with_shared(config, metrics, shared, prefix))
    }

    /// A cache over any shared layer (`None`: in-process only), under `prefix`.
    pub fn with_shared(
        config: &CacheConfig,
        metrics: Arc<Metrics>,
        shared: Option<Arc<dyn SharedCache>>,
        prefix: &str,
    ) -> Self {
        let lock_wait = Duration::from_millis(config.lock_wait_ms);
        let shared = shared.map(|port| Shared {
            port,
            ttl: Duration::from_secs(config.redis_ttl_seconds),
            lock_wait,
            lock_ttl: (lock_wait * 2).max(Duration::from_secs(1)),
            parsed: moka::future::Cache::new(PARSED_KEYS),
        });
        let local = moka::future::Cache::builder()
            .max_capacity(16)
            .time_to_live(Duration::from_secs(config.local_ttl_seconds))
            .build();
        Self {
            inner: Arc::new(Inner {
                local,
                shared,
                prefix: prefix.to_string(),
                metrics,
            }),
        }
    }

    /// This cache's shared-layer key for `params`.
    pub fn key(&self, params: &GraphParams) -> String {
        key_with_prefix(&self.inner.prefix, params)
    }

    /// Pings the shared layer to refresh its readiness detail (e.g. at start-up); true when it
    /// answered.
    pub async fn ping(&self) -> bool {
        match &self.inner.shared {
            Some(shared) => shared.port.ping().await.is_ok(),
            None => false,
        }
    }

    /// The graph for `params`: from this process, else the shared layer, else `build` (whose
    /// result is then cached in both layers). Concurrent callers share one load; they also share
    /// its error, which is `build`'s only (shared-layer problems never surface).
    pub async fn get_or_build<F, Fut, E>(
        &self,
        params: &GraphParams,
        build: F,
    ) -> Result<Arc<Graph>, Arc<E>>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Graph, E>>,
        E: Send + Sync + 'static,
    {
        let key = self.key(params);
        if let Some(graph) = self.inner.local.get(&key).await {
            self.count("local", "hit");
            return Ok(graph);
        }
        self.count("local", "miss");
        self.inner
            .local
            .try_get_with(key.clone(), self.load(&key, build))
            .await
    }

    /// Drops every cached graph here and under the prefix in the shared layer (on Redis SCAN +
    /// DEL, as the original); returns how many shared keys were deleted, 0 on any error.
    pub async fn invalidate(&self) -> usize {
        self.inner.local.invalidate_all();
        let Some(shared) = &self.inner.shared else {
            return 0;
        };
        shared.parsed.invalidate_all();
        match shared.port.delete_prefix(&self.inner.prefix).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(error = %e, "graph cache invalidation failed");
                0
            }
        }
    }

    fn count(&self, layer: &str, result: &str) {
        self.inner
            .metrics
            .graph_cache_requests
            .with_label_values(&[layer, result])
            .inc();
    }

    /// The L1 loader: the shared layer, then the cross-replica lock, then a build.
    async fn load<F, Fut, E>(&self, key: &str, build: F) -> Result<Arc<Graph>, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Graph, E>>,
    {
        let Some(shared) = &self.inner.shared else {
            return self.timed_build(build).await.map(Arc::new);
        };
        let layer = shared.port.layer();
        let first = shared.read(key).await;
        let outcome = match first {
            L2::Hit(graph) => {
                self.count(layer, "hit");
                return Ok(graph);
            }
            L2::Error => {
                // The layer is failing: do not add lock round trips that would fail too.
                self.count(layer, "error");
                return self.timed_build(build).await.map(Arc::new);
            }
            other => other,
        };
        let lock_key = format!("{key}:lock");
        let token = uuid::Uuid::new_v4().to_string();
        let locked = shared.try_lock(&lock_key, &token).await;
        if !locked && let Some(graph) = shared.wait_for(key, &lock_key).await {
            self.count(layer, "hit");
            return Ok(graph);
        }
        self.count(
            layer,
            match outcome {
                L2::Invalid => "invalid",
                _ => "miss",
            },
        );
        let built = self.timed_build(build).await.map(Arc::new);
        if let Ok(graph) = &built {
            shared.store(key, graph).await;
        }
        if locked {
            shared.unlock(&lock_key, &token).await;
        }
        built
    }

    async fn timed_build<F, Fut, E>(&self, build: F) -> Result<Graph, E>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<Graph, E>>,
    {
        let started = Instant::now();
        let built = build().await;
        if built.is_ok() {
            self.inner
                .metrics
                .graph_build_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        built
    }
}

impl Shared {
    async fn read(&self, key: &str) -> L2 {
        match self.port.get(key).await {
            Ok(Some(value)) if !value.is_empty() => match self.parse(key, value).await {
                Ok(graph) => L2::Hit(graph),
                Err(e) => {
                    tracing::warn!(key, error = %e, "cached graph is invalid; rebuilding");
                    L2::Invalid
                }
            },
            Ok(_) => L2::Miss,
            Err(e) => {
                tracing::warn!(key, error = %e, "graph cache read failed; building");
                L2::Error
            }
        }
    }

    /// The graph of `value` at `key`: the remembered one when the bytes are the same, else parsed.
    async fn parse(&self, key: &str, value: Bytes) -> Result<Arc<Graph>, GraphJsonError> {
        if let Some((bytes, graph)) = self.parsed.get(key).await
            && bytes == value
        {
            return Ok(graph);
        }
        let graph = Arc::new(from_json(&value)?);
        self.parsed
            .insert(key.to_string(), (value, graph.clone()))
            .await;
        Ok(graph)
    }

    /// True when this replica now holds the build lock (false also when the layer failed).
    async fn try_lock(&self, lock_key: &str, token: &str) -> bool {
        match self.port.try_lock(lock_key, token, self.lock_ttl).await {
            Ok(locked) => locked,
            Err(e) => {
                tracing::warn!(lock_key, error = %e, "graph build lock failed");
                false
            }
        }
    }

    /// Polls for another replica's build until it lands, its lock goes away or `lock_wait` ends.
    async fn wait_for(&self, key: &str, lock_key: &str) -> Option<Arc<Graph>> {
        let deadline = Instant::now() + self.lock_wait;
        let mut pause = LOCK_POLL.steps();
        while Instant::now() < deadline {
            let delay = pause.next_delay();
            tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
            match self.read(key).await {
                L2::Hit(graph) => return Some(graph),
                L2::Error => return None,
                L2::Miss | L2::Invalid => {}
            }
            match self.port.is_locked(lock_key).await {
                Ok(true) => {}
                // The builder gave up (or could not cache): build here rather than wait on.
                Ok(false) | Err(_) => return None,
            }
        }
        None
    }

    /// Best-effort write of the Python-compatible JSON, remembered with its graph; oversize
    /// values are skipped.
    async fn store(&self, key: &str, graph: &Arc<Graph>) {
        let text = to_python_json(graph);
        if text.len() > MAX_CACHED_LEN {
            tracing::warn!(
                key,
                bytes = text.len(),
                "graph too large for the cache; not cached"
            );
            return;
        }
        let value = Bytes::from(text);
        match self.port.set(key, value.clone(), self.ttl).await {
            Ok(()) => {
                self.parsed
                    .insert(key.to_string(), (value, graph.clone()))
                    .await
            }
            Err(e) => tracing::warn!(key, error = %e, "graph cache write failed"),
        }
    }

    async fn unlock(&self, lock_key: &str, token: &str) {
        if let Err(e) = self.port.unlock(lock_key, token).await {
            tracing::warn!(lock_key, error = %e, "graph build lock release failed; it expires");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::graph::Era;

    #[test]
    fn default_key_is_the_originals() {
        assert_eq!(
            cache_key(&GraphParams::default()),
            "social_circles:graph:4f76c609972adf607938651101654b9e"
        );
    }

    #[test]
    fn key_depends_on_every_parameter() {
        let base = GraphParams::default();
        let variants = [
            GraphParams {
                include_binders: false,
                ..base.clone()
            },
            GraphParams {
                min_book_count: 2,
                ..base.clone()
            },
            GraphParams {
                max_books: 1000,
                ..base.clone()
            },
            GraphParams {
                era_filter: Some(vec![Era::Victorian]),
                ..base.clone()
            },
        ];
        let mut keys: Vec<String> = variants.iter().map(cache_key).collect();
        keys.push(cache_key(&base));
        assert!(
            keys.iter()
                .all(|k| k.starts_with(KEY_PREFIX) && k.len() == KEY_PREFIX.len() + 32)
        );
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), 5);
        // An empty era list is no filter, as in the builder.
        let empty = GraphParams {
            era_filter: Some(vec![]),
            ..base.clone()
        };
        assert_eq!(cache_key(&empty), cache_key(&base));
        assert_eq!(
            key_with_prefix("t:", &base),
            "t:4f76c609972adf607938651101654b9e"
        );
    }
}
