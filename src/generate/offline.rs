//! [`OfflineGenerator`]: no network, no LLM. A factual profile composed only from the data the
//! request carries (names, years, book titles, graph neighbours), for the demo and for cost-free
//! dry runs. Deterministic: the same request always gives the same reply.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::config::GeneratorConfig;
use crate::metrics::Metrics;
use crate::model::{CollectionEntity, Entity};

use super::{
    Allowance, Biography, BiographyRequest, CallKind, Discovery, DiscoveryRequest, Generator,
    GeneratorError, NarrativeStyle, PairRequest, RelationshipStory, RelationshipStoryRequest,
    Reply, Significance, Story, Tone, Usage,
};

/// The `model_version` stored for offline profiles.
pub const OFFLINE_MODEL: &str = "offline";

/// Titles named in a biography before "and N more".
const TITLES_NAMED: usize = 5;
/// Neighbours named (with cross-link markers) in a biography.
const NEIGHBOURS_NAMED: usize = 3;

/// Composes profiles from the data; optional simulated latency per call.
pub struct OfflineGenerator {
    latency: Duration,
    metrics: Arc<Metrics>,
}

impl OfflineGenerator {
    pub fn new(latency: Duration, metrics: Arc<Metrics>) -> Self {
        Self { latency, metrics }
    }

    /// Uses `generator.offline_latency_ms`.
    pub fn from_config(config: &GeneratorConfig, metrics: Arc<Metrics>) -> Self {
        Self::new(Duration::from_millis(config.offline_latency_ms), metrics)
    }

    /// Takes a call from the allowance (as a model request would), waits the simulated latency,
    /// counts the call and wraps the value; the reported latency is the simulated one so replies
    /// stay deterministic.
    async fn reply<T>(
        &self,
        allowance: &Allowance,
        kind: CallKind,
        value: T,
    ) -> Result<Reply<T>, GeneratorError> {
        allowance.take().map_err(|stop| GeneratorError::Stopped {
            stop,
            usage: Usage::default(),
        })?;
        if !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
        let latency = self.latency;
        let call = kind.as_str();
        self.metrics
            .generator_requests
            .with_label_values(&[call, "ok"])
            .inc();
        self.metrics
            .generator_request_seconds
            .with_label_values(&[call])
            .observe(latency.as_secs_f64());
        Ok(Reply {
            value,
            usage: Usage {
                calls: 1,
                latency,
                ..Usage::default()
            },
            model: OFFLINE_MODEL.to_string(),
        })
    }
}

/// "1812–1870", "founded 1830", "born 1812" or nothing.
fn dates(e: &Entity) -> Option<String> {
    match (e.birth_year, e.death_year, e.founded_year, e.closed_year) {
        (Some(b), Some(d), _, _) => Some(format!("{b}–{d}")),
        (Some(b), None, _, _) => Some(format!("born {b}")),
        (None, _, Some(f), Some(c)) => Some(format!("active {f}–{c}")),
        (None, _, Some(f), None) => Some(format!("founded {f}")),
        _ => None,
    }
}

/// "A", "A and B", "A, B and C".
fn join_names(names: &[String]) -> String {
    match names {
        [] => String::new(),
        [one] => one.clone(),
        [init @ .., last] => format!("{} and {last}", init.join(", ")),
    }
}

fn marker(c: &CollectionEntity) -> String {
    format!("{{{{entity:{}|{}}}}}", c.entity, c.name)
}

fn fact(text: String, year: Option<i32>) -> Story {
    Story {
        text,
        year,
        significance: Significance::Context,
        tone: Tone::Intellectual,
        display_in: None,
    }
}

