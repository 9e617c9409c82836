//! The end-to-end load benchmark behind `scripts/bench` (docs/benchmarks.md): the real
//! `profile-worker` binary against PostgreSQL, Redis, fauxqs and a fake Bedrock with a fixed
//! latency per call, which runs in this process (the daemon is a separate process).
//!
//! Phases, all on one fresh database (the reference fixture collection) and fresh fauxqs queues:
//! 1. start-up to `/ready` with migrations already applied, several starts, median;
//! 2. drain: N `force` messages (every one calls the fake) at concurrency C; wall time against
//!    the ideal `Σ message time / C` (every slot always busy), in-flight and resident memory
//!    sampled every ~50 ms;
//! 3. skip path: M messages for profiles the drain just made fresh, queued before the daemon
//!    starts; messages per second;
//! 4. the SQS server's own limit: a raw SDK receive + batch-delete loop on the same server.
//!
//! Writes `benchmarks.md`, `results.json` and `inflight.csv` (plotted by `scripts/bench`). Exits
//! non-zero only when the run itself is broken (a daemon that does not start, messages not
//! processed as expected); a missed goal is reported, not an error.

#[allow(dead_code)]
#[path = "../tests/support/bedrock.rs"]
mod bedrock;
#[allow(dead_code)]
#[path = "support/daemon.rs"]
mod daemon;
#[allow(dead_code)]
#[path = "../tests/support/db.rs"]
mod db;
#[allow(dead_code)]
#[path = "../tests/support/sqs.rs"]
mod sqs;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use clap::Parser;
use daemon::{Daemon, Scrape};
use profile_worker::cache::GraphCache;
use profile_worker::config::{CacheConfig, SecretUrl};
use profile_worker::generate::CallKind;
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::model::{CollectionEntity, EntityRef, EntityType, JobStatus};
use profile_worker::pipeline::message::Message;
use profile_worker::store::{JobStore, ProfileStore};
use serde_json::json;

/// The Redis database the daemon under test uses, so its graph never lands in the database
/// other test runs share.
const REDIS_DB: &str = "9";
/// Time from receipt to outcome, summed over messages.
const MESSAGE_SECONDS: &str = "profile_worker_message_duration_seconds_sum";
/// Metrics and /proc sampling period during the drain.
const SAMPLE_EVERY: Duration = Duration::from_millis(50);

#[derive(Parser, Debug)]
#[command(about = "profile-worker end-to-end load benchmark (run it through scripts/bench)")]
struct Args {
    /// The profile-worker binary under test.
    #[arg(long)]
    binary: PathBuf,
    /// "release" or "debug": how the binary was built (reported).
    #[arg(long, default_value = "release")]
    build_profile: String,
    /// Directory for benchmarks.md, results.json, inflight.csv and daemon logs.
    #[arg(long)]
    out: PathBuf,
    /// File name of the in-flight plot the report embeds (written by scripts/bench).
    #[arg(long, default_value = "benchmarks-inflight.png")]
    plot_name: String,
    /// Messages in the drain phase.
    #[arg(long, default_value_t = 1000)]
    messages: usize,
    /// Fake Bedrock latency per call, milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// The daemon's concurrency.
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// Messages in the skip-path phase.
    #[arg(long, default_value_t = 3000)]
    skip_messages: usize,
    /// Messages in the raw SQS loop.
    #[arg(long, default_value_t = 3000)]
    raw_messages: usize,
    /// Daemon starts measured for start-up time.
    #[arg(long, default_value_t = 7)]
    starts: usize,
    /// "name: version" lines for the report (written by scripts/bench).
    #[arg(long)]
    versions: Option<PathBuf>,
    /// Criterion's output directory; the report lists the pipeline micro-benchmarks found there.
    #[arg(long)]
    criterion_dir: Option<PathBuf>,
    /// The command that reproduces this run (reported).
    #[arg(long, default_value = "scripts/bench")]
    command: String,
    /// Only measure time to profile: this many ad-hoc messages for one entity, one after the
    /// other (`scripts/bench latency`); 0 runs the load benchmark instead.
    #[arg(long, default_value_t = 0)]
    latency_runs: usize,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out).with_context(|| format!("create {:?}", args.out))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(run(&args))?;
    if args.latency_runs > 0 {
        return Ok(());
    }
    let report = report(&args, &results);
    std::fs::write(args.out.join("benchmarks.md"), report)?;
    let mut csv = String::from("seconds,in_flight,processed,rss_mib\n");
    for s in &results.samples {
        let _ = writeln!(
            csv,
            "{:.3},{},{},{:.2}",
            s.t,
            s.in_flight,
            s.processed,
            mib(s.rss_kib)
        );
    }
    std::fs::write(args.out.join("inflight.csv"), csv)?;
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_string_pretty(&results.json(&args))?,
    )?;
    eprintln!(
        "[bench] report in {}",
        args.out.join("benchmarks.md").display()
    );
    Ok(())
}

/// One sample of the daemon during the drain.
struct Sample {
    /// Seconds since the first message was sent.
    t: f64,
    in_flight: f64,
    processed: f64,
    rss_kib: u64,
}

