//! Graph cache behaviours against the shared test Redis (docs/compatibility.md, "Graph cache in Redis"); each
//! test has its own key prefix.

mod support;

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use profile_worker::cache::{MAX_CACHED_LEN, cache_key};
use profile_worker::config::CacheConfig;
use profile_worker::graph::{Graph, GraphParams, from_json, to_python_json};
use support::redis::{
    Builds, Replica, cache_config, guard, raw, sample_graph, shared_url, unique_prefix,
};

fn same_content(a: &Graph, b: &Graph) {
    assert_eq!(a.nodes, b.nodes);
    assert_eq!(a.edges, b.edges);
    assert_eq!(a.meta.total_books, b.meta.total_books);
}

#[tokio::test]
async fn production_key_is_the_originals_and_tests_only_change_the_prefix() {
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&shared_url()), &prefix);
    let params = GraphParams::default();
    assert_eq!(
        cache_key(&params),
        "social_circles:graph:4f76c609972adf607938651101654b9e"
    );
    assert_eq!(
        replica.cache.key(&params),
        format!("{prefix}4f76c609972adf607938651101654b9e")
    );
}

#[tokio::test]
async fn miss_builds_and_writes_the_python_value_with_its_ttl() {
    let url = shared_url();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&url), &prefix);
    let builds = Builds::default();
    let graph = replica.get(&builds).await;
    assert_eq!(builds.count(), 1);
    assert_eq!(replica.requests("local", "miss"), 1);
    assert_eq!(replica.requests("redis", "miss"), 1);
    assert_eq!(replica.builds_observed(), 1);

    let mut conn = raw(&url).await;
    let key = replica.cache.key(&GraphParams::default());
    let stored: String = conn.get(&key).await.unwrap();
    assert_eq!(stored, to_python_json(&graph));
    // Set → get round trip keeps everything, meta included.
    assert_eq!(from_json(&stored).unwrap(), *graph);
    let ttl: i64 = conn.ttl(&key).await.unwrap();
    assert!((1..=300).contains(&ttl), "ttl {ttl}");
    let lock_left: bool = conn.exists(format!("{key}:lock")).await.unwrap();
    assert!(!lock_left, "the build lock is released");
    assert_eq!(replica.redis_check(), (true, "ok".to_string()));
}

#[tokio::test]
async fn local_hit_skips_redis_and_build() {
    let replica = Replica::new(&cache_config(&shared_url()), &unique_prefix());
    let builds = Builds::default();
    let first = replica.get(&builds).await;
    let second = replica.get(&builds).await;
    assert!(Arc::ptr_eq(&first, &second));
    assert_eq!(builds.count(), 1);
    assert_eq!(replica.requests("local", "hit"), 1);
    assert_eq!(replica.requests("redis", "miss"), 1);
    assert_eq!(replica.requests("redis", "hit"), 0);
}

#[tokio::test]
async fn redis_hit_skips_the_build() {
    let url = shared_url();
    let prefix = unique_prefix();
    let writer = Replica::new(&cache_config(&url), &prefix);
    let builds = Builds::default();
    let built = writer.get(&builds).await;
    let reader = Replica::new(&cache_config(&url), &prefix);
    let read = reader.get(&builds).await;
    assert_eq!(builds.count(), 1);
    assert_eq!(*read, *built);
    assert_eq!(reader.requests("redis", "hit"), 1);
    assert_eq!(reader.builds_observed(), 0);
}

#[tokio::test]
async fn a_value_written_by_python_is_served() {
    let url = shared_url();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&url), &prefix);
    let python = support::graph::fixture("python-graph-small.json");
    let key = replica.cache.key(&GraphParams::default());
    let mut conn = raw(&url).await;
    let _: () = conn.set_ex(&key, &python, 300).await.unwrap();
    let builds = Builds::default();
    let graph = replica.get(&builds).await;
    assert_eq!(builds.count(), 0);
    assert_eq!(*graph, from_json(&python).unwrap());
    assert_eq!(graph.nodes.len(), 264);
}

