//! The Bedrock budget benchmark (`scripts/bench budget`, docs/benchmarks.md): three
//! `profile-worker run` daemons share one queue, Redis and a fake Bedrock whose account quota
//! throttles above a rate; each scenario is a budget setting. A last phase kills a replica that
//! holds call leases and records how soon the others use the capacity again.

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

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use clap::Parser;
use daemon::{Daemon, Scrape};
use profile_worker::pipeline::message::Message;
use profile_worker::store::ProfileStore;
use serde_json::json;

const REPLICAS: usize = 3;

#[derive(Parser, Debug)]
#[command(about = "profile-worker Bedrock budget benchmark (run it through scripts/bench budget)")]
struct Args {
    #[arg(long)]
    binary: PathBuf,
    #[arg(long)]
    out: PathBuf,
    /// Messages per scenario.
    #[arg(long, default_value_t = 600)]
    messages: usize,
    #[arg(long, default_value_t = 5)]
    concurrency: usize,
    /// The fake account's quota, calls per minute.
    #[arg(long, default_value_t = 120)]
    quota_rpm: u64,
    /// Latency of every fake call, milliseconds.
    #[arg(long, default_value_t = 200)]
    latency_ms: u64,
    /// Scenarios to run, comma separated: budget, none, adaptive, kill.
    #[arg(long, default_value = "budget,none,adaptive,kill")]
    scenarios: String,
    /// The command line, for the report.
    #[arg(long, default_value = "scripts/bench budget")]
    command: String,
}

fn main() -> Result<()> {
    let args = Args::parse();
    std::fs::create_dir_all(&args.out)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let results = runtime.block_on(run(&args))?;
    std::fs::write(
        args.out.join("budget.json"),
        serde_json::to_string_pretty(&results)?,
    )?;
    eprintln!(
        "[bench] results in {}",
        args.out.join("budget.json").display()
    );
    Ok(())
}

/// The shared stack: database with the fixture collection, fauxqs, Redis, the fake Bedrock.
struct Stack {
    database: db::TestDb,
    fake: bedrock::FakeBedrock,
    fauxqs: String,
    redis: String,
    entities: Vec<profile_worker::model::CollectionEntity>,
}

async fn run(args: &Args) -> Result<serde_json::Value> {
    ensure!(
        args.binary.is_file(),
        "binary {:?} does not exist",
        args.binary
    );
    let fauxqs = std::env::var("PW_TEST_FAUXQS_URL")
        .context("PW_TEST_FAUXQS_URL is unset: run scripts/bench budget (it starts fauxqs)")?;
    let redis = std::env::var("PW_TEST_REDIS_URL").unwrap_or("redis://127.0.0.1:6379".into());
    let database = db::TestDb::with_fixture().await;
    let entities = database.store().collection_entities().await?;
    ensure!(!entities.is_empty(), "the fixture has no entities");
    let fake = bedrock::FakeBedrock::start().await;
    fake.set_latency(Duration::from_millis(args.latency_ms));
    let stack = Stack {
        database,
        fake,
        fauxqs,
        redis,
        entities,
    };
    let mut out = serde_json::Map::new();
    out.insert(
        "setup".into(),
        json!({
            "replicas": REPLICAS, "concurrency": args.concurrency, "messages": args.messages,
            "quota_rpm": args.quota_rpm, "latency_ms": args.latency_ms, "command": args.command,
        }),
    );
    for scenario in args.scenarios.split(',').map(str::trim) {
        let result = match scenario {
            "budget" => {
                let rpm = args.quota_rpm.to_string();
                drain(
                    args,
                    &stack,
                    scenario,
                    &[("BUDGET__REQUESTS_PER_MINUTE", &rpm)],
                )
                .await?
            }
            "none" => drain(args, &stack, scenario, &[]).await?,
            "adaptive" => drain(args, &stack, scenario, &[("BUDGET__ADAPTIVE", "true")]).await?,
            "kill" => kill(args, &stack).await?,
            other => bail!("unknown scenario {other:?}"),
        };
        out.insert(scenario.to_string(), result);
    }
    Ok(serde_json::Value::Object(out))
}