#[derive(Default)]
struct Results {
    starts: Vec<Duration>,
    starts_migrating: Vec<Duration>,
    entities: usize,
    idle_rss_kib: u64,
    /// (RssAnon, RssFile) when idle: heap and stacks versus mapped binary and libraries.
    idle_split_kib: (u64, u64),
    drain_wall: Duration,
    drain_enqueue: Duration,
    fake_calls: usize,
    /// Σ of the drained messages' handling times (`profile_worker_message_duration_seconds`).
    message_seconds: f64,
    peak_hwm_kib: u64,
    peak_sampled_rss_kib: u64,
    samples: Vec<Sample>,
    skip_elapsed: Duration,
    raw_batch10: Duration,
    raw_batch5: Duration,
}

impl Results {
    /// The drain's wall time had every slot been busy from the first send to the last outcome.
    /// Calls within a message run side by side, so `calls · L / C` (the ideal when they ran one
    /// after another) no longer bounds the wall time; the daemon's own histogram does.
    fn ideal(&self, args: &Args) -> Duration {
        Duration::from_secs_f64(self.message_seconds / args.concurrency as f64)
    }

    fn efficiency(&self, args: &Args) -> f64 {
        self.ideal(args).as_secs_f64() / self.drain_wall.as_secs_f64()
    }

    fn skip_rate(&self, args: &Args) -> f64 {
        args.skip_messages as f64 / self.skip_elapsed.as_secs_f64()
    }

    fn raw_rate(&self, args: &Args, elapsed: Duration) -> f64 {
        args.raw_messages as f64 / elapsed.as_secs_f64()
    }

    /// Mean in-flight and share of samples with every slot busy, while the queue still held
    /// more than `concurrency` messages (the tail cannot fill the slots).
    fn occupancy(&self, args: &Args) -> (f64, f64) {
        let busy: Vec<&Sample> = self
            .samples
            .iter()
            .filter(|s| {
                s.t >= 0.0
                    && s.processed > 0.0
                    && s.processed + (args.concurrency as f64) < args.messages as f64
            })
            .collect();
        if busy.is_empty() {
            return (0.0, 0.0);
        }
        let n = busy.len() as f64;
        let mean = busy.iter().map(|s| s.in_flight).sum::<f64>() / n;
        let full = busy
            .iter()
            .filter(|s| s.in_flight >= args.concurrency as f64)
            .count() as f64
            / n;
        (mean, full)
    }

