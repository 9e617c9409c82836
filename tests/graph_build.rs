//! The graph behaviours the original's tests pin down (docs/compatibility.md, "Social-circles graph"), on hand-made rows.
//!
//! The status filter belongs to the store (its rows hold qualifying books only); what the
//! builder owns is everything after that.

mod support;

use chrono::{TimeZone, Utc};
use profile_worker::graph::{ConnectionType, Era, Graph, GraphParams, build};
use profile_worker::model::{EntityType, GraphRows};
use support::graph::{ai, author, book, org};

fn built(rows: &GraphRows) -> Graph {
    build(rows, &GraphParams::default(), Utc::now())
}

fn ids(graph: &Graph) -> Vec<&str> {
    graph.nodes.iter().map(|n| n.id.as_str()).collect()
}

fn edge<'g>(graph: &'g Graph, id: &str) -> &'g profile_worker::graph::Edge {
    graph
        .edges
        .iter()
        .find(|e| e.id == id)
        .unwrap_or_else(|| panic!("no edge {id} in {:?}", graph.edges))
}

/// Two authors sharing publisher 1 and binder 1; author 2 also with publisher 2.
fn small() -> GraphRows {
    GraphRows {
        books: vec![
            book(1, Some(1), Some(1), Some(1)),
            book(2, Some(1), Some(1), None),
            book(3, Some(2), Some(1), Some(1)),
            book(4, Some(2), Some(2), None),
            book(5, None, Some(3), Some(2)),
        ],
        authors: vec![author(1, Some(1850), Some(1900)), author(2, None, None)],
        publishers: vec![org(1), org(2), org(3)],
        binders: vec![org(1), org(2)],
        ai_connections: vec![],
    }
}

#[test]
fn empty_rows_give_an_empty_graph_with_meta() {
    let g = built(&GraphRows::default());
    assert!(g.nodes.is_empty() && g.edges.is_empty());
    assert_eq!(
        (
            g.meta.total_books,
            g.meta.total_authors,
            g.meta.total_publishers,
            g.meta.total_binders
        ),
        (0, 0, 0, 0)
    );
    assert_eq!(g.meta.date_range, [1800, 1900]);
    assert!(!g.meta.truncated);
}

#[test]
fn node_fields_per_type() {
    let mut rows = small();
    rows.authors[0].tier = Some("TIER_1".into());
    rows.authors[0].image_url = Some("https://cdn/a1.jpg".into());
    let at = Utc.with_ymd_and_hms(2026, 2, 1, 10, 0, 0).unwrap();
    let g = build(&rows, &GraphParams::default(), at);
    assert_eq!(
        ids(&g),
        [
            "author:1",
            "author:2",
            "publisher:1",
            "publisher:2",
            "binder:1"
        ]
    );
    let a = g.node("author:1").unwrap();
    assert_eq!(a.entity_id, 1);
    assert_eq!(a.name, "Author 1");
    assert_eq!(a.entity_type, EntityType::Author);
    assert_eq!((a.birth_year, a.death_year), (Some(1850), Some(1900)));
    assert_eq!(a.era, Some(Era::Victorian));
    assert_eq!(a.tier.as_deref(), Some("TIER_1"));
    assert_eq!(a.image_url.as_deref(), Some("https://cdn/a1.jpg"));
    assert_eq!((a.book_count, a.book_ids.clone()), (2, vec![1, 2]));
    assert_eq!(g.node("author:2").unwrap().era, Some(Era::Unknown));

    let p = g.node("publisher:1").unwrap();
    assert_eq!(p.entity_type, EntityType::Publisher);
    assert_eq!((p.book_count, p.book_ids.clone()), (3, vec![1, 2, 3]));
    assert_eq!(p.tier.as_deref(), Some("TIER_1"));
    assert_eq!(
        p.image_url.as_deref(),
        Some("https://cdn.example.com/o/1.jpg")
    );
    // The rows have founded/closed years; the original never copies them (nor an era).
    assert_eq!(
        (
            p.birth_year,
            p.death_year,
            p.era,
            p.founded_year,
            p.closed_year
        ),
        (None, None, None, None, None)
    );
    assert_eq!(g.meta.generated_at, at);
}