/// The environment of every daemon of one scenario; `extra` keys get the config prefix.
fn environment(
    args: &Args,
    stack: &Stack,
    queue: &sqs::TestQueue,
    prefix: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let queue_url = format!(
        "{}{}",
        queue.endpoint.trim_end_matches('/'),
        url::Url::parse(&queue.url)
            .map(|u| u.path().to_string())
            .unwrap_or_else(|_| format!("/000000000000/{}", queue.name))
    );
    let mut env: Vec<(String, String)> = [
        ("DATABASE_URL", stack.database.url.as_str()),
        ("REDIS_URL", stack.redis.as_str()),
        ("PROFILE_WORKER_QUEUE__URL", queue_url.as_str()),
        (
            "PROFILE_WORKER_QUEUE__ENDPOINT_URL",
            queue.endpoint.as_str(),
        ),
        ("PROFILE_WORKER_GENERATOR__BACKEND", "bedrock"),
        ("PROFILE_WORKER_GENERATOR__ENDPOINT_URL", &stack.fake.url()),
        (
            "PROFILE_WORKER_CONSUMER__CONCURRENCY",
            &args.concurrency.to_string(),
        ),
        ("PROFILE_WORKER_CONSUMER__WAIT_SECONDS", "2"),
        ("PROFILE_WORKER_BUDGET__KEY_PREFIX", prefix),
        ("PROFILE_WORKER_BUDGET__REPLICAS", &REPLICAS.to_string()),
        ("PROFILE_WORKER_LOG__LEVEL", "info"),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    for (k, v) in extra {
        env.push((format!("PROFILE_WORKER_{k}"), v.to_string()));
    }
    env
}

fn bodies(count: usize, stack: &Stack) -> Vec<String> {
    (0..count)
        .map(|i| {
            Message {
                job_id: None,
                entity: stack.entities[i % stack.entities.len()].entity,
                force: true,
            }
            .body()
        })
        .collect()
}

/// One scenario: three daemons drain `messages` forced messages under the fake quota.
async fn drain(
    args: &Args,
    stack: &Stack,
    name: &str,
    extra: &[(&str, &str)],
) -> Result<serde_json::Value> {
    // maxReceiveCount 2, as in production: a message received twice and retried is dead-lettered.
    let queue = sqs::TestQueue::create(&stack.fauxqs, 2).await;
    let prefix = format!("bench:{}:{name}:", uuid::Uuid::new_v4().simple());
    let env = environment(args, stack, &queue, &prefix, extra);
    let mut daemons = Vec::new();
    for i in 0..REPLICAS {
        daemons.push(Daemon::spawn(
            &args.binary,
            &env,
            args.out.join(format!("daemon-budget-{name}-{i}.log")),
        )?);
    }
    for d in &mut daemons {
        d.wait_ready(Duration::from_secs(60)).await?;
    }
    stack
        .fake
        .set_quota(Some(bedrock::Quota::requests_per_minute(args.quota_rpm)));
    eprintln!(
        "[bench] {name}: {} messages, {REPLICAS} replicas x {}, quota {}/min",
        args.messages, args.concurrency, args.quota_rpm
    );
    let t0 = Instant::now();
    for chunk in bodies(args.messages, stack).chunks(10) {
        let entries = chunk
            .iter()
            .enumerate()
            .map(|(i, b)| {
                aws_sdk_sqs::types::SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(b)
                    .build()
                    .expect("id and body")
            })
            .collect();
        queue
            .client
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(entries))
            .send()
            .await?;
    }
    let limit = Duration::from_secs(3600);
    let mut next_report = Instant::now();
    let (wall, scrapes) = loop {
        let mut scrapes = Vec::new();
        for d in &daemons {
            scrapes.push(d.metrics().await?);
        }
        let finished: f64 = scrapes.iter().map(Scrape::finished).sum();
        // SQS itself dead-letters a message received once too often: an empty queue ends it too.
        if finished >= args.messages as f64 || (finished > 0.0 && queue.counts().await == (0, 0)) {
            break (t0.elapsed(), scrapes);
        }
        ensure!(
            t0.elapsed() < limit,
            "{name}: {finished} of {} after {limit:?}",
            args.messages
        );
        if next_report.elapsed() > Duration::from_secs(15) {
            let log = stack.fake.quota_log();
            eprintln!(
                "[bench] {name}: {finished} of {} after {:.0} s; calls accepted {}, throttled {}",
                args.messages,
                t0.elapsed().as_secs_f64(),
                log.accepted,
                log.throttled
            );
            next_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = stack.fake.quota_log();
    stack.fake.set_quota(None);
    for d in daemons {
        d.stop(Duration::from_secs(60)).await?;
    }
    let dead_letters = queue.drain_dead_letters().await.len();
    let sum = |f: &dyn Fn(&Scrape) -> f64| scrapes.iter().map(f).sum::<f64>();
    let received = sum(&|s| s.value("profile_worker_messages_received_total"));
    let outcomes: HashMap<String, f64> = ["done", "skipped", "retry", "failed", "poison"]
        .iter()
        .map(|o| (o.to_string(), sum(&|s| s.processed(o))))
        .collect();
    let accepted_times: Vec<f64> = log
        .calls
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(t, _)| t.as_secs_f64())
        .collect();
    let span = accepted_times.last().copied().unwrap_or(0.0)
        - accepted_times.first().copied().unwrap_or(0.0);
    let achieved = if span > 0.0 {
        (accepted_times.len() as f64 - 1.0) / span * 60.0
    } else {
        0.0
    };
    let total = (log.accepted + log.throttled) as f64;
    let result = json!({
        "wall_seconds": wall.as_secs_f64(),
        "accepted": log.accepted,
        "throttled": log.throttled,
        "throttled_share": if total > 0.0 { log.throttled as f64 / total } else { 0.0 },
        "achieved_rpm": achieved,
        "rate_vs_quota": achieved / args.quota_rpm as f64,
        "receives": received,
        "receives_per_message": received / args.messages as f64,
        "outcomes": outcomes,
        "dead_letters": dead_letters,
        "calls": log.calls.iter().map(|(t, ok)| json!([t.as_secs_f64(), ok])).collect::<Vec<_>>(),
    });
    eprintln!(
        "[bench] {name}: wall {:.1} s, throttled {}/{} ({:.2} %), rate {:.1}/min ({:.1} % of quota), receives/message {:.3}, dead letters {}",
        wall.as_secs_f64(),
        log.throttled,
        log.accepted + log.throttled,
        result["throttled_share"].as_f64().unwrap_or(0.0) * 100.0,
        achieved,
        achieved / args.quota_rpm as f64 * 100.0,
        received / args.messages as f64,
        dead_letters
    );
    Ok(result)
}

/// Leases as the binding limit (6 across the cluster, 1 s calls, no quota): once every replica
/// is busy, kill -9 one holding leases and sample the survivors' leases until they hold all six.
async fn kill(args: &Args, stack: &Stack) -> Result<serde_json::Value> {
    const CAP: f64 = 6.0;
    const TTL: u64 = 10;
    let queue = sqs::TestQueue::create(&stack.fauxqs, 5).await;
    let prefix = format!("bench:{}:kill:", uuid::Uuid::new_v4().simple());
    let ttl = TTL.to_string();
    let env = environment(
        args,
        stack,
        &queue,
        &prefix,
        &[
            ("BUDGET__MAX_CONCURRENT_CALLS", "6"),
            ("BUDGET__LEASE_TTL_SECONDS", &ttl),
        ],
    );
    stack.fake.set_latency(Duration::from_millis(1000));
    let mut daemons = Vec::new();
    for i in 0..REPLICAS {
        daemons.push(Daemon::spawn(
            &args.binary,
            &env,
            args.out.join(format!("daemon-budget-kill-{i}.log")),
        )?);
    }
    for d in &mut daemons {
        d.wait_ready(Duration::from_secs(60)).await?;
    }
    for b in bodies(200, stack) {
        queue.send(&b).await;
    }
    let t0 = Instant::now();
    let mut samples = Vec::new();
    let mut killed_at = None;
    let mut victim_leases = 0.0;
    let mut refilled_after = None;
    while t0.elapsed() < Duration::from_secs(90) {
        let t = t0.elapsed().as_secs_f64();
        let mut leases = Vec::new();
        for d in &daemons {
            leases.push(match d.metrics().await {
                Ok(s) => s.value("profile_worker_budget_leases"),
                Err(_) => 0.0,
            });
        }
        if killed_at.is_none() && t > 15.0 && leases[0] > 0.0 && leases.iter().sum::<f64>() >= CAP {
            victim_leases = leases[0];
            daemons[0].kill9();
            killed_at = Some(t);
            eprintln!("[bench] kill: replica 0 killed at {t:.1} s holding {victim_leases} leases");
        }
        let survivors: f64 = leases[1..].iter().sum();
        if let Some(k) = killed_at
            && refilled_after.is_none()
            && t > k
            && survivors >= CAP
        {
            refilled_after = Some(t - k);
            eprintln!(
                "[bench] kill: survivors hold all {CAP} leases {:.1} s after the kill",
                t - k
            );
        }
        samples.push(json!([t, leases[0], survivors]));
        if refilled_after.is_some_and(|r| t > killed_at.unwrap_or(0.0) + r + 10.0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    stack
        .fake
        .set_latency(Duration::from_millis(args.latency_ms));
    for d in daemons.into_iter().skip(1) {
        d.stop(Duration::from_secs(60)).await?;
    }
    Ok(json!({
        "cap": CAP, "lease_ttl_seconds": TTL, "killed_at": killed_at,
        "victim_leases": victim_leases, "refilled_after_seconds": refilled_after,
        "samples": samples,
    }))
}

impl Scrape {
    /// Messages that reached a final outcome here (a retry comes back, so it is not final).
    fn finished(&self) -> f64 {
        ["done", "skipped", "failed", "poison"]
            .iter()
            .map(|o| self.processed(o))
            .sum()
    }
}