/// With the in-process layer off, every read goes to Redis: the same bytes reuse the graph parsed
/// from them, and a value someone rewrote (the API after a rebuild) is parsed afresh.
#[tokio::test]
async fn unchanged_bytes_reuse_the_parsed_graph_and_a_rewritten_value_is_read_afresh() {
    let url = shared_url();
    let config = CacheConfig {
        local_ttl_seconds: 0,
        ..cache_config(&url)
    };
    let replica = Replica::new(&config, &unique_prefix());
    let key = replica.cache.key(&GraphParams::default());
    let mut conn = raw(&url).await;
    let python = support::graph::fixture("python-graph-small.json");
    let _: () = conn.set_ex(&key, &python, 300).await.unwrap();
    let builds = Builds::default();
    let first = replica.get(&builds).await;
    let second = replica.get(&builds).await;
    assert!(
        Arc::ptr_eq(&first, &second),
        "the same bytes are not parsed twice"
    );
    assert_eq!(replica.requests("redis", "hit"), 2);

    let rewritten = sample_graph();
    let _: () = conn
        .set_ex(&key, to_python_json(&rewritten), 300)
        .await
        .unwrap();
    let third = replica.get(&builds).await;
    assert_eq!(*third, rewritten);
    assert_ne!(*third, *first);
    assert_eq!(replica.requests("redis", "hit"), 3);
    assert_eq!(builds.count(), 0);

    // This replica's own write is remembered too: a build followed by reads parses nothing.
    replica.cache.invalidate().await;
    let built = replica.get(&builds).await;
    let reread = replica.get(&builds).await;
    assert!(Arc::ptr_eq(&built, &reread));
    assert_eq!(builds.count(), 1);
}

#[tokio::test]
async fn an_invalid_value_is_rebuilt_and_overwritten() {
    let url = shared_url();
    let prefix = unique_prefix();
    let key = format!("{prefix}4f76c609972adf607938651101654b9e");
    let mut conn = raw(&url).await;
    let invalids = [
        "{not json".to_string(),
        to_python_json(&sample_graph()).replace(r#""strength": 3"#, r#""strength": 1"#),
    ];
    for invalid in invalids {
        let _: () = conn.set_ex(&key, &invalid, 300).await.unwrap();
        let replica = Replica::new(&cache_config(&url), &prefix);
        let builds = Builds::default();
        let graph = replica.get(&builds).await;
        assert_eq!(builds.count(), 1);
        assert_eq!(replica.requests("redis", "invalid"), 1);
        let stored: String = conn.get(&key).await.unwrap();
        assert_eq!(
            from_json(&stored).unwrap(),
            *graph,
            "overwritten with a valid value"
        );
    }
}

#[tokio::test]
async fn oversize_graphs_are_returned_but_not_cached() {
    let url = shared_url();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&url), &prefix);
    let mut huge = sample_graph();
    huge.nodes[0].name = "x".repeat(MAX_CACHED_LEN);
    let expected = huge.clone();
    let graph = guard(
        replica.cache.get_or_build(
            &GraphParams::default(),
            || async move { Ok::<_, String>(huge) },
        ),
    )
    .await
    .unwrap();
    assert_eq!(*graph, expected);
    let mut conn = raw(&url).await;
    let exists: bool = conn
        .exists(replica.cache.key(&GraphParams::default()))
        .await
        .unwrap();
    assert!(!exists);
}

#[tokio::test]
async fn build_errors_reach_the_caller_and_are_not_cached() {
    let url = shared_url();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&url), &prefix);
    let err = guard(
        replica
            .cache
            .get_or_build(&GraphParams::default(), || async {
                Err::<Graph, _>("database down".to_string())
            }),
    )
    .await
    .unwrap_err();
    assert_eq!(*err, "database down");
    let mut conn = raw(&url).await;
    let key = replica.cache.key(&GraphParams::default());
    let exists: bool = conn.exists(&key).await.unwrap();
    assert!(!exists);
    let lock_left: bool = conn.exists(format!("{key}:lock")).await.unwrap();
    assert!(!lock_left);
    let builds = Builds::default();
    replica.get(&builds).await;
    assert_eq!(builds.count(), 1);
}

#[tokio::test]
async fn five_concurrent_misses_build_once() {
    let replica = Replica::new(&cache_config(&shared_url()), &unique_prefix());
    let builds = Builds::slow(Duration::from_millis(200));
    let mut tasks = Vec::new();
    for _ in 0..5 {
        let cache = replica.cache.clone();
        let builds = builds.clone();
        tasks.push(tokio::spawn(async move {
            cache
                .get_or_build(&GraphParams::default(), || builds.build())
                .await
                .unwrap()
        }));
    }
    let graphs: Vec<Arc<Graph>> = guard(async {
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.unwrap());
        }
        out
    })
    .await;
    assert_eq!(builds.count(), 1);
    assert!(graphs.windows(2).all(|w| Arc::ptr_eq(&w[0], &w[1])));
    assert_eq!(replica.requests("redis", "miss"), 1);
}

