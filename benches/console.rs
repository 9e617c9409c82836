//! Console page cost (issue 18 goal: the page renders in < 50 ms of server time with 1,000 jobs
//! in the table). Measures rendering the HTML page and the `/api/overview` JSON from a gathered
//! overview of 1,000 jobs (a tenth with failures in their error log), 20 in-flight deliveries,
//! 10 dead letters and a full hour of chart points.
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
use profile_worker::jobs::JobReport;
use profile_worker::model::{Job, JobStatus};
use profile_worker::store::UsageTotals;

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

criterion_group!(benches, render);
criterion_main!(benches);
