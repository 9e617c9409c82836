//! Output hygiene: raw model text → validated values the Python API can always read back.
//!
//! Mirrors the original (docs/compatibility.md, "Output hygiene": fence stripping, lenient JSON, both marker passes) and
//! adds what docs/decisions.md, "A failed biography is never a fresh profile" asks: stories are normalised to the API's schema and invalid items dropped and
//! counted, AI connections are validated as docs/compatibility.md, "Discovery" (plus `sub_type` truncation).
//!
//! Every string a reply contributes to a stored profile passes [`safe_text`] here: no control
//! characters but `\n` and `\t`, at most [`MAX_STORED_CHARS`] characters. A NUL is the reason:
//! PostgreSQL `text` refuses it, and a `json` column stores `\u0000` but the next regeneration's
//! `::jsonb` merge of `relationship_stories` refuses it, so one bad reply broke every later run
//! (docs/reliability.md).

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::entity::{CollectionEntity, EntityRef, EntityType};

/// Collection entities listed in the discovery prompt, and the only ones a discovery reply may name
/// (docs/compatibility.md, "Discovery").
pub const MAX_DISCOVERY_ENTITIES: usize = 500;
/// AI connections accepted from one discovery reply (docs/compatibility.md, "Discovery").
pub const MAX_AI_CONNECTIONS: usize = 10;

/// Longest `sub_type` the `ai_connections.sub_type varchar(50)` column takes.
pub const MAX_SUB_TYPE_CHARS: usize = 50;

/// Longest stored string (biography, story text, summary, narrative, evidence, `display_in`
/// entry), in characters. The largest call budget is 2048 output tokens, roughly 8 000
/// characters of prose, so only a runaway or hostile reply is cut.
pub const MAX_STORED_CHARS: usize = 16_384;

/// A model string made safe to store: control characters other than `\n` and `\t` removed
/// (NUL above all), then cut to [`MAX_STORED_CHARS`] characters.
pub fn safe_text(text: &str) -> String {
    text.chars()
        .filter(|c| !c.is_control() || matches!(c, '\n' | '\t'))
        .take(MAX_STORED_CHARS)
        .collect()
}

/// The stored form of a prose field: [`safe_text`], markers sanitised, trimmed. Idempotent.
pub fn clean_text(text: &str, valid: &HashSet<String>) -> String {
    sanitize_markers(&safe_text(text), valid).trim().to_string()
}

/// How much a story matters (API enum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Significance {
    Revelation,
    Notable,
    Context,
}

/// The mood of a story (API enum; the frontend colours by it).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Tone {
    Dramatic,
    Scandalous,
    Tragic,
    Intellectual,
    Triumphant,
}

/// How the frontend lays out a relationship story.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NarrativeStyle {
    #[default]
    ProseParagraph,
    BulletFacts,
    TimelineEvents,
}

/// One personal story or relationship-story detail, exactly the API's `BiographicalFact`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Story {
    pub text: String,
    pub year: Option<i32>,
    pub significance: Significance,
    pub tone: Tone,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_in: Option<Vec<String>>,
}

/// The biography call's result.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Biography {
    /// `None` when the model produced no usable biography (malformed or non-object JSON, missing,
    /// blank or non-string field): a failed biography, never to be stored as a fresh profile (docs/decisions.md, "A failed biography is never a fresh profile").
    pub biography: Option<String>,
    pub personal_stories: Vec<Story>,
    /// Stories dropped because they could not be normalised.
    pub dropped_stories: usize,
}

impl Biography {
    /// Whether this is a real biography the pipeline may store.
    pub fn is_usable(&self) -> bool {
        self.biography.is_some()
    }
}

/// A relationship story as stored under its pair key in `relationship_stories`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RelationshipStory {
    pub summary: String,
    pub details: Vec<Story>,
    pub narrative_style: NarrativeStyle,
    /// Details dropped because they could not be normalised (not stored).
    #[serde(skip)]
    pub dropped_details: usize,
}

/// The five relationship kinds of `ai_connections.relationship`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Relationship {
    Family,
    Friendship,
    Influence,
    Collaboration,
    Scandal,
}

impl Relationship {
    pub fn as_str(self) -> &'static str {
        match self {
            Relationship::Family => "family",
            Relationship::Friendship => "friendship",
            Relationship::Influence => "influence",
            Relationship::Collaboration => "collaboration",
            Relationship::Scandal => "scandal",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        match s {
            "family" => Some(Relationship::Family),
            "friendship" => Some(Relationship::Friendship),
            "influence" => Some(Relationship::Influence),
            "collaboration" => Some(Relationship::Collaboration),
            "scandal" => Some(Relationship::Scandal),
            _ => None,
        }
    }
}

