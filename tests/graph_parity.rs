//! Golden parity: our graph of `collection-small.sql` against the one the original built from it
//! (`shared/reference/fixtures/README.md` says what must match).
//!
//! The rows are read from the fixture's INSERT statements the way `Store::graph_rows` reads them
//! from PostgreSQL (qualifying books ordered by id, referenced entities, all AI connections).

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::Utc;
use profile_worker::graph::{ConnectionType, Graph, GraphParams, Node, build, from_json};
use profile_worker::model::{EntityType, GraphRows};
use support::graph::{fixture, golden_rows};

/// Node fields that must be identical (everything but `book_ids`).
type NodeKey = (
    i32,
    String,
    EntityType,
    Option<i32>,
    Option<i32>,
    Option<String>,
    Option<String>,
    Option<i32>,
    Option<i32>,
    Option<String>,
    u32,
);

fn node_key(n: &Node) -> NodeKey {
    (
        n.entity_id,
        n.name.clone(),
        n.entity_type,
        n.birth_year,
        n.death_year,
        n.era.map(|e| e.to_string()),
        n.tier.clone(),
        n.founded_year,
        n.closed_year,
        n.image_url.clone(),
        n.book_count,
    )
}

/// Per entity node id, its qualifying books that have an author (the books a node can list).
fn books_by_entity(rows: &GraphRows) -> HashMap<String, BTreeSet<i32>> {
    let mut out: HashMap<String, BTreeSet<i32>> = HashMap::new();
    for b in rows.books.iter().filter(|b| b.author_id.is_some()) {
        let links = [
            (EntityType::Author, b.author_id),
            (EntityType::Publisher, b.publisher_id),
            (EntityType::Binder, b.binder_id),
        ];
        for (t, id) in links {
            if let Some(id) = id {
                out.entry(format!("{t}:{id}")).or_default().insert(b.id);
            }
        }
    }
    out
}

fn check_book_ids(graph: &Graph, books: &HashMap<String, BTreeSet<i32>>, who: &str) {
    for n in &graph.nodes {
        let ids: BTreeSet<i32> = n.book_ids.iter().copied().collect();
        assert_eq!(
            ids.len(),
            n.book_ids.len(),
            "{who}: {} book_ids repeat",
            n.id
        );
        assert_eq!(
            n.book_ids.len(),
            (n.book_count as usize).min(10),
            "{who}: {} lists {} of {} books",
            n.id,
            n.book_ids.len(),
            n.book_count
        );
        assert!(
            ids.is_subset(&books[&n.id]),
            "{who}: {} lists books that are not its own",
            n.id
        );
    }
}

/// For each pair of authors, the publishers of both: any of them may name their
/// `shared_publisher` edge, since which one comes first depends on the database's row order.
fn publishers_naming_pairs(graph: &Graph) -> HashMap<String, BTreeSet<String>> {
    let mut authors_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for e in graph
        .edges
        .iter()
        .filter(|e| e.edge_type == ConnectionType::Publisher)
    {
        authors_of
            .entry(e.target.as_str())
            .or_default()
            .insert(e.source.as_str());
    }
    let names: HashMap<&str, &str> = graph
        .nodes
        .iter()
        .map(|n| (n.id.as_str(), n.name.as_str()))
        .collect();
    let mut out: HashMap<String, BTreeSet<String>> = HashMap::new();
    for (publisher, authors) in authors_of {
        for a in &authors {
            for b in &authors {
                if a < b {
                    out.entry(format!("e:{a}:{b}"))
                        .or_default()
                        .insert(format!("Both published by {}", names[publisher]));
                }
            }
        }
    }
    out
}

#[test]
fn graph_of_the_golden_collection_matches_the_original() {
    let golden = from_json(&fixture("python-graph-small.json")).expect("golden parses");
    let params = GraphParams::default();
    let rows = golden_rows(params.max_books as usize, params.include_binders);
    let ours = build(&rows, &params, Utc::now());

    // Meta, except generated_at.
    let mut meta = ours.meta.clone();
    meta.generated_at = golden.meta.generated_at;
    assert_eq!(meta, golden.meta);

    // Node set with every field but book_ids, which are checked for what they may be.
    let node_map = |g: &Graph| -> BTreeMap<String, NodeKey> {
        g.nodes
            .iter()
            .map(|n| (n.id.clone(), node_key(n)))
            .collect()
    };
    let (our_nodes, golden_nodes) = (node_map(&ours), node_map(&golden));
    assert_eq!(our_nodes.len(), ours.nodes.len(), "node ids are unique");
    for (id, key) in &golden_nodes {
        assert_eq!(our_nodes.get(id), Some(key), "node {id}");
    }
    assert_eq!(our_nodes.len(), golden_nodes.len());
    let books = books_by_entity(&rows);
    check_book_ids(&ours, &books, "ours");
    check_book_ids(&golden, &books, "golden");

    // Edge set: ids, ends, type, strength, evidence; shared books as sets.
    type EdgeKey = (String, String, ConnectionType, u8, Option<BTreeSet<i32>>);
    let edge_map = |g: &Graph| -> BTreeMap<String, (EdgeKey, Option<String>)> {
        g.edges
            .iter()
            .map(|e| {
                let shared = e
                    .shared_book_ids
                    .as_ref()
                    .map(|ids| ids.iter().copied().collect());
                (
                    e.id.clone(),
                    (
                        (
                            e.source.clone(),
                            e.target.clone(),
                            e.edge_type,
                            e.strength,
                            shared,
                        ),
                        e.evidence.clone(),
                    ),
                )
            })
            .collect()
    };
    let (our_edges, golden_edges) = (edge_map(&ours), edge_map(&golden));
    assert_eq!(our_edges.len(), ours.edges.len(), "edge ids are unique");
    let missing: Vec<&String> = golden_edges
        .keys()
        .filter(|id| !our_edges.contains_key(*id))
        .collect();
    let extra: Vec<&String> = our_edges
        .keys()
        .filter(|id| !golden_edges.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );
    let naming = publishers_naming_pairs(&golden);
    for (id, (golden_key, golden_evidence)) in &golden_edges {
        let (our_key, our_evidence) = &our_edges[id];
        assert_eq!(our_key, golden_key, "edge {id}");
        if golden_key.2 == ConnectionType::SharedPublisher {
            let allowed = &naming[id];
            assert!(
                allowed.contains(golden_evidence.as_deref().unwrap())
                    && allowed.contains(our_evidence.as_deref().unwrap()),
                "edge {id}: {our_evidence:?} / {golden_evidence:?} not among {allowed:?}"
            );
        } else {
            assert_eq!(our_evidence, golden_evidence, "edge {id}");
        }
    }

    // Order: node kinds and edge kinds in the original's sequence.
    let kind_rank = |t: ConnectionType| match t {
        ConnectionType::Publisher => 0,
        ConnectionType::SharedPublisher => 1,
        ConnectionType::Binder => 2,
        _ => 3,
    };
    assert!(
        ours.edges
            .windows(2)
            .all(|w| kind_rank(w[0].edge_type) <= kind_rank(w[1].edge_type))
    );
    assert!(
        ours.nodes
            .windows(2)
            .all(|w| w[0].entity_type <= w[1].entity_type)
    );
}

#[test]
fn golden_build_is_deterministic() {
    let params = GraphParams::default();
    let rows = golden_rows(params.max_books as usize, true);
    let at = Utc::now();
    assert_eq!(build(&rows, &params, at), build(&rows, &params, at));
}
