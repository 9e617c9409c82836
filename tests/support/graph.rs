//! Graph test data: the golden fixtures of the original and small hand-made row sets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;

use profile_worker::graph::{ConnectionType, Graph, Node};
use profile_worker::model::{AiConnectionRow, AuthorRow, BookLink, EntityType, GraphRows, OrgRow};

/// Reads a golden file of `tests/data/fixtures/` (copied from the original system's reference data).
pub fn fixture(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/fixtures")
        .join(name);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read golden fixture {}: {e}", path.display()))
}

/// One SQL literal of the fixture's INSERT statements.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl SqlValue {
    fn int(&self) -> Option<i32> {
        match self {
            SqlValue::Null => None,
            SqlValue::Int(i) => Some(i32::try_from(*i).expect("id fits i32")),
            other => panic!("expected an integer, got {other:?}"),
        }
    }

    fn text(&self) -> Option<String> {
        match self {
            SqlValue::Null => None,
            SqlValue::Text(s) => Some(s.clone()),
            other => panic!("expected text, got {other:?}"),
        }
    }

    fn float(&self) -> f64 {
        match self {
            SqlValue::Int(i) => *i as f64,
            SqlValue::Float(f) => *f,
            other => panic!("expected a number, got {other:?}"),
        }
    }
}

/// Rows of one table as column name → value maps, in statement order.
pub type Table = Vec<HashMap<String, SqlValue>>;

/// Parses every `INSERT INTO t (cols) VALUES (...),(...);` of a dump into tables.
pub fn parse_inserts(sql: &str) -> HashMap<String, Table> {
    let mut tables: HashMap<String, Table> = HashMap::new();
    let mut rest = sql;
    while let Some(at) = rest.find("INSERT INTO ") {
        rest = &rest[at + "INSERT INTO ".len()..];
        let (table, after) = rest.split_once(" (").expect("table name");
        let (cols, after) = after.split_once(") VALUES ").expect("column list");
        let columns: Vec<String> = cols.split(',').map(|c| c.trim().to_string()).collect();
        let (tuples, remaining) = parse_tuples(after);
        rest = remaining;
        let rows = tables.entry(table.to_string()).or_default();
        for values in tuples {
            assert_eq!(values.len(), columns.len(), "tuple width in {table}");
            rows.push(columns.iter().cloned().zip(values).collect());
        }
    }
    tables
}

/// Parses `(v, ...),(v, ...);` and returns the tuples and the text after the `;`.
fn parse_tuples(text: &str) -> (Vec<Vec<SqlValue>>, &str) {
    let bytes = text.as_bytes();
    let mut i = 0;
    let mut tuples = Vec::new();
    loop {
        while bytes[i] == b',' || bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes[i] == b';' {
            return (tuples, &text[i + 1..]);
        }
        assert_eq!(bytes[i], b'(', "tuple start at byte {i}");
        i += 1;
        let mut values = Vec::new();
        loop {
            while bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            if bytes[i] == b'\'' {
                let mut s = String::new();
                i += 1;
                loop {
                    let c = text[i..].chars().next().expect("unterminated string");
                    if c == '\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            s.push('\'');
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    s.push(c);
                    i += c.len_utf8();
                }
                values.push(SqlValue::Text(s));
            } else {
                let end = i + text[i..].find([',', ')']).expect("literal end");
                let literal = text[i..end].trim();
                values.push(match literal {
                    "NULL" => SqlValue::Null,
                    "true" => SqlValue::Bool(true),
                    "false" => SqlValue::Bool(false),
                    n => n
                        .parse::<i64>()
                        .map(SqlValue::Int)
                        .unwrap_or_else(|_| SqlValue::Float(n.parse().expect("number"))),
                });
                i = end;
            }
            while bytes[i].is_ascii_whitespace() {
                i += 1;
            }
            match bytes[i] {
                b',' => i += 1,
                b')' => {
                    i += 1;
                    break;
                }
                other => panic!("unexpected {:?} at byte {i}", other as char),
            }
        }
        tuples.push(values);
    }
}

