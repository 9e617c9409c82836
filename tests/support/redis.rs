//! Redis for cache tests: the shared server under a unique key prefix per test, or a private
//! `redis-server` a test may stop and restart (never the shared one).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use deadpool_redis::redis::{self, aio::MultiplexedConnection};
use profile_worker::cache::GraphCache;
use profile_worker::config::{CacheConfig, SecretUrl};
use profile_worker::graph::{Graph, GraphParams, build};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::model::GraphRows;

use super::graph::{author, book, org};

/// The shared test Redis (`PW_TEST_REDIS_URL`, default 127.0.0.1:6379).
pub fn shared_url() -> String {
    std::env::var("PW_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A key prefix no other test uses, ending like the original's.
pub fn unique_prefix() -> String {
    format!(
        "test:{}:social_circles:graph:",
        uuid::Uuid::new_v4().simple()
    )
}

/// The default cache settings pointed at `url` (empty = no Redis).
pub fn cache_config(url: &str) -> CacheConfig {
    CacheConfig {
        redis_url: SecretUrl::new(url),
        local_ttl_seconds: 30,
        redis_ttl_seconds: 300,
        redis_timeout_ms: 250,
        lock_wait_ms: 5000,
        tls_ca_file: String::new(),
    }
}

/// A cache with its own metrics and health, as one replica would have.
pub struct Replica {
    pub cache: GraphCache,
    pub metrics: Arc<Metrics>,
    pub health: Health,
}

impl Replica {
    pub fn new(config: &CacheConfig, prefix: &str) -> Self {
        let metrics = Arc::new(Metrics::new());
        let health = Health::new();
        let cache = GraphCache::with_key_prefix(config, metrics.clone(), &health, prefix)
            .expect("cache builds");
        Self {
            cache,
            metrics,
            health,
        }
    }

    /// `graph_cache_requests_total{layer, result}`.
    pub fn requests(&self, layer: &str, result: &str) -> u64 {
        self.metrics
            .graph_cache_requests
            .with_label_values(&[layer, result])
            .get()
    }

    pub fn builds_observed(&self) -> u64 {
        self.metrics.graph_build_seconds.get_sample_count()
    }

    /// The readiness check the cache reports: (ok, detail).
    pub fn redis_check(&self) -> (bool, String) {
        let r = self.health.readiness();
        let c = &r.checks["redis"];
        assert!(!c.required, "Redis must never make the daemon unready");
        assert!(r.ready);
        (c.ok, c.detail.clone())
    }

    /// `get_or_build` with the default parameters and a counting builder of [`sample_graph`].
    pub async fn get(&self, builds: &Builds) -> Arc<Graph> {
        let builds = builds.clone();
        guard(
            self.cache
                .get_or_build(&GraphParams::default(), || builds.build()),
        )
        .await
        .expect("builder never fails here")
    }
}

/// Counts builder calls; each build can take a while so concurrent callers overlap.
#[derive(Clone, Default)]
pub struct Builds {
    count: Arc<AtomicUsize>,
    delay: Duration,
}

impl Builds {
    pub fn slow(delay: Duration) -> Self {
        Self {
            count: Arc::default(),
            delay,
        }
    }

    pub fn count(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }

    pub async fn build(self) -> Result<Graph, String> {
        self.count.fetch_add(1, Ordering::SeqCst);
        if !self.delay.is_zero() {
            tokio::time::sleep(self.delay).await;
        }
        Ok(sample_graph())
    }
}

/// A small graph with every edge kind (two authors, a publisher, a binder).
pub fn sample_graph() -> Graph {
    let rows = GraphRows {
        books: vec![
            book(1, Some(1), Some(1), Some(1)),
            book(2, Some(2), Some(1), None),
        ],
        authors: vec![
            author(1, Some(1850), Some(1900)),
            author(2, Some(1812), None),
        ],
        publishers: vec![org(1)],
        binders: vec![org(1)],
        ai_connections: vec![super::graph::ai("author:1", "author:2", "friendship", 0.8)],
    };
    build(&rows, &GraphParams::default(), Utc::now())
}

/// Fails a test that hangs instead of finishing (a hang guard, not a timing assertion).
pub async fn guard<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .expect("hang guard: took over 30 s")
}

/// A direct connection for inspecting and seeding Redis.
pub async fn raw(url: &str) -> MultiplexedConnection {
    let client = redis::Client::open(url).expect("redis url");
    guard(client.get_multiplexed_async_connection())
        .await
        .unwrap_or_else(|e| panic!("cannot reach Redis at {url}: {e} (run scripts/test)"))
}

/// A private `redis-server` on a free port, killed on drop.
pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    pub fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (its data is gone: no persistence).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it (again) on the same port and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed (apt-get install redis-server)");
        self.child = Some(child);
        let client = redis::Client::open(self.url()).unwrap();
        let started = Instant::now();
        while client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err()
        {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not start",
                self.port
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A private `redis-server` serving TLS only (`--port 0 --tls-port`), with a CA and a server
/// certificate for 127.0.0.1/localhost made by the openssl CLI in a temporary directory.
pub struct TlsRedisServer {
    port: u16,
    child: Child,
    dir: tempfile::TempDir,
}

impl TlsRedisServer {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir.path())
                .output()
                .expect("the openssl CLI is installed");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        openssl(&[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=profile-worker test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ]);
        openssl(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        std::fs::write(
            dir.path().join("san.ext"),
            "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "san.ext",
            "-out",
            "server.pem",
        ]);
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let path = |f: &str| dir.path().join(f).display().to_string();
        let child = Command::new("redis-server")
            .args([
                "--port",
                "0",
                "--tls-port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .args([
                "--tls-cert-file",
                &path("server.pem"),
                "--tls-key-file",
                &path("server.key"),
            ])
            .args([
                "--tls-ca-cert-file",
                &path("ca.pem"),
                "--tls-auth-clients",
                "no",
            ])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server --tls-port {port} did not start (built without TLS?)"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self { port, child, dir }
    }

    /// `rediss://localhost:{port}` (the certificate names localhost and 127.0.0.1).
    pub fn url(&self) -> String {
        format!("rediss://localhost:{}", self.port)
    }

    /// The CA certificate (PEM) the server's certificate chains to.
    pub fn ca_file(&self) -> String {
        self.dir.path().join("ca.pem").display().to_string()
    }
}

impl Drop for TlsRedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
