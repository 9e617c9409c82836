//! The Bedrock budget (src/budget/) against real Redis: several `Budget`s stand for replicas
//! sharing one key prefix. Redis time is real, so limits are set high and windows short.

mod support;

use std::sync::Arc;
use std::time::Duration;

use deadpool_redis::redis::AsyncCommands;
use profile_worker::budget::{Budget, BudgetedGenerator, Source, Spent};
use profile_worker::config::{BudgetConfig, CacheConfig};
use profile_worker::generate::bedrock::BedrockGenerator;
use profile_worker::generate::{Allowance, CallKind, Generator, PairRequest};
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use support::bedrock::{FakeBedrock, FakeReply, Quota, sdk_config};
use support::entities::entity;
use support::redis::{RedisServer, cache_config, guard, raw, shared_url};

/// A budget configuration under a prefix no other test uses.
fn budget_config(configure: impl FnOnce(&mut BudgetConfig)) -> BudgetConfig {
    let mut config = profile_worker::config::defaults().budget;
    config.key_prefix = format!("test:{}:budget:", uuid::Uuid::new_v4().simple());
    configure(&mut config);
    config
}

/// One replica's budget with its own metrics and health.
struct Replica {
    budget: Arc<Budget>,
    metrics: Arc<Metrics>,
    health: Health,
}

impl Replica {
    fn new(name: &str, budget: &BudgetConfig, cache: &CacheConfig) -> Self {
        let metrics = Arc::new(Metrics::new());
        let health = Health::new();
        let budget = Budget::new(budget, cache, name.to_string(), metrics.clone(), &health)
            .expect("budget builds");
        Self {
            budget: Arc::new(budget),
            metrics,
            health,
        }
    }

    /// The informational `budget` readiness check: (ok, detail); never makes the replica unready.
    fn check(&self) -> (bool, String) {
        let r = self.health.readiness();
        let c = &r.checks["budget"];
        assert!(!c.required, "the budget must never make a replica unready");
        (c.ok, c.detail.clone())
    }
}

fn pair(model: &str) -> PairRequest {
    PairRequest {
        model: model.to_string(),
        source: entity("author:1", "Charles Dickens"),
        target: entity("author:2", "Wilkie Collins"),
        connection_type: "friendship".into(),
        shared_titles: vec![],
        connections: vec![],
        allowance: Allowance::unlimited(),
    }
}

/// `calls` narrative calls spread over three replicas, five at a time each, against `fake`.
async fn three_replicas_call(fake: &FakeBedrock, budget: Option<&BudgetConfig>, calls: usize) {
    let sdk = sdk_config().await;
    let mut config = fake.generator_config();
    config.max_attempts = 1;
    let cache = cache_config(&shared_url());
    let mut tasks = tokio::task::JoinSet::new();
    for r in 0..3 {
        let metrics = Arc::new(Metrics::new());
        let bedrock: Arc<dyn Generator> =
            Arc::new(BedrockGenerator::new(&sdk, &config, metrics.clone()));
        let generator: Arc<dyn Generator> = match budget {
            Some(b) => Arc::new(BudgetedGenerator::new(
                bedrock,
                Replica::new(&format!("replica-{r}"), b, &cache).budget,
                &config,
            )),
            None => bedrock,
        };
        for slot in 0..5 {
            let generator = generator.clone();
            let n = calls / 15 + usize::from(r * 5 + slot < calls % 15);
            tasks.spawn(async move {
                for _ in 0..n {
                    let _ = generator.connection_narrative(&pair("m.x")).await;
                }
            });
        }
    }
    guard(async {
        while let Some(done) = tasks.join_next().await {
            done.expect("caller task");
        }
    })
    .await;
}

/// Three replicas make 30 calls to a fake accepting `requests` calls and `tokens` tokens a
/// second (0: unlimited), each replica under `budget`: none is throttled. Returns the fake and
/// its quota.
async fn three_replicas_stay_inside(
    requests: u64,
    tokens: u64,
    budget: &BudgetConfig,
) -> (FakeBedrock, Quota) {
    let quota = Quota {
        requests,
        tokens,
        window: Duration::from_secs(1),
    };
    let fake = FakeBedrock::start().await;
    fake.set_quota(Some(quota));
    three_replicas_call(&fake, Some(budget), 30).await;
    let log = fake.quota_log();
    assert_eq!((log.accepted, log.throttled), (30, 0), "{log:?}");
    (fake, quota)
}

