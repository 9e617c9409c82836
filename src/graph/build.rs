//! The pure graph builder: rows in, graph out, no I/O (docs/compatibility.md, "Social-circles graph").

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, SubsecRound, Utc};

use super::{
    ConnectionType, Edge, Era, Graph, GraphParams, MAX_AUTHORS_PER_PUBLISHER, MAX_NODE_BOOK_IDS,
    Meta, Node, node_id, pyset,
};
use crate::model::{AuthorRow, EntityType, GraphRows, OrgRow};

/// Strength of the fixed `shared_publisher` edges.
const SHARED_PUBLISHER_STRENGTH: u8 = 3;
/// Years outside this range are ignored by the date range.
const DATE_RANGE_YEARS: std::ops::RangeInclusive<i32> = 1700..=2025;
/// The date range's upper clamp (lower than [`DATE_RANGE_YEARS`]' end: the inversion quirk).
const DATE_RANGE_CEILING: i32 = 1950;
/// Date range when no usable year exists.
const DEFAULT_DATE_RANGE: [i32; 2] = [1800, 1900];

/// What the book pass learns about one author.
#[derive(Default)]
struct AuthorLinks {
    /// Book ids in row order.
    books: Vec<i32>,
    /// Publisher id → this author's books with that publisher, ascending publisher ids.
    publishers: BTreeMap<i32, Vec<i32>>,
    /// Binder id → this author's books with that binder.
    binders: BTreeMap<i32, Vec<i32>>,
}

/// What the book pass learns about one publisher or binder.
#[derive(Default)]
struct OrgLinks {
    /// Book ids (only books with an author), row order.
    books: Vec<i32>,
    /// Author ids in the order they were added to the original's set, repeats included.
    authors_added: Vec<i32>,
}

/// A map that remembers first-insertion order, like the original's `defaultdict`s.
struct Ordered<V> {
    index: HashMap<i32, usize>,
    entries: Vec<(i32, V)>,
}

impl<V: Default> Ordered<V> {
    fn new() -> Self {
        Self {
            index: HashMap::new(),
            entries: Vec::new(),
        }
    }

    fn entry(&mut self, id: i32) -> &mut V {
        let i = *self.index.entry(id).or_insert_with(|| {
            self.entries.push((id, V::default()));
            self.entries.len() - 1
        });
        &mut self.entries[i].1
    }

    fn get(&self, id: i32) -> Option<&V> {
        self.index.get(&id).map(|&i| &self.entries[i].1)
    }
}

