//! What every replica is working on right now.
//!
//! Each replica keeps an [`InFlight`] registry that [`Tracked`] (a decorator around the consumer's
//! handler, so the consumer itself is untouched) fills at the start and end of every delivery. A
//! background task publishes the registry to the shared Redis every few seconds under a key with
//! a time-to-live, so a replica that dies drops off the console on its own; the console reads every
//! replica's key. Without Redis the console shows this replica only.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use deadpool_redis::redis::AsyncCommands;
use deadpool_redis::{Config as RedisConfig, Pool, Runtime};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::consumer::{Delivery, Handler, Outcome};
use crate::pipeline::message;

/// Redis key prefix of the per-replica in-flight sets.
pub const KEY_PREFIX: &str = "profile-worker:console:inflight:";
/// How often a replica republishes its set.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(5);
/// Time-to-live of a published set: three missed publications and the replica disappears.
pub const TTL: Duration = Duration::from_secs(15);
/// Longest Redis call the console waits for.
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

/// One delivery being handled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub message_id: String,
    /// `type:id`, or `(unparsable)` for a body that is not a valid request.
    pub entity: String,
    pub job_id: Option<String>,
    pub attempt: u32,
    pub started_at: DateTime<Utc>,
}

/// One replica's published set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaSet {
    pub replica: String,
    pub published_at: DateTime<Utc>,
    pub items: Vec<Item>,
}

/// This replica's in-flight deliveries.
#[derive(Clone)]
pub struct InFlight {
    replica: String,
    items: Arc<Mutex<HashMap<String, Item>>>,
}

impl InFlight {
    pub fn new(replica: impl Into<String>) -> Self {
        Self {
            replica: replica.into(),
            items: Arc::default(),
        }
    }

    pub fn replica(&self) -> &str {
        &self.replica
    }

    /// Wraps `handler` so every delivery it handles is registered while it runs.
    pub fn track(&self, handler: Arc<dyn Handler>) -> Tracked {
        Tracked {
            inner: handler,
            registry: self.clone(),
        }
    }

    /// Registers `delivery`; the registration ends when the guard drops (also on cancellation).
    pub fn start(&self, delivery: &Delivery) -> Registration {
        let (entity, job_id) = match message::parse(&delivery.body, usize::MAX) {
            Ok(m) => (m.entity.to_string(), m.job_id),
            Err(_) => ("(unparsable)".to_string(), None),
        };
        let item = Item {
            message_id: delivery.message_id.clone(),
            entity,
            job_id,
            attempt: delivery.attempt,
            started_at: Utc::now(),
        };
        self.lock().insert(item.message_id.clone(), item);
        Registration {
            registry: self.clone(),
            message_id: delivery.message_id.clone(),
        }
    }

    /// The current set, oldest first.
    pub fn snapshot(&self) -> ReplicaSet {
        let mut items: Vec<Item> = self.lock().values().cloned().collect();
        items.sort_by_key(|i| i.started_at);
        ReplicaSet {
            replica: self.replica.clone(),
            published_at: Utc::now(),
            items,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Item>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Removes its delivery from the registry when dropped.
pub struct Registration {
    registry: InFlight,
    message_id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.message_id);
    }
}

/// A handler that registers each delivery in an [`InFlight`] while the wrapped handler runs.
pub struct Tracked {
    inner: Arc<dyn Handler>,
    registry: InFlight,
}

#[async_trait]
impl Handler for Tracked {
    async fn handle(&self, delivery: &Delivery) -> Outcome {
        let _registered = self.registry.start(delivery);
        self.inner.handle(delivery).await
    }
}

/// The shared Redis the replicas publish to.
#[derive(Clone)]
pub struct Board {
    pool: Pool,
}

impl Board {
    /// A small pool of its own on `url` (the cache's Redis).
    pub fn connect(url: &str) -> Result<Self, String> {
        let pool = RedisConfig::from_url(url)
            .builder()
            .map_err(|e| e.to_string())?
            .max_size(2)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(REDIS_TIMEOUT))
            .create_timeout(Some(REDIS_TIMEOUT))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(Self { pool })
    }

    /// Writes `set` under its replica's key with [`TTL`].
    pub async fn publish(&self, set: &ReplicaSet) -> Result<(), String> {
        let body = serde_json::to_string(set).expect("in-flight sets serialise");
        let key = format!("{KEY_PREFIX}{}", set.replica);
        timed(async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            conn.set_ex::<_, _, ()>(key, body, TTL.as_secs())
                .await
                .map_err(|e| e.to_string())
        })
        .await
    }

    /// Every replica's live set, by replica name.
    pub async fn read_all(&self) -> Result<Vec<ReplicaSet>, String> {
        timed(async {
            let mut conn = self.pool.get().await.map_err(|e| e.to_string())?;
            let mut keys: Vec<String> = Vec::new();
            {
                let mut iter = conn
                    .scan_match::<_, String>(format!("{KEY_PREFIX}*"))
                    .await
                    .map_err(|e| e.to_string())?;
                while let Some(key) = iter.next_item().await {
                    keys.push(key.map_err(|e| e.to_string())?);
                }
            }
            if keys.is_empty() {
                return Ok(Vec::new());
            }
            let values: Vec<Option<String>> = conn.mget(&keys).await.map_err(|e| e.to_string())?;
            let mut sets: Vec<ReplicaSet> = values
                .into_iter()
                .flatten()
                .filter_map(|v| serde_json::from_str(&v).ok())
                .collect();
            sets.sort_by(|a, b| a.replica.cmp(&b.replica));
            Ok(sets)
        })
        .await
    }
}

async fn timed<T>(work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::time::timeout(REDIS_TIMEOUT, work)
        .await
        .unwrap_or_else(|_| Err(format!("no answer within {REDIS_TIMEOUT:?}")))
}

/// Publishes `registry` to `board` every [`PUBLISH_EVERY`] until `stop`.
pub async fn publish_loop(registry: InFlight, board: Board, stop: CancellationToken) {
    let mut warned = false;
    loop {
        match board.publish(&registry.snapshot()).await {
            Ok(()) => warned = false,
            Err(err) if !warned => {
                warned = true;
                tracing::warn!(error = %err, "cannot publish the in-flight set to Redis");
            }
            Err(_) => {}
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(PUBLISH_EVERY) => {}
        }
    }
}

/// This host's name, for the default replica name.
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
        })
        .unwrap_or_else(|| format!("pid-{}", std::process::id()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(id: &str, body: &str) -> Delivery {
        Delivery {
            message_id: id.into(),
            body: body.into(),
            receive_count: 2,
            attempt: 2,
            is_last_attempt: false,
        }
    }

    #[test]
    fn registration_lasts_as_long_as_its_guard() {
        let reg = InFlight::new("r1");
        let a = reg.start(&delivery(
            "m1",
            r#"{"entity_type":"author","entity_id":7,"job_id":"6f1c2d3e-0000-4000-8000-000000000001"}"#,
        ));
        let _b = reg.start(&delivery("m2", "not json"));
        let set = reg.snapshot();
        assert_eq!(set.items.len(), 2);
        let first = set.items.iter().find(|i| i.message_id == "m1").unwrap();
        assert_eq!(
            (
                first.entity.as_str(),
                first.job_id.as_deref(),
                first.attempt
            ),
            ("author:7", Some("6f1c2d3e-0000-4000-8000-000000000001"), 2)
        );
        assert!(set.items.iter().any(|i| i.entity == "(unparsable)"));
        drop(a);
        assert_eq!(reg.snapshot().items.len(), 1);
    }
}
