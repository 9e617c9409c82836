//! The cached graph's JSON against what the Python API writes (docs/compatibility.md, "Graph cache in Redis").

mod support;

use profile_worker::graph::{ConnectionType, Era, from_json, to_python_json};
use profile_worker::model::EntityType;

fn golden() -> String {
    support::graph::fixture("python-graph-small.json")
}

/// Written by CPython's `json.dumps` from a hand-made `SocialCirclesResponse` with non-ASCII
/// names (BMP and astral), quotes, a tab, a backslash and DEL.
const UNICODE: &str = include_str!("data/python-graph-unicode.json");

#[test]
fn the_originals_cache_value_parses_as_is() {
    let graph = from_json(&golden()).expect("golden graph parses");
    assert_eq!(graph.nodes.len(), 264);
    assert_eq!(graph.edges.len(), 2513);
    assert_eq!(graph.meta.total_books, 1000);
    assert_eq!(graph.meta.date_range, [1743, 1950]);
    assert_eq!(
        graph.meta.generated_at.to_rfc3339(),
        "2026-11-23T09:20:42.945775+00:00"
    );
    assert_eq!(graph.nodes[0].era, Some(Era::Victorian));
    assert_eq!(graph.nodes[0].entity_type, EntityType::Author);
}

#[test]
fn our_writer_reproduces_python_bytes() {
    let graph = from_json(&golden()).unwrap();
    let ours = to_python_json(&graph);
    assert_eq!(ours, golden().trim_end_matches('\n'));
    assert_eq!(from_json(&ours).unwrap(), graph);

    let unicode = from_json(UNICODE).unwrap();
    assert_eq!(to_python_json(&unicode), UNICODE);
}

#[test]
fn escapes_decode_to_the_original_text() {
    let graph = from_json(UNICODE).unwrap();
    assert_eq!(graph.nodes[0].name, "Émile Zola — “Nana”");
    assert_eq!(graph.nodes[1].name, "Charlotte Brontë");
    assert_eq!(graph.nodes[2].name, "Smith, Elder & Co.\ttab\\slash \"q\"");
    assert_eq!(graph.nodes[3].name, "Rivière & Son 𝔊");
    assert_eq!(graph.nodes[3].entity_type, EntityType::Binder);
    assert_eq!(
        graph.edges[2].evidence.as_deref(),
        Some("Letters ✉ exchanged 🙂\u{7f}")
    );
    assert_eq!(graph.edges[2].edge_type, ConnectionType::Friendship);
    assert_eq!(
        graph.meta.generated_at.to_rfc3339(),
        "2026-02-08T10:11:12.000345+00:00"
    );
}

#[test]
fn optional_fields_may_be_missing() {
    // An older writer: no nulls written, no era/tier/years, no truncated flag.
    let text = r#"{"nodes": [{"id": "author:1", "entity_id": 1, "name": "A", "type": "author",
        "book_count": 3, "book_ids": [1, 2, 3]}, {"id": "publisher:2", "entity_id": 2, "name": "P",
        "type": "publisher"}], "edges": [{"id": "e:author:1:publisher:2", "source": "author:1",
        "target": "publisher:2", "type": "publisher", "strength": 6}], "meta": {"total_books": 3,
        "total_authors": 1, "total_publishers": 1, "total_binders": 0, "date_range": [1800, 1900],
        "generated_at": "2026-01-01T00:00:00+00:00", "unknown_extra": 1}, "extra": true}"#;
    let graph = from_json(text).unwrap();
    assert_eq!(graph.nodes[0].era, None);
    assert_eq!(graph.nodes[1].book_count, 0);
    assert!(graph.nodes[1].book_ids.is_empty());
    assert_eq!(graph.edges[0].evidence, None);
    assert_eq!(graph.edges[0].shared_book_ids, None);
    assert!(!graph.meta.truncated);
    // Written back, every field is present again.
    let written = to_python_json(&graph);
    assert!(written.contains(r#""era": null, "tier": null"#));
    assert!(written.contains(r#""start_year": null, "end_year": null"#));
    assert!(written.contains(r#""generated_at": "2026-01-01T00:00:00Z", "truncated": false"#));
    assert_eq!(from_json(&written).unwrap(), graph);
}

#[test]
fn invalid_values_are_rejected() {
    let golden = golden();
    let bad_strength = golden.replacen(r#""strength": 4"#, r#""strength": 12"#, 1);
    assert!(from_json(&bad_strength).is_err());
    let bad_era = golden.replacen(r#""era": "victorian""#, r#""era": "georgian""#, 1);
    assert!(from_json(&bad_era).is_err());
    assert!(from_json(&golden[..golden.len() / 2]).is_err());
    assert!(from_json(r#"{"nodes": []}"#).is_err());
}