/// Builds the social-circles graph exactly as the original does, from rows read in id order.
///
/// Where the original's order was left to the database or to Python's sets, rows are taken in
/// the given (id) order and set-derived lists are ascending; the one place where a set's order
/// changes the content (which equally prolific authors survive the 20-author cut) follows
/// CPython's set order, so both implementations keep the same authors.
pub fn build(rows: &GraphRows, params: &GraphParams, generated_at: DateTime<Utc>) -> Graph {
    let max_books = params.max_books as usize;
    let books = &rows.books[..rows.books.len().min(max_books)];

    let mut authors: Ordered<AuthorLinks> = Ordered::new();
    // Authors in the order they first appear with a publisher / binder (the original iterates
    // its author→publishers and author→binders maps for the edges).
    let mut authors_with_publisher: Vec<i32> = Vec::new();
    let mut authors_with_binder: Vec<i32> = Vec::new();
    let mut publishers: Ordered<OrgLinks> = Ordered::new();
    let mut binders: Ordered<OrgLinks> = Ordered::new();

    for book in books {
        let Some(author_id) = book.author_id else {
            continue;
        };
        let links = authors.entry(author_id);
        links.books.push(book.id);
        if let Some(publisher_id) = book.publisher_id {
            if links.publishers.is_empty() {
                authors_with_publisher.push(author_id);
            }
            links
                .publishers
                .entry(publisher_id)
                .or_default()
                .push(book.id);
            let org = publishers.entry(publisher_id);
            org.books.push(book.id);
            org.authors_added.push(author_id);
        }
        if params.include_binders
            && let Some(binder_id) = book.binder_id
        {
            let links = authors.entry(author_id);
            if links.binders.is_empty() {
                authors_with_binder.push(author_id);
            }
            links.binders.entry(binder_id).or_default().push(book.id);
            let org = binders.entry(binder_id);
            org.books.push(book.id);
            org.authors_added.push(author_id);
        }
    }

    let era_filter: Option<HashSet<Era>> = params
        .era_filter
        .as_ref()
        .filter(|eras| !eras.is_empty())
        .map(|eras| eras.iter().copied().collect());

    let mut nodes: Vec<Node> = Vec::new();
    for row in &rows.authors {
        if let Some(links) = authors.get(row.id)
            && let Some(node) = author_node(row, links, params, era_filter.as_ref())
        {
            nodes.push(node);
        }
    }
    let total_authors = nodes.len();
    for row in &rows.publishers {
        if let Some(links) = publishers.get(row.id)
            && let Some(node) = org_node(EntityType::Publisher, row, links, params)
        {
            nodes.push(node);
        }
    }
    let total_publishers = nodes.len() - total_authors;
    if params.include_binders {
        for row in &rows.binders {
            if let Some(links) = binders.get(row.id)
                && let Some(node) = org_node(EntityType::Binder, row, links, params)
            {
                nodes.push(node);
            }
        }
    }
    let total_binders = nodes.len() - total_authors - total_publishers;

    let present: HashMap<&str, &Node> = nodes.iter().map(|n| (n.id.as_str(), n)).collect();
    let mut edges: Vec<Edge> = Vec::new();

    book_edges(
        &mut edges,
        &present,
        &authors,
        &authors_with_publisher,
        EntityType::Publisher,
    );
    shared_publisher_edges(&mut edges, &present, &authors, &publishers);
    if params.include_binders {
        book_edges(
            &mut edges,
            &present,
            &authors,
            &authors_with_binder,
            EntityType::Binder,
        );
    }
    ai_edges(&mut edges, &present, rows);

    let meta = Meta {
        total_books: books.len() as u32,
        total_authors: total_authors as u32,
        total_publishers: total_publishers as u32,
        total_binders: total_binders as u32,
        date_range: date_range(&nodes),
        generated_at: generated_at.trunc_subsecs(6),
        truncated: books.len() == max_books,
    };
    Graph { nodes, edges, meta }
}

fn author_node(
    row: &AuthorRow,
    links: &AuthorLinks,
    params: &GraphParams,
    era_filter: Option<&HashSet<Era>>,
) -> Option<Node> {
    let book_count = links.books.len() as u32;
    if book_count < params.min_book_count {
        return None;
    }
    let era = Era::from_birth_year(row.birth_year);
    if era_filter.is_some_and(|eras| !eras.contains(&era)) {
        return None;
    }
    Some(Node {
        id: node_id(EntityType::Author, row.id),
        entity_id: row.id,
        name: row.name.clone(),
        entity_type: EntityType::Author,
        birth_year: row.birth_year,
        death_year: row.death_year,
        era: Some(era),
        tier: row.tier.clone(),
        founded_year: None,
        closed_year: None,
        image_url: row.image_url.clone(),
        book_count,
        book_ids: links
            .books
            .iter()
            .take(MAX_NODE_BOOK_IDS)
            .copied()
            .collect(),
    })
}

/// Publisher and binder nodes never carry years or era, even though the rows have them.
fn org_node(
    entity_type: EntityType,
    row: &OrgRow,
    links: &OrgLinks,
    params: &GraphParams,
) -> Option<Node> {
    let mut books = links.books.clone();
    books.sort_unstable();
    books.dedup();
    let book_count = books.len() as u32;
    if book_count < params.min_book_count {
        return None;
    }
    books.truncate(MAX_NODE_BOOK_IDS);
    Some(Node {
        id: node_id(entity_type, row.id),
        entity_id: row.id,
        name: row.name.clone(),
        entity_type,
        birth_year: None,
        death_year: None,
        era: None,
        tier: row.tier.clone(),
        founded_year: None,
        closed_year: None,
        image_url: row.image_url.clone(),
        book_count,
        book_ids: books,
    })
}