#[test]
fn books_without_author_only_count_in_total_books() {
    let g = built(&small());
    assert_eq!(g.meta.total_books, 5);
    // Publisher 3 and binder 2 appear only on the author-less book 5.
    assert!(g.node("publisher:3").is_none());
    assert!(g.node("binder:2").is_none());
    assert_eq!(
        (
            g.meta.total_authors,
            g.meta.total_publishers,
            g.meta.total_binders
        ),
        (2, 2, 1)
    );
}

#[test]
fn book_derived_edges() {
    let g = built(&small());
    let e = edge(&g, "e:author:1:publisher:1");
    assert_eq!(
        (e.source.as_str(), e.target.as_str()),
        ("author:1", "publisher:1")
    );
    assert_eq!(e.edge_type, ConnectionType::Publisher);
    assert_eq!(e.strength, 4);
    assert_eq!(e.evidence.as_deref(), Some("Published 2 work(s)"));
    assert_eq!(e.shared_book_ids, Some(vec![1, 2]));
    assert_eq!((e.start_year, e.end_year), (None, None));

    let one = edge(&g, "e:author:2:publisher:2");
    assert_eq!(
        (one.strength, one.evidence.as_deref()),
        (2, Some("Published 1 work(s)"))
    );

    let shared = edge(&g, "e:author:1:author:2");
    assert_eq!(shared.edge_type, ConnectionType::SharedPublisher);
    assert_eq!(shared.strength, 3);
    assert_eq!(shared.evidence.as_deref(), Some("Both published by Org 1"));
    assert_eq!(shared.shared_book_ids, None);

    let bound = edge(&g, "e:author:1:binder:1");
    assert_eq!(bound.edge_type, ConnectionType::Binder);
    assert_eq!(
        (bound.strength, bound.evidence.as_deref()),
        (2, Some("Bound 1 work(s)"))
    );
    assert_eq!(bound.shared_book_ids, Some(vec![1]));

    let kinds: Vec<ConnectionType> = g.edges.iter().map(|e| e.edge_type).collect();
    assert_eq!(
        kinds,
        [
            ConnectionType::Publisher,
            ConnectionType::Publisher,
            ConnectionType::Publisher,
            ConnectionType::SharedPublisher,
            ConnectionType::Binder,
            ConnectionType::Binder
        ]
    );
}

/// Books 1..=`books`, all by author 1, published by publisher 1 and bound by binder 1.
fn one_of_each(books: i32) -> GraphRows {
    GraphRows {
        books: (1..=books)
            .map(|i| book(i, Some(1), Some(1), Some(1)))
            .collect(),
        authors: vec![author(1, None, None)],
        publishers: vec![org(1)],
        binders: vec![org(1)],
        ai_connections: vec![],
    }
}

#[test]
fn strength_saturates_at_five_shared_books() {
    let rows = one_of_each(7);
    let mut five = rows.clone();
    five.books.truncate(5);
    for (r, n) in [(&five, 5), (&rows, 7)] {
        let g = built(r);
        let e = edge(&g, "e:author:1:publisher:1");
        assert_eq!(e.strength, 10);
        assert_eq!(e.evidence, Some(format!("Published {n} work(s)")));
        assert_eq!(edge(&g, "e:author:1:binder:1").strength, 10);
    }
    let mut four = rows;
    four.books.truncate(4);
    assert_eq!(edge(&built(&four), "e:author:1:publisher:1").strength, 8);
}

#[test]
fn binders_can_be_left_out() {
    let rows = small();
    let params = GraphParams {
        include_binders: false,
        ..GraphParams::default()
    };
    let g = build(&rows, &params, Utc::now());
    assert!(g.nodes.iter().all(|n| n.entity_type != EntityType::Binder));
    assert!(
        g.edges
            .iter()
            .all(|e| e.edge_type != ConnectionType::Binder)
    );
    assert_eq!(g.meta.total_binders, 0);
    assert!(g.node("publisher:1").is_some());
}

