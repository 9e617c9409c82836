//! Console page cost (issue 18 goal: the page renders in < 50 ms of server time with 1,000 jobs
//! in the table). Measures rendering the HTML page and the `/api/overview` JSON from a gathered
//! overview of 1,000 jobs (a tenth with failures in their error log), 20 in-flight deliveries,
//! 10 dead letters and a full hour of chart points.
//!
//! With `PW_TEST_DATABASE_URL` set (scripts/bench sets it), also the database side of the same
//! page: the console's job query over 1,000 jobs with 60 recorded generations each, and today's
//! spend, in a scratch database that is dropped afterwards.
//!
//! Run: `cargo bench --bench console` (add `-- --quick` for a short run).

use std::collections::BTreeMap;
use std::hint::black_box;

use chrono::{Duration, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use profile_worker::console::api::Overview;
use profile_worker::console::dlq::{DeadLetter, Depth};
use profile_worker::console::history::Point;
use profile_worker::console::inflight::{Item, ReplicaSet};
use profile_worker::console::page;
use profile_worker::console::queries;
use profile_worker::jobs::JobReport;
use profile_worker::model::{Job, JobStatus};
use profile_worker::store::{JobStore, PgStore, UsageTotals, migrate};

fn overview(jobs: usize) -> Overview {
    let now = Utc::now();
    let statuses = [
        JobStatus::InProgress,
        JobStatus::Completed,
        JobStatus::Failed,
        JobStatus::Cancelled,
    ];
    let reports = (0..jobs)
        .map(|i| {
            let created = now - Duration::minutes(i as i64 * 7);
            let failed = (i % 10 == 0) as i32 * 3;
            let job = Job {
                id: format!("{:08x}-job-<{i}>", i * 2654435761usize),
                status: statuses[i % statuses.len()],
                owner_id: 1,
                total_entities: 70,
                succeeded: (i % 70) as i32,
                failed,
                error_log: (failed > 0).then(|| {
                    (0..failed)
                        .map(|k| {
                            format!("author:{k}: Bedrock refused: <ValidationException> & more")
                        })
                        .collect::<Vec<_>>()
                        .join("\n")
                }),
                completed_at: (i % 4 != 0).then_some(created + Duration::minutes(5)),
                created_at: created,
                updated_at: created,
            };
            let usage = UsageTotals {
                profiles: 60,
                calls: 240,
                input_tokens: 1_200_000,
                output_tokens: 300_000,
                cost_usd: 8.1234,
                ..UsageTotals::default()
            };
            JobReport::new(job, usage, now)
        })
        .collect();
    let items = (0..20)
        .map(|i| Item {
            message_id: format!("m-{i}"),
            entity: format!("author:{i}"),
            job_id: Some("job".into()),
            attempt: 1,
            started_at: now - Duration::seconds(i),
        })
        .collect();
    let depth = Depth {
        url: "http://sqs/q".into(),
        visible: 120,
        in_flight: 5,
        delayed: 2,
    };
    Overview {
        generated_at: now,
        replica: "replica-1".into(),
        actions_enabled: true,
        jobs: reports,
        in_flight: vec![ReplicaSet {
            replica: "replica-1".into(),
            published_at: now,
            items,
        }],
        queue: Some(depth.clone()),
        dead_letter: Some(depth),
        dead_letters: (0..10)
            .map(|i| DeadLetter {
                message_id: format!("d-{i}"),
                sent_at: Some(now),
                receive_count: 3,
                attributes: BTreeMap::from([
                    ("outcome".to_string(), "poison".to_string()),
                    ("reason".to_string(), "body is not JSON <x>".to_string()),
                ]),
                body_preview: "{not json <script>alert(1)</script>".into(),
                body_bytes: 40,
            })
            .collect(),
        redrive: None,
        spend_today: None,
        daily_cap_usd: Some(50.0),
        paused: Vec::new(),
        chart: (0..61)
            .map(|m| Point {
                at: now - Duration::minutes(60 - m),
                per_minute: (m % 13) as f64 * 4.0,
                mean_seconds: Some(1.0 + (m % 7) as f64 / 3.0),
            })
            .collect(),
        problems: Vec::new(),
    }
}

fn render(c: &mut Criterion) {
    let o = overview(1000);
    let html = page::render(&o, "/");
    assert!(html.matches("<tr data-job=").count() == 1000);
    c.bench_function("console_page_1000_jobs", |b| {
        b.iter(|| black_box(page::render(black_box(&o), "/")))
    });
    c.bench_function("console_overview_json_1000_jobs", |b| {
        b.iter(|| black_box(o.to_json().to_string()))
    });
}

/// A scratch database holding 1,000 jobs and 60,000 generation rows; dropped on drop.
struct Scratch {
    admin: String,
    name: String,
    url: String,
}

impl Scratch {
    async fn seeded(admin: &str) -> Scratch {
        use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
        let name = format!("pw_bench_{}", std::process::id());
        let mut conn = AsyncPgConnection::establish(admin)
            .await
            .expect("admin connection");
        // Two statements: a multi-statement string runs in one transaction, which DROP DATABASE
        // refuses.
        for sql in [
            format!("DROP DATABASE IF EXISTS {name}"),
            format!("CREATE DATABASE {name}"),
        ] {
            conn.batch_execute(&sql)
                .await
                .expect("create the scratch database");
        }
        let mut url = url::Url::parse(admin).expect("admin URL");
        url.set_path(&name);
        let url = url.to_string();
        migrate::run_migrations(&url, "profile_worker", migrate::Mode::Standalone)
            .await
            .expect("migrations");
        let mut db = AsyncPgConnection::establish(&url)
            .await
            .expect("scratch connection");
        db.batch_execute(
            "SET search_path = profile_worker, public;
             INSERT INTO users (id, cognito_sub) VALUES (1, 'bench');
             INSERT INTO profile_generation_jobs
                 (id, status, owner_id, total_entities, succeeded, failed, created_at, completed_at)
             SELECT gen_random_uuid()::text,
                    CASE WHEN i % 4 = 0 THEN 'in_progress' ELSE 'completed' END, 1, 70, 60, 3,
                    now() - i * interval '7 minutes', now()
             FROM generate_series(1, 1000) i;
             INSERT INTO profile_generations (entity_type, entity_id, job_id, model_id, calls,
                 input_tokens, output_tokens, latency_ms, cost_usd)
             SELECT 'author', g, j.id, 'm', 4, 20000, 5000, 1000, 0.1
             FROM generate_series(1, 60) g, profile_generation_jobs j;",
        )
        .await
        .expect("seed");
        db.batch_execute("VACUUM ANALYZE").await.expect("vacuum");
        Scratch {
            admin: admin.to_owned(),
            name,
            url,
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            tokio::runtime::Runtime::new().unwrap().block_on(async {
                use diesel_async::{AsyncConnection, AsyncPgConnection, SimpleAsyncConnection};
                if let Ok(mut conn) = AsyncPgConnection::establish(&admin).await {
                    let _ = conn
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            })
        })
        .join();
    }
}

fn database(c: &mut Criterion) {
    let Ok(admin) = std::env::var("PW_TEST_DATABASE_URL") else {
        eprintln!("PW_TEST_DATABASE_URL unset: skipping the console's database benches");
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let scratch = rt.block_on(Scratch::seeded(&admin));
    let mut config = profile_worker::config::defaults().database;
    config.url = profile_worker::config::SecretUrl::new(scratch.url.clone());
    let store = PgStore::connect(&config).expect("pool");
    let jobs = rt
        .block_on(queries::jobs(&store, 1000))
        .expect("jobs query");
    assert_eq!(jobs.len(), 1000);
    assert!(jobs.iter().all(|(_, usage)| usage.profiles == 60));
    c.bench_function("console_jobs_query_1000_jobs", |b| {
        b.iter(|| black_box(rt.block_on(queries::jobs(&store, 1000)).unwrap()))
    });
    c.bench_function("console_spend_today_query", |b| {
        b.iter(|| black_box(rt.block_on(store.spend_today()).unwrap()))
    });
    drop(store);
    drop(scratch);
}

criterion_group!(benches, render, database);
criterion_main!(benches);