#[tokio::test]
async fn a_shared_request_budget_keeps_three_replicas_inside_the_quota() {
    // Quota: 6 calls per second; budget: 300/min (5 per second) across the three replicas.
    let budget = budget_config(|b| b.requests_per_minute = 300);
    let (fake, quota) = three_replicas_stay_inside(6, 0, &budget).await;

    // The same load without the budget is throttled, so the quota does bite.
    fake.set_quota(Some(quota));
    three_replicas_call(&fake, None, 30).await;
    assert!(fake.quota_log().throttled > 0);
}

#[tokio::test]
async fn a_shared_token_budget_keeps_three_replicas_inside_the_token_quota() {
    // Every default reply uses 120 tokens; quota 720 tokens (6 calls) per second, budget 600/s.
    // The first calls reserve the first estimate (output cap + 1000): reconciling them to 120
    // tokens is what lets the rest through at the quota's pace.
    let budget = budget_config(|b| b.tokens_per_minute = 36_000);
    three_replicas_stay_inside(0, 720, &budget).await;
}

/// What a settled call spent: `requests` Bedrock requests, `tokens` tokens, `throttled` of them
/// throttled.
fn spent(requests: u32, tokens: u64, throttled: u32) -> Spent {
    Spent {
        requests,
        tokens,
        throttled,
    }
}

/// Milliseconds until the token budget's theoretical arrival time, on Redis's clock.
async fn tokens_ahead_ms(url: &str, budget: &BudgetConfig) -> f64 {
    let mut conn = raw(url).await;
    let tat: Option<String> = conn
        .get(format!("{}tokens", budget.key_prefix))
        .await
        .unwrap();
    let (secs, micros): (u64, u64) = deadpool_redis::redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .unwrap();
    let now = secs as f64 * 1000.0 + micros as f64 / 1000.0;
    tat.map_or(0.0, |t| t.parse::<f64>().unwrap() - now)
}

#[tokio::test]
async fn settling_replaces_the_reserved_estimate_with_the_tokens_spent() {
    let url = shared_url();
    let cache = cache_config(&url);
    // 6,000 tokens per minute: every token reserves 10 ms.
    let config = budget_config(|b| b.tokens_per_minute = 6_000);
    let replica = Replica::new("replica-a", &config, &cache);
    let grant = guard(replica.budget.acquire(1_000, 0.0)).await;
    assert_eq!(grant.source, Source::Redis);
    let reserved = tokens_ahead_ms(&url, &config).await;
    assert!(
        reserved > 5_000.0,
        "1,000 tokens reserve 10 s: {reserved} ms"
    );
    let spent = spent(1, 100, 0);
    replica.budget.settle(grant, spent).await;
    let settled = tokens_ahead_ms(&url, &config).await;
    assert!(
        settled <= 1_100.0,
        "100 tokens take 1 s (2 % headroom): {settled} ms"
    );

    // Another replica is held back by what the first one spent, then admitted.
    let other = Replica::new("replica-b", &config, &cache);
    let grant = guard(other.budget.acquire(10, 0.0)).await;
    assert_eq!(grant.source, Source::Redis);
}

/// One call at a time under 3 s leases on the shared Redis: (its URL, cache settings, budget
/// settings, the leases key).
fn single_lease() -> (String, CacheConfig, BudgetConfig, String) {
    let url = shared_url();
    let cache = cache_config(&url);
    let config = budget_config(|b| {
        b.max_concurrent_calls = 1;
        b.lease_ttl_seconds = 3;
    });
    let leases_key = format!("{}leases", config.key_prefix);
    (url, cache, config, leases_key)
}

#[tokio::test]
async fn a_vanished_replica_s_lease_expires_and_its_capacity_returns() {
    let (url, cache, config, leases_key) = single_lease();
    let holder = Replica::new("replica-a", &config, &cache);
    let grant = guard(holder.budget.acquire(10, 0.0)).await;
    assert_eq!(holder.metrics.budget_leases.get(), 1);
    let mut conn = raw(&url).await;
    let held: Vec<String> = conn.zrange(&leases_key, 0, -1).await.unwrap();
    assert_eq!(held.len(), 1);
    // The holder is killed: its grant is never settled and nobody renews it (dropping a grant
    // leaves its Redis lease to expire).
    drop(grant);
    drop(holder);

    let other = Replica::new("replica-b", &config, &cache);
    let grant = guard(other.budget.acquire(10, 0.0)).await;
    assert_eq!(grant.source, Source::Redis);
    let now_held: Vec<String> = conn.zrange(&leases_key, 0, -1).await.unwrap();
    assert_eq!(now_held.len(), 1);
    assert_ne!(
        now_held, held,
        "the dead replica's lease expired, the new one is held"
    );
    other.budget.settle(grant, Spent::default()).await;
    let after: Vec<String> = conn.zrange(&leases_key, 0, -1).await.unwrap();
    assert!(after.is_empty(), "settling releases the lease: {after:?}");
    assert_eq!(other.metrics.budget_leases.get(), 0);
}

