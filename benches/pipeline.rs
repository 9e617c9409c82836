//! Per-message costs the daemon adds on top of the model: parsing a queue message, sanitising
//! entity markers in a ~2 KB generated text, and the whole skip path of the pipeline (fresh
//! profile, no model call) against the memory store. The end-to-end load figures come from
//! `scripts/bench` (see docs/benchmarks.md).
//!
//! Run: `cargo bench --bench pipeline` (add `-- --quick` for a short run).

use std::collections::HashSet;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use criterion::{Criterion, criterion_group, criterion_main};
use profile_worker::cache::GraphCache;
use profile_worker::config::{CacheConfig, GeneratorBackend, SecretUrl};
use profile_worker::generate::hygiene::sanitize_markers;
use profile_worker::generate::offline::OfflineGenerator;
use profile_worker::health::Health;
use profile_worker::metrics::Metrics;
use profile_worker::model::{AuthorRow, EntityRef, EntityType, JobStatus};
use profile_worker::pipeline::message::{Message, parse};
use profile_worker::pipeline::{self, Pipeline, Processed, SkipReason};
use profile_worker::store::memory::BookRecord;
use profile_worker::store::{
    GenerationUsage, JobStore, MemoryStore, ProfileStore, ProfileUnit, ProfileWrite,
};

const MAX_BODY_BYTES: usize = 65_536;

fn parse_benches(c: &mut Criterion) {
    let mut group = c.benchmark_group("message_parse");
    let bodies = [
        (
            "job",
            r#"{"job_id":"4f9c2a1e-7b3d-4e8a-9c1f-2d6b8e0a5f37","entity_type":"author","entity_id":42}"#,
        ),
        (
            "legacy_owner_id",
            r#"{"job_id":null,"entity_type":"publisher","entity_id":7,"owner_id":3}"#,
        ),
        (
            "force",
            r#"{"entity_type":"binder","entity_id":2147483647,"force":true}"#,
        ),
    ];
    for (name, body) in bodies {
        parse(body, MAX_BODY_BYTES).expect("bench bodies are valid");
        group.bench_function(name, |b| {
            b.iter(|| parse(black_box(body), MAX_BODY_BYTES).unwrap())
        });
    }
    group.bench_function("poison_not_json", |b| {
        b.iter(|| parse(black_box("{\"entity_type\": author"), MAX_BODY_BYTES).unwrap_err())
    });
    group.finish();
}

/// A ~2 KB biography with valid, invalid and unwrapped markers, like a model reply.
fn marked_text() -> (String, HashSet<String>) {
    let valid: HashSet<String> = (1..=15).map(|id| format!("author:{id}")).collect();
    let mut text = String::new();
    let mut i = 0;
    while text.len() < 2_000 {
        i += 1;
        match i % 4 {
            0 => text.push_str(&format!(
                "In {} he met {{{{entity:author:{}|Charles Dickens}}}} at the offices in the Strand. ",
                1840 + i,
                i % 15 + 1
            )),
            1 => text.push_str(&format!(
                "His printer, {{{{entity:publisher:{}|Bradbury and Evans}}}}, issued the parts monthly. ",
                900 + i
            )),
            2 => text.push_str(
                "Later letters to entity:author:William Makepeace Thackeray show a cooling friendship. ",
            ),
            _ => text.push_str(
                "The bindings, in half morocco with marbled boards, survive in several copies. ",
            ),
        }
    }
    (text, valid)
}

fn marker_benches(c: &mut Criterion) {
    let (text, valid) = marked_text();
    let cleaned = sanitize_markers(&text, &valid);
    assert!(
        cleaned.contains("{{entity:author:") && !cleaned.contains("{{entity:publisher:"),
        "valid markers kept, invalid ones replaced"
    );
    c.bench_function(&format!("sanitize_markers_{}_bytes", text.len()), |b| {
        b.iter(|| sanitize_markers(black_box(&text), &valid))
    });
}

/// A memory store with one user, one author, one qualifying book and a profile generated after it.
async fn store_with_fresh_profile(author: EntityRef) -> Arc<MemoryStore> {
    let store = MemoryStore::new();
    store.add_user(1);
    store.add_author(AuthorRow {
        id: author.id,
        name: "Charles Dickens".into(),
        birth_year: Some(1812),
        death_year: Some(1870),
        tier: None,
        image_url: None,
    });
    store.add_book(BookRecord {
        id: 1,
        title: "Bleak House".into(),
        author_id: Some(author.id),
        publisher_id: None,
        binder_id: None,
        status: "ON_HAND".into(),
        year_start: Some(1853),
        updated_at: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
    });
    store
        .commit_profile(ProfileUnit {
            entity: author,
            profile: ProfileWrite {
                bio_summary: Some("A novelist.".into()),
                personal_stories: serde_json::json!([]),
                connection_narratives: serde_json::json!({}),
                relationship_stories: serde_json::Map::new(),
                ai_connections: Vec::new(),
                model_version: "offline".into(),
            },
            ai_connections: Vec::new(),
            usage: GenerationUsage {
                model_id: "offline".into(),
                calls: 0,
                input_tokens: 0,
                output_tokens: 0,
                latency_ms: 0,
                cost_usd: 0.0,
                cache_read_tokens: 0,
                cache_write_tokens: 0,
            },
            job_id: None,
            attempt: 1,
        })
        .await
        .expect("memory store commits");
    Arc::new(store)
}

fn skip_path_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // The offline generator writes model `offline`; under the Bedrock default such a profile
    // would be stale (a dry run's profile is replaced by a real one).
    let mut config = profile_worker::config::defaults();
    config.generator.backend = GeneratorBackend::Offline;
    let metrics = Arc::new(Metrics::new());
    let cache = GraphCache::new(
        &CacheConfig {
            redis_url: SecretUrl::new(""),
            ..config.cache.clone()
        },
        metrics.clone(),
        &Health::new(),
    )
    .expect("in-process cache");
    let author = EntityRef {
        entity_type: EntityType::Author,
        id: 1,
    };
    let store = rt.block_on(store_with_fresh_profile(author));
    // A batch message: one without a job is a person's request and regenerates regardless.
    let job = rt
        .block_on(store.create_job(1, 1, JobStatus::InProgress))
        .expect("memory store creates the job");
    let pipeline = Pipeline::new(
        store,
        cache,
        Arc::new(OfflineGenerator::new(Duration::ZERO, metrics.clone())),
        metrics,
        pipeline::Settings::from_config(&config),
    );
    let msg = Message {
        job_id: Some(job.id),
        entity: author,
        force: false,
    };
    assert_eq!(
        rt.block_on(pipeline.process(&msg, 1)).expect("skip path"),
        Processed::Skipped(SkipReason::ProfileCurrent)
    );
    c.bench_function("pipeline_skip_fresh_memory", |b| {
        b.iter(|| rt.block_on(pipeline.process(black_box(&msg), 1)).unwrap())
    });
}

criterion_group!(benches, parse_benches, marker_benches, skip_path_benches);
criterion_main!(benches);
