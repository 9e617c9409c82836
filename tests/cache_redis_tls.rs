//! `rediss://`: the graph cache over TLS against a private `redis-server --tls-port` whose
//! certificate comes from a CA the test makes and names in `cache.tls_ca_file`.

mod support;

use profile_worker::cache::{CacheError, GraphCache};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use std::sync::Arc;
use support::redis::{Builds, Replica, TlsRedisServer, cache_config, unique_prefix};

#[tokio::test]
async fn the_graph_is_cached_and_read_back_over_tls() {
    let server = TlsRedisServer::start();
    let mut config = cache_config(&server.url());
    config.tls_ca_file = server.ca_file();
    // A debug build's first TLS handshake on a loaded CI machine can exceed the 250 ms default;
    // this test is about trust and round trips, not latency.
    config.redis_timeout_ms = 3000;
    let prefix = unique_prefix();
    let builds = Builds::default();

    let writer = Replica::new(&config, &prefix);
    let built = writer.get(&builds).await;
    assert_eq!(builds.count(), 1);
    assert_eq!(
        writer.requests("redis", "miss"),
        1,
        "{:?}",
        writer.redis_check()
    );
    assert!(writer.redis_check().0, "{:?}", writer.redis_check());

    // A second replica (empty in-process cache) reads the graph back from Redis over TLS.
    let reader = Replica::new(&config, &prefix);
    let read = reader.get(&builds).await;
    assert_eq!(builds.count(), 1, "served from Redis, not rebuilt");
    assert_eq!(reader.requests("redis", "hit"), 1);
    assert_eq!(*read, *built);
}

#[tokio::test]
async fn a_server_certificate_from_an_untrusted_ca_is_refused() {
    let server = TlsRedisServer::start();
    // The system trust store does not know the test's CA: the cache degrades to building.
    let replica = Replica::new(&cache_config(&server.url()), &unique_prefix());
    let builds = Builds::default();
    replica.get(&builds).await;
    assert_eq!(replica.requests("redis", "hit"), 0);
    assert_eq!(
        replica.requests("redis", "error"),
        1,
        "the first read fails the handshake"
    );
    let (ok, detail) = replica.redis_check();
    assert!(!ok && detail.starts_with("degraded"), "{detail}");
}

#[test]
fn an_unreadable_ca_file_fails_naming_the_key() {
    let mut config = cache_config("rediss://localhost:6380");
    config.tls_ca_file = "/nonexistent/ca.pem".into();
    let err = GraphCache::new(&config, Arc::new(Metrics::new()), &Health::new())
        .err()
        .expect("refused");
    assert!(matches!(err, CacheError::TlsCaFile { .. }));
    assert!(
        err.to_string()
            .starts_with("cache.tls_ca_file /nonexistent/ca.pem:"),
        "{err}"
    );
}

#[test]
fn a_ca_file_without_rediss_is_a_config_error() {
    let out = support::daemon::command()
        .arg("config")
        .env("PROFILE_WORKER_CACHE__REDIS_URL", "redis://localhost:6379")
        .env("PROFILE_WORKER_CACHE__TLS_CA_FILE", "/etc/ca.pem")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("cache.tls_ca_file"), "{stderr}");
}
