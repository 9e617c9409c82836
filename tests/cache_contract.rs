//! One contract suite for every `SharedCache` adapter (the graph cache's shared layer): each case
//! runs against `RedisCache` on the shared test Redis (under a key prefix of its own) and against
//! `MemoryCache`. The last cases run the whole `GraphCache` over each adapter, two replicas
//! sharing one layer.

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use profile_worker::cache::{GraphCache, MemoryCache, RedisCache, SharedCache};
use profile_worker::graph::{GraphParams, to_python_json};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use support::redis::{Builds, cache_config, guard, sample_graph, shared_url, unique_prefix};

/// One adapter under test with a key prefix no other test uses.
struct Subject {
    layer: Arc<dyn SharedCache>,
    prefix: String,
}

impl Subject {
    fn key(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }
}

fn redis() -> Subject {
    let layer = RedisCache::connect(&cache_config(&shared_url()), &Health::new())
        .expect("the test Redis URL is valid");
    Subject {
        layer: Arc::new(layer),
        prefix: unique_prefix(),
    }
}

fn memory() -> Subject {
    Subject {
        layer: Arc::new(MemoryCache::new()),
        prefix: unique_prefix(),
    }
}

/// Runs each named case against both adapters. `MemoryCache` keeps its expiries on tokio time, so
/// its `layer` cases run on paused time (their waits are instant); the `graph` cases stay on real
/// time because `GraphCache` waits for another replica's build against the system clock.
macro_rules! contract {
    (layer: [$($case:ident),* $(,)?], graph: [$($graph:ident),* $(,)?] $(,)?) => {
        mod redis {
            $(
                #[tokio::test]
                async fn $case() {
                    super::guard(super::$case(super::redis())).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $graph() {
                    super::guard(super::$graph(super::redis())).await;
                }
            )*
        }
        mod memory {
            $(
                #[tokio::test(start_paused = true)]
                async fn $case() {
                    super::guard(super::$case(super::memory())).await;
                }
            )*
            $(
                #[tokio::test]
                async fn $graph() {
                    super::guard(super::$graph(super::memory())).await;
                }
            )*
        }
    };
}

contract!(
    layer: [
        answers_a_ping,
        a_missing_key_reads_as_none,
        a_value_reads_back_byte_for_byte,
        set_replaces_the_value,
        values_expire_after_their_ttl,
        a_lock_is_exclusive_until_its_owner_releases_it,
        locks_expire,
        delete_prefix_deletes_values_and_locks_under_the_prefix_only,
        the_prefix_is_literal,
    ],
    graph: [
        two_graph_caches_on_one_layer_build_once,
        a_graph_cache_serves_what_another_stored,
    ],
);

const MINUTE: Duration = Duration::from_secs(60);

async fn answers_a_ping(s: Subject) {
    s.layer.ping().await.expect("ping");
    assert!(!s.layer.layer().is_empty());
}

async fn a_missing_key_reads_as_none(s: Subject) {
    assert_eq!(s.layer.get(&s.key("absent")).await.unwrap(), None);
}

async fn a_value_reads_back_byte_for_byte(s: Subject) {
    // Every byte value, and large enough to span many network reads.
    let value: Vec<u8> = (0..=255u8).cycle().take(3 << 20).collect();
    let key = s.key("value");
    s.layer
        .set(&key, Bytes::from(value.clone()), MINUTE)
        .await
        .unwrap();
    let read = s.layer.get(&key).await.unwrap().expect("stored");
    assert_eq!(read.len(), value.len());
    assert!(read == value, "the bytes differ");
}

async fn set_replaces_the_value(s: Subject) {
    let key = s.key("replaced");
    s.layer
        .set(&key, Bytes::from_static(b"first"), MINUTE)
        .await
        .unwrap();
    s.layer
        .set(&key, Bytes::from_static(b"second"), MINUTE)
        .await
        .unwrap();
    assert_eq!(
        s.layer.get(&key).await.unwrap().as_deref(),
        Some(&b"second"[..])
    );
}

async fn values_expire_after_their_ttl(s: Subject) {
    let key = s.key("short-lived");
    s.layer
        .set(&key, Bytes::from_static(b"x"), Duration::from_secs(1))
        .await
        .unwrap();
    assert!(s.layer.get(&key).await.unwrap().is_some());
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(s.layer.get(&key).await.unwrap(), None);
}

async fn a_lock_is_exclusive_until_its_owner_releases_it(s: Subject) {
    let lock = s.key("build:lock");
    assert!(!s.layer.is_locked(&lock).await.unwrap());
    assert!(s.layer.try_lock(&lock, "owner", MINUTE).await.unwrap());
    assert!(s.layer.is_locked(&lock).await.unwrap());
    assert!(!s.layer.try_lock(&lock, "other", MINUTE).await.unwrap());
    assert!(
        !s.layer.try_lock(&lock, "owner", MINUTE).await.unwrap(),
        "not re-entrant"
    );
    assert!(
        !s.layer.unlock(&lock, "other").await.unwrap(),
        "only the owner releases"
    );
    assert!(s.layer.is_locked(&lock).await.unwrap());
    assert!(s.layer.unlock(&lock, "owner").await.unwrap());
    assert!(!s.layer.is_locked(&lock).await.unwrap());
    assert!(
        !s.layer.unlock(&lock, "owner").await.unwrap(),
        "already released"
    );
    assert!(s.layer.try_lock(&lock, "other", MINUTE).await.unwrap());
}

async fn locks_expire(s: Subject) {
    let lock = s.key("dead:lock");
    assert!(
        s.layer
            .try_lock(&lock, "dead", Duration::from_millis(100))
            .await
            .unwrap()
    );
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(!s.layer.is_locked(&lock).await.unwrap());
    assert!(s.layer.try_lock(&lock, "next", MINUTE).await.unwrap());
    assert!(
        !s.layer.unlock(&lock, "dead").await.unwrap(),
        "the expired owner cannot release the new owner's lock"
    );
    assert!(s.layer.is_locked(&lock).await.unwrap());
}

async fn delete_prefix_deletes_values_and_locks_under_the_prefix_only(s: Subject) {
    let other = unique_prefix();
    for key in [s.key("a"), s.key("b"), format!("{other}a")] {
        s.layer
            .set(&key, Bytes::from_static(b"v"), MINUTE)
            .await
            .unwrap();
    }
    assert!(
        s.layer
            .try_lock(&s.key("a:lock"), "t", MINUTE)
            .await
            .unwrap()
    );
    assert_eq!(s.layer.delete_prefix(&s.prefix).await.unwrap(), 3);
    assert_eq!(s.layer.get(&s.key("a")).await.unwrap(), None);
    assert!(!s.layer.is_locked(&s.key("a:lock")).await.unwrap());
    assert!(s.layer.get(&format!("{other}a")).await.unwrap().is_some());
    assert_eq!(s.layer.delete_prefix(&s.prefix).await.unwrap(), 0);
    assert_eq!(s.layer.delete_prefix(&other).await.unwrap(), 1);
}

async fn the_prefix_is_literal(s: Subject) {
    // On Redis a prefix is matched with SCAN's glob: its special characters must not widen it.
    let glob = s.key("x*[a]?");
    s.layer
        .set(&format!("{glob}1"), Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap();
    s.layer
        .set(&s.key("xyz"), Bytes::from_static(b"v"), MINUTE)
        .await
        .unwrap();
    assert_eq!(s.layer.delete_prefix(&glob).await.unwrap(), 1);
    assert!(s.layer.get(&s.key("xyz")).await.unwrap().is_some());
    assert_eq!(s.layer.delete_prefix(&s.prefix).await.unwrap(), 1);
}

/// A replica: a graph cache with its own metrics over the shared layer under test.
fn replica(s: &Subject) -> (GraphCache, Arc<Metrics>) {
    let metrics = Arc::new(Metrics::new());
    let cache = GraphCache::with_shared(
        &cache_config(""),
        metrics.clone(),
        Some(s.layer.clone()),
        &s.prefix,
    );
    (cache, metrics)
}

fn requests(metrics: &Metrics, layer: &str, result: &str) -> u64 {
    metrics
        .graph_cache_requests
        .with_label_values(&[layer, result])
        .get()
}

async fn two_graph_caches_on_one_layer_build_once(s: Subject) {
    let (a, ma) = replica(&s);
    let (b, mb) = replica(&s);
    let builds = Builds::slow(Duration::from_millis(300));
    let params = GraphParams::default();
    let (ga, gb) = tokio::join!(
        a.get_or_build(&params, || builds.clone().build()),
        b.get_or_build(&params, || builds.clone().build()),
    );
    assert_eq!(builds.count(), 1, "the replica without the lock waited");
    assert_eq!(ga.unwrap().nodes, gb.unwrap().nodes);
    let layer = s.layer.layer();
    assert_eq!(requests(&ma, layer, "hit") + requests(&mb, layer, "hit"), 1);
    assert_eq!(
        requests(&ma, layer, "miss") + requests(&mb, layer, "miss"),
        1
    );
    assert!(
        !s.layer
            .is_locked(&format!("{}:lock", a.key(&params)))
            .await
            .unwrap(),
        "the build lock is released"
    );
}

async fn a_graph_cache_serves_what_another_stored(s: Subject) {
    let (writer, _) = replica(&s);
    let params = GraphParams::default();
    let builds = Builds::default();
    let built = writer
        .get_or_build(&params, || builds.clone().build())
        .await
        .unwrap();
    let stored = s.layer.get(&writer.key(&params)).await.unwrap().unwrap();
    assert_eq!(
        stored,
        to_python_json(&built).into_bytes(),
        "the Python JSON"
    );
    let (reader, metrics) = replica(&s);
    let read = reader
        .get_or_build(&params, || builds.clone().build())
        .await
        .unwrap();
    assert_eq!(builds.count(), 1);
    assert_eq!(*read, *built);
    assert_eq!(requests(&metrics, s.layer.layer(), "hit"), 1);
    assert_eq!(writer.invalidate().await, 1);
    assert_eq!(sample_graph().nodes, read.nodes);
}
