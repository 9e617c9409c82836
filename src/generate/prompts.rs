//! Prompt texts of the four calls. Content (fields, enum values, caps, line formats) follows
//! docs/compatibility.md, "Generation" so replies stay compatible; the wording is ours.

use std::fmt::Write as _;

use crate::model::{CollectionEntity, Entity};

use super::{
    BiographyRequest, DiscoveryRequest, MAX_DISCOVERY_ENTITIES, MAX_PROMPT_CONNECTIONS,
    PairRequest, RelationshipStoryRequest,
};

/// System prompt of connection discovery.
pub const DISCOVERY_SYSTEM: &str = "You are a literary historian of the Victorian era. You report \
only personal ties between people and firms of the book trade that the historical record documents \
well: marriages and family bonds, friendships, feuds and rivalries, mentorships, collaborations and \
scandals. You never guess. You answer with JSON only.";

/// System prompt of the biography call.
pub const BIOGRAPHY_SYSTEM: &str = "You are a reference librarian and literary historian of \
Victorian literature and publishing, at home with the period's personal histories, anecdotes, \
relationships and scandals. Stay factual and keep to the commonly accepted historical record. \
You answer with JSON only.";

/// System prompt of the one-sentence connection narrative.
pub const NARRATIVE_SYSTEM: &str = "You are a reference librarian who knows the publishing networks \
of the Victorian era. Explain why a connection mattered in the history of Victorian publishing. \
Be factual and brief.";

/// System prompt of the relationship story.
pub const RELATIONSHIP_SYSTEM: &str = "You are a literary historian who knows the personal \
relationships of Victorian writers, publishers and binders. Stay factual and keep to the commonly \
accepted historical record. You answer with JSON only.";

/// One entity as a list line: `- {type}:{id} "{name}"`.
fn entity_line(out: &mut String, e: &CollectionEntity) {
    let _ = writeln!(out, "- {} \"{}\"", e.entity, e.name);
}

/// The cross-link instructions and the first [`MAX_PROMPT_CONNECTIONS`] connections; empty when
/// there are none.
pub fn cross_link_block(connections: &[CollectionEntity]) -> String {
    if connections.is_empty() {
        return String::new();
    }
    let mut out = String::from(
        "\n\nCROSS-LINKS: when your text mentions one of the entities listed below, wrap the \
mention in a marker of the form {{entity:TYPE:ID|Display Name}}, for example \
{{entity:author:32|Robert Browning}}. Use markers only for the entities listed here and copy their \
TYPE and ID exactly; never make up an id. Mention anyone else as plain text.\n",
    );
    for c in connections.iter().take(MAX_PROMPT_CONNECTIONS) {
        entity_line(&mut out, c);
    }
    out
}

/// The bio prompt's dates line (docs/compatibility.md, "Biography"): both life years, else the founding year, else
/// nothing.
pub fn bio_dates_line(entity: &Entity) -> String {
    match (entity.birth_year, entity.death_year, entity.founded_year) {
        (Some(birth), Some(death), _) => format!("Dates: {birth} - {death}"),
        (_, _, Some(founded)) => format!("Founded: {founded}"),
        _ => String::new(),
    }
}

/// The dates of one side of a relationship story (docs/compatibility.md, "Narratives and relationship stories").
pub fn story_dates(entity: &Entity) -> String {
    match (entity.birth_year, entity.founded_year) {
        (Some(birth), _) => match entity.death_year {
            Some(death) => format!("{birth}-{death}"),
            None => format!("{birth}-?"),
        },
        (None, Some(founded)) => match entity.closed_year {
            Some(closed) => format!("est. {founded}-{closed}"),
            None => format!("est. {founded}-present"),
        },
        (None, None) => "dates unknown".to_string(),
    }
}

/// Comma-joined shared titles, or "various works".
fn shared_works(titles: &[String]) -> String {
    if titles.is_empty() {
        "various works".to_string()
    } else {
        titles.join(", ")
    }
}

/// The part of the discovery user prompt shared by every entity of the collection — the list of
/// at most [`MAX_DISCOVERY_ENTITIES`] entities — so it can sit before a cache point
/// (docs/decisions.md, "Prompt caching").
pub fn discovery_shared(request: &DiscoveryRequest) -> String {
    let mut out = String::from("The rare-book collection holds these entities:\n");
    for c in request.universe.iter().take(MAX_DISCOVERY_ENTITIES) {
        entity_line(&mut out, c);
    }
    out
}