#[test]
fn min_book_count_filters_every_type_and_their_edges() {
    let params = GraphParams {
        min_book_count: 2,
        ..GraphParams::default()
    };
    let g = build(&small(), &params, Utc::now());
    // Authors and binder:1 have 2 books, publisher:1 has 3: they stay. publisher:2 (1 book)
    // falls out with its edge; one-book edges between kept nodes stay.
    assert_eq!(ids(&g), ["author:1", "author:2", "publisher:1", "binder:1"]);
    assert!(g.edges.iter().all(|e| e.target != "publisher:2"));
    assert_eq!(edge(&g, "e:author:1:binder:1").strength, 2);
}

#[test]
fn era_mapping_table() {
    let years = [
        (Some(1750), Era::PreRomantic),
        (Some(1788), Era::PreRomantic),
        (Some(1789), Era::Romantic),
        (Some(1800), Era::Romantic),
        (Some(1837), Era::Victorian),
        (Some(1850), Era::Victorian),
        (Some(1901), Era::Edwardian),
        (Some(1905), Era::Edwardian),
        (Some(1910), Era::Post1910),
        (Some(1920), Era::Post1910),
        (None, Era::Unknown),
    ];
    let rows = GraphRows {
        books: (1..=years.len() as i32)
            .map(|i| book(i, Some(i), None, None))
            .collect(),
        authors: years
            .iter()
            .enumerate()
            .map(|(i, (y, _))| author(i as i32 + 1, *y, None))
            .collect(),
        ..GraphRows::default()
    };
    let g = built(&rows);
    for (node, (year, era)) in g.nodes.iter().zip(years) {
        assert_eq!(node.era, Some(era), "{year:?}");
        assert_eq!(Era::from_birth_year(year), era);
    }
}

#[test]
fn era_filter_applies_to_authors_only() {
    let rows = GraphRows {
        books: vec![
            book(1, Some(1), Some(1), None),
            book(2, Some(2), Some(1), None),
            book(3, Some(3), Some(1), None),
        ],
        authors: vec![
            author(1, Some(1850), None),
            author(2, Some(1800), None),
            author(3, Some(1920), None),
        ],
        publishers: vec![org(1)],
        ..GraphRows::default()
    };
    let with = |eras: Option<Vec<Era>>| {
        let params = GraphParams {
            era_filter: eras,
            ..GraphParams::default()
        };
        build(&rows, &params, Utc::now())
    };
    let single = with(Some(vec![Era::Victorian]));
    assert_eq!(ids(&single), ["author:1", "publisher:1"]);
    // The publisher keeps counting all its books; edges need both ends.
    assert_eq!(single.node("publisher:1").unwrap().book_count, 3);
    assert_eq!(single.edges.len(), 1);
    let multiple = with(Some(vec![Era::Victorian, Era::Post1910]));
    assert_eq!(ids(&multiple), ["author:1", "author:3", "publisher:1"]);
    assert!(multiple.edges.iter().any(|e| e.id == "e:author:1:author:3"));
    // An empty list is falsy in the original: no filter.
    assert_eq!(with(Some(vec![])).nodes.len(), 4);
    assert_eq!(with(None).nodes.len(), 4);
}

#[test]
fn book_ids_are_capped_at_ten() {
    let rows = one_of_each(50);
    let g = built(&rows);
    for n in &g.nodes {
        assert_eq!(n.book_count, 50);
        assert_eq!(n.book_ids, (1..=10).collect::<Vec<_>>());
    }
    assert_eq!(
        edge(&g, "e:author:1:publisher:1").shared_book_ids,
        Some((1..=50).collect())
    );
}

#[test]
fn max_books_limits_and_flags_truncation() {
    let rows = GraphRows {
        books: (1..=150).map(|i| book(i, Some(1), None, None)).collect(),
        authors: vec![author(1, None, None)],
        ..GraphRows::default()
    };
    let at = |max_books: u32, rows: &GraphRows| {
        let params = GraphParams {
            max_books,
            ..GraphParams::default()
        };
        build(rows, &params, Utc::now())
    };
    let limited = at(100, &rows);
    assert_eq!(limited.meta.total_books, 100);
    assert_eq!(limited.nodes[0].book_count, 100);
    assert!(limited.meta.truncated);

    let mut hundred = rows.clone();
    hundred.books.truncate(100);
    // Exactly max_books rows fetched reads as truncated: the original's quirk.
    assert!(at(100, &hundred).meta.truncated);
    hundred.books.truncate(99);
    assert!(!at(100, &hundred).meta.truncated);
    assert!(!at(5000, &rows).meta.truncated);
    assert_eq!(at(5000, &rows).meta.total_books, 150);
}

