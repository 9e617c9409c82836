//! BedrockGenerator against the fake Converse server: request shape, retry policy, parsing of
//! every call kind, cross-link blocks and token accounting (docs/compatibility.md, "Output hygiene", adapted to Converse).

mod support;

use std::sync::Arc;

use profile_worker::config::GeneratorConfig;
use profile_worker::generate::bedrock::BedrockGenerator;
use profile_worker::generate::{
    Allowance, BiographyRequest, CallKind, DiscoveryRequest, Generator, GeneratorError,
    NarrativeStyle, NarrativeTrigger, PairRequest, RelationshipStoryRequest, prompts,
};
use profile_worker::metrics::Metrics;
use profile_worker::model::{Book, CollectionEntity, Entity};
use serde_json::json;
use support::bedrock::{FakeBedrock, FakeReply, sdk_config};
use support::entities::{ce, dickens, entity};

const HAIKU: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

struct Harness {
    fake: FakeBedrock,
    generator: BedrockGenerator,
    metrics: Arc<Metrics>,
}

async fn harness_with(configure: impl FnOnce(&mut GeneratorConfig)) -> Harness {
    let fake = FakeBedrock::start().await;
    let mut config = fake.generator_config();
    configure(&mut config);
    let metrics = Arc::new(Metrics::new());
    let generator = BedrockGenerator::new(&sdk_config().await, &config, metrics.clone());
    Harness {
        fake,
        generator,
        metrics,
    }
}

async fn harness() -> Harness {
    harness_with(|_| {}).await
}

fn bio_request(e: Entity, titles: &[&str], connections: Vec<CollectionEntity>) -> BiographyRequest {
    BiographyRequest {
        model: HAIKU.into(),
        allowance: Allowance::unlimited(),
        entity: e,
        books: titles
            .iter()
            .enumerate()
            .map(|(i, t)| Book {
                id: i as i32 + 1,
                title: t.to_string(),
                year_start: None,
            })
            .collect(),
        connections,
    }
}

fn pair(shared: &[&str], connections: Vec<CollectionEntity>) -> PairRequest {
    PairRequest {
        model: HAIKU.into(),
        allowance: Allowance::unlimited(),
        source: dickens(),
        target: entity("publisher:2", "Chapman & Hall"),
        connection_type: "publisher".into(),
        shared_titles: shared.iter().map(|s| s.to_string()).collect(),
        connections,
    }
}

fn story(shared: &[&str], connections: Vec<CollectionEntity>) -> RelationshipStoryRequest {
    RelationshipStoryRequest {
        pair: pair(shared, connections),
        trigger: NarrativeTrigger::CrossEraBridge,
    }
}

fn requests_total(m: &Metrics, call: &str, result: &str) -> u64 {
    m.generator_requests
        .with_label_values(&[call, result])
        .get()
}

#[tokio::test]
async fn converse_request_has_system_one_user_message_and_per_call_budgets() {
    let h = harness().await;
    let universe = vec![
        ce("author:5", "Charles Dickens"),
        ce("author:8", "Wilkie Collins"),
    ];
    h.generator
        .discover_connections(&DiscoveryRequest {
            model: HAIKU.into(),
            allowance: Allowance::unlimited(),
            entity: universe[0].clone(),
            universe,
        })
        .await
        .unwrap();
    h.generator
        .biography(&bio_request(dickens(), &["Bleak House"], vec![]))
        .await
        .unwrap();
    h.generator
        .connection_narrative(&pair(&[], vec![]))
        .await
        .unwrap();
    h.generator
        .relationship_story(&story(&[], vec![]))
        .await
        .unwrap();

    let requests = h.fake.requests();
    let kinds: Vec<_> = requests.iter().map(|r| (r.kind, r.max_tokens)).collect();
    assert_eq!(
        kinds,
        [
            (Some(CallKind::Discovery), Some(2048)),
            (Some(CallKind::Biography), Some(1024)),
            (Some(CallKind::Narrative), Some(200)),
            (Some(CallKind::RelationshipStory), Some(1024)),
        ]
    );
    for r in &requests {
        assert_eq!(r.model_id, HAIKU);
        assert_eq!(r.message_count, 1);
        assert_eq!(r.role, "user");
        assert_eq!(r.temperature, None, "no temperature unless configured");
        assert!(!r.user.is_empty());
        assert_eq!(Some(r.system.as_str()), r.kind.map(|k| k.system_prompt()));
    }
    assert_eq!(requests[1].system, prompts::BIOGRAPHY_SYSTEM);
}

#[tokio::test]
async fn configured_temperature_is_sent() {
    let h = harness_with(|c| c.temperature = Some(0.5)).await;
    h.generator
        .biography(&bio_request(dickens(), &[], vec![]))
        .await
        .unwrap();
    assert_eq!(h.fake.requests()[0].temperature, Some(0.5));
}