/// What `Store::graph_rows` returns for the golden collection: qualifying books by id (at most
/// `max_books`), the entities they reference, every AI connection — all ordered by id.
pub fn golden_rows(max_books: usize, include_binders: bool) -> GraphRows {
    let tables = parse_inserts(&fixture("collection-small.sql"));
    let mut books: Vec<BookLink> = tables["books"]
        .iter()
        .filter(|r| {
            let status = r["status"].text().unwrap();
            status == "IN_TRANSIT" || status == "ON_HAND"
        })
        .map(|r| BookLink {
            id: r["id"].int().unwrap(),
            author_id: r["author_id"].int(),
            publisher_id: r["publisher_id"].int(),
            binder_id: r["binder_id"].int(),
        })
        .collect();
    books.sort_by_key(|b| b.id);
    books.truncate(max_books);
    let referenced = |pick: fn(&BookLink) -> Option<i32>| -> Vec<i32> {
        books.iter().filter_map(pick).collect()
    };
    let author_ids = referenced(|b| b.author_id);
    let publisher_ids = referenced(|b| b.publisher_id);
    let binder_ids = if include_binders {
        referenced(|b| b.binder_id)
    } else {
        Vec::new()
    };
    let mut authors: Vec<AuthorRow> = tables["authors"]
        .iter()
        .filter(|r| author_ids.contains(&r["id"].int().unwrap()))
        .map(|r| AuthorRow {
            id: r["id"].int().unwrap(),
            name: r["name"].text().unwrap(),
            birth_year: r["birth_year"].int(),
            death_year: r["death_year"].int(),
            tier: r["tier"].text(),
            image_url: r["image_url"].text(),
        })
        .collect();
    authors.sort_by_key(|a| a.id);
    let orgs = |table: &str, ids: &[i32]| -> Vec<OrgRow> {
        let mut rows: Vec<OrgRow> = tables[table]
            .iter()
            .filter(|r| ids.contains(&r["id"].int().unwrap()))
            .map(|r| OrgRow {
                id: r["id"].int().unwrap(),
                name: r["name"].text().unwrap(),
                tier: r["tier"].text(),
                image_url: r["image_url"].text(),
                founded_year: r["founded_year"].int(),
                closed_year: r.get("closed_year").and_then(SqlValue::int),
            })
            .collect();
        rows.sort_by_key(|o| o.id);
        rows
    };
    let mut ai_rows: Vec<(i32, AiConnectionRow)> = tables["ai_connections"]
        .iter()
        .map(|r| {
            (
                r["id"].int().unwrap(),
                AiConnectionRow {
                    source_type: r["source_type"].text().unwrap(),
                    source_id: r["source_id"].int().unwrap(),
                    target_type: r["target_type"].text().unwrap(),
                    target_id: r["target_id"].int().unwrap(),
                    relationship: r["relationship"].text().unwrap(),
                    sub_type: r["sub_type"].text(),
                    confidence: r["confidence"].float(),
                    evidence: r["evidence"].text(),
                },
            )
        })
        .collect();
    ai_rows.sort_by_key(|(id, _)| *id);
    GraphRows {
        publishers: orgs("publishers", &publisher_ids),
        binders: orgs("binders", &binder_ids),
        books,
        authors,
        ai_connections: ai_rows.into_iter().map(|(_, r)| r).collect(),
    }
}

/// An author row with a generated name.
pub fn author(id: i32, birth_year: Option<i32>, death_year: Option<i32>) -> AuthorRow {
    AuthorRow {
        id,
        name: format!("Author {id}"),
        birth_year,
        death_year,
        tier: None,
        image_url: None,
    }
}

/// A publisher or binder row with a generated name; its years must never reach the graph.
pub fn org(id: i32) -> OrgRow {
    OrgRow {
        id,
        name: format!("Org {id}"),
        tier: Some("TIER_1".into()),
        image_url: Some(format!("https://cdn.example.com/o/{id}.jpg")),
        founded_year: Some(1790),
        closed_year: Some(1890),
    }
}

/// A qualifying book's links.
pub fn book(id: i32, author: Option<i32>, publisher: Option<i32>, binder: Option<i32>) -> BookLink {
    BookLink {
        id,
        author_id: author,
        publisher_id: publisher,
        binder_id: binder,
    }
}

/// An `ai_connections` row between two `type:id` entities.
pub fn ai(source: &str, target: &str, relationship: &str, confidence: f64) -> AiConnectionRow {
    let split = |s: &str| {
        let (t, id) = s.split_once(':').unwrap();
        (t.to_string(), id.parse().unwrap())
    };
    let (source_type, source_id) = split(source);
    let (target_type, target_id) = split(target);
    AiConnectionRow {
        source_type,
        source_id,
        target_type,
        target_id,
        relationship: relationship.into(),
        sub_type: None,
        confidence,
        evidence: Some(format!("{relationship} evidence")),
    }
}

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

/// Asserts that `ours` (built from `rows`) is the graph the original built (`golden`): meta
/// except `generated_at`, every node field, every edge with its strength and evidence, and the
/// original's kind order. Book-id lists and shared-publisher evidence are checked for what they
/// may be, since they depend on the database's row order.
pub fn assert_matches_golden(ours: &Graph, golden: &Graph, rows: &GraphRows) {
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
    let (our_nodes, golden_nodes) = (node_map(ours), node_map(golden));
    assert_eq!(our_nodes.len(), ours.nodes.len(), "node ids are unique");
    for (id, key) in &golden_nodes {
        assert_eq!(our_nodes.get(id), Some(key), "node {id}");
    }
    assert_eq!(our_nodes.len(), golden_nodes.len());
    let books = books_by_entity(rows);
    check_book_ids(ours, &books, "ours");
    check_book_ids(golden, &books, "golden");

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
    let (our_edges, golden_edges) = (edge_map(ours), edge_map(golden));
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
    let naming = publishers_naming_pairs(golden);
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