/// Author→publisher or author→binder edges: strength grows with the shared books.
fn book_edges(
    edges: &mut Vec<Edge>,
    present: &HashMap<&str, &Node>,
    authors: &Ordered<AuthorLinks>,
    author_order: &[i32],
    org_type: EntityType,
) {
    for &author_id in author_order {
        let source = node_id(EntityType::Author, author_id);
        if !present.contains_key(source.as_str()) {
            continue;
        }
        let Some(links) = authors.get(author_id) else {
            continue;
        };
        let orgs = match org_type {
            EntityType::Publisher => &links.publishers,
            _ => &links.binders,
        };
        for (&org_id, books) in orgs {
            let target = node_id(org_type, org_id);
            if !present.contains_key(target.as_str()) {
                continue;
            }
            let mut shared = books.clone();
            shared.sort_unstable();
            shared.dedup();
            let n = shared.len();
            let verb = match org_type {
                EntityType::Publisher => "Published",
                _ => "Bound",
            };
            edges.push(Edge {
                id: format!("e:{source}:{target}"),
                source: source.clone(),
                target,
                edge_type: match org_type {
                    EntityType::Publisher => ConnectionType::Publisher,
                    _ => ConnectionType::Binder,
                },
                strength: (2 * n).clamp(2, 10) as u8,
                evidence: Some(format!("{verb} {n} work(s)")),
                shared_book_ids: Some(shared),
                start_year: None,
                end_year: None,
            });
        }
    }
}

/// Pairs of a publisher's most prolific authors (at most 20 per publisher); the first publisher
/// that produces a pair names it.
fn shared_publisher_edges(
    edges: &mut Vec<Edge>,
    present: &HashMap<&str, &Node>,
    authors: &Ordered<AuthorLinks>,
    publishers: &Ordered<OrgLinks>,
) {
    let mut seen: HashSet<String> = HashSet::new();
    for (publisher_id, links) in &publishers.entries {
        let mut members = pyset::iteration_order(links.authors_added.iter().copied());
        if members.len() < 2 {
            continue;
        }
        let Some(publisher) = present.get(node_id(EntityType::Publisher, *publisher_id).as_str())
        else {
            continue;
        };
        let book_count = |a: &i32| authors.get(*a).map_or(0, |l| l.books.len());
        // Stable, like Python's `sorted(..., reverse=True)`.
        members.sort_by_key(|a| std::cmp::Reverse(book_count(a)));
        members.truncate(MAX_AUTHORS_PER_PUBLISHER);
        let ids: Vec<String> = members
            .iter()
            .map(|a| node_id(EntityType::Author, *a))
            .collect();
        for (i, first) in ids.iter().enumerate() {
            if !present.contains_key(first.as_str()) {
                continue;
            }
            for second in &ids[i + 1..] {
                if !present.contains_key(second.as_str()) {
                    continue;
                }
                let (lo, hi) = if first <= second {
                    (first, second)
                } else {
                    (second, first)
                };
                let id = format!("e:{lo}:{hi}");
                if !seen.insert(id.clone()) {
                    continue;
                }
                edges.push(Edge {
                    id,
                    source: lo.clone(),
                    target: hi.clone(),
                    edge_type: ConnectionType::SharedPublisher,
                    strength: SHARED_PUBLISHER_STRENGTH,
                    evidence: Some(format!("Both published by {}", publisher.name)),
                    shared_book_ids: None,
                    start_year: None,
                    end_year: None,
                });
            }
        }
    }
}

/// Edges from `ai_connections` rows whose two ends are in the graph.
fn ai_edges(edges: &mut Vec<Edge>, present: &HashMap<&str, &Node>, rows: &GraphRows) {
    let mut positions: HashMap<String, usize> = HashMap::new();
    for row in &rows.ai_connections {
        let source = format!("{}:{}", row.source_type, row.source_id);
        let target = format!("{}:{}", row.target_type, row.target_id);
        if !present.contains_key(source.as_str()) || !present.contains_key(target.as_str()) {
            continue;
        }
        let Ok(edge_type) = row.relationship.parse::<ConnectionType>() else {
            tracing::warn!(
                relationship = %row.relationship,
                %source,
                %target,
                "ai_connections row with an unknown relationship left out of the graph"
            );
            continue;
        };
        // Python's int() truncates toward zero; a NaN confidence (which would crash the
        // original) counts as 0.
        let strength = ((row.confidence * 10.0) as i64).clamp(2, 10) as u8;
        let id = format!("e:{source}:{target}:{}", row.relationship);
        let edge = Edge {
            id: id.clone(),
            source,
            target,
            edge_type,
            strength,
            evidence: row.evidence.clone(),
            shared_book_ids: None,
            start_year: None,
            end_year: None,
        };
        match positions.get(&id) {
            Some(&at) => {
                if edge.strength > edges[at].strength {
                    edges[at] = edge;
                }
            }
            None => {
                positions.insert(id, edges.len());
                edges.push(edge);
            }
        }
    }
}