    fn json(&self, args: &Args) -> serde_json::Value {
        let (mean, full) = self.occupancy(args);
        json!({
            "build_profile": args.build_profile,
            "messages": args.messages,
            "latency_ms": args.latency_ms,
            "concurrency": args.concurrency,
            "fake_calls": self.fake_calls,
            "drain_wall_seconds": self.drain_wall.as_secs_f64(),
            "drain_ideal_seconds": self.ideal(args).as_secs_f64(),
            "drain_message_seconds": self.message_seconds,
            "drain_efficiency": self.efficiency(args),
            "in_flight_mean": mean,
            "in_flight_full_share": full,
            "skip_messages": args.skip_messages,
            "skip_messages_per_second": self.skip_rate(args),
            "sqs_raw_batch10_messages_per_second": self.raw_rate(args, self.raw_batch10),
            "sqs_raw_batch5_messages_per_second": self.raw_rate(args, self.raw_batch5),
            "idle_rss_mib": mib(self.idle_rss_kib),
            "peak_rss_mib": mib(self.peak_hwm_kib),
            "startup_median_seconds": median(&self.starts).as_secs_f64(),
            "startup_with_migrate_check_median_seconds": median(&self.starts_migrating).as_secs_f64(),
        })
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn median(values: &[Duration]) -> Duration {
    let mut sorted = values.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

fn env_or(name: &str, default: &str) -> String {
    std::env::var(name)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_string())
}

async fn run(args: &Args) -> Result<Results> {
    ensure!(
        args.binary.is_file(),
        "binary {:?} does not exist",
        args.binary
    );
    ensure!(
        args.concurrency > 0 && args.messages > args.concurrency,
        "need more messages than slots"
    );
    let fauxqs = std::env::var("PW_TEST_FAUXQS_URL")
        .context("PW_TEST_FAUXQS_URL is unset: run scripts/bench (it starts fauxqs)")?;
    let mut redis = url::Url::parse(&env_or("PW_TEST_REDIS_URL", "redis://127.0.0.1:6379"))?;
    redis.set_path(REDIS_DB);
    let redis = redis.to_string();

    eprintln!("[bench] preparing database (fixture collection) and queues");
    let database = db::TestDb::with_fixture().await;
    let entities = database
        .store()
        .collection_entities()
        .await
        .context("read the collection's entities")?;
    ensure!(!entities.is_empty(), "the fixture has no entities");
    let fake = bedrock::FakeBedrock::start().await;
    fake.set_latency(Duration::from_millis(args.latency_ms));
    let queue = sqs::TestQueue::create(&fauxqs, 5).await;
    let graph_cache = bench_cache(&redis)?;
    graph_cache.invalidate().await;

    // fauxqs names its queues `http://sqs.<region>.127.0.0.1:<port>/…`, which is not a valid URL;
    // the SDK sends every request to the endpoint anyway, so give the daemon the endpoint's host.
    let queue_url = format!(
        "{}{}",
        queue.endpoint.trim_end_matches('/'),
        url::Url::parse(&queue.url)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| format!("/000000000000/{}", queue.name))
    );
    let env: Vec<(String, String)> = [
        ("DATABASE_URL", database.url.as_str()),
        ("REDIS_URL", redis.as_str()),
        ("PROFILE_WORKER_QUEUE__URL", queue_url.as_str()),
        (
            "PROFILE_WORKER_QUEUE__ENDPOINT_URL",
            queue.endpoint.as_str(),
        ),
        ("PROFILE_WORKER_GENERATOR__BACKEND", "bedrock"),
        ("PROFILE_WORKER_GENERATOR__ENDPOINT_URL", &fake.url()),
        (
            "PROFILE_WORKER_CONSUMER__CONCURRENCY",
            &args.concurrency.to_string(),
        ),
        // Short long polls keep each SIGTERM quick; a long poll returns as soon as messages
        // arrive, so it does not change what is measured.
        ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "2"),
        ("PROFILE_WORKER_LOG__FORMAT", "json"),
        ("PROFILE_WORKER_LOG__LEVEL", "info"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();

    let mut results = Results {
        entities: entities.len(),
        ..Results::default()
    };
    if args.latency_runs > 0 {
        let outcome = latency_phase(args, &env, &database, &queue, &fake).await;
        graph_cache.invalidate().await;
        return outcome.map(|()| results);
    }
    let outcome = async {
        startup_phase(args, &env, &mut results).await?;
        drain_phase(args, &env, &queue, &fake, &entities, &mut results).await?;
        skip_phase(
            args,
            &database,
            &env,
            &queue,
            &fake,
            &entities,
            &mut results,
        )
        .await?;
        raw_sqs_phase(args, &fauxqs, &mut results).await
    }
    .await;
    graph_cache.invalidate().await;
    outcome?;
    Ok(results)
}

fn bench_cache(redis: &str) -> Result<GraphCache> {
    let config = CacheConfig {
        redis_url: SecretUrl::new(redis),
        local_ttl_seconds: 0,
        redis_ttl_seconds: 300,
        redis_timeout_ms: 1000,
        lock_wait_ms: 0,
        tls_ca_file: String::new(),
    };
    GraphCache::new(&config, std::sync::Arc::new(Metrics::new()), &Health::new())
        .map_err(|e| anyhow::anyhow!("graph cache on {redis}: {e}"))
}

async fn startup_phase(args: &Args, env: &[(String, String)], results: &mut Results) -> Result<()> {
    for (migrate, into) in [("false", 0), ("true", 1)] {
        for i in 0..args.starts {
            let mut env = env.to_vec();
            env.push((
                "PROFILE_WORKER_DATABASE__MIGRATE_ON_START".into(),
                migrate.into(),
            ));
            let mut daemon = spawn(args, &env, &format!("startup-{migrate}-{i}"))?;
            let ready = daemon.wait_ready(Duration::from_secs(60)).await?;
            daemon.stop(Duration::from_secs(30)).await?;
            eprintln!(
                "[bench] start-up {} (migrate_on_start={migrate}): {:.3} s",
                i + 1,
                ready.as_secs_f64()
            );
            if into == 0 {
                results.starts.push(ready);
            } else {
                results.starts_migrating.push(ready);
            }
        }
    }
    Ok(())
}

fn body(job_id: Option<&str>, entity: &CollectionEntity, force: bool) -> String {
    Message {
        job_id: job_id.map(str::to_string),
        entity: entity.entity,
        force,
    }
    .body()
}

#[derive(diesel::QueryableByName)]
struct EntityRow {
    #[diesel(sql_type = diesel::sql_types::Text)]
    entity: String,
}

/// Time to profile: one ad-hoc message at a time for the publisher with the most qualifying
/// books (a hub, so it gets its three narratives), from the send until the daemon counts it
/// done; the median over `latency_runs` and the fake's calls per message. Writes latency.json.
async fn latency_phase(
    args: &Args,
    env: &[(String, String)],
    database: &db::TestDb,
    queue: &sqs::TestQueue,
    fake: &bedrock::FakeBedrock,
) -> Result<()> {
    use diesel_async::RunQueryDsl;
    let row: EntityRow = diesel::sql_query(
        "SELECT 'publisher:' || publisher_id AS entity FROM books \
         WHERE status IN ('ON_HAND', 'IN_TRANSIT') AND publisher_id IS NOT NULL \
         GROUP BY publisher_id ORDER BY count(*) DESC, publisher_id LIMIT 1",
    )
    .get_result(&mut database.conn().await)
    .await
    .context("pick the hub publisher")?;
    let entity: EntityRef = row.entity.parse().map_err(anyhow::Error::msg)?;
    let body = Message {
        job_id: None,
        entity,
        force: false,
    }
    .body();
    let daemon = spawn(args, env, "latency")?;
    let mut daemon = daemon;
    daemon.wait_ready(Duration::from_secs(60)).await?;
    eprintln!(
        "[bench] latency: {} messages for {entity}, fake latency {} ms",
        args.latency_runs, args.latency_ms
    );
    let mut times = Vec::new();
    let mut calls = Vec::new();
    for run in 0..args.latency_runs {
        let done_before = daemon.metrics().await?.processed("done");
        let requests_before = fake.requests().len();
        let t0 = Instant::now();
        send_all(queue, vec![body.clone()]).await?;
        loop {
            if daemon.metrics().await?.processed("done") > done_before {
                break;
            }
            ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "message {run} not done after 120 s; daemon log {}",
                daemon.log.display()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(t0.elapsed());
        calls.push(fake.requests().len() - requests_before);
        eprintln!(
            "[bench] latency: run {run}: {:.3} s, {} calls",
            times[run].as_secs_f64(),
            calls[run]
        );
    }
    wait_queue_empty(queue).await?;
    daemon.stop(Duration::from_secs(60)).await?;
    let median_time = median(&times);
    let result = json!({
        "binary": args.binary,
        "build_profile": args.build_profile,
        "entity": entity.to_string(),
        "latency_ms": args.latency_ms,
        "runs": args.latency_runs,
        "median_seconds": median_time.as_secs_f64(),
        "seconds": times.iter().map(Duration::as_secs_f64).collect::<Vec<_>>(),
        "calls_per_message": calls,
    });
    std::fs::write(
        args.out.join("latency.json"),
        serde_json::to_string_pretty(&result)?,
    )?;
    println!("{result}");
    Ok(())
}

async fn drain_phase(
    args: &Args,
    env: &[(String, String)],
    queue: &sqs::TestQueue,
    fake: &bedrock::FakeBedrock,
    entities: &[CollectionEntity],
    results: &mut Results,
) -> Result<()> {
    let mut daemon = spawn(args, env, "drain")?;
    daemon.wait_ready(Duration::from_secs(60)).await?;
    // Let start-up allocations settle before reading the idle figure.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let idle = daemon.memory()?;
    results.idle_rss_kib = idle.rss;
    results.idle_split_kib = (idle.anon, idle.file);
    let calls_before = fake.requests().len();
    let seconds_before = daemon.metrics().await?.value(MESSAGE_SECONDS);

    let bodies: Vec<String> = (0..args.messages)
        .map(|i| body(None, &entities[i % entities.len()], true))
        .collect();
    eprintln!(
        "[bench] drain: {} messages, fake latency {} ms, concurrency {}",
        args.messages, args.latency_ms, args.concurrency
    );
    let t0 = Instant::now();
    send_all(queue, bodies).await?;
    results.drain_enqueue = t0.elapsed();

    // Hang guard: ten times the ideal of five calls per message, plus a minute.
    let limit = Duration::from_millis(args.latency_ms) * (args.messages * 50) as u32
        / args.concurrency as u32
        + Duration::from_secs(60);
    let mut next_report = Instant::now();
    let done_at = loop {
        let sample = daemon.sample(t0).await?;
        let processed = sample.processed;
        results.peak_sampled_rss_kib = results.peak_sampled_rss_kib.max(sample.rss_kib);
        let t = sample.t;
        results.samples.push(sample);
        if processed >= args.messages as f64 {
            break t;
        }
        if t0.elapsed() > limit {
            bail!(
                "drain incomplete after {limit:?}: {processed} of {} processed; daemon log {}",
                args.messages,
                daemon.log.display()
            );
        }
        if next_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "[bench] drain: {processed} of {} after {t:.0} s",
                args.messages
            );
            next_report = Instant::now();
        }
        tokio::time::sleep(SAMPLE_EVERY).await;
    };
    results.drain_wall = Duration::from_secs_f64(done_at);
    results.peak_hwm_kib = daemon.memory()?.hwm;

    let counts = daemon.metrics().await?;
    let done = counts.processed("done");
    ensure!(
        done == args.messages as f64 && counts.processed_total() == done,
        "drain: expected {} messages done, got {:?}; daemon log {}",
        args.messages,
        counts.outcomes(),
        daemon.log.display()
    );
    let requests = fake.requests();
    let biographies = requests[calls_before..]
        .iter()
        .filter(|r| r.kind == Some(CallKind::Biography))
        .count();
    ensure!(
        biographies == args.messages,
        "drain: every message must call the fake once for its biography; {biographies} did"
    );
    results.fake_calls = requests.len() - calls_before;
    results.message_seconds = counts.value(MESSAGE_SECONDS) - seconds_before;
    wait_queue_empty(queue).await?;
    daemon.stop(Duration::from_secs(60)).await?;
    eprintln!(
        "[bench] drain: {:.2} s for {} fake calls (ideal {:.2} s, efficiency {:.3})",
        results.drain_wall.as_secs_f64(),
        results.fake_calls,
        results.ideal(args).as_secs_f64(),
        results.efficiency(args)
    );
    Ok(())
}

async fn skip_phase(
    args: &Args,
    database: &db::TestDb,
    env: &[(String, String)],
    queue: &sqs::TestQueue,
    fake: &bedrock::FakeBedrock,
    entities: &[CollectionEntity],
    results: &mut Results,
) -> Result<()> {
    // Entities the drain generated, so each profile is now fresh. The messages belong to a batch
    // job: a message without one is a person's request and would regenerate regardless.
    let fresh = &entities[..entities.len().min(args.messages)];
    database
        .exec("INSERT INTO users (id, cognito_sub, role) VALUES (1, 'bench', 'admin') ON CONFLICT DO NOTHING")
        .await;
    let job = database
        .store()
        .create_job(1, fresh.len() as i32, JobStatus::InProgress)
        .await
        .context("create the skip-path job")?;
    let bodies: Vec<String> = (0..args.skip_messages)
        .map(|i| body(Some(&job.id), &fresh[i % fresh.len()], false))
        .collect();
    send_all(queue, bodies).await?;
    let calls_before = fake.requests().len();
    eprintln!(
        "[bench] skip path: {} fresh-profile messages queued",
        args.skip_messages
    );

    let mut daemon = spawn(args, env, "skip")?;
    daemon.wait_ready(Duration::from_secs(60)).await?;
    let t0 = Instant::now();
    let limit = Duration::from_secs(60) + Duration::from_millis(args.skip_messages as u64 * 20);
    loop {
        let counts = daemon.metrics().await?;
        if counts.processed_total() >= args.skip_messages as f64 {
            results.skip_elapsed = t0.elapsed();
            ensure!(
                counts.processed("skipped") == args.skip_messages as f64,
                "skip path: expected every message skipped, got {:?}",
                counts.outcomes()
            );
            break;
        }
        ensure!(
            t0.elapsed() < limit,
            "skip path incomplete after {limit:?}: {:?}; daemon log {}",
            counts.outcomes(),
            daemon.log.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    ensure!(
        fake.requests().len() == calls_before,
        "skip path: fresh profiles must not call the model"
    );
    wait_queue_empty(queue).await?;
    daemon.stop(Duration::from_secs(60)).await?;
    eprintln!(
        "[bench] skip path: {:.0} messages/s",
        results.skip_rate(args)
    );
    Ok(())
}

async fn raw_sqs_phase(args: &Args, fauxqs: &str, results: &mut Results) -> Result<()> {
    for batch in [10, 5] {
        let queue = sqs::TestQueue::create(fauxqs, 5).await;
        let bodies = (0..args.raw_messages)
            .map(|i| {
                let id = i32::try_from(i + 1).expect("fewer messages than i32::MAX");
                Message {
                    job_id: None,
                    entity: EntityRef::new(EntityType::Author, id),
                    force: false,
                }
                .body()
            })
            .collect();
        send_all(&queue, bodies).await?;
        let t0 = Instant::now();
        let mut deleted = 0;
        while deleted < args.raw_messages {
            ensure!(
                t0.elapsed() < Duration::from_secs(120),
                "raw SQS loop stalled at {deleted} messages"
            );
            let out = queue
                .client
                .receive_message()
                .queue_url(&queue.url)
                .max_number_of_messages(batch)
                .wait_time_seconds(1)
                .send()
                .await
                .context("raw ReceiveMessage")?;
            let entries: Vec<DeleteMessageBatchRequestEntry> = out
                .messages()
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle().unwrap_or_default())
                        .build()
                        .expect("id and handle set")
                })
                .collect();
            if entries.is_empty() {
                continue;
            }
            deleted += entries.len();
            queue
                .client
                .delete_message_batch()
                .queue_url(&queue.url)
                .set_entries(Some(entries))
                .send()
                .await
                .context("raw DeleteMessageBatch")?;
        }
        let elapsed = t0.elapsed();
        if batch == 10 {
            results.raw_batch10 = elapsed;
        } else {
            results.raw_batch5 = elapsed;
        }
        eprintln!(
            "[bench] raw SQS receive({batch})+delete: {:.0} messages/s",
            results.raw_rate(args, elapsed)
        );
    }
    Ok(())
}