fn compose_biography(request: &BiographyRequest) -> Biography {
    let e = &request.entity;
    let kind = e.entity.entity_type;
    let mut bio = match dates(e) {
        Some(d) => format!(
            "{} ({d}) is {} {kind} in the collection",
            e.name,
            article(kind.as_str())
        ),
        None => format!(
            "{} is {} {kind} in the collection",
            e.name,
            article(kind.as_str())
        ),
    };
    let titles: Vec<&str> = request.books.iter().map(|b| b.title.as_str()).collect();
    match titles.len() {
        0 => bio.push('.'),
        n => {
            let named = titles[..n.min(TITLES_NAMED)].join(", ");
            let more = n.saturating_sub(TITLES_NAMED);
            let noun = if n == 1 { "book" } else { "books" };
            bio.push_str(&format!(" with {n} {noun}: {named}"));
            if more > 0 {
                bio.push_str(&format!(" and {more} more"));
            }
            bio.push('.');
        }
    }
    let mut neighbours: Vec<&CollectionEntity> = Vec::new();
    for c in &request.connections {
        if neighbours.len() == NEIGHBOURS_NAMED {
            break;
        }
        if c.entity != e.entity && !neighbours.iter().any(|n| n.entity == c.entity) {
            neighbours.push(c);
        }
    }
    if !neighbours.is_empty() {
        let names: Vec<String> = neighbours.iter().map(|c| marker(c)).collect();
        bio.push_str(&format!(
            " Its closest links in the collection are with {}.",
            join_names(&names)
        ));
    }

    let mut stories = Vec::new();
    if let (Some(b), Some(d)) = (e.birth_year, e.death_year) {
        stories.push(fact(format!("{} lived from {b} to {d}.", e.name), Some(b)));
    } else if let Some(f) = e.founded_year {
        stories.push(fact(format!("{} was founded in {f}.", e.name), Some(f)));
    }
    if let Some(book) = request
        .books
        .iter()
        .filter(|b| b.year_start.is_some())
        .min_by_key(|b| (b.year_start, b.id))
    {
        stories.push(fact(
            format!(
                "The earliest dated book of {} in the collection is {}.",
                e.name, book.title
            ),
            book.year_start,
        ));
    }
    Biography {
        biography: Some(bio),
        personal_stories: stories,
        dropped_stories: 0,
    }
}

fn article(word: &str) -> &'static str {
    if word.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

fn works(titles: &[String]) -> String {
    if titles.is_empty() {
        "various works".to_string()
    } else {
        titles.join(", ")
    }
}

fn compose_narrative(p: &PairRequest) -> String {
    format!(
        "{} ({}) is connected to {} ({}) by a {} link through {}.",
        p.source.name,
        p.source.entity.entity_type,
        p.target.name,
        p.target.entity.entity_type,
        p.connection_type.replace('_', " "),
        works(&p.shared_titles)
    )
}

fn compose_story(r: &RelationshipStoryRequest) -> RelationshipStory {
    let p = &r.pair;
    let details = p
        .shared_titles
        .iter()
        .map(|t| {
            fact(
                format!("{} and {} share {t}.", p.source.name, p.target.name),
                None,
            )
        })
        .collect();
    RelationshipStory {
        summary: compose_narrative(p),
        details,
        narrative_style: NarrativeStyle::BulletFacts,
        dropped_details: 0,
    }
}

#[async_trait]
impl Generator for OfflineGenerator {
    /// Offline there is nothing to discover: always no connections.
    async fn discover_connections(
        &self,
        request: &DiscoveryRequest,
    ) -> Result<Reply<Discovery>, GeneratorError> {
        if request.universe.is_empty() {
            return Ok(Reply::without_call(Discovery::default(), OFFLINE_MODEL));
        }
        self.reply(
            &request.allowance,
            CallKind::Discovery,
            Discovery::default(),
        )
        .await
    }

    async fn biography(
        &self,
        request: &BiographyRequest,
    ) -> Result<Reply<Biography>, GeneratorError> {
        self.reply(
            &request.allowance,
            CallKind::Biography,
            compose_biography(request),
        )
        .await
    }

    async fn connection_narrative(
        &self,
        request: &PairRequest,
    ) -> Result<Reply<String>, GeneratorError> {
        self.reply(
            &request.allowance,
            CallKind::Narrative,
            compose_narrative(request),
        )
        .await
    }