#[tokio::test]
async fn two_replicas_sharing_redis_build_once() {
    let url = shared_url();
    let prefix = unique_prefix();
    let a = Replica::new(&cache_config(&url), &prefix);
    let b = Replica::new(&cache_config(&url), &prefix);
    let builds = Builds::slow(Duration::from_millis(300));
    let (ga, gb) = guard(async { tokio::join!(a.get(&builds), b.get(&builds)) }).await;
    assert_eq!(builds.count(), 1);
    same_content(&ga, &gb);
    assert_eq!(
        a.requests("redis", "hit") + b.requests("redis", "hit"),
        1,
        "the replica that did not build read the other's value"
    );
}

#[tokio::test]
async fn a_lock_held_by_a_dead_replica_only_delays_the_build() {
    let url = shared_url();
    let prefix = unique_prefix();
    let mut config = cache_config(&url);
    config.lock_wait_ms = 300;
    let replica = Replica::new(&config, &prefix);
    let key = replica.cache.key(&GraphParams::default());
    let mut conn = raw(&url).await;
    let _: () = conn
        .pset_ex(format!("{key}:lock"), "someone-else", 60_000)
        .await
        .unwrap();
    let builds = Builds::default();
    replica.get(&builds).await;
    assert_eq!(builds.count(), 1);
    let stored: Option<String> = conn.get(&key).await.unwrap();
    assert!(stored.is_some(), "the late builder still caches");
    let owner: String = conn.get(format!("{key}:lock")).await.unwrap();
    assert_eq!(owner, "someone-else", "a lock we do not own is left alone");
}

#[tokio::test]
async fn without_redis_every_replica_builds_and_nothing_is_shared() {
    let prefix = unique_prefix();
    let a = Replica::new(&cache_config(""), &prefix);
    let b = Replica::new(&cache_config(""), &prefix);
    let builds = Builds::default();
    a.get(&builds).await;
    a.get(&builds).await;
    b.get(&builds).await;
    assert_eq!(builds.count(), 2, "L1 still serves the second call of a");
    assert_eq!(a.requests("redis", "miss") + a.requests("redis", "hit"), 0);
    assert!(a.redis_check().0);
    assert_eq!(a.cache.invalidate().await, 0);
    a.get(&builds).await;
    assert_eq!(builds.count(), 3, "invalidate clears L1");
    assert!(!a.cache.ping().await);
}

#[tokio::test]
async fn unreachable_redis_degrades_to_building() {
    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let replica = Replica::new(
        &cache_config(&format!("redis://127.0.0.1:{port}")),
        &unique_prefix(),
    );
    let builds = Builds::default();
    let graph = replica.get(&builds).await;
    same_content(&graph, &sample_graph());
    assert_eq!(builds.count(), 1);
    assert_eq!(replica.requests("redis", "error"), 1);
    let (ok, detail) = replica.redis_check();
    assert!(!ok);
    assert!(detail.starts_with("degraded"), "{detail}");
    assert_eq!(replica.cache.invalidate().await, 0);
    assert!(!replica.cache.ping().await);
}

#[tokio::test]
async fn invalidate_deletes_only_this_prefix_and_counts() {
    let url = shared_url();
    let prefix = unique_prefix();
    let other = unique_prefix();
    let replica = Replica::new(&cache_config(&url), &prefix);
    assert_eq!(replica.cache.invalidate().await, 0, "no keys");

    let mut conn = raw(&url).await;
    let _: () = conn.set_ex(format!("{prefix}aaa"), "x", 300).await.unwrap();
    let _: () = conn.set_ex(format!("{other}bbb"), "y", 300).await.unwrap();
    let builds = Builds::default();
    replica.get(&builds).await;
    // The built graph plus the seeded key.
    assert_eq!(replica.cache.invalidate().await, 2);
    let left: Option<String> = conn.get(format!("{other}bbb")).await.unwrap();
    assert_eq!(left.as_deref(), Some("y"));
    let gone: bool = conn
        .exists(replica.cache.key(&GraphParams::default()))
        .await
        .unwrap();
    assert!(!gone);
    replica.get(&builds).await;
    assert_eq!(builds.count(), 2, "L1 was cleared too");
    let _: () = conn.del(format!("{other}bbb")).await.unwrap();
}

#[tokio::test]
async fn other_parameters_use_other_entries() {
    let url = shared_url();
    let prefix = unique_prefix();
    let replica = Replica::new(&cache_config(&url), &prefix);
    let builds = Builds::default();
    replica.get(&builds).await;
    let no_binders = GraphParams {
        include_binders: false,
        ..GraphParams::default()
    };
    let b = builds.clone();
    guard(replica.cache.get_or_build(&no_binders, || b.build()))
        .await
        .unwrap();
    assert_eq!(builds.count(), 2);
    assert_ne!(
        replica.cache.key(&no_binders),
        replica.cache.key(&GraphParams::default())
    );
}