/// Sends every body in batches of ten, eight batches at a time.
async fn send_all(queue: &sqs::TestQueue, bodies: Vec<String>) -> Result<()> {
    let batches: Vec<Vec<String>> = bodies.chunks(10).map(<[String]>::to_vec).collect();
    for wave in batches.chunks(8) {
        let mut tasks = tokio::task::JoinSet::new();
        for batch in wave {
            let client = queue.client.clone();
            let url = queue.url.clone();
            let entries: Vec<SendMessageBatchRequestEntry> = batch
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_body(b)
                        .build()
                        .expect("id and body set")
                })
                .collect();
            tasks.spawn(async move {
                let out = client
                    .send_message_batch()
                    .queue_url(url)
                    .set_entries(Some(entries))
                    .send()
                    .await?;
                anyhow::ensure!(out.failed().is_empty(), "send failed: {:?}", out.failed());
                Ok::<_, anyhow::Error>(())
            });
        }
        while let Some(sent) = tasks.join_next().await {
            sent??;
        }
    }
    Ok(())
}

async fn wait_queue_empty(queue: &sqs::TestQueue) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let counts = queue.counts().await;
        if counts == (0, 0) {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "queue still holds (visible, in flight) = {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Resident set figures in KiB.
struct Memory {
    rss: u64,
    hwm: u64,
    anon: u64,
    file: u64,
}

/// A daemon of this run, logging to `<out>/daemon-<name>.log`.
fn spawn(args: &Args, env: &[(String, String)], name: &str) -> Result<Daemon> {
    Daemon::spawn(
        &args.binary,
        env,
        args.out.join(format!("daemon-{name}.log")),
    )
}

/// What only the load benchmark reads of its daemons.
impl Daemon {
    /// Resident memory from /proc/<pid>/status.
    fn memory(&self) -> Result<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
                .with_context(|| format!("{name} missing from /proc status"))
        };
        Ok(Memory {
            rss: field("VmRSS:")?,
            hwm: field("VmHWM:")?,
            anon: field("RssAnon:")?,
            file: field("RssFile:")?,
        })
    }

    async fn sample(&self, t0: Instant) -> Result<Sample> {
        let scrape = self.metrics().await?;
        Ok(Sample {
            t: t0.elapsed().as_secs_f64(),
            in_flight: scrape.value("profile_worker_in_flight"),
            processed: scrape.processed_total(),
            rss_kib: self.memory()?.rss,
        })
    }
}