/// A validated AI-discovered connection; source = the profiled entity (not canonicalised —
/// storage orders the pair). Serialises to the legacy `entity_profiles.ai_connections` shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AiConnection {
    pub source_type: EntityType,
    pub source_id: i32,
    pub target_type: EntityType,
    pub target_id: i32,
    pub relationship: Relationship,
    pub sub_type: Option<String>,
    pub confidence: f64,
    pub evidence: Option<String>,
}

impl AiConnection {
    pub fn source(&self) -> EntityRef {
        EntityRef::new(self.source_type, self.source_id)
    }

    pub fn target(&self) -> EntityRef {
        EntityRef::new(self.target_type, self.target_id)
    }
}

/// The discovery call's result.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Discovery {
    /// At most [`MAX_AI_CONNECTIONS`], in reply order.
    pub connections: Vec<AiConnection>,
    /// Items rejected by validation.
    pub dropped: usize,
}

static FENCE_OPEN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^```(?:json)?\s*\n?").expect("valid regex"));
static FENCE_CLOSE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\n?```\s*$").expect("valid regex"));

/// Removes one Markdown code fence around a reply (`` ```json … ``` ``); backticks inside stay.
pub fn strip_fences(text: &str) -> String {
    let opened = FENCE_OPEN.replace(text.trim(), "");
    let closed = FENCE_CLOSE.replace(&opened, "");
    closed.trim().to_string()
}

/// Parses a reply as the original does (fences stripped, then JSON), and additionally recovers an
/// object wrapped in prose by parsing from the first `{` to the last `}`.
pub fn parse_json_lenient(text: &str) -> Option<Value> {
    let stripped = strip_fences(text);
    if let Ok(v) = serde_json::from_str(&stripped) {
        return Some(v);
    }
    let start = stripped.find('{')?;
    let end = stripped.rfind('}')?;
    if end <= start {
        return None;
    }
    serde_json::from_str(&stripped[start..=end]).ok()
}

static MARKER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\{\{entity:(\w+):(\d+)\|([^}]+)\}\}").expect("valid regex"));

/// `entity:TYPE:Name` written without braces: capitalised words, Unicode letters, straight or
/// U+2019 apostrophes and hyphens, joined by whitespace and at most one lowercase particle
/// between two words (mirrors the frontend's `entityMarkers.ts`).
static UNWRAPPED: LazyLock<Regex> = LazyLock::new(|| {
    let word = r"[A-Z][\w'\x{2019}-]*";
    let particle = r"(?:and|of|the|de|du|da|di|le|la|von|van)";
    Regex::new(&format!(
        r"entity:\w+:({word}(?:\s+(?:{particle}\s+)?{word})*)\b"
    ))
    .expect("valid regex")
});

/// The `type:id` strings markers may point at: every graph neighbour, not only those in the prompt.
pub fn valid_marker_ids(connections: &[CollectionEntity]) -> HashSet<String> {
    connections.iter().map(|c| c.entity.to_string()).collect()
}

/// Keeps `{{entity:TYPE:ID|Name}}` markers whose `TYPE:ID` is valid, replaces the others by their
/// display name, then replaces unwrapped `entity:TYPE:Name` references by the name.
///
/// Both passes repeat until nothing changes: a replacement can complete a new marker (a name
/// that is itself the start of a marker, nested `entity:` prefixes), and no invalid marker may
/// reach the frontend. Every change shortens the text, so this ends.
pub fn sanitize_markers(text: &str, valid: &HashSet<String>) -> String {
    let mut current = text.to_string();
    loop {
        let pass1 = MARKER.replace_all(&current, |c: &regex::Captures<'_>| {
            if valid.contains(&format!("{}:{}", &c[1], &c[2])) {
                c[0].to_string()
            } else {
                c[3].to_string()
            }
        });
        let next = UNWRAPPED.replace_all(&pass1, "$1").into_owned();
        if next == current {
            return next;
        }
        current = next;
    }
}

fn enum_value<T: for<'de> Deserialize<'de>>(value: Option<&Value>) -> Option<T> {
    let s = value?.as_str()?.trim().to_ascii_lowercase();
    serde_json::from_value(Value::String(s)).ok()
}