/// The part of the discovery user prompt about the profiled entity, after the shared part.
pub fn discovery_entity(request: &DiscoveryRequest) -> String {
    let e = &request.entity;
    let mut out = format!(
        "\nProfiled entity: {} ({}, id {}).\n",
        e.name, e.entity.entity_type, e.entity.id
    );
    out.push_str(DISCOVERY_INSTRUCTIONS);
    out
}

/// The discovery user prompt: [`discovery_shared`] then [`discovery_entity`].
pub fn discovery_user(request: &DiscoveryRequest) -> String {
    discovery_shared(request) + &discovery_entity(request)
}

/// What discovery asks for, after the entity list and the profiled entity.
const DISCOVERY_INSTRUCTIONS: &str = "\nList the documented PERSONAL connections between the profiled entity and the entities \
above. Include a connection only when you are confident it is historically attested; leave out \
mere business dealings such as a publisher issuing an author's books.\n\n\
Allowed values of relationship:\n\
- family: related by blood or marriage\n\
- friendship: a close personal friendship\n\
- influence: one shaped the other's work or career (mentor, model, patron)\n\
- collaboration: worked together on a work or an enterprise\n\
- scandal: a public feud, rivalry, affair or controversy\n\n\
For each connection give:\n\
- target_type and target_id: exactly as in the list above\n\
- relationship: one of the five values above\n\
- sub_type: a short upper-case label such as MARRIAGE, MENTOR, RIVALS or CO-AUTHORS\n\
- confidence: 0 to 1 (1 = certain, 0.5 = likely, below 0.3 = rumoured)\n\
- evidence: one sentence on what the record shows\n\n\
Reply with JSON only, in the form {\"connections\": [...]}; reply {\"connections\": []} when there \
are none.";