impl Scrape {
    fn outcomes(&self) -> Vec<(String, f64)> {
        let mut all: Vec<(String, f64)> = self
            .0
            .iter()
            .filter_map(|(k, v)| {
                let outcome = k
                    .strip_prefix("profile_worker_messages_processed_total{outcome=\"")?
                    .strip_suffix("\"}")?;
                Some((outcome.to_string(), *v))
            })
            .collect();
        all.sort_by(|a, b| a.0.cmp(&b.0));
        all
    }

    fn processed_total(&self) -> f64 {
        self.outcomes().iter().map(|(_, v)| v).sum()
    }
}

fn machine() -> Vec<(String, String)> {
    let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    let memory = read("/proc/meminfo")
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map(|kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0))
        .unwrap_or_else(|| "unknown".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "unknown".into());
    vec![
        ("CPU".into(), cpu),
        ("Cores (nproc)".into(), cores),
        ("Memory".into(), memory),
        (
            "Kernel".into(),
            read("/proc/sys/kernel/osrelease").trim().to_string(),
        ),
    ]
}

/// Mean time in nanoseconds of one criterion bench, from `<bench dir>/new/estimates.json`.
fn criterion_mean(bench: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(bench.join("new/estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// Mean time of the criterion benches this report lists, from `<dir>/<id>/new/estimates.json`.
fn criterion_figures(dir: &Path) -> Vec<(String, String)> {
    let ids = [
        ("message_parse/job", "parse a message with a job id"),
        ("message_parse/force", "parse a `force` message"),
        ("message_parse/poison_not_json", "reject a non-JSON body"),
        (
            "pipeline_skip_fresh_memory",
            "pipeline skip path, fresh profile, memory store",
        ),
    ];
    let mut found: Vec<(String, String)> = ids
        .iter()
        .filter_map(|(id, what)| Some((what.to_string(), nanos(criterion_mean(&dir.join(id))?))))
        .collect();
    // The sanitiser bench is named after the text's size.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if let Some(bytes) = name
                .strip_prefix("sanitize_markers_")
                .and_then(|s| s.strip_suffix("_bytes"))
                && let Some(mean) = criterion_mean(&entry.path())
            {
                found.push((
                    format!("sanitise markers in a {bytes}-byte text"),
                    nanos(mean),
                ));
            }
        }
    }
    found
}

fn nanos(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

fn report(args: &Args, r: &Results) -> String {
    let mut out = String::new();
    let (mean_in_flight, full_share) = r.occupancy(args);
    let efficiency = r.efficiency(args);
    let skip = r.skip_rate(args);
    let raw10 = r.raw_rate(args, r.raw_batch10);
    let raw5 = r.raw_rate(args, r.raw_batch5);
    let start = median(&r.starts);
    let calls_per_message = r.fake_calls as f64 / args.messages as f64;
    let binds = if skip >= 300.0 {
        format!(
            "neither: the daemon exceeds the goal; the raw SQS loop reaches {raw10:.0} msg/s on the same server"
        )
    } else if skip >= 0.8 * raw5 {
        format!(
            "the SQS server: a bare receive+delete loop with the same batch size reaches only {raw5:.0} msg/s"
        )
    } else {
        format!(
            "the daemon: the SQS server alone does {raw10:.0} msg/s, so the per-message work (four PostgreSQL reads, receive and delete) binds"
        )
    };

    let _ = writeln!(out, "# Benchmarks\n");
    let _ = writeln!(
        out,
        "Generated by `{}` from a {} build of the daemon. Speed here is overhead and utilisation: \
         the model call dominates, so the daemon must keep every slot busy, add almost nothing \
         per message and stay small. These figures come from one run on the machine below; they \
         are benchmarks, not timed tests.\n",
        args.command, args.build_profile
    );

    let _ = writeln!(out, "## Figures against goals\n");
    let _ = writeln!(out, "| Figure | Measured | Goal | |");
    let _ = writeln!(out, "|---|---|---|---|");
    let _ = writeln!(
        out,
        "| Drain efficiency ({} messages, L = {} ms, concurrency {}): Σ message time ÷ (concurrency · wall) | {:.3} ({:.2} s wall vs {:.2} s ideal) | ≥ 0.97 | {} |",
        args.messages,
        args.latency_ms,
        args.concurrency,
        efficiency,
        r.drain_wall.as_secs_f64(),
        r.ideal(args).as_secs_f64(),
        verdict(efficiency >= 0.97)
    );
    let _ = writeln!(
        out,
        "| Slots busy during the drain (mean in-flight; share of samples with all {} busy) | {:.2}; {:.0} % | slots stay full | {} |",
        args.concurrency,
        mean_in_flight,
        full_share * 100.0,
        verdict(mean_in_flight >= 0.97 * args.concurrency as f64)
    );
    let _ = writeln!(
        out,
        "| Skip-path throughput (all profiles fresh, one process, concurrency {}) | {:.0} msg/s | ≥ 300 msg/s or the SQS server's limit | {} |",
        args.concurrency,
        skip,
        verdict(skip >= 300.0 || skip >= 0.8 * raw5)
    );
    let _ = writeln!(
        out,
        "| SQS server limit: raw SDK receive(10) + batch delete loop | {raw10:.0} msg/s | (reference) | |"
    );
    let _ = writeln!(
        out,
        "| SQS server limit: raw SDK receive(5) + batch delete loop | {raw5:.0} msg/s | (reference) | |"
    );
    let _ = writeln!(
        out,
        "| Resident memory, idle (VmRSS; anonymous {:.1} + file-backed {:.1}) | {:.1} MiB | ≤ 20 MB | {} |",
        mib(r.idle_split_kib.0),
        mib(r.idle_split_kib.1),
        mib(r.idle_rss_kib),
        verdict(r.idle_rss_kib as f64 * 1024.0 <= 20e6)
    );
    if let Some(dir) = &args.criterion_dir
        && let Some(ns) = criterion_mean(&dir.join("cache/redis_hit/5000"))
    {
        let _ = writeln!(
            out,
            "| Redis cache hit, 5,000-book graph, value unchanged since it was parsed (criterion, `benches/graph.rs`) | {} | ≤ 3 ms | {} |",
            nanos(ns),
            verdict(ns <= 3e6)
        );
    }
    if let Ok(meta) = std::fs::metadata(&args.binary) {
        let _ = writeln!(
            out,
            "| Binary size ({} build) | {:.1} MiB | (reference) | |",
            args.build_profile,
            meta.len() as f64 / 1_048_576.0
        );
    }
    let _ = writeln!(
        out,
        "| Resident memory, peak during the drain (VmHWM) | {:.1} MiB | ≤ 60 MB | {} |",
        mib(r.peak_hwm_kib),
        verdict(r.peak_hwm_kib as f64 * 1024.0 <= 60e6)
    );
    let _ = writeln!(
        out,
        "| Start-up to `/ready`, migrations applied (median of {}) | {:.3} s | ≤ 0.2 s | {} |",
        r.starts.len(),
        start.as_secs_f64(),
        verdict(start <= Duration::from_millis(200))
    );
    let _ = writeln!(
        out,
        "| Same with `migrate_on_start = true` (pending-migration check; median of {}) | {:.3} s | (reference) | |",
        r.starts_migrating.len(),
        median(&r.starts_migrating).as_secs_f64()
    );
    let _ = writeln!(out);
    let _ = writeln!(out, "What binds the skip path: {binds}.\n");
    let _ = writeln!(
        out,
        "Idle memory is {:.1} MiB anonymous (heap, stacks) and {:.1} MiB file-backed (code pages \
         of the binary and its libraries, shared and reclaimable); the file-backed part tracks \
         the binary's size (AWS SDK, diesel, rustls).\n",
        mib(r.idle_split_kib.0),
        mib(r.idle_split_kib.1)
    );

    let _ = writeln!(out, "## In-flight during the drain\n");
    let _ = writeln!(
        out,
        "![in-flight messages over time]({})\n\n`profile_worker_in_flight` scraped from `/metrics` every {} ms \
         (samples: `inflight.csv`). Mean in-flight {:.2} of {} while more than {} messages were left; \
         the ramp-down at the end is the last messages finishing.\n",
        args.plot_name,
        SAMPLE_EVERY.as_millis(),
        mean_in_flight,
        args.concurrency,
        args.concurrency
    );

    let _ = writeln!(out, "## Method\n");
    let _ = writeln!(
        out,
        "- **Stack**: the real `profile-worker run` binary ({} build) as its own process, PostgreSQL \
         (a fresh database with the reference fixture collection: {} entities with qualifying books), \
         Redis (database {REDIS_DB}, emptied of the graph before and after), fauxqs as the SQS server (moto slows \
         down with queue depth and would measure itself), and a fake Bedrock Runtime speaking the \
         Converse wire format with a fixed latency L on every call (`tests/support/bedrock.rs`, \
         served from the benchmark process). Production settings except `consumer.wait_seconds = 2` \
         (keeps each shutdown short; a long poll returns as soon as messages arrive).",
        args.build_profile, r.entities
    );
    let _ = writeln!(
        out,
        "- **Drain**: with the daemon idle and ready, {} messages with `\"force\": true` are sent (every \
         message regenerates, so every one calls the fake: discovery, biography and up to three \
         narratives — {:.2} calls per message here, {} in all). Discovery runs beside the biography \
         and the narratives beside each other, so a message takes about two round trips of L \
         however many calls it makes (mean message time here {:.3} s), and `calls · L / \
         concurrency` — the brief's `{} · L / {}` with one call per message — would overstate \
         the ideal. The ideal is instead the daemon's own `Σ message time / concurrency`: the wall \
         time had every slot been busy throughout. Wall time runs from the first \
         send to the scrape that shows every message processed (sending took {:.2} s). The run \
         checks that every message ended `done`, that each asked for exactly one biography, and \
         that the queue ends empty.",
        args.messages,
        calls_per_message,
        r.fake_calls,
        r.message_seconds / args.messages as f64,
        args.messages,
        args.concurrency,
        r.drain_enqueue.as_secs_f64()
    );
    let _ = writeln!(
        out,
        "- **Memory**: `VmRSS` from `/proc/<pid>/status` three seconds after `/ready` with an empty \
         queue (idle), and `VmHWM` (the high-water mark) right after the drain (peak). The largest \
         sampled VmRSS during the drain was {:.1} MiB.",
        mib(r.peak_sampled_rss_kib)
    );
    let _ = writeln!(
        out,
        "- **Skip path**: {} messages (no job, no `force`) for entities whose profiles the drain just \
         generated are queued before a new daemon starts; the rate is messages over the time from \
         `/ready` to the scrape showing all processed (scraped every 10 ms). Every message must end \
         `skipped` without a model call. In the same run, a bare SDK loop (receive up to 10, or 5 as \
         the daemon asks with 5 free slots, then `DeleteMessageBatch`) drains {} messages from a fresh \
         queue on the same fauxqs: the server's own limit for one client.",
        args.skip_messages, args.raw_messages
    );
    let _ = writeln!(
        out,
        "- **Start-up**: {} starts of the daemon against the already-migrated database, timed from \
         spawn to the first `200` from `/ready` (polled every 2 ms), each stopped with SIGTERM; the \
         median is reported (all: {}).\n",
        r.starts.len(),
        r.starts
            .iter()
            .map(|d| format!("{:.3}", d.as_secs_f64()))
            .collect::<Vec<_>>()
            .join(", ")
    );

    if let Some(dir) = &args.criterion_dir {
        let figures = criterion_figures(dir);
        if !figures.is_empty() {
            let _ = writeln!(
                out,
                "## Micro-benchmarks (criterion, `benches/pipeline.rs`)\n"
            );
            let _ = writeln!(out, "| What | Mean time |");
            let _ = writeln!(out, "|---|---|");
            for (what, time) in figures {
                let _ = writeln!(out, "| {what} | {time} |");
            }
            let _ = writeln!(
                out,
                "\nGraph build, JSON and cache-hit costs: `cargo bench --bench graph`.\n"
            );
        }
    }

    let _ = writeln!(out, "## Machine and versions\n");
    let _ = writeln!(out, "| | |");
    let _ = writeln!(out, "|---|---|");
    for (k, v) in machine() {
        let _ = writeln!(out, "| {k} | {v} |");
    }
    if let Some(path) = &args.versions
        && let Ok(text) = std::fs::read_to_string(path)
    {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (k, v) = line.split_once(':').unwrap_or((line, ""));
            let _ = writeln!(out, "| {} | {} |", k.trim(), v.trim());
        }
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "## Reproduce\n");
    let _ = writeln!(
        out,
        "```sh\nscripts/bench            # full run (release build), writes tools/bench/\n\
         scripts/bench --quick    # 100 messages, debug build, as CI runs it (about a minute warm)\n\
         scripts/bench --publish  # full run, rewrites this page and its plot\n```\n\n\
         `scripts/bench` starts (or installs) PostgreSQL, Redis and fauxqs the way `scripts/test` \
         does, builds the daemon and this benchmark (`examples/load_bench.rs`), runs the criterion \
         pipeline and graph benches (full runs), then the load benchmark, and plots `inflight.csv` with gnuplot. \
         It exits non-zero only when the run is broken, never for a missed goal."
    );
    out
}