    async fn relationship_story(
        &self,
        request: &RelationshipStoryRequest,
    ) -> Result<Reply<Option<RelationshipStory>>, GeneratorError> {
        self.reply(
            &request.pair.allowance,
            CallKind::RelationshipStory,
            Some(compose_story(request)),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{NarrativeTrigger, hygiene};
    use crate::model::Book;

    fn dickens() -> Entity {
        Entity {
            entity: "author:5".parse().unwrap(),
            name: "Charles Dickens".into(),
            birth_year: Some(1812),
            death_year: Some(1870),
            founded_year: None,
            closed_year: None,
        }
    }

    fn ce(r: &str, name: &str) -> CollectionEntity {
        CollectionEntity {
            entity: r.parse().unwrap(),
            name: name.into(),
        }
    }

    fn generator() -> OfflineGenerator {
        OfflineGenerator::new(Duration::ZERO, Arc::new(Metrics::new()))
    }

    fn bio_request() -> BiographyRequest {
        BiographyRequest {
            model: "ignored".into(),
            allowance: Allowance::unlimited(),
            entity: dickens(),
            books: vec![
                Book {
                    id: 2,
                    title: "Bleak House".into(),
                    year_start: Some(1853),
                },
                Book {
                    id: 1,
                    title: "Pickwick Papers".into(),
                    year_start: Some(1837),
                },
                Book {
                    id: 3,
                    title: "Undated".into(),
                    year_start: None,
                },
            ],
            connections: vec![
                ce("publisher:2", "Chapman & Hall"),
                ce("publisher:2", "Chapman & Hall"),
                ce("author:8", "Wilkie Collins"),
            ],
        }
    }

    #[tokio::test]
    async fn biography_is_factual_deterministic_and_valid() {
        let g = generator();
        let a = g.biography(&bio_request()).await.unwrap();
        let b = g.biography(&bio_request()).await.unwrap();
        assert_eq!(a, b);
        assert_eq!(a.model, "offline");
        assert_eq!(
            (a.usage.calls, a.usage.input_tokens, a.usage.output_tokens),
            (1, 0, 0)
        );
        let bio = a.value.biography.clone().unwrap();
        assert_eq!(
            bio,
            "Charles Dickens (1812–1870) is an author in the collection with 3 books: Bleak House, \
             Pickwick Papers, Undated. Its closest links in the collection are with \
             {{entity:publisher:2|Chapman & Hall}} and {{entity:author:8|Wilkie Collins}}."
        );
        let valid = hygiene::valid_marker_ids(&bio_request().connections);
        assert_eq!(
            hygiene::sanitize_markers(&bio, &valid),
            bio,
            "markers are all valid"
        );
        let years: Vec<_> = a.value.personal_stories.iter().map(|s| s.year).collect();
        assert_eq!(years, [Some(1812), Some(1837)]);
    }

    #[tokio::test]
    async fn pair_calls_and_discovery() {
        // Held as the pipeline holds it: the trait is object safe.
        let g: Arc<dyn Generator> = Arc::new(generator());
        let pair = PairRequest {
            model: "m".into(),
            allowance: Allowance::unlimited(),
            source: dickens(),
            target: Entity {
                entity: "publisher:2".parse().unwrap(),
                name: "Chapman & Hall".into(),
                birth_year: None,
                death_year: None,
                founded_year: None,
                closed_year: None,
            },
            connection_type: "shared_publisher".into(),
            shared_titles: vec![],
            connections: vec![],
        };
        let n = g.connection_narrative(&pair).await.unwrap().value;
        assert_eq!(
            n,
            "Charles Dickens (author) is connected to Chapman & Hall (publisher) by a shared \
             publisher link through various works."
        );
        let story = g
            .relationship_story(&RelationshipStoryRequest {
                pair: PairRequest {
                    shared_titles: vec!["Pickwick".into()],
                    ..pair
                },
                trigger: NarrativeTrigger::HubFigure,
            })
            .await
            .unwrap()
            .value
            .unwrap();
        assert_eq!(story.details.len(), 1);
        let empty = DiscoveryRequest {
            model: "m".into(),
            allowance: Allowance::unlimited(),
            entity: ce("author:5", "Charles Dickens"),
            universe: vec![],
        };
        let d = g.discover_connections(&empty).await.unwrap();
        assert_eq!(d.usage.calls, 0);
        assert!(d.value.connections.is_empty());
    }
}