/// The original's date range: truthy years of all nodes, outliers dropped, clamped to
/// [1700, 1950] — which inverts the range when every year is after 1950.
fn date_range(nodes: &[Node]) -> [i32; 2] {
    let years: Vec<i32> = nodes
        .iter()
        .flat_map(|n| [n.birth_year, n.death_year])
        .flatten()
        .filter(|y| *y != 0 && DATE_RANGE_YEARS.contains(y))
        .collect();
    match (years.iter().min(), years.iter().max()) {
        (Some(&lo), Some(&hi)) => [
            lo.max(*DATE_RANGE_YEARS.start()),
            hi.min(DATE_RANGE_CEILING),
        ],
        _ => DEFAULT_DATE_RANGE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::BookLink;

    fn author(id: i32, birth: Option<i32>) -> AuthorRow {
        AuthorRow {
            id,
            name: format!("Author {id}"),
            birth_year: birth,
            death_year: None,
            tier: None,
            image_url: None,
        }
    }

    fn org(id: i32) -> OrgRow {
        OrgRow {
            id,
            name: format!("Org {id}"),
            tier: None,
            image_url: None,
            founded_year: Some(1800),
            closed_year: Some(1900),
        }
    }

    #[test]
    fn date_range_cases() {
        let with_years = |years: &[(Option<i32>, Option<i32>)]| -> [i32; 2] {
            let rows = GraphRows {
                books: (0..years.len() as i32)
                    .map(|i| BookLink {
                        id: i + 1,
                        author_id: Some(i + 1),
                        publisher_id: None,
                        binder_id: None,
                    })
                    .collect(),
                authors: years
                    .iter()
                    .enumerate()
                    .map(|(i, (b, d))| AuthorRow {
                        death_year: *d,
                        ..author(i as i32 + 1, *b)
                    })
                    .collect(),
                ..GraphRows::default()
            };
            build(&rows, &GraphParams::default(), Utc::now())
                .meta
                .date_range
        };
        assert_eq!(with_years(&[(Some(1800), Some(1850))]), [1800, 1850]);
        assert_eq!(
            with_years(&[(Some(1265), Some(1300)), (Some(1820), Some(1967))]),
            [1820, 1950]
        );
        assert_eq!(with_years(&[]), [1800, 1900]);
        assert_eq!(with_years(&[(None, None)]), [1800, 1900]);
        assert_eq!(with_years(&[(Some(1850), None)]), [1850, 1850]);
        assert_eq!(with_years(&[(Some(1700), Some(2025))]), [1700, 1950]);
        assert_eq!(with_years(&[(Some(1600), Some(2100))]), [1800, 1900]);
        assert_eq!(with_years(&[(Some(1960), Some(1970))]), [1960, 1950]);
        assert_eq!(with_years(&[(Some(0), Some(1840))]), [1840, 1840]);
    }

    #[test]
    fn org_nodes_drop_years() {
        let rows = GraphRows {
            books: vec![BookLink {
                id: 1,
                author_id: Some(1),
                publisher_id: Some(2),
                binder_id: Some(3),
            }],
            authors: vec![author(1, Some(1850))],
            publishers: vec![org(2)],
            binders: vec![org(3)],
            ai_connections: vec![],
        };
        let g = build(&rows, &GraphParams::default(), Utc::now());
        for n in &g.nodes[1..] {
            assert_eq!(
                (n.founded_year, n.closed_year, n.era, n.birth_year),
                (None, None, None, None)
            );
        }
        assert_eq!(g.nodes[0].era, Some(Era::Victorian));
    }
}
