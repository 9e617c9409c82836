//! One contract suite for every `Generator` adapter: each case below runs against
//! `OfflineGenerator` and against `BedrockGenerator` on the fake Converse server. The fake's
//! replies include what a model gets wrong (markers to entities outside the request, connections
//! outside the universe or to the entity itself), so the cases check what the port promises
//! callers: validated values, usage for every call, the answering model named.

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use profile_worker::generate::bedrock::BedrockGenerator;
use profile_worker::generate::offline::{OFFLINE_MODEL, OfflineGenerator};
use profile_worker::generate::{
    Allowance, BiographyRequest, CallKind, DiscoveryRequest, Generator, MAX_AI_CONNECTIONS,
    NarrativeTrigger, PairRequest, RelationshipStoryRequest, Usage,
};
use profile_worker::metrics::Metrics;
use profile_worker::model::{Book, CollectionEntity, Entity, EntityRef};
use regex::Regex;
use serde_json::json;
use support::bedrock::{FakeBedrock, FakeReply, sdk_config};
use support::entities::{ce, dickens};

const MODEL: &str = "anthropic.claude-3-5-haiku-20241022-v1:0";

/// One adapter under test; `fake` keeps the fake server alive for the Bedrock adapter.
struct Subject {
    generator: Arc<dyn Generator>,
    /// The model a reply must name for a request on [`MODEL`].
    answering_model: &'static str,
    _fake: Option<FakeBedrock>,
}

fn offline() -> Subject {
    Subject {
        generator: Arc::new(OfflineGenerator::new(
            Duration::ZERO,
            Arc::new(Metrics::new()),
        )),
        answering_model: OFFLINE_MODEL,
        _fake: None,
    }
}

/// The Bedrock adapter with replies that need the adapter's hygiene to satisfy the contract.
async fn bedrock() -> Subject {
    let fake = FakeBedrock::start().await;
    fake.set_default(
        CallKind::Discovery,
        FakeReply::text(
            json!({"connections": [
                {"target_type": "author", "target_id": 8, "relationship": "friendship",
                 "confidence": 0.9, "evidence": "Letters."},
                {"target_type": "author", "target_id": 5, "relationship": "family",
                 "confidence": 0.9, "evidence": "Itself."},
                {"target_type": "author", "target_id": 999, "relationship": "scandal",
                 "confidence": 0.9, "evidence": "Not in the collection."},
                {"target_type": "publisher", "target_id": 2, "relationship": "rivalry",
                 "confidence": 0.9, "evidence": "Unknown relationship."}
            ]})
            .to_string(),
        ),
    );
    fake.set_default(
        CallKind::Biography,
        FakeReply::text(
            json!({
                "biography": "Friend of {{entity:author:8|Wilkie Collins}} and of \
                              {{entity:author:999|Someone Else}}.",
                "personal_stories": [
                    {"text": "Edited a journal with {{entity:author:999|Someone Else}}.",
                     "year": 1850, "significance": "notable", "tone": "dramatic"},
                    {"text": "", "year": 1851, "significance": "notable", "tone": "dramatic"}
                ]
            })
            .to_string(),
        ),
    );
    fake.set_default(
        CallKind::Narrative,
        FakeReply::text("  Published by {{entity:publisher:7|Unknown House}}.\n"),
    );
    fake.set_default(
        CallKind::RelationshipStory,
        FakeReply::text(
            json!({
                "summary": "A long partnership with {{entity:publisher:7|Unknown House}}.",
                "details": [{"text": "They met in London.", "year": null,
                             "significance": "context", "tone": "intellectual"}],
                "narrative_style": "prose-paragraph"
            })
            .to_string(),
        ),
    );
    let generator = BedrockGenerator::new(
        &sdk_config().await,
        &fake.generator_config(),
        Arc::new(Metrics::new()),
    );
    Subject {
        generator: Arc::new(generator),
        answering_model: MODEL,
        _fake: Some(fake),
    }
}

/// Runs each named case against both adapters.
macro_rules! contract {
    ($($case:ident),* $(,)?) => {
        mod offline {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::offline()).await;
                }
            )*
        }
        mod bedrock_on_fake {
            $(
                #[tokio::test]
                async fn $case() {
                    super::$case(super::bedrock().await).await;
                }
            )*
        }
    };
}

contract!(
    an_empty_universe_answers_without_a_call,
    discovered_connections_stay_within_the_universe,
    a_biography_is_usable_and_its_markers_name_connections,
    a_narrative_is_trimmed_and_its_markers_name_connections,
    a_relationship_story_has_a_summary_and_valid_markers,
);

// ---- requests ---------------------------------------------------------------------------

fn chapman() -> Entity {
    Entity {
        entity: "publisher:2".parse().unwrap(),
        name: "Chapman & Hall".into(),
        birth_year: None,
        death_year: None,
        founded_year: Some(1830),
        closed_year: None,
    }
}

/// The profiled entity's graph neighbours (it appears among them, as it may in real requests).
fn connections() -> Vec<CollectionEntity> {
    vec![
        ce("author:8", "Wilkie Collins"),
        ce("publisher:2", "Chapman & Hall"),
        ce("author:5", "Charles Dickens"),
    ]
}

