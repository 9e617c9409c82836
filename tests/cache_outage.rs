//! The graph cache when Redis stops, restarts or hangs: callers always get a graph. Each test
//! runs its own `redis-server`.

mod support;

use deadpool_redis::redis::{self, AsyncCommands, AsyncConnectionConfig};
use profile_worker::graph::{GraphParams, from_json, to_python_json};
use support::redis::{
    Builds, RedisServer, Replica, cache_config, guard, raw, sample_graph, unique_prefix,
};

#[tokio::test]
async fn redis_stopped_then_restarted() {
    let mut server = RedisServer::start();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&server.url()), &prefix);
    let key = replica.cache.key(&GraphParams::default());
    let builds = Builds::default();

    replica.get(&builds).await;
    assert_eq!(builds.count(), 1);
    let mut conn = raw(&server.url()).await;
    let stored: Option<String> = conn.get(&key).await.unwrap();
    assert!(stored.is_some());

    server.stop();
    // Invalidation fails quietly (0) but still drops the in-process copy.
    assert_eq!(replica.cache.invalidate().await, 0);
    let graph = replica.get(&builds).await;
    assert_eq!(builds.count(), 2, "built without Redis");
    assert_eq!(graph.nodes, sample_graph().nodes);
    assert_eq!(replica.requests("redis", "error"), 1);
    assert!(!replica.redis_check().0);

    server.restart();
    assert_eq!(
        replica.cache.invalidate().await,
        0,
        "the restarted server is empty"
    );
    replica.get(&builds).await;
    assert_eq!(builds.count(), 3);
    let mut conn = raw(&server.url()).await;
    let stored: Option<String> = conn.get(&key).await.unwrap();
    assert!(stored.is_some(), "caching resumed");
    assert_eq!(replica.redis_check(), (true, "ok".to_string()));

    // And a fresh replica reads it instead of building.
    let other = Replica::new(&cache_config(&server.url()), &prefix);
    other.get(&builds).await;
    assert_eq!(builds.count(), 3);
    assert!(other.cache.ping().await);
}

#[tokio::test]
async fn a_hanging_redis_times_out_and_the_graph_is_built() {
    let server = RedisServer::start();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&server.url()), &prefix);
    let key = replica.cache.key(&GraphParams::default());
    let mut conn = raw(&server.url()).await;
    // A valid entry that a working Redis would serve...
    let cached = sample_graph();
    let _: () = conn
        .set_ex(&key, to_python_json(&cached), 300)
        .await
        .unwrap();
    // ...but it hangs for far longer than cache.redis_timeout_ms.
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3_000)
        .arg("ALL")
        .query_async(&mut conn)
        .await
        .unwrap();
    let builds = Builds::default();
    replica.get(&builds).await;
    assert_eq!(builds.count(), 1, "built instead of waiting for Redis");
    assert_eq!(replica.requests("redis", "error"), 1);
    let (ok, detail) = replica.redis_check();
    assert!(!ok);
    assert!(detail.contains("timed out"), "{detail}");
    // Once the pause ends (a few seconds), the entry is still the one we seeded.
    let client = redis::Client::open(server.url()).unwrap();
    let patient = AsyncConnectionConfig::new().set_response_timeout(None);
    let mut conn = guard(client.get_multiplexed_async_connection_with_config(&patient))
        .await
        .unwrap();
    let stored: String = conn.get(&key).await.unwrap();
    assert_eq!(
        from_json(&stored).unwrap(),
        cached,
        "nothing was written while degraded"
    );
}