/// A publisher with `authors` (id, books) pairs, each book also published by it.
fn one_publisher(authors: &[(i32, i32)]) -> GraphRows {
    let mut rows = GraphRows {
        publishers: vec![org(1)],
        ..GraphRows::default()
    };
    let mut next = 1;
    for &(id, books) in authors {
        rows.authors.push(author(id, None, None));
        for _ in 0..books {
            rows.books.push(book(next, Some(id), Some(1), None));
            next += 1;
        }
    }
    rows.books.sort_by_key(|b| b.id);
    rows.authors.sort_by_key(|a| a.id);
    rows
}

fn shared_authors(g: &Graph) -> std::collections::BTreeSet<i32> {
    g.edges
        .iter()
        .filter(|e| e.edge_type == ConnectionType::SharedPublisher)
        .flat_map(|e| [e.source.clone(), e.target.clone()])
        .map(|id| id["author:".len()..].parse().unwrap())
        .collect()
}

#[test]
fn shared_publisher_keeps_the_most_prolific_twenty() {
    // 25 authors: the 5 with 3 books must survive the cut, and 15 of the 20 with 1 book.
    let mut authors: Vec<(i32, i32)> = (1..=20).map(|id| (id, 1)).collect();
    authors.extend((21..=25).map(|id| (id, 3)));
    let rows = one_publisher(&authors);
    let g = built(&rows);
    let kept = shared_authors(&g);
    assert_eq!(kept.len(), 20);
    assert!((21..=25).all(|a| kept.contains(&a)));
    assert_eq!(
        g.edges
            .iter()
            .filter(|e| e.edge_type == ConnectionType::SharedPublisher)
            .count(),
        190
    );
    assert_eq!(built(&rows).edges, g.edges, "deterministic across builds");
    for e in g
        .edges
        .iter()
        .filter(|e| e.edge_type == ConnectionType::SharedPublisher)
    {
        assert!(e.source < e.target, "{} ordered by string", e.id);
        assert_eq!(e.id, format!("e:{}:{}", e.source, e.target));
    }
}

#[test]
fn equally_prolific_authors_are_cut_in_python_set_order() {
    // CPython iterates {110..=139} as 128..=139 then 110..=127 (128 slots), so the original
    // keeps 128..=139 and 110..=117. Expected list printed by CPython 3.11.
    let authors: Vec<(i32, i32)> = (110..140).map(|id| (id, 1)).collect();
    let g = built(&one_publisher(&authors));
    let expected: std::collections::BTreeSet<i32> = (110..=117).chain(128..=139).collect();
    assert_eq!(shared_authors(&g), expected);
}

#[test]
fn shared_publisher_ids_use_string_order_and_first_publisher_wins() {
    // Authors 9 and 10: "author:10" < "author:9" as strings. Publisher 5 comes first in book
    // order, publisher 2 also links them later.
    let rows = GraphRows {
        books: vec![
            book(1, Some(9), Some(5), None),
            book(2, Some(10), Some(5), None),
            book(3, Some(9), Some(2), None),
            book(4, Some(10), Some(2), None),
        ],
        authors: vec![author(9, None, None), author(10, None, None)],
        publishers: vec![org(2), org(5)],
        ..GraphRows::default()
    };
    let g = built(&rows);
    let shared: Vec<_> = g
        .edges
        .iter()
        .filter(|e| e.edge_type == ConnectionType::SharedPublisher)
        .collect();
    assert_eq!(shared.len(), 1);
    assert_eq!(shared[0].id, "e:author:10:author:9");
    assert_eq!(
        (shared[0].source.as_str(), shared[0].target.as_str()),
        ("author:10", "author:9")
    );
    assert_eq!(
        shared[0].evidence.as_deref(),
        Some("Both published by Org 5")
    );
}