fn pair() -> PairRequest {
    PairRequest {
        model: MODEL.into(),
        allowance: Allowance::unlimited(),
        source: dickens(),
        target: chapman(),
        connection_type: "publisher".into(),
        shared_titles: vec!["Bleak House".into(), "Little Dorrit".into()],
        connections: connections(),
    }
}

// ---- what every reply must satisfy --------------------------------------------------------

/// Every `{{entity:type:id|Name}}` marker in `text` names one of `connections`, and no broken
/// marker is left.
fn assert_markers_name(text: &str, connections: &[CollectionEntity]) {
    let marker = Regex::new(r"\{\{entity:(\w+:\d+)\|[^}]*\}\}").unwrap();
    let valid: HashSet<String> = connections.iter().map(|c| c.entity.to_string()).collect();
    for c in marker.captures_iter(text) {
        assert!(
            valid.contains(&c[1]),
            "marker to {} outside the request's connections in {text:?}",
            &c[1]
        );
    }
    let rest = marker.replace_all(text, "");
    assert!(!rest.contains("{{entity:"), "broken marker in {text:?}");
}

fn assert_one_call(usage: &Usage) {
    assert_eq!(usage.calls, 1, "{usage:?}");
}

// ---- the cases ----------------------------------------------------------------------------

async fn an_empty_universe_answers_without_a_call(s: Subject) {
    let reply = s
        .generator
        .discover_connections(&DiscoveryRequest {
            model: MODEL.into(),
            allowance: Allowance::unlimited(),
            entity: ce("author:5", "Charles Dickens"),
            universe: vec![],
        })
        .await
        .expect("an empty universe never fails");
    assert!(reply.value.connections.is_empty());
    assert_eq!(reply.usage, Usage::default());
}

async fn discovered_connections_stay_within_the_universe(s: Subject) {
    let universe = vec![
        ce("author:5", "Charles Dickens"),
        ce("author:8", "Wilkie Collins"),
        ce("publisher:2", "Chapman & Hall"),
    ];
    let source: EntityRef = "author:5".parse().unwrap();
    let reply = s
        .generator
        .discover_connections(&DiscoveryRequest {
            model: MODEL.into(),
            allowance: Allowance::unlimited(),
            entity: universe[0].clone(),
            universe: universe.clone(),
        })
        .await
        .expect("discovery");
    assert_one_call(&reply.usage);
    assert_eq!(reply.model, s.answering_model);
    let members: HashSet<EntityRef> = universe.iter().map(|c| c.entity).collect();
    assert!(reply.value.connections.len() <= MAX_AI_CONNECTIONS);
    for c in &reply.value.connections {
        assert_eq!(c.source(), source);
        assert_ne!(c.target(), source, "no connection to the entity itself");
        assert!(members.contains(&c.target()), "{c:?} outside the universe");
        assert!((0.0..=1.0).contains(&c.confidence));
    }
}

async fn a_biography_is_usable_and_its_markers_name_connections(s: Subject) {
    let request = BiographyRequest {
        model: MODEL.into(),
        allowance: Allowance::unlimited(),
        entity: dickens(),
        books: vec![
            Book {
                id: 1,
                title: "Bleak House".into(),
                year_start: Some(1853),
            },
            Book {
                id: 2,
                title: "Little Dorrit".into(),
                year_start: None,
            },
        ],
        connections: connections(),
    };
    let reply = s.generator.biography(&request).await.expect("biography");
    assert_one_call(&reply.usage);
    assert_eq!(reply.model, s.answering_model);
    let biography = reply
        .value
        .biography
        .as_deref()
        .expect("a usable biography");
    assert!(!biography.trim().is_empty());
    assert_markers_name(biography, &request.connections);
    for story in &reply.value.personal_stories {
        assert!(!story.text.trim().is_empty(), "{story:?}");
        assert_markers_name(&story.text, &request.connections);
    }
}

async fn a_narrative_is_trimmed_and_its_markers_name_connections(s: Subject) {
    let request = pair();
    let reply = s
        .generator
        .connection_narrative(&request)
        .await
        .expect("narrative");
    assert_one_call(&reply.usage);
    assert_eq!(reply.model, s.answering_model);
    assert!(!reply.value.is_empty());
    assert_eq!(reply.value, reply.value.trim());
    assert_markers_name(&reply.value, &request.connections);
}

async fn a_relationship_story_has_a_summary_and_valid_markers(s: Subject) {
    let request = RelationshipStoryRequest {
        pair: pair(),
        trigger: NarrativeTrigger::CrossEraBridge,
    };
    let reply = s
        .generator
        .relationship_story(&request)
        .await
        .expect("relationship story");
    assert_one_call(&reply.usage);
    assert_eq!(reply.model, s.answering_model);
    let story = reply.value.expect("a usable story");
    assert!(!story.summary.trim().is_empty());
    assert_markers_name(&story.summary, &request.pair.connections);
    for detail in &story.details {
        assert!(!detail.text.trim().is_empty());
        assert_markers_name(&detail.text, &request.pair.connections);
    }
}