/// The biography user prompt (docs/compatibility.md, "Biography").
pub fn biography_user(request: &BiographyRequest) -> String {
    let e = &request.entity;
    let titles = if request.books.is_empty() {
        "None in collection".to_string()
    } else {
        request
            .books
            .iter()
            .map(|b| b.title.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut out = format!(
        "An entity of a rare-book collection:\n  Name: {}\n  Type: {}\n  {}\n  Books in the \
collection: {titles}\n\n",
        e.name,
        e.entity.entity_type,
        bio_dates_line(e)
    );
    out.push_str(
        "Write:\n\n\
1. BIOGRAPHY: two or three sentences on why this figure matters in the history of Victorian \
literature or publishing.\n\n\
2. PERSONAL_STORIES: a list of facts that bring the figure to life: personal drama, scandals, \
tragedies, triumphs, memorable anecdotes. Each fact has:\n\
   - text: the story in one or two sentences\n\
   - year: the year it happened as an integer, or null when unknown\n\
   - significance: \"revelation\" (surprising, consequential), \"notable\" (interesting) or \
\"context\" (background)\n\
   - tone: \"dramatic\", \"scandalous\", \"tragic\", \"intellectual\" or \"triumphant\"\n\n\
Reply with JSON only: {\"biography\": \"...\", \"personal_stories\": [...]}\n\
If little is known about the entity, give what is known and say that it is obscure.",
    );
    out.push_str(&cross_link_block(&request.connections));
    out
}

/// The one-sentence narrative user prompt (docs/compatibility.md, "Narratives and relationship stories").
pub fn narrative_user(request: &PairRequest) -> String {
    let mut out = format!(
        "In one sentence for a rare-book collector, describe this connection:\n  {} ({}) is \
connected to {} ({})\n  Connection: {}\n  Shared works: {}\n\nReply with the sentence only, \
without quotation marks.",
        request.source.name,
        request.source.entity.entity_type,
        request.target.name,
        request.target.entity.entity_type,
        request.connection_type,
        shared_works(&request.shared_titles),
    );
    out.push_str(&cross_link_block(&request.connections));
    out
}

/// The relationship-story user prompt (docs/compatibility.md, "Narratives and relationship stories").
pub fn relationship_user(request: &RelationshipStoryRequest) -> String {
    let p = &request.pair;
    let mut out = format!(
        "A connection between two entities of a rare-book collection:\n  Entity 1: {} ({}, {})\n  \
Entity 2: {} ({}, {})\n  Connection type: {}\n  Shared works: {}\n  Narrative trigger: {}\n\n",
        p.source.name,
        p.source.entity.entity_type,
        story_dates(&p.source),
        p.target.name,
        p.target.entity.entity_type,
        story_dates(&p.target),
        p.connection_type,
        shared_works(&p.shared_titles),
        request.trigger.as_str(),
    );
    out.push_str(
        "Tell the story of this relationship:\n\n\
1. SUMMARY: the relationship in one line (shown on a card).\n\n\
2. DETAILS: a list of facts about this particular relationship, the human story first: personal \
anecdotes and dramatic events. Each fact: {\"text\": \"...\", \"year\": integer or null, \
\"significance\": \"revelation|notable|context\", \"tone\": \
\"dramatic|scandalous|tragic|intellectual|triumphant\"}\n\n\
3. NARRATIVE_STYLE: \"prose-paragraph\" for a dramatic story, \"bullet-facts\" for a factual \
relationship, \"timeline-events\" for a connection spanning many years.\n\n\
Reply with JSON only: {\"summary\": \"...\", \"details\": [...], \"narrative_style\": \"...\"}",
    );
    out.push_str(&cross_link_block(&p.connections));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generate::{Allowance, NarrativeTrigger};
    use crate::model::{Book, EntityRef};

    fn entity(r: &str, name: &str) -> Entity {
        Entity {
            entity: r.parse().unwrap(),
            name: name.into(),
            birth_year: None,
            death_year: None,
            founded_year: None,
            closed_year: None,
        }
    }

    fn ce(r: &str, name: &str) -> CollectionEntity {
        CollectionEntity {
            entity: r.parse::<EntityRef>().unwrap(),
            name: name.into(),
        }
    }

    fn bio_request(
        e: Entity,
        titles: &[&str],
        connections: Vec<CollectionEntity>,
    ) -> BiographyRequest {
        BiographyRequest {
            model: "m".into(),
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

    fn pair(connections: Vec<CollectionEntity>, shared: &[&str]) -> PairRequest {
        PairRequest {
            model: "m".into(),
            allowance: Allowance::unlimited(),
            source: Entity {
                birth_year: Some(1812),
                death_year: Some(1870),
                ..entity("author:5", "Charles Dickens")
            },
            target: entity("publisher:2", "Chapman & Hall"),
            connection_type: "publisher".into(),
            shared_titles: shared.iter().map(|s| s.to_string()).collect(),
            connections,
        }
    }

    #[test]
    fn bio_titles_are_comma_joined() {
        let p = biography_user(&bio_request(
            entity("author:5", "Charles Dickens"),
            &["Bleak House", "Little Dorrit"],
            vec![],
        ));
        assert!(p.contains("Bleak House, Little Dorrit"), "{p}");
        let none = biography_user(&bio_request(entity("author:5", "X"), &[], vec![]));
        assert!(none.contains("None in collection"));
    }

    #[test]
    fn bio_dates_line_variants() {
        let founded = Entity {
            founded_year: Some(1830),
            ..entity("publisher:1", "Smith")
        };
        assert!(
            biography_user(&bio_request(founded.clone(), &[], vec![])).contains("Founded: 1830")
        );
        let lived = Entity {
            birth_year: Some(1812),
            death_year: Some(1870),
            ..entity("author:1", "Dickens")
        };
        assert!(
            biography_user(&bio_request(lived.clone(), &[], vec![])).contains("Dates: 1812 - 1870")
        );
        let both = Entity {
            founded_year: Some(1830),
            ..lived
        };
        let p = biography_user(&bio_request(both, &[], vec![]));
        assert!(
            p.contains("Dates: 1812 - 1870") && !p.contains("Founded"),
            "{p}"
        );
        let birth_only = Entity {
            birth_year: Some(1812),
            ..entity("author:1", "D")
        };
        assert_eq!(bio_dates_line(&birth_only), "");
    }

    #[test]
    fn cross_link_block_lists_connections_capped_at_15() {
        let connections: Vec<_> = (1..=20)
            .map(|i| ce(&format!("author:{i}"), &format!("Name {i}")))
            .collect();
        let p = biography_user(&bio_request(entity("author:99", "X"), &[], connections));
        assert!(p.contains("{{entity:"), "{p}");
        assert!(p.contains("- author:15 \"Name 15\""));
        assert!(!p.contains("- author:16 \"Name 16\""));
        let without = biography_user(&bio_request(entity("author:99", "X"), &[], vec![]));
        assert!(!without.contains("{{entity:"));
    }

    #[test]
    fn narrative_and_story_prompts_carry_the_block_and_various_works() {
        let c = vec![ce("author:32", "Robert Browning")];
        let n = narrative_user(&pair(c.clone(), &[]));
        assert!(
            n.contains("various works") && n.contains("- author:32 \"Robert Browning\""),
            "{n}"
        );
        assert!(!narrative_user(&pair(vec![], &["A"])).contains("{{entity:"));
        let s = relationship_user(&RelationshipStoryRequest {
            pair: pair(c, &["Pickwick", "Oliver Twist"]),
            trigger: NarrativeTrigger::CrossEraBridge,
        });
        assert!(s.contains("Pickwick, Oliver Twist"), "{s}");
        assert!(s.contains("cross_era_bridge"));
        assert!(s.contains("Charles Dickens (author, 1812-1870)"), "{s}");
        assert!(
            s.contains("Chapman & Hall (publisher, dates unknown)"),
            "{s}"
        );
        assert!(s.contains("- author:32 \"Robert Browning\""));
    }

    #[test]
    fn story_dates_variants() {
        let mut e = entity("author:1", "A");
        assert_eq!(story_dates(&e), "dates unknown");
        e.birth_year = Some(1812);
        assert_eq!(story_dates(&e), "1812-?");
        e.death_year = Some(1870);
        assert_eq!(story_dates(&e), "1812-1870");
        let mut p = entity("publisher:1", "P");
        p.founded_year = Some(1830);
        assert_eq!(story_dates(&p), "est. 1830-present");
        p.closed_year = Some(1901);
        assert_eq!(story_dates(&p), "est. 1830-1901");
    }

    #[test]
    fn discovery_lists_at_most_500_entities_and_the_five_relationships() {
        let universe: Vec<_> = (1..=600)
            .map(|i| ce(&format!("author:{i}"), &format!("N{i}")))
            .collect();
        let p = discovery_user(&DiscoveryRequest {
            model: "m".into(),
            allowance: Allowance::unlimited(),
            entity: ce("author:1", "N1"),
            universe,
        });
        assert!(p.contains("- author:500 \"N500\""));
        assert!(!p.contains("- author:501 \"N501\""));
        for r in [
            "family",
            "friendship",
            "influence",
            "collaboration",
            "scandal",
        ] {
            assert!(p.contains(&format!("- {r}:")), "{r}");
        }
        for f in [
            "target_type",
            "target_id",
            "sub_type",
            "confidence",
            "evidence",
        ] {
            assert!(p.contains(f), "{f}");
        }
    }

    /// The discovery prompt as it was before the shared part moved first (same instructions).
    fn discovery_user_before_reorder(request: &DiscoveryRequest) -> String {
        let e = &request.entity;
        let mut out = format!(
            "Profiled entity: {} ({}, id {}).\n\nThe rare-book collection holds these entities:\n",
            e.name, e.entity.entity_type, e.entity.id
        );
        for c in request.universe.iter().take(MAX_DISCOVERY_ENTITIES) {
            entity_line(&mut out, c);
        }
        out.push_str(DISCOVERY_INSTRUCTIONS);
        out
    }

    #[test]
    fn discovery_reordered_for_caching_asks_the_same() {
        let request = DiscoveryRequest {
            model: "m".into(),
            allowance: Allowance::unlimited(),
            entity: ce("author:7", "Seven"),
            universe: (1..=30)
                .map(|i| ce(&format!("publisher:{i}"), &format!("P{i}")))
                .collect(),
        };
        let lines = |text: &str| {
            let mut lines: Vec<String> = text
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect();
            lines.sort();
            lines
        };
        let new = discovery_user(&request);
        assert_eq!(
            lines(&new),
            lines(&discovery_user_before_reorder(&request)),
            "same lines, only reordered"
        );
        assert!(new.starts_with(&discovery_shared(&request)));
        let other = DiscoveryRequest {
            entity: ce("binder:3", "Three"),
            ..request.clone()
        };
        assert_eq!(discovery_shared(&other), discovery_shared(&request));
        assert!(!discovery_shared(&request).contains("Seven"));
    }
}