/// A story year: an integer (or integral float, or numeric string) within i32; anything else none.
fn story_year(value: Option<&Value>) -> Option<i32> {
    match value? {
        Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
            .and_then(|i| i32::try_from(i).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// Normalises one story to `{text, year, significance, tone, display_in?}`; `None` when it has no
/// text or an unknown significance or tone. Markers in the text are sanitised.
pub fn normalise_story(value: &Value, valid: &HashSet<String>) -> Option<Story> {
    let item = value.as_object()?;
    let text = clean_text(item.get("text")?.as_str()?, valid);
    if text.is_empty() {
        return None;
    }
    let significance = enum_value(item.get("significance"))?;
    let tone = enum_value(item.get("tone"))?;
    let display_in = item
        .get("display_in")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|v| v.as_str().map(safe_text)).collect());
    Some(Story {
        text,
        year: story_year(item.get("year")),
        significance,
        tone,
        display_in,
    })
}

/// Normalises a story list; a non-list is an empty list (as the original).
fn normalise_stories(value: Option<&Value>, valid: &HashSet<String>) -> (Vec<Story>, usize) {
    let Some(items) = value.and_then(Value::as_array) else {
        return (Vec::new(), 0);
    };
    let stories: Vec<Story> = items
        .iter()
        .filter_map(|v| normalise_story(v, valid))
        .collect();
    let dropped = items.len() - stories.len();
    (stories, dropped)
}

fn as_object(text: &str) -> Option<Map<String, Value>> {
    match parse_json_lenient(text)? {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// Parses the biography reply; malformed or non-object replies give the safe default (no
/// biography, no stories).
pub fn parse_biography(text: &str, valid: &HashSet<String>) -> Biography {
    let Some(obj) = as_object(text) else {
        return Biography::default();
    };
    let biography = obj
        .get("biography")
        .and_then(Value::as_str)
        .map(|s| clean_text(s, valid))
        .filter(|s| !s.is_empty());
    let (personal_stories, dropped_stories) = normalise_stories(obj.get("personal_stories"), valid);
    Biography {
        biography,
        personal_stories,
        dropped_stories,
    }
}

/// Parses the relationship-story reply; `None` when it is not an object with a non-blank string
/// `summary`. A missing or unknown `narrative_style` becomes `prose-paragraph`.
pub fn parse_relationship_story(text: &str, valid: &HashSet<String>) -> Option<RelationshipStory> {
    let obj = as_object(text)?;
    let summary = clean_text(obj.get("summary")?.as_str()?, valid);
    if summary.is_empty() {
        return None;
    }
    let (details, dropped_details) = normalise_stories(obj.get("details"), valid);
    Some(RelationshipStory {
        summary,
        details,
        narrative_style: enum_value(obj.get("narrative_style")).unwrap_or_default(),
        dropped_details,
    })
}

/// Cleans the one-sentence narrative ([`clean_text`]).
pub fn clean_narrative(text: &str, valid: &HashSet<String>) -> String {
    clean_text(text, valid)
}

/// Parses the discovery reply; not an object or no `connections` list ⇒ nothing.
pub fn parse_discovery(text: &str, source: EntityRef, universe: &[CollectionEntity]) -> Discovery {
    let Some(obj) = as_object(text) else {
        return Discovery::default();
    };
    match obj.get("connections") {
        Some(Value::Array(items)) => validate_ai_connections(items, source, universe),
        _ => Discovery::default(),
    }
}

/// `int()` of the original: integers, numeric strings, floats truncated; within i32.
fn coerce_id(value: &Value) -> Option<i32> {
    let wide = match value {
        Value::Number(n) => n.as_i64().or_else(|| {
            n.as_f64()
                .filter(|f| f.is_finite())
                .map(|f| f.trunc() as i64)
        }),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        _ => None,
    }?;
    i32::try_from(wide).ok()
}

/// Confidence clamped to [0, 1]; missing or unreadable ⇒ 0.5.
fn coerce_confidence(value: Option<&Value>) -> f64 {
    let raw = match value {
        Some(Value::Number(n)) => n.as_f64(),
        Some(Value::String(s)) => s.trim().parse::<f64>().ok(),
        _ => None,
    };
    match raw {
        Some(c) if c.is_finite() => c.clamp(0.0, 1.0),
        _ => 0.5,
    }
}

fn clean_sub_type(value: Option<&Value>) -> Option<String> {
    let s = safe_text(value?.as_str()?).trim().to_uppercase();
    if s.is_empty() {
        return None;
    }
    Some(s.chars().take(MAX_SUB_TYPE_CHARS).collect())
}

/// Validates discovered connections in reply order (docs/compatibility.md, "Discovery"): objects with a target in the
/// first [`MAX_DISCOVERY_ENTITIES`] of `universe`, not the source itself, one of the five
/// relationships, once per canonical pair and relationship; stops after [`MAX_AI_CONNECTIONS`].
pub fn validate_ai_connections(
    items: &[Value],
    source: EntityRef,
    universe: &[CollectionEntity],
) -> Discovery {
    let members: HashSet<EntityRef> = universe
        .iter()
        .take(MAX_DISCOVERY_ENTITIES)
        .map(|c| c.entity)
        .collect();
    let mut seen: HashSet<(String, String, Relationship)> = HashSet::new();
    let mut out = Discovery::default();
    for item in items {
        if out.connections.len() >= MAX_AI_CONNECTIONS {
            break;
        }
        match validate_one(item, source, &members) {
            Some(conn) => {
                let (a, b) = (source.to_string(), conn.target().to_string());
                let pair = if a <= b { (a, b) } else { (b, a) };
                if seen.insert((pair.0, pair.1, conn.relationship)) {
                    out.connections.push(conn);
                } else {
                    out.dropped += 1;
                }
            }
            None => out.dropped += 1,
        }
    }
    out
}

fn validate_one(
    item: &Value,
    source: EntityRef,
    members: &HashSet<EntityRef>,
) -> Option<AiConnection> {
    let obj = item.as_object()?;
    let target_type: EntityType = obj.get("target_type")?.as_str()?.parse().ok()?;
    let target_id = coerce_id(obj.get("target_id")?)?;
    let relationship = Relationship::parse(obj.get("relationship")?.as_str()?)?;
    let target = EntityRef::new(target_type, target_id);
    if target == source || !members.contains(&target) {
        return None;
    }
    Some(AiConnection {
        source_type: source.entity_type,
        source_id: source.id,
        target_type,
        target_id,
        relationship,
        sub_type: clean_sub_type(obj.get("sub_type")),
        confidence: coerce_confidence(obj.get("confidence")),
        evidence: obj
            .get("evidence")
            .and_then(Value::as_str)
            .map(|s| safe_text(s).trim().to_string())
            .filter(|s| !s.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn valid(ids: &[&str]) -> HashSet<String> {
        ids.iter().map(|s| s.to_string()).collect()
    }

    /// The 7 fence cases of docs/compatibility.md, "Output hygiene": (reply, stripped).
    #[test]
    fn fence_stripping() {
        let object = "{\"a\": 1}";
        let backticks_inside = "{\"code\": \"use ``` here\"}";
        for (reply, stripped) in [
            ("```json\n{\"a\": 1}\n```", object),         // tagged
            ("```\n{\"a\": 1}\n```", object),             // untagged
            (object, object),                             // absent: unchanged
            ("  \n```json\n{\"a\": 1}\n```  \n", object), // surrounding white space
            (backticks_inside, backticks_inside),         // backticks inside are kept
            ("```json{\"a\": 1}```", object),             // on one line
            ("", ""),                                     // empty
            ("   ", ""),                                  // blank
        ] {
            assert_eq!(strip_fences(reply), stripped, "{reply:?}");
        }
    }

    #[test]
    fn lenient_json_recovers_an_object_in_prose() {
        assert_eq!(
            parse_json_lenient("Here you go:\n{\"a\": 1}\nHope that helps."),
            Some(json!({"a": 1}))
        );
        assert_eq!(parse_json_lenient("[1, 2]"), Some(json!([1, 2])));
        assert_eq!(parse_json_lenient("not json"), None);
        assert_eq!(parse_json_lenient("} oops {"), None);
    }

    /// The 11 marker cases of docs/compatibility.md, "Output hygiene": (text, valid ids,
    /// sanitised).
    #[test]
    fn marker_sanitising() {
        const BROWNING: &[&str] = &["author:32"];
        const NONE: &[&str] = &[];
        let cases = [
            // A valid marker is kept.
            (
                "Friend of {{entity:author:32|Robert Browning}}.",
                BROWNING,
                "Friend of {{entity:author:32|Robert Browning}}.",
            ),
            // An invalid one becomes its name.
            (
                "Met {{entity:author:99|John Ruskin}}.",
                BROWNING,
                "Met John Ruskin.",
            ),
            // Valid and invalid mixed.
            (
                "{{entity:author:32|Robert Browning}} and {{entity:publisher:7|Smith, Elder}}",
                BROWNING,
                "{{entity:author:32|Robert Browning}} and Smith, Elder",
            ),
            // No marker: unchanged.
            (
                "A plain sentence about Browning.",
                BROWNING,
                "A plain sentence about Browning.",
            ),
            // Empty text.
            ("", NONE, ""),
            // A repeated invalid marker.
            (
                "{{entity:author:9|Ruskin}} then {{entity:author:9|Ruskin}}",
                NONE,
                "Ruskin then Ruskin",
            ),
            // An unwrapped reference.
            (
                "She admired entity:author:Elizabeth Gaskell deeply.",
                NONE,
                "She admired Elizabeth Gaskell deeply.",
            ),
            // An unwrapped reference beside a valid marker.
            (
                "{{entity:author:32|Robert Browning}} met entity:author:Thomas Carlyle.",
                BROWNING,
                "{{entity:author:32|Robert Browning}} met Thomas Carlyle.",
            ),
            // Several unwrapped references.
            (
                "entity:author:Charles Dickens and entity:publisher:Chapman & Hall quarrelled",
                NONE,
                "Charles Dickens and Chapman & Hall quarrelled",
            ),
            // A typographic apostrophe in the name.
            (
                "as entity:author:Flann O\u{2019}Brien wrote",
                NONE,
                "as Flann O\u{2019}Brien wrote",
            ),
            // A particle in the name.
            (
                "printed by entity:binder:Riviere du Maurier in 1860",
                NONE,
                "printed by Riviere du Maurier in 1860",
            ),
            // A name must start with an ASCII capital …
            (
                "entity:author:Émile Zola's rival",
                NONE,
                "entity:author:Émile Zola's rival",
            ),
            // … and may go on with any letter.
            ("entity:author:Anne Brontë wrote", NONE, "Anne Brontë wrote"),
        ];
        for (text, ids, sanitised) in cases {
            assert_eq!(sanitize_markers(text, &valid(ids)), sanitised, "{text:?}");
        }
    }

    // --- stories (docs/decisions.md, "A failed biography is never a fresh profile") ---

    #[test]
    fn story_is_normalised() {
        let s = normalise_story(
            &json!({"text": " Eloped in 1846. ", "year": 1846, "significance": "Revelation",
                    "tone": "dramatic", "display_in": ["bio", 3], "extra": true}),
            &valid(&[]),
        )
        .unwrap();
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"text": "Eloped in 1846.", "year": 1846, "significance": "revelation",
                   "tone": "dramatic", "display_in": ["bio"]})
        );
    }

    #[test]
    fn story_year_variants() {
        let base = json!({"text": "t", "significance": "notable", "tone": "tragic"});
        let with = |year: Value| {
            let mut v = base.clone();
            v["year"] = year;
            normalise_story(&v, &valid(&[])).unwrap().year
        };
        assert_eq!(normalise_story(&base, &valid(&[])).unwrap().year, None);
        assert_eq!(with(json!(null)), None);
        assert_eq!(with(json!(1850.0)), Some(1850));
        assert_eq!(with(json!("1850")), Some(1850));
        assert_eq!(with(json!("c. 1850")), None);
        assert_eq!(with(json!(1850.5)), None);
        assert_eq!(with(json!(1e12)), None);
        let s = serde_json::to_value(normalise_story(&base, &valid(&[])).unwrap()).unwrap();
        assert_eq!(s["year"], Value::Null);
        assert!(s.get("display_in").is_none());
    }

    #[test]
    fn invalid_stories_are_dropped() {
        for bad in [
            json!("a string"),
            json!({"significance": "notable", "tone": "tragic"}),
            json!({"text": "  ", "significance": "notable", "tone": "tragic"}),
            json!({"text": 5, "significance": "notable", "tone": "tragic"}),
            json!({"text": "t", "significance": "huge", "tone": "tragic"}),
            json!({"text": "t", "significance": "notable"}),
            json!({"text": "t", "significance": "notable", "tone": "comic"}),
        ] {
            assert_eq!(normalise_story(&bad, &valid(&[])), None, "{bad}");
        }
    }

    #[test]
    fn biography_valid_json() {
        let b = parse_biography(
            r#"{"biography": "A novelist, friend of {{entity:author:32|Browning}} and {{entity:author:8|Eliot}}.",
                "personal_stories": [
                  {"text": "Walked London at night.", "year": null, "significance": "notable", "tone": "intellectual"},
                  {"text": "bad", "significance": "?", "tone": "tragic"}
                ]}"#,
            &valid(&["author:32"]),
        );
        assert_eq!(
            b.biography.as_deref(),
            Some("A novelist, friend of {{entity:author:32|Browning}} and Eliot.")
        );
        assert_eq!(b.personal_stories.len(), 1);
        assert_eq!(b.dropped_stories, 1);
        assert!(b.is_usable());
    }

    #[test]
    fn biography_fenced_json() {
        let b = parse_biography(
            "```json\n{\"biography\": \"Bio.\", \"personal_stories\": []}\n```",
            &valid(&[]),
        );
        assert_eq!(b.biography.as_deref(), Some("Bio."));
    }

    #[test]
    fn biography_safe_defaults() {
        for text in [
            "not json",
            "[1, 2]",
            "\"just a string\"",
            "",
            "{\"personal_stories\": []}",
            "{\"biography\": \"   \"}",
            "{\"biography\": {\"nested\": 1}}",
        ] {
            let b = parse_biography(text, &valid(&[]));
            assert_eq!(b.biography, None, "{text}");
            assert!(!b.is_usable());
        }
    }

    #[test]
    fn biography_non_list_stories_are_empty() {
        for stories in ["\"many\"", "{\"a\": 1}", "null"] {
            let b = parse_biography(
                &format!("{{\"biography\": \"B.\", \"personal_stories\": {stories}}}"),
                &valid(&[]),
            );
            assert_eq!(b.personal_stories, vec![]);
            assert_eq!(b.dropped_stories, 0);
        }
        let missing = parse_biography("{\"biography\": \"B.\"}", &valid(&[]));
        assert_eq!(missing.personal_stories, vec![]);
    }

    #[test]
    fn relationship_story_cases() {
        let v = valid(&[]);
        let s = parse_relationship_story(
            r#"{"summary": "Rivals.", "details": [{"text": "Feud.", "year": 1850, "significance": "notable", "tone": "scandalous"}], "narrative_style": "timeline-events", "extra": 1}"#,
            &v,
        )
        .unwrap();
        assert_eq!(s.summary, "Rivals.");
        assert_eq!(s.details.len(), 1);
        assert_eq!(s.narrative_style, NarrativeStyle::TimelineEvents);
        assert_eq!(
            serde_json::to_value(&s).unwrap(),
            json!({"summary": "Rivals.", "details": [{"text": "Feud.", "year": 1850,
                   "significance": "notable", "tone": "scandalous"}], "narrative_style": "timeline-events"})
        );
        assert_eq!(parse_relationship_story(r#"{"details": []}"#, &v), None);
        assert_eq!(parse_relationship_story(r#"{"summary": ""}"#, &v), None);
        assert_eq!(parse_relationship_story("[1]", &v), None);
        assert_eq!(parse_relationship_story("nope", &v), None);
        let no_details = parse_relationship_story(r#"{"summary": "S"}"#, &v).unwrap();
        assert_eq!(no_details.details, vec![]);
        assert_eq!(no_details.narrative_style, NarrativeStyle::ProseParagraph);
        let bad_details = parse_relationship_story(
            r#"{"summary": "S", "details": "x", "narrative_style": "poem"}"#,
            &v,
        )
        .unwrap();
        assert_eq!(bad_details.details, vec![]);
        assert_eq!(bad_details.narrative_style, NarrativeStyle::ProseParagraph);
        let fenced = parse_relationship_story("```json\n{\"summary\": \"S\"}\n```", &v);
        assert!(fenced.is_some());
    }

    #[test]
    fn narrative_is_trimmed_and_sanitised() {
        assert_eq!(
            clean_narrative("  Linked via {{entity:author:3|X}}. \n", &valid(&[])),
            "Linked via X."
        );
    }

    // --- AI connection validation: docs/compatibility.md, "Discovery" ---

    fn universe() -> Vec<CollectionEntity> {
        ["author:1", "author:2", "publisher:3", "binder:4"]
            .iter()
            .map(|r| CollectionEntity {
                entity: r.parse().unwrap(),
                name: r.to_string(),
            })
            .collect()
    }

    fn source() -> EntityRef {
        "author:1".parse().unwrap()
    }

    fn validate(items: Value) -> Discovery {
        validate_ai_connections(items.as_array().unwrap(), source(), &universe())
    }

    #[test]
    fn valid_entry_passes_unchanged() {
        let d = validate(
            json!([{"target_type": "author", "target_id": 2, "relationship": "family",
            "sub_type": "MARRIAGE", "confidence": 0.9, "evidence": "Married in 1846."}]),
        );
        assert_eq!(d.dropped, 0);
        assert_eq!(
            d.connections,
            vec![AiConnection {
                source_type: EntityType::Author,
                source_id: 1,
                target_type: EntityType::Author,
                target_id: 2,
                relationship: Relationship::Family,
                sub_type: Some("MARRIAGE".into()),
                confidence: 0.9,
                evidence: Some("Married in 1846.".into()),
            }]
        );
    }

    #[test]
    fn empty_list_gives_nothing() {
        assert_eq!(validate(json!([])), Discovery::default());
    }

    #[test]
    fn invalid_entries_are_dropped() {
        let d = validate(json!([
            {"target_type": "author", "target_id": 1, "relationship": "family"},
            {"target_type": "author", "target_id": 2, "relationship": "enemy"},
            {"target_type": "author", "target_id": 77, "relationship": "family"},
            "not an object",
            {"target_id": 2, "relationship": "family"},
            {"target_type": "author", "target_id": null, "relationship": "family"},
            {"target_type": "author", "target_id": 2},
            {"target_type": "editor", "target_id": 2, "relationship": "family"},
            {"target_type": "author", "target_id": "two", "relationship": "family"}
        ]));
        assert_eq!(d.connections, vec![]);
        assert_eq!(d.dropped, 9);
    }

    #[test]
    fn duplicates_are_kept_once_per_relationship() {
        let d = validate(json!([
            {"target_type": "author", "target_id": 2, "relationship": "family", "confidence": 0.4},
            {"target_type": "author", "target_id": "2", "relationship": "family", "confidence": 0.9},
            {"target_type": "author", "target_id": 2, "relationship": "scandal"}
        ]));
        assert_eq!(d.connections.len(), 2);
        assert_eq!(d.connections[0].confidence, 0.4);
        assert_eq!(d.connections[1].relationship, Relationship::Scandal);
        assert_eq!(d.dropped, 1);
    }

    #[test]
    fn confidence_is_clamped_and_defaulted() {
        let d = validate(json!([
            {"target_type": "author", "target_id": 2, "relationship": "family", "confidence": 2.5},
            {"target_type": "publisher", "target_id": 3, "relationship": "family"},
            {"target_type": "binder", "target_id": 4, "relationship": "family", "confidence": "high"},
            {"target_type": "author", "target_id": 2, "relationship": "scandal", "confidence": -1},
            {"target_type": "publisher", "target_id": 3, "relationship": "scandal", "confidence": "0.7"}
        ]));
        let c: Vec<f64> = d.connections.iter().map(|c| c.confidence).collect();
        assert_eq!(c, [1.0, 0.5, 0.5, 0.0, 0.7]);
    }

    #[test]
    fn ids_coerce_like_python_int() {
        let d = validate(json!([
            {"target_type": "publisher", "target_id": "3", "relationship": "influence"},
            {"target_type": "binder", "target_id": 4.9, "relationship": "influence"}
        ]));
        let targets: Vec<String> = d
            .connections
            .iter()
            .map(|c| c.target().to_string())
            .collect();
        assert_eq!(targets, ["publisher:3", "binder:4"]);
    }

    #[test]
    fn sub_type_is_upper_cased_trimmed_and_truncated() {
        let long = "x".repeat(80);
        let d = validate(json!([
            {"target_type": "author", "target_id": 2, "relationship": "family", "sub_type": "  marriage "},
            {"target_type": "publisher", "target_id": 3, "relationship": "family", "sub_type": long},
            {"target_type": "binder", "target_id": 4, "relationship": "family", "sub_type": 7}
        ]));
        assert_eq!(d.connections[0].sub_type.as_deref(), Some("MARRIAGE"));
        assert_eq!(
            d.connections[1].sub_type.as_ref().unwrap().chars().count(),
            50
        );
        assert_eq!(d.connections[2].sub_type, None);
    }

    #[test]
    fn at_most_ten_are_accepted() {
        let many: Vec<CollectionEntity> = (1..=20)
            .map(|i| CollectionEntity {
                entity: EntityRef::new(EntityType::Author, i),
                name: format!("A{i}"),
            })
            .collect();
        let items: Vec<Value> = (2..=20)
            .map(|i| json!({"target_type": "author", "target_id": i, "relationship": "friendship"}))
            .collect();
        let d = validate_ai_connections(&items, source(), &many);
        assert_eq!(d.connections.len(), 10);
        assert_eq!(d.connections[9].target_id, 11);
    }

    #[test]
    fn discovery_reply_parsing() {
        let u = universe();
        let ok = parse_discovery(
            "```json\n{\"connections\": [{\"target_type\": \"author\", \"target_id\": 2, \"relationship\": \"friendship\"}]}\n```",
            source(),
            &u,
        );
        assert_eq!(ok.connections.len(), 1);
        for bad in ["garbage", "[]", "{\"connections\": {}}", "{}"] {
            assert_eq!(
                parse_discovery(bad, source(), &u),
                Discovery::default(),
                "{bad}"
            );
        }
    }

    #[test]
    fn ai_connection_serialises_to_the_legacy_shape() {
        let d = validate(
            json!([{"target_type": "publisher", "target_id": 3, "relationship": "collaboration"}]),
        );
        assert_eq!(
            serde_json::to_value(&d.connections[0]).unwrap(),
            json!({"source_type": "author", "source_id": 1, "target_type": "publisher", "target_id": 3,
                   "relationship": "collaboration", "sub_type": null, "confidence": 0.5, "evidence": null})
        );
    }

    // --- stored text is safe text (docs/reliability.md) ---

    #[test]
    fn control_characters_are_removed_but_newlines_and_tabs_kept() {
        assert_eq!(
            safe_text("a\u{0}b\u{7}c\r\nd\te\u{1b}[0m\u{9f}"),
            "abc\nd\te[0m"
        );
        let story = parse_relationship_story(
            "{\"summary\": \"Met\\u0000 in Rome.\", \"details\": [{\"text\": \"\\u0000\", \
             \"significance\": \"notable\", \"tone\": \"tragic\"}]}",
            &valid(&[]),
        )
        .unwrap();
        assert_eq!(story.summary, "Met in Rome.");
        assert_eq!(
            story.details,
            vec![],
            "a story of nothing but NUL is dropped"
        );
        assert_eq!(story.dropped_details, 1);
        let bio = parse_biography("{\"biography\": \"\\u0000\\u0001 \"}", &valid(&[]));
        assert_eq!(bio.biography, None, "nothing left is no biography");
    }

    #[test]
    fn every_stored_string_is_capped() {
        let long = "x".repeat(MAX_STORED_CHARS * 2);
        let reply = json!({"biography": long, "personal_stories": [
            {"text": long, "significance": "notable", "tone": "tragic", "display_in": [long]}]});
        let b = parse_biography(&reply.to_string(), &valid(&[]));
        assert_eq!(b.biography.unwrap().chars().count(), MAX_STORED_CHARS);
        let story = &b.personal_stories[0];
        assert_eq!(story.text.chars().count(), MAX_STORED_CHARS);
        assert_eq!(
            story.display_in.as_ref().unwrap()[0].chars().count(),
            MAX_STORED_CHARS
        );
        assert_eq!(
            clean_narrative(&long, &valid(&[])).chars().count(),
            MAX_STORED_CHARS
        );
        let d = validate(json!([{"target_type": "author", "target_id": 2,
            "relationship": "family", "evidence": long}]));
        assert_eq!(
            d.connections[0].evidence.as_ref().unwrap().chars().count(),
            MAX_STORED_CHARS
        );
    }

    #[test]
    fn a_replacement_that_completes_a_marker_is_sanitised_again() {
        let v = valid(&["author:1"]);
        assert_eq!(
            sanitize_markers("{{entity:author:9|{{entity:author:8|X}}}}", &v),
            "X"
        );
        assert_eq!(sanitize_markers("entity:a:entity:b:Foo", &v), "Foo");
        assert_eq!(
            sanitize_markers("{{entity:author:9|{{entity:author:1|Y}}}}", &v),
            "{{entity:author:1|Y}}"
        );
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Text built from the pieces that matter: markers (valid and not), `entity:` prefixes,
        /// braces, control characters, whitespace and arbitrary characters.
        fn text() -> impl Strategy<Value = String> {
            let piece = prop_oneof![
                Just("{{entity:author:1|Ann}}".to_string()),
                Just("{{entity:author:2|".to_string()),
                Just("{{entity:".to_string()),
                Just("entity:author:".to_string()),
                Just("}}".to_string()),
                Just("|".to_string()),
                Just(" and ".to_string()),
                "[A-Z][a-z]{0,4}",
                "[0-9]{1,2}",
                "[\\x00-\\x1f\\x7f\\u{80}-\\u{9f}]",
                "[ \\n\\t]",
                any::<char>().prop_map(String::from),
            ];
            proptest::collection::vec(piece, 0..24).prop_map(|p| p.concat())
        }

        fn valid_ids() -> HashSet<String> {
            valid(&["author:1"])
        }

        proptest! {
            #[test]
            fn clean_text_is_idempotent(s in text()) {
                let once = clean_text(&s, &valid_ids());
                prop_assert_eq!(clean_text(&once, &valid_ids()), once.clone());
            }

            #[test]
            fn clean_text_has_no_control_characters_and_no_invalid_marker(s in text()) {
                let out = clean_text(&s, &valid_ids());
                prop_assert!(
                    out.chars().all(|c| !c.is_control() || c == '\n' || c == '\t'),
                    "{:?}", out
                );
                for c in MARKER.captures_iter(&out) {
                    prop_assert!(valid_ids().contains(&format!("{}:{}", &c[1], &c[2])), "{:?}", out);
                }
                prop_assert!(!UNWRAPPED.is_match(&out), "{:?}", out);
                prop_assert!(out.chars().count() <= MAX_STORED_CHARS);
            }

            #[test]
            fn replies_store_no_nul_anywhere(s in text()) {
                let reply = json!({"biography": s, "summary": s, "personal_stories": [
                    {"text": s, "significance": "notable", "tone": "tragic", "display_in": [s]}],
                    "details": [{"text": s, "significance": "notable", "tone": "tragic"}],
                    "connections": [{"target_type": "author", "target_id": 2,
                        "relationship": "family", "sub_type": s, "evidence": s}]}).to_string();
                let v = valid_ids();
                let stored = serde_json::json!([
                    serde_json::to_value(parse_biography(&reply, &v).personal_stories).unwrap(),
                    parse_biography(&reply, &v).biography,
                    serde_json::to_value(parse_relationship_story(&reply, &v)).unwrap(),
                    serde_json::to_value(parse_discovery(&reply, source(), &universe()).connections).unwrap(),
                    clean_narrative(&s, &v),
                ]).to_string();
                prop_assert!(!stored.contains("\\u0000"), "{}", stored);
                prop_assert!(!stored.contains('\0'));
            }
        }
    }
}