#[tokio::test]
async fn a_renewed_lease_outlives_its_ttl() {
    let (url, cache, config, leases_key) = single_lease();
    let holder = Replica::new("replica-a", &config, &cache);
    let grant = guard(holder.budget.acquire(10, 0.0)).await;
    let mut conn = raw(&url).await;
    let expiry = |conn: &mut deadpool_redis::redis::aio::MultiplexedConnection| {
        let key = leases_key.clone();
        let mut conn = conn.clone();
        async move {
            let scores: Vec<(String, f64)> = conn.zrange_withscores(&key, 0, -1).await.unwrap();
            scores[0].1
        }
    };
    let first = expiry(&mut conn).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    holder.budget.renew(&grant).await;
    assert!(expiry(&mut conn).await > first, "renewing moves the expiry");
    holder.budget.settle(grant, Spent::default()).await;
}

#[tokio::test]
async fn without_redis_each_replica_takes_its_share_and_carries_on() {
    let mut server = RedisServer::start();
    let cache = cache_config(&server.url());
    let config = budget_config(|b| {
        b.requests_per_minute = 600_000;
        b.max_concurrent_calls = 4;
    });
    let a = Replica::new("replica-a", &config, &cache);
    let b = Replica::new("replica-b", &config, &cache);
    // Twice, so that each has seen both replicas live.
    for r in [&a, &b, &a, &b] {
        let grant = guard(r.budget.acquire(10, 0.0)).await;
        assert_eq!(grant.source, Source::Redis);
        r.budget.settle(grant, Spent::default()).await;
    }
    let (ok, detail) = a.check();
    assert!(ok, "{detail}");
    assert_eq!(a.metrics.budget_fallback.get(), 0);

    server.stop();
    // Both replicas carry on, each on half of the budget: two leases each.
    for r in [&a, &b] {
        let first = guard(r.budget.acquire(10, 0.0)).await;
        let second = guard(r.budget.acquire(10, 0.0)).await;
        assert_eq!(
            (first.source, second.source),
            (Source::Local, Source::Local)
        );
        assert_eq!(r.metrics.budget_fallback.get(), 1);
        let (ok, detail) = r.check();
        assert!(!ok && detail.contains("1/2"), "{detail}");
        r.budget.settle(first, Spent::default()).await;
        r.budget.settle(second, Spent::default()).await;
    }
    assert!(
        a.health.readiness().ready,
        "a Redis outage leaves the replica ready"
    );

    server.restart();
    // The next probe (at most a second later) goes back to Redis.
    let back = guard(async {
        loop {
            let grant = a.budget.acquire(10, 0.0).await;
            let source = grant.source;
            a.budget.settle(grant, Spent::default()).await;
            if source == Source::Redis {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    back.await;
    assert_eq!(a.metrics.budget_fallback.get(), 0);
    assert!(a.check().0);
}

/// Redis's clock, milliseconds.
async fn redis_now_ms(conn: &mut deadpool_redis::redis::aio::MultiplexedConnection) -> f64 {
    let (secs, micros): (u64, u64) = deadpool_redis::redis::cmd("TIME")
        .query_async(conn)
        .await
        .unwrap();
    secs as f64 * 1000.0 + micros as f64 / 1000.0
}

/// Records `n` attempts as sent just now in the adaptive window (as `n` admitted calls would).
async fn seed_sent(url: &str, budget: &BudgetConfig, n: usize) {
    let mut conn = raw(url).await;
    let now = redis_now_ms(&mut conn).await;
    let members: Vec<(f64, String)> = (0..n).map(|i| (now, format!("seeded:{i}"))).collect();
    let _: i64 = conn
        .zadd_multiple(format!("{}sent", budget.key_prefix), &members)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_throttle_cuts_every_replica_s_rate_to_what_bedrock_accepted_in_the_last_minute() {
    let url = shared_url();
    let cache = cache_config(&url);
    let config = budget_config(|b| {
        b.adaptive = true;
        b.requests_per_minute = 6_000;
    });
    let a = Replica::new("replica-a", &config, &cache);
    let b = Replica::new("replica-b", &config, &cache);
    // 4,000 attempts accepted in the last minute, then one call throttled.
    seed_sent(&url, &config, 4_000).await;
    let grant = guard(a.budget.acquire(10, 0.0)).await;
    let start = a.metrics.budget_rate.get();
    assert!(
        start > 5_800.0 && start <= 6_000.0,
        "the configured rate less 2 %: {start}"
    );
    let throttled = spent(1, 0, 1);
    a.budget.settle(grant, throttled).await;
    let cut = a.metrics.budget_rate.get();
    let expected = 4_000.0 * 0.98;
    assert!(
        (cut - expected).abs() < 1.0,
        "cut to the accepted calls less 2 %, the throttled one not counted: {cut}"
    );

    // The other replica sees the cut rate, learnt through Redis, and waits: the window already
    // holds more calls than the new rate.
    let held = tokio::time::timeout(Duration::from_millis(500), b.budget.acquire(10, 0.0)).await;
    assert!(held.is_err(), "the window is full at the cut rate");
    let seen = b.metrics.budget_rate.get();
    assert!((seen - expected).abs() < 1.0, "{seen}");

    // With few calls accepted, one throttle at most halves the rate.
    let config = budget_config(|b| {
        b.adaptive = true;
        b.requests_per_minute = 6_000;
    });
    let c = Replica::new("replica-c", &config, &cache);
    let grant = guard(c.budget.acquire(10, 0.0)).await;
    c.budget.settle(grant, throttled).await;
    let halved = c.metrics.budget_rate.get();
    assert!((halved - start / 2.0).abs() < 1.0, "{halved} from {start}");
}

#[tokio::test]
async fn the_adaptive_rate_admits_no_more_calls_in_a_window_than_its_rate() {
    let url = shared_url();
    let cache = cache_config(&url);
    // 117.6 calls a minute: the pace alone would admit the next call at once.
    let config = budget_config(|b| {
        b.adaptive = true;
        b.requests_per_minute = 120;
    });
    let a = Replica::new("replica-a", &config, &cache);
    seed_sent(&url, &config, 117).await;
    let grant = guard(a.budget.acquire(10, 0.0)).await;
    let answered = spent(1, 10, 0);
    a.budget.settle(grant, answered).await;
    let held = tokio::time::timeout(Duration::from_secs(2), a.budget.acquire(10, 0.0)).await;
    assert!(
        held.is_err(),
        "118 calls in the window: the next waits for the oldest to leave it"
    );
}

#[tokio::test]
async fn a_throttled_attempt_goes_back_through_the_budget_instead_of_the_adapter_s_backoff() {
    let fake = FakeBedrock::start().await;
    fake.push(
        CallKind::Narrative,
        [
            FakeReply::throttling(),
            FakeReply::text("They met at a dinner."),
        ],
    );
    let mut config = fake.generator_config();
    // The adapter's own backoff would wait up to a minute.
    config.retry_base_ms = 60_000;
    config.max_attempts = 4;
    let budget = budget_config(|b| {
        b.adaptive = true;
        b.requests_per_minute = 6_000;
    });
    let replica = Replica::new("replica-a", &budget, &cache_config(&shared_url()));
    let bedrock = BedrockGenerator::new(&sdk_config().await, &config, replica.metrics.clone())
        .returning_throttles();
    let generator = BudgetedGenerator::new(Arc::new(bedrock), replica.budget.clone(), &config);
    let reply = tokio::time::timeout(
        Duration::from_secs(5),
        generator.connection_narrative(&pair(&config.models["haiku"])),
    )
    .await
    .expect("no backoff of the adapter")
    .expect("the second attempt answers");
    assert_eq!((reply.usage.calls, reply.usage.throttled), (2, 1));
    let admitted = replica
        .metrics
        .budget_wait_seconds
        .with_label_values(&["redis"])
        .get_sample_count();
    assert_eq!(admitted, 2, "each attempt was admitted by the budget");
    assert!(
        replica.metrics.budget_rate.get() < 6_000.0 * 0.98 * 0.75,
        "the throttle cut the rate before the attempt was sent again"
    );
}

#[tokio::test]
async fn calls_in_flight_reserve_their_cost_for_every_replica_until_settled_or_expired() {
    let url = shared_url();
    let cache = cache_config(&url);
    let config = budget_config(|b| {
        b.daily_cost_usd = 10.0;
        b.lease_ttl_seconds = 2;
    });
    let a = Replica::new("replica-a", &config, &cache);
    let b = Replica::new("replica-b", &config, &cache);
    let first = guard(a.budget.acquire(10, 0.25)).await;
    let second = guard(a.budget.acquire(10, 0.5)).await;
    assert_eq!(first.source, Source::Redis);
    assert!((b.budget.reserved_usd().await - 0.75).abs() < 1e-9);
    a.budget.settle(first, Spent::default()).await;
    assert!((b.budget.reserved_usd().await - 0.5).abs() < 1e-9);

    // A renewed reservation outlives the TTL; one never settled (its replica killed) expires.
    let kept = guard(b.budget.acquire(10, 0.125)).await;
    drop(second);
    drop(a);
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        b.budget.renew(&kept).await;
    }
    assert!((b.budget.reserved_usd().await - 0.125).abs() < 1e-9);
    b.budget.settle(kept, Spent::default()).await;
    assert_eq!(b.budget.reserved_usd().await, 0.0);
}

#[tokio::test]
async fn without_redis_a_replica_counts_its_own_calls_in_flight() {
    let mut server = RedisServer::start();
    let cache = cache_config(&server.url());
    let config = budget_config(|b| b.daily_cost_usd = 10.0);
    let a = Replica::new("replica-a", &config, &cache);
    let on_redis = guard(a.budget.acquire(10, 0.25)).await;
    assert_eq!(on_redis.source, Source::Redis);
    server.stop();
    let local = guard(a.budget.acquire(10, 0.5)).await;
    assert_eq!(local.source, Source::Local);
    assert!((a.budget.reserved_usd().await - 0.75).abs() < 1e-9);
    drop(local);
    a.budget.settle(on_redis, Spent::default()).await;
    assert_eq!(a.budget.reserved_usd().await, 0.0);
}

#[tokio::test]
async fn the_daily_cap_counts_the_cluster_s_calls_in_flight_beside_the_settled_spend() {
    use profile_worker::cache::GraphCache;
    use profile_worker::consumer::{Delivery, Handler, Outcome};
    use profile_worker::outcome::Dependency;
    use profile_worker::pipeline::{Pipeline, Settings};
    use profile_worker::store::JobStore;

    let db = support::db::TestDb::migrated().await;
    db.exec(support::pipeline::COLLECTION).await;
    let fake = FakeBedrock::start().await;
    let url = shared_url();
    let cache = cache_config(&url);
    let config = budget_config(|b| b.daily_cost_usd = 1.0);
    let here = Replica::new("replica-a", &config, &cache);
    let elsewhere = Replica::new("replica-b", &config, &cache);
    let generator_config = fake.generator_config();
    let bedrock =
        BedrockGenerator::new(&sdk_config().await, &generator_config, here.metrics.clone())
            .returning_throttles();
    let generator =
        BudgetedGenerator::new(Arc::new(bedrock), here.budget.clone(), &generator_config);
    let mut defaults = profile_worker::config::defaults();
    defaults.generator = generator_config;
    let graph_cache = GraphCache::with_key_prefix(
        &cache,
        here.metrics.clone(),
        &Health::new(),
        &support::redis::unique_prefix(),
    )
    .expect("cache builds");
    let store = Arc::new(db.store());
    let pipeline = Pipeline::new(
        store.clone(),
        graph_cache,
        Arc::new(generator),
        here.metrics.clone(),
        Settings::from_config(&defaults),
    );
    let deliver = |entity: &str| Delivery {
        message_id: uuid::Uuid::new_v4().to_string(),
        body: support::pipeline::message(None, entity, true),
        receive_count: 1,
        attempt: 1,
        is_last_attempt: false,
    };

    // One profile settles its spend; then the cap sits $0.40 above it.
    assert_eq!(
        guard(pipeline.handle(&deliver("author:20"))).await,
        Outcome::Done
    );
    let spent = store.spend_today().await.unwrap().cost_usd;
    assert!(spent > 0.0);
    db.exec(&format!(
        "INSERT INTO app_config (key, value) VALUES ('budget.daily_cost_usd', '{}')",
        spent + 0.4
    ))
    .await;

    // A call running on another replica reserves $0.50: spend plus reservations pass the cap.
    let running = guard(elsewhere.budget.acquire(10, 0.5)).await;
    let sent = fake.requests().len();
    let held = guard(pipeline.handle(&deliver("author:1"))).await;
    assert!(
        matches!(
            held,
            Outcome::Hold {
                dependency: Dependency::DailyCostCap,
                ..
            }
        ),
        "{held:?}"
    );
    assert_eq!(fake.requests().len(), sent, "no call at the cap");

    // Settled without spending (it failed at once): the message goes through.
    elsewhere.budget.settle(running, Spent::default()).await;
    assert_eq!(
        guard(pipeline.handle(&deliver("author:1"))).await,
        Outcome::Done
    );
    assert_eq!(here.budget.reserved_usd().await, 0.0, "every call settled");
}
