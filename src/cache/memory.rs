//! [`MemoryCache`]: the [`SharedCache`] port inside one process, shared by every
//! [`super::GraphCache`] built on the same instance (the demo's embedded cache).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::time::Instant;

use super::shared::{SharedCache, SharedCacheError};

/// Values and locks in one map with their expiry; expired entries are dropped when touched.
#[derive(Default)]
pub struct MemoryCache {
    entries: Mutex<HashMap<String, Entry>>,
}

struct Entry {
    value: Bytes,
    expires: Instant,
}

impl MemoryCache {
    /// An empty layer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs `f` on the map after dropping `key` if it has expired.
    fn with_live<T>(&self, key: &str, f: impl FnOnce(&mut HashMap<String, Entry>) -> T) -> T {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries
            .get(key)
            .is_some_and(|entry| entry.expires <= Instant::now())
        {
            entries.remove(key);
        }
        f(&mut entries)
    }
}

/// Redis keeps a value at least one second; the same floor here keeps the adapters alike.
fn value_ttl(ttl: Duration) -> Duration {
    Duration::from_secs(ttl.as_secs().max(1))
}

#[async_trait]
impl SharedCache for MemoryCache {
    fn layer(&self) -> &'static str {
        "memory"
    }

    async fn ping(&self) -> Result<(), SharedCacheError> {
        Ok(())
    }

    async fn get(&self, key: &str) -> Result<Option<Bytes>, SharedCacheError> {
        Ok(self.with_live(key, |entries| {
            entries.get(key).map(|entry| entry.value.clone())
        }))
    }

    async fn set(&self, key: &str, value: Bytes, ttl: Duration) -> Result<(), SharedCacheError> {
        let expires = Instant::now() + value_ttl(ttl);
        self.with_live(key, |entries| {
            entries.insert(key.to_string(), Entry { value, expires })
        });
        Ok(())
    }

    async fn try_lock(
        &self,
        key: &str,
        token: &str,
        ttl: Duration,
    ) -> Result<bool, SharedCacheError> {
        let expires = Instant::now() + ttl;
        Ok(self.with_live(key, |entries| {
            if entries.contains_key(key) {
                return false;
            }
            let value = Bytes::copy_from_slice(token.as_bytes());
            entries.insert(key.to_string(), Entry { value, expires });
            true
        }))
    }

    async fn is_locked(&self, key: &str) -> Result<bool, SharedCacheError> {
        Ok(self.with_live(key, |entries| entries.contains_key(key)))
    }

    async fn unlock(&self, key: &str, token: &str) -> Result<bool, SharedCacheError> {
        Ok(self.with_live(key, |entries| {
            let owned = entries
                .get(key)
                .is_some_and(|entry| entry.value == token.as_bytes());
            if owned {
                entries.remove(key);
            }
            owned
        }))
    }

    async fn delete_prefix(&self, prefix: &str) -> Result<usize, SharedCacheError> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let mut deleted = 0;
        // Expired entries go too, as Redis would have dropped them; only live ones count.
        entries.retain(|key, entry| {
            let live = entry.expires > now;
            if key.starts_with(prefix) {
                deleted += usize::from(live);
                false
            } else {
                live
            }
        });
        Ok(deleted)
    }
}