#[tokio::test]
async fn each_retryable_error_is_retried_then_succeeds() {
    for (error, result) in [
        (FakeReply::throttling(), "throttled"),
        (FakeReply::unavailable(), "retryable"),
        (FakeReply::model_not_ready(), "retryable"),
        (FakeReply::internal(), "retryable"),
        (FakeReply::error(502, "BadGateway"), "retryable"),
        (FakeReply::error(429, ""), "throttled"),
    ] {
        let h = harness().await;
        h.fake.push(CallKind::Biography, [error.clone()]);
        let reply = h
            .generator
            .biography(&bio_request(dickens(), &[], vec![]))
            .await
            .unwrap_or_else(|e| panic!("{error:?}: {e}"));
        assert!(reply.value.is_usable());
        assert_eq!(h.fake.requests().len(), 2, "{error:?}");
        assert_eq!(reply.usage.calls, 2);
        assert_eq!(
            (reply.usage.input_tokens, reply.usage.output_tokens),
            (100, 20)
        );
        assert_eq!(
            requests_total(&h.metrics, "biography", result),
            1,
            "{error:?}"
        );
        assert_eq!(requests_total(&h.metrics, "biography", "ok"), 1);
    }
}

#[tokio::test]
async fn persistent_throttling_spends_max_attempts_then_is_transient() {
    let h = harness_with(|c| c.max_attempts = 4).await;
    h.fake
        .set_default(CallKind::Narrative, FakeReply::throttling());
    let err = h
        .generator
        .connection_narrative(&pair(&[], vec![]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(
        err.is_unavailable(),
        "throttling on every attempt is the service's: {err}"
    );
    assert_eq!(h.fake.requests().len(), 4);
    assert_eq!(err.usage().calls, 4);
    assert!(err.to_string().contains("ThrottlingException"), "{err}");
    assert_eq!(requests_total(&h.metrics, "narrative", "throttled"), 4);
}

#[tokio::test]
async fn validation_is_permanent_and_access_denied_unavailable_without_retry() {
    for (error, unavailable) in [
        (FakeReply::validation(), false),
        (FakeReply::access_denied(), true),
    ] {
        let h = harness().await;
        h.fake.set_default(CallKind::Biography, error.clone());
        let err = h
            .generator
            .biography(&bio_request(dickens(), &[], vec![]))
            .await
            .unwrap_err();
        assert_eq!(err.is_unavailable(), unavailable, "{error:?}: {err}");
        assert_eq!(
            matches!(err, GeneratorError::Permanent { .. }),
            !unavailable,
            "{error:?}: {err}"
        );
        assert_eq!(h.fake.requests().len(), 1);
        assert_eq!(err.usage().calls, 1);
        assert_eq!(requests_total(&h.metrics, "biography", "error"), 1);
    }
}

#[tokio::test]
async fn a_hanging_call_times_out_and_is_retried() {
    let h = harness_with(|c| c.call_timeout_seconds = 1).await;
    h.fake.push(CallKind::Biography, [FakeReply::Hang]);
    let reply = h
        .generator
        .biography(&bio_request(dickens(), &[], vec![]))
        .await
        .unwrap();
    assert!(reply.value.is_usable());
    assert_eq!(h.fake.requests().len(), 2);
    assert_eq!(reply.usage.calls, 2);
    assert!(reply.usage.latency >= std::time::Duration::from_secs(1));
}

#[tokio::test]
async fn a_reply_without_text_is_transient_and_its_tokens_count() {
    let h = harness().await;
    h.fake.set_default(CallKind::Biography, FakeReply::NoText);
    let err = h
        .generator
        .biography(&bio_request(dickens(), &[], vec![]))
        .await
        .unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(err.to_string().contains("no text"), "{err}");
    assert_eq!(err.usage().input_tokens, 50);
    assert_eq!(h.fake.requests().len(), 1);
}

#[tokio::test]
async fn usage_tokens_and_cost_are_captured() {
    let h = harness().await;
    h.fake.push(
        CallKind::Biography,
        [FakeReply::text_with_usage(
            json!({"biography": "B.", "personal_stories": []}).to_string(),
            1_000_000,
            250_000,
        )],
    );
    let reply = h
        .generator
        .biography(&bio_request(dickens(), &[], vec![]))
        .await
        .unwrap();
    assert_eq!(reply.model, HAIKU);
    assert_eq!(reply.usage.calls, 1);
    assert_eq!(reply.usage.input_tokens, 1_000_000);
    assert_eq!(reply.usage.output_tokens, 250_000);
    let m = &h.metrics;
    assert_eq!(
        m.generator_tokens
            .with_label_values(&[HAIKU, "input"])
            .get(),
        1_000_000
    );
    assert_eq!(
        m.generator_tokens
            .with_label_values(&[HAIKU, "output"])
            .get(),
        250_000
    );
    let cost = m.generator_cost_usd.with_label_values(&[HAIKU]).get();
    assert!((cost - 1.8).abs() < 1e-9, "{cost}");
    assert_eq!(
        m.generator_request_seconds
            .with_label_values(&["biography"])
            .get_sample_count(),
        1
    );
}

async fn bio_reply(text: &str) -> profile_worker::generate::Biography {
    let h = harness().await;
    h.fake.push(CallKind::Biography, [FakeReply::text(text)]);
    h.generator
        .biography(&bio_request(
            dickens(),
            &[],
            vec![ce("author:32", "Robert Browning")],
        ))
        .await
        .unwrap()
        .value
}

#[tokio::test]
async fn biography_parsing_cases() {
    let valid = bio_reply(
        &json!({"biography": "Friend of {{entity:author:32|Robert Browning}} and {{entity:author:99|Nobody}}.",
                "personal_stories": [
                    {"text": "Eloped.", "year": 1846, "significance": "revelation", "tone": "dramatic"},
                    {"text": "Bad.", "significance": "huge", "tone": "dramatic"}]})
        .to_string(),
    )
    .await;
    assert_eq!(
        valid.biography.as_deref(),
        Some("Friend of {{entity:author:32|Robert Browning}} and Nobody.")
    );
    assert_eq!(valid.personal_stories.len(), 1);
    assert_eq!(valid.dropped_stories, 1);

    let fenced =
        bio_reply("```json\n{\"biography\": \"Fenced.\", \"personal_stories\": []}\n```").await;
    assert_eq!(fenced.biography.as_deref(), Some("Fenced."));

    for unusable in ["{not json", "[\"a list\"]", "{\"personal_stories\": []}"] {
        let b = bio_reply(unusable).await;
        assert!(!b.is_usable(), "{unusable}");
        assert!(b.personal_stories.is_empty());
    }

    let not_a_list = bio_reply("{\"biography\": \"B.\", \"personal_stories\": \"none\"}").await;
    assert!(not_a_list.is_usable());
    assert!(not_a_list.personal_stories.is_empty());
}

#[tokio::test]
async fn biography_prompt_carries_titles_and_dates() {
    let h = harness().await;
    let founded = Entity {
        founded_year: Some(1830),
        ..entity("publisher:2", "Chapman & Hall")
    };
    let both = Entity {
        founded_year: Some(1830),
        ..dickens()
    };
    for e in [dickens(), founded, both] {
        h.generator
            .biography(&bio_request(e, &["Bleak House", "Hard Times"], vec![]))
            .await
            .unwrap();
    }
    let users: Vec<String> = h.fake.requests().into_iter().map(|r| r.user).collect();
    assert!(users[0].contains("Bleak House, Hard Times"), "{}", users[0]);
    assert!(users[0].contains("Dates: 1812 - 1870"));
    assert!(users[1].contains("Founded: 1830"));
    assert!(users[2].contains("Dates: 1812 - 1870") && !users[2].contains("Founded"));
}

#[tokio::test]
async fn narrative_is_trimmed_and_mentions_various_works() {
    let h = harness().await;
    h.fake.push(
        CallKind::Narrative,
        [FakeReply::text("\n  Dickens's lifelong publisher.  \n")],
    );
    let reply = h
        .generator
        .connection_narrative(&pair(&[], vec![]))
        .await
        .unwrap();
    assert_eq!(reply.value, "Dickens's lifelong publisher.");
    assert!(h.fake.requests()[0].user.contains("various works"));
}

async fn story_reply(text: &str) -> Option<profile_worker::generate::RelationshipStory> {
    let h = harness().await;
    h.fake
        .push(CallKind::RelationshipStory, [FakeReply::text(text)]);
    h.generator
        .relationship_story(&story(&["Pickwick"], vec![]))
        .await
        .unwrap()
        .value
}

#[tokio::test]
async fn relationship_story_cases() {
    let happy = story_reply(
        &json!({"summary": "Publisher and author.", "narrative_style": "bullet-facts",
                "details": [{"text": "Pickwick made both.", "year": 1836,
                             "significance": "notable", "tone": "triumphant"}]})
        .to_string(),
    )
    .await
    .unwrap();
    assert_eq!(happy.summary, "Publisher and author.");
    assert_eq!(happy.details.len(), 1);
    assert_eq!(happy.narrative_style, NarrativeStyle::BulletFacts);

    assert_eq!(story_reply("{\"details\": []}").await, None);
    assert_eq!(story_reply("not json").await, None);
    assert_eq!(story_reply("[1]").await, None);

    let no_details = story_reply("{\"summary\": \"S.\", \"details\": 3}")
        .await
        .unwrap();
    assert!(no_details.details.is_empty());
    assert_eq!(no_details.narrative_style, NarrativeStyle::ProseParagraph);

    let fenced = story_reply("```json\n{\"summary\": \"F.\"}\n```")
        .await
        .unwrap();
    assert_eq!(fenced.summary, "F.");
}

#[tokio::test]
async fn story_prompt_has_dates_trigger_and_various_works() {
    let h = harness().await;
    h.generator
        .relationship_story(&story(&[], vec![]))
        .await
        .unwrap();
    let user = &h.fake.requests()[0].user;
    assert!(
        user.contains("Charles Dickens (author, 1812-1870)"),
        "{user}"
    );
    assert!(
        user.contains("Chapman & Hall (publisher, dates unknown)"),
        "{user}"
    );
    assert!(user.contains("cross_era_bridge"));
    assert!(user.contains("various works"));
}

#[tokio::test]
async fn cross_link_block_is_present_only_with_connections() {
    let h = harness().await;
    let links = vec![
        ce("author:32", "Robert Browning"),
        ce("publisher:7", "Smith, Elder"),
    ];
    let g = &h.generator;
    g.biography(&bio_request(dickens(), &[], links.clone()))
        .await
        .unwrap();
    g.connection_narrative(&pair(&[], links.clone()))
        .await
        .unwrap();
    g.relationship_story(&story(&[], links)).await.unwrap();
    g.biography(&bio_request(dickens(), &[], vec![]))
        .await
        .unwrap();
    g.connection_narrative(&pair(&[], vec![])).await.unwrap();
    g.relationship_story(&story(&[], vec![])).await.unwrap();
    let users: Vec<String> = h.fake.requests().into_iter().map(|r| r.user).collect();
    for with in &users[..3] {
        assert!(with.contains("{{entity:"), "{with}");
        assert!(with.contains("- author:32 \"Robert Browning\""), "{with}");
        assert!(with.contains("- publisher:7 \"Smith, Elder\""), "{with}");
    }
    for without in &users[3..] {
        assert!(!without.contains("{{entity:"), "{without}");
    }
}

#[tokio::test]
async fn discovery_is_validated_and_skipped_for_an_empty_universe() {
    let h = harness().await;
    let universe = vec![
        ce("author:5", "Charles Dickens"),
        ce("author:8", "Wilkie Collins"),
    ];
    let request = DiscoveryRequest {
        model: HAIKU.into(),
        allowance: Allowance::unlimited(),
        entity: universe[0].clone(),
        universe: universe.clone(),
    };
    h.fake.push(
        CallKind::Discovery,
        [
            FakeReply::text(
                json!({"connections": [
                    {"target_type": "author", "target_id": 8, "relationship": "friendship",
                     "sub_type": "close friends", "confidence": 0.95, "evidence": "Co-wrote plays."},
                    {"target_type": "author", "target_id": 5, "relationship": "family"},
                    {"target_type": "author", "target_id": 404, "relationship": "family"}]})
                .to_string(),
            ),
            FakeReply::text("I cannot answer that."),
        ],
    );
    let first = h.generator.discover_connections(&request).await.unwrap();
    assert_eq!(first.value.connections.len(), 1);
    assert_eq!(
        first.value.connections[0].sub_type.as_deref(),
        Some("CLOSE FRIENDS")
    );
    assert_eq!(first.value.dropped, 2);
    let second = h.generator.discover_connections(&request).await.unwrap();
    assert!(second.value.connections.is_empty());
    assert_eq!(second.usage.calls, 1);

    let empty = DiscoveryRequest {
        universe: vec![],
        ..request
    };
    let none = h.generator.discover_connections(&empty).await.unwrap();
    assert_eq!(none.usage.calls, 0);
    assert_eq!(h.fake.requests().len(), 2, "empty universe makes no call");
    assert!(
        h.fake.requests()[0]
            .user
            .contains("- author:8 \"Wilkie Collins\"")
    );
}

#[tokio::test]
async fn the_sdk_chain_endpoint_is_used_when_config_has_none() {
    // What AWS_ENDPOINT_URL_BEDROCK_RUNTIME / AWS_ENDPOINT_URL feed into the shared SdkConfig.
    let fake = FakeBedrock::start().await;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-west-2"))
        .credentials_provider(sdk_config().await.credentials_provider().unwrap())
        .endpoint_url(fake.url())
        .load()
        .await;
    let mut config = fake.generator_config();
    config.endpoint_url = String::new();
    let generator = BedrockGenerator::new(&sdk, &config, Arc::new(Metrics::new()));
    generator
        .biography(&bio_request(dickens(), &[], vec![]))
        .await
        .unwrap();
    assert_eq!(fake.requests().len(), 1);
}