#[test]
fn ai_edges_merge_into_the_graph() {
    let mut rows = small();
    rows.ai_connections = vec![
        ai("author:1", "author:2", "friendship", 0.75),
        ai("author:1", "publisher:1", "influence", 0.29),
        ai("author:1", "author:99", "family", 0.9),
        ai("author:2", "binder:1", "rivalry", 0.9),
        ai("author:1", "author:2", "scandal", 1.0),
        ai("author:1", "author:2", "friendship", 0.95),
    ];
    let g = built(&rows);
    let friendship = edge(&g, "e:author:1:author:2:friendship");
    assert_eq!(friendship.edge_type, ConnectionType::Friendship);
    // The same id twice keeps the stronger edge, in the first one's place.
    assert_eq!(friendship.strength, 9);
    assert_eq!(friendship.evidence.as_deref(), Some("friendship evidence"));
    assert_eq!(friendship.shared_book_ids, None);
    // int(0.29 * 10) = 2; the floor is 2 anyway.
    assert_eq!(edge(&g, "e:author:1:publisher:1:influence").strength, 2);
    assert_eq!(edge(&g, "e:author:1:author:2:scandal").strength, 10);
    // Book-derived edge for the same pair survives alongside.
    assert_eq!(
        edge(&g, "e:author:1:author:2").edge_type,
        ConnectionType::SharedPublisher
    );
    // Endpoint missing, unknown relationship: dropped.
    assert!(g.edges.iter().all(|e| !e.id.contains("author:99")));
    assert!(g.edges.iter().all(|e| !e.id.contains("rivalry")));
    let ai_ids: Vec<&str> = g
        .edges
        .iter()
        .filter(|e| e.shared_book_ids.is_none() && e.edge_type != ConnectionType::SharedPublisher)
        .map(|e| e.id.as_str())
        .collect();
    assert_eq!(
        ai_ids,
        [
            "e:author:1:author:2:friendship",
            "e:author:1:publisher:1:influence",
            "e:author:1:author:2:scandal"
        ]
    );
    // Without AI rows the graph is just the book-derived part.
    assert_eq!(built(&small()).edges.len(), g.edges.len() - 3);
}

#[test]
fn ai_strength_truncates_toward_zero() {
    for (confidence, strength) in [
        (0.0, 2),
        (0.25, 2),
        (0.3, 3),
        (0.59, 5),
        (0.7, 7),
        (1.0, 10),
        (1.5, 10),
    ] {
        let mut rows = small();
        rows.ai_connections = vec![ai("author:1", "author:2", "family", confidence)];
        let g = built(&rows);
        assert_eq!(
            edge(&g, "e:author:1:author:2:family").strength,
            strength,
            "{confidence}"
        );
    }
}

#[test]
fn neighbours_are_strongest_first_with_edge_order_ties() {
    let mut rows = small();
    rows.ai_connections = vec![
        ai("author:1", "author:2", "friendship", 0.3),
        ai("author:1", "publisher:2", "collaboration", 0.45),
        ai("author:1", "publisher:3", "family", 0.9),
    ];
    let g = built(&rows);
    let order: Vec<(&str, &str)> = g
        .neighbours("author:1")
        .iter()
        .map(|(e, n)| (e.id.as_str(), n.id.as_str()))
        .collect();
    assert_eq!(
        order,
        [
            ("e:author:1:publisher:1", "publisher:1"),
            ("e:author:1:publisher:2:collaboration", "publisher:2"),
            ("e:author:1:author:2", "author:2"),
            ("e:author:1:author:2:friendship", "author:2"),
            ("e:author:1:binder:1", "binder:1"),
        ]
    );
    assert_eq!(g.source_connection_count("author:1"), 5);
    assert_eq!(g.source_connection_count("publisher:9"), 0);
    assert!(g.neighbours("publisher:9").is_empty());
    assert_eq!(g.node("binder:1").unwrap().name, "Org 1");
    assert!(g.node("binder:7").is_none());

    // A parsed graph may lack a node some edge points at: counted, but not a neighbour.
    let mut partial = g.clone();
    partial.nodes.retain(|n| n.id != "publisher:2");
    assert_eq!(partial.source_connection_count("author:1"), 5);
    assert_eq!(partial.neighbours("author:1").len(), 4);
    assert!(
        partial
            .neighbours("author:1")
            .iter()
            .all(|(_, n)| n.id != "publisher:2")
    );
}
